"""Sources derived by a DuckDB query over a dataset's named inputs: reading, lineage, and the errors that name file, source and key."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from crm_analytics import sources

# Invoice lines in two yearly sheets; the second sheet repeats the first sheet's last invoice (I2).
YEAR_1 = pd.DataFrame({
    "Invoice": ["I1", "I1", "I2"], "StockCode": ["A", "B", "A"], "Quantity": [2, 1, 3], "Price": [1.5, 4.0, 1.5],
    "InvoiceDate": pd.to_datetime(["2010-01-04 09:00", "2010-01-04 09:00", "2010-12-01 10:00"]), "Customer ID": [101.0, 101.0, 102.0],
})
YEAR_2 = pd.DataFrame({
    "Invoice": ["I2", "I3", "C4"], "StockCode": ["A", "B", "B"], "Quantity": [3, 5, -1], "Price": [1.5, 4.0, 4.0],
    "InvoiceDate": pd.to_datetime(["2010-12-01 10:00", "2011-02-01 16:30", "2011-02-02 08:00"]), "Customer ID": [102.0, 101.0, 101.0],
})
LINES_QUERY = """
    SELECT * FROM sheet_lines
    QUALIFY row_number() OVER (PARTITION BY Invoice, StockCode, Quantity, Price, InvoiceDate, "Customer ID" ORDER BY _source_sheet) = 1
"""
ORDERS_QUERY = """
    SELECT Invoice AS order_id, any_value("Customer ID") AS customer_id, min(InvoiceDate) AS order_time,
           sum(CAST(Quantity AS INTEGER) * CAST(Price AS DOUBLE)) AS order_amount,
           arg_min(_source_file, (_source_file, _source_row)) AS _source_file,
           arg_min(_source_row, (_source_file, _source_row)) AS _source_row
    FROM lines GROUP BY Invoice ORDER BY Invoice
"""


@pytest.fixture()
def folder(tmp_path) -> Path:
    with pd.ExcelWriter(tmp_path / "sales.xlsx") as writer:
        YEAR_1.to_excel(writer, sheet_name="Year 1", index=False)
        YEAR_2.to_excel(writer, sheet_name="Year 2", index=False)
    (tmp_path / "returns.csv").write_text("invoice;reason\nC4;damaged\n", encoding="utf-8")
    return tmp_path


def dataset_file(folder: Path, sources_block: dict, *, inputs: dict | None = None) -> Path:
    """Write a dataset file with the workbook's sheets as one input and ``lines`` as its de-duplicated view."""
    declared = {"sheet_lines": {"path": "sales.xlsx", "format": "excel", "sheet": "all"},
                "lines": {"format": "query", "query": LINES_QUERY},
                "returns": {"path": "returns.csv", "format": "csv"}}
    document = {"time_zone": "Europe/London", "currency": "GBP", "country": "GB", "inputs": declared if inputs is None else inputs,
                "sources": sources_block}
    path = folder / "shop.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def orders_source(**changes) -> dict:
    return {"orders": {"table": "orders", "query": ORDERS_QUERY, "constants": {"channel": "web", "source": "shop"}} | changes}


def test_query_over_all_sheets_derives_orders_with_the_first_lines_lineage(folder):
    source_map = sources.load_source_map(dataset_file(folder, orders_source()))
    spec = source_map["orders"]
    assert spec["format"] == "query" and set(spec["inputs"]) == {"sheet_lines", "lines", "returns"}
    orders = sources.read_source("orders", spec, folder)
    assert orders["order_id"].tolist() == ["C4", "I1", "I2", "I3"], "the invoice repeated in the second sheet is one order"
    assert orders.set_index("order_id")["order_amount"].to_dict() == {"C4": -4.0, "I1": 7.0, "I2": 4.5, "I3": 20.0}
    assert orders["customer_id"].tolist() == ["101", "101", "102", "101"], "Excel ids read as the text a person sees"
    assert orders["channel"].eq("web").all() and orders["source"].eq("shop").all()
    lineage = orders.set_index("order_id")[["_source_file", "_source_row"]]
    assert lineage.loc["I2", "_source_file"].endswith("sales.xlsx#Year 1") and lineage.loc["I2", "_source_row"] == 3
    assert lineage.loc["C4", "_source_file"].endswith("sales.xlsx#Year 2") and lineage.loc["C4", "_source_row"] == 3
    assert orders["_source"].eq("orders").all()
    assert orders.attrs["inputs"] == ["sheet_lines", "lines"], "only the inputs the query reads are read"


def test_a_csv_input_joins_an_excel_input(folder):
    query = ("SELECT o.order_id, o.customer_id, o.order_time, o.order_amount, o._source_file, o._source_row FROM "
             "(" + ORDERS_QUERY + ") o JOIN returns r ON r.invoice = o.order_id")
    orders = sources.read_source("orders", sources.load_source_map(dataset_file(folder, orders_source(query=query)))["orders"], folder)
    assert orders["order_id"].tolist() == ["C4"], "the semicolon-separated input is sniffed and joined"


def test_inputs_block_may_come_beside_a_separate_source_map(folder):
    separate = folder / "sources_only.yaml"
    separate.write_text(yaml.safe_dump({"sources": orders_source()}), encoding="utf-8")
    inputs = {"sheet_lines": {"path": "sales.xlsx", "format": "excel", "sheet": ["Year 1", "Year 2"]},
              "lines": {"format": "query", "query": LINES_QUERY}}
    spec = sources.load_source_map(separate, inputs=inputs)["orders"]
    assert len(sources.read_source("orders", spec, folder)) == 4


def test_old_source_maps_without_inputs_still_load():
    source_map = sources.load_source_map()
    assert all(spec["format"] in sources.FORMATS for spec in source_map.values())
    assert "inputs" not in source_map["web_orders"]


def test_failing_query_gives_duckdbs_message_with_file_source_and_key(folder):
    path = dataset_file(folder, orders_source(query="SELECT Invoice AS order_id, nonsense_column FROM lines"))
    with pytest.raises(sources.SourceError) as error:
        sources.read_source("orders", sources.load_source_map(path)["orders"], folder)
    message = str(error.value)
    assert str(path) in message and "source 'orders'" in message and "key `query` failed" in message
    assert "nonsense_column" in message, "DuckDB's own message is kept"


def test_unknown_input_name_is_named_with_close_matches(folder):
    path = dataset_file(folder, orders_source(query=ORDERS_QUERY.replace("FROM lines", "FROM line")))
    with pytest.raises(sources.SourceError, match=r"shop\.yaml: source 'orders': key `query`: 'line' is not a declared input \(did you mean 'lines'"):
        sources.read_source("orders", sources.load_source_map(path)["orders"], folder)
    listed = dataset_file(folder, orders_source(inputs=["lines", "sheet_line"]))
    with pytest.raises(sources.SourceError, match=r"unknown input\(s\) \['sheet_line'\] \(did you mean 'sheet_lines'"):
        sources.load_source_map(listed)


def test_result_lacking_a_required_column_lists_what_it_has(folder):
    query = ORDERS_QUERY.replace("min(InvoiceDate) AS order_time,", "")
    with pytest.raises(sources.SourceError) as error:
        sources.read_source("orders", sources.load_source_map(dataset_file(folder, orders_source(query=query)))["orders"], folder)
    message = str(error.value)
    assert "lacks required column(s) ['order_time']" in message and "'order_amount'" in message and "shop.yaml" in message


def test_result_without_lineage_explains_how_to_keep_it(folder):
    query = "SELECT Invoice AS order_id, 'x' AS customer_id, min(InvoiceDate) AS order_time, 1.0 AS order_amount FROM lines GROUP BY 1"
    with pytest.raises(sources.SourceError, match=r"lacks the lineage column\(s\) \['_source_file', '_source_row'\].*arg_min"):
        sources.read_source("orders", sources.load_source_map(dataset_file(folder, orders_source(query=query)))["orders"], folder)


def test_mapped_and_misspelt_columns_are_named_with_close_matches(folder):
    renamed = ORDERS_QUERY.replace("AS order_amount", "AS amount")
    spec = sources.load_source_map(dataset_file(folder, orders_source(query=renamed, columns={"order_amount": "amout"})))["orders"]
    with pytest.raises(sources.SourceError, match=r"key `columns`: the query's result has no column 'amout' \(for 'order_amount'\) \(did you mean 'amount'"):
        sources.read_source("orders", spec, folder)
    spec = sources.load_source_map(dataset_file(folder, orders_source(query=renamed, columns={"order_amount": "amount"})))["orders"]
    assert sources.read_source("orders", spec, folder)["order_amount"].sum() == pytest.approx(27.5)
    misspelt = ORDERS_QUERY.replace("AS order_amount", "AS order_amout")
    with pytest.raises(sources.SourceError, match=r"\['order_amout'\] \(did you mean 'order_amount'"):
        sources.read_source("orders", sources.load_source_map(dataset_file(folder, orders_source(query=misspelt)))["orders"], folder)


def test_mapped_file_column_missing_gives_close_matches(tmp_path):
    (tmp_path / "orders.csv").write_text("order_no,account,ordered_at,amount\nO1,W1,2024-01-01,3\n", encoding="utf-8")
    spec = {"table": "orders", "path": "orders.csv", "format": "csv",
            "columns": {"order_id": "order_no", "customer_id": "account_id", "order_time": "ordered_at", "order_amount": "amount"},
            "constants": {"channel": "web", "source": "web"}}
    with pytest.raises(sources.SourceError, match=r"orders\.csv: missing mapped column 'account_id' \(for 'customer_id'\) \(did you mean 'account'.*in source 'web_orders'"):
        sources.read_source("web_orders", spec, tmp_path)


def test_input_declarations_are_checked(folder):
    with pytest.raises(sources.SourceError, match=r"input 'sheet_lines': unknown key\(s\) \['sheets'\] \(did you mean 'sheet'"):
        sources.load_source_map(dataset_file(folder, orders_source(), inputs={"sheet_lines": {"path": "sales.xlsx", "format": "excel", "sheets": "all"}}))
    with pytest.raises(sources.SourceError, match=r"input 'lines': format must be one of"):
        sources.load_source_map(dataset_file(folder, orders_source(), inputs={"lines": {"path": "x.json", "format": "json"}}))
    with pytest.raises(sources.SourceError, match=r"input 'sheet-lines': an input name must be a SQL identifier"):
        sources.load_source_map(dataset_file(folder, orders_source(), inputs={"sheet-lines": {"path": "sales.xlsx", "format": "excel"}}))


def test_a_missing_sheet_or_file_is_named(folder):
    path = dataset_file(folder, orders_source(), inputs={"sheet_lines": {"path": "sales.xlsx", "format": "excel", "sheet": ["Year 1", "Year 9"]},
                                                        "lines": {"format": "query", "query": LINES_QUERY}})
    with pytest.raises(sources.SourceError, match=r"sales\.xlsx.*Year 9"):
        sources.read_source("orders", sources.load_source_map(path)["orders"], folder)
    (folder / "sales.xlsx").unlink()
    with pytest.raises(sources.SourceError, match=r"sales\.xlsx: file not found"):
        sources.read_source("orders", sources.load_source_map(path)["orders"], folder)


def test_read_input_numbers_rows_within_each_sheet(folder):
    lines = sources.read_input("sheet_lines", {"path": "sales.xlsx", "format": "excel", "sheet": "all"}, folder)
    assert lines["_source_sheet"].tolist() == ["Year 1"] * 3 + ["Year 2"] * 3
    assert lines["_source_row"].tolist() == [1, 2, 3, 1, 2, 3]
    assert lines["_source_file"].str.endswith(("#Year 1", "#Year 2")).all()
    csv = sources.read_input("returns", {"path": "returns.csv", "format": "csv"}, folder)
    assert csv[["invoice", "reason", "_source_row"]].values.tolist() == [["C4", "damaged", 1]]
