"""Benchmark ``crm_analytics.segmentation.rfm`` against pandas, polars and lifetimes on the same orders.

Each contender runs in its own process, starting from the data in its native
form (loading is not timed):

``crm_analytics``
    ``rfm(con.table("orders"), as_of=...)`` on a DuckDB warehouse file opened
    read-only through Ibis (the project's architecture: Ibis aggregation in
    DuckDB, then scoring and the segment map in NumPy).
``polars``
    a hand-written lazy polars query computing the same columns (R/F/M, min-rank
    quantile scores, the R x FM segment map), sorted by customer.
``pandas``
    idiomatic pandas: ``groupby().agg()`` and ``rank(method="min")``.
``lifetimes``
    ``lifetimes.utils.summary_data_from_transaction_data`` (R/F/M only, no
    scores). lifetimes is archived and fails on current pandas, so it runs under
    a separate interpreter with an older pandas (``--lifetimes-python``, default
    ``.venv-bench/bin/python`` when it exists); it is reported as skipped with
    the reason otherwise.

Contenders run in ``--rounds`` rounds, in rotated order, each round in a fresh
process with ``--repeats`` timed runs after one warm-up run, so that a busy
machine disturbs them alike. Reported per contender: median wall time over all
timed runs, peak extra memory during the runs (the largest of the rounds) (resident set size sampled every 2 ms, minus the size
before the first run; for DuckDB this includes its buffer pool), and the ratios
to polars and to lifetimes.

Data: ``--source demo`` (default) takes the orders the demo generator simulates
for ``--customers`` persons (``crm_analytics.demo.world.simulate``, in memory, no
exports written); ``--source synthetic`` (or when the demo is unavailable) draws
``--orders`` orders with NumPy: customers with gamma-distributed order counts,
times over three years, amounts from a log-normal, 3 % refunds.

Example (the full size the issue names; about a minute and several GB)::

    python benchmarks/bench_rfm.py --orders 10000000 --customers 1000000

Small run::

    python benchmarks/bench_rfm.py --orders 1000000 --customers 100000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import PeakMemory

AS_OF = "2026-01-01"  # the day after the demo export date: every demo order counts
N_BINS = 5
ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("crm_analytics", "polars", "pandas", "lifetimes")

# ------------------------------------------------------------------ data


def synthetic_orders(n_orders: int, n_customers: int, *, seed: int = 42):
    """Return a pandas DataFrame of ``n_orders`` orders of ``n_customers`` customers (canonical columns)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    weights = rng.gamma(0.8, 1.0, n_customers)
    customer = rng.choice(n_customers, size=n_orders, p=weights / weights.sum())
    seconds = rng.integers(0, 3 * 365 * 86_400, n_orders)
    amount = np.round(rng.lognormal(5.0, 0.8, n_orders), 2)
    amount = np.where(rng.random(n_orders) < 0.03, -amount, amount)
    ids = np.char.add("C", np.char.zfill(customer.astype(str), 8))
    return pd.DataFrame(
        {
            "order_id": pd.array(np.char.add("O", np.arange(n_orders).astype(str)), dtype="string"),
            "customer_id": pd.array(ids, dtype="string"),
            "order_time": pd.Timestamp("2023-01-01") + pd.to_timedelta(seconds, unit="s"),
            "order_amount": amount,
        }
    )


def demo_orders(n_customers: int, *, seed: int = 42):
    """Orders simulated by the demo generator for ``n_customers`` persons, or ``None`` when it is unavailable.

    The simulated world is used directly (no raw exports are written): one customer
    id per person, order times in local business time, amounts paid (refunds negative).
    """
    try:
        from crm_analytics.demo.world import DEFAULT_AS_OF, simulate
    except ImportError:
        return None
    import numpy as np
    import pandas as pd

    world = simulate(n_customers, seed=seed, start_date="2023-01-01", end_date=str(DEFAULT_AS_OF)[:10])
    orders = world.orders
    local_seconds = orders.time + 8 * 3_600  # Asia/Shanghai, no daylight saving time
    return pd.DataFrame(
        {
            "order_id": pd.array(np.char.add("O", np.arange(len(orders)).astype(str)), dtype="string"),
            "customer_id": pd.array(np.char.add("P", np.char.zfill(orders.person.astype(str), 8)), dtype="string"),
            "order_time": pd.to_datetime(local_seconds, unit="s").astype("datetime64[us]"),
            "order_amount": orders.amount.astype("float64"),
        }
    )


def write_data(folder: Path, orders) -> tuple[Path, Path]:
    """Write the orders as Parquet and as a DuckDB warehouse file; return both paths."""
    import duckdb

    parquet = folder / "orders.parquet"
    orders.to_parquet(parquet, index=False)
    database = folder / "crm.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute(f"CREATE TABLE orders AS SELECT * FROM read_parquet('{parquet}')")
    return parquet, database


# ------------------------------------------------------------------ measurement (runs inside a worker)


def time_runs(func, repeats: int) -> dict:
    """Run ``func`` once to warm up, then ``repeats`` times; return the median and all wall times and the
    peak memory above the warmed-up process (caches filled by the warm-up, e.g. DuckDB's buffer pool,
    are part of the baseline, as the loaded DataFrame is for pandas and polars)."""
    warm_up = func()
    del warm_up
    times = []
    with PeakMemory() as memory:
        for _ in range(repeats):
            start = time.perf_counter()
            result = func()
            times.append(time.perf_counter() - start)
            n_rows = len(result)
            del result
    return {"median_s": statistics.median(times), "times_s": times, "peak_mb": memory.peak_mb, "n_customers": n_rows}


def run_crm_analytics(database: Path, parquet: Path, repeats: int) -> dict:
    import ibis

    sys.path.insert(0, str(ROOT))
    from crm_analytics.segmentation import rfm

    con = ibis.duckdb.connect(str(database), read_only=True)
    orders = con.table("orders")
    return time_runs(lambda: rfm(orders, as_of=AS_OF, n_bins=N_BINS), repeats)


def run_polars(database: Path, parquet: Path, repeats: int) -> dict:
    import datetime as dt

    import polars as pl

    sys.path.insert(0, str(ROOT))
    from crm_analytics.segmentation import SEGMENT_GRID

    grid = pl.Series("segment", SEGMENT_GRID.reshape(-1).tolist())
    as_of = dt.datetime.fromisoformat(AS_OF)
    orders = pl.read_parquet(parquet)

    def score(column: str, *, descending: bool = False) -> pl.Expr:
        below = pl.col(column).rank("min", descending=descending) - 1
        return (1 + below * N_BINS // pl.len()).cast(pl.Int8)

    def query() -> pl.DataFrame:
        is_purchase = pl.col("order_amount") >= 0
        return (
            orders.lazy()
            .filter(pl.col("order_time") <= as_of)
            .group_by("customer_id")
            .agg(
                pl.col("order_time").filter(is_purchase).max().alias("last_order_time"),
                is_purchase.sum().alias("frequency"),
                pl.col("order_amount").sum().alias("monetary"),
            )
            .filter(pl.col("frequency") > 0)
            .with_columns(recency_days=(pl.lit(as_of) - pl.col("last_order_time")).dt.total_days())
            .with_columns(
                r_score=score("recency_days", descending=True),
                f_score=score("frequency"),
                m_score=score("monetary"),
            )
            .with_columns(
                rfm_segment=pl.lit(grid).gather(
                    (pl.col("r_score").cast(pl.Int32) - 1) * 5 + (pl.col("f_score") + pl.col("m_score") + 1) // 2 - 1
                )
            )
            .drop("last_order_time")
            .sort("customer_id")
            .collect()
        )

    return time_runs(query, repeats)


def run_pandas(database: Path, parquet: Path, repeats: int) -> dict:
    import pandas as pd

    sys.path.insert(0, str(ROOT))
    from crm_analytics.segmentation import SEGMENT_GRID

    as_of = pd.Timestamp(AS_OF)
    orders = pd.read_parquet(parquet)

    def score(values: pd.Series, *, ascending: bool = True) -> pd.Series:
        below = values.rank(method="min", ascending=ascending).astype("int64") - 1
        return (1 + below * N_BINS // len(values)).astype("int8")

    def query() -> pd.DataFrame:
        recent = orders[orders["order_time"] <= as_of]
        is_purchase = recent["order_amount"] >= 0
        totals = (
            recent.assign(purchase_time=recent["order_time"].where(is_purchase), is_purchase=is_purchase)
            .groupby("customer_id")
            .agg(last_order_time=("purchase_time", "max"), frequency=("is_purchase", "sum"), monetary=("order_amount", "sum"))
        )
        totals = totals[totals["frequency"] > 0]
        totals["recency_days"] = (as_of - totals["last_order_time"]).dt.days
        totals["r_score"] = score(totals["recency_days"], ascending=False)
        totals["f_score"] = score(totals["frequency"])
        totals["m_score"] = score(totals["monetary"])
        fm = (totals["f_score"].astype("int16") + totals["m_score"] + 1) // 2
        totals["rfm_segment"] = SEGMENT_GRID[totals["r_score"].to_numpy() - 1, fm.to_numpy() - 1]
        return totals.drop(columns="last_order_time").reset_index()

    return time_runs(query, repeats)


def run_lifetimes(database: Path, parquet: Path, repeats: int) -> dict:
    import pandas as pd
    from lifetimes.utils import summary_data_from_transaction_data

    orders = pd.read_parquet(parquet)
    orders["customer_id"] = orders["customer_id"].astype(object)

    def query() -> pd.DataFrame:
        return summary_data_from_transaction_data(
            orders, "customer_id", "order_time", monetary_value_col="order_amount", observation_period_end=AS_OF
        )

    return time_runs(query, repeats)


WORKERS = {"crm_analytics": run_crm_analytics, "polars": run_polars, "pandas": run_pandas, "lifetimes": run_lifetimes}


# ------------------------------------------------------------------ orchestration


def default_lifetimes_python() -> str:
    candidate = ROOT / ".venv-bench" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def run_worker(name: str, python: str, database: Path, parquet: Path, repeats: int, timeout: float) -> dict:
    """Run one contender in a fresh process; return its measurements or ``{"skipped": reason}``."""
    command = [python, __file__, "--worker", name, "--database", str(database), "--parquet", str(parquet), "--repeats", str(repeats)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"failed under {python}: {last_line}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def combine_rounds(rounds: list[dict]) -> dict:
    """Pool the runs of several rounds of one contender: median of every timed run, the largest peak."""
    done = [r for r in rounds if "skipped" not in r]
    if not done:
        return rounds[0]
    times = [t for r in done for t in r["times_s"]]
    return {"median_s": statistics.median(times), "times_s": times, "peak_mb": max(r["peak_mb"] for r in done),
            "n_customers": done[0]["n_customers"]}


def format_table(results: dict[str, dict]) -> str:
    """Return a Markdown table of the results with ratios to polars and lifetimes."""
    polars_s = results.get("polars", {}).get("median_s")
    lifetimes_s = results.get("lifetimes", {}).get("median_s")
    lines = [
        "| contender | median wall (s) | peak extra memory (MB) | customers | x polars | lifetimes / this |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        if "skipped" in result:
            lines.append(f"| {name} | skipped: {result['skipped']} | | | | |")
            continue
        seconds = result["median_s"]
        vs_polars = f"{seconds / polars_s:.2f}" if polars_s else "n/a"
        speedup = f"{lifetimes_s / seconds:.1f}" if lifetimes_s else "n/a"
        lines.append(f"| {name} | {seconds:.3f} | {result['peak_mb']:.0f} | {result['n_customers']:,} | {vs_polars} | {speedup} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000, help="orders drawn by the synthetic source (the demo makes as many as its customers place)")
    parser.add_argument("--customers", type=int, default=100_000, help="customers (persons for the demo source; full size: 1,000,000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each starts every contender in a fresh process, in rotated order")
    parser.add_argument("--source", choices=("demo", "synthetic"), default="demo", help="demo generator, or NumPy draws")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset of " + ", ".join(CONTENDERS))
    parser.add_argument("--lifetimes-python", default=default_lifetimes_python(), help="interpreter with lifetimes and an older pandas")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per contender")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--parquet", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.database, args.parquet, args.repeats)))
        return 0

    orders = demo_orders(args.customers, seed=args.seed) if args.source == "demo" else None
    source = "demo generator" if orders is not None else "synthetic (NumPy)"
    if orders is None:
        orders = synthetic_orders(args.orders, args.customers, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_rfm_") as folder:
        parquet, database = write_data(Path(folder), orders)
        n_orders = len(orders)
        del orders
        names = args.contenders.split(",")
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for round_number in range(args.rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:  # rotate the order so no contender always runs first
                python = args.lifetimes_python if name == "lifetimes" else sys.executable
                runs[name].append(run_worker(name, python, database, parquet, args.repeats, args.timeout))
                print(f"round {round_number + 1} {name}: {runs[name][-1]}", file=sys.stderr)
        results = {name: combine_rounds(done) for name, done in runs.items()}
    print(f"RFM on {n_orders:,} orders / {args.customers:,} customers ({source}), as of {AS_OF}, "
          f"median of {args.rounds} rounds x {args.repeats} runs, {os.cpu_count()} cores\n")
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps({"orders": n_orders, "customers": args.customers, "source": source, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
