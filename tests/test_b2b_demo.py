"""The generated B2B-only dataset ``b2b_demo``: accounts, opportunities and stage history, no orders."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from crm_analytics import datasets, paths, requirements
from crm_analytics.cleansing import build_clean_warehouse
from crm_analytics.demo import b2b

N_ACCOUNTS = 120


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    monkeypatch.delenv(paths.DATASET_ENV, raising=False)
    return tmp_path


@pytest.fixture
def files(home):
    folder = b2b.generate_b2b(N_ACCOUNTS, seed=3)
    return {name: pd.read_csv(folder / name, dtype=str) for name in b2b.B2B_FILES}


def test_it_writes_accounts_and_their_pipeline_and_no_orders(home, files):
    folder = paths.raw_dir("b2b_demo")
    assert sorted(p.name for p in folder.iterdir()) == sorted(b2b.B2B_FILES)
    accounts, opportunities, history = files["accounts.csv"], files["opportunities.csv"], files["opportunity_stage_history.csv"]
    assert len(accounts) == N_ACCOUNTS and accounts["account_id"].is_unique and accounts["company"].is_unique
    assert set(opportunities["account_id"]) == set(accounts["account_id"]), "every account has an opportunity"
    assert set(opportunities["owner"]) <= set(b2b.OWNERS_DE) and not set(opportunities["owner"]) & set(b2b.OWNERS)
    assert set(history["opportunity_id"]) == set(opportunities["opportunity_id"])


def test_stage_history_agrees_with_each_opportunity(files):
    opportunities = files["opportunities.csv"].set_index("opportunity_id")
    history = files["opportunity_stage_history.csv"]
    first = history.groupby("opportunity_id", sort=False).first()
    last = history.groupby("opportunity_id", sort=False).last()
    assert (first["stage"] == "lead").all()
    assert (first["entered_at"] == opportunities.loc[first.index, "created_at"]).all(), "a lead enters at its creation"
    closed = opportunities["status"] != "open"
    assert (last.loc[opportunities.index[closed], "stage"] == opportunities.loc[closed, "status"]).all()
    assert (last.loc[opportunities.index[closed], "entered_at"] == opportunities.loc[closed, "closed_at"]).all()
    assert opportunities.loc[~closed, "closed_at"].isna().all()
    assert not last.loc[opportunities.index[~closed], "stage"].isin(["won", "lost"]).any()


def test_the_same_seed_gives_the_same_files(home, tmp_path):
    one = b2b.generate_b2b(40, seed=5, out_dir=tmp_path / "one")
    two = b2b.generate_b2b(40, seed=5, out_dir=tmp_path / "two")
    assert all((one / name).read_bytes() == (two / name).read_bytes() for name in b2b.B2B_FILES)


def test_too_few_or_too_many_accounts_are_refused(home):
    with pytest.raises(ValueError, match="at least 10"):
        b2b.generate_b2b(5)
    with pytest.raises(ValueError, match="at most 640"):
        b2b.generate_b2b(641)


def test_the_dataset_file_names_a_german_market():
    dataset = datasets.load_dataset("b2b_demo")
    assert (dataset.time_zone, dataset.currency, dataset.country, dataset.locale) == ("Europe/Berlin", "EUR", "DE", "de_DE")
    assert {source["table"] for source in dataset.sources.values()} == {"customers", "opportunities", "opportunity_stage_history"}
    assert dataset.targets_file is None


def test_it_builds_a_warehouse_the_pipeline_and_kpis_apply_to(home, files):
    build_clean_warehouse(dataset="b2b_demo")
    with duckdb.connect(str(paths.warehouse_path("b2b_demo")), read_only=True) as con:
        info = con.execute("SELECT name, time_zone, currency, country FROM dataset_info").fetchone()
        rows = {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                for name in ("customers", "opportunities", "opportunity_stage_history", "quarantine")}
        listed = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
        first_created = con.execute("SELECT min(created_time) FROM opportunities").fetchone()[0]
    assert info == ("b2b_demo", "Europe/Berlin", "EUR", "DE")
    assert rows == {"customers": N_ACCOUNTS, "opportunities": len(files["opportunities.csv"]),
                    "opportunity_stage_history": len(files["opportunity_stage_history.csv"]), "quarantine": 0}
    # written in UTC, stored as Berlin local time (an hour or two later)
    written = pd.Timestamp(files["opportunities.csv"]["created_at"].min())
    assert pd.Timestamp(first_created) - written in (pd.Timedelta(hours=1), pd.Timedelta(hours=2))
    table_rows = {name: rows.get(name, 0) for name in listed}
    assert requirements.check("pipeline", table_rows).applicable
    assert requirements.check("kpi", table_rows).applicable
    assert requirements.check("segmentation", table_rows).reason == "needs orders"
