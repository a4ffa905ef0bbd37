"""Tables for people: values in their units, headers in words, no bare index, long tables cut with a note."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from crm_analytics import tables


def segment_table() -> pd.DataFrame:
    return pd.DataFrame({
        "rfm_segment": ["Champions", "Lost"],
        "n_customers": [14558, 3],
        "customer_pct": [60.34171830204383, 39.65828169795617],
        "revenue_amount": [71754482.5, 12.5],
        "churn_rate": [0.6034171830204383, 0.1],
    })


def test_money_in_gbp_with_en_gb_separators_and_symbol():
    shown = tables.format_table(segment_table(), currency="GBP", locale="en_GB")
    assert shown["Revenue (GBP)"].tolist() == ["£71,754,482", "£12.50"]
    assert shown["Customers"].tolist() == ["14,558", "3"]


def test_money_in_brl_with_pt_br_separators_and_symbol():
    shown = tables.format_table(segment_table(), currency="BRL", locale="pt_BR")
    assert shown["Revenue (BRL)"].iloc[0].replace("\xa0", " ") == "R$ 71.754.482"
    assert shown["Customers"].iloc[0] == "14.558"
    assert shown["Customer %"].iloc[0] == "60,3%"


def test_a_share_is_a_percentage_with_one_decimal():
    assert tables.format_value(0.6034171830204383, "share") == "60.3%"
    shown = tables.format_table(segment_table())
    assert shown["Churn rate"].tolist() == ["60.3%", "10.0%"]
    assert shown["Customer %"].tolist() == ["60.3%", "39.7%"]


@pytest.mark.parametrize(("column", "unit"), [
    ("net_revenue_amount", "money"), ("monetary", "money"), ("revenue_pct", "percent"), ("hit_rate", "share"),
    ("n_orders", "count"), ("recency_days", "days"), ("cohort_date", "date"), ("p_value", "p_value"),
    ("median_minutes_from_previous", "minutes"), ("step_number", "integer"), ("silhouette", "number"),
])
def test_units_follow_the_column_name_conventions(column, unit):
    assert tables.infer_unit(column, "float64") == unit or (unit == "date" and tables.infer_unit(column, "datetime64[ns]") == "date")


def test_explicit_units_win_and_unknown_units_are_refused():
    frame = pd.DataFrame({"value": [1234.5]})
    assert tables.format_table(frame, units={"value": "money"}, currency="GBP")["Value (GBP)"].iloc[0] == "£1,234"
    with pytest.raises(ValueError, match="unit 'euros' of column 'value'"):
        tables.format_table(frame, units={"value": "euros"})


def test_dates_durations_and_booleans_for_people():
    frame = pd.DataFrame({
        "cohort_date": pd.to_datetime(["2024-03-01", "2024-04-01"]),
        "first_time": pd.to_datetime(["2024-03-01 14:05:09", "2024-04-01 00:00:00"]),
        "recency_days": [1.0, 12.46],
        "is_best": [True, False],
    })
    shown = tables.format_table(frame)
    assert shown["Cohort date"].tolist() == ["2024-03-01", "2024-04-01"]
    assert shown["First time"].tolist() == ["2024-03-01 14:05", "2024-04-01 00:00"]
    assert shown["Recency"].tolist() == ["1 day", "12.5 days"]
    assert shown["Is best"].tolist() == ["yes", "no"]


def test_missing_values_show_a_dash():
    shown = tables.format_table(pd.DataFrame({"revenue_amount": [float("nan")], "rfm_segment": [None]}))
    assert shown.iloc[0].tolist() == [tables.MISSING, tables.MISSING]


def test_headers_in_words():
    assert tables.header("net_revenue_amount", "money", currency="GBP") == "Net revenue (GBP)"
    assert tables.header("n_repeat_customers", "count") == "Repeat customers"
    assert tables.header("conversion_from_first_pct", "percent") == "Conversion from first %"
    assert tables.header("clv_amount", "money", currency="EUR") == "CLV (EUR)"
    assert tables.header("p_value", "p_value") == "p-value"


def test_bare_index_is_dropped_and_a_named_one_becomes_a_column():
    html = tables.table_html(segment_table())
    assert "row_heading" not in html and ">0<" not in html and ">1<" not in html
    keyed = tables.format_table(segment_table().set_index("rfm_segment"))
    assert list(keyed.columns)[0] == "RFM segment" and keyed.iloc[0, 0] == "Champions"


def test_no_float_with_more_than_the_expected_decimals():
    frame = pd.DataFrame({"silhouette": [0.312345678], "inertia": [12345.6789], "lift": [3.14159265], "p_value": [0.0123456], "t": [0.00001234]})
    html = tables.table_html(frame)
    assert tables.long_floats(html) == []
    assert ">0.312<" in html and ">12,346<" in html and ">3.14<" in html and ">0.012<" in html


def test_long_tables_are_cut_with_a_note_naming_the_full_table():
    frame = pd.DataFrame({"n_orders": range(1234)})
    html = tables.table_html(frame, name="orders_by_day", max_rows=20)
    assert len(re.findall(r"<tr>", html)) == 21  # header and 20 rows
    assert "Showing 20 of 1,234 rows; the full table is tables/orders_by_day.parquet" in html
    assert "table-note" not in tables.table_html(frame.head(5), name="orders_by_day")


def test_the_input_is_not_modified_and_persisted_tables_stay_raw(tmp_path):
    frame = segment_table()
    before = frame.copy()
    path = tables.show_table(frame, "segment_summary", output_dir=tmp_path, currency="GBP", locale="en_GB")
    pd.testing.assert_frame_equal(frame, before)
    pd.testing.assert_frame_equal(pd.read_parquet(path), before)


def test_a_table_scrolls_sideways_instead_of_overflowing_the_page():
    html = tables.table_html(segment_table())
    assert html.startswith(f'<div class="{tables.SCROLL_CLASS}" style="overflow-x: auto; max-width: 100%;"><style')
    assert html.count("<table") == 1, "a narrow table has no print copy"


def test_a_wide_one_row_table_is_shown_turned():
    frame = pd.DataFrame([{"n_closed": 2186, "n_won": 402, "n_lost": 1784, "n_open": 267, "win_rate_pct": 18.389753,
                           "win_rate_low_pct": 16.821692, "win_rate_high_pct": 20.068716, "won_amount": 23945900.0}])
    shown = tables.table_styler(frame, currency="GBP").data
    assert list(shown.columns) == ["Measure", "Value"]
    assert shown.set_index("Measure")["Value"].to_dict() == {
        "Closed": "2,186", "Won": "402", "Lost": "1,784", "Open": "267", "Win rate %": "18.4%", "Win rate low %": "16.8%",
        "Win rate high %": "20.1%", "Won (GBP)": "£23,945,900"}
    assert "table-note" not in tables.table_html(frame), "one row shown of one: nothing was cut"
    assert list(tables.table_styler(frame.iloc[:, :tables.WIDE_ONE_ROW]).data.columns)[0] == "Closed", "a narrow one-row table stays as it is"


def test_a_wide_table_gets_a_turned_copy_for_print():
    frame = pd.DataFrame({"cluster": [0, 1, 2], "cluster_name": ["tea buyers", "app users", "lapsed"],
                          **{f"category_{i}_pct": [10.0 + i, 20.0, 30.5] for i in range(tables.WIDE_PRINT_COLUMNS)}})
    html = tables.table_html(frame)
    screen, printed = html.split(f'<div class="{tables.PRINT_CLASS}" style="display: none;">')
    assert screen.count("<table") == 1 and printed.count("<table") == 1
    turned = tables.turned(tables.format_table(frame))
    assert list(turned.columns) == ["Measure", "Cluster 0", "Cluster 1", "Cluster 2"]
    assert turned.iloc[0].tolist() == ["Cluster name", "tea buyers", "app users", "lapsed"]
    assert turned.iloc[1].tolist() == ["Category 0 %", "10.0%", "20.0%", "30.5%"]
    assert ">Cluster 2</th>" in printed and ">lapsed</td>" in printed
    many_rows = pd.concat([frame] * 5, ignore_index=True)
    assert tables.PRINT_CLASS not in tables.table_html(many_rows), "a long wide table is left to the print stylesheet's small type"


def test_cells_and_headers_are_escaped_so_data_cannot_add_markup():
    df = pd.DataFrame({"segment <b>": ["<script>alert(1)</script>", "A & B"], "n_customers": [3, 4]})
    text = tables.table_html(df, currency="GBP", locale="en_GB")
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "A &amp; B" in text and "&lt;b&gt;" in text


def test_a_count_of_rows_without_an_amount_is_a_count_not_money():
    assert tables.infer_unit("n_without_amount", pd.Series([3]).dtype) == "count"
    assert tables.infer_unit("won_amount", pd.Series([3.5]).dtype) == "money"
