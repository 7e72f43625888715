#!/usr/bin/env python3
"""Natural SQL: `WHERE` against the named parameters, both builds, local and S3, in one run.

A year of DAYS × PROXIES daily files (promduck's own writer, core/examples/gen_partitions) is
queried in Python duckdb (the .venv's, 2.0.1), `threads = 2`, with
- the native build (build/native/v2.0.1/, C API v2: WHERE pushed down) and
- the portable build (build/promduck.duckdb_extension, C API v1.2: WHERE applied above the scan),
each query in its parameter form and its WHERE form, REPEAT times warm (median reported), every
answer compared with the parameter form's. Ratios are WHERE / parameters of the same build in this
run. Then the same queries against an S3 bucket (moto on loopback, OBJECT_DAYS × PROXIES objects),
each in a fresh process, requests counted by the recording proxy of tests/s3fixture.py.

    .venv/bin/python bench/natural_sql.py [--days 365] [--proxies 200] [--object-days 5] [--repeat 30]
                                         [--work DIR] [--json bench/natural_sql.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from s3fixture import MotoServer, child_env  # noqa: E402

GEN = REPO / "target" / "release" / "examples" / "gen_partitions"
NATIVE = REPO / "build" / "native" / "v2.0.1" / "promduck.duckdb_extension"
PORTABLE = REPO / "build" / "promduck.duckdb_extension"
PYTHON = REPO / ".venv" / "bin" / "python"


def queries(day: str, month: tuple[str, str]) -> dict[str, tuple[str, str]]:
    """name -> (parameter form, WHERE form); `{d}` is the archive."""
    a, b = month
    return {
        "one day, one proxy": (
            f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{{d}}', date := '{day}', proxy := 'api-proxy-3')",
            f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{{d}}') "
            f"WHERE date = '{day}' AND api_proxy = 'api-proxy-3'"),
        "one month": (
            f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{{d}}', start_date := '{a}', end_date := '{b}')",
            f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{{d}}') WHERE date >= '{a}' AND date <= '{b}'"),
        "one metric, one day": (
            f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{{d}}', date := '{day}', metric := 'request_count')",
            f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{{d}}') "
            f"WHERE date = '{day}' AND metric_name = 'request_count'"),
    }


def connect(ext: Path):
    import duckdb

    con = duckdb.connect(config={"allow_unsigned_extensions": "true", "threads": "2"})
    con.execute(f"LOAD '{ext}'")
    return con


def timed(con, sql: str, repeat: int) -> tuple[float, list]:
    answer = con.execute(sql).fetchall()  # warm-up, and the answer compared
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        con.execute(sql).fetchall()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, answer


S3_QUERY = r"""
import duckdb, sys
con = duckdb.connect(config={'allow_unsigned_extensions': 'true', 'threads': '2'})
con.execute('SET enable_progress_bar = false')
con.execute(f"LOAD '{sys.argv[1]}'")
print(con.execute(sys.argv[2]).fetchall())
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--proxies", type=int, default=200)
    ap.add_argument("--object-days", type=int, default=5, help="days of the S3 archive (× proxies objects)")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--work", type=Path, default=None, help="keep the generated archive here (reused)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    for f in (GEN, NATIVE, PORTABLE):
        if not f.exists():
            raise SystemExit(f"{f} missing: `make build` and "
                             "`cargo build --release -p promduck-core --example gen_partitions`")
    import duckdb

    print(f"DuckDB {duckdb.__version__} (Python), threads = 2; {args.days} days x {args.proxies} proxies", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="promduck-natural-"))
    work = args.work or tmp
    data = work / f"year-{args.days}x{args.proxies}"
    if not (data / "2024-01-01").is_dir():
        shutil.rmtree(data, ignore_errors=True)
        t = time.perf_counter()
        subprocess.run([str(GEN), str(data), str(args.days), str(args.proxies), "2024-01-01"], check=True,
                       capture_output=True)
        print(f"wrote {args.days * args.proxies} partitions in {time.perf_counter() - t:.1f} s", flush=True)
    qs = queries("2024-06-15", ("2024-06-01", "2024-06-30"))
    results = {"local": {}, "s3": {}}
    builds = {"native": connect(NATIVE), "portable": connect(PORTABLE)}
    print(f"\n{'query':<22} {'build':<9} {'parameters':>11} {'WHERE':>11} {'ratio':>8}")
    for name, (by_params, by_where) in qs.items():
        for build, con in builds.items():
            tp, ap_ = timed(con, by_params.format(d=data), args.repeat)
            # The portable build reads the whole archive for a WHERE: fewer repeats.
            tw, aw = timed(con, by_where.format(d=data), args.repeat if build == "native" else 1)
            if ap_ != aw:
                raise SystemExit(f"{build} {name}: WHERE answered {aw}, the parameters {ap_}")
            results["local"][f"{name} / {build}"] = {"params_ms": tp, "where_ms": tw, "ratio": tw / tp}
            print(f"{name:<22} {build:<9} {tp:>9.1f}ms {tw:>9.1f}ms {tw / tp:>7.2f}x", flush=True)

    # DuckDB's own cost of a WHERE: the point query's two shapes over a 6-row table in memory
    # (no promduck), so a ratio above can be read against what the host adds by itself.
    con = builds["native"]
    con.execute("CREATE TEMP TABLE six AS SELECT DATE '2024-06-15' AS date, 'api-proxy-3' AS api_proxy, "
                "i::DOUBLE AS value FROM range(6) r(i)")
    tp, _ = timed(con, "SELECT count(*), sum(value) FROM six", args.repeat * 20)
    tw, _ = timed(con, "SELECT count(*), sum(value) FROM six WHERE date = '2024-06-15' AND api_proxy = 'api-proxy-3'",
                  args.repeat * 20)
    results["local"]["floor: a 6-row table"] = {"params_ms": tp, "where_ms": tw, "ratio": tw / tp}
    print(f"{'(floor: 6-row table)':<22} {'DuckDB':<9} {tp:>9.1f}ms {tw:>9.1f}ms {tw / tp:>7.2f}x", flush=True)

    with MotoServer(tmp / "moto") as moto:
        bucket = moto.create_bucket("natural")
        env = child_env(moto)
        url = f"s3://{bucket}/archive"
        # Days around the queried day (2024-06-15).
        first = (date(2024, 6, 15) - timedelta(days=args.object_days // 2)).isoformat()
        subprocess.run([str(GEN), url, str(args.object_days), str(args.proxies), first], env=env,
                       check=True, capture_output=True)
        n = len(moto.list_keys(bucket))
        print(f"\nS3 (moto, {n} objects): requests counted by the proxy", flush=True)
        print(f"{'query':<22} {'build':<9} {'parameters':>11} {'WHERE':>11}")
        for name, (by_params, by_where) in qs.items():
            if name == "one month":
                continue  # the bucket holds a few days only
            for build, ext in (("native", NATIVE), ("portable", PORTABLE)):
                counts = []
                answers = []
                for sql in (by_params, by_where):
                    moto.reset_requests()
                    r = subprocess.run([str(PYTHON), "-c", S3_QUERY, str(ext), sql.format(d=url)], env=env,
                                       capture_output=True, text=True, timeout=600)
                    if r.returncode != 0:
                        raise SystemExit(f"{build} {name} on S3 failed:\n{r.stderr}")
                    answers.append(r.stdout.strip())
                    counts.append(moto.total(bucket=bucket))
                if answers[0] != answers[1]:
                    raise SystemExit(f"{build} {name} on S3: WHERE answered {answers[1]}, the parameters {answers[0]}")
                results["s3"][f"{name} / {build}"] = {"params_requests": counts[0], "where_requests": counts[1]}
                print(f"{name:<22} {build:<9} {counts[0]:>11} {counts[1]:>11}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
