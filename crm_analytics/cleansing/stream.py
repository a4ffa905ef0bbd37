"""Validate a file source chunk by chunk, its clean rows spilled to Parquet: memory bounded by the chunk size.

``stage_source`` reads a source in chunks (``sources.read_source_chunks``: a CSV
``chunk_rows`` rows at a time; Excel and SQL sources whole), validates every chunk
with ``validate``, and writes what the later checks need into a work folder:

``<source>/clean-NNNNN.parquet``
    the chunk's clean rows: the contract columns it provides or derives (``is_refund``), typed, and ``_source_row``;
``<source>/keys-NNNNN.parquet``
    every row's standardised key, its raw text, and whether the chunk already quarantined it;
``<source>/text-NNNNN.parquet``
    every row's raw values as stripped text (the "before" profile).

Only the quarantine entries and per-chunk counts stay in memory. DuckDB then runs,
over those files, what needs all rows at once:

* key uniqueness across chunks: a key already held by an earlier row (clean or not) is
  a ``duplicate_key``, the first occurrence kept, as ``validate`` does for a whole file;
* the profile (``quality.profile_counts``; distinct counts are not additive);
* the customer link: ``customer_id`` becomes the resolved ``customer_key``, and a row
  whose customer is unknown goes to quarantine (the rule of ``pipeline.map_customer_ids``).

The result, a ``bulk.StagedSource`` (one Parquet file of clean rows in the table's
contract, the quarantine and the profile), is the same as validating the whole file
at once (``tests/test_cleansing_stream.py`` checks this).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from crm_analytics import schema, sources
from crm_analytics.cleansing import quality, validate, vocabulary
from crm_analytics.cleansing.bulk import UNKNOWN_ORDER_WHERE, StagedSource, check_not_empty, links_orders, register_known_orders
from crm_analytics.cleansing.duck import arrow, connect, contract_select, copy_to_parquet, quote

CHUNK_ROWS = 250_000


def iter_csv_chunks(name: str, spec: Mapping[str, Any], dataset_dir: str | Path, *, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield a CSV source in chunks with canonical column names and ``_source``, ``_source_file``, ``_source_row``.

    Raises ``sources.SourceError`` for an empty file or a missing required column, naming the file.
    """
    yield from sources.read_source_chunks(name, dict(spec), dataset_dir, chunk_rows=chunk_rows)


def validate_csv_in_chunks(
    name: str, spec: Mapping[str, Any], dataset_dir: str | Path, *, as_of: pd.Timestamp, chunk_rows: int = CHUNK_ROWS
) -> Iterator[validate.ValidatedSource]:
    """Yield one ``ValidatedSource`` per chunk of a large CSV source (keys are unique within each chunk only)."""
    for frame in iter_csv_chunks(name, spec, dataset_dir, chunk_rows=chunk_rows):
        yield validate.validate_source(name, frame, spec, as_of=as_of)


# ------------------------------------------------------------------------------------- chunks


@dataclass
class _Spill:
    """What stays in memory while the chunks of one source are validated and written."""

    folder: Path
    table: schema.Table
    quarantine: list[pd.DataFrame] = field(default_factory=list)
    counts: list[pd.DataFrame] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    profiled: list[str] = field(default_factory=list)
    value_maps: list[pd.DataFrame] = field(default_factory=list)
    source_file: str = ""
    n_rows_in: int = 0
    n_chunks: int = 0

    def files(self, kind: str) -> str:
        """SQL list of this source's Parquet files of one ``kind`` (``clean``, ``keys``, ``text``)."""
        return "[" + ", ".join(quote(self.folder / f"{kind}-{i:05d}.parquet") for i in range(self.n_chunks)) + "]"


def _key_columns(table: schema.Table, present: list[str]) -> list[str]:
    return [c.name for c in table.columns if c.key and c.name in present]


def _spill_chunk(con: duckdb.DuckDBPyConnection, spill: _Spill, raw: pd.DataFrame, result: validate.ValidatedSource, typed: pd.DataFrame) -> None:
    """Write one validated chunk's clean rows, keys and stripped raw text; keep its quarantine and counts."""
    present = [c for c in spill.table.column_names if c in result.reasons.columns]  # read from the source
    spill.profiled, spill.columns = present, [c for c in spill.table.column_names if c in result.clean.columns]  # + derived
    if len(raw) and not spill.source_file:
        spill.source_file = str(raw["_source_file"].iloc[0])
    index = spill.n_chunks
    chunk_path = lambda kind: spill.folder / f"{kind}-{index:05d}.parquet"  # noqa: E731
    typed_columns = ", ".join(f'CAST("{c}" AS {spill.table.column(c).duckdb_type}) AS "{c}"' for c in spill.columns)
    con.register("chunk", arrow(result.clean[[*spill.columns, "_source_row", "_source_file"]]))
    copy_to_parquet(con, f"SELECT {typed_columns}, CAST(_source_row AS BIGINT) AS _source_row, CAST(_source_file AS VARCHAR) AS _source_file "
                         "FROM chunk", chunk_path("clean"))
    con.unregister("chunk")
    keys = pd.DataFrame({"_source_row": raw["_source_row"].to_numpy("int64")})
    quarantined = result.quarantine[["column_name", "source_row"]]
    key_columns = ["_source_row"]
    for key in _key_columns(spill.table, present):
        keys[f"key__{key}"] = typed[key].reset_index(drop=True)
        keys[f"raw__{key}"] = raw[key].astype("string").reset_index(drop=True)
        keys[f"entry__{key}"] = keys["_source_row"].isin(quarantined.loc[quarantined["column_name"] == key, "source_row"].astype("int64"))
        key_columns += [f'CAST("key__{key}" AS {spill.table.column(key).duckdb_type}) AS "key__{key}"',
                        f'CAST("raw__{key}" AS VARCHAR) AS "raw__{key}"', f'"entry__{key}"']
    text = pd.DataFrame({c: quality.present_text(raw[c]).reset_index(drop=True) for c in present})
    text_columns = [f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in present] or ["NULL AS _none"]
    for kind, frame, columns in (("keys", keys, key_columns), ("text", text, text_columns)):
        con.register("chunk", arrow(frame))
        copy_to_parquet(con, f"SELECT {', '.join(columns)} FROM chunk", chunk_path(kind))
        con.unregister("chunk")
    spill.quarantine.append(result.quarantine)
    spill.value_maps.append(result.value_maps)
    spill.counts.append(quality.profile_counts(raw, result.reasons, pd.DataFrame(), distinct=False, table_name=spill.table.name))
    spill.n_rows_in += len(raw)
    spill.n_chunks += 1


# ------------------------------------------------------------------------------ across chunks


def _cross_chunk_duplicates(con: duckdb.DuckDBPyConnection, spill: _Spill, name: str) -> pd.DataFrame:
    """Quarantine entries for rows whose key an earlier row of another chunk holds (rows without an entry on the key yet)."""
    parts = []
    for key in _key_columns(spill.table, spill.profiled):
        found = con.execute(
            f"SELECT _source_row, raw FROM (SELECT _source_row, \"raw__{key}\" AS raw, \"entry__{key}\" AS has_entry, "
            f"row_number() OVER (PARTITION BY \"key__{key}\" ORDER BY _source_row) AS n FROM read_parquet({spill.files('keys')}) "
            f"WHERE \"key__{key}\" IS NOT NULL) WHERE n > 1 AND NOT has_entry ORDER BY _source_row"
        ).df()
        parts.append(_entries(name, spill, found["_source_row"], key, found["raw"], validate.DUPLICATE_KEY))
    return pd.concat(parts, ignore_index=True) if parts else validate.empty_quarantine()


def _entries(name: str, spill: _Spill, rows: pd.Series, column: str, raw_values: pd.Series, reason: str,
             files: pd.Series | None = None) -> pd.DataFrame:
    """Row-action quarantine entries for the given source rows (``validate.QUARANTINE_COLUMNS``); ``files``: each
    row's file when they differ (a source derived from several files or sheets), else the source's file."""
    return pd.DataFrame(
        {
            "source": name,
            "source_file": spill.source_file if files is None else files.astype("string").to_numpy(),
            "source_row": pd.array(rows.to_numpy("int64"), dtype="Int64"),
            "table_name": spill.table.name,
            "column_name": column,
            "raw_value": validate.raw_text(raw_values.astype("string")).to_numpy(),
            "reason": reason,
            "action": "row",
        }
    ).astype({c: "string" for c in validate.QUARANTINE_COLUMNS if c != "source_row"})


def _profile(con: duckdb.DuckDBPyConnection, spill: _Spill, clean_relation: str) -> pd.DataFrame:
    """``quality.profile_counts`` of the whole source: summed chunk counts, distinct values counted over all chunks."""
    before = pd.concat(spill.counts).groupby("column_name", sort=False)[["n_rows", "n_present", "n_valid", "n_control_characters"]].sum()
    columns = spill.profiled
    if not columns:
        return pd.DataFrame(columns=quality.PROFILE_COUNTS)
    # every column's counts in one scan of each relation
    n_text = con.execute("SELECT " + ", ".join(f'count(DISTINCT "{c}")' for c in columns) + f" FROM read_parquet({spill.files('text')})").fetchone()
    after = con.execute("SELECT count(*), " + ", ".join(f'count("{c}"), count(DISTINCT "{c}")' for c in columns) + f" FROM {clean_relation}").fetchone()
    rows = []
    for i, column in enumerate(columns):
        n_rows, n_present, n_valid, n_control = before.loc[column].tolist()
        rows.append((column, "before", n_rows, n_present, n_valid, int(n_text[i]), n_control))
        n_present, n_distinct = after[1 + 2 * i], after[2 + 2 * i]
        rows.append((column, "after", int(after[0]), int(n_present), _after_valid(con, clean_relation, column, n_present, table=spill.table),
                     int(n_distinct), 0))
    return pd.DataFrame(rows, columns=quality.PROFILE_COUNTS)


def _after_valid(con: duckdb.DuckDBPyConnection, relation: str, column: str, n_present: int, *, table: schema.Table) -> int:
    """Present clean values that count as valid (the rule of ``quality.profile_counts``)."""
    accepted = table.column(column).values
    if accepted is not None:
        listed = ", ".join(quote(v) for v in accepted)
        return int(con.execute(f'SELECT count(*) FROM {relation} WHERE CAST("{column}" AS VARCHAR) IN ({listed})').fetchone()[0])
    if column not in ("province", "city"):
        return int(n_present)
    counts = con.execute(f'SELECT CAST("{column}" AS VARCHAR) AS value, count(*) AS n FROM {relation} WHERE "{column}" IS NOT NULL GROUP BY 1').df()
    return int(counts.loc[quality.known_regions(counts["value"], column).to_numpy(), "n"].sum())


def _link_sql(present: list[str]) -> str:
    """SQL adding ``_customer_key`` to ``deduplicated``: by (system, id) for rows of a customer system, else by id alone."""
    anywhere = "LEFT JOIN lookup_anywhere a ON a.source_customer_id = d.customer_id"
    if "source" not in present:
        return f"SELECT d.*, a.customer_key AS _customer_key FROM deduplicated d {anywhere}"
    return (
        "SELECT d.*, CASE WHEN d.source IN (SELECT system FROM lookup_systems) THEN s.customer_key ELSE a.customer_key END AS _customer_key "
        f"FROM deduplicated d {anywhere} LEFT JOIN lookup_by_system s ON s.system = d.source AND s.source_customer_id = d.customer_id"
    )


def _register_lookup(con: duckdb.DuckDBPyConnection, id_lookup: pd.DataFrame) -> None:
    """Tables ``lookup_anywhere``, ``lookup_by_system`` (first occurrence of each id wins) and ``lookup_systems``."""
    frame = id_lookup[["system", "source_customer_id", "customer_key"]].astype("string").assign(_position=range(len(id_lookup)))
    con.register("lookup_frame", arrow(frame))
    con.execute("CREATE TEMP TABLE lookup_anywhere AS SELECT DISTINCT ON (source_customer_id) source_customer_id, customer_key "
                "FROM lookup_frame WHERE source_customer_id IS NOT NULL ORDER BY source_customer_id, _position")
    con.execute("CREATE TEMP TABLE lookup_by_system AS SELECT DISTINCT ON (system, source_customer_id) system, source_customer_id, customer_key "
                "FROM lookup_frame WHERE system IS NOT NULL AND source_customer_id IS NOT NULL ORDER BY system, source_customer_id, _position")
    con.execute("CREATE TEMP TABLE lookup_systems AS SELECT DISTINCT system FROM lookup_frame WHERE system IS NOT NULL")
    con.unregister("lookup_frame")


@dataclass
class SpilledSource:
    """A file source validated chunk by chunk and spilled to Parquet, not yet linked to customers or orders
    (``spill_source``; ``link_spilled`` finishes it). Small: the chunk files stay on disk; it holds the quarantine
    entries so far (chunk entries, then duplicates across chunks), the profile and the applied value maps."""

    name: str
    spill: _Spill
    duplicates: pd.DataFrame
    profile: pd.DataFrame


def spill_source(
    name: str,
    spec: Mapping[str, Any],
    dataset_dir: str | Path,
    *,
    as_of: pd.Timestamp,
    work_dir: str | Path,
    default_region: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    business_time_zone: str | None = None,
    **options: Any,
) -> SpilledSource:
    """The first half of ``stage_source``, which needs neither the resolved customers nor the orders: validate the
    chunks, spill them to ``<work_dir>/<name>/``, find the duplicate keys across chunks and profile the source.

    Parameters and errors as ``stage_source`` (without ``id_lookup`` and ``known_orders``).
    Returns a ``SpilledSource`` for ``link_spilled`` (in this process or another: it pickles).
    """
    table = schema.get_table(spec["table"])
    spill = _Spill(folder=Path(work_dir) / name, table=table)
    spill.folder.mkdir(parents=True, exist_ok=True)
    con = connect(work_dir)
    try:
        for raw in sources.read_source_chunks(name, dict(spec), dataset_dir, chunk_rows=chunk_rows):
            result, typed = validate.validate_source_typed(
                name, raw, spec, as_of=as_of, default_region=default_region, business_time_zone=business_time_zone, **options
            )
            _spill_chunk(con, spill, raw, result, typed)
            del raw, result, typed
        check_not_empty(name, spec, dataset_dir, spill.n_rows_in)
        duplicates = _cross_chunk_duplicates(con, spill, name)
        _deduplicated_view(con, spill, duplicates)
        profile = quality.profile_from_counts(_profile(con, spill, "deduplicated"), source=name, table_name=table.name)
    finally:
        con.close()
    return SpilledSource(name, spill, duplicates, profile)


def _deduplicated_view(con: duckdb.DuckDBPyConnection, spill: _Spill, duplicates: pd.DataFrame) -> None:
    """View ``deduplicated``: the spilled clean rows without those whose key an earlier chunk holds."""
    con.register("duplicate_rows", duplicates[["source_row"]].astype("int64"))
    # a view, not a table: it is read once or twice, and its rows need not be copied into DuckDB first
    con.execute(f"CREATE TEMP VIEW deduplicated AS SELECT * FROM read_parquet({spill.files('clean')}) "
                "WHERE _source_row NOT IN (SELECT source_row FROM duplicate_rows)")


def link_spilled(
    spilled: SpilledSource,
    *,
    work_dir: str | Path,
    id_lookup: pd.DataFrame | None = None,
    known_orders: list[Path] | None = None,
) -> StagedSource:
    """The second half of ``stage_source``: link a ``SpilledSource`` to the customers (``id_lookup``) and the orders
    (``known_orders``) and write its clean rows to ``<work_dir>/<name>.parquet``.

    Parameters and result as ``stage_source``; ``work_dir`` is the folder ``spill_source`` wrote to.
    """
    name, spill = spilled.name, spilled.spill
    table = spill.table
    clean_path = Path(work_dir) / f"{name}.parquet"
    con = connect(work_dir)
    try:
        _deduplicated_view(con, spill, spilled.duplicates)
        quarantine = [*spill.quarantine, spilled.duplicates]
        present = spill.columns
        relation, kept = "deduplicated", []
        if id_lookup is not None and "customer_id" in present:
            _register_lookup(con, id_lookup)
            con.execute(f"CREATE TEMP TABLE linked AS {_link_sql(present)}")
            # a row without a customer (an anonymous order) stays; a customer nobody knows is quarantined
            unknown = con.execute("SELECT _source_row, _source_file, CAST(customer_id AS VARCHAR) AS customer_id FROM linked "
                                  "WHERE _customer_key IS NULL AND customer_id IS NOT NULL ORDER BY _source_row").df()
            quarantine.append(_entries(name, spill, unknown["_source_row"], "customer_id", unknown["customer_id"], validate.UNKNOWN_CUSTOMER,
                                       files=unknown["_source_file"]))
            con.execute("CREATE TEMP VIEW known AS SELECT * REPLACE (_customer_key AS customer_id) FROM linked "
                        "WHERE _customer_key IS NOT NULL OR customer_id IS NULL")
            relation = "known"
        if links_orders(table.name, present, known_orders):
            register_known_orders(con, known_orders)
            orphans = con.execute(f"SELECT _source_row, _source_file, CAST(order_id AS VARCHAR) AS order_id FROM {relation} "
                                  f"WHERE {UNKNOWN_ORDER_WHERE} ORDER BY _source_row").df()
            quarantine.append(_entries(name, spill, orphans["_source_row"], "order_id", orphans["order_id"], validate.UNKNOWN_ORDER,
                                       files=orphans["_source_file"]))
            kept.append(f"NOT ({UNKNOWN_ORDER_WHERE})")
        where = f" WHERE {' AND '.join(kept)}" if kept else ""
        n_clean = copy_to_parquet(con, contract_select(f"(SELECT * FROM {relation}{where} ORDER BY _source_row)", table, present), clean_path)
    finally:
        con.close()
    quarantine_frame = pd.concat([q for q in quarantine if not q.empty] or [validate.empty_quarantine()], ignore_index=True)
    applied = vocabulary.label_mapping_counts(pd.concat(spill.value_maps, ignore_index=True) if spill.value_maps else None,
                                              source=name, table_name=table.name)
    return StagedSource(name, table.name, clean_path, quarantine_frame, spilled.profile, spill.n_rows_in, n_clean, present, value_maps=applied)


def stage_source(
    name: str,
    spec: Mapping[str, Any],
    dataset_dir: str | Path,
    *,
    as_of: pd.Timestamp,
    work_dir: str | Path,
    id_lookup: pd.DataFrame | None = None,
    default_region: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    business_time_zone: str | None = None,
    known_orders: list[Path] | None = None,
    **options: Any,
) -> StagedSource:
    """Validate one file source in chunks and stage its clean rows as Parquet (see the module notes).

    Parameters
    ----------
    name, spec : the source and its entry of the source map (CSV, Excel or SQL; not ``customers``).
    dataset_dir : folder of the exports.
    as_of : Timestamp
        Dates after it are quarantined as ``future_date``.
    work_dir : path
        Existing folder; the source's chunk files go to ``<work_dir>/<name>/``, its clean
        rows to ``<work_dir>/<name>.parquet``.
    id_lookup : DataFrame, optional
        ``system``, ``source_customer_id``, ``customer_key``: when given and the source has
        ``customer_id``, it is replaced by the key and rows of unknown customers are quarantined
        (rows whose ``customer_id`` is missing, which only a table where it is optional lets through, stay).
    default_region : str, optional
        Region for phone numbers without a country code (``Dataset.country``); ``None``: as
        ``validate.validate_source`` decides (the dataset's country).
    chunk_rows : int
        Rows per chunk of a CSV source; memory grows with it, not with the file.
    business_time_zone : str, optional
        The dataset's business time zone, where timestamps are stored (default: the default dataset's).
    known_orders : list of paths, optional
        The clean Parquet files of the ``orders`` sources: an order line whose order is in none is
        quarantined as ``unknown_order`` (as an unknown customer is).
    **options
        Further validation options (``currency``, ``dataset``), passed to ``validate.validate_source_typed``.

    Returns
    -------
    StagedSource
        The clean rows in ``clean_path`` (the table's contract columns, in source row order),
        the quarantine (chunk entries, then duplicates across chunks, then unknown customers, then unknown orders)
        and the before/after profile.
    """
    spilled = spill_source(name, spec, dataset_dir, as_of=as_of, work_dir=work_dir, default_region=default_region, chunk_rows=chunk_rows,
                           business_time_zone=business_time_zone, **options)
    return link_spilled(spilled, work_dir=work_dir, id_lookup=id_lookup, known_orders=known_orders)
