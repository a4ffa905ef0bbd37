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

from collections.abc import Sequence
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


def customer_persons(con, *, truth_dir: str | Path | None = None, person_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Map every customer of a warehouse to its true person (``customer_id``, ``person_id``).

    ``con`` is a warehouse connection (``warehouse.connect()``); its
    ``customer_lineage`` table is used when present (a cleansed warehouse). The mapping is
    ``person_map``'s: customers whose records all belong to exactly one person.

    Parameters
    ----------
    con : Ibis backend
        The warehouse. On DuckDB the mapping runs as one query over the warehouse tables and the
        ground-truth Parquet files; other backends map in pandas (``person_map``).
    truth_dir : str or Path, optional
        The ground-truth folder; default: the demo's.
    person_columns : sequence of str
        Columns of ``persons.parquet`` to add (e.g. ``true_segment``); customers whose person is
        not in ``persons.parquet`` are then left out.

    Returns
    -------
    pandas.DataFrame
        ``customer_id`` (string), ``person_id``, then ``person_columns``; one row per mapped
        customer, sorted by ``customer_id``.
    """
    folder = Path(truth_dir or paths.ground_truth_dir())
    has_lineage = "customer_lineage" in con.list_tables()
    if getattr(con, "name", "") == "duckdb":
        mapped = _duckdb_customer_persons(con, folder, has_lineage=has_lineage, person_columns=person_columns)
    else:
        lineage = con.table("customer_lineage").to_pandas() if has_lineage else None
        customer_ids = con.table("customers").select("customer_id").to_pandas()["customer_id"]
        mapped = person_map(customer_ids, source_records=load_source_records(folder), lineage=lineage)
        if person_columns:
            mapped = mapped.merge(load_persons(folder)[["person_id", *person_columns]], on="person_id")
        mapped = mapped.sort_values("customer_id", kind="stable", ignore_index=True)
    return mapped.astype({"customer_id": "string"})


def _sql_string(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _duckdb_customer_persons(con, folder: Path, *, has_lineage: bool, person_columns: Sequence[str]) -> pd.DataFrame:
    """``customer_persons`` as one DuckDB query: the same rules as ``person_map``, then the ``person_columns``.

    Rows without a customer, record or person id match nothing (SQL joins never match a missing key).
    """
    records = (
        "SELECT k.customer_id, CAST(l.source_customer_id AS VARCHAR) AS source_record_id"
        " FROM keys AS k JOIN customer_lineage AS l ON k.customer_id = CAST(l.customer_key AS VARCHAR)"
        if has_lineage
        else "SELECT customer_id, customer_id AS source_record_id FROM keys"
    )
    query = f"""
        WITH keys AS (SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id FROM customers),
        records AS ({records}),
        truth AS (
            SELECT DISTINCT CAST(source_record_id AS VARCHAR) AS source_record_id, person_id
            FROM read_parquet({_sql_string(str(folder / "source_records.parquet"))})
        )
        SELECT r.customer_id, min(t.person_id) AS person_id
        FROM records AS r JOIN truth AS t ON r.source_record_id = t.source_record_id
        GROUP BY r.customer_id
        HAVING count(DISTINCT t.person_id) = 1
    """
    if person_columns:
        chosen = ", ".join(f'p."{column.replace(chr(34), chr(34) * 2)}"' for column in person_columns)
        persons = _sql_string(str(folder / "persons.parquet"))
        query = f"SELECT m.customer_id, m.person_id, {chosen} FROM ({query}) AS m JOIN read_parquet({persons}) AS p ON m.person_id = p.person_id"
    return con.sql(f"SELECT * FROM ({query}) ORDER BY customer_id").to_pyarrow().to_pandas()
