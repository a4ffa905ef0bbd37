"""Tests of crm_analytics.report_pdf and ``crm-analytics report --pdf``: a run's report printed by Debian's Chromium."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crm_analytics import report_pdf, scheduler
from crm_analytics.cli import app

FIXTURES = Path(__file__).resolve().parent / "notebooks"
HEADING = "A notebook that succeeds"  # the markdown title of tests/notebooks/ok.ipynb
cli = CliRunner()

REPORT = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="https://cdnjs.example.org/require.min.js"></script>
<link rel="stylesheet" href="https://fonts.example.org/font.css">
<script type="module">import mermaid from "https://cdnjs.example.org/mermaid.esm.min.mjs";</script>
<style>body { margin: 0; }</style></head>
<body><h1>Findings</h1><figure><img src="figures/chart.png" alt="chart"></figure><table><tr><td>1</td></tr></table></body></html>"""


def test_the_printable_copy_has_the_print_css_and_nothing_from_other_hosts(tmp_path):
    text = report_pdf.printable_html(REPORT, base=tmp_path)
    assert "<script" not in text and "example.org" not in text
    assert f'<base href="{tmp_path.resolve().as_uri()}/">' in text, "the run's relative links still resolve"
    print_css = text[text.index('<style media="print">'):]
    for selector in ("figure", "img", "tr"):
        assert re.search(rf"(^|[\s,]){selector}[\s,][^{{]*{{[^}}]*break-inside: avoid", print_css, re.MULTILINE), selector
    assert text.index('<style media="print">') < text.index("</head>") and "<h1>Findings</h1>" in text


def test_no_chromium_is_a_clear_error_naming_the_debian_package(tmp_path, monkeypatch):
    report = tmp_path / "report.html"
    report.write_text(REPORT, encoding="utf-8")
    monkeypatch.delenv(report_pdf.CHROMIUM_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(report_pdf.PdfError, match=r"install the Debian package 'chromium' \(apt-get install chromium"):
        report_pdf.render_pdf(report, tmp_path / "out.pdf")
    monkeypatch.setenv(report_pdf.CHROMIUM_ENV, str(tmp_path / "no-such-browser"))
    with pytest.raises(report_pdf.PdfError, match=r"CRM_ANALYTICS_CHROMIUM=.*no-such-browser is not an executable file"):
        report_pdf.find_chromium()
    assert not (tmp_path / "out.pdf").exists()


def test_pdf_true_is_a_job_option_and_a_crontab_step(tmp_path):
    config = scheduler.parse_schedule({"timezone": "UTC", "jobs": [
        {"id": "kpi-daily", "analysis": "kpi", "cron": "0 7 * * *", "pdf": True},
        {"id": "churn-weekly", "analysis": "churn", "cron": "0 6 * * 1"},
    ]})
    assert [job.pdf for job in config.jobs] == [True, False]
    lines = scheduler.crontab_lines(config, root="/srv/crm").splitlines()
    assert "0 7 * * * cd /srv/crm && .venv/bin/crm-analytics run kpi && .venv/bin/crm-analytics report kpi --pdf  # kpi-daily" in lines
    assert not any("report churn" in line for line in lines)
    with pytest.raises(scheduler.ScheduleError, match=r"schedule job 'x': pdf must be true or false, got 'yes please'"):
        scheduler.parse_schedule({"timezone": "UTC", "jobs": [{"id": "x", "analysis": "kpi", "cron": "0 7 * * *", "pdf": "yes please"}]})
    assert scheduler.load_schedule(check_jobs=False).jobs, "the project's schedule still loads"


def _invoke(tmp_path: Path, *args: str):
    folders = ["--notebook-dir", str(FIXTURES), "--output-root", str(tmp_path / "outputs"), "--parameters-dir", str(tmp_path)]
    return cli.invoke(app, [*folders, *args])


def test_report_without_a_successful_run_says_how_to_make_one(tmp_path):
    result = _invoke(tmp_path, "report", "ok", "--pdf", "--dataset", "demo")
    assert result.exit_code == 2
    assert "no successful run of 'ok' on dataset 'demo' has a report yet; run `crm-analytics run ok --dataset demo` first" in result.stderr
    unknown = _invoke(tmp_path, "report", "okk", "--dataset", "demo")
    assert unknown.exit_code == 2 and "did you mean 'ok'" in unknown.stderr


def _pdf_pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE).group(1))


def _pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def poppler():
    if not (shutil.which("pdftotext") and shutil.which("pdfinfo")):
        pytest.skip("poppler-utils is not installed (run .ci/system-deps.sh)")
    try:
        report_pdf.find_chromium()
    except report_pdf.PdfError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
@pytest.mark.browser
def test_report_pdf_prints_the_latest_report_with_its_heading(tmp_path, poppler):
    assert _invoke(tmp_path, "run", "ok", "--dataset", "demo", "-p", "n_rows=60").exit_code == 0
    run_dir = (tmp_path / "outputs" / "demo" / "ok" / "latest").resolve()
    before = hashlib.sha256((run_dir / "report.html").read_bytes()).hexdigest()

    shown = _invoke(tmp_path, "report", "ok", "--dataset", "demo")
    assert shown.exit_code == 0 and shown.stdout.strip() == str(run_dir / "report.html")

    out = tmp_path / "mail" / "ok.pdf"
    printed = _invoke(tmp_path, "report", "ok", "--pdf", "--dataset", "demo", "--out", str(out))
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.strip() == str(out.resolve()) and out.read_bytes().startswith(b"%PDF")
    assert _pdf_pages(out) > 0
    text = _pdf_text(out)
    assert HEADING in text and "cell-stdout-marker" in text
    assert hashlib.sha256((run_dir / "report.html").read_bytes()).hexdigest() == before, "the run's report is left as it was"
    assert sorted(p.name for p in tmp_path.glob("outputs/demo/ok/*/report.pdf")) == [], "--out writes only there"

    default = _invoke(tmp_path, "report", "ok", "--pdf", "-d", "demo")
    assert default.exit_code == 0 and (run_dir / "report.pdf").is_file() and _pdf_pages(run_dir / "report.pdf") > 0


@pytest.mark.slow
@pytest.mark.browser
def test_a_scheduled_job_with_pdf_leaves_report_pdf_in_its_run_folder(tmp_path, poppler):
    options = {"notebook_dir": str(FIXTURES), "output_root": str(tmp_path / "outputs"), "parameters_root": str(tmp_path)}
    log_path = tmp_path / "scheduler.log.jsonl"
    status = scheduler.execute_job(job_id="ok-daily", analysis="ok", log_path=str(log_path), runner_options=options,
                                   dataset="demo", pdf=True)
    assert status == "succeeded"
    [pdf] = [p for p in (tmp_path / "outputs" / "demo" / "ok").glob("*/report.pdf") if p.parent.name != "latest"]
    assert HEADING in _pdf_text(pdf)
    events = scheduler.RunLog(log_path).read()
    assert [e["event"] for e in events] == ["trigger", "result", "pdf"] and events[-1]["path"] == str(pdf)
