"""Tests of crm_analytics.lifecycle: each rule on hand-made customers, boundaries, transitions."""

from __future__ import annotations

import ibis
import matplotlib
import pandas as pd
import pytest

from crm_analytics import lifecycle as lc
from crm_analytics.frames import MissingColumnError

matplotlib.use("Agg")

AS_OF = "2024-12-31"

# customer -> purchase dates (negative amount: refund) and the stage expected at AS_OF with the default rules.
CASES = {
    "new": ([("2024-12-01", 10.0)], "new"),
    "active": ([("2024-08-01", 10.0), ("2024-11-15", 10.0)], "active"),
    "loyal": ([("2024-02-01", 10.0), ("2024-05-01", 10.0), ("2024-08-01", 10.0), ("2024-12-01", 10.0)], "loyal"),
    "comeback": ([("2023-01-01", 10.0), ("2024-12-20", 10.0)], "reactivated"),
    "at_risk": ([("2024-08-01", 10.0)], "at risk"),
    "churned": ([("2024-01-01", 10.0)], "churned"),
    "edge_90": ([("2024-07-01", 10.0), ("2024-10-02", 10.0)], "active"),  # exactly 90 days: still active
    "edge_91": ([("2024-07-01", 10.0), ("2024-10-01", 10.0)], "at risk"),  # 91 days
    "refund_late": ([("2024-01-01", 10.0), ("2024-12-30", -10.0)], "churned"),  # a refund is not a purchase
    "future": ([("2025-01-05", 10.0)], "prospect"),  # only an order after as_of: still a prospect
}


def _orders() -> pd.DataFrame:
    rows = [(f"{c}-{i}", c, pd.Timestamp(d), a)
            for c, (orders, _) in CASES.items() for i, (d, a) in enumerate(orders)]
    return pd.DataFrame(rows, columns=["order_id", "customer_id", "order_time", "order_amount"])


def _customers() -> pd.DataFrame:
    ids = [*CASES, "prospect", "signs_up_later"]
    signup = ["2022-06-01"] * len(CASES) + ["2024-06-01", "2025-02-01"]
    return pd.DataFrame({"customer_id": ids, "signup_time": pd.to_datetime(signup)})


@pytest.mark.parametrize("wrap", [lambda df: df, ibis.memtable], ids=["pandas", "ibis"])
def test_stages_hand_made_cases(wrap):
    stages = lc.lifecycle_stages(wrap(_orders()), as_of=AS_OF, customers=wrap(_customers())).set_index("customer_id")
    expected = {c: stage for c, (_, stage) in CASES.items()} | {"prospect": "prospect"}
    assert stages["lifecycle_stage"].astype(str).to_dict() == expected
    assert "signs_up_later" not in stages.index
    assert stages.loc["edge_90", "days_since_last_order"] == 90
    assert pd.isna(stages.loc["prospect", "days_since_last_order"])
    assert stages.loc["loyal", "n_orders"] == 4


def test_without_customers_only_buyers_and_anonymous_rows_ignored():
    anonymous = pd.DataFrame({"order_id": ["x"], "customer_id": [None], "order_time": [pd.Timestamp("2024-12-01")], "order_amount": [5.0]})
    stages = lc.lifecycle_stages(pd.concat([_orders(), anonymous], ignore_index=True), as_of=AS_OF)
    assert stages["customer_id"].notna().all()
    assert "prospect" not in set(stages["lifecycle_stage"].astype(str))
    assert "future" not in set(stages["customer_id"])


def test_parameters_change_the_rules():
    stages = lc.lifecycle_stages(_orders(), as_of=AS_OF, loyal_min_orders=2, new_days=10).set_index("customer_id")
    assert stages.loc["active", "lifecycle_stage"] == "loyal"
    assert stages.loc["new", "lifecycle_stage"] == "active"
    wider = lc.lifecycle_stages(_orders(), as_of=AS_OF, churn_days=400).set_index("customer_id")
    assert wider.loc["churned", "lifecycle_stage"] == "at risk"
    assert wider.loc["comeback", "lifecycle_stage"] == "reactivated"  # 719-day gap still > 400
    with pytest.raises(ValueError, match="active_days"):
        lc.lifecycle_stages(_orders(), as_of=AS_OF, active_days=200, churn_days=100)


def test_input_not_mutated_and_missing_column():
    orders = _orders()
    copy = orders.copy()
    lc.lifecycle_stages(orders, as_of=AS_OF)
    pd.testing.assert_frame_equal(orders, copy)
    with pytest.raises(MissingColumnError, match="order_time"):
        lc.lifecycle_stages(orders.drop(columns="order_time"), as_of=AS_OF)
    with pytest.raises(MissingColumnError, match="signup_time"):
        lc.lifecycle_stages(orders, as_of=AS_OF, customers=_customers().drop(columns="signup_time"))


def test_stage_counts_cover_every_stage():
    counts = lc.stage_counts(lc.lifecycle_stages(_orders(), as_of=AS_OF, customers=_customers()))
    assert counts["lifecycle_stage"].tolist() == list(lc.STAGES)
    assert counts["n_customers"].sum() == len(CASES) + 1
    assert counts["customer_pct"].sum() == pytest.approx(100)


def test_stage_transitions():
    before = lc.lifecycle_stages(_orders(), as_of="2024-09-30", customers=_customers())
    after = lc.lifecycle_stages(_orders(), as_of=AS_OF, customers=_customers())
    table = lc.stage_transitions(before, after).set_index(["from_stage", "to_stage"])
    assert len(table) == (len(lc.STAGES) + 1) * len(lc.STAGES)
    assert table["n_customers"].sum() == len(after)
    # "new" was a prospect at 2024-09-30 (signed up 2022) and bought in December.
    assert table.loc[("prospect", "new"), "n_customers"] >= 1
    # "at_risk" (one order 2024-08-01) was new at 2024-09-30.
    assert table.loc[("new", "at risk"), "n_customers"] == 1
    rows = table.groupby(level="from_stage")["from_pct"].sum()
    assert all(v == pytest.approx(100) or v == 0 for v in rows)
    assert lc.plot_stage_transitions(table.reset_index()) is not None
    matplotlib.pyplot.close("all")


def test_transition_plot_keeps_stage_order():
    after = lc.lifecycle_stages(_orders(), as_of=AS_OF, customers=_customers())
    ax = lc.plot_stage_transitions(lc.stage_transitions(after, after))
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert shown == list(lc.STAGES)
    matplotlib.pyplot.close("all")
