"""The sales pipeline's figures recomputed from additive deal counts, for a page that shows some rows only.

The pipeline run (``notebooks/pipeline.ipynb``, ``pipeline.owner_stage_counts``) persists ``owner_stage_counts``:
one row per owner, the other people and groups of the deals (``manager``, ``team``, ``region``, where the dataset
has them, and the run's breakdown dimension) and the furthest stage the deals reached, with counts that add up
across rows (``COUNT_COLUMNS``). People appear only as keyed pseudonyms (``owner_key``, ``manager_key``:
``privacy.person_keys``), never by name. A page narrows the table to the viewer's rows (``pages.rows_for_viewer``)
and recomputes from them, with the run's methods:

- ``stage_conversion``: deals reaching each stage of the ladder (as ``pipeline.stage_conversion``);
- ``weighted_pipeline``: open value per stage weighted by the win rate from that stage, the weights from the
  closed deals of the same rows (as ``pipeline.weighted_pipeline`` on those deals);
- ``win_rates``: won / closed with the Wilson interval, overall or per group (as ``pipeline.win_rates``).

Over every row these give the run's own tables (``tests/test_viewer_pipeline.py`` checks it on a demo run).
The module needs pandas only (no SciPy, no Ibis), so a page kernel loads it at once.

Small groups: the figures count deals, and a deal belongs to one customer account, so a row computed from
fewer than ``k`` deals (``k`` given) is suppressed (``privacy.suppress_small_groups``): a page passes
``k`` when the viewer's rows are other people's deals (a team, a region) and no ``k`` for a sales
representative's own deals, which they hold in the CRM anyway (see ``audience_pages.deal_suppression``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crm_analytics import intervals, privacy, schema
from crm_analytics.frames import require_columns

STAGE_RANK, STAGE = "stage_rank", "stage"
# per row: deals (any status), open / won / lost deals, amounts (dataset currency), open deals without an amount
# in the data (n_amount_filled of them valued by the dataset's rule), lost deals whose stage at loss is unknown
COUNT_COLUMNS = ("n_deals", "n_open", "n_won", "n_lost", "won_amount", "open_amount", "n_without_amount", "n_amount_filled",
                 "n_lost_stage_unknown")
PERSON_DIMENSIONS = ("owner", "manager")  # persisted as keyed pseudonyms (<column>_key)
GROUP_DIMENSIONS = ("team", "region")  # persisted as written: a viewer group's rule may name them
# the dimensions a breakdown's win rates can be recomputed by (every one but people's names)
BREAKDOWN_DIMENSIONS = tuple(d for d in schema.OPPORTUNITY_DIMENSIONS if d not in PERSON_DIMENSIONS)
WIN_RATE_COLUMNS = ("n_closed", "n_won", "n_lost", "n_open", "win_rate_pct", "win_rate_low_pct", "win_rate_high_pct", "won_amount")


def ladder(counts: pd.DataFrame) -> list[tuple[int, str]]:
    """The stage ladder the counts were made on: ``(rank, stage)`` in order, the last one ``won``.

    Every group of the persisted table holds a row for each stage of the ladder (zeros included), so any
    non-empty selection of rows knows the whole ladder.
    """
    require_columns(counts, [STAGE_RANK, STAGE], context="pipeline_counts.ladder(counts)")
    ranks = pd.to_numeric(counts[STAGE_RANK], errors="coerce")
    pairs = counts.loc[ranks >= 1, [STAGE_RANK, STAGE]].drop_duplicates().sort_values(STAGE_RANK)
    return [(int(rank), str(stage)) for rank, stage in pairs.itertuples(index=False)]


def _ranks(counts: pd.DataFrame) -> pd.Series:
    """The furthest stage rank of each row as floats: 0 for no stage of the ladder, NaN for a deal without stage history."""
    return pd.to_numeric(counts[STAGE_RANK], errors="coerce").astype("float64")


def _suppressed(table: pd.DataFrame, *, count_col: str, labels: list[str], k: int | None) -> pd.DataFrame:
    """``table`` with rows of fewer than ``k`` deals suppressed (``privacy.suppress_small_groups``); as it is without ``k``."""
    return table if k is None else privacy.suppress_small_groups(table, count_col=count_col, k=k, keep_cols=labels)


def stage_conversion(counts: pd.DataFrame, *, k: int | None = None) -> pd.DataFrame:
    """Deals that reached each stage of the ladder and the share that went on, from ``owner_stage_counts`` rows.

    A deal reached a stage when its furthest stage is that one or a later one (``pipeline.stage_conversion``);
    deals without stage history are not counted. With ``k``, a stage reached by fewer than ``k`` deals is
    suppressed, and so is the conversion into it from the stage before.

    Returns
    -------
    pandas.DataFrame
        ``stage``, ``n_reached``, ``conversion_to_next_pct``, ``conversion_from_first_pct`` (and ``is_suppressed`` with ``k``).
    """
    require_columns(counts, [STAGE_RANK, STAGE, "n_deals"], context="pipeline_counts.stage_conversion(counts)")
    steps, ranks = ladder(counts), _ranks(counts)
    reached = np.array([int(counts.loc[ranks >= rank, "n_deals"].sum()) for rank, _ in steps], dtype="int64")
    following = np.append(reached[1:], np.nan)
    out = pd.DataFrame({STAGE: [stage for _, stage in steps], "n_reached": reached})
    out["conversion_to_next_pct"] = np.where(reached > 0, 100 * following / np.maximum(reached, 1), np.nan)
    out["conversion_from_first_pct"] = 100 * reached / reached[0] if len(reached) and reached[0] else np.nan
    out = _suppressed(out, count_col="n_reached", labels=[STAGE], k=k)
    if k is not None:  # the conversion into a hidden stage would give its count back
        out.loc[np.append(out["is_suppressed"].to_numpy()[1:], False), "conversion_to_next_pct"] = np.nan
    return out


def weighted_pipeline(counts: pd.DataFrame, *, k: int | None = None) -> pd.DataFrame:
    """Open value per stage weighted by the historical win rate from that stage, from ``owner_stage_counts`` rows.

    As ``pipeline.weighted_pipeline`` on the deals of the rows: an open deal sits at its furthest stage (the first
    one when it has none); a stage's weight is the share of the rows' closed deals that reached it and were
    won, or the overall win rate of those deals for every stage when a lost deal's stage at loss is unknown.
    With ``k``, a stage of fewer than ``k`` open deals is suppressed.

    Returns
    -------
    pandas.DataFrame
        ``stage``, ``n_open``, ``n_without_amount``, ``n_amount_filled``, ``open_amount`` (dataset currency),
        ``win_probability`` (0-1), ``weighted_amount`` (dataset currency), ``win_probability_basis``
        (``stage`` / ``overall``) (and ``is_suppressed`` with ``k``).
    """
    require_columns(counts, [STAGE_RANK, STAGE, *COUNT_COLUMNS], context="pipeline_counts.weighted_pipeline(counts)")
    ranks = _ranks(counts)
    open_at = ranks.fillna(0).clip(lower=1)  # an open deal without a stage of the ladder counts at the first
    closed = counts["n_won"] + counts["n_lost"]
    by_stage = int(counts["n_lost_stage_unknown"].sum()) == 0
    n_closed = int(closed.sum())
    overall = counts["n_won"].sum() / n_closed if n_closed else np.nan
    rows = []
    for rank, stage in ladder(counts)[:-1]:  # the open stages: every one but won
        reached = ranks >= rank
        n_reached = int(closed[reached].sum())
        probability = ((counts.loc[reached, "n_won"].sum() / n_reached if n_reached else np.nan) if by_stage else overall)
        here = counts.loc[open_at == rank]
        amount = float(here["open_amount"].sum())
        rows.append({STAGE: stage, "n_open": int(here["n_open"].sum()), "n_without_amount": int(here["n_without_amount"].sum()),
                     "n_amount_filled": int(here["n_amount_filled"].sum()), "open_amount": amount, "win_probability": probability,
                     "weighted_amount": amount * probability, "win_probability_basis": "stage" if by_stage else "overall"})
    out = pd.DataFrame(rows, columns=[STAGE, "n_open", "n_without_amount", "n_amount_filled", "open_amount", "win_probability",
                                      "weighted_amount", "win_probability_basis"])
    return _suppressed(out, count_col="n_open", labels=[STAGE, "win_probability_basis"], k=k)


def win_rates(counts: pd.DataFrame, *, by: str | None = None, alpha: float = 0.05, k: int | None = None) -> pd.DataFrame:
    """Win rate of closed deals (won / (won + lost)), overall or per group of ``by``, with its Wilson interval.

    As ``pipeline.win_rates`` on the deals of the rows; groups of ``by`` as stored (a missing value is one group,
    last). With ``k``, a row of fewer than ``k`` closed deals is suppressed.

    Returns
    -------
    pandas.DataFrame
        ``by`` (when given), ``n_closed``, ``n_won``, ``n_lost``, ``n_open``, ``win_rate_pct``, ``win_rate_low_pct``,
        ``win_rate_high_pct``, ``won_amount`` (dataset currency) (and ``is_suppressed`` with ``k``).
    """
    sums = ["n_won", "n_lost", "n_open", "won_amount"]
    require_columns(counts, [*sums, *([by] if by else [])], context="pipeline_counts.win_rates(counts)")
    if by:
        out = counts.groupby(by, dropna=False, sort=True)[sums].sum().reset_index()
    else:
        out = counts[sums].sum().to_frame().T
    out[["n_won", "n_lost", "n_open"]] = out[["n_won", "n_lost", "n_open"]].astype("int64")
    out["won_amount"] = out["won_amount"].astype("float64")
    out["n_closed"] = out["n_won"] + out["n_lost"]
    closed = out["n_closed"].where(out["n_closed"] > 0)
    out["win_rate_pct"] = 100 * out["n_won"] / closed
    low, high = intervals.wilson_interval(out["n_won"], out["n_closed"], confidence=1 - alpha)
    out["win_rate_low_pct"], out["win_rate_high_pct"] = 100 * low, 100 * high
    lead = [by] if by else []
    return _suppressed(out[[*lead, *WIN_RATE_COLUMNS]].reset_index(drop=True), count_col="n_closed", labels=lead, k=k)
