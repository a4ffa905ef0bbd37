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


def simulate_pipeline(rng: np.random.Generator, period: calendar.Period, first_time: np.ndarray, *, account_share: float = ACCOUNT_SHARE) -> Pipeline:
    """Opportunities of ``account_share`` of persons (about 3 % in the demo), created after ``first_time`` (their first contact)."""
    accounts = np.flatnonzero((rng.random(len(first_time)) < account_share) & (first_time < period.end - calendar.DAY))
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


# --------------------------------------------------------------------------------------------
# A B2B-only dataset: accounts and their pipeline, no orders (parameters/datasets/b2b_demo.yaml)
# --------------------------------------------------------------------------------------------

B2B_DATASET = "b2b_demo"
B2B_FILES = ("accounts.csv", "opportunities.csv", "opportunity_stage_history.csv")
# A German sales team: its representatives, its customers' cities, and the parts of company names.
OWNERS_DE = ("Anna Becker", "Jonas Weber", "Lena Fischer", "Felix Wagner", "Mia Schulz", "Paul Hoffmann", "Sophie Koch", "Lukas Richter")
CITIES_DE = ("Berlin", "Hamburg", "München", "Köln", "Frankfurt am Main", "Stuttgart", "Düsseldorf", "Leipzig", "Hannover", "Nürnberg")
_COMPANY_STEMS = ("Nord", "Süd", "Rhein", "Alpen", "Elbe", "Main", "Spree", "Hansa", "Isar", "Weser", "Harz", "Ostsee",
                  "Taunus", "Neckar", "Mosel", "Eifel")
_COMPANY_TRADES = ("Logistik", "Maschinenbau", "Software", "Handel", "Medizintechnik", "Energie", "Bau", "Druck", "Versand", "Chemie")
_LEGAL_FORMS = ("GmbH", "AG", "KG", "GmbH & Co. KG")


def company_names(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct company names (stem, trade, legal form), e.g. ``Rhein Logistik GmbH``.

    Distinct so that entity resolution never merges two accounts by name; at most 640 are possible.
    """
    combos = len(_COMPANY_STEMS) * len(_COMPANY_TRADES) * len(_LEGAL_FORMS)
    if n > combos:
        raise ValueError(f"at most {combos} accounts have distinct generated names; got {n}")
    picks = rng.permutation(combos)[:n]
    stem, rest = np.divmod(picks, len(_COMPANY_TRADES) * len(_LEGAL_FORMS))
    trade, form = np.divmod(rest, len(_LEGAL_FORMS))
    return [f"{_COMPANY_STEMS[s]} {_COMPANY_TRADES[t]} {_LEGAL_FORMS[f]}" for s, t, f in zip(stem, trade, form)]


def _utc_text(t: np.ndarray):
    """ISO 8601 UTC text (``2024-03-05T09:12:00``) of UTC seconds; missing (negative) values stay empty."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from crm_analytics.demo import text

    values = text.iso_seconds(np.maximum(t, 0))
    return pc.if_else(pa.array(np.asarray(t) >= 0), values, pa.nulls(len(t), pa.string()))


def generate_b2b(
    n_accounts: int = 400,
    *,
    seed: int = 7,
    out_dir=None,
    start_date: str = "2023-01-01",
    end_date: str = "2025-06-30",
):
    """Write the B2B-only dataset: accounts, opportunities and their stage history, no orders.

    A German sales team's CRM export (read by ``parameters/datasets/b2b_demo.yaml``: Europe/Berlin, EUR, DE):
    every account has one or more opportunities (``simulate_pipeline`` with every person an account),
    moving through lead -> qualified -> proposal -> negotiation -> won or lost; the win chance depends on
    the lead source and the representative. Timestamps are written in UTC (ISO 8601); amounts in euros.

    Parameters
    ----------
    n_accounts : int
        Accounts (customers), 10 to 640; about 1.6 opportunities each.
    seed : int
        Random seed; the same arguments give the same files.
    out_dir : path, optional
        Target folder; ``None`` means ``paths.raw_dir("b2b_demo")``.
    start_date, end_date : str
        First and last calendar day of the export (ISO dates); opportunities whose next step falls after
        ``end_date`` stay open.

    Returns
    -------
    Path
        The folder holding ``accounts.csv``, ``opportunities.csv`` and ``opportunity_stage_history.csv``.
    """
    import pyarrow as pa

    from crm_analytics import paths
    from crm_analytics.demo import export, text

    if int(n_accounts) < 10:
        raise ValueError(f"n_accounts must be at least 10; got {n_accounts}")
    rng = np.random.default_rng(int(seed))
    period = calendar.Period.from_dates(start_date, end_date)
    names = company_names(rng, int(n_accounts))
    # first contacts spread over the period, the last month left for the newest leads to move
    first_time = period.start + (rng.random(len(names)) * (period.end - period.start - 30 * calendar.DAY)).astype(np.int64)
    pipeline = simulate_pipeline(rng, period, first_time, account_share=1.0)
    account_ids = text.ids("ACC", np.arange(1, len(names) + 1), 5)
    opportunity_ids = text.ids("OPP", np.arange(1, len(pipeline.created) + 1), 6)
    # opportunities are in creation order, so an account's first row is its first lead: its acquisition channel
    accounts_with_leads, first_row = np.unique(pipeline.person, return_index=True)
    first_source = np.full(len(names), -1)
    first_source[accounts_with_leads] = pipeline.source[first_row]
    folder = paths.resolve(out_dir, paths.raw_dir(B2B_DATASET))
    folder.mkdir(parents=True, exist_ok=True)
    export.write_csv(folder / "accounts.csv", {
        "account_id": account_ids,
        "company": pa.array(names),
        "city": pa.array([CITIES_DE[i] for i in rng.integers(0, len(CITIES_DE), len(names))]),
        "country": pa.array(["Germany"] * len(names)),
        "created_at": _utc_text(first_time),
        "first_lead_source": pa.array([LEAD_SOURCES[i] if i >= 0 else None for i in first_source], pa.string()),
    })
    export.write_csv(folder / "opportunities.csv", {
        "opportunity_id": opportunity_ids,
        "account_id": account_ids.take(pa.array(pipeline.person)),
        "lead_source": text.lookup(LEAD_SOURCES, pipeline.source),
        "owner": text.lookup(OWNERS_DE, pipeline.owner),
        "created_at": _utc_text(pipeline.created),
        "amount_eur": pa.array(pipeline.amount),
        "status": text.lookup(("open", "won", "lost"), pipeline.status),
        "closed_at": _utc_text(pipeline.closed),
    })
    export.write_csv(folder / "opportunity_stage_history.csv", {
        "opportunity_id": opportunity_ids.take(pa.array(pipeline.history_opportunity)),
        "stage": text.lookup(STAGES + ("won", "lost"), pipeline.history_stage),
        "entered_at": _utc_text(pipeline.history_time),
    })
    return folder
