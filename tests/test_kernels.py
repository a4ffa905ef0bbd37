"""Tests of crm_analytics.kernels: batch runs whose kernels start from a fork of the preloaded runner.

The batches run through the command line, in a process of their own, as `make demo` runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import psutil
import pytest

from crm_analytics import kernels

FIXTURES = Path(__file__).resolve().parent / "notebooks"
CLI = str(Path(sys.executable).parent / "crm-analytics")


def test_launcher_arguments_accept_this_interpreter_with_options_only():
    python = sys.executable
    assert kernels.launcher_arguments([python, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "c.json"]) == ["-f", "c.json"]
    assert kernels.launcher_arguments([python, "-m", "ipykernel_launcher", "-f", "c.json"]) == ["-f", "c.json"]
    assert kernels.launcher_arguments([python, "-m", "other_kernel", "-f", "c.json"]) is None
    assert kernels.launcher_arguments([python, "-u", "-m", "ipykernel_launcher"]) is None  # an option that would change the interpreter
    assert kernels.launcher_arguments(["/usr/bin/env", "python", "-m", "ipykernel_launcher"]) is None
    assert kernels.launcher_arguments([]) is None


def _preload_in_fresh_process(before: str) -> list:
    code = f"{before}\nimport json\nfrom crm_analytics import kernels\nprint(json.dumps([kernels.preload(('json', 'no_such_module_here')), kernels.is_preloaded()]))"
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_preload_reports_what_failed_and_refuses_after_matplotlib():
    assert _preload_in_fresh_process("") == [["no_such_module_here"], True]
    # a process that loaded matplotlib itself would hand its backend to every forked kernel
    assert _preload_in_fresh_process("import matplotlib") == [[], False]


def _batch(tmp_path: Path, names: dict[str, str], *options: str) -> dict[str, dict]:
    """Run ``names`` (analysis -> fixture notebook) with ``crm-analytics run-all``; return their run records."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir(parents=True)
    for analysis, fixture in names.items():
        shutil.copy(FIXTURES / f"{fixture}.ipynb", notebooks / f"{analysis}.ipynb")
    command = [CLI, "--notebook-dir", str(notebooks), "--output-root", str(tmp_path / "outputs"), "--parameters-dir", str(tmp_path),
               "run-all", "--jobs", "2", *options]
    subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CRM_ANALYTICS_HOME": str(tmp_path)}, timeout=300)
    records = {}
    for record in (tmp_path / "outputs").glob("*/*/*/run.json"):  # <dataset>/<analysis>/<run>/
        if record.parent.name != "latest":
            records[record.parent.parent.name] = json.loads(record.read_text()) | {"run_dir": record.parent}
    return records


@pytest.mark.slow
def test_batch_kernels_are_forked_from_the_preloaded_runner(tmp_path):
    records = _batch(tmp_path, {"cleansing": "empty", "probe": "probe", "ok": "ok"})
    assert {a: r["status"] for a, r in records.items()} == {"cleansing": "succeeded", "probe": "succeeded", "ok": "succeeded"}
    facts = json.loads((records["probe"]["run_dir"] / "kernel.json").read_text())
    assert facts["preloaded"]  # the kernel holds the runner's modules: it was forked, not launched
    assert facts["cwd"] == str(tmp_path / "notebooks")  # the notebook's folder, as for a launched kernel
    assert facts["root_handlers"] == 0  # the runner's logging is not inherited
    assert facts["backend"].endswith("backend_inline")
    executed = nbformat.read(records["probe"]["run_dir"] / "probe.ipynb", as_version=4)
    assert any("image/png" in output.get("data", {}) for output in executed.cells[-1].outputs)
    assert (records["ok"]["run_dir"] / "tables" / "summary.parquet").exists()
    assert not psutil.pid_exists(facts["pid"])


@pytest.mark.slow
def test_a_single_run_launches_its_kernel(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(FIXTURES / "probe.ipynb", notebooks / "probe.ipynb")
    command = [CLI, "--notebook-dir", str(notebooks), "--output-root", str(tmp_path / "outputs"), "--parameters-dir", str(tmp_path), "run", "probe"]
    subprocess.run(command, capture_output=True, check=True, env={**os.environ, "CRM_ANALYTICS_HOME": str(tmp_path)}, timeout=300)
    assert not json.loads((tmp_path / "outputs" / "demo" / "probe" / "latest" / "kernel.json").read_text())["preloaded"]


@pytest.mark.slow
def test_forked_kernels_fail_time_out_and_die_like_launched_ones(tmp_path):
    names = {"cleansing": "empty", "fails": "fails", "hangs": "hangs", "dies": "dies", "exits": "exits"}
    records = _batch(tmp_path / "cells", names, "--cell-timeout", "3")
    records |= _batch(tmp_path / "runs", {"cleansing": "empty", "sleeper": "sleeper"}, "--run-timeout", "8")
    assert (records["fails"]["status"], records["fails"]["error_name"]) == ("failed", "ValueError")
    assert (records["hangs"]["status"], records["hangs"]["error_name"]) == ("timeout", "CellTimeoutError")
    assert records["dies"]["status"] == "kernel_died"
    assert records["exits"]["status"] == "truncated"
    assert (records["sleeper"]["status"], records["sleeper"]["error_name"]) == ("timeout", "RunTimeout")
    assert (records["fails"]["run_dir"] / "before.txt").read_text() == "partial"
    sleeper_kernel = int((records["sleeper"]["run_dir"] / "kernel.pid").read_text())
    assert not psutil.pid_exists(sleeper_kernel)  # the run timeout took the forked kernel with it


@pytest.mark.slow
def test_demo_generates_its_data_while_preloading_so_cleansing_is_forked_too(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(FIXTURES / "probe.ipynb", notebooks / "cleansing.ipynb")
    command = [CLI, "--notebook-dir", str(notebooks), "--output-root", str(tmp_path / "outputs"), "--parameters-dir", str(tmp_path),
               "demo", "--customers", "300"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CRM_ANALYTICS_HOME": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr
    raw = tmp_path / "data" / "raw" / "demo"
    assert (raw / "web_events.parquet").exists() and (raw / "ground_truth" / "persons.parquet").exists()
    assert json.loads((tmp_path / "outputs" / "demo" / "cleansing" / "latest" / "kernel.json").read_text())["preloaded"]
