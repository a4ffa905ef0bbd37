"""Empty and orphaned facts, plausibility bounds, thousands separators and control characters.

Each probe builds a tiny dataset of its own (a dataset file and CSV or Parquet exports in ``tmp_path``)
with the real ``build_clean_warehouse``, and checks for every source: rows in = clean + quarantined.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from crm_analytics import datasets
from crm_analytics.cleansing import build_clean_warehouse, validate
from crm_analytics.cleansing.bulk import EmptySourceError

AS_OF = "2024-12-31"
CUSTOMERS = "id,nome,email,desde\nC1,Ana,ana@example.com,2023-01-05\nC2,Rui,rui@example.com,2023-06-30\n"
ORDERS = ["P1,C1,2024-02-13,10", "P2,C2,2024-02-15,20", "P3,C1,2024-02-28,30"]
LINES = ["P1,1,SKU1,1,10", "P2,1,SKU2,2,10", "P3,1,SKU1,3,10"]


def write_dataset(folder: Path, *, orders: list[str] = ORDERS, lines: list[str] | None = LINES, customers: str = CUSTOMERS,
                  orders_spec: dict | None = None, **keys) -> Path:
    """A dataset file with exports of customers, orders and (unless ``lines`` is None) order lines."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clientes.csv").write_text(customers, encoding="utf-8")
    (folder / "pedidos.csv").write_text("\n".join(["pedido,cliente,data,valor", *orders]) + "\n", encoding="utf-8")
    sources = {
        "clientes": {"table": "customers", "path": "clientes.csv", "format": "csv",
                     "columns": {"customer_id": "id", "full_name": "nome", "email": "email", "signup_time": "desde"},
                     "constants": {"source": "loja", "acquisition_channel": "store"}},
        "pedidos": {"table": "orders", "path": "pedidos.csv", "format": "csv",
                    "columns": {"order_id": "pedido", "customer_id": "cliente", "order_time": "data", "order_amount": "valor"},
                    "constants": {"channel": "store", "source": "loja"}} | (orders_spec or {}),
    }
    if lines is not None:
        (folder / "itens.csv").write_text("\n".join(["pedido,linha,produto,qtd,preco", *lines]) + "\n", encoding="utf-8")
        sources["itens"] = {"table": "order_items", "path": "itens.csv", "format": "csv",
                            "columns": {"order_id": "pedido", "line_number": "linha", "product_id": "produto", "quantity": "qtd",
                                        "unit_price_amount": "preco"}}
    document = {"data_dir": str(folder), "time_zone": "America/Sao_Paulo", "currency": "BRL", "country": "BR", "sources": sources} | keys
    path = folder / "loja.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def build(dataset: Path, tmp_path: Path, *, workers: int = 1):
    """A real build (any share may be quarantined); every source balances: rows in = clean + quarantined."""
    result = build_clean_warehouse(dataset=dataset, as_of=AS_OF, warehouse_path=tmp_path / "loja.duckdb", quarantine_threshold=1.0,
                                   workers=workers)
    assert result.row_counts["is_balanced"].all(), result.row_counts
    return result


def quarantined(result, source: str) -> dict[str, str]:
    """``{raw_value: reason}`` of the ``row`` entries of one source."""
    rows = result.quarantine[(result.quarantine["source"] == source) & (result.quarantine["action"] == "row")]
    return dict(zip(rows["raw_value"], rows["reason"]))


def table(result, name: str) -> pd.DataFrame:
    with duckdb.connect(str(result.warehouse_path), read_only=True) as con:
        return con.execute(f"SELECT * FROM {name}").df()


# ------------------------------------------------------------------------------ empty and orphaned facts


def test_a_header_only_fact_export_is_an_error_naming_the_source_and_the_file(tmp_path):
    dataset = write_dataset(tmp_path / "loja", orders=[])
    target = tmp_path / "loja.duckdb"
    with pytest.raises(EmptySourceError) as error:
        build_clean_warehouse(dataset=dataset, as_of=AS_OF, warehouse_path=target)
    message = str(error.value)
    assert "pedidos.csv" in message and "source 'pedidos'" in message and "may_be_empty: true" in message
    assert not target.exists()


def test_a_fact_source_declared_may_be_empty_builds_with_no_rows(tmp_path):
    dataset = write_dataset(tmp_path / "loja", orders=[], lines=None, orders_spec={"may_be_empty": True})
    result = build(dataset, tmp_path)
    counts = result.row_counts.set_index("source")
    assert counts.loc["pedidos", "rows_in"] == 0 and result.table_rows["orders"] == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_order_lines_of_unknown_orders_are_quarantined(tmp_path, workers):
    # with workers, the order lines are staged once the orders are, beside the other sources
    dataset = write_dataset(tmp_path / "loja", lines=[*LINES, "P9,1,SKU3,1,5", "P2,2,SKU3,1,5"])
    result = build(dataset, tmp_path, workers=workers)
    assert quarantined(result, "itens") == {"P9": validate.UNKNOWN_ORDER}
    counts = result.row_counts.set_index("source").loc["itens"]
    assert (counts["rows_in"], counts["rows_clean"], counts["rows_quarantined"]) == (5, 4, 1)
    lines = table(result, "order_items")
    assert set(lines["order_id"]) == {"P1", "P2", "P3"} and len(lines) == 4


def test_order_lines_are_checked_against_every_orders_source_read_as_parquet_too(tmp_path):
    folder = tmp_path / "loja"
    dataset = write_dataset(folder, lines=None)
    pd.DataFrame({"pedido": ["P1", "P7"], "linha": [1, 1], "produto": ["SKU1", "SKU2"], "qtd": [1, 1],
                  "preco": [10.0, 1e308]}).to_parquet(folder / "itens.parquet", index=False)
    document = yaml.safe_load(dataset.read_text(encoding="utf-8"))
    document["sources"]["itens"] = {"table": "order_items", "path": "itens.parquet", "format": "parquet",
                                    "columns": {"order_id": "pedido", "line_number": "linha", "product_id": "produto",
                                                "quantity": "qtd", "unit_price_amount": "preco"}}
    dataset.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = build(dataset, tmp_path)
    entries = result.quarantine[result.quarantine["source"] == "itens"]
    assert set(zip(entries["column_name"], entries["reason"])) == {("order_id", validate.UNKNOWN_ORDER),
                                                                    ("unit_price_amount", validate.OUT_OF_RANGE)}
    assert table(result, "order_items")["order_id"].tolist() == ["P1"]


# ------------------------------------------------------------------------------------- plausibility


def test_implausible_amounts_and_bad_groupings_are_quarantined(tmp_path):
    orders = ['P1,C1,2024-02-13,1e308', 'P2,C1,2024-02-13,-1e308', 'P3,C1,2024-02-13,9999999999999',
              'P4,C1,2024-02-13,"1,2,3"', 'P5,C1,2024-02-13,"1,234"', 'P6,C1,2024-02-13,"1,234,567.5"', 'P7,C1,1900-01-01,5']
    result = build(write_dataset(tmp_path / "loja", orders=orders, lines=None), tmp_path)
    assert quarantined(result, "pedidos") == {"1e308": "out_of_range", "-1e308": "out_of_range", "9999999999999": "out_of_range",
                                              "1,2,3": "not_a_number", "1900-01-01": "out_of_range"}
    clean = table(result, "orders").set_index("order_id")["order_amount"].to_dict()
    assert clean == {"P5": 1234.0, "P6": 1234567.5}


def test_a_dataset_overrides_the_bounds(tmp_path):
    orders = ["P1,C1,1965-02-13,150", "P2,C1,1965-02-14,50", "P3,C1,1899-12-31,50"]
    dataset = write_dataset(tmp_path / "loja", orders=orders, lines=None,
                            bounds={"order_amount": [0, 100], "earliest_date": "1900-01-01"})
    result = build(dataset, tmp_path)
    assert quarantined(result, "pedidos") == {"150": "out_of_range", "1899-12-31": "out_of_range"}
    assert table(result, "orders")["order_id"].tolist() == ["P2"]


def test_bounds_defaults_are_justified_and_mistakes_are_named():
    bounds = validate.plausibility_bounds()
    assert bounds.earliest == pd.Timestamp(validate.DEFAULT_EARLIEST_DATE)
    from crm_analytics import schema

    assert bounds.range_of(schema.ORDERS.column("order_amount")) == (-validate.AMOUNT_LIMIT, validate.AMOUNT_LIMIT)
    assert bounds.earliest_of(schema.CUSTOMERS.column("birth_date")) == pd.Timestamp("1900-01-01")
    with pytest.raises(datasets.DatasetError, match=r"loja\.yaml: bounds\.order_amout .*order_amount"):
        datasets.check_bounds({"order_amout": [0, 1]}, where="loja.yaml")
    with pytest.raises(datasets.DatasetError, match=r"bounds\.quantity has min 5\.0 above max 1\.0"):
        datasets.check_bounds({"quantity": [5, 1]}, where="loja.yaml")
    with pytest.raises(datasets.DatasetError, match=r"bounds\.earliest_date must be a date"):
        datasets.check_bounds({"earliest_date": "soon"}, where="loja.yaml")


def test_control_characters_are_removed_from_text_and_counted(tmp_path):
    customers = "id,nome,email,desde\nC1,A\x00na\x1b,ana@example.com,2023-01-05\nC2,Rui,rui@example.com,2023-06-30\n"
    result = build(write_dataset(tmp_path / "loja", customers=customers, lines=None), tmp_path)
    names = set(table(result, "customers")["full_name"])
    assert names == {"Ana", "Rui"}
    profile = result.profile.set_index(["source", "column_name", "stage"])
    assert profile.loc[("clientes", "full_name", "before"), "validity_pct"] == pytest.approx(50.0)  # one of two values repaired
    assert result.quarantine.empty
