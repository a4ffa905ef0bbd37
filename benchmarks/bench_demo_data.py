"""Benchmark the demo-data generator: wall time and peak memory per dataset size.

Each size runs ``crm_analytics.demo.generate`` in a fresh Python process that
writes into a temporary folder and reports its own wall time, its CPU time
(user + system, which includes interpreter start-up and imports; it is less
affected by other load on the machine), its peak resident set size
(``ru_maxrss``) and the row counts of the largest exports.
The budget: 50,000 customers (``make demo``) within ~10-15 s; 1,000,000
customers (~10M orders, ~50M web events) within 24 GiB.

Examples::

    python benchmarks/bench_demo_data.py                 # 50,000 and 1,000,000 customers
    python benchmarks/bench_demo_data.py 2000 50000      # chosen sizes
    python benchmarks/bench_demo_data.py 50000 --keep /tmp/demo50k
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, resource, sys, time
from crm_analytics.demo import generate

n, seed, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
folder = generate(n, seed=seed, out_dir=out)
seconds = time.perf_counter() - start
manifest = json.loads((folder / "ground_truth" / "manifest.json").read_text())
rows = {f["path"]: f["rows"] for f in manifest["files"]}
size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
usage = resource.getrusage(resource.RUSAGE_SELF)
peak_mib = usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_mib": peak_mib, "bytes": size, "rows": rows}))
"""


def run_size(n_customers: int, *, seed: int, out_dir: Path) -> dict:
    """Generate ``n_customers`` in a child process; return its timing, peak memory and row counts."""
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n_customers), str(seed), str(out_dir)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"generation of {n_customers} customers failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def format_table(results: dict[int, dict]) -> str:
    """A plain-text table: one line per size."""
    header = f"{'customers':>10} {'seconds':>8} {'CPU s':>7} {'peak MiB':>9} {'size MiB':>9} {'orders':>11} {'web events':>11} {'order lines':>12}"
    lines = [header, "-" * len(header)]
    for n, r in results.items():
        orders = r["rows"].get("web_orders.csv", 0) + r["rows"].get("store_sales.csv", 0)
        lines.append(
            f"{n:>10,} {r['seconds']:>8.1f} {r['cpu_seconds']:>7.1f} {r['peak_mib']:>9,.0f} {r['bytes'] / 2**20:>9,.0f} {orders:>11,} "
            f"{r['rows'].get('web_events.parquet', 0):>11,} {r['rows'].get('order_items.parquet', 0):>12,}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[50_000, 1_000_000], help="numbers of customers")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", type=Path, default=None, help="write here (one sub-folder per size) and keep the files")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as scratch:
        base = args.keep or Path(scratch)
        for n in args.sizes:
            results[n] = run_size(n, seed=args.seed, out_dir=base / f"demo_{n}")
            print(format_table({n: results[n]}).splitlines()[-1], flush=True)
    print()
    print(format_table(results))


if __name__ == "__main__":
    main()
