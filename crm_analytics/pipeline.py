"""The B2B sales pipeline: stage conversion, win rates, sales cycle, velocity, weighted value and lead scoring.

Inputs are the ``opportunities`` table (one row per opportunity: ``lead_source``,
``owner``, ``created_time``, ``expected_amount``, ``status`` open/won/lost,
``closed_time``) and ``opportunity_stage_history`` (one row per stage entered:
``opportunity_id``, ``stage``, ``entered_time``). An opportunity has *reached*
a stage when it entered that stage or any later open stage, or was won (stages
are ordered ``lead < qualified < proposal < negotiation < won``; ``lost`` can
follow any stage). Stage-level aggregation runs in the engine with Ibis; the
lead-scoring model works on the opportunity-level frame in pandas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from crm_analytics import frames, plots

STAGES = ("lead", "qualified", "proposal", "negotiation", "won")
OPPORTUNITY_COLUMNS = ["opportunity_id", "lead_source", "owner", "created_time", "expected_amount", "status", "closed_time"]
HISTORY_COLUMNS = ["opportunity_id", "stage", "entered_time"]


def _furthest_stage(history: frames.TableLike, stages: Sequence[str]):
    """Ibis table: per opportunity, the rank (1-based) of the furthest of ``stages`` it entered."""
    frames.require_columns(history, HISTORY_COLUMNS, context="pipeline(stage_history)")
    table = frames.as_ibis(history)
    rank = table.stage.cases(*[(s, i + 1) for i, s in enumerate(stages)], else_=0)
    return table.mutate(rank=rank).group_by("opportunity_id").aggregate(furthest=ibis._.rank.max())


def stage_conversion(stage_history: frames.TableLike, *, stages: Sequence[str] = STAGES) -> pd.DataFrame:
    """Opportunities that reached each stage and the share that went on to the next one.

    Returns
    -------
    pandas.DataFrame
        One row per stage in order: ``stage``, ``n_reached``, ``conversion_to_next_pct``
        (percent of those that reached the stage and reached the next; missing for the
        last), ``conversion_from_first_pct``.
    """
    furthest = _furthest_stage(stage_history, stages).to_pandas()["furthest"].to_numpy()
    reached = np.array([(furthest >= k).sum() for k in range(1, len(stages) + 1)])
    nxt = np.append(reached[1:], np.nan)
    out = pd.DataFrame({"stage": list(stages), "n_reached": reached})
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
    from statsmodels.stats.proportion import proportion_confint

    closed = out["n_closed"].where(out["n_closed"] > 0)
    out["win_rate_pct"] = 100 * out["n_won"] / closed
    low, high = proportion_confint(out["n_won"], out["n_closed"].clip(lower=1), alpha=alpha, method="wilson")
    out["win_rate_low_pct"] = (100 * low).where(closed.notna())
    out["win_rate_high_pct"] = (100 * high).where(closed.notna())
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


def time_in_stage(stage_history: frames.TableLike, *, stages: Sequence[str] = STAGES[:-1]) -> pd.DataFrame:
    """Days spent in each stage before the next stage (or the close) was entered; stays still open are left out.

    Returns
    -------
    pandas.DataFrame
        ``stage``, ``n_stays``, ``mean_days``, ``median_days``, ``p90_days``.
    """
    frames.require_columns(stage_history, HISTORY_COLUMNS, context="time_in_stage(stage_history)")
    t = frames.as_ibis(stage_history)
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


def weighted_pipeline(opportunities: frames.TableLike, stage_history: frames.TableLike, *, stages: Sequence[str] = STAGES) -> pd.DataFrame:
    """Open pipeline value by current stage, weighted by the historical win rate from that stage.

    The weight of a stage is the share of closed opportunities that reached it and were won.

    Returns
    -------
    pandas.DataFrame
        ``stage``, ``n_open``, ``open_amount`` (dataset currency), ``win_probability`` (0-1), ``weighted_amount`` (dataset currency).
    """
    frames.require_columns(opportunities, ["opportunity_id", "status", "expected_amount"], context="weighted_pipeline(opportunities)")
    furthest = _furthest_stage(stage_history, stages).to_pandas()
    opps = frames.to_pandas(opportunities)[["opportunity_id", "status", "expected_amount"]].merge(furthest, on="opportunity_id", how="left")
    opps["stage"] = [stages[int(k) - 1] if pd.notna(k) and k >= 1 else None for k in opps["furthest"]]
    closed = opps.loc[opps["status"].isin(["won", "lost"])]
    rows = []
    for k, stage in enumerate(stages[:-1], start=1):
        reached = closed.loc[closed["furthest"] >= k]
        probability = (reached["status"] == "won").mean() if len(reached) else np.nan
        open_here = opps.loc[(opps["status"] == "open") & (opps["stage"] == stage)]
        amount = float(open_here["expected_amount"].sum())
        rows.append({"stage": stage, "n_open": len(open_here), "open_amount": amount, "win_probability": probability, "weighted_amount": amount * probability})
    return pd.DataFrame(rows)


# --- lead scoring ----------------------------------------------------------------------------

_CATEGORICAL = ["lead_source", "owner"]
_NUMERIC = ["log_expected_amount", "created_month", "created_weekday"]


def lead_features(opportunities: frames.TableLike) -> pd.DataFrame:
    """Features known when a lead is created, one row per opportunity.

    Returns
    -------
    pandas.DataFrame
        ``opportunity_id``, ``created_time``, ``status``, ``lead_source``, ``owner``,
        ``log_expected_amount`` (log1p of the amount), ``created_month`` (1-12), ``created_weekday`` (0 Monday),
        ``is_won`` (True / False for closed, missing for open).
    """
    frames.require_columns(opportunities, OPPORTUNITY_COLUMNS, context="lead_features(opportunities)")
    df = frames.to_pandas(opportunities)
    created = pd.to_datetime(df["created_time"])
    out = df[["opportunity_id", "created_time", "status", "lead_source", "owner"]].copy()
    out["lead_source"] = out["lead_source"].astype(str)
    out["owner"] = out["owner"].astype(str)
    out["log_expected_amount"] = np.log1p(df["expected_amount"].astype(float).clip(lower=0))
    out["created_month"] = created.dt.month.astype(float)
    out["created_weekday"] = created.dt.day_of_week.astype(float)
    out["is_won"] = df["status"].map({"won": True, "lost": False}).astype("boolean")
    return out


@dataclass
class LeadScore:
    """A fitted lead-scoring model and its holdout evaluation."""

    model: Pipeline
    split_time: pd.Timestamp
    n_train: int
    n_test: int
    roc_auc: float
    roc: pd.DataFrame


def fit_lead_score(features: pd.DataFrame, *, test_share: float = 0.25, random_state: int | None = 0) -> LeadScore:
    """Fit a logistic-regression lead score on closed opportunities with a time-based split.

    The closed opportunities created last (``test_share`` of them) form the holdout; the model is fitted on the
    earlier ones and its ROC-AUC measured on the holdout.

    Parameters
    ----------
    features : pandas.DataFrame
        Output of ``lead_features``.

    Returns
    -------
    LeadScore
        ``model`` (scikit-learn Pipeline), ``split_time`` (first holdout creation time),
        ``n_train``, ``n_test``, ``roc_auc`` (holdout; missing when the holdout has one class),
        ``roc`` (``false_positive_rate``, ``true_positive_rate``, ``threshold``).
    """
    frames.require_columns(features, ["created_time", "is_won", *_CATEGORICAL, *_NUMERIC], context="fit_lead_score(features)")
    closed = features.loc[features["is_won"].notna()].sort_values("created_time", kind="stable")
    n_test = int(round(len(closed) * test_share))
    if n_test < 1 or len(closed) - n_test < 2:
        raise ValueError(f"fit_lead_score: too few closed opportunities ({len(closed)}) for a holdout of {test_share:.0%}")
    train, test = closed.iloc[:-n_test], closed.iloc[-n_test:]
    y_train = train["is_won"].astype(bool)
    if y_train.nunique() < 2:
        raise ValueError("fit_lead_score: the training period has only one outcome")
    encoder = ColumnTransformer([("categories", OneHotEncoder(handle_unknown="ignore"), _CATEGORICAL), ("numbers", StandardScaler(), _NUMERIC)])
    model = Pipeline([("features", encoder), ("classifier", LogisticRegression(max_iter=1000, C=1.0, random_state=random_state))])
    model.fit(train[_CATEGORICAL + _NUMERIC], y_train)
    y_test = test["is_won"].astype(bool).to_numpy()
    scores = model.predict_proba(test[_CATEGORICAL + _NUMERIC])[:, 1]
    if len(np.unique(y_test)) < 2:
        auc, roc = np.nan, pd.DataFrame(columns=["false_positive_rate", "true_positive_rate", "threshold"])
    else:
        auc = float(roc_auc_score(y_test, scores))
        fpr, tpr, thresholds = roc_curve(y_test, scores)
        roc = pd.DataFrame({"false_positive_rate": fpr, "true_positive_rate": tpr, "threshold": thresholds})
    return LeadScore(model, pd.Timestamp(test["created_time"].iloc[0]), len(train), len(test), auc, roc)


def score_open_leads(score: LeadScore, features: pd.DataFrame) -> pd.DataFrame:
    """Rank open opportunities by their predicted probability of being won.

    Returns
    -------
    pandas.DataFrame
        ``opportunity_id``, ``lead_source``, ``owner``, ``win_probability`` (0-1), ``rank`` (1 = best).
    """
    frames.require_columns(features, ["opportunity_id", "status", *_CATEGORICAL, *_NUMERIC], context="score_open_leads(features)")
    open_leads = features.loc[features["status"] == "open"].copy()
    open_leads["win_probability"] = score.model.predict_proba(open_leads[_CATEGORICAL + _NUMERIC])[:, 1] if len(open_leads) else []
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
    ax.set_ylabel("opportunities reaching the stage")
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
    ax.barh(part[by].astype(str), part["win_rate_pct"], xerr=errors, capsize=3, color="#468faf")
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
