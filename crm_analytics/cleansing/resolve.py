"""Entity resolution: which source customer records are the same person.

Three steps, each a pure function:

1. ``exact_links``: records sharing a known person key (``person_key``, when the
   sources carry one, e.g. the same customer number in two exports), a
   normalised e-mail or an E.164 phone are linked, across sources, before any
   probabilistic matching.
2. ``candidate_pairs`` + ``score_pairs``: the remaining pairs that share a
   blocking key (``BLOCKING_RULES``; a block too big to compare whole is split by
   ``SPLIT_KEYS``, so the pairs stay linear in the records) are compared field by field and scored
   with a Fellegi-Sunter model (``FellegiSunterModel``: u from random pairs,
   m and the prior by expectation maximisation over the blocked pairs, started
   from the exact-key pairs). A record's missing fields are taken from the records
   it is exact-linked to, so the comparison is of known persons, not single records.
   ``splink_pairs`` does the same with Splink 5 on DuckDB (the reference
   implementation; slower, see the cleansing report).
3. ``cluster_records``: connected components over the accepted links give
   clusters; ``customer_keys`` names each cluster by a stable key, and
   ``survive`` builds one unified customer row per cluster.

Names are compared through ``name_key`` (pinyin for Chinese names, so
``张三``, ``張三`` and ``Zhang San`` agree).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from crm_analytics.cleansing import duck
from crm_analytics.engine import require_duckdb
from crm_analytics.frames import require_columns

RECORD_COLUMNS = ["record_id", "source", "source_customer_id", "person_key", "email", "phone", "name_key", "birth_date", "gender", "city"]
EXACT_KEYS: tuple[str, ...] = ("person_key", "email", "phone")  # linked outright, strongest first

# Pairs sharing one of these keys are compared (SQL over the records table, aliases l and r).
BLOCKING_RULES: tuple[str, ...] = (
    "l.name_key = r.name_key",
    "l.email_local = r.email_local",
    "l.phone_tail = r.phone_tail",
    "l.birth_date = r.birth_date AND l.city = r.city",
    "l.birth_date = r.birth_date AND l.name_head = r.name_head",
)
# A block of more than ``max_block_size`` records (a common name, a popular birth date in a big city) is
# split by the first of these keys its rule does not already use, a part still too big by the next, and
# so on, rather than skipped: each record is compared within one block of at most ``max_block_size``
# records per rule, so the candidate pairs stay linear in the records. A record missing a split key drops
# out of the split block.
SPLIT_KEYS: tuple[str, ...] = ("city", "birth_year", "gender", "name_head")
_IMPLIED_BY = {"birth_year": "birth_date", "name_head": "name_key"}  # a split key that cannot split its rule's blocks
# A record in a block of s records gets (s - 1) / 2 pairs. Keys whose values are a fixed set (birth date
# and city, a common name) fill their blocks up to this size as the records grow, so the pairs per record
# rise with scale up to (MAX_BLOCK_SIZE - 1) / 2 per rule: with 20 they were 2.1 at 50k persons and 5.8
# at 1M (birth date and city 1.6, name 3.7 of them), with 6 they are 0.8 and 2.0, at the same accuracy
# (the pairs a larger block adds share only a common name, or a birth date and a city, and are not linked).
MAX_BLOCK_SIZE = 6
# A record missing a split key (a call-centre record has no birth date) would drop out of the split
# block, though its name and city may be all it shares with its other records. It is compared with
# the whole block it would have been split from instead, when that block has at most this many
# records: at most MAX_PARENT_SIZE - 1 more pairs for such a record, so the pairs stay linear. With
# the fields taken from exact-linked records (``fill_from_persons``) the pairs per record on the demo
# are 0.9 at 50k persons, 1.8 at 250k and 2.5 at 1M (0.8, 1.5 and 2.0 without either).
MAX_PARENT_SIZE = 4 * MAX_BLOCK_SIZE

# Comparison levels: SQL returning an integer level; -1 means "a value is missing" (weight 0).
COMPARISONS: dict[str, str] = {
    "name": """CASE WHEN l.name_key IS NULL OR r.name_key IS NULL THEN -1
        WHEN l.name_key = r.name_key THEN 3
        WHEN jaro_winkler_similarity(l.name_key, r.name_key) >= 0.92 THEN 2
        WHEN jaro_winkler_similarity(l.name_key, r.name_key) >= 0.80 THEN 1 ELSE 0 END""",
    "birth_date": """CASE WHEN l.birth_date IS NULL OR r.birth_date IS NULL THEN -1
        WHEN l.birth_date = r.birth_date THEN 2
        WHEN abs(date_diff('day', l.birth_date, r.birth_date)) <= 31
          OR (month(l.birth_date) = day(r.birth_date) AND day(l.birth_date) = month(r.birth_date)
              AND year(l.birth_date) = year(r.birth_date)) THEN 1 ELSE 0 END""",
    "email": """CASE WHEN l.email IS NULL OR r.email IS NULL THEN -1
        WHEN l.email = r.email THEN 2
        WHEN l.email_local = r.email_local OR levenshtein(l.email, r.email) <= 2 THEN 1 ELSE 0 END""",
    "phone": """CASE WHEN l.phone IS NULL OR r.phone IS NULL THEN -1
        WHEN l.phone = r.phone THEN 2
        WHEN levenshtein(l.phone, r.phone) <= 1 THEN 1 ELSE 0 END""",
    "city": "CASE WHEN l.city IS NULL OR r.city IS NULL THEN -1 WHEN l.city = r.city THEN 1 ELSE 0 END",
    "gender": """CASE WHEN l.gender IS NULL OR r.gender IS NULL OR l.gender = 'unknown' OR r.gender = 'unknown' THEN -1
        WHEN l.gender = r.gender THEN 1 ELSE 0 END""",
}
N_LEVELS = {"name": 4, "birth_date": 3, "email": 3, "phone": 3, "city": 2, "gender": 2}

# Starting values of m and u per level (lowest level first). Estimates from the data are
# shrunk towards them with ``PSEUDO_COUNT`` pairs, which matters only for small inputs.
DEFAULT_M = {"name": (0.03, 0.03, 0.04, 0.90), "birth_date": (0.03, 0.02, 0.95), "email": (0.05, 0.05, 0.90),
             "phone": (0.04, 0.01, 0.95), "city": (0.05, 0.95), "gender": (0.02, 0.98)}
DEFAULT_U = {"name": (0.96, 0.036, 0.0037, 0.0003), "birth_date": (0.996, 0.0039, 0.0001), "email": (0.9996, 0.0003, 0.0001),
             "phone": (0.99994, 0.00001, 0.00005), "city": (0.87, 0.13), "gender": (0.5, 0.5)}
PSEUDO_COUNT = 50.0
# Strangers assumed to share a name and a city that, apart from the pair (and records exact-linked to
# it), no record shares: a tenth of a person; also the least count of compatible namesakes in the second
# fit (``compatible_namesakes``). Chosen on the demo's ground truth at 50k and 250k persons with the first
# fit alone, where 0.02-0.1 gave the same accuracy and 0.5 lost about 0.04 of the recall.
NAME_CITY_FLOOR = 0.1
# m of a comparison is re-estimated among the pairs that, without it, match with at least this posterior:
# a person's second e-mail and phone show only in pairs that agree on everything else.
SEED_PROBABILITY = 0.99
# Fields a record without them takes from the records it is exact-linked to (``fill_from_persons``).
PERSON_FIELDS: tuple[str, ...] = ("name_key", "birth_date", "email", "phone", "city", "gender")


# ------------------------------------------------------------------------------------- records


def prepare_records(customers: pd.DataFrame) -> pd.DataFrame:
    """Return the matching view of clean customer records.

    Parameters
    ----------
    customers : DataFrame
        Clean customer rows of every source: ``_source``, ``customer_id`` (the
        source's id), ``email``, ``phone``, ``name_key``, ``birth_date``, ``gender``, ``city``,
        and optionally ``person_key`` (a known person identifier; missing when absent).

    Returns
    -------
    DataFrame
        One row per record: ``record_id`` (0..n-1), ``source``, ``source_customer_id``,
        ``person_key``, the compared fields, and the blocking helpers ``email_local``, ``phone_tail`` (last 8
        digits), ``name_head`` (first 3 letters of the name key) and ``birth_year``.
    """
    require_columns(customers, ["_source", "customer_id", "email", "phone", "name_key", "birth_date", "gender", "city"], context="prepare_records(customers)")
    records = pd.DataFrame(
        {
            "record_id": np.arange(len(customers), dtype="int64"),
            "source": customers["_source"].astype("string").to_numpy(),
            "source_customer_id": customers["customer_id"].astype("string").to_numpy(),
        }
    )
    person_keys = customers["person_key"] if "person_key" in customers.columns else pd.Series(pd.NA, index=customers.index)
    records["person_key"] = person_keys.astype("string").str.strip().replace("", pd.NA).to_numpy()
    for column in ("email", "phone", "name_key", "gender", "city"):
        records[column] = customers[column].astype("string").to_numpy()
    records["birth_date"] = pd.to_datetime(customers["birth_date"]).astype("datetime64[us]").to_numpy()
    return with_blocking_helpers(records)


# Blocking helpers: column -> (the compared field it is computed from, how).
BLOCKING_HELPERS = {
    "email_local": ("email", lambda email: email.str.split("@").str[0]),
    "phone_tail": ("phone", lambda phone: phone.str.slice(-8)),
    "name_head": ("name_key", lambda name: name.str.replace(" ", "", regex=False).str.slice(0, 3)),
    "birth_year": ("birth_date", lambda birth_date: birth_years(birth_date)),
}


def with_blocking_helpers(records: pd.DataFrame) -> pd.DataFrame:
    """Return ``records`` with its blocking helpers (``BLOCKING_HELPERS``) computed from the compared fields.

    ``email_local`` (before the @), ``phone_tail`` (last 8 digits), ``name_head`` (first 3
    letters of the name key) and ``birth_year``; the frame is changed in place and returned.
    """
    for helper, (column, compute) in BLOCKING_HELPERS.items():
        records[helper] = compute(records[column])
    return records


def birth_years(birth_date: pd.Series) -> np.ndarray:
    """Year of each birth date (nullable Int16; missing stays missing), a split key of oversized blocks."""
    return pd.Series(birth_date).dt.year.astype("Int16").to_numpy()


def fill_from_persons(records: pd.DataFrame, persons: np.ndarray, *, columns: Sequence[str] = PERSON_FIELDS) -> pd.DataFrame:
    """Return a copy of ``records`` whose missing ``columns`` take the value the record's known person holds.

    ``persons`` labels each record (0..k-1, e.g. the components of the exact-key links). A
    value is filled in only when the person's records hold exactly one distinct value of
    that column (``unknown`` gender counts as missing); conflicting values leave it missing.
    The blocking helpers of the filled values follow them.

    Why: a call-centre record with a phone but no birth date, and a web sign-up with the
    same name and city but no phone, share nothing else; when the phone also sits on a
    store record carrying a birth date, comparing the two persons rather than the two
    records shows whether the birth dates agree or clash.
    """
    filled = records.copy()
    persons = np.asarray(persons, dtype="int64")
    n_persons = int(persons.max()) + 1 if len(persons) else 0
    linked = np.bincount(persons, minlength=n_persons)[persons] > 1  # only records linked to others can gain a value
    for column in columns:
        codes, values = pd.factorize(filled[column])  # -1: missing
        if column == "gender":
            codes = np.where(filled[column].eq("unknown").fillna(False).to_numpy(), -1, codes)
        held = linked & (codes >= 0)
        lowest, highest = np.full(n_persons, len(values)), np.full(n_persons, -1)
        np.minimum.at(lowest, persons[held], codes[held])
        np.maximum.at(highest, persons[held], codes[held])
        single = np.where(lowest == highest, highest, -1)[persons]  # the person's one value, -1 when none or several
        take = np.flatnonzero(linked & (codes < 0) & (single >= 0))
        if not len(take):
            continue
        at = filled.index[take]
        filled.loc[at, column] = values[single[take]]
        for helper, (source, compute) in BLOCKING_HELPERS.items():
            if source == column:
                filled.loc[at, helper] = compute(filled.loc[at, column])
    return filled


# ----------------------------------------------------------------------------------- exact keys


def exact_links(records: pd.DataFrame, *, keys: Sequence[str] = EXACT_KEYS) -> pd.DataFrame:
    """Link records that share a non-missing exact key (keys absent from ``records`` are skipped).

    Each group of records with the same key value is linked as a star (every
    record to the group's first), which is enough for clustering. A pair sharing
    several keys keeps the rule of the first key in ``keys``.

    Returns
    -------
    DataFrame
        ``left_id``, ``right_id`` (record ids, left < right) and ``match_rule``
        (``exact_person_key`` / ``exact_email`` / ``exact_phone``).
    """
    parts = [pd.DataFrame({"left_id": pd.Series([], dtype="int64"), "right_id": pd.Series([], dtype="int64"), "match_rule": pd.Series([], dtype="object")})]
    for key in (k for k in keys if k in records.columns):
        present = records[records[key].notna()][["record_id", key]]
        first = present.groupby(key, sort=False)["record_id"].transform("min")
        linked = present[present["record_id"] != first]
        parts.append(pd.DataFrame({"left_id": first[linked.index].to_numpy(), "right_id": linked["record_id"].to_numpy(), "match_rule": f"exact_{key}"}))
    links = pd.concat(parts, ignore_index=True)
    return links.drop_duplicates(["left_id", "right_id"]).reset_index(drop=True)


# --------------------------------------------------------------------------- pairs and levels


def _comparison_sql(pairs_relation: str) -> str:
    levels = ",\n  ".join(f"CAST(({sql}) AS TINYINT) AS {name}" for name, sql in COMPARISONS.items())
    return f"""SELECT CAST(p.left_id AS INTEGER) AS left_id, CAST(p.right_id AS INTEGER) AS right_id, {levels}
FROM {pairs_relation} p JOIN records l ON l.record_id = p.left_id JOIN records r ON r.record_id = p.right_id"""


def _connection(records: pd.DataFrame, work_dir: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection holding ``records`` as its own table (read from pandas once, then within the memory limit)."""
    con = duck.connect(work_dir)
    con.register("records_frame", duck.arrow(records))
    con.execute("CREATE TEMP TABLE records AS SELECT * FROM records_frame")
    con.unregister("records_frame")
    return con


def rule_columns(rule: str) -> list[str]:
    """The record columns a blocking rule compares (``l.<column>`` terms), sorted."""
    return sorted({part.split(".")[1].split()[0] for part in rule.split() if part.startswith("l.")})


def split_levels(columns: Sequence[str], split_keys: Sequence[str] = SPLIT_KEYS) -> list[list[str]]:
    """The key columns of each blocking level of a rule: its own columns, then one more split key per level.

    Split keys the rule already compares, or that are implied by a compared column
    (``birth_year`` by ``birth_date``), are left out: they would not split its blocks.
    """
    usable = [k for k in split_keys if k not in columns and _IMPLIED_BY.get(k) not in columns]
    return [[*columns, *usable[:depth]] for depth in range(len(usable) + 1)]


def _blocked_pairs_sql(rule: str, max_block_size: int, split_keys: Sequence[str], max_parent_size: int = 0) -> str:
    """SQL of the pairs of one rule: blocks of at most ``max_block_size`` records, oversized ones split level by level.

    Every record gets its block size at every level (window counts); a pair is compared at
    the first level where the two records share a block small enough. A record missing the
    split key of a level is compared with every record of the oversized block it would have
    been split from, when that block holds at most ``max_parent_size`` records. Records in a
    block still oversized after the last split key are not compared under this rule.
    """
    levels = split_levels(rule_columns(rule), split_keys)
    keys = levels[-1]
    sizes = ", ".join(f"count(*) OVER (PARTITION BY {', '.join(level)}) AS _n{depth}" for depth, level in enumerate(levels))
    present = " AND ".join(f"{c} IS NOT NULL" for c in levels[0])
    blocks = f"(SELECT record_id, {', '.join(keys)}, {sizes} FROM records WHERE {present})"
    parts = []
    for depth, level in enumerate(levels):
        same = " AND ".join([rule, *(f"l.{k} = r.{k}" for k in level[len(levels[0]):])])
        fits = f"l._n{depth} <= {max_block_size}" + (f" AND l._n{depth - 1} > {max_block_size}" if depth else "")
        parts.append(f"SELECT l.record_id AS left_id, r.record_id AS right_id FROM blocks l JOIN blocks r "
                     f"ON {same} AND l.record_id < r.record_id WHERE {fits}")
        if depth and max_parent_size > max_block_size:
            # a record without this level's split key: compared with its whole (oversized) parent block, if small enough
            parent = " AND ".join([rule, *(f"l.{k} = r.{k}" for k in level[len(levels[0]):-1])])
            parts.append(f"SELECT least(l.record_id, r.record_id) AS left_id, greatest(l.record_id, r.record_id) AS right_id "
                         f"FROM blocks l JOIN blocks r ON {parent} AND l.record_id <> r.record_id "
                         f"WHERE l.{level[-1]} IS NULL AND l._n{depth - 1} > {max_block_size} AND l._n{depth - 1} <= {max_parent_size}")
    return f"WITH blocks AS MATERIALIZED {blocks} " + " UNION ALL ".join(parts)


def candidate_pairs(
    records: pd.DataFrame,
    *,
    rules: Sequence[str] = BLOCKING_RULES,
    max_block_size: int = MAX_BLOCK_SIZE,
    split_keys: Sequence[str] = SPLIT_KEYS,
    max_parent_size: int = MAX_PARENT_SIZE,
    include: pd.DataFrame | None = None,
    work_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Return the distinct record pairs that share at least one blocking key, with their comparison levels.

    A key shared by more than ``max_block_size`` records (a common name, a default
    e-mail, a placeholder birth date) is not compared as one block: it is split by
    ``split_keys`` (see ``SPLIT_KEYS``) until its parts are small enough, and what
    stays oversized after the last split key is skipped for that rule. A record
    missing a split key is compared with the block it would have been split from
    when that block holds at most ``max_parent_size`` records (see ``MAX_PARENT_SIZE``).
    Each record is compared within one block per rule, so the pairs are at most
    ``len(rules) * ((max_block_size - 1) / 2 + max_parent_size - 1)`` per record:
    linear in the records. ``include`` (``left_id``, ``right_id``,
    ``match_rule``; left < right, each pair once) adds pairs compared whatever
    their keys, and their ``match_rule``. DuckDB works within ``duck.MEMORY_LIMIT``,
    spilling to ``work_dir``.

    Returns
    -------
    DataFrame
        ``left_id``, ``right_id`` (left < right, int32), one integer level column per
        comparison (int8), and ``match_rule`` (categorical) when ``include`` is given (missing
        for the other pairs). Rows in no particular order.
    """
    require_duckdb(records, operation="entity-resolution blocking (cleansing.resolve.candidate_pairs)")
    if "birth_year" not in records.columns and "birth_date" in records.columns:  # records prepared by an older build
        records = records.assign(birth_year=birth_years(records["birth_date"]))
    con = _connection(records, work_dir)
    selects = [f"SELECT * FROM ({_blocked_pairs_sql(rule, max_block_size, split_keys, max_parent_size)})" for rule in rules]
    query = _comparison_sql("pairs")
    if include is not None:
        rules = pd.Categorical(include["match_rule"])  # carried as small integer codes, not as text per pair
        con.register("included", pd.DataFrame({"left_id": include["left_id"], "right_id": include["right_id"], "rule_code": rules.codes}))
        selects.append("SELECT left_id, right_id FROM included")
        query = f"SELECT c.*, i.rule_code FROM ({query}) c LEFT JOIN included i ON i.left_id = c.left_id AND i.right_id = c.right_id"
    con.execute("CREATE TEMP TABLE pairs AS SELECT DISTINCT * FROM (" + " UNION ALL ".join(selects) + ")")
    out = con.execute(query).df()
    con.close()
    if include is not None:
        out["match_rule"] = pd.Categorical.from_codes(out.pop("rule_code").fillna(-1).astype("int8"), categories=rules.categories)
    return out


def random_pairs(records: pd.DataFrame, *, n_pairs: int = 200_000, random_state: int = 0, work_dir: str | Path | None = None) -> pd.DataFrame:
    """Return comparison levels of ``n_pairs`` uniformly random record pairs (almost all non-matches)."""
    rng = np.random.default_rng(random_state)
    n = len(records)
    left, right = rng.integers(0, n, n_pairs), rng.integers(0, n, n_pairs)
    keep = left != right
    pairs = pd.DataFrame({"left_id": np.minimum(left, right)[keep], "right_id": np.maximum(left, right)[keep]})
    con = _connection(records, work_dir)
    con.register("sampled", pairs)
    out = con.execute(_comparison_sql("sampled")).df()
    con.close()
    return out


# ------------------------------------------------------------------------------ Fellegi-Sunter


@dataclass
class FellegiSunterModel:
    """A Fellegi-Sunter match model over the ``COMPARISONS`` levels.

    ``u_`` (per comparison, per level): level frequencies among random pairs;
    ``m_``: among pairs that share another exact key (see ``fit``); ``prior_``:
    probability that two random records match, by EM. Weights are ``log2(m / u)``;
    a missing value weighs 0. An exact name match uses the name's own frequency
    as u when the pairs carry ``name_tf`` (term-frequency adjustment).
    """

    max_iter: int = 25
    tol: float = 1e-4
    refine_rounds: int = 1
    m_: dict[str, np.ndarray] = field(default_factory=dict)
    u_: dict[str, np.ndarray] = field(default_factory=dict)
    prior_: float = 0.0

    def fit(self, pairs: pd.DataFrame, random: pd.DataFrame, *, n_records: int) -> "FellegiSunterModel":
        """Estimate u from ``random``, m from exact-key pairs, and the prior by EM over ``pairs``.

        m of every comparison starts as the level distribution among pairs that share an
        e-mail or a phone, leaving out the key itself: for the e-mail comparison,
        pairs sharing a phone; for the phone comparison, pairs sharing an e-mail
        (the way Splink trains m on pairs blocked on one column). With m and u
        fixed, the prior (probability that two random records match, over all
        ``n_records * (n_records - 1) / 2`` pairs) is the one free parameter, found
        by EM assuming every match is among the blocked ``pairs``. Then, ``refine_rounds``
        times, m of each comparison is re-estimated among the pairs that match with a
        posterior of at least ``SEED_PROBABILITY`` on the *other* comparisons, and the prior
        found again: a person's second phone never shows among pairs sharing an e-mail when
        the second account has a second e-mail too, but it does among pairs agreeing on
        name, birth date and city.
        """
        self.u_ = {name: _level_shares(random[name], DEFAULT_U[name]) for name in COMPARISONS}
        same_email, same_phone = pairs["email"].eq(2), pairs["phone"].eq(2)
        seeds = {"email": same_phone, "phone": same_email}
        self.m_ = {name: _level_shares(pairs.loc[seeds.get(name, same_email | same_phone), name], DEFAULT_M[name]) for name in COMPARISONS}
        n_total = max(n_records * (n_records - 1) / 2, 1.0)
        self.prior_ = self._fit_prior(pairs, n_total, start=(same_email | same_phone).sum() / n_total)
        for _ in range(self.refine_rounds):
            terms = self.weight_terms(pairs)
            self.m_ = {name: _level_shares(pairs.loc[self._confident_without(terms, name), name], DEFAULT_M[name]) for name in COMPARISONS}
            self.prior_ = self._fit_prior(pairs, n_total, start=self.prior_)
        return self

    def _fit_prior(self, pairs: pd.DataFrame, n_total: float, *, start: float) -> float:
        """The prior (match probability of two random records) by EM over ``pairs``, with m and u fixed."""
        bayes = np.exp2(self.match_weight(pairs, with_prior=False))
        prior = float(np.clip(start, 1e-12, 0.5))
        for _ in range(self.max_iter):
            odds = bayes * prior / (1 - prior)
            # matches outside the blocked pairs are assumed absent, so the expected number of matches
            # is the sum of the blocked pairs' posteriors, spread over all pairs
            new_prior = float(np.clip(np.sum(odds / (1 + odds)) / n_total, 1e-12, 0.5))
            converged = abs(np.log(new_prior / prior)) < self.tol
            prior = new_prior
            if converged:
                break
        return prior

    def _confident_without(self, terms: dict[str, np.ndarray], comparison: str) -> np.ndarray:
        """Pairs whose posterior, leaving ``comparison`` out of ``terms`` (see ``weight_terms``), is at least ``SEED_PROBABILITY``."""
        left_out = {comparison} | ({"name_city"} if comparison in ("name", "city") else set())
        weight = np.log2(self.prior_ / (1 - self.prior_)) + sum(v for k, v in terms.items() if k not in left_out)
        return weight >= np.log2(SEED_PROBABILITY / (1 - SEED_PROBABILITY))

    def level_weights(self) -> pd.DataFrame:
        """Return ``comparison``, ``level``, ``m_probability``, ``u_probability``, ``match_weight`` (log2 Bayes factor)."""
        rows = []
        for name in COMPARISONS:
            for level in range(N_LEVELS[name]):
                m, u = self.m_[name][level], self.u_[name][level]
                rows.append((name, level, m, u, float(np.log2(m / u))))
        return pd.DataFrame(rows, columns=["comparison", "level", "m_probability", "u_probability", "match_weight"])

    def match_weight(self, pairs: pd.DataFrame, *, with_prior: bool = True) -> np.ndarray:
        """Return the total match weight of each pair: log2 prior odds (unless not ``with_prior``) plus the level weights."""
        start = np.log2(self.prior_ / (1 - self.prior_)) if with_prior else 0.0
        return start + sum(self.weight_terms(pairs).values(), np.zeros(len(pairs)))

    def weight_terms(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per pair, the log2 Bayes factor of each comparison (``COMPARISONS``), and ``name_city`` when the pairs carry it.

        The term-frequency adjustment of an exact name match (``name_tf``) is part of the
        ``name`` term; ``name_city`` adjusts a pair agreeing on both name and city.
        """
        terms = {}
        for name in COMPARISONS:
            levels = pairs[name].to_numpy()
            weights = np.log2(self.m_[name] / self.u_[name])
            terms[name] = np.where(levels >= 0, weights[np.clip(levels, 0, None)], 0.0)
        if "name_tf" in pairs.columns:
            # term frequency: agreeing on a rare name says more than agreeing on a common one
            exact = pairs["name"].to_numpy() == N_LEVELS["name"] - 1
            tf = pairs["name_tf"].to_numpy(dtype=float)
            terms["name"] = terms["name"] + np.where(exact & (tf > 0), np.log2(self.u_["name"][-1] / np.where(tf > 0, tf, 1.0)), 0.0)
            if "name_city_tf" in pairs.columns:
                # the same name in the same city: how many others share both says more than the product of
                # the two shares (in a large dataset a common name is shared by strangers in every big city)
                u_name = np.where(exact & (tf > 0), tf, self.u_["name"][-1])
                joint = pairs["name_city_tf"].to_numpy(dtype=float)
                both = exact & (pairs["city"].to_numpy() == 1) & (joint > 0)
                terms["name_city"] = np.where(both, np.log2(u_name * self.u_["city"][1] / np.where(both, joint, 1.0)), 0.0)
        return terms

    def match_probability(self, pairs: pd.DataFrame) -> np.ndarray:
        """Return the posterior match probability of each pair."""
        return 1.0 / (1.0 + np.exp2(-self.match_weight(pairs)))


def _level_shares(levels: pd.Series, default: Sequence[float], *, pseudo_count: float = PSEUDO_COUNT) -> np.ndarray:
    """Share of each level among known levels, shrunk towards ``default`` by ``pseudo_count`` pairs."""
    known = levels[levels >= 0].to_numpy()
    prior = np.asarray(default, dtype=float)
    counts = np.bincount(known, minlength=len(prior))[: len(prior)].astype(float) + pseudo_count * prior
    return counts / counts.sum()


MATCH_RULES = ("exact_person_key", "exact_email", "exact_phone", "probabilistic")


def score_pairs(
    records: pd.DataFrame, exact: pd.DataFrame, *, random_state: int = 0, work_dir: str | Path | None = None
) -> tuple[pd.DataFrame, FellegiSunterModel]:
    """Compare blocked pairs and exact-key pairs and score them with a fitted ``FellegiSunterModel``.

    Records are compared as the persons their exact keys make them (``fill_from_persons``:
    a missing field takes the value of the records it is exact-linked to). The model is
    fitted twice: the second time, the frequency of an agreeing name and city counts the
    other persons (exact and confident links) sharing them whom the pair's records do not
    contradict (``compatible_namesakes``): a namesake with another phone is no rival for a
    call-centre record's phone.

    Returns
    -------
    (DataFrame, FellegiSunterModel)
        Pairs with ``left_id``, ``right_id``, the comparison levels, ``match_rule``
        (categorical: ``exact_email``, ``exact_phone`` or ``probabilistic``), ``match_weight``
        (log2 odds) and ``match_probability``; and the model.
    """
    known_persons = cluster_records(len(records), exact)
    compared = fill_from_persons(records, known_persons)
    pairs = candidate_pairs(compared, include=exact, work_dir=work_dir)
    left = pairs["left_id"].to_numpy()
    pairs["name_tf"] = name_frequencies(compared)[left]
    pairs["name_city_tf"] = name_frequencies(compared, within=["city"], persons=known_persons, floor=NAME_CITY_FLOOR)[left]
    random = random_pairs(compared, random_state=random_state, work_dir=work_dir)
    model = FellegiSunterModel().fit(pairs, random, n_records=len(records))
    # second pass: namesakes counted as persons (exact and confident links), leaving out those the pair's records contradict
    confident = (pairs["match_rule"].notna() | (model.match_probability(pairs) >= SEED_PROBABILITY)).to_numpy()
    persons = cluster_records(len(records), pairs.loc[confident, ["left_id", "right_id"]])
    others = compatible_namesakes(pairs, model.weight_terms(pairs), persons)
    pairs["name_city_tf"] = np.where(pairs["name_city_tf"].to_numpy() > 0, np.maximum(others, NAME_CITY_FLOOR) / len(records), 0.0)
    model = FellegiSunterModel().fit(pairs, random, n_records=len(records))
    pairs["match_rule"] = pairs["match_rule"].cat.set_categories(MATCH_RULES).fillna("probabilistic")
    pairs["match_weight"] = model.match_weight(pairs)
    pairs["match_probability"] = model.match_probability(pairs)
    return pairs, model


def compatible_namesakes(pairs: pd.DataFrame, terms: dict[str, np.ndarray], persons: np.ndarray) -> np.ndarray:
    """Per pair: how many other persons share the name and city of one of its records without contradicting it.

    A namesake contradicts a record when the pair's evidence apart from name and city
    (the other comparisons' terms) speaks against a match: a caller whose phone is not the
    namesake's is not that namesake. Counted on both records' side; the larger count is returned.

    Parameters
    ----------
    pairs : DataFrame
        Compared pairs: ``left_id``, ``right_id`` (record ids), ``name`` and ``city`` levels.
    terms : dict of str to ndarray
        Per pair, the log2 Bayes factor of each comparison (``FellegiSunterModel.weight_terms``).
    persons : ndarray
        A person label per record id (records known to be one person share it).

    Returns
    -------
    ndarray
        Float per pair: the number of other persons (0 or more) who share the name and city.
    """
    other = sum((v for k, v in terms.items() if k not in ("name", "city", "name_city")), np.zeros(len(pairs)))
    namesake = (pairs["name"].to_numpy() == N_LEVELS["name"] - 1) & (pairs["city"].to_numpy() == 1) & (other >= 0)
    left, right = pairs["left_id"].to_numpy("int64"), pairs["right_id"].to_numpy("int64")
    ends = pd.DataFrame({"record": np.r_[left[namesake], right[namesake]], "person": np.r_[persons[right[namesake]], persons[left[namesake]]]})
    ends = ends[persons[ends["record"].to_numpy()] != ends["person"].to_numpy()]
    count = np.zeros(len(persons), dtype="float64")
    per_record = ends.drop_duplicates().groupby("record").size()
    count[per_record.index.to_numpy()] = per_record.to_numpy()
    itself = namesake & (persons[left] != persons[right])  # each side counts the other one: not an other person
    return np.maximum(count[left], count[right]) - itself


def name_frequencies(
    records: pd.DataFrame, *, within: Sequence[str] = (), persons: np.ndarray | None = None, floor: float = 0.5
) -> np.ndarray:
    """Per record: how often its ``name_key`` occurs among the *other* records of a pair that shares it.

    ``(count - 2) / n_records``, at least ``floor / n_records``; 0 when the name is missing.
    Leaving the pair's own two records out matters: with the plain frequency, a
    name held by one person with two records looks twice as common as it is,
    and the model under-trusts exactly the duplicates it should find. With
    ``within`` (e.g. ``["city"]``), the count is of records sharing the name *and*
    those columns (0 when any of them is missing). With ``persons`` (a label per
    record, e.g. the components of the exact-key links), records known to be one
    person count once: a third record of the pair's own person is no stranger.
    """
    n = max(len(records), 1)
    keys = ["name_key", *within]
    frame = records[keys].assign(_person=np.arange(len(records)) if persons is None else persons)
    counts = frame.groupby(keys, dropna=False, sort=False)["_person"].transform("nunique").astype("float64")
    missing = records[keys].isna().any(axis=1).to_numpy()
    others = np.maximum(counts.to_numpy() - 2.0, floor)
    return np.where(missing, 0.0, others / n)


# --------------------------------------------------------------------------------------- Splink


def splink_pairs(records: pd.DataFrame, *, threshold_match_probability: float = 0.5, max_pairs: float = 1e6, random_state: int = 0) -> pd.DataFrame:
    """Score the blocked pairs with Splink 5 on DuckDB (the reference implementation).

    Same blocking rules and comparable comparisons as the in-house model; u by
    random sampling, m by EM blocked on e-mail and on phone.

    Returns
    -------
    DataFrame
        ``left_id``, ``right_id``, ``match_weight``, ``match_probability`` for pairs at or
        above ``threshold_match_probability``.
    """
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    frame = records.rename(columns={"record_id": "unique_id"}).copy()
    frame["birth_date"] = frame["birth_date"].dt.strftime("%Y-%m-%d")
    frame = frame.astype({c: "object" for c in frame.columns if c != "unique_id"}).where(frame.notna(), None)
    rules = [
        block_on("name_key"), block_on("email_local"),
        block_on("phone_tail"), block_on("birth_date", "city"), block_on("birth_date", "name_head"),
    ]
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.JaroWinklerAtThresholds("name_key", [0.92, 0.8]),
            cl.DateOfBirthComparison("birth_date", input_is_string=True),
            cl.EmailComparison("email"),
            cl.LevenshteinAtThresholds("phone", [1]),
            cl.ExactMatch("city"),
            cl.ExactMatch("gender"),
        ],
        blocking_rules_to_generate_predictions=rules,
        retain_intermediate_calculation_columns=False,
    )
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(frame), settings, log_level=None)
    linker.training.estimate_probability_two_random_records_match([block_on("email"), block_on("phone")], recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=random_state)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("email"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("phone"))
    predictions = linker.inference.predict(threshold_match_probability=threshold_match_probability, warning_mode="never").as_pandas_dataframe()
    left, right = predictions["unique_id_l"].astype("int64"), predictions["unique_id_r"].astype("int64")
    return pd.DataFrame(
        {
            "left_id": np.minimum(left, right),
            "right_id": np.maximum(left, right),
            "match_weight": predictions["match_weight"].astype(float),
            "match_probability": predictions["match_probability"].astype(float),
        }
    )


# ------------------------------------------------------------------------------------ clusters


def cluster_records(n_records: int, links: pd.DataFrame) -> np.ndarray:
    """Return a cluster label per record id (0..n_records-1): connected components of ``links``."""
    if n_records == 0:
        return np.zeros(0, dtype="int64")
    left, right = links["left_id"].to_numpy("int64"), links["right_id"].to_numpy("int64")
    graph = coo_matrix((np.ones(len(left), dtype="int8"), (left, right)), shape=(n_records, n_records))
    _, labels = connected_components(graph, directed=False)
    return labels.astype("int64")


def customer_keys(records: pd.DataFrame, labels: np.ndarray, *, prefix: str = "cus_") -> pd.Series:
    """Return a stable ``customer_key`` per record.

    A cluster is named after its anchor, the smallest ``(source, source_customer_id)``
    among its members, hashed: the same records give the same key in every build,
    and adding an unrelated record never changes an existing key.
    """
    anchor_text = records["source"].astype(str) + "\x1f" + records["source_customer_id"].astype(str)
    frame = pd.DataFrame({"label": labels, "anchor": anchor_text.to_numpy()})
    anchors = frame.groupby("label")["anchor"].transform("min")
    unique_anchors = pd.unique(anchors)
    digests = {a: prefix + hashlib.sha256(a.encode("utf-8")).hexdigest()[:16] for a in unique_anchors}
    return pd.Series(anchors.map(digests).to_numpy(), index=records.index, dtype="string", name="customer_key")


def record_lineage(records: pd.DataFrame, keys: pd.Series, links: pd.DataFrame) -> pd.DataFrame:
    """Return the lineage of every source record: which customer it formed, by which rule, with what weight.

    Returns
    -------
    DataFrame
        ``source``, ``source_customer_id``, ``customer_key``, ``match_rule`` (the rule of
        the record's strongest accepted link, ``single_record`` when it has none) and
        ``match_weight`` (that link's log2 match weight; missing for single records).
    """
    links = links[["left_id", "right_id", "match_rule", "match_weight"]].astype({"match_rule": "string"})
    ends = pd.concat(
        [links[["left_id", "match_rule", "match_weight"]].rename(columns={"left_id": "record_id"}),
         links[["right_id", "match_rule", "match_weight"]].rename(columns={"right_id": "record_id"})],
        ignore_index=True,
    )
    rank = ends["match_rule"].map({"exact_person_key": 0, "exact_email": 1, "exact_phone": 2}).fillna(3)
    best = ends.assign(rank=rank).sort_values(["record_id", "rank", "match_weight"], ascending=[True, True, False])
    best = best.drop_duplicates("record_id").set_index("record_id")
    lineage = pd.DataFrame(
        {
            "source": records["source"].astype("string").to_numpy(),
            "source_customer_id": records["source_customer_id"].astype("string").to_numpy(),
            "customer_key": keys.to_numpy(),
            "match_rule": best["match_rule"].reindex(records["record_id"]).fillna("single_record").astype("string").to_numpy(),
            "match_weight": best["match_weight"].reindex(records["record_id"]).astype("Float64").to_numpy(),
        }
    )
    return lineage


def resolve_entities(
    customers: pd.DataFrame,
    *,
    match_threshold: float = 0.7,
    engine: str = "fellegi_sunter",
    random_state: int = 0,
    work_dir: str | Path | None = None,
) -> "Resolution":
    """Resolve clean customer records of every source into persons.

    Parameters
    ----------
    customers : DataFrame
        Clean customer rows (see ``prepare_records`` for the columns).
    match_threshold : float
        Posterior match probability at or above which a probabilistic pair is linked.
    engine : {"fellegi_sunter", "splink"}
        The in-house blocked Fellegi-Sunter model, or Splink 5 on DuckDB.
    random_state : int
        Seed of the random pairs that estimate u.
    work_dir : path, optional
        Folder for DuckDB's spill files when the pairs outgrow ``duck.MEMORY_LIMIT``.

    Returns
    -------
    Resolution
        ``records`` (the matching view), ``keys`` (customer_key per record, aligned
        with ``customers``), ``links`` (accepted links), ``pairs`` (all scored pairs),
        ``lineage`` and the fitted ``model`` (None for Splink).
    """
    require_duckdb(customers, operation="entity resolution (cleansing.resolve_entities)")
    records = prepare_records(customers)
    exact = exact_links(records)
    if engine == "splink":
        scored = splink_pairs(records, threshold_match_probability=min(match_threshold, 0.5), random_state=random_state)
        scored = scored.merge(exact, on=["left_id", "right_id"], how="outer")
        scored["match_rule"] = scored["match_rule"].fillna("probabilistic")
        model = None
    elif engine == "fellegi_sunter":
        scored, model = score_pairs(records, exact, random_state=random_state, work_dir=work_dir)
    else:
        raise ValueError(f"engine must be 'fellegi_sunter' or 'splink', got {engine!r}")
    accepted = scored[(scored["match_rule"] != "probabilistic") | (scored["match_probability"] >= match_threshold)]
    labels = cluster_records(len(records), accepted)
    keys = customer_keys(records, labels)
    keys.index = customers.index
    lineage = record_lineage(records, keys, accepted)
    return Resolution(records, keys, accepted.reset_index(drop=True), scored, lineage, model)


@dataclass(frozen=True)
class Resolution:
    """The result of ``resolve_entities``."""

    records: pd.DataFrame
    keys: pd.Series
    links: pd.DataFrame
    pairs: pd.DataFrame
    lineage: pd.DataFrame
    model: FellegiSunterModel | None
