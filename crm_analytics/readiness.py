"""Is a dataset ready? Rows and date range per canonical table, gaps in the mapping, analyses the data supports.

``crm-analytics check-dataset NAME`` prints :func:`format_report` of :func:`check_dataset`. The tables are
read from the dataset's warehouse when it has been built (``data/warehouse/<name>.duckdb``), else through
its sources (the dataset file's ``sources:``, read as the cleansing build reads them, before cleansing).
For each canonical table the report gives

- the rows and the date range of its main time column (``order_time``, ``signup_time``, ...);
- the required columns no source maps (the build would refuse the source);
- the mapped columns that came out empty (every value missing);
- a source that cannot be read, with the reader's message;

and for each analysis whether the data supports it (:mod:`crm_analytics.requirements`): the tables it
needs, the optional ones whose sections it will skip, and the columns it reads that hold no value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from crm_analytics import access, datasets, paths, requirements, schema, sources


@dataclasses.dataclass(frozen=True)
class TableReadiness:
    """What one canonical table holds.

    Attributes
    ----------
    table : str
    rows : int
        Rows read (0 when no source feeds the table or none could be read).
    time_column : str or None
        The column the date range is taken from.
    first, last : str or None
        Earliest and latest value of ``time_column`` (ISO date), ``None`` without values.
    unmapped_required : tuple of str
        Required columns of the contract that no source provides.
    empty_columns : tuple of str
        Columns a source provides whose every value is missing.
    problems : tuple of str
        One line per source that could not be read.
    filled_columns : tuple of str
        Columns holding at least one value.
    declared : bool
        A source (or a warehouse table) exists for the table, whether or not it holds rows.
    """

    table: str
    rows: int
    time_column: str | None = None
    first: str | None = None
    last: str | None = None
    unmapped_required: tuple[str, ...] = ()
    empty_columns: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    filled_columns: tuple[str, ...] = ()
    declared: bool = True


    @property
    def present(self) -> bool:
        """True when the table holds at least one row."""
        return self.rows > 0


@dataclasses.dataclass(frozen=True)
class Readiness:
    """The readiness of one dataset: its tables, where they were read, what each analysis can do."""

    dataset: datasets.Dataset
    origin: str
    tables: dict[str, TableReadiness]
    analyses: dict[str, requirements.Applicability]
    empty_inputs: dict[str, dict[str, list[str]]]  # analysis -> table -> columns it reads that hold no value
    viewer_groups: str | None = None  # the dataset file's own viewer groups (its ``access`` block), described
    viewer_groups_problem: str | None = None  # why that block cannot be used (``access.AccessError``)

    @property
    def ready(self) -> bool:
        """True when every source was read, no required column is unmapped and the viewer groups (if any) are valid."""
        return not (self.viewer_groups_problem or any(t.problems or t.unmapped_required for t in self.tables.values()))


def dataset_viewer_groups(dataset_file: str | Path) -> tuple[str | None, str | None]:
    """The dataset file's own viewer groups (``access`` block, ``crm_analytics.access``), checked as ``serve`` will:
    ``(description, None)``, ``(None, problem)`` naming the file and key, or ``(None, None)`` without a block."""
    try:
        if not access.has_dataset_access(dataset_file):
            return None, None
        policy = access.load_access(dataset_file, key=access.DATASET_ACCESS_KEY)
    except access.AccessError as error:
        return None, str(error)
    restricted = sum(not group.rows.sees_all_rows for group in policy.groups)
    return f"{len(policy.groups)} viewer group(s) in the dataset file's access block, {restricted} of them restricted to some rows", None


def time_column(table: str) -> str | None:
    """The column a table's date range is read from: its first required timestamp, else its first date or timestamp."""
    columns = schema.get_table(table).columns
    timed = [c for c in columns if c.dtype in ("timestamp", "date")]
    required = [c for c in timed if c.required]
    chosen = (required or timed or [None])[0]
    return chosen.name if chosen else None


def _as_times(values: pd.Series, formats: list[str]) -> pd.Series:
    """Values as timestamps: typed ones as they are, text through the source's ``date_formats`` (ISO by default)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    from crm_analytics.parsing import ISO8601, parse_datetimes

    # the cleansing build's parser (named formats such as excel_serial and unix_s included); a range needs no zone
    return parse_datetimes(values, formats=formats or [ISO8601], time_zone="UTC", business_time_zone="UTC")["value"]


def _filled(values: pd.Series) -> bool:
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype("string").str.strip()
        return bool((text.notna() & (text != "")).any())
    return bool(values.notna().any())


def summarise_frame(table: str, frame: pd.DataFrame, *, date_formats: list[str] | None = None) -> TableReadiness:
    """Summarise the rows of one canonical table read from its sources (canonical column names)."""
    contract = schema.get_table(table)
    present = [c for c in contract.column_names if c in frame.columns]
    filled = tuple(c for c in present if _filled(frame[c]))
    column = time_column(table)
    first = last = None
    if column in frame.columns:
        times = _as_times(frame[column], date_formats or []).dropna()
        if not times.empty:
            first, last = times.min().date().isoformat(), times.max().date().isoformat()
    return TableReadiness(
        table=table,
        rows=len(frame),
        time_column=column,
        first=first,
        last=last,
        unmapped_required=tuple(c for c in contract.required_columns if c not in frame.columns),
        empty_columns=tuple(c for c in present if c not in filled),
        filled_columns=filled,
    )


def _read_source(name: str, spec: dict, data_dir: Path) -> tuple[pd.DataFrame | None, tuple[str, ...], str | None]:
    """``(frame, unmapped required columns, problem)`` of one source; a derived one is checked on its query result."""
    contract = schema.get_table(spec["table"])
    try:
        if sources.is_derived(spec):
            result = sources.run_query(name, spec, data_dir)
            renamed = set(result.columns) | set(spec.get("columns") or {}) | set(spec.get("constants") or {})
            unmapped = tuple(c for c in contract.required_columns if c not in renamed)
            if unmapped:
                return None, unmapped, None
        return sources.read_source(name, spec, data_dir), (), None
    except sources.SourceError as error:
        return None, (), " ".join(str(error).split())


def from_sources(dataset: datasets.Dataset) -> dict[str, TableReadiness]:
    """Read every source of ``dataset`` and summarise each canonical table (those without a source have 0 rows)."""
    source_map = sources.load_source_map(dataset.file)
    frames: dict[str, list[pd.DataFrame]] = {}
    unmapped: dict[str, set[str]] = {}
    problems: dict[str, list[str]] = {}
    formats: dict[str, list[str]] = {}
    for name, spec in source_map.items():
        table = spec["table"]
        frame, missing, problem = _read_source(name, spec, dataset.data_dir)
        unmapped.setdefault(table, set()).update(missing)
        if problem:
            problems.setdefault(table, []).append(problem)
        if frame is not None:
            frames.setdefault(table, []).append(frame)
            formats.setdefault(table, []).extend(spec.get("date_formats") or [])
    summary = {}
    for table in schema.TABLES:
        parts = frames.get(table)
        read = (summarise_frame(table, pd.concat(parts, ignore_index=True), date_formats=formats.get(table))
                if parts else TableReadiness(table, 0, time_column(table), declared=table in unmapped))
        summary[table] = dataclasses.replace(
            read,
            unmapped_required=tuple(sorted(set(read.unmapped_required if parts else ()) | unmapped.get(table, set()))),
            problems=tuple(problems.get(table, [])),
        )
    return summary


def _mapped_in_warehouse(con, existing: set[str]) -> dict[str, set[str]] | None:
    """``{table: columns some source provided}`` from the build's ``quality_profile``; ``None`` without it."""
    if "quality_profile" not in existing:
        return None
    mapped: dict[str, set[str]] = {}
    for table, column in con.execute("SELECT DISTINCT table_name, column_name FROM quality_profile").fetchall():
        mapped.setdefault(table, set()).add(column)
    return mapped


def from_warehouse(path: str | Path) -> dict[str, TableReadiness]:
    """Summarise each canonical table of a built warehouse (tables it lacks have 0 rows).

    A column counts as mapped when the build profiled it for a source (``quality_profile``); without
    that table, every contract column does.
    """
    import duckdb

    summary = {}
    with duckdb.connect(str(path), read_only=True) as con:
        existing = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        mapped = _mapped_in_warehouse(con, existing)
        for table in schema.TABLES:
            column = time_column(table)
            if table not in existing:
                summary[table] = TableReadiness(table, 0, column, declared=False)
                continue
            have = [row[0] for row in con.execute(f'DESCRIBE "{table}"').fetchall()]
            contract = [c for c in schema.get_table(table).column_names if c in have]
            counts = con.execute(
                "SELECT count(*)" + "".join(f', count("{c}")' for c in contract) + f' FROM "{table}"'
            ).fetchone()
            rows, filled = counts[0], tuple(c for c, n in zip(contract, counts[1:]) if n)
            first = last = None
            if column in have and rows:
                low, high = con.execute(f'SELECT min("{column}"), max("{column}") FROM "{table}"').fetchone()
                first, last = (pd.Timestamp(v).date().isoformat() if v is not None else None for v in (low, high))
            summary[table] = TableReadiness(
                table=table, rows=int(rows), time_column=column, first=first, last=last,
                unmapped_required=tuple(c for c in schema.get_table(table).required_columns if c not in have),
                empty_columns=tuple(
                    c for c in contract if c not in filled and (mapped is None or c in mapped.get(table, ()))
                ) if rows else (),
                filled_columns=filled,
            )
    return summary


def analyses_supported(tables: Mapping[str, TableReadiness]) -> tuple[dict[str, requirements.Applicability], dict[str, dict[str, list[str]]]]:
    """Each declared analysis's applicability, and the columns it reads that hold no value (per table)."""
    rows = {name: t.rows for name, t in tables.items() if t.declared}
    filled = {name: t.filled_columns for name, t in tables.items() if t.present}
    verdicts = {name: requirements.check(name, rows) for name in sorted(requirements.REQUIREMENTS)}
    build = verdicts.get("cleansing")
    if build is not None and not build.applicable:  # nothing runs without a warehouse
        verdicts = {name: dataclasses.replace(v, applicable=False, reason=f"the build {build.reason}") if name != "cleansing" else v
                    for name, v in verdicts.items()}
    empty = {name: requirements.missing_columns(name, filled) for name in verdicts}
    return verdicts, {name: gaps for name, gaps in empty.items() if gaps}


def check_dataset(name: str | Path | None = None, *, warehouse_path: str | Path | None = None) -> Readiness:
    """Check one dataset: from its warehouse when built after the dataset file last changed (or from
    ``warehouse_path``), else from its sources, so an edit to the dataset file is checked before the next build.

    Raises ``DatasetError`` for an unknown or unfinished dataset file and ``SourceError`` for a
    source map that cannot be read at all.
    """
    dataset = datasets.load_dataset(name)
    warehouse = Path(warehouse_path) if warehouse_path else paths.warehouse_path(dataset.name)
    if warehouse_path or (warehouse.is_file() and warehouse.stat().st_mtime >= dataset.file.stat().st_mtime):
        tables, origin = from_warehouse(warehouse), f"the warehouse {warehouse}"
    else:
        why = "changed since the last build" if warehouse.is_file() else "no warehouse built yet"
        tables, origin = from_sources(dataset), f"the sources of {dataset.file} ({why})"
    verdicts, empty = analyses_supported(tables)
    groups, problem = dataset_viewer_groups(dataset.file)
    return Readiness(dataset=dataset, origin=origin, tables=tables, analyses=verdicts, empty_inputs=empty,
                     viewer_groups=groups, viewer_groups_problem=problem)


def format_report(readiness: Readiness) -> str:
    """The readiness report as plain text, one fact a line."""
    lines = [f"Dataset {readiness.dataset.describe()}, read from {readiness.origin}", "", "Tables"]
    lines.append(f"  {'table':<28}{'rows':>12}  {'from':<11} {'to':<11} date column")
    for table in readiness.tables.values():
        rows = f"{table.rows:,}" if table.present else "-"
        span = f"{table.first or '':<11} {table.last or '':<11} {table.time_column or ''}" if table.present else "no data"
        lines.append(f"  {table.table:<28}{rows:>12}  {span}".rstrip())
    unmapped = [f"{t.table}.{c}" for t in readiness.tables.values() for c in t.unmapped_required]
    empty = [f"{t.table}.{c}" for t in readiness.tables.values() for c in t.empty_columns]
    problems = [f"{t.table}: {p}" for t in readiness.tables.values() for p in t.problems]
    lines += ["", "Unmapped required columns: " + (", ".join(unmapped) or "none")]
    lines += ["Mapped columns that came out empty: " + (", ".join(empty) or "none")]
    if problems:
        lines += ["Sources that could not be read:"] + [f"  {p}" for p in problems]
    if readiness.viewer_groups_problem:
        lines += [f"Viewer groups cannot be used: {readiness.viewer_groups_problem}"]
    elif readiness.viewer_groups:
        lines += [f"Viewer groups: {readiness.viewer_groups}"]
    lines += ["", "Analyses"]
    for analysis, verdict in readiness.analyses.items():
        if not verdict.applicable:
            lines.append(f"  no    {analysis}: {verdict.reason}")
            continue
        lines.append(f"  yes   {analysis}")
        optional = requirements.requirement(analysis).optional
        lines += [f"        skipped without {table}: {optional[table]}" for table in verdict.missing_optional]
        for table, columns in readiness.empty_inputs.get(analysis, {}).items():
            lines.append(f"        reads {table}.{', '.join(columns)}, which hold no value")
    supported = sum(v.applicable for v in readiness.analyses.values())
    lines += ["", f"{supported} of {len(readiness.analyses)} analyses are supported by this data."]
    if not readiness.ready:
        lines.append("Not ready: fix the unmapped columns, unreadable sources and viewer groups in the dataset file, then check again.")
    return "\n".join(lines) + "\n"
