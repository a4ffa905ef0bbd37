"""Datasets: one YAML file per body of data, saying where its files are and what market it describes.

A dataset file ``parameters/datasets/<name>.yaml`` declares:

``description``           one line for people.
``data_dir``              folder of its files, relative to the project root (default ``data/raw/<name>``);
                          data shipped with the code (``data/external/...``) is found in the checkout.
``time_zone``             IANA business time zone; every ``*_time`` of the warehouse is a naive local time there.
``currency``              ISO 4217 code of every money amount (``*_amount``).
``country``               ISO 3166 alpha-2 code: default phone region and public holidays.
``locale``                how numbers and money are written for people (default ``en_<country>`` where Babel
                          knows it, else the country's most likely locale, e.g. ``pt_BR``).
``languages``             languages of the free text, e.g. ``[en]`` or ``[zh, en]``.
``calendar_events``       named yearly days that move sales (``{name: MM-DD}``), beside the public holidays.
``targets_file``          KPI targets of this dataset (relative to ``parameters/``, e.g. ``targets/demo.yaml``).
``non_merchandise_codes`` product ids that are not merchandise (postage, fees, adjustments, vouchers).
``exchange_rates``        optional table of rates into ``currency`` (see ``crm_analytics.money``).
``ground_truth_dir``      folder of known true answers (the generated demo has one; real data has none).
``export_date``           the day the export was taken (ISO date): the cleansing build's "today", after which
                          dates are quarantined as future-dated (default: the day of the build).
``anonymous_orders``      what the cleansing build does with an order without a customer (a guest checkout, a
                          till sale): ``keep`` (default; kept with ``customer_id`` missing, counted in revenue,
                          left out of customer-level analyses) or ``quarantine`` (``missing_required``).
``value_maps``            the dataset's own spellings of categorical values mapped onto the accepted ones:
                          ``{table: {column: {their_value: canonical_value}}}``, e.g. ``{opportunity_stage_history:
                          {stage: {Engaging: qualified}}}``; matched case-insensitively after trimming (see
                          ``crm_analytics.cleansing.vocabulary`` and the vocabularies in ``docs/data_model.md``).
``bounds``                plausibility bounds overriding the defaults (``cleansing.validate.Bounds``):
                          ``{order_amount: [min, max], quantity: [min, max], earliest_date: "YYYY-MM-DD"}``;
                          values outside are quarantined as ``out_of_range``.
``pipeline``              the sales pipeline of the company (``PipelineSettings``): ``open_stages``, its ordered open
                          stages (canonical stage names; default the whole ladder ``[lead, qualified, proposal,
                          negotiation]``), and ``expected_amount_rule``, how a missing amount of an open deal is filled
                          (``product_list_price`` or ``{by: column, amounts: {value: amount}, default: amount}``; without
                          it such deals are left out of the open pipeline value and counted).
``access``                this dataset's own viewer groups for ``crm-analytics serve --viewer-header`` (the content of
                          ``parameters/access.yaml``, ``{groups: ...}``); used instead of that file when this dataset
                          is served; checked by ``crm_analytics.access`` (``serving_access`` gives the precedence).
``may_be_empty`` (source)  on a source of ``sources``: a file with no rows is accepted (else it is an error).
``inputs``                named input files that derived sources query with SQL (``crm_analytics.sources``).
``sources``               how each canonical table is read (the source map, see ``crm_analytics.sources``).

``parameters/project.yaml`` names the dataset used when none is given (``dataset: demo``); the
environment variable ``CRM_ANALYTICS_DATASET`` overrides it. Problems raise ``DatasetError`` naming
the file and the key, with close matches where a name was mistyped.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crm_analytics import paths

TODO = "TODO"
KEYS = {
    "description", "data_dir", "time_zone", "currency", "country", "locale", "languages", "calendar_events",
    "targets_file", "non_merchandise_codes", "exchange_rates", "ground_truth_dir", "inputs", "sources",
    "export_date", "anonymous_orders", "value_maps", "bounds", "pipeline", "access",
}
ANONYMOUS_ORDER_POLICIES = ("keep", "quarantine")
PIPELINE_KEYS = ("open_stages", "expected_amount_rule")
OPEN_STAGES = ("lead", "qualified", "proposal", "negotiation")  # the canonical open stages, in their order
PRODUCT_LIST_PRICE = "product_list_price"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_MONTH_DAY = re.compile(r"^(\d{2})-(\d{2})$")


class DatasetError(ValueError):
    """A dataset file is missing or inconsistent. The message names the file and the key."""


@dataclass(frozen=True)
class ExpectedAmountRule:
    """How the missing amount of an open opportunity is filled.

    ``product_list_price``: the list price (``products.list_price_amount``) of the deal's ``product``, matched on
    ``products.product_id``, else ``products.product_name``. Otherwise ``amounts[<the deal's value of by>]``,
    else ``default``; a deal no entry fits keeps its amount missing. Amounts are in the dataset's currency.
    """

    by: str | None = None
    amounts: dict[str, float] = field(default_factory=dict)
    default: float | None = None
    product_list_price: bool = False

    def describe(self) -> str:
        """One line for reports, e.g. ``the list price of the deal's product`` or ``by product (3 amounts), else 5000``."""
        if self.product_list_price:
            return "the list price of the deal's product"
        text = f"by {self.by} ({len(self.amounts)} amounts)" if self.by else ""
        if self.default is not None:
            text += (", else " if text else "a constant ") + f"{self.default:g}"
        return text


@dataclass(frozen=True)
class PipelineSettings:
    """A dataset's sales pipeline: its ordered open stages and how missing open amounts are filled.

    ``open_stages``: the stages an opportunity passes before it is won, in order (canonical names, a subsequence
    of ``OPEN_STAGES``); the terminal stages are always ``won`` and ``lost``. ``declared``: whether the dataset
    file names them (else the whole canonical ladder is assumed). ``expected_amount_rule``: None (missing open
    amounts are left out of the open value and counted) or the declared rule.
    """

    open_stages: tuple[str, ...] = OPEN_STAGES
    declared: bool = False
    expected_amount_rule: ExpectedAmountRule | None = None


@dataclass(frozen=True)
class Dataset:
    """One dataset as declared in its file; paths are absolute."""

    name: str
    file: Path
    data_dir: Path
    time_zone: str
    currency: str
    country: str
    locale: str
    description: str = ""
    languages: tuple[str, ...] = ("en",)
    calendar_events: dict[str, tuple[int, int]] = field(default_factory=dict)
    targets_file: Path | None = None
    non_merchandise_codes: tuple[str, ...] = ()
    exchange_rates: dict[str, Any] | None = None
    ground_truth_dir: Path | None = None
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    export_date: str | None = None  # the day the export was taken: the cleansing build's default "today" (ISO date)
    anonymous_orders: str = "keep"  # orders without a customer: "keep" (customer_id missing) or "quarantine"
    value_maps: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # {table: {column: {theirs: canonical}}}
    bounds: dict[str, Any] = field(default_factory=dict)  # {column: (min, max), "earliest_date": "YYYY-MM-DD"} (check_bounds)

    pipeline: PipelineSettings = field(default_factory=PipelineSettings)  # stage ladder and expected-amount rule

    @property
    def phone_region(self) -> str:
        """The region phone numbers without a country code are read in (the dataset's country)."""
        return self.country

    def describe(self) -> str:
        """One line for reports: name, zone, currency and country."""
        return f"{self.name} ({self.time_zone}, {self.currency}, {self.country})"


def default_dataset_name() -> str:
    """Return the dataset used when none is given: ``CRM_ANALYTICS_DATASET``, else ``parameters/project.yaml``."""
    return paths.default_dataset()


def dataset_file(name: str) -> Path:
    """Return ``parameters/datasets/<name>.yaml`` (whether or not it exists)."""
    return paths.datasets_dir() / f"{name}.yaml"


def list_datasets() -> list[str]:
    """Return the names of the declared datasets, sorted."""
    return sorted(p.stem for p in paths.datasets_dir().glob("*.yaml"))


def load_dataset(name: str | Path | None = None) -> Dataset:
    """Read and check one dataset: a name under ``parameters/datasets/``, a YAML path, or ``None`` for the default.

    Raises ``DatasetError`` for an unknown dataset (listing the known ones), an unknown key, a time
    zone, currency or country that does not exist (with close matches), or a value left ``TODO``.
    """
    if name is None or str(name) == "":
        name = default_dataset_name()
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else dataset_file(str(name))
    if not path.is_file():
        known = list_datasets()
        hint = _close(str(name), known)
        raise DatasetError(f"no dataset {str(name)!r}: {path} does not exist{hint}; known datasets: {known}")
    status = path.stat()
    document = _read_document(path.resolve(), (status.st_mtime_ns, status.st_size))
    return parse_dataset(copy.deepcopy(document), name=path.stem, where=path.resolve())


@functools.lru_cache(maxsize=32)
def _read_document(path: Path, _version: tuple[int, int]) -> dict[str, Any]:
    """Parse one dataset file's YAML (cached per file version; paths are resolved later, per call)."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle) or {}
    except yaml.YAMLError as error:
        raise DatasetError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise DatasetError(f"{path}: expected a mapping of keys, got {type(document).__name__}")
    return document


def parse_dataset(document: dict[str, Any], *, name: str, where: Path) -> Dataset:
    """Check a dataset document (the parsed YAML) and return the ``Dataset``; ``DatasetError`` names ``where`` and the key."""
    if not _NAME.match(name):
        raise DatasetError(f"{where}: dataset name {name!r} must be lower-case letters, digits, '_' or '-'")
    unknown = sorted(set(document) - KEYS)
    if unknown:
        hints = "".join(_close(key, KEYS) for key in unknown)
        raise DatasetError(f"{where}: unknown key(s) {unknown}{hints}; allowed: {sorted(KEYS)}")
    todo = [key for key, value in document.items() if isinstance(value, str) and value.strip().upper() == TODO]
    if todo:
        raise DatasetError(f"{where}: set {todo} before building (each is still {TODO}); see the comments in the file")
    for key in ("time_zone", "currency", "country"):
        if not document.get(key):
            raise DatasetError(f"{where}: `{key}` is required ({_EXAMPLES[key]})")
    country = check_country(document["country"], where=where)
    return Dataset(
        name=name,
        file=where,
        description=str(document.get("description") or ""),
        data_dir=paths.resolve_data(document.get("data_dir"), paths.raw_dir(name)),
        time_zone=check_time_zone(document["time_zone"], where=where),
        currency=check_currency(document["currency"], where=where),
        country=country,
        locale=check_locale(document.get("locale") or default_locale(country), where=where),
        languages=tuple(str(x) for x in (document.get("languages") or ["en"])),
        calendar_events=_calendar_events(document.get("calendar_events") or {}, where=where),
        targets_file=paths.resolve_parameters_file(document["targets_file"]) if document.get("targets_file") else None,
        non_merchandise_codes=tuple(str(x) for x in (document.get("non_merchandise_codes") or [])),
        exchange_rates=document.get("exchange_rates"),
        ground_truth_dir=paths.resolve_data(document["ground_truth_dir"], Path()) if document.get("ground_truth_dir") else None,
        inputs=dict(document.get("inputs") or {}),
        sources=dict(document.get("sources") or {}),
        export_date=str(document["export_date"]) if document.get("export_date") else None,
        anonymous_orders=_anonymous_orders(document.get("anonymous_orders"), where=where),
        value_maps=check_value_maps(document.get("value_maps"), where=where),
        bounds=check_bounds(document.get("bounds"), where=where),
        pipeline=check_pipeline(document.get("pipeline"), where=where),
    )


def value_map_key(value: Any) -> str:
    """How a value is matched against a value map's keys: NFKC text, inner spaces collapsed, trimmed, lower case."""
    import unicodedata

    return " ".join(unicodedata.normalize("NFKC", str(value)).split()).lower()


def check_value_maps(value_maps: Any, *, where: Path | str = "dataset") -> dict[str, dict[str, dict[str, str]]]:
    """Check ``value_maps`` (``{table: {column: {their_value: canonical_value}}}``); return it with text keys and values.

    Raises ``DatasetError`` naming the file and the key for an unknown table or column (with close
    matches), a column that holds no codes, a canonical value that is not accepted by the column
    (listing the accepted ones; ``TODO`` is asked to be replaced by one of them), a key YAML read as a
    boolean or number, and two keys that match the same values (``Won`` and ``won``) with different targets.
    """
    from crm_analytics import schema

    if value_maps is None:
        return {}
    if not isinstance(value_maps, dict):
        raise DatasetError(f"{where}: value_maps must map a table to {{column: {{their_value: canonical_value}}}}, got {value_maps!r}")
    checked: dict[str, dict[str, dict[str, str]]] = {}
    for table_name, columns in value_maps.items():
        if str(table_name) not in schema.TABLES:
            raise DatasetError(f"{where}: value_maps: unknown table {table_name!r}{_close(str(table_name), schema.TABLES)}; "
                               f"the canonical tables are {sorted(schema.TABLES)}")
        table = schema.TABLES[str(table_name)]
        if not isinstance(columns, dict):
            raise DatasetError(f"{where}: value_maps.{table_name} must map a column to {{their_value: canonical_value}}, got {columns!r}")
        checked[table.name] = {}
        for column_name, mapping in columns.items():
            key = f"value_maps.{table.name}.{column_name}"
            if str(column_name) not in table.categorical_columns:
                elsewhere = [t.name for t in schema.TABLES.values() if str(column_name) in t.categorical_columns]
                also = f"; {column_name!r} is a column of {elsewhere}" if elsewhere else ""
                raise DatasetError(f"{where}: {key}: {column_name!r} is not a categorical column of table {table.name!r}"
                                   f"{_close(str(column_name), table.categorical_columns)}; value maps apply to {table.categorical_columns}{also}")
            column = table.column(str(column_name))
            checked[table.name][column.name] = _check_value_map(mapping, column.values, key=key, where=where)
    return checked


def _check_value_map(mapping: Any, accepted: tuple[str, ...] | None, *, key: str, where: Path | str) -> dict[str, str]:
    """One column's ``{their_value: canonical_value}``, checked against the column's accepted values (``None``: open)."""
    if not isinstance(mapping, dict) or not mapping:
        raise DatasetError(f"{where}: {key} must map the dataset's values to canonical ones ({{their_value: canonical_value}}), got {mapping!r}")
    choices = f"one of {list(accepted)}" if accepted else "a code"
    out: dict[str, str] = {}
    targets: dict[str, tuple[str, str]] = {}
    for theirs, canonical in mapping.items():
        if isinstance(theirs, (bool, int, float)) or theirs is None:
            raise DatasetError(f"{where}: {key}: the key {theirs!r} was read by YAML as {type(theirs).__name__}; quote it as the "
                               f"export writes it (e.g. \"yes\": won)")
        target = "" if canonical is None else str(canonical).strip()
        if target.upper() == TODO or not target:
            raise DatasetError(f"{where}: {key}.{theirs}: set the canonical value ({choices}); it is still {canonical!r}")
        if accepted is not None and target not in accepted:
            raise DatasetError(f"{where}: {key}.{theirs}: {target!r} is not an accepted value{_close(target, accepted)}; "
                               f"use {choices}")
        match = value_map_key(theirs)
        if match in targets and targets[match][1] != target:
            raise DatasetError(f"{where}: {key}: {targets[match][0]!r} and {theirs!r} match the same values (case and spaces "
                               f"are ignored) but map to {targets[match][1]!r} and {target!r}")
        targets[match] = (str(theirs), target)
        out[str(theirs)] = target
    return out


def check_bounds(bounds: Any, *, where: Path | str = "dataset") -> dict[str, Any]:
    """Check ``bounds`` (``{column: [min, max], earliest_date: "YYYY-MM-DD"}``); return ``{column: (min, max)}`` and
    ``earliest_date`` as an ISO date text.

    A column must be a numeric column of some canonical table; ``DatasetError`` names the file, the key and close
    matches for a mistyped column, a range that is not two numbers with min <= max, or a date that is not a date.
    """
    from crm_analytics import schema

    if not bounds:
        return {}
    if not isinstance(bounds, dict):
        raise DatasetError(f"{where}: bounds must be a mapping such as {{order_amount: [-1e9, 1e9], earliest_date: 1990-01-01}}")
    numeric = {c.name for table in schema.TABLES.values() for c in table.columns if c.dtype in ("float64", "int64")}
    out: dict[str, Any] = {}
    for key, value in bounds.items():
        key = str(key)
        if key == "earliest_date":
            try:
                out[key] = _iso_date(value)
            except ValueError:
                raise DatasetError(f"{where}: bounds.earliest_date must be a date (YYYY-MM-DD), got {value!r}") from None
            continue
        if key not in numeric:
            raise DatasetError(f"{where}: bounds.{key} is not a numeric column of any table{_close(key, numeric | {'earliest_date'})}")
        try:
            low, high = (float(v) for v in value)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: bounds.{key} must be [min, max] (two numbers), got {value!r}") from None
        if not low <= high:
            raise DatasetError(f"{where}: bounds.{key} has min {low} above max {high}")
        out[key] = (low, high)
    return out


def check_pipeline(value: Any, *, where: Path | str = "dataset") -> PipelineSettings:
    """Check ``pipeline`` (``{open_stages: [...], expected_amount_rule: ...}``); return the ``PipelineSettings``.

    ``open_stages`` must be canonical open stages (``OPEN_STAGES``), each once, in their canonical order (a
    proposal follows the qualification whatever a company calls them; other analyses read the stages in that
    order). ``DatasetError`` names the file, the key and the accepted values.
    """
    if value is None:
        return PipelineSettings()
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: pipeline must be a mapping such as {{open_stages: [lead, qualified]}}, got {value!r}")
    unknown = sorted(str(k) for k in set(value) - set(PIPELINE_KEYS))
    if unknown:
        raise DatasetError(f"{where}: pipeline: unknown key(s) {unknown}{''.join(_close(k, PIPELINE_KEYS) for k in unknown)}; "
                           f"allowed: {list(PIPELINE_KEYS)}")
    rule = _expected_amount_rule(value.get("expected_amount_rule"), where=where)
    if value.get("open_stages") is None:
        return PipelineSettings(expected_amount_rule=rule)
    stages = value["open_stages"]
    if not isinstance(stages, list) or not stages:
        raise DatasetError(f"{where}: pipeline.open_stages must be a list of stages in order, e.g. [lead, qualified], got {stages!r}")
    stages = [str(s).strip() for s in stages]
    for stage in stages:
        if stage not in OPEN_STAGES:
            terminal = " (won and lost are the terminal stages, always present: leave them out)" if stage in ("won", "lost") else ""
            raise DatasetError(f"{where}: pipeline.open_stages: {stage!r} is not an open stage{terminal}{_close(stage, OPEN_STAGES)}; "
                               f"use some of {list(OPEN_STAGES)} (map the export's own stage names onto them with value_maps)")
    in_order = [s for s in OPEN_STAGES if s in stages]
    if stages != in_order:
        raise DatasetError(f"{where}: pipeline.open_stages {stages} must name each stage once, in the canonical order: "
                           f"open_stages: [{', '.join(in_order)}]")
    return PipelineSettings(open_stages=tuple(stages), declared=True, expected_amount_rule=rule)


def _expected_amount_rule(value: Any, *, where: Path | str) -> ExpectedAmountRule | None:
    """``pipeline.expected_amount_rule``: absent, ``product_list_price`` or ``{by, amounts, default}``."""
    key = "pipeline.expected_amount_rule"
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip() != PRODUCT_LIST_PRICE:
            raise DatasetError(f"{where}: {key}: {value!r} is not a rule{_close(value.strip(), [PRODUCT_LIST_PRICE])}; use "
                               f"{PRODUCT_LIST_PRICE} or {{by: product, amounts: {{<product>: <amount>}}, default: <amount>}}")
        return ExpectedAmountRule(by="product", product_list_price=True)
    if not isinstance(value, dict) or set(value) - {"by", "amounts", "default"}:
        raise DatasetError(f"{where}: {key} must be {PRODUCT_LIST_PRICE} or a mapping with keys by, amounts, default, got {value!r}")
    amounts = value.get("amounts") or {}
    if amounts and not value.get("by"):
        raise DatasetError(f"{where}: {key}: amounts need `by`, the column of opportunities whose value picks the amount (e.g. by: product)")
    if not isinstance(amounts, dict) or (not amounts and value.get("default") is None):
        raise DatasetError(f"{where}: {key} needs amounts ({{<value>: <amount>}}) or a default amount, got {value!r}")
    checked = {str(k): _amount(v, key=f"{key}.amounts.{k}", where=where) for k, v in amounts.items()}
    default = _amount(value["default"], key=f"{key}.default", where=where) if value.get("default") is not None else None
    return ExpectedAmountRule(by=str(value["by"]) if value.get("by") else None, amounts=checked, default=default)


def _amount(value: Any, *, key: str, where: Path | str) -> float:
    """A non-negative number from the dataset file; ``DatasetError`` naming ``key`` otherwise."""
    if isinstance(value, bool):
        raise DatasetError(f"{where}: {key} must be an amount (a number of at least 0), got {value!r}")
    try:
        amount = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {key} must be an amount (a number of at least 0), got {value!r}") from None
    if not amount >= 0:
        raise DatasetError(f"{where}: {key} must be an amount (a number of at least 0), got {value!r}")
    return amount


def _iso_date(value: Any) -> str:
    """``value`` (a YAML date or ISO text) as ``YYYY-MM-DD``; ``ValueError`` when it is no date."""
    import datetime as dt

    if isinstance(value, dt.date):
        return value.isoformat()[:10]
    return dt.date.fromisoformat(str(value).strip()).isoformat()


def _anonymous_orders(value: Any, *, where: Path) -> str:
    """The ``anonymous_orders`` policy: ``keep`` (also when absent) or ``quarantine``."""
    policy = "keep" if value is None or str(value).strip() == "" else str(value).strip().lower()
    if policy not in ANONYMOUS_ORDER_POLICIES:
        raise DatasetError(f"{where}: anonymous_orders must be one of {list(ANONYMOUS_ORDER_POLICIES)}, got {value!r}"
                           f"{_close(policy, ANONYMOUS_ORDER_POLICIES)}")
    return policy


_EXAMPLES = {
    "time_zone": "an IANA name such as Europe/London, America/Sao_Paulo or Asia/Shanghai",
    "currency": "an ISO 4217 code such as GBP, BRL, USD or CNY",
    "country": "an ISO 3166 alpha-2 code such as GB, BR, US or CN",
}


def _close(word: str, candidates) -> str:
    """`` (did you mean 'X'?)`` for the closest candidates, or an empty string."""
    matches = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""


@functools.cache
def _time_zones() -> frozenset[str]:
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def check_time_zone(value: Any, *, where: Path | str = "dataset") -> str:
    """Return ``value`` if it is an IANA time zone; ``DatasetError`` with close matches otherwise."""
    zone = str(value).strip()
    if zone not in _time_zones():
        matches = difflib.get_close_matches(zone, sorted(_time_zones()), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""
        raise DatasetError(f"{where}: time_zone {zone!r} is not an IANA time zone{hint}; use {_EXAMPLES['time_zone']}")
    return zone


def check_currency(value: Any, *, where: Path | str = "dataset") -> str:
    """Return ``value`` upper-cased if it is an ISO 4217 code (aliases such as RMB are refused with the code to use)."""
    from crm_analytics import money

    code = str(value).strip().upper()
    if code in money.CURRENCY_ALIASES and money.CURRENCY_ALIASES[code] != code:
        raise DatasetError(f"{where}: currency {value!r} is an alias; write the ISO 4217 code {money.CURRENCY_ALIASES[code]!r}")
    if code not in money.iso_currencies():
        raise DatasetError(f"{where}: currency {value!r} is not an ISO 4217 code{_close(code, money.iso_currencies())}; use {_EXAMPLES['currency']}")
    return code


def check_country(value: Any, *, where: Path | str = "dataset") -> str:
    """Return ``value`` upper-cased if it is an ISO 3166 alpha-2 country code."""
    import babel

    code = str(value).strip().upper()
    territories = {t for t in babel.Locale("en").territories if len(t) == 2 and t.isalpha()}
    if code not in territories:
        raise DatasetError(f"{where}: country {value!r} is not an ISO 3166 alpha-2 code{_close(code, territories)}; use {_EXAMPLES['country']}")
    return code


def default_locale(country: str) -> str:
    """The locale reports use when a dataset names none: English for the country, else its most likely language."""
    import babel

    for candidate in (f"en_{country}", f"und_{country}"):
        try:
            return str(babel.Locale.parse(candidate))
        except (ValueError, babel.UnknownLocaleError):
            continue
    return "en"


def check_locale(value: Any, *, where: Path | str = "dataset") -> str:
    """Return ``value`` if Babel knows the locale (e.g. ``en_GB``, ``pt_BR``, ``zh_CN``)."""
    import babel

    text = str(value).strip()
    try:
        babel.Locale.parse(text)
    except (ValueError, babel.UnknownLocaleError):
        raise DatasetError(f"{where}: locale {text!r} is unknown; use a locale such as en_GB, pt_BR or zh_CN") from None
    return text


def _calendar_events(events: Any, *, where: Path) -> dict[str, tuple[int, int]]:
    """Parse ``{name: "MM-DD"}`` into ``{name: (month, day)}``."""
    if not isinstance(events, dict):
        raise DatasetError(f"{where}: calendar_events must map a name to a yearly day 'MM-DD', got {events!r}")
    parsed: dict[str, tuple[int, int]] = {}
    for event, day in events.items():
        match = _MONTH_DAY.match(str(day).strip())
        if not match or not (1 <= int(match[1]) <= 12 and 1 <= int(match[2]) <= 31):
            raise DatasetError(f"{where}: calendar_events.{event}: expected a yearly day 'MM-DD' such as '11-11', got {day!r}")
        parsed[str(event)] = (int(match[1]), int(match[2]))
    return parsed
