"""Helpers for the stakeholder pages served by Voilà: latest results, data freshness, the status banner.

A page never recomputes an analysis: it reads the tables persisted by the last
successful scheduled run (``outputs/<dataset>/<analysis>/latest/``) and says how fresh they
are. Freshness comes from two records:

- ``outputs/<dataset>/<analysis>/<run-id>/run.json``, written by the runner for every run
  (``status``, start and end times, parameters);
- ``parameters/schedule.yaml``: the cron expression and time zone of each
  scheduled analysis, read by ``crm_analytics.scheduler``.

The data is *stale* when a scheduled fire time (plus a grace period for the run
to finish) has passed since the latest successful run started; it is *failed*
when a run newer than the latest success did not succeed. In both cases the
page still shows the last good data under a banner; with no successful run at
all it shows a "not yet available" card instead of a blank page or a traceback.

Times in run records are ISO 8601; a time without an offset is taken as UTC.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import ipywidgets as widgets
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
import pyarrow.parquet  # noqa: F401  (loaded with the page, so a preheated kernel reads tables at once)
from matplotlib.ticker import StrMethodFormatter

from crm_analytics.imports import import_without

# seaborn loads scipy.stats and scipy.cluster (0.7 s of every page visit) for kernel densities (it has
# a bundled fallback) and clustermap dendrograms; pages draw lines and bars.
sns = import_without("seaborn", hidden=("scipy.stats", "scipy.cluster"))

from crm_analytics import access, money, paths, plots, privacy, results, scheduler
from crm_analytics.frames import require_columns
from crm_analytics.privacy import CUSTOMER_KEY_COL, suppress_small_groups
from crm_analytics.widgets import frontend_available

RUN_RECORD = "run.json"
SCHEDULE_ENV = "CRM_ANALYTICS_SCHEDULE"
DEFAULT_GRACE = pd.Timedelta(hours=1)
SUCCEEDED = "succeeded"
_IGNORED_STATUSES = {None, "running", "skipped_locked"}

# Run-record keys (crm_analytics.runner writes started_at / ended_at), first match wins.
_STARTED_KEYS = ("started_at", "started_time")
_FINISHED_KEYS = ("ended_at", "finished_at", "ended_time")
_STATE_STYLE = {
    "fresh": ("#e8f5e9", "#2e7d32"),
    "stale": ("#fff8e1", "#f9a825"),
    "failed": ("#ffebee", "#c62828"),
    "missing": ("#f5f5f5", "#757575"),
}


@dataclass(frozen=True)
class PageStatus:
    """How fresh one analysis's data is on a page.

    ``state`` is ``fresh``, ``stale`` (a scheduled run is overdue), ``failed`` (the newest run did not
    succeed) or ``missing`` (no successful run yet). ``latest`` is the run record of the last successful
    run, ``newest`` the record of the most recent run whatever its status.
    """

    analysis: str
    state: str
    message: str
    latest: dict = field(default_factory=dict)
    newest: dict = field(default_factory=dict)

    @property
    def is_usable(self) -> bool:
        """True when there is last good data to show (every state but ``missing``)."""
        return self.state != "missing"

    @property
    def as_of(self) -> str | None:
        """The data's as-of date: the ``as_of`` parameter of the latest successful run, if it had one."""
        value = self.latest.get("parameters", {}).get("as_of")
        return None if value in (None, "") else str(value)

    @property
    def finished_time(self) -> pd.Timestamp | None:
        """When the latest successful run finished (aware), or ``None``."""
        return record_time(self.latest, _FINISHED_KEYS)

    @property
    def warnings(self) -> list[dict]:
        """The warnings of the latest successful run (``run.json``'s ``warnings``: ``kind``, ``section``,
        ``message``): too little data, a fit that did not converge... The data shown carries them."""
        return [w for w in self.latest.get("warnings") or [] if isinstance(w, dict)]


# --------------------------------------------------------------------------------------------------
# preheated kernels


def wait_for_visitor() -> None:
    """Block a preheated Voilà kernel until a visitor opens the page; do nothing anywhere else.

    ``crm-analytics serve`` keeps kernels that have already run a page's imports. A page calls this right
    after its imports, so everything below it (reading the latest results) runs when the visitor arrives
    and the data shown can never be older than the visit.
    """
    if os.environ.get("VOILA_PREHEAT") == "True":
        from voila.utils import wait_for_request

        wait_for_request()


# --------------------------------------------------------------------------------------------------
# run records


def read_run_record(run_dir: str | Path) -> dict:
    """Return the ``run.json`` of a run folder as a dict; ``{}`` when it is absent or unreadable."""
    path = Path(run_dir) / RUN_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def record_time(record: dict, keys: tuple[str, ...]) -> pd.Timestamp | None:
    """Return the first of ``keys`` present in ``record`` as an aware timestamp (naive means UTC)."""
    for key in keys:
        value = record.get(key)
        if value:
            try:
                stamp = pd.Timestamp(value)
            except (TypeError, ValueError):
                return None
            return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    return None


def latest_record(analysis: str) -> dict:
    """Return the run record of the latest successful run of ``analysis`` (``outputs/<dataset>/<analysis>/latest``)."""
    return read_run_record(paths.latest_run_dir(analysis))


def newest_record(analysis: str) -> dict:
    """Return the record of the most recently started finished run of ``analysis``; ``{}`` if none.

    Runs still in progress (``<run-id>.tmp`` folders, status ``running``) and runs skipped because another
    process held the analysis lock (``skipped_locked``) say nothing about the data and are ignored.
    """
    folder = paths.analysis_dir(analysis)
    if not folder.is_dir():
        return {}
    candidates = [p for p in folder.iterdir() if p.is_dir() and p.name != "latest" and not p.name.endswith(".tmp")]
    records = [r for r in map(read_run_record, candidates) if r.get("status") not in _IGNORED_STATUSES]
    dated = [(record_time(r, _STARTED_KEYS), r) for r in records if r]
    dated = [(t, r) for t, r in dated if t is not None]
    return max(dated, key=lambda pair: pair[0])[1] if dated else {}


# --------------------------------------------------------------------------------------------------
# schedule


def schedule_file() -> Path:
    """Return the schedule file: ``$CRM_ANALYTICS_SCHEDULE`` when set, else the scheduler's own
    (``parameters/schedule.yaml``)."""
    configured = os.environ.get(SCHEDULE_ENV)
    return Path(configured).expanduser() if configured else scheduler.schedule_file()


def scheduled_jobs(path: str | Path | None = None) -> list[scheduler.ScheduledJob]:
    """Return the jobs of the schedule file, read and validated by ``crm_analytics.scheduler``; ``[]`` when
    there is no schedule file. A malformed file raises ``scheduler.ScheduleError``."""
    file = Path(path) if path else schedule_file()
    return list(scheduler.load_schedule(file, check_jobs=False).jobs) if file.exists() else []  # the page shows times only


def next_due_time(
    analysis: str, after: pd.Timestamp, *, jobs: list[scheduler.ScheduledJob] | None = None
) -> pd.Timestamp | None:
    """Return the earliest scheduled fire time of ``analysis`` strictly after ``after`` (aware), or ``None``
    when no job runs it. Cron fields have their crontab meaning (day of week 0 = Sunday), as in the scheduler."""
    jobs = scheduled_jobs() if jobs is None else jobs
    start = (after + pd.Timedelta(seconds=1)).to_pydatetime()
    fires = [
        scheduler.cron_trigger(job.cron, job.timezone).get_next_fire_time(None, start) for job in jobs if job.analysis == analysis
    ]
    fires = [pd.Timestamp(fire) for fire in fires if fire is not None]
    return min(fires) if fires else None


# --------------------------------------------------------------------------------------------------
# freshness


def display_time_zone() -> str:
    """The zone times are shown in on the pages: the business time zone of the dataset they show (UTC when it has none)."""
    from crm_analytics import datasets

    try:
        return datasets.load_dataset(None).time_zone
    except datasets.DatasetError:
        return "UTC"


def _fmt_time(stamp: pd.Timestamp | None) -> str:
    if stamp is None:
        return "an unknown time"
    zone = display_time_zone()
    return stamp.tz_convert(zone).strftime("%Y-%m-%d %H:%M") + f" {zone}"


def page_status(
    analysis: str,
    *,
    now: pd.Timestamp | None = None,
    grace: pd.Timedelta = DEFAULT_GRACE,
    jobs: list[scheduler.ScheduledJob] | None = None,
) -> PageStatus:
    """Decide how fresh the data of ``analysis`` is, from its run records and the schedule.

    Parameters
    ----------
    analysis : str
        Analysis name (``outputs/<dataset>/<analysis>/``).
    now : pandas.Timestamp, optional
        The current time (aware); default: the clock.
    grace : pandas.Timedelta
        How long after a scheduled fire time the run may take before the data counts as stale.
    jobs : list of scheduler.ScheduledJob, optional
        The schedule; default: ``scheduled_jobs()``. An unreadable schedule file is reported in the
        message and the data is then judged by run outcomes only.

    Returns
    -------
    PageStatus
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    latest, newest = latest_record(analysis), newest_record(analysis)
    if not latest:
        detail = f" The last attempt ended with status “{newest.get('status')}”." if newest else ""
        return PageStatus(analysis, "missing", f"No successful run of {analysis} yet.{detail}", latest, newest)
    started = record_time(latest, _STARTED_KEYS)
    finished = _fmt_time(record_time(latest, _FINISHED_KEYS) or started)
    newest_started = record_time(newest, _STARTED_KEYS)
    if newest and newest.get("status") != SUCCEEDED and newest_started is not None and (started is None or newest_started > started):
        message = (
            f"The latest run of {analysis} ({_fmt_time(newest_started)}) ended with status “{newest.get('status')}”. "
            f"Showing the last good data, from the run that finished {finished}."
        )
        return PageStatus(analysis, "failed", message, latest, newest)
    try:
        due = next_due_time(analysis, started, jobs=jobs) if started is not None else None
        note = ""
    except scheduler.ScheduleError:  # the details name server paths: they belong in the scheduler's own checks
        due, note = None, " The schedule could not be read, so only the outcome of its runs is checked."
    if due is not None and now > due + grace:
        message = (
            f"The data of {analysis} is out of date: a scheduled run was due {_fmt_time(due)} and has not succeeded. "
            f"Showing the last good data, from the run that finished {finished}."
        )
        return PageStatus(analysis, "stale", message, latest, newest)
    return PageStatus(analysis, "fresh", f"Data of {analysis} from the run that finished {finished}.{note}", latest, newest)


# --------------------------------------------------------------------------------------------------
# HTML fragments


def banner_html(status: PageStatus) -> str:
    """Return the status banner of one analysis as an HTML fragment (class ``crm-banner crm-banner-<state>``)."""
    background, colour = _STATE_STYLE[status.state]
    as_of = f" Data as of {html.escape(status.as_of)}." if status.as_of else ""
    title = {"fresh": "Up to date", "stale": "Out of date", "failed": "Latest run failed", "missing": "Not yet available"}[status.state]
    return (
        f'<div class="crm-banner crm-banner-{status.state}" data-analysis="{html.escape(status.analysis)}" '
        f'style="background:{background};border-left:6px solid {colour};padding:8px 12px;margin:4px 0;'
        f'font-family:sans-serif;font-size:14px">'
        f"<strong>{title}</strong> · {html.escape(status.message)}{as_of}{_warnings_html(status.warnings)}</div>"
    )


def _warnings_html(warnings: list[dict]) -> str:
    """The run's warnings as an amber list inside the banner (class ``crm-warnings``); ``""`` without any."""
    if not warnings:
        return ""
    label = f"{len(warnings)} warning" + ("s" if len(warnings) > 1 else "")
    if restricted_viewer() is not None:  # warnings quote figures over every customer: only their count
        return (f'<div class="crm-warnings" style="color:#8a5a00;background:#fff4d6;margin-top:6px;padding:4px 8px">'
                f"<strong>{label} in this run</strong> (shown to viewers of every row)</div>")
    items = "".join(
        f"<li>{html.escape(str(w.get('section')) + ': ' if w.get('section') else '')}{html.escape(str(w.get('message', '')))}</li>"
        for w in warnings
    )
    return (f'<div class="crm-warnings" style="color:#8a5a00;background:#fff4d6;margin-top:6px;padding:4px 8px">'
            f"<strong>{label} in this run</strong><ul style=\"margin:2px 0 0 1.2em;padding:0\">{items}</ul></div>")


def unavailable_html(analysis: str, what: str, *, reason: str = "") -> str:
    """Return a "not yet available" card (class ``crm-unavailable``) naming what a section needs.

    ``what`` describes the missing result, e.g. ``"the table sales_cube (columns month_date, ...)"``.
    """
    if reason == NOT_IN_VIEW:
        return not_in_view_html(what)
    why = f" ({html.escape(reason)})" if reason else ""
    return (
        f'<div class="crm-unavailable" style="background:#f5f5f5;border:1px dashed #9e9e9e;padding:12px;'
        f'margin:6px 0;font-family:sans-serif;font-size:14px;color:#424242">'
        f"<strong>Not yet available</strong>{why}: this section shows {html.escape(what)} "
        f"from the analysis <code>{html.escape(analysis)}</code>, which no successful run has produced yet.</div>"
    )


def table_needed(name: str, columns: list[str] | tuple[str, ...]) -> str:
    """Describe a needed table for ``unavailable_html``: its name and columns."""
    return f"the table {name} (columns {', '.join(columns)})"


def tile_html(label: str, value: str, *, note: str = "") -> str:
    """Return one number tile (class ``crm-tile``; the number in ``crm-tile-value``)."""
    extra = f'<div style="font-size:12px;color:#616161">{html.escape(note)}</div>' if note else ""
    return (
        '<div class="crm-tile" style="display:inline-block;min-width:150px;padding:8px 14px;margin:4px;'
        'border:1px solid #e0e0e0;border-radius:6px;font-family:sans-serif">'
        f'<div style="font-size:12px;color:#616161">{html.escape(label)}</div>'
        f'<div class="crm-tile-value" style="font-size:24px;font-weight:bold">{html.escape(value)}</div>{extra}</div>'
    )


# --------------------------------------------------------------------------------------------------
# tables


def load_table(analysis: str, name: str, *, columns: list[str] | tuple[str, ...] = ()) -> tuple[pd.DataFrame | None, str]:
    """Return ``(table, "")`` from the latest successful run of ``analysis``, or ``(None, reason)``.

    ``reason`` says why the table cannot be shown: no successful run has it, a needed column of
    ``columns`` is absent (the reason names the missing columns), or the page's viewer sees only some rows and
    the table cannot be narrowed to them (``NOT_IN_VIEW``). Every table a page shows comes through here, so the
    viewer's row filter (``rows_for_viewer``) applies to tiles, charts, lists and downloads alike.
    """
    try:
        table = results.load_latest_table(analysis, name)
    except FileNotFoundError:
        return None, "no successful run has persisted it"
    viewer = restricted_viewer()
    if viewer is not None:
        table = rows_for_viewer(table, viewer)
        if table is None:
            return None, NOT_IN_VIEW
    missing = [c for c in columns if c not in table.columns]
    if missing:
        return None, f"the persisted table lacks column(s) {missing}"
    return table, ""


# --------------------------------------------------------------------------------------------------
# rows per viewer (parameters/access.yaml, crm_analytics.access)

NOT_IN_VIEW = "not available for your view"
# per-customer attributes a row filter may name (province, city), persisted by segmentation with customer_key
CUSTOMER_ATTRIBUTES = ("segmentation", "customer_regions")


def restricted_viewer() -> access.Viewer | None:
    """The viewer this page kernel draws for when their group sees only some rows; ``None`` when every row is
    shown (no viewer configured, or an unrestricted group). ``access.AccessError`` when the server requires a
    viewer and this kernel has none or an unknown one: the page then fails instead of showing every row."""
    viewer = access.current_viewer()
    return None if viewer is None or viewer.sees_all_rows else viewer


def customer_attributes() -> pd.DataFrame | None:
    """The persisted per-customer attributes (``CUSTOMER_ATTRIBUTES``: ``customer_key``, province, city), or ``None``."""
    try:
        return results.load_latest_table(*CUSTOMER_ATTRIBUTES)
    except FileNotFoundError:
        return None


def rows_for_viewer(table: pd.DataFrame, viewer: access.Viewer) -> pd.DataFrame | None:
    """The rows of ``table`` that ``viewer`` may see, or ``None`` when ``table`` cannot be narrowed to them.

    A table holding the group's filter column is filtered on it; a filter on people's names (``owner``,
    ``manager``: ``{owner: $viewer}``) on the names' keyed pseudonyms (``owner_key``, ``privacy.person_keys``),
    since published tables never hold the names themselves (a column of masked names cannot be matched, and
    gives ``None``); a per-customer table (``customer_key``) through the customer attributes
    (``customer_attributes``); any other table (an aggregate over every customer) cannot be, and gives
    ``None``: it must not be shown to this viewer.
    """
    column = viewer.group.rows.column
    if privacy.personal_column_kind(column) == "name":
        return _rows_of_people(table, viewer)
    if column in table.columns:
        return access.filter_rows(table, viewer)
    if CUSTOMER_KEY_COL in table.columns:
        lookup = customer_attributes()
        if lookup is not None and column in lookup.columns:
            return access.filter_by_lookup(table, lookup, viewer, key_col=CUSTOMER_KEY_COL)
    return None


def _rows_of_people(table: pd.DataFrame, viewer: access.Viewer) -> pd.DataFrame | None:
    """The rows of ``table`` whose person key (``<column>_key``) is the pseudonym of a name ``viewer`` may see
    (their own identity for ``$viewer``); ``None`` without that column."""
    key_column = privacy.person_key_column(viewer.group.rows.column)
    if key_column not in table.columns:
        return None
    allowed = privacy.person_keys(pd.Series(viewer.allowed_values(), dtype="string")).dropna()
    return table[table[key_column].isin(set(allowed)).fillna(False).astype(bool)].reset_index(drop=True)


def not_in_view_html(what: str, *, reason: str = "") -> str:
    """One line (class ``crm-section-note crm-not-in-view``) saying ``what`` is not available for the viewer's rows,
    and why when ``reason`` is given."""
    why = f" ({html.escape(reason)})" if reason else ""
    return (f'<p class="crm-section-note crm-not-in-view" style="font-family:sans-serif;color:#616161">'
            f"{html.escape(what[:1].upper() + what[1:])}: {NOT_IN_VIEW}{why}.</p>")


def latest_figure(analysis: str, name: str) -> Path | None:
    """Return ``figures/<name>.png`` of the latest successful run of ``analysis``, or ``None``."""
    path = paths.latest_run_dir(analysis) / "figures" / f"{name}.png"
    return path if path.is_file() else None


def figure_section_html(analysis: str, name: str, *, title: str) -> str:
    """Return a titled section showing a figure persisted by the latest run, or a "not yet available" card.

    The PNG is embedded (``data:`` URL), so the page needs no file access to ``outputs/``.
    """
    heading = f'<h3 style="font-family:sans-serif;margin:14px 0 4px">{html.escape(title)}</h3>'
    if restricted_viewer() is not None:  # a picture of every customer's data cannot be narrowed to some rows
        return heading + not_in_view_html(title)
    path = latest_figure(analysis, name)
    if path is None:
        return heading + unavailable_html(analysis, f"the figure {name}.png")
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return heading + f'<img class="crm-figure" alt="{html.escape(title)}" style="max-width:100%" src="data:image/png;base64,{encoded}">'


# --------------------------------------------------------------------------------------------------
# the sales cube: month x segment x channel, filtered interactively

CUBE_KEYS = ("month_date", "segment", "channel")
CUBE_COLUMNS = (*CUBE_KEYS, "n_customers", "n_orders", "revenue_amount")
ALL = "All"
PERIODS = {"Last 3 months": 3, "Last 6 months": 6, "Last 12 months": 12, "All months": 0}
_THOUSANDS = StrMethodFormatter("{x:,.0f}")


def prepare_cube(cube: pd.DataFrame, *, k: int = 5) -> pd.DataFrame:
    """Return the cube with cells of fewer than ``k`` customers suppressed and ``month_date`` as timestamps.

    Input columns: ``month_date`` (first day of the month), ``segment``, ``channel``, ``n_customers``
    (distinct customers in the cell), ``n_orders``, ``revenue_amount`` (dataset currency). Output: the same plus
    ``is_suppressed`` (see ``privacy.suppress_small_groups``).
    """
    require_columns(cube, CUBE_COLUMNS, context="prepare_cube(cube)")
    out = suppress_small_groups(cube, count_col="n_customers", k=k, keep_cols=CUBE_KEYS)
    out["month_date"] = pd.to_datetime(out["month_date"])
    return out


def filter_cube(cube: pd.DataFrame, *, segment: str = ALL, channel: str = ALL, months: int = 0) -> pd.DataFrame:
    """Return the cube rows of one segment and channel (``"All"``: every one) in the last ``months`` months.

    ``months`` counts back from the cube's latest month (0: every month), never from today.
    """
    require_columns(cube, CUBE_COLUMNS, context="filter_cube(cube)")
    keep = pd.Series(True, index=cube.index)
    if segment != ALL:
        keep &= cube["segment"] == segment
    if channel != ALL:
        keep &= cube["channel"] == channel
    if months:
        month = pd.to_datetime(cube["month_date"])  # a no-op on a prepared cube
        keep &= month >= month.max() - pd.DateOffset(months=months - 1)
    return cube[keep]


def cube_totals(cube: pd.DataFrame) -> dict[str, float]:
    """Return revenue, orders, average order value (money in the dataset currency) and hidden cells of the visible cube rows.

    Suppressed cells (``is_suppressed``) are left out of every total; ``avg_order_amount`` is NaN without orders.
    """
    hidden = cube["is_suppressed"] if "is_suppressed" in cube else pd.Series(False, index=cube.index)
    visible = cube[~hidden.astype(bool)]
    revenue = float(visible["revenue_amount"].sum())
    orders = float(visible["n_orders"].sum())
    return {
        "revenue_amount": revenue,
        "n_orders": orders,
        "avg_order_amount": revenue / orders if orders else float("nan"),
        "n_hidden_cells": int(hidden.sum()),
    }


def plot_monthly_revenue(cube: pd.DataFrame, *, ax=None, palette: dict[str, str] | None = None, currency: str | None = None):
    """Line chart of visible revenue per month, one line per channel. Returns the Axes.

    The axis names ``currency`` (the dataset's; default: the default dataset's).

    ``palette`` maps channel to colour, so a channel keeps its colour whatever the filters (see
    ``channel_palette``); default: seaborn's order of the channels present.
    """
    ax = plots.new_axes(ax)
    visible = cube[~cube["is_suppressed"]] if "is_suppressed" in cube else cube
    monthly = visible.groupby(["month_date", "channel"], as_index=False)["revenue_amount"].sum()
    sns.lineplot(data=monthly, x="month_date", y="revenue_amount", hue="channel", marker="o", ax=ax, palette=palette)
    ax.xaxis.set_major_locator(mdates.MonthLocator())
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    ax.yaxis.set_major_formatter(_THOUSANDS)
    ax.set(title="Revenue per month by channel", xlabel="month", ylabel=money.axis_label("revenue", money.currency_and_locale(currency)[0]))
    return ax


def channel_palette(channels) -> dict[str, str]:
    """Return one fixed colour per channel, the same in every report and page (``plots.category_colours``)."""
    return plots.category_colours(sorted(set(channels)))


def plot_segment_revenue(cube: pd.DataFrame, *, ax=None, currency: str | None = None):
    """Bar chart of visible revenue per customer segment, largest first; the axis names ``currency``
    (the dataset's; default: the default dataset's). Returns the Axes."""
    ax = plots.new_axes(ax)
    visible = cube[~cube["is_suppressed"]] if "is_suppressed" in cube else cube
    by_segment = visible.groupby("segment", as_index=False)["revenue_amount"].sum().sort_values("revenue_amount", ascending=False)
    sns.barplot(data=by_segment, y="segment", x="revenue_amount", ax=ax, color=sns.color_palette(plots.PALETTE)[3])
    ax.xaxis.set_major_formatter(_THOUSANDS)
    ax.set(title="Revenue by segment", xlabel=money.axis_label("revenue", money.currency_and_locale(currency)[0]), ylabel="")
    return ax


def totals_html(totals: dict[str, float], *, k: int, currency: str | None = None, locale: str | None = None) -> str:
    """Return the number tiles of ``cube_totals`` as HTML; money in whole units of ``currency``, written for
    ``locale`` (the dataset's; default: the default dataset's), e.g. ``£86,161``."""
    currency, locale = money.currency_and_locale(currency, locale)

    def written(value: float) -> str:
        return money.format_money(value, currency, locale, decimals=0)

    return "".join(
        [
            tile_html("Revenue", written(totals["revenue_amount"])),
            tile_html("Orders", f"{totals['n_orders']:,.0f}"),
            tile_html("Average order value", written(totals["avg_order_amount"])),
            tile_html("Hidden small groups", f"{totals['n_hidden_cells']:,}", note=f"cells of fewer than {k} customers"),
        ]
    )


def dropdown(label: str, options, css: str) -> widgets.Dropdown:
    """A filter dropdown labelled ``label`` with the CSS class ``css`` (browser tests find filters by it)."""
    control = widgets.Dropdown(options=options, description=label, style={"description_width": "initial"})
    control.add_class(css)
    return control


def html_area(css: str) -> widgets.HTML:
    """An empty HTML widget with the CSS class ``css``, for a section a filter redraws (tiles, a chart as an inline PNG)."""
    area = widgets.HTML()
    area.add_class(css)
    return area


def _chart(plot, frame):
    """One chart of the cube section as a new figure, or a note when the selection holds no shown data."""
    fig, ax = plt.subplots(figsize=(9, 4))
    if frame[~frame["is_suppressed"]].empty:
        ax.text(0.5, 0.5, "No data for this selection", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        plot(frame, ax=ax)
    fig.tight_layout()
    return fig


def _cube_charts(frame: pd.DataFrame, *, palette: dict[str, str], currency: str | None) -> list:
    """The sales section's two charts of ``frame``: revenue per month by channel, and revenue per segment."""
    return [_chart(partial(plot_monthly_revenue, palette=palette, currency=currency), frame), _chart(partial(plot_segment_revenue, currency=currency), frame)]


def figure_html(fig, *, css: str = "crm-figure", dpi: int = 100) -> str:
    """An ``<img>`` (class ``css``) holding the figure as an inline PNG at ``dpi`` dots per inch, its alt text
    written from the figure (``plots.describe_figure``); the figure is closed."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    alt = html.escape(plots.describe_figure(fig))
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="{css}" alt="{alt}" style="max-width:100%" src="data:image/png;base64,{encoded}">'


def static_cube(cube: pd.DataFrame, *, k: int = 5, currency: str | None = None, locale: str | None = None):
    """The sales section without filters, for reports (no frontend runs widgets there): all segments and
    channels over the last 12 months, the same tiles and charts as the live page's default view; money in
    ``currency`` written for ``locale`` (the dataset's; default: the default dataset's)."""
    from IPython.display import HTML

    plots.set_style()
    prepared = prepare_cube(cube, k=k)
    frame = filter_cube(prepared, segment=ALL, channel=ALL, months=PERIODS["Last 12 months"])
    palette = channel_palette(prepared["channel"].dropna())
    charts = _cube_charts(frame, palette=palette, currency=currency)
    note = "<p><em>All segments and channels, last 12 months. The live page has filters.</em></p>"
    return HTML(note + totals_html(cube_totals(frame), k=k, currency=currency, locale=locale) + "".join(figure_html(fig) for fig in charts))


def interactive_cube(cube: pd.DataFrame, *, k: int = 5, currency: str | None = None, locale: str | None = None):
    """Return the interactive sales section: segment, period and channel filters, number tiles and two charts.

    Without a frontend (a scheduled run's report) it returns ``static_cube`` instead: widgets would render empty.

    ``cube`` has the columns of ``CUBE_COLUMNS``; cells of fewer than ``k`` customers are suppressed before
    anything is shown. Every filter change redraws both charts and the tiles. CSS classes for tests and
    styling: ``crm-filter-segment``, ``crm-filter-period``, ``crm-filter-channel``, ``crm-tiles``,
    ``crm-chart-trend``, ``crm-chart-segments``.
    """
    if not frontend_available():
        return static_cube(cube, k=k, currency=currency, locale=locale)
    plots.set_style()
    prepared = prepare_cube(cube, k=k)
    segment = dropdown("Segment", [ALL, *sorted(prepared["segment"].dropna().unique())], "crm-filter-segment")
    period = dropdown("Period", list(PERIODS.items()), "crm-filter-period")
    channel = dropdown("Channel", [ALL, *sorted(prepared["channel"].dropna().unique())], "crm-filter-channel")
    tiles, trend, segments = html_area("crm-tiles"), html_area("crm-chart-trend"), html_area("crm-chart-segments")
    palette = channel_palette(prepared["channel"].dropna())

    def redraw(_change=None) -> None:
        frame = filter_cube(prepared, segment=segment.value, channel=channel.value, months=period.value)
        tiles.value = totals_html(cube_totals(frame), k=k, currency=currency, locale=locale)
        trend.value, segments.value = (figure_html(fig, css="crm-live-chart") for fig in _cube_charts(frame, palette=palette, currency=currency))

    for control in (segment, period, channel):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([segment, period, channel]), tiles, trend, segments])
