"""Customer records: the rows the source systems hold about each person.

A person has a web account, a store membership and a call-centre contact in
any combination (at least one). About 2 % of records are duplicated inside
their source (a second account opened later). Identifiers are numbered per
source in order of creation (``W0000001``, ``S0000001``, ``C0000001``) and so
reveal nothing about the person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm_analytics.demo import calendar, reference
from crm_analytics.demo.population import Persons

SOURCES = ("web", "store", "call_centre")
ID_PREFIXES = ("W", "S", "C")
ID_WIDTH = 7
DUPLICATE_SHARE = 0.02
WEB, STORE, CALL_CENTRE = range(3)


@dataclass
class Records:
    """Column arrays, one row per customer record of any source."""

    source: np.ndarray  # int8, index into SOURCES
    person: np.ndarray  # int64
    is_duplicate: np.ndarray  # bool: the person's second record in this source
    signup_time: np.ndarray  # int64 UTC seconds
    number: np.ndarray = None  # int64, the running number in the record id

    def __len__(self) -> int:
        return len(self.source)


def _first_time(n: int, person: np.ndarray, time: np.ndarray) -> np.ndarray:
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, person, time)
    return first


def source_records(
    rng: np.random.Generator,
    persons: Persons,
    period: calendar.Period,
    source: int,
    members: np.ndarray,
    acquired_here: np.ndarray,
    fact_person: np.ndarray,
    fact_time: np.ndarray,
) -> Records:
    """Records of one source: one per member person plus ~2 % duplicates.

    A record opened at acquisition dates from the acquisition; any other one
    from shortly before the person's first activity in that source (or, with
    no activity, some time after acquisition).
    """
    n = len(persons)
    person = np.flatnonzero(members)
    acquisition = persons.acquisition_time[person]
    first = _first_time(n, fact_person, fact_time)[person]
    lag = (rng.exponential(1.0, len(person)) * calendar.DAY).astype(np.int64) + 3600
    later = acquisition + (rng.random(len(person)) * 0.3 * (period.end - acquisition)).astype(np.int64)
    signup = np.where(first < np.iinfo(np.int64).max, np.maximum(first - lag, acquisition), later)
    signup = np.where(acquired_here[person], acquisition, signup)
    signup = np.minimum(signup, first - 60)
    duplicated = person[rng.random(len(person)) < DUPLICATE_SHARE]
    primary_signup = np.full(n, 0, dtype=np.int64)
    primary_signup[person] = signup
    start = primary_signup[duplicated]
    dup_signup = start + (rng.random(len(duplicated)) * (period.end - start)).astype(np.int64)
    return Records(
        source=np.full(len(person) + len(duplicated), source, dtype=np.int8),
        person=np.concatenate([person, duplicated]),
        is_duplicate=np.concatenate([np.zeros(len(person), bool), np.ones(len(duplicated), bool)]),
        signup_time=np.concatenate([signup, dup_signup]),
    )


def concat_records(parts: list[Records]) -> Records:
    """Stack record tables and number each source's records by signup time, from 1."""
    joined = Records(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in ("source", "person", "is_duplicate", "signup_time")})
    order = np.lexsort((joined.person, joined.signup_time, joined.source))
    joined = Records(*(getattr(joined, k)[order] for k in ("source", "person", "is_duplicate", "signup_time")))
    starts = np.searchsorted(joined.source, np.arange(len(SOURCES)))
    joined.number = np.arange(len(joined)) - starts[joined.source] + 1
    return joined


@dataclass
class RecordLookup:
    """Per person, the row of their primary and duplicate record in one source (-1: none)."""

    primary: np.ndarray
    duplicate: np.ndarray
    duplicate_signup: np.ndarray

    @classmethod
    def of(cls, records: Records, source: int, n_persons: int) -> RecordLookup:
        primary = np.full(n_persons, -1, dtype=np.int64)
        duplicate = np.full(n_persons, -1, dtype=np.int64)
        signup = np.full(n_persons, np.iinfo(np.int64).max, dtype=np.int64)
        rows = np.flatnonzero(records.source == source)
        main = rows[~records.is_duplicate[rows]]
        second = rows[records.is_duplicate[rows]]
        primary[records.person[main]] = main
        duplicate[records.person[second]] = second
        signup[records.person[second]] = records.signup_time[second]
        return cls(primary, duplicate, signup)

    def assign(self, rng: np.random.Generator, person: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Record used by each fact row: the duplicate for half the facts after it was opened, else the primary."""
        use_duplicate = (self.duplicate[person] >= 0) & (time >= self.duplicate_signup[person]) & (rng.random(len(person)) < 0.5)
        return np.where(use_duplicate, self.duplicate[person], self.primary[person])


def marketing_record(lookups: dict[int, RecordLookup]) -> np.ndarray:
    """Per person, the record marketing systems know them by: the web account, else the store membership."""
    web = lookups[WEB].primary
    return np.where(web >= 0, web, lookups[STORE].primary)


def sales_source(channel: np.ndarray) -> np.ndarray:
    """Source system (WEB or STORE) of each order from its sales channel."""
    return np.where(channel == reference.SALES_CHANNELS.index("store"), STORE, WEB).astype(np.int8)
