"""NPS and CSAT on hand-made scores, churn drivers, and comment keywords without raw text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crm_analytics import satisfaction as sat
from crm_analytics.frames import MissingColumnError

T = pd.Timestamp


def _surveys():
    return pd.DataFrame(
        {
            "survey_id": [f"s{i}" for i in range(10)],
            "customer_id": ["c1", "c2", "c3", "c4", "c5", "c1", "c2", "c3", "c4", "c5"],
            "survey_time": [T("2024-01-10")] * 5 + [T("2024-02-10")] * 5,
            "nps_score": pd.array([10, 9, 8, 6, 0, 10, 7, 7, None, 3], dtype="Int64"),
            "csat_score": pd.array([5, 4, 3, 2, 1, 5, 4, 4, 3, None], dtype="Int64"),
            "comment": ["物流很快，包装很好", "great quality", None, "物流太慢了", "物流太慢, refund took forever", "love it", "", "ok", None, "slow delivery"],
            "province": ["Guangdong"] * 4 + ["Beijing"] * 6,
        }
    )


def test_nps_by_hand_with_interval():
    # Overall: 9 scores; promoters 10, 9, 10 (3); detractors 6, 0, 3 (3) -> NPS 0.
    overall = sat.nps_summary(_surveys())
    row = overall.iloc[0]
    assert row.n_responses == 9
    assert row.nps == pytest.approx(0.0)
    se = np.sqrt((3 / 9 + 3 / 9 - 0) / 9) * 100
    assert row.nps_se == pytest.approx(se)
    assert row.nps_lower == pytest.approx(-1.959964 * se, rel=1e-5)
    assert row.promoters_pct + row.passives_pct + row.detractors_pct == pytest.approx(100)


def test_nps_per_month_and_group():
    monthly = sat.nps_summary(_surveys(), grain="month")
    # Jan: 10, 9, 8, 6, 0 -> (2 - 2) / 5; Feb: 10, 7, 7, 3 -> (1 - 1) / 4
    assert list(monthly.period_start) == [T("2024-01-01"), T("2024-02-01")]
    assert list(monthly.nps) == [0.0, 0.0]
    by_province = sat.nps_summary(_surveys(), by=["province"]).set_index("province")
    # Guangdong: 10, 9, 8, 6 -> (2 - 1) / 4 = 25; Beijing: 0, 10, 7, 7, 3 -> (1 - 2) / 5 = -20
    assert by_province.nps.to_dict() == pytest.approx({"Beijing": -20.0, "Guangdong": 25.0})


def test_nps_interval_is_clipped_and_nan_for_no_responses():
    all_promoters = sat.nps_interval(5, 0, 5)
    assert all_promoters.nps.iloc[0] == 100 and all_promoters.nps_upper.iloc[0] == 100
    assert np.isnan(sat.nps_interval(0, 0, 0).nps.iloc[0])


def test_csat_share_and_wilson_interval():
    row = sat.csat_summary(_surveys()).iloc[0]
    # 9 scores, 5 of them >= 4
    assert row.n_responses == 9
    assert row.csat_pct == pytest.approx(500 / 9)
    assert row.csat_lower < row.csat_pct < row.csat_upper
    lower, upper = sat.wilson_interval(0, 10)
    assert lower[0] == pytest.approx(0.0, abs=1e-9) and 0 < upper[0] < 35


def test_attach_customers_and_segments():
    customers = pd.DataFrame({"customer_id": ["c1", "c2", "c3"], "province": ["Guangdong", None, "Beijing"], "acquisition_channel": ["social"] * 3})
    segments = pd.DataFrame({"customer_id": ["c1"], "segment": ["Champions"]})
    joined = sat.attach_customers(_surveys().drop(columns="province"), customers, segments=segments).to_pandas()
    by_id = joined.drop_duplicates("customer_id").set_index("customer_id")
    assert by_id.loc["c2", "province"] == "unknown" and by_id.loc["c4", "province"] == "unknown"
    assert by_id.loc["c1", "segment"] == "Champions" and by_id.loc["c3", "segment"] == "unknown"
    assert len(joined) == 10


def test_score_band():
    bands = sat.score_band(pd.Series([0, 6, 7, 8, 9, 10, None], dtype="Float64"))
    assert list(bands[:6]) == ["detractor", "detractor", "passive", "passive", "promoter", "promoter"]
    assert pd.isna(bands.iloc[6])


def _churn_case():
    surveys = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "c", "d", "e"],
            "survey_time": [T("2024-01-01"), T("2024-05-01"), T("2024-02-01"), T("2024-03-01"), T("2024-07-01"), T("2024-03-01")],
            "nps_score": [2, 10, 1, 9, 0, 5],
            "csat_score": [1, 5, 1, 5, 1, 2],
        }
    )
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "c", "c", "d", "d"],
            "order_time": [T("2024-01-05"), T("2024-07-01"), T("2024-02-05"), T("2024-03-05"), T("2024-06-15"), T("2024-01-01"), T("2024-06-10")],
            "is_refund": [False] * 7,
        }
    )
    return surveys, orders


def test_churn_frame_uses_latest_score_before_as_of():
    surveys, orders = _churn_case()
    frame = sat.churn_frame(surveys, orders, as_of="2024-06-01", churn_days=60).set_index("customer_id")
    # a: latest score before as_of is 10; ordered again on 07-01 -> retained.
    # b: no order after -> churned. c: retained. d: survey after as_of -> not included. e: never ordered -> not included.
    assert list(frame.index) == ["a", "b", "c"]
    assert frame.loc["a", "nps_score"] == 10
    assert frame.is_churned.to_dict() == {"a": False, "b": True, "c": False}


def test_churn_drivers_and_bands():
    rng = np.random.default_rng(0)
    nps = rng.integers(0, 11, 2000)
    churned = rng.random(2000) < np.where(nps <= 6, 0.6, 0.2)
    frame = pd.DataFrame({"nps_score": nps, "csat_score": rng.integers(1, 6, 2000), "is_churned": churned})
    drivers = sat.churn_drivers(frame).set_index("score")
    assert drivers.loc["nps_score", "auc"] > 0.65
    assert drivers.loc["nps_score", "odds_ratio_per_point"] < 1 and drivers.loc["nps_score", "p_value"] < 1e-6
    assert abs(drivers.loc["csat_score", "auc"] - 0.5) < 0.05
    assert drivers.index[0] == "nps_score"
    bands = sat.churn_by_score(frame)
    assert list(bands.group) == ["detractor", "passive", "promoter"]
    assert bands.churn_rate_pct.iloc[0] > bands.churn_rate_pct.iloc[2]


def test_tokenise_chinese_and_english():
    assert sat.tokenise("物流很快，包装很好") == ["物流", "很快", "包装", "好"]
    assert sat.tokenise("Great quality, FAST delivery!") == ["great", "quality", "fast", "delivery"]
    assert sat.tokenise(None) == [] and sat.tokenise("") == []
    assert "的" not in sat.tokenise("我的快递")
    assert sat.language("物流 ok") == "zh" and sat.language("ok") == "en"


def test_keyword_and_theme_counts_are_aggregates_only():
    tokens = sat.comment_tokens(_surveys())
    assert set(tokens.columns) == {"comment_index", "score_band", "language", "keyword"}
    keywords = sat.keyword_counts(tokens, min_comments=2)
    # "物流" appears in two detractor comments and one promoter comment.
    detractor = keywords[keywords.score_band == "detractor"].set_index("keyword")
    assert detractor.loc["物流", "n_comments"] == 2
    assert "物流" not in set(keywords[keywords.score_band == "promoter"].keyword)  # below min_comments
    comments = set(_surveys().comment.dropna())
    assert not (set(keywords.keyword) & comments)
    themes = sat.theme_counts(tokens, min_comments=1).set_index(["score_band", "theme"])
    # three detractor comments, all about delivery; one of them about a refund
    assert themes.loc[("detractor", "delivery"), "n_comments"] == 3
    assert themes.loc[("detractor", "delivery"), "share_pct"] == pytest.approx(100.0)
    assert themes.loc[("detractor", "refund"), "share_pct"] == pytest.approx(100 / 3)


def test_missing_columns_and_no_mutation():
    surveys = _surveys()
    before = surveys.copy()
    sat.nps_summary(surveys, by=["province"])
    sat.comment_tokens(surveys)
    pd.testing.assert_frame_equal(surveys, before)
    with pytest.raises(MissingColumnError, match="nps_score"):
        sat.nps_summary(surveys.drop(columns="nps_score"))
    with pytest.raises(MissingColumnError, match="comment"):
        sat.comment_tokens(surveys.drop(columns="comment"))


def test_plots_return_axes():
    import matplotlib

    matplotlib.use("Agg")
    monthly = sat.nps_summary(_surveys(), grain="month")
    assert sat.plot_nps_trend(monthly).get_title(loc="left")
    by = sat.csat_summary(_surveys(), by=["province"])
    assert sat.plot_score_by_group(by, by="province").get_title(loc="left") == "csat_pct by province"
    themes = sat.theme_counts(sat.comment_tokens(_surveys()), min_comments=1)
    assert sat.plot_theme_heatmap(themes).get_title(loc="left")


def test_portuguese_comments_keep_their_accents_and_find_themes():
    assert sat.tokenise("Ótimo atendimento, recomendo! Preço alto, devolução demorada") == [
        "ótimo", "atendimento", "recomendo", "preço", "alto", "devolução", "demorada"]
    surveys = pd.DataFrame({"comment": ["A entrega atrasou e o produto chegou quebrado"] * 5 + ["Ótimo atendimento, recomendo"] * 5,
                            "nps_score": [2] * 5 + [10] * 5})
    tokens = sat.comment_tokens(surveys, latin_language="pt")
    assert set(tokens["language"]) == {"pt"}
    themes = sat.theme_counts(tokens, min_comments=5).set_index(["score_band", "theme"])["n_comments"].to_dict()
    assert themes == {("detractor", "delivery"): 5, ("detractor", "quality"): 5, ("promoter", "loyalty"): 5, ("promoter", "service"): 5}


def test_no_comments_or_no_theme_give_empty_tables_and_an_empty_state():
    import matplotlib

    matplotlib.use("Agg")
    silent = pd.DataFrame({"comment": [None, "  ", None], "nps_score": [3, 9, 10]})
    tokens = sat.comment_tokens(silent)
    assert tokens.empty and sat.keyword_counts(tokens).empty
    themes = sat.theme_counts(tokens)
    assert themes.empty and sat.no_themes_message(tokens) == "no comment to read (n comments = 0)"
    ax = sat.plot_theme_heatmap(themes, empty_message=sat.no_themes_message(tokens))
    assert ax.texts[0].get_text() == "no comment to read (n comments = 0)"
    off_topic = sat.comment_tokens(pd.DataFrame({"comment": ["bonjour tout le monde"] * 3, "nps_score": [9] * 3}))
    assert sat.theme_counts(off_topic, min_comments=1).empty
    assert sat.no_themes_message(off_topic, min_comments=1) == "no theme is mentioned in 1 comments or more (n comments = 3)"
    matplotlib.pyplot.close("all")


def test_plots_of_empty_summaries_draw_an_empty_state():
    import matplotlib

    matplotlib.use("Agg")
    no_scores = _surveys().assign(nps_score=np.nan, csat_score=np.nan)
    assert "no NPS score" in sat.plot_nps_trend(sat.nps_summary(no_scores, grain="month")).texts[0].get_text()
    assert "no group" in sat.plot_score_by_group(sat.csat_summary(no_scores, by=["province"]), by="province").texts[0].get_text()
    frame = pd.DataFrame({"nps_score": pd.Series([], dtype=float), "is_churned": pd.Series([], dtype=bool)})
    assert "no surveyed customer" in sat.plot_churn_by_band(sat.churn_by_score(frame)).texts[0].get_text()
    matplotlib.pyplot.close("all")


@pytest.mark.slow
def test_detractors_churn_more_on_demo_data(demo_home):
    from crm_analytics import warehouse

    con = warehouse.connect()
    from crm_analytics.dates import window_end

    orders = con.table("orders")
    frame = sat.churn_frame(con.table("surveys"), orders, as_of=window_end(orders) - pd.Timedelta(days=180), churn_days=180)
    drivers = sat.churn_drivers(frame).set_index("score")
    assert drivers.loc["nps_score", "auc"] > 0.55
    bands = sat.churn_by_score(frame).set_index("group")
    assert bands.loc["detractor", "churn_rate_pct"] > bands.loc["promoter", "churn_rate_pct"]


@pytest.mark.slow
def test_notebook_runs_and_persists_no_raw_comments(demo_home, tmp_path):
    import papermill as pm
    import yaml

    from crm_analytics import paths, warehouse

    params = yaml.safe_load((paths.parameters_dir() / "satisfaction" / "default.yaml").read_text(encoding="utf-8"))
    out = tmp_path / "satisfaction.ipynb"
    pm.execute_notebook(str(paths.notebooks_dir() / "satisfaction.ipynb"), str(out), parameters={**params, "output_dir": str(tmp_path)}, kernel_name="python3")
    comments = warehouse.connect().table("surveys").comment.to_pandas().dropna()
    long_comments = {c for c in comments.unique() if len(c) > 12}  # several words: never a single keyword
    published = out.read_text(encoding="utf-8") + "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "tables").glob("*.csv"))
    assert not [c for c in long_comments if c in published]
    assert len(pd.read_parquet(tmp_path / "tables" / "nps_trend.parquet")) > 3
