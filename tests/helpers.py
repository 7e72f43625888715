"""Helpers for end-to-end tests of the built binaries (build/ from `make build`)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb

REPO_ROOT = Path(__file__).resolve().parent.parent
# PROMDUCK_BUILD points the tests at another build (e.g. a copy of main's, to see a new test fail there).
BUILD = Path(os.environ.get("PROMDUCK_BUILD") or REPO_ROOT / "build")
COLLECTOR = BUILD / "promduck-collector"
EXTENSION = BUILD / "promduck.duckdb_extension"
DUCKDB_CLI = REPO_ROOT / ".venv" / "bin" / "duckdb"

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

