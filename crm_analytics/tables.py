"""Tables for people: every value written in its unit, headers in words, no meaningless index.

A notebook shows a result table with ``show_table(df, name, output_dir=output_dir)``: the report gets
the formatted table (at most ``max_rows`` rows, with a note naming the full table), and the run folder
gets the raw table (``results.save_table``: Parquet and CSV keep every raw value).

Units
-----
Each column has a unit, inferred from the project's column names (CONTRIBUTING.md, "Names") unless
``units={column: unit}`` says otherwise:

============  =====================================================  ==========================
unit          columns                                                written as
============  =====================================================  ==========================
``money``     ``*_amount``, ``monetary``, ``*_amount_per_day``       ``£86,161`` (``money.format_money``)
``percent``   ``*_pct``: already 0-100                               ``60.3%``
``share``     ``*_rate``, ``*_share``, ``*_probability``: 0-1        ``60.3%`` (times 100)
``count``     ``n_*``, integer columns, ``users``, ``customers``...  ``14,558``
``integer``   ``k``, ``cluster``, ``*_number``, ``hour``...          ``7`` (no separator)
``date``      ``*_date``, dates and timestamps                       ``2024-03-01`` (``2024-03-01 14:05`` with a time of day)
``days``      ``*_days``                                             ``12.5 days`` (under a day: ``3.2 hours``, ``14 minutes``)
``hours``     ``*_hours``                                            ``3.2 hours``
``minutes``   ``*_minutes*``                                         ``0.6 minutes``
``seconds``   ``seconds``, ``*_seconds``                             ``1.2 seconds``
``p_value``   ``p_value``                                            ``0.012``, ``<0.001``
``number``    any other number                                       3 significant digits, at most 3 decimals
``text``      text, categories, booleans (``yes``/``no``)            as it is
============  =====================================================  ==========================

Separators and decimal marks follow the dataset's locale (Babel): ``14,558`` in ``en_GB``, ``14.558`` in ``pt_BR``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from crm_analytics import money

UNITS = ("money", "percent", "share", "count", "integer", "date", "days", "hours", "minutes", "seconds", "p_value", "number", "text")
MAX_ROWS = 20  # rows shown in a report before the table is cut (the full table is in the run's tables/)
MISSING = "—"  # shown for a missing value
WIDE_ONE_ROW = 6  # a one-row table with more columns than this is shown turned: one line per column
SCROLL_CLASS = "table-scroll"  # the box around a table: it scrolls sideways on a narrow page instead of overflowing
WIDE_PRINT_COLUMNS = 12  # a table with more columns (and at most as many rows) also gets a turned copy for print
PRINT_CLASS = "table-print"  # that copy: hidden on screen, shown instead of the table by the PDF's print stylesheet

# Names whose unit the suffix rules would miss (or get wrong).
_UNIT_BY_NAME = {
    "monetary": "money", "p_value": "p_value", "seconds": "seconds",
    "users": "count", "customers": "count", "orders": "count", "rows": "count", "drop_off": "count", "group_customers": "count",
    "n_without_amount": "count",  # deals without an amount: a count, though the name ends in _amount
    "k": "integer", "cluster": "integer", "hour": "integer", "day_of_week": "integer", "decile": "integer", "rank": "integer",
    "bin": "integer", "level": "integer", "period": "integer", "year": "integer", "month": "integer",
}
_UNIT_BY_SUFFIX = (
    ("_amount_per_day", "money"), ("_amount", "money"), ("_pct", "percent"), ("_rate", "share"), ("_share", "share"),
    ("_probability", "share"), ("_days", "days"), ("_hours", "hours"), ("_seconds", "seconds"), ("_date", "date"), ("_number", "integer"),
)
_UNIT_BY_PREFIX = (("n_", "count"), ("rows_", "count"))
_NUMERIC_UNITS = {"money", "percent", "share", "count", "integer", "days", "hours", "minutes", "seconds", "p_value", "number"}

# Words written differently in a header.
_WORDS = {
    "rfm": "RFM", "kpi": "KPI", "clv": "CLV", "ltv": "LTV", "nps": "NPS", "csat": "CSAT", "id": "ID", "auc": "AUC", "roc": "ROC",
    "roi": "ROI", "cac": "CAC", "mape": "MAPE", "smape": "sMAPE", "yoy": "year on year", "avg": "average", "std": "standard deviation",
    "p10": "P10", "p25": "P25", "p50": "P50 (median)", "p75": "P75", "p90": "P90", "f1": "F1", "pct": "%",
}
_HEADERS = {"p_value": "p-value", "n": "Count", "k": "k", "chi2": "Chi-square", "dof": "Degrees of freedom", "monetary": "Monetary"}


def infer_unit(column, dtype=None) -> str:
    """The unit of a column from its name (the project's conventions), else from its dtype.

    Parameters
    ----------
    column : the column name (any hashable; non-text names such as the period numbers of a cohort matrix use the dtype).
    dtype : the column's dtype, used when the name says nothing (integers -> ``count``, dates -> ``date``,
        other numbers -> ``number``, the rest -> ``text``).

    Returns
    -------
    str
        One of ``UNITS``.
    """
    name = str(column).lower()
    if dtype is not None and (pd.api.types.is_bool_dtype(dtype) or not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype))):
        return "text"
    if dtype is not None and pd.api.types.is_datetime64_any_dtype(dtype):
        return "date"
    if name in _UNIT_BY_NAME:
        return _UNIT_BY_NAME[name]
    if "minutes" in name:
        return "minutes"
    for suffix, unit in _UNIT_BY_SUFFIX:
        if name.endswith(suffix):
            return unit
    for prefix, unit in _UNIT_BY_PREFIX:
        if name.startswith(prefix):
            return unit
    if dtype is not None and pd.api.types.is_integer_dtype(dtype):
        return "count"
    return "number"


def column_units(df: pd.DataFrame, units: Mapping | None = None, *, default_unit: str | None = None) -> dict:
    """The unit of every column of ``df``: ``units`` first, then ``default_unit`` for numbers, then ``infer_unit``.

    ``default_unit`` applies to numeric columns whose name matches no rule (the period columns of a
    cohort matrix, for instance). Raises ``ValueError`` naming a column given an unknown unit.
    """
    given = dict(units or {})
    for column, unit in given.items():
        if unit not in UNITS:
            raise ValueError(f"unit {unit!r} of column {column!r} is not one of {UNITS}")
    if default_unit is not None and default_unit not in UNITS:
        raise ValueError(f"default_unit {default_unit!r} is not one of {UNITS}")
    found = {}
    for position, column in enumerate(df.columns):
        inferred = infer_unit(column, df.iloc[:, position].dtype)
        if column in given:
            inferred = given[column]
        elif default_unit and inferred in _NUMERIC_UNITS and infer_unit(column) == "number":
            inferred = default_unit  # a number whose name says nothing
        found[column] = inferred
    return found


def header(column, unit: str = "number", *, currency: str | None = None) -> str:
    """A column name in words: ``net_revenue_amount`` -> ``Net revenue (GBP)``, ``customer_pct`` -> ``Customer %``.

    ``n_*`` loses its ``n`` (``n_orders`` -> ``Orders``); ``_days``, ``_hours`` and ``_seconds`` go (the values
    carry the unit); money headers name ``currency``; common abbreviations are spelled out or capitalised.
    """
    name = str(column)
    if name in _HEADERS:
        return _HEADERS[name]
    words = [w for w in name.split("_") if w]
    if not words:
        return name
    suffix = ""
    if unit == "money":
        if words[-1] == "amount" and len(words) > 1:
            words = words[:-1]
        elif words[-2:] == ["amount", "per"]:
            words = words[:-2]
        suffix = f" ({currency})" if currency else ""
    elif unit in ("days", "hours", "seconds") and len(words) > 1 and words[-1] == unit:
        words = words[:-1]
    if unit in ("count", "integer") and len(words) > 1 and words[0] == "n":
        words = words[1:]
    text = " ".join(_WORDS.get(w.lower(), w) for w in words)
    return text[:1].upper() + text[1:] + suffix


def _decimal(value: float, places: int, locale: str, *, grouping: bool = True) -> str:
    import babel.numbers

    pattern = ("#,##0" if grouping else "0") + ("." + "0" * places if places else "")
    return babel.numbers.format_decimal(value, format=pattern, locale=locale, decimal_quantization=True)


def _is_missing(value) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, (float, np.floating)) and math.isnan(value)) or (pd.api.types.is_scalar(value) and pd.isna(value))


def _number_places(value: float) -> int:
    """Decimals of a plain number: 3 significant digits, never more than 3 decimals, none from 100 up."""
    magnitude = abs(value)
    if magnitude >= 100 or float(value).is_integer():
        return 0
    if magnitude >= 10:
        return 1
    if magnitude >= 1:
        return 2
    return 3


def format_value(value, unit: str, *, currency: str = "GBP", locale: str = "en_GB", with_time: bool = False) -> str:
    """Write one value in its unit for people (see the module's table); ``—`` for a missing value.

    Parameters
    ----------
    value : a number, a timestamp or text.
    unit : one of ``UNITS``.
    currency, locale : how money, separators and decimal marks are written (the dataset's).
    with_time : a ``date`` also shows its time of day (hours and minutes).
    """
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r} is not one of {UNITS}")
    if not isinstance(value, (list, tuple, dict, np.ndarray)) and _is_missing(value):
        return MISSING
    if unit == "text" or isinstance(value, (str, bool, np.bool_)):
        return ("yes" if value else "no") if isinstance(value, (bool, np.bool_)) else str(value)
    if unit == "date":
        moment = pd.Timestamp(value)
        return f"{moment:%Y-%m-%d %H:%M}" if with_time else f"{moment:%Y-%m-%d}"
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return f"{pd.Timestamp(value):%Y-%m-%d}"
    number = float(value)
    if unit == "money":
        return money.format_money(number, currency, locale)
    if unit in ("percent", "share"):
        points = number * 100 if unit == "share" else number
        places = 2 if 0 < abs(points) < 1 else 1
        return _decimal(points, places, locale) + "%"
    if unit == "count":  # a mean of counts keeps its decimals
        return _decimal(number, 0 if number.is_integer() else _number_places(number), locale)
    if unit == "integer":
        return _decimal(round(number), 0, locale, grouping=False)
    if unit == "p_value":
        return "<0.001" if 0 <= number < 0.001 else _decimal(number, 3, locale)
    if unit in ("days", "hours", "minutes", "seconds"):
        number, unit = _readable_duration(number, unit)
        places = 0 if number.is_integer() or abs(number) >= 100 else (2 if abs(number) < 1 else 1)
        word = unit[:-1] if round(number, places) == 1 else unit
        return f"{_decimal(number, places, locale)} {word}"
    return _decimal(number, _number_places(number), locale)


_SECONDS_PER = {"days": 86_400, "hours": 3_600, "minutes": 60, "seconds": 1}


def _readable_duration(number: float, unit: str) -> tuple[float, str]:
    """A duration under one ``unit`` in the largest smaller unit it fills (``0.02 days`` -> ``28.8 minutes``)."""
    seconds = number * _SECONDS_PER[unit]
    for smaller in ("days", "hours", "minutes", "seconds"):
        if _SECONDS_PER[smaller] <= _SECONDS_PER[unit] and (abs(seconds) >= _SECONDS_PER[smaller] or smaller == "seconds"):
            return (seconds / _SECONDS_PER[smaller], smaller) if number and abs(number) < 1 else (number, unit)
    return number, unit


def _with_key_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a meaningful index turned into columns and a bare 0..n index dropped; flat column names."""
    out = df.copy(deep=False)
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(str(part) for part in parts if str(part)) for parts in out.columns]
    out.columns.name = None
    default_index = out.index.nlevels == 1 and out.index.name is None and out.index.equals(pd.RangeIndex(len(out)))
    if default_index:
        return out.reset_index(drop=True)
    names = [n if n is not None else "" for n in out.index.names]
    out.index = out.index.set_names(names)
    return out.reset_index()


def format_table(
    df: pd.DataFrame,
    *,
    units: Mapping | None = None,
    labels: Mapping | None = None,
    default_unit: str | None = None,
    currency: str = "GBP",
    locale: str = "en_GB",
    max_rows: int | None = MAX_ROWS,
) -> pd.DataFrame:
    """Return ``df`` written for people: text cells in each column's unit, headers in words, no bare index.

    Parameters
    ----------
    df : pandas.DataFrame
        A result table with raw values. It is not modified. A named index (or an unnamed one that is
        not 0..n, such as the statistics of ``describe()``) becomes the first column(s); a 0..n index is dropped.
    units : {column: unit}, optional
        Units of ``UNITS`` that override the ones inferred from the column names (``infer_unit``).
    labels : {column: header}, optional
        Headers that override the generated ones (``header``).
    default_unit : str, optional
        Unit of the numeric columns whose name says nothing (e.g. ``"share"`` for a retention matrix).
    currency, locale : str
        The dataset's currency (ISO 4217) and locale: money and separators.
    max_rows : int or None
        Keep the first ``max_rows`` rows (``None``: all).

    Returns
    -------
    pandas.DataFrame
        Text cells only (``—`` where missing), columns named in words, a 0..n index.
    """
    table = _with_key_columns(df)
    if max_rows is not None:
        table = table.head(max_rows)
    unit_of = column_units(table, units, default_unit=default_unit)
    given_labels = dict(labels or {})
    out = {}
    for position, column in enumerate(table.columns):
        values = table.iloc[:, position]
        unit = unit_of[column]
        with_time = unit == "date" and _has_time_of_day(values)
        label = given_labels.get(column, header(column, unit, currency=currency))
        while label in out:
            label += " "
        out[label] = [format_value(v, unit, currency=currency, locale=locale, with_time=with_time) for v in values.tolist()]
    return pd.DataFrame(out, index=pd.RangeIndex(len(table)))


def _has_time_of_day(values: pd.Series) -> bool:
    """True when some timestamp of ``values`` is not at midnight."""
    try:
        moments = pd.to_datetime(values.dropna())
    except (TypeError, ValueError):
        return False
    return bool(len(moments)) and bool((moments != moments.dt.normalize()).any())


def truncation_note(n_shown: int, n_rows: int, *, name: str | None = None, locale: str = "en_GB") -> str:
    """``Showing 20 of 1,234 rows; the full table is tables/x.parquet.`` (empty when nothing was cut)."""
    if n_shown >= n_rows:
        return ""
    where = f"; the full table is tables/{name}.parquet (and .csv) in the run folder" if name else ""
    return f"Showing {_decimal(n_shown, 0, locale)} of {_decimal(n_rows, 0, locale)} rows{where}."


def table_styler(df: pd.DataFrame, **options):
    """``format_table(df, **options)`` as a pandas Styler: index hidden, numbers right-aligned.

    Accepts the keywords of ``format_table``. The Styler's data are the formatted text cells. A table of one
    row and more than ``WIDE_ONE_ROW`` columns is turned: a ``Measure`` and a ``Value`` column, one line per column.
    """
    units = options.get("units")
    default_unit = options.get("default_unit")
    formatted = format_table(df, **options)
    raw = _with_key_columns(df).head(len(formatted))
    unit_of = column_units(raw, units, default_unit=default_unit)
    right = [formatted.columns[i] for i, column in enumerate(raw.columns) if unit_of[column] in _NUMERIC_UNITS]
    if len(formatted) == 1 and len(formatted.columns) > WIDE_ONE_ROW:
        return _styled(turned(formatted, keyed=False))
    return _styled(formatted, right)


def _styled(formatted: pd.DataFrame, right: list | None = None):
    """A Styler of text cells: index hidden, ``right`` (default: every column but ``Measure``) right-aligned."""
    right = [c for c in formatted.columns if c != "Measure"] if right is None else right
    # cells and headers hold text (customer data among it): escaped, so a value cannot add markup or script
    styler = formatted.style.format(escape="html").format_index(escape="html", axis=1).hide(axis="index")
    styler = styler.set_table_attributes('class="dataframe people-table"')
    if right:
        styler = styler.set_properties(subset=right, **{"text-align": "right"})
    return styler


def turned(formatted: pd.DataFrame, *, keyed: bool = True) -> pd.DataFrame:
    """A formatted table turned on its side: a ``Measure`` column naming the old columns, one column per old row.

    With ``keyed`` the first column's values (the rows' keys) name the new columns (``Cluster 0`` for a
    number, the value itself for a name) and the first column is left out; without, one row becomes ``Value``.
    """
    if not keyed:
        return pd.DataFrame({"Measure": [str(c).strip() for c in formatted.columns], "Value": formatted.iloc[0].tolist()})
    key = str(formatted.columns[0]).strip()
    names = []
    for value in formatted.iloc[:, 0]:
        name = f"{key} {value}" if str(value).isdigit() else str(value)
        while name in names or name == "Measure":
            name += " "  # unique headers, as format_table makes them
        names.append(name)
    out = {"Measure": [str(c).strip() for c in formatted.columns[1:]]}
    for name, (_, row) in zip(names, formatted.iterrows()):
        out[name] = row.iloc[1:].tolist()
    return pd.DataFrame(out)


def table_html(df: pd.DataFrame, *, name: str | None = None, caption: str | None = None, **options) -> str:
    """The HTML of a table for people: ``table_styler`` plus, when rows were cut, the truncation note.

    Parameters
    ----------
    df : the raw result table (not modified).
    name : the table's name in the run's ``tables/`` folder, cited in the truncation note.
    caption : a line shown above the table.
    **options : the keywords of ``format_table`` (``units``, ``labels``, ``default_unit``, ``currency``,
        ``locale``, ``max_rows``).

    Returns
    -------
    str
        An HTML fragment: the table without index inside a ``<div class="table-scroll">`` that scrolls sideways
        when the table is wider than the page, then ``<p class="table-note">`` when rows were left out.
    """
    import html

    styler = table_styler(df, **options)
    if caption:
        styler = styler.set_caption(html.escape(caption))
    body = f'<div class="{SCROLL_CLASS}" style="overflow-x: auto; max-width: 100%;">{styler.to_html()}</div>'
    shown = styler.data
    if len(shown.columns) > WIDE_PRINT_COLUMNS and 1 < len(shown) <= WIDE_PRINT_COLUMNS:
        body += f'<div class="{PRINT_CLASS}" style="display: none;">{_styled(turned(shown)).to_html()}</div>'
    max_rows = options.get("max_rows", MAX_ROWS)
    n_shown = len(df) if max_rows is None else min(len(df), max_rows)
    note = truncation_note(n_shown, len(df), name=name, locale=options.get("locale", "en_GB"))
    return body + (f'<p class="table-note"><em>{html.escape(note)}</em></p>' if note else "")


def show_table(
    df: pd.DataFrame,
    name: str | None = None,
    *,
    output_dir: str | Path | None = None,
    units: Mapping | None = None,
    labels: Mapping | None = None,
    default_unit: str | None = None,
    dataset: str | None = None,
    currency: str | None = None,
    locale: str | None = None,
    max_rows: int | None = MAX_ROWS,
    caption: str | None = None,
) -> Path | None:
    """Show a result table for people in the notebook (and report) and persist it raw.

    The page gets ``table_html`` (values in their units, headers in words, no bare index, at most
    ``max_rows`` rows with a note). With ``name`` and ``output_dir`` the raw table is written as
    ``tables/<name>.parquet`` and ``.csv`` (``results.save_table``), as ``results.show_figure`` does
    for figures. Money is in ``currency`` and ``locale``, by default ``dataset``'s (empty: the
    default dataset's). Returns the Parquet path, or ``None`` when nothing was persisted.
    """
    from IPython.display import display

    from crm_analytics import results

    currency, locale = money.currency_and_locale(currency, locale, dataset=dataset)
    options = dict(units=units, labels=labels, default_unit=default_unit, currency=currency, locale=locale, max_rows=max_rows)
    body = table_html(df, name=name, caption=caption, **options)
    text = format_table(df, **options).to_string(index=False)
    note = truncation_note(min(len(df), max_rows if max_rows is not None else len(df)), len(df), name=name, locale=locale)
    display({"text/html": body, "text/plain": text + (f"\n{note}" if note else "")}, raw=True)
    return results.save_table(df, name, output_dir=output_dir) if name else None


_LONG_FLOAT = re.compile(r"\d+[.,]\d{4,}")


def long_floats(text: str) -> list[str]:
    """Numbers in ``text`` written with four or more decimals (what a table for people never shows)."""
    return _LONG_FLOAT.findall(text)
