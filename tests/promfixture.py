"""Run a real Prometheus filled with generated, exactly-known history.

Library used by the pytest fixtures (tests/conftest.py) and by
scripts/demo-prometheus.py.  Standard library only; ``bcrypt`` is imported
lazily when a server with basic auth is started.

Typical use::

    hist = generate_history(tmp / "history.om", date(2024, 3, 1), 4, ["p1", "p2"])
    with PrometheusServer(hist.path, tmp / "prom") as prom:
        prom.query('sum(increase(apigee_request_count[1d])) by (apiproxy, environment)',
                   time=date(2024, 3, 2))

The generated data: for every proxy and environment one sample every 60 s,
exactly on minute boundaries, from ``start_day 00:00:00 UTC`` through
``start_day + days 00:00:00 UTC`` inclusive, of

* counter ``apigee_request_count{apiproxy,environment}`` (+0..50 per minute),
* counter ``apigee_error_count{apiproxy,environment}``   (+0..3 per minute),
* gauge   ``apigee_latency_ms{apiproxy,environment}``    (integer 10..500).

``History.expected[(day, proxy, env, name)]`` is the exact value Prometheus
returns for ``sum(increase(<metric>{...}[1d])) by (apiproxy, environment)``
evaluated at ``day + 1 00:00:00 UTC``: the sum over consecutive sample pairs in
``[day 00:00, day+1 00:00]`` of ``v2 - v1`` (or ``v2`` after a counter reset).
Counters are integer valued so all sums are exact floats.
"""

from __future__ import annotations

import base64
import calendar
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time as _time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
GET_PROMETHEUS = REPO_ROOT / "scripts" / "get-prometheus.sh"

SAMPLE_INTERVAL = 60  # seconds between samples
SAMPLES_PER_DAY = 86400 // SAMPLE_INTERVAL

#: collector metric name -> Prometheus metric name
COUNTERS = {
    "request_count": "apigee_request_count",
    "error_count": "apigee_error_count",
}
#: maximum per-minute increment of each counter (increments are 0..max)
COUNTER_MAX_INCREMENT = {"request_count": 50, "error_count": 3}
GAUGES = {"latency_ms": "apigee_latency_ms"}
GAUGE_RANGE = (10, 500)


# ---------------------------------------------------------------------------
# helpers


def day_start_ts(day: date) -> int:
    """Unix seconds of ``day`` 00:00:00 UTC."""
    return calendar.timegm(day.timetuple()[:3] + (0, 0, 0))


def to_unix(t) -> float:
    """Seconds since the epoch for a number, a date (00:00 UTC) or a datetime
    (naive datetimes are taken as UTC)."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return t.timestamp()
    if isinstance(t, date):
        return float(day_start_ts(t))
    return float(t)


def escape_label_value(value: str) -> str:
    """Escape a label value for the OpenMetrics / Prometheus text format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def promql_quote(value: str) -> str:
    """A double-quoted PromQL string literal for ``value``."""
    return '"' + escape_label_value(value) + '"'


def _labels(proxy: str, env: str) -> str:
    return f'{{apiproxy="{escape_label_value(proxy)}",environment="{escape_label_value(env)}"}}'


def prometheus_bin_dir() -> Path:
    """Directory holding the ``prometheus`` and ``promtool`` binaries.

    ``$PROMETHEUS_BIN_DIR`` wins if set; otherwise ``.cache/prometheus/usr/bin``
    in the repository, fetched with ``scripts/get-prometheus.sh`` if missing.
    """
    env = os.environ.get("PROMETHEUS_BIN_DIR")
    if env:
        d = Path(env)
        if not (d / "prometheus").is_file():
            raise RuntimeError(f"PROMETHEUS_BIN_DIR={env} does not contain a prometheus binary")
        return d
    d = REPO_ROOT / ".cache" / "prometheus" / "usr" / "bin"
    if (d / "prometheus").is_file() and (d / "promtool").is_file():
        return d
    proc = subprocess.run(
        ["bash", str(GET_PROMETHEUS)], capture_output=True, text=True, cwd=REPO_ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{GET_PROMETHEUS} failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}"
        )
    d = Path(proc.stdout.strip().splitlines()[-1])
    if not (d / "prometheus").is_file():
        raise RuntimeError(f"{GET_PROMETHEUS} printed {d}, which holds no prometheus binary")
    return d


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:``port`` (bind test, like Go's
    listener with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# ---------------------------------------------------------------------------
# history generation


@dataclass
class History:
    """What ``generate_history`` wrote, and the exact answers to expect."""

    path: Path
    start_day: date
    days: int
    proxies: list[str]
    environments: list[str]
    #: collector metric name -> (Prometheus metric name, "counter" | "gauge")
    series: dict = field(default_factory=dict)
    #: (day, proxy, environment, metric_name) -> exact daily increase (counters)
    expected: dict = field(default_factory=dict)
    #: (proxy, environment) -> [(ts_seconds, value), ...] for apigee_latency_ms
    gauge_samples: dict = field(default_factory=dict)
    #: counter resets: (day, proxy, environment, metric_name, ts_seconds)
    resets: list = field(default_factory=list)
    seed: int = 1

    @property
    def days_list(self) -> list[date]:
        """The complete days covered, ``start_day .. start_day + days - 1``."""
        return [self.start_day + timedelta(days=i) for i in range(self.days)]

    @property
    def start_ts(self) -> int:
        return day_start_ts(self.start_day)

    @property
    def end_ts(self) -> int:
        """Timestamp of the last sample (``start_day + days`` 00:00 UTC)."""
        return day_start_ts(self.start_day + timedelta(days=self.days))

    def reset_days(self, metric_name: str = "request_count") -> set:
        """``{(day, proxy, environment)}`` holding a reset of ``metric_name``."""
        return {(d, p, e) for d, p, e, m, _ in self.resets if m == metric_name}


def _counter_values(rng: random.Random, n: int, max_inc: int, reset_at: int | None):
    """n integer counter values; a reset (drop to 0..3) at index ``reset_at``."""
    incs = rng.choices(range(max_inc + 1), k=n - 1)
    start = rng.randint(0, 10_000)
    values = list(itertools.accumulate(incs, initial=start))
    if reset_at is not None:
        prev = values[reset_at - 1]
        low = rng.randint(0, 3)
        if prev > low:
            # after a restart the counter counts up again from `low`
            base = values[reset_at]
            values[reset_at:] = [v - base + low for v in values[reset_at:]]
        else:  # pragma: no cover - practically impossible, but keep data honest
            reset_at = None
    return values, reset_at


def _daily_increases(values: Sequence[int], days: int, per_day: int = SAMPLES_PER_DAY) -> list[float]:
    """Prometheus' increase() over each day window (both ends included)."""
    out = []
    for d in range(days):
        lo = d * per_day
        total = 0
        prev = values[lo]
        for v in values[lo + 1 : lo + per_day + 1]:
            total += v - prev if v >= prev else v
            prev = v
        out.append(float(total))
    return out


def generate_history(
    path,
    start_day: date,
    days: int,
    proxies: Iterable[str],
    environments: Iterable[str] = ("prod", "test"),
    seed: int = 1,
    resets: bool = True,
    interval: int = SAMPLE_INTERVAL,
    counters: dict | None = None,
    gauges: dict | None = None,
) -> History:
    """Write an OpenMetrics file (for ``promtool tsdb create-blocks-from
    openmetrics``) and return the ``History`` with the exact expected values.

    Deterministic for a given (start_day, days, proxies, environments, seed,
    resets).  With ``resets``, the series (proxy #i, environment #j) with
    ``i + j`` even get a counter reset of both counters in the middle of day
    ``(i + 1) % days`` (so proxy #0 / environment #0 resets on day 1).
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    if interval <= 0 or 86400 % interval:
        raise ValueError("interval must divide a day")
    per_day = 86400 // interval
    counters = COUNTERS if counters is None else counters
    gauges = GAUGES if gauges is None else gauges
    path = Path(path)
    proxies = list(proxies)
    environments = list(environments)
    n = days * per_day + 1
    t0 = day_start_ts(start_day)
    ts_strs = [str(t0 + i * interval) for i in range(n)]
    day_list = [start_day + timedelta(days=i) for i in range(days)]

    hist = History(
        path=path,
        start_day=start_day,
        days=days,
        proxies=proxies,
        environments=environments,
        series={**{k: (v, "counter") for k, v in counters.items()},
                **{k: (v, "gauge") for k, v in gauges.items()}},
        seed=seed,
    )

    def reset_index(i: int, j: int) -> int | None:
        if not resets or (i + j) % 2:
            return None
        day_idx = (i + 1) % days
        minute = 600 + (37 * i + 11 * j) % 600  # between 10:00 and 19:59
        return day_idx * per_day + minute * per_day // 1440

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
        for name, prom_name in counters.items():
            f.write(f"# TYPE {prom_name} counter\n")
            for i, proxy in enumerate(proxies):
                for j, env in enumerate(environments):
                    rng = random.Random(f"{seed}|{prom_name}|{proxy}|{env}")
                    values, r = _counter_values(
                        rng, n, COUNTER_MAX_INCREMENT.get(name, 50), reset_index(i, j)
                    )
                    if r is not None:
                        hist.resets.append(
                            (day_list[r // per_day], proxy, env, name,
                             t0 + r * interval)
                        )
                    prefix = prom_name + _labels(proxy, env) + " "
                    f.write("".join(
                        [f"{prefix}{v} {t}\n" for v, t in zip(values, ts_strs)]
                    ))
                    for d, inc in zip(day_list, _daily_increases(values, days, per_day)):
                        hist.expected[(d, proxy, env, name)] = inc
        lo, hi = GAUGE_RANGE
        for name, prom_name in gauges.items():
            f.write(f"# TYPE {prom_name} gauge\n")
            for proxy in proxies:
                for env in environments:
                    rng = random.Random(f"{seed}|{prom_name}|{proxy}|{env}")
                    values = rng.choices(range(lo, hi + 1), k=n)
                    hist.gauge_samples[(proxy, env)] = [
                        (t0 + i * interval, float(v)) for i, v in enumerate(values)
                    ]
                    prefix = prom_name + _labels(proxy, env) + " "
                    f.write("".join(
                        [f"{prefix}{v} {t}\n" for v, t in zip(values, ts_strs)]
                    ))
        f.write("# EOF\n")
    return hist


# ---------------------------------------------------------------------------
# the server


class PrometheusServer:
    """A Prometheus process serving a backfilled TSDB on 127.0.0.1.

    Files in ``workdir``: ``tsdb/`` (backfilled once; ``tsdb.backfilled``
    records from which history file), ``prometheus.yml``, ``web.yml`` (basic
    auth only), ``prometheus.log``, ``prometheus.pid``.
    """

    READY_TIMEOUT = 30.0

    def __init__(self, history_file, workdir, basic_auth=None, port: int | None = None,
                 bin_dir=None, tls: dict | None = None, scrape_targets: list[str] | None = None):
        """``tls``: serve HTTPS with ``{"cert", "key"}`` (PEM paths), requiring client
        certificates signed by ``"client_ca"`` if given; ``"ca"`` (and optionally
        ``"client_cert"``/``"client_key"``) are what this fixture itself connects with."""
        #: One OpenMetrics file, or several (each backfilled into the same TSDB: stretches
        #: of history far apart, e.g. the README's 2024 days beside the demo's recent ones).
        files = history_file if isinstance(history_file, (list, tuple)) else [history_file]
        self.history_files = [Path(f).resolve() for f in files]
        self.history_file = self.history_files[0]
        self.workdir = Path(workdir).resolve()
        self.basic_auth = tuple(basic_auth) if basic_auth else None
        self.tls = dict(tls) if tls else None
        self.port: int | None = port
        self._fixed_port = port is not None
        self.bin_dir = Path(bin_dir) if bin_dir else None
        #: ``host:port`` targets scraped every second as job ``promduck`` (default: none).
        self.scrape_targets = list(scrape_targets or [])
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- paths ---------------------------------------------------------------
    @property
    def tsdb_dir(self) -> Path:
        return self.workdir / "tsdb"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "prometheus.pid"

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("PrometheusServer not started")
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _bin(self, name: str) -> str:
        if self.bin_dir is None:
            self.bin_dir = prometheus_bin_dir()
        return str(self.bin_dir / name)

    # -- setup ---------------------------------------------------------------
    def _history_id(self) -> str:
        ids = []
        for f in self.history_files:
            st = f.stat()
            ids.append(f"{f}\n{st.st_size}\n{st.st_mtime_ns}\n")
        return "".join(ids)

    def backfill(self) -> None:
        """Create the TSDB blocks from the history file (skipped if done)."""
        marker = self.workdir / "tsdb.backfilled"
        hid = self._history_id()
        if marker.is_file() and marker.read_text() == hid and self.tsdb_dir.is_dir():
            return
        marker.unlink(missing_ok=True)
        shutil.rmtree(self.tsdb_dir, ignore_errors=True)
        self.tsdb_dir.mkdir(parents=True)
        for history_file in self.history_files:
            cmd = [self._bin("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                   "--max-block-duration=162h", str(history_file), str(self.tsdb_dir)]
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                out = (proc.stdout + proc.stderr).splitlines()
                raise RuntimeError(
                    f"promtool backfill failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                    + "\n".join(out[-40:])
                )
        marker.write_text(hid)

    def _write_configs(self) -> list[str]:
        cfg = self.workdir / "prometheus.yml"
        if self.scrape_targets:
            scrape = ("scrape_configs:\n  - job_name: promduck\n    scrape_interval: 1s\n    static_configs:\n"
                      "      - targets: " + json.dumps(self.scrape_targets) + "\n")
        else:
            scrape = "scrape_configs: []\n"
        cfg.write_text("global:\n  scrape_interval: 1h\n  evaluation_interval: 1h\n" + scrape)
        args = [f"--config.file={cfg}"]
        web_lines = []
        if self.basic_auth:
            import bcrypt  # lazily: only needed for basic auth

            user, password = self.basic_auth
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
            web_lines.append("basic_auth_users:\n  " + json.dumps(user) + ": " + json.dumps(hashed))
        if self.tls:
            web_lines.append("tls_server_config:\n  cert_file: " + json.dumps(str(self.tls["cert"]))
                             + "\n  key_file: " + json.dumps(str(self.tls["key"])))
            if self.tls.get("client_ca"):
                web_lines.append("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: "
                                 + json.dumps(str(self.tls["client_ca"])))
        if web_lines:
            web = self.workdir / "web.yml"
            web.write_text("\n".join(web_lines) + "\n")
            args.append(f"--web.config.file={web}")
        return args

    # -- lifecycle -----------------------------------------------------------
    def start(self, detach: bool = False) -> "PrometheusServer":
        """Backfill if needed, start Prometheus and wait until it is ready.

        With ``detach`` the process gets its own session, so it survives the
        caller (``stop()`` or the pid file can end it later).
        """
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.backfill()
        cfg_args = self._write_configs()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if not self._fixed_port:
                self.port = free_port()
            try:
                self._launch(cfg_args, detach)
                return self
            except _PortInUse:
                if attempt == attempts - 1:
                    raise RuntimeError(
                        f"Prometheus could not listen on 127.0.0.1:{self.port}: the port is "
                        "in use (is another Prometheus running there?)"
                    ) from None
        return self  # unreachable

    def _launch(self, cfg_args: list[str], detach: bool) -> None:
        # Refuse a taken port up front: otherwise the readiness check could
        # be answered by whatever else listens there.
        if not port_is_free(self.port):
            raise _PortInUse()
        cmd = [self._bin("prometheus"), *cfg_args,
               f"--storage.tsdb.path={self.tsdb_dir}",
               "--storage.tsdb.retention.time=10y",
               f"--web.listen-address=127.0.0.1:{self.port}"]
        self._log = open(self.log_path, "ab")
        start_offset = self._log.tell()
        self._log.write(f"\n==== {' '.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.workdir,
                                     start_new_session=detach)
        self.pid_path.write_text(f"{self.proc.pid}\n")
        deadline = _time.monotonic() + self.READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                self._cleanup()
                tail = self._run_log(start_offset)
                if "address already in use" in tail.lower():
                    raise _PortInUse()
                raise RuntimeError(f"Prometheus exited with {self.proc.returncode}:\n{tail}")
            if self.is_ready() and self.proc.poll() is None:
                return
            if _time.monotonic() > deadline:
                tail = self._run_log(start_offset)
                self.stop()
                raise RuntimeError(
                    f"Prometheus not ready after {self.READY_TIMEOUT:.0f}s on {self.url}:\n{tail}"
                )
            _time.sleep(0.05)

    def _run_log(self, offset: int, n: int = 40) -> str:
        """Last ``n`` lines written to the log since ``offset``."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def is_ready(self) -> bool:
        try:
            status, _ = self.request("/-/ready", timeout=2)
        except OSError:
            return False
        return status == 200

    def stop(self) -> None:
        """Terminate Prometheus (SIGTERM, SIGKILL after 5 s)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.proc is not None and self.proc.poll() is not None:
            try:
                if self.pid_path.read_text().strip() == str(self.proc.pid):
                    self.pid_path.unlink()
            except OSError:
                pass

    def __enter__(self) -> "PrometheusServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP ----------------------------------------------------------------
    def auth_header(self) -> dict:
        if not self.basic_auth:
            return {}
        token = base64.b64encode(f"{self.basic_auth[0]}:{self.basic_auth[1]}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request(self, path: str, params: dict | None = None, auth=True,
                timeout: float = 30) -> tuple[int, bytes]:
        """GET ``path``; returns ``(status, body)`` without raising on HTTP
        errors.  ``auth``: True = the server's credentials, False/None = none,
        or a ``(user, password)`` tuple."""
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {}
        if auth is True:
            headers = self.auth_header()
        elif auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {"Authorization": f"Basic {token}"}
        req = urllib.request.Request(url, headers=headers)
        context = None
        if self.tls:
            import ssl

            context = ssl.create_default_context(cafile=str(self.tls["ca"]))
            if self.tls.get("client_cert"):
                context.load_cert_chain(str(self.tls["client_cert"]), str(self.tls["client_key"]))
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def query(self, promql: str, time=None) -> dict:
        """Instant query; returns the parsed JSON response (raises on errors).
        ``time``: unix seconds, a date (00:00 UTC) or a datetime."""
        params = {"query": promql}
        if time is not None:
            params["time"] = repr(to_unix(time))
        status, body = self.request("/api/v1/query", params)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if status != 200 or not isinstance(data, dict) or data.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: HTTP {status}: {body[:500]!r}")
        return data

    def query_values(self, promql: str, time=None) -> dict:
        """Instant vector query as ``{frozenset(labels.items()): float}``."""
        res = self.query(promql, time)["data"]["result"]
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in res}


class _PortInUse(Exception):
    pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still "exists"; treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def pid_is_prometheus(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return os.path.basename(argv0) == b"prometheus"


def kill_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM ``pid``, SIGKILL after ``timeout`` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        _time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
