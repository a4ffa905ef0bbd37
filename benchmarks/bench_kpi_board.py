"""The executive page's KPI board redrawn for a filter change: matplotlib figures against HTML with inline SVG.

For each selection (period grain month, quarter and week; then the first segment at month), the board of the
latest kpi run's ``kpi_values`` is drawn ``--repeats`` times, one way after the other, in this process:

- ``matplotlib``: ``kpi.render_dashboard`` as a page drew it before (tiles and a trend per KPI as two matplotlib
  figures, each saved as a PNG for an image widget: ``plots.figures_as_widgets``), its display captured;
- ``html``: ``kpi_board.board_html``, the board the page draws now (the same tiles, latest values and trends).

Prints the median seconds of each and their ratio per selection. Only the kernel's work is timed; the
browser's share of a redraw (the widget update reaching the page and being laid out) is timed end to end by
``bench_pages.py`` (``redraw`` columns)::

    python benchmarks/bench_kpi_board.py --home <a project home with a kpi run>
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path


def timed(draw, repeats: int) -> float:
    """The median seconds of ``repeats`` calls of ``draw()``."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        draw()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="project home whose latest kpi run is drawn")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import os

    os.environ["CRM_ANALYTICS_HOME"] = str(args.home.resolve())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from IPython.utils.capture import capture_output

    from crm_analytics import datasets, kpi, kpi_board, plots, results, widgets

    tracked = results.load_latest_table("kpi", "kpi_values")
    ds = datasets.load_dataset(None)
    base = widgets.FilterValues(grain="month", start_date=tracked.period_start.min(), end_date=tracked.period_end.max())
    segment = next(s for s in tracked.segment.unique() if s != kpi.ALL)
    selections = {f"grain {g}": dataclasses.replace(base, grain=g) for g in ("month", "quarter", "week") if g in set(tracked.grain)}
    selections[f"segment {segment}"] = dataclasses.replace(base, segment=segment)

    def with_matplotlib(filters) -> None:
        with capture_output(), plots.figures_as_widgets():
            kpi.render_dashboard(tracked, filters, currency=ds.currency, locale=ds.locale)
        plt.close("all")

    def with_html(filters) -> None:
        kpi_board.board_html(tracked, filters, currency=ds.currency, locale=ds.locale)

    print(f"home {args.home}; {tracked.kpi_id.nunique()} KPIs; median of {args.repeats} draws each; 1-min load {os.getloadavg()[0]:.2f}")
    print(f"{'selection':<28} {'matplotlib s':>12} {'html s':>8} {'matplotlib / html':>18}")
    for name, filters in selections.items():
        with_html(filters)  # imports and caches out of the timing
        old = timed(lambda: with_matplotlib(filters), args.repeats)
        new = timed(lambda: with_html(filters), args.repeats)
        print(f"{name:<28} {old:>12.3f} {new:>8.3f} {old / new:>17.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
