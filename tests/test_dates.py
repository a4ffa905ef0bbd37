"""Tests of crm_analytics.dates: dates derived from the data, and given dates checked against it."""

from __future__ import annotations

import pandas as pd
import pytest

from crm_analytics import dates

DEMO_SPAN = dates.DataRange(pd.Timestamp("2023-01-01 08:15"), pd.Timestamp("2025-12-31 21:40"))


def _orders(*times: str) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [f"c{i}" for i in range(len(times))], "order_time": pd.to_datetime(list(times))})


def test_data_range_reads_first_and_last_order():
    orders = _orders("2024-05-03 10:00", "2024-01-02 09:30", "2024-03-01 12:00")
    span = dates.data_range(orders)
    assert span == dates.DataRange(pd.Timestamp("2024-01-02 09:30"), pd.Timestamp("2024-05-03 10:00"))
    assert span.describe() == "orders run from 2024-01-02 to 2024-05-03"
    assert len(orders) == 3 and orders["order_time"].iloc[0] == pd.Timestamp("2024-05-03 10:00")  # not mutated


def test_data_range_of_no_orders_is_an_error():
    with pytest.raises(ValueError, match="no orders"):
        dates.data_range(_orders())


def test_data_range_names_a_missing_column():
    with pytest.raises(Exception, match="order_time"):
        dates.data_range(pd.DataFrame({"customer_id": ["c1"]}))


def test_demo_range_gives_the_dates_the_demo_used_to_hard_code():
    assert dates.default_as_of(DEMO_SPAN) == pd.Timestamp("2026-01-01")
    assert dates.observation_end(DEMO_SPAN) == pd.Timestamp("2025-12-31")
    assert dates.calibration_end(DEMO_SPAN) == pd.Timestamp("2025-07-01")  # was 2025-06-30
    assert dates.churn_as_of(DEMO_SPAN, window_days=90) == pd.Timestamp("2025-10-03")  # was 2025-09-30
    assert dates.whole_weeks(DEMO_SPAN) == (pd.Timestamp("2023-01-02"), pd.Timestamp("2025-12-28"))


def test_whole_weeks_keeps_a_range_that_starts_monday_and_ends_sunday():
    span = dates.DataRange(pd.Timestamp("2024-01-01 10:00"), pd.Timestamp("2024-01-14 23:00"))  # Monday .. Sunday
    assert dates.whole_weeks(span) == (pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-14"))


def test_whole_weeks_refuses_data_without_a_whole_week():
    span = dates.DataRange(pd.Timestamp("2024-01-03"), pd.Timestamp("2024-01-09"))  # Wednesday .. Tuesday
    with pytest.raises(dates.DateOutOfRangeError, match="2024-01-03 to 2024-01-09"):
        dates.whole_weeks(span)


def test_calibration_end_needs_a_span_to_split():
    one_day = dates.DataRange(pd.Timestamp("2024-01-03 09:00"), pd.Timestamp("2024-01-03 18:00"))
    with pytest.raises(dates.DateOutOfRangeError, match="more than two days"):
        dates.calibration_end(one_day)
    with pytest.raises(ValueError, match="between 0 and 1"):
        dates.calibration_end(DEMO_SPAN, share=1.0)


def test_empty_parameter_takes_the_derived_date():
    derived = dates.default_as_of(DEMO_SPAN)
    assert dates.given_or_derived("", DEMO_SPAN, name="as_of", default=derived) == derived
    assert dates.given_or_derived(None, DEMO_SPAN, name="as_of", default=derived) == derived


def test_given_dates_inside_the_range_are_kept_edges_included():
    for value in ("2023-01-01", "2024-06-30", "2026-01-01"):
        assert dates.given_or_derived(value, DEMO_SPAN, name="as_of", default=pd.NaT) == pd.Timestamp(value)


@pytest.mark.parametrize("value", ["2022-12-31", "2026-01-02", "2030-06-30"])
def test_a_date_outside_the_data_names_the_data_range(value):
    with pytest.raises(dates.DateOutOfRangeError, match=f"as_of {value} lies outside the data: orders run from 2023-01-01 to 2025-12-31"):
        dates.given_or_derived(value, DEMO_SPAN, name="as_of", default=pd.NaT)


def test_a_window_running_past_the_data_is_refused_with_the_latest_usable_date():
    dates.require_observed_window(pd.Timestamp("2025-10-03"), 90, DEMO_SPAN, name="as_of")
    with pytest.raises(dates.DateOutOfRangeError, match="latest as_of with an observed window is 2025-10-03"):
        dates.require_observed_window(pd.Timestamp("2025-10-04"), 90, DEMO_SPAN, name="as_of")
