"""One A/B test: a checkout redesign shown to half of the web customers who visited during six weeks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm_analytics.demo import calendar

EXPERIMENT_ID_PREFIX = "checkout_redesign"
VARIANTS = ("control", "treatment")
CONVERSION = np.array([0.10, 0.115])
REVENUE_PER_CONVERTER = np.array([280.0, 300.0])  # mean CNY
REVENUE_SHAPE = 2.0
DURATION_DAYS = 42
VISIT_SHARE = 0.75


@dataclass
class Assignments:
    """One row per participant, sorted by assignment time."""

    person: np.ndarray
    variant: np.ndarray  # 0 control, 1 treatment
    assigned: np.ndarray
    converted: np.ndarray
    revenue: np.ndarray
    start: int
    end: int

    @property
    def experiment_id(self) -> str:
        return f"{EXPERIMENT_ID_PREFIX}_{str(np.datetime64(self.start + calendar.LOCAL_OFFSET, 's'))[:4]}"


def window(period: calendar.Period) -> tuple[int, int]:
    """Experiment window (UTC seconds): six weeks starting nine months before the export date (or mid-period)."""
    start_day = max(period.n_days - 270, period.n_days // 3)
    start = period.start + start_day * calendar.DAY
    return start, min(start + DURATION_DAYS * calendar.DAY, period.end)


def simulate_experiment(
    rng: np.random.Generator, period: calendar.Period, web_signup: np.ndarray, dropout_time: np.ndarray
) -> Assignments:
    """Assign web customers alive during the window 50/50 and draw conversion and revenue."""
    start, end = window(period)
    alive = (web_signup >= 0) & (web_signup < end - calendar.DAY) & ((dropout_time < 0) | (dropout_time > start))
    person = np.flatnonzero(alive & (rng.random(len(web_signup)) < VISIT_SHARE))
    first = np.maximum(web_signup[person], start)
    assigned = first + (rng.random(len(person)) * (end - first)).astype(np.int64)
    variant = (rng.random(len(person)) < 0.5).astype(np.int8)
    converted = rng.random(len(person)) < CONVERSION[variant]
    revenue = np.where(converted, np.round(rng.gamma(REVENUE_SHAPE, REVENUE_PER_CONVERTER[variant] / REVENUE_SHAPE), 2), 0.0)
    order = np.argsort(assigned, kind="stable")
    return Assignments(person[order], variant[order], assigned[order], converted[order], revenue[order], start, end)


def truth(assignments: Assignments) -> dict:
    """Planted and realised parameters of the experiment, for ground_truth/experiment.json."""
    realised = {}
    for code, name in enumerate(VARIANTS):
        rows = assignments.variant == code
        realised[name] = {
            "n": int(rows.sum()),
            "conversions": int(assignments.converted[rows].sum()),
            "conversion_rate": float(assignments.converted[rows].mean()) if rows.any() else None,
            "revenue_per_participant": float(assignments.revenue[rows].mean()) if rows.any() else None,
        }
    return {
        "experiment_id": assignments.experiment_id,
        "variants": list(VARIANTS),
        "start_time": str(np.datetime64(assignments.start + calendar.LOCAL_OFFSET, "s")),
        "end_time": str(np.datetime64(assignments.end + calendar.LOCAL_OFFSET, "s")),
        "time_zone": "Asia/Shanghai",
        "assignment_share_treatment": 0.5,
        "planted": {
            "conversion_rate": dict(zip(VARIANTS, CONVERSION.tolist())),
            "absolute_lift": round(float(CONVERSION[1] - CONVERSION[0]), 6),
            "relative_lift": round(float(CONVERSION[1] / CONVERSION[0] - 1), 6),
            "revenue_per_converter": dict(zip(VARIANTS, REVENUE_PER_CONVERTER.tolist())),
            "revenue_per_participant": dict(zip(VARIANTS, (CONVERSION * REVENUE_PER_CONVERTER).tolist())),
        },
        "realised": realised,
    }
