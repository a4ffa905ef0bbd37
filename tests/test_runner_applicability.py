"""The runner records analyses the data cannot support as ``not_applicable``, without a kernel."""

from __future__ import annotations

import json

import duckdb
import pytest

from crm_analytics import report_index, runner, schema


@pytest.fixture
def invoice_lines_warehouse(tmp_path):
    """A real warehouse holding customers, orders, order_items and products only (web_events present but empty)."""
    location = tmp_path / "invoice_lines.duckdb"
    with duckdb.connect(str(location)) as con:
        for name in ("customers", "orders", "order_items", "products", "web_events"):
            con.execute(schema.create_table_sql(schema.get_table(name)))
        con.execute("INSERT INTO customers (customer_id) VALUES ('c1'), ('c2')")
        con.execute(
            "INSERT INTO orders (order_id, customer_id, order_time, order_amount) VALUES "
            "('o1', 'c1', TIMESTAMP '2024-03-01 10:00', 12.5), ('o2', 'c2', TIMESTAMP '2024-03-02 11:00', 8.0)"
        )
        con.execute("INSERT INTO products (product_id) VALUES ('p1')")
        con.execute("INSERT INTO order_items (order_id, product_id) VALUES ('o1', 'p1')")
    return location


def test_funnel_without_web_events_is_not_applicable_with_its_reason(tmp_path, invoice_lines_warehouse):
    outputs = tmp_path / "outputs"
    result = runner.run_analysis("funnel", parameters={"warehouse_path": str(invoice_lines_warehouse)}, output_root=outputs)

    assert result.status == runner.NOT_APPLICABLE
    assert result.ok
    assert result.reason == "needs web_events (empty)"
    assert sorted(p.name for p in result.run_dir.iterdir()) == [runner.RUN_RECORD]  # no notebook: no kernel ran
    record = json.loads((result.run_dir / runner.RUN_RECORD).read_text(encoding="utf-8"))
    assert record["status"] == "not_applicable" and record["reason"] == "needs web_events (empty)"
    assert record["ended_at"] is not None
    analysis_root = result.run_dir.parent  # outputs/<dataset>/funnel
    assert not list(analysis_root.glob(f"*{runner.TMP_SUFFIX}"))
    assert not (analysis_root / runner.LATEST).exists()  # latest points at good reports only
    index = (analysis_root.parent / report_index.INDEX_NAME).read_text(encoding="utf-8")
    assert 'class="status not_applicable"' in index and "needs web_events (empty)" in index
    assert report_index.summarise(analysis_root).newer_failure is None


def test_a_missing_table_gives_the_plain_reason(tmp_path, invoice_lines_warehouse):
    with duckdb.connect(str(invoice_lines_warehouse)) as con:
        con.execute("DROP TABLE web_events")
    result = runner.run_analysis(
        "funnel", parameters={"warehouse_path": str(invoice_lines_warehouse)}, output_root=tmp_path / "outputs", write_index=False
    )
    assert result.reason == "needs web_events"


def test_run_all_lists_every_inapplicable_analysis_and_none_failed(tmp_path, invoice_lines_warehouse):
    parameters = {name: {"warehouse_path": str(invoice_lines_warehouse)} for name in ("funnel", "pipeline", "experiments")}
    results = runner.run_all(
        analyses=list(parameters), parameters_by_analysis=parameters, output_root=tmp_path / "outputs", jobs=2
    )
    by_analysis = {r.analysis: r for r in results}
    assert {name: r.status for name, r in by_analysis.items()} == dict.fromkeys(parameters, runner.NOT_APPLICABLE)
    assert all(r.ok for r in results)
    assert by_analysis["pipeline"].reason == "needs opportunities"
    for result in results:
        record = json.loads((result.run_dir / runner.RUN_RECORD).read_text(encoding="utf-8"))
        assert record["status"] != "running"


def test_inapplicable_reason_leaves_cleansing_and_missing_warehouses_to_the_notebook(tmp_path, invoice_lines_warehouse):
    assert runner.inapplicable_reason("cleansing", invoice_lines_warehouse) is None
    assert runner.inapplicable_reason("funnel", tmp_path / "absent.duckdb") is None
    assert runner.inapplicable_reason("churn", invoice_lines_warehouse) is None
    assert runner.inapplicable_reason("satisfaction", invoice_lines_warehouse) == "needs surveys"
