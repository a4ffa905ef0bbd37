"""Every image of a run's report.html has alternative text: from ``results.show_figure`` (the figure's titles
and axis labels, or an explicit ``alt``) or, for a figure shown another way, the nearest heading above it."""

from __future__ import annotations

from html.parser import HTMLParser

import nbformat
import pytest

from crm_analytics.runner.report import with_alt_text, write_report

PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


class _Images(HTMLParser):
    """The attributes of every ``<img>`` of an HTML page, in order."""

    def __init__(self):
        super().__init__()
        self.images: list[dict] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


def _images(html: str) -> list[dict]:
    parser = _Images()
    parser.feed(html)
    return parser.images


def _image_output(alt: str | None = None):
    metadata = {"image/png": {"alt": alt}} if alt is not None else {}
    return nbformat.v4.new_output("display_data", data={"image/png": PNG_1PX, "text/plain": "<Figure>"}, metadata=metadata)


def test_images_without_alt_get_the_nearest_heading_and_the_notebook_is_not_changed():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("", outputs=[_image_output()]),
        nbformat.v4.new_markdown_cell("# Sales\n\nSome text.\n\n## Orders by *week*"),
        nbformat.v4.new_code_cell("", outputs=[_image_output(), _image_output("Orders per week, rising"), _image_output("  ")]),
        nbformat.v4.new_code_cell("", outputs=[nbformat.v4.new_output("display_data", data={"text/markdown": "### What we found"}),
                                               _image_output()]),
    ]
    alts = [o.metadata["image/png"]["alt"] for c in with_alt_text(nb).cells for o in c.get("outputs", []) if "image/png" in o.data]
    assert alts == ["Figure", "Figure: Orders by week", "Orders per week, rising", "Figure: Orders by week", "Figure: What we found"]
    assert "image/png" not in nb.cells[0].outputs[0].metadata  # the input notebook is untouched


def test_the_report_writes_each_alt_escaped(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("", outputs=[_image_output('Share of "Champions" <64%> & more')])]
    nbformat.write(nb, tmp_path / "run.ipynb")
    write_report(tmp_path / "run.ipynb", tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert [image["alt"] for image in _images(html)] == ['Share of "Champions" <64%> & more']
    assert "<64%>" not in html  # escaped, so it cannot open a tag


NOTEBOOK_CELLS = [
    ("markdown", "# Figures of a run"),
    ("code", """import matplotlib.pyplot as plt
from crm_analytics import plots, results
plots.set_style()"""),
    ("code", """fig, ax = plt.subplots()
ax.bar(["冠军客户", "Loyal Customers"], [3, 2])
ax.set(title="各细分客户的收入 Revenue by segment, CNY", xlabel="segment", ylabel="revenue (CNY)")
results.show_figure(fig, "revenue", output_dir=output_dir)"""),
    ("code", """fig, ax = plt.subplots()
ax.plot([1, 3, 2])
results.show_figure(fig, "explicit", output_dir=output_dir, alt="Orders rose, then fell")"""),
    ("markdown", "## Orders by week"),
    ("code", """plt.plot([1, 2, 3])
plt.show()"""),
    ("code", """fig, ax = plt.subplots()
ax.plot([3, 2, 1]);"""),
]


@pytest.mark.slow
def test_every_figure_of_a_papermill_run_has_alt_text_in_its_report(tmp_path):
    import papermill

    source = nbformat.v4.new_notebook()
    source.cells = [nbformat.v4.new_code_cell(f"output_dir = {str(tmp_path / 'run')!r}", metadata={"tags": ["parameters"]})]
    source.cells += [nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text) for kind, text in NOTEBOOK_CELLS]
    nbformat.write(source, tmp_path / "figures.ipynb")
    papermill.execute_notebook(str(tmp_path / "figures.ipynb"), str(tmp_path / "executed.ipynb"), kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False)
    write_report(tmp_path / "executed.ipynb", tmp_path / "report.html")

    images = _images((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert [image["alt"] for image in images] == [
        "各细分客户的收入 Revenue by segment, CNY; x axis: segment; y axis: revenue (CNY)",
        "Orders rose, then fell",
        "Figure: Orders by week",  # plt.show() through the inline backend
        "Figure: Orders by week",  # a figure the inline backend shows at the end of its cell
    ]
    assert (tmp_path / "run" / "figures" / "revenue.png").is_file()
    executed = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    stderr = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []) if o.get("name") == "stderr")
    assert "missing from font" not in stderr  # the Chinese title rendered with a CJK font
