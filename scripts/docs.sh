#!/usr/bin/env bash
# Build the documentation site from docs/ (Sphinx + MyST): docs/_build/html/index.html.
# Sets up .venv with the 'docs' extra (scripts/setup.sh docs) unless Sphinx is already there,
# then builds with warnings as errors (a broken link, reference or docstring fails the build,
# and so does a public function or CLI option missing from the reference) and runs the
# doctested examples. Extra arguments go to both sphinx-build runs.
#   SETUP=1 bash scripts/docs.sh     run scripts/setup.sh docs even when Sphinx is installed
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SETUP:-0}" = 1 ] || ! .venv/bin/python -c "import sphinx, myst_parser, furo, sphinxarg, napari_mfif" 2>/dev/null; then
  bash scripts/setup.sh docs
fi
opts=(-W --keep-going -q -d docs/_build/doctrees "$@")
.venv/bin/python -m sphinx "${opts[@]}" -b html docs docs/_build/html
.venv/bin/python -m sphinx "${opts[@]}" -b doctest docs docs/_build/doctest
summary=$(grep -E "^ +[0-9]+ tests?$" docs/_build/doctest/output.txt | tr -s ' ')
echo "docs: docs/_build/html/index.html built without warnings;${summary} doctested, 0 failed"
