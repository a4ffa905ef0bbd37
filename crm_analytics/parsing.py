"""Parsing helpers at the bottom of the package: text, dates and time zones, money amounts, integers, flags.

The warehouse's plain load and the cleansing standardisers share them; they import nothing
of the package but ``money`` (currency spellings) and ``datasets`` (for the default business
time zone, on demand). Every function is vectorised over a pandas Series and never
raises on a value it cannot read: it returns a missing value and a reason code.

Reason codes (empty string = valid): ``missing`` (empty or null input), ``unparsed_date``
(matches none of the accepted formats), ``not_a_number`` (no readable number).

Time: timestamps are stored as naive local times in the dataset's business time zone.
Values with an offset (``+08:00``, ``Z``, time-zone-aware columns) are converted into it;
naive values are read in their source's zone. Local times made ambiguous or non-existent
by a daylight-saving change are resolved by one rule (see ``localize``), never rejected.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from crm_analytics.money import CURRENCY_ALIASES

MISSING = "missing"
UNPARSED_DATE = "unparsed_date"
NOT_A_NUMBER = "not_a_number"

_NULL_TOKENS = {"", "nan", "none", "null", "n/a", "na", "-", "--", "nat", "<na>", "无", "空"}
_SPACE = re.compile(r"\s+")
# C0 and C1 control characters other than the whitespace ones (tab, line breaks), which collapse to a space
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


# --------------------------------------------------------------------------- text


def clean_text(value: object) -> str | None:
    """Return ``value`` as NFKC-normalised text with collapsed whitespace, or ``None`` when empty.

    Full-width letters, digits and punctuation become their ASCII forms; the
    usual spellings of "nothing" (``""``, ``"NULL"``, ``"nan"``, ``"-"`` ...) become ``None``.
    Control characters (NUL, escape...; ``CONTROL_CHARACTERS``) are removed.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    text = CONTROL_CHARACTERS.sub("", unicodedata.normalize("NFKC", str(value)))
    text = _SPACE.sub(" ", text).strip().strip("\ufeff\u200b")
    return None if text.lower() in _NULL_TOKENS else text


def map_unique(values: pd.Series, rule: Callable[[object], tuple], columns: Sequence[str]) -> pd.DataFrame:
    """Apply ``rule`` once per distinct value of ``values``; return its result tuples as columns, one row per value."""
    codes, uniques = pd.factorize(values.astype("object"), use_na_sentinel=True)
    results = [rule(v) for v in uniques] + [rule(None)]
    table = np.empty((len(results), len(columns)), dtype=object)
    for i, result in enumerate(results):
        table[i, :] = result
    rows = np.where(codes >= 0, codes, len(results) - 1)
    return pd.DataFrame({c: table[rows, j] for j, c in enumerate(columns)}, index=values.index)


def as_string_columns(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Cast ``columns`` of ``frame`` to the string dtype, in place; return ``frame``."""
    for column in columns:
        frame[column] = frame[column].astype("string")
    return frame


_PLAIN_ASCII = r"[!-~]+(?: [!-~]+)*"


def _is_plain(text: pd.Series) -> pd.Series:
    """True where a string value is already what ``clean_text`` returns: printable ASCII with single inner spaces,
    not a null token (NFKC and whitespace rules leave such text unchanged, so it can skip the per-value rule)."""
    return text.str.fullmatch(_PLAIN_ASCII).fillna(False).astype(bool) & ~text.str.lower().isin(_NULL_TOKENS)


def clean_texts(values: pd.Series) -> pd.Series:
    """``clean_text`` of every value, as strings (missing where it gives ``None``).

    Values that are already plain skip the per-value rule; the rest go through it once per distinct value.
    """
    text = values.astype("string")
    plain = _is_plain(text)
    rest = ~plain & text.notna()
    out = text.where(plain)
    if rest.any():
        out[rest] = map_unique(text[rest], lambda raw: (clean_text(raw),), ["text"])["text"].astype("string")
    return out


# --------------------------------------------------------------------------- time zones


def default_business_time_zone() -> str:
    """The business time zone of the default dataset (``parameters/project.yaml`` or ``CRM_ANALYTICS_DATASET``)."""
    from crm_analytics import datasets

    return datasets.load_dataset(None).time_zone


def localize(stamps: pd.Series, zone: str) -> pd.Series:
    """Read naive local times of ``zone`` as instants; return them time-zone aware, in UTC.

    The rule at daylight-saving changes (the clock's reading before the change wins,
    as Python's ``fold=0``): a local time that occurs twice (the repeated hour in autumn)
    is its first occurrence, still in daylight time; a local time that never occurs
    (the skipped hour in spring) is read with the offset before the change, which
    moves it forward by the gap (São Paulo 2016-10-16 00:41 is 01:41 local, 03:41 UTC).

    Parameters
    ----------
    stamps : Series
        Naive ``datetime64`` values, local times of ``zone``.
    zone : str
        IANA time zone.

    Returns
    -------
    Series
        Same index, ``datetime64[us, UTC]``; missing stays missing.
    """
    stamps = stamps.astype("datetime64[us]")
    aware = stamps.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    unresolved = aware.isna() & stamps.notna()
    if unresolved.any():  # a handful of values a year: resolved one by one with zoneinfo's fold=0
        rule = ZoneInfo(zone)
        resolved = [t.replace(tzinfo=rule, fold=0).astimezone(dt.timezone.utc) for t in stamps[unresolved].dt.to_pydatetime()]
        aware[unresolved] = pd.Series(resolved, index=stamps.index[unresolved]).astype("datetime64[us, UTC]")
    return aware


def convert_zone(stamps: pd.Series, from_zone: str, to_zone: str) -> pd.Series:
    """Return naive local times of ``from_zone`` as naive local times of ``to_zone`` (``datetime64[us]``).

    Ambiguous and non-existent local times follow the rule of ``localize``; nothing becomes missing.
    """
    return localize(stamps, from_zone).dt.tz_convert(to_zone).dt.tz_localize(None).astype("datetime64[us]")


def to_naive_local(stamps: pd.Series, zone: str) -> pd.Series:
    """Return time-zone-aware values as naive local times of ``zone`` (``datetime64[us]``)."""
    return stamps.dt.tz_convert(zone).dt.tz_localize(None).astype("datetime64[us]")


# --------------------------------------------------------------------------- dates

ISO8601 = "iso8601"
EXCEL_SERIAL = "excel_serial"
UNIX_S = "unix_s"  # seconds since 1970-01-01 UTC
UNIX_MS = "unix_ms"  # milliseconds since 1970-01-01 UTC
NAMED_DATE_FORMATS = (ISO8601, EXCEL_SERIAL, UNIX_S, UNIX_MS)
_UNIX_UNITS = {UNIX_S: "s", UNIX_MS: "ms"}
_UNIX_NUMBER = re.compile(r"^-?\d{1,16}(?:\.\d+)?$")
_UNIX_RANGE = (pd.Timestamp("1900-01-01", tz="UTC"), pd.Timestamp("2200-01-01", tz="UTC"))
_OFFSET = re.compile(r"(?:[zZ]|[+-]\d{2}:?\d{2})$")
_SERIAL = re.compile(r"^\d{1,6}(?:\.\d+)?$")
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")


def _parse_iso(text: pd.Series, time_zone: str, business_time_zone: str) -> pd.Series:
    aware = text.str.contains(_OFFSET, na=False)
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
    if aware.any():
        stamps = pd.to_datetime(text[aware], format="ISO8601", utc=True, errors="coerce")
        out[aware] = to_naive_local(stamps, business_time_zone)
    naive = ~aware
    if naive.any():
        stamps = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        out[naive] = _to_business(stamps, time_zone, business_time_zone)
    return out


def _to_business(stamps: pd.Series, time_zone: str, business_time_zone: str) -> pd.Series:
    stamps = stamps.astype("datetime64[us]")
    if time_zone == business_time_zone and time_zone in ("UTC", "Etc/UTC"):
        return stamps
    # even within one zone: a time the spring-forward gap skips is moved by localize's rule, never stored as written
    return convert_zone(stamps, time_zone, business_time_zone)


def _parse_serial(text: pd.Series) -> pd.Series:
    is_serial = text.str.match(_SERIAL, na=False)
    days = pd.to_numeric(text.where(is_serial), errors="coerce")
    # serials 1..60 fall before Excel's phantom 1900-02-29; only later ones are plausible dates
    days = days.where((days > 60) & (days < 2_958_466))
    return (_EXCEL_EPOCH + pd.to_timedelta(days, unit="D")).astype("datetime64[us]").dt.round("s")


class DateFormatError(ValueError):
    """A date format is neither a named format nor a valid strftime pattern."""


def _parse_pattern(text: pd.Series, fmt: str) -> pd.Series:
    """Text read with one strftime pattern (missing where it does not match); ``DateFormatError`` for a bad pattern."""
    try:
        return pd.to_datetime(text, format=fmt, errors="coerce")
    except ValueError as error:  # a bad directive: pandas refuses the pattern itself, whatever the values
        raise DateFormatError(f"date format {fmt!r} is not a strftime pattern ({error}); for unix timestamps use "
                              f"{UNIX_S} (seconds since 1970-01-01 UTC) or {UNIX_MS} (milliseconds)") from None


def _parse_unix(text: pd.Series, unit: str, business_time_zone: str) -> pd.Series:
    """Unix times (seconds or milliseconds since 1970-01-01 UTC, as text) as naive local times of ``business_time_zone``."""
    number = pd.to_numeric(text.where(text.str.match(_UNIX_NUMBER, na=False)), errors="coerce")
    limits = [(t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(1, unit=unit) for t in _UNIX_RANGE]
    number = number.where((number >= limits[0]) & (number < limits[1]))
    stamps = pd.to_datetime(number, unit=unit, utc=True, errors="coerce")
    return to_naive_local(stamps, business_time_zone).dt.round("ms" if unit == "ms" else "s")


def parse_datetimes(
    values: pd.Series,
    *,
    formats: Sequence[str] = (ISO8601,),
    time_zone: str | None = None,
    business_time_zone: str | None = None,
    date_only: bool = False,
) -> pd.DataFrame:
    """Parse dates and timestamps against an explicit list of accepted formats.

    Parameters
    ----------
    values : Series
        Raw values: text, Excel day numbers, or already-typed timestamps (Parquet).
    formats : sequence of str
        Formats tried in order: ``iso8601`` (with or without offset), ``excel_serial``
        (day numbers from 1899-12-30), ``unix_s`` / ``unix_ms`` (seconds / milliseconds since
        1970-01-01 UTC: instants, converted into the business zone whatever the source's zone;
        read between 1900 and 2200), or strftime patterns such as ``%Y年%m月%d日``.
        The first format that reads a value wins, so list unambiguous ones first. A pattern
        strftime cannot read (``%s``) raises ``DateFormatError`` naming it.
    time_zone : str, optional
        Zone of naive values in this source (default: the business zone); values with an
        offset are converted from theirs. Local times that a daylight-saving change makes
        ambiguous or non-existent follow the rule of ``localize``; they never fail.
    business_time_zone : str, optional
        Zone everything is stored in: the dataset's (default: the default dataset's).
    date_only : bool
        Calendar days (birth dates, campaign days): no zone conversion, time of day dropped.

    Returns
    -------
    DataFrame
        Same index; ``value`` (naive ``datetime64[us]`` in the business zone) and
        ``reason`` (``unparsed_date``, or empty; missing input is empty with no value).
    """
    business_time_zone = business_time_zone or default_business_time_zone()
    if date_only or not time_zone:
        time_zone = business_time_zone
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        typed = to_naive_local(values, business_time_zone)
        return _date_result(typed, typed.isna() & False)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        typed = _to_business(values, time_zone, business_time_zone)
        return _date_result(typed, typed.isna() & False)
    text = clean_texts(values)
    present = text.notna()
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    for fmt in formats:
        todo = present & out.isna()
        if not todo.any():
            break
        if fmt == ISO8601:
            parsed = _parse_iso(text[todo], time_zone, business_time_zone)
        elif fmt == EXCEL_SERIAL:
            parsed = _to_business(_parse_serial(text[todo]), time_zone, business_time_zone)
        elif fmt in _UNIX_UNITS:
            parsed = _parse_unix(text[todo], _UNIX_UNITS[fmt], business_time_zone)
        else:
            parsed = _to_business(_parse_pattern(text[todo], fmt), time_zone, business_time_zone)
        out[todo] = parsed
    if date_only:
        out = out.dt.normalize()
    return _date_result(out, present & out.isna())


def _date_result(stamps: pd.Series, failed: pd.Series) -> pd.DataFrame:
    reason = pd.Series(np.where(failed, UNPARSED_DATE, ""), index=stamps.index, dtype="string")
    return pd.DataFrame({"value": stamps, "reason": reason})


# ------------------------------------------------------------------------- amounts

# Currency spellings an amount may carry (``money.CURRENCY_ALIASES``), longest first so ``HK$`` wins over ``$``.
_CURRENCY_TOKENS = sorted(CURRENCY_ALIASES.items(), key=lambda item: -len(item[0]))
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$", re.IGNORECASE)
# digits grouped by thousands: 1-3 leading digits, then groups of exactly 3 (``1,234,567.5``; not ``1,2,3``)
_GROUPED = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?(?:e[+-]?\d+)?$", re.IGNORECASE)
_PLAIN_NUMBER = r"-?\d{1,15}(?:\.\d{1,15})?"  # read by float() exactly as parse_amount would


@lru_cache(maxsize=400_000)
def parse_amount(raw: str | None) -> tuple[float | None, str | None, str]:
    """Return ``(amount, currency, reason)`` for one raw money value.

    Reads ``¥1,234.50``, ``1,234元``, ``RMB 99``, ``（123.00）`` (negative),
    ``123-`` (trailing minus, negative) and full-width digits. ``currency`` is the
    ISO code named in the value, or ``None`` when the value names none. Commas are read as
    thousands separators only in valid groups (``1,234``, ``1,234,567.5``); ``1,2,3`` is ``not_a_number``.
    """
    text = clean_text(raw)
    if text is None:
        return None, None, MISSING
    currency = None
    compact = text.replace(" ", "")
    for token, code in _CURRENCY_TOKENS:
        if token in compact:
            currency = currency or code
            compact = compact.replace(token, "")
    negative = False
    if compact.startswith("(") and compact.endswith(")"):
        negative, compact = True, compact[1:-1]
    if compact.endswith("-") and len(compact) > 1:
        negative, compact = not negative, compact[:-1]
    if "," in compact and not _GROUPED.match(compact):
        return None, currency, NOT_A_NUMBER
    compact = compact.replace(",", "").replace("_", "")
    if not _NUMBER.match(compact):
        return None, currency, NOT_A_NUMBER
    amount = float(compact)
    if not np.isfinite(amount):
        return None, currency, NOT_A_NUMBER
    return (-amount if negative else amount), currency, ""


def parse_amounts(values: pd.Series) -> pd.DataFrame:
    """Parse money values; the currency goes into its own column.

    Parameters
    ----------
    values : Series
        Raw amounts: numbers (Parquet) or text in any of the spellings of ``parse_amount``.

    Returns
    -------
    DataFrame
        Same index; ``value`` (Float64), ``currency`` (string, missing when the value
        names none) and ``reason`` (``not_a_number`` or empty; missing input is empty).
    """
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        number = pd.to_numeric(values, errors="coerce").astype("Float64")
        number = number.where(np.isfinite(number.fillna(0).astype("float64")))
        empty = pd.Series(pd.NA, index=values.index, dtype="string")
        return pd.DataFrame({"value": number, "currency": empty, "reason": pd.Series("", index=values.index, dtype="string")})
    text = values.astype("string")
    plain = text.str.fullmatch(_PLAIN_NUMBER).fillna(False).astype(bool)  # no currency, separator or sign convention to read
    frame = pd.DataFrame(
        {"value": pd.Series(np.nan, index=values.index, dtype="Float64"),
         "currency": pd.Series(pd.NA, index=values.index, dtype="string"),
         "reason": pd.Series("", index=values.index, dtype="string")}
    )
    frame.loc[plain, "value"] = text[plain].astype("float64")
    rest = ~plain
    if rest.any():
        parsed = map_unique(values[rest], lambda raw: parse_amount(None if raw is None else str(raw)), ["value", "currency", "reason"])
        frame.loc[rest, "value"] = pd.to_numeric(parsed["value"], errors="coerce").astype("Float64")
        frame.loc[rest, "currency"] = parsed["currency"].astype("string")
        frame.loc[rest, "reason"] = parsed["reason"].replace(MISSING, "").astype("string")
    return frame


# ------------------------------------------------------------------------- integers and flags

_TRUE = {"true", "t", "yes", "y", "1", "是", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "否", "0.0"}


def parse_integers(values: pd.Series) -> pd.DataFrame:
    """Parse whole numbers (``"3"``, ``"3.0"``, full-width digits); ``value`` Int64 and ``reason``."""
    amounts = parse_amounts(values)
    number = amounts["value"]
    whole = number.notna() & (number.round() == number) & (number.abs() < 2**53)
    reason = amounts["reason"].mask(number.notna() & ~whole, NOT_A_NUMBER)
    value = number.where(whole).round().astype("Int64")
    return pd.DataFrame({"value": value, "reason": reason.astype("string")})


def parse_flags(values: pd.Series) -> pd.DataFrame:
    """Parse booleans (``true``/``false``, ``1``/``0``, ``是``/``否``); ``value`` boolean and ``reason``."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return pd.DataFrame({"value": values.astype("boolean"), "reason": pd.Series("", index=values.index, dtype="string")})

    def rule(raw: object) -> tuple:
        text = clean_text(raw)
        if text is None:
            return None, ""
        low = text.lower()
        if low in _TRUE:
            return True, ""
        if low in _FALSE:
            return False, ""
        return None, NOT_A_NUMBER

    frame = map_unique(values, rule, ["value", "reason"])
    frame["value"] = frame["value"].astype("boolean")
    return as_string_columns(frame, ["reason"])
