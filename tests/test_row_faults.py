"""Row-level faults stay row-level: an undecodable byte or a ragged row quarantines that row, the rest loads.

Also: sheets of a workbook that no source reads are counted and reported, control characters are removed
from text and counted per column, and configuration typos (time zone, date format) name the file, the
source and the key. Every case checks rows in = clean + quarantined.
"""

from __future__ import annotations

import copy
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from crm_analytics import sources
from crm_analytics.cleansing import build_clean_warehouse, quality, validate
from crm_analytics.cleansing.pipeline import QuarantineThresholdError
from crm_analytics.cleansing.stream import stage_source, validate_csv_in_chunks

CORPUS = Path(__file__).parent / "data" / "bad_inputs"
AS_OF = pd.Timestamp("2025-01-01")
SOURCE_MAP = sources.load_source_map()


def spec_for(source: str, path: str, **changes) -> dict:
    return copy.deepcopy(SOURCE_MAP[source]) | {"path": path} | changes


def validated(source: str, path: str, folder: Path = CORPUS, **changes) -> tuple[pd.DataFrame, validate.ValidatedSource]:
    spec = spec_for(source, path, **changes)
    raw = sources.read_source(source, spec, folder)
    result = validate.validate_source(source, raw, spec, as_of=AS_OF)
    assert result.n_rows_in == len(raw) == len(result.clean) + result.n_rows_quarantined
    return raw, result


def faults(result) -> dict[int, tuple[str, str]]:
    """``{source_row: (reason, raw_value)}`` of the ``_raw_line`` entries."""
    entries = result.quarantine[result.quarantine["column_name"] == validate.RAW_LINE]
    return {int(r.source_row): (r.reason, r.raw_value) for r in entries.itertuples()}


# ------------------------------------------------------------------------------ undecodable bytes


@pytest.mark.parametrize("encoding", ["auto", "utf-8"])
def test_one_latin1_byte_quarantines_its_row_only(encoding):
    raw, result = validated("web_signups", "latin1_byte.csv", encoding=encoding)
    assert raw.attrs["encoding"] in ("utf-8-sig", "utf-8")  # the file stays UTF-8: its other names read right
    assert result.clean["customer_id"].tolist() == ["W001", "W003"]
    assert result.clean["full_name"].tolist() == ["张三", "Zoë Wang"]
    assert faults(result) == {2: (validate.UNDECODABLE_BYTES, "(undecodable as utf-8) W002,Jos\\xe9 Li,jose.li@163.com,13900139000,"
                                                              "male,1985-05-06,Zhejiang,Hangzhou,referral,2024-02-01T09:30:00Z")}
    assert len(result.quarantine) == 1 and result.quarantine["action"].tolist() == ["row"]


def test_a_stray_byte_does_not_flip_a_utf8_file_while_a_gb18030_file_stays_gb18030(tmp_path):
    utf8 = "id,name\n" + "".join(f"{i},Zoë {i}\n" for i in range(50))
    (tmp_path / "mostly_utf8.csv").write_bytes(utf8.encode() + b"50,Andr\xe9s\n")  # \xe9 s also reads as one GB18030 character
    assert sources.choose_encoding(tmp_path / "mostly_utf8.csv") == "utf-8-sig"
    (tmp_path / "gb.csv").write_bytes("id,name\n1,张三\n2,趙六\n".encode("gb18030"))
    assert sources.choose_encoding(tmp_path / "gb.csv") == "gb18030"
    (tmp_path / "ascii.csv").write_bytes(b"id,name\n1,Ana\n2,Caf\xe9,\n")  # no encoding of the cascade reads it all
    assert sources.choose_encoding(tmp_path / "ascii.csv") == "utf-8-sig"


def test_an_undecodable_header_is_a_file_error_naming_the_encoding(tmp_path):
    (tmp_path / "bad_header.csv").write_bytes(b"account_id,n\xe9me\nW1,Ana\n")
    with pytest.raises(sources.SourceError, match=r"bad_header\.csv: the first line is not utf-8 .*n\\\\xe9me.*`encoding`"):
        sources.read_source("web_signups", spec_for("web_signups", "bad_header.csv", encoding="utf-8"), tmp_path)


# ------------------------------------------------------------------------------ ragged rows


def test_ragged_rows_are_quarantined_with_their_field_counts():
    raw, result = validated("web_orders", "ragged_row.csv")
    assert result.clean["order_id"].tolist() == ["R1", "R4", "R5"]  # R4 only ends with a delimiter: not ragged
    assert result.clean.set_index("order_id")["order_amount"].to_dict() == {"R1": 10.0, "R4": 40.0, "R5": 2500.0}
    assert faults(result) == {
        2: (validate.RAGGED_ROW, '(9 fields, expected 8) R2,W001,2024-03-02T10:00:00Z,"1,000",CNY,0,web,false,surplus'),
        3: (validate.RAGGED_ROW, "(4 fields, expected 8) R3,W001,2024-03-03T10:00:00Z,30"),
    }
    assert raw.attrs["unknown_columns"] == []  # the fault columns are no columns of the file


def test_chunks_and_the_whole_file_agree_on_faulty_rows(tmp_path):
    spec = spec_for("web_orders", "ragged_row.csv")
    parts = list(validate_csv_in_chunks("web_orders", spec, CORPUS, as_of=AS_OF, chunk_rows=2))
    chunked = pd.concat([part.quarantine for part in parts], ignore_index=True)
    _, whole = validated("web_orders", "ragged_row.csv")
    pd.testing.assert_frame_equal(chunked, whole.quarantine)
    staged = stage_source("web_orders", spec, CORPUS, as_of=AS_OF, work_dir=tmp_path, chunk_rows=2)
    assert staged.n_rows_in == 5 == staged.n_rows_clean + staged.n_rows_quarantined
    assert pd.read_parquet(staged.clean_path)["order_id"].tolist() == ["R1", "R4", "R5"]


def test_a_header_less_file_counts_fields_against_its_names(tmp_path):
    (tmp_path / "no_header.csv").write_text("R1,W001,2024-03-01T10:00:00Z,10\nR2,W001\nR3,W001,2024-03-03T10:00:00Z,30\n", encoding="utf-8")
    spec = spec_for("web_orders", "no_header.csv", header=False, names=["no", "acc", "at", "amt"],
                    columns={"order_id": "no", "customer_id": "acc", "order_time": "at", "order_amount": "amt"},
                    constants={"source": "web", "channel": "web"})
    raw = sources.read_source("web_orders", spec, tmp_path)
    result = validate.validate_source("web_orders", raw, spec, as_of=AS_OF)
    assert result.clean["order_id"].tolist() == ["R1", "R3"]
    assert faults(result) == {2: (validate.RAGGED_ROW, "(2 fields, expected 4) R2,W001")}


def test_a_derived_source_quarantines_the_unreadable_lines_of_its_input(tmp_path):
    (tmp_path / "lines.csv").write_bytes(b"no,acc,quando,amt\nR1,W001,2024-03-01,10\nR2,W\xe9,2024-03-02,20\nR3,W001,2024-03-03,30,9\n")
    document = {"inputs": {"lines": {"path": "lines.csv", "format": "csv"}},
                "sources": {"orders": {"table": "orders", "constants": {"source": "web", "channel": "web"},
                                       "query": "SELECT no AS order_id, acc AS customer_id, quando AS order_time, amt AS order_amount, "
                                                "_source_file, _source_row FROM lines"}}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    spec = sources.load_source_map(tmp_path / "d.yaml")["orders"]
    raw = sources.read_source("orders", spec, tmp_path)
    result = validate.validate_source("orders", raw, spec, as_of=AS_OF)
    assert result.n_rows_in == 3 == len(result.clean) + result.n_rows_quarantined
    assert {k: v[0] for k, v in faults(result).items()} == {2: validate.UNDECODABLE_BYTES, 3: validate.RAGGED_ROW}
    assert set(result.quarantine["source_file"]) == {str(tmp_path / "lines.csv")}


# ------------------------------------------------------------------------------ a whole build


def write_dataset(folder: Path, customers: bytes, orders: bytes, *, orders_spec: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clientes.csv").write_bytes(customers)
    (folder / "pedidos.csv").write_bytes(orders)
    sources_block = {
        "clientes": {"table": "customers", "path": "clientes.csv", "format": "csv",
                     "columns": {"customer_id": "id", "full_name": "nome", "email": "email", "signup_time": "desde"},
                     "constants": {"source": "loja", "acquisition_channel": "store"}},
        "pedidos": {"table": "orders", "path": "pedidos.csv", "format": "csv",
                    "columns": {"order_id": "pedido", "customer_id": "cliente", "order_time": "data", "order_amount": "valor"},
                    "constants": {"channel": "store", "source": "loja"}} | (orders_spec or {}),
    }
    document = {"data_dir": str(folder), "time_zone": "Europe/Lisbon", "currency": "EUR", "country": "PT", "sources": sources_block}
    path = folder / "loja.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


CUSTOMERS = "id,nome,email,desde\nC1,João,joao@example.com,2023-01-05\nC2,A\x00na\x1b,ana@example.com,2023-06-30\n".encode()
ORDERS = b"pedido,cliente,data,valor\nP1,C1,2024-02-13,10\nP2,C2,2024-02-15,20,x\nP3,C1,2024-02-28,30\n"


def test_a_build_loads_the_rest_of_a_file_and_reports_each_faulty_row(tmp_path):
    customers = CUSTOMERS + b"C3,Jos\xe9,jose@example.com,2023-07-01\n"
    result = build_clean_warehouse(dataset=write_dataset(tmp_path / "loja", customers, ORDERS), as_of="2024-12-31",
                                   warehouse_path=tmp_path / "loja.duckdb", output_dir=tmp_path / "run", quarantine_threshold=1.0)
    assert result.row_counts["is_balanced"].all()
    counts = result.row_counts.set_index("source")
    assert counts.loc["clientes", ["rows_in", "rows_clean", "rows_quarantined"]].tolist() == [3, 2, 1]
    assert counts.loc["pedidos", ["rows_in", "rows_clean", "rows_quarantined"]].tolist() == [3, 2, 1]
    with duckdb.connect(str(tmp_path / "loja.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT source, source_row, reason FROM quarantine WHERE column_name = '_raw_line' ORDER BY source").fetchall()
        names = sorted(r[0] for r in con.execute("SELECT full_name FROM customers").fetchall())
    assert stored == [("clientes", 3, validate.UNDECODABLE_BYTES), ("pedidos", 2, validate.RAGGED_ROW)]
    assert names == ["Ana", "João"]  # control characters removed
    published = pd.read_csv(tmp_path / "run" / "quarantine.csv")
    lines = published[published["column_name"] == validate.RAW_LINE].sort_values("source")["raw_value"].tolist()
    assert lines == ["(undecodable as utf-8) [redacted]", "(5 fields, expected 4) [redacted]"]  # the line may hold personal data
    by_reason = result.quarantine_by_reason.set_index(["source", "reason"])["n_entries"]
    assert by_reason[("clientes", validate.UNDECODABLE_BYTES)] == 1 and by_reason[("pedidos", validate.RAGGED_ROW)] == 1


def test_a_mostly_ragged_file_stops_the_build_naming_the_reason_and_the_key(tmp_path):
    orders = b"pedido,cliente,data,valor\n" + b"".join(b"P%d;C1;2024-02-13;10\n" % i for i in range(5))
    with pytest.raises(QuarantineThresholdError, match=r"pedidos 100\.0% \(mostly ragged_row in _raw_line: 5 rows; check the source's `delimiter`"):
        build_clean_warehouse(dataset=write_dataset(tmp_path / "loja", CUSTOMERS, orders), as_of="2024-12-31",
                              warehouse_path=tmp_path / "loja.duckdb")


# ------------------------------------------------------------------------------ control characters


def test_control_characters_are_counted_per_column_in_the_quality_profile(tmp_path):
    result = build_clean_warehouse(dataset=write_dataset(tmp_path / "loja", CUSTOMERS, ORDERS), as_of="2024-12-31",
                                   warehouse_path=tmp_path / "loja.duckdb", quarantine_threshold=1.0)
    profile = result.profile.set_index(["source", "column_name", "stage"])["n_control_characters"]
    assert profile[("clientes", "full_name", "before")] == 1 and profile[("clientes", "full_name", "after")] == 0
    assert profile[("clientes", "email", "before")] == 0 and profile[("pedidos", "order_id", "before")] == 0


def test_control_characters_are_removed_and_counted_in_parquet_sources(tmp_path):
    folder = tmp_path / "loja"
    path = write_dataset(folder, CUSTOMERS, ORDERS)
    pd.DataFrame({"pedido": ["P1", "P\x002"], "cliente": ["C1", "C2"], "data": pd.to_datetime(["2024-02-13", "2024-02-15"]),
                  "valor": [10.0, 20.0], "canal": ["store\x85", "web"]}).to_parquet(folder / "pedidos.parquet")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["sources"]["pedidos"] |= {"path": "pedidos.parquet", "format": "parquet"}
    document["sources"]["pedidos"]["columns"]["channel"] = "canal"
    del document["sources"]["pedidos"]["constants"]["channel"]
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    result = build_clean_warehouse(dataset=path, as_of="2024-12-31", warehouse_path=tmp_path / "loja.duckdb", quarantine_threshold=1.0)
    profile = result.profile.set_index(["source", "column_name", "stage"])["n_control_characters"]
    assert profile[("pedidos", "order_id", "before")] == 1 and profile[("pedidos", "channel", "before")] == 1
    with duckdb.connect(str(tmp_path / "loja.duckdb"), read_only=True) as con:
        assert sorted(r[0] for r in con.execute("SELECT order_id FROM orders").fetchall()) == ["P1", "P2"]


# ------------------------------------------------------------------------------ sheets nobody reads


def write_two_sheets(path: Path) -> Path:
    """``two_sheets.xlsx``: customers on sheet ``clientes`` and three more rows on a second sheet, ``novos``."""
    header = {"id": [], "nome": [], "email": [], "desde": []}
    first = pd.DataFrame(header | {"id": ["C1", "C2"], "nome": ["João", "Ana"], "email": ["joao@example.com", "ana@example.com"],
                                   "desde": ["2023-01-05", "2023-06-30"]})
    second = pd.DataFrame({"id": ["C3", "C4", "C5"], "nome": ["Rui", "Eva", "Ivo"], "email": ["r@example.com", "e@example.com", "i@example.com"],
                           "desde": ["2023-07-01", "2023-07-02", "2023-07-03"]})
    with pd.ExcelWriter(path) as writer:
        first.to_excel(writer, sheet_name="clientes", index=False)
        second.to_excel(writer, sheet_name="novos", index=False)
        pd.DataFrame().to_excel(writer, sheet_name="vazia", index=False)
    return path


def test_the_corpus_workbook_is_what_its_generator_writes(tmp_path):
    generated = pd.read_excel(write_two_sheets(tmp_path / "two_sheets.xlsx"), sheet_name=None, engine="calamine")
    committed = pd.read_excel(CORPUS / "two_sheets.xlsx", sheet_name=None, engine="calamine")
    assert list(committed) == list(generated) == ["clientes", "novos", "vazia"]
    for name in generated:
        pd.testing.assert_frame_equal(committed[name], generated[name])


def test_rows_on_a_sheet_no_source_reads_are_counted_and_warned(tmp_path):
    folder = tmp_path / "loja"
    path = write_dataset(folder, CUSTOMERS, ORDERS)
    (folder / "two_sheets.xlsx").write_bytes((CORPUS / "two_sheets.xlsx").read_bytes())
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["sources"]["clientes"] |= {"path": "two_sheets.xlsx", "format": "excel", "sheet": "clientes"}
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert sources.unread_sheets(document["sources"]["clientes"], folder) == {"novos": 3}  # the empty sheet is no news
    result = build_clean_warehouse(dataset=path, as_of="2024-12-31", warehouse_path=tmp_path / "loja.duckdb",
                                   output_dir=tmp_path / "run", quarantine_threshold=1.0)
    assert result.row_counts["is_balanced"].all()
    notes = result.column_notes[result.column_notes["problem"] == quality.UNREAD_SHEET]
    assert notes[["source", "source_column", "n_rows", "is_required"]].values.tolist() == [["clientes", "novos", 3, False]]
    assert "two_sheets.xlsx: sheet 'novos' holds 3 rows that source clientes does not read" in notes["message"].iloc[0]
    saved = pd.read_parquet(next((tmp_path / "run").rglob("quality_column_notes*.parquet")))
    assert saved["problem"].tolist() == [quality.UNREAD_SHEET]
    all_sheets = document["sources"]["clientes"] | {"sheet": "all"}
    assert sources.unread_sheets(all_sheets, folder) == {}


# ------------------------------------------------------------------------------ configuration typos


def test_a_time_zone_typo_names_the_dataset_file_the_source_the_key_and_close_matches(tmp_path):
    path = write_dataset(tmp_path / "loja", CUSTOMERS, ORDERS, orders_spec={"time_zone": "Europe/Lisbn"})
    with pytest.raises(sources.SourceError, match=r"loja\.yaml: source 'pedidos'.*time_zone.*Europe/Lisbon"):
        build_clean_warehouse(dataset=path, as_of="2024-12-31", warehouse_path=tmp_path / "loja.duckdb")
    assert not (tmp_path / "loja.duckdb").exists()


def test_a_date_format_typo_names_the_file_the_source_and_the_key_not_the_quarantine(tmp_path):
    path = write_dataset(tmp_path / "loja", CUSTOMERS, ORDERS, orders_spec={"date_formats": ["%Y-%Q-%d"]})
    with pytest.raises(sources.SourceError, match=r"loja\.yaml: source 'pedidos': key `date_formats`: '%Y-%Q-%d' has the unknown code %Q"):
        build_clean_warehouse(dataset=path, as_of="2024-12-31", warehouse_path=tmp_path / "loja.duckdb")
