"""Serve the stakeholder pages: standalone Voilà over the notebooks meant for people who never see code.

Only the stakeholder pages (``default_notebooks``: every notebook of ``notebooks/pages/``, the landing page among
them, plus ``STAKEHOLDER_NOTEBOOKS``) or the notebooks passed explicitly are served: they are copied
into a private folder that becomes Voilà's root, so the analysts' notebooks, parameters and outputs are not
reachable through the server. Settings, each a Voilà option:

- bound to 127.0.0.1 unless told otherwise (``--Voila.ip``); the port is not silently changed when taken
  (``--Voila.port_retries=0``);
- sources stripped and tracebacks hidden (``--strip_sources=True``, ``--show_tracebacks=False``);
- an optional access token, read from ``--token-file`` or the environment variable ``CRM_ANALYTICS_SERVE_TOKEN``
  (``--token`` still works but shows in ``ps``); it is handed to Voilà inside this process (``Voila.token``),
  never on a command line, and removed from the environment page kernels inherit. Without one anybody who
  reaches the port sees every page, so a host other than 127.0.0.1 without a token is refused unless
  ``allow_remote_without_token`` is set. (Voilà ignores ``JUPYTER_TOKEN``: it sets an empty token itself when
  ``Voila.token`` is unset.);
- ``.ipynb`` and ``.py`` files refused at ``/voila/files/`` (only images are served);
- optional rows per viewer (``--viewer-header`` with ``--proxy-secret-file`` or ``--trusted-proxy``): every
  handler first checks the proxied viewer against the viewer groups (``_ViewerGate``, 403 page otherwise), and
  the page kernel gets the viewer in its environment (``crm_analytics.access``). The groups come from
  ``--access-file``, else the served dataset's ``access:`` block, else ``parameters/access.yaml``
  (``access.serving_access``); the start-up log names the source, and warns when it shadows another that
  declares groups. Page kernels are told the same source (``access.AccessSource.environment``);
- a per-cell execution timeout (``--VoilaExecutor.timeout``), and a kernel client whose waits for a cell's
  reply cannot sleep through it (``crm_analytics.page_kernel_client``);
- bounded kernels (``PageKernelManager``, set as ``VoilaConfiguration.multi_kernel_manager_class``, and
  ``PageHandler``). Every visit starts a kernel (about 220 MB resident). Jupyter's culler alone cannot release
  a kernel soon after its visitor left: ``cull_idle_timeout`` is one timeout for all kernels, and a kernel
  whose page was fetched without opening the websocket (``curl``) or whose tab died without Voilà's unload
  beacon looks exactly like one whose visitor is reading the page, except that it has no connection. So a
  kernel that is idle, has no browser connected and no activity for ``unattended_timeout`` (30 s) is shut
  down at the next check (every ``cull_interval``, 5 s); a kernel with an open page follows
  ``cull_idle_timeout`` (30 min, ``cull_connected=True``: forgotten tabs do not hold kernels forever). A cap
  (``max_kernels``, default ``default_max_kernels()``: a quarter of the machine's memory at 256 MiB a kernel,
  at most 8) counts running and starting kernels and those promised to requests let in; beyond it a visit
  gets a 503 "busy, retry in a moment" page with ``Retry-After`` and no kernel;
- the ``crm`` template (``TEMPLATE``), shipped in ``crm_analytics/voila_templates/``: Voilà's ``lab`` template
  (notebook pages, page list, error pages) without the stylesheets and scripts it links from CDNs, so a
  visitor's browser contacts no host but the page server, and with every output written as HTML by the
  server, so numbers and charts show before Voilà's scripts have loaded (widgets through their HTML
  copies, ``crm_analytics.stand_ins``); visitors cannot switch back to another template
  (``allow_template_override=NO``).

Voilà 0.5 finds templates only in the Jupyter data directories (``<dir>/voila/templates/<name>`` or
``<dir>/nbconvert/templates/<name>`` for each ``<dir>`` of ``jupyter_core.paths.jupyter_path()``); the
``Voila.template_paths`` option is overwritten as soon as a template name is set. So ``serve`` puts
``TEMPLATE_ROOT`` first on ``JUPYTER_PATH``. The template sits under ``nbconvert/templates/`` rather than
``voila/templates/``: Voilà takes the first existing ``<dir>/voila`` as its data directory (themes, schemas),
which must stay the installed one.

Warm kernels (``warm_kernels``, default ``WARM_KERNELS``) take kernel start-up and the page's imports out of
a visit: ``PageKernelManager`` keeps that many kernels started and imported (``crm_analytics.warm_kernels``)
and hands one to each visit, which then runs the whole page. Voilà's own preheated pool is another thing:

The preheated pool (``pool_size``) stays off. Voilà's pool kernels run the page until
``voila.utils.wait_for_request`` (``pages.wait_for_visitor``), which blocks that cell until a visitor's request
arrives over ``/voila/query/<kernel>``. That waiting cell runs under the per-cell execution timeout
(``VoilaExecutor.timeout``, 120 s here): a pool kernel that waits longer than the timeout for a visitor has
its cell time out (nbclient raises without interrupting the kernel), Voilà stops executing the notebook at
that cell (``NotebookRenderer._jinja_cell_generator`` breaks on ``TimeoutError``) and finishes the pre-rendered
page without the cells that read and draw the data; the next visitor gets that page, with no tiles and no
charts. Measured with ``--pool-size 1``: ``--execution-timeout 8`` and a visit 18 s after start gave a
15 KB page without data, ``--execution-timeout 120`` and a visit 6 s after start the full 39 KB page. So
any pool kernel idle longer than the timeout serves a blank page: under a steady trickle of visits the
refill kernel usually has a visitor in time, hence "now and then". Raising the timeout only moves the
threshold and unbounds real cells; ``wait_for_request`` also gives up silently when its websocket does not
connect within 5 s (``open_timeout=5``), rendering the page with data read before the visit. Both are in
Voilà (0.5.13: ``voila/utils.py``, ``voila/notebook_renderer.py``, ``voila/voila_kernel_manager.py``); the pool
is upstream's pull request voila-dashboards/voila#936, request info for pool kernels #1109, timeout
behaviour #538/#544; no upstream issue reports this interaction yet. A kernel per visit, bounded as above,
is the reliable mode.

Every visit starts a kernel and runs the page notebook, so pages read results persisted by the scheduled
runs (see ``crm_analytics.pages``) instead of recomputing. One server shows one dataset: page kernels
inherit ``CRM_ANALYTICS_DATASET``, so they read ``outputs/<dataset>/`` (the project default unless
``dataset`` is given).

Run ``python -m crm_analytics.serve --help`` (the ``crm-analytics serve`` command calls ``serve``).
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import tornado.ioloop
import tornado.web
from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Instance, Integer
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler

from crm_analytics import access, paths, warm_kernels
from crm_analytics.page_kernel_client import PageKernelClient

log = logging.getLogger(__name__)

STAKEHOLDER_NOTEBOOKS: tuple[str, ...] = ("dashboard",)  # pages outside notebooks/pages/
LANDING_PAGE = "landing.ipynb"  # notebooks/pages/landing.ipynb, opened at / (the crm template's tree-lab.html)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8866
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STATIC_ALLOWLIST = [r".*\.(png|jpg|jpeg|gif|svg)$"]
STATIC_DENYLIST = [r".*\.(ipynb|py|parquet|csv|json|yaml|yml|duckdb)$"]
TEMPLATE = "crm"
TEMPLATE_ROOT = Path(__file__).resolve().parent / "voila_templates"
TOKEN_ENV = "CRM_ANALYTICS_SERVE_TOKEN"
LEGACY_TOKEN_ENV = "CRM_ANALYTICS_PAGES_TOKEN"
PAGE_KERNEL_BYTES = 256 * 2**20  # resident memory of one page kernel (about 220 MB measured), rounded up
KERNEL_MEMORY_SHARE = 0.25  # share of the machine's memory that page kernels may hold by default
MAX_KERNELS_CEILING = 8  # page kernels run on a few shared cores: more at once only queue for them
UNATTENDED_TIMEOUT = 30  # seconds an idle kernel without a browser connection is kept
CULL_INTERVAL = 5  # seconds between two checks for kernels to release
BUSY_RETRY_AFTER = 10  # seconds a visitor turned away is asked to wait
WARM_KERNELS = 1  # kernels kept started and imported for the next visits (crm_analytics.warm_kernels)
WARM_UP_TIMEOUT = 60  # seconds a kernel may take to warm up, or to take a visit's environment
ACCESS_FILE_HELP = (
    "viewer groups and their rows; default: the served dataset's access: block when its file has one, else "
    "parameters/access.yaml (this option wins over both; the start-up log names the source used)"
)


def default_notebooks() -> list[Path]:
    """The stakeholder pages: every notebook of ``notebooks/pages/`` (sorted), then ``STAKEHOLDER_NOTEBOOKS``."""
    return [*sorted(paths.pages_dir().glob("*.ipynb")), *(paths.notebooks_dir() / f"{name}.ipynb" for name in STAKEHOLDER_NOTEBOOKS)]


def resolve_notebooks(notebooks: Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """Return the page notebooks as absolute paths (default: ``default_notebooks()``).

    A bare name (``"dashboard"``) means ``notebooks/<name>.ipynb``, else ``notebooks/pages/<name>.ipynb``; a path is
    taken as is. Raises ``FileNotFoundError`` naming every missing notebook, ``ValueError`` when two pages share a file name.
    """
    names = default_notebooks() if notebooks is None else tuple(notebooks)
    found = []
    for name in names:
        text = str(name)
        path = Path(text) if (os.sep in text or text.endswith(".ipynb")) else paths.notebooks_dir() / f"{text}.ipynb"
        if not (os.sep in text or text.endswith(".ipynb") or path.is_file()):
            path = paths.pages_dir() / f"{text}.ipynb"
        found.append(path.expanduser().resolve())
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"stakeholder notebook(s) not found: {missing}")
    file_names = [p.name for p in found]
    if len(set(file_names)) != len(file_names):
        raise ValueError(f"two stakeholder pages share a file name: {file_names}")
    if not found:
        raise ValueError("no stakeholder notebook to serve")
    return found


def stage_notebooks(notebooks: Sequence[Path], folder: Path) -> Path:
    """Copy the page notebooks into ``folder`` (Voilà's root) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for notebook in notebooks:
        shutil.copy2(notebook, folder / notebook.name)
    return folder


def voila_argv(
    root_dir: str | Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    open_browser: bool = False,
    execution_timeout: int = 120,
    cull_idle_timeout: int = 1800,
    cull_interval: int = CULL_INTERVAL,
    pool_size: int = 0,
    max_kernels: int = 0,
    unattended_timeout: int = UNATTENDED_TIMEOUT,
    warm_kernels: int = WARM_KERNELS,
) -> list[str]:
    """Return the Voilà command-line arguments for serving ``root_dir`` with the settings of this module.

    ``cull_idle_timeout`` (seconds) applies to kernels whose page is still open; ``unattended_timeout``
    (seconds) to kernels no browser is connected to; both are checked every ``cull_interval`` seconds.
    ``max_kernels`` caps the page kernels (0: ``default_max_kernels()``); ``warm_kernels`` of them are kept
    started and imported for the next visits (``PageKernelManager``; 0: none).

    ``pool_size`` kernels per page are kept preheated (default 0: a kernel per visit): they run the page's
    imports in advance and wait in ``pages.wait_for_visitor`` until a visitor arrives. Off by default: see
    the module's notes on the preheated pool.

    The access token is not among the arguments when ``serve`` starts the server (it would show in ``ps``);
    ``token`` is kept for callers that start Voilà themselves.
    """
    argv = [
        str(root_dir),
        f"--Voila.ip={host}",
        f"--Voila.port={int(port)}",
        "--Voila.port_retries=0",
        f"--template={TEMPLATE}",
        "--VoilaConfiguration.allow_template_override=NO",
        "--theme=light",
        "--strip_sources=True",
        "--show_tracebacks=False",
        f"--VoilaExecutor.timeout={int(execution_timeout)}",
        f"--MappingKernelManager.cull_idle_timeout={int(cull_idle_timeout)}",
        f"--MappingKernelManager.cull_interval={int(cull_interval)}",
        "--MappingKernelManager.cull_connected=True",
        f"--VoilaConfiguration.multi_kernel_manager_class={PageKernelManager.__module__}.{PageKernelManager.__qualname__}",
        f"--PageKernelManager.max_kernels={int(max_kernels)}",
        f"--PageKernelManager.unattended_timeout={int(unattended_timeout)}",
        f"--PageKernelManager.warm_kernels={int(warm_kernels)}",
        f"--KernelManager.client_factory={PageKernelClient.__module__}.{PageKernelClient.__qualname__}",
        *(f"--VoilaConfiguration.file_allowlist={pattern}" for pattern in STATIC_ALLOWLIST),
        *(f"--VoilaConfiguration.file_denylist={pattern}" for pattern in STATIC_DENYLIST),
    ]
    if pool_size > 0:
        argv += ["--preheat_kernel=True", f"--pool_size={int(pool_size)}"]
    if token:
        argv.append(f"--token={token}")
    if not open_browser:
        argv.append("--no-browser")
    return argv


def check_exposure(host: str, token: str | None, *, allow_remote_without_token: bool = False) -> None:
    """Refuse to listen beyond this machine without a token (Voilà has no login of its own)."""
    if host not in LOCAL_HOSTS and not token and not allow_remote_without_token:
        raise ValueError(
            f"refusing to serve on {host!r} without a token: anybody who reaches it would see every page. "
            "Give a token, put a reverse proxy with single sign-on in front, or bind to 127.0.0.1."
        )


# --------------------------------------------------------------------------------------------------
# bounded serving: release kernels nobody looks at, cap the kernels, keep the token off the command line


def read_secret_file(path: str | Path, what: str) -> str:
    """The content of the secret file ``path`` without surrounding whitespace; ``what`` names it in errors
    (``FileNotFoundError`` when it is missing, ``ValueError`` when it is empty)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{what} {path} is empty")
    return text


def resolve_token(
    token: str | None = None, token_file: str | os.PathLike | None = None, environ: MutableMapping[str, str] = os.environ
) -> str | None:
    """Return the access token, or ``None`` when serving without one.

    Taken from ``token`` if given (a command-line value shows in ``ps``: prefer the others), else from the
    first non-blank content of ``token_file``, else from the environment variable ``TOKEN_ENV`` (or the older
    ``LEGACY_TOKEN_ENV``). Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an empty one.
    """
    if token:
        return token
    if token_file is not None:
        return read_secret_file(token_file, "token file")
    for name in (TOKEN_ENV, LEGACY_TOKEN_ENV):
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def default_max_kernels(total_memory: int | None = None) -> int:
    """Default cap on page kernels: ``KERNEL_MEMORY_SHARE`` of ``total_memory`` (bytes; default the
    machine's) divided by ``PAGE_KERNEL_BYTES``, at least 1 and at most ``MAX_KERNELS_CEILING``."""
    total = psutil.virtual_memory().total if total_memory is None else total_memory
    return max(1, min(MAX_KERNELS_CEILING, int(total * KERNEL_MEMORY_SHARE // PAGE_KERNEL_BYTES)))


@dataclass
class _Admission:
    """One page request let in under the cap; ``has_kernel`` once it has started its kernel (``kernel_id``);
    ``environment``: variables its page kernel gets on top of the server's (the viewer, ``access.viewer_environment``)."""

    has_kernel: bool = False
    kernel_id: str | None = None
    environment: dict[str, str] = field(default_factory=dict)


# set by PageHandler for the request being served, read by PageKernelManager.start_kernel (same asyncio task)
_current_admission: contextvars.ContextVar[_Admission | None] = contextvars.ContextVar("page_admission", default=None)


class PageKernelManager(AsyncMappingKernelManager):
    """Jupyter's kernel manager with two bounds for page kernels.

    - A kernel that is idle, has no browser connected and has had no activity for ``unattended_timeout``
      seconds is shut down at the next cull (every ``cull_interval`` seconds): a page fetched by a client
      that never opens the websocket, or whose tab was closed without Voilà's unload beacon. Kernels with an
      open page still follow ``cull_idle_timeout``.
    - ``admit`` lets a page request in only while the kernels running, starting or promised to admitted
      requests are fewer than ``max_kernels`` (0: ``default_max_kernels()``).

    ``warm_kernels`` kernels are kept started and imported (``crm_analytics.warm_kernels.WarmPool``) and handed
    to the next visits in ``start_kernel``. They count against the cap, but a visit may take one, so a request
    is let in while the kernels other than warm ones are fewer than the cap; the pool refills only while the
    cap leaves room. Warm kernels are never released as unattended.
    """

    max_kernels = Integer(0, config=True, help="Most page kernels at once (0: from the machine's memory).")
    unattended_timeout = Integer(
        UNATTENDED_TIMEOUT, config=True, help="Seconds an idle kernel without a browser connection is kept."
    )
    warm_kernels = Integer(WARM_KERNELS, config=True, help="Kernels kept started and imported for the next visits (0: none).")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._starting = 0
        self._promised = 0
        self._stopping: set[str] = set()  # kernels whose shutdown has begun: their memory is on its way back
        self._rendering: set[str] = set()  # kernels whose page request is still running its cells
        self.warm = warm_kernels.WarmPool(
            self.warm_kernels,
            start=self._start_warm_kernel,
            warm_up=lambda kernel_id: self.run_code(kernel_id, warm_kernels.WARM_UP_CODE),
            shutdown=lambda kernel_id: ensure_async(self.shutdown_kernel(kernel_id)),
            has_room=lambda: self.page_kernel_count() < self.kernel_limit,
            environment=lambda: ({**os.environ, "VOILA_PREHEAT": "False"}, self.cwd_for_path("")),
        )

    @property
    def kernel_limit(self) -> int:
        """The cap in force (``max_kernels`` or the machine's default)."""
        return self.max_kernels if self.max_kernels > 0 else default_max_kernels()

    def page_kernel_count(self) -> int:
        """Kernels running and not shutting down, starting (warm ones too), or promised to a request let in that has
        not started one yet."""
        return len(self._kernels.keys() - self._stopping) + self._starting + self._promised + self.warm.starting

    def admit(self) -> _Admission | None:
        """Promise a kernel to a page request, or return ``None`` when the cap is reached (a warm kernel,
        which the request may take, does not keep it out)."""
        if self.page_kernel_count() - len(self.warm) >= self.kernel_limit:
            return None
        self._promised += 1
        return _Admission()

    def settle(self, admission: _Admission) -> None:
        """Give back the promise of a finished request that never started a kernel (an error page)."""
        if not admission.has_kernel:
            admission.has_kernel = True
            self._promised -= 1

    async def start_kernel(self, *args, **kwargs) -> str:
        admission = _current_admission.get()
        if admission is not None:
            self.settle(admission)  # the promise turns into a starting kernel
            if admission.environment:  # Voilà passes the kernel's full environment as env=
                kwargs["env"] = {**(kwargs.get("env") or os.environ), **admission.environment}
        try:
            kernel_id = await self._warm_kernel_for(kwargs)
            if kernel_id is None:
                self._starting += 1
                try:
                    kernel_id = await super().start_kernel(*args, **kwargs)
                finally:
                    self._starting -= 1
        finally:
            self.warm.refill()
        if admission is not None:
            admission.kernel_id = kernel_id
            self._rendering.add(kernel_id)
        return kernel_id

    async def _start_warm_kernel(self, environment: dict[str, str], cwd: str) -> str:
        return await super().start_kernel(env=environment, cwd=cwd)

    async def run_code(self, kernel_id: str, code: str) -> None:
        """Run ``code`` in kernel ``kernel_id`` outside any page (``warm_kernels.run_in_kernel``)."""
        await warm_kernels.run_in_kernel(self.get_kernel(kernel_id), code, timeout=WARM_UP_TIMEOUT)

    async def _warm_kernel_for(self, start_arguments: dict) -> str | None:
        """A warm kernel given the environment and folder ``start_arguments`` (``env``, ``path``) ask for, or
        ``None`` (the pool is empty, or its kernel failed: the caller starts one)."""
        if self.warm.size == 0 or start_arguments.get("kernel_name", self.default_kernel_name) != self.default_kernel_name:
            return None
        warm = self.warm.take()
        if warm is None:
            return None
        try:
            kernel_id = await warm.ready
            to_set, to_remove = warm_kernels.environment_changes(warm.environment, start_arguments.get("env") or os.environ)
            cwd = self.cwd_for_path(start_arguments.get("path") or "")
            await self.run_code(kernel_id, warm_kernels.handover_code(to_set, to_remove, None if cwd == warm.cwd else cwd))
        except Exception as error:  # a dead or failed warm kernel: the visit starts its own
            self.log.warning("Warm kernel not usable, starting one for the visit: %s", error)
            if warm.kernel_id is not None and warm.kernel_id in self._kernels:
                await ensure_async(self.shutdown_kernel(warm.kernel_id))
            return None
        finally:
            self.warm.handed(warm)  # counted from now on as a kernel of the manager (or gone)
        self.log.info("Visit served by warm kernel %s", kernel_id)
        return kernel_id

    async def shutdown_kernel(self, kernel_id: str, *args, **kwargs) -> None:
        self.warm.forget(kernel_id)
        self._stopping.add(kernel_id)
        try:
            await super().shutdown_kernel(kernel_id, *args, **kwargs)
        finally:
            self._stopping.discard(kernel_id)
        self.warm.refill()

    async def shutdown_all(self, *args, **kwargs) -> None:
        self.warm.close()
        await super().shutdown_all(*args, **kwargs)

    def rendered(self, admission: _Admission) -> None:
        """The request of ``admission`` has finished its page: its kernel may now be released when unattended."""
        if admission.kernel_id is not None:
            self._rendering.discard(admission.kernel_id)

    def is_unattended(self, kernel_id: str, now: datetime | None = None) -> bool:
        """True for an idle kernel with no browser connection and no activity for ``unattended_timeout`` s."""
        kernel = self._kernels.get(kernel_id)
        # a page still rendering is idle between its cells and has no browser connected yet: never unattended
        if kernel is None or kernel_id in self._rendering or self._kernel_connections.get(kernel_id, 0) > 0:
            return False
        if kernel_id in self.warm.kernel_ids:  # waiting for its visit
            return False
        last_activity = getattr(kernel, "last_activity", None)
        if getattr(kernel, "execution_state", None) != "idle" or last_activity is None:
            return False
        return (now or datetime.now(timezone.utc)) - last_activity > timedelta(seconds=self.unattended_timeout)

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        if kernel_id in self.warm.kernel_ids:
            return
        if self.is_unattended(kernel_id):
            self.log.info("Releasing kernel %s: idle with no page connected", kernel_id)
            await ensure_async(self.shutdown_kernel(kernel_id))
            return
        await super().cull_kernel_if_idle(kernel_id)


BUSY_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{retry}">
<title>Busy: retry in a moment</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:4em auto;color:#333}}</style></head>
<body><h1>Busy: retry in a moment</h1>
<p>Many people are viewing pages right now. This page tries again by itself in {retry} seconds.</p></body></html>
"""


REFUSED_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Not available</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:4em auto;color:#333}}</style></head>
<body><h1>Not available</h1><p>{message}</p></body></html>
"""
REFUSED_VISIT = ("This server shows its pages only to the people it was set up for, signed in through the "
                 "organisation's sign-in. If you should see these pages, ask their owner to add you.")
REFUSED_PAGE_FOR_VIEW = "This page is not available for your view: it cannot be narrowed to the rows you may see."


def _refuse(handler: tornado.web.RequestHandler, message: str) -> None:
    """Answer 403 with a short HTML page saying ``message``."""
    handler.set_status(403)
    handler.set_header("Cache-Control", "no-store")
    handler.set_header("Content-Type", "text/html; charset=utf-8")
    handler.finish(REFUSED_PAGE.format(message=message))


class _ViewerGate:
    """Put before every handler of the server when viewers come from a trusted proxy (``PageServer.viewer_proxy``):
    a request whose viewer ``access.identify_viewer`` refuses gets a 403 page before the handler runs (no page,
    no kernel, no file, no websocket). ``viewer`` is the one let in."""

    viewer_proxy: access.ProxySettings | None = None
    access_source: access.AccessSource | None = None  # None: access.access_source() (parameters/access.yaml)
    viewer: access.Viewer | None = None

    async def prepare(self):
        if self.viewer_proxy is not None:
            try:  # read afresh on every request: an edit to the groups (a viewer removed) applies at once
                policy = self.access_source.load() if self.access_source is not None else access.load_access()
                self.viewer = access.identify_viewer(self.request.headers, self.request.remote_ip, proxy=self.viewer_proxy, policy=policy)
            except (access.ViewerRefused, access.AccessError) as refusal:
                log.warning("refused %s %s: %s", self.request.method, self.request.path, refusal)
                _refuse(self, REFUSED_VISIT)
                return
        result = super().prepare()
        if result is not None:
            await result


def row_filtered_pages() -> set[str]:
    """Pages that narrow their rows to the viewer's (the notebooks of ``notebooks/pages/``): the only ones a
    viewer of a restricted group may open."""
    return {p.name for p in paths.pages_dir().glob("*.ipynb")}


class PageHandler(TornadoVoilaHandler):
    """Voilà's page handler behind the kernel cap: beyond it, a 503 "busy" page with ``Retry-After``. With
    viewers from a proxy, the page kernel gets the viewer (``access.viewer_environment``), and a viewer of a
    restricted group gets a 403 page for a page that does not narrow its rows."""

    viewer: access.Viewer | None = None  # set by _ViewerGate.prepare when viewers come from a proxy

    @tornado.web.authenticated
    async def get(self, path=None):
        viewer = self.viewer
        if viewer is not None and not viewer.sees_all_rows and (path or "").rsplit("/", 1)[-1] not in row_filtered_pages():
            _refuse(self, REFUSED_PAGE_FOR_VIEW)
            return
        admission = self.kernel_manager.admit()
        if admission is None:
            self.set_status(503)
            self.set_header("Retry-After", str(BUSY_RETRY_AFTER))
            self.set_header("Cache-Control", "no-store")
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(BUSY_PAGE.format(retry=BUSY_RETRY_AFTER))
            return
        if viewer is not None:
            admission.environment = access.viewer_environment(viewer)
        # sets the _xsrf cookie: Voilà's unload beacon sends it back to shut the kernel down when the tab closes,
        # and without it the beacon is refused ("'_xsrf' argument missing") and the kernel waits for the release
        self.xsrf_token  # noqa: B018
        reset = _current_admission.set(admission)
        try:
            await super().get(path)
        finally:
            _current_admission.reset(reset)
            self.kernel_manager.settle(admission)
            self.kernel_manager.rendered(admission)


class PageServer(Voila):
    """Voilà with ``PageHandler`` in place of its page handler (the kernel cap needs ``PageKernelManager``).

    With ``viewer_proxy`` set, every handler (pages, tree, files, kernels and their websockets, static files)
    first checks the viewer (``_ViewerGate``) against the viewer groups of ``access_choice``, and the start-up
    log says where they come from."""

    viewer_proxy = Instance(access.ProxySettings, allow_none=True, help="Take viewers from this trusted proxy (None: no viewers).")
    access_choice = Instance(access.AccessChoice, allow_none=True, help="Where the viewer groups come from (None: access.access_source()).")

    def init_settings(self) -> dict:
        settings = super().init_settings()
        if self.viewer_proxy is not None and self.access_choice is not None:
            for level, line in self.access_choice.log_lines(self.access_choice.source.load()):
                self.log.log(level, line)
        tornado.ioloop.IOLoop.current().add_callback(self.kernel_manager.warm.refill)  # warm kernels before the first visit
        return settings

    def init_handlers(self) -> list:
        handlers = [
            (spec[0], PageHandler, *spec[2:]) if spec[1] is TornadoVoilaHandler else spec for spec in super().init_handlers()
        ]
        if self.viewer_proxy is None:
            return handlers
        gate = {"viewer_proxy": self.viewer_proxy, "access_source": self.access_choice.source if self.access_choice else None}
        return [(spec[0], type(f"Gated{spec[1].__name__}", (_ViewerGate, spec[1]), gate), *spec[2:]) for spec in handlers]


def use_page_template(environ: MutableMapping[str, str] = os.environ) -> None:
    """Put ``TEMPLATE_ROOT`` first on ``JUPYTER_PATH`` in ``environ`` so that Voilà finds the ``crm`` template.

    Idempotent; other entries of ``JUPYTER_PATH`` are kept after it. Raises ``FileNotFoundError`` when the
    template is not installed with the package.
    """
    if not (TEMPLATE_ROOT / "nbconvert" / "templates" / TEMPLATE / "index.html.j2").is_file():
        raise FileNotFoundError(f"the page template {TEMPLATE!r} is missing from {TEMPLATE_ROOT}")
    root = str(TEMPLATE_ROOT)
    others = [p for p in environ.get("JUPYTER_PATH", "").split(os.pathsep) if p and p != root]
    environ["JUPYTER_PATH"] = os.pathsep.join([root, *others])


def _kernel_environment(host: str, dataset: str | None = None) -> None:
    """Prepare what page kernels inherit: the package importable from the staging folder, the address a
    preheated kernel calls back to when its visitor arrives, and the dataset whose outputs the pages read.
    The access token's variables are removed: page kernels inherit this process's environment."""
    for name in (TOKEN_ENV, LEGACY_TOKEN_ENV):
        os.environ.pop(name, None)
    os.environ["VOILA_APP_IP"] = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    if dataset:
        os.environ[paths.DATASET_ENV] = dataset
    code = str(paths.code_root())
    current = os.environ.get("PYTHONPATH", "")
    if code not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (code, current) if p)


def viewer_proxy_settings(
    viewer_header: str | None,
    *,
    proxy_secret_file: str | os.PathLike | None = None,
    proxy_secret_header: str = access.DEFAULT_SECRET_HEADER,
    trusted_proxies: Iterable[str] = (),
) -> access.ProxySettings | None:
    """How to trust the reverse proxy that sends viewers' identities, or ``None`` without ``viewer_header``.

    The proxy proves itself by sending the content of ``proxy_secret_file`` in ``proxy_secret_header``, or by
    connecting from one of ``trusted_proxies`` (both checked when both are given). Raises ``ValueError`` when
    ``viewer_header`` comes without either (or they without it) and for an empty secret file,
    ``FileNotFoundError`` for a missing one.
    """
    trusted = frozenset(a.strip() for a in trusted_proxies if a.strip())
    if not viewer_header:
        if proxy_secret_file is not None or trusted:
            raise ValueError("a proxy secret or trusted proxy address is only used with --viewer-header")
        return None
    secret = None if proxy_secret_file is None else read_secret_file(proxy_secret_file, "proxy secret file")
    return access.ProxySettings(viewer_header.strip(), secret=secret, secret_header=proxy_secret_header, trusted_proxies=trusted)


def _kernel_viewer_environment(source: access.AccessSource | None) -> None:
    """No viewer is inherited from this process's environment; with viewers from a proxy (``source``, the viewer
    groups the server uses) every page kernel must be given one (``access.REQUIRED_ENV``) and reads the same groups."""
    for name in (access.VIEWER_ENV, access.GROUP_ENV, access.REQUIRED_ENV, access.ACCESS_FILE_ENV, access.ACCESS_KEY_ENV):
        os.environ.pop(name, None)
    if source is not None:
        os.environ[access.REQUIRED_ENV] = "1"
        os.environ.update(source.environment())


def _dataset_file(dataset: str | None) -> Path:
    """The file of the served dataset (the project default when ``None``); ``DatasetError`` for an unknown one."""
    from crm_analytics import datasets

    return datasets.load_dataset(dataset or None).file


def serve(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    notebooks: Iterable[str | os.PathLike] | None = None,
    open_browser: bool = False,
    execution_timeout: int = 120,
    cull_idle_timeout: int = 1800,
    pool_size: int = 0,
    allow_remote_without_token: bool = False,
    dataset: str | None = None,
    token_file: str | os.PathLike | None = None,
    max_kernels: int = 0,
    unattended_timeout: int = UNATTENDED_TIMEOUT,
    warm_kernels: int = WARM_KERNELS,
    viewer_header: str | None = None,
    proxy_secret_file: str | os.PathLike | None = None,
    proxy_secret_header: str = access.DEFAULT_SECRET_HEADER,
    trusted_proxies: Iterable[str] = (),
    access_file: str | os.PathLike | None = None,
) -> None:
    """Serve the stakeholder pages with Voilà until interrupted (blocking).

    Parameters
    ----------
    host, port : str, int
        Where to listen; 127.0.0.1 by default. A taken port is an error, never silently replaced.
    token : str, optional
        Access token; visitors open ``/?token=<token>`` once. Required for a host other than 127.0.0.1.
        Without it, ``token_file`` or the environment variable ``TOKEN_ENV`` (see ``resolve_token``). The
        token reaches Voilà inside this process, never on a command line.
    notebooks : iterable of str or path, optional
        Page notebooks (names under ``notebooks/`` or paths); default ``STAKEHOLDER_NOTEBOOKS``.
    open_browser : bool
        Open the tree page in a browser.
    execution_timeout : int
        Seconds one cell of a page may run.
    cull_idle_timeout : int
        Seconds after which an idle page kernel is shut down although its page is still open.
    pool_size : int
        Preheated kernels kept ready per page (default 0: start a kernel per visit, the reliable mode).
    allow_remote_without_token : bool
        Accept a non-local host without a token (behind an authenticating reverse proxy only).
    dataset : str, optional
        The dataset whose persisted results the pages show (default: the project's default dataset).
        An unknown dataset raises ``crm_analytics.datasets.DatasetError`` before the server starts.
    token_file : str or path, optional
        File holding the access token (keep it readable by the serving account only).
    max_kernels : int
        Most page kernels at once (0: ``default_max_kernels()``); further visits get a 503 "busy" page.
    unattended_timeout : int
        Seconds an idle kernel with no browser connected is kept (closed tabs, clients without websocket).
    warm_kernels : int
        Kernels kept started and imported for the next visits, counted against ``max_kernels`` (0: none).
    viewer_header : str, optional
        Take each visitor's identity from this header (``X-Forwarded-User``), set by a trusted reverse proxy,
        and show each viewer only their group's rows (see ``access_file``). Needs ``proxy_secret_file`` or
        ``trusted_proxies`` (see ``viewer_proxy_settings``). A request without the header, with a wrong secret,
        from another address or from a viewer in no group gets a 403 page, whatever it asks for. Without it,
        the header means nothing and every visitor sees every row.
    proxy_secret_file, proxy_secret_header : path, str
        A file whose content the proxy sends in ``proxy_secret_header`` (default ``X-Proxy-Secret``).
    trusted_proxies : iterable of str
        Addresses the proxy connects from (e.g. ``127.0.0.1``).
    access_file : path, optional
        The viewer groups and their rows. Without it (nor ``$CRM_ANALYTICS_ACCESS_FILE``): the served dataset's
        ``access:`` block when its file has one, else ``parameters/access.yaml`` (``access.serving_access``).
        Checked before the server starts; the start-up log names the groups' source.

    The pages are at ``http://<host>:<port>/voila/render/<notebook>.ipynb``; the root opens the landing page
    (``LANDING_PAGE``), which lists them with their freshness.
    """
    token = resolve_token(token, token_file)
    proxy = viewer_proxy_settings(
        viewer_header, proxy_secret_file=proxy_secret_file, proxy_secret_header=proxy_secret_header, trusted_proxies=trusted_proxies
    )
    choice = None
    if proxy is not None:  # the proxy signs visitors in: it stands for the token
        choice = access.serving_access(access_file, dataset_file=_dataset_file(dataset))
        choice.source.load()
    check_exposure(host, token, allow_remote_without_token=allow_remote_without_token or proxy is not None)
    if dataset:
        _dataset_file(dataset)
    pages = resolve_notebooks(notebooks)
    _kernel_environment(host, dataset)
    _kernel_viewer_environment(choice.source if choice else None)
    use_page_template()

    with tempfile.TemporaryDirectory(prefix="crm_pages_") as folder:
        root = stage_notebooks(pages, Path(folder))
        argv = voila_argv(
            root,
            host=host,
            port=port,
            open_browser=open_browser,
            execution_timeout=execution_timeout,
            cull_idle_timeout=cull_idle_timeout,
            pool_size=pool_size,
            max_kernels=max_kernels,
            unattended_timeout=unattended_timeout,
            warm_kernels=warm_kernels,
        )
        log.info("serving %s on http://%s:%s/", [p.name for p in pages], host, port)
        PageServer.launch_instance(argv=argv, token=token, viewer_proxy=proxy, access_choice=choice)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: ``python -m crm_analytics.serve [--host H] [--port P] [--token-file F] [NOTEBOOK ...]``."""
    parser = argparse.ArgumentParser(prog="python -m crm_analytics.serve", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="page notebooks (default: %s)" % ", ".join(STAKEHOLDER_NOTEBOOKS))
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--token", default=None, help=f"access token (shows in ps: prefer --token-file or {TOKEN_ENV})")
    parser.add_argument("--token-file", type=Path, default=None, help="file holding the access token")
    parser.add_argument("--max-kernels", type=int, default=0, help="most page kernels at once (default: from memory)")
    parser.add_argument(
        "--warm-kernels", type=int, default=WARM_KERNELS, help=f"kernels kept started and imported (default {WARM_KERNELS}; 0: none)"
    )
    parser.add_argument("--open-browser", action="store_true")
    parser.add_argument("--execution-timeout", type=int, default=120)
    parser.add_argument("--pool-size", type=int, default=0, help="preheated kernels per page (default 0: none)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset whose results the pages show (default: the project default)")
    parser.add_argument("--viewer-header", default=None, help="header in which a trusted reverse proxy sends the viewer's identity")
    parser.add_argument("--proxy-secret-file", type=Path, default=None, help="file whose content the proxy sends in --proxy-secret-header")
    parser.add_argument("--proxy-secret-header", default=access.DEFAULT_SECRET_HEADER)
    parser.add_argument("--trusted-proxy", action="append", default=[], help="address the proxy connects from (repeatable)")
    parser.add_argument("--access-file", type=Path, default=None, help=ACCESS_FILE_HELP)
    args = parser.parse_args(argv)
    serve(
        host=args.host,
        port=args.port,
        token=args.token,
        notebooks=args.notebooks or None,
        open_browser=args.open_browser,
        execution_timeout=args.execution_timeout,
        pool_size=args.pool_size,
        dataset=args.dataset,
        token_file=args.token_file,
        max_kernels=args.max_kernels,
        warm_kernels=args.warm_kernels,
        viewer_header=args.viewer_header,
        proxy_secret_file=args.proxy_secret_file,
        proxy_secret_header=args.proxy_secret_header,
        trusted_proxies=args.trusted_proxy,
        access_file=args.access_file,
    )


if __name__ == "__main__":
    main()
