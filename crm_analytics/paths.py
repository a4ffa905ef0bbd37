"""The one place that knows where the project's folders are.

Every other module asks here. The project root is found from the environment
variable ``CRM_ANALYTICS_HOME`` when set (tests point it at a temporary folder),
otherwise it is the folder that holds the ``crm_analytics`` package.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "CRM_ANALYTICS_HOME"
DEMO_DATASET = "demo"


def project_root() -> Path:
    """Return the absolute project root."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parent.parent


def package_root() -> Path:
    """Return the folder of the installed ``crm_analytics`` package (holds its code, never data)."""
    return Path(__file__).resolve().parent


def code_root() -> Path:
    """Return the checkout holding ``notebooks/`` and ``parameters/``, independent of ``CRM_ANALYTICS_HOME``."""
    return package_root().parent


def data_dir() -> Path:
    """Return ``data/`` under the project root."""
    return project_root() / "data"


def raw_dir(dataset: str = DEMO_DATASET) -> Path:
    """Return the folder of one raw dataset's source exports, ``data/raw/<dataset>/``."""
    return data_dir() / "raw" / dataset


def ground_truth_dir(dataset: str = DEMO_DATASET) -> Path:
    """Return the ground-truth folder written beside a generated dataset."""
    return raw_dir(dataset) / "ground_truth"


def external_dir() -> Path:
    """Return ``data/external/``: public reference data shipped with the project."""
    return code_root() / "data" / "external"


def warehouse_path() -> Path:
    """Return the DuckDB warehouse file, ``data/warehouse/crm.duckdb``."""
    return data_dir() / "warehouse" / "crm.duckdb"


def outputs_dir() -> Path:
    """Return ``outputs/``, where runs leave their folders."""
    return project_root() / "outputs"


def analysis_dir(analysis: str) -> Path:
    """Return ``outputs/<analysis>/``: every run of one analysis."""
    return outputs_dir() / analysis


def latest_run_dir(analysis: str) -> Path:
    """Return the folder of the last successful run of ``analysis`` (``outputs/<analysis>/latest``).

    ``latest`` is a symlink, or, where links are unavailable, a small file holding the run id;
    both resolve to the run folder. Without a successful run the returned path does not exist.
    """
    return read_latest_pointer(analysis_dir(analysis))


def read_latest_pointer(analysis_root: Path) -> Path:
    """Resolve ``analysis_root/latest`` (a symlink or a file holding the run id) to a run folder path."""
    pointer = analysis_root / "latest"
    if pointer.is_symlink():
        return analysis_root / os.readlink(pointer)
    if pointer.is_file():
        return analysis_root / pointer.read_text(encoding="utf-8").strip()
    return pointer


def notebooks_dir() -> Path:
    """Return ``notebooks/``: one notebook per analysis."""
    return code_root() / "notebooks"


def parameters_dir() -> Path:
    """Return ``parameters/``: parameter sets, the sources map and the schedule."""
    return code_root() / "parameters"


def sources_file() -> Path:
    """Return the default source map, ``parameters/sources.yaml``."""
    return parameters_dir() / "sources.yaml"


def resolve(path: str | os.PathLike | None, default: Path) -> Path:
    """Return ``path`` as an absolute path, or ``default`` when ``path`` is empty.

    Relative paths are taken from the project root, never from the working
    directory, so a notebook gives the same answer wherever it is started.
    """
    if path is None or str(path) == "":
        return default
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else project_root() / candidate
