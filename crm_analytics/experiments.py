"""A/B tests: conversion and revenue lift with intervals, sample-ratio checks, power and sample size.

Input is the ``experiment_assignments`` table (one row per participant:
``experiment_id``, ``customer_id``, ``variant``, ``is_converted``,
``revenue_amount``). Lifts are always treatment minus control.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import power_proportions_2indep, proportions_ztest, samplesize_proportions_2indep_onetail

from crm_analytics import frames, plots


class SampleRatioMismatchWarning(UserWarning):
    """The observed split between variants is very unlikely under the planned split."""


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    return float(stats.norm.ppf(1 - alpha / 2))


def _arms(
    assignments: frames.TableLike, columns: list[str], *, experiment_id, variant_col, control, treatment, context
) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames.require_columns(assignments, [variant_col, *columns], context=context)
    df = frames.to_pandas(assignments)
    if experiment_id is not None:
        frames.require_columns(df, ["experiment_id"], context=context)
        df = df.loc[df["experiment_id"] == experiment_id]
        if df.empty:
            raise ValueError(f"{context}: no rows for experiment_id {experiment_id!r}")
    arms = {}
    for name in (control, treatment):
        arm = df.loc[df[variant_col] == name]
        if arm.empty:
            raise ValueError(f"{context}: variant {name!r} has no participants; variants present: {sorted(df[variant_col].dropna().unique())}")
        arms[name] = arm
    return arms[control], arms[treatment]


def conversion_test(
    assignments: frames.TableLike,
    *,
    experiment_id: str | None = None,
    variant_col: str = "variant",
    converted_col: str = "is_converted",
    control: str = "control",
    treatment: str = "treatment",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Two-proportion z-test of the conversion rates, with intervals for the absolute and relative lift.

    The test uses the pooled standard error (``statsmodels`` ``proportions_ztest``);
    the absolute-lift interval is the unpooled Wald interval; the relative-lift
    interval is the delta-method interval on the log of the rate ratio.

    Parameters
    ----------
    assignments : pandas.DataFrame or ibis Table
        One row per participant with ``variant_col`` and ``converted_col`` (bool);
        ``experiment_id`` too when ``experiment_id`` is given.
    alpha : float
        Two-sided significance level; intervals have coverage ``1 - alpha``.

    Returns
    -------
    pandas.DataFrame
        One row: ``n_control``, ``n_treatment``, ``conversions_control``,
        ``conversions_treatment``, ``rate_control_pct``, ``rate_treatment_pct``,
        ``absolute_lift_pct`` (percentage points) with ``absolute_lift_low_pct`` /
        ``absolute_lift_high_pct``, ``relative_lift_pct`` (percent of the control
        rate) with ``relative_lift_low_pct`` / ``relative_lift_high_pct``, ``z``,
        ``p_value``, ``is_significant``.
    """
    a, b = _arms(
        assignments, [converted_col], experiment_id=experiment_id, variant_col=variant_col,
        control=control, treatment=treatment, context="conversion_test(assignments)",
    )
    n = np.array([len(a), len(b)], dtype=float)
    x = np.array([a[converted_col].astype(bool).sum(), b[converted_col].astype(bool).sum()], dtype=float)
    p = x / n
    z_crit = _z(alpha)
    diff = p[1] - p[0]
    se_diff = np.sqrt((p * (1 - p) / n).sum())
    z_stat, p_value = proportions_ztest(x[::-1], n[::-1]) if 0 < x.sum() < n.sum() else (np.nan, np.nan)
    ratio = p[1] / p[0] if p[0] > 0 else np.nan
    se_log = np.sqrt((1 - p[1]) / x[1] + (1 - p[0]) / x[0]) if (x > 0).all() else np.nan
    return pd.DataFrame(
        [
            {
                "n_control": int(n[0]),
                "n_treatment": int(n[1]),
                "conversions_control": int(x[0]),
                "conversions_treatment": int(x[1]),
                "rate_control_pct": 100 * p[0],
                "rate_treatment_pct": 100 * p[1],
                "absolute_lift_pct": 100 * diff,
                "absolute_lift_low_pct": 100 * (diff - z_crit * se_diff),
                "absolute_lift_high_pct": 100 * (diff + z_crit * se_diff),
                "relative_lift_pct": 100 * (ratio - 1),
                "relative_lift_low_pct": 100 * (ratio * np.exp(-z_crit * se_log) - 1),
                "relative_lift_high_pct": 100 * (ratio * np.exp(z_crit * se_log) - 1),
                "z": float(z_stat),
                "p_value": float(p_value),
                "is_significant": bool(p_value < alpha),
            }
        ]
    )


def revenue_test(
    assignments: frames.TableLike,
    *,
    experiment_id: str | None = None,
    variant_col: str = "variant",
    revenue_col: str = "revenue_amount",
    control: str = "control",
    treatment: str = "treatment",
    alpha: float = 0.05,
    n_boot: int = 2000,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Compare revenue per participant: Welch's t-test and a percentile bootstrap interval of the difference.

    Participants without revenue count as 0 (revenue per user, not per buyer).

    Returns
    -------
    pandas.DataFrame
        One row: ``n_control``, ``n_treatment``, ``revenue_per_user_control_amount``,
        ``revenue_per_user_treatment_amount``, ``difference_amount`` (dataset currency per participant)
        with the Welch interval ``welch_low_amount`` / ``welch_high_amount`` and the
        bootstrap interval ``bootstrap_low_amount`` / ``bootstrap_high_amount``,
        ``relative_lift_pct``, ``t``, ``dof``, ``p_value``, ``is_significant``.
    """
    a, b = _arms(
        assignments, [revenue_col], experiment_id=experiment_id, variant_col=variant_col,
        control=control, treatment=treatment, context="revenue_test(assignments)",
    )
    ya = a[revenue_col].astype(float).fillna(0).to_numpy()
    yb = b[revenue_col].astype(float).fillna(0).to_numpy()
    welch = stats.ttest_ind(yb, ya, equal_var=False)
    welch_ci = welch.confidence_interval(confidence_level=1 - alpha)
    rng = np.random.default_rng(random_state)
    boot_a, boot_b = _bootstrap_means(ya, n_boot, rng), _bootstrap_means(yb, n_boot, rng)
    low, high = np.quantile(boot_b - boot_a, [alpha / 2, 1 - alpha / 2])
    diff = yb.mean() - ya.mean()
    return pd.DataFrame(
        [
            {
                "n_control": len(ya),
                "n_treatment": len(yb),
                "revenue_per_user_control_amount": ya.mean(),
                "revenue_per_user_treatment_amount": yb.mean(),
                "difference_amount": diff,
                "welch_low_amount": float(welch_ci.low),
                "welch_high_amount": float(welch_ci.high),
                "bootstrap_low_amount": float(low),
                "bootstrap_high_amount": float(high),
                "relative_lift_pct": 100 * diff / ya.mean() if ya.mean() else np.nan,
                "t": float(welch.statistic),
                "dof": float(welch.df),
                "p_value": float(welch.pvalue),
                "is_significant": bool(welch.pvalue < alpha),
            }
        ]
    )


def _bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator, *, max_cells: int = 10_000_000) -> np.ndarray:
    """Means of ``n_boot`` resamples of ``values``, drawn in blocks of at most ``max_cells`` values."""
    per_block = max(1, max_cells // max(len(values), 1))
    blocks = [rng.choice(values, size=(min(per_block, n_boot - start), len(values))).mean(axis=1) for start in range(0, n_boot, per_block)]
    return np.concatenate(blocks)


def sample_ratio_check(
    assignments: frames.TableLike,
    *,
    experiment_id: str | None = None,
    variant_col: str = "variant",
    expected_shares: dict[str, float] | None = None,
    threshold: float = 0.001,
) -> pd.DataFrame:
    """Chi-square goodness-of-fit test of the variant counts against the planned split (sample-ratio mismatch).

    Parameters
    ----------
    expected_shares : dict, optional
        Planned share per variant; default: an equal split over the variants present.
    threshold : float
        p-value below which the split is declared a mismatch (0.001 is the usual, strict choice).

    Returns
    -------
    pandas.DataFrame
        One row per variant: ``variant``, ``n_participants``, ``observed_pct``,
        ``expected_pct``, then (repeated on every row) ``chi2``, ``p_value``,
        ``is_mismatch`` and ``message`` (a sentence for the report).
    """
    frames.require_columns(assignments, [variant_col], context="sample_ratio_check(assignments)")
    df = frames.to_pandas(assignments)
    if experiment_id is not None:
        df = df.loc[df["experiment_id"] == experiment_id]
    counts = df[variant_col].value_counts().sort_index()
    if counts.empty:
        raise ValueError("sample_ratio_check(assignments): no participants")
    shares = expected_shares or {v: 1 / len(counts) for v in counts.index}
    unknown = sorted(set(counts.index) - set(shares))
    if unknown:
        raise ValueError(f"sample_ratio_check: variants {unknown} have no expected share; expected_shares has {sorted(shares)}")
    counts = counts.reindex(list(shares), fill_value=0)
    expected = np.array([shares[v] for v in counts.index], dtype=float)
    expected = expected / expected.sum() * counts.sum()
    chi2, p_value = stats.chisquare(counts.to_numpy(), expected)
    is_mismatch = bool(p_value < threshold)
    observed = ", ".join(f"{v} {n:,}" for v, n in counts.items())
    message = (
        f"SAMPLE RATIO MISMATCH: observed {observed}; p = {p_value:.2g} < {threshold}. "
        "Assignment or logging is broken; do not trust the lift until it is explained."
        if is_mismatch
        else f"Sample ratio OK: observed {observed} (p = {p_value:.2g})."
    )
    return pd.DataFrame(
        {
            "variant": counts.index,
            "n_participants": counts.to_numpy(),
            "observed_pct": 100 * counts.to_numpy() / counts.sum(),
            "expected_pct": 100 * expected / expected.sum(),
            "chi2": float(chi2),
            "p_value": float(p_value),
            "is_mismatch": is_mismatch,
            "message": message,
        }
    )


def warn_on_sample_ratio_mismatch(check: pd.DataFrame) -> bool:
    """Issue a ``SampleRatioMismatchWarning`` when a ``sample_ratio_check`` result shows a mismatch; return whether it did."""
    frames.require_columns(check, ["is_mismatch", "message"], context="warn_on_sample_ratio_mismatch(check)")
    if bool(check["is_mismatch"].iloc[0]):
        warnings.warn(check["message"].iloc[0], SampleRatioMismatchWarning, stacklevel=2)
        return True
    return False


def sample_size(
    baseline_rate: float,
    target_rate: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    alternative: str = "two-sided",
) -> int:
    """Participants needed in the control arm to detect ``baseline_rate`` -> ``target_rate`` (rates as fractions).

    Normal approximation with the pooled variance under the null and the
    unpooled variance under the alternative (``statsmodels``
    ``samplesize_proportions_2indep_onetail``); the treatment arm needs
    ``ratio`` times as many. For 10% vs 12%, alpha 0.05 two-sided and power 0.8
    this gives 3,841 per arm.
    """
    for name, rate in (("baseline_rate", baseline_rate), ("target_rate", target_rate)):
        if not 0 < rate < 1:
            raise ValueError(f"{name} must be a fraction between 0 and 1, got {rate}")
    if baseline_rate == target_rate:
        raise ValueError("baseline_rate and target_rate are equal: no effect to detect")
    n = samplesize_proportions_2indep_onetail(
        target_rate - baseline_rate, baseline_rate, power, ratio=ratio, alpha=alpha, alternative=alternative
    )
    return int(np.ceil(n))


def power_curve(
    baseline_rate: float,
    *,
    n_per_arm: Sequence[int],
    relative_lifts_pct: Sequence[float] = (2, 5, 10, 15, 20, 30),
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Power of the two-sided two-proportion test for each arm size and relative lift.

    Returns
    -------
    pandas.DataFrame
        ``n_per_arm``, ``relative_lift_pct``, ``target_rate`` (fraction), ``power`` (0-1).
    """
    rows = []
    for n in n_per_arm:
        for lift in relative_lifts_pct:
            target = baseline_rate * (1 + lift / 100)
            result = power_proportions_2indep(target - baseline_rate, baseline_rate, n, alpha=alpha, return_results=True)
            rows.append({"n_per_arm": int(n), "relative_lift_pct": float(lift), "target_rate": target, "power": float(result.power)})
    return pd.DataFrame(rows)


def plot_lift(conversion: pd.DataFrame, *, ax=None):
    """Point and 95% interval of the absolute conversion lift (percentage points), with the zero line; returns the Axes."""
    frames.require_columns(conversion, ["absolute_lift_pct", "absolute_lift_low_pct", "absolute_lift_high_pct"], context="plot_lift(conversion)")
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(8, 2.5))
    row = conversion.iloc[0]
    ax.errorbar(
        [row["absolute_lift_pct"]], [0],
        xerr=[[row["absolute_lift_pct"] - row["absolute_lift_low_pct"]], [row["absolute_lift_high_pct"] - row["absolute_lift_pct"]]],
        fmt="o", capsize=8, color="#2a6f97", markersize=9,
    )
    ax.axvline(0, color="grey", linestyle="--")
    ax.set_yticks([])
    ax.set_xlabel("conversion lift, treatment - control (percentage points)")
    ax.set_title(f"Lift {row['absolute_lift_pct']:+.2f} pp [{row['absolute_lift_low_pct']:+.2f}, {row['absolute_lift_high_pct']:+.2f}]")
    return ax


def plot_power_curve(curve: pd.DataFrame, *, ax=None):
    """Power against arm size, one line per relative lift, with the 80% line; returns the Axes."""
    frames.require_columns(curve, ["n_per_arm", "relative_lift_pct", "power"], context="plot_power_curve(curve)")
    import seaborn as sns

    plots.set_style()
    ax = plots.new_axes(ax)
    sns.lineplot(data=curve, x="n_per_arm", y="power", hue="relative_lift_pct", marker="o", ax=ax, palette=plots.PALETTE)
    ax.axhline(0.8, color="grey", linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("participants per arm")
    ax.set_ylabel("power")
    ax.legend(title="relative lift (%)")
    ax.set_title("Power curve")
    return ax
