"""Wall time of the main job, `make demo` after installation, and where the time goes.

Runs ``crm-analytics demo`` (what `make demo` calls once the venv exists) in a fresh project home,
so nothing from an earlier run is reused, and reads every run's ``run.json`` for the per-analysis
durations. The goal: at most 90 s for 50,000 customers on 2 cores.

Examples::

    python benchmarks/bench_make_demo.py                  # 50,000 customers, 2 jobs
    python benchmarks/bench_make_demo.py --customers 5000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 90.0


def run_demo(customers: int, jobs: int, home: Path) -> tuple[float, int]:
    """Run the demo command in ``home``; return (wall seconds, exit code)."""
    command = [str(Path(sys.executable).parent / "crm-analytics"), "demo", "--customers", str(customers), "--jobs", str(jobs)]
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, env={**os.environ, "CRM_ANALYTICS_HOME": str(home)}, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        print(completed.stdout[-3000:], completed.stderr[-3000:], sep="\n", file=sys.stderr)
    return seconds, completed.returncode


def run_durations(home: Path) -> list[tuple[str, str, float]]:
    """(analysis, status, seconds) of the newest run of every analysis under ``home``/outputs."""
    rows = []
    for record_path in sorted((home / "outputs").glob("*/*/run.json")):
        if record_path.parent.name == "latest":  # the same run as its own folder
            continue
        record = json.loads(record_path.read_text())
        rows.append((record["analysis"], record["status"], float(record.get("duration_s") or 0.0)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_make_demo_") as folder:
        home = Path(folder)
        seconds, code = run_demo(args.customers, args.jobs, home)
        durations = run_durations(home)
    print(f"crm-analytics demo --customers {args.customers} --jobs {args.jobs}: {seconds:.1f} s wall, exit {code}, goal <= {GOAL_SECONDS:.0f} s")
    print(f"{'analysis':<16} {'status':<10} {'seconds':>8}")
    for analysis, status, run_seconds in durations:
        print(f"{analysis:<16} {status:<10} {run_seconds:>8.1f}")
    print(f"{'sum of runs':<27} {sum(d[2] for d in durations):>8.1f}")
    sys.exit(code)


if __name__ == "__main__":
    main()
