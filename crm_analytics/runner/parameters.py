"""What a run is: the analysis's notebook, its dataset and its parameters, checked before anything runs.

Every run reads one dataset (``parameters/datasets/<name>.yaml``): the explicit parameter
``dataset``, else the ``dataset`` argument (the command line's ``--dataset``), else the project
default (:func:`crm_analytics.paths.default_dataset`). The runner checks that the dataset exists,
injects its name into notebooks that declare ``dataset``, defaults ``warehouse_path`` to the
dataset's warehouse and sets ``CRM_ANALYTICS_DATASET`` for the kernel, so whatever the notebook
reads by default (another analysis's latest results included) belongs to the same dataset.

Parameters come from ``parameters/<analysis>/default.yaml``, then a parameter file, then the
explicit values; each key must be declared in the notebook's ``parameters`` cell and its value
must fit the type of the notebook's default (:mod:`crm_analytics.parameter_types`). The errors
here are the runner's user-facing ones: one clear line, no traceback needed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml

from crm_analytics import datasets, parameter_types, paths

KERNEL_NAME = "python3"
CLEANSING = "cleansing"
DATASET_PARAMETER = "dataset"
REQUIRED_PARAMETERS = ("output_dir",)

_ANALYSIS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


class RunnerError(Exception):
    """Base class of the runner's user-facing errors (one clear line, no traceback needed)."""


class UnknownAnalysisError(RunnerError, LookupError):
    """The analysis has no notebook. The message lists the valid names."""


class ParameterError(RunnerError, ValueError):
    """A parameter is not declared by the notebook, or a parameter file is unreadable."""


class UnknownDatasetError(RunnerError, LookupError):
    """The dataset of a run has no usable file under ``parameters/datasets/``."""


# ----------------------------------------------------------------------------- names and parameters


def list_analyses(notebook_dir: str | Path | None = None) -> list[str]:
    """Return the analyses: the stems of the top-level ``*.ipynb`` in the notebooks folder, sorted."""
    folder = Path(notebook_dir) if notebook_dir else paths.notebooks_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.ipynb") if p.is_file() and not p.name.startswith((".", "_")))


def notebook_path(analysis: str, notebook_dir: str | Path | None = None) -> Path:
    """Return the absolute notebook path of ``analysis``; raise :class:`UnknownAnalysisError` if there is none."""
    folder = (Path(notebook_dir) if notebook_dir else paths.notebooks_dir()).resolve()
    known = list_analyses(folder)
    if _ANALYSIS_NAME.match(analysis) and analysis in known:
        return folder / f"{analysis}.ipynb"
    hint = _did_you_mean(analysis, known)
    valid = ", ".join(known) if known else f"none (no notebooks in {folder})"
    raise UnknownAnalysisError(f"unknown analysis {analysis!r}{hint}; valid analyses: {valid}")


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _StringDateLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that keeps ISO dates and times as strings (notebooks parse them)."""


_StringDateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_value(text: str) -> Any:
    """Parse one command-line parameter value as YAML: numbers and booleans typed, dates kept as strings.

    An empty value is the empty string.
    """
    if text.strip() == "":
        return ""
    return yaml.load(text, Loader=_StringDateLoader)  # noqa: S506 - a SafeLoader subclass


def load_parameters_file(path: str | Path) -> dict:
    """Read a flat YAML parameter set; dates stay ISO strings. Raise :class:`ParameterError` if unusable."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            values = yaml.load(handle, Loader=_StringDateLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ParameterError(f"parameter file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"parameter file {path} is not valid YAML: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ParameterError(f"parameter file {path} must hold a mapping of name: value, not {type(values).__name__}")
    return dict(values)


def declared_parameters(notebook: str | Path) -> dict[str, dict]:
    """Return the parameters declared in a notebook's ``parameters`` cell (``papermill.inspect_notebook``).

    A notebook without kernel metadata is read as Python, the kernel it will run on.
    """
    try:
        return dict(papermill.inspect_notebook(str(notebook)))
    except ValueError as exc:
        if "kernel name" not in str(exc):
            raise
    from papermill.inspection import _infer_parameters

    nb = nbformat.read(notebook, as_version=4)
    return {p.name: dict(p._asdict()) for p in _infer_parameters(nb, name=KERNEL_NAME, language="python")}


def check_parameters(analysis: str, values: Mapping[str, Any], declared: Iterable[str]) -> None:
    """Raise :class:`ParameterError` when ``values`` holds a key the notebook does not declare.

    The message names the unknown keys, suggests the closest declared name and lists the valid ones.
    Every notebook must declare ``output_dir``.
    """
    declared = sorted(declared)
    missing = [name for name in REQUIRED_PARAMETERS if name not in declared]
    if missing:
        raise ParameterError(
            f"notebook {analysis!r} must declare {', '.join(missing)} in a cell tagged 'parameters'"
            f" (declared: {', '.join(declared) or 'nothing'})"
        )
    unknown = [key for key in values if key not in declared]
    if unknown:
        hints = "; ".join(f"{key!r}{_did_you_mean(key, declared)}" for key in unknown)
        raise ParameterError(
            f"unknown parameter for {analysis!r}: {hints}; valid parameters: {', '.join(declared)}"
        )


def check_parameter_types(
    analysis: str, values: Mapping[str, Any], declared: Mapping[str, Mapping[str, Any]], *, origins: Mapping[str, str] | None = None
) -> None:
    """Raise :class:`ParameterError` when a value does not fit the type of the notebook's default.

    Dates must parse as ISO dates, ints be ints, choices among the allowed values
    (:mod:`crm_analytics.parameter_types`); the message names the parameter, the value, where it
    came from (``origins``) and the expected type. ``dataset`` and ``output_dir`` are the runner's own.
    """
    try:
        parameter_types.check_types(analysis, values, declared, origins=origins, skip=(DATASET_PARAMETER, "output_dir"))
    except parameter_types.TypeMismatch as exc:
        raise ParameterError(str(exc)) from None


def choose_dataset(*, explicit: Any = None, given: str | None = None, from_files: Any = None) -> str:
    """Return the dataset a run reads and check that it exists.

    Parameters
    ----------
    explicit : str, optional
        ``dataset`` among the explicit parameters (``-p dataset=...``); wins when non-empty.
    given : str, optional
        The run's dataset argument (``--dataset``).
    from_files : str, optional
        ``dataset`` of a parameter file or ``default.yaml``; used when neither of the above is given.

    Returns
    -------
    str
        The dataset name; the project default (:func:`crm_analytics.paths.default_dataset`) when
        nothing is given.

    Raises
    ------
    UnknownDatasetError
        The dataset file is missing or unusable (the message lists the known datasets).
    """
    name = next((str(v).strip() for v in (explicit, given, from_files) if v not in (None, "") and str(v).strip()), "")
    name = name or paths.default_dataset()
    try:
        datasets.load_dataset(name)
    except datasets.DatasetError as exc:
        raise UnknownDatasetError(str(exc)) from None
    return name


def resolve_parameters(
    analysis: str,
    *,
    notebook: Path,
    parameters: Mapping[str, Any] | None = None,
    parameters_file: str | Path | None = None,
    parameters_root: str | Path | None = None,
    dataset: str | None = None,
) -> dict:
    """Merge ``parameters/<analysis>/default.yaml``, then ``parameters_file``, then ``parameters``; check the keys.

    Non-empty relative values of keys ending in ``_path`` or ``_dir`` are made absolute against the
    project root (parameter files name project files). The dataset is chosen by :func:`choose_dataset`
    (``parameters["dataset"]``, else ``dataset``, else a file's value, else the project default) and
    injected when the notebook declares ``dataset``; an empty or absent ``warehouse_path`` (when
    declared) becomes that dataset's warehouse, so the run record says which file was read.
    ``output_dir`` is added later.
    """
    merged, _ = resolve_parameters_and_dataset(analysis, notebook=notebook, parameters=parameters, parameters_file=parameters_file,
                                               parameters_root=parameters_root, dataset=dataset)
    return merged


def resolve_parameters_and_dataset(
    analysis: str,
    *,
    notebook: Path,
    parameters: Mapping[str, Any] | None,
    parameters_file: str | Path | None,
    parameters_root: str | Path | None,
    dataset: str | None,
) -> tuple[dict, str]:
    """:func:`resolve_parameters` plus the chosen dataset (also for notebooks that do not declare it)."""
    root = Path(parameters_root) if parameters_root else paths.parameters_dir()
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}  # parameter -> where its value came from, for type errors
    default = root / analysis / "default.yaml"
    if default.is_file():
        merged.update(load_parameters_file(default))
        origins.update(dict.fromkeys(merged, str(default)))
    if parameters_file:
        from_file = load_parameters_file(parameters_file)
        merged.update(from_file)
        origins.update(dict.fromkeys(from_file, str(parameters_file)))
    explicit = dict(parameters or {})
    origins.update(dict.fromkeys(explicit, "the explicit parameters (-p)"))
    chosen = choose_dataset(
        explicit=explicit.get(DATASET_PARAMETER), given=dataset, from_files=merged.get(DATASET_PARAMETER)
    )
    merged.update(explicit)
    declared = declared_parameters(notebook)
    check_parameters(analysis, merged, declared)
    check_parameter_types(analysis, merged, declared, origins=origins)
    for key, value in merged.items():
        if key.endswith(("_path", "_dir")) and isinstance(value, str) and value:
            merged[key] = str(paths.resolve(value, Path(value)))
    if DATASET_PARAMETER in declared:
        merged[DATASET_PARAMETER] = chosen
    if "warehouse_path" in declared and not merged.get("warehouse_path"):
        merged["warehouse_path"] = str(paths.warehouse_path(chosen))
    return merged, chosen


def spread_parameters(
    common: Mapping[str, Any],
    analyses: Iterable[str],
    *,
    notebook_dir: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Give each analysis the keys of ``common`` its notebook declares (``run-all -p key=value``).

    Returns ``{analysis: {key: value}}``. A key that no notebook declares raises
    :class:`ParameterError` naming it with the closest declared name.
    """
    names = list(analyses)
    declared = {name: set(declared_parameters(notebook_path(name, notebook_dir))) for name in names}
    everywhere = set().union(*declared.values()) if declared else set()
    unknown = [key for key in common if key not in everywhere]
    if unknown:
        hints = "; ".join(f"{key!r}{_did_you_mean(key, everywhere)}" for key in unknown)
        raise ParameterError(f"no analysis declares the parameter {hints}")
    return {name: {k: v for k, v in common.items() if k in declared[name]} for name in names}


def batch_parameters(
    names: Iterable[str],
    *,
    dataset: str | None = None,
    common_parameters: Mapping[str, Any] | None = None,
    parameters_file: str | Path | None = None,
    parameters_by_analysis: Mapping[str, Mapping[str, Any]] | None = None,
    notebook_dir: str | Path | None = None,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """The dataset of a batch and each analysis's explicit parameters (see :func:`crm_analytics.runner.run_all`).

    The dataset is chosen as for a single run (:func:`choose_dataset`: ``common_parameters``, then
    ``dataset``, then the file). Raises :class:`UnknownDatasetError` or :class:`ParameterError`
    (a key of ``common_parameters`` or of the file that no analysis declares) before anything runs.
    """
    names = list(names)
    from_file = dict(load_parameters_file(parameters_file)) if parameters_file else {}
    chosen = choose_dataset(
        explicit=(common_parameters or {}).get(DATASET_PARAMETER), given=dataset, from_files=from_file.get(DATASET_PARAMETER)
    )
    shared = from_file | dict(common_parameters or {})
    if DATASET_PARAMETER in shared:
        shared[DATASET_PARAMETER] = chosen  # one dataset for the whole batch
    spread = spread_parameters(shared, names, notebook_dir=notebook_dir) if shared else {}
    by_analysis = {name: {**spread.get(name, {}), **dict((parameters_by_analysis or {}).get(name) or {})} for name in names}
    return chosen, by_analysis
