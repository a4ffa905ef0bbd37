"""The KPI catalogue: what each indicator means, its target and thresholds, and how it is computed.

The catalogue is a YAML file (``parameters/kpi/catalogue.yaml``) with a list
``kpis``; each entry is checked when it is loaded, so a typo fails at once with
the entry and the field named, never half-way through a report. The
computations themselves are registered functions of ``crm_analytics.kpi``;
this module only validates entries against that registry (passed in, so the
two modules do not import each other in a circle).

Glossary
--------
target
    The value the business aims for, in the KPI's unit, at the KPI's ``grain``.
amber, red
    Thresholds on the far side of the target. With ``direction: higher`` a value
    at or above ``amber`` is green, at or above ``red`` (but below ``amber``)
    amber, below ``red`` red; with ``direction: lower`` the comparisons flip.
    So ``red <= amber <= target`` when higher is better and
    ``red >= amber >= target`` when lower is better.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

UNITS = ("count", "pct", "CNY", "days", "hours", "score")
DIRECTIONS = ("higher", "lower")
GRAINS = ("day", "week", "month", "quarter")
DIMENSIONS = ("segment", "channel")
CATEGORIES = ("customer", "marketing", "sales", "service")
WHERE_OPERATORS = ("==", "!=", ">=", "<=", ">", "<", "in", "is_not", "notnull", "isnull")

_REQUIRED_FIELDS = ("id", "name", "definition", "unit", "direction", "grain", "target", "amber", "red", "computation")
_OPTIONAL_FIELDS = ("category", "params", "dimensions", "breakdown")
# Parameters every computation receives from the framework, never from the catalogue.
_RESERVED_PARAMETERS = ("tables", "scope")


class CatalogueError(ValueError):
    """A KPI catalogue entry is invalid; the message names the entry and the field."""


@dataclass(frozen=True)
class KpiDefinition:
    """One validated catalogue entry (see the module docstring for the meaning of the fields)."""

    id: str
    name: str
    definition: str
    unit: str
    direction: str
    grain: str
    target: float
    amber: float
    red: float
    computation: str
    category: str = "customer"
    params: Mapping[str, Any] = field(default_factory=dict)
    dimensions: tuple[str, ...] = ()
    breakdown: str | None = None

    @property
    def higher_is_better(self) -> bool:
        """True when a larger value is better."""
        return self.direction == "higher"


def _fail(kpi_id: object, field_name: str, message: str, source: str) -> CatalogueError:
    return CatalogueError(f"{source}: KPI {kpi_id!r}, field {field_name!r}: {message}")


def _check_choice(entry: Mapping, name: str, choices: tuple, source: str) -> None:
    if entry[name] not in choices:
        raise _fail(entry["id"], name, f"{entry[name]!r} is not one of {list(choices)}", source)


def _check_number(entry: Mapping, name: str, source: str) -> float:
    value = entry[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(entry["id"], name, f"expected a number, got {value!r}", source)
    return float(value)


def _check_thresholds(entry: Mapping, source: str) -> None:
    target, amber, red = (_check_number(entry, n, source) for n in ("target", "amber", "red"))
    ordered = red <= amber <= target if entry["direction"] == "higher" else red >= amber >= target
    if not ordered:
        rule = "red <= amber <= target" if entry["direction"] == "higher" else "red >= amber >= target"
        raise _fail(
            entry["id"], "amber/red", f"thresholds must satisfy {rule} when {entry['direction']} is better; got target={target}, amber={amber}, red={red}", source
        )


def check_where(where: object, *, kpi_id: str = "?", field_name: str = "params.where", source: str = "catalogue") -> None:
    """Raise ``CatalogueError`` unless ``where`` is a valid row filter.

    A filter maps a column to a value (equality), a list (membership) or a one-key
    mapping ``{operator: value}`` with an operator of ``WHERE_OPERATORS``. Comparisons
    are SQL comparisons, so a missing value never matches ``==`` or ``!=``; ``is_not``
    also keeps missing values (``{is_refund: {is_not: true}}``: false or unknown).
    """
    if where is None:
        return
    if not isinstance(where, Mapping):
        raise _fail(kpi_id, field_name, f"expected a mapping of column to condition, got {where!r}", source)
    for column, condition in where.items():
        if isinstance(condition, Mapping):
            if len(condition) != 1 or next(iter(condition)) not in WHERE_OPERATORS:
                raise _fail(kpi_id, field_name, f"condition on {column!r} must be one operator of {list(WHERE_OPERATORS)}, got {dict(condition)!r}", source)


def _check_params(entry: Mapping, function: Callable, source: str) -> dict:
    params = entry.get("params") or {}
    if not isinstance(params, Mapping):
        raise _fail(entry["id"], "params", f"expected a mapping, got {params!r}", source)
    signature = inspect.signature(function).parameters
    accepted = {n: p for n, p in signature.items() if n not in _RESERVED_PARAMETERS and p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise _fail(entry["id"], f"params.{unknown[0]}", f"unknown parameter of computation {entry['computation']!r}; it accepts {sorted(accepted)}", source)
    missing = [n for n, p in accepted.items() if p.default is inspect.Parameter.empty and n not in params]
    if missing:
        raise _fail(entry["id"], f"params.{missing[0]}", f"required by computation {entry['computation']!r} but not given", source)
    for name in ("where", "numerator"):
        check_where(params.get(name), kpi_id=entry["id"], field_name=f"params.{name}", source=source)
    return dict(params)


def _check_dimensions(entry: Mapping, supported: tuple[str, ...], source: str) -> tuple[str, ...]:
    dims = entry.get("dimensions") or []
    if not isinstance(dims, list):
        raise _fail(entry["id"], "dimensions", f"expected a list, got {dims!r}", source)
    for dim in dims:
        if dim not in DIMENSIONS:
            raise _fail(entry["id"], "dimensions", f"{dim!r} is not one of {list(DIMENSIONS)}", source)
        if dim not in supported:
            raise _fail(entry["id"], "dimensions", f"computation {entry['computation']!r} cannot break down by {dim!r}; it supports {list(supported)}", source)
    breakdown = entry.get("breakdown")
    if breakdown is not None and breakdown not in dims:
        raise _fail(entry["id"], "breakdown", f"{breakdown!r} must also be listed in dimensions {dims}", source)
    return tuple(dims)


def validate_entry(entry: object, registry: Mapping[str, Any], *, source: str = "catalogue") -> KpiDefinition:
    """Return the ``KpiDefinition`` of one raw catalogue entry, or raise ``CatalogueError``.

    ``registry`` maps computation names to objects with ``function`` and
    ``dimensions`` attributes (``crm_analytics.kpi.COMPUTATIONS``).
    """
    if not isinstance(entry, Mapping):
        raise CatalogueError(f"{source}: every KPI must be a mapping of fields, got {entry!r}")
    kpi_id = entry.get("id", "<no id>")
    for name in _REQUIRED_FIELDS:
        if entry.get(name) is None:
            raise _fail(kpi_id, name, "missing required field", source)
    unknown = sorted(set(entry) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise _fail(kpi_id, unknown[0], f"unknown field; the fields are {list(_REQUIRED_FIELDS + _OPTIONAL_FIELDS)}", source)
    for name, choices in (("unit", UNITS), ("direction", DIRECTIONS), ("grain", GRAINS)):
        _check_choice(entry, name, choices, source)
    if "category" in entry:
        _check_choice(entry, "category", CATEGORIES, source)
    _check_thresholds(entry, source)
    computation = registry.get(entry["computation"])
    if computation is None:
        raise _fail(kpi_id, "computation", f"unknown computation {entry['computation']!r}; the registered ones are {sorted(registry)}", source)
    params = _check_params(entry, computation.function, source)
    dims = _check_dimensions(entry, computation.dimensions, source)
    return KpiDefinition(
        id=str(kpi_id),
        name=str(entry["name"]),
        definition=str(entry["definition"]).strip(),
        unit=entry["unit"],
        direction=entry["direction"],
        grain=entry["grain"],
        target=float(entry["target"]),
        amber=float(entry["amber"]),
        red=float(entry["red"]),
        computation=entry["computation"],
        category=entry.get("category", "customer"),
        params=params,
        dimensions=dims,
        breakdown=entry.get("breakdown"),
    )


def parse_catalogue(document: object, registry: Mapping[str, Any], *, source: str = "catalogue") -> list[KpiDefinition]:
    """Validate a parsed catalogue document (``{"kpis": [...]}``) and return its definitions in file order."""
    if not isinstance(document, Mapping) or not isinstance(document.get("kpis"), list) or not document["kpis"]:
        raise CatalogueError(f"{source}: expected a top-level key 'kpis' holding a non-empty list of KPI entries")
    definitions = [validate_entry(entry, registry, source=source) for entry in document["kpis"]]
    seen: set[str] = set()
    for definition in definitions:
        if definition.id in seen:
            raise _fail(definition.id, "id", "duplicate KPI id", source)
        seen.add(definition.id)
    return definitions


def read_catalogue(path: str | Path, registry: Mapping[str, Any]) -> list[KpiDefinition]:
    """Read and validate a catalogue YAML file; errors name the file, the entry and the field."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    return parse_catalogue(document, registry, source=path.name)
