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
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fixtures_data import LATENCY, METRICS, collected_data
from helpers import COLLECTOR, HANG_GUARD_S, run_collector, wait_until, write_config
from promfixture import PrometheusServer, escape_label_value, free_port, promql_quote

AUTH = ("reader", "s3cret-pw")


@pytest.fixture(scope="module")
def data(prometheus, history, tmp_path_factory) -> Path:
    return collected_data(prometheus, history, tmp_path_factory)


class ArchiveServer:
    """``promduck-collector --serve`` on a free loopback port."""

    def __init__(self, workdir: Path, prometheus_url: str, proxies, data: Path, serve=None, config=None,
                 env=None):
        """Serves ``data`` (a folder), or what ``config`` (a config file) says with ``env``."""
        workdir.mkdir(parents=True, exist_ok=True)
        top = {"serve": serve} if serve else None
        self.config = config or write_config(workdir / "serve.yaml", prometheus_url, proxies, metrics=METRICS,
                                             output_dir=data, top_extra=top)
        self.port = free_port()
        self.log = workdir / "serve.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(COLLECTOR), "--config", str(self.config), "--serve", f"127.0.0.1:{self.port}"],
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


def test_one_proxy_one_day_reads_one_partition(reader, server, history):
    day = history.days_list[1]
    before = server.counter("promduck_serve_files_read_total")
    noon = day_end(day) - 43200
    got = reader.query_values(f'{LATENCY}{{apiproxy="{history.proxies[1]}"}}', time=noon)
    assert got, "no series answered"
    assert server.counter("promduck_serve_files_read_total") - before == 1


def test_each_selector_reads_its_own_days(reader, server, history):
    """Two selectors a day and two days apart: Prometheus asks each for the whole query's
    range, and its hints narrow each to its own day, as its TSDB reads them."""
    day = history.days_list[3]
    sel = f'last_over_time({LATENCY}{{apiproxy="{history.proxies[0]}"}}[1h])'
    before = server.counter("promduck_serve_files_read_total")
    earlier = sel.replace("[1h]", "[1h] offset 2d")
    got = reader.query_values(f"{sel} + {earlier}", time=day_end(day) - 43200)
    assert got, "no series answered"
    assert server.counter("promduck_serve_files_read_total") - before == 2


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
    s = ArchiveServer(tmp_path / "serve", prometheus.url, history.proxies, data)
    assert s.stop() == 0


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
