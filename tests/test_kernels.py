"""Tests of crm_analytics.kernels: batch runs whose kernels start from a fork of the preloaded runner."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import psutil
import pytest

from crm_analytics import kernels, runner

FIXTURES = Path(__file__).resolve().parent / "notebooks"


def test_launcher_arguments_accept_this_interpreter_with_options_only():
    python = sys.executable
    assert kernels.launcher_arguments([python, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "c.json"]) == ["-f", "c.json"]
    assert kernels.launcher_arguments([python, "-m", "ipykernel_launcher", "-f", "c.json"]) == ["-f", "c.json"]
    assert kernels.launcher_arguments([python, "-m", "other_kernel", "-f", "c.json"]) is None
    assert kernels.launcher_arguments([python, "-u", "-m", "ipykernel_launcher"]) is None  # an option that would change the interpreter
    assert kernels.launcher_arguments(["/usr/bin/env", "python", "-m", "ipykernel_launcher"]) is None
    assert kernels.launcher_arguments([]) is None


def test_preload_reports_what_failed_and_marks_the_process(monkeypatch):
    monkeypatch.setattr(kernels, "_preloaded", False)
    assert kernels.preload(("json", "no_such_module_here")) == ["no_such_module_here"]
    assert kernels.is_preloaded()


def _batch(tmp_path: Path, names: dict[str, str], **options) -> dict[str, runner.RunResult]:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for analysis, fixture in names.items():
        shutil.copy(FIXTURES / f"{fixture}.ipynb", notebooks / f"{analysis}.ipynb")
    results = runner.run_all(notebook_dir=notebooks, output_root=tmp_path / "outputs", parameters_root=tmp_path, **options)
    return {r.analysis: r for r in results}


@pytest.mark.slow
def test_preloaded_batch_runs_kernels_forked_from_the_runner(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "_preloaded", False)
    monkeypatch.setattr(kernels, "PRELOAD_MODULES", ("pandas", "matplotlib.pyplot"))
    results = _batch(tmp_path, {"cleansing": "empty", "probe": "probe", "ok": "ok"}, jobs=2, preload_kernels=True)
    assert {a: r.status for a, r in results.items()} == {"cleansing": "succeeded", "probe": "succeeded", "ok": "succeeded"}
    facts = json.loads((results["probe"].run_dir / "kernel.json").read_text())
    assert facts["preloaded"]  # the kernel holds the runner's modules: it was forked, not launched
    assert facts["cwd"] == str(tmp_path / "notebooks")  # the notebook's folder, as for a launched kernel
    assert facts["root_handlers"] == 0  # the runner's logging is not inherited
    assert facts["backend"].endswith("backend_inline")
    executed = nbformat.read(results["probe"].run_dir / "probe.ipynb", as_version=4)
    assert any("image/png" in output.get("data", {}) for output in executed.cells[-1].outputs)
    assert (results["ok"].run_dir / "tables" / "summary.parquet").exists()
    assert not psutil.pid_exists(facts["pid"]) or psutil.Process(facts["pid"]).status() == psutil.STATUS_ZOMBIE


@pytest.mark.slow
def test_without_preload_kernels_are_launched(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "_preloaded", False)
    results = _batch(tmp_path, {"probe": "probe"})
    assert results["probe"].status == "succeeded"
    assert not json.loads((results["probe"].run_dir / "kernel.json").read_text())["preloaded"]


@pytest.mark.slow
def test_forked_kernels_fail_time_out_and_die_like_launched_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "_preloaded", False)
    monkeypatch.setattr(kernels, "PRELOAD_MODULES", ("pandas",))
    names = {"cleansing": "empty", "fails": "fails", "hangs": "hangs", "dies": "dies", "exits": "exits"}
    results = _batch(tmp_path, names, jobs=2, preload_kernels=True, cell_timeout=3)
    assert results["fails"].status == "failed" and results["fails"].error_name == "ValueError"
    assert results["hangs"].status == "timeout" and results["hangs"].error_name == "CellTimeoutError"
    assert results["dies"].status == "kernel_died"
    assert results["exits"].status == "truncated"
    assert (results["fails"].run_dir / "before.txt").read_text() == "partial"
    leftovers = [p for p in psutil.Process(os.getpid()).children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == []
