"""Tests of crm_analytics.runner: parameters, run records, statuses, the latest pointer and the index."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import filelock
import nbformat
import pandas as pd
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from crm_analytics import paths, report_index, runner

FIXTURES = Path(__file__).resolve().parent / "notebooks"


@pytest.fixture
def run(tmp_path):
    """Run a fixture notebook into ``tmp_path/outputs`` with no project parameter files."""

    def _run(analysis: str, **kwargs):
        kwargs.setdefault("notebook_dir", FIXTURES)
        kwargs.setdefault("output_root", tmp_path / "outputs")
        kwargs.setdefault("parameters_root", tmp_path / "parameters")
        return runner.run_analysis(analysis, **kwargs)

    return _run


def _record(result) -> dict:
    return json.loads((result.run_dir / "run.json").read_text())


# ----------------------------------------------------------------------------- parameters


def test_parse_value_types_numbers_and_booleans_but_keeps_dates_as_text():
    assert runner.parse_value("3") == 3
    assert runner.parse_value("0.5") == 0.5
    assert runner.parse_value("true") is True
    assert runner.parse_value("2024-03-01") == "2024-03-01"
    assert runner.parse_value("2024-03-01T10:00:00") == "2024-03-01T10:00:00"
    assert runner.parse_value("[day, week]") == ["day", "week"]
    assert runner.parse_value("") == ""


def test_parameter_file_keeps_dates_as_strings(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("as_of: 2024-01-31\nn_rows: 5\n")
    assert runner.load_parameters_file(path) == {"as_of": "2024-01-31", "n_rows": 5}


def test_parameter_file_must_be_a_mapping(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(runner.ParameterError, match="mapping"):
        runner.load_parameters_file(path)


def test_unknown_parameter_is_refused_with_did_you_mean(tmp_path):
    with pytest.raises(runner.ParameterError) as info:
        runner.run_analysis(
            "ok", parameters={"n_row": 2}, notebook_dir=FIXTURES, output_root=tmp_path, parameters_root=tmp_path
        )
    message = str(info.value)
    assert "did you mean 'n_rows'" in message
    assert "valid parameters: as_of, label, n_rows, output_dir, warehouse_path" in message
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_unknown_key_in_default_yaml_is_refused(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "default.yaml").write_text("lable: x\n")
    with pytest.raises(runner.ParameterError, match="did you mean 'label'"):
        runner.resolve_parameters("ok", notebook=FIXTURES / "ok.ipynb", parameters_root=tmp_path)


def test_a_value_of_the_wrong_type_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(runner.ParameterError) as info:
        runner.run_analysis("ok", parameters={"as_of": "notadate"}, notebook_dir=FIXTURES, output_root=tmp_path / "outputs",
                            parameters_root=tmp_path)
    assert "parameter 'as_of' of 'ok' is 'notadate'" in str(info.value) and "expected an ISO date" in str(info.value)
    assert not (tmp_path / "outputs").exists()


def test_a_wrong_type_in_a_parameter_file_names_the_file(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "default.yaml").write_text("n_rows: 2.5\n")
    override = tmp_path / "override.yaml"
    override.write_text("label: 7\n")
    with pytest.raises(runner.ParameterError) as info:
        runner.resolve_parameters("ok", notebook=FIXTURES / "ok.ipynb", parameters_file=override, parameters_root=tmp_path)
    message = str(info.value)
    assert f"'n_rows' of 'ok' is 2.5 (from {tmp_path / 'ok' / 'default.yaml'}): expected an int" in message
    assert f"'label' of 'ok' is 7 (from {override}): expected text" in message
    fixed = runner.resolve_parameters("ok", notebook=FIXTURES / "ok.ipynb", parameters={"n_rows": 2, "label": "7"}, parameters_root=tmp_path)
    assert fixed["n_rows"] == 2, "an explicit value of the right type replaces the file's"


def test_parameters_merge_default_then_file_then_explicit(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "default.yaml").write_text("n_rows: 1\nlabel: default\nas_of: 2024-01-01\n")
    override = tmp_path / "override.yaml"
    override.write_text("n_rows: 2\nlabel: file\n")
    merged = runner.resolve_parameters(
        "ok", notebook=FIXTURES / "ok.ipynb", parameters={"n_rows": 3}, parameters_file=override, parameters_root=tmp_path
    )
    assert merged["n_rows"] == 3 and merged["label"] == "file" and merged["as_of"] == "2024-01-01"
    assert Path(merged["warehouse_path"]).is_absolute()


def _notebook_declaring_dataset(folder: Path, name: str = "probe_dataset") -> Path:
    """A notebook declaring ``dataset`` that saves what it was given and what its kernel's environment says."""
    parameters = new_code_cell(
        'dataset = ""  # dataset name\nwarehouse_path = ""  # warehouse\noutput_dir = ""  # run folder\nlabel = "x"  # text'
    )
    parameters.metadata["tags"] = ["parameters"]
    body = new_code_cell(
        "import os\nimport pandas as pd\nfrom crm_analytics import paths, results\n"
        "seen = pd.DataFrame({'dataset': [dataset], 'warehouse_path': [warehouse_path],"
        " 'env_default': [paths.default_dataset()]})\nresults.save_table(seen, 'seen', output_dir=output_dir)"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nb = new_notebook(cells=[parameters, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_dataset_is_injected_with_its_warehouse_and_explicit_values_win(tmp_path):
    notebook = _notebook_declaring_dataset(tmp_path / "notebooks")
    (tmp_path / "probe_dataset").mkdir()
    (tmp_path / "probe_dataset" / "default.yaml").write_text('dataset: ""\nlabel: y\n')
    merged = runner.resolve_parameters("probe_dataset", notebook=notebook, parameters_root=tmp_path)
    assert merged["dataset"] == paths.default_dataset()
    assert merged["warehouse_path"] == str(paths.warehouse_path(paths.default_dataset()))
    given = runner.resolve_parameters("probe_dataset", notebook=notebook, parameters_root=tmp_path, dataset="demo")
    assert given["dataset"] == "demo" and given["warehouse_path"].endswith("demo.duckdb")
    explicit = runner.resolve_parameters(
        "probe_dataset", notebook=notebook, parameters_root=tmp_path, dataset="nope", parameters={"dataset": "demo"}
    )
    assert explicit["dataset"] == "demo"  # -p dataset=... wins over --dataset
    undeclared = runner.resolve_parameters("ok", notebook=FIXTURES / "ok.ipynb", parameters_root=tmp_path, dataset="demo")
    assert "dataset" not in undeclared and undeclared["warehouse_path"].endswith("demo.duckdb")


def test_unknown_dataset_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(runner.UnknownDatasetError) as info:
        runner.run_analysis("ok", notebook_dir=FIXTURES, output_root=tmp_path / "outputs", parameters_root=tmp_path, dataset="dem")
    assert "no dataset 'dem'" in str(info.value) and "did you mean 'demo'" in str(info.value)
    assert not (tmp_path / "outputs").exists()


def test_common_parameters_go_to_the_analyses_that_declare_them():
    spread = runner.spread_parameters({"n_rows": 2, "seconds": 1}, ["ok", "sleeper", "empty"], notebook_dir=FIXTURES)
    assert spread == {"ok": {"n_rows": 2}, "sleeper": {"seconds": 1}, "empty": {}}
    with pytest.raises(runner.ParameterError, match="no analysis declares the parameter 'n_row' \\(did you mean 'n_rows'\\?\\)"):
        runner.spread_parameters({"n_row": 2}, ["ok", "empty"], notebook_dir=FIXTURES)


def test_batch_parameters_spread_a_file_and_keep_one_dataset(tmp_path):
    notebooks = tmp_path / "notebooks"
    _notebook_declaring_dataset(notebooks)
    shutil.copy(FIXTURES / "ok.ipynb", notebooks / "ok.ipynb")
    shared = tmp_path / "shared.yaml"
    shared.write_text("label: from-file\nn_rows: 7\ndataset: dem\n")
    with pytest.raises(runner.UnknownDatasetError, match="no dataset 'dem'"):  # the file's dataset, when nothing overrides it
        runner.batch_parameters(["ok", "probe_dataset"], parameters_file=shared, notebook_dir=notebooks)
    chosen, by_analysis = runner.batch_parameters(
        ["ok", "probe_dataset"], dataset="demo", parameters_file=shared, common_parameters={"n_rows": 2},
        parameters_by_analysis={"ok": {"label": "own"}}, notebook_dir=notebooks,
    )
    assert chosen == "demo"  # --dataset wins over the file
    assert by_analysis == {"ok": {"label": "own", "n_rows": 2}, "probe_dataset": {"label": "from-file", "dataset": "demo"}}


def test_run_all_refuses_a_parameter_no_analysis_declares(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("cleansing", "kpi"):
        shutil.copy(FIXTURES / "ok.ipynb", notebooks / f"{name}.ipynb")
    with pytest.raises(runner.ParameterError, match="did you mean 'n_rows'"):
        runner.run_all(notebook_dir=notebooks, output_root=tmp_path / "outputs", parameters_root=tmp_path,
                       common_parameters={"n_row": 1})
    assert not (tmp_path / "outputs").exists()


def test_notebook_without_output_dir_is_refused(tmp_path):
    cell = new_code_cell('x = 1  # a value')
    cell.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[cell]), tmp_path / "bare.ipynb")
    with pytest.raises(runner.ParameterError, match="must declare output_dir"):
        runner.resolve_parameters("bare", notebook=tmp_path / "bare.ipynb", parameters_root=tmp_path)


def test_unknown_analysis_lists_the_valid_ones():
    with pytest.raises(runner.UnknownAnalysisError) as info:
        runner.notebook_path("fail", FIXTURES)
    assert "did you mean 'fails'" in str(info.value)
    assert "ok" in str(info.value) and "sleeper" in str(info.value)


def test_list_analyses_is_sorted_top_level_notebooks():
    assert runner.list_analyses(FIXTURES) == ["dies", "empty", "exits", "fails", "hangs", "ok", "probe", "sleeper"]


# ----------------------------------------------------------------------------- records and pointers


def test_run_ids_sort_by_time():
    from datetime import datetime, timezone

    early = runner.new_run_id(datetime(2024, 1, 1, 9, 59, 59, 999000, tzinfo=timezone.utc))
    late = runner.new_run_id(datetime(2024, 1, 1, 10, 0, 0, tzinfo=timezone.utc))
    assert early < late
    assert early.startswith("20240101T095959.999Z-")


def test_latest_moves_atomically_and_falls_back_to_a_pointer_file(tmp_path, monkeypatch):
    root = tmp_path / "outputs" / "demo" / "ok"
    for run_id in ("run-1", "run-2"):
        (root / run_id).mkdir(parents=True)
    runner.move_latest(root, "run-1")
    assert (root / "latest").is_symlink()
    assert runner.latest_run("ok", output_root=tmp_path / "outputs", dataset="demo") == root / "run-1"
    assert runner.latest_run("ok", output_root=tmp_path / "outputs", dataset="other") is None  # per dataset

    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks not supported")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    runner.move_latest(root, "run-2")
    assert (root / "latest").is_file() and not (root / "latest").is_symlink()
    assert runner.latest_run("ok", output_root=tmp_path / "outputs", dataset="demo") == root / "run-2"
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_inspect_executed_ignores_empty_cells_and_flags_unexecuted_ones(tmp_path):
    done = new_code_cell("x = 1", execution_count=1)
    empty = new_code_cell("   ")
    never = new_code_cell("y = 2")
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=[done, empty]), path)
    assert runner.inspect_executed(path)["complete"] is True
    nbformat.write(new_notebook(cells=[done, empty, never]), path)
    checked = runner.inspect_executed(path)
    assert checked["complete"] is False and checked["error_cell_index"] == 2


def test_count_alerts_counts_csv_records(tmp_path):
    assert runner.count_alerts(tmp_path) is None
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "alerts.csv").write_text('kpi,note\nrevenue,"two\nlines"\norders,x\n')
    assert runner.count_alerts(tmp_path) == 2


def test_data_fingerprint_changes_with_the_file(tmp_path):
    path = tmp_path / "crm.duckdb"
    assert runner.data_fingerprint(path) == {"path": str(path), "exists": False}
    path.write_bytes(b"a" * 10)
    first = runner.data_fingerprint(path)
    path.write_bytes(b"b" * 10)
    second = runner.data_fingerprint(path)
    assert first["size_bytes"] == 10 and first["head_tail_sha256"] != second["head_tail_sha256"]


def test_locked_analysis_records_skipped_locked_without_running(tmp_path):
    output_root = tmp_path / "outputs"
    (output_root / "demo" / "ok").mkdir(parents=True)
    with filelock.FileLock(str(output_root / "demo" / "ok" / ".lock")):
        result = runner.run_analysis("ok", notebook_dir=FIXTURES, output_root=output_root, parameters_root=tmp_path, dataset="demo")
    assert result.status == "skipped_locked" and result.dataset == "demo"
    record = _record(result)
    assert record["status"] == "skipped_locked" and record["ended_at"]
    assert sorted(p.name for p in result.run_dir.iterdir()) == ["run.json"]
    assert runner.latest_run("ok", output_root=output_root, dataset="demo") is None


def test_output_root_that_cannot_be_created_fails_clearly(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outputs folder should be")
    result = runner.run_analysis("ok", notebook_dir=FIXTURES, output_root=blocker / "outputs", parameters_root=tmp_path)
    assert result.status == "failed" and result.run_dir is None
    assert "cannot write the run folder" in result.error_message


# ----------------------------------------------------------------------------- the index


def _fake_run(root: Path, analysis: str, run_id: str, status: str, **extra) -> None:
    folder = root / analysis / run_id
    folder.mkdir(parents=True)
    record = {"analysis": analysis, "run_id": run_id, "status": status, "started_at": "2024-05-01T08:00:00+00:00",
              "ended_at": "2024-05-01T08:00:03+00:00", "duration_s": 3.2, **extra}
    (folder / "run.json").write_text(json.dumps(record))


def test_index_marks_a_failure_newer_than_the_latest_good_run(tmp_path):
    outputs, tmp_path = tmp_path, tmp_path / "demo"  # runs of the demo dataset
    _fake_run(tmp_path, "kpi", "20240501T080000.000Z-aaaaaa", "succeeded", alert_count=4)
    runner.move_latest(tmp_path / "kpi", "20240501T080000.000Z-aaaaaa")
    _fake_run(tmp_path, "kpi", "20240502T080000.000Z-bbbbbb", "failed", error_name="ValueError")
    _fake_run(tmp_path, "churn", "20240501T070000.000Z-cccccc", "failed", error_name="KeyError")
    _fake_run(tmp_path, "churn", "20240502T070000.000Z-dddddd", "succeeded")
    runner.move_latest(tmp_path / "churn", "20240502T070000.000Z-dddddd")
    _fake_run(tmp_path, "dashboard", "20240502T090000.000Z-eeeeee", "succeeded")
    runner.move_latest(tmp_path / "dashboard", "20240502T090000.000Z-eeeeee")
    page = report_index.write_index(outputs, pages_url="http://127.0.0.1:8866/", dataset="demo").read_text()
    assert "<h1>crm-analytics reports: demo (Asia/Shanghai, CNY)</h1>" in page
    kpi_row = next(line for line in page.splitlines() if "<strong>kpi</strong>" in line)
    churn_row = next(line for line in page.splitlines() if "<strong>churn</strong>" in line)
    assert 'href="kpi/latest/report.html"' in kpi_row
    assert '<div class="warn">' in kpi_row and "ValueError" in kpi_row and "kpi/20240502T080000.000Z-bbbbbb/" in kpi_row
    assert '<span class="alert">4</span>' in kpi_row
    assert '<div class="warn">' not in churn_row  # the old failure is older than the good run
    dashboard_row = next(line for line in page.splitlines() if "<strong>dashboard</strong>" in line)
    assert 'href="http://127.0.0.1:8866/voila/render/dashboard.ipynb"' in dashboard_row, "served pages get a live link"
    assert "voila/render" not in churn_row, "analyses that are not served get none"
    assert "<script" not in page and "http" not in page.replace("http://127.0.0.1:8866", "")


def test_index_lists_never_run_analyses(tmp_path):
    page = report_index.write_index(tmp_path, analyses=["segmentation"], dataset="demo").read_text()
    assert "<strong>segmentation</strong>" in page and "never run" in page


def test_each_dataset_has_its_index_and_the_top_page_lists_them(tmp_path):
    _fake_run(tmp_path / "demo", "kpi", "20240501T080000.000Z-aaaaaa", "succeeded")
    _fake_run(tmp_path / "other", "churn", "20240501T080000.000Z-bbbbbb", "failed", error_name="KeyError")
    demo_page = report_index.write_index(tmp_path, dataset="demo").read_text()
    other_page = report_index.write_index(tmp_path, dataset="other").read_text()
    assert "<strong>kpi</strong>" in demo_page and "<strong>churn</strong>" not in demo_page
    assert "<strong>churn</strong>" in other_page and "<strong>kpi</strong>" not in other_page
    assert "<h1>crm-analytics reports: other</h1>" in other_page  # no dataset file: the name alone
    top = (tmp_path / "index.html").read_text()
    assert '<a href="demo/index.html">demo</a>' in top and '<a href="other/index.html">other</a>' in top
    assert "Asia/Shanghai, CNY" in top


# ----------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_successful_run_writes_record_report_tables_and_moves_latest(run, tmp_path):
    result = run("ok", parameters={"n_rows": 4, "as_of": "2024-02-29"})
    assert result.status == "succeeded", result
    folder = result.run_dir
    assert folder.name == result.run_id and not folder.with_name(folder.name + ".tmp").exists()
    assert runner.latest_run("ok", output_root=tmp_path / "outputs") == folder
    record = _record(result)
    assert record["status"] == "succeeded" and record["ended_at"] and record["duration_s"] > 0
    assert record["parameters"]["n_rows"] == 4 and record["parameters"]["as_of"] == "2024-02-29"
    assert set(record["versions"]) == {"python", "pandas", "numpy", "duckdb", "ibis", "papermill", "scikit-learn", "statsmodels"}
    assert record["alert_count"] == 2 and result.alert_count == 2
    assert "data_fingerprint" in record and "git_commit" in record
    assert (folder / "tables" / "summary.parquet").exists()
    report = (folder / "report.html").read_text()
    assert "cell-stdout-marker" in report  # outputs are shown ...
    assert "import pandas" not in report and "save_table" not in report  # ... code is not
    assert "cell-stdout-marker" in (folder / "stdout.txt").read_text()
    assert "cell-stdout-marker" not in (folder / "engine.log").read_text()
    executed = nbformat.read(folder / "ok.ipynb", as_version=4)
    assert all(c.execution_count for c in executed.cells if c.cell_type == "code")
    assert (tmp_path / "outputs" / "index.html").exists() and (folder.parent.parent / "index.html").exists()
    assert folder.parent.parent == tmp_path / "outputs" / result.dataset and record["dataset"] == result.dataset


@pytest.mark.slow
def test_failing_cell_keeps_partial_notebook_and_previous_latest(run, tmp_path):
    good = run("ok")
    assert good.ok
    shutil.copy(FIXTURES / "fails.ipynb", tmp_path / "ok.ipynb")  # same analysis name, now failing
    bad = run("ok", notebook_dir=tmp_path)
    assert bad.status == "failed"
    assert bad.error_name == "ValueError" and bad.error_message == "boom in cell"
    executed = nbformat.read(bad.run_dir / "ok.ipynb", as_version=4)
    assert "raise ValueError" in executed.cells[bad.error_cell_index].source
    assert (bad.run_dir / "before.txt").read_text() == "partial"
    assert _record(bad)["error_cell_index"] == bad.error_cell_index
    assert runner.latest_run("ok", output_root=tmp_path / "outputs") == good.run_dir
    page = (tmp_path / "outputs" / good.dataset / "index.html").read_text()
    assert bad.run_id in page and good.run_id in page


@pytest.mark.slow
def test_cell_timeout(run):
    result = run("hangs", cell_timeout=2)
    assert result.status == "timeout" and result.error_name == "CellTimeoutError"
    executed = nbformat.read(result.run_dir / "hangs.ipynb", as_version=4)
    assert "time.sleep(120)" in executed.cells[result.error_cell_index].source


@pytest.mark.slow
def test_killed_kernel(run):
    result = run("dies")
    assert result.status == "kernel_died" and result.error_name == "DeadKernelError"
    assert (result.run_dir / "dies.ipynb").exists()


@pytest.mark.slow
def test_sys_exit_zero_is_truncated_not_success(run, tmp_path):
    result = run("exits")
    assert result.status == "truncated"
    assert runner.latest_run("exits", output_root=tmp_path / "outputs") is None


@pytest.mark.slow
def test_run_timeout_kills_the_whole_process_tree(run):
    result = run("sleeper", parameters={"seconds": 120}, run_timeout=4)
    assert result.status == "timeout" and result.error_name == "RunTimeout"
    kernel_pid = int((result.run_dir / "kernel.pid").read_text())
    if psutil.pid_exists(kernel_pid):
        assert psutil.Process(kernel_pid).status() == psutil.STATUS_ZOMBIE
    assert _record(result)["status"] == "timeout"


@pytest.mark.slow
def test_run_all_stops_when_cleansing_fails(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(FIXTURES / "fails.ipynb", notebooks / "cleansing.ipynb")
    shutil.copy(FIXTURES / "ok.ipynb", notebooks / "kpi.ipynb")
    events = []
    results = runner.run_all(
        notebook_dir=notebooks, output_root=tmp_path / "outputs", parameters_root=tmp_path,
        on_progress=lambda kind, analysis, result: events.append((kind, analysis)),
    )
    assert [(r.analysis, r.status) for r in results] == [("cleansing", "failed")]
    assert ("started", "kpi") not in events and ("finished", "cleansing") in events


@pytest.mark.slow
def test_run_all_runs_cleansing_first_then_the_rest_in_parallel(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("cleansing", "kpi", "churn"):
        shutil.copy(FIXTURES / "empty.ipynb", notebooks / f"{name}.ipynb")
    events = []
    results = runner.run_all(
        jobs=2, notebook_dir=notebooks, output_root=tmp_path / "outputs", parameters_root=tmp_path,
        on_progress=lambda kind, analysis, result: events.append((kind, analysis)),
    )
    assert {r.analysis: r.status for r in results} == {"cleansing": "succeeded", "kpi": "succeeded", "churn": "succeeded"}
    started = [a for kind, a in events if kind == "started"]
    assert started[0] == "cleansing"
    assert events.index(("finished", "cleansing")) < events.index(("started", "churn"))
    # churn and kpi overlapped: both started before either finished
    assert max(events.index(("started", "kpi")), events.index(("started", "churn"))) < min(
        events.index(("finished", "kpi")), events.index(("finished", "churn"))
    )


@pytest.mark.slow
def test_run_all_starts_a_dependent_analysis_after_what_it_reads(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("segmentation", "kpi", "churn"):
        shutil.copy(FIXTURES / "empty.ipynb", notebooks / f"{name}.ipynb")
    (tmp_path / "run_order.yaml").write_text("after:\n  kpi: [segmentation]\n  lifecycle: [segmentation]\n")
    events = []
    results = runner.run_all(
        jobs=3, notebook_dir=notebooks, output_root=tmp_path / "outputs", parameters_root=tmp_path,
        on_progress=lambda kind, analysis, result: events.append((kind, analysis)),
    )
    assert all(r.ok for r in results) and len(results) == 3
    assert events.index(("finished", "segmentation")) < events.index(("started", "kpi"))
    assert events.index(("started", "churn")) < events.index(("finished", "segmentation")), "independent runs do not wait"


def test_run_order_keeps_only_dependencies_that_run_and_refuses_cycles(tmp_path):
    (tmp_path / "run_order.yaml").write_text("after:\n  kpi: [segmentation, cohort]\n")
    assert runner.run_order(["kpi", "segmentation"], parameters_root=tmp_path) == {"kpi": {"segmentation"}, "segmentation": set()}
    assert runner.run_order(["kpi"], parameters_root=tmp_path / "absent") == {"kpi": set()}
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("a", "b"):
        shutil.copy(FIXTURES / "empty.ipynb", notebooks / f"{name}.ipynb")
    (tmp_path / "run_order.yaml").write_text("after:\n  a: [b]\n  b: [a]\n")
    with pytest.raises(runner.RunnerError, match="cycle"):
        runner.run_all(notebook_dir=notebooks, output_root=tmp_path / "outputs", parameters_root=tmp_path)


def _write_durations(output_root: Path, seconds_by_analysis: dict[str, float]) -> None:
    for analysis, seconds in seconds_by_analysis.items():
        run = output_root / "demo" / analysis / "r1"
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"duration_s": seconds}))
        runner.move_latest(output_root / "demo" / analysis, "r1")


def test_critical_path_first_orders_by_last_successful_duration(tmp_path):
    output_root = tmp_path / "outputs"
    _write_durations(output_root, {"quick": 2.0, "slow": 30.0})
    order = runner.critical_path_first(["quick", "never_run", "slow"], output_root=output_root, dataset="demo")
    assert order == ["never_run", "slow", "quick"]
    other = runner.critical_path_first(["quick", "slow"], output_root=output_root, dataset="other")
    assert other == ["quick", "slow"]  # another dataset's durations are unknown: ties go by name  # never run counts as the longest known: ties go by name


def test_critical_path_first_starts_what_others_wait_for(tmp_path):
    # kpi (10 s) waits for segmentation (5 s): the chain segmentation -> kpi (15 s) outranks a lone 12 s run
    output_root = tmp_path / "outputs"
    _write_durations(output_root, {"segmentation": 5.0, "kpi": 10.0, "churn": 12.0, "cohort": 1.0})
    dependencies = {"kpi": {"segmentation"}, "churn": set(), "cohort": set(), "segmentation": set()}
    names = ["churn", "cohort", "kpi", "segmentation"]
    assert runner.critical_path_first(names, dependencies, output_root=output_root, dataset="demo") == ["segmentation", "churn", "kpi", "cohort"]
    # in a fresh home every run counts 1 s, so the longest chains go first
    fresh = runner.critical_path_first(names, {**dependencies, "cohort": {"kpi"}}, output_root=tmp_path / "none")
    assert fresh == ["segmentation", "kpi", "churn", "cohort"]


def test_typical_durations_order_a_first_batch(tmp_path):
    (tmp_path / "run_order.yaml").write_text("after:\n  kpi: [segmentation]\ntypical_seconds:\n  kpi: 20\n  segmentation: 5\n  churn: 18\n")
    typical = runner.typical_durations(parameters_root=tmp_path)
    assert typical == {"kpi": 20.0, "segmentation": 5.0, "churn": 18.0}
    dependencies = runner.run_order(["kpi", "segmentation", "churn", "cohort"], parameters_root=tmp_path)
    order = runner.critical_path_first(["cohort", "churn", "kpi", "segmentation"], dependencies, output_root=tmp_path / "none", typical=typical)
    assert order == ["segmentation", "kpi", "churn", "cohort"]  # chains of 25, 20 and 18 s; cohort counts 1 s (nothing known)


@pytest.fixture
def two_datasets(tmp_path, monkeypatch):
    """A datasets folder holding the demo's file and a copy named ``other`` with another zone and currency."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    demo = (paths.datasets_dir() / "demo.yaml").read_text(encoding="utf-8")
    (folder / "demo.yaml").write_text(demo, encoding="utf-8")
    other = "\n".join(
        "time_zone: Europe/London" if line.startswith("time_zone:") else "currency: GBP" if line.startswith("currency:")
        else "country: GB" if line.startswith("country:") else line
        for line in demo.splitlines()
    )
    (folder / "other.yaml").write_text(other, encoding="utf-8")
    monkeypatch.setattr(paths, "datasets_dir", lambda: folder)  # where dataset files are looked up
    return folder


@pytest.mark.slow
def test_runs_of_two_datasets_keep_their_own_latest_and_index(tmp_path, two_datasets):
    notebooks = tmp_path / "notebooks"
    _notebook_declaring_dataset(notebooks)
    outputs = tmp_path / "outputs"
    options = {"notebook_dir": notebooks, "output_root": outputs, "parameters_root": tmp_path}
    demo = runner.run_analysis("probe_dataset", dataset="demo", **options)
    other = runner.run_analysis("probe_dataset", dataset="other", **options)
    assert demo.ok and other.ok, (demo, other)
    assert demo.run_dir.parent == outputs / "demo" / "probe_dataset"
    assert other.run_dir.parent == outputs / "other" / "probe_dataset"
    assert runner.latest_run("probe_dataset", output_root=outputs, dataset="demo") == demo.run_dir
    assert runner.latest_run("probe_dataset", output_root=outputs, dataset="other") == other.run_dir
    assert _record(other)["dataset"] == "other" and _record(demo)["dataset"] == "demo"
    import pandas as pd

    seen = pd.read_parquet(other.run_dir / "tables" / "seen.parquet").iloc[0]
    assert seen["dataset"] == "other" and seen["env_default"] == "other"  # the kernel reads the run's dataset
    assert seen["warehouse_path"] == str(paths.warehouse_path("other"))
    assert "(Europe/London, GBP)" in (outputs / "other" / "index.html").read_text()
    assert "(Asia/Shanghai, CNY)" in (outputs / "demo" / "index.html").read_text()
    top = (outputs / "index.html").read_text()
    assert 'href="demo/index.html"' in top and 'href="other/index.html"' in top


def _notebook_reporting_memory_limit(folder: Path, name: str) -> Path:
    """A notebook that opens its warehouse and saves the memory limit its DuckDB connection has."""
    parameters = new_code_cell('warehouse_path = ""  # warehouse\noutput_dir = ""  # run folder')
    parameters.metadata["tags"] = ["parameters"]
    body = new_code_cell(
        "import pandas as pd\nfrom crm_analytics import results, warehouse\n"
        "con = warehouse.connect(warehouse_path)\n"
        "limit = con.raw_sql(\"SELECT current_setting('memory_limit')\").fetchone()[0]\n"
        "results.save_table(pd.DataFrame({'memory_limit': [limit]}), 'seen', output_dir=output_dir)"
    )
    nb = new_notebook(cells=[parameters, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def _duckdb_setting_bytes(text: str) -> float:
    """DuckDB's display of a memory setting (``"5.5 GiB"``, ``"953.6 MiB"``) in bytes."""
    number, unit = text.split()
    return float(number) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[unit]


@pytest.mark.slow
def test_parallel_runs_share_half_the_memory_between_their_engines(tmp_path, monkeypatch):
    import duckdb

    from crm_analytics import warehouse

    monkeypatch.delenv(warehouse.MEMORY_LIMIT_ENV, raising=False)
    database = tmp_path / "tiny.duckdb"
    duckdb.connect(str(database)).close()
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("probe_a", "probe_b"):  # no analysis's requirements apply to them
        _notebook_reporting_memory_limit(notebooks, name)
    results = runner.run_all(
        jobs=2, notebook_dir=notebooks, output_root=tmp_path / "outputs", parameters_root=tmp_path,
        common_parameters={"warehouse_path": str(database)},
    )
    assert [r.status for r in results] == ["succeeded", "succeeded"]
    share = int(warehouse.parallel_memory_limit(2).removesuffix("MB")) * 10**6
    for result in results:
        seen = pd.read_parquet(result.run_dir / "tables" / "seen.parquet")["memory_limit"].iloc[0]
        assert _duckdb_setting_bytes(seen) == pytest.approx(share, rel=0.02)  # shown to 0.1 GiB
    assert warehouse.MEMORY_LIMIT_ENV not in os.environ, "the batch leaves the environment as it found it"

    alone = runner.run_all(jobs=1, analyses=["probe_a"], notebook_dir=notebooks, output_root=tmp_path / "outputs",
                           parameters_root=tmp_path, common_parameters={"warehouse_path": str(database)})
    seen = pd.read_parquet(alone[0].run_dir / "tables" / "seen.parquet")["memory_limit"].iloc[0]
    assert _duckdb_setting_bytes(seen) > 1.5 * share, "a single job keeps DuckDB's default (80% of the RAM)"


def test_parallel_memory_limit_splits_half_the_ram():
    from crm_analytics import warehouse

    assert warehouse.parallel_memory_limit(2, total_bytes=24 * 10**9) == "6000MB"
    assert warehouse.parallel_memory_limit(3, total_bytes=24 * 10**9) == "4000MB"
    assert warehouse.parallel_memory_limit(1, total_bytes=10**6) == "1MB", "never zero, which DuckDB would refuse"
