"""Standardisers: hand-checked examples and properties (idempotent, never raise on arbitrary text)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from crm_analytics import regions
from crm_analytics.cleansing import standardise as st

ANY_TEXT = hs.one_of(hs.none(), hs.text(max_size=40), hs.from_regex(r"[+0-9 ()\-.eE＋０-９]{0,20}", fullmatch=True))
FAST = settings(max_examples=150, deadline=None)


@pytest.mark.parametrize(
    ("raw", "e164", "kind", "reason"),
    [
        ("+86 138-0013-8000", "+8613800138000", "mobile", ""),
        ("008613800138000", "+8613800138000", "mobile", ""),
        ("13800138000", "+8613800138000", "mobile", ""),
        ("１３８００１３８０００", "+8613800138000", "mobile", ""),
        ("13800138000.0", "+8613800138000", "mobile", ""),
        ("020-12345678", "+862012345678", "fixed_line", ""),
        ("1.38001E+10", None, "", st.EXCEL_MANGLED),
        ("1.38E+10", None, "", st.EXCEL_MANGLED),
        ("not a phone", None, "", st.INVALID_PHONE),
        ("12345", None, "", st.INVALID_PHONE),
    ],
)
def test_phone_examples(raw, e164, kind, reason):
    assert st.normalise_phone(raw, "CN") == (e164, kind, reason)


def test_phone_default_region_is_configurable():
    frame = st.standardise_phone(pd.Series(["(202) 555-0143"]), default_region="US")
    assert frame.loc[0, "phone"] == "+12025550143"


@pytest.mark.parametrize(
    ("raw", "region", "e164", "kind"),
    [
        ("07911 123456", "GB", "+447911123456", "mobile"),
        ("020 7946 0018", "GB", "+442079460018", "fixed_line"),
        ("0044 7911 123456", "BR", "+447911123456", "mobile"),
        ("(11) 91234-5678", "BR", "+5511912345678", "mobile"),
        ("+55 21 2345-6789", "GB", "+552123456789", "fixed_line"),
    ],
)
def test_phone_region_is_the_datasets_country(raw, region, e164, kind):
    assert st.normalise_phone(raw, region) == (e164, kind, "")


def test_phone_without_region_needs_a_country_code():
    assert st.normalise_phone("+44 7911 123456") == ("+447911123456", "mobile", "")
    assert st.normalise_phone("07911 123456") == (None, "", st.INVALID_PHONE)
    assert st.normalise_phone("13800138000") == (None, "", st.INVALID_PHONE), "no market is assumed"
    # 07700 900xxx is Ofcom's range reserved for drama: never a real number
    assert st.normalise_phone("07700 900123", "GB") == (None, "", st.INVALID_PHONE)


def test_validation_reads_the_phone_region_from_its_options():
    from dataclasses import replace

    from crm_analytics import datasets
    from crm_analytics.cleansing import validate

    raw = pd.DataFrame({"customer_id": ["a", "b"], "phone": ["07911 123456", "(11) 91234-5678"], "source": ["web", "web"],
                        "_source": "s", "_source_file": "f.csv", "_source_row": [1, 2]})
    as_of = pd.Timestamp("2025-01-01")
    british = validate.validate_source("s", raw, {"table": "customers"}, as_of=as_of, default_region="GB")
    assert british.clean["phone"].fillna("").tolist() == ["+447911123456", ""], "an invalid phone is emptied, the row kept"
    assert british.quarantine["reason"].tolist() == [st.INVALID_PHONE]
    brazilian = replace(datasets.load_dataset("demo"), country="BR")
    from_dataset = validate.validate_source("s", raw, {"table": "customers"}, as_of=as_of, dataset=brazilian)
    assert from_dataset.clean["phone"].fillna("").tolist() == ["", "+5511912345678"]


def test_phone_frame_keeps_index_and_treats_missing_as_no_error():
    frame = st.standardise_phone(pd.Series([None, "13800138000"], index=[7, 9]), default_region="CN")
    assert list(frame.index) == [7, 9]
    assert frame.loc[7, "reason"] == "" and pd.isna(frame.loc[7, "phone"])


@pytest.mark.parametrize(
    ("raw", "expected", "reason"),
    [
        (" Zhang.San＠QQ.com ", "zhang.san@qq.com", ""),
        ("zhang san@163.com", "zhangsan@163.com", ""),
        ("ＡＢＣ@Example.COM", "abc@example.com", ""),
        ("bad@", None, st.INVALID_EMAIL),
        ("no-at-sign.com", None, st.INVALID_EMAIL),
        ("a..b@x.com", None, st.INVALID_EMAIL),
    ],
)
def test_email_examples(raw, expected, reason):
    assert st.normalise_email(raw) == (expected, reason)


@pytest.mark.parametrize(
    ("raw", "name", "key"),
    [
        ("张 三", "张三", "san zhang"),
        ("張三", "張三", "san zhang"),
        ("ZHANG san", "Zhang San", "san zhang"),
        ("san  zhang", "San Zhang", "san zhang"),
        ("李小明", "李小明", "li xiaoming"),
        ("Li Xiaoming", "Li Xiaoming", "li xiaoming"),
        ("ｗａｎｇ　ｗｕ", "Wang Wu", "wang wu"),
    ],
)
def test_name_examples(raw, name, key):
    assert st.normalise_name(raw) == name
    assert st.name_key(raw) == key


def test_chinese_names_are_never_case_changed():
    assert st.normalise_name("王Anna") == "王Anna"


@pytest.mark.parametrize(
    ("raw", "amount", "currency"),
    [
        ("¥1,234.50", 1234.5, "CNY"),
        ("￥1,234.50", 1234.5, "CNY"),
        ("1,234元", 1234.0, "CNY"),
        ("RMB 99", 99.0, "CNY"),
        ("（123.00）", -123.0, None),
        ("(123.00)", -123.0, None),
        ("123.00-", -123.0, None),
        ("１２３．５", 123.5, None),
        ("-45.5", -45.5, None),
        ("USD 10", 10.0, "USD"),
    ],
)
def test_amount_examples(raw, amount, currency):
    assert st.parse_amount(raw) == (amount, currency, "")


@pytest.mark.parametrize("raw", ["abc", "12abc", "1.2.3", "元", "inf", "nan%"])
def test_non_numeric_amounts_have_a_reason(raw):
    value, _, reason = st.parse_amount(raw)
    assert value is None and reason in (st.NOT_A_NUMBER, st.MISSING)


def test_typed_amounts_pass_through():
    out = st.parse_amounts(pd.Series([1.5, -2.0, np.nan]))
    assert out["value"].tolist()[:2] == [1.5, -2.0] and pd.isna(out["value"].iloc[2])
    assert (out["reason"] == "").all()


def test_dates_formats_in_order_and_time_zones():
    raw = pd.Series(["2024-03-04T10:00:00Z", "2024-03-04T10:00:00+08:00", "2024-03-04 10:00", "2024年3月4日", "45123", "31/02/2024", None])
    out = st.parse_datetimes(raw, formats=["iso8601", "%Y年%m月%d日", "excel_serial"], time_zone="UTC", business_time_zone="Asia/Shanghai")
    expected = ["2024-03-04 18:00", "2024-03-04 10:00", "2024-03-04 18:00", "2024-03-04 08:00", "2023-07-16 08:00"]
    assert out["value"].iloc[:5].tolist() == [pd.Timestamp(e) for e in expected]
    assert out["reason"].tolist() == ["", "", "", "", "", st.UNPARSED_DATE, ""]
    assert str(out["value"].dtype) == "datetime64[us]"


def test_date_only_values_are_not_shifted():
    out = st.parse_datetimes(pd.Series(["1990-05-06", "19900506"]), formats=["%Y-%m-%d", "%Y%m%d"], time_zone="UTC", date_only=True)
    assert out["value"].tolist() == [pd.Timestamp("1990-05-06")] * 2


def test_excel_serial_dates_skip_the_phantom_leap_day():
    out = st.parse_datetimes(pd.Series(["45123", "59", "45123.5"]), formats=["excel_serial"])
    assert out["value"].iloc[0] == pd.Timestamp("2023-07-16")
    assert pd.isna(out["value"].iloc[1]) and out["reason"].iloc[1] == st.UNPARSED_DATE
    assert out["value"].iloc[2] == pd.Timestamp("2023-07-16 12:00")


def test_typed_aware_timestamps_are_converted():
    raw = pd.Series(pd.to_datetime(["2024-01-01 00:00"]).tz_localize("UTC"))
    out = st.parse_datetimes(raw, business_time_zone="Asia/Shanghai")
    assert out["value"].iloc[0] == pd.Timestamp("2024-01-01 08:00")
    assert st.parse_datetimes(raw, business_time_zone="America/Sao_Paulo")["value"].iloc[0] == pd.Timestamp("2023-12-31 21:00")


@pytest.mark.parametrize(
    ("raw", "level", "expected"),
    [("广东省", "province", "Guangdong"), ("广东", "province", "Guangdong"), ("Guangdong Province", "province", "Guangdong"),
     ("广西壮族自治区", "province", "Guangxi"), ("陝西", "province", "Shaanxi"), ("上海市", "city", "Shanghai"),
     ("深圳市", "city", "Shenzhen"), ("廣州", "city", "Guangzhou"), ("xi'an", "city", "Xi'an"), ("SHENZHEN", "city", "Shenzhen")],
)
def test_region_examples(raw, level, expected):
    out = st.standardise_region(pd.Series([raw]), level=level)
    assert out.loc[0, "value"] == expected and out.loc[0, "reason"] == ""


def test_unknown_region_is_kept_with_a_reason():
    out = st.standardise_region(pd.Series(["Atlantis"]), level="city")
    assert out.loc[0, "value"] == "Atlantis" and out.loc[0, "reason"] == st.UNKNOWN_REGION


def test_every_canonical_city_has_a_canonical_province():
    table = regions.region_table()
    assert table["province"].map(regions.lookup_province).eq(table["province"]).all()


def test_gender_spellings():
    out = st.standardise_gender(pd.Series(["女", "male", "F", "", None, "x"]))
    assert out.tolist() == ["F", "M", "F", "unknown", "unknown", "unknown"]


def test_too_long_text_is_flagged_not_cut():
    out = st.standardise_text(pd.Series(["x" * 10_000, "ok"]))
    assert pd.isna(out.loc[0, "value"]) and out.loc[0, "reason"] == st.TOO_LONG and out.loc[1, "value"] == "ok"


def test_input_is_not_mutated():
    raw = pd.Series([" A@B.com ", "１３８００１３８０００"])
    copy = raw.copy()
    st.standardise_email(raw), st.standardise_phone(raw), st.standardise_name(raw), st.parse_amounts(raw)
    pd.testing.assert_series_equal(raw, copy)


# ------------------------------------------------------------------------------------- properties


@FAST
@given(ANY_TEXT)
def test_phone_never_raises_and_is_idempotent(raw):
    e164, _, reason = st.normalise_phone(raw, "CN")
    if e164 is not None:
        assert reason == "" and st.normalise_phone(e164, "CN")[0] == e164 and st.normalise_phone(e164)[0] == e164


@FAST
@given(hs.one_of(hs.none(), hs.text(max_size=40), hs.emails()))
def test_email_never_raises_and_is_idempotent(raw):
    email, _ = st.normalise_email(raw)
    if email is not None:
        assert st.normalise_email(email) == (email, "")


@FAST
@given(hs.one_of(hs.none(), hs.text(max_size=30), hs.text(alphabet="张王李趙錢孫 ·", max_size=6)))
def test_name_never_raises_and_is_idempotent(raw):
    name = st.normalise_name(raw)
    if name is not None:
        assert st.normalise_name(name) == name
        assert st.name_key(name) == st.name_key(raw)


@FAST
@given(hs.one_of(hs.none(), hs.text(max_size=30), hs.from_regex(r"[¥￥(（]?[0-9０-９,]{1,9}(\.[0-9]{1,2})?[)）元-]?", fullmatch=True)))
def test_amount_never_raises_and_is_idempotent(raw):
    value, _, reason = st.parse_amount(raw)
    if value is not None:
        assert reason == "" and st.parse_amount(repr(value))[0] == value


@FAST
@given(hs.lists(hs.one_of(hs.none(), hs.text(max_size=25)), max_size=8))
def test_dates_never_raise_and_reread_themselves(values):
    out = st.parse_datetimes(pd.Series(values, dtype="object"), formats=["iso8601", "excel_serial", "%Y年%m月%d日"], time_zone="UTC")
    assert len(out) == len(values)
    parsed = out["value"].dropna()
    again = st.parse_datetimes(parsed.dt.strftime("%Y-%m-%dT%H:%M:%S"), formats=["iso8601"])
    assert again["value"].tolist() == parsed.tolist()


@FAST
@given(hs.one_of(hs.none(), hs.text(max_size=20)), hs.sampled_from(["province", "city"]))
def test_region_never_raises_and_is_idempotent(raw, level):
    once = st.standardise_region(pd.Series([raw], dtype="object"), level=level)
    twice = st.standardise_region(once["value"], level=level)
    assert once["value"].equals(twice["value"])
