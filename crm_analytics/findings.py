"""Findings first: the "What we found" block at the top of a report, written from the run's own results.

Every sentence comes from a fixed template filled with numbers of the run's result tables (no free
text), and names its number and its period. A notebook:

1. right after its imports, ``handle = findings.placeholder()`` reserves the block at the top;
2. at its end, ``findings.publish(findings.segmentation_findings(...), handle=handle, output_dir=output_dir)``
   adds the change since the previous successful run of the same analysis and what the run's warnings
   say was skipped or too thin, writes ``tables/findings.parquet`` (raw headline numbers) and replaces
   the placeholder in place (an IPython display update: the executed notebook, hence its HTML report,
   holds the block where the placeholder was).

A run that stops before ``publish`` leaves the placeholder's sentence, which says so.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from crm_analytics import paths, results, tables

TITLE = "What we found"
TABLE = "findings"  # tables/findings.parquet of a run: its headline numbers, read by the next run
MAX_RESULT_SENTENCES = 3  # plus at most one change and one warnings sentence: five in all
PLACEHOLDER = "The findings are written when the run finishes; this run stopped before that, so read its sections with care."
LIMIT_KINDS = ("too_little_data", "skipped", "not_converged")  # warnings that limit what a report can say
PERIOD_WORDS = {"D": "day", "W": "week", "M": "month", "Q": "quarter", "Y": "year",
                "day": "day", "week": "week", "month": "month", "quarter": "quarter", "year": "year"}


@dataclass(frozen=True)
class Finding:
    """One sentence of the findings block and the headline number it states.

    Attributes
    ----------
    key : stable name of the number across runs (compared with the previous run's), e.g. ``top_segment_revenue_pct``.
    sentence : the sentence shown, naming the number and its period.
    value : the number, raw (``None`` for a sentence without one).
    unit : its unit (``tables.UNITS``), which says how a change is written (points for percentages).
    period : the period the number covers, in words (``snapshot 2011-12-10``).
    label : the number in words for the change sentence (``Champions' share of net revenue``).
    """

    key: str
    sentence: str
    value: float | None = None
    unit: str = "number"
    period: str = ""
    label: str = ""


# ----------------------------------------------------------------------------- helpers


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def _fmt(value, unit: str, currency: str = "GBP", locale: str = "en_GB") -> str:
    return tables.format_value(value, unit, currency=currency, locale=locale)


def span_text(first, last) -> str:
    """``from 2023-01-01 to 2025-12-31`` (``up to 2025-12-31`` without a first day)."""
    if first is None or pd.isna(first):
        return f"up to {_day(last)}"
    return f"from {_day(first)} to {_day(last)}"


def _row(summary: pd.DataFrame, column: str, name: str):
    match = summary[summary[column].astype(str) == name]
    return None if match.empty else match.iloc[0]


# ----------------------------------------------------------------------------- segmentation


def segmentation_findings(
    summary: pd.DataFrame,
    *,
    snapshot,
    first_day=None,
    segment_col: str = "rfm_segment",
    currency: str = "GBP",
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of an RFM segmentation: the segment with most revenue, Champions and Loyal Customers, those at risk.

    Parameters
    ----------
    summary : ``segmentation.segment_summary``: ``segment_col``, ``n_customers``, ``customer_pct``,
        ``revenue_amount`` (dataset currency), ``revenue_pct`` (0-100).
    snapshot : the RFM snapshot date; ``first_day`` the first order day (the period is ``orders from .. to snapshot``).
    currency, locale : how money is written.

    Returns
    -------
    list of Finding
        At most three; one saying so when no customer is scored.
    """
    period = f"orders {span_text(first_day, pd.Timestamp(snapshot) - pd.Timedelta(days=1))}, snapshot {_day(snapshot)}"
    total = int(summary["n_customers"].sum()) if len(summary) else 0
    if total == 0:
        return [Finding("n_customers", f"No customer had a purchase order before the snapshot ({period}).", 0, "count", period)]
    found = []
    top = summary.loc[summary["revenue_pct"].idxmax()]
    name = str(top[segment_col])
    found.append(Finding(
        "top_segment_revenue_pct",
        f"{name} is the segment with the most revenue: {_fmt(top['revenue_pct'], 'percent', locale=locale)} of net revenue "
        f"({_fmt(top['revenue_amount'], 'money', currency, locale)}) from {_fmt(top['customer_pct'], 'percent', locale=locale)} "
        f"of customers ({_fmt(top['n_customers'], 'count', locale=locale)} of {_fmt(total, 'count', locale=locale)}; {period}).",
        float(top["revenue_pct"]), "percent", period, f"{name}' share of net revenue" if name.endswith("s") else f"{name}'s share of net revenue",
    ))
    core = [r for r in (_row(summary, segment_col, "Champions"), _row(summary, segment_col, "Loyal Customers")) if r is not None]
    if len(core) == 2:
        customer_pct = sum(float(r["customer_pct"]) for r in core)
        revenue_pct = sum(float(r["revenue_pct"]) for r in core)
        found.append(Finding(
            "champions_loyal_revenue_pct",
            f"Champions and Loyal Customers together are {_fmt(customer_pct, 'percent', locale=locale)} of customers and "
            f"{_fmt(revenue_pct, 'percent', locale=locale)} of net revenue ({period}).",
            revenue_pct, "percent", period, "the share of net revenue of Champions and Loyal Customers",
        ))
    at_risk = [r for r in (_row(summary, segment_col, "At Risk"), _row(summary, segment_col, "Can't Lose Them")) if r is not None]
    if at_risk:
        n = sum(int(r["n_customers"]) for r in at_risk)
        names = " or ".join(str(r[segment_col]) for r in at_risk)
        found.append(Finding(
            "at_risk_revenue_pct",
            f"{_fmt(n, 'count', locale=locale)} customers ({_fmt(n / total, 'share', locale=locale)}) are {names}: they brought "
            f"{_fmt(sum(float(r['revenue_amount']) for r in at_risk), 'money', currency, locale)} "
            f"({_fmt(sum(float(r['revenue_pct']) for r in at_risk), 'percent', locale=locale)} of net revenue) and have not bought lately ({period}).",
            sum(float(r["revenue_pct"]) for r in at_risk), "percent", period, f"the share of net revenue of {names}",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- cohorts


def _cohort_frame(matrix: pd.DataFrame) -> pd.DataFrame:
    """A cohort matrix indexed by cohort, its columns the period numbers (as ``cohort.retention_matrix`` returns it or as persisted)."""
    frame = matrix.set_index("cohort_date") if "cohort_date" in matrix.columns else matrix
    frame = frame.copy()
    frame.columns = [int(c) for c in frame.columns]
    return frame


def _later_period(frame: pd.DataFrame, preferred: int, min_cohorts: int = 3) -> int | None:
    """The period nearest ``preferred`` (not after it) that at least ``min_cohorts`` cohorts reached, above 1."""
    reached = [p for p in frame.columns if 1 < p <= preferred and frame[p].notna().sum() >= min_cohorts]
    return max(reached) if reached else None


def cohort_findings(
    retention: pd.DataFrame,
    ltv: pd.DataFrame | None = None,
    *,
    period: str = "M",
    end_day,
    currency: str = "GBP",
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of acquisition cohorts: repeat buying one period on, retention later on, net revenue per customer.

    Parameters
    ----------
    retention : ``cohort.retention_matrix(value="customers")``: one row per cohort (index or ``cohort_date``),
        columns the periods since acquisition (0, 1, ...), shares 0-1 (missing where not yet observed).
    ltv : ``cohort.retention_matrix(value="ltv")``: cumulative net revenue per customer (dataset currency).
    period : the cohort period (``D``, ``W``, ``M``, ``Q``, ``Y``); ``end_day`` the last order day used.

    Returns
    -------
    list of Finding
        Cohort means (unweighted); at most three.
    """
    word = PERIOD_WORDS.get(period, period)
    frame = _cohort_frame(retention)
    if frame.empty or 1 not in frame.columns or frame[1].notna().sum() == 0:
        span = f"orders up to {_day(end_day)}"
        return [Finding("n_cohorts", f"No cohort has been observed for a full {word} after its first purchase yet ({span}).", len(frame), "count", span)]
    observed = frame[1].dropna()
    cohorts = f"{len(observed)} cohorts from {_day(observed.index.min())} to {_day(observed.index.max())}, orders up to {_day(end_day)}"
    found = [Finding(
        "retention_period_1",
        f"On average {_fmt(observed.mean(), 'share', locale=locale)} of a cohort's customers bought again in the {word} after their first purchase ({cohorts}).",
        float(observed.mean()), "share", cohorts, f"the share buying again one {word} on",
    )]
    later = _later_period(frame, {"D": 30, "W": 12, "M": 12, "Q": 4, "Y": 3}.get(period, 12))
    if later is not None:
        kept = frame[later].dropna()
        span = f"{len(kept)} cohorts, orders up to {_day(end_day)}"
        found.append(Finding(
            f"retention_period_{later}",
            f"{later} {word}s after their first purchase, {_fmt(kept.mean(), 'share', locale=locale)} of a cohort's customers were still buying (mean of {span}).",
            float(kept.mean()), "share", span, f"the share still buying {later} {word}s on",
        ))
    if ltv is not None and later is not None:
        value = _cohort_frame(ltv)[later].dropna()
        if len(value):
            span = f"{len(value)} cohorts, orders up to {_day(end_day)}"
            found.append(Finding(
                f"ltv_period_{later}",
                f"A customer brought {_fmt(value.mean(), 'money', currency, locale)} of net revenue in their first {later + 1} {word}s, on average (mean of {span}).",
                float(value.mean()), "money", span, f"net revenue per customer over {later + 1} {word}s",
            ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- KPIs


def kpi_findings(tracked: pd.DataFrame, alerts: pd.DataFrame, *, currency: str = "GBP", locale: str = "en_GB") -> list[Finding]:
    """Findings of the KPI dashboard: the alerts, the latest revenue and how many KPIs are on target.

    Parameters
    ----------
    tracked : ``kpi.track``: ``kpi_id``, ``name``, ``unit``, ``grain``, ``kpi_grain``, ``segment``, ``channel``,
        ``period_start``, ``period_end``, ``value``, ``change_pct``, ``status``.
    alerts : ``kpi.find_alerts(tracked)``: ``severity``, ``grain``, ``period_start``, ``message``.

    Returns
    -------
    list of Finding
        At most three: the alerts, the latest value of the first money KPI (revenue first) and the count of KPIs on target.
    """
    totals = tracked[(tracked["grain"] == tracked["kpi_grain"]) & (tracked["segment"] == "all") & (tracked["channel"] == "all")]
    latest = totals.sort_values("period_start").groupby("kpi_id", sort=False).tail(1)
    if latest.empty:
        return [Finding("n_alerts", "No KPI has a complete period at its own grain yet, so nothing can be judged.", None, "count")]
    period = f"latest complete periods, up to {_day(pd.Timestamp(latest['period_end'].max()) - pd.Timedelta(days=1))}"
    if alerts.empty:
        found = [Finding("n_alerts", f"No KPI alert: every KPI with a target is within its thresholds and no change left its usual range ({period}).", 0, "count", period, "the number of KPI alerts")]
    else:
        n_red = int((alerts["severity"] == "red").sum())
        first = alerts.iloc[0]
        found = [Finding(
            "n_alerts",
            f"{_fmt(len(alerts), 'count', locale=locale)} KPI alert{'s' if len(alerts) != 1 else ''} ({n_red} red, {len(alerts) - n_red} amber; {period}); "
            f"the first: {str(first['message']).rstrip('.')} ({first['grain']} of {_day(first['period_start'])}).",
            len(alerts), "count", period, "the number of KPI alerts",
        )]
    money_kpis = latest[latest["unit"] == "money"]
    if len(money_kpis):
        revenue = money_kpis[money_kpis["kpi_id"].str.contains("revenue")]
        row = (revenue if len(revenue) else money_kpis).iloc[0]
        grain = str(row["grain"])
        change = "" if pd.isna(row["change_pct"]) else (
            f", {'+' if row['change_pct'] >= 0 else '−'}{_fmt(abs(row['change_pct']), 'percent', locale=locale)} on the previous {grain}")
        when = f"{grain} from {_day(row['period_start'])} to {_day(pd.Timestamp(row['period_end']) - pd.Timedelta(days=1))}"
        found.append(Finding(
            f"kpi_{row['kpi_id']}",
            f"{row['name']} was {_fmt(row['value'], 'money', currency, locale)} in the {when}{change}.",
            float(row["value"]), "money", when, str(row["name"]),
        ))
    with_target = latest[latest["status"] != "grey"]
    if len(with_target):
        green = int((with_target["status"] == "green").sum())
        found.append(Finding(
            "kpis_on_target",
            f"{green} of the {len(with_target)} KPIs with a target are on target (green) in their latest complete period ({period}).",
            green, "count", period, "the number of KPIs on target",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- funnel


def funnel_findings(overall: pd.DataFrame, *, unit: str = "session", first_day, last_day, converted: pd.DataFrame | None = None) -> list[Finding]:
    """Findings of an event funnel: end-to-end conversion, the step losing most, the time to convert.

    Parameters
    ----------
    overall : ``funnel`` result: ``step_number``, ``step``, ``users``, ``conversion_from_first_pct`` and
        ``drop_off_pct`` (0-100, against the previous step), ``drop_off``.
    unit : what a journey is (``session`` or ``customer``); ``first_day``, ``last_day`` the events' days.
    converted : ``time_to_convert``: ``days_to_convert`` per completed journey.
    """
    period = f"events {span_text(first_day, last_day)}"
    steps = overall.sort_values("step_number")
    started = int(steps["users"].iloc[0]) if len(steps) else 0
    if started == 0:
        return [Finding("conversion_pct", f"No {unit} reached the first step of the funnel ({period}).", None, "percent", period)]
    last = steps.iloc[-1]
    found = [Finding(
        "conversion_pct",
        f"{_fmt(last['conversion_from_first_pct'], 'percent')} of the {_fmt(started, 'count')} {unit}s that reached {steps['step'].iloc[0]} "
        f"went on to {last['step']} ({_fmt(last['users'], 'count')}; {period}).",
        float(last["conversion_from_first_pct"]), "percent", period, f"the conversion from {steps['step'].iloc[0]} to {last['step']}",
    )]
    later = steps.iloc[1:]
    if len(later) and later["drop_off_pct"].notna().any():
        position = int(later["drop_off_pct"].to_numpy().argmax())
        worst = later.iloc[position]
        before = steps.iloc[position]["step"]
        found.append(Finding(
            "largest_drop_pct",
            f"The largest drop is from {before} to {worst['step']}: {_fmt(worst['drop_off_pct'], 'percent')} of the {unit}s "
            f"({_fmt(worst['drop_off'], 'count')}) that reached {before} went no further ({period}).",
            float(worst["drop_off_pct"]), "percent", period, f"the drop from {before} to {worst['step']}",
        ))
    if converted is not None and len(converted):
        days = converted["days_to_convert"].dropna()
        if len(days):
            found.append(Finding(
                "median_days_to_convert",
                f"Half of the {unit}s that reached {last['step']} did so within {_fmt(days.median(), 'days')} of {steps['step'].iloc[0]}; "
                f"nine in ten within {_fmt(days.quantile(0.9), 'days')} ({period}).",
                float(days.median()), "days", period, "the median time to convert",
            ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- overview


def overview_findings(
    inventory: pd.DataFrame,
    *,
    orders_over_time: pd.DataFrame | None = None,
    customers_by_source: pd.DataFrame | None = None,
    period: str = "week",
    currency: str = "GBP",
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of the data overview: what the warehouse holds and for when, the busiest period, the main customer source.

    Parameters
    ----------
    inventory : ``overview.table_inventory``: ``table``, ``rows``, ``first_time``, ``last_time``.
    orders_over_time : ``overview.orders_over_time``: ``period_start``, ``n_orders``, ``net_revenue_amount`` (summed over other columns).
    customers_by_source : ``overview.count_by(customers, "source")``: ``source``, ``customers``, ``share_pct`` (0-100).
    period : the grain of ``orders_over_time``.
    """
    rows = inventory.set_index("table")
    n_customers = int(rows["rows"].get("customers", 0))
    n_orders = int(rows["rows"].get("orders", 0))
    span = span_text(rows["first_time"].get("orders"), rows["last_time"].get("orders")) if n_orders else "no orders"
    found = [Finding(
        "n_orders",
        f"The warehouse holds {_fmt(n_customers, 'count', locale=locale)} customers and {_fmt(n_orders, 'count', locale=locale)} orders, "
        f"the orders dated {span}.",
        n_orders, "count", f"orders {span}", "the number of orders",
    )]
    empty = [str(t) for t, n in rows["rows"].items() if n == 0]
    if orders_over_time is not None and len(orders_over_time):
        per_period = orders_over_time.groupby("period_start")[["n_orders", "net_revenue_amount"]].sum()
        peak = per_period["n_orders"].idxmax()
        word = PERIOD_WORDS.get(period, period)
        found.append(Finding(
            "peak_period_orders",
            f"The busiest {word} began {_day(peak)}: {_fmt(per_period.loc[peak, 'n_orders'], 'count', locale=locale)} orders, "
            f"{_fmt(per_period.loc[peak, 'net_revenue_amount'], 'money', currency, locale)} of net revenue.",
            float(per_period.loc[peak, "n_orders"]), "count", f"{word} of {_day(peak)}", f"the orders of the busiest {word}",
        ))
    if customers_by_source is not None and len(customers_by_source) and n_customers:
        top = customers_by_source.sort_values("customers", ascending=False).iloc[0]
        found.append(Finding(
            "top_source_customer_pct",
            f"{str(top['source'])[:1].upper()}{str(top['source'])[1:]} is the largest source of customers: {_fmt(top['share_pct'], 'percent', locale=locale)} "
            f"({_fmt(top['customers'], 'count', locale=locale)}) of the customers in the warehouse"
            + (f"; empty tables: {', '.join(empty)}." if empty else "."),
            float(top["share_pct"]), "percent", "all customers", f"{top['source']}'s share of customers",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- change and warnings


def previous_run_dir(output_dir: str | Path | None) -> Path | None:
    """The previous successful run of this run's analysis: ``latest`` beside the run folder, before this run moves it."""
    if not output_dir:
        return None
    here = Path(output_dir)
    previous = paths.read_latest_pointer(here.parent)
    if not previous.is_dir() or previous.resolve() == here.resolve():
        return None
    return previous


def read_findings(run_dir: str | Path) -> pd.DataFrame | None:
    """The headline numbers a run persisted (``tables/findings.parquet``), ``None`` when it has none."""
    path = Path(run_dir) / "tables" / f"{TABLE}.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def change_finding(current: Sequence[Finding], previous: pd.DataFrame | None, *, previous_run: str = "") -> Finding | None:
    """How the first headline number that the previous run also has moved since then (``None`` when none compares).

    Percentages and shares change in percentage points; other numbers by their relative change.
    """
    if previous is None or previous.empty:
        return None
    before = previous.dropna(subset=["value"]).drop_duplicates("key").set_index("key")
    for finding in current:
        if finding.value is None or finding.key not in before.index or pd.isna(finding.value):
            continue
        old = float(before.loc[finding.key, "value"])
        new = float(finding.value)
        label = finding.label or finding.key
        since = f"Since the previous successful run ({previous_run}" + (f", {before.loc[finding.key, 'period']}" if before.loc[finding.key, "period"] else "") + ")"
        if old == new:
            sentence = f"{since}, {label} is unchanged at {_fmt(new, finding.unit)}."
        else:
            if finding.unit in ("percent", "share"):
                points = (new - old) * (100 if finding.unit == "share" else 1)
                delta = f"{points:+.1f} points"
            elif old:
                delta = f"{100 * (new - old) / abs(old):+.1f}%"
            else:
                delta = "from zero"
            sentence = f"{since}, {label} went from {_fmt(old, finding.unit)} to {_fmt(new, finding.unit)} ({delta})."
        return Finding(f"change_{finding.key}", sentence, new - old, finding.unit if finding.unit != "share" else "share", finding.period, label)
    return None


def warning_findings(warnings: Sequence[dict]) -> list[Finding]:
    """At most one sentence naming the sections with too little data, skipped or not converged, and the data notes.

    ``warnings`` are ``results.read_warnings`` records (``kind``, ``section``, ``message``).
    """
    limits = [w for w in warnings if w.get("kind") in LIMIT_KINDS]
    notes = [w for w in warnings if w.get("kind") == "data_note"]
    parts = []
    if limits:
        parts.append("too little data or skipped: " + "; ".join(
            f"{w.get('section') or 'the report'} ({str(w.get('message', '')).rstrip('.')})" for w in limits))
    if notes:
        sections = sorted({w.get("section") or "the report" for w in notes})
        parts.append(f"{len(notes)} data note{'s' if len(notes) != 1 else ''} ({', '.join(sections)})")
    if not parts:
        return []
    text = "Read with care: " + "; and ".join(parts) + "."
    return [Finding("warnings", text, len(limits), "count", "", "the sections limited by the data")]


# ----------------------------------------------------------------------------- the block


def complete(found: Sequence[Finding], *, output_dir: str | Path | None = None, warnings: Sequence[dict] | None = None) -> list[Finding]:
    """The block's findings: ``found`` (at most three), the change since the previous successful run, the warnings.

    ``warnings`` default to those the run recorded in ``output_dir`` (``results.read_warnings``); the
    previous run is ``previous_run_dir(output_dir)``.
    """
    block = list(found)[:MAX_RESULT_SENTENCES]
    previous = previous_run_dir(output_dir)
    if previous is not None:
        change = change_finding(block, read_findings(previous), previous_run=previous.name)
        if change is not None:
            block.append(change)
    recorded = warnings if warnings is not None else (results.read_warnings(output_dir) if output_dir else [])
    return block + warning_findings(recorded)


def findings_table(found: Sequence[Finding]) -> pd.DataFrame:
    """The findings as a table (``key``, ``sentence``, ``value``, ``unit``, ``period``, ``label``), raw numbers."""
    frame = pd.DataFrame([asdict(f) for f in found], columns=["key", "sentence", "value", "unit", "period", "label"])
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    return frame


def findings_markdown(found: Sequence[Finding]) -> str:
    """The block as Markdown: a ``What we found`` heading and one bullet per sentence."""
    return f"**{TITLE}**\n\n" + "\n".join(f"- {f.sentence}" for f in found)


def findings_html(found: Sequence[Finding]) -> str:
    """The block as HTML: ``<div class="findings" id="what-we-found">`` with a heading and a list."""
    items = "".join(f"<li>{html.escape(f.sentence)}</li>" for f in found)
    return f'<div class="findings" id="what-we-found"><h2>{TITLE}</h2><ul>{items}</ul></div>'


def _bundle(found: Sequence[Finding]) -> dict:
    return {"text/html": findings_html(found), "text/markdown": findings_markdown(found), "text/plain": findings_markdown(found)}


def placeholder():
    """Show the findings block's place at the top of a report; return the handle ``publish`` fills it through."""
    from IPython.display import display

    return display(_bundle([Finding("placeholder", PLACEHOLDER)]), raw=True, display_id=True)


def publish(found: Sequence[Finding], *, handle=None, output_dir: str | Path | None = None, warnings: Sequence[dict] | None = None) -> list[Finding]:
    """Complete the findings (``complete``), persist them as ``tables/findings.parquet`` and show them.

    With ``handle`` (``placeholder()``) the block replaces the placeholder at the top of the report;
    without one it is shown where ``publish`` is called. Returns the findings shown.
    """
    block = complete(found, output_dir=output_dir, warnings=warnings)
    results.save_table(findings_table(block), TABLE, output_dir=output_dir)
    if handle is not None:
        handle.update(_bundle(block), raw=True)
    else:
        from IPython.display import display

        display(_bundle(block), raw=True)
    return block
