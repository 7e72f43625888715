"""Shared pytest fixtures: a real Prometheus serving generated history.

Fixtures (all documented below):
  repo_root          Path of the repository
  prometheus_bin     Path of the dir with the prometheus / promtool binaries
  history            promfixture.History: 4 complete days from 2024-03-01
  prometheus         PrometheusServer over ``history`` (no auth), session wide
  prometheus_auth    PrometheusServer over ``history`` with basic auth
                     (credentials in ``PROMETHEUS_AUTH``), session wide
  start_prometheus   factory: start_prometheus(history, basic_auth=None) ->
                     started PrometheusServer, stopped at the end of the test
  prometheus_metadata  PrometheusServer over ``history`` that scrapes a loopback
                     exporter of EXPORTER_TEXT (so /api/v1/metadata has entries),
                     session wide, once the first scrape's metadata is there
  con                an in-process DuckDB connection with the built extension
                     LOADed, closed at the end of the test
  moto_s3, s3s_fs, s3_bucket   S3-protocol servers (see below)
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import promfixture  # noqa: E402
from promfixture import PrometheusServer, generate_history  # noqa: E402

HISTORY_START = date(2024, 3, 1)
HISTORY_DAYS = 4
HISTORY_PROXIES = ["api-proxy-1", "api-proxy-2", "api-proxy-3", 'we"ird/proxy']
HISTORY_ENVIRONMENTS = ["prod", "test"]
PROMETHEUS_AUTH = ("promduck", "s3cret pa:ss")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return promfixture.REPO_ROOT


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    return promfixture.prometheus_bin_dir()


@pytest.fixture(scope="session")
def history(tmp_path_factory) -> promfixture.History:
    path = tmp_path_factory.mktemp("history") / "history.om"
    return generate_history(path, HISTORY_START, HISTORY_DAYS, HISTORY_PROXIES,
                            HISTORY_ENVIRONMENTS, seed=1)


@pytest.fixture(scope="session")
def prometheus(history, prometheus_bin, tmp_path_factory):
    server = PrometheusServer(history.path, tmp_path_factory.mktemp("prometheus"),
                              bin_dir=prometheus_bin)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prometheus_auth(history, prometheus_bin, tmp_path_factory):
    server = PrometheusServer(history.path, tmp_path_factory.mktemp("prometheus-auth"),
                              basic_auth=PROMETHEUS_AUTH, bin_dir=prometheus_bin)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_prometheus(prometheus_bin, tmp_path_factory):
    """Factory for extra servers: ``start_prometheus(history, basic_auth=None)``."""
    servers: list[PrometheusServer] = []

    def start(hist: promfixture.History, basic_auth=None) -> PrometheusServer:
        server = PrometheusServer(hist.path, tmp_path_factory.mktemp("prometheus-extra"),
                                  basic_auth=basic_auth, bin_dir=prometheus_bin)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


#: What the loopback exporter serves (OpenMetrics, so that UNIT reaches Prometheus).
EXPORTER_TEXT = """# TYPE promduck_test_duration_seconds gauge
# UNIT promduck_test_duration_seconds seconds
# HELP promduck_test_duration_seconds How long a \\"thing\\" took, in seconds.
promduck_test_duration_seconds 1.5
# TYPE promduck_test_events counter
# HELP promduck_test_events Events seen.
promduck_test_events_total 7
# TYPE promduck_test_info gauge
promduck_test_info{kind="x"} 1
# EOF
"""


def exporter_metadata() -> list[tuple[str, str, str, str]]:
    """(metric family, type, help, unit) of EXPORTER_TEXT, read from the text itself."""
    fams: dict[str, dict] = {}
    for line in EXPORTER_TEXT.splitlines():
        parts = line.split(" ", 3)
        if line.startswith("# ") and parts[1] in ("TYPE", "HELP", "UNIT"):
            text = parts[3] if len(parts) > 3 else ""
            if parts[1] == "HELP":
                text = text.replace('\\"', '"').replace("\\\\", "\\")
            fams.setdefault(parts[2], {"TYPE": "", "HELP": "", "UNIT": ""})[parts[1]] = text
    return sorted((name, f["TYPE"], f["HELP"], f["UNIT"]) for name, f in fams.items())


@pytest.fixture(scope="session")
def prometheus_metadata(history, prometheus_bin, tmp_path_factory):
    import json
    import time
    import urllib.request
    from http.server import BaseHTTPRequestHandler

    from helpers import serve_http

    class Exporter(BaseHTTPRequestHandler):
        def do_GET(self):
            body = EXPORTER_TEXT.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    exporter = serve_http(Exporter)
    server = PrometheusServer(history.path, tmp_path_factory.mktemp("prometheus-metadata"), bin_dir=prometheus_bin,
                              scrape_targets=[exporter.url.removeprefix("http://")])
    server.start()
    try:
        # Metadata exists once a scrape happened (every second): wait for all of it.
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(server.url + "/api/v1/metadata", timeout=10) as r:
                data = json.load(r)["data"]
            if len(data) == len(exporter_metadata()):
                break
            assert time.monotonic() < deadline, f"no metadata after 30 s: {data}"
            time.sleep(0.2)
        yield server
    finally:
        server.stop()
        exporter.shutdown()
        exporter.server_close()


# ---------------------------------------------------------------------------
# S3-protocol servers on 127.0.0.1 (tests/s3fixture.py), each behind a recording
# fault proxy: point the product at ``server.endpoint`` (counted, faults apply);
# the helpers check the bucket through ``server.direct_endpoint`` (not counted).
#   moto_s3    s3fixture.MotoServer (moto_server; any credentials), session wide
#   s3s_fs     s3fixture.S3sServer (s3s-fs; SigV4 checked against S3S_ACCESS_KEY /
#              S3S_SECRET_KEY; `make s3s-fs` builds it), session wide
#   s3_bucket  a fresh bucket on moto_s3 (its name); moto_s3's fault rules and
#              request log are cleared before and after the test


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    from s3fixture import MotoServer

    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="session")
def s3s_fs(tmp_path_factory):
    from s3fixture import S3sServer

    with S3sServer(tmp_path_factory.mktemp("s3s-fs")) as server:
        yield server


@pytest.fixture
def s3_bucket(moto_s3):
    moto_s3.reset()
    bucket = moto_s3.create_bucket()
    yield bucket
    moto_s3.reset()
    try:
        moto_s3.delete_bucket(bucket)
    except Exception:  # noqa: BLE001 - a test may have deleted it, or left it unusable on purpose
        pass


# ---------------------------------------------------------------------------
# The extension in-process.


@pytest.fixture
def con():
    """A DuckDB connection (unsigned extensions allowed) with build/promduck.duckdb_extension
    LOADed; closed after the test."""
    import duckdb
    from helpers import EXTENSION

    c = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    c.execute(f"LOAD '{EXTENSION}'")
    yield c
    c.close()


# ---------------------------------------------------------------------------
# No silent skip: a skipped test is a claim nobody checked. The run fails on any skip,
# xfail or xpass whose test is not in this reviewed list; the allowed ones are printed at
# the end with their reasons, so a report always says what it did not check.

ALLOWED_SKIPS = {
    # test node id (parameters included or not) -> why skipping it may be acceptable
    "tests/test_trust_collect.py::test_collectors_with_the_same_pid_never_share_a_temporary_file":
        "needs PID namespaces (`unshare -pf --mount-proc`: root, or unprivileged user namespaces); "
        "without them two collectors cannot be given the same PID",
}

_skips: list[tuple[str, str, bool]] = []  # (node id, outcome and reason, allowed)


def _allowed(nodeid: str) -> bool:
    return any(nodeid == k or nodeid.startswith(k + "[") for k in ALLOWED_SKIPS)


def pytest_runtest_logreport(report):
    if report.skipped or hasattr(report, "wasxfail"):
        if hasattr(report, "wasxfail"):
            what = ("xpass" if report.passed else "xfail") + f": {report.wasxfail}"
        else:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            what = f"skip: {reason}"
        _skips.append((report.nodeid, what, _allowed(report.nodeid)))


def pytest_sessionfinish(session, exitstatus):
    if any(not allowed for _, _, allowed in _skips) and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if not _skips:
        return
    tr = terminalreporter
    bad = [(n, w) for n, w, ok in _skips if not ok]
    ok = [(n, w) for n, w, ok in _skips if ok]
    if ok:
        tr.section("NOT CHECKED (allowed skips, tests/conftest.py ALLOWED_SKIPS)", sep="=", yellow=True, bold=True)
        for n, w in ok:
            tr.line(f"{n}: {w}\n    allowed because: {ALLOWED_SKIPS[n.split('[')[0]]}")
    if bad:
        tr.section("SKIPPED WITHOUT PERMISSION: the run fails (tests/conftest.py ALLOWED_SKIPS)", sep="=", red=True,
                   bold=True)
        for n, w in bad:
            tr.line(f"{n}: {w}")
