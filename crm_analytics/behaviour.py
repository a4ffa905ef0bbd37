"""Purchase behaviour: time between purchases, when people buy, how many come back, what is bought together.

A *purchase* is an order row with ``order_amount >= 0``; refunds (negative
amounts) are left out of every measure here. Only rows at or before ``as_of``
count. Order-level work is written with Ibis and runs in the input's backend.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from crm_analytics import plots
from crm_analytics.frames import TableLike, as_ibis, as_timestamp, require_columns

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _purchases(orders: TableLike, *, as_of, columns: list[str], time_col: str, amount_col: str, context: str) -> ir.Table:
    """Purchases (amount >= 0) at or before ``as_of`` as an Ibis table, after checking ``columns``."""
    require_columns(orders, columns, context=context)
    table = as_ibis(orders)
    cutoff = ibis.literal(as_timestamp(as_of).to_pydatetime(), type="timestamp")
    return table.filter((table[time_col] <= cutoff) & (table[amount_col] >= 0))


def inter_purchase_times(
    orders: TableLike,
    *,
    as_of,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
) -> pd.DataFrame:
    """Time from each repeat purchase back to the same customer's previous purchase.

    Returns
    -------
    pandas.DataFrame
        One row per purchase that is not a customer's first: ``customer_col``,
        ``order_time``, ``inter_purchase_days`` (float, days; 0 for two orders at
        the same moment), sorted by customer and time.
    """
    purchases = _purchases(orders, as_of=as_of, columns=[customer_col, time_col, amount_col], time_col=time_col,
                           amount_col=amount_col, context="inter_purchase_times(orders)")
    purchases = purchases.filter(purchases[customer_col].notnull())
    window = ibis.window(group_by=purchases[customer_col], order_by=purchases[time_col])
    seconds = purchases[time_col].epoch_seconds()
    gaps = purchases.select(
        purchases[customer_col],
        order_time=purchases[time_col],
        inter_purchase_days=(seconds - seconds.lag().over(window)) / 86_400,
    )
    result = gaps.filter(gaps.inter_purchase_days.notnull()).order_by([customer_col, "order_time"]).to_pandas()
    result["inter_purchase_days"] = result["inter_purchase_days"].astype("float64")
    return result


def inter_purchase_summary(times: pd.DataFrame) -> pd.DataFrame:
    """Distribution of ``inter_purchase_days``: count, mean and the 10/25/50/75/90 % quantiles (days), one row."""
    require_columns(times, ["inter_purchase_days"], context="inter_purchase_summary(times)")
    days = times["inter_purchase_days"]
    quantiles = days.quantile([0.1, 0.25, 0.5, 0.75, 0.9]) if len(days) else pd.Series([np.nan] * 5, index=[0.1, 0.25, 0.5, 0.75, 0.9])
    row = {"n_repeat_orders": len(days), "mean_days": days.mean()}
    row |= {f"p{int(q * 100)}_days": v for q, v in quantiles.items()}
    return pd.DataFrame([row])


def weekday_hour(
    orders: TableLike,
    *,
    as_of,
    time_col: str = "order_time",
    amount_col: str = "order_amount",
) -> pd.DataFrame:
    """Purchases and revenue by day of week and hour of day (local business time).

    Returns
    -------
    pandas.DataFrame
        All 168 cells: ``day_of_week`` (0 = Monday), ``day_name``, ``hour`` (0-23),
        ``n_orders``, ``revenue_amount`` (dataset currency), ``order_pct`` (% of all purchases).
    """
    purchases = _purchases(orders, as_of=as_of, columns=[time_col, amount_col], time_col=time_col,
                           amount_col=amount_col, context="weekday_hour(orders)")
    cells = (
        purchases.group_by(day_of_week=purchases[time_col].day_of_week.index(), hour=purchases[time_col].hour())
        .aggregate(n_orders=purchases.count(), revenue_amount=purchases[amount_col].sum())
        .to_pandas()
    )
    grid = pd.MultiIndex.from_product([range(7), range(24)], names=["day_of_week", "hour"])
    table = cells.astype({"day_of_week": "int64", "hour": "int64"}).set_index(["day_of_week", "hour"]).reindex(grid, fill_value=0).reset_index()
    table["n_orders"] = table["n_orders"].astype("int64")
    table["revenue_amount"] = table["revenue_amount"].astype("float64")
    table.insert(1, "day_name", [DAY_NAMES[d] for d in table["day_of_week"]])
    table["order_pct"] = 100 * table["n_orders"] / max(int(table["n_orders"].sum()), 1)
    return table


def repeat_purchase_rate(
    orders: TableLike,
    *,
    as_of,
    by: str | None = None,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
) -> pd.DataFrame:
    """Share of purchasing customers who bought at least twice, overall or by a first-purchase attribute.

    Parameters
    ----------
    by
        Optional order column (e.g. ``channel``); each customer is grouped by its
        value on their *first* purchase.

    Returns
    -------
    pandas.DataFrame
        One row (or one per group): ``by`` when given, ``n_customers``,
        ``n_repeat_customers``, ``repeat_purchase_pct`` (%).
    """
    columns = [customer_col, time_col, amount_col] + ([by] if by else [])
    purchases = _purchases(orders, as_of=as_of, columns=columns, time_col=time_col, amount_col=amount_col,
                           context="repeat_purchase_rate(orders)")
    purchases = purchases.filter(purchases[customer_col].notnull())
    metrics = {"n_orders": purchases.count()}
    if by:
        metrics[by] = purchases[by].argmin(purchases[time_col])
    per_customer = purchases.group_by(customer_col).aggregate(**metrics)
    counts = {"n_customers": per_customer.count(), "n_repeat_customers": (per_customer.n_orders >= 2).sum()}
    summary = per_customer.group_by(by).aggregate(**counts) if by else per_customer.aggregate(**counts)
    result = summary.to_pandas()
    result["n_repeat_customers"] = result["n_repeat_customers"].fillna(0).astype("int64")
    result["repeat_purchase_pct"] = 100 * result["n_repeat_customers"] / result["n_customers"].where(result["n_customers"] > 0)
    return result.sort_values(by).reset_index(drop=True) if by else result


def basket_affinity(
    order_items: TableLike,
    *,
    products: TableLike | None = None,
    level: str = "category",
    min_support: float = 0.01,
    order_col: str = "order_id",
    product_col: str = "product_id",
) -> pd.DataFrame:
    """Market-basket affinity of item pairs: support, confidence and lift.

    A basket is an order with at least one line of positive quantity; an item is
    a product (``level="product"``) or its category (``level="category"``, needs
    ``products`` with ``product_id`` and ``category``). Each item counts once per
    basket. For items A and B over N baskets:
    ``support = baskets with both / N``, ``confidence_a_to_b = both / baskets with A``,
    ``lift = support / (support(A) * support(B))`` (1 = independent, > 1 = bought together more often).

    Parameters
    ----------
    min_support
        Keep pairs whose support is at least this (fraction of baskets, 0-1).

    Returns
    -------
    pandas.DataFrame
        One row per unordered pair (``item_a < item_b``): ``item_a``, ``item_b``,
        ``n_baskets`` (with both), ``support``, ``support_a``, ``support_b``,
        ``confidence_a_to_b``, ``confidence_b_to_a``, ``lift``; sorted by lift, largest first.
    """
    if level not in ("product", "category"):
        raise ValueError(f"level must be 'product' or 'category', got {level!r}")
    if not 0 <= min_support <= 1:
        raise ValueError(f"min_support is a fraction of baskets in [0, 1], got {min_support!r}")
    require_columns(order_items, [order_col, product_col, "quantity"], context="basket_affinity(order_items)")
    items = as_ibis(order_items)
    items = items.filter(items.quantity > 0)
    if level == "category":
        if products is None:
            raise ValueError("basket_affinity(level='category') needs the products table (product_id, category)")
        require_columns(products, ["product_id", "category"], context="basket_affinity(products)")
        catalogue = as_ibis(products).select(product_id_=ibis._.product_id, item=ibis._.category)
        items = items.join(catalogue, items[product_col] == catalogue.product_id_).select(basket=ibis._[order_col], item=ibis._.item)
    else:
        items = items.select(basket=items[order_col], item=items[product_col])
    baskets = items.filter(items.item.notnull()).distinct()
    n_baskets = baskets.basket.nunique().to_pyarrow().as_py()
    if not n_baskets:
        return pd.DataFrame(columns=["item_a", "item_b", "n_baskets", "support", "support_a", "support_b", "confidence_a_to_b", "confidence_b_to_a", "lift"])
    singles = baskets.group_by("item").aggregate(n=baskets.count())
    right = baskets.rename(basket_b="basket", item_b="item")
    pairs = baskets.join(right, (baskets.basket == right.basket_b) & (baskets.item < right.item_b))
    pair_counts = pairs.group_by(item_a=pairs.item, item_b=pairs.item_b).aggregate(n_baskets=pairs.count())
    pair_counts = pair_counts.filter(pair_counts.n_baskets >= min_support * n_baskets)
    result = pair_counts.to_pandas()
    single = singles.to_pandas().set_index("item")["n"]
    result["support"] = result["n_baskets"] / n_baskets
    result["support_a"] = result["item_a"].map(single).to_numpy() / n_baskets
    result["support_b"] = result["item_b"].map(single).to_numpy() / n_baskets
    result["confidence_a_to_b"] = result["support"] / result["support_a"]
    result["confidence_b_to_a"] = result["support"] / result["support_b"]
    result["lift"] = result["support"] / (result["support_a"] * result["support_b"])
    result["n_baskets"] = result["n_baskets"].astype("int64")
    return result.sort_values(["lift", "item_a", "item_b"], ascending=[False, True, True], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- plots


def plot_inter_purchase(times: pd.DataFrame, *, max_days: float = 365, ax=None):
    """Histogram of ``inter_purchase_days`` up to ``max_days``, with the median marked."""
    require_columns(times, ["inter_purchase_days"], context="plot_inter_purchase(times)")
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(8, 4))
    days = times["inter_purchase_days"]
    ax.hist(days[days <= max_days], bins=60)
    if len(days):
        median = float(days.median())
        ax.axvline(median, color=plots.STATUS_COLOURS["red"], linestyle="--", label=f"median {median:.0f} days")
        ax.legend()
    ax.set_xlabel("days since the previous purchase")
    ax.set_ylabel("repeat purchases")
    ax.set_title("Inter-purchase time")
    return ax


def plot_weekday_hour(table: pd.DataFrame, *, value: str = "n_orders", ax=None):
    """Heatmap of ``value`` by day of week (rows) and hour (columns) from ``weekday_hour``."""
    require_columns(table, ["day_of_week", "hour", value], context="plot_weekday_hour(table)")
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(11, 3.8))
    grid = table.pivot(index="day_of_week", columns="hour", values=value).reindex(index=range(7), columns=range(24), fill_value=0)
    grid.index = list(DAY_NAMES)
    import seaborn as sns

    sns.heatmap(grid, cmap=plots.PALETTE, ax=ax, cbar_kws={"label": value.replace("_", " ")})
    ax.set_xlabel("hour of day")
    ax.set_ylabel("")
    ax.set_title(f"{value.replace('_', ' ').capitalize()} by day of week and hour")
    return ax


def plot_basket_lift(pairs: pd.DataFrame, *, ax=None):
    """Symmetric heatmap of pair lift (output of ``basket_affinity``); pairs below the support threshold are blank."""
    require_columns(pairs, ["item_a", "item_b", "lift"], context="plot_basket_lift(pairs)")
    plots.set_style()
    items = sorted(set(pairs["item_a"]) | set(pairs["item_b"]))
    ax = plots.new_axes(ax, figsize=(1.5 + 0.55 * len(items), 1 + 0.45 * len(items)))
    both = pd.concat([pairs[["item_a", "item_b", "lift"]], pairs.rename(columns={"item_a": "item_b", "item_b": "item_a"})[["item_a", "item_b", "lift"]]])
    grid = both.pivot(index="item_a", columns="item_b", values="lift").reindex(index=items, columns=items)
    import seaborn as sns

    sns.heatmap(grid, cmap="vlag", center=1.0, annot=len(items) <= 14, fmt=".1f", ax=ax, cbar_kws={"label": "lift"})
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title("Bought together: lift of item pairs")
    return ax
