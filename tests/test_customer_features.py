"""Tests of crm_analytics.customer_features: per-customer building blocks several analyses share."""

from __future__ import annotations

import pandas as pd
import pytest

from crm_analytics import customer_features as cf
from crm_analytics import privacy
from crm_analytics.frames import MissingColumnError

AS_OF = pd.Timestamp("2024-07-01")


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch):
    monkeypatch.setenv(privacy.KEY_ENV, "k" * 32)


def _tickets() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c2", "c3", None],
            "opened_time": pd.to_datetime(["2023-12-01", "2024-06-21", "2024-07-01", "2024-08-01", "2024-01-15", "2024-05-01"]),
            "category": ["delivery", "refund", "refund", "refund", "refund", "refund"],
            "is_escalated": [False, True, True, True, False, True],
        }
    )


def test_ticket_features_count_tickets_before_as_of():
    tickets = _tickets()
    before = tickets.copy()
    features = cf.ticket_features(tickets, as_of=AS_OF)
    # c1: 2023-12-01 (213 days before) and 2024-06-21 count; the ticket at as_of itself does not.
    # c2 opened its ticket after as_of; the ticket without a customer is nobody's.
    assert features.index.tolist() == ["c1", "c3"] and features.index.name == "customer_id"
    assert features.loc["c1"].to_dict() == {"n_tickets": 2, "n_tickets_180d": 1, "n_escalated": 1, "n_refund_tickets": 1}
    assert features.loc["c3"].to_dict() == {"n_tickets": 1, "n_tickets_180d": 1, "n_escalated": 0, "n_refund_tickets": 1}
    assert (features.dtypes == "int64").all()
    pd.testing.assert_frame_equal(tickets, before)


def test_ticket_features_can_include_the_as_of_instant():
    features = cf.ticket_features(_tickets(), as_of="2024-07-01", include_as_of=True)
    assert features.loc["c1", "n_tickets"] == 3 and features.loc["c1", "n_escalated"] == 2


def test_ticket_features_use_only_the_columns_the_table_has():
    features = cf.ticket_features(_tickets()[["customer_id", "opened_time"]], as_of=AS_OF)
    assert features.columns.tolist() == ["n_tickets", "n_tickets_180d"]
    with pytest.raises(MissingColumnError, match="opened_time"):
        cf.ticket_features(_tickets().drop(columns="opened_time"), as_of=AS_OF)


def test_ticket_features_run_in_the_engine(tmp_path):
    import ibis

    con = ibis.duckdb.connect(str(tmp_path / "w.duckdb"))
    table = con.create_table("support_tickets", _tickets())
    pd.testing.assert_frame_equal(cf.ticket_features(table, as_of=AS_OF), cf.ticket_features(_tickets(), as_of=AS_OF))


def _customers() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["c1", "c2", "c3", "c3"], "acquisition_channel": ["web", None, "store", "store"]})


def test_customer_segments_from_a_published_segmentation_table():
    published = privacy.with_customer_key(pd.DataFrame({"customer_id": ["c1", "c3"], "rfm_segment": ["Champions", "At Risk"]}))
    segments, source = cf.customer_segments(_customers(), segment_result=published)
    assert dict(zip(segments["customer_id"], segments["segment"], strict=True)) == {"c1": "Champions", "c2": "unknown", "c3": "At Risk"}
    assert "latest segmentation run" in source


def test_customer_segments_fall_back_when_no_result_or_no_key_matches():
    segments, source = cf.customer_segments(_customers())
    assert segments["segment"].tolist() == ["web", "unknown", "store"] and "acquisition_channel" in source
    foreign = pd.DataFrame({"customer_key": ["cus_0000000000000000"], "rfm_segment": ["Champions"]})
    assert cf.customer_segments(_customers(), segment_result=foreign)[0]["segment"].tolist() == ["web", "unknown", "store"]
    with pytest.raises(MissingColumnError, match="rfm_segment"):
        cf.customer_segments(_customers(), segment_result=foreign.drop(columns="rfm_segment"))


def test_old_names_stay_importable_from_kpi():
    from crm_analytics import dates, kpi

    assert kpi.customer_segments is cf.customer_segments
    assert kpi.window_end is dates.window_end


def test_ticket_counts_are_the_ticket_features_left_in_the_engine(tmp_path):
    import ibis

    con = ibis.duckdb.connect(str(tmp_path / "w.duckdb"))
    table = con.create_table("support_tickets", _tickets().rename(columns={"customer_id": "client"}))
    counts = cf.ticket_counts(table, as_of=AS_OF, customer_col="client")
    assert isinstance(counts, ibis.Table)  # not computed yet: a query joins it to other per-customer tables
    computed = counts.to_pandas().set_index("client").sort_index()
    assert computed.to_dict("index") == {
        "c1": {"n_tickets": 2, "n_tickets_180d": 1, "n_escalated": 1, "n_refund_tickets": 1},
        "c3": {"n_tickets": 1, "n_tickets_180d": 1, "n_escalated": 0, "n_refund_tickets": 1}}
    pd.testing.assert_frame_equal(computed, cf.ticket_features(table, as_of=AS_OF, customer_col="client"))
