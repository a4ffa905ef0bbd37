"""Purchase behaviour: time between purchases, when people buy, how many come back, what is bought together.

A *purchase* is an order row with ``order_amount >= 0``; refunds (negative
amounts) are left out of every measure here. Only rows at or before ``as_of``
count. Order-level work is written with Ibis and runs in the input's backend.
Customer-level measures (inter-purchase times, repeat rates) leave out orders
without a customer; baskets keep them and leave out non-merchandise lines
(``exclude_products``: the dataset's ``non_merchandise_codes``).
"""

from __future__ import annotations

from collections.abc import Iterable

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


# A basket-pair table needs this many baskets. A pair's support is a share of baskets: with fewer than
# 100, one basket moves it by a whole percentage point or more, and lift (support over the product of two
# small shares) swings by multiples, so the pairs that come first are chance.
MIN_BASKETS = 100

PAIR_COLUMNS = ["item_a", "item_b", "n_baskets", "support", "support_a", "support_b", "confidence_a_to_b", "confidence_b_to_a", "lift"]


def _basket_items(
    order_items: TableLike,
    *,
    products: TableLike | None,
    level: str,
    exclude_products: Iterable[str],
    order_col: str,
    product_col: str,
    context: str,
) -> ir.Table:
    """Distinct ``(basket, item)`` rows: lines of positive quantity, excluded products left out, items at ``level``."""
    if level not in ("product", "category"):
        raise ValueError(f"level must be 'product' or 'category', got {level!r}")
    require_columns(order_items, [order_col, product_col, "quantity"], context=f"{context}(order_items)")
    items = as_ibis(order_items)
    items = items.filter(items.quantity > 0)
    excluded = sorted({str(code) for code in exclude_products})
    if excluded:
        items = items.filter(~items[product_col].cast("string").isin(excluded))
    if level == "category":
        if products is None:
            raise ValueError(f"{context}(level='category') needs the products table (product_id, category)")
        require_columns(products, ["product_id", "category"], context=f"{context}(products)")
        catalogue = as_ibis(products).select(product_id_=ibis._.product_id, item=ibis._.category)
        items = items.join(catalogue, items[product_col] == catalogue.product_id_).select(basket=ibis._[order_col], item=ibis._.item)
    else:
        items = items.select(basket=items[order_col], item=items[product_col])
    return items.filter(items.item.notnull()).distinct()


def basket_summary(
    order_items: TableLike,
    *,
    products: TableLike | None = None,
    level: str = "category",
    exclude_products: Iterable[str] = (),
    order_col: str = "order_id",
    product_col: str = "product_id",
) -> pd.DataFrame:
    """What ``basket_affinity`` (same parameters) works on: one row with ``n_baskets`` (orders with a line it
    counts), ``n_items`` (distinct products or categories) and ``n_multi_item_baskets`` (baskets holding two items or more)."""
    baskets = _basket_items(order_items, products=products, level=level, exclude_products=exclude_products,
                            order_col=order_col, product_col=product_col, context="basket_summary")
    sizes = baskets.group_by("basket").aggregate(n=baskets.count())
    counts = sizes.aggregate(n_baskets=sizes.count(), n_multi_item_baskets=(sizes.n >= 2).sum()).to_pandas().iloc[0]
    n_items = baskets.item.nunique().to_pyarrow().as_py()
    return pd.DataFrame({"n_baskets": [int(counts["n_baskets"])], "n_items": [int(n_items or 0)],
                         "n_multi_item_baskets": [int(counts["n_multi_item_baskets"] or 0)]})


def no_pairs_message(summary: pd.DataFrame, *, min_support: float, minimum: int = MIN_BASKETS, min_pair_baskets: int = 1) -> str:
    """Why a basket-pair table is empty, for the report and the empty chart (``summary`` from ``basket_summary``).

    ``too little data (n = 40 baskets, needs 100)`` below ``minimum`` baskets; ``only 1 item at this level,
    nothing to pair (n baskets = ...)`` when there is nothing to pair (one category of merchandise); else ``no pair reaches the minimum support of 0.20% (n baskets = 1,204)``.
    """
    require_columns(summary, ["n_baskets", "n_items"], context="no_pairs_message(summary)")
    n_baskets, n_items = int(summary["n_baskets"].iloc[0]), int(summary["n_items"].iloc[0])
    if n_baskets < minimum:
        return f"too little data (n = {n_baskets:,} baskets, needs {minimum:,})"
    if n_items < 2:
        return f"only {n_items} item at this level, nothing to pair (n baskets = {n_baskets:,})"
    floor = f" and {min_pair_baskets:,} baskets" if min_pair_baskets > 1 else ""
    return f"no pair reaches the minimum support of {min_support:.2%}{floor} (n baskets = {n_baskets:,})"


def basket_affinity(
    order_items: TableLike,
    *,
    products: TableLike | None = None,
    level: str = "category",
    min_support: float = 0.01,
    exclude_products: Iterable[str] = (),
    min_baskets: int = 0,
    min_pair_baskets: int = 1,
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
    exclude_products
        Product ids left out before baskets are formed (the dataset's ``non_merchandise_codes``:
        postage, fees, adjustments); an order holding nothing else is no basket.
    min_baskets
        Fewer baskets than this give no pairs (too little data; the notebooks pass ``MIN_BASKETS``).
    min_pair_baskets
        Keep only pairs found in at least this many baskets, whatever ``min_support`` allows: a pair seen
        once has a huge lift by chance (and a rare pair can single out its buyer).

    Returns
    -------
    pandas.DataFrame
        One row per unordered pair (``item_a < item_b``): ``item_a``, ``item_b``,
        ``n_baskets`` (with both), ``support``, ``support_a``, ``support_b``,
        ``confidence_a_to_b``, ``confidence_b_to_a``, ``lift``; sorted by lift, largest first.
        Empty (same columns) when no pair reaches ``min_support`` and ``min_pair_baskets``, or there are
        fewer than ``min_baskets`` baskets (``no_pairs_message`` says which).
    """
    if not 0 <= min_support <= 1:
        raise ValueError(f"min_support is a fraction of baskets in [0, 1], got {min_support!r}")
    baskets = _basket_items(order_items, products=products, level=level, exclude_products=exclude_products,
                            order_col=order_col, product_col=product_col, context="basket_affinity")
    n_baskets = baskets.basket.nunique().to_pyarrow().as_py()
    if not n_baskets or n_baskets < min_baskets:
        return _empty_pairs()
    singles = baskets.group_by("item").aggregate(n=baskets.count())
    right = baskets.rename(basket_b="basket", item_b="item")
    pairs = baskets.join(right, (baskets.basket == right.basket_b) & (baskets.item < right.item_b))
    pair_counts = pairs.group_by(item_a=pairs.item, item_b=pairs.item_b).aggregate(n_baskets=pairs.count())
    pair_counts = pair_counts.filter(pair_counts.n_baskets >= max(min_support * n_baskets, min_pair_baskets))
    result = pair_counts.to_pandas()
    if result.empty:
        return _empty_pairs()
    single = singles.to_pandas().set_index("item")["n"]
    result["support"] = result["n_baskets"] / n_baskets
    result["support_a"] = result["item_a"].map(single).to_numpy() / n_baskets
    result["support_b"] = result["item_b"].map(single).to_numpy() / n_baskets
    result["confidence_a_to_b"] = result["support"] / result["support_a"]
    result["confidence_b_to_a"] = result["support"] / result["support_b"]
    result["lift"] = result["support"] / (result["support_a"] * result["support_b"])
    result["n_baskets"] = result["n_baskets"].astype("int64")
    return result.sort_values(["lift", "item_a", "item_b"], ascending=[False, True, True], kind="stable").reset_index(drop=True)


def _empty_pairs() -> pd.DataFrame:
    """The ``basket_affinity`` result without rows, its columns typed."""
    types = {"item_a": "object", "item_b": "object", "n_baskets": "int64"}
    return pd.DataFrame({c: pd.Series([], dtype=types.get(c, "float64")) for c in PAIR_COLUMNS})


# --------------------------------------------------------------------------- plots


def plot_inter_purchase(times: pd.DataFrame, *, max_days: float = 365, ax=None):
    """Histogram of ``inter_purchase_days`` up to ``max_days``, with the median marked."""
    require_columns(times, ["inter_purchase_days"], context="plot_inter_purchase(times)")
    plots.set_style()
    days = times["inter_purchase_days"]
    if days.empty:
        return plots.empty_state(ax, "no customer has a repeat purchase yet (n repeat purchases = 0)", title="Inter-purchase time")
    ax = plots.new_axes(ax, figsize=(8, 4))
    ax.hist(days[days <= max_days], bins=60)
    if len(days):
        median = float(days.median())
        ax.axvline(median, color=plots.STATUS_COLOURS["red"], linestyle="--", label=f"median {median:.0f} days")
        ax.legend()
    ax.set_xlabel("days since the previous purchase")
    ax.set_ylabel("repeat purchases")
    ax.set_title(f"Inter-purchase time: half of repeat purchases come within {float(days.median()):.0f} days")
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
    ax.set_xlabel("hour of day (business time zone)")
    ax.set_ylabel("day of week")
    ax.set_title(f"{value.replace('_', ' ').capitalize()} by day of week and hour")
    return ax


def plot_basket_lift(pairs: pd.DataFrame, *, ax=None, empty_message: str = "no pair reaches the minimum support"):
    """Symmetric heatmap of pair lift (output of ``basket_affinity``); pairs below the support threshold are blank.

    Without pairs, an empty state says ``empty_message`` (see ``no_pairs_message``).
    """
    require_columns(pairs, ["item_a", "item_b", "lift"], context="plot_basket_lift(pairs)")
    plots.set_style()
    if pairs.empty:
        return plots.empty_state(ax, empty_message, title="Bought together: lift of item pairs")
    items = sorted(set(pairs["item_a"]) | set(pairs["item_b"]))
    ax = plots.new_axes(ax, figsize=(1.5 + 0.55 * len(items), 1 + 0.45 * len(items)))
    both = pd.concat([pairs[["item_a", "item_b", "lift"]], pairs.rename(columns={"item_a": "item_b", "item_b": "item_a"})[["item_a", "item_b", "lift"]]])
    grid = both.pivot(index="item_a", columns="item_b", values="lift").reindex(index=items, columns=items)
    import seaborn as sns

    sns.heatmap(grid, cmap="vlag", center=1.0, annot=len(items) <= 14, fmt=".1f", ax=ax, cbar_kws={"label": "lift (x times as often as by chance)"})
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title("Bought together: lift of item pairs")
    return ax
