"""The stakeholder pages per audience (``notebooks/pages/``, ``crm_analytics.audience_pages``) and the landing page.

The pages read the persisted results of real runs: ``audience_home`` generates a small demo, builds its warehouse and
runs the analyses the pages show, once per module. One customer of the segmentation run's action list is then given a
segment that a spreadsheet would run as a formula and every customer a raw e-mail address, so that the drill-down list
and its download can be checked for masking and formula-safe cells. Browser tests drive Debian's Chromium with
Playwright against ``crm_analytics.serve`` (the machinery of ``test_browser``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.request
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from crm_analytics import audience_pages, pages, paths, privacy, serve
from crm_analytics.runner import list_analyses

import test_browser
from test_browser import PAGE_TIMEOUT_MS, free_port, start_server, stop_server, wait_until_serving
from test_pages import DAILY_AT_TWO, write_run

DEMO_CUSTOMERS = 1_500
ANALYSES = ("segmentation", "lifecycle", "clv", "churn", "kpi", "funnel", "pipeline", "attribution", "experiments", "satisfaction")
FORMULA_SEGMENT = '=HYPERLINK("http://attacker.example/","open")'
AUDIENCE_NOTEBOOKS = tuple(p.name for p in audience_pages.AUDIENCE_PAGES if p.name != "dashboard")
READY = ".crm-banner"
browser, visit = test_browser.browser, test_browser.visit  # the browser and page-visit fixtures, shared  # every page with data shows its freshness banners first


def _with_home(home: Path):
    """Point ``CRM_ANALYTICS_HOME`` at ``home``; return a function that restores the previous value."""
    previous = os.environ.get(paths.HOME_ENV)
    os.environ[paths.HOME_ENV] = str(home)

    def restore() -> None:
        if previous is None:
            os.environ.pop(paths.HOME_ENV, None)
        else:
            os.environ[paths.HOME_ENV] = previous

    return restore


def plant_hostile_cells(home: Path) -> None:
    """Give one customer of segmentation's action list a formula as segment and every customer a raw e-mail."""
    path = home / "outputs" / paths.default_dataset() / "segmentation" / "latest" / "tables" / "action_list.parquet"
    table = pd.read_parquet(path)
    table["rfm_segment"] = table["rfm_segment"].astype(object)
    table.loc[0, "rfm_segment"] = FORMULA_SEGMENT
    table["contact_email"] = [f"person.{i}@example.org" for i in range(len(table))]
    table.to_parquet(path, index=False)


@pytest.fixture(scope="module")
def audience_home(tmp_path_factory) -> Path:
    """A project home with a small demo warehouse and good runs of every analysis the pages show, and a daily schedule."""
    from crm_analytics import demo, runner
    from crm_analytics.cleansing import build_clean_warehouse

    home = tmp_path_factory.mktemp("audience_home")
    restore = _with_home(home)
    try:
        demo.generate(DEMO_CUSTOMERS, seed=7)
        build_clean_warehouse(as_of=demo.DEFAULT_AS_OF)
        outcomes = [runner.run_analysis(a, cell_timeout=300, run_timeout=600, write_index=False) for a in ANALYSES]
    finally:
        restore()
    assert [(r.analysis, r.status) for r in outcomes if not r.ok] == []
    plant_hostile_cells(home)
    jobs = [{"id": f"{a}-daily", "analysis": a, "cron": DAILY_AT_TWO} for a in ANALYSES]
    (home / "schedule.yaml").write_text(yaml.safe_dump({"timezone": "Asia/Shanghai", "jobs": jobs}), encoding="utf-8")
    return home


@pytest.fixture
def in_home(audience_home, monkeypatch) -> Path:
    monkeypatch.setenv(paths.HOME_ENV, str(audience_home))
    monkeypatch.setenv(pages.SCHEDULE_ENV, str(audience_home / "schedule.yaml"))
    return audience_home


# --------------------------------------------------------------------------------------------------
# the naming rule


def test_every_page_notebook_is_a_known_page_and_none_is_an_analysis():
    notebooks = {p.stem for p in paths.pages_dir().glob("*.ipynb")}
    assert notebooks == {p.name for p in audience_pages.AUDIENCE_PAGES if p.name != "dashboard"} | {audience_pages.LANDING}
    assert not notebooks & set(list_analyses())
    assert "dashboard" in list_analyses()


def test_serve_publishes_the_pages_and_the_dashboard():
    served = {p.name for p in serve.resolve_notebooks()}
    assert served == {f"{p.name}.ipynb" for p in audience_pages.AUDIENCE_PAGES} | {serve.LANDING_PAGE}
    assert serve.resolve_notebooks(["customers"]) == [paths.pages_dir() / "customers.ipynb"]


def test_every_page_belongs_to_a_declared_audience():
    from crm_analytics import report_index

    audiences = report_index.load_catalogue().audiences
    assert {p.audience for p in audience_pages.AUDIENCE_PAGES} <= set(audiences)


def test_churn_bands_include_their_lower_edge():
    bands = audience_pages.churn_band(pd.Series([0.0, 0.29, 0.3, 0.6, 1.0, None]))
    assert bands.tolist()[:5] == ["low risk", "low risk", "medium risk", "high risk", "high risk"]
    assert pd.isna(bands.iloc[5])


# --------------------------------------------------------------------------------------------------
# customer lists


def test_a_customer_list_is_masked_and_its_download_formula_safe(in_home):
    customers = audience_pages.customer_table()
    assert {"rfm_segment", "lifecycle_stage", "clv_amount", "churn_probability", "churn_band", "contact_email"} <= set(customers.columns)
    assert customers[privacy.CUSTOMER_KEY_COL].is_unique
    listed = audience_pages.customer_list(customers, "Segment", FORMULA_SEGMENT)
    assert len(listed) == 1 and listed.loc[0, "contact_email"].startswith("p***@")
    link = audience_pages.download_html(listed, "x.csv", label="Download")
    text = base64.b64decode(link.split("base64,")[1].split('"')[0]).decode("utf-8")
    assert "'" + FORMULA_SEGMENT.replace('"', '""') in text
    assert "person." not in text and "p***@example.org" in text


def test_customer_lists_by_churn_band_are_ordered_by_risk(in_home):
    customers = audience_pages.customer_table()
    listed = audience_pages.customer_list(customers, "Churn-risk band", "high risk")
    assert not listed.empty and (listed["churn_probability"] >= 0.6).all()
    assert listed["churn_probability"].is_monotonic_decreasing


# --------------------------------------------------------------------------------------------------
# the landing list


def test_the_landing_list_shows_every_page_fresh_after_good_runs(in_home):
    listed = audience_pages.landing_html()
    for page in audience_pages.AUDIENCE_PAGES:
        assert f'data-page="{page.name}"' in listed
    assert listed.count("crm-landing-fresh") == len(audience_pages.AUDIENCE_PAGES)


def test_a_page_whose_analyses_do_not_apply_is_left_out(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    for analysis in ("funnel", "pipeline", "attribution", "experiments"):
        run_dir = write_run(tmp_path, analysis, "20250101T000000.000Z-aaaaaa", status="not_applicable", started=pd.Timestamp.now(tz="UTC"))
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        (run_dir / "run.json").write_text(json.dumps({**record, "reason": "needs web_events"}), encoding="utf-8")
    listed = audience_pages.landing_html()
    assert 'data-page="sales_marketing"' not in listed and "Left out, not applicable to this dataset: sales_marketing" in listed
    note = audience_pages.page_note(audience_pages.audience_page("sales_marketing"))
    assert "does not apply to this dataset" in note and "needs web_events" in note


# --------------------------------------------------------------------------------------------------
# a page without data says so in one line


@pytest.mark.slow
@pytest.mark.parametrize("name", AUDIENCE_NOTEBOOKS)
def test_a_page_without_any_good_run_says_so_in_one_line(name, tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(paths.pages_dir() / f"{name}.ipynb"), str(out), kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    shown = [o for cell in nbformat.read(out, as_version=4).cells if cell.cell_type == "code" for o in cell.outputs]
    text = " ".join(str(o.get("data", {}).get("text/html", "")) for o in shown)
    assert ("crm-page-note" in text) is (name != "landing")
    assert not [o for o in shown if o.get("output_type") == "error" or o.get("name") == "stderr"]


# --------------------------------------------------------------------------------------------------
# in the browser


@pytest.fixture(scope="module")
def audience_server(audience_home, tmp_path_factory):
    port = free_port()
    # the cap is tested in test_serving_bounds; here every page and its plain GET may hold a kernel at once
    process = start_server(audience_home, port, "--max-kernels", "24", log=tmp_path_factory.mktemp("serve") / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base + "/voila/render/landing.ipynb", process)
        yield base
    finally:
        stop_server(process)


def url(base: str, name: str) -> str:
    return f"{base}/voila/render/{name}.ipynb"


def page_code_lines(name: str) -> list[str]:
    nb = nbformat.read(paths.pages_dir() / f"{name}.ipynb", as_version=4)
    lines = [line.strip() for cell in nb.cells if cell.cell_type == "code" for line in cell.source.splitlines()]
    return [line for line in lines if len(line) > 25]


def _clean(page) -> None:
    text = page.page.inner_text("body")
    assert page.errors == []
    assert "Traceback" not in text and "There was an error when executing cell" not in text
    assert page.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert page.external == []


# what each page shows once loaded (besides its banners)
SHOWN = {
    "executive": (".crm-filtered .crm-kpi-trend svg", ".crm-kpi-tile .crm-kpi-value", "text=KPI board"),
    "customers": (".crm-chart-clv", ".crm-chart-churn", ".crm-drill-list table"),
    "sales_marketing": (".crm-chart-funnel", ".crm-chart-attribution", ".crm-experiment"),
    "service": (".crm-chart-trend", ".crm-tile", "text=Ticket KPIs"),
    "landing": (".crm-landing-page",),
}


@pytest.mark.browser
@pytest.mark.parametrize("name", list(SHOWN))
def test_the_page_renders_without_code_error_or_other_host(audience_server, visit, name):
    page = visit(url(audience_server, name), (".crm-landing" if name == "landing" else READY, *SHOWN[name]))
    page.settle()
    page.screenshot(f"audience-{name}")
    _clean(page)
    assert page.page.locator(".crm-section-note, .crm-page-note").count() == 0
    rendered = page.page.content()
    with urllib.request.urlopen(url(audience_server, name), timeout=60) as response:
        served = response.read().decode("utf-8")
    lines = page_code_lines(name)
    assert lines and [line for line in lines if line in rendered or line in served] == []


@pytest.mark.browser
def test_root_opens_the_landing_page_listing_every_page(audience_server, visit):
    page = visit(audience_server + "/", (".crm-landing-page",))
    page.settle()
    assert page.page.url.endswith("/voila/render/landing.ipynb")
    assert page.page.locator(".crm-landing-page").count() == len(audience_pages.AUDIENCE_PAGES)
    assert page.page.locator(".crm-landing-page a[href='customers.ipynb']").count() == 1
    _clean(page)


@pytest.mark.browser
@pytest.mark.parametrize("name", [name for name in SHOWN if name != "landing"])
def test_numbers_and_charts_show_from_the_html_before_any_script(audience_server, browser, visit, name):
    """With JavaScript off the page's HTML alone shows every number and chart (widgets through their HTML copies,
    ``crm_analytics.stand_ins``) and offers no control; the live page shows the same charts once each."""
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 2200})
    try:
        static = context.new_page()
        static.goto(url(audience_server, name), wait_until="load", timeout=PAGE_TIMEOUT_MS)
        for selector in (READY, *SHOWN[name]):
            assert static.locator(selector).first.is_visible(), selector
        assert static.locator(".crm-standin").count() >= 1 and static.locator("select").count() == 0
        charts = static.locator(SHOWN[name][0]).count()
    finally:
        context.close()
    live = visit(url(audience_server, name), (READY, *SHOWN[name]))
    assert live.page.locator(".crm-standin").count() == 0
    assert live.page.locator(SHOWN[name][0]).count() == charts
    assert live.page.locator("select").count() >= 1 and live.errors == []


CHANGED = """([css, before]) => { const chart = document.querySelector(css); return chart && chart.outerHTML !== before; }"""


def _redraws(page, chart_css: str, select_css: str, option: str) -> None:
    """Choose ``option`` in ``select_css`` and wait until the chart ``chart_css`` (an image or an SVG) is another one."""
    before = page.page.locator(chart_css).first.evaluate("(chart) => chart.outerHTML")
    page.page.select_option(select_css, option)
    page.page.wait_for_function(CHANGED, arg=[chart_css, before], timeout=PAGE_TIMEOUT_MS)


FILTERS = {
    "executive": (".crm-filtered .crm-kpi-trend svg", ".widget-dropdown:has(label:text-is('Period')) select", "quarter"),
    "customers": (".crm-chart-clv", ".crm-filter-segment select", "Champions"),
    "sales_marketing": (".crm-chart-funnel", ".crm-filter-breakdown select", "platform"),
    "service": (".crm-chart-trend", ".crm-filter-period select", "All months"),
}


@pytest.mark.browser
@pytest.mark.parametrize("name", list(FILTERS))
def test_a_filter_redraws(audience_server, visit, name):
    image, select, option = FILTERS[name]
    page = visit(url(audience_server, name), (READY, *SHOWN[name]))
    _redraws(page, image, select, option)
    page.screenshot(f"audience-{name}-filtered")
    assert page.errors == []


SIZE_NAMES = "(group) => { const size = document.querySelector('.crm-drill-size'); return size && size.innerText.includes(group); }"


@pytest.mark.browser
def test_the_customer_drill_down_list_and_download_are_masked_and_formula_safe(audience_server, visit):
    page = visit(url(audience_server, "customers"), (READY, ".crm-drill-list table"))
    for group in ("Champions", FORMULA_SEGMENT):  # the formula sorts first: choose another group, then it
        page.page.select_option(".crm-filter-group select", group)
        page.page.wait_for_function(SIZE_NAMES, arg=group, timeout=PAGE_TIMEOUT_MS)
    page.screenshot("audience-customers-drill-down")
    listed = page.page.inner_text(".crm-drill-list")
    assert "cus_" in listed and "p***@example.org" in listed and "person." not in listed
    href = page.page.get_attribute(".crm-drill a.crm-download", "href")
    assert href.startswith("data:text/csv")
    text = base64.b64decode(href.split("base64,", 1)[1]).decode("utf-8")
    rows = text.strip().split("\r\n")
    assert len(rows) == 2 and "'" + FORMULA_SEGMENT.replace('"', '""') in rows[1]
    assert "person." not in text and "p***@example.org" in text
    # another dimension: the group list follows, and a churn-risk band lists its customers
    page.page.select_option(".crm-filter-dimension select", "Churn-risk band")
    page.page.wait_for_function(SIZE_NAMES, arg="low risk", timeout=PAGE_TIMEOUT_MS)
    page.page.select_option(".crm-filter-group select", "high risk")
    page.page.wait_for_function(SIZE_NAMES, arg="high risk", timeout=PAGE_TIMEOUT_MS)
    assert page.errors == []


@pytest.mark.browser
def test_the_landing_page_reflects_a_failed_and_a_stale_run(audience_server, visit, audience_home):
    failed = write_run(audience_home, "satisfaction", "29990101T000000.000Z-ffffff", status="failed", started=pd.Timestamp.now(tz="UTC"))
    record_path = audience_home / "outputs" / paths.default_dataset() / "churn" / "latest" / "run.json"
    original = record_path.read_text(encoding="utf-8")
    three_days_ago = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=3)
    record = {**json.loads(original), "started_at": three_days_ago.isoformat(), "ended_at": (three_days_ago + pd.Timedelta(minutes=2)).isoformat()}
    record_path.write_text(json.dumps(record), encoding="utf-8")
    try:
        page = visit(url(audience_server, "landing"), (".crm-landing-page",))
        page.screenshot("audience-landing-failed-stale")
        service = page.page.locator(".crm-landing-page[data-page='service']")
        assert "crm-landing-failed" in service.get_attribute("class")
        assert "failed" in service.locator(".crm-banner-failed[data-analysis='satisfaction']").inner_text()
        customers = page.page.locator(".crm-landing-page[data-page='customers']")
        assert "crm-landing-stale" in customers.get_attribute("class")
        assert "out of date" in customers.locator(".crm-banner-stale[data-analysis='churn']").inner_text()
        assert "crm-landing-fresh" in page.page.locator(".crm-landing-page[data-page='executive']").get_attribute("class")
        _clean(page)
    finally:
        shutil.rmtree(failed)
        record_path.write_text(original, encoding="utf-8")
