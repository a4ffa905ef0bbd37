"""Benchmark of the cleansing build: standardise, validate and resolve the demo's source records.

Generates the demo dataset (``--customers`` persons; the 1M demo has about 1.5M source
customer records) into a scratch project home, runs ``build_clean_warehouse`` once, and
prints wall time and CPU time per step, records per second, peak memory (resident set)
(overall and per step), the entity-resolution accuracy against the demo's ground truth (pairwise
precision, recall, F1), the candidate pairs compared (per source record: flat when blocking is
linear in the records) and the customers left after merging. ``--engine splink`` measures Splink 5 instead of the
in-house blocked Fellegi-Sunter model.

    python benchmarks/bench_cleansing.py --customers 50000
    python benchmarks/bench_cleansing.py --customers 1000000 --home /scratch/crm-bench
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import duckdb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000, help="persons in the generated demo")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--engine", choices=["fellegi_sunter", "splink"], default="fellegi_sunter")
    parser.add_argument("--match-threshold", type=float, default=0.7)
    parser.add_argument("--as-of", default="2025-12-31")
    parser.add_argument("--home", default="", help="scratch project home (default: a temporary folder); an existing dataset there is reused")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    parser.add_argument("--workers", type=int, default=2, help="processes validating sources side by side (build-warehouse's default; 1: one by one)")
    args = parser.parse_args()

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="crm-bench-cleansing-"))
    os.environ["CRM_ANALYTICS_HOME"] = str(home)
    from crm_analytics import demo, paths
    from crm_analytics.cleansing import build_clean_warehouse

    manifest = paths.ground_truth_dir() / "manifest.json"
    started = time.perf_counter()
    if not manifest.exists() or json.loads(manifest.read_text()).get("n_customers") not in (None, args.customers):
        demo.generate(args.customers, seed=args.seed)
    generate_seconds = time.perf_counter() - started

    wall, cpu = time.perf_counter(), time.process_time()
    result = build_clean_warehouse(as_of=args.as_of, quarantine_threshold=1.0, match_threshold=args.match_threshold,
                                   engine=args.engine, output_dir=home / "outputs" / "bench", workers=args.workers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    counts = result.row_counts
    customer_records = int(counts.loc[counts["table_name"] == "customers", "rows_in"].sum())
    all_rows = int(counts["rows_in"].sum())
    overall = result.accuracy.iloc[0] if not result.accuracy.empty else None
    with duckdb.connect(str(result.warehouse_path), read_only=True) as con:
        merged_customers = con.execute("SELECT count(*) FROM customers").fetchone()[0]
    figures = {
        "customers": args.customers,
        "engine": args.engine,
        "workers": args.workers,
        "source_customer_records": customer_records,
        "source_rows_all_tables": all_rows,
        "generate_seconds": round(generate_seconds, 1),
        "build_wall_seconds": round(wall, 2),
        "build_cpu_seconds": round(cpu, 2),
        "wall_seconds_per_step": {k: round(v, 2) for k, v in result.timings.items()},
        "cpu_seconds_per_step": {k: round(v, 2) for k, v in result.cpu_timings.items()},
        "customer_records_per_second_resolve": round(customer_records / max(result.timings["resolve_entities"], 1e-9)),
        "rows_per_second_whole_build": round(all_rows / wall),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mb_per_step": {k: round(v) for k, v in result.peak_rss_mb.items()},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "candidate_pairs": result.candidate_pairs,
        "candidate_pairs_per_record": round(result.candidate_pairs / max(customer_records, 1), 2),
        "customers_after_merge": merged_customers,
        "precision": None if overall is None else round(float(overall["precision"]), 4),
        "recall": None if overall is None else round(float(overall["recall"]), 4),
        "f1": None if overall is None else round(float(overall["f1"]), 4),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
