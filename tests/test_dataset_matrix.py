"""``crm-analytics run-all`` on every shape of data: the exact end of every analysis on four datasets.

Each dataset runs once through the real command, in a project home of its own:

- ``demo``: the generated multi-channel CRM with every table (2,000 customers, generated in the home);
- ``cdnow``: orders only (the CDNOW master log shipped in ``data/external/``);
- ``online_retail_ii``: invoice lines only, no CRM tables (the Online Retail II workbook shipped in ``data/external/``);
- ``b2b_demo``: a generated B2B pipeline, accounts, opportunities and stage history, no orders.

``EXPECTED`` holds, per dataset and analysis, how its run ends: ``succeeded``, ``succeeded with warnings:``
and the kinds of warning its ``run.json`` records, or ``not_applicable:`` and the reason. No run may end in
a traceback. Every succeeded report opens with its findings block, shows no long float in its tables and
has a headline number for the index; one report per audience is checked in a browser for tables and figures
wider than the page.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_report_index

from crm_analytics import datasets, findings, headlines, paths, privacy, report_index, results, tables

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "crm-analytics")
PSEUDONYM_KEY = "dataset-matrix-test-key"  # the runs' key, so no key file is written outside the test's homes
DEMO_CUSTOMERS = 2_000

# How each analysis ends on each dataset: "succeeded", "succeeded with warnings: <kinds>" (sorted, distinct
# kinds of the run's warnings) or "not_applicable: <reason>". The data notes say how many orders have no
# customer (12 planted in the demo, 22 invoices in Online Retail II) and, for Online Retail II's product
# analyses, how many lines carry non-merchandise codes; CDNOW has neither. The B2B export has no orders:
# the pipeline and the sales KPIs run, the order-level analyses do not apply.
EXPECTED = {
    "demo": {
        "attribution": "succeeded",
        "behaviour": "succeeded with warnings: data_note",
        "churn": "succeeded with warnings: data_note",
        "cleansing": "succeeded",
        "clv": "succeeded with warnings: data_note",
        "cohort": "succeeded with warnings: data_note",
        "dashboard": "succeeded",
        "experiments": "succeeded",
        "forecast": "succeeded",
        "funnel": "succeeded",
        "kpi": "succeeded with warnings: data_note",
        "lifecycle": "succeeded with warnings: data_note",
        "overview": "succeeded",
        "pipeline": "succeeded",
        "recommendation": "succeeded with warnings: data_note",
        "satisfaction": "succeeded",
        "segmentation": "succeeded with warnings: data_note",
    },
    "cdnow": {
        "attribution": "not_applicable: needs touchpoints, campaigns",
        "behaviour": "not_applicable: needs order_items, products",
        "churn": "succeeded",
        "cleansing": "succeeded",
        "clv": "succeeded",
        "cohort": "succeeded",
        "dashboard": "succeeded",
        "experiments": "not_applicable: needs experiment_assignments",
        "forecast": "succeeded",
        "funnel": "not_applicable: needs web_events",
        "kpi": "succeeded",
        "lifecycle": "succeeded",
        "overview": "succeeded",
        "pipeline": "not_applicable: needs opportunities",
        "recommendation": "not_applicable: needs order_items, products",
        "satisfaction": "not_applicable: needs surveys",
        "segmentation": "succeeded",
    },
    "online_retail_ii": {
        "attribution": "not_applicable: needs touchpoints, campaigns",
        "behaviour": "succeeded with warnings: data_note",
        "churn": "succeeded with warnings: data_note",
        "cleansing": "succeeded",
        "clv": "succeeded with warnings: data_note",
        "cohort": "succeeded with warnings: data_note",
        "dashboard": "succeeded",
        "experiments": "not_applicable: needs experiment_assignments",
        "forecast": "succeeded",
        "funnel": "not_applicable: needs web_events",
        "kpi": "succeeded with warnings: data_note",
        "lifecycle": "succeeded with warnings: data_note",
        "overview": "succeeded",
        "pipeline": "not_applicable: needs opportunities",
        "recommendation": "succeeded with warnings: data_note",
        "satisfaction": "not_applicable: needs surveys",
        "segmentation": "succeeded with warnings: data_note",
    },
    "b2b_demo": {
        "attribution": "not_applicable: needs touchpoints, orders, campaigns",
        "behaviour": "not_applicable: needs orders, order_items, products",
        "churn": "not_applicable: needs orders",
        "cleansing": "succeeded",
        "clv": "not_applicable: needs orders",
        "cohort": "not_applicable: needs orders",
        "dashboard": "succeeded",
        "experiments": "not_applicable: needs experiment_assignments",
        "forecast": "not_applicable: needs orders",
        "funnel": "not_applicable: needs web_events",
        "kpi": "succeeded",
        "lifecycle": "not_applicable: needs orders",
        "overview": "not_applicable: needs orders",
        "pipeline": "succeeded",
        "recommendation": "not_applicable: needs orders, order_items, products",
        "satisfaction": "not_applicable: needs surveys, orders",
        "segmentation": "not_applicable: needs orders",
    },
}
GENERATE = {  # the demo-data command that writes a generated dataset's files into the home
    "demo": ["demo-data", "--customers", str(DEMO_CUSTOMERS)],
    "b2b_demo": ["demo-data", "--b2b"],
}
WARNING_KINDS = {"too_little_data", "not_converged", "skipped", "data_note"}


@dataclass(frozen=True)
class RunAll:
    """One dataset's ``run-all`` in a home of its own: the command's result and each analysis's run record."""

    dataset: str
    home: Path
    completed: subprocess.CompletedProcess
    records: dict[str, dict]


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed ``crm-analytics`` command with ``home`` as the project home."""
    env = {**os.environ, paths.HOME_ENV: str(home), privacy.KEY_ENV: PSEUDONYM_KEY}
    env.pop(paths.DATASET_ENV, None)
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=900)


def run_records(outputs: Path) -> dict[str, dict]:
    """Each analysis's newest run record (run ids begin with their UTC start time), with its folder as ``run_dir``."""
    records = {}
    for analysis_dir in sorted(p for p in outputs.iterdir() if p.is_dir()):
        runs = sorted(p for p in analysis_dir.iterdir() if (p / "run.json").is_file() and not p.is_symlink())
        if runs:
            records[analysis_dir.name] = json.loads((runs[-1] / "run.json").read_text(encoding="utf-8")) | {"run_dir": runs[-1]}
    return records


def outcome(record: dict) -> str:
    """How a run ended, written as in ``EXPECTED``."""
    if record["status"] == "not_applicable":
        return f"not_applicable: {record['reason']}"
    kinds = sorted({warning["kind"] for warning in record.get("warnings", [])})
    if record["status"] == "succeeded" and kinds:
        return f"succeeded with warnings: {', '.join(kinds)}"
    return record["status"]


def shipped_data_missing(dataset: str) -> bool:
    """Whether a dataset read from ``data/external/`` lacks its files in this checkout."""
    return dataset not in GENERATE and not any(datasets.load_dataset(dataset).data_dir.glob("*"))


_RUNS: dict[str, RunAll] = {}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def run_all(request, tmp_path_factory) -> RunAll:
    dataset = request.param
    assert not shipped_data_missing(dataset), f"the files of dataset {dataset} are not in the checkout"
    if dataset not in _RUNS:
        home = tmp_path_factory.mktemp(f"{dataset}_home")
        if dataset in GENERATE:
            generated = run_cli(home, *GENERATE[dataset])
            assert generated.returncode == 0, generated.stderr[-2000:]
        completed = run_cli(home, "run-all", "--dataset", dataset)
        _RUNS[dataset] = RunAll(dataset, home, completed, run_records(home / "outputs" / dataset))
    return _RUNS[dataset]


def test_every_analysis_ends_as_expected(run_all):
    observed = {analysis: outcome(record) for analysis, record in run_all.records.items()}
    assert observed == EXPECTED[run_all.dataset]
    assert all(record["dataset"] == run_all.dataset for record in run_all.records.values())


def test_run_all_exits_cleanly_and_counts_the_outcomes(run_all):
    assert run_all.completed.returncode == 0, run_all.completed.stderr[-2000:]
    expected = list(EXPECTED[run_all.dataset].values())
    n_succeeded = sum(status.startswith("succeeded") for status in expected)
    n_not_applicable = sum(status.startswith("not_applicable") for status in expected)
    summary = " ".join(run_all.completed.stdout.split())
    assert f"{n_succeeded} of {len(expected)} succeeded" in summary
    assert n_not_applicable == 0 or f"{n_not_applicable} not applicable" in summary


def test_no_run_ends_in_a_traceback(run_all):
    assert "Traceback" not in run_all.completed.stderr
    for analysis, record in run_all.records.items():
        assert "error_name" not in record or not record["error_name"], (analysis, record.get("error_message"))
        report = record["run_dir"] / "report.html"
        if report.is_file():
            assert "Traceback" not in report.read_text(encoding="utf-8"), analysis


def test_each_not_applicable_run_names_what_is_missing_and_starts_no_kernel(run_all):
    for analysis, record in run_all.records.items():
        if record["status"] != "not_applicable":
            continue
        assert record["reason"].startswith("needs "), (analysis, record["reason"])
        assert not list(record["run_dir"].glob("*.ipynb")), f"{analysis}: a not_applicable run executes no notebook"


def test_each_warning_is_a_known_kind_with_a_message_in_the_report(run_all):
    for analysis, record in run_all.records.items():
        recorded = results.read_warnings(record["run_dir"])
        assert [w["message"] for w in recorded] == [w["message"] for w in record.get("warnings", [])], analysis
        report = html.unescape((record["run_dir"] / "report.html").read_text(encoding="utf-8")) if recorded else ""
        for warning in recorded:
            assert warning["kind"] in WARNING_KINDS, (analysis, warning)
            assert warning["message"].strip() and "Traceback" not in warning["message"], (analysis, warning)
            # the message's opening words as the report shows them (before any Markdown markup)
            opening = re.split(r"[`*_<>\[\]]", warning["message"])[0][:40].strip()
            assert opening in report, (analysis, opening)


# ----------------------------------------------------------------------------- reports for people, on every dataset


def succeeded_reports(run: RunAll) -> dict[str, Path]:
    """The ``report.html`` of each analysis whose run succeeded."""
    return {analysis: record["run_dir"] / "report.html" for analysis, record in run.records.items() if record["status"] == "succeeded"}


def test_every_report_opens_with_its_findings_and_its_tables_show_no_long_floats(run_all):
    reports = succeeded_reports(run_all)
    assert reports, "no report to read"
    for analysis, report in reports.items():
        page = report.read_text(encoding="utf-8")
        block = page.find('<div class="findings" id="what-we-found">')
        assert block >= 0, f"{analysis}: no findings block"
        first_section = page.find('<h2 id="')  # nbconvert gives every Markdown heading an id; the findings' heading has none
        assert first_section < 0 or block < first_section, f"{analysis}: the findings come after the first section"
        assert findings.PLACEHOLDER not in page, f"{analysis}: the placeholder was never filled"
        shown_tables = "".join(re.findall(r"<table.*?</table>", page, flags=re.S))
        assert tables.long_floats(shown_tables) == [], analysis
        assert headlines.read_headline(report.parent), f"{analysis}: a good run shows at least one headline number on the index"


chromium = test_report_index.chromium  # the browser of the index's screenshot test, shared
REPORT_PER_AUDIENCE = {"executive": "kpi", "customers": "segmentation", "sales_marketing": "funnel", "service": "satisfaction",
                       "data_quality": "cleansing"}
# Tables, figures and blocks wider than the page, unless inside a box that scrolls sideways and itself fits.
_TOO_WIDE = """() => {
  const width = document.documentElement.clientWidth;
  const scrolls = e => { for (let p = e.parentElement; p; p = p.parentElement) {
      const overflow = getComputedStyle(p).overflowX;
      if ((overflow === 'auto' || overflow === 'scroll') && p.getBoundingClientRect().right <= width + 1) return true; }
    return false; };
  return Array.from(document.querySelectorAll('table, img, svg, figure, pre, .findings'))
    .filter(e => e.getBoundingClientRect().width > 0 && e.getBoundingClientRect().right > width + 1 && !scrolls(e))
    .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right) + 'px: ' + (e.textContent || '').slice(0, 40));
}"""


def reports_per_audience(run: RunAll) -> dict[str, Path]:
    """One succeeded report per audience of the index: the usual one (``REPORT_PER_AUDIENCE``), else the first that succeeded."""
    catalogue = report_index.load_catalogue()
    reports = succeeded_reports(run)
    chosen = {}
    for audience, usual in REPORT_PER_AUDIENCE.items():
        members = [usual] + [name for name, (key, _) in catalogue.reports.items() if key == audience and name != usual]
        found = [name for name in members if name in reports]
        if found:
            chosen[found[0]] = reports[found[0]]
    return chosen


@pytest.mark.browser
def test_one_report_per_audience_fits_the_page_width_in_a_browser(run_all, chromium, tmp_path_factory):
    chosen = reports_per_audience(run_all)
    if run_all.dataset == "demo":
        assert sorted(chosen) == sorted(REPORT_PER_AUDIENCE.values()), "the demo has every usual report"
    screenshots = tmp_path_factory.mktemp(f"screenshots_{run_all.dataset}")
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        for analysis, report in chosen.items():
            page.goto(report.as_uri(), wait_until="load")
            page.screenshot(path=str(screenshots / f"{analysis}-1280.png"), full_page=True)
            assert page.locator("#what-we-found li").count() >= 1, analysis
            assert page.evaluate(_TOO_WIDE) == [], f"{analysis}: wider than the page"
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280, analysis
    finally:
        context.close()
