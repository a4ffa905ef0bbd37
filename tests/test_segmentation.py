"""Tests of crm_analytics.segmentation: RFM by hand on tiny frames, tiers, transitions, clusters, lists."""

from __future__ import annotations

import ibis
import matplotlib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from crm_analytics import segmentation as seg
from crm_analytics.frames import MissingColumnError

matplotlib.use("Agg")

AS_OF = "2024-01-10"


def _orders() -> pd.DataFrame:
    """Five customers; hand-checked values in ``EXPECTED``.

    A: two purchases and a later refund; B: one order exactly at as_of;
    C: two same-day orders and one after as_of; D: one order (ties C on monetary);
    E: only a refund (no purchase: no row).
    """
    rows = [
        ("o1", "A", "2024-01-01 10:00", 100.0),
        ("o2", "A", "2024-01-05 12:00", 50.0),
        ("o3", "A", "2024-01-08 09:00", -30.0),
        ("o4", "B", "2024-01-10 00:00", 200.0),
        ("o5", "C", "2024-01-03 09:00", 40.0),
        ("o6", "C", "2024-01-03 18:00", 60.0),
        ("o7", "C", "2024-01-11 08:00", 1000.0),
        ("o8", "D", "2024-01-02 12:00", 100.0),
        ("o9", "E", "2024-01-04 12:00", -20.0),
    ]
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "order_time", "order_amount"])
    frame["order_time"] = pd.to_datetime(frame["order_time"])
    frame["is_refund"] = frame["order_amount"] < 0
    return frame


# customer: recency_days, frequency, monetary, r, f, m, segment (n_bins=5, 4 customers).
EXPECTED = {
    "A": (4, 2, 120.0, 3, 3, 3, "Need Attention"),
    "B": (0, 1, 200.0, 4, 1, 4, "Promising"),  # one order: the FM = 1 column, never Potential Loyalist
    "C": (6, 2, 100.0, 2, 3, 1, "Lost"),
    "D": (7, 1, 100.0, 1, 1, 1, "Lost"),
}


def _expected_frame() -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(EXPECTED, orient="index", columns=list(seg.RFM_COLUMNS))
    return frame.rename_axis("customer_id").reset_index()


@pytest.mark.parametrize("wrap", [lambda df: df, ibis.memtable], ids=["pandas", "ibis"])
def test_rfm_hand_checked(wrap):
    result = seg.rfm(wrap(_orders()), as_of=AS_OF)
    expected = _expected_frame()
    assert list(result.columns) == ["customer_id", *seg.RFM_COLUMNS]
    assert result["customer_id"].tolist() == ["A", "B", "C", "D"]
    for column in ["recency_days", "frequency", "monetary", "r_score", "f_score", "m_score"]:
        assert result[column].tolist() == expected[column].tolist(), column
    assert result["rfm_segment"].astype(str).tolist() == expected["rfm_segment"].tolist()


def test_rfm_refunds_net_revenue_but_not_frequency():
    result = seg.rfm(_orders(), as_of=AS_OF).set_index("customer_id")
    assert result.loc["A", "monetary"] == pytest.approx(120.0)  # 100 + 50 - 30
    assert result.loc["A", "frequency"] == 2  # the refund is not an order
    assert result.loc["A", "recency_days"] == 4  # from the last purchase, not the refund
    assert "E" not in result.index  # refunds only: not a customer with purchases


def test_rfm_orders_after_as_of_ignored_and_order_at_as_of_counted():
    result = seg.rfm(_orders(), as_of=AS_OF).set_index("customer_id")
    assert result.loc["C", "monetary"] == pytest.approx(100.0)
    assert result.loc["B", "recency_days"] == 0
    later = seg.rfm(_orders(), as_of="2024-01-12").set_index("customer_id")
    assert later.loc["C", "frequency"] == 3 and later.loc["C", "recency_days"] == 0


def test_rfm_single_customer_single_order():
    one = _orders().iloc[[3]]
    result = seg.rfm(one, as_of=AS_OF)
    assert len(result) == 1
    assert result.loc[0, ["recency_days", "frequency", "r_score", "f_score", "m_score"]].tolist() == [0, 1, 1, 1, 1]


def test_rfm_empty_when_nothing_before_as_of():
    result = seg.rfm(_orders(), as_of="2023-12-01")
    assert result.empty and list(result.columns) == ["customer_id", *seg.RFM_COLUMNS]


def test_rfm_does_not_mutate_input():
    orders = _orders()
    before = orders.copy()
    seg.rfm(orders, as_of=AS_OF)
    pd.testing.assert_frame_equal(orders, before)


def test_rfm_missing_column_named():
    with pytest.raises(MissingColumnError, match="order_amount"):
        seg.rfm(_orders().drop(columns="order_amount"), as_of=AS_OF)


def test_rfm_custom_column_names():
    renamed = _orders().rename(columns={"customer_id": "buyer", "order_time": "t", "order_amount": "paid"})
    result = seg.rfm(renamed, as_of=AS_OF, customer_col="buyer", time_col="t", amount_col="paid")
    assert result["buyer"].tolist() == ["A", "B", "C", "D"]


@pytest.mark.parametrize("n_bins", [1, 2.5])
def test_rfm_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins"):
        seg.rfm(_orders(), as_of=AS_OF, n_bins=n_bins)


def test_quantile_scores_ties_equal_and_balanced():
    assert seg.quantile_scores([5, 1, 1, 3], n_bins=2).tolist() == [2, 1, 1, 2]
    assert seg.quantile_scores([5, 1, 1, 3], n_bins=2, higher_is_better=False).tolist() == [1, 2, 2, 1]
    scores = seg.quantile_scores(np.arange(100), n_bins=5)
    assert np.bincount(scores)[1:].tolist() == [20] * 5
    assert set(seg.quantile_scores(np.ones(10))) == {1}


@pytest.mark.parametrize(
    ("r", "f", "m", "segment"),
    [
        (5, 5, 5, "Champions"),
        (5, 1, 1, "New Customers"),
        (4, 1, 1, "Promising"),
        (4, 2, 3, "Potential Loyalist"),
        (4, 5, 4, "Loyal Customers"),
        (3, 3, 3, "Need Attention"),
        (3, 1, 2, "About To Sleep"),
        (2, 3, 4, "At Risk"),
        (1, 5, 5, "Can't Lose Them"),
        (1, 2, 1, "Lost"),
    ],
)
def test_segment_names_grid(r, f, m, segment):
    assert seg.segment_names([r], [f], [m])[0] == segment


def test_segment_grid_covers_all_ten_segments():
    assert set(seg.SEGMENT_GRID.ravel()) == set(seg.SEGMENTS) == set(seg.SEGMENT_ACTIONS)


def test_segment_names_rescale_other_bins():
    # 10 bins: score 10 -> 5, score 1 -> 1.
    assert seg.segment_names([10], [10], [10], n_bins=10)[0] == "Champions"
    assert seg.segment_names([1], [1], [1], n_bins=10)[0] == "Lost"


@pytest.mark.parametrize("n_bins", [2, 3, 4, 5, 7, 10])
def test_one_order_is_the_lowest_frequency_score_on_every_scale(n_bins):
    # most customers have one order (ties), a few many; the lowest score maps to the grid's lowest column
    frequency = np.r_[np.ones(80, dtype=int), np.arange(2, 22)]
    scores = seg.quantile_scores(frequency, n_bins=n_bins)
    assert (scores[frequency == 1] == 1).all() and scores.max() == n_bins
    assert seg._five_level(np.array([1, n_bins]), n_bins).tolist() == [1, 5]
    # a recent one-order customer with the lowest spend is a New Customer on every scale
    assert seg.segment_names([n_bins], [1], [1], n_bins=n_bins)[0] == "New Customers"


def test_one_time_buyers_are_never_potential_loyalists():
    # 40 customers: 30 recent one-time buyers spending a lot, 10 earlier repeat buyers spending little
    customers = [f"c{i:02d}" for i in range(40)]
    as_of = pd.Timestamp(AS_OF)
    rows = [(c, as_of - pd.Timedelta(days=i, hours=12), 500.0 + i) for i, c in enumerate(customers[:30])]
    rows += [(c, as_of - pd.Timedelta(days=days), 20.0) for c in customers[30:] for days in (200, 100)]
    orders = pd.DataFrame(rows, columns=["customer_id", "order_time", "order_amount"])
    result = seg.rfm(orders, as_of=AS_OF)
    one_time = result[result["frequency"] == 1]
    assert len(one_time) == 30 and (one_time["m_score"] >= 2).all(), "high spenders: fm would be 2-3"
    assert (one_time["f_score"] == 1).all()
    assert not one_time["rfm_segment"].isin(["Potential Loyalist", "Need Attention", "At Risk", "Loyal Customers", "Champions"]).any()
    assert set(one_time["rfm_segment"].astype(str)) <= {"New Customers", "Promising", "About To Sleep", "Lost"}
    # without the frequency, the same scores would name them Potential Loyalists
    by_scores = seg.segment_names(one_time["r_score"], one_time["f_score"], one_time["m_score"])
    assert (by_scores == "Potential Loyalist").any()


def test_segment_names_puts_one_time_buyers_in_the_first_column():
    names = seg.segment_names([5, 4, 3, 2, 4], [1, 1, 1, 1, 2], [5, 5, 5, 5, 3], frequency=[1, 1, 1, 1, 2])
    assert list(names) == ["New Customers", "Promising", "About To Sleep", "Lost", "Potential Loyalist"]


def test_value_tiers_by_cumulative_share_with_ties():
    frame = pd.DataFrame({"monetary": [10.0, 50.0, 30.0, 10.0, 0.0, -5.0]})
    tiers = seg.value_tiers(frame, cutoffs=(0.6, 0.9))
    assert tiers.astype(str).tolist() == ["medium", "high", "high", "medium", "low", "low"]
    default = seg.value_tiers(frame)
    assert default.astype(str).tolist() == ["low", "high", "medium", "low", "low", "low"]
    with pytest.raises(ValueError, match="cutoffs"):
        seg.value_tiers(frame, cutoffs=(0.9, 0.5))


def test_segment_summary_shares():
    scored = seg.rfm(_orders(), as_of=AS_OF)
    summary = seg.segment_summary(scored).set_index("rfm_segment")
    assert len(summary) == len(seg.SEGMENTS)
    assert summary.loc["Lost", "n_customers"] == 2
    assert summary.loc["Lost", "revenue_pct"] == pytest.approx(100 * 200 / 520)
    assert summary["customer_pct"].sum() == pytest.approx(100)
    assert summary.loc["Champions", "revenue_per_customer_amount"] == 0


def test_segment_transitions_counts_and_new_customers():
    before = pd.DataFrame({"customer_id": ["A", "B", "C"], "rfm_segment": ["Lost", "Champions", "Champions"]})
    after = pd.DataFrame({"customer_id": ["A", "B", "C", "D"], "rfm_segment": ["Lost", "At Risk", "Champions", "New Customers"]})
    table = seg.segment_transitions(before, after).set_index(["from_segment", "to_segment"])
    assert table.loc[("Champions", "At Risk"), "n_customers"] == 1
    assert table.loc[("Champions", "At Risk"), "from_pct"] == pytest.approx(50)
    assert table.loc[(seg.NO_SEGMENT, "New Customers"), "n_customers"] == 1
    assert table["n_customers"].sum() == 4


def test_age_bands():
    births = pd.Series(pd.to_datetime(["2000-01-11", "2000-01-10", "1950-05-01", None, "1800-01-01"]))
    bands = seg.age_bands(births, as_of="2025-01-10", edges=(18, 25, 35))
    assert bands.astype(str).tolist() == ["18-24", "25-34", "35+", "unknown", "unknown"]


def test_segment_mix():
    frame = pd.DataFrame(
        {"gender": ["F", "F", "M", None], "rfm_segment": ["Lost", "Champions", "Lost", "Lost"], "monetary": [10.0, 30.0, 5.0, 1.0]}
    )
    mix = seg.segment_mix(frame, by="gender").set_index(["gender", "rfm_segment"])
    assert mix.loc[("F", "Lost"), "group_pct"] == pytest.approx(50)
    assert mix.loc[("F", "Champions"), "revenue_per_customer_amount"] == pytest.approx(20)
    assert mix.loc[("unknown", "Lost"), "n_customers"] == 1
    ax = seg.plot_segment_mix(mix.reset_index(), by="gender", order=["M", "F"])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["F", "M"]  # bars drawn bottom-up
    matplotlib.pyplot.close("all")


def test_action_list_is_pseudonymous():
    scored = seg.rfm(_orders(), as_of=AS_OF)
    listed = seg.action_list(scored, pseudonymise=lambda s: "key_" + s.str.lower())
    assert set(listed["customer_key"]) == {"key_a", "key_b", "key_c", "key_d"}
    assert "customer_id" not in listed.columns
    row = listed.set_index("customer_key").loc["key_a"]
    assert row["suggested_action"] == seg.SEGMENT_ACTIONS["Need Attention"]


def test_action_list_default_uses_privacy_pseudonyms():
    privacy = pytest.importorskip("crm_analytics.privacy")
    scored = seg.rfm(_orders(), as_of=AS_OF)
    listed = seg.action_list(scored)
    assert not set(listed["customer_key"]) & set(scored["customer_id"])
    expected = privacy.pseudonymise(pd.Series(["A"], dtype="string")).iloc[0]
    assert expected in set(listed["customer_key"])


def test_action_list_reuses_keys_computed_once():
    scored = seg.rfm(_orders(), as_of=AS_OF)
    scored["customer_key"] = "key_" + scored["customer_id"].str.lower()
    listed = seg.action_list(scored, key_col="customer_key", pseudonymise=lambda s: pytest.fail("keys were hashed again"))
    assert listed.equals(seg.action_list(scored.drop(columns="customer_key"), pseudonymise=lambda s: "key_" + s.str.lower()))
    with pytest.raises(MissingColumnError):
        seg.action_list(scored, key_col="published_key")


# --------------------------------------------------------------------------- features and clusters


def _feature_inputs():
    """Two obvious groups: web electronics buyers and store food buyers."""
    rng = np.random.default_rng(0)
    orders, items = [], []
    for i in range(60):
        group = i % 2
        for j in range(3 + group):
            order_id = f"o{i}_{j}"
            orders.append((order_id, f"c{i:02d}", pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(rng.integers(0, 300))),
                           float(300 - 250 * group + rng.normal(0, 5)), 0.0 if group == 0 else 5.0, ["web", "store"][group]))
            items.append((order_id, 1, ["p1", "p2"][group], 1 + group, 300.0 - 250 * group))
    orders_df = pd.DataFrame(orders, columns=["order_id", "customer_id", "order_time", "order_amount", "discount_amount", "channel"])
    items_df = pd.DataFrame(items, columns=["order_id", "line_number", "product_id", "quantity", "unit_price_amount"])
    products = pd.DataFrame({"product_id": ["p1", "p2"], "category": ["electronics", "food"]})
    tickets = pd.DataFrame({"customer_id": ["c00", "c00", "c01"], "opened_time": pd.to_datetime(["2024-02-01", "2024-03-01", "2025-06-01"])})
    return orders_df, items_df, products, tickets


def test_customer_features_values():
    orders, items, products, tickets = _feature_inputs()
    features = seg.customer_features(orders, as_of="2024-12-31", order_items=items, products=products, support_tickets=tickets)
    assert len(features) == 60 and features["customer_id"].is_monotonic_increasing
    row = features.set_index("customer_id").loc["c01"]
    assert row["frequency"] == 4
    assert row["channel_store_pct"] == pytest.approx(100)
    assert row["category_food_pct"] == pytest.approx(100)
    assert row["items_per_order"] == pytest.approx(2)
    assert row["discounted_order_pct"] == pytest.approx(100)
    assert row["n_support_tickets"] == 0  # its ticket is after as_of
    assert features.set_index("customer_id").loc["c00", "n_support_tickets"] == 2


def test_customer_features_without_items_or_with_ticket_only_customers():
    orders, items, products, tickets = _feature_inputs()
    no_items = items[items["order_id"] != "o5_0"]  # c05 loses the lines of one order
    no_items = no_items[~no_items["order_id"].str.startswith("o7_")]  # c07 loses all of them
    features = seg.customer_features(orders, as_of="2024-12-31", order_items=no_items, products=products, support_tickets=tickets)
    by_customer = features.set_index("customer_id")
    assert by_customer.loc["c07", ["avg_unit_price_amount", "items_per_order", "category_food_pct"]].tolist() == [0.0, 0.0, 0.0]
    assert by_customer.loc["c05", "items_per_order"] == pytest.approx(2.0)  # the orders that have lines
    assert features["frequency"].dtype == "int64"
    # a ticket of someone who never bought adds no row; the counts of the others stay
    strangers = pd.concat([tickets, pd.DataFrame({"customer_id": ["zz"], "opened_time": [pd.Timestamp("2024-05-01")]})])
    widened = seg.customer_features(orders, as_of="2024-12-31", order_items=no_items, products=products, support_tickets=strangers)
    assert widened["customer_id"].tolist() == features["customer_id"].tolist()
    assert widened["n_support_tickets"].tolist() == features["n_support_tickets"].tolist()
    assert (widened["frequency"] == features["frequency"]).all() and widened["frequency"].dtype == "float64"


def test_non_merchandise_lines_are_no_category_and_no_unit_price():
    orders, items, products, _ = _feature_inputs()
    postage = items.assign(line_number=2, product_id="POST", quantity=1, unit_price_amount=18.0)
    with_postage = pd.concat([items, postage], ignore_index=True)
    catalogue = pd.concat([products, pd.DataFrame({"product_id": ["POST"], "category": ["postage"]})], ignore_index=True)
    kept = seg.customer_features(orders, as_of="2024-12-31", order_items=with_postage, products=catalogue)
    left_out = seg.customer_features(orders, as_of="2024-12-31", order_items=with_postage, products=catalogue, exclude_products=["POST"])
    plain = seg.customer_features(orders, as_of="2024-12-31", order_items=items, products=products)
    assert "category_postage_pct" in kept.columns and kept["category_postage_pct"].gt(0).all()
    assert "category_postage_pct" not in left_out.columns
    pd.testing.assert_frame_equal(left_out, plain)  # as if the postage lines were never there
    assert left_out["monetary"].equals(kept["monetary"])  # revenue is the orders' and keeps them


def test_customer_features_missing_column():
    orders, *_ = _feature_inputs()
    with pytest.raises(MissingColumnError, match="channel"):
        seg.customer_features(orders.drop(columns="channel"), as_of="2024-12-31")


def test_clusters_recover_planted_groups_and_are_reproducible():
    orders, items, products, _ = _feature_inputs()
    features = seg.customer_features(orders, as_of="2024-12-31", order_items=items, products=products)
    curve = seg.select_k(features, k_range=range(2, 6), random_state=1)
    assert curve.loc[curve["is_best"], "k"].item() == 2
    clusters = seg.fit_clusters(features, n_clusters=2, random_state=1)
    truth = pd.DataFrame({"customer_id": features["customer_id"], "true_segment": [int(c[1:]) % 2 for c in features["customer_id"]]})
    assert seg.cluster_agreement(clusters, truth)["adjusted_rand_index"].item() == pytest.approx(1.0)
    again = seg.fit_clusters(features, n_clusters=2, random_state=1)
    pd.testing.assert_frame_equal(clusters, again)
    profiles = seg.cluster_profiles(features, clusters)
    assert profiles["n_customers"].sum() == 60
    assert profiles["cluster_name"].str.contains("high|low").all()


def test_plots_return_axes():
    scored = seg.rfm(_orders(), as_of=AS_OF)
    assert seg.plot_rfm_grid(scored) is not None
    assert seg.plot_segment_sizes(seg.segment_summary(scored)) is not None
    transitions = seg.segment_transitions(scored, seg.rfm(_orders(), as_of="2024-01-12"))
    assert seg.plot_transitions(transitions, order=seg.SEGMENTS) is not None
    matplotlib.pyplot.close("all")


# --------------------------------------------------------------------------- demo ground truth


@pytest.mark.slow
def test_clusters_match_planted_segments_on_demo(demo_home):
    from crm_analytics import ground_truth, warehouse

    con = warehouse.connect()
    orders = con.table("orders")
    as_of = orders.order_time.max().to_pyarrow().as_py()
    features = seg.customer_features(
        orders,
        as_of=as_of,
        order_items=con.table("order_items"),
        products=con.table("products"),
        support_tickets=con.table("support_tickets"),
    )
    clusters = seg.fit_clusters(features, n_clusters=5, random_state=0)
    persons = ground_truth.customer_persons(con)
    truth = persons.merge(ground_truth.load_persons()[["person_id", "true_segment"]], on="person_id")
    agreement = seg.cluster_agreement(clusters, truth)
    assert agreement["n_customers"].item() > 0.5 * len(features)
    assert agreement["adjusted_rand_index"].item() >= 0.7


def test_rfm_ignores_rows_without_customer():
    orders = pd.concat([_orders(), pd.DataFrame({"order_id": ["o10"], "customer_id": [None], "order_amount": [70.0],
                                                 "order_time": [pd.Timestamp("2024-01-05")], "is_refund": [False]})])
    orders["customer_id"] = orders["customer_id"].astype("string")
    result = seg.rfm(orders, as_of=AS_OF)
    assert result["customer_id"].tolist() == ["A", "B", "C", "D"]
    assert result["monetary"].tolist() == _expected_frame()["monetary"].tolist()


# --------------------------------------------------------------------------- notebooks of this module family
# The segmentation, lifecycle and behaviour notebooks share one parametrised check here.

MY_NOTEBOOKS = {
    "segmentation": ["action_list", "segment_summary", "segment_transitions", "silhouette_curve", "cluster_profiles", "cluster_agreement"],
    "lifecycle": ["lifecycle_stages", "stage_counts", "stage_transitions", "lifecycle_action_list"],
    "behaviour": ["inter_purchase_summary", "weekday_hour", "repeat_purchase_rate", "category_pairs", "product_pairs"],
}


@pytest.mark.parametrize("analysis", sorted(MY_NOTEBOOKS))
def test_default_parameters_are_declared(analysis):
    import papermill
    import yaml

    from crm_analytics import paths

    declared = papermill.inspect_notebook(str(paths.notebooks_dir() / f"{analysis}.ipynb"))
    defaults = yaml.safe_load((paths.parameters_dir() / analysis / "default.yaml").read_text(encoding="utf-8"))
    assert {"warehouse_path", "output_dir"} <= set(declared)
    assert set(defaults) <= set(declared), set(defaults) - set(declared)


@pytest.mark.slow
@pytest.mark.parametrize("analysis", sorted(MY_NOTEBOOKS))
def test_notebook_runs_on_demo(analysis, demo_home, tmp_path):
    import papermill
    import yaml

    from crm_analytics import paths

    parameters = yaml.safe_load((paths.parameters_dir() / analysis / "default.yaml").read_text(encoding="utf-8"))
    output_dir = tmp_path / "run"
    papermill.execute_notebook(
        str(paths.notebooks_dir() / f"{analysis}.ipynb"),
        str(tmp_path / f"{analysis}.ipynb"),
        parameters=parameters | {"output_dir": str(output_dir)},
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    for table in MY_NOTEBOOKS[analysis]:
        assert (output_dir / "tables" / f"{table}.parquet").exists(), table
    assert list((output_dir / "figures").glob("*.png"))
    if analysis == "segmentation":
        listed = pd.read_parquet(output_dir / "tables" / "action_list.parquet")
        assert listed["customer_key"].str.startswith("cus_").all()
        assert not {"customer_id", "full_name", "email", "phone"} & set(listed.columns)


@pytest.mark.parametrize("dtype", ["int64", "float64"])
def test_quantile_scores_match_rank_definition(dtype):
    rng = np.random.default_rng(3)
    values = rng.integers(0, 30, 500).astype(dtype) if dtype == "int64" else np.round(rng.normal(size=500), 1)
    below = pd.Series(values).rank(method="min").to_numpy().astype(int) - 1
    assert seg.quantile_scores(values, n_bins=5).tolist() == (1 + below * 5 // 500).tolist()
    worse = pd.Series(values).rank(method="min", ascending=False).to_numpy().astype(int) - 1
    assert seg.quantile_scores(values, n_bins=4, higher_is_better=False).tolist() == (1 + worse * 4 // 500).tolist()


def test_too_little_data_for_clusters_names_the_count():
    few = pd.DataFrame({"customer_id": [f"c{i}" for i in range(12)], "frequency": 1.0})
    assert seg.too_little_data(few) == f"too little data (n = 12 customers, needs {seg.MIN_CLUSTER_CUSTOMERS})"
    enough = pd.DataFrame({"customer_id": [f"c{i}" for i in range(seg.MIN_CLUSTER_CUSTOMERS)], "frequency": 1.0})
    assert seg.too_little_data(enough) == ""


def test_segment_mix_plot_of_no_group_says_so():
    import matplotlib

    matplotlib.use("Agg")
    empty = pd.DataFrame({"city": pd.Series(dtype="object"), "rfm_segment": pd.Series(dtype="object"),
                          "group_pct": pd.Series(dtype="float64"), "group_customers": pd.Series(dtype="int64")})
    ax = seg.plot_segment_mix(empty, by="city")
    assert ax.get_legend() is None and "no group with enough customers" in ax.texts[0].get_text()


# --------------------------------------------------------------------------- rfm against a plain pandas reference


def _reference_rfm(orders: pd.DataFrame, as_of: str, n_bins: int) -> pd.DataFrame:
    """RFM as the glossary defines it, written plainly in pandas: one groupby per measure, pandas ranks."""
    stamp = pd.Timestamp(as_of)
    kept = orders[(orders["order_time"] <= stamp) & orders["customer_id"].notna()]
    purchases = kept[kept["order_amount"] >= 0].groupby("customer_id")
    frame = pd.DataFrame({"last": purchases["order_time"].max(), "frequency": purchases.size()})
    frame = frame.join(kept.groupby("customer_id")["order_amount"].sum().rename("monetary")).sort_index()
    frame["recency_days"] = (stamp - frame["last"]) // pd.Timedelta(days=1)

    def score(values: pd.Series, ascending: bool) -> pd.Series:
        below = values.rank(method="min", ascending=ascending).astype(int) - 1
        return 1 + below * n_bins // len(values)

    def five_level(scores: pd.Series) -> pd.Series:
        return 1 + ((scores - 1) * 8 + (n_bins - 1)) // (2 * (n_bins - 1))

    frame["r_score"] = score(frame["recency_days"], ascending=False)
    frame["f_score"] = score(frame["frequency"], ascending=True)
    frame["m_score"] = score(frame["monetary"], ascending=True)
    fm = five_level((frame["f_score"] + frame["m_score"] + 1) // 2).where(frame["frequency"] > 1, 1)
    frame["rfm_segment"] = seg.SEGMENT_GRID[five_level(frame["r_score"]) - 1, fm - 1]
    return frame.rename_axis("customer_id").reset_index()[["customer_id", *seg.RFM_COLUMNS]]


def _random_orders(rng: np.random.Generator, n_orders: int, n_customers: int, id_type: str) -> pd.DataFrame:
    """Orders over 60 days, many ties; amounts in quarters so sums are exact in any summation order."""
    customer = rng.integers(0, n_customers, n_orders) * 7  # a gappy range of customer numbers
    amount = rng.integers(-40, 400, n_orders) / 4
    ids = pd.Series(customer, dtype="int64") if id_type == "int" else pd.Series([f"K{c:06d}" for c in customer], dtype="string")
    ids[rng.random(n_orders) < 0.02] = None
    return pd.DataFrame({
        "customer_id": ids,
        "order_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 60 * 24, n_orders), unit="h"),
        "order_amount": amount,
    })


@settings(max_examples=30, deadline=None)
@given(seed=hs.integers(0, 2**32 - 1), n_orders=hs.integers(1, 400), n_customers=hs.integers(1, 80),
       n_bins=hs.integers(2, 7), id_type=hs.sampled_from(["int", "string"]))
def test_rfm_on_duckdb_equals_pandas_reference(seed, n_orders, n_customers, n_bins, id_type):
    orders = _random_orders(np.random.default_rng(seed), n_orders, n_customers, id_type)
    orders = orders.astype({"customer_id": "Int64"}) if id_type == "int" else orders
    con = ibis.duckdb.connect()
    table = con.create_table("orders", orders)  # a stored table: DuckDB has its statistics, as in a warehouse
    as_of = "2024-02-15"
    result = seg.rfm(table, as_of=as_of, n_bins=n_bins)
    expected = _reference_rfm(orders, as_of, n_bins)
    assert result["customer_id"].tolist() == expected["customer_id"].tolist()
    for column in ("recency_days", "frequency", "monetary", "r_score", "f_score", "m_score"):
        assert result[column].tolist() == expected[column].tolist(), column
    assert result["rfm_segment"].astype(str).tolist() == expected["rfm_segment"].tolist()


def test_rfm_groups_integer_ids_by_array_on_duckdb_and_restores_the_setting():
    orders = _random_orders(np.random.default_rng(0), 5_000, 100_000, "int").astype({"customer_id": "Int64"})
    con = ibis.duckdb.connect()
    totals = seg.rfm_totals(con.create_table("orders", orders), as_of="2024-02-15")

    def plan() -> str:
        return "\n".join(row[1] for row in con.con.execute(f"EXPLAIN {ibis.to_sql(totals)}").fetchall())

    assert "PERFECT_HASH_GROUP_BY" not in plan()  # 700,000 numbers: beyond DuckDB's default of 2**12
    with seg._duckdb_perfect_hash_groups(totals):
        assert "PERFECT_HASH_GROUP_BY" in plan()
    assert con.con.execute("SELECT current_setting('perfect_ht_threshold')").fetchone()[0] == 12
    from_pandas = seg.rfm(orders, as_of="2024-02-15")
    pd.testing.assert_frame_equal(seg.rfm(con.table("orders"), as_of="2024-02-15"), from_pandas)


def test_select_k_scores_every_k_as_silhouette_score_does():
    from sklearn.metrics import silhouette_score

    orders, items, products, _ = _feature_inputs()
    features = seg.customer_features(orders, as_of="2024-12-31", order_items=items, products=products)
    columns = seg.feature_columns(features)
    x = features[columns].to_numpy(dtype=np.float64)
    curve = seg.select_k(features, k_range=range(2, 7), random_state=3)
    for k, score in zip(curve["k"], curve["silhouette"]):
        pipeline = seg.cluster_pipeline(int(k), feature_cols=columns, random_state=3).fit(x)
        assert score == silhouette_score(pipeline[:-1].transform(x), pipeline[-1].labels_), k  # the same float, not only close


def test_items_per_order_counts_each_purchase_order_with_lines_once(tmp_path):
    import duckdb

    from crm_analytics import warehouse

    path = tmp_path / "items.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE orders (order_id VARCHAR, customer_id VARCHAR, order_time TIMESTAMP, order_amount DOUBLE, "
                    "discount_amount DOUBLE, channel VARCHAR)")
        con.execute("""INSERT INTO orders VALUES
            ('o1', 'c1', TIMESTAMP '2024-03-01', 40.0, 0.0, 'web'),    -- two lines: 1 + 3 units
            ('o2', 'c1', TIMESTAMP '2024-04-01', 20.0, 0.0, 'web'),    -- one line: 2 units
            ('o3', 'c1', TIMESTAMP '2024-05-01', -10.0, 0.0, 'web'),   -- a refund: its line is no purchase
            ('o4', 'c1', TIMESTAMP '2025-02-01', 30.0, 0.0, 'web'),    -- after as_of
            ('o5', 'c1', TIMESTAMP '2024-06-01', 15.0, 0.0, 'store'),  -- a purchase without lines
            ('o6', 'c2', TIMESTAMP '2024-06-01', 15.0, 0.0, 'store')   -- a customer without lines
            """)
        con.execute("CREATE TABLE order_items (order_id VARCHAR, line_number BIGINT, product_id VARCHAR, quantity BIGINT, unit_price_amount DOUBLE)")
        con.execute("""INSERT INTO order_items VALUES ('o1', 1, 'p1', 1, 10.0), ('o1', 2, 'p2', 3, 10.0), ('o2', 1, 'p1', 2, 10.0),
            ('o2', 2, 'p2', 0, 10.0), ('o3', 1, 'p1', 5, 2.0), ('o4', 1, 'p1', 7, 4.0)""")
        con.execute("CREATE TABLE products AS SELECT * FROM (VALUES ('p1', 'food'), ('p2', 'books')) t(product_id, category)")
    con = warehouse.connect(path)
    features = seg.customer_features(con.table("orders"), as_of="2024-12-31", order_items=con.table("order_items"),
                                     products=con.table("products")).set_index("customer_id")
    assert features.loc["c1", "frequency"] == 3
    assert features.loc["c1", "items_per_order"] == pytest.approx(6 / 2)  # o1 and o2 have lines; o3 is a refund, o4 too late, o5 empty
    assert features.loc["c1", "avg_unit_price_amount"] == pytest.approx(10.0)
    assert features.loc["c1", "category_books_pct"] == pytest.approx(100 * 30 / 60)
    assert features.loc["c2", ["items_per_order", "avg_unit_price_amount", "category_food_pct"]].tolist() == [0.0, 0.0, 0.0]


def test_money_is_the_exact_sum_on_every_run(tmp_path):
    """Net revenue is added up as decimals: ``monetary`` (and the M score on it) is the exact sum to a millionth,
    whatever order the engine's threads meet the rows in, so two runs on the same warehouse agree to the bit."""
    from decimal import Decimal

    rng = np.random.default_rng(11)
    n = 300_000
    amounts = np.round(rng.choice([0.1, 0.2, 0.3, 1e9 + 0.07, 19.99], n) * rng.choice([1, 1, 1, -1], n), 2)
    orders = pd.DataFrame({
        "order_id": np.arange(n).astype(str), "customer_id": rng.integers(0, 40, n).astype(str), "order_amount": amounts,
        "order_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 86_400 * 90, n), unit="s"),
        "discount_amount": np.round(rng.choice([0.0, 0.1, 0.3], n), 2), "channel": rng.choice(["web", "store"], n),
    })
    con = ibis.duckdb.connect(str(tmp_path / "w.duckdb"), threads=4)
    table = con.create_table("orders", orders)
    as_of = "2024-06-01"
    runs = [seg.rfm(table, as_of=as_of).set_index("customer_id")["monetary"].sort_index() for _ in range(3)]
    exact = orders.groupby("customer_id")["order_amount"].agg(lambda v: float(sum(Decimal(repr(x)) for x in v)))
    assert runs[0].to_dict() == exact.loc[runs[0].index].to_dict()
    assert all(run.equals(runs[0]) for run in runs[1:])
    features = [seg.customer_features(table, as_of=as_of).set_index("customer_id")["monetary"].sort_index() for _ in range(3)]
    assert all(run.equals(features[0]) for run in features[1:])
    assert features[0].to_dict() == exact.loc[features[0].index].to_dict()
