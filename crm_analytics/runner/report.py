"""The run's ``report.html``: the executed notebook as HTML without code cells or prompts.

The exporter's template is compiled once in the runner (:func:`warm_up`) so that every forked
run inherits it instead of paying for it again.
"""

from __future__ import annotations

import threading
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

_warm = threading.Event()


def _exporter() -> HTMLExporter:
    """The report exporter: HTML without code cells, input or output prompts."""
    exporter = HTMLExporter()
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    return exporter


def warm_up() -> None:
    """Compile the report template once in this process so forked runs inherit it (about 0.2 s, once)."""
    if _warm.is_set():
        return
    _exporter().from_notebook_node(nbformat.v4.new_notebook())
    _warm.set()


def write_report(notebook: Path, html: Path) -> None:
    """Convert an executed notebook into ``html`` (no code cells, no prompts)."""
    body, _ = _exporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    html.write_text(body, encoding="utf-8")
