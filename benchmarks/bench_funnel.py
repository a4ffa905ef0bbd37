"""Benchmark: the 5-step web funnel with crm_analytics.funnel against three baselines, in one run.

Contenders, all with the same semantics (per user; first step-1 event; each later
step at the earliest event at or after the previous step; users, median and 90th
percentile seconds from the previous step):

* ``crm_analytics``  - ``crm_analytics.funnel.funnel`` on an Ibis table of an in-memory DuckDB database;
* ``duckdb_sql``     - ``HAND_SQL`` below, run directly on the same kind of DuckDB database;
* ``pandas``         - an idiomatic pandas version (``pandas_funnel``);
* ``retentioneering``- ``Eventstream(...).funnel_data(steps)`` (counts only; its ties are broken by row
  order, ours by time, so its counts may differ slightly: reported, not asserted). Building the
  Eventstream is part of its timing, as it is part of using it. Its usage tracking is switched off
  (``RETENTIONEERING_NO_TRACK``).

Each contender runs in its own fresh process (so peak memory is its own): it loads the
event log from a Parquet file, then runs ``--repeats`` times; we report the median wall
time, the peak resident memory above the loaded baseline, and the ratio to the
hand-written SQL. Step counts of every contender are cross-checked.

    python benchmarks/bench_funnel.py --customers 60000 --events 3000000
    python benchmarks/bench_funnel.py --customers 1000000 --events 50000000   # full scale

``--warehouse PATH`` benchmarks the ``web_events`` table of a built warehouse instead of a
synthetic log.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("RETENTIONEERING_NO_TRACK", "1")

STEPS = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]
# Share of each event name in the synthetic log (roughly a web shop's).
EVENT_SHARES = [0.40, 0.35, 0.13, 0.07, 0.05]

HAND_SQL = """
WITH s1 AS (
  SELECT customer_id, MIN(event_time) AS t FROM web_events WHERE event_name = 'visit' GROUP BY customer_id
), s2 AS (
  SELECT e.customer_id, s1.t AS prev, MIN(e.event_time) AS t
  FROM web_events e JOIN s1 USING (customer_id)
  WHERE e.event_name = 'product_view' AND e.event_time >= s1.t GROUP BY e.customer_id, s1.t
), s3 AS (
  SELECT e.customer_id, s2.t AS prev, MIN(e.event_time) AS t
  FROM web_events e JOIN s2 USING (customer_id)
  WHERE e.event_name = 'add_to_cart' AND e.event_time >= s2.t GROUP BY e.customer_id, s2.t
), s4 AS (
  SELECT e.customer_id, s3.t AS prev, MIN(e.event_time) AS t
  FROM web_events e JOIN s3 USING (customer_id)
  WHERE e.event_name = 'checkout' AND e.event_time >= s3.t GROUP BY e.customer_id, s3.t
), s5 AS (
  SELECT e.customer_id, s4.t AS prev, MIN(e.event_time) AS t
  FROM web_events e JOIN s4 USING (customer_id)
  WHERE e.event_name = 'purchase' AND e.event_time >= s4.t GROUP BY e.customer_id, s4.t
)
SELECT 1 AS step_number, COUNT(*) AS users, NULL::DOUBLE AS median_seconds, NULL::DOUBLE AS p90_seconds FROM s1
UNION ALL SELECT 2, COUNT(*), QUANTILE_CONT(EPOCH(t) - EPOCH(prev), 0.5), QUANTILE_CONT(EPOCH(t) - EPOCH(prev), 0.9) FROM s2
UNION ALL SELECT 3, COUNT(*), QUANTILE_CONT(EPOCH(t) - EPOCH(prev), 0.5), QUANTILE_CONT(EPOCH(t) - EPOCH(prev), 0.9) FROM s3
UNION ALL SELECT 4, COUNT(*), QUANTILE_CONT(EPOCH(t) - EPOCH(prev), 0.5), QUANTILE_CONT(EPOCH(t) - EPOCH(prev), 0.9) FROM s4
UNION ALL SELECT 5, COUNT(*), QUANTILE_CONT(EPOCH(t) - EPOCH(prev), 0.5), QUANTILE_CONT(EPOCH(t) - EPOCH(prev), 0.9) FROM s5
ORDER BY step_number
"""


def synthetic_events(n_customers: int, n_events: int, *, seed: int = 0) -> pd.DataFrame:
    """A web event log: ``customer_id`` (string ``W`` + number), ``event_time``, ``event_name``."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_customers, n_events)
    names = rng.choice(len(STEPS), size=n_events, p=EVENT_SHARES)
    # Later funnel steps tend to come later: an offset per step plus noise, over about 90 days.
    seconds = rng.integers(0, 90 * 86_400, n_events) + names * rng.integers(0, 3_600, n_events)
    ids = pd.Series(np.char.add("W", np.arange(n_customers).astype(str)), dtype="string[pyarrow]")
    return pd.DataFrame(
        {
            "customer_id": ids.to_numpy()[users],
            "event_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(seconds, unit="s"),
            "event_name": pd.Series(np.array(STEPS)[names], dtype="string[pyarrow]"),
        }
    )


def pandas_funnel(events: pd.DataFrame, steps: list[str]) -> pd.DataFrame:
    """Idiomatic pandas: a chain of merges, filters and group-by minima."""
    step_events = events.loc[events["event_name"].isin(steps), ["customer_id", "event_time", "event_name"]]
    by_step = {name: part[["customer_id", "event_time"]] for name, part in step_events.groupby("event_name", observed=True)}
    stage = by_step[steps[0]].groupby("customer_id", observed=True)["event_time"].min().rename("t").reset_index()
    rows = [{"step_number": 1, "users": len(stage), "median_seconds": np.nan, "p90_seconds": np.nan}]
    for number, step in enumerate(steps[1:], start=2):
        joined = by_step[step].merge(stage[["customer_id", "t"]].rename(columns={"t": "prev"}), on="customer_id")
        joined = joined.loc[joined["event_time"] >= joined["prev"]]
        stage = joined.groupby(["customer_id", "prev"], observed=True)["event_time"].min().rename("t").reset_index()
        gaps = (stage["t"] - stage["prev"]).dt.total_seconds()
        rows.append({"step_number": number, "users": len(stage), "median_seconds": gaps.median(), "p90_seconds": gaps.quantile(0.9)})
    return pd.DataFrame(rows)


def _load_duckdb(parquet: str):
    import ibis

    con = ibis.duckdb.connect()
    con.raw_sql(f"CREATE TABLE web_events AS SELECT customer_id, event_time, event_name FROM read_parquet('{parquet}')")
    return con


def _contender(name: str, parquet: str):
    """Return (prepare, run): prepare loads the data once, run(data) computes the funnel counts."""
    if name == "crm_analytics":
        from crm_analytics.funnel import funnel

        return (lambda: _load_duckdb(parquet)), (lambda con: funnel(con.table("web_events"), STEPS)[["step_number", "users"]])
    if name == "duckdb_sql":
        return (lambda: _load_duckdb(parquet)), (lambda con: con.con.execute(HAND_SQL).df())
    if name == "pandas":
        return (lambda: pd.read_parquet(parquet)), (lambda df: pandas_funnel(df, STEPS))
    if name == "retentioneering":
        from retentioneering import Eventstream

        def prepare():
            df = pd.read_parquet(parquet)
            return df.rename(columns={"customer_id": "user_id", "event_name": "event", "event_time": "timestamp"})

        def run(df):
            stream = Eventstream(df.copy(), schema={"path_cols": ["user_id"], "event_col": "event", "timestamp_col": "timestamp"})
            counts = [s["unique_paths"] for s in stream.funnel_data(steps=STEPS)["steps"]]
            return pd.DataFrame({"step_number": range(1, len(STEPS) + 1), "users": counts})

        return prepare, run
    raise ValueError(name)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _worker(name: str, parquet: str, repeats: int, queue) -> None:
    try:
        prepare, run = _contender(name, parquet)
        data = prepare()
        run(data)  # warm-up (imports, first-touch costs)
        baseline, peak, stop = _rss(), [0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = run(data)
            seconds.append(time.perf_counter() - start)
        stop.set()
        sampler.join()
        queue.put({"name": name, "seconds": seconds, "peak_mb": max(0, peak[0] - baseline) / 2**20, "users": result["users"].astype(int).tolist()})
    except ImportError as error:
        queue.put({"name": name, "unavailable": f"not installed ({error})"})
    except Exception as error:  # report, never leave the parent waiting
        queue.put({"name": name, "unavailable": f"failed: {type(error).__name__}: {error}"})


def _measure(name: str, parquet: str, repeats: int) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_worker, args=(name, parquet, repeats, queue))
    process.start()
    outcome = queue.get()
    process.join()
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=60_000)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warehouse", default="", help="benchmark web_events of this DuckDB warehouse instead")
    parser.add_argument("--skip", nargs="*", default=[], help="contenders to leave out")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        parquet = str(Path(folder) / "web_events.parquet")
        if args.warehouse:
            import duckdb

            with duckdb.connect(args.warehouse, read_only=True) as con:
                con.execute(f"COPY (SELECT customer_id, event_time, event_name FROM web_events) TO '{parquet}'")
        else:
            synthetic_events(args.customers, args.events).to_parquet(parquet)
        n_events = len(pd.read_parquet(parquet, columns=["event_name"]))
        print(f"funnel {STEPS} on {n_events:,} events; {args.repeats} repeats; {os.cpu_count()} cores")
        outcomes = [_measure(n, parquet, args.repeats) for n in ("duckdb_sql", "crm_analytics", "pandas", "retentioneering") if n not in args.skip]

    reference = next(o for o in outcomes if o["name"] == "duckdb_sql")
    base = statistics.median(reference["seconds"])
    print(f"{'contender':<16}{'median s':>10}{'peak MB':>10}{'x SQL':>8}  counts per step")
    for o in outcomes:
        if "unavailable" in o:
            print(f"{o['name']:<16}{'unavailable: ' + o['unavailable']}")
            continue
        median = statistics.median(o["seconds"])
        note = "" if o["users"] == reference["users"] else "  (differs from SQL)"
        print(f"{o['name']:<16}{median:>10.3f}{o['peak_mb']:>10.0f}{median / base:>8.2f}  {o['users']}{note}")
    ours = next(o for o in outcomes if o["name"] == "crm_analytics")
    if ours["users"] != reference["users"]:
        print("ERROR: crm_analytics and the hand-written SQL disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
