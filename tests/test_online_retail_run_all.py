"""``crm-analytics run-all --dataset online_retail_ii`` end to end: the persisted results equal plain pandas.

The real command runs once, in a project home of its own, on the Online Retail II workbook shipped in
``data/external/``. What it leaves behind (result tables of the latest runs, the warehouse, the reports)
is compared with ``reference_online_retail``, which computes every figure from the workbook with pandas
alone, in London time. Published tables carry keyed pseudonyms instead of customer ids: the test gives
the runs a pseudonym key of its own and maps the workbook's ids forward the documented way
(``customer_lineage`` to the warehouse key, then ``privacy.pseudonymise`` with that key).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from crm_analytics import datasets, dates, paths, privacy

sys.path.insert(0, str(Path(__file__).parent))
import reference_online_retail as reference  # noqa: E402

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "crm-analytics")
DATASET = "online_retail_ii"
PSEUDONYM_KEY = "online-retail-end-to-end-test-key"  # the runs' key, so the test can pseudonymise ids the same way
SUCCEEDED = {"behaviour", "churn", "cleansing", "clv", "cohort", "dashboard", "forecast", "kpi", "lifecycle", "overview",
             "recommendation", "segmentation"}
NOT_APPLICABLE = {  # analysis -> the reason its run records: invoice lines have no events, campaigns, CRM or surveys
    "attribution": "needs touchpoints, campaigns",
    "experiments": "needs experiment_assignments",
    "funnel": "needs web_events",
    "pipeline": "needs opportunities",
    "satisfaction": "needs surveys",
}
FOREIGN_MARKET_WORDS = ("CNY", "¥", "Asia/Shanghai")


@dataclass(frozen=True)
class Project:
    """A project home after ``run-all``: where it is, the command's result and each analysis's newest run record."""

    home: Path
    completed: subprocess.CompletedProcess
    records: dict[str, dict]

    @property
    def outputs(self) -> Path:
        return self.home / "outputs" / DATASET

    @property
    def warehouse(self) -> Path:
        return self.home / "data" / "warehouse" / f"{DATASET}.duckdb"

    def latest_table(self, analysis: str, table: str) -> pd.DataFrame:
        return pd.read_parquet(self.outputs / analysis / "latest" / "tables" / f"{table}.parquet")


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the installed ``crm-analytics`` command with ``home`` as the project home and the test's pseudonym key."""
    env = {**os.environ, paths.HOME_ENV: str(home), privacy.KEY_ENV: PSEUDONYM_KEY}
    env.pop(paths.DATASET_ENV, None)
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=900)


def newest_run_records(outputs: Path) -> dict[str, dict]:
    """Each analysis's newest run record (run ids begin with their UTC start time), with its folder as ``run_dir``."""
    records = {}
    for analysis_dir in sorted(p for p in outputs.iterdir() if p.is_dir()):
        runs = sorted(p for p in analysis_dir.iterdir() if (p / "run.json").is_file() and not p.is_symlink())
        if runs:
            records[analysis_dir.name] = json.loads((runs[-1] / "run.json").read_text()) | {"run_dir": runs[-1]}
    return records


def visible_text(html_file: Path) -> str:
    """The page without its embedded images (base64 can spell anything)."""
    return re.sub(r'data:image/[^"]+', "", html_file.read_text(encoding="utf-8"))


def same_to_significant_digits(value: float, expected: float, digits: int = 4) -> bool:
    """Whether ``value`` lies within half a unit of the ``digits``-th significant digit of ``expected``."""
    return abs(value - expected) <= 0.5 * 10 ** (math.floor(math.log10(abs(expected))) - digits + 1)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    home = tmp_path_factory.mktemp("online_retail_home")
    completed = run_cli(home, "run-all", "--dataset", DATASET)
    # recorded now: the clv run at the reference's dates below adds a newer clv run
    return Project(home, completed, newest_run_records(home / "outputs" / DATASET))


@pytest.fixture(scope="module")
def key():
    """The runs' pseudonym key for ``privacy.pseudonymise`` in this process."""
    patch = pytest.MonkeyPatch()
    patch.setenv(privacy.KEY_ENV, PSEUDONYM_KEY)
    yield PSEUDONYM_KEY
    patch.undo()


@pytest.fixture(scope="module")
def warehouse(project):
    con = duckdb.connect(str(project.warehouse), read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    return reference.read_lines()


@pytest.fixture(scope="module")
def orders(lines) -> pd.DataFrame:
    return reference.orders(lines)


@pytest.fixture(scope="module")
def published_key(project, warehouse, key) -> pd.Series:
    """Workbook customer id -> the pseudonymous ``customer_key`` of the published tables.

    ``customer_lineage`` maps each source id to the warehouse's customer key; published tables carry
    ``privacy.pseudonymise`` of that key.
    """
    lineage = warehouse.execute("SELECT source_customer_id, customer_key FROM customer_lineage WHERE source = 'customers'").df()
    assert lineage["source_customer_id"].is_unique
    return pd.Series(privacy.pseudonymise(lineage["customer_key"]).to_numpy(), index=lineage["source_customer_id"].to_numpy())


# ------------------------------------------------------------------------------------------- the run


def test_run_all_succeeds_with_every_analysis_succeeded_or_not_applicable(project):
    assert project.completed.returncode == 0, project.completed.stderr[-2000:]
    statuses = {analysis: record["status"] for analysis, record in project.records.items()}
    assert statuses == {**dict.fromkeys(SUCCEEDED, "succeeded"), **dict.fromkeys(NOT_APPLICABLE, "not_applicable")}
    assert {a: r["reason"] for a, r in project.records.items() if a in NOT_APPLICABLE} == NOT_APPLICABLE
    assert all(record["dataset"] == DATASET for record in project.records.values())
    for analysis in SUCCEEDED:
        assert paths.read_latest_pointer(project.outputs / analysis) == project.records[analysis]["run_dir"], analysis
    assert "12 of 17 succeeded, 5 not applicable" in " ".join(project.completed.stdout.split())


# ------------------------------------------------------------------------------- figures against pandas


def test_customer_count(project, warehouse, lines):
    expected = reference.customer_count(lines)
    assert expected == 262
    row_counts = project.latest_table("cleansing", "quality_row_counts").set_index("source")
    assert row_counts.loc["customers", ["rows_in", "rows_clean"]].tolist() == [expected, expected]
    inventory = project.latest_table("overview", "table_inventory").set_index("table")
    assert inventory.loc["customers", "rows"] == expected
    assert warehouse.execute("SELECT count(DISTINCT customer_id) FROM customers").fetchone()[0] == expected


def test_every_customers_rfm_at_the_day_after_the_last_order(project, orders, published_key):
    assert "snapshot 2011-12-10" in (project.outputs / "segmentation" / "latest" / "stdout.txt").read_text()
    expected = reference.rfm_values(orders, as_of=reference.AS_OF)
    expected.index = published_key.reindex(expected.index).to_numpy()
    published = project.latest_table("segmentation", "action_list").set_index("customer_key")
    assert len(published) == len(expected) == 260, "262 customers, two of whom only cancelled"
    assert published.index.is_unique and set(published.index) == set(expected.index)
    result = published.loc[expected.index, ["recency_days", "frequency", "monetary"]]
    # order amounts are stored in pennies; workbook prices have two decimals, so only float noise is rounded away
    pd.testing.assert_frame_equal(result, expected, check_dtype=False, check_names=False, check_index_type=False, rtol=1e-9)


def test_monthly_retention_matrix(project, orders):
    # the 22 invoices without a Customer ID are in the warehouse as anonymous orders; cohorts leave them out
    expected = reference.retention_matrix(orders)
    published = project.latest_table("cohort", "retention_matrix").set_index("cohort_date")
    published.columns = published.columns.astype(int)
    assert published.shape == expected.shape == (25, 25)
    pd.testing.assert_frame_equal(published, expected, check_dtype=False, check_names=False,
                                  check_index_type=False, check_column_type=False, rtol=1e-12)


def test_monthly_revenue_of_the_shop(project, lines):
    # The 22 invoices without a Customer ID are kept as anonymous orders (the dataset's anonymous_orders: keep),
    # so every persisted revenue is the shop's, all invoices included.
    expected = reference.monthly_revenue(lines)
    assert not expected.equals(reference.monthly_revenue(lines, customers_only=True)), "the anonymous invoices carry revenue"
    assert len(expected) == 25
    values = project.latest_table("kpi", "kpi_values")
    revenue = values[(values["kpi_id"] == "revenue") & (values["grain"] == "month")
                     & (values["segment"] == "all") & (values["channel"] == "all")]
    assert (revenue["unit"] == "money").all()
    kpi_months = revenue.set_index("period_start")["value"]
    # the KPI months are the complete ones of the window, 2009-12 .. 2011-11: the window starts on the first day of the
    # month 24 months before the day after the last order (2009-12-01) and the data stops on 2011-12-09
    assert kpi_months.index.min() == pd.Timestamp("2009-12-01") and len(kpi_months) == 24
    pd.testing.assert_series_equal(kpi_months, expected.loc[kpi_months.index], check_names=False, check_index_type=False,
                                   check_freq=False, rtol=1e-9)

    cube = project.latest_table("kpi", "sales_cube").groupby("month_date")["revenue_amount"].sum()
    assert len(cube) == 25
    # the cube's months are whole: its window starts on 2009-12-01, the first day of the month 24 months before the
    # day after the last order, so its first month holds all of December 2009, not only 2009-12-10..31
    assert cube.index.min() == pd.Timestamp("2009-12-01")
    pd.testing.assert_series_equal(cube, expected, check_names=False, check_index_type=False, check_freq=False, rtol=1e-9)


def test_reports_state_the_anonymous_orders_they_leave_out(project, orders):
    anonymous = orders[orders["customer_id"].isna()]
    assert len(anonymous) == 22
    share = 100 * len(anonymous) / len(orders)
    expected = f"22 of {len(orders):,} orders ({share:.1f}%) have no customer"
    for analysis in ("behaviour", "recommendation", "segmentation", "cohort", "clv", "churn", "lifecycle", "kpi"):
        notes = [w["message"] for w in project.records[analysis]["warnings"] if w["kind"] == "data_note"]
        assert any(note.startswith(expected) for note in notes), (analysis, notes)


def test_product_analyses_leave_out_non_merchandise_and_say_how_much(project, lines):
    codes = set(datasets.load_dataset(DATASET).non_merchandise_codes)
    sales_lines = lines[~lines["Invoice"].str.startswith("C")]  # order_items: every sales line, with or without a customer
    excluded = sales_lines[sales_lines["StockCode"].isin(codes)]
    assert len(excluded) > 0
    for analysis in ("behaviour", "recommendation"):
        counts = project.latest_table(analysis, "non_merchandise_lines").iloc[0]
        assert (counts["n_lines"], counts["n_excluded_lines"]) == (len(sales_lines), len(excluded))
        assert counts["excluded_line_amount"] == pytest.approx(excluded["amount"].sum(), rel=1e-9)
        notes = [w["message"] for w in project.records[analysis]["warnings"] if w["kind"] == "data_note"]
        assert any(note.startswith(f"{len(excluded):,} of {len(sales_lines):,} order lines") for note in notes), notes
    pairs = project.latest_table("behaviour", "product_pairs")
    assert not (set(pairs["item_a"]) | set(pairs["item_b"])) & codes
    top_n, also = project.latest_table("recommendation", "top_n_per_customer"), project.latest_table("recommendation", "also_bought")
    assert len(top_n) and not set(top_n["product_id"]) & codes
    assert not (set(also["product_id"]) | set(also["also_bought_product_id"])) & codes


@pytest.fixture(scope="module")
def clv_at_reference_dates(project):
    """A clv run calibrated on all the data, as the lifetimes reference was.

    By default the clv notebook calibrates on the first five sixths of the observed span (to 2011-08-08
    here) and holds out the rest; the reference calibrates to the last day of data, 2011-12-09. The
    holdout must end after the calibration, so it ends on 2011-12-10, a day without orders: it feeds
    only the holdout columns, never the fit.
    """
    calibration_end = reference.CALIBRATION_END.date().isoformat()
    completed = run_cli(project.home, "run", "clv", "--dataset", DATASET,
                        "-p", f"calibration_end={calibration_end}", "-p", "observation_end=2011-12-10")
    assert completed.returncode == 0, completed.stderr[-2000:]
    return project.latest_table("clv", "fit_status")


def test_the_default_clv_calibration_is_not_the_references(project, orders):
    span_first, span_last = orders["order_time"].min().floor("D"), orders["order_time"].max().floor("D")
    default_end = span_first + pd.Timedelta(days=int(dates.CALIBRATION_SHARE * (span_last - span_first).days))
    assert default_end == pd.Timestamp("2011-08-08") != reference.CALIBRATION_END
    stdout = (project.records["clv"]["run_dir"] / "stdout.txt").read_text()
    assert "calibration to 2011-08-08, holdout to 2011-12-09" in stdout
    fit = project.records["clv"]["run_dir"] / "tables" / "fit_status.parquet"
    fitted = pd.read_parquet(fit).query("model == 'BG/NBD'").set_index("item")["value"]
    assert fitted["n_customers"] == len(reference.bgnbd_summary(orders, calibration_end=default_end))


def test_bgnbd_parameters_equal_lifetimes_to_four_significant_digits(clv_at_reference_dates, orders):
    fitted = clv_at_reference_dates.query("model == 'BG/NBD'").set_index("item")["value"]
    assert fitted["n_customers"] == len(reference.bgnbd_summary(orders)) == 260
    for name, expected in reference.LIFETIMES_BGNBD.items():
        assert same_to_significant_digits(fitted[name], expected), (name, fitted[name], expected)


# ----------------------------------------------------------------------------- pounds and London time


def test_the_warehouse_and_the_index_name_london_and_pounds(project, warehouse):
    info = warehouse.execute("SELECT name, time_zone, currency, country FROM dataset_info").df().to_dict("records")
    assert info == [{"name": DATASET, "time_zone": "Europe/London", "currency": "GBP", "country": "GB"}]
    index = visible_text(project.outputs / "index.html")
    assert f"{DATASET} (Europe/London, GBP)" in index


def test_money_is_shown_in_pounds(project):
    catalogue = project.latest_table("kpi", "kpi_catalogue").set_index("kpi_id")
    assert catalogue.loc[["revenue", "average_order_value"], "unit"].tolist() == ["money", "money"]
    assert not catalogue["definition"].str.contains("|".join(FOREIGN_MARKET_WORDS), regex=True).any()
    dashboard = visible_text(project.outputs / "dashboard" / "latest" / "report.html")
    for tile in ("Revenue", "Average order value"):  # the sales tiles, formatted with the dataset's currency and locale
        assert re.search(rf">{tile}</div><div class=\"crm-tile-value\"[^>]*>£[0-9,]+<", dashboard), tile


def test_no_report_speaks_of_yuan_or_shanghai(project):
    pages = [project.home / "outputs" / "index.html", project.outputs / "index.html"]
    pages += [record["run_dir"] / "report.html" for record in project.records.values() if record["status"] == "succeeded"]
    assert len(pages) == 2 + len(SUCCEEDED) and all(page.is_file() for page in pages)
    for page in pages:
        text = visible_text(page)
        assert not [word for word in FOREIGN_MARKET_WORDS if word in text], page
