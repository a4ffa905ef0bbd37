"""The model notebooks (clv, churn, forecast) on too little data: warnings in the report, never a failed run.

A CDNOW warehouse is built once with the real command; each test copies it, cuts the orders down with
SQL (three customers, thirty weeks, every amount zero) and runs the notebook with papermill on the copy.
The run must finish, and its ``warnings.jsonl`` (what the runner copies into ``run.json``) must say
what was skipped and why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from crm_analytics import clv, paths, results

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "crm-analytics")
DATASET = "cdnow"


@pytest.fixture(scope="module")
def cdnow_warehouse(tmp_path_factory) -> Path:
    """The CDNOW warehouse, built by ``crm-analytics build-warehouse`` in a project home of its own."""
    home = tmp_path_factory.mktemp("cdnow_home")
    env = {**os.environ, paths.HOME_ENV: str(home)}
    env.pop(paths.DATASET_ENV, None)
    completed = subprocess.run([CLI, "build-warehouse", "--dataset", DATASET], capture_output=True, text=True, env=env, timeout=900)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return home / "data" / "warehouse" / f"{DATASET}.duckdb"


def shrunk_copy(warehouse: Path, folder: Path, *statements: str) -> Path:
    """A copy of ``warehouse`` in ``folder`` after running SQL ``statements`` on it."""
    copy = folder / "small.duckdb"
    shutil.copy(warehouse, copy)
    with duckdb.connect(str(copy)) as con:
        for statement in statements:
            con.execute(statement)
    return copy


def run_notebook(analysis: str, warehouse: Path, folder: Path) -> tuple[list[dict], Path]:
    """Run ``notebooks/<analysis>.ipynb`` on ``warehouse``; return its recorded warnings and its output folder."""
    import papermill

    output_dir = folder / "run"
    papermill.execute_notebook(
        str(paths.notebooks_dir() / f"{analysis}.ipynb"),
        str(folder / f"{analysis}.ipynb"),
        parameters={"dataset": DATASET, "warehouse_path": str(warehouse), "output_dir": str(output_dir)},
        kernel_name="python3",
        cwd=str(folder),
        progress_bar=False,
    )
    return results.read_warnings(output_dir), output_dir


KEEP_THREE_CUSTOMERS = "DELETE FROM orders WHERE customer_id NOT IN (SELECT DISTINCT customer_id FROM orders ORDER BY customer_id LIMIT 3)"


def test_clv_on_three_customers_skips_both_fits_with_a_warning(cdnow_warehouse, tmp_path):
    warehouse = shrunk_copy(cdnow_warehouse, tmp_path, KEEP_THREE_CUSTOMERS)
    found, output_dir = run_notebook("clv", warehouse, tmp_path)
    by_section = {w["section"]: w for w in found}
    assert set(by_section) == {"BG/NBD", "Gamma-Gamma"} and {w["kind"] for w in found} == {"too_little_data"}
    assert by_section["BG/NBD"]["message"].startswith("too little data (n = ")
    assert f"needs {clv.MIN_REPEAT_CUSTOMERS_BGNBD})" in by_section["BG/NBD"]["message"]
    assert pd.read_parquet(output_dir / "tables" / "customer_value.parquet").empty
    assert pd.read_parquet(output_dir / "tables" / "fit_status.parquet").empty
    assert not pd.read_parquet(output_dir / "tables" / "cdnow_check.parquet").empty, "the appendix still runs"


def test_churn_on_three_customers_says_too_little_data(cdnow_warehouse, tmp_path):
    warehouse = shrunk_copy(cdnow_warehouse, tmp_path, KEEP_THREE_CUSTOMERS)
    found, output_dir = run_notebook("churn", warehouse, tmp_path)
    assert [(w["kind"], w["section"]) for w in found] == [("too_little_data", "Churn model")]
    assert "churned" in found[0]["message"] and "retained customers on the training date" in found[0]["message"]
    assert pd.read_parquet(output_dir / "tables" / "churn_scores.parquet").empty


def test_forecast_on_thirty_weeks_skips_the_weekly_model_only(cdnow_warehouse, tmp_path):
    warehouse = shrunk_copy(cdnow_warehouse, tmp_path, "DELETE FROM orders WHERE order_time >= TIMESTAMP '1997-08-01'")
    found, output_dir = run_notebook("forecast", warehouse, tmp_path)
    assert [(w["kind"], w["section"]) for w in found] == [("too_little_data", "weekly forecast")]
    assert "weeks, needs" in found[0]["message"]
    assert pd.read_parquet(output_dir / "tables" / "weekly_forecast.parquet").empty
    assert len(pd.read_parquet(output_dir / "tables" / "daily_forecast.parquet")) == 28


def test_forecast_of_an_all_zero_series_is_refused_as_no_variation(cdnow_warehouse, tmp_path):
    warehouse = shrunk_copy(cdnow_warehouse, tmp_path, "UPDATE orders SET order_amount = 0")
    found, _ = run_notebook("forecast", warehouse, tmp_path)
    assert {w["section"] for w in found} == {"weekly forecast", "daily forecast"}
    assert all(w["message"].startswith("no variation (every value is 0)") for w in found)


def test_warnings_reach_the_run_record(cdnow_warehouse, tmp_path):
    """Through the runner: ``run.json`` of a succeeded run lists the notebook's warnings."""
    home = cdnow_warehouse.parents[2]
    small = shrunk_copy(cdnow_warehouse, tmp_path, KEEP_THREE_CUSTOMERS)
    shutil.copy(small, cdnow_warehouse.with_name("small.duckdb"))
    env = {**os.environ, paths.HOME_ENV: str(home)}
    env.pop(paths.DATASET_ENV, None)
    completed = subprocess.run([CLI, "run", "churn", "--dataset", DATASET, "-p", f"warehouse_path={cdnow_warehouse.with_name('small.duckdb')}"],
                               capture_output=True, text=True, env=env, timeout=900)
    assert completed.returncode == 0, completed.stderr[-2000:]
    record = json.loads((home / "outputs" / DATASET / "churn" / "latest" / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "succeeded"
    assert [w["kind"] for w in record["warnings"]] == ["too_little_data"]


def test_segmentation_on_three_customers_skips_the_clusters_and_the_evaluation(cdnow_warehouse, tmp_path):
    warehouse = shrunk_copy(cdnow_warehouse, tmp_path, KEEP_THREE_CUSTOMERS)
    found, output_dir = run_notebook("segmentation", warehouse, tmp_path)
    assert [(w["kind"], w["section"]) for w in found] == [("too_little_data", "Clusters")]
    assert found[0]["message"].startswith("too little data (n = 3 customers, needs ")
    assert len(pd.read_parquet(output_dir / "tables" / "action_list.parquet")) == 3
    assert pd.read_parquet(output_dir / "tables" / "cluster_agreement.parquet")["n_customers"].tolist() == [0], \
        "CDNOW has no ground truth: no evaluation, no failure"
