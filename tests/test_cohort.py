"""Tests of crm_analytics.cohort on tiny, hand-checked order frames."""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
import pytest

from crm_analytics import cohort
from crm_analytics.frames import MissingColumnError


def _orders() -> pd.DataFrame:
    rows = [
        # a: January cohort, active in months 0 and 2, not 1
        ("a", "2024-01-05 10:00", 100.0),
        ("a", "2024-03-10 10:00", 50.0),
        # b: January cohort (last second of January), then the first second of February
        ("b", "2024-01-31 23:59:59", 10.0),
        ("b", "2024-02-01 00:00:00", 20.0),
        # c: February cohort; a refund in March does not make c active but lowers revenue
        ("c", "2024-02-15 12:00", 40.0),
        ("c", "2024-03-02 12:00", -15.0),
        # d: a refund before any purchase does not acquire d; d is a March customer
        ("d", "2024-02-20 12:00", -5.0),
        ("d", "2024-03-20 12:00", 30.0),
    ]
    df = pd.DataFrame(rows, columns=["customer_id", "order_time", "order_amount"])
    df["order_time"] = pd.to_datetime(df["order_time"], format="ISO8601")
    return df


def test_retention_matrix_hand_checked():
    orders = _orders()
    before = orders.copy()
    m = cohort.retention_matrix(orders, period="M")
    pd.testing.assert_frame_equal(orders, before)
    assert list(m.index) == list(pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]))
    assert list(m.columns) == [0, 1, 2]
    jan, feb, mar = m.to_numpy()
    np.testing.assert_allclose(jan, [1.0, 0.5, 0.5])  # b in Feb; a in Mar
    np.testing.assert_allclose(feb[:2], [1.0, 0.0])  # the refund is not activity
    assert np.isnan(feb[2])  # April is after the data ends
    assert mar[0] == 1.0 and np.isnan(mar[1:]).all()


def test_revenue_retention_and_ltv():
    orders = _orders()
    revenue = cohort.retention_matrix(orders, period="M", value="revenue")
    np.testing.assert_allclose(revenue.iloc[0].to_numpy(), [1.0, 20 / 110, 50 / 110])
    np.testing.assert_allclose(revenue.iloc[1].to_numpy()[:2], [1.0, -15 / 40])
    ltv = cohort.retention_matrix(orders, period="M", value="ltv")
    np.testing.assert_allclose(ltv.iloc[0].to_numpy(), [55.0, 65.0, 90.0])
    np.testing.assert_allclose(ltv.iloc[1].to_numpy()[:2], [40.0, 25.0])
    # the refund of d before its acquisition is outside every cohort period
    assert ltv.iloc[2, 0] == 30.0


def test_cohort_table_is_tidy_and_complete():
    table = cohort.cohort_table(_orders(), period="M")
    assert list(table.columns) == [*cohort.LONG_COLUMNS, "is_observed"]
    assert len(table) == 9  # 3 cohorts x 3 periods
    assert table.groupby("cohort_date")["cohort_size"].first().tolist() == [2, 1, 1]
    assert table["is_observed"].sum() == 6


def test_weekly_periods_and_boundaries():
    orders = _orders()
    m = cohort.retention_matrix(orders, period="W")
    # b's orders on Wednesday 31 Jan and Thursday 1 Feb fall in the same Monday-based week
    table = cohort.cohort_table(orders, period="W")
    b_week = table[(table["cohort_date"] == pd.Timestamp("2024-01-29")) & (table["period_number"] == 0)]
    assert b_week["n_active"].item() == 1 and b_week["revenue_amount"].item() == 30.0
    assert m.shape[0] == 4


def test_ibis_input_gives_the_same_matrix():
    orders = _orders()
    pd.testing.assert_frame_equal(cohort.retention_matrix(ibis.memtable(orders)), cohort.retention_matrix(orders))


def test_curves_by_channel_pool_observed_cohorts():
    customers = pd.DataFrame({"customer_id": ["a", "b", "c"], "acquisition_channel": ["store", "web", "web"]})
    curves = cohort.retention_curves(_orders(), customers, period="M")
    web = curves[curves["acquisition_channel"] == "web"].set_index("period_number")
    # web: b (January cohort, active in month 1) and c (February, inactive in month 1)
    assert web.loc[0, "value"] == 1.0
    assert web.loc[1, "value"] == 0.5 and web.loc[1, "n_customers"] == 2
    assert web.loc[2, "n_cohorts"] == 1  # only January is observed two months on
    assert set(curves["acquisition_channel"]) == {"store", "web", "unknown"}
    ltv = cohort.retention_curves(_orders(), customers, period="M", value="ltv")
    store = ltv[ltv["acquisition_channel"] == "store"]
    assert store["value"].tolist() == [100.0, 100.0, 150.0]


def test_empty_input():
    empty = _orders().iloc[0:0]
    assert cohort.retention_matrix(empty).empty


def test_missing_column_and_bad_options():
    with pytest.raises(MissingColumnError, match="order_amount"):
        cohort.retention_matrix(_orders().drop(columns="order_amount"))
    with pytest.raises(ValueError, match="period"):
        cohort.retention_matrix(_orders(), period="H")
    with pytest.raises(ValueError, match="value"):
        cohort.retention_matrix(_orders(), value="margin")
    with pytest.raises(MissingColumnError, match="acquisition_channel"):
        cohort.retention_curves(_orders())


def test_plots_return_axes():
    import matplotlib

    matplotlib.use("Agg")
    ax = cohort.plot_cohort_heatmap(cohort.retention_matrix(_orders()))
    assert ax.get_title()
    customers = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "acquisition_channel": ["store", "web", "web", "web"]})
    ax = cohort.plot_curves(cohort.retention_curves(_orders(), customers, value="ltv"), ylabel="LTV")
    assert len(ax.get_lines()) == 2


@pytest.mark.parametrize("period", ["W", "M", "Q"])
def test_share_active_matrix_agrees_with_the_cohort_table(period):
    # retention_matrix reads purchases only for the share active; it must equal n_active / cohort_size
    # of the full cohort table, refunds (also before the first purchase, and refund-only customers) included.
    rng = np.random.default_rng(7)
    n = 4_000
    orders = pd.DataFrame({
        "customer_id": rng.integers(0, 400, n).astype(str),
        "order_time": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 500 * 86400, n), unit="s"),
        "order_amount": np.round(rng.normal(50, 60, n), 2),
    })
    matrix = cohort.retention_matrix(orders, period=period)
    table = cohort.cohort_table(orders, period=period)
    expected = table.assign(share=(table["n_active"] / table["cohort_size"]).where(table["is_observed"]))
    expected = expected.pivot(index="cohort_date", columns="period_number", values="share")
    assert (orders["order_amount"] < 0).mean() > 0.15
    pd.testing.assert_frame_equal(matrix, expected, check_names=False)


@pytest.mark.parametrize("n_weeks", [1, 63, 64])
def test_active_periods_as_bits_match_the_pairs_and_join(n_weeks):
    # The share-active matrix packs each customer's active periods into a 63-bit set when the data
    # spans at most 63 periods, and takes the general path beyond; both give the same cells, including
    # a customer active in the first and in the very last period (the highest bit).
    rng = np.random.default_rng(n_weeks)
    n = 3_000
    start = pd.Timestamp("2024-01-01")  # a Monday
    orders = pd.DataFrame({
        "customer_id": rng.integers(0, 300, n).astype(str),
        "order_time": start + pd.to_timedelta(rng.integers(0, n_weeks * 7 * 86400, n), unit="s"),
        "order_amount": np.round(rng.normal(50, 60, n), 2),
    })
    edge = pd.DataFrame({"customer_id": ["edge", "edge"], "order_amount": [10.0, 20.0],
                         "order_time": [start, start + pd.Timedelta(weeks=n_weeks) - pd.Timedelta(seconds=1)]})
    orders = pd.concat([orders, edge], ignore_index=True)
    columns = {"customer_col": "customer_id", "time_col": "order_time", "amount_col": "order_amount"}
    by_bits = cohort._active_cells_by_bitset(ibis.memtable(orders), period="W", **columns)
    assert (by_bits is None) == (n_weeks > 63)
    by_pairs = cohort._cohort_expr(ibis.memtable(orders), period="W", group_cols=[], with_revenue=False, **columns).to_pandas()
    if by_bits is not None:
        keys = ["cohort_index", "period_number"]
        pd.testing.assert_frame_equal(
            by_bits.sort_values(keys).reset_index(drop=True),
            by_pairs[[*keys, "n_active"]].astype("int64").sort_values(keys).reset_index(drop=True),
        )
        assert by_bits["period_number"].max() == n_weeks - 1


@pytest.fixture
def use_time_zone():
    """``frames.use_time_zone``, reset to the default dataset's zone after the test."""
    from crm_analytics import frames

    yield frames.use_time_zone
    frames.use_time_zone(None)


def test_aware_order_times_fall_in_the_business_zones_month(use_time_zone):
    orders = pd.DataFrame({"customer_id": ["a"], "order_time": pd.to_datetime(["2024-03-01 00:00+08:00"]), "order_amount": [10.0]})
    use_time_zone("Asia/Shanghai")
    assert list(cohort.retention_matrix(orders, period="M").index) == [pd.Timestamp("2024-03-01")]
    use_time_zone("Europe/London")  # the same instant is 2024-02-29 16:00 in London
    assert list(cohort.retention_matrix(orders, period="M").index) == [pd.Timestamp("2024-02-01")]
