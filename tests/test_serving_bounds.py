"""Bounded serving: page kernels are released once nobody looks at them, capped, and the token stays off ``ps``.

Each server is ``crm_analytics.serve`` (or ``crm-analytics serve``) on a free port of 127.0.0.1 over a project
home written by ``test_pages.build_page_home``. Kernels are counted as the ``ipykernel`` processes below the
server process (Voilà does not expose ``/api/kernels``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from crm_analytics import pages, paths, serve

import test_browser
from test_browser import CHART_SELECTORS, Visit, free_port, page_url, start_server, stop_server, wait_until_serving
from test_pages import build_page_home

browser = test_browser.browser  # the shared headless Chromium fixture

RELEASE_DEADLINE_S = 60  # the promise: a kernel nobody looks at is gone within a minute
SECRET = "7c1f-page-token-e2b9"


def page_kernels(server_pid: int) -> list[psutil.Process]:
    """The kernel processes started by the server ``server_pid`` (its ``ipykernel`` descendants)."""
    try:
        children = psutil.Process(server_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if any("ipykernel" in part for part in child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def wait_until_released(server_pid: int, deadline_s: float = RELEASE_DEADLINE_S) -> float:
    """Poll until the server has no kernel left; return the seconds it took, or fail after ``deadline_s``."""
    start = time.monotonic()
    while page_kernels(server_pid):
        if time.monotonic() - start > deadline_s:
            pytest.fail(f"{len(page_kernels(server_pid))} page kernel(s) still running {deadline_s} s after the visitors left")
        time.sleep(1)
    return time.monotonic() - start


def get_page(url: str, timeout: float = 120) -> tuple[int, dict, str]:
    """GET ``url`` like ``curl`` (no websocket, no script): status, headers and body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode("utf-8")


@pytest.fixture(scope="module")
def page_home(tmp_path_factory) -> Path:
    return build_page_home(tmp_path_factory.mktemp("page_home"))


def running_server(home: Path, log_dir: Path, *extra: str):
    port = free_port()
    process = start_server(home, port, *extra, log=log_dir / "serve.log")
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base + "/", process)
    return process, base


@pytest.fixture(scope="module")
def capped_server(page_home, tmp_path_factory):
    """A server allowed two page kernels, none kept warm: every kernel is a visit's (warm kernels, which are
    never released as unattended, are tested with the cap in test_warm_kernels)."""
    process, base = running_server(page_home, tmp_path_factory.mktemp("capped"), "--max-kernels", "2", "--warm-kernels", "0")
    try:
        yield process, base
    finally:
        stop_server(process)


# --------------------------------------------------------------------------------------------------
# settings


def test_the_token_comes_from_the_argument_then_the_file_then_the_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(f"{SECRET}\n", encoding="utf-8")
    environ = {serve.TOKEN_ENV: "from-env", serve.LEGACY_TOKEN_ENV: "legacy"}
    assert serve.resolve_token("given", token_file, environ) == "given"
    assert serve.resolve_token(None, token_file, environ) == SECRET
    assert serve.resolve_token(None, None, environ) == "from-env"
    assert serve.resolve_token(None, None, {serve.LEGACY_TOKEN_ENV: "legacy"}) == "legacy"
    assert serve.resolve_token(None, None, {}) is None
    token_file.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        serve.resolve_token(None, token_file, {})
    with pytest.raises(FileNotFoundError, match="missing"):
        serve.resolve_token(None, tmp_path / "missing", {})


def test_the_default_cap_follows_the_machine_memory():
    gib = 2**30
    assert serve.default_max_kernels(1 * gib) == 1
    assert serve.default_max_kernels(4 * gib) == 4
    assert serve.default_max_kernels(64 * gib) == serve.MAX_KERNELS_CEILING
    assert 1 <= serve.default_max_kernels() <= serve.MAX_KERNELS_CEILING


def test_the_server_uses_the_bounded_kernel_manager():
    argv = serve.voila_argv("root", max_kernels=3, unattended_timeout=20)
    assert "--VoilaConfiguration.multi_kernel_manager_class=crm_analytics.serve.PageKernelManager" in argv
    assert "--PageKernelManager.max_kernels=3" in argv and "--PageKernelManager.unattended_timeout=20" in argv
    assert f"--MappingKernelManager.cull_interval={serve.CULL_INTERVAL}" in argv
    assert not any("token" in arg for arg in argv)


def test_a_page_still_rendering_is_never_unattended():
    """Between its cells a rendering page's kernel is idle with no browser: only a finished page may be released."""
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    manager = serve.PageKernelManager(unattended_timeout=30)
    long_ago = datetime.now(timezone.utc) - timedelta(seconds=120)
    manager._kernels["k1"] = SimpleNamespace(execution_state="idle", last_activity=long_ago)  # as jupyter's kernel holds them
    admission = serve._Admission()
    admission.kernel_id = "k1"
    manager._rendering.add("k1")
    assert not manager.is_unattended("k1")
    manager.rendered(admission)
    assert manager.is_unattended("k1")
    manager._kernel_connections["k1"] = 1  # a browser has the page open
    assert not manager.is_unattended("k1")


def test_a_kernel_shutting_down_no_longer_counts_against_the_cap(monkeypatch):
    """Between the kernel process exiting and Jupyter forgetting the kernel, a visit must not be turned away."""
    import asyncio

    manager = serve.PageKernelManager(max_kernels=1, warm_kernels=0)
    manager._kernels["k1"] = object()
    seen_during_shutdown: list[int] = []

    async def parent_shutdown(self, kernel_id, *args, **kwargs):
        seen_during_shutdown.append(self.page_kernel_count())
        assert self.admit() is not None  # the slot is free while the shutdown finishes
        del self._kernels[kernel_id]

    monkeypatch.setattr(serve.AsyncMappingKernelManager, "shutdown_kernel", parent_shutdown)
    assert manager.admit() is None
    asyncio.run(manager.shutdown_kernel("k1"))
    assert seen_during_shutdown == [0] and manager.page_kernel_count() == 1  # the admitted visit's promise


# --------------------------------------------------------------------------------------------------
# release and cap


def test_plain_gets_release_their_kernels_within_a_minute(capped_server):
    process, base = capped_server
    wait_until_released(process.pid)
    for _ in range(2):
        status, _, body = get_page(page_url(base, "dashboard"))
        assert status == 200 and "crm-banner" in body
    assert len(page_kernels(process.pid)) == 2  # rendered, never connected: held until released
    wait_until_released(process.pid)
    status, _, _ = get_page(page_url(base, "dashboard"))  # the released slots are free again
    assert status == 200


class KernelSampler(threading.Thread):
    """Count the server's kernels every 0.2 s until stopped; ``peak`` is the largest count seen."""

    def __init__(self, server_pid: int):
        super().__init__(daemon=True)
        self.server_pid, self.peak, self.done = server_pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, len(page_kernels(self.server_pid)))
            time.sleep(0.2)

    def stop(self) -> int:
        self.done.set()
        self.join(timeout=10)
        self.peak = max(self.peak, len(page_kernels(self.server_pid)))
        return self.peak


def test_beyond_the_cap_a_visitor_gets_the_busy_page_and_no_kernel(capped_server):
    process, base = capped_server
    wait_until_released(process.pid)
    sampler = KernelSampler(process.pid)
    sampler.start()
    answers: list[tuple[int, dict, str]] = []
    visits = [threading.Thread(target=lambda: answers.append(get_page(page_url(base, "dashboard")))) for _ in range(3)]
    for visit in visits:
        visit.start()
    for visit in visits:
        visit.join(timeout=180)
    busy = [answer for answer in answers if answer[0] == 503]
    assert sorted(status for status, _, _ in answers) == [200, 200, 503]
    assert busy[0][1]["Retry-After"] == str(serve.BUSY_RETRY_AFTER)
    assert "Busy: retry in a moment" in busy[0][2] and "://" not in busy[0][2]  # links no other host
    assert get_page(page_url(base, "dashboard"))[0] == 503  # the two kernels are still held
    assert get_page(base + "/")[0] == 200  # the page list starts no kernel and stays reachable
    assert sampler.stop() <= 2
    wait_until_released(process.pid)


@pytest.mark.browser
def test_an_open_page_keeps_its_kernel_and_a_closed_tab_releases_it(capped_server, browser):
    process, base = capped_server
    wait_until_released(process.pid)
    visit = Visit(browser, page_url(base, "dashboard"), CHART_SELECTORS)
    try:
        time.sleep(serve.UNATTENDED_TIMEOUT + 2 * serve.CULL_INTERVAL)  # longer than an unwatched kernel is kept
        assert len(page_kernels(process.pid)) == 1
        before = visit.page.locator(".crm-tiles .crm-tile-value").first.inner_text()
        visit.page.select_option(".crm-filter-channel select", "store")  # the kernel still answers
        visit.page.wait_for_function(
            "(before) => document.querySelector('.crm-tiles .crm-tile-value').innerText !== before", arg=before
        )
    finally:
        visit.page.close(run_before_unload=False)  # a tab killed without Voilà's unload beacon
        visit.context.close()
    wait_until_released(process.pid)


# --------------------------------------------------------------------------------------------------
# the token


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")


def environment(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode("utf-8", "replace")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def assert_token_guards_the_pages(base: str) -> None:
    """A request without the token is sent to the login page; with it, the page renders."""
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(page_url(base, "dashboard"), timeout=30)
    assert refused.value.code == 302 and "/login" in refused.value.headers["Location"]
    status, _, body = get_page(page_url(base, "dashboard") + f"?token={SECRET}")
    assert status == 200 and "crm-banner" in body


def test_a_token_from_the_environment_is_off_the_command_line_and_out_of_the_kernels(page_home, tmp_path, monkeypatch):
    monkeypatch.setenv(serve.TOKEN_ENV, SECRET)
    process, base = running_server(page_home, tmp_path)
    try:
        assert SECRET not in command_line(process.pid)
        assert_token_guards_the_pages(base)
        kernels = page_kernels(process.pid)
        # Voilà hands the visit's query string (here ?token=...) to its kernel; the server's variable is not passed on
        assert kernels and all(f"{serve.TOKEN_ENV}=" not in environment(k.pid) for k in kernels)
        assert all(SECRET not in command_line(k.pid) for k in kernels)
    finally:
        stop_server(process)


def test_crm_analytics_serve_reads_the_token_from_a_file(page_home, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    port = free_port()
    executable = shutil.which("crm-analytics", path=str(Path(sys.executable).parent))
    assert executable
    env = {**os.environ, paths.HOME_ENV: str(page_home), pages.SCHEDULE_ENV: str(page_home / "schedule.yaml")}
    env.pop(serve.TOKEN_ENV, None)
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [executable, "serve", "--port", str(port), "--token-file", str(token_file)],
            cwd=paths.code_root(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{base}/?token={SECRET}", process)
        assert SECRET not in command_line(process.pid)
        assert_token_guards_the_pages(base)
    finally:
        stop_server(process)
