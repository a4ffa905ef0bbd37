"""The engine-side aggregations on DuckDB and on a local Spark, side by side, on one demo warehouse.

Every aggregation that ``tests/test_spark_equivalence.py`` checks for equal results (RFM, behavioural
features, cohorts, retention, funnels, the KPI catalogue, the sales cube, attribution journeys) is
timed on the DuckDB warehouse file and on Spark (``local[N]``) reading the same warehouse's Parquet
export, as the ``backend=pyspark`` path of the notebooks does. Per aggregation: one untimed warm-up
on each engine (Spark compiles its plans, DuckDB fills its caches), then ``--repeats`` timed runs
whose median is reported, with the ratio Spark / DuckDB. Spark's start-up and the Parquet export
are timed once, separately. The results of the two engines are compared as in the equivalence test,
so a timing is never of a wrong answer.

The warehouse is either given (``--warehouse``, for instance the one ``bench_pipeline.py`` leaves in
its home) or generated: ``--customers N`` builds a demo of N customers and cleanses it in a scratch
home. ``--driver-memory`` sets the Spark driver's heap (local mode: executors run inside it).

    python benchmarks/bench_spark.py --customers 50000
    python benchmarks/bench_spark.py --warehouse /scratch/pipeline-1m/data/warehouse/demo.duckdb --driver-memory 12g
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from _measure import time_repeats  # noqa: E402


def build_warehouse(customers: int, home: Path) -> Path:
    """Generate a demo of ``customers`` customers in ``home`` and cleanse it; return the warehouse file."""
    os.environ["CRM_ANALYTICS_HOME"] = str(home)
    from crm_analytics import demo, paths
    from crm_analytics.cleansing import build_clean_warehouse

    demo.generate(customers, seed=7)
    build_clean_warehouse(as_of=demo.DEFAULT_AS_OF)
    return paths.warehouse_path()


def table_rows(con, names: list[str]) -> dict[str, int]:
    """Row counts of the warehouse tables ``names`` (read on ``con``)."""
    return {name: int(con.table(name).count().execute()) for name in names}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--warehouse", type=Path, help="an existing demo warehouse (.duckdb)")
    source.add_argument("--customers", type=int, help="generate and cleanse a demo of this many customers")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--driver-memory", default="8g", help="Spark driver heap (default 8g)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per aggregation and engine (default 1)")
    parser.add_argument("--only", nargs="*", help="aggregation names (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    os.environ["PYSPARK_SUBMIT_ARGS"] = f"--driver-memory {args.driver_memory} pyspark-shell"
    warehouse = args.warehouse or build_warehouse(args.customers, Path(tempfile.mkdtemp(prefix="bench_spark_")))

    from test_spark_equivalence import AGGREGATIONS, assert_equivalent

    from crm_analytics import engine, kpi

    duck = engine.connect("duckdb", warehouse_path=warehouse)
    rows = table_rows(duck, ["customers", "orders", "order_items", "web_events", "touchpoints"])
    print(f"warehouse {warehouse}: " + ", ".join(f"{n} {v:,}" for n, v in rows.items()), flush=True)
    segments, _ = kpi.customer_segments(duck.table("customers").select("customer_id", "acquisition_channel").to_pandas())

    start = time.perf_counter()
    spark = engine.connect("pyspark", warehouse_path=warehouse, spark_master=args.master)
    startup_s = time.perf_counter() - start
    print(f"Spark {args.master} (driver {args.driver_memory}): session and Parquet export {startup_s:.1f} s", flush=True)

    names = args.only or sorted(AGGREGATIONS)
    results = []
    print(f"{'aggregation':28} {'duckdb s':>9} {'spark s':>9} {'spark/duckdb':>13}", flush=True)
    for name in names:
        compute, keys = AGGREGATIONS[name]
        on_duck, on_spark = (time_repeats(lambda con=con: compute(con, segments), args.repeats) for con in (duck, spark))
        duck_s, spark_s = on_duck.pop("median_s"), on_spark.pop("median_s")
        on_duck, on_spark = on_duck["result"], on_spark["result"]
        assert_equivalent(on_duck, on_spark, keys=keys)
        results.append({"aggregation": name, "duckdb_s": duck_s, "spark_s": spark_s, "ratio": spark_s / duck_s})
        print(f"{name:28} {duck_s:9.2f} {spark_s:9.2f} {spark_s / duck_s:12.1f}x", flush=True)
    total_duck = sum(r["duckdb_s"] for r in results)
    total_spark = sum(r["spark_s"] for r in results)
    print(f"{'total':28} {total_duck:9.2f} {total_spark:9.2f} {total_spark / total_duck:12.1f}x")
    if args.json:
        summary = {"warehouse": str(warehouse), "rows": rows, "master": args.master, "startup_s": startup_s, "results": results}
        args.json.write_text(json.dumps(summary, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
