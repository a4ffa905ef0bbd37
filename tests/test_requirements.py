"""Tests of crm_analytics.requirements: what each analysis needs, checked against row counts."""

from __future__ import annotations

import json
import re

import duckdb
import ibis
import pytest

from crm_analytics import kpi, paths, requirements, schema

ALL_ROWS = {name: 10 for name in schema.TABLES}
INVOICE_LINES = {"customers": 5, "orders": 20, "order_items": 60, "products": 8}
_TABLE_READ = re.compile(r"""\.table\(\s*["']([a-z_]+)["']""")


def _notebook_code(analysis: str) -> str:
    notebook = json.loads((paths.notebooks_dir() / f"{analysis}.ipynb").read_text(encoding="utf-8"))
    return "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")


def test_every_notebook_is_declared_and_nothing_else():
    notebooks = {p.stem for p in paths.notebooks_dir().glob("*.ipynb")}
    assert notebooks == set(requirements.REQUIREMENTS)


def test_declared_tables_and_columns_are_canonical():
    for declared in requirements.REQUIREMENTS.values():
        for table, columns in declared.required.items():
            assert set(columns) <= set(schema.get_table(table).column_names), (declared.analysis, table)
        assert set(declared.optional) <= set(schema.TABLES), declared.analysis
        assert not set(declared.optional) & set(declared.required), declared.analysis


@pytest.mark.parametrize("analysis", sorted(requirements.REQUIREMENTS))
def test_a_notebook_reads_only_the_tables_it_declares(analysis):
    declared = requirements.requirement(analysis)
    read = set(_TABLE_READ.findall(_notebook_code(analysis)))
    assert read <= set(declared.required) | set(declared.optional), read - set(declared.required) - set(declared.optional)


def test_kpi_declares_every_table_of_its_catalogue():
    declared = requirements.requirement("kpi")
    catalogue_tables = set(kpi.required_tables(kpi.load_catalogue()))
    assert set(declared.required) | set(declared.optional) == catalogue_tables | {"customers"}


def test_everything_present_makes_every_analysis_applicable_with_nothing_missing():
    for analysis in requirements.REQUIREMENTS:
        result = requirements.check(analysis, ALL_ROWS)
        assert result == requirements.Applicability(True, "", []), analysis


def test_funnel_without_web_events_is_not_applicable_and_says_why():
    result = requirements.check("funnel", INVOICE_LINES)
    assert not result.applicable
    assert result.reason == "needs web_events"


def test_an_empty_table_counts_as_missing_and_the_reason_says_empty():
    result = requirements.check("funnel", {**INVOICE_LINES, "web_events": 0})
    assert not result.applicable
    assert result.reason == "needs web_events (empty)"


def test_pipeline_needs_opportunities_and_runs_without_stage_history():
    result = requirements.check("pipeline", {"opportunities": 3})
    assert result.applicable and "opportunity_stage_history" in result.missing_optional
    assert requirements.check("pipeline", {"opportunity_stage_history": 5}).reason == "needs opportunities"


def test_churn_on_invoice_lines_runs_without_its_optional_features():
    result = requirements.check("churn", INVOICE_LINES)
    assert result.applicable and result.reason == ""
    assert result.missing_optional == ["surveys", "support_tickets", "web_events"]


def test_invoice_lines_support_the_order_analyses_only():
    applicable = {a for a in requirements.REQUIREMENTS if requirements.check(a, INVOICE_LINES).applicable}
    assert applicable == {
        "cleansing", "overview", "segmentation", "lifecycle", "behaviour", "cohort", "clv", "churn",
        "forecast", "kpi", "recommendation", "dashboard",
    }


def test_the_dashboard_needs_nothing_and_the_build_needs_customers():
    assert requirements.check("dashboard", {}).applicable
    assert requirements.check("cleansing", {}).reason == "needs customers"
    assert requirements.check("cleansing", {"customers": 1}).applicable


def test_orders_only_support_the_order_level_analyses():
    applicable = {a for a in requirements.REQUIREMENTS if requirements.check(a, {"orders": 4, "customers": 2}).applicable}
    assert applicable == {"cleansing", "overview", "segmentation", "lifecycle", "cohort", "clv", "churn", "forecast", "kpi", "dashboard"}
    assert requirements.check("segmentation", {"orders": 4, "customers": 2}).missing_optional == ["order_items", "products", "support_tickets"]


def test_missing_columns_names_table_and_columns():
    gaps = requirements.missing_columns("funnel", {"web_events": ["customer_id", "event_time"]})
    assert gaps == {"web_events": ["session_id", "event_name"]}
    assert requirements.missing_columns("funnel", {}) == {}


def test_unknown_analysis_suggests_a_close_name():
    with pytest.raises(KeyError, match="did you mean churn"):
        requirements.check("chrun", ALL_ROWS)


def test_check_does_not_mutate_its_input():
    rows = dict(INVOICE_LINES)
    requirements.check("kpi", rows)
    assert rows == INVOICE_LINES


def test_available_tables_reads_a_real_warehouse(tmp_path):
    location = tmp_path / "w.duckdb"
    with duckdb.connect(str(location)) as con:
        con.execute(schema.create_table_sql(schema.get_table("orders")))
        con.execute(schema.create_table_sql(schema.get_table("web_events")))  # empty
        con.execute("CREATE TABLE quarantine (x INTEGER)")
        con.execute("INSERT INTO quarantine VALUES (1)")
        con.execute("INSERT INTO orders (order_id, customer_id, order_time, order_amount) VALUES ('o1', 'c1', TIMESTAMP '2024-01-01', 10)")
    con = ibis.duckdb.connect(database=str(location), read_only=True)
    assert requirements.available_tables(con) == {"orders"}


def test_skipped_note_is_one_line():
    assert requirements.skipped_note("support_tickets") == "skipped: needs support_tickets"
    assert requirements.skipped_note("surveys", what="satisfaction features") == "skipped: needs surveys for satisfaction features"


def test_skipped_notes_name_each_missing_optional_table_and_what_it_enables():
    notes = requirements.skipped_notes("churn", {"orders", "surveys"})
    assert notes == [
        "skipped: needs support_tickets for service features (tickets, escalations, refund tickets)",
        "skipped: needs web_events for engagement features (sessions, days since the last visit)",
    ]
    assert requirements.skipped_notes("churn", schema.TABLES) == []


def test_optional_tables_hand_out_present_tables_and_none_for_the_rest(tmp_path):
    location = tmp_path / "w.duckdb"
    with duckdb.connect(str(location)) as con:
        con.execute(schema.create_table_sql(schema.get_table("surveys")))
        con.execute("INSERT INTO surveys (survey_id, customer_id, survey_time, nps_score) VALUES ('s1', 'c1', TIMESTAMP '2024-01-01', 9)")
    con = ibis.duckdb.connect(database=str(location), read_only=True)
    tables = requirements.optional_tables(con, ["surveys", "web_events"])
    assert tables["web_events"] is None
    assert tables["surveys"].count().to_pyarrow().as_py() == 1
