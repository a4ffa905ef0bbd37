"""The engine switch: the same Ibis aggregations on embedded DuckDB or on Spark.

``connect(backend)`` returns an Ibis backend on which ``con.table("orders")``
and every other canonical table of ``crm_analytics.schema`` work:

``duckdb`` (the default)
    The warehouse file, opened read-only (``crm_analytics.warehouse.connect``).
``pyspark``
    A SparkSession on ``spark_master`` (``local[2]`` runs Spark inside this
    machine; ``spark://host:7077``, ``yarn`` or ``k8s://...`` a cluster). The
    tables are either the views of a Parquet export of the warehouse
    (``export_parquet``, refreshed when the warehouse file is newer) or, when a
    Spark database is named (``spark_database`` or the environment variable
    ``CRM_ANALYTICS_SPARK_DATABASE``), the tables of that database in the
    session's catalog or metastore.

Analysis modules take the tables and aggregate them with Ibis, so they run on
either engine unchanged; models then work on the small customer-level results
in pandas on the driver. What is written in DuckDB SQL (the cleansing's entity
resolution) needs the DuckDB engine: ``require_duckdb`` says so.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import duckdb

from crm_analytics import paths

BACKENDS = ("duckdb", "pyspark")
SPARK_DATABASE_ENV = "CRM_ANALYTICS_SPARK_DATABASE"
PARQUET_DIR_NAME = "parquet"

# Settings of every session this module starts: naive timestamps stay as they are (UTC session
# zone; Parquet timestamps without a zone read as TIMESTAMP_NTZ), Arrow transfers, no console
# progress bar. A cluster's spark-defaults.conf supplies the rest.
SPARK_CONFIG = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}
# Added for a local master only: no web UI, a few shuffle partitions instead of 200 (see
# session_config), and no adaptive re-planning, which on one small machine costs more than it
# saves (seconds per query).
LOCAL_SPARK_CONFIG = {
    "spark.ui.enabled": "false",
    "spark.sql.adaptive.enabled": "false",
}


class EngineUnavailableError(RuntimeError):
    """The requested engine cannot start here (a package or Java is missing); the message says what to install."""


class UnsupportedBackendError(NotImplementedError):
    """An operation runs only on some engines; the message names the backend and what to do instead."""


def check_backend(backend: str) -> str:
    """Return ``backend`` normalised (lower case); ``ValueError`` lists the choices for an unknown name."""
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    return name


def connect(
    backend: str = "duckdb",
    *,
    warehouse_path: str | Path | None = None,
    spark_master: str = "local[2]",
    spark_database: str | None = None,
    dataset: str | None = None,
):
    """Open the warehouse tables on the chosen engine; return an Ibis backend.

    Parameters
    ----------
    backend : {"duckdb", "pyspark"}
        ``duckdb``: the warehouse file, read-only. ``pyspark``: a SparkSession on
        ``spark_master`` (an existing session of this process is reused when its
        master is the same).
    warehouse_path : str or Path, optional
        The DuckDB warehouse; empty or ``None`` means the dataset's, ``data/warehouse/<dataset>.duckdb``.
        On Spark it is the source of the Parquet export (unless ``spark_database`` is set).
    spark_master : str
        Spark master URL, e.g. ``local[2]``, ``spark://host:7077``, ``yarn``.
    spark_database : str, optional
        Read the tables from this database of the Spark catalog (Hive metastore,
        Unity catalog...) instead of exporting the warehouse. Empty or ``None``:
        the environment variable ``CRM_ANALYTICS_SPARK_DATABASE`` when set.
    dataset : str, optional
        The dataset whose warehouse is read when ``warehouse_path`` is empty (default: the project's).

    Returns
    -------
    ibis backend
        ``con.table(name)`` is an Ibis table for every table of the warehouse
        (the canonical ones of ``crm_analytics.schema`` and the cleansing's).
    """
    name = check_backend(backend)
    if name == "duckdb":
        from crm_analytics import warehouse  # imported on use: the Spark path never needs it

        return warehouse.connect(warehouse_path, dataset=dataset)
    database = spark_database or os.environ.get(SPARK_DATABASE_ENV) or None
    session = spark_session(spark_master)
    if database:
        session.catalog.setCurrentDatabase(database)
    else:
        register_views(session, export_parquet(warehouse_path or paths.warehouse_path(dataset or None)))
    import ibis

    return ibis.pyspark.connect(session)


def spark_session(master: str = "local[2]"):
    """Return this process's SparkSession on ``master``, started with ``SPARK_CONFIG`` if none runs yet.

    ``EngineUnavailableError`` says what to install when PySpark or Java is
    missing; ``ValueError`` when a session on another master is already running.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:
        raise EngineUnavailableError(
            "the pyspark backend needs PySpark: pip install 'crm-analytics[spark]' (or pip install pyspark), "
            "and a Java runtime (Debian: apt-get install openjdk-17-jre-headless)"
        ) from error
    active = SparkSession.getActiveSession()
    if active is not None:
        running = active.sparkContext.master
        if running != master:
            raise ValueError(
                f"a SparkSession on {running!r} is already running in this process; "
                f"stop it (session.stop()) before connecting to {master!r}, or use spark_master={running!r}"
            )
        return active
    check_java()
    builder = SparkSession.builder.master(master).appName("crm-analytics")
    for key, value in session_config(master).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def session_config(master: str) -> dict[str, str]:
    """The settings a new session on ``master`` starts with: ``SPARK_CONFIG``, plus local tuning on ``local[N]``.

    On a local master the shuffle partitions are twice the cores (``local[*]``:
    this machine's cores).
    """
    config = dict(SPARK_CONFIG)
    match = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\s*\d+)?\])?", master.strip())
    if match:
        cores = match.group(1) or "1"
        n_cores = (os.cpu_count() or 1) if cores == "*" else int(cores)
        config.update(LOCAL_SPARK_CONFIG)
        config["spark.sql.shuffle.partitions"] = str(2 * n_cores)
        config["spark.default.parallelism"] = str(2 * n_cores)
    return config


def check_java() -> None:
    """Raise ``EngineUnavailableError`` unless a ``java`` executable can be found (JAVA_HOME or PATH)."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return
    if shutil.which("java"):
        return
    raise EngineUnavailableError(
        "the pyspark backend needs a Java runtime (17 or 21) and none was found on PATH or in JAVA_HOME; "
        "install one (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    )


def parquet_dir(warehouse_path: str | Path | None = None) -> Path:
    """Return the folder of the Parquet export: ``parquet/`` beside the warehouse file."""
    location = paths.resolve(warehouse_path, paths.warehouse_path())
    return location.parent / PARQUET_DIR_NAME


def export_parquet(warehouse_path: str | Path | None = None, *, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write every table of the warehouse to ``<out_dir>/<table>.parquet``; return ``{table: file}``.

    The canonical tables of ``crm_analytics.schema`` and the cleansing's own
    (``customer_lineage``, ``quarantine``, ``quality_*``). ``out_dir`` defaults to
    ``parquet_dir(warehouse_path)``. A file is rewritten only when it is missing
    or older than the warehouse file, each through a temporary file, so a reader
    never sees a half-written one.
    """
    from crm_analytics.warehouse import WarehouseMissingError

    location = paths.resolve(warehouse_path, paths.warehouse_path())
    if not location.exists():
        raise WarehouseMissingError(
            f"no warehouse at {location}; build it with `crm-analytics build-warehouse` or run the cleansing notebook"
        )
    target = Path(out_dir) if out_dir else parquet_dir(location)
    target.mkdir(parents=True, exist_ok=True)
    built = location.stat().st_mtime
    files: dict[str, Path] = {}
    with duckdb.connect(str(location), read_only=True) as con:
        names = [row[0] for row in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
        for name in names:
            file = target / f"{name}.parquet"
            if not file.exists() or file.stat().st_mtime < built:
                _write_parquet(con, name, file)
            files[name] = file
    return files


def _write_parquet(con: duckdb.DuckDBPyConnection, table: str, file: Path) -> None:
    staging = file.with_name(f"{file.name}.writing-{os.getpid()}")
    try:
        con.execute(f"COPY \"{table}\" TO '{staging}' (FORMAT parquet)")
        os.replace(staging, file)
    finally:
        staging.unlink(missing_ok=True)


def register_views(session, files: dict[str, Path]) -> None:
    """Register each Parquet file as a temporary view of ``session``, named after its table."""
    for name, file in files.items():
        session.read.parquet(str(file)).createOrReplaceTempView(name)


def backend_name(table) -> str:
    """Return the engine a table runs on: ``"duckdb"`` for a pandas frame or a memtable, else the Ibis backend's name.

    A string is taken as a backend name and checked (``check_backend``).
    """
    if isinstance(table, str):
        return check_backend(table)
    import ibis.expr.types as ir

    if not isinstance(table, ir.Table):
        return "duckdb"
    return table.get_backend().name


def require_duckdb(table, *, operation: str) -> None:
    """Raise ``UnsupportedBackendError`` unless ``table`` (a table or a backend name) runs on DuckDB.

    For the pieces written in DuckDB SQL, such as the cleansing's entity-resolution
    blocking: on another engine they would have to pull the whole table to the
    driver, so they stop and say what to do instead.
    """
    name = backend_name(table)
    if name != "duckdb":
        raise UnsupportedBackendError(
            f"{operation} runs on the duckdb backend only (it is written in DuckDB SQL), not on {name!r}; "
            "run it with backend='duckdb' on the warehouse file (it builds the warehouse the pyspark backend "
            "exports), or run an equivalent cleansing on the cluster and register its output as the canonical tables"
        )
