#!/usr/bin/env python3
"""Compaction benchmark (BENCHMARKS.md, section "Compaction"): a year of partitions (365 days x 200 proxies,
73,000 files written by promduck's writer), before and after `promduck-collector --compact`.

Same run, same data: full-year scans (prom_metrics on the compacted archive vs read_parquet over
the daily files and over the month files), a point query (one day, one proxy) in a compacted
month, files before/after, compaction time and peak memory for a month and for the year, and
the Bloom filter on api_proxy measured (file size, DuckDB point queries for a present and an
absent proxy). `bench/run.py --only compaction` runs it (part of `make bench`); alone:
`.venv/bin/python bench/compaction.py [--workdir DIR] [--json FILE]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (bench/common.py)

FULL = "SELECT api_proxy, metric_name, sum(value) FROM {} GROUP BY ALL ORDER BY ALL"
POINT = "SELECT count(*), sum(value) FROM {}"


def config(path: Path, data: Path, bloom=False) -> Path:
    cfg = {"apiProxies": ["api-proxy-0"],
           "prometheus": {"url": "http://127.0.0.1:1", "metrics": [{"name": "m", "query": 'x{a="%s"}'}]},
           "storage": {"outputDir": str(data), "compression": "zstd",
                       "compaction": {"removeDailyAfter": "0s", "bloomFilter": bloom}}}
    path.write_text(json.dumps(cfg))
    return path


def files(data: Path) -> int:
    return sum(1 for _ in data.rglob("*.parquet"))


def compact(cfg: Path, cwd: Path, *extra) -> tuple[float, float]:
    r = common
    return r.peak_rss_mib([str(r.COLLECTOR), "--config", str(cfg), "--compact", *extra], cwd)


def bench_compaction(tmp: Path, results: dict | None = None):
    r = common
    GEN, connect, log, timed = r.GEN, r.connect, r.log, r.timed
    log("\n## Compaction: a year in twelve files")
    year = tmp / "compaction" / "data"
    if year.exists() and any(year.glob("2024-??")):
        shutil.rmtree(year)  # compacted by an earlier run: start again from daily files
    if not year.exists():
        t = time.perf_counter()
        subprocess.run([str(GEN), str(year), "365", "200", "2024-01-01"], check=True, capture_output=True)
        log(f"  generated 365 x 200 = 73,000 partitions in {time.perf_counter() - t:.1f} s")
        os.sync()  # compacted months are old files: none of them still being written back
    out: dict = {}
    before_files = files(year)
    con = connect()
    glob = str(year / "*" / "*.parquet")

    # Before: the daily files.
    rp_daily, r_rp, _ = timed(con, FULL.format("read_parquet(?)"), [glob], repeat=2)
    pm_daily, r_pm, _ = timed(con, FULL.format("prom_metrics(data_dir := ?)"), [str(year)], repeat=2)
    assert r_rp == r_pm
    point_daily, p_daily, _ = timed(con, POINT.format("prom_metrics(data_dir := ?, date := '2024-06-01', proxy := 'api-proxy-7')"),
                                 [str(year)], repeat=20)
    log(f"  daily files: {before_files:,}; full scan read_parquet {rp_daily:.2f} s, prom_metrics {pm_daily:.2f} s")

    # One month, from a copy of January's day folders.
    month = tmp / "compaction" / "month" / "data"
    shutil.rmtree(month.parent, ignore_errors=True)
    month.mkdir(parents=True)
    for d in sorted(year.glob("2024-01-*")):
        shutil.copytree(d, month / d.name)
    month_rss, month_s = compact(config(month.parent / "c.yaml", month), month.parent, "--month", "2024-01")
    month_file = month / "2024-01" / "2024-01.parquet"
    no_bloom = month_file.stat().st_size
    log(f"  one month (6,200 files -> 1): {month_s:.2f} s, peak RSS {month_rss:.1f} MiB")

    # The Bloom filter on api_proxy, measured on the same month.
    mcon = connect()
    mglob = str(month / "*" / "*.parquet")
    q_present = POINT.format("read_parquet(?) WHERE date = DATE '2024-01-17' AND api_proxy = 'api-proxy-7'")
    q_absent = POINT.format("read_parquet(?) WHERE api_proxy = 'api-proxy-7x'")
    present_off, _, _ = timed(mcon, q_present, [mglob], repeat=20)
    absent_off, _, _ = timed(mcon, q_absent, [mglob], repeat=20)
    bloom_dir = tmp / "compaction" / "bloom" / "data"
    shutil.rmtree(bloom_dir.parent, ignore_errors=True)
    bloom_dir.mkdir(parents=True)
    for d in sorted(year.glob("2024-01-*")):
        shutil.copytree(d, bloom_dir / d.name)
    compact(config(bloom_dir.parent / "c.yaml", bloom_dir, bloom=True), bloom_dir.parent, "--month", "2024-01")
    with_bloom = (bloom_dir / "2024-01" / "2024-01.parquet").stat().st_size
    bglob = str(bloom_dir / "*" / "*.parquet")
    present_on, _, _ = timed(mcon, q_present, [bglob], repeat=20)
    absent_on, _, _ = timed(mcon, q_absent, [bglob], repeat=20)
    out["bloom"] = {"bytes_without": no_bloom, "bytes_with": with_bloom, "present_ms_without": round(present_off * 1000, 2),
                    "present_ms_with": round(present_on * 1000, 2), "absent_ms_without": round(absent_off * 1000, 2),
                    "absent_ms_with": round(absent_on * 1000, 2)}
    log(f"  Bloom filter on api_proxy: file {no_bloom:,} -> {with_bloom:,} bytes; DuckDB point query "
        f"{present_off * 1000:.2f} -> {present_on * 1000:.2f} ms, absent proxy {absent_off * 1000:.2f} -> {absent_on * 1000:.2f} ms")
    shutil.rmtree(bloom_dir.parent)

    # The year, in one run.
    year_rss, year_s = compact(config(year.parent / "c.yaml", year), year.parent)
    after_files = files(year)
    year_bytes = sum(p.stat().st_size for p in year.rglob("*.parquet"))
    log(f"  the year (73,000 files -> {after_files}): {year_s:.2f} s, peak RSS {year_rss:.1f} MiB, {year_bytes / 1e6:.1f} MB")

    # After: the month files.
    con = connect()
    pm_comp, r1, pm_comp_cpu = timed(con, FULL.format("prom_metrics(data_dir := ?)"), [str(year)], repeat=5)
    rp_comp, r2, rp_comp_cpu = timed(con, FULL.format("read_parquet(?)"), [glob], repeat=5)
    assert r1 == r2 == r_rp, "the compacted archive must read the same"
    point_comp, p_comp, _ = timed(con, POINT.format("prom_metrics(data_dir := ?, date := '2024-06-01', proxy := 'api-proxy-7')"),
                               [str(year)], repeat=50)
    point_comp_rp, p_rp, _ = timed(con, POINT.format("read_parquet(?) WHERE date = DATE '2024-06-01' AND api_proxy = 'api-proxy-7'"),
                                [glob], repeat=20)
    assert p_comp == p_daily == p_rp and p_comp[0][0] == 6, (p_comp, p_daily, p_rp)
    out.update({
        "files_before": before_files, "files_after": after_files, "bytes_after": year_bytes,
        "month_compaction_s": round(month_s, 2), "month_peak_rss_mib": round(month_rss, 1),
        "year_compaction_s": round(year_s, 2), "year_peak_rss_mib": round(year_rss, 1),
        "full_read_parquet_daily_s": round(rp_daily, 3), "full_prom_metrics_daily_s": round(pm_daily, 3),
        "full_prom_metrics_compacted_s": round(pm_comp, 4), "full_read_parquet_compacted_s": round(rp_comp, 4),
        "full_prom_metrics_compacted_cpu_s": round(pm_comp_cpu, 4), "full_read_parquet_compacted_cpu_s": round(rp_comp_cpu, 4),
        "ratio_vs_read_parquet_daily": round(rp_daily / pm_comp, 1), "ratio_vs_read_parquet_compacted": round(rp_comp / pm_comp, 2),
        "point_prom_metrics_daily_ms": round(point_daily * 1000, 2), "point_prom_metrics_compacted_ms": round(point_comp * 1000, 2),
        "point_read_parquet_compacted_ms": round(point_comp_rp * 1000, 2),
    })
    log(f"  full scan + GROUP BY: prom_metrics on the compacted archive {pm_comp * 1000:.1f} ms; "
        f"read_parquet over the daily files {rp_daily:.2f} s ({rp_daily / pm_comp:.0f}x), "
        f"over the month files {rp_comp * 1000:.1f} ms ({rp_comp / pm_comp:.2f}x)")
    log(f"  one day, one proxy in a compacted month: prom_metrics {point_comp * 1000:.2f} ms "
        f"(daily files: {point_daily * 1000:.2f} ms), read_parquet over the month files + WHERE {point_comp_rp * 1000:.2f} ms")
    (r.RESULTS if results is None else results)["compaction"] = out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="keep data here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    r = common
    RESULTS = r.RESULTS
    for f in (r.COLLECTOR, r.EXTENSION, r.GEN):
        if not f.exists():
            raise SystemExit(f"{f} is missing: run `make bench` (it builds everything first)")
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="promduck-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    RESULTS["machine"] = r.machine()
    try:
        bench_compaction(tmp)
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(RESULTS, indent=2))
    r.log("\n" + json.dumps(RESULTS))


if __name__ == "__main__":
    main()
