"""Item-to-item CF and the popularity baseline on hand-checked cases; the demo-data comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crm_analytics import recommend as rec
from crm_analytics.frames import MissingColumnError

T = pd.Timestamp


def _pairs(rows):
    return pd.DataFrame(rows, columns=["customer_id", "product_id"])


# u1..u3 buy A and B together; u4 buys C and D; u5 buys A only; C is the most popular single item.
PAIRS = _pairs(
    [("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B"), ("u3", "A"), ("u3", "B"), ("u4", "C"), ("u4", "D"), ("u5", "A"),
     ("u6", "C"), ("u7", "C"), ("u8", "C"), ("u9", "C"), ("u6", "D")]
)


def test_purchases_from_orders_and_items():
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3", "o4"],
            "customer_id": ["c1", "c1", "c2", "c2"],
            "order_time": [T("2024-01-01"), T("2024-02-01"), T("2024-01-15"), T("2024-03-01")],
            "is_refund": [False, False, False, True],
        }
    )
    items = pd.DataFrame({"order_id": ["o1", "o1", "o2", "o3", "o4"], "product_id": ["A", "B", "A", "C", "C"]})
    pairs = rec.purchases(orders, items)
    assert pairs[["customer_id", "product_id", "n_orders"]].values.tolist() == [["c1", "A", 2], ["c1", "B", 1], ["c2", "C", 1]]
    assert pairs.loc[0, "first_time"] == T("2024-01-01") and pairs.loc[0, "last_time"] == T("2024-02-01")
    assert len(rec.purchases(orders, items, end="2024-01-10")) == 2


def test_combine_purchases_equals_purchases_over_the_union():
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3", "o4", "o5"],
            "customer_id": ["c1", "c1", "c2", "c2", "c1"],
            "order_time": [T("2024-01-01"), T("2024-02-01"), T("2024-01-15"), T("2024-03-01"), T("2024-03-05")],
        }
    )
    items = pd.DataFrame({"order_id": ["o1", "o1", "o2", "o3", "o4", "o5"], "product_id": ["A", "B", "A", "C", "C", "D"]})
    split = "2024-01-20"
    combined = rec.combine_purchases(rec.purchases(orders, items, end=split), rec.purchases(orders, items, start=split))
    pd.testing.assert_frame_equal(combined, rec.purchases(orders, items))
    assert combined.set_index(["customer_id", "product_id"]).loc[("c1", "A"), "n_orders"] == 2


def test_cosine_similarity_by_hand():
    model = rec.ItemCF(shrinkage=0).fit(PAIRS)
    sim = pd.DataFrame(model.similarity_.toarray(), index=model.interactions_.products, columns=model.interactions_.products)
    # A: 4 buyers, B: 3, co 3 -> 3 / sqrt(12); C: 5 buyers, D: 2, co 2 -> 2 / sqrt(10)
    assert sim.loc["A", "B"] == pytest.approx(3 / np.sqrt(12))
    assert sim.loc["C", "D"] == pytest.approx(2 / np.sqrt(10))
    assert sim.loc["A", "C"] == 0 and sim.loc["A", "A"] == 0


def test_item_cf_recommends_the_co_bought_product_and_never_a_seen_one():
    model = rec.ItemCF(shrinkage=0).fit(PAIRS)
    recs = model.recommend(["u5", "u7", "u1"], n=3)
    assert recs[recs.customer_id == "u5"].product_id.tolist() == ["B"]
    assert recs[recs.customer_id == "u7"].product_id.tolist() == ["D"]
    assert recs[recs.customer_id == "u1"].empty  # bought A and B: nothing similar left
    merged = recs.merge(PAIRS, on=["customer_id", "product_id"])
    assert merged.empty


def test_popularity_and_unknown_customers():
    model = rec.Popularity().fit(PAIRS)
    recs = model.recommend(["u5", "new"], n=2)
    # buyers: C 5, A 4, B 3, D 2
    assert recs[recs.customer_id == "u5"].product_id.tolist() == ["C", "B"]
    assert recs[recs.customer_id == "new"].product_id.tolist() == ["C", "A"]
    cf_new = rec.ItemCF().fit(PAIRS).recommend(["new"], n=1)
    assert cf_new.product_id.tolist() == ["C"]


def test_also_bought():
    table = rec.also_bought(rec.ItemCF(shrinkage=0).fit(PAIRS), n=2, min_customers=2)
    a = table[table.product_id == "A"]
    assert a.also_bought_product_id.tolist() == ["B"]
    assert a.n_customers_both.iloc[0] == 3 and a.also_bought_pct.iloc[0] == pytest.approx(75.0)
    assert set(table.product_id) == {"A", "B", "C", "D"}


def test_evaluation_on_a_hand_checked_case():
    recs = pd.DataFrame(
        {
            "customer_id": ["x"] * 3 + ["y"] * 3,
            "rank": [1, 2, 3] * 2,
            "product_id": ["P1", "P2", "P3", "P1", "P4", "P5"],
        }
    )
    truth = _pairs([("x", "P2"), ("x", "P9"), ("y", "P7")])
    result = rec.evaluate(recs, truth, k=2, n_products=10).iloc[0]
    # x: top-2 {P1, P2}, 1 hit of 2 relevant; y: top-2 {P1, P4}, no hit
    assert result.n_customers == 2
    assert result.precision_at_k == pytest.approx((1 / 2 + 0) / 2)
    assert result.recall_at_k == pytest.approx((1 / 2 + 0) / 2)
    assert result.hit_rate == pytest.approx(0.5)
    assert result.coverage_pct == pytest.approx(30.0)  # P1, P2, P4 of 10


def _orders_with_postage_and_a_guest():
    orders = pd.DataFrame({
        "order_id": ["o1", "o2", "o3", "o4"],
        "customer_id": pd.array(["c1", "c2", None, "c2"], dtype="string"),
        "order_time": [T("2024-01-01"), T("2024-01-02"), T("2024-01-03"), T("2024-02-01")],
    })
    items = pd.DataFrame({"order_id": ["o1", "o1", "o2", "o2", "o3", "o3", "o4"],
                          "product_id": ["A", "POST", "A", "B", "B", "POST", "POST"]})
    return orders, items


def test_purchases_leave_out_non_merchandise_and_orders_without_a_customer():
    orders, items = _orders_with_postage_and_a_guest()
    before = orders.copy()
    pairs = rec.purchases(orders, items, exclude_products=["POST", "M"])
    assert pairs[["customer_id", "product_id"]].values.tolist() == [["c1", "A"], ["c2", "A"], ["c2", "B"]]
    pd.testing.assert_frame_equal(orders, before)
    everything = rec.purchases(orders, items)
    assert "POST" in set(everything["product_id"]) and everything["customer_id"].notna().all()
    assert set(everything["customer_id"]) == {"c1", "c2"}, "the guest's order is no customer's"


def test_non_merchandise_is_never_recommended_nor_evaluated():
    orders, items = _orders_with_postage_and_a_guest()
    catalogue = ["A", "B", "C"]  # the products table without POST
    train = rec.purchases(orders, items, exclude_products=["POST"], end="2024-01-10")
    model = rec.Popularity().fit(train, products=catalogue)
    assert "POST" not in set(model.recommend(n=5)["product_id"])
    truth = rec.holdout_split(train, rec.purchases(orders, items, exclude_products=["POST"], start="2024-01-10"))
    assert truth.empty, "c2's only later purchase is postage"
    comparison = rec.compare_models({"popularity": rec.Popularity()}, train, _pairs([("c1", "B")]), products=catalogue, k=2)
    assert comparison[["model", "n_customers", "hit_rate"]].values.tolist() == [["popularity", 1, 1.0]]
    assert comparison["coverage_pct"].iloc[0] == pytest.approx(100 / 3), "B of the three catalogue products (C has no buyer)"


def test_too_few_test_customers_are_not_evaluated_and_say_why():
    truth = _pairs([(f"u{i}", "A") for i in range(12)])
    message = rec.evaluation_shortfall(truth)
    assert message.startswith("too little data (n = 12 test customers, needs 100)")
    assert rec.evaluation_shortfall(truth, minimum=12) == ""
    with pytest.raises(ValueError, match="minimum"):
        rec.evaluation_shortfall(truth, minimum=0)
    empty = rec.compare_models({}, PAIRS, truth, products=["A"], k=10)
    assert empty.empty and list(empty.columns) == rec.EVALUATION_COLUMNS
    ax = rec.plot_evaluation(empty, empty_message=message)
    assert ax.texts[0].get_text() == message and ax.get_title() == "Offline evaluation"
    import matplotlib.pyplot as plt

    plt.close("all")


def test_holdout_split_keeps_new_products_of_known_customers():
    before = _pairs([("a", "P1"), ("b", "P2")])
    after = _pairs([("a", "P1"), ("a", "P3"), ("c", "P1"), ("b", "P2")])
    assert rec.holdout_split(before, after).values.tolist() == [["a", "P3"]]


def test_errors_and_no_mutation():
    before = PAIRS.copy()
    rec.ItemCF().fit(PAIRS).recommend(n=2)
    pd.testing.assert_frame_equal(PAIRS, before)
    with pytest.raises(RuntimeError, match="not fitted"):
        rec.ItemCF().recommend(["u1"])
    with pytest.raises(MissingColumnError, match="product_id"):
        rec.ItemCF().fit(PAIRS.drop(columns="product_id"))
    with pytest.raises(ValueError):
        rec.ItemCF(n_neighbours=0).fit(PAIRS)


@pytest.mark.slow
def test_item_cf_beats_popularity_on_demo_data(demo_home):
    from crm_analytics import warehouse

    con = warehouse.connect()
    from crm_analytics.dates import window_end

    orders, items = con.table("orders"), con.table("order_items")
    end = window_end(orders)
    split = end - pd.Timedelta(days=120)
    train = rec.purchases(orders, items, end=split)
    truth = rec.holdout_split(train, rec.purchases(orders, items, start=split, end=end))
    products = con.table("products").product_id.to_pandas()
    scores = {}
    for name, model in {"item_cf": rec.ItemCF(), "popularity": rec.Popularity()}.items():
        model.fit(train, products=products)
        scores[name] = rec.evaluate(model.recommend(truth.customer_id.unique(), n=10), truth, k=10, n_products=len(products)).iloc[0]
    assert scores["item_cf"].n_customers > 100
    assert scores["item_cf"].recall_at_k > scores["popularity"].recall_at_k
    assert scores["item_cf"].coverage_pct > scores["popularity"].coverage_pct


@pytest.mark.slow
def test_notebook_runs_with_pseudonymous_keys_only(demo_home, tmp_path):
    import papermill as pm
    import yaml

    from crm_analytics import paths

    params = yaml.safe_load((paths.parameters_dir() / "recommendation" / "default.yaml").read_text(encoding="utf-8"))
    out = tmp_path / "recommendation.ipynb"
    pm.execute_notebook(str(paths.notebooks_dir() / "recommendation.ipynb"), str(out), parameters={**params, "output_dir": str(tmp_path)}, kernel_name="python3")
    top_n = pd.read_parquet(tmp_path / "tables" / "top_n_per_customer.parquet")
    assert "customer_id" not in top_n.columns and top_n.customer_key.str.startswith("cus_").all()
    evaluation = pd.read_parquet(tmp_path / "tables" / "evaluation.parquet").set_index("model")
    assert evaluation.loc["item_cf", "recall_at_k"] > evaluation.loc["popularity", "recall_at_k"]
