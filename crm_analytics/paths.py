"""The one place that knows where the project's folders are.

Every other module asks here. The project root is found from the environment
variable ``CRM_ANALYTICS_HOME`` when set (tests point it at a temporary folder),
otherwise it is the folder that holds the ``crm_analytics`` package.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "CRM_ANALYTICS_HOME"
DATASET_ENV = "CRM_ANALYTICS_DATASET"
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


def default_dataset() -> str:
    """Return the dataset used when none is given.

    ``CRM_ANALYTICS_DATASET`` when set, else ``dataset:`` of ``parameters/project.yaml``, else ``demo``.
    """
    configured = os.environ.get(DATASET_ENV, "").strip()
    if configured:
        return configured
    project = parameters_dir() / "project.yaml"
    if project.is_file():
        import yaml

        with open(project, encoding="utf-8") as handle:
            name = (yaml.safe_load(handle) or {}).get("dataset")
        if name:
            return str(name)
    return DEMO_DATASET


def datasets_dir() -> Path:
    """Return ``parameters/datasets/``: one YAML file per dataset."""
    return parameters_dir() / "datasets"


def warehouse_path(dataset: str | None = None) -> Path:
    """Return one dataset's DuckDB warehouse file, ``data/warehouse/<dataset>.duckdb`` (default dataset when ``None``)."""
    return data_dir() / "warehouse" / f"{dataset or default_dataset()}.duckdb"


def outputs_dir(dataset: str | None = None) -> Path:
    """Return ``outputs/<dataset>/``, where the runs of one dataset leave their folders (default dataset when ``None``)."""
    return outputs_root() / (dataset or default_dataset())


def outputs_root() -> Path:
    """Return ``outputs/``: one folder per dataset and the index of them all."""
    return project_root() / "outputs"


def analysis_dir(analysis: str, dataset: str | None = None) -> Path:
    """Return ``outputs/<dataset>/<analysis>/``: every run of one analysis on one dataset."""
    return outputs_dir(dataset) / analysis


def latest_run_dir(analysis: str, dataset: str | None = None) -> Path:
    """Return the folder of the last successful run of ``analysis`` (``outputs/<dataset>/<analysis>/latest``).

    ``latest`` is a symlink, or, where links are unavailable, a small file holding the run id;
    both resolve to the run folder. Without a successful run the returned path does not exist.
    """
    return read_latest_pointer(analysis_dir(analysis, dataset))


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


def pages_dir() -> Path:
    """Return ``notebooks/pages/``: every notebook there is a stakeholder page (served, never run as an analysis)."""
    return notebooks_dir() / "pages"


def parameters_dir() -> Path:
    """Return ``parameters/``: parameter sets, the sources map and the schedule."""
    return code_root() / "parameters"


def sources_file(dataset: str | None = None) -> Path:
    """Return the file holding a dataset's source map: its dataset file ``parameters/datasets/<dataset>.yaml``."""
    return datasets_dir() / f"{dataset or default_dataset()}.yaml"


def resolve(path: str | os.PathLike | None, default: Path) -> Path:
    """Return ``path`` as an absolute path, or ``default`` when ``path`` is empty.

    Relative paths are taken from the project root, never from the working
    directory, so a notebook gives the same answer wherever it is started.
    """
    if path is None or str(path) == "":
        return default
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else project_root() / candidate


def resolve_data(path: str | os.PathLike | None, default: Path) -> Path:
    """Return a data path from a dataset file as an absolute path, or ``default`` when ``path`` is empty.

    Relative paths are taken from the project root (the data home, ``CRM_ANALYTICS_HOME``), except
    data shipped with the code (under ``data/external/``), which is found in the checkout when the
    home does not hold a copy.
    """
    resolved = resolve(path, default)
    relative = Path(path).expanduser() if path else None
    if relative is not None and not relative.is_absolute() and relative.parts[:2] == ("data", "external") and not resolved.exists():
        return code_root() / relative
    return resolved


def resolve_parameters_file(path: str | os.PathLike) -> Path:
    """Return a file named in a dataset file relative to ``parameters/`` (e.g. ``targets/demo.yaml``) as an absolute path."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else parameters_dir() / candidate

