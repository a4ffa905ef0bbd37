"""Tests of crm_analytics.headlines: the headline numbers of a run, from its persisted tables, into ``headline.json``."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import nbformat
import pandas as pd
import pytest

from crm_analytics import headlines, report_index, results, runner

DATASET = "online_retail_ii"  # pounds, en_GB


def _tables(run_dir: Path, **frames: pd.DataFrame) -> Path:
    for name, frame in frames.items():
        results.save_table(frame, name, output_dir=run_dir)
    return run_dir


@pytest.fixture
def warehouse(tmp_path) -> Path:
    """Orders from 2024-01-05 to 2024-03-28 (a snapshot the day after: 2024-03-29)."""
    path = tmp_path / "wh.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE orders AS SELECT * FROM (VALUES (TIMESTAMP '2024-01-05 09:00'), (TIMESTAMP '2024-03-28 17:30')) t(order_time)")
    return path


def _compute(analysis: str, run_dir: Path, warehouse: Path, **parameters) -> list[tuple[str, str, str]]:
    found = headlines.compute_headlines(analysis, run_dir, parameters={"warehouse_path": str(warehouse), **parameters}, dataset=DATASET)
    return [(h.label, h.value, h.period) for h in found]


def test_segmentation_names_the_segment_with_the_largest_revenue_share(tmp_path, warehouse):
    summary = pd.DataFrame({"rfm_segment": ["Champions", "Loyal Customers", "Lost"], "n_customers": [1200, 2300, 900],
                            "customer_pct": [27.27, 52.27, 20.45], "revenue_amount": [5.1e6, 6.2e6, 0.4e6],
                            "revenue_pct": [43.59, 52.99, 3.42], "revenue_per_customer_amount": [4250.0, 2695.7, 444.4]})
    run_dir = _tables(tmp_path / "run", segment_summary=summary)
    assert _compute("segmentation", run_dir, warehouse) == [
        ("Customers segmented", "4,400", "snapshot 2024-03-29"),
        ("Largest segment by revenue", "Loyal Customers: 53.0% of revenue from 52.3% of customers", "snapshot 2024-03-29"),
    ]
    assert _compute("segmentation", run_dir, warehouse, as_of="2024-02-01")[0][2] == "snapshot 2024-02-01", "a given date wins"


def test_overview_counts_orders_and_customers_and_sums_net_revenue_in_pounds(tmp_path, warehouse):
    inventory = pd.DataFrame({"table": ["customers", "orders", "products"], "rows": [5878, 36969, 4000],
                              "first_time": pd.to_datetime(["2009-12-01 00:00", "2009-12-01 07:45", None]),
                              "last_time": pd.to_datetime(["2011-12-09 00:00", "2011-12-09 12:50", None])})
    series = pd.DataFrame({"period_start": pd.to_datetime(["2011-11-28", "2011-12-05"]), "channel": ["store", "store"],
                           "n_orders": [500, 300], "net_revenue_amount": [86_161.25, 13_838.75]})
    run_dir = _tables(tmp_path / "run", table_inventory=inventory, orders_over_time=series)
    period = "orders 2009-12-01 to 2011-12-09"
    assert _compute("overview", run_dir, warehouse) == [
        ("Orders in the warehouse", "36,969", period), ("Customers in the warehouse", "5,878", period), ("Net revenue", "£100,000", period),
    ]


def test_kpi_states_revenue_of_the_latest_period_the_kpis_off_target_and_the_alerts(tmp_path, warehouse):
    def row(kpi_id, start, value, status, grain="month", unit="money"):
        return {"grain": grain, "kpi_grain": grain, "period_start": pd.Timestamp(start), "kpi_id": kpi_id, "segment": "all",
                "channel": "all", "value": value, "unit": unit, "status": status}

    values = pd.DataFrame([row("revenue", "2024-02-01", 81_000.0, "green"), row("revenue", "2024-03-01", 92_345.6, "amber"),
                           row("orders", "2024-03-01", 2100.0, "red", unit="count"), row("nps", "2024-03-01", 31.0, "green", unit="score"),
                           row("win_rate", "2024-01-01", 12.0, "amber", grain="quarter", unit="pct"),
                           row("csat", "2024-03-01", 4.1, "no target", unit="score")])  # not counted: it has no target
    alerts = pd.DataFrame({"kpi_id": ["orders"], "grain": ["month"], "period_start": pd.to_datetime(["2024-03-01"]), "severity": ["red"]})
    run_dir = _tables(tmp_path / "run", kpi_values=values, alerts=alerts)
    assert _compute("kpi", run_dir, warehouse, grain="month") == [
        ("Revenue", "£92,346", "month 2024-03"),
        ("KPIs off target", "3 of 4 (2 amber, 1 red)", "latest complete period of each KPI"),
        ("KPI alerts", "1", "month 2024-03"),
    ]


def test_cleansing_and_churn_headlines(tmp_path, warehouse):
    counts = pd.DataFrame({"source": ["invoices", "invoices", "customers"], "table_name": ["orders", "order_items", "customers"],
                           "rows_in": [40_000, 500_000, 6_000], "rows_clean": [39_990, 499_800, 6_000], "rows_quarantined": [10, 200, 0]})
    cleansing_dir = _tables(tmp_path / "cleansing", quality_row_counts=counts)
    period = "orders 2024-01-05 to 2024-03-28"
    assert _compute("cleansing", cleansing_dir, warehouse) == [
        ("Rows read", "546,000 from 2 sources", period), ("Rows quarantined", "210 (0.04%)", period),
    ]
    scores = pd.DataFrame({"customer_key": ["a", "b", "c", "d"], "churn_probability": [0.9, 0.5, 0.2, 0.1]})
    metrics = pd.DataFrame({"metric": ["roc_auc", "base_rate"], "value": [0.8123, 0.4]})
    churn_dir = _tables(tmp_path / "churn", churn_scores=scores, metrics=metrics)
    period = "scored 2023-12-30, next 90 days"  # the day after the last order minus the 90-day window
    assert _compute("churn", churn_dir, warehouse, window_days=90) == [
        ("Customers scored", "4", period), ("Likely to churn", "2 (50.0%)", period),
        ("Model ROC AUC (1 is perfect, 0.5 is chance)", "0.81", "held-out customers"),
    ]


def test_the_file_keeps_the_contract_and_an_analysis_without_headlines_gets_none(tmp_path, warehouse):
    run_dir = _tables(tmp_path / "run", churn_scores=pd.DataFrame({"customer_key": ["a"], "churn_probability": [0.7]}))
    written = headlines.write_headline("churn", run_dir, parameters={"warehouse_path": str(warehouse)}, dataset=DATASET)
    items = json.loads(written.read_text(encoding="utf-8"))
    assert written == run_dir / "headline.json" and all(set(item) == {"label", "value", "period"} for item in items)
    assert all(isinstance(value, str) for item in items for value in item.values())
    assert headlines.read_headline(run_dir)[0] == headlines.Headline("Customers scored", "1", "scored 2023-12-30, next 90 days")
    assert headlines.write_headline("forecast", tmp_path / "other", parameters={}, dataset=DATASET) is None
    assert headlines.write_headline("churn", tmp_path / "empty", parameters={"warehouse_path": str(warehouse)}, dataset=DATASET) is None
    assert set(headlines.HEADLINES) >= {"overview", "segmentation", "kpi", "cleansing", "churn"}


def test_an_analysis_without_a_headline_function_shows_the_numbers_of_its_findings(tmp_path, warehouse):
    from crm_analytics import findings

    block = [
        findings.Finding("win_rate_pct", "18.4% of ... were won.", 18.389753, "percent", "opportunities created from 2023-01-17 to 2025-12-31", "the win rate"),
        findings.Finding("open_pipeline_amount", "The open pipeline ...", 13_235_300.0, "money", "opportunities created from 2023-01-17 to 2025-12-31",
                         "the open pipeline value"),
        findings.Finding("change_win_rate_pct", "Since the previous successful run ...", 1.2, "percent", "", "the win rate"),
        findings.Finding("lowest_stage_conversion_pct", "The stage converting least ...", 59.641256, "percent", "opportunities created", ""),
        findings.Finding("warnings", "Read with care: ...", 1, "count", ""),
        findings.Finding("top_share", "The top 10% ...", 0.4567, "share", "calibration end 2024-06-30", "the top 10%'s share of predicted value"),
    ]
    run_dir = _tables(tmp_path / "run", findings=findings.findings_table(block))
    assert _compute("pipeline", run_dir, warehouse) == [
        ("Win rate", "18.4%", "opportunities created from 2023-01-17 to 2025-12-31"),
        ("Open pipeline value", "£13,235,300", "opportunities created from 2023-01-17 to 2025-12-31"),
        ("Lowest stage conversion %", "59.6%", "opportunities created"),
    ], "at most three numbers in their units; changes and warnings are not headline numbers; no label: the key"
    written = headlines.write_headline("clv", run_dir, parameters={"warehouse_path": str(warehouse)}, dataset=DATASET)
    assert json.loads(written.read_text(encoding="utf-8"))[0] == {"label": "Win rate", "value": "18.4%",
                                                                   "period": "opportunities created from 2023-01-17 to 2025-12-31"}
    sentences_only = _tables(tmp_path / "dashboard", findings=findings.findings_table([findings.Finding("headline_kpi", "From the latest kpi report: ...")]))
    assert headlines.write_headline("dashboard", sentences_only, parameters={}, dataset=DATASET) is None, "a block without numbers gives no headline"


def test_an_analysis_whose_function_finds_nothing_falls_back_to_its_findings(tmp_path, warehouse):
    from crm_analytics import findings

    block = [findings.Finding("n_orders", "The warehouse holds ...", 36_969, "count", "orders 2024-01-05 to 2024-03-28", "the number of orders")]
    run_dir = _tables(tmp_path / "run", findings=findings.findings_table(block))  # no table_inventory
    assert _compute("overview", run_dir, warehouse) == [("Number of orders", "36,969", "orders 2024-01-05 to 2024-03-28")]


def test_latest_headlines_reads_each_analysis_latest_good_run(tmp_path, monkeypatch):
    from crm_analytics import paths

    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    for analysis, label in (("kpi", "Revenue"), ("cohort", "Share buying again")):
        run_dir = paths.analysis_dir(analysis, DATASET) / "20240101T000000.000Z-aaaaaa"
        run_dir.mkdir(parents=True)
        (run_dir / headlines.HEADLINE_FILE).write_text(json.dumps([{"label": label, "value": "1", "period": "p"}]), encoding="utf-8")
        runner.move_latest(run_dir.parent, run_dir.name)
    rows = headlines.latest_headlines(["kpi", "funnel", "cohort"], dataset=DATASET)
    assert rows.to_dict("records") == [{"analysis": "kpi", "label": "Revenue", "value": "1", "period": "p"},
                                       {"analysis": "cohort", "label": "Share buying again", "value": "1", "period": "p"}]
    assert list(headlines.latest_headlines([], dataset=DATASET).columns) == ["analysis", "label", "value", "period"]


# ----------------------------------------------------------------------------- through the runner


def _overview_notebook(folder: Path, *, rows_column: str) -> Path:
    """A notebook called ``overview`` that persists a ``table_inventory`` whose count column is ``rows_column``."""
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                                  "language_info": {"name": "python"}})
    parameters = nbformat.v4.new_code_cell('dataset = ""\nwarehouse_path = ""\noutput_dir = ""')
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Data overview"),
        parameters,
        nbformat.v4.new_code_cell(
            "import pandas as pd\nfrom crm_analytics import results\n"
            f"inventory = pd.DataFrame({{'table': ['orders', 'customers'], '{rows_column}': [36969, 5878],"
            " 'first_time': pd.to_datetime(['2024-01-05', None]), 'last_time': pd.to_datetime(['2024-03-28', None])})\n"
            "results.save_table(inventory, 'table_inventory', output_dir=output_dir)"
        ),
    ]
    for cell in notebook.cells:
        cell.metadata.setdefault("tags", [])
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / "overview.ipynb")
    return folder


@pytest.mark.slow
def test_a_successful_run_gets_its_headline_and_a_broken_table_never_fails_a_run(tmp_path, warehouse):
    options = {"output_root": tmp_path / "outputs", "parameters_root": tmp_path / "parameters", "dataset": DATASET,
               "parameters": {"warehouse_path": str(tmp_path / "absent.duckdb")}}  # absent: the runner cannot judge applicability
    broken = runner.run_analysis("overview", notebook_dir=_overview_notebook(tmp_path / "broken", rows_column="n_rows"), **options)
    assert broken.status == "succeeded", broken
    assert not (broken.run_dir / "headline.json").exists(), "a headline that cannot be computed is skipped"
    good = runner.run_analysis("overview", notebook_dir=_overview_notebook(tmp_path / "good", rows_column="rows"), **options)
    assert good.status == "succeeded", good
    assert headlines.read_headline(good.run_dir)[0] == headlines.Headline("Orders in the warehouse", "36,969", "orders 2024-01-05 to 2024-03-28")
    page = (tmp_path / "outputs" / DATASET / report_index.INDEX_NAME).read_text(encoding="utf-8")
    assert "<dt>Orders in the warehouse</dt><dd>36,969 <small>orders 2024-01-05 to 2024-03-28</small></dd>" in page
