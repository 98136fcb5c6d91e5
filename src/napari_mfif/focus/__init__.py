"""Focus-detection backends: classic focus measures (``classic``); the CNN comes later."""
