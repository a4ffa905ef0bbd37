"""Static HTML stand-ins for the live widgets of the stakeholder pages.

Voilà sends a page's widgets as references that only its JavaScript can draw, about a second after the
page's HTML has arrived (its scripts load, the kernel's websocket opens, the widget states are fetched).
``install()`` makes every widget a page displays carry, beside that reference, a ``text/html`` copy of what
the widget shows at that moment: numbers, tables and charts with the widget's CSS classes, filters as
their current choice. The pages' template (``voila_templates/.../crm/index.html.j2``) writes that copy
into the page and removes it once the live widget has drawn itself, so people see the numbers and
charts as soon as the HTML arrives and can use the filters once the scripts have loaded.

Filters (dropdowns and other choices) are copied as plain text without their CSS classes: the live
control is the only element a visitor, or a browser test, can operate.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping

import ipywidgets as widgets
from ipywidgets.widgets.widget import _instances as widget_instances  # model id -> live widget of this kernel

MIME_HTML = "text/html"


def _classes(widget: widgets.DOMWidget) -> str:
    """The CSS classes given to ``widget`` (``add_class``), space separated and escaped."""
    return html.escape(" ".join(getattr(widget, "_dom_classes", ())))


def _size_style(widget: widgets.DOMWidget) -> str:
    """An inline style holding the width limits of ``widget``'s layout (empty when it sets none)."""
    layout = getattr(widget, "layout", None)
    rules = [
        f"{name}:{value}"
        for name, value in (("width", getattr(layout, "width", None)), ("max-width", getattr(layout, "max_width", None)))
        if value
    ]
    return f' style="{html.escape(";".join(rules))}"' if rules else ""


def _bundle_html(data: Mapping[str, object]) -> str:
    """HTML for a display bundle ``data`` (MIME type -> content): its HTML, Markdown, PNG or plain text, in that
    order of preference; ``""`` for other kinds."""
    if MIME_HTML in data:
        return str(data[MIME_HTML])
    if "text/markdown" in data:
        import mistune

        return mistune.html(str(data["text/markdown"]))
    if "image/png" in data:
        png = data["image/png"]
        encoded = base64.b64encode(png).decode("ascii") if isinstance(png, bytes) else png
        return f'<img src="data:image/png;base64,{encoded}" style="max-width:100%">'
    if "text/plain" in data:
        return f"<pre>{html.escape(str(data['text/plain']))}</pre>"
    return ""


def output_widget(data: Mapping[str, object]) -> widgets.Widget:
    """A widget showing one display bundle ``data`` (MIME type -> content, as ``IPython.display`` makes it):
    the widget it references, else an ``HTML`` widget with its HTML, Markdown, PNG or plain text."""
    view = data.get("application/vnd.jupyter.widget-view+json")
    if isinstance(view, Mapping) and view.get("model_id") in widget_instances:
        return widget_instances[view["model_id"]]
    return widgets.HTML(_bundle_html(data))


def _children_html(children: Iterable[widgets.Widget]) -> str:
    return "".join(widget_html(child) for child in children)


def widget_html(widget: widgets.Widget) -> str:
    """HTML showing what ``widget`` shows now, with its CSS classes.

    Boxes hold their children's HTML (in a row for ``HBox``); ``HTML`` widgets their value; images an inline
    PNG (or their format) at the widget's width; a choice (dropdown, toggle, slider…) its description and
    current value as text, without its classes; anything else nothing (an ``Output`` too: its content lives in
    the frontend, so pages redraw into boxes instead, ``widgets.show_filtered``).
    """
    if isinstance(widget, widgets.Box):
        direction = "row" if isinstance(widget, widgets.HBox) else "column"
        style = f"display:flex;flex-direction:{direction};flex-wrap:wrap;gap:4px 16px"
        return f'<div class="{_classes(widget)}" style="{style}">{_children_html(widget.children)}</div>'
    if isinstance(widget, (widgets.HTML, widgets.HTMLMath)):
        return f'<div class="{_classes(widget)}">{widget.value}</div>'
    if isinstance(widget, widgets.Label):
        return f'<span class="{_classes(widget)}">{html.escape(str(widget.value))}</span>'
    if isinstance(widget, widgets.Image):
        encoded = base64.b64encode(bytes(widget.value)).decode("ascii")
        image_type = html.escape(widget.format or "png")
        return f'<img class="{_classes(widget)}"{_size_style(widget)} src="data:image/{image_type};base64,{encoded}">'
    if isinstance(widget, widgets.ValueWidget):
        return _control_html(widget)
    return ""


def _control_html(control: widgets.ValueWidget) -> str:
    """A filter as text: ``description: current choice``."""
    label = getattr(control, "label", None)
    value = label if label is not None else getattr(control, "value", "")
    description = html.escape(str(getattr(control, "description", "") or ""))
    shown = html.escape(str(value))
    prefix = f"{description}: " if description else ""
    return f'<span class="crm-standin-control">{prefix}<strong>{shown}</strong></span>'


def install(shell=None) -> bool:
    """Make ``shell`` (default: the running IPython) send a ``text/html`` stand-in with every widget it
    displays; return False when there is no IPython. Frontends that draw widgets (Voilà's scripts,
    JupyterLab) prefer the widget; where none runs (papermill) the pages display no widgets."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return False
    shell.display_formatter.formatters[MIME_HTML].for_type(widgets.Widget, widget_html)
    return True
