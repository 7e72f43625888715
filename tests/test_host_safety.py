"""The DuckDB host never dies (issue 24, items 1, 2, 7, 8 and 9), in every host of the
matrix. Each statement here aborted a host, leaked a secret or misled on the main of
2026-12-07; now each is a DuckDB error naming the parameter (or the right answer), and
the same connection answers the next statement.

The mechanisms (extension/src/value.rs, guard.rs, cpp/guard.cc, deferred.rs,
core/src/config/small_file.rs) are searched for new instances by tests/test_sql_fuzz.py;
these tests pin the instances the issue named.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from helpers import serve_http
from test_hosts import GCC4_HOSTS, HOSTS, PLATFORM, host_python, stamped_for

SECRET = "Zq9-host-safety-s3cr3t"

RUNNER = r"""
import duckdb, json, os, sys
ext, statements = sys.argv[1], json.loads(sys.argv[2])
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{ext}'")
out = []
for sql, params in statements:
    try:
        rows = con.execute(sql, params).fetchall() if params is not None else con.execute(sql).fetchall()
        out.append({"rows": [[str(v) for v in r] for r in rows[:5]]})
    except Exception as e:
        out.append({"error": str(e)})
# The same connection still answers.
out.append({"rows": [[str(v) for v in r] for r in con.execute("SELECT 42").fetchall()]})
print(json.dumps(out))
"""


def run_statements(host: str, statements, cwd: Path, env=None) -> list[dict]:
    """Runs ``statements`` ([sql, params]) in one connection of ``host``; a host death fails
    the test with the signal and the host's last words."""
    ext = stamped_for(f"{PLATFORM}_gcc4" if host in GCC4_HOSTS else PLATFORM)
    full = {k: v for k, v in os.environ.items() if not k.startswith("PROMDUCK_")}
    full.update(env or {})
    r = subprocess.run([str(host_python(host)), "-c", RUNNER, str(ext), json.dumps(statements)],
                       cwd=cwd, env=full, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"DuckDB {host} died (exit {r.returncode}):\n{r.stderr[-2000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out[-1] == {"rows": [["42"]]}
    return out[:-1]


class FakePrometheus:
    """Answers every /api/v1/* request with ``body`` and records the requests: for answers
    a real Prometheus cannot be made to give (timestamps past year 294,247, a label of
    tens of MB) and to see whether a request was sent at all."""

    def __init__(self):
        self.body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                fake.requests.append(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(fake.body)))
                self.end_headers()
                self.wfile.write(fake.body)

            do_GET = do_POST = _answer

            def log_message(self, *_):
                pass

        self.server = serve_http(Handler)
        self.url = self.server.url

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = FakePrometheus()
    yield f
    f.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A one-row archive in promduck's layout, written by DuckDB."""
    import duckdb
    root = tmp_path_factory.mktemp("safety")
    (root / "data" / "2024-03-01").mkdir(parents=True)
    duckdb.connect().execute(
        "COPY (SELECT TIMESTAMPTZ '2024-03-02 00:00:00+00' AS timestamp, DATE '2024-03-01' AS date, "
        "'p1' AS api_proxy, 'm' AS metric_name, 7.5::DOUBLE AS value, MAP {'env': 'prod'} AS labels) "
        f"TO '{root}/data/2024-03-01/p1.parquet' (FORMAT parquet)")
    return root


def err(out: dict) -> str:
    assert "error" in out, f"expected an error, got rows {out.get('rows')}"
    return out["error"]


# --- item 1: a NULL (or a value of the wrong shape) anywhere in an argument -------------------

NULL_STATEMENTS = [
    ("SELECT * FROM prom_partitions(data_dir := '{data}', date_range := [NULL, '2024-03-01'])", None,
     "date_range: item 1 of the list is NULL; give two dates [start, end]"),
    ("SELECT * FROM prom_partitions(data_dir := '{data}', date_range := [NULL])", None,
     "date_range: item 1 of the list is NULL"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', date_range := ['2024-03-01', NULL])", None,
     "date_range: item 2 of the list is NULL"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', date_range := [NULL::VARCHAR[]])", None,
     "date_range: item 1 of the list is NULL"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', date_range := ?)", [["2024-03-01", None]],
     "date_range: item 2 of the list is NULL"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', date_range := [['2024-03-01']])", None,
     "date_range: the list's items must be dates, got VARCHAR[]"),
    # item 9: a list that is not of strings is an error, as `proxy := 123` always was.
    ("SELECT * FROM prom_metrics(data_dir := '{data}', proxy := [['p1']])", None,
     "proxy must be a string or a list of strings, got VARCHAR[][]"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', proxy := [1::UHUGEINT])", None,
     "proxy must be a string or a list of strings, got UHUGEINT[]"),
    ("SELECT * FROM prom_partitions(data_dir := '{data}', proxy := ?)", [[None, ["p1"]]],
     "proxy must be a string or a list of strings, got VARCHAR[][]"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', metric := [NULL, 1.5])", None,
     "metric must be a string or a list of strings, got DECIMAL[]"),
    # item 9: a TIMESTAMPTZ names no day without the session's zone, which promduck cannot read.
    ("SELECT * FROM prom_metrics(data_dir := '{data}', date := TIMESTAMPTZ '2024-03-01 23:30:00+00')", None,
     "date: a TIMESTAMP WITH TIME ZONE names no day by itself"),
    # label columns and lists of expressions: a NULL or a wrong shape at any depth
    ("SELECT * FROM prom_metrics(data_dir := '{data}', labels := ['env', NULL])", None,
     "labels: item 2 of the list is NULL; give label names"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', labels := ?)", [[None]], "labels: item 1 of the list is NULL"),
    ("SELECT * FROM prom_metrics(data_dir := '{data}', labels := [['env']])", None,
     "labels must be a list of label names (VARCHAR[]), got VARCHAR[][]"),
    ("SELECT * FROM prom_query(?, url := 'http://127.0.0.1:9')", [["up", None]], "query 2 of the list must not be NULL"),
    ("SELECT * FROM prom_query([['up']], url := 'http://127.0.0.1:9')", None,
     "query 1 of the list must be a PromQL expression (VARCHAR), got VARCHAR[]"),
    ("SELECT * FROM prom_query_range([NULL::VARCHAR], TIMESTAMPTZ '2024-03-01 00:00:00+00', "
     "TIMESTAMPTZ '2024-03-01 01:00:00+00', '1m', url := 'http://127.0.0.1:9')", None,
     "query 1 of the list must not be NULL"),
    ("SELECT * FROM prom_series('up', url := 'http://127.0.0.1:9', labels := [NULL::VARCHAR[]])", None,
     "labels: item 1 of the list is NULL"),
    ("SELECT * FROM prom_metadata(url := 'http://127.0.0.1:9', "
     "\"limit\" := 340282366920938463463374607431768211455::UHUGEINT)",
     None, "limit must be a positive whole number of metrics, got UHUGEINT"),
]


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_nulls_and_wrong_shapes_inside_arguments_are_errors_naming_the_parameter(archive, host):
    stmts = [[sql.format(data=archive / "data"), params] for sql, params, _ in NULL_STATEMENTS]
    # The same values that are valid still read the archive's row.
    stmts.append([f"SELECT api_proxy, value FROM prom_metrics(data_dir := '{archive}/data', "
                  "date_range := ['2024-03-01', '2024-03-01'], proxy := [NULL, 'p1'])", None])
    stmts.append([f"SELECT api_proxy, env, nope IS NULL FROM prom_metrics(data_dir := '{archive}/data', "
                  "labels := ['env', 'nope'])", None])
    out = run_statements(host, stmts, archive)
    for (sql, _, want), got in zip(NULL_STATEMENTS, out):
        assert want in err(got), (sql, got)
    assert out[-2] == {"rows": [["p1", "7.5"]]}
    assert out[-1] == {"rows": [["p1", "prod", "True"]]}


# --- item 2: out of memory, and files without end -------------------------------------------

@pytest.mark.parametrize("host", sorted(HOSTS))
def test_a_huge_label_under_memory_limit_is_an_out_of_memory_error(tmp_path, host):
    """A 40 MB label in a Parquet file and in a live answer, read under a 16 MB
    memory_limit: DuckDB's string heap cannot grow, DuckDB throws, and the throw is
    caught in C++ (cpp/guard.cc): an "Out of Memory" error, as DuckDB's own read_parquet
    gives. (DuckDB 1.2 and 1.3 do not count string heaps against memory_limit: there
    the rows come back.)"""
    import duckdb
    big = 40_000_000
    (tmp_path / "data" / "2024-03-01").mkdir(parents=True)
    duckdb.connect().execute(
        "COPY (SELECT TIMESTAMPTZ '2024-03-02 00:00:00+00' AS timestamp, DATE '2024-03-01' AS date, "
        f"'p1' AS api_proxy, 'm' AS metric_name, 1.0::DOUBLE AS value, MAP {{'env': repeat('x', {big})}} AS labels) "
        f"TO '{tmp_path}/data/2024-03-01/p1.parquet' (FORMAT parquet)")
    fake = FakePrometheus()
    try:
        label = "y" * big
        fake.body = ('{"status":"success","data":{"resultType":"vector","result":[{"metric":{"env":"'
                     + label + '"},"value":[1709337600,"1"]}]}}').encode()
        out = run_statements(host, [
            ["SET memory_limit = '16MB'", None],
            [f"SELECT length(labels['env']) FROM prom_metrics(data_dir := '{tmp_path}/data')", None],
            [f"SELECT length(labels['env']) FROM prom_query('x', url := '{fake.url}', "
             "max_response_bytes := '100MB')", None],
        ], tmp_path)
    finally:
        fake.close()
    for got in out[1:]:
        if "error" in got:
            assert "Out of Memory" in got["error"], got
        else:
            assert got == {"rows": [[str(big)]]}
    if host not in ("1.2", "1.3"):
        assert all("Out of Memory" in got.get("error", "") for got in out[1:]), out


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_config_files_that_are_not_regular_files_are_refused_at_once(tmp_path, host):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(17 << 20)
    out = run_statements(host, [
        ["SELECT * FROM prom_collect(config := '/dev/zero')", None],
        [f"SELECT * FROM prom_query('up', config := '{fifo}')", None],
        [f"SELECT * FROM prom_compact(config := '{tmp_path}')", None],
        [f"SELECT * FROM prom_collect(config := '{big}')", None],
    ], tmp_path)
    assert "/dev/zero: cannot read config file: not a regular file (a character device)" in err(out[0])
    assert f"{fifo}: cannot read config file: not a regular file (a FIFO)" in err(out[1])
    assert "not a regular file (a directory)" in err(out[2])
    assert "larger than the limit of 16777216 bytes" in err(out[3])


def test_password_and_tls_files_are_read_with_a_limit(tmp_path):
    """The collector reads passwordFile and tls.caFile through the same limited reader."""
    from helpers import run_collector
    cfg = tmp_path / "c.yaml"
    cfg.write_text("apiProxies: [p]\nprometheus:\n  url: http://127.0.0.1:9\n  passwordFile: /dev/zero\n"
                   "  username: u\n  metrics:\n    - name: m\n      query: 'up{a=\"%s\"}'\n")
    r = run_collector("--config", str(cfg), "--check")
    assert r.returncode == 2, r.stderr
    assert "cannot read /dev/zero: not a regular file (a character device)" in r.stderr


# --- item 7: no secret in an error -------------------------------------------------------------

@pytest.mark.parametrize("host", sorted(HOSTS))
def test_errors_of_calls_that_carry_a_secret_never_echo_it(archive, fake, host):
    data = archive / "data"
    auth_url = fake.url.replace("http://", f"http://u:{SECRET}@")
    stmts = [
        f"SELECT * FROM prom_metrics(data_dir := '{data}', s3_access_key_id := 'k', "
        f"s3_secret_access_key := '{SECRET}', last_days := 'x')",
        f"SELECT * FROM prom_partitions(data_dir := '{data}', s3_session_token := '{SECRET}', date := '2024-02-30')",
        f"SELECT * FROM prom_metrics(data_dir := '{data}', s3_access_key_id := 'k', "
        f"s3_secret_access_key := '{SECRET}', s3_use_ssl := 'maybe?', proxy := 1)",
        f"SELECT * FROM prom_query('up', url := '{auth_url}', at := 'not a time')",
        f"SELECT * FROM prom_query('up', url := '{fake.url}', password := '{SECRET}', username := 'u', at := 'x')",
        f"SELECT * FROM prom_query_range('up', TIMESTAMPTZ '2024-03-01', TIMESTAMPTZ '2024-03-02', 'often', "
        f"bearer_token := '{SECRET}', url := '{fake.url}')",
        f"SELECT * FROM prom_query('up', url := '{auth_url}', \"time\" := [1, 2])",
    ]
    out = run_statements(host, [[s, None] for s in stmts], archive)
    for sql, got in zip(stmts, out):
        e = err(got)
        assert SECRET not in e, (sql, e)
        assert "LINE 1" not in e, (sql, e)
    assert "last_days must be an integer" in out[0]["error"]
    assert 'date: invalid date "2024-02-30"' in out[1]["error"]
    assert 'at: invalid timestamp "not a time"' in out[3]["error"]
    assert "step: invalid step" in out[5]["error"]


# --- item 8: PROMDUCK_CONFIG inside an allowed folder --------------------------------------------

@pytest.mark.parametrize("host", ["1.5", "2.0"])
def test_promduck_config_inside_an_allowed_folder_is_the_file_checked(tmp_path, fake, host):
    """With external access off, the file the call would use ($PROMDUCK_CONFIG) is the one
    put to the sandbox — not config/config.yaml, which the call would not read. (Only
    DuckDB 2.0 keeps a URL entry of allowed_directories as a URL, so only there may
    prom_collect reach the fake Prometheus; 1.5 checks prom_compact, which reads the
    config and writes nothing here.)"""
    allowed = tmp_path / "allowed"
    (allowed / "data").mkdir(parents=True)
    cfg = allowed / "promduck.yaml"
    cfg.write_text(f"apiProxies: [p1]\nprometheus:\n  url: {fake.url}\n  metrics:\n"
                   "    - name: m\n      query: 'up{{a=\"%s\"}}'\n"
                   f"storage:\n  outputDir: {allowed}/data\n")
    stmts = [
        [f"SET allowed_directories = ['{allowed}/', '{fake.url}/']", None],
        ["SET enable_external_access = false", None],
        ["SELECT count(*) FROM prom_compact()", None],
    ]
    if host == "2.0":
        stmts.append(["SELECT count(*) FROM prom_collect(date := '2024-03-01')", None])
    out = run_statements(host, stmts, tmp_path, env={"PROMDUCK_CONFIG": str(cfg)})
    assert out[2] == {"rows": [["0"]]}, out[2]
    if host == "2.0":
        assert out[3] == {"rows": [["1"]]}, out[3]
        assert fake.requests, "prom_collect queried the configured Prometheus"


# --- item 9: live answers promduck cannot store ----------------------------------------------

@pytest.mark.parametrize("host", sorted(HOSTS))
def test_live_answers_out_of_range_or_native_histograms_are_errors_that_say_so(tmp_path, fake, host):
    bodies = {
        "far": '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},'
               '"value":[9000000000000000,"1"]}]}}',
        "hist": '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},'
                '"histogram":[1709337600,{"count":"2","sum":"3","buckets":[[0,"1","2","3"]]}]}]}}',
    }
    got = {}
    for name, body in bodies.items():
        fake.body = body.encode()
        got[name] = run_statements(host, [[f"SELECT * FROM prom_query('x', url := '{fake.url}')", None]],
                                   tmp_path)[0]
    assert "outside DuckDB's TIMESTAMP range" in err(got["far"])
    assert "native histogram samples, which promduck does not store" in err(got["hist"])
    assert "malformed" not in got["hist"]["error"]


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_prom_series_of_only_nulls_sends_no_request(tmp_path, fake, host):
    out = run_statements(host, [
        [f"SELECT * FROM prom_series([NULL], url := '{fake.url}')", None],
        [f"SELECT * FROM prom_series(?, url := '{fake.url}')", [[None, None]]],
    ], tmp_path)
    for got in out:
        assert "match: give at least one series selector" in err(got)
    assert fake.requests == []


# --- SIGPIPE: a server that closes while the request is being sent ----------------------------------

def test_a_connection_closed_mid_request_is_an_error_in_the_cli(tmp_path):
    """The DuckDB CLI keeps SIGPIPE's default action (death). A server that resets the
    connection while a 20 MB request is being written killed the CLI silently (exit 243);
    promduck blocks SIGPIPE in the threads that write (extension/src/sigpipe.rs), so the
    write fails with an error the CLI prints."""
    import socket
    import struct
    from helpers import DUCKDB_CLI, EXTENSION
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]

    def reset_each():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(1024)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()

    threading.Thread(target=reset_each, daemon=True).start()
    try:
        sql = (f"LOAD '{EXTENSION}'; SELECT * FROM prom_query(repeat('x', 20000000), "
               f"url := 'http://127.0.0.1:{port}/m', timeout := '10s');")
        r = subprocess.run([str(DUCKDB_CLI), "-unsigned"], input=sql, capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    finally:
        srv.close()
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "cannot reach Prometheus at http://127.0.0.1:" in r.stderr + r.stdout, r.stderr[-2000:]
