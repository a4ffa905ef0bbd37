"""The KPI board of the executive page as HTML: tiles with sparklines and a trend per KPI, drawn as inline SVG.

The board holds the same content as ``kpi.render_dashboard`` (tiles with the latest value, status colour,
change and a sparkline; the latest values; each KPI's trend against its target, amber and red lines and its
usual range), but is written as text instead of drawn by matplotlib. A filter change on the page then redraws
it in milliseconds rather than seconds (``benchmarks/bench_kpi_board.py``), and the charts stay sharp at any
zoom. Reports and e-mails keep the matplotlib figures of ``kpi.render_dashboard``.

Everything here is pure: a tracked table (``kpi.track``) in, an HTML string out. ``render_board`` displays
it, for ``widgets.show_filtered``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd

from crm_analytics import money, plots, tables
from crm_analytics.kpi import NO_TARGET, board_selection, format_value, latest_values

BOARD_CLASS = "crm-kpi-board"
TILE_CLASS = "crm-kpi-tile"
TREND_CLASS = "crm-kpi-trend"
SPARK_SIZE = (132, 30)  # px, a tile's sparkline
TREND_SIZE = (300, 150)  # px, one trend chart
TREND_MARGINS = (58, 8, 10, 20)  # px: left (value labels), right, top, bottom (date labels)
LIMIT_STYLES = (("target", "green", ""), ("amber", "amber", "4 3"), ("red", "red", "4 3"))  # column, colour, dash
RANGE_FILL = "#9e9e9e"
LINE_COLOUR = "#555555"
FONT = "font-family:sans-serif"


def status_colour(status: str) -> str:
    """The colour (hex) of a KPI status (``green``, ``amber``, ``red``; anything else grey)."""
    return plots.STATUS_COLOURS.get(status, plots.STATUS_COLOURS["grey"])


def scaled(values: np.ndarray, low: float, high: float, *, start: float, end: float) -> np.ndarray:
    """Map ``values`` from ``[low, high]`` onto pixel positions ``start`` (at ``low``) to ``end`` (at ``high``);
    a flat range maps to the middle."""
    if high <= low:
        return np.full(len(values), (start + end) / 2)
    return start + (np.asarray(values, dtype=float) - low) / (high - low) * (end - start)


def index_runs(known: np.ndarray) -> list[np.ndarray]:
    """The positions of each run of consecutive ``True`` in ``known``: a missing value breaks a line or a band."""
    positions = np.flatnonzero(known)
    if positions.size == 0:
        return []
    return np.split(positions, np.flatnonzero(np.diff(positions) > 1) + 1)


def _points(x: np.ndarray, y: np.ndarray) -> str:
    return " ".join(f"{xi:.0f},{yi:.0f}" for xi, yi in zip(x, y))


def polylines(x: np.ndarray, y: np.ndarray, *, colour: str, width: float, dash: str = "") -> str:
    """SVG ``<polyline>`` elements through the points (pixels), one per run without missing values."""
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return "".join(
        f'<polyline points="{_points(x[i], y[i])}" fill="none" stroke="{colour}" stroke-width="{width}"{dashed}/>'
        for i in index_runs(~np.isnan(y))
    )


def band(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, *, colour: str) -> str:
    """SVG polygons filling between ``lower`` and ``upper`` (pixels) where both are known."""
    return "".join(
        f'<polygon points="{_points(np.r_[x[i], x[i][::-1]], np.r_[upper[i], lower[i][::-1]])}" '
        f'fill="{colour}" fill-opacity="0.18" stroke="none"/>'
        for i in index_runs(~np.isnan(lower) & ~np.isnan(upper))
    )


def dots(x: np.ndarray, y: np.ndarray, statuses: np.ndarray) -> str:
    """A dot per known point (pixels), in the colour of its status, one SVG group per status."""
    groups = []
    for status in dict.fromkeys(statuses):
        here = (statuses == status) & ~np.isnan(y)
        circles = "".join(f'<circle cx="{xi:.0f}" cy="{yi:.0f}" r="2.2"/>' for xi, yi in zip(x[here], y[here]))
        groups.append(f'<g fill="{status_colour(status)}">{circles}</g>')
    return "".join(groups)


def sparkline_svg(values: Sequence[float], *, colour: str, size: tuple[int, int] = SPARK_SIZE) -> str:
    """A sparkline of ``values`` (oldest first) in ``colour``, the last value marked; ``size`` in pixels."""
    width, height = size
    y_values = np.asarray(values, dtype=float)
    known = y_values[~np.isnan(y_values)]
    if known.size == 0:
        return ""
    x = scaled(np.arange(len(y_values)), 0, max(len(y_values) - 1, 1), start=3, end=width - 4)
    y = scaled(y_values, known.min(), known.max(), start=height - 4, end=4)
    last = f'<circle cx="{x[-1]:.1f}" cy="{y[-1]:.1f}" r="2.6" fill="{colour}"/>' if not np.isnan(y[-1]) else ""
    return (f'<svg class="crm-spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-hidden="true">'
            f"{polylines(x, y, colour=colour, width=1.6)}{last}</svg>")


def tile_html(series: pd.DataFrame, *, n_spark: int = 12, currency: str | None = None, locale: str | None = None) -> str:
    """One KPI tile from the rows of one KPI series (any order): its name, latest value (in its unit; money in
    ``currency`` and ``locale``), change on the previous period, "no target" when it has none, and a sparkline
    of the last ``n_spark`` periods, framed in the latest status colour (class ``crm-kpi-tile crm-kpi-<status>``)."""
    series = series.sort_values("period_start").tail(n_spark)
    last = series.iloc[-1]
    colour = status_colour(last.status)
    value = format_value(last.value, last.unit, currency=currency, locale=locale)
    change = f"{last.change_pct:+.1f}%" if pd.notna(last.change_pct) else ""
    no_target = f'<div style="font-size:11px;color:{colour}">{NO_TARGET}</div>' if last.status == NO_TARGET else ""
    status = str(last.status).replace(" ", "-")
    return (
        f'<div class="{TILE_CLASS} crm-kpi-{html.escape(status)}" data-kpi="{html.escape(str(last.kpi_id))}" '
        f'style="display:inline-block;vertical-align:top;width:150px;margin:4px;padding:6px 8px;border:2.5px solid {colour};'
        f'border-radius:6px;{FONT}">'
        f'<div style="font-size:12px;color:#424242;white-space:nowrap;overflow:hidden;text-overflow:ellipsis" title="{html.escape(str(last["name"]))}">'
        f'{html.escape(str(last["name"]))}</div>'
        f'<div style="display:flex;justify-content:space-between;align-items:baseline">'
        f'<span class="crm-kpi-value" style="font-size:18px;font-weight:bold">{html.escape(value)}</span>'
        f'<span style="font-size:11px;color:dimgrey">{change}</span></div>'
        f"{sparkline_svg(series.value.to_numpy(), colour=colour)}{no_target}</div>"
    )


def tiles_html(selection: pd.DataFrame, *, currency: str | None = None, locale: str | None = None) -> str:
    """A tile per KPI of ``selection`` (one series per KPI, ``kpi.select_series``), in catalogue order."""
    return '<div class="crm-kpi-tiles">' + "".join(tile_html(series, currency=currency, locale=locale) for series in per_kpi(selection)) + "</div>"


def per_kpi(selection: pd.DataFrame) -> list[pd.DataFrame]:
    """The rows of each KPI of ``selection``, in the order the KPIs first appear (the catalogue's)."""
    return [series for _, series in selection.groupby("kpi_id", sort=False)]


def unit_label(unit: str, currency: str | None) -> str:
    """The unit as written in a trend's title: the currency code for money, else the unit itself."""
    return money.currency_and_locale(currency, None)[0] if unit == "money" else unit


def _value_range(series: pd.DataFrame) -> tuple[float, float]:
    """The lowest and highest of the values, targets, amber and red lines and usual range of a series, a little padded."""
    columns = ["value", "target", "amber", "red", "lower_limit", "upper_limit"]
    known = series[[c for c in columns if c in series.columns]].to_numpy(dtype=float)
    known = known[~np.isnan(known)]
    low, high = float(known.min()), float(known.max())
    pad = (high - low) * 0.06 or abs(high) * 0.05 or 1.0
    return low - pad, high + pad


def trend_svg(series: pd.DataFrame, *, currency: str | None = None, locale: str | None = None, size: tuple[int, int] = TREND_SIZE) -> str:
    """The trend of one KPI series (``period_start`` order) as an SVG chart of ``size`` pixels: the values (a grey
    line, dots in their status colour, the latest with its period and value as a tooltip), target (green), amber and
    red lines (dashed), the usual range (control limits) shaded, the lowest and highest value and the first and
    last period written on the axes."""
    width, height = size
    left, right, top, bottom = TREND_MARGINS
    low, high = _value_range(series)
    x = scaled(np.arange(len(series)), 0, max(len(series) - 1, 1), start=left + 4, end=width - right - 4)

    def y_of(column: str) -> np.ndarray:
        values = series[column].to_numpy(dtype=float) if column in series.columns else np.full(len(series), np.nan)
        return scaled(values, low, high, start=height - bottom, end=top)

    unit = str(series.unit.iloc[-1])
    parts = [f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" fill="#fafafa" stroke="#e0e0e0"/>']
    parts.append(band(x, y_of("lower_limit"), y_of("upper_limit"), colour=RANGE_FILL))
    for column, colour, dash in LIMIT_STYLES:
        parts.append(polylines(x, y_of(column), colour=status_colour(colour), width=1, dash=dash))
    values = y_of("value")
    parts.append(polylines(x, values, colour=LINE_COLOUR, width=1.3))
    parts.append(dots(x, values, series.status.to_numpy()))
    last = series.iloc[-1]
    tip = f"{last.period_start:%Y-%m-%d}: {format_value(last.value, unit, currency=currency, locale=locale)} ({last.status})"
    parts.append(f'<circle cx="{x[-1]:.1f}" cy="{values[-1]:.1f}" r="3.2" fill="{status_colour(last.status)}"><title>{html.escape(tip)}</title></circle>')
    for value, y in ((high, top + 9), (low, height - bottom - 2)):
        text = format_value(value, unit, currency=currency, locale=locale)
        parts.append(f'<text x="{left - 4}" y="{y:.0f}" text-anchor="end" font-size="9" fill="#616161">{html.escape(text)}</text>')
    for position, anchor, stamp in ((x[0], "start", series.period_start.iloc[0]), (x[-1], "end", series.period_start.iloc[-1])):
        parts.append(f'<text x="{position:.1f}" y="{height - 5}" text-anchor="{anchor}" font-size="9" fill="#616161">{stamp:%Y-%m-%d}</text>')
    label = f"{series['name'].iloc[-1]}: trend of {len(series)} periods against its target"
    return (f'<svg class="crm-trend-chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{html.escape(label)}" style="{FONT}">{"".join(parts)}</svg>')


def trend_html(series: pd.DataFrame, *, currency: str | None = None, locale: str | None = None) -> str:
    """One KPI's titled trend chart (class ``crm-kpi-trend``): its name and unit above ``trend_svg``."""
    series = series.sort_values("period_start")
    title = f"{series['name'].iloc[-1]} ({unit_label(str(series.unit.iloc[-1]), currency)})"
    return (f'<div class="{TREND_CLASS}" style="display:inline-block;vertical-align:top;margin:4px 6px">'
            f'<div style="font-size:12px;{FONT};color:#212121">{html.escape(title)}</div>'
            f"{trend_svg(series, currency=currency, locale=locale)}</div>")


def legend_html() -> str:
    """One line naming the lines and colours of the trend charts."""
    def key(colour: str, text: str, dash: str = "") -> str:
        line = f'<line x1="0" y1="6" x2="18" y2="6" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>'
        return f'<span style="margin-right:12px"><svg width="18" height="12" aria-hidden="true">{line}</svg> {text}</span>'

    keys = [key(status_colour(colour), column, dash) for column, colour, dash in LIMIT_STYLES]
    keys.append(f'<span style="margin-right:12px"><svg width="18" height="12" aria-hidden="true"><rect width="18" height="12" '
                f'fill="{RANGE_FILL}" fill-opacity="0.3"/></svg> usual range</span>')
    keys.append("dots: each period's status")
    return f'<div class="crm-kpi-legend" style="font-size:11px;{FONT};color:#424242;margin:6px 4px">{"".join(keys)}</div>'


def latest_table_html(selection: pd.DataFrame, *, currency: str | None = None, locale: str | None = None) -> str:
    """The latest period of each KPI (``kpi.latest_values``) as a table, values and targets written in their units."""
    latest = latest_values(selection).reset_index(drop=True)

    def change(values: pd.Series) -> list[str]:
        return [f"{v:+.1f}%" if pd.notna(v) else "" for v in values]

    shown = pd.DataFrame({
        "KPI": latest["name"],
        "period": latest["period_start"].dt.strftime("%Y-%m-%d"),
        "value": [format_value(v, u, currency=currency, locale=locale) for v, u in zip(latest["value"], latest["unit"])],
        "target": [format_value(t, u, currency=currency, locale=locale) if pd.notna(t) else "" for t, u in zip(latest["target"], latest["unit"])],
        "status": latest["status"],
        "change": change(latest["change_pct"]),
        "change on a year": change(latest["change_yoy_pct"]),
    })
    currency, locale = money.currency_and_locale(currency, locale)
    return tables.table_html(shown, currency=currency, locale=locale, max_rows=None)


def note_html(text: str) -> str:
    """A one-line note in the board's place (class ``crm-kpi-note``)."""
    return f'<p class="crm-kpi-note" style="{FONT}">{html.escape(text)}</p>'


def board_html(tracked: pd.DataFrame, filters, *, currency: str | None = None, locale: str | None = None) -> str:
    """The KPI board for one filter selection as HTML (class ``crm-kpi-board``): tiles, the latest values and a
    trend per KPI, or a one-line note when the selection is empty or asks for a segment and a channel at once.

    ``tracked``: ``kpi.track``'s table; ``filters``: ``grain``, ``start_date``, ``end_date``, ``segment``,
    ``channel`` (``crm_analytics.widgets.FilterValues``); money in ``currency`` with ``locale``.
    """
    currency, locale = money.currency_and_locale(currency, locale)  # once: the dataset is read when they are not given
    selection, note = board_selection(tracked, filters)
    if note:
        return note_html(note)
    trends = "".join(trend_html(series, currency=currency, locale=locale) for series in per_kpi(selection))
    return (f'<div class="{BOARD_CLASS}">{tiles_html(selection, currency=currency, locale=locale)}'
            f"{latest_table_html(selection, currency=currency, locale=locale)}{legend_html()}"
            f'<div class="crm-kpi-trends">{trends}</div></div>')


def render_board(tracked: pd.DataFrame, filters, *, currency: str | None = None, locale: str | None = None) -> None:
    """Display ``board_html`` for ``filters`` (the ``render`` of ``widgets.show_filtered`` on a page)."""
    from IPython.display import HTML, display

    display(HTML(board_html(tracked, filters, currency=currency, locale=locale)))
