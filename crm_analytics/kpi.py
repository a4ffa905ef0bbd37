"""KPI tracking: registered computations, values per period, targets, status and alerts.

A KPI is an entry of the catalogue (``parameters/kpi/catalogue.yaml``, validated
by ``crm_analytics.kpi_catalogue``) naming one of the computations registered
here with ``@register``. A computation is a function
``f(tables, scope, **params) -> ibis.Table`` that aggregates the warehouse
tables in the engine and returns one row per period (and per group) with the
columns ``period_start`` (timestamp), ``group`` (string) and ``value``. Adding
a KPI of an existing kind is a YAML entry; a new kind of formula is one
registered function.

The pipeline is::

    values  = compute_kpis(tables, catalogue, grain="month", start=..., end=..., segments=...)
    tracked = track(values, catalogue)         # targets, status, change, control limits
    alerts  = find_alerts(tracked, catalogue)  # threshold breaches and significant adverse changes

Conventions: periods are complete calendar periods inside ``[start, end)``
(weeks start on Monday); rates are percentages (0-100); durations are in the
unit the KPI names; money (unit ``money``) is in the dataset's currency, and is
written with the dataset's currency and locale (``currency=``, ``locale=`` of the
plots and alerts; ``crm_analytics.money``). Targets come from the dataset's
targets file (``load_catalogue(targets_file=...)``); a KPI without one has the
status ``"no target"`` and is drawn in grey. A ``segment`` breakdown needs a frame of
``customer_id`` and ``segment``; a ``channel`` breakdown uses the column named
by the computation's ``channel_col`` parameter.

Some KPIs normally come from other analyses. Here they are computed from the
tables with simple, documented definitions: average CLV is the *realised*
(historical) net revenue per customer up to the period end, not a model
prediction; forecast accuracy is that of the naive forecast (the previous
period's value); churn rate is the share of the previous period's active
customers with no order in the current period.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from crm_analytics import access, frames, money, paths, plots, privacy, results, schema
from crm_analytics.customer_features import customer_segments  # shared with other analyses: a layer module
from crm_analytics.dates import window_end  # shared with other analyses: a layer module
from crm_analytics.kpi_catalogue import GRAINS, NO_TARGET, CatalogueError, KpiDefinition, read_catalogue, read_targets, with_targets

__all__ = [
    "COMPUTATIONS",
    "CatalogueError",
    "access_filter_columns",
    "attribute_sizes",
    "breakdown_attribute",
    "compute_kpis_by_attribute",
    "track_by_attribute",
    "KpiDefinition",
    "Scope",
    "compute_kpis",
    "find_alerts",
    "alerts_markdown",
    "customer_segments",
    "latest_values",
    "load_catalogue",
    "period_calendar",
    "plot_kpi_tiles",
    "plot_kpi_trend",
    "plot_kpi_trends",
    "register",
    "render_dashboard",
    "select_series",
    "shared_intermediates",
    "status_of",
    "required_tables",
    "track",
    "window_end",
    "window_start",
    "activity_window_end",
    "write_alerts",
]

TRUNCATE_UNITS = {"day": "D", "week": "W", "month": "M", "quarter": "Q"}
_PERIOD_FREQ = {"day": "D", "week": "W-SUN", "month": "M", "quarter": "Q"}
_PERIOD_STEP = {"day": {"days": 1}, "week": {"days": 7}, "month": {"months": 1}, "quarter": {"months": 3}}
NOMINAL_DAYS = {"day": 1.0, "week": 7.0, "month": 30.4375, "quarter": 91.3125}
_YEAR_BACK = {"day": pd.Timedelta(days=364), "week": pd.Timedelta(weeks=52), "month": pd.DateOffset(years=1), "quarter": pd.DateOffset(years=1)}
ALL = "all"
STATUSES = ("green", "amber", "red", "grey", NO_TARGET)

# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Computation:
    """A registered KPI formula.

    ``scaling`` says how a target set at one grain carries to another: ``"none"``
    (rates and averages: the same target at every grain), ``"length"`` (sums and
    counts: scaled by the period length) or ``"grain"`` (distinct counts and
    stocks: the target holds only at the KPI's own grain).
    """

    name: str
    function: Callable[..., ir.Table]
    tables: tuple[str, ...]
    dimensions: tuple[str, ...]
    scaling: str


COMPUTATIONS: dict[str, Computation] = {}


def register(name: str, *, tables: Sequence[str], dimensions: Sequence[str] = (), scaling: str = "none"):
    """Register a KPI computation under ``name`` (a decorator).

    ``tables`` are the canonical tables it reads by default (a ``table`` parameter
    may name another one); ``dimensions`` the breakdowns it supports.
    """
    if scaling not in ("none", "length", "grain"):
        raise ValueError(f"scaling must be 'none', 'length' or 'grain', got {scaling!r}")

    def decorate(function: Callable[..., ir.Table]) -> Callable[..., ir.Table]:
        COMPUTATIONS[name] = Computation(name, function, tuple(tables), tuple(dimensions), scaling)
        return function

    return decorate


def load_catalogue(path: str | Path | None = None, *, targets_file: str | Path | None = None) -> list[KpiDefinition]:
    """Read and validate the KPI catalogue (default ``parameters/kpi/catalogue.yaml``), with a dataset's targets.

    ``targets_file`` is the dataset's targets file (``datasets.Dataset.targets_file``); without
    one no KPI has a target (every status is ``"no target"``). Raises ``CatalogueError`` naming
    the file, the entry and the field of the first invalid entry, e.g. an unknown computation,
    unit or parameter, a target for a KPI the catalogue lacks, or thresholds on the wrong side
    of the target.
    """
    catalogue = read_catalogue(path or paths.parameters_dir() / "kpi" / "catalogue.yaml", COMPUTATIONS)
    return with_targets(catalogue, read_targets(targets_file, catalogue) if targets_file else {})


# Computation parameters that name a warehouse table the computation reads.
_TABLE_PARAMETERS = ("table", "spend_table", "orders_table", "touch_table", "history_table", "base_table")


def required_tables(catalogue: Sequence[KpiDefinition]) -> list[str]:
    """Return the canonical tables the catalogue's computations read (sorted)."""
    names = set()
    for kpi in catalogue:
        names.update(COMPUTATIONS[kpi.computation].tables)
        for key in _TABLE_PARAMETERS:
            if key in kpi.params:
                names.add(kpi.params[key])
    return sorted(names)


# Where the activity a KPI window ends with is read, in order of preference: orders, else the pipeline, ...
ACTIVITY_TIMES = (
    ("orders", "order_time"),
    ("opportunities", "created_time"),
    ("web_events", "event_time"),
    ("support_tickets", "opened_time"),
    ("surveys", "survey_time"),
)


def activity_window_end(tables: Mapping[str, frames.TableLike]) -> pd.Timestamp:
    """The default end of the tracked window: ``window_end`` of the first table of ``ACTIVITY_TIMES`` given.

    Orders when the data has them; a B2B export without orders ends with its pipeline (the day after the
    last day of regular lead creation). Raises ``ValueError`` naming the tables looked for when none is given.
    """
    for table, time_col in ACTIVITY_TIMES:
        if table in tables:
            return window_end(tables[table], time_col=time_col)
    raise ValueError(f"activity_window_end: needs one of the tables {[t for t, _ in ACTIVITY_TIMES]}; the tables given are {sorted(tables)}")


def window_start(end, *, history_months: int) -> pd.Timestamp:
    """The first day of the month ``history_months`` months before ``end``: the start of a tracked window.

    Starting on a month's first day keeps the window's first month whole (``end`` 2011-12-10 with 24
    months gives 2009-12-01, not 2009-12-10), so monthly totals such as the sales cube's never label a
    cut month as a whole one. Returns a naive midnight timestamp.
    """
    if history_months < 1:
        raise ValueError(f"history_months must be at least 1, got {history_months}")
    return (pd.Timestamp(end) - pd.DateOffset(months=history_months)).to_period("M").start_time


# --------------------------------------------------------------------------------------------
# Scope, periods and shared building blocks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What one computation call covers.

    ``start``/``end`` bound the rows read (``end`` exclusive); ``by`` is ``None``,
    ``"segment"`` or ``"channel"``; ``segments`` an Ibis table of ``customer_id``
    and ``segment`` (needed when ``by == "segment"``): any customer -> group lookup, the
    customers' segments or one of their attributes such as the province (``compute_kpis_by_attribute``).
    ``shared`` stores the intermediate tables several computations or grains read alike, each computed once
    (``_shared``); ``None``: nothing is stored.
    """

    grain: str
    start: pd.Timestamp
    end: pd.Timestamp
    by: str | None = None
    segments: ir.Table | None = None
    shared: dict | None = field(default=None, compare=False, repr=False)

    @property
    def unit(self) -> str:
        """The Ibis truncation unit of the grain."""
        return TRUNCATE_UNITS[self.grain]

    @property
    def step(self) -> ibis.expr.types.IntervalScalar:
        """One period as an Ibis interval."""
        return ibis.interval(**_PERIOD_STEP[self.grain])


def period_calendar(start, end, grain: str) -> pd.DataFrame:
    """Return the complete periods of ``grain`` inside ``[start, end)``.

    Output columns: ``period_start``, ``period_end`` (exclusive), ``period_days``.
    Weeks start on Monday.
    """
    if grain not in GRAINS:
        raise ValueError(f"grain must be one of {list(GRAINS)}, got {grain!r}")
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    if not start < end:
        raise ValueError(f"start {start} must be before end {end}")
    periods = pd.period_range(start, end, freq=_PERIOD_FREQ[grain])
    calendar = pd.DataFrame({"period_start": periods.start_time.normalize(), "period_end": (periods + 1).start_time.normalize()})
    calendar = calendar[(calendar.period_start >= start) & (calendar.period_end <= end)].reset_index(drop=True)
    calendar["period_days"] = (calendar.period_end - calendar.period_start).dt.days.astype(float)
    return calendar.astype({"period_start": "datetime64[us]", "period_end": "datetime64[us]"})


def _condition(column: ir.Column, condition) -> ir.BooleanColumn:
    if isinstance(condition, Mapping):
        ((op, value),) = condition.items()
        ops = {
            "==": lambda: column == value,
            "!=": lambda: column != value,
            ">=": lambda: column >= value,
            "<=": lambda: column <= value,
            ">": lambda: column > value,
            "<": lambda: column < value,
            "in": lambda: column.isin(list(value)),
            "is_not": lambda: column.isnull() | (column != value),
            "notnull": lambda: column.notnull() if value else column.isnull(),
            "isnull": lambda: column.isnull() if value else column.notnull(),
        }
        return ops[op]()
    if isinstance(condition, (list, tuple)):
        return column.isin(list(condition))
    return column == condition


def _predicates(t: ir.Table, where: Mapping | None) -> list[ir.BooleanColumn]:
    return [_condition(t[column], condition) for column, condition in (where or {}).items()]


def _flag(t: ir.Table, where: Mapping) -> ir.BooleanColumn:
    predicates = _predicates(t, where)
    flag = predicates[0]
    for predicate in predicates[1:]:
        flag = flag & predicate
    return flag


def _table(tables: Mapping[str, ir.Table], name: str, columns: Sequence[str], context: str) -> ir.Table:
    if name not in tables:
        raise KeyError(f"{context}: needs table {name!r}; the tables given are {sorted(tables)}")
    table = frames.as_ibis(tables[name])
    frames.require_columns(table, [c for c in columns if c], context=f"{context}({name})")
    return table


def _with_group(t: ir.Table, scope: Scope, *, customer_col: str, channel_col: str | None) -> ir.Table:
    """Add the string column ``group``: ``"all"``, the customer's segment, or the row's channel."""
    if scope.by is None:
        return t.mutate(group=ibis.literal(ALL))
    if scope.by == "channel":
        if not channel_col:
            raise ValueError("a channel breakdown needs the computation parameter 'channel_col'")
        return t.mutate(group=t[channel_col].cast("string").fill_null("unknown"))
    if scope.segments is None:
        raise ValueError("a segment breakdown needs a segments table (customer_id, segment)")
    seg = scope.segments.select(_seg_customer=scope.segments.customer_id, _seg=scope.segments.segment.cast("string"))
    joined = t.left_join(seg, t[customer_col] == seg._seg_customer)
    return joined.mutate(group=joined._seg.fill_null("unknown")).drop("_seg_customer", "_seg")


def _shared(scope: Scope, table: ir.Table) -> ir.Table:
    """``table`` computed once per store (``scope.shared``): the engine's cached copy of the first equal expression.

    Expressions are equal when they are built alike from the same tables, so an intermediate table that does not
    depend on the grain or the breakdown (e.g. rows collapsed per day) is computed once for all of them. Without a
    store ``table`` is returned as it is.
    """
    if scope.shared is None:
        return table
    key = table.op()
    if key not in scope.shared:
        scope.shared[key] = table.cache()
    return scope.shared[key]


def _release(shared: dict) -> None:
    """Drop the engine's cached copies of a store of ``_shared`` tables, and empty it."""
    for cached in shared.values():
        cached.release()
    shared.clear()


@contextlib.contextmanager
def shared_intermediates() -> Iterator[dict]:
    """A store for ``compute_kpis(shared=...)``: intermediate tables computed once for several calls (grains).

    The engine's cached copies are dropped when the ``with`` block ends::

        with shared_intermediates() as shared:
            values = [compute_kpis(tables, catalogue, grain=g, ..., shared=shared) for g in grains]
    """
    shared: dict = {}
    try:
        yield shared
    finally:
        _release(shared)


def _window_rows(
    tables: Mapping[str, ir.Table],
    scope: Scope,
    *,
    table: str,
    time_col: str,
    where: Mapping | None = None,
    columns: Sequence[str | None] = (),
    lookback: int = 0,
    context: str = "kpi",
) -> ir.Table:
    """Rows of ``table`` in the scope's window (plus ``lookback`` earlier periods) that pass ``where``.

    ``columns`` are further columns the caller needs (``None`` entries are ignored); a missing one raises naming it.
    """
    t = _table(tables, table, [time_col, *(where or {}), *columns], context)
    start = scope.start
    if lookback:
        start = (pd.Period(scope.start, _PERIOD_FREQ[scope.grain]) - lookback).start_time
    return t.filter(t[time_col] >= start, t[time_col] < scope.end, *_predicates(t, where))


def _in_window(tables: Mapping[str, ir.Table], scope: Scope, **selection) -> ir.Table:
    """The rows of ``_window_rows`` (same keywords) with ``period_start``, the start of each row's period."""
    t = _window_rows(tables, scope, **selection)
    return t.mutate(period_start=t[selection["time_col"]].truncate(scope.unit))


def _group_columns(scope: Scope, *, customer_col: str, channel_col: str | None) -> list[str | None]:
    """The column the scope's breakdown reads: ``[customer_col]`` (segment), ``[channel_col]`` (channel) or ``[]``."""
    return {"segment": [customer_col], "channel": [channel_col]}.get(scope.by, [])


def _periodised(
    tables: Mapping[str, ir.Table],
    scope: Scope,
    *,
    table: str,
    time_col: str,
    where: Mapping | None = None,
    customer_col: str = "customer_id",
    channel_col: str | None = None,
    extra: Sequence[str] = (),
    lookback: int = 0,
    context: str = "kpi",
) -> ir.Table:
    """Rows of ``table`` in the scope's window (plus ``lookback`` earlier periods), filtered, with ``period_start`` and ``group``."""
    columns = [*extra, *_group_columns(scope, customer_col=customer_col, channel_col=channel_col), *(where or {})]
    t = _in_window(tables, scope, table=table, time_col=time_col, columns=columns, lookback=lookback, context=context)
    # the segments are joined before ``where`` filters: the joined rows are then one table of the query for every KPI
    # of the table, which the engine joins once, however their filters differ
    t = _with_group(t, scope, customer_col=customer_col, channel_col=channel_col)
    return t.filter(*_predicates(t, where)) if where else t


def _by_period(t: ir.Table, **metrics) -> ir.Table:
    return t.group_by(["period_start", "group"]).aggregate(**metrics)


def _distinct_keys(t: ir.Table, key_col: str) -> ir.Table:
    """The distinct ``period_start``, ``group`` and ``_key`` (the value of ``key_col``, missing included) of periodised rows.

    Built alike from the same rows, e.g. the period's buyers of the active-customer count and of the repeat-purchase
    rate, it is one table of the query: the engine computes it once for every KPI that reads it.
    """
    return t.select("period_start", "group", _key=t[key_col]).distinct()


def _spend_by_period(tables: Mapping[str, ir.Table], scope: Scope, *, spend_table: str, by_channel: bool) -> ir.Table:
    """Campaign spend spread evenly over each campaign's days: ``period_start``, ``group``, ``spend_amount``."""
    campaigns = _table(tables, spend_table, ["start_date", "end_date", "spend_amount", "channel"], "spend")
    days = pd.DataFrame({"day": pd.date_range(scope.start, scope.end - pd.Timedelta(days=1), freq="D").astype("datetime64[us]")})
    calendar = ibis.memtable(days)
    c = campaigns.mutate(_first=campaigns.start_date.cast("date"), _last=campaigns.end_date.cast("date"))
    c = c.mutate(_n_days=c._last.delta(c._first, unit="day") + 1)
    daily = c.join(calendar, [calendar.day.cast("date") >= c._first, calendar.day.cast("date") <= c._last])
    daily = daily.mutate(
        period_start=daily.day.truncate(scope.unit),
        group=daily.channel.cast("string") if by_channel else ibis.literal(ALL),
        _spend=daily.spend_amount / daily._n_days,
    )
    return _by_period(daily, spend_amount=daily._spend.sum())


# --------------------------------------------------------------------------------------------
# Computations (each returns period_start, group, value)
# --------------------------------------------------------------------------------------------


@register("row_count", tables=(), dimensions=("segment", "channel"), scaling="length")
def row_count(tables, scope, *, table: str, time_col: str, where: Mapping | None = None, channel_col: str | None = None, customer_col: str = "customer_id"):
    """Number of rows of ``table`` (after ``where``) per period, e.g. orders or new sign-ups. Unit: count."""
    t = _periodised(tables, scope, table=table, time_col=time_col, where=where, channel_col=channel_col, customer_col=customer_col, context="row_count")
    return _by_period(t, value=t.count().cast("float64"))


@register("distinct_count", tables=(), dimensions=("segment", "channel"), scaling="grain")
def distinct_count(tables, scope, *, table: str, time_col: str, key_col: str = "customer_id", where: Mapping | None = None, channel_col: str | None = None):
    """Distinct values of ``key_col`` per period, e.g. active customers. Unit: count."""
    t = _periodised(tables, scope, table=table, time_col=time_col, where=where, channel_col=channel_col, extra=[key_col], context="distinct_count")
    keys = _distinct_keys(t, key_col)
    return _by_period(keys, value=keys._key.count().cast("float64"))  # COUNT skips a missing key, as a distinct count does


@register("sum_value", tables=(), dimensions=("segment", "channel"), scaling="length")
def sum_value(tables, scope, *, table: str, time_col: str, value_col: str, where: Mapping | None = None, channel_col: str | None = None):
    """Sum of ``value_col`` per period, e.g. net revenue (refunds included as negatives). Unit: that of the column."""
    t = _periodised(tables, scope, table=table, time_col=time_col, where=where, channel_col=channel_col, extra=[value_col], context="sum_value")
    return _by_period(t, value=t[value_col].sum().cast("float64"))


@register("mean_value", tables=(), dimensions=("segment", "channel"))
def mean_value(tables, scope, *, table: str, time_col: str, value_col: str, where: Mapping | None = None, channel_col: str | None = None):
    """Mean of ``value_col`` per period, e.g. average order value. Unit: that of the column."""
    t = _periodised(tables, scope, table=table, time_col=time_col, where=where, channel_col=channel_col, extra=[value_col], context="mean_value")
    return _by_period(t, value=t[value_col].mean().cast("float64"))


@register("row_share", tables=(), dimensions=("segment", "channel"))
def row_share(tables, scope, *, table: str, time_col: str, numerator: Mapping, where: Mapping | None = None, channel_col: str | None = None):
    """Percentage of the rows (after ``where``) that also satisfy ``numerator``, e.g. win rate, escalation rate. Unit: pct."""
    t = _periodised(tables, scope, table=table, time_col=time_col, where=where, channel_col=channel_col, extra=list(numerator), context="row_share")
    t = t.mutate(_hit=_flag(t, numerator).fill_null(False).cast("float64"))
    return _by_period(t, value=t._hit.mean() * 100)


@register("distinct_share", tables=(), dimensions=("segment", "channel"))
def distinct_share(
    tables, scope, *, table: str, time_col: str, key_col: str, numerator: Mapping, where: Mapping | None = None,
    channel_col: str | None = None, customer_col: str = "customer_id",
):
    """Percentage of distinct ``key_col`` values with at least one row satisfying ``numerator``,
    e.g. sessions that reach a purchase (funnel conversion). Unit: pct."""
    group_cols = _group_columns(scope, customer_col=customer_col, channel_col=channel_col)
    t = _window_rows(tables, scope, table=table, time_col=time_col, where=where, columns=[key_col, *numerator, *group_cols], context="distinct_share")
    # Collapse the (large) table to one row per key first, by every column a breakdown may read, so the
    # collapsed table is the same for all breakdowns (the engine computes it once) and the segment join is small.
    sources = [c for c in dict.fromkeys([customer_col, channel_col]) if c and c != key_col and c in t.columns]
    flag = _flag(t, numerator).fill_null(False).cast("int8")
    if scope.shared is None:  # straight to the grain's periods
        hits = t.group_by([t[time_col].truncate(scope.unit).name("period_start"), key_col, *sources]).aggregate(_hit=flag.max())
        hits = _with_group(hits, scope, customer_col=customer_col, channel_col=channel_col)
        per_key = hits.group_by(["period_start", "group", key_col]).aggregate(_hit=hits._hit.max().cast("float64"))
        return _by_period(per_key, value=per_key._hit.mean() * 100)
    daily = _shared(scope, _keys_per_day(t, time_col=time_col, key_col=key_col, sources=sources, flag=flag))
    hits = _with_group(daily.mutate(period_start=daily._day.truncate(scope.unit)), scope, customer_col=customer_col, channel_col=channel_col)
    # a key on a single row of the daily table is one key of one period and group at every grain: only the others
    # (sessions across midnight, or of two customers or channels) are collapsed per period and group
    single = hits.filter(hits._rows == 1).select("period_start", "group", _hit=hits._hit.cast("float64"))
    several = hits.filter(hits._rows > 1)
    several = several.group_by(["period_start", "group", key_col]).aggregate(_hit=several._hit.max().cast("float64"))
    per_key = ibis.union(single, several.select("period_start", "group", "_hit"), distinct=False)
    return _by_period(per_key, value=per_key._hit.mean() * 100)


def _keys_per_day(t: ir.Table, *, time_col: str, key_col: str, sources: Sequence[str], flag: ir.Column) -> ir.Table:
    """``t`` collapsed per day, key and ``sources``: ``_day``, ``key_col``, the ``sources``, ``_hit`` (1 when a row of the
    day satisfied ``flag``, else 0) and ``_rows``, the rows the key has in this table (over all days; 2 for a missing
    key, whose rows are grouped together as one key whatever their number)."""
    daily = t.group_by([t[time_col].truncate("D").name("_day"), key_col, *sources]).aggregate(_hit=flag.max())
    rows = daily.group_by(_k=daily[key_col]).aggregate(_rows=daily.count())
    joined = daily.left_join(rows, daily[key_col] == rows._k)  # a missing key matches no count
    return joined.select(*daily.columns, _rows=joined._rows.fill_null(2))


@register("mean_duration", tables=(), dimensions=("segment", "channel"))
def mean_duration(
    tables, scope, *, table: str, time_col: str, start_col: str, end_col: str, unit: str = "days", where: Mapping | None = None, channel_col: str | None = None
):
    """Mean time from ``start_col`` to ``end_col`` of rows whose ``time_col`` falls in the period
    (rows with either end missing are left out), e.g. first-response or resolution time. Unit: ``unit`` (days or hours)."""
    t = _durations(tables, scope, table=table, time_col=time_col, start_col=start_col, end_col=end_col, unit=unit, where=where,
                   channel_col=channel_col, context="mean_duration")
    return _by_period(t, value=t._duration.mean())


@register("median_duration", tables=(), dimensions=("segment", "channel"))
def median_duration(
    tables, scope, *, table: str, time_col: str, start_col: str, end_col: str, unit: str = "days", where: Mapping | None = None, channel_col: str | None = None
):
    """Median time from ``start_col`` to ``end_col`` of rows whose ``time_col`` falls in the period (rows with
    either end missing are left out): the typical case, which a few very long ones do not pull up as they
    pull up a mean, e.g. lead conversion time. Unit: ``unit`` (days or hours)."""
    t = _durations(tables, scope, table=table, time_col=time_col, start_col=start_col, end_col=end_col, unit=unit, where=where,
                   channel_col=channel_col, context="median_duration")
    return _by_period(t, value=t._duration.median().cast("float64"))


def _durations(tables, scope, *, table, time_col, start_col, end_col, unit, where, channel_col, context) -> ir.Table:
    """Rows of ``table`` in the scope with both ends, and ``_duration`` from ``start_col`` to ``end_col`` in ``unit`` (days or hours)."""
    if unit not in _SECONDS_PER:
        raise ValueError(f"{context}: unit must be one of {list(_SECONDS_PER)}, got {unit!r}")
    t = _periodised(tables, scope, table=table, time_col=time_col, where=where, channel_col=channel_col, extra=[start_col, end_col], context=context)
    t = t.filter(t[start_col].notnull(), t[end_col].notnull())
    return t.mutate(_duration=(t[end_col].epoch_seconds() - t[start_col].epoch_seconds()).cast("float64") / _SECONDS_PER[unit])


_SECONDS_PER = {"days": 86400.0, "hours": 3600.0}


@register("period_retention", tables=("orders",), dimensions=("segment",))
def period_retention(
    tables, scope, *, table: str = "orders", time_col: str = "order_time", customer_col: str = "customer_id", where: Mapping | None = None, churn: bool = False
):
    """Retention rate: percentage of the customers active in the previous period who are active again in this one.

    With ``churn=True`` it is the churn rate, 100 minus retention: the share of the
    previous period's active customers with no order in this period. Rows without a customer
    (anonymous orders) are left out: nobody to keep or lose. Unit: pct.
    """
    t = _periodised(tables, scope, table=table, time_col=time_col, where=where, customer_col=customer_col, extra=[customer_col], lookback=1, context="period_retention")
    active = _distinct_keys(t.filter(t[customer_col].notnull()), customer_col)  # anonymous orders are nobody's to keep
    previous = active.mutate(period_start=active.period_start + scope.step)
    current = active.select(_c=active._key, _p=active.period_start)
    joined = previous.left_join(current, [previous._key == current._c, previous.period_start == current._p])
    # A flag from the join, not a float literal: Spark reads ``1.0`` as a decimal and would round the mean.
    joined = joined.mutate(_kept=joined._c.notnull().cast("float64"))
    result = _by_period(joined, value=joined._kept.mean() * 100)
    return result.mutate(value=100 - result.value) if churn else result


@register("returning_share", tables=("orders",), dimensions=("segment", "channel"))
def returning_share(
    tables, scope, *, table: str = "orders", time_col: str = "order_time", customer_col: str = "customer_id", where: Mapping | None = None, channel_col: str | None = None
):
    """Repeat-purchase rate: percentage of the period's buyers whose first order came before the period. Unit: pct."""
    source = _table(tables, table, [time_col, customer_col, *(where or {})], "returning_share")
    history = source.filter(source[time_col] < scope.end, *_predicates(source, where))
    first = _shared(scope, history.group_by(_c=history[customer_col]).aggregate(_first=history[time_col].min()))
    t = _periodised(tables, scope, table=table, time_col=time_col, where=where, customer_col=customer_col, channel_col=channel_col, extra=[customer_col], context="returning_share")
    buyers = _distinct_keys(t, customer_col)
    joined = buyers.join(first, buyers._key == first._c)
    joined = joined.mutate(_returning=(joined._first < joined.period_start).cast("float64"))
    return _by_period(joined, value=joined._returning.mean() * 100)


@register("cumulative_value_per_customer", tables=("orders",), dimensions=("segment",), scaling="none")
def cumulative_value_per_customer(
    tables, scope, *, table: str = "orders", time_col: str = "order_time", value_col: str = "order_amount", customer_col: str = "customer_id"
):
    """Realised (historical) customer lifetime value at each period end: net revenue of all orders
    up to the period end divided by the customers who had ordered by then. Unit: money."""
    source = _table(tables, table, [time_col, value_col, customer_col], "cumulative_value_per_customer")
    t = source.filter(source[time_col] < scope.end)
    t = t.mutate(period_start=t[time_col].truncate(scope.unit))
    t = _with_group(t, scope, customer_col=customer_col, channel_col=None)
    firsts = t.group_by([t[customer_col], t.group]).aggregate(period_start=t.period_start.min())
    new = _by_period(firsts, _new=firsts.count())
    revenue = _by_period(t, _revenue=t[value_col].sum())
    both = revenue.outer_join(new, [revenue.period_start == new.period_start, revenue.group == new.group])
    both = both.select(
        period_start=ibis.coalesce(both.period_start, both.period_start_right),
        group=ibis.coalesce(both.group, both.group_right),
        _revenue=both._revenue.fill_null(0.0),
        _new=both._new.fill_null(0),
    )
    window = ibis.window(group_by=both.group, order_by=both.period_start, preceding=None, following=0)
    both = both.mutate(_cum_revenue=both._revenue.sum().over(window), _cum_customers=both._new.sum().over(window))
    return both.select("period_start", "group", value=(both._cum_revenue / both._cum_customers.nullif(0)).cast("float64"))


@register("spend_per_row", tables=("campaigns",), dimensions=(), scaling="none")
def spend_per_row(tables, scope, *, table: str, time_col: str, where: Mapping | None = None, spend_table: str = "campaigns"):
    """Campaign spend in the period (spread evenly over campaign days) divided by the rows of
    ``table`` in the period, e.g. CAC (per new customer) or cost per lead (per new opportunity). Unit: money."""
    rows = row_count(tables, scope, table=table, time_col=time_col, where=where)
    spend = _spend_by_period(tables, scope, spend_table=spend_table, by_channel=False)
    joined = spend.join(rows, [spend.period_start == rows.period_start, spend.group == rows.group])
    return joined.select(spend.period_start, spend.group, value=(joined.spend_amount / joined.value.nullif(0)).cast("float64"))


def _touches(tables, scope, *, touch_table: str, window_days: int) -> ir.Table:
    touches = _table(tables, touch_table, ["touchpoint_id", "customer_id", "channel", "touch_time"], "touches")
    start = scope.start - pd.Timedelta(days=window_days)
    return touches.filter(touches.touch_time >= start, touches.touch_time < scope.end)


def _buying_orders(tables, *, orders_table: str, end) -> ir.Table:
    orders = _table(tables, orders_table, ["order_id", "customer_id", "order_time", "order_amount", "is_refund"], "orders")
    return orders.filter(orders.order_time < end, ~orders.is_refund.fill_null(False))


@register("touch_conversion", tables=("touchpoints", "orders"), dimensions=("segment", "channel"))
def touch_conversion(tables, scope, *, window_days: int = 7, touch_table: str = "touchpoints", orders_table: str = "orders"):
    """Campaign conversion rate: percentage of marketing contacts in the period followed by an order
    of the same customer within ``window_days`` days. Unit: pct."""
    touches = _touches(tables, scope, touch_table=touch_table, window_days=0)
    orders = _buying_orders(tables, orders_table=orders_table, end=scope.end + pd.Timedelta(days=window_days))
    orders = orders.select("customer_id", "order_time")
    within = touches.join(
        orders,
        [
            touches.customer_id == orders.customer_id,
            orders.order_time >= touches.touch_time,
            orders.order_time < touches.touch_time + ibis.interval(days=window_days),
        ],
    )
    converted = within.select(_tp=within.touchpoint_id).distinct()
    t = touches.left_join(converted, touches.touchpoint_id == converted._tp)
    t = _shared(scope, t.select("touch_time", "customer_id", "channel", _hit=t._tp.notnull().cast("float64")))
    t = t.mutate(period_start=t.touch_time.truncate(scope.unit))
    t = _with_group(t, scope, customer_col="customer_id", channel_col="channel")
    return _by_period(t, value=t._hit.mean() * 100)


def _last_touch_orders(tables, scope, *, window_days: int, touch_table: str, orders_table: str) -> ir.Table:
    """The period's orders (refunds excluded) that follow a marketing contact of their customer within
    ``window_days`` days, each once, credited to the last such contact (last touch): ``order_id``,
    ``order_amount``, ``period_start`` and ``group`` (that contact's channel with a channel breakdown)."""
    touches = _touches(tables, scope, touch_table=touch_table, window_days=window_days)
    touches = touches.select(_customer=touches.customer_id, _touch_time=touches.touch_time, _touch_id=touches.touchpoint_id, _channel=touches.channel)
    orders = _buying_orders(tables, orders_table=orders_table, end=scope.end)
    orders = orders.filter(orders.order_time >= scope.start).select("order_id", "customer_id", "order_time", "order_amount")
    pairs = orders.join(
        touches,
        [
            orders.customer_id == touches._customer,
            touches._touch_time <= orders.order_time,
            touches._touch_time > orders.order_time - ibis.interval(days=window_days),
        ],
    )
    rank = ibis.row_number().over(group_by=pairs.order_id, order_by=[ibis.desc(pairs._touch_time), pairs._touch_id])
    last = pairs.mutate(_rank=rank).filter(lambda p: p._rank == 0)
    last = _shared(scope, last.select("order_id", "order_time", "order_amount", "_channel"))
    return last.mutate(period_start=last.order_time.truncate(scope.unit), group=last._channel.cast("string") if scope.by == "channel" else ibis.literal(ALL))


@register("spend_per_conversion", tables=("touchpoints", "orders", "campaigns"), dimensions=("channel",))
def spend_per_conversion(tables, scope, *, window_days: int = 7, touch_table: str = "touchpoints", orders_table: str = "orders", spend_table: str = "campaigns"):
    """Channel efficiency: campaign spend in the period (spread evenly over campaign days) per conversion,
    a conversion being an order credited to the customer's last marketing contact in the ``window_days``
    days before it (last touch, as ``marketing_roi``); with a channel breakdown, spend and conversions of
    each channel. The inverse, conversions per unit of spend, is ``1 / value``. Periods with spend and no
    conversion have no value. Unit: money."""
    last = _last_touch_orders(tables, scope, window_days=window_days, touch_table=touch_table, orders_table=orders_table)
    conversions = _by_period(last, _conversions=last.count())
    spend = _spend_by_period(tables, scope, spend_table=spend_table, by_channel=scope.by == "channel")
    joined = spend.join(conversions, [spend.period_start == conversions.period_start, spend.group == conversions.group])
    return joined.select(spend.period_start, spend.group, value=(joined.spend_amount / joined._conversions.nullif(0)).cast("float64"))


@register("marketing_roi", tables=("touchpoints", "orders", "campaigns"), dimensions=("channel",))
def marketing_roi(tables, scope, *, window_days: int = 7, touch_table: str = "touchpoints", orders_table: str = "orders", spend_table: str = "campaigns"):
    """Marketing ROI: (attributed revenue - spend) / spend, in percent. An order is attributed to the
    customer's last marketing contact in the ``window_days`` days before it (last touch); with a
    channel breakdown, to that contact's channel. Unit: pct."""
    last = _last_touch_orders(tables, scope, window_days=window_days, touch_table=touch_table, orders_table=orders_table)
    revenue = _by_period(last, _revenue=last.order_amount.sum())
    spend = _spend_by_period(tables, scope, spend_table=spend_table, by_channel=scope.by == "channel")
    joined = spend.left_join(revenue, [spend.period_start == revenue.period_start, spend.group == revenue.group])
    roi = (joined._revenue.fill_null(0.0) - joined.spend_amount) / joined.spend_amount.nullif(0) * 100
    return joined.select(spend.period_start, spend.group, value=roi.cast("float64"))


@register("nps", tables=("surveys",), dimensions=("segment",))
def nps(tables, scope, *, table: str = "surveys", time_col: str = "survey_time", score_col: str = "nps_score", customer_col: str = "customer_id"):
    """Net Promoter Score: percentage of promoters (9-10) minus percentage of detractors (0-6)
    among responses with a score. Unit: score (-100 to 100)."""
    t = _periodised(tables, scope, table=table, time_col=time_col, where={score_col: {"notnull": True}}, customer_col=customer_col, context="nps")
    t = t.mutate(_net=(t[score_col] >= 9).cast("float64") - (t[score_col] <= 6).cast("float64"))
    return _by_period(t, value=t._net.mean() * 100)


@register("open_value_at_period_end", tables=("opportunities",), dimensions=("segment",), scaling="grain")
def open_value_at_period_end(
    tables, scope, *, table: str = "opportunities", created_col: str = "created_time", closed_col: str = "closed_time", value_col: str = "expected_amount", customer_col: str = "customer_id"
):
    """Open pipeline value at each period end: expected value of opportunities created before the
    period end and not closed by then. Unit: money."""
    opps = _table(tables, table, [created_col, closed_col, value_col, customer_col], "open_value_at_period_end")
    calendar = ibis.memtable(period_calendar(scope.start, scope.end, scope.grain)[["period_start", "period_end"]])
    snap = opps.join(calendar, [opps[created_col] < calendar.period_end, opps[closed_col].isnull() | (opps[closed_col] >= calendar.period_end)])
    snap = _with_group(snap, scope, customer_col=customer_col, channel_col=None)
    return _by_period(snap, value=snap[value_col].sum().cast("float64"))


@register("naive_forecast_accuracy", tables=("orders",), dimensions=())
def naive_forecast_accuracy(tables, scope, *, table: str = "orders", time_col: str = "order_time", value_col: str = "order_amount", where: Mapping | None = None):
    """Forecast accuracy of the naive forecast (next period = this period): 100 x (1 - |actual - forecast| / |actual|),
    floored at 0. A stand-in until the forecast analysis persists its backtest. Unit: pct."""
    t = _periodised(tables, scope, table=table, time_col=time_col, where=where, extra=[value_col], lookback=1, context="naive_forecast_accuracy")
    actual = _by_period(t, _actual=t[value_col].sum())
    previous = actual._actual.lag().over(group_by=actual.group, order_by=actual.period_start)
    error = (actual._actual - previous).abs() / actual._actual.abs().nullif(0)
    accuracy = ibis.ifelse(error > 1, 0.0, 1 - error) * 100  # a null error (no previous period) stays null
    return actual.select("period_start", "group", value=accuracy.cast("float64"))


@register("repeat_within", tables=("support_tickets",), dimensions=("segment", "channel"))
def repeat_within(
    tables,
    scope,
    *,
    table: str = "support_tickets",
    time_col: str = "opened_time",
    customer_col: str = "customer_id",
    issue_col: str = "category",
    window_days: int = 30,
    channel_col: str | None = None,
):
    """Repeat-issue rate: percentage of the period's rows (tickets) whose customer opened another one
    of the same ``issue_col`` in the ``window_days`` days before. Unit: pct."""
    source = _table(tables, table, [time_col, customer_col, issue_col, channel_col if scope.by == "channel" else None], "repeat_within")
    source = source.filter(source[time_col] < scope.end)
    previous = source[time_col].lag().over(group_by=[source[customer_col], source[issue_col]], order_by=source[time_col])
    flagged = source.mutate(_previous=previous)
    flagged = flagged.filter(flagged[time_col] >= scope.start)
    gap = flagged[time_col].epoch_seconds() - flagged._previous.epoch_seconds()
    flagged = flagged.mutate(_hit=(gap <= window_days * 86400).fill_null(False).cast("float64"), period_start=flagged[time_col].truncate(scope.unit))
    flagged = _with_group(flagged, scope, customer_col=customer_col, channel_col=channel_col)
    return _by_period(flagged, value=flagged._hit.mean() * 100)


@register("count_ratio", tables=(), dimensions=("segment", "channel"))
def count_ratio(
    tables, scope, *, table: str, numerator_time_col: str, denominator_time_col: str, where: Mapping | None = None,
    channel_col: str | None = None, customer_col: str = "customer_id",
):
    """100 x the rows of ``table`` whose ``numerator_time_col`` falls in the period / the rows whose
    ``denominator_time_col`` falls in it (both after ``where``), e.g. tickets resolved per ticket opened
    (resolution rate). A flow ratio: above 100 when a backlog is worked off. Unit: pct."""
    common = {"table": table, "where": where, "channel_col": channel_col, "customer_col": customer_col}
    numerator = row_count(tables, scope, time_col=numerator_time_col, **common)
    numerator = numerator.select(_period=numerator.period_start, _group=numerator.group, _n=numerator.value)
    denominator = row_count(tables, scope, time_col=denominator_time_col, **common)
    joined = denominator.left_join(numerator, [denominator.period_start == numerator._period, denominator.group == numerator._group])
    return joined.select(denominator.period_start, denominator.group, value=(joined._n.fill_null(0.0) / joined.value * 100).cast("float64"))


@register("stage_reached_share", tables=("opportunities", "opportunity_stage_history"), dimensions=("segment", "channel"))
def stage_reached_share(
    tables,
    scope,
    *,
    stages: Sequence[str],
    table: str = "opportunities",
    history_table: str = "opportunity_stage_history",
    time_col: str = "created_time",
    key_col: str = "opportunity_id",
    stage_col: str = "stage",
    status_col: str = "status",
    open_status: str = "open",
    channel_col: str | None = None,
    customer_col: str = "customer_id",
):
    """Percentage of the rows of ``table`` created in the period (``time_col``) that entered one of ``stages``
    (``history_table``), among the decided ones: those that entered one, or are closed (``status_col`` not
    ``open_status``) without. Rows still open that entered none yet are left out, so recent periods are not
    pulled down by leads nobody has judged. E.g. lead quality: leads qualified. Unit: pct."""
    t = _periodised(tables, scope, table=table, time_col=time_col, customer_col=customer_col, channel_col=channel_col,
                    extra=[key_col, status_col], context="stage_reached_share")
    history = _table(tables, history_table, [key_col, stage_col], "stage_reached_share")
    reached = history.filter(history[stage_col].isin(list(stages))).select(_reached=history[key_col]).distinct()
    joined = t.left_join(reached, t[key_col] == reached._reached)
    joined = joined.mutate(_hit=joined._reached.notnull(), _open=joined[status_col].fill_null(open_status) == open_status)
    decided = joined.filter(joined._hit | ~joined._open)
    return _by_period(decided, value=decided._hit.cast("float64").mean() * 100)


@register("base_share", tables=("customers",), dimensions=("segment",))
def base_share(
    tables, scope, *, table: str, time_col: str, where: Mapping | None = None, base_table: str = "customers",
    base_time_col: str = "signup_time", customer_col: str = "customer_id",
):
    """Percentage of the customers on file at the period end (rows of ``base_table`` created before it) with
    at least one row of ``table`` (after ``where``) in the period, e.g. customers with a web session
    (engagement). Rows of customers not on file by then are not counted. Unit: pct."""
    base = _table(tables, base_table, [customer_col, base_time_col], "base_share")
    calendar = ibis.memtable(period_calendar(scope.start, scope.end, scope.grain)[["period_start", "period_end"]])
    calendar = calendar.select(period_start=calendar.period_start.cast("timestamp"), period_end=calendar.period_end.cast("timestamp"))
    base = _with_group(base.select(customer_col, _on_file=base[base_time_col]), scope, customer_col=customer_col, channel_col=None)
    # Customers on file per period: counted from their creation days (every period ends at midnight, so
    # created before the period end <=> created on a day before it), never customers x periods.
    by_day = base.group_by("group", _day=base._on_file.truncate("D")).aggregate(_n=base.count())
    on_file = by_day.join(calendar, by_day._day < calendar.period_end)
    on_file = _by_period(on_file, _on_file=on_file._n.sum())
    active = _in_window(tables, scope, table=table, time_col=time_col, where=where, columns=[customer_col], context="base_share")
    active = active.select(_customer=active[customer_col], _period=active.period_start.cast("timestamp")).distinct()
    active = active.join(calendar, active._period == calendar.period_start)
    hits = active.join(base, [active._customer == base[customer_col], base._on_file < active.period_end])
    hits = _by_period(hits, _hits=hits.count())
    joined = on_file.left_join(hits, [on_file.period_start == hits.period_start, on_file.group == hits.group])
    # hits / customers on file, as the mean of a 0/1 flag per customer on file
    share = joined._hits.fill_null(0).cast("float64") / joined._on_file.cast("float64")
    return joined.select(on_file.period_start, on_file.group, value=share * 100)


# --------------------------------------------------------------------------------------------
# Computing the catalogue
# --------------------------------------------------------------------------------------------

_VALUE_COLUMNS = ["grain", "period_start", "period_end", "kpi_id", "segment", "channel", "value"]


def _kpi_expression(kpi: KpiDefinition, tables, scope: Scope) -> ir.Table:
    result = COMPUTATIONS[kpi.computation].function(tables, scope, **kpi.params)
    dim_value = result.group.cast("string")
    return result.select(
        period_start=result.period_start.cast("timestamp"),
        kpi_id=ibis.literal(kpi.id),
        segment=dim_value if scope.by == "segment" else ibis.literal(ALL),
        channel=dim_value if scope.by == "channel" else ibis.literal(ALL),
        value=result.value.cast("float64"),
    )


def compute_kpis(
    tables: Mapping[str, frames.TableLike],
    catalogue: Sequence[KpiDefinition],
    *,
    grain: str,
    start,
    end,
    segments: frames.TableLike | None = None,
    dimensions: Sequence[str] = ("segment", "channel"),
    totals: bool = True,
    shared: dict | None = None,
) -> pd.DataFrame:
    """Compute every catalogue KPI per complete period of ``grain`` in ``[start, end)``.

    Parameters
    ----------
    tables : mapping of canonical table name to Ibis table or pandas DataFrame
        The warehouse tables the catalogue's computations read (``required_tables``).
    catalogue : list of KpiDefinition
        From ``load_catalogue``.
    grain : {"day", "week", "month", "quarter"}
    start, end : timestamp-like
        The window; only periods that lie wholly inside it are returned.
    segments : table with ``customer_id`` and ``segment``, optional
        Needed for ``segment`` breakdowns; without it they are skipped.
    dimensions : sequence of {"segment", "channel"}
        The breakdowns to compute besides the totals (each KPI's own ``dimensions`` apply).
    totals : bool
        Also the totals (``segment`` and ``channel`` ``"all"``); ``False``: the breakdowns only.
    shared : dict, optional
        A store of ``shared_intermediates``: the intermediate tables several grains read alike (sessions collapsed
        per day, each customer's first order, the last-touch orders...) are computed once for every call given the
        same store and kept by the engine until the store closes. Without one each call computes its own (the
        engine computes a table the KPIs of one call read alike once).

    Returns
    -------
    pandas.DataFrame
        One row per ``kpi_id``, period and group: ``grain``, ``period_start``, ``period_end``
        (exclusive), ``kpi_id``, ``segment`` and ``channel`` (``"all"`` for totals), ``value``
        (in the KPI's unit). Periods with no data for a KPI are absent.
    """
    calendar = period_calendar(start, end, grain)
    if segments is not None:
        frames.require_columns(segments, ["customer_id", "segment"], context="compute_kpis(segments)")
        segments = frames.as_ibis(segments)
    wanted = [d for d in dimensions if d != "segment" or segments is not None]
    expressions = []
    for kpi in catalogue:
        breakdowns = ([None] if totals and not kpi.breakdown else []) + [d for d in kpi.dimensions if d in wanted]
        for by in breakdowns:
            scope = Scope(grain, pd.Timestamp(start), pd.Timestamp(end), by=by, segments=segments, shared=shared)
            expressions.append(_kpi_expression(kpi, tables, scope))
    if not expressions:
        return pd.DataFrame(columns=_VALUE_COLUMNS)
    result = ibis.union(*expressions, distinct=False).to_pandas()
    result = result[result["value"].notna() & np.isfinite(result["value"].astype(float))]
    result["channel"] = _masked_personal_groups(result, catalogue)
    result["period_start"] = result["period_start"].astype("datetime64[us]")
    result = result.merge(calendar[["period_start", "period_end"]], on="period_start", how="inner")
    result.insert(0, "grain", grain)
    order = {kpi.id: i for i, kpi in enumerate(catalogue)}
    result = result.sort_values(["kpi_id", "segment", "channel", "period_start"], key=lambda s: s.map(order) if s.name == "kpi_id" else s)
    return result[_VALUE_COLUMNS].reset_index(drop=True)


def _masked_personal_groups(values: pd.DataFrame, catalogue: Sequence[KpiDefinition]) -> pd.Series:
    """The ``channel`` column with names masked where a KPI breaks down by a personal-data column.

    A breakdown by the sales representative (``owner`` of ``opportunities``, listed in
    ``schema.PERSONAL_DATA_COLUMNS``) is shown per person, but as ``privacy.mask_name`` writes names
    (``Chen Jing`` -> ``C*** J***``); two names masked alike get `` (2)``, `` (3)``... in sorted order,
    so they stay apart.
    """
    personal = {
        k.id for k in catalogue
        if k.params.get("channel_col") in schema.PERSONAL_DATA_COLUMNS.get(k.params.get("table", ""), ())
    }
    rows = values["kpi_id"].isin(personal) & ~values["channel"].isin([ALL, "unknown"])
    if not rows.any():
        return values["channel"]
    names = pd.Series(sorted(values.loc[rows, "channel"].unique()), dtype="string")
    masked = privacy.mask_name(names)
    repeat = masked.groupby(masked).cumcount()
    labels = masked.where(repeat == 0, masked + " (" + (repeat + 1).astype(str) + ")")
    return values["channel"].mask(rows, values["channel"].map(dict(zip(names, labels))))


# --------------------------------------------------------------------------------------------
# Breakdown by a customer attribute: KPI values per region, for viewers who see some regions only
# --------------------------------------------------------------------------------------------

NO_ATTRIBUTE_BREAKDOWN = "none"  # the run parameter region_breakdown's "no breakdown"


def access_filter_columns(path: str | Path | None = None, *, dataset_file: str | Path | None = None) -> list[str]:
    """The columns the viewer groups filter rows on by listed values (``{province: [...]}``), in file order;
    filters on the viewer's own identity (``$viewer``) are not attributes and are left out.

    The groups are those a server of the dataset would use (``access.serving_access``): ``path``, else
    ``$CRM_ANALYTICS_ACCESS_FILE``, else the ``access`` block of ``dataset_file`` (a dataset's file), else
    ``parameters/access.yaml``; without ``dataset_file``, ``path`` or the source page kernels read (``access.access_source``). No file gives ``[]``; a malformed one raises ``access.AccessError`` naming it.
    """
    if dataset_file is None:
        source = access.AccessSource(Path(path)) if path else access.access_source()
    else:
        source = access.serving_access(path, dataset_file=dataset_file).source
    if not source.file.is_file():
        return []
    policy = source.load()
    return list(dict.fromkeys(g.rows.column for g in policy.groups if g.rows.column and not g.rows.is_viewer))


def breakdown_attribute(setting: str, *, customer_columns: Sequence[str], filter_columns: Sequence[str] = ()) -> tuple[str | None, dict[str, str]]:
    """The customer attribute a KPI run breaks its KPIs down by, from its ``region_breakdown`` parameter.

    Parameters
    ----------
    setting : str
        ``"none"``: none; a column of the customers table (``"province"``); empty: the first of ``filter_columns``
        the customers table has.
    customer_columns : sequence of str
        The columns of the warehouse's customers table.
    filter_columns : sequence of str
        The columns the viewer groups filter rows on (``access_filter_columns``), read when ``setting`` is empty.

    Returns
    -------
    (str or None, dict of str to str)
        The attribute (``None``: no breakdown), and the ``filter_columns`` left out with the reason of each, for
        the run's warnings. A column named in ``setting`` that the customers table lacks raises ``ValueError``
        naming it and close matches.
    """
    text = (setting or "").strip()
    if text.lower() == NO_ATTRIBUTE_BREAKDOWN:
        return None, {}
    if text:
        if text not in customer_columns or text == "customer_id":
            close = difflib.get_close_matches(text, list(customer_columns), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(f"region_breakdown: the customers table has no attribute {text!r}{hint}; its columns are {sorted(customer_columns)}")
        return text, {}
    wanted = [c for c in dict.fromkeys(filter_columns) if c != "customer_id"]
    chosen = next((c for c in wanted if c in customer_columns), None)
    left_out = {c: "the customers table lacks it" if c not in customer_columns else f"the KPIs are computed per {chosen} only" for c in wanted if c != chosen}
    return chosen, left_out


def attribute_sizes(customers: frames.TableLike, attribute: str, *, k: int) -> pd.DataFrame:
    """Customers on file per value of ``attribute`` (customers without one are left out), smallest groups hidden.

    Returns ``attribute`` (text), ``n_customers`` (distinct ``customer_id``) and ``is_suppressed``: groups of
    fewer than ``k`` customers keep their name but lose their count (``privacy.suppress_small_groups``).
    """
    table = frames.as_ibis(customers)
    frames.require_columns(table, ["customer_id", attribute], context="attribute_sizes(customers)")
    known = table.filter(table[attribute].notnull())
    counts = known.group_by(known[attribute].cast("string").name(attribute)).aggregate(n_customers=known.customer_id.nunique()).to_pandas()
    counts = counts.sort_values(attribute, ignore_index=True)
    return privacy.suppress_small_groups(counts, count_col="n_customers", k=k, keep_cols=[attribute])


def compute_kpis_by_attribute(
    tables: Mapping[str, frames.TableLike],
    catalogue: Sequence[KpiDefinition],
    *,
    customers: frames.TableLike,
    attribute: str,
    grain: str,
    start,
    end,
    k: int = 5,
) -> pd.DataFrame:
    """The KPIs that can be told per customer (those with the ``segment`` dimension) per value of a customer
    attribute, e.g. per province, for viewers who see some provinces only.

    Each customer's value of ``attribute`` takes the place of their segment in the segment breakdown
    (``compute_kpis(segments=...)``): the same join, so a province's values are those of ``compute_kpis`` over
    that province's customers alone. Left out: the values of a group of fewer than ``k`` customers on file
    (``attribute_sizes``), and the rows of customers without a value or of no customer (anonymous orders).

    Parameters
    ----------
    tables, catalogue, grain, start, end
        As ``compute_kpis``.
    customers : table with ``customer_id`` and ``attribute``
        The warehouse's customers (one row per customer).
    attribute : str
        The customer column to break down by, e.g. ``province`` or ``city``.
    k : int
        Smallest group shown, in customers on file.

    Returns
    -------
    pandas.DataFrame
        The columns of ``compute_kpis``: ``segment`` holds the attribute's value, ``channel`` is ``"all"``;
        ``track_by_attribute`` tracks them and names the column after the attribute.
    """
    table = frames.as_ibis(customers)
    frames.require_columns(table, ["customer_id", attribute], context="compute_kpis_by_attribute(customers)")
    lookup = table.select("customer_id", segment=table[attribute].cast("string"))
    attributable = [kpi for kpi in catalogue if "segment" in kpi.dimensions]
    values = compute_kpis(tables, attributable, grain=grain, start=start, end=end, segments=lookup, dimensions=("segment",), totals=False)
    sizes = attribute_sizes(table, attribute, k=k)
    shown = sizes.loc[~sizes["is_suppressed"], attribute]
    return values[values["segment"].isin(shown)].reset_index(drop=True)


def track_by_attribute(
    values: pd.DataFrame,
    catalogue: Sequence[KpiDefinition],
    *,
    attribute: str,
    window: int = 8,
    sigma: float = 3.0,
    currency: str | None = None,
    locale: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Track the values of ``compute_kpis_by_attribute`` and find their alerts, each group judged on its own series.

    Returns ``(tracked, alerts)``: the columns of ``track`` and ``ALERT_COLUMNS`` with ``segment`` renamed to
    ``attribute`` (e.g. ``province``), so that a viewer's row filter on that column narrows them. Counts and sums
    per group have no target of their own (grey), rates and averages keep theirs, as in the segment breakdown.
    """
    renamed = {"segment": attribute}
    if values.empty:
        tracked = track(_example_values(catalogue), catalogue, window=window, sigma=sigma).iloc[:0]
        return tracked.rename(columns=renamed), pd.DataFrame(columns=ALERT_COLUMNS).rename(columns=renamed)
    tracked = track(values, catalogue, window=window, sigma=sigma)
    alerts = find_alerts(tracked, include_breakdowns=True, currency=currency, locale=locale)
    return tracked.rename(columns=renamed), alerts.rename(columns=renamed)


def _example_values(catalogue: Sequence[KpiDefinition]) -> pd.DataFrame:
    """One value of the catalogue's first KPI, so that ``track`` gives the columns of a tracked table."""
    start = pd.Timestamp("2000-01-01")
    return pd.DataFrame({
        "grain": ["month"], "period_start": [start], "period_end": [start + pd.DateOffset(months=1)],
        "kpi_id": [catalogue[0].id], "segment": [ALL], "channel": [ALL], "value": [0.0],
    })


# --------------------------------------------------------------------------------------------
# Tracking: targets, status, change, control limits
# --------------------------------------------------------------------------------------------


def _catalogue_frame(catalogue: Sequence[KpiDefinition]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "kpi_id": k.id,
                "name": k.name,
                "category": k.category,
                "unit": k.unit,
                "direction": k.direction,
                "kpi_grain": k.grain,
                "_target": np.nan if k.target is None else k.target,
                "_amber": np.nan if k.amber is None else k.amber,
                "_red": np.nan if k.red is None else k.red,
                "_has_target": k.has_target,
                "_scaling": COMPUTATIONS[k.computation].scaling,
            }
            for k in catalogue
        ]
    )


def _targets(df: pd.DataFrame) -> pd.DataFrame:
    """Target and thresholds at the row's grain; NaN where they do not carry over."""
    days = (df.period_end - df.period_start).dt.days.astype(float)
    factor = pd.Series(1.0, index=df.index)
    length = df._scaling == "length"
    nominal = df.kpi_grain.map(NOMINAL_DAYS).astype(float)
    factor[length] = (days / nominal)[length]
    other_grain = (df._scaling == "grain") & (df.grain != df.kpi_grain)
    # Counts and sums by segment or channel have no target of their own.
    partial = (df._scaling != "none") & ((df.segment != ALL) | (df.channel != ALL))
    factor[other_grain | partial] = np.nan
    return pd.DataFrame({"target": df._target * factor, "amber": df._amber * factor, "red": df._red * factor}, index=df.index)


def status_of(value: pd.Series, *, amber: pd.Series, red: pd.Series, higher_is_better: pd.Series) -> pd.Series:
    """Return ``green``, ``amber``, ``red`` or ``grey`` (no value or no threshold) per row.

    Higher is better: ``value >= amber`` green, ``value >= red`` amber, else red;
    lower is better: ``value <= amber`` green, ``value <= red`` amber, else red.
    """
    sign = np.where(higher_is_better, 1.0, -1.0)
    v, a, r = value * sign, amber * sign, red * sign
    status = np.select([v >= a, v >= r], ["green", "amber"], default="red")
    status = np.where(value.isna() | amber.isna() | red.isna(), "grey", status)
    return pd.Series(status, index=value.index, dtype="object")


def _control_limits(values: pd.Series, *, window: int, sigma: float, min_periods: int) -> pd.DataFrame:
    """XmR (individuals) control limits from the ``window`` periods before each one."""
    past = values.shift(1)
    centre = past.rolling(window, min_periods=min_periods).mean()
    moving_range = past.diff().abs().rolling(window - 1, min_periods=min_periods - 1).mean()
    spread = sigma * moving_range / 1.128
    return pd.DataFrame({"centre": centre, "lower_limit": centre - spread, "upper_limit": centre + spread})


def track(values: pd.DataFrame, catalogue: Sequence[KpiDefinition], *, window: int = 8, sigma: float = 3.0, min_periods: int = 4) -> pd.DataFrame:
    """Add targets, status, period-over-period and year-over-year change and control limits.

    Parameters
    ----------
    values : pandas.DataFrame
        Output of ``compute_kpis``: ``grain``, ``period_start``, ``period_end``, ``kpi_id``,
        ``segment``, ``channel``, ``value`` (one grain or several).
    catalogue : list of KpiDefinition
    window : int
        Past periods that set the control limits of each period.
    sigma : float
        Width of the control limits in estimated standard deviations (3 = Shewhart).
    min_periods : int
        Past periods needed before a change can be called significant.

    Returns
    -------
    pandas.DataFrame
        The input columns plus ``name``, ``category``, ``unit``, ``direction``, ``kpi_grain``,
        ``target``, ``amber``, ``red`` (at the row's grain; NaN where a target does not apply),
        ``attainment_pct`` (value / target x 100), ``previous_value``, ``change_pct`` (vs the
        previous period), ``last_year_value``, ``change_yoy_pct``, ``centre``, ``lower_limit``,
        ``upper_limit``, ``is_significant`` (outside the control limits of the past periods),
        ``is_adverse`` (a significant change in the bad direction) and ``status`` (``green``,
        ``amber``, ``red``; ``no target`` for a KPI the dataset set no target for; ``grey`` where
        its target does not carry to the row's grain or breakdown).
    """
    frames.require_columns(values, ["grain", "period_start", "period_end", "kpi_id", "segment", "channel", "value"], context="track(values)")
    if window < 2 or min_periods < 2:
        raise ValueError("window and min_periods must be at least 2")
    known = {k.id for k in catalogue}
    unknown = sorted(set(values.kpi_id) - known)
    if unknown:
        raise KeyError(f"track: KPI id(s) {unknown} are not in the catalogue")
    keys = ["kpi_id", "grain", "segment", "channel"]
    df = values.merge(_catalogue_frame(catalogue), on="kpi_id", how="left")
    position = {k.id: i for i, k in enumerate(catalogue)}
    df = df.assign(_position=df.kpi_id.map(position)).sort_values(["_position", *keys[1:], "period_start"])
    df = df.drop(columns="_position").reset_index(drop=True)
    df = df.join(_targets(df))
    df["attainment_pct"] = df.value / df.target.where(df.target != 0) * 100
    grouped = df.groupby(keys, sort=False).value
    df["previous_value"] = grouped.shift(1)
    df["change_pct"] = (df.value - df.previous_value) / df.previous_value.abs().where(df.previous_value != 0) * 100
    limits = pd.concat([_control_limits(g, window=window, sigma=sigma, min_periods=min_periods) for _, g in grouped], axis=0)
    df = df.join(limits)
    df["last_year_value"] = _last_year(df, keys)
    df["change_yoy_pct"] = (df.value - df.last_year_value) / df.last_year_value.abs().where(df.last_year_value != 0) * 100
    outside = (df.value > df.upper_limit) | (df.value < df.lower_limit)
    df["is_significant"] = outside.fillna(False) & df.centre.notna()
    worse = np.where(df.direction == "higher", df.value < df.centre, df.value > df.centre)
    df["is_adverse"] = df.is_significant & worse
    df["status"] = status_of(df.value, amber=df.amber, red=df.red, higher_is_better=df.direction == "higher")
    df["status"] = df.status.where(df._has_target.astype(bool), NO_TARGET)
    return df.drop(columns=["_target", "_amber", "_red", "_scaling", "_has_target"])


def _last_year(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    shifted = df[[*keys, "period_start", "value"]].copy()
    back = shifted.grain.map(_YEAR_BACK)
    shifted["period_start"] = [start + offset for start, offset in zip(shifted.period_start, back)]
    shifted["period_start"] = shifted["period_start"].astype("datetime64[us]")
    lookup = shifted.rename(columns={"value": "last_year_value"})
    merged = df[[*keys, "period_start"]].astype({"period_start": "datetime64[us]"}).merge(lookup, on=[*keys, "period_start"], how="left")
    return pd.Series(merged.last_year_value.to_numpy(), index=df.index)


# --------------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------------

ALERT_COLUMNS = [
    "kpi_id", "name", "grain", "period_start", "segment", "channel", "value", "unit", "target",
    "status", "alert_type", "severity", "previous_value", "change_pct", "lower_limit", "upper_limit", "message",
]


def _alert_message(row, *, currency: str | None = None, locale: str | None = None) -> str:
    def written(value: float) -> str:
        return format_value(value, row.unit, currency=currency, locale=locale)

    parts = []
    if row.status in ("amber", "red"):
        parts.append(f"{row['name']} is {written(row.value)}, {row.status} against target {written(row.target)}")
    if row.is_adverse:
        parts.append(
            f"{row['name']} moved from {written(row.previous_value)} to {written(row.value)}, "
            f"outside the usual range {written(row.lower_limit)} to {written(row.upper_limit)}"
        )
    return "; ".join(parts)


def find_alerts(
    tracked: pd.DataFrame, *, latest_only: bool = True, include_breakdowns: bool = False, currency: str | None = None, locale: str | None = None
) -> pd.DataFrame:
    """Return the alerts of a tracked KPI table.

    An alert is raised for a threshold breach (status amber or red) or a significant
    adverse change (outside the control limits, in the bad direction). Changes within
    the period-to-period noise raise nothing. Each KPI is judged at its own grain.

    Parameters
    ----------
    tracked : pandas.DataFrame
        Output of ``track``.
    latest_only : bool
        Only the latest period of each KPI (what a report shows); otherwise every period.
    include_breakdowns : bool
        Also the segment and channel rows (totals only by default).
    currency, locale : str, optional
        How money is written in the messages (the dataset's; default: the default dataset's).

    Returns
    -------
    pandas.DataFrame
        ``ALERT_COLUMNS``: ``alert_type`` is ``threshold``, ``significant_change`` or both joined
        by ``+``; ``severity`` is ``red`` or ``amber``; ``message`` a sentence for the report.
        Sorted red first.
    """
    frames.require_columns(tracked, ["kpi_id", "grain", "kpi_grain", "status", "is_adverse", "period_start", "segment", "channel"], context="find_alerts(tracked)")
    df = tracked[tracked.grain == tracked.kpi_grain]
    if not include_breakdowns:
        df = df[(df.segment == ALL) & (df.channel == ALL)]
    if latest_only:
        latest = df.groupby(["kpi_id", "segment", "channel"]).period_start.transform("max")
        df = df[df.period_start == latest]
    breach = df.status.isin(["amber", "red"])
    df = df[breach | df.is_adverse].copy()
    if df.empty:
        return pd.DataFrame(columns=ALERT_COLUMNS)
    kinds = np.where(df.status.isin(["amber", "red"]), "threshold", "")
    kinds = [("+".join(k for k in (a, "significant_change" if b else "") if k)) for a, b in zip(kinds, df.is_adverse)]
    df["alert_type"] = kinds
    df["severity"] = np.where(df.status == "red", "red", "amber")
    df["message"] = [_alert_message(row, currency=currency, locale=locale) for _, row in df.iterrows()]
    df = df.sort_values(["severity", "kpi_id"], key=lambda s: s.map({"red": 0, "amber": 1}) if s.name == "severity" else s)
    return df[ALERT_COLUMNS].reset_index(drop=True)


def write_alerts(alerts: pd.DataFrame, *, output_dir: str | Path | None) -> list[Path]:
    """Write ``alerts.csv`` and ``alerts.json`` into the run folder ``output_dir``.

    Also saves the table as ``tables/alerts`` (Parquet and CSV, ``results.save_table``),
    which is the file the runner counts for the report index. ``alerts.json`` holds
    ``{"n_alerts": n, "alerts": [records]}``. Nothing is written when ``output_dir`` is
    empty; returns the paths written.
    """
    if not output_dir:
        return []
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    frame = alerts.reindex(columns=ALERT_COLUMNS)
    csv_path, json_path = folder / "alerts.csv", folder / "alerts.json"
    results.write_csv(frame, csv_path)
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    json_path.write_text(json.dumps({"n_alerts": len(frame), "alerts": records}, ensure_ascii=False, indent=2), encoding="utf-8")
    table_path = results.save_table(frame, "alerts", output_dir=folder)
    return [csv_path, json_path, table_path]


def alerts_markdown(alerts: pd.DataFrame) -> str:
    """The alerts as a Markdown list with status-coloured markers, for the top of a report."""
    if alerts.empty:
        return "**No alerts**: every KPI is within its thresholds and its usual range."
    lines = [f"**{len(alerts)} alert(s)**", ""]
    for row in alerts.itertuples():
        colour = plots.STATUS_COLOURS.get(row.severity, plots.STATUS_COLOURS["grey"])
        period = pd.Timestamp(row.period_start).date()
        lines.append(f'- <span style="color:{colour}">&#9679;</span> **{row.name}** ({row.grain} of {period}): {row.message}')
    return "\n".join(lines)


def sales_cube(
    orders: frames.TableLike,
    segments: pd.DataFrame,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
    channel_col: str = "channel",
) -> pd.DataFrame:
    """Monthly sales by customer segment and sales channel, for pages that filter without recomputing.

    Parameters
    ----------
    orders : needs ``customer_col``, ``time_col``, ``amount_col`` (dataset currency, refunds negative), ``channel_col``.
    segments : ``customer_id`` and ``segment`` (``customer_segments``); customers without one count as "unknown",
        orders without a customer (anonymous orders) as "anonymous".
    start, end : orders with ``start <= time < end`` are counted.

    Returns
    -------
    DataFrame with ``month_date`` (first day of the month), ``segment``, ``channel``, ``n_customers``
    (distinct buyers), ``n_orders`` (purchases, refunds excluded) and ``revenue_amount`` (net of
    refunds, dataset currency); one row per month, segment and channel with any order. Small cells are not
    suppressed here: whatever displays the cube does that (``privacy.suppress_small_groups``).
    """
    frames.require_columns(orders, [customer_col, time_col, amount_col, channel_col], context="sales_cube(orders)")
    frames.require_columns(segments, ["customer_id", "segment"], context="sales_cube(segments)")
    table = frames.as_ibis(orders)
    table = table.filter(table[time_col] >= start, table[time_col] < end)
    lookup = ibis.memtable(segments[["customer_id", "segment"]].astype("string").drop_duplicates("customer_id"))
    joined = table.left_join(lookup, table[customer_col] == lookup.customer_id)
    is_purchase = joined[amount_col] >= 0
    cube = joined.group_by(
        month_date=joined[time_col].truncate("M"),
        # orders without a customer keep their revenue, in a segment of their own
        segment=ibis.ifelse(joined[customer_col].isnull(), "anonymous", joined.segment.fill_null("unknown")),
        channel=joined[channel_col].fill_null("unknown"),
    ).aggregate(
        n_customers=joined[customer_col].nunique(),
        n_orders=is_purchase.cast("int64").sum(),
        revenue_amount=joined[amount_col].sum(),
    )
    frame = cube.to_pandas().sort_values(["month_date", "segment", "channel"], ignore_index=True)
    frame["month_date"] = pd.to_datetime(frame["month_date"])
    return frame


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def format_value(value: float, unit: str, *, currency: str | None = None, locale: str | None = None) -> str:
    """A KPI value written for people in its unit; money in ``currency`` and ``locale`` (e.g. ``£86,161``)."""
    if pd.isna(value):
        return "n/a"
    if unit == "pct":
        return f"{value:.1f}%"
    if unit == "money":
        return money.format_money(value, *money.currency_and_locale(currency, locale))
    if unit in ("days", "hours"):
        return f"{value:.1f} {unit[0]}"
    if unit == "score":
        return f"{value:.1f}"
    return f"{value:,.0f}"


def select_series(tracked: pd.DataFrame, *, grain: str, segment: str = ALL, channel: str = ALL, start=None, end=None) -> pd.DataFrame:
    """Rows of a tracked table for one grain and one segment/channel selection, optionally in ``[start, end)``."""
    df = tracked[(tracked.grain == grain) & (tracked.segment == segment) & (tracked.channel == channel)]
    if start is not None:
        df = df[df.period_start >= pd.Timestamp(start)]
    if end is not None:
        df = df[df.period_end <= pd.Timestamp(end)]
    return df


def board_selection(tracked: pd.DataFrame, filters) -> tuple[pd.DataFrame, str]:
    """The rows a KPI board draws for ``filters`` (``select_series``), and a one-line note (empty when there is a
    board) saying why there is none: a segment and a channel chosen at once (breakdowns are computed one at a time),
    or no values for the selection. ``filters``: ``grain``, ``start_date``, ``end_date``, ``segment``, ``channel``."""
    if filters.segment != ALL and filters.channel != ALL:
        return tracked.iloc[:0], "KPIs are broken down by segment or by channel: set one of the two filters to all."
    selection = select_series(tracked, grain=filters.grain, segment=filters.segment, channel=filters.channel, start=filters.start_date, end=filters.end_date)
    if selection.empty:
        described = filters.describe() if hasattr(filters, "describe") else str(filters)
        return selection, f"No KPI values for {described} (breakdowns may not be computed at this grain)."
    return selection, ""


def plot_kpi_tiles(
    tracked: pd.DataFrame, *, n_cols: int = 4, n_spark: int = 12, fig=None, currency: str | None = None, locale: str | None = None
):
    """KPI tiles: latest value, status colour and a sparkline of the last ``n_spark`` periods.

    ``tracked`` holds one series per KPI (filter with ``select_series`` first). Money is written in
    ``currency`` with ``locale`` (the dataset's; default: the default dataset's). A KPI without a
    target is drawn in grey and says "no target". Returns the matplotlib Figure (a grid of tiles has many Axes).
    """
    import matplotlib.pyplot as plt

    plots.set_style()
    kpi_ids = list(dict.fromkeys(tracked.kpi_id))
    n_cols = max(1, min(n_cols, len(kpi_ids)))
    n_rows = max(1, int(np.ceil(len(kpi_ids) / n_cols)))
    fig = fig or plt.figure(figsize=(3.1 * n_cols, 1.45 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax in axes[len(kpi_ids):]:
        ax.set_visible(False)
    for ax, kpi_id in zip(axes, kpi_ids):
        series = tracked[tracked.kpi_id == kpi_id].sort_values("period_start").tail(n_spark)
        last = series.iloc[-1]
        colour = plots.STATUS_COLOURS.get(last.status, plots.STATUS_COLOURS["grey"])
        ax.plot(range(len(series)), series.value.to_numpy(), color=colour, linewidth=1.6)
        ax.scatter([len(series) - 1], [last.value], color=colour, s=18, zorder=3)
        ax.set_xticks([]), ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(True), spine.set_color(colour), spine.set_linewidth(2.5)
        ax.set_title(last["name"], fontsize=9, loc="left")
        ax.text(0.02, 0.95, format_value(last.value, last.unit, currency=currency, locale=locale), transform=ax.transAxes, va="top", fontsize=12, fontweight="bold")
        if last.status == NO_TARGET:
            ax.text(0.02, 0.05, NO_TARGET, transform=ax.transAxes, va="bottom", fontsize=7, color=colour)
        if pd.notna(last.change_pct):
            ax.text(0.98, 0.95, f"{last.change_pct:+.1f}%", transform=ax.transAxes, va="top", ha="right", fontsize=8, color="dimgrey")
        ax.margins(y=0.5)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.3 / n_rows, bottom=0.02, hspace=0.45, wspace=0.06)
    return fig


def plot_kpi_trend(tracked: pd.DataFrame, *, kpi_id: str, ax=None, legend: bool = True, currency: str | None = None):
    """Trend of one KPI against its target: values coloured by status, target line, amber/red lines,
    and the usual range (control limits) shaded. ``tracked`` holds one series (filter with ``select_series``).
    The title names the unit; money as ``currency`` (the dataset's; default: the default dataset's)."""
    ax = plots.new_axes(ax, figsize=(7, 3))
    series = tracked[tracked.kpi_id == kpi_id].sort_values("period_start")
    if series.empty:
        raise ValueError(f"plot_kpi_trend: no rows for KPI {kpi_id!r}")
    x = series.period_start.to_numpy()
    ax.plot(x, series.value.to_numpy(), color="#555555", linewidth=1.2, zorder=2)
    colours = series.status.map(plots.STATUS_COLOURS).fillna(plots.STATUS_COLOURS["grey"])
    ax.scatter(x, series.value.to_numpy(), c=list(colours), s=14, zorder=3)
    for column, style in (("target", "-"), ("amber", "--"), ("red", "--")):
        if series[column].notna().any():
            colour = plots.STATUS_COLOURS["green"] if column == "target" else plots.STATUS_COLOURS[column]
            ax.plot(x, series[column].to_numpy(), linestyle=style, color=colour, linewidth=1, label=column)
    if series.upper_limit.notna().any():
        ax.fill_between(x, series.lower_limit.to_numpy(), series.upper_limit.to_numpy(), color="#9e9e9e", alpha=0.15, linewidth=0, label="usual range")
    last = series.iloc[-1]
    unit = money.currency_and_locale(currency, None)[0] if last.unit == "money" else last.unit
    ax.set_title(f"{last['name']} ({unit})", loc="left")
    ax.set_xlabel("")
    ax.set_ylabel(unit, fontsize="small")
    if legend:
        ax.legend(loc="best", fontsize=7, frameon=False)
    return ax


def plot_kpi_trends(tracked: pd.DataFrame, *, n_cols: int = 3, fig=None, currency: str | None = None):
    """A trend chart per KPI against its target (``plot_kpi_trend`` in a grid, one legend; money in ``currency``). Returns the Figure."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    plots.set_style()
    kpi_ids = list(dict.fromkeys(tracked.kpi_id))
    n_rows = max(1, int(np.ceil(len(kpi_ids) / n_cols)))
    fig = fig or plt.figure(figsize=(4.2 * n_cols, 2.3 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for i, (ax, kpi_id) in enumerate(zip(axes, kpi_ids)):
        plot_kpi_trend(tracked, kpi_id=kpi_id, ax=ax, legend=i == 0, currency=currency)
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=2, maxticks=5))
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.tick_params(labelsize=7)
        ax.title.set_fontsize(9)
    for ax in axes[len(kpi_ids):]:
        ax.set_visible(False)
    fig.subplots_adjust(left=0.05, right=0.98, top=1 - 0.35 / n_rows, bottom=0.25 / n_rows, hspace=0.55, wspace=0.22)
    return fig


def latest_values(tracked: pd.DataFrame) -> pd.DataFrame:
    """The latest period of each KPI series, for a table in a report.

    Output columns: ``name``, ``period_start``, ``value``, ``unit``, ``target``, ``status``,
    ``change_pct``, ``change_yoy_pct``, ``is_significant`` (indexed by ``kpi_id``).
    """
    latest = tracked.sort_values("period_start").groupby("kpi_id", sort=False).tail(1)
    order = list(dict.fromkeys(tracked.kpi_id))
    latest = latest.set_index("kpi_id").loc[[k for k in order if k in set(latest.kpi_id)]]
    latest = latest[["name", "period_start", "value", "unit", "target", "status", "change_pct", "change_yoy_pct", "is_significant"]]
    return latest.round({"value": 2, "target": 2, "change_pct": 1, "change_yoy_pct": 1})


def render_dashboard(
    tracked: pd.DataFrame,
    filters,
    *,
    n_cols: int = 4,
    output_dir: str | Path | None = None,
    currency: str | None = None,
    locale: str | None = None,
) -> dict:
    """Display the KPI dashboard for one filter selection: tiles, the latest values, a trend per KPI.

    Returns the (closed, still savable) figures ``{"kpi_tiles": Figure, "kpi_trends": Figure}``,
    or an empty dict when nothing was drawn. With ``output_dir`` they are also written there
    (``figures/kpi_tiles.png``, ``figures/kpi_trends.png``), drawn once for the page and the file.

    ``filters`` has ``grain``, ``start_date``, ``end_date``, ``segment`` and ``channel``
    (``crm_analytics.widgets.FilterValues``). Segment and channel breakdowns are computed
    one at a time, so choosing both shows a note instead of charts. Money is written in ``currency``
    with ``locale`` (the dataset's; default: the default dataset's).

    The executive page draws the same board as HTML (``crm_analytics.kpi_board``), which redraws in milliseconds.
    """
    from IPython.display import Markdown, display

    selection, note = board_selection(tracked, filters)
    if note:
        display(Markdown(note))
        return {}
    tiles = plot_kpi_tiles(selection, n_cols=n_cols, currency=currency, locale=locale)
    results.show_figure(tiles, "kpi_tiles", output_dir=output_dir)
    display(latest_values(selection))
    trends = plot_kpi_trends(selection, n_cols=3, currency=currency)
    results.show_figure(trends, "kpi_trends", output_dir=output_dir)
    return {"kpi_tiles": tiles, "kpi_trends": trends}
