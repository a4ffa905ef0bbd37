"""The probe suite of issue 17: each fault is injected as the issue reproduced it, through the real command.

- the warehouse is replaced atomically: builds killed (SIGKILL) at several points, failed over the
  quarantine threshold, or cancelled (SIGINT) leave the previous warehouse byte-identical and readable;
- cancelling or killing ``crm-analytics run`` ends the run's processes and leaves the warehouse alone;
- mapping mistakes, empty fact files, implausible values, formula payloads and mistyped parameters are
  refused or quarantined as the issue asks;
- the bad-input corpus (``tests/bad_input_cases.py``): for every case, rows in = clean + quarantined and the
  expected error or reason.

The command-level probes work on a small generated demo (300 customers) in a project home of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pytest
from bad_input_cases import CASES, problems, run_case

from crm_analytics import paths, warehouse
from crm_analytics.cleansing import validate

CLI = Path(sys.executable).with_name("crm-analytics")
DEMO_CUSTOMERS, DEMO_SEED = 300, 7
_WAIT_S = 180  # an upper bound for slow machines, not a timing assertion


# --------------------------------------------------------------------------------------------- helpers


def _wait_for(predicate, what: str, *, every: float = 0.05):
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what}")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, **{paths.HOME_ENV: str(home)})


def _cli(home: Path, *arguments: str, check: bool = False) -> subprocess.CompletedProcess:
    done = subprocess.run([str(CLI), *arguments], env=_env(home), capture_output=True, text=True, timeout=_WAIT_S)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _start(home: Path, command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _warehouse(home: Path) -> Path:
    return home / "data" / "warehouse" / "demo.duckdb"


def _raw(home: Path) -> Path:
    return home / "data" / "raw" / "demo"


def _opens(path: Path) -> dict[str, int]:
    """The warehouse's table row counts; it opens read-only and holds customers and orders."""
    counts = warehouse.table_row_counts(path)
    assert counts["customers"] > 0 and counts["orders"] > 0, counts
    return counts


def _build_files(target: Path) -> list[Path]:
    """Temporary files and folders of builds beside the warehouse (``.building-<pid>``, ``.staging-<pid>``)."""
    return sorted(p for p in target.parent.iterdir() if warehouse.BUILDING_MARKER in p.name or warehouse.STAGING_MARKER in p.name)


def _query(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory) -> Path:
    """A project home with a small demo dataset and its warehouse, built by the command line."""
    home = tmp_path_factory.mktemp("probe_home")
    _cli(home, "demo-data", "--customers", str(DEMO_CUSTOMERS), "--seed", str(DEMO_SEED), check=True)
    _cli(home, "build-warehouse", "--dataset", "demo", check=True)
    return home


@pytest.fixture()
def project(demo_project, tmp_path) -> Path:
    """A copy of the demo project for one test to damage."""
    home = tmp_path / "home"
    shutil.copytree(demo_project, home)
    return home


def _change_orders(home: Path) -> None:
    """Drop the last 20 orders of the web shop's export: a finished build would differ."""
    orders = _raw(home) / "web_orders.csv"
    lines = orders.read_text(encoding="utf-8").splitlines(keepends=True)
    orders.write_text("".join(lines[:-20]), encoding="utf-8")


# ---------------------------------------------------------------- the warehouse is replaced atomically

# Runs the real `crm-analytics build-warehouse`, killing itself (SIGKILL, nothing can clean up) when the build
# reaches a point: the n-th call of a function of the package, or the rename of the new file onto the warehouse.
KILL_AT = """
import importlib, os, signal, sys
module_name, function_name, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if function_name == "os.replace":
    def on_event(event, args):
        if event == "os.rename" and str(args[1]).endswith(".duckdb"):
            die()
    sys.addaudithook(on_event)
else:
    module = importlib.import_module(module_name)
    real, calls = getattr(module, function_name), []
    def killing(*args, **kwargs):
        calls.append(1)
        if len(calls) >= nth:
            die()
        return real(*args, **kwargs)
    setattr(module, function_name, killing)
from crm_analytics.cli import app
sys.argv = ["crm-analytics", "build-warehouse", "--dataset", "demo"]
app()
"""

KILL_POINTS = {
    "reading the customer sources": ("crm_analytics.cleansing.pipeline", "_submit_customers", 1),
    "resolving the customers": ("crm_analytics.cleansing.resolve", "resolve_entities", 1),
    "validating the fact sources": ("crm_analytics.cleansing.pipeline", "stage_facts", 1),
    "writing the fifth table of the new file": ("crm_analytics.warehouse", "_write_one", 5),
    "renaming the complete new file": ("", "os.replace", 1),
}


def _assert_untouched(target: Path, before: str) -> None:
    assert _sha256(target) == before, "the previous warehouse changed"
    _opens(target)


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_build_killed_at_any_point_leaves_the_warehouse_byte_identical(project, point):
    target = _warehouse(project)
    before = _sha256(target)
    _change_orders(project)
    done = subprocess.run([sys.executable, "-c", KILL_AT, *map(str, KILL_POINTS[point])], env=_env(project),
                          capture_output=True, text=True, timeout=_WAIT_S)
    assert done.returncode == -signal.SIGKILL, done.stderr
    _assert_untouched(target, before)
    assert not (target.parent / (target.name + warehouse.WAL_SUFFIX)).exists()
    left = warehouse.build_leftovers(target)
    assert left == _build_files(target), "every temporary file of the killed build is recognised as a leftover"
    if point.startswith(("writing", "renaming")):
        assert any(warehouse.BUILDING_MARKER in p.name for p in left), "the kill came while the new file existed"
    # the next build removes the dead build's files and replaces the warehouse whole
    _cli(project, "build-warehouse", "--dataset", "demo", check=True)
    assert _sha256(target) != before and _build_files(target) == []
    _opens(target)


@pytest.mark.slow
def test_builds_killed_from_outside_at_several_moments_leave_the_warehouse_byte_identical(project, tmp_path):
    target = _warehouse(project)
    before = _sha256(target)
    _change_orders(project)
    # a full build of the changed data elsewhere: it differs from the warehouse, and it times the kill points
    reference = tmp_path / "reference"
    shutil.copytree(project, reference)
    started = time.monotonic()
    _cli(reference, "build-warehouse", "--dataset", "demo", check=True)
    full_seconds = time.monotonic() - started
    assert _sha256(_warehouse(reference)) != before
    new_counts = _opens(_warehouse(reference))

    def kill_when(ready) -> bool:
        """Start a build, SIGKILL it when ``ready()`` says so; True when it was still running then."""
        process = _start(project, [str(CLI), "build-warehouse", "--dataset", "demo"])
        try:
            _wait_for(lambda: ready() or process.poll() is not None, "the kill point", every=0.005)
            was_running = process.poll() is None
            process.kill()
            process.wait(timeout=_WAIT_S)
        finally:
            if process.poll() is None:
                process.kill()
        if not was_running:  # finished before the moment came: it replaced the warehouse whole; put the old one back
            assert process.returncode == 0 and _sha256(target) != before
        if _sha256(target) != before:
            # killed after its rename (writing the index, exiting): the warehouse is the whole new build, never a mix
            assert _opens(target) == new_counts, "a replaced warehouse holds the complete new build"
            shutil.copy2(saved, target)
            return False
        return was_running

    saved = shutil.copy2(target, tmp_path / "before.duckdb")
    killed = [kill_when(lambda: any(warehouse.STAGING_MARKER in p.name for p in target.parent.iterdir()))]
    _assert_untouched(target, before)
    for fraction in (0.25, 0.5, 0.75, 0.9):
        moment = time.monotonic() + fraction * full_seconds
        killed.append(kill_when(lambda moment=moment: time.monotonic() >= moment))
        _assert_untouched(target, before)
    assert killed[0] and sum(killed) >= 3, f"most kills came while the build ran: {killed}"
    assert warehouse.build_leftovers(target) == _build_files(target), "what killed builds left is recognised as theirs"


@pytest.mark.slow
def test_a_build_failing_over_the_quarantine_threshold_leaves_the_warehouse_and_no_temporary_files(project):
    target = _warehouse(project)
    before = _sha256(target)
    orders = _raw(project) / "web_orders.csv"
    lines = orders.read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[0].split(",")
    amount = header.index("amount")

    def spoil(line: str) -> str:
        fields = line.split(",")
        return ",".join([*fields[:amount], "n/a", *fields[amount + 1:]]) if len(fields) == len(header) else line

    orders.write_text("".join([lines[0], *(spoil(line) if i % 3 == 0 else line for i, line in enumerate(lines[1:]))]), encoding="utf-8")
    done = _cli(project, "build-warehouse", "--dataset", "demo")
    assert done.returncode == 1 and "quarantined share above" in done.stdout + done.stderr, done.stdout + done.stderr
    _assert_untouched(target, before)
    assert _build_files(target) == []


@pytest.mark.slow
def test_a_build_cancelled_with_sigint_leaves_the_warehouse_and_no_temporary_files(project):
    target = _warehouse(project)
    before = _sha256(target)
    _change_orders(project)
    process = _start(project, [str(CLI), "build-warehouse", "--dataset", "demo"])
    try:
        _wait_for(lambda: any(warehouse.STAGING_MARKER in p.name for p in target.parent.iterdir()), "the build to start", every=0.01)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=_WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    _assert_untouched(target, before)
    assert _build_files(target) == [], "a cancelled build removes its own files"


# ------------------------------------------------------------------ (1, 2) cancelling and killing a run


def _run_folder(home: Path, analysis: str) -> Path:
    return home / "outputs" / "demo" / analysis


def _kernel_of(process: subprocess.Popen, home: Path, analysis: str) -> tuple[Path, int]:
    """Wait until the run has its ``.tmp`` folder and its kernel runs; return the folder and the kernel's pid."""

    def started():
        folders = list(_run_folder(home, analysis).glob("*.tmp"))
        try:
            kernels = [p.pid for p in psutil.Process(process.pid).children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
        except psutil.Error:
            return None
        return (folders[0], kernels[0]) if folders and kernels else None

    return _wait_for(started, f"the kernel of {analysis}")


@pytest.mark.slow
@pytest.mark.parametrize(("signals", "code"), [((signal.SIGINT, signal.SIGINT), 130), ((signal.SIGTERM,), 143)])
def test_cancelling_a_cleansing_run_ends_it_and_never_replaces_the_warehouse(project, signals, code):
    target = _warehouse(project)
    before = _sha256(target)
    _change_orders(project)
    process = _start(project, [str(CLI), "run", "cleansing", "--dataset", "demo"])
    try:
        tmp_dir, kernel_pid = _kernel_of(process, project, "cleansing")
        _wait_for(lambda: any(warehouse.STAGING_MARKER in p.name for p in target.parent.iterdir()), "the build in the kernel", every=0.01)
        tree = psutil.Process(process.pid).children(recursive=True)
        for signum in signals:  # Ctrl-C twice, as an impatient person does
            process.send_signal(signum)
        process.wait(timeout=_WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    _wait_for(lambda: all(_gone(p.pid) for p in tree), "the run's processes to end")
    assert _gone(kernel_pid)
    assert not list(_run_folder(project, "cleansing").glob("*.tmp")), "no run folder is left saying running"
    final = tmp_dir.with_name(tmp_dir.name.removesuffix(".tmp"))
    assert json.loads((final / "run.json").read_text())["status"] == "cancelled"
    _assert_untouched(target, before)


@pytest.mark.slow
def test_killing_a_runner_ends_its_run_and_the_retry_obeys_the_lock(project):
    process = _start(project, [str(CLI), "run", "segmentation", "--dataset", "demo"])
    try:
        tmp_dir, kernel_pid = _kernel_of(process, project, "segmentation")
        tree = psutil.Process(process.pid).children(recursive=True)
        process.kill()  # kill -9: the runner cannot clean up
        process.wait(timeout=_WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    retry = _cli(project, "run", "segmentation", "--dataset", "demo")  # a scheduler's retry, at once
    _wait_for(lambda: all(_gone(p.pid) for p in tree), "the killed runner's processes to end")
    assert _gone(kernel_pid)
    records = [json.loads(path.read_text()) for path in _run_folder(project, "segmentation").glob("*/run.json")]
    statuses = sorted(record["status"] for record in records)
    assert "abandoned" in statuses and not list(_run_folder(project, "segmentation").glob("*.tmp")), statuses
    assert retry.returncode == 0 or "skipped_locked" in statuses, retry.stdout + retry.stderr
    assert set(statuses) <= {"abandoned", "succeeded", "skipped_locked"}, statuses


# ------------------------------------------------------------------- (3, 4) columns and empty facts


def _dataset_copy(home: Path, name: str, change) -> Path:
    """A parameters folder in ``home`` holding dataset ``name``: the demo's file with its data folder made absolute
    and ``change(document)`` applied. Returns the folder (for ``--parameters-dir``)."""
    import yaml

    folder = home / "parameters"
    if not folder.exists():
        shutil.copytree(paths.parameters_dir(), folder)
    document = yaml.safe_load((folder / "datasets" / "demo.yaml").read_text(encoding="utf-8"))
    document["data_dir"] = str(_raw(home))
    document["ground_truth_dir"] = str(_raw(home) / "ground_truth")
    change(document)
    (folder / "datasets" / f"{name}.yaml").write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_a_mapping_typo_is_an_error_naming_source_name_and_close_match(project):
    def typo(document):
        document["sources"]["web_signups"]["columns"]["email"] = "emial"

    folder = _dataset_copy(project, "demo_typo", typo)
    done = _cli(project, "--parameters-dir", str(folder), "build-warehouse", "--dataset", "demo_typo")
    message = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, message
    assert "missing mapped column 'emial' (for 'email') (did you mean 'email'?) in source 'web_signups'" in message
    assert not (project / "data" / "warehouse" / "demo_typo.duckdb").exists()


@pytest.mark.slow
def test_a_duplicate_header_and_a_header_only_fact_file_are_errors_and_the_warehouse_stays(project):
    target = _warehouse(project)
    before = _sha256(target)
    signups = _raw(project) / "web_signups.csv"
    original = signups.read_text(encoding="utf-8-sig")
    signups.write_text(original.replace("mobile", "email", 1), encoding="utf-8")
    done = _cli(project, "build-warehouse", "--dataset", "demo")
    assert done.returncode == 2 and "the header names 'email' (mapped to 'email') more than once" in " ".join(done.stderr.split()), done.stderr
    signups.write_text(original, encoding="utf-8")
    orders = _raw(project) / "web_orders.csv"
    orders.write_text(orders.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")
    done = _cli(project, "build-warehouse", "--dataset", "demo")
    message = " ".join(done.stderr.split())
    assert done.returncode == 2 and "web_orders.csv: source 'web_orders' (table 'orders') has no rows" in message, message
    _assert_untouched(target, before)


@pytest.mark.slow
def test_order_lines_of_the_demo_all_belong_to_an_order_the_rest_are_quarantined(demo_project):
    target = _warehouse(demo_project)
    assert _query(target, "SELECT count(*) FROM order_items WHERE order_id NOT IN (SELECT order_id FROM orders)") == [(0,)]
    assert _query(target, "SELECT bool_and(is_balanced) FROM quality_row_counts") == [(True,)]
    quarantined = _query(target, f"SELECT count(*) FROM quarantine WHERE table_name = 'order_items' AND reason = '{validate.UNKNOWN_ORDER}'")
    lines_in = _query(target, "SELECT sum(rows_in) - sum(rows_clean) FROM quality_row_counts WHERE table_name = 'order_items'")
    assert quarantined[0][0] <= lines_in[0][0]


# ------------------------------------------------------------------------------------- (5) plausibility


@pytest.mark.slow
def test_implausible_values_planted_in_the_demo_exports_are_quarantined_or_cleaned(project):
    orders = _raw(project) / "web_orders.csv"
    lines = orders.read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    template = dict(zip(header, lines[1].rstrip("\n").split(",")))
    planted = {"X1": "1e308", "X2": "1e308", "X3": "-1e308", "X4": "9999999999999", "X5": '"1,2,3"'}
    rows = [",".join({**template, "order_no": key, "amount": amount}[c] for c in header) + "\n" for key, amount in planted.items()]
    rows.append(",".join({**template, "order_no": "X6", "order_time": "1900-01-02T10:00:00Z"}[c] for c in header) + "\n")
    orders.write_text("".join([*lines, *rows]), encoding="utf-8")
    signups = _raw(project) / "web_signups.csv"
    text = signups.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    first = text[1].split(",")
    first[1] = first[1][:1] + "\x00" + first[1][1:]
    signups.write_text("".join([text[0], ",".join(first), *text[2:]]), encoding="utf-8")
    _cli(project, "build-warehouse", "--dataset", "demo", check=True)
    target = _warehouse(project)
    reasons = dict(_query(target, "SELECT raw_value, reason FROM quarantine WHERE source = 'web_orders' AND "
                                  "(raw_value IN ('1e308', '-1e308', '9999999999999', '1,2,3') OR raw_value LIKE '1900-01-02%')"))
    assert reasons == {"1e308": "out_of_range", "-1e308": "out_of_range", "9999999999999": "out_of_range", "1,2,3": "not_a_number",
                       "1900-01-02T10:00:00Z": "out_of_range"}, reasons
    assert _query(target, "SELECT count(*) FROM orders WHERE order_id IN ('X1', 'X2', 'X3', 'X4', 'X5', 'X6')") == [(0,)]
    assert _query(target, f"SELECT max(abs(order_amount)) < {validate.AMOUNT_LIMIT} FROM orders") == [(True,)]
    assert _query(target, "SELECT count(*) FROM customers WHERE full_name LIKE '%' || chr(0) || '%'") == [(0,)]
    assert _query(target, "SELECT bool_and(is_balanced) FROM quality_row_counts") == [(True,)]


# ------------------------------------------------------------------------ (7) formula payloads in CSVs


@pytest.mark.slow
def test_a_product_named_as_a_formula_is_neutralised_in_every_published_csv(project):
    import csv

    products = _raw(project) / "products.csv"
    text = products.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    sold = _query(_warehouse(project), "SELECT product_id FROM order_items GROUP BY 1 ORDER BY count(*) DESC LIMIT 3")
    payloads = iter(['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(1+1)"])
    out = [text[0]]
    for line in text[1:]:
        fields = next(csv.reader([line]))
        if (fields[0],) in sold:
            fields[1] = next(payloads)
        out.append(",".join('"' + f.replace('"', '""') + '"' for f in fields) + "\n")
    products.write_text("".join(out), encoding="utf-8")
    _cli(project, "build-warehouse", "--dataset", "demo", check=True)
    for analysis in ("recommendation", "behaviour"):
        done = _cli(project, "run", analysis, "--dataset", "demo")
        assert done.returncode == 0, done.stdout + done.stderr
    cells = []
    for path in (project / "outputs").rglob("*.csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            cells += [(path.name, cell) for row in csv.reader(handle) for cell in row]
    assert any(cell.startswith("'=HYPERLINK") for _, cell in cells), "the payload reaches a published table, escaped"
    runnable = [(name, cell) for name, cell in cells if cell[:1] in ("=", "+", "@", "\t", "\r")
                or (cell[:1] == "-" and not _is_number(cell))]
    assert runnable == []


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- (8) typed parameters


@pytest.mark.slow
def test_a_mistyped_date_parameter_fails_before_a_kernel_starts(demo_project):
    done = _cli(demo_project, "run", "segmentation", "--dataset", "demo", "-p", "as_of=notadate")
    message = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0 and "as_of" in message and "date" in message, message
    assert not _run_folder(demo_project, "segmentation").exists() or not any(_run_folder(demo_project, "segmentation").iterdir()), \
        "no run was started"


# ------------------------------------------------------------------------------ the bad-input corpus


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_case(case, tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    outcome = run_case(case, tmp_path / "case")
    assert problems(case, outcome) == [], outcome.summary
