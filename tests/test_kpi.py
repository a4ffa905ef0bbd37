"""KPI computations on hand-made frames, catalogue validation, tracking and alerts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crm_analytics import datasets, kpi
from crm_analytics.frames import MissingColumnError
from crm_analytics.kpi_catalogue import CatalogueError, parse_catalogue, parse_targets, with_targets

T = pd.Timestamp
START, END = "2024-01-01", "2024-04-01"


def _orders():
    return pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3", "o4", "o5", "o6"],
            "customer_id": ["c1", "c1", "c1", "c2", "c3", "c3"],
            "order_time": [T("2024-01-05"), T("2024-02-10"), T("2024-02-20"), T("2024-01-15"), T("2024-02-03"), T("2024-03-01")],
            "order_amount": [100.0, 50.0, -20.0, 200.0, 30.0, 70.0],
            "is_refund": [False, False, True, False, False, False],
            "channel": ["web", "web", "web", "store", "web", "web"],
        }
    )


def _tables():
    h = pd.Timedelta(hours=1)
    tickets_open = [T("2024-01-02"), T("2024-01-20"), T("2024-02-01"), T("2024-03-01")]
    return {
        "orders": _orders(),
        "customers": pd.DataFrame(
            {"customer_id": ["c1", "c2", "c3"], "signup_time": [T("2024-01-03"), T("2024-01-14"), T("2024-02-01")], "acquisition_channel": ["social", "store", "social"]}
        ),
        "surveys": pd.DataFrame(
            {
                "survey_id": [f"s{i}" for i in range(8)],
                "customer_id": ["c1", "c2", "c3", "c1", "c2", "c1", "c2", "c3"],
                "survey_time": [T("2024-01-10")] * 5 + [T("2024-02-10")] * 3,
                "nps_score": pd.array([10, 9, 7, 3, 6, 10, 10, 5], dtype="Int64"),
                "csat_score": pd.array([5, 4, 3, None, 2, 5, 5, 1], dtype="Int64"),
            }
        ),
        "support_tickets": pd.DataFrame(
            {
                "ticket_id": ["t1", "t2", "t3", "t4"],
                "customer_id": ["c1", "c1", "c2", "c1"],
                "opened_time": tickets_open,
                "first_response_time": [t + d * h for t, d in zip(tickets_open, [2, 4, 6, 1])],
                "resolved_time": [tickets_open[0] + 10 * h, pd.NaT, tickets_open[2] + 30 * h, tickets_open[3] + 5 * h],
                "category": ["delivery", "delivery", "refund", "delivery"],
                "contact_channel": ["phone", "chat", "phone", "phone"],
                "n_contacts": pd.array([1, None, 2, 1], dtype="Int64"),
                "is_escalated": [False, True, False, False],
            }
        ),
        "opportunities": pd.DataFrame(
            {
                "opportunity_id": ["p1", "p2", "p3"],
                "customer_id": ["c1", "c2", "c3"],
                "lead_source": ["web_form", "referral", "web_form"],
                "created_time": [T("2024-01-10"), T("2024-01-20"), T("2024-02-15")],
                "expected_amount": [1000.0, 500.0, 300.0],
                "status": ["won", "lost", "open"],
                "closed_time": [T("2024-02-09"), T("2024-03-05"), pd.NaT],
            }
        ),
        "campaigns": pd.DataFrame(
            {
                "campaign_id": ["k1", "k2"],
                "channel": ["email", "sms"],
                "start_date": [T("2024-01-01"), T("2024-01-30")],
                "end_date": [T("2024-01-10"), T("2024-02-02")],
                "spend_amount": [1000.0, 400.0],
            }
        ),
        "touchpoints": pd.DataFrame(
            {
                "touchpoint_id": ["tp1", "tp2", "tp3"],
                "customer_id": ["c1", "c2", "c3"],
                "campaign_id": ["k1", "k1", "k2"],
                "channel": ["email", "email", "sms"],
                "touch_time": [T("2024-01-03"), T("2024-01-02"), T("2024-01-31")],
            }
        ),
        "web_events": pd.DataFrame(
            {
                "customer_id": ["c1", "c1", "c2", "c3", "c3"],
                "session_id": ["s1", "s1", "s2", "s3", "s3"],
                "event_time": [T("2024-01-05 10:00"), T("2024-01-05 10:05"), T("2024-01-06"), T("2024-01-07"), T("2024-01-07 00:01")],
                "event_name": ["visit", "purchase", "visit", "visit", "product_view"],
                "traffic_channel": ["email", "email", "direct", "direct", "direct"],
            }
        ),
    }


SEGMENTS = pd.DataFrame({"customer_id": ["c1", "c2", "c3"], "segment": ["A", "B", "A"]})


def _entry(computation, params=None, **fields):
    entry = {
        "id": "k",
        "name": "K",
        "definition": "test",
        "unit": "count",
        "direction": "higher",
        "grain": "month",
        "computation": computation,
        "params": params or {},
    }
    entry.update(fields)
    return entry


def _values(computation, params=None, *, tables=None, grain="month", dimensions=(), **fields):
    catalogue = parse_catalogue({"kpis": [_entry(computation, params, dimensions=list(dimensions), **fields)]}, kpi.COMPUTATIONS)
    result = kpi.compute_kpis(tables or _tables(), catalogue, grain=grain, start=START, end=END, segments=SEGMENTS, dimensions=dimensions)
    return result


def _series(result, segment="all", channel="all"):
    rows = result[(result.segment == segment) & (result.channel == channel)]
    return {str(p.date())[:7]: round(v, 4) for p, v in zip(rows.period_start, rows.value)}


ORDERS_NO_REFUND = {"table": "orders", "time_col": "order_time", "where": {"is_refund": False}}


def test_distinct_count_active_customers_with_breakdowns():
    result = _values("distinct_count", {**ORDERS_NO_REFUND, "channel_col": "channel"}, dimensions=("segment", "channel"))
    assert _series(result) == {"2024-01": 2, "2024-02": 2, "2024-03": 1}
    assert _series(result, segment="A") == {"2024-01": 1, "2024-02": 2, "2024-03": 1}
    assert _series(result, segment="B") == {"2024-01": 1}
    assert _series(result, channel="store") == {"2024-01": 1}


def test_sum_value_revenue_nets_refunds():
    result = _values("sum_value", {"table": "orders", "time_col": "order_time", "value_col": "order_amount", "channel_col": "channel"}, dimensions=("channel",))
    assert _series(result) == {"2024-01": 300.0, "2024-02": 60.0, "2024-03": 70.0}
    assert _series(result, channel="web") == {"2024-01": 100.0, "2024-02": 60.0, "2024-03": 70.0}


def test_row_count_and_mean_value():
    assert _series(_values("row_count", ORDERS_NO_REFUND)) == {"2024-01": 2, "2024-02": 2, "2024-03": 1}
    aov = _values("mean_value", {**ORDERS_NO_REFUND, "value_col": "order_amount"}, unit="money")
    assert _series(aov) == {"2024-01": 150.0, "2024-02": 40.0, "2024-03": 70.0}


def test_retention_and_churn():
    retention = _values("period_retention", {"where": {"is_refund": False}}, unit="pct")
    assert _series(retention) == {"2024-02": 50.0, "2024-03": 50.0}
    churn = _values("period_retention", {"where": {"is_refund": False}, "churn": True}, unit="pct", direction="lower")
    assert _series(churn) == {"2024-02": 50.0, "2024-03": 50.0}


def test_anonymous_orders_count_in_no_customer_kpi():
    # an anonymous order in every month: nobody to count as active, retained, lost or returning
    tables = _tables()
    anonymous = pd.DataFrame({"order_id": ["a1", "a2", "a3"], "customer_id": [None, None, None],
                              "order_time": [T("2024-01-09"), T("2024-02-09"), T("2024-03-09")], "order_amount": [5.0, 6.0, 7.0],
                              "is_refund": [False, False, False], "channel": ["web", "web", "store"]})
    tables["orders"] = pd.concat([tables["orders"], anonymous], ignore_index=True)
    no_refund = {"where": {"is_refund": False}}
    for computation, params in [("period_retention", no_refund), ("period_retention", {**no_refund, "churn": True}), ("returning_share", no_refund),
                                ("distinct_count", {**ORDERS_NO_REFUND, "key_col": "customer_id"})]:
        with_anonymous = _values(computation, params, tables=tables, unit="pct", dimensions=("segment",))
        without = _values(computation, params, unit="pct", dimensions=("segment",))
        assert _series(with_anonymous) == _series(without), computation
        assert set(with_anonymous.segment) == set(without.segment) | ({"unknown"} if computation == "distinct_count" else set()), computation


def test_returning_share():
    result = _values("returning_share", {"where": {"is_refund": False}}, unit="pct")
    assert _series(result) == {"2024-01": 0.0, "2024-02": 50.0, "2024-03": 100.0}


def test_realised_clv_is_cumulative_revenue_per_customer():
    result = _values("cumulative_value_per_customer", unit="money")
    assert _series(result) == {"2024-01": 150.0, "2024-02": 120.0, "2024-03": round(430 / 3, 4)}


def test_spend_per_row_cac_spreads_spend_over_campaign_days():
    result = _values("spend_per_row", {"table": "customers", "time_col": "signup_time"}, unit="money", direction="lower")
    # Jan: 1000 (k1) + 2 of k2's 4 days (200) over 2 sign-ups; Feb: 200 over 1 sign-up.
    assert _series(result) == {"2024-01": 600.0, "2024-02": 200.0}


def test_nps_and_csat():
    assert _series(_values("nps", unit="score")) == {"2024-01": 0.0, "2024-02": round(100 / 3, 4)}
    csat = _values("row_share", {"table": "surveys", "time_col": "survey_time", "where": {"csat_score": {"notnull": True}}, "numerator": {"csat_score": {">=": 4}}}, unit="pct")
    assert _series(csat) == {"2024-01": 50.0, "2024-02": round(200 / 3, 4)}


def test_touch_conversion_and_marketing_roi():
    conversion = _values("touch_conversion", {"window_days": 7}, unit="pct", dimensions=("channel",))
    assert _series(conversion) == {"2024-01": round(200 / 3, 4)}
    assert _series(conversion, channel="sms") == {"2024-01": 100.0}
    roi = _values("marketing_roi", {"window_days": 7}, unit="pct", dimensions=("channel",))
    assert _series(roi) == {"2024-01": round((100 - 1200) / 1200 * 100, 4), "2024-02": -85.0}
    assert _series(roi, channel="email") == {"2024-01": -90.0}
    assert _series(roi, channel="sms") == {"2024-01": -100.0, "2024-02": -85.0}


def test_funnel_conversion_counts_sessions():
    params = {"table": "web_events", "time_col": "event_time", "key_col": "session_id", "numerator": {"event_name": "purchase"}, "channel_col": "traffic_channel"}
    result = _values("distinct_share", params, unit="pct", dimensions=("channel",))
    assert _series(result) == {"2024-01": round(100 / 3, 4)}
    assert _series(result, channel="email") == {"2024-01": 100.0}



def test_funnel_conversion_breakdowns_judge_each_group_on_its_own_rows():
    # Session s4 has rows of two customers (segments A and B) and two channels; only the B/direct row purchases.
    tables = _tables()
    s4 = pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "session_id": ["s4", "s4"],
            "event_time": [T("2024-02-05 10:00"), T("2024-02-05 10:05")],
            "event_name": ["visit", "purchase"],
            "traffic_channel": ["email", "direct"],
        }
    )
    tables["web_events"] = pd.concat([tables["web_events"], s4], ignore_index=True)
    params = {"table": "web_events", "time_col": "event_time", "key_col": "session_id", "numerator": {"event_name": "purchase"}, "channel_col": "traffic_channel"}
    result = _values("distinct_share", params, tables=tables, unit="pct", dimensions=("segment", "channel"))
    february = result[result.period_start == T("2024-02-01")].set_index(["segment", "channel"]).value.to_dict()
    assert february == {("all", "all"): 100.0, ("A", "all"): 0.0, ("B", "all"): 100.0, ("all", "email"): 0.0, ("all", "direct"): 100.0}

def test_sales_pipeline_kpis():
    opp = {"table": "opportunities", "time_col": "closed_time"}
    win = _values("row_share", {**opp, "where": {"status": ["won", "lost"]}, "numerator": {"status": "won"}}, unit="pct")
    assert _series(win) == {"2024-02": 100.0, "2024-03": 0.0}
    cycle = _values("mean_duration", {**opp, "start_col": "created_time", "end_col": "closed_time", "where": {"status": "won"}}, unit="days")
    assert _series(cycle) == {"2024-02": 30.0}
    assert _series(_values("open_value_at_period_end", unit="money")) == {"2024-01": 1500.0, "2024-02": 800.0, "2024-03": 300.0}


def test_naive_forecast_accuracy():
    result = _values("naive_forecast_accuracy", unit="pct")
    # Feb: 1 - |60 - 300| / 60 < 0, floored; Mar: 1 - |70 - 60| / 70. January has no previous period.
    assert _series(result) == {"2024-02": 0.0, "2024-03": round((1 - 10 / 70) * 100, 4)}


def test_service_kpis():
    tickets = {"table": "support_tickets", "time_col": "opened_time", "channel_col": "contact_channel"}
    fcr = _values("row_share", {**tickets, "where": {"resolved_time": {"notnull": True}}, "numerator": {"n_contacts": 1}}, unit="pct")
    assert _series(fcr) == {"2024-01": 100.0, "2024-02": 0.0, "2024-03": 100.0}
    response = _values("mean_duration", {**tickets, "start_col": "opened_time", "end_col": "first_response_time", "unit": "hours"}, unit="hours")
    assert _series(response) == {"2024-01": 3.0, "2024-02": 6.0, "2024-03": 1.0}
    resolution = _values("mean_duration", {**tickets, "start_col": "opened_time", "end_col": "resolved_time", "unit": "hours"}, unit="hours")
    assert _series(resolution) == {"2024-01": 10.0, "2024-02": 30.0, "2024-03": 5.0}
    escalation = _values("row_share", {**tickets, "numerator": {"is_escalated": True}}, unit="pct", dimensions=("channel",))
    assert _series(escalation) == {"2024-01": 50.0, "2024-02": 0.0, "2024-03": 0.0}
    assert _series(escalation, channel="chat") == {"2024-01": 100.0}
    repeat = _values("repeat_within", {"window_days": 30}, unit="pct")
    assert _series(repeat) == {"2024-01": 50.0, "2024-02": 0.0, "2024-03": 0.0}


def test_weekly_grain_keeps_only_complete_weeks():
    result = _values("row_count", ORDERS_NO_REFUND, grain="week")
    # 2024-01-01 is a Monday; the week of 2024-03-25 ends on 2024-03-31, inside the window.
    assert result.period_start.min() == T("2024-01-01")
    assert (result.period_end <= T(END)).all()
    assert result.value.sum() == 5


def test_missing_column_is_named():
    tables = _tables()
    tables["orders"] = tables["orders"].drop(columns=["order_amount"])
    with pytest.raises(MissingColumnError, match="order_amount"):
        _values("sum_value", {"table": "orders", "time_col": "order_time", "value_col": "order_amount"}, tables=tables)


def test_inputs_not_mutated():
    tables = _tables()
    before = {name: frame.copy() for name, frame in tables.items()}
    _values("returning_share", {"where": {"is_refund": False}}, tables=tables, unit="pct")
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(frame, before[name])


# --------------------------------------------------------------------------- the lecture's further KPIs


def _pipeline():
    """Opportunities (with owners) and their stage history, on days chosen for whole-day durations."""
    opportunities = pd.DataFrame(
        {
            "opportunity_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
            "customer_id": ["c1", "c2", "c3", "c1", "c2", "c3"],
            "lead_source": ["web_form", "referral", "web_form", "referral", "web_form", "web_form"],
            "owner": ["Zhao Min", "Zhou Mei", "Zhao Min", "Zhou Mei", "Chen Jing", "Zhao Min"],
            "created_time": [T("2024-01-05"), T("2024-01-10"), T("2024-01-20"), T("2024-01-25"), T("2024-02-03"), T("2024-01-01")],
            "status": ["won", "lost", "open", "won", "open", "won"],
            "closed_time": [T("2024-02-14"), T("2024-02-20"), pd.NaT, T("2024-02-14"), pd.NaT, T("2024-02-01")],
        }
    )
    history = pd.DataFrame(
        {
            "opportunity_id": ["p1", "p1", "p1", "p2", "p3", "p4", "p4", "p5", "p5", "p6", "p6"],
            "stage": ["lead", "qualified", "won", "lead", "lead", "lead", "won", "lead", "proposal", "lead", "won"],
            "entered_time": [T("2024-01-05"), T("2024-01-09"), T("2024-02-14"), T("2024-01-10"), T("2024-01-20"), T("2024-01-25"),
                             T("2024-02-14"), T("2024-02-03"), T("2024-02-08"), T("2024-01-01"), T("2024-02-01")],
        }
    )
    return {**_tables(), "opportunities": opportunities, "opportunity_stage_history": history}


WON = {"table": "opportunities", "time_col": "closed_time", "start_col": "created_time", "end_col": "closed_time", "where": {"status": "won"}}


def test_lead_conversion_time_is_the_median_days_from_lead_to_win():
    # Won in February after 40 (p1), 20 (p4) and 31 days (p6); p2 was lost.
    result = _values("median_duration", {**WON, "channel_col": "lead_source"}, tables=_pipeline(), unit="days", dimensions=("channel",))
    assert _series(result) == {"2024-02": 31.0}
    assert _series(result, channel="web_form") == {"2024-02": 35.5}  # p1 and p6
    mean = _values("mean_duration", WON, tables=_pipeline(), unit="days")
    assert _series(mean) == {"2024-02": round(91 / 3, 4)}  # the sales cycle is the mean of the same deals


def test_lead_quality_counts_qualified_leads_among_the_decided_ones():
    params = {"stages": ["qualified", "proposal", "negotiation", "won"], "channel_col": "lead_source"}
    result = _values("stage_reached_share", params, tables=_pipeline(), unit="pct", dimensions=("channel", "segment"))
    # January's leads: p1 qualified, p4 and p6 won (so qualified), p2 lost at the lead stage, p3 still open at
    # the lead stage (undecided, left out): 3 of 4. February: p5 open but already at proposal: 1 of 1.
    assert _series(result) == {"2024-01": 75.0, "2024-02": 100.0}
    assert _series(result, channel="referral") == {"2024-01": 50.0}
    assert _series(result, segment="A") == {"2024-01": 100.0}  # c1 and c3: p1, p4, p6
    with pytest.raises(CatalogueError, match="params.stages"):
        _values("stage_reached_share", {}, tables=_pipeline(), unit="pct")


def test_per_rep_kpis_are_counts_and_rates_with_masked_names_kept_apart():
    opp = {"table": "opportunities", "time_col": "closed_time", "channel_col": "owner"}
    won = _values("row_count", {**opp, "where": {"status": "won"}}, tables=_pipeline(), dimensions=("channel",), breakdown="channel")
    # Zhao Min and Zhou Mei both mask to "Z*** M**": sorted, the second is told apart by " (2)".
    assert set(won.channel) == {"Z*** M**", "Z*** M** (2)"}
    assert _series(won, channel="Z*** M**") == {"2024-02": 2.0}  # Zhao Min: p1, p6
    assert _series(won, channel="Z*** M** (2)") == {"2024-02": 1.0}  # Zhou Mei: p4
    rate = _values("row_share", {**opp, "where": {"status": ["won", "lost"]}, "numerator": {"status": "won"}}, tables=_pipeline(),
                   unit="pct", dimensions=("channel",), breakdown="channel")
    assert _series(rate, channel="Z*** M**") == {"2024-02": 100.0}
    assert _series(rate, channel="Z*** M** (2)") == {"2024-02": 50.0}  # p4 won, p2 lost
    assert (rate.channel != "all").all(), "a breakdown-only KPI has no total row"
    assert not rate.channel.str.contains("Zhao|Zhou|Chen").any()


def test_lead_source_breakdowns_are_not_masked():
    result = _values("row_count", {"table": "opportunities", "time_col": "created_time", "channel_col": "lead_source"}, tables=_pipeline(), dimensions=("channel",))
    assert set(result.channel) == {"all", "web_form", "referral"}


def test_channel_efficiency_is_spend_per_last_touch_conversion():
    result = _values("spend_per_conversion", {"window_days": 7}, unit="money", direction="lower", dimensions=("channel",))
    # Jan: spend 1000 (k1, email) + 200 (k2's first 2 of 4 days, sms); one conversion (o1 two days after tp1).
    # Feb: spend 200 (sms), one conversion (o5 three days after tp3). o4 came 13 days after its contact.
    assert _series(result) == {"2024-01": 1200.0, "2024-02": 200.0}
    assert _series(result, channel="email") == {"2024-01": 1000.0}
    assert _series(result, channel="sms") == {"2024-02": 200.0}  # January's sms spend converted nobody: no value


def test_customer_engagement_is_the_share_of_customers_on_file_with_a_session():
    tables = _tables()
    extra = pd.DataFrame({"customer_id": ["c1"], "session_id": ["s9"], "event_time": [T("2024-02-10")], "event_name": ["visit"], "traffic_channel": ["direct"]})
    tables["web_events"] = pd.concat([tables["web_events"], extra], ignore_index=True)
    result = _values("base_share", {"table": "web_events", "time_col": "event_time"}, tables=tables, unit="pct", dimensions=("segment",))
    # January: c1 and c2 are on file and visit; c3 visits on 01-07 but signs up on 02-01, so is not counted.
    # February: c1 of c1, c2, c3. March: nobody visits.
    assert _series(result) == {"2024-01": 100.0, "2024-02": round(100 / 3, 4), "2024-03": 0.0}
    assert _series(result, segment="A") == {"2024-01": 100.0, "2024-02": 50.0, "2024-03": 0.0}


def test_service_satisfaction_is_the_mean_csat_score():
    params = {"table": "surveys", "time_col": "survey_time", "value_col": "csat_score", "where": {"csat_score": {"notnull": True}}}
    result = _values("mean_value", params, unit="score")
    assert _series(result) == {"2024-01": 3.5, "2024-02": round(11 / 3, 4)}  # (5 + 4 + 3 + 2) / 4; (5 + 5 + 1) / 3


def test_resolution_rate_is_tickets_resolved_per_ticket_opened():
    tables = _tables()
    tickets = tables["support_tickets"].copy()
    tickets.loc[1, "resolved_time"] = T("2024-02-05")  # t2, opened in January, resolved in February
    tables["support_tickets"] = tickets
    params = {"table": "support_tickets", "numerator_time_col": "resolved_time", "denominator_time_col": "opened_time", "channel_col": "contact_channel"}
    result = _values("count_ratio", params, tables=tables, unit="pct", dimensions=("channel",))
    # Jan: 1 resolved (t1) of 2 opened; Feb: 2 resolved (t2, t3) of 1 opened, the backlog worked off; Mar: 1 of 1.
    assert _series(result) == {"2024-01": 50.0, "2024-02": 200.0, "2024-03": 100.0}
    assert _series(result, channel="chat") == {"2024-01": 0.0}  # opened, none resolved in the month


def test_new_kpis_are_left_out_where_their_tables_are_missing():
    by_id = {k.id: k for k in kpi.load_catalogue()}
    needs = {kpi_id: kpi.required_tables([by_id[kpi_id]]) for kpi_id in (
        "lead_conversion_time", "lead_quality", "channel_efficiency", "customer_engagement", "service_satisfaction",
        "resolution_rate", "deals_won_per_rep", "win_rate_per_rep")}
    assert needs == {
        "lead_conversion_time": ["opportunities"],
        "lead_quality": ["opportunities", "opportunity_stage_history"],
        "channel_efficiency": ["campaigns", "orders", "touchpoints"],
        "customer_engagement": ["customers", "web_events"],
        "service_satisfaction": ["surveys"],
        "resolution_rate": ["support_tickets"],
        "deals_won_per_rep": ["opportunities"],
        "win_rate_per_rep": ["opportunities"],
    }
    per_rep = [by_id["deals_won_per_rep"], by_id["win_rate_per_rep"]]
    assert all(k.unit in ("count", "pct") for k in per_rep), "per person: counts and rates, never money"


def test_window_start_is_the_first_day_of_the_month():
    assert kpi.window_start(T("2011-12-10"), history_months=24) == T("2009-12-01")
    assert kpi.window_start(T("2024-04-01"), history_months=3) == T("2024-01-01")
    with pytest.raises(ValueError, match="history_months"):
        kpi.window_start(T("2024-04-01"), history_months=0)


# --------------------------------------------------------------------------- catalogue


def test_project_catalogue_loads_and_covers_the_agreed_kpis():
    catalogue = kpi.load_catalogue()
    ids = {k.id for k in catalogue}
    assert {
        "active_customers", "new_customers", "retention_rate", "churn_rate", "repeat_purchase_rate", "average_clv", "cac", "nps", "csat",
        "campaign_conversion_rate", "cost_per_lead", "marketing_roi", "roi_per_channel",
        "revenue", "orders", "average_order_value", "funnel_conversion", "win_rate", "average_sales_cycle", "open_pipeline_value", "forecast_accuracy",
        "first_contact_resolution", "average_first_response_time", "average_resolution_time", "escalation_rate", "repeat_issue_rate",
        "lead_conversion_time", "lead_quality", "channel_efficiency", "customer_engagement", "service_satisfaction", "resolution_rate",
        "deals_won_per_rep", "win_rate_per_rep",
    } <= ids
    assert kpi.required_tables(catalogue)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"computation": "no_such_formula"}, r"KPI 'k', field 'computation': unknown computation 'no_such_formula'"),
        ({"unit": "furlongs"}, r"field 'unit'"),
        ({"direction": "up"}, r"field 'direction'"),
        ({"grain": "year"}, r"field 'grain'"),
        ({"colour": "blue"}, r"field 'colour': unknown field"),
        ({"target": 10}, r"field 'target': targets belong to the dataset"),
        ({"params": {"table": "orders", "time_col": "order_time", "bogus": 1}}, r"field 'params.bogus'"),
        ({"params": {"table": "orders"}}, r"field 'params.time_col': required"),
        ({"params": {"table": "orders", "time_col": "t", "where": {"x": {"~": 1}}}}, r"field 'params.where'"),
        ({"dimensions": ["region"]}, r"field 'dimensions'"),
        ({"computation": "nps", "params": {}, "dimensions": ["channel"]}, r"cannot break down by 'channel'"),
        ({"breakdown": "channel"}, r"field 'breakdown'"),
    ],
)
def test_catalogue_errors_name_entry_and_field(change, message):
    entry = _entry("row_count", {"table": "orders", "time_col": "order_time"})
    entry.update(change)
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue({"kpis": [entry]}, kpi.COMPUTATIONS)


def test_catalogue_missing_field_and_duplicate_id():
    entry = _entry("row_count", {"table": "orders", "time_col": "order_time"})
    with pytest.raises(CatalogueError, match="field 'unit': missing"):
        parse_catalogue({"kpis": [{k: v for k, v in entry.items() if k != "unit"}]}, kpi.COMPUTATIONS)
    with pytest.raises(CatalogueError, match="duplicate KPI id"):
        parse_catalogue({"kpis": [entry, entry]}, kpi.COMPUTATIONS)
    with pytest.raises(CatalogueError, match="'kpis'"):
        parse_catalogue({"kpi": []}, kpi.COMPUTATIONS)


def test_catalogue_file_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kpis:\n  - {id: x, name: X, definition: d, unit: count, direction: higher, grain: month, computation: nope}\n")
    with pytest.raises(CatalogueError, match=r"bad.yaml: KPI 'x', field 'computation'"):
        kpi.load_catalogue(path)


# --------------------------------------------------------------------------- tracking and alerts


def _catalogue(direction="higher", target=100.0, amber=90.0, red=80.0, computation="mean_value", grain="month"):
    params = {"table": "orders", "time_col": "order_time", "value_col": "order_amount"}
    catalogue = parse_catalogue({"kpis": [_entry(computation, params, unit="money", direction=direction, grain=grain)]}, kpi.COMPUTATIONS)
    return with_targets(catalogue, {} if target is None else {"k": (target, amber, red)})


def _monthly(values, grain="month"):
    starts = pd.date_range("2023-01-01", periods=len(values), freq="MS")
    return pd.DataFrame(
        {
            "grain": grain,
            "period_start": starts.astype("datetime64[us]"),
            "period_end": (starts + pd.offsets.MonthBegin(1)).astype("datetime64[us]"),
            "kpi_id": "k",
            "segment": "all",
            "channel": "all",
            "value": np.asarray(values, dtype=float),
        }
    )


NOISE = [100, 104, 97, 102, 99, 103, 96, 101, 98, 102]


def test_status_thresholds_both_directions():
    value = pd.Series([95.0, 85.0, 75.0, np.nan])
    higher = kpi.status_of(value, amber=pd.Series(90.0, index=value.index), red=pd.Series(80.0, index=value.index), higher_is_better=pd.Series(True, index=value.index))
    assert list(higher) == ["green", "amber", "red", "grey"]
    lower = kpi.status_of(value, amber=pd.Series(80.0, index=value.index), red=pd.Series(90.0, index=value.index), higher_is_better=pd.Series(False, index=value.index))
    assert list(lower) == ["red", "amber", "green", "grey"]


def test_noise_only_change_raises_no_alert():
    tracked = kpi.track(_monthly(NOISE + [95]), _catalogue())
    last = tracked.iloc[-1]
    assert last.change_pct == pytest.approx((95 - 102) / 102 * 100)
    assert not last.is_significant
    assert last.status == "green"
    assert kpi.find_alerts(tracked).empty


def test_breach_raises_a_red_alert_and_a_significant_change():
    tracked = kpi.track(_monthly(NOISE + [70]), _catalogue())
    alerts = kpi.find_alerts(tracked)
    assert len(alerts) == 1
    alert = alerts.iloc[0]
    assert (alert.severity, alert.status, alert.alert_type) == ("red", "red", "threshold+significant_change")
    assert alert.period_start == T("2023-11-01")


def test_significant_adverse_change_without_breach_is_an_amber_alert():
    series = [200, 201, 199, 200, 202, 198, 200, 201, 199, 200, 150]
    tracked = kpi.track(_monthly(series), _catalogue())
    alerts = kpi.find_alerts(tracked)
    assert list(alerts.alert_type) == ["significant_change"] and list(alerts.severity) == ["amber"]
    favourable = kpi.track(_monthly(series[:-1] + [260]), _catalogue())
    assert favourable.iloc[-1].is_significant and kpi.find_alerts(favourable).empty


def test_lower_is_better_adverse_is_upward():
    series = [10, 11, 10, 9, 10, 11, 10, 10, 30]
    tracked = kpi.track(_monthly(series), _catalogue(direction="lower", target=10, amber=20, red=25))
    last = tracked.iloc[-1]
    assert last.is_adverse and last.status == "red"


def test_too_few_past_periods_are_never_significant():
    tracked = kpi.track(_monthly([100, 100, 200]), _catalogue())
    assert not tracked.is_significant.any()


def test_year_over_year_and_attainment():
    tracked = kpi.track(_monthly(list(range(100, 114))), _catalogue())
    last = tracked.iloc[-1]
    assert last.last_year_value == 101  # 2024-02 vs 2023-02
    assert last.change_yoy_pct == pytest.approx(12 / 101 * 100)
    assert last.attainment_pct == pytest.approx(113.0)


def test_targets_scale_by_period_length_for_sums_only():
    weekly = _monthly([50.0, 60.0], grain="week")
    weekly["period_end"] = weekly.period_start + pd.Timedelta(days=7)
    sums = kpi.track(weekly, _catalogue(computation="sum_value", target=3043.75, amber=2000, red=1000))
    assert sums.target.iloc[0] == pytest.approx(700.0)
    means = kpi.track(weekly, _catalogue())
    assert means.target.iloc[0] == 100.0
    by_segment = _monthly([50.0, 60.0])
    by_segment["segment"] = "A"
    assert kpi.track(by_segment, _catalogue(computation="sum_value", target=100, amber=90, red=80)).status.eq("grey").all()


def test_write_alerts(tmp_path):
    alerts = kpi.find_alerts(kpi.track(_monthly(NOISE + [70]), _catalogue()))
    written = kpi.write_alerts(alerts, output_dir=tmp_path)
    assert [p.name for p in written] == ["alerts.csv", "alerts.json", "alerts.parquet"]
    assert len(pd.read_csv(tmp_path / "tables" / "alerts.csv")) == 1
    assert len(pd.read_csv(tmp_path / "alerts.csv")) == 1
    document = json.loads((tmp_path / "alerts.json").read_text(encoding="utf-8"))
    assert document["n_alerts"] == 1 and document["alerts"][0]["kpi_id"] == "k"
    assert kpi.write_alerts(alerts, output_dir="") == []


def test_track_rejects_unknown_kpis_and_missing_columns():
    with pytest.raises(KeyError, match="not in the catalogue"):
        kpi.track(_monthly([1, 2]).assign(kpi_id="other"), _catalogue())
    with pytest.raises(MissingColumnError, match="value"):
        kpi.track(_monthly([1, 2]).drop(columns=["value"]), _catalogue())


def test_plots_return_axes_and_figure():
    import matplotlib

    matplotlib.use("Agg")
    tracked = kpi.track(_monthly(NOISE + [70]), _catalogue())
    ax = kpi.plot_kpi_trend(tracked, kpi_id="k")
    assert ax.get_title(loc="left") == f"K ({datasets.load_dataset(None).currency})"  # the default dataset's currency
    assert kpi.plot_kpi_trend(tracked, kpi_id="k", currency="GBP").get_title(loc="left") == "K (GBP)"
    fig = kpi.plot_kpi_tiles(tracked)
    assert len(fig.axes) == 1


def _tile_texts(fig) -> list[str]:
    return [text.get_text() for text in fig.axes[0].texts]


def test_money_tile_is_written_in_the_dataset_currency_and_locale():
    import matplotlib

    matplotlib.use("Agg")
    tracked = kpi.track(_monthly(NOISE + [86161.4]), _catalogue())
    assert "£86,161" in _tile_texts(kpi.plot_kpi_tiles(tracked, currency="GBP", locale="en_GB"))
    assert "R$\xa086.161" in _tile_texts(kpi.plot_kpi_tiles(tracked, currency="BRL", locale="pt_BR"))
    alerts = kpi.find_alerts(kpi.track(_monthly(NOISE + [70]), _catalogue()), currency="GBP", locale="en_GB")
    assert "is £70.00, red against target £100" in alerts.message.iloc[0]


def test_kpi_without_a_target_is_grey_and_says_no_target_never_red():
    import matplotlib

    from crm_analytics import plots

    matplotlib.use("Agg")
    tracked = kpi.track(_monthly(NOISE + [10]), _catalogue(target=None))
    assert set(tracked.status) == {"no target"} and tracked.target.isna().all()
    alerts = kpi.find_alerts(tracked)
    assert "red" not in set(alerts.status) and set(alerts.alert_type) == {"significant_change"}  # the drop is still news
    fig = kpi.plot_kpi_tiles(tracked, currency="GBP", locale="en_GB")
    assert "no target" in _tile_texts(fig)
    assert matplotlib.colors.to_hex(fig.axes[0].spines["left"].get_edgecolor()) == plots.STATUS_COLOURS["grey"]
    assert matplotlib.colors.to_hex(fig.axes[0].lines[0].get_color()) == plots.STATUS_COLOURS["grey"]


# --------------------------------------------------------------------------- targets


def test_targets_come_from_the_dataset_targets_file(tmp_path):
    path = tmp_path / "shop.yaml"
    path.write_text("# targets of a shop\nrevenue: {target: 90000, amber: 80000, red: 70000}\nchurn_rate: {target: 40, amber: 45, red: 50}\n", encoding="utf-8")
    catalogue = {k.id: k for k in kpi.load_catalogue(targets_file=path)}
    assert (catalogue["revenue"].target, catalogue["revenue"].amber, catalogue["revenue"].red) == (90000.0, 80000.0, 70000.0)
    assert catalogue["churn_rate"].red == 50.0 and catalogue["revenue"].unit == "money"
    assert not catalogue["orders"].has_target and catalogue["orders"].target is None
    assert not any(k.has_target for k in kpi.load_catalogue())  # no targets file, no targets


def test_demo_targets_file_covers_the_demo_catalogue():
    demo = datasets.load_dataset("demo")
    assert demo.targets_file is not None and demo.targets_file.name == "demo.yaml"
    catalogue = kpi.load_catalogue(targets_file=demo.targets_file)
    # a count per person (a breakdown-only count) has no target of its own; every other KPI has one
    assert [k.id for k in catalogue if not k.has_target] == ["deals_won_per_rep"]
    assert {k.id: k.target for k in catalogue}["active_customers"] == 13000.0


def test_unknown_kpi_in_targets_file_names_the_file_and_close_matches(tmp_path):
    path = tmp_path / "shop.yaml"
    path.write_text("revenu: {target: 3, amber: 2, red: 1}\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"shop.yaml: KPI 'revenu' is not in the catalogue \(did you mean 'revenue'"):
        kpi.load_catalogue(targets_file=path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"target": "high", "amber": 2, "red": 1}, r"KPI 'k', field 'target': expected a number"),
        ({"target": 10, "amber": 20, "red": 1}, r"KPI 'k', field 'amber/red': thresholds must satisfy red <= amber <= target"),
        ({"target": 10, "amber": 5}, r"KPI 'k', field 'red': missing"),
        ({"target": 10, "amber": 5, "red": 1, "colour": "blue"}, r"KPI 'k', field 'colour': unknown field"),
    ],
)
def test_bad_targets_name_the_file_kpi_and_field(entry, message):
    catalogue = parse_catalogue({"kpis": [_entry("row_count", {"table": "orders", "time_col": "order_time"})]}, kpi.COMPUTATIONS)
    with pytest.raises(CatalogueError, match="shop.yaml: " + message):
        parse_targets({"k": entry}, catalogue, source="shop.yaml")


# --------------------------------------------------------------------------- notebook


def test_notebook_declares_every_default_parameter():
    import papermill as pm
    import yaml

    from crm_analytics import paths

    declared = set(pm.inspect_notebook(str(paths.notebooks_dir() / "kpi.ipynb")))
    defaults = yaml.safe_load((paths.parameters_dir() / "kpi" / "default.yaml").read_text(encoding="utf-8"))
    assert set(defaults) <= declared
    assert {"warehouse_path", "output_dir"} <= declared
    assert defaults["reuse_latest_run"] is False  # scheduled runs always recompute


@pytest.mark.slow
def test_notebook_runs_under_papermill_with_static_dashboard(demo_home, tmp_path):
    import papermill as pm
    import yaml

    from crm_analytics import paths

    params = yaml.safe_load((paths.parameters_dir() / "kpi" / "default.yaml").read_text(encoding="utf-8"))
    out = tmp_path / "kpi.ipynb"
    pm.execute_notebook(str(paths.notebooks_dir() / "kpi.ipynb"), str(out), parameters={**params, "output_dir": str(tmp_path)}, kernel_name="python3")
    values = pd.read_parquet(tmp_path / "tables" / "kpi_values.parquet")
    assert set(values.grain) == set(params["grains"])
    assert set(values.kpi_id) >= {"revenue", "active_customers", "nps", "win_rate", "first_contact_resolution"}
    monthly_revenue = values[(values.kpi_id == "revenue") & (values.grain == "month") & (values.segment == "all") & (values.channel == "all")]
    assert monthly_revenue.target.notna().all() and "no target" not in set(monthly_revenue.status)  # the demo's targets file
    alerts = pd.read_csv(tmp_path / "alerts.csv")
    assert json.loads((tmp_path / "alerts.json").read_text(encoding="utf-8"))["n_alerts"] == len(alerts)
    assert len(pd.read_csv(tmp_path / "tables" / "alerts.csv")) == len(alerts)
    text = out.read_text(encoding="utf-8")
    assert "Filters: grain month" in text  # drawn with the parameter values, no frontend needed
    assert (tmp_path / "figures" / "kpi_tiles.png").exists() and (tmp_path / "figures" / "kpi_trends.png").exists()


def test_window_end_ignores_stray_future_rows():
    days = pd.date_range("2024-01-01", "2024-03-31", freq="D")
    times = pd.Series(np.repeat(days.to_numpy(), 20))
    stray = pd.Series([T("2026-06-01 10:00"), T("2026-09-01")])
    orders = pd.DataFrame({"order_time": pd.concat([times, stray], ignore_index=True)})
    assert kpi.window_end(orders) == T("2024-04-01")
    with pytest.raises(MissingColumnError):
        kpi.window_end(orders, time_col="created_time")


def test_sales_cube_counts_buyers_orders_and_net_revenue_per_month_segment_and_channel():
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "c", "a", None],
            "order_time": pd.to_datetime(["2025-01-05", "2025-01-20", "2025-01-09", "2025-02-01", "2025-02-03", "2025-01-10"]),
            "order_amount": [100.0, 50.0, 30.0, 20.0, -40.0, 99.0],
            "channel": ["web", "web", "web", "store", "web", "web"],
        }
    )
    segments = pd.DataFrame({"customer_id": ["a", "b"], "segment": ["Champions", "Lost"]})
    cube = kpi.sales_cube(orders, segments, start=pd.Timestamp("2025-01-01"), end=pd.Timestamp("2025-03-01"))
    rows = {(r.month_date.strftime("%Y-%m"), r.segment, r.channel): (r.n_customers, r.n_orders, r.revenue_amount) for r in cube.itertuples()}
    assert rows == {
        ("2025-01", "Champions", "web"): (1, 2, 150.0),
        ("2025-01", "Lost", "web"): (1, 1, 30.0),
        ("2025-02", "Champions", "web"): (1, 0, -40.0),  # a refund is revenue, not an order
        ("2025-02", "unknown", "store"): (1, 1, 20.0),
        ("2025-01", "anonymous", "web"): (0, 1, 99.0),
    }, "orders without a customer keep their revenue as 'anonymous'; customers without a segment are 'unknown'"


def _warehouse_tables(tmp_path):
    """The test tables written to a DuckDB file and opened read-only, as the notebook opens the warehouse."""
    import duckdb

    from crm_analytics import engine

    path = tmp_path / "kpi.duckdb"
    with duckdb.connect(str(path)) as con:
        for name, frame in _tables().items():
            con.register("frame", frame)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
            con.unregister("frame")
    con = engine.connect("duckdb", warehouse_path=path)
    return con, {name: con.table(name) for name in con.list_tables()}


def test_funnel_sessions_across_midnight_are_judged_whole_with_a_store(tmp_path):
    # s9 visits on the last evening of January and buys after midnight: one session of January and one of February
    con, tables = _warehouse_tables(tmp_path)
    # rows without a session id count as one session per period and group, however many days they fall on
    across = pd.DataFrame({"customer_id": ["c2", "c2", "c2", "c1", "c1"], "session_id": ["s9", "s9", "s9", None, None],
                           "event_time": [T("2024-01-30 23:50"), T("2024-01-31 23:58"), T("2024-02-01 00:03"), T("2024-03-02"), T("2024-03-09")],
                           "event_name": ["visit", "visit", "purchase", "visit", "purchase"], "traffic_channel": ["direct"] * 3 + ["email"] * 2})
    con.create_table("web_events_across", pd.concat([tables["web_events"].to_pandas(), across], ignore_index=True), temp=True)
    tables = {**tables, "web_events": con.table("web_events_across")}
    catalogue = [k for k in kpi.load_catalogue() if k.id == "funnel_conversion"]
    alone = {g: kpi.compute_kpis(tables, catalogue, grain=g, start=START, end=END, segments=SEGMENTS, dimensions=("segment", "channel"))
             for g in ("week", "month")}
    with kpi.shared_intermediates() as shared:
        together = {g: kpi.compute_kpis(tables, catalogue, grain=g, start=START, end=END, segments=SEGMENTS, dimensions=("segment", "channel"),
                                        shared=shared) for g in ("week", "month")}
    for grain in alone:
        pd.testing.assert_frame_equal(alone[grain], together[grain])
    month = together["month"].set_index(["period_start", "segment", "channel"]).value
    # January: s1 bought, s2, s3 and s9 (not yet) did not; February: s9 bought
    assert month[(T("2024-01-01"), "all", "all")] == 25.0
    assert month[(T("2024-02-01"), "all", "all")] == 100.0
    assert month[(T("2024-03-01"), "all", "all")] == 100.0


def test_shared_intermediates_give_the_values_of_separate_calls_and_are_dropped_after(tmp_path):
    con, tables = _warehouse_tables(tmp_path)
    shown = {"funnel_conversion", "repeat_purchase_rate", "campaign_conversion_rate", "marketing_roi", "roi_per_channel", "channel_efficiency", "revenue"}
    catalogue = [k for k in kpi.load_catalogue() if k.id in shown]
    grains = {"week": (), "month": ("segment", "channel"), "quarter": ("segment", "channel")}

    def values(grain, dimensions, **shared):
        return kpi.compute_kpis(tables, catalogue, grain=grain, start="2023-10-01", end=END, segments=SEGMENTS, dimensions=dimensions, **shared)

    separate = [values(g, dims) for g, dims in grains.items()]
    def cached():
        return {name for name in con.list_tables() if name.startswith("ibis_cache")}

    with kpi.shared_intermediates() as shared:
        together = [values(g, dims, shared=shared) for g, dims in grains.items()]
        # the funnel's sessions per day, the first orders, the contacts' conversions and the last-touch orders
        assert len(shared) == 4
        assert len(cached()) == 4  # held by the engine while the store is open
    assert shared == {}
    assert cached() == set()
    for alone, with_store in zip(separate, together):
        pd.testing.assert_frame_equal(alone, with_store)
    assert set(together[1].kpi_id) == shown
