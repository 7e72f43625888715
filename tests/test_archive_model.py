"""Model-based test of the archive (issue 25): random sequences of source states ×
operations, checked after every step against a small reference model of what the
archive must hold.

Source states: a full answer (of some version: values change between versions, as late
samples correct a day), the `env="test"` series dropped, a metric answering nothing, the
first day truncated (the server's oldest sample at its noon: a partial instant value, the
step points before noon missing), and the configuration without one metric.
Operations: the collector (`--from/--to`, with or without `--replace`; it compacts a
compacted month again after collecting), `prom_collect(...)` from SQL (with or without
`replace`; it never compacts), and compaction (`--compact --month`).
After every step `prom_metrics` must equal the model exactly, row for row.

The source is a small fake Prometheus (below): hundreds of source states a sequence
cannot be made of real Prometheus servers in seconds. The same rule is checked against
real Prometheus servers in tests/test_recollect.py.

`PROMDUCK_MODEL_SEQUENCES` (default 120) and `PROMDUCK_MODEL_SEED` choose the run;
`make stress` runs many more. A failure prints the seed and the steps that led to it.
"""

from __future__ import annotations

import json
import os
import random
import re
import urllib.parse
import zlib
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import duckdb
import pytest

from helpers import EXTENSION, run_collector, serve_http

DAYS = [date(2024, 3, 1), date(2024, 3, 2)]
PROXIES = ["p1", "p2"]
ENVS = ["prod", "test"]
METRICS = {  # name → step (None: instant at the day's end)
    "inst": None,
    "rng": 6 * 3600,
}
SEQUENCES = int(os.environ.get("PROMDUCK_MODEL_SEQUENCES", "120"))
SEED = int(os.environ.get("PROMDUCK_MODEL_SEED", "20261207"))
STEPS = 6


def ms(d: date, seconds: int = 0) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() + seconds) * 1000


def day_end(d: date) -> int:
    return ms(d + timedelta(days=1))


class Source:
    """What the fake Prometheus knows now."""

    def __init__(self):
        self.version = 0
        self.dropped_env: str | None = None
        self.silent_metric: str | None = None
        self.horizon_ms: int | None = None  # the oldest sample

    def describe(self) -> str:
        return (f"version={self.version} dropped={self.dropped_env} silent={self.silent_metric} "
                f"horizon={'noon of ' + str(DAYS[0]) if self.horizon_ms else None}")

    def value(self, metric: str, d: date, proxy: str, env: str, ts: int) -> float:
        # crc32, not hash(): the same seed gives the same values in every process.
        key = f"{metric}|{d}|{proxy}|{env}|{ts}|{self.version}".encode()
        return float(zlib.crc32(key) % 1000 + 1)

    def series(self, metric: str, d: date, proxy: str) -> list[tuple[dict, list[tuple[int, float]]]]:
        """The series and points the server returns for one metric, day and proxy."""
        if metric == self.silent_metric:
            return []
        out = []
        for env in ENVS:
            if env == self.dropped_env:
                continue
            step = METRICS[metric]
            if step is None:
                ts_list = [day_end(d)]
            else:
                ts_list = list(range(ms(d) + step * 1000, day_end(d) + 1, step * 1000))
            points = []
            for ts in ts_list:
                if self.horizon_ms and ts < self.horizon_ms:
                    continue
                v = self.value(metric, d, proxy, env, ts)
                if step is None and self.horizon_ms and self.horizon_ms > ms(d):
                    v = v / 2  # an increase over what is left of the day: smaller, wrong
                points.append((ts, v))
            if points:
                out.append(({"apiproxy": proxy, "env": env}, points))
        return out


class FakePrometheus:
    """Answers the collector's instant and range queries from a `Source`, and reports the
    oldest sample on /metrics as Prometheus does (`prometheus_tsdb_lowest_timestamp`)."""

    QUERY = re.compile(r'^(\w+)\{apiproxy="([^"]+)"\}$')

    def __init__(self):
        self.source = Source()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _params(self) -> dict:
                url = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    q.update(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                return q

            def _send(self, body: str, ctype="application/json"):
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self):
                path = urllib.parse.urlparse(self.path).path
                if path == "/metrics":
                    h = fake.source.horizon_ms
                    return self._send(f"prometheus_tsdb_lowest_timestamp {h}\n" if h else "up 1\n", "text/plain")
                q = self._params()
                m = FakePrometheus.QUERY.match(q.get("query", ""))
                if not m:
                    return self._send(json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}))
                metric, proxy = m.groups()
                if path.endswith("/query"):
                    t = int(float(q["time"]) * 1000)
                    d = next(d for d in DAYS if day_end(d) == t)
                    result = [{"metric": labels, "value": [pts[0][0] / 1000, repr(pts[0][1])]}
                              for labels, pts in fake.source.series(metric, d, proxy)]
                    return self._send(json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}))
                start, end = int(float(q["start"]) * 1000), int(float(q["end"]) * 1000)
                d = next(d for d in DAYS if ms(d) < end <= day_end(d))
                result = [{"metric": labels, "values": [[t / 1000, repr(v)] for t, v in pts if start <= t <= end]}
                          for labels, pts in fake.source.series(metric, d, proxy)]
                return self._send(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}))

            do_GET = do_POST = _answer

            def log_message(self, *_):
                pass

        self.server = serve_http(Handler)
        self.url = self.server.url

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- the reference model ------------------------------------------------------------------------

Rows = dict  # (metric, env, ts) → value


def answer(src: Source, metrics: list[str], d: date, proxy: str) -> Rows:
    return {(m, labels["env"], ts): v for m in metrics for labels, pts in src.series(m, d, proxy) for ts, v in pts}


def merge(old: Rows, new: Rows) -> Rows:
    """The re-collection rule: the new rows, plus the archived rows whose key they lack."""
    out = dict(old)
    out.update(new)
    return out


class Model:
    def __init__(self):
        self.daily: dict[tuple, Rows] = {}      # (day, proxy) → daily file rows
        self.month: dict[tuple, Rows] | None = None  # the month file, once compacted

    def visible(self) -> dict[tuple, Rows]:
        return dict(self.month) if self.month is not None else dict(self.daily)

    def archived(self, key) -> Rows | None:
        """What a collection sees as the archived partition: its daily file, else (a
        compacted day) the month file's rows."""
        if key in self.daily:
            return self.daily[key]
        if self.month is not None and key in self.month:
            return self.month[key]
        return None

    def collect(self, src: Source, metrics: list[str], replace: bool):
        for d in DAYS:
            truncated = src.horizon_ms is not None and src.horizon_ms > ms(d)
            for p in PROXIES:
                key = (d, p)
                new = answer(src, metrics, d, p)
                old = self.archived(key)
                if replace:
                    self.daily[key] = new
                elif old:
                    if truncated:
                        continue  # kept as it is
                    self.daily[key] = merge(old, new)
                else:
                    self.daily[key] = new

    def compact(self):
        """Every daily file promduck writes is its partition's whole state (merged from the
        newest archived state when written, or replaced on purpose): compaction takes it in
        whole, so a `replace` is never undone by a later compaction."""
        if self.month is None:
            self.month = {}
        for k, v in self.daily.items():
            self.month[k] = dict(v)
        self.daily = {}


# --- the system under test ---------------------------------------------------------------------------

def write_config(path: Path, url: str, data: Path, metrics: list[str]) -> Path:
    cfg = {
        "apiProxies": PROXIES,
        "prometheus": {
            "url": url, "timeout": "10s", "retries": 0, "batchSize": 1,
            "metrics": [dict({"name": m, "query": m + '{apiproxy="%s"}', "labels": ["apiproxy", "env"]},
                             **({"step": f"{METRICS[m]}s"} if METRICS[m] else {})) for m in metrics],
        },
        "storage": {"outputDir": str(data), "compaction": {"removeDailyAfter": "0s"}},
    }
    path.write_text(json.dumps(cfg))
    return path


def archive_rows(con, data: Path) -> dict[tuple, Rows]:
    out: dict[tuple, Rows] = {}
    if not data.exists():
        return out
    for d, p, m, env, ts, v in con.execute(
            "SELECT date, api_proxy, metric_name, labels['env'], epoch_ms(timestamp), value "
            "FROM prom_metrics(data_dir := ?)", [str(data)]).fetchall():
        out.setdefault((d, p), {})[(m, env, ts)] = v
    return out


def nonempty(parts: dict[tuple, Rows]) -> dict[tuple, Rows]:
    return {k: v for k, v in parts.items() if v}


@pytest.fixture(scope="module")
def fake():
    f = FakePrometheus()
    yield f
    f.close()


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    c.execute(f"LOAD '{EXTENSION}'")
    return c


def run_sequence(seq: int, fake: FakePrometheus, con, root: Path) -> None:
    rnd = random.Random(SEED * 1000 + seq)
    data = root / f"seq{seq}" / "data"
    data.parent.mkdir(parents=True)
    model = Model()
    src = Source()
    fake.source = src
    history: list[str] = []
    all_metrics = list(METRICS)
    for step in range(STEPS):
        # A new source state.
        src.version = rnd.randrange(3)
        src.dropped_env = rnd.choice([None, None, "test"])
        src.silent_metric = rnd.choice([None, None, None, "inst", "rng"])
        src.horizon_ms = rnd.choice([None, None, None, ms(DAYS[0], 12 * 3600)])
        metrics = all_metrics if rnd.random() < 0.8 else [rnd.choice(all_metrics)]
        cfg = write_config(root / f"seq{seq}" / "config.yaml", fake.url, data, metrics)
        op = rnd.choice(["collect", "collect", "collect --replace", "compact", "prom_collect",
                         "prom_collect replace"])
        history.append(f"step {step}: source {src.describe()}, config metrics {metrics}, {op}")
        if op.startswith("collect"):
            replace = op.endswith("--replace")
            r = run_collector("--config", cfg, "--from", DAYS[0], "--to", DAYS[-1], *(["--replace"] if replace else []))
            assert r.returncode == 0, f"seed {SEED} sequence {seq}\n" + "\n".join(history) + "\n" + r.stderr
            model.collect(src, metrics, replace)
            if model.month is not None:  # the collector compacts a compacted month again
                model.compact()
        elif op.startswith("prom_collect"):
            replace = op.endswith("replace")
            outcomes = con.execute("SELECT date, api_proxy, status, error FROM prom_collect(config := ?, "
                                   "start_date := ?, end_date := ?, replace := ?)",
                                   [str(cfg), DAYS[0], DAYS[-1], replace]).fetchall()
            failed = [o for o in outcomes if o[2] not in ("written", "empty", "kept")]
            assert not failed, f"seed {SEED} sequence {seq}\n" + "\n".join(history) + f"\n{failed}"
            model.collect(src, metrics, replace)
        elif data.exists():
            r = run_collector("--config", cfg, "--compact", "--month", "2024-03")
            assert r.returncode == 0, f"seed {SEED} sequence {seq}\n" + "\n".join(history) + "\n" + r.stderr
            if model.daily or model.month is not None:
                model.compact()
        got = nonempty(archive_rows(con, data))
        want = nonempty(model.visible())
        if got != want:
            diff = []
            for k in sorted(set(got) | set(want)):
                g, w = got.get(k, {}), want.get(k, {})
                if g != w:
                    diff.append(f"  {k}: archive has {sorted(set(g.items()) - set(w.items()))[:4]} extra, "
                                f"lacks {sorted(set(w.items()) - set(g.items()))[:4]}")
            pytest.fail(f"seed {SEED} sequence {seq}: the archive differs from the model after\n"
                        + "\n".join(history) + "\n" + "\n".join(diff))


def test_the_archive_equals_the_model_after_every_step(fake, con, tmp_path):
    for seq in range(SEQUENCES):
        run_sequence(seq, fake, con, tmp_path)
    print(f"archive model: {SEQUENCES} sequences × {STEPS} steps, seed {SEED}: the archive equalled the model "
          f"after all {SEQUENCES * STEPS} steps")
