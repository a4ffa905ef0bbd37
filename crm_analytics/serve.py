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
  visitor's browser contacts no host but the page server; visitors cannot switch back to another template
  (``allow_template_override=NO``).

Voilà 0.5 finds templates only in the Jupyter data directories (``<dir>/voila/templates/<name>`` or
``<dir>/nbconvert/templates/<name>`` for each ``<dir>`` of ``jupyter_core.paths.jupyter_path()``); the
``Voila.template_paths`` option is overwritten as soon as a template name is set. So ``serve`` puts
``TEMPLATE_ROOT`` first on ``JUPYTER_PATH``. The template sits under ``nbconvert/templates/`` rather than
``voila/templates/``: Voilà takes the first existing ``<dir>/voila`` as its data directory (themes, schemas),
which must stay the installed one.

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
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import tornado.web
from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Integer
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler

from crm_analytics import paths
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
) -> list[str]:
    """Return the Voilà command-line arguments for serving ``root_dir`` with the settings of this module.

    ``cull_idle_timeout`` (seconds) applies to kernels whose page is still open; ``unattended_timeout``
    (seconds) to kernels no browser is connected to; both are checked every ``cull_interval`` seconds.
    ``max_kernels`` caps the page kernels (0: ``default_max_kernels()``).

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
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"token file not found: {path}")
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"token file {path} is empty")
        return text
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


class _Admission:
    """One page request let in under the cap; ``has_kernel`` once it has started its kernel (``kernel_id``)."""

    has_kernel = False
    kernel_id: str | None = None


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
    """

    max_kernels = Integer(0, config=True, help="Most page kernels at once (0: from the machine's memory).")
    unattended_timeout = Integer(
        UNATTENDED_TIMEOUT, config=True, help="Seconds an idle kernel without a browser connection is kept."
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._starting = 0
        self._promised = 0
        self._rendering: set[str] = set()  # kernels whose page request is still running its cells

    @property
    def kernel_limit(self) -> int:
        """The cap in force (``max_kernels`` or the machine's default)."""
        return self.max_kernels if self.max_kernels > 0 else default_max_kernels()

    def page_kernel_count(self) -> int:
        """Kernels running, starting, or promised to a request let in that has not started one yet."""
        return len(self._kernels) + self._starting + self._promised

    def admit(self) -> _Admission | None:
        """Promise a kernel to a page request, or return ``None`` when the cap is reached."""
        if self.page_kernel_count() >= self.kernel_limit:
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
        self._starting += 1
        try:
            kernel_id = await super().start_kernel(*args, **kwargs)
        finally:
            self._starting -= 1
        if admission is not None:
            admission.kernel_id = kernel_id
            self._rendering.add(kernel_id)
        return kernel_id

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
        last_activity = getattr(kernel, "last_activity", None)
        if getattr(kernel, "execution_state", None) != "idle" or last_activity is None:
            return False
        return (now or datetime.now(timezone.utc)) - last_activity > timedelta(seconds=self.unattended_timeout)

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
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


class PageHandler(TornadoVoilaHandler):
    """Voilà's page handler behind the kernel cap: beyond it, a 503 "busy" page with ``Retry-After``."""

    @tornado.web.authenticated
    async def get(self, path=None):
        admission = self.kernel_manager.admit()
        if admission is None:
            self.set_status(503)
            self.set_header("Retry-After", str(BUSY_RETRY_AFTER))
            self.set_header("Cache-Control", "no-store")
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(BUSY_PAGE.format(retry=BUSY_RETRY_AFTER))
            return
        reset = _current_admission.set(admission)
        try:
            await super().get(path)
        finally:
            _current_admission.reset(reset)
            self.kernel_manager.settle(admission)
            self.kernel_manager.rendered(admission)


class PageServer(Voila):
    """Voilà with ``PageHandler`` in place of its page handler (the kernel cap needs ``PageKernelManager``)."""

    def init_handlers(self) -> list:
        return [
            (spec[0], PageHandler, *spec[2:]) if spec[1] is TornadoVoilaHandler else spec for spec in super().init_handlers()
        ]


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

    The pages are at ``http://<host>:<port>/voila/render/<notebook>.ipynb``; the root opens the landing page
    (``LANDING_PAGE``), which lists them with their freshness.
    """
    token = resolve_token(token, token_file)
    check_exposure(host, token, allow_remote_without_token=allow_remote_without_token)
    if dataset:
        from crm_analytics import datasets

        datasets.load_dataset(dataset)
    pages = resolve_notebooks(notebooks)
    _kernel_environment(host, dataset)
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
        )
        log.info("serving %s on http://%s:%s/", [p.name for p in pages], host, port)
        PageServer.launch_instance(argv=argv, token=token)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: ``python -m crm_analytics.serve [--host H] [--port P] [--token-file F] [NOTEBOOK ...]``."""
    parser = argparse.ArgumentParser(prog="python -m crm_analytics.serve", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="page notebooks (default: %s)" % ", ".join(STAKEHOLDER_NOTEBOOKS))
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--token", default=None, help=f"access token (shows in ps: prefer --token-file or {TOKEN_ENV})")
    parser.add_argument("--token-file", type=Path, default=None, help="file holding the access token")
    parser.add_argument("--max-kernels", type=int, default=0, help="most page kernels at once (default: from memory)")
    parser.add_argument("--open-browser", action="store_true")
    parser.add_argument("--execution-timeout", type=int, default=120)
    parser.add_argument("--pool-size", type=int, default=0, help="preheated kernels per page (default 0: none)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset whose results the pages show (default: the project default)")
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
    )


if __name__ == "__main__":
    main()
