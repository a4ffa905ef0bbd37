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
    "also_bought",
    "combine_purchases",
    "compare_models",
    "evaluate",
    "evaluation_shortfall",
    "holdout_split",
    "plot_evaluation",
    "purchases",
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
    o, i = frames.as_ibis(orders), frames.as_ibis(order_items)
    frames.require_columns(o, ["order_id", customer_col, time_col], context="purchases(orders)")
    frames.require_columns(i, ["order_id", product_col], context="purchases(order_items)")
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
    joined = o.join(lines, "_oid")
    pairs = joined.group_by(customer_id=joined._cid, product_id=joined._pid).aggregate(
        n_orders=joined._oid.nunique(), first_time=joined._time.min(), last_time=joined._time.max()
    )
    return pairs.to_pandas().sort_values(["customer_id", "product_id"]).reset_index(drop=True)


def combine_purchases(*parts: pd.DataFrame) -> pd.DataFrame:
    """Merge ``purchases`` results of disjoint periods into the ``purchases`` result of their union.

    E.g. ``purchases(..., end=t)`` and ``purchases(..., start=t, end=u)`` give ``purchases(..., end=u)``
    without querying the engine again: ``n_orders`` add up (an order falls in one period only),
    ``first_time`` is the earliest and ``last_time`` the latest. Same columns, same sort order.
    """
    for part in parts:
        frames.require_columns(part, ["customer_id", "product_id", "n_orders", "first_time", "last_time"], context="combine_purchases(parts)")
    both = pd.concat(parts, ignore_index=True)
    pairs = both.groupby(["customer_id", "product_id"], sort=True, dropna=False).agg(
        n_orders=("n_orders", "sum"), first_time=("first_time", "min"), last_time=("last_time", "max")
    )
    return pairs.reset_index()


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
        rows = im.customers.get_indexer(wanted)
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
        self.co_counts_ = co
        self.interactions_ = im
        self.popularity_ = buyers
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        # score(customer, j) = sum over bought products i of similarity(i, j)
        return np.asarray((self.interactions_.matrix[rows].astype(np.float64) @ self.similarity_).todense())


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
    """Boolean mask of ``values`` found in ``candidates``, by hash lookup.

    Same result as ``values.isin(candidates)``, which for Arrow-backed strings builds one Python
    object per candidate (seconds for tens of thousands of customers).
    """
    return pd.Index(pd.unique(pd.Series(candidates))).get_indexer(values) >= 0


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
    after = pairs_after[["customer_id", "product_id"]].astype(str).drop_duplicates()
    after = after[_isin(after.customer_id, before.customer_id)]
    is_new = ~pd.MultiIndex.from_frame(after).isin(pd.MultiIndex.from_frame(before))
    return after[is_new].sort_values(["customer_id", "product_id"]).reset_index(drop=True)


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
    customers = truth.customer_id.unique()
    top = recommendations[(recommendations["rank"] <= k) & _isin(recommendations.customer_id.astype(str), customers)]
    top = top[["customer_id", "product_id"]].astype(str)
    hits = top.merge(truth, on=["customer_id", "product_id"], how="inner").groupby("customer_id").size()
    relevant = truth.groupby("customer_id").size()
    hits = hits.reindex(relevant.index, fill_value=0)
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
