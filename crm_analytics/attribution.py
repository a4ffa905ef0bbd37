"""Cross-channel journeys and multi-touch attribution: heuristics beside the Markov-chain removal effect.

A **journey** is a run of one customer's marketing touches with no gap longer
than ``journey_gap_days`` between consecutive touches. It **converts** when the
customer places an order within ``conversion_window_days`` after its last touch
(the first such order is the conversion; orders placed during the journey are
not counted as its conversion). Orders are rows with a positive amount.
A short window keeps the customers' ordinary repeat orders from passing for
conversions: they are the noise every attribution model has to see through.

Touch-level work (journeys, windows, positions) is written with Ibis and runs
in the warehouse engine; the models then work on the per-touch result in pandas
(the Markov model on the counts of distinct paths, so it scales with the number
of distinct paths, not of customers).
"""

from __future__ import annotations

from collections.abc import Sequence

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crm_analytics import frames, money, plots

MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based", "markov")
_START, _CONVERSION, _NULL = "(start)", "(conversion)", "(null)"


def build_touch_journeys(
    touchpoints: frames.TableLike,
    orders: frames.TableLike,
    *,
    journey_gap_days: float = 14,
    conversion_window_days: float = 3,
    start_time=None,
    end_time=None,
    customer_col: str = "customer_id",
    channel_col: str = "channel",
    touch_time_col: str = "touch_time",
    order_time_col: str = "order_time",
    amount_col: str = "order_amount",
) -> pd.DataFrame:
    """Split touches into journeys, find each journey's conversion and number the touches.

    Parameters
    ----------
    touchpoints : pandas.DataFrame or ibis Table
        ``customer_col``, ``channel_col``, ``touch_time_col`` (timestamp).
    orders : pandas.DataFrame or ibis Table
        ``customer_col``, ``order_time_col``, ``amount_col`` (dataset currency); rows with a
        non-positive amount (refunds) are ignored.
    journey_gap_days, conversion_window_days : float
        Days of silence that end a journey; days after the last touch in which
        an order still counts as the journey's conversion.
    start_time, end_time : timestamp-like, optional
        Keep touches in ``[start_time, end_time)``.

    Returns
    -------
    pandas.DataFrame
        One row per touch: ``customer_id``, ``journey_id`` (customer and
        journey number), ``channel``, ``touch_time``, ``position`` (0-based),
        ``n_touches`` (touches in the journey), ``is_converted``,
        ``conversion_time`` and ``conversion_amount`` (dataset currency; missing when not converted).
    """
    frames.require_columns(touchpoints, [customer_col, channel_col, touch_time_col], context="build_touch_journeys(touchpoints)")
    frames.require_columns(orders, [customer_col, order_time_col, amount_col], context="build_touch_journeys(orders)")
    touches = frames.as_ibis(touchpoints)
    touches = touches.select(customer=touches[customer_col], channel=touches[channel_col], ts=touches[touch_time_col].cast("timestamp"))
    if start_time is not None:
        touches = touches.filter(touches.ts >= frames.as_timestamp(start_time))
    if end_time is not None:
        touches = touches.filter(touches.ts < frames.as_timestamp(end_time))
    by_time = ibis.window(group_by="customer", order_by=["ts", "channel"])
    previous = touches.ts.lag().over(by_time)
    gap = ibis.interval(seconds=int(journey_gap_days * 86_400))
    touches = touches.mutate(is_new=(previous.isnull() | (touches.ts > previous + gap)).cast("int64"))
    touches = touches.mutate(journey=touches.is_new.cumsum().over(by_time))
    journeys = touches.group_by(["customer", "journey"]).aggregate(first=touches.ts.min(), last=touches.ts.max())

    table = frames.as_ibis(orders)
    buys = table.select(customer=table[customer_col], order_ts=table[order_time_col].cast("timestamp"), amount=table[amount_col])
    buys = buys.filter(buys.amount > 0)
    window = ibis.interval(seconds=int(conversion_window_days * 86_400))
    matched = journeys.join(buys, "customer").filter(
        lambda t: (t.order_ts >= t["last"]) & (t.order_ts <= t["last"] + window)
    )
    conversions = matched.group_by(["customer", "journey"]).aggregate(
        conversion_time=matched.order_ts.min(), conversion_amount=matched.amount.argmin(matched.order_ts)
    )
    joined = touches.left_join(conversions, ["customer", "journey"]).select(
        "customer", "journey", "channel", "ts", "conversion_time", "conversion_amount"
    )
    kept = joined
    ordered = ibis.window(group_by=["customer", "journey"], order_by=["ts", "channel"])
    whole = ibis.window(group_by=["customer", "journey"])
    kept = kept.mutate(position=ibis.row_number().over(ordered), n_touches=kept.ts.count().over(whole))
    out = kept.order_by(["customer", "journey", "position"]).to_pandas()
    out = out.rename(columns={"customer": "customer_id", "ts": "touch_time"})
    out["journey_id"] = out["customer_id"].astype(str) + "#" + out["journey"].astype("int64").astype(str)
    out["is_converted"] = out["conversion_time"].notna()
    out["position"] = out["position"].astype("int64")
    out["n_touches"] = out["n_touches"].astype("int64")
    columns = ["customer_id", "journey_id", "channel", "touch_time", "position", "n_touches", "is_converted", "conversion_time", "conversion_amount"]
    return out[columns]


def journey_paths(touches: pd.DataFrame) -> pd.DataFrame:
    """Collapse journey touches into one row per journey.

    Parameters
    ----------
    touches : pandas.DataFrame
        Output of ``build_touch_journeys``.

    Returns
    -------
    pandas.DataFrame
        ``journey_id``, ``customer_id``, ``path`` (channels joined by `` > ``),
        ``n_touches``, ``n_channels`` (distinct), ``is_converted``, ``conversion_amount``.
    """
    frames.require_columns(touches, ["journey_id", "customer_id", "channel", "position", "is_converted", "conversion_amount"], context="journey_paths(touches)")
    ordered = touches.sort_values(["journey_id", "position"])
    grouped = ordered.groupby("journey_id", sort=False)
    out = grouped.agg(
        customer_id=("customer_id", "first"),
        n_touches=("channel", "size"),
        n_channels=("channel", "nunique"),
        is_converted=("is_converted", "first"),
        conversion_amount=("conversion_amount", "first"),
    )
    out.insert(1, "path", _joined_runs(ordered["channel"], out["n_touches"].to_numpy(), " > "))
    return out.reset_index()


def _joined_runs(values: pd.Series, lengths: np.ndarray, separator: str) -> np.ndarray:
    """Join consecutive runs of ``values`` (run ``i`` has ``lengths[i]`` rows) into one string per run, in Arrow."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int64())
    runs = pa.LargeListArray.from_arrays(offsets, pa.array(values.astype("string").to_numpy(dtype=object), pa.large_string()))
    return pc.binary_join(runs, pa.scalar(separator, pa.large_string())).to_numpy(zero_copy_only=False)


def top_paths(paths: pd.DataFrame, *, n: int = 10) -> pd.DataFrame:
    """The ``n`` most frequent paths among converting and among non-converting journeys.

    Returns
    -------
    pandas.DataFrame
        ``outcome`` ("converted" / "not converted"), ``path``, ``n_journeys``, ``share_pct``
        (percent of the journeys with that outcome).
    """
    frames.require_columns(paths, ["path", "is_converted"], context="top_paths(paths)")
    parts = []
    for converted, label in ((True, "converted"), (False, "not converted")):
        subset = paths.loc[paths["is_converted"] == converted, "path"]
        counts = subset.value_counts().head(n).rename_axis("path").reset_index(name="n_journeys")
        counts["share_pct"] = 100 * counts["n_journeys"] / max(len(subset), 1)
        counts.insert(0, "outcome", label)
        parts.append(counts)
    return pd.concat(parts, ignore_index=True)


def channel_mix(touches: pd.DataFrame, *, customer_col: str = "customer_id", channel_col: str = "channel") -> pd.DataFrame:
    """Per customer, touches per channel (one column per channel), ``n_touches`` and ``n_channels``.

    Accepts ``touchpoints`` or the output of ``build_touch_journeys``.
    """
    frames.require_columns(touches, [customer_col, channel_col], context="channel_mix(touches)")
    df = frames.to_pandas(touches)
    wide = df.groupby([customer_col, channel_col], observed=True).size().unstack(fill_value=0)
    wide.columns = [str(c) for c in wide.columns]
    wide["n_touches"] = wide.sum(axis=1)
    wide["n_channels"] = (wide.drop(columns="n_touches") > 0).sum(axis=1)
    wide.columns.name = None
    return wide.reset_index()


# --- heuristic models -------------------------------------------------------------------------


def _heuristic_weights(touches: pd.DataFrame, half_life_days: float) -> pd.DataFrame:
    """Per converting touch, the credit each heuristic gives it (each sums to 1 per journey)."""
    t = touches.loc[touches["is_converted"]].copy()
    n = t["n_touches"].to_numpy()
    first = (t["position"] == 0).to_numpy()
    last = (t["position"] == t["n_touches"] - 1).to_numpy()
    t["first_touch"] = first.astype(float)
    t["last_touch"] = last.astype(float)
    t["linear"] = 1.0 / n
    ends = np.where(first | last, 0.4, 0.2 / np.maximum(n - 2, 1))
    t["position_based"] = np.where(n == 1, 1.0, np.where(n == 2, 0.5, ends))
    age_days = (t["conversion_time"] - t["touch_time"]).dt.total_seconds().to_numpy() / 86_400
    decay = np.power(0.5, age_days / half_life_days)
    t["time_decay"] = decay / t.assign(_d=decay).groupby("journey_id")["_d"].transform("sum").to_numpy()
    return t


def heuristic_attribution(touches: pd.DataFrame, *, half_life_days: float = 7.0) -> pd.DataFrame:
    """Credit conversions and revenue to channels by first touch, last touch, linear, time decay and position (40/20/40).

    Parameters
    ----------
    touches : pandas.DataFrame
        Output of ``build_touch_journeys``.
    half_life_days : float
        Time decay: a touch ``half_life_days`` before the conversion gets half the weight of one at it.

    Returns
    -------
    pandas.DataFrame
        Long format, one row per model and channel: ``model``, ``channel``,
        ``conversions`` (credited, may be fractional), ``revenue_amount``
        (credited, dataset currency), ``share_pct`` (percent of all conversions).
    """
    frames.require_columns(
        touches, ["journey_id", "channel", "touch_time", "position", "n_touches", "is_converted", "conversion_time", "conversion_amount"],
        context="heuristic_attribution(touches)",
    )
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be positive, got {half_life_days}")
    weights = _heuristic_weights(touches, half_life_days)
    heuristics = [m for m in MODELS if m != "markov"]
    long = weights.melt(id_vars=["channel", "conversion_amount"], value_vars=heuristics, var_name="model", value_name="conversions")
    long["revenue_amount"] = long["conversions"] * long["conversion_amount"].astype(float)
    out = long.groupby(["model", "channel"], as_index=False)[["conversions", "revenue_amount"]].sum()
    return _with_share(out)


def _with_share(out: pd.DataFrame) -> pd.DataFrame:
    totals = out.groupby("model")["conversions"].transform("sum")
    out["share_pct"] = 100 * out["conversions"] / totals.where(totals > 0)
    return out


# --- Markov chain -----------------------------------------------------------------------------


def path_counts(touches: pd.DataFrame) -> pd.DataFrame:
    """Distinct channel paths with their numbers of converting and non-converting journeys and revenue.

    Returns
    -------
    pandas.DataFrame
        ``path`` (tuple of channels), ``n_conversions``, ``n_null`` (journeys that did not
        convert), ``revenue_amount`` (dataset currency, of the conversions).
    """
    paths = journey_paths(touches)
    paths["revenue"] = paths["conversion_amount"].astype(float).where(paths["is_converted"], 0.0)
    grouped = paths.groupby("path").agg(
        n_conversions=("is_converted", "sum"), n_journeys=("is_converted", "size"), revenue_amount=("revenue", "sum")
    )
    grouped.index = pd.Index([tuple(path.split(" > ")) for path in grouped.index], name="path", tupleize_cols=False)
    grouped = grouped.sort_index()
    grouped["n_null"] = grouped["n_journeys"] - grouped["n_conversions"]
    return grouped.reset_index()[["path", "n_conversions", "n_null", "revenue_amount"]]


def _transition_design(paths: Sequence[tuple[str, ...]], channels: list[str]) -> tuple[np.ndarray, ...]:
    """The moves every distinct path makes, so that move counts are a weighted sum over paths.

    States: 0 = start, 1..C = channels. Returns the arrays (path index, from state, to state)
    of every start-or-channel move, and the last channel state of each path (where its
    conversion or null ending leaves from).
    """
    code = {c: i + 1 for i, c in enumerate(channels)}
    rows, sources, targets, last = [], [], [], np.zeros(len(paths), dtype=np.int64)
    for p, path in enumerate(paths):
        states = [0] + [code[c] for c in path]
        rows += [p] * (len(states) - 1)
        sources += states[:-1]
        targets += states[1:]
        last[p] = states[-1]
    return np.array(rows, dtype=np.int64), np.array(sources, dtype=np.int64), np.array(targets, dtype=np.int64), last


def _conversion_probability(
    moves: np.ndarray, to_conversion: np.ndarray, to_null: np.ndarray, *, removed: int | None = None, baseline_rate: float = 0.0
) -> float:
    """Probability of absorbing in conversion from the start state.

    With ``removed``, every move into that channel's state ends the journey instead, converting
    with probability ``baseline_rate`` (0: the classic move to null).
    """
    n = moves.shape[0]
    out_total = moves.sum(axis=1) + to_conversion + to_null
    safe = np.where(out_total > 0, out_total, 1.0)
    q = moves / safe[:, None]
    r = to_conversion / safe
    if removed is not None:
        r = r + baseline_rate * q[:, removed]
        q = q.copy()
        q[:, removed] = 0.0
        q[removed, :] = 0.0
        r[removed] = 0.0
    absorbed = np.linalg.solve(np.eye(n) - q, r)
    return float(absorbed[0])


def _removal_effects(counts: np.ndarray, design, n_states: int, baseline_rate: float) -> np.ndarray:
    """Removal effect of each channel (1 - P(conversion without it) / P(conversion)), from path weights."""
    rows, sources, targets, last = design
    conversions, nulls = counts
    moves = np.zeros((n_states, n_states))
    np.add.at(moves, (sources, targets), (conversions + nulls)[rows])
    to_conversion = np.bincount(last, weights=conversions, minlength=n_states).astype(float)
    to_null = np.bincount(last, weights=nulls, minlength=n_states).astype(float)
    base = _conversion_probability(moves, to_conversion, to_null)
    if base <= 0:
        return np.zeros(n_states - 1)
    without = [_conversion_probability(moves, to_conversion, to_null, removed=s, baseline_rate=baseline_rate) for s in range(1, n_states)]
    return np.clip(1 - np.array(without) / base, 0.0, None)


def baseline_conversion_rate(touches: pd.DataFrame, orders: frames.TableLike, *, conversion_window_days: float = 3,
                             customer_col: str = "customer_id", order_time_col: str = "order_time", amount_col: str = "order_amount") -> float:
    """Share of journeys whose customer ordered in the ``conversion_window_days`` just before the journey's first touch.

    These placebo windows hold no touch of the journey (and, when ``journey_gap_days`` is at
    least twice the window, no conversion window of the customer's previous journey), so the
    share estimates how often the same customers order without marketing in a window of the
    same length: the organic conversion rate that ``markov_attribution(baseline_rate=...)`` uses.

    Parameters
    ----------
    touches : pandas.DataFrame
        Output of ``build_touch_journeys``.
    orders : pandas.DataFrame or ibis Table
        ``customer_col``, ``order_time_col``, ``amount_col`` (rows with a positive amount count).

    Returns
    -------
    float
        A fraction between 0 and 1.
    """
    frames.require_columns(touches, ["customer_id", "journey_id", "touch_time"], context="baseline_conversion_rate(touches)")
    frames.require_columns(orders, [customer_col, order_time_col, amount_col], context="baseline_conversion_rate(orders)")
    starts = touches.groupby("journey_id", as_index=False).agg(customer=("customer_id", "first"), first=("touch_time", "min"))
    if starts.empty:
        return 0.0
    table = frames.as_ibis(orders)
    buys = table.filter(table[amount_col] > 0).select(customer=table[customer_col], order_ts=table[order_time_col].cast("timestamp"))
    placebo = ibis.memtable(starts[["journey_id", "customer", "first"]])
    window = ibis.interval(seconds=int(conversion_window_days * 86_400))
    hits = placebo.join(buys, "customer").filter(lambda t: (t.order_ts >= t["first"] - window) & (t.order_ts < t["first"]))
    n_hits = int(hits.select("journey_id").distinct().count().to_pandas())
    return n_hits / len(starts)


def markov_attribution(
    paths: pd.DataFrame,
    *,
    baseline_rate: float = 0.0,
    n_boot: int = 200,
    alpha: float = 0.05,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """First-order Markov-chain attribution by removal effect, with bootstrap intervals.

    The chain has a start state, one state per channel, and two absorbing
    states (conversion, null). Transition probabilities are the observed
    shares of moves. A channel's removal effect is the relative drop in the
    probability of reaching conversion from the start when every move into the
    channel ends the journey instead: in the classic model (``baseline_rate=0``)
    in the null state; with ``baseline_rate`` (the organic conversion rate, see
    ``baseline_conversion_rate``) converting with that probability, so that
    conversions the customer would have made anyway are not credited to a
    channel merely because it is frequent. Conversions (and revenue) are split between
    channels in proportion to their removal effects. Bootstrap intervals
    resample journeys with replacement (a multinomial draw over the distinct
    paths) and recompute everything.

    Parameters
    ----------
    paths : pandas.DataFrame
        Output of ``path_counts`` (``path`` tuples, ``n_conversions``, ``n_null``, ``revenue_amount``).
    baseline_rate : float
        Conversion probability of a journey whose channel is removed (0-1).
    n_boot, alpha, random_state : int, float, int
        Bootstrap replicates, two-sided level of the interval, seed.

    Returns
    -------
    pandas.DataFrame
        One row per channel: ``channel``, ``removal_effect`` (0-1),
        ``conversions`` (credited), ``revenue_amount`` (credited, dataset currency),
        ``share_pct`` with ``share_low_pct`` / ``share_high_pct`` and
        ``conversions_low`` / ``conversions_high`` (bootstrap percentile interval), ``rank``.
    """
    frames.require_columns(paths, ["path", "n_conversions", "n_null", "revenue_amount"], context="markov_attribution(paths)")
    channels = sorted({c for path in paths["path"] for c in path})
    if not channels:
        raise ValueError("markov_attribution: no paths")
    design = _transition_design(list(paths["path"]), channels)
    counts = np.vstack([paths["n_conversions"].to_numpy(float), paths["n_null"].to_numpy(float)])
    effects = _removal_effects(counts, design, len(channels) + 1, baseline_rate)
    total_conversions = counts[0].sum()
    total_revenue = float(paths["revenue_amount"].sum())
    share = effects / effects.sum() if effects.sum() > 0 else np.zeros_like(effects)

    rng = np.random.default_rng(random_state)
    flat = counts.ravel()
    n_journeys = int(flat.sum())
    boot_share = np.empty((n_boot, len(channels)))
    for b in range(n_boot):
        drawn = rng.multinomial(n_journeys, flat / flat.sum()).reshape(counts.shape).astype(float)
        e = _removal_effects(drawn, design, len(channels) + 1, baseline_rate)
        boot_share[b] = e / e.sum() if e.sum() > 0 else 0.0
    low, high = np.quantile(boot_share, [alpha / 2, 1 - alpha / 2], axis=0) if n_boot else (np.full(len(channels), np.nan),) * 2
    out = pd.DataFrame(
        {
            "channel": channels,
            "removal_effect": effects,
            "conversions": share * total_conversions,
            "revenue_amount": share * total_revenue,
            "share_pct": 100 * share,
            "share_low_pct": 100 * low,
            "share_high_pct": 100 * high,
            "conversions_low": low * total_conversions,
            "conversions_high": high * total_conversions,
        }
    )
    out["rank"] = out["removal_effect"].rank(ascending=False, method="min").astype("int64")
    return out.sort_values("rank").reset_index(drop=True)


def compare_models(
    touches: pd.DataFrame,
    *,
    half_life_days: float = 7.0,
    markov: pd.DataFrame | None = None,
    baseline_rate: float = 0.0,
    n_boot: int = 200,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """All attribution models side by side: the output of ``heuristic_attribution`` plus ``markov``.

    Pass a ``markov_attribution`` result as ``markov`` to reuse it; otherwise it is computed
    with ``baseline_rate``, ``n_boot`` and ``random_state``.

    Returns
    -------
    pandas.DataFrame
        ``model``, ``channel``, ``conversions``, ``revenue_amount``, ``share_pct``,
        and for the Markov rows ``share_low_pct`` / ``share_high_pct`` (bootstrap interval).
    """
    heuristic = heuristic_attribution(touches, half_life_days=half_life_days)
    if markov is None:
        markov = markov_attribution(path_counts(touches), baseline_rate=baseline_rate, n_boot=n_boot, random_state=random_state)
    markov = markov.drop(columns=["removal_effect", "rank", "conversions_low", "conversions_high"]).assign(model="markov")
    return pd.concat([heuristic, markov], ignore_index=True)[
        ["model", "channel", "conversions", "revenue_amount", "share_pct", "share_low_pct", "share_high_pct"]
    ]


def channel_economics(attribution: pd.DataFrame, campaigns: frames.TableLike, *, channel_col: str = "channel", spend_col: str = "spend_amount") -> pd.DataFrame:
    """CAC and ROI per channel and model: spend against credited conversions and revenue.

    Parameters
    ----------
    attribution : pandas.DataFrame
        Output of ``compare_models`` (``model``, ``channel``, ``conversions``, ``revenue_amount``).
    campaigns : pandas.DataFrame or ibis Table
        ``channel_col`` and ``spend_col`` (dataset currency); spend is summed per channel.
        Filter it to the period of the touches first.

    Returns
    -------
    pandas.DataFrame
        ``model``, ``channel``, ``spend_amount`` (dataset currency), ``conversions``, ``revenue_amount``,
        ``cac_amount`` (spend per credited conversion, dataset currency), ``roi_pct``
        ((revenue - spend) / spend, percent); missing where undefined.
    """
    frames.require_columns(attribution, ["model", "channel", "conversions", "revenue_amount"], context="channel_economics(attribution)")
    frames.require_columns(campaigns, [channel_col, spend_col], context="channel_economics(campaigns)")
    table = frames.as_ibis(campaigns)
    spend = table.group_by(channel=table[channel_col]).aggregate(spend_amount=table[spend_col].sum()).to_pandas()
    out = attribution[["model", "channel", "conversions", "revenue_amount"]].merge(spend, on="channel", how="left")
    out["spend_amount"] = out["spend_amount"].astype(float).fillna(0.0)
    out["cac_amount"] = out["spend_amount"] / out["conversions"].where(out["conversions"] > 0)
    out["roi_pct"] = 100 * (out["revenue_amount"] - out["spend_amount"]) / out["spend_amount"].where(out["spend_amount"] > 0)
    return out[["model", "channel", "spend_amount", "conversions", "revenue_amount", "cac_amount", "roi_pct"]]


def plot_attribution(comparison: pd.DataFrame, *, ax=None):
    """Grouped bars of each channel's share of conversions under every model; Markov bars carry their bootstrap interval."""
    frames.require_columns(comparison, ["model", "channel", "share_pct"], context="plot_attribution(comparison)")
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(10, 5))
    models = [m for m in MODELS if m in set(comparison["model"])]
    channels = sorted(comparison["channel"].unique())
    width = 0.8 / len(models)
    colours = plots.category_colour_list(models)
    for i, model in enumerate(models):
        part = comparison.loc[comparison["model"] == model].set_index("channel").reindex(channels)
        x = np.arange(len(channels)) + (i - (len(models) - 1) / 2) * width
        errors = None
        if model == "markov" and {"share_low_pct", "share_high_pct"} <= set(part.columns):
            errors = np.vstack([part["share_pct"] - part["share_low_pct"], part["share_high_pct"] - part["share_pct"]])
        ax.bar(x, part["share_pct"].fillna(0), width, label=model, color=colours[i], yerr=errors, capsize=3)
    ax.set_xticks(np.arange(len(channels)), channels)
    ax.set_xlabel("channel")
    ax.set_ylabel("share of conversions (%)")
    ax.legend(ncols=3, fontsize="small")
    ax.set_title("Attribution by model (Markov with 95% bootstrap interval)")
    return ax


def plot_channel_economics(economics: pd.DataFrame, *, model: str = "markov", ax=None, currency: str | None = None):
    """Bars of CAC (spend per credited conversion, in ``currency``: the dataset's, by default the default
    dataset's) per channel under one model, labelled with ROI; returns the Axes."""
    frames.require_columns(economics, ["model", "channel", "cac_amount", "roi_pct"], context="plot_channel_economics(economics)")
    plots.set_style()
    ax = plots.new_axes(ax)
    part = economics.loc[economics["model"] == model].sort_values("cac_amount")
    ax.bar(part["channel"], part["cac_amount"].fillna(0), color="#2a6f97")
    for x, (cac, roi) in enumerate(zip(part["cac_amount"], part["roi_pct"], strict=True)):
        if pd.notna(cac):
            ax.text(x, cac, f"ROI {roi:,.0f}%" if pd.notna(roi) else "", ha="center", va="bottom", fontsize="small")
    ax.set_ylabel(money.axis_label("CAC per conversion", money.currency_and_locale(currency)[0]))
    ax.set_title(f"Cost per acquired conversion and ROI by channel ({model})")
    return ax
