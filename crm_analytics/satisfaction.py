"""Satisfaction: NPS with confidence intervals, CSAT by group and over time, scores that predict churn,
and keyword / theme counts of free-text comments in Chinese, English and Portuguese.

Definitions
-----------
NPS
    Percentage of promoters (score 9-10) minus percentage of detractors (0-6) among
    responses with a score; from -100 to 100. Its standard error treats each response
    as +1 / 0 / -1: ``se = 100 * sqrt((p_P + p_D - (p_P - p_D)^2) / n)`` and the interval
    is the normal (Wald) one, clipped to [-100, 100].
CSAT
    Percentage of responses with a satisfaction score of 4 or 5 (of 5), with a Wilson interval.
Score band
    ``detractor`` (0-6), ``passive`` (7-8), ``promoter`` (9-10) of the NPS score.
Churn (for the drivers)
    A customer who ordered before ``as_of`` and places no order in the ``churn_days`` days after it.

Comments are personal data: functions here return only aggregated keyword and theme
counts, and drop keywords that fewer than ``min_comments`` comments contain.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence

import ibis
import numpy as np
import pandas as pd
from scipy import stats

from crm_analytics import frames, intervals, plots

BANDS = ("detractor", "passive", "promoter")
_CJK = re.compile(r"[\u3400-\u9fff]")
_CJK_RUN = re.compile(r"([\u3400-\u9fff]+)")
_WORD = re.compile(r"^[\w\u3400-\u9fff]+$")
_LATIN_WORD = re.compile(r"\w+")  # letters with accents included (jieba would cut "preço" into "pre", "ç", "o")

STOPWORDS = frozenset(
    """
    a an the and or but if of to in on at for with from by is are was were be been it its this that these those
    i me my we our you your he she they them his her their very so too just really not no yes as than then there
    here will would can could should have has had do does did get got after before again also all any some
    的 了 是 我 你 他 她 它 们 我们 也 很 都 就 还 又 和 与 及 在 有 没有 没 不 会 要 这 那 个 吧 啊 呢 吗 哦 嗯
    非常 比较 一个 一下 有点 太 再 就是 但是 而且 因为 所以 可以
    de da do das dos em no na nos nas um uma uns umas com para por que não nao muito mas se ao os foi é meu minha
    """.split()
)

# Themes: a theme is counted for a comment when any of its terms is one of the comment's tokens.
THEMES: dict[str, tuple[str, ...]] = {
    "delivery": ("物流", "快递", "配送", "发货", "送货", "delivery", "shipping", "shipped", "courier", "late", "faster", "slow",
                 "entrega", "entregue", "prazo", "atraso", "atrasou", "atrasado", "frete", "chegou"),
    "packaging": ("包装", "破损", "packaging", "package", "box", "damaged", "embalagem", "caixa", "danificado", "amassado"),
    "quality": ("质量", "品质", "做工", "quality", "broke", "broken", "defect", "defective", "qualidade", "defeito", "quebrado", "quebrou"),
    "price": ("价格", "贵", "便宜", "优惠", "price", "expensive", "cheap", "discount", "preço", "caro", "barato", "desconto"),
    "service": ("客服", "服务", "态度", "service", "support", "staff", "rude", "atendimento", "suporte", "vendedor"),
    "refund": ("退款", "退货", "refund", "return", "returns", "reembolso", "devolução", "estorno", "troca"),
    "loyalty": ("推荐", "再买", "回购", "满意", "again", "recommend", "love", "great", "recomendo", "ótimo", "excelente", "adorei"),
}


# --------------------------------------------------------------------------------------------
# NPS and CSAT
# --------------------------------------------------------------------------------------------


def nps_interval(n_promoters, n_detractors, n_responses, *, confidence: float = 0.95) -> pd.DataFrame:
    """NPS and its normal confidence interval from counts (scalars or arrays).

    Returns a DataFrame with ``nps``, ``nps_lower``, ``nps_upper`` (points, -100 to 100)
    and ``nps_se``; NaN where there are no responses.
    """
    n = np.asarray(n_responses, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_promoter = np.asarray(n_promoters, dtype=float) / n
        p_detractor = np.asarray(n_detractors, dtype=float) / n
        score = p_promoter - p_detractor
        se = np.sqrt(np.maximum(p_promoter + p_detractor - score**2, 0.0) / n)
    z = stats.norm.ppf(0.5 + confidence / 2)
    return pd.DataFrame(
        {
            "nps": np.atleast_1d(score * 100),
            "nps_lower": np.atleast_1d(np.clip((score - z * se) * 100, -100, 100)),
            "nps_upper": np.atleast_1d(np.clip((score + z * se) * 100, -100, 100)),
            "nps_se": np.atleast_1d(se * 100),
        }
    )


def wilson_interval(successes, n, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion, in percent (lower, upper); NaN where ``n`` is 0."""
    lower, upper = intervals.wilson_interval(successes, n, confidence=confidence)
    return lower * 100, upper * 100


def _grouped(surveys: frames.TableLike, by: Sequence[str], *, time_col: str, grain: str | None, required: Sequence[str], context: str):
    t = frames.as_ibis(surveys)
    frames.require_columns(t, [*required, *by, *([time_col] if grain else [])], context=context)
    keys = list(by)
    if grain:
        units = {"day": "D", "week": "W", "month": "M", "quarter": "Q"}
        if grain not in units:
            raise ValueError(f"{context}: grain must be one of {list(units)}, got {grain!r}")
        t = t.mutate(period_start=t[time_col].truncate(units[grain]))
        keys = ["period_start", *keys]
    return t, keys


def _finish(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.sort_values(keys).reset_index(drop=True) if keys else df.reset_index(drop=True)
    if "period_start" in df:
        df["period_start"] = pd.to_datetime(df["period_start"])
    return df


def nps_summary(
    surveys: frames.TableLike,
    *,
    by: Sequence[str] = (),
    grain: str | None = None,
    score_col: str = "nps_score",
    time_col: str = "survey_time",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """NPS per group (and per period) with a confidence interval, aggregated in the engine.

    Parameters
    ----------
    surveys : Ibis table or pandas DataFrame
        ``score_col`` (0-10; missing scores are left out), the ``by`` columns and, with ``grain``, ``time_col``.
    by : sequence of str
        Grouping columns, e.g. ``["province"]`` after ``attach_customers``.
    grain : {"day", "week", "month", "quarter"}, optional
        Also group by the period of ``time_col`` (column ``period_start``).

    Returns
    -------
    pandas.DataFrame
        ``[period_start,] *by``, ``n_responses``, ``promoters_pct``, ``passives_pct``,
        ``detractors_pct``, ``nps``, ``nps_lower``, ``nps_upper``, ``nps_se`` (points).
    """
    t, keys = _grouped(surveys, by, time_col=time_col, grain=grain, required=[score_col], context="nps_summary(surveys)")
    t = t.filter(t[score_col].notnull())
    metrics = dict(
        n_responses=t.count(),
        n_promoters=(t[score_col] >= 9).cast("int64").sum(),
        n_detractors=(t[score_col] <= 6).cast("int64").sum(),
    )
    counts = (t.group_by(keys).aggregate(**metrics) if keys else t.aggregate(**metrics)).to_pandas()
    counts = counts[counts.n_responses > 0].reset_index(drop=True)
    n = counts.n_responses.astype(float)
    counts["promoters_pct"] = counts.n_promoters / n * 100
    counts["detractors_pct"] = counts.n_detractors / n * 100
    counts["passives_pct"] = 100 - counts.promoters_pct - counts.detractors_pct
    interval = nps_interval(counts.n_promoters, counts.n_detractors, n, confidence=confidence)
    result = pd.concat([counts.drop(columns=["n_promoters", "n_detractors"]), interval], axis=1)
    columns = [*keys, "n_responses", "promoters_pct", "passives_pct", "detractors_pct", "nps", "nps_lower", "nps_upper", "nps_se"]
    return _finish(result[columns], keys)


def csat_summary(
    surveys: frames.TableLike,
    *,
    by: Sequence[str] = (),
    grain: str | None = None,
    score_col: str = "csat_score",
    time_col: str = "survey_time",
    satisfied_min: int = 4,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """CSAT per group (and per period): share of satisfied responses with a Wilson interval, and the mean score.

    Returns
    -------
    pandas.DataFrame
        ``[period_start,] *by``, ``n_responses``, ``csat_pct`` (share with score >= ``satisfied_min``),
        ``csat_lower``, ``csat_upper`` (percent), ``mean_score`` (1-5).
    """
    t, keys = _grouped(surveys, by, time_col=time_col, grain=grain, required=[score_col], context="csat_summary(surveys)")
    t = t.filter(t[score_col].notnull())
    metrics = dict(
        n_responses=t.count(),
        n_satisfied=(t[score_col] >= satisfied_min).cast("int64").sum(),
        mean_score=t[score_col].mean(),
    )
    counts = (t.group_by(keys).aggregate(**metrics) if keys else t.aggregate(**metrics)).to_pandas()
    counts = counts[counts.n_responses > 0].reset_index(drop=True)
    counts["csat_pct"] = counts.n_satisfied / counts.n_responses * 100
    counts["csat_lower"], counts["csat_upper"] = wilson_interval(counts.n_satisfied, counts.n_responses, confidence=confidence)
    return _finish(counts[[*keys, "n_responses", "csat_pct", "csat_lower", "csat_upper", "mean_score"]], keys)


def attach_customers(
    surveys: frames.TableLike,
    customers: frames.TableLike,
    *,
    columns: Sequence[str] = ("province", "acquisition_channel"),
    segments: frames.TableLike | None = None,
    customer_col: str = "customer_id",
):
    """Join customer attributes (and optionally a ``segment`` per customer) onto survey responses, in the engine.

    ``customers`` needs ``customer_col`` and ``columns`` (one row per customer is taken); ``segments``
    needs ``customer_col`` and ``segment``. Missing values become ``"unknown"``. Returns an Ibis table.
    """
    s, c = frames.as_ibis(surveys), frames.as_ibis(customers)
    frames.require_columns(s, [customer_col], context="attach_customers(surveys)")
    frames.require_columns(c, [customer_col, *columns], context="attach_customers(customers)")
    attrs = c.group_by(_cid=c[customer_col]).aggregate(**{col: c[col].cast("string").arbitrary() for col in columns})
    joined = s.left_join(attrs, s[customer_col] == attrs._cid).drop("_cid")
    joined = joined.mutate(**{col: joined[col].fill_null("unknown") for col in columns})
    if segments is not None:
        g = frames.as_ibis(segments)
        frames.require_columns(g, [customer_col, "segment"], context="attach_customers(segments)")
        g = g.select(_sid=g[customer_col], segment=g.segment.cast("string"))
        joined = joined.left_join(g, joined[customer_col] == g._sid).drop("_sid")
        joined = joined.mutate(segment=joined.segment.fill_null("unknown"))
    return joined


# --------------------------------------------------------------------------------------------
# Which scores predict churn
# --------------------------------------------------------------------------------------------


def score_band(scores: pd.Series) -> pd.Series:
    """NPS band per score: ``detractor`` (0-6), ``passive`` (7-8), ``promoter`` (9-10); missing stays missing."""
    bands = pd.cut(pd.to_numeric(scores, errors="coerce").astype(float), bins=[-0.5, 6.5, 8.5, 10.5], labels=list(BANDS))
    return bands.astype("string")


def churn_frame(
    surveys: frames.TableLike,
    orders: frames.TableLike,
    *,
    as_of,
    churn_days: int = 180,
    score_cols: Sequence[str] = ("nps_score", "csat_score"),
    customer_col: str = "customer_id",
    survey_time_col: str = "survey_time",
    order_time_col: str = "order_time",
) -> pd.DataFrame:
    """One row per surveyed customer: their latest scores before ``as_of`` and whether they churned after it.

    Parameters
    ----------
    surveys : table with ``customer_col``, ``survey_time_col`` and ``score_cols``
    orders : table with ``customer_col``, ``order_time_col`` (refund rows with ``is_refund`` true are ignored)
    as_of : timestamp-like
        Scores are taken strictly before it; churn is judged on ``[as_of, as_of + churn_days)``.
    churn_days : int
        Days without an order that make a customer churned.

    Returns
    -------
    pandas.DataFrame
        ``customer_id``, one column per score (the latest response before ``as_of``), ``is_churned``
        (bool). Only customers with an order before ``as_of`` are included.
    """
    as_of = pd.Timestamp(as_of)
    horizon = as_of + pd.Timedelta(days=churn_days)
    s, o = frames.as_ibis(surveys), frames.as_ibis(orders)
    frames.require_columns(s, [customer_col, survey_time_col, *score_cols], context="churn_frame(surveys)")
    frames.require_columns(o, [customer_col, order_time_col], context="churn_frame(orders)")
    if "is_refund" in o.columns:
        o = o.filter(~o.is_refund.fill_null(False))
    s = s.filter(s[survey_time_col] < as_of)
    rank = ibis.row_number().over(group_by=s[customer_col], order_by=ibis.desc(s[survey_time_col]))
    latest = s.mutate(_rank=rank).filter(lambda t: t._rank == 0).select(customer_col, *score_cols)
    activity = o.filter(o[order_time_col] < horizon).group_by(_cid=o[customer_col]).aggregate(
        _before=(o[order_time_col] < as_of).cast("int64").sum(),
        _after=(o[order_time_col] >= as_of).cast("int64").sum(),
    )
    joined = latest.join(activity, latest[customer_col] == activity._cid)
    joined = joined.filter(joined._before > 0).mutate(is_churned=joined._after == 0)
    result = joined.select(customer_col, *score_cols, "is_churned").to_pandas()
    return result.sort_values(customer_col).reset_index(drop=True)


def churn_drivers(frame: pd.DataFrame, *, score_cols: Sequence[str] = ("nps_score", "csat_score"), target_col: str = "is_churned") -> pd.DataFrame:
    """How well each score predicts churn, one score at a time.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of ``churn_frame``.

    Returns
    -------
    pandas.DataFrame
        One row per score: ``score``, ``n_customers`` (with that score), ``churn_rate_pct``,
        ``auc`` (ROC AUC of a lower score predicting churn; 0.5 = no signal),
        ``odds_ratio_per_point`` (logistic regression of churn on the score; below 1 = higher
        score, less churn), ``odds_ratio_lower``, ``odds_ratio_upper`` (95%), ``p_value``.
        Sorted by AUC, strongest first.
    """
    import statsmodels.api as sm
    from sklearn.metrics import roc_auc_score

    frames.require_columns(frame, [*score_cols, target_col], context="churn_drivers(frame)")
    rows = []
    for col in score_cols:
        data = frame[[col, target_col]].dropna()
        x = data[col].astype(float).to_numpy()
        y = data[target_col].astype(bool).to_numpy()
        row = {"score": col, "n_customers": len(data), "churn_rate_pct": y.mean() * 100 if len(y) else np.nan}
        if len(np.unique(y)) == 2 and np.ptp(x) > 0:
            row["auc"] = roc_auc_score(y, -x)
            fit = sm.Logit(y.astype(float), sm.add_constant(x)).fit(disp=0)
            low, high = fit.conf_int()[1]
            row.update(odds_ratio_per_point=np.exp(fit.params[1]), odds_ratio_lower=np.exp(low), odds_ratio_upper=np.exp(high), p_value=fit.pvalues[1])
        rows.append(row)
    columns = ["score", "n_customers", "churn_rate_pct", "auc", "odds_ratio_per_point", "odds_ratio_lower", "odds_ratio_upper", "p_value"]
    return pd.DataFrame(rows).reindex(columns=columns).sort_values("auc", ascending=False, na_position="last").reset_index(drop=True)


def churn_by_score(frame: pd.DataFrame, *, score_col: str = "nps_score", target_col: str = "is_churned", bands: bool = True) -> pd.DataFrame:
    """Churn rate per NPS band (``bands=True``) or per score value.

    Returns ``group``, ``n_customers``, ``churn_rate_pct`` with a Wilson interval ``churn_lower``, ``churn_upper``.
    """
    frames.require_columns(frame, [score_col, target_col], context="churn_by_score(frame)")
    data = frame[[score_col, target_col]].dropna()
    group = score_band(data[score_col]) if bands else data[score_col].astype(int).astype("string")
    out = data.assign(group=group).groupby("group", observed=True)[target_col].agg(n_customers="size", n_churned="sum").reset_index()
    out["churn_rate_pct"] = out.n_churned / out.n_customers * 100
    out["churn_lower"], out["churn_upper"] = wilson_interval(out.n_churned, out.n_customers)
    if bands:
        out["group"] = pd.Categorical(out.group, categories=list(BANDS), ordered=True)
        out = out.sort_values("group")
        out["group"] = out.group.astype("string")
    return out.drop(columns="n_churned").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Comments
# --------------------------------------------------------------------------------------------


def language(text: str, *, latin_language: str = "en") -> str:
    """``"zh"`` when the text has a CJK character, else ``latin_language`` (the dataset's language of other text)."""
    return "zh" if _CJK.search(text or "") else latin_language


def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def tokenise(text: str | None, *, stopwords: Iterable[str] = STOPWORDS) -> list[str]:
    """Split a Chinese, English or mixed comment into keywords.

    Chinese is segmented with jieba (precise mode); other text is split into words (accented letters
    kept, as Portuguese needs) and lower-cased.
    Punctuation, digits-only tokens, one-letter Latin tokens and stopwords are dropped.
    Returns the tokens in order (repeats kept).
    """
    if text is None or (isinstance(text, float) and np.isnan(text)) or pd.isna(text):
        return []
    stop = stopwords if isinstance(stopwords, (set, frozenset)) else set(stopwords)
    tokens = []
    for raw in _words(str(text)):
        token = raw.strip().lower()
        if not token or not _WORD.match(token) or token.isdigit() or token in stop:
            continue
        if not _CJK.search(token) and len(token) < 2:
            continue
        tokens.append(token)
    return tokens


def _words(text: str) -> list[str]:
    """Chinese runs segmented by jieba, the rest split into words; in order."""
    words: list[str] = []
    for part in _CJK_RUN.split(text):
        if not part:
            continue
        words += _jieba().lcut(part) if _CJK.match(part) else _LATIN_WORD.findall(part)
    return words


def comment_tokens(
    surveys: pd.DataFrame, *, text_col: str = "comment", score_col: str = "nps_score", stopwords: Iterable[str] = STOPWORDS,
    latin_language: str = "en",
) -> pd.DataFrame:
    """One row per distinct keyword of each comment: ``comment_index``, ``score_band``, ``language``, ``keyword``.

    ``comment_index`` is the row position in ``surveys`` (no text is returned). Rows without a
    comment are skipped. Surveys must be a pandas DataFrame with ``text_col`` and ``score_col``.
    ``latin_language`` labels comments without Chinese characters (the dataset's other language, e.g. ``pt``).
    """
    frames.require_columns(surveys, [text_col, score_col], context="comment_tokens(surveys)")
    data = surveys[[text_col, score_col]].reset_index(drop=True)
    data = data[data[text_col].notna() & (data[text_col].astype("string").str.strip() != "")]
    bands = score_band(data[score_col])
    stop = frozenset(stopwords)
    texts = data[text_col].astype(str)
    vocabulary = {text: (language(text, latin_language=latin_language), list(dict.fromkeys(tokenise(text, stopwords=stop)))) for text in texts.unique()}
    rows = [(index, band, vocabulary[text][0], token) for index, text, band in zip(data.index, texts, bands) for token in vocabulary[text][1]]
    return pd.DataFrame(rows, columns=["comment_index", "score_band", "language", "keyword"]).astype(
        {"score_band": "string", "language": "string", "keyword": "string"}
    )


def keyword_counts(tokens: pd.DataFrame, *, top_n: int = 15, min_comments: int = 5) -> pd.DataFrame:
    """The most frequent keywords per score band, as aggregates only.

    Parameters
    ----------
    tokens : pandas.DataFrame
        Output of ``comment_tokens``.
    top_n : int
        Keywords kept per band.
    min_comments : int
        Keywords in fewer comments than this are dropped (rare words can identify a person).

    Returns
    -------
    pandas.DataFrame
        ``score_band``, ``keyword``, ``n_comments`` (comments of the band containing it),
        ``share_pct`` (of the band's comments), ``rank`` (1 = most frequent).
    """
    frames.require_columns(tokens, ["comment_index", "score_band", "keyword"], context="keyword_counts(tokens)")
    totals = tokens.groupby("score_band", dropna=False).comment_index.nunique()
    counts = tokens.groupby(["score_band", "keyword"], dropna=False).comment_index.nunique().rename("n_comments").reset_index()
    counts = counts[counts.n_comments >= min_comments]
    counts["share_pct"] = counts.n_comments / counts.score_band.map(totals).astype(float) * 100
    counts = counts.sort_values(["score_band", "n_comments", "keyword"], ascending=[True, False, True])
    counts["rank"] = counts.groupby("score_band", dropna=False).cumcount() + 1
    return counts[counts["rank"] <= top_n].reset_index(drop=True)


def theme_counts(tokens: pd.DataFrame, *, themes: Mapping[str, Sequence[str]] = THEMES, min_comments: int = 5) -> pd.DataFrame:
    """Comments per theme and score band (a comment counts for a theme when it contains one of its terms).

    Returns ``score_band``, ``theme``, ``n_comments``, ``share_pct`` (of the band's comments);
    cells with fewer than ``min_comments`` comments are suppressed (dropped).
    """
    frames.require_columns(tokens, ["comment_index", "score_band", "keyword"], context="theme_counts(tokens)")
    term_theme = pd.DataFrame([(term.lower(), theme) for theme, terms in themes.items() for term in terms], columns=["keyword", "theme"])
    matched = tokens.merge(term_theme, on="keyword", how="inner")
    totals = tokens.groupby("score_band", dropna=False).comment_index.nunique()
    counts = matched.groupby(["score_band", "theme"], dropna=False).comment_index.nunique().rename("n_comments").reset_index()
    counts["share_pct"] = counts.n_comments / counts.score_band.map(totals).astype(float) * 100
    counts = counts[counts.n_comments >= min_comments]
    return counts.sort_values(["score_band", "n_comments"], ascending=[True, False]).reset_index(drop=True)


def no_themes_message(tokens: pd.DataFrame, *, min_comments: int = 5) -> str:
    """Why ``theme_counts`` found nothing to show, with the number of comments read (``tokens`` from ``comment_tokens``)."""
    frames.require_columns(tokens, ["comment_index"], context="no_themes_message(tokens)")
    n_comments = int(tokens["comment_index"].nunique())
    if not n_comments:
        return "no comment to read (n comments = 0)"
    return f"no theme is mentioned in {min_comments} comments or more (n comments = {n_comments:,})"


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def plot_nps_trend(summary: pd.DataFrame, *, ax=None):
    """NPS per period with its confidence band (``nps_summary(..., grain=...)`` without ``by``)."""
    plots.set_style()
    frames.require_columns(summary, ["period_start", "nps", "nps_lower", "nps_upper"], context="plot_nps_trend(summary)")
    if summary.empty:
        return plots.empty_state(ax, "no NPS score in the surveys (n responses = 0)", title="Net Promoter Score over time")
    ax = plots.new_axes(ax, figsize=(8, 3.5))
    ax.fill_between(summary.period_start, summary.nps_lower, summary.nps_upper, alpha=0.2, linewidth=0, label="95% interval")
    ax.plot(summary.period_start, summary.nps, marker="o", markersize=3, label="NPS")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("period start")
    ax.set_ylabel("NPS (points, -100 to 100)")
    ax.set_title("Net Promoter Score over time", loc="left")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_score_by_group(summary: pd.DataFrame, *, by: str, value: str = "csat_pct", lower: str = "csat_lower", upper: str = "csat_upper", ax=None):
    """Horizontal bars of a score per group with its interval (e.g. CSAT by province); an empty state without groups."""
    plots.set_style()
    if summary.empty:
        return plots.empty_state(ax, f"no group of {by} with enough responses", title=f"{value} by {by}")
    data = summary.sort_values(value)
    ax = plots.new_axes(ax, figsize=(7, 0.3 * len(data) + 1.2))
    y = np.arange(len(data))
    ax.barh(y, data[value], color=plots.STATUS_COLOURS["green"], alpha=0.75)
    ax.errorbar(data[value], y, xerr=[data[value] - data[lower], data[upper] - data[value]], fmt="none", ecolor="#333333", capsize=2, linewidth=1)
    ax.set_yticks(y, data[by].astype(str))
    ax.set_xlabel(value.replace("_pct", " (%)").replace("_", " ").upper() if value.endswith("_pct") else value.replace("_", " "))
    ax.set_title(f"{value} by {by}", loc="left")
    return ax


def plot_theme_heatmap(themes: pd.DataFrame, *, ax=None, empty_message: str = "no theme is mentioned in enough comments"):
    """Share of comments mentioning each theme, by score band (a heatmap); without themes, an empty state saying ``empty_message``."""
    import seaborn as sns

    plots.set_style()
    frames.require_columns(themes, ["theme", "score_band", "share_pct"], context="plot_theme_heatmap(themes)")
    if themes.empty:
        return plots.empty_state(ax, empty_message, title="Comment themes by score band")
    ax = plots.new_axes(ax, figsize=(7, 3.5))
    grid = themes.pivot_table(index="theme", columns="score_band", values="share_pct", aggfunc="sum")
    grid = grid.reindex(columns=[b for b in BANDS if b in set(themes.score_band)]).astype(float)
    sns.heatmap(grid, annot=True, fmt=".0f", cmap=plots.PALETTE, cbar_kws={"label": "% of the band's comments"}, ax=ax)
    ax.set_title("Comment themes by score band", loc="left")
    ax.set_xlabel(""), ax.set_ylabel("")
    return ax


def plot_churn_by_band(table: pd.DataFrame, *, ax=None):
    """Churn rate per NPS band with Wilson intervals (``churn_by_score``); an empty state without surveyed customers."""
    plots.set_style()
    if table.empty:
        return plots.empty_state(ax, "no surveyed customer with an order before the churn date (n customers = 0)", title="Churn by NPS band")
    ax = plots.new_axes(ax, figsize=(5, 3.2))
    x = np.arange(len(table))
    ax.bar(x, table.churn_rate_pct, color=plots.category_colour_list(table.group))
    ax.errorbar(x, table.churn_rate_pct, yerr=[table.churn_rate_pct - table.churn_lower, table.churn_upper - table.churn_rate_pct], fmt="none", ecolor="#333333", capsize=3)
    ax.set_xticks(x, table.group)
    ax.set_xlabel("NPS band")
    ax.set_ylabel("churn rate (%)")
    ax.set_title("Churn by NPS band", loc="left")
    return ax
