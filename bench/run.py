#!/usr/bin/env python3
"""promduck benchmarks. `make bench` runs all; `bench/run.py --only collector` (or storage,
memory, scaling, scale, compaction) runs one. Each section's figures are written to
bench/<section>.json (next to BENCHMARKS.md, where they are recorded; --json-dir elsewhere).

"The original's algorithm" below is NOT the original Go program: it is promduck's own
collector configured to behave like it (`concurrency: 1, batchSize: 1`: one query per
proxy, metric and day, one after the other), the same binary and config otherwise.
Requests are counted by Prometheus itself (`prometheus_http_requests_total` of its query
endpoints, read before and after each run), not computed.

1. collector: the original's algorithm vs promduck's defaults (bounded concurrency,
   batching), against a real Prometheus with 200 proxies x 2 environments x 3 metrics x
   7 days. The two runs' Parquet contents are compared row by row and must be identical.
2. storage: prom_metrics(...) vs read_parquet('data/*/*.parquet') over a year of
   partitions (365 days x 200 proxies, written by promduck's writer): full scan with
   GROUP BY, and one day + one proxy vs the unpruned glob with WHERE; results compared.
3. memory: peak RSS of the collector for 7, 90 and 365-day backfills of 200 proxies (no
   baseline); every stored value is checked against the generator's exact answer.
4. scaling: collector time vs proxies (50, 200, 1000), promduck vs the original's
   algorithm, outputs compared row by row; prom_metrics vs read_parquet time vs days
   (1, 7, 30, 90, 365), results compared.
5. scale: the collector at 10,000 proxies x 10 metrics, (a) daily instant queries and
   (b) a 5-minute step, against the floor: Prometheus answering the very same requests
   to curl with the same concurrency (bench/scale.py; `bench/scale.py --help`).
6. compaction (bench/compaction.py): the same year before and after --compact.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
from scale import query_requests  # noqa: E402  (Prometheus's own count of query requests)
import compaction  # noqa: E402  (bench/compaction.py)
from common import GEN, RESULTS, connect, log, machine, peak_rss_mib, timed  # noqa: E402
from helpers import COLLECTOR, EXTENSION, LATENCY_Q, write_config  # noqa: E402

REQUEST_Q = 'sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'
ERROR_Q = 'sum(increase(apigee_error_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'
METRICS3 = [
    {"name": "request_count", "query": REQUEST_Q, "labels": ["apiproxy", "environment"]},
    {"name": "error_count", "query": ERROR_Q, "labels": ["apiproxy", "environment"]},
    {"name": "latency_ms", "query": LATENCY_Q, "labels": ["apiproxy", "environment"], "step": "1h"},
]
REMOTE_DELAY_MS = 2


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


def run_collector(cfg: Path, first: date, last: date, cwd: Path, server=None):
    """Runs the collector: its wall time, or with ``server`` (time, requests Prometheus
    served on its query endpoints meanwhile, the collector's CPU time)."""
    before = query_requests(server) if server else None
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([str(COLLECTOR), "--config", str(cfg), "--from", str(first), "--to", str(last),
                        "--progress", "never"], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"collector failed:\n{r.stderr[-3000:]}")
    if server is None:
        return elapsed
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    # Our own read of /metrics is a different handler: not counted.
    return elapsed, query_requests(server) - before, cpu


def check_counters(data: Path, hist, days, proxies, metrics) -> int:
    """Every row in ``data`` is a counter's daily increase as the generator computed it
    (``hist.expected``), at D+1 00:00, and every expected row is there: the row count."""
    con = duckdb.connect()
    # `timestamp` is stored as epoch milliseconds (BIGINT), the original's layout
    got = con.execute("SELECT date, api_proxy, labels['environment'], metric_name, timestamp, value "
                      "FROM read_parquet(?)", [str(data / "*" / "*.parquet")]).fetchall()
    want = {(d, p, e, m): hist.expected[(d, p, e, m)] for d in days for p in proxies
            for e in hist.environments for m in metrics}
    have = {}
    for d, p, e, m, ms, v in got:
        day_end = (d - date(1970, 1, 1)).days * 86_400_000 + 86_400_000
        if ms != day_end or (d, p, e, m) in have:
            raise SystemExit(f"unexpected row {(d, p, e, m, ms, v)}")
        have[(d, p, e, m)] = v
    if have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise SystemExit(f"{len(diff)} rows differ from the generator's values, e.g. "
                         f"{[(k, have.get(k), want.get(k)) for k in diff[:3]]}")
    return len(got)


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
        t_base, req_base, cpu_base = run_collector(cfg, first, last, base, server)
        new = work / "promduck"
        new.mkdir()
        cfg = write_config(new / "c.yaml", server.url, names, metrics=METRICS3, output_dir=new / "data",
                           prometheus_extra={"timeout": "60s"}, storage_extra={"compression": "zstd"})
        cfg_text = json.loads(cfg.read_text())
        del cfg_text["prometheus"]["retries"]  # promduck's defaults
        cfg.write_text(json.dumps(cfg_text))
        t_new, req_new, cpu_new = run_collector(cfg, first, last, new, server)
        base_rows, new_rows = rows_of(base / "data"), rows_of(new / "data")
        same = base_rows == new_rows
        n_rows = len(new_rows)
        partitions = sum(1 for _ in (new / "data").rglob("*.parquet"))
    RESULTS["collector"] = {"baseline_s": round(t_base, 2), "promduck_s": round(t_new, 2),
                            "ratio": round(t_base / t_new, 1), "identical_rows": same, "rows": n_rows,
                            "partitions": partitions, "baseline_requests": req_base, "promduck_requests": req_new,
                            "baseline_cpu_s": round(cpu_base, 2), "promduck_cpu_s": round(cpu_new, 2),
                            "requests_counted_by": "prometheus_http_requests_total (/api/v1/query, query_range)"}
    log(f"  Prometheus on loopback (no network latency):")
    log(f"    original's algorithm (promduck with concurrency 1, batchSize 1; {req_base} requests served "
        f"by Prometheus): {t_base:.2f} s")
    log(f"    promduck (concurrency 8, batches of 50 proxies; {req_new} requests served): {t_new:.2f} s")
    log(f"    ratio: {t_base / t_new:.1f}x faster; Parquet contents identical: {same} ({n_rows} rows, "
        f"{partitions} partitions); collector CPU {cpu_base:.2f} s vs {cpu_new:.2f} s")
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
                secs, reqs, _ = run_collector(cfg, first, last, d, server)
                lat[label + "_s"] = round(secs, 2)
                lat[label + "_requests"] = reqs
            same_remote = rows_of(work / "rbase" / "data") == rows_of(work / "rnew" / "data") == rows_of(new / "data")
    lat["ratio"] = round(lat["baseline_s"] / lat["promduck_s"], 1)
    lat["identical_rows"] = same_remote
    log(f"    original's algorithm {lat['baseline_s']:.2f} s ({lat['baseline_requests']} requests), promduck "
        f"{lat['promduck_s']:.2f} s ({lat['promduck_requests']} requests) -> ratio {lat['ratio']:.1f}x; "
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


def make_year(tmp: Path) -> Path:
    data = tmp / "year"
    if not data.exists():
        t = time.perf_counter()
        subprocess.run([str(GEN), str(data), "365", "200", "2024-01-01"], check=True, capture_output=True)
        log(f"  generated 365 x 200 = 73,000 partitions with promduck's writer in {time.perf_counter() - t:.1f} s")
    return data


def bench_storage(tmp: Path):
    log("\n## 2. prom_metrics vs read_parquet on a year of partitions")
    data = make_year(tmp)
    con = connect()
    glob = str(data / "*" / "*.parquet")
    full_base, r1, cpu_base = timed(con, "SELECT api_proxy, metric_name, sum(value) FROM read_parquet(?) GROUP BY ALL ORDER BY ALL", [glob])
    full_new, r2, cpu_new = timed(con, "SELECT api_proxy, metric_name, sum(value) FROM prom_metrics(data_dir := ?) GROUP BY ALL ORDER BY ALL", [str(data)])
    assert r1 == r2 and len(r1) == 600, "full scans differ"
    pr_base, p1, _ = timed(con, "SELECT count(*), sum(value) FROM read_parquet(?) WHERE date = DATE '2024-06-01' AND api_proxy = 'api-proxy-7'", [glob])
    pr_new, p2, _ = timed(con, "SELECT count(*), sum(value) FROM prom_metrics(data_dir := ?, date := '2024-06-01', proxy := 'api-proxy-7')", [str(data)], repeat=10)
    assert p1 == p2 and p1[0][0] == 6, (p1, p2)
    RESULTS["storage"] = {"identical_results": True,
                          "full_read_parquet_s": round(full_base, 3), "full_prom_metrics_s": round(full_new, 3),
                          "full_ratio": round(full_base / full_new, 2),
                          "full_read_parquet_cpu_s": round(cpu_base, 3), "full_prom_metrics_cpu_s": round(cpu_new, 3),
                          "pruned_read_parquet_s": round(pr_base, 3),
                          "pruned_prom_metrics_s": round(pr_new, 5), "pruned_ratio": round(pr_base / pr_new)}
    log(f"  full scan + GROUP BY: read_parquet {full_base:.2f} s, prom_metrics {full_new:.2f} s "
        f"-> ratio {full_base / full_new:.2f} (>= 1.0 means prom_metrics is at least as fast); "
        f"CPU {cpu_base:.2f} s vs {cpu_new:.2f} s")
    log(f"  one day, one proxy:   read_parquet glob + WHERE {pr_base:.3f} s, prom_metrics {pr_new * 1000:.2f} ms "
        f"-> ratio {pr_base / pr_new:.0f}x")


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
            rows = check_counters(d / "data", hist, [first + timedelta(days=i) for i in range(days)], names,
                                  [m["name"] for m in metrics])
            out[days] = {"peak_rss_mib": round(rss, 1), "seconds": round(secs, 2), "partitions": files,
                         "rows": rows, "rows_exact": True}
            log(f"  {days:>3} days: {files:>6} partitions, {rows:,} rows (each the generator's exact value), "
                f"peak RSS {rss:6.1f} MiB, {secs:.1f} s")
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
            secs, reqs, _ = run_collector(cfg, day, day, d, server)
            base = d / "base"
            cfg = write_config(d / "b.yaml", server.url, names[:n], metrics=METRICS3, output_dir=base,
                               prometheus_extra={"timeout": "60s", "concurrency": 1, "batchSize": 1})
            base_secs, base_reqs, _ = run_collector(cfg, day, day, d, server)
            new_rows, base_rows = rows_of(d / "data"), rows_of(base)
            if new_rows != base_rows:
                raise SystemExit(f"{n} proxies: promduck's and the original algorithm's rows differ")
            out["collector"][n] = {"promduck_s": round(secs, 3), "baseline_s": round(base_secs, 3),
                                   "promduck_requests": reqs, "baseline_requests": base_reqs,
                                   "rows": len(new_rows), "identical_rows": True}
            log(f"  {n:>5} proxies: promduck {secs:6.2f} s ({reqs} requests), original's algorithm "
                f"{base_secs:6.2f} s ({base_reqs} requests) ({base_secs / secs:.1f}x); rows identical "
                f"({len(new_rows):,})")
    finally:
        server.stop()
    log("\n## 4b. prom_metrics vs read_parquet time vs number of days (200 proxies, GROUP BY)")
    data = make_year(tmp)
    con = connect()
    first = date(2024, 1, 1)
    for days in (1, 7, 30, 90, 365):
        last = first + timedelta(days=days - 1)
        globs = [str(data / str(first + timedelta(days=i)) / "*.parquet") for i in range(days)]
        t_base, r1, cpu_base = timed(con, "SELECT api_proxy, sum(value) FROM read_parquet(?) GROUP BY ALL ORDER BY ALL", [globs], repeat=2)
        t_new, r2, cpu_new = timed(con, "SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, start_date := ?, end_date := ?) "
                               "GROUP BY ALL ORDER BY ALL", [str(data), str(first), str(last)], repeat=2)
        assert r1 == r2 and len(r1) == 200, f"{days} days: prom_metrics and read_parquet differ"
        out["prom_metrics"][days] = {"prom_metrics_s": round(t_new, 3), "read_parquet_s": round(t_base, 3),
                                     "prom_metrics_cpu_s": round(cpu_new, 3), "read_parquet_cpu_s": round(cpu_base, 3),
                                     "identical_results": True}
        log(f"  {days:>3} days ({days * 200:>6} files): prom_metrics {t_new:7.3f} s, read_parquet(list of day globs) "
            f"{t_base:7.3f} s, ratio {t_base / t_new:.2f}; CPU {cpu_new:.3f} s vs {cpu_base:.3f} s")
    RESULTS["scaling"] = out


def save_section(folder: Path, name: str, figures: dict, load_at_start: float):
    """bench/<name>.json: the section's figures, the machine (and its 1-minute load average at
    the section's start and end: it may be shared), when and how they were made."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"section": name, "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
           "machine": RESULTS["machine"], **figures}
    (folder / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    log(f"  figures written to {folder / (name + '.json')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["collector", "storage", "memory", "scaling", "scale", "compaction"], action="append")
    ap.add_argument("--workdir", help="keep data here (default: a temporary folder)")
    ap.add_argument("--json", help="also write every figure of this run to this file")
    ap.add_argument("--json-dir", default=str(REPO / "bench"),
                    help="write each section's figures to DIR/<section>.json (default: bench/, next to "
                         "BENCHMARKS.md; '' for none)")
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
                keys, load = set(RESULTS), os.getloadavg()[0]
                fn(tmp)
                if args.json_dir:
                    save_section(Path(args.json_dir), name, {k: RESULTS[k] for k in RESULTS if k not in keys}, load)
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(RESULTS, indent=2))
    log("\n" + json.dumps(RESULTS))


if __name__ == "__main__":
    main()
