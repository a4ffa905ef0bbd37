"""Validation of large typed sources (Parquet) inside DuckDB, without passing rows through pandas.

Parquet sources arrive typed, so standardisation reduces to spelling
categorical codes one way; the contract checks of ``validate.contract_schema``
(required, unique keys, dates up to ``as_of``, ranges) and the customer look-up
run as SQL; the quarantine entries come back as a small pandas frame.
Same reason codes and actions as ``validate``: rows in = rows clean + rows quarantined.
The clean rows go to a Parquet file in a work folder, in the table's contract
(``StagedSource``), never through pandas; DuckDB runs with a memory limit and
spills to that folder (``duck.connect``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from crm_analytics import schema, sources
from crm_analytics.cleansing import validate, vocabulary
from crm_analytics.cleansing.duck import arrow, connect, contract_select, copy_to_parquet, quote

# parsing.CONTROL_CHARACTERS in DuckDB's (RE2) syntax: removed from text columns, as the standardisers do
CONTROL_CHARACTERS_SQL = r"[\x00-\x08\x0e-\x1f\x{7f}-\x{9f}]"
_ROW_REASONS = (validate.DUPLICATE_KEY, validate.MISSING_REQUIRED, validate.UNKNOWN_CUSTOMER, validate.UNKNOWN_ORDER)


@dataclass(frozen=True)
class StagedSource:
    """One validated fact source whose clean rows sit in a Parquet file.

    ``clean_path``: the clean rows, every column of the table's contract in order and
    type (absent ones null); ``columns``: the contract columns the source provides;
    ``quarantine``: ``validate.QUARANTINE_COLUMNS``; ``profile``: the before/after quality rows;
    ``value_maps``: the dataset's value maps applied, with row counts (``vocabulary.VALUE_MAP_COLUMNS``);
    ``ordered``: whether the clean rows are in source row order (a source validated in chunks), or in no particular order
    (one validated inside DuckDB, whose joins run in parallel).
    """

    name: str
    table: str
    clean_path: Path
    quarantine: pd.DataFrame
    profile: pd.DataFrame
    n_rows_in: int
    n_rows_clean: int
    columns: list[str]
    value_maps: pd.DataFrame = field(default_factory=vocabulary.empty_mapping_counts)
    ordered: bool = True

    @property
    def n_rows_quarantined(self) -> int:
        """Rows that left the clean table (distinct rows with a ``row`` quarantine entry)."""
        return validate.count_quarantined_rows(self.quarantine)


class EmptySourceError(sources.SourceError):
    """A fact source has no rows (a header-only export) and the dataset does not declare that it may be empty."""


def check_not_empty(name: str, spec: Mapping[str, Any], dataset_dir: str | Path, n_rows: int) -> None:
    """Raise ``EmptySourceError`` naming the source and its file when a fact source read no rows.

    A truncated or failed export that kept only its header would otherwise build a warehouse missing
    that whole table's part; a source that may legitimately be empty says so with ``may_be_empty: true``.
    """
    if n_rows or spec.get("may_be_empty"):
        return
    where = str(sources.source_path(dict(spec), dataset_dir)) if spec.get("path") else f"query over inputs {spec.get('inputs') or []}"
    raise EmptySourceError(
        f"{where}: source {name!r} (table {spec['table']!r}) has no rows (only a header?). Check the export; if this "
        f"source may be empty, set `may_be_empty: true` on it in the dataset file's `sources:`"
    )


def links_orders(table_name: str, present: list[str], known_orders: list[Path] | None) -> bool:
    """Whether a source's order lines are checked against the orders: a table ``order_items`` with ``order_id``,
    and the clean Parquet files of the ``orders`` sources given (a dataset without orders checks nothing)."""
    return bool(known_orders) and table_name == "order_items" and "order_id" in present


def register_known_orders(con: duckdb.DuckDBPyConnection, known_orders: list[Path]) -> None:
    """Temp table ``known_orders`` (``order_id`` as text): every order id of the staged ``orders`` sources."""
    files = "[" + ", ".join(quote(path) for path in known_orders) + "]"
    con.execute(f"CREATE TEMP TABLE known_orders AS SELECT DISTINCT CAST(order_id AS VARCHAR) AS order_id "
                f"FROM read_parquet({files}) WHERE order_id IS NOT NULL")


UNKNOWN_ORDER_WHERE = "order_id IS NOT NULL AND CAST(order_id AS VARCHAR) NOT IN (SELECT order_id FROM known_orders)"


def source_select(name: str, spec: Mapping[str, Any], dataset_dir: str | Path, *, business_time_zone: str | None = None) -> str:
    """The source's typed canonical columns plus ``_source_row`` (1-based row in the file); timestamps in ``business_time_zone``."""
    select = sources.parquet_select_sql(name, dict(spec), dataset_dir, business_time_zone=business_time_zone)
    head, sep, tail = select.rpartition(" FROM read_parquet(")
    if not sep or not tail.endswith(")"):
        raise ValueError(f"unexpected Parquet SELECT for source {name!r}: {select[:200]}")
    return f"{head}, file_row_number + 1 AS _source_row FROM read_parquet({tail[:-1]}, file_row_number = true)"


def _failure_selects(table: schema.Table, present: list[str], cutoff: pd.Timestamp, *, link_customers: bool,
                     bounds: validate.Bounds | None = None, link_orders: bool = False) -> list[str]:
    """SQL selecting ``(_source_row, column_name, reason)`` for every check of the contract (``bounds``: the
    plausibility bounds, default ``validate.plausibility_bounds()``)."""
    bounds = bounds or validate.plausibility_bounds()
    selects = []
    for column in table.columns:
        if column.name not in present:
            continue
        col = f'"{column.name}"'
        fail = lambda where, reason, c=column.name: f"SELECT _source_row, {quote(c)} AS column_name, {quote(reason)} AS reason FROM src WHERE {where}"  # noqa: E731
        if column.required or column.key:
            selects.append(fail(f"{col} IS NULL", validate.MISSING_REQUIRED))
        if column.key:
            # only the keys held more than once are ranked: the window then sorts a handful of rows, not the whole source
            repeated = f"SELECT {col} FROM src WHERE {col} IS NOT NULL GROUP BY {col} HAVING count(*) > 1"
            selects.append(
                f"SELECT _source_row, {quote(column.name)}, {quote(validate.DUPLICATE_KEY)} FROM "
                f"(SELECT _source_row, row_number() OVER (PARTITION BY {col} ORDER BY _source_row) AS n FROM src WHERE {col} IN ({repeated})) WHERE n > 1"
            )
        if column.dtype in ("timestamp", "date"):
            selects.append(fail(f"{col} >= TIMESTAMP {quote(cutoff)}", validate.FUTURE_DATE))
            selects.append(fail(f"{col} < TIMESTAMP {quote(bounds.earliest_of(column))}", validate.OUT_OF_RANGE))
        if bounds.range_of(column) is not None:
            low, high = bounds.range_of(column)
            not_finite = f" OR NOT isfinite({col})" if column.dtype == "float64" else ""
            selects.append(fail(f"{col} < {low!r} OR {col} > {high!r}{not_finite}", validate.OUT_OF_RANGE))
    if link_orders:
        selects.append(f"SELECT _source_row, 'order_id', {quote(validate.UNKNOWN_ORDER)} FROM src WHERE {UNKNOWN_ORDER_WHERE}")
    if link_customers:
        selects.append(
            "SELECT _source_row, 'customer_id', " + quote(validate.UNKNOWN_CUSTOMER)
            + " FROM src WHERE customer_id IS NOT NULL AND customer_id NOT IN (SELECT source_customer_id FROM id_lookup)"
        )
    return selects


def _action_sql(table: schema.Table) -> str:
    required = ", ".join(quote(c) for c in table.required_columns) or "NULL"
    reasons = ", ".join(quote(r) for r in _ROW_REASONS)
    return f"CASE WHEN column_name IN ({required}) OR reason IN ({reasons}) THEN 'row' ELSE 'value' END"


def _settle_vocabularies(con: duckdb.DuckDBPyConnection, table: schema.Table, columns: list[str],
                         value_maps: dict[str, dict[str, str]]) -> pd.DataFrame | None:
    """For each categorical column to settle: a temp table ``"vocab__<column>"`` (``raw``, ``value``, ``reason``) of its
    distinct values settled by ``vocabulary.settle_values`` (the rule of the pandas path, so both agree), and the
    value-map entries applied with their row counts (``column_name``, ``source_value``, ``canonical_value``, ``n_rows``)."""
    applied = []
    for name in columns:
        counts = con.execute(f'SELECT CAST("{name}" AS VARCHAR) AS raw, count(*) AS n FROM src WHERE "{name}" IS NOT NULL GROUP BY 1').df()
        settled = vocabulary.settle_values(counts["raw"].astype("string"), table.column(name), value_maps.get(name))
        frame = pd.DataFrame({"raw": counts["raw"].astype("string"), "value": settled["value"], "reason": settled["reason"]})
        con.register("vocab_frame", arrow(frame))
        con.execute(f'CREATE TEMP TABLE "vocab__{name}" AS SELECT * FROM vocab_frame')
        con.unregister("vocab_frame")
        applied.append(vocabulary.applied_maps(counts.set_index("raw")["n"], value_maps.get(name)).assign(column_name=name))
    return pd.concat(applied, ignore_index=True) if applied else None


def _vocabulary_failure_selects(columns: list[str]) -> list[str]:
    """SQL selecting ``(_source_row, column_name, reason)`` for the values ``_settle_vocabularies`` rejected (a warning,
    such as control characters removed, rejects nothing: ``validate.WARNINGS``)."""
    warnings = ", ".join(quote(w) for w in sorted(validate.WARNINGS))
    return [f'SELECT src._source_row, {quote(name)}, voc.reason FROM src JOIN "vocab__{name}" voc '
            f'ON voc.raw = CAST(src."{name}" AS VARCHAR) WHERE voc.reason <> \'\' AND voc.reason NOT IN ({warnings})' for name in columns]


def _required_when_selects(table: schema.Table, present: list[str], settled: tuple[str, ...]) -> list[str]:
    """SQL selecting ``(_source_row, column_name, reason)`` for values missing where ``required_when`` asks for them
    (``validate.required_when_failures``): the condition is read on its settled value (the dataset's value maps applied)."""
    selects = []
    for column in table.columns:
        if column.required_when is None or column.required_when[0] not in present:
            continue
        on, values = column.required_when
        condition = f'src."{on}"'
        if on in settled:
            condition = f'(SELECT voc.value FROM "vocab__{on}" voc WHERE voc.raw = CAST({condition} AS VARCHAR))'
        elif on in validate.CODE_COLUMNS:
            condition = f"replace(replace(lower(trim({condition})), ' ', '_'), '-', '_')"
        missing = f'src."{column.name}" IS NULL AND ' if column.name in present else ""
        listed = ", ".join(quote(v) for v in values)
        selects.append(f"SELECT src._source_row, {quote(column.name)}, {quote(validate.MISSING_REQUIRED)} FROM src "
                       f"WHERE {missing}{condition} IN ({listed})")
    return selects


def _cleaned_column(table: schema.Table, name: str, controlled: Collection[str] | None) -> str:
    """SQL of one column of ``src`` with control characters removed from text; ``controlled``: the text columns holding
    any (None: every text column), the others need no pass."""
    col = f'src."{name}"'
    if table.column(name).dtype == "string" and (controlled is None or name in controlled):
        col = f"regexp_replace({col}, {quote(CONTROL_CHARACTERS_SQL)}, '', 'g')"
    return col


def _clean_columns(table: schema.Table, present: list[str], *, link_customers: bool, settled: tuple[str, ...] = (),
                   controlled: Collection[str] | None = None) -> str:
    """The SELECT list of the clean rows (over ``src`` joined as ``_clean_joins`` says); ``controlled``: see ``_cleaned_column``."""
    parts = []
    for name in present:
        col = _cleaned_column(table, name, controlled)
        value = f"replace(replace(lower(trim({col})), ' ', '_'), '-', '_')" if name in validate.CODE_COLUMNS else col
        if name in settled:
            value = f'"voc__{name}".value'
        value = f"CASE WHEN v.\"{name}\" THEN NULL ELSE {value} END" if name not in table.required_columns else value
        if name == "customer_id" and link_customers:
            value = "k.customer_key"
        parts.append(f'{value} AS "{name}"')
    return ", ".join(parts)


def _clean_joins(table: schema.Table, settled: tuple[str, ...], controlled: Collection[str] | None) -> str:
    """LEFT JOINs of ``src`` onto each settled column's vocabulary (``"voc__<column>"``; its raw values are distinct,
    so every row keeps exactly one match or none, as a scalar look-up would)."""
    return " ".join(f'LEFT JOIN "vocab__{name}" "voc__{name}" ON "voc__{name}".raw = CAST({_cleaned_column(table, name, controlled)} AS VARCHAR)'
                    for name in settled)


def validate_parquet(
    name: str,
    spec: Mapping[str, Any],
    dataset_dir: str | Path,
    *,
    as_of: pd.Timestamp,
    id_lookup: pd.DataFrame | None,
    work_dir: str | Path,
    business_time_zone: str | None = None,
    dataset: Any = None,
    known_orders: list[Path] | None = None,
) -> StagedSource:
    """Validate one Parquet source in DuckDB.

    Parameters
    ----------
    name, spec : the source and its entry of the source map (``format: parquet``).
    dataset_dir : folder of the exports.
    as_of : Timestamp
        Dates after it (a bare date includes its day) are quarantined.
    id_lookup : DataFrame or None
        ``source_customer_id`` -> ``customer_key``; when given and the table has
        ``customer_id``, it is replaced by the key and unknown ids are quarantined.
    work_dir : path
        Existing folder for the clean rows (``<name>.parquet``) and DuckDB's spill files.
    business_time_zone : str, optional
        The dataset's business time zone, where timestamps are stored (default: the default dataset's).
    dataset : datasets.Dataset, optional
        Its ``anonymous_orders`` policy decides whether an order without a customer is kept (default) or quarantined;
        its ``bounds`` the plausibility ranges (``validate.plausibility_bounds``).
    known_orders : list of paths, optional
        The clean Parquet files of the ``orders`` sources: an order line whose order is in none is
        quarantined as ``unknown_order``.

    Returns
    -------
    StagedSource
        ``clean_path`` holds the clean rows (the table's contract); ``quarantine`` has
        ``validate.QUARANTINE_COLUMNS``; ``profile`` the before/after quality rows.
    """
    table = validate.table_contract(spec["table"], dataset=dataset)
    cutoff = validate.cutoff_of(as_of)
    clean_path = Path(work_dir) / f"{name}.parquet"
    con = connect(work_dir)
    try:
        con.execute(f"CREATE TEMP TABLE src AS {source_select(name, spec, dataset_dir, business_time_zone=business_time_zone)}")
        generated = table.key_columns if spec.get("generate_key") else []  # sources.generate_keys, in SQL
        present = [c for c in table.column_names if c in spec["columns"] or c in (spec.get("constants") or {}) or c in generated]
        link = id_lookup is not None and "customer_id" in present
        if link:
            # an id held in several systems links to its first occurrence's customer, as the pandas path links it
            lookup = id_lookup[["source_customer_id", "customer_key"]].assign(_position=range(len(id_lookup)))
            con.register("id_lookup_frame", arrow(lookup))
            con.execute("CREATE TEMP TABLE id_lookup AS SELECT DISTINCT ON (source_customer_id) source_customer_id, customer_key "
                        "FROM id_lookup_frame ORDER BY source_customer_id, _position")
            con.unregister("id_lookup_frame")
        link_orders = links_orders(table.name, present, known_orders)
        if link_orders:
            register_known_orders(con, known_orders)
        value_maps = vocabulary.table_value_maps(dataset, table.name)
        settled = tuple(c for c in vocabulary.checked_columns(table, value_maps) if c in present)
        applied = _settle_vocabularies(con, table, list(settled), value_maps)
        bounds = validate.plausibility_bounds(dataset)
        checks = (_failure_selects(table, present, cutoff, link_customers=link, bounds=bounds, link_orders=link_orders)
                  + _vocabulary_failure_selects(list(settled)) + _required_when_selects(table, present, settled))
        # a value failing several checks keeps the reason of the first check, on every run
        failures = " UNION ALL ".join(f"SELECT *, {i} AS _check FROM ({check})" for i, check in enumerate(checks))
        con.execute(
            f"CREATE TEMP TABLE failures AS SELECT DISTINCT ON (_source_row, column_name) _source_row, column_name, reason, "
            f"{_action_sql(table)} AS action FROM ({failures}) ORDER BY _source_row, column_name, _check"
        )
        quarantine = _quarantine_frame(con, name, table, present, str(sources.source_path(spec, dataset_dir)))
        flags = ", ".join(f"bool_or(column_name = {quote(c)} AND action = 'value') AS \"{c}\"" for c in present)
        con.execute(f"CREATE TEMP TABLE value_flags AS SELECT _source_row, {flags} FROM failures GROUP BY _source_row")
        n_control = _control_character_counts(con, table, present)
        controlled = {column for column, n in n_control.items() if n}
        join = "LEFT JOIN id_lookup k ON k.source_customer_id = src.customer_id" if link else ""
        clean = (
            f"SELECT {_clean_columns(table, present, link_customers=link, settled=settled, controlled=controlled)} FROM src "
            f"LEFT JOIN value_flags v ON v._source_row = src._source_row {join} {_clean_joins(table, settled, controlled)} "
            f"ANTI JOIN (SELECT _source_row FROM failures WHERE action = 'row') q ON q._source_row = src._source_row"
        )
        n_clean = copy_to_parquet(con, contract_select(f"({clean})", table, present), clean_path)
        n_in = con.execute("SELECT count(*) FROM src").fetchone()[0]
        check_not_empty(name, spec, dataset_dir, n_in)
        profile = _profile(con, name, table, present, f"read_parquet({quote(clean_path)})", n_control=n_control)
    finally:
        con.close()
    return StagedSource(name, table.name, clean_path, quarantine, profile, int(n_in), n_clean, present,
                        value_maps=vocabulary.label_mapping_counts(applied, source=name, table_name=table.name), ordered=False)


def _quarantine_frame(con: duckdb.DuckDBPyConnection, name: str, table: schema.Table, present: list[str], path: str) -> pd.DataFrame:
    cases = " ".join(f"WHEN {quote(c)} THEN CAST(src.\"{c}\" AS VARCHAR)" for c in present)
    ranks = " ".join(f"WHEN {quote(c)} THEN {i}" for i, c in enumerate(table.column_names))
    frame = con.execute(
        f"SELECT {quote(name)} AS source, {quote(path)} AS source_file, f._source_row AS source_row, {quote(table.name)} AS table_name, "
        f"f.column_name, CASE f.column_name {cases} END AS raw_value, f.reason, f.action "
        f"FROM failures f JOIN src USING (_source_row) ORDER BY f._source_row, CASE f.column_name {ranks} END, f.column_name"
    ).df()
    out = frame.astype({c: "string" for c in validate.QUARANTINE_COLUMNS if c != "source_row"})
    out["source_row"] = out["source_row"].astype("Int64")
    return out[validate.QUARANTINE_COLUMNS]


def _control_character_counts(con: duckdb.DuckDBPyConnection, table: schema.Table, present: list[str]) -> dict[str, int]:
    """``{text column: values of src holding control characters}`` (``CONTROL_CHARACTERS_SQL``), in one pass.

    The pattern is one character, so a row's text columns joined hold one exactly when one of them does: one match per
    row finds the few rows to count column by column (``concat`` skips missing values).
    """
    text = [c for c in present if table.column(c).dtype == "string"]
    if not text:
        return {}
    pattern = quote(CONTROL_CHARACTERS_SQL)
    controls = ", ".join(f'count(*) FILTER (WHERE regexp_matches("{c}", {pattern}))' for c in text)
    joined = "concat(" + ", ".join(f'"{c}"' for c in text) + ")"
    return {c: int(n) for c, n in zip(text, con.execute(f"SELECT {controls} FROM src WHERE regexp_matches({joined}, {pattern})").fetchone())}


def _profile(con: duckdb.DuckDBPyConnection, name: str, table: schema.Table, present: list[str], clean_relation: str, *,
             n_control: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The before/after profile rows of a source validated in ``con``; ``n_control``: ``_control_character_counts`` when
    already counted."""
    rows = []
    n_control = _control_character_counts(con, table, present) if n_control is None else n_control
    for stage, relation in (("before", "src"), ("after", clean_relation)):
        parts = ", ".join(f'count("{c}"), approx_count_distinct("{c}")' for c in present)
        values = con.execute(f"SELECT count(*), {parts} FROM {relation}").fetchone()
        n = values[0]
        for i, column in enumerate(present):
            filled, distinct = values[1 + 2 * i], values[2 + 2 * i]
            invalid = con.execute(f"SELECT count(*) FROM failures WHERE column_name = {quote(column)} AND reason <> {quote(validate.MISSING_REQUIRED)}").fetchone()[0] if stage == "before" else 0
            rows.append((name, table.name, column, stage, n, filled / n * 100 if n else float("nan"),
                         (filled - invalid) / filled * 100 if filled else float("nan"), min(distinct, filled) / filled * 100 if filled else float("nan"),
                         int(n_control.get(column, 0)) if stage == "before" else 0))
    return pd.DataFrame(rows, columns=["source", "table_name", "column_name", "stage", "n_rows", "completeness_pct", "validity_pct", "uniqueness_pct",
                                       "n_control_characters"])
