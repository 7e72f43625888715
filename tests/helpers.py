"""Helpers for end-to-end tests of the built binaries (build/ from `make build`)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

REPO_ROOT = Path(__file__).resolve().parent.parent
# PROMDUCK_BUILD points the tests at another build (e.g. a copy of main's, to see a new test fail there).
BUILD = Path(os.environ.get("PROMDUCK_BUILD") or REPO_ROOT / "build")
COLLECTOR = BUILD / "promduck-collector"
EXTENSION = BUILD / "promduck.duckdb_extension"
DUCKDB_CLI = REPO_ROOT / ".venv" / "bin" / "duckdb"


def _faked(binary: Path, offset: int) -> Path:
    """``binary`` behind a script that runs it under libfaketime, its clock ``offset`` seconds
    ahead of the real one: one advancing clock for every run of the suite. Only the product's
    binaries: Python 3.11 under libfaketime hangs in every timed wait (a shifted monotonic clock) or fails every time.sleep with
    EINVAL (FAKETIME_DONT_FAKE_MONOTONIC), and Prometheus (Go) ignores it. The test process
    keeps the real clock, so a test that reads "today" itself instead of from PROMDUCK_NOW
    disagrees with the product and fails."""
    lib = os.environ.get("PROMDUCK_TEST_LIBFAKETIME", "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
    assert Path(lib).exists(), f"{lib}: apt-get install faketime"
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"promduck-faketime-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    script = folder / binary.name
    script.write_text(f'#!/bin/sh\nLD_PRELOAD="{lib}" FAKETIME="{offset:+d}" FAKETIME_DONT_FAKE_MONOTONIC=1 '
                      f'exec "{binary}" "$@"\n')
    script.chmod(0o755)
    return script


# PROMDUCK_TEST_FAKETIME="2026-12-08 23:59:00" (UTC): the collector and the DuckDB CLI run with
# their clock started there (RELIABILITY.md, "Commands": the run started a minute before midnight).
#: Seconds the product's clock is ahead of this process's (0 unless PROMDUCK_TEST_FAKETIME):
#: what a test writes for the product to compare with its clock (a lock's expiry) uses it.
PRODUCT_CLOCK_OFFSET = 0
if os.environ.get("PROMDUCK_TEST_FAKETIME"):
    PRODUCT_CLOCK_OFFSET = int(datetime.strptime(os.environ["PROMDUCK_TEST_FAKETIME"], "%Y-%m-%d %H:%M:%S")
                               .replace(tzinfo=timezone.utc).timestamp() - time.time())
    COLLECTOR = _faked(COLLECTOR, PRODUCT_CLOCK_OFFSET)
    DUCKDB_CLI = _faked(DUCKDB_CLI, PRODUCT_CLOCK_OFFSET)


def product_time() -> float:
    """The product's clock (Unix seconds): this process's, plus PRODUCT_CLOCK_OFFSET."""
    return time.time() + PRODUCT_CLOCK_OFFSET


# A hung test is stopped after this long; no test asserts how long anything took (a loaded
# machine makes everything slower): waits are for events, with this as the only deadline.
HANG_GUARD_S = 120.0


def wait_until(check, what: str, timeout: float = HANG_GUARD_S, interval: float = 0.05, proc=None):
    """Polls ``check()`` until it returns something truthy and returns that. Fails when
    ``proc`` (a Popen) exits first, or after ``timeout`` seconds: a deadline that only
    stops a hung test, never a timing claim. ``what`` names the event in the failure."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            got = check()
            if got:
                return got
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s (hung?)")
        time.sleep(interval)


def tool(name: str, package: str) -> str:
    """The path of the program ``name``; fails (never skips) when it is missing: `make test`
    installs Debian's ``package`` (the Makefile's `tools` target)."""
    import shutil

    import pytest
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's package (apt-get install -y {package}; `make test` does)")
    return path


class Daemon:
    """The collector as a daemon (``args`` after ``--config``), its stderr in a file;
    ``env`` is added to the environment (e.g. now_env(...))."""

    def __init__(self, cfg: Path, cwd: Path, *args, env=None):
        self.err = Path(cwd) / "daemon.err"
        self._f = open(self.err, "w")
        self.proc = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), *map(str, args)], cwd=cwd,
                                     env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                     stderr=self._f, stdin=subprocess.DEVNULL)

    def log(self) -> str:
        return self.err.read_text()

    def wait_for(self, what: str, count=1, timeout=HANG_GUARD_S):
        """Until the log holds ``what`` ``count`` times (fails if the daemon exits first)."""
        try:
            wait_until(lambda: self.log().count(what) >= count, f"{what!r} x{count} in the log", timeout=timeout,
                       proc=self.proc)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log()[-3000:]}") from None

    def stop(self, sig=None) -> int:
        """Sends ``sig`` (SIGTERM), waits for the exit (a minute at most) and returns the code."""
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._f.close()
        return code


# "Now" under the test's control: the collector and the extension take the time from
# PROMDUCK_NOW (RFC 3339; core/src/clock.rs) when it is set, so a test that depends on the
# day sets it and derives "yesterday" from the same value instead of reading the clock
# twice (once in the test, once in the product: a race at midnight, or a zone apart).
def utc(*args) -> datetime:
    """datetime(*args) in UTC: ``utc(2024, 3, 3, 12)``."""
    return datetime(*args, tzinfo=timezone.utc)


def now_env(now: datetime) -> dict:
    """The environment that fixes the product's "now" to ``now`` (an aware datetime)."""
    assert now.tzinfo is not None, "an aware datetime"
    return {"PROMDUCK_NOW": now.isoformat()}


def frozen_now() -> datetime:
    """The real time, read once (to whole seconds), for tests that need a recent day (a
    server with recent data): pass it to the product with now_env() and derive the days
    from it with yesterday()."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def today(now: datetime, tz: str = "UTC") -> date:
    """The day of ``now`` in the zone ``tz`` (the config's ``timezone``; UTC by default)."""
    return now.astimezone(ZoneInfo(tz)).date()


def yesterday(now: datetime, tz: str = "UTC") -> date:
    """The last complete day at ``now`` in the zone ``tz``: what the collector collects."""
    return today(now, tz) - timedelta(days=1)


REQUEST_Q = 'sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'
ERROR_Q = 'sum(increase(apigee_error_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'
LATENCY_Q = 'max(apigee_latency_ms{apiproxy="%s"}) by (apiproxy, environment)'

DEFAULT_METRICS = [
    {"name": "request_count", "query": REQUEST_Q, "labels": ["apiproxy", "environment"]},
    {"name": "error_count", "query": ERROR_Q, "labels": ["apiproxy", "environment"]},
]


def write_config(path: Path, url: str, proxies, metrics=None, output_dir=None, prometheus_extra=None,
                 storage_extra=None, top_extra=None) -> Path:
    """Writes a collector config as YAML (JSON is valid YAML and escapes every name safely)."""
    prom = {"url": url, "timeout": "10s", "retries": 1, "metrics": metrics or DEFAULT_METRICS}
    prom.update(prometheus_extra or {})
    storage = {"outputDir": str(output_dir or path.parent / "data"), "compression": "zstd"}
    storage.update(storage_extra or {})
    cfg = {"apiProxies": list(proxies), "prometheus": prom, "storage": storage}
    cfg.update(top_extra or {})
    path.write_text(json.dumps(cfg, indent=2))
    return path


def run_collector(*args, cwd=None, env=None, timeout=120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([str(COLLECTOR), *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def read_rows(data_dir: Path, glob="*/*.parquet"):
    """All rows of the partitions as tuples, read by the duckdb Python package."""
    con = duckdb.connect()
    return con.execute(
        "SELECT timestamp, metric_name, value, api_proxy, date, labels FROM read_parquet(?) "
        "ORDER BY date, api_proxy, metric_name, timestamp, labels::VARCHAR",
        [str(data_dir / glob)],
    ).fetchall()


def day_end_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000) + 86_400_000


def run_cli_sql(sql: str, cwd: Path, load_extension=False) -> subprocess.CompletedProcess:
    """Runs SQL in the real DuckDB CLI (PyPI duckdb-cli), CSV output."""
    prefix = f"LOAD '{EXTENSION}';\n" if load_extension else ""
    return subprocess.run([str(DUCKDB_CLI), "-unsigned", "-csv", "-c", prefix + sql], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def partition_files(data_dir: Path) -> set[str]:
    return {str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file()}


def days(start: date, n: int):
    return [start + timedelta(days=i) for i in range(n)]


def expected_rows(history, days=None, proxies=None, metrics=("error_count", "request_count")):
    """The rows a collection of the counter metrics must write (from the generator's exact
    values), in read_rows() order after normalise()."""
    rows = []
    for day in days or history.days_list:
        for proxy in proxies or history.proxies:
            for metric in metrics:
                for env in history.environments:
                    rows.append((day_end_ms(day), metric, history.expected[(day, proxy, env, metric)], proxy, day,
                                 {"apiproxy": proxy, "environment": env}))
    rows.sort(key=lambda r: (r[4], r[3], r[1], r[0], str(r[5])))
    return rows


def normalise(rows):
    """read_rows() output with labels as plain dicts, comparable with expected_rows()."""
    return [(r[0], r[1], r[2], r[3], r[4], dict(r[5])) for r in rows]


def serve_http(handler_class):
    """A threading HTTP server on 127.0.0.1 (a free port) running ``handler_class`` in the
    background; returns the server (``server.url`` its address; ``shutdown()`` and
    ``server_close()`` stop it). Its backlog takes the collector's concurrent connections:
    the standard library's 5 drops SYNs, which costs a second of TCP retransmission each."""
    import threading
    from http.server import ThreadingHTTPServer

    server_class = type("LoopbackServer", (ThreadingHTTPServer,), {"request_queue_size": 128,
                                                                   "daemon_threads": True})
    server = server_class(("127.0.0.1", 0), handler_class)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

