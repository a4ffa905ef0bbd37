"""Money written for people in the dataset's currency and locale; export spellings onto ISO codes."""

from __future__ import annotations

import math

import pytest

from crm_analytics import money


@pytest.mark.parametrize(
    ("value", "currency", "locale", "expected"),
    [
        (86161.4, "GBP", "en_GB", "£86,161"),
        (86161.4, "BRL", "pt_BR", "R$\xa086.161"),
        (86161.4, "CNY", "zh_CN", "¥86,161"),
        (12.5, "GBP", "en_GB", "£12.50"),
        (-1234.0, "USD", "en_US", "-$1,234"),
    ],
)
def test_format_money_follows_currency_and_locale(value, currency, locale, expected):
    assert money.format_money(value, currency, locale) == expected


def test_missing_amounts_show_a_dash():
    assert money.format_money(math.nan, "GBP") == "—"
    assert money.format_money(None, "GBP") == "—"


@pytest.mark.parametrize(
    ("raw", "code"),
    [("RMB", "CNY"), ("人民币", "CNY"), ("¥", "CNY"), ("£", "GBP"), ("r$", "BRL"), ("gbp", "GBP"), (" JPY ", "JPY"), ("XYZ", None), ("", None), (None, None)],
)
def test_normalise_currency(raw, code):
    assert money.normalise_currency(raw) == code


# ------------------------------------------------------------------------------ exchange rates

RATES = [
    {"currency": "EUR", "date": "2011-01-01", "rate": 0.85},
    {"currency": "EUR", "date": "2011-02-01", "rate": 0.90},
    {"currency": "usd", "date": "2011-01-15", "rate": 0.60},
    {"currency": "GBP", "date": "2011-01-01", "rate": 1.0},
]


def test_rate_table_is_typed_sorted_and_drops_the_target_currency():
    table = money.parse_exchange_rates(RATES, to_currency="GBP")
    assert table["currency"].tolist() == ["EUR", "EUR", "USD"]
    assert table["date"].dt.strftime("%Y-%m-%d").tolist() == ["2011-01-01", "2011-02-01", "2011-01-15"]
    assert table["rate"].tolist() == [0.85, 0.90, 0.60]


def test_convert_amounts_uses_the_latest_rate_on_or_before_the_day():
    import pandas as pd

    table = money.parse_exchange_rates(RATES, to_currency="GBP")
    index = list("abcdefg")
    amounts = pd.Series([100.0, 100.0, 100.0, 50.0, 10.0, 20.0, 40.0], index=index)
    currencies = pd.Series(["EUR", "EUR", "USD", "GBP", "USD", None, "EUR"], index=index)
    days = pd.Series(pd.to_datetime(["2011-01-31 23:59", "2011-02-01 00:10", "2011-03-20 12:00", "2009-01-01 00:00",
                                      "2011-01-14 18:00", "2011-01-01 00:00", None]), index=index)
    converted = money.convert_amounts(amounts, currencies, days, table, "GBP")
    # a: 100 EUR on 31 Jan at the 1 Jan rate 0.85; b: on 1 Feb the 1 Feb rate 0.90 applies; c: 100 USD x 0.60;
    # d: already GBP; e: the first USD rate is dated the next day (none on or before); f: no currency = GBP; g: no day
    assert converted.loc[["a", "b", "c", "d", "f"]].tolist() == pytest.approx([85.0, 90.0, 60.0, 50.0, 20.0])
    assert math.isnan(converted["e"]) and math.isnan(converted["g"])
    assert list(converted.index) == index
    assert amounts["a"] == 100.0  # the input is not changed


def test_convert_amounts_without_rates_leaves_foreign_amounts_missing():
    import pandas as pd

    converted = money.convert_amounts(pd.Series([5.0, 7.0]), pd.Series(["GBP", "EUR"]), pd.Series(pd.to_datetime(["2011-01-01", "2011-01-01"])), None, "GBP")
    assert converted.iloc[0] == 5.0 and math.isnan(converted.iloc[1])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"currency": "EUR", "date": "2011-01-01"}], r"missing \['rate'\]"),
        ([{"currency": "XYZ", "date": "2011-01-01", "rate": 1.1}], r"unknown currency \['XYZ'\]"),
        ([{"currency": "EUR", "date": "first of May", "rate": 1.1}], r"unreadable date"),
        ([{"currency": "EUR", "date": "2011-01-01", "rate": -1}], r"positive number"),
        ([{"currency": "EUR", "date": "2011-01-01", "rate": 1}, {"currency": "eur", "date": "2011-01-01", "rate": 2}], r"share a currency and day"),
    ],
)
def test_bad_rate_tables_are_refused_naming_where(rows, message):
    with pytest.raises(money.ExchangeRateError, match=message) as caught:
        money.parse_exchange_rates(rows, to_currency="GBP", where="shop.yaml")
    assert str(caught.value).startswith("shop.yaml")


def test_rates_are_read_from_a_file_under_the_dataset_folder(tmp_path):
    (tmp_path / "rates.csv").write_text("currency,date,rate\nEUR,2011-01-01,0.85\n", encoding="utf-8")
    (tmp_path / "rates.yaml").write_text("- {currency: USD, date: 2011-01-01, rate: 0.6}\n", encoding="utf-8")
    assert money.read_exchange_rates("rates.csv", base_dir=tmp_path, to_currency="GBP")["rate"].tolist() == [0.85]
    assert money.read_exchange_rates("rates.yaml", base_dir=tmp_path, to_currency="GBP")["currency"].tolist() == ["USD"]
    assert money.read_exchange_rates(None, base_dir=tmp_path, to_currency="GBP") is None
    with pytest.raises(money.ExchangeRateError, match="missing.csv does not exist"):
        money.read_exchange_rates("missing.csv", base_dir=tmp_path, to_currency="GBP", where="shop.yaml")
