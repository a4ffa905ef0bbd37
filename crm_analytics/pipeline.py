"""The B2B sales pipeline: stage conversion, win rates, sales cycle, velocity, weighted value and lead scoring.

Inputs are the ``opportunities`` table (one row per opportunity: ``lead_source``,
``owner``, ``created_time``, ``expected_amount``, ``status`` open/won/lost,
``closed_time``) and ``opportunity_stage_history`` (one row per stage entered:
``opportunity_id``, ``stage``, ``entered_time``). The stages form the dataset's
ladder (``Ladder``, from ``pipeline.open_stages`` of the dataset file; default
``lead < qualified < proposal < negotiation``), then ``won``; ``lost`` can follow
any stage. An opportunity has *reached* a stage when its history shows it entered
that stage or a later one of the ladder; without a stage history, reached stages
are inferred from its status and current ``stage`` (``reached_from_current_stage``,
an assumption the report states). A stage off the ladder is an error naming the
dataset file and the line to write. Stage-level aggregation runs in the engine
with Ibis; the lead-scoring model works on the opportunity-level frame in pandas.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from crm_analytics import datasets, frames, intervals, pipeline_counts, plots, privacy, schema

STAGES = ("lead", "qualified", "proposal", "negotiation", "won")  # the default ladder (datasets.OPEN_STAGES, then won)
WON, LOST = "won", "lost"
OPPORTUNITY_COLUMNS = ["opportunity_id", "lead_source", "owner", "created_time", "expected_amount", "status", "closed_time"]
HISTORY_COLUMNS = ["opportunity_id", "stage", "entered_time"]


class StageLadderError(ValueError):
    """The stages in the data do not fit the dataset's stage ladder; the message names the dataset file and the line to write."""


@dataclass(frozen=True)
class Ladder:
    """A company's stage ladder: its open stages in order, then ``won``; ``lost`` can follow any stage.

    ``dataset_file``: the dataset file it comes from (named in errors; empty when not known);
    ``declared``: whether that file declares ``pipeline.open_stages`` (else the default ladder is assumed).
    """

    open_stages: tuple[str, ...] = STAGES[:-1]
    dataset_file: str = ""
    declared: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages of the conversion funnel: the open stages, then ``won``."""
        return (*self.open_stages, WON)

    def describe(self) -> str:
        """One line for reports, e.g. ``lead > qualified > won (declared in b2b.yaml)``."""
        where = f"declared in {Path(self.dataset_file).name}" if self.declared else "the default ladder"
        return f"{' > '.join(self.stages)} ({where})"


def ladder_of(dataset) -> Ladder:
    """The stage ladder of a ``datasets.Dataset`` (its ``pipeline.open_stages``, else the default ladder)."""
    settings = dataset.pipeline
    return Ladder(tuple(settings.open_stages), str(dataset.file), bool(settings.declared))


def _as_ladder(stages: Sequence[str] | Ladder) -> Ladder:
    """``stages`` as a ``Ladder``: a ladder as it is; a sequence of stages (ending with ``won`` or not) as its open stages."""
    if isinstance(stages, Ladder):
        return stages
    stages = tuple(stages)
    return Ladder(stages[:-1] if stages and stages[-1] == WON else stages)


def check_stages(stage_counts: pd.Series, ladder: Ladder, *, table: str) -> None:
    """Raise ``StageLadderError`` when a stage in the data is not on the ladder (nor ``won`` / ``lost``).

    Parameters
    ----------
    stage_counts : pandas.Series
        Rows per stage value (index: the stage), e.g. ``history["stage"].value_counts()``.
    ladder : Ladder
        The dataset's ladder; its ``dataset_file`` is named with the line to write there.
    table : str
        Where the stages were read (``opportunity_stage_history`` or ``opportunities``), for the message.
    """
    stage_counts = stage_counts[stage_counts > 0]
    unknown = stage_counts[~stage_counts.index.isin([*ladder.stages, LOST])]
    if unknown.empty:
        return
    where = ladder.dataset_file or "the dataset file"
    listing = ", ".join(f"{stage!r} ({int(n):,} rows)" for stage, n in unknown.items())
    foreign = [str(s) for s in unknown.index if s not in datasets.OPEN_STAGES]
    if foreign:
        raise StageLadderError(f"{table} holds stage(s) {listing}; {foreign} are not stages of the data model: map them onto "
                               f"{list(datasets.OPEN_STAGES) + [WON, LOST]} with value_maps in {where}, e.g. "
                               f"`value_maps: {{{table}: {{stage: {{{foreign[0]}: TODO}}}}}}`")
    merged = [s for s in datasets.OPEN_STAGES if s in ladder.open_stages or s in unknown.index]
    ladder_name = "declared" if ladder.declared else "default"
    raise StageLadderError(f"{table} holds stage(s) {listing} that are not on the {ladder_name} stage ladder "
                           f"{list(ladder.open_stages)}; add them to the ladder in {where}: "
                           f"`pipeline: {{open_stages: [{', '.join(merged)}]}}`")


def _check_history_stages(history: ibis.Table, ladder: Ladder) -> None:
    """``check_stages`` on the stages of a stage-history table (counted in the engine)."""
    counts = history.group_by("stage").aggregate(n=history.count()).to_pandas()
    check_stages(counts.set_index("stage")["n"], ladder, table="opportunity_stage_history")


def _check_no_skipped_stage(furthest: pd.Series, entered: pd.Index, ladder: Ladder) -> None:
    """Raise ``StageLadderError`` when a stage of the ladder was entered by no opportunity yet some went past it.

    That is the mark of a stage the company does not have: counting deals as having passed it would be made up.
    ``furthest``: rank (1-based on ``ladder.stages``) per opportunity; ``entered``: the stages found in the history.
    """
    skipped = [(k, s) for k, s in enumerate(ladder.open_stages, start=1) if s not in entered and (furthest > k).any()]
    if not skipped:
        return
    kept = [s for s in ladder.open_stages if s not in {s for _, s in skipped}]
    names = [s for _, s in skipped]
    past = int((furthest > skipped[0][0]).sum())
    raise StageLadderError(f"opportunity_stage_history: no opportunity entered stage(s) {names} of the "
                           f"{'declared' if ladder.declared else 'default'} ladder {list(ladder.open_stages)}, yet {past:,} went "
                           f"past {names[0]!r}; if the company has no such stage, declare its ladder in "
                           f"{ladder.dataset_file or 'the dataset file'}: `pipeline: {{open_stages: [{', '.join(kept)}]}}`")


def _furthest_stage(history: frames.TableLike, stages: Sequence[str] | Ladder):
    """Ibis table: per opportunity, the rank (1-based on the ladder's stages) of the furthest stage it entered (0: none).

    Checks the history's stages against the ladder (``check_stages``, ``StageLadderError``).
    """
    frames.require_columns(history, HISTORY_COLUMNS, context="pipeline(stage_history)")
    ladder = _as_ladder(stages)
    table = frames.as_ibis(history)
    _check_history_stages(table, ladder)
    rank = table.stage.cases(*[(s, i + 1) for i, s in enumerate(ladder.stages)], else_=0)
    return table.mutate(rank=rank).group_by("opportunity_id").aggregate(furthest=ibis._.rank.max())


def reached_from_history(stage_history: frames.TableLike, *, stages: Sequence[str] | Ladder = STAGES) -> pd.DataFrame:
    """Per opportunity in the stage history, how far along the ladder it got.

    An opportunity reached a stage when it entered it or a later stage of the ladder (a stage skipped in the
    export counts as passed: the ladder says deals pass its stages in order); ``lost`` ranks 0. Raises
    ``StageLadderError`` for a stage off the ladder, or a ladder stage no opportunity entered though some went past it.

    Returns
    -------
    pandas.DataFrame
        ``opportunity_id``, ``furthest`` (rank on ``Ladder.stages``, 1-based; 0: no stage of the ladder).
    """
    ladder = _as_ladder(stages)
    furthest = _furthest_stage(stage_history, ladder).to_pandas()
    entered = pd.Index(frames.as_ibis(stage_history).select("stage").distinct().to_pandas()["stage"])
    _check_no_skipped_stage(furthest["furthest"], entered, ladder)
    return furthest


def reached_from_current_stage(opportunities: frames.TableLike, *, stages: Sequence[str] | Ladder = STAGES) -> pd.DataFrame:
    """Without a stage history: how far along the ladder each opportunity got, from its status and current ``stage``.

    The assumption (say it in the report, see ``current_stage_note``): a won deal passed every open stage of the
    ladder; an open deal, or a lost one whose ``stage`` is the open stage it was lost at, passed the stages up to
    its current one; a deal whose stage is not recorded (no ``stage`` column, a missing value, or a lost deal
    with stage ``lost``) is counted at the first stage only.

    Returns
    -------
    pandas.DataFrame
        ``opportunity_id``, ``furthest`` (rank on ``Ladder.stages``, 1-based), ``is_stage_known`` (bool).
    """
    frames.require_columns(opportunities, ["opportunity_id", "status"], context="reached_from_current_stage(opportunities)")
    ladder = _as_ladder(stages)
    opps = frames.to_pandas(opportunities)
    current = opps["stage"].astype("object") if "stage" in opps.columns else pd.Series(None, index=opps.index, dtype="object")
    check_stages(current.value_counts(), ladder, table="opportunities")
    rank = current.map({s: k for k, s in enumerate(ladder.open_stages, start=1)})
    won = (opps["status"] == WON).fillna(False).to_numpy(dtype=bool)
    furthest = np.where(won, len(ladder.stages), rank.fillna(1).to_numpy(dtype=float)).astype("int64")
    return pd.DataFrame({"opportunity_id": opps["opportunity_id"].to_numpy(), "furthest": furthest,
                         "is_stage_known": won | rank.notna().to_numpy()})


def current_stage_note(reached: pd.DataFrame, *, stages: Sequence[str] | Ladder = STAGES) -> str:
    """The data note of a conversion inferred without stage history (``reached_from_current_stage``'s output)."""
    ladder = _as_ladder(stages)
    unknown = int((~reached["is_stage_known"].astype(bool)).sum())
    return (f"No stage history: stage conversion is inferred from each opportunity's status and current stage on the ladder "
            f"{ladder.describe()}. Won deals are counted as having passed every stage of the ladder; open and lost deals the "
            f"stages up to their current one; {unknown:,} of {len(reached):,} opportunities without a recorded stage are "
            f"counted at {ladder.stages[0]!r} only.")


def stage_conversion(stage_history: frames.TableLike | None, *, stages: Sequence[str] | Ladder = STAGES,
                     opportunities: frames.TableLike | None = None) -> pd.DataFrame:
    """Opportunities that reached each stage of the ladder and the share that went on to the next one.

    Parameters
    ----------
    stage_history : table or None
        ``opportunity_stage_history`` (``reached_from_history``); ``None`` when the dataset has none: then the
        stages are inferred from ``opportunities`` (``reached_from_current_stage``, an assumption to report).
    stages : Ladder or sequence of str
        The dataset's ladder (``ladder_of``), or its stages in order ending with ``won`` (default: ``STAGES``).
    opportunities : table, optional
        Needed without a stage history.

    Returns
    -------
    pandas.DataFrame
        One row per stage in order: ``stage``, ``n_reached``, ``conversion_to_next_pct``
        (percent of those that reached the stage and reached the next; missing for the
        last), ``conversion_from_first_pct``.
    """
    ladder = _as_ladder(stages)
    if stage_history is not None:
        furthest = reached_from_history(stage_history, stages=ladder)["furthest"].to_numpy()
    elif opportunities is not None:
        furthest = reached_from_current_stage(opportunities, stages=ladder)["furthest"].to_numpy()
    else:
        raise ValueError("stage_conversion: give the stage history, or the opportunities when the dataset has no stage history")
    reached = np.array([(furthest >= k).sum() for k in range(1, len(ladder.stages) + 1)])
    nxt = np.append(reached[1:], np.nan)
    out = pd.DataFrame({"stage": list(ladder.stages), "n_reached": reached})
    out["conversion_to_next_pct"] = np.where(reached > 0, 100 * nxt / np.maximum(reached, 1), np.nan)
    out["conversion_from_first_pct"] = 100 * reached / reached[0] if reached[0] else np.nan
    return out


def win_rates(opportunities: frames.TableLike, *, by: str | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Win rate of closed opportunities (won / (won + lost)), overall or per ``by`` group, with a Wilson interval.

    Returns
    -------
    pandas.DataFrame
        ``by`` (when given), ``n_closed``, ``n_won``, ``n_lost``, ``n_open``, ``win_rate_pct``,
        ``win_rate_low_pct``, ``win_rate_high_pct``, ``won_amount`` (dataset currency, of won deals).
    """
    frames.require_columns(opportunities, ["status", "expected_amount", *([by] if by else [])], context="win_rates(opportunities)")
    t = frames.as_ibis(opportunities)
    aggregates = dict(
        n_won=(t.status == "won").cast("int64").sum(),
        n_lost=(t.status == "lost").cast("int64").sum(),
        n_open=(t.status == "open").cast("int64").sum(),
        won_amount=(t.status == "won").ifelse(t.expected_amount, 0.0).sum(),
    )
    out = (t.group_by(by).aggregate(**aggregates).order_by(by) if by else t.aggregate(**aggregates)).to_pandas()
    out["n_closed"] = out["n_won"] + out["n_lost"]
    closed = out["n_closed"].where(out["n_closed"] > 0)
    out["win_rate_pct"] = 100 * out["n_won"] / closed
    low, high = intervals.wilson_interval(out["n_won"], out["n_closed"], confidence=1 - alpha)
    out["win_rate_low_pct"], out["win_rate_high_pct"] = 100 * low, 100 * high
    lead = [by] if by else []
    return out[[*lead, "n_closed", "n_won", "n_lost", "n_open", "win_rate_pct", "win_rate_low_pct", "win_rate_high_pct", "won_amount"]]


def sales_cycle(opportunities: frames.TableLike, *, by: str | None = None) -> pd.DataFrame:
    """Days from creation to closing of closed opportunities, per outcome (and ``by`` group).

    Returns
    -------
    pandas.DataFrame
        ``by`` (when given), ``status`` (won / lost), ``n_closed``, ``mean_days``, ``median_days``.
    """
    frames.require_columns(opportunities, ["status", "created_time", "closed_time", *([by] if by else [])], context="sales_cycle(opportunities)")
    t = frames.as_ibis(opportunities)
    t = t.filter(t.status.isin(["won", "lost"]) & t.closed_time.notnull())
    t = t.mutate(days=(t.closed_time.epoch_seconds() - t.created_time.epoch_seconds()) / 86_400)
    keys = [*([by] if by else []), "status"]
    out = t.group_by(keys).aggregate(n_closed=t.count(), mean_days=t.days.mean(), median_days=t.days.median())
    return out.order_by(keys).to_pandas()


def time_in_stage(stage_history: frames.TableLike, *, stages: Sequence[str] | Ladder = STAGES[:-1]) -> pd.DataFrame:
    """Days spent in each open stage of the ladder before the next stage (or the close) was entered; stays still open are left out.

    Returns
    -------
    pandas.DataFrame
        ``stage``, ``n_stays``, ``mean_days``, ``median_days``, ``p90_days``.
    """
    frames.require_columns(stage_history, HISTORY_COLUMNS, context="time_in_stage(stage_history)")
    ladder = _as_ladder(stages)
    t = frames.as_ibis(stage_history)
    _check_history_stages(t, ladder)
    stages = ladder.open_stages
    following = t.entered_time.lead().over(ibis.window(group_by="opportunity_id", order_by="entered_time"))
    t = t.mutate(days=(following.epoch_seconds() - t.entered_time.epoch_seconds()) / 86_400)
    t = t.filter(t.days.notnull() & t.stage.isin(list(stages)))
    out = t.group_by("stage").aggregate(
        n_stays=t.count(), mean_days=t.days.mean(), median_days=t.days.median(), p90_days=t.days.quantile(0.9)
    ).to_pandas()
    out["stage"] = pd.Categorical(out["stage"], categories=list(stages), ordered=True)
    return out.sort_values("stage").reset_index(drop=True)


def pipeline_velocity(opportunities: frames.TableLike, *, by: str | None = None) -> pd.DataFrame:
    """Sales velocity: open opportunities x win rate x average won deal / average won sales cycle.

    Returns
    -------
    pandas.DataFrame
        ``by`` (when given), ``n_open``, ``win_rate_pct``, ``average_won_amount`` (dataset currency),
        ``mean_cycle_days`` (won deals), ``velocity_amount_per_day`` (dataset currency of expected wins per day).
    """
    rates = win_rates(opportunities, by=by)
    cycle = sales_cycle(opportunities, by=by)
    won_cycle = cycle.loc[cycle["status"] == "won"].drop(columns=["status", "n_closed", "median_days"])
    keys = [by] if by else []
    out = rates.merge(won_cycle, on=keys, how="left") if keys else rates.assign(mean_days=won_cycle["mean_days"].iloc[0] if len(won_cycle) else np.nan)
    out["average_won_amount"] = out["won_amount"] / out["n_won"].where(out["n_won"] > 0)
    out = out.rename(columns={"mean_days": "mean_cycle_days"})
    out["velocity_amount_per_day"] = out["n_open"] * out["win_rate_pct"] / 100 * out["average_won_amount"] / out["mean_cycle_days"]
    return out[[*keys, "n_open", "win_rate_pct", "average_won_amount", "mean_cycle_days", "velocity_amount_per_day"]]


def fill_expected_amounts(opportunities: frames.TableLike, rule: datasets.ExpectedAmountRule | None, *,
                          products: frames.TableLike | None = None) -> pd.DataFrame:
    """Open opportunities' missing amounts filled by the dataset's declared rule (``pipeline.expected_amount_rule``).

    Only open deals are filled; a closed deal keeps its amount. Without a rule nothing is filled.

    Parameters
    ----------
    opportunities : table
        ``opportunity_id``, ``status``, ``expected_amount`` (dataset currency), and the rule's ``by`` column.
    rule : datasets.ExpectedAmountRule or None
        ``product_list_price``: the list price of the deal's ``product`` (``products.product_id``, else
        ``products.product_name``); otherwise ``amounts[<by value>]``, else ``default``.
    products : table, optional
        ``products`` (``product_id``, ``product_name``, ``list_price_amount``), for ``product_list_price``.

    Returns
    -------
    pandas.DataFrame
        The opportunities with ``expected_amount`` filled where the rule gives an amount, and
        ``is_amount_filled`` (bool: filled here) and ``is_amount_missing`` (bool: an open deal still without an amount).
    """
    frames.require_columns(opportunities, ["opportunity_id", "status", "expected_amount"], context="fill_expected_amounts(opportunities)")
    opps = frames.to_pandas(opportunities).copy()
    opps["expected_amount"] = opps["expected_amount"].astype("Float64")
    gap = (opps["status"] == "open").fillna(False).to_numpy(dtype=bool) & opps["expected_amount"].isna().to_numpy()
    filled = pd.Series(np.nan, index=opps.index, dtype="float64")
    if rule is not None and gap.any():
        filled = _rule_amounts(opps, rule, products)
    use = gap & filled.notna().to_numpy()
    opps.loc[use, "expected_amount"] = filled[use].to_numpy()
    opps["is_amount_filled"] = use
    opps["is_amount_missing"] = gap & ~use
    return opps


def _rule_amounts(opps: pd.DataFrame, rule: datasets.ExpectedAmountRule, products: frames.TableLike | None) -> pd.Series:
    """The amount ``rule`` gives each opportunity (missing where it gives none)."""
    amounts = dict(rule.amounts)
    if rule.product_list_price:
        if products is None:
            raise ValueError("the expected_amount_rule product_list_price needs the products table (product_id, product_name, "
                             "list_price_amount); this dataset has none: declare amounts by product instead")
        listed = frames.to_pandas(products)
        frames.require_columns(listed, ["product_id", "product_name", "list_price_amount"], context="fill_expected_amounts(products)")
        amounts = (dict(zip(listed["product_name"].astype(str), listed["list_price_amount"], strict=True))
                   | dict(zip(listed["product_id"].astype(str), listed["list_price_amount"], strict=True)))
    picked = pd.Series(np.nan, index=opps.index, dtype="float64")
    if rule.by:
        if rule.by not in opps.columns:
            raise ValueError(f"the expected_amount_rule picks amounts by {rule.by!r}, which opportunities do not have; "
                             f"its columns are {list(opps.columns)}")
        picked = opps[rule.by].astype("object").map(lambda v: amounts.get(str(v)) if pd.notna(v) else None).astype("float64")
    return picked.fillna(rule.default) if rule.default is not None else picked


def with_furthest_stage(opportunities: frames.TableLike, stage_history: frames.TableLike | None, *, ladder: Ladder,
                        expected_amount_rule: datasets.ExpectedAmountRule | None = None, products: frames.TableLike | None = None) -> pd.DataFrame:
    """The opportunities with their amounts filled by ``expected_amount_rule`` and the furthest stage of ``ladder``
    each entered: ``furthest`` (1-based rank) and ``is_stage_known``, from ``stage_history`` when given
    (``reached_from_history``), else from the current stage (``reached_from_current_stage``)."""
    opps = fill_expected_amounts(opportunities, expected_amount_rule, products=products)
    if stage_history is not None:
        furthest = reached_from_history(stage_history, stages=ladder).assign(is_stage_known=True)
    else:
        furthest = reached_from_current_stage(opps, stages=ladder)
    return opps.merge(furthest, on="opportunity_id", how="left")


def weighted_pipeline(opportunities: frames.TableLike, stage_history: frames.TableLike | None, *,
                      stages: Sequence[str] | Ladder = STAGES, expected_amount_rule: datasets.ExpectedAmountRule | None = None,
                      products: frames.TableLike | None = None) -> pd.DataFrame:
    """Open pipeline value by current stage, weighted by the historical win rate from that stage.

    The weight of a stage is the share of closed opportunities that reached it and were won. An open deal's
    stage is the furthest it entered (``reached_from_history``; without a stage history, ``stage_history=None``,
    its current stage, ``reached_from_current_stage``); an open deal with no stage of the ladder is at the first
    stage. An open deal without an amount gets one from ``expected_amount_rule`` when the dataset declares one
    (``fill_expected_amounts``); otherwise it is counted in ``n_open`` and ``n_without_amount`` but left out of
    the amounts.

    Returns
    -------
    pandas.DataFrame
        ``stage``, ``n_open``, ``n_without_amount`` (open deals with no amount in the data),
        ``n_amount_filled`` (of those, filled by the rule), ``open_amount`` (dataset currency: known and filled
        amounts), ``win_probability`` (0-1), ``weighted_amount`` (dataset currency), ``win_probability_basis``
        (``"stage"``; ``"overall"`` when some lost deal's stage at loss is unknown: see ``stage_weight_note``).
    """
    ladder = _as_ladder(stages)
    opps = with_furthest_stage(opportunities, stage_history, ladder=ladder, expected_amount_rule=expected_amount_rule, products=products)
    is_open = (opps["status"] == "open").fillna(False).to_numpy(dtype=bool)
    opps["furthest"] = np.where(is_open, opps["furthest"].fillna(0).clip(lower=1), opps["furthest"])
    closed = opps.loc[opps["status"].isin([WON, LOST])]
    # a lost deal whose stage at loss is unknown would count at the first stage only and lift every later
    # stage's win rate (to 1.0 when no loss has a stage): then every stage gets the overall win rate instead
    by_stage = not ((closed["status"] == LOST) & ~closed["is_stage_known"].fillna(True).astype(bool)).any()
    overall = (closed["status"] == WON).mean() if len(closed) else np.nan
    rows = []
    for k, stage in enumerate(ladder.open_stages, start=1):
        reached = closed.loc[closed["furthest"] >= k]
        probability = ((reached["status"] == WON).mean() if len(reached) else np.nan) if by_stage else overall
        open_here = opps.loc[is_open & (opps["furthest"] == k).to_numpy(dtype=bool)]
        amount = float(open_here["expected_amount"].sum(skipna=True))
        n_filled = int(open_here["is_amount_filled"].sum())
        rows.append({"stage": stage, "n_open": len(open_here), "n_without_amount": int(open_here["is_amount_missing"].sum()) + n_filled,
                     "n_amount_filled": n_filled, "open_amount": amount, "win_probability": probability,
                     "weighted_amount": amount * probability, "win_probability_basis": "stage" if by_stage else "overall"})
    return pd.DataFrame(rows)


def stage_weight_note(weighted: pd.DataFrame, opportunities: frames.TableLike) -> str:
    """The data note of a weighted pipeline whose stages all carry the overall win rate; empty when weighted by stage.

    ``weighted`` is ``weighted_pipeline``'s output; ``opportunities`` gives the counts (``status``, ``stage``).
    """
    if weighted.empty or (weighted["win_probability_basis"] == "stage").all():
        return ""
    opps = frames.to_pandas(opportunities)
    lost = opps["status"] == LOST
    known = opps["stage"].notna() & (opps["stage"] != LOST) if "stage" in opps.columns else pd.Series(False, index=opps.index)
    n_unknown = int((lost & ~known).sum())
    return (f"{n_unknown:,} of {int(lost.sum()):,} lost deals have no recorded stage at which they were lost, so a win rate per "
            f"stage would be too high for every stage after the first: each open stage is weighted by the overall win rate "
            f"of closed deals, {float(weighted['win_probability'].iloc[0]):.1%}.")


def open_amount_note(weighted: pd.DataFrame, rule: datasets.ExpectedAmountRule | None) -> str:
    """One sentence on the open deals without an amount (``weighted_pipeline``'s output); empty when there are none."""
    missing, filled = int(weighted["n_without_amount"].sum()), int(weighted["n_amount_filled"].sum())
    if not missing:
        return ""
    n_open = int(weighted["n_open"].sum())
    if rule is None:
        return (f"{missing:,} of {n_open:,} open deals have no amount and are left out of the open pipeline value "
                f"(the dataset declares no pipeline.expected_amount_rule).")
    left = f"; {missing - filled:,} the rule gives no amount for are left out" if missing > filled else ""
    return (f"{missing:,} of {n_open:,} open deals have no amount: {filled:,} are valued by the dataset's expected-amount "
            f"rule ({rule.describe()}){left}.")


def owner_stage_counts(opportunities: frames.TableLike, stage_history: frames.TableLike | None, *,
                       stages: Sequence[str] | Ladder = STAGES, expected_amount_rule: datasets.ExpectedAmountRule | None = None,
                       products: frames.TableLike | None = None, breakdown_by: str | None = None,
                       key: str | bytes | None = None) -> pd.DataFrame:
    """Deal counts per owner and furthest stage: what a page recomputes a viewer's pipeline from (``pipeline_counts``).

    Every opportunity is counted once, in the row of its owner, its other dimensions and the furthest stage it
    reached (as ``weighted_pipeline`` places it: the stage history, else its current stage). The counts add up
    across rows, so the stage conversion, weighted pipeline and win rate of any set of rows follow from them
    (``pipeline_counts``); over every row they are this run's own tables. Each group holds a row for every stage
    of the ladder (zeros included), so any selection of rows knows the ladder.

    Parameters
    ----------
    opportunities, stage_history, stages, expected_amount_rule, products
        As for ``weighted_pipeline``.
    breakdown_by : str, optional
        The run's breakdown dimension, kept as a column (unless it names a person) so that its win rates can be
        recomputed too.
    key : str or bytes, optional
        The pseudonym key; default: the project's (``privacy.load_key``).

    Returns
    -------
    pandas.DataFrame
        ``owner_key`` (``privacy.person_keys`` of the owner; never the name), ``manager_key``, ``team``, ``region``
        (those the opportunities have values for), ``breakdown_by`` when given, ``stage_rank`` (1-based on
        ``Ladder.stages``; 0: no stage of the ladder; missing: not in the stage history), ``stage``, and
        ``pipeline_counts.COUNT_COLUMNS``: ``n_deals``, ``n_open``, ``n_won``, ``n_lost``, ``won_amount`` and
        ``open_amount`` (dataset currency; open amounts as filled by ``expected_amount_rule``), ``n_without_amount``,
        ``n_amount_filled``, ``n_lost_stage_unknown``.
    """
    ladder = _as_ladder(stages)
    opps = with_furthest_stage(opportunities, stage_history, ladder=ladder, expected_amount_rule=expected_amount_rule, products=products)
    present = available_dimensions(opps)
    people = [c for c in pipeline_counts.PERSON_DIMENSIONS if c in present or c == "owner"]
    groups = [c for c in (*pipeline_counts.GROUP_DIMENSIONS, breakdown_by) if c and c in present and c not in people]
    dims = [*(privacy.person_key_column(c) for c in people), *dict.fromkeys(groups)]
    status = opps["status"]
    is_open, is_won, is_lost = ((status == value).fillna(False).astype(bool) for value in ("open", WON, LOST))
    amount = pd.to_numeric(opps["expected_amount"], errors="coerce").astype("float64")
    frame = pd.DataFrame({
        **{privacy.person_key_column(c): privacy.person_keys(opps[c], key=key) for c in people},
        **{c: opps[c] for c in dims if c in opps.columns},
        pipeline_counts.STAGE_RANK: pd.array(opps["furthest"], dtype="Int64"),
        "n_deals": 1, "n_open": is_open.astype("int64"), "n_won": is_won.astype("int64"), "n_lost": is_lost.astype("int64"),
        "won_amount": amount.where(is_won, 0.0).fillna(0.0), "open_amount": amount.where(is_open, 0.0).fillna(0.0),
        "n_without_amount": (is_open & (opps["is_amount_missing"] | opps["is_amount_filled"])).astype("int64"),
        "n_amount_filled": (is_open & opps["is_amount_filled"]).astype("int64"),
        "n_lost_stage_unknown": (is_lost & opps["is_stage_known"].eq(False).fillna(False)).astype("int64"),
    })
    columns = list(pipeline_counts.COUNT_COLUMNS)
    counted = frame.groupby([*dims, pipeline_counts.STAGE_RANK], dropna=False, sort=True)[columns].sum().reset_index()
    every_stage = frame[dims].drop_duplicates().merge(
        pd.DataFrame({pipeline_counts.STAGE_RANK: pd.array(range(1, len(ladder.stages) + 1), dtype="Int64")}), how="cross")
    out = every_stage.merge(counted, on=[*dims, pipeline_counts.STAGE_RANK], how="outer")
    out[columns] = out[columns].fillna(0).astype({c: "float64" if c.endswith("_amount") else "int64" for c in columns})
    names = {rank: stage for rank, stage in enumerate(ladder.stages, start=1)}
    out.insert(len(dims) + 1, pipeline_counts.STAGE, out[pipeline_counts.STAGE_RANK].map(names).astype("string"))
    return out.sort_values([*dims, pipeline_counts.STAGE_RANK], na_position="last", kind="stable").reset_index(drop=True)


# --- breakdowns ------------------------------------------------------------------------------


def available_dimensions(opportunities: frames.TableLike) -> list[str]:
    """The declared opportunity dimensions (``schema.OPPORTUNITY_DIMENSIONS``) this table holds values of, in declared order."""
    t = frames.as_ibis(opportunities)
    present = [c for c in schema.OPPORTUNITY_DIMENSIONS if c in t.columns]
    if not present:
        return []
    counts = t.aggregate(**{c: t[c].notnull().cast("int64").sum() for c in present}).to_pandas().iloc[0]
    return [c for c in present if counts[c] and counts[c] > 0]


def check_dimension(opportunities: frames.TableLike, by: str) -> str:
    """Return ``by`` when opportunities can be broken down by it; otherwise a ``ValueError`` listing the available dimensions.

    A dimension is available when it is declared (``schema.OPPORTUNITY_DIMENSIONS``) and the dataset maps it
    (at least one opportunity has a value).
    """
    available = available_dimensions(opportunities)
    if by in available:
        return by
    choices = ", ".join(available) or "none"
    if by in schema.OPPORTUNITY_DIMENSIONS:
        raise ValueError(f"breakdown_by {by!r}: this dataset's opportunities have no {by} (the column is empty); map it in the "
                         f"dataset file's opportunities source (`{by}: <their column>` under `columns:`), or choose one of: {choices}")
    close = difflib.get_close_matches(str(by), schema.OPPORTUNITY_DIMENSIONS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"breakdown_by {by!r} is not an opportunity dimension{hint}; available in this dataset: {choices} "
                     f"(declared: {', '.join(schema.OPPORTUNITY_DIMENSIONS)})")


def breakdown(opportunities: frames.TableLike, *, by: str, alpha: float = 0.05) -> pd.DataFrame:
    """Win rate, sales cycle and pipeline value per group of one opportunity dimension.

    Groups are the values as stored (a sales representative's name, never its mask: mask the result for
    display, e.g. ``privacy.mask_frame(result, distinct_names=True)``); opportunities without a value form one
    group with a missing label.

    Parameters
    ----------
    opportunities : table
        ``status``, ``expected_amount``, ``created_time``, ``closed_time`` and the column ``by``.
    by : str
        One of ``schema.OPPORTUNITY_DIMENSIONS`` (``lead_source``, ``owner``, ``product``, ``team``, ``manager``, ``region``).
    alpha : float
        One minus the confidence of the Wilson interval of the win rate.

    Returns
    -------
    pandas.DataFrame
        One row per group: ``by``, ``n_closed``, ``n_won``, ``n_lost``, ``n_open``, ``win_rate_pct``, ``win_rate_low_pct``,
        ``win_rate_high_pct`` (as ``win_rates``), ``won_amount``, ``open_amount`` (dataset currency, open deals with an
        amount), ``n_open_without_amount``, ``mean_won_days``, ``median_won_days``, ``mean_lost_days``, ``median_lost_days``
        (creation to close), ``velocity_amount_per_day`` (as ``pipeline_velocity``).
    """
    if by not in schema.OPPORTUNITY_DIMENSIONS:
        check_dimension(opportunities, by)
    frames.require_columns(opportunities, [by, "status", "expected_amount", "created_time", "closed_time"], context="breakdown(opportunities)")
    rates = win_rates(opportunities, by=by, alpha=alpha)
    t = frames.as_ibis(opportunities)
    is_open = t.status == "open"
    pipeline_value = t.group_by(by).aggregate(
        open_amount=is_open.ifelse(t.expected_amount, 0.0).sum(),
        n_open_without_amount=(is_open & t.expected_amount.isnull()).cast("int64").sum(),
    ).to_pandas()
    cycle = sales_cycle(opportunities, by=by).pivot(index=by, columns="status", values=["mean_days", "median_days"])
    cycle = pd.DataFrame({f"{stat.split('_')[0]}_{status}_days": cycle[(stat, status)] if (stat, status) in cycle.columns else np.nan
                          for status in ("won", "lost") for stat in ("mean_days", "median_days")}, index=cycle.index).reset_index()
    velocity = pipeline_velocity(opportunities, by=by)[[by, "velocity_amount_per_day"]]
    out = rates.merge(pipeline_value, on=by, how="left").merge(cycle, on=by, how="left").merge(velocity, on=by, how="left")
    out["open_amount"] = out["open_amount"].fillna(0.0)
    return out.reset_index(drop=True)


# --- lead scoring ----------------------------------------------------------------------------

_CATEGORICAL = list(schema.OPPORTUNITY_DIMENSIONS)  # candidates; the optional ones when the data has them
_NUMERIC = ["log_expected_amount", "created_month", "created_weekday"]
_REQUIRED_CATEGORICAL = ["lead_source", "owner"]
NOT_SET = "(not set)"  # the category of a missing dimension value
# A feature that alone ranks won above lost deals this well (ROC-AUC on the training split, either direction) is
# taken for a value written at or after the close, e.g. a closing amount that is 0 for every lost deal. Facts known
# at creation (source, owner, product, size) rarely give a whole lead-scoring model more than about 0.85; one field
# reaching 0.95 nearly restates the outcome.
LEAKAGE_AUC = 0.95


def lead_features(opportunities: frames.TableLike) -> pd.DataFrame:
    """Features known when a lead is created, one row per opportunity.

    Only creation-time facts are features: never the close date, the final stage or status, or anything derived
    from them. The amount is a candidate like the others; ``fit_lead_score`` leaves out any feature that
    separates won from lost almost perfectly on its own (suspected leakage).

    Parameters
    ----------
    opportunities : table
        ``opportunity_id``, ``lead_source``, ``owner``, ``created_time``, ``expected_amount``, ``status``,
        ``closed_time``; optional dimensions ``product``, ``team``, ``manager``, ``region`` become features too.

    Returns
    -------
    pandas.DataFrame
        ``opportunity_id``, ``created_time``, ``status``, the dimensions present (text; missing is ``(not set)``;
        ``owner`` and ``manager`` as written, never masked: they identify people), ``log_expected_amount``
        (log1p of the amount; missing stays missing), ``created_month`` (1-12), ``created_weekday`` (0 Monday),
        ``is_won`` (True / False for closed, missing for open).
    """
    frames.require_columns(opportunities, OPPORTUNITY_COLUMNS, context="lead_features(opportunities)")
    df = frames.to_pandas(opportunities)
    created = pd.to_datetime(df["created_time"])
    dimensions = [c for c in _CATEGORICAL if c in df.columns]
    out = df[["opportunity_id", "created_time", "status"]].copy()
    for column in dimensions:
        out[column] = df[column].astype("string").fillna(NOT_SET).astype(object)
    out["log_expected_amount"] = np.log1p(pd.to_numeric(df["expected_amount"], errors="coerce").astype(float).clip(lower=0))
    out["created_month"] = created.dt.month.astype(float)
    out["created_weekday"] = created.dt.day_of_week.astype(float)
    out["is_won"] = df["status"].map({"won": True, "lost": False}).astype("boolean")
    return out


def _single_feature_auc(values: pd.Series, won: pd.Series, *, categorical: bool, random_state: int | None) -> float:
    """ROC-AUC of one feature alone (either direction, so 0.5-1); missing when it has one value only.

    A number is ranked as it is (missing values below all others); a category by its won share in the other
    folds (5-fold out-of-fold encoding, so a category seen once cannot predict itself).
    """
    if values.nunique(dropna=False) < 2:
        return np.nan
    if categorical:
        score = pd.Series(np.nan, index=values.index)
        folds = KFold(n_splits=min(5, len(values)), shuffle=True, random_state=random_state)
        for fit_rows, score_rows in folds.split(values):
            shares = won.iloc[fit_rows].groupby(values.iloc[fit_rows].to_numpy()).mean()
            score.iloc[score_rows] = values.iloc[score_rows].map(shares).fillna(won.iloc[fit_rows].mean()).to_numpy()
    else:
        score = values.fillna(values.min() - 1)
    auc = float(roc_auc_score(won, score))
    return max(auc, 1 - auc)


def screen_lead_features(
    train: pd.DataFrame, *, leakage_auc: float = LEAKAGE_AUC, random_state: int | None = 0
) -> pd.DataFrame:
    """Which candidate features the lead score may use, with each one's single-feature ROC-AUC.

    Parameters
    ----------
    train : pandas.DataFrame
        Closed opportunities of the training period (rows of ``lead_features`` with ``is_won`` set).
    leakage_auc : float
        A feature whose single-feature ROC-AUC reaches this bound is left out as suspected leakage (``LEAKAGE_AUC``).
    random_state : int, optional
        Seed of the folds encoding categories.

    Returns
    -------
    pandas.DataFrame
        One row per candidate: ``feature``, ``kind`` (category / number), ``single_feature_auc`` (0.5-1, training
        split; missing for a feature with one value), ``is_used``, ``reason`` (``used``, ``suspected leakage``,
        ``one value only``, ``not in the data``: a dimension the dataset does not map).
    """
    frames.require_columns(train, ["is_won"], context="screen_lead_features(train)")
    won = train["is_won"].astype(bool)
    rows = []
    for feature, kind in [*((c, "category") for c in _CATEGORICAL), *((c, "number") for c in _NUMERIC)]:
        if feature not in train.columns or (kind == "category" and train[feature].eq(NOT_SET).all()):
            rows.append({"feature": feature, "kind": kind, "single_feature_auc": np.nan, "is_used": False, "reason": "not in the data"})
            continue
        auc = _single_feature_auc(train[feature], won, categorical=kind == "category", random_state=random_state)
        reason = "one value only" if np.isnan(auc) else ("suspected leakage" if auc >= leakage_auc else "used")
        rows.append({"feature": feature, "kind": kind, "single_feature_auc": auc, "is_used": reason == "used", "reason": reason})
    return pd.DataFrame(rows)


@dataclass
class LeadScore:
    """A fitted lead-scoring model, its holdout evaluation and the features it uses."""

    model: Pipeline
    split_time: pd.Timestamp
    n_train: int
    n_test: int
    roc_auc: float
    roc: pd.DataFrame
    features_used: tuple[str, ...] = ()
    feature_screen: pd.DataFrame = field(default_factory=pd.DataFrame)


def _lead_model(used: Sequence[str], random_state: int | None) -> Pipeline:
    """Logistic regression on one-hot categories and imputed, scaled numbers (only the ``used`` features)."""
    categories = [c for c in used if c in _CATEGORICAL]
    numbers = [c for c in used if c in _NUMERIC]
    parts = [("categories", OneHotEncoder(handle_unknown="ignore"), categories)] if categories else []
    if numbers:
        parts.append(("numbers", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numbers))
    classifier = LogisticRegression(max_iter=1000, C=1.0, random_state=random_state)
    return Pipeline([("features", ColumnTransformer(parts)), ("classifier", classifier)])


def fit_lead_score(
    features: pd.DataFrame, *, test_share: float = 0.25, random_state: int | None = 0, leakage_auc: float = LEAKAGE_AUC
) -> LeadScore:
    """Fit a logistic-regression lead score on closed opportunities with a time-based split.

    The closed opportunities created last (``test_share`` of them) form the holdout; the model is fitted on the
    earlier ones and its ROC-AUC measured on the holdout. Candidate features are screened on the training split
    first (``screen_lead_features``): one that alone separates won from lost with ROC-AUC >= ``leakage_auc`` is
    left out as suspected leakage, as is one with a single value.

    Parameters
    ----------
    features : pandas.DataFrame
        Output of ``lead_features``.
    leakage_auc : float
        Bound of the single-feature ROC-AUC above which a feature is suspected leakage (default ``LEAKAGE_AUC``).

    Returns
    -------
    LeadScore
        ``model`` (scikit-learn Pipeline), ``split_time`` (first holdout creation time),
        ``n_train``, ``n_test``, ``roc_auc`` (holdout; missing when the holdout has one class),
        ``roc`` (``false_positive_rate``, ``true_positive_rate``, ``threshold``), ``features_used``,
        ``feature_screen`` (``screen_lead_features`` of the training split).
    """
    frames.require_columns(features, ["created_time", "is_won", *_REQUIRED_CATEGORICAL, *_NUMERIC], context="fit_lead_score(features)")
    closed = features.loc[features["is_won"].notna()].sort_values("created_time", kind="stable")
    n_test = int(round(len(closed) * test_share))
    if n_test < 1 or len(closed) - n_test < 2:
        raise ValueError(f"fit_lead_score: too few closed opportunities ({len(closed)}) for a holdout of {test_share:.0%}")
    train, test = closed.iloc[:-n_test], closed.iloc[-n_test:]
    y_train = train["is_won"].astype(bool)
    if y_train.nunique() < 2:
        raise ValueError("fit_lead_score: the training period has only one outcome")
    screen = screen_lead_features(train, leakage_auc=leakage_auc, random_state=random_state)
    used = tuple(screen.loc[screen["is_used"], "feature"])
    if not used:
        left_out = ", ".join(f"{r.feature} ({r.reason})" for r in screen.itertuples())
        raise ValueError(f"fit_lead_score: no feature left to score leads with; left out: {left_out}")
    model = _lead_model(used, random_state).fit(train[list(used)], y_train)
    y_test = test["is_won"].astype(bool).to_numpy()
    scores = model.predict_proba(test[list(used)])[:, 1]
    if len(np.unique(y_test)) < 2:
        auc, roc = np.nan, pd.DataFrame(columns=["false_positive_rate", "true_positive_rate", "threshold"])
    else:
        auc = float(roc_auc_score(y_test, scores))
        fpr, tpr, thresholds = roc_curve(y_test, scores)
        roc = pd.DataFrame({"false_positive_rate": fpr, "true_positive_rate": tpr, "threshold": thresholds})
    return LeadScore(model, pd.Timestamp(test["created_time"].iloc[0]), len(train), len(test), auc, roc, used, screen)


def score_open_leads(score: LeadScore, features: pd.DataFrame) -> pd.DataFrame:
    """Rank open opportunities by their predicted probability of being won.

    Returns
    -------
    pandas.DataFrame
        ``opportunity_id``, ``lead_source``, ``owner`` (as written: mask it for display), ``win_probability`` (0-1),
        ``rank`` (1 = best).
    """
    used = list(score.features_used) or [*_REQUIRED_CATEGORICAL, *_NUMERIC]
    frames.require_columns(features, ["opportunity_id", "status", *_REQUIRED_CATEGORICAL, *used], context="score_open_leads(features)")
    open_leads = features.loc[features["status"] == "open"].copy()
    open_leads["win_probability"] = score.model.predict_proba(open_leads[used])[:, 1] if len(open_leads) else []
    open_leads = open_leads.sort_values("win_probability", ascending=False, kind="stable")
    open_leads["rank"] = np.arange(1, len(open_leads) + 1)
    return open_leads[["opportunity_id", "lead_source", "owner", "win_probability", "rank"]].reset_index(drop=True)


# --- charts ----------------------------------------------------------------------------------


def plot_stage_conversion(conversion: pd.DataFrame, time_in: pd.DataFrame | None = None, *, ax=None):
    """Bars of opportunities reaching each stage, labelled with the conversion to the next stage and the median days spent."""
    frames.require_columns(conversion, ["stage", "n_reached", "conversion_to_next_pct"], context="plot_stage_conversion(conversion)")
    plots.set_style()
    ax = plots.new_axes(ax)
    ax.bar(conversion["stage"], conversion["n_reached"], color="#2a6f97")
    days = dict(zip(time_in["stage"].astype(str), time_in["median_days"], strict=True)) if time_in is not None else {}
    for x, (stage, n, pct) in enumerate(zip(conversion["stage"], conversion["n_reached"], conversion["conversion_to_next_pct"], strict=True)):
        label = [f"{n:,}"] + ([f"-> {pct:.0f}%"] if pd.notna(pct) else []) + ([f"{days[stage]:.1f} d"] if stage in days else [])
        ax.text(x, n, "\n".join(label), ha="center", va="bottom", fontsize="small")
    ax.set_xlabel("pipeline stage")
    ax.set_ylabel("opportunities reaching the stage (count)")
    ax.set_title("Pipeline: stage conversion and median days in stage")
    return ax


def plot_win_rates(rates: pd.DataFrame, *, by: str, ax=None):
    """Horizontal bars of win rate per group with the Wilson interval; returns the Axes."""
    frames.require_columns(rates, [by, "win_rate_pct", "win_rate_low_pct", "win_rate_high_pct"], context="plot_win_rates(rates)")
    plots.set_style()
    ax = plots.new_axes(ax)
    part = rates.sort_values("win_rate_pct")
    # at a 0 % or 100 % win rate the interval's end can differ from the rate by rounding only
    errors = np.vstack([part["win_rate_pct"] - part["win_rate_low_pct"], part["win_rate_high_pct"] - part["win_rate_pct"]]).clip(min=0)
    ax.barh(part[by].astype("string").fillna(NOT_SET), part["win_rate_pct"], xerr=errors, capsize=3, color="#468faf")
    ax.set_xlabel("win rate of closed opportunities (%)")
    ax.set_title(f"Win rate by {by}")
    return ax


def plot_roc(score: LeadScore, *, ax=None):
    """ROC curve of the lead score on the holdout, with its AUC; returns the Axes."""
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(5, 5))
    ax.plot(score.roc["false_positive_rate"], score.roc["true_positive_rate"], color="#2a6f97", label=f"AUC {score.roc_auc:.2f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    ax.set_title(f"Lead score ROC (holdout from {score.split_time:%Y-%m-%d})")
    return ax
