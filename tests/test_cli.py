"""Tests of the crm-analytics command: exit codes, one-line errors, parameter parsing, schedule output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crm_analytics import runner
from crm_analytics.cli import app

FIXTURES = Path(__file__).resolve().parent / "notebooks"
cli = CliRunner()


def _invoke(tmp_path: Path, *args: str):
    folders = ["--notebook-dir", str(FIXTURES), "--output-root", str(tmp_path / "outputs"), "--parameters-dir", str(tmp_path)]
    return cli.invoke(app, [*folders, *args])


def test_unknown_analysis_is_a_usage_error_listing_valid_names(tmp_path):
    result = _invoke(tmp_path, "run", "okk")
    assert result.exit_code == 2
    assert "unknown analysis 'okk'" in result.stderr and "did you mean 'ok'" in result.stderr
    assert "sleeper" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_parameter_is_a_usage_error_with_did_you_mean(tmp_path):
    result = _invoke(tmp_path, "run", "ok", "-p", "n_row=2")
    assert result.exit_code == 2
    assert "did you mean 'n_rows'" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "outputs" / "ok").exists()


@pytest.mark.parametrize(("assignment", "expected"), [("as_of=notadate", "expected an ISO date"), ("n_rows=2.5", "expected an int"),
                                                     ("as_of=20240131", "expected an ISO date as text")])
def test_a_parameter_of_the_wrong_type_is_a_usage_error_before_any_kernel(tmp_path, assignment, expected):
    result = _invoke(tmp_path, "run", "ok", "-p", assignment)
    assert result.exit_code == 2 and expected in result.stderr
    assert f"parameter {assignment.split('=')[0]!r} of 'ok'" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists(), "no run folder"


def test_run_all_with_a_parameter_of_the_wrong_type_runs_nothing(tmp_path):
    result = _invoke(tmp_path, "run-all", "-p", "as_of=notadate")
    assert result.exit_code == 2 and "parameter 'as_of' of 'ok' is 'notadate'" in result.stderr
    assert not list((tmp_path / "outputs").rglob("run.json"))


def test_malformed_assignment_is_a_usage_error(tmp_path):
    result = _invoke(tmp_path, "run", "ok", "-p", "n_rows")
    assert result.exit_code == 2 and "key=value" in result.stderr


def test_list_shows_analyses(tmp_path):
    result = _invoke(tmp_path, "list")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == runner.list_analyses(FIXTURES)


def test_index_command_writes_the_page(tmp_path):
    result = _invoke(tmp_path, "index", "--pages-url", "http://127.0.0.1:8866", "--dataset", "demo")
    assert result.exit_code == 0
    page = (tmp_path / "outputs" / "demo" / "index.html").read_text()
    assert "<strong>ok</strong>" in page and "127.0.0.1:8866" not in page, "fixture notebooks are not served pages"
    assert 'href="demo/index.html"' in (tmp_path / "outputs" / "index.html").read_text()
    runs = tmp_path / "outputs" / "demo" / "dashboard"
    (runs / "r1").mkdir(parents=True)
    (runs / "r1" / "run.json").write_text('{"analysis": "dashboard", "run_id": "r1", "status": "succeeded"}')
    (runs / "latest").symlink_to("r1")
    assert _invoke(tmp_path, "index", "--pages-url", "http://127.0.0.1:8866", "-d", "demo").exit_code == 0
    assert "http://127.0.0.1:8866/voila/render/dashboard.ipynb" in (tmp_path / "outputs" / "demo" / "index.html").read_text()


@pytest.mark.parametrize(
    "args",
    [
        ["run", "ok", "--dataset", "dem"],
        ["run-all", "--dataset", "dem"],
        ["build-warehouse", "--dataset", "dem"],
        ["index", "--dataset", "dem"],
        ["list", "--dataset", "dem"],
        ["serve", "--dataset", "dem"],
        ["schedule", "list", "--dataset", "dem"],
    ],
    ids=lambda args: args[0] if args[0] != "schedule" else "schedule",
)
def test_unknown_dataset_is_a_one_line_usage_error_everywhere(tmp_path, args):
    result = _invoke(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert "no dataset 'dem'" in result.stderr and "did you mean 'demo'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists()


def test_a_dataset_given_as_a_path_is_refused_with_the_name_to_use(tmp_path):
    result = _invoke(tmp_path, "run-all", "--dataset", str(tmp_path / "shop.yaml"))
    assert result.exit_code == 2, result.output
    assert "is a path" in result.stderr and "parameters/datasets/shop.yaml" in result.stderr
    assert "--dataset shop" in " ".join(result.stderr.split())
    assert not (tmp_path / "outputs").exists()


def test_run_all_parameter_that_no_analysis_declares_is_a_usage_error(tmp_path):
    result = _invoke(tmp_path, "run-all", "-p", "n_row=2")
    assert result.exit_code == 2
    assert "no analysis declares the parameter 'n_row' (did you mean 'n_rows'?)" in result.stderr
    assert not (tmp_path / "outputs" / "demo").exists()


def test_relative_paths_on_the_command_line_are_taken_from_the_working_directory(tmp_path, monkeypatch):
    from crm_analytics import cli as cli_module

    monkeypatch.chdir(tmp_path)
    values = cli_module._parse_assignments(["warehouse_path=data/w.duckdb", "label=data/w.duckdb", "output_dir=/abs"])
    assert values == {"warehouse_path": str(tmp_path / "data" / "w.duckdb"), "label": "data/w.duckdb", "output_dir": "/abs"}


def _invoke_on_project_notebooks(tmp_path: Path, *args: str):
    """Run the command on the project's notebooks and parameters (a schedule names real analyses), outputs in ``tmp_path``."""
    return cli.invoke(app, ["--output-root", str(tmp_path / "outputs"), *args])


def _schedule(tmp_path: Path) -> Path:
    path = tmp_path / "schedule.yaml"
    path.write_text(
        "timezone: Asia/Shanghai\njobs:\n"
        "  - {id: kpi-daily, analysis: kpi, cron: '0 7 * * *', parameters: parameters/kpi/default.yaml}\n"
        "  - {id: churn-eu, analysis: churn, cron: '0 9 * * 1', timezone: Europe/Berlin}\n"
    )
    return path


def test_schedule_crontab(tmp_path):
    result = _invoke_on_project_notebooks(tmp_path, "schedule", "crontab", "-f", str(_schedule(tmp_path)), "--root", "/srv/crm")
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert lines == [
        "CRON_TZ=Asia/Shanghai",
        "0 7 * * * cd /srv/crm && .venv/bin/crm-analytics run kpi -f parameters/kpi/default.yaml  # kpi-daily",
        "CRON_TZ=Europe/Berlin",
        "0 9 * * 1 cd /srv/crm && .venv/bin/crm-analytics run churn  # churn-eu",
    ]


def test_schedule_list_prints_next_fire_times(tmp_path):
    result = _invoke_on_project_notebooks(tmp_path, "schedule", "list", "-f", str(_schedule(tmp_path)), "-n", "2")
    assert result.exit_code == 0
    assert "kpi-daily" in result.stdout and "churn-eu" in result.stdout
    assert result.stdout.count("07:00 CST") == 2 and "(23:00 UTC)" in result.stdout
    assert "09:00 CE" in result.stdout  # CET or CEST depending on the date


def test_bad_schedule_is_a_usage_error(tmp_path):
    path = tmp_path / "schedule.yaml"
    path.write_text("jobs:\n  - {id: a, analysis: kpi, cron: '0 7 * *'}\n")
    result = _invoke(tmp_path, "schedule", "list", "-f", str(path))
    assert result.exit_code == 2 and "5 fields" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ("{id: a, analysis: kpii, cron: '0 7 * * *'}", "job 'a': unknown analysis 'kpii' (did you mean 'kpi'?)"),
        ("{id: b, analysis: kpi, cron: '0 7 * * *', parameters: parameters/kpi/nightly.yaml}", "job 'b': parameter file not found"),
        ("{id: c, analysis: kpi, cron: '0 7 * * *', dataset: dem}", "no dataset 'dem'"),
    ],
)
@pytest.mark.parametrize("command", ["list", "run"])
def test_schedule_checks_every_job_when_loaded(tmp_path, job, expected, command):
    path = tmp_path / "schedule.yaml"
    path.write_text(f"timezone: UTC\njobs:\n  - {{id: fine, analysis: overview, cron: '0 6 * * *'}}\n  - {job}\n")
    result = _invoke_on_project_notebooks(tmp_path, "schedule", command, "-f", str(path), "--jobstore", "memory") if command == "run" \
        else _invoke_on_project_notebooks(tmp_path, "schedule", command, "-f", str(path))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and str(path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert "scheduler started" not in result.stderr


@pytest.mark.slow
def test_run_succeeds_with_typed_parameters(tmp_path):
    result = _invoke(tmp_path, "run", "ok", "-p", "n_rows=2", "-p", "as_of=2024-02-29", "-p", 'label="yes"')
    assert result.exit_code == 0, result.output
    record = json.loads((runner.latest_run("ok", output_root=tmp_path / "outputs") / "run.json").read_text())
    assert record["parameters"]["n_rows"] == 2 and record["parameters"]["as_of"] == "2024-02-29"
    assert record["parameters"]["label"] == "yes"  # quoted: unquoted, YAML reads yes as a boolean, which a text parameter refuses
    assert "cell-stdout-marker" not in result.output  # cell output stays in the run folder


@pytest.mark.slow
def test_failed_run_exits_one_with_the_error(tmp_path):
    result = _invoke(tmp_path, "run", "fails")
    assert result.exit_code == 1
    assert "failed" in result.stdout and "ValueError" in result.stderr and "boom in cell" in result.stderr
    assert "Traceback" not in result.output


def _sales_export(folder: Path, *, with_bad_line: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vendas.csv"
    lines = [
        "Pedido;Cliente;Data da compra;Produto;Descrição;Quantidade;Preço unitário",
        "1001;C-17;13/02/2024 14:05;P1;Caneca azul;2;12,50",
        "1002;C-42;15/02/2024 09:30;P1;Caneca azul;3;12,50",
        "1003;C-17;28/02/2024 21:10;P3;Copo;1;7,90",
    ]
    if with_bad_line:
        lines.append("1004;C-42;31/02/2024 10:00;P3;Copo;1;7,90")  # no such day: the order is quarantined
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_build_warehouse_runs_the_cleansing_build_and_never_replaces_a_good_warehouse_by_a_failed_one(tmp_path, monkeypatch):
    from crm_analytics import paths, readiness

    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    export = _sales_export(tmp_path / "exports")
    options = ["--parameters-dir", str(tmp_path)]
    created = cli.invoke(app, [*options, "init-dataset", "loja", "--from", str(export), "--time-zone", "America/Sao_Paulo",
                               "--currency", "BRL", "--country", "BR"])
    assert created.exit_code == 0, created.output
    built = cli.invoke(app, [*options, "build-warehouse", "-d", "loja", "--as-of", "2024-12-31"])
    assert built.exit_code == 0, built.output
    warehouse = tmp_path / "home" / "data" / "warehouse" / "loja.duckdb"
    assert f"warehouse built: {warehouse}" in " ".join(built.stdout.split())
    assert "quarantined" in built.stdout and "customer_lineage" in built.stdout
    orders = next(line for line in built.stdout.splitlines() if "│ orders " in line)
    assert [cell.strip() for cell in orders.strip("│ ").split("│")][2:5] == ["3", "3", "0"]
    before = warehouse.stat().st_mtime_ns

    _sales_export(tmp_path / "exports", with_bad_line=True)
    failed = cli.invoke(app, [*options, "build-warehouse", "-d", "loja", "--as-of", "2024-12-31"])
    assert failed.exit_code == 1 and "was not replaced" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert warehouse.stat().st_mtime_ns == before
    # the same build with its sources validated one after another in this process
    tolerant = cli.invoke(app, [*options, "build-warehouse", "-d", "loja", "--as-of", "2024-12-31", "--quarantine-threshold", "0.5",
                                "--workers", "1"])
    assert tolerant.exit_code == 0, tolerant.output
    orders = next(line for line in tolerant.stdout.splitlines() if "│ orders " in line)
    assert [cell.strip() for cell in orders.strip("│ ").split("│")][2:5] == ["4", "3", "1"]
    report = readiness.check_dataset(tmp_path / "datasets" / "loja.yaml")
    assert report.origin.startswith("the warehouse") and report.tables["orders"].rows == 3


def test_served_pages_read_the_outputs_of_the_chosen_dataset(monkeypatch):
    from crm_analytics import paths
    from crm_analytics import serve as serve_module

    for name in (paths.DATASET_ENV, "PYTHONPATH", "VOILA_APP_IP"):  # restored (or removed) afterwards
        monkeypatch.setenv(name, "")
    serve_module._kernel_environment("127.0.0.1", "online_retail_ii")  # what every page kernel inherits
    assert paths.default_dataset() == "online_retail_ii"
    assert paths.latest_run_dir("kpi") == paths.outputs_root() / "online_retail_ii" / "kpi" / "latest"


def test_error_messages_keep_their_bracketed_text(capsys):
    import typer

    from crm_analytics.cli import _fail

    with pytest.raises(typer.Exit):
        _fail("give `names` in order, e.g. [order_no, account]; got None")
    assert "e.g. [order_no, account]; got None" in capsys.readouterr().err
