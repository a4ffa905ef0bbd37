"""Tests of crm_analytics.frames: time-zone-aware input becomes naive business-zone time."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from crm_analytics import frames


@pytest.fixture
def use_time_zone():
    """``frames.use_time_zone``, reset to the default dataset's zone after the test."""
    yield frames.use_time_zone
    frames.use_time_zone(None)


def test_aware_columns_become_naive_business_time_and_the_input_is_kept(use_time_zone):
    use_time_zone("Europe/London")
    orders = pd.DataFrame(
        {
            "order_time": pd.to_datetime(["2024-03-01 00:00+08:00", "2024-07-01 12:00+00:00"], format="ISO8601", utc=True),
            "paid_time": pd.Series([pd.Timestamp("2024-03-01 00:00", tz="Asia/Shanghai"), pd.Timestamp("2024-03-01 00:00", tz="UTC")], dtype=object),
            "ship_time": pd.to_datetime(["2024-03-02 10:00", "2024-03-03 10:00"]),
            "customer_id": ["a", "b"],
        }
    )
    before = orders.copy()
    out = frames.to_pandas(orders)
    assert out["order_time"].tolist() == [pd.Timestamp("2024-02-29 16:00"), pd.Timestamp("2024-07-01 13:00")]
    assert out["paid_time"].tolist() == [pd.Timestamp("2024-02-29 16:00"), pd.Timestamp("2024-03-01 00:00")]
    assert out["ship_time"].tolist() == orders["ship_time"].tolist(), "naive times are business-zone time already"
    pd.testing.assert_frame_equal(orders, before)
    assert frames.as_ibis(orders).schema()["order_time"].timezone is None


def test_a_column_mixing_aware_and_naive_times_is_an_error_naming_it(use_time_zone):
    use_time_zone("Asia/Shanghai")
    mixed = pd.DataFrame({"order_time": pd.Series([pd.Timestamp("2024-03-01 00:00", tz="UTC"), dt.datetime(2024, 3, 1)], dtype=object)})
    with pytest.raises(ValueError, match="'order_time' mixes time-zone-aware and naive"):
        frames.to_pandas(mixed)
    with pytest.raises(ValueError, match="order_time"):
        frames.as_ibis(mixed)


def test_frames_without_aware_times_pass_through_untouched():
    orders = pd.DataFrame({"order_time": pd.to_datetime(["2024-03-01"]), "note": pd.Series(["x"], dtype=object)})
    assert frames.to_pandas(orders) is orders


def test_the_business_zone_is_the_set_one_else_the_default_datasets(use_time_zone):
    from crm_analytics import datasets

    assert frames.business_time_zone() == datasets.load_dataset(None).time_zone
    use_time_zone("America/Sao_Paulo")
    assert frames.business_time_zone() == "America/Sao_Paulo"
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        use_time_zone("Mars/Olympus")
    assert frames.business_time_zone() == "America/Sao_Paulo"


def test_as_timestamp_converts_an_offset_into_the_business_zone(use_time_zone):
    use_time_zone("Europe/London")
    assert frames.as_timestamp("2024-03-01T00:00:00+08:00") == pd.Timestamp("2024-02-29 16:00")
    assert frames.as_timestamp("2024-03-01") == pd.Timestamp("2024-03-01")


def _orders_with_a_guest() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pd.array(["a", None, "b", None], dtype="string"), "order_amount": [60.0, 30.0, 20.0, -10.0]})


def test_anonymous_orders_are_counted_with_their_share_of_net_revenue():
    orders = _orders_with_a_guest()
    before = orders.copy()
    row = frames.anonymous_orders(orders).iloc[0]
    assert (row["n_orders"], row["n_anonymous_orders"]) == (4, 2) and row["anonymous_orders_pct"] == pytest.approx(50.0)
    assert (row["revenue_amount"], row["anonymous_revenue_amount"]) == (100.0, 20.0) and row["anonymous_revenue_pct"] == pytest.approx(20.0)
    pd.testing.assert_frame_equal(orders, before)
    none = frames.anonymous_orders(orders.iloc[:0]).iloc[0]
    assert none["n_orders"] == 0 and none["n_anonymous_orders"] == 0 and pd.isna(none["anonymous_orders_pct"])
    with pytest.raises(frames.MissingColumnError, match="customer_id"):
        frames.anonymous_orders(orders.drop(columns="customer_id"))


def test_excluded_lines_counts_non_merchandise_lines_and_value():
    items = pd.DataFrame({"product_id": ["A", "POST", "B", "POST", "M"], "quantity": [2, 1, 1, 1, 1],
                          "unit_price_amount": [5.0, 10.0, 3.0, 10.0, 2.0]})
    row = frames.excluded_lines(items, exclude_products=["POST", "M", "ADJUST"]).iloc[0]
    assert (row["n_lines"], row["n_excluded_lines"], row["n_excluded_products"]) == (5, 3, 2)
    assert row["excluded_line_amount"] == 22.0 and row["excluded_amount_pct"] == pytest.approx(100 * 22 / 35)
    nothing = frames.excluded_lines(items, exclude_products=[]).iloc[0]
    assert nothing["n_excluded_lines"] == 0 and nothing["excluded_amount_pct"] == 0.0
    no_prices = frames.excluded_lines(items[["product_id"]], exclude_products=["POST"]).iloc[0]
    assert no_prices["n_excluded_lines"] == 2 and pd.isna(no_prices["line_amount"])


def test_an_engine_table_becomes_the_frame_ibis_gives(tmp_path):
    """``to_pandas`` converts numeric columns with missing values through Arrow; every column equals Ibis's own result."""
    import ibis

    con = ibis.duckdb.connect(str(tmp_path / "t.duckdb"))
    con.raw_sql("""
        CREATE TABLE t AS SELECT * FROM (VALUES
            ('c1', 1.5, 1, 1, TRUE, 'a', TIMESTAMP '2024-01-01', 1.10::DECIMAL(18, 2)),
            ('c2', NULL, NULL, 2, NULL, NULL, NULL, NULL),
            ('c3', -2.25, 3, 3, FALSE, 'c', TIMESTAMP '2024-03-01 12:00', 2.00::DECIMAL(18, 2)),
            ('c4', 0.0, 4, 4, TRUE, 'd', TIMESTAMP '2024-04-01', 0.01::DECIMAL(18, 2))
        ) AS v(customer_id, amount, count, whole, flag, label, seen, price)
    """)
    table = con.table("t").mutate(ratio=lambda t: t.amount / t["count"])
    ours, ibis_own = frames.to_pandas(table), table.to_pandas()
    pd.testing.assert_frame_equal(ours, ibis_own)
    assert ours["count"].isna().tolist() == [False, True, False, False]
    assert ours["ratio"].isna().tolist() == [False, True, False, False]
