"""Read raw source exports onto the canonical column names.

A source is declared in the ``sources:`` block of a dataset file
(``parameters/datasets/<name>.yaml``: format, encoding, column map, constants;
see the comments there). ``read_source`` returns the rows as read, with
canonical column names and three lineage columns:

``_source``
    the source's name in the map, e.g. ``store_members``;
``_source_file``
    the file (or SQL URL without credentials) it came from;
``_source_row``
    the 1-based data row number in that file, header excluded.

A CSV without a header line is declared with ``header: false`` and ``names`` (its
columns in order; the first line is then row 1). A source without ids declares
``generate_key: [columns that identify a row]``: its table's key becomes ``k`` and
the first 20 hex digits of the SHA-256 of those values' text (``generate_keys``),
the same in every run and order; identical rows share an id (the second is a
``duplicate_key`` in cleansing).

Values of CSV and Excel sources stay text (standardisation is the cleansing
step's job), so nothing is lost or guessed here. Parquet and SQL sources keep
their types. Problems that make a whole file unreadable raise
``SourceError`` naming the file and, where it applies, the column.

Derived sources. A dataset may declare named ``inputs:`` (``path`` relative to
its ``data_dir``, ``format`` csv / excel / parquet / sql, ``sheet`` a name, a
list or ``all``, ``encoding``, ``delimiter``; ``url`` and ``query`` for sql).
Each is read by the readers below and registered in an in-memory DuckDB under
its name, with the lineage columns ``_source_file`` (``file#sheet`` for a
workbook), ``_source_sheet`` and ``_source_row`` (1-based row within that file
or sheet). A source with ``query:`` (and no ``url``) is then a DuckDB SELECT
over those inputs whose result columns are canonical names plus the
passed-through ``_source_file`` and ``_source_row``; an aggregated row carries
the lineage of its first line, e.g.
``arg_min(_source_file, (_source_file, _source_row))``. So a row that fails
validation after a query is still quarantined with its file, sheet and row.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import difflib
import functools
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pandas as pd
import yaml

from crm_analytics import paths, schema

FORMATS = ("csv", "excel", "parquet", "sql")
DERIVED = "query"  # the format of a source derived by a DuckDB query over the dataset's inputs
ENCODING_CASCADE = ("utf-8-sig", "gb18030")
LINEAGE_COLUMNS = ("_source", "_source_file", "_source_row")
INPUT_LINEAGE = ("_source_file", "_source_sheet", "_source_row")  # columns of every registered input
_SPEC_KEYS = {"table", "path", "format", "encoding", "sheet", "time_zone", "date_formats", "columns", "constants", "url", "query",
              "delimiter", "inputs", "header", "names", "generate_key", "may_be_empty"}
INPUT_KEYS = {"path", "format", "sheet", "encoding", "delimiter", "url", "query", "description", "header", "names"}
ALL_SHEETS = "all"
# A CSV row that cannot be read is kept as a row fault, not a whole-file error: the frame then has the columns
# ``_row_fault`` (the reason code, missing on good rows) and ``_raw_line`` (what went wrong and the line as written,
# undecodable bytes escaped as ``\\xe9``); the row's values are missing, and cleansing quarantines it.
UNDECODABLE_BYTES = "undecodable_bytes"  # a byte sequence the file's encoding cannot decode
RAGGED_ROW = "ragged_row"  # more or fewer fields than the header
ROW_FAULT, RAW_LINE = "_row_fault", "_raw_line"
ROW_FAULT_COLUMNS = (ROW_FAULT, RAW_LINE)


class SourceError(ValueError):
    """A source cannot be read as declared. The message names the file and, where it applies, the column."""


def load_source_map(
    path: str | Path | None = None, *, inputs: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Read and check a source map: a dataset file's ``sources:`` block (default: the default dataset's file).

    Parameters
    ----------
    path : path, optional
        A dataset file (or an older stand-alone source map) holding ``sources:`` and, optionally, ``inputs:``.
    inputs : mapping, optional
        Named inputs added to (and overriding) the file's own ``inputs:`` block, e.g. a dataset's
        inputs for a source map kept in another file.

    Returns
    -------
    dict
        ``{source name: spec}``. A derived source (``query`` without ``url``) gets ``format: query`` and
        ``inputs``: the declared inputs it may read (all of them, or those it names in a list).

    Raises ``SourceError`` naming the file, the source and the key for an unknown table, format,
    canonical column, key or input name, and for a required column that is neither mapped nor a constant.
    """
    map_path = Path(path) if path else paths.sources_file()
    with open(map_path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    sources = document.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise SourceError(f"{map_path}: no `sources:` mapping found")
    declared = check_inputs(dict(document.get("inputs") or {}) | dict(inputs or {}), where=str(map_path))
    return {name: _attach_inputs(name, spec, declared, where=str(map_path)) for name, spec in sources.items()}


def check_inputs(inputs: Mapping[str, Any], *, where: str = "dataset file") -> dict[str, dict[str, Any]]:
    """Check named inputs; return them as ``{name: spec}``. ``SourceError`` names the file, the input and the key."""
    if not isinstance(inputs, Mapping):
        raise SourceError(f"{where}: `inputs` must map a name to an input (path, format, ...), got {inputs!r}")
    checked = {}
    for name, spec in inputs.items():
        prefix = f"{where}: input {name!r}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise SourceError(f"{prefix}: an input name must be a SQL identifier (letters, digits, '_'), as queries name it")
        if not isinstance(spec, Mapping):
            raise SourceError(f"{prefix}: expected a mapping with `path` and `format`, got {spec!r}")
        unknown = sorted(set(spec) - INPUT_KEYS)
        if unknown:
            raise SourceError(f"{prefix}: unknown key(s) {unknown}{_close_hint(unknown[0], INPUT_KEYS)}; allowed: {sorted(INPUT_KEYS)}")
        if spec.get("format") not in (*FORMATS, DERIVED):
            raise SourceError(f"{prefix}: format must be one of {(*FORMATS, DERIVED)}, got {spec.get('format')!r}")
        if spec["format"] == "sql" and not spec.get("url"):
            raise SourceError(f"{prefix}: a sql input needs `url` (a SQLAlchemy URL) and `query` or `path` (a table name)")
        if spec["format"] == DERIVED and not spec.get("query"):
            raise SourceError(f"{prefix}: a query input needs `query` (DuckDB SQL over the inputs declared before it)")
        if spec["format"] not in ("sql", DERIVED) and not spec.get("path"):
            raise SourceError(f"{prefix}: `path` is required (relative to the dataset's data_dir)")
        check_header_keys(spec, prefix=prefix)
        checked[str(name)] = dict(spec)
    return checked


def is_derived(spec: Mapping[str, Any]) -> bool:
    """Whether a source is derived by a DuckDB query over the dataset's inputs (``query`` without ``url``)."""
    return spec.get("format") == DERIVED or (bool(spec.get("query")) and not spec.get("url") and spec.get("format") in (None, DERIVED))


def _attach_inputs(name: str, spec: Any, declared: dict[str, dict[str, Any]], *, where: str) -> dict[str, Any]:
    """Check one source; a derived one gets ``format: query`` and the inputs it may read."""
    if not isinstance(spec, Mapping):
        raise SourceError(f"{where}: source {name!r}: expected a mapping (table, format, path or query, columns), got {spec!r}")
    spec = dict(spec)
    if is_derived(spec):
        spec["format"] = DERIVED
        own = spec.get("inputs")
        if isinstance(own, list):
            unknown = [n for n in own if n not in declared]
            if unknown:
                raise SourceError(f"{where}: source {name!r}: unknown input(s) {unknown}{_close_hint(str(unknown[0]), declared)}; "
                                  f"the declared inputs are {sorted(declared)}")
            spec["inputs"] = {n: declared[n] for n in own}
        else:
            spec["inputs"] = declared | check_inputs(own or {}, where=f"{where}: source {name!r}")
        spec["_where"] = where
    check_spec(name, spec, where=where)
    return spec


def check_spec(name: str, spec: dict[str, Any], *, where: str = "source map") -> None:
    """Raise ``SourceError`` if one source's spec is inconsistent with the schema."""
    prefix = f"{where}: source {name!r}"
    unknown_keys = {key for key in spec if not str(key).startswith("_")} - _SPEC_KEYS
    if unknown_keys:
        hint = _close_hint(sorted(unknown_keys)[0], _SPEC_KEYS)
        raise SourceError(f"{prefix}: unknown key(s) {sorted(unknown_keys)}{hint}; allowed: {sorted(_SPEC_KEYS)}")
    derived = spec.get("format") == DERIVED
    if not derived and spec.get("format") not in FORMATS:
        raise SourceError(f"{prefix}: format must be one of {FORMATS}, got {spec.get('format')!r} (or give `query` over the dataset's inputs)")
    try:
        table = schema.get_table(spec.get("table", ""))
    except KeyError as error:
        raise SourceError(f"{prefix}: {error.args[0]}") from None
    mapped = dict(spec.get("columns") or {}) | dict(spec.get("constants") or {})
    unknown = [c for c in mapped if c not in table.column_names]
    if unknown:
        raise SourceError(f"{prefix}: {unknown} are not columns of table {table.name!r} ({table.column_names})")
    check_header_keys(spec, prefix=prefix)
    if spec.get("generate_key") is not None:
        mapped[generated_key_column(spec, table, prefix=prefix)] = "generate_key"
    if derived:
        if not spec.get("query"):
            raise SourceError(f"{prefix}: a derived source needs `query` (DuckDB SQL over the dataset's inputs)")
        if not isinstance(spec.get("inputs"), Mapping):
            raise SourceError(f"{prefix}: a derived source needs its inputs; read it through load_source_map or a Dataset")
        _check_time_and_formats(spec, prefix)
        return  # required columns are checked on the query's result
    _check_time_and_formats(spec, prefix)
    unmapped = [c for c in table.required_columns if c not in mapped]
    if unmapped:
        example = ", ".join(f"{c}: <value>" for c in unmapped)
        raise SourceError(
            f"{prefix}: required column(s) {unmapped} of table {table.name!r} are neither mapped nor constant; "
            f"map each to a column of the file under `columns:`, or give the value every row shares under "
            f"`constants:` (e.g. `constants: {{{example}}}`)"
        )
    if spec["format"] == "sql" and not spec.get("url"):
        raise SourceError(f"{prefix}: a sql source needs `url` (a SQLAlchemy URL) and `query` or `path` (a table name)")


# strftime codes pandas and strptime read (``%%`` is a literal percent sign)
STRFTIME_CODES = {
    "Y": "year", "y": "two-digit year", "m": "month number", "d": "day of the month", "H": "hour (24 h)", "I": "hour (12 h)",
    "p": "AM/PM", "M": "minute", "S": "second", "f": "microseconds", "z": "UTC offset", "Z": "zone name", "b": "month name, short",
    "B": "month name", "a": "weekday name, short", "A": "weekday name", "w": "weekday number", "j": "day of the year",
    "U": "week of the year (Sunday first)", "W": "week of the year (Monday first)", "G": "ISO year", "V": "ISO week",
    "u": "ISO weekday", "c": "locale date and time", "x": "locale date", "X": "locale time", "%": "a literal %",
}
# how people often write a date pattern, and the strftime code meant (longest first)
_PATTERN_WORDS = (("YYYY", "%Y"), ("yyyy", "%Y"), ("MM", "%m"), ("DD", "%d"), ("dd", "%d"), ("HH", "%H"), ("hh", "%H"),
                  ("mm", "%M"), ("SS", "%S"), ("ss", "%S"), ("YY", "%y"), ("yy", "%y"))


def date_format_problem(fmt: Any) -> str | None:
    """What is wrong with one entry of a source's ``date_formats``, or ``None`` when it can be used.

    An entry is ``iso8601``, ``excel_serial``, ``unix_s``, ``unix_ms`` or a strftime pattern made of known codes
    (:data:`STRFTIME_CODES`) with at least one code; the answer suggests what was probably meant
    (``%s``, unix seconds, which strftime does not read: ``unix_s``).
    """
    from crm_analytics.parsing import NAMED_DATE_FORMATS

    text = str(fmt)
    if text in NAMED_DATE_FORMATS:
        return None
    if "%" not in text:
        special = difflib.get_close_matches(text.lower(), list(NAMED_DATE_FORMATS), n=1, cutoff=0.5)
        if special:
            return f"{text!r} is not a format (did you mean {special[0]!r}?)"
        guess = text
        for word, code in _PATTERN_WORDS:
            guess = guess.replace(word, code)
        hint = f" (did you mean {guess!r}?)" if "%" in guess else ""
        return f"{text!r} has no strftime code{hint}; write a date with codes such as %Y-%m-%d, or use {', '.join(NAMED_DATE_FORMATS)}"
    codes = re.findall(r"%(.?)", text)
    unknown = [code for code in codes if code not in STRFTIME_CODES]
    if unknown:
        bad = unknown[0]
        shown = "a % at the end" if bad == "" else f"the unknown code %{bad}"
        known = ", ".join(f"%{code} {meaning}" for code, meaning in list(STRFTIME_CODES.items())[:9])
        if bad in ("s", "Q"):  # unix seconds / milliseconds in some strftime dialects, not in Python's
            return f"{text!r} has the unknown code %{bad}; for unix timestamps write unix_s (seconds since 1970-01-01 UTC) or unix_ms (milliseconds)"
        return f"{text!r} has {shown}; strftime codes are {known}, ..."
    return None


def _check_time_and_formats(spec: Mapping[str, Any], prefix: str) -> None:
    """Raise ``SourceError`` for a source ``time_zone`` that is no IANA zone or a ``date_formats`` entry that is no format."""
    if spec.get("time_zone"):
        from crm_analytics import datasets

        try:
            datasets.check_time_zone(spec["time_zone"], where=prefix)
        except datasets.DatasetError as error:
            raise SourceError(str(error)) from None
    formats = spec.get("date_formats")
    if formats is None:
        return
    if isinstance(formats, str) or not isinstance(formats, (list, tuple)):
        raise SourceError(f"{prefix}: key `date_formats` must be a list of formats, e.g. [iso8601, \"%d/%m/%Y\"], got {formats!r}")
    for fmt in formats:
        problem = date_format_problem(fmt)
        if problem:
            raise SourceError(f"{prefix}: key `date_formats`: {problem}")


def _close_hint(word: str, candidates) -> str:
    """`` (did you mean 'X'?)`` for the closest candidates, or an empty string."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""


def _where(name: str, spec: Mapping[str, Any]) -> str:
    """``<dataset file>: source '<name>'`` for error messages."""
    return f"{spec.get('_where', 'source map')}: source {name!r}"


def read_source(name: str, spec: dict[str, Any], dataset_dir: str | Path | None = None) -> pd.DataFrame:
    """Read one source onto canonical column names.

    Parameters
    ----------
    name : the source's name in the map.
    spec : its entry of the source map.
    dataset_dir : folder the spec's ``path`` is relative to (default ``data/raw/demo``).

    Returns
    -------
    DataFrame with the mapped canonical columns (in contract order), the
    constants, and ``_source``, ``_source_file``, ``_source_row``. ``attrs``
    records ``encoding`` (CSV), ``unknown_columns`` (source columns the map
    does not use; ignored, not an error) and ``missing_optional_columns``
    (always empty: see below).

    Raises ``SourceError`` when a column would vanish: every column the map names
    (``columns:``, required or optional) must be in the file's header, and must be
    there once. The message names the file, the source, the mapped name with close
    matches among the file's columns, or the name the header holds twice. To leave
    an optional column out, leave it out of ``columns:``.
    """
    check_spec(name, spec)
    folder = Path(dataset_dir) if dataset_dir else paths.raw_dir()
    if spec["format"] == DERIVED:
        return read_derived(name, spec, folder)
    raw, location, attrs = _READERS[spec["format"]](spec, folder)
    return _mapped_with_lineage(raw, name, spec, location, attrs)


def read_source_chunks(
    name: str, spec: dict[str, Any], dataset_dir: str | Path | None = None, *, chunk_rows: int = 200_000
) -> Iterator[pd.DataFrame]:
    """Yield one source in chunks of at most ``chunk_rows`` rows, for files too large to read whole.

    A CSV source is read chunk by chunk; every chunk is exactly the matching
    slice of what ``read_source`` returns (same columns, values, ``attrs`` and
    ``_source_row`` numbers, counted across chunks). Other formats are read
    whole and yielded as one chunk. A header-only file yields one empty chunk.
    Raises ``SourceError`` like ``read_source``.
    """
    check_spec(name, spec)
    folder = Path(dataset_dir) if dataset_dir else paths.raw_dir()
    if spec["format"] != "csv":
        yield read_source(name, spec, folder)
        return
    path, options = _csv_options(spec, folder)
    offset = 0
    attrs = _csv_attrs(options) | {"header": csv_header(path, options)}
    for raw in csv_frames(path, options, chunk_rows=chunk_rows):
        frame = _mapped_with_lineage(raw, name, spec, str(path), dict(attrs), first_row=offset + 1)
        offset += len(frame)
        yield frame


def _mapped_with_lineage(raw: pd.DataFrame, name: str, spec: dict[str, Any], location: str, attrs: dict, *, first_row: int = 1) -> pd.DataFrame:
    """Map ``raw`` onto canonical names and add the ``attrs`` and lineage columns (rows numbered from ``first_row``).

    A ``raw`` frame that carries its own ``_source_file`` and ``_source_row`` (several sheets) keeps them.
    """
    check_header(name, spec, attrs.get("header") or list(raw.columns), location)
    frame = _map_columns(raw, spec, location)
    if spec.get("generate_key") is not None:
        frame = with_generated_key(frame, raw, name, spec, location)
    frame.attrs.update({key: value for key, value in attrs.items() if key != "header"})
    frame.attrs["unknown_columns"] = [c for c in raw.columns if c not in set(spec["columns"].values())
                                      and c not in INPUT_LINEAGE and c not in ROW_FAULT_COLUMNS]
    frame.attrs["missing_optional_columns"] = [c for c in spec["columns"].values() if c not in raw.columns]
    frame["_source"] = name
    if "_source_file" in raw.columns and "_source_row" in raw.columns:
        frame["_source_file"] = raw["_source_file"].to_numpy()
        frame["_source_row"] = raw["_source_row"].to_numpy()
    else:
        frame["_source_file"] = location
        frame["_source_row"] = pd.RangeIndex(first_row, first_row + len(frame)).to_numpy()
    for column in ROW_FAULT_COLUMNS:
        if column in raw.columns:
            frame[column] = raw[column].to_numpy()
    return frame


def read_sources(
    sources_file: str | Path | None = None, dataset_dir: str | Path | None = None, *, table: str | None = None
) -> dict[str, pd.DataFrame]:
    """Read every source of a map (or only those of one canonical ``table``); ``{source name: frame}``."""
    source_map = load_source_map(sources_file)
    return {
        name: read_source(name, spec, dataset_dir)
        for name, spec in source_map.items()
        if table is None or spec["table"] == table
    }


def source_path(spec: dict[str, Any], dataset_dir: str | Path) -> Path:
    """Return the absolute file path of a file-based source."""
    return Path(dataset_dir) / spec["path"]


def _existing_file(spec: dict[str, Any], dataset_dir: Path) -> Path:
    path = source_path(spec, dataset_dir)
    if not path.exists():
        raise SourceError(f"{path}: file not found (declared for table {spec['table']!r})")
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: empty input (0 bytes)")
    return path


def duplicated_names(names: list[str]) -> list[str]:
    """The names that occur more than once in ``names``, in order of their second occurrence."""
    seen: set[str] = set()
    twice: list[str] = []
    for name in names:
        if name in seen and name not in twice:
            twice.append(name)
        seen.add(name)
    return twice


def check_header(name: str, spec: Mapping[str, Any], header: list[str], location: str) -> None:
    """Raise ``SourceError`` when a column the source's map names would vanish on reading.

    Parameters
    ----------
    name, spec : the source and its entry of the source map.
    header : the file's column names as written (stripped), duplicates included.
    location : the file, named in the message.

    A mapped name the header lacks is an error (required or optional: a typo such as
    ``email: emial`` must not read as an empty column), with close matches among the
    header's names; a mapped name the header holds twice is an error naming it (a reader
    would keep one and rename or drop the other). Names the map does not use may repeat.
    """
    column_map: dict[str, str] = dict(spec.get("columns") or {})
    present = [c for c in header if c not in INPUT_LINEAGE]
    twice = [c for c in duplicated_names(present) if c in column_map.values()]
    if twice:
        used = ", ".join(f"{c!r} (mapped to {', '.join(repr(k) for k, v in column_map.items() if v == c)})" for c in twice)
        raise SourceError(f"{location}: source {name!r}: the header names {used} more than once; "
                          f"rename the columns in the file so that each mapped name occurs once (the header is {present})")
    table = schema.get_table(spec["table"])
    missing = {canonical: column for canonical, column in column_map.items() if column not in present}
    if missing:
        required = [c for c in missing if c in table.required_columns]
        optional = [c for c in missing if c not in table.required_columns]
        if required:
            raise _missing_columns_error(location, {c: missing[c] for c in required}, present, source=name)
        raise _missing_columns_error(location, {c: missing[c] for c in optional}, present, source=name, required=False)


def _missing_columns_error(location: str, missing: dict[str, str], present: list[str], *, source: str | None = None,
                           required: bool = True) -> SourceError:
    named = ", ".join(f"{column!r} (for {canonical!r}){_close_hint(column, present)}" for canonical, column in missing.items())
    of = f" in source {source!r}" if source else ""
    if required:
        return SourceError(f"{location}: missing required column {named}{of}; the file has columns {present}")
    return SourceError(f"{location}: missing mapped column {named}{of}; the file has columns {present}. "
                       "Correct the name under `columns:`, or remove the line to leave this optional column out")


def _map_columns(raw: pd.DataFrame, spec: dict[str, Any], location: str) -> pd.DataFrame:
    table = schema.get_table(spec["table"])
    column_map: dict[str, str] = spec["columns"]
    missing = {c: column_map[c] for c in table.required_columns if c in column_map and column_map[c] not in raw.columns}
    if missing:
        present = [c for c in raw.columns if c not in INPUT_LINEAGE]
        raise _missing_columns_error(location, missing, present)
    frame = pd.DataFrame(index=raw.index)
    for canonical in table.column_names:
        if canonical in column_map and column_map[canonical] in raw.columns:
            frame[canonical] = raw[column_map[canonical]]
        elif canonical in (spec.get("constants") or {}):
            frame[canonical] = spec["constants"][canonical]
    return frame.reset_index(drop=True)


def detect_encoding(path: str | Path, *, cascade: tuple[str, ...] = ENCODING_CASCADE) -> str:
    """Return the first encoding of ``cascade`` that decodes the whole file strictly.

    UTF-8 with or without a byte-order mark reads as ``utf-8-sig``; Excel on
    Chinese Windows writes GB18030 (a superset of GBK). Raises ``SourceError``
    when none decodes: characters are never silently replaced.
    """
    for encoding in cascade:
        if _decodes(path, encoding):
            return encoding
    raise SourceError(f"{path}: not decodable as any of {list(cascade)}; give the source's `encoding` explicitly")


def _decodes(path: str | Path, encoding: str, *, chunk_bytes: int = 1 << 24) -> bool:
    """Return whether the file decodes strictly in ``encoding``, reading it in chunks (constant memory)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(chunk_bytes):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _sniff_delimiter(header_line: str, expected: list[str]) -> str:
    """Return the delimiter that splits the header into the expected names (',' when it already does)."""
    for delimiter in (",", ";", "\t", "|"):
        if expected and all(name in next(csv.reader([header_line], delimiter=delimiter)) for name in expected):
            return delimiter
    try:
        return csv.Sniffer().sniff(header_line, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _csv_options(spec: dict[str, Any], dataset_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Return the file and the ``pandas.read_csv`` options (encoding, delimiter, all values as text) of a CSV source."""
    path = _existing_file(spec, dataset_dir)
    encoding = spec.get("encoding", "auto")
    if encoding == "auto":
        encoding = choose_encoding(path)
    with open(path, encoding=encoding, errors="surrogateescape") as handle:
        header_line = handle.readline().rstrip("\r\n")
    if _UNDECODED.search(header_line):
        raise SourceError(f"{path}: the first line is not {_encoding_label(encoding)} ({escape_undecoded(header_line)!r}); "
                          "give the source's `encoding` (e.g. latin-1, cp1252, gb18030)")
    if not header_line.strip():
        raise SourceError(f"{path}: empty input (no {'header' if has_header(spec) else 'data'} line)")
    options = {"encoding": encoding, "dtype": str, "keep_default_na": False, "na_values": [""], "engine": "c"}
    if not has_header(spec):
        return path, options | {"sep": _headerless_delimiter(path, spec, header_line), "header": None, "names": list(spec["names"])}
    delimiter = spec.get("delimiter") or _sniff_delimiter(header_line, list((spec.get("columns") or {}).values()))
    return path, options | {"sep": delimiter}


# ------------------------------------------------------------------------------ rows that cannot be read

_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes the decoder could not read, as errors="surrogateescape" keeps them
_FIELD_LIMIT = 1 << 30  # the csv module refuses fields over 128 KiB by default; free text may be longer


def escape_undecoded(text: str) -> str:
    """``text`` read with ``errors="surrogateescape"``, its undecodable bytes written ``\\xNN`` (as ``backslashreplace``)."""
    return _UNDECODED.sub(lambda found: f"\\x{ord(found[0]) - 0xDC00:02x}", text)


def _encoding_label(encoding: str) -> str:
    """The encoding as a person names it (``utf-8-sig``, UTF-8 read past a byte-order mark, is ``utf-8``)."""
    name = codecs.lookup(encoding).name
    return "utf-8" if name == "utf-8-sig" else name


def choose_encoding(path: str | Path, *, cascade: tuple[str, ...] = ENCODING_CASCADE) -> str:
    """The encoding a CSV declared ``encoding: auto`` is read in; never raises for the bytes it holds.

    The first encoding of ``cascade`` when it decodes the whole file; else still the first one if it decodes at
    least as many of the lines holding non-ASCII bytes as it fails on
    (a UTF-8 export with a stray Latin-1 byte stays UTF-8: only that row is quarantined, as
    ``undecodable_bytes``); else the first later encoding that decodes the whole file (an export written in
    GB18030 throughout); else the first, its undecodable rows quarantined one by one.
    """
    if _decodes(path, cascade[0]):
        return cascade[0]
    n_decoded, n_failed = _non_ascii_lines(path, cascade[0])
    return cascade[0] if n_decoded >= n_failed else next((e for e in cascade[1:] if _decodes(path, e)), cascade[0])


def _non_ascii_lines(path: str | Path, encoding: str) -> tuple[int, int]:
    """Lines holding non-ASCII bytes that ``encoding`` decodes, and that it does not (read line by line)."""
    n_decoded = n_failed = 0
    with open(path, "rb") as handle:
        for line in handle:
            if line.isascii():
                continue
            try:
                line.decode(encoding)
                n_decoded += 1
            except UnicodeDecodeError:
                n_failed += 1
    return n_decoded, n_failed


def csv_frames(path: str | Path, options: Mapping[str, Any], *, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """A CSV's data rows as text frames (column names stripped), in chunks of ``chunk_rows`` rows (None: one frame).

    Parameters
    ----------
    path : the file.
    options : its ``pandas.read_csv`` options (``_csv_options``: encoding, delimiter ``sep``, ``names`` without a header).
    chunk_rows : rows per frame; memory grows with it, not with the file.

    A file whose every record decodes and has the header's number of fields is read by pandas. Otherwise
    every record is read by the ``csv`` module (``_careful_frames``): a record with undecodable bytes, or with
    more or fewer fields than the header, gets its reason in ``ROW_FAULT`` and its line in ``RAW_LINE`` and no
    values; the others read as pandas reads them. Extra fields that are all empty (a delimiter closing the
    line) are dropped, not a fault. A blank line is no row.
    """
    if _has_row_faults(path, options):
        yield from _careful_frames(path, options, chunk_rows=chunk_rows)
        return
    try:
        if chunk_rows is None:
            yield _stripped_names(pd.read_csv(path, **options))
            return
        with pd.read_csv(path, **options, chunksize=chunk_rows) as reader:
            for raw in reader:
                yield _stripped_names(raw)
    except pd.errors.ParserError as error:
        raise SourceError(f"{path}: not a well-formed CSV with delimiter {options['sep']!r}: {error}") from None


def _stripped_names(raw: pd.DataFrame) -> pd.DataFrame:
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def _split_records(lines: Iterator[str], sep: str) -> Iterator[list[str]]:
    """The fields of each record: the ``csv`` module's for a one-character delimiter, else each line split by the
    regular expression (as pandas splits, leading and trailing blanks ignored)."""
    if len(sep) > 1:
        return (re.split(sep, line.strip()) for line in lines)
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
    return csv.reader(lines, delimiter=sep)


def _is_blank(fields: list[str]) -> bool:
    """A record of a blank line (pandas skips it, so it is no row)."""
    return not fields or (len(fields) == 1 and not fields[0].strip())


def _has_row_faults(path: str | Path, options: Mapping[str, Any]) -> bool:
    """Whether some record of the file does not decode or has another number of fields than the header (one pass)."""
    n_fields = len(csv_header(path, options))
    try:
        with open(path, encoding=options["encoding"], newline="") as handle:
            records = _split_records(handle, options["sep"])
            if options.get("names") is None:
                next(records, None)
            return any(len(fields) != n_fields and not _is_blank(fields) for fields in records)
    except (UnicodeDecodeError, csv.Error):
        return True


class _LineTap:
    """Iterate the lines of ``handle``, keeping those read since the last ``take`` (a record's text as written)."""

    def __init__(self, handle: Any) -> None:
        self._handle, self._lines = handle, []

    def __iter__(self) -> "_LineTap":
        return self

    def __next__(self) -> str:
        line = next(self._handle)
        self._lines.append(line)
        return line

    def take(self) -> str:
        text, self._lines = "".join(self._lines).rstrip("\r\n"), []
        return text


def _row_fault(fields: list[str], line: str, n_fields: int, encoding: str) -> tuple[str, str] | None:
    """``(reason, raw line)`` of a record that cannot be read, or None. The raw line starts with what went wrong."""
    if _UNDECODED.search(line):
        return UNDECODABLE_BYTES, f"(undecodable as {_encoding_label(encoding)}) {escape_undecoded(line)}"
    if len(fields) > n_fields and not any(field.strip() for field in fields[n_fields:]):
        return None
    if len(fields) != n_fields:
        return RAGGED_ROW, f"({len(fields)} fields, expected {n_fields}) {line}"
    return None


def _careful_frames(path: str | Path, options: Mapping[str, Any], *, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """``csv_frames`` of a file with row faults: every record read by the ``csv`` module, faults marked."""
    names = [str(c).strip() for c in pd.read_csv(path, **options, nrows=0, encoding_errors="surrogateescape").columns]
    n_fields, encoding = len(names), options["encoding"]
    rows: list[list[Any]] = []
    faults: list[tuple[str, str] | None] = []
    with open(path, encoding=encoding, errors="surrogateescape", newline="") as handle:
        tap = _LineTap(handle)
        records = _split_records(tap, options["sep"])
        if options.get("names") is None:
            next(records, None)
            tap.take()
        try:
            for fields in records:
                line = tap.take()
                if _is_blank(fields):
                    continue
                fault = _row_fault(fields, line, n_fields, encoding)
                rows.append([None] * n_fields if fault else fields[:n_fields])
                faults.append(fault)
                if chunk_rows and len(rows) == chunk_rows:
                    yield _fault_frame(rows, faults, names)
                    rows, faults = [], []
        except csv.Error as error:
            raise SourceError(f"{path}: not a well-formed CSV with delimiter {options['sep']!r}: {error}") from None
    if rows or not chunk_rows:
        yield _fault_frame(rows, faults, names)


def _fault_frame(rows: list[list[Any]], faults: list[tuple[str, str] | None], names: list[str]) -> pd.DataFrame:
    """Text rows as pandas reads them (empty text missing), with ``ROW_FAULT`` and ``RAW_LINE``."""
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    frame = frame.where(frame.notna() & frame.ne(""), np.nan)
    frame[ROW_FAULT] = pd.array([f[0] if f else None for f in faults], dtype="string")
    frame[RAW_LINE] = pd.array([f[1] if f else None for f in faults], dtype="string")
    return frame


def readable_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without its row faults and their columns (unchanged when it has none)."""
    if ROW_FAULT not in frame.columns:
        return frame
    return frame.loc[frame[ROW_FAULT].isna()].drop(columns=list(ROW_FAULT_COLUMNS))


# ------------------------------------------------------------------------------ header-less files


def has_header(spec: Mapping[str, Any]) -> bool:
    """Whether a CSV's first line names its columns (``header: false`` declares a file without one)."""
    return spec.get("header", True) is not False


def check_header_keys(spec: Mapping[str, Any], *, prefix: str) -> None:
    """``header`` is true or false; ``header: false`` (CSV only) needs ``names``, the file's columns in order, each once."""
    header, names = spec.get("header", True), spec.get("names")
    if not isinstance(header, bool):
        raise SourceError(f"{prefix}: key `header` must be true or false, got {header!r}")
    if header:
        if names is not None:
            raise SourceError(f"{prefix}: key `names` goes with `header: false` (a file without a header line); "
                              "a file with a header is mapped by its own names under `columns:`")
        return
    if spec.get("format") != "csv":
        raise SourceError(f"{prefix}: key `header: false` applies to CSV files only, not format {spec.get('format')!r}")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise SourceError(f"{prefix}: `header: false` needs key `names`: the file's column names in order, e.g. "
                          f"[order_no, account, ordered_at, amount]; got {names!r}")
    twice = duplicated_names([n.strip() for n in names])
    if twice:
        raise SourceError(f"{prefix}: key `names` lists {twice} more than once; each column needs its own name")


def _headerless_delimiter(path: Path, spec: Mapping[str, Any], first_line: str) -> str:
    """The delimiter of a header-less file: the declared one, else the one that splits the first line into ``len(names)``
    fields. Raises ``SourceError`` (naming the file and key ``names``) when the first line has another number of fields."""
    n_names = len(spec["names"])
    count = lambda delimiter: len(next(csv.reader([first_line], delimiter=delimiter)))  # noqa: E731
    candidates = [spec["delimiter"]] if spec.get("delimiter") else [",", ";", "\t", "|"]
    for delimiter in candidates:
        if count(delimiter) == n_names:
            return delimiter
    fields = {repr(d): count(d) for d in candidates}
    raise SourceError(f"{path}: key `names` lists {n_names} columns {list(spec['names'])} but the first line has "
                      f"{' or '.join(str(n) for n in sorted(set(fields.values())))} fields (by delimiter: {fields}); "
                      "list one name per column, or give `delimiter`")


# ------------------------------------------------------------------------------ generated keys

KEY_PREFIX = "k"
KEY_HEX_DIGITS = 20  # 80 bits: a collision among 100 million rows has a chance of about 4 in a million


def generated_key_column(spec: Mapping[str, Any], table: schema.Table, *, prefix: str) -> str:
    """The key column ``generate_key`` fills: the table's one key, which the source then neither maps nor fixes."""
    names = spec.get("generate_key")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise SourceError(f"{prefix}: key `generate_key` must list the columns that identify a row, e.g. "
                          f"[customer_id, order_time, order_amount]; got {names!r}")
    if duplicated_names(names):
        raise SourceError(f"{prefix}: key `generate_key` lists {duplicated_names(names)} more than once")
    keys = table.key_columns
    if len(keys) != 1:
        raise SourceError(f"{prefix}: key `generate_key`: table {table.name!r} has no key column to generate")
    given = [k for k in keys if k in (spec.get("columns") or {}) or k in (spec.get("constants") or {})]
    if given:
        raise SourceError(f"{prefix}: key `generate_key` generates {keys[0]!r}, which the source also maps; "
                          f"remove {keys[0]!r} from `columns` (or `generate_key`)")
    return keys[0]


def generate_keys(parts: list[pd.Series]) -> pd.Series:
    """Stable ids from the values that identify each row: ``k`` + the first ``KEY_HEX_DIGITS`` hex digits of the
    SHA-256 of the values' text joined by the unit separator (``\\x1f``), a missing value written as ``\\x00``.

    The same values give the same id in every run, on every machine, in every order of the rows (and DuckDB's
    ``sha256`` over ``concat_ws`` gives it too, see ``generated_key_sql``). Identical rows get one id: the
    second is then a ``duplicate_key`` in cleansing, so the columns named must tell rows apart.
    """
    import hashlib

    text = [part.astype("string").fillna("\x00").reset_index(drop=True) for part in parts]
    joined = text[0].str.cat(text[1:], sep="\x1f") if len(text) > 1 else text[0]
    digests = [KEY_PREFIX + hashlib.sha256(value.encode("utf-8")).hexdigest()[:KEY_HEX_DIGITS] for value in joined.tolist()]
    return pd.Series(digests, dtype="string")


def _key_part(name: str, raw: pd.DataFrame, frame: pd.DataFrame, spec: Mapping[str, Any], location: str, source: str) -> pd.Series:
    """The values of one ``generate_key`` entry: a canonical column of the source (mapped or constant), else a column of
    the file by its own name."""
    mapped = dict(spec.get("columns") or {})
    if name in mapped and mapped[name] in raw.columns:
        return raw[mapped[name]].reset_index(drop=True)
    if name in frame.columns:
        return frame[name].reset_index(drop=True)
    if name in raw.columns:
        return raw[name].reset_index(drop=True)
    known = sorted(set(frame.columns) | {c for c in raw.columns if c not in INPUT_LINEAGE})
    raise SourceError(f"{location}: source {source!r}: key `generate_key` names {name!r}, which is neither a column of the "
                      f"source nor of the file{_close_hint(name, known)}; it has {known}")


def with_generated_key(frame: pd.DataFrame, raw: pd.DataFrame, name: str, spec: Mapping[str, Any], location: str) -> pd.DataFrame:
    """``frame`` (canonical columns, contract order) with its table's key generated from ``generate_key`` (``generate_keys``)."""
    table = schema.get_table(spec["table"])
    key = generated_key_column(spec, table, prefix=f"{location}: source {name!r}")
    values = generate_keys([_key_part(n, raw, frame, spec, location, name) for n in spec["generate_key"]])
    out = frame.copy()
    position = sum(1 for c in table.column_names[: table.column_names.index(key)] if c in out.columns)
    out.insert(position, key, values.to_numpy())
    return out


def generated_key_sql(expressions: list[str]) -> str:
    """DuckDB SQL of ``generate_keys`` over SQL expressions (the same ids for the same text)."""
    parts = ", ".join(f"coalesce(CAST({e} AS VARCHAR), chr(0))" for e in expressions)
    return f"('{KEY_PREFIX}' || substr(sha256(concat_ws(chr(31), {parts})), 1, {KEY_HEX_DIGITS}))"


def _csv_attrs(options: dict[str, Any]) -> dict[str, str]:
    return {"encoding": options["encoding"], "delimiter": options["sep"]}


def csv_header(path: str | Path, options: Mapping[str, Any]) -> list[str]:
    """The header line's names as written (stripped, duplicates kept: pandas would rename a second ``email`` ``email.1``).

    For a file read without a header line (``names`` among the ``read_csv`` options), the names given.
    """
    if options.get("names") is not None:
        return [str(c).strip() for c in options["names"]]
    with open(path, encoding=options["encoding"], errors="surrogateescape", newline="") as handle:  # later lines may not decode
        if len(options["sep"]) > 1:  # a regular expression, as pandas reads it (e.g. runs of spaces)
            return [c.strip() for c in re.split(options["sep"], handle.readline().strip())]
        return [str(c).strip() for c in next(csv.reader(handle, delimiter=options["sep"]), [])]


def _read_csv(spec: dict[str, Any], dataset_dir: Path) -> tuple[pd.DataFrame, str, dict]:
    path, options = _csv_options(spec, dataset_dir)
    parts = list(csv_frames(path, options))
    raw = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    return raw, str(path), _csv_attrs(options) | {"header": csv_header(path, options)}


def _excel_cell_text(value: Any) -> Any:
    """Render an Excel cell as the text a person sees: integral numbers without '.0', dates as ISO."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dt.datetime, pd.Timestamp)):
        return value.strftime("%Y-%m-%d") if (value.hour, value.minute, value.second) == (0, 0, 0) else value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _read_excel(spec: dict[str, Any], dataset_dir: Path) -> tuple[pd.DataFrame, str, dict]:
    """One sheet as text; for ``sheet`` a list or ``all``, the sheets stacked with ``_source_file`` (``file#sheet``),
    ``_source_sheet`` and ``_source_row`` (row within its sheet)."""
    path = _existing_file(spec, dataset_dir)
    sheet = spec.get("sheet", 0)
    several = sheet == ALL_SHEETS or isinstance(sheet, (list, tuple))
    try:
        # calamine reads an export of tens of thousands of rows about ten times faster than openpyxl;
        # cells come back as the same Python values, which _excel_cell_text turns into text.
        read = pd.read_excel(path, sheet_name=None if sheet == ALL_SHEETS else (list(sheet) if several else sheet), dtype=object, engine="calamine")
    except ValueError as error:  # unknown sheet name
        raise SourceError(f"{path}: {error}") from None
    if not several:
        text = _excel_text(read)
        return text, f"{path}#{sheet}", {"header": _excel_header(path, sheet, list(text.columns))}
    parts = []
    for name, frame in read.items():
        text = _excel_text(frame)
        text["_source_file"], text["_source_sheet"] = f"{path}#{name}", str(name)
        text["_source_row"] = pd.RangeIndex(1, len(text) + 1).to_numpy()
        parts.append(text)
    headers = {name: [c for c in part.columns if c not in INPUT_LINEAGE] for name, part in zip(read, parts)}
    if len({tuple(h) for h in headers.values()}) > 1:
        raise SourceError(f"{path}: the sheets {list(headers)} do not share one header ({headers}); read them as separate inputs")
    return pd.concat(parts, ignore_index=True), str(path), {"sheets": list(read)}


def unread_sheets(spec: Mapping[str, Any], dataset_dir: str | Path) -> dict[str, int]:
    """``{sheet name: data rows}`` of the sheets of an Excel source (or input) that it does not read and that hold rows.

    A sheet's data rows are its non-empty rows below the first (the header). A source reading ``sheet: all``
    reads every sheet; one naming a sheet (or a list) leaves the others, which must not go unnoticed.
    """
    if spec.get("format") != "excel" or spec.get("sheet") == ALL_SHEETS:
        return {}
    from python_calamine import CalamineWorkbook

    path = _existing_file(dict(spec) | {"table": spec.get("table", "input")}, Path(dataset_dir))
    workbook = CalamineWorkbook.from_path(str(path))
    read = spec.get("sheet", 0)
    read = {workbook.sheet_names[r] if isinstance(r, int) else str(r) for r in (read if isinstance(read, (list, tuple)) else [read])}
    counts = {}
    for name in workbook.sheet_names:
        if name in read:
            continue
        rows = workbook.get_sheet_by_name(name).to_python(skip_empty_area=True)
        n_rows = sum(1 for row in rows if any(cell not in ("", None) for cell in row)) - 1
        if n_rows > 0:
            counts[name] = n_rows
    return counts


def _excel_header(path: Path, sheet: Any, columns: list[str]) -> list[str]:
    """A sheet's header as written. pandas renames a repeated name (``email``, ``email.1``); only then is the
    first row read again to tell a renamed duplicate from a column really called ``email.1``."""
    renamed = [c for c in columns if (m := re.fullmatch(r"(.+)\.\d+", c)) and m[1] in columns]
    if not renamed:
        return columns
    first_row = pd.read_excel(path, sheet_name=sheet, header=None, nrows=1, dtype=object, engine="calamine")
    return [str(c).strip() for c in first_row.iloc[0].tolist()] if len(first_row) else columns


def _excel_text(raw: pd.DataFrame) -> pd.DataFrame:
    """A sheet's cells as the text a person sees, headers stripped."""
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw.apply(lambda column: column.map(_excel_cell_text)).astype("string")


def _read_parquet(spec: dict[str, Any], dataset_dir: Path) -> tuple[pd.DataFrame, str, dict]:
    path = _existing_file(spec, dataset_dir)
    import pyarrow.parquet as pq

    present = pq.read_schema(path).names
    named = [*spec["columns"].values(), *(spec.get("generate_key") or [])]  # generate_key may name the file's own columns
    wanted = list(dict.fromkeys(c for c in named if c in present)) if spec.get("columns") else None
    return pd.read_parquet(path, columns=wanted), str(path), {"header": list(present)}


def _read_sql(spec: dict[str, Any], dataset_dir: Path) -> tuple[pd.DataFrame, str, dict]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(spec["url"])
    location = engine.url.render_as_string(hide_password=True)
    query = spec.get("query") or f'SELECT * FROM "{spec["path"]}"'
    try:
        with engine.connect() as connection:
            raw = pd.read_sql(sqlalchemy.text(query), connection)
    except (sqlalchemy.exc.SQLAlchemyError, pd.errors.DatabaseError) as error:  # pandas wraps driver errors
        raise SourceError(f"{location}: query failed: {error.__class__.__name__}: {str(error).splitlines()[0]}") from None
    finally:
        engine.dispose()
    return raw, location, {}


_READERS = {"csv": _read_csv, "excel": _read_excel, "parquet": _read_parquet, "sql": _read_sql}


# ------------------------------------------------------------------------------ derived sources


def read_input(name: str, spec: Mapping[str, Any], dataset_dir: str | Path) -> pd.DataFrame:
    """Read one named input whole, as a query sees it.

    Returns
    -------
    DataFrame
        The input's own columns (text for CSV and Excel, typed for Parquet and SQL) plus
        ``_source_file`` (the file, ``file#sheet`` for a workbook), ``_source_sheet`` (the sheet
        name, missing for other formats) and ``_source_row`` (1-based data row in that file or sheet).
        File inputs are cached per file version: several queries over one workbook read it once.
        Rows of a CSV that cannot be read are left out (``input_row_faults`` lists them).
    """
    return readable_rows(_input_frame(name, spec, dataset_dir))


def input_row_faults(name: str, spec: Mapping[str, Any], dataset_dir: str | Path) -> pd.DataFrame:
    """The rows of an input that cannot be read (``csv_frames``): ``_source_file``, ``_source_row``, ``_row_fault``, ``_raw_line``."""
    frame = _input_frame(name, spec, dataset_dir) if spec.get("format") == "csv" else pd.DataFrame()
    if ROW_FAULT not in frame.columns:
        return pd.DataFrame(columns=["_source_file", "_source_row", *ROW_FAULT_COLUMNS])
    return frame.loc[frame[ROW_FAULT].notna(), ["_source_file", "_source_row", *ROW_FAULT_COLUMNS]].reset_index(drop=True)


def _input_frame(name: str, spec: Mapping[str, Any], dataset_dir: str | Path) -> pd.DataFrame:
    """One input as read, row faults included."""
    spec = dict(spec)
    if spec["format"] == "sql":
        return _with_input_lineage(*_read_sql(spec, Path(dataset_dir))[:2], sheet=None)
    path = _existing_file(spec | {"table": f"input {name}"}, Path(dataset_dir))
    status = path.stat()
    return _cached_input(str(path), status.st_mtime_ns, status.st_size, json.dumps(spec, sort_keys=True, default=str))


@functools.lru_cache(maxsize=8)
def _cached_input(path: str, _mtime_ns: int, _size: int, spec_json: str) -> pd.DataFrame:
    """``read_input`` of a file input (cached per file version and spec; callers never modify the frame)."""
    spec = json.loads(spec_json)
    folder, spec["path"] = Path(path).parent, Path(path).name
    raw, location, _ = _READERS[spec["format"]](spec, folder)
    if "_source_row" in raw.columns:  # several sheets: lineage per row already
        return raw
    sheet = spec.get("sheet", 0) if spec["format"] == "excel" else None
    return _with_input_lineage(raw, location, sheet=sheet)


def _with_input_lineage(raw: pd.DataFrame, location: str, *, sheet: Any) -> pd.DataFrame:
    out = raw.copy()
    out["_source_file"] = location
    out["_source_sheet"] = pd.Series(None if sheet is None else str(sheet), index=out.index, dtype="string")
    out["_source_row"] = pd.RangeIndex(1, len(out) + 1).to_numpy()
    return out


def _referenced_inputs(query: str, inputs: Mapping[str, Any]) -> list[str]:
    """The declared inputs ``query`` names as a word, and those the query inputs among them name (only those are read).

    In declaration order, so a query input comes after the inputs it reads.
    """
    used: set[str] = set()
    pending = [query]
    while pending:
        text = pending.pop()
        for name in inputs:
            if name not in used and re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text, flags=re.IGNORECASE):
                used.add(name)
                if inputs[name].get("format") == DERIVED:
                    pending.append(inputs[name]["query"])
    return [name for name in inputs if name in used]


def run_query(name: str, spec: Mapping[str, Any], dataset_dir: str | Path) -> pd.DataFrame:
    """Run a derived source's ``query`` over its inputs registered in an in-memory DuckDB; return the result as is.

    Raises ``SourceError`` naming the dataset file, the source and the key: DuckDB's message for a
    query that fails, or the unknown name (with close matches) for a table that is not a declared input.
    """
    where, inputs = _where(name, spec), spec["inputs"]
    used = _referenced_inputs(spec["query"], inputs)
    with duckdb.connect() as con:
        con.execute("SET python_enable_replacements = false")  # never read a Python variable as a table
        con.execute("SET enable_progress_bar = false")
        try:
            for input_name in used:
                if inputs[input_name]["format"] == DERIVED:  # an intermediate step, e.g. de-duplicated lines
                    con.execute(f'CREATE TEMP VIEW "{input_name}" AS {inputs[input_name]["query"]}')
                else:
                    con.register(input_name, read_input(input_name, inputs[input_name], dataset_dir))
            return con.execute(spec["query"]).df()
        except duckdb.CatalogException as error:
            unknown = re.search(r"Table with name (\S+) does not exist", str(error))
            if unknown:
                missing = unknown[1]
                raise SourceError(f"{where}: key `query`: {missing!r} is not a declared input{_close_hint(missing, inputs)}; "
                                  f"the dataset's inputs are {sorted(inputs)}") from None
            raise SourceError(f"{where}: key `query` failed: {error}") from None
        except duckdb.Error as error:
            raise SourceError(f"{where}: key `query` failed: {error}") from None


def read_derived(name: str, spec: Mapping[str, Any], dataset_dir: str | Path) -> pd.DataFrame:
    """Read a derived source: its query's result on canonical names, with the lineage of the input rows.

    Returns
    -------
    DataFrame
        Like ``read_source``: the canonical columns (in contract order; ``columns`` may rename result
        columns, ``constants`` add fixed values), ``_source``, and ``_source_file`` / ``_source_row`` as
        the query passed them through. ``attrs["inputs"]`` lists the inputs read.

    Raises ``SourceError`` naming the dataset file, the source and the key when the result lacks a
    required column (listing what it has), a mapped column, or the lineage columns, or has a column
    that is not in the table's contract (with close matches).
    """
    where, table = _where(name, spec), schema.get_table(spec["table"])
    result = run_query(name, spec, dataset_dir)
    has = list(result.columns)
    lineage_missing = [c for c in ("_source_file", "_source_row") if c not in has]
    if lineage_missing:
        raise SourceError(
            f"{where}: key `query`: the result lacks the lineage column(s) {lineage_missing} (it has {has}); select "
            "`_source_file, _source_row` from the input so that a rejected row can be traced to its file, sheet and row "
            "(for a row aggregated from several input rows, take its first one's: "
            "`arg_min(_source_file, (_source_file, _source_row)) AS _source_file, "
            "arg_min(_source_row, (_source_file, _source_row)) AS _source_row`)"
        )
    column_map = dict(spec.get("columns") or {})
    unmapped = {canonical: column for canonical, column in column_map.items() if column not in has}
    if unmapped:
        named = ", ".join(f"{column!r} (for {canonical!r}){_close_hint(column, has)}" for canonical, column in unmapped.items())
        raise SourceError(f"{where}: key `columns`: the query's result has no column {named}; it has {has}")
    renamed = result.rename(columns={column: canonical for canonical, column in column_map.items()})
    if spec.get("generate_key") is not None:
        renamed = with_generated_key(renamed, renamed, name, spec, str(spec.get("_where", "source map")))
    extra = [c for c in renamed.columns if c not in table.column_names and c not in INPUT_LINEAGE]
    if extra:
        raise SourceError(f"{where}: key `query`: result column(s) {extra}{_close_hint(extra[0], table.column_names)} are not "
                          f"columns of table {table.name!r} ({table.column_names}); rename them with AS or leave them out")
    constants = dict(spec.get("constants") or {})
    missing = [c for c in table.required_columns if c not in renamed.columns and c not in constants]
    if missing:
        raise SourceError(f"{where}: key `query`: the result lacks required column(s) {missing} of table {table.name!r}; "
                          f"it has {has}")
    frame = pd.DataFrame(index=renamed.index)
    for canonical in table.column_names:
        if canonical in renamed.columns:
            frame[canonical] = renamed[canonical]
        elif canonical in constants:
            frame[canonical] = constants[canonical]
    frame = frame.reset_index(drop=True)
    frame.attrs["inputs"] = _referenced_inputs(spec["query"], spec["inputs"])
    frame.attrs["unknown_columns"], frame.attrs["missing_optional_columns"] = [], []
    frame["_source"] = name
    if renamed["_source_row"].isna().any() or renamed["_source_file"].isna().any():
        raise SourceError(f"{where}: key `query`: {int(renamed['_source_row'].isna().sum())} result row(s) have no `_source_row` "
                          "(or `_source_file`); every row must name the input row it comes from")
    frame["_source_file"] = renamed["_source_file"].astype("string").to_numpy()
    frame["_source_row"] = renamed["_source_row"].astype("int64").to_numpy()
    return _with_input_faults(frame, name, spec, dataset_dir)


def _with_input_faults(frame: pd.DataFrame, name: str, spec: Mapping[str, Any], dataset_dir: str | Path) -> pd.DataFrame:
    """A derived source's rows, then one row (values missing, ``ROW_FAULT`` and ``RAW_LINE`` set) per line of a CSV
    input it reads that could not be read: the query never saw them, cleansing quarantines them with their lineage."""
    used = [n for n in frame.attrs["inputs"] if spec["inputs"][n].get("format") == "csv"]
    faults = [input_row_faults(n, spec["inputs"][n], dataset_dir) for n in used]
    faults = [f for f in faults if len(f)]
    if not faults:
        return frame
    rows = pd.concat(faults, ignore_index=True).assign(_source=name)
    out = pd.concat([frame.assign(**{c: pd.Series(pd.NA, index=frame.index, dtype="string") for c in ROW_FAULT_COLUMNS}), rows],
                    ignore_index=True)
    out.attrs = dict(frame.attrs)
    out["_source_file"] = out["_source_file"].astype("string")
    out["_source_row"] = out["_source_row"].astype("int64")
    return out


def parquet_select_sql(name: str, spec: dict[str, Any], dataset_dir: str | Path, *, business_time_zone: str | None = None) -> str:
    """Return a DuckDB SELECT reading a Parquet source onto canonical names, for tables too large for pandas.

    Timestamps stored with a time zone are converted to ``business_time_zone`` (the
    dataset's; default: the default dataset's); naive ones are taken to be in the
    source's ``time_zone`` (default: the business zone). Local times made ambiguous or
    non-existent by daylight saving follow the rule of ``crm_analytics.parsing.localize``.
    """
    business = business_time_zone or _default_business_time_zone()
    import pyarrow.parquet as pq

    path = _existing_file(spec, Path(dataset_dir))
    file_schema = pq.read_schema(path)
    check_header(name, spec, list(file_schema.names), str(path))
    table = schema.get_table(spec["table"])
    zone = spec.get("time_zone") or business
    selected = []
    generated = generated_key_column(spec, table, prefix=_where(name, spec)) if spec.get("generate_key") is not None else None
    for column in table.columns:
        source_column = spec["columns"].get(column.name)
        if column.name == generated:
            parts = [_parquet_key_part(part, name, spec, file_schema.names, path) for part in spec["generate_key"]]
            selected.append(f'CAST({generated_key_sql(parts)} AS {column.duckdb_type}) AS "{column.name}"')
            continue
        if source_column is None or source_column not in file_schema.names:
            constant = (spec.get("constants") or {}).get(column.name)
            value = "NULL" if constant is None else "'" + str(constant).replace("'", "''") + "'"
            selected.append(f'CAST({value} AS {column.duckdb_type}) AS "{column.name}"')
            continue
        expression = f'"{source_column}"'
        if column.dtype in ("timestamp", "date") and _is_number_type(file_schema.field(source_column).type):
            expression = _unix_sql(expression, spec, column.name, source_column, path)  # naive UTC
            if column.dtype == "timestamp":
                expression = _to_business_zone_sql(expression, "UTC", path, business_time_zone=business)
        elif column.dtype == "timestamp":
            is_aware = getattr(file_schema.field(source_column).type, "tz", None) is not None
            expression = _to_business_zone_sql(expression, "UTC" if is_aware else zone, path, business_time_zone=business)
        selected.append(f'CAST({expression} AS {column.duckdb_type}) AS "{column.name}"')
    source_path_sql = str(path).replace("'", "''")
    return f"SELECT {', '.join(selected)} FROM read_parquet('{source_path_sql}')"


def _is_number_type(arrow_type: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)


def _unix_sql(column_sql: str, spec: Mapping[str, Any], canonical: str, source_column: str, path: Path) -> str:
    """SQL reading a numeric Parquet column as unix time (naive UTC), by the first ``unix_s`` / ``unix_ms`` of ``date_formats``."""
    from crm_analytics.parsing import UNIX_MS, UNIX_S

    unit = next((f for f in spec.get("date_formats") or [] if f in (UNIX_S, UNIX_MS)), None)
    if unit is None:
        raise SourceError(f"{path}: column {source_column!r} (for {canonical!r}) holds numbers, not timestamps; if they are "
                          f"unix times, declare `date_formats: [{UNIX_S}]` (seconds) or [{UNIX_MS}] (milliseconds)")
    micros = 1_000_000 if unit == UNIX_S else 1_000
    return f"make_timestamp(CAST({column_sql} * {micros} AS BIGINT))"


def _parquet_key_part(part: str, name: str, spec: Mapping[str, Any], file_columns: list[str], path: Path) -> str:
    """SQL of one ``generate_key`` entry of a Parquet source: its raw column (mapped, or the file's own), or its constant."""
    mapped, constants = dict(spec.get("columns") or {}), dict(spec.get("constants") or {})
    if part in mapped and mapped[part] in file_columns:
        return f'"{mapped[part]}"'
    if part in constants:
        return "'" + str(constants[part]).replace("'", "''") + "'"
    if part in file_columns:
        return f'"{part}"'
    known = sorted(set(mapped) | set(constants) | set(file_columns))
    raise SourceError(f"{path}: source {name!r}: key `generate_key` names {part!r}, which is neither a column of the source "
                      f"nor of the file{_close_hint(part, known)}; it has {known}")


def _default_business_time_zone() -> str:
    from crm_analytics.parsing import default_business_time_zone

    return default_business_time_zone()


def _to_business_zone_sql(column_sql: str, zone: str, path: Path, *, business_time_zone: str) -> str:
    """SQL turning a Parquet timestamp column in ``zone`` into naive time in ``business_time_zone``.

    When the two zones keep one offset over every day the column spans (e.g. UTC
    and Asia/Shanghai since 1992), adding that offset is exact and about ten
    times cheaper than DuckDB's per-row zone conversion; otherwise the general
    conversion is used.
    """
    with duckdb.connect() as con:
        first, last = con.execute(f"SELECT min({column_sql}), max({column_sql}) FROM read_parquet(?)", [str(path)]).fetchone()
    offset = constant_offset(zone, business_time_zone, first, last) if first is not None else None
    if offset is not None:
        return f"(CAST({column_sql} AS TIMESTAMP) + INTERVAL {int(offset.total_seconds())} SECOND)"
    return f"timezone('{business_time_zone}', {local_to_instant_sql(f'CAST({column_sql} AS TIMESTAMP)', zone)})"


def local_to_instant_sql(local_sql: str, zone: str) -> str:
    """DuckDB SQL reading a naive local time of ``zone`` as an instant (``TIMESTAMPTZ``), by the project's rule.

    DuckDB reads a local time that occurs twice as its later occurrence; the rule
    (``crm_analytics.parsing.localize``) takes the first. That one is the local time
    read with the offset of six hours earlier, when it reads back as the same local
    time. A local time that never occurs (the spring gap) is read with the offset
    before the change by DuckDB as by the rule.
    """
    earlier = f"(timezone('{zone}', {local_sql} - INTERVAL 6 HOUR) + INTERVAL 6 HOUR)"
    return f"(CASE WHEN timezone('{zone}', {earlier}) = {local_sql} THEN {earlier} ELSE timezone('{zone}', {local_sql}) END)"


def constant_offset(from_zone: str, to_zone: str, first: dt.datetime, last: dt.datetime) -> dt.timedelta | None:
    """The offset from ``from_zone`` to ``to_zone`` if it is the same on every day from ``first`` to ``last``, else None.

    Checked at noon of each day: any offset change that lasts a day or more (daylight saving, a zone's
    redefinition) shows up. ``None`` also for a span over 100 years (not worth checking day by day).
    """
    source, target = ZoneInfo(from_zone), ZoneInfo(to_zone)
    n_days = (last.date() - first.date()).days
    if n_days > 36_600:
        return None
    offsets = set()
    for day in range(n_days + 2):
        noon = dt.datetime.combine(first.date() + dt.timedelta(days=day), dt.time(12))
        offsets.add(target.utcoffset(noon) - source.utcoffset(noon))
        if len(offsets) > 1:
            return None
    return offsets.pop()
