"""Check parameter values against the type of the notebook's default, before any kernel starts.

papermill injects whatever it is given: ``-p as_of=notadate`` starts a kernel and fails cells
later, and ``-p n_bins=5.5`` runs with a float where an int was meant. The runner calls
:func:`check_types` on the merged parameters (``default.yaml``, the ``-f`` file, ``-p`` values) so
a wrong value is a :class:`TypeMismatch` naming the parameter, the value, where it came from and
the expected type. The expected type is read from the default in the notebook's ``parameters``
cell (a literal; see ``CONTRIBUTING.md``):

=====================  ==========================================================================
default                accepted values
=====================  ==========================================================================
``True`` / ``False``   a boolean (``true``, ``false``, ``yes``, ``no`` in YAML)
an int                 an int (not a boolean, not ``5.0``)
a float                an int or a float (not a boolean)
a list                 a list; when the default's items share one kind (text, number, list), so must the value's
a dict                 a dict
a string               a string; a *date parameter* must be empty or an ISO date (``2024-03-31``, or a
                       date-time such as ``2024-03-31T08:00+01:00``); a *choice* must be one of its values
``None``               anything
=====================  ==========================================================================

A date parameter is one whose name is in :data:`DATE_NAMES` or ends in ``_date`` or ``_as_of``
and whose default is empty or an ISO date. Choices are declared in :data:`CHOICES`, for one
analysis or for every notebook that has the parameter; a test keeps them in step with the
modules that define the allowed values and with the notebooks' defaults.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

DATE_NAMES = frozenset({"as_of", "calibration_end", "observation_end"})
DATE_SUFFIXES = ("_date", "_as_of")
ANY_ANALYSIS = "*"
# (analysis or ANY_ANALYSIS, parameter) -> allowed values
CHOICES: dict[tuple[str, str], tuple[Any, ...]] = {
    (ANY_ANALYSIS, "backend"): ("duckdb", "pyspark"),  # crm_analytics.engine.BACKENDS
    ("cohort", "period"): ("D", "W", "M", "Q", "Y"),  # crm_analytics.cohort.PERIODS
    ("overview", "period"): ("day", "week", "month", "quarter"),
    ("satisfaction", "grain"): ("day", "week", "month", "quarter"),
    ("kpi", "grain"): ("day", "week", "month", "quarter"),  # crm_analytics.kpi_catalogue.GRAINS
    ("funnel", "mode"): ("ordered", "any_order"),  # crm_analytics.funnel.MODES
    ("funnel", "unit"): ("session", "customer"),
    ("cleansing", "engine"): ("fellegi_sunter", "splink"),
}
_DATE_EXAMPLE = "an ISO date such as 2024-03-31 (or empty: derived from the data)"


class TypeMismatch(ValueError):
    """A parameter value does not fit the type of the notebook's default. The message names both."""


def default_value(declared: Mapping[str, Any]) -> tuple[bool, Any]:
    """``(True, value)`` for a declared parameter whose default (papermill's ``default`` text) is a literal.

    ``(False, None)`` when the default is an expression (then nothing is checked).
    """
    text = declared.get("default")
    if not isinstance(text, str):
        return False, None
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def is_iso_date(text: str) -> bool:
    """Whether ``text`` reads as an ISO 8601 date or date-time (``2024-03-31``, ``2024-03-31T08:00+01:00``)."""
    try:
        datetime.fromisoformat(text.strip())
    except ValueError:
        return False
    return True


def is_date_parameter(name: str, default: Any) -> bool:
    """Whether ``name`` is a date parameter: a date name or suffix, and a default that is empty or an ISO date."""
    named = name in DATE_NAMES or name.endswith(DATE_SUFFIXES)
    return named and isinstance(default, str) and (default == "" or is_iso_date(default))


def choices_for(analysis: str, name: str) -> tuple[Any, ...] | None:
    """The allowed values of parameter ``name`` of ``analysis`` (:data:`CHOICES`), or ``None`` when free."""
    return CHOICES.get((analysis, name)) or CHOICES.get((ANY_ANALYSIS, name))


def _kind(value: Any) -> str:
    """A value's kind as a parameter has it: boolean, int, float, text, list, mapping or missing."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    if value is None:
        return "missing (null)"
    return type(value).__name__


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` has the kind of ``default`` (an int is a float; a bool is neither)."""
    expected, got = _kind(default), _kind(value)
    return got == expected or (expected == "float" and got == "int")


def _item_kind(items: list) -> str | None:
    """The one kind every item of a default list shares (ints count as floats beside floats), or ``None``."""
    kinds = {"float" if _kind(item) == "int" else _kind(item) for item in items}
    return kinds.pop() if len(kinds) == 1 else None


def problem(name: str, value: Any, default: Any, *, analysis: str = "") -> str | None:
    """What is wrong with ``value`` for a parameter whose notebook default is ``default``; ``None`` when it fits.

    Returns the expected type in words (``"expected an int (the notebook's default is 3)"``).
    """
    if default is None:
        return None
    if not _fits(value, default):
        wanted = "an ISO date as text" if is_date_parameter(name, default) else _described(default)
        hint = "; quote it in YAML" if _kind(default) == "text" and not isinstance(value, (list, dict)) else ""
        return f"expected {wanted} (the notebook's default is {default!r}), got {_kind(value)}{hint}"
    if is_date_parameter(name, default) and value.strip() and not is_iso_date(value):
        return f"expected {_DATE_EXAMPLE}"
    allowed = choices_for(analysis, name)
    if allowed is not None and value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"expected one of {', '.join(repr(a) for a in allowed)}{hint}"
    if isinstance(default, list) and default and (item_kind := _item_kind(default)):
        wrong = [item for item in value if not _fits(item, 1.0 if item_kind == "float" else default[0])]
        if wrong:
            return f"expected a list of {_plural(item_kind)} (like the default {default!r}), got {wrong[0]!r} ({_kind(wrong[0])})"
    return None


def _described(default: Any) -> str:
    kind = _kind(default)
    return {"int": "an int", "float": "a number", "boolean": "a boolean (true or false)", "text": "text",
            "list": "a list", "mapping": "a mapping"}.get(kind, kind)


def _plural(kind: str) -> str:
    return {"float": "numbers", "int": "ints", "text": "texts", "boolean": "booleans", "list": "lists"}.get(kind, kind)


def check_types(
    analysis: str,
    values: Mapping[str, Any],
    declared: Mapping[str, Mapping[str, Any]],
    *,
    origins: Mapping[str, str] | None = None,
    skip: Iterable[str] = (),
) -> None:
    """Raise :class:`TypeMismatch` when a value does not fit the type of its notebook default.

    Parameters
    ----------
    analysis : str
        The notebook's name (for the message and the analysis-specific :data:`CHOICES`).
    values : mapping
        Parameter name -> value, as papermill would inject them.
    declared : mapping
        ``papermill.inspect_notebook`` of the notebook: name -> ``{"default": "<literal>", ...}``.
    origins : mapping, optional
        Name -> where the value came from (a parameter file, ``-p``), named in the message.
    skip : iterable of str
        Names not checked (values the runner injects itself).

    Every mismatch is listed, one per parameter, in a single error.
    """
    skipped, origins = set(skip), origins or {}
    found = []
    for name, value in values.items():
        if name in skipped or name not in declared:
            continue
        literal, default = default_value(declared[name])
        if not literal:
            continue
        issue = problem(name, value, default, analysis=analysis)
        if issue:
            where = f" (from {origins[name]})" if name in origins else ""
            found.append(f"parameter {name!r} of {analysis!r} is {value!r}{where}: {issue}")
    if found:
        raise TypeMismatch("; ".join(found))
