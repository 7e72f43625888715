#!/usr/bin/env python3
"""Run a demo Prometheus filled with generated Apigee-like history.

    python scripts/demo-prometheus.py [--workdir .cache/demo] [--days 7]
        [--proxies api-proxy-1,api-proxy-2,api-proxy-3] [--port 19090] start|stop|status

start   generate ``--days`` complete days of history before today (UTC), and
        today in full (so a live query at "now" finds samples; PROMDUCK_NOW, when
        set, is "now"), backfill it and start Prometheus detached (it keeps running after this
        script exits).  Prints the URL and writes it to WORKDIR/url; the pid is
        in WORKDIR/prometheus.pid, the exact expected daily increases in
        WORKDIR/expected.csv.  A no-op (printing the URL) if already running.
stop    stop the Prometheus started by ``start`` (via the pid file).
status  print the URL and exit 0 if running, else exit 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

import promfixture  # noqa: E402


def log(msg: str) -> None:
    print(f"demo-prometheus: {msg}", file=sys.stderr)


def read_pid(workdir: Path) -> int | None:
    try:
        return int((workdir / "prometheus.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/ready", timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def running(workdir: Path) -> tuple[int, str] | None:
    """(pid, url) of the demo Prometheus if it is alive and ready."""
    pid = read_pid(workdir)
    if pid is None or not promfixture.pid_alive(pid) or not promfixture.pid_is_prometheus(pid):
        return None
    try:
        url = (workdir / "url").read_text().strip()
    except OSError:
        return None
    return (pid, url) if is_ready(url) else None


def now_utc() -> datetime:
    """The product's "now": PROMDUCK_NOW (RFC 3339, the collector's testing aid) when set,
    so a test's demo covers the days its collector and extension call recent."""
    fixed = os.environ.get("PROMDUCK_NOW", "")
    if fixed:
        return datetime.fromisoformat(fixed.replace("Z", "+00:00")).astimezone(timezone.utc)
    return datetime.now(timezone.utc)


def cmd_start(args, workdir: Path) -> int:
    today = now_utc().date()
    start_day = today - timedelta(days=args.days)
    params = {
        # ``days`` complete days, then today in full: live queries at "now" find samples.
        "history": "complete days and today",
        "also": args.also,
        "start_day": start_day.isoformat(),
        "days": args.days,
        "proxies": args.proxies,
        "environments": args.environments,
        "seed": args.seed,
    }
    state = running(workdir)
    if state:
        pid, url = state
        try:
            old = json.loads((workdir / "history.json").read_text())
        except (OSError, ValueError):
            old = None
        if old != params:
            log(f"already running (pid {pid}) with other history {old}; "
                "run 'stop' then 'start' to refresh it")
        print(url)
        return 0

    stale = read_pid(workdir)
    if stale is not None and promfixture.pid_alive(stale) and promfixture.pid_is_prometheus(stale):
        log(f"pid {stale} is alive but not ready; stopping it")
        promfixture.kill_pid(stale)
    (workdir / "prometheus.pid").unlink(missing_ok=True)
    (workdir / "url").unlink(missing_ok=True)

    workdir.mkdir(parents=True, exist_ok=True)
    history_file = workdir / "history.om"
    params_file = workdir / "history.json"
    try:
        old = json.loads(params_file.read_text())
    except (OSError, ValueError):
        old = None
    if old != params or not history_file.is_file() or not (workdir / "expected.csv").is_file():
        log(f"generating {args.days} days of history from {start_day} for {len(args.proxies)} proxies")
        params_file.unlink(missing_ok=True)
        hist = promfixture.generate_history(
            history_file, start_day, args.days + 1, args.proxies, args.environments, seed=args.seed)
        with open(workdir / "expected.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["day", "apiproxy", "environment", "metric", "value"])
            for (day, proxy, env, metric), value in sorted(hist.expected.items()):
                if day < today:  # today is not complete: nothing collects it yet
                    w.writerow([day.isoformat(), proxy, env, metric, value])
        if args.also:
            first, n = args.also.split(":")
            promfixture.generate_history(workdir / "also.om", date.fromisoformat(first), int(n),
                                         args.proxies, args.environments, seed=args.seed)
        params_file.write_text(json.dumps(params, indent=1) + "\n")

    files = [history_file] + ([workdir / "also.om"] if args.also else [])
    # It scrapes itself too, so `up`, Prometheus's own metrics and their metadata
    # (`prom_metadata`) exist at "now" as on any real server.
    server = promfixture.PrometheusServer(files, workdir, port=args.port,
                                          scrape_targets=[f"127.0.0.1:{args.port}"])
    log("backfilling and starting Prometheus (log: %s)" % server.log_path)
    try:
        server.start(detach=True)
    except RuntimeError as e:
        log(f"error: {e}")
        return 1
    # Its first scrape of itself (within a second or two): `up` and the metadata are there
    # before the URL is handed out.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(server.url + "/api/v1/metadata?metric=prometheus_http_requests_total",
                                        timeout=5) as resp:
                if json.load(resp).get("data"):
                    break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    else:
        log("warning: Prometheus has not scraped itself yet (no `up`, no metadata for a while)")
    (workdir / "url").write_text(server.url + "\n")
    log(f"running, pid {server.proc.pid}")
    print(server.url)
    return 0


def cmd_stop(args, workdir: Path) -> int:
    pid = read_pid(workdir)
    if pid is not None and promfixture.pid_alive(pid) and promfixture.pid_is_prometheus(pid):
        promfixture.kill_pid(pid)
        log(f"stopped pid {pid}")
    else:
        log("not running")
    (workdir / "prometheus.pid").unlink(missing_ok=True)
    (workdir / "url").unlink(missing_ok=True)
    return 0


def cmd_status(args, workdir: Path) -> int:
    state = running(workdir)
    if state:
        pid, url = state
        print(f"running pid {pid} {url}")
        return 0
    print("not running")
    return 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=".cache/demo",
                   help="state directory (relative paths are relative to the repo root)")
    p.add_argument("--days", type=int, default=7, help="complete days of history (default 7)")
    p.add_argument("--proxies", default="api-proxy-1,api-proxy-2,api-proxy-3",
                   help="comma separated apiproxy label values")
    p.add_argument("--environments", default="prod,test",
                   help="comma separated environment label values")
    p.add_argument("--port", type=int, default=19090, help="port on 127.0.0.1 (default 19090)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--also", default="", metavar="YYYY-MM-DD:DAYS",
                   help="a second stretch of history, DAYS days from that day (tests: the README's 2024 days)")
    p.add_argument("command", choices=["start", "stop", "status"])
    args = p.parse_args(argv)
    args.proxies = [x for x in args.proxies.split(",") if x]
    args.environments = [x for x in args.environments.split(",") if x]
    if args.days < 1:
        p.error("--days must be >= 1")
    if not args.proxies or not args.environments:
        p.error("need at least one proxy and one environment")
    workdir = Path(args.workdir)
    if not workdir.is_absolute():
        workdir = REPO_ROOT / workdir
    return {"start": cmd_start, "stop": cmd_stop, "status": cmd_status}[args.command](args, workdir)


if __name__ == "__main__":
    sys.exit(main())
