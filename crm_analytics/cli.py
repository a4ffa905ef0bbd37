"""The ``crm-analytics`` command.

Exit codes: 0 success, 1 a run failed, 2 a usage or parameter error, 130 or 143 a run cancelled by
SIGINT (Ctrl-C) or SIGTERM (128 plus the signal number, as a shell reports it). Mistakes a
user can fix (an unknown analysis, an unknown parameter, a malformed schedule)
are reported as one line on stderr, without a traceback.

Heavy imports (papermill, the demo generator, the warehouse builder, Voilà) happen
inside the commands, so ``--help`` stays fast.

Every command that reads data takes ``--dataset/-d NAME`` (a file ``parameters/datasets/<NAME>.yaml``;
default: the project default of ``parameters/project.yaml`` or ``CRM_ANALYTICS_DATASET``). A relative
path given on the command line is taken from the current directory; relative paths inside parameter
files are taken from the project root.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console

_PATHS_HELP = (
    "A relative path on the command line (-f FILE, -p x_path=...) is resolved from the current directory; "
    "relative paths inside parameter files are resolved from the project root."
)

app = typer.Typer(
    name="crm-analytics",
    help=f"Run, schedule and serve the crm-analytics notebooks on a dataset. {_PATHS_HELP}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schedule_app = typer.Typer(help="Run the analyses on the schedule of parameters/schedule.yaml.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")

console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2
_PATH_SUFFIXES = ("_path", "_dir", "_file")



def _dataset_name_only(value: str | None) -> str | None:
    """Refuse a path given as ``--dataset``: runs, warehouses and reports are named after the dataset."""
    if value and (value.endswith((".yaml", ".yml")) or "/" in value or "\\" in value):
        stem = Path(value).stem
        raise typer.BadParameter(
            f"{value!r} is a path; give the dataset's name: put the file at parameters/datasets/{stem}.yaml "
            f"and pass `--dataset {stem}`."
        )
    return value


DatasetOption = Annotated[
    Optional[str],
    typer.Option(
        "--dataset", "-d",
        callback=_dataset_name_only,
        help="Dataset: a name under parameters/datasets/ (default: the project default of parameters/project.yaml).",
    ),
]
ParameterOption = Annotated[
    Optional[list[str]], typer.Option("--parameter", "-p", help="key=value (repeatable); the value is read as YAML.")
]
_STATUS_STYLE = {"succeeded": "green", "skipped_locked": "yellow", "not_applicable": "bright_black", "cancelled": "yellow"}


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
    output_root: Annotated[Optional[Path], typer.Option(help="Outputs folder of every dataset (default: outputs/); runs go to <it>/<dataset>/<analysis>/.")] = None,
    parameters_dir: Annotated[Optional[Path], typer.Option(help="Parameters folder (default: parameters/).")] = None,
) -> None:
    """Run, schedule and serve the crm-analytics notebooks on a dataset."""
    _Folders.notebook_dir = notebook_dir.resolve() if notebook_dir else None
    _Folders.output_root = output_root.resolve() if output_root else None
    _Folders.parameters_root = parameters_dir.resolve() if parameters_dir else None


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into a dict; values are YAML (typed numbers and booleans, dates kept as text).

    A relative path given to a key ending in ``_path``, ``_dir`` or ``_file`` is made absolute from the
    current directory (the runner would otherwise read it from the project root, as in parameter files).
    """
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
    return {key: _from_working_directory(key, value) for key, value in values.items()}


def _from_working_directory(key: str, value: Any) -> Any:
    if key.endswith(_PATH_SUFFIXES) and isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
        return str(Path.cwd() / Path(value).expanduser())
    return value


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


@app.command(short_help="Run one analysis notebook on a dataset.", help=f"Run one analysis notebook on a dataset into outputs/<dataset>/<analysis>/<run-id>/. {_PATHS_HELP}")
def run(
    analysis: Annotated[str, typer.Argument(help="The analysis (a notebook in notebooks/).")],
    parameters_file: Annotated[
        Optional[Path], typer.Option("--parameters-file", "-f", help="A YAML parameter set.")
    ] = None,
    parameter: ParameterOption = None,
    dataset: DatasetOption = None,
    cell_timeout: Annotated[float, typer.Option(help="Seconds one cell may take.")] = 600,
    run_timeout: Annotated[float, typer.Option(help="Seconds the whole run may take.")] = 3600,
) -> None:
    from crm_analytics import runner

    values = _parse_assignments(parameter or [])
    try:
        result = runner.run_analysis(
            analysis,
            parameters=values,
            parameters_file=parameters_file.resolve() if parameters_file else None,
            cell_timeout=cell_timeout,
            run_timeout=run_timeout,
            dataset=dataset,
            **_Folders.runner_options(),
        )
    except runner.RunnerError as exc:
        _fail(str(exc))
    _print_result(result)
    raise typer.Exit(_exit_code([result]))


def _exit_code(results) -> int:
    """128 plus the signal that cancelled a run, else 0 when every run is ok, else 1."""
    cancelled = [r.cancel_signal for r in results if r.cancel_signal]
    if cancelled:
        return 128 + int(cancelled[0])
    return EXIT_OK if results and all(r.ok for r in results) else EXIT_RUN_FAILED


def _results_table(results) -> Any:
    from rich.table import Table

    table = Table(title="Runs", show_lines=False)
    for column in ("analysis", "status", "duration", "alerts", "run folder / error"):
        table.add_column(column, overflow="fold")
    for result in sorted(results, key=lambda r: r.analysis):
        detail = result.error_name or "" if not result.ok else str(result.run_dir or "")
        if not result.ok and result.error_message:
            detail = f"{detail}: {result.error_message}"
        if result.reason:
            detail = result.reason
        table.add_row(
            result.analysis,
            f"[{_style(result.status)}]{result.status}[/]",
            f"{result.duration_s:.1f} s",
            "" if result.alert_count is None else str(result.alert_count),
            detail,
        )
    return table


def _run_all_with_progress(jobs: int, cell_timeout: float, run_timeout: float, **batch: Any) -> list:
    """Run every analysis with a progress bar refreshed from the runner's own thread (no display thread)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from crm_analytics import runner

    names = runner.list_analyses(_Folders.notebook_dir)
    if not names:
        _fail(f"no notebooks found in {_Folders.notebook_dir or 'notebooks/'}")
    runner.batch_parameters(names, notebook_dir=_Folders.notebook_dir, **batch)  # usage errors before the progress bar
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
            preload_kernels=True, **batch, **_Folders.runner_options(),
        )
    return results


def _run_all_command(jobs: int, cell_timeout: float, run_timeout: float, **batch: Any) -> list:
    """Run every analysis; ``batch`` holds ``dataset``, ``common_parameters`` and ``parameters_file`` of ``runner.run_all``."""
    from crm_analytics import runner

    started = time.monotonic()
    try:
        results = _run_all_with_progress(jobs, cell_timeout, run_timeout, **batch)
    except runner.RunnerError as exc:
        _fail(str(exc))
    console.print(_results_table(results))
    names = runner.list_analyses(_Folders.notebook_dir)
    not_run = sorted(set(names) - {r.analysis for r in results})
    if not_run:
        err_console.print(f"[red]not run (cleansing did not succeed):[/] {', '.join(not_run)}", highlight=False)
    failed = [r for r in results if not r.ok]
    inapplicable = sum(r.reason is not None for r in results)
    console.print(
        f"{len(results) - len(failed) - inapplicable} of {len(names)} succeeded, {inapplicable} not applicable to the data,"
        f" in {time.monotonic() - started:.1f} s",
        highlight=False,
    )
    return results


@app.command(
    "run-all",
    short_help="Run cleansing, then every other analysis, on one dataset.",
    help="Run cleansing, then every other analysis in parallel, on one dataset; print a table of results. "
    "-p and -f values go to every analysis whose notebook declares the key (a key none declares is an error). "
    + _PATHS_HELP,
)
def run_all(
    dataset: DatasetOption = None,
    parameter: ParameterOption = None,
    parameters_file: Annotated[
        Optional[Path], typer.Option("--parameters-file", "-f", help="A YAML parameter set applied to every analysis declaring its keys.")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Notebooks run in parallel.")] = 2,
    cell_timeout: Annotated[float, typer.Option(help="Seconds one cell may take.")] = 600,
    run_timeout: Annotated[float, typer.Option(help="Seconds one notebook may take.")] = 3600,
) -> None:
    results = _run_all_command(
        jobs, cell_timeout, run_timeout, dataset=dataset, common_parameters=_parse_assignments(parameter or []),
        parameters_file=parameters_file.resolve() if parameters_file else None,
    )
    code = _exit_code(results)
    raise typer.Exit(EXIT_RUN_FAILED if code == EXIT_OK and not _all_ran(results) else code)


def _all_ran(results) -> bool:
    from crm_analytics import runner

    return {r.analysis for r in results} >= set(runner.list_analyses(_Folders.notebook_dir))


@app.command("list")
def list_command(dataset: DatasetOption = None) -> None:
    """List the analyses and their last successful run on the dataset."""
    from crm_analytics import runner

    dataset = _load_dataset(dataset).name
    names = runner.list_analyses(_Folders.notebook_dir)
    if not names:
        err_console.print("no notebooks found")
        return
    for name in names:
        latest = runner.latest_run(name, output_root=_Folders.output_root, dataset=dataset)
        console.print(f"{name:<20} {'latest: ' + latest.name if latest else 'never succeeded'}", highlight=False)


@app.command("demo-data")
def demo_data(
    customers: Annotated[
        Optional[int], typer.Option("--customers", "-n", min=1, help="Number of customers (default 50,000; with --b2b, accounts: 400).")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default 42; with --b2b, 7).")] = None,
    b2b: Annotated[
        bool, typer.Option("--b2b", help="Generate the B2B-only dataset b2b_demo instead: accounts, opportunities, stage history, no orders.")
    ] = False,
) -> None:
    """Generate the demo raw exports and their ground truth into data/raw/demo/ (with --b2b: data/raw/b2b_demo/)."""
    if b2b:
        from crm_analytics.demo import b2b as b2b_demo

        path = b2b_demo.generate_b2b(customers or 400, seed=7 if seed is None else seed)
    else:
        from crm_analytics import demo

        path = demo.generate(customers or 50_000, seed=42 if seed is None else seed)
    console.print(f"demo data written to {path}", highlight=False)


@app.command("build-warehouse")
def build_warehouse(
    dataset: DatasetOption = None,
    export_date: Annotated[
        Optional[str],
        typer.Option("--export-date", "--as-of", help="Day the export was taken, ISO date; later rows are quarantined as future-dated "
                     "(default: the dataset's export_date, else today in its time zone)."),
    ] = None,
    quarantine_threshold: Annotated[
        float, typer.Option(min=0, max=1, help="Largest share (0-1) of quarantined rows in any source; above it the build fails.")
    ] = 0.05,
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=1, help="Processes validating sources side by side (1: one after another, in this "
                          "process); each holds one source at a time, so memory grows with them.")
    ] = 2,
) -> None:
    """Build the dataset's warehouse (data/warehouse/<dataset>.duckdb) with full cleansing and entity resolution.

    Bad rows go to the quarantine, never dropped; a failed build leaves the previous warehouse in place.
    """
    from crm_analytics import datasets, money, paths, sources, warehouse
    from crm_analytics.cleansing import QuarantineThresholdError, build_clean_warehouse
    from crm_analytics.cleansing.pipeline import build_as_of

    loaded = _load_dataset(_dataset_reference(dataset) if dataset else None)
    built_as_of = build_as_of(export_date, loaded)
    warehouse.watch_for_cancel()
    try:
        result = build_clean_warehouse(
            dataset=loaded, as_of=built_as_of, warehouse_path=paths.warehouse_path(loaded.name), quarantine_threshold=quarantine_threshold,
            workers=workers,
        )
    except (datasets.DatasetError, sources.SourceError) as exc:
        _fail(_one_line(exc))
    except (QuarantineThresholdError, money.ExchangeRateError) as exc:  # the data, not the command
        _fail(_one_line(exc), EXIT_RUN_FAILED)
    console.print(f"warehouse built: {result.warehouse_path} (dataset {loaded.describe()}, export date {built_as_of:%Y-%m-%d})", highlight=False, soft_wrap=True)
    console.print(_build_tables(result))


def _load_dataset(name: str | None):
    from crm_analytics import datasets

    try:
        return datasets.load_dataset(name or None)
    except datasets.DatasetError as exc:
        _fail(_one_line(exc))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _build_tables(result) -> Any:
    """Rows per source (in, clean, quarantined) and rows per warehouse table of a cleansing build."""
    from rich.console import Group
    from rich.table import Table

    per_source = Table(title="Sources")
    for column in ("source", "table", "rows in", "clean", "quarantined", "quarantined %"):
        per_source.add_column(column, justify="left" if column in ("source", "table") else "right")
    for row in result.row_counts.itertuples(index=False):
        per_source.add_row(
            str(row.source), str(row.table_name), f"{row.rows_in:,}", f"{row.rows_clean:,}",
            f"{row.rows_quarantined:,}", f"{row.quarantined_pct:.1f}",
        )
    per_table = Table(title="Warehouse tables")
    per_table.add_column("table")
    per_table.add_column("rows", justify="right")
    for name, rows in sorted(result.table_rows.items()):
        per_table.add_row(name, f"{rows:,}")
    return Group(per_source, per_table)


@app.command()
def demo(
    customers: Annotated[int, typer.Option("--customers", "-n", min=1, help="Number of customers.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Notebooks run in parallel.")] = 2,
) -> None:
    """Generate the demo data, run every analysis on the demo dataset, and print where the report index is."""
    from crm_analytics import paths, report_index

    started = time.monotonic()
    _generate_while_preloading(customers, seed)
    console.print(f"demo data: {customers:,} customers (seed {seed}) in {time.monotonic() - started:.1f} s, kernel libraries loaded alongside", highlight=False)
    results = _run_all_command(jobs, 600, 3600, dataset=paths.DEMO_DATASET)
    index = report_index.write_index(_Folders.output_root, dataset=paths.DEMO_DATASET)
    console.print(f"report index: {index}", highlight=False)
    code = _exit_code(results)
    raise typer.Exit(EXIT_RUN_FAILED if code == EXIT_OK and not _all_ran(results) else code)


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


_INIT_HELP = (
    "Propose parameters/datasets/NAME.yaml from a sample of the files, for you to check and complete. "
    "Reads the header and 2,000 rows of each file (every sheet of a workbook), recognises columns from their names "
    "(English, Portuguese, Chinese) and values (dates and their format, amounts with a decimal point or comma, "
    "e-mails, phones, ids) and writes a commented dataset file. Time zone, currency and country are never guessed: "
    "without the options they are written TODO, and the dataset cannot be used until they are set. "
    "Relative paths are taken from the current directory."
)
_CHECK_HELP = (
    "Print a readiness report: rows and date range per canonical table, unmapped required columns, mapped columns "
    "that came out empty, and the analyses the data supports. Reads the dataset's warehouse when it is built, else "
    "its sources. Exit code 0 when every source reads and every required column is mapped, 1 otherwise, 2 for an "
    "unknown or unfinished dataset file."
)


@app.command("init-dataset", short_help="Propose a dataset file from a sample of its files.", help=_INIT_HELP)
def init_dataset(
    name: Annotated[str, typer.Argument(help="The new dataset's name (lower-case letters, digits, _ or -).")],
    from_files: Annotated[
        list[Path], typer.Option("--from", help="An export to read (CSV, Excel or Parquet); repeat for several files.")
    ],
    time_zone: Annotated[Optional[str], typer.Option(help="Business time zone (IANA, e.g. Europe/London); default: TODO.")] = None,
    currency: Annotated[Optional[str], typer.Option(help="ISO 4217 currency of the amounts (e.g. GBP); default: TODO.")] = None,
    country: Annotated[Optional[str], typer.Option(help="ISO 3166 alpha-2 country of the business (e.g. GB); default: TODO.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing dataset file.")] = False,
) -> None:
    from crm_analytics import dataset_init, datasets

    try:
        path = dataset_init.init_dataset(
            name, [p.resolve() for p in from_files], time_zone=time_zone, currency=currency, country=country,
            force=force, datasets_dir=_datasets_dir(),
        )
    except (dataset_init.InitError, datasets.DatasetError) as exc:
        _fail(_one_line(exc))
    todo = [key for key, given in (("time_zone", time_zone), ("currency", currency), ("country", country)) if not given]
    console.print(f"dataset file written: {path}", highlight=False)
    if todo:
        console.print(f"set {', '.join(todo)} in it (still TODO), then check it with `crm-analytics check-dataset {name}`", highlight=False)
    else:
        console.print(f"check it, then run `crm-analytics check-dataset {name}`", highlight=False)


@app.command("check-dataset", short_help="Print what a dataset holds and which analyses it supports.", help=_CHECK_HELP)
def check_dataset(
    name: Annotated[str, typer.Argument(help="A dataset name (parameters/datasets/NAME.yaml) or a dataset file.")],
) -> None:
    from crm_analytics import datasets, readiness, sources

    target = _dataset_reference(name)
    try:
        report = readiness.check_dataset(target)
    except (datasets.DatasetError, sources.SourceError) as exc:
        _fail(_one_line(exc))
    sys.stdout.write(readiness.format_report(report))
    raise typer.Exit(EXIT_OK if report.ready else EXIT_RUN_FAILED)


def _datasets_dir() -> Path | None:
    """``<--parameters-dir>/datasets`` when the parameters folder is overridden."""
    return _Folders.parameters_root / "datasets" if _Folders.parameters_root else None


def _dataset_reference(name: str) -> str:
    """A dataset name, or its file under ``--parameters-dir`` when that folder is overridden."""
    folder = _datasets_dir()
    if folder is not None and not name.endswith((".yaml", ".yml")) and (folder / f"{name}.yaml").is_file():
        return str(folder / f"{name}.yaml")
    return name


@app.command()
def index(
    pages_url: Annotated[
        Optional[str], typer.Option(help="Base URL of the Voilà server for live-page links.")
    ] = None,
    dataset: DatasetOption = None,
) -> None:
    """Rewrite outputs/<dataset>/index.html and outputs/index.html (the list of datasets)."""
    from crm_analytics import report_index, runner

    path = report_index.write_index(
        _Folders.output_root, pages_url=pages_url, analyses=runner.list_analyses(_Folders.notebook_dir),
        dataset=_load_dataset(dataset).name,
    )
    console.print(str(path), highlight=False)


@app.command(short_help="Show or print to PDF the latest report of an analysis.")
def report(
    analysis: Annotated[str, typer.Argument(help="The analysis (a notebook in notebooks/).")],
    pdf: Annotated[bool, typer.Option("--pdf", help="Print the report to PDF with headless Chromium (Debian package chromium).")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The PDF to write (default: report.pdf in the run folder).")] = None,
    dataset: DatasetOption = None,
) -> None:
    """Print the path of the latest good report of ANALYSIS on a dataset; with --pdf, print it to PDF and show the PDF's path.

    Page breaks in the PDF never cut a figure or a table row; the run's report.html is left unchanged.
    """
    from crm_analytics import report_pdf, runner

    name = _load_dataset(dataset).name
    try:
        runner.notebook_path(analysis, _Folders.notebook_dir)
    except runner.RunnerError as exc:
        _fail(_one_line(exc))
    run_dir = runner.latest_run(analysis, output_root=_Folders.output_root, dataset=name)
    if run_dir is None or not (run_dir / runner.REPORT).is_file():
        _fail(f"no successful run of {analysis!r} on dataset {name!r} has a report yet; run `crm-analytics run {analysis} --dataset {name}` first")
    if not pdf:
        sys.stdout.write(f"{run_dir / runner.REPORT}\n")  # a path, never wrapped
        return
    target = out.resolve() if out else run_dir / report_pdf.PDF_NAME
    try:
        written = report_pdf.render_pdf(run_dir / runner.REPORT, target)
    except report_pdf.PdfError as exc:
        _fail(_one_line(exc), EXIT_RUN_FAILED)
    sys.stdout.write(f"{written}\n")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (keep 127.0.0.1 unless behind a proxy).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8866,
    token: Annotated[
        Optional[str],
        typer.Option(help="Access token required by the server (shows in ps: prefer --token-file or CRM_ANALYTICS_SERVE_TOKEN)."),
    ] = None,
    token_file: Annotated[Optional[Path], typer.Option(help="File holding the access token.")] = None,
    max_kernels: Annotated[int, typer.Option(help="Most page kernels at once; more visitors get a 'busy' page (0: from memory).")] = 0,
    warm_kernels: Annotated[int, typer.Option(help="Kernels kept started and imported for the next visits (0: none).")] = 1,
    dataset: DatasetOption = None,
    viewer_header: Annotated[
        Optional[str], typer.Option(help="Header in which a trusted reverse proxy sends the viewer's identity (e.g. X-Forwarded-User): rows per viewer, see --access-file.")
    ] = None,
    proxy_secret_file: Annotated[Optional[Path], typer.Option(help="File whose content the proxy sends in --proxy-secret-header.")] = None,
    proxy_secret_header: Annotated[str, typer.Option(help="Header carrying the proxy's shared secret.")] = "X-Proxy-Secret",
    trusted_proxy: Annotated[Optional[list[str]], typer.Option(help="Address the proxy connects from (repeatable).")] = None,
    access_file: Annotated[
        Optional[Path],
        typer.Option(help="Viewer groups and their rows. Default: the served dataset's access: block when its file has one, "
                          "else parameters/access.yaml; this option wins over both, and the start-up log names the source used."),
    ] = None,
) -> None:
    """Serve the notebooks read-only as Voilà pages showing the dataset's latest results."""
    from crm_analytics import access
    from crm_analytics import serve as serve_module

    try:
        token = serve_module.resolve_token(token, token_file)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    try:
        serve_module.serve(
            host=host, port=port, token=token, max_kernels=max_kernels, warm_kernels=warm_kernels, dataset=_load_dataset(dataset).name,
            viewer_header=viewer_header, proxy_secret_file=proxy_secret_file, proxy_secret_header=proxy_secret_header,
            trusted_proxies=trusted_proxy or (), access_file=access_file,
        )
    except access.AccessError as exc:  # the viewer groups, checked before the server starts
        _fail(_one_line(exc))


def _load_schedule(path: Optional[Path], dataset: str | None = None):
    from crm_analytics import scheduler

    try:
        return scheduler.load_schedule(path, dataset=dataset, notebook_dir=_Folders.notebook_dir, parameters_root=_Folders.parameters_root)
    except scheduler.ScheduleError as exc:
        _fail(str(exc))


_ScheduleFile = Annotated[Optional[Path], typer.Option("--file", "-f", help="Schedule (default parameters/schedule.yaml).")]


@schedule_app.command("run")
def schedule_run(
    schedule_file: _ScheduleFile = None,
    jobstore: Annotated[
        Optional[str], typer.Option(help="SQLAlchemy URL of the job store, or 'memory' (default: SQLite in outputs/).")
    ] = None,
    dataset: DatasetOption = None,
) -> None:
    """Run the schedule in the foreground (one long-lived process; stop with Ctrl-C)."""
    from crm_analytics import scheduler

    config = _load_schedule(schedule_file, dataset)
    err_console.print(f"scheduler started with {len(config.jobs)} job(s); log: {scheduler.default_log_path(_Folders.output_root)}")
    options = {k: v for k, v in _Folders.runner_options().items() if v is not None}
    scheduler.run_schedule(config, jobstore_url=jobstore, runner_options=options)


@schedule_app.command("list")
def schedule_list(
    schedule_file: _ScheduleFile = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Fire times shown per job.")] = 3,
    dataset: DatasetOption = None,
) -> None:
    """Print every job with its dataset and next fire times (in the job's zone, and in UTC)."""
    from datetime import timezone

    from rich.table import Table

    from crm_analytics import paths, scheduler

    config = _load_schedule(schedule_file, dataset)
    table = Table(title=f"Schedule ({config.source})", show_lines=True)
    for column in ("job", "analysis", "dataset", "cron", "zone", "retries", "next runs"):
        table.add_column(column, overflow="fold")
    for job, times in scheduler.next_fire_times(config, count=count):
        shown = "\n".join(f"{t:%Y-%m-%d %H:%M %Z} ({t.astimezone(timezone.utc):%H:%M} UTC)" for t in times)
        table.add_row(job.id, job.analysis, job.dataset or paths.default_dataset(), job.cron, job.timezone, str(job.retries), shown)
    Console(width=max(console.width, 120)).print(table)


@schedule_app.command("crontab")
def schedule_crontab(
    schedule_file: _ScheduleFile = None,
    root: Annotated[Optional[Path], typer.Option(help="Project folder the cron lines cd into.")] = None,
    dataset: DatasetOption = None,
) -> None:
    """Print crontab lines equivalent to the schedule (with CRON_TZ lines for the zones)."""
    from crm_analytics import scheduler

    config = _load_schedule(schedule_file, dataset)
    sys.stdout.write(scheduler.crontab_lines(config, root=root))


if __name__ == "__main__":  # pragma: no cover
    app()
