#!/usr/bin/env bash
# Quick start 1: install napari-mfif, write the bundled sample stack, fuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=demo-output
mkdir -p "$out"
.venv/bin/napari-mfif sample -o "$out/sample_stack.tif" --overwrite
.venv/bin/napari-mfif fuse "$out/sample_stack.tif" -o "$out/fused.tif" \
    --height-map "$out/height_map.tif" --overwrite
echo "To look at them in napari (through the plugin's reader, which keeps the pixel size): bash scripts/setup.sh all && .venv/bin/napari --plugin napari-mfif $out/*.tif"
