"""Hardening: passwords and tokens never appear in anything promduck prints or writes.

Every way of giving a secret (``password``, ``passwordFile``, ``passwordEnv``,
``user:pass@`` in the URL, ``bearerToken``, ``bearerTokenFile``,
``bearerTokenEnv``, an ``Authorization`` entry in ``headers``) is run through every collector mode (``--check``, ``--date``,
``--from/--to``, ``--once``, the daemon stopped with SIGTERM) and through the error
paths (wrong secret → 401, unreachable URL, bad PromQL, bad config), in both log
formats and with ``PROMDUCK_LOG=trace``; stdout, stderr and every file written are
searched for the secret (and its base64 / percent-encoded forms). The same for the
extension's live functions and ``prom_collect``.

Basic auth is checked against the real Prometheus with basic auth (the
``prometheus_auth`` fixture); bearer tokens against the real Prometheus behind
the fault proxy's bearer check (tests/faultproxy.py).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from faultproxy import FaultProxy
from helpers import (COLLECTOR, day_end_ms, now_env, partition_files, read_rows, run_collector, utc, wait_until,
                     write_config, yesterday)

# "Now" for --once and the daemon: yesterday is the history's last day, 2024-03-04.
NOW = utc(2024, 3, 5, 6)

TOKEN = "S3cr3t-ZZ9-plural-Z-alpha"
WRONG_TOKEN = "S3cr3t-ZZ9-plural-Z-omega-wrong"
WRONG_PASSWORD = "Wr0ng-ZZ9-plural-Z-beta pa:ss"
PROXY = "api-proxy-1"
ENV_VAR = "PROMDUCK_TEST_SECRET_VALUE"

# Every library's trace lines too: PROMDUCK_LOG=trace alone keeps the HTTP libraries at info.
TRACE_ALL = "trace,hyper=trace,hyper_util=trace,reqwest=trace,h2=trace,rustls=trace,tower=trace,tokio_util=trace"

LOG_VARIANTS = {
    "text": ([], {}),
    "json": (["--log-format", "json"], {}),
    "trace-text": ([], {"PROMDUCK_LOG": TRACE_ALL}),
    "trace-json": (["--log-format", "json"], {"PROMDUCK_LOG": TRACE_ALL}),
}


def halves(secret: str) -> list[str]:
    """Both halves of ``secret`` (each at least 6 characters when the secret has them):
    a leak of either half is a leak."""
    n = max(6, (len(secret) + 1) // 2)  # together they cover every character
    return [secret[:n], secret[-n:]]


def forms(user: str | None, secret: str) -> list[str]:
    """Every spelling of ``secret`` that must not appear: itself, its first and second
    halves, percent-encoded (as in a URL or a form), and the base64 of an Authorization
    header."""
    out = {secret, *halves(secret), urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    if user is not None:
        out.add(base64.b64encode(f"{user}:{secret}".encode()).decode())
    else:
        out.add(base64.b64encode(secret.encode()).decode())
    return sorted(out)


def test_secret_forms_cover_both_halves():
    """The search looks for each half on its own (RELIABILITY.md: "the secret, its halves")."""
    for secret in (TOKEN, WRONG_TOKEN, WRONG_PASSWORD, "s3cret pa:ss"):
        got = forms("promduck", secret)
        first, second = halves(secret)
        assert first in got and second in got
        assert secret.startswith(first) and secret.endswith(second)
        assert len(first) + len(second) >= len(secret), "the halves together cover the whole secret"
        assert first != second
        # A text holding only the second half is caught.
        with pytest.raises(AssertionError):
            assert_no_secret(got, f"log line ...{second}...")


def assert_no_secret(secrets, *texts, where=""):
    for text in texts:
        for s in secrets:
            assert s not in text, f"secret form {s!r} leaked {where}:\n{text[:4000]}"


def assert_no_secret_in_files(root: Path, secrets, skip=()):
    """Every file under ``root`` except ``skip`` (the config and secret files we wrote)."""
    skip = {Path(p).resolve() for p in skip}
    checked = 0
    for p in root.rglob("*"):
        if p.is_file() and p.resolve() not in skip:
            data = p.read_bytes()
            for s in secrets:
                assert s.encode() not in data, f"secret form {s!r} found in {p}"
            checked += 1
    return checked


# --- the ways of giving a secret -------------------------------------------------------------------------------

class Cred:
    """One way of configuring a secret: builds the config's prometheus section."""

    def __init__(self, name, kind):
        self.name, self.kind = name, kind  # kind: "basic" or "bearer"

    def setup(self, work: Path, base_url: str, user: str, secret: str):
        """Returns (url, prometheus_extra, env, files written that hold the secret)."""
        env, files, extra, url = {}, [], {}, base_url
        if self.name == "password":
            extra = {"username": user, "password": secret}
        elif self.name == "passwordFile":
            (work / "pw.txt").write_text(secret + "\n")
            files.append(work / "pw.txt")
            extra = {"username": user, "passwordFile": "pw.txt"}
        elif self.name == "passwordEnv":
            env[ENV_VAR] = secret
            extra = {"username": user, "passwordEnv": ENV_VAR}
        elif self.name == "url":
            u = urllib.parse.urlsplit(base_url)
            url = (f"{u.scheme}://{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(secret, safe='')}"
                   f"@{u.netloc}{u.path}")
        elif self.name == "bearerToken":
            extra = {"bearerToken": secret}
        elif self.name == "bearerTokenFile":
            (work / "token").write_text(secret + "\n")
            files.append(work / "token")
            extra = {"bearerTokenFile": str(work / "token")}
        elif self.name == "bearerTokenEnv":
            env[ENV_VAR] = secret
            extra = {"bearerTokenEnv": ENV_VAR}
        elif self.name == "headers":
            extra = {"headers": {"Authorization": f"Bearer {secret}"}}
        else:  # pragma: no cover
            raise AssertionError(self.name)
        return url, extra, env, files

    def __repr__(self):
        return self.name


CREDS = [Cred("password", "basic"), Cred("passwordFile", "basic"), Cred("passwordEnv", "basic"),
         Cred("url", "basic"), Cred("bearerToken", "bearer"), Cred("bearerTokenFile", "bearer"),
         Cred("bearerTokenEnv", "bearer"), Cred("headers", "bearer")]


@pytest.fixture(scope="module")
def bearer_proxy(prometheus):
    p = FaultProxy(prometheus.url, bearer_token=TOKEN).start()
    yield p
    p.stop()


class Target:
    def __init__(self, url, user, secret, secrets):
        self.url, self.user, self.secret, self.secrets = url, user, secret, secrets


def make_target(cred: Cred, prometheus_auth, bearer_proxy, secret=None) -> Target:
    """Where ``cred`` authenticates (basic: the real Prometheus with basic auth;
    bearer: the fault proxy's bearer check in front of the real Prometheus), with
    the right secret unless ``secret`` is given."""
    if cred.kind == "basic":
        user, right = prometheus_auth.basic_auth
        s = right if secret is None else secret
        return Target(prometheus_auth.url, user, s, forms(user, s) + forms(None, s))
    s = TOKEN if secret is None else secret
    return Target(bearer_proxy.url, None, s, forms(None, s))


def setup_config(tmp_path: Path, cred: Cred, tgt: Target, url=None, metrics=None, prometheus_extra=None,
                 config_text_edit=None):
    url0, extra, env, files = cred.setup(tmp_path, url or tgt.url, tgt.user, tgt.secret)
    extra.update({"retries": 1, "timeout": "5s"})
    extra.update(prometheus_extra or {})
    cfg = write_config(tmp_path / "c.yaml", url0, [PROXY], metrics=metrics, prometheus_extra=extra)
    if config_text_edit:
        cfg.write_text(config_text_edit(cfg.read_text()))
    return cfg, env, files + [cfg]


# --- every mode, every log format ----------------------------------------------------------------------------------

MODES = {
    "check": ["--check"],
    "date": ["--date", "2024-03-02"],
    "range": ["--from", "2024-03-01", "--to", "2024-03-02"],
    "once": ["--once"],
}


@pytest.mark.parametrize("log", list(LOG_VARIANTS))
@pytest.mark.parametrize("cred", CREDS, ids=repr)
def test_modes_never_show_the_secret(prometheus_auth, bearer_proxy, history, tmp_path, cred, log):
    tgt = make_target(cred, prometheus_auth, bearer_proxy)
    cfg, env, own_files = setup_config(tmp_path, cred, tgt)
    args, log_env = LOG_VARIANTS[log]
    for mode, margs in MODES.items():
        r = run_collector("--config", cfg, *margs, *args, cwd=tmp_path, env={**env, **log_env, **now_env(NOW)})
        assert r.returncode == 0, f"{mode}: {r.stdout}{r.stderr}"
        assert_no_secret(tgt.secrets, r.stdout, r.stderr, where=f"in {mode} output")
        if log.startswith("trace"):
            assert "TRACE" in r.stderr or '"level":"TRACE"' in r.stderr or mode == "check", r.stderr[:2000]
    assert "ok" in run_collector("--config", cfg, "--check", cwd=tmp_path, env=env).stdout
    # The data really came through the authenticated connection.
    day = history.days_list[1]
    rows = [r for r in read_rows(tmp_path / "data") if r[4] == day and r[1] == "request_count"]
    assert sorted(r[2] for r in rows) == sorted(history.expected[(day, PROXY, e, "request_count")]
                                                for e in history.environments)
    assert partition_files(tmp_path / "data") == {f"{d}/{PROXY}.parquet"
                                                  for d in ("2024-03-01", "2024-03-02", yesterday(NOW))}
    searched = assert_no_secret_in_files(tmp_path, tgt.secrets, skip=own_files)
    assert searched == len([p for p in tmp_path.rglob("*") if p.is_file()]) - len(own_files)


@pytest.mark.parametrize("cred", CREDS, ids=repr)
def test_daemon_never_shows_the_secret_and_stops_cleanly_on_sigterm(prometheus_auth, bearer_proxy, tmp_path, cred):
    tgt = make_target(cred, prometheus_auth, bearer_proxy)
    cfg, env, own_files = setup_config(tmp_path, cred, tgt)
    log_args = ["--log-format", "json"] if CREDS.index(cred) % 2 else []
    out, err = tmp_path / "daemon.out", tmp_path / "daemon.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--catch-up-days", "1", *log_args],
                                cwd=tmp_path, env={**os.environ, **env, "PROMDUCK_LOG": TRACE_ALL, **now_env(NOW)},
                                stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: "waiting for the next collection" in err.read_text(),
                       "'waiting for the next collection'", proc=proc)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = err.read_text()
    assert code == 0, stderr[-3000:]
    assert "stopped" in stderr
    assert_no_secret(tgt.secrets, out.read_text(), stderr, where="in daemon output")
    assert partition_files(tmp_path / "data") == {f"{d}/{PROXY}.parquet" for d in ("2024-03-03", "2024-03-04")}
    assert_no_secret_in_files(tmp_path, tgt.secrets, skip=own_files)


# --- error paths ---------------------------------------------------------------------------------------------------

def _bad_promql():
    return [{"name": "broken", "query": 'sum(rate(apigee_request_count{apiproxy="%s"}[5m]) by (le)'}]


@pytest.mark.parametrize("cred", CREDS, ids=repr)
def test_error_paths_never_show_the_secret(prometheus_auth, bearer_proxy, history, tmp_path, cred):
    day = str(history.days_list[0])
    cases = []
    # Wrong secret: 401, in --date and --check.
    wrong = make_target(cred, prometheus_auth, bearer_proxy,
                        secret=WRONG_PASSWORD if cred.kind == "basic" else WRONG_TOKEN)
    cases.append(("wrong secret", wrong, {}, None, ["--date", day], 1, "401"))
    cases.append(("wrong secret --check", wrong, {}, None, ["--check"], 1, "401"))
    right = make_target(cred, prometheus_auth, bearer_proxy)
    # Unreachable Prometheus (nothing listens on port 9), with the retry path taken.
    cases.append(("unreachable", right, {"url": "http://127.0.0.1:9"}, None, ["--date", day], 1, "cannot reach"))
    # Bad PromQL: Prometheus's 400.
    cases.append(("bad promql", right, {"metrics": _bad_promql()}, None, ["--date", day], 1, "parse error"))
    # Bad config next to the secret: an unknown key, and a bad value.
    cases.append(("unknown key", right, {}, lambda t: t.replace('"retries"', '"retires"'), ["--date", day], 2,
                  "unknown field"))
    cases.append(("bad timeout", right, {}, lambda t: t.replace('"timeout": "5s"', '"timeout": "5 parsecs"'),
                  ["--check"], 2, "timeout"))
    for name, tgt, opts, edit, margs, code, needle in cases:
        work = tmp_path / name.replace(" ", "-")
        work.mkdir()
        cfg, env, own_files = setup_config(work, cred, tgt, url=opts.get("url"), metrics=opts.get("metrics"),
                                           config_text_edit=edit)
        for log, (args, log_env) in LOG_VARIANTS.items():
            if not log.startswith("trace"):
                continue
            r = run_collector("--config", cfg, *margs, *args, cwd=work, env={**env, **log_env})
            assert r.returncode == code, f"{name} ({log}): {r.stdout}{r.stderr}"
            assert needle in r.stdout + r.stderr, f"{name} ({log}): {r.stdout}{r.stderr}"
            assert "panicked" not in r.stderr
            assert_no_secret(tgt.secrets, r.stdout, r.stderr, where=f"in {name} ({log})")
        assert_no_secret_in_files(work, tgt.secrets, skip=own_files)
        assert not (work / "data").exists() or partition_files(work / "data") == set()


# --- the extension ---------------------------------------------------------------------------------------------------

# `con` (the extension in-process): tests/conftest.py.


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def duck_error(con, sql, params=None) -> str:
    with pytest.raises(duckdb.Error) as e:
        con.execute(sql, params or []).fetchall()
    return str(e.value)


def test_extension_right_secrets_work(con, prometheus_auth, bearer_proxy, history):
    user, password = prometheus_auth.basic_auth
    day = history.days_list[0]
    at = datetime.fromtimestamp(day_end_ms(day) / 1000, tz=timezone.utc)
    q = 'sum(increase(apigee_request_count{apiproxy="api-proxy-1"}[1d])) by (environment)'
    want = {e: history.expected[(day, PROXY, e, "request_count")] for e in history.environments}
    rows = con.execute(f"SELECT labels['environment'], value FROM prom_query(?, url := {sql_str(prometheus_auth.url)}, "
                       f"username := {sql_str(user)}, password := {sql_str(password)}, at := ?)", [q, at]).fetchall()
    assert dict(rows) == want
    rows = con.execute(f"SELECT labels['environment'], value FROM prom_query(?, url := ?, bearer_token := "
                       f"{sql_str(TOKEN)}, at := ?)", [q, bearer_proxy.url, at]).fetchall()
    assert dict(rows) == want
    url = prometheus_auth.url.replace("http://", f"http://{user}:{urllib.parse.quote(password, safe='')}@")
    assert sorted(r[0] for r in con.execute(f"SELECT * FROM prom_labels(url := {sql_str(url)})").fetchall()) == \
        ["__name__", "apiproxy", "environment"]


def test_extension_errors_never_show_the_secret(con, prometheus_auth, bearer_proxy, monkeypatch):
    user, password = prometheus_auth.basic_auth
    wrong = WRONG_PASSWORD
    secrets = forms(user, wrong) + forms(user, password) + forms(None, WRONG_TOKEN) + forms(None, TOKEN)
    url_wrong = prometheus_auth.url.replace("http://", f"http://{user}:{urllib.parse.quote(wrong, safe='')}@")
    url_right = prometheus_auth.url.replace("http://", f"http://{user}:{urllib.parse.quote(password, safe='')}@")
    cases = [
        # (SQL with the secret written into it, as a user would, text the error must carry)
        (f"SELECT * FROM prom_query('up', url := {sql_str(prometheus_auth.url)}, username := {sql_str(user)}, "
         f"password := {sql_str(wrong)})", "401"),
        (f"SELECT * FROM prom_labels(url := {sql_str(url_wrong)})", "401"),
        (f"SELECT * FROM prom_label_values('job', url := {sql_str(url_wrong)})", "401"),
        (f"SELECT * FROM prom_series('up', url := {sql_str(url_wrong)})", "401"),
        (f"SELECT * FROM prom_metadata(url := {sql_str(url_wrong)})", "401"),
        (f"SELECT * FROM prom_query(['up', 'sum(up)'], url := {sql_str(url_wrong)}, labels := ['job'])", "401"),
        (f"SELECT * FROM prom_metadata(url := {sql_str(bearer_proxy.url)}, bearer_token := {sql_str(WRONG_TOKEN)})",
         "401"),
        (f"SELECT * FROM prom_query_range('up', '2024-03-01', '2024-03-02', '1h', url := {sql_str(url_wrong)})",
         "401"),
        (f"SELECT * FROM prom_query('up', url := {sql_str(bearer_proxy.url)}, bearer_token := {sql_str(WRONG_TOKEN)})",
         "401"),
        (f"SELECT * FROM prom_query('up', url := {sql_str(bearer_proxy.url)})", "401"),
        # Right secret, other errors.
        (f"SELECT * FROM prom_query('sum(up', url := {sql_str(url_right)})", "parse error"),
        (f"SELECT * FROM prom_query('sum(up', url := {sql_str(bearer_proxy.url)}, bearer_token := {sql_str(TOKEN)})",
         "parse error"),
        (f"SELECT * FROM prom_query('up', url := 'http://{user}:{urllib.parse.quote(password, safe='')}@127.0.0.1:9', "
         "timeout := '2s')", "cannot reach"),
    ]
    for sql, needle in cases:
        msg = duck_error(con, sql)
        assert needle in msg, f"{sql}\n{msg}"
        assert_no_secret(secrets, msg, where=f"in the error of {sql!r}")
        assert con.execute("SELECT 1").fetchall() == [(1,)]
    # The environment-variable connection.
    monkeypatch.setenv("PROMDUCK_PROMETHEUS_URL", prometheus_auth.url)
    monkeypatch.setenv("PROMDUCK_PROMETHEUS_USERNAME", user)
    monkeypatch.setenv("PROMDUCK_PROMETHEUS_PASSWORD", wrong)
    msg = duck_error(con, "SELECT * FROM prom_labels()")
    assert "401" in msg
    assert_no_secret(secrets, msg, where="with PROMDUCK_PROMETHEUS_PASSWORD")


def test_prom_collect_never_shows_the_secret(con, prometheus_auth, history, tmp_path):
    user, _ = prometheus_auth.basic_auth
    secrets = forms(user, WRONG_PASSWORD)
    cfg = write_config(tmp_path / "c.yaml", prometheus_auth.url, [PROXY],
                       prometheus_extra={"username": user, "password": WRONG_PASSWORD, "retries": 0})
    rows = con.execute("SELECT status, error FROM prom_collect(config := ?, date := ?)",
                       [str(cfg), str(history.days_list[0])]).fetchall()
    assert rows[0][0] == "failed" and "401" in rows[0][1], rows
    assert_no_secret(secrets, repr(rows), where="in prom_collect's error column")
    # A config error in a file that holds the secret.
    cfg.write_text(cfg.read_text().replace('"retries"', '"retires"'))
    msg = duck_error(con, "SELECT * FROM prom_collect(config := ?, date := ?)", [str(cfg), str(history.days_list[0])])
    # Named by file, line and key (a SQL user may see the key redacted: `…`).
    assert re.search(re.escape(str(cfg)) + r":\d+:\d+: prometheus: unknown field `(retires|…)`", msg), msg
    assert_no_secret(secrets, msg, where="in prom_collect's config error")
    assert_no_secret_in_files(tmp_path, secrets, skip=[cfg])


def test_extension_bind_errors_never_show_the_secret(con, prometheus_auth):
    """Errors found while binding (a bad URL, timeout or argument combination):
    DuckDB quotes the start of the statement under a binder error, so the
    message must not carry the credentials written into the same statement."""
    user, _ = prometheus_auth.basic_auth
    wrong = WRONG_PASSWORD
    secrets = forms(user, wrong)
    enc = urllib.parse.quote(wrong, safe="")
    cases = [
        (f"SELECT * FROM prom_query('up', url := 'http://{user}:{enc}@[::1')", "invalid URL"),
        (f"SELECT * FROM prom_query('up', url := 'ftp://{user}:{enc}@x')", "ftp"),
        (f"SELECT * FROM prom_query('up', url := 'http://{user}:{enc}@127.0.0.1:9', timeout := 'soon')",
         "timeout: invalid duration"),
        (f"SELECT * FROM prom_labels(url := 'http://127.0.0.1:9', password := {sql_str(wrong)})", "username"),
        (f"SELECT * FROM prom_query('up', password := {sql_str(wrong)}, url := 'http://127.0.0.1:9', "
         "timeout := 'soon')", "timeout: invalid duration"),
    ]
    for sql, needle in cases:
        msg = duck_error(con, sql)
        assert needle in msg, f"{sql}\n{msg}"
        assert_no_secret(secrets, msg, where=f"in the error of {sql!r}")
        assert con.execute("SELECT 1").fetchall() == [(1,)]
