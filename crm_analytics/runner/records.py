"""The run record: statuses, run ids, ``run.json``, the data fingerprint and the ``latest`` pointer.

A run of ``notebooks/<analysis>.ipynb`` on dataset ``<dataset>`` writes into
``outputs/<dataset>/<analysis>/<run_id>.tmp/`` and is renamed to
``outputs/<dataset>/<analysis>/<run_id>/`` when it ends, whatever the outcome.
The folder holds:

- ``<analysis>.ipynb``: the executed notebook (partial when a cell failed);
- ``report.html``: the notebook as HTML without code cells or prompts;
- ``tables/`` and ``figures/``: written by the notebook itself through
  :mod:`crm_analytics.results` into the injected ``output_dir``;
- ``stdout.txt`` / ``stderr.txt``: what the cells printed (it may hold personal
  data, so it never goes to the runner's log) and ``engine.log`` (papermill's and
  the kernel's own messages);
- ``run.json``: the run record (see :func:`crm_analytics.runner.run_analysis`).

``outputs/<dataset>/<analysis>/latest`` points at the last successful run of that
dataset and moves only after a success, atomically (runs of different datasets never
move each other's pointer). A failed run keeps its partial notebook and error;
the previous good report stays where it was.

Data fingerprint recorded in ``run.json``: the warehouse file's absolute path,
size in bytes, modification time (UTC, ISO 8601) and the SHA-256 of its first and
last MiB (``head_tail_sha256``). DuckDB keeps its checkpoint counter in the file
header, so this is a cheap change detector, not a proof that two files hold the
same data.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import platform
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from crm_analytics import paths, stale_runs

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMEOUT = "timeout"
KERNEL_DIED = "kernel_died"
TRUNCATED = "truncated"
SKIPPED_LOCKED = "skipped_locked"
NOT_APPLICABLE = "not_applicable"
CANCELLED = "cancelled"
ABANDONED = stale_runs.ABANDONED
STATUSES = (SUCCEEDED, FAILED, TIMEOUT, KERNEL_DIED, TRUNCATED, SKIPPED_LOCKED, NOT_APPLICABLE, CANCELLED, ABANDONED)

RUN_RECORD = "run.json"
REPORT = "report.html"
LATEST = "latest"
LOCK = ".lock"
TMP_SUFFIX = ".tmp"

_VERSIONED = {
    "pandas": "pandas",
    "numpy": "numpy",
    "duckdb": "duckdb",
    "ibis": "ibis-framework",
    "papermill": "papermill",
    "scikit-learn": "scikit-learn",
    "statsmodels": "statsmodels",
}
_FINGERPRINT_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The outcome of one run, mirroring its ``run.json``.

    Attributes
    ----------
    analysis, run_id, status : str
        ``status`` is one of :data:`STATUSES`.
    run_dir : Path or None
        The final run folder; ``None`` when it could not be created.
    parameters : dict
        The parameters injected into the notebook.
    started_at, ended_at : str
        UTC times, ISO 8601.
    duration_s : float
        Wall-clock seconds.
    error_name, error_message : str or None
        Exception class name and message on failure.
    error_cell_index : int or None
        Index of the failing cell in the executed notebook.
    alert_count : int or None
        Rows of ``tables/alerts.csv`` when the notebook wrote it.
    dataset : str or None
        The dataset the run read.
    reason : str or None
        Why a ``not_applicable`` run did not start (``"needs web_events"``).
    cancel_signal : int or None
        The signal (SIGINT or SIGTERM) that cancelled a ``cancelled`` run.
    """

    analysis: str
    run_id: str
    status: str
    run_dir: Path | None
    parameters: dict
    started_at: str
    ended_at: str
    duration_s: float
    error_name: str | None = None
    error_message: str | None = None
    error_cell_index: int | None = None
    alert_count: int | None = None
    dataset: str | None = None
    reason: str | None = None
    cancel_signal: int | None = None

    @property
    def ok(self) -> bool:
        """True when the run succeeded, or was not applicable to the data (nothing failed; exit code 0)."""
        return self.status in (SUCCEEDED, NOT_APPLICABLE)

    @property
    def report_path(self) -> Path | None:
        """The run's ``report.html``, or ``None`` when there is none."""
        if self.run_dir is None or not (self.run_dir / REPORT).exists():
            return None
        return self.run_dir / REPORT


# ----------------------------------------------------------------------------- what run.json holds


def new_run_id(now: datetime | None = None) -> str:
    """Return a sortable run id: the UTC time to the millisecond plus a short random suffix."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(3)


def utc_iso(moment: float) -> str:
    """Return the epoch time ``moment`` (seconds) as UTC ISO 8601 to the millisecond."""
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Return the versions of Python and the libraries a run's results depend on (``None`` if absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for label, distribution in _VERSIONED.items():
        try:
            versions[label] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[label] = None
    return versions


def data_fingerprint(path: str | Path | None = None) -> dict:
    """Return a cheap fingerprint of the warehouse file.

    Returns
    -------
    dict
        ``path``, ``exists``; when it exists also ``size_bytes``, ``mtime`` (UTC ISO 8601) and
        ``head_tail_sha256`` (SHA-256 of the first and the last MiB).
    """
    target = Path(path) if path else paths.warehouse_path()
    record: dict[str, Any] = {"path": str(target), "exists": target.is_file()}
    if not record["exists"]:
        return record
    stat = target.stat()
    digest = hashlib.sha256()
    with target.open("rb") as handle:
        digest.update(handle.read(_FINGERPRINT_BYTES))
        if stat.st_size > _FINGERPRINT_BYTES:
            handle.seek(max(_FINGERPRINT_BYTES, stat.st_size - _FINGERPRINT_BYTES))
            digest.update(handle.read(_FINGERPRINT_BYTES))
    record.update(size_bytes=stat.st_size, mtime=utc_iso(stat.st_mtime), head_tail_sha256=digest.hexdigest())
    return record


def git_commit(root: str | Path | None = None) -> str | None:
    """Return the commit checked out in the project (read from ``.git`` without running git), or ``None``."""
    git_dir = Path(root or paths.code_root()) / ".git"
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        loose = git_dir / ref
        if loose.is_file():
            return loose.read_text().strip()
        for line in (git_dir / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def count_alerts(run_dir: Path) -> int | None:
    """Return the number of rows of ``tables/alerts.csv`` in a run folder, or ``None`` when absent."""
    path = run_dir / "tables" / "alerts.csv"
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


# ----------------------------------------------------------------------------- reading and writing run.json


def write_json_atomic(path: Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` as indented JSON to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_run_record(run_dir: str | Path) -> dict | None:
    """Return the ``run.json`` of a run folder, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads((Path(run_dir) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- where runs go, and latest


def dataset_outputs(output_root: str | Path | None = None, dataset: str | None = None) -> Path:
    """Return ``<output_root>/<dataset>/`` (default ``outputs/`` and the project's default dataset), absolute."""
    root = Path(output_root) if output_root else paths.outputs_root()
    return root.resolve() / (dataset or paths.default_dataset())


def analysis_root_for(analysis: str, output_root: str | Path | None, dataset: str | None = None) -> Path:
    """Return ``<output_root>/<dataset>/<analysis>/``, the folder of every run of ``analysis`` on ``dataset``."""
    return dataset_outputs(output_root, dataset) / analysis


def latest_run(analysis: str, *, output_root: str | Path | None = None, dataset: str | None = None) -> Path | None:
    """Return the folder of the last successful run of ``analysis`` on ``dataset``, or ``None``.

    ``output_root`` is the folder of every dataset's outputs (default ``outputs/``); ``dataset``
    defaults to the project's default dataset. ``latest`` is a relative symlink; where symlinks
    are unavailable it is a small file holding the run id.
    """
    target = paths.read_latest_pointer(analysis_root_for(analysis, output_root, dataset))
    return target if target.is_dir() and target.name != LATEST else None


def move_latest(analysis_root: Path, run_id: str) -> None:
    """Point ``analysis_root/latest`` at ``run_id``: a new link beside it, then ``os.replace`` (atomic)."""
    staging = analysis_root / f".{LATEST}.{secrets.token_hex(4)}"
    try:
        os.symlink(run_id, staging, target_is_directory=True)
    except (OSError, NotImplementedError):
        staging.write_text(run_id + "\n", encoding="utf-8")
    os.replace(staging, analysis_root / LATEST)
