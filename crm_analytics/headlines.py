"""Headline numbers of a run, written to ``headline.json`` in its run folder for the report index.

The file is the contract between a run and the index (:mod:`crm_analytics.report_index` reads it):
a JSON list of objects ``{"label": str, "value": str, "period": str}``, where ``value`` is already
written for people (money in the dataset's currency and locale, shares as percentages, counts with
thousands separators) and ``period`` names the period the number covers (``"snapshot 2026-01-01"``,
``"orders 2023-01-01 to 2025-12-31"``). Anything else may write the same file; the index shows
nothing for a run folder without one.

The runner calls :func:`write_headline` when a run succeeds, before the run folder is renamed. The
numbers come from the tables the notebook persisted (``tables/*.parquet``, ``results.save_table``),
never from the notebook itself. One function per analysis (:data:`HEADLINES`) turns a
:class:`RunTables` into :class:`Headline` items; an analysis without one (or whose function finds
nothing) falls back to the numbers of its findings block (``tables/findings.parquet``,
:func:`findings_headlines`). A run with neither gets no file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from crm_analytics import dates, findings, kpi_catalogue, money, paths, tables

HEADLINE_FILE = "headline.json"
MAX_FINDINGS_HEADLINES = 3  # numbers taken from a findings block when an analysis has no headline function
CHURN_THRESHOLD = 0.5  # churn probability from which a scored customer counts as likely to churn
_OFF_TARGET = ("amber", "red")


@dataclasses.dataclass(frozen=True)
class Headline:
    """One headline number: what it is (``label``), the number written for people (``value``), its ``period``."""

    label: str
    value: str
    period: str


@dataclasses.dataclass(frozen=True)
class RunTables:
    """What a headline function reads: a run folder's persisted tables and how to write its numbers.

    Attributes
    ----------
    run_dir : Path
        The run folder (its ``tables/`` holds the Parquet files).
    parameters : mapping
        The run's parameters (``as_of``, ``window_days``, ``grain``...).
    currency, locale : str
        The dataset's ISO 4217 currency and Babel locale, for money and separators.
    span : DataRange or None
        First and last order of the warehouse the run read, when it could be read.
    """

    run_dir: Path
    parameters: Mapping[str, Any]
    currency: str
    locale: str
    span: dates.DataRange | None = None

    def table(self, name: str) -> pd.DataFrame | None:
        """The persisted table ``tables/<name>.parquet``, or ``None`` when the run did not write it."""
        path = self.run_dir / "tables" / f"{name}.parquet"
        return pd.read_parquet(path) if path.is_file() else None

    # -- numbers written for people, in the dataset's locale

    def count(self, value: float) -> str:
        """``14,558`` (``14.558`` in ``pt_BR``)."""
        import babel.numbers

        return babel.numbers.format_decimal(int(round(float(value))), locale=self.locale)

    def percent(self, value: float) -> str:
        """A share already in percent (0-100): one decimal (``37.4%``), two below one percent (``0.04%``)."""
        import babel.numbers

        places = 2 if 0 < abs(float(value)) < 1 else 1
        return babel.numbers.format_decimal(float(value), format="#,##0." + "0" * places, locale=self.locale) + "%"

    def decimal(self, value: float, places: int = 2) -> str:
        """A plain number with ``places`` decimals: ``0.93``."""
        import babel.numbers

        return babel.numbers.format_decimal(float(value), format="0." + "0" * places, locale=self.locale)

    def money(self, value: float) -> str:
        """An amount in the dataset's currency: ``£86,161``."""
        return money.format_money(float(value), self.currency, self.locale)

    def given_or_derived_day(self, name: str, derive: Callable[[dates.DataRange], pd.Timestamp]) -> str:
        """The run's date parameter ``name`` when given, else the date :mod:`crm_analytics.dates` derives, as ``YYYY-MM-DD``."""
        given = str(self.parameters.get(name) or "").strip()
        if given:
            return pd.Timestamp(given).strftime("%Y-%m-%d")
        return derive(self.span).strftime("%Y-%m-%d") if self.span is not None else "derived from the data"


def _span_text(first: object, last: object) -> str:
    return f"orders {pd.Timestamp(first):%Y-%m-%d} to {pd.Timestamp(last):%Y-%m-%d}"


def _period_label(start: object, grain: str) -> str:
    """``2025-12`` for a month, ``2025 Q4`` for a quarter, ``week of 2025-12-22``, ``2025-12-31`` for a day."""
    moment = pd.Timestamp(start)
    if grain == "month":
        return f"month {moment:%Y-%m}"
    if grain == "quarter":
        return f"quarter {moment.year} Q{moment.quarter}"
    if grain == "week":
        return f"week of {moment:%Y-%m-%d}"
    if grain == "year":
        return f"year {moment.year}"
    return f"{moment:%Y-%m-%d}"


# ----------------------------------------------------------------------------- one function per analysis


def overview_headlines(run: RunTables) -> list[Headline]:
    """Orders, customers and net revenue in the warehouse (``table_inventory``, ``orders_over_time``)."""
    inventory = run.table("table_inventory")
    if inventory is None:
        return []
    rows = inventory.set_index("table")
    if "orders" in rows.index and pd.notna(rows.loc["orders", "first_time"]):
        period = _span_text(rows.loc["orders", "first_time"], rows.loc["orders", "last_time"])
    elif run.span is not None:
        period = _span_text(run.span.first_time, run.span.last_time)
    else:
        period = "whole warehouse"
    found = [Headline(f"{name.capitalize()} in the warehouse", run.count(rows.loc[name, "rows"]), period)
             for name in ("orders", "customers") if name in rows.index]
    series = run.table("orders_over_time")
    if series is not None and "net_revenue_amount" in series and len(series):
        found.append(Headline("Net revenue", run.money(series["net_revenue_amount"].sum()), period))
    return found


def segmentation_headlines(run: RunTables) -> list[Headline]:
    """Customers segmented and the segment with the largest revenue share (``segment_summary``)."""
    summary = run.table("segment_summary")
    if summary is None or summary.empty:
        return []
    period = "snapshot " + run.given_or_derived_day("as_of", dates.default_as_of)
    top = summary.loc[summary["revenue_pct"].idxmax()]
    return [
        Headline("Customers segmented", run.count(summary["n_customers"].sum()), period),
        Headline(
            "Largest segment by revenue",
            f"{top['rfm_segment']}: {run.percent(top['revenue_pct'])} of revenue from {run.percent(top['customer_pct'])} of customers",
            period,
        ),
    ]


def _latest_per_kpi(values: pd.DataFrame) -> pd.DataFrame:
    """Each KPI's row for all customers at its own grain's latest period."""
    own = values[(values["segment"] == "all") & (values["channel"] == "all") & (values["grain"] == values["kpi_grain"])]
    return own[own["period_start"] == own.groupby("kpi_id")["period_start"].transform("max")]


def kpi_headlines(run: RunTables) -> list[Headline]:
    """Revenue of the latest period, how many KPIs are off target, and the alerts (``kpi_values``, ``alerts``)."""
    values = run.table("kpi_values")
    found: list[Headline] = []
    if values is not None and not values.empty:
        grains = list(dict.fromkeys(values["grain"]))
        wanted = str(run.parameters.get("grain") or "month")
        grain = wanted if wanted in grains else grains[-1]
        revenue = values[(values["kpi_id"] == "revenue") & (values["grain"] == grain)
                         & (values["segment"] == "all") & (values["channel"] == "all")]
        if not revenue.empty:
            last = revenue.loc[revenue["period_start"].idxmax()]
            found.append(Headline("Revenue", run.money(last["value"]), _period_label(last["period_start"], grain)))
        latest = _latest_per_kpi(values)
        latest = latest[~latest["status"].isin(kpi_catalogue.UNTARGETED_STATUSES)]  # off target of those with one
        if not latest.empty:
            off = latest[latest["status"].isin(_OFF_TARGET)]
            counts = ", ".join(f"{(off['status'] == s).sum()} {s}" for s in _OFF_TARGET)
            found.append(Headline("KPIs off target", f"{len(off)} of {len(latest)} ({counts})", "latest complete period of each KPI"))
    alerts = run.table("alerts")
    if alerts is not None:
        period = _period_label(alerts["period_start"].max(), str(alerts["grain"].iloc[0])) if len(alerts) else "latest periods"
        found.append(Headline("KPI alerts", run.count(len(alerts)), period))
    return found


def cleansing_headlines(run: RunTables) -> list[Headline]:
    """Rows read from the sources and the share quarantined (``quality_row_counts``)."""
    counts = run.table("quality_row_counts")
    if counts is None or counts.empty:
        return []
    period = _span_text(run.span.first_time, run.span.last_time) if run.span is not None else "latest build"
    rows_in = int(counts["rows_in"].sum())
    quarantined = int(counts["rows_quarantined"].sum())
    share = 100 * quarantined / rows_in if rows_in else 0.0
    return [
        Headline("Rows read", f"{run.count(rows_in)} from {run.count(counts['source'].nunique())} sources", period),
        Headline("Rows quarantined", f"{run.count(quarantined)} ({run.percent(share)})", period),
    ]


def churn_headlines(run: RunTables) -> list[Headline]:
    """Customers scored, those likely to churn and the model's ROC AUC (``churn_scores``, ``metrics``)."""
    scores = run.table("churn_scores")
    if scores is None or scores.empty:
        return []
    window = int(run.parameters.get("window_days") or 90)
    scored_at = run.given_or_derived_day("as_of", lambda span: dates.churn_as_of(span, window_days=window))
    period = f"scored {scored_at}, next {window} days"
    likely = int((scores["churn_probability"] >= CHURN_THRESHOLD).sum())
    found = [
        Headline("Customers scored", run.count(len(scores)), period),
        Headline("Likely to churn", f"{run.count(likely)} ({run.percent(100 * likely / len(scores))})", period),
    ]
    metrics = run.table("metrics")
    if metrics is not None and "roc_auc" in set(metrics["metric"]):
        auc = metrics.set_index("metric").loc["roc_auc", "value"]
        found.append(Headline("Model ROC AUC (1 is perfect, 0.5 is chance)", run.decimal(auc), "held-out customers"))
    return found


def _label(text: str) -> str:
    """A finding's label as a headline label: ``the win rate`` -> ``Win rate``."""
    words = text.strip()
    words = words[4:] if words.lower().startswith("the ") else words
    return words[:1].upper() + words[1:]


def findings_headlines(run: RunTables) -> list[Headline]:
    """The numbers of the run's findings block (``tables/findings.parquet``: ``key``, ``sentence``, ``value``, ``unit``,
    ``period``, ``label``), written in their unit: at most :data:`MAX_FINDINGS_HEADLINES`, changes and warnings left out."""
    found = run.table(findings.TABLE)
    if found is None or found.empty:
        return []
    numbers = found[found["value"].notna() & ~found["key"].astype(str).str.startswith("change_") & (found["key"] != "warnings")]
    items = []
    for row in numbers.head(MAX_FINDINGS_HEADLINES).itertuples():
        unit = row.unit if row.unit in tables.UNITS else "number"
        value = tables.format_value(float(row.value), unit, currency=run.currency, locale=run.locale)
        label = _label(row.label) if isinstance(row.label, str) and row.label.strip() else tables.header(row.key, unit)
        items.append(Headline(label, value, row.period if isinstance(row.period, str) else ""))
    return items


HEADLINES: dict[str, Callable[[RunTables], list[Headline]]] = {
    "overview": overview_headlines,
    "segmentation": segmentation_headlines,
    "kpi": kpi_headlines,
    "cleansing": cleansing_headlines,
    "churn": churn_headlines,
}


# ----------------------------------------------------------------------------- the file


def warehouse_span(warehouse: str | Path) -> dates.DataRange | None:
    """First and last order of the warehouse file ``warehouse``; ``None`` when it cannot be read or holds no orders."""
    from crm_analytics import warehouse as warehouse_module

    if not Path(warehouse).is_file():
        return None
    try:
        con = warehouse_module.connect(warehouse)
    except Exception:  # noqa: BLE001 - a warehouse being rebuilt: the periods then say less
        return None
    try:
        return dates.data_range(con.table("orders"))
    except Exception:  # noqa: BLE001 - no orders table, or no order with a time
        return None
    finally:
        con.disconnect()


def compute_headlines(analysis: str, run_dir: str | Path, *, parameters: Mapping[str, Any] | None = None,
                      dataset: str | None = None) -> list[Headline]:
    """The headline numbers of one run folder of ``analysis``: its :data:`HEADLINES` function's, else its findings' numbers.

    Parameters
    ----------
    analysis : str
        The notebook's stem (a key of :data:`HEADLINES`).
    run_dir : str or Path
        The run folder, holding ``tables/*.parquet``.
    parameters : mapping, optional
        The run's parameters; ``warehouse_path`` (default: the dataset's warehouse) gives the orders' span.
    dataset : str, optional
        The dataset whose currency and locale write the money (default: the project default).
    """
    function = HEADLINES.get(analysis)
    parameters = dict(parameters or {})
    currency, locale = money.currency_and_locale(dataset=dataset or parameters.get("dataset") or None)
    warehouse = parameters.get("warehouse_path") or paths.warehouse_path(dataset or None)
    span = warehouse_span(warehouse) if function is not None else None  # only the analyses' own functions read the orders' span
    run = RunTables(Path(run_dir), parameters, currency, locale, span)
    return (function(run) if function is not None else []) or findings_headlines(run)


def write_headline(analysis: str, run_dir: str | Path, *, parameters: Mapping[str, Any] | None = None,
                   dataset: str | None = None) -> Path | None:
    """Write ``<run_dir>/headline.json`` (the contract of this module's docstring); ``None`` when there is nothing to write.

    Raises whatever reading the tables raises: the caller decides that a headline never fails a run.
    """
    found = compute_headlines(analysis, run_dir, parameters=parameters, dataset=dataset)
    if not found:
        return None
    target = Path(run_dir) / HEADLINE_FILE
    staging = target.with_name(f".{HEADLINE_FILE}.tmp")
    staging.write_text(json.dumps([dataclasses.asdict(h) for h in found], ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(staging, target)
    return target


def latest_headlines(analyses, *, dataset: str | None = None) -> pd.DataFrame:
    """The headline numbers of the latest good run of each of ``analyses`` (``outputs/<dataset>/<analysis>/latest``).

    Returns
    -------
    pandas.DataFrame
        ``analysis``, ``label``, ``value`` (written for people), ``period``: one row per number, in the order of
        ``analyses``; none for an analysis without a good run or a ``headline.json``.
    """
    rows = [{"analysis": analysis, **dataclasses.asdict(item)}
            for analysis in analyses for item in read_headline(paths.latest_run_dir(analysis, dataset or None))]
    return pd.DataFrame(rows, columns=["analysis", "label", "value", "period"])


def read_headline(run_dir: str | Path | None) -> list[Headline]:
    """The headline numbers of a run folder (its ``headline.json``); ``[]`` when it has none or it is malformed.

    Items that are not objects with the three text fields ``label``, ``value`` and ``period`` are left out.
    """
    if run_dir is None:
        return []
    try:
        items = json.loads((Path(run_dir) / HEADLINE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(items, list):
        return []
    fields = [field.name for field in dataclasses.fields(Headline)]
    return [
        Headline(**{name: item[name] for name in fields})
        for item in items
        if isinstance(item, dict) and all(isinstance(item.get(name), str) for name in fields)
    ]
