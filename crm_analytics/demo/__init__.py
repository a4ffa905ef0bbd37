"""Seeded generator of a realistic multi-source CRM dataset with planted dirt and known ground truth.

``generate(n_customers, seed=...)`` simulates a latent population (behavioural
segments, acquisition channels, BG/NBD-like purchasing with dropout,
satisfaction), what it does (orders and their lines, refunds, web sessions,
marketing journeys that cause real conversions, surveys, support tickets, a
B2B pipeline, an A/B test) and how the source systems record it (three
customer sources with duplicates and dirty spellings). It writes every raw
export named in ``parameters/sources.yaml`` (file names, formats, encodings,
sheet and column names exactly as declared there) and a ``ground_truth/``
folder:

``persons.parquet``
    one row per person: ``person_id``, ``true_segment``, ``acquisition_channel``,
    ``acquisition_time``, ``dropout_time`` (NaT when still active at the end
    date), ``purchase_rate_per_week``, ``dropout_probability``, ``satisfaction``,
    canonical ``full_name``, ``email``, ``phone`` (E.164), ``gender``,
    ``birth_date``, ``city``, ``province``. Times are naive Asia/Shanghai.
``source_records.parquet``
    ``source`` (web, store, call_centre), ``source_record_id``, ``person_id``,
    ``is_duplicate``, ``signup_time``.
``channel_effects.json``, ``experiment.json``, ``funnel.json``, ``pipeline.json``
    the planted marketing effects, A/B parameters, funnel step conversions and
    win rates (planted and realised).
``planted_dirt.parquet``
    every planted defect: ``source`` (export name), ``row`` (0-based data row,
    -1 for a whole file or column), ``source_record_id``, ``column`` (the
    export's column name), ``kind``, ``value``.
``manifest.json``
    seed, size, period and every file with its SHA-256 and row count.

The same arguments give byte-identical files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from crm_analytics.demo.world import DEFAULT_AS_OF, simulate
from crm_analytics.demo.writer import write_dataset

__all__ = ["DEFAULT_AS_OF", "generate"]

_STAGING = ".demo-staging"


def generate(
    n_customers: int = 50_000,
    *,
    seed: int = 42,
    out_dir: str | Path | None = None,
    start_date: str = "2023-01-01",
    end_date: str = "2025-12-31",
) -> Path:
    """Generate the demo dataset and return its folder.

    Parameters
    ----------
    n_customers
        Number of latent persons (each appears in 1-3 customer sources).
    seed
        Random seed; the same seed and arguments give byte-identical files.
    out_dir
        Target folder; ``None`` means ``crm_analytics.paths.raw_dir("demo")``.
        Relative paths are taken from the project root. A previous dataset in
        the folder is replaced (files of other names are left alone).
    start_date, end_date
        First and last local calendar day simulated (ISO dates); ``end_date`` is
        the export date.

    Returns
    -------
    Path
        The dataset folder holding the raw exports and ``ground_truth/``.
    """
    from crm_analytics import paths

    if int(n_customers) < 10:
        raise ValueError(f"n_customers must be at least 10; got {n_customers}")
    target = paths.resolve(out_dir, paths.raw_dir(paths.DEMO_DATASET))
    target.mkdir(parents=True, exist_ok=True)
    staging = target / _STAGING
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        world = simulate(int(n_customers), seed=int(seed), start_date=start_date, end_date=end_date)
        written = write_dataset(world, staging)
        del world
        for name in written:
            destination = target / name
            if destination.is_dir():
                shutil.rmtree(destination)
            elif destination.exists():
                destination.unlink()
            (staging / name).replace(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
