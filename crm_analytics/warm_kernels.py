"""Warm page kernels: started and imported before a visit arrives, handed to the next visit.

A page visit used to start its kernel (about 1 s) and then import pandas, matplotlib, ipywidgets and the
page modules (about 1-2 s) before the first number could be drawn. ``WarmPool`` keeps ``size`` kernels that
have already started and run ``WARM_UP_CODE`` (imports and a first off-screen figure, no data read). A visit
takes the oldest one (waiting for it if it is still warming up, which is never longer than starting a new
one), and the pool starts a replacement in the background when the kernel cap leaves room.

This is not Voilà's preheated pool (``--pool-size``): no page cell runs ahead of the visit, so nothing waits
for a visitor under the cell timeout (the race described in ``crm_analytics.serve``). The page still reads its
data at visit time. What a visit needs of its kernel's environment is applied when it takes the kernel:
``handover_code`` sets the variables whose values differ from those the warm kernel was started with (Voilà's
request variables, the viewer's rows) and its working folder, and the kernel is handed out only once that
code has run. Page code must therefore read such variables when it runs, not when a module is imported.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# the imports of the page notebooks and their first figure; run inside a function so the page's namespace stays clean
WARM_UP_CODE = """\
def _crm_warm_up():
    import functools, io
    import matplotlib.pyplot as plt
    import pandas as pd
    import pyarrow.parquet
    from IPython.display import HTML, Markdown, display
    import babel.numbers
    from crm_analytics import audience_pages, datasets, findings, headlines, kpi, kpi_board, pages, plots, results, stand_ins, tables, widgets
    plots.set_style()
    figure, axes = plt.subplots(figsize=(2, 1))
    axes.plot([0, 1], [0, 1])
    axes.barh(["a", "b"], [1, 2])
    axes.set_title("warm-up")
    figure.savefig(io.BytesIO(), format="png", bbox_inches="tight")
    plt.close(figure)
    pd.DataFrame({"a": [1.5]}).style.to_html()  # pandas' Styler loads jinja2 and its templates
    babel.numbers.format_decimal(1.5, locale="en_US")
_crm_warm_up()
del _crm_warm_up
"""

MAX_FAILURES = 3  # warm-ups failing in a row before the pool stops starting kernels (a broken install)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """Return ``environment`` as a plain dict after checking every name and value.

    Names must be identifiers (``[A-Za-z_][A-Za-z0-9_]*``) and values strings without NUL characters (an
    environment cannot hold them). Subclasses of ``str`` (Voilà names its variables with a ``str`` enum) become
    plain strings, so that their ``repr`` is a string literal. Raises ``ValueError`` naming the offending variable.
    """
    checked = {}
    for name, value in environment.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"environment variable {name} must be a string without NUL characters, not {value!r}")
        checked[str.__str__(name)] = str.__str__(value)
    return checked


def environment_changes(started_with: Mapping[str, str], wanted: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """What turns the environment ``started_with`` into ``wanted``: the variables to set (name -> value) and
    the names to remove, both sorted by name."""
    to_set = {name: wanted[name] for name in sorted(wanted) if started_with.get(name) != wanted[name]}
    to_remove = sorted(name for name in started_with if name not in wanted)
    return to_set, to_remove


def handover_code(to_set: Mapping[str, str], to_remove: list[str] = (), cwd: str | None = None) -> str:
    """Python source that sets ``to_set`` in ``os.environ``, removes ``to_remove`` and changes to ``cwd``.

    Names and values are checked (``check_environment``) and written as Python literals (``repr``), so no value
    can run as code.
    """
    to_set = check_environment(to_set)
    check_environment({name: "" for name in to_remove})
    lines = ["import os"]
    if to_set:
        lines.append(f"os.environ.update({to_set!r})")
    lines += [f"os.environ.pop({name!r}, None)" for name in to_remove]
    if cwd is not None:
        lines.append(f"os.chdir({str(cwd)!r})")
    return "\n".join(lines) + "\n"


class KernelCodeError(RuntimeError):
    """Code sent to a kernel outside a page ended with an error (or the kernel did not answer)."""


async def run_in_kernel(kernel_manager, code: str, *, timeout: float) -> None:
    """Run ``code`` in the kernel of ``kernel_manager`` (one kernel's manager) and wait for it to finish.

    Waits for the execute reply and the kernel's return to idle (so no message of this code reaches the page's
    client later). Raises ``KernelCodeError`` when the code fails or the kernel does not answer in ``timeout`` s.
    """
    client = kernel_manager.client()
    client.start_channels()
    errors: list[str] = []

    def keep_errors(message: dict) -> None:
        if message.get("msg_type") == "error":
            errors.append(f"{message['content'].get('ename')}: {message['content'].get('evalue')}")

    try:
        await client.wait_for_ready(timeout=timeout)
        reply = await client.execute_interactive(code, silent=False, store_history=False, timeout=timeout, output_hook=keep_errors)
    except (TimeoutError, RuntimeError) as error:
        raise KernelCodeError(f"the kernel did not run the code: {error}") from error
    finally:
        client.stop_channels()
    if reply["content"].get("status") != "ok" or errors:
        raise KernelCodeError(f"the code failed in the kernel: {'; '.join(errors) or reply['content'].get('status')}")


@dataclass
class WarmKernel:
    """One kernel of the pool: ``kernel_id`` once started, ``environment`` and ``cwd`` it was started with,
    ``ready`` the task that starts and warms it up (its result is ``kernel_id``)."""

    environment: dict[str, str]
    cwd: str
    kernel_id: str | None = None
    ready: asyncio.Task | None = field(default=None, repr=False)


class WarmPool:
    """Up to ``size`` warm kernels, started through the callbacks of the kernel manager that owns them.

    Parameters
    ----------
    size : int
        Kernels to keep warm (0: none; ``take`` then always returns ``None``).
    start : async callable (environment, cwd) -> kernel id
        Starts a kernel (the manager's own start, outside any visit).
    warm_up : async callable (kernel id) -> None
        Runs ``WARM_UP_CODE`` in the kernel; raises when it fails.
    shutdown : async callable (kernel id) -> None
        Shuts a kernel down (one that failed to warm up).
    has_room : callable () -> bool
        Whether the kernel cap leaves room for one more kernel.
    environment : callable () -> (dict, str)
        The environment and working folder a new warm kernel starts with.
    """

    def __init__(
        self,
        size: int,
        *,
        start: Callable[[dict[str, str], str], Awaitable[str]],
        warm_up: Callable[[str], Awaitable[None]],
        shutdown: Callable[[str], Awaitable[None]],
        has_room: Callable[[], bool],
        environment: Callable[[], tuple[dict[str, str], str]],
    ):
        self.size = max(0, int(size))
        self._start, self._warm_up, self._shutdown = start, warm_up, shutdown
        self._has_room, self._environment = has_room, environment
        self._kernels: list[WarmKernel] = []  # oldest first
        self._handing: list[WarmKernel] = []  # taken by a visit, not yet its kernel (``handed``)
        self.failures = 0  # warm-ups failed in a row
        self.closed = False

    def __len__(self) -> int:
        return len(self._kernels)

    @property
    def kernel_ids(self) -> set[str]:
        """Ids of the pool's started kernels (not yet handed out)."""
        return {k.kernel_id for k in self._kernels if k.kernel_id is not None}

    @property
    def starting(self) -> int:
        """Pool kernels, or kernels being handed to a visit, whose process is still starting (not yet known to
        the kernel manager)."""
        return sum(1 for k in (*self._kernels, *self._handing) if k.kernel_id is None)

    def refill(self) -> None:
        """Start warm kernels until the pool holds ``size`` of them or the cap leaves no room (needs a running loop).
        After ``MAX_FAILURES`` failed warm-ups in a row it starts none: visits then start their own kernels."""
        while not self.closed and self.failures < MAX_FAILURES and len(self._kernels) < self.size and self._has_room():
            environment, cwd = self._environment()
            warm = WarmKernel(environment=environment, cwd=cwd)
            self._kernels.append(warm)
            warm.ready = asyncio.ensure_future(self._prepare(warm))

    async def _prepare(self, warm: WarmKernel) -> str:
        try:
            warm.kernel_id = await self._start(warm.environment, warm.cwd)
            await self._warm_up(warm.kernel_id)
        except Exception:
            self.failures += 1
            log.exception("a warm page kernel failed to start or warm up (%d in a row)", self.failures)
            if warm in self._kernels:
                self._kernels.remove(warm)
            if warm.kernel_id is not None:
                await self._shutdown(warm.kernel_id)
            raise
        self.failures = 0
        return warm.kernel_id

    def take(self) -> WarmKernel | None:
        """Remove the oldest warm kernel from the pool and return it (``await kernel.ready`` for its id), or
        ``None`` when the pool is empty. The caller calls ``handed`` once the kernel is the visit's (or failed)."""
        if not self._kernels:
            return None
        warm = self._kernels.pop(0)
        self._handing.append(warm)
        return warm

    def handed(self, warm: WarmKernel) -> None:
        """``warm``, taken by ``take``, is now a visit's kernel (or failed): the pool no longer counts it."""
        if warm in self._handing:
            self._handing.remove(warm)

    def forget(self, kernel_id: str) -> None:
        """Drop ``kernel_id`` from the pool (it was shut down by someone else)."""
        self._kernels = [k for k in self._kernels if k.kernel_id != kernel_id]

    def close(self) -> None:
        """Start no more kernels and stop the warm-ups under way (the server is stopping)."""
        self.closed = True
        for warm in self._kernels:
            if warm.ready is not None and not warm.ready.done():
                warm.ready.cancel()
