"""Sphinx helpers for the napari-mfif site (loaded by docs/conf.py).

- ``train_parser()``, ``train_focusnet_parser()``: the argument parsers of
  ``python -m napari_mfif.train`` and ``python -m napari_mfif.train_focusnet`` for
  sphinx-argparse (their ``main`` builds them inline, so they are captured at
  ``parse_args``).
- ``.. mfif-methods::``: every registered method with its summary, devices, modes and
  parameters (defaults, meanings, choices), read from the registry at build time, so a new
  method or parameter appears without editing the page.
- Coverage checks, reported as Sphinx warnings (errors under ``-W``): every public name of
  the modules in ``API_MODULES`` must be documented in the Python domain, and every option
  and subcommand of both command lines must appear on ``reference/cli``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

#: modules whose public functions and classes must appear in the API reference
#: (``napari_mfif`` itself: its ``__all__``; a module with ``__all__``: that list;
#: otherwise the functions and classes it defines whose names do not start with ``_``)
API_MODULES = (
    "napari_mfif",
    "napari_mfif.metrics",
    "napari_mfif.tiles",
    "napari_mfif.slide_io",
    "napari_mfif.synthetic",
    "napari_mfif.optics",
    "napari_mfif.layers",
    "napari_mfif.io",
    "napari_mfif.formats",
    "napari_mfif.ngff",
    "napari_mfif.align",
)
#: names that are public but documented elsewhere: module -> {name: documented as}
DOCUMENTED_AS = {
    "napari_mfif.io": {"read_stack": "napari_mfif.read_stack",
                       "write_image": "napari_mfif.write_image"},
    "napari_mfif.synthetic": {"focal_stack": "napari_mfif.focal_stack",
                              "sample_stack": "napari_mfif.sample_stack"},
}
CLI_PAGE = "reference/cli"


class _Captured(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def train_parser(module: str = "napari_mfif.train") -> argparse.ArgumentParser:
    """The parser that ``python -m <module>`` (a training command) builds, without training
    anything."""
    train = importlib.import_module(module)

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        train.main([])
    except _Captured as got:
        return got.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise RuntimeError(f"{module}.main() did not parse its arguments")


def train_focusnet_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m napari_mfif.train_focusnet``."""
    return train_parser("napari_mfif.train_focusnet")


def cli_parser() -> argparse.ArgumentParser:
    from napari_mfif.cli import build_parser

    return build_parser()


def public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    if module_name == "napari_mfif":
        return [n for n in module.__all__ if not n.startswith("__")]
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", None) == module_name]


def _options(parser: argparse.ArgumentParser, prefix: str = ""):
    """(where, option string or subcommand name) for every option of a parser tree."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix or parser.prog, name
                yield from _options(sub, f"{parser.prog} {name}")
        elif isinstance(action, argparse._HelpAction):
            continue
        else:
            for option in action.option_strings:
                yield prefix or parser.prog, option
            if not action.option_strings and action.metavar:
                yield prefix or parser.prog, str(action.metavar)


def check_api(app, env) -> None:
    documented = set(env.get_domain("py").objects)
    for module_name in API_MODULES:
        for name in public_names(module_name):
            full = DOCUMENTED_AS.get(module_name, {}).get(name, f"{module_name}.{name}")
            if full not in documented:
                logger.warning(f"public name {module_name}.{name} is not in the API reference "
                               f"(expected {full}); add it to docs/reference/api.rst")


def check_cli(app, doctree, docname) -> None:
    if docname != CLI_PAGE:
        return
    text = doctree.astext()
    for parser in (cli_parser(), train_parser(), train_focusnet_parser()):
        for where, option in _options(parser):
            if option not in text:
                logger.warning(f"{where}: {option} does not appear on {CLI_PAGE}",
                               location=docname)


# |x| outside inline literals and math: the docstrings write absolute values this way and
# never use reST substitutions, which |...| would otherwise be taken for
_BARS = re.compile(r"(?<![\\|])\|(?=[^\s|])([^|`]*?[^\s|\\])\|(?!\|)")
_QUOTED = re.compile(r"(``.*?``|`[^`]*`)")


def escape_bars(app, what, name, obj, options, lines) -> None:
    """autodoc-process-docstring: ``|a - b|`` in a docstring is text, not a substitution."""
    math_indent = None
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if math_indent is not None:
            if stripped and indent <= math_indent:
                math_indent = None
            else:
                continue
        if stripped.startswith(".. math::"):
            math_indent = indent
            continue
        if "|" in line:
            parts = _QUOTED.split(line)
            lines[i] = "".join(part if part.startswith("`") else _BARS.sub(r"\\|\1\\|", part)
                               for part in parts)


def _para(text: str) -> nodes.paragraph:
    return nodes.paragraph(text=text)


def _literal_para(text: str) -> nodes.paragraph:
    return nodes.paragraph("", "", nodes.literal(text=text))


def _table(header: list[str], rows: list[list[nodes.Node]], widths: list[int]) -> nodes.table:
    table = nodes.table()
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    head += nodes.row("", *[nodes.entry("", _para(h)) for h in header])
    body = nodes.tbody()
    group += body
    for cells in rows:
        body += nodes.row("", *[nodes.entry("", cell) for cell in cells])
    return table


class MethodsDirective(SphinxDirective):
    """``.. mfif-methods::``: the registry's methods and their parameters."""

    has_content = False

    def run(self):
        from napari_mfif import available_methods
        from napari_mfif.registry import DEFAULT_METHOD

        methods = available_methods()
        out: list[nodes.Node] = []
        rows = []
        for name, m in methods.items():
            label = f"{name} (default)" if name == DEFAULT_METHOD else name
            rows.append([_literal_para(label), _para(m.summary),
                         _para(", ".join(m.devices)), _para(", ".join(m.modes)),
                         _para("yes" if m.tiling is not None else "no")])
        out.append(_table(["method", "what it does", "devices", "modes", "tile by tile"],
                          rows, [14, 50, 10, 12, 8]))
        for name, m in methods.items():
            out.append(nodes.rubric("", "", nodes.literal(text=name),
                                    ids=[f"method-{name.replace('_', '-')}"]))
            out.append(_para(m.summary))
            if not m.params:
                out.append(_para("No parameters."))
            else:
                prow = []
                for key, default in m.params.items():
                    meaning = m.param_help.get(key, "")
                    choices = m.param_choices.get(key)
                    if choices:
                        meaning = f"{meaning} (one of: {', '.join(map(str, choices))})".strip()
                    prow.append([_literal_para(key), _literal_para(repr(default)),
                                 _para(meaning)])
                out.append(_table(["parameter", "default", "meaning"], prow, [16, 14, 70]))
        return out


def setup(app):
    app.add_directive("mfif-methods", MethodsDirective)
    app.connect("autodoc-process-docstring", escape_bars)
    app.connect("env-check-consistency", check_api)
    app.connect("doctree-resolved", check_cli)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
