"""DuckDB connections of the cleansing step: a memory limit, spill files in a work folder, SQL helpers."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from crm_analytics import schema

MEMORY_LIMIT = "2GB"  # per connection; larger intermediates (joins, sorts, temporary tables) spill to disk


def quote(text: object) -> str:
    """Return ``text`` as a SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def connect(work_dir: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection limited to ``MEMORY_LIMIT``, spilling to ``work_dir`` (when given).

    Its spill files go to a folder of this process's own (``duckdb_tmp-<pid>``): DuckDB names them by block size
    only, so connections of worker processes validating sources side by side would overwrite each other's.
    """
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET memory_limit = {quote(MEMORY_LIMIT)}")
    if work_dir is not None:
        con.execute(f"SET temp_directory = {quote(Path(work_dir) / f'duckdb_tmp-{os.getpid()}')}")
    return con


def contract_select(relation: str, table: schema.Table, present: list[str]) -> str:
    """SELECT every contract column of ``table`` from ``relation`` in order and type (those not ``present`` as null)."""
    columns = [f'CAST("{c.name}" AS {c.duckdb_type}) AS "{c.name}"' if c.name in present else f'CAST(NULL AS {c.duckdb_type}) AS "{c.name}"' for c in table.columns]
    return f"SELECT {', '.join(columns)} FROM {relation}"


def copy_to_parquet(con: duckdb.DuckDBPyConnection, select: str, path: Path) -> int:
    """Write the rows of ``select`` to a Parquet file; return how many."""
    return int(con.execute(f"COPY ({select}) TO {quote(path)} (FORMAT parquet)").fetchone()[0])  # COPY returns the row count


def arrow(frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table to register: DuckDB reads Arrow strings without converting them to Python objects.

    A text column with no value at all stays text (Arrow would infer its type as null).
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, column in enumerate(table.schema):
        is_text = pd.api.types.is_string_dtype(frame[column.name].dtype) or frame[column.name].dtype == object
        if pa.types.is_null(column.type) and is_text:
            table = table.set_column(i, pa.field(column.name, pa.string()), table.column(i).cast(pa.string()))
    return table
