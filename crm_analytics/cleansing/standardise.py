"""Standardisers: one raw column in, clean values plus a reason code out.

Every public function here is pure and vectorised over a pandas Series. It
never raises on text it cannot read: it returns a missing value and a reason
code (``REASON_*``) so the row can be quarantined with an explanation. Each
scalar rule is applied once per distinct raw value, so repeated values cost
nothing.

Reason codes (empty string = valid):

- ``missing``: empty or null input
- ``invalid_phone``, ``excel_mangled``: not a phone number; an Excel float such as ``1.38E+10``
- ``invalid_email``
- ``unparsed_date``: matches none of the source's accepted formats
- ``not_a_number``: an amount with no readable number
- ``unknown_region``: a province or city not on the canonical list (the value is kept)
- ``too_long``: longer than ``MAX_TEXT_LENGTH`` characters
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

from crm_analytics import regions
from crm_analytics.schema import BUSINESS_TIME_ZONE

MISSING = "missing"
INVALID_PHONE = "invalid_phone"
EXCEL_MANGLED = "excel_mangled"
INVALID_EMAIL = "invalid_email"
UNPARSED_DATE = "unparsed_date"
NOT_A_NUMBER = "not_a_number"
UNKNOWN_REGION = "unknown_region"
TOO_LONG = "too_long"

MAX_TEXT_LENGTH = 1000
_NULL_TOKENS = {"", "nan", "none", "null", "n/a", "na", "-", "--", "nat", "<na>", "无", "空"}
_SPACE = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CJK_GAP = re.compile(r"(?<=[\u3400-\u9fff\uf900-\ufaff])\s+(?=[\u3400-\u9fff\uf900-\ufaff])")
_NAME_JUNK = re.compile(r"[\u00b7\u2027\u30fb.·•]")  # middle dots inside transliterated names


# --------------------------------------------------------------------------- text


def clean_text(value: object) -> str | None:
    """Return ``value`` as NFKC-normalised text with collapsed whitespace, or ``None`` when empty.

    Full-width letters, digits and punctuation become their ASCII forms; the
    usual spellings of "nothing" (``""``, ``"NULL"``, ``"nan"``, ``"-"`` ...) become ``None``.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    text = unicodedata.normalize("NFKC", str(value))
    text = _SPACE.sub(" ", text).strip().strip("\ufeff\u200b")
    return None if text.lower() in _NULL_TOKENS else text


def _map_unique(values: pd.Series, rule: Callable[[object], tuple], columns: Sequence[str]) -> pd.DataFrame:
    """Apply ``rule`` once per distinct value of ``values``; return its result tuples as columns, one row per value."""
    codes, uniques = pd.factorize(values.astype("object"), use_na_sentinel=True)
    results = [rule(v) for v in uniques] + [rule(None)]
    table = np.empty((len(results), len(columns)), dtype=object)
    for i, result in enumerate(results):
        table[i, :] = result
    rows = np.where(codes >= 0, codes, len(results) - 1)
    return pd.DataFrame({c: table[rows, j] for j, c in enumerate(columns)}, index=values.index)


def _as_string_columns(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    for column in columns:
        frame[column] = frame[column].astype("string")
    return frame


_PLAIN_ASCII = r"[!-~]+(?: [!-~]+)*"


def _is_plain(text: pd.Series) -> pd.Series:
    """True where a string value is already what ``clean_text`` returns: printable ASCII with single inner spaces,
    not a null token (NFKC and whitespace rules leave such text unchanged, so it can skip the per-value rule)."""
    return text.str.fullmatch(_PLAIN_ASCII).fillna(False).astype(bool) & ~text.str.lower().isin(_NULL_TOKENS)


def standardise_text(values: pd.Series, *, max_length: int = MAX_TEXT_LENGTH) -> pd.DataFrame:
    """Standardise free text: NFKC, collapsed whitespace, null tokens to missing, over-long values flagged.

    Parameters
    ----------
    values : Series
        Raw text (any dtype).
    max_length : int
        Longest accepted value in characters; longer ones get reason ``too_long`` and no value.

    Returns
    -------
    DataFrame
        Same index; ``value`` (string) and ``reason`` (string, empty when valid or merely missing).
    """
    cleaned = _clean_texts(values)
    too_long = (cleaned.str.len() > max_length).fillna(False).astype(bool)
    reason = pd.Series(np.where(too_long, TOO_LONG, ""), index=values.index, dtype="string")
    return pd.DataFrame({"value": cleaned.mask(too_long), "reason": reason})


def _clean_texts(values: pd.Series) -> pd.Series:
    """``clean_text`` of every value, as strings (missing where it gives ``None``).

    Values that are already plain skip the per-value rule; the rest go through it once per distinct value.
    """
    text = values.astype("string")
    plain = _is_plain(text)
    rest = ~plain & text.notna()
    out = text.where(plain)
    if rest.any():
        out[rest] = _map_unique(text[rest], lambda raw: (clean_text(raw),), ["text"])["text"].astype("string")
    return out


def standardise_code(values: pd.Series) -> pd.Series:
    """Spell categorical codes one way: stripped, lower case, spaces and hyphens as ``_`` (``Paid Search`` -> ``paid_search``)."""
    codes, uniques = pd.factorize(values.astype("object"), use_na_sentinel=True)
    spelled = pd.Series(uniques, dtype="string").str.strip().str.lower().str.replace(r"[\s\-]+", "_", regex=True)
    taken = spelled.to_numpy(dtype=object, na_value=None)[np.where(codes >= 0, codes, 0)] if len(uniques) else np.full(len(codes), None)
    return pd.Series(np.where(codes >= 0, taken, None), index=values.index, dtype="string")


# -------------------------------------------------------------------------- phones

_CN_MOBILE = re.compile(r"^(?:\+?86|0086)?(1[3-9]\d{9})$")
_EXCEL_FLOAT = re.compile(r"^\d(?:\.\d+)?e\+?\d+$", re.IGNORECASE)
_PHONE_KEEP = re.compile(r"[^\d+xX#]|(?<=.)\+")


@lru_cache(maxsize=200_000)
def normalise_phone(raw: str | None, default_region: str = "CN") -> tuple[str | None, str, str]:
    """Return ``(e164, number_type, reason)`` for one raw phone number.

    ``number_type`` is ``mobile``, ``fixed_line``, ``fixed_line_or_mobile``, ``toll_free``,
    ``voip`` or ``other``; empty when invalid. Extensions are dropped from the E.164 form.
    A value such as ``1.38001E+10`` (a phone that went through Excel as a float) has lost
    digits and cannot be repaired: reason ``excel_mangled``.
    """
    text = clean_text(raw)
    if text is None:
        return None, "", MISSING
    compact = text.replace(" ", "")
    if _EXCEL_FLOAT.match(compact):
        return None, "", EXCEL_MANGLED
    if compact.endswith(".0") and compact[:-2].isdigit():  # a phone read as a float, all digits kept
        compact = compact[:-2]
    digits = _PHONE_KEEP.sub("", compact)
    fast = _CN_MOBILE.match(digits) if default_region == "CN" else None
    if fast:
        return "+86" + fast.group(1), "mobile", ""
    return _parse_with_phonenumbers(text, default_region)


def _parse_with_phonenumbers(text: str, default_region: str) -> tuple[str | None, str, str]:
    import phonenumbers
    from phonenumbers import PhoneNumberType

    candidate = "+" + text[2:] if text.startswith("00") else text
    try:
        number = phonenumbers.parse(candidate, default_region)
    except phonenumbers.NumberParseException:
        return None, "", INVALID_PHONE
    if not phonenumbers.is_valid_number(number):
        return None, "", INVALID_PHONE
    kind = phonenumbers.number_type(number)
    names = {
        PhoneNumberType.MOBILE: "mobile",
        PhoneNumberType.FIXED_LINE: "fixed_line",
        PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
        PhoneNumberType.TOLL_FREE: "toll_free",
        PhoneNumberType.VOIP: "voip",
    }
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), names.get(kind, "other"), ""


def standardise_phone(values: pd.Series, *, default_region: str = "CN") -> pd.DataFrame:
    """Standardise phone numbers to E.164 with their number type.

    Parameters
    ----------
    values : Series
        Raw phone numbers in any spelling (``+86 138-0013-8000``, ``008613800138000``,
        ``020-12345678``, full-width digits, extensions).
    default_region : str
        ISO 3166 region for numbers written without a country code (CN by default).

    Returns
    -------
    DataFrame
        Same index; ``phone`` (E.164 string, missing when invalid), ``phone_type``
        (string) and ``reason`` (string, empty when valid).
    """
    columns = ["phone", "phone_type", "reason"]
    rows = _map_unique(values, lambda raw: normalise_phone(None if raw is None else str(raw), default_region), columns)
    frame = _as_string_columns(rows, columns)
    frame["reason"] = frame["reason"].replace(MISSING, "")
    return frame


# -------------------------------------------------------------------------- emails

_SIMPLE_EMAIL = re.compile(r"^[a-z0-9](?:[a-z0-9._%+\-]{0,62}[a-z0-9_\-])?@(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}$")


@lru_cache(maxsize=200_000)
def normalise_email(raw: str | None) -> tuple[str | None, str]:
    """Return ``(normalised_email, reason)`` for one raw address.

    NFKC (full-width ``＠`` becomes ``@``), every whitespace removed, lower-cased;
    checked with ``email-validator`` without DNS look-ups when it is not plainly valid.
    """
    text = clean_text(raw)
    if text is None:
        return None, MISSING
    candidate = _SPACE.sub("", text).lower().strip(".;,<>\"'")
    if ".." not in candidate and _SIMPLE_EMAIL.match(candidate):
        return candidate, ""
    from email_validator import EmailNotValidError, validate_email

    try:
        checked = validate_email(candidate, check_deliverability=False)
    except (EmailNotValidError, ValueError, UnicodeError):
        return None, INVALID_EMAIL
    return checked.normalized.lower(), ""


def standardise_email(values: pd.Series) -> pd.DataFrame:
    """Standardise e-mail addresses.

    Parameters
    ----------
    values : Series
        Raw addresses (mixed case, spaces, full-width characters).

    Returns
    -------
    DataFrame
        Same index; ``email`` (normalised string, missing when invalid) and ``reason``.
    """
    rows = _map_unique(values, lambda raw: normalise_email(None if raw is None else str(raw)), ["email", "reason"])
    frame = _as_string_columns(rows, ["email", "reason"])
    frame["reason"] = frame["reason"].replace(MISSING, "")
    return frame


# --------------------------------------------------------------------------- names


def is_cjk(text: str) -> bool:
    """Return True when ``text`` contains a CJK ideograph (a Chinese name)."""
    return bool(_CJK.search(text))


@lru_cache(maxsize=400_000)
def normalise_name(raw: str | None) -> str | None:
    """Return one name in its standard spelling, or ``None`` when empty.

    NFKC, collapsed whitespace; spaces between Chinese characters removed; Latin
    names title-cased word by word (``ZHANG san`` -> ``Zhang San``). Chinese names
    are never case-changed.
    """
    text = clean_text(raw)
    if text is None:
        return None
    if is_cjk(text):
        return _CJK_GAP.sub("", text)
    return re.sub(r"[^\W\d_]+", lambda m: m.group(0)[:1].title() + m.group(0)[1:].lower(), text)


# Surnames whose reading differs from the character's everyday reading (曾 is Zeng, not Ceng).
SURNAME_READINGS = {"曾": "zeng", "单": "shan", "單": "shan", "解": "xie", "仇": "qiu", "朴": "piao", "查": "zha", "区": "ou",
                    "區": "ou", "乐": "yue", "樂": "yue", "缪": "miao", "繆": "miao", "翟": "zhai", "覃": "qin", "盖": "ge",
                    "蓋": "ge", "召": "shao", "秘": "bi", "万": "wan", "萬": "wan", "沈": "shen", "瀋": "shen", "重": "chong",
                    "柏": "bai", "员": "yun", "員": "yun", "尉": "yu", "长": "chang", "長": "chang", "种": "chong", "種": "chong"}


@lru_cache(maxsize=400_000)
def name_key(name: str | None) -> str | None:
    """Return a script-independent matching key: lower-case pinyin or Latin letters, tokens sorted.

    ``张三``, ``張三``, ``Zhang San`` and ``san zhang`` all give ``san zhang``. Used for
    blocking and comparison only, never shown.
    """
    text = normalise_name(name)
    if text is None:
        return None
    if is_cjk(text):
        from pypinyin import Style, lazy_pinyin

        compact = _NAME_JUNK.sub("", text).replace(" ", "")
        tokens = lazy_pinyin(compact, style=Style.NORMAL, errors="ignore")
        if tokens and compact[:1] in SURNAME_READINGS:
            tokens[0] = SURNAME_READINGS[compact[0]]
        # surname + given name, the given name's syllables joined (三丰 -> sanfeng)
        tokens = [tokens[0], "".join(tokens[1:])] if len(tokens) > 1 else tokens
    else:
        tokens = _NAME_JUNK.sub(" ", text).lower().replace("-", "").split()
    tokens = [t for t in (re.sub(r"[^a-z]", "", t.lower()) for t in tokens) if t]
    return " ".join(sorted(tokens)) or None


def standardise_name(values: pd.Series) -> pd.DataFrame:
    """Standardise person names and add their matching key.

    Parameters
    ----------
    values : Series
        Raw names, Chinese or Latin script.

    Returns
    -------
    DataFrame
        Same index; ``full_name`` (standard spelling), ``name_key`` (pinyin / Latin
        tokens, lower case, sorted) and ``reason`` (``too_long`` or empty).
    """

    def rule(raw: object) -> tuple:
        text = None if raw is None else normalise_name(str(raw))
        if text is not None and len(text) > MAX_TEXT_LENGTH:
            return None, None, TOO_LONG
        return text, name_key(text), ""

    columns = ["full_name", "name_key", "reason"]
    return _as_string_columns(_map_unique(values, rule, columns), columns)


_GENDERS = {"f": "F", "female": "F", "女": "F", "w": "F", "woman": "F", "m": "M", "male": "M", "男": "M", "man": "M"}


def standardise_gender(values: pd.Series) -> pd.Series:
    """Map gender spellings (``女``, ``female``, ``F`` ...) onto ``F``, ``M`` or ``unknown`` (string Series)."""
    rows = _map_unique(values, lambda raw: (_GENDERS.get((clean_text(raw) or "").lower(), "unknown"),), ["gender"])
    return rows["gender"].astype("string")


# --------------------------------------------------------------------------- dates

ISO8601 = "iso8601"
EXCEL_SERIAL = "excel_serial"
_OFFSET = re.compile(r"(?:[zZ]|[+-]\d{2}:?\d{2})$")
_SERIAL = re.compile(r"^\d{1,6}(?:\.\d+)?$")
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")


def _parse_iso(text: pd.Series, time_zone: str, business_time_zone: str) -> pd.Series:
    aware = text.str.contains(_OFFSET, na=False)
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
    if aware.any():
        stamps = pd.to_datetime(text[aware], format="ISO8601", utc=True, errors="coerce")
        out[aware] = stamps.dt.tz_convert(business_time_zone).dt.tz_localize(None).astype("datetime64[us]")
    naive = ~aware
    if naive.any():
        stamps = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        out[naive] = _to_business(stamps, time_zone, business_time_zone)
    return out


def _to_business(stamps: pd.Series, time_zone: str, business_time_zone: str) -> pd.Series:
    stamps = stamps.astype("datetime64[us]")
    if time_zone == business_time_zone:
        return stamps
    localised = stamps.dt.tz_localize(time_zone, ambiguous="NaT", nonexistent="NaT")
    return localised.dt.tz_convert(business_time_zone).dt.tz_localize(None).astype("datetime64[us]")


def _parse_serial(text: pd.Series) -> pd.Series:
    is_serial = text.str.match(_SERIAL, na=False)
    days = pd.to_numeric(text.where(is_serial), errors="coerce")
    # serials 1..60 fall before Excel's phantom 1900-02-29; only later ones are plausible dates
    days = days.where((days > 60) & (days < 2_958_466))
    return (_EXCEL_EPOCH + pd.to_timedelta(days, unit="D")).astype("datetime64[us]").dt.round("s")


def parse_datetimes(
    values: pd.Series,
    *,
    formats: Sequence[str] = (ISO8601,),
    time_zone: str = BUSINESS_TIME_ZONE,
    business_time_zone: str = BUSINESS_TIME_ZONE,
    date_only: bool = False,
) -> pd.DataFrame:
    """Parse dates and timestamps against an explicit list of accepted formats.

    Parameters
    ----------
    values : Series
        Raw values: text, Excel day numbers, or already-typed timestamps (Parquet).
    formats : sequence of str
        Formats tried in order: ``iso8601`` (with or without offset), ``excel_serial``
        (day numbers from 1899-12-30), or strftime patterns such as ``%Y年%m月%d日``.
        The first format that reads a value wins, so list unambiguous ones first.
    time_zone : str
        Zone of naive values in this source; values with an offset are converted from theirs.
    business_time_zone : str
        Zone everything is stored in.
    date_only : bool
        Calendar days (birth dates, campaign days): no zone conversion, time of day dropped.

    Returns
    -------
    DataFrame
        Same index; ``value`` (naive ``datetime64[us]`` in the business zone) and
        ``reason`` (``unparsed_date``, or empty; missing input is empty with no value).
    """
    if date_only:
        time_zone = business_time_zone
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        typed = values.dt.tz_convert(business_time_zone).dt.tz_localize(None).astype("datetime64[us]")
        return _date_result(typed, typed.isna() & False)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        typed = _to_business(values, time_zone, business_time_zone)
        return _date_result(typed, typed.isna() & False)
    text = _clean_texts(values)
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
        else:
            stamps = pd.to_datetime(text[todo], format=fmt, errors="coerce")
            parsed = _to_business(stamps, time_zone, business_time_zone)
        out[todo] = parsed
    if date_only:
        out = out.dt.normalize()
    return _date_result(out, present & out.isna())


def _date_result(stamps: pd.Series, failed: pd.Series) -> pd.DataFrame:
    reason = pd.Series(np.where(failed, UNPARSED_DATE, ""), index=stamps.index, dtype="string")
    return pd.DataFrame({"value": stamps, "reason": reason})


# ------------------------------------------------------------------------- amounts

_CURRENCY_TOKENS = [
    ("人民币", "CNY"), ("RMB", "CNY"), ("CNY", "CNY"), ("元", "CNY"), ("¥", "CNY"), ("￥", "CNY"),
    ("USD", "USD"), ("US$", "USD"), ("$", "USD"), ("EUR", "EUR"), ("€", "EUR"), ("HKD", "HKD"), ("HK$", "HKD"),
]
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$", re.IGNORECASE)
_PLAIN_NUMBER = r"-?\d{1,15}(?:\.\d{1,15})?"  # read by float() exactly as parse_amount would


@lru_cache(maxsize=400_000)
def parse_amount(raw: str | None) -> tuple[float | None, str | None, str]:
    """Return ``(amount, currency, reason)`` for one raw money value.

    Reads ``¥1,234.50``, ``1,234元``, ``RMB 99``, ``（123.00）`` (negative),
    ``123-`` (trailing minus, negative) and full-width digits. ``currency`` is the
    ISO code named in the value, or ``None`` when the value names none.
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
        parsed = _map_unique(values[rest], lambda raw: parse_amount(None if raw is None else str(raw)), ["value", "currency", "reason"])
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

    frame = _map_unique(values, rule, ["value", "reason"])
    frame["value"] = frame["value"].astype("boolean")
    return _as_string_columns(frame, ["reason"])


# ------------------------------------------------------------------------- regions


def standardise_region(values: pd.Series, *, level: str) -> pd.DataFrame:
    """Map province or city names onto the canonical English names of ``crm_analytics.regions``.

    Parameters
    ----------
    values : Series
        Raw names: ``广东省``, ``广东``, ``guangdong province``, ``深圳市``, ``Shenzhen``.
    level : {"province", "city"}

    Returns
    -------
    DataFrame
        Same index; ``value`` (canonical English name; an unknown name is kept in its
        cleaned spelling) and ``reason`` (``unknown_region`` or empty).
    """
    lookup = regions.lookup_province if level == "province" else regions.lookup_city

    def rule(raw: object) -> tuple:
        text = clean_text(raw)
        if text is None:
            return None, ""
        canonical = lookup(text)
        return (canonical, "") if canonical else (text[:MAX_TEXT_LENGTH], UNKNOWN_REGION)

    return _as_string_columns(_map_unique(values, rule, ["value", "reason"]), ["value", "reason"])
