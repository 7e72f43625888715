"""End-to-end: `prom_metrics` streams a partition instead of reading it whole (issue 18, item 1).

One partition in the issue's shape (one proxy, 20,000 series at a 1-minute step: 28.8 M rows,
written by DuckDB's own `COPY ... TO` and stamped like promduck's writer) is queried in a child
process whose address space is capped (`RLIMIT_AS`), with DuckDB's `memory_limit` at 1 GB and 2
threads, as in the issue. The child's peak RSS comes from `wait4`; expected values come from plain
DuckDB's `read_parquet` on the same files.

Bounds: the child's peak RSS may exceed that of a child that only loads the extension by at most
`RSS_MARGIN` (128 MiB). Holding the file whole cannot fit in that: its `value` column alone is
28.8 M × 8 bytes = 220 MiB decoded. A streaming scan holds one open reader per thread (its
current Parquet pages and one 2,048-row batch). Measured on the 2-core test machine: the build
before the fix peaked at 2,781 MiB for `SELECT * ... LIMIT 1` (so it aborts under the 1 GiB cap)
and 323 MiB (+250 MiB) for `count(*), sum(value)`; the streaming build at +8 MiB and +6 MiB.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import pytest

from helpers import EXTENSION

DAY = "2024-03-01"
SERIES, STEPS = 20_000, 1_440           # 28.8 M rows: the partition
CAP = 1 << 30                           # RLIMIT_AS of the child: 1 GiB
RSS_MARGIN = 128 << 20                  # peak RSS above the load-only baseline

CHILD = r"""
import json, sys, time, duckdb
ext, threads, sql = sys.argv[1:4]
con = duckdb.connect(config={"allow_unsigned_extensions": "true", "threads": int(threads),
                             "memory_limit": "1GB"})
con.execute("SET enable_progress_bar = false")
con.execute(f"LOAD '{ext}'")
t = time.monotonic()
rows = con.execute(sql).fetchall()
seconds = time.monotonic() - t
# This process's own peak (VmHWM belongs to the address space exec created; ru_maxrss
# would carry over the size of the pytest process it was forked from).
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"rows": [list(r) for r in rows], "seconds": seconds, "hwm_kb": hwm}, default=str))
"""


def lit(s) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def run_capped(sql: str, threads: int = 2, extension=EXTENSION, cap=CAP):
    """Runs `sql` in a child under the address-space cap (`cap=None`: none):
    (exit status, rows, seconds, peak RSS bytes, stderr)."""
    def limit():
        if cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(extension), str(threads), sql],
                             stdout=out, stderr=err, preexec_fn=limit)
        timer = threading.Timer(300, p.kill)
        timer.start()
        try:
            # wait4, not wait: the child's own resource usage, whatever other children did.
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        p.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    peak = usage.ru_maxrss * 1024            # kilobytes on Linux
    if code != 0:
        return code, None, None, peak, err.decode(errors="replace")[-2000:]
    res = json.loads(out)
    return 0, res["rows"], res["seconds"], res["hwm_kb"] * 1024, ""


@pytest.fixture(scope="module")
def baseline():
    """Peak RSS of a child that loads the extension and runs `SELECT 1`."""
    code, rows, _, peak, err = run_capped("SELECT 1")
    assert code == 0 and rows == [[1]], err
    return peak


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    return make_archives(tmp_path_factory.mktemp("memory"))


def make_archives(root: Path):
    """`one`: the big partition; `four`: four copies of it as four proxies of the same day."""
    one = root / "one" / DAY / "big.parquet"
    one.parent.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    # The labels are built once per series and crossed with the steps (building a MAP per row
    # would take minutes); values are multiples of 1/4, so every sum is exact in any order.
    con.execute(f"""
        COPY (
          WITH series AS (SELECT s, 'metric_' || (s % 20) AS metric_name,
                                 MAP {{'instance': 'host-' || s, 'env': 'prod'}} AS labels
                          FROM range({SERIES}) t(s)),
               steps AS (SELECT k FROM range(1, {STEPS + 1}) t(k))
          SELECT epoch_ms(TIMESTAMP {lit(DAY)}) + k * 60000 AS timestamp, metric_name,
                 ((k * 7 + s) % 1000) / 4 AS value, 'big' AS api_proxy, DATE {lit(DAY)} AS date, labels
          FROM steps, series
        ) TO {lit(one)} (FORMAT parquet, COMPRESSION zstd, KV_METADATA {{created_by_promduck: 'test'}})""")
    four = root / "four" / DAY
    four.mkdir(parents=True)
    for p in ("p1", "p2", "p3", "p4"):
        # The same rows as proxy p (a file holds its own proxy's rows only).
        con.execute(f"COPY (SELECT * REPLACE ({lit(p)} AS api_proxy) FROM read_parquet({lit(one)})) "
                    f"TO {lit(four / (p + '.parquet'))} (FORMAT parquet, COMPRESSION zstd, "
                    "KV_METADATA {created_by_promduck: 'test'})")
    return root / "one", root / "four"


def plain(sql, params=None):
    """Plain DuckDB, no extension: the independent reference."""
    return [list(r) for r in duckdb.connect().execute(sql, params or []).fetchall()]


def files_of(data: Path):
    return sorted(str(p) for p in data.rglob("*.parquet"))


def check_bounded(what, code, peak, baseline, err):
    assert code == 0, f"{what}: exit {code} under a {CAP >> 20} MiB address-space cap: {err}"
    print(f"{what}: peak RSS {peak / 2**20:.0f} MiB (load-only {baseline / 2**20:.0f} MiB)")
    assert peak - baseline < RSS_MARGIN, f"{what}: peak RSS {peak >> 20} MiB, load-only {baseline >> 20} MiB"


# Compared as text: the child prints through JSON.
ROW = "epoch_ms(timestamp), date::VARCHAR, api_proxy, metric_name, value, labels::VARCHAR"
PLAIN_ROW = "timestamp, date::VARCHAR, api_proxy, metric_name, value, labels::VARCHAR"


def test_limit_1_on_a_large_partition_reads_only_what_it_returns(archives, baseline):
    one, _ = archives
    want = plain(f"SELECT {PLAIN_ROW} FROM read_parquet(?) LIMIT 1", [files_of(one)])
    code, rows, secs, peak, err = run_capped(
        f"SELECT {ROW} FROM (SELECT * FROM prom_metrics(data_dir := {lit(one)}) LIMIT 1)")
    check_bounded("LIMIT 1", code, peak, baseline, err)
    assert rows == want
    print(f"LIMIT 1: {secs:.3f} s")


def test_full_aggregate_of_a_large_partition_is_exact_and_bounded(archives, baseline):
    one, _ = archives
    files = files_of(one)
    want = plain("SELECT count(*), sum(value) FROM read_parquet(?)", [files])
    assert want == [[SERIES * STEPS, want[0][1]]]
    code, rows, secs, peak, err = run_capped(f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := {lit(one)})")
    check_bounded("count(*), sum(value)", code, peak, baseline, err)
    assert rows == want
    print(f"count(*), sum(value): {secs:.3f} s")
    # Every column (labels included) and a metric filter stream too.
    agg = "count(*), sum(value), count(labels), max(labels['instance']), min(metric_name), max(date)::VARCHAR"
    want = plain(f"SELECT {agg}, max(timestamp) FROM read_parquet(?) "
                 "WHERE metric_name IN ('metric_3', 'metric_17')", [files])
    code, rows, _, peak, err = run_capped(
        f"SELECT {agg}, max(epoch_ms(timestamp)) FROM prom_metrics(data_dir := {lit(one)}, "
        "metric := ['metric_3', 'metric_17'])")
    check_bounded("all columns, metric filter", code, peak, baseline, err)
    assert rows == want


def test_four_large_partitions_on_two_threads(archives, baseline):
    _, four = archives
    files = files_of(four)
    assert len(files) == 4
    want = plain("SELECT count(*), sum(value) FROM read_parquet(?)", [files])
    assert want[0][0] == 4 * SERIES * STEPS
    code, rows, secs, peak, err = run_capped(
        f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := {lit(four)})", threads=2)
    check_bounded("four files, count(*), sum(value)", code, peak, baseline, err)
    assert rows == want
    print(f"four files, count(*), sum(value): {secs:.3f} s")
    # LIMIT 1 on two threads: some row of the files (which one depends on the threads' race;
    # the four files are copies, so it is a row of the first).
    code, rows, secs, peak, err = run_capped(
        f"SELECT {ROW} FROM (SELECT * FROM prom_metrics(data_dir := {lit(four)}) LIMIT 1)", threads=2)
    check_bounded("four files, LIMIT 1", code, peak, baseline, err)
    assert len(rows) == 1
    assert plain(f"SELECT count(*) FROM (SELECT {PLAIN_ROW} FROM read_parquet(?)) t(ts, d, p, m, v, l) "
                 "WHERE ts = ? AND d = ? AND p = ? AND m = ? AND v = ? AND l = ?", [files[:1]] + rows[0]) == [[1]]
    print(f"four files, LIMIT 1: {secs:.3f} s")


QUERIES = [
    ("one file, SELECT * LIMIT 1", "one", "SELECT {row} FROM (SELECT * FROM prom_metrics(data_dir := {data}) LIMIT 1)"),
    ("one file, count(*), sum(value)", "one", "SELECT count(*), sum(value) FROM prom_metrics(data_dir := {data})"),
    ("four files, SELECT * LIMIT 1", "four", "SELECT {row} FROM (SELECT * FROM prom_metrics(data_dir := {data}) LIMIT 1)"),
    ("four files, count(*), sum(value)", "four", "SELECT count(*), sum(value) FROM prom_metrics(data_dir := {data})"),
]


def main():
    """The figures of BENCHMARKS.md section 5: each query in a fresh child (2 threads,
    memory_limit 1GB, no address-space cap), for each build given."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("builds", nargs="+", help="folders holding promduck.duckdb_extension")
    ap.add_argument("--repeat", type=int, default=3, help="runs per query and build (best time, highest RSS shown)")
    ap.add_argument("--json", type=Path, help="also write the figures here (BENCHMARKS.md's: bench/prom_metrics_memory.json)")
    args = ap.parse_args()
    figures = {"rows": SERIES * STEPS, "repeat": args.repeat, "builds": {}}
    answers = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.monotonic()
        one, four = make_archives(Path(tmp))
        print(f"generated {SERIES * STEPS:,} rows ({one.joinpath(DAY, 'big.parquet').stat().st_size / 2**20:.1f} MiB) "
              f"in {time.monotonic() - t:.1f} s")
        dirs = {"one": one, "four": four}
        for build in args.builds:
            ext = Path(build) / "promduck.duckdb_extension"
            _, _, _, base, _ = run_capped("SELECT 1", extension=ext, cap=None)
            print(f"\n{build}: load-only peak RSS {base / 2**20:.0f} MiB")
            fig = figures["builds"][build] = {"load_only_peak_rss_mib": round(base / 2**20, 1), "queries": {}}
            for name, where, sql in QUERIES:
                runs = [run_capped(sql.format(row=ROW, data=lit(dirs[where])), extension=ext, cap=None)
                        for _ in range(args.repeat)]
                bad = [r for r in runs if r[0] != 0]
                if bad:
                    print(f"  {name}: exit {bad[0][0]}: {bad[0][4][-200:]}")
                    continue
                print(f"  {name}: peak RSS {max(r[3] for r in runs) / 2**20:.0f} MiB, "
                      f"{min(r[2] for r in runs):.3f} s  {runs[0][1]}")
                fig["queries"][name] = {"peak_rss_mib": round(max(r[3] for r in runs) / 2**20, 1),
                                        "seconds": [round(r[2], 4) for r in runs], "result": runs[0][1]}
                # Aggregates must agree between builds and with read_parquet (LIMIT 1 may
                # return any row of the file: not compared).
                if "LIMIT" not in sql:
                    answers.setdefault(name, {})[build] = runs[0][1]
        want = {}
        for name, where, sql in QUERIES:
            if "LIMIT" in sql:
                continue
            files = files_of(dirs[where])
            want[name] = plain("SELECT count(*), sum(value) FROM read_parquet(?)", [files])
        for name, per_build in answers.items():
            same = all(json.dumps(v) == json.dumps(want[name]) for v in per_build.values())
            print(f"{name}: read_parquet {want[name]}; {'every build gives the same' if same else 'DIFFERENT: ' + repr(per_build)}")
            figures.setdefault("checked", {})[name] = {"read_parquet": want[name], "same": same}
            if not same:
                raise SystemExit(f"{name}: the builds' results differ from read_parquet's")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
