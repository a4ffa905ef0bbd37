"""Tests of crm_analytics.readiness and `crm-analytics check-dataset`: the demo, an orders-only dataset, gaps."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from crm_analytics import readiness, requirements, schema
from crm_analytics.cli import app

cli = CliRunner()


def _check(*args: str):
    return cli.invoke(app, ["check-dataset", *args])


def _orders_only(tmp_path: Path, *, inputs: str = "", extra_sources: str = "") -> Path:
    """A dataset of one CSV of orders (no customers, no products) with a mapped, always empty discount column.

    ``inputs`` and ``extra_sources`` are YAML lines added to the ``inputs:`` and ``sources:`` blocks.
    """
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.csv").write_text(
        "order_no,buyer,paid_at,total,discount\n"
        "o1,c1,2023-01-05 10:00:00,10.00,\n"
        "o2,c2,2023-02-11 12:30:00,20.50,\n"
        "o3,c1,2023-03-31 23:59:00,5.25,\n",
        encoding="utf-8",
    )
    path = tmp_path / "orders_only.yaml"
    path.write_text(
        f"data_dir: {data}\ntime_zone: Europe/London\ncurrency: GBP\ncountry: GB\n"
        + (f"inputs:\n{inputs}" if inputs else "")
        + "sources:\n"
        "  orders:\n    table: orders\n    path: orders.csv\n    format: csv\n    date_formats: [iso8601]\n"
        "    columns: {order_id: order_no, customer_id: buyer, order_time: paid_at, order_amount: total, discount_amount: discount}\n"
        "    constants: {channel: web, source: shop}\n" + extra_sources,
        encoding="utf-8",
    )
    return path


def test_orders_only_dataset_supports_the_order_analyses_only(tmp_path):
    customers = (
        "  customers:\n    table: customers\n    date_formats: [iso8601]\n"
        "    query: SELECT buyer AS customer_id, min(paid_at) AS signup_time, arg_min(_source_file, _source_row) AS _source_file,"
        " min(_source_row) AS _source_row FROM raw_orders GROUP BY buyer\n"
        "    constants: {source: shop}\n"
    )
    result = _check(str(_orders_only(tmp_path, inputs="  raw_orders: {path: orders.csv, format: csv}\n", extra_sources=customers)))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "read from the sources of" in lines[0] and "(Europe/London, GBP, GB)" in lines[0]
    orders = next(line for line in lines if line.split()[:1] == ["orders"])
    assert orders.split()[1:5] == ["3", "2023-01-05", "2023-03-31", "order_time"]
    customers = next(line for line in lines if line.split()[:1] == ["customers"])
    assert customers.split()[1:] == ["2", "2023-01-05", "2023-02-11", "signup_time"]
    assert "Mapped columns that came out empty: orders.discount_amount" in result.stdout
    assert "Unmapped required columns: none" in result.stdout
    verdicts = {line.split()[1].rstrip(":"): line.split()[0] for line in lines if line.startswith(("  yes ", "  no  "))}
    order_level = {"cleansing", "overview", "segmentation", "lifecycle", "cohort", "clv", "churn", "forecast", "kpi", "dashboard"}
    assert {name for name, verdict in verdicts.items() if verdict == "yes"} == order_level
    assert "  no    funnel: needs web_events" in lines
    assert "        skipped without web_events: engagement features (sessions, days since the last visit)" in lines


def test_without_a_customers_source_nothing_can_run(tmp_path):
    report = readiness.check_dataset(_orders_only(tmp_path))
    assert report.analyses["cleansing"].reason == "needs customers"
    assert not any(v.applicable for v in report.analyses.values())
    assert report.analyses["forecast"].reason == "the build needs customers"


def test_a_query_lacking_a_required_column_is_reported_and_not_ready(tmp_path):
    customers = (
        "  customers:\n    table: customers\n"
        "    query: SELECT buyer AS customer_id, _source_file, min(_source_row) AS _source_row FROM raw_orders GROUP BY buyer, _source_file\n"
        "    constants: {source: shop}\n"
    )
    path = _orders_only(tmp_path, inputs="  raw_orders: {path: orders.csv, format: csv}\n", extra_sources=customers)
    report = readiness.check_dataset(path)
    assert report.tables["customers"].unmapped_required == ("signup_time",)
    assert not report.ready
    result = _check(str(path))
    assert result.exit_code == 1 and "Unmapped required columns: customers.signup_time" in result.stdout


def test_unknown_or_unfinished_dataset_is_a_one_line_usage_error(tmp_path):
    unknown = _check("dem")
    assert unknown.exit_code == 2 and "did you mean 'demo'" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    todo = tmp_path / "half.yaml"
    todo.write_text("time_zone: TODO\ncurrency: GBP\ncountry: GB\nsources: {}\n")
    unfinished = _check(str(todo))
    assert unfinished.exit_code == 2 and "TODO" in unfinished.stderr and len(unfinished.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_warehouse_holds_every_table_and_supports_every_analysis(demo_home):
    result = _check("demo")
    assert result.exit_code == 0, result.output
    assert "read from the warehouse" in result.stdout and "demo.duckdb" in result.stdout
    for table in schema.TABLES:
        row = next(line for line in result.stdout.splitlines() if line.split()[:1] == [table])
        assert row.split()[1] != "-", f"{table} holds no rows: {row}"
    assert f"{len(requirements.REQUIREMENTS)} of {len(requirements.REQUIREMENTS)} analyses are supported" in result.stdout
    report = readiness.check_dataset("demo")
    assert report.tables["orders"].first < report.tables["orders"].last
    assert all(not verdict.missing_optional for verdict in report.analyses.values())


def test_the_dataset_files_viewer_groups_are_checked_as_serve_will(tmp_path):
    path = _orders_only(tmp_path)
    groups = "access:\n  groups:\n    south:\n      viewers: [alice@example.org]\n      rows: {province: [Guangdong]}\n    all:\n      viewers: [ceo@example.org]\n      rows: all\n"
    path.write_text(path.read_text(encoding="utf-8") + groups, encoding="utf-8")
    report = readiness.check_dataset(path)
    assert report.ready and report.viewer_groups == "2 viewer group(s) in the dataset file's access block, 1 of them restricted to some rows"
    assert "Viewer groups: 2 viewer group(s)" in readiness.format_report(report)
    path.write_text(path.read_text(encoding="utf-8").replace("rows: {province: [Guangdong]}", "rows: {province: Guangdong, city: [Leeds]}"), encoding="utf-8")
    report = readiness.check_dataset(path)
    assert not report.ready and str(path) in report.viewer_groups_problem and "access.groups.south.rows" in report.viewer_groups_problem
    result = _check(str(path))
    assert result.exit_code == 1 and "Viewer groups cannot be used:" in result.stdout


def test_a_dataset_without_its_own_viewer_groups_says_nothing_of_them(tmp_path):
    report = readiness.check_dataset(_orders_only(tmp_path))
    assert report.viewer_groups is None and report.viewer_groups_problem is None
    assert "Viewer groups" not in readiness.format_report(report)
