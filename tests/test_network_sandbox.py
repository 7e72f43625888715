"""Network confinement per hop (issue 24, items 4 and 5), in every DuckDB host of the matrix.

- Redirects: an allowed Prometheus URL answering 302 to another server (another port of
  127.0.0.1) must not make `prom_query`, `prom_labels` or `prom_collect` contact it when the
  sandbox allows only the first (`enable_external_access = false`, `allowed_directories` with
  the first URL): the call fails saying the redirect was refused by the sandbox, and the second
  server sees no request. With external access on, the redirect is followed as before.
- `disabled_filesystems`: `HTTPFileSystem` refuses promduck's HTTP access (live functions,
  prom_collect's Prometheus), `S3FileSystem` its s3:// archives (prom_metrics, prom_partitions,
  prom_collect, prom_compact), before any connection, as DuckDB's own readers refuse them, also
  when httpfs is not loaded (it is not, here). The setting does not read back through
  `current_setting` in any host; see `read_disabled` in extension/src/sandbox.rs.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading

import pytest

from helpers import DUCKDB_CLI, EXTENSION, write_config
from test_hosts import GCC4_HOSTS, HOSTS, PLATFORM, run_host, stamped_for


class Server:
    """A loopback HTTP server counting requests: a 302 to `redirect_to` (+ the path), or a
    Prometheus-like answer naming itself."""

    def __init__(self, redirect_to: str | None = None, name: str = "evil"):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                owner.requests.append(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                if owner.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", owner.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if "/labels" in self.path or "/values" in self.path:
                    body = {"status": "success", "data": [name]}
                elif "/series" in self.path:
                    body = {"status": "success", "data": [{"__name__": name}]}
                else:
                    body = {"status": "success", "data": {"resultType": "vector", "result": [
                        {"metric": {"__name__": name}, "value": [1709251200, "1"]}]}}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

            def log_message(self, *a):
                pass

        self.requests: list[str] = []
        self.redirect_to = redirect_to
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    target = Server()
    redirector = Server(redirect_to=target.url)
    yield redirector, target
    redirector.close()
    target.close()


def ext_for(host: str):
    minor = host if host != "venv" else "2.0"
    return stamped_for(PLATFORM + "_gcc4" if minor in GCC4_HOSTS else PLATFORM)


COMMON = r"""
import duckdb, json, sys

def connect(ext, *settings):
    c = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    c.execute(f"LOAD '{ext}'")
    for s in settings:
        c.execute(s)
    return c

def run(c, sql):
    try:
        return {"rows": [list(map(str, r)) for r in c.execute(sql).fetchall()]}
    except Exception as e:
        return {"error": str(e)}
"""

REDIRECT_SCRIPT = COMMON + r"""
ext, mode, redir, work, cfg = sys.argv[1:6]
out = {"version": duckdb.__version__}
if mode == "sandboxed":
    try:
        c = connect(ext, f"SET allowed_directories = ['{work}', '{redir}/']", "SET enable_external_access = false")
    except duckdb.Error as e:
        print(json.dumps({"unsupported": str(e), **out}))
        sys.exit(0)
else:
    c = connect(ext)
out["prom_labels"] = run(c, f"SELECT * FROM prom_labels(url := '{redir}')")
out["prom_query"] = run(c, f"SELECT * FROM prom_query('up', url := '{redir}', at := TIMESTAMPTZ '2024-03-01 00:00:00+00')")
out["prom_collect"] = run(c, f"SELECT status, error FROM prom_collect(config := '{cfg}', date := '2024-03-01')")
out["alive"] = c.execute("SELECT 42").fetchone()[0]
print(json.dumps(out))
"""


@pytest.mark.parametrize("host", [*HOSTS, "venv"])
def test_redirects_are_checked_per_hop(servers, host, tmp_path):
    redirector, target = servers
    work = tmp_path / "work"
    work.mkdir()
    cfg = write_config(work / "collect.yaml", redirector.url, ["api-proxy-1"], output_dir=work / "data")
    out = run_host(host, REDIRECT_SCRIPT, [ext_for(host), "sandboxed", redirector.url, work, cfg], tmp_path)
    assert target.requests == [], f"the sandbox let a redirect reach another host: {target.requests} {out}"
    if "unsupported" in out:
        # DuckDB 1.2 has no allowed_directories: nothing to redirect from.
        assert host == "1.2", out
    elif out["version"].startswith("1.5."):
        # DuckDB 1.5 keeps a URL entry of allowed_directories as a local path: the first URL
        # is refused already, as DuckDB's own readers refuse it.
        for k in ("prom_labels", "prom_query", "prom_collect"):
            assert "Permission Error" in out[k]["error"], (k, out)
        assert redirector.requests == []
    else:
        host_port = target.url.removeprefix("http://")
        refused = f"redirect to http://{host_port} refused by the sandbox"
        for k in ("prom_labels", "prom_query"):
            assert refused in out[k].get("error", ""), (k, out)
            assert "evil" not in json.dumps(out[k])
        # prom_collect reports per partition; its error says the same.
        rows = out["prom_collect"].get("rows")
        assert rows and all(r[0] == "failed" and refused in r[1] for r in rows), out
        assert redirector.requests, "the allowed first URL was never asked"
    assert out["alive"] == 42

    # External access on: the redirect is followed as any HTTP client follows it.
    redirector.requests.clear()
    out = run_host(host, REDIRECT_SCRIPT, [ext_for(host), "open", redirector.url, work, cfg], tmp_path)
    assert out["prom_labels"] == {"rows": [["evil"]]}, out
    assert "evil" in json.dumps(out["prom_query"]), out
    assert target.requests and redirector.requests


DISABLED_SCRIPT = COMMON + r"""
ext, trap, s3_cfg, http_cfg, work = sys.argv[1:6]
out = {"version": duckdb.__version__}
http = connect(ext, "SET disabled_filesystems = 'HTTPFileSystem'")
out["http"] = {
    "prom_query": run(http, f"SELECT * FROM prom_query('up', url := '{trap}')"),
    "prom_labels": run(http, f"SELECT * FROM prom_labels(url := '{trap}')"),
    "prom_label_values": run(http, f"SELECT * FROM prom_label_values('job', url := '{trap}')"),
    "prom_series": run(http, f"SELECT * FROM prom_series('up', url := '{trap}')"),
    "prom_metadata": run(http, f"SELECT * FROM prom_metadata(url := '{trap}')"),
    "prom_query_list": run(http, f"SELECT * FROM prom_query(['up', 'sum(up)'], url := '{trap}')"),
    "prom_query_range": run(http, f"SELECT * FROM prom_query_range('up', TIMESTAMPTZ '2024-03-01 00:00:00+00', "
                                  f"TIMESTAMPTZ '2024-03-01 01:00:00+00', INTERVAL 1 HOUR, url := '{trap}')"),
    "prom_collect": run(http, f"SELECT * FROM prom_collect(config := '{http_cfg}', date := '2024-03-01')"),
    # DuckDB's own reader, for comparison (httpfs is not loaded: it names the file system
    # only when it is).
    "read_text": run(http, f"SELECT * FROM read_text('{trap}/x')"),
}
s3 = connect(ext, "SET disabled_filesystems = 'S3FileSystem'")
out["s3"] = {
    "prom_metrics": run(s3, "SELECT count(*) FROM prom_metrics(data_dir := 's3://bucket/archive')"),
    "prom_partitions": run(s3, "SELECT count(*) FROM prom_partitions(data_dir := 's3://bucket/archive')"),
    "prom_collect": run(s3, f"SELECT * FROM prom_collect(config := '{s3_cfg}', date := '2024-03-01')"),
    "prom_compact": run(s3, f"SELECT * FROM prom_compact(config := '{s3_cfg}', month := '2024-02')"),
}
# Disabled after external access went off (the setting may still grow then): refused too.
try:
    late = connect(ext, f"SET allowed_directories = ['{trap}/', '{work}']", "SET enable_external_access = false",
                   "SET disabled_filesystems = 'HTTPFileSystem'")
    out["late"] = run(late, f"SELECT * FROM prom_labels(url := '{trap}')")
except duckdb.Error as e:
    out["late"] = {"unsupported": str(e)}
# Locked before promduck could read it: with external access off, refused (fail closed).
try:
    locked = connect(ext, f"SET allowed_directories = ['{trap}/', '{work}']", "SET enable_external_access = false",
                     "SET lock_configuration = true")
    out["locked"] = run(locked, f"SELECT * FROM prom_labels(url := '{trap}')")
except duckdb.Error as e:
    out["locked"] = {"unsupported": str(e)}
# Nothing disabled: S3 requests do reach the endpoint (the test can tell).
out["control"] = run(connect(ext, "SET disabled_filesystems = 'HTTPFileSystem'"),
                     "SELECT count(*) FROM prom_metrics(data_dir := 's3://bucket/archive')")
print(json.dumps(out))
"""


@pytest.mark.parametrize("host", [*HOSTS, "venv"])
def test_disabled_filesystems_are_honoured(host, tmp_path):
    trap = Server()  # stands for Prometheus and for the S3 endpoint alike
    try:
        work = tmp_path / "work"
        work.mkdir()
        http_cfg = write_config(work / "http.yaml", trap.url, ["api-proxy-1"], output_dir=work / "data")
        s3_cfg = write_config(work / "s3.yaml", trap.url, ["api-proxy-1"], output_dir="s3://bucket/archive",
                              storage_extra={"s3": {"endpoint": trap.url, "allowHttp": True, "region": "us-east-1",
                                                    "accessKeyId": "AKIDTEST", "secretAccessKey": "secret-test"}})
        env = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret-test", "AWS_REGION": "us-east-1",
               "AWS_ENDPOINT": trap.url, "AWS_ALLOW_HTTP": "true"}
        out = run_host(host, DISABLED_SCRIPT, [ext_for(host), trap.url, s3_cfg, http_cfg, work], tmp_path, env=env)
        for fs, results in (("HTTPFileSystem", out["http"]), ("S3FileSystem", out["s3"])):
            for name, r in results.items():
                if name == "read_text":
                    assert "error" in r, r
                    continue
                e = r.get("error", "")
                assert f"file system {fs} has been disabled by configuration (disabled_filesystems)" in e, (name, r)
                assert "Permission Error" in e
        minor = host if host != "venv" else "2.0"
        if minor in ("1.2", "1.5"):
            # No URL entry in allowed_directories (1.2 has none, 1.5 keeps it a path): refused anyway.
            for k in ("late", "locked"):
                assert "unsupported" in out[k] or "Permission Error" in out[k].get("error", ""), (k, out[k])
        else:
            assert "file system HTTPFileSystem has been disabled" in out["late"]["error"], out["late"]
            assert "disabled_filesystems setting cannot be read" in out["locked"]["error"], out["locked"]
        assert not (work / "data").exists()
        # Every refusal came before any request; the control alone reached the endpoint.
        assert trap.requests, out["control"]
        assert all(not p.startswith("/api/") for p in trap.requests), trap.requests
    finally:
        trap.close()


def test_disabled_filesystems_in_the_cli(tmp_path):
    trap = Server()
    try:
        sql = (f"LOAD '{EXTENSION}'; SET disabled_filesystems = 'HTTPFileSystem';\n"
               f"SELECT * FROM prom_labels(url := '{trap.url}');\n")
        r = subprocess.run([str(DUCKDB_CLI), "-unsigned", "-c", sql], capture_output=True, text=True, timeout=60)
        assert ("Permission Error: prom_labels cannot connect to " + trap.url) in r.stderr, r.stdout + r.stderr
        assert "file system HTTPFileSystem has been disabled by configuration" in r.stderr
        assert trap.requests == []
    finally:
        trap.close()


S3_REDIRECT_SCRIPT = COMMON + r"""
ext = sys.argv[1]
c = connect(ext)
print(json.dumps({"prom_metrics": run(c, "SELECT count(*) FROM prom_metrics(data_dir := 's3://bucket/archive')")}))
"""


def test_s3_redirects_stay_within_the_endpoint(servers, tmp_path):
    """An S3 endpoint answering 302 to another host: object_store's client would follow it
    (with the session token and signed headers); promduck's refuses, before connecting."""
    redirector, target = servers
    env = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret-test", "AWS_REGION": "us-east-1",
           "AWS_SESSION_TOKEN": "session-t0k3n", "AWS_ENDPOINT": redirector.url, "AWS_ALLOW_HTTP": "true"}
    out = run_host("venv", S3_REDIRECT_SCRIPT, [EXTENSION], tmp_path, env=env)
    assert redirector.requests, out
    assert target.requests == [], f"an S3 redirect reached another host: {target.requests}"
    e = out["prom_metrics"].get("error", "")
    host_port = target.url.removeprefix("http://")
    assert f"to http://{host_port} refused" in e, out
    assert "session-t0k3n" not in e and "secret-test" not in e


MOTO_SCRIPT = COMMON + r"""
ext, bucket = sys.argv[1:3]
out = {}
for fs in ("S3FileSystem", "HTTPFileSystem"):
    c = connect(ext, f"SET disabled_filesystems = '{fs}'")
    out[fs] = run(c, f"SELECT count(*) FROM prom_metrics(data_dir := 's3://{bucket}/archive')")
    print(json.dumps({"step": fs}), flush=True)
    sys.stdin.readline()
print(json.dumps(out))
"""


@pytest.mark.parametrize("host", [*HOSTS, "venv"])
def test_s3_file_system_disabled_against_a_real_s3_server(moto_s3, s3_bucket, host, tmp_path):
    """Against moto: S3FileSystem disabled, not one request reaches the server; only
    HTTPFileSystem disabled (DuckDB's S3 is a file system of its own), the bucket is read."""
    from s3fixture import child_env

    moto_s3.put(s3_bucket, "archive/README", "not a partition")
    moto_s3.reset_requests()
    from test_hosts import host_python
    p = subprocess.Popen([str(host_python(host)), "-c", MOTO_SCRIPT, str(ext_for(host)), s3_bucket], cwd=tmp_path,
                         env=child_env(moto_s3), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(p.stdout.readline()) == {"step": "S3FileSystem"}
        assert moto_s3.requests() == [], "a request reached S3 with S3FileSystem disabled"
        p.stdin.write("\n")
        p.stdin.flush()
        assert json.loads(p.stdout.readline()) == {"step": "HTTPFileSystem"}
        p.stdin.write("\n")
        p.stdin.flush()
        out = json.loads(p.stdout.readline())
    finally:
        p.communicate(timeout=60)
    assert "file system S3FileSystem has been disabled by configuration" in out["S3FileSystem"]["error"], out
    assert out["HTTPFileSystem"] == {"rows": [["0"]]}, out
    assert moto_s3.requests(), "the control read never reached S3"
