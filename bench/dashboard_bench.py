#!/usr/bin/env python3
"""The Streamlit dashboard in a real browser at real scale, before and after, in
the same run (issue 15): the time from opening the page to the first chart
drawn and to the page settling, in Debian's Chromium driven by Playwright (the
browser and flags of tests/test_dashboard.py).

Data sets, written by promduck's writer or in its exact schema (bench/dashboard_data.py):
  (a) year: 200 proxies x 365 days (73,000 files, 438,000 rows), by
      core/examples/gen_partitions.rs, as bench/run.py's storage section;
  (b) wide: 10,000 proxies x 10 metrics x 1 day (10,000 files, 2.5 M rows);
  and (a) compacted by the extension's prom_compact into one file per month
  (12 files), when the build has it: the same charts, from 12 files.

Dashboards: "before" is examples/streamlit/dashboard.py at --before (the
seed's dashboard, `git show REV:examples/streamlit/dashboard.py` into a temp
file), "after" the working tree's. Each measurement starts a fresh Streamlit
server (nothing cached) and a fresh browser profile, then opens the page:
  first chart  a chart has drawn its data (performance.now() of the first DOM
               mutation after which one has): a Plotly trace (the before
               dashboard) or a Vega mark of data, a line, bar or point, in the
               SVG of a Vega-Lite chart (the after dashboard);
  settled      the script run has finished and no DOM mutation happened for
               --quiet seconds: the time of the last mutation.
A page not settled --timeout seconds after it was opened (180 by default) is
reported as "> 180 s" (and so is its first chart, if none was drawn by then). Also
recorded: charts, traces and points on the page, the bytes the browser
received over Streamlit's websocket, and the CPU time the Streamlit server and
Chromium's processes spent from opening to settled (/proc; on a shared machine
these vary far less than the wall-clock times). "after, full year" opens the after
dashboard on (a) with ?start=2024-01-01&end=2024-12-30 (its default is the
last 30 days; the before dashboard always opens on every day). Each page is
opened three times on the same server: cold, again in a new browser (what the
server cached), again in the first browser (what the browser cached too).
The fixed cost of Streamlit and Chromium is measured on an empty data folder.

    .venv/bin/python bench/dashboard_bench.py [--only year|compacted|wide] [--repeat N] [--workdir DIR]
                                              [--json FILE] [--screenshots DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

import dashboard_data  # noqa: E402

GEN = REPO / "target" / "release" / "examples" / "gen_partitions"
EXTENSION = Path(os.environ.get("PROMDUCK_EXTENSION") or REPO / "build" / "promduck.duckdb_extension")
DASHBOARD = REPO / "examples" / "streamlit" / "dashboard.py"
CHROMIUM = Path(os.environ.get("PROMDUCK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The seed's dashboard: 6903154 is the last commit to change examples/streamlit/dashboard.py
# before issue 15's rework (14db95d); `git log -- examples/streamlit/` lists both.
BEFORE_REV = "6903154"

# Installed before any page script: timestamps (performance.now(), ms since the
# navigation started) of the first drawn chart and of the last DOM mutation.
OBSERVER_JS = """
window.__bench = {first: null, last: 0};
new MutationObserver(() => {
  const now = performance.now();
  window.__bench.last = now;
  if (window.__bench.first === null &&
      document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot .main-svg .trace, %s'))
    window.__bench.first = now;
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
""" % dashboard_data.VEGA_DRAWN_SELECTOR
STATE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return {state: app ? app.getAttribute('data-test-script-state') : null,
          connected: app ? app.getAttribute('data-test-connection-state') : null,
          running: !!document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]'),
          first: window.__bench.first, last: window.__bench.last, now: performance.now(),
          exception: document.querySelectorAll('[data-testid="stException"]').length};
}"""
# Once settled: the charts drawn. Plotly's (the before dashboard) from its traces here, the
# Vega-Lite charts (after) by dashboard_data.vega_charts (their specs and datasets).
PLOTLY_JS = """() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot'))
  .map(gd => (gd._fullData || []).map(t => [t.name, Array.from(t.x || [], String), Array.from(t.y || [], Number)]))"""


def drawn_charts(page) -> dict:
    """Charts, traces and points on the page, and a digest of their contents."""
    plotly = page.evaluate(PLOTLY_JS)
    vega = [c for c in dashboard_data.vega_charts(page) if c["traces"]]
    traces = [t for c in plotly for t in c] + [[t["name"], t["x"], t["y"]] for c in vega for t in c["traces"]]
    return {"charts": len(plotly) + len(vega), "traces": len(traces), "points": sum(len(t[1]) for t in traces),
            "digest": json.dumps(plotly) + "".join(c["digest"] for c in vega)}


def log(msg):
    print(msg, flush=True)


def make_year(work: Path) -> Path:
    data = work / "year"
    if not (data / "2024-12-30").is_dir():
        if not GEN.exists():
            raise SystemExit(f"{GEN} is missing: `make bench` builds it "
                             "(cargo build --release -p promduck-core --example gen_partitions)")
        shutil.rmtree(data, ignore_errors=True)
        t = time.perf_counter()
        subprocess.run([str(GEN), str(data), "365", "200", "2024-01-01"], check=True, capture_output=True)
        log(f"  (a) 365 days x 200 proxies = 73,000 partitions by gen_partitions in {time.perf_counter() - t:.1f} s")
    return data


def make_wide(work: Path, year: Path) -> Path:
    data = work / "wide"
    if not (data / "2024-03-01").is_dir() or sum(1 for _ in (data / "2024-03-01").iterdir()) != 10_000:
        shutil.rmtree(data, ignore_errors=True)
        t = time.perf_counter()
        reference = year / "2024-01-01" / "api-proxy-0.parquet"   # written by promduck's writer
        dashboard_data.write_wide(data, reference)
        log(f"  (b) 10,000 proxies x 10 metrics x 1 day = 10,000 partitions in {time.perf_counter() - t:.1f} s")
    return data


def make_compacted(work: Path, year: Path) -> Path | None:
    """(a) compacted by prom_compact into one file per month (12 files), from hard links of
    (a)'s files; None when the extension has no prom_compact."""
    import duckdb

    root = work / "year-compacted"
    data = root / "data"
    if (data / "2024-12" / "2024-12.parquet").is_file():
        return data
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.load_extension(str(EXTENSION))
    if not con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = 'prom_compact'").fetchone()[0]:
        return None
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # hard links of (a)'s files: compaction removes only these names, (a) keeps its own
    subprocess.run(["cp", "-al", str(year.resolve()), str(data)], check=True)
    assert data.is_dir() and not data.is_symlink() and not (data / "2024-01-01").is_symlink()
    cfg = root / "config.yaml"
    cfg.write_text(json.dumps({"apiProxies": ["api-proxy-0"], "storage": {"outputDir": str(data)},
                               "prometheus": {"url": "http://127.0.0.1:9", "metrics": [
                                   {"name": "request_count", "query": 'x{apiproxy="%s"}'}]}}))
    t = time.perf_counter()
    rows = con.execute("SELECT month, status, error FROM prom_compact(config := ?, remove_daily_after := '0s')",
                       [str(cfg)]).fetchall()
    bad = [r for r in rows if r[1] != "compacted"]
    if len(rows) != 12 or bad:
        raise SystemExit(f"prom_compact: {bad or rows}")
    log(f"  (a) compacted by prom_compact into 12 month files in {time.perf_counter() - t:.1f} s")
    return data


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run script`` on 127.0.0.1 over ``data``, as tests/test_dashboard.py starts it."""

    def __init__(self, script: Path, data: Path, work: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PROMDUCK_DATA_DIR=str(data), PROMDUCK_EXTENSION=str(EXTENSION),
                   STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
        self.log_path = work / f"streamlit-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.address", "127.0.0.1",
             "--server.port", str(self.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"streamlit exited:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"streamlit not healthy after 60 s:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def cpu_seconds(pids) -> float:
    """User + system CPU time of these processes so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def process_tree(marker: str) -> list:
    """The processes whose command line holds ``marker`` (Chromium's profile folder) and all
    their descendants."""
    parent, roots = {}, []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                roots.append(int(d.name))
        except (OSError, IndexError, ValueError):
            pass
    tree = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sorted(tree)


def measure(pw, url: str, work: Path, timeout: float, quiet: float, screenshot: Path | None = None,
            profile: Path | None = None, server_pid: int | None = None) -> dict:
    """Opens ``url`` in Chromium and waits for the page to settle: a fresh profile, or
    ``profile`` (kept: what that browser cached stays). Also the CPU time the Streamlit
    server and the browser's processes spent meanwhile (less sensitive to a busy machine
    than the wall-clock times)."""
    keep = profile is not None
    load = os.getloadavg()[0]  # the machine's load as the page opens (it is shared)
    profile = profile or Path(tempfile.mkdtemp(prefix="chromium-", dir=work))
    context = pw.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000})
    received = [0]
    try:
        page = context.pages[0] if context.pages else context.new_page()
        page.add_init_script(OBSERVER_JS)
        page.on("websocket", lambda ws: ws.on(
            "framereceived", lambda payload: received.__setitem__(0, received[0] + len(payload))))
        browser = process_tree(str(profile))
        cpu0 = (cpu_seconds([server_pid] if server_pid else []), cpu_seconds(browser))
        # The cap counts from opening the page (the page's clock: ms since navigation started);
        # a page whose last change came after it has not settled within the cap.
        deadline = time.monotonic() + timeout + quiet
        page.goto(url, timeout=int(timeout * 1000))
        state = None
        while time.monotonic() < deadline:
            time.sleep(0.25)
            state = page.evaluate(STATE_JS)
            idle = state["state"] == "notRunning" and not state["running"]
            if idle and state["now"] - state["last"] >= quiet * 1000:
                break
            if state["now"] > (timeout + quiet) * 1000:
                break
        else:
            state = page.evaluate(STATE_JS)
        if not (state["state"] == "notRunning" and not state["running"]
                and state["now"] - state["last"] >= quiet * 1000 and state["last"] <= timeout * 1000):
            state["settled_timeout"] = True
        if state["first"] is not None and state["first"] > timeout * 1000:
            state["first"] = None  # drawn after the cap: "> cap" too
        browser = process_tree(str(profile))  # renderers started meanwhile
        cpu = (cpu_seconds([server_pid] if server_pid else []) - cpu0[0], cpu_seconds(browser) - cpu0[1])
        state.update(drawn_charts(page))
        if screenshot is not None and not state.get("settled_timeout"):
            page.screenshot(path=str(screenshot), full_page=True)
    finally:
        context.close()
        if not keep:
            shutil.rmtree(profile, ignore_errors=True)
    timed_out = bool(state.get("settled_timeout"))
    import hashlib
    return {
        "first_chart_s": None if state["first"] is None else round(state["first"] / 1000, 2),
        "settled_s": None if timed_out else round(state["last"] / 1000, 2),
        "timed_out_after_s": timeout if timed_out else None,
        "charts": state["charts"], "traces": state["traces"], "points": state["points"],
        "websocket_mib": round(received[0] / 2**20, 2), "exceptions": state["exception"],
        "charts_sha1": hashlib.sha1(state["digest"].encode()).hexdigest()[:12],
        "server_cpu_s": round(cpu[0], 2), "browser_cpu_s": round(cpu[1], 2),
        "load_1min": round(load, 2),
    }


def fmt(r: dict, key: str) -> str:
    if r["timed_out_after_s"] and (key == "settled_s" or r[key] is None):
        return f"> {r['timed_out_after_s']:.0f} s"
    v = r[key]
    return "–" if v is None else f"{v:.2f} s"


def run_case(pw, label: str, script: Path, data: Path, work: Path, args, query: str = "",
             screenshot: Path | None = None, repeat: int = 1) -> dict:
    """``repeat`` times: a fresh server and the page opened three times: cold (a fresh server
    and browser: nothing cached), again in a new browser (what the server cached), and again
    in the first browser (what the browser cached too: the chart library's script). Returns every run
    and the medians."""
    runs = {"cold": [], "again": [], "same_browser": []}
    for i in range(repeat):
        server = Server(script, data, work)
        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=work))
        try:
            cold = measure(pw, server.url + "/" + query, work, args.timeout, args.quiet,
                           screenshot if i == 0 else None, profile=profile, server_pid=server.proc.pid)
            runs["cold"].append(cold)
            log(f"  {label if i == 0 else '':<18} {line(cold)}   load {os.getloadavg()[0]:.1f}")
            if not cold["timed_out_after_s"]:
                again = measure(pw, server.url + "/" + query, work, args.timeout, args.quiet,
                                server_pid=server.proc.pid)
                runs["again"].append(again)
                log(f"  {'  new browser':<18} {line(again)}")
                same = measure(pw, server.url + "/" + query, work, args.timeout, args.quiet, profile=profile,
                               server_pid=server.proc.pid)
                runs["same_browser"].append(same)
                log(f"  {'  same browser':<18} {line(same)}")
        finally:
            server.stop()
            shutil.rmtree(profile, ignore_errors=True)
    if repeat > 1:
        for kind in ("cold", "again", "same_browser"):
            runs[kind + "_median"] = {k: median([r[k] for r in runs[kind]])
                                      for k in ("first_chart_s", "settled_s", "server_cpu_s", "browser_cpu_s")}
        log(f"  {'  median':<18} " + "; ".join(
            f"{kind}: first chart {runs[kind + '_median']['first_chart_s']} s, settled "
            f"{runs[kind + '_median']['settled_s']} s" for kind in ("cold", "again", "same_browser")))
    return runs


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else round((values[mid - 1] + values[mid]) / 2, 2)


def line(r: dict) -> str:
    return (f"first chart {fmt(r, 'first_chart_s'):>9}   settled {fmt(r, 'settled_s'):>9}   "
            f"{r['charts']} charts, {r['traces']:,} traces, {r['points']:,} points, "
            f"{r['websocket_mib']:.2f} MiB to the browser, CPU: server {r['server_cpu_s']:.1f} s, "
            f"browser {r['browser_cpu_s']:.1f} s" + (f", {r['exceptions']} exceptions" if r["exceptions"] else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["year", "compacted", "wide"], action="append")
    ap.add_argument("--workdir", help="keep the data sets here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--before", default=BEFORE_REV, help="git revision of the 'before' dashboard")
    ap.add_argument("--timeout", type=float, default=180, help="seconds to wait for a page to settle")
    ap.add_argument("--quiet", type=float, default=2.0, help="seconds without a DOM change that mean settled")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each 'after' case (the median is reported; "
                                                          "'before' runs once)")
    ap.add_argument("--skip-before", action="store_true", help="measure the after dashboard only")
    ap.add_argument("--screenshots", help="save the after pages' screenshots in this folder")
    args = ap.parse_args()
    for f in (EXTENSION, CHROMIUM):
        if not f.exists():
            raise SystemExit(f"{f} is missing (make build; make browser)")
    if not args.skip_before:
        try:
            import plotly  # noqa: F401
        except ImportError:
            raise SystemExit("the before dashboard (git 6903154) draws with Plotly: pip install -r "
                             "tests/requirements-dashboard.txt, or --skip-before") from None
    from playwright.sync_api import sync_playwright

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="promduck-dashboard-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    shots = Path(args.screenshots) if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    before = work / "dashboard_before.py"
    before.write_bytes(subprocess.run(["git", "-C", str(REPO), "show", f"{args.before}:examples/streamlit/dashboard.py"],
                                      check=True, capture_output=True).stdout)
    results = {"before_rev": args.before, "cores": os.cpu_count(), "load_before": os.getloadavg()[0]}
    log("\n## dashboard in Chromium: opening the page -> first chart, settled")
    try:
        year = make_year(work)
        cases = []
        if not args.only or "year" in args.only:
            cases.append(("year", year, "(a) 200 proxies x 365 days", "?start=2024-01-01&end=2024-12-30"))
        if not args.only or "compacted" in args.only:
            compacted = make_compacted(work, year)
            if compacted:
                cases.append(("compacted", compacted, "(a) compacted: the same year in 12 month files (prom_compact)",
                              "?start=2024-01-01&end=2024-12-30"))
        if not args.only or "wide" in args.only:
            cases.append(("wide", make_wide(work, year), "(b) 10,000 proxies x 10 metrics x 1 day", None))
        with sync_playwright() as pw:
            empty = work / "empty"
            empty.mkdir(exist_ok=True)
            log(" Streamlit and Chromium alone (an empty data directory: the page's fixed cost)")
            results["empty"] = run_case(pw, "after", DASHBOARD, empty, work, args, repeat=args.repeat)
            for name, data, title, full in cases:
                log(f" {title}")
                out = results[name] = {}
                if not args.skip_before and name != "compacted":
                    out["before"] = run_case(pw, "before", before, data, work, args)
                out["after"] = run_case(pw, "after", DASHBOARD, data, work, args, repeat=args.repeat,
                                        screenshot=shots / f"dashboard-{name}.png" if shots else None)
                if full:
                    out["after_full_year"] = run_case(pw, "after, full year", DASHBOARD, data, work, args, full,
                                                      repeat=args.repeat,
                                                      screenshot=shots / f"dashboard-{name}-full.png" if shots else None)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if "year" in results and "compacted" in results:
        same = {r["charts_sha1"] for k in ("after", "after_full_year") for c in ("year", "compacted")
                for r in results[c][k]["cold"]}
        results["compacted_same_charts"] = len(same) == 2
        log(f"  the compacted year draws exactly the daily files' charts: {len(same) == 2}")
    log("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
