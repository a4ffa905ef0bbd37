"""Tests of crm_analytics.report_index: audiences, purposes, headline numbers, freshness, failures and warnings in the index."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from crm_analytics import headlines, paths, report_index, runner


def _run(root: Path, analysis: str, run_id: str, *, warnings: list[dict] | None = None, status: str = "succeeded") -> None:
    folder = root / analysis / run_id
    folder.mkdir(parents=True)
    record = {"analysis": analysis, "run_id": run_id, "status": status, "started_at": "2024-05-01T08:00:00+00:00",
              "ended_at": "2024-05-01T08:00:03+00:00", "duration_s": 3.2}
    if warnings is not None:
        record["warnings"] = warnings
    (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")


def _row(page: str, analysis: str) -> str:
    return next(line for line in page.splitlines() if f"<strong>{analysis}</strong>" in line)


def test_index_counts_the_warnings_of_the_last_run(tmp_path):
    runs = tmp_path / "cdnow"
    _run(runs, "clv", "20240501T080000.000Z-aaaaaa", warnings=[
        {"kind": "too_little_data", "section": "Gamma-Gamma", "message": "too little data (n = 12, needs 30)"},
        {"kind": "not_converged", "section": "BG/NBD", "message": "the fit did not converge: a <= bound"},
    ])
    _run(runs, "churn", "20240501T080000.000Z-bbbbbb", warnings=[])
    _run(runs, "forecast", "20240501T080000.000Z-cccccc")  # a record written before warnings existed
    page = report_index.write_index(tmp_path, dataset="cdnow").read_text(encoding="utf-8")
    clv_row = _row(page, "clv")
    assert '<span class="status warnings"' in clv_row and ">2 warnings</span>" in clv_row
    assert "<small>Gamma-Gamma: too little data (n = 12, needs 30)</small>" in clv_row
    assert "BG/NBD: the fit did not converge: a &lt;= bound" in clv_row  # every warning in the tooltip, escaped
    assert "status warnings" not in _row(page, "churn") and "status warnings" not in _row(page, "forecast")
    assert ".warnings {" in page and "Amber counts the warnings" in page


def test_one_warning_is_singular():
    badge = report_index.warnings_badge({"warnings": [{"kind": "skipped", "section": "", "message": "no ground truth"}]})
    assert ">1 warning</span>" in badge and "<small>no ground truth</small>" in badge
    assert report_index.warnings_badge(None) == report_index.warnings_badge({"warnings": None}) == ""


# ----------------------------------------------------------------------------- an index that tells

AUDIENCES = ["Executive", "Customers", "Sales and marketing", "Service", "Data quality"]


def test_every_notebook_has_an_audience_and_a_purpose():
    catalogue = report_index.load_catalogue()
    assert list(catalogue.audiences.values()) == AUDIENCES
    notebooks = sorted(p.stem for p in paths.notebooks_dir().glob("*.ipynb"))
    assert [name for name in notebooks if name not in catalogue.reports] == [], "add them to parameters/reports.yaml"
    assert [name for name in catalogue.reports if name not in notebooks] == [], "no notebook by that name"
    for name in notebooks:
        assert catalogue.audience(name) in AUDIENCES and 20 < len(catalogue.purpose(name)) < 130, name


def test_a_report_with_an_undeclared_audience_is_refused_with_the_closest_one():
    raw = {"audiences": {"executive": "Executive", "customers": "Customers"},
           "reports": {"kpi": {"audience": "executiv", "purpose": "Targets."}}}
    with pytest.raises(report_index.ReportCatalogueError, match=r"reports.yaml: reports.kpi.audience 'executiv' .*did you mean 'executive'"):
        report_index.parse_catalogue(raw)
    raw["reports"]["kpi"] = {"audience": "executive"}
    with pytest.raises(report_index.ReportCatalogueError, match="reports.kpi.purpose is missing"):
        report_index.parse_catalogue(raw)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _record_run(root: Path, analysis: str, ended: datetime, status: str = "succeeded", **fields) -> Path:
    """A run folder named like the runner's, holding a ``run.json`` as the runner writes it."""
    run_id = ended.strftime("%Y%m%dT%H%M%S.000Z-") + analysis[:6].ljust(6, "x")
    folder = root / analysis / run_id
    folder.mkdir(parents=True)
    record = {"analysis": analysis, "run_id": run_id, "dataset": root.name, "status": status,
              "started_at": _iso(ended - timedelta(seconds=30)), "ended_at": _iso(ended), "duration_s": 30.0,
              "error_name": None, "error_message": None, "alert_count": None, "warnings": [], **fields}
    (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")
    if status == "succeeded":
        runner.move_latest(root / analysis, run_id)
    return folder


def _warehouse(path: Path, *, built_at: datetime) -> Path:
    """A warehouse file with orders from 2024-01-05 to 2024-03-28 and its ``dataset_info`` row."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE orders (order_id VARCHAR, order_time TIMESTAMP)")
        con.execute("INSERT INTO orders VALUES ('a', '2024-01-05 09:00'), ('b', '2024-02-10 12:00'), ('c', '2024-03-28 17:30')")
        con.execute("CREATE TABLE dataset_info (name VARCHAR, time_zone VARCHAR, currency VARCHAR, country VARCHAR, locale VARCHAR, built_at TIMESTAMP)")
        con.execute("INSERT INTO dataset_info VALUES ('online_retail_ii', 'Europe/London', 'GBP', 'GB', 'en_GB', ?)",
                    [built_at.astimezone(timezone.utc).replace(tzinfo=None)])
    return path


def build_outputs(tmp_path: Path) -> tuple[Path, Path]:
    """Outputs of one dataset with a good, a stale, a not-applicable and a failed-after-good run; returns (outputs, warehouse)."""
    now = datetime.now(timezone.utc)
    outputs = tmp_path / "outputs"
    runs = outputs / "online_retail_ii"
    warehouse = _warehouse(tmp_path / "online_retail_ii.duckdb", built_at=now - timedelta(days=2))
    good = _record_run(runs, "kpi", now - timedelta(hours=3), alert_count=2)
    (good / headlines.HEADLINE_FILE).write_text(json.dumps([
        {"label": "Revenue", "value": "£1,234,567", "period": "month 2024-03"},
        {"label": "KPIs off target", "value": "2 of 18 (1 amber, 1 red)", "period": "latest complete period of each KPI"},
    ]), encoding="utf-8")
    _record_run(runs, "segmentation", now - timedelta(days=3))  # before the warehouse was rebuilt
    _record_run(runs, "funnel", now - timedelta(hours=2), status="not_applicable", reason="needs web_events (empty)")
    _record_run(runs, "churn", now - timedelta(days=1))
    _record_run(runs, "churn", now - timedelta(hours=1), status="failed", error_name="KeyError",
                error_message="'customer_id' is missing from orders\nTraceback (most recent call last):\n  ...")
    return outputs, warehouse


def _card(page: str, analysis: str) -> str:
    return next(line for line in page.splitlines() if f"<strong>{analysis}</strong>" in line)


def test_the_index_groups_by_audience_with_purpose_headline_status_and_freshness(tmp_path):
    outputs, warehouse = build_outputs(tmp_path)
    catalogue = report_index.load_catalogue()
    page = report_index.write_index(outputs, dataset="online_retail_ii", warehouse=warehouse,
                                    analyses=["kpi", "segmentation", "funnel", "churn", "satisfaction"]).read_text(encoding="utf-8")
    headings = re.findall(r"<h2>([^<]+)</h2>", page)
    assert headings == ["Executive", "Customers", "Sales and marketing", "Service"], "in order, and only audiences with reports"
    sections = dict(zip(headings, page.split("<h2>")[1:], strict=True))
    assert "<strong>kpi</strong>" in sections["Executive"] and "<strong>funnel</strong>" in sections["Sales and marketing"]
    assert "<strong>segmentation</strong>" in sections["Customers"] and "<strong>churn</strong>" in sections["Customers"]
    for name in ("kpi", "segmentation", "funnel", "churn", "satisfaction"):
        assert f'<p class="purpose">{html.escape(catalogue.purpose(name))}</p>' in _card(page, name), name

    assert "online_retail_ii (Europe/London, GBP)" in page
    assert "orders run from 2024-01-05 to 2024-03-28" in page and "warehouse built " in page

    kpi = _card(page, "kpi")  # good and fresh: its headline numbers, no stale marker
    assert "<dt>Revenue</dt><dd>£1,234,567 <small>month 2024-03</small></dd>" in kpi
    assert "<dt>KPIs off target</dt>" in kpi and 'class="status succeeded"' in kpi
    assert "(3 hours old)" in kpi and "stale" not in kpi and '<span class="alert">2</span> alerts' in kpi

    segmentation = _card(page, "segmentation")  # good, but the warehouse was rebuilt since
    assert 'class="status stale">stale: older than the warehouse (built ' in segmentation and "(3 days old)" in segmentation
    assert '<dl class="headline">' not in segmentation, "no headline.json: no numbers"

    funnel = _card(page, "funnel")  # not applicable: grey, with its reason, no failure
    assert 'class="card muted"' in funnel and 'class="status not_applicable"' in funnel
    assert '<span class="reason">needs web_events (empty)</span>' in funnel and 'class="warn"' not in funnel

    churn = _card(page, "churn")  # a failure newer than the good run: red, the first line of its error
    assert 'class="card failing"' in churn and '<div class="warn"><span class="status failed">' in churn
    assert "<small>KeyError: &#x27;customer_id&#x27; is missing from orders</small>" in churn and "Traceback" not in churn
    assert 'href="churn/latest/report.html"' in churn, "the good report stays reachable"

    assert 'class="status never">never run</span>' in _card(page, "satisfaction")


def test_the_index_loads_nothing_from_other_hosts(tmp_path):
    outputs, warehouse = build_outputs(tmp_path)
    page = report_index.write_index(outputs, dataset="online_retail_ii", warehouse=warehouse).read_text(encoding="utf-8")
    top = (outputs / "index.html").read_text(encoding="utf-8")
    for text in (page, top):
        assert "http" not in text and "//" not in text.replace("<!DOCTYPE", "")
        assert not re.search(r"<script|<link|<img|<iframe|@import|url\(|@font-face", text, re.IGNORECASE)
    assert "orders run from 2024-01-05 to 2024-03-28" in top, "the top page names each dataset's period"
    served = report_index.write_index(outputs, dataset="online_retail_ii", warehouse=warehouse, analyses=["dashboard"],
                                      pages_url="https://pages.example.org/").read_text(encoding="utf-8")
    assert re.findall(r"https?://[^\"<]+", served) == ["https://pages.example.org/voila/render/dashboard.ipynb"]


def test_a_run_is_stale_when_older_than_the_threshold_or_the_warehouse():
    now = datetime(2024, 5, 20, 12, 0, tzinfo=timezone.utc)
    record = {"started_at": "2024-05-10T07:59:00+00:00", "ended_at": "2024-05-10T08:00:00+00:00"}
    assert report_index.stale_reason(record, now=now, built_at=None, stale_after_days=8) == "older than 8 days"
    assert report_index.stale_reason(record, now=now, built_at=None, stale_after_days=14) is None
    built = datetime(2024, 5, 11, 6, 0, tzinfo=timezone.utc)
    assert report_index.stale_reason(record, now=now, built_at=built, stale_after_days=14) == "older than the warehouse (built 2024-05-11 06:00 UTC)"
    assert report_index.age_text(3 * 86400 + 5) == "3 days" and report_index.age_text(3600) == "1 hour" and report_index.age_text(5) == "less than a minute"


def test_only_headline_items_that_keep_the_contract_are_shown(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / headlines.HEADLINE_FILE).write_text(json.dumps([
        {"label": "Customers scored", "value": "4,372", "period": "scored 2011-09-10, next 90 days"},
        {"label": "Likely to churn", "value": 1234, "period": "scored 2011-09-10"},  # a raw number: not for people
        "just text",
    ]), encoding="utf-8")
    assert headlines.read_headline(run_dir) == [headlines.Headline("Customers scored", "4,372", "scored 2011-09-10, next 90 days")]
    (run_dir / headlines.HEADLINE_FILE).write_text("{not json", encoding="utf-8")
    assert headlines.read_headline(run_dir) == [] and headlines.read_headline(tmp_path / "none") == []


# ----------------------------------------------------------------------------- the index in a real browser

SCREENSHOTS = Path(__file__).parent / "artifacts" / "browser"


@pytest.fixture(scope="module")
def chromium():
    from test_browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (run .ci/browser.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


_OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  return Array.from(document.querySelectorAll('body *'))
    .filter(e => e.getBoundingClientRect().right > width + 1 || e.getBoundingClientRect().left < -1)
    .map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').slice(0, 40));
}"""


@pytest.mark.browser
@pytest.mark.parametrize("width", [1280, 390])
def test_the_index_fits_the_page_width_in_a_browser(tmp_path, chromium, width):
    outputs, warehouse = build_outputs(tmp_path)
    page_file = report_index.write_index(outputs, dataset="online_retail_ii", warehouse=warehouse,
                                         analyses=report_index.load_catalogue().reports.keys())
    context = chromium.new_context(viewport={"width": width, "height": 900})
    requested: list[str] = []
    context.route("**/*", lambda route: (requested.append(route.request.url), route.continue_()))
    try:
        page = context.new_page()
        page.goto(page_file.as_uri(), wait_until="load")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"report-index-{width}.png"), full_page=True)
        assert page.locator("h2").all_inner_texts() == AUDIENCES
        assert page.locator("article.card").count() == len(report_index.load_catalogue().reports)
        assert page.evaluate(_OVERFLOWING) == [], "elements wider than the page"
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert page.locator(".card.failing .warn").inner_text().count("KeyError") == 1
    finally:
        context.close()
    assert requested == [page_file.as_uri()], "the page loads nothing but itself"
