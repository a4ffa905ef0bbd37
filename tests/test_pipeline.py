"""Sales pipeline measures on a hand-made set of opportunities, and the lead score on the demo."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crm_analytics import frames
from crm_analytics.pipeline import (
    fit_lead_score,
    lead_features,
    pipeline_velocity,
    plot_win_rates,
    sales_cycle,
    score_open_leads,
    stage_conversion,
    time_in_stage,
    weighted_pipeline,
    win_rates,
)

D0 = pd.Timestamp("2024-01-01")


def day(n: float) -> pd.Timestamp:
    return D0 + pd.Timedelta(days=n)


@pytest.fixture
def history() -> pd.DataFrame:
    rows = [
        ("o1", "lead", 0), ("o1", "qualified", 2), ("o1", "proposal", 5), ("o1", "negotiation", 9), ("o1", "won", 20),
        ("o2", "lead", 0), ("o2", "qualified", 4), ("o2", "lost", 10),
        ("o3", "lead", 0), ("o3", "lost", 1),
        ("o4", "lead", 0), ("o4", "qualified", 6), ("o4", "proposal", 8),  # open
        ("o5", "lead", 0), ("o5", "proposal", 3), ("o5", "won", 10),  # skipped qualified
    ]
    return pd.DataFrame([(o, s, day(d)) for o, s, d in rows], columns=["opportunity_id", "stage", "entered_time"])


@pytest.fixture
def opportunities() -> pd.DataFrame:
    return pd.DataFrame({
        "opportunity_id": ["o1", "o2", "o3", "o4", "o5"],
        "customer_id": ["c1", "c2", "c3", "c4", "c5"],
        "lead_source": ["referral", "web_form", "web_form", "referral", "partner"],
        "owner": ["Rep A", "Rep A", "Rep B", "Rep B", "Rep A"],
        "created_time": [day(0)] * 5,
        "expected_amount": [1000.0, 500.0, 200.0, 800.0, 300.0],
        "status": ["won", "lost", "lost", "open", "won"],
        "closed_time": [day(20), day(10), day(1), pd.NaT, day(10)],
    })


def test_stage_conversion_counts_reached_stages(history):
    result = stage_conversion(history).set_index("stage")
    assert result["n_reached"].tolist() == [5, 4, 3, 2, 2]  # o5 skipped qualified but reached it
    assert result.loc["lead", "conversion_to_next_pct"] == pytest.approx(80.0)
    assert result.loc["negotiation", "conversion_to_next_pct"] == pytest.approx(100.0)
    assert np.isnan(result.loc["won", "conversion_to_next_pct"])


def test_win_rates_overall_and_by_source(opportunities):
    overall = win_rates(opportunities).iloc[0]
    assert (overall["n_closed"], overall["n_won"], overall["n_open"]) == (4, 2, 1)
    assert overall["win_rate_pct"] == pytest.approx(50.0)
    assert overall["win_rate_low_pct"] < 50 < overall["win_rate_high_pct"]
    by_source = win_rates(opportunities, by="lead_source").set_index("lead_source")
    assert by_source.loc["web_form", "win_rate_pct"] == 0.0
    assert by_source.loc["referral", "n_closed"] == 1
    assert by_source.loc["partner", "won_amount"] == 300.0


def test_sales_cycle_and_velocity(opportunities):
    cycle = sales_cycle(opportunities).set_index("status")
    assert cycle.loc["won", "mean_days"] == pytest.approx(15.0)
    assert cycle.loc["lost", "median_days"] == pytest.approx(5.5)
    velocity = pipeline_velocity(opportunities).iloc[0]
    # 1 open x 50% x 650 average won / 15 days
    assert velocity["velocity_amount_per_day"] == pytest.approx(1 * 0.5 * 650 / 15)


def test_time_in_stage_excludes_open_stays(history):
    result = time_in_stage(history).set_index("stage")
    assert result.loc["lead", "n_stays"] == 5
    assert result.loc["proposal", "n_stays"] == 2  # o4 still in proposal
    assert result.loc["proposal", "mean_days"] == pytest.approx((4 + 7) / 2)


def test_weighted_pipeline(opportunities, history):
    result = weighted_pipeline(opportunities, history).set_index("stage")
    assert result.loc["proposal", "n_open"] == 1
    assert result.loc["proposal", "open_amount"] == 800.0
    assert result.loc["proposal", "win_probability"] == pytest.approx(1.0)  # o1, o5 reached proposal, both won
    assert result.loc["lead", "win_probability"] == pytest.approx(0.5)
    assert result.loc["proposal", "weighted_amount"] == pytest.approx(800.0)


def test_missing_column_is_named(opportunities, history):
    with pytest.raises(frames.MissingColumnError, match="entered_time"):
        stage_conversion(history.drop(columns="entered_time"))
    with pytest.raises(frames.MissingColumnError, match="owner"):
        lead_features(opportunities.drop(columns="owner"))


def test_lead_score_time_split_and_ranking():
    rng = np.random.default_rng(0)
    n = 400
    source = rng.choice(["referral", "outbound"], n)
    won = rng.random(n) < np.where(source == "referral", 0.6, 0.1)
    status = np.where(np.arange(n) >= n - 20, "open", np.where(won, "won", "lost"))
    opportunities = pd.DataFrame({
        "opportunity_id": [f"o{i}" for i in range(n)], "lead_source": source, "owner": rng.choice(["A", "B"], n),
        "created_time": D0 + pd.to_timedelta(np.arange(n), unit="D"), "expected_amount": rng.gamma(2, 1000, n),
        "status": status, "closed_time": pd.NaT,
    })
    features = lead_features(opportunities)
    score = fit_lead_score(features, test_share=0.25)
    assert score.n_test == 95 and score.n_train == 285
    assert score.split_time == features.loc[features["is_won"].notna(), "created_time"].iloc[-95]
    assert score.roc_auc > 0.75
    ranked = score_open_leads(score, features)
    assert len(ranked) == 20
    assert ranked["win_probability"].is_monotonic_decreasing
    assert set(ranked.head(5)["lead_source"]) == {"referral"}


@pytest.mark.slow
def test_lead_score_on_demo_beats_chance(demo_home):
    from crm_analytics import warehouse

    score = fit_lead_score(lead_features(warehouse.connect().table("opportunities")))
    assert score.roc_auc > 0.5


def test_win_rate_chart_draws_groups_that_never_or_always_win():
    # At 0 % and 100 % the Wilson interval's end equals the rate up to rounding; the error bars must not go negative.
    opportunities = pd.DataFrame(
        {"status": ["lost"] * 7 + ["won"] * 3 + ["won", "lost"], "expected_amount": 100.0, "source": ["never"] * 7 + ["always"] * 3 + ["mixed"] * 2}
    )
    rates = win_rates(opportunities, by="source")
    ax = plot_win_rates(rates, by="source")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["never", "mixed", "always"]
