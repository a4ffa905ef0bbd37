"""Benchmark ``crm_analytics.segmentation.rfm`` against polars, pandas and lifetimes, string and integer ids.

The same orders are stored twice, once with string customer ids (``P00000042``) and once with the
same customers as integers (``42``); every contender runs on both, side by side in one run. Each
contender runs in its own process, starting from the data in its native form (loading is not
timed, except for ``polars_scan``, whose reading is the point):

``crm_analytics``
    ``rfm(con.table("orders"), as_of=...)`` on a DuckDB warehouse file opened read-only through
    Ibis (the project's architecture: one aggregation query in DuckDB, then scoring and the
    segment map in NumPy).
``polars``
    one hand-written lazy polars query on the orders loaded in memory: filter, one ``group_by``
    with the three aggregates, min-rank quantile scores, the R x FM segment map with the one-time
    buyer rule, sorted by customer; collected with the default engine.
``polars_streaming``
    the same query collected with ``engine="streaming"`` (polars' newer engine, often faster).
``polars_scan``
    the same query on ``pl.scan_parquet`` (streaming engine): reads the Parquet file every run.
``pandas``
    idiomatic pandas: ``groupby().agg()`` and ``rank(method="min")``, the same segment map.
``lifetimes``
    ``lifetimes.utils.summary_data_from_transaction_data`` (R/F/M only, no scores). lifetimes is
    archived and fails on current pandas, so it runs under a separate interpreter with an older
    pandas (``--lifetimes-python``, default ``.venv-bench/bin/python`` when it exists); it is
    reported as skipped with the reason otherwise.

Every polars and pandas result is compared with ``rfm``'s, customer by customer: ids, recency,
frequency and the R and F scores must be equal; monetary within 1e-6. Net revenue is a sum of
floating-point amounts whose last bits depend on the order of summation (DuckDB's parallel sum
varies between runs of the same query), so a customer whose sum sits exactly on an M-score
boundary may score one apart: the check prints how many such customers there are and fails above
one in 100,000.

Contenders run in ``--rounds`` rounds, in rotated order, each round in a fresh process with
``--repeats`` timed runs after one warm-up run, so that a busy machine disturbs them alike.
Reported per id type and contender: median wall time over all timed runs, peak extra memory during
the runs (the largest of the rounds; resident set size sampled every 2 ms, minus the size after the
warm-up; for DuckDB this includes its buffer pool), and the ratios to the fastest polars variant and
to lifetimes.

Data: ``--source demo`` (default) takes the orders the demo generator simulates for ``--customers``
persons (``crm_analytics.demo.world.simulate``, in memory, no exports written; 1,000,000 persons
place about 9.7M orders); ``--source synthetic`` (or when the demo is unavailable) draws
``--orders`` orders with NumPy: customers with gamma-distributed order counts, times over three
years, amounts from a log-normal, 3 % refunds.

The issue's size (about 10M orders; several minutes, about 3 GB at a time)::

    python benchmarks/bench_rfm.py --customers 1000000

Small run::

    python benchmarks/bench_rfm.py --customers 100000 --rounds 1
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
CONTENDERS = ("crm_analytics", "polars", "polars_streaming", "polars_scan", "pandas", "lifetimes")
POLARS_VARIANTS = ("polars", "polars_streaming", "polars_scan")
ID_TYPES = ("int", "string")
SCORE_COLUMNS = ("customer_id", "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score", "rfm_segment")
# customers allowed to score one M step apart because their float sums differ in the last bits
MAX_BOUNDARY_SHARE = 1e-5

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


def integer_ids(orders):
    """The same orders with each string customer id (a letter and digits) replaced by its number (int64)."""
    return orders.assign(customer_id=orders["customer_id"].str.slice(1).astype("int64"))


def write_data(folder: Path, orders, *, stem: str = "orders") -> tuple[Path, Path]:
    """Write the orders as Parquet and as a DuckDB warehouse file (table ``orders``); return both paths."""
    import duckdb

    parquet = folder / f"{stem}.parquet"
    orders.to_parquet(parquet, index=False)
    database = folder / f"{stem}.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute(f"CREATE TABLE orders AS SELECT * FROM read_parquet('{parquet}')")
    return parquet, database


# ------------------------------------------------------------------ measurement (runs inside a worker)


def time_runs(func, repeats: int, *, keep: Path | None = None) -> dict:
    """Run ``func`` once to warm up, then ``repeats`` times; return the median and all wall times and the
    peak memory above the warmed-up process (caches filled by the warm-up, e.g. DuckDB's buffer pool,
    are part of the baseline, as the loaded DataFrame is for pandas and polars). ``keep``: write the
    warm-up's result there (Parquet) for the comparison of results."""
    warm_up = func()
    if keep is not None:
        save_scores(warm_up, keep)
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


def save_scores(result, path: Path) -> None:
    """Write the score columns of a pandas or polars result as Parquet (segments as plain strings)."""
    import pandas as pd

    frame = result if isinstance(result, pd.DataFrame) else result.to_pandas()
    if "rfm_segment" not in frame.columns:  # lifetimes: nothing to compare
        return
    frame = frame[list(SCORE_COLUMNS)].astype({"rfm_segment": "string"})
    frame.to_parquet(path, index=False)


def run_crm_analytics(database: Path, parquet: Path, repeats: int, keep: Path | None = None) -> dict:
    import ibis

    sys.path.insert(0, str(ROOT))
    from crm_analytics.segmentation import rfm

    con = ibis.duckdb.connect(str(database), read_only=True)
    orders = con.table("orders")
    return time_runs(lambda: rfm(orders, as_of=AS_OF, n_bins=N_BINS), repeats, keep=keep)


def polars_rfm(orders, *, engine: str = "auto"):
    """RFM as ``segmentation.rfm`` defines it, one lazy polars query; ``orders`` is a LazyFrame.

    Scores: ``1 + floor(N_BINS * below / n)`` with ``below`` the 0-based "min" rank; the R x FM
    grid with ``fm = (f + m + 1) // 2`` and one-time buyers in the FM = 1 column.
    """
    import datetime as dt

    import polars as pl

    sys.path.insert(0, str(ROOT))
    from crm_analytics.segmentation import SEGMENT_GRID

    as_of = dt.datetime.fromisoformat(AS_OF)
    grid = pl.Series("segment", SEGMENT_GRID.reshape(-1).tolist())
    steps = N_BINS - 1

    def score(column: str, *, descending: bool = False) -> pl.Expr:
        below = pl.col(column).rank("min", descending=descending).cast(pl.Int64) - 1
        return (1 + below * N_BINS // pl.len()).cast(pl.Int8)

    def five_level(score: pl.Expr) -> pl.Expr:  # scores 1..N_BINS onto the grid's 1..5
        return 1 + ((score.cast(pl.Int32) - 1) * 8 + steps) // (2 * steps)

    is_purchase = pl.col("order_amount") >= 0
    fm = pl.when(pl.col("frequency") <= 1).then(1).otherwise(five_level((pl.col("f_score").cast(pl.Int32) + pl.col("m_score") + 1) // 2))
    return (
        orders.filter((pl.col("order_time") <= as_of) & pl.col("customer_id").is_not_null())
        .group_by("customer_id")
        .agg(
            pl.col("order_time").filter(is_purchase).max().alias("last_order_time"),
            is_purchase.sum().alias("frequency"),
            pl.col("order_amount").sum().alias("monetary"),
        )
        .filter(pl.col("frequency") > 0)
        .with_columns(recency_days=(pl.lit(as_of) - pl.col("last_order_time")).dt.total_days())
        .with_columns(r_score=score("recency_days", descending=True), f_score=score("frequency"), m_score=score("monetary"))
        .with_columns(rfm_segment=pl.lit(grid).gather((five_level(pl.col("r_score")) - 1) * 5 + fm - 1))
        .drop("last_order_time")
        .sort("customer_id")
        .collect(engine=engine)
    )


def run_polars(database: Path, parquet: Path, repeats: int, keep: Path | None = None) -> dict:
    import polars as pl

    orders = pl.read_parquet(parquet, columns=["customer_id", "order_time", "order_amount"])
    return time_runs(lambda: polars_rfm(orders.lazy()), repeats, keep=keep)


def run_polars_streaming(database: Path, parquet: Path, repeats: int, keep: Path | None = None) -> dict:
    import polars as pl

    orders = pl.read_parquet(parquet, columns=["customer_id", "order_time", "order_amount"])
    return time_runs(lambda: polars_rfm(orders.lazy(), engine="streaming"), repeats, keep=keep)


def run_polars_scan(database: Path, parquet: Path, repeats: int, keep: Path | None = None) -> dict:
    import polars as pl

    return time_runs(lambda: polars_rfm(pl.scan_parquet(parquet), engine="streaming"), repeats, keep=keep)


def run_pandas(database: Path, parquet: Path, repeats: int, keep: Path | None = None) -> dict:
    import pandas as pd

    sys.path.insert(0, str(ROOT))
    from crm_analytics.segmentation import SEGMENT_GRID

    as_of = pd.Timestamp(AS_OF)
    orders = pd.read_parquet(parquet, columns=["customer_id", "order_time", "order_amount"])
    steps = N_BINS - 1

    def score(values: pd.Series, *, ascending: bool = True) -> pd.Series:
        below = values.rank(method="min", ascending=ascending).astype("int64") - 1
        return (1 + below * N_BINS // len(values)).astype("int8")

    def five_level(scores: pd.Series):
        return 1 + ((scores.to_numpy().astype("int16") - 1) * 8 + steps) // (2 * steps)

    def query() -> pd.DataFrame:
        recent = orders[(orders["order_time"] <= as_of) & orders["customer_id"].notna()]
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
        fm = five_level((totals["f_score"].astype("int16") + totals["m_score"] + 1) // 2)
        fm[totals["frequency"].to_numpy() <= 1] = 1
        totals["rfm_segment"] = SEGMENT_GRID[five_level(totals["r_score"]) - 1, fm - 1]
        return totals.drop(columns="last_order_time").reset_index()

    return time_runs(query, repeats, keep=keep)


def run_lifetimes(database: Path, parquet: Path, repeats: int, keep: Path | None = None) -> dict:
    import pandas as pd
    from lifetimes.utils import summary_data_from_transaction_data

    orders = pd.read_parquet(parquet)
    orders["customer_id"] = orders["customer_id"].astype(object)

    def query() -> pd.DataFrame:
        return summary_data_from_transaction_data(
            orders, "customer_id", "order_time", monetary_value_col="order_amount", observation_period_end=AS_OF
        )

    return time_runs(query, repeats)


WORKERS = {
    "crm_analytics": run_crm_analytics,
    "polars": run_polars,
    "polars_streaming": run_polars_streaming,
    "polars_scan": run_polars_scan,
    "pandas": run_pandas,
    "lifetimes": run_lifetimes,
}


# ------------------------------------------------------------------ comparison of results


def compare_scores(ours: Path, theirs: Path) -> str:
    """Compare a baseline's scores with ``rfm``'s, customer by customer; return ``""`` or what differs.

    Exact for ids, recency, frequency and the R and F scores; monetary within 1e-6; M scores and
    segments may differ for at most ``MAX_BOUNDARY_SHARE`` of the customers (float sums on a boundary).
    """
    import numpy as np
    import pandas as pd

    a, b = pd.read_parquet(ours), pd.read_parquet(theirs)
    if len(a) != len(b):
        return f"{len(b):,} customers against {len(a):,}"
    for column in ("customer_id", "recency_days", "frequency", "r_score", "f_score"):
        if not np.array_equal(a[column].to_numpy().astype(str if column == "customer_id" else "int64"),
                              b[column].to_numpy().astype(str if column == "customer_id" else "int64")):
            return f"{column} differs"
    if not np.allclose(a["monetary"], b["monetary"], rtol=0, atol=1e-6):
        return "monetary differs by more than 1e-6"
    apart = int((a["m_score"].to_numpy() != b["m_score"].to_numpy()).sum())
    segments = int((a["rfm_segment"].astype(str).to_numpy() != b["rfm_segment"].astype(str).to_numpy()).sum())
    if max(apart, segments) > MAX_BOUNDARY_SHARE * len(a):
        return f"m_score differs for {apart:,} customers, segment for {segments:,}"
    return "" if not apart else f"equal (m_score one apart for {apart} customers on a boundary, segment for {segments})"


# ------------------------------------------------------------------ orchestration


def default_lifetimes_python() -> str:
    candidate = ROOT / ".venv-bench" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def run_worker(name: str, python: str, database: Path, parquet: Path, repeats: int, timeout: float, keep: Path | None) -> dict:
    """Run one contender in a fresh process; return its measurements or ``{"skipped": reason}``."""
    command = [python, __file__, "--worker", name, "--database", str(database), "--parquet", str(parquet), "--repeats", str(repeats)]
    if keep is not None:
        command += ["--keep", str(keep)]
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


def format_table(results: dict[str, dict[str, dict]], checks: dict[str, dict[str, str]]) -> str:
    """Markdown table, one row per id type and contender, with ratios to the fastest polars variant and to lifetimes."""
    lines = [
        "| ids | contender | median wall (s) | peak extra memory (MB) | customers | x fastest polars | lifetimes / this | result vs rfm |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for id_type, by_name in results.items():
        polars_times = [by_name[n]["median_s"] for n in POLARS_VARIANTS if "median_s" in by_name.get(n, {})]
        fastest = min(polars_times) if polars_times else None
        lifetimes_s = by_name.get("lifetimes", {}).get("median_s")
        for name, result in by_name.items():
            if "skipped" in result:
                lines.append(f"| {id_type} | {name} | skipped: {result['skipped']} | | | | | |")
                continue
            seconds = result["median_s"]
            vs_polars = f"{seconds / fastest:.2f}" if fastest else "n/a"
            speedup = f"{lifetimes_s / seconds:.1f}" if lifetimes_s else "n/a"
            check = checks.get(id_type, {}).get(name, "")
            lines.append(f"| {id_type} | {name} | {seconds:.3f} | {result['peak_mb']:.0f} | {result['n_customers']:,} "
                         f"| {vs_polars} | {speedup} | {check} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000_000, help="orders drawn by the synthetic source (the demo makes as many as its customers place)")
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers (persons for the demo source; 1,000,000 make about 9.7M orders)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each starts every contender in a fresh process, in rotated order")
    parser.add_argument("--source", choices=("demo", "synthetic"), default="demo", help="demo generator, or NumPy draws")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset of " + ", ".join(CONTENDERS))
    parser.add_argument("--id-types", default=",".join(ID_TYPES), help="comma-separated subset of " + ", ".join(ID_TYPES))
    parser.add_argument("--lifetimes-python", default=default_lifetimes_python(), help="interpreter with lifetimes and an older pandas")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per contender")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--parquet", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.database, args.parquet, args.repeats, args.keep)))
        return 0

    orders = demo_orders(args.customers, seed=args.seed) if args.source == "demo" else None
    source = "demo generator" if orders is not None else "synthetic (NumPy)"
    if orders is None:
        orders = synthetic_orders(args.orders, args.customers, seed=args.seed)
    names = args.contenders.split(",")
    id_types = args.id_types.split(",")
    with tempfile.TemporaryDirectory(prefix="bench_rfm_") as tmp:
        folder = Path(tmp)
        n_orders = len(orders)
        inputs = {"string": write_data(folder, orders, stem="string")} if "string" in id_types else {}
        if "int" in id_types:
            inputs["int"] = write_data(folder, integer_ids(orders), stem="int")
        del orders
        jobs = [(id_type, name) for id_type in id_types for name in names]
        runs: dict[tuple[str, str], list[dict]] = {job: [] for job in jobs}
        for round_number in range(args.rounds):
            shift = round_number % len(jobs)
            for id_type, name in jobs[shift:] + jobs[:shift]:  # rotate the order so no contender always runs first
                python = args.lifetimes_python if name == "lifetimes" else sys.executable
                parquet, database = inputs[id_type]
                keep = folder / f"{id_type}-{name}.parquet" if round_number == 0 else None
                runs[id_type, name].append(run_worker(name, python, database, parquet, args.repeats, args.timeout, keep))
                print(f"round {round_number + 1} {id_type} {name}: {runs[id_type, name][-1]}", file=sys.stderr, flush=True)
        results = {id_type: {name: combine_rounds(runs[id_type, name]) for name in names} for id_type in id_types}
        checks: dict[str, dict[str, str]] = {}
        for id_type in id_types:
            ours = folder / f"{id_type}-crm_analytics.parquet"
            for name in names:
                theirs = folder / f"{id_type}-{name}.parquet"
                if name != "crm_analytics" and ours.exists() and theirs.exists():
                    checks.setdefault(id_type, {})[name] = compare_scores(ours, theirs) or "equal"
    print(f"RFM on {n_orders:,} orders / {args.customers:,} customers ({source}), as of {AS_OF}, "
          f"median of {args.rounds} rounds x {args.repeats} runs, {os.cpu_count()} cores\n")
    print(format_table(results, checks))
    if args.json:
        args.json.write_text(json.dumps({"orders": n_orders, "customers": args.customers, "source": source,
                                         "results": results, "checks": checks}, indent=2))
    differing = [f"{i}/{n}: {c}" for i, by_name in checks.items() for n, c in by_name.items() if not c.startswith("equal")]
    if differing:
        print("ERROR: results differ from rfm's: " + "; ".join(differing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
