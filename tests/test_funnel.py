"""Event funnel semantics on hand-made event logs, and a cross-check against hand-written DuckDB SQL."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb
import ibis
import numpy as np
import pandas as pd
import pytest

from crm_analytics import frames
from crm_analytics.funnel import compare_groups, funnel, journeys, reached_times, session_funnel, time_to_convert

STEPS = ["visit", "view", "buy"]
T0 = pd.Timestamp("2024-03-01 10:00")


def log(rows) -> pd.DataFrame:
    """rows: (user, minutes after T0, event[, platform])."""
    df = pd.DataFrame(rows, columns=["customer_id", "minutes", "event_name", "platform"][: len(rows[0])])
    df["event_time"] = T0 + pd.to_timedelta(df.pop("minutes"), unit="min")
    return df


def users(result: pd.DataFrame) -> list[int]:
    return result["users"].tolist()


def test_basic_counts_rates_and_times():
    events = log([
        ("a", 0, "visit"), ("a", 10, "view"), ("a", 30, "buy"),
        ("b", 0, "visit"), ("b", 20, "view"),
        ("c", 0, "visit"),
    ])
    result = funnel(events, STEPS)
    assert result["step"].tolist() == STEPS
    assert users(result) == [3, 2, 1]
    assert result["conversion_from_first_pct"].round(6).tolist() == [100.0, round(200 / 3, 6), round(100 / 3, 6)]
    assert result["conversion_from_previous_pct"].tolist() == [100.0, pytest.approx(200 / 3), 50.0]
    assert result["drop_off"].tolist() == [0, 1, 1]
    assert np.isnan(result.loc[0, "median_minutes_from_previous"])
    assert result.loc[1, "median_minutes_from_previous"] == pytest.approx(15.0)  # 10 and 20 minutes
    assert result.loc[1, "p90_minutes_from_previous"] == pytest.approx(19.0)  # linear interpolation
    assert result.loc[2, "median_minutes_from_previous"] == pytest.approx(20.0)


def test_out_of_order_events_do_not_count():
    events = log([("a", 0, "view"), ("a", 5, "visit"), ("a", 6, "buy"), ("b", 0, "visit"), ("b", 1, "buy"), ("b", 2, "view")])
    assert users(funnel(events, STEPS)) == [2, 1, 0]
    assert users(funnel(events, STEPS, mode="any_order")) == [2, 2, 2]


def test_repeated_events_use_the_earliest_qualifying_one():
    events = log([
        ("a", 0, "visit"), ("a", 50, "visit"), ("a", 5, "view"), ("a", 60, "view"), ("a", 70, "buy"), ("a", 80, "buy"),
    ])
    result = funnel(events, STEPS)
    assert users(result) == [1, 1, 1]
    assert result["median_minutes_from_previous"].tolist()[1:] == [5.0, 65.0]


def test_step_one_anchor_is_the_first_step_one_event():
    # A later visit would fit the window, but the funnel is anchored at the first visit.
    events = log([("a", 0, "visit"), ("a", 100, "visit"), ("a", 110, "view")])
    assert users(funnel(events, ["visit", "view"], window="60min")) == [1, 0]
    assert users(funnel(events, ["visit", "view"], window="110min")) == [1, 1]


def test_window_edges_are_inclusive():
    events = log([("a", 0, "visit"), ("a", 30, "view"), ("a", 60, "buy")])
    assert users(funnel(events, STEPS, window=pd.Timedelta(minutes=60))) == [1, 1, 1]
    assert users(funnel(events, STEPS, window="59min")) == [1, 1, 0]
    just_over = events.copy()
    just_over.loc[2, "event_time"] += pd.Timedelta(microseconds=1)
    assert users(funnel(just_over, STEPS, window="60min")) == [1, 1, 0]


def test_ties_in_time_count_as_in_order():
    events = log([("a", 0, "visit"), ("a", 0, "view"), ("a", 0, "buy")])
    result = funnel(events, STEPS)
    assert users(result) == [1, 1, 1]
    assert result["median_minutes_from_previous"].tolist()[1:] == [0.0, 0.0]


def test_any_order_with_window():
    events = log([("a", 10, "visit"), ("a", 0, "view"), ("a", 20, "buy"), ("b", 0, "visit"), ("b", 30, "buy"), ("b", 40, "view")])
    result = funnel(events, STEPS, mode="any_order", window="35min")
    # a's view is before its first visit (outside [t1, t1 + window]); b's view is 40 minutes after.
    assert users(result) == [2, 0, 0]
    assert users(funnel(events, ["visit", "buy"], mode="any_order", window="35min")) == [2, 2]
    assert result["median_minutes_from_previous"].isna().all()


def test_breakdown_takes_the_group_of_the_first_step_one_event():
    events = log([
        ("a", 0, "visit", "app"), ("a", 5, "visit", "web"), ("a", 6, "view", "web"),
        ("b", 0, "visit", "web"),
        ("c", 0, "visit", "web"), ("c", 1, "view", "web"), ("c", 2, "buy", "web"),
    ])
    result = funnel(events, STEPS, by="platform")
    assert result["platform"].tolist() == ["app"] * 3 + ["web"] * 3
    assert users(result) == [1, 1, 0, 2, 1, 1]  # zero rows are filled in
    assert result.loc[result["platform"] == "web", "conversion_from_first_pct"].tolist() == [100.0, 50.0, 50.0]


@pytest.mark.parametrize("order", [1, -1])
@pytest.mark.parametrize("by", [["platform"], ["platform", "region"]])
def test_a_tie_between_first_step_one_events_goes_to_the_smallest_group(order, by):
    # two visits at the same minute on two platforms: whichever row comes first, the user counts once, in "app"
    rows = [("a", 0, "visit", "web", "north"), ("a", 0, "visit", "app", None), ("a", 1, "view", "web", "north"),
            ("b", 0, "visit", "web", "south")][::order]
    events = pd.DataFrame(rows, columns=["customer_id", "minutes", "event_name", "platform", "region"])
    events["event_time"] = T0 + pd.to_timedelta(events.pop("minutes"), unit="min")
    first_step = funnel(events, ["visit", "view"], by=by).query("step_number == 1 and users > 0")
    assert first_step["platform"].tolist() == ["app", "web"] and users(first_step) == [1, 1]


def test_per_session_funnel_counts_sessions():
    events = log([("a", 0, "visit"), ("a", 5, "view"), ("a", 60, "visit")])
    events["session_id"] = ["s1", "s2", "s2"]
    assert users(session_funnel(events, ["visit", "view"])) == [2, 0]
    assert users(funnel(events, ["visit", "view"])) == [1, 1]


def test_unknown_step_lists_existing_events():
    events = log([("a", 0, "visit"), ("a", 1, "view")])
    with pytest.raises(ValueError, match=r"unknown funnel step\(s\) \['cart'\].*\['view', 'visit'\]"):
        funnel(events, ["visit", "cart"])


def test_known_step_nobody_reached_is_zero_not_an_error():
    events = log([("a", 0, "buy"), ("a", 1, "visit"), ("b", 0, "view")])
    assert users(funnel(events, STEPS)) == [1, 0, 0]


@pytest.mark.parametrize(("steps", "mode", "message"), [([], "ordered", "at least one"), (["visit", "visit"], "ordered", "repeated"), (STEPS, "sideways", "mode")])
def test_bad_arguments(steps, mode, message):
    with pytest.raises(ValueError, match=message):
        funnel(log([("a", 0, "visit")]), steps, mode=mode)


def test_missing_column_is_named():
    events = log([("a", 0, "visit")]).drop(columns="event_time")
    with pytest.raises(frames.MissingColumnError, match="event_time"):
        funnel(events, STEPS)


def test_custom_column_names_and_ibis_input_and_no_mutation():
    events = log([("a", 0, "visit"), ("a", 1, "view"), ("b", 0, "visit")])
    renamed = events.rename(columns={"customer_id": "uid", "event_time": "ts", "event_name": "what"})
    before = renamed.copy()
    from_pandas = funnel(renamed, ["visit", "view"], user_col="uid", time_col="ts", event_col="what")
    from_ibis = funnel(ibis.memtable(renamed), ["visit", "view"], user_col="uid", time_col="ts", event_col="what")
    pd.testing.assert_frame_equal(from_pandas, from_ibis)
    pd.testing.assert_frame_equal(renamed, before)
    assert users(from_pandas) == [2, 1]


def test_reached_times_and_time_to_convert():
    events = log([("a", 0, "visit"), ("a", 10, "view"), ("a", 40, "buy"), ("b", 0, "visit")])
    reached = reached_times(events, STEPS)
    assert reached.groupby("customer_id").size().to_dict() == {"a": 3, "b": 1}
    converted = time_to_convert(events, STEPS)
    assert converted["customer_id"].tolist() == ["a"]
    assert converted["minutes_to_convert"].tolist() == [40.0]


def test_compare_groups_chi_square_by_hand():
    rows = [(f"w{i}", 0, "visit", "web") for i in range(100)] + [(f"a{i}", 0, "visit", "app") for i in range(100)]
    rows += [(f"w{i}", 1, "view", "web") for i in range(60)] + [(f"a{i}", 1, "view", "app") for i in range(40)]
    result = funnel(log(rows), ["visit", "view"], by="platform")
    test = compare_groups(result, by="platform")
    # 2x2 table [[40, 60], [60, 40]]: expected 50 everywhere, chi2 = 4 * 100 / 50 = 8.
    assert test["chi2"].iloc[0] == pytest.approx(8.0)
    assert test["dof"].iloc[0] == 1
    assert test["p_value"].iloc[0] == pytest.approx(0.004677734981047266)


def _hand_sql():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_funnel.py"
    spec = importlib.util.spec_from_file_location("bench_funnel", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_hand_written_sql_on_random_logs(seed):
    bench = _hand_sql()
    rng = np.random.default_rng(seed)
    n = 3000
    events = pd.DataFrame({
        "customer_id": rng.integers(0, 150, n).astype(str),
        # coarse times so that ties happen often
        "event_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 500, n) * 60, unit="s"),
        "event_name": rng.choice(bench.STEPS, n, p=[0.3, 0.3, 0.2, 0.1, 0.1]),
    })
    ours = funnel(events, bench.STEPS)
    con = duckdb.connect()
    con.register("web_events", events)
    theirs = con.execute(bench.HAND_SQL).df()
    assert ours["users"].tolist() == theirs["users"].astype(int).tolist()
    np.testing.assert_allclose(ours["median_minutes_from_previous"].to_numpy(), theirs["median_seconds"].to_numpy(float) / 60, equal_nan=True)
    np.testing.assert_allclose(ours["p90_minutes_from_previous"].to_numpy(), theirs["p90_seconds"].to_numpy(float) / 60, equal_nan=True)
    assert users(bench.pandas_funnel(events, bench.STEPS)) == ours["users"].tolist()


@pytest.mark.parametrize(("window", "mode"), [(None, "ordered"), ("90min", "ordered"), ("90min", "any_order")])
def test_journeys_summarise_like_separate_funnels(window, mode):
    rng = np.random.default_rng(5)
    n = 4000
    events = pd.DataFrame({
        "customer_id": rng.integers(0, 300, n).astype(str),
        "event_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 600, n), unit="min"),
        "event_name": rng.choice(STEPS, n, p=[0.5, 0.3, 0.2]),
        "platform": rng.choice(["app", "web"], n),
        "channel": rng.choice(["ads", "email", "seo"], n),
    })
    options = dict(window=window, mode=mode)
    once = journeys(ibis.memtable(events), STEPS, by=["platform", "channel"], **options)
    pd.testing.assert_frame_equal(once.funnel(), funnel(events, STEPS, **options))
    for column in ("platform", "channel"):
        pd.testing.assert_frame_equal(once.funnel(by=column), funnel(events, STEPS, by=column, **options))
    pd.testing.assert_frame_equal(once.time_to_convert(by="channel"), time_to_convert(events, STEPS, by="channel", **options))
    with pytest.raises(ValueError, match=r"\['region'\] were not computed"):
        once.funnel(by="region")


@pytest.mark.slow
def test_demo_web_funnel_is_monotone(demo_home):
    from crm_analytics import warehouse

    result = funnel(warehouse.connect().table("web_events"), ["visit", "product_view", "add_to_cart", "checkout", "purchase"], by="platform")
    assert (result.groupby("platform")["users"].diff().dropna() <= 0).all()
    assert result["users"].iloc[0] > 0
