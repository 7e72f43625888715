"""End-to-end: the DuckDB extension in the real hosts (Python `duckdb`, the
`duckdb-cli` CLI) against partitions collected from a real Prometheus.

Expected values come from the history generator, never from promduck itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import (DUCKDB_CLI, EXTENSION, LATENCY_Q, REPO_ROOT, day_end_ms, partition_files, run_cli_sql,
                     run_collector, write_config)

WEIRD = 'we"ird/proxy'


def connect(threads=None):
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    if threads:
        con.execute(f"SET threads = {threads}")
    return con


@pytest.fixture(scope="module")
def data(prometheus, history, tmp_path_factory) -> Path:
    """Every day of the history collected into <tmp>/data, with the latency metric too."""
    work = tmp_path_factory.mktemp("ext-data")
    metrics = [
        {"name": "request_count", "query": 'sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)',
         "labels": ["apiproxy", "environment"]},
        {"name": "error_count", "query": 'sum(increase(apigee_error_count{apiproxy="%s"}[1d])) by (apiproxy, environment)',
         "labels": ["apiproxy", "environment"]},
        {"name": "latency_ms", "query": LATENCY_Q, "labels": ["apiproxy", "environment"], "step": "1h"},
    ]
    cfg = write_config(work / "config.yaml", prometheus.url, history.proxies, metrics=metrics)
    r = run_collector("--config", cfg, "--from", history.days_list[0], "--to", history.days_list[-1], cwd=work)
    assert r.returncode == 0, r.stderr
    return work / "data"


# `con` (the extension in-process): tests/conftest.py.


def totals(history, days, proxies, metric="request_count"):
    return {p: sum(history.expected[(d, p, e, metric)] for d in days for e in history.environments) for p in proxies}


def q(con, sql, params=None):
    return con.execute(sql, params or []).fetchall()


# --- prom_metrics -------------------------------------------------------------------------------------------------

def test_full_scan_matches_expected(con, data, history):
    rows = q(con, "SELECT api_proxy, metric_name, sum(value), count(*) FROM prom_metrics(data_dir := ?) "
                  "WHERE metric_name <> 'latency_ms' GROUP BY ALL ORDER BY ALL", [str(data)])
    want = []
    for p in sorted(history.proxies):
        for m in ("error_count", "request_count"):
            want.append((p, m, totals(history, history.days_list, [p], m)[p],
                         len(history.days_list) * len(history.environments)))
    assert rows == want


def test_columns_and_types(con, data, history):
    d = history.days_list[0]
    desc = q(con, "DESCRIBE SELECT * FROM prom_metrics(data_dir := ?)", [str(data)])
    assert [(r[0], r[1]) for r in desc] == [
        ("timestamp", "TIMESTAMP WITH TIME ZONE"), ("date", "DATE"), ("api_proxy", "VARCHAR"),
        ("metric_name", "VARCHAR"), ("value", "DOUBLE"), ("labels", "MAP(VARCHAR, VARCHAR)")]
    con.execute("SET TimeZone = 'UTC'")
    row = q(con, "SELECT epoch_ms(timestamp), date, api_proxy, metric_name, value, labels FROM prom_metrics("
                 "data_dir := ?, date := ?, proxy := 'api-proxy-1', metric := 'request_count') "
                 "WHERE labels['environment'] = 'prod'", [str(data), str(d)])
    assert row == [(day_end_ms(d), d, "api-proxy-1", "request_count",
                    history.expected[(d, "api-proxy-1", "prod", "request_count")],
                    {"apiproxy": "api-proxy-1", "environment": "prod"})]


@pytest.mark.parametrize("args", [
    "date := '{d1}'",
    "date := DATE '{d1}'",
    "start_date := '{d1}', end_date := '{d2}'",
    "start_date := DATE '{d1}', end_date := DATE '{d2}'",
    "date_range := '{d1}..{d2}'",
    "date_range := ['{d1}', '{d2}']",
    "date_range := '{d1}'",
])
def test_date_parameter_forms(con, data, history, args):
    d1, d2 = history.days_list[1], history.days_list[2]
    args = args.format(d1=d1, d2=d2)
    days = [d1] if "d2" not in args and str(d2) not in args else [d1, d2]
    got = dict(q(con, f"SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, {args}, metric := 'request_count') "
                      "GROUP BY 1", [str(data)]))
    assert got == totals(history, days, history.proxies)


def test_open_ended_ranges(con, data, history):
    d = history.days_list[2]
    got = q(con, "SELECT DISTINCT date FROM prom_metrics(data_dir := ?, start_date := ?) ORDER BY 1", [str(data), str(d)])
    assert [r[0] for r in got] == [x for x in history.days_list if x >= d]
    got = q(con, "SELECT DISTINCT date FROM prom_metrics(data_dir := ?, end_date := ?) ORDER BY 1", [str(data), str(d)])
    assert [r[0] for r in got] == [x for x in history.days_list if x <= d]


def test_proxy_and_metric_filters(con, data, history):
    got = dict(q(con, "SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, proxy := ['api-proxy-2', ?], "
                      "metric := ['request_count']) GROUP BY 1", [str(data), WEIRD]))
    assert got == totals(history, history.days_list, ["api-proxy-2", WEIRD])
    got = q(con, "SELECT DISTINCT metric_name FROM prom_metrics(data_dir := ?, metric := ['error_count', 'latency_ms']) "
                 "ORDER BY 1", [str(data)])
    assert got == [("error_count",), ("latency_ms",)]
    assert q(con, "SELECT count(*) FROM prom_metrics(data_dir := ?, proxy := 'no-such-proxy')", [str(data)]) == [(0,)]


def test_gauge_points_are_exact(con, data, history):
    d = history.days_list[3]
    con.execute("SET TimeZone = 'UTC'")
    got = q(con, "SELECT epoch(timestamp)::BIGINT, value FROM prom_metrics(data_dir := ?, date := ?, proxy := 'api-proxy-3', "
                 "metric := 'latency_ms') WHERE labels['environment'] = 'test' ORDER BY 1", [str(data), str(d)])
    start = int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())
    samples = dict(history.gauge_samples[("api-proxy-3", "test")])
    # The day is (00:00, 24:00]: hourly points 01:00 .. 24:00.
    assert got == [(start + h * 3600, samples[start + h * 3600]) for h in range(1, 25)]


def rows_per_day(history):
    """Rows of one day of the module's data: per proxy and environment two daily counters
    and 24 hourly latency points."""
    return len(history.proxies) * len(history.environments) * (2 + 24)


def scan_box(plan: str) -> str:
    """The PROM_METRICS node of an EXPLAIN tree (the box holding `Function: PROM_METRICS`)."""
    lines = plan.splitlines()
    at = next(i for i, l in enumerate(lines) if "Function: PROM_METRICS" in l)
    top = max(i for i in range(at + 1) if "─" in lines[i] and "Prom Metrics" in lines[i])
    bottom = next(i for i in range(at, len(lines)) if lines[i].lstrip().startswith("╰"))
    return "\n".join(l.strip(" │╭╮╰╯─┬┴") for l in lines[top + 1:bottom])


def test_projection_pushdown_and_count(con, data, history):
    n_counter = len(history.days_list) * len(history.proxies) * len(history.environments) * 2
    n_gauge = len(history.days_list) * len(history.proxies) * len(history.environments) * 24
    assert q(con, "SELECT count(*) FROM prom_metrics(data_dir := ?)", [str(data)]) == [(n_counter + n_gauge,)]
    assert q(con, "SELECT sum(value) FROM prom_metrics(data_dir := ?, metric := 'error_count')", [str(data)]) == [
        (sum(totals(history, history.days_list, history.proxies, "error_count").values()),)]
    # DuckDB asks the scan for exactly the columns the query uses (the node lists them);
    # test_projection_pushdown_never_reads_other_columns shows the scan reads no others.
    for sql, cols in [("SELECT value FROM prom_metrics(data_dir := ?)", ["value"]),
                      ("SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?) GROUP BY 1", ["api_proxy", "value"])]:
        plan = "\n".join(r[1] for r in q(con, "EXPLAIN " + sql, [str(data)]))
        box = scan_box(plan)
        projected = box.split("Projections:", 1)[1].split("~")[0].replace(",", " ").split()
        assert projected == cols, plan
        assert "labels" not in box and "timestamp" not in box, plan


def corrupt_column_chunks(path: Path, column: str) -> int:
    """Overwrites every column chunk of ``column`` (all its leaves, e.g. a MAP's key and
    value) with 0xFF bytes, located through the Parquet footer; the footer itself and
    every other column stay intact. Returns the number of bytes overwritten."""
    md = pq.ParquetFile(path).metadata
    ranges = []
    for rg in range(md.num_row_groups):
        for c in range(md.num_columns):
            chunk = md.row_group(rg).column(c)
            if chunk.path_in_schema.split(".")[0] != column:
                continue
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            ranges.append((start, chunk.total_compressed_size))
    assert ranges, f"{path} has no column {column}"
    with open(path, "r+b") as f:
        for start, size in ranges:
            f.seek(start)
            f.write(b"\xff" * size)
    return sum(size for _, size in ranges)


def test_projection_pushdown_never_reads_other_columns(con, data, history, tmp_path):
    """Only the columns a query uses are read: with every `labels` and `metric_name`
    column chunk of a partition overwritten by garbage, queries that do not use them
    answer exactly; one that does is an error naming the file."""
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    day, proxy = history.days_list[1], "api-proxy-2"
    target = copy / str(day) / f"{proxy}.parquet"
    size_before = target.stat().st_size
    assert corrupt_column_chunks(target, "labels") > 0
    assert corrupt_column_chunks(target, "metric_name") > 0
    assert target.stat().st_size == size_before
    counters = [history.expected[(day, proxy, e, m)] for e in history.environments for m in ("request_count", "error_count")]
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
    latency = [dict(history.gauge_samples[(proxy, e)])[start + h * 3600]
               for e in history.environments for h in range(1, 25)]
    sel = "data_dir := ?, date := ?, proxy := ?"
    args = [str(copy), str(day), proxy]
    assert q(con, f"SELECT count(*), sum(value) FROM prom_metrics({sel})", args) == [
        (len(counters) + len(latency), sum(counters) + sum(latency))]
    assert q(con, f"SELECT api_proxy, date, max(value) FROM prom_metrics({sel}) GROUP BY ALL", args) == [
        (proxy, day, max(counters + latency))]
    # The corruption is real: reading either column fails, naming the file.
    for col in ("labels", "metric_name"):
        with pytest.raises(duckdb.Error) as e:
            q(con, f"SELECT {col} FROM prom_metrics({sel})", args)
        assert str(target) in str(e.value), str(e.value)
    # A plain DuckDB reader over the same file fails too when it decodes those columns.
    with pytest.raises(duckdb.Error):
        duckdb.connect().execute("SELECT labels FROM read_parquet(?)", [str(target)]).fetchall()
    assert q(con, "SELECT 1") == [(1,)]


def expected_scan(history):
    """Every row of the module's data, from the generator, in the order of the scan test's
    ORDER BY (api_proxy, date, metric_name, timestamp, labels)."""
    rows = []
    for p in history.proxies:
        for d in history.days_list:
            end = datetime(d.year, d.month, d.day, tzinfo=timezone.utc) + timedelta(days=1)
            for e in history.environments:
                labels = {"apiproxy": p, "environment": e}
                for m in ("error_count", "request_count"):
                    rows.append((end, d, p, m, history.expected[(d, p, e, m)], labels))
                samples = dict(history.gauge_samples[(p, e)])
                for h in range(1, 25):
                    ts = end - timedelta(days=1) + timedelta(hours=h)
                    rows.append((ts, d, p, "latency_ms", samples[int(ts.timestamp())], labels))
    key = lambda r: (r[2], r[1], r[3], r[0], str(sorted(r[5].items())))
    return sorted(rows, key=key)


def test_parallel_scan_equals_serial(data, history):
    """threads = 1 and threads = 4 return exactly the generator's rows (that several
    threads really read files is shown in tests/test_claims_extension.py with strace)."""
    sql = ("SELECT timestamp, date, api_proxy, metric_name, value, labels FROM prom_metrics(data_dir := ?) "
           "ORDER BY api_proxy, date, metric_name, timestamp, labels::VARCHAR")
    want = expected_scan(history)
    assert len(want) == len(history.days_list) * rows_per_day(history)
    for threads in (1, 4):
        c = connect(threads=threads)
        c.execute("SET TimeZone = 'UTC'")
        got = c.execute(sql, [str(data)]).fetchall()
        assert [(r[0].astimezone(timezone.utc), *r[1:]) for r in got] == want, f"threads={threads}"


def test_pruning_never_opens_files_outside_the_selection(con, data, history, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    bad_day, good_day = history.days_list[0], history.days_list[1]
    corrupt = copy / str(bad_day) / "api-proxy-1.parquet"
    corrupt.write_bytes(b"this is not parquet")
    (copy / str(good_day) / "api-proxy-3.parquet").write_bytes(b"PAR1 broken too")
    # Other days: fine. Same day, other proxies: fine.
    got = dict(q(con, "SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, date := ?, metric := 'request_count') "
                      "GROUP BY 1", [str(copy), str(history.days_list[2])]))
    assert got == totals(history, [history.days_list[2]], history.proxies)
    got = dict(q(con, "SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, proxy := 'api-proxy-2', "
                      "metric := 'request_count') GROUP BY 1", [str(copy)]))
    assert got == totals(history, history.days_list, ["api-proxy-2"])
    # Selecting the corrupt file is an error that names it, and the connection lives on.
    with pytest.raises(duckdb.Error) as e:
        q(con, "SELECT count(*) FROM prom_metrics(data_dir := ?, date := ?)", [str(copy), str(bad_day)])
    assert str(corrupt) in str(e.value)
    assert q(con, "SELECT 1") == [(1,)]


def test_temp_files_and_foreign_files_are_ignored(con, data, history, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    d = history.days_list[0]
    (copy / str(d) / ".api-proxy-1.parquet.123-0.promduck-tmp").write_bytes(b"half written")
    (copy / str(d) / "README.txt").write_text("not data")
    (copy / "not-a-day").mkdir()
    got = dict(q(con, "SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, date := ?, metric := 'request_count') "
                      "GROUP BY 1", [str(copy), str(d)]))
    assert got == totals(history, [d], history.proxies)


def test_prom_partitions_lists_without_opening(con, data, history, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / str(history.days_list[0]) / "api-proxy-1.parquet").write_bytes(b"corrupt but listed")
    rows = q(con, "SELECT date, api_proxy, path, bytes FROM prom_partitions(data_dir := ?) ORDER BY 1, 2", [str(copy)])
    want = sorted((d, p) for d in history.days_list for p in history.proxies)
    assert [(r[0], r[1]) for r in rows] == want
    assert all(Path(r[2]).stat().st_size == r[3] for r in rows)
    # Columns are produced as projected (a listing of days and proxies formats no path and
    # stats no file): any order and subset gives the same values.
    assert q(con, "SELECT count(*) FROM prom_partitions(data_dir := ?)", [str(copy)]) == [(len(want),)]
    back = q(con, "SELECT bytes, path, api_proxy, date FROM prom_partitions(data_dir := ?) ORDER BY 4, 3", [str(copy)])
    assert back == [tuple(reversed(r)) for r in rows]
    assert q(con, "SELECT bytes, date FROM prom_partitions(data_dir := ?) ORDER BY 2, path", [str(copy)]) == \
        [(r[3], r[0]) for r in rows]
    rows = q(con, "SELECT api_proxy FROM prom_partitions(data_dir := ?, date := ?, proxy := ['api-proxy-2', 'zzz'])",
             [str(copy), str(history.days_list[1])])
    assert rows == [("api-proxy-2",)]


def test_empty_lists_select_nothing(con, data):
    assert q(con, "SELECT count(*) FROM prom_metrics(data_dir := ?, proxy := ?)", [str(data), []]) == [(0,)]
    assert q(con, "SELECT count(*) FROM prom_metrics(data_dir := ?, metric := ?)", [str(data), []]) == [(0,)]


def test_table_macro_parameters_get_a_helpful_error(data):
    r = subprocess.run([str(DUCKDB_CLI), "-unsigned", "-csv", "-c",
                        f"LOAD '{EXTENSION}'; CREATE TEMP MACRO mx(v) AS TABLE SELECT * FROM prom_metrics(data_dir := '{data}', date := v); "
                        "SELECT count(*) FROM mx('2024-03-01');"], capture_output=True, text=True, timeout=60)
    # The pinned CLI (tests/requirements.txt) hands the function a column reference, not
    # the value: an error saying what to do instead, and no result.
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout == ""
    assert ("date: got a table-macro parameter, which DuckDB does not pass to table functions as a value; "
            "use SET VARIABLE and getvariable('name') for date, or filter with WHERE") in r.stderr, r.stderr


def test_empty_selection_and_missing_dir(con, data, tmp_path):
    assert q(con, "SELECT count(*) FROM prom_metrics(data_dir := ?, date := '1999-01-01')", [str(data)]) == [(0,)]
    (tmp_path / "empty").mkdir()
    assert q(con, "SELECT count(*) FROM prom_metrics(data_dir := ?)", [str(tmp_path / "empty")]) == [(0,)]
    with pytest.raises(duckdb.Error) as e:
        q(con, "SELECT * FROM prom_metrics(data_dir := ?)", [str(tmp_path / "nope")])
    assert str(tmp_path / "nope") in str(e.value)


def test_default_data_dir_from_environment(data, history):
    env = dict(os.environ, PROMDUCK_DATA_DIR=str(data))
    code = ("import duckdb; c = duckdb.connect(config={'allow_unsigned_extensions': 'true'}); "
            f"c.execute(\"LOAD '{EXTENSION}'\"); "
            "print(c.execute(\"SELECT count(DISTINCT api_proxy) FROM prom_metrics()\").fetchone()[0])")
    r = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "python"), "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(len(history.proxies))


@pytest.mark.parametrize("now", ["2024-03-10T00:00:00Z", "2024-03-10T23:59:59Z", "2024-03-11T09:59:59+10:00"])
def test_last_days_is_relative_to_today(con, tmp_path, monkeypatch, now):
    """Partitions for recent days written with pyarrow in the collector's schema; "today"
    is PROMDUCK_NOW's day in UTC (2024-03-10 at both ends of it, whatever the offset
    written), not the process's zone (TZ set 14 h ahead)."""
    monkeypatch.setenv("PROMDUCK_NOW", now)
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    today = date(2024, 3, 10)
    root = tmp_path / "data"
    for back in range(0, 10):
        day = today - timedelta(days=back)
        write_partition(root / str(day) / "p.parquet", day, "p", [("m", float(back))])
    for n in (1, 3, 7):
        got = q(con, "SELECT sum(value), min(date), max(date) FROM prom_metrics(data_dir := ?, last_days := ?)", [str(root), n])
        assert got == [(float(sum(range(1, n + 1))), today - timedelta(days=n), today - timedelta(days=1))]
    got = q(con, "SELECT count(*) FROM prom_metrics(data_dir := ?, date_range := 3)", [str(root)])
    assert got == [(3,)]


def write_partition(path: Path, day: date, proxy: str, rows, labels_as_list=False, extra_cols=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)
    cols = {"timestamp": pa.array([ts + i for i in range(len(rows))], pa.int64()),
            "metric_name": pa.array([r[0] for r in rows]), "value": pa.array([r[1] for r in rows], pa.float64())}
    if extra_cols:
        cols["api_proxy"] = pa.array([proxy] * len(rows))
        cols["date"] = pa.array([day] * len(rows), pa.date32())
    if labels_as_list:
        t = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
        cols["labels"] = pa.array([[{"key": "environment", "value": "prod"}]] * len(rows), t)
    else:
        cols["labels"] = pa.array([[("environment", "prod")]] * len(rows), pa.map_(pa.string(), pa.string()))
    pq.write_table(pa.table(cols), path)


def test_reads_the_original_tools_layouts(con, tmp_path):
    root = tmp_path / "archive"
    d = date(2023, 4, 1)
    # The Go tool's daily layout, its `date` as a string.
    p = root / "2023-04-01" / "api-proxy-1.parquet"
    p.parent.mkdir(parents=True)
    pq.write_table(pa.table({
        "timestamp": pa.array([1680393600000], pa.int64()), "metric_name": ["request_count"], "value": [10.0],
        "api_proxy": ["api-proxy-1"], "date": ["2023-04-01"],
        "labels": pa.array([[{"key": "environment", "value": "prod"}]],
                           pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())])))}), p)
    # Its Hive layout: year=/month=/day=/app=, labels as a list of key/value structs, no api_proxy/date columns.
    write_partition(root / "year=2023" / "month=04" / "day=02" / "app=api-proxy-2" / "part-0.parquet", date(2023, 4, 2),
                    "api-proxy-2", [("request_count", 5.0), ("error_count", 1.0)], labels_as_list=True, extra_cols=False)
    write_partition(root / "year=2023" / "month=05" / "day=01" / "app=api-proxy-2" / "part-0.parquet", date(2023, 5, 1),
                    "api-proxy-2", [("request_count", 7.0)], labels_as_list=True, extra_cols=False)
    got = q(con, "SELECT date, api_proxy, metric_name, value, labels FROM prom_metrics(data_dir := ?, "
                 "start_date := '2023-04-01', end_date := '2023-04-30') ORDER BY ALL", [str(root)])
    env = {"environment": "prod"}
    assert got == [(d, "api-proxy-1", "request_count", 10.0, env),
                   (date(2023, 4, 2), "api-proxy-2", "error_count", 1.0, env),
                   (date(2023, 4, 2), "api-proxy-2", "request_count", 5.0, env)]
    got = q(con, "SELECT sum(value) FROM prom_metrics(data_dir := ?, proxy := 'api-proxy-2', metric := 'request_count')",
            [str(root)])
    assert got == [(12.0,)]


# --- timestamp_ms and the seed's SQL --------------------------------------------------------------------------

def test_timestamp_ms_scalar(con):
    assert q(con, "SELECT timestamp_ms(1709337600123), timestamp_ms(NULL)") == [
        (datetime(2024, 3, 2, 0, 0, 0, 123000), None)]
    with pytest.raises(duckdb.Error, match="out of the TIMESTAMP range"):
        q(con, "SELECT timestamp_ms(9223372036854775807)")
    assert q(con, "SELECT 2") == [(2,)]


def test_seed_basic_query_runs_unchanged_in_cli(data, history):
    day = history.days_list[0]
    sql = f"""SELECT
    TIMESTAMP_MS(timestamp) as timestamp,
    metric_name,
    value,
    api_proxy,
    date
FROM '{data}/{day}/api-proxy-1.parquet'
ORDER BY timestamp, metric_name, value;"""
    r = run_cli_sql(sql, cwd=data.parent, load_extension=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "timestamp,metric_name,value,api_proxy,date"
    counters = [l.split(",") for l in lines[1:] if not l.split(",")[1].startswith("latency")]
    end = datetime.fromtimestamp(day_end_ms(day) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert sorted((r[0], r[1], float(r[2])) for r in counters) == sorted(
        (end, m, history.expected[(day, "api-proxy-1", e, m)]) for m in ("request_count", "error_count")
        for e in history.environments)


def test_cli_done_criterion_query(data, history):
    sql = ("SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := '%s', start_date := '%s', end_date := '%s') "
           "WHERE metric_name = 'request_count' GROUP BY 1 ORDER BY 1;" % (data, history.days_list[0], history.days_list[-1]))
    r = run_cli_sql(sql, cwd=data.parent, load_extension=True)
    assert r.returncode == 0, r.stderr
    import csv
    import io
    rows = list(csv.reader(io.StringIO(r.stdout)))[1:]
    assert {p: float(v) for p, v in rows} == totals(history, history.days_list, history.proxies)


def test_install_and_load_by_name_from_local_repository(tmp_path):
    repo = EXTENSION.parent / "repository"
    sql = (f"SET extension_directory = '{tmp_path / 'ext'}'; INSTALL promduck FROM '{repo}'; LOAD promduck; "
           "SELECT timestamp_ms(86400000);")
    r = subprocess.run([str(DUCKDB_CLI), "-unsigned", "-csv", "-c", sql], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "1970-01-02 00:00:00"
    con = duckdb.connect(config={"allow_unsigned_extensions": "true", "extension_directory": str(tmp_path / "ext2")})
    con.execute(f"INSTALL promduck FROM '{repo}'")
    con.execute("LOAD promduck")
    assert con.execute("SELECT timestamp_ms(0)").fetchone()[0] == datetime(1970, 1, 1)


# --- prom_collect ---------------------------------------------------------------------------------------------

def test_prom_collect_writes_partitions_idempotently(con, prometheus, history, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1", WEIRD])
    d1, d2 = history.days_list[0], history.days_list[1]
    # DESCRIBE binds without executing: nothing may be written.
    q(con, "DESCRIBE SELECT * FROM prom_collect(config := ?, start_date := ?, end_date := ?)", [str(cfg), str(d1), str(d2)])
    assert not (tmp_path / "data").exists()
    for _ in range(2):
        rows = q(con, "SELECT date, api_proxy, rows, status, error, path FROM prom_collect(config := ?, "
                      "start_date := ?, end_date := ?) ORDER BY 1, 2", [str(cfg), str(d1), str(d2)])
        assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
            (d, p, 2 * len(history.environments), "written", None) for d in (d1, d2) for p in sorted(["api-proxy-1", WEIRD])]
        assert all(Path(r[5]).is_file() for r in rows)
    got = dict(q(con, "SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, metric := 'request_count') GROUP BY 1",
                 [str(tmp_path / "data")]))
    assert got == totals(history, [d1, d2], ["api-proxy-1", WEIRD])
    assert partition_files(tmp_path / "data") == {f"{d}/{n}.parquet" for d in (d1, d2)
                                                  for n in ("api-proxy-1", "we%22ird%2Fproxy")}


def test_prom_collect_reports_failures_per_partition(con, prometheus, history, tmp_path):
    metrics = [{"name": "broken", "query": 'rate(x{apiproxy="%s"}[5m]'}]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"], metrics=metrics)
    rows = q(con, "SELECT date, api_proxy, rows, status, error FROM prom_collect(config := ?, date := ?)",
             [str(cfg), str(history.days_list[0])])
    assert [r[:4] for r in rows] == [(history.days_list[0], "api-proxy-1", 0, "failed")]
    assert rows[0][4].startswith("broken: Prometheus returned HTTP 400 (bad_data)"), rows
    assert not (tmp_path / "data").exists() or partition_files(tmp_path / "data") == set()


# --- live PromQL ----------------------------------------------------------------------------------------------

def test_prom_query_instant_exact(con, prometheus, history):
    d = history.days_list[1]
    at = datetime.fromtimestamp(day_end_ms(d) / 1000, tz=timezone.utc)
    rows = q(con, "SELECT labels['apiproxy'], labels['environment'], value, timestamp FROM prom_query("
                  "'sum(increase(apigee_request_count[1d])) by (apiproxy, environment)', url := ?, at := ?)",
             [prometheus.url, at])
    assert {(r[0], r[1]): r[2] for r in rows} == {(p, e): history.expected[(d, p, e, "request_count")]
                                                  for p in history.proxies for e in history.environments}
    assert {r[3] for r in rows} == {at}
    rows = q(con, 'SELECT metric_name, value FROM prom_query(\'apigee_latency_ms{apiproxy="api-proxy-1",environment="prod"}\', '
                  'url := ?, "time" := ?)', [prometheus.url, at])
    samples = dict(history.gauge_samples[("api-proxy-1", "prod")])
    assert rows == [("apigee_latency_ms", samples[int(at.timestamp())])]


def test_prom_query_range_splits_past_the_point_limit(con, prometheus, history):
    d = history.days_list[2]
    start = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
    end = start + timedelta(hours=4)  # 14,401 points at 1 s: more than Prometheus's 11,000 per request
    rows = q(con, "SELECT epoch(timestamp)::BIGINT, value FROM prom_query_range("
                  "'apigee_latency_ms{apiproxy=\"api-proxy-2\",environment=\"test\"}', ?, ?, INTERVAL 1 SECOND, url := ?) "
                  "ORDER BY 1", [start, end, prometheus.url])
    samples = dict(history.gauge_samples[("api-proxy-2", "test")])
    s0 = int(start.timestamp())
    assert len(rows) == 4 * 3600 + 1
    assert rows == [(t, samples[t - (t - s0) % 60]) for t in range(s0, s0 + 4 * 3600 + 1)]
    rows = q(con, "SELECT count(*) FROM prom_query_range('apigee_latency_ms', ?, ?, '1h', url := ?)",
             [start, start + timedelta(days=1), prometheus.url])
    assert rows == [(25 * len(history.proxies) * len(history.environments),)]


def test_labels_values_series(con, prometheus, history):
    labels = [r[0] for r in q(con, "SELECT * FROM prom_labels(url := ?) ORDER BY 1", [prometheus.url])]
    assert labels == ["__name__", "apiproxy", "environment"]
    values = [r[0] for r in q(con, "SELECT * FROM prom_label_values('apiproxy', url := ?) ORDER BY 1", [prometheus.url])]
    assert values == sorted(history.proxies)
    series = q(con, "SELECT metric_name, labels FROM prom_series('apigee_error_count{environment=\"prod\"}', url := ?) "
                    "ORDER BY labels['apiproxy']", [prometheus.url])
    assert series == [("apigee_error_count", {"apiproxy": p, "environment": "prod"}) for p in sorted(history.proxies)]


def test_label_columns(con, prometheus, history, data):
    """labels := [...]: one VARCHAR column per label after the fixed ones, NULL where a series lacks it."""
    d = history.days_list[1]
    at = datetime.fromtimestamp(day_end_ms(d) / 1000, tz=timezone.utc)
    rows = q(con, "SELECT * FROM prom_query('sum(increase(apigee_request_count[1d])) by (apiproxy, environment)', "
                  "url := ?, at := ?, labels := ['environment', 'apiproxy', 'missing', '__name__'])", [prometheus.url, at])
    assert sorted(rows, key=str) == sorted(((None, {"apiproxy": p, "environment": e}, at,
                                             history.expected[(d, p, e, "request_count")], e, p, None, None)
                                            for p in history.proxies for e in history.environments), key=str)
    start = datetime(d.year, d.month, d.day, 12, tzinfo=timezone.utc)
    rows = q(con, "SELECT environment, __name__, epoch(timestamp)::BIGINT, value FROM prom_query_range("
                  "'apigee_latency_ms{apiproxy=\"api-proxy-1\"}', ?, ?, '1m', url := ?, labels := ['environment', '__name__'])",
             [start, start + timedelta(minutes=2), prometheus.url])
    s0 = int(start.timestamp())
    assert sorted(rows) == sorted((e, "apigee_latency_ms", t, dict(history.gauge_samples[("api-proxy-1", e)])[t])
                                  for e in history.environments for t in (s0, s0 + 60, s0 + 120))
    rows = q(con, "SELECT apiproxy, environment, metric_name FROM prom_series('apigee_error_count', url := ?, "
                  "labels := ['apiproxy', 'environment'])", [prometheus.url])
    assert sorted(rows) == sorted((p, e, "apigee_error_count") for p in history.proxies for e in history.environments)
    # the archive: the keys of its labels map
    rows = q(con, "SELECT api_proxy, environment, apiproxy, nope, value FROM prom_metrics(data_dir := ?, date := ?, "
                  "metric := 'request_count', labels := ['environment', 'apiproxy', 'nope'])", [str(data), d])
    assert sorted(rows) == sorted((p, e, p, None, history.expected[(d, p, e, "request_count")])
                                  for p in history.proxies for e in history.environments)
    # only a label column projected (the labels map is read for it), after `source`
    rows = q(con, "SELECT environment, count(*) FROM prom_metrics(data_dir := ?, date := ?, source := true, "
                  "labels := ['environment']) GROUP BY 1 ORDER BY 1", [str(data), d])
    assert rows == duckdb.connect().execute("SELECT labels['environment'], count(*) FROM read_parquet(?) GROUP BY 1 "
                                            "ORDER BY 1", [str(data / str(d) / "*.parquet")]).fetchall()
    assert [r[0] for r in rows] == sorted(history.environments)
    cols = [r[0] for r in q(con, "DESCRIBE SELECT * FROM prom_metrics(data_dir := ?, source := true, labels := ['b', 'a'])",
                            [str(data)])]
    assert cols == ["timestamp", "date", "api_proxy", "metric_name", "value", "labels", "source", "b", "a"]


def test_a_list_of_expressions_is_one_table_with_a_query_column(con, prometheus, history):
    d = history.days_list[2]
    at = datetime.fromtimestamp(day_end_ms(d) / 1000, tz=timezone.utc)
    queries = ['sum(increase(apigee_request_count[1d])) by (apiproxy, environment)',
               'sum(increase(apigee_error_count[1d])) by (apiproxy, environment)']
    rows = q(con, "SELECT query, apiproxy, environment, value FROM prom_query(?, url := ?, at := ?, "
                  "labels := ['apiproxy', 'environment'])", [queries, prometheus.url, at])
    assert sorted(rows) == sorted((qq, p, e, history.expected[(d, p, e, m)])
                                  for qq, m in zip(queries, ("request_count", "error_count"))
                                  for p in history.proxies for e in history.environments)
    start = datetime(d.year, d.month, d.day, 6, tzinfo=timezone.utc)
    sel = ['apigee_latency_ms{apiproxy="api-proxy-2",environment="prod"}',
           'apigee_latency_ms{apiproxy="api-proxy-3",environment="test"}']
    rows = q(con, "SELECT query, epoch(timestamp)::BIGINT, value FROM prom_query_range(?, ?, ?, INTERVAL 1 MINUTE, url := ?)",
             [sel, start, start + timedelta(hours=1), prometheus.url])
    s0 = int(start.timestamp())
    assert sorted(rows) == sorted((qq, t, dict(history.gauge_samples[key])[t])
                                  for qq, key in zip(sel, [("api-proxy-2", "prod"), ("api-proxy-3", "test")])
                                  for t in range(s0, s0 + 3601, 60))
    # max_samples bounds the whole call: each expression alone fits, both together do not
    n = 61 * len(history.environments)  # one proxy's two series, 61 steps
    one = 'apigee_latency_ms{apiproxy="api-proxy-1"}'
    args = [start, start + timedelta(hours=1), prometheus.url]
    assert q(con, "SELECT count(*) FROM prom_query_range(?, ?, ?, '1m', url := ?, max_samples := ?)", [one, *args, n]) == [(n,)]
    with pytest.raises(duckdb.Error) as e:
        q(con, "SELECT count(*) FROM prom_query_range(?, ?, ?, '1m', url := ?, max_samples := ?)",
          [[one, one], *args, 2 * n - 1])
    assert f"the call's queries have more than {2 * n - 1} samples together" in str(e.value)
    assert q(con, "SELECT count(*) FROM prom_query_range(?, ?, ?, '1m', url := ?, max_samples := ?)",
             [[one, one], *args, 2 * n]) == [(2 * n,)]
    # a failing expression fails the call, named
    with pytest.raises(duckdb.Error) as e:
        q(con, "SELECT * FROM prom_query(['up', 'sum(up'], url := ?)", [prometheus.url])
    assert 'query 2 of 2 ("sum(up"): Prometheus returned HTTP 400 (bad_data)' in str(e.value)
    cols = [r[0] for r in q(con, "DESCRIBE SELECT * FROM prom_query(['up'], labels := ['x'])")]
    assert cols == ["query", "metric_name", "labels", "timestamp", "value", "x"]


def test_expressions_run_concurrently_within_one_timeout():
    """A server that answers no query before three are waiting at once: a list of three
    expressions gets its rows only if they run concurrently (sequentially, the first would wait
    for the others forever). An expression the server never answers ends the call at the
    whole call's `timeout`, named."""
    import json
    import threading
    import urllib.parse
    from http.server import BaseHTTPRequestHandler

    from helpers import serve_http

    barrier = threading.Barrier(3)

    class Server(BaseHTTPRequestHandler):
        def do_POST(self):
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            query = form["query"][0]
            if query == "hang":
                threading.Event().wait(60)
                return
            try:
                if query != "vector(0)":  # answered at once
                    barrier.wait(timeout=30)
                status, body = 200, {"status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {"q": query}, "value": [1709251200, query.removeprefix("vector(").rstrip(")")]}]}}
            except threading.BrokenBarrierError:
                status, body = 400, {"status": "error", "errorType": "bad_data", "error": "not concurrent"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = serve_http(Server)
    try:
        con = connect()
        rows = q(con, "SELECT query, q, value FROM prom_query(['vector(1)', 'vector(2)', 'vector(3)'], url := ?, "
                      "labels := ['q'], timeout := '60s')", [server.url])
        assert sorted(rows) == [(f"vector({i})", f"vector({i})", float(i)) for i in (1, 2, 3)]
        with pytest.raises(duckdb.Error) as e:
            q(con, "SELECT * FROM prom_query(['vector(0)', 'hang'], url := ?, timeout := '1s')", [server.url])
        assert str(e.value).startswith(f"Invalid Input Error: query 2 of 2 (\"hang\"): Prometheus at {server.url}/ "
                                       "gave no complete answer within the timeout of 1s for the whole call"), str(e.value)
    finally:
        server.shutdown()
        server.server_close()


def prom_metadata_http(server, params=None, auth=None):
    """/api/v1/metadata straight from the server, as prom_metadata's rows."""
    import base64
    import json
    import urllib.parse
    import urllib.request
    url = server.url + "/api/v1/metadata" + ("?" + urllib.parse.urlencode(params) if params else "")
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        data = json.load(r)["data"]
    return sorted((name, m["type"], m["help"], m["unit"]) for name, ms in data.items() for m in ms)


def test_prom_metadata(con, prometheus_metadata, prometheus_auth):
    from conftest import exporter_metadata
    want = exporter_metadata()
    assert prom_metadata_http(prometheus_metadata) == want
    assert q(con, "SELECT * FROM prom_metadata(url := ?) ORDER BY ALL", [prometheus_metadata.url]) == want
    assert q(con, "SELECT * FROM prom_metadata(url := ?, metric := 'promduck_test_duration_seconds')",
             [prometheus_metadata.url]) == [w for w in want if w[0] == "promduck_test_duration_seconds"]
    assert q(con, "SELECT * FROM prom_metadata(url := ?, metric := 'no_such_metric')", [prometheus_metadata.url]) == []
    two = q(con, "SELECT * FROM prom_metadata(url := ?, \"limit\" := 2)", [prometheus_metadata.url])
    assert len(two) == 2 and set(two) <= set(want)
    # the same credentials as the other live functions (this server has no metadata: nothing scraped)
    user, password = prometheus_auth.basic_auth
    assert q(con, "SELECT * FROM prom_metadata(url := ?, username := ?, password := ?)",
             [prometheus_auth.url, user, password]) == prom_metadata_http(prometheus_auth, auth=(user, password)) == []
    secret = "wrong-secret-271828"
    with pytest.raises(duckdb.Error) as e:
        q(con, "SELECT * FROM prom_metadata(url := ?, username := ?, password := ?)", [prometheus_auth.url, user, secret])
    assert "401" in str(e.value) and secret not in str(e.value)
    with pytest.raises(duckdb.Error) as e:
        q(con, "SELECT * FROM prom_metadata(url := ?, max_response_bytes := 10)", [prometheus_metadata.url])
    assert "larger than the limit of 10 bytes" in str(e.value)


def test_connection_from_config_and_environment(prometheus, history, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    con = connect()
    assert sorted(r[0] for r in q(con, "SELECT * FROM prom_label_values('environment', config := ?)", [str(cfg)])) == \
        sorted(history.environments)
    env = dict(os.environ, PROMDUCK_PROMETHEUS_URL=prometheus.url)
    code = ("import duckdb; c = duckdb.connect(config={'allow_unsigned_extensions': 'true'}); "
            f"c.execute(\"LOAD '{EXTENSION}'\"); print(len(c.execute('SELECT * FROM prom_labels()').fetchall()))")
    r = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "python"), "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"


def test_basic_auth_and_no_leak(con, prometheus_auth):
    user, password = prometheus_auth.basic_auth
    rows = q(con, "SELECT * FROM prom_label_values('environment', url := ?, username := ?, password := ?)",
             [prometheus_auth.url, user, password])
    assert sorted(r[0] for r in rows) == ["prod", "test"]
    secret = "wrong-secret-314159"
    with pytest.raises(duckdb.Error) as e:
        q(con, "SELECT * FROM prom_labels(url := ?, username := ?, password := ?)", [prometheus_auth.url, user, secret])
    assert "401" in str(e.value) and secret not in str(e.value)
    with pytest.raises(duckdb.Error) as e:
        q(con, "SELECT * FROM prom_labels(url := ?)", [prometheus_auth.url.replace("http://", f"http://{user}:{secret}@")])
    assert "401" in str(e.value) and secret not in str(e.value)
    assert q(con, "SELECT 3") == [(3,)]


def test_double_bind_in_python_runs_collection_once(prometheus, history, tmp_path):
    """Python's con.sql(...).fetchall() binds twice; the side effect must happen once (in func)."""
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    con = connect()
    rows = con.sql(f"SELECT status FROM prom_collect(config := '{cfg}', date := '{history.days_list[0]}')").fetchall()
    assert rows == [("written",)]
    assert partition_files(tmp_path / "data") == {f"{history.days_list[0]}/api-proxy-1.parquet"}


# --- misuse: each error is clear, and the connection keeps working ------------------------------------------------

MISUSE = [
    ("SELECT * FROM prom_metrics(data_dir := '{data}', last_days := 'abc')", 'last_days must be an integer between 1 and 36600, got VARCHAR "abc"'),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', no_such_param := 1)", "no_such_param"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', start_date := '2024-03-04', end_date := '2024-03-01')",
     "start date 2024-03-04 is after end date 2024-03-01"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', date := '2024-02-30')", 'date: invalid date "2024-02-30"'),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', date := '2024-03-01', last_days := 3)", "conflicts"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', last_days := 0)", "last_days must be between 1"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', proxy := 42)", "proxy must be a string or a list"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', date_range := ['2024-03-01'])", "exactly two dates"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}/missing')", "missing"),
    ("SELECT * FROM prom_query('up', url := 'http://127.0.0.1:9')", "cannot reach Prometheus at http://127.0.0.1:9/"),
    ("SELECT * FROM prom_query('sum(up', url := '{url}')", "parse error"),
    ("SELECT * FROM prom_query('up', url := 'ftp://x')", "scheme `ftp` is not supported"),
    ("SELECT * FROM prom_query('up')", "no Prometheus URL"),
    ("SELECT * FROM prom_query(NULL, url := '{url}')", "query must not be NULL"),
    ("SELECT * FROM prom_query('up', url := '{url}', timeout := 'soon')", "timeout: invalid duration"),
    ("SELECT * FROM prom_query_range('up', '2024-03-02', '2024-03-01', '1m', url := '{url}')", "is after end"),
    ("SELECT * FROM prom_query_range('up', '2024-03-01', '2024-03-02', 'often', url := '{url}')", ("step: invalid", "`often`")),
    ("SELECT * FROM prom_query_range('up', '2024-03-01', '2024-03-02', 'often')", ("step: invalid", "`often`")),
    ("SELECT * FROM prom_query('up', url := '{url}', labels := ['env', 'value'])",
     'labels: "value" would be a second column named "value"'),
    ("SELECT * FROM prom_query(['up'], url := '{url}', labels := ['Query'])", 'labels: "Query" would be a second column named "query"'),
    ("SELECT * FROM prom_series('up', url := '{url}', labels := ['env', 'env'])", 'labels: "env" is named twice'),
    ("SELECT * FROM prom_query_range('up', '2024-03-01', '2024-03-02', '1h', url := '{url}', labels := 42)",
     "labels must be a list of label names (VARCHAR[]), got INTEGER"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', labels := ['METRIC_NAME'])",
     'labels: "METRIC_NAME" would be a second column named "metric_name"'),
    ("SELECT * FROM prom_query([], url := '{url}')", "query: the list of expressions is empty"),
    ("SELECT * FROM prom_query(['up', NULL], url := '{url}')", "query 2 of the list must not be NULL"),
    ("SELECT * FROM prom_query_range(['up', 'sum(up'], '2024-03-01', '2024-03-02', '1h', url := '{url}')",
     'query 2 of 2 ("sum(up"): Prometheus returned HTTP 400'),
    ("SELECT * FROM prom_metadata(url := '{url}', \"limit\" := 0)", "limit must be a positive whole number of metrics"),
    ("SELECT * FROM prom_metadata(url := '{url}', metric := 42)", "metric must be a metric name (VARCHAR), got INTEGER"),
    ("SELECT * FROM prom_metadata()", "no Prometheus URL"),
    # prom_collect without config: depends on the working directory and $PROMDUCK_CONFIG,
    # see tests/test_claims_extension.py::test_prom_collect_config_defaults_to_promduck_config.
    ("SELECT * FROM prom_collect(config := '/nonexistent/c.yaml')", "/nonexistent/c.yaml: cannot read config file"),
    ("SELECT * FROM prom_collect(config := '{cfg}', date := '2999-01-01')", "has not ended yet"),
    ("SELECT * FROM prom_collect(config := '{cfg}', start_date := '2024-03-01')", "start_date and end_date go together"),
    ("SELECT timestamp_ms('x')", "Could not convert"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', date := '2024-03-01 garbage')", 'invalid date "2024-03-01 garbage"'),
    ("SELECT * FROM prom_partitions(data_dir := '{data}/nope')", "/nope: No such file or directory"),
]


@pytest.mark.parametrize("sql,needle", MISUSE)
def test_misuse_errors_are_clear_and_connection_survives(con, data, history, prometheus, tmp_path, sql, needle):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    sql = sql.format(data=data, url=prometheus.url, cfg=cfg)
    with pytest.raises(duckdb.Error) as e:
        con.execute(sql).fetchall()
    for n in (needle,) if isinstance(needle, str) else needle:
        assert n in str(e.value), str(e.value)
    assert q(con, "SELECT count(*) FROM prom_metrics(data_dir := ?, date := '2024-03-01')", [str(data)]) == [
        (rows_per_day(history),)]


def test_misuse_in_cli_keeps_session(data, history):
    sql = (f"SELECT * FROM prom_metrics(data_dir := '{data}', date := 'nope');\n"
           f"SELECT count(*) AS n FROM prom_metrics(data_dir := '{data}', date := '2024-03-01');")
    r = subprocess.run([str(DUCKDB_CLI), "-unsigned", "-csv"], input=f"LOAD '{EXTENSION}';\n{sql}\n",
                       capture_output=True, text=True, timeout=60)
    assert 'invalid date "nope"' in r.stderr
    assert r.stdout.strip().splitlines() == ["n", str(rows_per_day(history))]


def test_panics_never_cross_into_duckdb():
    """A deliberate panic in bind, init and func (test-only function, registered when
    PROMDUCK_TEST_PANIC=1) becomes a DuckDB error; the process and connection live on."""
    code = f"""
import duckdb
con = duckdb.connect(config={{'allow_unsigned_extensions': 'true'}})
con.execute("LOAD '{EXTENSION}'")
for stage in ['bind', 'init', 'func']:
    try:
        con.execute(f"SELECT * FROM promduck_test_panic('{{stage}}')").fetchall()
        print('no error', stage)
    except duckdb.Error as e:
        print('error', stage, str(e).splitlines()[0])
    print('alive', con.execute('SELECT 40 + 2').fetchone()[0])
"""
    env = dict(os.environ, PROMDUCK_TEST_PANIC="1", RUST_BACKTRACE="0")
    r = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "python"), "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines == [
        "error bind Binder Error: Rust callback panicked: promduck_test_panic: deliberate panic in bind", "alive 42",
        "error init Invalid Input Error: Rust callback panicked: promduck_test_panic: deliberate panic in init", "alive 42",
        "error func Invalid Input Error: Rust callback panicked: promduck_test_panic: deliberate panic in func", "alive 42",
    ]
    # Without the variable the test function does not exist.
    r = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "python"), "-c", code],
                       env={k: v for k, v in os.environ.items() if k != "PROMDUCK_TEST_PANIC"}, capture_output=True, text=True)
    assert "error bind Catalog Error: Table Function with name promduck_test_panic does not exist" in r.stdout
