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
