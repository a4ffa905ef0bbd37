"""Chunked validation (``cleansing.stream``) gives exactly what validating the whole file at once gives.

The reference is the whole-file pandas path: ``validate.validate_source`` on
``sources.read_source``, ``quality.profile_before_after``, and the customer link
of ``pipeline.map_customer_ids`` with ``validate.quarantine_clean_rows``.
"""

from __future__ import annotations

import copy

import duckdb
import numpy as np
import pandas as pd
import pytest

from crm_analytics import paths, schema, sources
from crm_analytics.cleansing import pipeline, stream, validate
from crm_analytics.cleansing.bulk import EmptySourceError

AS_OF = pd.Timestamp("2025-06-30")
SOURCE_MAP = sources.load_source_map()
HEADER = "order_no,account_id,order_time,amount,currency,discount,platform,is_refund\n"
LOOKUP = pd.DataFrame(
    {
        "system": ["web"] * 8 + ["store", "store"],
        "source_customer_id": [f"W{i}" for i in range(1, 9)] + ["S1", "W1"],
        "customer_key": [f"cus_{i}" for i in range(1, 9)] + ["cus_s1", "cus_other"],
    }
)


def dirty_orders(n_rows: int = 80, seed: int = 3) -> str:
    """Orders with planted dirt, duplicate keys spread over the file (so across any chunk boundary)."""
    rng = np.random.default_rng(seed)
    lines = []
    for row in range(1, n_rows + 1):
        order = f"O{row}"
        if row % 9 == 0:
            order = f"O{rng.integers(1, row)}"  # a key an earlier row holds
        if row % 13 == 0:
            order = f" O{row - 12} "  # the same key after standardisation
        customer = "S1" if row % 17 == 0 else f"W{rng.integers(1, 11)}"  # W9, W10 and S1 are not web customers
        amount = rng.choice(['"¥1,234.50"', "12.5", "-20", "ten", "（123.00）", ""], p=[0.3, 0.3, 0.1, 0.1, 0.1, 0.1])
        when = "2031-01-01T00:00:00Z" if row % 11 == 0 else f"2024-03-{1 + row % 28:02d}T10:00:00Z"
        platform = rng.choice(["web", "App ", "mini-program"])
        lines.append(f"{order},{customer},{when},{amount},CNY,{rng.choice(['0', '5', 'x'])},{platform},{rng.choice(['false', 'true', ''])}\n")
    lines[4] = "O1,W1,2024-03-02T10:00:00Z,ten,CNY,0,web,false\n"  # O1 again, and itself quarantined
    lines[5] = f"{'O' * 1200},W1,2024-03-02T10:00:00Z,1,CNY,0,web,false\n"  # a key too long to keep
    lines[6] = f"{'O' * 1200},W2,2024-03-02T10:00:00Z,1,CNY,0,web,false\n"
    lines[7] = ",W2,2024-03-02T10:00:00Z,1,CNY,0,web,false\n"  # no key
    return HEADER + "".join(lines)


def whole_file(name: str, spec: dict, dataset_dir, lookup: pd.DataFrame | None):
    """The whole-file reference: (quarantine, profile, clean contract rows, rows in)."""
    raw = sources.read_source(name, spec, dataset_dir)
    result = validate.validate_source(name, raw, spec, as_of=AS_OF)
    profile = pipeline.quality.profile_before_after(raw, result.reasons, result.clean, source=name, table_name=spec["table"])
    if lookup is not None and "customer_id" in result.clean.columns:
        keys = pipeline.map_customer_ids(result.clean, lookup)
        unknown = (keys.isna() & result.clean["customer_id"].notna()).to_numpy()  # no customer at all: kept (anonymous)
        result = validate.quarantine_clean_rows(result, unknown, column="customer_id", reason=validate.UNKNOWN_CUSTOMER)
        result.clean["customer_id"] = keys[~unknown].to_numpy()
    contract = schema.get_table(spec["table"]).column_names
    return result.quarantine, profile, result.clean.reindex(columns=contract), result.n_rows_in


def staged_clean(staged) -> pd.DataFrame:
    with duckdb.connect() as con:
        return con.execute(f"SELECT * FROM read_parquet('{staged.clean_path}')").df()


def as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as Python objects, every kind of missing as None (pandas and DuckDB spell missing differently)."""
    return frame.astype(object).where(frame.notna(), None).reset_index(drop=True)


def sorted_quarantine(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["source_row", "column_name"], ignore_index=True)


def assert_same(staged, reference) -> None:
    quarantine, profile, clean, n_in = reference
    assert staged.n_rows_in == n_in and staged.n_rows_clean == len(clean)
    assert staged.n_rows_in == staged.n_rows_clean + staged.n_rows_quarantined
    pd.testing.assert_frame_equal(sorted_quarantine(staged.quarantine), sorted_quarantine(quarantine))
    pd.testing.assert_frame_equal(staged.profile, profile)
    pd.testing.assert_frame_equal(as_objects(staged_clean(staged)), as_objects(clean))


def test_columns_derived_during_standardisation_are_kept(tmp_path):
    (tmp_path / "sales.csv").write_text("小票号,会员号,交易时间,实付金额,折扣金额\nT1,S1,2024-03-01 10:00:00,-5,0\nT2,S1,2024-03-01 10:00:00,5,0\n",
                                        encoding="utf-8")
    spec = dict(copy.deepcopy(SOURCE_MAP["store_sales"]), path="sales.csv")
    staged = stream.stage_source("store_sales", spec, tmp_path, as_of=AS_OF, work_dir=tmp_path, id_lookup=LOOKUP, chunk_rows=1)
    assert_same(staged, whole_file("store_sales", spec, tmp_path, LOOKUP))
    assert staged_clean(staged)["is_refund"].tolist() == [True, False]


@pytest.fixture()
def orders_dir(tmp_path):
    (tmp_path / "orders.csv").write_text(dirty_orders(), encoding="utf-8")
    return tmp_path


def orders_spec(path: str = "orders.csv") -> dict:
    return dict(copy.deepcopy(SOURCE_MAP["web_orders"]), path=path)


@pytest.mark.parametrize("chunk_rows", [1, 7, 10, 1000])
def test_chunked_equals_whole_file_with_duplicates_across_chunks(orders_dir, tmp_path, chunk_rows):
    work = tmp_path / f"work{chunk_rows}"
    work.mkdir()
    staged = stream.stage_source("web_orders", orders_spec(), orders_dir, as_of=AS_OF, work_dir=work, id_lookup=LOOKUP, chunk_rows=chunk_rows)
    reference = whole_file("web_orders", orders_spec(), orders_dir, LOOKUP)
    assert_same(staged, reference)
    reasons = set(reference[0]["reason"])
    assert {"duplicate_key", "unknown_customer", "not_a_number", "future_date", "missing_required", "too_long"} <= reasons


def test_duplicates_across_chunks_keep_the_first_occurrence_even_when_it_is_quarantined(tmp_path):
    (tmp_path / "orders.csv").write_text(
        HEADER
        + "O1,W1,2024-03-01T10:00:00Z,ten,CNY,0,web,false\n"  # quarantined (amount), still the first O1
        + "O2,W1,2024-03-01T10:00:00Z,1,CNY,0,web,false\n"
        + " O1,W1,2024-03-01T10:00:00Z,1,CNY,0,web,false\n"  # duplicate of row 1, in the next chunk
        + "O2,W9,2024-03-01T10:00:00Z,1,CNY,0,web,false\n"  # duplicate of row 2 (so never linked)
        + "O3,W9,2024-03-01T10:00:00Z,1,CNY,0,web,false\n",  # an unknown customer
        encoding="utf-8",
    )
    staged = stream.stage_source("web_orders", orders_spec(), tmp_path, as_of=AS_OF, work_dir=tmp_path, id_lookup=LOOKUP, chunk_rows=2)
    got = set(zip(staged.quarantine["source_row"], staged.quarantine["column_name"], staged.quarantine["reason"]))
    assert got == {(1, "order_amount", "not_a_number"), (3, "order_id", "duplicate_key"), (4, "order_id", "duplicate_key"),
                   (5, "customer_id", "unknown_customer")}
    assert staged_clean(staged)["order_id"].tolist() == ["O2"]
    assert staged.n_rows_quarantined == 4


def test_customer_ids_are_looked_up_in_their_own_system(orders_dir, tmp_path):
    staged = stream.stage_source("web_orders", orders_spec(), orders_dir, as_of=AS_OF, work_dir=tmp_path, id_lookup=LOOKUP, chunk_rows=10)
    clean = staged_clean(staged)
    assert set(clean["customer_id"]) <= {f"cus_{i}" for i in range(1, 9)}  # never the store's W1 key
    unknown = staged.quarantine[staged.quarantine["reason"] == "unknown_customer"]
    assert set(unknown["raw_value"]) == {"W9", "W10", "S1"}


def test_without_lookup_customer_ids_stay(orders_dir, tmp_path):
    staged = stream.stage_source("web_orders", orders_spec(), orders_dir, as_of=AS_OF, work_dir=tmp_path, chunk_rows=10)
    assert_same(staged, whole_file("web_orders", orders_spec(), orders_dir, None))
    assert "unknown_customer" not in set(staged.quarantine["reason"])


def test_header_only_file(tmp_path):
    (tmp_path / "orders.csv").write_text(HEADER, encoding="utf-8")
    with pytest.raises(EmptySourceError, match=r"orders\.csv: source 'web_orders' \(table 'orders'\) has no rows"):
        stream.stage_source("web_orders", orders_spec(), tmp_path, as_of=AS_OF, work_dir=tmp_path, id_lookup=LOOKUP, chunk_rows=5)
    spec = orders_spec() | {"may_be_empty": True}
    staged = stream.stage_source("web_orders", spec, tmp_path, as_of=AS_OF, work_dir=tmp_path, id_lookup=LOOKUP, chunk_rows=5)
    assert_same(staged, whole_file("web_orders", spec, tmp_path, LOOKUP))
    assert staged.n_rows_in == 0 and staged.quarantine.empty


def test_staged_file_has_the_whole_contract(orders_dir, tmp_path):
    staged = stream.stage_source("web_orders", orders_spec(), orders_dir, as_of=AS_OF, work_dir=tmp_path, id_lookup=LOOKUP, chunk_rows=10)
    with duckdb.connect() as con:
        columns = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{staged.clean_path}')").df()
    contract = schema.get_table("orders")
    assert columns["column_name"].tolist() == contract.column_names
    assert columns["column_type"].tolist() == [c.duckdb_type for c in contract.columns]


def test_read_source_chunks_are_slices_of_read_source(orders_dir):
    whole = sources.read_source("web_orders", orders_spec(), orders_dir)
    chunks = list(sources.read_source_chunks("web_orders", orders_spec(), orders_dir, chunk_rows=7))
    assert [len(c) for c in chunks] == [7] * 11 + [3]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    assert chunks[3].attrs == whole.attrs


def test_read_source_chunks_missing_required_column_names_file_and_column(tmp_path):
    (tmp_path / "orders.csv").write_text(dirty_orders().replace("order_time", "ordered", 1), encoding="utf-8")
    with pytest.raises(sources.SourceError, match=r"orders\.csv.*order_time"):
        next(sources.read_source_chunks("web_orders", orders_spec(), tmp_path, chunk_rows=7))


def test_build_leaves_no_staging_files(tmp_path, monkeypatch, orders_dir):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    raw = paths.raw_dir("mini")
    raw.mkdir(parents=True)
    (raw / "web_orders.csv").write_text(dirty_orders(), encoding="utf-8")
    (raw / "web_signups.csv").write_text(
        "account_id,name,email,mobile,gender,birthday,province,city,utm_source,signup_time\n"
        + "".join(f"W{i},张{i},w{i}@qq.com,,F,1990-01-02,,,social,2024-01-01T08:00:00Z\n" for i in range(1, 9)),
        encoding="utf-8",
    )
    import yaml

    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": {k: SOURCE_MAP[k] for k in ("web_signups", "web_orders")}}, allow_unicode=True), encoding="utf-8")
    result = pipeline.build_clean_warehouse(sources_file=sources_file, dataset="mini", as_of=AS_OF, quarantine_threshold=1.0)
    assert result.row_counts["is_balanced"].all()
    assert set(result.peak_rss_mb) == set(result.timings) and all(v > 0 for v in result.peak_rss_mb.values())
    assert [p.name for p in paths.warehouse_path("mini").parent.iterdir()] == ["mini.duckdb"]


# ------------------------------------------------------------------------------------- demo data

FACT_CSV_SOURCES = [name for name, spec in SOURCE_MAP.items() if spec["format"] == "csv" and spec["table"] != "customers"]


@pytest.fixture(scope="module")
def demo_lookup(demo_home):
    """``system``, ``source_customer_id``, ``customer_key`` of the demo's resolved customers."""
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as con:
        lineage = con.execute("SELECT source, source_customer_id, customer_key FROM customer_lineage").df()
    systems = {name: spec["constants"]["source"] for name, spec in SOURCE_MAP.items() if spec["table"] == "customers"}
    return pd.DataFrame({"system": lineage["source"].map(systems), "source_customer_id": lineage["source_customer_id"],
                         "customer_key": lineage["customer_key"]})


@pytest.mark.slow
@pytest.mark.parametrize("name", FACT_CSV_SOURCES)
def test_demo_sources_chunked_equal_whole_file(demo_home, demo_lookup, tmp_path, name):
    spec = SOURCE_MAP[name]
    staged = stream.stage_source(name, spec, paths.raw_dir(), as_of=AS_OF, work_dir=tmp_path, id_lookup=demo_lookup, chunk_rows=997)
    reference = whole_file(name, spec, paths.raw_dir(), demo_lookup)
    assert_same(staged, reference)
    if name in ("web_orders", "store_sales"):
        assert staged.n_rows_in > 5 * 997 and not reference[0].empty  # several chunks, planted dirt quarantined


def test_text_columns_without_values_stay_text_for_duckdb():
    from crm_analytics.cleansing import duck

    frame = pd.DataFrame({"phone": pd.Series([None, None], dtype="string"), "note": [None, None], "n": pd.array([None, None], dtype="Int64")})
    table = duck.arrow(frame)
    assert [str(t) for t in table.schema.types] in (["string", "string", "int64"], ["large_string", "string", "int64"])
    with duckdb.connect() as con:
        con.register("t", table)
        assert con.execute("SELECT levenshtein(phone, note) FROM t").fetchall() == [(None,), (None,)]


ANONYMOUS = (HEADER + "O1,W1,2024-03-01T10:00:00Z,10,CNY,0,web,false\n" + "O2,,2024-03-01T11:00:00Z,20,CNY,0,web,false\n"
             + "O3,W9,2024-03-01T12:00:00Z,30,CNY,0,web,false\n")  # a customer, no customer, an unknown customer


def test_an_order_without_a_customer_is_kept_anonymous_and_an_unknown_customer_quarantined(tmp_path):
    (tmp_path / "orders.csv").write_text(ANONYMOUS, encoding="utf-8")
    staged = stream.stage_source("web_orders", orders_spec(), tmp_path, as_of=AS_OF, work_dir=tmp_path, id_lookup=LOOKUP, chunk_rows=2)
    assert_same(staged, whole_file("web_orders", orders_spec(), tmp_path, LOOKUP))
    clean = as_objects(staged_clean(staged)).set_index("order_id")
    assert clean["customer_id"].to_dict() == {"O1": "cus_1", "O2": None}
    assert staged.quarantine[["source_row", "column_name", "reason"]].values.tolist() == [[3, "customer_id", "unknown_customer"]]


def anonymous_orders_parquet(folder) -> dict:
    """The ``ANONYMOUS`` orders as a typed Parquet file and its source spec (validated by ``bulk``)."""
    frame = pd.DataFrame({"order_no": ["O1", "O2", "O3"], "account_id": ["W1", None, "W9"],
                          "order_time": pd.to_datetime(["2024-03-01 10:00", "2024-03-01 11:00", "2024-03-01 12:00"]),
                          "amount": [10.0, 20.0, 30.0], "platform": ["web"] * 3})
    frame.to_parquet(folder / "orders.parquet", index=False)
    columns = {"order_id": "order_no", "customer_id": "account_id", "order_time": "order_time", "order_amount": "amount", "channel": "platform"}
    return {"table": "orders", "format": "parquet", "path": "orders.parquet", "columns": columns, "constants": {"source": "web"}}


@pytest.mark.parametrize("policy", ["keep", "quarantine"])
def test_bulk_keeps_or_quarantines_an_order_without_a_customer_as_the_dataset_says(tmp_path, policy):
    from dataclasses import replace

    from crm_analytics import datasets
    from crm_analytics.cleansing import bulk

    dataset = replace(datasets.load_dataset("demo"), anonymous_orders=policy)
    staged = bulk.validate_parquet("orders", anonymous_orders_parquet(tmp_path), tmp_path, as_of=AS_OF, id_lookup=LOOKUP,
                                   work_dir=tmp_path, dataset=dataset)
    clean = as_objects(staged_clean(staged)).set_index("order_id")["customer_id"].to_dict()
    reasons = staged.quarantine[["source_row", "column_name", "reason"]].values.tolist()
    if policy == "keep":
        assert clean == {"O1": "cus_1", "O2": None} and reasons == [[3, "customer_id", "unknown_customer"]]
    else:
        assert clean == {"O1": "cus_1"} and reasons == [[2, "customer_id", "missing_required"], [3, "customer_id", "unknown_customer"]]
    assert staged.n_rows_in == staged.n_rows_clean + staged.n_rows_quarantined == 3


@pytest.mark.parametrize("chunk_rows", [7, 1000])
def test_spilled_then_linked_in_another_process_equals_staged_at_once(orders_dir, tmp_path, chunk_rows):
    # the build spills a source before the customers are resolved and links it afterwards, in another worker process
    import pickle

    spilled = stream.spill_source("web_orders", orders_spec(), orders_dir, as_of=AS_OF, work_dir=tmp_path, chunk_rows=chunk_rows)
    assert not (tmp_path / "web_orders.parquet").exists(), "nothing is staged before the link"
    linked = stream.link_spilled(pickle.loads(pickle.dumps(spilled)), work_dir=tmp_path, id_lookup=LOOKUP)
    assert_same(linked, whole_file("web_orders", orders_spec(), orders_dir, LOOKUP))
    assert "unknown_customer" in set(linked.quarantine["reason"])


def test_spilled_order_lines_are_checked_against_the_orders_given_at_the_link(tmp_path):
    (tmp_path / "items.csv").write_text("order_id,line_number,product_id,quantity,unit_price\nO1,1,P1,1,2.5\nO9,1,P1,1,2.5\n", encoding="utf-8")
    (tmp_path / "orders.csv").write_text(HEADER + "O1,W1,2024-03-01T10:00:00Z,1,CNY,0,web,false\n", encoding="utf-8")
    orders = stream.stage_source("web_orders", orders_spec(), tmp_path, as_of=AS_OF, work_dir=tmp_path, id_lookup=LOOKUP)
    spec = {"table": "order_items", "path": "items.csv", "format": "csv", "encoding": "utf-8",
            "columns": {c: c for c in ("order_id", "line_number", "product_id", "quantity")} | {"unit_price_amount": "unit_price"}}
    spilled = stream.spill_source("order_items", spec, tmp_path, as_of=AS_OF, work_dir=tmp_path)
    linked = stream.link_spilled(spilled, work_dir=tmp_path, known_orders=[orders.clean_path])
    assert staged_clean(linked)["order_id"].tolist() == ["O1"]
    assert linked.quarantine[["source_row", "reason"]].values.tolist() == [[2, "unknown_order"]]


def test_bulk_links_an_id_held_in_several_systems_to_its_first_occurrence(tmp_path):
    # every id is held by the web and, later in the lookup, by the store: the web's customer is the one linked,
    # as the pandas path links it, however the engine splits the lookup between its threads
    from crm_analytics.cleansing import bulk

    n = 200_000
    ids = [f"W{i}" for i in range(1, n + 1)]
    lookup = pd.DataFrame({"system": ["web"] * n + ["store"] * n, "source_customer_id": ids + ids,
                           "customer_key": [f"cus_{i}" for i in range(1, n + 1)] + [f"cus_store_{i}" for i in range(1, n + 1)]})
    spec = anonymous_orders_parquet(tmp_path)
    staged = bulk.validate_parquet("orders", spec, tmp_path, as_of=AS_OF, id_lookup=lookup.sample(frac=1.0, random_state=0).sort_values(
        "system", ascending=False, kind="stable"), work_dir=tmp_path)
    clean = as_objects(staged_clean(staged)).set_index("order_id")["customer_id"].to_dict()
    assert clean == {"O1": "cus_1", "O2": None, "O3": "cus_9"}
