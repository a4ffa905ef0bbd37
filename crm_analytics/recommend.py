"""Personalised recommendations: item-to-item collaborative filtering with a popularity baseline,
and their offline evaluation on a time-based holdout.

The customer-by-product matrix is binary ("bought at least once") and sparse
(``scipy.sparse``). ``ItemCF`` scores a product for a customer by the summed
cosine similarity between it and the products the customer bought; each
product keeps only its ``n_neighbours`` most similar products. ``Popularity``
recommends the products bought by the most customers. Both follow the
scikit-learn contract: ``fit(purchases)`` returns self, learned attributes end
in ``_``; ``recommend(customers, n=10)`` returns a tidy table and never
recommends what the customer already bought.

Evaluation (``holdout_split`` + ``evaluate``): the models learn from purchases
before ``split_time``; the truth is, per customer with a purchase history, the
products first bought in ``[split_time, split_time + horizon)``. Reported:
precision@k, recall@k (averaged over customers), hit rate (share of customers
with at least one hit) and catalogue coverage (share of products recommended
to anyone).

Non-merchandise (postage, fees, adjustments: the dataset's ``non_merchandise_codes``) is left out
with ``purchases(..., exclude_products=...)``: it is then never recommended and never part of the
evaluation. Orders without a customer (anonymous orders) belong to nobody and are left out too.

Too little data: an evaluation on fewer than ``MIN_TEST_CUSTOMERS`` holdout customers is not reported
(``evaluation_shortfall`` says why).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from crm_analytics import frames, plots

__all__ = [
    "ItemCF",
    "MIN_TEST_CUSTOMERS",
    "Popularity",
    "already_bought",
    "also_bought",
    "combine_purchases",
    "compare_models",
    "evaluate",
    "evaluation_shortfall",
    "holdout_split",
    "plot_evaluation",
    "purchases",
    "with_products",
]


def purchases(
    orders: frames.TableLike,
    order_items: frames.TableLike,
    *,
    start=None,
    end=None,
    exclude_products: Iterable[str] = (),
    customer_col: str = "customer_id",
    product_col: str = "product_id",
    time_col: str = "order_time",
) -> pd.DataFrame:
    """Customer-product purchase pairs, aggregated in the engine.

    Parameters
    ----------
    orders : table with ``order_id``, ``customer_col``, ``time_col`` and optionally ``is_refund``
        (refund rows are left out; so are orders without a customer).
    order_items : table with ``order_id`` and ``product_col``.
    start, end : timestamp-like, optional
        Only orders in ``[start, end)``.
    exclude_products : iterable of str
        Product ids left out (the dataset's ``non_merchandise_codes``: postage, fees, adjustments).

    Returns
    -------
    pandas.DataFrame
        ``customer_id``, ``product_id``, ``n_orders`` (orders containing the product),
        ``first_time`` and ``last_time`` (first and last such order).
    """
    joined = _purchase_lines(orders, order_items, start=start, end=end, exclude_products=exclude_products,
                             customer_col=customer_col, product_col=product_col, time_col=time_col, context="purchases")
    pairs = _pair_summary(joined, joined.group_by(customer_id=joined._cid, product_id=joined._pid))
    # sorted in the engine (byte order of UTF-8 text is code-point order, as in pandas), not afterwards in pandas
    return pairs.order_by(["customer_id", "product_id"]).to_pandas().reset_index(drop=True)


def _purchase_lines(orders, order_items, *, start, end, exclude_products, customer_col, product_col, time_col, context):
    """Distinct products of customers' regular orders in ``[start, end)`` as an Ibis table ``_oid``, ``_cid``, ``_time``, ``_pid``.

    Refunds, orders without a customer, lines without a product and the ``exclude_products`` are left out.
    """
    o, i = frames.as_ibis(orders), frames.as_ibis(order_items)
    frames.require_columns(o, ["order_id", customer_col, time_col], context=f"{context}(orders)")
    frames.require_columns(i, ["order_id", product_col], context=f"{context}(order_items)")
    if "is_refund" in o.columns:
        o = o.filter(~o.is_refund.fill_null(False))
    if start is not None:
        o = o.filter(o[time_col] >= pd.Timestamp(start))
    if end is not None:
        o = o.filter(o[time_col] < pd.Timestamp(end))
    o = o.filter(o[customer_col].notnull())  # an anonymous order belongs to no customer
    o = o.select(_oid=o.order_id, _cid=o[customer_col].cast("string"), _time=o[time_col])
    lines = i.select(_oid=i.order_id, _pid=i[product_col].cast("string")).filter(lambda t: t._pid.notnull())
    excluded = sorted({str(code) for code in exclude_products})
    if excluded:
        lines = lines.filter(~lines._pid.isin(excluded))
    # one row per order and product: a customer's orders then count with count(*), far cheaper than count(distinct)
    return o.join(lines.distinct(), "_oid")


def _pair_summary(joined, grouped):
    """``n_orders`` (orders: ``_purchase_lines`` has one row per order and product), ``first_time`` and ``last_time`` per group."""
    return grouped.aggregate(n_orders=joined._oid.count(), first_time=joined._time.min(), last_time=joined._time.max())


def combine_purchases(*parts: pd.DataFrame) -> pd.DataFrame:
    """Merge ``purchases`` results of disjoint periods into the ``purchases`` result of their union.

    E.g. ``purchases(..., end=t)`` and ``purchases(..., start=t, end=u)`` give ``purchases(..., end=u)``
    without querying the engine again: ``n_orders`` add up (an order falls in one period only),
    ``first_time`` is the earliest and ``last_time`` the latest. Same columns, same sort order.
    """
    for part in parts:
        frames.require_columns(part, ["customer_id", "product_id", "n_orders", "first_time", "last_time"], context="combine_purchases(parts)")
    both = pd.concat(parts, ignore_index=True)
    if both[["customer_id", "product_id"]].isna().to_numpy().any():
        pairs = both.groupby(["customer_id", "product_id"], sort=True, dropna=False).agg(
            n_orders=("n_orders", "sum"), first_time=("first_time", "min"), last_time=("last_time", "max")
        )
        return pairs.reset_index()
    # group on one integer per pair whose order is the (customer_id, product_id) text order: far cheaper than two text keys
    customer_codes, customers = pd.factorize(both.customer_id, sort=True)
    product_codes, products = pd.factorize(both.product_id, sort=True)
    pair_codes = customer_codes.astype(np.int64) * len(products) + product_codes
    pairs = _combine_sorted(both, pair_codes)
    codes = pairs.index.to_numpy()
    return pd.concat(
        [pd.DataFrame({"customer_id": customers.take(codes // len(products)), "product_id": products.take(codes % len(products))}),
         pairs.reset_index(drop=True)],
        axis=1,
    )


def _combine_sorted(both: pd.DataFrame, pair_codes: np.ndarray) -> pd.DataFrame:
    """Sum ``n_orders``, take the earliest ``first_time`` and latest ``last_time`` per pair code, indexed by the sorted codes.

    Integer counts and times without gaps (``purchases``' own columns) reduce over one sort of the codes;
    anything else (missing counts or times, which the reduction must skip) goes through ``groupby``.
    """
    n_orders, first_time, last_time = (both[c].to_numpy() for c in ("n_orders", "first_time", "last_time"))
    plain = (len(pair_codes) > 0 and n_orders.dtype.kind in "iu" and first_time.dtype.kind == "M" and last_time.dtype.kind == "M"
             and not (np.isnat(first_time).any() or np.isnat(last_time).any()))
    if not plain:
        return both[["n_orders", "first_time", "last_time"]].groupby(pair_codes, sort=True).agg(
            n_orders=("n_orders", "sum"), first_time=("first_time", "min"), last_time=("last_time", "max")
        )
    order = np.argsort(pair_codes, kind="stable")
    sorted_codes = pair_codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    return pd.DataFrame(
        {"n_orders": np.add.reduceat(n_orders[order], starts), "first_time": np.minimum.reduceat(first_time[order], starts),
         "last_time": np.maximum.reduceat(last_time[order], starts)},
        index=sorted_codes[starts],
    )


@dataclass(frozen=True)
class InteractionMatrix:
    """A binary customer x product CSR matrix with its row and column labels."""

    matrix: sparse.csr_matrix
    customers: pd.Index
    products: pd.Index


def interaction_matrix(pairs: pd.DataFrame, *, products: Sequence[str] | None = None) -> InteractionMatrix:
    """Build the binary customer x product matrix from ``customer_id``/``product_id`` pairs.

    ``products`` fixes the columns (e.g. the whole catalogue); pairs with other products are dropped.
    """
    frames.require_columns(pairs, ["customer_id", "product_id"], context="interaction_matrix(pairs)")
    # factorize once per column; labels are looked up on the few distinct values, not on every pair
    rows, customers = pd.factorize(pairs.customer_id.astype(str), use_na_sentinel=False)
    customers = pd.Index(customers, name="customer_id")
    product_codes, product_values = pd.factorize(pairs.product_id.astype(str), use_na_sentinel=False)
    product_index = pd.Index(sorted(product_values) if products is None else list(dict.fromkeys(map(str, products))), name="product_id")
    cols = product_index.get_indexer(product_values)[product_codes]
    keep = cols >= 0
    data = np.ones(keep.sum(), dtype=np.float32)
    matrix = sparse.csr_matrix((data, (rows[keep], cols[keep])), shape=(len(customers), len(product_index)))
    matrix.data[:] = 1.0  # duplicates summed by the constructor become 1 again
    return InteractionMatrix(matrix, customers, product_index)


def _top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``n`` largest finite scores per row, best first (ties: lower index first)."""
    n = min(n, scores.shape[1])
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < scores.shape[1] else np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(scores, idx, axis=1)


def _recommendation_frame(customers: pd.Index, idx: np.ndarray, values: np.ndarray, products: pd.Index) -> pd.DataFrame:
    n = idx.shape[1]
    frame = pd.DataFrame(
        {
            "customer_id": np.repeat(customers.to_numpy(), n),
            "rank": np.tile(np.arange(1, n + 1), len(customers)),
            "product_id": products.to_numpy()[idx.ravel()] if idx.size else np.array([], dtype=object),
            "score": values.ravel().astype(float),
        }
    )
    return frame[np.isfinite(frame.score)].reset_index(drop=True)


class _Recommender:
    """Shared recommend(): subclasses provide ``_scores(rows) -> dense array`` over the products."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "interactions_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(purchases) first")

    def recommend(self, customers: Sequence[str] | None = None, *, n: int = 10, batch_size: int = 4096) -> pd.DataFrame:
        """Top-``n`` products per customer, excluding what the customer already bought.

        ``customers`` defaults to every customer seen in ``fit``; unknown customers get
        the popularity ranking. Returns ``customer_id``, ``rank`` (1 = best), ``product_id``,
        ``score`` (model score; for unknown customers the product's buyer count).
        """
        self._check_fitted()
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        im = self.interactions_
        wanted = im.customers if customers is None else pd.Index(pd.unique(pd.Series(customers, dtype="object").astype(str)), name="customer_id")
        rows = _positions(wanted, im.customers)
        known, unknown = wanted[rows >= 0], wanted[rows < 0]
        known_rows = rows[rows >= 0]
        parts = []
        for begin in range(0, len(known_rows), batch_size):
            batch = known_rows[begin : begin + batch_size]
            scores = self._scores(batch)
            seen = im.matrix[batch]
            scores[seen.nonzero()] = -np.inf
            scores[scores <= 0] = -np.inf  # no evidence: not a recommendation
            idx, values = _top_n(scores, n)
            parts.append(_recommendation_frame(known[begin : begin + batch_size], idx, values, im.products))
        if len(unknown):
            popular = np.tile(self.popularity_.astype(float), (len(unknown), 1))
            popular[popular <= 0] = -np.inf
            idx, values = _top_n(popular, n)
            parts.append(_recommendation_frame(unknown, idx, values, im.products))
        if not parts:
            return pd.DataFrame({"customer_id": [], "rank": [], "product_id": [], "score": []})
        return pd.concat(parts, ignore_index=True)


class Popularity(_Recommender):
    """Recommend the products bought by the most customers (the baseline)."""

    def fit(self, pairs: pd.DataFrame, *, products: Sequence[str] | None = None) -> "Popularity":
        """Learn buyer counts per product from ``customer_id``/``product_id`` pairs; returns self."""
        self.interactions_ = interaction_matrix(pairs, products=products)
        self.popularity_ = np.asarray(self.interactions_.matrix.sum(axis=0)).ravel()
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return np.tile(self.popularity_.astype(float), (len(rows), 1))


# Up to this many products, the product x product similarity is also kept dense for scoring (8 bytes
# per cell: 4,096 products take 128 MiB); larger catalogues score on the sparse matrix.
DENSE_SIMILARITY_MAX_PRODUCTS = 4096


class ItemCF(_Recommender):
    """Item-to-item collaborative filtering on the binary customer x product matrix.

    Parameters
    ----------
    n_neighbours : int
        Similar products kept per product (the rest are set to 0).
    shrinkage : float
        Cosine similarity is shrunk by ``co / (co + shrinkage)`` so that pairs bought
        together by few customers count less (0 = plain cosine).

    Attributes
    ----------
    interactions_ : InteractionMatrix
    similarity_ : scipy.sparse.csr_matrix
        Product x product similarity (diagonal 0).
    co_counts_ : scipy.sparse.csr_matrix
        Customers who bought both products.
    popularity_ : numpy.ndarray
        Buyers per product (used for customers unknown at fit time).
    """

    def __init__(self, *, n_neighbours: int = 50, shrinkage: float = 5.0):
        self.n_neighbours = n_neighbours
        self.shrinkage = shrinkage

    def fit(self, pairs: pd.DataFrame, *, products: Sequence[str] | None = None) -> "ItemCF":
        """Learn product-product cosine similarities from ``customer_id``/``product_id`` pairs; returns self."""
        if self.n_neighbours < 1 or self.shrinkage < 0:
            raise ValueError("n_neighbours must be at least 1 and shrinkage not negative")
        im = interaction_matrix(pairs, products=products)
        x = im.matrix.astype(np.float64)
        co = (x.T @ x).tocsr()
        buyers = np.asarray(x.sum(axis=0)).ravel()
        co.setdiag(0)
        co.eliminate_zeros()
        coo = co.tocoo()
        norm = np.sqrt(buyers[coo.row] * buyers[coo.col])
        values = coo.data / norm
        if self.shrinkage:
            values = values * coo.data / (coo.data + self.shrinkage)
        similarity = sparse.csr_matrix((values, (coo.row, coo.col)), shape=co.shape)
        self.similarity_ = _keep_top_per_row(similarity, self.n_neighbours)
        self._dense_similarity = self.similarity_.toarray() if self.similarity_.shape[0] <= DENSE_SIMILARITY_MAX_PRODUCTS else None
        self.co_counts_ = co
        self.interactions_ = im
        self.popularity_ = buyers
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        # score(customer, j) = sum over bought products i of similarity(i, j). Sparse rows times the dense
        # similarity add the same terms in the same order as sparse times sparse (the zeros add nothing),
        # so the scores are the same to the bit, without building a sparse product first.
        bought = self.interactions_.matrix[rows].astype(np.float64)
        dense = getattr(self, "_dense_similarity", None)
        if dense is not None:
            return bought @ dense
        return np.asarray((bought @ self.similarity_).todense())


def _keep_top_per_row(matrix: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Keep the ``k`` largest entries of each row of a CSR matrix."""
    matrix = matrix.tocsr(copy=True)
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if end - start > k:
            data = matrix.data[start:end]
            cutoff = np.argsort(-data, kind="stable")[k:]
            data[cutoff] = 0
    matrix.eliminate_zeros()
    return matrix


def also_bought(model: ItemCF, *, n: int = 5, min_customers: int = 5) -> pd.DataFrame:
    """"Bought X, also bought Y": the ``n`` most similar products of each product.

    Pairs bought together by fewer than ``min_customers`` customers are left out.

    Returns
    -------
    pandas.DataFrame
        ``product_id``, ``rank``, ``also_bought_product_id``, ``similarity`` (0-1),
        ``n_customers_both`` (customers who bought both), ``also_bought_pct`` (of the buyers of
        ``product_id``, the share who also bought the other one).
    """
    model._check_fitted()
    sim = model.similarity_.tocoo()
    co = model.co_counts_.tocsr()
    products = model.interactions_.products.to_numpy()
    pairs = pd.DataFrame({"i": sim.row, "j": sim.col, "similarity": sim.data})
    pairs["n_customers_both"] = np.asarray(co[pairs.i.to_numpy(), pairs.j.to_numpy()]).ravel().astype(int)
    pairs = pairs[pairs.n_customers_both >= min_customers]
    pairs["also_bought_pct"] = pairs.n_customers_both / model.popularity_[pairs.i.to_numpy()] * 100
    pairs = pairs.sort_values(["i", "similarity", "j"], ascending=[True, False, True])
    pairs["rank"] = pairs.groupby("i").cumcount() + 1
    pairs = pairs[pairs["rank"] <= n]
    return pd.DataFrame(
        {
            "product_id": products[pairs.i.to_numpy()],
            "rank": pairs["rank"].to_numpy(),
            "also_bought_product_id": products[pairs.j.to_numpy()],
            "similarity": pairs.similarity.to_numpy(),
            "n_customers_both": pairs.n_customers_both.to_numpy(),
            "also_bought_pct": pairs.also_bought_pct.to_numpy(),
        }
    )


def _isin(values: pd.Series, candidates) -> np.ndarray:
    """Boolean mask of ``values`` (text) found in ``candidates`` (text), by hash lookup.

    Same result as ``values.isin(candidates)``, which for Arrow-backed strings builds one Python
    object per candidate (seconds for tens of thousands of customers).
    """
    return _positions(values, pd.unique(pd.Series(candidates))) >= 0


def _arrow_text(values):
    """``values`` (a text Series, Index or array; missing values allowed) as Arrow text, without copying Arrow-backed text."""
    import pyarrow as pa

    array = getattr(values, "array", values)
    if hasattr(array, "__arrow_array__"):
        return array.__arrow_array__()
    return pa.array(np.asarray(array, dtype=object), type=pa.large_string(), from_pandas=True)


def _positions(values, labels) -> np.ndarray:
    """Position of each of ``values`` in ``labels`` (distinct text), ``-1`` where absent, as int64.

    Same result as ``pd.Index(labels).get_indexer(values)`` (a missing value finds a missing label),
    hashed in Arrow: pandas' lookup turns every Arrow-backed text value into a Python object first,
    which costs seconds for millions of customer ids.

    Parameters
    ----------
    values : pandas.Series, pandas.Index or array of text
        The values to look up.
    labels : pandas.Series, pandas.Index or array of distinct text
        The labels, position 0 first.

    Returns
    -------
    numpy.ndarray
        int64 positions, one per value.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    text = _arrow_text(values)
    label_set = _arrow_text(labels)
    if isinstance(label_set, pa.ChunkedArray):
        label_set = label_set.combine_chunks()
    found = pc.index_in(text, value_set=label_set.cast(text.type))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def holdout_split(pairs_before: pd.DataFrame, pairs_after: pd.DataFrame) -> pd.DataFrame:
    """The holdout truth: products each known customer bought after the split but never before.

    Parameters
    ----------
    pairs_before : pandas.DataFrame
        ``purchases(..., end=split_time)``: the training pairs.
    pairs_after : pandas.DataFrame
        ``purchases(..., start=split_time, end=split_time + horizon)``.

    Returns
    -------
    pandas.DataFrame
        ``customer_id``, ``product_id``: new products of customers who also appear in training
        (a recommender never re-recommends a bought product, so those would be unreachable).
    """
    frames.require_columns(pairs_before, ["customer_id", "product_id"], context="holdout_split(pairs_before)")
    frames.require_columns(pairs_after, ["customer_id", "product_id"], context="holdout_split(pairs_after)")
    before = pairs_before[["customer_id", "product_id"]].astype(str)
    after = pairs_after[["customer_id", "product_id"]].astype(str)
    if before.isna().to_numpy().any() or after.isna().to_numpy().any():
        after = after.drop_duplicates()
        after = after[_isin(after.customer_id, before.customer_id)]
        is_new = ~pd.MultiIndex.from_frame(after).isin(pd.MultiIndex.from_frame(before))
        return after[is_new].sort_values(["customer_id", "product_id"]).reset_index(drop=True)
    after_codes, before_codes = _shared_pair_codes(after, before, pd.Index(pd.unique(before.customer_id)))
    known = after_codes >= 0
    after, after_codes = after[known], after_codes[known]
    is_new = ~pd.Series(after_codes).isin(before_codes).to_numpy()
    is_first = ~pd.Series(after_codes).duplicated().to_numpy()
    return _sorted_pairs(after[is_new & is_first])


def _pair_codes(pairs: pd.DataFrame, customers: pd.Index, products: pd.Index) -> np.ndarray:
    """One int64 per ``customer_id``/``product_id`` row (``-1`` when the customer is not in ``customers``).

    ``products`` must hold every product of ``pairs``; equal pairs get equal codes, so pairs are
    compared by integer hashing instead of on two text columns.
    """
    customer_codes = _positions(pairs.customer_id, customers)
    codes = customer_codes * len(products) + _positions(pairs.product_id, products)
    return np.where(customer_codes >= 0, codes, -1)


def _shared_pair_codes(pairs: pd.DataFrame, reference: pd.DataFrame, customers: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """``_pair_codes`` of ``pairs`` and of ``reference`` on one code space (``customers``, the products of both).

    Equal pairs of the two tables get equal codes, so a pair of ``pairs`` is in ``reference`` when its code is.
    """
    products = pd.Index(pd.unique(pd.concat([reference.product_id, pairs.product_id], ignore_index=True)))
    return _pair_codes(pairs, customers, products), _pair_codes(reference, customers, products)


def already_bought(recommendations: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``recommendations`` whose customer already bought the product according to ``pairs``.

    Same rows as ``recommendations.merge(pairs[["customer_id", "product_id"]], on=["customer_id", "product_id"])``
    when ``pairs`` holds each pair once (``purchases`` does), found by integer codes instead of a join on two text columns.

    Parameters
    ----------
    recommendations : pandas.DataFrame
        ``customer_id``, ``product_id`` and any other columns (``recommend``'s result).
    pairs : pandas.DataFrame
        ``customer_id``, ``product_id`` (``purchases`` or ``combine_purchases``).

    Returns
    -------
    pandas.DataFrame
        The offending rows of ``recommendations`` (all its columns, index reset); empty when none repeats a purchase.
    """
    frames.require_columns(recommendations, ["customer_id", "product_id"], context="already_bought(recommendations)")
    frames.require_columns(pairs, ["customer_id", "product_id"], context="already_bought(pairs)")
    bought = pairs[["customer_id", "product_id"]].astype(str)
    offered = recommendations[["customer_id", "product_id"]].astype(str)
    offered_codes, bought_codes = _shared_pair_codes(offered, bought, pd.Index(pd.unique(bought.customer_id)))
    repeated = (offered_codes >= 0) & pd.Series(offered_codes).isin(bought_codes).to_numpy()
    return recommendations[repeated].reset_index(drop=True)


def with_products(table: pd.DataFrame, products: pd.DataFrame, *, on: str = "product_id") -> pd.DataFrame:
    """``table`` with the columns of ``products`` added by ``on``: ``table.merge(products, on=on, how="left")``.

    When every product of ``table`` is in ``products`` once and the tables share no other column, the
    details are taken by position (Arrow hashing) instead of a join on text; otherwise this is the merge.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows naming a product in column ``on`` (e.g. ``recommend``'s result).
    products : pandas.DataFrame
        ``on`` and the columns to add (e.g. ``product_name``, ``category``).

    Returns
    -------
    pandas.DataFrame
        ``table``'s columns then ``products``' other columns, one row per row of ``table`` in its order, index reset.
    """
    frames.require_columns(table, [on], context="with_products(table)")
    frames.require_columns(products, [on], context="with_products(products)")
    details = products.drop(columns=on)
    rows = _positions(table[on].astype(str), products[on].astype(str)) if products[on].is_unique else None
    if rows is None or (rows < 0).any() or set(details.columns) & set(table.columns) or table[on].isna().any():
        return table.merge(products, on=on, how="left")
    return pd.concat([table.reset_index(drop=True), details.iloc[rows].reset_index(drop=True)], axis=1)


def _sorted_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """``pairs`` (distinct ``customer_id``/``product_id`` rows, no missing ids) sorted by customer then product, index reset.

    Same result as ``sort_values(["customer_id", "product_id"])``: the rows sort on integer codes
    given in text order to the few distinct values, instead of comparing text row against row.
    """
    customer_codes = pd.factorize(pairs.customer_id, sort=True)[0]
    product_codes = pd.factorize(pairs.product_id, sort=True)[0]
    return pairs.iloc[np.lexsort((product_codes, customer_codes))].reset_index(drop=True)


# An evaluation needs this many holdout customers. The hit rate is a share of customers, so its standard
# error is at most 0.5 / sqrt(n): 0.05 at 100 customers. Below that, differences of a few points between
# the models (the usual size) are noise, and precision@k averages too few customers to mean anything.
MIN_TEST_CUSTOMERS = 100


def evaluation_shortfall(truth: pd.DataFrame, *, minimum: int = MIN_TEST_CUSTOMERS) -> str:
    """Why the holdout ``truth`` is too small to evaluate on, or ``""`` when it has at least ``minimum`` customers.

    ``truth`` is ``holdout_split``'s result (``customer_id``, ``product_id``). The message reads
    ``too little data (n = 12 test customers, needs 100): ...``.
    """
    frames.require_columns(truth, ["customer_id"], context="evaluation_shortfall(truth)")
    if minimum < 1:
        raise ValueError(f"minimum must be at least 1 test customer, got {minimum}")
    n_customers = int(truth["customer_id"].nunique())
    if n_customers >= minimum:
        return ""
    return (f"too little data (n = {n_customers:,} test customers, needs {minimum:,}): the offline evaluation is not reported, "
            f"because below that the hit rate's standard error (up to 0.5 / sqrt(n)) swamps the differences between the models")


def evaluate(recommendations: pd.DataFrame, truth: pd.DataFrame, *, k: int = 10, n_products: int) -> pd.DataFrame:
    """Offline metrics of top-``k`` recommendations against a holdout truth.

    Parameters
    ----------
    recommendations : pandas.DataFrame
        ``customer_id``, ``rank``, ``product_id`` (from ``recommend``).
    truth : pandas.DataFrame
        ``customer_id``, ``product_id`` (from ``holdout_split``); only these customers are scored.
    k : int
        Cut-off.
    n_products : int
        Catalogue size, for coverage.

    Returns
    -------
    pandas.DataFrame
        One row: ``n_customers``, ``precision_at_k`` (hits / k, averaged over customers),
        ``recall_at_k`` (hits / relevant products, averaged), ``hit_rate`` (share of customers
        with a hit), ``coverage_pct`` (distinct recommended products / ``n_products`` x 100,
        over the scored customers), ``k``.
    """
    frames.require_columns(recommendations, ["customer_id", "rank", "product_id"], context="evaluate(recommendations)")
    frames.require_columns(truth, ["customer_id", "product_id"], context="evaluate(truth)")
    if n_products < 1:
        raise ValueError("n_products must be positive")
    truth = truth[["customer_id", "product_id"]].astype(str).drop_duplicates()
    truth = truth[truth.customer_id.notna()]  # a missing customer is nobody to score
    customer_codes, customers = pd.factorize(truth.customer_id, sort=True)  # codes in text order, like groupby's
    customers = pd.Index(customers, name="customer_id")
    top = recommendations[(recommendations["rank"] <= k) & _isin(recommendations.customer_id.astype(str), customers)]
    top = top[["customer_id", "product_id"]].astype(str)
    top_codes, truth_codes = _shared_pair_codes(top, truth, customers)
    is_hit = pd.Series(top_codes).isin(truth_codes).to_numpy()
    relevant = pd.Series(np.bincount(customer_codes, minlength=len(customers)), index=customers)
    hit_codes = _positions(top.customer_id[is_hit], customers)
    hits = pd.Series(np.bincount(hit_codes, minlength=len(customers)), index=customers)
    return pd.DataFrame(
        {
            "n_customers": [len(relevant)],
            "precision_at_k": [float((hits / k).mean()) if len(relevant) else np.nan],
            "recall_at_k": [float((hits / relevant).mean()) if len(relevant) else np.nan],
            "hit_rate": [float((hits > 0).mean()) if len(relevant) else np.nan],
            "coverage_pct": [top.product_id.nunique() / n_products * 100],
            "k": [k],
        }
    )


EVALUATION_COLUMNS = ["model", "n_customers", "precision_at_k", "recall_at_k", "hit_rate", "coverage_pct", "k"]


def compare_models(models: Mapping[str, "_Recommender"], train: pd.DataFrame, truth: pd.DataFrame, *,
                   products: Sequence[str], k: int = 10) -> pd.DataFrame:
    """Fit each model on ``train`` and ``evaluate`` its top-``k`` for the customers of ``truth``.

    Parameters
    ----------
    models : mapping of name to an unfitted ``ItemCF`` or ``Popularity`` (each is fitted here)
    train, truth : ``purchases`` before the split and ``holdout_split``'s result
    products : the catalogue (product ids that may be recommended; its size gives the coverage)

    Returns
    -------
    pandas.DataFrame
        One row per model: ``model`` and ``evaluate``'s columns; empty (same columns) without models,
        e.g. when ``evaluation_shortfall`` said the holdout is too small.
    """
    catalogue = list(dict.fromkeys(map(str, products)))
    rows = [
        evaluate(model.fit(train, products=catalogue).recommend(truth.customer_id.unique(), n=k), truth, k=k,
                 n_products=len(catalogue)).assign(model=name)
        for name, model in models.items()
    ]
    if not rows:
        return pd.DataFrame({c: pd.Series([], dtype="object" if c == "model" else "float64") for c in EVALUATION_COLUMNS})
    return pd.concat(rows, ignore_index=True)[EVALUATION_COLUMNS]


def plot_evaluation(comparison: pd.DataFrame, *, ax=None, empty_message: str = "no evaluation: no holdout customers"):
    """Bars of precision@k, recall@k and hit rate per model (``comparison`` has ``model`` and the metric columns).

    Without rows, an empty state says ``empty_message`` (e.g. ``evaluation_shortfall``'s reason).
    """
    plots.set_style()
    metrics = ["precision_at_k", "recall_at_k", "hit_rate"]
    frames.require_columns(comparison, ["model", *metrics], context="plot_evaluation(comparison)")
    if comparison.empty:
        return plots.empty_state(ax, empty_message, title="Offline evaluation")
    ax = plots.new_axes(ax, figsize=(7, 3.2))
    long = comparison.melt(id_vars="model", value_vars=metrics, var_name="metric", value_name="value")
    import seaborn as sns

    sns.barplot(long, x="metric", y="value", hue="model", ax=ax, palette=plots.category_colours(long["model"]))
    ax.set_xlabel("")
    ax.set_ylabel("share of holdout customers (0-1)")
    ax.set_title(f"Offline evaluation at k={int(comparison.k.iloc[0]) if 'k' in comparison else 10}", loc="left")
    return ax
