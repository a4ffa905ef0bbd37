"""Reference values for the Online Retail II workbook, computed with plain pandas (no crm_analytics code).

The workbook ``data/external/online_retail_ii/online_retail_II_europe.xlsx`` (see its PROVENANCE.md) holds
invoice lines of a UK online retailer in two yearly sheets. Tests compare what crm_analytics computes (from a
frame of orders here, and from the warehouse that ``crm-analytics run-all --dataset online_retail_ii`` builds)
with the figures below. Each function restates, in pandas, the definition documented by the crm_analytics
function it checks; keep the two in step.

How the workbook becomes data (the rules every comparison assumes):

- **Lines**: both sheets. They overlap on 2010-12-01..09; a line of the second sheet that is an exact
  copy of a line of the first (all eight columns) is dropped. Repeated identical lines *within* a sheet
  are kept (the n-th copy in one sheet matches the n-th copy in the other), so a line scanned twice on an
  invoice still counts twice.
- **Times** are the workbook's, Europe/London local wall time, never converted.
- **Orders**: one per invoice. ``order_time`` is the invoice's earliest line time (one invoice's lines
  span two minutes), ``order_amount`` the sum of ``Quantity * Price`` in GBP, negative for cancellations
  (invoices ``C...``, whose quantities are negative). Non-merchandise stock codes (POST, M, C2, ...) stay
  in: they are part of what the customer paid.
- **Customers** are the ``Customer ID`` values written as integers (``"12417"``); lines without one count
  in revenue but in no customer figure.

Run as a script to write the BG/NBD summary used for the lifetimes parameters below::

    .venv/bin/python tests/reference_online_retail.py /tmp/online_retail_summary.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

WORKBOOK = Path(__file__).resolve().parents[1] / "data" / "external" / "online_retail_ii" / "online_retail_II_europe.xlsx"
SHEETS = ("Year 2009-2010", "Year 2010-2011")
AS_OF = pd.Timestamp("2011-12-10")  # the snapshot moment: midnight after the last day of data (2011-12-09)
CALIBRATION_END = pd.Timestamp("2011-12-09")  # last day of the BG/NBD calibration period (inclusive): all the data
WEEK_DAYS = 7.0

# BG/NBD parameters of lifetimes 0.11.3 (BetaGeoFitter, penalizer_coef=0.0: scipy BFGS with autograd gradients, its default) on
# bgnbd_summary(orders(read_lines())) (calibration_end 2011-12-09, weeks; frequency, recency, T), to 6
# significant digits. lifetimes does not install beside pandas 3, so they were computed once in a side
# environment (Python 3.11.7; pip added lifetimes' dependencies autograd 1.9.1 and dill):
#
#   python3 -m venv /tmp/lifetimes-env
#   /tmp/lifetimes-env/bin/pip install lifetimes==0.11.3 pandas==1.5.3 numpy==1.26.4 scipy==1.11.4
#   .venv/bin/python tests/reference_online_retail.py /tmp/online_retail_summary.csv
#   /tmp/lifetimes-env/bin/python -c "import pandas as pd; from lifetimes import BetaGeoFitter; \
#       s = pd.read_csv('/tmp/online_retail_summary.csv'); \
#       m = BetaGeoFitter(penalizer_coef=0.0).fit(s['frequency'], s['recency'], s['T']); \
#       print({k: float(f'{v:.6g}') for k, v in m.params_.items()})"
#
# (lifetimes reported a mean negative log-likelihood of 5.47502 per customer on its rescaled time axis.)
LIFETIMES_BGNBD = {"r": 0.829239, "alpha": 11.8738, "a": 0.0586629, "b": 1.1455}


def read_lines(path: str | Path = WORKBOOK) -> pd.DataFrame:
    """All invoice lines of both sheets, the copies of the overlapping days removed.

    Returns
    -------
    pandas.DataFrame
        ``Invoice`` (string), ``StockCode`` (string), ``Description``, ``Quantity`` (int), ``InvoiceDate``
        (naive London local time), ``Price`` (GBP per unit), ``customer_id`` (string, ``<NA>`` when the
        line has none), ``Country``, ``amount`` (``Quantity * Price``, GBP), ``sheet``; first sheet first,
        each in file order.
    """
    sheets = pd.read_excel(path, sheet_name=list(SHEETS), dtype={"Invoice": str, "StockCode": str}, engine="openpyxl")
    columns = list(sheets[SHEETS[0]].columns)
    numbered = []
    for name in SHEETS:
        sheet = sheets[name].assign(sheet=name)
        # the n-th identical line of a sheet: a copy across sheets has the same number, a repeat within one does not
        sheet["copy_number"] = sheet.groupby(columns, dropna=False).cumcount()
        numbered.append(sheet)
    lines = pd.concat(numbered, ignore_index=True).drop_duplicates(subset=[*columns, "copy_number"], keep="first")
    lines = lines.drop(columns="copy_number").reset_index(drop=True)
    lines["customer_id"] = lines.pop("Customer ID").astype("Int64").astype("string")
    lines["amount"] = lines["Quantity"] * lines["Price"]
    return lines


def orders(lines: pd.DataFrame) -> pd.DataFrame:
    """One row per invoice (purchase or cancellation).

    Returns
    -------
    pandas.DataFrame
        ``order_id`` (the invoice), ``customer_id`` (string or ``<NA>``), ``order_time`` (earliest line
        time, London), ``order_amount`` (GBP, negative for cancellations), sorted by ``order_time``, ``order_id``.
    """
    grouped = lines.groupby("Invoice", sort=False)
    out = pd.DataFrame({
        "customer_id": grouped["customer_id"].first(),
        "order_time": grouped["InvoiceDate"].min(),
        "order_amount": grouped["amount"].sum(),
    }).rename_axis("order_id").reset_index()
    return out.sort_values(["order_time", "order_id"]).reset_index(drop=True)


def customer_count(lines: pd.DataFrame) -> int:
    """Number of distinct customers (``Customer ID`` values) on any line, cancellations included."""
    return int(lines["customer_id"].dropna().nunique())


def rfm_values(orders_frame: pd.DataFrame, *, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    """Recency, frequency and monetary value per customer, as ``crm_analytics.segmentation.rfm`` defines them.

    Orders with ``order_time <= as_of`` and a customer count. A purchase is an order with amount >= 0.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (sorted), customers with at least one purchase: ``recency_days`` (whole
        days from the last purchase to ``as_of``, rounded down), ``frequency`` (purchase orders) and
        ``monetary`` (net revenue: purchases plus the negative cancellations, GBP).
    """
    seen = orders_frame[(orders_frame["order_time"] <= as_of) & orders_frame["customer_id"].notna()]
    purchases = seen[seen["order_amount"] >= 0]
    out = pd.DataFrame({
        "last_purchase_time": purchases.groupby("customer_id")["order_time"].max(),
        "frequency": purchases.groupby("customer_id").size(),
    })
    out["monetary"] = seen.groupby("customer_id")["order_amount"].sum()
    out["recency_days"] = (as_of - out["last_purchase_time"]).dt.days
    return out[["recency_days", "frequency", "monetary"]].sort_index()


def retention_matrix(orders_frame: pd.DataFrame) -> pd.DataFrame:
    """Monthly cohort retention, as ``crm_analytics.cohort.retention_matrix(period="M", value="customers")``.

    A customer's cohort is the calendar month of their first purchase (amount > 0); they are active in a
    month when they have a purchase in it. Orders without a customer are left out.

    Returns
    -------
    pandas.DataFrame
        Index ``cohort_date`` (first day of the cohort month), columns ``0, 1, ...`` (months since the
        cohort month): the share of the cohort active in that month (0..1); NaN after the last month
        with a purchase in the data.
    """
    purchases = orders_frame[(orders_frame["order_amount"] > 0) & orders_frame["customer_id"].notna()]
    month = purchases["order_time"].dt.year * 12 + purchases["order_time"].dt.month - 1
    active = pd.DataFrame({"customer_id": purchases["customer_id"], "month": month}).drop_duplicates()
    active["cohort"] = active.groupby("customer_id")["month"].transform("min")
    active["period_number"] = active["month"] - active["cohort"]
    counts = active.groupby(["cohort", "period_number"]).size().unstack(fill_value=0)
    shares = counts.div(counts[0], axis=0)
    last_month = active["month"].max()
    shares = shares.reindex(columns=range(int(last_month - active["cohort"].min()) + 1), fill_value=0)
    observed = np.add.outer(shares.index.to_numpy(), shares.columns.to_numpy()) <= last_month
    shares = shares.where(observed).astype("float64")
    shares.index = pd.to_datetime({"year": shares.index // 12, "month": shares.index % 12 + 1, "day": 1})
    shares.index.name, shares.columns.name = "cohort_date", "period_number"
    return shares


def monthly_revenue(lines: pd.DataFrame, *, customers_only: bool = False) -> pd.Series:
    """Net revenue per calendar month (London time), cancellations negative, non-merchandise lines included.

    Parameters
    ----------
    customers_only : bool
        False: every line, with or without a customer (the shop's revenue). True: only lines with a
        ``Customer ID`` (what a warehouse would hold with the dataset key ``anonymous_orders: quarantine``).

    Returns
    -------
    pandas.Series
        Indexed by the month's first day (``period_date``), GBP.
    """
    if customers_only:
        lines = lines[lines["customer_id"].notna()]
    month = lines["InvoiceDate"].dt.to_period("M").dt.start_time
    revenue = lines.groupby(month)["amount"].sum()
    revenue.index.name = "period_date"
    return revenue.rename("revenue_amount")


def bgnbd_summary(orders_frame: pd.DataFrame, *, calibration_end: pd.Timestamp = CALIBRATION_END) -> pd.DataFrame:
    """Per-customer BG/NBD inputs, as ``crm_analytics.clv.summarize(..., time_unit="W")`` defines them.

    Purchases are orders with amount >= 0 and a customer, on days up to ``calibration_end``; a
    customer's purchase days are the distinct calendar days with one.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (sorted): ``frequency`` (purchase days after the first), ``recency``
        (first to last purchase day, weeks) and ``T`` (first purchase day to ``calibration_end``, weeks).
    """
    purchases = orders_frame[(orders_frame["order_amount"] >= 0) & orders_frame["customer_id"].notna()]
    days = pd.DataFrame({"customer_id": purchases["customer_id"], "day": purchases["order_time"].dt.floor("D")})
    days = days[days["day"] <= calibration_end.floor("D")].drop_duplicates()
    per_customer = days.groupby("customer_id")["day"]
    first, last = per_customer.min(), per_customer.max()
    return pd.DataFrame({
        "frequency": per_customer.size() - 1,
        "recency": (last - first).dt.days / WEEK_DAYS,
        "T": (calibration_end.floor("D") - first).dt.days / WEEK_DAYS,
    }).sort_index()


def main(argv: list[str]) -> None:
    """Write ``bgnbd_summary`` of the workbook to the CSV file named in ``argv`` (for the lifetimes fit)."""
    if len(argv) != 1:
        raise SystemExit("usage: reference_online_retail.py SUMMARY.csv")
    bgnbd_summary(orders(read_lines())).to_csv(argv[0], float_format="%.17g")


if __name__ == "__main__":
    main(sys.argv[1:])
