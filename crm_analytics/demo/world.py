"""Simulate the whole demo world: persons, their records and everything they do."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crm_analytics.demo import b2b, calendar, experiment, marketing, orders, records, reference, service
from crm_analytics.demo.population import Persons, make_persons
from crm_analytics.demo.streams import stream

DEFAULT_AS_OF = "2025-12-31"
CALL_CENTRE_EXTRA_SHARE = 0.03


@dataclass
class World:
    """Everything simulated; the writer turns it into exports and ground truth."""

    seed: int
    n_customers: int
    start_date: str
    end_date: str
    period: calendar.Period
    persons: Persons
    dropout_time: np.ndarray
    records: records.Records
    lookups: dict[int, records.RecordLookup]
    marketing_record: np.ndarray
    orders: orders.Orders
    lines: orders.OrderLines
    catalogue: orders.Catalogue
    touches: marketing.Touches
    journeys: marketing.Journeys
    tickets: service.Tickets
    ticket_record: np.ndarray
    surveys: service.Surveys
    pipeline: b2b.Pipeline
    assignments: experiment.Assignments
    assignment_record: np.ndarray


def _primary_signup(parts: list[records.Records], n: int) -> np.ndarray:
    """Per person, the signup time of their first-listed primary record among ``parts`` (-1: none)."""
    signup = np.full(n, -1, dtype=np.int64)
    for part in reversed(parts):
        main = ~part.is_duplicate
        signup[part.person[main]] = part.signup_time[main]
    return signup


def _conversion_orders(rng: np.random.Generator, persons: Persons, journeys: marketing.Journeys) -> orders.Orders:
    """Orders created by converting journeys, in the source marketing knows the person by."""
    rows = np.flatnonzero(journeys.converted)
    person = journeys.person[rows]
    probs = persons.channel_probs[person].copy()
    probs[persons.has_web[person], 3] = 0.0
    probs[~persons.has_web[person], :3] = 0.0
    probs /= probs.sum(axis=1, keepdims=True)
    channel = (rng.random(len(rows))[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, 3).astype(np.int8)
    return orders.Orders(person=person, time=journeys.conversion_time[rows], channel=channel,
                         is_conversion=np.ones(len(rows), dtype=bool))


def simulate(n: int, *, seed: int, start_date: str, end_date: str) -> World:
    """Simulate ``n`` persons over ``start_date`` .. ``end_date`` with ``seed``."""
    period = calendar.Period.from_dates(start_date, end_date)
    warp = calendar.Warp.of(period, calendar.purchase_intensity(period))
    persons = make_persons(n, period, seed)
    base, dropout_time = orders.simulate_purchases(persons, period, warp, stream(seed, "purchases"))

    rng = stream(seed, "records")
    source = records.sales_source(base.channel)
    acquisition = persons.acquisition_channel
    web_records = records.source_records(rng, persons, period, records.WEB, persons.has_web,
                                         acquisition < len(reference.WEB_ACQUISITION),
                                         base.person[source == records.WEB], base.time[source == records.WEB])
    store_records = records.source_records(rng, persons, period, records.STORE, persons.has_store,
                                           acquisition == reference.ACQUISITION_CHANNELS.index("store"),
                                           base.person[source == records.STORE], base.time[source == records.STORE])

    marketing_signup = _primary_signup([web_records, store_records], n)
    alive_until = np.where(dropout_time >= 0, dropout_time, period.end)
    window_end = alive_until - (marketing.MAX_DELAY_DAYS + 1) * calendar.DAY
    touches, journeys = marketing.simulate_journeys(stream(seed, "marketing"), period, marketing_signup, window_end)
    conversions = _conversion_orders(stream(seed, "conversions"), persons, journeys)

    tickets = service.simulate_tickets(stream(seed, "tickets"), persons, period, dropout_time)
    is_cc_acquired = acquisition == reference.ACQUISITION_CHANNELS.index("call_centre")
    has_ticket = np.bincount(tickets.person, minlength=n) > 0
    call_centre = is_cc_acquired | has_ticket | (rng.random(n) < CALL_CENTRE_EXTRA_SHARE)
    cc_records = records.source_records(rng, persons, period, records.CALL_CENTRE, call_centre, is_cc_acquired,
                                        tickets.person, tickets.opened)
    all_records = records.concat_records([web_records, store_records, cc_records])
    lookups = {s: records.RecordLookup.of(all_records, s, n) for s in range(len(records.SOURCES))}
    marketing_record = records.marketing_record(lookups)

    book = orders.concat_orders([base, conversions])
    rng = stream(seed, "order_records")
    book.record = np.empty(len(book), dtype=np.int64)
    source = records.sales_source(book.channel)
    for s in (records.WEB, records.STORE):
        rows = source == s
        book.record[rows] = lookups[s].assign(rng, book.person[rows], book.time[rows])
    catalogue = orders.make_catalogue(stream(seed, "catalogue"))
    lines = orders.draw_lines(stream(seed, "lines"), book, persons, catalogue)
    orders.price_orders(stream(seed, "prices"), book, lines, persons, calendar.promotion_factor(period), period)
    book, position = orders.add_refunds(stream(seed, "refunds"), book, persons, period)
    lines.order = position[lines.order]

    ticket_record = lookups[records.CALL_CENTRE].assign(stream(seed, "ticket_records"), tickets.person, tickets.opened)
    surveys = service.simulate_surveys(stream(seed, "surveys"), book.person, book.time, book.is_refund, persons.satisfaction, period)
    pipeline = b2b.simulate_pipeline(stream(seed, "pipeline"), period, np.where(marketing_signup >= 0, marketing_signup, period.end))
    web_signup = np.where(lookups[records.WEB].primary >= 0, all_records.signup_time[np.maximum(lookups[records.WEB].primary, 0)], -1)
    assignments = experiment.simulate_experiment(stream(seed, "experiment"), period, web_signup, dropout_time)
    assignment_record = lookups[records.WEB].assign(stream(seed, "experiment_records"), assignments.person, assignments.assigned)
    return World(seed, n, start_date, end_date, period, persons, dropout_time, all_records, lookups, marketing_record,
                 book, lines, catalogue, touches, journeys, tickets, ticket_record, surveys, pipeline, assignments, assignment_record)
