"""The canonical data model: contracts are consistent and map cleanly to DuckDB."""

import duckdb
import pytest

from crm_analytics import schema

EXPECTED_TABLES = {
    "customers", "orders", "order_items", "products", "web_events", "opportunities",
    "opportunity_stage_history", "touchpoints", "campaigns", "surveys", "support_tickets",
    "experiment_assignments",
}


def test_every_entity_of_the_crm_has_a_contract():
    assert set(schema.TABLES) == EXPECTED_TABLES


@pytest.mark.parametrize("table", list(schema.TABLES.values()), ids=list(schema.TABLES))
def test_contract_is_well_formed(table):
    names = table.column_names
    assert len(names) == len(set(names)), "column names are unique"
    assert set(table.key_columns) <= set(table.required_columns)
    for column in table.columns:
        assert column.description, f"{table.name}.{column.name} is documented"
        if column.name.endswith("_id"):
            assert column.dtype == "string", "identifiers are strings (leading zeros survive)"
        if column.name.endswith("_time"):
            assert column.dtype == "timestamp"
        if column.name.endswith("_amount"):
            assert column.dtype == "float64"
        if column.name.startswith("is_"):
            assert column.dtype == "bool"


@pytest.mark.parametrize("table", list(schema.TABLES.values()), ids=list(schema.TABLES))
def test_contract_creates_a_duckdb_table_with_the_declared_types(table):
    con = duckdb.connect()
    con.execute(schema.create_table_sql(table))
    described = con.execute(f'DESCRIBE "{table.name}"').fetchall()
    assert [(row[0], row[1]) for row in described] == [(c.name, c.duckdb_type) for c in table.columns]


def test_personal_data_registry_names_real_columns():
    for table_name, columns in schema.PERSONAL_DATA_COLUMNS.items():
        assert set(columns) <= set(schema.get_table(table_name).column_names)


def test_unknown_table_and_column_errors_list_what_exists():
    with pytest.raises(KeyError, match="customers"):
        schema.get_table("clients")
    with pytest.raises(KeyError, match="order_amount"):
        schema.ORDERS.column("amount")


def test_unknown_type_is_refused():
    with pytest.raises(ValueError, match="unknown type"):
        schema.Column("x", "money", "a column")


def test_markdown_documentation_lists_every_column():
    text = schema.markdown_table(schema.ORDERS)
    for name in schema.ORDERS.column_names:
        assert f"`{name}`" in text


def test_data_model_documentation_is_current():
    from pathlib import Path

    documented = (Path(__file__).parent.parent / "docs" / "data_model.md").read_text(encoding="utf-8")
    assert documented == schema.data_model_markdown(), "regenerate with: python -m crm_analytics.schema > docs/data_model.md"
