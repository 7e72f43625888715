"""Operations (issue 18): fork safety of the extension, holes the daemon fills,
`--check` that checks the output location and lists gaps, signals and exit codes,
and CLI details (empty PROMDUCK_CONFIG, `--config -`).

Each test failed on the build before the fix (PROMDUCK_BUILD points at another build).
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from helpers import (COLLECTOR, EXTENSION, REPO_ROOT, Daemon, now_env, partition_files, run_collector, utc, write_config,
                     yesterday)

PY = REPO_ROOT / ".venv" / "bin" / "python"


# --- 2. fork() ---------------------------------------------------------------------------------------------

def test_live_functions_and_prom_collect_work_in_a_forked_child(prometheus, history, tmp_path):
    """The parent uses the extension first (its async runtime starts), then forks, as
    multiprocessing, gunicorn --preload and Celery do; the child's calls must answer."""
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    day = history.days_list[0]
    at = (datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)).isoformat()
    script = textwrap.dedent(f"""
        import os, sys, duckdb
        con = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
        con.execute("LOAD '{EXTENSION}'")
        q = "SELECT sum(value) FROM prom_query('sum(apigee_latency_ms)', url := '{prometheus.url}', at := '{at}')"
        parent = con.execute(q).fetchone()[0]
        pid = os.fork()
        if pid == 0:
            signal_ok = True
            import signal
            signal.alarm(100)  # a hang in the child ends the child (SIGALRM), and the test sees it
            child = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
            child.execute("LOAD '{EXTENSION}'")
            got = child.execute(q).fetchone()[0]
            rows = child.execute("SELECT status, rows FROM prom_collect(config := '{cfg}', date := '{day}')").fetchall()
            print("child", got, rows, flush=True)
            os._exit(0 if got == parent else 3)
        _, status = os.waitpid(pid, 0)
        print("parent", parent, "child exit", os.waitstatus_to_exitcode(status), flush=True)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    r = subprocess.run([str(PY), "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    want = sum(v for (p, e), pts in history.gauge_samples.items() for ts, v in pts
               if ts == int(datetime.fromisoformat(at).timestamp()))
    assert f"child {want} [('written', {2 * len(history.environments)})]" in r.stdout


# --- 3. holes behind a complete day; --check lists them -----------------------------------------------------

def test_check_lists_holes_and_the_daemon_fills_them(prometheus, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1", "api-proxy-2"])
    now = utc(2024, 3, 5, 6)
    env = now_env(now)
    last = yesterday(now)
    d1, d2 = last - timedelta(days=1), last - timedelta(days=2)
    # D-1 complete, D-2 has only api-proxy-2: a hole behind a complete day.
    assert run_collector("--config", cfg, "--date", d1, cwd=tmp_path, env=env).returncode == 0
    assert run_collector("--config", cfg, "--date", d2, cwd=tmp_path, env=env).returncode == 0
    (tmp_path / "data" / str(d2) / "api-proxy-1.parquet").unlink()
    r = run_collector("--config", cfg, "--check", "--catch-up-days", "3", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout
    gap_lines = [l for l in r.stdout.splitlines() if l.startswith("  ")]
    d3 = last - timedelta(days=3)
    assert gap_lines == [f"  {d3}: api-proxy-1, api-proxy-2", f"  {d2}: api-proxy-1"], r.stdout

    d = Daemon(cfg, tmp_path, "--catch-up-days", "3", env=env)
    try:
        d.wait_for("waiting for the next collection")
    finally:
        code = d.stop()
    assert code == 0, d.log()
    assert partition_files(tmp_path / "data") == {f"{day}/{p}.parquet" for day in (last, d1, d2, d3)
                                                  for p in ("api-proxy-1", "api-proxy-2")}
    r = run_collector("--config", cfg, "--check", "--catch-up-days", "3", cwd=tmp_path, env=env)
    assert f"gaps: none in the 3 days before {last}" in r.stdout, r.stdout


# --- 4. --check checks the output location ------------------------------------------------------------------

@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_check_fails_when_the_output_cannot_be_written(prometheus, tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "plain-file").write_text("x")
        out = tmp_path / "plain-file" / "data"
    else:
        out = "/proc/promduck-data"  # a read-only filesystem, even for root
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"], output_dir=out)
    r = run_collector("--config", cfg, "--check", cwd=tmp_path)
    assert r.returncode == 1, r.stdout
    assert f"output {out}: FAILED" in r.stdout, r.stdout
    # And one that does not exist yet is said to be creatable, without creating anything.
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"], output_dir=tmp_path / "new" / "data")
    r = run_collector("--config", cfg, "--check", cwd=tmp_path)
    assert r.returncode == 0 and "ok (does not exist yet; can be created)" in r.stdout, r.stdout
    assert not (tmp_path / "new").exists()


# --- 5. signals and exit codes ------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_stops_the_daemon_cleanly_with_exit_0(prometheus, tmp_path, sig):
    """SIGHUP, SIGTERM and SIGINT (Ctrl-C) alike: a waiting daemon stops with 0."""
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    now = utc(2024, 3, 5, 6)
    d = Daemon(cfg, tmp_path, "--catch-up-days", "0", env=now_env(now))
    try:
        d.wait_for("waiting for the next collection")
        assert (tmp_path / "data" / str(yesterday(now)) / "api-proxy-1.parquet").exists()
    finally:
        code = d.stop(sig)
    err = d.log()
    assert code == 0, err
    assert "signal received" in err and "stopped" in err
    assert not [p for p in (tmp_path / "data").rglob("*") if ".promduck-tmp" in p.name]


def test_temporary_files_of_a_killed_run_are_removed_at_the_next_start(prometheus, history, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    old_day = tmp_path / "data" / "2020-01-01"
    old_day.mkdir(parents=True)
    leftover = old_day / ".api-proxy-1.parquet.abcdefghijkl.promduck-tmp"
    leftover.write_bytes(b"half a parquet file")
    r = run_collector("--config", cfg, "--date", history.days_list[0], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not leftover.exists()
    assert "removed temporary files left by an interrupted run" in r.stderr


# --- 6. CLI details ------------------------------------------------------------------------------------------

def test_empty_promduck_config_is_unset_and_dash_reads_stdin(prometheus, history, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"], output_dir=tmp_path / "data")
    day = history.days_list[0]
    env = dict(os.environ, PROMDUCK_CONFIG="")
    # Empty means unset: the default path is used (and named in the error), not a clap usage error.
    r = subprocess.run([str(COLLECTOR), "--date", str(day)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert "config/config.yaml" in r.stderr and "a value is required" not in r.stderr, r.stderr
    r = subprocess.run([str(COLLECTOR), "--config", "-", "--date", str(day)], cwd=tmp_path, env=env,
                       input=cfg.read_text(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert partition_files(tmp_path / "data") == {f"{day}/api-proxy-1.parquet"}
    r = subprocess.run([str(COLLECTOR), "--config", "-", "--check"], cwd=tmp_path, input="apiProxies: [\n",
                       capture_output=True, text=True)
    assert r.returncode == 2 and "<stdin>" in r.stderr, r.stderr
