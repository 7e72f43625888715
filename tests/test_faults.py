"""Hardening: the collector and the extension's live functions against a real
Prometheus behind a fault-injecting proxy (tests/faultproxy.py).

Transient faults (5xx, 429 with Retry-After, a hang past the timeout, a reset
connection, a truncated or malformed body) on the first 1-2 matching requests
must be retried: exit 0 and exactly the data of a clean run. Permanent faults
(400, 422, ``status: error``, a wrong result type, a bad body that outlasts every
retry) must fail just that (day, proxy): exit 1, a message naming the day, the
proxy, the metric and the server's own text, every other partition written, and
the failed partition's earlier file untouched, byte for byte.

Expected values come from the history generator (``history.expected``), never
from promduck itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import datetime, timezone

import duckdb
import pyarrow.parquet as pq
import pytest

from faultproxy import FaultProxy, label_matchers, promql_skeleton, regex_literal_alternatives
from helpers import (COLLECTOR, DEFAULT_METRICS, day_end_ms, expected_rows, normalise, partition_files, wait_until,
                     read_rows, run_collector, write_config)

PROXIES = ["api-proxy-1", "api-proxy-2"]
TARGET = "api-proxy-2"  # the proxy whose queries get the faults
METRIC_SELECTORS = {"request_count": "apigee_request_count", "error_count": "apigee_error_count"}


# --- helpers --------------------------------------------------------------------------------------------------

def day_end_param(day) -> str:
    """The `time` parameter of a daily instant query for ``day`` (D+1 00:00 UTC, whole seconds)."""
    return str(day_end_ms(day) // 1000)


def targets(req, metric="error_count", proxy=TARGET, day=None) -> bool:
    """True for instant queries of ``metric`` that select ``proxy`` (alone or in a batch) [on ``day``]."""
    q = req.promql or ""
    if req.path != "/api/v1/query" or METRIC_SELECTORS[metric] not in q:
        return False
    if day is not None and req.param("time") != day_end_param(day):
        return False
    values = [v for _, v in label_matchers(q, "apiproxy")]
    return any(v == proxy or proxy in (regex_literal_alternatives(v) or []) for v in values)


def attempts_of(proxy: FaultProxy, req):
    """Every request identical to ``req`` (same path, query and time): its attempts."""
    return [r for r in proxy.snapshot() if r.path == req.path and r.promql == req.promql
            and r.param("time") == req.param("time")]


def check_query_form(proxy: FaultProxy, proxies, batched: bool, days):
    """Every query carries the proxy names as one escaped string literal of the
    form the batch setting asks for, and nothing else about it changed."""
    queries = [r for r in proxy.snapshot() if r.path == "/api/v1/query"]
    assert queries, proxy.summary()
    templates = {promql_skeleton(m["query"]) for m in DEFAULT_METRICS}
    seen = set()
    for r in queries:
        q = r.promql
        matchers = label_matchers(q, "apiproxy")
        assert len(matchers) == 1, q
        op, value = matchers[0]
        skeleton = promql_skeleton(q)
        if batched:
            assert op == "=~", f"default batchSize: expected one query for all proxies, got {q!r}\n{proxy.summary()}"
            names = regex_literal_alternatives(value)
            assert names is not None and sorted(names) == sorted(proxies), q
            assert skeleton.replace('apiproxy=~""', 'apiproxy=""') in templates, q
            seen.update((r.param("time"), q.split("{")[0], n) for n in names)
        else:
            assert op == "=", f"batchSize 1: expected one query per proxy, got {q!r}"
            assert value in proxies, q
            assert skeleton in templates, q
            seen.add((r.param("time"), q.split("{")[0], value))
        assert r.param("time") in {day_end_param(d) for d in days}, r.params
    want = {(day_end_param(d), m["query"].split("{")[0], p) for d in days for m in DEFAULT_METRICS for p in proxies}
    assert seen == want
    if batched:
        distinct = {(r.promql, r.param("time")) for r in queries}
        assert len(distinct) == len(DEFAULT_METRICS) * len(days), proxy.summary()


def batch_extra(batch_size):
    return {} if batch_size is None else {"batchSize": batch_size}


@pytest.fixture
def fault_proxy(prometheus):
    p = FaultProxy(prometheus.url).start()
    yield p
    p.stop()


# --- transient faults: retried, exact data, exit 0 ------------------------------------------------------------------

TRANSIENT = [
    # action, options, faulted attempts, batchSize (None: the default, batched)
    pytest.param("http_500", {}, 2, 1, id="500-json-x2-batch1"),
    pytest.param("http_500", {"text": True}, 1, None, id="500-text-x1-batched"),
    pytest.param("http_502", {}, 2, None, id="502-json-x2-batched"),
    pytest.param("http_502", {"text": True}, 2, 1, id="502-text-x2-batch1"),
    pytest.param("http_503", {}, 2, 1, id="503-x2-batch1"),
    pytest.param("http_503", {"text": True}, 1, None, id="503-text-x1-batched"),
    pytest.param("http_429", {"retry_after": 1}, 1, 1, id="429-retry-after-batch1"),
    pytest.param("http_429", {"retry_after": 1}, 1, None, id="429-retry-after-batched"),
    # The hang outlasts the run's hang guard (60 s): the run ends only if the client gives up.
    pytest.param("hang", {"hang_seconds": 600}, 1, 1, id="hang-past-timeout-batch1"),
    pytest.param("hang", {"hang_seconds": 600}, 1, None, id="hang-past-timeout-batched"),
    pytest.param("reset", {}, 2, 1, id="reset-x2-batch1"),
    pytest.param("reset", {}, 1, None, id="reset-x1-batched"),
    pytest.param("truncate", {}, 1, 1, id="truncated-json-x1-batch1"),
    pytest.param("truncate", {}, 2, None, id="truncated-json-x2-batched"),
    pytest.param("malformed", {}, 2, 1, id="malformed-x2-batch1"),
    pytest.param("malformed", {}, 1, None, id="malformed-x1-batched"),
    pytest.param("api_error", {"error_type": "unavailable"}, 1, 1, id="status-error-unavailable-x1-batch1"),
]


@pytest.mark.parametrize("action,options,times,batch_size", TRANSIENT)
def test_transient_fault_is_retried_and_data_is_exact(fault_proxy, history, tmp_path, action, options, times,
                                                      batch_size):
    day = history.days_list[1]
    timeout = "1s" if action == "hang" else "5s"
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, PROXIES,
                       prometheus_extra={"retries": 2, "timeout": timeout, **batch_extra(batch_size)})
    rule = fault_proxy.add_rule(action, match=targets, times=times, **options)
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path, timeout=60)
    log = f"stderr:\n{r.stderr}\nproxy:\n{fault_proxy.summary()}"
    assert r.returncode == 0, log
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], PROXIES), log
    assert partition_files(tmp_path / "data") == {f"{day}/{p}.parquet" for p in PROXIES}, log

    # The proxy saw the faults and then the retry that succeeded.
    assert rule.fired == times, log
    faulted = [q for q in fault_proxy.snapshot() if q.rule is rule]
    assert len({(q.promql, q.param("time")) for q in faulted}) == 1, log
    attempts = attempts_of(fault_proxy, faulted[0])
    assert len(attempts) == times + 1, log
    assert all(a.rule is rule for a in attempts[:times]), log
    assert attempts[-1].action == "forward" and attempts[-1].status == 200, log
    if action == "http_429":
        # Retry-After: 1 is honoured (the backoff alone would be 200 ms); a lower bound only.
        assert attempts[1].time - attempts[0].time >= 0.95, log
    if action == "hang":
        # The client gave up after its 1 s timeout, not sooner (and not at the hang's end,
        # 600 s later: the run ended within its 60 s guard).
        assert attempts[1].time - attempts[0].time >= 0.95, log
    check_query_form(fault_proxy, PROXIES, batched=batch_size is None, days=[day])


def test_transient_fault_without_retries_fails(fault_proxy, history, tmp_path):
    """`retries: 0` means one attempt: a single 503 then fails the partition."""
    day = history.days_list[0]
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, PROXIES,
                       prometheus_extra={"retries": 0, "batchSize": 1})
    rule = fault_proxy.add_rule("http_503", match=targets, times=1, message="upstream overloaded Qx7")
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert rule.fired == 1
    faulted = next(q for q in fault_proxy.snapshot() if q.rule is rule)
    assert len(attempts_of(fault_proxy, faulted)) == 1, fault_proxy.summary()
    line = next(l for l in r.stderr.splitlines() if "upstream overloaded Qx7" in l)
    assert str(day) in line and TARGET in line and "error_count" in line and "503" in line, line
    assert partition_files(tmp_path / "data") == {f"{day}/api-proxy-1.parquet"}


def test_concurrency_bounds_requests_in_flight(fault_proxy, history, tmp_path):
    day = history.days_list[0]
    for concurrency in (1, 2):
        fault_proxy.clear()
        fault_proxy.add_rule("delay", path="/api/v1/query", times=None, delay_seconds=0.15)
        out = tmp_path / f"c{concurrency}"
        cfg = write_config(tmp_path / f"c{concurrency}.yaml", fault_proxy.url, history.proxies, output_dir=out,
                           prometheus_extra={"concurrency": concurrency, "batchSize": 1})
        r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert len(fault_proxy.queries()) == len(history.proxies) * len(DEFAULT_METRICS)
        assert fault_proxy.max_in_flight == concurrency, fault_proxy.summary()
        assert normalise(read_rows(out)) == expected_rows(history, [day], sorted(history.proxies))


# --- permanent faults: that (day, proxy) fails, the rest is written, the old file stays ------------------------------

PERMANENT = [
    # action, options, retried?, text the error must carry, batchSize
    pytest.param("http_400", {"message": "1:36: parse error: unexpected character inside braces: 'Zq'"}, False,
                 ["HTTP 400", "bad_data", "1:36: parse error: unexpected character inside braces: 'Zq'"], 1,
                 id="400-batch1"),
    pytest.param("http_400", {"message": "invalid parameter \"query\": Zq81 bad"}, False,
                 ["HTTP 400", 'invalid parameter "query": Zq81 bad'], None, id="400-batched"),
    pytest.param("http_422", {"message": "expanding series: Zq82 too many samples"}, False,
                 ["HTTP 422", "execution", "expanding series: Zq82 too many samples"], 1, id="422-batch1"),
    pytest.param("http_422", {"message": "Zq83 query processing would load too many samples into memory"}, False,
                 ["HTTP 422", "Zq83 query processing would load too many samples into memory"], None,
                 id="422-batched"),
    pytest.param("api_error", {"message": "Zq84 execution: query timed out in expression evaluation"}, False,
                 ["execution", "Zq84 execution: query timed out in expression evaluation"], 1, id="status-error"),
    pytest.param("wrong_type", {}, False, ["string"], None, id="wrong-result-type"),
    pytest.param("malformed", {"message": "Zq85 proxy error page"}, True, ["<html>", "Zq85 proxy error page"], 1,
                 id="malformed-persistent"),
    pytest.param("truncate", {}, True, ["malformed response", '{\\"status\\":\\"success\\"'], None,
                 id="truncated-persistent"),
    pytest.param("http_503", {"message": "Zq86 service unavailable"}, True, ["503", "Zq86 service unavailable"], 1,
                 id="503-persistent"),
]


@pytest.mark.parametrize("action,options,retried,needles,batch_size", PERMANENT)
def test_permanent_fault_fails_only_that_partition(fault_proxy, history, tmp_path, action, options, retried,
                                                   needles, batch_size):
    d0, d1 = history.days_list[0], history.days_list[1]
    retries = 1
    data = tmp_path / "data"
    # An earlier clean run (gzip) leaves files for every partition.
    clean = write_config(tmp_path / "clean.yaml", fault_proxy.url, PROXIES, output_dir=data,
                         storage_extra={"compression": "gzip"}, prometheus_extra=batch_extra(batch_size))
    r = run_collector("--config", clean, "--from", d0, "--to", d1, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = {p: (p.read_bytes(), os.stat(p).st_ino) for p in data.rglob("*.parquet")}
    assert len(before) == 4
    failed = data / str(d1) / f"{TARGET}.parquet"

    # Now every error_count query for (d1, TARGET) fails; the new run writes zstd.
    fault_proxy.clear()
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, PROXIES, output_dir=data,
                       prometheus_extra={"retries": retries, "timeout": "5s", **batch_extra(batch_size)})
    rule = fault_proxy.add_rule(action, match=lambda q: targets(q, day=d1), times=None, **options)
    r = run_collector("--config", cfg, "--from", d0, "--to", d1, cwd=tmp_path)
    log = f"stderr:\n{r.stderr}\nproxy:\n{fault_proxy.summary()}"
    assert r.returncode == 1, log
    assert "panicked" not in r.stderr

    # The error names the day, the proxy, the metric, and carries the server's text.
    lines = [l for l in r.stderr.splitlines() if str(d1) in l and TARGET in l and "error_count" in l]
    assert lines, log
    for needle in needles:
        assert any(needle in l for l in lines), f"{needle!r} missing\n{log}"
    assert not any(str(d0) in l and ("ERROR" in l or "failed" in l) for l in r.stderr.splitlines()), log

    # The failed partition's old file is untouched; every other partition was rewritten.
    assert failed.read_bytes() == before[failed][0]
    assert os.stat(failed).st_ino == before[failed][1]
    for p, (_, ino) in before.items():
        if p != failed:
            assert os.stat(p).st_ino != ino, f"{p} was not rewritten"
            md = pq.ParquetFile(p).metadata
            assert md.row_group(0).column(0).compression == "ZSTD"
    assert partition_files(data) == {f"{d}/{p}.parquet" for d in (d0, d1) for p in PROXIES}, "stray files"
    got = normalise(read_rows(data))
    want = expected_rows(history, [d0, d1], PROXIES)
    assert got == want  # the kept file holds the clean run's (identical) values

    # 400/422/status:error/wrong type are never retried; bad bodies and 5xx are, up to `retries`.
    # Faulted: TARGET's own query, and (batched) first the failed batch of both proxies,
    # after which each proxy is queried on its own.
    faulted = {(x.promql, x.param("time")): x for x in fault_proxy.snapshot() if x.rule is rule}
    batched = batch_size is None
    assert sorted(label_matchers(k[0], "apiproxy")[0][0] for k in faulted) == (["=", "=~"] if batched else ["="]), log
    attempts = retries + 1 if retried else 1
    assert rule.fired == len(faulted) * attempts, log
    for q in faulted.values():
        assert len(attempts_of(fault_proxy, q)) == attempts, log


def test_permanent_fault_for_the_only_metric_writes_nothing_new(fault_proxy, history, tmp_path):
    """No old file: a failed (day, proxy) leaves no file at all (not an empty one)."""
    day = history.days_list[2]
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, PROXIES, prometheus_extra={"batchSize": 1})
    fault_proxy.add_rule("http_400", match=targets, times=None, message="Zq87 bad query")
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert partition_files(tmp_path / "data") == {f"{day}/api-proxy-1.parquet"}
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], ["api-proxy-1"])


def test_empty_answer_keeps_the_existing_file(fault_proxy, history, tmp_path):
    """Prometheus suddenly answering nothing for a partition that has data keeps the old file."""
    day = history.days_list[3]
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, PROXIES, prometheus_extra={"batchSize": 1})
    assert run_collector("--config", cfg, "--date", day, cwd=tmp_path).returncode == 0
    target = tmp_path / "data" / str(day) / f"{TARGET}.parquet"
    before = (target.read_bytes(), os.stat(target).st_ino)
    fault_proxy.add_rule("empty", match=targets, times=None)
    fault_proxy.add_rule("empty", match=lambda q: targets(q, metric="request_count"), times=None)
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    # Keeping the old file is not a failure: exit 0, one warning for that partition.
    assert r.returncode == 0, r.stderr
    assert (target.read_bytes(), os.stat(target).st_ino) == before, r.stderr
    kept = [l for l in r.stderr.splitlines() if "kept archived rows" in l]
    assert len(kept) == 1, r.stderr
    # rows: the written partition's 4 and the kept one's 4.
    assert "written=1 empty=0 kept=1 failed=0 cancelled=0 rows=8 " in r.stderr, r.stderr
    assert TARGET in kept[0] and str(day) in kept[0] and "no rows of it in the new answer" in kept[0]
    assert "WARN" in kept[0] and "ERROR" not in r.stderr, r.stderr
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], PROXIES)


def test_sigterm_during_a_hung_query_stops_promptly(fault_proxy, history, tmp_path):
    """SIGTERM while a query hangs (timeout and hang 600 s): the run stops without
    waiting for either, finished partitions are written, the hung one is not, and no
    temporary file is left."""
    d0, d1 = history.days_list[0], history.days_list[1]
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, PROXIES,
                       prometheus_extra={"timeout": "600s", "batchSize": 1})
    rule = fault_proxy.add_rule("hang", match=targets, times=None, hang_seconds=600)
    proc = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--from", str(d0), "--to", str(d1)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Both days' queries of the target proxy hang, the other proxy's are written.
        wait_until(lambda: rule.fired == 2 and partition_files(tmp_path / "data") >= {
            f"{d}/api-proxy-1.parquet" for d in (d0, d1)}, "two hung queries", proc=proc)
        proc.send_signal(signal.SIGTERM)
        # The hang guard (60 s) is far below the timeout and the hang (600 s): an exit
        # at all means the run stopped without waiting for them.
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert rule.fired == 2, fault_proxy.summary()
    assert partition_files(tmp_path / "data") == {f"{d}/api-proxy-1.parquet" for d in (d0, d1)}, stderr
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [d0, d1], ["api-proxy-1"])


# --- the extension's live functions --------------------------------------------------------------------------------

DAILY_ALL = "sum(increase(apigee_request_count[1d])) by (apiproxy, environment)"


# `con` (the extension in-process): tests/conftest.py.


def live_daily(con, url, day, timeout="5s", attempt_timeout=None):
    at = datetime.fromtimestamp(day_end_ms(day) / 1000, tz=timezone.utc)
    rows = con.execute("SELECT labels['apiproxy'], labels['environment'], value FROM prom_query(?, url := ?, at := ?, "
                       "timeout := ?, attempt_timeout := ?)",
                       [DAILY_ALL, url, at, timeout, attempt_timeout or timeout]).fetchall()
    return {(p, e): v for p, e, v in rows}


def expected_daily(history, day):
    return {(p, e): history.expected[(day, p, e, "request_count")] for p in history.proxies for e in history.environments}


@pytest.mark.parametrize("action,options", [
    # The hang outlasts the call's 10 s timeout: only attempt_timeout (1 s) lets it succeed.
    ("http_503", {}), ("http_502", {"text": True}), ("reset", {}), ("hang", {"hang_seconds": 600}),
    ("truncate", {}), ("malformed", {}),
])
def test_prom_query_retries_transient_faults(con, fault_proxy, history, action, options):
    day = history.days_list[1]
    rule = fault_proxy.add_rule(action, path="/api/v1/query", times=1, **options)
    # `timeout` bounds the whole call; a hung attempt is given up after `attempt_timeout`.
    got = live_daily(con, fault_proxy.url, day, timeout="10s", attempt_timeout="1s" if action == "hang" else None)
    assert got == expected_daily(history, day), fault_proxy.summary()
    assert rule.fired == 1
    assert [r.action for r in fault_proxy.snapshot()] == [action, "forward"], fault_proxy.summary()


@pytest.mark.parametrize("action,message,needles", [
    ("http_400", "1:5: parse error: Zq91 unclosed left parenthesis", ["HTTP 400", "bad_data", "Zq91 unclosed left"]),
    ("http_422", "Zq92 query processing would load too many samples", ["HTTP 422", "Zq92 query processing"]),
    ("api_error", "Zq93 expanding series: context deadline exceeded", ["execution", "Zq93 expanding series"]),
])
def test_prom_query_permanent_fault_is_a_clear_error(con, fault_proxy, history, action, message, needles):
    day = history.days_list[1]
    fault_proxy.add_rule(action, path="/api/v1/query", times=None, message=message)
    with pytest.raises(duckdb.Error) as e:
        live_daily(con, fault_proxy.url, day)
    for needle in needles:
        assert needle in str(e.value), str(e.value)
    assert len(fault_proxy.snapshot()) == 1, "a query error must not be retried\n" + fault_proxy.summary()
    # The connection still works, for plain SQL and for a clean live query.
    assert con.execute("SELECT 41 + 1").fetchall() == [(42,)]
    fault_proxy.clear()
    assert live_daily(con, fault_proxy.url, day) == expected_daily(history, day)


# --- the fault proxy itself does what the tests above rely on ----------------------------------------------------

def test_faultproxy_actions_behave_as_documented(prometheus):
    import http.client
    import json
    import urllib.parse

    form = urllib.parse.urlencode({"query": "count(apigee_latency_ms)", "time": "1709337600"})
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Bearer tok-1"}

    def post(proxy, path="/api/v1/query?x=1", hdrs=headers):
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        try:
            conn.request("POST", path, body=form, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    with FaultProxy(prometheus.url, bearer_token="tok-1") as proxy:
        status, _, body = post(proxy)
        assert status == 200 and json.loads(body)["data"]["result"][0]["value"][1] == "8"
        rec = proxy.requests[-1]
        assert rec.method == "POST" and rec.path == "/api/v1/query" and rec.query == {"x": ["1"]}
        assert rec.form == {"query": ["count(apigee_latency_ms)"], "time": ["1709337600"]}
        assert rec.headers["authorization"] == "Bearer tok-1" and rec.action == "forward"
        # Bearer check: missing or wrong token → 401, never forwarded.
        assert post(proxy, hdrs={"Content-Type": headers["Content-Type"]})[0] == 401
        assert post(proxy, hdrs={**headers, "Authorization": "Bearer nope"})[0] == 401
        assert [r.action for r in proxy.requests[-2:]] == ["unauthorized", "unauthorized"]

        proxy.add_rule("truncate", times=1)
        status, hdrs, body = post(proxy)
        _, _, full = post(proxy)
        assert status == 200 and int(hdrs["Content-Length"]) == len(body) == len(full) // 2
        assert full.startswith(body)
        with pytest.raises(ValueError):
            json.loads(body)

        proxy.add_rule("http_429", times=1)
        status, hdrs, body = post(proxy)
        assert status == 429 and hdrs["Retry-After"] == "1" and json.loads(body)["status"] == "error"

        proxy.add_rule("http_502", times=1, text=True, message="gateway down")
        status, hdrs, body = post(proxy)
        assert status == 502 and hdrs["Content-Type"].startswith("text/plain") and b"gateway down" in body

        proxy.add_rule("reset", times=1)
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)) as e:
            post(proxy)
        assert isinstance(e.value, ConnectionResetError), "SO_LINGER 0 must reset, not close cleanly"

        proxy.add_rule("hang", times=1, hang_seconds=2)
        with pytest.raises(TimeoutError):
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=0.3)
            conn.request("POST", "/api/v1/query", body=form, headers=headers)
            conn.getresponse()
        conn.close()
        assert post(proxy)[0] == 200  # every rule is used up: forwarded again
