"""Turn a simulated world into the raw exports of ``parameters/sources.yaml`` and the ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from crm_analytics import schema
from crm_analytics.demo import b2b, calendar, customers, dirt, experiment, export, marketing, records, reference, tables, text, web
from crm_analytics.demo.orders import Orders
from crm_analytics.demo.streams import stream
from crm_analytics.demo.world import World

GROUND_TRUTH = "ground_truth"
# Export encodings (the source map says `auto`: readers detect them). (encoding, byte-order mark)
ENCODINGS = {
    "web_signups": ("utf-8", True),
    "products": ("utf-8", True),
    "surveys": ("utf-8", True),
    "store_members": ("gb18030", False),
    "store_sales": ("gb18030", False),
}


def load_source_map() -> dict[str, dict]:
    """The ``sources`` mapping of the demo dataset file, ``parameters/datasets/demo.yaml``."""
    from crm_analytics import paths

    with open(paths.sources_file(paths.DEMO_DATASET), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["sources"]


def _renamed(name: str, spec: dict, columns: dict[str, object]) -> dict[str, object]:
    """Columns keyed by the export's own names, in the source map's order; the sets must match exactly."""
    mapping: dict[str, str] = spec["columns"]
    if set(columns) != set(mapping):
        raise ValueError(f"{name}: generated columns {sorted(columns)} do not match the source map's {sorted(mapping)}")
    return {mapping[c]: columns[c] for c in mapping}


def _local_timestamps(t: np.ndarray) -> pa.Array:
    """Naive business-zone timestamps (seconds), null where ``t`` < 0."""
    t = np.asarray(t, dtype=np.int64)
    return pa.array((t + calendar.LOCAL_OFFSET).astype("datetime64[s]"), mask=t < 0)


class _Writer:
    def __init__(self, world: World, folder: Path) -> None:
        self.world, self.folder = world, folder
        self.spec = load_source_map()
        self.log = dirt.DirtLog()
        self.files: dict[str, int] = {}

    def write(self, name: str, columns: dict[str, object] | pa.Table | Iterator[pa.Table]) -> None:
        spec = self.spec[name]
        path = self.folder / spec["path"]
        self.log.rename_columns(name, spec["columns"])
        if spec["format"] == "parquet":
            if isinstance(columns, dict):
                columns = pa.table(columns)
            tables_ = [columns] if isinstance(columns, pa.Table) else columns
            keys = [spec["columns"][c] for c in schema.get_table(spec["table"]).key_columns] + ["session_id"]
            renamed = (pa.table(_renamed(name, spec, dict(zip(t.column_names, t.columns)))) for t in tables_)
            rows = export.write_parquet(path, renamed, unique_columns=keys)
        elif spec["format"] == "excel":
            rows = export.write_xlsx(path, spec.get("sheet", "Sheet1"), _renamed(name, spec, columns))
        else:
            encoding, bom = ENCODINGS.get(name, ("utf-8", False))
            rows = export.write_csv(path, _renamed(name, spec, columns), encoding=encoding, bom=bom)
            if bom:
                self.log.add_file(name, "bom", value="UTF-8 byte-order mark")
            if encoding != "utf-8":
                self.log.add_file(name, "encoding", value=encoding)
        self.files[spec["path"]] = rows


def _record_ids(recs: records.Records) -> pa.Array:
    return text.assemble(len(recs), recs.source, [
        (lambda p: (lambda r: text.ids(p, recs.number[r], records.ID_WIDTH)))(p) for p in records.ID_PREFIXES])


def _web_event_tables(world: World, record_ids: pa.Array, product_ids: pa.Array) -> Iterator[pa.Table]:
    book = world.orders
    web_rows = np.flatnonzero((book.channel < 3) & ~book.is_refund)
    first_product = np.full(len(book), -1, dtype=np.int64)
    first_lines = world.lines.line_number == 1
    first_product[world.lines.order[first_lines]] = world.lines.product[first_lines]
    signup = world.records.signup_time[book.record]
    sessions = events = 0
    for k, start in enumerate(range(0, len(web_rows), web.ORDERS_PER_CHUNK)):
        rows = web_rows[start: start + web.ORDERS_PER_CHUNK]
        table, sessions, events = web.event_chunk(
            stream(world.seed, "web_events", k), book.take(rows), first_product[rows], signup[rows], record_ids,
            world.persons, world.catalogue, product_ids, sessions, events)
        yield table


def _persons_table(world: World) -> pa.Table:
    p = world.persons
    n = len(p)
    city = p.city
    return pa.table({
        "person_id": text.ids("P", np.arange(1, n + 1), 7),
        "true_segment": text.lookup(reference.SEGMENTS, p.segment),
        "acquisition_channel": text.lookup(reference.ACQUISITION_CHANNELS, p.acquisition_channel),
        "acquisition_time": _local_timestamps(p.acquisition_time),
        "dropout_time": _local_timestamps(world.dropout_time),
        "purchase_rate_per_week": pa.array(p.rate_per_week),
        "dropout_probability": pa.array(p.dropout_probability),
        "satisfaction": pa.array(p.satisfaction),
        "full_name": customers.canonical_names(p),
        "email": customers.canonical_emails(p),
        "phone": customers.e164(p.phone),
        "gender": text.lookup(reference.GENDERS, p.gender),
        "birth_date": pa.array(p.birth_date.astype("datetime64[D]")),
        "city": text.lookup([c[0] for c in reference.CITIES], city),
        "province": text.lookup([c[1] for c in reference.CITIES], city),
        "has_web_account": pa.array(p.has_web),
        "has_store_membership": pa.array(p.has_store),
    })


def _source_records_table(world: World, record_ids: pa.Array) -> pa.Table:
    recs = world.records
    return pa.table({
        "source": text.lookup(records.SOURCES, recs.source),
        "source_record_id": record_ids,
        "person_id": text.ids("P", recs.person + 1, 7),
        "is_duplicate": pa.array(recs.is_duplicate),
        "signup_time": _local_timestamps(recs.signup_time),
    })


def _channel_effects(world: World) -> dict:
    j = world.journeys
    removal = marketing.removal_effects(j)
    touches = np.bincount(world.touches.channel, minlength=len(marketing.CHANNELS))
    with_channel = j.channel_touches > 0
    return {
        "description": "Journeys convert with 1 - (1 - baseline) * prod over touches of (1 - conversion_effect[channel]); "
                       "a converting journey creates a real order within max_conversion_delay_days of its last touch.",
        "baseline_conversion": marketing.BASELINE_CONVERSION,
        "journey_days": marketing.JOURNEY_DAYS,
        "max_conversion_delay_days": marketing.MAX_DELAY_DAYS,
        "ranking": [marketing.CHANNELS[i] for i in np.argsort(-marketing.CONVERSION_EFFECT, kind="stable")],
        "n_journeys": int(len(j.person)),
        "n_converted_journeys": int(j.converted.sum()),
        "channels": {
            c: {
                "conversion_effect": float(marketing.CONVERSION_EFFECT[i]),
                "cost_per_touch": float(marketing.COST_PER_TOUCH[i]),
                "n_touchpoints": int(touches[i]),
                "n_journeys_touched": int(with_channel[:, i].sum()),
                "n_converted_journeys_touched": int((with_channel[:, i] & j.converted).sum()),
                "expected_incremental_conversions": round(float(removal[i]), 3),
            }
            for i, c in enumerate(marketing.CHANNELS)
        },
    }


def _pipeline_truth(world: World) -> dict:
    p = world.pipeline
    closed = p.status > 0
    realised = {s: (float((p.status[closed & (p.source == i)] == 1).mean()) if (closed & (p.source == i)).any() else None)
                for i, s in enumerate(b2b.LEAD_SOURCES)}
    return {
        "stages": list(b2b.STAGES) + ["won", "lost"],
        "planted_win_probability": b2b.win_rates(),
        "stage_mean_days": dict(zip(b2b.STAGES, b2b.STAGE_DAYS.tolist())),
        "owner_speed_multiplier": dict(zip(b2b.OWNERS, b2b.OWNER_SPEED.tolist())),
        "realised_win_rate_of_closed_by_lead_source": realised,
        "n_open": int((p.status == 0).sum()),
    }


def write_dataset(world: World, folder: Path) -> list[str]:
    """Write every export and the ground truth into ``folder``; return the top-level names written."""
    w = _Writer(world, folder)
    rng = stream(world.seed, "exports")
    record_ids = _record_ids(world.records)
    period = world.period
    for name, build in (("web_signups", customers.web_signups), ("store_members", customers.store_members),
                        ("call_centre_contacts", customers.call_centre_contacts)):
        w.write(name, build(rng, world.persons, world.records, record_ids, period, w.log))

    product_ids = text.ids("SKU", world.catalogue.product_number, 5)
    w.write("products", tables.products(world.catalogue, product_ids))
    book: Orders = world.orders
    order_ids = tables.order_ids(book, records.sales_source(book.channel))
    w.write("web_orders", tables.web_orders(rng, book, order_ids, record_ids, period, w.log))
    w.write("store_sales", tables.store_sales(rng, book, order_ids, record_ids, period, w.log))
    w.write("order_items", tables.order_items(order_ids, world.lines, product_ids))
    w.write("web_events", _web_event_tables(world, record_ids, product_ids))

    touch_campaign = marketing.campaign_index(period, world.touches.channel, world.touches.time)
    campaign_rows = marketing.campaigns(stream(world.seed, "campaigns"), period, touch_campaign)
    campaign_columns = tables.campaigns(campaign_rows)
    w.write("campaigns", campaign_columns)
    w.write("touchpoints", tables.touchpoints(world.touches, world.marketing_record, record_ids, campaign_columns["campaign_id"], period))
    w.write("surveys", tables.surveys(world.surveys, book.record, record_ids))
    w.write("support_tickets", tables.support_tickets(world.tickets, world.ticket_record, record_ids))
    opportunities, history = tables.opportunities(world.pipeline, world.marketing_record, record_ids)
    w.write("opportunities", opportunities)
    w.write("opportunity_stage_history", history)
    w.write("experiment_assignments", tables.experiment_assignments(world.assignments, world.assignment_record, record_ids))

    truth = folder / GROUND_TRUTH
    truth.mkdir()
    truth_rows = {
        "persons.parquet": export.write_parquet(truth / "persons.parquet", _persons_table(world)),
        "source_records.parquet": export.write_parquet(truth / "source_records.parquet", _source_records_table(world, record_ids)),
        "planted_dirt.parquet": export.write_parquet(truth / "planted_dirt.parquet", w.log.table()),
    }
    export.write_json(truth / "channel_effects.json", _channel_effects(world))
    export.write_json(truth / "experiment.json", experiment.truth(world.assignments))
    export.write_json(truth / "funnel.json", web.funnel_truth())
    export.write_json(truth / "pipeline.json", _pipeline_truth(world))

    listing = [{"path": path, "rows": rows, "sha256": export.sha256(folder / path)} for path, rows in w.files.items()]
    listing += [{"path": f"{GROUND_TRUTH}/{name}", "rows": rows, "sha256": export.sha256(truth / name)} for name, rows in truth_rows.items()]
    listing += [{"path": f"{GROUND_TRUTH}/{name}", "rows": None, "sha256": export.sha256(truth / name)}
                for name in ("channel_effects.json", "experiment.json", "funnel.json", "pipeline.json")]
    export.write_json(truth / "manifest.json", {
        "generator": "crm_analytics.demo",
        "seed": world.seed,
        "n_customers": world.n_customers,
        "start_date": world.start_date,
        "end_date": world.end_date,
        "as_of": world.end_date,
        "time_zone": "Asia/Shanghai",
        "files": listing,
    })
    return list(w.files) + [GROUND_TRUTH]
