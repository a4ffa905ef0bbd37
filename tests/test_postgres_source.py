"""Collecting customers from a real PostgreSQL CRM database through a SQLAlchemy URL.

The server is started by ``.ci/postgres.sh`` (``eval "$(bash .ci/postgres.sh)"``),
which exports ``CRM_ANALYTICS_POSTGRES_URL``; without it these tests fail (``make test`` starts the server).
A SQL source must give exactly the rows, lineage and quarantine of the same
export read from its file.
"""

from __future__ import annotations

import copy
import os
import uuid
from pathlib import Path

import pandas as pd
import pytest

from crm_analytics import paths, sources
from crm_analytics.cleansing import validate

pytestmark = pytest.mark.postgres
URL = os.environ.get("CRM_ANALYTICS_POSTGRES_URL", "")
CORPUS = Path(__file__).parent / "data" / "bad_inputs"
AS_OF = pd.Timestamp("2025-12-31")


@pytest.fixture(scope="module")
def engine():
    if not URL:
        pytest.fail("CRM_ANALYTICS_POSTGRES_URL is not set: start the server with `eval \"$(bash .ci/postgres.sh)\"` (make test does)")
    import sqlalchemy

    engine = sqlalchemy.create_engine(URL)
    yield engine
    engine.dispose()


def load_table(engine, frame: pd.DataFrame) -> str:
    """Write ``frame`` as a fresh table (text columns, the export's own names, plus ``export_row``); return its name."""
    name = f"crm_{uuid.uuid4().hex[:10]}"
    frame.assign(export_row=range(1, len(frame) + 1)).to_sql(name, engine, index=False, chunksize=5000)
    return name


def sql_spec(source: str, table_name: str) -> dict:
    """The file source's spec as a SQL source; the query fixes the row order (a table has none)."""
    spec = copy.deepcopy(sources.load_source_map()[source])
    spec.update({"format": "sql", "url": URL, "query": f'SELECT * FROM "{table_name}" ORDER BY export_row'})
    spec.pop("encoding", None)
    return spec


def file_and_sql(engine, source: str, dataset_dir: Path, *, file_spec: dict | None = None):
    spec = file_spec or sources.load_source_map()[source]
    raw_file = sources.read_source(source, spec, dataset_dir)
    export = pd.read_csv(sources.source_path(spec, dataset_dir), dtype=str, keep_default_na=False, na_values=[""],
                         encoding=raw_file.attrs.get("encoding", "utf-8"), sep=raw_file.attrs.get("delimiter", ","))
    table_name = load_table(engine, export)
    raw_sql = sources.read_source(source, sql_spec(source, table_name), dataset_dir)
    from_file = validate.validate_source(source, raw_file, spec, as_of=AS_OF)
    from_sql = validate.validate_source(source, raw_sql, sql_spec(source, table_name), as_of=AS_OF)
    return raw_sql, from_file, from_sql


def assert_same(from_file: validate.ValidatedSource, from_sql: validate.ValidatedSource) -> None:
    columns = [c for c in from_file.clean.columns if c != "_source_file"]
    pd.testing.assert_frame_equal(from_file.clean[columns], from_sql.clean[columns], check_dtype=False)
    pd.testing.assert_frame_equal(from_file.quarantine.drop(columns="source_file"), from_sql.quarantine.drop(columns="source_file"))
    assert from_sql.n_rows_in == len(from_sql.clean) + from_sql.n_rows_quarantined


def test_sql_source_matches_the_file(engine):
    spec = copy.deepcopy(sources.load_source_map()["store_members"])
    spec["path"] = "gb18030.csv"
    raw_sql, from_file, from_sql = file_and_sql(engine, "store_members", CORPUS, file_spec=spec)
    assert raw_sql["_source_file"].iloc[0].startswith("postgresql")
    assert "postgres@" in raw_sql["_source_file"].iloc[0] and ":***@" not in URL
    assert_same(from_file, from_sql)
    assert from_sql.clean.set_index("customer_id").loc["S001", "full_name"] == "王五"


def test_bad_query_names_the_database(engine):
    spec = sql_spec("store_members", "no_such_table") | {"query": 'SELECT * FROM "no_such_table"'}
    with pytest.raises(sources.SourceError, match="postgresql"):
        sources.read_source("store_members", spec, CORPUS)


@pytest.mark.slow
def test_demo_customers_from_postgres(engine, demo_home):
    for source in ("web_signups", "store_members"):
        _, from_file, from_sql = file_and_sql(engine, source, paths.raw_dir())
        assert_same(from_file, from_sql)
        assert len(from_sql.clean) > 1000
