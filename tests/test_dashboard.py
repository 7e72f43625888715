"""examples/streamlit/dashboard.py in a real browser: `streamlit run` on
127.0.0.1 against collected test data, driven through Debian's Chromium
(/usr/bin/chromium) with Playwright (no browser is downloaded).

The numbers are read from the page (the Vega-Lite charts' specs and datasets as
Streamlit sent them, with the pixels Vega drew of each trace; the aggregates
table; the downloaded CSV) and compared with the generator's history. Then at real scale
(issue 15): a year of 200 proxies (73,000 files) and a day of 10,000 proxies x
10 metrics (2.5 M rows), written by bench/dashboard_data.py in the collector's
exact schema, with the top-10 and "other" traces computed from the
generator's closed forms, and a weekly view whose first and last weeks are
partial (said and shaded). Screenshots go to tests/output/ (dashboard.png,
dashboard-aggregates.png, dashboard-year.png, dashboard-year-aggregates.png,
dashboard-year-weekly.png, dashboard-wide.png). Nothing here is timed:
bench/dashboard_bench.py measures.

Needs: apt-get install chromium; pip install -r tests/requirements-dashboard.txt.
Missing either is a failure with a message, never a skip.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from fixtures_data import COUNTERS, LATENCY, collected_data, daily_total, expected_rows, free_port, latency_points
from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))  # dashboard_data: the data sets at scale, reading the charts

import dashboard_data as dd  # noqa: E402

DASHBOARD = REPO_ROOT / "examples" / "streamlit" / "dashboard.py"
OUTPUT = REPO_ROOT / "tests" / "output"
CHROMIUM = Path(os.environ.get("PROMDUCK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WEIRD = 'we"ird/proxy'
TIMEOUT_MS = 60_000  # a hang guard only: every wait is for the page to reach a state
METRICS = sorted((*COUNTERS, LATENCY))

CHART = '[data-testid="stVegaLiteChart"]'
TABLES_JS = """() => Array.from(document.querySelectorAll('[data-testid="stTable"] table'))
  .map(t => Array.from(t.querySelectorAll('tr')).map(tr => Array.from(tr.children, c => c.innerText.trim())))"""


def require_tools():
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's package "
                    "(apt-get install -y chromium; `make test` does) or set PROMDUCK_CHROMIUM")
    for mod in ("streamlit", "pyarrow", "pandas", "playwright"):
        try:
            __import__(mod)
        except ImportError:
            pytest.fail(f"Python package {mod!r} missing: pip install -r tests/requirements-dashboard.txt")


@pytest.fixture(scope="module")
def data(prometheus, history, tmp_path_factory) -> Path:
    return collected_data(prometheus, history, tmp_path_factory)


@contextlib.contextmanager
def streamlit_server(data_dir: Path, work: Path):
    """``streamlit run`` of the dashboard on 127.0.0.1 over ``data_dir``: yields (url, log)."""
    require_tools()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMDUCK_EXTENSION"}
    env.update(PROMDUCK_DATA_DIR=str(data_dir), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    log = open(work / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(DASHBOARD), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{(work / 'streamlit.log').read_text()}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after 30 s:\n{(work / 'streamlit.log').read_text()}")
            time.sleep(0.1)
        yield url, work / "streamlit.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def playwright():
    """One Playwright driver for the module (the sync API allows one at a time)."""
    from playwright.sync_api import sync_playwright

    require_tools()
    with sync_playwright() as pw:
        yield pw


@contextlib.contextmanager
def browser_page(pw, url: str, profile: Path):
    """A page of Debian's Chromium (headless, a profile of its own) opened on ``url``."""
    context = pw.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    try:
        pg = context.pages[0] if context.pages else context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(url)
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="module")
def server(data, tmp_path_factory):
    with streamlit_server(data, tmp_path_factory.mktemp("streamlit")) as s:
        yield s


@pytest.fixture(scope="module")
def page(playwright, server, tmp_path_factory):
    url, _ = server
    with browser_page(playwright, url, tmp_path_factory.mktemp("chromium-profile")) as pg:
        yield pg


# ---------------------------------------------------------------------------
# reading the page


def charts(pg) -> dict:
    """{title: traces} of the page's charts (dashboard_data.vega_charts: each trace's name,
    type "line" or "bar", colour, axis "y" or "y2" (right), x and y, from the Vega-Lite
    spec and datasets Streamlit sent)."""
    return {c["title"]: c["traces"] for c in dd.vega_charts(pg)}


def wait_for(pg, what, check, timeout=TIMEOUT_MS / 1000):
    """Polls ``check()`` (page state read in Python) until it is truthy; an
    exception (e.g. a failed assert while Streamlit is still rerunning) counts
    as not yet, and the last one is reported on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # page in the middle of a rerun
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def settled(pg, what, check):
    """Polls until ``check()`` passes (returns without raising)."""
    def ok():
        check()
        return True
    wait_for(pg, what, ok)


def no_exception(pg):
    assert pg.locator('[data-testid="stException"]').count() == 0, \
        pg.locator('[data-testid="stException"]').first.inner_text()


def ts_iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


COMBINERS = {"sum": sum, "average": lambda vs: sum(vs) / len(vs), "maximum": max, "minimum": min}


def combiner(combine: str, metric: str):
    """The sidebar's choice; "auto" (its default): sum for the daily counters, maximum for
    latency, sampled hourly within the day."""
    if combine == "auto":
        combine = "maximum" if metric == LATENCY else "sum"
    return COMBINERS[combine]


def expected_series(history, proxies, split_env=False, combine="auto"):
    """{metric: {trace name: [(x, y), ...]}} for the time series charts: one line per
    proxy (or proxy and environment), the environments' values at an instant combined
    by ``combine`` (the sidebar's "Combine the other series by")."""
    out = {}
    for m in METRICS:
        series = {}
        for p in sorted(proxies):
            for env in history.environments:
                name = f"{p} · {env}" if split_env else p
                if m == LATENCY:
                    pts = [(ts, v) for d in history.days_list for ts, v in latency_points(history, d, p, env)]
                else:
                    # Daily values are plotted on their day (D 00:00), not at their sample time.
                    pts = [(int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()),
                            history.expected[(d, p, env, m)]) for d in history.days_list]
                acc = series.setdefault(name, {})
                for ts, v in pts:
                    acc.setdefault(ts, []).append(v)
        out[m] = {name: [(ts_iso(ts), combiner(combine, m)(vs)) for ts, vs in sorted(acc.items())]
                  for name, acc in series.items()}
    return out


def assert_time_series(got: dict, want: dict):
    for m in METRICS:
        traces = got[m]
        assert [t["name"] for t in traces] == list(want[m]), m
        for t in traces:
            assert t["type"] == "line"
            xs = [x[:19] for x in t["x"]]  # e.g. 2024-03-02T00:00:00
            got_points = list(zip(xs, t["y"]))
            want_points = want[m][t["name"]]
            assert [x for x, _ in got_points] == [x for x, _ in want_points], (m, t["name"])
            for (x, y), (_, w) in zip(got_points, want_points):
                # Sums, maxima and minima of the generator's integers are exact; an average
                # may differ from ours in the last bit.
                assert y == w or abs(y - w) <= 1e-9 * abs(w), (m, t["name"], x, y, w)


def num(cell: str) -> float:
    return float(cell.replace(",", ""))


def assert_aggregates(pg, history, proxies, days):
    tables = pg.evaluate(TABLES_JS)
    assert len(tables) == len(METRICS)
    for m, rows in zip(METRICS, tables):
        assert rows[0] == ["API proxy", "days", "total", "daily average", "daily max", "busiest day", "rows",
                           "value average", "value max"], rows[0]
        body = {r[0]: r[1:] for r in rows[1:]}
        assert sorted(body) == sorted(proxies)
        for p in proxies:
            daily = {d: daily_total(history, d, p, m) if m != LATENCY else
                     sum(v for env in history.environments for _, v in latency_points(history, d, p, env))
                     for d in days}
            values = ([history.expected[(d, p, env, m)] for d in days for env in history.environments]
                      if m != LATENCY else
                      [v for d in days for env in history.environments for _, v in latency_points(history, d, p, env)])
            busiest = max(daily.values())
            cells = body[p]
            assert int(cells[0]) == len(days)
            assert num(cells[1]) == sum(daily.values())
            assert abs(num(cells[2]) - sum(daily.values()) / len(days)) <= 0.005 + 1e-9
            assert num(cells[3]) == busiest
            assert date.fromisoformat(cells[4]) in [d for d, v in daily.items() if v == busiest]
            assert int(cells[5]) == len(values)
            assert abs(num(cells[6]) - sum(values) / len(values)) <= 0.005 + 1e-9
            assert num(cells[7]) == max(values)


# ---------------------------------------------------------------------------
# the tests run in this order on one page


def test_time_series_show_every_proxy_with_exact_values(page, history):
    want = expected_series(history, history.proxies)
    settled(page, "the three time series charts", lambda: assert_time_series(charts(page), want))
    no_exception(page)
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
    n = len(expected_rows(history))
    assert f"{history.days_list[0]} to {history.days_list[-1]}" in caption and f"{n:,} rows" in caption
    # the date range spans the days present
    shown = "".join(page.locator('[data-testid="stDateInputField"]').first.inner_text().split())
    assert shown.startswith(f"{history.days_list[0]}") and shown.endswith(f"{history.days_list[-1]}"), shown



def test_no_deploy_button_and_no_developer_menu(page):
    """examples/streamlit/.streamlit/config.toml (client.toolbarMode = "minimal"): the page, loaded
    on 127.0.0.1 where Streamlit would show them, has neither Streamlit's "Deploy" button nor its
    menu (rerun, clear cache, settings)."""
    page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.wait_for()
    page.locator('[data-testid="stHeader"]').wait_for(state="attached")
    assert page.locator('[data-testid="stAppDeployButton"]').count() == 0
    assert page.locator('[data-testid="stMainMenu"]').count() == 0
    assert page.get_by_role("button", name="Deploy").count() == 0

def test_aggregates_bars_and_table(page, history):
    page.get_by_role("tab", name="Aggregates by API proxy").click()

    def check_bars():
        titles = {k.split(":")[0]: k.split(": ")[1] for k in charts(page) if k.endswith("per API proxy")}
        # auto: the counters' daily totals, latency's daily maximum (a sum of a gauge means nothing)
        assert titles == {m: "daily maximum per API proxy" if m == LATENCY else "daily total per API proxy"
                          for m in METRICS}, titles
        bars = {k.split(":")[0]: v for k, v in charts(page).items() if k.endswith("per API proxy")}
        for m in COUNTERS:
            assert [t["name"] for t in bars[m]] == sorted(history.proxies)
            for t in bars[m]:
                assert t["type"] == "bar"
                assert list(zip(t["x"], t["y"])) == [(d.isoformat(), daily_total(history, d, t["name"], m))
                                                     for d in history.days_list]
        assert [t["name"] for t in bars[LATENCY]] == sorted(history.proxies)
        for t in bars[LATENCY]:
            assert list(zip(t["x"], t["y"])) == [
                (d.isoformat(), max(v for e in history.environments for _, v in latency_points(history, d, t["name"], e)))
                for d in history.days_list]

    settled(page, "the bar charts", check_bars)
    settled(page, "the aggregates tables",
            lambda: assert_aggregates(page, history, history.proxies, history.days_list))
    no_exception(page)


def rgb(color: str) -> tuple:
    """A colour ('#636efa' or 'rgb(99, 110, 250)') as an (r, g, b) tuple."""
    if color.startswith("#"):
        return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(int(float(x)) for x in color[color.index("(") + 1:color.index(")")].split(",")[:3])


def assert_charts_drawn(page):
    """Every chart on the current tab is really drawn: the pixels of its screenshot hold
    each of its traces' colours (a line or bars of that trace), not just an empty frame."""
    from PIL import Image

    plots = page.locator(CHART)
    infos = dd.vega_charts(page)
    visible = [i for i in range(plots.count()) if plots.nth(i).is_visible()]
    assert visible, "no chart visible"
    for i in visible:
        img = Image.open(io.BytesIO(plots.nth(i).screenshot())).convert("RGB")
        counts = {color: n for n, color in img.getcolors(img.width * img.height)}
        title = infos[i]["title"]
        for t in infos[i]["traces"]:
            n = counts.get(rgb(t["color"]), 0)
            assert n >= 100, f"chart {title!r}: trace {t['name']!r} ({t['color']}) has {n} pixels of its colour"


def screenshot(page, name):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 1900})
    # Vega redraws for the new viewport: until every chart is drawn (no fixed pause).
    settled(page, "the charts drawn at 1400 x 1900", lambda: assert_charts_drawn(page))
    page.screenshot(path=str(OUTPUT / name))
    page.set_viewport_size({"width": 1400, "height": 1000})
    from PIL import Image

    with Image.open(OUTPUT / name) as img:
        assert img.format == "PNG" and img.size == (1400, 1900), (img.format, img.size)


def test_screenshots(page, history):
    screenshot(page, "dashboard-aggregates.png")
    page.get_by_role("tab", name="Time series").click()
    settled(page, "the time series charts", lambda: assert_time_series(charts(page), expected_series(
        history, history.proxies)))
    screenshot(page, "dashboard.png")
    no_exception(page)


def test_other_ways_of_combining_environments(page, history):
    """Latency is a gauge: its lines per proxy combine the environments by maximum,
    average or minimum exactly as chosen (and counters too)."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Combine the other series by")
    for combine in ("maximum", "average", "minimum", "sum", "auto"):
        box.click()
        page.get_by_role("option", name=combine, exact=True).click()
        want = expected_series(history, history.proxies, combine=combine)
        settled(page, f"lines combined by {combine}", lambda: assert_time_series(charts(page), want))
        no_exception(page)


def pick_proxies(page, names, typed=None):
    """Picks ``names`` in the sidebar's "API proxies" (none picked means all): ``typed`` (else
    the name) typed into its search, then the option clicked; each pick reruns the page."""
    box = page.locator('[data-testid="stMultiSelect"]').filter(has_text="API proxies")
    for name in names:
        box.locator("input").click()
        box.locator("input").fill(typed or name)
        page.get_by_role("option", name=name, exact=True).click()
        wait_for(page, f"{name} picked", lambda: box.get_by_text(name, exact=True).count() == 1)
    page.keyboard.press("Escape")


def test_selecting_proxies_changes_charts_and_table(page, history):
    """Every proxy is drawn while none is picked; picking three leaves api-proxy-2 out."""
    left = [p for p in history.proxies if p != "api-proxy-2"]
    pick_proxies(page, left)
    want = expected_series(history, left)
    settled(page, "charts without api-proxy-2", lambda: assert_time_series(charts(page), want))
    # Only the open tab is computed and sent to the browser.
    page.get_by_role("tab", name="Aggregates by API proxy").click()
    settled(page, "aggregates without api-proxy-2",
            lambda: assert_aggregates(page, history, left, history.days_list))
    page.get_by_role("tab", name="Time series").click()
    no_exception(page)


def test_lines_per_proxy_and_environment(page, history):
    left = [p for p in history.proxies if p != "api-proxy-2"]
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Lines per").click()
    page.get_by_role("option", name="API proxy and environment").click()
    want = expected_series(history, left, split_env=True)
    settled(page, "one line per proxy and environment", lambda: assert_time_series(charts(page), want))
    no_exception(page)


def test_raw_data_paging_and_csv_download(page, history, tmp_path):
    left = [p for p in history.proxies if p != "api-proxy-2"]
    page.get_by_role("tab", name="Raw data").click()
    n = len(expected_rows(history, proxies=left))
    wait_for(page, "the first page", lambda: page.get_by_text(f"Rows 1–25 of {n:,}").count() == 1)
    with page.expect_download() as dl:
        page.get_by_role("button", name=f"Download all {n:,} rows as CSV").click()
    path = tmp_path / "download.csv"
    dl.value.save_as(path)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows[0] == ["timestamp", "date", "api_proxy", "metric_name", "value", "labels"]
    got = sorted((r[0], r[1], r[2], r[3], json.loads(r[5])["environment"], float(r[4])) for r in rows[1:])
    want = sorted((ts_iso(ts) + "Z", d.isoformat(), p, m, e, v)
                  for ts, d, p, m, e, v in expected_rows(history, proxies=left))
    assert got == want
    assert all(json.loads(r[5]) == {"apiproxy": r[2], "environment": json.loads(r[5])["environment"]}
               for r in rows[1:])
    # next page
    page.locator('[data-testid="stNumberInput"] button').last.click()  # "+"
    wait_for(page, "page 2", lambda: page.get_by_text(f"Rows 26–50 of {n:,}").count() == 1)
    no_exception(page)


def test_date_range_narrows_everything(page, history):
    days = history.days_list
    left = [p for p in history.proxies if p != "api-proxy-2"]
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first
    for which, day, shown in (("start", days[1], f"{days[1]} to {days[-1]}"),
                              ("end", days[2], f"{days[1]} to {days[2]}")):
        field = page.locator(f'[aria-label="day, Date range {which} date"]')
        field.click()
        page.keyboard.type(f"{day.day:02d}")
        page.locator("h1").first.click()  # the field commits when it loses focus
        wait_for(page, f"the {which} day in the caption", lambda: shown in caption.inner_text())
    page.get_by_role("tab", name="Aggregates by API proxy").click()
    settled(page, "aggregates of two days", lambda: assert_aggregates(page, history, left, days[1:3]))
    no_exception(page)


def test_missing_and_empty_data_dir_show_a_message(page, tmp_path):
    field = page.get_by_role("textbox", name="Data directory", exact=True)
    field.fill(str(tmp_path / "nowhere"))
    field.press("Enter")
    wait_for(page, "the missing-directory message", lambda: page.get_by_text("No data directory at").count() == 1)
    assert page.locator(CHART).count() == 0
    no_exception(page)

    (tmp_path / "empty").mkdir()
    field.fill(str(tmp_path / "empty"))
    field.press("Enter")
    wait_for(page, "the empty-directory message", lambda: page.get_by_text("holds no metrics yet").count() == 1)
    no_exception(page)


# ---------------------------------------------------------------------------
# real scale (issue 15): (a) a year of 200 proxies, (b) one day of 10,000 proxies
# x 10 metrics, in promduck's exact schema (bench/dashboard_data.py; the schema and
# footer are copied from a file the collector wrote). Expected values from the
# generator's closed forms, never from the dashboard.

SCALE_TIMEOUT = 180  # seconds: the first read of 10,000 files on a busy 2-core machine


@pytest.fixture(scope="module")
def scale_data(data, tmp_path_factory) -> dict:
    import dashboard_data as dd

    reference = sorted(data.glob("*/*.parquet"))[0]
    root = tmp_path_factory.mktemp("scale")
    return {"year": dd.write_year(root / "year", reference), "wide": dd.write_wide(root / "wide", reference)}


@contextlib.contextmanager
def scale_page(pw, scale_data, name: str, tmp_path_factory, query: str = ""):
    with streamlit_server(scale_data[name], tmp_path_factory.mktemp(f"streamlit-{name}")) as (url, _), \
            browser_page(pw, url + "/" + query, tmp_path_factory.mktemp(f"chromium-{name}")) as pg:
        yield pg


def iso_day(d: date) -> str:
    return f"{d.isoformat()}T00:00:00"


def assert_scale_charts(got: dict, want: dict):
    """``want``: {title: [(name, type, axis, [(x, y), ...]), ...]}, exactly."""
    assert sorted(got) == sorted(want), sorted(got)
    for title, traces in want.items():
        have = [(t["name"], t["type"], t["axis"], list(zip([x[:19] for x in t["x"]], t["y"])))
                for t in got[title]]
        assert [h[:3] for h in have] == [w[:3] for w in traces], (title, [h[:3] for h in have])
        for h, w in zip(have, traces):
            assert h[3] == w[3], (title, h[0], h[3][:3], w[3][:3])


def year_want(days: list, grain: str = "day") -> dict:
    """(a) over ``days`` (indices from 2024-01-01): per metric the top 10 proxies by total
    (api-proxy-190..199: value = day * 1000 + proxy + environment) and the other 190 as
    one line on the right axis, a point per day (or per week from Monday)."""
    import dashboard_data as dd

    first = date(2024, 1, 1)

    def bucket(d):
        day = first + timedelta(days=d)
        return day - timedelta(days=day.weekday()) if grain == "week" else day

    def series(proxies):
        acc = {}
        for d in days:
            acc.setdefault(bucket(d), 0.0)
            acc[bucket(d)] += sum(dd.year_value(d, p, e) for p in proxies for e in range(len(dd.ENVS)))
        return [(iso_day(k), v) for k, v in sorted(acc.items())]

    # "other" is drawn first (under the proxies' lines) and listed last in the legend
    traces = [("other (190 API proxies)", "line", "y2", series(range(190)))]
    traces += [(dd.year_proxy(p), "line", "y", series([p])) for p in sorted(range(190, 200), key=dd.year_proxy)]
    return {m: traces for m in dd.YEAR_METRICS}


def test_scale_year_of_200_proxies(playwright, scale_data, tmp_path_factory):
    """(a) 200 proxies x 365 days (73,000 files): opens on the last 30 days, the top 10
    proxies per chart and "other" on its own axis, a point per day; a 93-day link draws
    a point per week."""
    with scale_page(playwright, scale_data, "year", tmp_path_factory) as pg:
        last30 = list(range(335, 365))  # 2024-12-01 .. 2024-12-30
        wait_for(pg, "the year's charts", lambda: assert_scale_charts(charts(pg), year_want(last30)) or True,
                 timeout=SCALE_TIMEOUT)
        no_exception(pg)
        caption = pg.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
        assert "2024-12-01 to 2024-12-30" in caption and "all 200 of 200 API proxies" in caption, caption
        assert f"{30 * 200 * 6:,} rows" in caption and "daily points" in caption, caption
        subtitle = dd.vega_charts(pg)[0]["subtitle"]
        assert subtitle == ["top 10 of 200 API proxies by sum of error_count; the other 190 as one grey line "
                            "(right axis) · daily"], subtitle
        scale_screenshot(pg, "dashboard-year.png")
        pg.get_by_role("tab", name="Aggregates by API proxy").click()

        def bars_and_tables():
            bars = {k.split(":")[0]: v for k, v in charts(pg).items() if k.endswith("daily total per API proxy")}
            assert sorted(bars) == sorted(year_want([]))
            want = year_want(last30)
            for m, traces in bars.items():
                assert [(t["name"], t["type"]) for t in traces] == [(w[0], "bar") for w in want[m]]
                for t, w in zip(traces, want[m]):
                    assert list(zip(t["x"], t["y"])) == [(x[:10], y) for x, y in w[3]], (m, t["name"])
            tables = pg.evaluate(TABLES_JS)
            assert len(tables) == 3 and all([r[0] for r in t[1:]] == [f"api-proxy-{p}" for p in range(190, 200)]
                                            for t in tables), tables
            return True

        wait_for(pg, "the year's bars and tables", bars_and_tables, timeout=SCALE_TIMEOUT)
        scale_screenshot(pg, "dashboard-year-aggregates.png")
        no_exception(pg)
    # 93 days: weekly points (weeks from Monday; the first and last are partial)
    with scale_page(playwright, scale_data, "year", tmp_path_factory, "?start=2024-09-29&end=2024-12-30") as pg:
        want = year_want(list(range(272, 365)), grain="week")
        wait_for(pg, "weekly charts", lambda: assert_scale_charts(charts(pg), want) or True, timeout=SCALE_TIMEOUT)
        assert "weekly" in pg.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
        # the first and last weeks hold one selected day each: said in the subtitle, shaded
        partial = ("shaded: partial weeks, summing fewer days — week from 2024-09-23: 1 of 7 days (2024-09-29); "
                   "week from 2024-12-30: 1 of 7 days (2024-12-30)")

        def partial_said():
            got = dd.vega_charts(pg)
            assert [c["subtitle"][1:] for c in got] == [[partial]] * 3, [c["subtitle"] for c in got]
            assert all(c["drawn"]["bar"] == 2 for c in got), [c["drawn"] for c in got]  # the two bands
            return True

        wait_for(pg, "the partial weeks said and shaded", partial_said, timeout=SCALE_TIMEOUT)
        scale_screenshot(pg, "dashboard-year-weekly.png")
        no_exception(pg)


def wide_want() -> dict:
    """(b): per metric the 10 proxies ranked first (dashboard_data.wide_rank 1..10, the largest
    weights) and the other 9,990 on the right axis; daily metrics one bar each on their day,
    hourly ones a point per hour 01:00 .. 24:00."""
    import dashboard_data as dd

    n, day = 10_000, date(2024, 3, 1)
    want = {}
    for m, metric in enumerate(dd.WIDE_METRICS):
        top = sorted((p for p in range(n) if dd.wide_rank(p, m, n) <= 10), key=dd.wide_proxy)
        rest = [p for p in range(n) if dd.wide_rank(p, m, n) > 10]
        hours = [0] if metric in dd.WIDE_DAILY else list(range(1, 25))

        def pts(proxies):
            return [(day.isoformat() if h == 0 else
                     (datetime(2024, 3, 1) + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%S"),
                     sum(dd.wide_value(p, m, e, h, n) for p in proxies for e in range(len(dd.ENVS))))
                    for h in hours]

        kind = "bar" if metric in dd.WIDE_DAILY else "line"
        want[metric] = [(f"other ({n - 10:,} API proxies)", kind, "y2", pts(rest))]
        want[metric] += [(dd.wide_proxy(p), kind, "y", pts([p])) for p in top]
    return want


def test_scale_one_day_of_10000_proxies(playwright, scale_data, tmp_path_factory):
    """(b) 10,000 proxies x 10 metrics x 1 day (2.5 M rows): ten charts of 11 traces; the
    proxy selector holds 10,000 names, none picked (= all), and finds one by typing."""
    import dashboard_data as dd

    # Summed, as wide_want computes (the default "auto" takes the hourly metrics' maximum);
    # the link's ?combine= chooses it.
    with scale_page(playwright, scale_data, "wide", tmp_path_factory, query="?combine=sum") as pg:
        want = wide_want()
        wait_for(pg, "the ten charts", lambda: assert_scale_charts(charts(pg), want) or True, timeout=SCALE_TIMEOUT)
        no_exception(pg)
        caption = pg.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
        assert "all 10,000 of 10,000 API proxies" in caption and "2,500,000 rows" in caption, caption
        scale_screenshot(pg, "dashboard-wide.png")
        # one proxy, found among 10,000 by typing part of its name (the list offers 300 at a time)
        one = dd.wide_proxy(41)
        box = pg.locator('[data-testid="stMultiSelect"]').filter(has_text="API proxies")
        box.locator("input").click()
        assert pg.get_by_role("option", name=one, exact=True).count() == 0
        pg.keyboard.press("Escape")
        find = pg.get_by_role("textbox", name="Find API proxies", exact=True)
        find.fill("API-00041")
        find.press("Enter")
        wait_for(pg, "the search's one match", lambda: pg.get_by_text("Pick all").count() == 0
                 and pg.get_by_text("10,000 names").count() == 0)
        pick_proxies(pg, [one], typed="00041")
        m = dd.WIDE_METRICS.index("latency_ms")
        latency = [((datetime(2024, 3, 1) + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%S"),
                    float(dd.wide_value(41, m, 0, h, 10_000) + dd.wide_value(41, m, 1, h, 10_000)))
                   for h in range(1, 25)]

        def one_line():
            t = charts(pg)["latency_ms"]
            assert [(x["name"], list(zip([v[:19] for v in x["x"]], x["y"]))) for x in t] == [(one, latency)]
            return True

        wait_for(pg, f"only {one}", one_line, timeout=SCALE_TIMEOUT)
        no_exception(pg)


def scale_screenshot(page, name):
    """A 1400 x 1900 screenshot in tests/output; every visible chart drew its "other" trace
    and at least one other trace (lines of near-equal proxies may cover each other)."""
    from PIL import Image

    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 1900})

    def drawn_at_the_new_size():  # Vega redraws for the new viewport: polled, no fixed pause
        plots = page.locator(CHART)
        infos = dd.vega_charts(page)
        visible = [i for i in range(plots.count()) if plots.nth(i).is_visible()]
        assert visible, "no chart visible"
        for i in visible:
            img = Image.open(io.BytesIO(plots.nth(i).screenshot())).convert("RGB")
            counts = {color: n for n, color in img.getcolors(img.width * img.height)}
            drawn = {t["name"]: counts.get(rgb(t["color"]), 0) for t in infos[i]["traces"]}
            other = [k for k in drawn if k.startswith("other")]
            assert all(drawn[k] >= 100 for k in other), (infos[i]["title"], drawn)
            assert any(v >= 100 for k, v in drawn.items() if k not in other), (infos[i]["title"], drawn)

    settled(page, "the charts drawn at 1400 x 1900", drawn_at_the_new_size)
    page.screenshot(path=str(OUTPUT / name))
    page.set_viewport_size({"width": 1400, "height": 1000})
