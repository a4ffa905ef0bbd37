"""A/B test statistics checked by hand, the sample-size cross-check, SRM warnings and the demo's planted effect."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crm_analytics import frames
from crm_analytics.experiments import (
    SampleRatioMismatchWarning,
    conversion_test,
    power_curve,
    revenue_test,
    sample_ratio_check,
    sample_size,
    warn_on_sample_ratio_mismatch,
)


def assignments(n_control: int, conv_control: int, n_treatment: int, conv_treatment: int) -> pd.DataFrame:
    variant = ["control"] * n_control + ["treatment"] * n_treatment
    converted = [True] * conv_control + [False] * (n_control - conv_control) + [True] * conv_treatment + [False] * (n_treatment - conv_treatment)
    revenue = np.where(converted, 100.0, 0.0)
    return pd.DataFrame({"experiment_id": "e1", "customer_id": [f"c{i}" for i in range(len(variant))], "variant": variant,
                         "is_converted": converted, "revenue_amount": revenue})


def test_sample_size_cross_check():
    assert sample_size(0.10, 0.12, alpha=0.05, power=0.8) == 3841


def test_sample_size_rejects_bad_rates():
    with pytest.raises(ValueError, match="between 0 and 1"):
        sample_size(10, 12)
    with pytest.raises(ValueError, match="no effect"):
        sample_size(0.1, 0.1)


def test_power_curve_reaches_80_percent_at_the_sample_size():
    curve = power_curve(0.10, n_per_arm=[1000, 3841, 20000], relative_lifts_pct=[20])
    assert curve["power"].is_monotonic_increasing
    assert curve.loc[curve["n_per_arm"] == 3841, "power"].iloc[0] == pytest.approx(0.8, abs=0.005)


def test_conversion_test_by_hand():
    df = assignments(1000, 100, 1000, 130)
    before = df.copy()
    row = conversion_test(df).iloc[0]
    pd.testing.assert_frame_equal(df, before)
    assert row["rate_control_pct"] == pytest.approx(10.0)
    assert row["absolute_lift_pct"] == pytest.approx(3.0)
    se = np.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000)
    assert row["absolute_lift_low_pct"] == pytest.approx(100 * (0.03 - 1.959963984540054 * se))
    pooled = 0.115
    z = 0.03 / np.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert row["z"] == pytest.approx(z)
    assert row["p_value"] == pytest.approx(2 * stats.norm.sf(z))
    assert row["relative_lift_pct"] == pytest.approx(30.0)
    assert row["relative_lift_low_pct"] < 30.0 < row["relative_lift_high_pct"]
    assert bool(row["is_significant"]) is True


def test_conversion_test_filters_the_experiment_and_checks_variants():
    df = pd.concat([assignments(100, 10, 100, 12), assignments(50, 5, 50, 5).assign(experiment_id="e2")])
    assert conversion_test(df, experiment_id="e2")["n_control"].iloc[0] == 50
    with pytest.raises(ValueError, match="no rows for experiment_id 'e3'"):
        conversion_test(df, experiment_id="e3")
    with pytest.raises(ValueError, match="variant 'B' has no participants"):
        conversion_test(df, treatment="B")


def test_revenue_test_welch_and_bootstrap():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"variant": ["control"] * 400 + ["treatment"] * 400,
                       "revenue_amount": np.concatenate([rng.gamma(2, 10, 400), rng.gamma(2, 12, 400)])})
    row = revenue_test(df, n_boot=500, random_state=1).iloc[0]
    welch = stats.ttest_ind(df.revenue_amount[400:], df.revenue_amount[:400], equal_var=False)
    assert row["t"] == pytest.approx(welch.statistic)
    assert row["p_value"] == pytest.approx(welch.pvalue)
    assert row["welch_low_amount"] < row["difference_amount"] < row["welch_high_amount"]
    assert row["bootstrap_low_amount"] == pytest.approx(row["welch_low_amount"], abs=0.6)
    assert row["bootstrap_high_amount"] == pytest.approx(row["welch_high_amount"], abs=0.6)
    again = revenue_test(df, n_boot=500, random_state=1)
    assert again["bootstrap_low_amount"].iloc[0] == row["bootstrap_low_amount"]


def test_sample_ratio_mismatch_warns_loudly():
    ok = sample_ratio_check(assignments(1000, 0, 1010, 0))
    assert not ok["is_mismatch"].any()
    assert not warn_on_sample_ratio_mismatch(ok)
    bad = sample_ratio_check(assignments(1000, 0, 1200, 0))
    assert bad["is_mismatch"].all()
    assert bad["p_value"].iloc[0] == pytest.approx(stats.chisquare([1000, 1200]).pvalue)
    assert bad["message"].iloc[0].startswith("SAMPLE RATIO MISMATCH")
    with pytest.warns(SampleRatioMismatchWarning, match="SAMPLE RATIO MISMATCH"):
        assert warn_on_sample_ratio_mismatch(bad)


def test_sample_ratio_with_planned_unequal_split():
    check = sample_ratio_check(assignments(900, 0, 100, 0), expected_shares={"control": 0.9, "treatment": 0.1})
    assert not check["is_mismatch"].any()
    assert check["expected_pct"].tolist() == pytest.approx([90.0, 10.0])


def test_missing_column_is_named():
    with pytest.raises(frames.MissingColumnError, match="is_converted"):
        conversion_test(assignments(10, 1, 10, 1).drop(columns="is_converted"))


@pytest.mark.slow
def test_planted_effect_lies_inside_the_reported_interval(demo_home):
    from crm_analytics import paths, warehouse

    truth = json.loads((paths.ground_truth_dir() / "experiment.json").read_text())
    table = warehouse.connect().table("experiment_assignments")
    row = conversion_test(table, experiment_id=truth["experiment_id"]).iloc[0]
    planted = 100 * truth["planted"]["absolute_lift"]
    assert row["absolute_lift_low_pct"] <= planted <= row["absolute_lift_high_pct"]
    relative = 100 * truth["planted"]["relative_lift"]
    assert row["relative_lift_low_pct"] <= relative <= row["relative_lift_high_pct"]
    # The counts and revenue read back from the warehouse are the ones the generator realised.
    for arm in ("control", "treatment"):
        assert row[f"n_{arm}"] == truth["realised"][arm]["n"]
        assert row[f"conversions_{arm}"] == truth["realised"][arm]["conversions"]
    revenue = revenue_test(table, experiment_id=truth["experiment_id"]).iloc[0]
    assert revenue["revenue_per_user_treatment_amount"] == pytest.approx(truth["realised"]["treatment"]["revenue_per_participant"])
    assert not sample_ratio_check(table, experiment_id=truth["experiment_id"])["is_mismatch"].any()
