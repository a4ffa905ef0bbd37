"""Tests of the ground-truth mapping the segmentation evaluation runs in DuckDB, and of the action list's order.

``ground_truth.customer_persons`` maps warehouse customers to true persons in one DuckDB query; it must
keep ``person_map``'s rules (customers whose records all belong to one person). The action list is
sorted by segment and key through Arrow; it must give the rows ``sort_values`` gives.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from crm_analytics import ground_truth, warehouse
from crm_analytics import segmentation as seg

# source record -> person; record R3 belongs to P2, so the customer merging R2 and R3 mixes two persons
SOURCE_RECORDS = pd.DataFrame(
    {
        "source": ["web", "web", "store", "store", "store", "web"],
        "source_record_id": ["R1", "R2", "R3", "R4", "R5", "R6"],
        "person_id": ["P1", "P1", "P2", "P3", "P3", "P4"],
    }
)
PERSONS = pd.DataFrame({"person_id": ["P1", "P2", "P3"], "true_segment": ["loyal", "bargain", "loyal"], "satisfaction": [0.9, 0.4, 0.7]})


def _warehouse(folder, *, lineage: bool) -> str:
    """A warehouse file with ``customers`` (and ``customer_lineage`` when asked); returns its path.

    With lineage: K1 merged R1 and R2 (both P1), K2 merged R2 and R3 (P1 and P2: left out), K3 merged
    R4 and R5 (both P3), K4 has no lineage row, K5 is R6 (P4, absent from persons.parquet).
    Without lineage the customer ids are the source record ids.
    """
    path = folder / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        if lineage:
            con.execute("CREATE TABLE customers AS SELECT * FROM (VALUES ('K3'), ('K1'), ('K2'), ('K4'), ('K5'), ('K1')) AS t(customer_id)")
            con.execute(
                "CREATE TABLE customer_lineage AS SELECT * FROM (VALUES ('K1', 'R1'), ('K1', 'R2'), ('K2', 'R2'), ('K2', 'R3'),"
                " ('K3', 'R4'), ('K3', 'R5'), ('K5', 'R6')) AS t(customer_key, source_customer_id)"
            )
        else:
            con.execute("CREATE TABLE customers AS SELECT * FROM (VALUES ('R4'), ('R1'), ('R9'), ('R3')) AS t(customer_id)")
    return str(path)


def _truth_dir(folder):
    folder.mkdir(parents=True)
    SOURCE_RECORDS.to_parquet(folder / "source_records.parquet")
    PERSONS.to_parquet(folder / "persons.parquet")
    return folder


def _pandas_reference(con, truth_dir, person_columns=()) -> pd.DataFrame:
    """The mapping built in pandas with ``person_map`` (the rules ``customer_persons`` keeps)."""
    lineage = con.table("customer_lineage").to_pandas() if "customer_lineage" in con.list_tables() else None
    customer_ids = con.table("customers").select("customer_id").to_pandas()["customer_id"]
    mapped = ground_truth.person_map(customer_ids, source_records=ground_truth.load_source_records(truth_dir), lineage=lineage)
    if person_columns:
        mapped = mapped.merge(ground_truth.load_persons(truth_dir)[["person_id", *person_columns]], on="person_id")
    return mapped.sort_values("customer_id", ignore_index=True)


def test_customer_persons_in_duckdb_follows_the_lineage(tmp_path):
    truth_dir = _truth_dir(tmp_path / "it's the truth")  # a quote in the path: the file names are SQL literals
    con = warehouse.connect(_warehouse(tmp_path, lineage=True))
    persons = ground_truth.customer_persons(con, truth_dir=truth_dir)
    assert persons.to_dict("list") == {"customer_id": ["K1", "K3", "K5"], "person_id": ["P1", "P3", "P4"]}
    assert str(persons["customer_id"].dtype) == "string"
    pd.testing.assert_frame_equal(persons, _pandas_reference(con, truth_dir), check_dtype=False)


def test_customer_persons_adds_person_columns(tmp_path):
    truth_dir = _truth_dir(tmp_path / "truth")
    con = warehouse.connect(_warehouse(tmp_path, lineage=True))
    truth = ground_truth.customer_persons(con, truth_dir=truth_dir, person_columns=["true_segment", "satisfaction"])
    # K5's person P4 is not in persons.parquet: left out, as an inner merge leaves it out
    assert truth.to_dict("list") == {
        "customer_id": ["K1", "K3"], "person_id": ["P1", "P3"], "true_segment": ["loyal", "loyal"], "satisfaction": [0.9, 0.7],
    }
    reference = _pandas_reference(con, truth_dir, person_columns=["true_segment", "satisfaction"])
    pd.testing.assert_frame_equal(truth, reference, check_dtype=False)


def test_customer_persons_without_lineage_uses_the_source_record_ids(tmp_path):
    truth_dir = _truth_dir(tmp_path / "truth")
    con = warehouse.connect(_warehouse(tmp_path, lineage=False))
    persons = ground_truth.customer_persons(con, truth_dir=truth_dir)
    assert persons.to_dict("list") == {"customer_id": ["R1", "R3", "R4"], "person_id": ["P1", "P2", "P3"]}  # R9: no person
    pd.testing.assert_frame_equal(persons, _pandas_reference(con, truth_dir), check_dtype=False)


@pytest.mark.slow
def test_customer_persons_matches_person_map_on_demo(demo_home):
    con = warehouse.connect()
    truth_dir = ground_truth.paths.ground_truth_dir()
    truth = ground_truth.customer_persons(con, truth_dir=truth_dir, person_columns=["true_segment"])
    assert len(truth) > 0.9 * con.table("customers").count().to_pyarrow().as_py()
    pd.testing.assert_frame_equal(truth, _pandas_reference(con, truth_dir, person_columns=["true_segment"]), check_dtype=False)


# --------------------------------------------------------------------------- action list order


def _scored() -> pd.DataFrame:
    """Customers whose segments and keys sort differently by code point than by any locale (accents, case, quotes)."""
    segments = ["Lost", "Can't Lose Them", "Champions", "Lost", "Champions", "At Risk", "Lost"]
    return pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3", "c4", "c5", "c6", "c7"],
            "rfm_segment": pd.Categorical(segments, categories=list(seg.SEGMENTS)),
            "customer_key": ["zeta", "Émile", "alpha", "Zeta", "émile", "b", "Ápple"],
            "monetary": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        }
    )


def _sorted_reference(listed: pd.DataFrame) -> pd.DataFrame:
    return listed.sort_values(["rfm_segment", "customer_key"], kind="stable").reset_index(drop=True)


def test_action_list_rows_are_in_sort_values_order():
    listed = seg.action_list(_scored(), key_col="customer_key", extra_cols=("monetary",))
    # segments by name, then keys by code point: "Z" < "z" < "Á", whatever the locale
    assert listed["customer_key"].tolist() == ["b", "Émile", "alpha", "émile", "Zeta", "zeta", "Ápple"]
    pd.testing.assert_frame_equal(listed, _sorted_reference(listed))
    assert listed.loc[listed["customer_key"] == "b", "suggested_action"].item() == seg.SEGMENT_ACTIONS["At Risk"]


def test_action_list_with_missing_keys_sorts_them_last_within_their_segment():
    scored = _scored()
    scored["customer_key"] = scored["customer_key"].astype("string").mask(scored["customer_id"] == "c1")
    listed = seg.action_list(scored, key_col="customer_key")
    lost = listed[listed["rfm_segment"] == "Lost"]["customer_key"]
    assert lost.iloc[:-1].tolist() == ["Zeta", "Ápple"] and pd.isna(lost.iloc[-1])
    pd.testing.assert_frame_equal(listed, _sorted_reference(listed))


def test_action_list_names_an_action_for_every_segment_it_knows():
    scored = _scored()
    listed = seg.action_list(scored, key_col="customer_key", actions={"Lost": "win back"})
    assert listed.groupby("rfm_segment")["suggested_action"].first().to_dict() == {
        "At Risk": "No action defined", "Can't Lose Them": "No action defined", "Champions": "No action defined", "Lost": "win back",
    }


# --------------------------------------------------------------------------- clusters fitted in the background


def test_start_fit_clusters_gives_the_clusters_of_a_direct_call():
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0, 5.0], [8.0, 1.0, 0.0], [1.0, 9.0, 2.0]])
    points = np.vstack([centre + rng.normal(size=(60, 3)) for centre in centres])
    features = pd.DataFrame(points, columns=["monetary", "discount_pct", "channel_web_pct"])
    features.insert(0, "customer_id", [f"c{i:03d}" for i in range(len(features))])
    fitting = seg.start_fit_clusters(features, n_clusters=3, random_state=7)
    clusters = fitting.result(timeout=120)
    pd.testing.assert_frame_equal(clusters, seg.fit_clusters(features, n_clusters=3, random_state=7))
    assert sorted(clusters.groupby("cluster").size()) == [60, 60, 60]


def test_start_fit_clusters_hands_back_the_error_of_the_fit():
    features = pd.DataFrame({"customer_id": ["a", "b"], "monetary": [1.0, 2.0]})
    fitting = seg.start_fit_clusters(features, n_clusters=5)
    with pytest.raises(ValueError):
        fitting.result(timeout=60)
