"""Data inventory of the warehouse: what is there, from where, over which dates.

Aggregations run in the warehouse engine (Ibis); results are small pandas frames.
"""

from __future__ import annotations

import pandas as pd

from crm_analytics import plots, schema
from crm_analytics.frames import TableLike, as_ibis, require_columns

# The timestamp that dates each canonical table's rows.
TIME_COLUMNS = {
    "customers": "signup_time",
    "orders": "order_time",
    "web_events": "event_time",
    "opportunities": "created_time",
    "opportunity_stage_history": "entered_time",
    "campaigns": "start_date",
    "touchpoints": "touch_time",
    "surveys": "survey_time",
    "support_tickets": "opened_time",
    "experiment_assignments": "assigned_time",
}


def table_inventory(con) -> pd.DataFrame:
    """Rows and date range of every canonical table present in the warehouse.

    Parameters
    ----------
    con : an Ibis backend (``warehouse.connect()``).

    Returns
    -------
    DataFrame with ``table``, ``rows``, ``first_time``, ``last_time`` (empty for
    tables without a time column), one row per canonical table in schema order.
    """
    present = set(con.list_tables())
    rows = []
    for name in schema.TABLES:
        if name not in present:
            continue
        table = con.table(name)
        time_col = TIME_COLUMNS.get(name)
        if time_col:
            stats = table.aggregate(rows=table.count(), first_time=table[time_col].min(), last_time=table[time_col].max())
            record = stats.to_pandas().iloc[0].to_dict()
        else:
            record = {"rows": table.count().to_pyarrow().as_py(), "first_time": pd.NaT, "last_time": pd.NaT}
        rows.append({"table": name, **record})
    frame = pd.DataFrame(rows, columns=["table", "rows", "first_time", "last_time"])
    frame["first_time"] = pd.to_datetime(frame["first_time"])
    frame["last_time"] = pd.to_datetime(frame["last_time"])
    return frame


def count_by(table: TableLike, by: list[str] | str, *, count_name: str = "rows") -> pd.DataFrame:
    """Count rows per group, largest first.

    Parameters
    ----------
    table : any table holding the ``by`` columns.
    by : grouping column(s); missing values form their own group, shown as ``"(missing)"``.

    Returns
    -------
    DataFrame with the ``by`` columns, ``count_name`` and ``share_pct`` (percent of all rows).
    """
    keys = [by] if isinstance(by, str) else list(by)
    require_columns(table, keys, context="count_by(table)")
    expr = as_ibis(table)
    filled = expr.mutate(**{k: expr[k].cast("string").fill_null("(missing)") for k in keys})
    counts = filled.group_by(keys).aggregate(**{count_name: filled.count()}).to_pandas()
    counts = counts.sort_values([count_name, *keys], ascending=[False] + [True] * len(keys), ignore_index=True)
    counts["share_pct"] = 100.0 * counts[count_name] / counts[count_name].sum()
    return counts


def orders_over_time(
    orders: TableLike,
    *,
    period: str = "week",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    by: str | None = None,
) -> pd.DataFrame:
    """Orders and net revenue per calendar period.

    Parameters
    ----------
    orders : needs ``time_col`` and ``amount_col`` (and ``by`` when given).
    period : ``day``, ``week`` (weeks start on Monday), ``month`` or ``quarter``.
    by : optional grouping column, e.g. ``channel``.

    Returns
    -------
    DataFrame with ``period_start`` (timestamp), ``by`` if given, ``n_orders`` and
    ``net_revenue_amount`` (refunds subtract), sorted by period.
    """
    units = {"day": "D", "week": "W", "month": "M", "quarter": "Q"}
    if period not in units:
        raise ValueError(f"period must be one of {sorted(units)}, got {period!r}")
    needed = [time_col, amount_col] + ([by] if by else [])
    require_columns(orders, needed, context="orders_over_time(orders)")
    expr = as_ibis(orders)
    expr = expr.mutate(period_start=expr[time_col].truncate(units[period]))
    keys = ["period_start"] + ([by] if by else [])
    result = expr.group_by(keys).aggregate(n_orders=expr.count(), net_revenue_amount=expr[amount_col].sum())
    frame = result.order_by(keys).to_pandas()
    frame["period_start"] = pd.to_datetime(frame["period_start"])
    return frame


def plot_table_rows(inventory: pd.DataFrame, *, ax=None):
    """Horizontal bars of rows per table (log scale), from ``table_inventory``; returns the Axes."""
    import seaborn as sns

    ax = plots.new_axes(ax, figsize=(8, 4))
    sns.barplot(data=inventory, y="table", x="rows", ax=ax, color=sns.color_palette(plots.PALETTE)[3])
    ax.set_xscale("log")
    ax.set(title="Rows per table", xlabel="rows (log scale)", ylabel="")
    return ax


def plot_counts(counts: pd.DataFrame, *, category: str, count_col: str = "rows", title: str = "", top: int = 15, ax=None):
    """Bars of the ``top`` largest groups of a ``count_by`` result; returns the Axes."""
    import seaborn as sns

    ax = plots.new_axes(ax, figsize=(8, 4))
    shown = counts.head(top)
    sns.barplot(data=shown, y=category, x=count_col, ax=ax, color=sns.color_palette(plots.PALETTE)[2])
    ax.set(title=title or f"{count_col} by {category}", xlabel=count_col, ylabel="")
    return ax


def plot_orders_over_time(series: pd.DataFrame, *, by: str | None = None, ax=None):
    """Lines of weekly (or other period) orders from ``orders_over_time``; returns the Axes."""
    import seaborn as sns

    ax = plots.new_axes(ax, figsize=(10, 4))
    sns.lineplot(data=series, x="period_start", y="n_orders", hue=by, ax=ax, palette=plots.category_colours(series[by]) if by else None)
    ax.set(title="Orders over time" + (f" by {by.replace('_', ' ')}" if by else ""), xlabel="period start", ylabel="orders per period (count)")
    return ax
