"""The KPI catalogue: what each indicator means and how it is computed; the targets of a dataset.

The catalogue is a YAML file (``parameters/kpi/catalogue.yaml``) with a list
``kpis``; each entry is checked when it is loaded, so a typo fails at once with
the entry and the field named, never half-way through a report. The
computations themselves are registered functions of ``crm_analytics.kpi``;
this module only validates entries against that registry (passed in, so the
two modules do not import each other in a circle).

Targets belong to the data, not to the catalogue: a dataset's targets file
(``targets_file`` of ``parameters/datasets/<name>.yaml``, e.g.
``parameters/targets/demo.yaml``) maps KPI ids to ``{target, amber, red}``
(``read_targets``, ``with_targets``). A KPI without a target has no status
colour: its value and trend are shown in grey as "no target".

Units: ``count``, ``pct`` (0-100), ``money`` (in the dataset's currency, written
with its locale by ``crm_analytics.money``), ``days``, ``hours``, ``score``.

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

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

UNITS = ("count", "pct", "money", "days", "hours", "score")
DIRECTIONS = ("higher", "lower")
GRAINS = ("day", "week", "month", "quarter")
DIMENSIONS = ("segment", "channel")
NO_TARGET = "no target"  # status of a KPI the dataset's targets file sets no target for
UNTARGETED_STATUSES = ("grey", NO_TARGET)  # statuses of values judged against no target (breakdowns, no target set)
CATEGORIES = ("customer", "marketing", "sales", "service")
WHERE_OPERATORS = ("==", "!=", ">=", "<=", ">", "<", "in", "is_not", "notnull", "isnull")

_REQUIRED_FIELDS = ("id", "name", "definition", "unit", "direction", "grain", "computation")
_TARGET_FIELDS = ("target", "amber", "red")
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
    computation: str
    category: str = "customer"
    params: Mapping[str, Any] = field(default_factory=dict)
    dimensions: tuple[str, ...] = ()
    breakdown: str | None = None
    target: float | None = None
    amber: float | None = None
    red: float | None = None

    @property
    def higher_is_better(self) -> bool:
        """True when a larger value is better."""
        return self.direction == "higher"

    @property
    def has_target(self) -> bool:
        """True when the dataset set a target (and thresholds) for this KPI."""
        return self.target is not None


def _fail(kpi_id: object, field_name: str, message: str, source: str) -> CatalogueError:
    return CatalogueError(f"{source}: KPI {kpi_id!r}, field {field_name!r}: {message}")


def _check_choice(entry: Mapping, name: str, choices: tuple, source: str) -> None:
    if entry[name] not in choices:
        raise _fail(entry["id"], name, f"{entry[name]!r} is not one of {list(choices)}", source)


def _check_number(entry: Mapping, name: str, source: str, *, kpi_id: object) -> float:
    value = entry.get(name)
    if value is None:
        raise _fail(kpi_id, name, "missing required field", source)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(kpi_id, name, f"expected a number, got {value!r}", source)
    return float(value)


def _check_thresholds(entry: Mapping, direction: str, source: str, *, kpi_id: object) -> tuple[float, float, float]:
    """``(target, amber, red)`` of one targets entry, on the right sides of each other for ``direction``."""
    target, amber, red = (_check_number(entry, n, source, kpi_id=kpi_id) for n in _TARGET_FIELDS)
    ordered = red <= amber <= target if direction == "higher" else red >= amber >= target
    if not ordered:
        rule = "red <= amber <= target" if direction == "higher" else "red >= amber >= target"
        raise _fail(kpi_id, "amber/red", f"thresholds must satisfy {rule} when {direction} is better; got target={target}, amber={amber}, red={red}", source)
    return target, amber, red


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
    in_catalogue = [name for name in _TARGET_FIELDS if name in entry]
    if in_catalogue:
        raise _fail(kpi_id, in_catalogue[0], "targets belong to the dataset, not the catalogue: move target, amber and red to the "
                    "dataset's targets file (targets_file in parameters/datasets/<name>.yaml)", source)
    unknown = sorted(set(entry) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise _fail(kpi_id, unknown[0], f"unknown field; the fields are {list(_REQUIRED_FIELDS + _OPTIONAL_FIELDS)}", source)
    for name, choices in (("unit", UNITS), ("direction", DIRECTIONS), ("grain", GRAINS)):
        _check_choice(entry, name, choices, source)
    if "category" in entry:
        _check_choice(entry, "category", CATEGORIES, source)
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


# ------------------------------------------------------------------------------------ targets


def parse_targets(document: object, catalogue: Sequence[KpiDefinition], *, source: str = "targets") -> dict[str, tuple[float, float, float]]:
    """Validate a parsed targets document ``{kpi_id: {target, amber, red}}`` against the catalogue.

    Returns ``{kpi_id: (target, amber, red)}`` in the KPI's unit at its grain. An empty document
    sets no targets. Raises ``CatalogueError`` naming ``source`` for a KPI id the catalogue lacks
    (with close matches), a missing or non-numeric field, or thresholds on the wrong side of the target.
    """
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise CatalogueError(f"{source}: expected a mapping of KPI id to {{target, amber, red}}, got {type(document).__name__}")
    by_id = {k.id: k for k in catalogue}
    targets = {}
    for kpi_id, entry in document.items():
        if kpi_id not in by_id:
            matches = difflib.get_close_matches(str(kpi_id), list(by_id), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""
            raise CatalogueError(f"{source}: KPI {kpi_id!r} is not in the catalogue{hint}; the catalogue's KPIs are {sorted(by_id)}")
        if not isinstance(entry, Mapping):
            raise _fail(kpi_id, "target", f"expected a mapping with {list(_TARGET_FIELDS)}, got {entry!r}", source)
        unknown = sorted(set(entry) - set(_TARGET_FIELDS))
        if unknown:
            raise _fail(kpi_id, unknown[0], f"unknown field; a target has the fields {list(_TARGET_FIELDS)}", source)
        targets[str(kpi_id)] = _check_thresholds(entry, by_id[kpi_id].direction, source, kpi_id=kpi_id)
    return targets


def read_targets(path: str | Path, catalogue: Sequence[KpiDefinition]) -> dict[str, tuple[float, float, float]]:
    """Read and validate a dataset's targets file (``parse_targets``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CatalogueError(f"{path}: the KPI targets file does not exist (targets_file of the dataset)")
    with path.open(encoding="utf-8") as handle:
        try:
            document = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise CatalogueError(f"{path}: not valid YAML: {error}") from None
    return parse_targets(document, catalogue, source=str(path))


def with_targets(catalogue: Sequence[KpiDefinition], targets: Mapping[str, tuple[float, float, float]]) -> list[KpiDefinition]:
    """The catalogue with each KPI's ``target``, ``amber`` and ``red`` set from ``targets`` (others have none)."""
    return [
        replace(k, target=None, amber=None, red=None) if k.id not in targets
        else replace(k, target=targets[k.id][0], amber=targets[k.id][1], red=targets[k.id][2])
        for k in catalogue
    ]
