"""The SQL checks of ``cleansing.bulk`` agree with their pandas statements, whatever the values.

``bulk`` validates typed Parquet sources inside DuckDB; the rules it applies are stated in pandas
elsewhere (``quality.count_control_characters``, the pandera key check ``report_duplicates="exclude_first"``).
These properties run both on the same random columns.
"""

from __future__ import annotations

import duckdb
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as hs

from crm_analytics import schema, warehouse
from crm_analytics.cleansing import bulk, quality, validate

# short texts over an alphabet holding the control characters the standardisers remove, and their neighbours that stay
_CHARACTERS = hs.sampled_from(["a", "B", " ", "-", "\x00", "\x07", "\x09", "\x0a", "\x0d", "\x1b", "\x7f", "\x85", "\xa0", "é", "张"])
_TEXTS = hs.lists(hs.one_of(hs.none(), hs.text(_CHARACTERS, max_size=6)), min_size=1, max_size=40)
WEB_EVENTS = schema.get_table("web_events")


def _src(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> None:
    """Temp table ``src`` of ``frame`` with ``_source_row`` numbered from 1, as ``validate_parquet`` stages a source."""
    con.register("frame", frame.assign(_source_row=range(1, len(frame) + 1)))
    con.execute("CREATE TEMP TABLE src AS SELECT * FROM frame")


@settings(max_examples=150, deadline=None)
@given(event_ids=_TEXTS, session_ids=_TEXTS, products=_TEXTS)
def test_control_characters_are_counted_per_column_as_the_pandas_profile_counts_them(event_ids, session_ids, products):
    n = min(len(event_ids), len(session_ids), len(products))
    frame = pd.DataFrame({"event_id": event_ids[:n], "session_id": session_ids[:n], "product_id": products[:n]}, dtype="string")
    with duckdb.connect() as con:
        _src(con, frame)
        counted = bulk._control_character_counts(con, WEB_EVENTS, list(frame.columns))
    assert counted == {column: quality.count_control_characters(frame[column]) for column in frame.columns}


@settings(max_examples=150, deadline=None)
@given(keys=hs.lists(hs.one_of(hs.none(), hs.sampled_from(["E1", "E2", "E3", "e1", "E10"])), min_size=1, max_size=60))
def test_duplicate_keys_are_every_occurrence_after_the_first_as_the_pandas_contract_says(keys):
    frame = pd.DataFrame({"event_id": pd.array(keys, dtype="string")})
    failures = bulk._failure_selects(WEB_EVENTS, ["event_id"], pd.Timestamp("2025-01-01"), link_customers=False)
    with duckdb.connect() as con:
        _src(con, frame)
        found = con.execute(" UNION ALL ".join(failures)).df()
    duplicates = found.loc[found["reason"] == validate.DUPLICATE_KEY, "_source_row"].sort_values().tolist()
    expected = (frame.index[frame["event_id"].notna() & frame["event_id"].duplicated(keep="first")] + 1).tolist()
    assert duplicates == expected


def test_a_table_written_without_its_order_keeps_every_row(tmp_path):
    frame = pd.DataFrame({"event_id": [f"E{i}" for i in range(5000)], "n": range(5000)})
    path = warehouse.write_tables({"events_any_order": frame, "events_in_order": frame}, path=tmp_path / "w.duckdb",
                                  unordered={"events_any_order"})
    with duckdb.connect(str(path), read_only=True) as con:
        any_order = con.execute("SELECT * FROM events_any_order ORDER BY n").df()
        in_order = con.execute("SELECT * FROM events_in_order").df()
    pd.testing.assert_frame_equal(any_order, frame, check_dtype=False)
    pd.testing.assert_frame_equal(in_order, frame, check_dtype=False)
