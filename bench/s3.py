#!/usr/bin/env python3
"""Object storage: requests and time of prom_metrics on S3 (moto on loopback) vs local disk.

The same archive (DAYS days × PROXIES proxies, written by promduck's own writer through
core/examples/gen_partitions) is written once to a folder and once to a bucket on a moto
server started here; every query runs in the DuckDB CLI with `LOAD promduck`, against
each, REPEAT times (the median is reported). Requests are counted by the recording proxy
in front of moto (tests/s3fixture.py), not computed; both sides' results are compared.

Then both archives are compacted (`promduck-collector --compact`, `removeDailyAfter: 0s`:
one object per closed month) and the same queries run again, in the same run, with their
requests counted the same way; every result must equal the daily archive's.

    .venv/bin/python bench/s3.py [--days 365] [--proxies 20] [--repeat 3] [--no-compact] [--json bench/s3.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers import COLLECTOR, write_config  # noqa: E402
from s3fixture import MotoServer, child_env, s3_storage_config  # noqa: E402

GEN = REPO / "target" / "release" / "examples" / "gen_partitions"
CLI = REPO / ".venv" / "bin" / "duckdb"
EXT = REPO / "build" / "promduck.duckdb_extension"


def run_sql(sql: str, env: dict, cwd: Path) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run([str(CLI), "-unsigned", "-csv", "-noheader", "-c", f"LOAD '{EXT}';\n{sql}"],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"query failed: {sql}\n{r.stderr}")
    return elapsed, r.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--proxies", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-compact", action="store_true", help="skip the compacted archive's measurements")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not GEN.exists():
        raise SystemExit(f"{GEN} missing: cargo build --release -p promduck-core --example gen_partitions")

    with tempfile.TemporaryDirectory(prefix="promduck-s3-bench-") as tmp, MotoServer(Path(tmp) / "moto") as moto:
        tmp = Path(tmp)
        bucket = moto.create_bucket("bench")
        env = child_env(moto)
        url = f"s3://{bucket}/archive"
        local = tmp / "data"
        n = args.days * args.proxies
        for out in (str(local), url):
            t = time.perf_counter()
            subprocess.run([str(GEN), out, str(args.days), str(args.proxies)], env=env, check=True,
                           capture_output=True)
            print(f"wrote {n} partitions to {out} in {time.perf_counter() - t:.1f} s", flush=True)
        assert len(moto.list_keys(bucket)) == n

        day = "2024-06-15"
        queries = {
            "point (one day, one proxy, one metric)":
                f"SELECT sum(value) FROM prom_metrics(data_dir := '{{d}}', date := '{day}', proxy := 'api-proxy-3', "
                "metric := 'request_count')",
            f"one day ({args.proxies} proxies)":
                f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{{d}}', date := '{day}')",
            "a month (date range)":
                "SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{d}', "
                "start_date := '2024-06-01', end_date := '2024-06-30')",
            f"whole archive ({args.days} days)":
                "SELECT count(*), sum(value) FROM prom_metrics(data_dir := '{d}')",
        }
        results = measure(queries, str(local), url, moto, bucket, env, tmp, args.repeat, "daily files")
        compacted = []
        compaction = {}
        if not args.no_compact:
            lcfg = write_config(tmp / "local.yaml", "http://127.0.0.1:1", ["x"], output_dir=local,
                                storage_extra={"compaction": {"removeDailyAfter": "0s"}})
            storage = s3_storage_config(moto, bucket, "archive")
            storage["compaction"] = {"removeDailyAfter": "0s"}
            scfg = write_config(tmp / "s3.yaml", "http://127.0.0.1:1", ["x"], storage_extra=storage)
            for side, cfg in (("local", lcfg), ("s3", scfg)):
                moto.reset_requests()
                t = time.perf_counter()
                r = subprocess.run([str(COLLECTOR), "--config", str(cfg), "--compact"], env=child_env(),
                                   capture_output=True, text=True, timeout=3600)
                elapsed = time.perf_counter() - t
                if r.returncode != 0:
                    raise SystemExit(f"compaction on {side} failed:\n{r.stderr}")
                months = r.stderr.count('status="compacted"')
                compaction[side] = {"s": round(elapsed, 2), "months": months}
                if side == "s3":
                    compaction[side]["requests"] = dict(moto.counts(bucket=bucket))
                    keys = moto.list_keys(bucket)
                    compaction[side]["objects_after"] = len(keys)
                print(f"compacted {side}: {months} months in {elapsed:.1f} s"
                      + (f", requests {sum(compaction[side]['requests'].values())} "
                         f"({', '.join(f'{k} {v}' for k, v in sorted(compaction[side]['requests'].items()))}), "
                         f"{compaction[side]['objects_after']} objects left" if side == "s3" else ""), flush=True)
            compacted = measure(queries, str(local), url, moto, bucket, env, tmp, args.repeat, "compacted")
            for before, after in zip(results, compacted):
                if before["s3_result"] != after["s3_result"]:
                    raise SystemExit(f"{before['query']}: compacted {after['s3_result']} != daily {before['s3_result']}")
        if args.json:
            args.json.write_text(json.dumps({"days": args.days, "proxies": args.proxies, "repeat": args.repeat,
                                             "results": results, "compaction": compaction,
                                             "compacted": compacted}, indent=2) + "\n")


def measure(queries, local, url, moto, bucket, env, cwd, repeat, label):
    """Each query on both sides, `repeat` times; the S3 side's requests counted at the proxy."""
    print(f"-- {label}", flush=True)
    results = []
    for name, q in queries.items():
        row = {"query": name}
        for side, d in (("local", local), ("s3", url)):
            times, out = [], None
            for i in range(repeat):
                moto.reset_requests()
                elapsed, got = run_sql(q.format(d=d), env, cwd)
                times.append(elapsed)
                if out is not None and got != out:
                    raise SystemExit(f"{name} on {side}: run {i} gave {got}, earlier {out}")
                out = got
                if side == "s3":
                    row["requests"] = dict(moto.counts(bucket=bucket))
            row[f"{side}_s"] = statistics.median(times)
            row[f"{side}_result"] = out
        if row["local_result"] != row["s3_result"]:
            raise SystemExit(f"{name}: local {row['local_result']} != s3 {row['s3_result']}")
        row["ratio"] = row["s3_s"] / row["local_s"]
        results.append(row)
        req = ", ".join(f"{k} {v}" for k, v in sorted(row["requests"].items()))
        print(f"{name:42s} local {row['local_s']:6.3f} s   s3 {row['s3_s']:6.3f} s   "
              f"({row['ratio']:.2f}x)   requests: {sum(row['requests'].values())} ({req})   "
              f"same result: {row['s3_result']}", flush=True)
    return results


if __name__ == "__main__":
    main()
