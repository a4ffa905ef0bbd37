"""Orders without a customer (anonymous orders) never form one extra "customer" in a customer-level analysis.

Every function gets the same orders twice: with two anonymous orders and without them. Its customer-level
result must be the same, so the anonymous orders are left out rather than grouped under a missing id.
"""

from __future__ import annotations

import pandas as pd
import pytest

from crm_analytics import churn, clv, cohort, lifecycle, recommend
from crm_analytics import segmentation as seg


def _orders(with_guests: bool) -> pd.DataFrame:
    rows = [("o1", "a", "2024-01-05", 10.0), ("o2", "a", "2024-02-05", 20.0), ("o3", "b", "2024-01-10", 5.0),
            ("o4", "b", "2024-03-01", 3.0), ("o5", "c", "2024-02-20", 9.0)]
    if with_guests:
        rows += [("g1", None, "2024-01-11", 7.0), ("g2", None, "2024-02-11", 8.0)]
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "order_time", "order_amount"])
    return frame.astype({"customer_id": "string"}).assign(order_time=lambda t: pd.to_datetime(t["order_time"]))


ANALYSES = {
    "cohort.retention_matrix": lambda o: cohort.retention_matrix(o, period="M", value="customers"),
    "cohort.retention_matrix(revenue)": lambda o: cohort.retention_matrix(o, period="M", value="revenue"),
    "cohort.cohort_table": lambda o: cohort.cohort_table(o, period="M"),
    "clv.summarize": lambda o: clv.summarize(o, calibration_end="2024-03-31"),
    "segmentation.rfm": lambda o: seg.rfm(o, as_of="2024-04-01"),
    "lifecycle.lifecycle_stages": lambda o: lifecycle.lifecycle_stages(o, as_of="2024-04-01"),
    "churn.churn_labels": lambda o: churn.churn_labels(o, as_of="2024-02-01", window_days=60),
    "churn.churn_features": lambda o: churn.churn_features(o, as_of="2024-03-15"),
    "recommend.purchases": lambda o: recommend.purchases(o, pd.DataFrame({"order_id": o["order_id"], "product_id": "P"})),
}


@pytest.mark.parametrize("name", list(ANALYSES))
def test_anonymous_orders_change_no_customer_level_result(name):
    analysis = ANALYSES[name]
    with_guests, without = analysis(_orders(True)), analysis(_orders(False))
    pd.testing.assert_frame_equal(with_guests, without, check_dtype=False, check_index_type=False)
    ids = with_guests.index if "customer_id" not in with_guests.columns else with_guests["customer_id"]
    if ids.name == "customer_id":
        assert pd.Series(ids).notna().all()
