"""Evaluation against a generated dataset's ground truth.

The demo generator writes, beside its exports, who every source record really
is (``ground_truth/source_records.parquet``) and each person's latent truth
(``persons.parquet``: true segment, dropout time, ...). Analyses never read it;
tests and the evaluation sections of notebooks do, through this module.

Warehouse customer ids are source record ids after the plain load and resolved
keys after cleansing, whose ``customer_lineage`` table names the source records
each key merged. ``customer_persons`` handles both.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from crm_analytics import paths
from crm_analytics.frames import require_columns


def load_persons(truth_dir: str | Path | None = None) -> pd.DataFrame:
    """Return ``persons.parquet`` of the ground truth (one row per person, indexed by nothing)."""
    return pd.read_parquet(Path(truth_dir or paths.ground_truth_dir()) / "persons.parquet")


def load_source_records(truth_dir: str | Path | None = None) -> pd.DataFrame:
    """Return ``source_records.parquet``: ``source``, ``source_record_id`` -> ``person_id``."""
    return pd.read_parquet(Path(truth_dir or paths.ground_truth_dir()) / "source_records.parquet")


def person_map(
    customer_ids: pd.Series,
    *,
    source_records: pd.DataFrame,
    lineage: pd.DataFrame | None = None,
    customer_col: str = "customer_id",
    lineage_key_col: str = "customer_key",
    lineage_record_col: str = "source_customer_id",
) -> pd.DataFrame:
    """Map warehouse customer ids to ground-truth persons.

    Parameters
    ----------
    customer_ids : the warehouse customer ids to map.
    source_records : ``source_record_id`` and ``person_id`` (ground truth).
    lineage : optional, after cleansing: ``lineage_key_col`` (the warehouse customer
        id) and ``lineage_record_col`` (a source record id it merged).

    Returns
    -------
    DataFrame with ``customer_col`` and ``person_id``, one row per customer whose
    records all belong to exactly one person (wrongly merged customers are left out).
    """
    require_columns(source_records, ["source_record_id", "person_id"], context="person_map(source_records)")
    keys = pd.DataFrame({customer_col: pd.Series(customer_ids).astype("string").unique()})
    if lineage is None:
        records = keys.assign(source_record_id=keys[customer_col])
    else:
        require_columns(lineage, [lineage_key_col, lineage_record_col], context="person_map(lineage)")
        links = lineage[[lineage_key_col, lineage_record_col]].astype("string")
        links.columns = [customer_col, "source_record_id"]
        records = keys.merge(links, on=customer_col, how="inner")
    truth = source_records[["source_record_id", "person_id"]].astype({"source_record_id": "string"}).drop_duplicates()
    matched = records.merge(truth, on="source_record_id", how="inner")
    n_persons = matched.groupby(customer_col)["person_id"].transform("nunique")  # a hash lookup per row, not isin
    mapped = matched[n_persons == 1][[customer_col, "person_id"]]
    return mapped.drop_duplicates(customer_col).reset_index(drop=True)


def customer_persons(con, *, truth_dir: str | Path | None = None) -> pd.DataFrame:
    """Map every customer of a warehouse to its true person (``customer_id``, ``person_id``).

    ``con`` is a warehouse connection (``warehouse.connect()``); its
    ``customer_lineage`` table is used when present (a cleansed warehouse).
    """
    lineage = con.table("customer_lineage").to_pandas() if "customer_lineage" in con.list_tables() else None
    customer_ids = con.table("customers").select("customer_id").to_pandas()["customer_id"]
    return person_map(customer_ids, source_records=load_source_records(truth_dir), lineage=lineage)
