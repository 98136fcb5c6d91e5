#!/usr/bin/env bash
# Make .venv/ with napari-mfif installed in editable mode.
#   bash scripts/setup.sh            the library and CLI
#   bash scripts/setup.sh all        plus napari with a Qt binding (PyQt6)
#   bash scripts/setup.sh testing    plus napari, pytest and the test tools
# PYTHON picks the interpreter (default python3, 3.10 or newer).
# TORCH_INDEX_URL, if set, is where the CPU build of torch comes from
# (off this project's machines: https://download.pytorch.org/whl/cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c "import ensurepip" 2>/dev/null; then
    echo "setup: installing python3-venv (Debian) ..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install -qq --disable-pip-version-check)
"${pip[@]}" "setuptools>=77" wheel
# torch first, pinned to the CPU build: unpinned, pip would fetch several GB of CUDA packages.
"${pip[@]}" "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"${pip[@]}" -e ".${extra:+[$extra]}"
echo "setup: .venv ready (napari-mfif $(.venv/bin/python -c 'import napari_mfif; print(napari_mfif.__version__)')${extra:+, extra '$extra'})"
