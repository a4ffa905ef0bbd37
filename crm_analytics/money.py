"""Money: ISO 4217 codes, the aliases exports use for them, and amounts written for people.

Every ``*_amount`` of the warehouse is in the dataset's currency (``crm_analytics.datasets``).
Formatting follows the dataset's locale with Babel: ``£86,161`` in ``en_GB``, ``R$ 86.161`` in
``pt_BR``, ``¥86,161`` in ``zh_CN``.
"""

from __future__ import annotations

import functools
import math
import re

# Spellings seen in exports, upper-cased, onto their ISO 4217 code.
CURRENCY_ALIASES = {
    "RMB": "CNY", "人民币": "CNY", "元": "CNY", "¥": "CNY", "￥": "CNY", "CNY": "CNY",
    "£": "GBP", "GBP": "GBP", "STG": "GBP",
    "R$": "BRL", "BRL": "BRL",
    "US$": "USD", "$": "USD", "USD": "USD",
    "€": "EUR", "EUR": "EUR",
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
        value, currency, locale=locale, currency_digits=False, decimal_quantization=True,
        format=_pattern(locale, places),
    )


@functools.cache
def _pattern(locale: str, places: int) -> str:
    """The locale's currency pattern with exactly ``places`` decimals."""
    from babel import Locale

    pattern = Locale.parse(locale).currency_formats["standard"].pattern.split(";")[0]
    digits = "0" * places
    return re.sub(r"0\.0+|0,0+|0(?=[^0#,.]*$)", ("0." + digits) if places else "0", pattern, count=1)


def currency_symbol(currency: str, locale: str = "en_GB") -> str:
    """The symbol people know the currency by in ``locale`` (``£``, ``R$``, ``¥``)."""
    import babel.numbers

    return babel.numbers.get_currency_symbol(currency, locale=locale)


def axis_label(what: str, currency: str) -> str:
    """An axis label naming the unit, e.g. ``revenue (GBP)``."""
    return f"{what} ({currency})"
