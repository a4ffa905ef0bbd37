"""Serve the stakeholder pages: standalone Voilà over the notebooks meant for people who never see code.

Only the notebooks named in ``STAKEHOLDER_NOTEBOOKS`` (or passed explicitly) are served: they are copied
into a private folder that becomes Voilà's root, so the analysts' notebooks, parameters and outputs are not
reachable through the server. Settings, each a Voilà option:

- bound to 127.0.0.1 unless told otherwise (``--Voila.ip``); the port is not silently changed when taken
  (``--Voila.port_retries=0``);
- sources stripped and tracebacks hidden (``--strip_sources=True``, ``--show_tracebacks=False``);
- an optional access token (``--token``); without one anybody who reaches the port sees every page, so a
  host other than 127.0.0.1 without a token is refused unless ``allow_remote_without_token`` is set;
- ``.ipynb`` and ``.py`` files refused at ``/voila/files/`` (only images are served);
- a per-cell execution timeout (``--VoilaExecutor.timeout``);
- idle kernels culled (``--MappingKernelManager.cull_idle_timeout``, ``cull_interval``), also while a
  browser tab stays open, so forgotten tabs do not hold kernels forever;
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

Every visit starts a kernel and runs the page notebook, so pages read results persisted by the scheduled
runs (see ``crm_analytics.pages``) instead of recomputing. One server shows one dataset: page kernels
inherit ``CRM_ANALYTICS_DATASET``, so they read ``outputs/<dataset>/`` (the project default unless
``dataset`` is given).

Run ``python -m crm_analytics.serve --help`` (the ``crm-analytics serve`` command calls ``serve``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, MutableMapping, Sequence
from pathlib import Path

from crm_analytics import paths

log = logging.getLogger(__name__)

STAKEHOLDER_NOTEBOOKS: tuple[str, ...] = ("dashboard",)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8866
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STATIC_ALLOWLIST = [r".*\.(png|jpg|jpeg|gif|svg)$"]
STATIC_DENYLIST = [r".*\.(ipynb|py|parquet|csv|json|yaml|yml|duckdb)$"]
TEMPLATE = "crm"
TEMPLATE_ROOT = Path(__file__).resolve().parent / "voila_templates"


def resolve_notebooks(notebooks: Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """Return the page notebooks as absolute paths.

    A bare name (``"dashboard"``) means ``notebooks/<name>.ipynb``; a path is taken as is. Raises
    ``FileNotFoundError`` naming every missing notebook, ``ValueError`` when two pages share a file name.
    """
    names = STAKEHOLDER_NOTEBOOKS if notebooks is None else tuple(notebooks)
    found = []
    for name in names:
        text = str(name)
        path = Path(text) if (os.sep in text or text.endswith(".ipynb")) else paths.notebooks_dir() / f"{text}.ipynb"
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
    cull_interval: int = 60,
    pool_size: int = 0,
) -> list[str]:
    """Return the Voilà command-line arguments for serving ``root_dir`` with the settings of this module.

    ``pool_size`` kernels per page are kept preheated (default 0: a kernel per visit): they run the page's
    imports in advance and wait in ``pages.wait_for_visitor`` until a visitor arrives. Preheating opens pages
    faster but has left a visit unrendered now and then under back-to-back loads, so it is off by default.
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
    preheated kernel calls back to when its visitor arrives, and the dataset whose outputs the pages read."""
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
) -> None:
    """Serve the stakeholder pages with Voilà until interrupted (blocking).

    Parameters
    ----------
    host, port : str, int
        Where to listen; 127.0.0.1 by default. A taken port is an error, never silently replaced.
    token : str, optional
        Access token; visitors open ``/?token=<token>`` once. Required for a host other than 127.0.0.1.
    notebooks : iterable of str or path, optional
        Page notebooks (names under ``notebooks/`` or paths); default ``STAKEHOLDER_NOTEBOOKS``.
    open_browser : bool
        Open the tree page in a browser.
    execution_timeout : int
        Seconds one cell of a page may run.
    cull_idle_timeout : int
        Seconds after which an idle page kernel is shut down.
    pool_size : int
        Preheated kernels kept ready per page (default 0: start a kernel per visit, the reliable mode).
    allow_remote_without_token : bool
        Accept a non-local host without a token (behind an authenticating reverse proxy only).
    dataset : str, optional
        The dataset whose persisted results the pages show (default: the project's default dataset).
        An unknown dataset raises ``crm_analytics.datasets.DatasetError`` before the server starts.

    The pages are at ``http://<host>:<port>/voila/render/<notebook>.ipynb``; the root lists them.
    """
    check_exposure(host, token, allow_remote_without_token=allow_remote_without_token)
    if dataset:
        from crm_analytics import datasets

        datasets.load_dataset(dataset)
    pages = resolve_notebooks(notebooks)
    _kernel_environment(host, dataset)
    use_page_template()
    from voila.app import Voila

    with tempfile.TemporaryDirectory(prefix="crm_pages_") as folder:
        root = stage_notebooks(pages, Path(folder))
        argv = voila_argv(
            root,
            host=host,
            port=port,
            token=token,
            open_browser=open_browser,
            execution_timeout=execution_timeout,
            cull_idle_timeout=cull_idle_timeout,
            pool_size=pool_size,
        )
        log.info("serving %s on http://%s:%s/", [p.name for p in pages], host, port)
        Voila.launch_instance(argv=argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: ``python -m crm_analytics.serve [--host H] [--port P] [--token T] [NOTEBOOK ...]``."""
    parser = argparse.ArgumentParser(prog="python -m crm_analytics.serve", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="page notebooks (default: %s)" % ", ".join(STAKEHOLDER_NOTEBOOKS))
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--token", default=os.environ.get("CRM_ANALYTICS_PAGES_TOKEN") or None)
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
    )


if __name__ == "__main__":
    main()
