"""Benchmark: BG/NBD fitting, crm_analytics.clv vs lifetimes.BetaGeoFitter vs a plain scipy implementation.

Synthetic transactions are simulated from a BG/NBD process (day resolution, 78
weeks), summarised with ``clv.summarize`` (timed), then each implementation fits
the same summary in its own subprocess (median wall time of ``--repeats`` fits,
peak resident memory above the process with the summary loaded, sampled). lifetimes is archived and does not
import with pandas 3 / numpy 2: it runs from its own environment (``--lifetimes-python``,
default ``.venv-bench/bin/python`` with lifetimes 0.11.3, pandas 2.0.3, numpy 1.26.4,
scipy 1.11.4); when that is missing it is reported as unavailable, with the reason.

    python benchmarks/bench_clv.py --customers 100000     # quick
    python benchmarks/bench_clv.py --customers 1000000    # the issue's size
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
TRUE_PARAMS = {"r": 2.0, "alpha": 4.0, "a": 1.2, "b": 10.0}
CALIBRATION_END = pd.Timestamp("2023-06-30")
START = pd.Timestamp("2022-01-01")


def simulate_orders(n_customers: int, *, seed: int = 0) -> pd.DataFrame:
    """Orders of a BG/NBD population: first purchases spread over the first 26 weeks, then Poisson repeat
    buying at a Gamma(r, alpha) rate, each repeat purchase followed by dropout with a Beta(a, b) probability."""
    rng = np.random.default_rng(seed)
    horizon_days = (CALIBRATION_END - START).days
    birth = rng.integers(0, 26 * 7, n_customers)
    rate = rng.gamma(TRUE_PARAMS["r"], 1 / TRUE_PARAMS["alpha"], n_customers) / 7  # per day
    p_drop = rng.beta(TRUE_PARAMS["a"], TRUE_PARAMS["b"], n_customers)
    customers, days = [np.arange(n_customers)], [birth.astype("float64")]
    clock = birth.astype("float64")
    alive = np.arange(n_customers)
    while alive.size:
        clock[alive] += rng.exponential(1 / rate[alive])
        alive = alive[clock[alive] <= horizon_days]
        customers.append(alive)
        days.append(clock[alive].copy())
        alive = alive[rng.random(alive.size) >= p_drop[alive]]
    customer = np.concatenate(customers)
    day = np.floor(np.concatenate(days)).astype("int64")
    return pd.DataFrame(
        {
            "customer_id": customer,
            "order_time": (np.datetime64(START.date(), "D") + day).astype("datetime64[us]"),
            "order_amount": np.round(rng.gamma(3.0, 20.0, customer.size), 2),
        }
    )


# --------------------------------------------------------------------------- the plain scipy baseline


def plain_scipy_fit(frequency: np.ndarray, recency: np.ndarray, T: np.ndarray) -> dict:
    """The textbook BG/NBD likelihood per customer, Nelder-Mead on log-parameters, no gradient (as lifetimes does)."""
    from scipy import optimize, special

    x, t_x = frequency, recency

    def negative_ll(logp):
        r, alpha, a, b = np.exp(logp)
        a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        a2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
        a3 = -(r + x) * np.log(alpha + T)
        a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + t_x), -np.inf)
        return -np.sum(a1 + a2 + np.logaddexp(a3, a4)) / x.size

    res = optimize.minimize(negative_ll, np.zeros(4), method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-12})
    return dict(zip(("r", "alpha", "a", "b"), map(float, np.exp(res.x))))


# --------------------------------------------------------------------------- workers (one per subprocess)


def _fit_once(engine: str, summary: pd.DataFrame) -> dict:
    if engine == "crm_analytics":
        from crm_analytics import clv

        return clv.BetaGeo().fit(summary).params_
    if engine == "plain_scipy":
        return plain_scipy_fit(*(summary[c].to_numpy("float64") for c in ("frequency", "recency", "T")))
    from lifetimes import BetaGeoFitter

    model = BetaGeoFitter(penalizer_coef=0.0).fit(summary["frequency"], summary["recency"], summary["T"])
    return {k: float(model.params_[k]) for k in ("r", "alpha", "a", "b")}


def worker(engine: str, summary_path: str, repeats: int) -> None:
    import scipy.optimize  # noqa: F401  (imports belong to the baseline)

    if engine == "crm_analytics":
        sys.path.insert(0, str(ROOT))
        import crm_analytics.clv  # noqa: F401

    from _measure import PeakMemory

    summary = pd.read_parquet(summary_path)
    times = []
    with PeakMemory() as memory:
        for _ in range(repeats):
            start = time.perf_counter()
            params = _fit_once(engine, summary)
            times.append(time.perf_counter() - start)
    print(json.dumps({"times": times, "peak_mib": memory.peak_mb, "params": params}))


def _run_engine(engine: str, python: str, summary_path: str, repeats: int) -> dict:
    cmd = [python, __file__, "--worker", engine, "--summary", summary_path, "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"engine": engine, "status": f"unavailable: {reason}"}
    record = json.loads(out.stdout.strip().splitlines()[-1])
    return {"engine": engine, "status": "ok", "median_s": statistics.median(record["times"]), "peak_mib": record["peak_mib"],
            **record["params"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lifetimes-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    parser.add_argument("--worker", choices=("crm_analytics", "plain_scipy", "lifetimes"), help=argparse.SUPPRESS)
    parser.add_argument("--summary", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.summary, args.repeats)
        return

    sys.path.insert(0, str(ROOT))
    from crm_analytics import clv

    orders = simulate_orders(args.customers)
    start = time.perf_counter()
    summary = clv.summarize(orders, calibration_end=CALIBRATION_END, time_unit="W")
    summarize_s = time.perf_counter() - start
    print(f"{len(summary):,} customers, {len(orders):,} orders; summarize: {summarize_s:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "summary.parquet")
        summary[["frequency", "recency", "T"]].reset_index(drop=True).to_parquet(path)
        lifetimes_python = args.lifetimes_python if Path(args.lifetimes_python).exists() else None
        rows = [
            _run_engine("crm_analytics", sys.executable, path, args.repeats),
            _run_engine("plain_scipy", sys.executable, path, args.repeats),
            _run_engine("lifetimes", lifetimes_python, path, args.repeats)
            if lifetimes_python
            else {"engine": "lifetimes", "status": f"unavailable: no interpreter at {args.lifetimes_python}"},
        ]
    table = pd.DataFrame(rows)
    # one log-likelihood function for all parameter sets (lifetimes reports its own on a rescaled time axis)
    x, t_x, T = (summary[c].to_numpy("float64") for c in ("frequency", "recency", "T"))
    table["loglik"] = [
        clv._bgnbd_individual_ll(dict(row[["r", "alpha", "a", "b"]]), x, t_x, T).sum() if row["status"] == "ok" else np.nan
        for _, row in table.iterrows()
    ]
    ours = table.loc[0, "median_s"]
    table["speedup_of_crm_analytics"] = table.get("median_s") / ours if "median_s" in table else np.nan
    print(f"BG/NBD fit, median of {args.repeats}; peak memory is above the loaded summary; true parameters {TRUE_PARAMS}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))
    _report_agreement(table)


def _report_agreement(table: pd.DataFrame) -> None:
    """Print whether each implementation's parameters agree with crm_analytics to 4 significant digits."""
    ours = table.iloc[0]
    for _, row in table.iloc[1:].iterrows():
        if row["status"] != "ok":
            continue
        same = all(float(f"{ours[k]:.4g}") == float(f"{row[k]:.4g}") for k in ("r", "alpha", "a", "b"))
        worst = max(abs(ours[k] / row[k] - 1) for k in ("r", "alpha", "a", "b"))
        print(f"{row['engine']}: parameters equal to 4 significant digits: {same} (largest relative difference {worst:.2e})")


if __name__ == "__main__":
    main()
