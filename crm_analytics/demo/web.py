"""Clickstream of web, app and mini-program sessions around the web orders.

Every web order has a purchasing session (visit -> product_view -> add_to_cart
-> checkout -> purchase). Around it, non-purchasing sessions stop at each step
in the numbers implied by the planted step-continuation probabilities of the
order's platform and traffic source, so a funnel analysis over all sessions
recovers those probabilities. Events are produced in chunks of orders so that
memory stays flat at any scale.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crm_analytics.demo import calendar, orders, text
from crm_analytics.demo.population import Persons

EVENTS = ("visit", "product_view", "add_to_cart", "checkout", "purchase")
TRAFFIC_SOURCES = ("direct", "organic_search", "paid_search", "social", "email", "referral")
PLATFORMS = ("web", "app", "mini_program")
TRAFFIC_SHARE = np.array([
    [0.25, 0.30, 0.20, 0.08, 0.10, 0.07],  # web
    [0.55, 0.05, 0.05, 0.15, 0.15, 0.05],  # app
    [0.30, 0.02, 0.03, 0.45, 0.05, 0.15],  # mini_program
])
# Probability of going on from visit, product_view, add_to_cart, checkout to the next step.
PLATFORM_CONTINUATION = np.array([
    [0.90, 0.66, 0.80, 0.85],
    [0.93, 0.75, 0.85, 0.92],
    [0.91, 0.70, 0.82, 0.88],
])
SOURCE_LOGIT_SHIFT = np.array([
    [0.2, 0.2, 0.1, 0.1],  # direct
    [0.0, 0.0, 0.0, 0.0],  # organic_search
    [-0.1, 0.1, 0.0, 0.0],  # paid_search
    [-0.5, -0.6, -0.3, -0.2],  # social
    [0.1, 0.4, 0.2, 0.1],  # email
    [0.2, 0.3, 0.1, 0.1],  # referral
])
EXTRA_VIEWS = 0.15
EVENT_GAP_SECONDS = 45.0
BROWSE_LEAD_DAYS = 2.0
ORDERS_PER_CHUNK = 100_000


def continuation() -> np.ndarray:
    """(platform, traffic source, step) planted probability of going on to the next funnel step."""
    base = np.log(PLATFORM_CONTINUATION / (1 - PLATFORM_CONTINUATION))
    logit = base[:, None, :] + SOURCE_LOGIT_SHIFT[None, :, :]
    return 1 / (1 + np.exp(-logit))


def funnel_truth() -> dict:
    """Planted step conversion by platform and traffic source, for ground_truth/funnel.json."""
    c = continuation()
    return {
        "steps": list(EVENTS),
        "step_conversion": {
            p: {s: dict(zip([f"{EVENTS[k]}->{EVENTS[k + 1]}" for k in range(4)], c[i, j].round(4).tolist()))
                for j, s in enumerate(TRAFFIC_SOURCES)}
            for i, p in enumerate(PLATFORMS)
        },
        "traffic_share": {p: dict(zip(TRAFFIC_SOURCES, TRAFFIC_SHARE[i].tolist())) for i, p in enumerate(PLATFORMS)},
    }


def _sessions(rng: np.random.Generator, platform: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sessions of each order: (order row, depth) where depth 4 is the purchase session, 0-3 where browsing stopped."""
    c = continuation()[platform, source]
    reach = np.cumprod(c, axis=1)
    n_total = 1.0 / reach[:, -1]
    reach_before = np.column_stack([np.ones(len(c)), reach[:, :-1]])
    stop_means = n_total[:, None] * reach_before * (1 - c)
    counts = rng.poisson(stop_means)
    counts = np.column_stack([counts, np.ones(len(c), dtype=counts.dtype)])
    order = np.repeat(np.repeat(np.arange(len(c)), 5), counts.ravel())
    depth = np.repeat(np.tile(np.arange(5), len(c)), counts.ravel()).astype(np.int8)
    return order, depth


def event_chunk(
    rng: np.random.Generator,
    chunk: orders.Orders,
    first_product: np.ndarray,
    signup: np.ndarray,
    account_ids: pa.Array,
    persons: Persons,
    catalogue: orders.Catalogue,
    product_ids: pa.Array,
    session_offset: int,
    event_offset: int,
) -> tuple[pa.Table, int, int]:
    """Events of one chunk of web orders; returns the table and the next session and event numbers.

    ``first_product`` is the catalogue row of each order's first line, ``signup``
    the creation time of each order's account (no event precedes it).
    """
    platform = chunk.channel.astype(np.int64)
    u = rng.random(len(chunk))
    cdf = np.cumsum(TRAFFIC_SHARE, axis=1)[platform]
    source = np.minimum((u[:, None] > cdf).sum(axis=1), len(TRAFFIC_SOURCES) - 1)
    s_order, depth = _sessions(rng, platform, source)
    n_views = np.where(depth >= 1, 1 + rng.poisson(EXTRA_VIEWS, len(depth)), 0)
    n_events = 1 + n_views + (depth >= 2) + (depth >= 3) + (depth >= 4)
    session = np.repeat(np.arange(len(depth)), n_events)
    first_event = np.cumsum(n_events) - n_events
    position = np.arange(len(session)) - first_event[session]
    views = n_views[session]
    name = np.where(position == 0, 0, np.where(position <= views, 1, 1 + position - views)).astype(np.int8)
    gap = rng.exponential(EVENT_GAP_SECONDS, len(session)).astype(np.int64) + 2
    gap[first_event] = 0
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[first_event][session]
    duration = elapsed[first_event + n_events - 1]
    order_time = chunk.time[s_order]
    lead = (rng.exponential(BROWSE_LEAD_DAYS, len(depth)) * calendar.DAY).astype(np.int64) + 600
    start = np.where(depth == 4, order_time - duration, order_time - duration - lead)
    earliest = signup[s_order] + 60
    room = np.maximum(order_time - duration - earliest, 0)
    start = np.where(start < earliest, earliest + (rng.random(len(depth)) * room).astype(np.int64), start)
    time = start[session] + elapsed

    person = chunk.person[s_order][session]
    product = np.full(len(session), -1, dtype=np.int64)
    is_view = name == 1
    product[is_view] = orders.pick_products(rng, persons, catalogue, person[is_view])
    bought_view = is_view & (depth[session] == 4) & (position == 1)
    product[bought_view] = first_product[s_order][session][bought_view]
    cart = np.flatnonzero(name == 2)
    product[cart] = product[cart - 1]

    order = np.argsort(time, kind="stable")
    session_numbers = session_offset + session[order] + 1
    table = pa.table({
        "event_id": text.ids("EV", event_offset + np.arange(len(order)) + 1, 11),
        "customer_id": account_ids.take(pa.array(chunk.record[s_order][session][order])),
        "session_id": text.ids("SE", session_numbers, 10),
        "event_time": pa.array((time[order] * 1000).astype("datetime64[ms]")),
        "event_name": text.lookup(EVENTS, name[order]),
        "platform": text.lookup(PLATFORMS, platform[s_order][session][order]),
        "traffic_channel": text.lookup(TRAFFIC_SOURCES, source[s_order][session][order]),
        "product_id": pc.if_else(pa.array(product[order] < 0), pa.nulls(len(order), pa.string()),
                                 product_ids.take(pa.array(np.maximum(product[order], 0)))),
    })
    return table, session_offset + len(depth), event_offset + len(order)

