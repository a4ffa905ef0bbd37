"""The stakeholder pages in a real browser: Debian's Chromium driven by Playwright against ``crm_analytics.serve``.

The server runs on a free port of 127.0.0.1 over a project home written by ``test_pages.build_page_home``
(persisted runs only: no warehouse, no other analysis needed). Screenshots go to ``tests/artifacts/browser/``.
Chromium comes from the system (``.ci/browser.sh``); Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pandas as pd
import pytest

from crm_analytics import pages, paths, report_pdf

from test_pages import build_page_home, write_run

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = list(report_pdf.HEADLESS_ARGS)
ARTIFACTS = Path(__file__).parent / "artifacts" / "browser"
PAGE_TIMEOUT_MS = 90_000
PAGES = ("dashboard",)
CHART_SELECTORS = (".crm-chart-trend img", ".crm-chart-segments img", ".crm-banner")
SERVER_HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, *, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the page server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    raise TimeoutError(f"the page server did not answer at {url} within {timeout} s")


def start_server(home: Path, port: int, *extra: str, log: Path) -> subprocess.Popen:
    """Start ``python -m crm_analytics.serve`` over ``home`` in its own process group."""
    env = {**os.environ, paths.HOME_ENV: str(home), pages.SCHEDULE_ENV: str(home / "schedule.yaml")}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "crm_analytics.serve", "--port", str(port), *extra],
            cwd=paths.code_root(),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server and the kernels it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def page_home(tmp_path_factory) -> Path:
    return build_page_home(tmp_path_factory.mktemp("page_home"))


@pytest.fixture(scope="module")
def server(page_home, tmp_path_factory):
    port = free_port()
    # the default configuration, a kernel per visit taken from the warm kernels (crm_analytics.warm_kernels): Voilà's
    # preheated pool (--pool-size 1) now and then leaves a page stream waiting forever (benchmarks/README.md), which is
    # why it is not the default
    process = start_server(page_home, port, log=tmp_path_factory.mktemp("serve") / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base + "/", process)
        yield base
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (run .ci/browser.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def is_external(url: str) -> bool:
    """True for a URL that would reach a host other than the page server's (inline ``data:``/``blob:`` do not)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return False
    return parts.hostname != SERVER_HOST


# Voilà's scripts have started (its shell holds the page's cells), drawn every output, and every widget's HTML copy
# (crm_analytics.stand_ins) has been replaced by the live widget; a non-Voilà page (refusal, busy) counts as live
LIVE_JS = (
    "() => !document.querySelector('.crm-standin')"
    " && !document.querySelector('script[type=\"application/vnd.voila.cell-output+json\"]')"
    " && (!document.getElementById('rendered_cells') || document.getElementById('rendered_cells').classList.contains('lm-Widget'))"
)


class Visit:
    """One page visit: the Playwright page, the errors it raised and the external requests it tried.

    Every request of the browser context (pages, frames, workers) and every WebSocket is checked: one to a host
    other than 127.0.0.1 is recorded in ``external`` and aborted, so it never leaves the machine.
    """

    def __init__(self, browser, url: str, ready: tuple[str, ...] = CHART_SELECTORS, *, headers: dict[str, str] | None = None):
        self.errors: list[str] = []
        self.external: list[str] = []
        # headers: sent with every request of the visit, as a reverse proxy in front of the server would
        self.context = browser.new_context(viewport={"width": 1280, "height": 2200}, extra_http_headers=headers or {})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("websocket", lambda socket: self._check(socket.url))
        self.page.goto(url, wait_until="commit", timeout=PAGE_TIMEOUT_MS)
        for selector in ready:
            self.page.wait_for_selector(selector, timeout=PAGE_TIMEOUT_MS)
        self.page.wait_for_function(LIVE_JS, timeout=PAGE_TIMEOUT_MS)  # the widgets have replaced their HTML copies

    def _check(self, url: str) -> bool:
        if is_external(url):
            self.external.append(url)
            return False
        return True

    def _route(self, route) -> None:
        if self._check(route.request.url):
            route.continue_()
        else:
            route.abort()

    def settle(self) -> None:
        """Wait until the network is idle, so that late requests (fonts, lazy styles) are recorded too."""
        self.page.wait_for_load_state("networkidle", timeout=PAGE_TIMEOUT_MS)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.page.close(run_before_unload=True)  # Voilà shuts the page's kernel down on unload
        self.context.close()


@pytest.fixture
def visit(browser):
    opened: list[Visit] = []

    def open_page(url: str, ready: tuple[str, ...] = CHART_SELECTORS, *, headers: dict[str, str] | None = None) -> Visit:
        opened.append(Visit(browser, url, ready, headers=headers))
        return opened[-1]

    yield open_page
    for item in opened:
        item.close()


def page_url(base: str, notebook: str) -> str:
    return f"{base}/voila/render/{notebook}.ipynb"


def code_lines(notebook: str) -> list[str]:
    """Distinctive source lines of a page notebook's code cells (long enough not to occur by chance)."""
    nb = nbformat.read(paths.notebooks_dir() / f"{notebook}.ipynb", as_version=4)
    lines = [line.strip() for cell in nb.cells if cell.cell_type == "code" for line in cell.source.splitlines()]
    return [line for line in lines if len(line) > 25]


# --------------------------------------------------------------------------------------------------


def test_is_external():
    assert not is_external("http://127.0.0.1:8866/voila/static/voila.js")
    assert not is_external("ws://127.0.0.1:8866/api/kernels/abc/channels")
    assert not is_external("data:image/png;base64,AAAA")
    assert is_external("https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/all.min.css")
    assert is_external("http://127.0.0.1.example.com/x.css")
    assert is_external("http://localhost:8866/")  # the pages are served from 127.0.0.1 only


def test_the_page_template_goes_first_on_the_jupyter_path():
    from crm_analytics import serve

    environ = {"JUPYTER_PATH": os.pathsep.join(["/srv/jupyter", str(serve.TEMPLATE_ROOT)])}
    serve.use_page_template(environ)
    serve.use_page_template(environ)
    assert environ["JUPYTER_PATH"].split(os.pathsep) == [str(serve.TEMPLATE_ROOT), "/srv/jupyter"]
    assert f"--template={serve.TEMPLATE}" in serve.voila_argv("root")
    assert "--VoilaConfiguration.allow_template_override=NO" in serve.voila_argv("root")


@pytest.mark.parametrize("notebook", PAGES)
def test_page_loads_with_its_charts_and_no_error(server, visit, notebook):
    page = visit(page_url(server, notebook))
    page.settle()
    page.screenshot(f"{notebook}-loaded")
    text = page.page.inner_text("body")
    assert page.errors == []
    assert "Traceback" not in text and "There was an error when executing cell" not in text
    assert page.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert page.page.locator("img").count() >= 4  # two live charts, two persisted figures
    assert page.page.locator("img.crm-figure").count() == 2  # overview and funnel
    assert page.page.locator(".crm-unavailable").count() == 1  # cohort has not run yet
    assert page.page.locator(".crm-banner-fresh").count() == 3
    assert "Data as of 2025-12-31" in text
    assert page.external == []  # nothing is fetched from another host: no CDN, no fonts, no analytics


# Beyond the pages themselves: the page list, an error page, and a page asking for Voilà's own lab template
# (which links a CDN; the server must not honour the request).
NO_EXTERNAL_VISITS = {
    "dashboard-lab-template-requested": ("/voila/render/dashboard.ipynb?template=lab", CHART_SELECTORS),
    "page-list": ("/", (".crm-landing",)),  # the root opens the landing page
    "missing-page": ("/voila/render/no_such_page.ipynb", ("body",)),
}


@pytest.mark.parametrize("name", list(NO_EXTERNAL_VISITS))
def test_a_page_load_requests_nothing_from_another_host(server, visit, name):
    path, ready = NO_EXTERNAL_VISITS[name]
    page = visit(server + path, ready)
    page.settle()
    page.screenshot(f"no-external-{name}")
    assert page.external == []


CHANGED = """([number, trend, segments]) => {
    const value = document.querySelector('.crm-tiles .crm-tile-value');
    const src = (css) => { const img = document.querySelector(css); return img && img.getAttribute('src'); };
    return value && value.innerText !== number
        && src('.crm-chart-trend img') && src('.crm-chart-trend img') !== trend
        && src('.crm-chart-segments img') && src('.crm-chart-segments img') !== segments;
}"""


def test_a_filter_change_redraws_the_charts_and_changes_a_number(server, visit):
    page = visit(page_url(server, "dashboard"))
    revenue = page.page.locator(".crm-tiles .crm-tile-value").first
    before = [
        revenue.inner_text(),
        page.page.locator(".crm-chart-trend img").first.get_attribute("src"),
        page.page.locator(".crm-chart-segments img").first.get_attribute("src"),
    ]
    page.page.select_option(".crm-filter-channel select", "store")
    page.page.wait_for_function(CHANGED, arg=before, timeout=PAGE_TIMEOUT_MS)
    page.screenshot("dashboard-filtered")
    assert revenue.inner_text().startswith("¥") and revenue.inner_text() != before[0]
    assert page.errors == []


@pytest.mark.parametrize("notebook", PAGES)
def test_no_notebook_source_in_the_page(server, visit, notebook):
    with urllib.request.urlopen(page_url(server, notebook), timeout=60) as response:
        served = response.read().decode("utf-8")
    rendered = visit(page_url(server, notebook)).page.content()
    lines = code_lines(notebook)
    assert lines
    for html in (served, rendered):
        leaked = [line for line in lines if line in html]
        assert leaked == []


@pytest.mark.parametrize("notebook", PAGES)
def test_the_notebook_file_is_refused(server, notebook):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server}/voila/files/{notebook}.ipynb", timeout=30)
    assert refused.value.code == 403
    with urllib.request.urlopen(f"{server}/voila/api/contents/{notebook}.ipynb?content=1", timeout=30) as response:
        assert json.loads(response.read())["content"] is None


def test_outputs_are_not_reachable(server):
    for path in ("/voila/files/outputs/kpi/latest/run.json", "/voila/files/../outputs/kpi/latest/tables/sales_cube.parquet"):
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server + path, timeout=30)


def test_banner_and_last_good_data_when_the_latest_run_failed(server, visit, page_home):
    failed = write_run(page_home, "kpi", "29990101T000000.000Z-ffffff", status="kernel_died", started=pd.Timestamp.now(tz="UTC"))
    try:
        page = visit(page_url(server, "dashboard"))
        page.page.wait_for_selector(".crm-banner-failed[data-analysis='kpi']", timeout=PAGE_TIMEOUT_MS)
        page.screenshot("dashboard-failed")
        assert "kernel_died" in page.page.inner_text(".crm-banner-failed")
        assert page.page.locator(".crm-chart-trend img").count() == 1  # the last good data is still shown
        assert page.errors == []
    finally:
        shutil.rmtree(failed)


def test_banner_when_the_latest_run_is_older_than_the_schedule_implies(server, visit, page_home):
    record_path = page_home / "outputs" / paths.default_dataset() / "kpi" / "latest" / "run.json"
    original = record_path.read_text(encoding="utf-8")
    record = json.loads(original)
    three_days_ago = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=3)
    record["started_at"], record["ended_at"] = three_days_ago.isoformat(), (three_days_ago + pd.Timedelta(minutes=2)).isoformat()
    record_path.write_text(json.dumps(record), encoding="utf-8")
    try:
        page = visit(page_url(server, "dashboard"))
        page.page.wait_for_selector(".crm-banner-stale[data-analysis='kpi']", timeout=PAGE_TIMEOUT_MS)
        page.screenshot("dashboard-stale")
        assert "out of date" in page.page.inner_text(".crm-banner-stale")
        assert page.page.locator(".crm-chart-trend img").count() == 1
    finally:
        record_path.write_text(original, encoding="utf-8")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_a_token_is_required_when_given(page_home, tmp_path):
    port = free_port()
    process = start_server(page_home, port, "--pool-size", "0", "--token", "s3cret-page-token", log=tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        wait_until_serving(f"{base}/?token=s3cret-page-token", process)
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(page_url(base, "dashboard"), timeout=30)
        assert refused.value.code == 302 and "/login" in refused.value.headers["Location"]
        with opener.open(f"{base}/?token=s3cret-page-token", timeout=30) as response:
            assert response.status == 200 and "voila-tree-main" in response.read().decode("utf-8")
    finally:
        stop_server(process)
