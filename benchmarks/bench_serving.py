"""Memory and kernels of the page server under 50 visits within one minute.

Starts ``crm_analytics.serve`` on a free port of 127.0.0.1 over a generated project home
(``tests/test_pages.build_page_home``) or ``--home``, then makes ``--visits`` visits (default 50) evenly spread
over ``--seconds`` (default 60): every ``--browser-every``-th visit (default 5th) is a page load in headless
Chromium (Debian's ``/usr/bin/chromium``) until every chart is drawn, then the tab is closed; the others are
plain GETs (``urllib``, like ``curl``: no script, no websocket). Every 0.25 s it samples the kernel processes
below the server and the resident memory of the server and its descendants (RSS summed, so pages shared
between processes count more than once: an upper bound). It then waits until every visit's kernel is released
(the server's warm kernels, ``serve.WARM_KERNELS``, stay: they are part of its memory at rest).

Prints the answers by status (200, or 503 "busy" beyond the cap), the peak kernel count, the server's memory
at rest and at its peak, the bound ``server at rest + cap x serve.PAGE_KERNEL_BYTES``, and how long the last
kernels took to go after the last visit.

    python benchmarks/bench_serving.py
    python benchmarks/bench_serving.py --max-kernels 4 --visits 50 --seconds 60
"""

from __future__ import annotations

import argparse
import collections
import queue
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from crm_analytics import serve  # noqa: E402

from test_browser import CHART_SELECTORS, CHROMIUM, CHROMIUM_ARGS, LIVE_JS, free_port, start_server, stop_server, wait_until_serving  # noqa: E402
from test_pages import build_page_home  # noqa: E402

MIB = 2**20


def tree_usage(server_pid: int) -> tuple[int, int]:
    """Kernel processes below the server and the summed RSS (bytes) of the server and all its descendants."""
    try:
        server = psutil.Process(server_pid)
        processes = [server, *server.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    kernels, rss = 0, 0
    for process in processes:
        try:
            rss += process.memory_info().rss
            kernels += any("ipykernel" in part for part in process.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return kernels, rss


class Sampler(threading.Thread):
    """Record the peak kernel count and peak summed RSS every ``interval`` seconds until stopped."""

    def __init__(self, server_pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.server_pid, self.interval = server_pid, interval
        self.peak_kernels, self.peak_rss = 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            kernels, rss = tree_usage(self.server_pid)
            self.peak_kernels, self.peak_rss = max(self.peak_kernels, kernels), max(self.peak_rss, rss)
            time.sleep(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)


def plain_get(url: str, answers: collections.Counter) -> None:
    """One visit without a browser: the page is rendered, its websocket never opened."""
    try:
        with urllib.request.urlopen(url, timeout=180) as response:
            response.read()
            answers[f"GET {response.status}"] += 1
    except urllib.error.HTTPError as error:
        answers[f"GET {error.code}"] += 1
    except OSError as error:
        answers[f"GET {type(error).__name__}"] += 1


def browser_load(browser, url: str, answers: collections.Counter) -> None:
    """One visit in Chromium: load until every chart is drawn (or the busy page shows), then close the tab."""
    context = browser.new_context(viewport={"width": 1280, "height": 2200})
    try:
        page = context.new_page()
        response = page.goto(url, wait_until="commit", timeout=180_000)
        if response is not None and response.status == 503:
            answers["browser 503"] += 1
            return
        for selector in CHART_SELECTORS:
            page.wait_for_selector(selector, timeout=180_000)
        page.wait_for_function(LIVE_JS, timeout=180_000)  # a visitor who stays until the filters work
        answers["browser 200"] += 1
        page.close(run_before_unload=True)
    except Exception as error:  # a visit that fails is counted, not fatal to the measurement
        answers[f"browser {type(error).__name__}"] += 1
    finally:
        context.close()


class BrowserVisitor(threading.Thread):
    """Chromium in its own thread (Playwright's sync API stays in the thread that started it): loads the
    URLs put on ``queue`` one after another until ``None``, so browser loads never delay the GETs."""

    def __init__(self, answers: collections.Counter):
        super().__init__(daemon=True)
        self.answers, self.queue = answers, queue.Queue()

    def run(self) -> None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            while (url := self.queue.get()) is not None:
                browser_load(browser, url, self.answers)
            browser.close()


def run_visits(base: str, *, visits: int, seconds: float, browser_every: int) -> collections.Counter:
    """Make ``visits`` visits evenly spread over ``seconds``: every ``browser_every``-th (0: none) in Chromium,
    the others plain GETs, each in its own thread."""
    url = f"{base}/voila/render/dashboard.ipynb"
    answers: collections.Counter = collections.Counter()
    visitor = BrowserVisitor(answers) if browser_every else None
    if visitor is not None:
        visitor.start()
    start = time.monotonic()
    threads = []
    for index in range(visits):
        time.sleep(max(0.0, start + index * seconds / visits - time.monotonic()))
        if visitor is not None and index % browser_every == browser_every - 1:
            visitor.queue.put(url)
        else:
            thread = threading.Thread(target=plain_get, args=(url, answers))
            thread.start()
            threads.append(thread)
    answers["_sent_s"] = round(time.monotonic() - start)
    if visitor is not None:
        visitor.queue.put(None)
        threads.append(visitor)
    for thread in threads:
        thread.join(timeout=300)
    return answers


def wait_released(server_pid: int, timeout: float, *, kept: int = serve.WARM_KERNELS) -> float | None:
    """Seconds until the server holds no kernel but the ``kept`` warm ones, or ``None`` after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if tree_usage(server_pid)[0] <= kept:
            return time.monotonic() - start
        time.sleep(1)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="project home to serve (default: a generated fixture home)")
    parser.add_argument("--visits", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0, help="spread the visits over this many seconds")
    parser.add_argument("--browser-every", type=int, default=5, help="every n-th visit is a browser load (0: none)")
    parser.add_argument("--max-kernels", type=int, default=0, help="the server's cap (default: from memory)")
    args = parser.parse_args(argv)
    cap = args.max_kernels or serve.default_max_kernels()
    use_browser = args.browser_every > 0 and CHROMIUM.exists()
    if args.browser_every > 0 and not use_browser:
        print(f"{CHROMIUM} not found (run .ci/browser.sh): plain GETs only", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="bench_serving_") as scratch:
        home = args.home or build_page_home(Path(scratch) / "home")
        port = free_port()
        server = start_server(home, port, "--max-kernels", str(cap), log=Path(scratch) / "serve.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(base + "/", server)
            _, rest_rss = tree_usage(server.pid)
            sampler = Sampler(server.pid)
            sampler.start()
            answers = run_visits(base, visits=args.visits, seconds=args.seconds, browser_every=args.browser_every if use_browser else 0)
            released = wait_released(server.pid, timeout=180)
            sampler.stop()
        finally:
            stop_server(server)

    bound = rest_rss + cap * serve.PAGE_KERNEL_BYTES
    sent = answers.pop("_sent_s")
    print(f"{args.visits} visits sent within {sent} s (every {args.browser_every or '-'}th in Chromium), cap {cap} kernels")
    print("answers: " + ", ".join(f"{key} x{count}" for key, count in sorted(answers.items())))
    print(f"peak kernels: {sampler.peak_kernels}")
    print(f"server at rest: {rest_rss / MIB:,.0f} MiB; peak server + kernels (summed RSS): {sampler.peak_rss / MIB:,.0f} MiB")
    print(f"bound (rest + cap x {serve.PAGE_KERNEL_BYTES // MIB} MiB): {bound / MIB:,.0f} MiB -> {'within' if sampler.peak_rss <= bound else 'EXCEEDED'}")
    released_what = f"all visits' kernels released (the {serve.WARM_KERNELS} warm one(s) kept)"
    print(released_what + " " + (f"{released:.0f} s after the last visit ended" if released is not None else "NOT within 180 s"))
    return 0 if sampler.peak_rss <= bound and released is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
