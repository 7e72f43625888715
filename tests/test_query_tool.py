"""examples/duckdb/query_metrics.py, the seed's query script on the promduck
extension: every option, exact CSV content, the printed summaries, SQL
injection attempts and the error cases. Expected values come from the
generator's history (tests/promfixture.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from fixtures_data import (COUNTERS, LATENCY, collected_data, daily_stats, expected_rows, run)
from test_hosts import HOSTS, host_python
from helpers import REPO_ROOT, now_env, run_collector, today, utc, write_config

# "Now" for --last-days (PROMDUCK_NOW, which the tool and the extension both honour).
NOW = utc(2024, 5, 10, 0, 0, 0)  # the first second of 2024-05-10 (UTC)
from promfixture import PrometheusServer, generate_history

TOOL = REPO_ROOT / "examples" / "duckdb" / "query_metrics.py"
WEIRD = 'we"ird/proxy'
CSV_HEADER = ["timestamp", "date", "api_proxy", "metric_name", "value", "labels"]


@pytest.fixture(scope="module")
def data(prometheus, history, tmp_path_factory) -> Path:
    return collected_data(prometheus, history, tmp_path_factory)


@pytest.fixture(scope="module")
def recent(prometheus_bin, tmp_path_factory):
    """History of the 3 days before NOW's day, collected: for --last-days, which
    counts back from today."""
    work = tmp_path_factory.mktemp("recent")
    start = today(NOW) - timedelta(days=3)
    hist = generate_history(work / "history.om", start, 3, ["api-proxy-1", "api-proxy-2"], seed=7)
    server = PrometheusServer(hist.path, work / "prometheus", bin_dir=prometheus_bin)
    server.start()
    try:
        cfg = write_config(work / "config.yaml", server.url, hist.proxies)
        r = run_collector("--config", cfg, "--from", hist.days_list[0], "--to", hist.days_list[-1], cwd=work)
        assert r.returncode == 0, r.stderr
    finally:
        server.stop()
    return hist, work / "data"


def tool(*args, cwd=None, env=None, python=None):
    full_env = {k: v for k, v in os.environ.items() if k not in ("PROMDUCK_DATA_DIR", "PROMDUCK_EXTENSION")}
    full_env.update(env or {})
    return run([str(python or sys.executable), TOOL, *args], cwd=cwd or REPO_ROOT, env=full_env)


def iso(ts_seconds: int) -> str:
    return datetime.fromtimestamp(ts_seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def want_csv(history, **sel):
    """The CSV rows (as parsed values) for a selection, in the tool's order:
    date, proxy, metric, timestamp, labels."""
    rows = [(day.isoformat(), proxy, metric, iso(ts), {"apiproxy": proxy, "environment": env}, value)
            for ts, day, proxy, metric, env, value in expected_rows(history, **sel)]
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[3], r[4]["environment"]))
    return [[ts, d, p, m, v, lb] for d, p, m, ts, lb, v in rows]


def read_csv(path: Path):
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows[0] == CSV_HEADER
    out = []
    for r in rows[1:]:
        assert r[4] == repr(float(r[4])), f"value {r[4]!r} is not a plain float"
        out.append([r[0], r[1], r[2], r[3], float(r[4]), json.loads(r[5])])
    return out


def sections(stdout: str) -> dict:
    """The printed tables by title: {title: [row cells, ...]} (cells split on 2+ spaces)."""
    out = {}
    for block in stdout.strip().split("\n\n"):
        lines = block.splitlines()
        if len(lines) >= 3 and set(lines[2].replace(" ", "")) == {"-"}:
            out[lines[0]] = [re.split(r"\s{2,}", l.strip()) for l in lines[3:]]
    return out


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("query_metrics.py: error: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------


def test_help_lists_the_seed_options():
    r = tool("--help")
    assert r.returncode == 0
    for opt in ("--data-dir", "--date", "--last-days", "--api-proxy", "--metric", "--output"):
        assert opt in r.stdout
    assert "PROMDUCK_DATA_DIR" in r.stdout and "PROMDUCK_EXTENSION" in r.stdout


def test_everything_to_csv_exactly(data, history, tmp_path):
    out = tmp_path / "all.csv"
    r = tool("--data-dir", data, "--output", out)
    assert r.returncode == 0, r.stderr
    want = want_csv(history)
    assert len(want) == 4 * 4 * 2 * 26
    assert read_csv(out) == want
    assert f"Found {len(want)} rows" in r.stdout
    assert f"Saved {len(want)} rows to {out}" in r.stdout

    # Totals per API proxy and metric, over all days
    tables = sections(r.stdout)
    got = {(c[0], c[1]): c[2:] for c in tables["Totals per API proxy and metric"]}
    assert set(got) == {(p, m) for p in history.proxies for m in (*COUNTERS, LATENCY)}
    for (p, m), cells in got.items():
        stats = [daily_stats(history, d, p, m) for d in history.days_list]
        total, n = sum(s[0] for s in stats), sum(s[1] for s in stats)
        assert int(cells[0]) == n
        assert float(cells[1]) == total
        assert abs(float(cells[2]) - total / n) <= 0.0005 + 1e-9
        assert float(cells[3]) == min(s[2] for s in stats)
        assert float(cells[4]) == max(s[3] for s in stats)

    per_day = tables["Totals per day"]
    assert len(per_day) == 4 * 4 * 3
    for d, p, m, n, total, mx in per_day:
        t, rows, _, hi = daily_stats(history, date.fromisoformat(d), p, m)
        assert (int(n), float(total), float(mx)) == (rows, t, hi)

    first = [l for l in tables if l.startswith("First ")]
    assert first == [f"First 10 of {len(want)} rows"]
    assert len(tables[first[0]]) == 10


def test_date_selects_one_day(data, history, tmp_path):
    day = history.days_list[2]
    out = tmp_path / "day.csv"
    r = tool("--data-dir", data, "--date", day.isoformat(), "--output", out)
    assert r.returncode == 0, r.stderr
    assert read_csv(out) == want_csv(history, days=[day])
    assert {c[0] for c in sections(r.stdout)["Totals per day"]} == {day.isoformat()}


def test_api_proxy_once_and_repeated(data, history, tmp_path):
    out = tmp_path / "p.csv"
    r = tool("--data-dir", data, "--api-proxy", "api-proxy-2", "--output", out)
    assert r.returncode == 0, r.stderr
    assert read_csv(out) == want_csv(history, proxies=["api-proxy-2"])

    r = tool("--data-dir", data, "--api-proxy", WEIRD, "--api-proxy", "api-proxy-3", "--output", out)
    assert r.returncode == 0, r.stderr
    assert read_csv(out) == want_csv(history, proxies=[WEIRD, "api-proxy-3"])
    assert {c[0] for c in sections(r.stdout)["Totals per API proxy and metric"]} == {WEIRD, "api-proxy-3"}


def test_metric_once_and_repeated(data, history, tmp_path):
    out = tmp_path / "m.csv"
    r = tool("--data-dir", data, "--metric", LATENCY, "--output", out)
    assert r.returncode == 0, r.stderr
    assert read_csv(out) == want_csv(history, metrics=[LATENCY])

    r = tool("--data-dir", data, "--metric", "error_count", "--metric", "request_count", "--output", out)
    assert r.returncode == 0, r.stderr
    assert read_csv(out) == want_csv(history, metrics=list(COUNTERS))


def test_all_filters_together(data, history, tmp_path):
    day = history.days_list[0]
    out = tmp_path / "f.csv"
    r = tool("--data-dir", data, "--date", day.isoformat(), "--api-proxy", "api-proxy-1",
             "--metric", "request_count", "--output", out)
    assert r.returncode == 0, r.stderr
    want = want_csv(history, days=[day], proxies=["api-proxy-1"], metrics=["request_count"])
    assert len(want) == 2 and read_csv(out) == want
    [row] = sections(r.stdout)["Totals per API proxy and metric"]
    assert row[:4] == ["api-proxy-1", "request_count", "2", "%d" % daily_stats(history, day, "api-proxy-1",
                                                                             "request_count")[0]]


def test_last_days_counts_back_from_today(recent, tmp_path):
    hist, data_dir = recent
    out = tmp_path / "last.csv"
    day = today(NOW)
    for n in (1, 2, 5):
        r = tool("--data-dir", data_dir, "--last-days", str(n), "--output", out, env=now_env(NOW))
        assert r.returncode == 0, r.stderr
        window = {day - timedelta(days=i) for i in range(1, n + 1)}
        days = [d for d in hist.days_list if d in window]
        assert days == hist.days_list[-n:], "the recent history must overlap the window"
        assert read_csv(out) == want_csv(hist, days=days, metrics=list(COUNTERS))
        assert f"days {day - timedelta(days=n)}..{day - timedelta(days=1)}" in r.stdout
    # A second earlier, 2024-05-09 has not ended: the window is a day earlier.
    r = tool("--data-dir", data_dir, "--last-days", "1", "--output", out, env=now_env(NOW - timedelta(seconds=1)))
    assert r.returncode == 0, r.stderr
    assert "days 2024-05-08..2024-05-08" in r.stdout, r.stdout
    assert read_csv(out) == want_csv(hist, days=[date(2024, 5, 8)], metrics=list(COUNTERS))
    r = tool("--data-dir", data_dir, "--last-days", "1", env={"PROMDUCK_NOW": "soon"})
    assert r.returncode == 2 and "PROMDUCK_NOW='soon' is not an RFC 3339 time" in r.stderr, r.stderr


def test_data_dir_defaults(data, history, tmp_path):
    day = history.days_list[3].isoformat()
    want = want_csv(history, days=[history.days_list[3]], proxies=["api-proxy-1"])
    # $PROMDUCK_DATA_DIR
    out = tmp_path / "env.csv"
    r = tool("--date", day, "--api-proxy", "api-proxy-1", "--output", out, cwd=tmp_path,
             env={"PROMDUCK_DATA_DIR": str(data)})
    assert r.returncode == 0, r.stderr
    assert read_csv(out) == want
    # else ./data
    out = tmp_path / "cwd.csv"
    r = tool("--date", day, "--api-proxy", "api-proxy-1", "--output", out, cwd=data.parent)
    assert r.returncode == 0, r.stderr
    assert read_csv(out) == want
    # the README's way: from examples/duckdb with a relative --data-dir
    here = REPO_ROOT / "examples" / "duckdb"
    r = tool("--data-dir", os.path.relpath(data, here), "--date", day, "--api-proxy", "api-proxy-1",
             "--output", out, cwd=here)
    assert r.returncode == 0, r.stderr
    assert read_csv(out) == want


@pytest.mark.parametrize("name", [
    "x' OR 1=1 --",
    "api-proxy-1') UNION SELECT * FROM prom_metrics() --",
    "api-proxy-1' OR api_proxy <> '",
    "api-proxy-1\"; DROP TABLE selected; --",
    "*",
    "api-proxy-%",
    "../2024-03-01/api-proxy-1",
    "",
])
def test_injection_in_api_proxy_is_just_a_name(data, history, tmp_path, name):
    out = tmp_path / "inj.csv"
    r = tool("--data-dir", data, "--api-proxy", name, "--output", out)
    line = assert_one_line_error(r, "unknown API proxy", repr(name))
    for p in history.proxies:
        assert p in line  # says which proxies exist
    assert not out.exists() or read_csv(out) == []


def test_injection_in_metric_and_date(data, history, tmp_path):
    out = tmp_path / "inj.csv"
    r = tool("--data-dir", data, "--metric", "request_count' OR '1'='1", "--output", out)
    assert_one_line_error(r, "unknown metric", "names there: error_count, latency_ms, request_count")
    assert not out.exists() or read_csv(out) == []
    r = tool("--data-dir", data, "--date", "2024-03-01' OR 1=1 --")
    assert_one_line_error(r, "--date", "expected YYYY-MM-DD")


def test_unknown_proxy_among_known_ones_is_an_error(data, history):
    r = tool("--data-dir", data, "--api-proxy", "api-proxy-1", "--api-proxy", "api-proxy-9")
    assert_one_line_error(r, "unknown API proxy 'api-proxy-9'", "api-proxy-1, api-proxy-2, api-proxy-3")


def test_known_proxy_without_data_in_range_is_no_rows(data, history, tmp_path):
    out = tmp_path / "none.csv"
    r = tool("--data-dir", data, "--date", "2020-01-01", "--api-proxy", "api-proxy-1", "--output", out)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "No data found" in r.stderr and "Traceback" not in r.stderr
    assert read_csv(out) == []


@pytest.mark.parametrize("args, needles", [
    (["--date", "2024-13-01"], ["--date", "'2024-13-01'"]),
    (["--date", "20240301"], ["--date", "expected YYYY-MM-DD"]),
    (["--date", "yesterday"], ["--date", "expected YYYY-MM-DD"]),
    (["--last-days", "0"], ["--last-days"]),
    (["--last-days", "seven"], ["--last-days"]),
    (["--date", "2024-03-01", "--last-days", "2"], ["not allowed with"]),
    (["--no-such-option"], ["unrecognized arguments"]),
])
def test_bad_options(data, args, needles):
    assert_one_line_error(tool("--data-dir", data, *args), *needles)


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nothing-here"
    assert_one_line_error(tool("--data-dir", missing), "data directory not found", str(missing))
    # the default, ./data, missing in the working directory
    assert_one_line_error(tool(cwd=tmp_path), "data directory not found", "./data", "--data-dir")
    f = tmp_path / "file"
    f.write_text("x")
    assert_one_line_error(tool("--data-dir", f), "not a directory", str(f))


def test_missing_extension(data, tmp_path):
    ext = tmp_path / "no" / "promduck.duckdb_extension"
    r = tool("--data-dir", data, env={"PROMDUCK_EXTENSION": str(ext)})
    assert_one_line_error(r, "promduck extension not found", str(ext), "make build")


def test_unwritable_output(data, history, tmp_path):
    r = tool("--data-dir", data, "--output", tmp_path / "no" / "such" / "dir.csv")
    assert_one_line_error(r, "cannot write")


def test_a_bucket_archive_reads_as_the_folder_does(data, history, prometheus, moto_s3, s3_bucket, tmp_path):
    """`--data-dir s3://…`: the same rows as from the folder (prom_metrics reads both); the
    credentials come from the AWS_* environment, as for prom_metrics."""
    from s3fixture import child_env, write_s3_config
    day = history.days_list[1]
    cfg = write_s3_config(tmp_path / "c.yaml", prometheus.url, history.proxies, moto_s3, s3_bucket, "qt")
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path, env=child_env())
    assert r.returncode == 0, r.stderr
    env = child_env(moto_s3)
    s3_csv, disk_csv = tmp_path / "s3.csv", tmp_path / "disk.csv"
    sel = ["--date", day.isoformat(), *[a for m in COUNTERS for a in ("--metric", m)]]  # the S3 config's metrics
    r = run([sys.executable, TOOL, "--data-dir", f"s3://{s3_bucket}/qt", *sel, "--output", s3_csv],
            cwd=REPO_ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert tool("--data-dir", data, *sel, "--output", disk_csv).returncode == 0
    assert read_csv(s3_csv) == read_csv(disk_csv) == want_csv(history, days=[day], metrics=COUNTERS)


def test_a_reader_that_goes_away_is_no_error(data):
    """`query_metrics.py … | head -3`: the tool stops quietly (exit 0, no traceback)."""
    import subprocess
    r = subprocess.run(["bash", "-c", f'"{sys.executable}" "{TOOL}" --data-dir "{data}" | head -3; '
                                      'echo "tool exit ${PIPESTATUS[0]}" >&2'],
                       capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert len(r.stdout.splitlines()) == 3
    assert "Traceback" not in r.stderr and "tool exit 0" in r.stderr, r.stderr


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_the_tool_runs_in_every_duckdb_host(data, history, tmp_path, host):
    """examples/requirements.txt says duckdb>=1.2: the tool picks the file stamped for the host's
    platform (1.2's Linux wheels say linux_amd64_gcc4) and answers exactly in each."""
    day = history.days_list[0]
    out = tmp_path / "f.csv"
    r = tool("--data-dir", data, "--date", day.isoformat(), "--api-proxy", "api-proxy-1",
             "--metric", "request_count", "--output", out, python=host_python(host))
    assert r.returncode == 0, r.stderr
    assert read_csv(out) == want_csv(history, days=[day], proxies=["api-proxy-1"], metrics=["request_count"])
