"""Customer segmentation: RFM scores and named segments, value tiers, clusters, segment mixes, action lists.

Glossary (one meaning per word in this module):

recency_days
    Whole days elapsed from a customer's last *purchase* order to ``as_of``
    (``floor((as_of - last_order_time) / 1 day)``); an order exactly at ``as_of``
    gives 0. This is RFM recency, not the BG/NBD "recency" of ``crm_analytics.clv``
    (time between first and last purchase).
frequency
    Number of purchase orders at or before ``as_of`` (the first one included;
    same-day orders count separately). Refund rows are not purchases.
monetary
    Net revenue at or before ``as_of``: the sum of ``order_amount`` over purchases
    *and* refunds (refunds are negative amounts), in the dataset currency.
purchase / refund
    A row with ``order_amount >= 0`` is a purchase; a row with a negative amount
    is a refund. The sign is used, not ``is_refund``, so sources without that
    column behave the same.

Order-level aggregation is written with Ibis and runs in the backend of the
input (DuckDB for the warehouse and for pandas input); scoring, segment maps and
models then work on the customer-level result in pandas / NumPy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, pairwise_distances_chunked, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from crm_analytics import background, plots
from crm_analytics.customer_features import ticket_features
from crm_analytics.frames import TableLike, as_ibis, as_timestamp, exact_sum, require_columns

# --------------------------------------------------------------------------- RFM

SEGMENTS: tuple[str, ...] = (
    "Champions",
    "Loyal Customers",
    "Potential Loyalist",
    "New Customers",
    "Promising",
    "Need Attention",
    "About To Sleep",
    "At Risk",
    "Can't Lose Them",
    "Lost",
)

# The segment of each cell of the R x FM grid: rows r_score 1..5, columns fm_score 1..5.
SEGMENT_GRID = np.array(
    [
        # fm: 1            2                  3                  4                  5
        ["Lost", "Lost", "At Risk", "At Risk", "Can't Lose Them"],  # r = 1
        ["Lost", "Lost", "At Risk", "At Risk", "Can't Lose Them"],  # r = 2
        ["About To Sleep", "About To Sleep", "Need Attention", "Loyal Customers", "Loyal Customers"],  # r = 3
        ["Promising", "Potential Loyalist", "Potential Loyalist", "Loyal Customers", "Loyal Customers"],  # r = 4
        ["New Customers", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"],  # r = 5
    ],
    dtype=object,
)

_SEGMENT_CODES = np.vectorize(SEGMENTS.index)(SEGMENT_GRID).astype(np.int8)

SEGMENT_ACTIONS: dict[str, str] = {
    "Champions": "Reward them: early access, loyalty perks; ask for reviews and referrals",
    "Loyal Customers": "Upsell higher-value products; invite to the membership programme",
    "Potential Loyalist": "Offer membership; personalised recommendations to build the habit",
    "New Customers": "Onboarding series; incentive for the second purchase",
    "Promising": "Brand content and a small first-repeat offer (e.g. free delivery)",
    "Need Attention": "Limited-time offer based on past purchases",
    "About To Sleep": "Reactivate with popular products and a time-limited discount",
    "At Risk": "Personalised win-back message with a renewal offer",
    "Can't Lose Them": "Win back personally: service call, new products, strong offer",
    "Lost": "Low-cost reactivation campaign; otherwise exclude from paid campaigns",
}

RFM_COLUMNS = ("recency_days", "frequency", "monetary", "r_score", "f_score", "m_score", "rfm_segment")


def _check_n_bins(n_bins: int) -> None:
    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")


def rfm_totals(
    orders: TableLike,
    *,
    as_of,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
) -> ir.Table:
    """Return the Ibis expression of the per-customer R/F/M inputs (not executed).

    Orders after ``as_of`` and rows without a customer id are ignored. Customers
    whose rows up to ``as_of`` are all refunds have no purchase and are left out.

    Parameters
    ----------
    orders
        One row per order or refund with ``customer_col``, ``time_col`` (timestamp)
        and ``amount_col`` (money; negative for refunds).
    as_of
        Timestamp or ISO string; orders with ``time_col <= as_of`` count.

    Returns
    -------
    ibis.Table
        ``customer_col``, ``last_order_time`` (timestamp of the last purchase),
        ``frequency`` (purchase orders), ``monetary`` (net revenue, dataset currency).
    """
    require_columns(orders, [customer_col, time_col, amount_col], context="rfm(orders)")
    table = as_ibis(orders)
    cutoff = ibis.literal(as_timestamp(as_of).to_pydatetime(), type="timestamp")
    counted = table.filter((table[time_col] <= cutoff) & table[customer_col].notnull())
    is_purchase = counted[amount_col] >= 0
    totals = counted.group_by(customer_col).aggregate(
        last_order_time=counted[time_col].max(where=is_purchase),
        frequency=counted.count(where=is_purchase),  # COUNT(*) FILTER: cheaper than a sum of casts
        monetary=exact_sum(counted[amount_col]),  # the same value on every run (a parallel float sum is not)
    )
    return totals.filter(totals.frequency > 0)


# Customer numbers spanning at most 2**22 values are grouped by DuckDB in an array indexed by the number
# (its "perfect hash" aggregate) rather than a hash table: the same groups, in about half the time at
# 1M customers. DuckDB's default allows 2**12 values; the array takes memory in proportion to the range
# (per thread), so the range stays bounded.
PERFECT_HASH_BITS = 22


@contextmanager
def _duckdb_perfect_hash_groups(expression: ir.Expr, bits: int = PERFECT_HASH_BITS) -> Iterator[None]:
    """While executing ``expression``, let DuckDB group integer keys of a range up to ``2**bits`` by array.

    Only a performance setting of the expression's DuckDB connection (``perfect_ht_threshold``), raised
    for the duration and restored afterwards; results are the same either way. Other backends, and a
    connection already set higher, are left alone.
    """
    backend = ibis.get_backend(expression)
    connection = getattr(backend, "con", None) if getattr(backend, "name", "") == "duckdb" else None
    if connection is None:
        yield
        return
    (previous,) = connection.execute("SELECT current_setting('perfect_ht_threshold')").fetchone()
    if int(previous) >= bits:
        yield
        return
    connection.execute(f"SET perfect_ht_threshold = {int(bits)}")
    try:
        yield
    finally:
        connection.execute(f"SET perfect_ht_threshold = {int(previous)}")


def quantile_scores(values, *, n_bins: int = 5, higher_is_better: bool = True) -> np.ndarray:
    """Score values 1..``n_bins`` by quantile bin of their rank; equal values always get equal scores.

    ``score = 1 + floor(n_bins * below / n)``, where ``below`` is the number of
    values strictly worse than this one (the "min" rank, 0-based) and ``n`` the
    number of values. The best distinct value therefore scores ``n_bins`` only when
    enough values lie below it: when one value is shared by most customers (e.g.
    one order), all of them get the same low score and higher bins may stay empty.

    Parameters
    ----------
    values
        1-d array-like of numbers, no missing values.
    n_bins
        Number of score levels (5 for the classic RFM grid).
    higher_is_better
        ``False`` scores small values high (recency).

    Returns
    -------
    numpy.ndarray of int8, the scores in input order.
    """
    _check_n_bins(n_bins)
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros(0, dtype=np.int8)
    below = _count_worse(array if higher_is_better else -array)
    return (1 + (below * n_bins) // array.size).astype(np.int8)


def _count_worse(keyed: np.ndarray) -> np.ndarray:
    """For each value, how many values are strictly smaller (the 0-based "min" rank)."""
    if np.issubdtype(keyed.dtype, np.integer):
        low, high = int(keyed.min()), int(keyed.max())
        if high - low <= 4 * keyed.size:  # small integer range (days, order counts): counting, no sort
            counts = np.bincount(keyed - low)
            return (np.cumsum(counts) - counts)[keyed - low]
    keyed = keyed.astype(np.float64)
    if np.isnan(keyed).any():
        raise ValueError("quantile_scores: values must not contain missing values")
    order = np.argsort(keyed)  # any sort will do: equal values end up in one run either way
    ordered = keyed[order]
    starts = np.empty(keyed.size, dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    first_of_run = np.maximum.accumulate(np.where(starts, np.arange(keyed.size), 0))
    below = np.empty(keyed.size, dtype=np.int64)
    below[order] = first_of_run
    return below


def _five_level(scores: np.ndarray, n_bins: int) -> np.ndarray:
    """Map scores 1..n_bins linearly onto 1..5 (``1 + round((score - 1) * 4 / (n_bins - 1))``, halves up).

    The lowest score stays 1 and the highest becomes 5 for every ``n_bins``, so the lowest frequency
    score (one order) is always the grid's lowest column.
    """
    steps = n_bins - 1
    return 1 + ((scores.astype(np.int16) - 1) * 8 + steps) // (2 * steps)


def _grid_cells(r_score, f_score, m_score, *, n_bins: int, frequency=None) -> tuple[np.ndarray, np.ndarray]:
    """The (R, FM) cell, each 1..5, of every customer on the segment grid.

    ``fm = floor((f_score + m_score + 1) / 2)`` on the 1..5 scale; a one-time buyer (``frequency`` 1)
    is put in the FM = 1 column whatever they spent: frequency 1 is the lowest frequency there is, and
    the segments of the other columns (Potential Loyalist, Need Attention, At Risk...) describe
    customers who bought more than once.
    """
    r = _five_level(np.asarray(r_score), n_bins)
    fm = _five_level((np.asarray(f_score, dtype=np.int16) + np.asarray(m_score, dtype=np.int16) + 1) // 2, n_bins)
    if frequency is not None:
        fm = np.where(np.asarray(frequency) <= 1, 1, fm)
    return r, fm


def segment_names(r_score, f_score, m_score, *, n_bins: int = 5, frequency=None) -> pd.Categorical:
    """Return the named RFM segment of each (r, f, m) score triple.

    The map is the widely used R x FM grid on 1-5 scores, where
    ``fm_score = floor((f_score + m_score + 1) / 2)`` (mean of F and M, halves rounded up):

    ==================  =================  ==================
    segment             r_score            fm_score
    ==================  =================  ==================
    Champions           5                  4-5
    Loyal Customers     3-4                4-5
    Potential Loyalist  4-5                2-3
    New Customers       5                  1
    Promising           4                  1
    Need Attention      3                  3
    About To Sleep      3                  1-2
    At Risk             1-2                3-4
    Can't Lose Them     1-2                5
    Lost                1-2                1-2
    ==================  =================  ==================

    (Other maps call the last cell "Hibernating".) With ``n_bins`` other than 5
    each score is first mapped linearly onto 1-5 (lowest to 1, highest to 5).

    One-time buyers: when ``frequency`` (purchase orders per customer) is given, a customer with a
    single purchase is placed in the fm = 1 column whatever they spent, so they are New Customers,
    Promising, About To Sleep or Lost, never Potential Loyalist (nor Need Attention or At Risk, which
    describe repeat buyers). ``rfm`` always passes it.

    Returns
    -------
    pandas.Categorical with categories ``SEGMENTS`` in that order.
    """
    _check_n_bins(n_bins)
    r, fm = _grid_cells(r_score, f_score, m_score, n_bins=n_bins, frequency=frequency)
    return pd.Categorical.from_codes(_SEGMENT_CODES[r - 1, fm - 1], categories=list(SEGMENTS))


def rfm(
    orders: TableLike,
    *,
    as_of,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    n_bins: int = 5,
) -> pd.DataFrame:
    """Score every customer on recency, frequency and monetary value and name their segment.

    Refunds: ``monetary`` is net revenue (purchases plus the negative refund
    amounts); ``frequency`` counts purchase orders only; recency runs from the
    last purchase, so a late refund does not make a customer "recent". A customer
    with only refunds up to ``as_of`` has no row. Orders after ``as_of`` are ignored,
    and so are rows without a customer id (anonymous sales).

    Scores are quantile bins of the customers' ranks, ``1 + floor(n_bins * below / n)``
    with ``below`` the number of customers strictly worse (see ``quantile_scores``):
    ties get equal scores. Low recency scores high (``r_score``); high frequency and
    monetary score high. Segments: see ``segment_names`` for the score intervals.

    Parameters
    ----------
    orders
        pandas DataFrame or Ibis table with ``customer_col`` (string id),
        ``time_col`` (timestamp) and ``amount_col`` (money in the dataset currency; negative for refunds).
    as_of
        Date or timestamp (ISO string accepted); the snapshot moment. Orders with
        ``time_col <= as_of`` count.
    n_bins
        Number of score levels, default 5.

    Returns
    -------
    pandas.DataFrame
        One row per customer with a purchase, sorted by ``customer_col``:
        ``customer_col``, ``recency_days`` (int, days), ``frequency`` (int, orders),
        ``monetary`` (float, dataset currency), ``r_score``, ``f_score``, ``m_score`` (int 1..n_bins),
        ``rfm_segment`` (categorical, ``SEGMENTS``).
    """
    _check_n_bins(n_bins)
    stamp = as_timestamp(as_of)
    totals = rfm_totals(orders, as_of=stamp, customer_col=customer_col, time_col=time_col, amount_col=amount_col)
    ordered = totals.order_by(customer_col)
    with _duckdb_perfect_hash_groups(ordered):
        arrow = ordered.to_pyarrow()
    last = arrow.column("last_order_time").to_numpy().astype("datetime64[us]")
    recency = ((np.datetime64(stamp.to_datetime64(), "us") - last) // np.timedelta64(1, "D")).astype(np.int64)
    frequency = arrow.column("frequency").to_numpy().astype(np.int64)
    monetary = arrow.column("monetary").to_numpy().astype(np.float64)
    r_score = quantile_scores(recency, n_bins=n_bins, higher_is_better=False)
    f_score = quantile_scores(frequency, n_bins=n_bins)
    m_score = quantile_scores(monetary, n_bins=n_bins)
    return pd.DataFrame(
        {
            customer_col: arrow.column(customer_col).to_pandas(),
            "recency_days": recency,
            "frequency": frequency,
            "monetary": monetary,
            "r_score": r_score,
            "f_score": f_score,
            "m_score": m_score,
            "rfm_segment": segment_names(r_score, f_score, m_score, n_bins=n_bins, frequency=frequency),
        }
    )


def value_tiers(
    customers: pd.DataFrame, *, amount_col: str = "monetary", cutoffs: tuple[float, float] = (0.5, 0.8)
) -> pd.Series:
    """Assign ``high``/``medium``/``low`` value tiers by cumulative revenue share.

    Customers are sorted by ``amount_col``, largest first. A customer is ``high``
    while the revenue of the customers before them is below ``cutoffs[0]`` of the
    positive total (so the high tier is the smallest group that brings at least
    that share), ``medium`` below ``cutoffs[1]``, and ``low`` otherwise. Customers
    with zero or negative net revenue are always ``low``. Equal amounts get equal tiers.

    Returns
    -------
    pandas.Series of ordered categorical (``low`` < ``medium`` < ``high``),
    named ``value_tier``, aligned with ``customers``.
    """
    require_columns(customers, [amount_col], context="value_tiers(customers)")
    low_cut, high_cut = cutoffs
    if not 0 < low_cut < high_cut <= 1:
        raise ValueError(f"cutoffs must satisfy 0 < first < second <= 1, got {cutoffs!r}")
    amount = customers[amount_col].astype("float64").clip(lower=0)
    total = amount.sum()
    ordered = amount.sort_values(ascending=False, kind="stable")
    before = (ordered.cumsum() - ordered) / total if total > 0 else ordered * 0 + 1
    # Equal amounts share the share-before of the first of them.
    before = before.groupby(ordered.values).transform("min")
    tier = np.select([ordered <= 0, before < low_cut, before < high_cut], ["low", "high", "medium"], "low")
    result = pd.Series(tier, index=ordered.index, name="value_tier").reindex(customers.index)
    return result.astype(pd.CategoricalDtype(["low", "medium", "high"], ordered=True))


def segment_summary(
    customers: pd.DataFrame, *, segment_col: str = "rfm_segment", amount_col: str = "monetary"
) -> pd.DataFrame:
    """Size and revenue of every segment.

    Returns
    -------
    pandas.DataFrame
        One row per segment (every category, empty ones included): ``segment_col``,
        ``n_customers``, ``customer_pct`` (% of customers), ``revenue_amount``
        (sum of ``amount_col``, dataset currency), ``revenue_pct`` (% of total revenue),
        ``revenue_per_customer_amount`` (dataset currency; 0 for an empty segment).
    """
    require_columns(customers, [segment_col, amount_col], context="segment_summary(customers)")
    grouped = customers.groupby(segment_col, observed=False)[amount_col]
    summary = pd.DataFrame({"n_customers": grouped.size(), "revenue_amount": grouped.sum()})
    summary["customer_pct"] = 100 * summary["n_customers"] / max(summary["n_customers"].sum(), 1)
    total = summary["revenue_amount"].sum()
    summary["revenue_pct"] = 100 * summary["revenue_amount"] / total if total else 0.0
    summary["revenue_per_customer_amount"] = (summary["revenue_amount"] / summary["n_customers"]).fillna(0.0)
    columns = ["n_customers", "customer_pct", "revenue_amount", "revenue_pct", "revenue_per_customer_amount"]
    return summary[columns].reset_index()


NO_SEGMENT = "(none)"


def segment_transitions(
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    customer_col: str = "customer_id",
    segment_col: str = "rfm_segment",
) -> pd.DataFrame:
    """Movement of customers between the segments of two snapshots (e.g. ``rfm`` at two as-of dates).

    A customer present in only one snapshot is counted in the ``"(none)"``
    segment of the other (typically: not yet a customer at the earlier date).

    Returns
    -------
    pandas.DataFrame
        One row per (``from_segment``, ``to_segment``) pair that occurs:
        ``n_customers`` and ``from_pct`` (% of the customers of ``from_segment``).
    """
    for name, frame in (("before", before), ("after", after)):
        require_columns(frame, [customer_col, segment_col], context=f"segment_transitions({name})")
    joined = pd.merge(
        before[[customer_col, segment_col]].astype({segment_col: "string"}),
        after[[customer_col, segment_col]].astype({segment_col: "string"}),
        on=customer_col,
        how="outer",
        suffixes=("_from", "_to"),
    ).fillna({f"{segment_col}_from": NO_SEGMENT, f"{segment_col}_to": NO_SEGMENT})
    counts = (
        joined.groupby([f"{segment_col}_from", f"{segment_col}_to"]).size().rename("n_customers").reset_index()
    )
    counts.columns = ["from_segment", "to_segment", "n_customers"]
    counts["from_pct"] = 100 * counts["n_customers"] / counts.groupby("from_segment")["n_customers"].transform("sum")
    return counts


# --------------------------------------------------------------------------- plots


def plot_rfm_grid(customers: pd.DataFrame, *, n_bins: int = 5, ax=None):
    """Heatmap of customers on the R x FM grid, each cell annotated with its count and segment.

    ``customers`` is the output of ``rfm``; with a ``frequency`` column, one-time buyers sit in the
    FM = 1 column as ``segment_names`` places them. Returns the Axes.
    """
    require_columns(customers, ["r_score", "f_score", "m_score"], context="plot_rfm_grid(customers)")
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(8, 5.5))
    frequency = customers["frequency"].to_numpy() if "frequency" in customers.columns else None
    r, fm = _grid_cells(customers["r_score"].to_numpy(), customers["f_score"].to_numpy(), customers["m_score"].to_numpy(),
                        n_bins=n_bins, frequency=frequency)
    counts = np.zeros((5, 5), dtype=np.int64)
    np.add.at(counts, (5 - r, fm - 1), 1)
    ax.imshow(counts, cmap=plots.PALETTE, aspect="auto")
    for i in range(5):
        for j in range(5):
            label = f"{SEGMENT_GRID[4 - i, j]}\n{counts[i, j]:,}"
            colour = "white" if counts[i, j] > counts.max() / 2 else "black"
            ax.text(j, i, label, ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(5), [str(v) for v in range(1, 6)])
    ax.set_yticks(range(5), [str(v) for v in range(5, 0, -1)])
    ax.set_xlabel("FM score (frequency and monetary)")
    ax.set_ylabel("R score (recency)")
    ax.set_title("Customers on the RFM grid")
    ax.grid(False)
    return ax


def plot_segment_sizes(summary: pd.DataFrame, *, segment_col: str = "rfm_segment", ax=None):
    """Side-by-side bars of each segment's share of customers and of revenue (output of ``segment_summary``)."""
    require_columns(summary, [segment_col, "customer_pct", "revenue_pct"], context="plot_segment_sizes(summary)")
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(9, 5))
    long = summary.melt(id_vars=[segment_col], value_vars=["customer_pct", "revenue_pct"], var_name="share", value_name="pct")
    long["share"] = long["share"].map({"customer_pct": "customers", "revenue_pct": "revenue"})
    import seaborn as sns

    sns.barplot(data=long, y=segment_col, x="pct", hue="share", ax=ax, orient="h", palette=plots.category_colours(["customers", "revenue"]))
    ax.set_xlabel("% of all customers or of all revenue")
    ax.set_ylabel("")
    top = summary.loc[summary["revenue_pct"].idxmax()] if len(summary) else None
    ax.set_title("Segment sizes and revenue shares" if top is None else
                 f"Segment sizes and revenue shares: {top[segment_col]} bring {top['revenue_pct']:.0f}% of revenue")
    return ax


def plot_transitions(transitions: pd.DataFrame, *, order: Sequence[str] | None = None, ax=None, title: str | None = None):
    """Heatmap of ``from_pct`` (row %) of a transition table (``segment_transitions`` or ``lifecycle`` transitions).

    ``order`` fixes the order of the states on both axes (default: as they appear).
    """
    require_columns(transitions, ["from_segment", "to_segment", "from_pct"], context="plot_transitions(transitions)")
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(9, 7))
    matrix = transitions.pivot_table(index="from_segment", columns="to_segment", values="from_pct", aggfunc="sum", fill_value=0.0)
    if order is not None:
        present = set(matrix.index) | set(matrix.columns)
        states = [s for s in order if s in present] + sorted(present - set(order))
        matrix = matrix.reindex(index=[s for s in states if s in matrix.index], columns=[s for s in states if s in matrix.columns], fill_value=0.0)
    import seaborn as sns

    sns.heatmap(matrix, annot=True, fmt=".0f", cmap=plots.PALETTE, cbar_kws={"label": "% of the row"}, ax=ax)
    ax.set_xlabel("to")
    ax.set_ylabel("from")
    ax.set_title(title or "Movement between segments (row %)")
    return ax


# --------------------------------------------------------------------------- behavioural features

LOG_FEATURES = (
    "recency_days",
    "frequency",
    "monetary",
    "tenure_days",
    "avg_order_amount",
    "avg_unit_price_amount",
    "items_per_order",
    "n_support_tickets",
)


def _customer_rows(orders: ir.Table, *, as_of: pd.Timestamp, time_col: str, customer_col: str) -> ir.Table:
    """Rows at or before ``as_of`` that name a customer."""
    cutoff = ibis.literal(as_of.to_pydatetime(), type="timestamp")
    return orders.filter((orders[time_col] <= cutoff) & orders[customer_col].notnull())


def _distinct_values(column: ir.Column) -> list:
    """The distinct non-missing values of a column, sorted (a small query: categories, channels)."""
    values = column.name("value").as_table().filter(ibis._.value.notnull()).distinct().to_pandas()["value"]
    return sorted(values.tolist())


def _share_columns(frame: pd.DataFrame, columns: dict[str, str], *, total: pd.Series) -> pd.DataFrame:
    """``frame[columns]`` as % of ``total`` per row (0 where the total is 0), renamed by ``columns``."""
    shares = 100 * frame[list(columns)].div(total.where(total > 0), axis=0)
    return shares.fillna(0.0).rename(columns=columns)


def _slug(value) -> str:
    return str(value).strip().lower().replace(" ", "_")


def customer_features(
    orders: TableLike,
    *,
    as_of,
    order_items: TableLike | None = None,
    products: TableLike | None = None,
    support_tickets: TableLike | None = None,
    exclude_products: Iterable[str] = (),
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    discount_col: str = "discount_amount",
    channel_col: str = "channel",
) -> pd.DataFrame:
    """Behavioural features per customer at ``as_of``, for clustering.

    Aggregation runs in the input's Ibis backend; only orders (and tickets) at or
    before ``as_of`` with a customer id count. Refunds enter only ``monetary`` (net revenue); every
    other feature describes purchase orders (``order_amount >= 0``).

    Parameters
    ----------
    orders
        ``order_id``, ``customer_col``, ``time_col``, ``amount_col`` (dataset currency),
        ``discount_col`` (dataset currency, may be missing per row), ``channel_col``.
    order_items, products
        Optional; together they add the category mix, the average unit price and
        items per order. ``order_items``: ``order_id``, ``product_id``, ``quantity``,
        ``unit_price_amount``; ``products``: ``product_id``, ``category``.
    support_tickets
        Optional; ``customer_id`` and ``opened_time``: adds ``n_support_tickets``.
    exclude_products
        Product ids left out of the item features (the dataset's ``non_merchandise_codes``: postage, fees),
        so a postage line is neither a category nor a unit price; ``monetary`` keeps them.

    Returns
    -------
    pandas.DataFrame
        One row per customer with a purchase, sorted by ``customer_col``:
        ``recency_days`` (days since the last purchase), ``frequency`` (purchase
        orders), ``monetary`` (net revenue, dataset currency), ``tenure_days`` (days since the
        first purchase), ``avg_order_amount`` (dataset currency per purchase),
        ``discounted_order_pct`` (% of purchases with a discount), ``discount_pct``
        (discount as % of the pre-discount amount), ``channel_<name>_pct`` (% of
        purchases per sales channel); with items: ``avg_unit_price_amount`` (dataset currency),
        ``items_per_order`` (units), ``category_<name>_pct`` (% of item revenue);
        with tickets: ``n_support_tickets``.
    """
    require_columns(
        orders, ["order_id", customer_col, time_col, amount_col, discount_col, channel_col], context="customer_features(orders)"
    )
    stamp = as_timestamp(as_of)
    rows = _customer_rows(as_ibis(orders), as_of=stamp, time_col=time_col, customer_col=customer_col)
    is_purchase = rows[amount_col] >= 0
    discount = rows[discount_col].fill_null(0.0)
    channels = {f"_n_{i}": value for i, value in enumerate(_distinct_values(rows.filter(is_purchase)[channel_col]))}
    with_items = order_items is not None and products is not None
    counted = _counted_items(order_items, exclude_products) if with_items else None
    item_lines, categories = _item_lines(counted, products, exclude_products=exclude_products) if with_items else (None, {})
    # purchase orders with an item line, counted with the orders (a semi-join on the lines before their product
    # join: the same order ids, one join fewer) rather than as distinct order ids of the lines
    line_orders = {"n_orders": rows.count(where=is_purchase & rows.order_id.isin(counted.order_id))} if with_items else {}
    totals = (
        rows.group_by(customer_col)
        .aggregate(
            first_order_time=rows[time_col].min(where=is_purchase),
            last_order_time=rows[time_col].max(where=is_purchase),
            frequency=rows.count(where=is_purchase),  # COUNT(*) FILTER: cheaper than a sum of casts
            monetary=exact_sum(rows[amount_col]),  # money added up exactly: the same features on every run
            gross_amount=exact_sum(rows[amount_col], where=is_purchase),
            discount_sum=exact_sum(discount, where=is_purchase),
            n_discounted=rows.count(where=is_purchase & (discount > 0)),
            **{name: rows.count(where=is_purchase & (rows[channel_col] == value)) for name, value in channels.items()},
            **line_orders,
        )
        .filter(ibis._.frequency > 0)
    )
    if with_items:
        purchases = rows.filter(is_purchase).select("order_id", customer_col)
        items = _item_totals(purchases, item_lines, categories, customer_col=customer_col)
        # every customer with item lines has a purchase, so the left join keeps them all; one query, aligned rows
        totals = totals.left_join(items, customer_col).drop(f"{customer_col}_right")
    # through Arrow: the same columns and dtypes as ``to_pandas``, without its per-column conversions
    base = totals.order_by(customer_col).to_pyarrow().to_pandas().set_index(customer_col)
    day = pd.Timedelta(days=1)
    features = pd.DataFrame(index=base.index)
    features["recency_days"] = ((stamp - base["last_order_time"]) // day).astype("int64")
    features["frequency"] = base["frequency"].astype("int64")
    features["monetary"] = base["monetary"].astype("float64")
    features["tenure_days"] = ((stamp - base["first_order_time"]) // day).astype("int64")
    features["avg_order_amount"] = base["gross_amount"] / base["frequency"]
    features["discounted_order_pct"] = 100 * base["n_discounted"] / base["frequency"]
    pre_discount = (base["gross_amount"] + base["discount_sum"]).where(lambda v: v > 0)
    features["discount_pct"] = (100 * base["discount_sum"] / pre_discount).fillna(0.0)
    channel_names = {name: f"channel_{_slug(value)}_pct" for name, value in channels.items()}
    parts = [features, _share_columns(base, channel_names, total=base["frequency"])]
    if with_items:
        parts.append(_item_columns(base, categories))
    result = pd.concat(parts, axis=1)
    if support_tickets is not None:
        tickets = ticket_features(support_tickets, as_of=stamp, customer_col=customer_col, include_as_of=True)
        result = _with_ticket_counts(result, tickets["n_tickets"])
    fill = {c: 0.0 for c in result.columns if c.endswith("_pct") or c in ("n_support_tickets", "avg_unit_price_amount", "items_per_order")}
    result = result.fillna(fill)
    result.index.name = customer_col
    return result.reset_index()


def _with_ticket_counts(features: pd.DataFrame, n_tickets: pd.Series) -> pd.DataFrame:
    """``features`` with ``n_support_tickets`` (float; missing for customers without a ticket) from ``n_tickets``.

    ``n_tickets`` is indexed by customer id and may name customers without a purchase (absent from
    ``features``): they are left out, and their presence turns the integer features into float64,
    as aligning the two tables on the union of their customers does.
    """
    position = features.index.get_indexer(n_tickets.index)  # hash lookup; -1: a customer without a purchase
    found = position >= 0
    counts = np.full(len(features), np.nan)
    counts[position[found]] = n_tickets.to_numpy(dtype=np.float64)[found]
    widened = {} if found.all() else {c: "float64" for c in features.columns if pd.api.types.is_integer_dtype(features[c])}
    return features.astype(widened).assign(n_support_tickets=counts)


def _item_lines(counted: ir.Table, products: TableLike, *, exclude_products: Iterable[str] = ()) -> tuple[ir.Table, dict[str, str]]:
    """The order lines the item features count (not executed) and their category columns ``{column: category}``.

    ``counted`` are the lines of ``_counted_items``; each gets the product's ``category`` (missing for a product
    not in ``products``). Categories of ``exclude_products`` codes get no column.
    """
    require_columns(products, ["product_id", "category"], context="customer_features(products)")
    codes = _excluded_codes(exclude_products)
    catalogue = as_ibis(products).select("product_id", "category")
    if codes:
        catalogue = catalogue.filter(~catalogue.product_id.cast("string").isin(codes))
    categories = {f"_c_{i}": value for i, value in enumerate(_distinct_values(catalogue.category))}
    lines = counted.join(catalogue, "product_id", how="left")
    return lines, categories


def _excluded_codes(exclude_products: Iterable[str]) -> list[str]:
    """The ``exclude_products`` codes as sorted distinct text (product ids are compared as text)."""
    return sorted({str(code) for code in exclude_products})


def _counted_items(order_items: TableLike, exclude_products: Iterable[str] = ()) -> ir.Table:
    """The order lines the item features count, before the product join (not executed).

    Lines with a positive quantity, not of an ``exclude_products`` code: ``order_id``, ``product_id``,
    ``quantity``, ``unit_price_amount``.
    """
    require_columns(order_items, ["order_id", "product_id", "quantity", "unit_price_amount"], context="customer_features(order_items)")
    codes = _excluded_codes(exclude_products)
    items = as_ibis(order_items)
    if codes:
        items = items.filter(~items.product_id.cast("string").isin(codes))
    return items.filter(items.quantity > 0).select("order_id", "product_id", "quantity", "unit_price_amount")


def _item_totals(purchases: ir.Table, lines: ir.Table, categories: dict[str, str], *, customer_col: str) -> ir.Table:
    """The per-customer item totals query (not executed) over ``_item_lines`` of the ``purchases`` (``order_id``, ``customer_col``).

    Columns: ``customer_col``, ``line_amount`` (dataset currency), ``units``, and one item revenue column
    per category (``_c_<i>``, dataset currency). The purchase orders with a line are counted with the orders.
    """
    lines = lines.join(purchases, "order_id")
    amount = lines.quantity * lines.unit_price_amount
    return lines.group_by(customer_col).aggregate(
        line_amount=exact_sum(amount),
        # as float (exact below 2**53): DuckDB sums integers as HUGEINT, which comes back as Decimal once the left join adds a null
        units=lines.quantity.sum().cast("float64"),
        **{name: exact_sum(amount, where=lines.category == value) for name, value in categories.items()},
    )


def _item_columns(totals: pd.DataFrame, categories: dict[str, str]) -> pd.DataFrame:
    """Average unit price, items per order and category shares from the ``_item_totals`` columns and ``n_orders`` of ``totals``.

    A customer without item lines (missing totals) gets missing values here, filled with 0 by the caller.
    """
    units = totals["units"]
    out = pd.DataFrame(
        {
            "avg_unit_price_amount": (totals["line_amount"] / units.where(units > 0)).fillna(0.0),
            "items_per_order": units / totals["n_orders"],
        },
        index=totals.index,
    )
    names = {name: f"category_{_slug(value)}_pct" for name, value in categories.items()}
    return out.join(_share_columns(totals.fillna({n: 0.0 for n in names}), names, total=totals["line_amount"]))


# --------------------------------------------------------------------------- clustering


def _log_columns(x, *, mask: np.ndarray):
    """Signed ``log1p`` of the columns of ``x`` selected by ``mask`` (a copy; other columns unchanged)."""
    x = np.asarray(x, dtype=np.float64).copy()
    x[:, mask] = np.sign(x[:, mask]) * np.log1p(np.abs(x[:, mask]))
    return x


def cluster_pipeline(n_clusters: int, *, feature_cols: Sequence[str], random_state: int = 0) -> Pipeline:
    """The clustering pipeline: signed ``log1p`` on skewed columns (``LOG_FEATURES``), standard scaling, k-means.

    ``feature_cols`` is the column order the pipeline will be fitted on.
    """
    log_mask = np.array([c in LOG_FEATURES for c in feature_cols], dtype=bool)
    return Pipeline(
        [
            ("log", FunctionTransformer(_log_columns, kw_args={"mask": log_mask})),
            ("scale", StandardScaler()),
            ("kmeans", KMeans(n_clusters=n_clusters, n_init=4, random_state=random_state)),
        ]
    )


def feature_columns(features: pd.DataFrame, *, customer_col: str = "customer_id") -> list[str]:
    """The numeric feature columns of a ``customer_features`` table (everything but the key)."""
    return [c for c in features.columns if c != customer_col and pd.api.types.is_numeric_dtype(features[c])]


MIN_CLUSTER_CUSTOMERS = 50
"""Fewest customers the behaviour clusters are fitted on.

The number of clusters is chosen by silhouette among k = 2..8. With fewer than about 50 customers the
larger k leave clusters of a handful of customers: their profiles are single customers' values, and
the silhouette, hence the chosen k, changes when one customer is added or removed.
"""


def too_little_data(features: pd.DataFrame) -> str:
    """Say whether ``features`` (a ``customer_features`` result) holds too few customers to cluster; ``""`` otherwise.

    Returns
    -------
    str
        ``"too little data (n = 12 customers, needs 50)"`` (``MIN_CLUSTER_CUSTOMERS``), or ``""``.
    """
    n = len(features)
    return "" if n >= MIN_CLUSTER_CUSTOMERS else f"too little data (n = {n} customers, needs {MIN_CLUSTER_CUSTOMERS})"


def select_k(
    features: pd.DataFrame,
    *,
    k_range: Sequence[int] = range(2, 9),
    random_state: int = 0,
    sample_size: int = 5_000,
    customer_col: str = "customer_id",
    n_threads: int | None = 1,
) -> pd.DataFrame:
    """Silhouette (and inertia) of k-means for every k in ``k_range``, to choose k.

    For speed on large customer bases, k-means is fitted and the silhouette
    computed on one random sample of ``sample_size`` customers (drawn with
    ``random_state``; all customers when there are fewer). The final clusters are
    then fitted on everyone with ``fit_clusters``. ``n_threads`` caps the OpenMP
    threads of k-means (default 1: on a shared notebook server, spinning threads
    that compete for cores are many times slower; ``None`` leaves the default).

    Returns
    -------
    pandas.DataFrame
        ``k``, ``silhouette`` (-1..1, higher is better), ``inertia`` (within-cluster
        sum of squares of the sample, scaled units), ``is_best`` (the k with the
        highest silhouette).
    """
    columns = feature_columns(features, customer_col=customer_col)
    if len(features) < 3:
        raise ValueError("select_k needs at least 3 customers")
    x = features[columns].to_numpy(dtype=np.float64)
    if len(x) > sample_size:
        x = x[np.random.default_rng(random_state).choice(len(x), size=sample_size, replace=False)]
    ks = [int(k) for k in k_range if 2 <= int(k) < len(x)]
    if not ks:
        raise ValueError(f"k_range {list(k_range)!r} has no k with 2 <= k < {len(x)} customers")
    rows = []
    distances = _SampleDistances()
    with threadpool_limits(limits=n_threads, user_api="openmp"):
        for k in ks:
            pipeline = cluster_pipeline(k, feature_cols=columns, random_state=random_state).fit(x)
            score = distances.silhouette(pipeline[:-1].transform(x), pipeline[-1].labels_)
            rows.append({"k": k, "silhouette": float(score), "inertia": float(pipeline[-1].inertia_)})
    curve = pd.DataFrame(rows)
    curve["is_best"] = curve["k"] == curve.loc[curve["silhouette"].idxmax(), "k"]
    return curve


PRECOMPUTED_SILHOUETTE_ROWS = 5_000
"""Largest sample whose pairwise distances ``select_k`` keeps for all k (the matrix takes 8 bytes x rows squared: 200 MB)."""


class _SampleDistances:
    """The silhouette of several labellings of one sample, its pairwise distances computed once.

    The scaled features do not depend on k, so the distances ``silhouette_score`` computes are the
    same for every k: they are kept (up to ``PRECOMPUTED_SILHOUETTE_ROWS`` rows) and passed as a
    precomputed matrix, which gives the same scores. Another sample, or a larger one, is scored as usual.
    """

    def __init__(self) -> None:
        self.points: np.ndarray | None = None
        self.distances: np.ndarray | None = None

    def silhouette(self, points: np.ndarray, labels: np.ndarray) -> float:
        """``silhouette_score(points, labels)`` (Euclidean), from the kept distances when ``points`` is the kept sample."""
        if len(points) > PRECOMPUTED_SILHOUETTE_ROWS:
            return silhouette_score(points, labels)
        if self.points is None or not np.array_equal(self.points, points):
            # the chunks silhouette_score itself would compute, stacked
            self.points, self.distances = points, np.vstack(list(pairwise_distances_chunked(points)))
        return silhouette_score(self.distances, labels, metric="precomputed")


def fit_clusters(
    features: pd.DataFrame,
    *,
    n_clusters: int,
    random_state: int = 0,
    customer_col: str = "customer_id",
    n_threads: int | None = 1,
) -> pd.DataFrame:
    """Assign every customer to one of ``n_clusters`` k-means clusters (``cluster_pipeline``).

    Cluster numbers are ordered by size: cluster 0 is the largest. ``n_threads``:
    as in ``select_k``.

    Returns
    -------
    pandas.DataFrame
        ``customer_col`` and ``cluster`` (int).
    """
    require_columns(features, [customer_col], context="fit_clusters(features)")
    columns = feature_columns(features, customer_col=customer_col)
    pipeline = cluster_pipeline(n_clusters, feature_cols=columns, random_state=random_state)
    with threadpool_limits(limits=n_threads, user_api="openmp"):
        labels = pipeline.fit_predict(features[columns].to_numpy(dtype=np.float64))
    sizes = pd.Series(labels).value_counts()
    order = {old: new for new, old in enumerate(sizes.sort_index().sort_values(ascending=False, kind="stable").index)}
    return pd.DataFrame({customer_col: features[customer_col].to_numpy(), "cluster": pd.Series(labels).map(order).to_numpy()})


def start_fit_clusters(features: pd.DataFrame, **options) -> Future:
    """``fit_clusters(features, **options)`` started in a background thread.

    k-means spends its time in compiled code that releases the GIL, so the caller can compute something
    else meanwhile (hash keys, read tables) and pick the clusters up later. The clusters are those of a
    direct call: the thread limit of ``fit_clusters`` holds in the thread that fits.

    Returns
    -------
    concurrent.futures.Future
        ``result()`` waits for the ``fit_clusters`` table (or raises what the fit raised).
    """
    return background.start(fit_clusters, features, name="segmentation-fit", **options)


def _feature_label(column: str) -> str:
    for prefix, suffix in (("category_", " buyers"), ("channel_", " channel")):
        if column.startswith(prefix) and column.endswith("_pct"):
            return column[len(prefix) : -len("_pct")].replace("_", " ") + suffix
    return column.replace("_pct", " %").replace("_amount", "").replace("_days", " days").replace("_", " ")


def cluster_profiles(
    features: pd.DataFrame, clusters: pd.DataFrame, *, customer_col: str = "customer_id", n_traits: int = 2
) -> pd.DataFrame:
    """Mean feature values per cluster, with a generated descriptive name.

    The name lists the ``n_traits`` features whose cluster mean lies furthest from
    the overall mean in standard deviations, as "high ..." or "low ...", e.g.
    ``"high electronics buyers, high web channel"``.

    Returns
    -------
    pandas.DataFrame
        One row per cluster: ``cluster``, ``cluster_name``, ``n_customers``,
        ``customer_pct``, then the mean of every feature column (same names and units).
    """
    require_columns(clusters, [customer_col, "cluster"], context="cluster_profiles(clusters)")
    columns = feature_columns(features, customer_col=customer_col)
    joined = features.merge(clusters[[customer_col, "cluster"]], on=customer_col, how="inner")
    means = joined.groupby("cluster")[columns].mean()
    spread = joined[columns].std(ddof=0).replace(0, np.nan)
    z = ((means - joined[columns].mean()) / spread).fillna(0.0)
    names = {
        cluster: ", ".join(
            f"{'high' if z.loc[cluster, c] > 0 else 'low'} {_feature_label(c)}"
            for c in z.loc[cluster].abs().sort_values(ascending=False, kind="stable").index[:n_traits]
        )
        for cluster in z.index
    }
    profile = means.copy()
    profile.insert(0, "customer_pct", 100 * joined.groupby("cluster").size() / len(joined))
    profile.insert(0, "n_customers", joined.groupby("cluster").size())
    profile.insert(0, "cluster_name", pd.Series(names))
    return profile.reset_index()


def plot_silhouette(curve: pd.DataFrame, *, ax=None):
    """Line chart of the silhouette against k (output of ``select_k``), the chosen k marked."""
    require_columns(curve, ["k", "silhouette"], context="plot_silhouette(curve)")
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(7, 4))
    ax.plot(curve["k"], curve["silhouette"], marker="o")
    best = curve.loc[curve["silhouette"].idxmax()]
    ax.scatter([best["k"]], [best["silhouette"]], s=150, facecolors="none", edgecolors=plots.STATUS_COLOURS["red"], zorder=3)
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("silhouette (sampled, -1 to 1)")
    ax.set_title(f"Choosing k: best silhouette at k = {int(best['k'])}")
    return ax


def plot_cluster_profiles(profiles: pd.DataFrame, *, ax=None):
    """Heatmap of the cluster profiles: each feature's cluster mean in standard deviations across clusters."""
    require_columns(profiles, ["cluster", "cluster_name", "n_customers"], context="plot_cluster_profiles(profiles)")
    plots.set_style()
    columns = [c for c in profiles.columns if c not in ("cluster", "cluster_name", "n_customers", "customer_pct")]
    ax = plots.new_axes(ax, figsize=(max(8, 0.45 * len(columns)), 1.2 + 0.6 * len(profiles)))
    values = profiles[columns]
    z = ((values - values.mean()) / values.std(ddof=0).replace(0, np.nan)).fillna(0.0)
    z.index = [f"{c}: {n} (n={s:,})" for c, n, s in zip(profiles["cluster"], profiles["cluster_name"], profiles["n_customers"])]
    z.columns = [_feature_label(c) for c in columns]
    import seaborn as sns

    sns.heatmap(z, cmap="vlag", center=0, ax=ax, cbar_kws={"label": "z-score across clusters"})
    ax.set_title("Cluster profiles")
    return ax


# --------------------------------------------------------------------------- evaluation against known segments


def cluster_agreement(
    clusters: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    customer_col: str = "customer_id",
    label_col: str = "cluster",
    truth_col: str = "true_segment",
) -> pd.DataFrame:
    """Adjusted Rand index between found clusters and known labels, on the customers present in both.

    ``truth`` holds ``customer_col`` and ``truth_col`` (e.g.
    ``crm_analytics.ground_truth.customer_persons`` joined to the persons'
    ``true_segment``). Returns a one-row DataFrame: ``n_customers`` compared,
    ``adjusted_rand_index`` (1 = identical partitions, about 0 = chance).
    """
    require_columns(clusters, [customer_col, label_col], context="cluster_agreement(clusters)")
    require_columns(truth, [customer_col, truth_col], context="cluster_agreement(truth)")
    both = clusters[[customer_col, label_col]].merge(truth[[customer_col, truth_col]], on=customer_col, how="inner")
    # integer codes of the labels: the same partitions (so the same index) without sorting text labels
    truth_codes, label_codes = (pd.factorize(both[column], use_na_sentinel=False)[0] for column in (truth_col, label_col))
    ari = adjusted_rand_score(truth_codes, label_codes) if len(both) else float("nan")
    return pd.DataFrame({"n_customers": [len(both)], "adjusted_rand_index": [ari]})


# --------------------------------------------------------------------------- demographic and geographic views


def age_bands(birth_dates: pd.Series, *, as_of, edges: Sequence[int] = (18, 25, 35, 45, 55, 65)) -> pd.Series:
    """Age band at ``as_of`` of each birth date, e.g. ``"25-34"``; ``"unknown"`` when missing or implausible.

    Bands are ``[edge_i, edge_i+1)`` in completed years, plus ``"<first"`` and ``"last+"``.
    Returns an ordered categorical Series aligned with ``birth_dates``.
    """
    stamp = as_timestamp(as_of)
    born = pd.to_datetime(birth_dates, errors="coerce")
    age = stamp.year - born.dt.year - ((born.dt.month > stamp.month) | ((born.dt.month == stamp.month) & (born.dt.day > stamp.day)))
    age = age.where((age >= 0) & (age <= 110))
    labels = [f"<{edges[0]}"] + [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    bins = [-np.inf, *edges, np.inf]
    band = pd.cut(age.astype("float64"), bins=bins, labels=labels, right=False)
    return band.cat.add_categories(["unknown"]).fillna("unknown").rename("age_band")


def segment_mix(
    customers: pd.DataFrame,
    *,
    by: str,
    segment_col: str = "rfm_segment",
    amount_col: str = "monetary",
) -> pd.DataFrame:
    """Segment mix and value of each group of customers (age band, gender, province, city, ...).

    Parameters
    ----------
    customers
        One row per customer with ``by``, ``segment_col`` and ``amount_col``
        (e.g. ``rfm`` joined to the demographic columns of ``customers``).

    Returns
    -------
    pandas.DataFrame
        One row per (``by``, segment) present: ``n_customers``, ``group_pct``
        (% of the group's customers in the segment), ``revenue_amount`` (dataset currency),
        and per group ``group_customers``, ``group_revenue_amount`` and
        ``revenue_per_customer_amount`` (dataset currency).
    """
    require_columns(customers, [by, segment_col, amount_col], context="segment_mix(customers)")
    frame = customers[[by, segment_col, amount_col]].copy()
    frame[by] = frame[by].astype("string").fillna("unknown")
    mix = frame.groupby([by, segment_col], observed=True).agg(n_customers=(amount_col, "size"), revenue_amount=(amount_col, "sum"))
    mix = mix.reset_index()
    group = frame.groupby(by).agg(group_customers=(amount_col, "size"), group_revenue_amount=(amount_col, "sum"))
    group["revenue_per_customer_amount"] = group["group_revenue_amount"] / group["group_customers"]
    mix = mix.merge(group.reset_index(), on=by)
    mix["group_pct"] = 100 * mix["n_customers"] / mix["group_customers"]
    return mix[[by, segment_col, "n_customers", "group_pct", "revenue_amount", "group_customers", "group_revenue_amount", "revenue_per_customer_amount"]]


def plot_segment_mix(
    mix: pd.DataFrame, *, by: str, segment_col: str = "rfm_segment", top: int = 15, order: Sequence[str] | None = None, ax=None
):
    """Stacked horizontal bars of the segment mix per group (output of ``segment_mix``).

    Groups are shown in ``order`` when given (e.g. age bands), otherwise the
    ``top`` largest groups, largest first. Without any group (e.g. every group was too small to
    show) the Axes says so instead of drawing bars, and has no legend.
    """
    require_columns(mix, [by, segment_col, "group_pct", "group_customers"], context="plot_segment_mix(mix)")
    plots.set_style()
    sizes = mix.groupby(by)["group_customers"].first().sort_values(ascending=False, kind="stable")
    groups = list(sizes.index[:top]) if order is None else [str(g) for g in order if str(g) in sizes.index]
    ax = plots.new_axes(ax, figsize=(9, 0.8 + 0.35 * max(len(groups), 2)))
    ax.set_title(f"Segment mix by {by.replace('_', ' ')}")
    if not groups:
        ax.text(0.5, 0.5, "no group with enough customers to show", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xticks([])
        ax.set_yticks([])
        return ax
    wide = mix.pivot_table(index=by, columns=segment_col, values="group_pct", aggfunc="sum", fill_value=0.0, observed=True)
    wide = wide.reindex(groups[::-1])
    wide.plot.barh(stacked=True, ax=ax, width=0.85, color=plots.category_colour_list(wide.columns))
    ax.set_xlabel("% of the group's customers")
    ax.set_ylabel(by.replace("_", " "))
    ax.set_xlim(0, 100)
    ax.legend(title="", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    return ax


# --------------------------------------------------------------------------- actionable lists


def action_list(
    customers: pd.DataFrame,
    *,
    segment_col: str = "rfm_segment",
    customer_col: str = "customer_id",
    actions: dict[str, str] | None = None,
    pseudonymise: Callable[[pd.Series], pd.Series] | None = None,
    extra_cols: Sequence[str] = ("recency_days", "frequency", "monetary"),
    key_col: str | None = None,
) -> pd.DataFrame:
    """Per customer: a pseudonymous key, the segment and the suggested action, for campaign tools.

    The raw customer id is replaced by ``pseudonymise(customer ids)`` (default
    ``crm_analytics.privacy.pseudonymise``: a keyed HMAC; whoever holds the key can
    match it back). Names, e-mails and phones are never included. ``key_col`` names a column
    of ``customers`` already holding those keys (computed once for several tables); it is then
    used as it is and ``pseudonymise`` is not called.

    Returns
    -------
    pandas.DataFrame
        ``customer_key``, ``segment_col``, ``suggested_action``, then ``extra_cols``
        present in ``customers``; sorted by segment (in category order) and key.
    """
    require_columns(customers, [customer_col, segment_col, *([key_col] if key_col else [])], context="action_list(customers)")
    if pseudonymise is None:
        from crm_analytics.privacy import pseudonymise
    actions = SEGMENT_ACTIONS if actions is None else actions
    extras = [c for c in extra_cols if c in customers.columns]
    keys = customers[key_col] if key_col else pseudonymise(customers[customer_col].astype("string"))
    out = pd.DataFrame({"customer_key": keys.to_numpy()})
    out[segment_col] = customers[segment_col].to_numpy()
    out["suggested_action"] = _mapped_text(customers[segment_col], actions, default="No action defined")
    for column in extras:
        out[column] = customers[column].to_numpy()
    order = _text_sort_order([out[segment_col], out["customer_key"]])
    if order is None:
        return out.sort_values([segment_col, "customer_key"], kind="stable").reset_index(drop=True)
    return out.take(order).reset_index(drop=True)


def _mapped_text(values: pd.Series, mapping: dict[str, str], *, default: str) -> np.ndarray:
    """``mapping`` of the text of each value (``default`` when unmapped or missing), as an object array.

    The same as ``values.astype("string").map(mapping).fillna(default)``, looked up once per distinct value.
    """
    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    texts = pd.Series(distinct).astype("string").map(mapping).fillna(default).to_numpy(dtype=object)
    return texts[codes]


def _text_sort_order(columns: Sequence[pd.Series]) -> np.ndarray | None:
    """Positions that sort rows by the text ``columns`` (first column first), stably, as ``sort_values`` does.

    ``None`` when a column is not text or has missing values (``sort_values`` then decides where those go).
    Arrow's sort is stable and compares UTF-8 bytes, which orders text by code point as Python does.
    """
    if not all(pd.api.types.is_string_dtype(column) and not column.isna().any() for column in columns):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.table({str(i): pa.array(column.array) for i, column in enumerate(columns)})
    return pc.sort_indices(table, sort_keys=[(name, "ascending") for name in table.column_names]).to_numpy()
