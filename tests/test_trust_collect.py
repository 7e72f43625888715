"""Trust defects of collection (issue 16): rows lost on re-collection, shifted step
windows, colliding series, shared temporary names, unwritable long names, dates
read with the wrong year, empty partitions reported as written, and a
`prom_collect` that cannot be interrupted.

Each test failed on the build before the fix (run with PROMDUCK_BUILD pointing at
such a build to see it). Expected values come from the history generator.
"""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from helpers import (COLLECTOR, DEFAULT_METRICS, ERROR_Q, EXTENSION, REQUEST_Q, expected_rows, normalise,
                     partition_files, read_rows, run_collector, wait_until, write_config)


def connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    return con


# --- 1. a metric that comes back empty keeps its old rows ---------------------------------------------------

GONE_Q = 'sum(increase(apigee_gone_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'


def test_metric_answering_no_data_keeps_its_old_rows(prometheus, history, tmp_path):
    day = history.days_list[1]
    proxies = ["api-proxy-1", "api-proxy-2"]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, proxies)
    assert run_collector("--config", cfg, "--date", day, cwd=tmp_path).returncode == 0
    before = normalise(read_rows(tmp_path / "data"))
    assert before == expected_rows(history, [day], proxies)

    # Prometheus's retention has since dropped error_count: its query answers nothing.
    forgotten = [DEFAULT_METRICS[0], {"name": "error_count", "query": GONE_Q, "labels": ["apiproxy", "environment"]}]
    write_config(tmp_path / "c.yaml", prometheus.url, proxies, metrics=forgotten)
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert normalise(read_rows(tmp_path / "data")) == before
    n_env = len(history.environments)
    note = (f"kept archived rows the new answer lacks: error_count ({n_env} archived rows; "
            "no rows of it in the new answer) (replace to drop them)")
    assert r.stderr.count(note) == len(proxies)

    # The same through prom_collect: the note says what was kept.
    con = connect()
    rows = con.execute("SELECT api_proxy, status, rows, error FROM prom_collect(config := ?, date := ?) ORDER BY 1",
                       [str(cfg), str(day)]).fetchall()
    assert rows == [(p, "kept", 2 * n_env, note) for p in proxies]
    assert normalise(read_rows(tmp_path / "data")) == before

    # Asked explicitly, the partition becomes exactly what Prometheus answers now.
    r = run_collector("--config", cfg, "--date", day, "--replace", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], proxies, metrics=("request_count",))


def test_all_metrics_answering_no_data_keep_the_file_byte_for_byte(prometheus, history, tmp_path):
    day = history.days_list[0]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-3"])
    assert run_collector("--config", cfg, "--date", day, cwd=tmp_path).returncode == 0
    files = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.parquet")}
    gone = [{"name": m["name"], "query": GONE_Q, "labels": m["labels"]} for m in DEFAULT_METRICS]
    write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-3"], metrics=gone)
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "kept archived rows the new answer lacks: error_count" in r.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.parquet")} == files


# --- 4. range metrics cover the same calendar day as instant metrics --------------------------------------

HOURLY_Q = 'sum(increase(apigee_request_count{apiproxy="%s"}[1h])) by (apiproxy, environment)'


def test_step_and_instant_modes_give_the_same_daily_total(prometheus, history, tmp_path):
    days = history.days_list[1:]
    metrics = [
        {"name": "daily", "query": REQUEST_Q, "labels": ["apiproxy", "environment"]},
        {"name": "hourly", "query": HOURLY_Q, "labels": ["apiproxy", "environment"], "step": "1h"},
    ]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, history.proxies, metrics=metrics)
    r = run_collector("--config", cfg, "--from", days[0], "--to", days[-1], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    con = duckdb.connect()
    got = con.execute(
        "SELECT date, api_proxy, labels['environment'], metric_name, sum(value), count(*), "
        "min(timestamp), max(timestamp) FROM read_parquet(?) GROUP BY ALL",
        [str(tmp_path / "data" / "*" / "*.parquet")]).fetchall()
    by_key = {(d, p, e, m): (total, n, lo, hi) for d, p, e, m, total, n, lo, hi in got}
    for d in days:
        midnight = int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()) * 1000
        for p in history.proxies:
            for e in history.environments:
                want = history.expected[(d, p, e, "request_count")]
                assert by_key[(d, p, e, "daily")][0] == want
                # 24 hourly points, 01:00 .. 24:00, summing to the exact daily increase.
                assert by_key[(d, p, e, "hourly")] == (want, 24, midnight + 3_600_000, midnight + 86_400_000), (d, p, e)


# --- 5. series that collide once labels are dropped ----------------------------------------------------------

def test_dropped_labels_that_make_series_collide_fail_the_metric(prometheus, history, tmp_path):
    day = history.days_list[0]
    metrics = [DEFAULT_METRICS[0], {"name": "error_count", "query": ERROR_Q, "labels": ["apiproxy"]}]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"], metrics=metrics)
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 1
    assert "error_count" in r.stderr and "become the same once only the labels [apiproxy] are kept" in r.stderr
    assert "dropped label(s) environment" in r.stderr
    assert not (tmp_path / "data").exists() or partition_files(tmp_path / "data") == set()

    r = run_collector("--config", cfg, "--check", "--date", day, cwd=tmp_path)
    assert r.returncode == 1
    assert "metric request_count: ok" in r.stdout
    assert "metric error_count: FAILED" in r.stdout and "dropped label(s) environment" in r.stdout


# --- 6. temporary names unique across PID namespaces ---------------------------------------------------------

def _unshare_refusal() -> str | None:
    """Why `unshare -pf --mount-proc` cannot run here (None: it can)."""
    try:
        r = subprocess.run(["unshare", "-pf", "--mount-proc", "true"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if r.returncode == 0 else f"exit {r.returncode}: {r.stderr.strip()}"


def test_collectors_with_the_same_pid_never_share_a_temporary_file(prometheus, history, tmp_path):
    """Two collectors, each PID 1 in its own PID namespace, rewrite the same partitions
    at once; with PID-based temporary names they wrote the same temporary file. Needs PID
    namespaces (root here): without them the skip is reported at the end of the run, as
    allowed in tests/conftest.py, never silently."""
    refusal = _unshare_refusal()
    if refusal is not None:
        pytest.skip(f"NOT CHECKED: unshare -pf --mount-proc is refused ({refusal}); run as root")
    proxies = [f"p{i}" for i in range(30)]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, proxies,
                       storage_extra={"outputDir": str(tmp_path / "data")})
    day = history.days_list[0]
    script = f"for i in 1 2 3 4 5 6; do '{COLLECTOR}' --config '{cfg}' --date {day} || exit $?; done"
    procs = [subprocess.Popen(["unshare", "-pf", "--mount-proc", "sh", "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert "No such file" not in err
    con = duckdb.connect()
    n = con.execute("SELECT count(*) FROM read_parquet(?)", [str(tmp_path / "data" / "*" / "*.parquet")]).fetchone()[0]
    assert n == 0  # p0..p29 have no series: every partition is a valid, empty file
    assert partition_files(tmp_path / "data") == {f"{day}/p{i}.parquet" for i in range(30)}


# --- 10. proxy names too long to write are refused at load --------------------------------------------------

def test_proxy_name_whose_temporary_name_cannot_exist_is_a_config_error(prometheus, history, tmp_path):
    day = history.days_list[0]
    longest = "a" * (255 - 27 - len(".parquet"))  # the temporary name adds 27 bytes
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, [longest])
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert partition_files(tmp_path / "data") == {f"{day}/{longest}.parquet"}
    for n in (len(longest) + 1, 230, 246):
        write_config(tmp_path / "c.yaml", prometheus.url, ["a" * n])
        r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
        assert r.returncode == 2, (n, r.stderr)
        assert "too long" in r.stderr and "apiProxies" in r.stderr, r.stderr


# --- 12. dates with four-digit years; empty partitions said to be empty --------------------------------------

@pytest.mark.parametrize("bad", ["24-01-01", "0024-1-1", "2024-1-01", "20240101"])
def test_dates_need_a_four_digit_year(prometheus, tmp_path, bad):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    r = run_collector("--config", cfg, "--date", bad, cwd=tmp_path)
    assert r.returncode == 2
    assert f'invalid date "{bad}"' in r.stderr and "four-digit year" in r.stderr
    assert not (tmp_path / "data").exists()


def test_prom_collect_date_needs_a_four_digit_year(prometheus, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    con = connect()
    with pytest.raises(duckdb.Error, match="invalid date"):
        con.execute("SELECT * FROM prom_collect(config := ?, date := '24-01-01')", [str(cfg)]).fetchall()
    assert not (tmp_path / "data").exists()


def test_partitions_without_data_are_reported_as_empty(prometheus, history, tmp_path):
    day = history.days_list[0]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1", "ghost"])
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "written=1" in r.stderr and "empty=1" in r.stderr
    assert "proxy=ghost" in r.stderr and "wrote an empty partition" in r.stderr
    con = connect()
    rows = con.execute("SELECT api_proxy, status, rows, error FROM prom_collect(config := ?, date := ?) ORDER BY 1",
                       [str(cfg), str(day)]).fetchall()
    assert rows == [("api-proxy-1", "written", 2 * len(history.environments), None),
                    ("ghost", "empty", 0, "no data returned for any metric; an empty partition was written")]


# --- 9. prom_collect stops when the query is interrupted -----------------------------------------------------

class _SlowProxy(http.server.ThreadingHTTPServer):
    """Forwards to Prometheus after `delay` seconds per request."""

    def __init__(self, upstream: str, delay: float):
        self.upstream, self.delay = upstream.rstrip("/"), delay
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _SlowHandler)


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests += 1
        time.sleep(self.server.delay)
        req = urllib.request.Request(self.server.upstream + self.path, data=body,
                                     headers={"Content-Type": self.headers.get("Content-Type", "")})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                data, status = resp.read(), resp.status
        except urllib.error.HTTPError as e:
            data, status = e.read(), e.code
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_prom_collect_stops_soon_after_an_interrupt(prometheus, history, tmp_path):
    slow = _SlowProxy(prometheus.url, delay=0.5)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    try:
        cfg = write_config(tmp_path / "c.yaml", f"http://127.0.0.1:{slow.server_address[1]}", ["api-proxy-1"],
                           prometheus_extra={"concurrency": 1, "batchSize": 1})
        first, last = history.days_list[0] - timedelta(days=60), history.days_list[-1]
        # 64 days × 2 metrics × 0.5 s = 64 s uninterrupted.
        con = connect()
        at_interrupt = []

        def interrupt():  # once the run is under way: 3 requests asked
            wait_until(lambda: slow.requests >= 3, "3 requests")
            at_interrupt.append(slow.requests)
            con.interrupt()

        interrupter = threading.Thread(target=interrupt, daemon=True)
        interrupter.start()
        with pytest.raises(duckdb.InterruptException):
            con.execute("SELECT status FROM prom_collect(config := ?, start_date := ?, end_date := ?)",
                        [str(cfg), str(first), str(last)]).fetchall()
        interrupter.join(timeout=60)
        # Uninterrupted: 128 requests (64 days x 2 metrics). Interrupted: once the statement has
        # returned, at most the last query of the partition in progress follows (no timing
        # claim: how many start between the interrupt and its effect depends on the machine).
        asked = slow.requests
        time.sleep(1.5)
        assert slow.requests <= asked + 1, ("the run went on querying after the interrupt", at_interrupt, asked,
                                            slow.requests)
        assert slow.requests < 128, (at_interrupt, asked, slow.requests)
        assert not [p for p in (tmp_path / "data").rglob("*") if ".promduck-tmp" in p.name]
    finally:
        slow.shutdown()
