"""The latent persons of the demo world: who they are, how they behave, which systems know them.

A person has a true behavioural segment, an acquisition channel and time, a
latent satisfaction, BG/NBD-like purchase parameters (a purchase rate per week
and a probability of dropping out after each purchase), a spending tier and
order-channel preferences, plus the identity (name, email, phone, birth date,
city) that the source systems record, each in its own way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm_analytics.demo import calendar, reference
from crm_analytics.demo.streams import stream

BASE_RATE_PER_WEEK = 0.31
RATE_SHAPE = 3.0
DROPOUT_BETA = (2.0, 22.0)
GROWTH = np.log(2.5)  # acquisitions in the last month vs the first


@dataclass
class Persons:
    """Column arrays, one row per person (index = person number)."""

    segment: np.ndarray  # int8, index into reference.SEGMENTS
    acquisition_channel: np.ndarray  # int8, index into reference.ACQUISITION_CHANNELS
    acquisition_time: np.ndarray  # int64 UTC seconds
    satisfaction: np.ndarray  # float64, standard normal-ish
    rate_per_week: np.ndarray  # float64
    dropout_probability: np.ndarray  # float64
    price_tier: np.ndarray  # float64 in (0, 1)
    channel_probs: np.ndarray  # float64 (n, 4) over reference.SALES_CHANNELS, zero where no account
    has_web: np.ndarray  # bool
    has_store: np.ndarray  # bool
    gender: np.ndarray  # int8, index into reference.GENDERS
    birth_date: np.ndarray  # datetime64[D]
    city: np.ndarray  # int16, index into reference.CITIES
    surname: np.ndarray  # int16, index into reference.SURNAMES
    given: np.ndarray  # int16 (n, 2), index into reference.GIVEN_CHARACTERS, -1 for none
    email_number: np.ndarray  # int64, makes the e-mail address unique
    email_domain: np.ndarray  # int8, index into reference.EMAIL_DOMAINS
    phone: np.ndarray  # int64, 11-digit mobile number

    def __len__(self) -> int:
        return len(self.segment)


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of a (n, k) probability matrix."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cdf[:, -1:]
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1)


def _unique_phones(rng: np.random.Generator, n: int) -> np.ndarray:
    prefixes = np.array(reference.MOBILE_PREFIXES, dtype=np.int64)
    phones = prefixes[rng.integers(0, len(prefixes), n)] * 10**8 + rng.integers(0, 10**8, n)
    while True:
        _, first = np.unique(phones, return_index=True)
        repeated = np.setdiff1d(np.arange(n), first)
        if len(repeated) == 0:
            return phones
        phones[repeated] = prefixes[rng.integers(0, len(prefixes), len(repeated))] * 10**8 + rng.integers(0, 10**8, len(repeated))


def _acquisition_times(rng: np.random.Generator, period: calendar.Period, channel: np.ndarray) -> np.ndarray:
    days = np.arange(period.n_days)
    weights = np.exp(GROWTH * days / period.n_days) * np.sqrt(calendar.purchase_intensity(period))
    day = calendar.sample_days(rng, weights, len(channel))
    is_store = channel == reference.ACQUISITION_CHANNELS.index("store")
    order_channel = np.where(is_store, reference.SALES_CHANNELS.index("store"), reference.SALES_CHANNELS.index("web"))
    return calendar.local_time(period, day, calendar.sample_seconds_of_day(rng, order_channel, reference.SALES_CHANNELS))


def _source_membership(rng: np.random.Generator, acquisition: np.ndarray, seg_channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each person has a web account and a store membership (at least one of them)."""
    online_share = seg_channels[:, :3].sum(axis=1)
    store_share = seg_channels[:, 3]
    web_acquired = acquisition < len(reference.WEB_ACQUISITION)
    store_acquired = acquisition == reference.ACQUISITION_CHANNELS.index("store")
    has_web = web_acquired | (rng.random(len(acquisition)) < np.clip(online_share * 1.05, 0, 0.95))
    has_store = store_acquired | (rng.random(len(acquisition)) < store_share * 0.9 + 0.03)
    neither = ~has_web & ~has_store
    has_web[neither] = online_share[neither] >= store_share[neither]
    has_store[neither & ~has_web] = True
    return has_web, has_store


def make_persons(n: int, period: calendar.Period, seed: int) -> Persons:
    """Draw ``n`` persons for ``period``."""
    rng = stream(seed, "population")
    profiles = [reference.SEGMENT_PROFILES[s] for s in reference.SEGMENTS]
    segment = rng.choice(len(profiles), size=n, p=reference.SEGMENT_SHARES).astype(np.int8)
    acquisition_mix = np.array([p["acquisition"] for p in profiles])[segment]
    acquisition = _choice_rows(rng, acquisition_mix).astype(np.int8)
    satisfaction = np.array([p["satisfaction"] for p in profiles])[segment] + rng.normal(0.0, 1.0, n)

    seg_rate = np.array([p["rate"] for p in profiles])[segment]
    rate = rng.gamma(RATE_SHAPE, BASE_RATE_PER_WEEK / RATE_SHAPE, n) * seg_rate * reference.ACQUISITION_RATE_MULTIPLIER[acquisition]
    base_p = rng.beta(*DROPOUT_BETA, n)
    odds = base_p / (1 - base_p) * reference.ACQUISITION_DROPOUT_ODDS[acquisition] * np.exp(-0.6 * satisfaction)
    dropout_p = np.clip(odds / (1 + odds), 0.005, 0.95)

    seg_tier = np.array([p["price_tier"] for p in profiles])[segment]
    price_tier = np.clip(seg_tier + rng.normal(0, 0.08, n), 0.02, 0.98)

    seg_channels = np.array([p["channels"] for p in profiles], dtype=float)[segment]
    has_web, has_store = _source_membership(rng, acquisition, seg_channels)
    personal = rng.gamma(seg_channels * 25.0 + 0.05)
    personal *= np.column_stack([has_web, has_web, has_web, has_store])
    channel_probs = personal / personal.sum(axis=1, keepdims=True)

    gender = (rng.random(n) < 0.46).astype(np.int8)  # 0 = F, 1 = M
    end_day = period.first_day + period.n_days
    age_days = ((18 + rng.gamma(4.0, 4.5, n).clip(0, 57)) * 365.25).astype(np.int64)
    birth_date = end_day - age_days

    city_weights = np.array([c[4] for c in reference.CITIES])
    city = rng.choice(len(city_weights), size=n, p=city_weights / city_weights.sum()).astype(np.int16)
    surname = rng.integers(0, len(reference.SURNAMES), n).astype(np.int16)
    given = rng.integers(0, len(reference.GIVEN_CHARACTERS), (n, 2)).astype(np.int16)
    given[rng.random(n) < 0.35, 1] = -1
    email_number = rng.permutation(n).astype(np.int64) + rng.integers(1, 9, n) * 10 ** len(str(n))
    domain_p = np.array(reference.EMAIL_DOMAIN_WEIGHTS)
    email_domain = rng.choice(len(domain_p), size=n, p=domain_p / domain_p.sum()).astype(np.int8)
    return Persons(
        segment=segment,
        acquisition_channel=acquisition,
        acquisition_time=_acquisition_times(rng, period, acquisition),
        satisfaction=satisfaction,
        rate_per_week=rate,
        dropout_probability=dropout_p,
        price_tier=price_tier,
        channel_probs=channel_probs,
        has_web=has_web,
        has_store=has_store,
        gender=gender,
        birth_date=birth_date,
        city=city,
        surname=surname,
        given=given,
        email_number=email_number,
        email_domain=email_domain,
        phone=_unique_phones(rng, n),
    )
