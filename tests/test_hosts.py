"""The same extension library in every DuckDB host the README claims: Python duckdb 1.2, 1.3,
1.4, 1.5 and 2.0 (the newest patch of each, one venv per release under .cache/, `make hosts`),
the tests' own venv (duckdb 2.0.1) and the DuckDB CLI (duckdb-cli 1.5.6).

In each Python host: LOAD by path (the file stamped for the platform the host reports: DuckDB
1.2's Linux wheels say `linux_amd64_gcc4`), INSTALL by name from `build/repository` as a folder
and served over HTTP, and every function with exact values (prom_metrics, prom_partitions,
timestamp_ms, prom_collect with and without `config :=`, prom_query, prom_query_range (each
also with a list of expressions and `labels := [...]` columns), prom_labels, prom_label_values,
prom_series, prom_metadata) against the test Prometheus and its generator."""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from helpers import BUILD, DUCKDB_CLI, EXTENSION, REPO_ROOT, day_end_ms, run_collector, write_config

#: minor release -> the exact version its venv holds (the Makefile's HOST_DUCKDB)
HOSTS = {"1.2": "1.2.2", "1.3": "1.3.2", "1.4": "1.4.5", "1.5": "1.5.6", "2.0": "2.0.1"}
#: the platform each host reports (`PRAGMA platform`); the README names the gcc4 ones
GCC4_HOSTS = {"1.2"}
PLATFORM = "linux_amd64"
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"


def host_python(host: str) -> Path:
    exe = VENV_PYTHON if host == "venv" else REPO_ROOT / ".cache" / f"duckdb-{host}" / "bin" / "python"
    assert exe.exists(), f"{exe} is missing: run `make hosts`"
    return exe


def stamped_for(platform: str) -> Path:
    return EXTENSION if platform == PLATFORM else BUILD / platform / "promduck.duckdb_extension"


def run_host(host: str, script: str, args, cwd: Path, env=None) -> dict:
    """Runs ``script`` in the host's Python; its last stdout line is JSON. A crash (a C API
    function the host lacks) is reported with its signal, not as a JSON error."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PROMDUCK_")}
    full.update(env or {})
    r = subprocess.run([str(host_python(host)), "-c", script, *map(str, args)], cwd=cwd, env=full,
                       capture_output=True, text=True, timeout=180)
    if r.returncode < 0:
        pytest.fail(f"DuckDB {host} died of {signal.Signals(-r.returncode).name}:\n{r.stdout}\n{r.stderr}")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


COMMON = r"""
import duckdb, json, sys

def labels(m):
    # MAP(VARCHAR, VARCHAR) as a dict, whatever the host's Python conversion
    if isinstance(m, dict) and set(m) == {'key', 'value'} and isinstance(m['key'], list):
        return dict(zip(m['key'], m['value']))
    return dict(m)

def connect(**cfg):
    cfg['allow_unsigned_extensions'] = 'true'
    return duckdb.connect(config=cfg)

def err(f):
    try:
        f()
    except duckdb.Error as e:
        return str(e)
    return None
"""

LOAD_AND_ANSWER = COMMON + r"""
build, data, day, prom, cfg, start, end, prom_meta = sys.argv[1:9]
out = {'version': duckdb.__version__}
con = connect()
out['platform'] = platform = con.execute('PRAGMA platform').fetchone()[0]
ext = build + '/promduck.duckdb_extension' if platform == 'linux_amd64' else build + '/' + platform + '/promduck.duckdb_extension'
if platform != 'linux_amd64':
    out['plain_file'] = err(lambda: con.execute("LOAD '" + build + "/promduck.duckdb_extension'"))
    con = connect()
con.execute("LOAD '" + ext + "'")
out['loaded'] = [r[0] for r in con.execute(
    "SELECT extension_name FROM duckdb_extensions() WHERE loaded AND extension_name = 'promduck'").fetchall()]
Q = lambda sql, p=(): con.execute(sql, list(p)).fetchall()
out['totals'] = dict(Q("SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, date := ?, metric := 'request_count') GROUP BY 1", [data, day]))
out['rows'] = [[r[0], r[1], r[2], labels(r[3]), r[4]] for r in Q(
    "SELECT epoch_ms(timestamp), api_proxy, metric_name, labels, value FROM prom_metrics(data_dir := ?, date := ?, proxy := 'api-proxy-1') "
    "ORDER BY 3, 5", [data, day])]
out['partitions'] = [list(map(str, r)) for r in Q("SELECT date, api_proxy FROM prom_partitions(data_dir := ?) ORDER BY 2", [data])]
out['ts'] = str(Q("SELECT timestamp_ms(86400000)")[0][0])
out['seed_basic'] = Q("SELECT count(*) FROM read_parquet(? || '/*/*.parquet') WHERE TIMESTAMP_MS(timestamp) = ?::TIMESTAMP", [data, end])[0][0]
out['query'] = [[r[0], labels(r[1]), r[2], r[3]] for r in Q(
    "SELECT metric_name, labels, epoch_ms(timestamp), value FROM prom_query("
    "'sum(increase(apigee_request_count{apiproxy=\"api-proxy-2\"}[1d])) by (apiproxy, environment)', "
    "url := ?, \"time\" := ?::TIMESTAMPTZ) ORDER BY 3, 4", [prom, end])]
out['range'] = Q("SELECT epoch_ms(timestamp), value FROM prom_query_range("
    "'apigee_latency_ms{apiproxy=\"api-proxy-3\",environment=\"test\"}', ?::TIMESTAMPTZ, ?::TIMESTAMPTZ + INTERVAL 3 HOUR, "
    "INTERVAL 1 SECOND, url := ?) ORDER BY 1", [start, start, prom])
out['query_list'] = Q("SELECT query, apiproxy, environment, value FROM prom_query(["
    "'sum(increase(apigee_request_count{apiproxy=\"api-proxy-2\"}[1d])) by (apiproxy, environment)', "
    "'sum(increase(apigee_error_count{apiproxy=\"api-proxy-2\"}[1d])) by (apiproxy, environment)'], "
    "url := ?, at := ?::TIMESTAMPTZ, labels := ['apiproxy', 'environment']) ORDER BY ALL", [prom, end])
out['range_list'] = Q("SELECT query, environment, epoch_ms(timestamp), value FROM prom_query_range(?, ?::TIMESTAMPTZ, "
    "?::TIMESTAMPTZ + INTERVAL 10 MINUTE, '1m', url := ?, labels := ['environment']) ORDER BY ALL",
    [['apigee_latency_ms{apiproxy="api-proxy-1"}', 'apigee_latency_ms{apiproxy="api-proxy-3"}'], start, start, prom])
out['series_labels'] = Q("SELECT apiproxy, environment FROM prom_series('apigee_error_count', url := ?, "
    "labels := ['apiproxy', 'environment']) ORDER BY ALL", [prom])
out['archive_labels'] = Q("SELECT metric_name, environment, value FROM prom_metrics(data_dir := ?, date := ?, "
    "proxy := 'api-proxy-1', labels := ['environment']) ORDER BY ALL", [data, day])
out['metadata'] = Q("SELECT * FROM prom_metadata(url := ?) ORDER BY ALL", [prom_meta])
out['labels'] = [r[0] for r in Q("SELECT * FROM prom_labels(url := ?) ORDER BY 1", [prom])]
out['label_values'] = [r[0] for r in Q("SELECT * FROM prom_label_values('apiproxy', url := ?) ORDER BY 1", [prom])]
out['series'] = sorted(([r[0], labels(r[1])] for r in Q(
    "SELECT metric_name, labels FROM prom_series('apigee_error_count{environment=\"prod\"}', url := ?)", [prom])),
    key=json.dumps)
out['collect'] = [[str(r[0]), r[1], r[2], r[3]] for r in Q(
    "SELECT date, api_proxy, rows, status FROM prom_collect(config := ?, date := ?) ORDER BY 2", [cfg, day])]
# no config := and no PROMDUCK_CONFIG: config/config.yaml of the working directory, as the collector
out['collect_default'] = err(lambda: out.__setitem__('collect_default', [[str(r[0]), r[1], r[2], r[3]] for r in Q(
    "SELECT date, api_proxy, rows, status FROM prom_collect(date := ?) ORDER BY 2", [day])])) or out['collect_default']
out['error'] = err(lambda: Q("SELECT * FROM prom_metrics(data_dir := ?, date := 'nope')", [data]))
out['alive'] = Q("SELECT 42")[0][0]
print(json.dumps(out))
"""

INSTALL_BY_NAME = COMMON + r"""
repo, extdir, data, day = sys.argv[1:5]
con = connect(extension_directory=extdir)
con.execute("INSTALL promduck FROM '" + repo + "'")
installed = con.execute("SELECT installed_from, install_mode FROM duckdb_extensions() WHERE extension_name = 'promduck'").fetchone()
con.close()
# a new process-like session: only the extension directory is shared
con = connect(extension_directory=extdir)
con.execute("LOAD promduck")
total = con.execute("SELECT sum(value) FROM prom_metrics(data_dir := ?, date := ?, metric := 'request_count')", [data, day]).fetchone()[0]
print(json.dumps({'version': duckdb.__version__, 'installed': list(installed), 'total': total,
                  'ts': str(con.execute('SELECT timestamp_ms(0)').fetchone()[0])}))
"""


@pytest.fixture(scope="module")
def collected(prometheus, history, tmp_path_factory):
    work = tmp_path_factory.mktemp("hosts")
    cfg = write_config(work / "c.yaml", prometheus.url, history.proxies)
    day = history.days_list[1]
    assert run_collector("--config", cfg, "--date", day, cwd=work).returncode == 0
    return work / "data", day


@pytest.fixture(scope="module")
def repository_over_http():
    """build/ served over HTTP on 127.0.0.1, as a user would publish build/repository."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(BUILD)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/repository"
    finally:
        server.shutdown()
        server.server_close()


def total_requests(history, day, proxies=None):
    return sum(history.expected[(day, p, e, "request_count")] for p in proxies or history.proxies
               for e in history.environments)


@pytest.mark.parametrize("host", [*HOSTS, "venv"])
def test_load_by_path_and_every_function_answers_exactly(collected, history, prometheus, prometheus_metadata, tmp_path,
                                                          host):
    data, day = collected
    end = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
    start = end - timedelta(hours=10)  # 14:00 of the day: 3 h at 1 s = 10,801 points (one request)
    # prom_collect's two configurations: one proxy each, into their own folders
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-3"], output_dir=tmp_path / "out")
    (tmp_path / "config").mkdir()
    write_config(tmp_path / "config" / "config.yaml", prometheus.url, ["api-proxy-2"], output_dir=tmp_path / "out-default")
    out = run_host(host, LOAD_AND_ANSWER, [BUILD, data, day, prometheus.url, cfg, start.isoformat(), end.isoformat(),
                                           prometheus_metadata.url], cwd=tmp_path)

    minor = ".".join(out["version"].split(".")[:2])
    assert out["version"] == (HOSTS[host] if host != "venv" else "2.0.1")
    if minor in GCC4_HOSTS:
        assert out["platform"] == PLATFORM + "_gcc4"
        assert "built for the platform 'linux_amd64', but we can only load extensions built for platform " \
               "'linux_amd64_gcc4'" in out["plain_file"]
    else:
        assert out["platform"] == PLATFORM and "plain_file" not in out
    assert out["loaded"] == ["promduck"]

    assert out["totals"] == {p: total_requests(history, day, [p]) for p in history.proxies}
    assert out["rows"] == sorted(
        ([day_end_ms(day), "api-proxy-1", m, {"apiproxy": "api-proxy-1", "environment": e},
          history.expected[(day, "api-proxy-1", e, m)]] for m in ("error_count", "request_count")
         for e in history.environments), key=lambda r: (r[2], r[4]))
    assert out["partitions"] == [[str(day), p] for p in sorted(history.proxies)]
    assert out["ts"] == "1970-01-02 00:00:00"
    assert out["seed_basic"] == 2 * len(history.proxies) * len(history.environments)

    assert out["query"] == sorted(
        ([None, {"apiproxy": "api-proxy-2", "environment": e}, int(end.timestamp() * 1000),
          history.expected[(day, "api-proxy-2", e, "request_count")]] for e in history.environments),
        key=lambda r: r[3])
    samples = dict(history.gauge_samples[("api-proxy-3", "test")])
    s0 = int(start.timestamp())
    assert [tuple(r) for r in out["range"]] == [(t * 1000, samples[t - (t - s0) % 60]) for t in range(s0, s0 + 3 * 3600 + 1)]
    queries = ['sum(increase(apigee_request_count{apiproxy="api-proxy-2"}[1d])) by (apiproxy, environment)',
               'sum(increase(apigee_error_count{apiproxy="api-proxy-2"}[1d])) by (apiproxy, environment)']
    assert [tuple(r) for r in out["query_list"]] == sorted(
        (qq, "api-proxy-2", e, history.expected[(day, "api-proxy-2", e, m)])
        for qq, m in zip(queries, ("request_count", "error_count")) for e in history.environments)
    assert [tuple(r) for r in out["range_list"]] == sorted(
        (f'apigee_latency_ms{{apiproxy="{p}"}}', e, t * 1000, dict(history.gauge_samples[(p, e)])[t])
        for p in ("api-proxy-1", "api-proxy-3") for e in history.environments for t in range(s0, s0 + 601, 60))
    assert [tuple(r) for r in out["series_labels"]] == sorted((p, e) for p in history.proxies for e in history.environments)
    assert [tuple(r) for r in out["archive_labels"]] == sorted(
        (m, e, history.expected[(day, "api-proxy-1", e, m)]) for m in ("error_count", "request_count")
        for e in history.environments)
    from conftest import exporter_metadata
    assert [tuple(r) for r in out["metadata"]] == exporter_metadata()
    assert out["labels"] == ["__name__", "apiproxy", "environment"]
    assert out["label_values"] == sorted(history.proxies)
    assert out["series"] == [["apigee_error_count", {"apiproxy": p, "environment": "prod"}] for p in sorted(history.proxies)]

    n = 2 * len(history.environments)
    assert out["collect"] == [[str(day), "api-proxy-3", n, "written"]]
    assert out["collect_default"] == [[str(day), "api-proxy-2", n, "written"]]
    assert {p.name for p in (tmp_path / "out" / str(day)).iterdir()} == {"api-proxy-3.parquet"}
    assert {p.name for p in (tmp_path / "out-default" / str(day)).iterdir()} == {"api-proxy-2.parquet"}
    assert 'invalid date "nope"' in out["error"]
    assert out["alive"] == 42


@pytest.mark.parametrize("how", ["folder", "http"])
@pytest.mark.parametrize("host", [*HOSTS, "venv"])
def test_install_by_name_from_the_repository(collected, history, repository_over_http, tmp_path, host, how):
    """`INSTALL promduck FROM 'build/repository'` (relative, from the repository root, as the
    README writes it) or from the same folder over HTTP, then `LOAD promduck` in a new session."""
    data, day = collected
    folder = "build/repository" if BUILD == REPO_ROOT / "build" else str(BUILD / "repository")
    repo = folder if how == "folder" else repository_over_http
    out = run_host(host, INSTALL_BY_NAME, [repo, tmp_path / "ext", data, day], cwd=REPO_ROOT)
    assert out["installed"] == [repo, "REPOSITORY"]
    assert out["total"] == total_requests(history, day)
    assert out["ts"] == "1970-01-01 00:00:00"
    files = [p.relative_to(tmp_path / "ext") for p in (tmp_path / "ext").rglob("promduck.duckdb_extension")]
    minor = ".".join(out["version"].split(".")[:2])
    platform = PLATFORM + "_gcc4" if minor in GCC4_HOSTS else PLATFORM
    assert files == [Path(f"v{out['version']}") / platform / "promduck.duckdb_extension"]


def test_prom_collect_without_any_config_says_what_it_looked_for(tmp_path):
    out = run_host("venv", COMMON + r"""
con = connect()
con.execute("LOAD '" + sys.argv[1] + "'")
print(json.dumps({'error': err(lambda: con.execute("SELECT * FROM prom_collect(date := '2024-03-01')").fetchall())}))
""", [EXTENSION], cwd=tmp_path)
    assert ("prom_collect needs config := 'path/to/config.yaml', or PROMDUCK_CONFIG, or config/config.yaml in the "
            f"working directory (there is none in {tmp_path})") in out["error"]


def test_promduck_config_wins_over_config_yaml(prometheus, history, tmp_path):
    """As the collector: $PROMDUCK_CONFIG before config/config.yaml; an empty one is unset."""
    day = history.days_list[0]
    (tmp_path / "config").mkdir()
    write_config(tmp_path / "config" / "config.yaml", prometheus.url, ["api-proxy-1"], output_dir=tmp_path / "default")
    env_cfg = write_config(tmp_path / "env.yaml", prometheus.url, ["api-proxy-2"], output_dir=tmp_path / "env")
    script = COMMON + r"""
con = connect()
con.execute("LOAD '" + sys.argv[1] + "'")
print(json.dumps(con.execute("SELECT api_proxy, status FROM prom_collect(date := ?)", [sys.argv[2]]).fetchall()))
"""
    assert run_host("venv", script, [EXTENSION, day], tmp_path, {"PROMDUCK_CONFIG": str(env_cfg)}) == [["api-proxy-2", "written"]]
    assert run_host("venv", script, [EXTENSION, day], tmp_path, {"PROMDUCK_CONFIG": ""}) == [["api-proxy-1", "written"]]
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")} == {
        f"env/{day}/api-proxy-2.parquet", f"default/{day}/api-proxy-1.parquet"}


def test_extension_loads_in_the_cli(collected, history, tmp_path):
    """The DuckDB CLI (duckdb-cli 1.5.6): LOAD by path, and INSTALL by name from the repository."""
    data, day = collected
    sql_tail = f"SELECT sum(value) FROM prom_metrics(data_dir := '{data}', date := '{day}', metric := 'request_count');"
    r = subprocess.run([str(DUCKDB_CLI), "-unsigned", "-csv", "-c", f"LOAD '{EXTENSION}'; SELECT version(); {sql_tail}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[1] == "v1.5.6"
    assert float(lines[-1]) == total_requests(history, day)
    r = subprocess.run([str(DUCKDB_CLI), "-unsigned", "-csv", "-c",
                        f"SET extension_directory = '{tmp_path}/ext'; INSTALL promduck FROM 'build/repository'; "
                        f"LOAD promduck; {sql_tail}"], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip().splitlines()[-1]) == total_requests(history, day)
    assert (tmp_path / "ext" / "v1.5.6" / PLATFORM / "promduck.duckdb_extension").is_file()


def test_lists_label_columns_and_metadata_in_the_cli(prometheus, prometheus_metadata, history):
    """The DuckDB CLI: a list of expressions with label columns, and prom_metadata."""
    from conftest import exporter_metadata
    day = history.days_list[1]
    end = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
    sql = (f"LOAD '{EXTENSION}'; SELECT query, environment, value FROM prom_query(["
           "'sum(increase(apigee_request_count{apiproxy=\"api-proxy-1\"}[1d])) by (environment)', "
           "'sum(increase(apigee_error_count{apiproxy=\"api-proxy-1\"}[1d])) by (environment)'], "
           f"url := '{prometheus.url}', at := '{end.isoformat()}', labels := ['environment']) ORDER BY ALL; "
           f"SELECT metric_name, type, unit FROM prom_metadata(url := '{prometheus_metadata.url}') ORDER BY ALL;")
    r = subprocess.run([str(DUCKDB_CLI), "-unsigned", "-csv", "-noheader", "-c", sql], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    import csv
    rows = list(csv.reader(r.stdout.splitlines()))
    n = 2 * len(history.environments)
    assert [(a, b, float(c)) for a, b, c in rows[:n]] == sorted(
        (f'sum(increase(apigee_{m}{{apiproxy="api-proxy-1"}}[1d])) by (environment)', e,
         history.expected[(day, "api-proxy-1", e, m)]) for m in ("request_count", "error_count")
        for e in history.environments)
    assert [tuple(r) for r in rows[n:]] == [(m[0], m[1], m[3]) for m in exporter_metadata()]


@pytest.mark.parametrize("host", [*HOSTS, "venv"])
def test_readme_python_section_returns_timestamps(collected, history, host):
    """The README's Python section (`pip install duckdb pytz`) fetches every column of
    prom_metrics, TIMESTAMPTZ included, in each Python host: DuckDB's Python package
    before 2.0 needs pytz for it, which current pandas no longer brings."""
    data, day = collected
    script = COMMON + r"""
build, data, day = sys.argv[1:4]
con = connect()
platform = con.execute('PRAGMA platform').fetchone()[0]
con.execute("LOAD '" + (build + '/promduck.duckdb_extension' if platform == 'linux_amd64' else build + '/' + platform + '/promduck.duckdb_extension') + "'")
rows = con.execute("SELECT timestamp, api_proxy, metric_name, value FROM prom_metrics(data_dir := ?, date := ?, "
                   "proxy := 'api-proxy-1', metric := 'request_count') ORDER BY value", [data, day]).fetchall()
print(json.dumps([[r[0].isoformat(), r[1], r[2], r[3]] for r in rows]))
"""
    out = run_host(host, script, [BUILD, data, day], REPO_ROOT)
    # The day's end, as an instant: a host shows it in the process's zone (TZ) or in UTC.
    end = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
    want = sorted(history.expected[(day, "api-proxy-1", e, "request_count")] for e in history.environments)
    assert [[datetime.fromisoformat(t), *rest] for t, *rest in out] == [[end, "api-proxy-1", "request_count", v]
                                                                          for v in want], out
    assert all(datetime.fromisoformat(t).utcoffset() is not None for t, *_ in out), out


# --- description.yml: promduck's entry for DuckDB's community-extensions repository -------------------------------

def test_description_yml_has_the_community_extensions_shape(prometheus, tmp_path):
    """The fields and rules of community-extensions' schema/description.cue, the extension's own
    name and version, and a hello_world that runs."""
    import re
    import tomllib

    import duckdb
    import yaml

    desc = yaml.safe_load((REPO_ROOT / "description.yml").read_text())
    assert set(desc) <= {"extension", "repo", "docs"}
    ext, repo, docs = desc["extension"], desc["repo"], desc["docs"]
    for key in ("name", "description", "language", "build", "maintainers"):
        assert ext.get(key), key
    assert ext["build"] in ("cmake", "CMake", "cargo") and ext["language"] == "Rust"
    assert isinstance(ext["maintainers"], list) and ext["maintainers"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]+/[a-zA-Z0-9_.-]+", repo["github"])
    assert re.fullmatch(r"([a-f0-9]{40}|v?[0-9]+\.[0-9]+\.?[0-9]*.*|[a-z0-9_.-]+)", repo["ref"])
    assert set(docs) <= {"hello_world", "extended_description", "readme", "docs_url"}
    # what the built file says of itself (its footer) and the workspace's version and licence
    workspace = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["workspace"]["package"]
    assert ext["name"] == EXTENSION.name.split(".")[0] == "promduck"
    assert ext["version"] == workspace["version"] and ext["license"] == workspace["license"]
    footer = EXTENSION.read_bytes()[-512:]
    assert footer[128:160].rstrip(b"\0").decode() == "v" + ext["version"]
    # hello_world runs (in a folder with an empty data/; the live query against the test Prometheus)
    (tmp_path / "data").mkdir()
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for sql in docs["hello_world"].replace("http://127.0.0.1:9090", prometheus.url).split(";"):
            if sql.strip() and not all(line.strip().startswith("--") for line in sql.strip().splitlines()):
                assert con.execute(sql).fetchall() == []
    finally:
        os.chdir(cwd)
