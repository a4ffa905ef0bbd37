"""Kernels that start with the analysis libraries already imported.

A notebook run normally starts a new Python process for its kernel, which then spends
seconds importing pandas, matplotlib, seaborn, scikit-learn, Ibis and this package
before the first analysis cell does any work. A batch of runs pays that for every
notebook. Here the batch process imports those modules once (``preload``); each run
then forks one *waiting* process before papermill starts (``PreforkedKernel``), and
papermill's kernel manager (``PreforkedKernelManager``) hands that process the kernel
command instead of launching a new interpreter. The waiting process becomes an
ordinary ipykernel, a descendant of the run's process, so the runner's timeouts and
process-tree cleanup apply to it unchanged.

The fork happens before the run starts its event loop, ZeroMQ context or threads, so
the kernel inherits imported modules only. A run that does not use the waiting process
(a kernel restart, another kernel name) falls back to the usual launch.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import time
import traceback
from typing import Any

from jupyter_client.manager import AsyncKernelManager

log = logging.getLogger(__name__)

# What the analysis notebooks import.
PRELOAD_MODULES = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "duckdb",
    "ibis",
    "matplotlib.pyplot",
    "seaborn",
    "scipy.stats",
    "sklearn.ensemble",
    "statsmodels.tsa.api",
    "IPython.display",
    *(
        f"crm_analytics.{name}"
        for name in (
            "plots", "results", "engine", "frames", "paths", "privacy", "widgets", "pages", "ground_truth",
            "overview", "segmentation", "funnel", "pipeline", "cohort", "lifecycle", "clv", "churn", "forecast",
            "behaviour", "recommend", "attribution", "experiments", "satisfaction", "kpi", "cleansing.pipeline",
        )
    ),
)
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
_LAUNCHER_MODULE = "ipykernel_launcher"
_preloaded = False


def preload(modules: tuple[str, ...] | None = None) -> list[str]:
    """Import ``modules`` (default ``PRELOAD_MODULES``) into this process so forked kernels inherit them.

    Matplotlib is imported with the inline backend selected (what ipykernel selects), without
    drawing anything. Returns the modules that failed to import (they are imported by the
    notebook as usual; a warning is logged). When matplotlib was loaded before, with whatever
    backend, nothing is imported and kernels keep being launched: a fork would inherit that backend.
    """
    global _preloaded
    if _preloaded:
        return []
    if "matplotlib" in sys.modules:
        log.warning("matplotlib was loaded before the preload; kernels are launched as usual")
        return []
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    failed = []
    for name in PRELOAD_MODULES if modules is None else modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - an optional speed-up must not stop a batch
            log.warning("could not preload %s: %s", name, exc)
            failed.append(name)
    if "ibis" in sys.modules:
        _warm_up_sql_compiler()
    _preloaded = True
    return failed


def _warm_up_sql_compiler() -> None:
    """Compile one small Ibis query to DuckDB SQL without connecting (no engine threads to fork).

    The first compilation in a process loads the dialect and fills Ibis's dispatch caches (about
    0.3-0.7 s); doing it here once spares every forked kernel that cost.
    """
    import ibis

    try:
        orders = ibis.table({"customer_id": "string", "order_time": "timestamp", "order_amount": "float64"}, name="orders")
        recent = orders.filter(orders.order_time >= ibis.timestamp("2024-01-01"))
        recent = recent.mutate(month=recent.order_time.truncate("M"))
        ibis.to_sql(recent.group_by(["customer_id", "month"]).aggregate(n=recent.count(), amount=recent.order_amount.sum()), dialect="duckdb")
    except Exception as exc:  # noqa: BLE001 - an optional speed-up must not stop a batch
        log.warning("could not warm up the SQL compiler: %s", exc)


def is_preloaded() -> bool:
    """Whether ``preload`` ran in this process (runs forked from it can use ``PreforkedKernel``)."""
    return _preloaded


def launcher_arguments(argv: list[str]) -> list[str] | None:
    """The kernel's own arguments when ``argv`` starts an ipykernel of this interpreter, else None.

    ``argv`` is a kernel spec's command, ``python [interpreter options] -m ipykernel_launcher ARGS``;
    interpreter options (such as ``-Xfrozen_modules=off``, which only matters to the debugger) are
    those of this already running interpreter.
    """
    if not argv or os.path.realpath(argv[0]) != os.path.realpath(sys.executable):
        return None
    for i in range(1, len(argv) - 1):
        if argv[i] == "-m":
            return argv[i + 2:] if argv[i + 1] == _LAUNCHER_MODULE else None
        if not argv[i].startswith("-X"):
            return None
    return None


class PreforkedKernel:
    """A forked child that waits for a kernel command, then runs it in-process.

    It behaves like the ``subprocess.Popen`` a kernel provisioner keeps: ``pid``, ``poll``,
    ``wait``, ``send_signal``, ``terminate``, ``kill``. Create it before any event loop or
    thread starts in this process; call ``launch`` once, or ``discard`` when unused.
    """

    stdin = stdout = stderr = None

    def __init__(self, *, close_fds: tuple[int | None, ...] = ()) -> None:
        """Fork the waiting child; it closes ``close_fds`` (descriptors a kernel must not hold, e.g. locks)."""
        request_read, self._request = os.pipe()
        self._ready, ready_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the waiting child
            try:
                for fd in (self._request, self._ready, *close_fds):
                    if fd is not None:
                        with contextlib.suppress(OSError):
                            os.close(fd)
            finally:
                _wait_and_run(request_read, ready_write)  # never returns
        os.close(request_read)
        os.close(ready_write)
        self.returncode: int | None = None
        self.launched = False

    def launch(self, argv: list[str], *, cwd: str | None, env: dict[str, str]) -> None:
        """Hand the kernel command to the waiting child; return once it runs as a session leader."""
        payload = json.dumps({"argv": argv, "cwd": cwd, "env": env}).encode()
        with os.fdopen(self._request, "wb") as pipe:
            pipe.write(payload)
        self.launched = True
        with os.fdopen(self._ready, "rb") as pipe:
            if pipe.read() != b"ok":
                raise RuntimeError(f"the preforked kernel process {self.pid} ended before it started the kernel")

    def discard(self) -> None:
        """Let an unused child exit (it reads an empty request) and reap it."""
        if not self.launched:
            os.close(self._request)
            os.close(self._ready)
            self.launched = True
            self.wait()

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"kernel process {self.pid} still running after {timeout} s")
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _wait_and_run(request_fd: int, ready_fd: int) -> None:
    """Body of the waiting child: read the kernel command, become that kernel, exit."""
    code = 1
    try:
        os.setsid()  # like the usual launch: interrupts go to the kernel's own process group
        with os.fdopen(request_fd, "rb") as pipe:
            payload = pipe.read()
        if not payload:
            code = 0
            return
        request = json.loads(payload)
        _become_kernel_process(request["argv"], request["cwd"], request["env"])
        os.write(ready_fd, b"ok")
        os.close(ready_fd)
        code = _run_launcher()
    except BaseException:  # noqa: BLE001 - report, never return into the parent's code
        traceback.print_exc()
    finally:
        os._exit(code)


def _become_kernel_process(argv: list[str], cwd: str | None, env: dict[str, str]) -> None:
    """Give this process what a newly launched kernel would have: directory, environment, arguments, logging."""
    if cwd:
        os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    extra_paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = extra_paths + [p for p in sys.path[1:] if p not in extra_paths]
    sys.argv = [argv[0], *launcher_arguments(argv)]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.NOTSET)


def _run_launcher() -> int:
    """Run ``ipykernel_launcher`` as ``python -m`` would (with ``sys.argv`` already set); return the exit code."""
    import runpy

    try:
        runpy.run_module(_LAUNCHER_MODULE, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


class PreforkedKernelManager(AsyncKernelManager):
    """Kernel manager that starts the kernel in ``waiting`` (a ``PreforkedKernel``) when it can.

    Set the class attribute ``waiting`` before papermill starts; it is used once.

    This class is the project's one seam into jupyter_client internals (written against 8.x;
    ``pyproject.toml`` pins ``jupyter_client<9``). jupyter_client has no public hook for "run this
    command in a process I already have", so it uses three private parts:

    - ``AsyncKernelManager._async_launch_kernel(kernel_cmd, **kw)``, overridden: the one step
      between the finished kernel command and a running process, which is the step replaced here
      (its own docstring says to override it in a subclass).
    - ``LocalProvisioner.process``, ``.pid``, ``.pgid`` and ``.cwd``, set as
      ``LocalProvisioner.launch_kernel`` sets them, so that polling, interrupting and killing the
      kernel reach the preforked process.
    - ``KernelManager._reconcile_connection_info(info)``, called as the overridden method calls it:
      it loads the provisioner's ports and key and writes the connection file.

    After a jupyter_client upgrade, ``tests/test_kernels.py`` shows whether these still hold.
    """

    waiting: PreforkedKernel | None = None

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        waiting, PreforkedKernelManager.waiting = PreforkedKernelManager.waiting, None
        if waiting is None or launcher_arguments(kernel_cmd) is None:
            if waiting is not None:
                waiting.discard()
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        env = dict(kw.get("env") or os.environ)
        env["JPY_PARENT_PID"] = str(os.getpid())  # the kernel exits if this process dies
        cwd = kw.get("cwd") or os.getcwd()  # a launched kernel inherits the working directory papermill set
        waiting.launch(kernel_cmd, cwd=cwd, env=env)
        provisioner = self.provisioner
        provisioner.process, provisioner.pid, provisioner.pgid, provisioner.cwd = waiting, waiting.pid, waiting.pid, cwd
        self._reconcile_connection_info(provisioner.connection_info)
