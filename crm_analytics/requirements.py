"""What each analysis needs from the warehouse, in one place the runner and the readiness check both read.

Real exports hold some of the canonical tables, rarely all. Every analysis (a notebook in
``notebooks/``) declares here

- the tables it **requires** (with the columns it reads, where a source could lack them): without
  any of them the analysis cannot say anything, and the runner records the run ``not_applicable``
  with the reason (``"needs web_events"``) instead of starting a kernel;
- the **optional** tables and what each one enables: without them the analysis runs and the
  sections (or model features) that need them are skipped with a one-line note in the report.

A table counts as present only when it holds at least one row: an empty table is missing.

The declarations follow what each notebook reads (``con.table(...)``); a test keeps the KPI
entry in step with the KPI catalogue.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping

from crm_analytics import schema


@dataclasses.dataclass(frozen=True)
class Requirement:
    """The warehouse tables one analysis reads.

    Attributes
    ----------
    analysis : str
        The notebook's stem.
    required : dict of str to tuple of str
        Table -> the columns the analysis reads from it (empty tuple: the table's contract).
    optional : dict of str to str
        Table -> what it enables (a short phrase, e.g. ``"service features (tickets per customer)"``).
    """

    analysis: str
    required: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    optional: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Applicability:
    """Whether an analysis can run on a warehouse, and what it will leave out.

    Attributes
    ----------
    applicable : bool
        True when every required table holds rows.
    reason : str
        Empty when applicable; otherwise one line naming what is missing, e.g. ``"needs web_events"``
        or ``"needs opportunities, opportunity_stage_history (empty)"``.
    missing_optional : list of str
        Optional tables that are absent or empty (their sections are skipped).
    """

    applicable: bool
    reason: str
    missing_optional: list[str]


_ORDERS = ("customer_id", "order_time", "order_amount")
_CUSTOMERS = ("customer_id",)

REQUIREMENTS: dict[str, Requirement] = {
    r.analysis: r
    for r in [
        # builds the warehouse from the dataset's files; every build resolves customers
        Requirement("cleansing", required={"customers": ("customer_id",)}),
        Requirement(
            "overview",
            required={"customers": _CUSTOMERS, "orders": ("order_time",)},
            optional={},
        ),
        Requirement(
            "segmentation",
            required={"orders": _ORDERS, "customers": _CUSTOMERS},
            optional={
                "order_items": "basket features of the clusters: items per order, unit prices",
                "products": "category mix features of the clusters",
                "support_tickets": "service features of the clusters: tickets per customer",
            },
        ),
        Requirement("lifecycle", required={"orders": _ORDERS, "customers": _CUSTOMERS}),
        # basket affinity reads order_items and products; the notebook has no orders-only path yet
        Requirement(
            "behaviour",
            required={"orders": _ORDERS, "order_items": ("order_id", "product_id"), "products": ("product_id", "category")},
        ),
        Requirement(
            "funnel",
            required={"web_events": ("customer_id", "session_id", "event_name", "event_time")},
        ),
        Requirement(
            "pipeline",
            required={"opportunities": ("opportunity_id", "created_time", "status")},
            optional={
                "opportunity_stage_history": "stage conversion and time in stage from the recorded stages (without it, conversion "
                "is inferred from each opportunity's current stage and the dataset's stage ladder, and says so)",
                "products": "list prices for open deals without an amount, when the dataset's expected_amount_rule is product_list_price",
            },
        ),
        Requirement(
            "attribution",
            # campaigns give the channel economics (cost per conversion), a section without a skip path yet
            required={"touchpoints": ("customer_id", "touch_time", "channel"), "orders": _ORDERS, "campaigns": ("campaign_id",)},
        ),
        Requirement(
            "experiments",
            required={"experiment_assignments": ("experiment_id", "variant", "customer_id")},
        ),
        Requirement(
            "cohort",
            required={"orders": _ORDERS, "customers": ("customer_id", "acquisition_channel")},
        ),
        Requirement("clv", required={"orders": _ORDERS}),
        Requirement(
            "churn",
            required={"orders": _ORDERS},
            optional={
                "surveys": "satisfaction features (NPS, CSAT, detractor)",
                "support_tickets": "service features (tickets, escalations, refund tickets)",
                "web_events": "engagement features (sessions, days since the last visit)",
            },
        ),
        Requirement("forecast", required={"orders": ("order_time", "order_amount")}),
        Requirement(
            "kpi",
            # each KPI needs its own tables (the catalogue); without orders the order KPIs are left out and
            # the window ends with the pipeline, so a B2B export still gets its sales KPIs
            required={"customers": _CUSTOMERS},
            optional={
                "orders": "order KPIs (revenue, orders, active customers, retention, realised CLV) and the sales cube",
                "campaigns": "marketing KPIs (cost per acquisition and lead, ROI, channel efficiency)",
                "touchpoints": "campaign conversion and ROI per channel",
                "opportunities": "sales KPIs (win rate, sales cycle, lead conversion time, open pipeline, cost per lead, per-rep counts and rates)",
                "opportunity_stage_history": "lead quality (leads that become qualified opportunities)",
                "web_events": "funnel conversion and customer engagement",
                "surveys": "satisfaction KPIs (NPS, CSAT, service satisfaction)",
                "support_tickets": "service KPIs (resolution rate and time, response time, escalation)",
            },
        ),
        Requirement(
            "satisfaction",
            # orders give the churn-by-score section, which has no skip path yet
            required={"surveys": ("customer_id", "survey_time", "nps_score"), "customers": _CUSTOMERS, "orders": _ORDERS},
        ),
        Requirement(
            "recommendation",
            required={
                "orders": _ORDERS,
                "order_items": ("order_id", "product_id"),
                "products": ("product_id",),
            },
        ),
        # shows the persisted results of other runs; reads no warehouse table
        Requirement("dashboard"),
    ]
}


def requirement(analysis: str) -> Requirement:
    """Return the declaration of ``analysis``; ``KeyError`` naming the known analyses and close matches."""
    try:
        return REQUIREMENTS[analysis]
    except KeyError:
        close = difflib.get_close_matches(analysis, REQUIREMENTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no requirements declared for analysis {analysis!r}{hint} (known: {', '.join(sorted(REQUIREMENTS))})") from None


def is_declared(analysis: str) -> bool:
    """True when ``analysis`` has a declaration here."""
    return analysis in REQUIREMENTS


def present_tables(table_rows: Mapping[str, int]) -> set[str]:
    """The tables of ``table_rows`` ({table: rows}) that hold at least one row."""
    return {name for name, rows in table_rows.items() if rows and rows > 0}


def check(analysis: str, table_rows: Mapping[str, int]) -> Applicability:
    """Say whether ``analysis`` can run on a warehouse with ``table_rows`` ({table: rows}).

    A table absent from ``table_rows`` or with 0 rows counts as missing. The reason names the
    missing required tables in declaration order: ``"needs web_events"``; when every missing
    one exists but is empty, ``" (empty)"`` is added.
    """
    declared = requirement(analysis)
    present = present_tables(table_rows)
    missing = [name for name in declared.required if name not in present]
    missing_optional = [name for name in declared.optional if name not in present]
    if not missing:
        return Applicability(True, "", missing_optional)
    reason = "needs " + ", ".join(missing)
    if all(name in table_rows for name in missing):
        reason += " (empty)"
    return Applicability(False, reason, missing_optional)


def missing_columns(analysis: str, table_columns: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Required columns the data lacks, per required table present in ``table_columns`` ({table: column names}).

    Tables absent from ``table_columns`` are not reported here (``check`` reports them).
    """
    declared = requirement(analysis)
    gaps = {}
    for table, columns in declared.required.items():
        if table not in table_columns:
            continue
        have = set(table_columns[table])
        lacking = [c for c in columns if c not in have]
        if lacking:
            gaps[table] = lacking
    return gaps


def available_tables(con) -> set[str]:
    """The canonical tables of an Ibis connection that exist and hold at least one row.

    For notebooks: ``"support_tickets" in available`` decides whether a section runs.
    """
    listed = set(con.list_tables())
    return {name for name in schema.TABLES if name in listed and int(con.table(name).count().to_pyarrow().as_py()) > 0}


def skipped_note(*tables: str, what: str = "") -> str:
    """The one-line note a report shows for a skipped section: ``"skipped: needs support_tickets"``.

    With ``what``: ``"skipped: needs surveys for satisfaction features (NPS, CSAT, detractor)"``.
    """
    note = "skipped: needs " + ", ".join(tables)
    return f"{note} for {what}" if what else note


def optional_tables(con, names: Iterable[str], *, available: Iterable[str] | None = None) -> dict:
    """``{name: con.table(name)}`` for the tables that hold rows, ``None`` for the others.

    For notebooks passing optional tables on as keyword arguments, e.g.
    ``churn.churn_features(orders, as_of=..., **requirements.optional_tables(con, ["surveys"]))``.
    ``available`` (from :func:`available_tables`) saves counting the tables again.
    """
    present = set(available_tables(con) if available is None else available)
    return {name: con.table(name) if name in present else None for name in names}


def skipped_notes(analysis: str, available: Iterable[str]) -> list[str]:
    """One note per optional table of ``analysis`` missing from ``available``, naming what it would enable.

    E.g. ``["skipped: needs support_tickets for service features of the clusters: tickets per customer"]``;
    empty when every optional table holds rows.
    """
    present = set(available)
    return [skipped_note(name, what=what) for name, what in requirement(analysis).optional.items() if name not in present]
