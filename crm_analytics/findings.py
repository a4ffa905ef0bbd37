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

from crm_analytics import kpi_catalogue, paths, results, tables

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
        judged = ("every KPI with a target is within its thresholds and no change left its usual range"
                  if (~latest["status"].isin(kpi_catalogue.UNTARGETED_STATUSES)).any()
                  else "no change left its usual range (the dataset's targets file sets no target)")
        found = [Finding("n_alerts", f"No KPI alert: {judged} ({period}).", 0, "count", period, "the number of KPI alerts")]
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
    with_target = latest[~latest["status"].isin(kpi_catalogue.UNTARGETED_STATUSES)]
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


# ----------------------------------------------------------------------------- shared wording


def _signed(value: float, unit: str, currency: str = "GBP", locale: str = "en_GB") -> str:
    """``+2.1%``, ``−£3.20``: a change with its sign (a true minus sign, as in the KPI sentences)."""
    return ("+" if value >= 0 else "−") + _fmt(abs(value), unit, currency, locale)


def _points(value: float, locale: str = "en_GB") -> str:
    """A difference of two percentages in percentage points: ``+2.1 points``."""
    return _signed(value, "percent", locale=locale).removesuffix("%") + " points"


def _score(value: float, locale: str = "en_GB", *, sign: bool = False) -> str:
    """A score in points (NPS, -100 to 100) with one decimal: ``12.0``, ``+12.0`` with ``sign``."""
    return (_signed(value, "percent", locale=locale) if sign else _fmt(value, "percent", locale=locale)).removesuffix("%")


def _level(share: float) -> str:
    """A round share as a percentage without decimals: ``0.95`` -> ``95%``, ``0.1`` -> ``10%``."""
    return f"{100 * share:g}%"


def _capital(text) -> str:
    return f"{str(text)[:1].upper()}{str(text)[1:]}"


_NAMES = {"markov": "Markov"}  # code names written otherwise than with spaces for underscores


def _words(name) -> str:
    """A code name in words: ``first_touch`` -> ``first touch``, ``markov`` -> ``Markov``."""
    return _NAMES.get(str(name), str(name).replace("_", " "))


def _indexed_by(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """``frame`` indexed by ``column`` whether it holds it as a column (persisted) or as its index (in the notebook)."""
    return frame.set_index(column) if column in frame.columns else frame


# ----------------------------------------------------------------------------- customer lifetime value

TOP_VALUE_SHARE = 0.10  # the top share of customers by predicted value that the CLV findings name
PROBABLY_ACTIVE = 0.5  # probability alive from which a customer counts as probably still active


def clv_findings(
    values: pd.DataFrame,
    *,
    calibration_end,
    observation_end,
    horizon_weeks: float = 52,
    conditional: pd.DataFrame | None = None,
    currency: str = "GBP",
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of the lifetime-value models: how concentrated predicted value is, who is still active, the holdout check.

    Parameters
    ----------
    values : ``clv.customer_lifetime_value``: ``probability_alive`` (0-1), ``clv_amount`` (dataset currency,
        discounted over ``horizon_weeks`` after ``calibration_end``); empty when a model was not fitted or did not converge.
    calibration_end, observation_end : the last day of the calibration period and of the holdout (inclusive).
    conditional : ``clv.conditional_expectations``: ``n_customers``, ``actual_holdout`` and ``expected_holdout``
        (mean purchase days per customer in the holdout) per calibration frequency.

    Returns
    -------
    list of Finding
        At most three.
    """
    calibration = f"models calibrated on orders up to {_day(calibration_end)}"
    holdout = f"holdout from {_day(pd.Timestamp(calibration_end) + pd.Timedelta(days=1))} to {_day(observation_end)}"
    weeks = _fmt(horizon_weeks, "number", locale=locale)
    found = []
    value = values["clv_amount"].dropna() if "clv_amount" in values.columns else pd.Series(dtype="float64")
    if len(value) and value.sum() > 0:
        n_top = max(1, round(len(value) * TOP_VALUE_SHARE))
        share = float(value.nlargest(n_top).sum() / value.sum())
        period = f"value over the {weeks} weeks after {_day(calibration_end)}, {calibration}"
        found.append(Finding(
            "clv_top_10pct_value_share",
            f"The top {_level(TOP_VALUE_SHARE)} of customers by predicted value ({_fmt(n_top, 'count', locale=locale)} of "
            f"{_fmt(len(value), 'count', locale=locale)}) hold {_fmt(share, 'share', locale=locale)} of the predicted {weeks}-week value of "
            f"{_fmt(value.sum(), 'money', currency, locale)} ({period}).",
            share, "share", period, "the top 10%'s share of predicted value",
        ))
        alive = values["probability_alive"].dropna()
        n_alive = int((alive >= PROBABLY_ACTIVE).sum())
        found.append(Finding(
            "clv_probably_active_share",
            f"{_fmt(n_alive, 'count', locale=locale)} customers ({_fmt(n_alive / len(alive), 'share', locale=locale)}) are probably still active "
            f"(probability alive of {_level(PROBABLY_ACTIVE)} or more) at the end of calibration, {_day(calibration_end)}.",
            n_alive / len(alive), "share", f"calibration end {_day(calibration_end)}", "the share of customers probably still active",
        ))
    else:
        found.append(Finding(
            "clv_top_10pct_value_share",
            f"No customer lifetime value was predicted ({calibration}): it needs both models fitted and converged.",
            None, "share", calibration,
        ))
    if conditional is not None and len(conditional) and (conditional["n_customers"] * conditional["actual_holdout"]).sum() > 0:
        actual = float((conditional["n_customers"] * conditional["actual_holdout"]).sum())
        expected = float((conditional["n_customers"] * conditional["expected_holdout"]).sum())
        error_pct = 100 * (expected - actual) / actual
        found.append(Finding(
            "clv_holdout_error_pct",
            f"In the {holdout}, the purchase model expected {_fmt(expected, 'count', locale=locale)} purchase days from the calibration customers "
            f"and they bought on {_fmt(round(actual), 'count', locale=locale)} ({_signed(error_pct, 'percent', locale=locale)}).",
            error_pct, "percent", holdout, "the holdout error of the expected purchases",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- churn

HIGH_RISK_PROBABILITY = 0.7  # churn probability from which a customer is in the high-risk band


def churn_findings(
    scores: pd.DataFrame,
    metrics: pd.DataFrame,
    gains: pd.DataFrame | None = None,
    *,
    as_of,
    window_days: int,
    high_risk: float = HIGH_RISK_PROBABILITY,
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of the churn model: the high-risk band, how well the model ranks on observed labels, the top decile.

    Parameters
    ----------
    scores : ``churn_probability`` (0-1) per scored customer (the notebook's ``churn_scores``).
    metrics : ``churn.churn_metrics``: ``metric`` (``roc_auc``, ``base_rate`` ...), ``value``; empty when not evaluated.
    gains : ``churn.gains_table``: ``decile``, ``cumulative_churned_pct`` (0-100), ``lift``.
    as_of : the scoring date; churn is no purchase in the ``window_days`` from it.
    high_risk : the churn probability from which a customer is in the high-risk band.
    """
    window_end = pd.Timestamp(as_of) + pd.Timedelta(days=window_days - 1)
    period = f"scored on {_day(as_of)}, churn = no purchase from {_day(as_of)} to {_day(window_end)}"
    if scores.empty:
        return [Finding("high_risk_customer_share", f"No customer was scored on {_day(as_of)}: the churn model was not fitted.", None, "share", period)]
    probability = scores["churn_probability"]
    n_high = int((probability >= high_risk).sum())
    found = [Finding(
        "high_risk_customer_share",
        f"{_fmt(n_high, 'count', locale=locale)} customers ({_fmt(n_high / len(probability), 'share', locale=locale)} of "
        f"{_fmt(len(probability), 'count', locale=locale)} scored) are in the high-risk band, a churn probability of "
        f"{_level(high_risk)} or more ({period}).",
        n_high / len(probability), "share", period, "the share of customers in the high-risk band",
    )]
    measured = metrics.set_index("metric")["value"] if len(metrics) else pd.Series(dtype="float64")
    if pd.notna(measured.get("roc_auc")):
        base = measured.get("base_rate")
        churned = "" if base is None or pd.isna(base) else f"; {_fmt(base, 'share', locale=locale)} of them churned"
        found.append(Finding(
            "roc_auc",
            f"On the churn observed from {_day(as_of)} to {_day(window_end)}, after the training date, the model ranks churners above "
            f"the others with a ROC-AUC of {_fmt(measured['roc_auc'], 'number', locale=locale)} (0.5 is chance, 1 perfect{churned}).",
            float(measured["roc_auc"]), "number", period, "the holdout ROC-AUC",
        ))
    if gains is not None and len(gains):
        top = gains.sort_values("decile").iloc[0]
        found.append(Finding(
            "top_decile_churned_pct",
            f"The 10% of customers with the highest churn scores hold {_fmt(top['cumulative_churned_pct'], 'percent', locale=locale)} of the "
            f"churners, {_fmt(top['lift'], 'number', locale=locale)} times their share ({period}).",
            float(top["cumulative_churned_pct"]), "percent", period, "the churners' share in the top-scored decile",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- lifecycle


def lifecycle_findings(counts: pd.DataFrame, flows: pd.DataFrame | None = None, *, snapshot, earlier, locale: str = "en_GB") -> list[Finding]:
    """Findings of the lifecycle stages: the largest stage, at risk and churned, the largest flow worth acting on.

    Parameters
    ----------
    counts : ``lifecycle.stage_counts``: ``lifecycle_stage``, ``n_customers``, ``customer_pct`` (0-100).
    flows : the notebook's ``key_flows`` (``lifecycle.stage_transitions`` rows into at risk or churned):
        ``from_stage``, ``to_stage``, ``n_customers``, ``from_pct`` (0-100 of the earlier stage).
    snapshot, earlier : the snapshot date and the earlier snapshot the flows start from.
    """
    period = f"snapshot {_day(snapshot)}"
    total = int(counts["n_customers"].sum()) if len(counts) else 0
    if total == 0:
        return [Finding("n_customers", f"No customer has a lifecycle stage at the snapshot ({period}).", 0, "count", period)]
    by_stage = counts.set_index(counts["lifecycle_stage"].astype(str))
    top = by_stage["n_customers"].idxmax()
    found = [Finding(
        f"stage_{top.replace(' ', '_')}_customer_pct",
        f"{_capital(top)} is the largest lifecycle stage: {_fmt(by_stage.loc[top, 'n_customers'], 'count', locale=locale)} customers "
        f"({_fmt(by_stage.loc[top, 'customer_pct'], 'percent', locale=locale)} of {_fmt(total, 'count', locale=locale)}; {period}).",
        float(by_stage.loc[top, "customer_pct"]), "percent", period, f"the share of {top} customers",
    )]
    if {"at risk", "churned"} <= set(by_stage.index):
        risk, gone = by_stage.loc["at risk"], by_stage.loc["churned"]
        found.append(Finding(
            "at_risk_customer_pct",
            f"{_fmt(risk['n_customers'], 'count', locale=locale)} customers ({_fmt(risk['customer_pct'], 'percent', locale=locale)}) are at risk "
            f"and {_fmt(gone['n_customers'], 'count', locale=locale)} ({_fmt(gone['customer_pct'], 'percent', locale=locale)}) have churned ({period}).",
            float(risk["customer_pct"]), "percent", period, "the share of customers at risk",
        ))
    if flows is not None and len(flows):
        flow = flows.loc[flows["n_customers"].idxmax()]
        span = f"from {_day(earlier)} to {_day(snapshot)}"
        found.append(Finding(
            "largest_flow_customers",
            f"The largest flow to act on: {_fmt(flow['n_customers'], 'count', locale=locale)} customers went from {flow['from_stage']} to "
            f"{flow['to_stage']}, {_fmt(flow['from_pct'], 'percent', locale=locale)} of those {flow['from_stage']} on {_day(earlier)} ({span}).",
            float(flow["n_customers"]), "count", span, f"the customers going from {flow['from_stage']} to {flow['to_stage']}",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- sales forecast

BASELINE_METHOD = "seasonal_naive"  # the backtest's baseline (``forecast.backtest``)


def forecast_findings(
    weekly_forecast: pd.DataFrame,
    backtest: pd.DataFrame,
    *,
    series_end,
    currency: str = "GBP",
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of the sales forecast: revenue of the next weeks with its interval, the backtest error of each series.

    Parameters
    ----------
    weekly_forecast : ``forecast.fit_forecast`` of weekly revenue: ``forecast``, ``lower_80``, ``upper_80``
        (dataset currency), indexed (or with a column) ``period_date``, the week's Sunday.
    backtest : ``forecast.backtest`` rows of every series: ``series``, ``method``, ``origin_date``, ``smape_pct``,
        ``coverage_80_pct`` (0-100).
    series_end : the last day of the revenue series the forecast starts after.
    """
    weeks = _indexed_by(weekly_forecast, "period_date")
    found = []
    if len(weeks):
        first_day = pd.Timestamp(weeks.index[0]) - pd.Timedelta(days=6)
        period = f"weeks from {_day(first_day)} to {_day(weeks.index[-1])}, revenue up to {_day(series_end)}"
        total = float(weeks["forecast"].sum())
        found.append(Finding(
            "forecast_revenue_next_weeks",
            f"Revenue of the next {len(weeks)} weeks is forecast at {_fmt(total, 'money', currency, locale)}; the weekly 80% intervals add up to "
            f"{_fmt(weeks['lower_80'].sum(), 'money', currency, locale)} to {_fmt(weeks['upper_80'].sum(), 'money', currency, locale)} ({period}).",
            total, "money", period, f"the revenue forecast of the next {len(weeks)} weeks",
        ))
    else:
        found.append(Finding("forecast_revenue_next_weeks", f"No weekly revenue forecast was made (revenue up to {_day(series_end)}).", None, "money"))
    for series, part in backtest.groupby("series", sort=False):
        model = part[part["method"] != BASELINE_METHOD]
        baseline = part[part["method"] == BASELINE_METHOD]
        if model.empty:
            continue
        origins = pd.to_datetime(part["origin_date"])
        span = f"{origins.nunique()} origins from {_day(origins.min())} to {_day(origins.max())}"
        against = "" if baseline.empty else f", against {_fmt(baseline['smape_pct'].mean(), 'percent', locale=locale)} for the seasonal-naive forecast"
        coverage = model["coverage_80_pct"].mean()
        inside = "" if pd.isna(coverage) else f"; {_fmt(coverage, 'percent', locale=locale)} of the actual values fell inside its 80% interval"
        found.append(Finding(
            f"backtest_{series}_smape_pct",
            f"In the backtest of the {series} forecast ({span}), {str(model['method'].iloc[0]).upper()} was off by "
            f"{_fmt(model['smape_pct'].mean(), 'percent', locale=locale)} on average (sMAPE){against}{inside}.",
            float(model["smape_pct"].mean()), "percent", span, f"the {series} backtest error (sMAPE)",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- satisfaction


def satisfaction_findings(
    nps_overall: pd.DataFrame,
    *,
    first_day,
    last_day,
    confidence: float = 0.95,
    csat_trend: pd.DataFrame | None = None,
    grain: str = "month",
    drivers: pd.DataFrame | None = None,
    churn_start=None,
    churn_days: int | None = None,
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of the surveys: NPS with its interval, the latest period's CSAT, whether the NPS score predicts churn.

    Parameters
    ----------
    nps_overall : ``satisfaction.nps_summary``: ``n_responses``, ``promoters_pct``, ``detractors_pct``, ``nps``,
        ``nps_lower``, ``nps_upper`` (points, -100 to 100).
    first_day, last_day : the first and last survey day; ``confidence`` the level of the intervals.
    csat_trend : ``satisfaction.csat_summary(grain=...)``: ``period_start``, ``n_responses``, ``csat_pct``, ``csat_lower``, ``csat_upper``.
    drivers : ``satisfaction.churn_drivers``: ``score``, ``auc``, ``odds_ratio_per_point``; churn is no order in the
        ``churn_days`` from ``churn_start``.
    """
    period = f"surveys {span_text(first_day, last_day)}"
    level = _level(confidence)
    row = nps_overall.iloc[0] if len(nps_overall) else None
    if row is None or not row["n_responses"]:
        return [Finding("nps", f"No survey response to compute an NPS from ({period}).", None, "number", period)]
    found = [Finding(
        "nps",
        f"NPS is {_score(row['nps'], locale, sign=True)} ({level} interval {_score(row['nps_lower'], locale)} to "
        f"{_score(row['nps_upper'], locale)}) from {_fmt(row['n_responses'], 'count', locale=locale)} responses: "
        f"{_fmt(row['promoters_pct'], 'percent', locale=locale)} promoters, {_fmt(row['detractors_pct'], 'percent', locale=locale)} detractors ({period}).",
        float(row["nps"]), "number", period, "the NPS",
    )]
    if csat_trend is not None and len(csat_trend):
        latest = csat_trend.sort_values("period_start").iloc[-1]
        word = PERIOD_WORDS.get(grain, grain)
        when = f"{word} from {_day(latest['period_start'])} (surveys up to {_day(last_day)})"
        found.append(Finding(
            "csat_latest_pct",
            f"CSAT (a score of 4 or 5 of 5) was {_fmt(latest['csat_pct'], 'percent', locale=locale)} ({level} interval "
            f"{_fmt(latest['csat_lower'], 'percent', locale=locale)} to {_fmt(latest['csat_upper'], 'percent', locale=locale)}) from "
            f"{_fmt(latest['n_responses'], 'count', locale=locale)} responses in the latest {when}.",
            float(latest["csat_pct"]), "percent", when, f"the CSAT of the latest {word}",
        ))
    score = None if drivers is None or drivers.empty else _row(drivers, "score", "nps_score")
    if score is not None and pd.notna(score["auc"]) and churn_start is not None:
        span = f"latest score before {_day(churn_start)}, churn = no order in the {churn_days} days from it"
        found.append(Finding(
            "nps_score_churn_auc",
            f"A customer's NPS score tells who will churn with an AUC of {_fmt(score['auc'], 'number', locale=locale)} (0.5 is no signal); "
            f"each point more multiplies the odds of churning by {_fmt(score['odds_ratio_per_point'], 'number', locale=locale)} ({span}).",
            float(score["auc"]), "number", span, "the AUC of the NPS score for churn",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- behaviour


def _pair_names(pair: pd.Series, named: tuple[str, str]) -> tuple[str, str]:
    """The two items of a basket pair, by name where the pair carries names (``product_a``, ``product_b``)."""
    return tuple(str(pair[n]) if n in pair.index and pd.notna(pair[n]) else str(pair[i]) for n, i in zip(named, ("item_a", "item_b")))


def behaviour_findings(
    product_pairs: pd.DataFrame,
    category_pairs: pd.DataFrame | None = None,
    repeat: pd.DataFrame | None = None,
    gap_summary: pd.DataFrame | None = None,
    *,
    first_day,
    last_day,
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of purchase behaviour: the strongest product pair by lift, repeat buying, the strongest category pair.

    Parameters
    ----------
    product_pairs, category_pairs : ``behaviour.basket_affinity``: ``item_a``, ``item_b``, ``n_baskets``, ``lift``,
        ``confidence_a_to_b`` (0-1), product pairs optionally with ``product_a``, ``product_b`` (names).
    repeat : ``behaviour.repeat_purchase_rate``: ``n_customers``, ``repeat_purchase_pct`` (0-100).
    gap_summary : ``behaviour.inter_purchase_summary``: ``p50_days``.
    first_day, last_day : the first and last order day.
    """
    period = f"orders {span_text(first_day, last_day)}"
    found = []
    if len(product_pairs):
        pair = product_pairs.loc[product_pairs["lift"].idxmax()]
        a, b = _pair_names(pair, ("product_a", "product_b"))
        found.append(Finding(
            "top_product_pair_lift",
            f"The strongest product pair is {a} with {b}: bought together {_fmt(pair['lift'], 'number', locale=locale)} times as often as "
            f"chance would give (lift), in {_fmt(pair['n_baskets'], 'count', locale=locale)} baskets ({period}).",
            float(pair["lift"]), "number", period, "the lift of the strongest product pair",
        ))
    else:
        found.append(Finding("top_product_pair_lift", f"No product pair was bought together in enough baskets to be shown ({period}).", None, "number", period))
    if repeat is not None and len(repeat) and repeat["n_customers"].iloc[0]:
        row = repeat.iloc[0]
        median = None if gap_summary is None or gap_summary.empty else gap_summary["p50_days"].iloc[0]
        half = "" if median is None or pd.isna(median) else f"; half of the repeat purchases came within {_fmt(median, 'days', locale=locale)} of the previous one"
        found.append(Finding(
            "repeat_purchase_pct",
            f"{_fmt(row['repeat_purchase_pct'], 'percent', locale=locale)} of the {_fmt(row['n_customers'], 'count', locale=locale)} buying customers "
            f"bought at least twice{half} ({period}).",
            float(row["repeat_purchase_pct"]), "percent", period, "the repeat-purchase rate",
        ))
    if category_pairs is not None and len(category_pairs):
        pair = category_pairs.loc[category_pairs["lift"].idxmax()]
        a, b = _pair_names(pair, ("category_a", "category_b"))
        found.append(Finding(
            "top_category_pair_lift",
            f"Among categories, {a} and {b} go together most (lift {_fmt(pair['lift'], 'number', locale=locale)}): "
            f"{_fmt(pair['confidence_a_to_b'], 'share', locale=locale)} of the baskets with {a} also hold {b} ({period}).",
            float(pair["lift"]), "number", period, "the lift of the strongest category pair",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- recommendations


def recommendation_findings(
    comparison: pd.DataFrame,
    also: pd.DataFrame | None = None,
    *,
    split_time,
    data_end,
    k: int,
    model: str = "item_cf",
    baseline: str = "popularity",
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of the recommendations: the hit rate on the holdout against popularity, precision and recall, the strongest also-bought pair.

    Parameters
    ----------
    comparison : ``recommend.compare_models``: ``model``, ``n_customers``, ``precision_at_k``, ``recall_at_k``,
        ``hit_rate`` (0-1), ``coverage_pct`` (0-100); empty when the holdout was too small to evaluate.
    also : ``recommend.also_bought`` with names: ``product_name``, ``also_bought_product_name``, ``similarity``,
        ``n_customers_both``, ``also_bought_pct`` (0-100 of the buyers of the first product).
    split_time, data_end : the holdout is the orders from ``split_time`` to the day before ``data_end``.
    k : the cut-off of the metrics (top-k recommendations).
    """
    holdout = f"trained on orders before {_day(split_time)}, holdout from {_day(split_time)} to {_day(pd.Timestamp(data_end) - pd.Timedelta(days=1))}"
    found = []
    rows = comparison.set_index("model") if len(comparison) else None
    if rows is not None and model in rows.index:
        ours = rows.loc[model]
        other = rows.loc[baseline] if baseline in rows.index else None
        against = "" if other is None else f", against {_fmt(other['hit_rate'], 'share', locale=locale)} for the most popular products"
        found.append(Finding(
            "recommendation_hit_rate",
            f"For {_fmt(ours['hit_rate'], 'share', locale=locale)} of the {_fmt(ours['n_customers'], 'count', locale=locale)} holdout customers, "
            f"at least one of their top {k} recommendations was bought in the holdout{against} ({holdout}).",
            float(ours["hit_rate"]), "share", holdout, f"the hit rate of the top {k} recommendations",
        ))
        versus = "" if other is None else (f" (most popular products: {_fmt(other['precision_at_k'], 'share', locale=locale)} and "
                                           f"{_fmt(other['recall_at_k'], 'share', locale=locale)})")
        found.append(Finding(
            "recommendation_precision_at_k",
            f"Precision at {k} is {_fmt(ours['precision_at_k'], 'share', locale=locale)} and recall at {k} "
            f"{_fmt(ours['recall_at_k'], 'share', locale=locale)}{versus}; the recommendations use "
            f"{_fmt(ours['coverage_pct'], 'percent', locale=locale)} of the catalogue ({holdout}).",
            float(ours["precision_at_k"]), "share", holdout, f"the precision at {k}",
        ))
    if also is not None and len(also):
        pair = also.loc[also["similarity"].idxmax()]
        period = f"orders before {_day(data_end)}"
        found.append(Finding(
            "top_also_bought_pct",
            f"The closest 'bought X, also bought Y' pair: {_fmt(pair['also_bought_pct'], 'percent', locale=locale)} of the customers who bought "
            f"{pair['product_name']} also bought {pair['also_bought_product_name']} ({_fmt(pair['n_customers_both'], 'count', locale=locale)} "
            f"customers; {period}).",
            float(pair["also_bought_pct"]), "percent", period, "the also-bought share of the closest pair",
        ))
    if not found:
        found.append(Finding("recommendation_hit_rate", f"The recommendations were not evaluated and no pair is bought together often enough to list ({holdout}).",
                             None, "share", holdout))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- attribution


def attribution_findings(
    comparison: pd.DataFrame,
    *,
    first_day,
    last_day,
    n_journeys: int | None = None,
    n_converted: int | None = None,
    conversion_window_days: int | None = None,
    model: str = "markov",
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of channel attribution: the channel with the largest share, how much that share differs between models, the journeys.

    Parameters
    ----------
    comparison : ``attribution.compare_models``: ``model``, ``channel``, ``conversions``, ``share_pct`` (0-100) and,
        for the Markov rows, ``share_low_pct`` / ``share_high_pct`` (bootstrap 95% interval).
    first_day, last_day : the first and last touch day.
    n_journeys, n_converted : journeys, and those that converted within ``conversion_window_days`` of their last touch.
    model : the model whose largest channel is named.
    """
    period = f"touches {span_text(first_day, last_day)}"
    chosen = comparison[comparison["model"] == model]
    found = []
    if chosen.empty or not chosen["conversions"].sum():
        found.append(Finding("top_channel_share_pct", f"No conversion to attribute to a channel ({period}).", None, "percent", period))
    else:
        top = chosen.loc[chosen["share_pct"].idxmax()]
        interval = ("" if pd.isna(top.get("share_low_pct")) else
                    f" (95% interval {_fmt(top['share_low_pct'], 'percent', locale=locale)} to {_fmt(top['share_high_pct'], 'percent', locale=locale)})")
        found.append(Finding(
            "top_channel_share_pct",
            f"{_capital(_words(top['channel']))} gets the largest share of conversions under the {_words(model)} model: "
            f"{_fmt(top['share_pct'], 'percent', locale=locale)}{interval} of {_fmt(chosen['conversions'].sum(), 'count', locale=locale)} conversions ({period}).",
            float(top["share_pct"]), "percent", period, f"{_words(top['channel'])}'s share of conversions ({_words(model)})",
        ))
        shares = comparison[comparison["channel"] == top["channel"]].set_index("model")["share_pct"].dropna()
        if len(shares) > 1:
            low, high = shares.idxmin(), shares.idxmax()
            spread = float(shares.max() - shares.min())
            found.append(Finding(
                "top_channel_share_spread_points",
                f"Across the {len(shares)} models, {_words(top['channel'])}'s share runs from {_fmt(shares[low], 'percent', locale=locale)} "
                f"({_words(low)}) to {_fmt(shares[high], 'percent', locale=locale)} ({_words(high)}), "
                f"{_fmt(spread, 'percent', locale=locale).removesuffix('%')} points apart ({period}).",
                spread, "number", period, f"the spread of {_words(top['channel'])}'s share between models (points)",
            ))
    if n_journeys:
        window = f" within {conversion_window_days} days of their last touch" if conversion_window_days is not None else ""
        found.append(Finding(
            "journey_conversion_share",
            f"{_fmt(n_converted or 0, 'count', locale=locale)} of {_fmt(n_journeys, 'count', locale=locale)} journeys "
            f"({_fmt((n_converted or 0) / n_journeys, 'share', locale=locale)}) ended in an order{window} ({period}).",
            (n_converted or 0) / n_journeys, "share", period, "the share of journeys that converted",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- experiments


def experiment_findings(
    conversion: pd.DataFrame,
    revenue: pd.DataFrame | None = None,
    srm: pd.DataFrame | None = None,
    *,
    experiment_id: str,
    first_day,
    last_day,
    alpha: float = 0.05,
    currency: str = "GBP",
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of an A/B test read-out: a broken sample ratio first, then the conversion and the revenue effects with their intervals.

    Parameters
    ----------
    conversion : ``experiments.conversion_test``: ``rate_control_pct``, ``rate_treatment_pct``, ``absolute_lift_pct``,
        ``absolute_lift_low_pct``, ``absolute_lift_high_pct`` (percentage points), ``p_value``, ``is_significant``.
    revenue : ``experiments.revenue_test``: ``revenue_per_user_control_amount``, ``revenue_per_user_treatment_amount``,
        ``difference_amount``, ``bootstrap_low_amount``, ``bootstrap_high_amount`` (dataset currency), ``p_value``, ``is_significant``.
    srm : ``experiments.sample_ratio_check``: ``is_mismatch``, ``p_value``.
    first_day, last_day : the first and last assignment day; ``alpha`` the two-sided level (intervals are 1 - alpha).
    """
    period = f"experiment {experiment_id}, participants assigned {span_text(first_day, last_day)}"
    level = _level(1 - alpha)
    at = f"at the {_level(alpha)} level"
    found = []
    if srm is not None and len(srm) and bool(srm["is_mismatch"].iloc[0]):
        found.append(Finding(
            "srm_p_value",
            f"The split between the variants does not match the plan (sample-ratio p-value {_fmt(srm['p_value'].iloc[0], 'p_value', locale=locale)}): "
            f"the assignment is broken, so the effects below must not be trusted ({period}).",
            float(srm["p_value"].iloc[0]), "p_value", period, "the sample-ratio p-value",
        ))
    row = conversion.iloc[0]
    verdict = "significant" if bool(row["is_significant"]) else "not significant"
    found.append(Finding(
        "conversion_lift_points",
        f"Treatment converted {_fmt(row['rate_treatment_pct'], 'percent', locale=locale)} of participants against "
        f"{_fmt(row['rate_control_pct'], 'percent', locale=locale)} for control: {_points(row['absolute_lift_pct'], locale)} "
        f"({level} interval {_points(row['absolute_lift_low_pct'], locale)} to {_points(row['absolute_lift_high_pct'], locale)}), "
        f"{verdict} {at} (p-value {_fmt(row['p_value'], 'p_value', locale=locale)}; {period}).",
        float(row["absolute_lift_pct"]), "percent", period, "the conversion lift (points)",
    ))
    if revenue is not None and len(revenue):
        money_row = revenue.iloc[0]
        verdict = "significant" if bool(money_row["is_significant"]) else "not significant"
        found.append(Finding(
            "revenue_per_participant_difference",
            f"Revenue per participant was {_fmt(money_row['revenue_per_user_treatment_amount'], 'money', currency, locale)} in treatment against "
            f"{_fmt(money_row['revenue_per_user_control_amount'], 'money', currency, locale)} in control: "
            f"{_signed(money_row['difference_amount'], 'money', currency, locale)} ({level} bootstrap interval "
            f"{_fmt(money_row['bootstrap_low_amount'], 'money', currency, locale)} to {_fmt(money_row['bootstrap_high_amount'], 'money', currency, locale)}), "
            f"{verdict} {at} (p-value {_fmt(money_row['p_value'], 'p_value', locale=locale)}; {period}).",
            float(money_row["difference_amount"]), "money", period, "the revenue difference per participant",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- sales pipeline


def pipeline_findings(
    win_rate: pd.DataFrame,
    weighted: pd.DataFrame,
    conversion: pd.DataFrame,
    *,
    first_day,
    last_day,
    currency: str = "GBP",
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of the sales pipeline: the win rate with its interval, the open pipeline, the stage converting least.

    Parameters
    ----------
    win_rate : ``pipeline.win_rates`` overall (one row): ``n_closed``, ``n_won``, ``win_rate_pct``, ``win_rate_low_pct``,
        ``win_rate_high_pct`` (0-100, Wilson interval).
    weighted : ``pipeline.weighted_pipeline``: ``stage``, ``n_open``, ``open_amount``, ``weighted_amount`` (dataset currency)
        and, when the data has them, ``n_without_amount`` and ``n_amount_filled`` (open deals without an amount, and of
        those the ones the dataset's expected-amount rule valued).
    conversion : ``pipeline.stage_conversion``: ``stage``, ``n_reached``, ``conversion_to_next_pct`` (0-100, missing for won).
    first_day, last_day : the first and last creation day of the opportunities read.
    """
    period = f"opportunities created {span_text(first_day, last_day)}"
    found = []
    row = win_rate.iloc[0] if len(win_rate) else None
    if row is None or not row["n_closed"]:
        found.append(Finding("win_rate_pct", f"No opportunity has closed yet, so there is no win rate ({period}).", None, "percent", period))
    else:
        found.append(Finding(
            "win_rate_pct",
            f"{_fmt(row['win_rate_pct'], 'percent', locale=locale)} of the {_fmt(row['n_closed'], 'count', locale=locale)} closed opportunities "
            f"were won ({_fmt(row['n_won'], 'count', locale=locale)}; 95% interval {_fmt(row['win_rate_low_pct'], 'percent', locale=locale)} "
            f"to {_fmt(row['win_rate_high_pct'], 'percent', locale=locale)}; {period}).",
            float(row["win_rate_pct"]), "percent", period, "the win rate",
        ))
    n_open = int(weighted["n_open"].sum()) if len(weighted) else 0
    if n_open:
        without = int(weighted["n_without_amount"].sum()) if "n_without_amount" in weighted else 0
        filled = int(weighted["n_amount_filled"].sum()) if "n_amount_filled" in weighted else 0
        unvalued = without - filled
        notes = []
        if filled:
            notes.append(f"{_fmt(filled, 'count', locale=locale)} valued by the dataset's expected-amount rule")
        if unvalued:
            notes.append(f"{_fmt(unvalued, 'count', locale=locale)} without an amount, counted but not valued")
        found.append(Finding(
            "open_pipeline_amount",
            f"The open pipeline holds {_fmt(n_open, 'count', locale=locale)} opportunities worth "
            f"{_fmt(weighted['open_amount'].sum(), 'money', currency, locale)}, or {_fmt(weighted['weighted_amount'].sum(), 'money', currency, locale)} "
            f"weighted by the win rate from their stage ({'; '.join([*notes, period])}).",
            float(weighted["open_amount"].sum()), "money", period, "the open pipeline value",
        ))
    else:
        found.append(Finding("open_pipeline_amount", f"No opportunity is open ({period}).", 0.0, "money", period, "the open pipeline value"))
    steps = conversion.reset_index(drop=True)
    rates = steps["conversion_to_next_pct"].iloc[:-1]
    if rates.notna().any() and steps["n_reached"].iloc[0]:
        position = int(rates.astype("float64").fillna(float("inf")).to_numpy().argmin())
        stage, following = steps.loc[position, "stage"], steps.loc[position + 1, "stage"]
        found.append(Finding(
            "lowest_stage_conversion_pct",
            f"The stage converting least is {stage}: {_fmt(steps.loc[position, 'conversion_to_next_pct'], 'percent', locale=locale)} of the "
            f"{_fmt(steps.loc[position, 'n_reached'], 'count', locale=locale)} opportunities that reached {stage} went on to {following} ({period}).",
            float(steps.loc[position, "conversion_to_next_pct"]), "percent", period, f"the conversion from {stage} to {following}",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- cleansing


def cleansing_findings(
    row_counts: pd.DataFrame,
    by_reason: pd.DataFrame,
    duplicates: pd.DataFrame,
    accuracy: pd.DataFrame | None = None,
    *,
    built_day,
    locale: str = "en_GB",
) -> list[Finding]:
    """Findings of the cleansing build: rows in, clean and quarantined with the top reason, duplicates merged, the merge's accuracy.

    Parameters
    ----------
    row_counts : ``CleansingResult.row_counts``: ``source``, ``rows_in``, ``rows_clean``, ``rows_quarantined``.
    by_reason : ``CleansingResult.quarantine_by_reason``: ``source``, ``column_name``, ``reason``, ``action``
        (``row``: the row was set aside; ``value``: a value was blanked), ``n_entries``.
    duplicates : ``quality.duplicates_summary``: its totals row (``source`` ``all``) holds ``n_records``,
        ``n_customers``, ``n_records_merged``.
    accuracy : ``quality.pairwise_accuracy`` (the ``all``/``all`` row: ``precision``, ``recall``, ``f1``, 0-1);
        empty without ground truth.
    built_day : the day the warehouse was built.
    """
    period = f"build of {_day(built_day)}"
    rows_in = int(row_counts["rows_in"].sum())
    clean = int(row_counts["rows_clean"].sum())
    quarantined = int(row_counts["rows_quarantined"].sum())
    sources = f"{_fmt(row_counts['source'].nunique(), 'count', locale=locale)} source{'s' if row_counts['source'].nunique() != 1 else ''}"
    if not rows_in:
        return [Finding("rows_quarantined_share", f"No row was read from the {sources} ({period}).", None, "share", period)]
    rows_set_aside = by_reason[by_reason["action"] == "row"] if len(by_reason) else by_reason
    if quarantined and len(rows_set_aside):
        reasons = rows_set_aside.groupby("reason")["n_entries"].sum().sort_values(ascending=False, kind="stable")
        top = str(reasons.index[0])
        where = rows_set_aside[rows_set_aside["reason"] == top].iloc[0]
        why = (f"; the most common reason is {_words(top)} ({_fmt(reasons.iloc[0], 'count', locale=locale)} rows, "
               f"most in {where['column_name']} of {where['source']}; {period})")
    else:
        why = f" ({period})"
    found = [Finding(
        "rows_quarantined_share",
        f"Of {_fmt(rows_in, 'count', locale=locale)} rows read from {sources}, {_fmt(clean, 'count', locale=locale)} are clean and "
        f"{_fmt(quarantined, 'count', locale=locale)} ({_fmt(quarantined / rows_in, 'share', locale=locale)}) quarantined{why}.",
        quarantined / rows_in, "share", period, "the share of rows quarantined",
    )]
    totals = _row(duplicates, "source", "all") if len(duplicates) else None
    if totals is not None and totals["n_records"]:
        merged = int(totals["n_records_merged"])
        n_records = int(totals["n_records"])
        if merged:
            sentence = (f"The {_fmt(n_records, 'count', locale=locale)} customer records resolve into {_fmt(totals['n_customers'], 'count', locale=locale)} "
                        f"customers: {_fmt(merged, 'count', locale=locale)} records ({_fmt(merged / n_records, 'share', locale=locale)}) were duplicates "
                        f"of another and merged ({period}).")
        else:
            sentence = f"No duplicate was found: each of the {_fmt(n_records, 'count', locale=locale)} customer records is a customer of its own ({period})."
        found.append(Finding("customer_records_merged", sentence, merged, "count", period, "the customer records merged"))
    overall = _row(accuracy, "source_a", "all") if accuracy is not None and len(accuracy) else None
    if overall is not None and pd.notna(overall["precision"]):
        found.append(Finding(
            "merge_f1",
            f"Against the dataset's ground truth, {_fmt(overall['precision'], 'share', locale=locale)} of the record pairs merged are the same person "
            f"(precision) and {_fmt(overall['recall'], 'share', locale=locale)} of the true pairs were merged (recall), F1 "
            f"{_fmt(overall['f1'], 'number', locale=locale)} ({period}).",
            float(overall["f1"]), "number", period, "the F1 of the merge",
        ))
    return found[:MAX_RESULT_SENTENCES]


# ----------------------------------------------------------------------------- dashboard

_PAGE_STATES = {"fresh": "up to date", "stale": "out of date", "failed": "shown from an older run (the newest failed)", "missing": "no successful run"}


def dashboard_findings(statuses: pd.DataFrame, headline_rows: pd.DataFrame, *, max_analyses: int = 2) -> list[Finding]:
    """Findings of a page that shows other runs' results: how fresh they are and the headline numbers of the first ones.

    Parameters
    ----------
    statuses : one row per analysis shown: ``analysis``, ``state`` (``fresh``, ``stale``, ``failed``, ``missing``;
        ``pages.PageStatus``) and ``finished_time`` (when its latest good run finished; missing when none).
    headline_rows : the headline numbers of those runs (``headlines.latest_headlines``): ``analysis``, ``label``,
        ``value`` (already written for people), ``period``.
    max_analyses : how many analyses' headline numbers to state (one sentence each, at most two numbers).
    """
    shown = statuses.reset_index(drop=True)
    usable = shown[shown["state"] != "missing"]
    finished = pd.to_datetime(usable["finished_time"], utc=True).dropna()
    if finished.empty:
        runs = "no good run yet"
    elif _day(finished.min()) == _day(finished.max()):
        runs = f"latest good runs finished on {_day(finished.max())}"
    else:
        runs = f"latest good runs finished {span_text(finished.min(), finished.max())}"
    fresh = shown[shown["state"] == "fresh"]
    others = "; ".join(f"{row.analysis}: {_PAGE_STATES.get(row.state, row.state)}" for row in shown[shown["state"] != "fresh"].itertuples())
    found = [Finding(
        "n_results_fresh",
        f"{len(fresh)} of the {len(shown)} analyses this page shows have up-to-date results ({'; '.join([*([others] if others else []), runs])}).",
        len(fresh), "count", runs, "the analyses with up-to-date results",
    )]
    named = 0
    for analysis in usable["analysis"]:
        numbers = headline_rows[headline_rows["analysis"] == analysis].head(2)
        if numbers.empty or named >= max_analyses:
            continue
        named += 1
        stated = "; ".join(f"{row.label}: {row.value} ({row.period})" for row in numbers.itertuples())
        found.append(Finding(f"headline_{analysis}", f"From the latest {analysis} report: {stated}.", None, "text", str(numbers["period"].iloc[0])))
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
