"""Run analysis notebooks with papermill and leave an immutable record of each run.

Every run reads one dataset (``parameters/datasets/<name>.yaml``): the explicit parameter
``dataset``, else the ``dataset`` argument (the command line's ``--dataset``), else the project
default (:func:`crm_analytics.paths.default_dataset`). The runner checks that the dataset exists,
injects its name into notebooks that declare ``dataset``, defaults ``warehouse_path`` to the
dataset's warehouse and sets ``CRM_ANALYTICS_DATASET`` for the kernel, so whatever the notebook
reads by default (another analysis's latest results included) belongs to the same dataset.

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
- ``run.json``: the run record (see :func:`run_analysis`).

``outputs/<dataset>/<analysis>/latest`` points at the last successful run of that
dataset and moves only after a success, atomically (runs of different datasets never
move each other's pointer). A failed run keeps its partial notebook and error;
the previous good report stays where it was.

The runner decides success itself: papermill returns normally for ``sys.exit(0)``
and marks cells ``completed`` after a cell timeout, so a run succeeds only when
papermill returned normally and every non-empty code cell has an execution count
and no cell is ``pending``, ``running`` or ``failed``.

Before a kernel starts, the warehouse's row counts are checked against what the analysis
needs (:mod:`crm_analytics.requirements`): when a required table is missing or empty the
run is recorded ``not_applicable`` with the reason in ``run.json`` (``"reason": "needs
web_events"``), no kernel starts, and :attr:`RunResult.ok` is true (nothing failed).

Each notebook executes in a child process forked from the runner (which has
already imported papermill and nbconvert, so a run costs a kernel start rather
than an interpreter start). The child starts its own session; the kernel that
jupyter_client launches starts yet another session, so a wall-clock timeout kills
the child's process tree by walking it (psutil) and killing every process group
in it. ZMQ state lives only in the child and dies with it.

Cancelling: while runs are under way SIGINT and SIGTERM only set a flag
(:func:`cancel_on_signals`); the runner then kills each run's process tree, records it
``cancelled`` (with ``"signal"``, its partial notebook and report; ``latest`` stays) and the
command exits 128 plus the signal number. Further signals while stopping change nothing. The
child watches its parent: if the runner is killed outright, the child kills the kernel and every
other descendant, then exits (the analysis lock it inherited is released last). ``run.json``
names the runner (``pid``, ``pid_started_at``), so a ``.tmp`` folder whose runner is gone is
recorded ``abandoned`` by the next run of the analysis or the next index build
(:mod:`crm_analytics.stale_runs`).

Data fingerprint recorded in ``run.json``: the warehouse file's absolute path,
size in bytes, modification time (UTC, ISO 8601) and the SHA-256 of its first and
last MiB (``head_tail_sha256``). DuckDB keeps its checkpoint counter in the file
header, so this is a cheap change detector, not a proof that two files hold the
same data.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import filelock

from crm_analytics.imports import import_without

# jsonschema (under nbformat) loads rfc3987_syntax, which builds a parser for the "iri" format at
# import (2-3 s); notebook validation never uses that format.
import_without("jsonschema", hidden=("rfc3987_syntax",))

import nbformat  # noqa: E402
import papermill
import psutil
import yaml
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from crm_analytics import datasets, kernels, parameter_types, paths, stale_runs

log = logging.getLogger(__name__)

KERNEL_NAME = "python3"
CLEANSING = "cleansing"
DATASET_PARAMETER = "dataset"
REQUIRED_PARAMETERS = ("output_dir",)

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
CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM)

RUN_RECORD = "run.json"
REPORT = "report.html"
LATEST = "latest"
LOCK = ".lock"
TMP_SUFFIX = ".tmp"

_ANALYSIS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
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
_KILL_WAIT_S = 5.0

ProgressCallback = Callable[[str, str, "RunResult | None"], None]


class RunnerError(Exception):
    """Base class of the runner's user-facing errors (one clear line, no traceback needed)."""


class UnknownAnalysisError(RunnerError, LookupError):
    """The analysis has no notebook. The message lists the valid names."""


class ParameterError(RunnerError, ValueError):
    """A parameter is not declared by the notebook, or a parameter file is unreadable."""


class UnknownDatasetError(RunnerError, LookupError):
    """The dataset of a run has no usable file under ``parameters/datasets/``."""


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


# ----------------------------------------------------------------------------- names and parameters


def list_analyses(notebook_dir: str | Path | None = None) -> list[str]:
    """Return the analyses: the stems of the top-level ``*.ipynb`` in the notebooks folder, sorted."""
    folder = Path(notebook_dir) if notebook_dir else paths.notebooks_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.ipynb") if p.is_file() and not p.name.startswith((".", "_")))


def notebook_path(analysis: str, notebook_dir: str | Path | None = None) -> Path:
    """Return the absolute notebook path of ``analysis``; raise :class:`UnknownAnalysisError` if there is none."""
    folder = (Path(notebook_dir) if notebook_dir else paths.notebooks_dir()).resolve()
    known = list_analyses(folder)
    if _ANALYSIS_NAME.match(analysis) and analysis in known:
        return folder / f"{analysis}.ipynb"
    hint = _did_you_mean(analysis, known)
    valid = ", ".join(known) if known else f"none (no notebooks in {folder})"
    raise UnknownAnalysisError(f"unknown analysis {analysis!r}{hint}; valid analyses: {valid}")


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _StringDateLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that keeps ISO dates and times as strings (notebooks parse them)."""


_StringDateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_value(text: str) -> Any:
    """Parse one command-line parameter value as YAML: numbers and booleans typed, dates kept as strings.

    An empty value is the empty string.
    """
    if text.strip() == "":
        return ""
    return yaml.load(text, Loader=_StringDateLoader)  # noqa: S506 - a SafeLoader subclass


def load_parameters_file(path: str | Path) -> dict:
    """Read a flat YAML parameter set; dates stay ISO strings. Raise :class:`ParameterError` if unusable."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            values = yaml.load(handle, Loader=_StringDateLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ParameterError(f"parameter file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"parameter file {path} is not valid YAML: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ParameterError(f"parameter file {path} must hold a mapping of name: value, not {type(values).__name__}")
    return dict(values)


def declared_parameters(notebook: str | Path) -> dict[str, dict]:
    """Return the parameters declared in a notebook's ``parameters`` cell (``papermill.inspect_notebook``).

    A notebook without kernel metadata is read as Python, the kernel it will run on.
    """
    try:
        return dict(papermill.inspect_notebook(str(notebook)))
    except ValueError as exc:
        if "kernel name" not in str(exc):
            raise
    from papermill.inspection import _infer_parameters

    nb = nbformat.read(notebook, as_version=4)
    return {p.name: dict(p._asdict()) for p in _infer_parameters(nb, name=KERNEL_NAME, language="python")}


def check_parameters(analysis: str, values: Mapping[str, Any], declared: Iterable[str]) -> None:
    """Raise :class:`ParameterError` when ``values`` holds a key the notebook does not declare.

    The message names the unknown keys, suggests the closest declared name and lists the valid ones.
    Every notebook must declare ``output_dir``.
    """
    declared = sorted(declared)
    missing = [name for name in REQUIRED_PARAMETERS if name not in declared]
    if missing:
        raise ParameterError(
            f"notebook {analysis!r} must declare {', '.join(missing)} in a cell tagged 'parameters'"
            f" (declared: {', '.join(declared) or 'nothing'})"
        )
    unknown = [key for key in values if key not in declared]
    if unknown:
        hints = "; ".join(f"{key!r}{_did_you_mean(key, declared)}" for key in unknown)
        raise ParameterError(
            f"unknown parameter for {analysis!r}: {hints}; valid parameters: {', '.join(declared)}"
        )


def check_parameter_types(
    analysis: str, values: Mapping[str, Any], declared: Mapping[str, Mapping[str, Any]], *, origins: Mapping[str, str] | None = None
) -> None:
    """Raise :class:`ParameterError` when a value does not fit the type of the notebook's default.

    Dates must parse as ISO dates, ints be ints, choices among the allowed values
    (:mod:`crm_analytics.parameter_types`); the message names the parameter, the value, where it
    came from (``origins``) and the expected type. ``dataset`` and ``output_dir`` are the runner's own.
    """
    try:
        parameter_types.check_types(analysis, values, declared, origins=origins, skip=(DATASET_PARAMETER, "output_dir"))
    except parameter_types.TypeMismatch as exc:
        raise ParameterError(str(exc)) from None


def choose_dataset(*, explicit: Any = None, given: str | None = None, from_files: Any = None) -> str:
    """Return the dataset a run reads and check that it exists.

    Parameters
    ----------
    explicit : str, optional
        ``dataset`` among the explicit parameters (``-p dataset=...``); wins when non-empty.
    given : str, optional
        The run's dataset argument (``--dataset``).
    from_files : str, optional
        ``dataset`` of a parameter file or ``default.yaml``; used when neither of the above is given.

    Returns
    -------
    str
        The dataset name; the project default (:func:`crm_analytics.paths.default_dataset`) when
        nothing is given.

    Raises
    ------
    UnknownDatasetError
        The dataset file is missing or unusable (the message lists the known datasets).
    """
    name = next((str(v).strip() for v in (explicit, given, from_files) if v not in (None, "") and str(v).strip()), "")
    name = name or paths.default_dataset()
    try:
        datasets.load_dataset(name)
    except datasets.DatasetError as exc:
        raise UnknownDatasetError(str(exc)) from None
    return name


def resolve_parameters(
    analysis: str,
    *,
    notebook: Path,
    parameters: Mapping[str, Any] | None = None,
    parameters_file: str | Path | None = None,
    parameters_root: str | Path | None = None,
    dataset: str | None = None,
) -> dict:
    """Merge ``parameters/<analysis>/default.yaml``, then ``parameters_file``, then ``parameters``; check the keys.

    Non-empty relative values of keys ending in ``_path`` or ``_dir`` are made absolute against the
    project root (parameter files name project files). The dataset is chosen by :func:`choose_dataset`
    (``parameters["dataset"]``, else ``dataset``, else a file's value, else the project default) and
    injected when the notebook declares ``dataset``; an empty or absent ``warehouse_path`` (when
    declared) becomes that dataset's warehouse, so the run record says which file was read.
    ``output_dir`` is added later.
    """
    merged, _ = _resolve(analysis, notebook=notebook, parameters=parameters, parameters_file=parameters_file,
                         parameters_root=parameters_root, dataset=dataset)
    return merged


def _resolve(
    analysis: str,
    *,
    notebook: Path,
    parameters: Mapping[str, Any] | None,
    parameters_file: str | Path | None,
    parameters_root: str | Path | None,
    dataset: str | None,
) -> tuple[dict, str]:
    """:func:`resolve_parameters` plus the chosen dataset (also for notebooks that do not declare it)."""
    root = Path(parameters_root) if parameters_root else paths.parameters_dir()
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}  # parameter -> where its value came from, for type errors
    default = root / analysis / "default.yaml"
    if default.is_file():
        merged.update(load_parameters_file(default))
        origins.update(dict.fromkeys(merged, str(default)))
    if parameters_file:
        from_file = load_parameters_file(parameters_file)
        merged.update(from_file)
        origins.update(dict.fromkeys(from_file, str(parameters_file)))
    explicit = dict(parameters or {})
    origins.update(dict.fromkeys(explicit, "the explicit parameters (-p)"))
    chosen = choose_dataset(
        explicit=explicit.get(DATASET_PARAMETER), given=dataset, from_files=merged.get(DATASET_PARAMETER)
    )
    merged.update(explicit)
    declared = declared_parameters(notebook)
    check_parameters(analysis, merged, declared)
    check_parameter_types(analysis, merged, declared, origins=origins)
    for key, value in merged.items():
        if key.endswith(("_path", "_dir")) and isinstance(value, str) and value:
            merged[key] = str(paths.resolve(value, Path(value)))
    if DATASET_PARAMETER in declared:
        merged[DATASET_PARAMETER] = chosen
    if "warehouse_path" in declared and not merged.get("warehouse_path"):
        merged["warehouse_path"] = str(paths.warehouse_path(chosen))
    return merged, chosen


def spread_parameters(
    common: Mapping[str, Any],
    analyses: Iterable[str],
    *,
    notebook_dir: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Give each analysis the keys of ``common`` its notebook declares (``run-all -p key=value``).

    Returns ``{analysis: {key: value}}``. A key that no notebook declares raises
    :class:`ParameterError` naming it with the closest declared name.
    """
    names = list(analyses)
    declared = {name: set(declared_parameters(notebook_path(name, notebook_dir))) for name in names}
    everywhere = set().union(*declared.values()) if declared else set()
    unknown = [key for key in common if key not in everywhere]
    if unknown:
        hints = "; ".join(f"{key!r}{_did_you_mean(key, everywhere)}" for key in unknown)
        raise ParameterError(f"no analysis declares the parameter {hints}")
    return {name: {k: v for k, v in common.items() if k in declared[name]} for name in names}


# ----------------------------------------------------------------------------- run records


def new_run_id(now: datetime | None = None) -> str:
    """Return a sortable run id: the UTC time to the millisecond plus a short random suffix."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(3)


def _utc_iso(moment: float) -> str:
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
    record.update(size_bytes=stat.st_size, mtime=_utc_iso(stat.st_mtime), head_tail_sha256=digest.hexdigest())
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


# ----------------------------------------------------------------------------- latest pointer


def dataset_outputs(output_root: str | Path | None = None, dataset: str | None = None) -> Path:
    """Return ``<output_root>/<dataset>/`` (default ``outputs/`` and the project's default dataset), absolute."""
    root = Path(output_root) if output_root else paths.outputs_root()
    return root.resolve() / (dataset or paths.default_dataset())


def _analysis_root(analysis: str, output_root: str | Path | None, dataset: str | None = None) -> Path:
    return dataset_outputs(output_root, dataset) / analysis


def latest_run(analysis: str, *, output_root: str | Path | None = None, dataset: str | None = None) -> Path | None:
    """Return the folder of the last successful run of ``analysis`` on ``dataset``, or ``None``.

    ``output_root`` is the folder of every dataset's outputs (default ``outputs/``); ``dataset``
    defaults to the project's default dataset. ``latest`` is a relative symlink; where symlinks
    are unavailable it is a small file holding the run id.
    """
    target = paths.read_latest_pointer(_analysis_root(analysis, output_root, dataset))
    return target if target.is_dir() and target.name != LATEST else None


def move_latest(analysis_root: Path, run_id: str) -> None:
    """Point ``analysis_root/latest`` at ``run_id``: a new link beside it, then ``os.replace`` (atomic)."""
    staging = analysis_root / f".{LATEST}.{secrets.token_hex(4)}"
    try:
        os.symlink(run_id, staging, target_is_directory=True)
    except (OSError, NotImplementedError):
        staging.write_text(run_id + "\n", encoding="utf-8")
    os.replace(staging, analysis_root / LATEST)


# ----------------------------------------------------------------------------- the child process


_held_lock_fds: set[int] = set()
_held_lock_fds_guard = threading.Lock()
_warm = threading.Event()


def _exporter() -> HTMLExporter:
    """The report exporter: HTML without code cells, input or output prompts."""
    exporter = HTMLExporter()
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    return exporter


def warm_up() -> None:
    """Compile the report template once in this process so forked runs inherit it (about 0.2 s, once)."""
    if _warm.is_set():
        return
    _exporter().from_notebook_node(nbformat.v4.new_notebook())
    _warm.set()


def write_report(notebook: Path, html: Path) -> None:
    """Convert an executed notebook into ``html`` (no code cells, no prompts)."""
    body, _ = _exporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    html.write_text(body, encoding="utf-8")


def _isolate_child(run_dir: Path, own_lock_fd: int | None, dataset: str | None = None) -> None:
    """First steps of a forked run: own session, quiet fds, no foreign lock files, logging into the run folder.

    The kernel inherits ``CRM_ANALYTICS_DATASET``: what the notebook reads by default is the run's dataset.
    """
    os.setsid()
    # The parent's handlers only set a flag in its own memory; here they would swallow the signal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code_root = str(paths.code_root())
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH", "")) if p)
    if dataset:
        os.environ[paths.DATASET_ENV] = dataset
    for fd in list(_held_lock_fds):
        if fd != own_lock_fd:
            with contextlib.suppress(OSError):
                os.close(fd)
    engine_log = os.open(run_dir / "engine.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(engine_log, 1)
    os.dup2(engine_log, 2)
    os.close(devnull)
    os.close(engine_log)
    # The parent's sys.stdout/sys.stderr may be wrappers (a progress display, a test's capture).
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)  # noqa: SIM115
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("papermill", "nbclient", "traitlets"):
        logging.getLogger(name).setLevel(logging.INFO)


def _classify(exc: BaseException) -> dict:
    """Map an exception from papermill to an outcome record."""
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


def _kill_descendants() -> None:
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _watch_parent(parent_pid: int, interval_s: float = 0.5) -> threading.Thread:
    """Start a daemon thread that ends this process's tree and this process once ``parent_pid`` is gone.

    A runner killed outright (``kill -9``, the OOM killer) cannot end its run; the child then finds
    itself re-parented, kills the kernel and every other descendant (waiting for them, so the lock
    it inherited is held until they are gone) and exits.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error, OSError):
                kill_process_tree(child.pid)
        os._exit(1)

    thread = threading.Thread(target=watch, name="crm-run-parent-watch", daemon=True)
    thread.start()
    return thread


def _child_main(spec: dict, conn: multiprocessing.connection.Connection) -> None:
    """Body of the forked run: execute the notebook with papermill, write the report, send the outcome."""
    run_dir = Path(spec["run_dir"])
    _isolate_child(run_dir, spec.get("lock_fd"), spec.get("dataset"))
    _watch_parent(spec.get("parent_pid") or os.getppid())
    outcome: dict[str, Any] = {"kind": SUCCEEDED}
    kernel_options = {}
    if spec.get("prefork"):  # fork the kernel-to-be now, before papermill starts its event loop and sockets
        kernels.PreforkedKernelManager.waiting = kernels.PreforkedKernel(close_fds=(conn.fileno(), spec.get("lock_fd")))
        kernel_options["kernel_manager_class"] = kernels.PreforkedKernelManager
    try:
        with open(run_dir / "stdout.txt", "w", encoding="utf-8") as out, open(
            run_dir / "stderr.txt", "w", encoding="utf-8"
        ) as err:
            papermill.execute_notebook(
                spec["input"],
                spec["output"],
                parameters=spec["parameters"],
                kernel_name=KERNEL_NAME,
                progress_bar=False,
                log_output=False,
                stdout_file=out,
                stderr_file=err,
                cwd=spec["cwd"],
                execution_timeout=spec["cell_timeout"],
                # Every output has arrived when the last cell ends. A graceful shutdown would then wait
                # seconds for helper processes that ignore SIGTERM (multiprocessing's resource tracker);
                # the kernel's process group is killed instead.
                shutdown_kernel="immediate",
                **kernel_options,
            )
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a record
        outcome = _classify(exc)
        logging.getLogger(__name__).info("run ended with %s", outcome["error_name"])
    finally:
        _kill_descendants()
    with contextlib.suppress(Exception):
        if Path(spec["output"]).is_file():
            write_report(Path(spec["output"]), run_dir / REPORT)
    conn.send(outcome)
    conn.close()


# ----------------------------------------------------------------------------- verification


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


# ----------------------------------------------------------------------------- one run


def kill_process_tree(pid: int) -> list[int]:
    """Kill a process, every descendant and every process group among them; return the pids killed.

    The kernel that jupyter_client launches starts its own session, so killing the child's
    process group alone would leave the kernel running.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    groups = set()
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            groups.add(os.getpgid(proc.pid))
    own_group = os.getpgrp()
    for group in groups - {own_group}:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    # Our own child is reaped by its owner (multiprocessing); psutil must not reap it first.
    psutil.wait_procs([p for p in procs if p.pid != pid or not _is_own_child(p)], timeout=_KILL_WAIT_S)
    return [p.pid for p in procs]


def _is_own_child(proc: psutil.Process) -> bool:
    try:
        return proc.ppid() == os.getpid()
    except psutil.Error:
        return False


@dataclasses.dataclass
class _Run:
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
        return self.analysis_root / self.run_id

    def base_record(self) -> dict:
        return {
            "analysis": self.analysis,
            "run_id": self.run_id,
            "dataset": self.dataset,
            "notebook": str(self.notebook),
            "parameters": self.parameters,
            "status": "running",
            "started_at": _utc_iso(self.started),
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


def _prepare(
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
) -> _Run:
    """Validate the analysis, its dataset and its parameters (raising before anything is written) and describe the run."""
    notebook = notebook_path(analysis, notebook_dir)
    values, chosen = _resolve(
        analysis,
        notebook=notebook,
        parameters=parameters,
        parameters_file=parameters_file,
        parameters_root=parameters_root,
        dataset=dataset,
    )
    run_id = new_run_id()
    analysis_root = _analysis_root(analysis, output_root, chosen)
    tmp_dir = analysis_root / f"{run_id}{TMP_SUFFIX}"
    values["output_dir"] = str(tmp_dir)
    return _Run(
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


def _result(run: _Run, status: str, run_dir: Path | None, **extra: Any) -> RunResult:
    ended = time.time()
    return RunResult(
        analysis=run.analysis,
        run_id=run.run_id,
        status=status,
        run_dir=run_dir,
        parameters=run.parameters,
        started_at=_utc_iso(run.started),
        ended_at=_utc_iso(ended),
        duration_s=round(ended - run.started, 3),
        dataset=run.dataset,
        **extra,
    )


def _start(run: _Run, *, prefork_kernel: bool = False) -> RunResult | None:
    """Take the lock, create the run folder and fork the child; return a result when the run cannot start.

    With ``prefork_kernel`` (this process ran ``kernels.preload``) the child starts its kernel from a fork of itself.
    An analysis the warehouse cannot support is recorded ``not_applicable`` without a kernel.
    """
    reason = inapplicable_reason(run.analysis, run.parameters.get("warehouse_path") or paths.warehouse_path(run.dataset))
    if reason:
        return _record_not_applicable(run, reason)
    try:
        run.analysis_root.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(run.analysis_root / LOCK), timeout=0)
        lock.acquire()
    except filelock.Timeout:
        return _record_skipped(run)
    except OSError as exc:
        return _setup_failure(run, exc)
    run.lock = lock
    fd = _lock_fd(lock)
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
        "lock_fd": fd,
        "prefork": prefork_kernel,
        "dataset": run.dataset,
        "parent_pid": os.getpid(),
    }
    warm_up()
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    run.process = context.Process(target=_child_main, args=(spec, sender), name=f"crm-run-{run.analysis}", daemon=False)
    run.process.start()
    sender.close()
    run.conn = receiver
    run.deadline = time.monotonic() + run.run_timeout if run.run_timeout else math.inf
    log.info("run %s/%s started (pid %s)", run.analysis, run.run_id, run.process.pid)
    return None


def _lock_fd(lock: filelock.BaseFileLock) -> int | None:
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if fd is not None:
        with _held_lock_fds_guard:
            _held_lock_fds.add(fd)
    return fd


def _release(run: _Run) -> None:
    if run.lock is None:
        return
    fd = _lock_fd_of(run.lock)
    with _held_lock_fds_guard:
        _held_lock_fds.discard(fd)
    run.lock.release()
    run.lock = None


def _lock_fd_of(lock: filelock.BaseFileLock) -> int | None:
    return getattr(getattr(lock, "_context", None), "lock_file_fd", None)


def _record_skipped(run: _Run) -> RunResult:
    """Another process holds the analysis lock: leave a run folder holding only ``run.json``."""
    result = _result(run, SKIPPED_LOCKED, run.final_dir, error_message="another process is running this analysis")
    recorded = _record_without_kernel(run, result)
    if recorded.status == SKIPPED_LOCKED:
        log.info("run %s skipped: locked by another process", run.analysis)
    return recorded


def _record_not_applicable(run: _Run, reason: str) -> RunResult:
    """The data lacks what the analysis needs: leave a run folder holding only ``run.json`` (with the reason)."""
    result = _result(run, NOT_APPLICABLE, run.final_dir, reason=reason)
    recorded = _record_without_kernel(run, result)
    if recorded.status == NOT_APPLICABLE:
        log.info("run %s not applicable: %s", run.analysis, reason)
    return recorded


def _record_without_kernel(run: _Run, result: RunResult) -> RunResult:
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


def _setup_failure(run: _Run, exc: OSError) -> RunResult:
    message = f"cannot write the run folder under {run.analysis_root}: {exc.strerror or exc}"
    log.error("run %s failed: %s", run.analysis, message)
    return _result(run, FAILED, None, error_name=type(exc).__name__, error_message=message)


def _poll(run: _Run) -> bool:
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


def _decide(run: _Run) -> dict:
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
    if outcome["kind"] == TIMEOUT:
        index = _last_started_cell(output)
        outcome = {**outcome, "error_message": f"a cell exceeded the cell timeout of {run.cell_timeout:g} s"}
    return {
        "status": outcome["kind"],
        "error_name": outcome.get("error_name"),
        "error_message": outcome.get("error_message"),
        "error_cell_index": index,
    }


def _final_record(run: _Run, result: RunResult) -> dict:
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


def _finish(run: _Run) -> RunResult:
    """Write the record, rename the folder, move ``latest`` on success, release the lock."""
    try:
        decision = _decide(run)
        if not (run.tmp_dir / REPORT).exists() and (run.tmp_dir / run.notebook.name).is_file():
            with contextlib.suppress(Exception):
                write_report(run.tmp_dir / run.notebook.name, run.tmp_dir / REPORT)
        alerts = count_alerts(run.tmp_dir)
        result = _result(run, decision.pop("status"), run.final_dir, alert_count=alerts, **decision)
        try:
            write_json_atomic(run.tmp_dir / RUN_RECORD, _final_record(run, result))
            os.rename(run.tmp_dir, run.final_dir)
        except OSError as exc:
            return _result(
                run, FAILED, run.tmp_dir if run.tmp_dir.exists() else None,
                error_name=type(exc).__name__, error_message=f"cannot finalise the run folder: {exc}",
            )
        if result.ok:
            move_latest(run.analysis_root, run.run_id)
        log.info("run %s/%s %s in %.1f s", run.analysis, run.run_id, result.status, result.duration_s)
        return result
    finally:
        _release(run)


class Cancellation:
    """The first SIGINT or SIGTERM received while runs are under way.

    The handlers only record the signal; the runner's loop then kills the process trees of its
    runs and records them ``cancelled``. Later signals change nothing, so a second Ctrl-C while
    the runs are being stopped cannot interrupt the stopping and orphan a kernel.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def request(self, signum: int, frame: Any = None) -> None:
        if self.signum is None:
            self.signum = signum


@contextlib.contextmanager
def cancel_on_signals():
    """Within the block SIGINT and SIGTERM set the yielded :class:`Cancellation` instead of raising.

    Only the main thread can handle signals; elsewhere (a scheduler's worker) nothing is installed
    and the yielded object never fires. The previous handlers are restored on exit.
    """
    cancellation = Cancellation()
    if threading.current_thread() is not threading.main_thread():
        yield cancellation
        return
    previous = {signum: signal.getsignal(signum) for signum in CANCEL_SIGNALS}
    for signum in CANCEL_SIGNALS:
        signal.signal(signum, cancellation.request)
    try:
        yield cancellation
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _cancel(runs: Iterable[_Run], signum: int) -> None:
    """Kill the process tree of every run still under way and mark it cancelled by ``signum``."""
    for run in runs:
        if run.process is None or run.cancelled_by is not None or run.process.exitcode is not None:
            continue
        run.cancelled_by = signum
        log.warning("run %s/%s cancelled by %s", run.analysis, run.run_id, signal.Signals(signum).name)
        kill_process_tree(run.process.pid)


def _refresh_index(output_root: str | Path | None, dataset: str | None = None) -> None:
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
        Its ``status`` is one of :data:`STATUSES`; ``run.json`` in ``run_dir`` holds the same and
        more (versions, data fingerprint, git commit).

    Raises
    ------
    UnknownAnalysisError, UnknownDatasetError, ParameterError
        Before anything is executed or written.
    """
    run = _prepare(
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
        result = _start(run)
        if result is None:
            while not _poll(run):
                if cancellation.signum is not None:
                    _cancel([run], cancellation.signum)
                _wait([run], 0.5)
            result = _finish(run)
        if write_index:
            _refresh_index(output_root, run.dataset)
    return result


def _wait(runs: list[_Run], limit: float) -> None:
    """Sleep until a child ends, a deadline passes, or ``limit`` seconds elapse."""
    sentinels = [r.process.sentinel for r in runs if r.process is not None]
    deadline = min((r.deadline for r in runs), default=math.inf)
    timeout = max(0.0, min(limit, deadline - time.monotonic()))
    if sentinels:
        multiprocessing.connection.wait(sentinels, timeout=timeout)
    else:
        time.sleep(timeout)


def run_all(
    *,
    jobs: int = 2,
    analyses: list[str] | None = None,
    parameters_by_analysis: Mapping[str, Mapping[str, Any]] | None = None,
    on_progress: ProgressCallback | None = None,
    cell_timeout: float = 600,
    run_timeout: float = 3600,
    notebook_dir: str | Path | None = None,
    output_root: str | Path | None = None,
    parameters_root: str | Path | None = None,
    preload_kernels: bool = False,
    dataset: str | None = None,
    common_parameters: Mapping[str, Any] | None = None,
    parameters_file: str | Path | None = None,
) -> list[RunResult]:
    """Run ``cleansing`` first (when present), then every other analysis with ``jobs`` parallel workers.

    Every run reads ``dataset`` (default: the project's default dataset). ``parameters_file`` and
    ``common_parameters`` (the latter winning) go to every analysis whose notebook declares the
    key; a key no analysis declares is a :class:`ParameterError`. ``parameters_by_analysis`` wins
    over both.

    If ``cleansing`` does not succeed the others are not started (it builds the warehouse they read).
    Every analysis's parameters are checked before anything runs. ``on_progress(kind, analysis,
    result)`` is called from this thread with ``kind`` ``"started"``, ``"finished"`` (with the
    result) or ``"tick"`` (about twice a second, ``analysis`` empty) so a display can refresh
    without a thread of its own (forking next to other threads is best avoided).

    With ``preload_kernels`` this process imports the analysis libraries once, while the first
    run works, and later runs start their kernels from a fork of it (``crm_analytics.kernels``),
    saving each notebook's interpreter start and imports. Leave it off in a long-lived process
    whose code may change between batches: the kernels would inherit the modules loaded first.

    Returns
    -------
    list of RunResult
        In the order the runs finished.
    """
    names = list(analyses) if analyses is not None else list_analyses(notebook_dir)
    chosen, by_analysis = batch_parameters(
        names, dataset=dataset, common_parameters=common_parameters, parameters_file=parameters_file,
        parameters_by_analysis=parameters_by_analysis, notebook_dir=notebook_dir,
    )
    common = {
        "cell_timeout": cell_timeout,
        "run_timeout": run_timeout,
        "notebook_dir": notebook_dir,
        "output_root": output_root,
        "parameters_root": parameters_root,
        "dataset": chosen,
    }
    for name in names:  # fail fast, before any run
        _prepare(name, parameters=by_analysis.get(name), parameters_file=None, **common)
    notify = on_progress or (lambda kind, analysis, result: None)
    results: list[RunResult] = []
    with cancel_on_signals() as cancellation:
        if CLEANSING in names:
            names.remove(CLEANSING)
            first = _run_batch([CLEANSING], 1, by_analysis, common, notify, preload=preload_kernels, cancellation=cancellation)
            results.extend(first)
            if not first[0].ok:
                log.error("cleansing did not succeed (%s); the other analyses were not run", first[0].status)
                return results
        dependencies = run_order(names, parameters_root=parameters_root)
        queue = critical_path_first(
            names, dependencies, output_root=output_root, typical=typical_durations(parameters_root=parameters_root), dataset=chosen
        )
        results.extend(_run_batch(queue, max(1, jobs), by_analysis, common, notify, dependencies, preload=preload_kernels,
                                  cancellation=cancellation))
    return results


def batch_parameters(
    names: Iterable[str],
    *,
    dataset: str | None = None,
    common_parameters: Mapping[str, Any] | None = None,
    parameters_file: str | Path | None = None,
    parameters_by_analysis: Mapping[str, Mapping[str, Any]] | None = None,
    notebook_dir: str | Path | None = None,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """The dataset of a batch and each analysis's explicit parameters (see :func:`run_all`).

    The dataset is chosen as for a single run (:func:`choose_dataset`: ``common_parameters``, then
    ``dataset``, then the file). Raises :class:`UnknownDatasetError` or :class:`ParameterError`
    (a key of ``common_parameters`` or of the file that no analysis declares) before anything runs.
    """
    names = list(names)
    from_file = dict(load_parameters_file(parameters_file)) if parameters_file else {}
    chosen = choose_dataset(
        explicit=(common_parameters or {}).get(DATASET_PARAMETER), given=dataset, from_files=from_file.get(DATASET_PARAMETER)
    )
    shared = from_file | dict(common_parameters or {})
    if DATASET_PARAMETER in shared:
        shared[DATASET_PARAMETER] = chosen  # one dataset for the whole batch
    spread = spread_parameters(shared, names, notebook_dir=notebook_dir) if shared else {}
    by_analysis = {name: {**spread.get(name, {}), **dict((parameters_by_analysis or {}).get(name) or {})} for name in names}
    return chosen, by_analysis


def run_order(names: Iterable[str], *, parameters_root: str | Path | None = None) -> dict[str, set[str]]:
    """Which of ``names`` each analysis must wait for, from ``parameters/run_order.yaml`` (``after:``).

    Dependencies outside ``names`` are ignored (their latest results are used as they are).
    """
    declared = _run_order_file(parameters_root).get("after") or {}
    chosen = set(names)
    return {name: set(declared.get(name, ())) & chosen for name in chosen}


def typical_durations(*, parameters_root: str | Path | None = None) -> dict[str, float]:
    """Seconds each analysis usually takes, from ``parameters/run_order.yaml`` (``typical_seconds:``).

    Used to order runs that have never succeeded here (a fresh checkout); empty when not given.
    """
    return {name: float(seconds) for name, seconds in (_run_order_file(parameters_root).get("typical_seconds") or {}).items()}


def _run_order_file(parameters_root: str | Path | None) -> dict:
    path = Path(parameters_root or paths.parameters_dir()) / "run_order.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}


def critical_path_first(
    names: Iterable[str],
    dependencies: Mapping[str, set[str]] | None = None,
    *,
    output_root: str | Path | None = None,
    typical: Mapping[str, float] | None = None,
    dataset: str | None = None,
) -> list[str]:
    """``names`` ordered by the length of the longest chain of runs each one starts, longest first.

    A chain's length is the sum of the last successful durations of the analysis and of those that
    wait for it (``dependencies``: analysis -> what it waits for), so a run others depend on starts
    early and workers are not left idle at the end. An analysis never run here counts its
    ``typical`` seconds, else as long as the longest one known (1 s when none is known). Ties go by name.
    """
    names = list(names)
    known = {name: _last_duration(name, output_root, dataset) for name in names}
    fallback = max((d for d in known.values() if d is not None), default=1.0)
    duration = {name: (typical or {}).get(name, fallback) if d is None else d for name, d in known.items()}
    dependents: dict[str, set[str]] = {name: set() for name in names}
    for name, waits_for in (dependencies or {}).items():
        for other in waits_for & dependents.keys():
            dependents[other].add(name)

    lengths: dict[str, float] = {}
    visiting: list[str] = []

    def chain(name: str) -> float:
        if name in visiting:
            raise RunnerError(f"parameters/run_order.yaml has a cycle among {sorted(visiting[visiting.index(name):])}")
        if name not in lengths:
            visiting.append(name)
            lengths[name] = duration[name] + max((chain(d) for d in dependents[name]), default=0.0)
            visiting.pop()
        return lengths[name]

    return sorted(names, key=lambda name: (-chain(name), name))


def _last_duration(analysis: str, output_root: str | Path | None, dataset: str | None = None) -> float | None:
    """Seconds the last successful run of ``analysis`` on ``dataset`` took; None when it never succeeded."""
    run = latest_run(analysis, output_root=output_root, dataset=dataset)
    seconds = (read_run_record(run) or {}).get("duration_s") if run else None
    return float(seconds) if seconds is not None else None


def _run_batch(
    names: list[str],
    jobs: int,
    by_analysis: Mapping[str, Mapping[str, Any]],
    common: dict,
    notify: ProgressCallback,
    dependencies: Mapping[str, set[str]] | None = None,
    *,
    preload: bool = False,
    cancellation: Cancellation | None = None,
) -> list[RunResult]:
    """Run ``names`` with at most ``jobs`` children at a time, from this single thread.

    An analysis starts only when every analysis it depends on (``dependencies``) has finished,
    successfully or not: a dependent run then uses whatever latest results exist. With
    ``preload`` the kernel libraries are imported here once the first runs are under way.
    Once ``cancellation`` has fired no run starts and the running ones are cancelled.
    """
    queue = list(names)
    waits_for = {name: set((dependencies or {}).get(name, ())) for name in names}
    running: list[_Run] = []
    done: list[RunResult] = []
    while queue or running:
        if cancellation is not None and cancellation.signum is not None:
            queue.clear()
            _cancel(running, cancellation.signum)
        unfinished = set(queue) | {r.analysis for r in running}
        if queue and not running and all(waits_for[n] & unfinished for n in queue):
            raise RunnerError(f"parameters/run_order.yaml has a cycle among {sorted(queue)}")
        while (ready := [n for n in queue if not waits_for[n] & unfinished]) and len(running) < jobs:
            name = ready[0]
            queue.remove(name)
            run = _prepare(name, parameters=by_analysis.get(name), parameters_file=None, **common)
            notify("started", name, None)
            immediate = _start(run, prefork_kernel=preload and kernels.is_preloaded())
            if immediate is not None:
                done.append(immediate)
                notify("finished", name, immediate)
                _refresh_index(common["output_root"], common["dataset"])
            else:
                running.append(run)
        if preload and running and not kernels.is_preloaded():
            kernels.preload()  # in this process, while the started runs use the other cores
        for run in [r for r in running if _poll(r)]:
            running.remove(run)
            result = _finish(run)
            done.append(result)
            notify("finished", run.analysis, result)
            _refresh_index(common["output_root"], common["dataset"])
        if running:
            _wait(running, 0.5)
            notify("tick", "", None)
    return done
