"""A second Prometheus-compatible server: VictoriaMetrics (Debian's `victoria-metrics` 1.79,
unpacked by scripts/get-victoria-metrics.sh, `make victoria-metrics`).

It holds the history of promfixture.generate_history (the generator of every other test),
imported through its Prometheus text import API with millisecond timestamps. The history ends
today at 00:00 UTC: VictoriaMetrics answers /api/v1/series without start/end for the last day
only (see test_series_api_defaults_to_the_last_day); prom_series sends neither unless given
`start`/`"end"`.

Checked with the generator's exact values: the collector (every day, every proxy, counters and
a gauge, batched and one proxy per query), prom_collect, and the live functions prom_query,
prom_query_range (split past 11,000 points), prom_labels, prom_label_values and prom_series, with
`labels := [...]` columns and lists of expressions; prom_metadata against the server's own answer
(VictoriaMetrics 1.79 keeps no metric metadata: see test_metadata_is_empty)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from conftest import HISTORY_ENVIRONMENTS, HISTORY_PROXIES
from helpers import (DEFAULT_METRICS, EXTENSION, LATENCY_Q, REPO_ROOT, day_end_ms, expected_rows, normalise,
                     frozen_now, read_rows, run_collector, today, wait_until, write_config)
from promfixture import free_port, generate_history

GET_VM = REPO_ROOT / "scripts" / "get-victoria-metrics.sh"


def victoria_metrics_bin() -> Path:
    r = subprocess.run(["bash", str(GET_VM)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert r.returncode == 0, f"{GET_VM} failed:\n{r.stderr}"
    return Path(r.stdout.strip().splitlines()[-1])


class VictoriaMetrics:
    """A victoria-metrics process on 127.0.0.1 with its own storage folder."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "victoria-metrics.log", "wb")
        self.proc = subprocess.Popen(
            [str(victoria_metrics_bin()), f"-httpListenAddr=127.0.0.1:{self.port}",
             f"-storageDataPath={workdir / 'data'}", "-retentionPeriod=100y", "-search.disableCache"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        def healthy():
            try:
                return self.get("/health") == b"OK"
            except OSError:
                return False

        try:
            wait_until(healthy, "a healthy victoria-metrics", proc=self.proc)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{(workdir / 'victoria-metrics.log').read_text()[-3000:]}") from None

    def get(self, path: str, params=None) -> bytes:
        url = self.url + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()

    def api(self, path: str, params) -> object:
        body = json.loads(self.get(path, params))
        assert body["status"] == "success", body
        return body["data"]

    def import_openmetrics(self, path: Path) -> int:
        """POSTs an OpenMetrics file (seconds) as Prometheus text lines with millisecond timestamps."""
        lines = []
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                head, ts = line.rsplit(" ", 1)
                lines.append(f"{head} {int(ts) * 1000}\n")
        req = urllib.request.Request(self.url + "/api/v1/import/prometheus", data="".join(lines).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.status == 204
        self.get("/internal/force_flush")
        return len(lines)

    def range_requests(self) -> int:
        """How many /api/v1/query_range requests the server has answered (its own metrics,
        which /metrics renders at most once a second)."""
        time.sleep(1.1)
        for line in self.get("/metrics").decode().splitlines():
            if line.startswith('vm_http_requests_total{path="/api/v1/query_range"}'):
                return int(line.rsplit(" ", 1)[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def vm_history(tmp_path_factory):
    # The same generator and seed as the session's history, on the four days before today
    # (recent: VictoriaMetrics's series API searches the last day of its own clock). The
    # tests name their days explicitly; nothing else depends on the day.
    path = tmp_path_factory.mktemp("vm-history") / "history.om"
    return generate_history(path, today(frozen_now()) - timedelta(days=4), 4, HISTORY_PROXIES, HISTORY_ENVIRONMENTS,
                            seed=1)


#: a series whose only samples are a week before the history (for the series API's default range)
OLD_SERIES = "promduck_old_series"


@pytest.fixture(scope="module")
def vm(vm_history, tmp_path_factory):
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria-metrics"))
    try:
        n = server.import_openmetrics(vm_history.path)
        old = tmp_path_factory.mktemp("vm-old") / "old.om"
        t_old = vm_history.start_ts - 7 * 86400
        old.write_text(f'{OLD_SERIES}{{x="1"}} 1 {t_old}\n{OLD_SERIES}{{x="1"}} 2 {t_old + 60}\n# EOF\n')
        server.import_openmetrics(old)
        # Imported rows become searchable after the flush, within a few seconds: wait for all.
        want = n + 2

        def all_searchable():
            got = server.api("/api/v1/query", {"query": "sum(count_over_time({__name__=~\".+\"}[100d]))",
                                               "time": vm_history.end_ts + 1})
            return got["result"] and float(got["result"][0]["value"][1]) >= want - 2

        wait_until(all_searchable, f"all {want} samples searchable in VictoriaMetrics", interval=0.2)
        yield server
    finally:
        server.stop()


def connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    return con


def latency_at_day_end(history, day, proxy, env) -> float:
    return dict(history.gauge_samples[(proxy, env)])[day_end_ms(day) // 1000]


# --- the collector -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [50, 1], ids=["batched", "per-proxy"])
def test_collector_gives_the_exact_daily_values(vm, vm_history, tmp_path, batch):
    h = vm_history
    metrics = DEFAULT_METRICS + [{"name": "latency_ms", "query": LATENCY_Q, "labels": ["apiproxy", "environment"]}]
    cfg = write_config(tmp_path / "c.yaml", vm.url, h.proxies, metrics=metrics, prometheus_extra={"batchSize": batch})
    first, last = h.days_list[0], h.days_list[-1]
    r = run_collector("--config", cfg, "--from", first, "--to", last, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    want = expected_rows(h)
    want += [(day_end_ms(d), "latency_ms", latency_at_day_end(h, d, p, e), p, d, {"apiproxy": p, "environment": e})
             for d in h.days_list for p in h.proxies for e in h.environments]
    want.sort(key=lambda r: (r[4], r[3], r[1], r[0], str(r[5])))
    assert normalise(read_rows(tmp_path / "data")) == want
    # the days include counter resets, which VictoriaMetrics handles like Prometheus
    assert h.resets


def test_prom_collect_gives_the_exact_daily_values(vm, vm_history, tmp_path):
    h = vm_history
    day = h.days_list[1]
    cfg = write_config(tmp_path / "c.yaml", vm.url, h.proxies)
    con = connect()
    rows = con.execute("SELECT api_proxy, rows, status FROM prom_collect(config := ?, date := ?) ORDER BY 1",
                       [str(cfg), day]).fetchall()
    assert rows == [(p, 2 * len(h.environments), "written") for p in sorted(h.proxies)]
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(h, days=[day])


# --- the live functions ------------------------------------------------------------------------------------------

def test_prom_query_exact(vm, vm_history):
    h = vm_history
    con = connect()
    for day in h.days_list:
        at = datetime.fromtimestamp(day_end_ms(day) / 1000, tz=timezone.utc)
        rows = con.execute("SELECT labels['apiproxy'], labels['environment'], value, epoch_ms(timestamp) FROM prom_query("
                           "'sum(increase(apigee_request_count[1d])) by (apiproxy, environment)', url := ?, at := ?)",
                           [vm.url, at]).fetchall()
        assert sorted(rows) == sorted((p, e, h.expected[(day, p, e, "request_count")], day_end_ms(day))
                                      for p in h.proxies for e in h.environments)
    day = h.days_list[2]
    t = datetime.fromtimestamp(h.start_ts + 2 * 86400 + 12 * 3600 + 7 * 60, tz=timezone.utc)
    rows = con.execute("SELECT metric_name, labels, value FROM prom_query("
                       "'apigee_latency_ms{apiproxy=\"we\\\"ird/proxy\",environment=\"test\"}', url := ?, at := ?)",
                       [vm.url, t]).fetchall()
    assert rows == [("apigee_latency_ms", {"apiproxy": 'we"ird/proxy', "environment": "test"},
                     dict(h.gauge_samples[('we"ird/proxy', "test")])[int(t.timestamp())])]


def test_prom_query_range_split_past_11000_points_is_exact(vm, vm_history):
    h = vm_history
    start = datetime.fromtimestamp(h.start_ts + 86400 + 3 * 3600, tz=timezone.utc)
    end = start + timedelta(hours=4)  # 14,401 points at 1 s: two requests
    before = vm.range_requests()
    rows = connect().execute(
        "SELECT epoch(timestamp)::BIGINT, value FROM prom_query_range("
        "'apigee_latency_ms{apiproxy=\"api-proxy-2\",environment=\"test\"}', ?, ?, INTERVAL 1 SECOND, url := ?) ORDER BY 1",
        [start, end, vm.url]).fetchall()
    samples = dict(h.gauge_samples[("api-proxy-2", "test")])
    s0 = int(start.timestamp())
    assert rows == [(t, samples[t - (t - s0) % 60]) for t in range(s0, s0 + 4 * 3600 + 1)]  # no duplicates
    assert vm.range_requests() - before == 2
    rows = connect().execute("SELECT epoch(timestamp)::BIGINT, labels['environment'], value FROM prom_query_range("
                             "'sum(increase(apigee_error_count{apiproxy=\"api-proxy-1\"}[1d])) by (environment)', ?, ?, '24h', "
                             "url := ?) ORDER BY 1, 2",
                             [datetime.fromtimestamp(day_end_ms(h.days_list[0]) / 1000, tz=timezone.utc),
                              datetime.fromtimestamp(day_end_ms(h.days_list[-1]) / 1000, tz=timezone.utc), vm.url]).fetchall()
    assert rows == [(day_end_ms(d) // 1000, e, h.expected[(d, "api-proxy-1", e, "error_count")])
                    for d in h.days_list for e in sorted(h.environments)]


def test_labels_label_values_series(vm, vm_history):
    h = vm_history
    con = connect()
    assert [r[0] for r in con.execute("SELECT * FROM prom_labels(url := ?) ORDER BY 1", [vm.url]).fetchall()] == [
        "__name__", "apiproxy", "environment", "x"]
    assert [r[0] for r in con.execute("SELECT * FROM prom_label_values('apiproxy', url := ?) ORDER BY 1",
                                      [vm.url]).fetchall()] == sorted(h.proxies)
    series = con.execute("SELECT metric_name, labels FROM prom_series('apigee_error_count{environment=\"prod\"}', url := ?) "
                         "ORDER BY labels['apiproxy']", [vm.url]).fetchall()
    assert series == [("apigee_error_count", {"apiproxy": p, "environment": "prod"}) for p in sorted(h.proxies)]
    series = con.execute("SELECT metric_name, labels FROM prom_series(['apigee_latency_ms{apiproxy=\"api-proxy-1\"}', "
                         "'apigee_request_count{apiproxy=\"api-proxy-3\"}'], url := ?) ORDER BY ALL", [vm.url]).fetchall()
    assert series == [("apigee_latency_ms", {"apiproxy": "api-proxy-1", "environment": e}) for e in sorted(h.environments)] + [
        ("apigee_request_count", {"apiproxy": "api-proxy-3", "environment": e}) for e in sorted(h.environments)]


def test_label_columns_and_lists_of_expressions(vm, vm_history):
    h = vm_history
    con = connect()
    queries = ['sum(increase(apigee_request_count[1d])) by (apiproxy, environment)',
               'sum(increase(apigee_error_count[1d])) by (apiproxy, environment)']
    day = h.days_list[1]
    at = datetime.fromtimestamp(day_end_ms(day) / 1000, tz=timezone.utc)
    rows = con.execute("SELECT query, apiproxy, environment, value FROM prom_query(?, url := ?, at := ?, "
                       "labels := ['apiproxy', 'environment'])", [queries, vm.url, at]).fetchall()
    assert sorted(rows) == sorted((q, p, e, h.expected[(day, p, e, m)])
                                  for q, m in zip(queries, ("request_count", "error_count"))
                                  for p in h.proxies for e in h.environments)
    start = datetime.fromtimestamp(h.start_ts + 2 * 86400 + 5 * 3600, tz=timezone.utc)
    sel = ['apigee_latency_ms{apiproxy="api-proxy-2"}', 'apigee_latency_ms{apiproxy="api-proxy-3"}']
    rows = con.execute("SELECT query, environment, epoch(timestamp)::BIGINT, value FROM prom_query_range(?, ?, ?, '1m', "
                       "url := ?, labels := ['environment'])", [sel, start, start + timedelta(minutes=30), vm.url]).fetchall()
    s0 = int(start.timestamp())
    assert sorted(rows) == sorted((q, e, t, dict(h.gauge_samples[(p, e)])[t])
                                  for q, p in zip(sel, ("api-proxy-2", "api-proxy-3")) for e in h.environments
                                  for t in range(s0, s0 + 1801, 60))
    rows = con.execute("SELECT apiproxy, environment FROM prom_series('apigee_request_count', url := ?, "
                       "labels := ['apiproxy', 'environment'])", [vm.url]).fetchall()
    assert sorted(rows) == sorted((p, e) for p in h.proxies for e in h.environments)
    with pytest.raises(duckdb.Error) as e:
        con.execute("SELECT * FROM prom_query(['up', 'sum(up'], url := ?)", [vm.url]).fetchall()
    assert 'query 2 of 2 ("sum(up")' in str(e.value)


def test_metadata_is_empty(vm):
    """VictoriaMetrics 1.79 answers /api/v1/metadata with no metadata (it stores none): prom_metadata
    returns what the server says, no rows."""
    assert vm.api("/api/v1/metadata", {}) == {}
    con = connect()
    assert con.execute("SELECT * FROM prom_metadata(url := ?)", [vm.url]).fetchall() == []
    assert con.execute("SELECT * FROM prom_metadata(url := ?, metric := 'apigee_request_count', \"limit\" := 5)",
                       [vm.url]).fetchall() == []


# --- what a user must know (the README's notes) ------------------------------------------------------------------

def test_series_api_defaults_to_the_last_day(vm, vm_history):
    """/api/v1/series without start/end: Prometheus searches all time, VictoriaMetrics only the
    last day. prom_series without start/"end" sends neither, so a series without recent samples
    is found only with a range."""
    con = connect()
    assert con.execute(f"SELECT count(*) FROM prom_series('{OLD_SERIES}', url := ?)", [vm.url]).fetchall() == [(0,)]
    assert vm.api("/api/v1/series", {"match[]": OLD_SERIES, "start": vm_history.start_ts - 8 * 86400}) == [
        {"__name__": OLD_SERIES, "x": "1"}]
    # With a range that holds its samples, prom_series finds it (start and "end", or start alone).
    t0 = datetime.fromtimestamp(vm_history.start_ts - 8 * 86400, tz=timezone.utc)
    assert con.execute(f"SELECT metric_name, labels FROM prom_series('{OLD_SERIES}', url := ?, start := ?, \"end\" := ?)",
                       [vm.url, t0, t0 + timedelta(days=2)]).fetchall() == [(OLD_SERIES, {"x": "1"})]
    assert con.execute(f"SELECT metric_name FROM prom_series('{OLD_SERIES}', url := ?, start := ?)",
                       [vm.url, t0]).fetchall() == [(OLD_SERIES,)]
    # its samples are there for queries
    t = datetime.fromtimestamp(vm_history.start_ts - 7 * 86400 + 60, tz=timezone.utc)
    assert con.execute(f"SELECT value FROM prom_query('{OLD_SERIES}', url := ?, at := ?)", [vm.url, t]).fetchall() == [(2.0,)]


def test_increase_is_not_extrapolated(vm, vm_history, prometheus, history):
    """MetricsQL's increase() is the difference from the last sample before the window to the last
    one in it, never extrapolated; Prometheus extrapolates when samples do not meet the window's
    edges. At a day's end with samples on the minute (the collector's daily query) both agree."""
    def raw(h, prom_name, proxy, env):
        prefix = f'{prom_name}{{apiproxy="{proxy}",environment="{env}"}} '
        return {int(line.rsplit(" ", 1)[1]): float(line[len(prefix):].rsplit(" ", 1)[0])
                for line in h.path.read_text().splitlines() if line.startswith(prefix)}

    q = 'increase(apigee_request_count{apiproxy="api-proxy-2",environment="test"}[1h])'
    con = connect()
    for h, url in ((vm_history, vm.url), (history, prometheus.url)):
        v = raw(h, "apigee_request_count", "api-proxy-2", "test")
        t = h.start_ts + 2 * 86400 + 15 * 3600 + 30  # 30 s after a sample: the window's edges miss the samples
        got = con.execute("SELECT value FROM prom_query(?, url := ?, at := ?)",
                          [q, url, datetime.fromtimestamp(t, tz=timezone.utc)]).fetchone()[0]
        x = t - 30  # the last sample in the window (t - 3600, t]
        inc = lambda s: v[s] - v[s - 60] if v[s] >= v[s - 60] else v[s]  # noqa: E731  (a reset counts from 0)
        # from the last sample before the window (x - 3600), 60 steps
        plain = sum(inc(s) for s in range(x - 3540, x + 1, 60))
        # Prometheus: the 59 steps inside the window, stretched to the window's 3600 s
        extrapolated = sum(inc(s) for s in range(x - 3480, x + 1, 60)) * 3600 / 3540
        if url == vm.url:
            assert got == plain
        else:
            assert got != plain and abs(got - extrapolated) < 1e-9 * extrapolated
