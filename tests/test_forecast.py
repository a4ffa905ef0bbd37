"""Tests of crm_analytics.forecast: series building, regressors, intervals and the backtest against the baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crm_analytics import forecast
from crm_analytics.frames import MissingColumnError


def _orders() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_time": pd.to_datetime(["2024-06-17 10:00", "2024-06-17 23:59", "2024-06-19 08:00", "2024-06-19 09:00", "2030-01-01 00:00"]),
            "order_amount": [10.0, 5.0, 7.0, -2.0, 99.0],
        }
    )


def _synthetic(n_days: int = 2 * 365, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2023-01-01", periods=n_days, freq="D")
    weekly = 1 + 0.3 * (index.dayofweek >= 5)
    yearly = 1 + 0.2 * np.sin(2 * np.pi * index.dayofyear / 365.25)
    promo = 1 + 3 * (((index.month == 6) & (index.day == 18)) | ((index.month == 11) & (index.day == 11)))
    values = 1000 * weekly * yearly * promo * np.exp(rng.normal(0, 0.1, n_days))
    return pd.Series(values, index=index, name="revenue_amount")


def test_sales_series_fills_gaps_and_nets_refunds():
    orders = _orders()
    before = orders.copy()
    daily = forecast.sales_series(orders, end="2024-06-20")
    pd.testing.assert_frame_equal(orders, before)
    assert list(daily.index.strftime("%m-%d")) == ["06-17", "06-18", "06-19", "06-20"]
    assert daily["revenue_amount"].tolist() == [15.0, 0.0, 5.0, 0.0]
    assert daily["n_orders"].tolist() == [2, 0, 1, 0]
    weekly = forecast.sales_series(orders, freq="W", end="2024-06-23")
    assert weekly["revenue_amount"].tolist() == [20.0]


def test_sales_series_missing_column():
    with pytest.raises(MissingColumnError, match="order_amount"):
        forecast.sales_series(_orders().drop(columns="order_amount"))


def test_promotion_regressors():
    days = pd.date_range("2024-06-16", "2024-06-19", freq="D")
    flags = forecast.promotion_regressors(days)
    assert flags["is_618"].tolist() == [0, 0, 1, 0]
    weeks = pd.date_range("2024-11-03", periods=3, freq="W-SUN")
    assert forecast.promotion_regressors(weeks, freq="W")["is_double11"].tolist() == [0, 0, 1]


def test_intervals_are_nested_and_ordered():
    series = _synthetic()
    for model in ("ets", "sarimax"):
        result = forecast.fit_forecast(series.iloc[:-28], horizon=28, model=model, freq="D")
        assert len(result) == 28 and result.index[0] == series.index[-28]
        assert (result["lower_95"] <= result["lower_80"]).all() and (result["lower_80"] <= result["forecast"]).all()
        assert (result["forecast"] <= result["upper_80"]).all() and (result["upper_80"] <= result["upper_95"]).all()


def test_sarimax_beats_seasonal_naive_on_promotions():
    table = forecast.backtest(_synthetic(), horizon=28, n_origins=2, model="sarimax", freq="D")
    mean = table.groupby("method")["smape_pct"].mean()
    assert mean["sarimax"] < mean["seasonal_naive"]


def test_errors_hand_checked():
    errors = forecast.forecast_errors([100, 0, 50], [110, 0, 25])
    assert errors["mape_pct"] == pytest.approx(30.0)
    assert errors["smape_pct"] == pytest.approx(100 * (20 / 210 + 0 + 50 / 75) / 3)


def test_seasonal_naive_repeats_last_season():
    series = pd.Series(np.arange(14.0), index=pd.date_range("2024-01-01", periods=14, freq="D"))
    assert forecast.seasonal_naive(series, horizon=9).tolist() == [7, 8, 9, 10, 11, 12, 13, 7, 8]


@pytest.mark.slow
def test_demo_forecast_beats_baseline(demo_home):
    from crm_analytics import warehouse

    weekly = forecast.sales_series(warehouse.connect().table("orders"), freq="W", start="2023-01-02", end="2025-12-28")
    table = forecast.backtest(weekly["revenue_amount"], horizon=8, n_origins=4, model="sarimax", freq="W")
    mean = table.groupby("method")[["mape_pct", "smape_pct"]].mean()
    assert mean.loc["sarimax", "smape_pct"] < mean.loc["seasonal_naive", "smape_pct"]
    assert mean.loc["sarimax", "mape_pct"] < mean.loc["seasonal_naive", "mape_pct"]
