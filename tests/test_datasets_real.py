"""The real exports shipped in data/external/ build into warehouses with their dataset files alone.

Every expected value is computed here with plain pandas from the original files, so a derivation
query that drops, doubles or shifts anything fails a test.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from crm_analytics import datasets, paths, warehouse
from crm_analytics.cleansing import build_clean_warehouse

LINE_COLUMNS = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A project home of its own: the warehouses are built there; the exports are read from the checkout."""
    root = tmp_path_factory.mktemp("real_home")
    patch = pytest.MonkeyPatch()
    patch.setenv(paths.HOME_ENV, str(root))
    yield root
    patch.undo()


def build(name: str):
    result = build_clean_warehouse(dataset=name)
    return result, duckdb.connect(str(result.warehouse_path), read_only=True)


# ------------------------------------------------------------------------------------ Online Retail II


@pytest.fixture(scope="module")
def retail(home):
    result, con = build("online_retail_ii")
    yield result, con
    con.close()


@pytest.fixture(scope="module")
def workbook_lines() -> pd.DataFrame:
    """The workbook's invoice lines with their sheet and row, lines repeated in a later sheet dropped (pandas only).

    The k-th copy of a line in the second sheet is dropped when the first sheet has a k-th copy too;
    repeats within one sheet stay.
    """
    dataset = datasets.load_dataset("online_retail_ii")
    sheets = pd.read_excel(dataset.data_dir / "online_retail_II_europe.xlsx", sheet_name=None, engine="openpyxl")  # not the build's reader
    parts = []
    for order, (sheet, frame) in enumerate(sheets.items()):
        frame = frame[LINE_COLUMNS].copy()
        frame["sheet"], frame["sheet_order"], frame["row"] = sheet, order, range(1, len(frame) + 1)
        frame["copy"] = frame.groupby(LINE_COLUMNS, dropna=False).cumcount()
        parts.append(frame)
    lines = pd.concat(parts, ignore_index=True).sort_values(["sheet_order", "row"])
    lines = lines.drop_duplicates([*LINE_COLUMNS, "copy"], keep="first")
    lines["Invoice"] = lines["Invoice"].astype(str)
    lines["StockCode"] = lines["StockCode"].astype(str)
    lines["amount"] = lines["Quantity"] * lines["Price"]
    return lines


def test_the_overlapping_week_is_read_once(workbook_lines):
    both = workbook_lines.groupby("Invoice")["sheet"].nunique()
    assert (both > 1).sum() == 0, "no invoice keeps lines from both sheets"
    assert len(workbook_lines) == 14_269 + 20_497 - 441


def test_rows_in_equal_clean_plus_quarantined_per_source(retail, workbook_lines):
    result, _ = retail
    counts = result.row_counts.set_index("source")
    assert counts["is_balanced"].all()
    assert (counts["rows_clean"] + counts["rows_quarantined"] == counts["rows_in"]).all()
    with_customer = workbook_lines[workbook_lines["Customer ID"].notna()]
    # invoices without a Customer ID are kept as anonymous orders (the dataset's anonymous_orders: keep)
    assert counts.loc["orders", ["rows_in", "rows_clean", "rows_quarantined"]].tolist() == [workbook_lines["Invoice"].nunique(), workbook_lines["Invoice"].nunique(), 0]
    assert counts.loc["customers", ["rows_in", "rows_quarantined"]].tolist() == [with_customer["Customer ID"].nunique(), 0]
    assert counts.loc["products", "rows_in"] == workbook_lines["StockCode"].nunique()
    sales_lines = workbook_lines[~workbook_lines["Invoice"].str.startswith("C")]
    assert counts.loc["order_items", ["rows_in", "rows_clean"]].tolist() == [len(sales_lines)] * 2


def test_customers_orders_and_revenue_equal_pandas(retail, workbook_lines):
    _, con = retail
    with_customer = workbook_lines[workbook_lines["Customer ID"].notna()]
    n_customers, n_orders, revenue = con.execute("SELECT (SELECT count(*) FROM customers), count(*), sum(order_amount) FROM orders").fetchone()
    assert n_customers == with_customer["Customer ID"].nunique()
    assert n_orders == workbook_lines["Invoice"].nunique(), "every invoice is an order, with or without a customer"
    assert revenue == pytest.approx(workbook_lines["amount"].sum(), abs=0.005 * n_orders)
    by_invoice = workbook_lines.groupby("Invoice")["amount"].sum().round(2)
    stored = con.execute("SELECT order_id, order_amount FROM orders").df().set_index("order_id")["order_amount"]
    pd.testing.assert_series_equal(stored.sort_index(), by_invoice.sort_index(), check_names=False, atol=1e-9)


def test_cancellations_are_refund_orders(retail, workbook_lines):
    _, con = retail
    refunds = con.execute("SELECT order_id, order_amount, is_refund FROM orders WHERE is_refund").df()
    cancelled = workbook_lines[workbook_lines["Invoice"].str.startswith("C")]
    assert set(refunds["order_id"]) == set(cancelled["Invoice"])
    assert (refunds["order_amount"] < 0).all()
    assert not con.execute("SELECT count(*) FROM orders WHERE NOT is_refund AND starts_with(order_id, 'C')").fetchone()[0]


def test_timestamps_are_london_local_times_unchanged(retail, workbook_lines):
    _, con = retail
    first_line = workbook_lines.iloc[0]
    stored = con.execute("SELECT order_time FROM orders WHERE order_id = ?", [first_line["Invoice"]]).fetchone()[0]
    assert pd.Timestamp(stored) == first_line["InvoiceDate"] == pd.Timestamp("2009-12-06 10:30:00")
    summer = workbook_lines[workbook_lines["InvoiceDate"].dt.month == 7].iloc[0]  # British Summer Time: stored as written, not as UTC
    assert pd.Timestamp(con.execute("SELECT order_time FROM orders WHERE order_id = ?", [summer["Invoice"]]).fetchone()[0]) == (
        workbook_lines.loc[workbook_lines["Invoice"] == summer["Invoice"], "InvoiceDate"].min())
    with_customer = workbook_lines[workbook_lines["Customer ID"].notna()]
    first_seen = with_customer.groupby("Customer ID")["InvoiceDate"].min().sort_values().reset_index(drop=True)
    signups = con.execute("SELECT signup_time FROM customers ORDER BY signup_time").df()["signup_time"]
    pd.testing.assert_series_equal(signups.astype("datetime64[us]"), first_seen.astype("datetime64[us]"), check_names=False)


def test_customers_carry_country_and_person_key_not_province(retail, workbook_lines):
    _, con = retail
    customers = con.execute("SELECT person_key, country, province FROM customers").df()
    first = workbook_lines[workbook_lines["Customer ID"].notna()].sort_values(["InvoiceDate", "sheet_order", "row"])
    expected = first.drop_duplicates("Customer ID").set_index("Customer ID")["Country"]
    expected.index = expected.index.astype(int).astype(str)
    assert customers.set_index("person_key")["country"].sort_index().to_dict() == expected.sort_index().to_dict()
    assert customers["province"].isna().all()


def test_non_merchandise_codes_are_declared_and_categorised(retail, workbook_lines):
    _, con = retail
    declared = set(datasets.load_dataset("online_retail_ii").non_merchandise_codes)
    not_products = {code for code in workbook_lines["StockCode"].unique() if not code[:5].isdigit()}
    assert not_products and not_products <= declared, f"undeclared codes: {not_products - declared}"
    flagged = set(con.execute("SELECT product_id FROM products WHERE category = 'non_merchandise'").df()["product_id"])
    assert flagged == not_products


def test_invoices_without_customer_are_kept_as_anonymous_orders_with_their_lines(retail, workbook_lines):
    _, con = retail
    assert con.execute("SELECT count(*) FROM quarantine WHERE source IN ('orders', 'order_items')").fetchone()[0] == 0
    no_customer = workbook_lines.groupby("Invoice")["Customer ID"].apply(lambda ids: ids.isna().all())
    no_customer = set(no_customer[no_customer].index)
    assert len(no_customer) == 22
    anonymous = con.execute("SELECT order_id, order_amount FROM orders WHERE customer_id IS NULL").df().set_index("order_id")["order_amount"]
    assert set(anonymous.index) == no_customer
    expected = workbook_lines[workbook_lines["Invoice"].isin(no_customer)].groupby("Invoice")["amount"].sum().round(2)
    pd.testing.assert_series_equal(anonymous.sort_index(), expected.sort_index(), check_names=False, atol=1e-9)
    sales = workbook_lines[workbook_lines["Invoice"].isin(no_customer) & ~workbook_lines["Invoice"].str.startswith("C")]
    stored_lines = con.execute("SELECT order_id, count(*) AS n FROM order_items WHERE order_id IN (SELECT order_id FROM orders WHERE customer_id IS NULL) "
                               "GROUP BY order_id").df().set_index("order_id")["n"]
    assert stored_lines.sort_index().to_dict() == sales.groupby("Invoice").size().sort_index().to_dict()


def test_dataset_info_names_london_and_pounds(retail):
    result, _ = retail
    info = warehouse.dataset_info(result.warehouse_path)
    assert (info["name"], info["time_zone"], info["currency"], info["country"], info["locale"]) == ("online_retail_ii", "Europe/London", "GBP", "GB", "en_GB")
    assert result.warehouse_path == paths.warehouse_path("online_retail_ii") and result.accuracy.empty


# ---------------------------------------------------------------------------------------------- CDNOW


def test_cdnow_builds_orders_and_first_purchase_customers(home):
    log = pd.read_csv(datasets.load_dataset("cdnow").data_dir / "CDNOW_master.txt", sep=r"\s+", dtype={"customer_id": str, "date": str})
    result, con = build("cdnow")
    try:
        counts = result.row_counts.set_index("source")
        assert counts["is_balanced"].all()
        assert counts.loc["orders", ["rows_in", "rows_clean"]].tolist() == [len(log), len(log)] == [69_659, 69_659]
        n_customers, n_orders, revenue = con.execute("SELECT (SELECT count(*) FROM customers), count(*), sum(order_amount) FROM orders").fetchone()
        assert (n_customers, n_orders) == (log["customer_id"].nunique(), len(log)) == (23_570, 69_659)
        assert revenue == pytest.approx(log["dollar_value"].sum(), rel=1e-12)
        first = pd.to_datetime(log.groupby("customer_id")["date"].min(), format="%Y%m%d").sort_values().reset_index(drop=True)
        signups = con.execute("SELECT signup_time FROM customers ORDER BY signup_time").df()["signup_time"]
        pd.testing.assert_series_equal(signups.astype("datetime64[us]"), first.astype("datetime64[us]"), check_names=False)
        per_customer = con.execute("SELECT c.person_key, count(*) AS n FROM orders o JOIN customers c USING (customer_id) GROUP BY 1").df()
        assert per_customer.set_index("person_key")["n"].sort_index().to_dict() == log["customer_id"].value_counts().sort_index().to_dict()
        assert warehouse.dataset_info(result.warehouse_path)["time_zone"] == "America/New_York"
    finally:
        con.close()
