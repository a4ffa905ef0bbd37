"""Cancelling a run (SIGINT, SIGTERM), killing its runner outright, and runs whose runner died.

Each test starts the real ``crm-analytics run`` command on a slow fixture notebook in a process of
its own, waits until the kernel runs, then signals or kills the runner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from crm_analytics import report_index, runner, stale_runs

FIXTURES = Path(__file__).resolve().parent / "notebooks"
CLI = Path(sys.executable).with_name("crm-analytics")
_WAIT_S = 90  # an upper bound for slow machines, not a timing assertion


def _wait_for(predicate, what: str):
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def _analysis_dir(tmp_path: Path, analysis: str = "sleeper") -> Path:
    return runner.dataset_outputs(tmp_path / "outputs") / analysis


def _start_runner(tmp_path: Path, analysis: str = "sleeper", seconds: int = 120) -> subprocess.Popen:
    command = [
        str(CLI), "--notebook-dir", str(FIXTURES), "--output-root", str(tmp_path / "outputs"),
        "--parameters-dir", str(tmp_path / "parameters"), "run", analysis, "-p", f"seconds={seconds}",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _running_kernel(tmp_path: Path) -> tuple[Path, int]:
    """Wait until the run's kernel has written its pid into the ``.tmp`` run folder; return both."""

    def kernel_started():
        for folder in _analysis_dir(tmp_path).glob("*.tmp"):
            pid_file = folder / "kernel.pid"
            if pid_file.is_file() and pid_file.read_text().strip():
                return folder, int(pid_file.read_text())
        return None

    return _wait_for(kernel_started, "the kernel to start")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _assert_cancelled(tmp_path: Path, process: subprocess.Popen, tmp_dir: Path, kernel_pid: int, tree: list, signame: str,
                      runner_started: float):
    assert not tmp_dir.exists(), "the .tmp run folder was renamed"
    final = tmp_dir.with_name(tmp_dir.name.removesuffix(".tmp"))
    record = json.loads((final / "run.json").read_text())
    assert record["status"] == "cancelled" and record["signal"] == signame and record["ended_at"]
    assert record["pid"] == process.pid and record["pid_started_at"] == pytest.approx(runner_started, abs=1)
    assert (final / "sleeper.ipynb").is_file(), "the partial notebook is kept"
    assert not list(_analysis_dir(tmp_path).glob("*.tmp"))
    assert runner.latest_run("sleeper", output_root=tmp_path / "outputs") is None, "latest does not move"
    assert _gone(kernel_pid), "the kernel was ended"
    survivors = [p.pid for p in tree if not _gone(p.pid)]
    assert survivors == [], f"processes of the run survived: {survivors}"
    assert "cancelled" in (_analysis_dir(tmp_path).parent / "index.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_cancels_the_run_and_ends_its_processes(tmp_path, signum, code):
    process = _start_runner(tmp_path)
    try:
        tmp_dir, kernel_pid = _running_kernel(tmp_path)
        tree, runner_started = _descendants(process.pid), psutil.Process(process.pid).create_time()
        assert kernel_pid in {p.pid for p in tree}
        process.send_signal(signum)
        process.wait(timeout=_WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, process.stderr.read().decode()
    _assert_cancelled(tmp_path, process, tmp_dir, kernel_pid, tree, signal.Signals(signum).name, runner_started)


@pytest.mark.slow
def test_a_second_signal_while_stopping_orphans_nothing(tmp_path):
    process = _start_runner(tmp_path)
    try:
        tmp_dir, kernel_pid = _running_kernel(tmp_path)
        tree, runner_started = _descendants(process.pid), psutil.Process(process.pid).create_time()
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=_WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read().decode()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    _assert_cancelled(tmp_path, process, tmp_dir, kernel_pid, tree, "SIGINT", runner_started)


@pytest.mark.slow
def test_killing_the_runner_outright_ends_the_run_and_the_run_is_marked_abandoned(tmp_path):
    process = _start_runner(tmp_path)
    try:
        tmp_dir, kernel_pid = _running_kernel(tmp_path)
        tree = _descendants(process.pid)
        process.kill()
        process.wait(timeout=_WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    _wait_for(lambda: all(_gone(p.pid) for p in tree), "the run's processes to end after their runner was killed")
    assert _gone(kernel_pid)
    assert json.loads((tmp_dir / "run.json").read_text())["status"] == "running"  # nobody could record the end
    report_index.write_index(tmp_path / "outputs")
    final = tmp_dir.with_name(tmp_dir.name.removesuffix(".tmp"))
    assert not tmp_dir.exists() and json.loads((final / "run.json").read_text())["status"] == "abandoned"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _abandoned_folder(analysis_dir: Path, run_id: str, pid: int, pid_started_at: float | None) -> Path:
    folder = analysis_dir / f"{run_id}.tmp"
    folder.mkdir(parents=True)
    record = {"analysis": analysis_dir.name, "run_id": run_id, "status": "running", "started_at": "2024-01-01T00:00:00+00:00",
              "ended_at": None, "pid": pid, "pid_started_at": pid_started_at}
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def test_owner_alive_needs_the_same_pid_and_start_time():
    me = {"pid": os.getpid(), "pid_started_at": stale_runs.process_start_time()}
    assert stale_runs.owner_alive(me)
    assert not stale_runs.owner_alive({**me, "pid_started_at": me["pid_started_at"] - 3600}), "a reused pid is not the owner"
    assert not stale_runs.owner_alive({"pid": _dead_pid(), "pid_started_at": None})
    assert not stale_runs.owner_alive({})
    assert {"cancelled", "abandoned"} <= set(runner.STATUSES)


def test_the_index_marks_a_tmp_folder_of_a_dead_runner_abandoned_and_keeps_a_live_one(tmp_path):
    analysis_dir = runner.dataset_outputs(tmp_path / "outputs") / "ok"
    dead = _abandoned_folder(analysis_dir, "20240101T000000.000Z-aaaaaa", _dead_pid(), None)
    live = _abandoned_folder(analysis_dir, "20240101T000001.000Z-bbbbbb", os.getpid(), stale_runs.process_start_time())
    page = report_index.write_index(tmp_path / "outputs").read_text()
    record = json.loads((analysis_dir / "20240101T000000.000Z-aaaaaa" / "run.json").read_text())
    assert not dead.exists() and record["status"] == "abandoned" and record["ended_at"] and record["error_name"] == "RunAbandoned"
    assert live.exists() and json.loads((live / "run.json").read_text())["status"] == "running"
    assert "status running" in page  # the live one is still running
    live.rename(analysis_dir / "elsewhere")  # leave only the abandoned run
    (analysis_dir / "elsewhere" / "run.json").unlink()
    page = report_index.write_index(tmp_path / "outputs").read_text()
    assert "status abandoned" in page and "status running" not in page


@pytest.mark.slow
def test_the_next_run_of_the_analysis_marks_an_abandoned_run(tmp_path):
    analysis_dir = runner.dataset_outputs(tmp_path / "outputs") / "ok"
    dead = _abandoned_folder(analysis_dir, "20240101T000000.000Z-cccccc", _dead_pid(), 1.0)
    result = runner.run_analysis("ok", notebook_dir=FIXTURES, output_root=tmp_path / "outputs",
                                 parameters_root=tmp_path / "parameters", write_index=False)
    assert result.status == "succeeded"
    assert not dead.exists()
    assert json.loads((analysis_dir / "20240101T000000.000Z-cccccc" / "run.json").read_text())["status"] == "abandoned"
    assert not list(analysis_dir.glob("*.tmp"))
