"""Survivorship: one unified customer row per resolved person.

Rules, per attribute: the most recent non-missing value (by the record's
``signup_time``), ties broken by source priority. ``signup_time`` is the
earliest of the cluster, and ``source`` and ``acquisition_channel`` come from
that first record (how the person first arrived).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from crm_analytics import schema
from crm_analytics.frames import require_columns

DEFAULT_SOURCE_PRIORITY: tuple[str, ...] = ("store", "call_centre", "web")
LATEST_WINS = ("full_name", "email", "phone", "gender", "birth_date", "province", "city", "country", "person_key")
FIRST_WINS = ("acquisition_channel", "source")


def survive(
    customers: pd.DataFrame,
    keys: pd.Series,
    *,
    source_priority: Sequence[str] = DEFAULT_SOURCE_PRIORITY,
) -> pd.DataFrame:
    """Build the unified ``customers`` table.

    Parameters
    ----------
    customers : DataFrame
        Clean customer records of every source with the contract columns
        (``signup_time`` and ``source`` at least).
    keys : Series
        ``customer_key`` per record, aligned with ``customers``.
    source_priority : sequence of str
        ``source`` values from most to least trusted, for ties.

    Returns
    -------
    DataFrame
        The ``customers`` contract columns, one row per ``customer_key`` (in
        ``customer_id``), sorted by it, plus ``n_source_records``.
    """
    require_columns(customers, ["signup_time", "source"], context="survive(customers)")
    rank = {s: i for i, s in enumerate(source_priority)}
    frame = customers.assign(
        customer_id=keys.to_numpy(),
        _priority=customers["source"].map(rank).fillna(len(rank)).astype("int64"),
    )
    latest = frame.sort_values(["customer_id", "signup_time", "_priority"], ascending=[True, False, True], na_position="last")
    first = frame.sort_values(["customer_id", "signup_time", "_priority"], ascending=[True, True, True], na_position="last")
    grouped = latest.groupby("customer_id", sort=True)
    out = pd.DataFrame(index=grouped.size().index)
    for column in LATEST_WINS:
        if column in frame.columns:
            out[column] = grouped[column].first()
    first_rows = first.drop_duplicates("customer_id").set_index("customer_id")
    for column in FIRST_WINS:
        if column in frame.columns:
            out[column] = first_rows[column]
    out["signup_time"] = first_rows["signup_time"]
    out["n_source_records"] = grouped.size().astype("int64")
    out = out.reset_index()
    columns = [c for c in schema.CUSTOMERS.column_names if c in out.columns] + ["n_source_records"]
    return out[columns]
