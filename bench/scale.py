"""Benchmark 5: the collector at 10,000 proxies x 10 metrics against its floor.

A real Prometheus backfilled (promtool) with one day of 10,000 proxies x 2 environments
(two counters, one gauge, a sample every 5 minutes). Two configurations of 10 metrics:

  (a) daily instant queries (`increase(x[1d])`, `max_over_time(x[1d])`, ...), and
  (b) the same at a 5-minute step over the day (`increase(x[5m])`, ... at `step: 5m`),

both with promduck's defaults (8 queries in flight, batches of 50 proxies).

The floor is Prometheus's own time to answer the very same queries: a first collector run
logs every request it sends (`PROMDUCK_LOG=promduck_core::prometheus=trace`), and curl
replays those requests (`--parallel --parallel-max <concurrency>`, keep-alive, bodies
discarded) in the same run, against the same server. Floor and collector runs alternate;
the best of each is reported.

Requests are counted at the server (Prometheus's own `prometheus_http_requests_total` for
/api/v1/query and /api/v1/query_range, read before and after each run) and checked against
the collector's `promduck_requests_total` (`--metrics-file`) and the number of requests
replayed. Rows are the collector's `promduck_last_run_rows`, checked against a count of
the files' rows and the expected number; three proxies' rows are compared value by value
with Prometheus's per-proxy answers. Peak RSS and CPU time of the collector come from
`getrusage` of a wrapper process; Prometheus's CPU time from /proc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import promfixture  # noqa: E402
from common import log  # noqa: E402  (bench/common.py)
from helpers import COLLECTOR, write_config  # noqa: E402

PROXIES = 10_000
ENVS = ["prod", "test"]
DAY = date(2024, 1, 1)
INTERVAL = 300
STEP_S = 300
CONCURRENCY = 8  # promduck's default, and the floor's parallelism


def metrics(window: str, step: str | None):
    """10 metrics over the fixture's two counters and one gauge, `window` the range."""
    sel = lambda m: f'{m}{{apiproxy="%s"}}'  # noqa: E731
    by = " by (apiproxy, environment)"
    q = [
        ("request_count", f"sum(increase({sel('apigee_request_count')}[{window}])){by}"),
        ("error_count", f"sum(increase({sel('apigee_error_count')}[{window}])){by}"),
        ("request_rate", f"sum(rate({sel('apigee_request_count')}[{window}])){by}"),
        ("request_samples", f"sum(count_over_time({sel('apigee_request_count')}[{window}])){by}"),
        ("latency_max", f"max(max_over_time({sel('apigee_latency_ms')}[{window}])){by}"),
        ("latency_min", f"min(min_over_time({sel('apigee_latency_ms')}[{window}])){by}"),
        ("latency_avg", f"avg(avg_over_time({sel('apigee_latency_ms')}[{window}])){by}"),
        ("latency_p50", f"max(quantile_over_time(0.5, {sel('apigee_latency_ms')}[{window}])){by}"),
        ("latency_p99", f"max(quantile_over_time(0.99, {sel('apigee_latency_ms')}[{window}])){by}"),
        ("latency_stddev", f"max(stddev_over_time({sel('apigee_latency_ms')}[{window}])){by}"),
    ]
    out = []
    for name, query in q:
        m = {"name": name, "query": query, "labels": ["apiproxy", "environment"]}
        if step:
            m["step"] = step
        out.append(m)
    return out


class Server(promfixture.PrometheusServer):
    """The fixture's server, reusing a TSDB backfilled by an earlier run (--workdir)."""

    def backfill(self):
        if (self.workdir / "tsdb.done").is_file():
            return
        super().backfill()
        (self.workdir / "tsdb.done").write_text("ok\n")


def start_server(work: Path, proxies: int):
    names = [f"api-proxy-{i}" for i in range(proxies)]
    prom = work / f"prom-{proxies}"
    hist = work / "history.om"
    if not (prom / "tsdb.done").is_file():
        t = time.perf_counter()
        promfixture.generate_history(hist, DAY, 1, names, ENVS, seed=7, resets=False, interval=INTERVAL)
        log(f"  history: {proxies} proxies x {len(ENVS)} environments x 1 day every {INTERVAL} s, "
            f"generated in {time.perf_counter() - t:.1f} s")
    else:
        hist.write_text("")  # the TSDB is reused; the file only has to exist
    server = Server(hist, prom)
    t = time.perf_counter()
    server.start()
    log(f"  Prometheus backfilled and started in {time.perf_counter() - t:.1f} s")
    hist.unlink(missing_ok=True)
    return server, names


def query_requests(server) -> int:
    """Requests Prometheus has served on its query endpoints (its own counter)."""
    status, body = server.request("/metrics")
    assert status == 200
    n = 0
    for line in body.decode().splitlines():
        if line.startswith("prometheus_http_requests_total{") and (
                'handler="/api/v1/query"' in line or 'handler="/api/v1/query_range"' in line):
            n += int(float(line.rsplit(" ", 1)[1]))
    return n


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


WRAPPER = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
           "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); "
           "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
           "print(json.dumps({'rc': r.returncode, 'wall': time.perf_counter() - t, 'rss_kib': u.ru_maxrss, "
           "'cpu': u.ru_utime + u.ru_stime, 'err': r.stderr.decode(errors='replace')[-3000:]}))")


def measured(server, args, cwd) -> dict:
    """Runs `args` in a wrapper: wall time, peak RSS and CPU of the command, Prometheus's
    CPU time and the query requests it served meanwhile."""
    before_req, before_cpu = query_requests(server), cpu_seconds(server.proc.pid)
    r = subprocess.run([sys.executable, "-c", WRAPPER, *map(str, args)], cwd=cwd, capture_output=True, text=True)
    out = json.loads(r.stdout)
    if out["rc"] != 0:
        raise SystemExit(f"{args[0]} failed ({out['rc']}):\n{out['err']}")
    out["server_requests"] = query_requests(server) - before_req
    out["prometheus_cpu"] = cpu_seconds(server.proc.pid) - before_cpu
    return out


def capture_requests(cfg: Path, cwd: Path) -> list[tuple[str, str]]:
    """The (endpoint, form body) of every request a collector run sends."""
    env = dict(os.environ, PROMDUCK_LOG="promduck_core::prometheus=trace,promduck_collector=warn")
    r = subprocess.run([str(COLLECTOR), "--config", str(cfg), "--date", str(DAY), "--progress", "never",
                        "--log-format", "json"], cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"capture run failed:\n{r.stderr[-3000:]}")
    reqs = []
    for line in r.stderr.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        f = e.get("fields", {})
        if f.get("message") == "request" and "body" in f:
            reqs.append((f["endpoint"], f["body"]))
    if not reqs:
        raise SystemExit(f"{COLLECTOR} logs no requests at trace level (an older build?)")
    return reqs


def curl_config(reqs, url: str, path: Path):
    with open(path, "w") as f:
        for i, (endpoint, body) in enumerate(reqs):
            if i:
                f.write("next\n")
            f.write(f'url = "{url}/api/v1/{endpoint}"\ndata = "{body}"\noutput = "/dev/null"\n')


def metrics_file(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def day_end_s() -> int:
    return int(datetime(DAY.year, DAY.month, DAY.day, tzinfo=timezone.utc).timestamp()) + 86400


def check_values(server, data: Path, mets, step: bool, proxies):
    """The files' rows for a few proxies equal Prometheus's answers to per-proxy queries."""
    con = duckdb.connect()
    end = day_end_s()
    for proxy in proxies:
        got = sorted(con.execute(
            "SELECT metric_name, labels['environment'], timestamp, value FROM read_parquet(?)",
            [str(data / str(DAY) / f"{proxy}.parquet")]).fetchall())
        want = []
        for m in mets:
            q = m["query"].replace("%s", proxy)
            if step:
                params = {"query": q, "start": end - 86400 + STEP_S, "end": end, "step": STEP_S}
                status, body = server.request("/api/v1/query_range", params)
                assert status == 200, body[:300]
                for s in json.loads(body)["data"]["result"]:
                    want += [(m["name"], s["metric"]["environment"], int(round(float(t) * 1000)), float(v))
                             for t, v in s["values"]]
            else:
                for s in server.query(q, end)["data"]["result"]:
                    t, v = s["value"]
                    want.append((m["name"], s["metric"]["environment"], int(round(float(t) * 1000)), float(v)))
        want.sort()
        if got != want:
            raise SystemExit(f"{proxy}: the collected rows differ from Prometheus's answers "
                             f"({len(got)} rows vs {len(want)})")


def discard(path: Path, work: Path):
    """Moves `path` into `work`/trash, deleted once every measurement is over.

    Deleting a run's 10,000 files right before the next run slows that run down: on an
    ext4 without a journal (this machine's root filesystem), the inode allocator passes
    over inodes freed in the last 60 s (360 s while their table block is dirty) one by
    one (`recently_deleted` in fs/ext4/ialloc.c), so every new file scans past thousands
    of them (measured on (a): 1.7-1.9 s of the collector's system CPU when the previous
    run's files were moved away, 4.6-6.6 s right after they were deleted). A rename frees
    no inode."""
    if path.exists():
        trash = work / "trash"
        trash.mkdir(exist_ok=True)
        path.rename(trash / f"{path.name}-{time.time_ns()}")


def run_mode(server, names, work: Path, mode: str, reps: int, baseline: Path | None):
    step = mode == "step"
    mets = metrics("5m" if step else "1d", "5m" if step else None)
    d = work / mode
    discard(d, work)
    d.mkdir(parents=True)
    cfg = write_config(d / "c.yaml", server.url, names, metrics=mets, output_dir=d / "data",
                       prometheus_extra={"timeout": "120s"})
    c = json.loads(cfg.read_text())
    del c["prometheus"]["retries"]  # promduck's defaults, but for the timeout
    del c["storage"]["compression"]
    cfg.write_text(json.dumps(c))
    points = 86400 // STEP_S if step else 1
    expected_rows = len(names) * len(mets) * len(ENVS) * points

    t = time.perf_counter()
    reqs = capture_requests(cfg, d)
    curl_config(reqs, server.url, d / "curl.cfg")
    log(f"  captured {len(reqs)} requests in {time.perf_counter() - t:.1f} s (a warm-up run too)")
    floor_cmd = ["curl", "--silent", "--show-error", "--fail", "--parallel", "--parallel-immediate",
                 "--parallel-max", str(CONCURRENCY), "--config", d / "curl.cfg"]
    runs = {"floor": [], "promduck": []}
    collectors = [("promduck", COLLECTOR)]
    if baseline:
        runs["baseline"] = []
        collectors.append(("baseline", baseline))
    for rep in range(reps):
        f = measured(server, floor_cmd, d)
        runs["floor"].append(f)
        log(f"    floor     #{rep + 1}: {f['wall']:6.2f} s, {f['server_requests']} requests, "
            f"Prometheus CPU {f['prometheus_cpu']:.1f} s")
        for label, binary in collectors:
            discard(d / "data", work)
            (d / "m.prom").unlink(missing_ok=True)
            r = measured(server, [binary, "--config", cfg, "--date", DAY, "--progress", "never",
                                  "--metrics-file", d / "m.prom"], d)
            m = metrics_file(d / "m.prom")
            r["rows"] = int(m["promduck_last_run_rows"])
            r["client_requests"] = int(m["promduck_requests_total"])
            runs[label].append(r)
            log(f"    {label:9} #{rep + 1}: {r['wall']:6.2f} s, {r['server_requests']} requests, "
                f"{r['rows']:,} rows, peak RSS {r['rss_kib'] / 1024:.0f} MiB, CPU {r['cpu']:.1f} s, "
                f"Prometheus CPU {r['prometheus_cpu']:.1f} s")
            if r["server_requests"] != len(reqs) or r["client_requests"] != len(reqs):
                raise SystemExit(f"{label} sent {r['client_requests']} requests (server: {r['server_requests']}), "
                                 f"the capture {len(reqs)}")
            if r["rows"] != expected_rows:
                raise SystemExit(f"{label} wrote {r['rows']} rows, expected {expected_rows}")
        if f["server_requests"] != len(reqs):
            raise SystemExit(f"the floor sent {f['server_requests']} requests, expected {len(reqs)}")
    # The last promduck run's files: every row there, values exact for a few proxies.
    if baseline:  # the last run was the baseline's: collect once more with promduck
        discard(d / "data", work)
        subprocess.run([str(COLLECTOR), "--config", str(cfg), "--date", str(DAY), "--progress", "never"],
                       cwd=d, check=True, capture_output=True)
    n = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [str(d / "data" / "*" / "*.parquet")]).fetchone()[0]
    if n != expected_rows:
        raise SystemExit(f"the files hold {n} rows, expected {expected_rows}")
    check_values(server, d / "data", mets, step, [names[0], names[len(names) // 2], names[-1]])
    best = {k: min(v, key=lambda r: r["wall"]) for k, v in runs.items()}
    out = {
        "requests": len(reqs),
        "rows": expected_rows,
        "floor_s": round(best["floor"]["wall"], 2),
        "promduck_s": round(best["promduck"]["wall"], 2),
        "ratio": round(best["promduck"]["wall"] / best["floor"]["wall"], 2),
        "peak_rss_mib": round(max(r["rss_kib"] for r in runs["promduck"]) / 1024, 1),
        "collector_cpu_s": round(best["promduck"]["cpu"], 1),
        "prometheus_cpu_s": round(best["floor"]["prometheus_cpu"], 1),
        "runs": {k: [round(r["wall"], 2) for r in v] for k, v in runs.items()},
        # Per run, in the order above: the command's CPU time (user + system), Prometheus's
        # CPU time meanwhile, the command's peak RSS.
        "cpu_runs": {k: [round(r["cpu"], 1) for r in v] for k, v in runs.items()},
        "prometheus_cpu_runs": {k: [round(r["prometheus_cpu"], 1) for r in v] for k, v in runs.items()},
        "rss_mib_runs": {k: [round(r["rss_kib"] / 1024, 1) for r in v] for k, v in runs.items() if k != "floor"},
    }
    if baseline:
        out["baseline"] = {"s": round(best["baseline"]["wall"], 2),
                           "ratio": round(best["baseline"]["wall"] / best["floor"]["wall"], 2),
                           "peak_rss_mib": round(max(r["rss_kib"] for r in runs["baseline"]) / 1024, 1),
                           "cpu_s": round(best["baseline"]["cpu"], 1)}
    log(f"  {'(a) daily instant queries' if not step else '(b) 5-minute step'}: {len(reqs)} requests, "
        f"{expected_rows:,} rows; floor {out['floor_s']:.2f} s, promduck {out['promduck_s']:.2f} s "
        f"-> {out['ratio']:.2f}x the floor; peak RSS {out['peak_rss_mib']:.0f} MiB"
        + (f"; baseline {out['baseline']['s']:.2f} s ({out['baseline']['ratio']:.2f}x, "
           f"{out['baseline']['peak_rss_mib']:.0f} MiB)" if baseline else ""))
    discard(d / "data", work)
    return out


def bench_scale(tmp: Path, results: dict, proxies: int = PROXIES, reps: int = 2, baseline: Path | None = None,
                modes=("instant", "step")):
    log(f"\n## 5. collector at {proxies:,} proxies x 10 metrics vs the floor (Prometheus answering the same "
        f"queries to curl)")
    if not shutil.which("curl"):
        raise SystemExit("curl is needed for the floor (apt-get install curl)")
    work = tmp / "scale"
    work.mkdir(parents=True, exist_ok=True)
    # What an interrupted earlier run left (see `discard`), before anything is timed.
    shutil.rmtree(work / "trash", ignore_errors=True)
    server, names = start_server(work, proxies)
    out = {}
    try:
        for mode in modes:
            out[mode] = run_mode(server, names, work, mode, reps, baseline)
    finally:
        server.stop()
        shutil.rmtree(work / "trash", ignore_errors=True)
    results["scale"] = out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxies", type=int, default=PROXIES)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--mode", choices=["instant", "step"], action="append")
    ap.add_argument("--baseline", help="another collector binary to time in the same runs (e.g. before a change)")
    ap.add_argument("--workdir", help="keep the TSDB here (reused by the next run)")
    ap.add_argument("--json", help="also write the figures to this file (BENCHMARKS.md's: bench/scale.json)")
    args = ap.parse_args()
    import tempfile

    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="promduck-scale-"))
    res: dict = {}
    try:
        bench_scale(tmp, res, args.proxies, args.reps, Path(args.baseline) if args.baseline else None,
                    tuple(args.mode or ("instant", "step")))
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    log(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
