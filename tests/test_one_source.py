"""One source per (day, proxy), across every layout (issue 25, items 3–5).

The archive may hold a partition in several layouts at once: promduck's daily file
(`YYYY-MM-DD/<proxy>.parquet`, also the Go tool's daily layout), the Go tool's Hive
files (`year=/month=/day=/app=<proxy>/*.parquet`) and a compacted month
(`YYYY-MM/YYYY-MM.parquet`). Every reader resolves a (day, proxy) to one of them —
month file, else daily file, else Hive files — so nothing is counted twice, and a
partition held only in the Hive layout counts as present for the hole finder.

Generators write random mixtures of layouts with values that differ per layout, so a
wrong precedence or a double count changes the answer; the expected rows are what
the generator wrote in the file the precedence picks (never promduck's own output).
"""

from __future__ import annotations

import random
import re
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import EXTENSION, now_env, run_collector, utc, write_config, yesterday

DAYS = [date(2024, 3, d) for d in range(1, 5)]
PROXIES = ["p1", "p2", "p3"]
KV = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
SEEDS = 25


def ms(d: date, h: int) -> int:
    return int(datetime(d.year, d.month, d.day, h, tzinfo=timezone.utc).timestamp() * 1000)


def gen_rows(rnd: random.Random, d: date) -> list[tuple]:
    """(metric, env, ts_ms, value) rows of one partition, values random per file."""
    out = []
    for m in ("m1", "m2"):
        for env in ("prod", "test"):
            for h in sorted(rnd.sample(range(0, 24), 2)):
                out.append((m, env, ms(d, h), float(rnd.randrange(1, 10_000))))
    return out


def labels_of(proxy: str, env: str, env_key: str = "env"):
    return [{"key": "apiproxy", "value": proxy}, {"key": env_key, "value": env}]


def write_go_daily(path: Path, d: date, proxy: str, rows: list[tuple], holder: str | None = None) -> None:
    """The Go tool's daily file: `date` as text, labels a list of key/value structs.
    `holder`: the api_proxy its rows say (default: the file's own proxy)."""
    holder = holder or proxy
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "timestamp": pa.array([r[2] for r in rows], pa.int64()),
        "metric_name": pa.array([r[0] for r in rows]),
        "value": pa.array([r[3] for r in rows], pa.float64()),
        "api_proxy": pa.array([holder] * len(rows)),
        "date": pa.array([d.isoformat()] * len(rows)),
        "labels": pa.array([labels_of(holder, r[1]) for r in rows], KV),
    }), path)


def write_hive(root: Path, d: date, proxy: str, rows: list[tuple], files: int, env_key: str = "env") -> list[Path]:
    """The Go tool's Hive layout: no api_proxy/date columns, rows split over `files` files."""
    folder = root / f"year={d.year}" / f"month={d.month:02d}" / f"day={d.day:02d}" / f"app={proxy}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        part = rows[i::files]
        p = folder / f"part-{i}.parquet"
        pq.write_table(pa.table({
            "timestamp": pa.array([r[2] for r in part], pa.timestamp("ms")),
            "metric_name": pa.array([r[0] for r in part]),
            "value": pa.array([r[3] for r in part], pa.float64()),
            "labels": pa.array([labels_of(proxy, r[1], env_key) for r in part], KV),
        }), p)
        paths.append(p)
    return paths


def connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    return con


def archive(con, data: Path) -> list[tuple]:
    """Every row prom_metrics reads, labels as sorted (key, value) pairs."""
    rows = con.execute("SELECT date, api_proxy, metric_name, epoch_ms(timestamp), value, labels "
                       "FROM prom_metrics(data_dir := ?)", [str(data)]).fetchall()
    return sorted((d, p, m, ts, v, tuple(sorted(dict(lb).items()))) for d, p, m, ts, v, lb in rows)


def expected(parts: dict) -> list[tuple]:
    return sorted((d, p, m, ts, v, (("apiproxy", p), ("env", env)))
                  for (d, p), rows in parts.items() for m, env, ts, v in rows)


def compact_config(tmp: Path, data: Path) -> Path:
    return write_config(tmp / "compact.yaml", "http://127.0.0.1:9", PROXIES, output_dir=data,
                        storage_extra={"compaction": {"removeDailyAfter": "0s"}})


def data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


def test_each_partition_is_read_from_one_layout_and_compaction_takes_every_layout_in(tmp_path):
    """Random mixtures of daily (Go, list-of-struct labels) and Hive files per (day, proxy):
    prom_metrics and prom_partitions read each from one source (daily over Hive);
    compaction takes both layouts in (Go list labels included), changes no row, and
    removes what it took in (Hive files a daily file shadowed are left alone); Hive files added to a compacted month are shadowed."""
    con = connect()
    for seed in range(SEEDS):
        rnd = random.Random(seed)
        data = tmp_path / f"s{seed}" / "data"
        data.mkdir(parents=True)
        want: dict = {}
        want_files: set = set()
        shadowed: list = []
        for d in DAYS:
            for p in PROXIES:
                has_daily, has_hive = rnd.random() < 0.5, rnd.random() < 0.5
                daily_rows, hive_rows = gen_rows(rnd, d), gen_rows(rnd, d)
                if has_hive:
                    paths = write_hive(data, d, p, hive_rows, rnd.choice([1, 2]))
                    if not has_daily:
                        want[(d, p)] = hive_rows
                        want_files |= {(d, p, str(x)) for x in paths}
                    else:
                        shadowed += paths
                if has_daily:
                    path = data / d.isoformat() / f"{p}.parquet"
                    write_go_daily(path, d, p, daily_rows)
                    want[(d, p)] = daily_rows
                    want_files.add((d, p, str(path)))
        assert archive(con, data) == expected(want), f"seed {seed}"
        parts = con.execute("SELECT date, api_proxy, path FROM prom_partitions(data_dir := ?)",
                            [str(data)]).fetchall()
        assert sorted(parts) == sorted(want_files), f"seed {seed}"
        if not want:
            continue
        r = run_collector("--config", compact_config(tmp_path / f"s{seed}", data), "--compact", "--month", "2024-03")
        assert r.returncode == 0, f"seed {seed}: {r.stderr}"
        month = data / "2024-03" / "2024-03.parquet"
        # What it took in is gone; Hive files a daily file shadowed were never read: left alone.
        assert data_files(data) == sorted([month] + shadowed), f"seed {seed}: compaction left {data_files(data)}"
        assert archive(con, data) == expected(want), f"seed {seed}: compaction changed rows"
        # The month file is read with DuckDB's own reader too: the same rows.
        own = con.execute("SELECT date, api_proxy, metric_name, timestamp, value, map_entries(labels) "
                          f"FROM read_parquet('{month}')").fetchall()
        assert sorted((d, p, m, ts, v, tuple(sorted((e["key"], e["value"]) for e in lb)))
                      for d, p, m, ts, v, lb in own) == expected(want)
        # A Hive file written into the compacted month later is shadowed by the month file.
        d, p = DAYS[0], PROXIES[0]
        write_hive(data, d, p, gen_rows(rnd, d), 1)
        assert archive(con, data) == expected(want), f"seed {seed}: a Hive file beside a month file was read"
        # Compacting again takes nothing from Hive files a month file shadows.
        r = run_collector("--config", compact_config(tmp_path / f"s{seed}", data), "--compact", "--month", "2024-03")
        assert r.returncode == 0 and 'status="unchanged"' in r.stderr, f"seed {seed}: {r.stderr}"
        assert archive(con, data) == expected(want), f"seed {seed}: re-compaction took a shadowed Hive file in"


def test_a_file_holding_another_proxys_rows_is_an_error_naming_it(tmp_path, prometheus, history):
    """`p7.parquet` holding p1's rows: promduck's own file (its statistics say p1) and a
    Go-tool file (checked row by row) are errors naming the file, in every reader and in
    compaction; the file's real proxy is never read under its name."""
    con = connect()
    day = history.days_list[0]
    for kind in ("promduck", "go"):
        data = tmp_path / kind / "data"
        other = history.proxies[0]
        (tmp_path / kind).mkdir()
        if kind == "promduck":
            cfg = write_config(tmp_path / kind / "c.yaml", prometheus.url, [other], output_dir=data)
            r = run_collector("--config", cfg, "--date", day)
            assert r.returncode == 0, r.stderr
            src = next((data / day.isoformat()).glob("*.parquet"))
            wrong = data / day.isoformat() / "p7.parquet"
            shutil.copy(src, wrong)
            src.unlink()
        else:
            wrong = data / day.isoformat() / "p7.parquet"
            write_go_daily(wrong, day, "p7", gen_rows(random.Random(1), day), holder=other)
        for sql, args in [("SELECT count(*) FROM prom_metrics(data_dir := ?)", [str(data)]),
                          ("SELECT count(*) FROM prom_metrics(data_dir := ?, proxy := 'p7')", [str(data)]),
                          ("SELECT sum(value) FROM prom_metrics(data_dir := ?) WHERE api_proxy = ?", [str(data), other])]:
            with pytest.raises(duckdb.Error) as e:
                con.execute(sql, args).fetchall()
            msg = str(e.value)
            assert str(wrong) in msg and "api_proxy" in msg and f'"{other}"' in msg and '"p7"' in msg, (kind, msg)
        r = run_collector("--config", compact_config(tmp_path / kind, data), "--compact", "--month", day.strftime("%Y-%m"))
        assert r.returncode != 0 and str(wrong) in r.stdout + r.stderr, (kind, r.stdout, r.stderr)
        # The failed first compaction left no month folder behind, and the file as it was.
        assert wrong.exists() and not (data / day.strftime("%Y-%m")).exists()


def test_a_recollection_over_hive_partitions_takes_them_in_once(tmp_path, prometheus, history):
    """A collector pointed at the Go tool's Hive archive: each (day, proxy) it re-collects
    keeps the Hive rows the new answer lacks (a metric the config no longer has), takes the
    new answer's values where both hold a row, and is read once, not twice."""
    from helpers import DEFAULT_METRICS, day_end_ms
    con = connect()
    data = tmp_path / "data"
    day = history.days_list[1]
    proxies = history.proxies[:2]
    end = day_end_ms(day)
    hive_parts = {}
    for p in proxies:
        rows = [("request_count", env, end, 1.0) for env in history.environments]  # replaced by Prometheus's
        rows += [("legacy_metric", env, end - 3_600_000, 42.0) for env in history.environments]  # kept
        write_hive(data, day, p, rows, 2, env_key="environment")
        hive_parts[(day, p)] = rows
    before = archive(con, data)
    assert len(before) == sum(len(r) for r in hive_parts.values())
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, proxies, DEFAULT_METRICS, output_dir=data)
    r = run_collector("--config", cfg, "--date", day)
    assert r.returncode == 0, r.stderr
    got = con.execute("SELECT api_proxy, metric_name, labels['environment'], epoch_ms(timestamp), value "
                      "FROM prom_metrics(data_dir := ?)", [str(data)]).fetchall()
    want = []
    for p in proxies:
        for env in history.environments:
            # The same series and timestamp in both: the new answer's value, once.
            want.append((p, "request_count", env, end, history.expected[(day, p, env, "request_count")]))
            want.append((p, "error_count", env, end, history.expected[(day, p, env, "error_count")]))
            # A metric the config does not have: kept from the Hive files.
            want.append((p, "legacy_metric", env, end - 3_600_000, 42.0))
    assert sorted(got) == sorted(want)
    assert len(got) == len(set(got)), "a row was read twice"
    # The Hive files stay (the collector never deletes the Go tool's files) but are shadowed.
    assert len(list((data / f"year={day.year}").rglob("*.parquet"))) == 2 * len(proxies)


def test_the_hole_finder_counts_hive_partitions_as_present(tmp_path):
    """`--check` (and the daemon, through the same function) lists as gaps only the
    (day, proxy) pairs no layout holds; a Hive-only partition is present."""
    data = tmp_path / "data"
    rnd = random.Random(5)
    now = utc(2026, 3, 20, 0, 30)  # the product's "now", fixed (PROMDUCK_NOW)
    last = yesterday(now)
    held = {}
    for i in range(-12, 3):
        d = last + timedelta(days=i)
        for p in PROXIES:
            kind = rnd.choice([None, "daily", "hive", "hive"])
            held[(d, p)] = kind
            if kind == "daily":
                write_go_daily(data / d.isoformat() / f"{p}.parquet", d, p, gen_rows(rnd, d))
            elif kind == "hive":
                write_hive(data, d, p, gen_rows(rnd, d), 1)
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9", PROXIES, output_dir=data)
    r = run_collector("--config", cfg, "--check", env=now_env(now))
    assert f"in the 7 days before {last}" in r.stdout, r.stdout
    window = [last - timedelta(days=k) for k in range(7, 0, -1)]
    want = {d: [p for p in PROXIES if held.get((d, p)) is None] for d in window}
    want = {d: ps for d, ps in want.items() if ps}
    got = {date.fromisoformat(g[0]): g[1].split(", ") for g in re.findall(r"^  (\d{4}-\d{2}-\d{2}): (.*)$", r.stdout, re.M)}
    assert got == want, r.stdout
    n = sum(len(v) for v in want.values())
    if n:
        assert f"gaps: {n} missing partitions" in r.stdout
    assert any(k == "hive" for (d, _), k in held.items() if d in window), "the generator put no Hive partition in the window"
