"""Findings first: fixed-template sentences from a run's result tables, the change since the previous run, the warnings."""

from __future__ import annotations

import html as html_module
import re

import pandas as pd
import pytest

from crm_analytics import findings, tables


def segment_summary() -> pd.DataFrame:
    """A hand-made ``segment_summary``: 1,000 customers, net revenue 100,000."""
    return pd.DataFrame({
        "rfm_segment": ["Champions", "Loyal Customers", "At Risk", "Lost"],
        "n_customers": [100, 210, 190, 500],
        "customer_pct": [10.0, 21.0, 19.0, 50.0],
        "revenue_amount": [40_000.0, 24_000.0, 30_000.0, 6_000.0],
        "revenue_pct": [40.0, 24.0, 30.0, 6.0],
    })


def test_segmentation_sentences_name_their_number_and_period():
    found = findings.segmentation_findings(segment_summary(), snapshot="2024-07-01", first_day="2023-01-01", currency="GBP", locale="en_GB")
    assert [f.key for f in found] == ["top_segment_revenue_pct", "champions_loyal_revenue_pct", "at_risk_revenue_pct"]
    period = "orders from 2023-01-01 to 2024-06-30, snapshot 2024-07-01"
    assert found[0].sentence == (f"Champions is the segment with the most revenue: 40.0% of net revenue (£40,000) from 10.0% of customers "
                                 f"(100 of 1,000; {period}).")
    assert found[1].sentence == f"Champions and Loyal Customers together are 31.0% of customers and 64.0% of net revenue ({period})."
    assert "190 customers (19.0%) are At Risk" in found[2].sentence and "£30,000 (30.0% of net revenue)" in found[2].sentence
    assert all(period in f.sentence for f in found) and found[1].value == 64.0


def test_money_in_the_sentences_follows_the_dataset_locale():
    found = findings.segmentation_findings(segment_summary(), snapshot="2024-07-01", currency="BRL", locale="pt_BR")
    assert "R$\xa040.000" in found[0].sentence and "40,0%" in found[0].sentence


def test_cohort_sentences():
    retention = pd.DataFrame({0: [1.0, 1.0, 1.0, 1.0], 1: [0.5, 0.4, 0.3, None], 2: [0.3, 0.2, 0.25, None]},
                             index=pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]))
    ltv = retention * 100
    found = findings.cohort_findings(retention, ltv, period="M", end_day="2024-04-30", currency="GBP", locale="en_GB")
    assert found[0].sentence == ("On average 40.0% of a cohort's customers bought again in the month after their first purchase "
                                 "(3 cohorts from 2024-01-01 to 2024-03-01, orders up to 2024-04-30).")
    assert found[1].key == "retention_period_2" and "25.0%" in found[1].sentence and "2024-04-30" in found[1].sentence
    assert found[2].sentence.startswith("A customer brought £25.00 of net revenue in their first 3 months")


def test_funnel_sentences_name_the_largest_drop():
    overall = pd.DataFrame({
        "step_number": [1, 2, 3], "step": ["visit", "add_to_cart", "purchase"], "users": [1000, 400, 300],
        "conversion_from_first_pct": [100.0, 40.0, 30.0], "drop_off": [0, 600, 100], "drop_off_pct": [0.0, 60.0, 25.0],
    })
    found = findings.funnel_findings(overall, first_day="2024-01-01", last_day="2024-03-31", converted=pd.DataFrame({"days_to_convert": [0.5, 1.5, 2.5]}))
    assert found[0].sentence == "30.0% of the 1,000 sessions that reached visit went on to purchase (300; events from 2024-01-01 to 2024-03-31)."
    assert found[1].sentence.startswith("The largest drop is from visit to add_to_cart: 60.0% of the sessions (600)")
    assert "within 1.5 days of visit" in found[2].sentence


def test_kpi_sentences_count_the_alerts():
    tracked = pd.DataFrame({
        "kpi_id": ["revenue", "revenue", "aov"], "name": ["Revenue", "Revenue", "Average order value"], "unit": ["money", "money", "money"],
        "grain": "month", "kpi_grain": "month", "segment": "all", "channel": "all",
        "period_start": pd.to_datetime(["2024-05-01", "2024-06-01", "2024-06-01"]), "period_end": pd.to_datetime(["2024-06-01", "2024-07-01", "2024-07-01"]),
        "value": [1000.0, 1200.0, 50.0], "change_pct": [None, 20.0, -5.0], "status": ["green", "green", "red"],
    })
    alerts = pd.DataFrame({"severity": ["red"], "grain": ["month"], "period_start": pd.to_datetime(["2024-06-01"]),
                           "message": ["Average order value is £50.00, red against target £60.00"]})
    found = findings.kpi_findings(tracked, alerts, currency="GBP", locale="en_GB")
    assert found[0].sentence.startswith("1 KPI alert (1 red, 0 amber; latest complete periods, up to 2024-06-30); the first: Average order value is £50.00")
    assert found[1].sentence == "Revenue was £1,200 in the month from 2024-06-01 to 2024-06-30, +20.0% on the previous month."
    assert found[2].sentence.startswith("1 of the 2 KPIs with a target are on target")
    assert findings.kpi_findings(tracked, alerts.iloc[:0])[0].value == 0
    # a dataset without targets: no sentence counts KPIs "with a target" that have none
    untargeted = findings.kpi_findings(tracked.assign(status="no target"), alerts.iloc[:0], currency="GBP", locale="en_GB")
    assert not any("KPIs with a target" in f.sentence for f in untargeted)
    assert untargeted[0].sentence.startswith("No KPI alert: no change left its usual range (the dataset's targets file sets no target)")


def test_change_since_the_previous_run_in_points():
    current = findings.segmentation_findings(segment_summary(), snapshot="2024-07-01")
    before = segment_summary().assign(revenue_pct=[35.5, 24.0, 30.0, 10.5])
    previous = findings.findings_table(findings.segmentation_findings(before, snapshot="2024-04-01"))
    change = findings.change_finding(current, previous, previous_run="20240401T000000.000Z-abc123")
    assert change.sentence.startswith("Since the previous successful run (20240401T000000.000Z-abc123")
    assert change.sentence.endswith("Champions' share of net revenue went from 35.5% to 40.0% (+4.5 points).")
    assert findings.change_finding(current, None) is None


def test_warnings_say_what_was_too_little_or_skipped():
    recorded = [
        {"kind": "too_little_data", "section": "Clusters", "message": "too little data (n = 12 customers, needs 50); the clusters are skipped"},
        {"kind": "data_note", "section": "Load", "message": "3 of 10 orders have no customer"},
    ]
    [sentence] = findings.warning_findings(recorded)
    assert sentence.sentence == ("Read with care: too little data or skipped: Clusters (too little data (n = 12 customers, needs 50); "
                                 "the clusters are skipped); and 1 data note (Load).")
    assert findings.warning_findings([]) == []


def test_block_has_at_most_five_sentences_and_persists_raw_numbers(tmp_path):
    analysis_root = tmp_path / "segmentation"
    old_run = analysis_root / "20240401T000000.000Z-aaaaaa"
    findings.publish(findings.segmentation_findings(segment_summary().assign(revenue_pct=[30.0, 24.0, 30.0, 16.0]), snapshot="2024-04-01"),
                     output_dir=old_run, warnings=[])
    (analysis_root / "latest").symlink_to(old_run.name)
    run = analysis_root / "20240701T000000.000Z-bbbbbb"
    results_warnings = [{"kind": "skipped", "section": "Evaluation", "message": "no ground truth"}]
    block = findings.publish(findings.segmentation_findings(segment_summary(), snapshot="2024-07-01"), output_dir=run, warnings=results_warnings)
    assert len(block) == 5 and block[3].key == "change_top_segment_revenue_pct" and block[4].key == "warnings"
    assert "from 30.0% to 40.0% (+10.0 points)" in block[3].sentence
    stored = pd.read_parquet(run / "tables" / "findings.parquet")
    assert stored["value"].iloc[0] == 40.0 and stored["sentence"].tolist() == [f.sentence for f in block]
    html = findings.findings_html(block)
    assert html.startswith('<div class="findings" id="what-we-found"><h2>What we found</h2>') and html.count("<li>") == 5


# --------------------------------------------------------------------------- the model analyses' templates


def test_clv_sentences_name_the_top_decile_and_the_holdout():
    values = pd.DataFrame({"probability_alive": [0.9, 0.8, 0.2, 0.6, 0.1, 0.7, 0.3, 0.95, 0.4, 0.05],
                           "clv_amount": [5_000.0, 1_000.0, 500.0, 1_000.0, 0.0, 1_000.0, 500.0, 500.0, 500.0, 0.0]})
    conditional = pd.DataFrame({"frequency": ["0", "1"], "n_customers": [6, 4], "actual_holdout": [0.5, 2.0], "expected_holdout": [0.5, 2.5]})
    found = findings.clv_findings(values, calibration_end="2024-06-30", observation_end="2024-12-31", horizon_weeks=52, conditional=conditional)
    assert found[0].sentence == ("The top 10% of customers by predicted value (1 of 10) hold 50.0% of the predicted 52-week value of £10,000 "
                                 "(value over the 52 weeks after 2024-06-30, models calibrated on orders up to 2024-06-30).")
    assert found[0].value == 0.5 and found[0].unit == "share"
    assert found[1].sentence == ("5 customers (50.0%) are probably still active (probability alive of 50% or more) at the end of calibration, 2024-06-30.")
    assert found[2].sentence == ("In the holdout from 2024-07-01 to 2024-12-31, the purchase model expected 13 purchase days from the calibration "
                                 "customers and they bought on 11 (+18.2%).")


def test_clv_without_values_says_so():
    empty = pd.DataFrame(columns=["probability_alive", "expected_purchases", "expected_spend_amount", "clv_amount"], dtype="float64")
    [found] = findings.clv_findings(empty, calibration_end="2024-06-30", observation_end="2024-12-31")
    assert found.sentence == "No customer lifetime value was predicted (models calibrated on orders up to 2024-06-30): it needs both models fitted and converged."
    assert found.value is None


def test_churn_sentences_count_the_high_risk_band():
    scores = pd.DataFrame({"churn_probability": [0.95, 0.9, 0.7, 0.5, 0.2, 0.1, 0.1, 0.05]})
    metrics = pd.DataFrame({"metric": ["roc_auc", "pr_auc", "brier_score", "base_rate"], "value": [0.8125, 0.7, 0.1, 0.375]})
    gains = pd.DataFrame({"decile": [2, 1], "cumulative_churned_pct": [60.0, 33.3], "lift": [1.5, 3.33]})
    found = findings.churn_findings(scores, metrics, gains, as_of="2024-10-01", window_days=90)
    period = "scored on 2024-10-01, churn = no purchase from 2024-10-01 to 2024-12-29"
    assert found[0].sentence == f"3 customers (37.5% of 8 scored) are in the high-risk band, a churn probability of 70% or more ({period})."
    assert found[1].sentence == ("On the churn observed from 2024-10-01 to 2024-12-29, after the training date, the model ranks churners above the others "
                                 "with a ROC-AUC of 0.812 (0.5 is chance, 1 perfect; 37.5% of them churned).")
    assert found[2].sentence == f"The 10% of customers with the highest churn scores hold 33.3% of the churners, 3.33 times their share ({period})."
    [unfitted] = findings.churn_findings(scores.iloc[:0], metrics.iloc[:0], as_of="2024-10-01", window_days=90)
    assert unfitted.sentence == "No customer was scored on 2024-10-01: the churn model was not fitted."


def test_lifecycle_sentences_name_the_largest_stage_and_flow():
    counts = pd.DataFrame({"lifecycle_stage": ["new", "active", "loyal", "at risk", "churned"], "n_customers": [100, 200, 400, 150, 150],
                           "customer_pct": [10.0, 20.0, 40.0, 15.0, 15.0]})
    flows = pd.DataFrame({"from_stage": ["loyal", "at risk"], "to_stage": ["at risk", "churned"], "n_customers": [40, 90], "from_pct": [10.0, 60.0]})
    found = findings.lifecycle_findings(counts, flows, snapshot="2024-07-01", earlier="2024-04-02")
    assert found[0].sentence == "Loyal is the largest lifecycle stage: 400 customers (40.0% of 1,000; snapshot 2024-07-01)."
    assert found[0].key == "stage_loyal_customer_pct"
    assert found[1].sentence == "150 customers (15.0%) are at risk and 150 (15.0%) have churned (snapshot 2024-07-01)."
    assert found[2].sentence == ("The largest flow to act on: 90 customers went from at risk to churned, 60.0% of those at risk on 2024-04-02 "
                                 "(from 2024-04-02 to 2024-07-01).")


def test_forecast_sentences_name_the_interval_and_the_backtest_error():
    weekly = pd.DataFrame({"forecast": [1_000.0, 1_200.0], "lower_80": [800.0, 900.0], "upper_80": [1_200.0, 1_500.0],
                           "lower_95": [700.0, 800.0], "upper_95": [1_300.0, 1_600.0]},
                          index=pd.DatetimeIndex(["2024-07-07", "2024-07-14"], name="period_date"))
    backtest = pd.DataFrame({
        "origin_date": pd.to_datetime(["2024-05-05", "2024-05-05", "2024-06-02", "2024-06-02"]),
        "method": ["sarimax", "seasonal_naive", "sarimax", "seasonal_naive"], "series": "weekly",
        "smape_pct": [8.0, 30.0, 12.0, 40.0], "coverage_80_pct": [75.0, None, 100.0, None],
    })
    found = findings.forecast_findings(weekly, backtest, series_end="2024-06-30", currency="GBP", locale="en_GB")
    assert found[0].sentence == ("Revenue of the next 2 weeks is forecast at £2,200; the weekly 80% intervals add up to £1,700 to £2,700 "
                                 "(weeks from 2024-07-01 to 2024-07-14, revenue up to 2024-06-30).")
    assert found[1].sentence == ("In the backtest of the weekly forecast (2 origins from 2024-05-05 to 2024-06-02), SARIMAX was off by 10.0% on average "
                                 "(sMAPE), against 35.0% for the seasonal-naive forecast; 87.5% of the actual values fell inside its 80% interval.")
    persisted = findings.forecast_findings(weekly.reset_index(), backtest, series_end="2024-06-30")
    assert persisted[0].sentence == found[0].sentence, "the persisted table (period_date as a column) reads the same"


def test_satisfaction_sentences_name_nps_with_its_interval():
    nps = pd.DataFrame({"n_responses": [1_200], "promoters_pct": [45.0], "passives_pct": [30.0], "detractors_pct": [25.0],
                        "nps": [20.0], "nps_lower": [15.52], "nps_upper": [24.48], "nps_se": [2.28]})
    csat = pd.DataFrame({"period_start": pd.to_datetime(["2024-05-01", "2024-06-01"]), "n_responses": [500, 700],
                         "csat_pct": [70.0, 72.5], "csat_lower": [66.0, 69.1], "csat_upper": [73.8, 75.7]})
    drivers = pd.DataFrame({"score": ["nps_score", "csat_score"], "auc": [0.61, 0.58], "odds_ratio_per_point": [0.82, 0.7]})
    found = findings.satisfaction_findings(nps, first_day="2024-01-03", last_day="2024-06-28", csat_trend=csat, grain="month",
                                           drivers=drivers, churn_start="2024-01-01", churn_days=180)
    assert found[0].sentence == ("NPS is +20.0 (95% interval 15.5 to 24.5) from 1,200 responses: 45.0% promoters, 25.0% detractors "
                                 "(surveys from 2024-01-03 to 2024-06-28).")
    assert found[1].sentence == ("CSAT (a score of 4 or 5 of 5) was 72.5% (95% interval 69.1% to 75.7%) from 700 responses in the latest month "
                                 "from 2024-06-01 (surveys up to 2024-06-28).")
    assert found[2].sentence == ("A customer's NPS score tells who will churn with an AUC of 0.610 (0.5 is no signal); each point more multiplies "
                                 "the odds of churning by 0.820 (latest score before 2024-01-01, churn = no order in the 180 days from it).")
    assert findings.satisfaction_findings(nps.assign(nps=-5.0), first_day="2024-01-03", last_day="2024-06-28")[0].sentence.startswith("NPS is −5.0 ")


def test_behaviour_sentences_name_the_strongest_pair_by_lift():
    products = pd.DataFrame({"item_a": ["P1", "P2"], "item_b": ["P3", "P4"], "n_baskets": [40, 25], "lift": [3.2, 6.5],
                             "product_a": ["Tea", "Kettle"], "product_b": ["Cups", "Mugs"]})
    categories = pd.DataFrame({"item_a": ["food"], "item_b": ["kitchen"], "n_baskets": [300], "lift": [1.8], "confidence_a_to_b": [0.25]})
    repeat = pd.DataFrame({"n_customers": [2_000], "n_repeat_customers": [900], "repeat_purchase_pct": [45.0]})
    gaps = pd.DataFrame({"n_repeat_orders": [3_000], "p50_days": [21.5]})
    found = findings.behaviour_findings(products, categories, repeat, gaps, first_day="2024-01-01", last_day="2024-06-30")
    period = "orders from 2024-01-01 to 2024-06-30"
    assert found[0].sentence == (f"The strongest product pair is Kettle with Mugs: bought together 6.50 times as often as chance would give (lift), "
                                 f"in 25 baskets ({period}).")
    assert found[1].sentence == (f"45.0% of the 2,000 buying customers bought at least twice; half of the repeat purchases came within 21.5 days "
                                 f"of the previous one ({period}).")
    assert found[2].sentence == f"Among categories, food and kitchen go together most (lift 1.80): 25.0% of the baskets with food also hold kitchen ({period})."
    assert findings.behaviour_findings(products.iloc[:0], first_day="2024-01-01", last_day="2024-06-30")[0].value is None


def test_recommendation_sentences_name_the_holdout_hit_rate():
    comparison = pd.DataFrame({"model": ["item_cf", "popularity"], "n_customers": [1_500, 1_500], "precision_at_k": [0.12, 0.03],
                               "recall_at_k": [0.3, 0.06], "hit_rate": [0.65, 0.22], "coverage_pct": [55.0, 2.0], "k": [10, 10]})
    also = pd.DataFrame({"product_name": ["Tea", "Kettle"], "also_bought_product_name": ["Cups", "Mugs"], "similarity": [0.2, 0.3],
                         "n_customers_both": [40, 60], "also_bought_pct": [20.0, 35.0]})
    found = findings.recommendation_findings(comparison, also, split_time="2024-03-03", data_end="2024-07-01", k=10)
    holdout = "trained on orders before 2024-03-03, holdout from 2024-03-03 to 2024-06-30"
    assert found[0].sentence == (f"For 65.0% of the 1,500 holdout customers, at least one of their top 10 recommendations was bought in the holdout, "
                                 f"against 22.0% for the most popular products ({holdout}).")
    assert found[1].sentence == (f"Precision at 10 is 12.0% and recall at 10 30.0% (most popular products: 3.0% and 6.0%); "
                                 f"the recommendations use 55.0% of the catalogue ({holdout}).")
    assert found[2].sentence == "The closest 'bought X, also bought Y' pair: 35.0% of the customers who bought Kettle also bought Mugs (60 customers; orders before 2024-07-01)."
    [unevaluated] = findings.recommendation_findings(comparison.iloc[:0], also, split_time="2024-03-03", data_end="2024-07-01", k=10)
    assert unevaluated.key == "top_also_bought_pct"


def test_attribution_sentences_name_the_top_channel_and_the_spread_between_models():
    comparison = pd.DataFrame({
        "model": ["first_touch", "first_touch", "last_touch", "last_touch", "markov", "markov"],
        "channel": ["email", "paid_search"] * 3, "conversions": [60.0, 40.0, 70.0, 30.0, 55.0, 45.0],
        "share_pct": [60.0, 40.0, 70.0, 30.0, 55.0, 45.0], "share_low_pct": [None, None, None, None, 50.0, 40.0],
        "share_high_pct": [None, None, None, None, 60.0, 50.0],
    })
    found = findings.attribution_findings(comparison, first_day="2024-01-01", last_day="2024-06-30", n_journeys=400, n_converted=100,
                                          conversion_window_days=3)
    period = "touches from 2024-01-01 to 2024-06-30"
    assert found[0].sentence == f"Email gets the largest share of conversions under the Markov model: 55.0% (95% interval 50.0% to 60.0%) of 100 conversions ({period})."
    assert found[1].sentence == f"Across the 3 models, email's share runs from 55.0% (Markov) to 70.0% (last touch), 15.0 points apart ({period})."
    assert found[1].value == 15.0
    assert found[2].sentence == f"100 of 400 journeys (25.0%) ended in an order within 3 days of their last touch ({period})."


def test_experiment_sentences_state_the_effect_its_interval_and_significance():
    conversion = pd.DataFrame({"rate_control_pct": [10.0], "rate_treatment_pct": [12.0], "absolute_lift_pct": [2.0],
                               "absolute_lift_low_pct": [-0.5], "absolute_lift_high_pct": [4.5], "p_value": [0.12], "is_significant": [False]})
    revenue = pd.DataFrame({"revenue_per_user_control_amount": [20.0], "revenue_per_user_treatment_amount": [25.5], "difference_amount": [5.5],
                            "bootstrap_low_amount": [1.25], "bootstrap_high_amount": [9.75], "p_value": [0.0004], "is_significant": [True]})
    srm = pd.DataFrame({"variant": ["control", "treatment"], "is_mismatch": [True, True], "p_value": [0.0002, 0.0002]})
    found = findings.experiment_findings(conversion, revenue, srm, experiment_id="new_checkout", first_day="2024-03-01", last_day="2024-03-31")
    period = "experiment new_checkout, participants assigned from 2024-03-01 to 2024-03-31"
    assert found[0].sentence == (f"The split between the variants does not match the plan (sample-ratio p-value <0.001): the assignment is broken, "
                                 f"so the effects below must not be trusted ({period}).")
    assert found[1].sentence == (f"Treatment converted 12.0% of participants against 10.0% for control: +2.0 points (95% interval −0.50 points to "
                                 f"+4.5 points), not significant at the 5% level (p-value 0.120; {period}).")
    assert found[2].sentence == (f"Revenue per participant was £25.50 in treatment against £20.00 in control: +£5.50 (95% bootstrap interval £1.25 to "
                                 f"£9.75), significant at the 5% level (p-value <0.001; {period}).")
    assert [f.key for f in findings.experiment_findings(conversion, revenue, srm.assign(is_mismatch=False), experiment_id="x",
                                                        first_day="2024-03-01", last_day="2024-03-31")] == ["conversion_lift_points", "revenue_per_participant_difference"]


def pipeline_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Hand-made ``win_rates``, ``weighted_pipeline`` and ``stage_conversion`` of 200 closed and 30 open opportunities."""
    win = pd.DataFrame({"n_closed": [200], "n_won": [50], "n_lost": [150], "n_open": [30], "win_rate_pct": [25.0],
                        "win_rate_low_pct": [19.51], "win_rate_high_pct": [31.43], "won_amount": [500_000.0]})
    weighted = pd.DataFrame({"stage": ["lead", "proposal"], "n_open": [20, 10], "n_without_amount": [4, 1], "n_amount_filled": [0, 0],
                             "open_amount": [80_000.0, 60_000.0], "win_probability": [0.2, 0.5], "weighted_amount": [16_000.0, 30_000.0]})
    conversion = pd.DataFrame({"stage": ["lead", "qualified", "proposal", "won"], "n_reached": [300, 180, 90, 50],
                               "conversion_to_next_pct": [60.0, 50.0, 55.56, None], "conversion_from_first_pct": [100.0, 60.0, 30.0, 16.67]})
    return win, weighted, conversion


def test_pipeline_sentences_name_the_win_rate_the_open_pipeline_and_the_weakest_stage():
    win, weighted, conversion = pipeline_tables()
    found = findings.pipeline_findings(win, weighted, conversion, first_day="2024-01-02", last_day="2024-06-28", currency="GBP", locale="en_GB")
    period = "opportunities created from 2024-01-02 to 2024-06-28"
    assert found[0].sentence == f"25.0% of the 200 closed opportunities were won (50; 95% interval 19.5% to 31.4%; {period})."
    assert found[1].sentence == ("The open pipeline holds 30 opportunities worth £140,000, or £46,000 weighted by the win rate from their stage "
                                 f"(5 without an amount, counted but not valued; {period}).")
    assert found[2].sentence == f"The stage converting least is qualified: 50.0% of the 180 opportunities that reached qualified went on to proposal ({period})."
    assert [f.key for f in found] == ["win_rate_pct", "open_pipeline_amount", "lowest_stage_conversion_pct"] and found[1].value == 140_000.0
    filled = findings.pipeline_findings(win, weighted.assign(n_amount_filled=[4, 0]), conversion, first_day="2024-01-02", last_day="2024-06-28")
    assert "(4 valued by the dataset's expected-amount rule; 1 without an amount, counted but not valued; opportunities" in filled[1].sentence


def test_pipeline_without_closed_or_open_deals_says_so():
    win, weighted, conversion = pipeline_tables()
    found = findings.pipeline_findings(win.assign(n_closed=0), weighted.iloc[:0], conversion.iloc[:0], first_day="2024-01-02", last_day="2024-01-31")
    assert [f.sentence for f in found] == [
        "No opportunity has closed yet, so there is no win rate (opportunities created from 2024-01-02 to 2024-01-31).",
        "No opportunity is open (opportunities created from 2024-01-02 to 2024-01-31).",
    ]
    assert found[0].value is None


def cleansing_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Hand-made row counts, quarantine reasons, duplicates summary and merge accuracy of a build of two sources."""
    counts = pd.DataFrame({"source": ["web_orders", "crm_contacts"], "table_name": ["orders", "customers"], "rows_in": [10_000, 2_500],
                           "rows_clean": [9_880, 2_495], "rows_quarantined": [120, 5]})
    reasons = pd.DataFrame({"source": ["crm_contacts", "web_orders", "web_orders", "crm_contacts"], "table_name": ["customers", "orders", "orders", "customers"],
                            "column_name": ["phone", "customer_id", "order_time", "email"], "reason": ["excel_mangled", "unknown_customer", "future_date", "duplicate_key"],
                            "action": ["value", "row", "row", "row"], "n_entries": [400, 100, 20, 5]})
    duplicates = pd.DataFrame({"match_rule": ["exact_email", "single_record", "all"], "source": ["crm_contacts", "crm_contacts", "all"],
                               "n_records": [1_000, 1_495, 2_495], "n_customers": [None, None, 2_000.0], "n_records_merged": [None, None, 495.0]})
    accuracy = pd.DataFrame({"source_a": ["all"], "source_b": ["all"], "n_true_pairs": [500], "n_predicted_pairs": [495], "n_correct_pairs": [490],
                             "precision": [0.9899], "recall": [0.98], "f1": [0.98495]})
    return counts, reasons, duplicates, accuracy


def test_cleansing_sentences_count_rows_quarantined_with_the_top_reason_and_the_merge():
    counts, reasons, duplicates, accuracy = cleansing_tables()
    found = findings.cleansing_findings(counts, reasons, duplicates, accuracy, built_day="2024-07-01 06:30", locale="en_GB")
    assert found[0].sentence == ("Of 12,500 rows read from 2 sources, 12,375 are clean and 125 (1.0%) quarantined; the most common reason is "
                                 "unknown customer (100 rows, most in customer_id of web_orders; build of 2024-07-01).")
    assert found[0].value == 0.01 and found[0].unit == "share"
    assert found[1].sentence == ("The 2,495 customer records resolve into 2,000 customers: 495 records (19.8%) were duplicates of another and merged "
                                 "(build of 2024-07-01).")
    assert found[2].sentence == ("Against the dataset's ground truth, 99.0% of the record pairs merged are the same person (precision) and 98.0% of the "
                                 "true pairs were merged (recall), F1 0.985 (build of 2024-07-01).")


def test_a_clean_build_without_duplicates_or_ground_truth():
    counts, reasons, duplicates, _ = cleansing_tables()
    clean = counts.assign(rows_clean=counts["rows_in"], rows_quarantined=0)
    single = duplicates.assign(n_customers=[None, None, 2_495.0], n_records_merged=[None, None, 0.0])
    found = findings.cleansing_findings(clean, reasons.iloc[:0], single, None, built_day="2024-07-01")
    assert [f.sentence for f in found] == [
        "Of 12,500 rows read from 2 sources, 12,500 are clean and 0 (0.0%) quarantined (build of 2024-07-01).",
        "No duplicate was found: each of the 2,495 customer records is a customer of its own (build of 2024-07-01).",
    ]


def test_dashboard_sentences_say_how_fresh_its_results_are_and_their_headline_numbers():
    statuses = pd.DataFrame({"analysis": ["kpi", "overview", "funnel", "cohort"], "state": ["fresh", "stale", "missing", "fresh"],
                             "finished_time": pd.to_datetime(["2024-07-01 06:10", "2024-06-20 06:05", None, "2024-07-01 06:20"], utc=True)})
    numbers = pd.DataFrame({"analysis": ["kpi", "kpi", "kpi", "overview", "cohort"],
                            "label": ["Revenue", "KPIs off target", "KPI alerts", "Orders in the warehouse", "Share buying again one month on"],
                            "value": ["£92,346", "3 of 4 (2 amber, 1 red)", "1", "36,969", "21.4%"],
                            "period": ["month 2024-06", "latest complete period of each KPI", "month 2024-06", "orders 2023-01-01 to 2024-06-30", "12 cohorts"]})
    found = findings.dashboard_findings(statuses, numbers)
    assert found[0].sentence == ("2 of the 4 analyses this page shows have up-to-date results (overview: out of date; funnel: no successful run; "
                                 "latest good runs finished from 2024-06-20 to 2024-07-01).")
    assert found[0].value == 2
    assert found[1].sentence == ("From the latest kpi report: Revenue: £92,346 (month 2024-06); KPIs off target: 3 of 4 (2 amber, 1 red) "
                                 "(latest complete period of each KPI).")
    assert found[2].sentence == "From the latest overview report: Orders in the warehouse: 36,969 (orders 2023-01-01 to 2024-06-30)."
    assert len(found) == 3, "at most two analyses' numbers"
    [alone] = findings.dashboard_findings(statuses.assign(state="missing", finished_time=pd.NaT), numbers.iloc[:0])
    assert alone.sentence == ("0 of the 4 analyses this page shows have up-to-date results (kpi: no successful run; overview: no successful run; "
                              "funnel: no successful run; cohort: no successful run; no good run yet).")
    same_day = findings.dashboard_findings(statuses.assign(state="fresh", finished_time=pd.Timestamp("2024-07-01 06:00", tz="UTC")), numbers)
    assert same_day[0].sentence == "4 of the 4 analyses this page shows have up-to-date results (latest good runs finished on 2024-07-01)."


# --------------------------------------------------------------------------- a real run of a notebook


def _report_html(analysis: str, parameters: dict, folder, output_dir):
    import papermill

    from crm_analytics import paths
    from crm_analytics.runner.report import write_report

    executed = folder / f"{analysis}.ipynb"
    papermill.execute_notebook(str(paths.notebooks_dir() / f"{analysis}.ipynb"), str(executed), parameters=parameters | {"output_dir": str(output_dir)},
                               kernel_name="python3", cwd=str(folder), progress_bar=False)
    report = folder / "report.html"
    write_report(executed, report)
    return report.read_text(encoding="utf-8")


@pytest.mark.slow
def test_segmentation_report_opens_with_its_findings(demo_home, tmp_path):
    import yaml

    from crm_analytics import paths

    analysis_root = tmp_path / "outputs" / "segmentation"
    previous = analysis_root / "20240101T000000.000Z-000000"
    (previous / "tables").mkdir(parents=True)
    findings.findings_table([findings.Finding("champions_loyal_revenue_pct", "earlier", 50.0, "percent", "snapshot 2024-01-01")]).to_parquet(
        previous / "tables" / "findings.parquet")
    (analysis_root / "latest").symlink_to(previous.name)
    run = analysis_root / "20250101T000000.000Z-111111"
    parameters = yaml.safe_load((paths.parameters_dir() / "segmentation" / "default.yaml").read_text(encoding="utf-8"))
    html = _report_html("segmentation", parameters, tmp_path, run)

    block = html.index('id="what-we-found"')
    first_section = html.index('<h2 id="')  # nbconvert gives every Markdown heading an id; the findings' heading has none
    assert block < first_section and html[first_section:].startswith('<h2 id="Load"'), "the findings come before the first section"
    assert findings.PLACEHOLDER not in html, "the placeholder was replaced in place"
    sentences = re.findall(r"<li>(.*?)</li>", html[block:html.index("</div>", block)])
    assert 3 <= len(sentences) <= 5, sentences
    assert any("Champions and Loyal Customers together" in s for s in sentences)
    assert any(s.startswith("Since the previous successful run (20240101T000000.000Z-000000") and "from 50.0% to" in s for s in sentences)
    assert all(re.search(r"\d{4}-\d{2}-\d{2}", s) for s in sentences if not s.startswith("Read with care")), "every finding names its period"
    tables_html = "".join(re.findall(r"<table.*?</table>", html, flags=re.S))
    assert tables_html.count("people-table") >= 5
    assert tables.long_floats(tables_html) == [], "no float with more than three decimals in the report's tables"
    assert not re.search(r'class="row_heading', tables_html), "no bare index"
    raw = pd.read_parquet(run / "tables" / "segment_summary.parquet")
    assert raw["revenue_amount"].dtype == "float64" and raw["customer_pct"].sum() == pytest.approx(100)
    stored = pd.read_parquet(run / "tables" / "findings.parquet")
    print("\n".join(stored["sentence"]))


MODEL_ANALYSES = ["clv", "churn", "lifecycle", "forecast", "satisfaction", "behaviour", "recommendation", "attribution", "experiments", "pipeline"]


@pytest.mark.slow
@pytest.mark.parametrize("analysis", MODEL_ANALYSES)
def test_model_report_opens_with_its_findings(analysis, demo_home, tmp_path):
    import yaml

    from crm_analytics import paths

    run = tmp_path / "outputs" / analysis / "20250101T000000.000Z-222222"
    parameters = yaml.safe_load((paths.parameters_dir() / analysis / "default.yaml").read_text(encoding="utf-8")) or {}
    html = _report_html(analysis, parameters, tmp_path, run)

    block = html.index('id="what-we-found"')
    later = [html.find(marker) for marker in ('<h2 id="', "people-table", "<img")]
    assert all(block < position for position in later if position >= 0), "the findings come before the first section, table and figure"
    assert findings.PLACEHOLDER not in html, "the placeholder was replaced in place"
    sentences = re.findall(r"<li>(.*?)</li>", html[block:html.index("</div>", block)])
    assert 1 <= len(sentences) <= 5, sentences
    assert all(re.search(r"\d{4}-\d{2}-\d{2}", s) for s in sentences if not s.startswith("Read with care")), "every finding names its period"
    tables_html = "".join(re.findall(r"<table.*?</table>", html, flags=re.S))
    assert "people-table" in tables_html
    assert tables.long_floats(tables_html) == [], "no float with more than three decimals in the report's tables"
    stored = pd.read_parquet(run / "tables" / "findings.parquet")
    assert stored["sentence"].tolist() == [html_module.unescape(s) for s in sentences]
    print("\n".join(stored["sentence"]))
