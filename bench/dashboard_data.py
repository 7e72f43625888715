"""The dashboard's data sets at real scale, with the values each holds, for
bench/dashboard_bench.py and tests/test_dashboard.py.

(a) ``year``: 200 proxies x 365 days, 3 metrics (request_count, error_count,
    latency_ms) x 2 environments, one row per series and day: 73,000 files,
    438,000 rows. The same files as promduck's ``gen_partitions`` example
    (core/examples/gen_partitions.rs, which `make bench` uses): value =
    day_index * 1000 + proxy_index + env_index, at D 23:59 UTC.
(b) ``wide``: 10,000 proxies x 10 metrics x 1 day x 2 environments: 5 daily
    counters (one value per series at D+1 00:00, as the collector stores an
    instant query) and 5 hourly metrics (a ``step: 1h`` range query: D 01:00 ...
    D+1 00:00): 10,000 files, 2.5 M rows. Proxies weigh Zipf-like (the busiest
    10,000, the next 5,000, ...; a different order per metric) and each proxy's
    hourly shape is shifted by its index.

Files are written in promduck's exact schema: the Arrow schema and footer
metadata are copied from a file promduck itself wrote (``reference``), one
``<dir>/<YYYY-MM-DD>/<proxy>.parquet`` per (day, proxy), zstd like
gen_partitions. Every value is an integer, so sums are exact, and each has a
closed form (``*_value``) from which the expected charts are computed.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
ENVS = ("prod", "test")

# (a)
YEAR_METRICS = ("request_count", "error_count", "latency_ms")


def year_proxy(p: int) -> str:
    return f"api-proxy-{p}"


def year_value(d: int, p: int, e: int) -> float:
    """gen_partitions' value of day index ``d``, proxy index ``p``, environment ``e``."""
    return d * 1000.0 + p + e


# (b)
WIDE_DAILY = ("request_count", "error_count", "bytes_in", "bytes_out", "cache_hits")
WIDE_HOURLY = ("latency_ms", "latency_p99_ms", "cpu_seconds", "connections", "queue_depth")
WIDE_METRICS = WIDE_DAILY + WIDE_HOURLY
TEAMS = ("orders", "payments", "catalog", "search", "identity", "shipping", "billing", "profile")


def wide_proxy(p: int) -> str:
    return f"{TEAMS[p % len(TEAMS)]}-api-{p:05d}"


def wide_rank(p: int, m: int, proxies: int) -> int:
    """1..proxies: proxy ``p``'s place by metric ``m``, a different permutation of the proxies
    for every metric (7919 is prime)."""
    return 1 + ((p + 1237 * m) * 7919) % proxies


def wide_weight(p: int, m: int, proxies: int) -> int:
    """Zipf-like, as API traffic is: the first proxy ``proxies``, the second half of it, ..."""
    return proxies // wide_rank(p, m, proxies)


def wide_shape(m: int, e: int, h: int, p: int = 0) -> int:
    """The metric's shape over environments and hours (h = 1..24, each proxy's day shifted by
    its index; h = 0 for a daily value)."""
    return (m + 1) * (e + 1) * (1 + (h + p) % 6 if h else 1)


def wide_value(p: int, m: int, e: int, h: int, proxies: int) -> float:
    return float(wide_weight(p, m, proxies) * wide_shape(m, e, h, p))


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()) * 1000


# ---------------------------------------------------------------------------
# writing


def reference_format(reference: Path):
    """(Arrow schema, footer key/value metadata) of a file promduck wrote."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(reference)
    meta = {k: v for k, v in (pf.metadata.metadata or {}).items() if k != b"ARROW:schema"}
    assert b"created_by_promduck" in meta, f"{reference} was not written by promduck"
    return pf.schema_arrow.remove_metadata(), meta


def _write(path: Path, schema, meta, ts, names, values, proxy: str, day: date, envs) -> None:
    """One partition: ``ts``, ``names`` (Arrow arrays shared by every proxy), ``values``
    and ``envs`` (the environment of each row) for one proxy and day."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(ts)
    keys = pa.array(["apiproxy", "environment"] * n, pa.string())
    items = pa.array([x for e in envs for x in (proxy, e)], pa.string())
    labels = pa.MapArray.from_arrays(pa.array(range(0, 2 * n + 1, 2), pa.int32()), keys, items,
                                     type=schema.field("labels").type)
    table = pa.Table.from_arrays([
        ts, names, pa.array(values, pa.float64()), pa.array([proxy] * n, pa.string()),
        pa.array([day] * n, pa.date32()), labels,
    ], schema=schema).replace_schema_metadata(meta)
    tmp = path.with_name("." + path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)  # like promduck's writer: readers never see a half-written file


def _year_chunk(args):
    import pyarrow as pa

    out, reference, first, days, proxies, part, parts = args
    schema, meta = reference_format(Path(reference))
    metric_env = [(m, e) for m in YEAR_METRICS for e in range(len(ENVS))]
    names = pa.array([m for m, _ in metric_env], pa.string())
    envs = [ENVS[e] for _, e in metric_env]
    for d in range(part, days, parts):
        day = first + timedelta(days=d)
        folder = Path(out) / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        ts = pa.array([day_start_ms(day) + DAY_MS - 60_000] * len(metric_env), pa.int64())
        for p in range(proxies):
            values = [year_value(d, p, e) for _, e in metric_env]
            _write(folder / f"{year_proxy(p)}.parquet", schema, meta, ts, names, values, year_proxy(p), day, envs)


def write_year(out: Path, reference: Path, days=365, proxies=200, first=date(2024, 1, 1), workers=None) -> Path:
    """(a), the same files as ``gen_partitions OUT DAYS PROXIES FIRST``."""
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_year_chunk, [(str(out), str(reference), first, days, proxies, i, workers)
                                    for i in range(workers)]))
    return out


def wide_rows(day: date):
    """[(metric index, env index, hour, timestamp ms)] of one (b) partition, in file order."""
    start = day_start_ms(day)
    rows = []
    for m, metric in enumerate(WIDE_METRICS):
        hours = [0] if metric in WIDE_DAILY else range(1, 25)
        for e in range(len(ENVS)):
            rows += [(m, e, h, start + (h * HOUR_MS if h else DAY_MS)) for h in hours]
    return rows


def _wide_chunk(args):
    import pyarrow as pa

    out, reference, day, proxies, part, parts = args
    schema, meta = reference_format(Path(reference))
    folder = Path(out) / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    rows = wide_rows(day)
    ts = pa.array([r[3] for r in rows], pa.int64())
    names = pa.array([WIDE_METRICS[r[0]] for r in rows], pa.string())
    envs = [ENVS[r[1]] for r in rows]
    for p in range(part, proxies, parts):
        weights = [wide_weight(p, m, proxies) for m in range(len(WIDE_METRICS))]
        values = [float(weights[m] * wide_shape(m, e, h, p)) for m, e, h, _ in rows]
        _write(folder / f"{wide_proxy(p)}.parquet", schema, meta, ts, names, values, wide_proxy(p), day, envs)


def write_wide(out: Path, reference: Path, proxies=10_000, day=date(2024, 3, 1), workers=None) -> Path:
    """(b)."""
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_wide_chunk, [(str(out), str(reference), day, proxies, i, workers) for i in range(workers)]))
    return out


# ---------------------------------------------------------------------------
# reading the dashboard's charts in the browser (tests/test_dashboard.py,
# bench/dashboard_bench.py)

# Every Vega-Lite chart on the page, as Streamlit sent it: the chart element's spec (JSON)
# and named datasets (Arrow IPC, base64), read from the props of the React component that
# drew it (Streamlit keeps neither the Vega view nor the data in the DOM), with what Vega
# drew of it: the paths of its data marks in the SVG (lines, bars, points, shaded bands).
VEGA_CHARTS_JS = """() => Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]')).map(el => {
  const b64 = (u8) => {
    let s = '';
    for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const key = Object.keys(el).find(k => k.startsWith('__reactFiber$'));
  let f = key ? el[key] : null;
  while (f && !(f.memoizedProps && f.memoizedProps.element && typeof f.memoizedProps.element.spec === 'string'
                && Array.isArray(f.memoizedProps.element.datasets)))
    f = f.return;
  const e = f ? f.memoizedProps.element : null;
  const box = el.getBoundingClientRect();
  return {spec: e ? e.spec : null,
          datasets: e ? e.datasets.map(d => ({name: d.name, arrow: d.data && d.data.data ? b64(d.data.data) : ''}))
                      : [],
          drawn: {line: el.querySelectorAll('svg g.role-mark.mark-line > path').length,
                  bar: el.querySelectorAll('svg g.role-mark.mark-rect > path').length,
                  point: el.querySelectorAll('svg g.role-mark.mark-symbol > path').length},
          visible: box.width > 0 && box.height > 0};
})"""

# The first data mark Vega drew (a line, a bar or a point), for the benchmark's observer.
VEGA_DRAWN_SELECTOR = ('[data-testid="stVegaLiteChart"] svg g.role-mark.mark-line > path, '
                       '[data-testid="stVegaLiteChart"] svg g.role-mark.mark-rect > path, '
                       '[data-testid="stVegaLiteChart"] svg g.role-mark.mark-symbol > path')


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def chart_traces(spec: dict, data: dict) -> dict:
    """A chart's title, subtitle (its lines) and traces from its Vega-Lite spec and datasets:
    per line or bar layer, in drawing order, a trace per value of its colour field in the
    colour scale's (the legend's) order: {name, type ("line" or "bar"), color (the scale's),
    axis ("y2" on a right axis, else "y"), x (a temporal x as ISO UTC text), y}."""
    title = spec.get("title") or ""
    title = title if isinstance(title, dict) else {"text": title}
    subtitle = title.get("subtitle") or []
    traces = []
    for layer in spec.get("layer", [spec]):
        mark = layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
        if mark not in ("line", "bar"):
            continue
        enc = layer["encoding"]
        rows = data[layer["data"]["name"]] if "data" in layer else data[None]
        fx, fy, fc = enc["x"]["field"], enc["y"]["field"], enc["color"]["field"]
        temporal = enc["x"]["type"] == "temporal"
        axis = "y2" if (enc["y"].get("axis") or {}).get("orient") == "right" else "y"
        scale = enc["color"]["scale"]
        by = {}
        for r in rows:
            by.setdefault(r[fc], []).append(r)
        for i, name in enumerate(scale["domain"]):
            if name in by:
                traces.append({"name": name, "type": mark, "color": scale["range"][i], "axis": axis,
                               "x": [iso_ms(r[fx]) if temporal else str(r[fx]) for r in by[name]],
                               "y": [float(r[fy]) for r in by[name]]})
    return {"title": title.get("text", ""), "subtitle": [subtitle] if isinstance(subtitle, str) else list(subtitle),
            "traces": traces}


def vega_charts(page) -> list:
    """The page's Vega-Lite charts (see VEGA_CHARTS_JS), each as chart_traces() gives it, plus
    ``drawn`` (Vega's data-mark paths), ``visible`` and ``digest`` (of the spec and data)."""
    import base64
    import hashlib
    import json

    import pyarrow as pa

    out = []
    for c in page.evaluate(VEGA_CHARTS_JS):
        if c["spec"] is None:
            raise AssertionError("a Vega-Lite chart element without its spec")
        spec = json.loads(c["spec"])
        data = {d["name"]: pa.ipc.open_stream(base64.b64decode(d["arrow"])).read_all().to_pylist()
                if d["arrow"] else [] for d in c["datasets"]}
        chart = chart_traces(spec, data) if spec.get("layer") or spec.get("encoding") else \
            {"title": "", "subtitle": [], "traces": []}
        chart.update(drawn=c["drawn"], visible=c["visible"], spec=spec,
                     digest=hashlib.sha1((c["spec"] + "".join(d["arrow"] for d in c["datasets"])).encode())
                     .hexdigest()[:12])
        out.append(chart)
    return out
