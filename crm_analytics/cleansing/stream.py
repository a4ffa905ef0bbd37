"""Validate a CSV source too large for memory, chunk by chunk.

``validate_csv_in_chunks`` reads the file in chunks of ``chunk_rows`` rows
(text, as ``crm_analytics.sources`` reads CSV), maps its columns onto the
canonical names, and validates each chunk with ``validate.validate_source``.
Memory stays bounded by the chunk size whatever the file size. Source row
numbers continue across chunks. Key uniqueness is checked within each chunk
only; check it across chunks where the clean rows are stored (e.g. DuckDB).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from crm_analytics import schema, sources
from crm_analytics.cleansing import validate

_DELIMITERS = (",", ";", "\t", "|")


def _delimiter(header: str, expected: list[str]) -> str:
    for delimiter in _DELIMITERS:
        if all(name in next(csv.reader([header], delimiter=delimiter)) for name in expected):
            return delimiter
    return ","


def iter_csv_chunks(name: str, spec: Mapping[str, Any], dataset_dir: str | Path, *, chunk_rows: int = 200_000) -> Iterator[pd.DataFrame]:
    """Yield a CSV source in chunks with canonical column names and ``_source``, ``_source_file``, ``_source_row``.

    Raises ``sources.SourceError`` for an empty file or a missing required column, naming the file.
    """
    path = sources.source_path(spec, dataset_dir)
    if not path.exists() or path.stat().st_size == 0:
        raise sources.SourceError(f"{path}: empty input or file not found")
    encoding = spec.get("encoding", "auto")
    encoding = sources.detect_encoding(path) if encoding == "auto" else encoding
    with open(path, encoding=encoding) as handle:
        header = handle.readline().rstrip("\r\n")
    column_map: dict[str, str] = dict(spec["columns"])
    delimiter = spec.get("delimiter") or _delimiter(header, list(column_map.values()))
    present = next(csv.reader([header], delimiter=delimiter))
    required = [c for c in schema.get_table(spec["table"]).required_columns if c in column_map]
    missing = [column_map[c] for c in required if column_map[c] not in present]
    if missing:
        raise sources.SourceError(f"{path}: missing required column(s) {missing}; the file has columns {present}")
    rename = {source: canonical for canonical, source in column_map.items() if source in present}
    offset = 0
    reader = pd.read_csv(path, encoding=encoding, sep=delimiter, dtype=str, keep_default_na=False, na_values=[""],
                         usecols=list(rename), chunksize=chunk_rows)
    for chunk in reader:
        frame = chunk.rename(columns=rename).reset_index(drop=True)
        for canonical, value in (spec.get("constants") or {}).items():
            frame[canonical] = value
        frame["_source"] = name
        frame["_source_file"] = str(path)
        frame["_source_row"] = range(offset + 1, offset + len(frame) + 1)
        offset += len(frame)
        yield frame


def validate_csv_in_chunks(
    name: str, spec: Mapping[str, Any], dataset_dir: str | Path, *, as_of: pd.Timestamp, chunk_rows: int = 200_000
) -> Iterator[validate.ValidatedSource]:
    """Yield one ``ValidatedSource`` per chunk of a large CSV source (see the module notes)."""
    for frame in iter_csv_chunks(name, spec, dataset_dir, chunk_rows=chunk_rows):
        yield validate.validate_source(name, frame, spec, as_of=as_of)
