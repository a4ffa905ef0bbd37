"""Read raw source exports onto the canonical column names.

A source is declared in ``parameters/sources.yaml`` (format, encoding, column
map, constants; see the comments there). ``read_source`` returns the rows as
read, with canonical column names and three lineage columns:

``_source``
    the source's name in the map, e.g. ``store_members``;
``_source_file``
    the file (or SQL URL without credentials) it came from;
``_source_row``
    the 1-based data row number in that file, header excluded.

Values of CSV and Excel sources stay text (standardisation is the cleansing
step's job), so nothing is lost or guessed here. Parquet and SQL sources keep
their types. Problems that make a whole file unreadable raise
``SourceError`` naming the file and, where it applies, the column.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import yaml

from crm_analytics import paths, schema

FORMATS = ("csv", "excel", "parquet", "sql")
ENCODING_CASCADE = ("utf-8-sig", "gb18030")
LINEAGE_COLUMNS = ("_source", "_source_file", "_source_row")
_SPEC_KEYS = {"table", "path", "format", "encoding", "sheet", "time_zone", "date_formats", "columns", "constants", "url", "query", "delimiter"}


class SourceError(ValueError):
    """A source cannot be read as declared. The message names the file and, where it applies, the column."""


def load_source_map(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Read and check a source map (default ``parameters/sources.yaml``).

    Returns ``{source name: spec}``. Raises ``SourceError`` naming the source and
    the field for an unknown table, format, canonical column or key, and for a
    required column that is neither mapped nor a constant.
    """
    map_path = Path(path) if path else paths.sources_file()
    with open(map_path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    sources = document.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise SourceError(f"{map_path}: no `sources:` mapping found")
    for name, spec in sources.items():
        check_spec(name, spec, where=str(map_path))
    return sources


def check_spec(name: str, spec: dict[str, Any], *, where: str = "source map") -> None:
    """Raise ``SourceError`` if one source's spec is inconsistent with the schema."""
    prefix = f"{where}: source {name!r}"
    unknown_keys = set(spec) - _SPEC_KEYS
    if unknown_keys:
        raise SourceError(f"{prefix}: unknown key(s) {sorted(unknown_keys)}; allowed: {sorted(_SPEC_KEYS)}")
    if spec.get("format") not in FORMATS:
        raise SourceError(f"{prefix}: format must be one of {FORMATS}, got {spec.get('format')!r}")
    try:
        table = schema.get_table(spec.get("table", ""))
    except KeyError as error:
        raise SourceError(f"{prefix}: {error.args[0]}") from None
    mapped = dict(spec.get("columns") or {}) | dict(spec.get("constants") or {})
    unknown = [c for c in mapped if c not in table.column_names]
    if unknown:
        raise SourceError(f"{prefix}: {unknown} are not columns of table {table.name!r} ({table.column_names})")
    unmapped = [c for c in table.required_columns if c not in mapped]
    if unmapped:
        raise SourceError(f"{prefix}: required column(s) {unmapped} of table {table.name!r} are neither mapped nor constant")
    if spec["format"] == "sql" and not spec.get("url"):
        raise SourceError(f"{prefix}: a sql source needs `url` (a SQLAlchemy URL) and `query` or `path` (a table name)")


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
    (mapped optional columns the file lacks; they read as missing values).
    """
    check_spec(name, spec)
    reader = {"csv": _read_csv, "excel": _read_excel, "parquet": _read_parquet, "sql": _read_sql}[spec["format"]]
    raw, location, attrs = reader(spec, Path(dataset_dir) if dataset_dir else paths.raw_dir())
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
    try:
        with pd.read_csv(path, **options, chunksize=chunk_rows) as reader:
            for raw in reader:
                raw.columns = [str(c).strip() for c in raw.columns]
                frame = _mapped_with_lineage(raw, name, spec, str(path), _csv_attrs(options), first_row=offset + 1)
                offset += len(frame)
                yield frame
    except pd.errors.ParserError as error:
        raise SourceError(f"{path}: not a well-formed CSV with delimiter {options['sep']!r}: {error}") from None


def _mapped_with_lineage(raw: pd.DataFrame, name: str, spec: dict[str, Any], location: str, attrs: dict, *, first_row: int = 1) -> pd.DataFrame:
    """Map ``raw`` onto canonical names and add the ``attrs`` and lineage columns (rows numbered from ``first_row``)."""
    frame = _map_columns(raw, spec, location)
    frame.attrs.update(attrs)
    frame.attrs["unknown_columns"] = [c for c in raw.columns if c not in set(spec["columns"].values())]
    frame.attrs["missing_optional_columns"] = [c for c in spec["columns"].values() if c not in raw.columns]
    frame["_source"] = name
    frame["_source_file"] = location
    frame["_source_row"] = pd.RangeIndex(first_row, first_row + len(frame)).to_numpy()
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


def _missing_columns_error(location: str, missing: dict[str, str], present: list[str]) -> SourceError:
    named = ", ".join(f"{source!r} (for {canonical!r})" for canonical, source in missing.items())
    return SourceError(f"{location}: missing required column {named}; the file has columns {present}")


def _map_columns(raw: pd.DataFrame, spec: dict[str, Any], location: str) -> pd.DataFrame:
    table = schema.get_table(spec["table"])
    column_map: dict[str, str] = spec["columns"]
    missing = {c: column_map[c] for c in table.required_columns if c in column_map and column_map[c] not in raw.columns}
    if missing:
        raise _missing_columns_error(location, missing, list(raw.columns))
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
        if all(name in next(csv.reader([header_line], delimiter=delimiter)) for name in expected):
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
        encoding = detect_encoding(path)
    with open(path, encoding=encoding) as handle:
        header_line = handle.readline().rstrip("\r\n")
    if not header_line.strip():
        raise SourceError(f"{path}: empty input (no header line)")
    delimiter = spec.get("delimiter") or _sniff_delimiter(header_line, list(spec["columns"].values()))
    return path, {"encoding": encoding, "sep": delimiter, "dtype": str, "keep_default_na": False, "na_values": [""], "engine": "c"}


def _csv_attrs(options: dict[str, Any]) -> dict[str, str]:
    return {"encoding": options["encoding"], "delimiter": options["sep"]}


def _read_csv(spec: dict[str, Any], dataset_dir: Path) -> tuple[pd.DataFrame, str, dict]:
    path, options = _csv_options(spec, dataset_dir)
    try:
        raw = pd.read_csv(path, **options)
    except pd.errors.ParserError as error:
        raise SourceError(f"{path}: not a well-formed CSV with delimiter {options['sep']!r}: {error}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw, str(path), _csv_attrs(options)


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
    path = _existing_file(spec, dataset_dir)
    sheet = spec.get("sheet", 0)
    try:
        # calamine reads an export of tens of thousands of rows about ten times faster than openpyxl;
        # cells come back as the same Python values, which _excel_cell_text turns into text.
        raw = pd.read_excel(path, sheet_name=sheet, dtype=object, engine="calamine")
    except ValueError as error:  # unknown sheet name
        raise SourceError(f"{path}: {error}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    raw = raw.apply(lambda column: column.map(_excel_cell_text)).astype("string")
    return raw, f"{path}#{sheet}", {}


def _read_parquet(spec: dict[str, Any], dataset_dir: Path) -> tuple[pd.DataFrame, str, dict]:
    path = _existing_file(spec, dataset_dir)
    import pyarrow.parquet as pq

    present = pq.read_schema(path).names
    wanted = [c for c in spec["columns"].values() if c in present]
    return pd.read_parquet(path, columns=wanted), str(path), {}


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


def parquet_select_sql(name: str, spec: dict[str, Any], dataset_dir: str | Path) -> str:
    """Return a DuckDB SELECT reading a Parquet source onto canonical names, for tables too large for pandas.

    Timestamps stored with a time zone are converted to the business zone;
    naive ones are taken to be in the source's ``time_zone`` (default: business zone).
    """
    import pyarrow.parquet as pq

    path = _existing_file(spec, Path(dataset_dir))
    file_schema = pq.read_schema(path)
    table = schema.get_table(spec["table"])
    zone = spec.get("time_zone", schema.BUSINESS_TIME_ZONE)
    selected = []
    for column in table.columns:
        source_column = spec["columns"].get(column.name)
        if source_column is None or source_column not in file_schema.names:
            constant = (spec.get("constants") or {}).get(column.name)
            value = "NULL" if constant is None else "'" + str(constant).replace("'", "''") + "'"
            selected.append(f'CAST({value} AS {column.duckdb_type}) AS "{column.name}"')
            continue
        expression = f'"{source_column}"'
        if column.dtype == "timestamp":
            is_aware = getattr(file_schema.field(source_column).type, "tz", None) is not None
            expression = _to_business_zone_sql(expression, "UTC" if is_aware else zone, path)
        selected.append(f'CAST({expression} AS {column.duckdb_type}) AS "{column.name}"')
    source_path_sql = str(path).replace("'", "''")
    return f"SELECT {', '.join(selected)} FROM read_parquet('{source_path_sql}')"


def _to_business_zone_sql(column_sql: str, zone: str, path: Path) -> str:
    """SQL turning a Parquet timestamp column in ``zone`` into naive business-zone time.

    When the two zones keep one offset over every day the column spans (e.g. UTC
    and Asia/Shanghai since 1992), adding that offset is exact and about ten
    times cheaper than DuckDB's per-row zone conversion; otherwise the general
    conversion is used.
    """
    business = schema.BUSINESS_TIME_ZONE
    with duckdb.connect() as con:
        first, last = con.execute(f"SELECT min({column_sql}), max({column_sql}) FROM read_parquet(?)", [str(path)]).fetchone()
    offset = constant_offset(zone, business, first, last) if first is not None else None
    if offset is not None:
        return f"(CAST({column_sql} AS TIMESTAMP) + INTERVAL {int(offset.total_seconds())} SECOND)"
    return f"timezone('{business}', timezone('{zone}', CAST({column_sql} AS TIMESTAMP)))"


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
