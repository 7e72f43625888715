"""End-to-end: the collector binary against a real Prometheus with generated history.

Expected values come from the generator (tests/promfixture.py), computed from the
samples it wrote, never from the collector's output.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import (DEFAULT_METRICS, Daemon, LATENCY_Q, REQUEST_Q, day_end_ms, expected_rows, normalise, now_env,
                     partition_files, read_rows, run_cli_sql, run_collector, utc, write_config,
                     yesterday)

WEIRD = 'we"ird/proxy'


@pytest.fixture(scope="module")
def backfill(prometheus, history, tmp_path_factory):
    """One backfill of every day of the history; shared by the read-only tests."""
    work = tmp_path_factory.mktemp("backfill")
    cfg = write_config(work / "config.yaml", prometheus.url, history.proxies)
    first, last = history.days_list[0], history.days_list[-1]
    r = run_collector("--config", cfg, "--from", first, "--to", last, cwd=work)
    assert r.returncode == 0, r.stderr
    return work, r


def test_backfill_writes_exact_daily_values(backfill, history):
    work, _ = backfill
    got = normalise(read_rows(work / "data"))
    want = expected_rows(history)
    assert len(got) == len(history.days_list) * len(history.proxies) * 2 * len(history.environments)
    assert got == want


def test_backfill_writes_exactly_the_expected_partitions(backfill, history):
    work, _ = backfill
    want = {f"{d.isoformat()}/{name}.parquet" for d in history.days_list
            for name in ["api-proxy-1", "api-proxy-2", "api-proxy-3", "we%22ird%2Fproxy"]}
    assert partition_files(work / "data") == want


def test_weird_proxy_name_is_stored_by_real_name(backfill, history):
    work, _ = backfill
    day = history.days_list[0]
    rows = read_rows(work / "data", f"{day}/we%22ird%2Fproxy.parquet")
    assert {r[3] for r in rows} == {WEIRD}
    assert sorted(r[2] for r in rows if r[1] == "request_count") == sorted(
        history.expected[(day, WEIRD, env, "request_count")] for env in history.environments)


def test_counter_reset_day_is_exact(backfill, history):
    work, _ = backfill
    resets = history.reset_days("request_count")
    assert resets, "the fixture must contain a counter reset"
    day, proxy, env = sorted(resets)[0]
    rows = [r for r in read_rows(work / "data") if r[4] == day and r[3] == proxy and r[1] == "request_count"
            and dict(r[5])["environment"] == env]
    assert len(rows) == 1
    assert rows[0][2] == history.expected[(day, proxy, env, "request_count")]


def test_parquet_schema_matches_the_seed(backfill, history):
    work, _ = backfill
    f = work / "data" / history.days_list[0].isoformat() / "api-proxy-1.parquet"
    schema = pq.read_schema(f)
    assert schema.names == ["timestamp", "metric_name", "value", "api_proxy", "date", "labels"]
    assert str(schema.field("timestamp").type) == "int64"
    assert str(schema.field("value").type) == "double"
    assert str(schema.field("date").type) == "date32[day]"
    assert str(schema.field("labels").type).startswith("map<string, string")


def test_seed_queries_run_in_duckdb_cli(backfill, history):
    work, _ = backfill
    day = history.days_list[1]
    sql_dir = Path(__file__).resolve().parent.parent / "sql" / "seed"

    def run(name):
        sql = (sql_dir / name).read_text().replace("2023-04-01", day.isoformat())
        r = run_cli_sql(sql, cwd=work)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        return lines[0].split(","), [l.split(",") for l in lines[1:]]

    header, rows = run("basic.sql")
    assert header == ["timestamp", "metric_name", "value", "api_proxy", "date"]
    assert len(rows) == 2 * len(history.environments)
    end = datetime.fromtimestamp(day_end_ms(day) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert {r[0] for r in rows} == {end}
    want = sorted(history.expected[(day, "api-proxy-1", e, m)] for e in history.environments
                  for m in ("request_count", "error_count"))
    assert sorted(float(r[2]) for r in rows) == want

    header, rows = run("aggregation_by_proxy.sql")
    totals = {p: sum(history.expected[(day, p, e, "request_count")] for e in history.environments)
              for p in history.proxies}
    want = sorted(totals.items(), key=lambda kv: -kv[1])
    assert header == ["api_proxy", "total_requests"]
    # CSV quoting: the weird name comes back quoted, so compare after csv parsing.
    import csv
    import io
    parsed = list(csv.reader(io.StringIO(run_cli_sql(
        (sql_dir / "aggregation_by_proxy.sql").read_text().replace("2023-04-01", day.isoformat()), cwd=work).stdout)))
    assert [(r[0], float(r[1])) for r in parsed[1:]] == want

    header, rows = run("time_series.sql")
    want = [(d.isoformat(), p, float(sum(history.expected[(d, p, e, "request_count")] for e in history.environments)))
            for d in history.days_list for p in sorted(x for x in history.proxies if x.startswith("api-proxy-"))]
    assert [(r[0], r[1], float(r[2])) for r in rows] == want


def test_range_metric_with_step(prometheus, history, tmp_path):
    metrics = [{"name": "latency_ms", "query": LATENCY_Q, "labels": ["environment"], "step": "1h"}]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-2"], metrics=metrics)
    day = history.days_list[2]
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = read_rows(tmp_path / "data")
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
    want = []
    for env in history.environments:
        samples = dict(history.gauge_samples[("api-proxy-2", env)])
        # The day is (00:00, 24:00]: points 01:00 .. 24:00, the last where the instant mode evaluates.
        for h in range(1, 25):
            ts = start + h * 3600
            want.append((ts * 1000, env, samples[ts]))
    got = sorted((r[0], dict(r[5])["environment"], r[2]) for r in rows)
    assert got == sorted(want)
    assert all(dict(r[5]).keys() == {"environment"} for r in rows)


def test_recollecting_a_day_replaces_without_duplicates(prometheus, history, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    day = history.days_list[0]
    for _ in range(2):
        r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], ["api-proxy-1"])
    assert partition_files(tmp_path / "data") == {f"{day}/api-proxy-1.parquet"}


@pytest.mark.parametrize("codec,expected", [("zstd", "ZSTD"), ("gzip", "GZIP"), ("snappy", "SNAPPY"),
                                            ("lz4", "LZ4")])
def test_compression_setting_is_honoured(prometheus, history, tmp_path, codec, expected):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"], storage_extra={"compression": codec})
    r = run_collector("--config", cfg, "--date", history.days_list[0], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    md = pq.ParquetFile(next((tmp_path / "data").rglob("*.parquet"))).metadata
    codecs = {md.row_group(0).column(i).compression for i in range(md.num_columns)}
    assert codecs == {expected} or codecs == {expected + "_RAW"}, codecs


def test_row_group_size_in_bytes_is_honoured(prometheus, history, tmp_path):
    """`rowGroupSize` is a target in bytes: each row group holds that many (uncompressed)
    bytes give or take 10 %, only the last one less; the default (128 MiB) is one group."""
    metrics = [{"name": "latency_ms", "query": LATENCY_Q, "step": "1m"}]
    day = history.days_list[0]
    rows = 1440 * len(history.environments)  # one point a minute per environment

    def groups(size):
        out = tmp_path / f"rg-{size}"
        cfg = write_config(tmp_path / f"c{size}.yaml", prometheus.url, ["api-proxy-1"], metrics=metrics, output_dir=out,
                           storage_extra={} if size is None else {"rowGroupSize": size})
        r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        md = pq.ParquetFile(out / str(day) / "api-proxy-1.parquet").metadata
        assert md.num_rows == rows
        return [(md.row_group(i).num_rows, md.row_group(i).total_byte_size) for i in range(md.num_row_groups)]

    whole = groups(None)
    assert len(whole) == 1
    total = whole[0][1]  # the data's uncompressed size in one group
    for size in (8192, 16384):
        got = groups(size)
        # Smaller groups encode less compactly, so there are at least total/size of them.
        assert len(got) >= -(-total // size), got
        for i, (_, nbytes) in enumerate(got):
            assert nbytes <= size * 1.1, (size, got)
            if i < len(got) - 1:
                assert nbytes >= size * 0.9, (size, got)
        assert sum(n for n, _ in got) == rows


def test_basic_auth_with_password_file(prometheus_auth, history, tmp_path):
    user, password = prometheus_auth.basic_auth
    (tmp_path / "pw").write_text(password + "\n")
    cfg = write_config(tmp_path / "c.yaml", prometheus_auth.url, ["api-proxy-1"],
                       prometheus_extra={"username": user, "passwordFile": "pw"})
    day = history.days_list[0]
    r = run_collector("--config", cfg, "--date", day, "--log-format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], ["api-proxy-1"])
    assert password not in r.stdout + r.stderr
    for f in (tmp_path / "data").rglob("*"):
        if f.is_file():
            assert password.encode() not in f.read_bytes()


def test_wrong_credentials_fail_without_leaking(prometheus_auth, history, tmp_path):
    user, _ = prometheus_auth.basic_auth
    secret = "not-the-password-4711"
    cfg = write_config(tmp_path / "c.yaml", prometheus_auth.url.replace("http://", f"http://{user}:{secret}@"),
                       ["api-proxy-1"])
    r = run_collector("--config", cfg, "--date", history.days_list[0], cwd=tmp_path)
    assert r.returncode == 1
    assert "401" in r.stderr
    assert secret not in r.stdout + r.stderr
    assert not (tmp_path / "data").exists() or partition_files(tmp_path / "data") == set()


def test_failed_metric_keeps_the_old_file(prometheus, history, tmp_path):
    day = history.days_list[0]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1", "api-proxy-2"])
    assert run_collector("--config", cfg, "--date", day, cwd=tmp_path).returncode == 0
    files = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.parquet")}
    bad = DEFAULT_METRICS + [{"name": "broken", "query": 'sum(rate(x{apiproxy="%s"}[5m]) by (le)'}]
    write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1", "api-proxy-2"], metrics=bad)
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 1
    assert "bad_data" in r.stderr and "parse error" in r.stderr
    assert "broken" in r.stderr and "api-proxy-2" in r.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.parquet")} == files


def test_unreachable_prometheus_exits_1(history, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9", ["api-proxy-1"],
                       prometheus_extra={"retries": 0})
    r = run_collector("--config", cfg, "--date", history.days_list[0], cwd=tmp_path)
    assert r.returncode == 1
    assert "cannot reach Prometheus at http://127.0.0.1:9/" in r.stderr


def test_check_mode(prometheus, history, tmp_path):
    proxies = ["api-proxy-1", "api-proxy-2"]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, proxies)
    day = history.days_list[0]
    r = run_collector("--config", cfg, "--check", "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # Every proxy is checked (issue 25 item 7): the series of both, from the generator.
    n = len(proxies) * len(history.environments)
    assert "prometheus " + prometheus.url in r.stdout
    assert f"metric request_count: ok ({n} series over 2 proxies on {day};" in r.stdout, r.stdout
    # A day without data is never "ok".
    r = run_collector("--config", cfg, "--check", "--date", "2020-01-01", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "metric request_count: WARNING: no series for any of the 2 proxies checked on 2020-01-01" in r.stdout
    assert "metric request_count: ok" not in r.stdout
    bad = DEFAULT_METRICS + [{"name": "broken", "query": 'x{apiproxy="%s"'}]
    write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"], metrics=bad)
    r = run_collector("--config", cfg, "--check", cwd=tmp_path)
    assert r.returncode == 1
    assert "metric broken: FAILED" in r.stdout
    assert not (tmp_path / "data").exists(), "--check must not write data"


@pytest.mark.parametrize("now,day", [
    # The last second of 2024-03-03 and the first of 2024-03-04 (UTC), with the process in
    # a zone 14 h ahead (its local date is irrelevant: days are the config's zone, UTC).
    (utc(2024, 3, 3, 23, 59, 59), date(2024, 3, 2)),
    (utc(2024, 3, 4, 0, 0, 0), date(2024, 3, 3)),
])
def test_once_collects_yesterday(prometheus, history, tmp_path, now, day):
    assert yesterday(now) == day
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    r = run_collector("--config", cfg, "--once", cwd=tmp_path, env={**now_env(now), "TZ": "Pacific/Kiritimati"})
    assert r.returncode == 0, r.stderr
    assert partition_files(tmp_path / "data") == {f"{day}/api-proxy-1.parquet"}
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], ["api-proxy-1"])


@pytest.mark.parametrize("now,day", [
    # Midnight of the config's zone, 14 h ahead of UTC: 2024-03-03T10:00:00Z is 00:00 there.
    (utc(2024, 3, 3, 9, 59, 59), date(2024, 3, 2)),
    (utc(2024, 3, 3, 10, 0, 0), date(2024, 3, 3)),
])
def test_once_collects_yesterday_of_the_configured_zone(prometheus, tmp_path, now, day):
    assert yesterday(now, "Pacific/Kiritimati") == day
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"], top_extra={"timezone": "Pacific/Kiritimati"})
    r = run_collector("--config", cfg, "--once", cwd=tmp_path, env={**now_env(now), "TZ": "UTC"})
    assert r.returncode == 0, r.stderr
    assert partition_files(tmp_path / "data") == {f"{day}/api-proxy-1.parquet"}
    # The zone's day ends at 10:00 UTC: every row is stamped with that instant.
    end_ms = int(datetime(day.year, day.month, day.day, 10, tzinfo=timezone.utc).timestamp() * 1000)
    rows = read_rows(tmp_path / "data")
    assert rows and {r[0] for r in rows} == {end_ms}, rows


def test_promduck_now_that_is_not_rfc3339_is_a_usage_error(prometheus, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    for bad in ("2024-03-04", "yesterday", "2024-03-04 00:00:00"):
        r = run_collector("--config", cfg, "--once", cwd=tmp_path, env={"PROMDUCK_NOW": bad})
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith(f'error: PROMDUCK_NOW="{bad}" is not an RFC 3339 time'), r.stderr
    assert not (tmp_path / "data").exists()
    # Empty means unset: the real clock, after 2024-03-01.
    r = run_collector("--config", cfg, "--date", "2024-03-01", cwd=tmp_path, env={"PROMDUCK_NOW": ""})
    assert r.returncode == 0, r.stderr
    assert partition_files(tmp_path / "data") == {"2024-03-01/api-proxy-1.parquet"}
    # Set: 2024-03-01 has not ended at its own noon.
    r = run_collector("--config", cfg, "--date", "2024-03-01", cwd=tmp_path,
                      env=now_env(utc(2024, 3, 1, 12)))
    assert r.returncode == 2 and "has not ended yet" in r.stderr, r.stderr


def test_json_log_format(prometheus, history, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1", "api-proxy-2"])
    day = history.days_list[0]
    r = run_collector("--config", cfg, "--date", day, "--log-format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    events = [json.loads(l) for l in lines]  # every line is one JSON object
    assert all(e["level"] == "INFO" and e["target"] == "promduck_collector" for e in events), r.stderr
    fields = [e["fields"] for e in events]
    rows = 2 * len(history.environments)  # two daily metrics per environment
    assert fields[0] == {"message": "collecting", "day": str(day), "partitions": 2}
    written = sorted(fields[1:3], key=lambda f: f["proxy"])
    assert written == [{"message": "written", "day": str(day), "proxy": p, "rows": rows,
                        "path": str(tmp_path / "data" / str(day) / f"{p}.parquet")}
                       for p in ("api-proxy-1", "api-proxy-2")]
    finished = dict(fields[3])
    assert float(finished.pop("seconds")) >= 0
    assert finished == {"message": "collection finished", "written": 2, "empty": 0, "kept": 0, "failed": 0,
                        "cancelled": 0, "rows": 2 * rows}
    assert len(events) == 4, r.stderr


def test_future_day_and_bad_usage_exit_2(prometheus, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    r = run_collector("--config", cfg, "--date", "2999-01-01", cwd=tmp_path)
    assert r.returncode == 2 and "has not ended yet" in r.stderr
    r = run_collector("--config", cfg, "--from", "2024-03-05", "--to", "2024-03-01", cwd=tmp_path)
    assert r.returncode == 2 and "after end date" in r.stderr
    r = run_collector("--config", cfg, "--date", "2024-13-01", cwd=tmp_path)
    assert r.returncode == 2 and "invalid date" in r.stderr
    r = run_collector("--config", cfg, "--from", "2024-03-01", cwd=tmp_path)
    assert r.returncode == 2 and "--to" in r.stderr
    r = run_collector("--help")
    assert r.returncode == 0 and "--once" in r.stdout and "backfill" in r.stdout


BAD_CONFIGS = [
    # (replace this, with this, expected line, text that must appear)
    ('"timeout": "10s"', '"timeout": "10 parsecs"', 7, "prometheus.timeout"),
    ('"timeout": "10s"', '"timeot": "10s"', 7, "unknown field `timeot`"),
    ('"compression": "zstd"', '"compression": "brotli"', None, "unknown compression `brotli`"),
    ('"url": "http://127.0.0.1:9"', '"url": "ftp://x"', 6, "scheme `ftp`"),
    ('"url": "http://127.0.0.1:9"', '"url": "not a url"', 6, "invalid URL"),
    ('apiproxy=\\"%s\\"', 'apiproxy=\\"x\\"', None, "no %s placeholder"),
]


@pytest.mark.parametrize("old,new,line,needle", BAD_CONFIGS)
def test_bad_config_names_file_line_and_key(tmp_path, old, new, line, needle):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9", ["api-proxy-1"])
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new, 1))
    r = run_collector("--config", cfg, "--date", "2024-03-01", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr, r.stderr
    m = re.search(re.escape(str(cfg)) + r":(\d+)", r.stderr)
    assert m, r.stderr
    if line is not None:
        assert int(m.group(1)) == line, r.stderr


def test_missing_config_file(tmp_path):
    r = run_collector("--config", tmp_path / "nope.yaml", "--once")
    assert r.returncode == 2
    assert "nope.yaml" in r.stderr and "cannot read config file" in r.stderr


def test_batched_queries_equal_per_proxy_queries(prometheus, history, tmp_path):
    """Batching (one query per metric and day for many proxies, split by the proxy label)
    must give exactly the per-proxy results, including the falls-backs."""
    metrics = DEFAULT_METRICS + [
        {"name": "latency_ms", "query": LATENCY_Q, "labels": ["apiproxy", "environment"], "step": "1h"},
        # No `by (apiproxy)`: cannot be batched, runs per proxy.
        {"name": "total", "query": 'sum(increase(apigee_request_count{apiproxy="%s"}[1d]))'},
        # Looks batchable but drops the proxy label at run time: the batch answer is
        # rejected and each proxy is queried on its own.
        {"name": "relabelled", "query": 'label_replace(increase(apigee_error_count{apiproxy="%s"}[1d]), '
                                        '"apiproxy", "", "apiproxy", ".*")'},
    ]
    first, last = history.days_list[0], history.days_list[-1]
    runs = {}
    for batch in (1, 3, 50):
        work = tmp_path / f"b{batch}"
        work.mkdir()
        cfg = write_config(work / "c.yaml", prometheus.url, history.proxies, metrics=metrics,
                           prometheus_extra={"batchSize": batch})
        r = run_collector("--config", cfg, "--from", first, "--to", last, cwd=work)
        assert r.returncode == 0, r.stderr
        runs[batch] = normalise(read_rows(work / "data"))
    assert runs[1] == runs[3] == runs[50]
    totals = {(r[4], r[3]): r[2] for r in runs[50] if r[1] == "total"}
    assert totals == {(d, p): sum(history.expected[(d, p, e, "request_count")] for e in history.environments)
                      for d in history.days_list for p in history.proxies}
    relabelled = sorted((r[4], r[3], r[2]) for r in runs[50] if r[1] == "relabelled")
    assert relabelled == sorted((d, p, history.expected[(d, p, e, "error_count")])
                                for d in history.days_list for p in history.proxies for e in history.environments)


def test_daemon_catches_up_missed_days_then_stops_on_sigterm(prometheus, history, tmp_path):
    """Daemon mode: collects the last complete day plus every missing (day, proxy) of the
    --catch-up-days before it — holes behind a complete day too — then waits; SIGTERM
    stops it cleanly with exit 0."""
    from datetime import timedelta
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1", "api-proxy-2"])
    # "Now" is fixed: yesterday is the history's last day, 2024-03-04.
    now = utc(2024, 3, 5, 6)
    last = yesterday(now)
    env = now_env(now)
    # Day -3 is already complete on disk: it is left alone, the days on both sides are filled.
    done_day = last - timedelta(days=3)
    r = run_collector("--config", cfg, "--date", done_day, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "data" / str(done_day)).iterdir()}
    d = Daemon(cfg, tmp_path, "--catch-up-days", "7", env=env)
    try:
        # The first collection has ended when the daemon says it waits for the next one.
        d.wait_for("waiting for the next collection")
    finally:
        code = d.stop()
    err = d.log()
    assert code == 0, err
    assert "started as a daemon" in err and "stopped" in err
    # Yesterday and the seven days before it were collected; the complete day was not touched.
    days_ = [last - timedelta(days=i) for i in range(8)]
    assert partition_files(tmp_path / "data") == {f"{d}/{p}.parquet" for d in days_
                                                  for p in ("api-proxy-1", "api-proxy-2")}
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "data" / str(done_day)).iterdir()} == before
    # The history's four days with their exact rows; the days before it are empty files.
    in_history = [d for d in days_ if d in history.days_list]
    assert len(in_history) == 4
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, sorted(in_history),
                                                                    ["api-proxy-1", "api-proxy-2"])


def test_metrics_options_are_never_silently_ignored(prometheus, history, tmp_path):
    """Issue 25 item 9: an unwritable --metrics-file made a one-shot run exit 0, and
    --metrics-listen was silently ignored outside the daemon."""
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-1"])
    day = history.days_list[0]
    r = run_collector("--config", cfg, "--date", day, "--metrics-file", "/proc/promduck.prom", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "cannot write the metrics file" in r.stderr and "/proc/promduck.prom" in r.stderr
    # The partitions themselves were written.
    assert (tmp_path / "data" / str(day) / "api-proxy-1.parquet").exists()
    for mode in (["--once"], ["--date", str(day)], ["--check"]):
        r = run_collector("--config", cfg, *mode, "--metrics-listen", "127.0.0.1:0", cwd=tmp_path)
        assert r.returncode == 2, (mode, r.stderr)
        assert "--metrics-listen" in r.stderr and "cannot be used with" in r.stderr, r.stderr
