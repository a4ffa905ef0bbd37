"""The B2B opportunity pipeline: corporate-gifting and bulk-purchase accounts.

Opportunities move lead -> qualified -> proposal -> negotiation -> won, and are
lost at any stage. The chance of advancing at each stage differs by lead
source and by sales representative; stage durations are gamma distributed.
Opportunities whose next step falls after the export date stay open.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm_analytics.demo import calendar

STAGES = ("lead", "qualified", "proposal", "negotiation")
LEAD_SOURCES = ("web_form", "trade_show", "referral", "outbound", "partner")
LEAD_SOURCE_SHARE = np.array([0.3, 0.2, 0.15, 0.2, 0.15])
LEAD_SOURCE_LOGIT = np.array([0.0, -0.2, 0.8, -0.7, 0.4])
LEAD_SOURCE_AMOUNT = np.array([30_000.0, 60_000.0, 45_000.0, 25_000.0, 80_000.0])
OWNERS = ("Chen Jing", "Li Wei", "Wang Fang", "Zhang Lei", "Liu Yang", "Zhao Min", "Huang Tao", "Zhou Na")
OWNER_LOGIT = np.array([0.5, 0.2, 0.0, -0.1, -0.3, 0.3, -0.6, 0.1])
OWNER_SPEED = np.array([0.8, 1.0, 1.1, 0.9, 1.3, 1.0, 1.2, 0.9])  # multiplier on stage durations
ADVANCE_BASE = np.array([0.6, 0.65, 0.7, 0.6])  # leave stage k forwards (the last one: won)
STAGE_DAYS = np.array([5.0, 10.0, 14.0, 12.0])
ACCOUNT_SHARE = 0.03


def advance_probability(source: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """(n, 4) probability of moving forward from each stage, for each (lead source, owner)."""
    base = np.log(ADVANCE_BASE / (1 - ADVANCE_BASE))
    logit = base[None, :] + LEAD_SOURCE_LOGIT[source][:, None] + OWNER_LOGIT[owner][:, None]
    return 1 / (1 + np.exp(-logit))


def win_rates() -> dict[str, dict[str, float]]:
    """Planted probability that a new lead is eventually won, by lead source (average owner) and by owner (average source)."""
    by_source = {s: float(np.mean(np.prod(advance_probability(np.full(len(OWNERS), i), np.arange(len(OWNERS))), axis=1)))
                 for i, s in enumerate(LEAD_SOURCES)}
    by_owner = {o: float(np.sum(LEAD_SOURCE_SHARE * np.prod(advance_probability(np.arange(len(LEAD_SOURCES)), np.full(len(LEAD_SOURCES), j)), axis=1)))
                for j, o in enumerate(OWNERS)}
    return {"by_lead_source": by_source, "by_owner": by_owner}


@dataclass
class Pipeline:
    """Opportunities (one row each) and their stage history (one row per stage entered)."""

    person: np.ndarray
    created: np.ndarray
    source: np.ndarray
    owner: np.ndarray
    amount: np.ndarray
    status: np.ndarray  # 0 open, 1 won, 2 lost
    closed: np.ndarray  # UTC seconds, -1 while open
    history_opportunity: np.ndarray
    history_stage: np.ndarray  # index into STAGES + ("won", "lost")
    history_time: np.ndarray


def simulate_pipeline(rng: np.random.Generator, period: calendar.Period, first_time: np.ndarray) -> Pipeline:
    """Opportunities of about 3 % of persons, created after ``first_time`` (their first contact)."""
    accounts = np.flatnonzero((rng.random(len(first_time)) < ACCOUNT_SHARE) & (first_time < period.end - calendar.DAY))
    person = np.repeat(accounts, 1 + rng.poisson(0.6, len(accounts)))
    created = first_time[person] + (rng.random(len(person)) * (period.end - first_time[person])).astype(np.int64)
    order = np.argsort(created, kind="stable")
    person, created = person[order], created[order]
    n = len(person)
    source = rng.choice(len(LEAD_SOURCES), size=n, p=LEAD_SOURCE_SHARE).astype(np.int8)
    owner = rng.integers(0, len(OWNERS), n).astype(np.int8)
    amount = np.round(LEAD_SOURCE_AMOUNT[source] * rng.lognormal(0.0, 0.5, n), -2)
    advance = advance_probability(source, owner)
    status = np.zeros(n, dtype=np.int8)
    closed = np.full(n, -1, dtype=np.int64)
    rows, stages, times = [np.arange(n)], [np.zeros(n, np.int8)], [created]
    now, live = created.copy(), np.ones(n, dtype=bool)
    for k in range(len(STAGES)):
        duration = (rng.gamma(2.0, STAGE_DAYS[k] / 2.0, n) * OWNER_SPEED[owner] * calendar.DAY).astype(np.int64)
        now = now + duration
        moves = live & (now < period.end)
        forward = rng.random(n) < advance[:, k]
        last = k == len(STAGES) - 1
        next_stage = np.where(forward, len(STAGES) if last else k + 1, len(STAGES) + 1)
        rows.append(np.flatnonzero(moves))
        stages.append(next_stage[moves].astype(np.int8))
        times.append(now[moves])
        ends = moves & ((next_stage >= len(STAGES)))
        status[ends] = np.where(next_stage[ends] == len(STAGES), 1, 2)
        closed[ends] = now[ends]
        live = moves & ~ends
    history_opportunity = np.concatenate(rows)
    order = np.lexsort((np.concatenate(times), history_opportunity))
    return Pipeline(person, created, source, owner, amount, status, closed, history_opportunity[order],
                    np.concatenate(stages)[order], np.concatenate(times)[order])
