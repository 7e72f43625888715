"""End-to-end: what `prom_metrics` / `prom_partitions` read from archives promduck did not
write itself, or reaches twice. Archives are written by DuckDB's own `COPY ... TO`; every
expected value is computed by plain DuckDB (`read_parquet`) from the files the test wrote.

- Each file is read at most once (repeated names, symlinked day folders and files).
- The original Go tool's file names are its raw proxy names (`sp ace.parquet`,
  `a/b.parquet`, `a%2Fb.parquet` is the proxy literally named `a%2Fb`); promduck's own
  (stamped `created_by_promduck`) encoded names keep decoding.
- Foreign column values convert exactly or fail naming the file, column and value; a
  file's `date` must be its folder's day.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import duckdb
import pytest

from helpers import run_cli_sql

D1, D2 = "2024-03-01", "2024-03-02"


# `con` (the extension in-process): tests/conftest.py.


def lit(s) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def write(path: Path, proxy: str, day: str, values, promduck: bool, metric="request_count", value_type="DOUBLE",
          date_type="DATE", dates=None, timestamps=None, ts_type="BIGINT"):
    """One partition file: a row per value, written by DuckDB's COPY (stamped like promduck's
    writer when `promduck`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dates = dates or [day] * len(values)
    timestamps = timestamps or [f"epoch_ms(TIMESTAMP {lit(day)}) + {i}" for i in range(len(values))]
    rows = ", ".join(
        f"({ts}::{ts_type}, {lit(metric)}, {'NULL' if v is None else lit(v)}::{value_type}, {lit(proxy)}, "
        f"{'NULL' if d is None else lit(d)}::{date_type})"
        for ts, v, d in zip(timestamps, values, dates))
    kv = ", KV_METADATA {created_by_promduck: 'test'}" if promduck else ""
    duckdb.connect().execute(
        f"COPY (SELECT * FROM (VALUES {rows}) t(timestamp, metric_name, value, api_proxy, date)) "
        f"TO {lit(path)} (FORMAT parquet{kv})")
    return path


def plain(sql, params=None):
    """Plain DuckDB, no extension: the independent reference."""
    return duckdb.connect().execute(sql, params or []).fetchall()


def agg_of(files):
    """(count, sum(value)) over the files, by plain DuckDB."""
    return plain("SELECT count(*), sum(value) FROM read_parquet(?)", [[str(f) for f in files]])[0]


def q(con, sql, params=None):
    return con.execute(sql, params or []).fetchall()


# --- (2) each file is read once -----------------------------------------------------------------------------------

@pytest.fixture
def plain_archive(tmp_path):
    """promduck-stamped partitions: 2 days x proxies api, web; metrics m1, m2."""
    root = tmp_path / "data"
    files = {}
    for i, day in enumerate((D1, D2)):
        for j, proxy in enumerate(("api", "web")):
            path = root / day / f"{proxy}.parquet"
            # Two metrics in one file, as the collector writes them.
            rows = [(f"m{k}", 10 * i + j + k / 4) for k in (1, 2)]
            path.parent.mkdir(parents=True, exist_ok=True)
            values = ", ".join(f"(epoch_ms(TIMESTAMP {lit(day)}), {lit(m)}, {v}::DOUBLE, {lit(proxy)}, DATE {lit(day)})"
                               for m, v in rows)
            duckdb.connect().execute(
                f"COPY (SELECT * FROM (VALUES {values}) t(timestamp, metric_name, value, api_proxy, date)) "
                f"TO {lit(path)} (FORMAT parquet, KV_METADATA {{created_by_promduck: 'test'}})")
            files[(day, proxy)] = path
    return root, files


def test_repeated_proxies_and_metrics_select_each_file_once(con, plain_archive):
    root, files = plain_archive
    api = [files[(d, "api")] for d in (D1, D2)]
    for args, want in [
        ("proxy := ['api', 'api']", agg_of(api)),
        ("proxy := ['api', 'web', 'api', 'web']", agg_of(files.values())),
        ("metric := ['m1', 'm1']", plain("SELECT count(*), sum(value) FROM read_parquet(?) WHERE metric_name = 'm1'",
                                         [[str(f) for f in files.values()]])[0]),
        ("proxy := ['web', 'web'], metric := ['m2', 'm1', 'm2']", agg_of([files[(d, "web")] for d in (D1, D2)])),
        (f"proxy := ['api', 'api'], date := '{D2}'", agg_of([files[(D2, "api")]])),
    ]:
        got = q(con, f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := ?, {args})", [str(root)])
        assert got == [want], args
    got = q(con, "SELECT date::VARCHAR, api_proxy FROM prom_partitions(data_dir := ?, proxy := ['web', 'web']) ORDER BY 1",
            [str(root)])
    assert got == [(D1, "web"), (D2, "web")]


def test_day_folder_or_file_reachable_twice_is_read_once(con, plain_archive):
    root, files = plain_archive
    os.symlink(D1, root / "2024-03-05")            # a later day pointing at D1
    os.symlink(root / D1, root / "2024-02-28")     # an earlier one, absolute
    os.symlink("web.parquet", root / D2 / "alias.parquet")
    want = plain("SELECT date, api_proxy, count(*), sum(value) FROM read_parquet(?) GROUP BY ALL ORDER BY ALL",
                 [[str(f) for f in files.values()]])
    got = q(con, "SELECT date, api_proxy, count(*), sum(value) FROM prom_metrics(data_dir := ?) GROUP BY ALL ORDER BY ALL",
            [str(root)])
    assert got == want
    got = q(con, "SELECT path FROM prom_partitions(data_dir := ?) ORDER BY date, api_proxy", [str(root)])
    assert [r[0] for r in got] == [str(files[k]) for k in sorted(files)]


# --- (3) the original Go tool's file names --------------------------------------------------------------------------

GO_NAMES = ["sp ace", "é", "x%zz", ".hidden", "a/b", "a%2Fb", "api-1", 'we"ird']


@pytest.fixture
def mixed_archive(tmp_path):
    """D1 written by the Go tool (raw names, no stamp); D2 by promduck (encoded, stamped)."""
    root = tmp_path / "data"
    files = {}  # proxy -> [files]
    for i, name in enumerate(GO_NAMES):
        p = write(root / D1 / f"{name}.parquet", name, D1, [i + 0.5, 100 + i], promduck=False)
        files.setdefault(name, []).append(p)
    encoded = {"sp ace": "sp%20ace", "a/b": "a%2Fb", ".hidden": "%2Ehidden", "a%2Fb": "a%252Fb", "é": "%C3%A9"}
    for i, (name, stem) in enumerate(encoded.items()):
        p = write(root / D2 / f"{stem}.parquet", name, D2, [1000 + i], promduck=True)
        files.setdefault(name, []).append(p)
    # promduck's half-written temporary file is not a partition.
    (root / D2 / ".a%2Fb.parquet.x1y2z3.promduck-tmp").write_bytes(b"half written")
    return root, files


def test_go_archive_names_are_raw_and_promduck_names_decode(con, mixed_archive):
    root, files = mixed_archive
    all_files = [f for fs in files.values() for f in fs]
    # The full scan: every file once, api_proxy as the files hold it.
    want = plain("SELECT api_proxy, count(*), sum(value) FROM read_parquet(?) GROUP BY 1 ORDER BY 1",
                 [[str(f) for f in all_files]])
    got = q(con, "SELECT api_proxy, count(*), sum(value) FROM prom_metrics(data_dir := ?) GROUP BY 1 ORDER BY 1",
            [str(root)])
    assert got == want
    # Each name selects exactly its files, from both tools.
    for name, fs in files.items():
        got = q(con, "SELECT count(*), sum(value), list(DISTINCT api_proxy) FROM prom_metrics(data_dir := ?, proxy := ?)",
                [str(root), name])
        assert got == [agg_of(fs) + ([name],)], name
    # Names that are no proxy: the other reading of an encoded name, paths leaving the day folder.
    for name in ["a%252Fb", "sp%20ace", "%2Ehidden", "a", "../2024-03-01/api-1", "a//b", "./a/b"]:
        assert q(con, "SELECT count(*) FROM prom_metrics(data_dir := ?, proxy := ?)", [str(root), name]) == [(0,)], name
    # prom_partitions shows the same names.
    got = q(con, "SELECT api_proxy, path FROM prom_partitions(data_dir := ?) ORDER BY ALL", [str(root)])
    assert got == sorted((name, str(f)) for name, fs in files.items() for f in fs)
    got = q(con, "SELECT date::VARCHAR, path FROM prom_partitions(data_dir := ?, proxy := ['a/b', 'a%2Fb']) ORDER BY ALL",
            [str(root)])
    assert got == sorted([(D1, str(root / D1 / "a" / "b.parquet")), (D1, str(root / D1 / "a%2Fb.parquet")),
                          (D2, str(root / D2 / "a%2Fb.parquet")), (D2, str(root / D2 / "a%252Fb.parquet"))])


def test_go_archive_names_in_the_cli(mixed_archive):
    root, files = mixed_archive
    sql = (f"SELECT api_proxy, count(*), sum(value) FROM prom_metrics(data_dir := {lit(root)}, "
           "proxy := ['sp ace', 'a/b', 'a%2Fb', 'x%zz', '.hidden']) GROUP BY 1 ORDER BY 1;")
    r = run_cli_sql(sql, cwd=root.parent, load_extension=True)
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))[1:]
    want = sorted((n,) + agg_of(files[n]) for n in ["sp ace", "a/b", "a%2Fb", "x%zz", ".hidden"])
    assert [(p, int(c), float(s)) for p, c, s in rows] == want


# --- (7) foreign values convert exactly or fail ----------------------------------------------------------------------

def assert_error(con, sql, params, *needles):
    with pytest.raises(duckdb.Error) as e:
        q(con, sql, params)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))
    assert q(con, "SELECT 1") == [(1,)]


def test_foreign_values_convert_exactly_or_fail_naming_file_column_value(con, tmp_path):
    root = tmp_path / "data"
    good = write(root / D1 / "ok.parquet", "ok", D1, ["1.25", None, "-2e3"], promduck=False, value_type="VARCHAR",
                 date_type="VARCHAR", dates=[D1, None, D1])
    got = q(con, "SELECT value, date FROM prom_metrics(data_dir := ?, proxy := 'ok') ORDER BY timestamp", [str(root)])
    assert got == plain("SELECT value::DOUBLE, date::DATE FROM read_parquet(?) ORDER BY timestamp", [str(good)])
    bad_value = write(root / D1 / "v.parquet", "v", D1, ["1.5", "abc"], promduck=False, value_type="VARCHAR")
    assert_error(con, "SELECT sum(value) FROM prom_metrics(data_dir := ?, proxy := 'v')", [str(root)],
                 str(bad_value), "`value`", "'abc'")
    bad_date = write(root / D1 / "d.parquet", "d", D1, [1.0, 2.0], promduck=False, date_type="VARCHAR",
                     dates=[D1, "not-a-date"])
    # Even a query that does not select `date` reads it: the folder's day must hold.
    assert_error(con, "SELECT sum(value) FROM prom_metrics(data_dir := ?, proxy := 'd')", [str(root)],
                 str(bad_date), "`date`", "'not-a-date'")
    other_day = write(root / D1 / "o.parquet", "o", D1, [1.0, 2.0], promduck=False, dates=[D1, "2024-02-29"])
    assert_error(con, "SELECT count(*) FROM prom_metrics(data_dir := ?, proxy := 'o')", [str(root)],
                 str(other_day), "`date`", "2024-02-29", f"says {D1}")


def test_symlinked_day_folder_selected_alone_is_an_error(con, plain_archive):
    root, files = plain_archive
    os.symlink(D1, root / "2024-03-05")
    assert_error(con, "SELECT sum(value) FROM prom_metrics(data_dir := ?, date := '2024-03-05', proxy := 'api')", [str(root)],
                 str(root / "2024-03-05" / "api.parquet"), "`date`", D1, "says 2024-03-05")
    # Whole day: whichever file a thread reads first is named.
    assert_error(con, "SELECT count(*) FROM prom_metrics(data_dir := ?, date := '2024-03-05')", [str(root)],
                 str(root / "2024-03-05"), "`date`", D1, "says 2024-03-05")
    r = run_cli_sql(f"SELECT count(*) FROM prom_metrics(data_dir := {lit(root)}, date := '2024-03-05', proxy := 'web');",
                    cwd=root.parent, load_extension=True)
    assert r.returncode != 0
    assert str(root / "2024-03-05" / "web.parquet") in r.stderr and "says 2024-03-05" in r.stderr, r.stderr


def test_timestamps_convert_exactly_or_fail(con, tmp_path):
    root = tmp_path / "data"
    con.execute("SET TimeZone = 'UTC'")
    # Microsecond TIMESTAMPs (DuckDB's own) keep their microseconds.
    us = write(root / D1 / "us.parquet", "us", D1, [1.0, 2.0], promduck=False, ts_type="TIMESTAMP",
               timestamps=["TIMESTAMP '2024-03-01 00:00:00.123456'", "NULL"])
    got = q(con, "SELECT epoch_us(timestamp) FROM prom_metrics(data_dir := ?, proxy := 'us') ORDER BY value", [str(root)])
    assert got == plain("SELECT epoch_us(timestamp) FROM read_parquet(?) ORDER BY value", [str(us)])
    assert got == [(1709251200123456,), (None,)]
    # Epoch milliseconds past what a TIMESTAMP holds: an error, not infinity or a wrapped value.
    big = write(root / D1 / "big.parquet", "big", D1, [1.0], promduck=False, timestamps=["9223372036854775807"])
    assert_error(con, "SELECT timestamp FROM prom_metrics(data_dir := ?, proxy := 'big')", [str(root)],
                 str(big), "`timestamp`", "9223372036854775807")
