"""Findings first: fixed-template sentences from a run's result tables, the change since the previous run, the warnings."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from crm_analytics import findings, tables


def segment_summary() -> pd.DataFrame:
    """A hand-made ``segment_summary``: 1,000 customers, net revenue 100,000."""
    return pd.DataFrame({
        "rfm_segment": ["Champions", "Loyal Customers", "At Risk", "Lost"],
        "n_customers": [100, 210, 190, 500],
        "customer_pct": [10.0, 21.0, 19.0, 50.0],
        "revenue_amount": [40_000.0, 24_000.0, 30_000.0, 6_000.0],
        "revenue_pct": [40.0, 24.0, 30.0, 6.0],
    })


def test_segmentation_sentences_name_their_number_and_period():
    found = findings.segmentation_findings(segment_summary(), snapshot="2024-07-01", first_day="2023-01-01", currency="GBP", locale="en_GB")
    assert [f.key for f in found] == ["top_segment_revenue_pct", "champions_loyal_revenue_pct", "at_risk_revenue_pct"]
    period = "orders from 2023-01-01 to 2024-06-30, snapshot 2024-07-01"
    assert found[0].sentence == (f"Champions is the segment with the most revenue: 40.0% of net revenue (£40,000) from 10.0% of customers "
                                 f"(100 of 1,000; {period}).")
    assert found[1].sentence == f"Champions and Loyal Customers together are 31.0% of customers and 64.0% of net revenue ({period})."
    assert "190 customers (19.0%) are At Risk" in found[2].sentence and "£30,000 (30.0% of net revenue)" in found[2].sentence
    assert all(period in f.sentence for f in found) and found[1].value == 64.0


def test_money_in_the_sentences_follows_the_dataset_locale():
    found = findings.segmentation_findings(segment_summary(), snapshot="2024-07-01", currency="BRL", locale="pt_BR")
    assert "R$\xa040.000" in found[0].sentence and "40,0%" in found[0].sentence


def test_cohort_sentences():
    retention = pd.DataFrame({0: [1.0, 1.0, 1.0, 1.0], 1: [0.5, 0.4, 0.3, None], 2: [0.3, 0.2, 0.25, None]},
                             index=pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]))
    ltv = retention * 100
    found = findings.cohort_findings(retention, ltv, period="M", end_day="2024-04-30", currency="GBP", locale="en_GB")
    assert found[0].sentence == ("On average 40.0% of a cohort's customers bought again in the month after their first purchase "
                                 "(3 cohorts from 2024-01-01 to 2024-03-01, orders up to 2024-04-30).")
    assert found[1].key == "retention_period_2" and "25.0%" in found[1].sentence and "2024-04-30" in found[1].sentence
    assert found[2].sentence.startswith("A customer brought £25.00 of net revenue in their first 3 months")


def test_funnel_sentences_name_the_largest_drop():
    overall = pd.DataFrame({
        "step_number": [1, 2, 3], "step": ["visit", "add_to_cart", "purchase"], "users": [1000, 400, 300],
        "conversion_from_first_pct": [100.0, 40.0, 30.0], "drop_off": [0, 600, 100], "drop_off_pct": [0.0, 60.0, 25.0],
    })
    found = findings.funnel_findings(overall, first_day="2024-01-01", last_day="2024-03-31", converted=pd.DataFrame({"days_to_convert": [0.5, 1.5, 2.5]}))
    assert found[0].sentence == "30.0% of the 1,000 sessions that reached visit went on to purchase (300; events from 2024-01-01 to 2024-03-31)."
    assert found[1].sentence.startswith("The largest drop is from visit to add_to_cart: 60.0% of the sessions (600)")
    assert "within 1.5 days of visit" in found[2].sentence


def test_kpi_sentences_count_the_alerts():
    tracked = pd.DataFrame({
        "kpi_id": ["revenue", "revenue", "aov"], "name": ["Revenue", "Revenue", "Average order value"], "unit": ["money", "money", "money"],
        "grain": "month", "kpi_grain": "month", "segment": "all", "channel": "all",
        "period_start": pd.to_datetime(["2024-05-01", "2024-06-01", "2024-06-01"]), "period_end": pd.to_datetime(["2024-06-01", "2024-07-01", "2024-07-01"]),
        "value": [1000.0, 1200.0, 50.0], "change_pct": [None, 20.0, -5.0], "status": ["green", "green", "red"],
    })
    alerts = pd.DataFrame({"severity": ["red"], "grain": ["month"], "period_start": pd.to_datetime(["2024-06-01"]),
                           "message": ["Average order value is £50.00, red against target £60.00"]})
    found = findings.kpi_findings(tracked, alerts, currency="GBP", locale="en_GB")
    assert found[0].sentence.startswith("1 KPI alert (1 red, 0 amber; latest complete periods, up to 2024-06-30); the first: Average order value is £50.00")
    assert found[1].sentence == "Revenue was £1,200 in the month from 2024-06-01 to 2024-06-30, +20.0% on the previous month."
    assert found[2].sentence.startswith("1 of the 2 KPIs with a target are on target")
    assert findings.kpi_findings(tracked, alerts.iloc[:0])[0].value == 0


def test_change_since_the_previous_run_in_points():
    current = findings.segmentation_findings(segment_summary(), snapshot="2024-07-01")
    before = segment_summary().assign(revenue_pct=[35.5, 24.0, 30.0, 10.5])
    previous = findings.findings_table(findings.segmentation_findings(before, snapshot="2024-04-01"))
    change = findings.change_finding(current, previous, previous_run="20240401T000000.000Z-abc123")
    assert change.sentence.startswith("Since the previous successful run (20240401T000000.000Z-abc123")
    assert change.sentence.endswith("Champions' share of net revenue went from 35.5% to 40.0% (+4.5 points).")
    assert findings.change_finding(current, None) is None


def test_warnings_say_what_was_too_little_or_skipped():
    recorded = [
        {"kind": "too_little_data", "section": "Clusters", "message": "too little data (n = 12 customers, needs 50); the clusters are skipped"},
        {"kind": "data_note", "section": "Load", "message": "3 of 10 orders have no customer"},
    ]
    [sentence] = findings.warning_findings(recorded)
    assert sentence.sentence == ("Read with care: too little data or skipped: Clusters (too little data (n = 12 customers, needs 50); "
                                 "the clusters are skipped); and 1 data note (Load).")
    assert findings.warning_findings([]) == []


def test_block_has_at_most_five_sentences_and_persists_raw_numbers(tmp_path):
    analysis_root = tmp_path / "segmentation"
    old_run = analysis_root / "20240401T000000.000Z-aaaaaa"
    findings.publish(findings.segmentation_findings(segment_summary().assign(revenue_pct=[30.0, 24.0, 30.0, 16.0]), snapshot="2024-04-01"),
                     output_dir=old_run, warnings=[])
    (analysis_root / "latest").symlink_to(old_run.name)
    run = analysis_root / "20240701T000000.000Z-bbbbbb"
    results_warnings = [{"kind": "skipped", "section": "Evaluation", "message": "no ground truth"}]
    block = findings.publish(findings.segmentation_findings(segment_summary(), snapshot="2024-07-01"), output_dir=run, warnings=results_warnings)
    assert len(block) == 5 and block[3].key == "change_top_segment_revenue_pct" and block[4].key == "warnings"
    assert "from 30.0% to 40.0% (+10.0 points)" in block[3].sentence
    stored = pd.read_parquet(run / "tables" / "findings.parquet")
    assert stored["value"].iloc[0] == 40.0 and stored["sentence"].tolist() == [f.sentence for f in block]
    html = findings.findings_html(block)
    assert html.startswith('<div class="findings" id="what-we-found"><h2>What we found</h2>') and html.count("<li>") == 5


# --------------------------------------------------------------------------- a real run of a notebook


def _report_html(analysis: str, parameters: dict, folder, output_dir):
    import papermill

    from crm_analytics import paths
    from crm_analytics.runner.report import write_report

    executed = folder / f"{analysis}.ipynb"
    papermill.execute_notebook(str(paths.notebooks_dir() / f"{analysis}.ipynb"), str(executed), parameters=parameters | {"output_dir": str(output_dir)},
                               kernel_name="python3", cwd=str(folder), progress_bar=False)
    report = folder / "report.html"
    write_report(executed, report)
    return report.read_text(encoding="utf-8")


@pytest.mark.slow
def test_segmentation_report_opens_with_its_findings(demo_home, tmp_path):
    import yaml

    from crm_analytics import paths

    analysis_root = tmp_path / "outputs" / "segmentation"
    previous = analysis_root / "20240101T000000.000Z-000000"
    (previous / "tables").mkdir(parents=True)
    findings.findings_table([findings.Finding("champions_loyal_revenue_pct", "earlier", 50.0, "percent", "snapshot 2024-01-01")]).to_parquet(
        previous / "tables" / "findings.parquet")
    (analysis_root / "latest").symlink_to(previous.name)
    run = analysis_root / "20250101T000000.000Z-111111"
    parameters = yaml.safe_load((paths.parameters_dir() / "segmentation" / "default.yaml").read_text(encoding="utf-8"))
    html = _report_html("segmentation", parameters, tmp_path, run)

    block = html.index('id="what-we-found"')
    first_section = html.index('<h2 id="')  # nbconvert gives every Markdown heading an id; the findings' heading has none
    assert block < first_section and html[first_section:].startswith('<h2 id="Load"'), "the findings come before the first section"
    assert findings.PLACEHOLDER not in html, "the placeholder was replaced in place"
    sentences = re.findall(r"<li>(.*?)</li>", html[block:html.index("</div>", block)])
    assert 3 <= len(sentences) <= 5, sentences
    assert any("Champions and Loyal Customers together" in s for s in sentences)
    assert any(s.startswith("Since the previous successful run (20240101T000000.000Z-000000") and "from 50.0% to" in s for s in sentences)
    assert all(re.search(r"\d{4}-\d{2}-\d{2}", s) for s in sentences if not s.startswith("Read with care")), "every finding names its period"
    tables_html = "".join(re.findall(r"<table.*?</table>", html, flags=re.S))
    assert tables_html.count("people-table") >= 5
    assert tables.long_floats(tables_html) == [], "no float with more than three decimals in the report's tables"
    assert not re.search(r'class="row_heading', tables_html), "no bare index"
    raw = pd.read_parquet(run / "tables" / "segment_summary.parquet")
    assert raw["revenue_amount"].dtype == "float64" and raw["customer_pct"].sum() == pytest.approx(100)
    stored = pd.read_parquet(run / "tables" / "findings.parquet")
    print("\n".join(stored["sentence"]))
