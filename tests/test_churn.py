"""Tests of crm_analytics.churn: labels, leakage-free features, and the model against the demo ground truth."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from crm_analytics import churn, ground_truth
from crm_analytics.frames import MissingColumnError

AS_OF = pd.Timestamp("2024-04-01")


def _orders() -> pd.DataFrame:
    rows = [
        ("a", "2024-01-01 10:00", 100.0),
        ("a", "2024-03-01 10:00", 50.0),
        ("a", "2024-04-15 10:00", 70.0),  # in the window: a stays
        ("b", "2024-02-01 10:00", 30.0),
        ("b", "2024-03-31 23:59", -30.0),  # refund just before as_of
        ("c", "2024-04-01 00:00", 20.0),  # exactly at as_of: not before, so c is not labelled
        ("d", "2023-12-01 10:00", 10.0),
        ("d", "2024-07-15 10:00", 10.0),  # after the window: d churned
    ]
    df = pd.DataFrame(rows, columns=["customer_id", "order_time", "order_amount"])
    df["order_time"] = pd.to_datetime(df["order_time"])
    return df


def _surveys() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "a", "b"],
            "survey_time": pd.to_datetime(["2024-02-01", "2024-05-01", "2024-03-01"]),
            "nps_score": [9, 0, 3],
            "csat_score": [5, 1, 2],
        }
    )


def test_labels_hand_checked():
    orders = _orders()
    before = orders.copy()
    labels = churn.churn_labels(orders, as_of=AS_OF, window_days=90)
    pd.testing.assert_frame_equal(orders, before)
    assert list(labels.index) == ["a", "b", "d"]
    assert labels["is_churned"].tolist() == [False, True, True]
    assert labels.loc["a", "n_orders_in_window"] == 1


def test_features_hand_checked():
    f = churn.churn_features(_orders(), as_of=AS_OF, surveys=_surveys())
    assert list(f.index) == ["a", "b", "d"]
    assert f.loc["a", "n_orders"] == 2
    assert f.loc["a", "days_since_last_order"] == pytest.approx(31 - 10 / 24)
    assert f.loc["a", "tenure_days"] == pytest.approx(91 - 10 / 24)
    assert f.loc["a", "mean_gap_days"] == pytest.approx(60)
    assert f.loc["b", "n_refunds"] == 1 and f.loc["b", "total_amount"] == 0.0
    assert f.loc["a", "n_surveys"] == 1 and f.loc["a", "mean_nps_score"] == 9  # the May survey is after as_of
    assert f.loc["d", "n_surveys"] == 0 and np.isnan(f.loc["d", "mean_nps_score"])


def test_features_do_not_leak_data_from_after_as_of():
    orders, surveys = _orders(), _surveys()
    base = churn.churn_features(orders, as_of=AS_OF, surveys=surveys)
    later = orders["order_time"] >= AS_OF
    changed = orders.copy()
    changed.loc[later, "order_amount"] = changed.loc[later, "order_amount"] * 100
    changed.loc[later, "order_time"] = changed.loc[later, "order_time"] + pd.Timedelta(days=3)
    extra = pd.DataFrame({"customer_id": ["a", "b", "z"], "order_time": pd.to_datetime(["2024-04-01", "2024-06-01", "2024-04-02"]),
                          "order_amount": [999.0, 5.0, 1.0]})
    changed = pd.concat([changed, extra], ignore_index=True)
    surveys_changed = pd.concat([surveys, pd.DataFrame({"customer_id": ["b"], "survey_time": [AS_OF], "nps_score": [10], "csat_score": [5]})])
    pd.testing.assert_frame_equal(base, churn.churn_features(changed, as_of=AS_OF, surveys=surveys_changed))


def test_missing_columns_are_named():
    with pytest.raises(MissingColumnError, match="order_time"):
        churn.churn_labels(_orders().drop(columns="order_time"), as_of=AS_OF)
    with pytest.raises(MissingColumnError, match="nps_score"):
        churn.churn_features(_orders(), as_of=AS_OF, surveys=_surveys().drop(columns="nps_score"))


def test_gains_and_calibration_tables():
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    p = np.linspace(0.9, 0.0, 10)
    gains = churn.gains_table(y, p, n_bins=5)
    assert gains["n_customers"].tolist() == [2] * 5
    assert gains["cumulative_churned_pct"].iloc[0] == pytest.approx(200 / 3)
    assert gains["cumulative_churned_pct"].iloc[-1] == 100
    assert gains["lift"].iloc[0] == pytest.approx(1.0 / 0.3)
    calibration = churn.calibration_table(y, p, n_bins=5)
    assert calibration["n_customers"].sum() == 10


def test_model_on_synthetic_data_is_calibrated_and_ranked():
    rng = np.random.default_rng(0)
    n = 1500
    features = pd.DataFrame({"days_since_last_order": rng.exponential(60, n), "noise": rng.normal(size=n)},
                            index=[f"c{i}" for i in range(n)])
    p_true = 1 / (1 + np.exp(-(features["days_since_last_order"] - 60) / 20))
    labels = pd.Series(rng.random(n) < p_true, index=features.index)
    model = churn.fit_churn_model(features.iloc[:1000], labels.iloc[:1000], random_state=0)
    proba = churn.predict_churn(model, features.iloc[1000:])
    metrics = churn.churn_metrics(labels.iloc[1000:], proba).set_index("metric")["value"]
    assert metrics["roc_auc"] > 0.8
    assert abs(proba.mean() - labels.iloc[1000:].mean()) < 0.06
    importance = churn.permutation_importance_table(model, features, labels, n_repeats=2)
    assert importance["feature"].iloc[0] == "days_since_last_order"


def test_permutation_importance_is_sklearns_exactly():
    """The shortcut (re-scoring only the trees that split on the shuffled feature) gives sklearn's numbers."""
    from sklearn.inspection import permutation_importance

    rng = np.random.default_rng(1)
    n = 1200
    features = pd.DataFrame({"days_since_last_order": rng.exponential(60, n), "noise": rng.normal(size=n),
                             "unused": np.zeros(n), "n_orders": rng.poisson(3, n).astype(float)},
                            index=[f"c{i}" for i in range(n)])
    features.loc[features.index[::7], "n_orders"] = np.nan
    labels = pd.Series(rng.random(n) < 1 / (1 + np.exp(-(features["days_since_last_order"] - 60) / 20)), index=features.index)
    model = churn.fit_churn_model(features, labels, random_state=0)
    shortcut = churn._boosted_permutation_drops(model, features, labels, n_repeats=1, max_samples=500, random_state=0)
    assert shortcut is not None, "the shortcut must reproduce the model's predictions, else it falls back to sklearn"
    for max_samples, random_state in [(500, 3), (5_000, 0)]:  # a subset of the customers, then all of them
        table = churn.permutation_importance_table(model, features, labels, n_repeats=3, max_samples=max_samples,
                                                   random_state=random_state).set_index("feature")
        expected = permutation_importance(model, features, labels, scoring="roc_auc", n_repeats=3,
                                          max_samples=min(max_samples, n), random_state=random_state)
        assert np.array_equal(table.loc[features.columns, "importance"].to_numpy(), expected.importances_mean)
        assert np.array_equal(table.loc[features.columns, "importance_std"].to_numpy(), expected.importances_std)


def test_single_class_labels_are_refused():
    features = pd.DataFrame({"x": [1.0, 2.0, 3.0]}, index=["a", "b", "c"])
    with pytest.raises(ValueError, match="single class"):
        churn.fit_churn_model(features, pd.Series([True, True, True], index=features.index))


def test_too_little_data_names_both_class_counts():
    labels = churn.churn_labels(_orders(), as_of=AS_OF, window_days=90)["is_churned"]  # a stays, b and d churn
    message = churn.too_little_data(labels, when="on the training date 2024-04-01")
    assert message == (f"too little data (n = 2 churned and 1 retained customers on the training date 2024-04-01, "
                       f"needs {churn.MIN_CUSTOMERS_PER_CLASS} of each)")
    single_class = pd.Series([True] * 100)
    assert churn.too_little_data(single_class).startswith("too little data (n = 100 churned and 0 retained")
    enough = pd.Series([True, False] * churn.MIN_CUSTOMERS_PER_CLASS + [np.nan] * 5, dtype="object")
    assert churn.too_little_data(enough) == ""


def test_labels_without_an_observed_window_are_too_little_data():
    # every order before the labelling date lies in the last 90 days: nobody can be labelled before the data starts
    labels = churn.churn_labels(_orders(), as_of="2023-06-01", window_days=90)["is_churned"]
    assert labels.empty
    assert churn.too_little_data(labels).startswith("too little data (n = 0 churned and 0 retained")


def test_all_missing_features_are_left_out_of_the_fit():
    rng = np.random.default_rng(0)
    n = 200
    features = pd.DataFrame({"days_since_last_order": rng.exponential(60, n), "mean_nps_score": np.nan,
                             "days_since_last_visit": np.nan}, index=[f"c{i}" for i in range(n)])
    labels = pd.Series(features["days_since_last_order"] > 60, index=features.index)
    assert churn.all_missing_features(features) == ["mean_nps_score", "days_since_last_visit"]
    model = churn.fit_churn_model(features, labels, random_state=0)
    assert list(model.feature_names_in_) == ["days_since_last_order"]
    probability = churn.predict_churn(model, features)
    assert probability.between(0, 1).all() and len(probability) == n


@pytest.mark.slow
def test_demo_churn_model_finds_true_dropouts(demo_home):
    from crm_analytics import warehouse

    con = warehouse.connect()
    orders, surveys, tickets, events = (con.table(n) for n in ("orders", "surveys", "support_tickets", "web_events"))
    as_of, window = pd.Timestamp("2025-09-30"), 90
    train_as_of = as_of - pd.Timedelta(days=window)
    train = churn.churn_features(orders, as_of=train_as_of, surveys=surveys, support_tickets=tickets, web_events=events)
    labels = churn.churn_labels(orders, as_of=train_as_of, window_days=window)["is_churned"]
    model = churn.fit_churn_model(train, labels, random_state=0)
    current = churn.churn_features(orders, as_of=as_of, surveys=surveys, support_tickets=tickets, web_events=events)
    proba = churn.predict_churn(model, current)

    persons = ground_truth.load_persons().set_index("person_id")
    customer_to_person = ground_truth.customer_persons(con).set_index("customer_id")["person_id"]
    assert proba.index.isin(customer_to_person.index).mean() > 0.95, "nearly every scored customer is one true person"
    proba = proba[proba.index.isin(customer_to_person.index)]
    dropout = pd.to_datetime(customer_to_person.reindex(proba.index).map(persons["dropout_time"]))
    truly_dropped = dropout.notna() & (dropout <= as_of)
    metrics = churn.churn_metrics(truly_dropped, proba).set_index("metric")["value"]
    assert metrics["roc_auc"] >= 0.75, metrics


def _web_events() -> pd.DataFrame:
    rows = [
        ("a", "s1", "2023-12-20 08:00"),  # an old session
        ("a", "s2", "2023-12-20 10:00"),  # ... starts long ago
        ("a", "s2", "2024-03-20 10:00"),  # ... and has an event in the last 90 days: it counts once
        ("a", "s3", "2024-03-30 12:00"),
        ("a", "s3", "2024-04-02 12:00"),  # after as_of: not seen
        ("b", "s4", "2024-01-02 00:00"),  # exactly 90 days before as_of: in the window
        ("b", "s5", "2024-01-01 23:59"),  # just outside
        ("d", "s6", "2023-11-01 00:00"),  # a visit, but none recent
        ("z", "s7", "2024-03-01 00:00"),  # a visitor who never ordered
    ]
    df = pd.DataFrame(rows, columns=["customer_id", "session_id", "event_time"])
    df["event_time"] = pd.to_datetime(df["event_time"])
    return df


def test_web_features_hand_checked():
    f = churn.churn_features(_orders(), as_of=AS_OF, web_events=_web_events())
    assert f["n_sessions_90d"].to_dict() == {"a": 2.0, "b": 1.0, "d": 0.0}
    assert f.loc["a", "days_since_last_visit"] == pytest.approx(1.5)
    assert f.loc["b", "days_since_last_visit"] == 90.0
    assert f.loc["d", "days_since_last_visit"] == 152.0


def test_features_from_a_duckdb_warehouse_equal_those_from_frames(tmp_path):
    """The aggregation in the engine gives the numbers of the hand-checked frames, customer for customer."""
    import ibis

    orders, surveys, events = _orders(), _surveys(), _web_events()
    orders = pd.concat([orders, pd.DataFrame({"customer_id": ["a", "a", None], "order_amount": [5.0, 7.0, 9.0],
                                              "order_time": pd.to_datetime(["2024-03-01 18:00", "2024-02-10 00:00", "2024-02-11 00:00"])})],
                       ignore_index=True)  # a second order on a day already counted, and an anonymous one
    con = ibis.duckdb.connect(str(tmp_path / "w.duckdb"))
    tables = {name: con.create_table(name, frame) for name, frame in
              {"orders": orders, "surveys": surveys, "web_events": events}.items()}
    from_engine = churn.churn_features(tables["orders"], as_of=AS_OF, surveys=tables["surveys"], web_events=tables["web_events"])
    from_frames = churn.churn_features(orders, as_of=AS_OF, surveys=surveys, web_events=events)
    pd.testing.assert_frame_equal(from_engine, from_frames)
    assert list(from_engine.index) == ["a", "b", "d"]
    # a bought on Jan 1 10:00, Feb 10 and Mar 1 (10:00 and 18:00): three purchase days, two gaps over 60 days 8 hours
    assert from_engine.loc["a", "mean_gap_days"] == pytest.approx((60 + 8 / 24) / 2)
    assert from_engine.loc["a", "n_orders"] == 4


@pytest.mark.parametrize("n_threads", [1, 2, 3, 50])
def test_positive_probability_is_predict_proba_with_any_thread_count(n_threads):
    rng = np.random.default_rng(2)
    n = 900
    features = pd.DataFrame({"days_since_last_order": rng.exponential(60, n), "noise": rng.normal(size=n)},
                            index=[f"c{i}" for i in range(n)])
    features.loc[features.index[::11], "noise"] = np.nan
    labels = pd.Series(features["days_since_last_order"] + rng.normal(0, 20, n) > 60, index=features.index)
    model = churn.fit_churn_model(features, labels, random_state=0)
    expected = model.predict_proba(features)[:, 1]
    assert np.array_equal(churn.positive_probability(model, features, n_threads=n_threads), expected)
    assert np.array_equal(churn.positive_probability(model, features.iloc[:1], n_threads=n_threads), expected[:1])


def test_money_features_are_the_exact_sums_on_every_run(tmp_path):
    """Amounts are added up as decimals: the feature is the exact sum (to a millionth), whatever order the engine's
    threads meet the rows in, so refitting on the same warehouse gives the same model."""
    import ibis

    rng = np.random.default_rng(5)
    n = 300_000
    amounts = np.round(rng.choice([0.1, 0.2, 0.3, 1e9 + 0.07, 19.99], n) * rng.choice([1, 1, 1, -1], n), 2)
    orders = pd.DataFrame({"customer_id": rng.integers(0, 40, n).astype(str), "order_amount": amounts,
                           "order_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 86_400 * 90, n), unit="s")})  # all before AS_OF
    con = ibis.duckdb.connect(str(tmp_path / "w.duckdb"), threads=4)
    table = con.create_table("orders", orders)
    runs = [churn.churn_features(table, as_of=AS_OF)["total_amount"].sort_index() for _ in range(3)]
    exact = orders.groupby("customer_id")["order_amount"].agg(lambda v: float(sum(Decimal(repr(x)) for x in v)))
    assert runs[0].to_dict() == exact.loc[runs[0].index].to_dict()
    assert all(run.equals(runs[0]) for run in runs[1:])


def _tickets() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": ["a", "a", "d", "z"],
        "opened_time": pd.to_datetime(["2024-01-10", "2024-04-10", "2023-06-01", "2024-02-01"]),  # a's second: after as_of
        "category": ["refund", "refund", "delivery", "refund"],
        "is_escalated": [True, True, False, False],
    })


def test_features_of_all_four_sources_joined_in_the_engine(tmp_path):
    """Orders, surveys, tickets and web events are joined in one engine query: the columns keep their documented
    order (the model's feature order), counts of customers without rows are 0, and non-buyers stay out."""
    import ibis

    con = ibis.duckdb.connect(str(tmp_path / "w.duckdb"))
    sources = {"orders": _orders(), "surveys": _surveys(), "support_tickets": _tickets(), "web_events": _web_events()}
    tables = {name: con.create_table(name, frame) for name, frame in sources.items()}
    f = churn.churn_features(tables.pop("orders"), as_of=AS_OF, **tables)
    assert list(f.columns) == [
        "n_orders", "n_refunds", "total_amount", "days_since_last_order", "tenure_days", "n_orders_90d", "n_orders_365d",
        "amount_90d", "mean_order_amount", "mean_gap_days", "silence_in_gaps", "refund_share",
        "n_surveys", "mean_nps_score", "mean_csat_score", "is_detractor", "days_since_last_survey",
        "n_tickets", "n_tickets_180d", "n_escalated", "n_refund_tickets", "n_sessions_90d", "days_since_last_visit"]
    assert (f.dtypes == "float64").all()
    assert list(f.index) == ["a", "b", "d"]  # z opened a ticket and visited the site but never ordered
    assert f["n_tickets"].to_dict() == {"a": 1.0, "b": 0.0, "d": 1.0}
    assert f["n_tickets_180d"].to_dict() == {"a": 1.0, "b": 0.0, "d": 0.0}  # d's ticket is 305 days old
    assert f["n_escalated"].to_dict() == {"a": 1.0, "b": 0.0, "d": 0.0}
    assert f["n_refund_tickets"].to_dict() == {"a": 1.0, "b": 0.0, "d": 0.0}
    assert f.loc["a", "is_detractor"] == 0.0 and f.loc["b", "is_detractor"] == 1.0 and np.isnan(f.loc["d", "is_detractor"])
    assert f.loc["a", "days_since_last_survey"] == 60.0 and np.isnan(f.loc["d", "days_since_last_survey"])
    # b: one purchase day, so no gap between purchase days
    assert f.loc["b", "n_orders"] == 1 and np.isnan(f.loc["b", "mean_gap_days"]) and f.loc["b", "refund_share"] == 0.5
    pd.testing.assert_frame_equal(f, churn.churn_features(_orders(), as_of=AS_OF, surveys=_surveys(),
                                                          support_tickets=_tickets(), web_events=_web_events()))


def _synthetic_training_set(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    features = pd.DataFrame({"days_since_last_order": rng.exponential(60, n), "noise": rng.normal(size=n),
                             "n_orders": rng.poisson(3, n).astype(float)}, index=[f"c{i}" for i in range(n)])
    features.loc[features.index[::9], "n_orders"] = np.nan
    labels = pd.Series(features["days_since_last_order"] + rng.normal(0, 25, n) > 60, index=features.index)
    return features, labels


def _fold_trees(model) -> list[np.ndarray]:
    return [tree[0].nodes for fold in model.calibrated_classifiers_ for tree in fold.estimator._predictors]


def test_folds_fitted_side_by_side_give_the_model_of_a_fit_one_fold_at_a_time():
    """Each fold thread limits its own OpenMP threads (a limit holds per thread), so the trees are those of one
    fold after the other; more than 10,000 customers, so the folds also stop early on a random validation split."""
    features, labels = _synthetic_training_set(12_000, seed=3)
    one_by_one = churn.fit_churn_model(features, labels, random_state=7, n_threads=1)
    side_by_side = churn.fit_churn_model(features, labels, random_state=7)
    assert churn.FIT_THREADS > 1
    assert len(_fold_trees(one_by_one)) == len(_fold_trees(side_by_side))
    assert all(np.array_equal(a, b) for a, b in zip(_fold_trees(one_by_one), _fold_trees(side_by_side)))
    assert np.array_equal(churn.predict_churn(one_by_one, features), churn.predict_churn(side_by_side, features))


def test_boosted_trees_stop_where_sklearns_classifier_stops():
    """The churn trees skip the training loss sklearn computes beside the validation loss: the same trees, stopped at
    the same iteration, on data where early stopping ends the fit well before ``max_iter``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    features, labels = _synthetic_training_set(12_000, seed=5)
    options = {"max_iter": 300, "learning_rate": 0.3, "max_leaf_nodes": 15, "random_state": 2}
    with threadpool_limits(churn.N_THREADS, user_api="openmp"):
        reference = HistGradientBoostingClassifier(**options).fit(features, labels)
    ours = churn._BoostedTrees(**options).fit(features, labels)
    assert reference.n_iter_ == ours.n_iter_ < options["max_iter"]
    assert np.array_equal(reference.validation_score_, ours.validation_score_)
    assert all(np.array_equal(a[0].nodes, b[0].nodes) for a, b in zip(reference._predictors, ours._predictors))
    assert np.array_equal(reference.predict_proba(features), ours.predict_proba(features))


def test_a_fit_started_in_the_background_is_that_of_a_direct_call():
    features, labels = _synthetic_training_set(2_000, seed=4)
    fitting = churn.start_fit_churn_model(features, labels, random_state=1)
    direct = churn.fit_churn_model(features, labels, random_state=1)  # meanwhile, in this thread
    assert np.array_equal(churn.predict_churn(fitting.result(timeout=300), features), churn.predict_churn(direct, features))
    failing = churn.start_fit_churn_model(features, pd.Series(True, index=labels.index), random_state=1)
    with pytest.raises(ValueError, match="single class"):
        failing.result(timeout=300)
