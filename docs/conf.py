"""Sphinx configuration: the napari-mfif site, built from the Markdown pages in docs/.

Build it with ``bash scripts/docs.sh`` (warnings are errors, examples are doctested).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))  # mfif_docs: the methods table, the API/CLI coverage check

import napari_mfif  # noqa: E402  (the installed package; scripts/docs.sh installs it editable)

project = "napari-mfif"
author = "napari-mfif developers"
copyright = "napari-mfif developers, BSD-3-Clause"
release = version = napari_mfif.__version__

root_doc = "index"
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings are numpydoc style
    "sphinx.ext.doctest",  # {doctest} blocks and >>> examples: sphinx-build -b doctest
    "sphinxarg.ext",  # the CLI reference, generated from the argparse parsers
    "mfif_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# MyST: GitHub-style anchors for headings, so links such as api.md#memory work both on
# GitHub and in the built site.
myst_heading_anchors = 4

# autodoc + napoleon (numpydoc sections)
autodoc_default_options = {"members": True, "undoc-members": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes" as fields: dataclass fields are not documented twice

# doctest: every example page starts from these names
doctest_global_setup = """
import numpy as np
import napari_mfif as mf
"""

html_theme = "furo"
html_title = f"napari-mfif {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
smartquotes = False  # keep "--option" and quotes as written (CLI help, messages)
