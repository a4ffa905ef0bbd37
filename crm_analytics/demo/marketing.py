"""Campaigns, touchpoints and the conversions they cause.

Marketing reaches people in journeys: bursts of 1-4 touches within two weeks,
each on one channel. A journey converts with probability
``1 - (1 - baseline) * prod(1 - effect[channel])`` over its touches, and a
converting journey creates a real extra order within a week of its last touch.
The effects differ clearly by channel (WeChat strong, SMS nearly useless), so
multi-touch attribution over touchpoints and orders can recover the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm_analytics.demo import calendar

CHANNELS = ("email", "sms", "wechat", "paid_search", "social", "display")
CHANNEL_NAMES_CN = ("邮件", "短信", "微信", "搜索广告", "社交媒体", "展示广告")
CHANNEL_REACH = np.array([0.17, 0.17, 0.18, 0.16, 0.16, 0.16])  # share of touches: even, so effects (not exposure) decide attribution
CONVERSION_EFFECT = np.array([0.06, 0.004, 0.16, 0.09, 0.035, 0.015])  # per touch, planted
COST_PER_TOUCH = np.array([0.05, 0.08, 0.35, 2.6, 1.2, 0.7])  # CNY
BASELINE_CONVERSION = 0.03
JOURNEYS_PER_WEEK = 0.05
JOURNEY_DAYS = 14
MAX_DELAY_DAYS = 7
MEAN_DELAY_DAYS = 1.5


@dataclass
class Touches:
    """Column arrays, one row per touchpoint, sorted by time."""

    person: np.ndarray
    time: np.ndarray
    channel: np.ndarray  # int8, index into CHANNELS
    journey: np.ndarray  # int64


@dataclass
class Journeys:
    """One row per journey: its person, last touch, conversion probability and outcome."""

    person: np.ndarray
    last_touch: np.ndarray
    probability: np.ndarray
    converted: np.ndarray
    conversion_time: np.ndarray
    channel_touches: np.ndarray  # (n, 6) touches per channel


def simulate_journeys(
    rng: np.random.Generator, period: calendar.Period, window_start: np.ndarray, window_end: np.ndarray
) -> tuple[Touches, Journeys]:
    """Journeys of every person inside their window [start, end) (UTC seconds; empty windows get none)."""
    weeks = np.maximum(window_end - window_start, 0) / (7 * calendar.DAY)
    n_journeys = rng.poisson(JOURNEYS_PER_WEEK * weeks)
    person = np.repeat(np.arange(len(weeks)), n_journeys)
    span = window_end[person] - window_start[person]
    start = window_start[person] + (rng.random(len(person)) * span).astype(np.int64)
    n_touches = 1 + rng.binomial(3, 0.4, len(person))
    journey = np.repeat(np.arange(len(person)), n_touches)
    offset = (rng.random(len(journey)) * JOURNEY_DAYS * calendar.DAY).astype(np.int64)
    offset[np.cumsum(n_touches) - n_touches] = 0  # a journey starts with a touch
    time = np.minimum(start[journey] + offset, window_end[person][journey] - 60)
    channel = rng.choice(len(CHANNELS), size=len(journey), p=CHANNEL_REACH / CHANNEL_REACH.sum()).astype(np.int8)
    counts = np.zeros((len(person), len(CHANNELS)), dtype=np.int64)
    np.add.at(counts, (journey, channel), 1)
    probability = 1 - (1 - BASELINE_CONVERSION) * np.prod((1 - CONVERSION_EFFECT) ** counts, axis=1)
    last = np.full(len(person), np.iinfo(np.int64).min)
    np.maximum.at(last, journey, time)
    converted = rng.random(len(person)) < probability
    delay = np.minimum(rng.exponential(MEAN_DELAY_DAYS, len(person)), MAX_DELAY_DAYS) * calendar.DAY
    conversion_time = last + 600 + delay.astype(np.int64)
    order = np.argsort(time, kind="stable")
    touches = Touches(person[journey][order], time[order], channel[order], journey[order])
    return touches, Journeys(person, last, probability, converted, conversion_time, counts)


def removal_effects(journeys: Journeys) -> np.ndarray:
    """Expected conversions lost per channel if that channel's touches were removed (the true incremental effect)."""
    base = journeys.probability.sum()
    out = np.empty(len(CHANNELS))
    for c in range(len(CHANNELS)):
        counts = journeys.channel_touches.copy()
        counts[:, c] = 0
        without = 1 - (1 - BASELINE_CONVERSION) * np.prod((1 - CONVERSION_EFFECT) ** counts, axis=1)
        out[c] = base - without.sum()
    return out


def campaign_index(period: calendar.Period, channel: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Campaign of a touch: one campaign per channel and calendar month."""
    month = (period.first_day + period.day_index(time)).astype("datetime64[M]")
    first_month = period.first_day.astype("datetime64[M]")
    return channel.astype(np.int64) * n_months(period) + (month - first_month).astype(np.int64)


def n_months(period: calendar.Period) -> int:
    """Calendar months the period touches."""
    last = (period.first_day + period.n_days - 1).astype("datetime64[M]")
    return int((last - period.first_day.astype("datetime64[M]")).astype(int)) + 1


def _theme(month: int) -> str:
    return {1: "年货节", 2: "开春焕新", 6: "618大促", 11: "双11狂欢", 12: "双12年终盛典"}.get(month, "会员日")


def campaigns(rng: np.random.Generator, period: calendar.Period, touch_campaign: np.ndarray) -> dict[str, list]:
    """The campaign table: name, channel, first and last day, spend (from touches reached times cost per touch)."""
    months = n_months(period)
    first_month = period.first_day.astype("datetime64[M]")
    last_day = period.first_day + period.n_days - 1
    reached = np.bincount(touch_campaign, minlength=months * len(CHANNELS))
    rows: dict[str, list] = {"number": [], "name": [], "channel": [], "start_date": [], "end_date": [], "spend": []}
    for c, channel in enumerate(CHANNELS):
        for m in range(months):
            month = first_month + m
            start = max(month.astype("datetime64[D]"), period.first_day)
            end = min((month + 1).astype("datetime64[D]") - 1, last_day)
            k = c * months + m
            label = str(month)
            rows["number"].append(k + 1)
            rows["name"].append(f"{label} {_theme(int(label[5:7]))} - {CHANNEL_NAMES_CN[c]}")
            rows["channel"].append(channel)
            rows["start_date"].append(str(start))
            rows["end_date"].append(str(end))
            rows["spend"].append(round(float(reached[k] * COST_PER_TOUCH[c] * rng.uniform(0.9, 1.1) + 200.0), 2))
    return rows
