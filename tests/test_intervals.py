"""The Wilson interval shared by the pipeline, its per-viewer recomputation and satisfaction."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from crm_analytics import intervals, pipeline_counts, satisfaction


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_the_interval_is_statsmodels_wilson_interval(confidence):
    trials = np.array([1, 2, 3, 10, 10, 10, 57, 1000, 1000, 250_000])
    successes = np.array([0, 1, 3, 0, 4, 10, 19, 1, 999, 123_456])
    lower, upper = intervals.wilson_interval(successes, trials, confidence=confidence)
    expected_lower, expected_upper = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    np.testing.assert_allclose(lower, expected_lower, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(upper, expected_upper, rtol=1e-12, atol=1e-15)


def test_the_interval_holds_the_share_and_stays_within_zero_and_one():
    trials = np.arange(1, 400)
    for successes in (np.zeros_like(trials), trials // 3, trials):
        lower, upper = intervals.wilson_interval(successes, trials)
        share = successes / trials
        assert (lower >= 0).all() and (upper <= 1).all()
        assert (lower <= share + 1e-12).all() and (share <= upper + 1e-12).all()
    narrow, _ = intervals.wilson_interval(50, 100, confidence=0.5)
    wide, _ = intervals.wilson_interval(50, 100, confidence=0.99)
    assert narrow[0] > wide[0]


def test_no_trials_gives_no_interval_and_a_wrong_confidence_is_refused():
    lower, upper = intervals.wilson_interval([0, 2], [0, 4])
    assert np.isnan(lower[0]) and np.isnan(upper[0]) and not np.isnan(lower[1])
    with pytest.raises(ValueError, match="between 0 and 1"):
        intervals.wilson_interval(1, 2, confidence=95)


def test_satisfaction_and_the_pipeline_counts_use_the_same_interval():
    lower_pct, upper_pct = satisfaction.wilson_interval([3, 0], [7, 0])
    lower, upper = intervals.wilson_interval([3, 0], [7, 0])
    np.testing.assert_array_equal(lower_pct, lower * 100)
    assert np.isnan(upper_pct[1])
    counts = pipeline_counts_rows(won=[3, 0], lost=[4, 0])
    rates = pipeline_counts.win_rates(counts, by="region")
    assert rates["win_rate_low_pct"].iloc[0] == pytest.approx(lower[0] * 100, rel=1e-15)
    assert np.isnan(rates["win_rate_high_pct"].iloc[1])


def pipeline_counts_rows(*, won, lost):
    """Additive deal counts of two regions, as ``pipeline.owner_stage_counts`` persists them."""
    return pd.DataFrame({"region": ["north", "south"], "n_won": won, "n_lost": lost, "n_open": [1, 1], "won_amount": [10.0, 0.0]})
