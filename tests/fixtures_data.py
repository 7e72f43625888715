"""Collected test data and independently computed answers, shared by the tests of
sql/, examples/duckdb/query_metrics.py and examples/streamlit/dashboard.py.

pytest only auto-loads conftest.py, so test modules import from here and wrap
``collected_data()`` in their own fixtures. The collection itself runs once per
pytest process (cached here), whatever module asks first.

Every expected number comes from ``promfixture.History`` (the values the
generator wrote into Prometheus), never from the collector's or the
extension's output.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from helpers import DEFAULT_METRICS, LATENCY_Q, run_collector, write_config

COUNTERS = ("request_count", "error_count")
LATENCY = "latency_ms"
METRICS = [*DEFAULT_METRICS,
           {"name": LATENCY, "query": LATENCY_Q, "labels": ["apiproxy", "environment"], "step": "1h"}]

_collected: dict = {}


def collected_data(prometheus, history, tmp_path_factory) -> Path:
    """``<tmp>/data``: every day of ``history`` for every proxy, with
    request_count, error_count (daily) and latency_ms (hourly), written by the
    real collector from the real Prometheus. Read-only for the tests."""
    key = (prometheus.url, id(history))
    if key not in _collected:
        work = tmp_path_factory.mktemp("collected")
        cfg = write_config(work / "config.yaml", prometheus.url, history.proxies, metrics=METRICS)
        days = history.days_list
        r = run_collector("--config", cfg, "--from", days[0], "--to", days[-1], cwd=work)
        assert r.returncode == 0, f"collector failed:\n{r.stderr}"
        _collected[key] = work / "data"
    return _collected[key]


def copy_without(data_dir: Path, dest: Path, remove=()) -> Path:
    """A copy of ``data_dir`` in ``dest`` without the partitions ``remove``
    (``[(day, proxy), ...]``; proxy names are as stored, e.g. 'api-proxy-2')."""
    shutil.copytree(data_dir, dest)
    for day, proxy in remove:
        (dest / day.isoformat() / f"{proxy}.parquet").unlink()
    return dest


# ---------------------------------------------------------------------------
# expected values, from the generator


def day_start(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())


def daily_total(history, day, proxy, metric, envs=None) -> float:
    """Sum over environments of a counter's daily increase."""
    return sum(history.expected[(day, proxy, env, metric)] for env in envs or history.environments)


def latency_points(history, day, proxy, env) -> list[tuple[int, float]]:
    """The collector's hourly latency points of ``day``: (ts_seconds, value) at
    01:00 .. 24:00 UTC (the day is (00:00, 24:00]), each the generator's sample at
    that instant."""
    samples = dict(history.gauge_samples[(proxy, env)])
    start = day_start(day)
    return [(start + h * 3600, samples[start + h * 3600]) for h in range(1, 25)]


def expected_rows(history, days=None, proxies=None, metrics=(*COUNTERS, LATENCY)):
    """Every row the selection must return as
    ``(ts_seconds, day, proxy, metric, env, value)``, sorted."""
    rows = []
    for day in days or history.days_list:
        for proxy in proxies or history.proxies:
            for env in history.environments:
                for metric in metrics:
                    if metric == LATENCY:
                        rows += [(ts, day, proxy, metric, env, v)
                                 for ts, v in latency_points(history, day, proxy, env)]
                    else:
                        rows.append((day_start(day + timedelta(days=1)), day, proxy, metric, env,
                                     history.expected[(day, proxy, env, metric)]))
    return sorted(rows)


def daily_stats(history, day, proxy, metric):
    """(total, rows, min, max) of one (day, proxy, metric) over all its rows."""
    if metric == LATENCY:
        vals = [v for env in history.environments for _, v in latency_points(history, day, proxy, env)]
    else:
        vals = [history.expected[(day, proxy, env, metric)] for env in history.environments]
    return sum(vals), len(vals), min(vals), max(vals)


# ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with(**kv) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in kv.items()})
    return env


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run([str(c) for c in cmd], **kw)
