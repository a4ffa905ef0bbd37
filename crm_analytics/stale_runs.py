"""Find run folders whose runner died and mark them ``abandoned``.

A run writes ``<run_id>.tmp/run.json`` with status ``running`` and its owner, the runner process
(``pid`` and ``pid_started_at``, the process's start time in seconds since the epoch, so a reused
pid is not taken for the owner). When the runner ends without recording the run's end (``kill -9``,
the OOM killer, a power cut) the folder would say ``running`` for ever. The next run of the analysis
and the next index build call :func:`mark_abandoned`, which records such a run ``abandoned`` and
renames its folder to the run id.

Kept free of heavy imports: the index build uses it.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

import psutil

ABANDONED = "abandoned"
RUNNING = "running"
TMP_SUFFIX = ".tmp"
RUN_RECORD = "run.json"
_START_TIME_TOLERANCE_S = 1.0


def process_start_time(pid: int | None = None) -> float | None:
    """Start time of process ``pid`` (default: this one) in seconds since the epoch; None when it is gone."""
    try:
        return psutil.Process(pid).create_time() if pid else psutil.Process().create_time()
    except psutil.Error:
        return None


def owner_alive(record: dict) -> bool:
    """True when the process named by a run record's ``pid`` and ``pid_started_at`` still runs.

    A record without ``pid_started_at`` (written before it was recorded) trusts the pid alone.
    """
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = process_start_time(pid)
    if started is None:
        return False
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    recorded = record.get("pid_started_at")
    return recorded is None or abs(float(recorded) - started) <= _START_TIME_TOLERANCE_S


def _read(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_abandoned(run_dir: Path) -> bool:
    """True for a ``*.tmp`` run folder whose record says ``running`` while its owner process is gone."""
    if not run_dir.name.endswith(TMP_SUFFIX) or not run_dir.is_dir():
        return False
    record = _read(run_dir)
    return record is not None and record.get("status") == RUNNING and not owner_alive(record)


def mark_abandoned(analysis_dir: str | Path) -> list[Path]:
    """Record every abandoned run of one ``outputs/<dataset>/<analysis>/`` folder; return their new folders.

    The record gets ``status: abandoned``, ``ended_at`` and ``detected_at`` (the time it was found,
    UTC ISO 8601; the real end is unknown) and an error message naming the dead owner; the folder
    is renamed from ``<run_id>.tmp`` to ``<run_id>``. ``latest`` is not touched. A folder that
    cannot be rewritten is left as it is (the next call tries again).
    """
    folder = Path(analysis_dir)
    if not folder.is_dir():
        return []
    marked = []
    for run_dir in sorted(p for p in folder.iterdir() if is_abandoned(p)):
        record = _read(run_dir) or {}
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        record.update(
            status=ABANDONED,
            ended_at=now,
            detected_at=now,
            error_name="RunAbandoned",
            error_message=f"the runner (pid {record.get('pid')}) ended without recording the end of the run",
        )
        final = run_dir.with_name(run_dir.name.removesuffix(TMP_SUFFIX))
        record["run_dir"] = str(final)
        staging = run_dir / f".{RUN_RECORD}.{secrets.token_hex(4)}.tmp"
        try:
            staging.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
            os.replace(staging, run_dir / RUN_RECORD)
            if not final.exists():
                os.rename(run_dir, final)
        except OSError:
            continue
        marked.append(final if final.is_dir() else run_dir)
    return marked
