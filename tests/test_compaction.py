"""Compaction: closed months into one file each (`--compact`, `prom_compact`, the daemon).

- The month file holds exactly the daily files' rows, columns and types, sorted by
  (api_proxy, date, metric_name, timestamp), in row groups that never split a
  (proxy, day), with statistics, the page index and the configured codec.
- prom_metrics / prom_partitions read a partly compacted archive exactly as the
  uncompacted one, for every selection; the seed's queries over the whole archive
  (`sql/seed/archive/`) return every row exactly once.
- SIGKILL at seeded random moments of a compaction, with readers running all along
  (prom_metrics, and read_parquet over sql/seed/archive/archive_files.sql): every
  read exact; a re-run completes; nothing left behind. PROMDUCK_COMPACT_TRIALS
  (default 30; 200+ for the stress run) and PROMDUCK_SEED.
- Re-collecting a day of a compacted month (real Prometheus): the new values win,
  metric by metric, or whole with --replace; from SQL after prom_compact().

Figures go to tests/output/compaction-crash.json (RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import COLLECTOR, EXTENSION, REPO_ROOT, now_env, run_collector, utc, write_config

TRIALS = int(os.environ.get("PROMDUCK_COMPACT_TRIALS", "30"))
SEED = int(os.environ.get("PROMDUCK_SEED", "20241125"))
OUTPUT = REPO_ROOT / "tests" / "output"
ARCHIVE_SQL = REPO_ROOT / "sql" / "seed" / "archive"

PROXIES = ["api-proxy-1", "api-proxy-2", "api-proxy-3", "api-proxy-10", 'we"ird/proxy', "z"]
ENVS = ["prod", "test"]

LABELS_TYPE = pa.map_(pa.string(), pa.string())
SCHEMA = pa.schema([
    pa.field("timestamp", pa.int64(), nullable=False),
    pa.field("metric_name", pa.string(), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
    pa.field("api_proxy", pa.string(), nullable=False),
    pa.field("date", pa.date32(), nullable=False),
    pa.field("labels", pa.map_(pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())), nullable=False),
], metadata={"created_by_promduck": "test"})


def encode_proxy(name: str) -> str:
    out = []
    for i, b in enumerate(name.encode()):
        c = chr(b)
        if c.isascii() and (c.isalnum() or c in "-_" or (c == "." and i > 0)):
            out.append(c)
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def day_end_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000) + 86_400_000


def make_archive(data: Path, first: date, days: int, proxies=PROXIES, latency_points=4) -> int:
    """Daily files as promduck writes them: request_count and error_count (one point per
    environment), latency_ms (`latency_points` points per environment), integer values (exact
    sums in any order). Written out of order within a file. Returns the row count."""
    rows = 0
    for d in range(days):
        day = first + timedelta(days=d)
        end = day_end_ms(day)
        for p, proxy in enumerate(proxies):
            cols = {k: [] for k in ("timestamp", "metric_name", "value", "api_proxy", "date", "labels")}

            def add(ts, metric, value, env):
                cols["timestamp"].append(ts)
                cols["metric_name"].append(metric)
                cols["value"].append(float(value))
                cols["api_proxy"].append(proxy)
                cols["date"].append(day)
                cols["labels"].append([("apiproxy", proxy), ("environment", env)])

            for e, env in enumerate(ENVS):
                for i in range(latency_points):
                    add(end - (latency_points - 1 - i) * 3_600_000, "latency_ms", 100 + d + p * 7 + e + i, env)
                add(end, "request_count", d * 1000 + p * 10 + e, env)
                add(end, "error_count", d + p + e, env)
            path = data / day.isoformat() / f"{encode_proxy(proxy)}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(cols, schema=SCHEMA), path, compression="zstd")
            rows += len(cols["value"])
    return rows


def connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    return con


TOTALS_PM = ("SELECT count(*), sum(value), sum(hash(api_proxy, date, metric_name, epoch_ms(timestamp), value) % 1000000007) "
             "FROM prom_metrics(data_dir := ?)")
TOTALS_RP = "SELECT count(*), sum(value), sum(hash(api_proxy, date, metric_name, timestamp, value) % 1000000007) FROM read_parquet({})"


def totals_glob(con, data: Path):
    return con.execute(TOTALS_RP.format("?"), [str(data / "*" / "*.parquet")]).fetchone()


def recipe_sql(data: Path) -> str:
    return (ARCHIVE_SQL / "archive_files.sql").read_text().replace("'data/*/*.parquet'", f"'{data}/*/*.parquet'")


def totals_recipe(con, data: Path):
    con.execute(recipe_sql(data))
    return con.execute(TOTALS_RP.format("getvariable('promduck_files')")).fetchone()


def config(tmp: Path, data: Path, **compaction) -> Path:
    comp = {"removeDailyAfter": "0s"}
    comp.update(compaction)
    return write_config(tmp / "config.yaml", "http://127.0.0.1:1", ["api-proxy-1"], output_dir=data,
                        storage_extra={"compaction": comp})


def tree(data: Path):
    return sorted(str(p.relative_to(data)) for p in data.rglob("*"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Jan + Feb 2024 and ten days of March, 6 proxies; its totals before any compaction."""
    root = tmp_path_factory.mktemp("pristine")
    data = root / "data"
    rows = make_archive(data, date(2024, 1, 1), 31 + 29 + 10)
    con = connect()
    base = {
        "totals": totals_glob(con, data),
        "rows": con.execute("SELECT * EXCLUDE (timestamp), epoch_ms(timestamp) AS ts FROM prom_metrics(data_dir := ?) "
                            "ORDER BY ALL", [str(data)]).fetchall(),
        "partitions": con.execute("SELECT date, api_proxy FROM prom_partitions(data_dir := ?) ORDER BY ALL", [str(data)]).fetchall(),
    }
    assert base["totals"][0] == rows
    return data, base


@pytest.fixture
def archive(pristine, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(pristine[0], data)
    return data, pristine[1]


def test_compact_two_months_from_the_cli(archive, tmp_path):
    data, base = archive
    cfg = config(tmp_path, data)
    r = run_collector("--config", cfg, "--compact", "--month", "2024-01")
    assert r.returncode == 0, r.stderr
    assert 'month="2024-01" status="compacted" daily_files=186 removed=186 partitions=186 rows=2232' in r.stderr, r.stderr
    # Every closed month with daily files: February and March 2024 (all closed today).
    r = run_collector("--config", cfg, "--compact")
    assert r.returncode == 0, r.stderr
    assert "2024-02" in r.stderr and "2024-03" in r.stderr
    top = sorted(p.name for p in data.iterdir())
    assert top == ["2024-01", "2024-02", "2024-03"], top
    for m in top:
        assert sorted(p.name for p in (data / m).iterdir()) == [f"{m}.parquet"]
    con = connect()
    assert totals_glob(con, data) == base["totals"]
    # Nothing left: a further run has nothing to do.
    r = run_collector("--config", cfg, "--compact")
    assert r.returncode == 0 and "nothing to compact" in r.stderr, r.stderr
    # The current month is refused (its days are still being collected) until the next one
    # begins in the config's zone (UTC); "now" fixed on both sides of that midnight.
    r = run_collector("--config", cfg, "--compact", "--month", "2024-03", env=now_env(utc(2024, 3, 31, 23, 59, 59)))
    assert r.returncode == 2 and "has not closed yet" in r.stderr, r.stderr
    r = run_collector("--config", cfg, "--compact", "--month", "2024-03", env=now_env(utc(2024, 4, 1)))
    assert r.returncode == 0 and 'month="2024-03" status="unchanged"' in r.stderr, r.stderr
    r = run_collector("--config", cfg, "--compact", "--month", "24-01")
    assert r.returncode == 2 and "four-digit year" in r.stderr, r.stderr


def test_month_file_has_the_daily_schema_sorted_row_groups_statistics_and_codec(archive, tmp_path):
    data, base = archive
    cfg = config(tmp_path, data)
    daily = data / "2024-02-01" / "api-proxy-1.parquet"
    daily_schema = pq.read_schema(daily)
    assert run_collector("--config", cfg, "--compact", "--month", "2024-02").returncode == 0
    month = data / "2024-02" / "2024-02.parquet"
    f = pq.ParquetFile(month)
    # Exactly the daily files' columns and types (Parquet and Arrow), nullability included.
    assert f.schema_arrow.remove_metadata() == daily_schema.remove_metadata()
    assert f.schema.to_arrow_schema().remove_metadata() == pq.ParquetFile(data / "2024-03-01" / "api-proxy-1.parquet").schema.to_arrow_schema().remove_metadata()
    con = duckdb.connect()
    assert con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(month)]).fetchall() == \
        con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(data / "2024-03-01" / "api-proxy-1.parquet")]).fetchall()
    md = f.metadata
    assert md.metadata[b"created_by_promduck"] and md.metadata[b"promduck_month"] == b"2024-02"
    assert md.num_rows == 29 * len(PROXIES) * 12
    rg = md.row_group(0)
    names = [rg.column(i).path_in_schema for i in range(rg.num_columns)]
    sorting = [(names[c.column_index], c.descending) for c in rg.sorting_columns]
    assert sorting == [("api_proxy", False), ("date", False), ("metric_name", False), ("timestamp", False)]
    for i in range(rg.num_columns):
        c = rg.column(i)
        assert c.compression == "ZSTD", c
        assert c.is_stats_set and c.has_column_index and c.has_offset_index, names[i]
    # Sorted by (api_proxy, date, metric_name, timestamp).
    t = f.read().to_pylist()
    keys = [(r["api_proxy"].encode(), r["date"], r["metric_name"], r["timestamp"]) for r in t]
    assert keys == sorted(keys)
    # The codec follows storage.compression.
    snappy = write_config(tmp_path / "snappy.yaml", "http://127.0.0.1:1", ["x"], output_dir=data,
                          storage_extra={"compression": "snappy", "compaction": {"removeDailyAfter": "0s"}})
    assert run_collector("--config", snappy, "--compact", "--month", "2024-01").returncode == 0
    assert pq.ParquetFile(data / "2024-01" / "2024-01.parquet").metadata.row_group(0).column(0).compression == "SNAPPY"


def test_row_groups_never_split_a_proxy_day_and_a_point_query_reads_one(tmp_path):
    """A month whose proxies are larger than a row group: each (proxy, day) is in exactly
    one row group by its statistics (min/max api_proxy and date)."""
    data = tmp_path / "data"
    # 4 proxies x 31 days x (2 x 2 + 2 x 2000) rows: ~500k rows, about 5 row groups of <= 122,880.
    make_archive(data, date(2023, 12, 1), 31, proxies=["a", "b", "c", "d"], latency_points=2000)
    cfg = config(tmp_path, data)
    assert run_collector("--config", cfg, "--compact", "--month", "2023-12").returncode == 0
    md = pq.ParquetFile(data / "2023-12" / "2023-12.parquet").metadata
    # Row groups of at most 122,880 rows that end at a (proxy, day) boundary: a proxy's day
    # has 2 x 2 + 2 x 2000 = 4,004 rows, 30 of its 31 days fill one group, the 31st another.
    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    assert sizes == [30 * 4004, 4004] * 4, sizes
    names = [md.row_group(0).column(i).path_in_schema for i in range(md.num_columns)]
    pi, di = names.index("api_proxy"), names.index("date")
    groups = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        assert rg.num_rows <= 122_880
        p, d = rg.column(pi).statistics, rg.column(di).statistics
        groups.append((p.min, p.max, d.min, d.max))
    for proxy in "abcd":
        for day in range(1, 32):
            dd = date(2023, 12, day)
            hits = [g for g in groups if g[0] <= proxy <= g[1] and g[2] <= dd <= g[3]]
            assert len(hits) == 1, (proxy, dd, groups)
    con = connect()
    got = con.execute("SELECT count(*), sum(value) FROM prom_metrics(data_dir := ?, date := '2023-12-17', proxy := 'c')",
                      [str(data)]).fetchone()
    assert got == duckdb.connect().execute(
        "SELECT count(*), sum(value) FROM read_parquet(?) WHERE date = '2023-12-17' AND api_proxy = 'c'",
        [str(data / "*" / "*.parquet")]).fetchone()
    assert got[0] == 2 * 2 + 2 * 2000


SELECTIONS = [
    "",
    ", date := '2024-01-15'",
    ", date := '2024-02-29', proxy := 'we\"ird/proxy'",
    ", start_date := '2024-01-30', end_date := '2024-03-02'",
    ", start_date := '2024-02-10'",
    ", end_date := '2024-01-03', proxy := ['api-proxy-10', 'z', 'nope']",
    ", proxy := 'api-proxy-2', metric := 'latency_ms'",
    ", date_range := '2024-02-27..2024-03-01', metric := ['request_count', 'error_count']",
    ", date := '2024-04-01'",
]


def test_prom_metrics_and_partitions_read_a_partly_compacted_archive_as_before(archive, tmp_path):
    data, base = archive
    con = connect()
    q = "SELECT * EXCLUDE (timestamp), epoch_ms(timestamp) AS ts FROM prom_metrics(data_dir := ?{}) ORDER BY ALL"
    before = {s: con.execute(q.format(s), [str(data)]).fetchall() for s in SELECTIONS}
    cfg = config(tmp_path, data)
    for m in ("2024-01", "2024-02"):
        assert run_collector("--config", cfg, "--compact", "--month", m).returncode == 0
    assert (data / "2024-03-05").is_dir() and not (data / "2024-02-05").exists()
    for s in SELECTIONS:
        assert con.execute(q.format(s), [str(data)]).fetchall() == before[s], s
    assert con.execute(q.format(""), [str(data)]).fetchall() == base["rows"]
    parts = con.execute("SELECT date, api_proxy, path, bytes FROM prom_partitions(data_dir := ?) ORDER BY date, api_proxy",
                        [str(data)]).fetchall()
    assert [(d, p) for d, p, _, _ in parts] == base["partitions"]
    for d, p, path, size in parts:
        if d < date(2024, 3, 1):
            assert path.endswith(f"{d:%Y-%m}/{d:%Y-%m}.parquet") and size is None
        else:
            assert path.endswith(f"{d}/{encode_proxy(p)}.parquet") and size == Path(path).stat().st_size
    sel = con.execute("SELECT date, api_proxy FROM prom_partitions(data_dir := ?, start_date := '2024-02-28', end_date := '2024-03-01', "
                      "proxy := ['z', 'api-proxy-1']) ORDER BY ALL", [str(data)]).fetchall()
    assert sel == [(date(2024, 2, 28), "api-proxy-1"), (date(2024, 2, 28), "z"), (date(2024, 2, 29), "api-proxy-1"),
                   (date(2024, 2, 29), "z"), (date(2024, 3, 1), "api-proxy-1"), (date(2024, 3, 1), "z")]
    # Where each row came from, only when asked.
    src = con.execute("SELECT DISTINCT regexp_extract(source, '[^/]+/[^/]+$') FROM prom_metrics(data_dir := ?, "
                      "date_range := '2024-02-29..2024-03-01', proxy := 'z', source := true) ORDER BY 1", [str(data)]).fetchall()
    assert src == [("2024-02/2024-02.parquet",), ("2024-03-01/z.parquet",)]
    assert "source" not in [c[0] for c in con.execute("DESCRIBE SELECT * FROM prom_metrics(data_dir := ?)", [str(data)]).fetchall()]


def seed_queries(data: Path):
    out = {}
    for f in ("basic.sql", "aggregation_by_proxy.sql", "time_series.sql"):
        sql = (ARCHIVE_SQL / f).read_text().replace("'data/*/*.parquet'", f"'{data}/*/*.parquet'")
        if "getvariable('promduck_day')" in sql:
            sql = "SET VARIABLE promduck_day = DATE '2024-02-29';\n" + sql
        out[f] = sql
    return out


def test_seed_queries_over_the_archive_return_every_row_once(archive, tmp_path):
    data, base = archive
    con = duckdb.connect()
    queries = seed_queries(data)
    # basic.sql orders by timestamp alone, whose ties come in any order: compared as multisets.
    run = lambda q: sorted(con.execute(q).fetchall(), key=repr)  # noqa: E731
    before = {f: run(q) for f, q in queries.items()}
    assert all(before.values()) and len(before["time_series.sql"]) == 70 * 4
    # The original's per-day form, while that day is still a folder, agrees.
    original = con.execute(f"SELECT api_proxy, SUM(value) AS total_requests FROM '{data}/2024-02-29/*.parquet' "
                           "WHERE metric_name = 'request_count' GROUP BY api_proxy ORDER BY total_requests DESC").fetchall()
    assert sorted(original, key=repr) == before["aggregation_by_proxy.sql"]
    cfg = config(tmp_path, data)
    for m in ("2024-01", "2024-02"):
        assert run_collector("--config", cfg, "--compact", "--month", m).returncode == 0
    for f, q in queries.items():
        assert run(q) == before[f], f
    assert totals_glob(con, data) == base["totals"]
    assert totals_recipe(con, data) == base["totals"]


def test_prom_compact_from_sql(archive, tmp_path, monkeypatch):
    data, base = archive
    cfg = config(tmp_path, data)
    con = connect()
    cols = [c[0] for c in con.execute("DESCRIBE SELECT * FROM prom_compact(config := ?, month := '2024-01')", [str(cfg)]).fetchall()]
    assert cols == ["month", "status", "path", "daily_files", "removed", "partitions", "rows", "bytes", "row_groups", "seconds", "error"]
    assert (data / "2024-01-01").is_dir(), "DESCRIBE must not compact"
    r = con.execute("SELECT month, status, daily_files, removed, partitions, rows, row_groups, error FROM prom_compact(config := ?, month := '2024-01')",
                    [str(cfg)]).fetchall()
    assert r == [("2024-01", "compacted", 186, 186, 186, 2232, 1, None)]
    r = con.execute("SELECT month, status FROM prom_compact(config := ?) ORDER BY month", [str(cfg)]).fetchall()
    assert r == [("2024-02", "compacted"), ("2024-03", "compacted")]
    r = con.execute("SELECT month, status, rows FROM prom_compact(config := ?, month := '2024-01')", [str(cfg)]).fetchall()
    assert r == [("2024-01", "unchanged", 2232)]
    assert totals_glob(con, data) == base["totals"]
    # The extension takes "now" from PROMDUCK_NOW too (read at each call).
    monkeypatch.setenv("PROMDUCK_NOW", "2024-03-31T23:59:59Z")
    with pytest.raises(duckdb.Error, match="has not closed yet"):
        con.execute("SELECT * FROM prom_compact(config := ?, month := '2024-03')", [str(cfg)])
    monkeypatch.setenv("PROMDUCK_NOW", "2024-04-01T00:00:00Z")
    r = con.execute("SELECT month, status FROM prom_compact(config := ?, month := '2024-03')", [str(cfg)]).fetchall()
    assert r == [("2024-03", "unchanged")]
    monkeypatch.setenv("PROMDUCK_NOW", "soon")
    with pytest.raises(duckdb.Error, match='PROMDUCK_NOW="soon" is not an RFC 3339 time'):
        con.execute("SELECT * FROM prom_compact(config := ?, month := '2024-03')", [str(cfg)])
    monkeypatch.delenv("PROMDUCK_NOW")
    with pytest.raises(duckdb.Error, match="four-digit year"):
        con.execute("SELECT * FROM prom_compact(config := ?, month := '24-1')", [str(cfg)])
    assert con.execute("SELECT 42").fetchone() == (42,)


def test_prom_compact_obeys_the_sandbox(archive, tmp_path):
    data, _ = archive
    cfg = config(tmp_path, data)
    con = connect()
    con.execute("SET enable_external_access = false")
    with pytest.raises(duckdb.Error, match="Permission Error"):
        con.execute("SELECT * FROM prom_compact(config := ?, month := '2024-01')", [str(cfg)]).fetchall()
    assert (data / "2024-01-01").is_dir() and not (data / "2024-01").exists()
    # Allowed to read the config but not to write outputDir: refused before anything is written.
    other = tmp_path / "cfgdir"
    other.mkdir()
    cfg2 = config(other, data)
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    con.execute(f"SET allowed_directories = ['{other}']")
    con.execute("SET enable_external_access = false")
    with pytest.raises(duckdb.Error, match="Permission Error"):
        con.execute("SELECT * FROM prom_compact(config := ?, month := '2024-01')", [str(cfg2)]).fetchall()
    assert not (data / "2024-01").exists()


def test_daemon_compacts_closed_months_after_days_only_when_configured(archive, tmp_path):
    data, base = archive
    # A Prometheus that answers nothing: the daemon's own collection writes empty partitions.
    import http.server
    import socketserver

    class Empty(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_POST = do_GET

        def log_message(self, *a):
            pass

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Empty)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        for compaction, expect in [({"removeDailyAfter": "0s"}, False), ({"afterDays": 0, "removeDailyAfter": "0s"}, True)]:
            cfg = write_config(tmp_path / "daemon.yaml", url, ["api-proxy-1"], output_dir=data,
                               storage_extra={"compaction": compaction})
            # "Now" fixed in January 2025: the 2024 months are closed, the current one (which
            # yesterday's empty partition falls in) is not, whatever the real date.
            p = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--catch-up-days", "0"], stderr=subprocess.PIPE,
                                 text=True, env={**os.environ, **now_env(utc(2025, 1, 10, 12))})
            lines = []
            deadline = time.time() + 60
            while time.time() < deadline:
                line = p.stderr.readline()
                lines.append(line)
                if "waiting for the next collection" in line:
                    break
            p.send_signal(signal.SIGTERM)
            out = "".join(lines) + p.stderr.read()
            assert p.wait(timeout=30) == 0, out
            assert ("compaction finished" in out) == expect, out
            assert (data / "2024-01" / "2024-01.parquet").exists() == expect
        assert not any(p.name.startswith("2024-0") and len(p.name) == 10 for p in data.iterdir())
        con = connect()
        got = con.execute("SELECT count(*), sum(value) FROM prom_metrics(data_dir := ?, end_date := '2024-12-31')", [str(data)]).fetchone()
        assert got == base["totals"][:2]
    finally:
        srv.shutdown()


# --- crash safety --------------------------------------------------------------------------------


def leftovers(data: Path):
    return [p for p in data.rglob("*") if p.name.endswith(".promduck-tmp") or p.name.endswith(".promduck-del")]


class Readers:
    """Reader threads reading the current trial's archive in a loop: prom_metrics, and
    read_parquet over the archive_files.sql recipe (both must always be exact), and a plain
    read_parquet glob (counted only: it may see a month twice while compaction runs)."""

    def __init__(self, expected, remove_daily_after):
        self.expected = expected
        self.remove_daily_after = remove_daily_after
        # Recipe reads that failed on a daily file removed under them, having taken longer
        # than removeDailyAfter (the documented bound; on a loaded machine a read can).
        self.outlasted = 0
        self.data = None
        self.paused = True
        self.stop = False
        self.busy = {k: threading.Lock() for k in ("prom_metrics", "recipe", "glob")}
        self.reads = {k: 0 for k in self.busy}
        self.wrong = []
        self.glob_differs = 0
        self.threads = [threading.Thread(target=self.loop, args=(k,), daemon=True) for k in self.busy]
        for t in self.threads:
            t.start()

    def read(self, kind, con, data):
        if kind == "prom_metrics":
            return con.execute(TOTALS_PM, [str(data)]).fetchone()
        if kind == "recipe":
            return totals_recipe(con, data)
        return totals_glob(con, data)

    def loop(self, kind):
        con = connect()
        while not self.stop:
            if self.paused:
                time.sleep(0.005)
                continue
            with self.busy[kind]:
                if self.paused or self.data is None:
                    continue
                data = self.data
                started = time.perf_counter()
                try:
                    got = self.read(kind, con, data)
                except Exception as e:  # noqa: BLE001 - every failure is a finding
                    got = ("error", str(e)[:300])
                took = time.perf_counter() - started
                self.reads[kind] += 1
                if got != self.expected:
                    if kind == "glob":
                        self.glob_differs += 1
                    elif kind == "recipe" and got[0] == "error" and "No such file" in got[1] and took > self.remove_daily_after:
                        self.outlasted += 1
                    else:
                        self.wrong.append((kind, str(data), got, round(took, 3)))

    def switch(self, data):
        self.paused = True
        for lock in self.busy.values():
            with lock:
                pass
        self.data = data
        self.paused = data is None

    def close(self):
        self.switch(None)
        self.stop = True
        for t in self.threads:
            t.join(timeout=30)


def test_sigkill_at_random_moments_during_compaction(pristine, tmp_path):
    src, base = pristine
    rng = random.Random(SEED)
    # A smaller copy per trial: January and February, 3 proxies.
    seed_data = tmp_path / "seed"
    make_archive(seed_data / "data", date(2024, 1, 1), 31 + 29 + 2, proxies=PROXIES[:4])
    expected = totals_glob(duckdb.connect(), seed_data / "data")
    wait = 0.4
    cfg_for = lambda d: config(d, d / "data", removeDailyAfter=f"{int(wait * 1000)}ms")  # noqa: E731
    # A clean run's duration bounds the kill moments.
    clean = tmp_path / "clean"
    shutil.copytree(seed_data, clean)
    t = time.perf_counter()
    assert run_collector("--config", cfg_for(clean), "--compact").returncode == 0
    clean_s = time.perf_counter() - t
    clean_tree = tree(clean / "data")
    clean_rows = connect().execute("SELECT * EXCLUDE (timestamp), epoch_ms(timestamp) FROM prom_metrics(data_dir := ?) ORDER BY ALL",
                                   [str(clean / "data")]).fetchall()
    readers = Readers(expected, wait)
    stats = {"trials": TRIALS, "seed": SEED, "clean_run_seconds": round(clean_s, 3), "remove_daily_after_s": wait,
             "killed_before_exit": 0, "left_month_file_and_daily_files": 0, "left_removal_files": 0,
             "left_temp_files": 0, "killed_while_removing_daily_files": 0}
    daily_counts = {m: sum(1 for _ in (seed_data / "data").glob(f"{m}-*/*.parquet")) for m in ("2024-01", "2024-02", "2024-03")}
    try:
        for trial in range(TRIALS):
            work = tmp_path / f"t{trial}"
            shutil.copytree(seed_data, work)
            cfg = cfg_for(work)
            readers.switch(work / "data")
            # Moments anywhere in the run, and more of them where little time is spent:
            # while month files are written, and while daily files are removed (from
            # removeDailyAfter after the last month file appeared, for a few milliseconds).
            kind = trial % 3
            delay = [rng.uniform(0, clean_s), rng.uniform(0, max(clean_s - wait, 0.01)), wait + rng.uniform(0, 0.012)][kind]
            p = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--compact"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            if kind == 2:
                last = work / "data" / "2024-03" / "2024-03.parquet"
                deadline = time.time() + 10
                while not last.exists() and p.poll() is None and time.time() < deadline:
                    time.sleep(0.0005)
            time.sleep(delay)
            if p.poll() is None:
                stats["killed_before_exit"] += 1
            p.send_signal(signal.SIGKILL)
            p.wait()
            names = [q.name for q in (work / "data").rglob("*")]
            stats["left_temp_files"] += any(n.endswith(".promduck-tmp") for n in names)
            stats["left_removal_files"] += any(n.endswith(".promduck-del") for n in names)
            stats["left_month_file_and_daily_files"] += (work / "data" / "2024-01" / "2024-01.parquet").exists() and \
                (work / "data" / "2024-01-15").exists()
            for m in ("2024-01", "2024-02", "2024-03"):
                left = sum(1 for _ in (work / "data").glob(f"{m}-*/*.parquet"))
                if (work / "data" / m / f"{m}.parquet").exists() and 0 < left < daily_counts[m]:
                    stats["killed_while_removing_daily_files"] += 1
                    break
            # Readers keep reading the state the kill left, then a re-run completes.
            time.sleep(0.05)
            r = run_collector("--config", cfg, "--compact")
            assert r.returncode == 0, (trial, r.stderr)
            time.sleep(0.02)
            readers.switch(None)
            assert tree(work / "data") == clean_tree, (trial, delay)
            assert not leftovers(work / "data")
            assert not readers.wrong, readers.wrong[:5]
            if trial % 10 == 0 or trial == TRIALS - 1:
                got = connect().execute("SELECT * EXCLUDE (timestamp), epoch_ms(timestamp) FROM prom_metrics(data_dir := ?) ORDER BY ALL",
                                        [str(work / "data")]).fetchall()
                assert got == clean_rows, trial
            shutil.rmtree(work)
    finally:
        readers.close()
    stats["reads"] = dict(readers.reads)
    stats["wrong_reads"] = len(readers.wrong)
    stats["recipe_reads_that_outlasted_remove_daily_after"] = readers.outlasted
    stats["plain_glob_reads_that_differed"] = readers.glob_differs
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "compaction-crash.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))
    assert not readers.wrong, readers.wrong[:5]
    assert readers.reads["prom_metrics"] >= TRIALS and readers.reads["recipe"] >= TRIALS
    assert readers.outlasted <= readers.reads["recipe"] // 20, "recipe reads should take far less than removeDailyAfter"
    assert stats["killed_before_exit"] >= TRIALS // 2


# --- re-collecting a compacted month (real Prometheus) --------------------------------------------


def test_recollecting_a_compacted_day_new_values_win(prometheus, history, tmp_path):
    from helpers import DEFAULT_METRICS, ERROR_Q, REQUEST_Q

    data = tmp_path / "data"
    proxies = history.proxies
    comp = {"removeDailyAfter": "0s"}
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, proxies, output_dir=data, storage_extra={"compaction": comp})
    first, last = history.days_list[0], history.days_list[-1]
    assert run_collector("--config", cfg, "--from", first, "--to", last).returncode == 0
    assert run_collector("--config", cfg, "--compact", "--month", "2024-03").returncode == 0
    assert sorted(p.name for p in data.iterdir()) == ["2024-03"]
    con = connect()
    q = ("SELECT date, api_proxy, metric_name, labels['environment'], value FROM prom_metrics(data_dir := ?) "
         "ORDER BY ALL")
    old = {r[:4]: r[4] for r in con.execute(q, [str(data)]).fetchall()}
    assert len(old) == len(history.days_list) * len(proxies) * 2 * 2
    day = history.days_list[1]
    # Re-collected with request_count doubled and error_count no longer configured: the
    # collector writes the day's files and compacts the month again right away. The new
    # request_count wins; error_count, which the new files lack, keeps its archived rows.
    doubled = [{"name": "request_count", "query": f"({REQUEST_Q}) * 2", "labels": ["apiproxy", "environment"]}]
    cfg2 = write_config(tmp_path / "c2.yaml", prometheus.url, proxies, metrics=doubled, output_dir=data,
                        storage_extra={"compaction": comp})
    r = run_collector("--config", cfg2, "--date", day)
    assert r.returncode == 0, r.stderr
    assert 'month="2024-03" status="compacted"' in r.stderr, r.stderr
    assert sorted(p.name for p in data.iterdir()) == ["2024-03"], "the day's files were taken in and removed"
    new = {r[:4]: r[4] for r in con.execute(q, [str(data)]).fetchall()}
    assert new.keys() == old.keys()
    for k, v in new.items():
        want = old[k] * 2 if (k[0] == day and k[2] == "request_count") else old[k]
        assert v == want, k
    # --replace: the day becomes exactly what Prometheus answers now (request_count only).
    r = run_collector("--config", cfg2, "--date", day, "--replace")
    assert r.returncode == 0, r.stderr
    rows = con.execute(q, [str(data)]).fetchall()
    assert {(d, m) for d, _, m, _, _ in rows if d == day} == {(day, "request_count")}
    assert len(rows) == len(old) - len(proxies) * 2
    # From SQL: prom_collect writes daily files; readers keep the month file's values until
    # prom_compact takes them in.
    cfg3 = write_config(tmp_path / "c3.yaml", prometheus.url, proxies, metrics=DEFAULT_METRICS + [
        {"name": "errors_x3", "query": f"({ERROR_Q}) * 3", "labels": ["apiproxy", "environment"]}], output_dir=data,
        storage_extra={"compaction": comp})
    out = con.execute("SELECT status FROM prom_collect(config := ?, date := ?)", [str(cfg3), day]).fetchall()
    assert {s for (s,) in out} == {"written"}
    assert con.execute(q, [str(data)]).fetchall() == rows, "the month file still wins"
    res = con.execute("SELECT month, status, daily_files FROM prom_compact(config := ?, month := '2024-03')", [str(cfg3)]).fetchall()
    assert res == [("2024-03", "compacted", len(proxies))]
    final = {r[:4]: r[4] for r in con.execute(q, [str(data)]).fetchall()}
    for (d, p, m, e), v in final.items():
        if d == day:
            base_m = "error_count" if m == "errors_x3" else m
            assert v == old[(d, p, base_m, e)] * (3 if m == "errors_x3" else 1), (d, p, m, e)
        else:
            assert v == old[(d, p, m, e)]
    assert len(final) == len(old) + len(proxies) * 2
