"""The whole cleansing build on a small hand-made dataset, and on the demo (slow)."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest
import yaml

from crm_analytics import paths, sources
from crm_analytics.cleansing import QuarantineThresholdError, build_clean_warehouse

AS_OF = "2025-06-30"
WEB = """account_id,name,email,mobile,gender,birthday,province,city,utm_source,signup_time
W1,张三,zs@qq.com,13800138000,女,1990-01-02,广东省,深圳市,Social,2024-01-01T08:00:00Z
W2,李四,LS@163.com ,,M,1985-03-04,Beijing,Beijing,referral,2024-02-01T08:00:00Z
W3,王五,ww@qq.com,1.39001E+10,M,1970-11-12,,成都,organic_search,2024-03-01T08:00:00Z
W4,赵六,zl@qq.com,13700137000,F,1992-02-02,,Wuhan,social,2030-01-01T00:00:00Z
"""
STORE = """会员号,姓名,手机号,邮箱,注册日期,省份,城市,性别,出生日期
S1,張三,+86 138-0013-8000,,2023年5月6日,广东,深圳,女,19900102
S2,李四,,,2023-07-08,北京,北京市,男,19850304
"""
ORDERS = """order_no,account_id,order_time,amount,currency,discount,platform,is_refund
O1,W1,2024-03-01T10:00:00Z,"¥1,234.50",,0,web,false
O2,W2,2024-03-02T10:00:00Z,-20,CNY,0,app,true
O3,W9,2024-03-03T10:00:00Z,10,CNY,0,web,false
O4,W3,2024-03-04T10:00:00Z,ten,CNY,0,web,false
O4,W3,2024-03-05T10:00:00Z,10,CNY,0,web,false
"""


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    raw = paths.raw_dir("mini")
    raw.mkdir(parents=True)
    (raw / "web_signups.csv").write_text(WEB, encoding="utf-8")
    (raw / "store_members.csv").write_text(STORE, encoding="gb18030")
    (raw / "web_orders.csv").write_text(ORDERS, encoding="utf-8")
    pd.DataFrame({
        "touchpoint_id": ["T1", "T2", "T3", "T3"], "account_id": ["W1", "W2", "W404", "W1"], "campaign_id": ["K1"] * 4,
        "channel": ["Email", "sms", "sms", "sms"],
        "touch_time": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2031-01-01"]).tz_localize("UTC"),
    }).to_parquet(raw / "touchpoints.parquet")
    source_map = {name: spec for name, spec in sources.load_source_map().items() if name in ("web_signups", "store_members", "web_orders", "touchpoints")}
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": source_map}, allow_unicode=True), encoding="utf-8")
    return tmp_path, sources_file


def build(home, **overrides):
    root, sources_file = home
    arguments = dict(sources_file=sources_file, dataset="mini", as_of=AS_OF, quarantine_threshold=0.6, match_threshold=0.9,
                     output_dir=root / "run")
    return build_clean_warehouse(**(arguments | overrides))


def read(table: str) -> pd.DataFrame:
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as con:
        return con.execute(f'SELECT * FROM "{table}"').df()


def test_rows_in_equal_clean_plus_quarantined_for_every_source(home):
    result = build(home)
    counts = result.row_counts.set_index("source")
    assert counts["is_balanced"].all()
    assert counts.loc["web_signups", ["rows_in", "rows_clean", "rows_quarantined"]].tolist() == [4, 3, 1]
    assert counts.loc["web_orders", ["rows_in", "rows_clean", "rows_quarantined"]].tolist() == [5, 2, 3]
    assert counts.loc["touchpoints", ["rows_in", "rows_clean", "rows_quarantined"]].tolist() == [4, 2, 2]
    warehouse_rows = result.table_rows
    assert warehouse_rows["orders"] == 2 and warehouse_rows["touchpoints"] == 2
    assert warehouse_rows["quarantine"] == len(result.quarantine)


def test_quarantine_reasons_name_file_row_column(home):
    result = build(home)
    quarantine = read("quarantine")
    got = set(zip(quarantine["source"], quarantine["source_row"], quarantine["column_name"], quarantine["reason"]))
    assert {
        ("web_signups", 4, "signup_time", "future_date"),
        ("web_signups", 3, "phone", "excel_mangled"),
        ("web_orders", 3, "customer_id", "unknown_customer"),
        ("web_orders", 4, "order_amount", "not_a_number"),
        ("web_orders", 5, "order_id", "duplicate_key"),
        ("touchpoints", 3, "customer_id", "unknown_customer"),
        ("touchpoints", 4, "touchpoint_id", "duplicate_key"),
    } <= got
    assert quarantine["source_file"].str.endswith((".csv", ".parquet")).all()
    assert len(result.quarantine) == len(quarantine)


def test_customers_resolved_and_ids_replaced_everywhere(home):
    build(home)
    customers, orders, lineage, touchpoints = read("customers"), read("orders"), read("customer_lineage"), read("touchpoints")
    keys = dict(zip(lineage["source_customer_id"], lineage["customer_key"]))
    assert keys["W1"] == keys["S1"] and keys["W2"] == keys["S2"] and keys["W3"] != keys["W1"]
    assert len(customers) == 3 and customers["customer_id"].is_unique
    assert set(orders["customer_id"]) <= set(customers["customer_id"])
    assert set(touchpoints["customer_id"]) <= set(customers["customer_id"])
    assert sorted(lineage["source_customer_id"]) == ["S1", "S2", "W1", "W2", "W3"]  # source ids kept, W4 quarantined
    zhang = customers.set_index("customer_id").loc[keys["W1"]]
    assert zhang["province"] == "Guangdong" and zhang["city"] == "Shenzhen" and zhang["phone"] == "+8613800138000"
    wang = customers.set_index("customer_id").loc[keys["W3"]]
    assert wang["province"] == "Sichuan"  # derived from the city
    assert set(read("touchpoints")["channel"]) == {"email", "sms"}


def test_reports_are_persisted_and_masked(home):
    root, _ = home
    build(home)
    quarantine_csv = pd.read_csv(root / "run" / "quarantine.csv", dtype=str)
    assert not quarantine_csv["raw_value"].str.contains("1.39001E+10", regex=False).any()
    for name in ("quality_row_counts", "quality_profile", "quality_quarantine_by_reason", "quality_duplicates"):
        assert (root / "run" / "tables" / f"{name}.parquet").exists()


def test_threshold_fails_the_run_but_keeps_the_good_warehouse(home):
    root, _ = home
    build(home)
    before = paths.warehouse_path().read_bytes()
    with pytest.raises(QuarantineThresholdError, match="web_orders"):
        build(home, quarantine_threshold=0.3, output_dir=root / "failed")
    assert paths.warehouse_path().read_bytes() == before
    assert (root / "failed" / "quarantine.csv").exists()
    assert paths.warehouse_path().with_name("crm.duckdb.quarantine.parquet").exists()


def test_missing_required_column_names_file_and_column(home):
    root, _ = home
    (paths.raw_dir("mini") / "web_orders.csv").write_text(ORDERS.replace("order_time", "ordered"), encoding="utf-8")
    with pytest.raises(sources.SourceError, match=r"web_orders\.csv.*order_time"):
        build(home)


@pytest.mark.slow
def test_demo_accuracy_and_invariant(demo_home, tmp_path):
    result = build_clean_warehouse(as_of="2025-12-31", quarantine_threshold=0.05, match_threshold=0.7,
                                   warehouse_path=tmp_path / "clean.duckdb", output_dir=tmp_path / "run")
    assert result.row_counts["is_balanced"].all()
    overall = result.accuracy.iloc[0]
    assert overall["precision"] >= 0.98 and overall["recall"] >= 0.95, result.accuracy
    planted = pd.read_parquet(paths.ground_truth_dir() / "planted_dirt.parquet")
    mangled = planted[planted["kind"] == "phone_scientific_notation"]
    quarantined = result.quarantine[result.quarantine["reason"] == "excel_mangled"]
    assert len(quarantined) == len(mangled)


def test_sources_validated_in_worker_processes_give_the_same_warehouse(home):
    root, _ = home
    tables = ["customers", "customer_lineage", "orders", "touchpoints", "quarantine", "quality_row_counts", "quality_profile"]
    build(home, warehouse_path=root / "serial.duckdb", output_dir=root / "serial")
    build(home, warehouse_path=root / "parallel.duckdb", output_dir=root / "parallel", workers=2)
    for table in tables:
        frames = []
        for name in ("serial", "parallel"):
            with duckdb.connect(str(root / f"{name}.duckdb"), read_only=True) as con:
                frame = con.execute(f'SELECT * FROM "{table}"').df()
            frames.append(frame.sort_values(list(frame.columns)).reset_index(drop=True))
        assert len(frames[0]) > 0, table
        pd.testing.assert_frame_equal(frames[0], frames[1], obj=table)


def test_an_error_in_a_worker_process_names_file_and_column(home):
    (paths.raw_dir("mini") / "web_orders.csv").write_text(ORDERS.replace("order_time", "ordered"), encoding="utf-8")
    with pytest.raises(sources.SourceError, match=r"web_orders\.csv.*order_time"):
        build(home, workers=2)
    (paths.raw_dir("mini") / "web_orders.csv").write_text(ORDERS, encoding="utf-8")
    (paths.raw_dir("mini") / "store_members.csv").write_text(STORE.replace("会员号", "编号"), encoding="gb18030")
    with pytest.raises(sources.SourceError, match=r"store_members\.csv.*会员号"):
        build(home, workers=2)


def test_workers_take_the_largest_source_file_first(home):
    from crm_analytics.cleansing.pipeline import _source_bytes

    root, sources_file = home
    source_map = sources.load_source_map(sources_file)
    raw = paths.raw_dir("mini")
    assert _source_bytes(source_map["web_orders"], raw) == (raw / "web_orders.csv").stat().st_size > 0
    assert _source_bytes({**source_map["web_orders"], "path": "absent.csv"}, raw) == 0
    assert _source_bytes({"table": "orders", "format": "sql", "url": "sqlite://"}, raw) == 0
