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
# Configuration that lives beside a parameter set but is not one (it is read by the notebook, not injected).
CONFIGURATION_FILES = {"kpi/catalogue.yaml"}
PARAMETER_FILES = sorted(
    p for p in paths.parameters_dir().glob("*/*.yaml")
    if p.relative_to(paths.parameters_dir()).as_posix() not in CONFIGURATION_FILES
)


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


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
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
