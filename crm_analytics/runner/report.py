"""The run's ``report.html``: the executed notebook as HTML without code cells or prompts.

The exporter's template is compiled once in the runner (:func:`warm_up`) so that every forked
run inherits it instead of paying for it again.

Every image in the report has alternative text. ``results.show_figure`` stores one in the output's
metadata (``image/png`` -> ``alt``); an image shown another way (``plt.show()``, the inline backend)
gets ``"Figure: <the nearest heading above it>"`` (:func:`with_alt_text`). nbconvert's ``lab``
template writes no ``alt``, so the report's template (``REPORT_TEMPLATE``) extends it and adds one.
"""

from __future__ import annotations

import copy
import re
import threading
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter

_warm = threading.Event()

_TEMPLATE_NAME = "crm_report.html.j2"
# The lab template with an ``alt`` on every image output: the blocks render as the lab template's, the first
# ``<img`` gaining the output's ``alt`` metadata (HTML-escaped).
REPORT_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{% block data_png scoped %}
{{ super() | replace('<img ', '<img alt="' ~ (output | get_metadata('alt', 'image/png') or 'Figure') | escape_html ~ '" ', 1) }}
{%- endblock data_png %}
{% block data_jpg scoped %}
{{ super() | replace('<img ', '<img alt="' ~ (output | get_metadata('alt', 'image/jpeg') or 'Figure') | escape_html ~ '" ', 1) }}
{%- endblock data_jpg %}
"""
IMAGE_TYPES = ("image/png", "image/jpeg")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _exporter() -> HTMLExporter:
    """The report exporter: HTML without code cells, input or output prompts, with alt text on images."""
    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: REPORT_TEMPLATE})], template_file=_TEMPLATE_NAME)
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


def _last_heading(markdown: str) -> str | None:
    """The text of the last Markdown heading in ``markdown`` (without ``#`` and emphasis marks), if any."""
    headings = _HEADING.findall(markdown)
    return re.sub(r"[*_`]", "", headings[-1]).strip() if headings else None


def with_alt_text(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` in which every image output has alternative text.

    An output's own ``alt`` (``metadata[<image type>]["alt"]``, set by ``results.show_figure``) is kept;
    an image without one gets ``"Figure: <heading>"``, the nearest Markdown heading above it (in a
    Markdown cell or a Markdown output), or ``"Figure"`` when there is none. ``nb`` is not modified.
    """
    nb = copy.deepcopy(nb)
    heading = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heading = _last_heading(cell.source) or heading
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "text/markdown" in data:
                heading = _last_heading(str(data["text/markdown"])) or heading
            for image_type in IMAGE_TYPES:
                if image_type not in data:
                    continue
                meta = output.setdefault("metadata", {}).setdefault(image_type, {})
                if not str(meta.get("alt") or "").strip():
                    meta["alt"] = f"Figure: {heading}" if heading else "Figure"
    return nb


def write_report(notebook: Path, html: Path) -> None:
    """Convert an executed notebook into ``html`` (no code cells, no prompts; alt text on every image)."""
    body, _ = _exporter().from_notebook_node(with_alt_text(nbformat.read(notebook, as_version=4)))
    html.write_text(body, encoding="utf-8")
