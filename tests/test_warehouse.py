"""The DuckDB warehouse: type coercion, time zones, atomic writes, Ibis access."""

import duckdb
import pandas as pd
import pytest

from crm_analytics import schema, warehouse
from crm_analytics.parsing import parse_datetimes


def test_date_parsing_handles_offsets_zones_and_formats():
    text = pd.Series(["2024-03-04T10:15:00+08:00", "2024-03-04T02:15:00Z", "2024-03-04 02:15:00", "not a date", None])
    parsed = parse_datetimes(text, formats=["iso8601"], time_zone="UTC", business_time_zone="Asia/Shanghai")["value"]
    expected = pd.Timestamp("2024-03-04 10:15:00")
    assert parsed.iloc[:3].tolist() == [expected, expected, expected]
    assert parsed.iloc[3:].isna().all()


def test_date_parsing_tries_formats_in_order_and_reads_excel_serials():
    text = pd.Series(["2024/03/04", "2024年3月5日", "20240306", "45356"])
    parsed = parse_datetimes(text, formats=["%Y/%m/%d", "%Y年%m月%d日", "%Y%m%d", "excel_serial"])["value"]
    assert parsed.dt.strftime("%Y-%m-%d").tolist() == ["2024-03-04", "2024-03-05", "2024-03-06", "2024-03-05"]


def test_excel_serial_60_is_not_a_date():
    assert parse_datetimes(pd.Series(["60"]), formats=["excel_serial"])["value"].isna().all()


def test_date_parsing_converts_aware_datetimes_into_the_business_zone():
    stamps = pd.Series(pd.to_datetime(["2024-01-01 00:00"]).tz_localize("UTC"))
    assert parse_datetimes(stamps, formats=["iso8601"], business_time_zone="Asia/Shanghai")["value"].iloc[0] == pd.Timestamp("2024-01-01 08:00")
    assert parse_datetimes(stamps, formats=["iso8601"], business_time_zone="Europe/London")["value"].iloc[0] == pd.Timestamp("2024-01-01 00:00")


def test_coerce_to_contract_types_and_unparsable_values():
    frame = pd.DataFrame(
        {
            "order_id": ["A1", "A2", "A3"],
            "customer_id": ["W1", "W1", "W2"],
            "order_time": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00+08:00", "yesterday"],
            "order_amount": ["¥1,234.50", "（12.00）", "abc"],
            "is_refund": ["false", "true", None],
            "channel": ["web", "web", "app"],
            "source": ["web"] * 3,
            "_source_row": [1, 2, 3],
        }
    )
    spec = {"table": "orders", "time_zone": "UTC", "date_formats": ["iso8601"]}
    coerced = warehouse.coerce_to_contract(frame, spec, business_time_zone="Asia/Shanghai")
    assert coerced["order_amount"].tolist()[:2] == [1234.5, -12.0]
    assert pd.isna(coerced["order_amount"].iloc[2])
    assert coerced["order_time"].tolist()[:2] == [pd.Timestamp("2024-01-01 08:00"), pd.Timestamp("2024-01-02 00:00")]
    assert coerced["is_refund"].tolist()[:2] == [False, True]
    assert list(coerced.columns[: len(schema.ORDERS.columns)]) == schema.ORDERS.column_names
    assert "_source_row" in coerced.columns
    assert frame["order_amount"].iloc[0] == "¥1,234.50", "the input is not mutated"
    in_london = warehouse.coerce_to_contract(frame, spec, business_time_zone="Europe/London")["order_time"]
    assert in_london.tolist()[:2] == [pd.Timestamp("2024-01-01 00:00"), pd.Timestamp("2024-01-01 16:00")]


def test_write_tables_uses_contract_types_and_is_atomic(tmp_path):
    path = tmp_path / "crm.duckdb"
    products = pd.DataFrame({"product_id": ["P1"], "product_name": ["茶"], "category": ["tea"], "list_price_amount": [9.5]})
    warehouse.write_tables({"products": products, "notes": pd.DataFrame({"x": [1]})}, path=path)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT product_name FROM products").fetchone() == ("茶",)
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name='products'").fetchall())
    assert types["list_price_amount"] == "DOUBLE"

    broken = {"products": products, "orders": pd.DataFrame({"order_id": ["x"]})}  # lacks contract columns
    with pytest.raises(duckdb.Error):
        warehouse.write_tables(broken, path=path)
    assert warehouse.table_row_counts(path) == {"notes": 1, "products": 1}, "the good warehouse survives a failed build"
    assert list(tmp_path.iterdir()) == [path], "no staging file is left behind"


def test_connect_returns_ibis_tables_and_explains_a_missing_warehouse(tmp_path):
    path = tmp_path / "crm.duckdb"
    with pytest.raises(warehouse.WarehouseMissingError, match="build-warehouse"):
        warehouse.connect(path)
    warehouse.write_tables({"products": pd.DataFrame({"product_id": ["P1", "P2"], "product_name": ["a", "b"], "category": ["c", "c"], "list_price_amount": [1.0, 2.0]})}, path=path)
    con = warehouse.connect(path)
    assert con.table("products").count().execute() == 2


@pytest.mark.slow
def test_demo_warehouse_holds_every_canonical_table(demo_home):
    counts = warehouse.table_row_counts()
    assert set(schema.TABLES) <= set(counts)
    assert all(counts[name] > 0 for name in schema.TABLES)


def test_a_sigint_swallowed_during_the_write_still_stops_the_new_file_replacing_the_old(tmp_path):
    """A library that catches the KeyboardInterrupt of a SIGINT must not let a cancelled build replace the warehouse."""
    import hashlib
    import signal

    path = tmp_path / "w.duckdb"
    warehouse.write_tables({"notes": pd.DataFrame({"x": [1]})}, path=path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    previous = signal.getsignal(signal.SIGINT)
    try:
        warehouse.watch_for_cancel()
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # swallowed, as by a library
        with pytest.raises(warehouse.BuildCancelled):
            warehouse.write_tables({"notes": pd.DataFrame({"x": [2]})}, path=path)
    finally:
        signal.signal(signal.SIGINT, previous)
        warehouse._cancel_requested.clear()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert warehouse.build_leftovers(path) == []
    warehouse.write_tables({"notes": pd.DataFrame({"x": [3]})}, path=path)  # with the request cleared, as each build starts
    assert duckdb.connect(str(path), read_only=True).execute("SELECT x FROM notes").fetchone() == (3,)
