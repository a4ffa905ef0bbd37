"""Tests of crm_analytics.parsing: time zones and the daylight-saving rule, the default business zone."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from crm_analytics import parsing, paths

# (zone, local time, the instant in UTC by the rule, what happens at it)
DST_CASES = [
    ("Europe/London", "2024-10-27 01:30:00", "2024-10-27 00:30:00", "repeated hour: the first occurrence, BST"),
    ("Europe/London", "2024-03-31 01:30:00", "2024-03-31 01:30:00", "skipped hour: the offset before the change, GMT"),
    ("Europe/London", "2024-07-01 12:00:00", "2024-07-01 11:00:00", "an ordinary summer time"),
    ("America/Sao_Paulo", "2017-02-18 23:41:47", "2017-02-19 01:41:47", "repeated hour: the first occurrence, -02"),
    ("America/Sao_Paulo", "2016-10-16 00:41:00", "2016-10-16 03:41:00", "skipped hour: the offset before the change, -03"),
    ("America/Sao_Paulo", "2017-01-10 12:00:00", "2017-01-10 14:00:00", "an ordinary summer time"),
]


def _stamps(*values: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values))).astype("datetime64[us]")


@pytest.mark.parametrize(("zone", "local", "utc", "case"), DST_CASES)
def test_local_times_at_daylight_saving_changes_become_one_instant(zone, local, utc, case):
    instant = parsing.localize(_stamps(local), zone).iloc[0]
    assert instant == pd.Timestamp(utc, tz="UTC"), case
    assert parsing.convert_zone(_stamps(local), zone, "UTC").iloc[0] == pd.Timestamp(utc), case


def test_a_skipped_local_time_moves_forward_by_the_gap():
    london = parsing.convert_zone(_stamps("2024-03-31 01:30:00"), "Europe/London", "Europe/London")
    sao_paulo = parsing.convert_zone(_stamps("2016-10-16 00:41:00"), "America/Sao_Paulo", "America/Sao_Paulo")
    assert london.iloc[0] == pd.Timestamp("2024-03-31 02:30:00")
    assert sao_paulo.iloc[0] == pd.Timestamp("2016-10-16 01:41:00")


def test_utc_instants_of_the_repeated_hour_both_read_as_local_times():
    utc = _stamps("2024-10-27 00:30:00", "2024-10-27 01:30:00", "2017-02-19 01:41:47", "2017-02-19 02:41:47")
    london = parsing.convert_zone(utc.iloc[:2], "UTC", "Europe/London")
    sao_paulo = parsing.convert_zone(utc.iloc[2:], "UTC", "America/Sao_Paulo")
    assert london.tolist() == [pd.Timestamp("2024-10-27 01:30:00")] * 2
    assert sao_paulo.tolist() == [pd.Timestamp("2017-02-18 23:41:47")] * 2
    # back to UTC, the repeated local time is its first occurrence
    assert parsing.convert_zone(london, "Europe/London", "UTC").tolist() == [pd.Timestamp("2024-10-27 00:30:00")] * 2


def test_missing_values_stay_missing_and_the_input_is_kept():
    stamps = pd.Series([pd.Timestamp("2024-10-27 01:30:00"), pd.NaT]).astype("datetime64[us]")
    before = stamps.copy()
    out = parsing.convert_zone(stamps, "Europe/London", "Asia/Shanghai")
    assert out.iloc[0] == pd.Timestamp("2024-10-27 08:30:00") and pd.isna(out.iloc[1])
    pd.testing.assert_series_equal(stamps, before)


def test_daylight_saving_times_of_a_source_are_parsed_not_quarantined():
    raw = pd.Series(["2017-02-18 23:41:47", "2016-10-16 00:41:00", "2017-02-18 22:10:00"])
    out = parsing.parse_datetimes(raw, formats=["%Y-%m-%d %H:%M:%S"], time_zone="America/Sao_Paulo", business_time_zone="Asia/Shanghai")
    assert out["reason"].tolist() == ["", "", ""]
    assert out["value"].tolist() == [pd.Timestamp("2017-02-19 09:41:47"), pd.Timestamp("2016-10-16 11:41:00"), pd.Timestamp("2017-02-19 08:10:00")]
    iso = parsing.parse_datetimes(raw, time_zone="America/Sao_Paulo", business_time_zone="UTC")
    assert iso["reason"].tolist() == ["", "", ""] and iso["value"].iloc[0] == pd.Timestamp("2017-02-19 01:41:47")


def test_offsets_are_converted_into_the_business_zone():
    raw = pd.Series(["2024-03-01T00:00:00+08:00", "2024-10-27T00:30:00Z", "2024-10-27T01:30:00Z"])
    london = parsing.parse_datetimes(raw, business_time_zone="Europe/London")["value"]
    assert london.tolist() == [pd.Timestamp("2024-02-29 16:00"), pd.Timestamp("2024-10-27 01:30"), pd.Timestamp("2024-10-27 01:30")]
    shanghai = parsing.parse_datetimes(raw, business_time_zone="Asia/Shanghai")["value"]
    assert shanghai.iloc[0] == pd.Timestamp("2024-03-01 00:00")


def test_the_default_business_zone_is_the_default_datasets(tmp_path, monkeypatch):
    document = {"time_zone": "America/Sao_Paulo", "currency": "BRL", "country": "BR", "locale": "pt_BR"}
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    monkeypatch.setenv(paths.DATASET_ENV, str(tmp_path / "shop.yaml"))
    assert parsing.default_business_time_zone() == "America/Sao_Paulo"
    out = parsing.parse_datetimes(pd.Series(["2024-01-01T12:00:00Z"]))
    assert out["value"].iloc[0] == pd.Timestamp("2024-01-01 09:00")
