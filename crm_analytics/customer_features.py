"""Per-customer building blocks that several analyses share: support-ticket features and segment lookups.

Analysis modules never import each other (``docs`` of the layers: ``pyproject.toml``,
``[tool.importlinter]``); what two of them compute alike lives here, once, so that a churn
feature and a segmentation feature called "tickets" count the same thing.

- ``ticket_features``: support tickets opened before a date, per customer (churn features,
  segmentation clusters); ``ticket_counts`` is the same as an Ibis table, to join in the engine.
- ``customer_segments``: each customer's segment from a persisted segmentation result, else a
  fallback column (KPI breakdowns, satisfaction by segment).
"""

from __future__ import annotations

import pandas as pd

from crm_analytics import frames, privacy

TICKET_WINDOW_DAYS = 180  # the "recent tickets" window of n_tickets_180d
_DAY_SECONDS = 86400


def ticket_features(
    support_tickets: frames.TableLike,
    *,
    as_of: str | pd.Timestamp,
    customer_col: str = "customer_id",
    include_as_of: bool = False,
) -> pd.DataFrame:
    """Support tickets per customer opened before ``as_of`` (aggregated in the engine).

    Parameters
    ----------
    support_tickets : pandas.DataFrame or Ibis table
        ``customer_col`` and ``opened_time`` (timestamp); optional ``is_escalated`` (bool) and
        ``category`` (text; ``"refund"`` marks refund requests) add their counts.
    as_of : str or Timestamp
        The cut-off; tickets opened strictly before it count.
    customer_col : str
        The customer id column of the tickets, and the name of the result's index.
    include_as_of : bool
        Count tickets opened exactly at ``as_of`` too (for snapshots whose orders are taken at or
        before ``as_of``, as segmentation's are).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_col`` (text), one row per customer with a ticket: ``n_tickets``,
        ``n_tickets_180d`` (opened in the ``TICKET_WINDOW_DAYS`` days before ``as_of``), and
        ``n_escalated`` / ``n_refund_tickets`` when the table has ``is_escalated`` / ``category``.
        Counts are ``int64``. Customers without tickets are absent: fill their counts with 0.
    """
    counts = ticket_counts(support_tickets, as_of=as_of, customer_col=customer_col, include_as_of=include_as_of)
    return counts.to_pandas().set_index(customer_col).fillna(0).astype("int64").sort_index()


def ticket_counts(
    support_tickets: frames.TableLike,
    *,
    as_of: str | pd.Timestamp,
    customer_col: str = "customer_id",
    include_as_of: bool = False,
):
    """``ticket_features`` as an Ibis table, not yet computed, for joining in the engine.

    Parameters
    ----------
    support_tickets, as_of, customer_col, include_as_of
        As for ``ticket_features``.

    Returns
    -------
    ibis.Table
        ``customer_col`` (text) and the counts of ``ticket_features``, one row per customer with a
        ticket; a count is missing (not 0) when none of the customer's tickets has the column's value.
    """
    import ibis

    frames.require_columns(support_tickets, [customer_col, "opened_time"], context="ticket_features(support_tickets)")
    cutoff = ibis.literal(frames.as_timestamp(as_of).to_pydatetime(), type="timestamp")
    t = frames.as_ibis(support_tickets)
    opened = t.filter((t.opened_time <= cutoff) if include_as_of else (t.opened_time < cutoff))
    opened = opened.filter(opened[customer_col].notnull())
    days_ago = (cutoff.epoch_seconds() - opened.opened_time.epoch_seconds()) / _DAY_SECONDS
    counts = {"n_tickets": opened.count(), "n_tickets_180d": (days_ago <= TICKET_WINDOW_DAYS).sum()}
    if "is_escalated" in opened.columns:
        counts["n_escalated"] = opened.is_escalated.cast("int64").sum()
    if "category" in opened.columns:
        counts["n_refund_tickets"] = (opened.category == "refund").sum()
    return opened.group_by(opened[customer_col].cast("string").name(customer_col)).aggregate(**counts)


def customer_segments(
    customers: pd.DataFrame,
    *,
    segment_result: pd.DataFrame | None = None,
    key_col: str = privacy.CUSTOMER_KEY_COL,
    segment_col: str = "rfm_segment",
    fallback_col: str = "acquisition_channel",
) -> tuple[pd.DataFrame, str]:
    """Return each customer's segment, and a sentence saying where it came from.

    Parameters
    ----------
    customers : pandas.DataFrame
        ``customer_id`` and ``fallback_col``.
    segment_result : pandas.DataFrame, optional
        A persisted segmentation table keyed by the published pseudonymous ``key_col``
        (``privacy.with_customer_key``) with ``segment_col``. When absent, or when none of its keys
        matches a customer (another dataset, another pseudonym key), ``fallback_col`` is the segment.

    Returns
    -------
    (pandas.DataFrame, str)
        ``customer_id``, ``segment`` (string; ``"unknown"`` when missing) and a sentence naming the source.
    """
    frames.require_columns(customers, ["customer_id", fallback_col], context="customer_segments(customers)")
    base = customers[["customer_id", fallback_col]].drop_duplicates("customer_id")
    if segment_result is not None:
        frames.require_columns(segment_result, [key_col, segment_col], context="customer_segments(segment_result)")
        keyed = base.assign(_key=privacy.pseudonymise(base["customer_id"].astype("string")))
        lookup = segment_result[[key_col, segment_col]].drop_duplicates(key_col)
        merged = keyed.merge(lookup, left_on="_key", right_on=key_col, how="left")
        if merged[segment_col].notna().any():
            segments = merged[["customer_id"]].assign(segment=merged[segment_col].astype("string").fillna("unknown"))
            return segments, f"segments from the latest segmentation run ({segment_col})"
    segments = base[["customer_id"]].assign(segment=base[fallback_col].astype("string").fillna("unknown"))
    return segments, f"no segmentation result available: customers are segmented by {fallback_col}"
