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
- ``unparsed_date``: matches none of the source's accepted formats (``parse_datetimes``)
- ``not_a_number``: an amount with no readable number (``parse_amounts``)
- ``unknown_region``: a province or city not on the canonical list (the value is kept)
- ``too_long``: longer than ``MAX_TEXT_LENGTH`` characters
- ``control_characters``: control characters (NUL...) were removed from a text (the cleaned value is kept)
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pandas as pd

from crm_analytics import regions

# The parsers of dates, amounts, integers and flags live at the bottom of the package (the warehouse's
# plain load uses them too); they are re-exported here so the cleansing step has one place to import from.
from crm_analytics.parsing import (  # noqa: F401
    CONTROL_CHARACTERS,
    EXCEL_SERIAL,
    ISO8601,
    MISSING,
    NOT_A_NUMBER,
    UNPARSED_DATE,
    as_string_columns,
    clean_text,
    clean_texts,
    default_business_time_zone,
    map_unique,
    parse_amount,
    parse_amounts,
    parse_datetimes,
    parse_flags,
    parse_integers,
)

INVALID_PHONE = "invalid_phone"
EXCEL_MANGLED = "excel_mangled"
INVALID_EMAIL = "invalid_email"
UNKNOWN_REGION = "unknown_region"
TOO_LONG = "too_long"
CONTROL_CHARACTERS_REMOVED = "control_characters"

MAX_TEXT_LENGTH = 1000
_SPACE = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CJK_GAP = re.compile(r"(?<=[\u3400-\u9fff\uf900-\ufaff])\s+(?=[\u3400-\u9fff\uf900-\ufaff])")
_NAME_JUNK = re.compile(r"[\u00b7\u2027\u30fb.·•]")  # middle dots inside transliterated names


# --------------------------------------------------------------------------- text


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
    cleaned = clean_texts(values)
    too_long = (cleaned.str.len() > max_length).fillna(False).astype(bool)
    reason = pd.Series(np.where(too_long, TOO_LONG, ""), index=values.index, dtype="string")
    reason = reason.mask(~too_long & has_control_characters(values), CONTROL_CHARACTERS_REMOVED)
    return pd.DataFrame({"value": cleaned.mask(too_long), "reason": reason})


def has_control_characters(values: pd.Series) -> pd.Series:
    """True where a raw text holds control characters that ``clean_text`` removes (``parsing.CONTROL_CHARACTERS``)."""
    if not (pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)):
        return pd.Series(False, index=values.index)
    found = values.astype("string").str.contains(CONTROL_CHARACTERS.pattern, regex=True)
    return found.fillna(False).astype(bool)


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
def normalise_phone(raw: str | None, default_region: str | None = None) -> tuple[str | None, str, str]:
    """Return ``(e164, number_type, reason)`` for one raw phone number.

    ``default_region`` (ISO 3166 alpha-2, the dataset's country) is the region of numbers written
    without a country code; ``None``: every number must carry one (``+44 ...``, ``0044 ...``).

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
    # Chinese mobile numbers (the bulk of a CN dataset) skip the slower full parse; the result is the same.
    fast = _CN_MOBILE.match(digits) if default_region == "CN" else None
    if fast:
        return "+86" + fast.group(1), "mobile", ""
    return _parse_with_phonenumbers(text, default_region)


def _parse_with_phonenumbers(text: str, default_region: str | None) -> tuple[str | None, str, str]:
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


def standardise_phone(values: pd.Series, *, default_region: str | None = None) -> pd.DataFrame:
    """Standardise phone numbers to E.164 with their number type.

    Parameters
    ----------
    values : Series
        Raw phone numbers in any spelling (``+86 138-0013-8000``, ``008613800138000``,
        ``020-12345678``, full-width digits, extensions).
    default_region : str, optional
        ISO 3166 region for numbers written without a country code (the dataset's country,
        ``Dataset.country``); ``None``: numbers without ``+`` and a country code are invalid.

    Returns
    -------
    DataFrame
        Same index; ``phone`` (E.164 string, missing when invalid), ``phone_type``
        (string) and ``reason`` (string, empty when valid).
    """
    columns = ["phone", "phone_type", "reason"]
    rows = map_unique(values, lambda raw: normalise_phone(None if raw is None else str(raw), default_region), columns)
    frame = as_string_columns(rows, columns)
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
    rows = map_unique(values, lambda raw: normalise_email(None if raw is None else str(raw)), ["email", "reason"])
    frame = as_string_columns(rows, ["email", "reason"])
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
        tokens, lower case, sorted) and ``reason`` (``too_long``, ``control_characters`` or empty).
    """

    def rule(raw: object) -> tuple:
        text = None if raw is None else normalise_name(str(raw))
        if text is not None and len(text) > MAX_TEXT_LENGTH:
            return None, None, TOO_LONG
        return text, name_key(text), CONTROL_CHARACTERS_REMOVED if raw is not None and CONTROL_CHARACTERS.search(str(raw)) else ""

    columns = ["full_name", "name_key", "reason"]
    return as_string_columns(map_unique(values, rule, columns), columns)


_GENDERS = {"f": "F", "female": "F", "女": "F", "w": "F", "woman": "F", "m": "M", "male": "M", "男": "M", "man": "M"}


def standardise_gender(values: pd.Series) -> pd.Series:
    """Map gender spellings (``女``, ``female``, ``F`` ...) onto ``F``, ``M`` or ``unknown`` (string Series)."""
    rows = map_unique(values, lambda raw: (_GENDERS.get((clean_text(raw) or "").lower(), "unknown"),), ["gender"])
    return rows["gender"].astype("string")


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

    return as_string_columns(map_unique(values, rule, ["value", "reason"]), ["value", "reason"])
