"""Benchmark: the monthly retention matrix, crm_analytics (Ibis on DuckDB) vs idiomatic pandas vs hand-written polars.

Every engine starts from the same Parquet file of synthetic orders and returns the
same matrix (share of each monthly acquisition cohort active in each month since
acquisition; refunds are not activity); the results are checked to agree. Each
engine runs in its own subprocess, so peak memory (resident set sampled every 2 ms,
above the process after its imports and one warm-up run) is measured per engine. Engines run in
``--rounds`` rounds in rotated order (a fresh process each time); the median wall
time is over all ``--rounds`` x ``--repeats`` timed runs.

    python benchmarks/bench_cohort.py --orders 1000000          # quick
    python benchmarks/bench_cohort.py --orders 10000000         # the issue's size
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ENGINES = ("crm_analytics", "pandas", "polars")


def make_orders(n_orders: int, *, seed: int = 0) -> pd.DataFrame:
    """Synthetic orders over three years: ``customer_id``, ``order_time``, ``order_amount`` (5% refunds)."""
    rng = np.random.default_rng(seed)
    n_customers = max(n_orders // 10, 1)
    customer = rng.integers(0, n_customers, n_orders)
    start = np.datetime64("2022-01-01T00:00:00", "s")
    # customers arrive over the period and buy after their arrival
    arrival = rng.integers(0, 3 * 365 * 86400, n_customers)
    offset = arrival[customer] + rng.exponential(120 * 86400, n_orders).astype("int64")
    offset = np.minimum(offset, 3 * 365 * 86400 - 1)
    amount = np.round(rng.gamma(2.0, 80.0, n_orders), 2)
    amount[rng.random(n_orders) < 0.05] *= -1
    return pd.DataFrame(
        {
            "customer_id": pd.Series(customer).map("C{:07d}".format),
            "order_time": (start + offset.astype("timedelta64[s]")).astype("datetime64[us]"),
            "order_amount": amount,
        }
    )


def run_crm_analytics(path: str) -> pd.DataFrame:
    import ibis

    from crm_analytics import cohort

    con = ibis.duckdb.connect()
    return cohort.retention_matrix(con.read_parquet(path), period="M")


def run_pandas(path: str) -> pd.DataFrame:
    """Idiomatic pandas, vectorised: months as integers (year * 12 + month), distinct customer-months,
    the first month per customer, counts per (cohort, months since) unstacked."""
    orders = pd.read_parquet(path)
    orders["month"] = orders["order_time"].dt.year * 12 + orders["order_time"].dt.month - 1
    purchases = orders[orders["order_amount"] > 0]
    cohort_month = purchases.groupby("customer_id")["month"].min().rename("cohort")
    active = purchases[["customer_id", "month"]].drop_duplicates().join(cohort_month, on="customer_id")
    active["period_number"] = active["month"] - active["cohort"]
    counts = active.groupby(["cohort", "period_number"]).size().unstack(fill_value=0)
    sizes = cohort_month.value_counts()
    matrix = counts.div(sizes, axis=0)
    last = orders["month"].max()
    observed = (last - matrix.index.to_numpy()[:, None]) >= matrix.columns.to_numpy()[None, :]
    matrix = matrix.where(observed)
    matrix.index = pd.to_datetime({"year": matrix.index // 12, "month": matrix.index % 12 + 1, "day": 1})
    return matrix


def run_polars(path: str) -> pd.DataFrame:
    import polars as pl

    orders = pl.scan_parquet(path).with_columns(
        month=pl.col("order_time").dt.year() * 12 + pl.col("order_time").dt.month() - 1
    )
    last = orders.select(pl.col("month").max()).collect().item()
    active = orders.filter(pl.col("order_amount") > 0).select("customer_id", "month").unique()
    active = active.with_columns(cohort=pl.col("month").min().over("customer_id"))
    cells = (
        active.group_by("cohort", pl.col("month") - pl.col("cohort"))
        .agg(n_active=pl.len())
        .rename({"month": "period_number"})
        .collect()
    )
    sizes = cells.filter(pl.col("period_number") == 0).select("cohort", size="n_active")
    cells = cells.join(sizes, on="cohort").with_columns(value=pl.col("n_active") / pl.col("size"))
    wide = cells.pivot(on="period_number", index="cohort", values="value", sort_columns=True).sort("cohort")
    matrix = wide.to_pandas().set_index("cohort")
    matrix.columns = matrix.columns.astype("int64")
    matrix = matrix.reindex(columns=range(int(matrix.columns.max()) + 1)).fillna(0.0)
    observed = (last - matrix.index.to_numpy()[:, None]) >= matrix.columns.to_numpy()[None, :]
    matrix = matrix.where(observed)
    matrix.index = pd.to_datetime({"year": matrix.index // 12, "month": matrix.index % 12 + 1, "day": 1})
    return matrix


RUNNERS = {"crm_analytics": run_crm_analytics, "pandas": run_pandas, "polars": run_polars}


def worker(engine: str, path: str, repeats: int, result_path: str) -> None:
    """Run one engine ``repeats`` times in this process; write timings, peak memory and the matrix."""
    import ibis  # noqa: F401  (imports count in the baseline, not in the peak)
    import polars  # noqa: F401

    from _measure import time_repeats

    figures = time_repeats(lambda: RUNNERS[engine](path), repeats)  # one untimed warm-up first
    matrix = figures["result"]
    matrix.index = pd.DatetimeIndex(matrix.index).astype("datetime64[us]")
    matrix.index.name = "cohort_date"
    matrix.columns = [str(c) for c in matrix.columns]
    matrix.to_parquet(result_path)
    print(json.dumps({"engine": engine, "times": figures["times_s"], "peak_mib": figures["peak_mb"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine and round")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per engine, in rotated order")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.path, args.repeats, args.result)
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "orders.parquet")
        make_orders(args.orders).to_parquet(path)
        times, peaks, matrices = {e: [] for e in ENGINES}, {e: [] for e in ENGINES}, {}
        for round_number in range(args.rounds):
            shift = round_number % len(ENGINES)  # rotate the order so a noisy moment hits every engine alike
            for engine in ENGINES[shift:] + ENGINES[:shift]:
                result = str(Path(tmp) / f"{engine}.parquet")
                cmd = [sys.executable, __file__, "--worker", engine, "--path", path, "--repeats", str(args.repeats), "--result", result]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
                record = json.loads(out.stdout.strip().splitlines()[-1])
                times[engine] += record["times"]
                peaks[engine].append(record["peak_mib"])
                matrices[engine] = pd.read_parquet(result)
        rows = [{"engine": e, "median_s": statistics.median(times[e]), "peak_mib": max(peaks[e])} for e in ENGINES]
    for engine in ENGINES[1:]:
        pd.testing.assert_frame_equal(matrices["crm_analytics"], matrices[engine], check_dtype=False, check_names=False)
    table = pd.DataFrame(rows)
    polars_time = table.loc[table["engine"] == "polars", "median_s"].item()
    table["ratio_to_polars"] = table["median_s"] / polars_time
    print(f"monthly retention matrix, {args.orders:,} orders, median of {args.rounds} rounds x {args.repeats} runs (results identical)")
    print(table.to_markdown(index=False, floatfmt=".2f") if _has_tabulate() else table.round(2).to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
