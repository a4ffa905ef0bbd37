"""The package's order- and event-level aggregations give the same results on DuckDB and on Spark.

One generated 2,000-customer demo warehouse, opened twice with ``engine.connect``: as the
DuckDB file and through a local Spark (``local[2]``) reading its Parquet export. Every
aggregation is computed on both; counts, keys and timestamps must be identical, sums and
means equal within 1e-9 relative. The tests marked ``spark`` start one SparkSession for the
module (``pytest -m spark`` runs them alone); the unmarked ones check the engine switch
without Spark.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest

from crm_analytics import attribution, cohort, engine, funnel, kpi, paths, schema, segmentation
from crm_analytics.cleansing import resolve

DEMO_CUSTOMERS = 2_000
DEMO_SEED = 7
SPARK_MASTER = "local[2]"
AS_OF = "2025-09-30"
STEPS = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]
RELATIVE_TOLERANCE = 1e-9

# PySpark 4.0 converts results with a keyword pandas 3 deprecates; the results are right.
pytestmark = pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def warehouse_file(tmp_path_factory) -> str:
    """A cleansed 2,000-customer demo warehouse in its own project home (the session's home is left alone)."""
    from crm_analytics import demo
    from crm_analytics.cleansing import build_clean_warehouse

    home = tmp_path_factory.mktemp("spark_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(paths.HOME_ENV, str(home))
        demo.generate(DEMO_CUSTOMERS, seed=DEMO_SEED)
        build_clean_warehouse(as_of=demo.DEFAULT_AS_OF)
        return str(paths.warehouse_path())


@pytest.fixture(scope="module")
def duck(warehouse_file):
    return engine.connect("duckdb", warehouse_path=warehouse_file)


@pytest.fixture(scope="module")
def spark(warehouse_file):
    """The same warehouse on a local Spark; one session for the module, stopped at its end."""
    pytest.importorskip("pyspark", reason="the spark tests need PySpark: pip install -e '.[spark]'")
    con = engine.connect("pyspark", warehouse_path=warehouse_file, spark_master=SPARK_MASTER)
    yield con
    engine.spark_session(SPARK_MASTER).stop()


@pytest.fixture(scope="module")
def segments(duck) -> pd.DataFrame:
    """Customer segments for the KPI breakdowns (a small pandas table, as the notebooks pass it)."""
    frame, _ = kpi.customer_segments(duck.table("customers").select("customer_id", "acquisition_channel").to_pandas())
    return frame


# --------------------------------------------------------------------------- comparison


def _normalised(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows sorted by ``keys``, a fresh index, timestamps at microseconds (Spark hands back nanoseconds)."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_dtype(out[column].dtype):
            out[column] = out[column].astype("datetime64[us]")
    return out.sort_values(keys, kind="stable").reset_index(drop=True) if keys else out.reset_index(drop=True)


def assert_equivalent(on_duckdb: pd.DataFrame, on_spark: pd.DataFrame, *, keys: list[str] | None = None) -> None:
    """Same columns and rows; float columns within ``RELATIVE_TOLERANCE`` of each value (or of the column's
    largest value, for values near zero), every other column identical."""
    assert len(on_duckdb) > 0, "the comparison is empty: it would prove nothing"
    assert list(on_spark.columns) == list(on_duckdb.columns)
    assert len(on_spark) == len(on_duckdb), f"{len(on_duckdb)} rows on duckdb, {len(on_spark)} on spark"
    left, right = _normalised(on_duckdb, keys or []), _normalised(on_spark, keys or [])
    for column in left.columns:
        a, b = left[column], right[column]
        if pd.api.types.is_float_dtype(a.dtype) or pd.api.types.is_float_dtype(b.dtype):
            expected = a.to_numpy(dtype="float64", na_value=np.nan)
            # a sum that cancels to zero (refunds against purchases) keeps a residue of the summation order
            scale = np.nanmax(np.abs(expected), initial=0.0)
            np.testing.assert_allclose(
                b.to_numpy(dtype="float64", na_value=np.nan), expected,
                rtol=RELATIVE_TOLERANCE, atol=RELATIVE_TOLERANCE * scale, equal_nan=True, err_msg=f"column {column!r}",
            )
        else:
            pd.testing.assert_series_equal(b, a, check_dtype=False, check_exact=True, check_categorical=False, obj=f"column {column!r}")


# --------------------------------------------------------------------------- the aggregations

# name -> (computation on a connection, sort keys of the result; None: the function's own order)
AGGREGATIONS = {
    "rfm": (lambda con, seg: segmentation.rfm(con.table("orders"), as_of=AS_OF), None),
    "rfm_totals": (
        lambda con, seg: segmentation.rfm_totals(con.table("orders"), as_of=AS_OF).to_pandas(),
        ["customer_id"],
    ),
    "customer_features": (
        lambda con, seg: segmentation.customer_features(
            con.table("orders"), as_of=AS_OF, order_items=con.table("order_items"),
            products=con.table("products"), support_tickets=con.table("support_tickets"),
        ),
        None,
    ),
    "cohort_table_week": (lambda con, seg: cohort.cohort_table(con.table("orders"), period="W"), None),
    "retention_matrix_month": (
        lambda con, seg: cohort.retention_matrix(con.table("orders"), period="M", value="customers").reset_index(),
        None,
    ),
    "retention_curves_ltv": (
        lambda con, seg: cohort.retention_curves(con.table("orders"), con.table("customers"), period="Q", value="ltv"),
        ["acquisition_channel", "period_number"],
    ),
    "funnel_by_platform_7d": (
        lambda con, seg: funnel.funnel(con.table("web_events"), STEPS, by="platform", window="7D"),
        ["platform", "step_number"],
    ),
    "session_funnel_any_order": (
        lambda con, seg: funnel.session_funnel(con.table("web_events"), STEPS, mode="any_order"),
        ["step_number"],
    ),
    "time_to_convert": (lambda con, seg: funnel.time_to_convert(con.table("web_events"), STEPS), ["customer_id"]),
    "kpis_month": (
        lambda con, seg: kpi.compute_kpis(
            {name: con.table(name) for name in kpi.required_tables(kpi.load_catalogue())}, kpi.load_catalogue(),
            grain="month", start="2025-04-01", end="2025-10-01", dimensions=(),
        ),
        ["kpi_id", "period_start", "segment", "channel"],
    ),
    "sales_cube": (
        lambda con, seg: kpi.sales_cube(con.table("orders"), seg, start=pd.Timestamp("2025-01-01"), end=pd.Timestamp("2025-10-01")),
        None,
    ),
    "touch_journeys": (
        lambda con, seg: attribution.build_touch_journeys(con.table("touchpoints"), con.table("orders")),
        ["customer_id", "journey_id", "position"],
    ),
    "channel_economics": (
        lambda con, seg: attribution.channel_economics(
            attribution.compare_models(attribution.build_touch_journeys(con.table("touchpoints"), con.table("orders"))),
            con.table("campaigns"),
        ),
        ["channel"],
    ),
}


@pytest.mark.spark
@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_aggregation_is_the_same_on_duckdb_and_spark(name, duck, spark, segments):
    compute, keys = AGGREGATIONS[name]
    assert_equivalent(compute(duck, segments), compute(spark, segments), keys=keys)


@pytest.mark.spark
def test_scalar_aggregations_are_the_same(duck, spark):
    assert kpi.window_end(spark.table("orders")) == kpi.window_end(duck.table("orders"))
    touches = attribution.build_touch_journeys(duck.table("touchpoints"), duck.table("orders"))
    on_duckdb = attribution.baseline_conversion_rate(touches, duck.table("orders"))
    assert 0 < on_duckdb < 1
    assert attribution.baseline_conversion_rate(touches, spark.table("orders")) == on_duckdb


@pytest.mark.spark
def test_spark_sees_every_canonical_table_with_the_warehouse_columns_and_rows(duck, spark):
    for name, contract in schema.TABLES.items():
        table = spark.table(name)
        assert list(table.columns) == contract.column_names, name
        assert int(table.count().to_pandas()) == int(duck.table(name).count().to_pandas()), name
    timestamps = spark.table("orders").schema()["order_time"]
    assert timestamps.is_timestamp() and timestamps.timezone is None, "naive timestamps must stay naive on Spark"


@pytest.mark.spark
def test_spark_tables_run_on_spark_and_entity_resolution_refuses_them(spark, duck):
    orders = spark.table("orders")
    assert engine.backend_name(orders) == "pyspark"
    customers = spark.table("customers")
    with pytest.raises(engine.UnsupportedBackendError, match=r"entity-resolution blocking.*duckdb backend only.*'pyspark'"):
        resolve.candidate_pairs(customers)
    with pytest.raises(engine.UnsupportedBackendError, match=r"entity resolution.*duckdb backend only.*'pyspark'"):
        resolve.resolve_entities(customers)
    engine.require_duckdb(duck.table("orders"), operation="entity-resolution blocking")


@pytest.mark.spark
def test_a_session_on_another_master_is_refused_clearly(spark):
    with pytest.raises(ValueError, match=r"already running.*local\[2\]"):
        engine.spark_session("local[1]")


# --------------------------------------------------------------------------- the switch without Spark


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown backend 'polars'.*\['duckdb', 'pyspark'\]"):
        engine.connect("polars")


def test_backend_names_are_checked_without_case():
    assert engine.check_backend(" PySpark ") == "pyspark"
    with pytest.raises(engine.UnsupportedBackendError, match="'pyspark'"):
        engine.require_duckdb("pyspark", operation="entity-resolution blocking")
    engine.require_duckdb(pd.DataFrame({"customer_id": ["a"]}), operation="entity-resolution blocking")


def test_missing_pyspark_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(engine.EngineUnavailableError, match=r"pip install.*\[spark\].*openjdk"):
        engine.spark_session("local[1]")


def test_missing_java_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(engine.EngineUnavailableError, match=r"Java runtime.*openjdk-17-jre-headless"):
        engine.check_java()


def test_local_masters_get_few_shuffle_partitions_and_clusters_keep_theirs():
    local = engine.session_config("local[2]")
    assert local["spark.sql.session.timeZone"] == "UTC"
    assert local["spark.sql.shuffle.partitions"] == "4"
    assert engine.session_config("local")["spark.sql.shuffle.partitions"] == "2"
    cluster = engine.session_config("spark://head:7077")
    assert cluster["spark.sql.session.timeZone"] == "UTC"
    assert "spark.sql.shuffle.partitions" not in cluster and "spark.ui.enabled" not in cluster


def test_parquet_export_is_refreshed_only_when_the_warehouse_is_newer(tmp_path):
    from crm_analytics import warehouse

    location = tmp_path / "warehouse" / "crm.duckdb"
    orders = pd.DataFrame(
        {"order_id": ["o1"], "customer_id": ["c1"], "order_time": pd.to_datetime(["2025-01-02 03:04:05"]),
         "order_amount": [10.5], "currency": ["CNY"], "discount_amount": [0.0], "channel": ["web"],
         "is_refund": [False], "source": ["web"]}
    )
    warehouse.write_tables({"orders": orders}, path=location)
    files = engine.export_parquet(location)
    assert files == {"orders": location.parent / "parquet" / "orders.parquet"}
    back = pd.read_parquet(files["orders"])
    assert back["order_time"].iloc[0] == pd.Timestamp("2025-01-02 03:04:05")
    written = files["orders"].stat().st_mtime_ns
    engine.export_parquet(location)
    assert files["orders"].stat().st_mtime_ns == written, "an up-to-date export must not be rewritten"
    warehouse.write_tables({"orders": orders.assign(order_amount=[20.0])}, path=location)
    os.utime(location, ns=(written + 10**9, written + 10**9))
    engine.export_parquet(location)
    assert pd.read_parquet(files["orders"])["order_amount"].tolist() == [20.0]


def test_export_of_a_missing_warehouse_says_how_to_build_it(tmp_path):
    from crm_analytics.warehouse import WarehouseMissingError

    with pytest.raises(WarehouseMissingError, match="build-warehouse"):
        engine.export_parquet(tmp_path / "none.duckdb")
