"""A newcomer's first hour (issue 32): the small things a new user meets first.

- `PROMDUCK_LOG=debug` shows promduck's debug lines, not every connection and frame of the
  HTTP libraries beneath it (unless the filter names them);
- `prom_series` takes `start`/`end` (VictoriaMetrics answers only the last day without them);
- a sandbox refusal of a folder names the folder, never the name promduck probes it with.
(The hint toward `config/demo.yaml` when `prometheus.url` does not resolve is a unit test in
collector/src/main.rs: a real lookup would ask this machine's resolver, not a loopback server.)
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from helpers import EXTENSION, now_env, run_collector, utc, write_config


def connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    return con


def targets(stderr: str) -> set[str]:
    """The tracing targets of plain log lines (`2024-… DEBUG target: message`)."""
    return {m.group(1).split("::")[0] for m in re.finditer(r"^\S+\s+(?:TRACE|DEBUG|INFO|WARN|ERROR) (\S+?):", stderr, re.M)}


def test_debug_logging_is_promduck_s_own_unless_a_library_is_named(prometheus, history, tmp_path):
    day = history.days_list[0]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    now = utc(day.year, day.month, day.day) + timedelta(days=1, hours=6)
    r = run_collector("--config", cfg, "--once", env={"PROMDUCK_LOG": "debug", **now_env(now)})
    assert r.returncode == 0, r.stderr
    seen = targets(r.stderr)
    assert "promduck_core" in seen or "promduck_collector" in seen, r.stderr
    assert re.search(r"^\S+\s+DEBUG promduck", r.stderr, re.M), "no debug line of promduck's own"
    assert not seen & {"hyper", "hyper_util", "reqwest", "h2", "rustls"}, seen
    # Named, a library's debug lines are shown: the filter is the user's.
    r = run_collector("--config", cfg, "--once", "--replace",
                      env={"PROMDUCK_LOG": "debug,hyper_util=debug", **now_env(now)})
    assert r.returncode == 0, r.stderr
    assert "hyper_util" in targets(r.stderr), r.stderr


def test_prom_series_takes_start_and_end(prometheus, history):
    con = connect()
    first = datetime.combine(history.days_list[0], datetime.min.time(), tzinfo=timezone.utc)
    after = first + timedelta(days=history.days + 10)
    sql = "SELECT labels['apiproxy'], labels['environment'] FROM prom_series('apigee_error_count', url := ?{}) ORDER BY ALL"
    every = sorted((p, e) for p in history.proxies for e in history.environments)
    assert con.execute(sql.format(""), [prometheus.url]).fetchall() == every
    # Inside the history: every series; after it: none (Prometheus answers series with samples in the range).
    assert con.execute(sql.format(", start := ?, \"end\" := ?"),
                       [prometheus.url, first + timedelta(hours=12), first + timedelta(hours=13)]).fetchall() == every
    assert con.execute(sql.format(", start := ?, \"end\" := ?"),
                       [prometheus.url, after, after + timedelta(hours=1)]).fetchall() == []
    # Either alone: end alone reaches back to the epoch; start alone runs to now.
    assert con.execute(sql.format(", \"end\" := ?"), [prometheus.url, first + timedelta(hours=1)]).fetchall() == every
    assert con.execute(sql.format(", start := ?"), [prometheus.url, after]).fetchall() == []
    with pytest.raises(duckdb.Error, match=r"start .* is after end"):
        con.execute(sql.format(", start := ?, \"end\" := ?"), [prometheus.url, after, first])
    with pytest.raises(duckdb.Error, match=r"start"):
        con.execute(sql.format(", start := 'yesterday-ish'"), [prometheus.url])


@pytest.mark.parametrize("function", ["prom_metrics", "prom_partitions"])
def test_a_refused_folder_is_named_as_the_folder(tmp_path, function):
    data = tmp_path / "data"
    (data / "2024-03-01").mkdir(parents=True)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    con = connect()
    con.execute(f"SET allowed_directories = ['{allowed}']")
    con.execute("SET enable_external_access = false")
    with pytest.raises(duckdb.Error) as e:
        con.execute(f"SELECT * FROM {function}(data_dir := ?)", [str(data)]).fetchall()
    msg = str(e.value)
    assert f'Cannot access directory "{data}"' in msg, msg
    assert "probe" not in msg, msg
