"""Every file in sql/ runs in the real DuckDB CLI (PyPI duckdb-cli, `-unsigned`,
the built extension LOADed first) against data written by the real collector,
and its result is compared with values computed from the generator's history
(tests/promfixture.py), never from promduck's own output.

Each test names the files it runs with @covers(...); test_every_sql_file_is_covered
fails when a .sql file is added without a test, and when a view or macro in
sql/promduck.sql is left untested.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import pytest

from fixtures_data import (COUNTERS, LATENCY, collected_data, copy_without, daily_stats, daily_total,
                           env_with, expected_rows, latency_points, run)
from helpers import DUCKDB_CLI, EXTENSION, REPO_ROOT

SQL_DIR = REPO_ROOT / "sql"
WEIRD = 'we"ird/proxy'
SEED_DAY = "2023-04-01"  # the placeholder day of the seed queries

COVERED: set[str] = set()
MACROS_TESTED: set[str] = set()


def covers(*files):
    COVERED.update(files)
    return lambda f: f


def exercises(*names):
    MACROS_TESTED.update(names)
    return lambda f: f


@pytest.fixture(scope="module")
def data(prometheus, history, tmp_path_factory) -> Path:
    return collected_data(prometheus, history, tmp_path_factory)


def duckdb_cli(data_dir: Path, *, file: Path | None = None, sql: str | None = None, variables=None,
               read_setup=False):
    """Runs a file (-f) or SQL (-c) in the DuckDB CLI after LOADing the extension,
    with cwd = the folder holding data/ and PROMDUCK_DATA_DIR = data_dir.
    Returns (header, rows) of the CSV output; fails on a non-zero exit or stderr."""
    cmd = [DUCKDB_CLI, "-unsigned", "-csv", "-cmd", f"LOAD '{EXTENSION}'"]
    for name, value in (variables or {}).items():
        cmd += ["-cmd", f"SET VARIABLE {name} = '{value}'"]  # test-chosen values only
    if read_setup:
        cmd += ["-cmd", f".read {SQL_DIR / 'promduck.sql'}"]
    cmd += ["-f", file] if file is not None else ["-c", sql]
    r = run(cmd, cwd=data_dir.parent, env=env_with(PROMDUCK_DATA_DIR=data_dir))
    assert r.returncode == 0 and not r.stderr, f"{cmd}: exit {r.returncode}\n{r.stderr}"
    lines = list(csv.reader(io.StringIO(r.stdout)))
    assert lines, f"{cmd}: no output"
    return lines[0], lines[1:]


def with_day(path: Path, day, tmp_path: Path) -> Path:
    """A copy of a seed file with its placeholder day replaced (as the README says to)."""
    out = tmp_path / path.name
    text = path.read_text()
    assert SEED_DAY in text
    out.write_text(text.replace(SEED_DAY, day.isoformat()))
    return out


def num(s: str):
    return None if s == "NULL" else float(s)


def ts_text(ts_seconds: int) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(ts_seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------
# the file list


def test_every_sql_file_is_covered():
    files = {str(p.relative_to(SQL_DIR)) for p in SQL_DIR.rglob("*.sql")}
    assert files - COVERED == set(), "sql files without a test in tests/test_sql.py"
    assert COVERED - files == set(), "tests name sql files that do not exist"


def test_every_promduck_view_and_macro_is_tested():
    text = (SQL_DIR / "promduck.sql").read_text()
    defined = set(re.findall(r"^CREATE OR REPLACE TEMP (?:VIEW|MACRO) (\w+)", text, re.M))
    assert defined, "no definitions found in sql/promduck.sql"
    assert set(re.findall(r"^CREATE\b.*", text, re.M)) == set(
        re.findall(r"^CREATE OR REPLACE TEMP (?:VIEW|MACRO) .*", text, re.M)), \
        "sql/promduck.sql must only create TEMP views and macros"
    assert defined == MACROS_TESTED


DOCUMENTED_LOAD = '-cmd "LOAD ' + "'build/promduck.duckdb_extension'" + '"'


def test_files_document_how_to_run_them():
    """Files that need the extension say in their header how to LOAD it first,
    and do not LOAD it themselves (so they work however it was installed)."""
    needing = set()
    for path in SQL_DIR.rglob("*.sql"):
        text = path.read_text()
        code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("--"))
        if not re.search(r"prom_metrics|timestamp_ms", code, re.I):
            continue  # plain DuckDB (the seed's queries on raw files)
        needing.add(str(path.relative_to(SQL_DIR)))
        assert DOCUMENTED_LOAD in text, f"{path}: header must say how to LOAD the extension first"
        assert not re.search(r"^\s*LOAD\b", code, re.M | re.I), f"{path}: must not LOAD the extension itself"
    assert needing == {"examples/aggregation_by_proxy.sql", "examples/by_environment.sql", "examples/latency.sql",
                       "examples/time_series.sql", "promduck.sql", "seed/basic_promduck.sql"}


def example_expected(history, name, days):
    """What sql/examples/<name> prints for the selected ``days``, from the generator:
    (header, rows) with numbers as floats (see ``example_parse``)."""
    if name == "aggregation_by_proxy.sql":
        (day,) = days
        return ["api_proxy", "total_requests"], proxy_totals(history, day)
    if name == "time_series.sql":
        return ["date", "api_proxy", "daily_requests"], time_series_expected(history, days)
    if name == "by_environment.sql":
        return ["api_proxy", "environment", "requests", "errors", "error_pct"], by_environment_expected(history, days)
    if name == "latency.sql":
        return (["date", "api_proxy", "environment", "points", "avg_ms", "min_ms", "max_ms"],
                latency_expected(history, days))
    raise AssertionError(name)


def example_parse(name, rows):
    """The CLI's CSV rows of sql/examples/<name> with numbers as numbers."""
    if name == "aggregation_by_proxy.sql":
        return [(r[0], float(r[1])) for r in rows]
    if name == "time_series.sql":
        return [(r[0], r[1], float(r[2])) for r in rows]
    if name == "by_environment.sql":
        return [(r[0], r[1], float(r[2]), float(r[3]), float(r[4])) for r in rows]
    if name == "latency.sql":
        return [(r[0], r[1], r[2], int(r[3]), float(r[4]), float(r[5]), float(r[6])) for r in rows]
    raise AssertionError(name)


def assert_example(name, got, want):
    """Exact, except by_environment's error_pct, which the file rounds to 3 decimals."""
    if name != "by_environment.sql":
        assert got == want, name
        return
    assert [g[:4] for g in got] == [w[:4] for w in want], name
    for g, w in zip(got, want):
        assert abs(g[4] - w[4]) <= 0.0005 + 1e-9, (g, w)


def test_documented_command_line_from_the_repo_root(data, history):
    """`duckdb -unsigned -cmd "LOAD 'build/promduck.duckdb_extension'" -f sql/...` exactly
    as the headers say, from the repository root (data via $PROMDUCK_DATA_DIR): every
    example's full output equals the generator's values, with its default days (all
    days, or yesterday, which the 2024 history does not have) and with days chosen by
    SET VARIABLE as the README says."""
    days = history.days_list
    files = sorted(p.name for p in (SQL_DIR / "examples").glob("*.sql"))
    assert files == ["aggregation_by_proxy.sql", "by_environment.sql", "latency.sql", "time_series.sql"]
    cases = [
        ("aggregation_by_proxy.sql", {}, None),  # yesterday: no data
        ("aggregation_by_proxy.sql", {"promduck_day": days[2]}, [days[2]]),
        ("time_series.sql", {}, days),
        ("time_series.sql", {"promduck_start": days[1], "promduck_end": days[2]}, days[1:3]),
        ("by_environment.sql", {}, days),
        ("by_environment.sql", {"promduck_end": days[1]}, days[:2]),
        ("latency.sql", {}, days),
        ("latency.sql", {"promduck_start": days[3]}, days[3:]),
    ]
    for name, variables, sel in cases:
        cmd = [DUCKDB_CLI, "-unsigned", "-csv", "-cmd", "LOAD 'build/promduck.duckdb_extension'"]
        for k, v in variables.items():
            cmd += ["-cmd", f"SET VARIABLE {k} = DATE '{v}'"]
        cmd += ["-f", f"sql/examples/{name}"]
        r = run(cmd, cwd=REPO_ROOT, env=env_with(PROMDUCK_DATA_DIR=data))
        assert r.returncode == 0 and not r.stderr, f"{name} {variables}: {r.stderr}"
        lines = list(csv.reader(io.StringIO(r.stdout)))
        header, rows = lines[0], lines[1:]
        want_header, want = example_expected(history, name, sel) if sel else (example_expected(
            history, name, [days[0]])[0], [])
        assert header == want_header, (name, variables)
        assert_example(name, example_parse(name, rows), want)
    # sql/promduck.sql only defines TEMP views and macros: it prints nothing.
    r = run([DUCKDB_CLI, "-unsigned", "-csv", "-cmd", "LOAD 'build/promduck.duckdb_extension'", "-f", "sql/promduck.sql"],
            cwd=REPO_ROOT, env=env_with(PROMDUCK_DATA_DIR=data))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


# ---------------------------------------------------------------------------
# the seed's queries on raw files, and their promduck versions


def basic_expected(history, day):
    rows = [(ts_text(ts), m, v) for ts, d, p, m, e, v in expected_rows(history, [day], ["api-proxy-1"])]
    return sorted(rows)


@covers("seed/basic.sql", "seed/basic_promduck.sql")
def test_basic_query_with_and_without_timestamp_ms(data, history, tmp_path):
    day = history.days_list[1]
    outputs = {}
    for name in ("basic.sql", "basic_promduck.sql"):
        header, rows = duckdb_cli(data, file=with_day(SQL_DIR / "seed" / name, day, tmp_path))
        assert header == ["timestamp", "metric_name", "value", "api_proxy", "date"]
        assert {(r[3], r[4]) for r in rows} == {("api-proxy-1", day.isoformat())}
        assert [r[0] for r in rows] == sorted(r[0] for r in rows), "ORDER BY timestamp"
        assert sorted((r[0], r[1], float(r[2])) for r in rows) == basic_expected(history, day)
        outputs[name] = sorted(map(tuple, rows))
    # TIMESTAMP_MS (the extension's) and epoch_ms (plain DuckDB) agree.
    assert outputs["basic.sql"] == outputs["basic_promduck.sql"]


def proxy_totals(history, day):
    totals = {p: daily_total(history, day, p, "request_count") for p in history.proxies}
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))


@covers("seed/aggregation_by_proxy.sql", "examples/aggregation_by_proxy.sql")
def test_aggregation_by_proxy(data, history, tmp_path):
    day = history.days_list[2]
    want = proxy_totals(history, day)
    assert len(want) == 4 and WEIRD in dict(want)

    header, rows = duckdb_cli(data, file=with_day(SQL_DIR / "seed" / "aggregation_by_proxy.sql", day, tmp_path))
    assert header == ["api_proxy", "total_requests"]
    assert [(r[0], float(r[1])) for r in rows] == want

    header, rows = duckdb_cli(data, file=SQL_DIR / "examples" / "aggregation_by_proxy.sql",
                              variables={"promduck_day": day})
    assert header == ["api_proxy", "total_requests"]
    assert [(r[0], float(r[1])) for r in rows] == want


def test_aggregation_by_proxy_defaults_to_yesterday(data, history):
    # The history is from 2024: yesterday has no folder, so the answer is empty
    # (and not an error, and not another day's totals).
    header, rows = duckdb_cli(data, file=SQL_DIR / "examples" / "aggregation_by_proxy.sql")
    assert header == ["api_proxy", "total_requests"] and rows == []


def time_series_expected(history, days):
    return [(d.isoformat(), p, daily_total(history, d, p, "request_count"))
            for d in days for p in sorted(x for x in history.proxies if x.startswith("api-proxy-"))]


@covers("seed/time_series.sql", "examples/time_series.sql")
def test_time_series(data, history, tmp_path):
    want = time_series_expected(history, history.days_list)
    header, seed_rows = duckdb_cli(data, file=SQL_DIR / "seed" / "time_series.sql")
    assert header == ["date", "api_proxy", "daily_requests"]
    assert [(r[0], r[1], float(r[2])) for r in seed_rows] == want

    header, rows = duckdb_cli(data, file=SQL_DIR / "examples" / "time_series.sql")
    assert header == ["date", "api_proxy", "daily_requests"]
    assert rows == seed_rows

    days = history.days_list
    header, rows = duckdb_cli(data, file=SQL_DIR / "examples" / "time_series.sql",
                              variables={"promduck_start": days[1], "promduck_end": days[2]})
    assert [(r[0], r[1], float(r[2])) for r in rows] == time_series_expected(history, days[1:3])


def by_environment_expected(history, sel):
    want = []
    for p in sorted(history.proxies):
        for e in sorted(history.environments):
            req = sum(history.expected[(d, p, e, "request_count")] for d in sel)
            err = sum(history.expected[(d, p, e, "error_count")] for d in sel)
            want.append((p, e, req, err, 100 * err / req))
    return want


@covers("examples/by_environment.sql")
def test_by_environment(data, history):
    days = history.days_list
    for variables, sel in [({}, days), ({"promduck_end": days[1]}, days[:2])]:
        header, rows = duckdb_cli(data, file=SQL_DIR / "examples" / "by_environment.sql", variables=variables)
        assert header == ["api_proxy", "environment", "requests", "errors", "error_pct"]
        assert_example("by_environment.sql", example_parse("by_environment.sql", rows),
                       by_environment_expected(history, sel))


def latency_expected(history, sel):
    want = []
    for d in sel:
        for p in sorted(history.proxies):
            for e in sorted(history.environments):
                vals = [v for _, v in latency_points(history, d, p, e)]
                want.append((d.isoformat(), p, e, 24, round(sum(vals) / 24, 3), min(vals), max(vals)))
    return want


@covers("examples/latency.sql")
def test_latency(data, history):
    days = history.days_list
    header, rows = duckdb_cli(data, file=SQL_DIR / "examples" / "latency.sql",
                              variables={"promduck_start": days[3]})
    assert header == ["date", "api_proxy", "environment", "points", "avg_ms", "min_ms", "max_ms"]
    assert example_parse("latency.sql", rows) == latency_expected(history, days[3:])


# ---------------------------------------------------------------------------
# sql/promduck.sql


@covers("promduck.sql")
@exercises("promduck_metrics", "promduck_daily")
def test_promduck_metrics_and_daily(data, history):
    header, rows = duckdb_cli(data, read_setup=True, sql=(
        "SELECT metric_name, count(*), sum(value), count(DISTINCT api_proxy), min(date), max(date) "
        "FROM promduck_metrics GROUP BY ALL ORDER BY metric_name"))
    days, n_series = history.days_list, len(history.proxies) * len(history.environments)
    want = []
    for m in sorted((*COUNTERS, LATENCY)):
        total = sum(daily_stats(history, d, p, m)[0] for d in days for p in history.proxies)
        n = len(days) * n_series * (24 if m == LATENCY else 1)
        want.append([m, str(n), total, "4", days[0].isoformat(), days[-1].isoformat()])
    assert [[r[0], r[1], float(r[2]), r[3], r[4], r[5]] for r in rows] == want

    header, rows = duckdb_cli(data, read_setup=True,
                              sql=f"SELECT * FROM promduck_daily('{days[1]}', '{days[2]}')")
    assert header == ["date", "api_proxy", "metric_name", "total", "average", "minimum", "maximum", "samples"]
    want = []
    for d in days[1:3]:
        for p in sorted(history.proxies):
            for m in sorted((*COUNTERS, LATENCY)):
                total, n, lo, hi = daily_stats(history, d, p, m)
                want.append((d.isoformat(), p, m, total, n, lo, hi))
    got = [(r[0], r[1], r[2], float(r[3]), int(r[7]), float(r[5]), float(r[6])) for r in rows]
    assert got == want
    for r, w in zip(rows, want):
        assert float(r[4]) == pytest.approx(w[3] / w[4], rel=1e-12)

    # by name, one bound open
    _, rows = duckdb_cli(data, read_setup=True, sql=f"SELECT DISTINCT date FROM promduck_daily(start_day := '{days[3]}')")
    assert rows == [[days[3].isoformat()]]


@exercises("promduck_metrics")
def test_promduck_settings_variables(data, history, tmp_path):
    days = history.days_list
    elsewhere = tmp_path / "empty"  # the view follows promduck_data_dir, read at query time
    elsewhere.mkdir()
    _, rows = duckdb_cli(data, read_setup=True, variables={"promduck_start": days[2], "promduck_end": days[2]},
                         sql="SELECT min(date), max(date), count(*) FROM promduck_metrics")
    assert rows == [[days[2].isoformat(), days[2].isoformat(), str(len(history.proxies) * 2 * (2 + 24))]]
    _, rows = duckdb_cli(data, read_setup=True, variables={"promduck_data_dir": elsewhere},
                         sql="SELECT count(*) FROM promduck_metrics")
    assert rows == [["0"]]


@exercises("promduck_day_over_day")
def test_day_over_day(data, history):
    days = history.days_list
    header, rows = duckdb_cli(data, read_setup=True,
                              sql=f"SELECT * FROM promduck_day_over_day(start_day := '{days[1]}')")
    assert header == ["date", "api_proxy", "metric_name", "total", "previous_total", "change", "change_pct"]
    want = []
    for d in days[1:]:
        for p in sorted(history.proxies):
            cur = daily_total(history, d, p, "request_count")
            prev = daily_total(history, d - timedelta(days=1), p, "request_count")
            want.append((d.isoformat(), p, "request_count", cur, prev, cur - prev, 100 * (cur - prev) / prev))
    got = [(r[0], r[1], r[2], float(r[3]), float(r[4]), float(r[5])) for r in rows]
    assert got == [w[:6] for w in want]
    for r, w in zip(rows, want):
        assert abs(float(r[6]) - w[6]) <= 0.005 + 1e-9

    # all metrics, the first day has no day before it
    _, rows = duckdb_cli(data, read_setup=True, sql=(
        f"SELECT date, api_proxy, metric_name, total, previous_total FROM promduck_day_over_day(metric := NULL) "
        f"WHERE date = '{days[0]}' AND api_proxy = 'api-proxy-3'"))
    assert [(r[2], float(r[3]), r[4]) for r in rows] == [
        (m, daily_stats(history, days[0], "api-proxy-3", m)[0], "NULL") for m in sorted((*COUNTERS, LATENCY))]


@exercises("promduck_top_proxies")
def test_top_proxies(data, history):
    days = history.days_list
    for metric, n, sel in [("request_count", 2, days), ("error_count", 10, days[2:])]:
        totals = {p: sum(daily_total(history, d, p, metric) for d in sel) for p in history.proxies}
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
        grand = sum(totals.values())
        header, rows = duckdb_cli(data, read_setup=True, sql=(
            f"SELECT * FROM promduck_top_proxies(n := {n}, metric := '{metric}', start_day := '{sel[0]}')"))
        assert header == ["rank", "api_proxy", "total", "share_pct"]
        want = [(str(i + 1), p, t) for i, (p, t) in enumerate(ranked[:n])]
        assert [(r[0], r[1], float(r[2])) for r in rows] == want
        for r, (p, t) in zip(rows, ranked):
            assert abs(float(r[3]) - 100 * t / grand) <= 0.005 + 1e-9


@exercises("promduck_error_ratio")
def test_error_ratio(data, history):
    days = history.days_list
    header, rows = duckdb_cli(data, read_setup=True,
                              sql=f"SELECT * FROM promduck_error_ratio(end_day := '{days[1]}')")
    assert header == ["date", "api_proxy", "requests", "errors", "error_ratio"]
    want = []
    for d in days[:2]:
        for p in sorted(history.proxies):
            req = daily_total(history, d, p, "request_count")
            err = daily_total(history, d, p, "error_count")
            want.append((d.isoformat(), p, req, err, err / req))
    assert [(r[0], r[1], float(r[2]), float(r[3]), float(r[4])) for r in rows] == want


@exercises("promduck_gaps", "promduck_day_over_day")
def test_gaps(data, history, tmp_path):
    days = history.days_list
    removed = [(days[1], "api-proxy-2"), (days[2], "we%22ird%2Fproxy")]
    holey = copy_without(data, tmp_path / "data", removed)
    missing = [(days[1], "api-proxy-2"), (days[2], WEIRD)]

    header, rows = duckdb_cli(holey, read_setup=True, sql="SELECT * FROM promduck_gaps()")
    assert header == ["date", "api_proxy"]
    assert [tuple(r) for r in rows] == [(d.isoformat(), p) for d, p in missing]

    before, after = days[0] - timedelta(days=1), days[-1] + timedelta(days=1)
    _, rows = duckdb_cli(holey, read_setup=True, sql=f"SELECT * FROM promduck_gaps('{before}', '{after}')")
    want = sorted([(before, p) for p in history.proxies] + missing + [(after, p) for p in history.proxies])
    assert [tuple(r) for r in rows] == [(d.isoformat(), p) for d, p in want]

    # days from today on are never gaps (the collector collects closed days only), whatever
    # end_day says: compared with DuckDB's own current_date, read in the same statement
    _, rows = duckdb_cli(holey, read_setup=True, sql=(
        f"SELECT count(*) FILTER (WHERE date >= current_date), max(date) = current_date - 1 "
        f"FROM promduck_gaps('{before}', current_date + 3)"))
    assert rows == [["0", "true"]], rows

    # every partition holds every metric; a metric nobody has is missing everywhere
    _, rows = duckdb_cli(holey, read_setup=True, sql="SELECT * FROM promduck_gaps(metric := 'latency_ms')")
    assert [tuple(r) for r in rows] == [(d.isoformat(), p) for d, p in missing]
    _, rows = duckdb_cli(holey, read_setup=True,
                         sql=f"SELECT count(*) FROM promduck_gaps('{days[0]}', '{days[-1]}', 'no_such_metric')")
    assert rows == [[str(len(days) * len(history.proxies))]]

    # the day after a gap has no previous total
    _, rows = duckdb_cli(holey, read_setup=True, sql=(
        f"SELECT total, previous_total, change FROM promduck_day_over_day() "
        f"WHERE date = '{days[2]}' AND api_proxy = 'api-proxy-2'"))
    assert rows == [[repr(daily_total(history, days[2], "api-proxy-2", "request_count")), "NULL", "NULL"]]


@covers("seed/archive/basic.sql", "seed/archive/aggregation_by_proxy.sql", "seed/archive/time_series.sql",
        "seed/archive/archive_files.sql")
def test_seed_queries_for_compacted_archives(data, history, tmp_path):
    """sql/seed/archive/ (the seed's queries over a whole archive): on daily files they answer
    as the seed's own; tests/test_compaction.py checks them on an archive with compacted months."""
    day = history.days_list[1]
    (tmp_path / "seed").mkdir()
    (tmp_path / "archive").mkdir()
    (tmp_path / "newest").mkdir()
    for name in ("basic.sql", "aggregation_by_proxy.sql", "time_series.sql"):
        seed, archive = SQL_DIR / "seed" / name, SQL_DIR / "seed" / "archive" / name
        if name != "time_series.sql":
            seed = with_day(seed, day, tmp_path / "seed")
            text = archive.read_text()
            assert SEED_DAY not in text and "getvariable('promduck_day')" in text, name
            # The day as a variable; without it, the archive's newest day.
            newest = with_day(SQL_DIR / "seed" / name, history.days_list[-1], tmp_path / "newest")
            default = tmp_path / "archive" / ("default-" + name)
            default.write_text(text)
            want, got = duckdb_cli(data, file=newest), duckdb_cli(data, file=default)
            assert got[0] == want[0] and sorted(got[1]) == sorted(want[1]) and got[1], name
            archive = tmp_path / "archive" / name
            archive.write_text(f"SET VARIABLE promduck_day = DATE '{day}';\n" + text)
        want, got = duckdb_cli(data, file=seed), duckdb_cli(data, file=archive)
        assert got[0] == want[0] and sorted(got[1]) == sorted(want[1]) and got[1], name
    listing = tmp_path / "files.sql"
    listing.write_text((SQL_DIR / "seed" / "archive" / "archive_files.sql").read_text()
                       + "\nSELECT count(*), sum(value) FROM read_parquet(getvariable('promduck_files'));\n")
    _, got = duckdb_cli(data, file=listing)
    _, want = duckdb_cli(data, sql="SELECT count(*), sum(value) FROM read_parquet('data/*/*.parquet')")
    assert got == want and int(got[0][0]) > 0
