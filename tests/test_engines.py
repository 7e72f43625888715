"""Other engines read a partly compacted archive (month files + recent daily files) with one
documented call each, with exact totals and the daily files' column set and types:
DuckDB's plain glob, Polars and DataFusion (the README's "Compaction" section).

The layout has no `key=value` folder, so no engine infers a partition column that could
collide with the in-file `date` column (DataFusion refuses such a collision).
"""

from __future__ import annotations

from datetime import date

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
    pl = pytest.importorskip("polars")
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
    datafusion = pytest.importorskip("datafusion")
    data, before = compacted
    # The README's call: subfolders are read once DataFusion is told not to skip them.
    ctx = datafusion.SessionContext(datafusion.SessionConfig().set("datafusion.execution.listing_table_ignore_subdirectory", "false"))
    ctx.register_parquet("metrics", f"{data}/")
    names = [f.name for f in ctx.table("metrics").schema()]
    assert names == COLUMNS
    batches = ctx.sql(GROUPS.format("metrics")).collect()
    rows = [tuple(r.values()) for b in batches for r in b.to_pylist()]
    assert rows == before
