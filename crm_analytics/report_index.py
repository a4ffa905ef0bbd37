"""Build the report index: ``outputs/<dataset>/index.html`` per dataset and ``outputs/index.html`` over them.

A dataset's page has one row per analysis with its latest run and report, under a heading naming
the dataset, its business time zone and its currency. The top page lists the datasets that have
outputs, with a link to each one's page.

The page is a single self-contained HTML file (inline CSS, no scripts, no external
assets) with relative links, so it works when opened from disk, copied elsewhere,
or served by any static file server. It reads only the ``run.json`` records and
the ``latest`` pointers; it never opens a notebook or a table.
"""

from __future__ import annotations

import html
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from crm_analytics import paths, stale_runs
from crm_analytics.serve import STAKEHOLDER_NOTEBOOKS

PAGES_URL_ENV = "CRM_ANALYTICS_PAGES_URL"
INDEX_NAME = "index.html"
_GOOD = "succeeded"
_NOT_RUN = "skipped_locked"
# A run the data cannot support, and a run someone cancelled, are never shown as failures.
_NOT_FAILED = (_GOOD, "not_applicable", "cancelled")

_CSS = """
body { font-family: -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Noto Sans CJK SC", sans-serif;
       margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #1f2933; background: #fff; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
p.meta { color: #616e7c; margin-top: 0; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; }
th, td { text-align: left; padding: .5rem .6rem; border-bottom: 1px solid #e4e7eb; vertical-align: top; }
th { background: #f5f7fa; font-weight: 600; }
tr:hover td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { display: inline-block; padding: .1rem .5rem; border-radius: .8rem; font-size: .8rem; font-weight: 600; }
.succeeded { background: #e3f9e5; color: #1f6b2c; }
.failed, .timeout, .kernel_died, .truncated, .crashed { background: #ffe3e3; color: #8a1c1c; }
.skipped_locked, .not_applicable, .running, .never { background: #eef2f7; color: #52606d; }
.cancelled, .abandoned { background: #fff4d6; color: #8a5a00; }
.alert { color: #8a1c1c; font-weight: 600; }
.warnings { background: #fff4d6; color: #8a5a00; }
.warn { border-left: 3px solid #d64545; padding-left: .5rem; }
a { color: #0b69a3; }
small { color: #7b8794; }
"""


@dataclass(frozen=True)
class AnalysisSummary:
    """What the index shows for one analysis (all run fields are ``run.json`` records or ``None``)."""

    analysis: str
    last: dict | None
    latest_good: dict | None
    newer_failure: dict | None


def _records(analysis_dir: Path) -> list[dict]:
    """Return the finished run records of one analysis, oldest first (run ids sort by time)."""
    records = []
    for run_dir in sorted(p for p in analysis_dir.iterdir() if p.is_dir() and not p.is_symlink()):
        try:
            record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        record["_dir"] = run_dir.name
        records.append(record)
    return records


def _latest_pointer(analysis_dir: Path) -> str | None:
    pointer = analysis_dir / "latest"
    if pointer.is_symlink():
        return Path(os.readlink(pointer)).name
    if pointer.is_file():
        return pointer.read_text(encoding="utf-8").strip()
    return None


def summarise(analysis_dir: Path) -> AnalysisSummary:
    """Summarise one ``outputs/<dataset>/<analysis>/`` folder: last run, latest good run, newer failure."""
    records = [r for r in _records(analysis_dir) if r.get("status") != _NOT_RUN] if analysis_dir.is_dir() else []
    pointer = _latest_pointer(analysis_dir) if analysis_dir.is_dir() else None
    good = next((r for r in records if r["_dir"] == pointer), None)
    if good is None:
        good = next((r for r in reversed(records) if r.get("status") == _GOOD), None)
    last = records[-1] if records else None
    failure = next((r for r in reversed(records) if r.get("status") not in _NOT_FAILED), None)
    if failure is not None and good is not None and failure["_dir"] < good["_dir"]:
        failure = None
    return AnalysisSummary(analysis_dir.name, last, good, failure)


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _when(record: dict | None) -> str:
    if not record or not record.get("started_at"):
        return ""
    moment = datetime.fromisoformat(record["started_at"]).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _duration(record: dict | None) -> str:
    seconds = (record or {}).get("duration_s")
    if seconds is None:
        return ""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _badge(status: str | None) -> str:
    label = status or "never run"
    css = status if status else "never"
    return f'<span class="status {_esc(css)}">{_esc(label.replace("_", " "))}</span>'


def warnings_badge(record: dict | None) -> str:
    """An amber badge counting the warnings of a run record (``run.json``'s ``warnings``), ``""`` without any.

    The badge's tooltip lists every warning; the first one is written out below it, so a run that
    succeeded with too little data or a fit that did not converge is visibly not a clean success.
    """
    found = [w for w in (record or {}).get("warnings") or [] if isinstance(w, dict)]
    if not found:
        return ""
    lines = [f"{w.get('section')}: {w.get('message')}" if w.get("section") else str(w.get("message")) for w in found]
    label = f"{len(found)} warning" + ("s" if len(found) > 1 else "")
    tooltip = "&#10;".join(_esc(line) for line in lines)  # one line per warning, the row stays one line of HTML
    return (f'<br><span class="status warnings" title="{tooltip}">{_esc(label)}</span>'
            f"<br><small>{_esc(lines[0])}</small>")


def _link(href: str, text: str) -> str:
    return f'<a href="{_esc(href)}">{_esc(text)}</a>'


def _row(summary: AnalysisSummary, pages_url: str | None) -> str:
    name = summary.analysis
    last, good, failure = summary.last, summary.latest_good, summary.newer_failure
    alerts = (good or {}).get("alert_count")
    alert_cell = "" if alerts is None else (f'<span class="alert">{alerts}</span>' if alerts else "0")
    report = _link(f"{name}/latest/report.html", "report") if good else "<small>no successful run</small>"
    folder = _link(f"{name}/latest/", good["_dir"]) if good else ""
    failure_cell = ""
    if failure is not None:
        error = failure.get("error_name") or failure.get("status")
        run_dir = f"{name}/{failure['_dir']}"
        failure_cell = (
            f'<div class="warn">{_badge(failure.get("status"))} {_esc(_when(failure))}<br>'
            f"<small>{_esc(error)}</small><br>{_link(run_dir + '/report.html', 'partial report')}"
            f" · {_link(run_dir + '/', 'run folder')}</div>"
        )
    is_page = name in STAKEHOLDER_NOTEBOOKS
    live = _link(f"{pages_url.rstrip('/')}/voila/render/{name}.ipynb", "live page") if pages_url and is_page else ""
    cells = [
        f"<strong>{_esc(name)}</strong>",
        _badge((last or {}).get("status")) + (f"<br><small>{_esc(last['reason'])}</small>" if (last or {}).get("reason") else "")
        + warnings_badge(last),
        _esc(_when(last)),
        f'<span class="num">{_esc(_duration(last))}</span>',
        alert_cell,
        report,
        folder,
        failure_cell,
    ]
    if pages_url:
        cells.append(live)
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def dataset_facts(dataset: str) -> str:
    """Return ``"<time zone>, <currency>"`` of a dataset, or ``""`` when its file cannot be read."""
    from crm_analytics import datasets

    try:
        loaded = datasets.load_dataset(dataset)
    except datasets.DatasetError:
        return ""
    return f"{loaded.time_zone}, {loaded.currency}"


def dataset_heading(dataset: str | None) -> str:
    """Return the page heading of one dataset's reports: its name, business time zone and currency."""
    if not dataset:
        return "crm-analytics reports"
    facts = dataset_facts(dataset)
    return f"crm-analytics reports: {dataset}" + (f" ({facts})" if facts else "")


def _page(title: str, heading: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(heading)}</h1>\n{body}</body>\n</html>\n"
    )


def render_index(
    summaries: list[AnalysisSummary],
    *,
    pages_url: str | None = None,
    generated_at: datetime | None = None,
    dataset: str | None = None,
) -> str:
    """Return the index page of one dataset's ``summaries`` as an HTML string (``dataset`` names it in the heading)."""
    generated = (generated_at or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S UTC")
    headers = ["Analysis", "Last run", "Started", "Duration", "Alerts", "Latest good report", "Run folder", "Newer failure"]
    if pages_url:
        headers.append("Live")
    head = "".join(f"<th>{h}</th>" for h in headers)
    rows = "\n".join(_row(s, pages_url) for s in summaries) or f'<tr><td colspan="{len(headers)}">No runs yet.</td></tr>'
    up = '<p class="meta"><a href="../index.html">All datasets</a></p>\n' if dataset else ""
    body = (
        f"{up}"
        f'<p class="meta">Generated {_esc(generated)}. Alerts count rows of the latest good run\'s alerts table. '
        "A failure newer than the latest good run is shown in red; the good report stays available. "
        "Amber counts the warnings of a run that succeeded (too little data, a fit that did not converge).</p>\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"
    )
    return _page(dataset_heading(dataset), dataset_heading(dataset), body)


def render_root_index(dataset_names: list[str], *, generated_at: datetime | None = None) -> str:
    """Return ``outputs/index.html``: one row per dataset (name, zone, currency) linking to its page."""
    generated = (generated_at or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S UTC")
    rows = "\n".join(
        f"<tr><td>{_link(f'{name}/{INDEX_NAME}', name)}</td><td>{_esc(dataset_facts(name))}</td></tr>"
        for name in dataset_names
    ) or '<tr><td colspan="2">No runs yet.</td></tr>'
    body = (
        f'<p class="meta">Generated {_esc(generated)}. Each dataset has its own runs and reports.</p>\n'
        f"<table>\n<thead><tr><th>Dataset</th><th>Time zone, currency</th></tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"
    )
    return _page("crm-analytics reports", "crm-analytics reports by dataset", body)


def _write_atomic(target: Path, text: str) -> Path:
    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, target)
    return target


def dataset_folders(output_root: Path) -> list[str]:
    """Return the datasets with outputs under ``output_root``: sub-folders holding an index or named like a dataset."""
    from crm_analytics import datasets

    if not output_root.is_dir():
        return []
    known = set(datasets.list_datasets())
    return sorted(
        p.name for p in output_root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p.name in known or (p / INDEX_NAME).is_file())
    )


def write_index(
    output_root: str | Path | None = None,
    *,
    pages_url: str | None = None,
    analyses: list[str] | None = None,
    dataset: str | None = None,
) -> Path:
    """Rewrite one dataset's ``index.html`` and ``<output_root>/index.html`` (each atomically).

    First marks ``abandoned`` every ``*.tmp`` run folder of the dataset whose runner is gone
    (:func:`crm_analytics.stale_runs.mark_abandoned`).

    Parameters
    ----------
    output_root : str or Path, optional
        The folder of every dataset's outputs (default ``outputs/``).
    pages_url : str, optional
        Base URL of a Voilà server; adds a "live page" link per analysis. Defaults to the
        ``CRM_ANALYTICS_PAGES_URL`` environment variable when set.
    analyses : list of str, optional
        Names to list even when they have never run (e.g. every notebook).
    dataset : str, optional
        The dataset whose page is rewritten (default: the project's default dataset).

    Returns
    -------
    Path
        ``<output_root>/<dataset>/index.html``.
    """
    root = Path(output_root) if output_root else paths.outputs_root()
    name = dataset or paths.default_dataset()
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    pages_url = pages_url if pages_url is not None else os.environ.get(PAGES_URL_ENV) or None
    names = {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    names.update(analyses or [])
    for analysis in sorted(names):  # a run whose runner died must not be shown as running
        stale_runs.mark_abandoned(folder / analysis)
    summaries = [summarise(folder / analysis) for analysis in sorted(names)]
    page = _write_atomic(folder / INDEX_NAME, render_index(summaries, pages_url=pages_url, dataset=name))
    _write_atomic(root / INDEX_NAME, render_root_index(dataset_folders(root)))
    return page
