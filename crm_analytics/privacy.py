"""Personal data out of everything a stakeholder sees: masks, keyed pseudonyms, small-group suppression.

Which columns hold personal data is registered once, in
``crm_analytics.schema.PERSONAL_DATA_COLUMNS``; ``PERSONAL_COLUMN_PATTERNS``
below adds column-name patterns for tables outside the canonical schema (a
result table with ``contact_email``, a raw export with ``手机号``, a free-text
``address``). Each personal column has a kind, and each kind a display mask:

=========  =====================================  ==========================
kind       mask                                   example
=========  =====================================  ==========================
``email``  first character of the local part      ``z***@example.com``
``phone``  first three and last four digits       ``138****5678``
``name``   first character of every word          ``张*``, ``Z**** W**``
``date``   the year only                          ``1987``
``text``   replaced entirely (comments, address)  ``[redacted]``
=========  =====================================  ==========================

Pseudonyms (``pseudonymise``) are keyed HMAC-SHA256 digests: stable across
runs, so they still join, but not reversible without the key. The key lives
outside the repository and outside ``outputs/``: in the environment variable
``CRM_ANALYTICS_PSEUDONYM_KEY``, or in ``~/.config/crm-analytics/pseudonym.key``
(``$XDG_CONFIG_HOME`` is honoured), created with 0600 permissions on first use.
Pseudonymised data is still personal data (GDPR Art. 4(5), PIPL Art. 73);
pseudonyms only keep direct identifiers off the screen.

Every published table that identifies customers carries the same column, ``customer_key``
(``with_customer_key``: the pseudonym of the warehouse ``customer_id``), so results of different
analyses join; ``source_ids_for`` maps keys back to source records through the warehouse's
``customer_lineage`` for whoever holds the key (``docs/privacy.md``).

Everything is vectorised over a pandas Series, null-safe (missing stays
missing) and never mutates its input. Analysts see raw values only by asking:
``mask_frame(df, allow_personal_data=True)``, driven by a notebook parameter
such as ``show_personal_data = False``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from crm_analytics import paths
from crm_analytics.frames import require_columns
from crm_analytics.schema import PERSONAL_DATA_COLUMNS

KEY_ENV = "CRM_ANALYTICS_PSEUDONYM_KEY"
KEY_FILE_NAME = "pseudonym.key"
MIN_KEY_LENGTH = 16
REDACTED = "[redacted]"
CUSTOMER_KEY_COL = "customer_key"  # the pseudonymous customer column of every published table

# Column-name patterns (case-insensitive regular expressions) -> kind, tried in order. They extend the
# schema registry to tables outside the canonical schema. Names are deliberately narrow: `product_name`
# or `campaign_name` are not personal data.
PERSONAL_COLUMN_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"e[-_ ]?mail|邮箱|邮件", "email"),
    (r"phone|mobile|^tel$|telephone|手机|电话", "phone"),
    (r"^(full_|first_|last_|given_|family_|customer_|contact_|member_)?name$|^owner$|^manager$|^姓名$|^名字$", "name"),
    (r"birth|生日|出生", "date"),
    (r"comment|address|remark|free_?text|^notes?$|地址|备注|评论|留言", "text"),
)


# --------------------------------------------------------------------------------------------------
# keyed pseudonyms


def key_file() -> Path:
    """Return the pseudonym key file, ``$XDG_CONFIG_HOME/crm-analytics/pseudonym.key`` (default ``~/.config``)."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home).expanduser().resolve() / "crm-analytics" / KEY_FILE_NAME


def _check_outside_project(path: Path) -> None:
    """Refuse a key file inside the checkout or the project home (it would end up in git or outputs/)."""
    for root in {paths.code_root().resolve(), paths.project_root().resolve()}:
        if path == root or root in path.parents:
            raise ValueError(
                f"the pseudonym key file {path} lies inside the project folder {root}; keep it outside the "
                f"repository and outputs/ (set XDG_CONFIG_HOME elsewhere, or the {KEY_ENV} variable)"
            )


def _create_key_file(path: Path) -> None:
    """Write a new random key to ``path`` with 0600 permissions, unless another process just did."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")


def load_key() -> bytes:
    """Return the pseudonym key: ``$CRM_ANALYTICS_PSEUDONYM_KEY``, else the key file (created on first use).

    Raises ``ValueError`` when the key is shorter than 16 characters, when the key file is readable by
    other users, or when it lies inside the project.
    """
    configured = os.environ.get(KEY_ENV, "").strip()
    if configured:
        key = configured
    else:
        path = key_file()
        _check_outside_project(path)
        if not path.exists():
            _create_key_file(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ValueError(f"the pseudonym key file {path} is readable by others (mode {mode:o}); run chmod 600 on it")
        key = path.read_text(encoding="utf-8").strip()
    return _checked_key(key)


def _checked_key(key: str | bytes) -> bytes:
    """``key`` as bytes; refused when shorter than ``MIN_KEY_LENGTH`` characters."""
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"the pseudonym key must be at least {MIN_KEY_LENGTH} characters long")
    return key if isinstance(key, bytes) else key.encode("utf-8")


_PHONE_LIKE = re.compile(r"^\+?[\d\s\-().]{7,}$")


def _normalise_identifier(value: str) -> str:
    """NFKC, trimmed, case-folded; phone-like values reduced to digits without a +86/0086 prefix."""
    if value.isascii():  # NFKC leaves ASCII as it is, and ASCII case-folds to lower case
        text = " ".join(value.split()).lower()
    else:
        text = " ".join(unicodedata.normalize("NFKC", value).split()).casefold()
    if _PHONE_LIKE.match(text):
        digits = re.sub(r"\D", "", text)
        return re.sub(r"^(?:0086|86)(?=1\d{10}$)", "", digits)
    return text


def _is_blank(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value) or str(value).strip() == ""


def _map_values(values: pd.Series, func: Callable[[str], str]) -> pd.Series:
    """Apply ``func`` to every non-blank value as a string; blanks become ``<NA>``. Returns a string Series.

    ``func`` runs once per distinct value (a customer id repeated on many rows is hashed once).
    """
    if not isinstance(values, pd.Series):
        raise TypeError(f"expected a pandas Series, got {type(values).__name__}")
    codes, distinct = pd.factorize(values, use_na_sentinel=True)
    mapped = pd.array([pd.NA if _is_blank(v) else func(str(v)) for v in distinct.tolist()] + [pd.NA], dtype="string")
    out = mapped.take(np.where(codes < 0, len(mapped) - 1, codes))
    return pd.Series(out, index=values.index, name=values.name, dtype="string")


def pseudonymise(values: pd.Series, *, prefix: str = "cus", length: int = 16, key: str | bytes | None = None) -> pd.Series:
    """Return keyed pseudonyms of ``values``, e.g. ``cus_3f9a2b1c7d4e5f60``.

    The token is ``<prefix>_`` plus the first ``length`` hex digits of HMAC-SHA256(key, normalised value);
    normalisation is NFKC, trimmed, case-folded, and phone-like values keep only their digits without a
    +86 / 0086 prefix, so ``" Zhang@Example.COM"`` and ``"zhang@example.com"`` share a pseudonym.

    Parameters
    ----------
    values : pandas.Series
        Identifiers (emails, phones, customer ids). Missing or blank values stay missing.
    prefix : str
        Token prefix naming what is pseudonymised.
    length : int
        Hex digits kept, 8 to 64 (16 digits = 64 bits: collisions are negligible below billions of values).
    key : str or bytes, optional
        The pseudonym key; default: the project's (``load_key``). At least 16 characters.

    Returns
    -------
    pandas.Series
        Same index and name, dtype ``string``.
    """
    if not 8 <= length <= 64:
        raise ValueError(f"length must be between 8 and 64 hex digits, got {length}")
    keyed = hmac.new(load_key() if key is None else _checked_key(key), digestmod=hashlib.sha256)

    def token(value: str) -> str:
        mac = keyed.copy()  # the key's padding hashed once, not once per value
        mac.update(_normalise_identifier(value).encode("utf-8"))
        return f"{prefix}_{mac.hexdigest()[:length]}"

    return _map_values(values, token)


PERSON_KEY_PREFIX = "per"  # the pseudonyms of people's names in published tables (an opportunity's owner_key)


def person_key_column(column: str) -> str:
    """The published column holding the keyed pseudonyms of the names in ``column``: ``owner`` -> ``owner_key``."""
    return f"{column}_key"


def person_keys(values: pd.Series, *, key: str | bytes | None = None) -> pd.Series:
    """Keyed pseudonyms of people's names (``per_3f9a2b1c7d4e5f60``), as ``pseudonymise`` writes them.

    A table published with ``owner_key`` instead of ``owner`` lets a page keep the rows of one person (the viewer
    whose identity is that name) without any name being written to ``outputs/``. Names are compared as
    ``pseudonymise`` normalises them: ``Zhang Wei`` and ``zhang wei `` share a key.
    """
    return pseudonymise(values, prefix=PERSON_KEY_PREFIX, key=key)


# --------------------------------------------------------------------------------------------------
# the published customer key


def with_customer_key(
    df: pd.DataFrame,
    *,
    customer_col: str = "customer_id",
    key_col: str = CUSTOMER_KEY_COL,
    key: str | bytes | None = None,
) -> pd.DataFrame:
    """Return ``df`` with its warehouse customer id replaced by the published pseudonymous key.

    Every published table that identifies customers carries the same column, ``customer_key``
    (``pseudonymise`` of the warehouse ``customer_id``), so the tables of different analyses join on it
    and no raw id leaves the analyst area. ``source_ids_for`` maps keys back to source ids.

    Parameters
    ----------
    df : pandas.DataFrame
        A per-customer table with ``customer_col`` as a column or as a named index level.
    customer_col : str
        The warehouse customer id (text).
    key_col : str
        Name of the key column, first in the result.
    key : str or bytes, optional
        The pseudonym key; default: the project's.

    Returns
    -------
    pandas.DataFrame
        A copy with ``key_col`` (dtype ``string``) first, ``customer_col`` dropped and a plain
        ``RangeIndex``; the other columns keep their order.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"with_customer_key expects a pandas DataFrame, got {type(df).__name__}")
    frame = df.reset_index() if customer_col in (df.index.names or []) else df.reset_index(drop=True)
    require_columns(frame, [customer_col], context="with_customer_key(df)")
    if key_col in frame.columns:
        raise ValueError(f"with_customer_key(df): the table already has a {key_col!r} column")
    codes, distinct = pd.factorize(frame[customer_col], use_na_sentinel=False)
    keys = pseudonymise(pd.Series(distinct, dtype="object"), key=key).array.take(codes)  # one hash per customer
    out = frame.drop(columns=customer_col)
    out.insert(0, key_col, pd.array(keys, dtype="string"))
    return out


def source_ids_for(
    keys: Iterable[str] | pd.Series,
    lineage: pd.DataFrame,
    *,
    key: str | bytes | None = None,
    key_col: str = CUSTOMER_KEY_COL,
) -> pd.DataFrame:
    """Map published customer keys back to the source records they stand for (for users entitled to it).

    The warehouse's ``customer_lineage`` table names, for every source record, the warehouse customer
    it became (its ``customer_key`` column holds the warehouse ``customer_id``). Published tables carry
    ``pseudonymise(customer_id)`` under the pseudonym key, so whoever holds both the lineage and the
    key recomputes the pseudonyms and joins. Without the key the mapping cannot be made.

    Parameters
    ----------
    keys : iterable of str
        Published keys (``cus_...``), e.g. the ``customer_key`` column of a result table.
    lineage : pandas.DataFrame
        The warehouse's ``customer_lineage``: ``source``, ``source_customer_id`` and ``customer_key``
        (the warehouse customer id).
    key : str or bytes, optional
        The pseudonym key the tables were published with; default: the project's.
    key_col : str
        Name of the published key column in the result.

    Returns
    -------
    pandas.DataFrame
        ``key_col`` (the published key), ``customer_id`` (warehouse), ``source`` and
        ``source_customer_id``: one row per source record of each key found (a customer merged from
        three records gives three rows), sorted by ``key_col``, ``source``, ``source_customer_id``.
        Keys without a match (another key, another warehouse) are left out.
    """
    require_columns(lineage, ["source", "source_customer_id", "customer_key"], context="source_ids_for(lineage)")
    wanted = pd.Series(list(keys) if not isinstance(keys, pd.Series) else keys.to_numpy(), dtype="string").dropna().unique()
    records = pd.DataFrame(
        {
            "customer_id": lineage["customer_key"].astype("string").to_numpy(),
            "source": lineage["source"].astype("string").to_numpy(),
            "source_customer_id": lineage["source_customer_id"].astype("string").to_numpy(),
        }
    )
    records.insert(0, key_col, pseudonymise(records["customer_id"], key=key).to_numpy())
    found = records[records[key_col].isin(wanted)].drop_duplicates()
    return found.sort_values([key_col, "source", "source_customer_id"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# display masks


def _mask_word(word: str) -> str:
    return word[:1] + "*" * (len(word) - 1)


def _mask_one_email(value: str) -> str:
    text = unicodedata.normalize("NFKC", value).strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        return "***"
    return f"{local[0]}***@{domain.lower()}"


def _mask_one_phone(value: str) -> str:
    digits = re.sub(r"\D", "", unicodedata.normalize("NFKC", value))
    digits = re.sub(r"^(?:0086|86)(?=1\d{10}$)", "", digits)
    if len(digits) >= 11:
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    if len(digits) >= 7:
        return "*" * (len(digits) - 4) + digits[-4:]
    return "***"


def _mask_one_name(value: str) -> str:
    return " ".join(_mask_word(word) for word in unicodedata.normalize("NFKC", value).split())


def _year_only(value: str) -> str:
    match = re.search(r"(19|20)\d{2}", value)
    return match.group(0) if match else "****"


def mask_email(values: pd.Series) -> pd.Series:
    """Mask e-mail addresses as ``z***@example.com``: the first character of the local part and the domain.

    Values without an ``@`` become ``***``; missing values stay missing. Returns a ``string`` Series.
    """
    return _map_values(values, _mask_one_email)


def mask_phone(values: pd.Series) -> pd.Series:
    """Mask phone numbers as ``138****5678``, for any spelling (``+86 138-1234-5678``, ``0086…``).

    Only digits are kept and a +86 / 0086 prefix of a mobile number is dropped; 11 digits or more show
    the first three and last four, 7-10 digits (landlines) only the last four, shorter values ``***``.
    Returns a ``string`` Series.
    """
    return _map_values(values, _mask_one_phone)


def mask_name(values: pd.Series) -> pd.Series:
    """Mask personal names: the first character of every word is kept, the rest starred.

    ``张三`` becomes ``张*``, ``欧阳娜娜`` ``欧***``, ``Zhang Wei`` ``Z**** W**``. Returns a ``string`` Series.
    """
    return _map_values(values, _mask_one_name)


def _suffixes(names: list[str], key: bytes) -> dict[str, str]:
    """A short keyed suffix per name (``#3f9a``), lengthened until the names' suffixes differ."""
    digests = {name: hmac.new(key, name.encode("utf-8"), hashlib.sha256).hexdigest() for name in names}
    length = 4
    while len({digest[:length] for digest in digests.values()}) < len(digests):
        length += 2
    return {name: f"#{digest[:length]}" for name, digest in digests.items()}


def mask_names_distinct(values: pd.Series, *, key: str | bytes | None = None) -> pd.Series:
    """Mask names for display so that two different names never show alike.

    Each name is masked as ``mask_name`` writes it; when different names share a mask (``Wang Fang`` and
    ``Wang Fei`` are both ``W*** F**``), each of them gets a short keyed suffix (``W*** F** #3f9a``): the
    first hex digits of HMAC-SHA256(key, name as written), stable across runs and independent of which
    other names are shown, lengthened when two suffixes would agree. Names are compared as written, as the
    groups a table was computed on are: mask at display time, never before grouping.

    Parameters
    ----------
    values : pandas.Series
        Names (one per row; repeated names keep one label). Missing values stay missing.
    key : str or bytes, optional
        The pseudonym key; default: the project's (``load_key``), read only when masks collide.

    Returns
    -------
    pandas.Series
        Same index and name, dtype ``string``.
    """
    masked = mask_name(values)
    present = masked.notna()
    pairs = pd.DataFrame({"name": values[present].astype(str), "mask": masked[present]}).drop_duplicates()
    shared = pairs.loc[pairs.duplicated("mask", keep=False), "name"].tolist()
    if not shared:
        return masked
    suffixes = _suffixes(shared, load_key() if key is None else _checked_key(key))
    labelled = masked + values.astype(str).map(lambda v: f" {suffixes[v]}" if v in suffixes else "").astype("string")
    return labelled.where(present, masked)


def mask_date(values: pd.Series) -> pd.Series:
    """Reduce dates (birth dates) to their year, as strings: ``1987-03-04`` becomes ``1987``."""
    if pd.api.types.is_datetime64_any_dtype(values):
        values = values.dt.strftime("%Y-%m-%d")
    return _map_values(values, _year_only)


def redact_text(values: pd.Series) -> pd.Series:
    """Replace free text (comments, addresses) entirely by ``[redacted]``; missing values stay missing."""
    return _map_values(values, lambda _: REDACTED)


MASKS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "email": mask_email,
    "phone": mask_phone,
    "name": mask_name,
    "date": mask_date,
    "text": redact_text,
}


def personal_column_kind(column: str) -> str | None:
    """Return the kind of personal data a column name suggests (``email``, ``phone``, ``name``, ``date``,
    ``text``), or ``None`` when the name matches no pattern."""
    for pattern, kind in PERSONAL_COLUMN_PATTERNS:
        if re.search(pattern, str(column), flags=re.IGNORECASE):
            return kind
    return None


def registered_personal_columns() -> set[str]:
    """Return every column named in ``schema.PERSONAL_DATA_COLUMNS``, whatever its table."""
    return {column for columns in PERSONAL_DATA_COLUMNS.values() for column in columns}


def personal_columns(df: pd.DataFrame) -> list[str]:
    """Return the columns of ``df`` that hold personal data: registered in the schema or matching a pattern."""
    registered = registered_personal_columns()
    return [c for c in df.columns if c in registered or personal_column_kind(c) is not None]


def mask_frame(
    df: pd.DataFrame,
    *,
    columns: Iterable[str] | None = None,
    allow_personal_data: bool = False,
    distinct_names: bool = False,
    key: str | bytes | None = None,
) -> pd.DataFrame:
    """Return a copy of ``df`` with its personal-data columns masked for display.

    Parameters
    ----------
    df : pandas.DataFrame
        Any table. Its personal columns are those registered in ``schema.PERSONAL_DATA_COLUMNS`` or whose
        name matches ``PERSONAL_COLUMN_PATTERNS``.
    columns : iterable of str, optional
        Mask exactly these columns instead (each must exist). A column whose kind the name does not
        reveal is treated as free text and redacted entirely.
    allow_personal_data : bool
        ``True`` returns an unmasked copy: only for analysts, set explicitly by a notebook parameter.
    distinct_names : bool
        Mask name columns with ``mask_names_distinct``, so that two different names never show alike: for
        tables with one row per person (a breakdown by sales representative).
    key : str or bytes, optional
        The pseudonym key of ``mask_names_distinct``; default: the project's.

    Returns
    -------
    pandas.DataFrame
        Same shape, index and column order; masked columns have dtype ``string``.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"mask_frame expects a pandas DataFrame, got {type(df).__name__}")
    out = df.copy()
    if allow_personal_data:
        return out
    if columns is None:
        targets = personal_columns(df)
    else:
        targets = list(columns)
        require_columns(df, targets, context="mask_frame(df)")
    for column in targets:
        kind = personal_column_kind(column) or "text"
        out[column] = mask_names_distinct(out[column], key=key) if distinct_names and kind == "name" else MASKS[kind](out[column])
    return out


# --------------------------------------------------------------------------------------------------
# small groups


def suppress_small_groups(
    df: pd.DataFrame,
    *,
    count_col: str,
    k: int = 5,
    keep_cols: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Suppress aggregates computed over fewer than ``k`` customers.

    A row whose ``count_col`` is below ``k`` (or missing) keeps its label columns, so the reader still sees
    that the group exists, but every other column, ``count_col`` included, becomes missing; a boolean column
    ``is_suppressed`` says which rows were suppressed. Groups of zero customers are suppressed too.
    Secondary suppression is not attempted: a table that also publishes a total lets a reader subtract the
    visible groups, so publish totals only over unsuppressed groups or with ``k`` large enough.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per group, with ``count_col`` the number of distinct customers behind the row.
    count_col : str
        The customer count column, e.g. ``n_customers``.
    k : int
        Minimum group size shown, at least 1 (default 5).
    keep_cols : iterable of str, optional
        Columns kept in suppressed rows (the group labels). Default: every non-numeric column.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` plus ``is_suppressed`` (bool); suppressed values are missing.
    """
    require_columns(df, [count_col], context="suppress_small_groups(df)")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if keep_cols is None:
        keep = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]
    else:
        keep = list(keep_cols)
        require_columns(df, keep, context="suppress_small_groups(keep_cols)")
    if count_col in keep:
        raise ValueError(f"count_col {count_col!r} cannot be kept in suppressed rows")
    counts = pd.to_numeric(df[count_col], errors="coerce")
    small = (~(counts >= k)).fillna(True).astype(bool)  # a missing count is suppressed too
    out = df.copy()
    for column in out.columns:
        if column not in keep:
            out[column] = out[column].mask(small)
    out["is_suppressed"] = small.to_numpy()
    return out
