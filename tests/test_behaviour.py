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
