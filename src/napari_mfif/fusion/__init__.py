"""Fusion rules: decision maps, guided filter, blending."""
