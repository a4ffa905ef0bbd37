"""The executive page's KPI board as HTML and SVG (``crm_analytics.kpi_board``): what it shows, drawn from the tracked values."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from test_kpi import NOISE, _entry

from crm_analytics import kpi, kpi_board, plots, widgets
from crm_analytics.kpi_catalogue import parse_catalogue, with_targets

ORDERS = {"table": "orders", "time_col": "order_time", "value_col": "order_amount"}


def _catalogue():
    entries = [
        _entry("mean_value", ORDERS, id="aov", name="Average order <value>", unit="money"),
        _entry("mean_value", ORDERS, id="csat", name="CSAT", unit="pct", direction="lower"),
    ]
    return with_targets(parse_catalogue({"kpis": entries}, kpi.COMPUTATIONS), {"aov": (100.0, 90.0, 80.0)})


def _tracked(aov=(*NOISE, 70), csat=(*NOISE, 95)) -> pd.DataFrame:
    """Two monthly KPIs tracked against the catalogue: ``aov`` (money, a target) and ``csat`` (no target)."""
    frames = []
    for kpi_id, values in (("aov", aov), ("csat", csat)):
        starts = pd.date_range("2023-01-01", periods=len(values), freq="MS")
        frames.append(pd.DataFrame({
            "grain": "month", "period_start": starts.astype("datetime64[us]"),
            "period_end": (starts + pd.offsets.MonthBegin(1)).astype("datetime64[us]"),
            "kpi_id": kpi_id, "segment": "all", "channel": "all", "value": np.asarray(values, dtype=float),
        }))
    return kpi.track(pd.concat(frames, ignore_index=True), _catalogue())


def _filters(tracked, **changes) -> widgets.FilterValues:
    return widgets.FilterValues(**{"grain": "month", "start_date": tracked.period_start.min(), "end_date": tracked.period_end.max(), **changes})


def _svgs(text: str) -> list[ET.Element]:
    """Every ``<svg>`` of ``text``, parsed as XML (a malformed one raises)."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", text, flags=re.S)]


def test_scaled_maps_the_range_onto_pixels_and_a_flat_range_to_the_middle():
    assert list(kpi_board.scaled(np.array([0.0, 5.0, 10.0]), 0, 10, start=100, end=0)) == [100, 50, 0]
    assert list(kpi_board.scaled(np.array([3.0, 3.0]), 3, 3, start=10, end=20)) == [15, 15]


def test_index_runs_split_at_missing_values():
    runs = kpi_board.index_runs(np.array([True, True, False, True, False, False, True, True, True]))
    assert [list(r) for r in runs] == [[0, 1], [3], [6, 7, 8]]
    assert kpi_board.index_runs(np.array([False, False])) == []


def test_a_gap_breaks_the_line_and_the_band_covers_only_known_limits():
    x = np.arange(6, dtype=float)
    y = np.array([1, 2, np.nan, 4, 5, 6], dtype=float)
    assert kpi_board.polylines(x, y, colour="#000", width=1).count("<polyline") == 2
    lower = np.array([np.nan, 0, 0, 0, np.nan, np.nan])
    upper = np.array([np.nan, 2, 2, 2, np.nan, np.nan])
    (polygon,) = re.findall(r'<polygon points="([^"]+)"', kpi_board.band(x, lower, upper, colour="#999"))
    assert polygon == "1,2 2,2 3,2 3,0 2,0 1,0"


def test_a_board_has_a_tile_and_a_trend_per_kpi_in_catalogue_order():
    tracked = _tracked()
    board = kpi_board.board_html(tracked, _filters(tracked), currency="GBP", locale="en_GB")
    assert re.findall(r'data-kpi="([^"]+)"', board) == ["aov", "csat"]
    assert board.count('class="crm-kpi-trend"') == 2
    assert len(_svgs(board)) == 2 + 2 + 4  # two sparklines, two trends, four legend keys
    assert "Average order &lt;value&gt;" in board and "<value>" not in board


def test_a_tile_shows_the_latest_value_its_status_change_and_missing_target():
    tracked = _tracked()
    latest = kpi.latest_values(tracked)
    board = kpi_board.board_html(tracked, _filters(tracked), currency="GBP", locale="en_GB")
    aov_tile, csat_tile = re.findall(r'<div class="crm-kpi-tile.*?</svg>.*?</div>', board, flags=re.S)
    assert latest.loc["aov", "status"] == "red" and "crm-kpi-red" in aov_tile and plots.STATUS_COLOURS["red"] in aov_tile
    assert "£70.00" in aov_tile and f"{latest.loc['aov', 'change_pct']:+.1f}%" in aov_tile
    assert "crm-kpi-no-target" in csat_tile and kpi.NO_TARGET in csat_tile and "95.0%" in csat_tile


def test_money_is_written_in_the_datasets_currency():
    tracked = _tracked()
    board = kpi_board.board_html(tracked, _filters(tracked), currency="BRL", locale="pt_BR")
    assert "R$" in board and "£" not in board and "Average order &lt;value&gt; (BRL)" in board


def test_a_trend_draws_each_period_in_its_status_colour_against_the_target_lines():
    tracked = _tracked()
    series = tracked[tracked.kpi_id == "aov"]
    svg = ET.fromstring(kpi_board.trend_svg(series, currency="GBP", locale="en_GB"))
    groups = {g.get("fill"): len(g.findall("circle")) for g in svg.iter("g")}
    expected = series.status.map(kpi_board.status_colour).value_counts().to_dict()
    assert groups == expected  # one dot per period, coloured by its status
    dashes = [line.get("stroke-dasharray") for line in svg.iter("polyline")]
    assert dashes.count("4 3") == 2 and dashes.count(None) == 2  # amber and red dashed; the target and the values solid
    assert len(list(svg.iter("polygon"))) == 1  # the usual range, where the control limits are known
    texts = [t.text for t in svg.iter("text")]
    assert texts[-2:] == ["2023-01-01", f"{series.period_start.max():%Y-%m-%d}"]
    (tip,) = [c.find("title").text for c in svg.iter("circle") if c.find("title") is not None]
    assert tip == f"{series.period_start.max():%Y-%m-%d}: £70.00 (red)"


def test_the_axis_labels_span_every_line_drawn():
    tracked = _tracked()
    series = tracked[tracked.kpi_id == "aov"]
    labels = [t.text for t in ET.fromstring(kpi_board.trend_svg(series, currency="GBP", locale="en_GB")).iter("text")][:2]
    high, low = (float(label.lstrip("£").replace(",", "")) for label in labels)
    assert high > max(series.value.max(), series.upper_limit.max(), 100.0)
    assert low < min(series.value.min(), series.lower_limit.min(), 80.0)


def test_the_latest_values_table_matches_the_tracked_values():
    tracked = _tracked()
    board = kpi_board.board_html(tracked, _filters(tracked), currency="GBP", locale="en_GB")
    rows = [[html.unescape(cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", board.split("<table", 1)[1], flags=re.S)]
    kpis, values, statuses = ([row[i] for row in rows if row] for i in (0, 2, 4))
    assert kpis == ["Average order <value>", "CSAT"]
    assert values == ["£70.00", "95.0%"] and statuses == ["red", kpi.NO_TARGET]


@pytest.mark.parametrize(
    ("changes", "said"),
    [({"segment": "vip", "channel": "web"}, "by segment or by channel"), ({"grain": "week"}, "No KPI values for")],
)
def test_a_selection_without_a_board_says_why(changes, said):
    tracked = _tracked()
    board = kpi_board.board_html(tracked, _filters(tracked, **changes), currency="GBP", locale="en_GB")
    assert 'class="crm-kpi-note"' in board and said in board and "<svg" not in board


def test_a_shorter_period_range_draws_fewer_points():
    tracked = _tracked()
    later = _filters(tracked, start_date=tracked.period_start.min() + pd.DateOffset(months=4))
    series = kpi.select_series(tracked, grain="month", start=later.start_date, end=later.end_date)
    board = kpi_board.board_html(tracked, later, currency="GBP", locale="en_GB")
    trend = ET.fromstring(re.findall(r'<svg class="crm-trend-chart".*?</svg>', board, flags=re.S)[0])
    assert sum(len(g.findall("circle")) for g in trend.iter("g")) == int((series.kpi_id == "aov").sum()) == 7
