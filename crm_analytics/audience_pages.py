"""The stakeholder pages, one per audience, and the landing page that lists them with their freshness.

Naming rule: **every notebook in ``notebooks/pages/`` is a stakeholder page** (``paths.pages_dir()``). ``crm-analytics
serve`` publishes them (with ``notebooks/dashboard.ipynb``); the runner never runs them, because
``runner.list_analyses`` lists only the top-level ``notebooks/*.ipynb``. ``AUDIENCE_PAGES`` says, for each page,
its audience (a key of ``parameters/reports.yaml``'s ``audiences``) and the analyses whose results it shows;
``landing.ipynb`` lists the pages in that order.

A page reads only what the latest successful runs persisted (``results.load_latest_table`` and run records under
``outputs/<dataset>/``), never the warehouse, so a visit computes nothing but the filtering of small tables. Each
section is a function returning an HTML string or a widget: a section whose analysis has no good run says so in
one line (``section_note``), and a page none of whose analyses has one says so in one line instead of its sections.

Filters are ipywidgets (``crm_analytics.widgets`` for the KPI board); charts are PNGs embedded in the HTML
(``data:`` URLs), so a redraw is one small figure and the browser fetches nothing. Without a widget frontend
(papermill, nbval) the interactive sections show their default selection as static HTML.

Customer lists (the drill-down of the customers page) hold the pseudonymous ``customer_key`` and the scores that put
each customer in the chosen group; every column that holds personal data is masked (``privacy.mask_frame``) before it
is drawn or offered for download, and the CSV download is formula-safe (``results.spreadsheet_safe``, as
``results.write_csv`` writes every published CSV).

Rows per viewer: when the server takes viewers from a proxy (``parameters/access.yaml``), every table comes through
``pages.load_table``, which narrows it to the viewer's rows. A table that cannot be narrowed (an aggregate over every
customer) is recomputed from the viewer's customer rows where the customers page has them (``RECOMPUTED``: segment
sizes, value tiers, lifecycle stages; groups under ``MIN_GROUP_SIZE`` customers suppressed), and otherwise its section
says in one line that it is not available for the viewer's view.
"""

from __future__ import annotations

import base64
import functools
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd

from crm_analytics import pages, paths, pipeline_counts, plots, privacy, report_index, results, tables
from crm_analytics.widgets import frontend_available

NOT_APPLICABLE = "not_applicable"
LANDING = "landing"
ALL = "All"
# Churn-risk bands over the calibrated churn probability: [0, 0.3) low, [0.3, 0.6) medium, [0.6, 1] high.
CHURN_BAND_EDGES = (0.0, 0.3, 0.6, 1.0)
CHURN_BANDS = ("low risk", "medium risk", "high risk")
DRILL_ROWS_SHOWN = 25  # rows of a customer list drawn on the page; the download holds all of them
MIN_GROUP_SIZE = 5  # k: an aggregate recomputed for a viewer's rows hides groups of fewer customers (as the runs do)
_STATE_ORDER = ("failed", "stale", "missing", "fresh")  # the worst state of a page's analyses is the page's


@dataclass(frozen=True)
class AudiencePage:
    """One stakeholder page: ``name`` (its notebook ``<name>.ipynb``), ``audience`` (a key of
    ``parameters/reports.yaml``'s audiences), ``analyses`` whose latest good runs it shows, and ``purpose``."""

    name: str
    audience: str
    analyses: tuple[str, ...]
    purpose: str


AUDIENCE_PAGES: tuple[AudiencePage, ...] = (
    AudiencePage("executive", "executive", ("kpi",), "Whether each agreed KPI is on target, how it trends, and the alerts that are not noise."),
    AudiencePage("dashboard", "executive", ("kpi", "overview", "funnel", "cohort"), "Revenue and orders by segment, channel and period."),
    AudiencePage("customers", "customers", ("segmentation", "lifecycle", "clv", "churn"),
                 "Who the customers are: segments, value tiers, lifecycle stages, lifetime value and churn risk, with customer lists."),
    AudiencePage("sales_marketing", "sales_marketing", ("funnel", "pipeline", "attribution", "experiments"),
                 "The funnel, the sales pipeline, what each marketing channel brings, and the latest experiment."),
    AudiencePage("service", "service", ("satisfaction", "kpi"), "How satisfied customers are (NPS, CSAT), what they talk about, and the ticket KPIs."),
)


def audience_page(name: str) -> AudiencePage:
    """Return the page called ``name``; ``KeyError`` naming the known pages otherwise."""
    for page in AUDIENCE_PAGES:
        if page.name == name:
            return page
    raise KeyError(f"no stakeholder page {name!r}; known pages: {', '.join(p.name for p in AUDIENCE_PAGES)}")


# --------------------------------------------------------------------------------------------------
# availability and freshness


def not_applicable_reason(analysis: str) -> str | None:
    """Why ``analysis`` does not apply to the dataset (the reason of its newest run, recorded ``not_applicable``
    by the runner), or ``None`` when its newest run was another outcome or there is none."""
    newest = pages.newest_record(analysis)
    if newest.get("status") != NOT_APPLICABLE:
        return None
    return str(newest.get("reason") or "the dataset lacks what it needs")


def section_note(analysis: str, what: str) -> str | None:
    """One line saying why a section of ``analysis`` (showing ``what``) cannot be drawn, or ``None`` when the
    analysis has a good run. The line has class ``crm-section-note``."""
    reason = not_applicable_reason(analysis)
    if reason is not None:
        text = f"{what.capitalize()}: not applicable to this dataset ({analysis}: {reason})."
    elif not pages.latest_record(analysis):
        text = f"{what.capitalize()}: not available yet, no successful run of {analysis}."
    else:
        return None
    return f'<p class="crm-section-note" style="font-family:sans-serif;color:#616161">{html.escape(text)}</p>'


def page_note(page: AudiencePage) -> str | None:
    """One line (class ``crm-page-note``) when none of the page's analyses has a good run, else ``None``."""
    if any(pages.latest_record(a) for a in page.analyses):
        return None
    reasons = {a: not_applicable_reason(a) for a in page.analyses}
    if all(reasons.values()):
        text = f"This page does not apply to this dataset: {'; '.join(f'{a}: {r}' for a, r in reasons.items())}."
    else:
        text = f"Nothing to show yet: no successful run of {', '.join(page.analyses)}."
    return f'<p class="crm-page-note" style="font-family:sans-serif;font-size:15px">{html.escape(text)}</p>'


def status_banners(analyses: Sequence[str], *, grace: pd.Timedelta = pages.DEFAULT_GRACE) -> str:
    """The freshness banners (``pages.banner_html``) of the analyses that have a good run."""
    return "".join(pages.banner_html(s) for s in (pages.page_status(a, grace=grace) for a in analyses) if s.is_usable)


@dataclass(frozen=True)
class PageFreshness:
    """How fresh one page is: ``state`` (the worst of its analyses': failed, stale, missing, fresh), the
    ``statuses`` of its applicable analyses, and ``applicable`` (False when every analysis is not applicable)."""

    page: AudiencePage
    state: str
    statuses: tuple[pages.PageStatus, ...]
    applicable: bool

    @property
    def last_good_run(self) -> pd.Timestamp | None:
        """When the oldest of the page's latest good runs finished: all its data is at least this fresh."""
        times = [s.finished_time for s in self.statuses if s.finished_time is not None]
        return min(times) if times else None


def page_freshness(page: AudiencePage, *, now: pd.Timestamp | None = None, grace: pd.Timedelta = pages.DEFAULT_GRACE) -> PageFreshness:
    """Judge the freshness of ``page`` from the run records and the schedule (``pages.page_status``)."""
    applicable = [a for a in page.analyses if not_applicable_reason(a) is None]
    statuses = tuple(pages.page_status(a, now=now, grace=grace) for a in applicable)
    usable = [s for s in statuses if s.is_usable]
    states = {s.state for s in usable} or {"missing"}
    state = next(s for s in _STATE_ORDER if s in states)
    return PageFreshness(page, state, statuses, applicable=bool(applicable))


def landing_html(*, now: pd.Timestamp | None = None, grace: pd.Timedelta = pages.DEFAULT_GRACE, page_list: Sequence[AudiencePage] = AUDIENCE_PAGES) -> str:
    """The landing page's list: one entry per page (class ``crm-landing-page crm-landing-<state>``, ``data-page``)
    linking to it, with its audience, purpose, last good run and the banners of its stale or failed analyses.

    Pages whose analyses are all not applicable to the dataset are left out, named in one line at the end.
    """
    audiences = _audience_headings()
    entries, left_out = [], []
    if pages.restricted_viewer() is not None:  # only the pages of notebooks/pages/ narrow their rows to the viewer's
        page_list = [p for p in page_list if (paths.pages_dir() / f"{p.name}.ipynb").is_file()]
    for page in page_list:
        fresh = page_freshness(page, now=now, grace=grace)
        if not fresh.applicable:
            left_out.append(page.name)
            continue
        entries.append(_landing_entry(fresh, audiences.get(page.audience, page.audience)))
    note = (f'<p class="crm-landing-left-out" style="color:#616161">Left out, not applicable to this dataset: {html.escape(", ".join(left_out))}.</p>'
            if left_out else "")
    return '<div class="crm-landing" style="font-family:sans-serif">' + "".join(entries) + note + "</div>"


def _audience_headings() -> dict[str, str]:
    try:
        return report_index.load_catalogue().audiences
    except (OSError, report_index.ReportCatalogueError):
        return {}


_LANDING_WORDS = {"fresh": "Up to date", "stale": "Out of date", "failed": "Latest run failed", "missing": "Not yet available"}


def _landing_entry(fresh: PageFreshness, audience: str) -> str:
    page = fresh.page
    background, colour = pages._STATE_STYLE[fresh.state]
    last = fresh.last_good_run
    when = pages._fmt_time(last) if last is not None else "never"
    problems = "".join(pages.banner_html(s) for s in fresh.statuses if s.state in ("stale", "failed"))
    return (
        f'<div class="crm-landing-page crm-landing-{fresh.state}" data-page="{html.escape(page.name)}" '
        f'style="border-left:6px solid {colour};background:{background};padding:8px 12px;margin:8px 0">'
        f'<a href="{html.escape(page.name)}.ipynb" style="font-size:18px;font-weight:bold">{html.escape(audience)}: {html.escape(page.name.replace("_", " "))}</a>'
        f' <span class="crm-landing-state">{_LANDING_WORDS[fresh.state]}</span>'
        f'<div>{html.escape(page.purpose)}</div>'
        f'<div class="crm-landing-last" style="font-size:13px;color:#424242">Last good run: {html.escape(when)} '
        f'(from {html.escape(", ".join(s.analysis for s in fresh.statuses))})</div>{problems}</div>'
    )


# --------------------------------------------------------------------------------------------------
# drawing


def figure_html(fig, *, css: str = "crm-figure") -> str:
    """The figure as an ``<img>`` with an inline PNG (class ``css``) and alt text from the figure, at the audience
    pages' 90 dpi (``pages.figure_html``); the figure is closed."""
    return pages.figure_html(fig, css=css, dpi=90)


def _bars(labels, values, *, title: str, xlabel: str, colour: str | None = None):
    """A horizontal bar chart, first label on top; returns the Figure."""
    plots.set_style()
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(3, len(labels)) + 0.8))
    ax.barh([str(v) for v in labels][::-1], list(values)[::-1], color=colour or plots.category_colours(["bar"])["bar"])
    ax.set(title=title, xlabel=xlabel, ylabel="")
    fig.tight_layout()
    return fig


def heading(text: str) -> str:
    return f'<h3 style="font-family:sans-serif;margin:16px 0 4px">{html.escape(text)}</h3>'


def _table(df: pd.DataFrame, *, currency: str, locale: str, max_rows: int | None = 20, **options) -> str:
    return tables.table_html(df, currency=currency, locale=locale, max_rows=max_rows, **options)


class NotInYourView(LookupError):
    """A table that cannot be narrowed to the viewer's rows (``pages.NOT_IN_VIEW``): its section says so."""


def _latest(analysis: str, name: str, *, optional: bool = False) -> pd.DataFrame | None:
    """The table ``name`` of the latest good run of ``analysis`` (narrowed to the viewer's rows), or ``None``.

    A table the viewer's rows cannot be told apart in is recomputed from their rows when ``RECOMPUTED`` knows how
    (their customers, or their deals), else raises ``NotInYourView`` (``None`` when ``optional``)."""
    table, problem = pages.load_table(analysis, name)
    if problem != pages.NOT_IN_VIEW:
        return table
    recomputed = RECOMPUTED.get((analysis, name))
    rows = recomputed.rows() if recomputed is not None else None
    table = recomputed.build(rows) if rows is not None else None
    if table is not None:
        return table
    if optional:
        return None
    raise NotInYourView(f"{analysis}: {name}")


def group_summary(customers: pd.DataFrame, column: str, *, amount_col: str | None = "monetary", k: int = MIN_GROUP_SIZE) -> pd.DataFrame:
    """Customers (and revenue) per group of ``column``, as the runs persist it, from per-customer rows.

    Output: ``column``, ``n_customers``, ``customer_pct`` (% of the customers given) and, with ``amount_col``
    (a per-customer amount, dataset currency), ``revenue_amount``, ``revenue_pct`` and ``revenue_per_customer_amount``;
    groups of fewer than ``k`` customers suppressed (``privacy.suppress_small_groups``, ``is_suppressed``).
    """
    grouped = customers.groupby(column, observed=False, sort=True)
    summary = grouped.size().rename("n_customers").to_frame()
    summary["customer_pct"] = 100 * summary["n_customers"] / max(int(summary["n_customers"].sum()), 1)
    if amount_col is not None:
        summary["revenue_amount"] = grouped[amount_col].sum()
        total = summary["revenue_amount"].sum()
        summary["revenue_pct"] = 100 * summary["revenue_amount"] / total if total else 0.0
        summary["revenue_per_customer_amount"] = (summary["revenue_amount"] / summary["n_customers"]).fillna(0.0)
    return privacy.suppress_small_groups(summary.reset_index(), count_col="n_customers", k=k, keep_cols=[column])


@dataclass(frozen=True)
class Recomputed:
    """How an aggregate that cannot be narrowed to the viewer's rows is recomputed for them: ``build`` over the
    rows ``rows()`` gives (the viewer's customers, or their deals). ``rows()`` gives ``None`` when there are no such
    rows for this viewer, ``build`` when they lack what it needs: the section then says it is not in their view."""

    rows: Callable[[], pd.DataFrame | None]
    build: Callable[[pd.DataFrame], pd.DataFrame | None]


def viewer_customers() -> pd.DataFrame:
    """The viewer's customer rows (``customer_table``, defined below), which the customers page's aggregates are recomputed from."""
    return customer_table()


OWNER_STAGE_COUNTS = "owner_stage_counts"  # the pipeline run's deal counts per owner and furthest stage (pipeline_counts)


def viewer_deals() -> pd.DataFrame | None:
    """The pipeline run's deal counts (``OWNER_STAGE_COUNTS``) narrowed to the viewer's rows: their own deals for
    ``{owner: $viewer}``, their teams' or regions' for ``{team: [...]}`` or ``{region: [...]}``. ``None`` when the
    latest run persisted none, or the viewer's filter names a column the deals do not have (``province``)."""
    return pages.load_table("pipeline", OWNER_STAGE_COUNTS)[0]


def deal_suppression() -> int | None:
    """The ``k`` of the pipeline figures recomputed for this page's viewer: none for their own deals, else ``MIN_GROUP_SIZE``.

    The figures count deals, each of one customer account. A sales representative (``{owner: $viewer}``) sees their
    own deals in the CRM one by one, so hiding a stage of theirs reached by few deals would hide nothing from them
    and only blank their view: their figures are never suppressed. Any other restricted viewer (a team, a region, a
    list of owners) sees figures over other people's deals and accounts: a stage, or a group of a breakdown, of
    fewer than ``MIN_GROUP_SIZE`` deals is suppressed, as the customers page suppresses groups of few customers.
    """
    viewer = pages.restricted_viewer()
    own_deals = viewer is not None and viewer.group.rows.is_viewer and viewer.group.rows.column in pipeline_counts.PERSON_DIMENSIONS
    return None if own_deals else MIN_GROUP_SIZE


def deal_figure(figure: Callable[..., pd.DataFrame], **options) -> Callable[[pd.DataFrame], pd.DataFrame | None]:
    """A ``Recomputed.build`` of ``figure`` (a function of ``pipeline_counts``) over the viewer's deal counts, with
    ``deal_suppression``'s ``k``; it gives ``None`` when the counts lack the breakdown column ``options['by']``."""
    def build(deals: pd.DataFrame) -> pd.DataFrame | None:
        if options.get("by") and options["by"] not in deals.columns:
            return None
        return figure(deals, k=deal_suppression(), **options)

    return build


# aggregates over every customer or deal, recomputed from the viewer's customer rows (customers page) or deal counts
# (the pipeline section of the sales and marketing page)
RECOMPUTED: dict[tuple[str, str], Recomputed] = {
    ("segmentation", "segment_summary"): Recomputed(viewer_customers, functools.partial(group_summary, column="rfm_segment")),
    ("segmentation", "value_tier_summary"): Recomputed(viewer_customers, functools.partial(group_summary, column="value_tier")),
    ("lifecycle", "stage_counts"): Recomputed(viewer_customers, functools.partial(group_summary, column="lifecycle_stage", amount_col=None)),
    ("pipeline", "stage_conversion"): Recomputed(viewer_deals, deal_figure(pipeline_counts.stage_conversion)),
    ("pipeline", "weighted_pipeline"): Recomputed(viewer_deals, deal_figure(pipeline_counts.weighted_pipeline)),
    ("pipeline", "win_rate"): Recomputed(viewer_deals, deal_figure(pipeline_counts.win_rates)),
    **{("pipeline", f"breakdown_by_{by}"): Recomputed(viewer_deals, deal_figure(pipeline_counts.win_rates, by=by))
       for by in pipeline_counts.BREAKDOWN_DIMENSIONS},
}


def hidden_from_partial_views(what: str):
    """Decorate a section builder: when a table it needs cannot be narrowed to the viewer's rows, it becomes
    ``what``'s heading and a one-line note instead."""
    def decorate(build):
        @functools.wraps(build)
        def guarded(*args, **kwargs):
            try:
                return build(*args, **kwargs)
            except NotInYourView:
                return _raw(heading(what) + pages.not_in_view_html(what))
        return guarded
    return decorate


def section(analysis: str, what: str, draw: Callable[[], str]) -> str:
    """``heading(what)`` then ``draw()``, or the one-line note when ``analysis`` has no good run; a persisted
    table that lacks what ``draw`` reads also gives a one-line note rather than an error."""
    note = section_note(analysis, what)
    if note is not None:
        return heading(what) + note
    try:
        return heading(what) + draw()
    except NotInYourView:
        return heading(what) + pages.not_in_view_html(what)
    except (KeyError, ValueError) as error:  # a table of an older run without a column this page reads
        line = f"{what.capitalize()}: the latest run of {analysis} did not persist what this section needs ({error})."
        return heading(what) + f'<p class="crm-section-note">{html.escape(line)}</p>'


def live(controls: Sequence[widgets.Dropdown], draw: Callable[..., str], css: str):
    """An interactive section: the ``controls`` and an HTML area (class ``css``) holding ``draw(*values)``,
    redrawn on every change. Without a frontend: the HTML of the default selection."""
    if not frontend_available():
        from IPython.display import HTML

        return HTML(draw(*(c.value for c in controls)))
    area = pages.html_area(css)

    def redraw(_change=None) -> None:
        area.value = draw(*(c.value for c in controls))

    for control in controls:
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox(list(controls)), area])


# --------------------------------------------------------------------------------------------------
# customers


def churn_band(probability: pd.Series) -> pd.Series:
    """The churn-risk band of each churn probability (``CHURN_BANDS`` over ``CHURN_BAND_EDGES``, lower edge
    included); missing stays missing. Returns a ``string`` Series."""
    low, medium, high = CHURN_BANDS
    bands = pd.Series(low, index=probability.index, dtype="string")
    bands[probability >= CHURN_BAND_EDGES[1]] = medium
    bands[probability >= CHURN_BAND_EDGES[2]] = high
    return bands.where(probability.notna())


# (analysis, table, columns kept): the per-customer tables of the customers page, joined on customer_key
CUSTOMER_SOURCES = (
    ("segmentation", "action_list", ("rfm_segment", "value_tier", "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score")),
    ("lifecycle", "lifecycle_stages", ("lifecycle_stage", "days_since_last_order")),
    ("clv", "customer_value", ("clv_amount", "probability_alive")),
    ("churn", "churn_scores", ("churn_probability",)),
)
# drill-down dimension -> its column in customer_table
DRILL_DIMENSIONS = {"Segment": "rfm_segment", "Value tier": "value_tier", "Lifecycle stage": "lifecycle_stage", "Churn-risk band": "churn_band"}


def customer_table() -> pd.DataFrame:
    """One row per customer from the latest good runs of segmentation, lifecycle, clv and churn, joined on
    ``customer_key``: the group columns of ``DRILL_DIMENSIONS`` and the scores behind them. Columns of an
    analysis without a good run are absent; other columns of its table (contact columns included) are kept, to
    be masked on display. Empty frame when no run has a customer table."""
    merged = None
    for analysis, name, columns in CUSTOMER_SOURCES:
        table = _latest(analysis, name, optional=True)  # a table the viewer's rows cannot be found in is left out
        if table is None or privacy.CUSTOMER_KEY_COL not in table:
            continue
        extra = [c for c in table.columns if c not in columns and c != privacy.CUSTOMER_KEY_COL and privacy.personal_columns(table[[c]])]
        kept = table[[privacy.CUSTOMER_KEY_COL, *[c for c in columns if c in table], *extra]]
        if merged is not None:
            kept = kept[[c for c in kept.columns if c == privacy.CUSTOMER_KEY_COL or c not in merged.columns]]
        merged = kept if merged is None else merged.merge(kept, on=privacy.CUSTOMER_KEY_COL, how="outer")
    if merged is None:
        return pd.DataFrame(columns=[privacy.CUSTOMER_KEY_COL])
    if "churn_probability" in merged:
        merged["churn_band"] = churn_band(merged["churn_probability"])
    return merged


def drill_options(customers: pd.DataFrame) -> dict[str, list[str]]:
    """For each drill-down dimension present in ``customers``, its groups (as text, in order of first appearance
    for categories, else sorted)."""
    options = {}
    for label, column in DRILL_DIMENSIONS.items():
        if column in customers:
            present = set(customers[column].dropna().astype(str).unique())  # once: a column holds a row per customer
            order = list(CHURN_BANDS) if column == "churn_band" else sorted(present)
            options[label] = [v for v in order if v in present]
    return {k: v for k, v in options.items() if v}


def customer_list(customers: pd.DataFrame, dimension: str, group: str) -> pd.DataFrame:
    """The masked list of the customers in ``group`` of ``dimension`` (a key of ``DRILL_DIMENSIONS``): the
    pseudonymous key first, personal columns masked (``privacy.mask_frame``), highest churn probability or
    value first."""
    column = DRILL_DIMENSIONS[dimension]
    chosen = customers[customers[column].astype("string") == group]
    order = [c for c in ("churn_probability", "clv_amount", "monetary") if c in chosen]
    if order:
        chosen = chosen.sort_values(order[0], ascending=False, kind="stable")
    return privacy.mask_frame(chosen.reset_index(drop=True))


def csv_text(df: pd.DataFrame) -> str:
    """``df`` as the CSV text ``results.write_csv`` writes: formula-safe cells, CRLF lines, no index."""
    return results.csv_text(df)


def download_html(df: pd.DataFrame, file_name: str, *, label: str) -> str:
    """A download link (class ``crm-download``) holding ``df`` as a masked, formula-safe CSV in a ``data:`` URL."""
    encoded = base64.b64encode(csv_text(privacy.mask_frame(df)).encode("utf-8")).decode("ascii")
    safe_name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in file_name)
    return (f'<a class="crm-download" download="{html.escape(safe_name)}" href="data:text/csv;charset=utf-8;base64,{encoded}">'
            f"{html.escape(label)}</a>")


def drill_down_html(customers: pd.DataFrame, dimension: str, group: str, *, currency: str, locale: str) -> str:
    """The customer list of one group: its size, the first ``DRILL_ROWS_SHOWN`` rows and a CSV download of all."""
    listed = customer_list(customers, dimension, group)
    if listed.empty:
        return f"<p>No customers in {html.escape(dimension.lower())} {html.escape(group)}.</p>"
    name = f"customers_{DRILL_DIMENSIONS[dimension]}_{group}.csv"
    return (f'<p class="crm-drill-size">{len(listed):,} customers in {html.escape(dimension.lower())} “{html.escape(group)}”. '
            f'{download_html(listed, name, label=f"Download the list ({len(listed):,} rows, CSV)")}</p>'
            + '<div class="crm-drill-list">' + _table(listed, currency=currency, locale=locale, max_rows=DRILL_ROWS_SHOWN) + "</div>")


def customer_drill_down(customers: pd.DataFrame, *, currency: str, locale: str):
    """The drill-down section: choose a dimension (filter ``crm-filter-dimension``) and a group (``crm-filter-group``);
    the list (``crm-drill``) and its download follow."""
    options = drill_options(customers)
    if not options:
        return _note_html("Customer lists: no per-customer table in the latest runs.")
    dimension = pages.dropdown("Group by", list(options), "crm-filter-dimension")
    group = pages.dropdown("Group", options[dimension.value], "crm-filter-group")

    def follow(change) -> None:
        group.options = options[change["new"]]

    dimension.observe(follow, names="value")  # registered first: the list redraws with a group of the new dimension
    return live([dimension, group], lambda d, g: drill_down_html(customers, d, g, currency=currency, locale=locale) if g in options[d] else "", "crm-drill")


def _note_html(text: str):
    from IPython.display import HTML

    return HTML(f'<p class="crm-section-note">{html.escape(text)}</p>')


def segment_section(*, currency: str, locale: str) -> str:
    """Segment sizes and revenue (table and chart) and the movement between the last two snapshots."""
    def draw() -> str:
        summary = _latest("segmentation", "segment_summary")
        labels = summary["rfm_segment"].astype(str)
        fig = _bars(labels, summary["n_customers"], title="Customers per segment", xlabel="customers")
        body = figure_html(fig) + _table(summary, currency=currency, locale=locale, labels={"rfm_segment": "Segment"})
        moves = _latest("segmentation", "segment_transitions", optional=True)
        if moves is not None:
            moved = moves[moves["from_segment"].astype(str) != moves["to_segment"].astype(str)].sort_values("n_customers", ascending=False).reset_index(drop=True)
            body += "<p><strong>Largest movements between the last two snapshots</strong></p>" + _table(moved, currency=currency, locale=locale, max_rows=10)
        elif pages.restricted_viewer() is not None:  # movements are counted over every customer
            body += pages.not_in_view_html("movements between the last two snapshots")
        return body

    return section("segmentation", "Segments: size, revenue and movement", draw)


def value_tier_section(*, currency: str, locale: str) -> str:
    return section("segmentation", "Value tiers", lambda: _table(_latest("segmentation", "value_tier_summary"), currency=currency, locale=locale))


def lifecycle_section(*, currency: str, locale: str) -> str:
    def draw() -> str:
        counts = _latest("lifecycle", "stage_counts")
        fig = _bars(counts["lifecycle_stage"], counts["n_customers"], title="Customers per lifecycle stage", xlabel="customers")
        return figure_html(fig) + _table(counts, currency=currency, locale=locale)

    return section("lifecycle", "Lifecycle stages", draw)


def value_and_risk_html(customers: pd.DataFrame, segment: str, *, currency: str) -> str:
    """CLV distribution and churn-risk bands of one segment (``ALL``: every customer)."""
    chosen = customers if segment == ALL else customers[customers["rfm_segment"].astype("string") == segment]
    parts = []
    if "clv_amount" in chosen and chosen["clv_amount"].notna().any():
        plots.set_style()
        fig, ax = plt.subplots(figsize=(7, 3))
        values = chosen["clv_amount"].dropna()
        ax.hist(values.clip(upper=values.quantile(0.99)), bins=30, color=plots.category_colours(["clv"])["clv"])
        ax.set(title=f"Customer lifetime value ({segment}; top 1% clipped)", xlabel=f"CLV ({currency})", ylabel="customers")
        fig.tight_layout()
        parts.append(figure_html(fig, css="crm-figure crm-chart-clv"))
    if "churn_band" in chosen and chosen["churn_band"].notna().any():
        counts = chosen["churn_band"].value_counts().reindex(list(CHURN_BANDS), fill_value=0)
        fig = _bars(counts.index, counts.to_numpy(), title=f"Churn-risk bands ({segment})", xlabel="customers")
        parts.append(figure_html(fig, css="crm-figure crm-chart-churn"))
    return "".join(parts) or "<p>No lifetime value or churn score for this selection.</p>"


def value_and_risk_section(customers: pd.DataFrame, *, currency: str):
    """CLV distribution and churn-risk bands with a segment filter (``crm-filter-segment``) that redraws both."""
    if not {"clv_amount", "churn_band"} & set(customers.columns):
        return _note_html("Lifetime value and churn risk: no good run of clv or churn yet.")
    segments = [ALL, *sorted(customers["rfm_segment"].dropna().astype(str).unique())] if "rfm_segment" in customers else [ALL]
    segment = pages.dropdown("Segment", segments, "crm-filter-segment")
    return live([segment], lambda s: value_and_risk_html(customers, s, currency=currency), "crm-value-risk")


# --------------------------------------------------------------------------------------------------
# sales and marketing


def breakdown_tables(analysis: str, prefix: str) -> dict[str, pd.DataFrame]:
    """The ``<prefix><dimension>`` tables of the latest good run of ``analysis``, by dimension."""
    folder = paths.latest_run_dir(analysis) / "tables"
    found = sorted(folder.glob(f"{prefix}*.parquet")) if folder.is_dir() else []
    tables_found = {p.stem[len(prefix):]: _latest(analysis, p.stem, optional=True) for p in found}
    return {dimension: table for dimension, table in tables_found.items() if table is not None}


def funnel_html(breakdown: str, overall: pd.DataFrame, by: dict[str, pd.DataFrame], *, currency: str, locale: str) -> str:
    """The funnel, overall or by one breakdown: conversion from the first step per step, chart and table."""
    plots.set_style()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if breakdown == ALL:
        frame, groups = overall, [(None, overall)]
    else:
        frame = by[breakdown]
        groups = list(frame.groupby(breakdown, sort=True))
    colours = plots.category_colours([str(g) for g, _ in groups])
    for group, rows in groups:
        rows = rows.sort_values("step_number")
        ax.plot(rows["step"].astype(str), rows["conversion_from_first_pct"], marker="o", label=None if group is None else str(group),
                color=colours[str(group)])
    ax.set(title="Share reaching each step", ylabel="% of the first step", xlabel="")
    if breakdown != ALL:
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return figure_html(fig, css="crm-figure crm-chart-funnel") + _table(frame, currency=currency, locale=locale)


@hidden_from_partial_views("the funnel")
def funnel_section(*, currency: str, locale: str):
    note = section_note("funnel", "the funnel")
    if note is not None:
        return _raw(heading("Funnel") + note)
    overall = _latest("funnel", "funnel")
    by = {k: v for k, v in breakdown_tables("funnel", "funnel_by_").items() if k in v}
    breakdown = pages.dropdown("Breakdown", [ALL, *by], "crm-filter-breakdown")
    return _titled("Funnel", live([breakdown], lambda b: funnel_html(b, overall, by, currency=currency, locale=locale), "crm-funnel"))


def _raw(text: str):
    from IPython.display import HTML

    return HTML(text)


def _titled(title: str, body):
    """``body`` (a widget or an HTML display object) under a heading."""
    if isinstance(body, widgets.Widget):
        return widgets.VBox([widgets.HTML(heading(title)), body])
    return _raw(heading(title) + body.data)


def pipeline_section(*, currency: str, locale: str) -> str:
    """Stage conversion, the weighted open pipeline and win rates (overall and by each persisted breakdown).

    A viewer of some rows gets them recomputed from their deals (``RECOMPUTED``, ``viewer_deals``): a sales
    representative their own, a team or region its own; a breakdown by people (owner, manager) is left out for them.
    """
    def draw() -> str:
        stages = _latest("pipeline", "stage_conversion")
        fig = _bars(stages["stage"], stages["n_reached"], title="Deals reaching each stage", xlabel="deals")
        body = figure_html(fig) + _table(stages, currency=currency, locale=locale)
        if pages.restricted_viewer() is not None:
            body = '<p class="crm-view-note" style="font-family:sans-serif">Computed from the deals in your view only.</p>' + body
        weighted = _latest("pipeline", "weighted_pipeline")
        if weighted is not None:
            total = money_text(weighted["weighted_amount"].sum(), currency, locale)
            body += pages.tile_html("Weighted open pipeline", total) + _table(weighted, currency=currency, locale=locale)
        win = _latest("pipeline", "win_rate")
        if win is not None and not win.empty:
            body += win_rate_tile(win.iloc[0])
        for dimension, table in breakdown_tables("pipeline", "breakdown_by_").items():
            body += f"<p><strong>Win rates by {html.escape(dimension.replace('_', ' '))}</strong></p>" + _table(table, currency=currency, locale=locale)
        return body

    return section("pipeline", "Pipeline", draw)


def win_rate_tile(row: pd.Series) -> str:
    """The win-rate tile of a ``win_rate`` row: the rate with its 95% interval, or why there is none."""
    if pd.isna(row["win_rate_pct"]):
        why = f"fewer than {MIN_GROUP_SIZE} closed deals" if bool(row.get("is_suppressed", False)) else "no closed deals"
        return pages.tile_html("Win rate", "–", note=why)
    return pages.tile_html("Win rate", f"{row['win_rate_pct']:.1f}%", note=f"95% interval {row['win_rate_low_pct']:.1f}–{row['win_rate_high_pct']:.1f}%")


def money_text(value: float, currency: str, locale: str) -> str:
    from crm_analytics import money

    return money.format_money(value, currency, locale, decimals=0)


def attribution_html(metric: str, by_model: pd.DataFrame) -> str:
    """Each channel's credit under every attribution model, side by side (grouped bars of ``metric``)."""
    plots.set_style()
    wide = by_model.pivot_table(index="channel", columns="model", values=metric, aggfunc="sum", observed=True)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    wide.plot.bar(ax=ax, color=[plots.category_colours(list(wide.columns))[m] for m in wide.columns], width=0.8)
    ax.set(title=f"{ATTRIBUTION_METRICS.get(metric, metric)} by channel and model", xlabel="", ylabel=ATTRIBUTION_METRICS.get(metric, metric))
    ax.legend(fontsize=7, frameon=False, ncol=3)
    fig.tight_layout()
    return figure_html(fig, css="crm-figure crm-chart-attribution")


ATTRIBUTION_METRICS = {"share_pct": "share of conversions (%)", "conversions": "conversions", "revenue_amount": "revenue"}


@hidden_from_partial_views("attribution")
def attribution_section():
    note = section_note("attribution", "attribution")
    if note is not None:
        return _raw(heading("Attribution") + note)
    by_model = _latest("attribution", "attribution_by_model")
    if by_model is None:
        return _raw(heading("Attribution") + '<p class="crm-section-note">Attribution: the latest run persisted no attribution_by_model table.</p>')
    metrics = [(label, key) for key, label in ATTRIBUTION_METRICS.items() if key in by_model]
    metric = pages.dropdown("Measure", metrics, "crm-filter-metric")
    return _titled("Attribution: every model side by side", live([metric], lambda m: attribution_html(m, by_model), "crm-attribution"))


def experiment_section(*, currency: str, locale: str) -> str:
    """The latest experiment read-out: conversion and revenue tests with intervals, and the sample-ratio check."""
    def draw() -> str:
        body = ""
        conversion = _latest("experiments", "conversion_test")
        if conversion is not None and not conversion.empty:
            row = conversion.iloc[0]
            verdict = "a real difference" if bool(row["is_significant"]) else "no difference beyond chance"
            body += (f'<p class="crm-experiment">Experiment <strong>{html.escape(str(row.get("experiment_id", "")))}</strong>: conversion '
                     f'{row["rate_control_pct"]:.1f}% (control) against {row["rate_treatment_pct"]:.1f}% (treatment), a lift of '
                     f'{row["absolute_lift_pct"]:+.1f} points (95% interval {row["absolute_lift_low_pct"]:+.1f} to {row["absolute_lift_high_pct"]:+.1f}), '
                     f'p = {row["p_value"]:.3f}: {verdict}.</p>')
        for name in ("revenue_test", "sample_ratio_check"):
            table = _latest("experiments", name)
            if table is not None:
                body += _table(table, currency=currency, locale=locale)
        return body or "<p>No experiment read-out in the latest run.</p>"

    return section("experiments", "Latest experiment", draw)


# --------------------------------------------------------------------------------------------------
# service

SATISFACTION_GROUPS = ("segment", "acquisition_channel", "province")


def interval_tiles() -> str:
    """NPS (overall) and CSAT (latest period) as tiles with their 95% intervals."""
    parts = []
    nps = _latest("satisfaction", "nps_overall")
    if nps is not None and not nps.empty:
        row = nps.iloc[0]
        parts.append(pages.tile_html("NPS", f"{row['nps']:+.0f}", note=f"95% interval {row['nps_lower']:+.0f} to {row['nps_upper']:+.0f}; {row['n_responses']:,} answers"))
    csat = _latest("satisfaction", "csat_trend")
    if csat is not None and not csat.empty:
        row = csat.sort_values("period_start").iloc[-1]
        parts.append(pages.tile_html(f"CSAT {pd.Timestamp(row['period_start']):%Y-%m}", f"{row['csat_pct']:.0f}%",
                                     note=f"95% interval {row['csat_lower']:.0f}–{row['csat_upper']:.0f}%; {row['n_responses']:,} answers"))
    return "".join(parts)


def trend_html(months: int) -> str:
    """NPS and CSAT per period over the last ``months`` months (0: all), each with its 95% interval shaded."""
    plots.set_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for ax, (name, value, low, high) in zip(axes, (("nps_trend", "nps", "nps_lower", "nps_upper"), ("csat_trend", "csat_pct", "csat_lower", "csat_upper"))):
        trend = _latest("satisfaction", name)
        if trend is None or trend.empty:
            ax.set_axis_off()
            continue
        trend = trend.sort_values("period_start")
        if months:
            trend = trend[trend["period_start"] >= trend["period_start"].max() - pd.DateOffset(months=months - 1)]
        ax.plot(trend["period_start"], trend[value], marker="o", color="#37474f")
        ax.fill_between(trend["period_start"], trend[low], trend[high], color="#90a4ae", alpha=0.3, linewidth=0, label="95% interval")
        ax.set(title=f"{value.replace('_pct', '').upper()} per month", xlabel="", ylabel="%" if value.endswith("_pct") else "score")
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return figure_html(fig, css="crm-figure crm-chart-trend")


def by_group_html(group: str, *, currency: str, locale: str) -> str:
    """NPS and CSAT of each group of ``group`` with intervals; suppressed small groups stay hidden."""
    parts = []
    for measure in ("nps", "csat"):
        table = _latest("satisfaction", f"{measure}_by_{group}")
        if table is None:
            continue
        shown = table[~table["is_suppressed"].astype(bool)] if "is_suppressed" in table else table
        parts.append(_table(shown.drop(columns=["is_suppressed"], errors="ignore"), currency=currency, locale=locale,
                            caption=f"{measure.upper()} by {group.replace('_', ' ')}"))
    return "".join(parts) or "<p>No breakdown for this choice.</p>"


PERIOD_CHOICES = [("Last 12 months", 12), ("Last 24 months", 24), ("All months", 0)]


@hidden_from_partial_views("NPS and CSAT")
def satisfaction_section(*, currency: str, locale: str):
    """NPS and CSAT tiles with intervals, trends with a period filter (``crm-filter-period``) and the breakdown by a
    chosen group (``crm-filter-group``)."""
    note = section_note("satisfaction", "NPS and CSAT")
    if note is not None:
        return _raw(heading("NPS and CSAT") + note)
    period = pages.dropdown("Period", PERIOD_CHOICES, "crm-filter-period")
    groups = [g for g in SATISFACTION_GROUPS if _latest("satisfaction", f"nps_by_{g}") is not None] or [SATISFACTION_GROUPS[0]]
    group = pages.dropdown("By", groups, "crm-filter-group")
    body = live([period, group], lambda m, g: trend_html(m) + by_group_html(g, currency=currency, locale=locale), "crm-satisfaction")
    tiles = interval_tiles()
    if isinstance(body, widgets.Widget):
        return widgets.VBox([widgets.HTML(heading("NPS and CSAT") + tiles), body])
    return _raw(heading("NPS and CSAT") + tiles + body.data)


def themes_section(*, currency: str, locale: str) -> str:
    def draw() -> str:
        themes = _latest("satisfaction", "comment_themes")
        return _table(themes, currency=currency, locale=locale, max_rows=30)

    return section("satisfaction", "What customers write about", draw)


def ticket_kpis_section(*, currency: str, locale: str, category: str = "service") -> str:
    """The latest value of each service KPI (tickets: resolution, response times, escalations) against its
    target, from the KPI run's values (``kpi_values_for_viewer``: overall, or per region for a viewer of some
    regions, one row per KPI and region), at each KPI's own grain."""
    def draw() -> str:
        values, _alerts, note = kpi_values_for_viewer("ticket KPIs")
        if note is not None:
            return note
        regions = values["segment"] != "all"  # a viewer of several regions: their regions' rows, no overall
        chosen = values[(values["category"] == category) & (regions | (values["segment"] == "all")) & (values["channel"] == "all")
                        & (values["grain"] == values["kpi_grain"])]
        latest = chosen.sort_values("period_start").groupby(["kpi_id", "segment"], sort=False).tail(1)
        if latest.empty:
            return "<p>No service KPI in the latest KPI run.</p>"
        columns = ["name", *(["segment"] if regions.any() else []), "period_start", "value", "unit", "target", "status", "change_pct"]
        return _table(latest[columns], currency=currency, locale=locale, units={"value": "number", "target": "number"},
                      labels={"name": "KPI", "segment": "Region", "period_start": "Period"})

    return section("kpi", "Ticket KPIs", draw)


# --------------------------------------------------------------------------------------------------
# the KPI board (executive)

KPI_BOARD = "KPI board"
# the KPI run's values and alerts per region (a column named after the customer attribute, e.g. province)
REGION_KPI_VALUES, REGION_KPI_ALERTS = "kpi_values_by_region", "alerts_by_region"


def kpi_values_for_viewer(what: str = KPI_BOARD) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str | None]:
    """The KPI board's rows for this page's viewer, from the latest KPI run: ``(tracked, alerts, note)``.

    A viewer of every row (no viewer from a proxy, or an unrestricted group) gets the run's ``kpi_values`` and
    ``alerts`` (``None`` for a run that persisted no alerts). A viewer who sees some values of a customer attribute
    (``{province: [...]}``) gets the run's values and alerts per region (``REGION_KPI_VALUES``, ``REGION_KPI_ALERTS``)
    narrowed to their regions and shaped like ``kpi_values`` (``as_board_rows``): the board's segment filter then
    lists their regions. ``note`` is ``None`` when there is a board to draw; otherwise ``tracked`` and ``alerts`` are
    ``None`` and ``note`` is one line of HTML saying why ``what`` cannot be shown: no good KPI run, a run without values per the viewer's
    attribute, or regions too small to be shown (fewer than the run's ``min_group_size`` customers).
    """
    viewer = pages.restricted_viewer()
    if viewer is None:
        tracked, problem = pages.load_table("kpi", "kpi_values")
        if tracked is None:
            return None, None, pages.unavailable_html("kpi", f"the {what}", reason=problem)
        return tracked, pages.load_table("kpi", "alerts")[0], None
    if not pages.latest_record("kpi"):
        return None, None, pages.unavailable_html("kpi", f"the {what}")
    column = viewer.group.rows.column
    tracked, problem = pages.load_table("kpi", REGION_KPI_VALUES)
    if tracked is None:  # no table, or one without the viewer's column (per city for a viewer of provinces)
        return None, None, pages.not_in_view_html(what, reason=f"the KPI run computed no values per {column}")
    if tracked.empty:
        return None, None, pages.not_in_view_html(what, reason=f"no KPI values for your {column}: regions of few customers are not shown")
    alerts, _problem = pages.load_table("kpi", REGION_KPI_ALERTS)
    alerts = alerts if alerts is not None else tracked.iloc[:0]
    several = tracked[column].nunique() > 1
    return as_board_rows(tracked, column, several=several), as_board_rows(alerts, column, several=several, name_regions=True), None


def as_board_rows(table: pd.DataFrame, column: str, *, several: bool, name_regions: bool = False) -> pd.DataFrame:
    """Rows per region (``column``, e.g. ``province``) shaped like the KPI run's ``kpi_values`` for the board:
    ``column`` becomes ``segment``, holding the region when the viewer sees ``several``, else ``"all"`` (the one
    region's values are then the viewer's totals).

    With ``name_regions`` (alerts) and ``several``, each ``name`` also says its region: ``Revenue (Guangdong)``.
    """
    regions = table[column].astype("string")
    shaped = table.rename(columns={column: "segment"})  # in the attribute's place, where kpi_values has segment
    shaped["segment"] = regions if several else "all"
    if name_regions and several:
        shaped["name"] = shaped["name"].astype("string") + " (" + regions + ")"
    return shaped
