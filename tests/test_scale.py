"""Collection at scale (issue 12): sharding, failing fast when Prometheus cannot be
used, and the collector's own metrics (file and HTTP, scraped by a real Prometheus).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from faultproxy import FaultProxy
from helpers import (COLLECTOR, expected_rows, normalise, now_env, partition_files, read_rows, run_collector, utc,
                     wait_until, write_config)
from promfixture import PrometheusServer, free_port

GHOSTS = [f"ghost-{i}" for i in range(12)]


# --- 2. sharding ----------------------------------------------------------------------------------------------

def test_shards_cover_every_proxy_once_and_equal_an_unsharded_run(prometheus, history, tmp_path):
    proxies = history.proxies + GHOSTS
    first, last = history.days_list[0], history.days_list[1]
    whole = write_config(tmp_path / "whole.yaml", prometheus.url, proxies, output_dir=tmp_path / "whole")
    r = run_collector("--config", whole, "--from", first, "--to", last, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sharded = write_config(tmp_path / "sharded.yaml", prometheus.url, proxies, output_dir=tmp_path / "sharded")
    owned = []
    for i in range(3):
        # The flag for two shards, the environment variable for the third.
        args, env = (["--shard", f"{i}/3"], None) if i < 2 else ([], {"PROMDUCK_SHARD": f"{i}/3"})
        r = run_collector("--config", sharded, "--from", first, "--to", last, *args, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        m = re.search(r"collecting one shard of the proxies shard=\S+ proxies=(\d+) of=(\d+)", r.stderr)
        assert m and int(m.group(2)) == len(proxies), r.stderr
        owned.append(int(m.group(1)))
    assert sum(owned) == len(proxies) and all(n > 0 for n in owned), owned
    assert partition_files(tmp_path / "sharded") == partition_files(tmp_path / "whole")
    assert read_rows(tmp_path / "sharded") == read_rows(tmp_path / "whole")
    assert normalise(read_rows(tmp_path / "sharded")) == expected_rows(history, [first, last])


@pytest.mark.parametrize("bad", ["3/3", "1", "x/2"])
def test_bad_shard_is_a_usage_error(prometheus, tmp_path, bad):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    r = run_collector("--config", cfg, "--once", "--shard", bad, cwd=tmp_path)
    assert r.returncode == 2 and "invalid shard" in r.stderr, r.stderr


# --- 3. fail fast -------------------------------------------------------------------------------------------

def _error_lines(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if " ERROR " in l]


def test_unreachable_prometheus_stops_the_run_with_one_clear_error(history, tmp_path):
    port = free_port()  # nothing listens there
    proxies = [f"p{i}" for i in range(40)]
    cfg = write_config(tmp_path / "c.yaml", f"http://127.0.0.1:{port}", proxies,
                       prometheus_extra={"retries": 2, "batchSize": 1, "concurrency": 2})
    day = history.days_list[0]
    # An existing partition must stay byte for byte.
    old = tmp_path / "data" / str(day) / "p0.parquet"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old bytes")
    r = run_collector("--config", cfg, "--from", day, "--to", history.days_list[-1], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    errors = _error_lines(r.stderr)
    # One failure line per distinct error (the in-flight requests fail the same way),
    # at most one summary of repeats, and the stop line naming the URL and the cause.
    assert len(errors) <= 3, "\n".join(errors)
    stop = [l for l in errors if "stopped: Prometheus cannot be used" in l]
    assert len(stop) == 1 and f"127.0.0.1:{port}" in stop[0] and "not attempted" in stop[0], errors
    assert "tcp connect error: Connection refused (os error 111)" in stop[0], stop[0]
    # Failing fast: only the partitions in flight (concurrency 2) are tried (with their
    # retries), the other 158 or more are not attempted; no timing claim.
    m = re.search(r"(\d+) partition\(s\) failed with it and (\d+) not attempted", stop[0])
    assert m, stop[0]
    failed, skipped = int(m[1]), int(m[2])
    assert failed + skipped == 160 and 1 <= failed <= 2, stop[0]
    assert f"written=0 empty=0 kept=0 failed={failed} cancelled={skipped} rows=0 " in r.stderr, r.stderr
    assert old.read_bytes() == b"old bytes"
    assert partition_files(tmp_path / "data") == {f"{day}/p0.parquet"}


def test_refused_credentials_stop_the_run(prometheus_auth, history, tmp_path):
    proxies = history.proxies
    cfg = write_config(tmp_path / "c.yaml", prometheus_auth.url, proxies,
                       prometheus_extra={"username": "promduck", "password": "wrong", "batchSize": 1})
    r = run_collector("--config", cfg, "--from", history.days_list[0], "--to", history.days_list[-1], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    stop = [l for l in _error_lines(r.stderr) if "stopped: Prometheus cannot be used" in l]
    assert len(stop) == 1 and "HTTP 401" in stop[0], r.stderr
    assert len(_error_lines(r.stderr)) <= 3, r.stderr
    assert not (tmp_path / "data").exists() or partition_files(tmp_path / "data") == set()


def test_a_query_error_fails_only_its_partitions_and_is_summarised(prometheus, history, tmp_path):
    metrics = [{"name": "request_count",
                "query": 'sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)',
                "labels": ["apiproxy", "environment"]},
               {"name": "broken", "query": 'sum(rate(x{apiproxy="%s"}[5m]) by (le)'}]
    proxies = history.proxies
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, proxies, metrics=metrics,
                       prometheus_extra={"batchSize": 1})
    day = history.days_list[0]
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "stopped" not in r.stderr
    errors = _error_lines(r.stderr)
    assert len(errors) == 2, "\n".join(errors)  # the first occurrence, then one summary
    assert f"the same failure for {len(proxies) - 1} more partition(s)" in errors[1], errors[1]


# --- 4. the collector's own metrics ---------------------------------------------------------------------------

def parse_metrics(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_file_after_a_run_counts_what_happened(prometheus, history, tmp_path):
    proxies = history.proxies + ["ghost"]
    with FaultProxy(prometheus.url) as fp:
        fp.add_rule("http_503", query_contains="apigee_error_count", times=1)
        cfg = write_config(tmp_path / "c.yaml", fp.url, proxies, prometheus_extra={"retries": 2})
        out = tmp_path / "textfile" / "promduck.prom"
        out.parent.mkdir()
        now = utc(2024, 3, 5, 6)  # PROMDUCK_NOW: the success time is known exactly
        r = run_collector("--config", cfg, "--date", history.days_list[0], "--metrics-file", out, cwd=tmp_path,
                          env=now_env(now))
        assert r.returncode == 0, r.stderr
        sent = len(fp.snapshot())
    m = parse_metrics(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["promduck.prom"], "no temporary file left"
    assert m['promduck_last_run_partitions{status="written"}'] == len(history.proxies)
    assert m['promduck_last_run_partitions{status="empty"}'] == 1
    assert m['promduck_last_run_partitions{status="failed"}'] == 0
    assert m["promduck_last_run_rows"] == len(expected_rows(history, [history.days_list[0]]))
    assert m["promduck_requests_total"] == sent
    assert m["promduck_retries_total"] == 1
    assert m["promduck_last_success_timestamp_seconds"] == now.timestamp()
    assert m["promduck_last_run_aborted"] == 0

    # A failing run keeps the last success time and says it failed.
    last_ok = m["promduck_last_success_timestamp_seconds"]
    cfg = write_config(tmp_path / "c.yaml", f"http://127.0.0.1:{free_port()}", proxies, prometheus_extra={"retries": 0})
    r = run_collector("--config", cfg, "--date", history.days_list[0], "--metrics-file", out, cwd=tmp_path)
    assert r.returncode == 1
    m = parse_metrics(out.read_text())
    assert m["promduck_last_success_timestamp_seconds"] == last_ok
    assert m["promduck_last_run_aborted"] == 1


def test_daemon_metrics_are_scraped_by_prometheus(prometheus_bin, prometheus, history, tmp_path):
    port = free_port()
    om = tmp_path / "empty.om"
    om.write_text("# TYPE unused gauge\nunused 1 1700000000\n# EOF\n")
    scraper = PrometheusServer(om, tmp_path / "scraper", bin_dir=prometheus_bin, scrape_targets=[f"127.0.0.1:{port}"])
    scraper.start()
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1", "api-proxy-2", "ghost"])
    # Yesterday is the history's last day: two partitions written, the ghost's empty.
    proc = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--catch-up-days", "0",
                             "--metrics-listen", f"127.0.0.1:{port}"], cwd=tmp_path,
                            env={**os.environ, **now_env(utc(2024, 3, 5, 6))},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def scraped():
            q = urllib.parse.urlencode({"query": 'promduck_last_run_partitions{job="promduck"}'})
            with urllib.request.urlopen(f"{scraper.url}/api/v1/query?{q}", timeout=30) as resp:
                res = json.load(resp)["data"]["result"]
            return {s["metric"]["status"]: float(s["value"][1]) for s in res}

        got = wait_until(scraped, "a scrape of the daemon's metrics", interval=0.5, proc=proc)
        assert got == {"written": 2.0, "empty": 1.0, "kept": 0.0, "failed": 0.0, "cancelled": 0.0}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        scraper.stop()
    assert proc.returncode == 0
