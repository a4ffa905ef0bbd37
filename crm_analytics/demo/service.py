"""Customer service: support tickets and satisfaction surveys, both driven by latent satisfaction.

Unhappy people open more tickets, need more contacts, get escalated more often
and answer surveys with low NPS and CSAT; they also drop out sooner (see
``population``), so satisfaction signals predict churn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm_analytics.demo import calendar, reference
from crm_analytics.demo.population import Persons

TICKET_CATEGORIES = ("delivery", "product_quality", "refund", "account", "other")
CONTACT_CHANNELS = ("phone", "chat", "email", "wechat")
TICKETS_PER_YEAR = 0.35
FIRST_RESPONSE_HOURS = np.array([0.08, 0.3, 8.0, 1.0])  # mean by contact channel
RESOLUTION_HOURS = np.array([20.0, 60.0, 45.0, 8.0, 16.0])  # mean by category
SURVEY_SHARE = 0.12


@dataclass
class Tickets:
    """Column arrays, one row per ticket, sorted by opening time. Times are UTC seconds, -1 for none."""

    person: np.ndarray
    opened: np.ndarray
    first_response: np.ndarray
    resolved: np.ndarray
    category: np.ndarray
    contact_channel: np.ndarray
    n_contacts: np.ndarray
    is_escalated: np.ndarray


def simulate_tickets(rng: np.random.Generator, persons: Persons, period: calendar.Period, dropout_time: np.ndarray) -> Tickets:
    """Tickets while a person is a customer (until a month after dropping out)."""
    support = np.array([reference.SEGMENT_PROFILES[s]["support"] for s in reference.SEGMENTS])[persons.segment]
    start = persons.acquisition_time + 3600
    end = np.where(dropout_time >= 0, np.minimum(dropout_time + 30 * calendar.DAY, period.end), period.end)
    years = np.maximum(end - start, 0) / (365.25 * calendar.DAY)
    rate = TICKETS_PER_YEAR * support * np.exp(-0.6 * persons.satisfaction)
    count = rng.poisson(rate * years)
    person = np.repeat(np.arange(len(persons)), count)
    opened = start[person] + (rng.random(len(person)) * (end - start)[person]).astype(np.int64)
    day = period.day_index(opened)
    opened = calendar.local_time(period, day, rng.integers(8 * calendar.HOUR, 22 * calendar.HOUR, len(person)))
    opened = np.clip(opened, start[person], period.end - 60)
    unhappy = -persons.satisfaction[person]
    category_weights = np.column_stack([
        np.full(len(person), 0.35), 0.2 * np.exp(0.4 * unhappy), 0.2 * np.exp(0.4 * unhappy), np.full(len(person), 0.1), np.full(len(person), 0.15)
    ])
    cdf = np.cumsum(category_weights, axis=1)
    category = (rng.random(len(person))[:, None] * cdf[:, -1:] > cdf).sum(axis=1).astype(np.int8)
    contact = rng.choice(len(CONTACT_CHANNELS), size=len(person), p=[0.4, 0.3, 0.1, 0.2]).astype(np.int8)
    first_response = opened + (rng.gamma(1.5, FIRST_RESPONSE_HOURS[contact] / 1.5) * calendar.HOUR).astype(np.int64) + 30
    n_contacts = 1 + rng.poisson(0.45 * np.exp(0.5 * unhappy) * np.where(category == 1, 1.6, 1.0))
    escalation_logit = -2.6 + 0.45 * (n_contacts - 1) + 0.5 * unhappy
    is_escalated = rng.random(len(person)) < 1 / (1 + np.exp(-escalation_logit))
    hours = rng.gamma(1.5, RESOLUTION_HOURS[category] / 1.5) * n_contacts * np.where(is_escalated, 2.5, 1.0)
    resolved = first_response + (hours * calendar.HOUR).astype(np.int64)
    first_response = np.where(first_response < period.end, first_response, -1)
    resolved = np.where(resolved < period.end, resolved, -1)
    order = np.argsort(opened, kind="stable")
    return Tickets(person[order], opened[order], first_response[order], resolved[order], category[order],
                   contact[order], n_contacts[order], is_escalated[order])


@dataclass
class Surveys:
    """Column arrays, one row per survey response, sorted by time; scores -1 when not answered."""

    order: np.ndarray  # row of the order the survey followed
    time: np.ndarray
    nps: np.ndarray
    csat: np.ndarray
    comment: np.ndarray  # int64 index into comment_texts(), -1 for none


def comment_texts() -> tuple[str, ...]:
    """All comment texts, detractor ones first, then passive, then promoter."""
    return tuple(c for band in ("detractor", "passive", "promoter") for c in reference.SURVEY_COMMENTS[band])


def simulate_surveys(
    rng: np.random.Generator, order_person: np.ndarray, order_time: np.ndarray, is_refund: np.ndarray,
    satisfaction: np.ndarray, period: calendar.Period,
) -> Surveys:
    """Post-purchase surveys after about 12 % of orders, scores driven by the buyer's satisfaction."""
    delay = (rng.uniform(1.0, 5.0, len(order_time)) * calendar.DAY).astype(np.int64)
    rows = np.flatnonzero(~is_refund & (rng.random(len(order_time)) < SURVEY_SHARE) & (order_time + delay < period.end))
    sat = satisfaction[order_person[rows]]
    nps = np.clip(np.round(7.2 + 1.9 * sat + rng.normal(0, 1.3, len(rows))), 0, 10).astype(np.int64)
    csat = np.clip(np.round(3.7 + 0.85 * sat + rng.normal(0, 0.7, len(rows))), 1, 5).astype(np.int64)
    nps[rng.random(len(rows)) < 0.05] = -1
    csat[rng.random(len(rows)) < 0.05] = -1
    sizes = [len(reference.SURVEY_COMMENTS[b]) for b in ("detractor", "passive", "promoter")]
    band = np.where(nps >= 9, 2, np.where(nps >= 7, 1, 0))
    band = np.where(nps < 0, np.clip(csat - 3, 0, 2), band)
    offset = np.array([0, sizes[0], sizes[0] + sizes[1]])[band]
    comment = offset + (rng.random(len(rows)) * np.array(sizes)[band]).astype(np.int64)
    comment[rng.random(len(rows)) < 0.4] = -1
    return Surveys(rows, order_time[rows] + delay[rows], nps, csat, comment)
