"""Tests of crm_analytics.clv: the summary on hand-checked frames and the published CDNOW estimates."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from crm_analytics import clv, paths
from crm_analytics.frames import MissingColumnError

PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_LOGLIK = -9582.4
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    raw = pd.read_csv(
        paths.external_dir() / "cdnow" / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "n_cds", "order_amount"],
        dtype={"customer_id": str, "date": str},
    )
    raw["order_time"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    return raw


@pytest.fixture(scope="module")
def cdnow_summary(cdnow) -> pd.DataFrame:
    return clv.summarize(cdnow, calibration_end="1997-09-30", observation_end="1998-06-30", time_unit="W")


@pytest.fixture(scope="module")
def cdnow_bg(cdnow_summary) -> clv.BetaGeo:
    return clv.BetaGeo().fit(cdnow_summary)


def _orders() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "b", "c", "c", "a"],
            "order_time": pd.to_datetime(
                [
                    "2024-01-01 09:00",
                    "2024-01-01 18:00",  # same day: merged
                    "2024-01-15 10:00",
                    "2024-01-29 10:00",
                    "2024-01-08 12:00",
                    "2024-01-20 12:00",
                    "2024-02-10 12:00",  # holdout
                    "2024-01-22 10:00",  # refund: ignored
                ]
            ),
            "order_amount": [10.0, 5.0, 20.0, 40.0, 7.0, 3.0, 9.0, -20.0],
        }
    )


def test_summarize_hand_checked():
    orders = _orders()
    before = orders.copy()
    s = clv.summarize(orders, calibration_end="2024-01-29", observation_end="2024-02-26", time_unit="D")
    pd.testing.assert_frame_equal(orders, before)
    assert list(s.index) == ["a", "b", "c"]
    assert s.loc["a", "frequency"] == 2
    assert s.loc["a", "recency"] == 28.0
    assert s.loc["a", "T"] == 28.0
    assert s.loc["a", "monetary_value"] == 30.0  # (20 + 40) / 2; the first day's 15 is not a repeat
    assert s.loc["b", "frequency"] == 0 and s.loc["b", "monetary_value"] == 0.0
    assert s.loc["b", "T"] == 21.0
    assert s.loc["c", "frequency"] == 0 and s.loc["c", "frequency_holdout"] == 1
    assert s.loc["a", "frequency_holdout"] == 0
    assert (s["duration_holdout"] == 28.0).all()


def test_summarize_weeks_are_fractional():
    s = clv.summarize(_orders(), calibration_end="2024-01-29", time_unit="W")
    assert s.loc["b", "T"] == pytest.approx(3.0)
    assert s.loc["c", "T"] == pytest.approx(9 / 7)
    assert "frequency_holdout" not in s.columns


def test_summarize_excludes_customers_first_seen_after_calibration():
    s = clv.summarize(_orders(), calibration_end="2024-01-10", time_unit="D")
    assert list(s.index) == ["a", "b"]
    assert s.loc["a", "frequency"] == 0


def test_summarize_missing_column_is_named():
    with pytest.raises(MissingColumnError, match="order_amount"):
        clv.summarize(_orders().drop(columns="order_amount"), calibration_end="2024-01-29")


def test_summarize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="time_unit"):
        clv.summarize(_orders(), calibration_end="2024-01-29", time_unit="M")
    with pytest.raises(ValueError, match="observation_end"):
        clv.summarize(_orders(), calibration_end="2024-01-29", observation_end="2024-01-01")


def test_cdnow_summary_matches_the_published_setup(cdnow_summary):
    assert len(cdnow_summary) == 2357
    assert int((cdnow_summary["frequency"] > 0).sum()) == 946
    assert cdnow_summary["T"].max() == pytest.approx(272 / 7)


def test_bgnbd_matches_published_estimates(cdnow_bg):
    assert cdnow_bg.converged_
    for name, published in PUBLISHED_BGNBD.items():
        assert cdnow_bg.params_[name] == pytest.approx(published, rel=0.005), name
    assert cdnow_bg.loglik_ == pytest.approx(PUBLISHED_LOGLIK, rel=0.005)
    assert "CONVERGENCE" in cdnow_bg.optimizer_message_


def test_bgnbd_loglik_equals_sum_of_individual(cdnow_bg, cdnow_summary):
    assert cdnow_bg.log_likelihood(cdnow_summary).sum() == pytest.approx(cdnow_bg.loglik_, rel=1e-9)


def test_gamma_gamma_matches_published_estimates(cdnow_summary):
    gg = clv.GammaGamma().fit(cdnow_summary)
    assert gg.converged_ and gg.n_customers_ == 946
    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert gg.params_[name] == pytest.approx(published, rel=0.005), name


def test_bgnbd_gradient_matches_finite_differences(cdnow_summary):
    x, t_x, T = (cdnow_summary[c].to_numpy(float) for c in ["frequency", "recency", "T"])
    p = np.log([0.3, 5.0, 0.8, 2.0])
    f = clv._BgnbdLikelihood(x, t_x, T)
    _, grad = f(p)
    numeric = [
        (f(p + h)[0] - f(p - h)[0]) / 2e-6
        for h in np.eye(4) * 1e-6
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-8)


def test_holdout_predictions_track_actuals(cdnow_bg, cdnow_summary):
    table = clv.conditional_expectations(cdnow_summary, cdnow_bg)
    assert table["n_customers"].sum() == 2357
    total_expected = (table["expected_holdout"] * table["n_customers"]).sum()
    total_actual = (table["actual_holdout"] * table["n_customers"]).sum()
    assert total_expected == pytest.approx(total_actual, rel=0.15)
    assert table["expected_holdout"].is_monotonic_increasing


def test_tracking_frame_cdnow(cdnow, cdnow_summary, cdnow_bg):
    tracking = clv.tracking_frame(cdnow, cdnow_summary, cdnow_bg, start="1997-01-01", end="1998-06-30")
    assert len(tracking) == 78
    assert tracking["actual_repeat"].is_monotonic_increasing
    week39 = tracking.loc[tracking["period"] == 39].iloc[0]
    assert week39["actual_repeat"] == cdnow_summary["frequency"].sum()
    assert week39["expected_repeat"] == pytest.approx(week39["actual_repeat"], rel=0.05)
    assert tracking["expected_repeat"].iloc[-1] == pytest.approx(tracking["actual_repeat"].iloc[-1], rel=0.1)


def test_predictions_are_stable_for_heavy_buyers():
    bg = clv.BetaGeo()
    bg.params_ = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    summary = pd.DataFrame({"frequency": [0, 1, 500, 500], "recency": [0.0, 10.0, 38.95, 1.0], "T": [39.0] * 4})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alive = bg.probability_alive(summary)
        expected = bg.expected_purchases(summary, horizon=10)
        ll = bg.log_likelihood(summary)
    assert np.isfinite(ll).all() and np.isfinite(expected).all()
    assert alive.iloc[0] == 1.0
    assert alive.iloc[2] > 0.9 and alive.iloc[3] < 1e-6  # bought days ago vs silent for 38 weeks
    assert expected.iloc[2] > 50 and expected.iloc[3] < 1e-3


def test_fit_is_stable_with_hundreds_of_purchases():
    rng = np.random.default_rng(0)
    n = 2000
    x = rng.poisson(1.0, n).astype(float)
    x[:20] = rng.integers(200, 600, 20)
    T = rng.uniform(30, 52, n)
    t_x = np.where(x > 0, T * rng.uniform(0.3, 1, n), 0.0)
    bg = clv.BetaGeo().fit(pd.DataFrame({"frequency": x, "recency": t_x, "T": T}))
    assert bg.converged_ and np.isfinite(bg.loglik_)


def test_non_convergence_is_reported():
    summary = pd.DataFrame({"frequency": [0, 1, 2, 5], "recency": [0.0, 3.0, 8.0, 20.0], "T": [30.0, 25.0, 20.0, 30.0]})
    with pytest.warns(ConvergenceWarning, match="BetaGeo"):
        bg = clv.BetaGeo(max_iter=1).fit(summary)
    assert not bg.converged_
    assert bg.optimizer_message_


def test_gamma_gamma_expected_spend_shrinks_to_population_mean():
    gg = clv.GammaGamma()
    gg.params_ = {"p": 6.25, "q": 3.74, "gamma": 15.44}
    summary = pd.DataFrame({"frequency": [0, 1, 50], "monetary_value": [0.0, 100.0, 100.0]})
    spend = gg.expected_spend(summary)
    population = 6.25 * 15.44 / 2.74
    assert spend.iloc[0] == pytest.approx(population)
    assert population < spend.iloc[1] < spend.iloc[2] < 100


def test_clv_discounting_and_horizon(cdnow_summary, cdnow_bg):
    gg = clv.GammaGamma().fit(cdnow_summary)
    undiscounted = clv.customer_lifetime_value(cdnow_summary, transaction_model=cdnow_bg, spend_model=gg, discount_rate=0.0)
    discounted = clv.customer_lifetime_value(cdnow_summary, transaction_model=cdnow_bg, spend_model=gg, discount_rate=0.05)
    np.testing.assert_allclose(
        undiscounted["clv_amount"], undiscounted["expected_purchases"] * undiscounted["expected_spend_amount"], rtol=1e-9
    )
    assert (discounted["clv_amount"] < undiscounted["clv_amount"]).all()
    assert list(discounted.columns) == ["probability_alive", "expected_purchases", "expected_spend_amount", "clv_amount"]


def test_unfitted_model_raises():
    with pytest.raises(RuntimeError, match="fit"):
        clv.BetaGeo().probability_alive(pd.DataFrame({"frequency": [1], "recency": [1.0], "T": [2.0]}))


def test_fit_rejects_inconsistent_summary():
    with pytest.raises(ValueError, match="recency"):
        clv.BetaGeo().fit(pd.DataFrame({"frequency": [1], "recency": [5.0], "T": [2.0]}))
    with pytest.raises(MissingColumnError, match="T"):
        clv.BetaGeo().fit(pd.DataFrame({"frequency": [1], "recency": [5.0]}))


def test_summarize_reads_aware_times_in_the_business_zone():
    from crm_analytics import frames

    orders = _orders()
    # every purchase at 00:30 Shanghai time: the previous day in UTC
    naive = orders.assign(order_time=orders["order_time"].dt.normalize() + pd.Timedelta(minutes=30))
    aware = naive.assign(order_time=naive["order_time"].dt.tz_localize("Asia/Shanghai"))
    try:
        frames.use_time_zone("Asia/Shanghai")
        from_aware = clv.summarize(aware, calibration_end="2024-01-29", observation_end="2024-02-26", time_unit="D")
    finally:
        frames.use_time_zone(None)
    from_naive = clv.summarize(naive, calibration_end="2024-01-29", observation_end="2024-02-26", time_unit="D")
    pd.testing.assert_frame_equal(from_aware, from_naive)
    assert from_aware.loc["a", "T"] == 28.0, "a's first purchase stays on 1 January"


# --------------------------------------------------------------------------- too little data, degenerate fits


def _simulated_bgnbd(n: int, *, rate: float, dropout: float, weeks: float = 52.0, seed: int = 0) -> pd.DataFrame:
    """BG/NBD inputs of ``n`` customers who all share one purchase rate and one dropout probability."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        t, times = 0.0, []
        while (t := t + rng.exponential(1 / rate)) <= weeks:
            times.append(t)
            if rng.random() < dropout:
                break
        rows.append((len(times), times[-1] if times else 0.0, weeks))
    return pd.DataFrame(rows, columns=["frequency", "recency", "T"])


def test_bgnbd_on_three_customers_is_not_converged():
    summary = pd.DataFrame({"frequency": [1, 2, 0], "recency": [10.0, 20.0, 0.0], "T": [30.0, 30.0, 30.0]})
    with pytest.warns(ConvergenceWarning, match="BetaGeo fit did not converge"):
        bg = clv.BetaGeo().fit(summary)
    assert not bg.converged_
    assert "flat" in bg.convergence_reason_ or "bound" in bg.convergence_reason_
    low, high = clv.PARAMETER_RANGE
    assert all(low / 10 < value < high * 10 * 30 for value in bg.params_.values()), "bounded, no runaway to 1e9"


def test_bgnbd_without_heterogeneity_runs_to_a_bound_and_is_not_converged():
    # everybody shares one dropout probability: a and b run off to infinity together (a degenerate Beta)
    summary = _simulated_bgnbd(300, rate=0.5, dropout=0.1, seed=1)
    with pytest.warns(ConvergenceWarning):
        bg = clv.BetaGeo().fit(summary)
    assert not bg.converged_ and "ran to the optimiser's bound" in bg.convergence_reason_
    status = bg.summary_frame()
    assert (~status["converged"]).all() and (status["convergence_reason"] == bg.convergence_reason_).all()


def test_bgnbd_without_any_repeat_purchase_is_not_converged():
    summary = pd.DataFrame({"frequency": [0, 0, 0], "recency": [0.0, 0.0, 0.0], "T": [30.0, 20.0, 10.0]})
    with pytest.warns(ConvergenceWarning):
        bg = clv.BetaGeo().fit(summary)
    assert not bg.converged_ and bg.convergence_reason_.startswith("r = ")


def test_gamma_gamma_with_q_below_one_is_not_converged():
    rng = np.random.default_rng(0)
    summary = pd.DataFrame({"frequency": rng.integers(5, 30, 300), "monetary_value": np.exp(rng.normal(3, 2.5, 300))})
    with pytest.warns(ConvergenceWarning, match="GammaGamma"):
        gg = clv.GammaGamma().fit(summary)
    assert gg.params_["q"] < 1 and not gg.converged_ and "q = " in gg.convergence_reason_


def test_gamma_gamma_on_a_few_customers_is_not_converged():
    summary = pd.DataFrame({"frequency": [1, 2, 0], "monetary_value": [10.0, 20.0, 0.0]})
    with pytest.warns(ConvergenceWarning):
        gg = clv.GammaGamma().fit(summary)
    assert not gg.converged_ and gg.convergence_reason_


def test_published_fits_stay_converged_without_a_reason(cdnow_bg, cdnow_summary):
    assert cdnow_bg.converged_ and cdnow_bg.convergence_reason_ == ""
    gg = clv.GammaGamma().fit(cdnow_summary)
    assert gg.converged_ and gg.convergence_reason_ == ""


def test_too_little_data_counts_repeat_customers():
    summary = pd.DataFrame({"frequency": [0] * 50 + [1] * 29, "monetary_value": [0.0] * 50 + [5.0] * 28 + [0.0]})
    assert clv.too_little_data(summary, model="bgnbd") == (
        f"too little data (n = 29 customers with a repeat purchase, needs {clv.MIN_REPEAT_CUSTOMERS_BGNBD})")
    assert clv.too_little_data(summary, model="gamma_gamma").startswith(
        "too little data (n = 28 customers with a repeat purchase and positive spend")
    enough = pd.DataFrame({"frequency": [1] * 30, "monetary_value": [5.0] * 30})
    assert clv.too_little_data(enough, model="bgnbd") == clv.too_little_data(enough, model="gamma_gamma") == ""
    with pytest.raises(ValueError, match="model"):
        clv.too_little_data(enough, model="pareto_nbd")


def test_fit_status_frame_leaves_out_skipped_fits(cdnow_bg):
    both_skipped = clv.fit_status_frame({"BG/NBD": None, "Gamma-Gamma": None})
    assert both_skipped.empty and "convergence_reason" in both_skipped.columns
    one = clv.fit_status_frame({"BG/NBD": cdnow_bg, "Gamma-Gamma": None})
    assert set(one["model"]) == {"BG/NBD"} and set(one["item"]) >= {"r", "alpha", "a", "b", "loglik"}
