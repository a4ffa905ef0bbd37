"""Churn: labels from an as-of date and an inactivity window, leakage-free features, a calibrated classifier.

Definitions. A customer is *at risk* on ``as_of`` when they made at least one
purchase (positive amount) before it. They *churned* when they make no purchase
in ``[as_of, as_of + window_days)``. Features only use rows strictly before
``as_of``; the aggregation runs in the Ibis backend (DuckDB for pandas input).

The honest workflow trains on an earlier as-of date whose window has already
passed (``as_of - window_days``) and scores the current one: see ``fit_churn_model``.
"""

from __future__ import annotations

import warnings
from concurrent.futures import Future, ThreadPoolExecutor

import ibis
import numpy as np
import pandas as pd
from joblib import parallel_config
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.utils import check_random_state
from sklearn.utils.random import sample_without_replacement
from threadpoolctl import threadpool_limits

from crm_analytics import background, customer_features, plots
from crm_analytics.frames import TableLike, as_ibis, exact_sum, require_columns, to_pandas

DAY_SECONDS = 86400
_RECENT_SESSION_DAYS = 90  # the window of n_sessions_90d
# OpenMP threads of the gradient boosting thrash on small data and busy machines: one is faster here.
N_THREADS = 1
# Scoring runs in this many Python threads over row blocks instead: the tree walk releases the GIL and
# each row's probability does not depend on the other rows, so the result is the same with any number.
SCORING_THREADS = 2
# The calibration folds are fitted side by side in this many Python threads, each fold with N_THREADS OpenMP
# threads: a fold's trees do not depend on the others, so the model is the same with any number. One per
# fold of the 3-fold calibration: on 2 cores the three share them, rather than the third waiting for two.
FIT_THREADS = 3

MIN_CUSTOMERS_PER_CLASS = 20
"""Fewest churned and fewest retained customers a churn model is fitted or evaluated on.

The classifier is calibrated by isotonic regression on 3 stratified folds: each fold needs both
classes, and with fewer than about 20 of a class every fold holds six or fewer, so the calibration
curve is a handful of steps and ROC-AUC on the same few customers moves by a tenth when one of
them changes. A single class (everybody churned, or nobody) cannot be learnt or evaluated at all.
"""


def too_little_data(labels: pd.Series, *, when: str = "") -> str:
    """Say whether churn labels hold too few customers of either class; ``""`` when there are enough.

    Parameters
    ----------
    labels : pandas.Series of bool
        ``is_churned`` per customer (a ``churn_labels`` column); missing values are not counted.
    when : str
        Words naming the labels in the message, e.g. ``"on the training date 2011-06-12"``.

    Returns
    -------
    str
        ``"too little data (n = 3 churned and 0 retained customers on ..., needs 20 of each)"``, or ``""``.
    """
    known = pd.Series(labels).dropna().astype(bool)
    n_churned, n_retained = int(known.sum()), int((~known).sum())
    if min(n_churned, n_retained) >= MIN_CUSTOMERS_PER_CLASS:
        return ""
    where = f" {when}" if when else ""
    return (f"too little data (n = {n_churned} churned and {n_retained} retained customers{where}, "
            f"needs {MIN_CUSTOMERS_PER_CLASS} of each)")


def all_missing_features(features: pd.DataFrame) -> list[str]:
    """Names of the columns of ``features`` without a single value (e.g. survey features when no
    customer answered a survey before the as-of date); ``fit_churn_model`` leaves them out."""
    return [str(column) for column in features.columns[features.isna().all()]]


def _before(table, time_col: str, as_of: pd.Timestamp):
    t = as_ibis(table)
    return t.filter(t[time_col] < ibis.literal(as_of))


def _days_before(t, time_expr, as_of: pd.Timestamp):
    """Ibis expression: days from ``time_expr`` to ``as_of`` (fractional)."""
    return (ibis.literal(as_of).epoch_seconds() - time_expr.epoch_seconds()) / DAY_SECONDS


def churn_labels(
    orders: TableLike,
    *,
    as_of: str | pd.Timestamp,
    window_days: int = 90,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
) -> pd.DataFrame:
    """Observed churn labels on ``as_of``.

    Parameters
    ----------
    orders : pandas.DataFrame or Ibis table
        ``customer_col``, ``time_col`` (timestamp), ``amount_col`` (money; refunds negative).
    as_of : str or Timestamp
        The labelling date; customers with a purchase strictly before it are labelled.
    window_days : int
        Inactivity window: no purchase in ``[as_of, as_of + window_days)`` means churned.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (sorted): ``is_churned`` (bool) and ``n_orders_in_window``.
    """
    require_columns(orders, [customer_col, time_col, amount_col], context="churn_labels(orders)")
    as_of = pd.Timestamp(as_of)
    end = as_of + pd.Timedelta(days=window_days)
    t = as_ibis(orders)
    t = t.filter((t[amount_col] > 0) & t[customer_col].notnull())  # anonymous orders belong to nobody
    in_window = (t[time_col] >= ibis.literal(as_of)) & (t[time_col] < ibis.literal(end))
    agg = t.group_by(t[customer_col].cast("string").name("customer_id")).aggregate(
        n_before=(t[time_col] < ibis.literal(as_of)).sum(), n_orders_in_window=in_window.sum()
    )
    df = agg.filter(agg.n_before > 0).to_pandas().set_index("customer_id").sort_index()
    out = pd.DataFrame(index=df.index)
    out["is_churned"] = df["n_orders_in_window"].to_numpy() == 0
    out["n_orders_in_window"] = df["n_orders_in_window"].astype("int64")
    return out


def _order_features(orders, customer_col: str, time_col: str, amount_col: str, as_of: pd.Timestamp):
    """Ibis table of the per-customer order aggregates before ``as_of``, customers with a purchase only."""
    t = _before(orders, time_col, as_of)
    t = t.filter(t[customer_col].notnull())  # anonymous orders belong to nobody
    days_ago = _days_before(t, t[time_col], as_of)
    is_purchase = t[amount_col] > 0
    agg = t.group_by(t[customer_col].cast("string").name("customer_id")).aggregate(
        n_orders=is_purchase.sum(),
        n_refunds=(~is_purchase).sum(),
        # money as exact sums: the trees split on exact feature values, so a float sum's last bit, which changes
        # from run to run in a parallel engine, moved scores between two runs on the same data
        total_amount=exact_sum(t[amount_col]),
        purchase_amount=exact_sum(t[amount_col], where=is_purchase),
        days_since_last_order=days_ago.min(where=is_purchase),
        tenure_days=days_ago.max(where=is_purchase),
        n_orders_90d=(is_purchase & (days_ago <= 90)).sum(),
        n_orders_365d=(is_purchase & (days_ago <= 365)).sum(),
        amount_90d=exact_sum(t[amount_col], where=is_purchase & (days_ago <= 90)),
    )
    agg = agg.filter(agg.n_orders > 0)
    # the distinct purchase days: a DISTINCT then a count per customer costs the engine less than a
    # COUNT(DISTINCT ...) per customer in the aggregate above
    purchases = t.filter(is_purchase)
    days = purchases.select(customer_id=purchases[customer_col].cast("string"), day=purchases[time_col].date()).distinct()
    active = days.group_by("customer_id").aggregate(n_active_days=days.count())
    return _left_joined(agg, active)


def _with_order_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """The order features from the ``_order_features`` columns: the ratios added, the helper columns dropped."""
    df["mean_order_amount"] = df["purchase_amount"] / df["n_orders"]
    # mean gap between purchase days; the silence so far measured in those gaps
    gaps = (df["tenure_days"] - df["days_since_last_order"]) / (df["n_active_days"] - 1).where(df["n_active_days"] > 1)
    df["mean_gap_days"] = gaps
    df["silence_in_gaps"] = df["days_since_last_order"] / gaps
    df["refund_share"] = df["n_refunds"] / (df["n_orders"] + df["n_refunds"])
    return df.drop(columns=["purchase_amount", "n_active_days"]).fillna({"amount_90d": 0.0})


def _survey_features(surveys, customer_col: str, as_of: pd.Timestamp):
    t = _before(surveys, "survey_time", as_of)
    return t.group_by(t[customer_col].cast("string").name("customer_id")).aggregate(
        n_surveys=t.count(),
        mean_nps_score=t.nps_score.mean(),
        mean_csat_score=t.csat_score.mean(),
        is_detractor=(t.nps_score.max() <= 6),
        days_since_last_survey=_days_before(t, t.survey_time, as_of).min(),
    )


def _ticket_features(tickets, customer_col: str, as_of: pd.Timestamp):
    counts = customer_features.ticket_counts(tickets, as_of=as_of, customer_col=customer_col)
    return counts.rename(customer_id=customer_col) if customer_col != "customer_id" else counts


def _web_features(events, customer_col: str, as_of: pd.Timestamp):
    t = _before(events, "event_time", as_of)
    customer = t[customer_col].cast("string").name("customer_id")
    # the fewest days since a visit is that of the last visit: one MAX per customer, not a float per event
    last = t.group_by(customer).aggregate(last_visit=t.event_time.max())
    # sessions are counted on the recent events only; the looser cut on the raw time lets the engine skip old
    # row groups, the exact one keeps the boundary of the per-event day count
    recent = t.filter(t.event_time >= ibis.literal(as_of - pd.Timedelta(days=_RECENT_SESSION_DAYS + 1)))
    recent = recent.filter(_days_before(recent, recent.event_time, as_of) <= _RECENT_SESSION_DAYS)
    sessions = recent.group_by(recent[customer_col].cast("string").name("customer_id")).aggregate(
        n_sessions_90d=recent.session_id.nunique())
    joined = last.left_join(sessions, "customer_id")
    return joined.select("customer_id", n_sessions_90d=joined.n_sessions_90d.fill_null(0),
                         days_since_last_visit=_days_before(joined, joined.last_visit, as_of))


def _left_joined(left, right):
    """Ibis left join of two per-customer tables on ``customer_id``, keeping one ``customer_id`` column."""
    joined = left.left_join(right, "customer_id")
    return joined.select(*[joined[c] for c in left.columns], *[joined[c] for c in right.columns if c != "customer_id"])


def churn_features(
    orders: TableLike,
    *,
    as_of: str | pd.Timestamp,
    surveys: TableLike | None = None,
    support_tickets: TableLike | None = None,
    web_events: TableLike | None = None,
    customer_col: str = "customer_id",
    time_col: str = "order_time",
    amount_col: str = "order_amount",
) -> pd.DataFrame:
    """Customer features computed strictly before ``as_of`` (no leakage), one row per customer with a purchase.

    Parameters
    ----------
    orders : pandas.DataFrame or Ibis table
        ``customer_col``, ``time_col`` (timestamp), ``amount_col`` (money; refunds negative).
    surveys : optional
        ``customer_id``, ``survey_time``, ``nps_score`` (0-10), ``csat_score`` (1-5).
    support_tickets : optional
        ``customer_id``, ``opened_time``, ``category``, ``is_escalated``.
    web_events : optional
        ``customer_id``, ``event_time``, ``session_id``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (sorted). Orders: ``n_orders``, ``n_refunds``, ``total_amount``
        (net, money), ``days_since_last_order``, ``tenure_days`` (days since the first purchase),
        ``n_orders_90d``, ``n_orders_365d``, ``amount_90d``, ``mean_order_amount``, ``mean_gap_days``,
        ``silence_in_gaps`` (days since last order / mean gap), ``refund_share``. Surveys: ``n_surveys``,
        ``mean_nps_score``, ``mean_csat_score``, ``is_detractor``, ``days_since_last_survey``.
        Tickets: ``n_tickets``, ``n_tickets_180d``, ``n_escalated``, ``n_refund_tickets``. Web:
        ``n_sessions_90d``, ``days_since_last_visit``. Counts are 0 and other values missing
        (NaN) when a customer has no such rows; the classifier handles missing values.
    """
    require_columns(orders, [customer_col, time_col, amount_col], context="churn_features(orders)")
    as_of = pd.Timestamp(as_of)
    table = _order_features(orders, customer_col, time_col, amount_col, as_of)
    order_columns = list(table.columns)
    extra = [
        (surveys, ["survey_time", "nps_score", "csat_score"], "surveys", _survey_features),
        (support_tickets, ["opened_time", "category", "is_escalated"], "support_tickets", _ticket_features),
        (web_events, ["event_time", "session_id"], "web_events", _web_features),
    ]
    for source, columns, name, build in extra:
        if source is None:
            continue
        require_columns(source, [customer_col, *columns], context=f"churn_features({name})")
        table = _left_joined(table, build(source, customer_col=customer_col, as_of=as_of))
    # one query joins the parts in the engine; the ratios follow in pandas, after the order columns
    features = to_pandas(table).set_index("customer_id")
    extra_columns = [c for c in features.columns if c not in order_columns]
    order_part = features[[c for c in order_columns if c != "customer_id"]]
    features = pd.concat([_with_order_ratios(order_part), features[extra_columns]], axis=1)
    counts = [c for c in extra_columns if c.startswith("n_")]
    features[counts] = features[counts].fillna(0)
    features = features.sort_index()
    return features.astype({c: "float64" for c in features.columns})


def fit_churn_model(features: pd.DataFrame, labels: pd.Series, *, random_state: int = 0, cv: int = 3,
                    n_threads: int | None = None):
    """Fit a gradient-boosting classifier with isotonic probability calibration.

    Parameters
    ----------
    features : pandas.DataFrame
        Numeric features (a ``churn_features`` result); missing values allowed. Columns without any
        value (``all_missing_features``) are left out: gradient boosting cannot bin them.
    labels : pandas.Series of bool
        ``is_churned``, aligned on the index of ``features`` (rows without a label are dropped).
    n_threads : int, optional
        Threads fitting the ``cv`` calibration folds side by side; default ``FIT_THREADS``. The model
        is the same with any number.

    Returns
    -------
    sklearn.calibration.CalibratedClassifierCV
        Fitted; ``predict_proba(X)[:, 1]`` is the calibrated churn probability.
        ``feature_names_in_`` lists the columns it expects.

    Raises
    ------
    ValueError
        When the labels hold a single class (see ``too_little_data`` to check first).
    """
    X, y = _aligned(features.drop(columns=all_missing_features(features)), labels)
    if y.nunique() < 2:
        raise ValueError("fit_churn_model: labels hold a single class; widen the window or move as_of")
    base = _BoostedTrees(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0,
                         random_state=random_state)
    n_jobs = FIT_THREADS if n_threads is None else n_threads
    model = CalibratedClassifierCV(base, method="isotonic", cv=cv, n_jobs=n_jobs)
    with parallel_config(backend="threading"):
        return model.fit(X, y)


def start_fit_churn_model(features: pd.DataFrame, labels: pd.Series, **options) -> Future:
    """``fit_churn_model(features, labels, **options)`` started in a background thread.

    The fit spends its time in compiled code that releases the GIL, so the caller can compute
    something else meanwhile (e.g. the features of the scoring date, in the engine) and pick the
    model up later. The model is the same as that of a direct call.

    Returns
    -------
    concurrent.futures.Future
        ``result()`` waits for the fitted model (or raises what the fit raised).
    """
    return background.start(fit_churn_model, features, labels, name="churn-fit", **options)


class _BoostedTrees(HistGradientBoostingClassifier):
    """``HistGradientBoostingClassifier`` fitted with ``N_THREADS`` OpenMP threads in whichever thread fits it.

    OpenMP thread limits hold per calling thread, so the limit of the caller does not reach the threads
    fitting the calibration folds: each fold sets its own. The thread count enters the trees (the gradient
    sums are added up in parallel blocks), so a fixed count keeps the model the same on every run.
    """

    def fit(self, X, y, sample_weight=None):
        with threadpool_limits(N_THREADS, user_api="openmp"):
            return super().fit(X, y, sample_weight=sample_weight)

    def _check_early_stopping_loss(self, raw_predictions, y_train, sample_weight_train, raw_predictions_val, y_val,
                                   sample_weight_val, n_threads=1):
        """Stop on the validation loss as sklearn does, without also computing the loss on every training row each
        iteration (``train_score_``, which nothing reads: about a tenth of the fit). Without validation data the
        training loss is what stops the fit, and is computed as usual."""
        if not self._use_validation_data:
            return super()._check_early_stopping_loss(raw_predictions, y_train, sample_weight_train, raw_predictions_val,
                                                      y_val, sample_weight_val, n_threads=n_threads)
        loss = self._loss(y_true=y_val, raw_prediction=raw_predictions_val, sample_weight=sample_weight_val, n_threads=n_threads)
        self.validation_score_.append(-loss)
        return self._should_stop(self.validation_score_)


def _aligned(features: pd.DataFrame, labels: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    common = features.index.intersection(labels.index)
    return features.loc[common], labels.loc[common].astype(bool)


def predict_churn(model, features: pd.DataFrame) -> pd.Series:
    """Calibrated churn probability (0..1) per customer of ``features``."""
    proba = positive_probability(model, features[list(model.feature_names_in_)])
    return pd.Series(proba, index=features.index, name="churn_probability")


def positive_probability(model, X: pd.DataFrame, *, n_threads: int | None = None) -> np.ndarray:
    """``model.predict_proba(X)[:, 1]``, computed on blocks of rows in ``n_threads`` threads.

    Parameters
    ----------
    model : fitted classifier
        A ``fit_churn_model`` result (any classifier whose rows are scored independently).
    X : pandas.DataFrame
        The model's features (``model.feature_names_in_``), in its column order.
    n_threads : int, optional
        Threads scoring row blocks; default ``SCORING_THREADS``. Each uses ``N_THREADS`` OpenMP threads.

    Returns
    -------
    numpy.ndarray of float64
        The probability of the positive class (0..1) per row of ``X``, equal to a single ``predict_proba`` call.
    """
    n_threads = SCORING_THREADS if n_threads is None else n_threads
    values = np.ascontiguousarray(X.to_numpy(dtype="float64"))  # row-major: the tree walk reads a row at a time
    bounds = np.linspace(0, len(values), max(1, min(n_threads, len(values))) + 1).astype(int)
    blocks = [values[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]

    def score(block: np.ndarray) -> np.ndarray:
        with threadpool_limits(N_THREADS, user_api="openmp"):
            return model.predict_proba(block)[:, 1]

    with warnings.catch_warnings():
        # the array carries the fitted column order; sklearn would only warn that it has no column names
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
        if len(blocks) == 1:
            return score(blocks[0])
        with ThreadPoolExecutor(len(blocks)) as pool:
            return np.concatenate(list(pool.map(score, blocks)))


def churn_metrics(y_true, probability) -> pd.DataFrame:
    """ROC-AUC, PR-AUC (average precision), Brier score and base rate, one row per metric."""
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(probability, dtype="float64")
    values = {
        "roc_auc": roc_auc_score(y, p),
        "pr_auc": average_precision_score(y, p),
        "brier_score": brier_score_loss(y, p),
        "base_rate": float(y.mean()),
        "n_customers": float(y.size),
    }
    return pd.DataFrame({"metric": list(values), "value": list(values.values())})


def gains_table(y_true, probability, *, n_bins: int = 10) -> pd.DataFrame:
    """Cumulative gains and lift by risk decile (decile 1 = highest predicted churn).

    Returns
    -------
    pandas.DataFrame
        ``decile``, ``n_customers``, ``n_churned``, ``churn_rate``, ``cumulative_customers_pct``,
        ``cumulative_churned_pct`` (share of all churners captured so far, 0..100) and ``lift``.
    """
    frame = pd.DataFrame({"y": np.asarray(y_true, dtype=bool), "p": np.asarray(probability, dtype="float64")})
    frame = frame.sort_values("p", ascending=False, kind="stable").reset_index(drop=True)
    frame["decile"] = np.arange(len(frame)) * n_bins // max(len(frame), 1) + 1
    table = frame.groupby("decile").agg(n_customers=("y", "size"), n_churned=("y", "sum"))
    table["churn_rate"] = table["n_churned"] / table["n_customers"]
    table["cumulative_customers_pct"] = 100 * table["n_customers"].cumsum() / len(frame)
    table["cumulative_churned_pct"] = 100 * table["n_churned"].cumsum() / max(frame["y"].sum(), 1)
    table["lift"] = table["churn_rate"] / frame["y"].mean()
    return table.reset_index()


def calibration_table(y_true, probability, *, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed churn rate in ``n_bins`` equal-size probability bins."""
    frame = pd.DataFrame({"y": np.asarray(y_true, dtype=float), "p": np.asarray(probability, dtype="float64")})
    frame["bin"] = pd.qcut(frame["p"].rank(method="first"), n_bins, labels=False)
    table = frame.groupby("bin").agg(n_customers=("y", "size"), mean_predicted=("p", "mean"), observed_rate=("y", "mean"))
    return table.reset_index()


def permutation_importance_table(model, features: pd.DataFrame, labels: pd.Series, *, n_repeats: int = 5,
                                 max_samples: int = 5_000, random_state: int = 0) -> pd.DataFrame:
    """Drop in ROC-AUC when each feature is shuffled (mean and std over ``n_repeats``), largest first.

    Each repeat scores a random subset of at most ``max_samples`` customers: the ranking of
    features settles long before the whole base is scored, and the cost grows with it. The values
    are those of ``sklearn.inspection.permutation_importance`` (baseline ROC-AUC on all customers);
    for a ``fit_churn_model`` model they are computed without re-scoring the trees that do not
    split on the shuffled feature (same numbers, a fraction of the cost).
    """
    X, y = _aligned(features, labels)
    X = X[list(model.feature_names_in_)]
    n_samples = min(max_samples, len(X))
    with threadpool_limits(N_THREADS):
        drops = _boosted_permutation_drops(model, X, y, n_repeats=n_repeats, max_samples=n_samples, random_state=random_state)
        if drops is None:
            drops = permutation_importance(model, X, y, scoring="roc_auc", n_repeats=n_repeats, max_samples=n_samples,
                                           random_state=random_state).importances
    table = pd.DataFrame({"feature": X.columns, "importance": np.mean(drops, axis=1), "importance_std": np.std(drops, axis=1)})
    return table.sort_values("importance", ascending=False).reset_index(drop=True)


def _permutation_plan(n_samples: int, *, max_samples: int, n_repeats: int, random_state) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows scored and the shuffle of each repeat, drawn exactly as ``permutation_importance`` draws them.

    Every feature gets the same seed there, so the same rows and shuffles; repeat ``r`` reorders the
    column as left by repeat ``r - 1``.
    """
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max + 1)
    rng = np.random.RandomState(seed)
    rows = sample_without_replacement(n_samples, max_samples, random_state=rng) if max_samples < n_samples else np.arange(n_samples)
    order, shuffles = np.arange(len(rows)), []
    for _ in range(n_repeats):
        rng.shuffle(order)
        shuffles.append(order.copy())
    return rows, shuffles


def _boosted_folds(model) -> list | None:
    """``(fold, trees, splits)`` per fold of a ``fit_churn_model`` model; ``None`` for any other model.

    ``trees`` are the fold's boosting trees in order; ``splits[t, f]`` is True when tree ``t`` splits on feature ``f``.
    """
    if not isinstance(model, CalibratedClassifierCV) or model.method != "isotonic" or len(model.classes_) != 2:
        return None
    folds = []
    for fold in model.calibrated_classifiers_:
        hgb = fold.estimator
        if not isinstance(hgb, HistGradientBoostingClassifier) or hgb.n_trees_per_iteration_ != 1:
            return None
        trees = [iteration[0] for iteration in hgb._predictors]
        splits = np.zeros((len(trees), hgb.n_features_in_), dtype=bool)
        for t, tree in enumerate(trees):
            splits[t, tree.nodes["feature_idx"][tree.nodes["is_leaf"] == 0]] = True
        folds.append((fold, trees, splits))
    return folds


def _tree_outputs(hgb, trees, X: np.ndarray) -> np.ndarray:
    """Raw score each tree adds for each row of ``X``: shape (n_trees, n_rows)."""
    known_categories, feature_map = hgb._bin_mapper.make_known_categories_bitsets()
    return np.stack([tree.predict(X, known_categories, feature_map, N_THREADS) for tree in trees])


def _calibrated_probability(folds, outputs) -> np.ndarray:
    """``predict_proba(X)[:, 1]`` of the calibrated model from each fold's tree outputs, with sklearn's arithmetic.

    The raw score sums the trees in boosting order (floating point: the order matters), each fold's
    isotonic calibrator maps it, and the folds are averaged.
    """
    total = 0.0
    for (fold, _, _), tree_outputs in zip(folds, outputs):
        raw = np.zeros(len(tree_outputs[0])) + fold.estimator._baseline_prediction.item()
        for tree_output in tree_outputs:
            raw += tree_output
        probability = fold.calibrators[0].predict(raw)
        probability[(1.0 < probability) & (probability <= 1.0 + 1e-5)] = 1.0
        total = total + probability
    return total / len(folds)


def _with_trees_rescored(hgb, trees, rescore: np.ndarray, outputs: np.ndarray, X: np.ndarray) -> list[np.ndarray]:
    """Rows of ``outputs`` (views, not copies), those of the trees flagged in ``rescore`` recomputed on ``X``."""
    rows = list(outputs)
    changed = np.flatnonzero(rescore)
    if len(changed):
        for t, output in zip(changed, _tree_outputs(hgb, [trees[t] for t in changed], X)):
            rows[t] = output
    return rows


def _boosted_permutation_drops(model, X: pd.DataFrame, y: pd.Series, *, n_repeats: int, max_samples: int,
                               random_state) -> np.ndarray | None:
    """``permutation_importance(model, X, y, scoring="roc_auc", ...).importances`` re-scoring only affected trees.

    Shuffling a feature changes the output of the trees that split on it and no other; the others
    are scored once on the sampled rows. Returns the (n_features, n_repeats) drops in ROC-AUC, or
    ``None`` when ``model`` is not a ``fit_churn_model`` model or this shortcut does not reproduce its
    predictions exactly (the caller then runs sklearn's implementation).
    """
    folds = _boosted_folds(model)
    if folds is None:
        return None
    rows, shuffles = _permutation_plan(len(X), max_samples=max_samples, n_repeats=n_repeats, random_state=random_state)
    probability = positive_probability(model, X)
    baseline = roc_auc_score(y, probability)
    sample, y_sample = X.to_numpy(dtype="float64")[rows], y.to_numpy()[rows]
    outputs = [_tree_outputs(fold.estimator, trees, sample) for fold, trees, _ in folds]
    if not np.array_equal(_calibrated_probability(folds, outputs), probability[rows]):
        return None

    def feature_drops(feature: int) -> list[float]:
        permuted, drops = sample.copy(), []
        for order in shuffles:
            permuted[:, feature] = permuted[order, feature]
            changed = [_with_trees_rescored(fold.estimator, trees, splits[:, feature], fold_outputs, permuted)
                       for (fold, trees, splits), fold_outputs in zip(folds, outputs)]
            drops.append(baseline - roc_auc_score(y_sample, _calibrated_probability(folds, changed)))
        return drops

    # features are independent of one another: their tree walks run in threads (the walk releases the GIL)
    with ThreadPoolExecutor(max(1, SCORING_THREADS)) as pool:
        drops = list(pool.map(feature_drops, range(X.shape[1])))
    return np.array(drops, dtype="float64").reshape(X.shape[1], n_repeats)


def plot_gains(gains: pd.DataFrame, *, ax=None):
    """Cumulative gains chart of a ``gains_table`` result, with the random-targeting diagonal."""
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(5.5, 4.5))
    x = np.r_[0, gains["cumulative_customers_pct"]]
    ax.plot(x, np.r_[0, gains["cumulative_churned_pct"]], marker="o", label="model")
    ax.plot([0, 100], [0, 100], linestyle="--", color="grey", label="random")
    ax.set(xlabel="customers contacted, highest risk first (%)", ylabel="churners reached (%)",
           title="Cumulative gains: how many churners does contacting the riskiest customers reach?")
    ax.legend()
    return ax


def plot_calibration(calibration: pd.DataFrame, *, ax=None):
    """Reliability diagram of a ``calibration_table`` result."""
    plots.set_style()
    ax = plots.new_axes(ax, figsize=(5.5, 4.5))
    ax.plot(calibration["mean_predicted"], calibration["observed_rate"], marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.set(xlabel="predicted churn probability (0-1)", ylabel="observed churn rate (0-1)", title="Calibration: do predicted churn probabilities come true?")
    ax.legend()
    return ax


def plot_importance(importance: pd.DataFrame, *, ax=None, top: int = 12):
    """Horizontal bars of a ``permutation_importance_table`` result (top features)."""
    plots.set_style()
    part = importance.head(top).iloc[::-1]
    ax = plots.new_axes(ax, figsize=(7, 0.35 * len(part) + 1.5))
    ax.barh(part["feature"], part["importance"], xerr=part["importance_std"])
    ax.set(xlabel="drop in ROC-AUC when shuffled (AUC points)", ylabel="feature", title="Permutation importance: what drives the churn score")
    return ax
