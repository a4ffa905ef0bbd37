"""Export tables of the fact sources, with canonical column names (renamed to the source's names on writing).

The order exports carry the multi-source dirt of fact files: mixed time
offsets, till-printed amounts, a handful of future-dated rows, orphan customer
ids, exported-twice rows and unparseable amounts, each logged in the
``DirtLog``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crm_analytics.demo import b2b, calendar, dirt, experiment, marketing, reference, service, text
from crm_analytics.demo.orders import Catalogue, OrderLines, Orders
from crm_analytics.demo.records import STORE, WEB

HANDFUL = 0.0003  # share of rows with a rare defect (at least a couple per file)


def order_ids(orders: Orders, source: np.ndarray) -> pa.Array:
    """``WO…`` / ``ST…`` numbered in time order per source; a refund is its order's id plus ``-R``."""
    number = np.zeros(len(orders), dtype=np.int64)
    for code, prefix in ((WEB, "WO"), (STORE, "ST")):
        rows = np.flatnonzero((source == code) & ~orders.is_refund)
        number[rows] = np.arange(1, len(rows) + 1)
    base = text.assemble(len(orders), np.where(source == WEB, 0, 1), [
        lambda r: text.ids("WO", number[r], 10), lambda r: text.ids("ST", number[r], 10)])
    parent = np.maximum(orders.parent, 0)
    refund_ids = pc.binary_join_element_wise(base.take(pa.array(parent)), "-R", "")
    return pc.if_else(pa.array(orders.is_refund), refund_ids, base)


def _file_rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row order of an export with a few rows exported twice (adjacent); returns (source row per file row, duplicate file rows)."""
    twice = dirt.pick(rng, n, HANDFUL, minimum=min(2, n))
    rows = np.sort(np.concatenate([np.arange(n), twice]), kind="stable")
    second = np.flatnonzero(np.concatenate([[False], rows[1:] == rows[:-1]]))
    return rows, second


def _rare(rng: np.random.Generator, n: int) -> np.ndarray:
    return dirt.pick(rng, n, HANDFUL, minimum=min(2, n))


def _orphans(rng: np.random.Generator, log: dirt.DirtLog, source: str, customer: pa.Array, prefix: str, ids: pa.Array) -> pa.Array:
    """Point a handful of rows at customer ids that exist in no customer source."""
    rows = _rare(rng, len(customer))
    orphan = text.ids(prefix, 9_900_000 + np.arange(len(rows)), 7)
    log.add(source, rows, "orphan_customer_id", column="customer_id", record_ids=ids.take(pa.array(rows)), values=orphan)
    return dirt.replace_rows(customer, rows, orphan)


def _future(rng: np.random.Generator, log: dirt.DirtLog, source: str, values: pa.Array, period: calendar.Period,
            fmt: str, ids: pa.Array, column: str) -> pa.Array:
    rows = _rare(rng, len(values))
    written = text.local_format(dirt.future_times(rng, period, len(rows)), fmt)
    log.add(source, rows, "future_date", column=column, record_ids=ids.take(pa.array(rows)), values=written)
    return dirt.replace_rows(values, rows, written)


def web_orders(rng, orders: Orders, ids: pa.Array, record_ids: pa.Array, period: calendar.Period, log: dirt.DirtLog) -> dict[str, pa.Array]:
    """Columns of ``web_orders`` (web, app and mini-program orders and refunds)."""
    source_rows = np.flatnonzero(np.isin(orders.channel, [0, 1, 2]))
    rows, second = _file_rows(rng, len(source_rows))
    o = orders.take(source_rows[rows])
    n = len(rows)
    order_id = ids.take(pa.array(source_rows[rows]))
    log.add("web_orders", second, "duplicate_row", record_ids=order_id.take(pa.array(second)))
    offset = rng.random(n) < 0.55
    time = text.assemble(n, offset.astype(np.int8), [
        lambda r: pc.binary_join_element_wise(text.iso_seconds(o.time[r]), "Z", ""),
        lambda r: pc.binary_join_element_wise(text.iso_seconds(o.time[r], offset_seconds=calendar.LOCAL_OFFSET), "+08:00", ""),
    ])
    log.add_file("web_orders", "mixed_time_offsets", column="order_time", value="+08:00 and Z")
    time = _future(rng, log, "web_orders", time, period, "%Y-%m-%dT%H:%M:%S+08:00", order_id, "order_time")
    amount = pc.cast(pa.array(o.amount), pa.string())
    bad = _rare(rng, n)
    bad_values = text.lookup(("#VALUE!", "N/A", "abc"), rng.integers(0, 3, len(bad)))
    log.add("web_orders", bad, "invalid_amount", column="order_amount", record_ids=order_id.take(pa.array(bad)), values=bad_values)
    amount = dirt.replace_rows(amount, bad, bad_values)
    currency_variant = text.choose(rng, n, [0.99, 0.005, 0.005])
    currency = text.lookup(("CNY", "RMB", "cny"), currency_variant)
    log.add("web_orders", np.flatnonzero(currency_variant > 0), "currency_variant", column="currency",
            record_ids=order_id.take(pa.array(np.flatnonzero(currency_variant > 0))), values=currency.filter(pa.array(currency_variant > 0)))
    customer = _orphans(rng, log, "web_orders", record_ids.take(pa.array(o.record)), "W", order_id)
    return {
        "order_id": order_id,
        "customer_id": customer,
        "order_time": time,
        "order_amount": amount,
        "currency": currency,
        "discount_amount": pa.array(o.discount),
        "channel": text.lookup(reference.SALES_CHANNELS, o.channel),
        "is_refund": text.lookup(("false", "true"), o.is_refund.astype(np.int8)),
    }


def store_sales(rng, orders: Orders, ids: pa.Array, record_ids: pa.Array, period: calendar.Period, log: dirt.DirtLog) -> dict[str, pa.Array]:
    """Columns of ``store_sales`` (till receipts and refunds; amounts as printed text)."""
    source_rows = np.flatnonzero(orders.channel == reference.SALES_CHANNELS.index("store"))
    rows, second = _file_rows(rng, len(source_rows))
    o = orders.take(source_rows[rows])
    n = len(rows)
    order_id = ids.take(pa.array(source_rows[rows]))
    log.add("store_sales", second, "duplicate_row", record_ids=order_id.take(pa.array(second)))
    formats = ["%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y年%m月%d日 %H:%M"]
    variant = text.choose(rng, n, [0.5, 0.35, 0.15])
    time = text.assemble(n, variant, [(lambda f: (lambda r: text.local_format(o.time[r], f)))(f) for f in formats])
    log.add_file("store_sales", "mixed_date_formats", column="order_time", value=" | ".join(formats))
    time = _future(rng, log, "store_sales", time, period, formats[0], order_id, "order_time")
    amount, amount_variant = dirt.amount_text(rng, o.amount)
    log.add_file("store_sales", "amount_text_formats", column="order_amount", value="¥1,234.50 | RMB 1,234.50 | 1,234元 | full-width digits | （123.00） refunds")
    wide = pa.array(np.flatnonzero(amount_variant == 4))
    log.add("store_sales", wide.to_numpy(), "full_width", column="order_amount", record_ids=order_id.take(wide), values=amount.take(wide))
    bad = _rare(rng, n)
    bad_values = text.lookup(("待定", "N/A", "--"), rng.integers(0, 3, len(bad)))
    log.add("store_sales", bad, "invalid_amount", column="order_amount", record_ids=order_id.take(pa.array(bad)), values=bad_values)
    amount = dirt.replace_rows(amount, bad, bad_values)
    discount = pc.if_else(pa.array(o.discount > 0), text.money(o.discount), pa.nulls(n, pa.string()))
    customer = record_ids.take(pa.array(o.record))
    customer = dirt.plant_missing(rng, log, "store_sales", "customer_id", customer, 0.002, order_id)
    customer = _orphans(rng, log, "store_sales", customer, "S", order_id)
    return {"order_id": order_id, "customer_id": customer, "order_time": time, "order_amount": amount, "discount_amount": discount}


def order_items(orders_ids: pa.Array, lines: OrderLines, product_ids: pa.Array) -> pa.Table:
    """The ``order_items`` Parquet table, lines sorted by order row."""
    order = np.lexsort((lines.line_number, lines.order))
    return pa.table({
        "order_id": orders_ids.take(pa.array(lines.order[order])),
        "line_number": pa.array(lines.line_number[order].astype(np.int64)),
        "product_id": product_ids.take(pa.array(lines.product[order])),
        "quantity": pa.array(lines.quantity[order]),
        "unit_price_amount": pa.array(lines.unit_price[order]),
    })


def products(catalogue: Catalogue, product_ids: pa.Array) -> dict[str, pa.Array]:
    """Columns of ``products``."""
    return {
        "product_id": product_ids,
        "product_name": pa.array(catalogue.name, pa.string()),
        "category": text.lookup(reference.CATEGORY_NAMES, catalogue.category),
        "list_price_amount": pa.array(catalogue.list_price),
    }


def _timestamps(t: np.ndarray) -> pa.Array:
    """Naive UTC timestamps (ms) for Parquet exports."""
    return pa.array((np.asarray(t, dtype=np.int64) * 1000).astype("datetime64[ms]"))


def _local_or_null(t: np.ndarray) -> pa.Array:
    text_values = text.local_format(np.maximum(t, 0), "%Y-%m-%d %H:%M:%S")
    return pc.if_else(pa.array(t >= 0), text_values, pa.nulls(len(t), pa.string()))


def touchpoints(touches: marketing.Touches, record: np.ndarray, record_ids: pa.Array, campaign_ids: pa.Array, period: calendar.Period) -> pa.Table:
    """The ``touchpoints`` Parquet table."""
    campaign = marketing.campaign_index(period, touches.channel, touches.time)
    return pa.table({
        "touchpoint_id": text.ids("TP", np.arange(1, len(touches.time) + 1), 10),
        "customer_id": record_ids.take(pa.array(record[touches.person])),
        "campaign_id": campaign_ids.take(pa.array(campaign)),
        "channel": text.lookup(marketing.CHANNELS, touches.channel),
        "touch_time": _timestamps(touches.time),
    })


def campaigns(rows: dict[str, list]) -> dict[str, pa.Array]:
    """Columns of ``campaigns``."""
    return {
        "campaign_id": text.ids("CMP", np.array(rows["number"]), 4),
        "campaign_name": pa.array(rows["name"], pa.string()),
        "channel": pa.array(rows["channel"], pa.string()),
        "start_date": pa.array(rows["start_date"], pa.string()),
        "end_date": pa.array(rows["end_date"], pa.string()),
        "spend_amount": pa.array(rows["spend"], pa.float64()),
    }


def surveys(surveys_: service.Surveys, order_record: np.ndarray, record_ids: pa.Array) -> dict[str, pa.Array]:
    """Columns of ``surveys``."""
    n = len(surveys_.time)
    comments = service.comment_texts()
    return {
        "survey_id": text.ids("R", np.arange(1, n + 1), 8),
        "customer_id": record_ids.take(pa.array(order_record[surveys_.order])),
        "survey_time": text.local_format(surveys_.time, "%Y-%m-%d %H:%M:%S"),
        "nps_score": pa.array(surveys_.nps, mask=surveys_.nps < 0),
        "csat_score": pa.array(surveys_.csat, mask=surveys_.csat < 0),
        "comment": pc.if_else(pa.array(surveys_.comment >= 0), text.lookup(comments, np.maximum(surveys_.comment, 0)), pa.nulls(n, pa.string())),
    }


def support_tickets(tickets: service.Tickets, record: np.ndarray, record_ids: pa.Array) -> dict[str, pa.Array]:
    """Columns of ``support_tickets``."""
    n = len(tickets.opened)
    return {
        "ticket_id": text.ids("TK", np.arange(1, n + 1), 8),
        "customer_id": record_ids.take(pa.array(record)),
        "opened_time": text.local_format(tickets.opened, "%Y-%m-%d %H:%M:%S"),
        "first_response_time": _local_or_null(tickets.first_response),
        "resolved_time": _local_or_null(tickets.resolved),
        "category": text.lookup(service.TICKET_CATEGORIES, tickets.category),
        "contact_channel": text.lookup(service.CONTACT_CHANNELS, tickets.contact_channel),
        "n_contacts": pa.array(tickets.n_contacts),
        "is_escalated": text.lookup(("false", "true"), tickets.is_escalated.astype(np.int8)),
    }


def opportunities(pipeline: b2b.Pipeline, record: np.ndarray, record_ids: pa.Array) -> tuple[dict[str, pa.Array], dict[str, pa.Array]]:
    """Columns of ``opportunities`` and ``opportunity_stage_history``."""
    ids = text.ids("OPP", np.arange(1, len(pipeline.created) + 1), 6)
    opportunities_ = {
        "opportunity_id": ids,
        "customer_id": record_ids.take(pa.array(record[pipeline.person])),
        "lead_source": text.lookup(b2b.LEAD_SOURCES, pipeline.source),
        "owner": text.lookup(b2b.OWNERS, pipeline.owner),
        "created_time": text.local_format(pipeline.created, "%Y-%m-%d %H:%M:%S"),
        "expected_amount": pa.array(pipeline.amount),
        "status": text.lookup(("open", "won", "lost"), pipeline.status),
        "closed_time": _local_or_null(pipeline.closed),
    }
    history = {
        "opportunity_id": ids.take(pa.array(pipeline.history_opportunity)),
        "stage": text.lookup(b2b.STAGES + ("won", "lost"), pipeline.history_stage),
        "entered_time": text.local_format(pipeline.history_time, "%Y-%m-%d %H:%M:%S"),
    }
    return opportunities_, history


def experiment_assignments(assignments: experiment.Assignments, record: np.ndarray, record_ids: pa.Array) -> pa.Table:
    """The ``experiment_assignments`` Parquet table."""
    n = len(assignments.person)
    return pa.table({
        "experiment_id": pa.nulls(n, pa.string()).fill_null(assignments.experiment_id),
        "customer_id": record_ids.take(pa.array(record)),
        "variant": text.lookup(experiment.VARIANTS, assignments.variant),
        "assigned_time": _timestamps(assignments.assigned),
        "is_converted": pa.array(assignments.converted),
        "revenue_amount": pa.array(assignments.revenue),
    })
