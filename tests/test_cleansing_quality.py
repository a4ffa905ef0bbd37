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


def _profile(rows: list[tuple]) -> pd.DataFrame:
    columns = ["source", "table_name", "column_name", "stage", "n_rows", "completeness_pct", "validity_pct", "uniqueness_pct"]
    return pd.DataFrame([(*row, 100.0) for row in rows], columns=columns)


def test_column_notes_name_empty_and_unreadable_mapped_columns():
    profile = _profile([
        ("shop", "orders", "order_time", "before", 3, 100.0, 0.0),  # a date format that matches nothing
        ("shop", "orders", "discount_amount", "before", 3, 0.0, 0.0),  # arrived empty
        ("shop", "orders", "channel", "before", 3, 100.0, 100.0),  # a constant
        ("shop", "orders", "order_amount", "before", 3, 100.0, 33.3),  # partly readable: dirty data, quarantined row by row
        ("shop", "orders", "order_amount", "after", 2, 100.0, 0.0),
        ("crm", "customers", "email", "before", 2, 100.0, 0.0),  # a column of phone numbers mapped as email
        ("crm", "customers", "city", "before", 2, 100.0, 0.0),  # regions off the list: reported elsewhere, not unreadable
        ("none", "orders", "order_time", "before", 0, 0.0, 0.0),  # no rows: nothing to say here
    ])
    source_map = {"shop": {"columns": {"order_time": "Data", "discount_amount": "Desconto"}, "date_formats": ["%d/%m/%Y"],
                           "constants": {"channel": "web"}},
                  "crm": {"columns": {"email": "mobile"}}}
    quarantine = pd.DataFrame({"source": ["shop"], "column_name": ["order_time"], "raw_value": ["2024-02-13"]})
    notes = quality.column_notes(profile, source_map, quarantine=quarantine)
    assert notes[["source", "column_name", "source_column", "problem", "is_required"]].values.tolist() == [
        ["shop", "order_time", "Data", "unreadable", True],
        ["shop", "discount_amount", "Desconto", "empty", False],
        ["crm", "email", "mobile", "unreadable", False],
    ]
    first, second, third = notes["message"]
    assert first == ("column 'Data' of source 'shop' (for 'order_time') has values in its rows but not one is readable "
                     "(e.g. '2024-02-13'): none matches the source's key `date_formats` ['%d/%m/%Y']; correct it")
    assert second.startswith("column 'Desconto' of source 'shop' (for 'discount_amount') is empty in all 3 rows")
    assert "none is a valid e-mail address" in third


def test_no_column_notes_for_a_healthy_profile():
    notes = quality.column_notes(_profile([("shop", "orders", "order_time", "before", 3, 90.0, 100.0)]), {"shop": {}})
    assert notes.empty and list(notes.columns) == quality.COLUMN_NOTE_COLUMNS


def test_the_quarantine_share_message_names_each_sources_main_reason():
    counts = quality.row_accounting(pd.DataFrame({"source": ["shop", "crm"], "table_name": ["orders", "customers"], "rows_in": [10, 10],
                                                  "rows_clean": [4, 10], "rows_quarantined": [6, 0]}))
    by_reason = pd.DataFrame({"source": ["shop", "shop", "shop"], "table_name": "orders", "column_name": ["order_time", "order_amount", "phone"],
                              "reason": ["unparsed_date", "not_a_number", "excel_mangled"], "action": ["row", "row", "value"],
                              "n_entries": [5, 1, 9]})
    message = pipeline._quarantine_share_check(counts, 0.05, by_reason)
    assert message == ("quarantined share above 5.0% in: shop 60.0% (mostly unparsed_date in order_time: 5 rows; "
                       "check the source's `date_formats`)")
    assert pipeline._quarantine_share_check(counts, 0.05) == "quarantined share above 5.0% in: shop 60.0%"
