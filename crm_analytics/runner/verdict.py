"""How a run ended: the status the runner records, from the child's outcome and the executed notebook.

The runner decides success itself: papermill returns normally for ``sys.exit(0)``
and marks cells ``completed`` after a cell timeout, so a run succeeds only when
papermill returned normally and every non-empty code cell has an execution count
and no cell is ``pending``, ``running`` or ``failed``. A cancelled or wall-clock-killed
run is recorded as such whatever the notebook shows. A notebook that stops on ``TooLittleDataError``
(``crm_analytics.dates``: the data spans too few days, whatever the parameters) is ``not_applicable``
with that message as its reason, not a failure.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.exceptions import PapermillExecutionError

from crm_analytics.runner.records import CANCELLED, FAILED, KERNEL_DIED, NOT_APPLICABLE, SUCCEEDED, TIMEOUT, TRUNCATED

if TYPE_CHECKING:
    from crm_analytics.runner.execution import Run


TOO_LITTLE_DATA = "TooLittleDataError"  # crm_analytics.dates.TooLittleDataError, named as the kernel reports it


def classify(exc: BaseException) -> dict:
    """Map an exception from papermill to the child's outcome record (``kind``, ``error_name``, ``error_message``)."""
    if isinstance(exc, CellTimeoutError):
        return {"kind": TIMEOUT, "error_name": "CellTimeoutError", "error_message": _first_line(str(exc))}
    if isinstance(exc, DeadKernelError):
        return {"kind": KERNEL_DIED, "error_name": "DeadKernelError", "error_message": _first_line(str(exc))}
    if isinstance(exc, PapermillExecutionError):
        return {
            "kind": FAILED,
            "error_name": exc.ename,
            "error_message": exc.evalue,
            "exec_count": exc.exec_count,
        }
    return {"kind": FAILED, "error_name": type(exc).__name__, "error_message": _first_line(str(exc))}


def _first_line(text: str, limit: int = 500) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


def _cell_state(cell: Mapping[str, Any]) -> str | None:
    return cell.get("metadata", {}).get("papermill", {}).get("status")


def _must_run(cell: Mapping[str, Any]) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return cell.get("cell_type") == "code" and bool(cell.get("source", "").strip()) and "skip-execution" not in tags


def inspect_executed(notebook: Path) -> dict:
    """Check an executed notebook cell by cell.

    Returns
    -------
    dict
        ``complete`` (every code cell that must run has an execution count and no cell is pending,
        running or failed), ``error_cell_index`` (first failed, erroring or unfinished code cell, as
        an index into the executed notebook) and ``error`` (``(ename, evalue)`` of the first error output).
    """
    try:
        nb = nbformat.read(notebook, as_version=4)
    except (OSError, ValueError) as exc:
        return {"complete": False, "error_cell_index": None, "error": None, "unreadable": str(exc)}
    first_bad: int | None = None
    error: tuple[str, str] | None = None
    for index, cell in enumerate(nb.cells):
        if not _must_run(cell):
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors and error is None:
            error = (errors[0].get("ename", ""), errors[0].get("evalue", ""))
        unfinished = cell.get("execution_count") is None or _cell_state(cell) in ("pending", "running", "failed")
        if (unfinished or errors) and first_bad is None:
            first_bad = index
    return {"complete": first_bad is None, "error_cell_index": first_bad, "error": error}


def _last_started_cell(notebook: Path) -> int | None:
    """Index of the last code cell papermill started (the one running when a timeout hit)."""
    try:
        nb = nbformat.read(notebook, as_version=4)
    except (OSError, ValueError):
        return None
    started = [
        i for i, cell in enumerate(nb.cells) if _must_run(cell) and cell.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    return started[-1] if started else None


def decide(run: Run) -> dict:
    """Turn the child's outcome and the executed notebook into the run's status and error fields."""
    output = run.tmp_dir / run.notebook.name
    checked = inspect_executed(output)
    if run.cancelled_by is not None:
        name = signal.Signals(run.cancelled_by).name
        return {
            "status": CANCELLED,
            "error_name": "RunCancelled",
            "error_message": f"cancelled by {name}; the run's process tree was killed",
            "error_cell_index": _last_started_cell(output),
            "cancel_signal": run.cancelled_by,
        }
    if run.wall_clock_killed:
        return {
            "status": TIMEOUT,
            "error_name": "RunTimeout",
            "error_message": f"the whole run exceeded {run.run_timeout:g} s; its process tree was killed",
            "error_cell_index": _last_started_cell(output),
        }
    outcome = run.outcome
    if outcome is None:
        code = run.process.exitcode if run.process else None
        return {
            "status": FAILED,
            "error_name": "RunnerProcessDied",
            "error_message": f"the run process ended with exit code {code} before reporting",
            "error_cell_index": checked["error_cell_index"],
        }
    if outcome["kind"] == SUCCEEDED:
        if checked["complete"]:
            return {"status": SUCCEEDED}
        return {
            "status": TRUNCATED,
            "error_name": "NotebookEndedEarly",
            "error_message": "papermill returned normally but code cells did not run (e.g. sys.exit)",
            "error_cell_index": checked["error_cell_index"],
        }
    index = checked["error_cell_index"]
    if outcome["kind"] == FAILED and outcome.get("error_name") == TOO_LITTLE_DATA:
        return {"status": NOT_APPLICABLE, "reason": f"too little data: {outcome.get('error_message')}", "error_cell_index": index}
    if outcome["kind"] == TIMEOUT:
        index = _last_started_cell(output)
        outcome = {**outcome, "error_message": f"a cell exceeded the cell timeout of {run.cell_timeout:g} s"}
    return {
        "status": outcome["kind"],
        "error_name": outcome.get("error_name"),
        "error_message": outcome.get("error_message"),
        "error_cell_index": index,
    }
