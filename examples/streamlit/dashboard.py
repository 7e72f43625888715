#!/usr/bin/env python3
"""promduck dashboard: the metrics the collector stored, read through the
promduck DuckDB extension (prom_partitions, prom_metrics), drawn as Vega-Lite
charts in Streamlit (st.vega_lite_chart with a spec built here: no Altair, no
Plotly; Streamlit's Vega-Lite frontend is a fraction of Plotly's in the browser).

    pip install -r examples/requirements.txt
    streamlit run examples/streamlit/dashboard.py

Data directory: $PROMDUCK_DATA_DIR, else ./data (changeable in the sidebar).
Extension: $PROMDUCK_EXTENSION, else <repo>/build/promduck.duckdb_extension
(``make build``).

Sidebar: data directory, date range (bounded by the days present; the last 30
by default), API proxies (none picked = all), metrics, and how to draw: lines
per proxy or per proxy and a label, how rows are combined, the top N proxies
per chart (the rest as one "other" line, or left out), the time bucket. Tabs:
time series per metric, aggregates by proxy (totals per day or week as bars,
and a table of total / daily average / daily maximum), raw rows (paged, with a
CSV download of every selected row).

How it stays fast on large archives: the day folders and proxy files come from
``prom_partitions`` (a folder listing, no file opened). The selection (days x
proxies) is read once by ``prom_metrics``, pruned to those folders and files,
and aggregated in DuckDB to one row per metric, proxy, day, time bucket (and
label value when lines are split by a label); that small table is cached per
selection, and every chart, ranking and table is SQL over it, so changing
metrics, top N or the way rows are combined reads no file again. The browser
gets only what is drawn: at most N + 1 lines per chart, one point per bucket.
A page of raw rows reads only the files holding that page.
"""

from __future__ import annotations

import bisect
import inspect
import io
import math
import os
import re
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import streamlit as st

if not st.runtime.exists():
    print("This is a Streamlit app; start it with:\n"
          f"    streamlit run {os.path.relpath(__file__)}", file=sys.stderr)
    sys.exit(1)

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTENSION = Path(os.environ.get("PROMDUCK_EXTENSION") or REPO_ROOT / "build" / "promduck.duckdb_extension")
DEFAULT_DATA_DIR = os.environ.get("PROMDUCK_DATA_DIR") or "./data"
DEFAULT_DAYS = 30           # the default date range: the last 30 days present
DEFAULT_TOP = 10            # lines per chart before the rest become "other"
MAX_TOP = 100
PAGE_SIZES = [25, 50, 100, 500]
MAX_OPTIONS = 300          # proxy names offered at once in the selector
LABEL_SAMPLE = 100          # proxies whose files of one day show the label keys
OTHER_COLOR = "#8c8c8c"
# Distinct colours, none grey (grey is "other"): d3's category10 without its grey, then Plotly's Dark24 palette.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#0d2a63", "#fb0d0d", "#1ca71c", "#da16ff", "#b68100", "#750d86", "#eb663b", "#511cfb", "#00a08b",
           "#fb00d1", "#862a16", "#a777f1", "#620042", "#1616a7", "#6c4516", "#af0038"]
HOUR_MS = 3_600_000
# name: bucket width in ms (sub-day buckets), or "day" / "week" (calendar days as collected)
BUCKETS = {"auto": None, "5 minutes": 300_000, "1 hour": HOUR_MS, "1 day": "day", "1 week": "week"}
MAX_POINTS = 5_000          # points per line; a finer bucket is coarsened to stay under
# How the rows that fall on one point of a line (environments, instants of a bucket,
# proxies of "other") are combined, as SQL over the cached aggregates; SCORE is the same
# measure over a proxy's whole range, which ranks the proxies.
# "auto" (the default) sums a metric stored once per day (a counter's daily increase) and takes
# the maximum of one sampled within the day (a gauge such as latency, which no sum describes).
COMBINE = {"auto": "CASE WHEN any_value(once_a_day) THEN sum(s) ELSE max(hi) END", "sum": "sum(s)",
           "average": "sum(s) / sum(n)", "maximum": "max(hi)", "minimum": "min(lo)"}
SCORE = {"auto": "CASE WHEN once_a_day THEN s ELSE hi END", "sum": "s", "average": "s / n", "maximum": "hi",
         "minimum": "lo"}

# Every user choice reaches DuckDB as a bound parameter of these fixed texts.
INVENTORY_SQL = """
SELECT date, api_proxy, count(*) AS n FROM prom_partitions(data_dir := $data_dir)
GROUP BY GROUPING SETS ((date), (api_proxy))
"""
LABEL_KEYS_SQL = """
SELECT DISTINCT k FROM (
  SELECT unnest(map_keys(labels)) AS k
  FROM prom_metrics(data_dir := $data_dir, date := $day, proxy := $proxies))
WHERE k <> 'apiproxy' ORDER BY k
"""


def selection_sql(proxy_filter: bool, width_ms, split: bool) -> str:
    """The selection read once: one row per metric, proxy, day, bucket end (epoch ms; sub-day
    buckets only) and label value (lines split by a label only), as table `sel`; then `scores`
    (per metric and proxy over the range) and `info` (per metric) from it."""
    ts = "(epoch_ms(timestamp) + $width - 1) // $width * $width" if width_ms else "NULL::BIGINT"
    at_day_end = ("bool_and(epoch_ms(timestamp) = (date - DATE '1970-01-01' + 1) * 86400000)"
                  if width_ms else "true")
    label = "coalesce(labels[$label_key], '(none)')" if split else "NULL::VARCHAR"
    proxies = ", proxy := $proxies" if proxy_filter else ""
    return f"""
CREATE TABLE sel AS
SELECT metric_name, api_proxy, date, {ts} AS ts, {label} AS label,
       sum(value) AS s, count(*) AS n, min(value) AS lo, max(value) AS hi, {at_day_end} AS at_day_end,
       count(DISTINCT timestamp) AS instants
FROM prom_metrics(data_dir := $data_dir, start_date := $start, end_date := $end{proxies})
GROUP BY ALL;
"""


SUMMARY_SQL = """
CREATE TABLE scores AS
SELECT metric_name, api_proxy, sum(s) AS s, sum(n) AS n, min(lo) AS lo, max(hi) AS hi FROM sel GROUP BY ALL;
CREATE TABLE info AS
SELECT metric_name, bool_and(at_day_end) AS daily, any_value(once_a_day) AS once_a_day, count(*) AS proxies,
       sum(n) AS rows FROM scores
JOIN (SELECT metric_name, bool_and(at_day_end) AS at_day_end FROM sel GROUP BY ALL) USING (metric_name)
-- Stored once a day (a daily increase) or sampled within it (a gauge), whatever the bucket:
-- one instant per series' day. Buckets split a day's instants, never share one.
JOIN (SELECT metric_name, bool_and(k = 1) AS once_a_day
      FROM (SELECT metric_name, api_proxy, date, label, sum(instants) AS k FROM sel GROUP BY ALL)
      GROUP BY ALL) USING (metric_name)
GROUP BY ALL;
"""

# The proxies drawn: the top N of each metric (or of one metric for every chart).
RANKS_SQL = """
ranks AS (
  SELECT metric_name AS rank_metric, api_proxy,
         row_number() OVER (PARTITION BY metric_name ORDER BY {score} DESC, api_proxy) AS rk
  FROM scores JOIN info USING (metric_name) WHERE list_contains($metrics, metric_name)),
top AS (SELECT rank_metric, api_proxy FROM ranks WHERE rk <= $top)
"""
# The selected rows of `sel`, each marked shown (its proxy drawn) or not (in "other").
MARKED_SQL = """
g AS (
  SELECT f.*, t.api_proxy IS NOT NULL AS shown
  FROM sel f LEFT JOIN top t ON t.rank_metric = coalesce($rank_metric, f.metric_name) AND t.api_proxy = f.api_proxy
  WHERE list_contains($metrics, f.metric_name))
"""


def x_sql(grain) -> str:
    if grain == "week":
        return "date_trunc('week', date)::TIMESTAMP"
    if grain == "day":
        return "date::TIMESTAMP"
    # A daily value (an instant query at the end of day D) carries the timestamp D+1
    # 00:00; it is plotted on its day D so that the chart reads as the calendar.
    return "CASE WHEN daily THEN date::TIMESTAMP ELSE make_timestamp(ts * 1000) END"


def lines_sql(grain, split: bool, combine: str) -> str:
    series = "api_proxy || ' · ' || label" if split else "api_proxy"
    return f"""
WITH {RANKS_SQL.format(score=SCORE[combine])}, {MARKED_SQL}
SELECT metric_name, CASE WHEN shown THEN {series} END AS series, {x_sql(grain)} AS x,
       {COMBINE[combine]} AS y, any_value(daily) AS daily
FROM g JOIN info USING (metric_name) WHERE shown OR $others
GROUP BY ALL ORDER BY metric_name, series NULLS LAST, x
"""


def counts_sql(combine: str) -> str:
    return f"""
WITH {RANKS_SQL.format(score=SCORE[combine])}
SELECT i.metric_name, any_value(i.proxies) AS proxies, any_value(i.rows) AS rows, any_value(i.daily) AS daily,
       any_value(i.once_a_day) AS once_a_day, count(t.api_proxy) AS shown
FROM info i JOIN scores sc USING (metric_name)
LEFT JOIN top t ON t.rank_metric = coalesce($rank_metric, i.metric_name) AND t.api_proxy = sc.api_proxy
WHERE list_contains($metrics, i.metric_name) GROUP BY i.metric_name
"""


def bars_sql(week: bool, combine: str) -> str:
    bucket = "date_trunc('week', date)::DATE" if week else "date"
    return f"""
WITH {RANKS_SQL.format(score=SCORE[combine])}, {MARKED_SQL}
SELECT metric_name, CASE WHEN shown THEN api_proxy END AS series, strftime({bucket}, '%Y-%m-%d') AS x,
       {COMBINE["auto"] if combine == "auto" else "sum(s)"} AS y
FROM g JOIN info USING (metric_name) WHERE shown OR $others
GROUP BY ALL ORDER BY metric_name, series NULLS LAST, x
"""


def table_sql(combine: str, every: bool) -> str:
    """Per proxy: days, total, daily average and maximum, busiest day, rows, value average and maximum."""
    return f"""
WITH {RANKS_SQL.format(score=SCORE[combine])}, {MARKED_SQL},
d AS (SELECT metric_name, api_proxy, date, sum(s) AS total, sum(n) AS n, max(hi) AS hi
      FROM g {"" if every else "WHERE shown"} GROUP BY ALL)
SELECT metric_name, api_proxy, count(*) AS days, sum(total) AS total, avg(total) AS daily_avg,
       max(total) AS daily_max, arg_max(date, total) AS busiest, sum(n) AS rows,
       sum(total) / sum(n) AS value_avg, max(hi) AS value_max
FROM d GROUP BY ALL ORDER BY metric_name, {"total DESC, api_proxy" if every else "api_proxy"}
"""


PARTITION_ROWS_SQL = """
SELECT date, api_proxy, sum(n) AS n FROM sel WHERE list_contains($metrics, metric_name)
GROUP BY ALL ORDER BY date, api_proxy
"""
RAW_SQL = """
SELECT make_timestamp(epoch_ms(timestamp) * 1000) AS "timestamp (UTC)", date, api_proxy, metric_name, value,
       array_to_string(list_transform(map_entries(labels), lambda e: e.key || '=' || e.value), ', ') AS labels
FROM prom_metrics(data_dir := $data_dir, start_date := $first_day, end_date := $last_day,
                  proxy := $proxies, metric := $metrics)
WHERE (date > $first_day OR api_proxy >= $first_proxy) AND (date < $last_day OR api_proxy <= $last_proxy)
ORDER BY date, api_proxy, metric_name, timestamp, CAST(labels AS VARCHAR)
LIMIT $limit OFFSET $offset
"""


def csv_sql(proxy_filter: bool) -> str:
    """Every selected row in prom_metrics' columns, as examples/duckdb/query_metrics.py writes them."""
    proxies = ", proxy := $proxies" if proxy_filter else ""
    return f"""
SELECT strftime(make_timestamp(ms * 1000), '%Y-%m-%dT%H:%M:%S')
         || CASE WHEN ms % 1000 <> 0 THEN '.' || lpad(CAST(ms % 1000 AS VARCHAR), 3, '0') ELSE '' END
         || 'Z' AS "timestamp",
       strftime(date, '%Y-%m-%d') AS "date", api_proxy, metric_name, CAST(value AS VARCHAR) AS "value",
       CAST(to_json(labels) AS VARCHAR) AS labels
FROM (SELECT epoch_ms(timestamp) AS ms, *
      FROM prom_metrics(data_dir := $data_dir, start_date := $start, end_date := $end{proxies},
                        metric := $metrics))
ORDER BY date, api_proxy, metric_name, ms, CAST(labels AS VARCHAR)
"""


def preload_pandas():
    """Streamlit imports pandas when the first chart is sent: a quarter of a second of a cold
    server's first page. Called as the selection is read, this imports it on a thread of its
    own while DuckDB works (DuckDB releases the GIL; started earlier, the import would slow
    the script's own Python instead)."""
    if "pandas" not in sys.modules:
        import threading

        threading.Thread(target=__import__, args=("pandas",), name="import-pandas", daemon=True).start()


class DataError(Exception):
    pass


@st.cache_resource(show_spinner=False)
def database(extension: str):
    """One in-memory DuckDB with the extension loaded; queries use cursors."""
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.load_extension(extension)
    return con


def bound(sql: str, params: dict) -> dict:
    """The parameters ``sql`` names (DuckDB refuses extra ones)."""
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)}


def query(sql: str, params: dict, con=None, arrow: bool = False):
    """Runs ``sql`` on ``con`` (a selection's database), else on the shared one: a list of
    dicts, or an Arrow table."""
    try:
        cur = (con if con is not None else database(str(EXTENSION))).cursor()
    except duckdb.Error as e:
        raise DataError(f"cannot load the promduck extension {EXTENSION}: "
                        + str(e).strip().splitlines()[0]) from None
    try:
        if arrow:
            return cur.sql(sql, params=bound(sql, params)).to_arrow_table()
        res = cur.execute(sql, bound(sql, params))
        names = [d[0] for d in res.description]
        return [dict(zip(names, row)) for row in res.fetchall()]
    except duckdb.Error as e:
        raise DataError(str(e).strip().splitlines()[0]) from None
    finally:
        cur.close()


@st.cache_resource(ttl=300, max_entries=8, show_spinner=False)
def inventory(data_dir: str, generation: int):
    """(first day, last day, sorted proxies, {day: partitions}, partitions), or None: one
    folder listing by prom_partitions, no file opened."""
    rows = query(INVENTORY_SQL, {"data_dir": data_dir})
    days = {r["date"]: r["n"] for r in rows if r["api_proxy"] is None}
    if not days:
        return None
    proxies = sorted(r["api_proxy"] for r in rows if r["date"] is None)
    return min(days), max(days), proxies, days, sum(days.values())


@st.cache_resource(ttl=300, max_entries=32, show_spinner=False)
def label_keys(data_dir: str, day: date, proxies: tuple, generation: int) -> list:
    return [r["k"] for r in query(LABEL_KEYS_SQL, {"data_dir": data_dir, "day": day.isoformat(),
                                                   "proxies": list(proxies)})]


@st.cache_resource(ttl=600, max_entries=8, show_spinner=False)
def selection(data_dir: str, start: date, end: date, proxies: tuple, width_ms, split_key, generation: int):
    """The selection read once and aggregated (tables `sel`, `scores`, `info`) in an in-memory
    DuckDB of its own, dropped with it when the cache lets it go; returns that connection."""
    params = {"data_dir": data_dir, "start": start.isoformat(), "end": end.isoformat(),
              "proxies": list(proxies), "width": width_ms, "label_key": split_key}
    try:
        con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        con.load_extension(str(EXTENSION))
    except duckdb.Error as e:
        raise DataError(f"cannot load the promduck extension {EXTENSION}: "
                        + str(e).strip().splitlines()[0]) from None
    sql = selection_sql(bool(proxies), width_ms, bool(split_key))
    try:
        con.execute(sql, bound(sql, params))
        con.execute(SUMMARY_SQL)
    except duckdb.Error as e:
        con.close()
        raise DataError(str(e).strip().splitlines()[0]) from None
    return con


@st.cache_data(ttl=600, max_entries=64, show_spinner=False)
def derived(_con, sel_key: tuple, sql: str, params: dict) -> list:
    """A chart's or table's rows: SQL over the cached selection (``_con``, keyed by ``sel_key``)."""
    return query(sql, params, con=_con)


def export_csv(con, sql: str, params: dict) -> bytes:
    """Run on click (on a thread of its own): every selected row as CSV."""
    import pyarrow.csv as pacsv

    table = query(sql, params, con=con, arrow=True)
    out = io.BytesIO()
    pacsv.write_csv(table, out, pacsv.WriteOptions(quoting_style="needed"))
    return out.getvalue()


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:,.2f}"


def supports(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def by_metric(rows: list) -> dict:
    out = {}
    for r in rows:
        out.setdefault(r["metric_name"], []).append(r)
    return out


def grain_for(bucket: str, start: date, end: date):
    """(grain, label): grain is a width in ms, "day" or "week"."""
    days = (end - start).days + 1
    choice = BUCKETS[bucket]
    if choice is None:  # auto: hourly up to a week, daily up to three months, weekly beyond
        choice = HOUR_MS if days <= 7 else "day" if days <= 92 else "week"
    if isinstance(choice, int):
        while choice < HOUR_MS and days * 86_400_000 / choice > MAX_POINTS:
            choice = HOUR_MS
        if days * 86_400_000 / choice > MAX_POINTS:
            choice = "day"
    names = {"day": "daily", "week": "weekly (weeks from Monday)", 300_000: "5-minute", HOUR_MS: "hourly"}
    return choice, names[choice] if choice in names else f"{choice // 60_000}-minute"


def midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day)


# ---------------------------------------------------------------------------
# page

# A Material icon: an emoji icon would load Streamlit's emoji catalogue first (0.1 s).
st.set_page_config(page_title="promduck · API metrics", page_icon=":material/monitoring:", layout="wide")
st.title("API Metrics Dashboard")

if "generation" not in st.session_state:
    st.session_state.generation = 0

sb = st.sidebar
sb.header("Data")
data_dir = sb.text_input("Data directory", value=DEFAULT_DATA_DIR,
                         help="The collector's output directory (storage.outputDir): "
                              "<dir>/YYYY-MM-DD/<proxy>.parquet").strip()
if sb.button("Reload data", help="Read the data directory again (new days, new proxies)"):
    st.session_state.generation += 1
generation = st.session_state.generation

if not EXTENSION.is_file():
    st.error(f"The promduck DuckDB extension was not found at `{EXTENSION}`. "
             "Build it with `make build`, or set `PROMDUCK_EXTENSION` to the `.duckdb_extension` file.")
    st.stop()
if not data_dir or ("://" not in data_dir and not os.path.isdir(data_dir)):  # s3://: prom_metrics checks it
    st.warning(f"No data directory at `{data_dir or '(empty)'}`.")
    st.markdown(
        "Enter the collector's output directory in the sidebar, or start the dashboard with "
        "`PROMDUCK_DATA_DIR=/path/to/data`. To collect data: "
        "`build/promduck-collector --config config/config.yaml` (or `make demo` for a week of "
        "generated demo data in `./data`).")
    st.stop()

# The browser loads Streamlit's Vega-Lite frontend (vega-embed) when the first chart arrives:
# a blank chart sent while the data is being read lets it load meanwhile (once per session).
warm = st.empty()
if not st.session_state.get("vega-loaded"):
    st.session_state["vega-loaded"] = True
    warm.vega_lite_chart({"mark": {"type": "point"}, "height": 1, "width": 1, "padding": 0,
                          "config": {"view": {"stroke": None}}}, width=1, theme=None, key="warm")


def stop():
    warm.empty()
    st.stop()


try:
    inv = inventory(data_dir, generation)
except DataError as e:
    st.error(f"Could not read `{data_dir}`: {e}")
    stop()
if inv is None:
    st.info(f"`{data_dir}` holds no metrics yet: the collector writes "
            "`YYYY-MM-DD/<proxy>.parquet` there. Collect some days first, e.g. "
            "`build/promduck-collector --config config/config.yaml --from 2024-03-01 --to 2024-03-07`.")
    stop()
first_day, last_day, all_proxies, per_day, n_partitions = inv

# ?start=YYYY-MM-DD&end=YYYY-MM-DD&proxy=a&proxy=b opens that selection (a link to share).
range_key = f"range-{data_dir}-{first_day}-{last_day}"
if range_key not in st.session_state:
    default = (max(first_day, last_day - timedelta(days=DEFAULT_DAYS - 1)), last_day)
    try:
        asked = tuple(date.fromisoformat(st.query_params[k]) for k in ("start", "end") if k in st.query_params)
    except ValueError:
        asked = ()
    if len(asked) == 2 and first_day <= asked[0] <= asked[1] <= last_day:
        default = asked
    st.session_state[range_key] = default
proxy_key = f"proxies-{data_dir}"
if proxy_key not in st.session_state:
    known = set(all_proxies)
    st.session_state[proxy_key] = [p for p in st.query_params.get_all("proxy") if p in known]

sb.header("Filters")
picked = sb.date_input("Date range", min_value=first_day, max_value=last_day, format="YYYY-MM-DD",
                       key=range_key,
                       help=f"Days with data: {first_day} to {last_day} ({n_partitions:,} partitions). "
                            f"Opens on the last {DEFAULT_DAYS} days.")
if isinstance(picked, (tuple, list)):
    start, end = (picked[0], picked[-1]) if picked else (first_day, last_day)
else:
    start = end = picked
# The browser gets at most MAX_OPTIONS names to pick from (10,000 would take it seconds to
# lay out): the picked ones and those matching "Find API proxies", a search over every name.
find = sb.text_input("Find API proxies", key=f"find-{data_dir}",
                     placeholder=f"part of a name (of {len(all_proxies):,})",
                     help=f"Narrows the names offered below (case-insensitive); at most {MAX_OPTIONS} at a time").strip()
matches = [p for p in all_proxies if find.lower() in p.lower()] if find else all_proxies
picked_now = st.session_state.get(proxy_key, [])
options = sorted(set(matches[:MAX_OPTIONS]) | set(picked_now))
if find and 1 < len(matches) <= MAX_OPTIONS and sb.button(f"Pick all {len(matches):,} matches"):
    st.session_state[proxy_key] = sorted(set(picked_now) | set(matches))
multiselect_extra = {"filter_mode": "contains"} if supports(st.multiselect, "filter_mode") else {}
chosen = sb.multiselect("API proxies", options, key=proxy_key,
                        placeholder=f"All {len(all_proxies):,} API proxies (type to search)",
                        help="None picked: every API proxy, each chart drawing the top N of them",
                        **multiselect_extra)
if len(matches) > MAX_OPTIONS:
    sb.caption(f"{len(matches):,} names{' match' if find else ''}: the list offers the first {MAX_OPTIONS}; "
               "type part of a name above to find the others.")
proxies = tuple(chosen)
st.query_params.update({"start": start.isoformat(), "end": end.isoformat()})
if proxies and len(proxies) <= 50:
    st.query_params["proxy"] = list(proxies)
elif "proxy" in st.query_params:
    del st.query_params["proxy"]

sb.header("Series")
shown_proxies = list(proxies) or all_proxies
try:
    keys = label_keys(data_dir, end, tuple(shown_proxies[:LABEL_SAMPLE]), generation)
except DataError:
    keys = []
split_options = ["API proxy"] + [f"API proxy and {k}" for k in keys]
if st.session_state.get("split") not in split_options:
    st.session_state["split"] = "API proxy"
split = sb.selectbox("Lines per", split_options, key="split",
                     help="One line per proxy, or per proxy and the value of a label")
split_key = None if split == "API proxy" else split.removeprefix("API proxy and ")
asked_combine = st.query_params.get("combine", "auto")  # a link may choose it: ?combine=sum
combine = sb.selectbox("Combine the other series by", list(COMBINE),
                       index=list(COMBINE).index(asked_combine) if asked_combine in COMBINE else 0,
                       help="The rows that fall on one point of a line (one per environment, every instant "
                            "of a time bucket, every proxy of \"other\") are combined this way; sum suits "
                            "counters such as request_count, average or maximum gauges such as latency. "
                            "auto: sum for a metric stored once a day (a daily increase), maximum for one "
                            "sampled within the day (a gauge); the bars then show its daily maximum. "
                            "Proxies are ranked by the same measure over the whole range.")
top = int(sb.number_input("Top API proxies per chart", min_value=1, max_value=MAX_TOP, value=DEFAULT_TOP, step=1,
                          help="Each chart draws the N proxies ranked highest by its metric (combined as above "
                               "over the range)"))
others = sb.toggle("The rest as one \"other\" line", value=True,
                   help="Off: the proxies beyond the top N are left out")
bucket = sb.selectbox("Time bucket", list(BUCKETS), index=0,
                      help="auto: hourly up to 7 days, daily up to 92 days, weekly beyond. A point is "
                           "the end of the interval it covers, as the collector stores samples; days are "
                           "the collected days.")
grain, grain_label = grain_for(bucket, start, end)
width_ms = grain if isinstance(grain, int) else None

days_shown = f"{start}" if start == end else f"{start} to {end}"
files = sum(per_day.get(start + timedelta(days=i), 0) for i in range((end - start).days + 1))
if proxies:
    files = min(files, len(proxies) * ((end - start).days + 1))
try:
    with st.spinner(f"Reading {days_shown}: up to {files:,} partitions…"):
        preload_pandas()
        sel = selection(data_dir, start, end, proxies, width_ms, split_key, generation)
except DataError as e:
    st.error(f"Could not read the metrics: {e}")
    stop()
warm.empty()
sel_key = (data_dir, start, end, proxies, width_ms, split_key, generation)

all_metrics = [r["metric_name"] for r in derived(sel, sel_key, "SELECT metric_name FROM info ORDER BY 1", {})]
metric_key = "metrics"
if metric_key not in st.session_state or st.session_state.get("metric-options") != all_metrics:
    before = st.session_state.get(metric_key)
    kept = [m for m in before if m in all_metrics] if before else []
    st.session_state[metric_key] = kept or all_metrics
    st.session_state["metric-options"] = all_metrics
metrics = sb.multiselect("Metrics", all_metrics, key=metric_key)
rank_options = ["each chart's own metric"] + metrics
rank_by = sb.selectbox("Rank API proxies by", rank_options, index=0,
                       help="Which metric decides the top N: each chart's own, or one for every chart")
rank_metric = None if rank_by == rank_options[0] else rank_by

if not metrics:
    st.warning("Select at least one metric in the sidebar." if all_metrics else
               f"No rows for {days_shown} and these API proxies: pick other days or proxies.")
    st.stop()

params = {"metrics": metrics, "top": top, "rank_metric": rank_metric, "others": others}
counts = {r["metric_name"]: r for r in derived(sel, sel_key, counts_sql(combine), params)}
n_rows = sum(int(r["rows"]) for r in counts.values())
n_proxies = len(proxies) if proxies else len(all_proxies)
st.caption(f"`{data_dir}` · {days_shown} · {'all ' if not proxies else ''}{n_proxies:,} of {len(all_proxies):,} "
           f"API proxies · {len(metrics)} metrics · {n_rows:,} rows · {grain_label} points")
if n_rows == 0:
    st.info("No rows for this selection: pick other days, proxies or metrics.")
    st.stop()

tab_names = ["Time series", "Aggregates by API proxy", "Raw data"]
if supports(st.tabs, "on_change"):
    # Only the open tab is computed and sent to the browser.
    tab_ts, tab_agg, tab_raw = st.tabs(tab_names, key="tab", on_change="rerun")
    is_open = lambda t: bool(getattr(t, "open", True))  # noqa: E731
else:
    tab_ts, tab_agg, tab_raw = st.tabs(tab_names)
    is_open = lambda t: True  # noqa: E731


def combine_of(metric: str) -> str:
    """The way of combining chosen, "auto" resolved for ``metric``."""
    if combine != "auto":
        return combine
    return "sum" if counts[metric]["once_a_day"] else "maximum"


def chart_note(metric: str, kind: str, right: bool, points: str) -> str:
    """The subtitle: which proxies are drawn, where the rest went, what a point is."""
    total, shown = int(counts[metric]["proxies"]), int(counts[metric]["shown"])
    if shown >= total:
        return f"all {total:,} API proxies · {points}"
    by = f"{combine_of(rank_metric or metric)} of {rank_metric or metric}"
    if others:
        rest = f"the other {total - shown:,} as one grey {kind}" + (" (right axis)" if right else "")
    else:
        rest = f"the other {total - shown:,} left out"
    return f"top {shown:,} of {total:,} API proxies by {by}; {rest} · {points}"


def other_name(metric: str) -> str:
    return f"other ({int(counts[metric]['proxies']) - int(counts[metric]['shown']):,} API proxies)"


EPOCH = datetime(1970, 1, 1)
DAY = timedelta(days=1)


def epoch_ms(x: datetime) -> int:
    return (x - EPOCH) // timedelta(milliseconds=1)


def vl_time(x: datetime) -> dict:
    """A UTC instant as a Vega-Lite DateTime (an axis' values take these, not epoch numbers)."""
    return {"year": x.year, "month": x.month, "date": x.day, "hours": x.hour, "minutes": x.minute, "utc": True}


def vl_expr(x: datetime) -> str:
    """A UTC instant as a Vega expression (a scale's domain end)."""
    return f"utc({x.year}, {x.month - 1}, {x.day}, {x.hour}, {x.minute})"


def partial_weeks(weekly: bool) -> list:
    """[(week's Monday, first selected day, last selected day, days)] for the first and last
    weeks of a weekly view that the date range covers only in part (a range is whole days,
    so only weeks can be partial): their points and bars sum fewer days than the others."""
    if not weekly:
        return []
    out = []
    for monday in sorted({start - timedelta(days=start.weekday()), end - timedelta(days=end.weekday())}):
        lo, hi = max(monday, start), min(monday + timedelta(days=6), end)
        if (hi - lo).days + 1 < 7:
            out.append((monday, lo, hi, (hi - lo).days + 1))
    return out


def partial_note(parts: list) -> str:
    """The subtitle's second line for partial weeks (shaded on the chart)."""
    said = [f"week from {monday}: {n} of 7 days ({lo}{f' to {hi}' if hi != lo else ''})"
            for monday, lo, hi, n in parts]
    return f"shaded: partial week{'s' if len(parts) > 1 else ''}, summing fewer days — " + "; ".join(said)


def chart(metric: str, rows: list, kind: str, *, title: str, subtitle, x_title: str, y_title: str,
          legend_title: str, time_axis: dict | None, parts: list, height: int = 460) -> dict:
    """A Vega-Lite spec: a line (or bar) per shown series in
    PALETTE's colours, then "other" in grey, drawn first (under the others) but listed last,
    on an axis of its own (right) when it would flatten the others. ``time_axis``: a temporal
    x (UTC, epoch ms) with its domain and label format; None: one category per x (bars).
    ``subtitle(right)``: the subtitle. ``parts``: partial weeks, shaded and said in a second
    subtitle line. The data goes as named datasets ("other", "top", "partial"), which
    Streamlit sends as Arrow."""
    series = {}
    for r in rows:  # ordered by series (NULL, "other", last), then x
        series.setdefault(r["series"], ([], []))
        series[r["series"]][0].append(r["x"])
        series[r["series"]][1].append(r["y"])
    rest = series.pop(None, None)
    top_y = max((abs(y) for _, ys in series.values() for y in ys), default=0.0)
    right = rest is not None and bool(series) and max(abs(y) for y in rest[1]) > 2 * max(top_y, 1e-300)
    names = list(series)
    other = other_name(metric) if rest is not None else None
    domain = names + ([other] if other else [])
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(names))] + ([OTHER_COLOR] if other else [])
    daily = time_axis is not None and time_axis["daily"]

    def at(x) -> str:  # the tooltip's x
        if time_axis is None:
            return str(x)
        return x.strftime("%Y-%m-%d") if daily else x.strftime("%Y-%m-%d %H:%M UTC")

    def table(items) -> pa.Table:
        cols = {"series": [], "x": [], "y": [], "at": []}
        for name, (xs, ys) in items:
            cols["series"] += [name] * len(xs)
            cols["x"] += [epoch_ms(x) for x in xs] if time_axis is not None else [str(x) for x in xs]
            cols["y"] += [float(y) for y in ys]
            cols["at"] += [at(x) for x in xs]
        return pa.table({"series": pa.array(cols["series"], pa.string()),
                         "x": pa.array(cols["x"], pa.int64() if time_axis is not None else pa.string()),
                         "y": pa.array(cols["y"], pa.float64()), "at": pa.array(cols["at"], pa.string())})

    if time_axis is not None:
        axis = {"format": time_axis["format"], "labelOverlap": True}
        if time_axis.get("every_day"):
            axis["tickCount"] = {"interval": "day", "step": 1}
        if time_axis.get("mondays"):
            axis["values"] = time_axis["mondays"]  # weeks are from Monday (Vega's weeks, from Sunday)
        lo, hi = time_axis["domain"]
        x_enc = {"field": "x", "type": "temporal", "title": x_title, "axis": axis,
                 "scale": {"type": "utc", "domainMin": {"expr": vl_expr(lo)}, "domainMax": {"expr": vl_expr(hi)}}}
    else:
        n_x = len({x for xs, _ in series.values() for x in xs} | set(rest[0] if rest else []))
        x_enc = {"field": "x", "type": "nominal", "title": x_title, "sort": None,
                 "axis": {"labelAngle": 0 if n_x <= 12 else -45, "labelOverlap": True}}
    # The legend to the right, in one or two columns as the plot's height allows (about 20 px an
    # entry); beyond that (a large top N) below the plot, four columns, the chart taller for it.
    fits = max(1, (height - 180) // 20)
    legend = {"title": legend_title, "orient": "right", "labelLimit": 360, "titleLimit": 360, "symbolLimit": 0,
              "columns": 1 if len(domain) <= fits else 2}
    if len(domain) > 2 * fits:
        legend.update(orient="bottom", columns=4, labelLimit=240)
        height += math.ceil(len(domain) / 4) * 20 + 30
    color = {"field": "series", "type": "nominal", "scale": {"domain": domain, "range": colors}, "legend": legend}
    tooltip = [{"field": "series", "type": "nominal", "title": legend_title},
               {"field": "at", "type": "nominal", "title": x_title},
               {"field": "y", "type": "quantitative", "title": y_title, "format": ",.6~f"}]
    points = max((len(xs) for xs, _ in series.values()), default=0) <= 100 and \
        (rest is None or len(rest[0]) <= 100)
    # aria off for the data marks: no description text formatted for every point and bar
    # (the chart, its axes and legend keep theirs); it halves the time Vega takes to draw
    if kind == "bar":
        mark = {"type": "bar", "tooltip": True, "aria": False}
    else:
        mark = {"type": "line", "strokeWidth": 2, "clip": True, "aria": False,
                "point": {"filled": True, "size": 36, "aria": False} if points else False}

    def layer(name, on_right):
        y = {"field": "y", "type": "quantitative", "title": "other" if on_right else y_title,
             "axis": {"orient": "right", "grid": False, "titleColor": OTHER_COLOR, "labelColor": OTHER_COLOR}
             if on_right else {"orient": "left"}}
        if on_right:
            y["scale"] = {"zero": True}
        enc = {"y": y, "color": color, "tooltip": tooltip}
        if kind == "bar":
            enc["xOffset"] = {"field": "series", "type": "nominal", "scale": {"domain": domain}}
        if name == "other" and kind == "line":
            # wider, under the others: where they cover it, it still shows around them
            return {"data": {"name": name}, "encoding": enc,
                    "mark": dict(mark, strokeWidth=5, point={"filled": True, "size": 90, "aria": False} if points else False)}
        return {"data": {"name": name}, "mark": mark, "encoding": enc}

    datasets = {}
    layers = []
    if parts:
        # partial weeks: a grey band over each (behind the data), its days in the tooltip
        shade = {"note": [f"week from {m}: only {n} of its 7 days selected ({lo}{f' to {hi}' if hi != lo else ''})"
                          for m, lo, hi, n in parts]}
        if time_axis is not None:
            shade["x"] = [epoch_ms(midnight(m)) - 3 * 86_400_000 - 43_200_000 for m, *_ in parts]
            shade["x2"] = [epoch_ms(midnight(m)) + 3 * 86_400_000 + 43_200_000 for m, *_ in parts]
            band = {"x2": {"field": "x2"}}
        else:
            shade["x"] = [m.isoformat() for m, *_ in parts]
            band = {}
        datasets["partial"] = pa.table(shade)
        layers.append({"data": {"name": "partial"},
                       "mark": {"type": "rect", "color": "#000000", "opacity": 0.07, "tooltip": True},
                       "encoding": {**band, "y": {"value": 0}, "y2": {"value": "height"},
                                    "tooltip": [{"field": "note", "type": "nominal", "title": "partial week"}]}})
    if rest is not None:
        datasets["other"] = table([(other, rest)])
        layers.append(layer("other", right))
    if names:
        datasets["top"] = table(series.items())
        layers.append(layer("top", False))
    if kind == "line" and not points:
        # Lines without markers (over 100 points): hovering shows every line's value at the
        # nearest x, on a rule (one per x, drawn only there).
        order = list(series.items()) + ([(other, rest)] if rest is not None else [])  # the legend's order
        values = {}
        for i, (_, (xs, ys)) in enumerate(order):
            for x, y in zip(xs, ys):
                values.setdefault(x, {})[i] = float(y)
        xs = sorted(values)
        datasets["hover"] = pa.table({"x": pa.array([epoch_ms(x) for x in xs], pa.int64()),
                                      "at": [at(x) for x in xs],
                                      **{f"v{i}": pa.array([values[x].get(i) for x in xs], pa.float64())
                                         for i in range(len(order))}})
        layers.append({"data": {"name": "hover"}, "mark": {"type": "rule", "color": "#666666", "strokeWidth": 1},
                       "params": [{"name": "hover", "select": {"type": "point", "encodings": ["x"], "nearest": True,
                                                               "on": "pointerover", "clear": "pointerout"}}],
                       "encoding": {"opacity": {"condition": {"param": "hover", "empty": False, "value": 0.5},
                                                "value": 0},
                                    "tooltip": [{"field": "at", "type": "nominal", "title": x_title}]
                                    + [{"field": f"v{i}", "type": "quantitative", "title": name, "format": ",.6~f"}
                                       for i, (name, _) in enumerate(order)]}})
    spec = {"title": {"text": title, "subtitle": [subtitle(right), partial_note(parts)] if parts else subtitle(right),
                      "anchor": "start", "subtitlePadding": 4},
            "height": height, "datasets": datasets, "layer": layers,
            "config": {"legend": {"labelFontSize": 12, "titleFontSize": 12}}}
    # The x scale and axis are set on the first layer only (the others name the field): Vega-Lite
    # would warn of conflicting domains when each layer repeats the same one.
    for i, lay in enumerate(layers):
        lay["encoding"]["x"] = x_enc if i == 0 else {"field": "x", "type": x_enc["type"]}
    if right:
        spec["resolve"] = {"scale": {"y": "independent"}}
    return spec


def time_axis_for(daily: bool) -> dict:
    """The time series' x: calendar days from the first to the last selected day (weeks: their
    Mondays), never a sub-day scale, for daily and weekly points; the selected days' hours for
    sub-day points."""
    short = (end - start).days < 7
    if daily:
        mondays = None
        if grain == "week":
            lo, hi = start - timedelta(days=start.weekday()), end - timedelta(days=end.weekday())
            pad = timedelta(days=3.5)
            weeks = (hi - lo).days // 7 + 1
            step = math.ceil(weeks / 16)  # at most 16 labelled Mondays
            mondays = [vl_time(midnight(lo + timedelta(weeks=i))) for i in range(0, weeks, step)]
        else:
            lo, hi, pad = start, end, timedelta(days=0.5)
        return {"daily": True, "domain": [midnight(lo) - pad, midnight(hi) + pad],
                "format": "%Y-%m-%d" if short or (end - start).days >= 300 else "%b %d",
                "every_day": short, "mondays": mondays}
    one_day = start == end
    return {"daily": False, "domain": [midnight(start), midnight(end + DAY)],
            "format": "%H:%M" if one_day else "%m-%d %H:%M", "every_day": False}


with tab_ts:
    if is_open(tab_ts):
        lines = by_metric(derived(sel, sel_key, lines_sql(grain, bool(split_key), combine), params))
        for metric in metrics:
            rows = lines.get(metric)
            if not rows:
                st.info(f"No {metric} rows for this selection.")
                continue
            daily = bool(rows[0]["daily"]) or not isinstance(grain, int)
            x_title = "day" if daily and grain != "week" else "week from" if daily else \
                f"time (UTC) on {start}" if start == end else "time (UTC)"
            points = "daily" if daily and isinstance(grain, int) else grain_label
            parts = partial_weeks(daily and grain == "week")
            if len({r["x"] for r in rows}) == 1:
                # One point per line (a daily metric over one day): a bar per series reads better
                # than dots stacked on one instant.
                label = "%Y-%m-%d" if daily else "%Y-%m-%d %H:%M"
                rows = [dict(r, x=r["x"].strftime(label)) for r in rows]
                kind, axis = "bar", None
            else:
                kind, axis = "line", time_axis_for(daily)
            spec = chart(metric, rows, kind, title=metric,
                         subtitle=lambda right: chart_note(metric, kind, right, points), x_title=x_title,
                         y_title=f"{metric} ({combine_of(metric)})", legend_title=split, time_axis=axis,
                         parts=parts)
            st.vega_lite_chart(spec, key=f"ts-{metric}")

with tab_agg:
    if is_open(tab_agg):
        import pandas as pd  # only for the tables' proxy column as their index

        week = (end - start).days + 1 > 92
        per = "weekly" if week else "daily"
        bars = by_metric(derived(sel, sel_key, bars_sql(week, combine), params))
        every = st.toggle("Table of every API proxy", value=False,
                          help="Off: the top N proxies of each chart; on: every selected proxy (sortable)")
        tables = by_metric(derived(sel, sel_key, table_sql(combine, every), params))
        for metric in metrics:
            rows = bars.get(metric)
            if not rows:
                continue
            st.subheader(metric)
            parts = partial_weeks(week)
            measure = "maximum" if combine == "auto" and combine_of(metric) == "maximum" else "total"
            spec = chart(metric, rows, "bar", title=f"{metric}: {per} {measure} per API proxy",
                         subtitle=lambda right: chart_note(metric, "bar", right, per),
                         x_title="week from" if week else "day", y_title=f"{per} {measure}",
                         legend_title="API proxy", time_axis=None, parts=parts)
            st.vega_lite_chart(spec, key=f"agg-{metric}")
            t = tables.get(metric, [])
            table = pd.DataFrame({
                "API proxy": [r["api_proxy"] for r in t], "days": [r["days"] for r in t],
                "total": [fmt(r["total"]) for r in t], "daily average": [fmt(r["daily_avg"]) for r in t],
                "daily max": [fmt(r["daily_max"]) for r in t],
                "busiest day": [r["busiest"].isoformat() for r in t], "rows": [r["rows"] for r in t],
                "value average": [fmt(r["value_avg"]) for r in t], "value max": [fmt(r["value_max"]) for r in t],
            }).set_index("API proxy")
            if every:
                st.dataframe(table, height=min(400, 38 + 35 * len(table)))
            else:
                st.table(table)
                total = int(counts[metric]["proxies"])
                if total > len(table):
                    st.caption(f"The top {len(table):,} of {total:,} API proxies; "
                               "\"Table of every API proxy\" lists them all.")

with tab_raw:
    if is_open(tab_raw):
        c1, c2, c3 = st.columns([1, 1, 2])
        page_size = c1.selectbox("Rows per page", PAGE_SIZES, index=0)
        pages = max(1, math.ceil(n_rows / page_size))
        page = c2.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, value=1, step=1,
                               key=f"page-{pages}-{page_size}")
        lo = (page - 1) * page_size
        hi = min(lo + page_size, n_rows)
        c3.markdown(f"Rows {lo + 1:,}–{hi:,} of {n_rows:,}")
        # The page's rows come from the files that hold them: the partitions (in the rows'
        # order, day then proxy) whose running row counts cover [lo, hi).
        parts = derived(sel, sel_key, PARTITION_ROWS_SQL, {"metrics": metrics})
        ends = []
        for r in parts:
            ends.append((ends[-1] if ends else 0) + int(r["n"]))
        i = bisect.bisect_right(ends, lo)
        j = bisect.bisect_left(ends, hi)
        run = parts[i:j + 1]
        try:
            view = query(RAW_SQL, {
                "data_dir": data_dir, "metrics": metrics, "proxies": sorted({r["api_proxy"] for r in run}),
                "first_day": run[0]["date"], "last_day": run[-1]["date"],
                "first_proxy": run[0]["api_proxy"], "last_proxy": run[-1]["api_proxy"],
                "limit": hi - lo, "offset": lo - (ends[i - 1] if i else 0)})
        except DataError as e:
            st.error(f"Could not read the rows: {e}")
            st.stop()
        st.dataframe({k: [r[k] for r in view] for k in (view[0] if view else {})}, hide_index=True)
        csv_params = {"data_dir": data_dir, "start": start.isoformat(), "end": end.isoformat(),
                      "metrics": metrics, "proxies": list(proxies)}
        con = database(str(EXTENSION))  # the callable runs outside the script: no st.* in it
        st.download_button(f"Download all {n_rows:,} rows as CSV",
                           lambda: export_csv(con, csv_sql(bool(proxies)), csv_params),
                           file_name=f"promduck-metrics-{start}-{end}.csv", mime="text/csv",
                           on_click="ignore")
