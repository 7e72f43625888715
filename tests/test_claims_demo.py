"""`make demo` and `make demo-stop`, the README's quick start, run as a user runs them
(issue 17): in a scratch checkout (the Makefile and scripts/ copied, build/, .venv/,
config/, sql/ and tests/ linked) with its own $HOME, so that the demo's ./data, its
Prometheus state in .cache/demo and the extension it INSTALLs for the CLI stay out of
the repository and the user's home. `make test` has already made the demo target's
prerequisites (build, venv, prometheus), so make is told not to remake them (-o).

The numbers the demo prints are compared with the history its Prometheus was filled
with (.cache/demo/expected.csv, written by the generator).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import pytest

from helpers import REPO_ROOT, partition_files
from promfixture import free_port, pid_alive, port_is_free

DEMO_PORT = 19090  # config/demo.yaml's; the test runs the demo on another (DEMO_PORT=)
PROXIES = ["api-proxy-1", "api-proxy-2", "api-proxy-3"]


def box_rows(text: str) -> list[list[str]]:
    """The data rows of DuckDB's box-rendered tables in ``text`` (cells stripped)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows.append(cells)
    return rows


def section(out: str, title: str) -> str:
    """The output between the `== <title>` line and the next `== ` line."""
    start = out.index("\n== " + title)
    end = out.find("\n== ", start + 1)
    return out[start:end if end >= 0 else len(out)]


def test_make_demo_collects_a_week_and_answers_exactly_then_demo_stop_stops_it(tmp_path):
    port = free_port()  # not 19090: a developer's own demo may be running there
    work = tmp_path / "checkout"
    work.mkdir()
    for name in ("build", ".venv", "config", "sql", "tests"):
        (work / name).symlink_to(REPO_ROOT / name)
    shutil.copytree(REPO_ROOT / "scripts", work / "scripts")
    shutil.copy(REPO_ROOT / "Makefile", work / "Makefile")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMDUCK_")}
    env["HOME"] = str(home)
    make = ["make", "--no-print-directory", "-o", "build", "-o", "build/.built", "-o", "venv", "-o", "prometheus"]
    pid_file = work / ".cache" / "demo" / "prometheus.pid"
    pid = None
    before = datetime.now(timezone.utc).date()
    try:
        r = subprocess.run([*make, "demo", f"DEMO_PORT={port}"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        after = datetime.now(timezone.utc).date()
        if pid_file.exists():
            pid = int(pid_file.read_text())
        out = r.stdout
        assert r.returncode == 0, f"make demo: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert pid is not None and pid_alive(pid), "the demo Prometheus should keep running after make demo"
    finally:
        stop = subprocess.run([*make, "demo-stop"], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert not pid_alive(pid), "make demo-stop must stop the demo Prometheus"
    assert port_is_free(port)

    # A week of history: the 7 days before today, three proxies. "Today" is the demo's (read
    # once, by its generator): the day the run started or, across a midnight, ended.
    expected = defaultdict(float)  # (day, proxy, metric) -> sum over environments
    with open(work / ".cache" / "demo" / "expected.csv", newline="") as f:
        for row in csv.DictReader(f):
            expected[(date.fromisoformat(row["day"]), row["apiproxy"], row["metric"])] += float(row["value"])
    days = sorted({k[0] for k in expected})
    assert days[-1] + timedelta(days=1) in (before, after), (days, before, after)
    assert days == [days[-1] - timedelta(days=i) for i in range(6, -1, -1)], days
    assert {k[1] for k in expected} == set(PROXIES)
    assert f"== collecting {days[0]} .. {days[-1]} into ./data" in out
    assert partition_files(work / "data") == {f"{d}/{p}.parquet" for d in days for p in PROXIES}

    # The seed's aggregation by proxy for the last day, highest first.
    agg = box_rows(section(out, "Aggregation by API proxy"))
    want = sorted(((p, expected[(days[-1], p, "request_count")]) for p in PROXIES), key=lambda x: -x[1])
    assert agg[0] == ["api_proxy", "total_requests"]
    assert [(r[0], float(r[1])) for r in agg[2:]] == want

    # The seed's time series: every day and proxy.
    ts = box_rows(section(out, "Time series analysis"))
    assert ts[0] == ["date", "api_proxy", "daily_requests"]
    assert [(r[0], r[1], float(r[2])) for r in ts[2:]] == [
        (d.isoformat(), p, expected[(d, p, "request_count")]) for d in days for p in PROXIES]

    # The seed's basic query: the last day of api-proxy-1, 20 lines shown.
    basic = section(out, "Basic query")
    assert f"with the day {days[-1]}" in basic and "api-proxy-1" in basic

    # The extension, INSTALLed for the CLI into this $HOME and LOADed by name.
    installed = list(home.glob(".duckdb/extensions/*/*/promduck.duckdb_extension"))
    assert installed, sorted(str(p) for p in home.rglob("*"))
    week = box_rows(section(out, "prom_metrics through the extension"))
    assert week[0] == ["api_proxy", "requests"]
    assert [(r[0], float(r[1])) for r in week[2:]] == [
        (p, sum(expected[(d, p, "request_count")] for d in days)) for p in PROXIES]
    assert f"Prometheus keeps running at http://127.0.0.1:{port}" in out, out[-1000:]
    # The collector ran on a copy of config/demo.yaml that names the port.
    assert f"http://127.0.0.1:{port}" in (work / ".cache" / "demo" / "demo.yaml").read_text()


def test_demo_dashboard_and_notebook_rebuild_only_when_a_source_changed():
    """`make demo` (and the dashboard, the notebook) build through build/.built, whose
    prerequisites are the workspace's sources: current, no cargo runs; a source newer, it does."""
    r = subprocess.run(["make", "--no-print-directory", "build/.built"], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    for target in ("demo", "dashboard", "notebook"):
        dry = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert "cargo" not in dry.stdout and "make build" not in dry.stdout.replace("$(MAKE)", "make"), dry.stdout
        # -W: as if this source had just been edited
        dry = subprocess.run(["make", "--no-print-directory", "-n", "-W", "core/src/lib.rs", target], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60)
        assert re.search(r"^make .*build$", dry.stdout, re.M), dry.stdout
