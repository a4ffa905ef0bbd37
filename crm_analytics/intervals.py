"""Confidence intervals of proportions, shared by the analyses and the pages.

- ``wilson_interval``: the Wilson score interval of successes in trials, as fractions (0-1).

The normal quantile comes from the standard library, so that pages can use this without importing scipy; it
agrees with scipy's and statsmodels' to about 1e-15.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def wilson_interval(successes, trials, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of ``successes`` in ``trials``, element-wise.

    Parameters
    ----------
    successes, trials
        Counts (scalars or array-likes of one shape); ``successes`` <= ``trials``.
    confidence
        The interval's coverage, between 0 and 1 (0.95: a 95 % interval).

    Returns
    -------
    (lower, upper)
        Arrays of fractions in [0, 1] (rounding never takes them outside), NaN where ``trials`` is 0.
        The formula of ``statsmodels``' ``proportion_confint(method="wilson")``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie between 0 and 1 (0.95 for a 95 % interval), not {confidence!r}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    n = np.atleast_1d(np.asarray(trials, dtype="float64"))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.atleast_1d(np.asarray(successes, dtype="float64")) / n
        denominator = 1 + z**2 / n
        centre = (share + z**2 / (2 * n)) / denominator
        half_width = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / denominator
    empty = n == 0
    lower = np.where(empty, np.nan, np.clip(centre - half_width, 0, 1))
    upper = np.where(empty, np.nan, np.clip(centre + half_width, 0, 1))
    return lower, upper
