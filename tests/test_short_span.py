"""A dataset whose orders span three days: every analysis either says something or says why it cannot.

A new shop's first export is short. The runs that need a longer span (a weekly forecast needs one whole
Monday-to-Sunday week) end ``not_applicable`` with the reason, never ``failed``; the KPI page shows the
grain the data completes instead of stopping on its default monthly grain.
"""

from __future__ import annotations

import csv
import random

import pytest
from test_dataset_matrix import outcome, run_cli, run_records

from crm_analytics import paths

pytestmark = pytest.mark.slow

DATASET = "three_days"
DATASET_FILE = """\
description: a shop's first export, three days of orders
data_dir: data/raw/three_days
time_zone: Europe/London
currency: GBP
country: GB
locale: en_GB
sources:
  customers:
    table: customers
    path: customers.csv
    format: csv
    columns: {customer_id: id, full_name: name, signup_time: signup}
    constants: {source: shop}
  orders:
    table: orders
    path: orders.csv
    format: csv
    columns: {order_id: order, customer_id: customer, order_time: time, order_amount: amount}
    constants: {source: shop, channel: web}
"""


def write_three_days(folder) -> int:
    """30 customers and 60 orders on 2025-03-01..03 (a Saturday to a Monday: no whole week); returns the orders."""
    folder.mkdir(parents=True)
    rng = random.Random(1)
    with open(folder / "customers.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "signup"])
        writer.writerows([f"C{i}", f"Customer {i}", "2025-03-01"] for i in range(30))
    with open(folder / "orders.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["order", "customer", "time", "amount"])
        writer.writerows(
            [f"O{j}", f"C{rng.randrange(30)}", f"2025-03-0{1 + j % 3} 1{j % 10}:00:00", f"{rng.uniform(5, 100):.2f}"] for j in range(60)
        )
    return 60


@pytest.fixture(scope="module")
def three_days(tmp_path_factory):
    """``run-all`` on the three-day dataset in a home of its own; the scratch dataset file is removed afterwards."""
    scratch = paths.datasets_dir() / f"{DATASET}.yaml"
    assert not scratch.exists(), f"{scratch} exists already (left behind by an interrupted run of this test?)"
    home = tmp_path_factory.mktemp("three_days_home")
    write_three_days(home / "data" / "raw" / DATASET)
    scratch.write_text(DATASET_FILE, encoding="utf-8")
    try:
        completed = run_cli(home, "run-all", "--dataset", DATASET)
    finally:
        scratch.unlink(missing_ok=True)
    return completed, run_records(home / "outputs" / DATASET), home


def test_no_analysis_fails_on_three_days_of_orders(three_days):
    completed, records, _ = three_days
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    failed = {analysis: record.get("error_message") for analysis, record in records.items() if record["status"] not in ("succeeded", "not_applicable")}
    assert not failed
    assert outcome(records["kpi"]).startswith("succeeded")
    assert outcome(records["segmentation"]).startswith("succeeded")


def test_the_weekly_forecast_is_not_applicable_and_says_why(three_days):
    _, records, home = three_days
    forecast = records["forecast"]
    assert forecast["status"] == "not_applicable"
    assert forecast["reason"].startswith("too little data: a weekly series needs one whole week (Monday to Sunday)")
    assert "2025-03-01" in forecast["reason"] and "2025-03-03" in forecast["reason"]
    assert not (home / "outputs" / DATASET / "forecast" / "latest").exists(), "only a run that succeeded becomes latest"


def test_the_kpi_page_says_which_grain_it_shows(three_days):
    _, records, _ = three_days
    report = (records["kpi"]["run_dir"] / "report.html").read_text(encoding="utf-8")
    assert "No complete month in the data yet; shown by" in report
