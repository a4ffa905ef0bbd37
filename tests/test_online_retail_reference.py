"""crm_analytics on the Online Retail II workbook agrees with plain-pandas reference values and with lifetimes.

The orders are built from the workbook by ``reference_online_retail`` (one row per invoice, London time,
cancellations negative); the crm_analytics functions get that frame, the reference functions restate
their documented definitions in pandas. The BG/NBD parameters are compared with those lifetimes 0.11.3
fitted on the same summary (recorded in ``reference_online_retail.LIFETIMES_BGNBD``, with how).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from crm_analytics import clv, cohort, forecast, segmentation

sys.path.insert(0, str(Path(__file__).parent))
import reference_online_retail as reference  # noqa: E402


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    return reference.read_lines()


@pytest.fixture(scope="module")
def orders(lines) -> pd.DataFrame:
    return reference.orders(lines)


@pytest.fixture(scope="module")
def customer_orders(orders) -> pd.DataFrame:
    """Orders that carry a customer: the input of the customer-level analyses."""
    return orders[orders["customer_id"].notna()].reset_index(drop=True)


def same_to_significant_digits(value: float, expected: float, digits: int = 4) -> bool:
    """Whether ``value`` is within half a unit of the ``digits``-th significant digit of ``expected``."""
    unit = 10 ** (math.floor(math.log10(abs(expected))) - digits + 1)
    return abs(value - expected) <= unit / 2


def test_the_workbook_as_the_reference_reads_it(lines, orders):
    assert len(lines) == 14_269 + 20_497 - 441, "the 441 lines of 2010-12-01..09 are in both sheets once"
    assert len(orders) == 1_742 and orders["order_id"].is_unique
    assert reference.customer_count(lines) == 262
    assert orders["order_time"].min() == pd.Timestamp("2009-12-01 09:28") and orders["order_time"].max() < reference.AS_OF
    cancellations = orders["order_id"].str.startswith("C")
    assert (orders.loc[cancellations, "order_amount"] < 0).all() and (orders.loc[~cancellations, "order_amount"] >= 0).all()


def test_rfm_matches_the_reference(orders):
    expected = reference.rfm_values(orders)
    result = segmentation.rfm(orders, as_of=reference.AS_OF.isoformat()).set_index("customer_id")
    assert len(result) == len(expected) == 260, "two customers only cancelled: no purchase, no row"
    pd.testing.assert_frame_equal(result[["recency_days", "frequency", "monetary"]], expected, check_dtype=False,
                                  check_names=False, check_index_type=False, rtol=1e-9)


def test_monthly_retention_matrix_matches_the_reference(customer_orders):
    expected = reference.retention_matrix(customer_orders)
    result = cohort.retention_matrix(customer_orders, period="M", value="customers")
    assert expected.shape == (25, 25)
    pd.testing.assert_frame_equal(result, expected, check_dtype=False, check_names=False,
                                  check_index_type=False, check_column_type=False, rtol=1e-12)


def test_monthly_revenue_matches_the_reference(lines, orders, customer_orders):
    expected = reference.monthly_revenue(lines)
    result = forecast.sales_series(orders, freq="M")["revenue_amount"]
    assert len(expected) == 25 and expected.index[0] == pd.Timestamp("2009-12-01")
    pd.testing.assert_series_equal(result, expected, check_names=False, check_freq=False, check_index_type=False, rtol=1e-9)
    of_customers = reference.monthly_revenue(lines, customers_only=True)
    assert (of_customers != expected).any(), "lines without a customer carry revenue"
    result = forecast.sales_series(customer_orders, freq="M")["revenue_amount"]
    pd.testing.assert_series_equal(result, of_customers, check_names=False, check_freq=False, check_index_type=False, rtol=1e-9)


def test_bgnbd_summary_and_parameters_match_the_reference_and_lifetimes(customer_orders):
    expected = reference.bgnbd_summary(customer_orders)
    summary = clv.summarize(customer_orders, calibration_end=reference.CALIBRATION_END, time_unit="W")
    pd.testing.assert_frame_equal(summary[["frequency", "recency", "T"]], expected, check_dtype=False, check_names=False,
                                  check_index_type=False, rtol=1e-12)
    params = clv.BetaGeo().fit(summary).params_
    differing = {name: (params[name], value) for name, value in reference.LIFETIMES_BGNBD.items()
                 if not same_to_significant_digits(params[name], value)}
    assert differing == {}, "BG/NBD parameters (crm_analytics, lifetimes 0.11.3) differ in the first 4 significant digits"
