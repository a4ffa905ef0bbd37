"""Lifecycle stages: where each customer stands at an as-of date, and how customers move between stages.

Rules (all day counts are whole days, ``floor((as_of - time) / 1 day)``; a
*purchase* is an order row with ``order_amount >= 0``, refunds are ignored; only
rows at or before ``as_of`` with a customer id count). The first rule that applies wins:

1. ``prospect``: a known customer (in ``customers``, signed up at or before
   ``as_of``) with no purchase yet;
2. ``churned``: last purchase more than ``churn_days`` ago;
3. ``at risk``: last purchase more than ``active_days`` ago (and at most ``churn_days``);
4. ``new``: first purchase at most ``new_days`` ago;
5. ``reactivated``: a purchase in the last ``active_days`` came more than
   ``churn_days`` after the purchase before it (the customer had churned and came back);
6. ``loyal``: at least ``loyal_min_orders`` purchases in the last ``loyal_window_days``;
7. ``active``: everyone else with a purchase in the last ``active_days``.

Order-level work runs in the input's Ibis backend; the rules are applied to the
customer-level result in pandas.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from crm_analytics import plots
from crm_analytics.frames import TableLike, as_ibis, as_timestamp, require_columns

STAGES: tuple[str, ...] = ("prospect", "new", "active", "loyal", "reactivated", "at risk", "churned")
NOT_YET = "(not yet a customer)"
_DAY_SECONDS = 86_400


def _whole_days_before(stamp: pd.Timestamp, times: ir.Column) -> ir.Column:
    """Ibis expression: whole days from ``times`` to ``stamp``."""
    return ((int(stamp.timestamp()) - times.epoch_seconds()) / _DAY_SECONDS).floor()


def purchase_history(
    orders: TableLike,
    *,
    as_of,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    churn_days: int = 180,
    active_days: int = 90,
    loyal_window_days: int = 365,
) -> pd.DataFrame:
    """Per customer with a purchase at or before ``as_of``: the quantities the stage rules read.

    Returns
    -------
    pandas.DataFrame
        ``customer_col``, ``first_order_time``, ``last_order_time`` (timestamps),
        ``n_orders`` (purchases), ``n_recent_orders`` (purchases in the last
        ``loyal_window_days``), ``is_comeback`` (a purchase in the last
        ``active_days`` followed a gap of more than ``churn_days``), sorted by customer.
    """
    require_columns(orders, [customer_col, time_col, amount_col], context="lifecycle(orders)")
    stamp = as_timestamp(as_of)
    table = as_ibis(orders)
    cutoff = ibis.literal(stamp.to_pydatetime(), type="timestamp")
    purchases = table.filter((table[time_col] <= cutoff) & (table[amount_col] >= 0) & table[customer_col].notnull())
    window = ibis.window(group_by=purchases[customer_col], order_by=purchases[time_col])
    purchases = purchases.mutate(
        _gap_days=((purchases[time_col].epoch_seconds() - purchases[time_col].lag().over(window).epoch_seconds()) / _DAY_SECONDS).floor(),
        _age_days=_whole_days_before(stamp, purchases[time_col]),
    )
    is_comeback = (purchases._gap_days > churn_days) & (purchases._age_days <= active_days)
    history = (
        purchases.group_by(customer_col)
        .aggregate(
            first_order_time=purchases[time_col].min(),
            last_order_time=purchases[time_col].max(),
            n_orders=purchases.count(),
            n_recent_orders=(purchases._age_days <= loyal_window_days).sum(),
            is_comeback=is_comeback.fill_null(False).any(),
        )
        .order_by(customer_col)
        .to_pandas()
    )
    return history


def lifecycle_stages(
    orders: TableLike,
    *,
    as_of,
    customers: TableLike | None = None,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    signup_col: str = "signup_time",
    new_days: int = 90,
    active_days: int = 90,
    churn_days: int = 180,
    loyal_min_orders: int = 4,
    loyal_window_days: int = 365,
) -> pd.DataFrame:
    """The lifecycle stage of every customer at ``as_of`` (rules in the module docstring).

    Parameters
    ----------
    orders
        ``customer_col``, ``time_col`` (timestamp), ``amount_col`` (dataset currency; negative for refunds).
    as_of
        Date or timestamp (ISO string accepted).
    customers
        Optional ``customer_col`` and ``signup_col``: adds ``prospect`` rows for
        customers signed up at or before ``as_of`` without a purchase. Without it
        only purchasing customers appear.
    new_days, active_days, churn_days, loyal_min_orders, loyal_window_days
        Rule thresholds (days, orders); ``active_days < churn_days``.

    Returns
    -------
    pandas.DataFrame
        One row per customer, sorted by ``customer_col``: ``lifecycle_stage``
        (categorical, ``STAGES``), ``days_since_last_order`` (Int64 days; missing
        for prospects), ``n_orders`` (purchases), ``first_order_time``, ``last_order_time``.
    """
    if not 0 < active_days < churn_days:
        raise ValueError(f"need 0 < active_days < churn_days, got active_days={active_days}, churn_days={churn_days}")
    stamp = as_timestamp(as_of)
    history = purchase_history(
        orders, as_of=stamp, customer_col=customer_col, time_col=time_col, amount_col=amount_col,
        churn_days=churn_days, active_days=active_days, loyal_window_days=loyal_window_days,
    )
    day = pd.Timedelta(days=1)
    since_last = ((stamp - history["last_order_time"]) // day).astype("int64")
    since_first = ((stamp - history["first_order_time"]) // day).astype("int64")
    stage = np.select(
        [
            since_last > churn_days,
            since_last > active_days,
            since_first <= new_days,
            history["is_comeback"].astype(bool),
            history["n_recent_orders"] >= loyal_min_orders,
        ],
        ["churned", "at risk", "new", "reactivated", "loyal"],
        "active",
    )
    result = pd.DataFrame(
        {
            customer_col: history[customer_col].astype("string"),
            "lifecycle_stage": stage,
            "days_since_last_order": since_last.astype("Int64"),
            "n_orders": history["n_orders"].astype("int64"),
            "first_order_time": history["first_order_time"],
            "last_order_time": history["last_order_time"],
        }
    )
    if customers is not None:
        result = pd.concat([result, _prospects(customers, result[customer_col], as_of=stamp, customer_col=customer_col, signup_col=signup_col)], ignore_index=True)
    result["lifecycle_stage"] = pd.Categorical(result["lifecycle_stage"], categories=list(STAGES))
    return result.sort_values(customer_col, kind="stable").reset_index(drop=True)


def _prospects(customers: TableLike, buyers: pd.Series, *, as_of: pd.Timestamp, customer_col: str, signup_col: str) -> pd.DataFrame:
    require_columns(customers, [customer_col, signup_col], context="lifecycle(customers)")
    table = as_ibis(customers)
    cutoff = ibis.literal(as_of.to_pydatetime(), type="timestamp")
    known = table.filter(table[signup_col] <= cutoff).select(customer_col).distinct().to_pandas()
    ids = known.loc[~known[customer_col].isin(buyers), customer_col].astype("string")
    return pd.DataFrame(
        {
            customer_col: ids.to_numpy(),
            "lifecycle_stage": "prospect",
            "days_since_last_order": pd.array([pd.NA] * len(ids), dtype="Int64"),
            "n_orders": np.zeros(len(ids), dtype="int64"),
        }
    )


def stage_counts(stages: pd.DataFrame) -> pd.DataFrame:
    """Customers per stage: ``lifecycle_stage``, ``n_customers``, ``customer_pct`` (every stage, empty ones too)."""
    require_columns(stages, ["lifecycle_stage"], context="stage_counts(stages)")
    counts = stages["lifecycle_stage"].value_counts(sort=False).reindex(list(STAGES), fill_value=0)
    table = counts.rename("n_customers").rename_axis("lifecycle_stage").reset_index()
    table["customer_pct"] = 100 * table["n_customers"] / max(int(table["n_customers"].sum()), 1)
    return table


def stage_transitions(before: pd.DataFrame, after: pd.DataFrame, *, customer_col: str = "customer_id") -> pd.DataFrame:
    """Transition matrix between two snapshots of ``lifecycle_stages`` (e.g. a quarter apart).

    Customers absent from ``before`` (unknown at the earlier date) appear in the
    row ``"(not yet a customer)"``.

    Returns
    -------
    pandas.DataFrame
        Long form, one row per (``from_stage``, ``to_stage``) pair, stages in
        ``STAGES`` order: ``n_customers``, ``from_pct`` (% of the row), with all
        pairs present (zeros included).
    """
    for name, frame in (("before", before), ("after", after)):
        require_columns(frame, [customer_col, "lifecycle_stage"], context=f"stage_transitions({name})")
    left = before[[customer_col, "lifecycle_stage"]].rename(columns={"lifecycle_stage": "from_stage"})
    right = after[[customer_col, "lifecycle_stage"]].rename(columns={"lifecycle_stage": "to_stage"})
    joined = right.merge(left, on=customer_col, how="left")
    rows = [NOT_YET, *STAGES]
    joined["from_stage"] = pd.Categorical(joined["from_stage"].astype("object").fillna(NOT_YET), categories=rows)
    joined["to_stage"] = pd.Categorical(joined["to_stage"].astype("object"), categories=list(STAGES))
    matrix = pd.crosstab(joined["from_stage"], joined["to_stage"], dropna=False).reindex(index=rows, columns=list(STAGES), fill_value=0)
    long = matrix.stack().rename("n_customers").reset_index()
    row_totals = long.groupby("from_stage", observed=False)["n_customers"].transform("sum")
    long["from_pct"] = (100 * long["n_customers"] / row_totals.replace(0, np.nan)).fillna(0.0)
    return long


def plot_stage_transitions(transitions: pd.DataFrame, *, ax=None):
    """Heatmap of a ``stage_transitions`` table: row % in colour, customer counts written in the cells."""
    require_columns(transitions, ["from_stage", "to_stage", "n_customers", "from_pct"], context="plot_stage_transitions(transitions)")
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(8.5, 6))
    rows, columns = [NOT_YET, *STAGES], list(STAGES)
    pct = transitions.pivot(index="from_stage", columns="to_stage", values="from_pct").reindex(index=rows, columns=columns, fill_value=0.0)
    counts = transitions.pivot(index="from_stage", columns="to_stage", values="n_customers").reindex(index=rows, columns=columns, fill_value=0)
    pct = pct[counts.sum(axis=1) > 0]
    counts = counts.loc[pct.index]
    import seaborn as sns

    sns.heatmap(pct, annot=counts.map(lambda v: f"{v:,}"), fmt="", cmap=plots.PALETTE, vmin=0, vmax=100,
                cbar_kws={"label": "% of the earlier stage"}, ax=ax, annot_kws={"fontsize": 8})
    ax.set_xlabel("stage at the later date")
    ax.set_ylabel("stage at the earlier date")
    ax.set_title("Lifecycle transitions (colour: row %, numbers: customers)")
    return ax


def plot_stage_counts(counts: pd.DataFrame, *, ax=None):
    """Bar chart of customers per stage (output of ``stage_counts``)."""
    require_columns(counts, ["lifecycle_stage", "n_customers"], context="plot_stage_counts(counts)")
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(8, 4))
    stages = counts["lifecycle_stage"].astype(str)
    ax.bar(stages, counts["n_customers"], color=plots.category_colour_list(stages))
    ax.set_xlabel("lifecycle stage")
    ax.set_ylabel("customers (count)")
    ax.set_title("Customers by lifecycle stage")
    return ax
