"""The whole cleansing build on a small hand-made dataset, and on the demo (slow)."""

from __future__ import annotations

from pathlib import Path

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


MINI_DATASET = {"description": "a hand-made mini export", "data_dir": "data/raw/mini", "time_zone": "Asia/Shanghai",
                "currency": "CNY", "country": "CN", "locale": "zh_CN"}


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A project home with the mini exports; returns it and the mini dataset file (its sources: four of the demo's)."""
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
    dataset_file = tmp_path / "mini.yaml"
    dataset_file.write_text(yaml.safe_dump(MINI_DATASET | {"sources": source_map}, allow_unicode=True), encoding="utf-8")
    return tmp_path, dataset_file


def build(home, **overrides):
    root, dataset_file = home
    arguments = dict(dataset=dataset_file, as_of=AS_OF, quarantine_threshold=0.6, match_threshold=0.9, output_dir=root / "run")
    return build_clean_warehouse(**(arguments | overrides))


def read(table: str, dataset: str = "mini") -> pd.DataFrame:
    with duckdb.connect(str(paths.warehouse_path(dataset)), read_only=True) as con:
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
    before = paths.warehouse_path("mini").read_bytes()
    with pytest.raises(QuarantineThresholdError, match="web_orders"):
        build(home, quarantine_threshold=0.3, output_dir=root / "failed")
    assert paths.warehouse_path("mini").read_bytes() == before
    assert (root / "failed" / "quarantine.csv").exists()
    assert paths.warehouse_path("mini").with_name("mini.duckdb.quarantine.parquet").exists()


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
    assert not (result.quarantine["reason"] == "unknown_value").any(), "every value of the demo is in its column's vocabulary"
    assert result.value_maps.empty, "the demo needs no value maps"


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


def test_fact_sources_spilled_while_customers_resolve_stage_as_those_staged_afterwards(home):
    # with a pool, the chunked fact sources are validated before the customers are resolved and only linked afterwards
    from crm_analytics import datasets
    from crm_analytics.cleansing import pipeline

    root, dataset_file = home
    dataset = datasets.load_dataset(str(dataset_file))
    source_map = pipeline.dataset_source_map(dataset)
    options = pipeline.validation_options(dataset)
    region = options.pop("default_region")
    lookup = pd.DataFrame({"system": ["web", "web", "web", "store"], "source_customer_id": ["W1", "W2", "W3", "S1"],
                           "customer_key": ["c1", "c2", "c3", "c1"]})
    staged = {}
    for kind in ("at_once", "spilled"):
        work = root / kind
        work.mkdir()
        with pipeline.source_pool(2) as pool:
            spilled = pipeline.spill_fact_sources(source_map, dataset.data_dir, pool, as_of=pd.Timestamp(AS_OF), work_dir=work,
                                                  default_region=region, **options) if kind == "spilled" else None
            if kind == "spilled":
                assert set(spilled) == {"web_orders"}, "customers and typed Parquet sources are not spilled"
            staged[kind] = pipeline.stage_facts(source_map, dataset.data_dir, as_of=pd.Timestamp(AS_OF), id_lookup=lookup, work_dir=work,
                                                default_region=region, pool=pool, spilled=spilled, **options)
    assert set(staged["spilled"]) == set(staged["at_once"]) == {"web_orders", "touchpoints"}
    for name, at_once in staged["at_once"].items():
        again = staged["spilled"][name]
        pd.testing.assert_frame_equal(again.quarantine, at_once.quarantine, obj=name)
        pd.testing.assert_frame_equal(again.profile, at_once.profile, obj=name)
        assert (again.n_rows_in, again.n_rows_clean) == (at_once.n_rows_in, at_once.n_rows_clean)
        pd.testing.assert_frame_equal(pd.read_parquet(again.clean_path), pd.read_parquet(at_once.clean_path), obj=name)
    assert staged["spilled"]["web_orders"].quarantine["reason"].eq("unknown_customer").any()


# A build's worker pool, whose build process is then killed outright (it cannot shut the pool down).
KILLED_WITH_WORKERS = """
import os, signal
from crm_analytics.cleansing.pipeline import source_pool
with source_pool(2) as pool:
    workers = {pool.submit(os.getpid).result() for _ in range(4)}
    print(" ".join(map(str, sorted(workers))), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_worker_processes_end_when_the_build_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    done = subprocess.run([sys.executable, "-c", KILLED_WITH_WORKERS], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr
    workers = [int(pid) for pid in done.stdout.split()]
    assert workers
    deadline = time.monotonic() + 20
    while any(psutil.pid_exists(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(psutil.pid_exists(pid) for pid in workers), "idle workers of a killed build wait forever"


def test_workers_take_the_largest_source_file_first(home):
    from crm_analytics.cleansing.pipeline import _source_bytes

    root, dataset_file = home
    source_map = sources.load_source_map(dataset_file)
    raw = paths.raw_dir("mini")
    assert _source_bytes(source_map["web_orders"], raw) == (raw / "web_orders.csv").stat().st_size > 0
    assert _source_bytes({**source_map["web_orders"], "path": "absent.csv"}, raw) == 0
    assert _source_bytes({"table": "orders", "format": "sql", "url": "sqlite://"}, raw) == 0


def test_legacy_call_with_a_bare_name_and_a_source_map(home):
    root, dataset_file = home
    separate = root / "sources.yaml"
    separate.write_text(yaml.safe_dump({"sources": yaml.safe_load(dataset_file.read_text(encoding="utf-8"))["sources"]}, allow_unicode=True),
                        encoding="utf-8")
    result = build_clean_warehouse(sources_file=separate, dataset="mini", as_of=AS_OF, quarantine_threshold=0.6, match_threshold=0.9)
    assert result.warehouse_path == paths.warehouse_path("mini")
    assert result.row_counts.set_index("source").loc["web_orders", "rows_clean"] == 2
    assert result.accuracy.empty, "no ground truth for a dataset that declares none"


def test_dataset_info_is_written_and_read_back(home):
    from crm_analytics import warehouse

    before = pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s")
    build(home)
    info = warehouse.dataset_info(paths.warehouse_path("mini"))
    assert {k: info[k] for k in ("name", "time_zone", "currency", "country", "locale")} == {
        "name": "mini", "time_zone": "Asia/Shanghai", "currency": "CNY", "country": "CN", "locale": "zh_CN"}
    assert before <= info["built_at"] <= pd.Timestamp.now(tz="UTC").tz_localize(None), "built_at is UTC"
    assert len(read("dataset_info")) == 1


def test_as_of_defaults_to_the_export_date_else_today_in_the_dataset_zone():
    from crm_analytics import datasets
    from crm_analytics.cleansing.pipeline import build_as_of

    demo = datasets.load_dataset("demo")
    assert build_as_of("", demo) == pd.Timestamp(demo.export_date)
    assert build_as_of("2024-05-06", demo) == pd.Timestamp("2024-05-06")
    london = datasets.load_dataset("online_retail_ii")
    assert london.export_date is None
    today = build_as_of(None, london)
    assert today == pd.Timestamp.now(tz="Europe/London").tz_localize(None).normalize() or today == pd.Timestamp.now(tz="Europe/London").tz_localize(None).normalize() - pd.Timedelta(days=1)


def test_validation_options_carry_the_dataset_facts():
    from crm_analytics import datasets
    from crm_analytics.cleansing.pipeline import validation_options

    london = datasets.load_dataset("online_retail_ii")
    options = validation_options(london)
    assert options == {"business_time_zone": "Europe/London", "default_region": "GB", "currency": "GBP", "dataset": london}
    assert validation_options(london, default_region="IE")["default_region"] == "IE"


KEYED_2010 = "cust,first_seen,name\nP1,2010-01-04 09:00:00,Anne\nP2,2010-02-01 10:00:00,Bob\n"
KEYED_2011 = "cust,first_seen,name\nP1,2011-01-03 11:00:00,Anne M.\nP3,2011-03-01 12:00:00,Carl\n"
ORDERS_2010 = "invoice,cust,at,total\n10,P1,2010-01-04 09:00:00,5.00\n11,P2,2010-02-01 10:00:00,7.50\n"
ORDERS_2011 = "invoice,cust,at,total\n20,P1,2011-01-03 11:00:00,9.00\n21,P3,2011-03-01 12:00:00,1.25\n"


def keyed_dataset(root) -> "Path":
    """Two yearly exports sharing a customer number: customers and orders per year, the number as person key."""
    raw = root / "data" / "raw" / "keyed"
    raw.mkdir(parents=True)
    for name, text in {"customers_2010.csv": KEYED_2010, "customers_2011.csv": KEYED_2011,
                       "orders_2010.csv": ORDERS_2010, "orders_2011.csv": ORDERS_2011}.items():
        (raw / name).write_text(text, encoding="utf-8")
    customers = lambda year: {"table": "customers", "path": f"customers_{year}.csv", "format": "csv", "date_formats": ["%Y-%m-%d %H:%M:%S"],  # noqa: E731
                              "columns": {"customer_id": "cust", "person_key": "cust", "signup_time": "first_seen", "full_name": "name"},
                              "constants": {"source": f"shop_{year}"}}
    orders = lambda year: {"table": "orders", "path": f"orders_{year}.csv", "format": "csv", "date_formats": ["%Y-%m-%d %H:%M:%S"],  # noqa: E731
                           "columns": {"order_id": "invoice", "customer_id": "cust", "order_time": "at", "order_amount": "total"},
                           "constants": {"source": f"shop_{year}", "channel": "web", "currency": "GBP"}}
    document = {"data_dir": "data/raw/keyed", "time_zone": "Europe/London", "currency": "GBP", "country": "GB",
                "sources": {"customers_2010": customers(2010), "customers_2011": customers(2011),
                            "orders_2010": orders(2010), "orders_2011": orders(2011)}}
    path = root / "keyed.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_same_person_key_in_two_sources_is_one_customer_with_the_orders_of_both(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    result = build_clean_warehouse(dataset=keyed_dataset(tmp_path), as_of="2012-01-01")
    assert result.row_counts["is_balanced"].all() and result.quarantine.empty
    customers, orders, lineage = read("customers", "keyed"), read("orders", "keyed"), read("customer_lineage", "keyed")
    assert len(customers) == 3, "P1 of 2010 and P1 of 2011 are one customer, not a customer without orders"
    p1 = lineage.loc[lineage["source_customer_id"] == "P1", "customer_key"].unique()
    assert len(p1) == 1 and set(lineage.loc[lineage["source_customer_id"] == "P1", "match_rule"]) == {"exact_person_key"}
    assert sorted(orders.loc[orders["customer_id"] == p1[0], "order_id"]) == ["10", "20"]
    anne = customers.set_index("customer_id").loc[p1[0]]
    assert anne["person_key"] == "P1" and anne["signup_time"] == pd.Timestamp("2010-01-04 09:00:00")
    assert orders["order_time"].min() == pd.Timestamp("2010-01-04 09:00:00"), "London local times stored unchanged"


@pytest.mark.parametrize("anonymous_orders", ["keep", "quarantine"])
def test_rows_rejected_after_a_query_are_quarantined_with_file_sheet_and_row(tmp_path, monkeypatch, anonymous_orders):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    raw = tmp_path / "data" / "raw" / "lines"
    raw.mkdir(parents=True)
    first = pd.DataFrame({"inv": ["1", "2"], "cust": ["K1", "K2"], "stamp": ["2020-01-02 10:00:00", "2020-01-03 10:00:00"], "amount": ["3", "4"]})
    second = pd.DataFrame({"inv": ["3", "4", "5"], "cust": ["K1", "K2", None], "stamp": ["2020-02-02 10:00:00", "not a date", "2020-02-04 10:00:00"],
                           "amount": ["5", "6", "7"]})
    with pd.ExcelWriter(raw / "lines.xlsx") as writer:
        first.to_excel(writer, sheet_name="Y1", index=False)
        second.to_excel(writer, sheet_name="Y2", index=False)
    document = {
        "data_dir": "data/raw/lines", "time_zone": "Europe/London", "currency": "GBP", "country": "GB",
        "anonymous_orders": anonymous_orders,
        "inputs": {"lines": {"path": "lines.xlsx", "format": "excel", "sheet": "all"}},
        "sources": {
            "customers": {"table": "customers", "query": "SELECT cust AS customer_id, min(stamp) AS signup_time, arg_min(_source_file, _source_row) "
                          "AS _source_file, min(_source_row) AS _source_row FROM lines WHERE cust IS NOT NULL AND _source_sheet = 'Y1' GROUP BY cust",
                          "constants": {"source": "lines"}},
            "orders": {"table": "orders", "query": "SELECT inv AS order_id, cust AS customer_id, stamp AS order_time, amount AS order_amount, "
                       "_source_file, _source_row FROM lines", "constants": {"source": "lines", "channel": "web"}},
        },
    }
    (tmp_path / "lines.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    result = build_clean_warehouse(dataset=tmp_path / "lines.yaml", as_of="2021-01-01", quarantine_threshold=1.0)
    counts = result.row_counts.set_index("source")
    quarantine = read("quarantine", "lines")
    got = {(Path(f).name, row, column, reason) for f, row, column, reason in
           zip(quarantine["source_file"], quarantine["source_row"], quarantine["column_name"], quarantine["reason"])}
    orders = read("orders", "lines").set_index("order_id")
    if anonymous_orders == "keep":  # the order without a customer stays, its customer missing
        assert counts.loc["orders", ["rows_in", "rows_clean", "rows_quarantined"]].tolist() == [5, 4, 1]
        assert got == {("lines.xlsx#Y2", 2, "order_time", "unparsed_date")}
        assert pd.isna(orders.loc["5", "customer_id"]) and orders.loc["5", "order_amount"] == 7
        assert orders.drop(index="5")["customer_id"].notna().all()
    else:
        assert counts.loc["orders", ["rows_in", "rows_clean", "rows_quarantined"]].tolist() == [5, 3, 2]
        assert got == {("lines.xlsx#Y2", 2, "order_time", "unparsed_date"), ("lines.xlsx#Y2", 3, "customer_id", "missing_required")}
        assert "5" not in orders.index


def test_a_dataset_without_a_customers_source_is_refused_with_the_way_out(tmp_path):
    from crm_analytics import datasets, sources
    from crm_analytics.cleansing.pipeline import dataset_source_map

    file = tmp_path / "orders_only.yaml"
    file.write_text(
        "time_zone: UTC\ncurrency: USD\ncountry: US\nsources:\n  orders:\n    table: orders\n    path: orders.csv\n    format: csv\n"
        "    columns: {order_id: id, customer_id: customer, order_time: time, order_amount: amount, channel: channel, source: source}\n",
        encoding="utf-8",
    )
    with pytest.raises(sources.SourceError, match=r"orders_only.yaml: no source builds table 'customers'.*derive it from the orders"):
        dataset_source_map(datasets.load_dataset(file))
