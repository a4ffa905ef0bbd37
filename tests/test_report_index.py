"""Tests of crm_analytics.report_index: the warnings a run recorded show as an amber badge in the index."""

from __future__ import annotations

import json
from pathlib import Path

from crm_analytics import report_index


def _run(root: Path, analysis: str, run_id: str, *, warnings: list[dict] | None = None, status: str = "succeeded") -> None:
    folder = root / analysis / run_id
    folder.mkdir(parents=True)
    record = {"analysis": analysis, "run_id": run_id, "status": status, "started_at": "2024-05-01T08:00:00+00:00",
              "ended_at": "2024-05-01T08:00:03+00:00", "duration_s": 3.2}
    if warnings is not None:
        record["warnings"] = warnings
    (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")


def _row(page: str, analysis: str) -> str:
    return next(line for line in page.splitlines() if f"<strong>{analysis}</strong>" in line)


def test_index_counts_the_warnings_of_the_last_run(tmp_path):
    runs = tmp_path / "cdnow"
    _run(runs, "clv", "20240501T080000.000Z-aaaaaa", warnings=[
        {"kind": "too_little_data", "section": "Gamma-Gamma", "message": "too little data (n = 12, needs 30)"},
        {"kind": "not_converged", "section": "BG/NBD", "message": "the fit did not converge: a <= bound"},
    ])
    _run(runs, "churn", "20240501T080000.000Z-bbbbbb", warnings=[])
    _run(runs, "forecast", "20240501T080000.000Z-cccccc")  # a record written before warnings existed
    page = report_index.write_index(tmp_path, dataset="cdnow").read_text(encoding="utf-8")
    clv_row = _row(page, "clv")
    assert '<span class="status warnings"' in clv_row and ">2 warnings</span>" in clv_row
    assert "<small>Gamma-Gamma: too little data (n = 12, needs 30)</small>" in clv_row
    assert "BG/NBD: the fit did not converge: a &lt;= bound" in clv_row  # every warning in the tooltip, escaped
    assert "status warnings" not in _row(page, "churn") and "status warnings" not in _row(page, "forecast")
    assert ".warnings {" in page and "Amber counts the warnings" in page


def test_one_warning_is_singular():
    badge = report_index.warnings_badge({"warnings": [{"kind": "skipped", "section": "", "message": "no ground truth"}]})
    assert ">1 warning</span>" in badge and "<small>no ground truth</small>" in badge
    assert report_index.warnings_badge(None) == report_index.warnings_badge({"warnings": None}) == ""
