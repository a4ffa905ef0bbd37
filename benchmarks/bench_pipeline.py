"""The full pipeline at scale: demo generation, cleansing and every analysis through the runner.

Each stage runs as its own command in a scratch project home (``--home``), one after the other, so
its wall time and peak memory are its own: ``crm-analytics demo-data`` (skipped when the home
already holds a dataset of that size), then ``crm-analytics run ANALYSIS`` for ``cleansing`` and
every other notebook in dependency order (``parameters/run_order.yaml``), and finally
``crm-analytics index``. Peak memory is the largest sum of resident set sizes over the stage's whole
process tree (runner, forked child, kernel), sampled every 0.25 s. The issue's bound: every stage
finishes, none above 16 GiB.

With ``--run-all`` the analyses run as the main job runs them: one ``crm-analytics run-all --jobs J``
(cleansing, then the others ``J`` at a time, longest chains first, each kernel forked from the
runner that preloaded the libraries; it rewrites the report index itself). The total is that
command's wall time and the peak its whole tree's (the parallel runs' memory adds up); the table
gives each run's own duration and start from its run record.

    python benchmarks/bench_pipeline.py --customers 1000000 --home /scratch/pipeline-1m
    python benchmarks/bench_pipeline.py --customers 1000000 --home /scratch/pipeline-1m --run-all
    python benchmarks/bench_pipeline.py --customers 20000          # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MEMORY_BOUND_GIB = 16.0


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants (processes that vanish count 0)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_stage(command: list[str], env: dict[str, str], log_path: Path) -> dict:
    """Run ``command``; return its exit code, wall seconds and peak tree memory (GiB)."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        watched, peak, stop = psutil.Process(process.pid), [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], tree_rss(watched))
                except psutil.Error:
                    pass
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        stop.set()
        sampler.join()
    return {"exit_code": code, "wall_s": time.perf_counter() - started, "peak_gib": peak[0] / 2**30}


def analysis_order() -> list[str]:
    """Every analysis notebook, ``cleansing`` first, each after the analyses it reads (run_order.yaml)."""
    from crm_analytics import runner

    names = [n for n in runner.list_analyses() if n != runner.CLEANSING]
    waits_for = runner.run_order(names)
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in sorted(names) if n not in ordered and waits_for[n] <= set(ordered)]
        if not ready:
            raise RuntimeError(f"parameters/run_order.yaml has a cycle among {sorted(set(names) - set(ordered))}")
        ordered.append(ready[0])
    return [runner.CLEANSING, *ordered]


def runs_since(home: Path, started_at: float) -> list[dict]:
    """The run records of ``home``'s demo runs started after ``started_at`` (epoch seconds), by start.

    Each: ``analysis``, ``status``, ``start_s`` (seconds after ``started_at``) and ``duration_s`` (the run's own).
    """
    runs = {}
    for record in (home / "outputs" / "demo").glob("*/*/run.json"):  # a run's folder and its `latest` copy
        run = json.loads(record.read_text())
        start = datetime.fromisoformat(run["started_at"]).timestamp()
        if start >= started_at and run.get("duration_s") is not None:
            runs[run["run_id"]] = {"analysis": run["analysis"], "status": run["status"], "start_s": start - started_at,
                                   "duration_s": run["duration_s"]}
    return sorted(runs.values(), key=lambda r: r["start_s"])


def print_runs(runs: list[dict]) -> None:
    """Print each run of a ``run-all``: when it started after the command and how long it took."""
    print(f"  {'analysis':<16}{'status':>11}{'start s':>9}{'own s':>9}")
    for run in runs:
        print(f"  {run['analysis']:<16}{run['status']:>11}{run['start_s']:>9.1f}{run['duration_s']:>9.1f}")
    print(f"  sum of the runs' own times: {sum(r['duration_s'] for r in runs):.1f} s", flush=True)


def has_dataset(home: Path, customers: int) -> bool:
    """Whether ``home`` already holds the demo exports for ``customers`` persons."""
    manifest = home / "data" / "raw" / "demo" / "ground_truth" / "manifest.json"
    return manifest.exists() and json.loads(manifest.read_text()).get("n_customers") == customers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--home", default="", help="scratch project home (default: a temporary folder); a dataset there is reused")
    parser.add_argument("--cell-timeout", type=float, default=3600)
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    parser.add_argument("--run-all", action="store_true", help="one `crm-analytics run-all` command, as the main job runs")
    parser.add_argument("--jobs", type=int, default=2, help="with --run-all: analyses run in parallel (default 2)")
    args = parser.parse_args(argv)

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="crm-bench-pipeline-"))
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CRM_ANALYTICS_HOME": str(home)}
    cli = str(Path(sys.executable).parent / "crm-analytics")
    logs = home / "bench-logs"
    logs.mkdir(exist_ok=True)

    stages: list[tuple[str, list[str]]] = []
    if not has_dataset(home, args.customers):
        stages.append(("demo data", [cli, "demo-data", "--customers", str(args.customers)]))
    timeouts = ["--cell-timeout", str(args.cell_timeout), "--run-timeout", str(4 * args.cell_timeout)]
    if args.run_all:
        stages.append((f"run-all -j {args.jobs}", [cli, "run-all", "--jobs", str(args.jobs), *timeouts]))
    else:
        stages += [(name, [cli, "run", name, *timeouts]) for name in analysis_order()]
        stages.append(("report index", [cli, "index"]))

    mode = f"one run-all command, {args.jobs} jobs" if args.run_all else "one command per stage"
    print(f"pipeline at {args.customers:,} customers in {home} ({os.cpu_count()} cores; {mode})", flush=True)
    print(f"{'stage':<18}{'exit':>5}{'wall s':>9}{'peak GiB':>10}", flush=True)
    rows = []
    for name, command in stages:
        started_at = time.time()
        figures = run_stage(command, env, logs / f"{name.replace(' ', '_')}.log")
        rows.append({"stage": name, **figures})
        print(f"{name:<18}{figures['exit_code']:>5}{figures['wall_s']:>9.1f}{figures['peak_gib']:>10.2f}", flush=True)
        if args.run_all and name.startswith("run-all"):
            runs = runs_since(home, started_at)
            rows[-1]["runs"] = runs
            print_runs(runs)
        if name == "cleansing" and figures["exit_code"] != 0:
            break  # the analyses read the warehouse it builds

    total = sum(r["wall_s"] for r in rows)
    worst = max(rows, key=lambda r: r["peak_gib"])
    failed = [r["stage"] for r in rows if r["exit_code"] != 0]
    print(f"{'total':<18}{'':>5}{total:>9.1f}{worst['peak_gib']:>10.2f}  (largest: {worst['stage']})")
    print(f"report index: {home / 'outputs' / 'index.html'}")
    within = worst["peak_gib"] <= MEMORY_BOUND_GIB
    print(f"every stage finished: {'yes' if not failed else 'no, failed: ' + ', '.join(failed)}; "
          f"every stage within {MEMORY_BOUND_GIB:.0f} GiB: {'yes' if within else 'no'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"customers": args.customers, "mode": mode, "stages": rows}, indent=2))
    return 0 if not failed and within else 1


if __name__ == "__main__":
    raise SystemExit(main())
