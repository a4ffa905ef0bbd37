"""Acquisition cohorts: retention, revenue retention and LTV curves.

A customer's cohort is the period (day, week, month, quarter or year) of their
first purchase. A customer is *active* in a period when they made at least one
purchase (a row with a positive amount) in it; refunds (negative amounts) never
make a customer active or acquired, but they do count in net revenue. The
order-level aggregation is written with Ibis and runs in the backend (DuckDB
for a pandas input); only the small cohort-by-period result reaches pandas.
"""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd

from crm_analytics import plots
from crm_analytics.engine import backend_name
from crm_analytics.frames import TableLike, as_ibis, require_columns

PERIODS = {"D": "day", "W": "week", "M": "month", "Q": "quarter", "Y": "year"}
VALUES = ("customers", "revenue", "ltv")
LONG_COLUMNS = ["cohort_date", "period_number", "cohort_size", "n_active", "revenue_amount"]


def _check_options(period: str, value: str) -> None:
    if period not in PERIODS:
        raise ValueError(f"period must be one of {sorted(PERIODS)}, got {period!r}")
    if value not in VALUES:
        raise ValueError(f"value must be one of {list(VALUES)}, got {value!r}")


_WEEK_ORIGIN = pd.Timestamp("1969-12-29")  # the Monday before the Unix epoch: week 0 starts here


def _period_index(times, period: str):
    """Ibis expression: an integer period number (consecutive periods differ by one)."""
    if period in ("D", "W"):
        days = times.epoch_seconds() // 86400
        return days if period == "D" else (days + 3) // 7
    year = times.year()
    if period == "Y":
        return year
    if period == "Q":
        return year * 4 + (times.month() - 1) // 3
    return year * 12 + times.month() - 1


def _period_start(index: pd.Series, period: str) -> pd.Series:
    """Invert ``_period_index``: the first day of each period, as timestamps."""
    index = index.astype("int64")
    if period == "D":
        return pd.Timestamp("1970-01-01") + pd.to_timedelta(index, unit="D")
    if period == "W":
        return _WEEK_ORIGIN + pd.to_timedelta(index * 7, unit="D")
    per_year, months = {"Y": (1, 12), "Q": (4, 3), "M": (12, 1)}[period]
    return pd.to_datetime(pd.DataFrame({"year": index // per_year, "month": index % per_year * months + 1, "day": 1}))


def _cohort_expr(orders, *, customer_col: str, time_col: str, amount_col: str, period: str, group_cols: list[str],
                 with_revenue: bool = True):
    """Ibis expression: active customers and net revenue per (group,) cohort index and period number.

    Periods are integers (``_period_index``), which DuckDB groups and subtracts faster than dates.
    Without ``with_revenue`` only the purchases are read and ``revenue_amount`` is left out: the
    share-active matrix needs no more, and skipping refunds and sums makes it markedly cheaper.
    """
    keys = [customer_col, *group_cols]
    t = orders.select(*keys, period_index=_period_index(orders[time_col].cast("timestamp"), period), amount=orders[amount_col])
    if with_revenue:
        per = t.group_by([*keys, "period_index"]).aggregate(revenue_amount=t.amount.sum(), is_active=(t.amount > 0).any())
        active = per.filter(per.is_active)
    else:
        per = active = t.filter(t.amount > 0).select(*keys, "period_index").distinct()
    first = active.group_by(keys).aggregate(cohort_index=active.period_index.min())
    joined = per.join(first, keys)
    joined = joined.mutate(period_number=joined.period_index - joined.cohort_index)
    joined = joined.filter(joined.period_number >= 0)
    cells = joined.group_by([*group_cols, "cohort_index", "period_number"])
    if not with_revenue:
        return cells.aggregate(n_active=joined.count())
    return cells.aggregate(n_active=joined.is_active.sum(), revenue_amount=joined.revenue_amount.sum())


def cohort_table(
    orders: TableLike,
    *,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    period: str = "M",
    group_col: str | None = None,
) -> pd.DataFrame:
    """Tidy cohort activity: one row per (group,) acquisition cohort and period since acquisition.

    Parameters
    ----------
    orders : pandas.DataFrame or Ibis table
        One row per order or refund: ``customer_col``, ``time_col`` (timestamp),
        ``amount_col`` (money; negative for refunds) and, when given, ``group_col``
        (e.g. ``acquisition_channel``, constant per customer).
    period : {"D", "W", "M", "Q", "Y"}
        Cohort and activity period. Weeks start on Monday.
    group_col : str, optional
        Breakdown column: cohorts are formed within each group.

    Returns
    -------
    pandas.DataFrame
        Columns ``[group_col,] cohort_date, period_number, cohort_size, n_active, revenue_amount``
        and ``is_observed``: ``period_number`` counts periods since acquisition (0 = the
        acquisition period); ``n_active`` customers of the cohort active in it; ``revenue_amount``
        their net revenue (refunds subtracted), money. Cells after the last period with a purchase
        in the data have ``is_observed`` false and zero counts; observed periods without activity have zeros.
    """
    _check_options(period, "customers")
    group_cols = [group_col] if group_col else []
    require_columns(orders, [customer_col, time_col, amount_col, *group_cols], context="cohort_table(orders)")
    return _cohort_cells(orders, customer_col=customer_col, time_col=time_col, amount_col=amount_col, period=period, group_cols=group_cols)


def _cohort_cells(orders: TableLike, *, group_cols: list[str], period: str, with_revenue: bool = True, **columns: str) -> pd.DataFrame:
    """``cohort_table`` without the checks; ``with_revenue`` false leaves ``revenue_amount`` missing (NaN).

    Orders without a customer (anonymous orders) belong to no cohort and are left out.
    """
    table = as_ibis(orders)
    table = table.filter(table[columns["customer_col"]].notnull())
    long = None
    if not with_revenue and not group_cols and backend_name(table) == "duckdb":
        long = _active_cells_by_bitset(table, period=period, **columns)
    if long is None:
        long = _cohort_expr(table, period=period, group_cols=group_cols, with_revenue=with_revenue, **columns).to_pandas()
    return _complete_grid(long, group_cols, period)


_BITSET_PERIODS = 63  # periods one BIGINT bitset holds (the sign bit stays clear)


def _active_cells_by_bitset(orders, *, customer_col: str, time_col: str, amount_col: str, period: str) -> pd.DataFrame | None:
    """Active customers per cohort index and period number, with each customer's active periods as bits.

    The purchases are grouped once, by customer, into the first period and a BIGINT whose bit k
    says "active in period first + k"; summing each bit per cohort gives the counts. That avoids
    grouping into (customer, period) pairs and joining them back to the first periods, which is
    what makes the share-active matrix expensive at millions of orders. Returns None when the
    purchases span more than ``_BITSET_PERIODS`` periods (the caller then takes the general path).
    Columns: ``cohort_index, period_number, n_active`` (active cells only). DuckDB only: the
    Ibis PySpark compiler has no bitwise OR aggregate.
    """
    purchases = orders.filter(orders[amount_col] > 0)
    t = purchases.select(customer_col, period_index=_period_index(purchases[time_col].cast("timestamp"), period))
    bounds = t.aggregate(first=t.period_index.min(), last=t.period_index.max()).to_pandas().iloc[0]
    if pd.isna(bounds["first"]) or bounds["last"] - bounds["first"] >= _BITSET_PERIODS:
        return None
    first, n_periods = int(bounds["first"]), int(bounds["last"] - bounds["first"]) + 1
    offset = t.period_index - first
    per_customer = t.group_by(customer_col).aggregate(cohort_offset=offset.min(), bits=(ibis.literal(1, "int64") << offset).bit_or())
    # shifted right by the cohort's offset, bit j of a customer's set is period number j
    since_acquisition = per_customer.mutate(bits=per_customer.bits >> per_customer.cohort_offset)
    bit_sums = {f"n{j}": ((since_acquisition.bits >> j) & 1).sum() for j in range(n_periods)}
    wide = since_acquisition.group_by("cohort_offset").aggregate(**bit_sums).to_pandas()
    long = wide.melt(id_vars="cohort_offset", var_name="period_number", value_name="n_active")
    long = long[long["n_active"] > 0]
    return pd.DataFrame({
        "cohort_index": long["cohort_offset"].astype("int64") + first,
        "period_number": long["period_number"].str[1:].astype("int64"),
        "n_active": long["n_active"].astype("int64"),
    })


def _complete_grid(long: pd.DataFrame, group_cols: list[str], period: str) -> pd.DataFrame:
    """Cohort sizes and dates, and the missing (cohort, period) cells: zeros, flagged unobserved after the data ends."""
    columns = [*group_cols, *LONG_COLUMNS, "is_observed"]
    if long.empty:
        return pd.DataFrame(columns=columns)
    last_index = int((long["cohort_index"] + long["period_number"])[long["n_active"] > 0].max())
    sizes = long.loc[long["period_number"] == 0, [*group_cols, "cohort_index", "n_active"]].rename(columns={"n_active": "cohort_size"})
    n_periods = int(long["period_number"].max()) + 1
    grid = sizes.merge(pd.DataFrame({"period_number": np.arange(n_periods, dtype="int64")}), how="cross")
    long = long.astype({"period_number": "int64", "cohort_index": "int64"})
    out = grid.merge(long, on=[*group_cols, "cohort_index", "period_number"], how="left")
    out["n_active"] = out["n_active"].fillna(0).astype("int64")
    out["revenue_amount"] = out["revenue_amount"].fillna(0.0).astype("float64") if "revenue_amount" in out else np.nan
    out["cohort_size"] = out["cohort_size"].astype("int64")
    out["is_observed"] = out["cohort_index"] + out["period_number"] <= last_index
    out["cohort_date"] = _period_start(out["cohort_index"], period)
    return out.sort_values([*group_cols, "cohort_date", "period_number"]).reset_index(drop=True)[columns]


def _cell_values(long: pd.DataFrame, value: str, keys: list[str]) -> pd.Series:
    """The metric of each cell: share active, revenue relative to period 0, or cumulative revenue per customer."""
    if value == "customers":
        return long["n_active"] / long["cohort_size"]
    if value == "revenue":
        base = long.groupby(keys)["revenue_amount"].transform("first")
        return long["revenue_amount"] / base.where(base != 0)
    return long.groupby(keys)["revenue_amount"].cumsum() / long["cohort_size"]


def retention_matrix(
    orders: TableLike,
    *,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    period: str = "M",
    value: str = "customers",
) -> pd.DataFrame:
    """The cohort matrix: acquisition cohorts down, periods since acquisition across.

    Parameters
    ----------
    orders : pandas.DataFrame or Ibis table
        ``customer_col``, ``time_col`` (timestamp), ``amount_col`` (money; refunds negative).
    period : {"D", "W", "M", "Q", "Y"}
        Cohort and activity period.
    value : {"customers", "revenue", "ltv"}
        ``customers``: share of the cohort active in the period (0..1);
        ``revenue``: net revenue in the period relative to the cohort's acquisition-period revenue;
        ``ltv``: cumulative net revenue per cohort customer up to and including the period, money.

    Returns
    -------
    pandas.DataFrame
        Index ``cohort_date`` (period start), columns ``0, 1, 2, ...`` (periods since acquisition);
        cells after the end of the data are NaN.
    """
    _check_options(period, value)
    require_columns(orders, [customer_col, time_col, amount_col], context="retention_matrix(orders)")
    long = _cohort_cells(orders, customer_col=customer_col, time_col=time_col, amount_col=amount_col, period=period,
                         group_cols=[], with_revenue=value != "customers")
    long["value"] = _cell_values(long, value, ["cohort_date"]).where(long["is_observed"])
    matrix = long.pivot(index="cohort_date", columns="period_number", values="value")
    matrix.columns.name = "period_number"
    return matrix


def retention_curves(
    orders: TableLike,
    customers: TableLike | None = None,
    *,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    group_col: str = "acquisition_channel",
    period: str = "M",
    value: str = "customers",
) -> pd.DataFrame:
    """Retention (or LTV) curve per group, pooled over the cohorts observed at each period.

    Parameters
    ----------
    orders : pandas.DataFrame or Ibis table
        As for ``retention_matrix``; holds ``group_col`` itself when ``customers`` is None.
    customers : pandas.DataFrame or Ibis table, optional
        ``customer_col`` and ``group_col`` (one row per customer), joined to the orders.
        Customers missing there fall into the group ``"unknown"``.
    value : {"customers", "revenue", "ltv"}
        As for ``retention_matrix``.

    Returns
    -------
    pandas.DataFrame
        Columns ``group_col``, ``period_number``, ``n_cohorts``, ``n_customers`` (customers in the
        cohorts observed at that period) and ``value``: the pooled share active, revenue
        retention or cumulative revenue per customer.
    """
    _check_options(period, value)
    source = _with_group(orders, customers, customer_col=customer_col, group_col=group_col)
    long = cohort_table(source, customer_col=customer_col, time_col=time_col, amount_col=amount_col, period=period, group_col=group_col)
    long["cumulative_amount"] = long.groupby([group_col, "cohort_date"])["revenue_amount"].cumsum()
    long["base_amount"] = long.groupby([group_col, "cohort_date"])["revenue_amount"].transform("first")
    seen = long[long["is_observed"]]
    pooled = seen.groupby([group_col, "period_number"]).agg(
        n_cohorts=("cohort_date", "size"),
        n_customers=("cohort_size", "sum"),
        n_active=("n_active", "sum"),
        revenue_amount=("revenue_amount", "sum"),
        cumulative_amount=("cumulative_amount", "sum"),
        base_amount=("base_amount", "sum"),
    )
    numerator = {"customers": "n_active", "revenue": "revenue_amount", "ltv": "cumulative_amount"}[value]
    denominator = {"customers": "n_customers", "revenue": "base_amount", "ltv": "n_customers"}[value]
    pooled["value"] = pooled[numerator] / pooled[denominator].where(pooled[denominator] != 0)
    return pooled.reset_index()[[group_col, "period_number", "n_cohorts", "n_customers", "value"]]


def _with_group(orders: TableLike, customers: TableLike | None, *, customer_col: str, group_col: str):
    """Orders with ``group_col`` attached from ``customers`` (left join; missing groups become "unknown")."""
    if customers is None:
        require_columns(orders, [group_col], context="retention_curves(orders)")
        return orders
    require_columns(customers, [customer_col, group_col], context="retention_curves(customers)")
    o, c = as_ibis(orders), as_ibis(customers)
    if group_col in o.columns:
        o = o.drop(group_col)
    groups = c.select(customer_col, c[group_col].cast("string").name("_group"))
    joined = o.left_join(groups, customer_col).drop(f"{customer_col}_right")
    return joined.mutate(**{group_col: joined["_group"].fill_null(ibis.literal("unknown"))}).drop("_group")


def plot_cohort_heatmap(matrix: pd.DataFrame, *, ax=None, value_format: str = ".0%", title: str = "Retention by acquisition cohort"):
    """Heatmap of a ``retention_matrix`` result; cohorts labelled by their start date."""
    import seaborn as sns

    plots.set_style()
    ax = plots.new_axes(ax, figsize=(max(6, 0.55 * matrix.shape[1] + 2), max(3, 0.35 * matrix.shape[0] + 1.5)))
    labels = [pd.Timestamp(d).strftime("%Y-%m-%d") for d in matrix.index]
    sns.heatmap(matrix.set_axis(labels, axis=0), ax=ax, cmap=plots.PALETTE, annot=matrix.shape[1] <= 16,
                fmt=value_format, annot_kws={"size": 7}, cbar=True)
    ax.set(xlabel="periods since acquisition", ylabel="acquisition cohort", title=title)
    return ax


def plot_curves(curves: pd.DataFrame, *, group_col: str = "acquisition_channel", ax=None, ylabel: str = "share active",
                title: str = "Retention by acquisition channel"):
    """Line chart of a ``retention_curves`` result: one line per group."""
    plots.set_style()
    ax = plots.new_axes(ax)
    colours = plots.category_colours(curves[group_col])
    for name, part in curves.groupby(group_col):
        ax.plot(part["period_number"], part["value"], marker="o", markersize=3, label=str(name), color=colours.get(name, plots.OTHER_COLOUR))
    ax.set(xlabel="periods since acquisition", ylabel=ylabel, title=title)
    ax.legend(title=group_col, fontsize=8)
    return ax
