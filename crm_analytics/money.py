"""Money: ISO 4217 codes, the aliases exports use for them, and amounts written for people.

Every ``*_amount`` of the warehouse is in the dataset's currency (``crm_analytics.datasets``).
Formatting follows the dataset's locale with Babel: ``£86,161`` in ``en_GB``, ``R$ 86.161`` in
``pt_BR``, ``¥86,161`` in ``zh_CN``.

Exchange rates
--------------
A source whose amounts are in another currency than the dataset's is refused at cleansing,
unless the dataset declares ``exchange_rates``: a table of ``currency``, ``date`` and ``rate``
(units of the dataset currency for one unit of ``currency`` on that day), inline in the dataset
file or as a CSV/YAML file under the dataset folder. An amount is then converted with the
**latest rate of its currency dated on or before the day of its row** (the calendar day of the
order in the business time zone). A rate dated after that day is never used, so a late-arriving
rate cannot rewrite history; a row with no rate on or before its day cannot be converted and goes
to quarantine (``no_exchange_rate``).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Spellings seen in exports, upper-cased, onto their ISO 4217 code.
CURRENCY_ALIASES = {
    "RMB": "CNY", "人民币": "CNY", "元": "CNY", "¥": "CNY", "￥": "CNY", "CNY": "CNY",
    "£": "GBP", "GBP": "GBP", "STG": "GBP",
    "R$": "BRL", "BRL": "BRL",
    "US$": "USD", "$": "USD", "USD": "USD",
    "€": "EUR", "EUR": "EUR",
    "HK$": "HKD", "HKD": "HKD",
}


@functools.cache
def iso_currencies() -> frozenset[str]:
    """Every ISO 4217 code Babel knows."""
    import babel.numbers

    return frozenset(babel.numbers.list_currencies())


def normalise_currency(value: str | None) -> str | None:
    """Return the ISO 4217 code for a code or alias (``RMB`` -> ``CNY``, ``£`` -> ``GBP``), ``None`` if unknown or empty."""
    if value is None:
        return None
    text = str(value).strip().upper()
    if not text:
        return None
    if text in CURRENCY_ALIASES:
        return CURRENCY_ALIASES[text]
    return text if text in iso_currencies() else None


def format_money(value: float | None, currency: str, locale: str = "en_GB", *, decimals: int | None = None) -> str:
    """Write an amount for people, e.g. ``£86,161``; ``—`` for a missing value.

    ``decimals`` defaults to none at or above 100 in absolute value and two below.
    """
    import babel.numbers

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    places = decimals if decimals is not None else (0 if abs(value) >= 100 else 2)
    return babel.numbers.format_currency(
        value, currency, locale=_babel_locale(locale), currency_digits=False, decimal_quantization=True,
        format=_pattern(locale, places),
    )


@functools.cache
def _babel_locale(locale: str):
    """The parsed ``babel.Locale`` (parsing it on every call is most of the cost of writing an amount)."""
    from babel import Locale

    return Locale.parse(locale)


@functools.cache
def _pattern(locale: str, places: int) -> str:
    """The locale's currency pattern with exactly ``places`` decimals."""
    pattern = _babel_locale(locale).currency_formats["standard"].pattern.split(";")[0]
    digits = "0" * places
    return re.sub(r"0\.0+|0,0+|0(?=[^0#,.]*$)", ("0." + digits) if places else "0", pattern, count=1)


def currency_symbol(currency: str, locale: str = "en_GB") -> str:
    """The symbol people know the currency by in ``locale`` (``£``, ``R$``, ``¥``)."""
    import babel.numbers

    return babel.numbers.get_currency_symbol(currency, locale=locale)


def currency_and_locale(currency: str | None = None, locale: str | None = None, *, dataset: str | None = None) -> tuple[str, str]:
    """The currency and locale to write money in: those given, else ``dataset``'s (empty: the default dataset's)."""
    if currency and locale:
        return currency, locale
    from crm_analytics import datasets

    spec = datasets.load_dataset(dataset or None)
    return currency or spec.currency, locale or spec.locale


def axis_label(what: str, currency: str) -> str:
    """An axis label naming the unit, e.g. ``revenue (GBP)``."""
    return f"{what} ({currency})"


# ------------------------------------------------------------------------------ exchange rates

RATE_COLUMNS = ["currency", "date", "rate"]


class ExchangeRateError(ValueError):
    """An exchange-rate table is missing or malformed; the message names where it was declared."""


def parse_exchange_rates(records: Iterable[Mapping[str, Any]] | pd.DataFrame, *, to_currency: str, where: str | Path = "exchange_rates") -> pd.DataFrame:
    """Check a table of exchange rates into ``to_currency`` and return it typed and sorted.

    Parameters
    ----------
    records : rows with ``currency`` (a code or alias such as ``RMB``), ``date`` (a day, ISO) and
        ``rate`` (units of ``to_currency`` for one unit of ``currency``, positive).
    to_currency : the dataset's ISO 4217 code.
    where : named in errors (the dataset file, or the rate file).

    Returns
    -------
    DataFrame
        ``currency`` (ISO code), ``date`` (datetime64, midnight), ``rate`` (float), sorted by currency
        and date; rows of ``to_currency`` itself are dropped (its rate is 1).

    Raises ``ExchangeRateError`` for a missing column, an unknown currency, an unreadable date, a
    rate that is not a positive number, or two rates for one currency and day.
    """
    frame = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    missing = [c for c in RATE_COLUMNS if c not in frame.columns]
    if missing:
        raise ExchangeRateError(f"{where}: exchange rates need the columns {RATE_COLUMNS}; missing {missing} (found {list(frame.columns)})")
    codes = frame["currency"].map(normalise_currency)
    if codes.isna().any():
        bad = sorted({str(v) for v in frame.loc[codes.isna(), "currency"]})
        raise ExchangeRateError(f"{where}: exchange rates: unknown currency {bad}; use ISO 4217 codes such as GBP, EUR or USD")
    dates = pd.to_datetime(frame["date"].astype("string"), errors="coerce", format="ISO8601")
    if dates.isna().any():
        bad = frame.loc[dates.isna(), "date"].astype("string").tolist()[:5]
        raise ExchangeRateError(f"{where}: exchange rates: unreadable date(s) {bad}; write days as YYYY-MM-DD")
    rates = pd.to_numeric(frame["rate"], errors="coerce")
    if (rates.isna() | ~(rates > 0)).any():
        bad = frame.loc[rates.isna() | ~(rates > 0), "rate"].tolist()[:5]
        raise ExchangeRateError(f"{where}: exchange rates: every rate must be a positive number, got {bad}")
    table = pd.DataFrame({"currency": codes.astype(str), "date": dates.dt.normalize().astype("datetime64[ns]"), "rate": rates.astype(float)})
    doubled = table.duplicated(["currency", "date"], keep=False)
    if doubled.any():
        first = table[doubled].iloc[0]
        raise ExchangeRateError(f"{where}: exchange rates: {int(doubled.sum())} rows share a currency and day, e.g. {first.currency} on {first.date:%Y-%m-%d}")
    table = table[table["currency"] != to_currency]
    return table.sort_values(["currency", "date"], ignore_index=True)


def read_exchange_rates(declared: str | Path | list | None, *, base_dir: str | Path, to_currency: str, where: str | Path = "exchange_rates") -> pd.DataFrame | None:
    """Read the ``exchange_rates`` a dataset declares: ``None``, an inline list, or a CSV/YAML file.

    A relative file path is taken from ``base_dir`` (the dataset folder). A YAML file holds a list of
    ``{currency, date, rate}``; a CSV file those columns. Returns ``parse_exchange_rates``'s table, or
    ``None`` when nothing is declared. ``where`` (the dataset file) is named in errors.
    """
    if declared is None or (isinstance(declared, (list, str)) and not declared):
        return None
    if isinstance(declared, list):
        return parse_exchange_rates(declared, to_currency=to_currency, where=where)
    if not isinstance(declared, (str, Path)):
        raise ExchangeRateError(f"{where}: exchange_rates must be a file path or a list of {{currency, date, rate}}, got {type(declared).__name__}")
    path = Path(declared)
    path = path if path.is_absolute() else Path(base_dir) / path
    if not path.is_file():
        raise ExchangeRateError(f"{where}: exchange_rates file {path} does not exist")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        records = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        if not isinstance(records, list):
            raise ExchangeRateError(f"{path}: expected a list of {{currency, date, rate}}, got {type(records).__name__}")
        return parse_exchange_rates(records, to_currency=to_currency, where=path)
    return parse_exchange_rates(pd.read_csv(path, dtype={"currency": "string", "date": "string"}), to_currency=to_currency, where=path)


def convert_amounts(amounts: pd.Series, currencies: pd.Series, days: pd.Series, rates: pd.DataFrame | None, to_currency: str) -> pd.Series:
    """Convert amounts into ``to_currency`` with the latest rate on or before each row's day.

    Parameters
    ----------
    amounts : numbers, one per row (missing stays missing).
    currencies : ISO 4217 code of each amount (``normalise_currency`` first); missing means ``to_currency``.
    days : the day (or timestamp, truncated to its day) each amount belongs to.
    rates : ``parse_exchange_rates`` table; ``None`` or empty when none is declared.
    to_currency : ISO 4217 code of the result.

    Returns
    -------
    Series (float64, the index of ``amounts``)
        Amounts in ``to_currency``: unchanged where already in it; amount x rate where a rate of
        its currency is dated on or before its day; NaN where none is (or the day is missing).
    """
    values = pd.to_numeric(pd.Series(amounts), errors="coerce").astype("float64").to_numpy(copy=True)
    codes = pd.Series(currencies, dtype="object").reset_index(drop=True)
    foreign = (codes.notna() & (codes != to_currency)).to_numpy()
    if not foreign.any():
        return pd.Series(values, index=amounts.index, dtype="float64")
    converted = values.copy()
    converted[foreign] = np.nan
    day = pd.to_datetime(pd.Series(days).reset_index(drop=True)).dt.normalize().astype("datetime64[ns]")
    wanted = pd.DataFrame({"position": np.flatnonzero(foreign), "currency": codes[foreign].astype(str).to_numpy(), "day": day[foreign].to_numpy()})
    wanted = wanted[wanted["day"].notna()].sort_values("day", kind="stable")
    if rates is not None and len(rates) and len(wanted):
        table = rates.rename(columns={"date": "day"})[["currency", "day", "rate"]].sort_values("day", kind="stable")
        matched = pd.merge_asof(wanted, table, on="day", by="currency", direction="backward")
        found = matched["rate"].notna().to_numpy()
        positions = matched["position"].to_numpy()[found]
        converted[positions] = values[positions] * matched["rate"].to_numpy()[found]
    return pd.Series(converted, index=amounts.index, dtype="float64")
