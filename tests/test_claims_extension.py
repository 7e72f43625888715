"""Claims of README.md about the DuckDB extension, each shown by what can be observed
from outside (issue 17):

- files are scanned in parallel across DuckDB's threads (strace: which OS threads
  open the partition files), each file once;
- archives of the original Go tool are read in both its layouts with every
  timestamp type the reader converts (exact microseconds);
- `prom_collect` reports `kept` when Prometheus answers nothing for a partition
  that has a file, and its `config` defaults to `$PROMDUCK_CONFIG`;
- the live functions take their connection from `PROMDUCK_PROMETHEUS_URL`,
  `_USERNAME`, `_PASSWORD` and `_BEARER_TOKEN`.

Expected values come from the data the tests wrote or the generator's history.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import subprocess
import textwrap
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from faultproxy import FaultProxy, label_matchers
from helpers import EXTENSION, REPO_ROOT, day_end_ms, partition_files, write_config

PY = REPO_ROOT / ".venv" / "bin" / "python"


def strace_bin() -> str:
    path = shutil.which("strace")
    if path is None:
        pytest.fail("strace not found: install Debian's package (apt-get install -y strace; `make test` does)")
    return path


def connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    return con


def q(con, sql, params=None):
    return con.execute(sql, params or []).fetchall()


# --- parallel scan -------------------------------------------------------------------------------------------------

def write_collector_file(path: Path, day: date, proxy: str, n: int, seed: int) -> float:
    """A partition in the collector's schema with ``n`` rows; returns the sum of its values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)
    values = [float((seed * 7919 + i * 31) % 1000) for i in range(n)]
    pq.write_table(pa.table({
        "timestamp": pa.array([start + 60_000 * (i + 1) for i in range(n)], pa.int64()),
        "metric_name": pa.array(["latency_ms"] * n),
        "value": pa.array(values, pa.float64()),
        "api_proxy": pa.array([proxy] * n),
        "date": pa.array([day] * n, pa.date32()),
        "labels": pa.array([[("environment", "prod")]] * n, pa.map_(pa.string(), pa.string())),
    }), path)
    return sum(values)


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    """4 days x 40 proxies, 2,000 rows each: enough files that every thread gets some."""
    root = tmp_path_factory.mktemp("many") / "data"
    total, rows, files = 0.0, 0, []
    for d in range(4):
        day = date(2024, 3, 1) + timedelta(days=d)
        for p in range(40):
            path = root / day.isoformat() / f"p{p:02d}.parquet"
            total += write_collector_file(path, day, f"p{p:02d}", 2000, d * 40 + p)
            rows += 2000
            files.append(path)
    return root, files, rows, total


def traced_scan(root: Path, threads: int, tmp_path: Path):
    """Runs one full scan in a fresh Python under strace -f; returns the result and
    {thread id: [partition files it opened]}."""
    script = textwrap.dedent(f"""
        import duckdb
        con = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
        con.execute("LOAD '{EXTENSION}'")
        con.execute("SET threads = {threads}")
        print(con.execute("SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{root}')").fetchone())
    """)
    trace = tmp_path / f"strace-{threads}.txt"
    r = subprocess.run([strace_bin(), "-f", "-qq", "-e", "trace=openat", "-o", str(trace), str(PY), "-c", script],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    opened: dict[int, list[str]] = {}
    for line in trace.read_text().splitlines():
        # `123 openat(AT_FDCWD, "/path", O_RDONLY|O_CLOEXEC) = 5`, or its first half
        # `... <unfinished ...>` when another thread's call came in between.
        m = re.match(r'(\d+)\s+openat\([^,]+, "([^"]+)"', line)
        if m and m.group(2).startswith(str(root)) and m.group(2).endswith(".parquet"):
            opened.setdefault(int(m.group(1)), []).append(m.group(2))
    return r.stdout.strip(), opened


def test_parallel_scan_reads_files_on_several_threads(many_files, tmp_path):
    """With threads = 4, several OS threads of the process open partition files (and
    each file is opened exactly once); with threads = 1, one thread opens them all.
    The answers are the exact sums of what was written."""
    root, files, rows, total = many_files
    want = repr((rows, total))
    for threads in (1, 4):
        out, opened = traced_scan(root, threads, tmp_path)
        assert out == want, (threads, out)
        every = sorted(f for fs in opened.values() for f in fs)
        assert every == sorted(map(str, files)), f"threads={threads}: each file must be opened exactly once"
        if threads == 1:
            assert len(opened) == 1, {t: len(fs) for t, fs in opened.items()}
        else:
            assert 2 <= len(opened) <= threads, {t: len(fs) for t, fs in opened.items()}


# --- the original Go tool's layouts, every timestamp type ---------------------------------------------------------

DAY = date(2023, 4, 1)
DAY_MS = int(datetime(2023, 4, 1, tzinfo=timezone.utc).timestamp() * 1000)

# (name, arrow type, stored values, the instants they mean in epoch microseconds)
TIMESTAMP_TYPES = [
    ("int64-ms", pa.int64(), [DAY_MS, DAY_MS + 86_399_999], [DAY_MS * 1000, (DAY_MS + 86_399_999) * 1000]),
    ("int32-ms", pa.int32(), [0, 2_147_483_647], [0, 2_147_483_647_000]),
    ("int16-ms", pa.int16(), [-32768, 32767], [-32_768_000, 32_767_000]),
    ("int8-ms", pa.int8(), [-128, 127], [-128_000, 127_000]),
    ("uint64-ms", pa.uint64(), [DAY_MS, 0], [DAY_MS * 1000, 0]),
    ("uint32-ms", pa.uint32(), [4_294_967_295, 1], [4_294_967_295_000, 1000]),
    ("uint16-ms", pa.uint16(), [65535, 0], [65_535_000, 0]),
    ("uint8-ms", pa.uint8(), [255, 7], [255_000, 7000]),
    ("timestamp-s", pa.timestamp("s"), [DAY_MS // 1000, DAY_MS // 1000 + 59], [DAY_MS * 1000, (DAY_MS + 59_000) * 1000]),
    ("timestamp-ms", pa.timestamp("ms"), [DAY_MS + 123, DAY_MS + 999], [(DAY_MS + 123) * 1000, (DAY_MS + 999) * 1000]),
    ("timestamp-us", pa.timestamp("us"), [DAY_MS * 1000 + 123_456, 1], [DAY_MS * 1000 + 123_456, 1]),
    # nanoseconds: floored to the microsecond, the output type's precision
    ("timestamp-ns", pa.timestamp("ns"), [DAY_MS * 1_000_000 + 123_456_789, 999],
     [DAY_MS * 1000 + 123_456, 0]),
    ("timestamp-ms-utc", pa.timestamp("ms", tz="UTC"), [DAY_MS + 1, DAY_MS + 2], [(DAY_MS + 1) * 1000, (DAY_MS + 2) * 1000]),
    ("timestamp-us-utc", pa.timestamp("us", tz="UTC"), [DAY_MS * 1000 + 7, 0], [DAY_MS * 1000 + 7, 0]),
]


def go_table(ts_type, ts_values, proxy, with_proxy_and_date):
    """A Go-tool partition: labels as a list of key/value structs; its daily layout also
    has `api_proxy` and `date` (a string), its Hive layout has neither."""
    n = len(ts_values)
    cols = {"timestamp": pa.array(ts_values, ts_type),
            "metric_name": pa.array(["request_count"] * n),
            "value": pa.array([float(i + 1) for i in range(n)], pa.float64())}
    if with_proxy_and_date:
        cols["api_proxy"] = pa.array([proxy] * n)
        cols["date"] = pa.array([DAY.isoformat()] * n)
    kv = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
    cols["labels"] = pa.array([[{"key": "environment", "value": "prod"}, {"key": "type", "value": proxy}]] * n, kv)
    return pa.table(cols)


def write_seconds_hint_file(path: Path, seconds, with_proxy_and_date, proxy):
    """A plain BIGINT `timestamp` holding epoch seconds, which only an Arrow writer's
    schema hint (`ARROW:schema`: timestamp[s]) says; written by DuckDB's COPY."""
    fields = [pa.field("timestamp", pa.timestamp("s")), pa.field("metric_name", pa.string()),
              pa.field("value", pa.float64())]
    if with_proxy_and_date:
        fields += [pa.field("api_proxy", pa.string()), pa.field("date", pa.string())]
    fields.append(pa.field("labels", pa.list_(pa.field("element", pa.struct([("key", pa.string()),
                                                                              ("value", pa.string())])))))
    hint = base64.b64encode(pa.schema(fields).serialize().to_pybytes()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = f", '{proxy}' AS api_proxy, '{DAY}' AS date" if with_proxy_and_date else ""
    rows = " UNION ALL ".join(f"SELECT {s}::BIGINT AS timestamp, 'request_count' AS metric_name, {i + 1}::DOUBLE AS value"
                              f"{extra}, [{{'key': 'environment', 'value': 'prod'}}, {{'key': 'type', 'value': '{proxy}'}}]"
                              " AS labels" for i, s in enumerate(seconds))
    duckdb.connect().execute(f"COPY ({rows}) TO '{path}' (FORMAT parquet, KV_METADATA {{'ARROW:schema': '{hint}'}})")
    md = pq.ParquetFile(path)
    assert md.schema_arrow.field("timestamp").type == pa.int64() and md.schema.column(0).physical_type == "INT64"


def test_go_layouts_read_every_timestamp_type_exactly(tmp_path):
    root = tmp_path / "archive"
    want = []
    hint_seconds = [DAY_MS // 1000 + 3600, DAY_MS // 1000]
    cases = [(name, t, v, us) for name, t, v, us in TIMESTAMP_TYPES] + [
        ("int64-seconds-hint", None, hint_seconds, [s * 1_000_000 for s in hint_seconds])]
    for layout in ("daily", "hive"):
        for name, ts_type, values, micros in cases:
            proxy = f"{layout}-{name}"
            if layout == "daily":
                path = root / DAY.isoformat() / f"{proxy}.parquet"
            else:
                path = root / "year=2023" / "month=04" / "day=01" / f"app={proxy}" / "part-0.parquet"
            if ts_type is None:
                write_seconds_hint_file(path, values, layout == "daily", proxy)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(go_table(ts_type, values, proxy, layout == "daily"), path)
            for i, us in enumerate(micros):
                want.append((proxy, us, float(i + 1), DAY, {"environment": "prod", "type": proxy}))
    con = connect()
    con.execute("SET TimeZone = 'UTC'")
    got = q(con, "SELECT api_proxy, epoch_us(timestamp), value, date, labels FROM prom_metrics(data_dir := ?) "
                 "ORDER BY api_proxy, value", [str(root)])
    assert got == sorted(want, key=lambda r: (r[0], r[2]))
    # Both layouts are listed by prom_partitions too, one row per file.
    parts = q(con, "SELECT date, api_proxy FROM prom_partitions(data_dir := ?) ORDER BY 2", [str(root)])
    assert parts == sorted({(DAY, w[0]) for w in want}, key=lambda r: r[1])


def test_zstd_files_of_other_writers_read_exactly(tmp_path):
    """promduck decompresses zstd pages itself (core/src/reader/pages.rs: one context per thread,
    each page checked against the size its header gives): files written with zstd by Arrow C++
    (pyarrow; data pages v1 and v2, dictionary pages, nulls, many pages per chunk, a file over
    the 2 MiB read in one piece) and by DuckDB read exactly as DuckDB's own reader reads them."""
    root = tmp_path / "archive"
    n = 60_000
    ts = [DAY_MS + 3600_000 + i for i in range(n)]
    values = [None if i % 97 == 0 else (i * 7919 % 100_003) / 7.0 for i in range(n)]
    table = go_table(pa.timestamp("ms"), ts, "x", True)
    table = table.set_column(table.schema.get_field_index("value"), "value", pa.array(values, pa.float64()))
    table = table.set_column(table.schema.get_field_index("metric_name"), "metric_name",
                             pa.array([f"m{i % 5}" for i in range(n)]))
    files = {}
    for version in ("1.0", "2.0"):
        for page_size, proxy in ((4096, f"arrow-v{version}-small-pages"), (1 << 20, f"arrow-v{version}")):
            t = table.set_column(table.schema.get_field_index("api_proxy"), "api_proxy", pa.array([proxy] * n))
            path = root / DAY.isoformat() / f"{proxy}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, path, compression="zstd", data_page_version=version, data_page_size=page_size)
            files[proxy] = path
    # Not compressible below the 2 MiB that are read in one piece.
    rng = random.Random(7)
    names = [base64.b64encode(rng.randbytes(30)).decode() for _ in range(n)]
    big = table.set_column(table.schema.get_field_index("api_proxy"), "api_proxy", pa.array(["arrow-big"] * n))
    big = big.set_column(big.schema.get_field_index("metric_name"), "metric_name", pa.array(names))
    big = big.set_column(big.schema.get_field_index("value"), "value", pa.array([rng.random() for _ in range(n)]))
    files["arrow-big"] = root / DAY.isoformat() / "arrow-big.parquet"
    pq.write_table(big, files["arrow-big"], compression="zstd", use_dictionary=False)
    assert files["arrow-big"].stat().st_size > 2 << 20
    files["duckdb"] = root / DAY.isoformat() / "duckdb.parquet"
    con = connect()
    con.register("t", table.set_column(table.schema.get_field_index("api_proxy"), "api_proxy", pa.array(["duckdb"] * n)))
    con.execute(f"COPY t TO '{files['duckdb']}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 20000)")
    con.unregister("t")
    assert {pq.ParquetFile(f).metadata.row_group(0).column(0).compression for f in files.values()} == {"ZSTD"}
    con.execute("SET TimeZone = 'UTC'")
    for proxy, path in files.items():
        want = q(con, "SELECT epoch_ms(timestamp), metric_name, value FROM read_parquet(?) ORDER BY ALL", [str(path)])
        got = q(con, "SELECT epoch_ms(timestamp), metric_name, value FROM prom_metrics(data_dir := ?, proxy := ?) "
                     "ORDER BY ALL", [str(root), proxy])
        assert len(got) == n and got == want, proxy
    # promduck's own zstd partitions too (its writer, through prom_compact's month file reader
    # and the daily reader) are covered by the benchmarks' and compaction tests' archives.


# --- prom_collect: `kept`, and $PROMDUCK_CONFIG ---------------------------------------------------------------------

def only(proxy):
    """A fault-proxy predicate: instant queries whose proxy matcher is exactly ``proxy``."""
    return lambda req: req.path == "/api/v1/query" and [v for _, v in label_matchers(req.promql or "", "apiproxy")] == [proxy]


def test_prom_collect_reports_kept_and_leaves_the_file(prometheus, history, tmp_path):
    day = history.days_list[2]
    proxies = ["api-proxy-1", "api-proxy-2"]
    rows = 2 * len(history.environments)  # two daily metrics per environment
    con = connect()
    with FaultProxy(prometheus.url) as proxy:
        cfg = write_config(tmp_path / "c.yaml", proxy.url, proxies, prometheus_extra={"batchSize": 1})
        sql = ("SELECT date, api_proxy, rows, status, error, path FROM prom_collect(config := ?, date := ?) "
               "ORDER BY api_proxy")
        first = q(con, sql, [str(cfg), str(day)])
        assert [r[:5] for r in first] == [(day, p, rows, "written", None) for p in proxies]
        target = tmp_path / "data" / str(day) / "api-proxy-2.parquet"
        before = (target.read_bytes(), os.stat(target).st_ino)
        # Prometheus now answers nothing for api-proxy-2 (retention forgot it).
        proxy.add_rule("empty", match=only("api-proxy-2"), times=None)
        second = q(con, sql, [str(cfg), str(day)])
        assert proxy.matching(match=only("api-proxy-2"))[-1].action == "empty"
    assert [r[:4] for r in second] == [(day, "api-proxy-1", rows, "written"), (day, "api-proxy-2", rows, "kept")]
    assert second[0][4] is None and Path(second[1][5]) == target
    assert (target.read_bytes(), os.stat(target).st_ino) == before
    got = q(con, "SELECT api_proxy, metric_name, labels['environment'], value FROM prom_metrics(data_dir := ?) "
                 "ORDER BY ALL", [str(tmp_path / "data")])
    assert got == sorted((p, m, e, history.expected[(day, p, e, m)]) for p in proxies
                         for m in ("request_count", "error_count") for e in history.environments)


def run_python(code: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PROMDUCK_")}
    full.update(env)
    return subprocess.run([str(PY), "-c", code], env=full, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_prom_collect_config_defaults_to_promduck_config(prometheus, history, tmp_path):
    day = history.days_list[0]
    (tmp_path / "conf").mkdir()
    cfg = write_config(tmp_path / "conf" / "c.yaml", prometheus.url, ["api-proxy-3"],
                       output_dir=tmp_path / "out")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    code = textwrap.dedent(f"""
        import duckdb
        con = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
        con.execute("LOAD '{EXTENSION}'")
        try:
            print(con.execute("SELECT api_proxy, rows, status FROM prom_collect(date := '{day}')").fetchall())
        except duckdb.Error as e:
            print("error:", e)
    """)
    r = run_python(code, {"PROMDUCK_CONFIG": str(cfg)}, elsewhere)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == repr([("api-proxy-3", 2 * len(history.environments), "written")])
    assert partition_files(tmp_path / "out") == {f"{day}/api-proxy-3.parquet"}
    assert list(elsewhere.iterdir()) == []
    con = connect()
    got = q(con, "SELECT labels['environment'], value FROM prom_metrics(data_dir := ?, metric := 'request_count') "
                 "ORDER BY 1", [str(tmp_path / "out")])
    assert got == [(e, history.expected[(day, "api-proxy-3", e, "request_count")]) for e in sorted(history.environments)]
    # Without the variable, config/config.yaml in the working directory, as the collector.
    here = tmp_path / "here"
    (here / "config").mkdir(parents=True)
    write_config(here / "config" / "config.yaml", prometheus.url, ["api-proxy-2"], output_dir=Path("rel-data"))
    r = run_python(code, {"PROMDUCK_CONFIG": ""}, here)  # empty means unset
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == repr([("api-proxy-2", 2 * len(history.environments), "written")])
    assert partition_files(here / "rel-data") == {f"{day}/api-proxy-2.parquet"}
    # Neither: an error saying what to give and where it looked.
    r = run_python(code, {}, elsewhere)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("error: ") and (
        f"prom_collect needs config := 'path/to/config.yaml', or PROMDUCK_CONFIG, or config/config.yaml in the "
        f"working directory (there is none in {elsewhere})") in r.stdout, r.stdout
    assert list(elsewhere.iterdir()) == []


# --- PROMDUCK_PROMETHEUS_* ---------------------------------------------------------------------------------------

LIVE_SCRIPT = """
import duckdb, json, sys
con = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
con.execute("LOAD '{ext}'")
con.execute("SET TimeZone = 'UTC'")
out = {{}}
def run(name, sql):
    try:
        out[name] = [[str(c) if not isinstance(c, (int, float, type(None))) else c for c in r]
                     for r in con.execute(sql).fetchall()]
    except duckdb.Error as e:
        out[name] = "error: " + str(e)
{calls}
print(json.dumps(out))
"""


def live(env: dict, calls: dict, tmp_path: Path) -> dict:
    body = "\n".join(f"run({name!r}, {sql!r})" for name, sql in calls.items())
    r = run_python(LIVE_SCRIPT.format(ext=EXTENSION, calls=body), env, tmp_path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_live_functions_take_the_connection_from_promduck_prometheus_variables(prometheus, prometheus_auth, history,
                                                                                tmp_path):
    day = history.days_list[1]
    at = datetime.fromtimestamp(day_end_ms(day) / 1000, tz=timezone.utc)
    daily = "sum(increase(apigee_request_count[1d])) by (apiproxy, environment)"
    daily_errors = "sum(increase(apigee_error_count[1d])) by (apiproxy, environment)"
    want_daily = sorted([p, e, history.expected[(day, p, e, "request_count")]]
                        for p in history.proxies for e in history.environments)
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    samples = dict(history.gauge_samples[("api-proxy-1", "prod")])
    s0 = int(start.timestamp())
    calls = {
        "query": f"SELECT labels['apiproxy'], labels['environment'], value FROM prom_query('{daily}', "
                 f"at := TIMESTAMPTZ '{at.isoformat()}') ORDER BY 1, 2",
        "range": "SELECT epoch(timestamp)::BIGINT, value FROM prom_query_range("
                 "'apigee_latency_ms{apiproxy=\"api-proxy-1\",environment=\"prod\"}', "
                 f"TIMESTAMPTZ '{start.isoformat()}', TIMESTAMPTZ '{(start + timedelta(hours=3)).isoformat()}', '1h') "
                 "ORDER BY 1",
        "labels": "SELECT * FROM prom_labels() ORDER BY 1",
        "values": "SELECT * FROM prom_label_values('environment') ORDER BY 1",
        "series": "SELECT metric_name, labels['apiproxy'] FROM prom_series('apigee_error_count{environment=\"test\"}') "
                  "ORDER BY 2",
        "list": f"SELECT query, apiproxy, environment, value FROM prom_query(['{daily}', '{daily_errors}'], "
                f"at := TIMESTAMPTZ '{at.isoformat()}', labels := ['apiproxy', 'environment']) ORDER BY ALL",
        # this server scrapes nothing: no metadata, but the call is made with the same connection
        "metadata": "SELECT * FROM prom_metadata()",
    }
    want = {
        "query": want_daily,
        "range": [[s0 + h * 3600, samples[s0 + h * 3600]] for h in range(4)],
        "labels": [["__name__"], ["apiproxy"], ["environment"]],
        "values": [[e] for e in sorted(history.environments)],
        "series": [["apigee_error_count", p] for p in sorted(history.proxies)],
        "list": sorted([q, p, e, history.expected[(day, p, e, m)]] for q, m in ((daily, "request_count"),
                                                                                (daily_errors, "error_count"))
                       for p in history.proxies for e in history.environments),
        "metadata": [],
    }
    assert live({"PROMDUCK_PROMETHEUS_URL": prometheus.url}, calls, tmp_path) == want

    # Basic auth from _USERNAME and _PASSWORD (the server refuses requests without them).
    user, password = prometheus_auth.basic_auth
    env = {"PROMDUCK_PROMETHEUS_URL": prometheus_auth.url, "PROMDUCK_PROMETHEUS_USERNAME": user,
           "PROMDUCK_PROMETHEUS_PASSWORD": password}
    assert live(env, calls, tmp_path) == want
    refused = live({"PROMDUCK_PROMETHEUS_URL": prometheus_auth.url}, {k: calls[k] for k in ("values", "metadata")},
                   tmp_path)
    for k in ("values", "metadata"):
        assert refused[k].startswith("error: ") and "401" in refused[k], refused

    # A bearer token from _BEARER_TOKEN, checked by the fault proxy in front of Prometheus.
    token = "tok-PROMDUCK-env-4711"
    with FaultProxy(prometheus.url, bearer_token=token) as proxy:
        got = live({"PROMDUCK_PROMETHEUS_URL": proxy.url, "PROMDUCK_PROMETHEUS_BEARER_TOKEN": token}, calls, tmp_path)
        seen = {r.headers.get("authorization") for r in proxy.snapshot()}
        refused = live({"PROMDUCK_PROMETHEUS_URL": proxy.url}, {"labels": calls["labels"]}, tmp_path)
    assert got == want
    assert seen == {f"Bearer {token}"}
    assert refused["labels"].startswith("error: ") and "401" in refused["labels"], refused
