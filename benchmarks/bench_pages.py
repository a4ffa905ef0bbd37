"""Time every stakeholder page from navigation to all numbers and charts visible, in a real browser.

For each page (the audience pages of ``notebooks/pages/`` and the dashboard): ``--loads`` visits (default 10)
in one headless Chromium (Debian's ``/usr/bin/chromium``, installed by ``.ci/browser.sh``), each from
``page.goto`` until every selector of ``READY[page]`` is visible (the freshness banners and what the page shows
once loaded: ``SHOWN`` of ``tests/test_audience_pages.py``); prints p50, p95, min and max per page and whether
it meets the target (``TARGET_P50_S``, ``TARGET_P95_S``). Exits 1 when a page misses it. Beside it, the
time until the page is live: Voilà's scripts have loaded and drawn the widgets, so the filters respond
(the numbers and charts show before that, as HTML: ``crm_analytics.stand_ins``); and, for each page with
filters, the time from choosing a filter option until its chart is redrawn (``--redraws`` changes in one
live visit, the filter and chart of ``FILTERS`` in ``tests/test_audience_pages.py``).

The server is ``crm_analytics.serve`` on a free port of 127.0.0.1. By default it serves a generated project
home with small fixture runs (``tests/test_pages.build_page_home``: the dashboard only); ``--home`` points it at
a project home holding good runs of every analysis. The target is for the 50,000-customer demo:

    make demo                                             # 50,000 customers, every analysis, under outputs/
    python benchmarks/bench_pages.py --home .             # serve this checkout's outputs/

or, keeping the checkout's outputs untouched, in a home of its own:

    export CRM_ANALYTICS_HOME=$(mktemp -d)
    .venv/bin/crm-analytics demo --customers 50000 --jobs 2
    python benchmarks/bench_pages.py --home "$CRM_ANALYTICS_HOME"

Other options: ``--pages executive,customers`` (a subset), ``--warm-kernels N`` (the server's pool of started,
imported kernels; 0 turns it off), ``--pause 5`` (seconds between visits), ``--json out.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_audience_pages import CHANGED, FILTERS, SHOWN  # noqa: E402
from test_audience_pages import READY as BANNER  # noqa: E402

from test_browser import CHROMIUM, CHROMIUM_ARGS, LIVE_JS, free_port, start_server, stop_server, wait_until_serving  # noqa: E402
from test_pages import build_page_home  # noqa: E402

TARGET_P50_S = 2.0
TARGET_P95_S = 3.0

# every selector present = all numbers and charts of the page visible
READY = {
    **{name: (".crm-landing", *shown) if name == "landing" else (BANNER, *shown) for name, shown in SHOWN.items()},
    "dashboard": (".crm-banner", ".crm-chart-trend img", ".crm-chart-segments img", "img.crm-figure, .crm-unavailable"),
}
FIXTURE_PAGES = ("dashboard",)  # the pages the generated fixture home has runs for


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by linear interpolation, as numpy's default."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def time_loads(browser, url: str, selectors: tuple[str, ...], *, loads: int, pause: float, timeout_ms: int) -> tuple[list[float], list[float]]:
    """For ``loads`` visits in one browser context: seconds from navigation until every selector is visible, and
    until the page is live (Voilà's scripts have drawn every output and the widgets replaced their HTML copies)."""
    context = browser.new_context(viewport={"width": 1280, "height": 2200})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")) else route.abort())
    timings, live = [], []
    try:
        for _ in range(loads):
            page = context.new_page()
            start = time.perf_counter()
            page.goto(url, wait_until="commit", timeout=timeout_ms)
            for selector in selectors:
                page.wait_for_selector(selector, timeout=timeout_ms)
            timings.append(time.perf_counter() - start)
            page.wait_for_function(LIVE_JS, timeout=timeout_ms)
            live.append(time.perf_counter() - start)
            page.close(run_before_unload=True)  # Voilà shuts the page's kernel down on unload
            time.sleep(pause)
    finally:
        context.close()
    return timings, live


def time_redraws(browser, url: str, selectors: tuple[str, ...], flt: tuple[str, str, str], *, redraws: int, timeout_ms: int) -> list[float]:
    """For one live visit: seconds from choosing a filter option until the page's chart is redrawn, ``redraws``
    times, alternating between ``flt``'s option and the page's own first choice (``flt``: chart, select, option)."""
    chart, select, option = flt
    context = browser.new_context(viewport={"width": 1280, "height": 2200})
    timings = []
    try:
        page = context.new_page()
        page.goto(url, wait_until="commit", timeout=timeout_ms)
        for selector in selectors:
            page.wait_for_selector(selector, timeout=timeout_ms)
        page.wait_for_function(LIVE_JS, timeout=timeout_ms)
        choices = [option, page.input_value(select)]
        for i in range(redraws):
            before = page.locator(chart).first.evaluate("(chart) => chart.outerHTML")
            start = time.perf_counter()
            page.select_option(select, choices[i % 2])
            page.wait_for_function(CHANGED, arg=[chart, before], timeout=timeout_ms)
            timings.append(time.perf_counter() - start)
        page.close(run_before_unload=True)
    finally:
        context.close()
    return timings


def summary(timings: list[float]) -> dict[str, float | bool]:
    """p50, p95, min and max of ``timings`` (seconds) and whether p50 and p95 meet the target."""
    p50, p95 = statistics.median(timings), percentile(timings, 0.95)
    return {"p50": p50, "p95": p95, "min": min(timings), "max": max(timings), "ok": p50 <= TARGET_P50_S and p95 <= TARGET_P95_S}


def server_options(args: argparse.Namespace) -> list[str]:
    """The ``crm_analytics.serve`` options the benchmark passes on."""
    options = ["--pool-size", str(args.pool_size)]
    if args.warm_kernels is not None:
        options += ["--warm-kernels", str(args.warm_kernels)]
    if args.max_kernels:
        options += ["--max-kernels", str(args.max_kernels)]
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="project home to serve (default: a generated fixture home, dashboard only)")
    parser.add_argument("--pages", help=f"comma-separated pages (default: all of {', '.join(READY)})")
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--warm-kernels", type=int, default=None, help="the server's warm kernels (default: serve's)")
    parser.add_argument("--pool-size", type=int, default=0, help="Voilà's preheated kernels per page (default 0: off, as serve)")
    parser.add_argument("--max-kernels", type=int, default=0, help="the server's kernel cap (default: serve's)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between visits")
    parser.add_argument("--warmup", type=int, default=1, help="visits per page before timing (not counted)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one visit may take")
    parser.add_argument("--redraws", type=int, default=10, help="filter changes timed per page with filters, in one live visit (0: none)")
    parser.add_argument("--json", type=Path, help="also write the timings to this file")
    parser.add_argument("--server-log", type=Path, help="keep the page server's log in this file")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: run .ci/browser.sh", file=sys.stderr)
        return 2
    names = args.pages.split(",") if args.pages else list(READY if args.home else FIXTURE_PAGES)
    unknown = sorted(set(names) - set(READY))
    if unknown:
        parser.error(f"unknown page(s) {unknown}; known: {sorted(READY)}")
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_pages_") as scratch:
        home = args.home.resolve() if args.home else build_page_home(Path(scratch) / "home")
        port = free_port()
        server_log = args.server_log or Path(scratch) / "serve.log"
        server = start_server(home, port, *server_options(args), log=server_log)
        base = f"http://127.0.0.1:{port}"
        results, live, redraws = {}, {}, {}
        try:
            wait_until_serving(base + "/", server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                for name in names:
                    url = f"{base}/voila/render/{name}.ipynb"
                    kwargs = {"pause": args.pause, "timeout_ms": int(args.timeout * 1000)}
                    if args.warmup:
                        time_loads(browser, url, READY[name], loads=args.warmup, **kwargs)
                    results[name], live[name] = time_loads(browser, url, READY[name], loads=args.loads, **kwargs)
                    if args.redraws and name in FILTERS:
                        redraws[name] = time_redraws(browser, url, READY[name], FILTERS[name], redraws=args.redraws, timeout_ms=kwargs["timeout_ms"])
                browser.close()
        except Exception:
            log_tail = server_log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
            print("the page server's last log lines:", *log_tail, sep="\n", file=sys.stderr)
            raise
        finally:
            stop_server(server)

    load_after = os.getloadavg()
    print(
        f"home {home if args.home else 'fixture'}; server options {' '.join(server_options(args))}; pause {args.pause:g} s; "
        f"{args.loads} loads per page (after {args.warmup} warm-up); 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(f"target: p50 <= {TARGET_P50_S:g} s and p95 <= {TARGET_P95_S:g} s")
    print("visible: every number and chart shown; live: Voilà's scripts loaded, the filters usable")
    print(f"redraw: from choosing a filter option until the chart is redrawn ({args.redraws} changes in one live visit)")
    print(f"{'page':<16} {'p50 s':>7} {'p95 s':>7} {'min s':>7} {'max s':>7}  target  {'live p50':>8} {'live p95':>8} {'redraw p50':>10} {'redraw max':>10}")
    summaries = {name: summary(timings) for name, timings in results.items()}
    for name, row in summaries.items():
        verdict = "pass" if row["ok"] else "FAIL"
        live_row = summary(live[name])
        redraw = f"{statistics.median(redraws[name]):>10.2f} {max(redraws[name]):>10.2f}" if name in redraws else f"{'-':>10} {'-':>10}"
        print(
            f"{name:<16} {row['p50']:>7.2f} {row['p95']:>7.2f} {row['min']:>7.2f} {row['max']:>7.2f}  {verdict:<6}  "
            f"{live_row['p50']:>8.2f} {live_row['p95']:>8.2f} {redraw}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "load_average": [load_before, load_after], "timings_s": results, "live_s": live, "redraw_s": redraws, "summary": summaries}
        args.json.write_text(json.dumps(record, indent=2))
    return 0 if all(row["ok"] for row in summaries.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
