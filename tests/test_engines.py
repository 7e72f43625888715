"""Other engines read a partly compacted archive (month files + recent daily files) with one
documented call each, with exact totals and the daily files' column set and types:
DuckDB's plain glob, Polars, DataFusion and Apache Spark in local mode (the README's
"Compaction" section).

Spark needs pyspark and a Java runtime (`make spark`, part of `make test`). Without them the
Spark test is skipped on a developer's machine and fails under CI (CI=true). Its session is
module-wide, local[2], bound to 127.0.0.1, without its web UI, with 512 MB for the driver.

The layout has no `key=value` folder, so no engine infers a partition column that could
collide with the in-file `date` column (DataFusion refuses such a collision).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import date
from urllib.parse import urlparse
from urllib.request import url2pathname

import duckdb
import pytest

from helpers import run_collector
from test_compaction import config, make_archive

COLUMNS = ["timestamp", "metric_name", "value", "api_proxy", "date", "labels"]
GROUPS = ("SELECT api_proxy, metric_name, count(*) AS n, sum(value) AS total FROM {} "
          "GROUP BY api_proxy, metric_name ORDER BY api_proxy, metric_name")


@pytest.fixture(scope="module")
def compacted(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    data = root / "data"
    rows = make_archive(data, date(2024, 1, 1), 31 + 29 + 10)
    con = duckdb.connect()
    glob = str(data / "*" / "*.parquet")
    before = con.execute(GROUPS.format("read_parquet(?)"), [glob]).fetchall()
    assert sum(r[2] for r in before) == rows
    cfg = config(root, data)
    for m in ("2024-01", "2024-02"):
        r = run_collector("--config", cfg, "--compact", "--month", m)
        assert r.returncode == 0, r.stderr
    assert (data / "2024-01" / "2024-01.parquet").is_file() and (data / "2024-03-10").is_dir()
    assert not (data / "2024-02-10").exists()
    return data, before


def test_duckdb_plain_glob(compacted):
    data, before = compacted
    con = duckdb.connect()
    rel = f"read_parquet('{data}/*/*.parquet')"
    assert con.execute(GROUPS.format(rel)).fetchall() == before
    assert [c[0] for c in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()] == COLUMNS


def test_polars(compacted):
    import polars as pl  # tests/requirements.txt
    data, before = compacted
    # The README's call:
    lf = pl.scan_parquet(f"{data}/*/*.parquet")
    schema = lf.collect_schema()
    assert list(schema.names()) == COLUMNS
    assert schema["date"] == pl.Date and schema["timestamp"] == pl.Int64 and schema["value"] == pl.Float64
    got = (lf.group_by("api_proxy", "metric_name").agg(pl.len().alias("n"), pl.col("value").sum().alias("total"))
           .sort("api_proxy", "metric_name").collect())
    rows = [(r["api_proxy"], r["metric_name"], r["n"], r["total"]) for r in got.iter_rows(named=True)]
    assert rows == sorted(before, key=lambda r: (r[0], r[1]))


def test_datafusion(compacted):
    import datafusion  # tests/requirements.txt
    data, before = compacted
    # The README's call: subfolders are read once DataFusion is told not to skip them.
    ctx = datafusion.SessionContext(datafusion.SessionConfig().set("datafusion.execution.listing_table_ignore_subdirectory", "false"))
    ctx.register_parquet("metrics", f"{data}/")
    names = [f.name for f in ctx.table("metrics").schema()]
    assert names == COLUMNS
    batches = ctx.sql(GROUPS.format("metrics")).collect()
    rows = [tuple(r.values()) for b in batches for r in b.to_pylist()]
    assert rows == before


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    # `make test` installs both (`make spark`): missing, the test fails rather than skips.
    assert shutil.which("java") or os.environ.get("JAVA_HOME"), "no Java runtime: make spark"
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    local = tmp_path_factory.mktemp("spark")
    with pytest.MonkeyPatch.context() as mp:
        # Read by spark-submit as it starts the JVM: every socket of the driver on loopback.
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        started = time.monotonic()
        session = (SparkSession.builder.master("local[2]").appName("promduck-engines")
                   .config("spark.driver.host", "127.0.0.1")
                   .config("spark.driver.bindAddress", "127.0.0.1")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.driver.memory", "512m")
                   # A JVM that lives for seconds: the C1 compiler alone and the serial collector
                   # halve its CPU time (~22 s -> ~12 s measured), the same answers.
                   .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
                   .config("spark.sql.shuffle.partitions", "2")
                   .config("spark.sql.session.timeZone", "UTC")
                   .config("spark.local.dir", str(local))
                   .config("spark.sql.warehouse.dir", str(local / "warehouse"))
                   .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    print(f"spark session started in {time.monotonic() - started:.1f}s")
    try:
        yield session
    finally:
        session.stop()
        # End the JVM now rather than when pytest exits (it quits once its stdin closes).
        gateway = SparkContext._gateway
        if gateway is not None:
            gateway.shutdown()
            proc = getattr(gateway, "proc", None)
            if proc is not None:
                proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            SparkContext._gateway = None
            SparkContext._jvm = None


# pyspark warns that it "does not yet fully support pandas >= 3.0.0"; this test uses no pandas.
@pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
def test_spark(compacted, spark):
    from pyspark.sql import types as T

    data, before = compacted
    # The README's call: the same one-folder-deep glob as DuckDB's and Polars'. No folder is
    # `key=value`, so Spark infers no partition column (none collides with the in-file `date`).
    df = spark.read.parquet(f"{data}/*/*.parquet")
    assert [(f.name, f.dataType) for f in df.schema.fields] == [
        ("timestamp", T.LongType()), ("metric_name", T.StringType()), ("value", T.DoubleType()),
        ("api_proxy", T.StringType()), ("date", T.DateType()),
        ("labels", T.MapType(T.StringType(), T.StringType(), True)),
    ]
    # Every file exactly once: both month files and the ten March days' files, nothing else.
    files = sorted(os.path.relpath(url2pathname(urlparse(f).path), data) for f in df.inputFiles())
    assert files == sorted(str(p.relative_to(data)) for p in data.glob("*/*.parquet"))
    assert "2024-01/2024-01.parquet" in files and "2024-02/2024-02.parquet" in files
    df.createOrReplaceTempView("metrics")
    rows = [tuple(r) for r in spark.sql(GROUPS.format("metrics")).collect()]
    assert rows == before
