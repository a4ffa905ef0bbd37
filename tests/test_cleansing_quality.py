"""Quality tables: before/after profile, row accounting, quarantine counts, duplicates summary."""

from __future__ import annotations

import pandas as pd
import pytest

from crm_analytics.cleansing import pipeline, quality
from crm_analytics.frames import MissingColumnError


def test_profile_before_after_hand_checked():
    raw = pd.DataFrame({"phone": ["13800138000", "1.38E+10", None, "13900139000"], "city": ["深圳", "Atlantis", "上海", None]})
    reasons = pd.DataFrame({"phone": ["", "excel_mangled", "", ""], "city": ["", "unknown_region", "", ""]})
    clean = pd.DataFrame({"phone": ["+8613800138000", None, None, "+8613900139000"], "city": ["Shenzhen", "Atlantis", "Shanghai", None]})
    profile = quality.profile_before_after(raw, reasons, clean, source="s", table_name="customers").set_index(["column_name", "stage"])
    assert profile.loc[("phone", "before"), "completeness_pct"] == pytest.approx(75.0)
    assert profile.loc[("phone", "before"), "validity_pct"] == pytest.approx(200 / 3)
    assert profile.loc[("phone", "after"), "completeness_pct"] == pytest.approx(50.0)
    assert profile.loc[("city", "before"), "validity_pct"] == pytest.approx(200 / 3)
    assert profile.loc[("city", "after"), "validity_pct"] == pytest.approx(200 / 3)  # Atlantis stays unknown
    assert profile.loc[("city", "after"), "uniqueness_pct"] == pytest.approx(100.0)


def test_row_accounting_flags_an_imbalance():
    counts = pd.DataFrame({"source": ["a", "b"], "table_name": ["t", "t"], "rows_in": [10, 5], "rows_clean": [8, 5], "rows_quarantined": [2, 1]})
    out = quality.row_accounting(counts)
    assert out["is_balanced"].tolist() == [True, False]
    assert out["quarantined_pct"].tolist() == [20.0, 20.0]


def test_row_accounting_names_missing_columns():
    with pytest.raises(MissingColumnError, match="rows_quarantined"):
        quality.row_accounting(pd.DataFrame({"source": [], "table_name": [], "rows_in": [], "rows_clean": []}))


def test_quarantine_by_reason_and_duplicates_summary():
    quarantine = pd.DataFrame({"source": ["a", "a", "b"], "table_name": ["t"] * 3, "column_name": ["x", "x", "y"],
                               "reason": ["future_date", "future_date", "not_a_number"], "action": ["row", "row", "row"]})
    by_reason = quality.quarantine_by_reason(quarantine)
    assert by_reason.iloc[0][["reason", "n_entries"]].tolist() == ["future_date", 2]
    lineage = pd.DataFrame({"source": ["web", "store", "web"], "customer_key": ["k1", "k1", "k2"],
                            "match_rule": ["single_record", "exact_email", "single_record"]})
    total = quality.duplicates_summary(lineage).set_index("match_rule").loc["all"]
    assert (total["n_records"], total["n_customers"], total["n_records_merged"]) == (3, 2, 1)


def test_masked_quarantine_hides_personal_values():
    quarantine = pd.DataFrame({"column_name": ["phone", "email", "order_amount"], "raw_value": ["13800138000", "zhang.san@qq.com", "abc"]})
    masked = pipeline.masked_quarantine(quarantine)["raw_value"].tolist()
    assert "13800138000" not in masked and "zhang.san@qq.com" not in masked and masked[2] == "abc"
