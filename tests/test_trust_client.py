"""Hardening of the Prometheus client against a server that cannot be trusted to behave:
answers without end, bodies that never complete, servers that never answer, arguments
that make no sense, and error pages that echo the request's credentials.

Through the real binaries: the collector (``build/promduck-collector``), the DuckDB
CLI and the DuckDB Python package loading ``build/promduck.duckdb_extension``, in
front of the real Prometheus of conftest.py behind tests/faultproxy.py.

Memory is measured per child process (``os.wait4``'s ``ru_maxrss``); a watchdog
kills a child whose RSS passes 2.5 GB or that outlives its time limit, so an
unbounded build fails these tests instead of exhausting the machine.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from faultproxy import FaultProxy
from helpers import (COLLECTOR, DUCKDB_CLI, EXTENSION, day_end_ms, expected_rows, normalise, partition_files,
                     read_rows, write_config)

PROXIES = ["api-proxy-1", "api-proxy-2"]
TARGET = "api-proxy-2"
RSS_BOUND_MB = 400
WATCHDOG_MB = 2500

DEFAULT_LIMIT_TEXT = "larger than the limit of 268435456 bytes (256MiB)"
RAISE_HINT = "prometheus.maxResponseBytes in the config file, max_response_bytes := ... in SQL"


# --- running a child with its time, exit status and peak memory -------------------------------------------------

@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    elapsed: float
    peak_rss_mb: float
    killed: str | None

    def log(self) -> str:
        return (f"exit {self.code}, {self.elapsed:.1f}s, peak RSS {self.peak_rss_mb:.0f} MB, killed: {self.killed}\n"
                f"stdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}")


def _vmrss_mb(pid: int) -> float:
    """RSS of ``pid`` and its descendants (the DuckDB CLI runs under a Python launcher)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(_vmrss_mb(int(c)) for c in f.read().split())
    except OSError:
        pass
    return total


# Linux keeps a process's peak RSS across fork and exec: a child forked from this
# (possibly large) pytest process reports the parent's size as its own ru_maxrss. The
# command therefore runs as the child of a small Python process, which reports that
# child's own peak.
_MEASURE = r"""
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
if code < 0:
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def run_measured(cmd, *, cwd, env=None, timeout=60.0, input_text=None) -> Run:
    full_env = dict(os.environ)
    full_env.update(env or {})
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe, \
            tempfile.NamedTemporaryFile("r", suffix=".maxrss") as maxrss:
        start = time.monotonic()
        wrapped = [sys.executable, "-c", _MEASURE, maxrss.name, *[str(c) for c in cmd]]
        proc = subprocess.Popen(wrapped, cwd=cwd, env=full_env, stdout=fo, stderr=fe,
                                stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                                start_new_session=True)
        if input_text is not None:
            proc.stdin.write(input_text.encode())
            proc.stdin.close()
        killed = None
        peak_seen = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            rss = _vmrss_mb(proc.pid)
            peak_seen = max(peak_seen, rss)
            if killed is None and rss > WATCHDOG_MB:
                killed = f"RSS {rss:.0f} MB"
                os.killpg(proc.pid, signal.SIGKILL)
            elif killed is None and time.monotonic() - start > timeout:
                killed = f"still running after {timeout}s"
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.02)
        elapsed = time.monotonic() - start
        if killed:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # what the launcher left behind
            except OSError:
                pass
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        maxrss.seek(0)
        reported = maxrss.read().strip()
        child_peak = int(reported) / 1024 if reported else 0.0
        return Run(proc.returncode, fo.read().decode("utf-8", "replace"), fe.read().decode("utf-8", "replace"),
                   elapsed, max(child_peak, peak_seen), killed)


def run_collector_measured(*args, cwd, timeout=60.0) -> Run:
    return run_measured([COLLECTOR, *args], cwd=cwd, timeout=timeout)


# A child Python that loads the extension, runs one statement, and reports its error
# (or row count), the statement's own duration, and that the connection still works.
_PY_CHILD = r"""
import duckdb, json, sys, time
ext, sql, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{ext}'")
t = time.monotonic()
try:
    out = {"rows": len(con.execute(sql, params).fetchall())}
except duckdb.Error as e:
    out = {"error": str(e)}
out["elapsed"] = time.monotonic() - t
out["after"] = con.execute("SELECT 41 + 1").fetchall()[0][0]
print(json.dumps(out))
"""


def run_python_duckdb(sql, params, cwd, timeout=60.0) -> tuple[dict, Run]:
    r = run_measured([sys.executable, "-c", _PY_CHILD, EXTENSION, sql, json.dumps(params)], cwd=cwd, timeout=timeout)
    assert r.killed is None and r.code == 0, r.log()
    return json.loads(r.stdout.strip().splitlines()[-1]), r


def run_cli(sql, cwd, timeout=60.0) -> Run:
    return run_measured([DUCKDB_CLI, "-unsigned", "-csv"], cwd=cwd, timeout=timeout,
                        input_text=f"LOAD '{EXTENSION}';\n{sql}\n")


@pytest.fixture
def fault_proxy(prometheus):
    p = FaultProxy(prometheus.url).start()
    yield p
    p.stop()


# `con` (the extension in-process): tests/conftest.py.


def duck_error(con, sql, params=None) -> str:
    with pytest.raises(duckdb.Error) as e:
        con.execute(sql, params or []).fetchall()
    return str(e.value)


def targets_error_count(req) -> bool:
    q = req.promql or ""
    return req.path == "/api/v1/query" and "apigee_error_count" in q and f'"{TARGET}"' in q


def failure_lines(stderr: str, day, metric="error_count", proxy=TARGET):
    return [l for l in stderr.splitlines() if str(day) in l and proxy in l and metric in l]


# --- (8) answers without end, bodies that never complete, too many samples -------------------------------------------

@pytest.mark.parametrize("options", [{}, {"chunked": False}, {"content_length": 10 * 2**30}],
                         ids=["chunked", "unframed", "announced-10GiB"])
def test_collector_endless_answer_fails_the_partition_within_bounded_memory(fault_proxy, history, tmp_path,
                                                                           options):
    """Default limit (256 MiB): the collector gives up the answer at the limit, reports it
    (not retried: the same request would be as large again), writes every other
    partition, and never holds much more than the limit in memory."""
    day = history.days_list[1]
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, PROXIES,
                       prometheus_extra={"batchSize": 1, "retries": 2, "timeout": "5s"})
    rule = fault_proxy.add_rule("endless", match=targets_error_count, times=None, **options)
    r = run_collector_measured("--config", cfg, "--date", day, cwd=tmp_path)
    log = r.log() + "\nproxy:\n" + fault_proxy.summary()
    assert r.killed is None and r.code == 1, log
    lines = failure_lines(r.stderr, day)
    assert any(DEFAULT_LIMIT_TEXT in l and RAISE_HINT in l for l in lines), log
    assert rule.fired == 1, "a too-large answer must not be retried\n" + log
    # The answer never ends: the limit's error (not the 5 s timeout's, nor a run killed by the
    # 60 s hang guard) shows that the client stopped reading at the limit.
    assert r.peak_rss_mb < RSS_BOUND_MB, log
    assert not any("did not answer within" in l for l in lines), log
    assert partition_files(tmp_path / "data") == {f"{day}/api-proxy-1.parquet"}, log
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], ["api-proxy-1"])


def test_collector_max_response_bytes_is_configurable(fault_proxy, history, tmp_path):
    day = history.days_list[0]
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, PROXIES,
                       prometheus_extra={"batchSize": 1, "retries": 2, "timeout": "5s", "maxResponseBytes": "4MiB"})
    rule = fault_proxy.add_rule("endless", match=targets_error_count, times=None)
    r = run_collector_measured("--config", cfg, "--date", day, cwd=tmp_path)
    log = r.log() + "\nproxy:\n" + fault_proxy.summary()
    assert r.killed is None and r.code == 1, log
    assert any("larger than the limit of 4194304 bytes (4MiB)" in l for l in failure_lines(r.stderr, day)), log
    assert rule.fired == 1, log
    assert r.peak_rss_mb < 150, log
    assert "did not answer within" not in r.stderr, log
    # A normal answer is far below 4 MiB: everything else was collected exactly.
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], ["api-proxy-1"])


@pytest.mark.parametrize("value,needle", [
    ('"64 parsecs"', "invalid size `64 parsecs`"),
    ("0", "greater than zero"),
    ('"1.5"', "not a whole number of bytes"),
])
def test_collector_bad_max_response_bytes_names_file_and_line(history, tmp_path, value, needle):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9", PROXIES)
    text = cfg.read_text().replace('"retries": 1,', f'"retries": 1,\n    "maxResponseBytes": {value},')
    cfg.write_text(text)
    line = next(i + 1 for i, l in enumerate(text.splitlines()) if "maxResponseBytes" in l)
    r = run_collector_measured("--config", cfg, "--check", cwd=tmp_path)
    assert r.code == 2, r.log()
    assert f"c.yaml:{line}:" in r.stderr and "maxResponseBytes" in r.stderr and needle in r.stderr, r.log()


def test_collector_trickling_body_ends_at_the_timeout(fault_proxy, history, tmp_path):
    """A body that keeps arriving, a byte at a time, ends at `timeout` (1 retry: twice)."""
    day = history.days_list[2]
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, PROXIES,
                       prometheus_extra={"batchSize": 1, "retries": 1, "timeout": "2s"})
    rule = fault_proxy.add_rule("trickle", match=targets_error_count, times=None, trickle_interval=0.05)
    r = run_collector_measured("--config", cfg, "--date", day, cwd=tmp_path, timeout=60)
    log = r.log() + "\nproxy:\n" + fault_proxy.summary()
    assert r.killed is None and r.code == 1, log
    assert any("did not answer within 2s" in l for l in failure_lines(r.stderr, day)), log
    assert rule.fired == 2, log
    # The body never ends: only the timeout ends an attempt (else the 60 s hang guard kills
    # the run). The retry came after the first attempt's timeout. (Only that lower bound: the
    # proxy stamps arrivals, and the first request's connection set-up delays its stamp more
    # than the retry's, by up to the backoff's length on a loaded machine.)
    attempts = [q for q in fault_proxy.snapshot() if q.rule is rule]
    assert attempts[1].time - attempts[0].time >= 2.0, log
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], ["api-proxy-1"])


STEP_QUERY = 'sum(apigee_request_count{apiproxy="%s"}) by (apiproxy, environment)'


def test_collector_max_samples_counts_all_split_requests(fault_proxy, history, tmp_path):
    """A range metric at a 5 s step is split into two requests per day; maxSamples
    bounds the samples of both together."""
    day = history.days_list[1]
    metrics = [{"name": "requests_5s", "query": STEP_QUERY, "labels": ["apiproxy", "environment"], "step": "5s"}]

    def collect(out, extra):
        fault_proxy.clear()
        cfg = write_config(tmp_path / f"{out}.yaml", fault_proxy.url, ["api-proxy-1"], metrics=metrics,
                           output_dir=tmp_path / out, prometheus_extra=extra)
        return run_collector_measured("--config", cfg, "--date", day, cwd=tmp_path)

    r = collect("all", {})
    assert r.code == 0, r.log()
    assert len(fault_proxy.queries("/api/v1/query_range")) == 2, fault_proxy.summary()
    rows = read_rows(tmp_path / "all")
    total = len(rows)
    steps = len({row[0] for row in rows})
    assert total == 2 * steps and steps > 11_000  # two environments, both split requests
    r = collect("exact", {"maxSamples": total})
    assert r.code == 0, r.log()
    assert len(read_rows(tmp_path / "exact")) == total
    r = collect("over", {"maxSamples": total - 1, "retries": 2})
    assert r.code == 1, r.log()
    lines = failure_lines(r.stderr, day, metric="requests_5s", proxy="api-proxy-1")
    assert any(f"too many samples: the answer has more than {total - 1} samples" in l and "prometheus.maxSamples" in l
               for l in lines), r.log()
    # The first request alone was within the limit; the second went over it, and was not retried.
    assert len(fault_proxy.queries("/api/v1/query_range")) == 2, fault_proxy.summary()
    assert not (tmp_path / "over").exists() or partition_files(tmp_path / "over") == set()


def _day_at(day) -> datetime:
    return datetime.fromtimestamp(day_end_ms(day) / 1000, tz=timezone.utc)


def test_prom_query_endless_answer_cli_bounded_memory(fault_proxy, tmp_path):
    """The DuckDB CLI: prom_query against an endless answer fails at the default limit,
    quickly, within bounded memory, and the session goes on."""
    fault_proxy.add_rule("endless", path="/api/v1/query", times=None)
    r = run_cli(f"SELECT * FROM prom_query('up', url := '{fault_proxy.url}', timeout := '8s');\nSELECT 41 + 1 AS x;",
                tmp_path)
    assert r.killed is None, r.log()
    assert DEFAULT_LIMIT_TEXT in r.stderr and RAISE_HINT in r.stderr, r.log()
    assert r.stdout.strip().splitlines()[-1] == "42", r.log()
    assert r.peak_rss_mb < RSS_BOUND_MB, r.log()
    assert "within the timeout of 8s" not in r.stderr, r.log()
    assert "panicked" not in r.stderr
    assert len(fault_proxy.snapshot()) == 1, fault_proxy.summary()


@pytest.mark.parametrize("value,shown", [("'1MiB'", "1048576 bytes (1MiB)"), ("1048576", "1048576 bytes (1MiB)"),
                                         ("'1000kB'", "1000000 bytes")])
def test_prom_query_max_response_bytes_parameter(con, fault_proxy, value, shown):
    fault_proxy.add_rule("endless", times=None)
    msg = duck_error(con, f"SELECT * FROM prom_query('up', url := ?, max_response_bytes := {value})", [fault_proxy.url])
    assert f"Prometheus's answer is larger than the limit of {shown}; " in msg, msg
    msg = duck_error(con, f"SELECT * FROM prom_labels(url := ?, max_response_bytes := {value})", [fault_proxy.url])
    assert f"larger than the limit of {shown}" in msg, msg
    assert con.execute("SELECT 41 + 1").fetchall() == [(42,)]
    assert len(fault_proxy.snapshot()) == 2, fault_proxy.summary()


def test_prom_query_range_max_samples_parameter(con, prometheus, history):
    day = history.days_list[1]
    start = datetime.fromtimestamp(day_end_ms(day) / 1000 - 86_400, tz=timezone.utc)
    end = datetime.fromtimestamp(start.timestamp() + 86_400 - 5, tz=timezone.utc)
    q = 'sum(apigee_request_count{apiproxy="api-proxy-1"}) by (environment)'
    sql = "SELECT count(*) FROM prom_query_range(?, ?, ?, '5s', url := ?{})"
    total = con.execute(sql.format(""), [q, start, end, prometheus.url]).fetchall()[0][0]
    assert total == 2 * 17_280  # two series, two split requests each
    assert con.execute(sql.format(f", max_samples := {total}"), [q, start, end, prometheus.url]).fetchall() == \
        [(total,)]
    msg = duck_error(con, sql.format(f", max_samples := {total - 1}"), [q, start, end, prometheus.url])
    assert f"too many samples: the answer has more than {total - 1} samples, more than the limit of {total - 1}; " \
           in msg and "max_samples := ... in SQL" in msg, msg
    # A range with more steps than the limit is refused before any request.
    msg = duck_error(con, sql.format(", max_samples := 1000"), [q, start, end, "http://127.0.0.1:9"])
    assert "too many samples: the range has 17280 steps per series, more than the limit of 1000" in msg, msg
    # prom_query counts too.
    msg = duck_error(con, "SELECT * FROM prom_query('apigee_request_count', url := ?, at := ?, max_samples := 3)",
                     [prometheus.url, _day_at(day)])
    assert "too many samples: the answer has more than 3 samples" in msg, msg
    for bad, needle in [("0", 'max_samples: "0" is not a positive whole number'),
                        ("-5", 'max_samples: "-5" is not a positive whole number'),
                        ("'lots'", 'max_samples: "lots" is not a positive whole number')]:
        msg = duck_error(con, f"SELECT * FROM prom_query('up', url := 'http://127.0.0.1:9', max_samples := {bad})")
        assert needle in msg, msg
    for bad, needle in [("0", "max_response_bytes: size `0` must be greater than zero"),
                        ("'5 parsecs'", "max_response_bytes: invalid size `5 parsecs`")]:
        msg = duck_error(con, f"SELECT * FROM prom_labels(url := 'http://127.0.0.1:9', max_response_bytes := {bad})")
        assert needle in msg, msg
    assert con.execute("SELECT 41 + 1").fetchall() == [(42,)]


# --- (9) `timeout` is the deadline of a whole live call -------------------------------------------------------------

@pytest.mark.parametrize("action,options", [("hang", {"hang_seconds": 120}), ("trickle", {"trickle_interval": 0.05})],
                         ids=["silent", "trickling"])
@pytest.mark.parametrize("sql", [
    "SELECT * FROM prom_query('up', url := ?, timeout := '2s')",
    "SELECT * FROM prom_labels(url := ?, timeout := '2s')",
    "SELECT * FROM prom_query_range('up', TIMESTAMPTZ '2024-03-01', TIMESTAMPTZ '2024-03-02', '1m', url := ?, timeout := '2s')",
], ids=["prom_query", "prom_labels", "prom_query_range"])
def test_live_call_to_a_stuck_server_ends_at_its_timeout(fault_proxy, tmp_path, sql, action, options):
    """A server that accepts and never answers, or sends a body that never completes:
    the call ends at `timeout`, retries included (with the default 3 retries, each
    attempt would otherwise take the whole timeout again)."""
    fault_proxy.add_rule(action, times=None, **options)
    out, r = run_python_duckdb(sql, [fault_proxy.url], tmp_path)
    assert "gave no complete answer within the timeout of 2s for the whole call" in out.get("error", ""), out
    # Not before the timeout (a lower bound only; the hang is 120 s, the trickle endless).
    assert out["elapsed"] >= 1.9, out
    assert out["after"] == 42
    assert len(fault_proxy.snapshot()) == 1, fault_proxy.summary()


def test_live_range_split_requests_share_the_deadline(fault_proxy, history, tmp_path):
    """Three split requests of 1.5 s each do not fit in a 2 s timeout."""
    fault_proxy.add_rule("delay", path="/api/v1/query_range", times=None, delay_seconds=1.5)
    start = datetime(2024, 3, 1, tzinfo=timezone.utc)
    end = datetime.fromtimestamp(start.timestamp() + 3 * 11_000 - 100, tz=timezone.utc)
    out, _ = run_python_duckdb("SELECT * FROM prom_query_range('count(apigee_latency_ms)', ?::TIMESTAMPTZ, "
                               "?::TIMESTAMPTZ, '1s', url := ?, timeout := '2s')",
                               [start.isoformat(), end.isoformat(), fault_proxy.url], tmp_path)
    assert "gave no complete answer within the timeout of 2s for the whole call" in out.get("error", ""), out
    assert out["elapsed"] >= 1.9, out
    # Requests start at 0 and >= 1.5 s: a third cannot start within the 2 s (two on an idle
    # machine, one on a busy one).
    assert len(fault_proxy.snapshot()) in (1, 2), fault_proxy.summary()


def test_live_call_retries_within_the_deadline_still_succeed(con, fault_proxy, history):
    """The deadline does not take retries away: a 503 then an answer, within 5 s."""
    day = history.days_list[1]
    fault_proxy.add_rule("http_503", path="/api/v1/query", times=2)
    rows = con.execute("SELECT labels['environment'], value FROM prom_query(?, url := ?, at := ?, timeout := '5s')",
                       ['sum(increase(apigee_request_count{apiproxy="api-proxy-1"}[1d])) by (environment)',
                        fault_proxy.url, _day_at(day)]).fetchall()
    assert dict(rows) == {e: history.expected[(day, "api-proxy-1", e, "request_count")] for e in history.environments}
    assert [r.action for r in fault_proxy.snapshot()] == ["http_503", "http_503", "forward"]


def test_attempt_timeout_leaves_time_to_retry_a_hung_attempt(con, fault_proxy, history):
    """`attempt_timeout` bounds each attempt inside the call's `timeout`: a first attempt
    that hangs (longer than the call's 5 s) is given up after 1 s and retried, and the call
    still succeeds: without attempt_timeout it would end at the 5 s deadline."""
    day = history.days_list[1]
    rule = fault_proxy.add_rule("hang", path="/api/v1/query", times=1, hang_seconds=600)
    t = time.monotonic()
    rows = con.execute("SELECT labels['environment'], value FROM prom_query(?, url := ?, at := ?, timeout := '5s', "
                       "attempt_timeout := '1s')",
                       ['sum(increase(apigee_request_count{apiproxy="api-proxy-1"}[1d])) by (environment)',
                        fault_proxy.url, _day_at(day)]).fetchall()
    took = time.monotonic() - t
    assert dict(rows) == {e: history.expected[(day, "api-proxy-1", e, "request_count")] for e in history.environments}
    assert rule.fired == 1 and [r.action for r in fault_proxy.snapshot()] == ["hang", "forward"]
    assert took >= 1.0, took  # not before the attempt timeout (a lower bound only)
    msg = duck_error(con, "SELECT * FROM prom_labels(url := 'http://127.0.0.1:9', attempt_timeout := 'soon')")
    assert "attempt_timeout: invalid duration `soon`" in msg, msg


# --- (11) steps of prom_query_range ------------------------------------------------------------------------------

BAD_STEPS = [
    ("'1e30'", 'step: "1e30" is too large (at most 100 years)'),
    ("1e30::DOUBLE", 'step: "1e+30" is too large (at most 100 years)'),
    ("'18446744073709551'", 'step: "18446744073709551" is too large (at most 100 years)'),
    ("INTERVAL '-1 minute'", 'step: "-00:01:00" is negative; the step must be positive'),
    ("INTERVAL '1 day -25 hours'", 'step: "1 day -25:00:00" is negative; the step must be positive'),
    ("'-1m'", 'step: "-1m" is negative; the step must be positive'),
    ("-15", 'step: "-15" is negative; the step must be positive'),
    ("0", 'step: "0" is zero; the step must be positive'),
    ("INTERVAL '0 seconds'", 'step: "00:00:00" is zero; the step must be positive'),
    ("'inf'", 'step: "inf" is not a finite number'),
    ("'NaN'::DOUBLE", 'step: "nan" is not a finite number'),
    ("'0.0005'", 'step: "0.0005" is shorter than 1 millisecond, the smallest step'),
    ("INTERVAL '1 microsecond'", 'step: "00:00:00.000001" is shorter than 1 millisecond, the smallest step'),
    ("'500us'", 'step: "500us" is shorter than 1 millisecond, the smallest step'),
    ("'1.5ms'", 'step: "1.5ms" is not a whole number of milliseconds'),
    ("'0.0015'", 'step: "0.0015" is not a whole number of milliseconds'),
    ("INTERVAL '1500 microseconds'", 'step: "00:00:00.0015" is not a whole number of milliseconds'),
    ("INTERVAL '1 month'", 'step: invalid step "1 month": months and years have no fixed length'),
]


@pytest.mark.parametrize("step,message", BAD_STEPS, ids=[s for s, _ in BAD_STEPS])
def test_invalid_step_is_an_error_naming_step_and_value(con, prometheus, history, step, message):
    # An unreachable URL: a step wrongly accepted shows up as a connection error instead.
    msg = duck_error(con, f"SELECT * FROM prom_query_range('up', TIMESTAMPTZ '2024-03-01', TIMESTAMPTZ '2024-03-02', {step}, "
                          "url := 'http://127.0.0.1:9', timeout := '1s')")
    assert message in msg, msg
    assert "panicked" not in msg
    # The connection still works, for SQL and for a valid range query.
    assert con.execute("SELECT 41 + 1").fetchall() == [(42,)]
    day = history.days_list[0]
    rows = con.execute("SELECT count(*) FROM prom_query_range('count(apigee_latency_ms)', ?, ?, INTERVAL 1 HOUR, "
                       "url := ?)", [_day_at(day), _day_at(day), prometheus.url]).fetchall()
    assert rows == [(1,)]


def test_valid_steps_still_work(con, prometheus, history):
    day = history.days_list[0]
    start = _day_at(day)
    end = datetime.fromtimestamp(start.timestamp() + 3600, tz=timezone.utc)
    for step, n in [("INTERVAL 1 MINUTE", 61), ("'1m'", 61), ("60", 61), ("'1.5'", 2401), ("INTERVAL '1 day'", 1),
                    ("600.000", 7), ("6e2", 7), ("'0.5'", 7201), ("INTERVAL '1500 milliseconds'", 2401)]:
        sql = f"SELECT count(*) FROM prom_query_range('count(apigee_latency_ms)', ?, ?, {step}, url := ?)"
        assert con.execute(sql, [start, end, prometheus.url]).fetchall() == [(n,)], step


def test_invalid_steps_in_the_cli_print_no_panic(tmp_path):
    sql = "\n".join(f"SELECT * FROM prom_query_range('up', TIMESTAMPTZ '2024-03-01', TIMESTAMPTZ '2024-03-02', {step}, "
                    "url := 'http://127.0.0.1:9', timeout := '1s');" for step, _ in BAD_STEPS)
    r = run_cli(sql + "\nSELECT 41 + 1 AS x;", tmp_path)
    assert r.killed is None, r.log()
    for _, message in BAD_STEPS:
        assert message in r.stderr, f"{message!r} missing\n{r.log()}"
    for needle in ("panicked", "backtrace", "RUST_BACKTRACE"):
        assert needle not in r.stderr, r.log()
    assert r.stdout.strip().splitlines()[-1] == "42", r.log()


# --- (13) error pages that echo the request's credentials --------------------------------------------------------

USER = "trust-user"
PASSWORD = "Pw-Zq7/+x:y &\u00fc-pass"
TOKEN = "Tk-Zq8/+tok=en-5512"
API_KEY = "Ak-Zq9-apikey-5513"


def b64_forms(raw: str) -> list[str]:
    b = raw.encode()
    out = []
    for enc in (base64.b64encode(b).decode(), base64.urlsafe_b64encode(b).decode()):
        out += [enc, enc.rstrip("=")]
    return out


def forms(secret: str, user: str | None = None) -> list[str]:
    """Every spelling of ``secret`` that must not appear: itself, a distinctive start,
    percent-encoded, base64 (standard and URL-safe, with and without padding) of it
    and of ``user:secret``, and the header values built from them."""
    out = {secret, secret[: max(6, len(secret) // 2)], urllib.parse.quote(secret, safe=""),
           urllib.parse.quote_plus(secret), *b64_forms(secret), f"Bearer {secret}"}
    if user is not None:
        for f in b64_forms(f"{user}:{secret}"):
            out |= {f, f"Basic {f}", f[: len(f) // 2 + 4]}
    return sorted(out)


ALL_FORMS = forms(PASSWORD, USER) + forms(TOKEN) + forms(API_KEY)


def assert_clean(*texts, where=""):
    for text in texts:
        for f in ALL_FORMS:
            assert f not in text, f"credential form {f!r} leaked {where}:\n{text[:4000]}"


def assert_no_files_with_credentials(root: Path, skip=()):
    skip = {Path(p).resolve() for p in skip}
    for p in root.rglob("*"):
        if p.is_file() and p.resolve() not in skip:
            data = p.read_bytes()
            for f in ALL_FORMS:
                assert f.encode() not in data, f"credential form {f!r} written to {p}"


CREDS = {
    "basic": {"username": USER, "password": PASSWORD},
    "bearer": {"bearerToken": TOKEN},
    "header-authorization": {"headers": {"Authorization": f"Bearer {TOKEN}", "X-Api-Key": API_KEY}},
    "header-basic": {"headers": {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}},
    "url": {},
}
# The Authorization line first (as "bad credentials: <header>" pages do), in a JSON
# error, or 60 characters in, so that a 120-character quote of the body ends inside it.
ECHOES = {"text": {"auth_at": 0}, "json": {"json": True}, "text-cut": {"auth_at": 60}}


def cred_url(base: str, cred: str) -> str:
    if cred != "url":
        return base
    return base.replace("http://", f"http://{urllib.parse.quote(USER, safe='')}:{urllib.parse.quote(PASSWORD, safe='')}@")


@pytest.mark.parametrize("echo", list(ECHOES))
@pytest.mark.parametrize("cred", list(CREDS))
def test_collector_never_prints_echoed_credentials(fault_proxy, history, tmp_path, cred, echo):
    day = history.days_list[0]
    extra = {"batchSize": 1, "retries": 0, **CREDS[cred]}
    cfg = write_config(tmp_path / "c.yaml", cred_url(fault_proxy.url, cred), PROXIES, prometheus_extra=extra)
    rule = fault_proxy.add_rule("echo_headers", times=None, **ECHOES[echo])
    for log_args in ([], ["--log-format", "json"]):
        r = run_measured([COLLECTOR, "--config", cfg, "--date", day, *log_args], cwd=tmp_path,
                         env={"PROMDUCK_LOG": "debug"})
        assert r.code == 1, r.log()
        assert "HTTP 401" in r.stderr, r.log()
        assert_clean(r.stdout, r.stderr, where=f"in the collector's output ({cred}, {echo}, {log_args})")
    # The proxy really echoed the credentials back.
    sent = fault_proxy.snapshot()[0].headers
    assert "authorization" in sent or "x-api-key" in sent
    # Every request was answered by the echo (how many the collector sends before it
    # gives up a failed partition is its own business).
    assert [r.action for r in fault_proxy.snapshot()] == ["echo_headers"] * rule.fired
    assert_no_files_with_credentials(tmp_path, skip=[cfg])
    assert not (tmp_path / "data").exists() or partition_files(tmp_path / "data") == set()


@pytest.mark.parametrize("echo", list(ECHOES))
def test_live_functions_never_show_echoed_credentials(con, fault_proxy, history, tmp_path, echo):
    fault_proxy.add_rule("echo_headers", times=None, **ECHOES[echo])
    url = fault_proxy.url
    user_url = cred_url(url, "url")
    cfg = write_config(tmp_path / "c.yaml", url, PROXIES, prometheus_extra={"retries": 0, **CREDS["header-authorization"]})
    cfg_basic = write_config(tmp_path / "b.yaml", url, PROXIES,
                             prometheus_extra={"retries": 0, **CREDS["header-basic"]})
    cases = [
        ("SELECT * FROM prom_query('up', url := ?, username := ?, password := ?)", [url, USER, PASSWORD]),
        ("SELECT * FROM prom_query('up', url := ?)", [user_url]),
        ("SELECT * FROM prom_labels(url := ?, bearer_token := ?)", [url, TOKEN]),
        ("SELECT * FROM prom_label_values('job', url := ?)", [user_url]),
        ("SELECT * FROM prom_series('up', url := ?, bearer_token := ?)", [url, TOKEN]),
        ("SELECT * FROM prom_query_range('up', TIMESTAMPTZ '2024-03-01', TIMESTAMPTZ '2024-03-02', '1h', url := ?)", [user_url]),
        ("SELECT * FROM prom_query('up', config := ?)", [str(cfg)]),
        ("SELECT * FROM prom_query('up', config := ?)", [str(cfg_basic)]),
    ]
    for sql, params in cases:
        msg = duck_error(con, sql, params)
        assert "HTTP 401" in msg, f"{sql}\n{msg}"
        assert_clean(msg, where=f"in the error of {sql} ({echo})")
        assert con.execute("SELECT 41 + 1").fetchall() == [(42,)]
    rows = con.execute("SELECT status, error FROM prom_collect(config := ?, date := ?)",
                       [str(cfg), str(history.days_list[0])]).fetchall()
    assert sorted(r[0] for r in rows) == ["failed", "failed"], rows
    assert all("HTTP 401" in r[1] for r in rows), rows
    assert_clean(repr(rows), where=f"in prom_collect's error column ({echo})")
    assert_no_files_with_credentials(tmp_path, skip=[cfg, cfg_basic])


def test_live_function_in_the_cli_never_shows_echoed_credentials(fault_proxy, tmp_path):
    fault_proxy.add_rule("echo_headers", times=None, auth_at=60)
    user_url = cred_url(fault_proxy.url, "url")
    r = run_cli(f"SELECT * FROM prom_query('up', url := '{user_url}');\n"
                f"SELECT * FROM prom_labels(url := '{fault_proxy.url}', bearer_token := '{TOKEN}');\nSELECT 42;",
                tmp_path)
    assert r.stderr.count("HTTP 401") == 2, r.log()
    # The statements themselves hold the secrets; DuckDB does not echo them for runtime errors.
    assert_clean(r.stdout, r.stderr, where="in the DuckDB CLI's output")
    assert r.stdout.strip().splitlines()[-1] == "42", r.log()
