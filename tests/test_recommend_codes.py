"""The integer-code paths of the recommender give the same tables as the plain pandas joins and groupings they replace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crm_analytics import recommend as rec


def _random_orders(seed: int, n_orders: int = 400):
    """Orders and lines with ids whose text order differs from their numeric order (c10 < c2), via DuckDB."""
    rng = np.random.default_rng(seed)
    orders = pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n_orders)],
            "customer_id": [f"c{i}" for i in rng.integers(0, 40, n_orders)],
            "order_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 360, n_orders), unit="D"),
        }
    )
    n_lines = n_orders * 3
    items = pd.DataFrame(
        {"order_id": [f"o{i}" for i in rng.integers(0, n_orders, n_lines)], "product_id": [f"p{i}" for i in rng.integers(0, 25, n_lines)]}
    )
    return orders, items


@pytest.fixture(scope="module")
def periods():
    orders, items = _random_orders(7)
    split, end = pd.Timestamp("2024-10-01"), pd.Timestamp("2025-01-01")
    return rec.purchases(orders, items, end=split), rec.purchases(orders, items, start=split, end=end)


def _combine_by_groupby(*parts):
    both = pd.concat(parts, ignore_index=True)
    return both.groupby(["customer_id", "product_id"], sort=True, dropna=False).agg(
        n_orders=("n_orders", "sum"), first_time=("first_time", "min"), last_time=("last_time", "max")
    ).reset_index()


def test_combine_purchases_equals_the_text_groupby(periods):
    train, holdout = periods
    combined = rec.combine_purchases(train, holdout)
    pd.testing.assert_frame_equal(combined, _combine_by_groupby(train, holdout), check_exact=True)
    assert combined.customer_id.is_monotonic_increasing and "c10" in set(combined.customer_id)


def test_combine_purchases_skips_missing_times_like_groupby(periods):
    train, holdout = periods
    gappy = holdout.copy()
    gappy.loc[gappy.index[:5], "first_time"] = pd.NaT
    pd.testing.assert_frame_equal(rec.combine_purchases(train, gappy), _combine_by_groupby(train, gappy), check_exact=True)


def test_holdout_split_equals_the_multiindex_lookup(periods):
    train, holdout = periods
    after = pd.concat([holdout, holdout.head(10), holdout.assign(customer_id="stranger").head(3)], ignore_index=True)
    before = train[["customer_id", "product_id"]].astype(str)
    expected = after[["customer_id", "product_id"]].astype(str).drop_duplicates()
    expected = expected[expected.customer_id.isin(before.customer_id)]
    expected = expected[~pd.MultiIndex.from_frame(expected).isin(pd.MultiIndex.from_frame(before))]
    expected = expected.sort_values(["customer_id", "product_id"]).reset_index(drop=True)
    truth = rec.holdout_split(train, after)
    pd.testing.assert_frame_equal(truth, expected, check_exact=True)
    assert len(truth) > 0 and "stranger" not in set(truth.customer_id)


def test_evaluate_equals_counting_hits_with_a_join(periods):
    train, holdout = periods
    truth = rec.holdout_split(train, holdout)
    recommendations = rec.ItemCF(n_neighbours=5).fit(train).recommend(truth.customer_id.unique(), n=5)
    top = recommendations[recommendations["rank"] <= 5]
    hits = top.merge(truth, on=["customer_id", "product_id"]).groupby("customer_id").size()
    relevant = truth.groupby("customer_id").size()
    hits = hits.reindex(relevant.index, fill_value=0)
    metrics = rec.evaluate(recommendations, truth, k=5, n_products=25).iloc[0]
    assert hits.sum() > 0
    assert metrics.precision_at_k == (hits / 5).mean()
    assert metrics.recall_at_k == (hits / relevant).mean()
    assert metrics.hit_rate == (hits > 0).mean()


def test_already_bought_finds_the_pairs_a_join_finds(periods):
    train, _ = periods
    recommendations = pd.DataFrame(
        {"customer_id": [train.customer_id.iloc[0], train.customer_id.iloc[1], "nobody", train.customer_id.iloc[0]],
         "rank": [1, 2, 1, 3], "product_id": [train.product_id.iloc[0], "p-new", train.product_id.iloc[0], train.product_id.iloc[0]]}
    )
    expected = recommendations.merge(train[["customer_id", "product_id"]], on=["customer_id", "product_id"])
    found = rec.already_bought(recommendations, train)
    pd.testing.assert_frame_equal(found, expected)
    assert len(found) == 2
    assert rec.already_bought(recommendations.iloc[[1, 2]], train).empty


def test_with_products_equals_the_left_merge():
    products = pd.DataFrame({"product_id": ["p2", "p10", "p1"], "product_name": ["Two", "Ten", "One"], "category": ["a", "b", "a"]})
    table = pd.DataFrame({"customer_key": ["k1", "k1", "k2"], "product_id": ["p10", "p1", "p10"], "score": [0.5, 0.25, 0.75]}, index=[5, 6, 7])
    joined = rec.with_products(table, products)
    pd.testing.assert_frame_equal(joined, table.merge(products, on="product_id", how="left"))
    assert joined.product_name.tolist() == ["Ten", "One", "Ten"]
    unknown = table.assign(product_id=["p10", "p99", "p1"])  # a product without details: the merge's missing values
    pd.testing.assert_frame_equal(rec.with_products(unknown, products), unknown.merge(products, on="product_id", how="left"))


def test_positions_match_get_indexer_with_missing_and_plain_object_text():
    labels = pd.Series(["b", None, "a"], dtype="str")
    values = pd.Series(["a", "z", None, "b", "a"], dtype="str")
    expected = pd.Index(labels).get_indexer(values)
    assert rec._positions(values, labels).tolist() == expected.tolist() == [2, -1, 1, 0, 2]
    as_objects = np.array(["a", "z", None, "b", "a"], dtype=object)
    assert rec._positions(as_objects, pd.Index(labels)).tolist() == expected.tolist()


def test_dense_and_sparse_similarity_score_to_the_bit(periods, monkeypatch):
    train, _ = periods
    dense = rec.ItemCF(n_neighbours=8).fit(train)
    assert dense._dense_similarity is not None
    monkeypatch.setattr(rec, "DENSE_SIMILARITY_MAX_PRODUCTS", 0)
    sparse_only = rec.ItemCF(n_neighbours=8).fit(train)
    assert sparse_only._dense_similarity is None
    rows = np.arange(len(dense.interactions_.customers))
    assert np.array_equal(dense._scores(rows), sparse_only._scores(rows))
    pd.testing.assert_frame_equal(dense.recommend(n=5), sparse_only.recommend(n=5), check_exact=True)
