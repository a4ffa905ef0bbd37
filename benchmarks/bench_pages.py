"""Time the stakeholder pages from navigation to fully rendered (every chart present), in a real browser.

For each page: ``--loads`` visits (default 10) in one headless Chromium (Debian's ``/usr/bin/chromium``,
installed by ``.ci/browser.sh``), each from ``page.goto`` until every selector of ``READY[page]`` is present;
prints p50, p95, min and max. Target: p50 <= 3 s.

The server is ``crm_analytics.serve`` on a free port of 127.0.0.1. By default it serves a generated project
home holding the persisted runs the pages read (``tests/test_pages.build_page_home``); ``--home`` points it at
an existing project home instead (for instance one where ``crm-analytics run-all`` ran on demo data).

    python benchmarks/bench_pages.py                      # fixture home, a kernel per visit (as serve)
    python benchmarks/bench_pages.py --pool-size 0        # a new kernel per visit, for comparison
    python benchmarks/bench_pages.py --home /path/to/home --pause 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_browser import CHROMIUM, CHROMIUM_ARGS, free_port, start_server, stop_server, wait_until_serving  # noqa: E402
from test_pages import build_page_home  # noqa: E402

READY = {
    "dashboard": [".crm-banner", ".crm-chart-trend img", ".crm-chart-segments img", "img.crm-figure, .crm-unavailable"],
}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by linear interpolation, as numpy's default."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def time_loads(browser, url: str, selectors: list[str], *, loads: int, pause: float, timeout_ms: int) -> list[float]:
    """Seconds from navigation until every selector is present, for ``loads`` visits in one browser context."""
    context = browser.new_context(viewport={"width": 1280, "height": 2200})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")) else route.abort())
    timings = []
    try:
        for _ in range(loads):
            page = context.new_page()
            start = time.perf_counter()
            page.goto(url, wait_until="commit", timeout=timeout_ms)
            for selector in selectors:
                page.wait_for_selector(selector, timeout=timeout_ms)
            timings.append(time.perf_counter() - start)
            page.close(run_before_unload=True)  # Voilà shuts the page's kernel down on unload
            time.sleep(pause)
    finally:
        context.close()
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="project home to serve (default: a generated fixture home)")
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--pool-size", type=int, default=0, help="preheated kernels per page (default 0: none, as serve)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between visits")
    parser.add_argument("--warmup", type=int, default=1, help="visits before timing (not counted)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one visit may take")
    parser.add_argument("--json", type=Path, help="also write the timings to this file")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: run .ci/browser.sh", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench_pages_") as scratch:
        home = args.home or build_page_home(Path(scratch) / "home")
        port = free_port()
        server = start_server(home, port, "--pool-size", str(args.pool_size), log=Path(scratch) / "serve.log")
        base = f"http://127.0.0.1:{port}"
        results = {}
        try:
            wait_until_serving(base + "/", server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                for page_name, selectors in READY.items():
                    url = f"{base}/voila/render/{page_name}.ipynb"
                    kwargs = {"pause": args.pause, "timeout_ms": int(args.timeout * 1000)}
                    if args.warmup:
                        time_loads(browser, url, selectors, loads=args.warmup, **kwargs)
                    results[page_name] = time_loads(browser, url, selectors, loads=args.loads, **kwargs)
                browser.close()
        except Exception:
            log_tail = (Path(scratch) / "serve.log").read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
            print("the page server's last log lines:", *log_tail, sep="\n", file=sys.stderr)
            raise
        finally:
            stop_server(server)

    print(f"pool size {args.pool_size}, pause {args.pause:g} s, {args.loads} loads per page (after {args.warmup} warm-up)")
    print(f"{'page':<12} {'p50 s':>7} {'p95 s':>7} {'min s':>7} {'max s':>7}")
    for page_name, timings in results.items():
        print(
            f"{page_name:<12} {statistics.median(timings):>7.2f} {percentile(timings, 0.95):>7.2f} "
            f"{min(timings):>7.2f} {max(timings):>7.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "timings_s": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
