"""Purchases, order lines, discounts and refunds.

Purchases follow a BG/NBD-like process per person: the first purchase comes
shortly after acquisition; after every purchase (the first included) the
person drops out with probability ``dropout_probability``; while alive,
purchases arrive as a Poisson process with ``rate_per_week`` in operational
time (see ``calendar.Warp``), so weekly and yearly seasonality and the 618 /
Double 11 peaks shape the calendar times. Order value follows the person's
price tier and the segment's category mix (Gamma-Gamma-like heterogeneity).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crm_analytics.demo import calendar, reference
from crm_analytics.demo.population import Persons

STORE = reference.SALES_CHANNELS.index("store")
REFUND_BASE_PROBABILITY = 0.03
MAX_LINES = 4


@dataclass
class Orders:
    """Column arrays, one row per order or refund, sorted by time."""

    person: np.ndarray  # int64
    time: np.ndarray  # int64 UTC seconds
    channel: np.ndarray  # int8, index into reference.SALES_CHANNELS
    is_conversion: np.ndarray  # bool: created by a converting marketing journey
    record: np.ndarray = field(default=None)  # int64, index into the customer records table
    gross: np.ndarray = field(default=None)  # float64, CNY before discount
    discount: np.ndarray = field(default=None)  # float64, CNY
    amount: np.ndarray = field(default=None)  # float64, CNY paid (negative for refunds)
    is_refund: np.ndarray = field(default=None)  # bool
    parent: np.ndarray = field(default=None)  # int64 row of the refunded order, -1 otherwise

    def __len__(self) -> int:
        return len(self.person)

    def take(self, rows: np.ndarray) -> Orders:
        """Rows ``rows`` of every filled column."""
        return Orders(**{k: (None if v is None else v[rows]) for k, v in self.__dict__.items()})


@dataclass
class Catalogue:
    """The product catalogue, products of each category sorted by price."""

    product_number: np.ndarray  # int64, the number in the product id
    name: list[str]
    category: np.ndarray  # int8, index into reference.CATEGORY_NAMES
    list_price: np.ndarray  # float64 CNY
    category_start: np.ndarray  # first row of each category


def make_catalogue(rng: np.random.Generator) -> Catalogue:
    """About 430 products in 12 categories with Chinese names and list prices ending in 9."""
    names, categories, prices = [], [], []
    k = reference.PRODUCTS_PER_CATEGORY
    for c, (category, (_, base_price, kinds)) in enumerate(reference.CATEGORIES.items()):
        raw = base_price * rng.lognormal(0.0, 0.6, k)
        price = np.where(raw >= 20, np.round(raw / 10) * 10 - 0.1, np.round(raw) - 0.1).clip(4.9)
        order = np.argsort(price, kind="stable")
        brand = rng.integers(0, len(reference.BRANDS), k)
        variant = rng.integers(0, len(reference.PRODUCT_VARIANTS), k)
        for j in order:
            kind = kinds[j % len(kinds)]
            names.append(f"{reference.BRANDS[brand[j]]} {kind}{reference.PRODUCT_VARIANTS[variant[j]]}")
        categories.append(np.full(k, c, dtype=np.int8))
        prices.append(price[order])
    n = k * len(reference.CATEGORIES)
    return Catalogue(
        product_number=rng.permutation(n).astype(np.int64) + 10001,
        name=names,
        category=np.concatenate(categories),
        list_price=np.concatenate(prices),
        category_start=np.arange(0, n + 1, k),
    )


def draw_channels(rng: np.random.Generator, persons: Persons, person: np.ndarray) -> np.ndarray:
    """Sales channel of each order from its person's channel preferences."""
    cdf = np.cumsum(persons.channel_probs, axis=1)[person]
    u = rng.random(len(person))[:, None]
    return np.minimum((u > cdf).sum(axis=1), len(reference.SALES_CHANNELS) - 1).astype(np.int8)


def simulate_purchases(
    persons: Persons, period: calendar.Period, warp: calendar.Warp, rng: np.random.Generator
) -> tuple[Orders, np.ndarray]:
    """Simulate every person's purchases; return the orders and each person's dropout time (-1: alive at the end)."""
    n = len(persons)
    first_time = persons.acquisition_time + 1800 + rng.exponential(7200.0, n).astype(np.int64)
    buyers = np.flatnonzero(first_time < period.end)
    people, weeks = [buyers], [np.full(len(buyers), -1.0)]
    alive = buyers[rng.random(len(buyers)) >= persons.dropout_probability[buyers]]
    dropped = np.zeros(n, dtype=bool)
    dropped[buyers] = True
    dropped[alive] = False
    u = warp.to_operational(first_time[alive])
    while len(alive):
        u = u + rng.exponential(1.0, len(alive)) / persons.rate_per_week[alive]
        inside = u < warp.total_weeks
        alive, u = alive[inside], u[inside]
        people.append(alive)
        weeks.append(u)
        drop = rng.random(len(alive)) < persons.dropout_probability[alive]
        dropped[alive[drop]] = True
        alive, u = alive[~drop], u[~drop]
    person = np.concatenate(people)
    week = np.concatenate(weeks)
    channel = draw_channels(rng, persons, person)
    seconds = calendar.sample_seconds_of_day(rng, channel, reference.SALES_CHANNELS)
    repeat_time = calendar.local_time(period, warp.to_day(np.maximum(week, 0.0)), seconds)
    time = np.where(week < 0, first_time[person], np.maximum(repeat_time, first_time[person] + 3600))
    time = np.minimum(time, period.end - 1)
    orders = Orders(person=person, time=time, channel=channel, is_conversion=np.zeros(len(person), dtype=bool))
    dropout_time = np.full(n, -1, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    np.maximum.at(last, person, time)
    dropout_time[dropped] = last[dropped]
    return orders, dropout_time


def concat_orders(parts: list[Orders]) -> Orders:
    """Stack order tables and sort them by time (stable)."""
    joined = Orders(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in ("person", "time", "channel", "is_conversion")})
    return joined.take(np.argsort(joined.time, kind="stable"))


@dataclass
class OrderLines:
    """Column arrays, one row per order line."""

    order: np.ndarray  # int64 row in Orders
    line_number: np.ndarray  # int8, from 1
    product: np.ndarray  # int64 row in Catalogue
    quantity: np.ndarray  # int64
    unit_price: np.ndarray  # float64 CNY


def draw_lines(rng: np.random.Generator, orders: Orders, persons: Persons, catalogue: Catalogue) -> OrderLines:
    """Draw 1-4 product lines per (non-refund) order from the buyer's segment category mix and price tier."""
    n_lines = 1 + rng.binomial(MAX_LINES - 1, 0.25, len(orders))
    order = np.repeat(np.arange(len(orders)), n_lines)
    starts = np.cumsum(n_lines) - n_lines
    line_number = (np.arange(len(order)) - np.repeat(starts, n_lines) + 1).astype(np.int8)
    person = orders.person[order]
    product = pick_products(rng, persons, catalogue, person)
    extra = np.array([reference.SEGMENT_PROFILES[s]["extra_quantity"] for s in reference.SEGMENTS])[persons.segment[person]]
    quantity = 1 + np.minimum(rng.poisson(extra), 5)
    return OrderLines(order, line_number, product, quantity, catalogue.list_price[product])


def pick_products(rng: np.random.Generator, persons: Persons, catalogue: Catalogue, person: np.ndarray) -> np.ndarray:
    """A product (catalogue row) per entry of ``person``: category from the segment mix, price from the person's tier."""
    segment = persons.segment[person]
    category = np.empty(len(person), dtype=np.int64)
    u = rng.random(len(person))
    for s, name in enumerate(reference.SEGMENTS):
        rows = segment == s
        cdf = np.cumsum(reference.SEGMENT_PROFILES[name]["categories"])
        category[rows] = np.minimum(np.searchsorted(cdf, u[rows] * cdf[-1], side="right"), len(cdf) - 1)
    per_category = np.diff(catalogue.category_start)[category]
    tier = np.clip(persons.price_tier[person] + rng.normal(0.0, 0.15, len(person)), 0.0, 0.999)
    return catalogue.category_start[category] + (tier * per_category).astype(np.int64)


def price_orders(
    rng: np.random.Generator, orders: Orders, lines: OrderLines, persons: Persons, promotion: np.ndarray, period: calendar.Period
) -> None:
    """Fill gross, discount and amount of every order from its lines; discounts more likely on promotion days."""
    gross = np.bincount(lines.order, weights=lines.unit_price * lines.quantity, minlength=len(orders))
    share = np.array([reference.SEGMENT_PROFILES[s]["discount_share"] for s in reference.SEGMENTS])[persons.segment[orders.person]]
    day = np.clip(period.day_index(orders.time), 0, period.n_days - 1)
    share = np.clip(share * np.where(promotion[day] > 1.2, 1.6, 1.0), 0, 0.95)
    depth = np.where(rng.random(len(orders)) < share, rng.uniform(0.05, 0.3, len(orders)), 0.0)
    orders.gross = np.round(gross, 2)
    orders.discount = np.round(orders.gross * depth, 2)
    orders.amount = np.round(orders.gross - orders.discount, 2)
    orders.is_refund = np.zeros(len(orders), dtype=bool)
    orders.parent = np.full(len(orders), -1, dtype=np.int64)


def add_refunds(rng: np.random.Generator, orders: Orders, persons: Persons, period: calendar.Period) -> tuple[Orders, np.ndarray]:
    """Append refund rows (negative amounts, a few % of orders, more for unhappy buyers) and re-sort by time.

    Returns the new table and the new row of every old row (to re-point order lines).
    """
    p = REFUND_BASE_PROBABILITY * np.exp(-0.35 * persons.satisfaction[orders.person])
    delay = (rng.gamma(2.0, 2.5, len(orders)) * calendar.DAY).astype(np.int64) + 3600
    parent = np.flatnonzero((rng.random(len(orders)) < p) & (orders.time + delay < period.end))
    share = np.where(rng.random(len(parent)) < 0.7, 1.0, rng.uniform(0.2, 0.8, len(parent)))
    refunds = orders.take(parent)
    refunds.time = orders.time[parent] + delay[parent]
    refunds.amount = -np.round(orders.amount[parent] * share, 2)
    refunds.gross = refunds.amount.copy()
    refunds.discount = np.zeros(len(parent))
    refunds.is_refund = np.ones(len(parent), dtype=bool)
    refunds.is_conversion = np.zeros(len(parent), dtype=bool)
    refunds.parent = parent
    joined = Orders(**{k: None if v is None else np.concatenate([v, getattr(refunds, k)]) for k, v in orders.__dict__.items()})
    order = np.argsort(joined.time, kind="stable")
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    joined = joined.take(order)
    joined.parent = np.where(joined.parent >= 0, position[np.maximum(joined.parent, 0)], -1)
    return joined, position[: len(orders)]
