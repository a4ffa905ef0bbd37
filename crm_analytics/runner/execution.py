"""One run's lifecycle: prepare, start (lock, folder, fork), poll, finish (record, rename, ``latest``).

:func:`run_analysis` drives one run; :mod:`crm_analytics.runner.batch` drives many through the
same steps from a single thread (:func:`prepare`, :func:`start`, :func:`poll`, :func:`finish`).

Before a kernel starts, the warehouse's row counts are checked against what the analysis
needs (:mod:`crm_analytics.requirements`): when a required table is missing or empty the
run is recorded ``not_applicable`` with the reason in ``run.json`` (``"reason": "needs
web_events"``), no kernel starts, and :attr:`RunResult.ok` is true (nothing failed). A run whose
analysis lock is held elsewhere is recorded ``skipped_locked`` the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import filelock

from crm_analytics import paths, stale_runs
from crm_analytics.runner import locks
from crm_analytics.runner.cancel import cancel_on_signals, cancel_runs
from crm_analytics.runner.parameters import CLEANSING, notebook_path, resolve_parameters_and_dataset
from crm_analytics.runner.processes import kill_process_tree, run_child
from crm_analytics.runner.records import (
    FAILED,
    NOT_APPLICABLE,
    REPORT,
    RUN_RECORD,
    SKIPPED_LOCKED,
    SUCCEEDED,
    TMP_SUFFIX,
    RunResult,
    analysis_root_for,
    count_alerts,
    data_fingerprint,
    git_commit,
    move_latest,
    new_run_id,
    package_versions,
    utc_iso,
    write_json_atomic,
)
from crm_analytics.runner.report import warm_up, write_report
from crm_analytics.runner.verdict import decide

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """One run between its preparation and its record: the folder, the lock and the child process."""

    analysis: str
    run_id: str
    analysis_root: Path
    tmp_dir: Path
    notebook: Path
    parameters: dict
    cell_timeout: float
    run_timeout: float
    started: float
    dataset: str
    lock: filelock.BaseFileLock | None = None
    process: multiprocessing.process.BaseProcess | None = None
    conn: multiprocessing.connection.Connection | None = None
    deadline: float = math.inf
    outcome: dict | None = None
    wall_clock_killed: bool = False
    cancelled_by: int | None = None

    @property
    def final_dir(self) -> Path:
        """The folder the run is renamed to when it ends."""
        return self.analysis_root / self.run_id

    def base_record(self) -> dict:
        """The ``run.json`` of the run while it is under way (``status`` ``running``)."""
        return {
            "analysis": self.analysis,
            "run_id": self.run_id,
            "dataset": self.dataset,
            "notebook": str(self.notebook),
            "parameters": self.parameters,
            "status": "running",
            "started_at": utc_iso(self.started),
            "ended_at": None,
            "duration_s": None,
            "cell_timeout_s": self.cell_timeout,
            "run_timeout_s": self.run_timeout,
            "pid": os.getpid(),
            "pid_started_at": stale_runs.process_start_time(),
            "versions": package_versions(),
            "data_fingerprint": data_fingerprint(self.parameters.get("warehouse_path") or None),
            "git_commit": git_commit(),
        }


def prepare(
    analysis: str,
    *,
    parameters: Mapping[str, Any] | None,
    parameters_file: str | Path | None,
    cell_timeout: float,
    run_timeout: float,
    notebook_dir: str | Path | None,
    output_root: str | Path | None,
    parameters_root: str | Path | None,
    dataset: str | None = None,
) -> Run:
    """Validate the analysis, its dataset and its parameters (raising before anything is written) and describe the run."""
    notebook = notebook_path(analysis, notebook_dir)
    values, chosen = resolve_parameters_and_dataset(
        analysis,
        notebook=notebook,
        parameters=parameters,
        parameters_file=parameters_file,
        parameters_root=parameters_root,
        dataset=dataset,
    )
    run_id = new_run_id()
    analysis_root = analysis_root_for(analysis, output_root, chosen)
    tmp_dir = analysis_root / f"{run_id}{TMP_SUFFIX}"
    values["output_dir"] = str(tmp_dir)
    return Run(
        analysis=analysis,
        run_id=run_id,
        analysis_root=analysis_root,
        tmp_dir=tmp_dir,
        notebook=notebook,
        parameters=values,
        cell_timeout=cell_timeout,
        run_timeout=run_timeout,
        started=time.time(),
        dataset=chosen,
    )


def _result(run: Run, status: str, run_dir: Path | None, **extra: Any) -> RunResult:
    """The run's :class:`RunResult` with ``status``, ending now."""
    ended = time.time()
    return RunResult(
        analysis=run.analysis,
        run_id=run.run_id,
        status=status,
        run_dir=run_dir,
        parameters=run.parameters,
        started_at=utc_iso(run.started),
        ended_at=utc_iso(ended),
        duration_s=round(ended - run.started, 3),
        dataset=run.dataset,
        **extra,
    )


def start(run: Run, *, prefork_kernel: bool = False) -> RunResult | None:
    """Take the lock, create the run folder and fork the child; return a result when the run cannot start.

    With ``prefork_kernel`` (this process ran ``kernels.preload``) the child starts its kernel from a fork of itself.
    An analysis the warehouse cannot support is recorded ``not_applicable`` without a kernel.
    """
    reason = inapplicable_reason(run.analysis, run.parameters.get("warehouse_path") or paths.warehouse_path(run.dataset))
    if reason:
        return _record_not_applicable(run, reason)
    try:
        run.analysis_root.mkdir(parents=True, exist_ok=True)
        run.lock = locks.acquire(run.analysis_root)
    except locks.Locked:
        return _record_skipped(run)
    except OSError as exc:
        return _setup_failure(run, exc)
    with contextlib.suppress(OSError):
        stale_runs.mark_abandoned(run.analysis_root)
    try:
        run.tmp_dir.mkdir()
        write_json_atomic(run.tmp_dir / RUN_RECORD, run.base_record())
    except OSError as exc:
        _release(run)
        return _setup_failure(run, exc)
    spec = {
        "run_dir": str(run.tmp_dir),
        "input": str(run.notebook),
        "output": str(run.tmp_dir / run.notebook.name),
        "parameters": run.parameters,
        "cwd": str(run.notebook.parent),
        "cell_timeout": max(1, math.ceil(run.cell_timeout)) if run.cell_timeout else None,
        "lock_fd": locks.lock_fd(run.lock),
        "prefork": prefork_kernel,
        "dataset": run.dataset,
        "parent_pid": os.getpid(),
    }
    warm_up()
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    run.process = context.Process(target=run_child, args=(spec, sender), name=f"crm-run-{run.analysis}", daemon=False)
    run.process.start()
    sender.close()
    run.conn = receiver
    run.deadline = time.monotonic() + run.run_timeout if run.run_timeout else math.inf
    log.info("run %s/%s started (pid %s)", run.analysis, run.run_id, run.process.pid)
    return None


def _release(run: Run) -> None:
    """Release the run's analysis lock, if it holds it."""
    if run.lock is not None:
        locks.release(run.lock)
        run.lock = None


def _record_skipped(run: Run) -> RunResult:
    """Another process holds the analysis lock: leave a run folder holding only ``run.json``."""
    result = _result(run, SKIPPED_LOCKED, run.final_dir, error_message="another process is running this analysis")
    recorded = _record_without_kernel(run, result)
    if recorded.status == SKIPPED_LOCKED:
        log.info("run %s skipped: locked by another process", run.analysis)
    return recorded


def _record_not_applicable(run: Run, reason: str) -> RunResult:
    """The data lacks what the analysis needs: leave a run folder holding only ``run.json`` (with the reason)."""
    result = _result(run, NOT_APPLICABLE, run.final_dir, reason=reason)
    recorded = _record_without_kernel(run, result)
    if recorded.status == NOT_APPLICABLE:
        log.info("run %s not applicable: %s", run.analysis, reason)
    return recorded


def _record_without_kernel(run: Run, result: RunResult) -> RunResult:
    """Write ``run.json`` for a run that starts no kernel and move its folder into place."""
    try:
        run.analysis_root.mkdir(parents=True, exist_ok=True)
        run.tmp_dir.mkdir()
        write_json_atomic(run.tmp_dir / RUN_RECORD, _final_record(run, result))
        os.rename(run.tmp_dir, run.final_dir)
    except OSError as exc:
        return _setup_failure(run, exc)
    return result


def inapplicable_reason(analysis: str, warehouse: str | Path) -> str | None:
    """Why ``analysis`` cannot run on the warehouse file ``warehouse`` (``"needs web_events"``), else None.

    None also when it cannot be told: cleansing (it builds the warehouse), an analysis without a
    declaration in :mod:`crm_analytics.requirements`, a warehouse that does not exist yet or cannot
    be read (the notebook then reports the problem itself).
    """
    from crm_analytics import requirements  # ibis loads only when a run starts
    from crm_analytics import warehouse as warehouse_module

    if analysis == CLEANSING or not requirements.is_declared(analysis) or not Path(warehouse).is_file():
        return None
    try:
        rows = warehouse_module.table_row_counts(warehouse)
    except Exception as exc:  # noqa: BLE001 - an unreadable warehouse is the notebook's error to report
        log.warning("could not read the tables of %s: %s", warehouse, exc)
        return None
    verdict = requirements.check(analysis, rows)
    return None if verdict.applicable else verdict.reason


def _setup_failure(run: Run, exc: OSError) -> RunResult:
    """A ``failed`` result for a run whose folder could not be written (no folder is left)."""
    message = f"cannot write the run folder under {run.analysis_root}: {exc.strerror or exc}"
    log.error("run %s failed: %s", run.analysis, message)
    return _result(run, FAILED, None, error_name=type(exc).__name__, error_message=message)


def poll(run: Run) -> bool:
    """Return True when the child has ended (killing it first when past its wall-clock deadline)."""
    assert run.process is not None and run.conn is not None
    if run.process.exitcode is None and time.monotonic() >= run.deadline:
        kill_process_tree(run.process.pid)
        run.wall_clock_killed = True
    if run.process.exitcode is None and run.process.is_alive():
        return False
    run.process.join()
    with contextlib.suppress(EOFError, OSError):
        if run.conn.poll():
            run.outcome = run.conn.recv()
    run.conn.close()
    return True


def _final_record(run: Run, result: RunResult) -> dict:
    """The ``run.json`` of a run that has ended as ``result`` (with the notebook's warnings)."""
    record = run.base_record()
    record.update(
        status=result.status,
        ended_at=result.ended_at,
        duration_s=result.duration_s,
        run_dir=str(result.run_dir) if result.run_dir else None,
        error_name=result.error_name,
        error_message=result.error_message,
        error_cell_index=result.error_cell_index,
        alert_count=result.alert_count,
    )
    if result.reason:
        record["reason"] = result.reason
    if result.cancel_signal is not None:
        record["signal"] = signal.Signals(result.cancel_signal).name
    from crm_analytics.results import read_warnings  # on use: results loads pandas, which the runner itself never needs

    record["warnings"] = read_warnings(run.tmp_dir)
    return record


def finish(run: Run) -> RunResult:
    """Write the record, rename the folder, move ``latest`` on success, release the lock."""
    try:
        decision = decide(run)
        if not (run.tmp_dir / REPORT).exists() and (run.tmp_dir / run.notebook.name).is_file():
            with contextlib.suppress(Exception):
                write_report(run.tmp_dir / run.notebook.name, run.tmp_dir / REPORT)
        alerts = count_alerts(run.tmp_dir)
        result = _result(run, decision.pop("status"), run.final_dir, alert_count=alerts, **decision)
        if result.status == SUCCEEDED:
            write_headline(run)
        try:
            write_json_atomic(run.tmp_dir / RUN_RECORD, _final_record(run, result))
            os.rename(run.tmp_dir, run.final_dir)
        except OSError as exc:
            return _result(
                run, FAILED, run.tmp_dir if run.tmp_dir.exists() else None,
                error_name=type(exc).__name__, error_message=f"cannot finalise the run folder: {exc}",
            )
        if result.status == SUCCEEDED:
            move_latest(run.analysis_root, run.run_id)
        log.info("run %s/%s %s in %.1f s", run.analysis, run.run_id, result.status, result.duration_s)
        return result
    finally:
        _release(run)


def write_headline(run: Run) -> None:
    """Write the run's ``headline.json`` (:mod:`crm_analytics.headlines`); a failure is logged, never raised."""
    try:
        from crm_analytics import headlines  # on use: it reads the run's tables with pandas

        headlines.write_headline(run.analysis, run.tmp_dir, parameters=run.parameters, dataset=run.dataset)
    except Exception as exc:  # noqa: BLE001 - a headline must never fail a run
        log.warning("could not write the headline numbers of %s/%s: %s", run.analysis, run.run_id, exc)


def refresh_index(output_root: str | Path | None, dataset: str | None = None) -> None:
    """Rewrite the report index of ``dataset``; a failure is logged, never raised."""
    try:
        from crm_analytics import report_index

        report_index.write_index(output_root, dataset=dataset)
    except Exception as exc:  # noqa: BLE001 - the index must never fail a run
        log.warning("could not rewrite the report index: %s", exc)


def run_analysis(
    analysis: str,
    *,
    parameters: dict | None = None,
    parameters_file: str | Path | None = None,
    cell_timeout: float = 600,
    run_timeout: float = 3600,
    notebook_dir: str | Path | None = None,
    output_root: str | Path | None = None,
    parameters_root: str | Path | None = None,
    write_index: bool = True,
    dataset: str | None = None,
) -> RunResult:
    """Execute ``notebooks/<analysis>.ipynb`` once and return its result.

    Parameters
    ----------
    analysis : str
        The notebook's stem.
    parameters : dict, optional
        Explicit values; they override ``parameters_file``, which overrides
        ``parameters/<analysis>/default.yaml``. ``output_dir`` is always injected.
    parameters_file : str or Path, optional
        A flat YAML parameter set.
    cell_timeout, run_timeout : float
        Seconds one cell, and the whole run, may take (0 or ``None``: no limit).
    notebook_dir, output_root, parameters_root : str or Path, optional
        Override ``notebooks/``, ``outputs/`` (the folder of every dataset's outputs) and ``parameters/``.
    write_index : bool
        Rewrite the dataset's ``index.html`` and ``outputs/index.html`` afterwards.
    dataset : str, optional
        The dataset to read (``--dataset``); an explicit ``parameters["dataset"]`` wins, and the
        project default is used when neither is given. The run goes to ``outputs/<dataset>/<analysis>/``.

    Returns
    -------
    RunResult
        Its ``status`` is one of :data:`crm_analytics.runner.records.STATUSES`; ``run.json`` in ``run_dir`` holds the same and
        more (versions, data fingerprint, git commit).

    Raises
    ------
    UnknownAnalysisError, UnknownDatasetError, ParameterError
        Before anything is executed or written.
    """
    run = prepare(
        analysis,
        parameters=parameters,
        parameters_file=parameters_file,
        cell_timeout=cell_timeout,
        run_timeout=run_timeout,
        notebook_dir=notebook_dir,
        output_root=output_root,
        parameters_root=parameters_root,
        dataset=dataset,
    )
    with cancel_on_signals() as cancellation:
        result = start(run)
        if result is None:
            while not poll(run):
                if cancellation.signum is not None:
                    cancel_runs([run], cancellation.signum)
                wait_for_any([run], 0.5)
            result = finish(run)
        if write_index:
            refresh_index(output_root, run.dataset)
    return result


def wait_for_any(runs: list[Run], limit: float) -> None:
    """Sleep until a child ends, a deadline passes, or ``limit`` seconds elapse."""
    sentinels = [r.process.sentinel for r in runs if r.process is not None]
    deadline = min((r.deadline for r in runs), default=math.inf)
    timeout = max(0.0, min(limit, deadline - time.monotonic()))
    if sentinels:
        multiprocessing.connection.wait(sentinels, timeout=timeout)
    else:
        time.sleep(timeout)
