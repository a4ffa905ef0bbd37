"""The whole cleansing build of the warehouse.

``build_clean_warehouse`` reads every source of the source map, standardises
and validates it (bad rows to the quarantine, never dropped), resolves the
customers of all sources into persons, replaces every ``customer_id`` by the
resolved ``customer_key``, and writes the canonical tables together with
``customer_lineage``, ``quarantine``, and the quality tables (``quality_*``)
into the warehouse in one atomic step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from crm_analytics import paths, privacy, regions, schema, sources, warehouse
from crm_analytics.cleansing import bulk, quality, resolve, survive, validate

CUSTOMER_TABLE = "customers"


class QuarantineThresholdError(RuntimeError):
    """Too large a share of some source's rows went to quarantine; the warehouse was not replaced."""


@dataclass
class CleansingResult:
    """What a cleansing build produced.

    ``row_counts``: ``source``, ``table_name``, ``rows_in``, ``rows_clean``, ``rows_quarantined``,
    ``quarantined_pct``, ``is_balanced``. ``quarantine``: every entry (raw values; personal
    data). ``profile``: completeness / validity / uniqueness before and after.
    ``accuracy``: pairwise precision / recall / F1 against ground truth (empty without it).
    ``timings``: wall-clock seconds per step; ``cpu_timings``: CPU seconds per step (all threads).
    """

    warehouse_path: Path | None
    row_counts: pd.DataFrame
    quarantine: pd.DataFrame
    profile: pd.DataFrame
    lineage: pd.DataFrame
    duplicates: pd.DataFrame
    accuracy: pd.DataFrame
    model_weights: pd.DataFrame
    table_rows: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=dict)

    @property
    def quarantine_by_reason(self) -> pd.DataFrame:
        """Quarantine entries counted by source, table, column, reason and action."""
        return quality.quarantine_by_reason(self.quarantine)


class _Timer:
    """Wall-clock seconds per step (``timings``) and CPU seconds of this process, all threads (``cpu``)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._start, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, step: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.timings[step] = self.timings.get(step, 0.0) + now - self._start
        self.cpu[step] = self.cpu.get(step, 0.0) + cpu - self._cpu
        self._start, self._cpu = now, cpu


# -------------------------------------------------------------------------------- source reading


def is_bulk(spec: Mapping[str, Any]) -> bool:
    """Whether a source is validated inside DuckDB (typed Parquet, not customers)."""
    return spec["format"] == "parquet" and spec["table"] != CUSTOMER_TABLE


def read_and_validate(
    source_map: Mapping[str, Mapping[str, Any]], dataset_dir: Path, *, as_of: pd.Timestamp, default_region: str = "CN"
) -> tuple[dict[str, validate.ValidatedSource], pd.DataFrame]:
    """Read and validate every source that is not bulk; return ``{source: ValidatedSource}`` and the before/after profile."""
    validated, profiles = {}, []
    for name, spec in source_map.items():
        if is_bulk(spec):
            continue
        raw = sources.read_source(name, dict(spec), dataset_dir)
        result = validate.validate_source(name, raw, spec, as_of=as_of, default_region=default_region)
        profiles.append(quality.profile_before_after(raw.reset_index(drop=True), result.reasons, result.clean, source=name, table_name=spec["table"]))
        validated[name] = result
    profile = pd.concat(profiles, ignore_index=True) if profiles else pd.DataFrame()
    return validated, profile


# ------------------------------------------------------------------------------------- customers


def _customer_frame(validated: Mapping[str, validate.ValidatedSource]) -> pd.DataFrame:
    parts = [v.clean for v in validated.values() if v.table == CUSTOMER_TABLE]
    if not parts:
        raise ValueError("the source map has no source for table 'customers': nothing to resolve")
    frame = pd.concat(parts, ignore_index=True)
    for column in ("email", "phone", "name_key", "birth_date", "gender", "city", "province", "full_name"):
        if column not in frame.columns:
            frame[column] = pd.NA
    return _fill_province_from_city(frame)


def _fill_province_from_city(frame: pd.DataFrame) -> pd.DataFrame:
    cities = pd.Series(pd.unique(frame["city"].dropna()))
    by_city = dict(zip(cities, cities.map(regions.province_of)))
    derived = frame["city"].map(by_city).astype("string")
    frame["province"] = frame["province"].astype("string").fillna(derived)
    return frame


def _id_lookup(customers: pd.DataFrame, keys: pd.Series) -> pd.DataFrame:
    """``system`` (the customers' ``source`` value), ``source_customer_id``, ``customer_key``."""
    return pd.DataFrame(
        {"system": customers["source"].astype("string").to_numpy(), "source_customer_id": customers["customer_id"].astype("string").to_numpy(), "customer_key": keys.to_numpy()}
    )


def map_customer_ids(frame: pd.DataFrame, lookup: pd.DataFrame) -> pd.Series:
    """Return the ``customer_key`` of each row's ``customer_id`` (missing when unknown).

    A row with a ``source`` column whose value is a customer system (``web``,
    ``store``) is looked up in that system's ids; other rows in all ids (the
    demo's ids carry a per-source prefix, so they never collide).
    """
    ids = frame["customer_id"].astype("string")
    anywhere = lookup.drop_duplicates("source_customer_id").set_index("source_customer_id")["customer_key"]
    keys = ids.map(anywhere)
    if "source" in frame.columns:
        systems = set(lookup["system"].dropna())
        scoped = frame["source"].isin(systems).to_numpy()
        if scoped.any():
            by_system = lookup.drop_duplicates(["system", "source_customer_id"]).set_index(["system", "source_customer_id"])["customer_key"]
            index = pd.MultiIndex.from_arrays([frame["source"].astype("string")[scoped], ids[scoped]])
            keys[scoped] = by_system.reindex(index).to_numpy()
    return keys.astype("string")


# ------------------------------------------------------------------------------------- the build


def _row_counts(validated: Mapping[str, validate.ValidatedSource | bulk.BulkSource]) -> pd.DataFrame:
    rows = [(name, v.table, v.n_rows_in, v.n_rows_in - v.n_rows_quarantined, v.n_rows_quarantined) for name, v in validated.items()]
    return quality.row_accounting(pd.DataFrame(rows, columns=["source", "table_name", "rows_in", "rows_clean", "rows_quarantined"]))


def _contract_select(relation: str, table: schema.Table, present: list[str]) -> str:
    columns = [f'CAST("{c.name}" AS {c.duckdb_type}) AS "{c.name}"' if c.name in present else f'CAST(NULL AS {c.duckdb_type}) AS "{c.name}"' for c in table.columns]
    return f"SELECT {', '.join(columns)} FROM {relation}"


def _stage_tables(validated: Mapping[str, validate.ValidatedSource | bulk.BulkSource], unified: pd.DataFrame) -> dict[str, Any]:
    """Canonical tables as Arrow tables in contract column order and types (customers as a frame)."""
    import duckdb
    import pyarrow as pa

    parts: dict[str, list[pa.Table]] = {}
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        for v in validated.values():
            if v.table == CUSTOMER_TABLE:
                continue
            table = schema.get_table(v.table)
            if isinstance(v, bulk.BulkSource):
                part, present = v.clean, v.columns
            else:
                present = [c for c in table.column_names if c in v.clean.columns]
                part = v.clean[present]
            con.register("part", part)
            parts.setdefault(v.table, []).append(con.execute(_contract_select("part", table, present)).fetch_arrow_table())
            con.unregister("part")
    tables: dict[str, Any] = {name: pa.concat_tables(items) for name, items in parts.items()}
    tables[CUSTOMER_TABLE] = unified
    return tables


def _link_facts(validated: dict[str, validate.ValidatedSource], lookup: pd.DataFrame) -> dict[str, validate.ValidatedSource]:
    """Replace ``customer_id`` by the resolved key; rows whose customer is unknown go to quarantine."""
    out = {}
    for name, v in validated.items():
        if v.table == CUSTOMER_TABLE or "customer_id" not in v.clean.columns:
            out[name] = v
            continue
        keys = map_customer_ids(v.clean, lookup)
        v = validate.quarantine_clean_rows(v, keys.isna().to_numpy(), column="customer_id", reason=validate.UNKNOWN_CUSTOMER)
        v.clean["customer_id"] = keys.dropna().to_numpy()
        out[name] = v
    return out


def load_ground_truth(dataset: str = paths.DEMO_DATASET) -> pd.DataFrame | None:
    """Return the demo's ``source_records.parquet`` (source, source_record_id, person_id), or None without it."""
    path = paths.ground_truth_dir(dataset) / "source_records.parquet"
    return pd.read_parquet(path) if path.exists() else None


def measure_accuracy(customers: pd.DataFrame, keys: pd.Series, lineage: pd.DataFrame, truth: pd.DataFrame | None) -> pd.DataFrame:
    """Pairwise accuracy of the resolution against ground truth; empty frame when there is none.

    Ground truth may name sources by source map name (``web_signups``) or by system (``web``).
    """
    if truth is None:
        return pd.DataFrame(columns=["source_a", "source_b", "n_true_pairs", "n_predicted_pairs", "n_correct_pairs", "precision", "recall", "f1"])
    by_name = set(truth["source"].astype(str)) & set(lineage["source"].astype(str))
    label = lineage["source"] if by_name else customers["source"].astype("string").reset_index(drop=True)
    predicted = pd.DataFrame({"source": label.to_numpy(), "source_customer_id": lineage["source_customer_id"].to_numpy(), "customer_key": keys.to_numpy()})
    return quality.pairwise_accuracy(predicted.astype("string"), truth)


def _quarantine_share_check(counts: pd.DataFrame, threshold: float) -> str | None:
    over = counts[counts["quarantined_pct"] > threshold * 100.0]
    if over.empty:
        return None
    listed = ", ".join(f"{r.source} {r.quarantined_pct:.1f}%" for r in over.itertuples())
    return f"quarantined share above {threshold:.1%} in: {listed}"


def masked_quarantine(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Return the quarantine with raw values of personal-data columns masked (for reports and ``quarantine.csv``)."""
    out = quarantine.copy()
    maskers = {"email": privacy.mask_email, "phone": privacy.mask_phone, "full_name": privacy.mask_name, "birth_date": privacy.mask_date}
    for column, mask in maskers.items():
        selected = out["column_name"] == column
        if selected.any():
            out.loc[selected, "raw_value"] = mask(out.loc[selected, "raw_value"]).to_numpy()
    comment = out["column_name"] == "comment"
    if comment.any():
        out.loc[comment, "raw_value"] = privacy.redact_text(out.loc[comment, "raw_value"]).to_numpy()
    return out


def persist_outputs(result: CleansingResult, output_dir: str | Path | None) -> None:
    """Write the report tables into the run folder: ``quarantine.csv`` (masked) and the quality tables."""
    if not output_dir:
        return
    from crm_analytics import results

    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    masked_quarantine(result.quarantine).to_csv(folder / "quarantine.csv", index=False)
    for name, frame in _quality_tables(result).items():
        results.save_table(frame, name, output_dir=output_dir)


def _quality_tables(result: CleansingResult) -> dict[str, pd.DataFrame]:
    return {
        "quality_row_counts": result.row_counts,
        "quality_profile": result.profile,
        "quality_quarantine_by_reason": result.quarantine_by_reason,
        "quality_duplicates": result.duplicates,
        "quality_match_accuracy": result.accuracy,
        "quality_match_weights": result.model_weights,
    }


def build_clean_warehouse(
    *,
    sources_file: str | Path | None = None,
    dataset: str = paths.DEMO_DATASET,
    as_of: str | pd.Timestamp,
    quarantine_threshold: float = 0.05,
    match_threshold: float = 0.7,
    warehouse_path: str | Path | None = None,
    output_dir: str | Path | None = None,
    default_region: str = "CN",
    engine: str = "fellegi_sunter",
) -> CleansingResult:
    """Build the warehouse from the raw sources with full cleansing and entity resolution.

    Parameters
    ----------
    sources_file : path, optional
        Source map (default ``parameters/sources.yaml``).
    dataset : str
        Folder under ``data/raw/`` holding the exports (and ``ground_truth/`` for the demo).
    as_of : str or Timestamp
        The build's "today" in the business time zone: later dates are quarantined.
    quarantine_threshold : float
        Largest accepted share (0-1) of quarantined rows in any source. Above it the
        build raises ``QuarantineThresholdError`` after writing the quarantine and the
        reports to ``output_dir`` (and ``<warehouse>.quarantine.parquet``); the existing
        warehouse is left untouched.
    match_threshold : float
        Match probability at or above which two customer records are the same person.
    warehouse_path : path, optional
        The DuckDB file (default ``data/warehouse/crm.duckdb``).
    output_dir : path, optional
        Run folder for ``quarantine.csv`` (personal values masked) and the quality tables.
    default_region : str
        Region for phone numbers written without a country code.
    engine : {"fellegi_sunter", "splink"}
        Probabilistic matching engine.

    Returns
    -------
    CleansingResult
    """
    timer = _Timer()
    as_of = pd.Timestamp(as_of)
    source_map = sources.load_source_map(sources_file)
    dataset_dir = paths.raw_dir(dataset)
    validated, profile = read_and_validate(source_map, dataset_dir, as_of=as_of, default_region=default_region)
    timer.lap("read_standardise_validate")

    customers = _customer_frame(validated)
    resolution = resolve.resolve_entities(customers, match_threshold=match_threshold, engine=engine)
    unified = survive.survive(customers, resolution.keys)
    timer.lap("resolve_entities")

    target = paths.resolve(warehouse_path, paths.warehouse_path())
    target.parent.mkdir(parents=True, exist_ok=True)
    lookup = _id_lookup(customers, resolution.keys)
    linked: dict[str, validate.ValidatedSource | bulk.BulkSource] = dict(_link_facts(validated, lookup))
    for name, spec in source_map.items():
        if is_bulk(spec):
            linked[name] = bulk.validate_parquet(name, spec, dataset_dir, as_of=as_of, id_lookup=lookup)
    linked = {name: linked[name] for name in source_map}  # source-map order
    timer.lap("bulk_validate_and_link")

    result = _result(linked, profile, customers, resolution, dataset)
    timer.lap("report")
    problem = _quarantine_share_check(result.row_counts, quarantine_threshold)
    if problem:
        result.timings = timer.timings
        persist_outputs(result, output_dir)
        result.quarantine.to_parquet(target.with_name(target.name + ".quarantine.parquet"), index=False)
        raise QuarantineThresholdError(f"{problem}; the warehouse at {target} was not replaced (quarantine written beside it)")

    tables = _stage_tables(linked, unified)
    tables |= {"customer_lineage": resolution.lineage, "quarantine": result.quarantine} | _quality_tables(result)
    timer.lap("stage_tables")
    result.warehouse_path = warehouse.write_tables(tables, path=target)
    result.table_rows = {name: (t.num_rows if hasattr(t, "num_rows") else len(t)) for name, t in tables.items()}
    timer.lap("write_warehouse")
    persist_outputs(result, output_dir)
    timer.lap("persist_reports")
    result.timings = timer.timings
    result.cpu_timings = timer.cpu
    return result


def _result(
    linked: Mapping[str, validate.ValidatedSource | bulk.BulkSource],
    profile: pd.DataFrame,
    customers: pd.DataFrame,
    resolution: resolve.Resolution,
    dataset: str,
) -> CleansingResult:
    bulk_profiles = [v.profile for v in linked.values() if isinstance(v, bulk.BulkSource)]
    return CleansingResult(
        warehouse_path=None,
        row_counts=_row_counts(linked),
        quarantine=pd.concat([v.quarantine for v in linked.values()], ignore_index=True),
        profile=pd.concat([profile, *bulk_profiles], ignore_index=True),
        lineage=resolution.lineage,
        duplicates=quality.duplicates_summary(resolution.lineage),
        accuracy=measure_accuracy(customers, resolution.keys, resolution.lineage, load_ground_truth(dataset)),
        model_weights=resolution.model.level_weights() if resolution.model is not None else pd.DataFrame(),
    )
