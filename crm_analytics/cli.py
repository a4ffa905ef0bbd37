"""The ``crm-analytics`` command.

Exit codes: 0 success, 1 a run failed, 2 a usage or parameter error. Mistakes a
user can fix (an unknown analysis, an unknown parameter, a malformed schedule)
are reported as one line on stderr, without a traceback.

Heavy imports (papermill, the demo generator, the warehouse builder, Voilà) happen
inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="crm-analytics",
    help="Run, schedule and serve the crm-analytics notebooks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schedule_app = typer.Typer(help="Run the analyses on the schedule of parameters/schedule.yaml.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")

console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2
_STATUS_STYLE = {"succeeded": "green", "skipped_locked": "yellow"}


class _Folders:
    """Folder overrides given on the command line (``--notebook-dir``, ``--output-root``, ``--parameters-dir``)."""

    notebook_dir: Path | None = None
    output_root: Path | None = None
    parameters_root: Path | None = None

    @classmethod
    def runner_options(cls) -> dict[str, Any]:
        return {
            "notebook_dir": cls.notebook_dir,
            "output_root": cls.output_root,
            "parameters_root": cls.parameters_root,
        }


@app.callback()
def main(
    notebook_dir: Annotated[Optional[Path], typer.Option(help="Notebooks folder (default: notebooks/).")] = None,
    output_root: Annotated[Optional[Path], typer.Option(help="Outputs folder (default: outputs/).")] = None,
    parameters_dir: Annotated[Optional[Path], typer.Option(help="Parameters folder (default: parameters/).")] = None,
) -> None:
    """Run, schedule and serve the crm-analytics notebooks."""
    _Folders.notebook_dir = notebook_dir.resolve() if notebook_dir else None
    _Folders.output_root = output_root.resolve() if output_root else None
    _Folders.parameters_root = parameters_dir.resolve() if parameters_dir else None


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into a dict; values are YAML (typed numbers and booleans, dates kept as text)."""
    from crm_analytics.runner import parse_value

    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            _fail(f"-p expects key=value, got {pair!r}")
        try:
            values[key.strip()] = parse_value(text)
        except Exception as exc:  # noqa: BLE001 - a YAML error is a usage error
            _fail(f"cannot parse the value of {key.strip()!r}: {exc}")
    return values


def _style(status: str) -> str:
    return _STATUS_STYLE.get(status, "red")


def _print_result(result) -> None:
    line = f"[{_style(result.status)}]{result.status}[/] {result.analysis} {result.run_id} ({result.duration_s:.1f} s)"
    console.print(line, highlight=False)
    if result.run_dir is not None:
        console.print(f"  run folder: {result.run_dir}", highlight=False, soft_wrap=True)
    if result.error_name or result.error_message:
        where = f" in cell {result.error_cell_index}" if result.error_cell_index is not None else ""
        err_console.print(
            f"  {result.error_name or 'error'}{where}: {result.error_message or ''}", highlight=False, soft_wrap=True
        )


@app.command()
def run(
    analysis: Annotated[str, typer.Argument(help="The analysis (a notebook in notebooks/).")],
    parameters_file: Annotated[
        Optional[Path], typer.Option("--parameters-file", "-f", help="A YAML parameter set.")
    ] = None,
    parameter: Annotated[
        Optional[list[str]], typer.Option("--parameter", "-p", help="key=value (repeatable); the value is read as YAML.")
    ] = None,
    cell_timeout: Annotated[float, typer.Option(help="Seconds one cell may take.")] = 600,
    run_timeout: Annotated[float, typer.Option(help="Seconds the whole run may take.")] = 3600,
) -> None:
    """Run one analysis notebook into outputs/<analysis>/<run-id>/."""
    from crm_analytics import runner

    values = _parse_assignments(parameter or [])
    try:
        result = runner.run_analysis(
            analysis,
            parameters=values,
            parameters_file=parameters_file,
            cell_timeout=cell_timeout,
            run_timeout=run_timeout,
            **_Folders.runner_options(),
        )
    except runner.RunnerError as exc:
        _fail(str(exc))
    _print_result(result)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_RUN_FAILED)


def _results_table(results) -> Any:
    from rich.table import Table

    table = Table(title="Runs", show_lines=False)
    for column in ("analysis", "status", "duration", "alerts", "run folder / error"):
        table.add_column(column, overflow="fold")
    for result in sorted(results, key=lambda r: r.analysis):
        detail = result.error_name or "" if not result.ok else str(result.run_dir or "")
        if not result.ok and result.error_message:
            detail = f"{detail}: {result.error_message}"
        table.add_row(
            result.analysis,
            f"[{_style(result.status)}]{result.status}[/]",
            f"{result.duration_s:.1f} s",
            "" if result.alert_count is None else str(result.alert_count),
            detail,
        )
    return table


def _run_all_with_progress(jobs: int, cell_timeout: float, run_timeout: float) -> list:
    """Run every analysis with a progress bar refreshed from the runner's own thread (no display thread)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from crm_analytics import runner

    names = runner.list_analyses(_Folders.notebook_dir)
    if not names:
        _fail(f"no notebooks found in {_Folders.notebook_dir or 'notebooks/'}")
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        auto_refresh=False,
        transient=False,
    )
    task = progress.add_task("running", total=len(names))
    running: list[str] = []

    def on_progress(kind: str, analysis: str, result) -> None:
        if kind == "started":
            running.append(analysis)
        elif kind == "finished":
            running.remove(analysis) if analysis in running else None
            progress.advance(task)
            progress.console.print(
                f"[{_style(result.status)}]{result.status:>14}[/] {analysis} ({result.duration_s:.1f} s)", highlight=False
            )
        progress.update(task, description=", ".join(running) or "done")
        progress.refresh()

    with progress:
        results = runner.run_all(
            jobs=jobs, on_progress=on_progress, cell_timeout=cell_timeout, run_timeout=run_timeout,
            preload_kernels=True, **_Folders.runner_options(),
        )
    return results


def _run_all_command(jobs: int, cell_timeout: float, run_timeout: float) -> list:
    from crm_analytics import runner

    started = time.monotonic()
    try:
        results = _run_all_with_progress(jobs, cell_timeout, run_timeout)
    except runner.RunnerError as exc:
        _fail(str(exc))
    console.print(_results_table(results))
    names = runner.list_analyses(_Folders.notebook_dir)
    not_run = sorted(set(names) - {r.analysis for r in results})
    if not_run:
        err_console.print(f"[red]not run (cleansing did not succeed):[/] {', '.join(not_run)}", highlight=False)
    failed = [r for r in results if not r.ok]
    console.print(
        f"{len(results) - len(failed)} of {len(names)} succeeded in {time.monotonic() - started:.1f} s", highlight=False
    )
    return results


@app.command("run-all")
def run_all(
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Notebooks run in parallel.")] = 2,
    cell_timeout: Annotated[float, typer.Option(help="Seconds one cell may take.")] = 600,
    run_timeout: Annotated[float, typer.Option(help="Seconds one notebook may take.")] = 3600,
) -> None:
    """Run cleansing, then every other analysis in parallel; print a table of results."""
    results = _run_all_command(jobs, cell_timeout, run_timeout)
    raise typer.Exit(EXIT_OK if results and all(r.ok for r in results) and _all_ran(results) else EXIT_RUN_FAILED)


def _all_ran(results) -> bool:
    from crm_analytics import runner

    return {r.analysis for r in results} >= set(runner.list_analyses(_Folders.notebook_dir))


@app.command("list")
def list_command() -> None:
    """List the analyses and their last successful run."""
    from crm_analytics import runner

    names = runner.list_analyses(_Folders.notebook_dir)
    if not names:
        err_console.print("no notebooks found")
        return
    for name in names:
        latest = runner.latest_run(name, output_root=_Folders.output_root)
        console.print(f"{name:<20} {'latest: ' + latest.name if latest else 'never succeeded'}", highlight=False)


@app.command("demo-data")
def demo_data(
    customers: Annotated[int, typer.Option("--customers", "-n", min=1, help="Number of customers.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Generate the demo raw exports and their ground truth into data/raw/demo/."""
    from crm_analytics import demo

    path = demo.generate(customers, seed=seed)
    console.print(f"demo data written to {path}", highlight=False)


@app.command("build-warehouse")
def build_warehouse() -> None:
    """Build data/warehouse/crm.duckdb from the raw sources."""
    from crm_analytics import warehouse

    path = warehouse.build()
    console.print(f"warehouse built: {path}", highlight=False)


@app.command()
def demo(
    customers: Annotated[int, typer.Option("--customers", "-n", min=1, help="Number of customers.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Notebooks run in parallel.")] = 2,
) -> None:
    """Generate demo data, run every analysis, and print where the report index is."""
    from crm_analytics import paths, report_index

    started = time.monotonic()
    _generate_while_preloading(customers, seed)
    console.print(f"demo data: {customers:,} customers (seed {seed}) in {time.monotonic() - started:.1f} s, kernel libraries loaded alongside", highlight=False)
    results = _run_all_command(jobs, 600, 3600)
    index = report_index.write_index(_Folders.output_root or paths.outputs_dir())
    console.print(f"report index: {index}", highlight=False)
    raise typer.Exit(EXIT_OK if results and all(r.ok for r in results) and _all_ran(results) else EXIT_RUN_FAILED)


def _generate_while_preloading(customers: int, seed: int) -> None:
    """Generate the demo data in a child process while this one imports what the notebook kernels need.

    The two take seconds each on one core apiece; every run of the batch that follows, the
    first included, then starts its kernel from a fork of this process (``crm_analytics.kernels``).
    """
    import multiprocessing

    from crm_analytics import demo as demo_module
    from crm_analytics import kernels

    child = multiprocessing.get_context("fork").Process(
        target=demo_module.generate, args=(customers,), kwargs={"seed": seed}, name="crm-demo-data"
    )
    child.start()
    kernels.preload()
    child.join()
    if child.exitcode != 0:
        _fail(f"generating the demo data failed (exit code {child.exitcode}); its error is printed above", EXIT_RUN_FAILED)


@app.command()
def index(
    pages_url: Annotated[
        Optional[str], typer.Option(help="Base URL of the Voilà server for live-page links.")
    ] = None,
) -> None:
    """Rewrite outputs/index.html."""
    from crm_analytics import report_index, runner

    path = report_index.write_index(
        _Folders.output_root, pages_url=pages_url, analyses=runner.list_analyses(_Folders.notebook_dir)
    )
    console.print(str(path), highlight=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (keep 127.0.0.1 unless behind a proxy).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8866,
    token: Annotated[Optional[str], typer.Option(help="Access token required by the server.")] = None,
) -> None:
    """Serve the notebooks read-only as Voilà pages."""
    from crm_analytics import serve as serve_module

    serve_module.serve(host=host, port=port, token=token)


def _load_schedule(path: Optional[Path]):
    from crm_analytics import scheduler

    try:
        return scheduler.load_schedule(path)
    except scheduler.ScheduleError as exc:
        _fail(str(exc))


_ScheduleFile = Annotated[Optional[Path], typer.Option("--file", "-f", help="Schedule (default parameters/schedule.yaml).")]


@schedule_app.command("run")
def schedule_run(
    schedule_file: _ScheduleFile = None,
    jobstore: Annotated[
        Optional[str], typer.Option(help="SQLAlchemy URL of the job store, or 'memory' (default: SQLite in outputs/).")
    ] = None,
) -> None:
    """Run the schedule in the foreground (one long-lived process; stop with Ctrl-C)."""
    from crm_analytics import scheduler

    config = _load_schedule(schedule_file)
    err_console.print(f"scheduler started with {len(config.jobs)} job(s); log: {scheduler.default_log_path(_Folders.output_root)}")
    options = {k: v for k, v in _Folders.runner_options().items() if v is not None}
    scheduler.run_schedule(config, jobstore_url=jobstore, runner_options=options)


@schedule_app.command("list")
def schedule_list(
    schedule_file: _ScheduleFile = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Fire times shown per job.")] = 3,
) -> None:
    """Print every job with its next fire times (in the job's zone, and in UTC)."""
    from datetime import timezone

    from rich.table import Table

    from crm_analytics import scheduler

    config = _load_schedule(schedule_file)
    table = Table(title=f"Schedule ({config.source})", show_lines=True)
    for column in ("job", "analysis", "cron", "zone", "retries", "next runs"):
        table.add_column(column, overflow="fold")
    for job, times in scheduler.next_fire_times(config, count=count):
        shown = "\n".join(f"{t:%Y-%m-%d %H:%M %Z} ({t.astimezone(timezone.utc):%H:%M} UTC)" for t in times)
        table.add_row(job.id, job.analysis, job.cron, job.timezone, str(job.retries), shown)
    Console(width=max(console.width, 120)).print(table)


@schedule_app.command("crontab")
def schedule_crontab(
    schedule_file: _ScheduleFile = None,
    root: Annotated[Optional[Path], typer.Option(help="Project folder the cron lines cd into.")] = None,
) -> None:
    """Print crontab lines equivalent to the schedule (with CRON_TZ lines for the zones)."""
    from crm_analytics import scheduler

    config = _load_schedule(schedule_file)
    sys.stdout.write(scheduler.crontab_lines(config, root=root))


if __name__ == "__main__":  # pragma: no cover
    app()
