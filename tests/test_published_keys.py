"""Published per-customer tables join: one pseudonymous ``customer_key`` across analyses, and a way back.

The segmentation, lifecycle, churn and CLV notebooks run on the small demo (the ``demo_home`` session
fixture) under a pseudonym key of the test's own; their per-customer tables must carry the same key
column, never a raw ``customer_id``, and the keys must name the same customers (segmentation's recency
and frequency equal lifecycle's days since the last order and order count, customer by customer).
``privacy.source_ids_for`` then maps keys back to the source records of the raw exports.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from crm_analytics import paths, privacy, sources

KEY = "published-keys-test-key-0123456789"
PER_CUSTOMER_TABLES = {
    "segmentation": "action_list",
    "lifecycle": "lifecycle_stages",
    "churn": "churn_scores",
    "clv": "customer_value",
}


@pytest.fixture(scope="module")
def published(demo_home) -> dict[str, pd.DataFrame]:
    """The per-customer table of each analysis, from a fresh run under ``KEY``."""
    from crm_analytics import runner

    tables = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(privacy.KEY_ENV, KEY)  # the kernels inherit it
        for analysis, table in PER_CUSTOMER_TABLES.items():
            result = runner.run_analysis(analysis, cell_timeout=300, run_timeout=600, write_index=False)
            assert result.status == "succeeded", (analysis, result.error_name, result.error_message)
            tables[analysis] = pd.read_parquet(result.run_dir / "tables" / f"{table}.parquet")
    return tables


@pytest.fixture(scope="module")
def lineage(demo_home) -> pd.DataFrame:
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as con:
        return con.table("customer_lineage").df()


@pytest.mark.slow
def test_every_per_customer_table_carries_the_key_and_no_raw_id(published):
    for analysis, table in published.items():
        assert table.columns[0] == "customer_key", analysis
        assert "customer_id" not in table.columns, analysis
        assert table["customer_key"].str.fullmatch(r"cus_[0-9a-f]{16}").all(), analysis
        assert table["customer_key"].is_unique and len(table) > 1000, analysis


@pytest.mark.slow
def test_keys_are_the_warehouse_customers_under_the_key(published, demo_home):
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as con:
        customer_ids = con.execute("SELECT DISTINCT customer_id FROM customers").df()["customer_id"]
    expected = set(privacy.pseudonymise(customer_ids, key=KEY))
    for analysis, table in published.items():
        assert set(table["customer_key"]) <= expected, analysis
    # lifecycle covers every customer, so every other table's customers are found there
    assert set(published["lifecycle"]["customer_key"]) == expected


@pytest.mark.slow
def test_tables_of_different_analyses_join_on_the_same_customers(published):
    lifecycle = published["lifecycle"]
    joined = published["segmentation"].merge(lifecycle, on="customer_key", how="left", validate="one_to_one")
    assert joined["lifecycle_stage"].notna().all()
    # the same snapshot (the day after the last order) seen by two analyses: equal customer by customer
    assert (joined["recency_days"] == joined["days_since_last_order"]).all()
    assert (joined["frequency"] == joined["n_orders"]).all()
    everything = published["churn"].merge(published["clv"], on="customer_key").merge(joined, on="customer_key")
    assert len(everything) == len(published["clv"])  # every customer valued is scored for churn and segmented


@pytest.mark.slow
def test_published_keys_map_back_to_source_records(published, lineage):
    keys = published["churn"].sort_values("churn_probability", ascending=False)["customer_key"].head(50)
    records = privacy.source_ids_for(keys, lineage, key=KEY)
    assert set(records["customer_key"]) == set(keys)
    raw = {(name, str(i)) for name, frame in sources.read_sources(table="customers").items() for i in frame["customer_id"]}
    assert set(zip(records["source"], records["source_customer_id"], strict=True)) <= raw
    assert privacy.source_ids_for(keys, lineage, key="another-key-of-enough-length").empty
