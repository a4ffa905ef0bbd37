"""Warm page kernels (``crm_analytics.warm_kernels``, ``serve.PageKernelManager.warm_kernels``).

The server tests run ``crm_analytics.serve`` on a free port over a probe notebook that shows, as text, the id of
the kernel it runs in, whether the page modules were imported before its first cell, the visit's query string
(an environment variable Voilà sets per visit) and the kernel's working folder. Kernels are the server's
``ipykernel`` processes; a kernel's id is in its connection file's name on its command line.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import nbformat
import pytest
from test_serving_bounds import KernelSampler, get_page, page_kernels

from crm_analytics import serve, warm_kernels

from test_browser import free_port, start_server, stop_server, wait_until_serving
from test_pages import build_page_home

PROBE = "warm_probe"
PROBE_SOURCE = """\
import os, sys
from IPython.display import HTML, display
warmed = "crm_analytics.audience_pages" in sys.modules  # before this page imported anything of the package
from ipykernel.kernelapp import IPKernelApp
kernel_id = os.path.basename(IPKernelApp.instance().connection_file)[len("kernel-"):-len(".json")]
display(HTML(f"<p>probe kernel={kernel_id} warmed={warmed} query={os.environ.get('QUERY_STRING', '')} cwd={os.getcwd()}</p>"))
"""
# the page carries outputs as JSON, where "<" is written \u003c
PROBE_LINE = re.compile(r"probe kernel=(?P<kernel>[0-9a-f-]+) warmed=(?P<warmed>True|False) query=(?P<query>\S*) cwd=(?P<cwd>[^\s\\<]+)")
CAP = 2


# --------------------------------------------------------------------------------------------------
# handing a warm kernel to a visit: the environment it needs


def test_environment_changes_name_what_to_set_and_what_to_remove():
    to_set, to_remove = warm_kernels.environment_changes({"A": "1", "B": "2", "GONE": "x"}, {"A": "1", "B": "3", "NEW": "4"})
    assert to_set == {"B": "3", "NEW": "4"}
    assert to_remove == ["GONE"]


def test_the_handover_code_sets_the_environment_and_folder_as_literals(tmp_path, monkeypatch):
    hostile = "x'); import shutil; shutil.rmtree('/'); ('"
    monkeypatch.setenv("CRM_TEST_VIEWER", "before")
    monkeypatch.setenv("CRM_TEST_GONE", "set")
    monkeypatch.chdir(Path.cwd())  # restored after the test
    code = warm_kernels.handover_code({"CRM_TEST_VIEWER": hostile}, ["CRM_TEST_GONE"], str(tmp_path))
    exec(compile(code, "<handover>", "exec"), {})
    assert os.environ["CRM_TEST_VIEWER"] == hostile
    assert "CRM_TEST_GONE" not in os.environ
    assert Path.cwd() == tmp_path


def test_names_of_a_str_enum_become_plain_string_literals():
    from voila.utils import ENV_VARIABLE  # Voilà names the variables it gives a page kernel with a str enum

    code = warm_kernels.handover_code({ENV_VARIABLE.QUERY_STRING: "a=1"})
    assert "os.environ.update({'QUERY_STRING': 'a=1'})" in code
    compile(code, "<handover>", "exec")


@pytest.mark.parametrize("environment", [{"BAD NAME": "x"}, {"1ST": "x"}, {"OK": "nul\0byte"}, {"OK": 3}])
def test_the_handover_code_refuses_what_an_environment_cannot_hold(environment):
    with pytest.raises(ValueError, match="environment variable"):
        warm_kernels.handover_code(environment)


def test_warm_kernels_count_against_the_cap_but_a_visit_may_take_one():
    manager = serve.PageKernelManager(max_kernels=2, warm_kernels=1)
    manager._kernels["visit"] = object()
    warm = warm_kernels.WarmKernel(environment={}, cwd="/", kernel_id="warm")
    manager.warm._kernels.append(warm)
    manager._kernels["warm"] = object()
    assert manager.page_kernel_count() == 2
    assert not manager.warm._has_room()  # no further warm kernel
    admission = manager.admit()  # the visit may take the warm kernel
    assert admission is not None
    assert manager.admit() is None  # a second visit would be a third kernel


def test_a_warm_kernel_is_never_released_as_unattended():
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    manager = serve.PageKernelManager(unattended_timeout=30, warm_kernels=1)
    long_ago = datetime.now(timezone.utc) - timedelta(seconds=120)
    manager._kernels["warm"] = SimpleNamespace(execution_state="idle", last_activity=long_ago)
    manager.warm._kernels.append(warm_kernels.WarmKernel(environment={}, cwd="/", kernel_id="warm"))
    assert not manager.is_unattended("warm")
    manager.warm.take()  # handed to a visit whose page has rendered: now it may be released
    assert manager.is_unattended("warm")


def test_the_server_passes_the_number_of_warm_kernels():
    assert f"--PageKernelManager.warm_kernels={serve.WARM_KERNELS}" in serve.voila_argv("root")
    assert "--PageKernelManager.warm_kernels=0" in serve.voila_argv("root", warm_kernels=0)


# --------------------------------------------------------------------------------------------------
# a real server


@pytest.fixture(scope="module")
def probe_home(tmp_path_factory) -> Path:
    home = build_page_home(tmp_path_factory.mktemp("warm_home"))
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(PROBE_SOURCE)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, home / f"{PROBE}.ipynb")
    return home


def probe_server(home: Path, log_dir: Path, warm: int):
    port = free_port()
    process = start_server(
        home, port, "--warm-kernels", str(warm), "--max-kernels", str(CAP), str(home / f"{PROBE}.ipynb"), log=log_dir / "serve.log"
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base + "/", process)
    return process, f"{base}/voila/render/{PROBE}.ipynb"


def kernel_ids(server_pid: int) -> dict[str, float]:
    """The server's kernels: id -> process start time (seconds since the epoch)."""
    found = {}
    for process in page_kernels(server_pid):
        try:
            match = re.search(r"kernel-([0-9a-f-]+)\.json", " ".join(process.cmdline()))
            if match:
                found[match.group(1)] = process.create_time()
        except Exception:  # the process ended meanwhile
            continue
    return found


def wait_for_kernels(server_pid: int, condition, *, timeout: float = 90) -> dict[str, float]:
    """Poll the server's kernels until ``condition(kernels)`` holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kernels = kernel_ids(server_pid)
        if condition(kernels):
            return kernels
        time.sleep(0.5)
    pytest.fail(f"the server's kernels never met the condition; they are {sorted(kernel_ids(server_pid))}")


def visit(url: str) -> dict[str, str]:
    """GET the probe page like ``curl``; what it says about its kernel."""
    status, _, body = get_page(url)
    assert status == 200, body[-500:]
    found = PROBE_LINE.search(body)
    assert found, body[-2000:]
    return found.groupdict()


@pytest.fixture(scope="module")
def warm_server(probe_home, tmp_path_factory):
    process, url = probe_server(probe_home, tmp_path_factory.mktemp("warm"), warm=1)
    try:
        yield process, url
    finally:
        stop_server(process)


def test_a_visit_is_served_by_a_kernel_warmed_before_it_and_the_pool_refills(warm_server):
    process, url = warm_server
    before = wait_for_kernels(process.pid, lambda kernels: len(kernels) == 1)
    (warm_id, started), = before.items()
    asked_at = time.time()
    shown = visit(url + "?viewer=first")
    assert shown["kernel"] == warm_id and started < asked_at
    assert shown["warmed"] == "True"  # the page modules were imported before the page ran
    assert shown["query"] == "viewer=first"  # the visit's own environment reached the warm kernel
    assert Path(shown["cwd"]).name.startswith("crm_pages_")  # the served folder, as for a kernel started per visit
    # the pool refills: a second kernel, started after the visit took the first
    after = wait_for_kernels(process.pid, lambda kernels: len(kernels) == 2)
    (refill_id,) = set(after) - {warm_id}
    assert after[refill_id] >= asked_at - 1
    # the cap counts the warm kernel: the next visit takes it and no third kernel starts
    sampler = KernelSampler(process.pid)
    sampler.start()
    second = visit(url + "?viewer=second")
    assert second["kernel"] == refill_id and second["warmed"] == "True" and second["query"] == "viewer=second"
    time.sleep(serve.CULL_INTERVAL)
    assert sampler.stop() <= CAP
    assert get_page(url)[0] == 503  # two visits hold both kernels
    # the visits' kernels are released as unattended; the pool refills and its kernel is kept
    remaining = wait_for_kernels(
        process.pid, lambda kernels: len(kernels) == 1 and not set(kernels) & {warm_id, refill_id}, timeout=serve.UNATTENDED_TIMEOUT + 60
    )
    time.sleep(serve.UNATTENDED_TIMEOUT + 2 * serve.CULL_INTERVAL)
    assert kernel_ids(process.pid).keys() == remaining.keys()


def test_visits_at_once_share_the_warm_kernel_and_stay_under_the_cap(warm_server):
    process, url = warm_server
    (warm_id,) = wait_for_kernels(process.pid, lambda kernels: len(kernels) == 1)
    shown: list[dict] = []
    answers: list[int] = []

    def one_visit() -> None:
        status, _, body = get_page(url)
        answers.append(status)
        found = PROBE_LINE.search(body)
        if found:
            shown.append(found.groupdict())

    visits = [threading.Thread(target=one_visit) for _ in range(3)]
    for thread in visits:
        thread.start()
    for thread in visits:
        thread.join(timeout=180)
    assert sorted(answers) == [200, 200, 503]
    assert warm_id in {s["kernel"] for s in shown}
    assert len(kernel_ids(process.pid)) <= CAP


def test_without_warm_kernels_each_visit_starts_its_own(probe_home, tmp_path):
    process, url = probe_server(probe_home, tmp_path, warm=0)
    try:
        time.sleep(5)
        assert kernel_ids(process.pid) == {}
        asked_at = time.time()
        shown = visit(url)
        kernels = kernel_ids(process.pid)
        assert shown["warmed"] == "False" and kernels[shown["kernel"]] >= asked_at - 1
        assert list(kernels) == [shown["kernel"]]
    finally:
        stop_server(process)
