"""The DuckDB warehouse: write it atomically, hand out its tables as Ibis expressions.

The warehouse is one file per dataset, ``data/warehouse/<dataset>.duckdb``, holding the canonical
tables of ``crm_analytics.schema``. It is always written whole into a new file
that replaces the old one only when complete, so a failed build never damages
the last good warehouse.

The cleansing build (``crm_analytics.cleansing``, ``crm-analytics build-warehouse``)
is the only way data gets in: standardisation, quarantine and entity resolution,
written with ``write_tables``. ``coerce_to_contract`` is the plain type cast, for
frames that need no cleansing.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import duckdb
import ibis
import pandas as pd
import psutil

from crm_analytics import datasets, paths, schema, sources, stale_runs
from crm_analytics.parsing import ISO8601, parse_amounts, parse_datetimes

MEMORY_LIMIT_ENV = "CRM_ANALYTICS_DUCKDB_MEMORY_LIMIT"
"""Environment variable: DuckDB's memory limit (e.g. ``"6GB"``) for every ``connect`` of the process; unset: DuckDB's own
default, 80% of the RAM. ``crm-analytics run-all`` sets it for runs working side by side (``parallel_memory_limit``)."""


class WarehouseMissingError(FileNotFoundError):
    """The warehouse file does not exist yet."""


def connect(path: str | Path | None = None, *, read_only: bool = True, dataset: str | None = None):
    """Open the warehouse as an Ibis DuckDB backend; ``con.table("orders")`` is an Ibis table.

    ``path`` empty or ``None`` means the dataset's warehouse, ``data/warehouse/<dataset>.duckdb``
    (``dataset`` empty: the project's default dataset). Read-only by default, so several
    notebooks can read at once.
    """
    location = paths.resolve(path, paths.warehouse_path(dataset or None))
    if read_only and not location.exists():
        raise WarehouseMissingError(
            f"no warehouse at {location}; build it with `crm-analytics build-warehouse` or run the cleansing notebook"
        )
    limit = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    return ibis.duckdb.connect(database=str(location), read_only=read_only, **({"memory_limit": limit} if limit else {}))


def parallel_memory_limit(jobs: int, *, total_bytes: int | None = None) -> str:
    """DuckDB's memory limit for each of ``jobs`` runs working side by side: half the RAM, split evenly.

    Each DuckDB would otherwise take up to 80% of the RAM, so two large runs at once could together ask
    for more than the machine has; the other half is left to what the runs hold outside the engine
    (pandas frames, models, which this limit does not bound) and to the operating system. Queries over
    the limit spill to disk.

    Parameters
    ----------
    jobs : int
        Runs at once (at least 1).
    total_bytes : int, optional
        The RAM in bytes; default: this machine's.

    Returns
    -------
    str
        The limit in whole megabytes, as DuckDB's ``memory_limit`` setting reads it (e.g. ``"5990MB"``).
    """
    total = psutil.virtual_memory().total if total_bytes is None else total_bytes
    return f"{max(1, total // 2 // max(1, jobs) // 10**6)}MB"


def table_row_counts(path: str | Path | None = None) -> dict[str, int]:
    """Return ``{table name: rows}`` for every table in the warehouse."""
    location = paths.resolve(path, paths.warehouse_path())
    with duckdb.connect(str(location), read_only=True) as con:
        names = [row[0] for row in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
        return {name: con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}


def dataset_info(path: str | Path | None = None) -> dict[str, Any]:
    """Return the warehouse's ``dataset_info`` row: ``name``, ``time_zone``, ``currency``, ``country``, ``locale``, ``built_at``.

    The cleansing build writes it (``built_at``: a naive UTC timestamp). ``path`` empty: the default
    dataset's warehouse. Returns an empty dict for a warehouse built before the table existed;
    ``WarehouseMissingError`` when there is no warehouse.
    """
    location = paths.resolve(path, paths.warehouse_path())
    if not location.exists():
        raise WarehouseMissingError(f"no warehouse at {location}; build it with `crm-analytics build-warehouse` or run the cleansing notebook")
    with duckdb.connect(str(location), read_only=True) as con:
        present = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'dataset_info'").fetchone()[0]
        if not present:
            return {}
        frame = con.execute("SELECT * FROM dataset_info LIMIT 1").df()
    return {column: (None if pd.isna(value) else value) for column, value in frame.iloc[0].items()} if len(frame) else {}


class BuildCancelled(KeyboardInterrupt):
    """A build cancelled by SIGINT (``watch_for_cancel``)."""


_cancel_requested = threading.Event()


def _interrupt_build(signum: int, frame) -> None:
    _cancel_requested.set()
    raise BuildCancelled(f"build cancelled by signal {signum}")


def watch_for_cancel() -> None:
    """Make SIGINT cancel the build of this process (call from the main thread): it interrupts at once, as Python's own
    handler does, and is remembered, so ``check_cancelled`` stops the build at its next step even when a library
    swallowed that first interrupt (DuckDB turns an interrupt inside a query into its own outcome)."""
    _cancel_requested.clear()
    signal.signal(signal.SIGINT, _interrupt_build)


def check_cancelled() -> None:
    """Raise ``BuildCancelled`` when a SIGINT has arrived since ``watch_for_cancel``: called at the end of every build
    step and just before the new warehouse replaces the old one."""
    if _cancel_requested.is_set():
        raise BuildCancelled("build cancelled by SIGINT")


def write_tables(tables: Mapping[str, pd.DataFrame | str], *, path: str | Path | None = None, memory_limit: str | None = None,
                 unordered: Collection[str] = ()) -> Path:
    """Write a complete warehouse atomically and return its path.

    ``tables`` maps a table name to a pandas DataFrame or to a DuckDB ``SELECT``
    (for tables too large to pass through pandas). Canonical tables are created
    with their contract's column types and order; other tables (quarantine,
    lineage, quality) keep the frame's own types. The new file replaces the old
    one only after every table is written. ``memory_limit`` (e.g. ``"2GB"``) caps
    DuckDB's memory while writing (default: DuckDB's own, 80% of the RAM).
    ``unordered``: tables whose rows arrive in no particular order anyway; they are inserted
    without keeping it, which lets DuckDB write them in parallel without buffering (the others
    keep the order of their frame or ``SELECT``).
    """
    target = paths.resolve(path, paths.warehouse_path())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}{BUILDING_MARKER}{os.getpid()}")
    _unlink_with_wal(staging)
    try:
        with duckdb.connect(str(staging)) as con:
            con.execute("SET enable_progress_bar = false")
            if memory_limit:
                con.execute("SET memory_limit = ?", [memory_limit])
            for name, content in tables.items():
                con.execute(f"SET preserve_insertion_order = {name not in unordered}")
                _write_one(con, name, content)
            con.execute("CHECKPOINT")
        check_cancelled()
        # a write-ahead log beside the target belongs to the old file: replayed onto the new one it would corrupt it
        target.with_name(target.name + WAL_SUFFIX).unlink(missing_ok=True)
        os.replace(staging, target)
    finally:
        _unlink_with_wal(staging)
    return target


BUILDING_MARKER = ".building-"  # <warehouse>.building-<pid>: the new file while write_tables writes it
STAGING_MARKER = ".staging-"  # <warehouse>.staging-<pid>/: the cleansing build's work folder
WAL_SUFFIX = ".wal"  # DuckDB's write-ahead log, <database>.wal


def _unlink_with_wal(database: Path) -> None:
    database.unlink(missing_ok=True)
    database.with_name(database.name + WAL_SUFFIX).unlink(missing_ok=True)


def build_leftovers(path: str | Path | None = None) -> list[Path]:
    """The files and folders that builds of the warehouse at ``path`` left beside it and whose process is gone.

    A build writes ``<warehouse>.building-<pid>`` (and its ``.wal``) and works in ``<warehouse>.staging-<pid>/``;
    it removes them itself unless it was killed outright (SIGKILL, the out-of-memory killer). A leftover whose
    process still runs, and started before the leftover was last written, belongs to a build in progress and
    is not listed; a pid reused by a later process is not mistaken for the builder.
    """
    target = paths.resolve(path, paths.warehouse_path())
    pattern = re.compile(rf"{re.escape(target.name)}(?:{re.escape(BUILDING_MARKER)}|{re.escape(STAGING_MARKER)})(\d+)(?:{re.escape(WAL_SUFFIX)})?")
    found = []
    for candidate in sorted(target.parent.glob(f"{glob.escape(target.name)}.*")):
        match = pattern.fullmatch(candidate.name)
        if match and not _builder_alive(int(match.group(1)), candidate):
            found.append(candidate)
    return found


def _builder_alive(pid: int, leftover: Path) -> bool:
    started = stale_runs.process_start_time(pid)
    try:
        return started is not None and started <= leftover.stat().st_mtime + 1.0
    except FileNotFoundError:  # its build just removed it
        return True


def remove_build_leftovers(path: str | Path | None = None) -> list[Path]:
    """Remove ``build_leftovers(path)`` (the temporary files of killed builds) and return what was removed."""
    removed = build_leftovers(path)
    for leftover in removed:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return removed


def _write_one(con: duckdb.DuckDBPyConnection, name: str, content: pd.DataFrame | str) -> None:
    if isinstance(content, str):
        relation = f"({content})"
    else:
        con.register("_incoming", content)
        relation = "_incoming"
    if name in schema.TABLES:
        contract = schema.TABLES[name]
        con.execute(schema.create_table_sql(contract))
        names = ", ".join(f'"{c}"' for c in contract.column_names)
        con.execute(f'INSERT INTO "{name}" ({names}) SELECT {names} FROM {relation}')
    else:
        con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM {relation}')
    if relation == "_incoming":
        con.unregister("_incoming")


def coerce_to_contract(frame: pd.DataFrame, spec: Mapping[str, Any], *, business_time_zone: str | None = None) -> pd.DataFrame:
    """Return ``frame`` with every canonical column cast to its contract type; unparsable values become missing.

    Timestamps are parsed with the source's ``date_formats`` and moved from its
    ``time_zone`` into ``business_time_zone`` (naive local time; default: the
    default dataset's zone). Lineage columns are kept.
    """
    business_time_zone = business_time_zone or datasets.load_dataset(None).time_zone
    contract = schema.get_table(spec["table"])
    out = pd.DataFrame(index=frame.index)
    for column in contract.columns:
        if column.name not in frame.columns:
            out[column.name] = pd.Series(pd.NA, index=frame.index, dtype=column.pandas_dtype)
            continue
        out[column.name] = _coerce(frame[column.name], column.dtype, spec, business_time_zone)
    for lineage in sources.LINEAGE_COLUMNS:
        if lineage in frame.columns:
            out[lineage] = frame[lineage]
    return out


def _coerce(values: pd.Series, dtype: str, spec: Mapping[str, Any], business_time_zone: str) -> pd.Series:
    """Cast one column with the cleansing standardisers' parsers; what they cannot read becomes missing."""
    if dtype == "string":
        return values.astype("string").str.strip()
    if dtype in ("int64", "float64"):
        numbers = parse_amounts(values)["value"]
        return numbers.round().astype("Int64") if dtype == "int64" else numbers.astype("Float64")
    if dtype == "bool":
        text = values.astype("string").str.strip().str.lower()
        return text.map({"true": True, "1": True, "y": True, "yes": True, "false": False, "0": False, "n": False, "no": False}).astype("boolean")
    parsed = parse_datetimes(
        values,
        formats=spec.get("date_formats") or [ISO8601],
        time_zone=spec.get("time_zone") or business_time_zone,
        business_time_zone=business_time_zone,
        date_only=dtype == "date",
    )
    return parsed["value"]
