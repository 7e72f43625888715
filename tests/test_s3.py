"""Object storage end to end: a real Prometheus → the collector → an S3 bucket (moto's
server on 127.0.0.1, through a recording fault proxy) → `prom_metrics` in the DuckDB CLI
and the Python package, with no httpfs. Signatures are checked by s3s-fs.

Expected values come from the history generator, never from promduck's output; request
counts are counted at the proxy in front of the S3 server.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from helpers import COLLECTOR, DUCKDB_CLI, EXTENSION, expected_rows, normalise, run_collector, wait_until
from s3fixture import child_env, write_s3_config

PREFIX = "metrics/prod"
ENC_WEIRD = "we%22ird%2Fproxy"


def encoded(proxy: str) -> str:
    return ENC_WEIRD if proxy == 'we"ird/proxy' else proxy


def seed_keys(history, days=None, prefix=PREFIX):
    return sorted(f"{prefix}/{d.isoformat()}/{encoded(p)}.parquet" for d in (days or history.days_list)
                  for p in history.proxies)


def bucket_rows(moto, bucket, prefix=PREFIX):
    """Every row of every object under the prefix, read by pyarrow from the bytes the server holds."""
    rows = []
    for key in moto.list_keys(bucket, prefix):
        t = pq.read_table(io.BytesIO(moto.get(bucket, key)))
        for r in t.to_pylist():
            rows.append((r["timestamp"], r["metric_name"], r["value"], r["api_proxy"], r["date"],
                         dict(r["labels"])))
    rows.sort(key=lambda r: (r[4], r[3], r[1], r[0], str(r[5])))
    return rows


def sql_env(server):
    return child_env(server)


def cli(sql: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(DUCKDB_CLI), "-unsigned", "-csv", "-c", f"LOAD '{EXTENSION}';\n{sql}"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def archive(prometheus, history, moto_s3, tmp_path_factory):
    """One collection of the whole history into a bucket (a module-scoped bucket of its own)."""
    work = tmp_path_factory.mktemp("s3-archive")
    bucket = moto_s3.create_bucket()
    cfg = write_s3_config(work / "config.yaml", prometheus.url, history.proxies, moto_s3, bucket, PREFIX)
    moto_s3.reset_requests()
    first, last = history.days_list[0], history.days_list[-1]
    r = run_collector("--config", cfg, "--from", first, "--to", last, cwd=work, env=child_env())
    assert r.returncode == 0, r.stderr
    counts = moto_s3.counts(bucket=bucket)
    yield work, bucket, cfg, r, counts
    moto_s3.reset()
    moto_s3.delete_bucket(bucket)


def test_collector_writes_the_seed_layout_into_the_bucket(archive, history, moto_s3):
    work, bucket, _, r, counts = archive
    assert moto_s3.list_keys(bucket) == seed_keys(history)
    assert moto_s3.stray(bucket) == []
    # One PUT per partition, nothing else written; the local disk untouched.
    n = len(history.days_list) * len(history.proxies)
    assert counts["PUT"] == n, counts
    assert not (work / "data").exists()
    assert normalise(bucket_rows(moto_s3, bucket)) == expected_rows(history)


def test_a_forked_child_reads_the_bucket(archive, history, moto_s3):
    """The parent reads the bucket first (the object-store runtime starts), then forks,
    as multiprocessing, gunicorn --preload and Celery do; the child's reads must answer
    (on the parent's runtime they would wait forever for threads the child lacks)."""
    _, bucket, _, _, _ = archive
    url = f"s3://{bucket}/{PREFIX}"
    script = textwrap.dedent(f"""
        import os, signal, sys, duckdb
        q = "SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{url}', metric := 'request_count')"
        con = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
        con.execute("LOAD '{EXTENSION}'")
        parent = con.execute(q).fetchone()
        pid = os.fork()
        if pid == 0:
            signal.alarm(100)  # a hang in the child ends the child (SIGALRM), and the test sees it
            child = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
            child.execute("LOAD '{EXTENSION}'")
            got = child.execute(q).fetchone()
            print("child", got, flush=True)
            os._exit(0 if got == parent else 3)
        _, status = os.waitpid(pid, 0)
        print("parent", parent, flush=True)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    r = subprocess.run([sys.executable, "-c", script], env=sql_env(moto_s3), capture_output=True, text=True,
                       timeout=150)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    n = len(history.days_list) * len(history.proxies) * len(history.environments)
    assert f"child ({n}, " in r.stdout, r.stdout


def test_prom_metrics_reads_the_bucket_in_the_cli_and_python(archive, history, moto_s3, tmp_path):
    _, bucket, _, _, _ = archive
    url = f"s3://{bucket}/{PREFIX}"
    want = {}
    for (day, proxy, env, metric), v in history.expected.items():
        if metric == "request_count" and day in history.days_list:
            want[proxy] = want.get(proxy, 0.0) + v
    sql = (f"SELECT api_proxy, sum(value) AS s, count(*) AS n FROM prom_metrics(data_dir := '{url}', "
           f"metric := 'request_count') GROUP BY ALL ORDER BY api_proxy")
    r = cli(sql, sql_env(moto_s3), tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()[1:]
    got = {}
    for line in lines:
        proxy, s, n = line.rsplit(",", 2)
        got[proxy.strip('"').replace('""', '"')] = (float(s), int(n))
    n_per_proxy = len(history.days_list) * len(history.environments)
    assert got == {p: (pytest.approx(want[p]), n_per_proxy) for p in history.proxies}

    # The Python package, in this process: credentials from the environment.
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(sql_env(moto_s3))
        con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        con.execute(f"LOAD '{EXTENSION}'")
        rows = con.execute(sql).fetchall()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert {p: (s, n) for p, s, n in rows} == {p: (pytest.approx(want[p]), n_per_proxy) for p in history.proxies}


def test_pruning_request_counts(archive, history, moto_s3, tmp_path):
    """A point query: a ranged GET of the month file (404: the month is not compacted) and
    one GET of the partition. One day: that ranged GET, one listing of that day, one GET per
    proxy. No request touches another day."""
    _, bucket, _, _, _ = archive
    url = f"s3://{bucket}/{PREFIX}"
    day = history.days_list[1]
    env = sql_env(moto_s3)

    moto_s3.reset_requests()
    proxy = history.proxies[0]
    r = cli(f"SELECT sum(value) FROM prom_metrics(data_dir := '{url}', date := '{day}', proxy := '{proxy}', "
            f"metric := 'request_count')", env, tmp_path)
    assert r.returncode == 0, r.stderr
    want = sum(history.expected[(day, proxy, e, "request_count")] for e in history.environments)
    assert float(r.stdout.splitlines()[1]) == pytest.approx(want)
    c = moto_s3.counts(bucket=bucket)
    assert dict(c) == {"GET_RANGE": 1, "GET": 1}, moto_s3.summary()
    month_key = f"{PREFIX}/{day:%Y-%m}/{day:%Y-%m}.parquet"
    assert [q.key for q in moto_s3.requests("GET_RANGE", bucket=bucket)] == [month_key], moto_s3.summary()
    assert [q.key for q in moto_s3.requests("GET", bucket=bucket)] == [
        f"{PREFIX}/{day.isoformat()}/{encoded(proxy)}.parquet"], moto_s3.summary()

    moto_s3.reset_requests()
    r = cli(f"SELECT count(*) FROM prom_metrics(data_dir := '{url}', date := '{day}')", env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.splitlines()[1]) == len(history.proxies) * 2 * len(history.environments)
    c = moto_s3.counts(bucket=bucket)
    assert dict(c) == {"GET_RANGE": 1, "LIST": 1, "GET": len(history.proxies)}, moto_s3.summary()
    assert [q.key for q in moto_s3.requests("GET_RANGE", bucket=bucket)] == [month_key], moto_s3.summary()
    listed = [q.prefix for q in moto_s3.requests("LIST", bucket=bucket)]
    assert listed == [f"{PREFIX}/{day.isoformat()}/"]
    touched = {q.key for q in moto_s3.requests("GET", bucket=bucket)}
    assert touched == {f"{PREFIX}/{day.isoformat()}/{encoded(p)}.parquet" for p in history.proxies}


def test_prom_partitions_lists_the_bucket(archive, history, moto_s3, tmp_path):
    _, bucket, _, _, _ = archive
    url = f"s3://{bucket}/{PREFIX}"
    r = cli(f"SELECT date, api_proxy, path, bytes FROM prom_partitions(data_dir := '{url}') ORDER BY ALL",
            sql_env(moto_s3), tmp_path)
    assert r.returncode == 0, r.stderr
    sizes = moto_s3.objects(bucket, PREFIX)
    got = r.stdout.strip().splitlines()[1:]
    assert len(got) == len(sizes)
    for line in got:
        path, size = line.rsplit(",", 2)[-2:]
        key = path.strip('"').removeprefix(f"s3://{bucket}/")
        assert sizes[key] == int(size)


def test_recollecting_replaces_and_a_failed_metric_keeps_the_old_object(prometheus, history, moto_s3, s3_bucket,
                                                                         tmp_path):
    from faultproxy import FaultProxy

    day = history.days_list[0]
    cfg = write_s3_config(tmp_path / "config.yaml", prometheus.url, history.proxies, moto_s3, s3_bucket, PREFIX)
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path, env=child_env())
    assert r.returncode == 0, r.stderr
    before = {k: moto_s3.get(s3_bucket, k) for k in moto_s3.list_keys(s3_bucket)}
    # Again: same keys, same rows (replaced, never duplicated).
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path, env=child_env())
    assert r.returncode == 0, r.stderr
    assert moto_s3.list_keys(s3_bucket) == sorted(before)
    assert normalise(bucket_rows(moto_s3, s3_bucket)) == expected_rows(history, days=[day])
    # A metric failing for one proxy: its partition keeps the old object byte for byte.
    with FaultProxy(prometheus.url) as prom:
        prom.add_rule("http_422", query_contains='apigee_error_count{apiproxy="api-proxy-2"}', times=None)
        cfg2 = write_s3_config(tmp_path / "config2.yaml", prom.url, history.proxies, moto_s3, s3_bucket, PREFIX,
                               prometheus_extra={"batchSize": 1})
        moto_s3.reset_requests()
        r = run_collector("--config", cfg2, "--date", day, cwd=tmp_path, env=child_env())
    assert r.returncode == 1
    key = f"{PREFIX}/{day.isoformat()}/api-proxy-2.parquet"
    assert moto_s3.get(s3_bucket, key) == before[key]
    assert key not in {q.key for q in moto_s3.requests("PUT", bucket=s3_bucket)}
    assert moto_s3.counts(bucket=s3_bucket)["PUT"] == len(history.proxies) - 1


def test_s3_faults_are_retried_and_the_data_is_exact(prometheus, history, moto_s3, s3_bucket, tmp_path):
    day = history.days_list[2]
    cfg = write_s3_config(tmp_path / "config.yaml", prometheus.url, history.proxies, moto_s3, s3_bucket, PREFIX)
    slow = moto_s3.add_fault("s3_error", method="PUT", key_contains="api-proxy-1", times=2)  # 503 SlowDown
    err500 = moto_s3.add_fault("s3_error", status=500, method="PUT", key_contains="api-proxy-3", times=1)
    reset = moto_s3.add_fault("reset", method="PUT", key_contains="proxy.parquet", times=1)
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path, env=child_env())
    assert r.returncode == 0, r.stderr
    assert (slow.fired, err500.fired, reset.fired) == (2, 1, 1)
    assert moto_s3.list_keys(s3_bucket) == seed_keys(history, days=[day])
    assert moto_s3.stray(s3_bucket) == []
    assert normalise(bucket_rows(moto_s3, s3_bucket)) == expected_rows(history, days=[day])
    # Reads retried too: a 503 on the listing and a reset on a GET.
    moto_s3.add_fault("s3_error", kind="LIST", times=1)
    moto_s3.add_fault("reset", kind="GET", times=1)
    r = cli(f"SELECT count(*) FROM prom_metrics(data_dir := 's3://{s3_bucket}/{PREFIX}', date := '{day}')",
            sql_env(moto_s3), tmp_path)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.splitlines()[1]) == len(history.proxies) * 2 * len(history.environments)


def test_no_such_bucket_is_a_clear_error(prometheus, history, moto_s3, tmp_path):
    cfg = write_s3_config(tmp_path / "config.yaml", prometheus.url, history.proxies, moto_s3, "no-such-bucket-x")
    r = run_collector("--config", cfg, "--check", cwd=tmp_path, env=child_env())
    assert r.returncode == 1
    assert "no-such-bucket-x" in r.stdout + r.stderr
    assert "does not exist" in r.stdout + r.stderr
    r = cli("SELECT * FROM prom_metrics(data_dir := 's3://no-such-bucket-x/p')", sql_env(moto_s3), tmp_path)
    assert r.returncode != 0
    assert "bucket \"no-such-bucket-x\" does not exist" in r.stderr


def test_wrong_credentials_are_refused_and_secrets_never_shown(prometheus, history, s3s_fs, tmp_path):
    """s3s-fs checks signatures: a wrong secret is a 403 naming the cause; neither the
    wrong secret nor the session token appears in any output."""
    bucket = s3s_fs.create_bucket()
    # s3s-fs decodes a key's %XX twice (moto and S3 do not): plain names only here.
    proxies = [p for p in history.proxies if "%" not in encoded(p)]
    secret = "WRONGsecretVALUE0123456789abcdefXYZ"
    token = "SESSIONtoken0123456789abcdefghijklmnop"
    day = history.days_list[0]
    cfg = write_s3_config(tmp_path / "config.yaml", prometheus.url, proxies, s3s_fs, bucket, PREFIX,
                          secret_key=secret, session_token=token)
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path, env=child_env())
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert "the server refused the credentials (SignatureDoesNotMatch)" in out, out
    for s in (secret, token, secret[:len(secret) // 2], secret[len(secret) // 2:], token[:len(token) // 2],
              token[len(token) // 2:]):
        assert s not in out
    assert s3s_fs.list_keys(bucket) == []
    r = cli(f"SELECT * FROM prom_metrics(data_dir := 's3://{bucket}/{PREFIX}', s3_secret_access_key := '{secret}', "
            f"s3_access_key_id := '{s3s_fs.access_key}', s3_session_token := '{token}', "
            f"s3_endpoint := '{s3s_fs.endpoint}', s3_region := '{s3s_fs.region}')", child_env(), tmp_path)
    assert r.returncode != 0
    # DuckDB echoes the failing statement in some errors: only the message after it counts.
    msg = r.stderr.split("prom_metrics:", 1)[-1]
    assert "the server refused the credentials (SignatureDoesNotMatch)" in msg, r.stderr
    for s in (secret, token):
        assert s not in msg
    # The right secret through the same path works (signatures checked by the server).
    cfg_ok = write_s3_config(tmp_path / "ok.yaml", prometheus.url, proxies, s3s_fs, bucket, PREFIX)
    r = run_collector("--config", cfg_ok, "--date", day, cwd=tmp_path, env=child_env())
    assert r.returncode == 0, r.stderr
    assert s3s_fs.list_keys(bucket) == sorted(f"{PREFIX}/{day.isoformat()}/{p}.parquet" for p in proxies)


def test_sigkill_during_an_s3_collection_leaves_no_partial_object(prometheus, history, moto_s3, s3_bucket,
                                                                   tmp_path):
    cfg = write_s3_config(tmp_path / "config.yaml", prometheus.url, history.proxies, moto_s3, s3_bucket, PREFIX,
                          prometheus_extra={"concurrency": 1, "batchSize": 1})
    moto_s3.add_fault("delay", method="PUT", times=None, delay_seconds=0.3)
    first, last = history.days_list[0], history.days_list[-1]
    p = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--from", str(first), "--to", str(last)],
                         cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: len(moto_s3.list_keys(s3_bucket)) >= 2, "two objects written", proc=p)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    keys = moto_s3.list_keys(s3_bucket)
    assert 0 < len(keys) < len(seed_keys(history)), keys
    assert moto_s3.stray(s3_bucket) == []
    for k in keys:  # every visible object is a whole Parquet file
        pq.read_table(io.BytesIO(moto_s3.get(s3_bucket, k)))
    moto_s3.reset()
    r = run_collector("--config", cfg, "--from", first, "--to", last, cwd=tmp_path, env=child_env())
    assert r.returncode == 0, r.stderr
    assert moto_s3.list_keys(s3_bucket) == seed_keys(history)
    assert normalise(bucket_rows(moto_s3, s3_bucket)) == expected_rows(history)


def test_sandbox_refuses_s3_with_external_access_off(archive, moto_s3, tmp_path):
    _, bucket, _, _, _ = archive
    moto_s3.reset_requests()
    r = cli(f"SET enable_external_access = false; SELECT count(*) FROM prom_metrics(data_dir := 's3://{bucket}/p')",
            sql_env(moto_s3), tmp_path)
    assert r.returncode != 0
    assert "Permission Error" in r.stderr
    assert moto_s3.counts(bucket=bucket) == {}


def test_named_parameters_instead_of_the_environment(archive, history, moto_s3, tmp_path):
    _, bucket, _, _, _ = archive
    sql = (f"SELECT count(*) FROM prom_metrics(data_dir := 's3://{bucket}/{PREFIX}', "
           f"s3_endpoint := '{moto_s3.endpoint.removeprefix('http://')}', s3_use_ssl := false, "
           f"s3_url_style := 'path', s3_region := '{moto_s3.region}', "
           f"s3_access_key_id := '{moto_s3.access_key}', s3_secret_access_key := '{moto_s3.secret_key}')")
    r = cli(sql, child_env(), tmp_path)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.splitlines()[1]) == len(history.days_list) * len(history.proxies) * 2 * len(
        history.environments)
    r = cli(f"SELECT count(*) FROM prom_metrics(data_dir := 's3://{bucket}/{PREFIX}')", child_env(), tmp_path)
    assert r.returncode != 0
    assert "no S3 credentials" in r.stderr and "in SQL: s3_access_key_id := and s3_secret_access_key :=" in r.stderr


def test_a_plain_http_endpoint_not_allowed_says_where_to_allow_it(prometheus, moto_s3, tmp_path):
    """An http:// endpoint without allowHttp (config) or s3_use_ssl := false (SQL) is refused
    before any request, naming the endpoint and both settings (object_store alone says
    `builder error`)."""
    cfg = write_s3_config(tmp_path / "config.yaml", prometheus.url, ["p1"], moto_s3, "b", PREFIX, allow_http=None)
    r = run_collector("--config", cfg, "--date", "2024-03-01", cwd=tmp_path, env=child_env())
    want = (f"the S3 endpoint {moto_s3.endpoint} is plain HTTP, which is refused unless allowed: set "
            "storage.s3.allowHttp: true in the config (in SQL: s3_use_ssl := false)")
    assert r.returncode != 0 and want in r.stderr, r.stderr
    moto_s3.reset_requests()
    # In SQL an http:// endpoint allows plain HTTP by itself, unless s3_use_ssl says otherwise.
    r = cli(f"SELECT count(*) FROM prom_metrics(data_dir := 's3://b/{PREFIX}', s3_endpoint := '{moto_s3.endpoint}', "
            f"s3_use_ssl := true, s3_access_key_id := 'k', s3_secret_access_key := 'secretvalue')",
            child_env(), tmp_path)
    assert r.returncode != 0 and want in r.stderr, r.stderr
    assert moto_s3.counts(bucket="b") == {}


def test_prom_collect_writes_to_the_bucket_from_sql(prometheus, history, moto_s3, s3_bucket, tmp_path):
    """`prom_collect(config := …)` with an s3:// outputDir: the same objects as the collector,
    each outcome's path the object's URL, then read back with prom_metrics."""
    day = history.days_list[3]
    cfg = write_s3_config(tmp_path / "config.yaml", prometheus.url, history.proxies, moto_s3, s3_bucket, PREFIX)
    r = cli(f"SELECT api_proxy, status, path FROM prom_collect(config := '{cfg}', date := '{day}') ORDER BY api_proxy;"
            f"SELECT count(*) FROM prom_metrics(data_dir := 's3://{s3_bucket}/{PREFIX}', date := '{day}')",
            child_env(moto_s3), tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    outcomes = [line.rsplit(",", 2) for line in lines[1:1 + len(history.proxies)]]
    assert [o[1] for o in outcomes] == ["written"] * len(history.proxies)
    assert sorted(o[2].strip('"') for o in outcomes) == [f"s3://{s3_bucket}/{k}" for k in seed_keys(history, [day])]
    assert int(lines[-1]) == len(history.proxies) * 2 * len(history.environments)
    assert moto_s3.list_keys(s3_bucket) == seed_keys(history, days=[day])
    assert normalise(bucket_rows(moto_s3, s3_bucket)) == expected_rows(history, days=[day])


def test_a_backfill_into_a_missing_bucket_stops_with_one_short_error(prometheus, history, moto_s3, tmp_path):
    """Issue 25 item 8: a missing bucket made a 30-day backfill print 120 errors of ~800 bytes
    (the server's XML body) and never stop. The archive is unusable: the run stops at the first
    failure (as for an unreachable Prometheus), and says so in short lines."""
    cfg = write_s3_config(tmp_path / "config.yaml", prometheus.url, history.proxies, moto_s3, "no-such-bucket-y")
    first = history.days_list[0]
    last = first + timedelta(days=29)
    r = run_collector("--config", cfg, "--from", first, "--to", last, cwd=tmp_path, env=child_env())
    assert r.returncode != 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if "no-such-bucket-y" in l]
    assert lines, r.stderr
    assert len(lines) <= 5, f"{len(lines)} lines name the bucket:\n" + r.stderr[-3000:]
    assert all(len(l) < 600 for l in lines), r.stderr[-3000:]
    assert "<?xml" not in r.stderr and "<Error>" not in r.stderr
    assert 'bucket "no-such-bucket-y" does not exist' in r.stderr
    # It stopped: far fewer partitions attempted than 30 days × proxies.
    assert "cancelled=" in r.stderr
    cancelled = int(r.stderr.rsplit("cancelled=", 1)[1].split()[0])
    assert cancelled > 0, r.stderr[-2000:]
