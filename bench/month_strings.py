#!/usr/bin/env python3
"""Where prom_metrics spends more than read_parquet on compacted month files.

    .venv/bin/python bench/month_strings.py DATA_DIR [--repeat 30]

DATA_DIR: a compacted archive (e.g. the one `bench/run.py --only compaction --workdir W`
leaves in W/compaction/data). Runs, in one process, a numeric column alone, the two string
columns alone, and the GROUP BY of BENCHMARKS' compaction section through both readers;
prints the best time of each and checks both readers give the same result.
"""
import argparse
import time
from pathlib import Path

import duckdb

EXT = Path(__file__).resolve().parent.parent / "build" / "promduck.duckdb_extension"
QUERIES = {
    "sum(value)": "SELECT sum(value) FROM {src}",
    "count(api_proxy), count(metric_name)": "SELECT count(api_proxy), count(metric_name) FROM {src}",
    "GROUP BY api_proxy, metric_name": "SELECT api_proxy, metric_name, sum(value) FROM {src} GROUP BY ALL ORDER BY ALL",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXT}'")
    sources = {"prom_metrics": "prom_metrics(data_dir := $d)", "read_parquet": "read_parquet($g)"}
    params = {"d": str(args.data), "g": str(args.data / "*" / "*.parquet")}
    for name, q in QUERIES.items():
        best, results = {}, {}
        for reader, src in sources.items():
            sql = q.format(src=src)
            p = {k: v for k, v in params.items() if f"${k}" in sql}
            for _ in range(3):
                results[reader] = con.execute(sql, p).fetchall()
            t_best = float("inf")
            for _ in range(args.repeat):
                t = time.perf_counter()
                con.execute(sql, p).fetchall()
                t_best = min(t_best, time.perf_counter() - t)
            best[reader] = t_best
        same = results["prom_metrics"] == results["read_parquet"]
        print(f"{name:40s} prom_metrics {best['prom_metrics'] * 1000:6.2f} ms   read_parquet "
              f"{best['read_parquet'] * 1000:6.2f} ms   ({best['read_parquet'] / best['prom_metrics']:.2f}x)   "
              f"same result: {same}")
        if not same:
            raise SystemExit(f"{name}: the readers differ")


if __name__ == "__main__":
    main()
