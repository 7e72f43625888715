#!/usr/bin/env python3
"""promduck dashboard: the metrics the collector stored, read through the
promduck DuckDB extension (prom_metrics), drawn with Plotly in Streamlit.

    pip install -r examples/requirements.txt
    streamlit run examples/streamlit/dashboard.py

Data directory: $PROMDUCK_DATA_DIR, else ./data (changeable in the sidebar).
Extension: $PROMDUCK_EXTENSION, else <repo>/build/promduck.duckdb_extension
(``make build``).

Sidebar: data directory, date range (bounded by the days present), API proxies,
metrics, how to split and combine series. Tabs: time series per metric (one
line per proxy, or per proxy and label such as environment), aggregates by
proxy (daily totals as bars, and a table of total / daily average / daily
maximum), raw rows (paged, with a CSV download of every selected row).
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import date
from pathlib import Path

import streamlit as st

if not st.runtime.exists():
    print("This is a Streamlit app; start it with:\n"
          f"    streamlit run {os.path.relpath(__file__)}", file=sys.stderr)
    sys.exit(1)

import duckdb  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.express as px  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTENSION = Path(os.environ.get("PROMDUCK_EXTENSION") or REPO_ROOT / "build" / "promduck.duckdb_extension")
DEFAULT_DATA_DIR = os.environ.get("PROMDUCK_DATA_DIR") or "./data"
COMBINE = {"sum": "sum", "average": "mean", "maximum": "max", "minimum": "min"}
PAGE_SIZES = [25, 50, 100, 500]

# Every user choice reaches DuckDB as a bound parameter of these fixed texts.
INVENTORY_SQL = """
SELECT DISTINCT date, api_proxy, metric_name
FROM prom_metrics(data_dir := $data_dir)
ORDER BY date, api_proxy, metric_name
"""
SELECT_SQL = """
SELECT timezone('UTC', timestamp) AS timestamp, date, api_proxy, metric_name, value, labels
FROM prom_metrics(data_dir := $data_dir, start_date := $start, end_date := $end,
                  proxy := $proxies, metric := $metrics)
ORDER BY date, api_proxy, metric_name, timestamp, CAST(labels AS VARCHAR)
"""


class DataError(Exception):
    pass


@st.cache_resource(show_spinner=False)
def database(extension: str):
    """One in-memory DuckDB with the extension loaded; queries use cursors."""
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.load_extension(extension)
    return con


def query(sql: str, params: dict) -> pd.DataFrame:
    try:
        cur = database(str(EXTENSION)).cursor()
    except duckdb.Error as e:
        raise DataError(f"cannot load the promduck extension {EXTENSION}: "
                        + str(e).strip().splitlines()[0]) from None
    try:
        return cur.execute(sql, params).df()
    except duckdb.Error as e:
        raise DataError(str(e).strip().splitlines()[0]) from None
    finally:
        cur.close()


@st.cache_data(ttl=300, show_spinner=False)
def inventory(data_dir: str, generation: int) -> pd.DataFrame:
    df = query(INVENTORY_SQL, {"data_dir": data_dir})
    df["date"] = pd.to_datetime(df["date"]).dt.date
    return df


@st.cache_data(ttl=300, show_spinner="Reading metrics…")
def load(data_dir: str, start: date, end: date, proxies: tuple, metrics: tuple, generation: int) -> pd.DataFrame:
    df = query(SELECT_SQL, {"data_dir": data_dir, "start": start.isoformat(), "end": end.isoformat(),
                            "proxies": list(proxies), "metrics": list(metrics)})
    df["date"] = pd.to_datetime(df["date"]).dt.date
    df["labels"] = df["labels"].map(lambda m: dict(m) if m else {})
    return df


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:,.2f}"


def labels_text(m: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in m.items())


def iso_utc(t) -> str:
    """2024-03-02T00:00:00Z (milliseconds only when present), as query_metrics.py writes it."""
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{t.microsecond // 1000:03d}Z" if t.microsecond else "Z")


def csv_bytes(df: pd.DataFrame) -> bytes:
    """The selected rows in the columns of prom_metrics(), as the query tool writes them."""
    out = pd.DataFrame({
        "timestamp": df["timestamp"].map(iso_utc),
        "date": df["date"].map(date.isoformat),
        "api_proxy": df["api_proxy"],
        "metric_name": df["metric_name"],
        "value": df["value"].map(repr),
        "labels": df["labels"].map(lambda m: json.dumps(m, ensure_ascii=False)),
    })
    return out.to_csv(index=False).encode("utf-8")


# ---------------------------------------------------------------------------
# page

st.set_page_config(page_title="promduck · API metrics", page_icon="🦆", layout="wide")
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

if not EXTENSION.is_file():
    st.error(f"The promduck DuckDB extension was not found at `{EXTENSION}`. "
             "Build it with `make build`, or set `PROMDUCK_EXTENSION` to the `.duckdb_extension` file.")
    st.stop()
if not data_dir or not os.path.isdir(data_dir):
    st.warning(f"No data directory at `{data_dir or '(empty)'}`.")
    st.markdown(
        "Enter the collector's output directory in the sidebar, or start the dashboard with "
        "`PROMDUCK_DATA_DIR=/path/to/data`. To collect data: "
        "`build/promduck-collector --config config/config.yaml` (or `make demo` for a week of "
        "generated demo data in `./data`).")
    st.stop()

try:
    inv = inventory(data_dir, st.session_state.generation)
except DataError as e:
    st.error(f"Could not read `{data_dir}`: {e}")
    st.stop()
if inv.empty:
    st.info(f"`{data_dir}` holds no metrics yet: the collector writes "
            "`YYYY-MM-DD/<proxy>.parquet` there. Collect some days first, e.g. "
            "`build/promduck-collector --config config/config.yaml --from 2024-03-01 --to 2024-03-07`.")
    st.stop()

first_day, last_day = inv["date"].min(), inv["date"].max()
all_proxies = sorted(inv["api_proxy"].unique())
all_metrics = sorted(inv["metric_name"].unique())

sb.header("Filters")
picked = sb.date_input("Date range", value=(first_day, last_day), min_value=first_day, max_value=last_day,
                       format="YYYY-MM-DD", help=f"Days with data: {first_day} to {last_day}")
if isinstance(picked, (tuple, list)):
    start, end = (picked[0], picked[-1]) if picked else (first_day, last_day)
else:
    start = end = picked
proxies = sb.multiselect("API proxies", all_proxies, default=all_proxies)
metrics = sb.multiselect("Metrics", all_metrics, default=all_metrics)

if not proxies or not metrics:
    st.warning("Select at least one API proxy and one metric in the sidebar.")
    st.stop()

try:
    data = load(data_dir, start, end, tuple(proxies), tuple(metrics), st.session_state.generation)
except DataError as e:
    st.error(f"Could not read the metrics: {e}")
    st.stop()

label_keys = sorted({k for m in data["labels"] for k in m if k != "apiproxy"})
sb.header("Series")
split = sb.selectbox("Lines per", ["API proxy"] + [f"API proxy and {k}" for k in label_keys],
                     help="One line per proxy, or per proxy and the value of a label")
split_key = None if split == "API proxy" else split.removeprefix("API proxy and ")
combine = sb.selectbox("Combine the other series by", list(COMBINE), index=0,
                       help="Several rows at one instant for a line (e.g. one per environment) "
                            "are combined this way; sum suits counters such as request_count")

days_shown = f"{start}" if start == end else f"{start} to {end}"
st.caption(f"`{data_dir}` · {days_shown} · {len(proxies)} of {len(all_proxies)} API proxies · "
           f"{len(metrics)} metrics · {len(data):,} rows")
if data.empty:
    st.info("No rows for this selection: pick other days, proxies or metrics.")
    st.stop()

data["series"] = data["api_proxy"]
if split_key:
    data["series"] = data["api_proxy"] + " · " + data["labels"].map(lambda m: m.get(split_key, "(none)"))

tab_ts, tab_agg, tab_raw = st.tabs(["Time series", "Aggregates by API proxy", "Raw data"])

with tab_ts:
    for metric in metrics:
        sub = data[data["metric_name"] == metric]
        if sub.empty:
            st.info(f"No {metric} rows for this selection.")
            continue
        # A daily value (an instant query at the end of day D) carries the timestamp
        # D+1 00:00; plot it on its day D so that the chart reads as the calendar.
        day_start = pd.to_datetime(sub["date"])  # naive UTC, like the timestamp column
        daily = bool((sub["timestamp"] == day_start + pd.Timedelta(days=1)).all())
        x, x_label = ("day", "day") if daily else ("timestamp", "time (UTC)")
        sub = sub.assign(day=day_start)
        series = (sub.groupby(["series", x], as_index=False)["value"].agg(COMBINE[combine])
                  .sort_values(["series", x]))
        fig = px.line(series, x=x, y="value", color="series", markers=True, title=metric,
                      labels={x: x_label, "value": f"{metric} ({combine})", "series": split})
        fig.update_layout(legend_title_text=split, margin=dict(t=50, b=10))
        st.plotly_chart(fig, key=f"ts-{metric}")

with tab_agg:
    for metric in metrics:
        sub = data[data["metric_name"] == metric]
        if sub.empty:
            continue
        daily = sub.groupby(["date", "api_proxy"], as_index=False)["value"].sum().rename(
            columns={"value": "daily_total"})
        st.subheader(metric)
        fig = px.bar(daily.sort_values(["api_proxy", "date"]), x="date", y="daily_total", color="api_proxy",
                     barmode="group", title=f"{metric}: daily total per API proxy",
                     labels={"date": "day", "daily_total": "daily total", "api_proxy": "API proxy"})
        fig.update_xaxes(type="category")
        fig.update_layout(margin=dict(t=50, b=10))
        st.plotly_chart(fig, key=f"agg-{metric}")
        rows = []
        for proxy, g in daily.groupby("api_proxy"):
            values = sub[sub["api_proxy"] == proxy]["value"]
            busiest = g.loc[g["daily_total"].idxmax()]
            rows.append({"API proxy": proxy, "days": len(g), "total": fmt(g["daily_total"].sum()),
                         "daily average": fmt(g["daily_total"].mean()), "daily max": fmt(busiest["daily_total"]),
                         "busiest day": busiest["date"].isoformat(), "rows": len(values),
                         "value average": fmt(values.mean()), "value max": fmt(values.max())})
        st.table(pd.DataFrame(rows).set_index("API proxy"))

with tab_raw:
    c1, c2, c3 = st.columns([1, 1, 2])
    page_size = c1.selectbox("Rows per page", PAGE_SIZES, index=0)
    pages = max(1, math.ceil(len(data) / page_size))
    page = c2.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1,
                           key=f"page-{pages}-{page_size}")
    lo = (page - 1) * page_size
    hi = min(lo + page_size, len(data))
    c3.markdown(f"Rows {lo + 1:,}–{hi:,} of {len(data):,}")
    view = data.iloc[lo:hi]
    st.dataframe(pd.DataFrame({
        "timestamp (UTC)": view["timestamp"], "date": view["date"], "api_proxy": view["api_proxy"],
        "metric_name": view["metric_name"], "value": view["value"],
        "labels": view["labels"].map(labels_text),
    }), hide_index=True)
    st.download_button(f"Download all {len(data):,} rows as CSV", csv_bytes(data),
                       file_name=f"promduck-metrics-{start}-{end}.csv", mime="text/csv")
