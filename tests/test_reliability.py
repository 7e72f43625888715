"""Crash safety and readers during writes, against a real Prometheus.

- SIGKILL at seeded random moments of a multi-day backfill: no partial or corrupt
  Parquet file is ever visible, leftovers are temporary files only, and a re-run
  completes the data set to exactly the generator's values (every trial).
- Readers (DuckDB `prom_metrics` and plain `read_parquet`) looping while the
  collector rewrites the same days: no read error, never a partial result.

Trials and reads scale with PROMDUCK_CRASH_TRIALS / PROMDUCK_READS (`make stress`
raises them). Figures go to tests/output/reliability-*.json for RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from faultproxy import FaultProxy
from fixtures_data import day_start
from test_compaction import encode_proxy
from helpers import COLLECTOR, EXTENSION, LATENCY_Q, REPO_ROOT, read_rows, wait_until, write_config

TRIALS = int(os.environ.get("PROMDUCK_CRASH_TRIALS", "50"))
READS = int(os.environ.get("PROMDUCK_READS", "200"))
SEED = int(os.environ.get("PROMDUCK_SEED", "20241125"))
OUTPUT = REPO_ROOT / "tests" / "output"

METRICS = [
    {"name": "request_count", "query": 'sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)',
     "labels": ["apiproxy", "environment"]},
    # One point a minute: files of a few thousand rows, so writes take real time.
    {"name": "latency_ms", "query": LATENCY_Q, "labels": ["apiproxy", "environment"], "step": "1m"},
]


def parquet_files(root: Path):
    return sorted(p for p in root.rglob("*.parquet"))


def snapshot(root: Path):
    """{relative path: rows} of every visible partition, read completely by pyarrow, as
    sorted (ts_ms, day, proxy, metric, labels, value) tuples (the zone never enters)."""
    out = {}
    for p in parquet_files(root):
        t = pq.read_table(p)
        cols = [t.column("timestamp").cast(pa.int64()).to_pylist(), t.column("date").to_pylist(),
                t.column("api_proxy").to_pylist(), t.column("metric_name").to_pylist(),
                [tuple(sorted(m)) for m in t.column("labels").to_pylist()], t.column("value").to_pylist()]
        out[str(p.relative_to(root))] = sorted(zip(*cols))
    return out


def generated(history) -> dict:
    """What every partition must hold, from the generator's values (never from a run of
    promduck): per day and proxy, each environment's request_count increase at the day's
    end and its latency sample at every minute of the day (the series is sampled once a
    minute, so a 1m step reads each sample exactly)."""
    out = {}
    for day in history.days_list:
        start_ms = day_start(day) * 1000
        for proxy in history.proxies:
            rows = []
            for env in history.environments:
                labels = (("apiproxy", proxy), ("environment", env))
                rows.append((start_ms + 86_400_000, day, proxy, "request_count", labels,
                             history.expected[(day, proxy, env, "request_count")]))
                samples = dict(history.gauge_samples[(proxy, env)])
                rows += [(start_ms + m * 60_000, day, proxy, "latency_ms", labels,
                          samples[day_start(day) + m * 60]) for m in range(1, 1441)]
            out[f"{day}/{encode_proxy(proxy)}.parquet"] = sorted(rows)
    return out


def temp_files(root: Path):
    return [p for p in root.rglob("*") if p.is_file() and ".promduck-tmp" in p.name]


@pytest.fixture(scope="module")
def setup(prometheus, history, tmp_path_factory):
    work = tmp_path_factory.mktemp("crash")
    cfg = write_config(work / "c.yaml", prometheus.url, history.proxies, metrics=METRICS,
                       output_dir=work / "data", storage_extra={"compression": "gzip"},
                       prometheus_extra={"concurrency": 2})
    first, last = history.days_list[0], history.days_list[-1]
    args = [str(COLLECTOR), "--config", str(cfg), "--from", str(first), "--to", str(last), "--log-format", "json"]
    # The kill delays are drawn against a clean run's duration: take the fastest of
    # three (re)writes, so a slow first run (cold caches, a busy machine) does not
    # let most trials finish before their kill.
    runs = []
    for _ in range(3):
        started = time.monotonic()
        r = subprocess.run(args, capture_output=True, text=True, cwd=work)
        runs.append(time.monotonic() - started)
        assert r.returncode == 0, r.stderr
    clean_seconds = min(runs)
    # What every trial is compared with: the generator's values, not this run's.
    clean = generated(history)
    assert len(clean) == len(history.days_list) * len(history.proxies)
    # Per partition: one daily row per environment, and 1440 minutes of latency per environment.
    assert {len(rows) for rows in clean.values()} == {len(history.environments) * (1 + 1440)}
    assert snapshot(work / "data") == clean
    shutil.copytree(work / "data", work / "clean-copy")
    return work, args, clean, clean_seconds


def test_sigkill_at_random_moments_never_leaves_a_partial_file(setup, history):
    work, args, clean, clean_seconds = setup
    rng = random.Random(SEED)
    data = work / "data"
    stats = {"trials": TRIALS, "seed": SEED, "clean_run_seconds": round(clean_seconds, 3),
             "killed_before_exit": 0, "trials_with_partial_dataset": 0, "trials_with_temp_files": 0,
             "corrupt_or_partial_files_seen": 0, "reruns_equal_to_the_generator": 0}
    for trial in range(TRIALS):
        # Half the trials rewrite an existing data set, half start from nothing.
        shutil.rmtree(data, ignore_errors=True)
        if trial % 2 == 1:
            shutil.copytree(work / "clean-copy", data)
        delay = rng.uniform(0, clean_seconds * 1.2)
        proc = subprocess.Popen(args, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            stats["killed_before_exit"] += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        # Every visible partition is complete and holds exactly the generator's values.
        visible = snapshot(data) if data.exists() else {}
        for path, rows in visible.items():
            if rows != clean[path]:
                stats["corrupt_or_partial_files_seen"] += 1
        if len(visible) < len(clean):
            stats["trials_with_partial_dataset"] += 1
        if data.exists() and temp_files(data):
            stats["trials_with_temp_files"] += 1
        assert stats["corrupt_or_partial_files_seen"] == 0, f"trial {trial}: a visible file differs from the generator"

        # The next run removes the leftovers and completes the data set exactly.
        r = subprocess.run(args, cwd=work, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert snapshot(data) == clean, f"trial {trial}: re-run differs from the generator"
        assert temp_files(data) == [], f"trial {trial}: temporary files left after a complete run"
        stats["reruns_equal_to_the_generator"] += 1
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "reliability-crash.json").write_text(json.dumps(stats, indent=2))
    print("\ncrash safety:", json.dumps(stats))
    # The harness must actually have interrupted runs, or it proves nothing.
    assert stats["killed_before_exit"] >= TRIALS // 2
    assert stats["trials_with_partial_dataset"] > 0


def test_readers_never_see_half_written_files(setup, history):
    work, args, clean, _ = setup
    data = work / "data"
    subprocess.run(args, cwd=work, check=True, capture_output=True)
    want_rows = sum(len(rows) for rows in clean.values())
    want_sum = sum(r[5] for rows in clean.values() for r in rows)

    stop = threading.Event()
    rewrites = {"runs": 0, "failures": 0}

    def writer():
        while not stop.is_set():
            r = subprocess.run(args, cwd=work, capture_output=True, text=True)
            rewrites["runs"] += 1
            if r.returncode != 0:
                rewrites["failures"] += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    errors, reads = [], {"prom_metrics": 0, "read_parquet": 0}
    try:
        deadline = time.monotonic() + 120
        i = 0
        while (i < READS or rewrites["runs"] < 3) and time.monotonic() < deadline:
            if i % 2 == 0:
                sql, kind = "SELECT count(*), sum(value) FROM prom_metrics(data_dir := ?)", "prom_metrics"
                params = [str(data)]
            else:
                sql, kind = "SELECT count(*), sum(value) FROM read_parquet(?)", "read_parquet"
                params = [str(data / "*" / "*.parquet")]
            try:
                n, total = con.execute(sql, params).fetchone()
                reads[kind] += 1
                if n != want_rows or abs(total - want_sum) > 1e-6 * max(1.0, abs(want_sum)):
                    errors.append(f"{kind}: {n} rows, sum {total} (want {want_rows}, {want_sum})")
            except duckdb.Error as e:
                errors.append(f"{kind}: {e}")
            i += 1
    finally:
        stop.set()
        thread.join(timeout=60)
    stats = {"reads": reads, "rewrite_runs": rewrites["runs"], "rewrite_failures": rewrites["failures"],
             "read_errors": len(errors)}
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "reliability-readers.json").write_text(json.dumps(stats, indent=2))
    print("\nreaders during writes:", json.dumps(stats))
    assert errors == []
    assert rewrites["failures"] == 0
    assert sum(reads.values()) >= READS
    assert rewrites["runs"] >= 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_sigterm_or_sigint_finishes_cleanly(setup, history, prometheus, sig):
    """SIGTERM, or SIGINT (Ctrl-C) alike, mid-backfill: files in progress are finished, no new ones start, the
    process exits 130 having sent at most the queries of the partition in progress (no
    timing claim), some but not all partitions are written, each
    complete and equal to the clean run's, and no temporary file is left."""
    work, args, clean, _ = setup
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    slow_cfg = work / "slow.yaml"
    cfg = json.loads((work / "c.yaml").read_text())
    slow_args = [a if a != str(work / "c.yaml") else str(slow_cfg) for a in args]
    with FaultProxy(prometheus.url) as proxy:
        # Every query takes 0.25 s and one runs at a time: the 16 partitions (2 queries
        # each) need 8 s, so the signal surely lands in the middle of the run.
        proxy.add_rule("delay", times=None, delay_seconds=0.25)
        cfg["prometheus"].update({"url": proxy.url, "concurrency": 1, "batchSize": 1})
        slow_cfg.write_text(json.dumps(cfg))
        proc = subprocess.Popen(slow_args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: len(parquet_files(data) if data.exists() else []) >= 2, "two partitions written",
                       interval=0.02, proc=proc)
            asked = len(proxy.snapshot())
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        after = len(proxy.snapshot()) - asked
    assert proc.returncode == 130, err[-2000:]
    # One query at a time, two per partition: after the signal, at most the rest of the
    # partition in progress was asked for.
    assert after <= 2, f"{after} queries after the signal"
    assert "signal received" in err
    visible = snapshot(data)
    assert 2 <= len(visible) < len(clean), sorted(visible)
    assert {path: clean[path] for path in visible} == visible
    assert temp_files(data) == []
    # The log accounts for every partition: written ones are exactly the visible files,
    # the rest were cancelled.
    events = [json.loads(l)["fields"] for l in err.splitlines() if l.startswith("{")]
    written = {str(Path(e["path"]).relative_to(data)) for e in events if e.get("message") == "written"}
    assert written == set(visible)
    summary = [e for e in events if e.get("message") == "collection finished"]
    assert len(summary) == 1, err[-2000:]
    assert (summary[0]["written"], summary[0]["failed"], summary[0]["cancelled"]) == (
        len(visible), 0, len(clean) - len(visible)), summary
