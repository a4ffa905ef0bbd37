"""Event funnels: how many users reach each step, how fast, and where they drop out.

The funnel runs on any event log (one row per event) given the roles of its
columns, so the same function serves the ``web_events`` table, a session-level
log or an exported clickstream. The aggregation is written with Ibis and runs in
the engine that holds the events (DuckDB by default).

Semantics (``mode="ordered"``, the default), per user:

* the user enters the funnel at their **first** event of step 1, at time ``t1``;
* they reach step ``k`` at the time ``tk`` of their earliest step-``k`` event at
  or after ``t(k-1)`` (ties count: an event at the same instant as the previous
  step qualifies); taking the earliest qualifying event is optimal, so a user
  who can complete the steps in order is always counted;
* with ``window``, every step must also fall at or before ``t1 + window``
  (both edges inclusive);
* repeated events are harmless: only the earliest qualifying one is used.

With ``mode="any_order"`` a user reaches step ``k`` when they did each of steps
1..k at least once, in any order (with ``window``: each of them at some time in
``[t1, t1 + window]``). Times from the previous step are undefined there and
reported as missing.

Pass ``user_col="session_id"`` (or use ``session_funnel``) for a per-session
funnel: every session is its own journey.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
from scipy import stats

from crm_analytics import frames, plots

MODES = ("ordered", "any_order")

_USER = "_user"
_TIME = "_time"
_EVENT = "_event"
_FIRST = "_first_time"
_PREVIOUS = "_previous_time"

RESULT_COLUMNS = [
    "step_number",
    "step",
    "users",
    "conversion_from_first_pct",
    "conversion_from_previous_pct",
    "drop_off",
    "drop_off_pct",
    "median_minutes_from_previous",
    "p90_minutes_from_previous",
]


def _as_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)


def _as_interval(window) -> ibis.expr.types.IntervalScalar | None:
    if window is None:
        return None
    delta = pd.Timedelta(window)
    if delta <= pd.Timedelta(0):
        raise ValueError(f"window must be a positive duration, got {window!r}")
    return ibis.interval(microseconds=int(delta / pd.Timedelta(microseconds=1)))


def _check_arguments(steps: Sequence[str], mode: str) -> list[str]:
    steps = list(steps)
    if not steps:
        raise ValueError("steps must name at least one event")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if repeated:
        raise ValueError(f"steps must be distinct event names; repeated: {repeated}")
    return steps


def _first_entries(first: ir.Table, by: list[str]) -> ir.Table:
    """One row per user: the time of their first step-1 event and the ``by`` values of that event.

    Where a user has several step-1 events at that same time, the one with the smallest ``by`` values
    (missing values last) is taken, so every engine puts the user in the same group.
    """
    earliest = first.group_by(_USER).aggregate(**{_FIRST: first[_TIME].min()})
    if not by:
        return earliest
    if len(by) == 1:  # the smallest value among the earliest events (min skips missing values)
        tied = first.join(earliest, [_USER, first[_TIME] == earliest[_FIRST]])
        return tied.group_by([_USER, _FIRST]).aggregate(**{by[0]: tied[by[0]].min()}).select(_USER, by[0], _FIRST)
    order = [first[_TIME], *(key for b in by for key in (first[b].isnull(), first[b]))]
    ranked = first.mutate(_entry_rank=ibis.row_number().over(group_by=first[_USER], order_by=order))
    entered = ranked.filter(ranked["_entry_rank"] == 0)
    return entered.select(_USER, *by, **{_FIRST: entered[_TIME]})


def _step_tables(events: ir.Table, steps: list[str], by: list[str], window, mode: str, *, cache: bool = False) -> list[ir.Table]:
    """Per step, one row per user who reached it: user, groups, first time, previous time, reached time.

    With ``cache`` each step's table is materialised in the engine before the next one is built on it.
    """
    keep = (lambda table: table.cache()) if cache else (lambda table: table)
    first = events.filter(events[_EVENT] == steps[0])
    entered = _first_entries(first, by)
    stage = keep(entered.mutate(**{_PREVIOUS: entered[_FIRST], _TIME: entered[_FIRST]}))
    tables = [stage]
    interval = _as_interval(window)
    for step in steps[1:]:
        candidates = events.filter(events[_EVENT] == step).select(_USER, _TIME)
        joined = candidates.join(stage.select(_USER, *by, _FIRST, **{_PREVIOUS: stage[_TIME]}), _USER)
        conditions = []
        if mode == "ordered":
            conditions.append(joined[_TIME] >= joined[_PREVIOUS])
        if interval is not None:
            conditions += [joined[_TIME] >= joined[_FIRST], joined[_TIME] <= joined[_FIRST] + interval]
        kept = joined.filter(*conditions) if conditions else joined
        stage = keep(kept.group_by([_USER, *by, _FIRST, _PREVIOUS]).aggregate(**{_TIME: kept[_TIME].min()}))
        tables.append(stage)
    return tables


def _normalised_events(events, *, user_col, time_col, event_col, by, context) -> ir.Table:
    frames.require_columns(events, [user_col, time_col, event_col, *by], context=context)
    table = frames.as_ibis(events)
    renamed = {_USER: table[user_col], _TIME: table[time_col].cast("timestamp"), _EVENT: table[event_col]}
    return table.select(**renamed, **{b: table[b] for b in by})


def funnel_expression(
    events: frames.TableLike,
    steps: Sequence[str],
    *,
    user_col: str = "customer_id",
    time_col: str = "event_time",
    event_col: str = "event_name",
    window=None,
    by: str | Sequence[str] | None = None,
    mode: str = "ordered",
) -> ir.Table:
    """Return the funnel as an unexecuted Ibis expression (one row per step and group that has users).

    Same arguments as ``funnel``. The expression yields ``step_number``, the
    ``by`` columns, ``users``, ``median_seconds`` and ``p90_seconds`` (time from
    the previous step). ``funnel`` executes it and derives the rates.
    """
    steps = _check_arguments(steps, mode)
    by = _as_list(by)
    table = _normalised_events(
        events, user_col=user_col, time_col=time_col, event_col=event_col, by=by, context="funnel(events)"
    )
    return _summary(_step_tables(table, steps, by, window, mode), by, mode)


def _summary(stages: list[ir.Table], by: list[str], mode: str) -> ir.Table:
    """Users per step and ``by`` group, with the median and p90 seconds from the previous step (ordered mode)."""
    parts = []
    for number, stage in enumerate(stages, start=1):
        grouped = stage.group_by(by) if by else stage
        if number == 1 or mode != "ordered":
            missing = ibis.null("float64")
            summary = grouped.aggregate(users=stage.count()).mutate(median_seconds=missing, p90_seconds=missing)
        else:
            gap = stage[_TIME].epoch_seconds() - stage[_PREVIOUS].epoch_seconds()
            summary = grouped.aggregate(users=stage.count(), gaps=gap.quantile([0.5, 0.9]))
            summary = summary.mutate(median_seconds=summary.gaps[0], p90_seconds=summary.gaps[1])
        parts.append(summary.select("users", "median_seconds", "p90_seconds", *by, step_number=ibis.literal(number, "int64")))
    return ibis.union(*parts) if len(parts) > 1 else parts[0]


def _existing_events(events: frames.TableLike, event_col: str) -> list[str]:
    table = frames.as_ibis(events)
    return sorted(str(v) for v in table.select(table[event_col]).distinct().to_pandas()[event_col].dropna())


def _check_steps_exist(events, steps: list[str], event_col: str) -> None:
    existing = _existing_events(events, event_col)
    unknown = [s for s in steps if s not in existing]
    if unknown:
        raise ValueError(f"unknown funnel step(s) {unknown}; the events in {event_col!r} are {existing}")


def _complete_grid(raw: pd.DataFrame, steps: list[str], by: list[str]) -> pd.DataFrame:
    """Add rows with zero users for (group, step) pairs nobody reached; attach step names."""
    numbers = pd.DataFrame({"step_number": np.arange(1, len(steps) + 1, dtype="int64"), "step": steps})
    if by:
        groups = raw.loc[raw["step_number"] == 1, by].drop_duplicates()
        grid = groups.merge(numbers, how="cross")
    else:
        grid = numbers
    out = grid.merge(raw, on=["step_number", *by], how="left")
    out["users"] = out["users"].fillna(0).astype("int64")
    return out.sort_values([*by, "step_number"], kind="stable").reset_index(drop=True)


def _add_rates(out: pd.DataFrame, by: list[str], mode: str) -> pd.DataFrame:
    users = out["users"].astype("float64")
    keys = out[by].apply(tuple, axis=1) if by else pd.Series(0, index=out.index)
    first = users.groupby(keys).transform("first")
    previous = users.groupby(keys).shift(1).fillna(users)
    out["conversion_from_first_pct"] = np.where(first > 0, 100 * users / first.where(first > 0, 1), np.nan)
    out["conversion_from_previous_pct"] = np.where(previous > 0, 100 * users / previous.where(previous > 0, 1), np.nan)
    out["drop_off"] = (previous - users).astype("int64")
    out["drop_off_pct"] = 100 - out["conversion_from_previous_pct"]
    is_first = out["step_number"] == 1
    minutes = {"median_minutes_from_previous": "median_seconds", "p90_minutes_from_previous": "p90_seconds"}
    for name, source in minutes.items():
        values = pd.to_numeric(out[source], errors="coerce").astype("float64") / 60
        out[name] = values.where(~is_first & (mode == "ordered"))
    return out[[*by, *RESULT_COLUMNS]]


def funnel(
    events: frames.TableLike,
    steps: Sequence[str],
    *,
    user_col: str = "customer_id",
    time_col: str = "event_time",
    event_col: str = "event_name",
    window=None,
    by: str | Sequence[str] | None = None,
    mode: str = "ordered",
) -> pd.DataFrame:
    """Count the users who reach each step of a funnel, with conversion, drop-off and time between steps.

    Parameters
    ----------
    events : pandas.DataFrame or ibis Table
        Event log, one row per event, with ``user_col``, ``time_col`` (timestamp),
        ``event_col`` and every ``by`` column.
    steps : sequence of str
        Distinct event names in funnel order. A name that never occurs in
        ``event_col`` raises ``ValueError`` listing the events that do.
    user_col, time_col, event_col : str
        Column roles; default to the ``web_events`` table. ``user_col="session_id"``
        gives a per-session funnel.
    window : timedelta-like, optional
        Maximum time from the user's first step-1 event to every later step
        (``"7D"``, ``"30min"``, ``pd.Timedelta``); inclusive. ``None``: unlimited.
    by : str or sequence of str, optional
        Breakdown columns. A user's group is the value on their first step-1
        event (for a user-level column such as an acquisition channel, simply
        the user's value); later steps may happen in any group.
    mode : {"ordered", "any_order"}
        See the module docstring for the exact semantics.

    Returns
    -------
    pandas.DataFrame
        One row per step (per ``by`` group, groups first), in step order:
        ``by`` columns, ``step_number`` (1-based), ``step``, ``users`` (count),
        ``conversion_from_first_pct`` and ``conversion_from_previous_pct``
        (percent of users at step 1 / at the previous step), ``drop_off``
        (users lost since the previous step), ``drop_off_pct`` (percent),
        ``median_minutes_from_previous`` and ``p90_minutes_from_previous``
        (minutes between reaching the previous step and this one, among users
        who reached this one; missing for step 1 and in ``any_order`` mode).
    """
    options = dict(user_col=user_col, time_col=time_col, event_col=event_col, window=window, mode=mode)
    return _journeys(events, steps, by=_as_list(by), context="funnel(events)", **options).funnel(by=by)


@dataclass(frozen=True)
class Journeys:
    """Every user's step times in one funnel, ready to be summarised overall or by any of its ``by`` columns.

    Made by ``journeys``. ``funnel(by=...)`` and ``time_to_convert(by=...)`` give what the module
    functions of those names give for the same events and options.
    """

    steps: list[str]
    by: list[str]
    mode: str
    stages: list[ir.Table]  # per step, one row per user who reached it (see _step_tables)
    user_col: str
    events: ir.Table
    event_col: str

    def _groups(self, by: str | Sequence[str] | None) -> list[str]:
        wanted = _as_list(by)
        unknown = [b for b in wanted if b not in self.by]
        if unknown:
            raise ValueError(f"breakdown(s) {unknown} were not computed; these journeys have by={self.by}")
        return wanted

    def funnel(self, by: str | Sequence[str] | None = None) -> pd.DataFrame:
        """The funnel overall or by some of the ``by`` columns; the columns of ``funnel``'s result."""
        by = self._groups(by)
        raw = _summary(self.stages, by, self.mode).to_pandas()
        reached = set(raw.loc[raw["users"] > 0, "step_number"])
        if len(reached) < len(self.steps):
            _check_steps_exist(self.events, self.steps, self.event_col)
        return _add_rates(_complete_grid(raw, self.steps, by), by, self.mode)

    def time_to_convert(self, by: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Per user who completed the funnel: ``user_col``, ``by`` columns, ``minutes_to_convert``, ``days_to_convert``."""
        by = self._groups(by)
        last = self.stages[-1]
        seconds = last[_TIME].epoch_seconds() - last[_FIRST].epoch_seconds()
        out = last.select(_USER, *by, minutes_to_convert=seconds / 60).to_pandas()
        out["days_to_convert"] = out["minutes_to_convert"] / (60 * 24)
        return out.rename(columns={_USER: self.user_col}).sort_values(self.user_col).reset_index(drop=True)


def journeys(
    events: frames.TableLike,
    steps: Sequence[str],
    *,
    user_col: str = "customer_id",
    time_col: str = "event_time",
    event_col: str = "event_name",
    window=None,
    by: str | Sequence[str] | None = None,
    mode: str = "ordered",
) -> Journeys:
    """Work out each user's funnel steps once, to summarise them overall and by several columns.

    Arguments as for ``funnel``; ``by`` lists every column a summary may break down by (a user's
    value in each is the one on their first step-1 event, as in ``funnel``). The step tables are
    materialised in the engine (temporary tables, dropped with the returned object), so
    ``journeys(events, steps, by=["a", "b"]).funnel(by="a")`` equals ``funnel(events, steps, by="a")``
    while the event log is read once for all the summaries instead of once per summary.

    Returns
    -------
    Journeys
    """
    options = dict(user_col=user_col, time_col=time_col, event_col=event_col, window=window, mode=mode)
    return _journeys(events, steps, by=_as_list(by), context="journeys(events)", cache=True, **options)


def _journeys(events, steps, *, user_col, time_col, event_col, window, by: list[str], mode, context: str, cache: bool = False) -> Journeys:
    steps = _check_arguments(steps, mode)
    table = _normalised_events(events, user_col=user_col, time_col=time_col, event_col=event_col, by=by, context=context)
    stages = _step_tables(table, steps, by, window, mode, cache=cache)
    return Journeys(steps, by, mode, stages, user_col, frames.as_ibis(events), event_col)


def session_funnel(events: frames.TableLike, steps: Sequence[str], *, session_col: str = "session_id", **options) -> pd.DataFrame:
    """Run ``funnel`` per session instead of per user: each session is its own journey.

    ``options`` are passed to ``funnel`` (``time_col``, ``event_col``, ``window``, ``by``, ``mode``);
    the ``users`` column then counts sessions.
    """
    return funnel(events, steps, user_col=session_col, **options)


def reached_times(
    events: frames.TableLike,
    steps: Sequence[str],
    *,
    user_col: str = "customer_id",
    time_col: str = "event_time",
    event_col: str = "event_name",
    window=None,
    by: str | Sequence[str] | None = None,
    mode: str = "ordered",
) -> pd.DataFrame:
    """Return when each user reached each funnel step (the per-user detail behind ``funnel``).

    Same arguments and semantics as ``funnel``.

    Returns
    -------
    pandas.DataFrame
        One row per user and step reached: ``user_col``, ``by`` columns,
        ``step_number``, ``step``, ``reached_time`` (timestamp) and
        ``minutes_from_first`` (minutes since the user's first step-1 event).
    """
    steps = _check_arguments(steps, mode)
    by = _as_list(by)
    table = _normalised_events(
        events, user_col=user_col, time_col=time_col, event_col=event_col, by=by, context="reached_times(events)"
    )
    parts = [
        stage.select(
            _USER, *by, step_number=ibis.literal(number, "int64"), reached_time=stage[_TIME], _first=stage[_FIRST]
        )
        for number, stage in enumerate(_step_tables(table, steps, by, window, mode), start=1)
    ]
    out = (ibis.union(*parts) if len(parts) > 1 else parts[0]).to_pandas()
    out["minutes_from_first"] = (out["reached_time"] - out["_first"]).dt.total_seconds() / 60
    out["step"] = pd.Categorical.from_codes(out["step_number"] - 1, categories=steps)
    out = out.rename(columns={_USER: user_col}).drop(columns="_first")
    return out.sort_values([user_col, "step_number"]).reset_index(drop=True)[
        [user_col, *by, "step_number", "step", "reached_time", "minutes_from_first"]
    ]


def time_to_convert(
    events: frames.TableLike,
    steps: Sequence[str],
    *,
    user_col: str = "customer_id",
    time_col: str = "event_time",
    event_col: str = "event_name",
    window=None,
    by: str | Sequence[str] | None = None,
    mode: str = "ordered",
) -> pd.DataFrame:
    """Return, per user who completed the funnel, the time from their first step-1 event to the last step.

    Same arguments and semantics as ``funnel``; only the completers leave the engine.

    Returns
    -------
    pandas.DataFrame
        ``user_col``, ``by`` columns, ``minutes_to_convert`` and ``days_to_convert``.
    """
    options = dict(user_col=user_col, time_col=time_col, event_col=event_col, window=window, mode=mode)
    return _journeys(events, steps, by=_as_list(by), context="time_to_convert(events)", **options).time_to_convert(by=by)


def compare_groups(result: pd.DataFrame, *, by: str) -> pd.DataFrame:
    """Test, per step, whether the step conversion differs between the groups of a ``funnel(..., by=by)`` result.

    For step ``k`` >= 2 the contingency table is groups x (reached step k,
    reached step k-1 but not k); a Pearson chi-square test (no continuity
    correction) is run on it. Groups with nobody at the previous step are left out.

    Parameters
    ----------
    result : pandas.DataFrame
        Output of ``funnel`` with ``by`` set to one column.
    by : str
        The breakdown column.

    Returns
    -------
    pandas.DataFrame
        One row per step from 2 on: ``step_number``, ``step``, ``n_groups``,
        ``chi2``, ``dof``, ``p_value``, ``min_conversion_from_previous_pct`` and
        ``max_conversion_from_previous_pct``.
    """
    frames.require_columns(result, [by, "step_number", "step", "users", "drop_off"], context="compare_groups(result)")
    rows = []
    for (number, step), part in result.loc[result["step_number"] > 1].groupby(["step_number", "step"], sort=True, observed=True):
        part = part.loc[(part["users"] + part["drop_off"]) > 0]
        table = np.column_stack([part["users"].to_numpy(), part["drop_off"].to_numpy()]).astype(float)
        usable = len(part) >= 2 and (table.sum(axis=0) > 0).all()
        chi2, p_value, dof = (stats.chi2_contingency(table, correction=False)[:3]) if usable else (np.nan, np.nan, 0)
        rates = part["conversion_from_previous_pct"]
        rows.append(
            {
                "step_number": number,
                "step": step,
                "n_groups": len(part),
                "chi2": chi2,
                "dof": int(dof),
                "p_value": p_value,
                "min_conversion_from_previous_pct": rates.min(),
                "max_conversion_from_previous_pct": rates.max(),
            }
        )
    return pd.DataFrame(rows)


def plot_funnel(result: pd.DataFrame, *, by: str | None = None, ax=None):
    """Draw a funnel chart: users per step as horizontal bars, labelled with the conversion from step 1.

    With ``by``, one bar per group and step (conversion from step 1 in percent, so groups of
    different sizes compare). Returns the Axes.
    """
    frames.require_columns(result, ["step", "users", "conversion_from_first_pct", *([by] if by else [])], context="plot_funnel(result)")
    import seaborn as sns

    plots.set_style()
    ax = plots.new_axes(ax, figsize=(9, 0.6 * result["step"].nunique() + 1.5 if by is None else 5))
    if by is None:
        sns.barplot(data=result, y="step", x="users", ax=ax, color=sns.color_palette(plots.PALETTE)[3], orient="h")
        for y, (users, pct) in enumerate(zip(result["users"], result["conversion_from_first_pct"], strict=True)):
            ax.text(users, y, f" {users:,} ({pct:.1f}%)", va="center")
        ax.set_xlabel("users (count)")
    else:
        sns.barplot(data=result, y="step", x="conversion_from_first_pct", hue=by, ax=ax, orient="h", palette=plots.category_colours(result[by]))
        ax.set_xlabel("conversion from step 1 (%)")
    ax.set_ylabel("")
    ax.set_title("Funnel" + (f" by {by}" if by else ""))
    return ax


def plot_time_to_convert(converted: pd.DataFrame, *, ax=None):
    """Histogram of days from step 1 to the last step (output of ``time_to_convert``); returns the Axes."""
    frames.require_columns(converted, ["days_to_convert"], context="plot_time_to_convert(converted)")
    import seaborn as sns

    plots.set_style()
    ax = plots.new_axes(ax)
    sns.histplot(converted["days_to_convert"], bins=40, ax=ax)
    median = converted["days_to_convert"].median()
    if pd.notna(median):
        ax.axvline(median, color="black", linestyle="--", label=f"median {median:.1f} days")
        ax.legend()
    ax.set_xlabel("days from first step to last step")
    ax.set_ylabel("converted users (count)")
    ax.set_title(f"Time to convert: median {median:.1f} days" if pd.notna(median) else "Time to convert")
    return ax
