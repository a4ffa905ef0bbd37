"""HTML copies of the page widgets (``crm_analytics.stand_ins``): what they show and when they are sent."""

from __future__ import annotations

import base64
import io

import ipywidgets as w
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

from crm_analytics import stand_ins  # noqa: E402


def _png() -> bytes:
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _section() -> tuple[w.VBox, bytes]:
    png = _png()
    segment = w.Dropdown(options=["all", "Champions"], value="Champions", description="Segment")
    segment.add_class("crm-filter-segment")
    tiles = w.HTML("<span class='crm-tile-value'>1,234</span>")
    tiles.add_class("crm-tiles")
    chart = w.Image(value=png, format="png", layout=w.Layout(width="300px"))
    chart.add_class("crm-chart-trend")
    return w.VBox([w.HBox([segment]), tiles, chart]), png


def test_a_section_is_copied_with_its_numbers_chart_and_classes_but_no_live_control():
    section, png = _section()
    copy = stand_ins.widget_html(section)
    assert '<div class="crm-tiles"><span class=\'crm-tile-value\'>1,234</span></div>' in copy
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"' in copy
    assert 'class="crm-chart-trend" style="width:300px"' in copy
    assert "Segment: <strong>Champions</strong>" in copy  # the filter as its current choice
    assert "crm-filter-segment" not in copy and "<select" not in copy  # only the live control can be operated
    assert copy.index("crm-tiles") < copy.index("crm-chart-trend")  # children in display order


def test_the_copy_follows_the_widget_and_escapes_control_text():
    tiles = w.HTML("<b>1</b>")
    choice = w.Dropdown(options=["<all>", "b"], value="<all>", description="A & B")
    box = w.VBox([choice, tiles])
    tiles.value = "<b>2</b>"
    copy = stand_ins.widget_html(box)
    assert "<b>2</b>" in copy and "<b>1</b>" not in copy
    assert "A &amp; B: <strong>&lt;all&gt;</strong>" in copy


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"text/html": "<table><tr><td>7</td></tr></table>", "text/plain": "7"}, "<table><tr><td>7</td></tr></table>"),
        ({"text/markdown": "**Filter not applied:** end before start", "text/plain": "x"}, "<strong>Filter not applied:</strong>"),
        ({"text/plain": "a < b"}, "<pre>a &lt; b</pre>"),
        ({"image/png": b"\x89PNG", "text/plain": "<Figure>"}, 'src="data:image/png;base64,iVBORw=="'),
    ],
)
def test_a_display_bundle_becomes_a_widget_showing_it(data, expected):
    shown = stand_ins.output_widget(data)
    assert isinstance(shown, w.HTML) and expected in shown.value


def test_a_bundle_referencing_a_widget_gives_that_widget():
    image = w.Image(value=_png(), format="png")
    bundle = image._repr_mimebundle_()
    assert stand_ins.output_widget(bundle) is image


def test_once_installed_every_displayed_widget_carries_its_html_copy():
    shell = InteractiveShell.instance()
    section, _png_bytes = _section()
    before, _metadata = shell.display_formatter.format(section)
    assert "text/html" not in before
    assert stand_ins.install(shell)
    try:
        data, _metadata = shell.display_formatter.format(section)
        assert data["text/html"] == stand_ins.widget_html(section)
        assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == section.model_id  # the live widget is still sent
    finally:
        shell.display_formatter.formatters["text/html"].pop(w.Widget)  # the test's shell is shared with later tests
