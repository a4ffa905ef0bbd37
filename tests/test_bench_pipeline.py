"""The pipeline benchmark in its main-job mode: one real `run-all` on a small demo, figures per run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_all_figures(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("bench-home")
    figures = home / "figures.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_pipeline.py"), "--customers", "2000", "--home", str(home),
         "--run-all", "--jobs", "2", "--json", str(figures)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return {"home": home, "stdout": completed.stdout, **json.loads(figures.read_text())}


def test_run_all_mode_times_one_command_and_lists_every_run(run_all_figures):
    from crm_analytics import runner

    stages = {row["stage"]: row for row in run_all_figures["stages"]}
    assert list(stages) == ["demo data", "run-all -j 2"]  # the index is rewritten by run-all itself
    batch = stages["run-all -j 2"]
    assert batch["exit_code"] == 0 and batch["peak_gib"] > 0
    runs = batch["runs"]
    assert sorted(r["analysis"] for r in runs) == sorted(runner.list_analyses(ROOT / "notebooks"))
    assert {r["status"] for r in runs} <= {"succeeded", "not_applicable"}
    assert runs[0]["analysis"] == "cleansing"
    others_start = min(r["start_s"] for r in runs[1:])
    assert others_start >= runs[0]["start_s"] + runs[0]["duration_s"]  # the others wait for the warehouse
    assert all(0 < r["duration_s"] < batch["wall_s"] for r in runs)
    assert "sum of the runs' own times" in run_all_figures["stdout"]
    assert (run_all_figures["home"] / "outputs" / "demo" / "index.html").exists()
