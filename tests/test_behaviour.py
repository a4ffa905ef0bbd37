"""Tests of crm_analytics.behaviour on hand-made orders and baskets."""

from __future__ import annotations

import ibis
import matplotlib
import pandas as pd
import pytest

from crm_analytics import behaviour as bh
from crm_analytics.frames import MissingColumnError

matplotlib.use("Agg")

AS_OF = "2024-01-31"


def _orders() -> pd.DataFrame:
    rows = [
        ("o1", "A", "2024-01-01 09:30", 10.0, "web"),  # Monday 09h
        ("o2", "A", "2024-01-03 09:30", 20.0, "web"),  # 2 days later
        ("o3", "A", "2024-01-03 21:30", -5.0, "web"),  # refund: ignored
        ("o4", "A", "2024-01-10 09:30", 30.0, "store"),  # 7 days after o2
        ("o5", "B", "2024-01-06 14:00", 40.0, "store"),  # Saturday 14h, single purchase
        ("o6", "C", "2024-01-07 14:00", 50.0, "store"),  # Sunday
        ("o7", "C", "2024-01-07 14:00", 60.0, "store"),  # same moment: gap 0
        ("o8", "C", "2024-02-05 10:00", 70.0, "web"),  # after as_of
        ("o9", None, "2024-01-06 15:00", 80.0, "store"),  # anonymous: only in the weekday/hour view
    ]
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "order_time", "order_amount", "channel"])
    frame["order_time"] = pd.to_datetime(frame["order_time"])
    return frame


@pytest.mark.parametrize("wrap", [lambda df: df, ibis.memtable], ids=["pandas", "ibis"])
def test_inter_purchase_times(wrap):
    times = bh.inter_purchase_times(wrap(_orders()), as_of=AS_OF)
    assert times["customer_id"].tolist() == ["A", "A", "C"]
    assert times["inter_purchase_days"].tolist() == pytest.approx([2.0, 7.0, 0.0])
    summary = bh.inter_purchase_summary(times)
    assert summary.loc[0, "n_repeat_orders"] == 3 and summary.loc[0, "p50_days"] == pytest.approx(2.0)


def test_weekday_hour_cells():
    table = bh.weekday_hour(_orders(), as_of=AS_OF)
    assert len(table) == 168 and table["n_orders"].sum() == 7
    cell = table.set_index(["day_of_week", "hour"])
    assert cell.loc[(0, 9), "n_orders"] == 1 and cell.loc[(0, 9), "day_name"] == "Mon"
    assert cell.loc[(2, 9), "n_orders"] == 2  # Wednesdays 3 and 10 January
    assert cell.loc[(2, 21), "n_orders"] == 0  # the refund
    assert cell.loc[(6, 14), "revenue_amount"] == pytest.approx(110.0)
    assert table["order_pct"].sum() == pytest.approx(100)


def test_repeat_purchase_rate_overall_and_by_first_channel():
    overall = bh.repeat_purchase_rate(_orders(), as_of=AS_OF)
    assert overall.loc[0, ["n_customers", "n_repeat_customers"]].tolist() == [3, 2]
    assert overall.loc[0, "repeat_purchase_pct"] == pytest.approx(200 / 3)
    by_channel = bh.repeat_purchase_rate(_orders(), as_of=AS_OF, by="channel").set_index("channel")
    assert by_channel.loc["web", "n_customers"] == 1  # A first bought on web
    assert by_channel.loc["store", "repeat_purchase_pct"] == pytest.approx(50)  # B no, C yes


def test_inputs_checked_and_not_mutated():
    orders = _orders()
    copy = orders.copy()
    bh.weekday_hour(orders, as_of=AS_OF)
    pd.testing.assert_frame_equal(orders, copy)
    with pytest.raises(MissingColumnError, match="customer_id"):
        bh.inter_purchase_times(orders.drop(columns="customer_id"), as_of=AS_OF)


def _items():
    # 4 baskets: {x, y}, {x, y}, {x, z}, {w}; quantity 0 lines are ignored.
    rows = [("b1", "x", 1), ("b1", "y", 2), ("b1", "y", 1), ("b2", "x", 1), ("b2", "y", 1), ("b3", "x", 1), ("b3", "z", 1),
            ("b4", "w", 1), ("b4", "z", 0)]
    items = pd.DataFrame(rows, columns=["order_id", "product_id", "quantity"])
    products = pd.DataFrame({"product_id": ["x", "y", "z", "w"], "category": ["food", "pet", "pet", "books"]})
    return items, products


def test_basket_affinity_products_hand_checked():
    items, _ = _items()
    pairs = bh.basket_affinity(items, level="product", min_support=0.0)
    xy = pairs.set_index(["item_a", "item_b"]).loc[("x", "y")]
    assert xy["n_baskets"] == 2 and xy["support"] == pytest.approx(0.5)
    assert xy["confidence_a_to_b"] == pytest.approx(2 / 3) and xy["confidence_b_to_a"] == pytest.approx(1.0)
    assert xy["lift"] == pytest.approx(0.5 / (0.75 * 0.5))
    assert set(zip(pairs["item_a"], pairs["item_b"])) == {("x", "y"), ("x", "z")}
    assert bh.basket_affinity(items, level="product", min_support=0.3)["item_b"].tolist() == ["y"]


def test_basket_affinity_categories():
    items, products = _items()
    pairs = bh.basket_affinity(items, products=products, level="category", min_support=0.0)
    row = pairs.set_index(["item_a", "item_b"]).loc[("food", "pet")]
    assert row["n_baskets"] == 3 and row["lift"] == pytest.approx(0.75 / (0.75 * 0.75))
    with pytest.raises(ValueError, match="products"):
        bh.basket_affinity(items, level="category")
    with pytest.raises(ValueError, match="min_support"):
        bh.basket_affinity(items, level="product", min_support=2)


def test_plots():
    items, products = _items()
    assert bh.plot_basket_lift(bh.basket_affinity(items, products=products, min_support=0.0)) is not None
    assert bh.plot_weekday_hour(bh.weekday_hour(_orders(), as_of=AS_OF)) is not None
    assert bh.plot_inter_purchase(bh.inter_purchase_times(_orders(), as_of=AS_OF)) is not None
    matplotlib.pyplot.close("all")


def test_non_merchandise_is_left_out_of_baskets():
    items, products = _items()
    postage = pd.DataFrame({"order_id": ["b1", "b2", "b3", "b5"], "product_id": ["POST"] * 4, "quantity": [1] * 4})
    with_postage = pd.concat([items, postage], ignore_index=True)
    before = with_postage.copy()
    products = pd.concat([products, pd.DataFrame({"product_id": ["POST"], "category": ["non_merchandise"]})], ignore_index=True)
    pairs = bh.basket_affinity(with_postage, level="product", min_support=0.0, exclude_products=["POST", "M"])
    pd.testing.assert_frame_equal(pairs, bh.basket_affinity(items, level="product", min_support=0.0))
    categories = bh.basket_affinity(with_postage, products=products, level="category", min_support=0.0, exclude_products=["POST"])
    assert "non_merchandise" not in set(categories["item_a"]) | set(categories["item_b"])
    summary = bh.basket_summary(with_postage, level="product", exclude_products=["POST"])
    assert summary.iloc[0].tolist() == [4, 4, 3]  # b5 held only postage: no basket
    assert bh.basket_summary(with_postage, level="product").iloc[0].tolist() == [5, 5, 3]
    pd.testing.assert_frame_equal(with_postage, before)


def test_no_pair_above_support_gives_an_empty_table_and_an_empty_chart():
    items, products = _items()
    pairs = bh.basket_affinity(items, level="product", min_support=0.9)
    assert pairs.empty and list(pairs.columns) == bh.PAIR_COLUMNS
    summary = bh.basket_summary(items, level="product")
    message = bh.no_pairs_message(summary, min_support=0.9, minimum=2)
    assert message == "no pair reaches the minimum support of 90.00% (n baskets = 4)"
    ax = bh.plot_basket_lift(pairs, empty_message=message)
    assert [t.get_text() for t in ax.texts] == [message] and not ax.get_xticks().size
    matplotlib.pyplot.close("all")


def test_pairs_seen_in_too_few_baskets_are_left_out():
    items, _ = _items()
    pairs = bh.basket_affinity(items, level="product", min_support=0.0, min_pair_baskets=2)
    assert pairs[["item_a", "item_b", "n_baskets"]].values.tolist() == [["x", "y", 2]]  # x-z is in one basket only
    summary = bh.basket_summary(items, level="product")
    assert bh.no_pairs_message(summary, min_support=0.5, minimum=1, min_pair_baskets=3) == (
        "no pair reaches the minimum support of 50.00% and 3 baskets (n baskets = 4)")


def test_too_few_baskets_or_one_item_say_so():
    items, products = _items()
    summary = bh.basket_summary(items, level="product")
    assert bh.no_pairs_message(summary, min_support=0.01) == "too little data (n = 4 baskets, needs 100)"
    assert bh.basket_affinity(items, level="product", min_support=0.0, min_baskets=5).empty
    assert not bh.basket_affinity(items, level="product", min_support=0.0, min_baskets=4).empty
    one_category = products.assign(category="merchandise")
    single = bh.basket_summary(items, products=one_category, level="category")
    assert single.iloc[0].tolist() == [4, 1, 0]
    assert bh.no_pairs_message(single, min_support=0.01, minimum=1) == "only 1 item at this level, nothing to pair (n baskets = 4)"


def test_inter_purchase_plot_without_repeat_purchases_draws_an_empty_state():
    once = _orders().drop_duplicates("customer_id")
    ax = bh.plot_inter_purchase(bh.inter_purchase_times(once, as_of=AS_OF))
    assert "no customer has a repeat purchase" in ax.texts[0].get_text()
    matplotlib.pyplot.close("all")
