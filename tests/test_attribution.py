"""Journeys, heuristic attribution, the Markov removal effect (hand-computed) and the demo's planted channel effects."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crm_analytics import frames
from crm_analytics.attribution import (
    baseline_conversion_rate,
    build_touch_journeys,
    channel_economics,
    channel_mix,
    compare_models,
    heuristic_attribution,
    journey_paths,
    markov_attribution,
    path_counts,
    top_paths,
)

D0 = pd.Timestamp("2024-05-01")


def day(n: float) -> pd.Timestamp:
    return D0 + pd.Timedelta(days=n)


@pytest.fixture
def touchpoints() -> pd.DataFrame:
    return pd.DataFrame(
        [
            ("c1", "email", day(0)), ("c1", "wechat", day(2)), ("c1", "sms", day(4)),  # converts day 5
            ("c1", "social", day(40)),  # second journey (gap > 14 days), no order
            ("c2", "sms", day(0)),  # order 10 days later: outside the 3-day window
            ("c3", "wechat", day(1)), ("c3", "email", day(1.5)),  # converts day 1.5 (order at the last touch)
        ],
        columns=["customer_id", "channel", "touch_time"],
    )


@pytest.fixture
def orders() -> pd.DataFrame:
    return pd.DataFrame(
        [("c1", day(5), 100.0), ("c1", day(6), 50.0), ("c2", day(10), 80.0), ("c3", day(1.5), 30.0), ("c3", day(1.6), -30.0)],
        columns=["customer_id", "order_time", "order_amount"],
    )


def test_journeys_split_on_gaps_and_convert_within_the_window(touchpoints, orders):
    before = touchpoints.copy()
    touches = build_touch_journeys(touchpoints, orders)
    pd.testing.assert_frame_equal(touchpoints, before)
    paths = journey_paths(touches).set_index("journey_id")
    assert paths["path"].to_dict() == {"c1#1": "email > wechat > sms", "c1#2": "social", "c2#1": "sms", "c3#1": "wechat > email"}
    assert paths["is_converted"].to_dict() == {"c1#1": True, "c1#2": False, "c2#1": False, "c3#1": True}
    assert paths.loc["c1#1", "conversion_amount"] == 100.0  # the first order in the window
    assert touches.loc[touches["journey_id"] == "c1#1", "position"].tolist() == [0, 1, 2]
    assert set(touches["n_touches"]) == {1, 2, 3}


def test_longer_window_catches_the_late_order(touchpoints, orders):
    paths = journey_paths(build_touch_journeys(touchpoints, orders, conversion_window_days=10)).set_index("journey_id")
    assert paths.loc["c2#1", "is_converted"]


def test_heuristic_models_by_hand(touchpoints, orders):
    result = heuristic_attribution(build_touch_journeys(touchpoints, orders), half_life_days=1.0)
    share = result.pivot(index="channel", columns="model", values="conversions").fillna(0)
    # journey 1: email > wechat > sms ; journey 2: wechat > email. Two conversions in all.
    assert share["first_touch"].to_dict() == {"email": 1.0, "sms": 0.0, "wechat": 1.0}
    assert share["last_touch"].to_dict() == {"email": 1.0, "sms": 1.0, "wechat": 0.0}
    assert share["linear"].to_dict() == pytest.approx({"email": 1 / 3 + 1 / 2, "sms": 1 / 3, "wechat": 1 / 3 + 1 / 2})
    assert share["position_based"].to_dict() == pytest.approx({"email": 0.4 + 0.5, "sms": 0.4, "wechat": 0.2 + 0.5})
    # time decay, half-life 1 day: journey 1 ages 5, 3, 1 days -> weights 1/32, 1/8, 1/2; journey 2 ages 0.5, 0.
    w1 = np.array([1 / 32, 1 / 8, 1 / 2]) / (1 / 32 + 1 / 8 + 1 / 2)
    w2 = np.array([2**-0.5, 1.0]) / (2**-0.5 + 1)
    assert share["time_decay"].to_dict() == pytest.approx({"email": w1[0] + w2[1], "wechat": w1[1] + w2[0], "sms": w1[2]})
    for model, part in result.groupby("model"):
        assert part["conversions"].sum() == pytest.approx(2.0), model
        assert part["share_pct"].sum() == pytest.approx(100.0)
    linear = result.loc[result["model"] == "linear"].set_index("channel")["revenue_amount"]
    assert linear["sms"] == pytest.approx(100 / 3)


def hand_paths() -> pd.DataFrame:
    """A > B converts once, A alone fails once, B alone converts once."""
    return pd.DataFrame({"path": [("A", "B"), ("A",), ("B",)], "n_conversions": [1, 0, 1], "n_null": [0, 1, 0], "revenue_amount": [10.0, 0.0, 20.0]})


def test_markov_removal_effect_by_hand():
    # Transitions: start->A 2/3, start->B 1/3; A->B 1/2, A->null 1/2; B->conversion 1.
    # P(conversion) = 2/3 * 1/2 + 1/3 = 2/3.
    # Without A: 1/3 -> removal effect 1 - (1/3)/(2/3) = 1/2. Without B: 0 -> removal effect 1.
    result = markov_attribution(hand_paths(), n_boot=50, random_state=1).set_index("channel")
    assert result.loc["A", "removal_effect"] == pytest.approx(0.5)
    assert result.loc["B", "removal_effect"] == pytest.approx(1.0)
    assert result.loc["A", "conversions"] == pytest.approx(2 / 3)
    assert result.loc["B", "conversions"] == pytest.approx(4 / 3)
    assert result.loc["B", "revenue_amount"] == pytest.approx(20.0)
    assert result["rank"].to_dict() == {"B": 1, "A": 2}
    assert (result["share_low_pct"] <= result["share_pct"] + 1e-9).all()
    assert (result["share_high_pct"] >= result["share_pct"] - 1e-9).all()


def test_markov_baseline_rate_by_hand():
    # Removing A with an organic rate of 0.3: start->A (2/3) converts with 0.3; start->B (1/3) converts.
    # P = 2/3 * 0.3 + 1/3 = 0.5333 -> removal effect 1 - 0.5333 / (2/3) = 0.2.
    result = markov_attribution(hand_paths(), baseline_rate=0.3, n_boot=0).set_index("channel")
    assert result.loc["A", "removal_effect"] == pytest.approx(0.2)
    # Removing B: start->B (1/3) converts with 0.3, and A->B (2/3 * 1/2) too: P = 0.1 + 0.1 = 0.2 -> 0.7.
    assert result.loc["B", "removal_effect"] == pytest.approx(0.7)


def test_path_counts_and_top_paths(touchpoints, orders):
    touches = build_touch_journeys(touchpoints, orders)
    counts = {row.path: (row.n_conversions, row.n_null) for row in path_counts(touches).itertuples()}
    assert counts[("email", "wechat", "sms")] == (1, 0)
    assert counts[("sms",)] == (0, 1)
    top = top_paths(journey_paths(touches), n=5)
    assert set(top["outcome"]) == {"converted", "not converted"}
    assert top.groupby("outcome")["share_pct"].sum().to_dict() == pytest.approx({"converted": 100.0, "not converted": 100.0})


def test_channel_mix(touchpoints):
    mix = channel_mix(touchpoints).set_index("customer_id")
    assert mix.loc["c1", "n_touches"] == 4
    assert mix.loc["c1", "n_channels"] == 4
    assert mix.loc["c3", "wechat"] == 1


def test_compare_models_and_economics(touchpoints, orders):
    comparison = compare_models(build_touch_journeys(touchpoints, orders), n_boot=20)
    assert set(comparison["model"]) == {"first_touch", "last_touch", "linear", "time_decay", "position_based", "markov"}
    campaigns = pd.DataFrame({"channel": ["email", "email", "wechat", "sms"], "spend_amount": [10.0, 20.0, 50.0, 5.0]})
    economics = channel_economics(comparison, campaigns).set_index(["model", "channel"])
    assert economics.loc[("first_touch", "email"), "spend_amount"] == 30.0
    assert economics.loc[("first_touch", "email"), "cac_amount"] == pytest.approx(30.0)
    assert economics.loc[("first_touch", "wechat"), "roi_pct"] == pytest.approx(100 * (30 - 50) / 50)
    assert np.isnan(economics.loc[("first_touch", "sms"), "cac_amount"])  # no credited conversion


def test_baseline_rate_from_placebo_windows(touchpoints, orders):
    touches = build_touch_journeys(touchpoints, orders)
    extra = pd.concat([orders, pd.DataFrame({"customer_id": ["c1"], "order_time": [day(-1)], "order_amount": [5.0]})])
    assert baseline_conversion_rate(touches, orders) == 0.0
    assert baseline_conversion_rate(touches, extra) == pytest.approx(1 / 4)


def test_missing_columns_are_named(touchpoints, orders):
    with pytest.raises(frames.MissingColumnError, match="touch_time"):
        build_touch_journeys(touchpoints.drop(columns="touch_time"), orders)
    with pytest.raises(frames.MissingColumnError, match="n_null"):
        markov_attribution(hand_paths().drop(columns="n_null"))


@pytest.mark.slow
def test_markov_ranks_the_strongest_planted_channel_first(demo_home):
    from crm_analytics import paths, warehouse

    truth = json.loads((paths.ground_truth_dir() / "channel_effects.json").read_text())
    con = warehouse.connect()
    touches = build_touch_journeys(con.table("touchpoints"), con.table("orders"))
    baseline = baseline_conversion_rate(touches, con.table("orders"))
    result = markov_attribution(path_counts(touches), baseline_rate=baseline, n_boot=0)
    assert result["channel"].iloc[0] == truth["ranking"][0]
