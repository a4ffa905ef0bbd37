"""Every project notebook has a literal parameters cell and every parameter file matches it."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from crm_analytics import paths, runner, scheduler

NOTEBOOKS = sorted(paths.notebooks_dir().glob("*.ipynb"))
# every committed notebook, the stakeholder pages of notebooks/pages/ included
COMMITTED_NOTEBOOKS = sorted(p for p in paths.notebooks_dir().rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
# Configuration that lives beside a parameter set but is not one (it is read by the notebook, not injected).
CONFIGURATION_FILES = {"kpi/catalogue.yaml"}
# Folders of configuration read by the package, not parameter sets of a notebook.
CONFIGURATION_FOLDERS = {"datasets", "targets"}
PARAMETER_FILES = sorted(
    p for p in paths.parameters_dir().glob("*/*.yaml")
    if p.relative_to(paths.parameters_dir()).as_posix() not in CONFIGURATION_FILES
    and p.parent.name not in CONFIGURATION_FOLDERS
)
DEFAULT_FILES = [p for p in PARAMETER_FILES if p.name == "default.yaml"]


def _ids(items):
    return [str(p.relative_to(paths.code_root())) for p in items]


def _parameters_cell(notebook: Path):
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return nb, cells


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_declares_output_dir_and_warehouse_path(notebook):
    _, cells = _parameters_cell(notebook)
    assert len(cells) == 1, f"{notebook.name}: expected exactly one cell tagged 'parameters', found {len(cells)}"
    declared = papermill.inspect_notebook(str(notebook))
    missing = {"output_dir", "warehouse_path"} - set(declared)
    assert not missing, f"{notebook.name}: the parameters cell does not declare {sorted(missing)}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_declares_an_empty_dataset(notebook):
    """The runner injects the dataset; run by hand, an empty value means the project's default dataset."""
    declared = papermill.inspect_notebook(str(notebook))
    assert "dataset" in declared, f"{notebook.name}: the parameters cell does not declare dataset"
    assert declared["dataset"]["default"] == '""', f"{notebook.name}: dataset must default to \"\" (the project default)"


@pytest.mark.parametrize("parameter_file", DEFAULT_FILES, ids=_ids(DEFAULT_FILES))
def test_default_parameters_leave_the_dataset_to_the_run(parameter_file):
    """A dataset named in default.yaml would replace the project default for that analysis only."""
    values = runner.load_parameters_file(parameter_file)
    assert values.get("dataset", "") == "", f"{parameter_file}: leave dataset empty (use --dataset or parameters/project.yaml)"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_parameters_cell_holds_literals_only(notebook):
    _, [cell] = _parameters_cell(notebook)
    tree = ast.parse(cell.source)
    for statement in tree.body:
        assert isinstance(statement, (ast.Assign, ast.AnnAssign)), (
            f"{notebook.name}: line {statement.lineno} of the parameters cell is not an assignment"
        )
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        assert all(isinstance(t, ast.Name) for t in targets), f"{notebook.name}: line {statement.lineno}: assign plain names"
        try:
            ast.literal_eval(statement.value)
        except ValueError:
            pytest.fail(f"{notebook.name}: line {statement.lineno} of the parameters cell is not a literal: "
                        f"{ast.get_source_segment(cell.source, statement)}")


@pytest.mark.parametrize("notebook", COMMITTED_NOTEBOOKS, ids=_ids(COMMITTED_NOTEBOOKS))
def test_committed_notebook_has_no_outputs_or_execution_counts(notebook):
    nb, _ = _parameters_cell(notebook)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{notebook.name}: cells {dirty} carry outputs or execution counts (strip them before committing)"


@pytest.mark.parametrize("parameter_file", PARAMETER_FILES, ids=_ids(PARAMETER_FILES))
def test_parameter_file_keys_are_declared(parameter_file):
    analysis = parameter_file.parent.name
    notebook = paths.notebooks_dir() / f"{analysis}.ipynb"
    assert notebook.exists(), f"{parameter_file}: there is no notebooks/{analysis}.ipynb"
    values = runner.load_parameters_file(parameter_file)
    runner.check_parameters(analysis, values, runner.declared_parameters(notebook))


@pytest.mark.parametrize("parameter_file", PARAMETER_FILES, ids=_ids(PARAMETER_FILES))
def test_parameter_file_dates_are_quoted(parameter_file):
    plain = yaml.safe_load(parameter_file.read_text(encoding="utf-8")) or {}
    import datetime as dt

    unquoted = [k for k, v in plain.items() if isinstance(v, (dt.date, dt.datetime))]
    assert not unquoted, f"{parameter_file}: quote the dates of {unquoted} (ISO strings, parsed in the notebook)"


def test_scheduled_analyses_exist_and_their_files_match():
    config = scheduler.load_schedule()
    known = runner.list_analyses()
    for job in config.jobs:
        assert job.analysis in known, f"schedule job {job.id!r}: no notebooks/{job.analysis}.ipynb"
        if job.parameters:
            path = paths.code_root() / job.parameters
            assert path.is_file(), f"schedule job {job.id!r}: parameter file {job.parameters} not found"
            notebook = paths.notebooks_dir() / f"{job.analysis}.ipynb"
            runner.check_parameters(job.analysis, runner.load_parameters_file(path), runner.declared_parameters(notebook))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_papermill_reads_every_parameter(notebook):
    """papermill skips a parameter line whose comment contains '=' (the runner would then refuse the notebook)."""
    _, [cell] = _parameters_cell(notebook)
    assigned = set()
    for statement in ast.parse(cell.source).body:
        targets = statement.targets if isinstance(statement, ast.Assign) else [getattr(statement, "target", None)]
        assigned.update(t.id for t in targets if isinstance(t, ast.Name))
    unread = sorted(assigned - set(papermill.inspect_notebook(str(notebook))))
    assert not unread, f"{notebook.name}: papermill cannot read {unread}; keep '=' out of their comments"


_CONCRETE_DATE = __import__("re").compile(r"\b\d{4}[-/]\d{1,2}[-/]\d{1,2}\b")
_EXPORT_DATE_PARAMETERS: set[tuple[str, str]] = set()  # (analysis, parameter) pairs allowed to hold a date: none


def _concrete_dates(value) -> list[str]:
    """Every concrete date written in ``value`` (strings, and strings inside lists and mappings)."""
    if isinstance(value, str):
        return _CONCRETE_DATE.findall(value)
    if isinstance(value, dict):
        return [d for v in value.values() for d in _concrete_dates(v)]
    if isinstance(value, (list, tuple)):
        return [d for v in value for d in _concrete_dates(v)]
    import datetime as dt

    return [value.isoformat()] if isinstance(value, (dt.date, dt.datetime)) else []


_ANALYSIS_PARAMETER_FILES = [p for p in PARAMETER_FILES if p.parent.name != "datasets"]  # dataset files hold facts, dates included


@pytest.mark.parametrize("parameter_file", _ANALYSIS_PARAMETER_FILES, ids=_ids(_ANALYSIS_PARAMETER_FILES))
def test_parameter_files_hold_no_concrete_date(parameter_file):
    """Snapshot and window dates default to empty: derived from the data (crm_analytics.dates)."""
    analysis = parameter_file.parent.name
    values = yaml.safe_load(parameter_file.read_text(encoding="utf-8")) or {}
    found = {k: _concrete_dates(v) for k, v in values.items() if (analysis, k) not in _EXPORT_DATE_PARAMETERS}
    assert not {k: d for k, d in found.items() if d}, f"{parameter_file}: concrete dates; leave them empty to derive them from the data"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_parameters_cell_holds_no_concrete_date(notebook):
    declared = papermill.inspect_notebook(str(notebook))
    found = {
        name: _concrete_dates(ast.literal_eval(spec["default"]))
        for name, spec in declared.items()
        if (notebook.stem, name) not in _EXPORT_DATE_PARAMETERS
    }
    assert not {k: d for k, d in found.items() if d}, f"{notebook.name}: concrete dates in the parameters cell"


def test_schedule_holds_no_concrete_date():
    path = paths.parameters_dir() / "schedule.yaml"
    assert not _concrete_dates(yaml.safe_load(path.read_text(encoding="utf-8")))
