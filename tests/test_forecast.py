"""Tests of crm_analytics.forecast: series building, regressors, intervals and the backtest against the baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crm_analytics import datasets, forecast
from crm_analytics.frames import MissingColumnError

DEMO_EVENTS = {"618": (6, 18), "double_11": (11, 11)}


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
    weekly = 1 + 0.3 * (index.day_of_week >= 5)
    yearly = 1 + 0.2 * np.sin(2 * np.pi * index.day_of_year / 365.25)
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


def test_calendar_regressors_of_the_given_events():
    days = pd.date_range("2024-06-16", "2024-06-19", freq="D")
    flags = forecast.calendar_regressors(days, events=DEMO_EVENTS)
    assert list(flags.columns) == ["is_618", "is_double_11"]
    assert flags["is_618"].tolist() == [0, 0, 1, 0]
    weeks = pd.date_range("2024-11-03", periods=3, freq="W-SUN")
    assert forecast.promotion_regressors(weeks, freq="W", events=DEMO_EVENTS)["is_double_11"].tolist() == [0, 0, 1]
    assert forecast.calendar_regressors(days).columns.tolist() == [], "no events, no country: no market assumed"


def test_calendar_regressors_count_days_of_the_last_month():
    months = pd.date_range("2024-09-01", "2024-11-01", freq="MS")
    counts = forecast.calendar_regressors(months, freq="M", events=DEMO_EVENTS)
    assert counts["is_double_11"].tolist() == [0, 0, 1]


def test_public_holidays_of_the_dataset_country():
    weeks = pd.date_range("2010-01-03", "2011-12-25", freq="W-SUN")
    counts = forecast.calendar_regressors(weeks, freq="W", events={"black_friday_eve": (11, 25)}, country="GB")
    assert {"is_christmas_day", "is_boxing_day", "is_good_friday", "is_black_friday_eve"} <= set(counts.columns)
    assert "is_618" not in counts.columns
    christmas = counts["is_christmas_day"]
    assert christmas[christmas > 0].index.strftime("%Y-%m-%d").tolist() == ["2010-12-26", "2011-12-25"]
    assert counts.loc["2010-12-26", "is_boxing_day"] == 1 and counts.loc["2011-12-25", "is_boxing_day"] == 0
    brazil = forecast.calendar_days("2024-01-01", "2024-12-31", country="BR")
    assert brazil.loc["2024-09-07", "is_independence_day"] == 1 and brazil["is_independence_day"].sum() == 1


def test_public_holidays_merge_dated_bridge_days_and_reject_unknown_countries():
    names = forecast.public_holidays("CN", range(2023, 2025))
    assert not any(ch.isdigit() for name in names for ch in name), sorted(names)
    assert len(names["Chinese New Year (Spring Festival)"]) >= 6
    with pytest.raises(ValueError, match="'XX'"):
        forecast.public_holidays("XX", [2024])


def test_forecast_leaves_out_calendar_days_outside_the_fitted_window():
    index = pd.date_range("2010-01-03", periods=60, freq="W-SUN")  # up to late February 2011: no Christmas 2011
    series = pd.Series(100 + 10 * np.sin(np.arange(60) / 3.0), index=index)
    events = {"midsummer": (6, 21), "never_seen": (2, 29)}
    result = forecast.fit_forecast(series, horizon=6, model="sarimax", freq="W", events=events, country="GB")
    assert len(result) == 6 and result["forecast"].notna().all()
    future = pd.date_range(index[-1], periods=7, freq="W-SUN")[1:]
    fitted, ahead = forecast.calendar_for_fit(index, future, freq="W", events=events, country="GB")
    assert "is_never_seen" not in fitted.columns and "is_new_years_day" in fitted.columns
    assert fitted["is_christmas_day"].sum() == 1 and (fitted.sum() > 0).all()
    assert list(ahead.columns) == list(fitted.columns) and ahead.index.equals(future)


def test_intervals_are_nested_and_ordered():
    series = _synthetic()
    for model in ("ets", "sarimax"):
        result = forecast.fit_forecast(series.iloc[:-28], horizon=28, model=model, freq="D")
        assert len(result) == 28 and result.index[0] == series.index[-28]
        assert (result["lower_95"] <= result["lower_80"]).all() and (result["lower_80"] <= result["forecast"]).all()
        assert (result["forecast"] <= result["upper_80"]).all() and (result["upper_80"] <= result["upper_95"]).all()


def test_sarimax_beats_seasonal_naive_on_promotions():
    table = forecast.backtest(_synthetic(), horizon=28, n_origins=2, model="sarimax", freq="D", events=DEMO_EVENTS)
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

    demo = datasets.load_dataset("demo")
    assert demo.calendar_events == DEMO_EVENTS
    weekly = forecast.sales_series(warehouse.connect().table("orders"), freq="W", start="2023-01-02", end="2025-12-28")
    table = forecast.backtest(weekly["revenue_amount"], horizon=8, n_origins=4, model="sarimax", freq="W",
                              events=demo.calendar_events, country=demo.country)
    mean = table.groupby("method")[["mape_pct", "smape_pct"]].mean()
    assert mean.loc["sarimax", "smape_pct"] < mean.loc["seasonal_naive", "smape_pct"]
    assert mean.loc["sarimax", "mape_pct"] < mean.loc["seasonal_naive", "mape_pct"]


def test_too_little_history_is_said_with_counts():
    weekly = forecast.sales_series(pd.DataFrame({"order_time": pd.date_range("2024-01-01", periods=280, freq="D"),
                                                 "order_amount": np.arange(280.0)}), freq="W")
    assert len(weekly) == 40
    assert forecast.too_little_data(weekly["revenue_amount"], freq="W", horizon=8, n_origins=3) == (
        "too little data (n = 40 weeks, needs 76: 52 to fit and 3 backtest origins of 8)")
    assert forecast.too_little_data(weekly["revenue_amount"], freq="D") == ""
    assert forecast.too_little_data(weekly["revenue_amount"].iloc[:10], freq="D") == "too little data (n = 10 days, needs 28)"


@pytest.mark.parametrize("value", [0.0, 125.5])
def test_a_constant_series_has_no_variation(value):
    flat = pd.Series(value, index=pd.date_range("2022-01-02", periods=120, freq="W-SUN"))
    message = forecast.too_little_data(flat, freq="W", horizon=8, n_origins=3)
    assert message.startswith("no variation") and f"{value:g}" in message
    assert forecast.too_little_data(_synthetic(), freq="D", horizon=28, n_origins=3) == ""


def test_forecast_records_whether_the_fit_converged():
    series = _synthetic(120)
    assert forecast.fit_forecast(series, horizon=7, model="ets", freq="D").attrs["converged"] is True
    weekly = series.resample("W-SUN").sum().iloc[1:-1]
    assert isinstance(forecast.fit_forecast(weekly, horizon=4, model="sarimax", freq="W").attrs["converged"], bool)
