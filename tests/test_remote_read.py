"""Prometheus reads the archive (issue 28): ``promduck-collector --serve`` answers
Prometheus's remote read, and a second, real Prometheus with an empty TSDB and a
``remote_read`` block evaluates PromQL over archived days.

Every expected value comes from ``prom_metrics`` in DuckDB over the same archive
(exact floats: Prometheus's JSON prints the shortest string that reads back as the
same double), never from the server's own output.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fixtures_data import LATENCY, METRICS, collected_data
from helpers import COLLECTOR, HANG_GUARD_S, now_env, run_collector, utc, wait_until, write_config
from promfixture import PrometheusServer, escape_label_value, free_port, promql_quote

AUTH = ("reader", "s3cret-pw")


@pytest.fixture(scope="module")
def data(prometheus, history, tmp_path_factory) -> Path:
    return collected_data(prometheus, history, tmp_path_factory)


class ArchiveServer:
    """``promduck-collector --serve`` on a free loopback port."""

    def __init__(self, workdir: Path, prometheus_url: str, proxies, data: Path, serve=None, config=None,
                 env=None, args=()):
        """Serves ``data`` (a folder), or what ``config`` (a config file) says with ``env``;
        ``args``: more arguments (``--daemon``)."""
        workdir.mkdir(parents=True, exist_ok=True)
        top = {"serve": serve} if serve else None
        self.config = config or write_config(workdir / "serve.yaml", prometheus_url, proxies, metrics=METRICS,
                                             output_dir=data, top_extra=top)
        self.port = free_port()
        self.log = workdir / "serve.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(COLLECTOR), "--config", str(self.config), "--serve", f"127.0.0.1:{self.port}", *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=workdir, env=env)
        wait_until(self._metrics_or_none, "the remote-read server answering /metrics", proc=self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _metrics_or_none(self):
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None

    def counter(self, name: str) -> float:
        text = self._metrics_or_none() or ""
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert m, f"{name} not in /metrics:\n{text}"
        return float(m.group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=HANG_GUARD_S)


class ReaderPrometheus(PrometheusServer):
    """A real Prometheus with an empty TSDB whose only data is the archive, read
    through its ``remote_read`` block."""

    def __init__(self, workdir: Path, bin_dir, read_url: str, auth=None, local=None, read_recent=True):
        """``local``: an OpenMetrics file backfilled into its own TSDB (default: empty)."""
        super().__init__(local or workdir / "no-history", workdir, bin_dir=bin_dir)
        self.read_url = read_url
        self.read_auth = auth
        self.local = local
        self.read_recent = read_recent

    def backfill(self) -> None:
        if self.local:
            super().backfill()
        self.tsdb_dir.mkdir(parents=True, exist_ok=True)

    def _write_configs(self) -> list[str]:
        cfg = self.workdir / "prometheus.yml"
        block = {"url": self.read_url, "read_recent": self.read_recent}
        if self.read_auth:
            block["basic_auth"] = {"username": self.read_auth[0], "password": self.read_auth[1]}
        cfg.write_text(json.dumps({
            "global": {"scrape_interval": "1h", "evaluation_interval": "1h"},
            "scrape_configs": [],
            "remote_read": [block],
        }, indent=2))
        return [f"--config.file={cfg}"]


@pytest.fixture(scope="module")
def server(prometheus, history, data, tmp_path_factory):
    s = ArchiveServer(tmp_path_factory.mktemp("serve"), prometheus.url, history.proxies, data)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reader(server, prometheus_bin, tmp_path_factory):
    p = ReaderPrometheus(tmp_path_factory.mktemp("reader"), prometheus_bin, server.url + "/api/v1/read")
    p.start()
    yield p
    p.stop()


def day_end(day) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() + 86400


def stored(con, data: Path, metric: str, day, proxy=None) -> list[tuple[dict, int, float]]:
    """(labels, epoch ms, value) of ``metric`` on ``day`` as ``prom_metrics`` returns them."""
    sql = ("SELECT map_keys(labels), map_values(labels), epoch_ms(timestamp), value "
           "FROM prom_metrics(data_dir := ?, metric := ?) WHERE date = ?")
    args = [str(data), metric, day]
    if proxy is not None:
        sql += " AND api_proxy = ?"
        args.append(proxy)
    rows = con.execute(sql, args).fetchall()
    assert rows, f"no {metric} rows on {day}"
    return [(dict(zip(k, v)), ts, value) for k, v, ts, value in rows]


def test_last_over_time_at_a_day_end_is_the_archived_daily_value(reader, data, history, con):
    for day in history.days_list:
        got = reader.query_values("last_over_time(request_count[1d])", time=day_end(day))
        # Prometheus 2.x's last_over_time keeps the metric name.
        want = {frozenset({**labels, "__name__": "request_count"}.items()): value
                for labels, _, value in stored(con, data, "request_count", day)}
        assert got == want, day


def test_sum_by_proxy_equals_the_archive(reader, data, history, con):
    day = history.days_list[1]
    got = reader.query_values("sum by (apiproxy) (last_over_time(request_count[1d]))", time=day_end(day))
    want: dict = {}
    for labels, _, value in stored(con, data, "request_count", day):
        key = frozenset({"apiproxy": labels["apiproxy"]}.items())
        want[key] = want[key] + value if key in want else value
    assert got == want


def test_range_query_over_the_hourly_metric_is_every_stored_point(reader, data, history, con):
    day = history.days_list[2]
    proxy = history.proxies[0]
    start, end = day_end(day) - 86400 + 3600, day_end(day)
    status, body = reader.request("/api/v1/query_range", {
        "query": f'{LATENCY}{{apiproxy="{proxy}"}}', "start": start, "end": end, "step": 3600})
    assert status == 200, body
    got = {frozenset(r["metric"].items()): [(int(t * 1000), float(v)) for t, v in r["values"]]
           for r in json.loads(body)["data"]["result"]}
    want: dict = {}
    for labels, ts, value in stored(con, data, LATENCY, day, proxy):
        want.setdefault(frozenset({**labels, "__name__": LATENCY}.items()), []).append((ts, value))
    assert got == {k: sorted(v) for k, v in want.items()}
    assert all(len(v) == 24 for v in got.values())


def test_max_over_time_over_the_hourly_metric(reader, data, history, con):
    """A range function over a step metric, at a step that is not the metric's own."""
    day = history.days_list[3]
    proxy = history.proxies[3]
    start, end, step, window = day_end(day) - 86400 + 5400, day_end(day), 7200, 6 * 3600
    status, body = reader.request("/api/v1/query_range", {
        "query": f"max_over_time({LATENCY}{{apiproxy={promql_quote(proxy)}}}[6h])", "start": start, "end": end, "step": step})
    assert status == 200, body
    got = {frozenset(r["metric"].items()): [(int(t), float(v)) for t, v in r["values"]]
           for r in json.loads(body)["data"]["result"]}
    # the window reaches into the day before
    points: dict = {}
    for d in history.days_list[2:4]:
        for labels, ts, value in stored(con, data, LATENCY, d, proxy):
            points.setdefault(frozenset(labels.items()), []).append((ts / 1000, value))
    want = {}
    for key, pts in points.items():
        series = []
        t = start
        while t <= end:
            inside = [v for ts, v in pts if t - window <= ts <= t]
            if inside:
                series.append((int(t), max(inside)))
            t += step
        want[key] = series
    assert got == want


def test_a_range_bounded_by_midnights_reads_only_the_days_it_needs(reader, server, history, data, con):
    """A day's samples are in (midnight, next midnight] (a daily value at the next
    midnight). ``last_over_time(x[1d])`` at the ends of days 1 and 2 selects
    [day 1 00:00, day 3 00:00] (Prometheus 2 includes both ends): days 0 to 2, not
    day 3, whose samples all come after day 3 00:00."""
    days, n = history.days_list, len(history.proxies)
    before = server.counter("promduck_serve_files_read_total")
    status, body = reader.request("/api/v1/query_range", {
        "query": "last_over_time(request_count[1d])", "start": day_end(days[1]), "end": day_end(days[2]),
        "step": 86400})
    assert status == 200, body
    assert server.counter("promduck_serve_files_read_total") - before == 3 * n
    got = {frozenset(r["metric"].items()): [(int(t * 1000), float(v)) for t, v in r["values"]]
           for r in json.loads(body)["data"]["result"]}
    want: dict = {}
    for day in days[1:3]:
        for labels, ts, value in stored(con, data, "request_count", day):
            want.setdefault(frozenset({**labels, "__name__": "request_count"}.items()), []).append((ts, value))
    assert got == want
    # An instant selector at a day's end (5 minutes of lookback before it): that day alone.
    before = server.counter("promduck_serve_files_read_total")
    assert reader.query_values("request_count", time=day_end(days[1]))
    assert server.counter("promduck_serve_files_read_total") - before == n


def extrapolated_rate(points, range_start_ms, range_end_ms, range_s, is_rate):
    """Prometheus 2.42's ``extrapolatedRate`` (promql/functions.go) for a counter, step
    by step in the same order of float operations (the factor divided by the range,
    then applied): the increase with resets added back, extrapolated towards the
    window's ends (at most half an average interval past the first/last sample, and not
    below zero at the start)."""
    if len(points) < 2:
        return None
    (t0, v0), (tn, vn) = points[0], points[-1]
    result = vn - v0
    last = 0.0
    for _, v in points:
        if v < last:
            result += last
        last = v
    to_start = (t0 - range_start_ms) / 1000
    to_end = (range_end_ms - tn) / 1000
    sampled = (tn - t0) / 1000
    average = sampled / (len(points) - 1)
    if result > 0 and v0 >= 0:
        to_zero = sampled * (v0 / result)
        if to_zero < to_start:
            to_start = to_zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    factor = interval / sampled
    if is_rate:
        factor /= range_s
    return result * factor


@pytest.mark.parametrize("func", ["rate", "increase"])
def test_rate_and_increase_over_the_hourly_metric(reader, data, history, con, func):
    """``rate``/``increase`` over the hourly (step) metric, as Prometheus computes them
    from the archived samples. Evaluated at half past the hour, so no sample sits on a
    window's edge (2.x and 3.x agree on which samples a window holds) and extrapolation
    is exercised; the first windows reach into the day before. The gauge goes down at
    times, so counter resets are exercised too."""
    day, before = history.days_list[2], history.days_list[1]
    proxy = history.proxies[1]
    start, end, step, window = day_end(before) + 1800, day_end(day) - 1800, 7200, 3 * 3600
    status, body = reader.request("/api/v1/query_range", {
        "query": f"{func}({LATENCY}{{apiproxy={promql_quote(proxy)}}}[3h])", "start": start, "end": end,
        "step": step})
    assert status == 200, body
    got = {frozenset(r["metric"].items()): [(int(t), float(v)) for t, v in r["values"]]
           for r in json.loads(body)["data"]["result"]}
    points: dict = {}
    for d in (before, day):
        for labels, ts, value in stored(con, data, LATENCY, d, proxy):
            points.setdefault(frozenset(labels.items()), []).append((ts, value))
    want = {}
    for key, pts in points.items():
        pts.sort()
        series = []
        t = start
        while t <= end:
            lo, hi = int((t - window) * 1000), int(t * 1000)
            v = extrapolated_rate([p for p in pts if lo <= p[0] <= hi], lo, hi, window, func == "rate")
            if v is not None:
                series.append((int(t), v))
            t += step
        want[key] = series
    assert got.keys() == want.keys()
    for key in want:
        assert len(got[key]) == len(want[key]) == 12, key
        # Exact: Go and Python compute the same IEEE doubles in the same order.
        assert got[key] == want[key], key
    assert any(any(b < a for (_, a), (_, b) in zip(p, p[1:])) for p in points.values()), \
        "no counter reset in the data: the test would not exercise resets"


def test_one_proxy_one_day_reads_one_partition(reader, server, history):
    day = history.days_list[1]
    before = server.counter("promduck_serve_files_read_total")
    noon = day_end(day) - 43200
    got = reader.query_values(f'{LATENCY}{{apiproxy="{history.proxies[1]}"}}', time=noon)
    assert got, "no series answered"
    assert server.counter("promduck_serve_files_read_total") - before == 1


def test_each_selector_reads_its_own_days(reader, server, history, data, con):
    """Two selectors a day and two days apart: Prometheus asks each for the whole query's
    range, and its hints narrow each to its own day, as its TSDB reads them."""
    day = history.days_list[3]
    sel = f'last_over_time({LATENCY}{{apiproxy="{history.proxies[0]}"}}[1h])'
    before = server.counter("promduck_serve_files_read_total")
    earlier = sel.replace("[1h]", "[1h] offset 2d")
    noon = day_end(day) - 43200
    got = reader.query_values(f"{sel} + {earlier}", time=noon)
    assert server.counter("promduck_serve_files_read_total") - before == 2
    # the same answer: each side is the noon sample of its day (the binary + drops the name)
    want: dict = {}
    for d, at in ((day, noon), (history.days_list[1], noon - 2 * 86400)):
        for labels, ts, value in stored(con, data, LATENCY, d, history.proxies[0]):
            if ts == at * 1000:
                key = frozenset(labels.items())
                want[key] = want[key] + value if key in want else value
    assert len(want) == len(history.environments)
    assert got == want


def post_read(url: str, headers=None) -> int:
    req = urllib.request.Request(url + "/api/v1/read", data=b"", method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_auth_refuses_requests_without_the_credentials(prometheus, history, data, prometheus_bin,
                                                       tmp_path):
    s = ArchiveServer(tmp_path / "serve", prometheus.url, history.proxies, data,
                      serve={"username": AUTH[0], "password": AUTH[1]})
    try:
        assert post_read(s.url) == 401
        wrong = base64.b64encode(f"{AUTH[0]}:nope".encode()).decode()
        assert post_read(s.url, {"Authorization": f"Basic {wrong}"}) == 401
        assert s.counter('promduck_serve_read_requests_total{outcome="unauthorized"}') == 2
        p = ReaderPrometheus(tmp_path / "reader", prometheus_bin, s.url + "/api/v1/read", auth=AUTH)
        p.start()
        try:
            day = history.days_list[0]
            assert p.query_values("last_over_time(request_count[1d])", time=day_end(day))
        finally:
            p.stop()
        assert AUTH[1] not in s.log.read_text()
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("key,value", [("maxSamples", 5), ("maxResponseBytes", 1000)])
def test_a_request_past_a_limit_is_a_clear_error(prometheus, history, data, prometheus_bin, tmp_path, key, value):
    s = ArchiveServer(tmp_path / "serve", prometheus.url, history.proxies, data, serve={key: value})
    try:
        p = ReaderPrometheus(tmp_path / "reader", prometheus_bin, s.url + "/api/v1/read")
        p.start()
        try:
            status, body = p.request("/api/v1/query", {
                "query": f"{LATENCY}[1d]", "time": day_end(history.days_list[0])})
            assert f"serve.{key}".encode() in body, (status, body[:500])
            assert s.counter('promduck_serve_read_requests_total{outcome="client_error"}') == 1
        finally:
            p.stop()
    finally:
        assert s.stop() == 0


def test_sigterm_stops_the_server_with_exit_0(prometheus, history, data, tmp_path):
    """It logs what it does on the signal (no collector's "finishing files" line)."""
    s = ArchiveServer(tmp_path / "serve", prometheus.url, history.proxies, data)
    assert s.stop() == 0
    log = s.log.read_text()
    assert "stopping the remote-read server" in log and "remote-read server stopped" in log, log
    assert "finishing files" not in log, log


def test_a_bucket_is_served_as_a_folder(prometheus, history, data, moto_s3, prometheus_bin, con, tmp_path):
    from s3fixture import child_env, write_s3_config

    bucket = moto_s3.create_bucket()
    for f in sorted(data.rglob("*.parquet")):
        moto_s3.put(bucket, f"archive/{f.relative_to(data).as_posix()}", f.read_bytes())
    cfg = write_s3_config(tmp_path / "serve.yaml", prometheus.url, history.proxies, moto_s3, bucket, "archive",
                          metrics=METRICS)
    s = ArchiveServer(tmp_path / "serve", prometheus.url, history.proxies, data, config=cfg,
                      env=child_env(moto_s3))
    try:
        p = ReaderPrometheus(tmp_path / "reader", prometheus_bin, s.url + "/api/v1/read")
        p.start()
        try:
            day = history.days_list[-1]
            got = p.query_values("last_over_time(request_count[1d])", time=day_end(day))
            want = {frozenset({**labels, "__name__": "request_count"}.items()): value
                    for labels, _, value in stored(con, data, "request_count", day)}
            assert got == want
            before = s.counter("promduck_serve_files_read_total")
            assert p.query_values(f'{LATENCY}{{apiproxy="{history.proxies[2]}"}}', time=day_end(day) - 43200)
            assert s.counter("promduck_serve_files_read_total") - before == 1
        finally:
            p.stop()
    finally:
        assert s.stop() == 0
        moto_s3.delete_bucket(bucket)


def test_a_damaged_file_is_an_error_naming_it(prometheus, history, data, prometheus_bin, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    day, proxy = history.days_list[0], history.proxies[0]
    bad = copy / day.isoformat() / f"{proxy}.parquet"
    bad.write_bytes(b"PAR1 not a parquet file PAR1")
    s = ArchiveServer(tmp_path / "serve", prometheus.url, history.proxies, copy)
    try:
        p = ReaderPrometheus(tmp_path / "reader", prometheus_bin, s.url + "/api/v1/read")
        p.start()
        try:
            status, body = p.request("/api/v1/query", {
                "query": f'{LATENCY}{{apiproxy="{proxy}"}}', "time": day_end(day) - 43200})
            assert str(bad).encode() in body, (status, body[:500])
        finally:
            p.stop()
        assert s.counter('promduck_serve_read_requests_total{outcome="server_error"}') == 1
    finally:
        assert s.stop() == 0


def test_tiered_recent_days_local_older_days_from_the_archive(prometheus, history, data, prometheus_bin,
                                                             con, tmp_path):
    """``read_recent: false``: the last two days are only in the Prometheus's own TSDB, the
    first two only in the archive; a range query over the four is one seamless answer."""
    days = history.days_list
    old, recent = days[:2], days[2:]
    archive = shutil.copytree(data, tmp_path / "data")
    for day in recent:
        shutil.rmtree(archive / day.isoformat())
    lines = ["# TYPE request_count gauge"]
    want: dict = {}
    for day in days:
        for labels, ts, value in stored(con, data, "request_count", day):
            key = frozenset({**labels, "__name__": "request_count"}.items())
            want.setdefault(key, []).append((int(day_end(day)) * 1000, value))
            if day in recent:
                text = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(labels.items()))
                lines.append(f"request_count{{{text}}} {value!r} {ts / 1000}")
    local = tmp_path / "recent.om"
    local.write_text("\n".join(lines) + "\n# EOF\n")
    s = ArchiveServer(tmp_path / "serve", prometheus.url, history.proxies, archive)
    try:
        p = ReaderPrometheus(tmp_path / "reader", prometheus_bin, s.url + "/api/v1/read", local=local,
                             read_recent=False)
        p.start()
        try:
            status, body = p.request("/api/v1/query_range", {
                "query": "last_over_time(request_count[1d])",
                "start": day_end(days[0]), "end": day_end(days[-1]), "step": 86400})
            assert status == 200, body
            got = {frozenset(r["metric"].items()): [(int(t * 1000), float(v)) for t, v in r["values"]]
                   for r in json.loads(body)["data"]["result"]}
            assert got == want
            # the archive answered the old days; a range after the TSDB's first sample is
            # the TSDB's alone (read_recent: false)
            assert s.counter("promduck_serve_samples_total") > 0
            before = s.counter('promduck_serve_read_requests_total{outcome="ok"}')
            assert p.query_values("last_over_time(request_count[1h])", time=day_end(days[-1]))
            assert s.counter('promduck_serve_read_requests_total{outcome="ok"}') == before
        finally:
            p.stop()
    finally:
        assert s.stop() == 0


def test_a_compacted_month_is_served_as_its_days(prometheus, history, data, prometheus_bin, con, tmp_path):
    """After ``--compact`` the month is one file: the same answers, and a one-proxy one-day
    query still opens one file (the month file, read for that proxy's row groups)."""
    copy = shutil.copytree(data, tmp_path / "data")
    cfg = write_config(tmp_path / "compact.yaml", prometheus.url, history.proxies, metrics=METRICS, output_dir=copy)
    month = history.days_list[0].strftime("%Y-%m")
    r = run_collector("--config", cfg, "--compact", "--month", month, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (copy / month / f"{month}.parquet").is_file()
    s = ArchiveServer(tmp_path / "serve", prometheus.url, history.proxies, copy)
    try:
        p = ReaderPrometheus(tmp_path / "reader", prometheus_bin, s.url + "/api/v1/read")
        p.start()
        try:
            for day in history.days_list:
                got = p.query_values("last_over_time(request_count[1d])", time=day_end(day))
                want = {frozenset({**labels, "__name__": "request_count"}.items()): value
                        for labels, _, value in stored(con, data, "request_count", day)}
                assert got == want, day
            before = s.counter("promduck_serve_files_read_total")
            day = history.days_list[1]
            assert p.query_values(f'{LATENCY}{{apiproxy="{history.proxies[0]}"}}', time=day_end(day) - 43200)
            assert s.counter("promduck_serve_files_read_total") - before == 1
        finally:
            p.stop()
    finally:
        assert s.stop() == 0


# --- a remote-read client of our own: Prometheus 2.42 asks only for SAMPLES ---------------
# Written from Prometheus's prompb/*.proto, storage/remote/chunked.go and
# tsdb/chunkenc/xor.go, independently of the server's Rust code.

def pb_varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pb_int(field: int, n: int) -> bytes:
    return pb_varint(field << 3) + pb_varint(n)


def pb_bytes(field: int, b: bytes | str) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return pb_varint(field << 3 | 2) + pb_varint(len(b)) + b


def pb_fields(buf: bytes):
    """(field, value) of a protobuf message: ints for varints, bytes for the rest."""
    i = 0
    while i < len(buf):
        key, i = read_uvarint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_uvarint(buf, i)
        elif wire == 2:
            n, i = read_uvarint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise AssertionError(f"wire type {wire}")
        yield field, value


def read_uvarint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7


def as_int64(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def snappy_literal(data: bytes) -> bytes:
    """Snappy's raw format with literals only (valid, just not smaller)."""
    out = bytearray(pb_varint(len(data)))
    for i in range(0, len(data), 65536):
        part = data[i:i + 65536]
        n = len(part) - 1
        out += bytes([n << 2]) if n < 60 else (bytes([60 << 2, n]) if n < 256 else bytes([61 << 2]) + n.to_bytes(2, "little"))
        out += part
    return bytes(out)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def xor_samples(chunk: bytes) -> list[tuple[int, int]]:
    """(timestamp ms, value bits) of an XOR chunk, as xorIterator reads it."""
    bits = "".join(f"{b:08b}" for b in chunk[2:])
    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        v = int(bits[pos:pos + n], 2) if n else 0
        pos += n
        return v

    def uvarint() -> int:
        n = shift = 0
        while True:
            b = take(8)
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7

    out = []
    t = v = delta = leading = trailing = 0
    for i in range(int.from_bytes(chunk[:2], "big")):
        if i == 0:
            z = uvarint()
            t, v = (z >> 1) ^ -(z & 1), take(64)
        else:
            if i == 1:
                delta = uvarint()
            else:
                ones = 0
                while ones < 4 and take(1) == 1:
                    ones += 1
                size = (0, 14, 17, 20, 64)[ones]
                dod = take(size)
                if size == 64:
                    dod = as_int64(dod)
                elif size and dod > 1 << (size - 1):
                    dod -= 1 << size
                delta += dod
            t += delta
            if take(1) == 1:
                if take(1) == 1:
                    leading, sig = take(5), take(6) or 64
                    trailing = 64 - leading - sig
                v ^= take(64 - leading - trailing) << trailing
        out.append((t, v))
    return out


def raw_read(url: str, queries, accepted=(1,)) -> tuple[str, bytes]:
    """POSTs a ReadRequest of ``queries`` (start ms, end ms, [(type, name, value)]) that
    accepts ``accepted`` response types; returns the Content-Type and the body."""
    request = b"".join(
        pb_bytes(1, pb_int(1, start) + pb_int(2, end) + b"".join(
            pb_bytes(3, pb_int(1, op) + pb_bytes(2, name) + pb_bytes(3, value)) for op, name, value in matchers))
        for start, end, matchers in queries) + b"".join(pb_int(2, t) for t in accepted)
    req = urllib.request.Request(url + "/api/v1/read", data=snappy_literal(request), method="POST", headers={
        "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
    with urllib.request.urlopen(req, timeout=HANG_GUARD_S) as r:
        return r.headers["Content-Type"], r.read()


def streamed_read(url: str, queries, accepted=(1,)) -> tuple[str, list[tuple[int, dict, list]]]:
    """``raw_read``, the body parsed as frames: the Content-Type and, per frame,
    (query index, labels, [(t, value bits)])."""
    content_type, body = raw_read(url, queries, accepted)
    frames, i = [], 0
    while i < len(body):
        size, i = read_uvarint(body, i)
        crc, msg = int.from_bytes(body[i:i + 4], "big"), body[i + 4:i + 4 + size]
        assert len(msg) == size and crc32c(msg) == crc, f"frame at {i}: bad size or CRC-32C"
        i += 4 + size
        index = 0
        for f, v in pb_fields(msg):
            if f == 2:
                index = v
        for f, series in pb_fields(msg):
            if f != 1:
                continue
            labels, samples = {}, []
            for g, v in pb_fields(series):
                if g == 1:
                    kv = dict(pb_fields(v))
                    labels[kv.get(1, b"").decode()] = kv.get(2, b"").decode()
                elif g == 2:
                    c = dict(pb_fields(v))
                    assert c.get(3) == 1, "chunk encoding is not XOR"
                    got = xor_samples(c[4])
                    assert (as_int64(c.get(1, 0)), as_int64(c.get(2, 0))) == (got[0][0], got[-1][0])
                    assert len(got) <= 120
                    samples += got
            frames.append((index, labels, samples))
    return content_type, frames


EQ, RE = 0, 2


def test_crc32c_and_xor_decoder_against_known_values():
    """The test's own decoders checked on published values: CRC-32C's check value, and
    a chunk laid out by hand from xor.go (two samples 1 s apart, both 1.0)."""
    assert crc32c(b"123456789") == 0xE3069283
    chunk = bytes([0, 2, 0xD0, 0x0F, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0, 0xE8, 0x07, 0])
    assert xor_samples(chunk) == [(1000, 0x3FF0000000000000), (2000, 0x3FF0000000000000)]


def test_streamed_xor_chunks_round_trip_every_sample(prometheus, history, data, con, tmp_path):
    """STREAMED_XOR_CHUNKS: frames (uvarint size, CRC-32C, ChunkedReadResponse) of XOR
    chunks (at most 120 samples) decode to the stored samples bit for bit: a written
    series of 200 samples holding NaN, +-Inf, -0.0 and subnormals at irregular intervals
    (every delta-of-delta width), and an archived series compared with prom_metrics."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = shutil.copytree(data, tmp_path / "data")
    day = history.days_list[0]
    midnight = int(day_end(day) * 1000) - 86_400_000
    gaps = [1, 1000, 60_000, 59_999, 8_193, 65_537, 524_289, 2, 3_000_000, 7]
    specials = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.5, 1e308, 5e-324, 2.2250738585072014e-308]
    ts, values, t = [], [], midnight
    for i in range(200):
        t += gaps[i % len(gaps)]
        ts.append(t)
        values.append(specials[i % len(specials)] if i % 3 else i * 0.1 - 7.3)
    assert ts[-1] <= midnight + 86_400_000
    labels_type = pa.map_(pa.string(), pa.string())
    table = pa.table({
        "timestamp": pa.array(ts, pa.int64()),
        "metric_name": pa.array(["special_values"] * len(ts)),
        "value": pa.array(values, pa.float64()),
        "api_proxy": pa.array(["special"] * len(ts)),
        "date": pa.array([day] * len(ts), pa.date32()),
        "labels": pa.array([[("apiproxy", "special")]] * len(ts), labels_type),
    })
    pq.write_table(table, copy / day.isoformat() / "special.parquet")
    s = ArchiveServer(tmp_path / "serve", prometheus.url, [*history.proxies, "special"], copy)
    try:
        proxy, other = history.proxies[1], history.days_list[1]
        content_type, frames = streamed_read(s.url, [
            (midnight, midnight + 86_400_000, [(EQ, "__name__", "special_values")]),
            (int(day_end(other) * 1000) - 86_400_000 + 1, int(day_end(other) * 1000),
             [(EQ, "__name__", LATENCY), (RE, "apiproxy", re.escape(proxy))]),
        ])
        assert content_type == "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
        got: dict = {}
        for index, labels, samples in frames:
            got.setdefault((index, frozenset(labels.items())), []).extend(samples)
        bits = [struct.unpack("<Q", struct.pack("<d", v))[0] for v in values]
        assert got.pop((0, frozenset({"__name__": "special_values", "apiproxy": "special"}.items()))) == \
            list(zip(ts, bits))
        want: dict = {}
        for labels, t_ms, value in stored(con, data, LATENCY, other, proxy):
            key = (1, frozenset({**labels, "__name__": LATENCY}.items()))
            want.setdefault(key, []).append((t_ms, struct.unpack("<Q", struct.pack("<d", value))[0]))
        assert got == {k: sorted(v) for k, v in want.items()}
        # SAMPLES when the client prefers it; no type this server answers: a 400 naming them
        _, frames = streamed_read(s.url, [(midnight, midnight + 1, [(EQ, "__name__", "x")])], accepted=(1, 0))
        assert frames == []
        with pytest.raises(urllib.error.HTTPError) as e:
            streamed_read(s.url, [(0, 1, [(EQ, "__name__", "x")])], accepted=(7,))
        assert e.value.code == 400 and b"accepted response types [7]" in e.value.read()
    finally:
        assert s.stop() == 0
    # One sample of one series: within serve.maxResponseBytes as SAMPLES (the reader's
    # bound), not as a frame (size, CRC and chunk header around it): refused, naming it.
    s = ArchiveServer(tmp_path / "serve-small", prometheus.url, [*history.proxies, "special"], copy,
                      serve={"maxResponseBytes": 86})
    try:
        one = [(ts[0], ts[0], [(EQ, "__name__", "special_values")])]
        content_type, _ = raw_read(s.url, one, accepted=(0,))
        assert content_type == "application/x-protobuf"
        with pytest.raises(urllib.error.HTTPError) as e:
            raw_read(s.url, one)
        assert e.value.code == 422 and b"serve.maxResponseBytes" in e.value.read()
    finally:
        assert s.stop() == 0


def test_a_slow_s3_read_does_not_block_another_request(prometheus, history, data, moto_s3, s3_bucket, con,
                                                        tmp_path):
    """While one request waits on an object S3 is slow to send (held by the proxy in
    front of moto until the test lets it go), a request for another partition is
    answered; then the slow one completes with its own data."""
    from s3fixture import child_env, write_s3_config

    for f in sorted(data.rglob("*.parquet")):
        moto_s3.put(s3_bucket, f"archive/{f.relative_to(data).as_posix()}", f.read_bytes())
    cfg = write_s3_config(tmp_path / "serve.yaml", prometheus.url, history.proxies, moto_s3, s3_bucket, "archive",
                          metrics=METRICS)
    day = history.days_list[0]
    slow, fast = history.proxies[0], history.proxies[1]
    release = threading.Event()
    rule = moto_s3.add_fault("delay", key_contains=f"{day.isoformat()}/{slow}.parquet", until=release, times=1)
    s = ArchiveServer(tmp_path / "serve", prometheus.url, history.proxies, data, config=cfg, env=child_env(moto_s3))
    end = int(day_end(day) * 1000)

    def query(proxy):
        return [(end - 86_400_000 + 1, end, [(EQ, "__name__", LATENCY), (EQ, "apiproxy", proxy)])]

    events: list[str] = []
    slow_result: dict = {}

    def slow_read():
        try:
            slow_result["frames"] = streamed_read(s.url, query(slow))[1]
        finally:
            events.append("slow answered")

    try:
        t = threading.Thread(target=slow_read, daemon=True)
        t.start()
        wait_until(lambda: rule.fired >= 1, "the slow request reaching S3 for its object", proc=s.proc)
        _, frames = streamed_read(s.url, query(fast))
        events.append("fast answered")
        assert {lbl["apiproxy"] for _, lbl, _ in frames} == {fast}
        assert sum(len(x) for _, _, x in frames) == len(stored(con, data, LATENCY, day, fast))
        assert events == ["fast answered"], "the other request waited for the slow object"
        release.set()
        t.join(HANG_GUARD_S)
        assert events == ["fast answered", "slow answered"]
        assert sum(len(x) for _, _, x in slow_result["frames"]) == len(stored(con, data, LATENCY, day, slow))
    finally:
        release.set()
        assert s.stop() == 0


def test_the_daemon_serves_what_it_collects(prometheus, history, data, con, tmp_path):
    """``--serve ADDR --daemon``: one process collects (as the daemon does) and serves the
    archive it writes; the collected day answers as prom_metrics reads it; a signal stops
    both (exit 0), each saying so."""
    out = tmp_path / "out"
    day = history.days_list[1]
    now = utc(day.year, day.month, day.day, 12) + timedelta(days=1)  # the day after: day is the last complete one
    env = {**os.environ, **now_env(now)}
    s = ArchiveServer(tmp_path / "serve", prometheus.url, history.proxies, out, env=env,
                      args=("--daemon", "--catch-up-days", "0"))
    try:
        wait_until(lambda: "waiting for the next collection" in s.log.read_text(),
                   "the daemon finishing its first collection", proc=s.proc)
        assert (out / day.isoformat()).is_dir(), s.log.read_text()
        end = int(day_end(day) * 1000)
        _, frames = streamed_read(s.url, [(end - 86_400_000 + 1, end, [(EQ, "__name__", "request_count")])])
        got = {frozenset(labels.items()): samples for _, labels, samples in frames}
        want = {frozenset({**labels, "__name__": "request_count"}.items()):
                [(t, struct.unpack("<Q", struct.pack("<d", v))[0])]
                for labels, t, v in stored(con, out, "request_count", day)}
        assert got == want
    finally:
        assert s.stop() == 0
    log = s.log.read_text()
    assert "finishing files in progress" in log and "remote-read server stopped" in log, log
