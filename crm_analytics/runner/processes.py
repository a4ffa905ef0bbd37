"""The run's processes: the forked child that executes the notebook, its parent watch, killing a process tree.

Each notebook executes in a child process forked from the runner (which has
already imported papermill and nbconvert, so a run costs a kernel start rather
than an interpreter start). The child starts its own session; the kernel that
jupyter_client launches starts yet another session, so a wall-clock timeout kills
the child's process tree by walking it (psutil) and killing every process group
in it. ZMQ state lives only in the child and dies with it.

The child watches its parent: if the runner is killed outright, the child kills the kernel and
every other descendant, then exits (the analysis lock it inherited is released last).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import papermill
import psutil

from crm_analytics import kernels, paths
from crm_analytics.runner import locks
from crm_analytics.runner.parameters import KERNEL_NAME
from crm_analytics.runner.records import REPORT, SUCCEEDED
from crm_analytics.runner.report import write_report
from crm_analytics.runner.verdict import classify

_KILL_WAIT_S = 5.0


def _isolate_child(run_dir: Path, own_lock_fd: int | None, dataset: str | None = None) -> None:
    """First steps of a forked run: own session, quiet fds, no foreign lock files, logging into the run folder.

    The kernel inherits ``CRM_ANALYTICS_DATASET``: what the notebook reads by default is the run's dataset.
    """
    os.setsid()
    # The parent's handlers only set a flag in its own memory; here they would swallow the signal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code_root = str(paths.code_root())
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH", "")) if p)
    if dataset:
        os.environ[paths.DATASET_ENV] = dataset
    for fd in locks.held_fds():
        if fd != own_lock_fd:
            with contextlib.suppress(OSError):
                os.close(fd)
    engine_log = os.open(run_dir / "engine.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(engine_log, 1)
    os.dup2(engine_log, 2)
    os.close(devnull)
    os.close(engine_log)
    # The parent's sys.stdout/sys.stderr may be wrappers (a progress display, a test's capture).
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)  # noqa: SIM115
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("papermill", "nbclient", "traitlets"):
        logging.getLogger(name).setLevel(logging.INFO)


def _kill_descendants() -> None:
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _watch_parent(parent_pid: int, interval_s: float = 0.5) -> threading.Thread:
    """Start a daemon thread that ends this process's tree and this process once ``parent_pid`` is gone.

    A runner killed outright (``kill -9``, the OOM killer) cannot end its run; the child then finds
    itself re-parented, kills the kernel and every other descendant (waiting for them, so the lock
    it inherited is held until they are gone) and exits.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error, OSError):
                kill_process_tree(child.pid)
        os._exit(1)

    thread = threading.Thread(target=watch, name="crm-run-parent-watch", daemon=True)
    thread.start()
    return thread


def run_child(spec: dict, conn: multiprocessing.connection.Connection) -> None:
    """Body of the forked run: execute the notebook with papermill, write the report, send the outcome.

    ``spec`` holds ``run_dir``, ``input`` and ``output`` (notebook paths), ``parameters``, ``cwd``,
    ``cell_timeout`` (whole seconds or None), ``lock_fd`` (the analysis lock's descriptor, kept),
    ``prefork`` (start the kernel from a fork of this process), ``dataset`` and ``parent_pid``.
    The outcome sent on ``conn`` is a :func:`crm_analytics.runner.verdict.classify` record.
    """
    run_dir = Path(spec["run_dir"])
    _isolate_child(run_dir, spec.get("lock_fd"), spec.get("dataset"))
    _watch_parent(spec.get("parent_pid") or os.getppid())
    outcome: dict[str, Any] = {"kind": SUCCEEDED}
    kernel_options = {}
    if spec.get("prefork"):  # fork the kernel-to-be now, before papermill starts its event loop and sockets
        kernels.PreforkedKernelManager.waiting = kernels.PreforkedKernel(close_fds=(conn.fileno(), spec.get("lock_fd")))
        kernel_options["kernel_manager_class"] = kernels.PreforkedKernelManager
    try:
        with open(run_dir / "stdout.txt", "w", encoding="utf-8") as out, open(
            run_dir / "stderr.txt", "w", encoding="utf-8"
        ) as err:
            papermill.execute_notebook(
                spec["input"],
                spec["output"],
                parameters=spec["parameters"],
                kernel_name=KERNEL_NAME,
                progress_bar=False,
                log_output=False,
                stdout_file=out,
                stderr_file=err,
                cwd=spec["cwd"],
                execution_timeout=spec["cell_timeout"],
                # Every output has arrived when the last cell ends. A graceful shutdown would then wait
                # seconds for helper processes that ignore SIGTERM (multiprocessing's resource tracker);
                # the kernel's process group is killed instead.
                shutdown_kernel="immediate",
                **kernel_options,
            )
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a record
        outcome = classify(exc)
        logging.getLogger(__name__).info("run ended with %s", outcome["error_name"])
    finally:
        _kill_descendants()
    with contextlib.suppress(Exception):
        if Path(spec["output"]).is_file():
            write_report(Path(spec["output"]), run_dir / REPORT)
    conn.send(outcome)
    conn.close()


def kill_process_tree(pid: int) -> list[int]:
    """Kill a process, every descendant and every process group among them; return the pids killed.

    The kernel that jupyter_client launches starts its own session, so killing the child's
    process group alone would leave the kernel running.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    groups = set()
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            groups.add(os.getpgid(proc.pid))
    own_group = os.getpgrp()
    for group in groups - {own_group}:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    # Our own child is reaped by its owner (multiprocessing); psutil must not reap it first.
    psutil.wait_procs([p for p in procs if p.pid != pid or not _is_own_child(p)], timeout=_KILL_WAIT_S)
    return [p.pid for p in procs]


def _is_own_child(proc: psutil.Process) -> bool:
    try:
        return proc.ppid() == os.getpid()
    except psutil.Error:
        return False
