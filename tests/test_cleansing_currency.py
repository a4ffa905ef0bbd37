"""Money at cleansing: currency aliases become ISO codes, other currencies are refused or converted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from crm_analytics import datasets
from crm_analytics.cleansing import validate

AS_OF = pd.Timestamp("2025-01-01")
SPEC = {"table": "orders", "time_zone": "Europe/London", "date_formats": ["iso8601"]}
SHOP = {"time_zone": "Europe/London", "currency": "GBP", "country": "GB"}


def _orders(amounts, currencies, times=None):
    n = len(amounts)
    return pd.DataFrame(
        {
            "order_id": [f"O{i}" for i in range(1, n + 1)],
            "customer_id": ["C1"] * n,
            "order_time": times or ["2011-01-10 10:00:00"] * n,
            "order_amount": amounts,
            "currency": currencies,
            "channel": ["web"] * n,
            "source": ["web"] * n,
            "_source": "shop_orders",
            "_source_file": "orders.csv",
            "_source_row": range(1, n + 1),
        }
    )


def _dataset(tmp_path: Path, **extra) -> datasets.Dataset:
    return datasets.parse_dataset(SHOP | extra, name="shop", where=tmp_path / "shop.yaml")


def _validate(raw, dataset):
    return validate.validate_source("shop_orders", raw, SPEC, as_of=AS_OF, currency=dataset.currency, dataset=dataset)


def test_aliases_become_the_iso_code_and_empty_currency_is_the_datasets(tmp_path):
    raw = _orders(["10", "£12.50", "30"], ["gbp", None, "£"])
    result = _validate(raw, _dataset(tmp_path))
    assert result.clean["currency"].tolist() == ["GBP", "GBP", "GBP"]
    assert result.clean["order_amount"].tolist() == [10.0, 12.5, 30.0]
    assert result.quarantine.empty


def test_demo_spellings_of_the_yuan_end_as_cny(tmp_path):
    demo = datasets.parse_dataset({"time_zone": "Asia/Shanghai", "currency": "CNY", "country": "CN", "locale": "zh_CN"}, name="yuan", where=tmp_path / "yuan.yaml")
    raw = _orders(["10", "20", "30", "40"], ["CNY", "RMB", "cny", "人民币"])
    result = _validate(raw, demo)
    assert set(result.clean["currency"]) == {"CNY"} and len(result.clean) == 4


def test_unknown_currency_text_goes_to_quarantine_with_a_reason(tmp_path):
    raw = _orders(["10", "20"], ["GBP", "doubloons"])
    result = _validate(raw, _dataset(tmp_path))
    assert result.clean["order_id"].tolist() == ["O1"]
    entry = result.quarantine.iloc[0]
    assert (entry["reason"], entry["column_name"], entry["raw_value"], entry["action"]) == ("unknown_currency", "currency", "doubloons", "row")
    assert result.n_rows_in == len(result.clean) + result.n_rows_quarantined


def test_another_currency_without_rates_is_an_error_naming_currencies_and_counts(tmp_path):
    raw = _orders(["10", "20", "30", "$5"], ["GBP", "EUR", "eur", None])
    with pytest.raises(validate.CurrencyError) as caught:
        _validate(raw, _dataset(tmp_path))
    message = str(caught.value)
    assert "'shop_orders'" in message and "shop.yaml" in message and "exchange_rates" in message
    assert "EUR (2 rows)" in message and "GBP (1 rows)" in message and "USD (1 rows)" in message
    assert "the dataset currency is GBP" in message


def test_declared_rates_convert_with_the_latest_rate_on_or_before_the_order_day(tmp_path):
    rates = [{"currency": "EUR", "date": "2011-01-01", "rate": 0.8}, {"currency": "EUR", "date": "2011-01-10", "rate": 0.9}]
    raw = _orders(["100", "100", "100", "50"], ["EUR", "EUR", "EUR", "GBP"],
                  times=["2011-01-09 23:59:00", "2011-01-10 00:01:00", "2010-12-31 12:00:00", "2011-01-10 10:00:00"])
    result = _validate(raw, _dataset(tmp_path, exchange_rates=rates))
    clean = result.clean.set_index("order_id")
    # O1: the day before the second rate -> 0.8; O2: that day -> 0.9; O3: before any rate -> quarantine
    assert clean["order_amount"].to_dict() == {"O1": pytest.approx(80.0), "O2": pytest.approx(90.0), "O4": 50.0}
    assert set(clean["currency"]) == {"GBP"}
    entry = result.quarantine.iloc[0]
    assert (entry["source_row"], entry["column_name"], entry["reason"], entry["action"]) == (3, "order_amount", "no_exchange_rate", "row")


def test_rates_file_under_the_dataset_folder(tmp_path):
    (tmp_path / "rates.csv").write_text("currency,date,rate\nUSD,2011-01-01,0.625\n", encoding="utf-8")
    dataset = _dataset(tmp_path, data_dir=str(tmp_path), exchange_rates="rates.csv")
    result = _validate(_orders(["US$8.00"], [None]), dataset)
    assert result.clean["order_amount"].tolist() == [5.0] and result.clean["currency"].tolist() == ["GBP"]


def test_errors_are_the_kinds_the_build_reports(tmp_path):
    from crm_analytics import sources

    with pytest.raises(sources.SourceError, match="holds amounts in 2 currencies"):
        _validate(_orders(["10", "20"], ["GBP", "USD"]), _dataset(tmp_path))
    broken = _dataset(tmp_path, exchange_rates=[{"currency": "USD", "date": "someday", "rate": 0.6}])
    with pytest.raises(datasets.DatasetError, match=r"shop.yaml: exchange rates: unreadable date"):
        _validate(_orders(["10"], ["GBP"]), broken)
