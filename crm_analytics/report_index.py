"""Build the report index: ``outputs/<dataset>/index.html`` per dataset and ``outputs/index.html`` over them.

A dataset's page says, under a heading naming the dataset, its business time zone and currency,
which period its orders cover and when its warehouse was built. The analyses follow, grouped by
audience (executive, customers, sales and marketing, service, data quality; ``parameters/reports.yaml``
holds each analysis's audience and one-line purpose). Each analysis shows its purpose, the headline
numbers of its latest good run, the status of its last run and the freshness of the latest good one:
its age, marked *stale* when it is older than ``stale_after_days`` (``parameters/reports.yaml``) or
finished before the warehouse was last built. A failure newer than the latest good run is shown in
red with the first line of its error; a ``not_applicable`` run is grey, with its reason.

Headline numbers: the contract
------------------------------
The index shows the headline numbers of the latest good run when its run folder holds a
``headline.json`` (:mod:`crm_analytics.headlines`, written by the runner when a run succeeds), and
nothing otherwise. The file is a JSON list of objects ``{"label": str, "value": str, "period": str}``:
``value`` is already written for people (money in the dataset's currency and locale, shares as
percentages), ``period`` names the period the number covers. Items without those three text fields
are left out.

The top page lists the datasets that have outputs, with their time zone, currency and period, and a
link to each one's page.

A page is a single self-contained HTML file (inline CSS, no scripts, no fonts or other assets from
other hosts) with relative links, so it works when opened from disk, copied elsewhere, or served by
any static file server. The only absolute URLs are the live-page links of a configured Voilà server
(``pages_url``). It reads the ``run.json`` records, the ``latest`` pointers, each latest good run's
``headline.json`` and the warehouse's ``dataset_info`` and order dates; it never opens a notebook.
"""

from __future__ import annotations

import difflib
import html
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from crm_analytics import headlines, paths, stale_runs

PAGES_URL_ENV = "CRM_ANALYTICS_PAGES_URL"
INDEX_NAME = "index.html"
_GOOD = "succeeded"
_NOT_RUN = "skipped_locked"
# A run the data cannot support, and a run someone cancelled, are never shown as failures.
_NOT_FAILED = (_GOOD, "not_applicable", "cancelled")

REPORTS_FILE = "reports.yaml"  # under parameters/: audience and purpose of each analysis
DEFAULT_STALE_AFTER_DAYS = 8.0  # a weekly job's report is a day late before it counts as stale
OTHER_AUDIENCE = "Other reports"

_CSS = """
body { font-family: -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Noto Sans CJK SC", sans-serif;
       margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #1f2933; background: #fff; }
* { box-sizing: border-box; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 .6rem; border-bottom: 2px solid #e4e7eb; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 0 0 .2rem; }
p.meta { color: #616e7c; margin-top: 0; }
p.data { margin: .2rem 0 .6rem; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; }
th, td { text-align: left; padding: .5rem .6rem; border-bottom: 1px solid #e4e7eb; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f5f7fa; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 22rem), 1fr)); gap: .9rem; }
.card { border: 1px solid #d9e2ec; border-radius: .4rem; padding: .8rem .9rem; min-width: 0; overflow-wrap: anywhere; }
.card.failing { border-left: 4px solid #d64545; }
.card.muted { background: #f5f7fa; color: #52606d; }
.card.muted .purpose { color: #7b8794; }
.purpose { margin: 0 0 .5rem; color: #3e4c59; font-size: .92rem; }
dl.headline { margin: .4rem 0; display: grid; gap: .3rem; }
dl.headline div { background: #f0f4f8; border-radius: .3rem; padding: .3rem .5rem; }
dl.headline dt { font-size: .8rem; color: #52606d; }
dl.headline dd { margin: 0; font-size: 1.05rem; font-weight: 600; font-variant-numeric: tabular-nums; }
dl.headline dd small { font-weight: 400; }
.facts { font-size: .88rem; margin: .3rem 0; }
.status { display: inline-block; padding: .1rem .5rem; border-radius: .8rem; font-size: .8rem; font-weight: 600; }
.succeeded { background: #e3f9e5; color: #1f6b2c; }
.failed, .timeout, .kernel_died, .truncated, .crashed { background: #ffe3e3; color: #8a1c1c; }
.skipped_locked, .not_applicable, .running, .never { background: #e4e7eb; color: #52606d; }
.cancelled, .abandoned { background: #fff4d6; color: #8a5a00; }
.stale { background: #fff4d6; color: #8a5a00; }
.alert { color: #8a1c1c; font-weight: 600; }
.warnings { background: #fff4d6; color: #8a5a00; }
.warn { border-left: 3px solid #d64545; background: #fff5f5; color: #8a1c1c; padding: .3rem .5rem; margin-top: .4rem; }
.reason { color: #616e7c; }
a { color: #0b69a3; }
small { color: #7b8794; }
.warn small { color: #8a1c1c; }
@media print { .card { break-inside: avoid; } }
"""


class ReportCatalogueError(ValueError):
    """``parameters/reports.yaml`` is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ReportCatalogue:
    """Who reads each report and what it is for (``parameters/reports.yaml``).

    Attributes
    ----------
    audiences : dict
        Audience key -> heading shown, in the order of the page.
    reports : dict
        Analysis -> ``(audience key, one-line purpose)``.
    stale_after_days : float
        Age in days from which a latest good run is marked stale.
    """

    audiences: dict[str, str]
    reports: dict[str, tuple[str, str]]
    stale_after_days: float = DEFAULT_STALE_AFTER_DAYS

    def audience(self, analysis: str) -> str:
        """The heading of the audience ``analysis`` belongs to (:data:`OTHER_AUDIENCE` when it is not listed)."""
        entry = self.reports.get(analysis)
        return self.audiences[entry[0]] if entry else OTHER_AUDIENCE

    def purpose(self, analysis: str) -> str:
        """The one-line purpose of ``analysis`` (``""`` when it is not listed)."""
        entry = self.reports.get(analysis)
        return entry[1] if entry else ""


def reports_file() -> Path:
    """Return ``parameters/reports.yaml``."""
    return paths.parameters_dir() / REPORTS_FILE


def parse_catalogue(raw: object, *, where: str = REPORTS_FILE) -> ReportCatalogue:
    """Check a loaded ``reports.yaml`` document and return it as a :class:`ReportCatalogue`.

    Raises
    ------
    ReportCatalogueError
        Naming ``where`` and the key: a missing ``audiences``/``reports`` mapping, an audience that is not
        declared (with the closest declared one), a missing or empty purpose, a bad ``stale_after_days``.
    """
    if not isinstance(raw, Mapping):
        raise ReportCatalogueError(f"{where}: expected a mapping with 'audiences' and 'reports'")
    audiences, reports = raw.get("audiences"), raw.get("reports")
    if not isinstance(audiences, Mapping) or not audiences:
        raise ReportCatalogueError(f"{where}: 'audiences' must map each audience key to its heading")
    if not isinstance(reports, Mapping):
        raise ReportCatalogueError(f"{where}: 'reports' must map each analysis to its audience and purpose")
    checked: dict[str, tuple[str, str]] = {}
    for analysis, entry in reports.items():
        if not isinstance(entry, Mapping):
            raise ReportCatalogueError(f"{where}: reports.{analysis} must be a mapping with audience and purpose")
        audience, purpose = str(entry.get("audience") or ""), str(entry.get("purpose") or "").strip()
        if audience not in audiences:
            close = difflib.get_close_matches(audience, [str(a) for a in audiences], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; declared: {', '.join(map(str, audiences))}"
            raise ReportCatalogueError(f"{where}: reports.{analysis}.audience {audience!r} is not an audience{hint}")
        if not purpose:
            raise ReportCatalogueError(f"{where}: reports.{analysis}.purpose is missing (one line: what the report is for)")
        checked[str(analysis)] = (audience, purpose)
    try:
        stale_after = float(raw.get("stale_after_days", DEFAULT_STALE_AFTER_DAYS))
    except (TypeError, ValueError):
        stale_after = -1.0
    if stale_after <= 0:
        raise ReportCatalogueError(f"{where}: stale_after_days must be a positive number of days")
    return ReportCatalogue({str(k): str(v) for k, v in audiences.items()}, checked, stale_after)


def load_catalogue(path: str | Path | None = None) -> ReportCatalogue:
    """Read and check ``parameters/reports.yaml`` (or ``path``); see :func:`parse_catalogue`."""
    source = Path(path) if path else reports_file()
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportCatalogueError(f"report catalogue not found: {source}") from None
    except yaml.YAMLError as exc:
        raise ReportCatalogueError(f"{source} is not valid YAML: {exc}") from None
    return parse_catalogue(raw, where=str(source))


@dataclass(frozen=True)
class DataFacts:
    """What the index says about a dataset's warehouse: the orders' period and when it was built (UTC)."""

    period: str = ""
    built_at: datetime | None = None


def data_facts(warehouse: str | Path) -> DataFacts:
    """The orders' period (``"orders run from 2023-01-01 to 2025-12-31"``) and build time of a warehouse file.

    The build time is ``dataset_info.built_at`` (the file's modification time for a warehouse built before
    that table existed). An absent or unreadable warehouse gives empty facts.
    """
    from crm_analytics import warehouse as warehouse_module

    location = Path(warehouse)
    if not location.is_file():
        return DataFacts()
    span = headlines.warehouse_span(location)
    try:
        built = warehouse_module.dataset_info(location).get("built_at")
    except Exception:  # noqa: BLE001 - a warehouse being replaced: the file's time then
        built = None
    if built is not None:
        built_at = datetime.fromisoformat(str(built)).replace(tzinfo=timezone.utc)
    else:
        built_at = datetime.fromtimestamp(location.stat().st_mtime, timezone.utc)
    return DataFacts(span.describe() if span is not None else "", built_at)


@dataclass(frozen=True)
class AnalysisSummary:
    """What the index shows for one analysis (all run fields are ``run.json`` records or ``None``).

    ``headline`` holds the items of the latest good run's ``headline.json`` (empty without one).
    """

    analysis: str
    last: dict | None
    latest_good: dict | None
    newer_failure: dict | None
    headline: tuple[headlines.Headline, ...] = field(default=())


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
    """Summarise one ``outputs/<dataset>/<analysis>/`` folder: last run, latest good run, newer failure, headline."""
    records = [r for r in _records(analysis_dir) if r.get("status") != _NOT_RUN] if analysis_dir.is_dir() else []
    pointer = _latest_pointer(analysis_dir) if analysis_dir.is_dir() else None
    good = next((r for r in records if r["_dir"] == pointer), None)
    if good is None:
        good = next((r for r in reversed(records) if r.get("status") == _GOOD), None)
    last = records[-1] if records else None
    failure = next((r for r in reversed(records) if r.get("status") not in _NOT_FAILED), None)
    if failure is not None and good is not None and failure["_dir"] < good["_dir"]:
        failure = None
    found = tuple(headlines.read_headline(analysis_dir / good["_dir"])) if good else ()
    return AnalysisSummary(analysis_dir.name, last, good, failure, found)


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _moment(record: dict | None, key: str = "started_at") -> datetime | None:
    text = (record or {}).get(key)
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _when(record: dict | None) -> str:
    moment = _moment(record)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def _duration(record: dict | None) -> str:
    seconds = (record or {}).get("duration_s")
    if seconds is None:
        return ""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def age_text(seconds: float) -> str:
    """An age for people: ``"12 minutes"``, ``"5 hours"``, ``"3 days"``."""
    seconds = max(0.0, seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}" + ("s" if count > 1 else "")
    return "less than a minute"


def stale_reason(record: dict | None, *, now: datetime, built_at: datetime | None, stale_after_days: float) -> str | None:
    """Why a latest good run is stale, or ``None``: older than ``stale_after_days``, or ended before the warehouse build."""
    ended = _moment(record, "ended_at") or _moment(record)
    if ended is None:
        return None
    if built_at is not None and ended < built_at:
        return f"older than the warehouse (built {built_at:%Y-%m-%d %H:%M} UTC)"
    if (now - ended).total_seconds() > stale_after_days * 86400:
        return f"older than {stale_after_days:g} days"
    return None


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
    tooltip = "&#10;".join(_esc(line) for line in lines)  # one line per warning, the card stays one line of HTML
    return (f'<br><span class="status warnings" title="{tooltip}">{_esc(label)}</span>'
            f"<br><small>{_esc(lines[0])}</small>")


def _link(href: str, text: str) -> str:
    return f'<a href="{_esc(href)}">{_esc(text)}</a>'


def first_error_line(record: dict) -> str:
    """``"ValueError: boom"``: the error's name and the first non-empty line of its message (the status without one)."""
    message = next((line.strip() for line in str(record.get("error_message") or "").splitlines() if line.strip()), "")
    name = record.get("error_name") or ""
    return f"{name}: {message}" if name and message else (name or message or str(record.get("status") or ""))


def _headline_block(found: tuple[headlines.Headline, ...]) -> str:
    if not found:
        return ""
    items = "".join(f"<div><dt>{_esc(h.label)}</dt><dd>{_esc(h.value)} <small>{_esc(h.period)}</small></dd></div>" for h in found)
    return f'<dl class="headline">{items}</dl>'


def _failure_block(name: str, failure: dict) -> str:
    run_dir = f"{name}/{failure['_dir']}"
    return (
        f'<div class="warn">{_badge(failure.get("status"))} {_esc(_when(failure))}<br>'
        f"<small>{_esc(first_error_line(failure))}</small><br>{_link(run_dir + '/report.html', 'partial report')}"
        f" · {_link(run_dir + '/', 'run folder')}</div>"
    )


def _status_block(summary: AnalysisSummary, *, now: datetime, built_at: datetime | None, stale_after_days: float) -> str:
    last, good = summary.last, summary.latest_good
    reason = (last or {}).get("reason")
    parts = [_badge((last or {}).get("status"))]
    if reason:
        parts.append(f' <span class="reason">{_esc(reason)}</span>')
    if good is not None:
        ended = _moment(good, "ended_at") or _moment(good)
        age = f"{age_text((now - ended).total_seconds())} old" if ended else "age unknown"
        stale = stale_reason(good, now=now, built_at=built_at, stale_after_days=stale_after_days)
        marker = f' <span class="status stale">stale: {_esc(stale)}</span>' if stale else ""
        alerts = good.get("alert_count")
        alert_text = "" if not alerts else f' · <span class="alert">{alerts}</span> alerts'
        parts.append(f'<br><small>Latest good run {_esc(_when(good))} ({_esc(age)}), {_esc(_duration(good))}</small>{marker}{alert_text}')
    elif last is not None and last.get("status") != "not_applicable":
        parts.append("<br><small>no successful run</small>")
    parts.append(warnings_badge(last))
    return f'<div class="facts">{"".join(parts)}</div>'


def _card(summary: AnalysisSummary, *, purpose: str, pages_url: str | None, now: datetime,
          built_at: datetime | None, stale_after_days: float) -> str:
    """One analysis as one line of HTML (a card): name, purpose, headline, status and freshness, links, newer failure."""
    name, good, failure = summary.analysis, summary.latest_good, summary.newer_failure
    last_status = (summary.last or {}).get("status")
    css = "card" + (" failing" if failure is not None else "") + (" muted" if last_status == "not_applicable" else "")
    links = [_link(f"{name}/latest/report.html", "report"), _link(f"{name}/latest/", good["_dir"])] if good else []
    if pages_url:
        # imported here: serve brings in Jupyter Server (about 1 s), which the page kernels reading this module never need
        from crm_analytics.serve import STAKEHOLDER_NOTEBOOKS
    if pages_url and name in STAKEHOLDER_NOTEBOOKS:
        links.append(_link(f"{pages_url.rstrip('/')}/voila/render/{name}.ipynb", "live page"))
    body = [
        f"<h3><strong>{_esc(name)}</strong></h3>",
        f'<p class="purpose">{_esc(purpose)}</p>' if purpose else "",
        _headline_block(summary.headline),
        _status_block(summary, now=now, built_at=built_at, stale_after_days=stale_after_days),
        f'<div class="facts">{" · ".join(links)}</div>' if links else "",
        _failure_block(name, failure) if failure is not None else "",
    ]
    return f'<article class="{css}" id="{_esc(name)}">{"".join(body)}</article>'


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


def _data_line(dataset: str | None, data: DataFacts) -> str:
    if not dataset:
        return ""
    facts = [f"Dataset <strong>{_esc(dataset)}</strong>"]
    facts.append(_esc(data.period) if data.period else "no warehouse built yet")
    if data.built_at is not None:
        facts.append(f"warehouse built {data.built_at:%Y-%m-%d %H:%M} UTC")
    return f'<p class="data">{"; ".join(facts)}.</p>\n'


def _grouped(summaries: list[AnalysisSummary], catalogue: ReportCatalogue) -> list[tuple[str, list[AnalysisSummary]]]:
    """The summaries under their audience headings, in the catalogue's order (then :data:`OTHER_AUDIENCE`)."""
    order = list(catalogue.audiences.values()) + [OTHER_AUDIENCE]
    groups: dict[str, list[AnalysisSummary]] = {heading: [] for heading in order}
    listed = list(catalogue.reports)
    for summary in sorted(summaries, key=lambda s: (listed.index(s.analysis) if s.analysis in listed else len(listed), s.analysis)):
        groups[catalogue.audience(summary.analysis)].append(summary)
    return [(heading, found) for heading, found in groups.items() if found]


def render_index(
    summaries: list[AnalysisSummary],
    *,
    pages_url: str | None = None,
    generated_at: datetime | None = None,
    dataset: str | None = None,
    catalogue: ReportCatalogue | None = None,
    data: DataFacts | None = None,
) -> str:
    """Return the index page of one dataset's ``summaries`` as an HTML string.

    Parameters
    ----------
    summaries : list of AnalysisSummary
        One per analysis (:func:`summarise`).
    pages_url : str, optional
        Base URL of a Voilà server: a "live page" link for each served page.
    generated_at : datetime, optional
        The moment the page describes (default now); ages and staleness are measured from it.
    dataset : str, optional
        Named in the heading with its time zone and currency.
    catalogue : ReportCatalogue, optional
        Audiences and purposes (default ``parameters/reports.yaml``).
    data : DataFacts, optional
        The orders' period and the warehouse build time (:func:`data_facts`).
    """
    now = (generated_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    catalogue = catalogue or load_catalogue()
    data = data or DataFacts()
    sections = []
    for heading, group in _grouped(summaries, catalogue):
        cards = "\n".join(
            _card(s, purpose=catalogue.purpose(s.analysis), pages_url=pages_url, now=now,
                  built_at=data.built_at, stale_after_days=catalogue.stale_after_days)
            for s in group
        )
        sections.append(f'<section>\n<h2>{_esc(heading)}</h2>\n<div class="cards">\n{cards}\n</div>\n</section>\n')
    up = '<p class="meta"><a href="../index.html">All datasets</a></p>\n' if dataset else ""
    body = (
        f"{up}{_data_line(dataset, data)}"
        f'<p class="meta">Generated {now:%Y-%m-%d %H:%M:%S} UTC. Each report shows the headline numbers of its latest good run. '
        "A failure newer than the latest good run is shown in red; the good report stays available. "
        f"A latest good run older than {catalogue.stale_after_days:g} days, or older than the warehouse, is marked stale. "
        "Grey: the data lacks what the analysis needs. "
        "Amber counts the warnings of a run that succeeded (too little data, a fit that did not converge).</p>\n"
        + ("".join(sections) or "<p>No runs yet.</p>\n")
    )
    return _page(dataset_heading(dataset), dataset_heading(dataset), body)


def render_root_index(dataset_names: list[str], *, generated_at: datetime | None = None,
                      data: Mapping[str, DataFacts] | None = None) -> str:
    """Return ``outputs/index.html``: one row per dataset (name, zone, currency, orders' period) linking to its page."""
    generated = (generated_at or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S UTC")
    data = data or {}
    rows = "\n".join(
        f"<tr><td>{_link(f'{name}/{INDEX_NAME}', name)}</td><td>{_esc(dataset_facts(name))}</td>"
        f"<td>{_esc(data.get(name, DataFacts()).period)}</td></tr>"
        for name in dataset_names
    ) or '<tr><td colspan="3">No runs yet.</td></tr>'
    body = (
        f'<p class="meta">Generated {_esc(generated)}. Each dataset has its own runs and reports.</p>\n'
        "<table>\n<thead><tr><th>Dataset</th><th>Time zone, currency</th><th>Data</th></tr></thead>\n"
        f"<tbody>\n{rows}\n</tbody>\n</table>\n"
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
    warehouse: str | Path | None = None,
    catalogue: ReportCatalogue | None = None,
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
    warehouse : str or Path, optional
        The dataset's warehouse file, for its orders' period and build time (default
        ``data/warehouse/<dataset>.duckdb``).
    catalogue : ReportCatalogue, optional
        Audiences and purposes (default ``parameters/reports.yaml``).

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
    facts = data_facts(warehouse or paths.warehouse_path(name))
    page = render_index(summaries, pages_url=pages_url, dataset=name, catalogue=catalogue, data=facts)
    written = _write_atomic(folder / INDEX_NAME, page)
    others = dataset_folders(root)
    data = {other: facts if other == name else data_facts(paths.warehouse_path(other)) for other in others}
    _write_atomic(root / INDEX_NAME, render_root_index(others, data=data))
    return written
