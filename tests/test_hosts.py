"""The same extension binary in every host the README promises: DuckDB CLI 1.5 (duckdb-cli),
Python duckdb 2.0 (the venv), and Python duckdb 1.4 (`make old-duckdb`, .cache/duckdb-1.4)."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import DUCKDB_CLI, EXTENSION, REPO_ROOT, run_collector, write_config

OLD_PYTHON = REPO_ROOT / ".cache" / "duckdb-1.4" / "bin" / "python"

SCRIPT = """
import duckdb, json, sys
data, day = sys.argv[1], sys.argv[2]
con = duckdb.connect(config={'allow_unsigned_extensions': 'true'})
con.execute("LOAD '%s'")
out = {'version': duckdb.__version__}
out['totals'] = dict(con.execute(
    "SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, date := ?, metric := 'request_count') GROUP BY 1",
    [data, day]).fetchall())
out['ts'] = str(con.execute("SELECT timestamp_ms(86400000)").fetchone()[0])
try:
    con.execute("SELECT * FROM prom_metrics(data_dir := ?, date := 'nope')", [data]).fetchall()
except duckdb.Error as e:
    out['error'] = str(e).splitlines()[0]
out['alive'] = con.execute("SELECT 42").fetchone()[0]
print(json.dumps(out))
""" % EXTENSION


@pytest.fixture(scope="module")
def collected(prometheus, history, tmp_path_factory):
    work = tmp_path_factory.mktemp("hosts")
    cfg = write_config(work / "c.yaml", prometheus.url, history.proxies)
    day = history.days_list[1]
    assert run_collector("--config", cfg, "--date", day, cwd=work).returncode == 0
    return work / "data", day


@pytest.mark.parametrize("python", ["venv", "duckdb-1.4"])
def test_extension_loads_and_answers_in_python_hosts(collected, history, python):
    exe = REPO_ROOT / ".venv" / "bin" / "python" if python == "venv" else OLD_PYTHON
    assert exe.exists(), f"{exe} is missing: run `make old-duckdb`"
    data, day = collected
    r = subprocess.run([str(exe), "-c", SCRIPT, str(data), str(day)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    if python == "duckdb-1.4":
        assert out["version"].startswith("1.4.")
    else:
        assert out["version"].startswith("2.")
    assert out["totals"] == {p: sum(history.expected[(day, p, e, "request_count")] for e in history.environments)
                             for p in history.proxies}
    assert out["ts"] == "1970-01-02 00:00:00"
    assert 'invalid date "nope"' in out["error"]
    assert out["alive"] == 42


def test_extension_loads_in_the_cli(collected, history):
    data, day = collected
    r = subprocess.run([str(DUCKDB_CLI), "-unsigned", "-csv", "-c",
                        f"LOAD '{EXTENSION}'; SELECT version(); SELECT sum(value) FROM prom_metrics(data_dir := '{data}', "
                        f"date := '{day}', metric := 'request_count');"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[1].startswith("v1.5.")
    assert float(lines[-1]) == sum(history.expected[(day, p, e, "request_count")]
                                   for p in history.proxies for e in history.environments)


@pytest.mark.parametrize("python", ["venv", "duckdb-1.4"])
def test_readme_python_section_returns_timestamps(collected, history, python):
    """The README's Python section (`pip install duckdb pytz`) fetches every column of
    prom_metrics, TIMESTAMPTZ included, in each Python host: DuckDB's Python package
    before 2.0 needs pytz for it, which current pandas no longer brings."""
    exe = REPO_ROOT / ".venv" / "bin" / "python" if python == "venv" else OLD_PYTHON
    data, day = collected
    script = (
        "import duckdb, sys\n"
        "con = duckdb.connect(config={'allow_unsigned_extensions': 'true'})\n"
        f"con.execute(\"LOAD '{EXTENSION}'\")\n"
        "rows = con.execute(\"SELECT timestamp, api_proxy, metric_name, value FROM prom_metrics(data_dir := ?, date := ?, "
        "proxy := 'api-proxy-1', metric := 'request_count') ORDER BY value\", [sys.argv[1], sys.argv[2]]).fetchall()\n"
        "print(repr([(r[0].isoformat(), r[1], r[2], r[3]) for r in rows]))\n"
    )
    r = subprocess.run([str(exe), "-c", script, str(data), str(day)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    end = f"{day + __import__('datetime').timedelta(days=1)}T00:00:00+00:00"
    want = sorted(history.expected[(day, "api-proxy-1", e, "request_count")] for e in history.environments)
    assert r.stdout.strip() == repr([(end, "api-proxy-1", "request_count", v) for v in want])
