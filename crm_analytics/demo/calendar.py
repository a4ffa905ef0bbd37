"""Time in the demo world: the period, seasonality, promotion peaks and time-of-day profiles.

Times are int64 seconds since the Unix epoch (UTC). Calendar days are days of
the business time zone (Asia/Shanghai, UTC+8 all year, no daylight saving).
Seasonal purchase intensity is applied with a time warp: purchases are
simulated in "operational" weeks, in which the intensity is constant, and
mapped back onto calendar time through the cumulative daily intensity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm_analytics.demo import reference

DAY = 86_400
HOUR = 3_600
LOCAL_OFFSET = 8 * HOUR  # Asia/Shanghai, no daylight saving time
WEEKDAY_WEIGHTS = np.array([0.92, 0.9, 0.9, 0.95, 1.05, 1.3, 1.25])  # Monday .. Sunday


@dataclass(frozen=True)
class Period:
    """The simulated period: local calendar days ``start_date`` .. ``end_date`` inclusive."""

    first_day: np.datetime64  # local date of day 0
    n_days: int

    @classmethod
    def from_dates(cls, start_date: str, end_date: str) -> Period:
        first = np.datetime64(start_date, "D")
        n_days = int((np.datetime64(end_date, "D") - first).astype(int)) + 1
        if n_days < 60:
            raise ValueError(f"the demo period must span at least 60 days; got {start_date} .. {end_date}")
        return cls(first, n_days)

    @property
    def start(self) -> int:
        """UTC seconds of local midnight starting the first day."""
        return int(self.first_day.astype("datetime64[s]").astype(np.int64)) - LOCAL_OFFSET

    @property
    def end(self) -> int:
        """UTC seconds of local midnight ending the last day (exclusive)."""
        return self.start + self.n_days * DAY

    def days(self) -> np.ndarray:
        """Local calendar dates of every day of the period."""
        return self.first_day + np.arange(self.n_days)

    def day_index(self, t: np.ndarray) -> np.ndarray:
        """Index of the local calendar day of UTC seconds ``t`` (may fall outside the period)."""
        return (np.asarray(t, dtype=np.int64) - self.start) // DAY


def _month_day(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    months = days.astype("datetime64[M]")
    return months.astype(int) % 12 + 1, (days - months.astype("datetime64[D]")).astype(int) + 1


def _boost(days: np.ndarray, month: int, day: int, factors: dict[int, float]) -> np.ndarray:
    """Multiplier that is ``factors[k]`` on the day ``k`` days after month/day each year."""
    out = np.ones(len(days))
    m, d = _month_day(days)
    anchor = np.flatnonzero((m == month) & (d == day))
    for a in anchor:
        for offset, factor in factors.items():
            if 0 <= a + offset < len(days):
                out[a + offset] = max(out[a + offset], factor)
    return out


def promotion_factor(period: Period) -> np.ndarray:
    """Per-day promotion multiplier: 618 (June 18), Double 11 (Nov 11) and Double 12 peaks."""
    days = period.days()
    ramp_618 = {k: 1.35 for k in range(-17, -2)} | {-2: 2.0, -1: 2.5, 0: 4.5, 1: 1.5}
    ramp_d11 = {k: 1.5 for k in range(-10, -1)} | {-1: 2.5, 0: 7.0, 1: 2.0, 2: 1.3}
    return _boost(days, 6, 18, ramp_618) * _boost(days, 11, 11, ramp_d11) * _boost(days, 12, 12, {0: 2.2})


def spring_festival_factor(period: Period) -> np.ndarray:
    """Per-day multiplier with a dip around every Spring Festival (logistics stop, people travel)."""
    out = np.ones(period.n_days)
    for date in reference.SPRING_FESTIVALS:
        centre = int((np.datetime64(date, "D") - period.first_day).astype(int))
        for offset in range(-4, 8):
            if 0 <= centre + offset < period.n_days:
                out[centre + offset] = 0.35 if -1 <= offset <= 4 else 0.65
    return out


def purchase_intensity(period: Period) -> np.ndarray:
    """Relative purchase intensity of every local day, mean 1 over the period.

    Weekends are higher, winter slightly higher, 618 and Double 11 several
    times the base rate, Spring Festival a dip.
    """
    days = period.days()
    weekday = WEEKDAY_WEIGHTS[(days.astype(int) + 3) % 7]  # 1970-01-01 was a Thursday
    day_of_year = (days - days.astype("datetime64[Y]").astype("datetime64[D]")).astype(int)
    yearly = 1.0 + 0.12 * np.cos(2 * np.pi * (day_of_year - 355) / 365.25)
    m = weekday * yearly * promotion_factor(period) * spring_festival_factor(period)
    return m / m.mean()


@dataclass(frozen=True)
class Warp:
    """Map calendar time onto operational weeks (constant intensity) and back."""

    period: Period
    cumulative_weeks: np.ndarray  # operational weeks elapsed at the start of each day, length n_days + 1

    @classmethod
    def of(cls, period: Period, intensity: np.ndarray) -> Warp:
        return cls(period, np.concatenate([[0.0], np.cumsum(intensity) / 7.0]))

    @property
    def total_weeks(self) -> float:
        return float(self.cumulative_weeks[-1])

    def to_operational(self, t: np.ndarray) -> np.ndarray:
        """Operational weeks elapsed at UTC seconds ``t``."""
        days = (np.asarray(t, dtype=np.float64) - self.period.start) / DAY
        return np.interp(days, np.arange(self.period.n_days + 1), self.cumulative_weeks)

    def to_day(self, u: np.ndarray) -> np.ndarray:
        """Local day index (integer) at operational weeks ``u``."""
        days = np.interp(u, self.cumulative_weeks, np.arange(self.period.n_days + 1))
        return np.minimum(days.astype(np.int64), self.period.n_days - 1)


def sample_days(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Draw ``size`` day indices with probability proportional to ``weights``."""
    cdf = np.cumsum(weights)
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), len(weights) - 1)


def sample_seconds_of_day(rng: np.random.Generator, channel: np.ndarray, channels: tuple[str, ...]) -> np.ndarray:
    """Seconds after local midnight, drawn from the hour-of-day profile of each row's channel."""
    out = np.empty(len(channel), dtype=np.int64)
    u = rng.random(len(channel))
    for code, name in enumerate(channels):
        rows = channel == code
        cdf = np.cumsum(reference.HOUR_WEIGHTS[name])
        out[rows] = np.searchsorted(cdf, u[rows] * cdf[-1], side="right") * HOUR
    return out + rng.integers(0, HOUR, len(channel))


def local_time(period: Period, day: np.ndarray, seconds_of_day: np.ndarray) -> np.ndarray:
    """UTC seconds of local day index ``day`` at ``seconds_of_day`` after local midnight."""
    return period.start + np.asarray(day, dtype=np.int64) * DAY + seconds_of_day
