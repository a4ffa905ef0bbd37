"""The whole cleansing build of the warehouse.

``build_clean_warehouse`` builds one dataset (``parameters/datasets/<name>.yaml``):
its files are found in the dataset's ``data_dir``, its timestamps stored in its
business time zone, its amounts in its currency, its phones read in its country.
It reads every source of the dataset's source map (files, or queries over its
inputs, see ``crm_analytics.sources``), standardises
and validates it (bad rows to the quarantine, never dropped), resolves the
customers of all sources into persons, replaces every ``customer_id`` by the
resolved ``customer_key``, and writes the canonical tables together with
``customer_lineage``, ``quarantine``, the quality tables (``quality_*``) and
``dataset_info`` (the dataset's name, zone, currency, country, locale and when it
was built) into the warehouse in one atomic step.

Memory: the customer sources are read whole (entity resolution compares them
with each other); every other source is validated chunk by chunk (``stream``)
or inside DuckDB (``bulk``), its clean rows staged as Parquet in a work folder
beside the warehouse (``<warehouse>.staging-<pid>``, removed afterwards) and
copied into the warehouse by DuckDB. So the fact tables never sit in pandas,
and memory grows with the customers, not with orders or events.

With worker processes (``workers`` > 1), the fact sources validated chunk by chunk
start right behind the customer sources: their chunks are validated and spilled
while the customers are validated and resolved (``spill_fact_sources``), and are
only linked to the resolved customers afterwards (``stage_facts(spilled=...)``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from crm_analytics import datasets, paths, privacy, regions, schema, sources, warehouse
from crm_analytics.cleansing import bulk, duck, quality, resolve, stream, survive, validate, vocabulary

CUSTOMER_TABLE = "customers"


class QuarantineThresholdError(RuntimeError):
    """Too large a share of some source's rows went to quarantine; the warehouse was not replaced."""


class UnreadableColumnError(sources.SourceError):
    """A required column of a source arrived entirely empty or without one readable value (a mapping or format mistake)."""


@dataclass
class CleansingResult:
    """What a cleansing build produced.

    ``row_counts``: ``source``, ``table_name``, ``rows_in``, ``rows_clean``, ``rows_quarantined``,
    ``quarantined_pct``, ``is_balanced``. ``quarantine``: every entry (raw values; personal
    data). ``profile``: completeness / validity / uniqueness before and after.
    ``accuracy``: pairwise precision / recall / F1 against ground truth (empty without it).
    ``value_maps``: every entry of the dataset's ``value_maps`` applied, per source, with its row count
    (``source``, ``table_name``, ``column_name``, ``source_value``, ``canonical_value``, ``n_rows``).
    ``column_notes``: optional columns a source maps that arrived entirely empty or unreadable
    (``quality.column_notes``; a required one stops the build), and sheets of an Excel file that no source reads, with
    their rows (``quality.unread_sheet_notes``, problem ``unread_sheet``); the cleansing report shows each as a warning.
    ``timings``: wall-clock seconds per step; ``cpu_timings``: CPU seconds per step (all threads);
    ``peak_rss_mb``: the largest resident set of the process during each step (MiB).
    ``candidate_pairs``: record pairs the entity resolution compared (blocked and exact-key pairs).
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
    value_maps: pd.DataFrame = field(default_factory=vocabulary.empty_mapping_counts)
    column_notes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=quality.COLUMN_NOTE_COLUMNS))
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    candidate_pairs: int = 0

    @property
    def quarantine_by_reason(self) -> pd.DataFrame:
        """Quarantine entries counted by source, table, column, reason and action."""
        return quality.quarantine_by_reason(self.quarantine)


class _Timer:
    """Per step: wall-clock seconds (``timings``), CPU seconds of this process, all threads (``cpu``), and the
    largest resident set in MiB (``peak_rss_mb``).

    The resident set is sampled by a background thread every ``sample_seconds``; a step during which the
    process reached a new all-time peak gets that exact peak (``getrusage``), so short spikes are not missed.
    Use as a context manager (the sampler stops on exit).
    """

    def __init__(self, *, sample_seconds: float = 0.05) -> None:
        import psutil

        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}
        self._process = psutil.Process()
        self._start, self._cpu = time.perf_counter(), time.process_time()
        self._sampled = self._rss()
        self._max_rss = _max_rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(sample_seconds,), daemon=True)
        self._thread.start()

    def __enter__(self) -> "_Timer":
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def _sample(self, every: float) -> None:
        while not self._stop.wait(every):
            self._sampled = max(self._sampled, self._rss())

    def lap(self, step: str) -> None:
        warehouse.check_cancelled()  # a SIGINT some library swallowed still ends the build here
        now, cpu, rss, max_rss = time.perf_counter(), time.process_time(), self._rss(), _max_rss_bytes()
        self.timings[step] = self.timings.get(step, 0.0) + now - self._start
        self.cpu[step] = self.cpu.get(step, 0.0) + cpu - self._cpu
        peak = max_rss if max_rss > self._max_rss else max(self._sampled, rss)
        self.peak_rss_mb[step] = max(self.peak_rss_mb.get(step, 0.0), round(peak / 2**20, 1))
        self._start, self._cpu, self._sampled, self._max_rss = now, cpu, rss, max_rss


def _max_rss_bytes() -> int:
    """The process's largest resident set so far, in bytes.

    Reads ``VmHWM`` from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` also counts the pages of the
    parent at the fork, so a build started from a large process would report the parent's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -------------------------------------------------------------------------------- source reading


def is_bulk(spec: Mapping[str, Any]) -> bool:
    """Whether a source is validated inside DuckDB (typed Parquet, not customers)."""
    return spec["format"] == "parquet" and spec["table"] != CUSTOMER_TABLE


def validate_customers(
    source_map: Mapping[str, Mapping[str, Any]],
    dataset_dir: Path,
    *,
    as_of: pd.Timestamp,
    default_region: str | None = None,
    pool: Executor | None = None,
    **options: Any,
) -> tuple[dict[str, validate.ValidatedSource], dict[str, pd.DataFrame]]:
    """Read and validate every source of table ``customers`` (whole, in pandas; in ``pool`` when given).

    ``options`` are the dataset's validation options (``validation_options``).
    Returns ``{source: ValidatedSource}`` (without the reason codes) and ``{source: before/after profile}``.
    """
    names = [name for name, spec in source_map.items() if spec["table"] == CUSTOMER_TABLE]
    outcomes = _map_sources(pool, _validate_customer_source, names, source_map, dataset_dir, as_of=as_of, default_region=default_region, **options)
    return {name: outcomes[name][0] for name in names}, {name: outcomes[name][1] for name in names}


def _submit_customers(pool: Executor | None, source_map: Mapping[str, Mapping[str, Any]], dataset_dir: Path, **options: Any):
    """Start ``validate_customers`` in ``pool`` and return a function waiting for its result (without a pool, or with one
    customer source, the validation runs when that function is called)."""
    names = [name for name, spec in source_map.items() if spec["table"] == CUSTOMER_TABLE]
    if pool is None or len(names) < 2:
        return lambda: validate_customers(source_map, dataset_dir, pool=pool, **options)
    futures = _submit_sources(pool, _validate_customer_source, names, source_map, dataset_dir, **options)

    def wait() -> tuple[dict[str, validate.ValidatedSource], dict[str, pd.DataFrame]]:
        outcomes = {name: futures[name].result() for name in names}
        return {name: outcomes[name][0] for name in names}, {name: outcomes[name][1] for name in names}

    return wait


def _validate_customer_source(
    name: str, spec: Mapping[str, Any], dataset_dir: Path, *, as_of: pd.Timestamp, default_region: str | None, **options: Any
) -> tuple[validate.ValidatedSource, pd.DataFrame]:
    """One customer source: the validated rows (without reason codes) and its before/after profile."""
    raw = sources.read_source(name, dict(spec), dataset_dir)
    result = validate.validate_source(name, raw, spec, as_of=as_of, default_region=default_region, **options)
    profile = quality.profile_before_after(raw.reset_index(drop=True), result.reasons, result.clean, source=name, table_name=spec["table"])
    return replace(result, reasons=pd.DataFrame()), profile


def _map_sources(pool: Executor | None, function, names: list[str], source_map: Mapping[str, Mapping[str, Any]],
                 dataset_dir: Path, **options: Any) -> dict[str, Any]:
    """``{name: function(name, spec, dataset_dir, **options)}``, in ``pool`` largest file first, else one by one.

    An error in a worker is raised here as it was raised there (the first in ``names`` order).
    """
    if pool is None or len(names) < 2:
        return {name: function(name, source_map[name], dataset_dir, **options) for name in names}
    futures = _submit_sources(pool, function, names, source_map, dataset_dir, **options)
    return {name: futures[name].result() for name in names}


def _submit_sources(pool: Executor, function, names: list[str], source_map: Mapping[str, Mapping[str, Any]],
                    dataset_dir: Path, **options: Any) -> dict[str, Future]:
    """``{name: future of function(name, spec, dataset_dir, **options)}``, submitted to ``pool`` largest file first
    (the pool starts them in that order, so the longest work does not come last)."""
    by_size = sorted(names, key=lambda name: -_source_bytes(source_map[name], dataset_dir))
    return {name: pool.submit(function, name, dict(source_map[name]), dataset_dir, **options) for name in by_size}


def _source_bytes(spec: Mapping[str, Any], dataset_dir: Path) -> int:
    """Size of a file source on disk (0 for a database table or a missing file): the work it will take."""
    if "path" not in spec:
        return 0
    path = sources.source_path(dict(spec), dataset_dir)
    return path.stat().st_size if path.is_file() else 0


@contextlib.contextmanager
def source_pool(workers: int) -> Iterator[Executor | None]:
    """Worker processes validating sources side by side, or None for ``workers`` <= 1.

    They come from a fork server (a clean process, not a fork of this possibly threaded one,
    such as a notebook kernel) with the cleansing modules loaded once.
    """
    if workers <= 1:
        yield None
        return
    import psutil

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    build = psutil.Process()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_end_with_build,
                             initargs=(build.pid, build.create_time())) as pool:
        try:
            yield pool
        except BaseException:
            pool.shutdown(cancel_futures=True)  # an error or a cancel: the sources still queued need not run
            raise


def _end_with_build(pid: int, create_time: float, *, every_seconds: float = 0.25) -> None:
    """Pool worker initialiser: end this worker once the build's process ``pid`` (started at ``create_time``) is gone.

    A build killed outright (SIGKILL, out of memory) cannot shut its pool down, and idle workers would wait for
    work forever; a daemon thread checks every ``every_seconds``.
    """
    import psutil

    def alive() -> bool:  # a killed build not yet reaped by its parent is a zombie: gone too
        try:
            build = psutil.Process(pid)
            return build.create_time() == create_time and build.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def watch() -> None:
        while alive():
            time.sleep(every_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-build", daemon=True).start()


def stage_facts(
    source_map: Mapping[str, Mapping[str, Any]],
    dataset_dir: Path,
    *,
    as_of: pd.Timestamp,
    id_lookup: pd.DataFrame,
    work_dir: Path,
    default_region: str | None = None,
    chunk_rows: int = stream.CHUNK_ROWS,
    pool: Executor | None = None,
    spilled: Mapping[str, Future | stream.SpilledSource] | None = None,
    **options: Any,
) -> dict[str, bulk.StagedSource]:
    """Validate every source that is not ``customers``, link it to the customers, and stage its clean rows as Parquet.

    Typed Parquet sources are validated inside DuckDB (``bulk``); CSV sources chunk by chunk,
    Excel and SQL sources whole (``stream``). Memory stays bounded whatever the files' size
    (with a ``pool``, per worker: the workers read the id lookup from a Parquet file in ``work_dir``).
    ``spilled``: sources already validated and spilled (``spill_fact_sources``, or its futures), which are only linked.
    """
    names = [name for name, spec in source_map.items() if spec["table"] != CUSTOMER_TABLE]
    lookup: pd.DataFrame | Path = id_lookup
    if pool is not None and len(names) > 1:
        lookup = Path(work_dir) / "id_lookup.parquet"
        id_lookup.to_parquet(lookup, index=False)
    stage_options = dict(as_of=as_of, id_lookup=lookup, work_dir=work_dir, default_region=default_region, chunk_rows=chunk_rows, **options)
    # an order line is checked against the orders (``unknown_order``), as a row against its customer: the sources of
    # order lines wait for the orders; every other source is staged with the orders (side by side, in a pool)
    lines = [name for name in names if source_map[name]["table"] == "order_items"]
    orders = [name for name in names if source_map[name]["table"] == "orders"]
    first = orders + [name for name in names if name not in lines and name not in orders]  # an order's error comes first
    if pool is None or len(names) < 2:
        stage_options["spilled"] = _spilled_results(spilled, names)
        staged = {name: _stage_fact_source(name, source_map[name], dataset_dir, **stage_options) for name in first}
        known_orders = [staged[name].clean_path for name in orders] or None
        staged |= {name: _stage_fact_source(name, source_map[name], dataset_dir, known_orders=known_orders, **stage_options) for name in lines}
        return {name: staged[name] for name in names}
    # the sources still to validate first (the longest work), then those only to link, each once its spill is done
    unspilled = [name for name in first if name not in (spilled or {})]
    futures = _submit_sources(pool, _stage_fact_source, unspilled, source_map, dataset_dir, **stage_options)
    for name in [name for name in first if name not in unspilled]:
        futures[name] = _submit_link(pool, name, source_map, dataset_dir, spilled, **stage_options)
    known_orders = [futures[name].result().clean_path for name in orders] or None
    for name in sorted(lines, key=lambda name: -_source_bytes(source_map[name], dataset_dir)):
        futures[name] = _submit_link(pool, name, source_map, dataset_dir, spilled, known_orders=known_orders, **stage_options)
    return {name: futures[name].result() for name in names}


def _submit_link(pool: Executor, name: str, source_map: Mapping[str, Mapping[str, Any]], dataset_dir: Path,
                 spilled: Mapping[str, Future | stream.SpilledSource] | None, **options: Any) -> Future:
    """The future of ``_stage_fact_source`` for one source, in ``pool``: a spilled source once its spill is done (a spill
    that failed is returned as it is, its error raised where the build collects the sources, in their order)."""
    done = (spilled or {}).get(name)
    if isinstance(done, Future) and done.exception() is not None:
        return done
    return pool.submit(_stage_fact_source, name, dict(source_map[name]), dataset_dir, spilled=_spilled_results(spilled, [name]), **options)


def _spilled_results(spilled: Mapping[str, Future | stream.SpilledSource] | None, names: list[str]) -> dict[str, stream.SpilledSource]:
    """``{name: SpilledSource}`` of the ``names`` in ``spilled``, waiting for those still being spilled (a worker's error is
    raised here)."""
    spilled = spilled or {}
    return {name: spilled[name].result() if isinstance(spilled[name], Future) else spilled[name] for name in names if name in spilled}


def spill_fact_sources(
    source_map: Mapping[str, Mapping[str, Any]],
    dataset_dir: Path,
    pool: Executor,
    *,
    as_of: pd.Timestamp,
    work_dir: Path,
    default_region: str | None = None,
    chunk_rows: int = stream.CHUNK_ROWS,
    **options: Any,
) -> dict[str, Future]:
    """Start validating, in ``pool``, the fact sources validated chunk by chunk (``stream``: not customers, not typed
    Parquet) as far as they can go before the customers are resolved (``stream.spill_source``), largest file first.

    Submitted after the customer sources, they keep the workers busy while the customers are validated and resolved;
    ``stage_facts(spilled=...)`` then only links them. Returns ``{source: future of a stream.SpilledSource}``.
    """
    names = [name for name, spec in source_map.items() if spec["table"] != CUSTOMER_TABLE and not is_bulk(spec)]
    return _submit_sources(pool, _spill_fact_source, names, source_map, dataset_dir, as_of=as_of, work_dir=work_dir,
                           default_region=default_region, chunk_rows=chunk_rows, **options)


def _spill_fact_source(name: str, spec: Mapping[str, Any], dataset_dir: Path, **options: Any) -> stream.SpilledSource:
    return stream.spill_source(name, spec, dataset_dir, **options)


def _stage_fact_source(
    name: str, spec: Mapping[str, Any], dataset_dir: Path, *, as_of: pd.Timestamp, id_lookup: pd.DataFrame | Path,
    work_dir: Path, default_region: str | None, chunk_rows: int, spilled: Mapping[str, Future | stream.SpilledSource] | None = None,
    **options: Any,
) -> bulk.StagedSource:
    """One fact source validated, linked and staged; ``id_lookup`` may be the Parquet file holding it; a source in
    ``spilled`` (a future of this build's pool, or its result) was validated already and is only linked."""
    lookup = _read_lookup(id_lookup) if isinstance(id_lookup, Path) else id_lookup
    if spilled and name in spilled:
        done = spilled[name]
        return stream.link_spilled(done.result() if isinstance(done, Future) else done, work_dir=work_dir, id_lookup=lookup,
                                   known_orders=options.get("known_orders"))
    if is_bulk(spec):
        return bulk.validate_parquet(name, spec, dataset_dir, as_of=as_of, id_lookup=lookup, work_dir=work_dir,
                                     business_time_zone=options.get("business_time_zone"), dataset=options.get("dataset"),
                                     known_orders=options.get("known_orders"))
    return stream.stage_source(name, spec, dataset_dir, as_of=as_of, work_dir=work_dir, id_lookup=lookup,
                               default_region=default_region, chunk_rows=chunk_rows, **options)


@lru_cache(maxsize=1)
def _read_lookup(path: Path) -> pd.DataFrame:
    """The id lookup a worker process reads once for all the sources it stages."""
    return pd.read_parquet(path)


# ------------------------------------------------------------------------------------- customers


def _customer_frame(validated: Mapping[str, validate.ValidatedSource]) -> pd.DataFrame:
    parts = [v.clean for v in validated.values() if v.table == CUSTOMER_TABLE]
    if not parts:
        raise ValueError("the source map has no source for table 'customers': nothing to resolve")
    frame = pd.concat(parts, ignore_index=True)
    for column in ("email", "phone", "name_key", "birth_date", "gender", "city", "province", "country", "full_name", "person_key"):
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

    The build links file sources with the same rule in SQL (``stream``); this
    pandas form states the rule for frames in memory and is the reference in the tests.
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


def _row_counts(validated: Mapping[str, validate.ValidatedSource | bulk.StagedSource]) -> pd.DataFrame:
    rows = [(name, v.table, v.n_rows_in, v.n_rows_in - v.n_rows_quarantined, v.n_rows_quarantined) for name, v in validated.items()]
    return quality.row_accounting(pd.DataFrame(rows, columns=["source", "table_name", "rows_in", "rows_clean", "rows_quarantined"]))


def load_ground_truth(dataset: str | datasets.Dataset | None = None) -> pd.DataFrame | None:
    """Return the dataset's known true persons, ``<ground_truth_dir>/source_records.parquet`` (source,
    source_record_id, person_id), or None when the dataset declares no ground truth (real data) or it is absent."""
    loaded = dataset if isinstance(dataset, datasets.Dataset) else datasets.load_dataset(dataset)
    if loaded.ground_truth_dir is None:
        return None
    path = loaded.ground_truth_dir / "source_records.parquet"
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


def _quarantine_share_check(counts: pd.DataFrame, threshold: float, by_reason: pd.DataFrame | None = None) -> str | None:
    """The sources quarantining more than ``threshold`` of their rows, each with its main reason (from ``by_reason``)."""
    over = counts[counts["quarantined_pct"] > threshold * 100.0]
    if over.empty:
        return None
    listed = ", ".join(f"{r.source} {r.quarantined_pct:.1f}%{_main_reason(by_reason, r.source)}" for r in over.itertuples())
    return f"quarantined share above {threshold:.1%} in: {listed}"


_REASON_HINTS = {
    "unparsed_date": "; check the source's `date_formats`",
    validate.UNDECODABLE_BYTES: "; check the source's `encoding` (e.g. latin-1, cp1252, gb18030)",
    validate.RAGGED_ROW: "; check the source's `delimiter` and the file's quoting",
}


def _main_reason(by_reason: pd.DataFrame | None, source: str) -> str:
    """`` (mostly <reason> in <column>: n rows)`` for the reason that set most of a source's rows aside, or ``""``."""
    if by_reason is None or by_reason.empty:
        return ""
    rows = by_reason[(by_reason["source"] == source) & (by_reason["action"] == "row")]
    if rows.empty:
        return ""
    top = rows.sort_values("n_entries", ascending=False).iloc[0]
    hint = _REASON_HINTS.get(str(top["reason"]), "")
    return f" (mostly {top['reason']} in {top['column_name']}: {int(top['n_entries']):,} rows{hint})"


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
    lines = out["column_name"] == validate.RAW_LINE  # a whole unreadable line: what went wrong is kept, the line is not
    if lines.any():
        out.loc[lines, "raw_value"] = validate.redacted_raw_lines(out.loc[lines, "raw_value"]).to_numpy()
    return out


def persist_outputs(result: CleansingResult, output_dir: str | Path | None) -> None:
    """Write the report tables into the run folder: ``quarantine.csv`` (masked) and the quality tables."""
    if not output_dir:
        return
    from crm_analytics import results

    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    results.write_csv(masked_quarantine(result.quarantine), folder / "quarantine.csv")
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
        "quality_value_maps": result.value_maps,
        "quality_column_notes": result.column_notes,
    }


def build_clean_warehouse(
    *,
    sources_file: str | Path | None = None,
    dataset: str | Path | datasets.Dataset | None = None,
    as_of: str | pd.Timestamp | None = None,
    quarantine_threshold: float = 0.05,
    match_threshold: float = 0.7,
    warehouse_path: str | Path | None = None,
    output_dir: str | Path | None = None,
    default_region: str | None = None,
    engine: str = "fellegi_sunter",
    workers: int = 1,
) -> CleansingResult:
    """Build one dataset's warehouse from its sources with full cleansing and entity resolution.

    Parameters
    ----------
    sources_file : path, optional
        A source map overriding the dataset file's ``sources:`` (it may use the dataset's ``inputs``).
        Default: the dataset file itself.
    dataset : str, path or Dataset, optional
        The dataset: a name under ``parameters/datasets/``, a dataset file, or a loaded
        ``datasets.Dataset``; empty: the project's default dataset. Its ``data_dir`` holds the
        files (relative source paths are read from there), its ``time_zone``, ``currency`` and
        ``country`` go into validation, its ``ground_truth_dir`` (if any) into the accuracy
        report. For older callers, a bare name without a dataset file is accepted together with
        ``sources_file``: the files are then read from ``data/raw/<name>/`` and the market facts
        are the default dataset's.
    as_of : str or Timestamp, optional
        The build's "today" in the business time zone: later dates are quarantined. Empty: the
        dataset's ``export_date``, else today in the dataset's zone (a bare date includes the whole day).
    quarantine_threshold : float
        Largest accepted share (0-1) of quarantined rows in any source. Above it the
        build raises ``QuarantineThresholdError`` after writing the quarantine and the
        reports to ``output_dir`` (and ``<warehouse>.quarantine.parquet``); the existing
        warehouse is left untouched.
    match_threshold : float
        Match probability at or above which two customer records are the same person.
    warehouse_path : path, optional
        The DuckDB file (default ``data/warehouse/<dataset>.duckdb``).
    output_dir : path, optional
        Run folder for ``quarantine.csv`` (personal values masked) and the quality tables.
    default_region : str, optional
        Region for phone numbers written without a country code; ``None``: the dataset's country.
    engine : {"fellegi_sunter", "splink"}
        Probabilistic matching engine.
    workers : int
        Processes validating sources side by side (1: one after another in this process).
        Each holds one source at a time, so memory grows with the number of workers. They start
        from a fork server, which imports the main module: a script calling this with
        ``workers > 1`` needs the ``if __name__ == "__main__":`` guard.

    Returns
    -------
    CleansingResult

    Raises ``datasets.DatasetError`` for a dataset file that is missing or inconsistent and
    ``sources.SourceError`` for a source that cannot be read as declared, each naming the file,
    the source and the key, before any warehouse is replaced. Categorical values neither accepted
    by their column nor mapped by the dataset's ``value_maps`` raise ``vocabulary.UnknownValueError``
    (a ``SourceError``) naming the table, the column, the values with their row counts and the
    ``value_maps`` line to add, unless they are a few strays (see ``cleansing.vocabulary``), which
    stay in the quarantine as ``unknown_value``; the reports are written to ``output_dir`` first.
    """
    with _Timer() as timer:
        spec = build_dataset(dataset, sources_file=sources_file)
        target = paths.resolve(warehouse_path, paths.warehouse_path(spec.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        warehouse.remove_build_leftovers(target)  # of builds killed outright, which could not clean up
        work_dir = target.with_name(f"{target.name}{warehouse.STAGING_MARKER}{os.getpid()}")
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir()
        try:
            result = _build(timer, target=target, work_dir=work_dir, sources_file=sources_file, dataset=spec,
                            as_of=build_as_of(as_of, spec), quarantine_threshold=quarantine_threshold,
                            match_threshold=match_threshold, output_dir=output_dir,
                            default_region=default_region or spec.country, engine=engine, workers=workers)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        persist_outputs(result, output_dir)
        timer.lap("persist_reports")
        result.timings, result.cpu_timings, result.peak_rss_mb = timer.timings, timer.cpu, timer.peak_rss_mb
        return result


def build_dataset(dataset: str | Path | datasets.Dataset | None, *, sources_file: str | Path | None = None) -> datasets.Dataset:
    """The ``Dataset`` a build reads (see ``build_clean_warehouse``'s ``dataset``).

    A bare name with no dataset file is accepted only beside a ``sources_file`` (older callers): its
    files are in ``data/raw/<name>/``, its market facts the default dataset's, and it has no ground truth.
    """
    if isinstance(dataset, datasets.Dataset):
        return dataset
    name = "" if dataset is None else str(dataset)
    is_bare_name = name and not name.endswith((".yaml", ".yml")) and not datasets.dataset_file(name).is_file()
    if sources_file and is_bare_name:
        default = datasets.load_dataset(None)
        return replace(default, name=name, file=Path(sources_file), data_dir=paths.raw_dir(name), ground_truth_dir=None,
                       inputs={}, sources={})
    return datasets.load_dataset(name or None)


def build_as_of(as_of: str | pd.Timestamp | None, dataset: datasets.Dataset) -> pd.Timestamp:
    """The build's "today": ``as_of`` as given; empty: the dataset's ``export_date``, else today's date in its
    time zone (a bare date includes the whole day)."""
    if as_of is None or (isinstance(as_of, str) and not as_of.strip()):
        if dataset.export_date:
            return pd.Timestamp(dataset.export_date)
        return pd.Timestamp.now(tz=dataset.time_zone).tz_localize(None).normalize()
    return pd.Timestamp(as_of)


def validation_options(dataset: datasets.Dataset, *, default_region: str | None = None) -> dict[str, Any]:
    """The per-source validation options of a dataset: ``business_time_zone``, ``default_region``, ``currency``, ``dataset``."""
    return {"business_time_zone": dataset.time_zone, "default_region": default_region or dataset.country,
            "currency": dataset.currency, "dataset": dataset}


def dataset_info_table(dataset: datasets.Dataset, *, built_at: pd.Timestamp | None = None) -> pd.DataFrame:
    """The one-row ``dataset_info`` table: ``name``, ``time_zone``, ``currency``, ``country``, ``locale``, ``built_at`` (UTC, naive)."""
    built_at = built_at if built_at is not None else pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s")
    return pd.DataFrame({
        "name": [dataset.name], "time_zone": [dataset.time_zone], "currency": [dataset.currency], "country": [dataset.country],
        "locale": [dataset.locale], "built_at": pd.Series([built_at], dtype="datetime64[us]"),
    }).astype({c: "string" for c in ("name", "time_zone", "currency", "country", "locale")})


def dataset_source_map(dataset: datasets.Dataset, sources_file: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The sources a build reads: ``sources_file`` when given (with the dataset's inputs), else the dataset file's.

    Raises ``SourceError`` when no source builds the customers table (every build resolves customers).
    """
    where = paths.resolve(sources_file, Path()) if sources_file else dataset.file
    source_map = sources.load_source_map(where, inputs=dataset.inputs) if sources_file else sources.load_source_map(where)
    if not any(spec["table"] == CUSTOMER_TABLE for spec in source_map.values()):
        raise sources.SourceError(
            f"{where}: no source builds table 'customers'; every dataset needs one. Without a customer export, derive it "
            "from the orders with a query source, e.g. `SELECT customer_id, min(order_time) AS signup_time, ... "
            "GROUP BY customer_id` (docs/your_data.md, 'Sources: mapped files and query: over inputs')"
        )
    return source_map


def _build(
    timer: _Timer,
    *,
    target: Path,
    work_dir: Path,
    sources_file: str | Path | None,
    dataset: datasets.Dataset,
    as_of: pd.Timestamp,
    quarantine_threshold: float,
    match_threshold: float,
    output_dir: str | Path | None,
    default_region: str | None,
    engine: str,
    workers: int,
) -> CleansingResult:
    """The steps of ``build_clean_warehouse``; large intermediates go to Parquet files in ``work_dir``."""
    source_map = dataset_source_map(dataset, sources_file)
    dataset_dir = dataset.data_dir
    options = validation_options(dataset, default_region=default_region)
    region = options.pop("default_region")
    with source_pool(workers) as pool:
        customers_done = _submit_customers(pool, source_map, dataset_dir, as_of=as_of, default_region=region, **options)
        spilled = spill_fact_sources(source_map, dataset_dir, pool, as_of=as_of, work_dir=work_dir, default_region=region,
                                     **options) if pool is not None else {}
        validated, profiles = customers_done()
        timer.lap("read_validate_customers")

        customers = _customer_frame(validated)
        validated = {name: replace(v, clean=v.clean.iloc[:0]) for name, v in validated.items()}  # counts and quarantine suffice now
        resolution = resolve.resolve_entities(customers, match_threshold=match_threshold, engine=engine, work_dir=work_dir)
        unified = _contract_customers(survive.survive(customers, resolution.keys))
        lookup = _id_lookup(customers, resolution.keys)
        accuracy = measure_accuracy(customers, resolution.keys, resolution.lineage, load_ground_truth(dataset))
        lineage, model, n_pairs = resolution.lineage, resolution.model, len(resolution.pairs)
        del customers, resolution
        timer.lap("resolve_entities")

        staged = stage_facts(source_map, dataset_dir, as_of=as_of, id_lookup=lookup, work_dir=work_dir, default_region=region, pool=pool,
                             spilled=spilled, **options)
        del lookup
        profiles |= {name: s.profile for name, s in staged.items()}
        timer.lap("validate_link_facts")

    linked = {name: validated[name] if name in validated else staged[name] for name in source_map}  # source-map order
    order = [name for name in source_map if not is_bulk(source_map[name])] + [name for name in source_map if is_bulk(source_map[name])]
    result = _result(linked, pd.concat([profiles[name] for name in order], ignore_index=True), lineage, accuracy, model)
    result.candidate_pairs = n_pairs
    timer.lap("report")
    result.column_notes = pd.concat([quality.column_notes(result.profile, source_map, quarantine=masked_quarantine(result.quarantine)),
                                     quality.unread_sheet_notes(source_map, dataset_dir)], ignore_index=True)
    unusable = result.column_notes[result.column_notes["is_required"]]
    if not unusable.empty:  # first: a mapping or format mistake, not dirty data, explains the quarantine that follows
        persist_outputs(result, output_dir)
        raise UnreadableColumnError(f"{dataset.file}: required " + "; required ".join(unusable["message"])
                                    + f"; the warehouse at {target} was not replaced")
    unknown = vocabulary.unknown_value_error(result.quarantine, result.row_counts, dataset_file=dataset.file)
    if unknown is not None:  # before the share check: unknown values say what to add to the dataset file
        persist_outputs(result, output_dir)
        result.quarantine.to_parquet(target.with_name(target.name + ".quarantine.parquet"), index=False)
        raise unknown
    problem = _quarantine_share_check(result.row_counts, quarantine_threshold, result.quarantine_by_reason)
    if problem:
        result.timings, result.peak_rss_mb = timer.timings, timer.peak_rss_mb
        persist_outputs(result, output_dir)
        result.quarantine.to_parquet(target.with_name(target.name + ".quarantine.parquet"), index=False)
        raise QuarantineThresholdError(f"{problem}; the warehouse at {target} was not replaced (quarantine written beside it)")

    tables = (_fact_tables(staged) | {CUSTOMER_TABLE: unified, "customer_lineage": lineage, "quarantine": result.quarantine}
              | _quality_tables(result) | {"dataset_info": dataset_info_table(dataset)})
    result.warehouse_path = warehouse.write_tables(tables, path=target, memory_limit=duck.MEMORY_LIMIT, unordered=_unordered_tables(staged))
    result.table_rows = {name: n for name, n in warehouse.table_row_counts(target).items() if name in tables}
    timer.lap("write_warehouse")
    return result


def _contract_customers(unified: pd.DataFrame) -> pd.DataFrame:
    """Every column of the ``customers`` contract (those no source provides as missing values), then ``n_source_records``."""
    out = unified.copy()
    for column in schema.CUSTOMERS.columns:
        if column.name not in out.columns:
            out[column.name] = pd.Series(pd.NA, index=out.index, dtype=column.pandas_dtype)
    return out[[*schema.CUSTOMERS.column_names, *[c for c in out.columns if c not in schema.CUSTOMERS.column_names]]]


def _unordered_tables(staged: Mapping[str, bulk.StagedSource]) -> set[str]:
    """The fact tables every source of which was validated inside DuckDB (``bulk``), which stages its clean rows in no
    particular order (the joins of its checks run in parallel): the warehouse need not keep an order they never had."""
    tables = {source.table for source in staged.values()}
    return {table for table in tables if not any(source.ordered for source in staged.values() if source.table == table)}


def _fact_tables(staged: Mapping[str, bulk.StagedSource]) -> dict[str, str]:
    """``{table: DuckDB SELECT}`` over the staged Parquet files of its sources (source-map order)."""
    parts: dict[str, list[str]] = {}
    for source in staged.values():
        parts.setdefault(source.table, []).append(f"SELECT * FROM read_parquet({duck.quote(source.clean_path)})")
    return {table: " UNION ALL ".join(selects) for table, selects in parts.items()}


def _result(
    linked: Mapping[str, validate.ValidatedSource | bulk.StagedSource],
    profile: pd.DataFrame,
    lineage: pd.DataFrame,
    accuracy: pd.DataFrame,
    model: resolve.FellegiSunterModel | None,
) -> CleansingResult:
    return CleansingResult(
        warehouse_path=None,
        row_counts=_row_counts(linked),
        quarantine=pd.concat([v.quarantine for v in linked.values()], ignore_index=True),
        profile=profile,
        lineage=lineage,
        duplicates=quality.duplicates_summary(lineage),
        accuracy=accuracy,
        model_weights=model.level_weights() if model is not None else pd.DataFrame(),
        value_maps=pd.concat([v.value_maps for v in linked.values()], ignore_index=True),
    )
