#!/usr/bin/env python3
"""promduck benchmarks: each measures promduck and its baseline in the same run on the
same data and prints the ratio. `make bench` runs all; `bench/run.py --only collector`
(or storage, memory, scaling) runs one. Figures are recorded in BENCHMARKS.md.

1. collector: the original tool's algorithm (one query per proxy, metric and day,
   sequentially) vs promduck's defaults (bounded concurrency, keep-alive, batching),
   against a real Prometheus with 200 proxies x 2 environments x 3 metrics x 7 days.
   The two runs' Parquet contents must be identical.
2. storage: prom_metrics(...) vs read_parquet('data/*/*.parquet') over a year of
   partitions (365 days x 200 proxies, written by promduck's writer): full scan with
   GROUP BY, and one day + one proxy vs the unpruned glob with WHERE.
3. memory: peak RSS of the collector for 7, 90 and 365-day backfills of 200 proxies.
4. scaling: collector time vs proxies (50, 200, 1000); prom_metrics vs read_parquet time
   vs days (1, 7, 30, 90, 365).
5. scale: the collector at 10,000 proxies x 10 metrics, (a) daily instant queries and
   (b) a 5-minute step, against the floor: Prometheus answering the very same requests
   to curl with the same concurrency (bench/scale.py; `bench/scale.py --help`).
6. compaction (bench/compaction.py): the same year before and after --compact.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import duckdb  # noqa: E402

import promfixture  # noqa: E402
import scale  # noqa: E402  (bench/scale.py)
import compaction  # noqa: E402  (bench/compaction.py)
from helpers import COLLECTOR, EXTENSION, LATENCY_Q, write_config  # noqa: E402

GEN = REPO / "target" / "release" / "examples" / "gen_partitions"
REQUEST_Q = 'sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'
ERROR_Q = 'sum(increase(apigee_error_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'
METRICS3 = [
    {"name": "request_count", "query": REQUEST_Q, "labels": ["apiproxy", "environment"]},
    {"name": "error_count", "query": ERROR_Q, "labels": ["apiproxy", "environment"]},
    {"name": "latency_ms", "query": LATENCY_Q, "labels": ["apiproxy", "environment"], "step": "1h"},
]
RESULTS: dict = {}
REMOTE_DELAY_MS = 2


def log(msg):
    print(msg, flush=True)


def machine():
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "memory_mib": mem, "cpu": cpu, "kernel": platform.release(),
            "duckdb_python": duckdb.__version__}


def start_prometheus(work: Path, days: int, proxies: int, envs, interval: int, counters=None, gauges=None,
                     start=date(2024, 1, 1)):
    names = [f"api-proxy-{i}" for i in range(proxies)]
    t = time.perf_counter()
    hist = promfixture.generate_history(work / "history.om", start, days, names, envs, seed=7, resets=False,
                                        interval=interval, counters=counters, gauges=gauges)
    gen_s = time.perf_counter() - t
    server = promfixture.PrometheusServer(hist.path, work / "prom")
    t = time.perf_counter()
    server.start()
    log(f"  history: {proxies} proxies x {len(envs)} envs x {days} days every {interval}s "
        f"(generated {gen_s:.1f}s, backfilled and started {time.perf_counter() - t:.1f}s)")
    (work / "history.om").unlink()
    return server, hist, names


def run_collector(cfg: Path, first: date, last: date, cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run([str(COLLECTOR), "--config", str(cfg), "--from", str(first), "--to", str(last),
                        "--progress", "never"], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"collector failed:\n{r.stderr[-3000:]}")
    return elapsed


def rows_of(data: Path):
    con = duckdb.connect()
    return con.execute("SELECT timestamp, metric_name, value, api_proxy, date, labels::VARCHAR FROM read_parquet(?) "
                       "ORDER BY ALL", [str(data / "*" / "*.parquet")]).fetchall()


def bench_collector(tmp: Path):
    log("\n## 1. collector: the original's algorithm vs promduck")
    work = tmp / "collector"
    work.mkdir()
    server, hist, names = start_prometheus(work, 7, 200, ["prod", "test"], 300)
    try:
        bench_collector_on(server, hist, names, work)
    finally:
        server.stop()


def bench_collector_on(server, hist, names, work: Path):
    if True:
        first, last = hist.days_list[0], hist.days_list[-1]
        base = work / "baseline"
        base.mkdir()
        cfg = write_config(base / "c.yaml", server.url, names, metrics=METRICS3, output_dir=base / "data",
                           prometheus_extra={"concurrency": 1, "batchSize": 1, "timeout": "60s"})
        t_base = run_collector(cfg, first, last, base)
        new = work / "promduck"
        new.mkdir()
        cfg = write_config(new / "c.yaml", server.url, names, metrics=METRICS3, output_dir=new / "data",
                           prometheus_extra={"timeout": "60s"}, storage_extra={"compression": "zstd"})
        cfg_text = json.loads(cfg.read_text())
        del cfg_text["prometheus"]["retries"]  # promduck's defaults
        cfg.write_text(json.dumps(cfg_text))
        t_new = run_collector(cfg, first, last, new)
        same = rows_of(base / "data") == rows_of(new / "data")
        n_rows = len(rows_of(new / "data"))
    queries_base = 200 * 3 * 7
    RESULTS["collector"] = {"baseline_s": round(t_base, 2), "promduck_s": round(t_new, 2),
                            "ratio": round(t_base / t_new, 1), "identical_rows": same, "rows": n_rows,
                            "baseline_queries": queries_base}
    log(f"  Prometheus on loopback (no network latency):")
    log(f"    baseline (sequential, one query per proxy/metric/day, {queries_base} queries): {t_base:.2f} s")
    log(f"    promduck (concurrency 8, batches of 50 proxies, {4 * 3 * 7} queries): {t_new:.2f} s")
    log(f"    ratio: {t_base / t_new:.1f}x faster; Parquet contents identical: {same} ({n_rows} rows)")
    if not same:
        raise SystemExit("collector outputs differ")
    lat = RESULTS["collector_remote"] = {}
    log(f"  Prometheus behind a proxy adding {REMOTE_DELAY_MS} ms per request (a Prometheus across a network):")
    if True:
        with LatencyProxy(server.url, REMOTE_DELAY_MS / 1000) as proxy:
            for label, extra, out in [("baseline", {"concurrency": 1, "batchSize": 1}, "rbase"),
                                      ("promduck", {}, "rnew")]:
                d = work / out
                d.mkdir()
                cfg = write_config(d / "c.yaml", proxy.url, names, metrics=METRICS3, output_dir=d / "data",
                                   prometheus_extra=dict({"timeout": "60s"}, **extra))
                lat[label + "_s"] = round(run_collector(cfg, first, last, d), 2)
            same_remote = rows_of(work / "rbase" / "data") == rows_of(work / "rnew" / "data") == rows_of(new / "data")
    lat["ratio"] = round(lat["baseline_s"] / lat["promduck_s"], 1)
    lat["identical_rows"] = same_remote
    log(f"    baseline {lat['baseline_s']:.2f} s, promduck {lat['promduck_s']:.2f} s -> ratio {lat['ratio']:.1f}x; "
        f"identical: {same_remote}")
    if not same_remote:
        raise SystemExit("collector outputs differ (remote)")


class LatencyProxy:
    """Forwards HTTP to `upstream` after `delay` seconds per request: a Prometheus
    across a network. Keep-alive on both sides and TCP_NODELAY, so the only added
    cost is the delay itself (plus Python's forwarding, the same for both runs)."""

    def __init__(self, upstream: str, delay: float):
        import http.client
        import http.server
        import socket
        import threading
        import urllib.parse

        up = urllib.parse.urlsplit(upstream)
        local = threading.local()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *a):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                if getattr(local, "conn", None) is None:
                    local.conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                local.conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = local.conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def timed(con, sql, params=(), repeat=3):
    best = None
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = con.execute(sql, list(params)).fetchall()
        e = time.perf_counter() - t
        best = e if best is None else min(best, e)
    return best, result


def make_year(tmp: Path) -> Path:
    data = tmp / "year"
    if not data.exists():
        t = time.perf_counter()
        subprocess.run([str(GEN), str(data), "365", "200", "2024-01-01"], check=True, capture_output=True)
        log(f"  generated 365 x 200 = 73,000 partitions with promduck's writer in {time.perf_counter() - t:.1f} s")
    return data


def connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    return con


def bench_storage(tmp: Path):
    log("\n## 2. prom_metrics vs read_parquet on a year of partitions")
    data = make_year(tmp)
    con = connect()
    glob = str(data / "*" / "*.parquet")
    full_base, r1 = timed(con, "SELECT api_proxy, metric_name, sum(value) FROM read_parquet(?) GROUP BY ALL ORDER BY ALL", [glob])
    full_new, r2 = timed(con, "SELECT api_proxy, metric_name, sum(value) FROM prom_metrics(data_dir := ?) GROUP BY ALL ORDER BY ALL", [str(data)])
    assert r1 == r2, "full scans differ"
    pr_base, p1 = timed(con, "SELECT count(*), sum(value) FROM read_parquet(?) WHERE date = DATE '2024-06-01' AND api_proxy = 'api-proxy-7'", [glob])
    pr_new, p2 = timed(con, "SELECT count(*), sum(value) FROM prom_metrics(data_dir := ?, date := '2024-06-01', proxy := 'api-proxy-7')", [str(data)], repeat=10)
    assert p1 == p2 and p1[0][0] == 6, (p1, p2)
    RESULTS["storage"] = {"full_read_parquet_s": round(full_base, 3), "full_prom_metrics_s": round(full_new, 3),
                          "full_ratio": round(full_base / full_new, 2), "pruned_read_parquet_s": round(pr_base, 3),
                          "pruned_prom_metrics_s": round(pr_new, 5), "pruned_ratio": round(pr_base / pr_new)}
    log(f"  full scan + GROUP BY: read_parquet {full_base:.2f} s, prom_metrics {full_new:.2f} s "
        f"-> ratio {full_base / full_new:.2f} (>= 1.0 means prom_metrics is at least as fast)")
    log(f"  one day, one proxy:   read_parquet glob + WHERE {pr_base:.3f} s, prom_metrics {pr_new * 1000:.2f} ms "
        f"-> ratio {pr_base / pr_new:.0f}x")


def peak_rss_mib(args, cwd) -> tuple[float, float]:
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "r = subprocess.run(sys.argv[1:], capture_output=True); "
            "sys.exit(r.returncode) if r.returncode else None; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)")
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"collector failed: {r.stderr[-2000:]}")
    kib, secs = r.stdout.split()
    return int(kib) / 1024, float(secs)


def bench_memory(tmp: Path):
    log("\n## 3. collector peak memory vs backfill length (200 proxies)")
    work = tmp / "memory"
    work.mkdir()
    server, hist, names = start_prometheus(work, 366, 200, ["prod"], 3600, gauges={})
    out = {}
    try:
        metrics = METRICS3[:2]
        for days in (7, 90, 365):
            d = work / f"d{days}"
            d.mkdir()
            cfg = write_config(d / "c.yaml", server.url, names, metrics=metrics, output_dir=d / "data",
                               prometheus_extra={"timeout": "60s"})
            first = hist.days_list[0]
            last = first + timedelta(days=days - 1)
            rss, secs = peak_rss_mib([str(COLLECTOR), "--config", str(cfg), "--from", str(first), "--to", str(last),
                                      "--progress", "never"], d)
            files = sum(1 for _ in (d / "data").rglob("*.parquet"))
            out[days] = {"peak_rss_mib": round(rss, 1), "seconds": round(secs, 2), "partitions": files}
            log(f"  {days:>3} days: {files:>6} partitions, peak RSS {rss:6.1f} MiB, {secs:.1f} s")
            shutil.rmtree(d / "data")
    finally:
        server.stop()
    RESULTS["memory"] = out


def bench_scaling(tmp: Path):
    log("\n## 4a. collector time vs number of proxies (1 day, 3 metrics, 2 environments)")
    work = tmp / "scaling"
    work.mkdir()
    server, hist, names = start_prometheus(work, 1, 1000, ["prod", "test"], 300)
    out = {"collector": {}, "prom_metrics": {}}
    try:
        day = hist.days_list[0]
        for n in (50, 200, 1000):
            d = work / f"p{n}"
            d.mkdir()
            cfg = write_config(d / "c.yaml", server.url, names[:n], metrics=METRICS3, output_dir=d / "data",
                               prometheus_extra={"timeout": "60s"})
            secs = run_collector(cfg, day, day, d)
            base = d / "base"
            cfg = write_config(d / "b.yaml", server.url, names[:n], metrics=METRICS3, output_dir=base,
                               prometheus_extra={"timeout": "60s", "concurrency": 1, "batchSize": 1})
            base_secs = run_collector(cfg, day, day, d)
            out["collector"][n] = {"promduck_s": round(secs, 3), "baseline_s": round(base_secs, 3)}
            log(f"  {n:>5} proxies: promduck {secs:6.2f} s, original's algorithm {base_secs:6.2f} s "
                f"({base_secs / secs:.1f}x)")
    finally:
        server.stop()
    log("\n## 4b. prom_metrics vs read_parquet time vs number of days (200 proxies, GROUP BY)")
    data = make_year(tmp)
    con = connect()
    first = date(2024, 1, 1)
    for days in (1, 7, 30, 90, 365):
        last = first + timedelta(days=days - 1)
        globs = [str(data / str(first + timedelta(days=i)) / "*.parquet") for i in range(days)]
        t_base, r1 = timed(con, "SELECT api_proxy, sum(value) FROM read_parquet(?) GROUP BY ALL ORDER BY ALL", [globs], repeat=2)
        t_new, r2 = timed(con, "SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, start_date := ?, end_date := ?) "
                               "GROUP BY ALL ORDER BY ALL", [str(data), str(first), str(last)], repeat=2)
        assert r1 == r2
        out["prom_metrics"][days] = {"prom_metrics_s": round(t_new, 3), "read_parquet_s": round(t_base, 3)}
        log(f"  {days:>3} days ({days * 200:>6} files): prom_metrics {t_new:7.3f} s, read_parquet(list of day globs) "
            f"{t_base:7.3f} s, ratio {t_base / t_new:.2f}")
    RESULTS["scaling"] = out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["collector", "storage", "memory", "scaling", "scale", "compaction"], action="append")
    ap.add_argument("--workdir", help="keep data here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    for f in (COLLECTOR, EXTENSION, GEN):
        if not f.exists():
            raise SystemExit(f"{f} is missing: run `make bench` (it builds everything first)")
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="promduck-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    RESULTS["machine"] = machine()
    log(f"machine: {RESULTS['machine']}")
    try:
        for name, fn in [("collector", bench_collector), ("storage", bench_storage), ("memory", bench_memory),
                         ("scaling", bench_scaling), ("scale", lambda t: scale.bench_scale(t, RESULTS)),
                         ("compaction", lambda t: compaction.bench_compaction(t, RESULTS))]:
            if not args.only or name in args.only:
                fn(tmp)
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(RESULTS, indent=2))
    log("\n" + json.dumps(RESULTS))


if __name__ == "__main__":
    main()
