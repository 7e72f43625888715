"""`promduck-collector --inventory`: what the archive holds, from the shell (issue 32).

A generator writes random archives mixing every layout promduck reads — the Go tool's
daily files, its Hive files (1–2 per partition), partitions written empty, and a
compacted month — and leaves random holes. The expected days, proxies, rows per
metric, bytes, compacted months and holes are computed from what the generator wrote
(the same precedence every reader uses: month, else daily, else Hive), never from
promduck's output. The same archive copied into a bucket (moto) gives the same
inventory (without Hive files: buckets are read in promduck's layout only).
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from helpers import now_env, run_collector, utc, write_config
from s3fixture import child_env, write_s3_config
from test_one_source import gen_rows, write_go_daily, write_hive

PROXIES = ["p1", "p2", "p3"]
FEB = [date(2024, 2, 27), date(2024, 2, 28), date(2024, 2, 29)]
MARCH = [date(2024, 3, d) for d in range(1, 6)]
# The product's "now": 2024-03-07 is the last complete day, so 2024-03-06 and -07 are holes too.
NOW = utc(2024, 3, 8, 6, 0)
SEEDS = 12


def write_empty_daily(path: Path, d: date) -> None:
    """A partition written empty (Prometheus had no data): the Go tool's schema, no rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kv = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
    pq.write_table(pa.table({
        "timestamp": pa.array([], pa.int64()), "metric_name": pa.array([], pa.string()),
        "value": pa.array([], pa.float64()), "api_proxy": pa.array([], pa.string()),
        "date": pa.array([], pa.string()), "labels": pa.array([], kv),
    }), path)


def generate(rnd: random.Random, data: Path, hive: bool = True):
    """Writes an archive; returns {(day, proxy): (rows, bytes or None, source)}."""
    want = {}
    for d in FEB + MARCH:
        for p in PROXIES:
            kind = rnd.choice(["daily", "hive", "both", "empty", None] if hive else ["daily", "empty", None])
            if d in FEB and kind is None:
                kind = "daily"  # the month compacted below keeps only what it took in
            rows = gen_rows(rnd, d)
            if kind in ("hive", "both"):
                paths = write_hive(data, d, p, rows if kind == "hive" else gen_rows(rnd, d), rnd.choice([1, 2]))
                if kind == "hive":
                    want[(d, p)] = (rows, sum(x.stat().st_size for x in paths), "hive")
            if kind in ("daily", "both"):
                path = data / d.isoformat() / f"{p}.parquet"
                write_go_daily(path, d, p, rows)
                want[(d, p)] = (rows, path.stat().st_size, "daily")
            if kind == "empty":
                path = data / d.isoformat() / f"{p}.parquet"
                write_empty_daily(path, d)
                want[(d, p)] = ([], path.stat().st_size, "daily")
    return want


def expected(want: dict, compacted: bool) -> dict:
    """The report's fields, from the generator's partitions."""
    if compacted:  # February's partitions now live in the month file: no bytes of their own, and
        # one written empty has no row there, so it is gone (README: compacted months hold rows)
        want = {k: (r, None, "month") if k[0].month == 2 else (r, b, s) for k, (r, b, s) in want.items()
                if k[0].month != 2 or r}
    metrics = Counter(m for rows, _, _ in want.values() for m, _, _, _ in rows)
    days = sorted({d for d, _ in want})
    last = NOW.date() - timedelta(days=1)
    holes = []
    d = days[0]
    while d <= last:
        if not (compacted and d.month == 2):
            missing = [p for p in PROXIES if (d, p) not in want]
            if missing:
                holes.append({"date": d.isoformat(), "proxies": missing})
        d += timedelta(days=1)
    by_partition = []
    for (d, p) in sorted(want):
        rows, b, source = want[(d, p)]
        by_partition.append({"date": d.isoformat(), "api_proxy": p, "rows": len(rows), "bytes": b,
                             "source": source, "metrics": dict(Counter(m for m, _, _, _ in rows))})
    return {
        "days": len(days), "first_day": days[0].isoformat(), "last_day": days[-1].isoformat(),
        "proxies": sorted({p for _, p in want}), "metrics": dict(sorted(metrics.items())),
        "partitions": len(want), "rows": sum(len(r) for r, _, _ in want.values()),
        "compacted_months": ["2024-02"] if compacted else [], "holes": holes,
        "by_partition": by_partition,
    }


def inventory(cfg: Path, *args, env=None) -> dict:
    r = run_collector("--config", cfg, "--inventory", "json", *args, env=env or now_env(NOW))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("location", "files", "bytes")}


def test_inventory_matches_what_the_generator_wrote_in_every_layout(tmp_path):
    for seed in range(SEEDS):
        rnd = random.Random(seed)
        root = tmp_path / f"s{seed}"
        data = root / "data"
        data.mkdir(parents=True)
        want = generate(rnd, data)
        cfg = write_config(root / "c.yaml", "http://127.0.0.1:9", PROXIES, output_dir=data,
                           storage_extra={"compaction": {"removeDailyAfter": "0s"}})
        got = inventory(cfg)
        assert comparable(got) == expected(want, compacted=False), f"seed {seed}"
        # Bytes: every file the generator wrote that a reader takes (Hive files a daily file shadows are not).
        assert got["bytes"] == sum(b for _, b, _ in want.values()), f"seed {seed}"
        # The table form says the same totals.
        table = run_collector("--config", cfg, "--inventory", env=now_env(NOW))
        assert table.returncode == 0, table.stderr
        assert f"partitions: {len(want)}   rows: {got['rows']}" in table.stdout, table.stdout
        # A compacted February: its partitions are read from the month file, rows unchanged.
        r = run_collector("--config", cfg, "--compact", "--month", "2024-02", env=now_env(NOW))
        assert r.returncode == 0, r.stderr
        got = inventory(cfg)
        assert comparable(got) == expected(want, compacted=True), f"seed {seed}"
        assert "2024-02" in run_collector("--config", cfg, "--inventory", env=now_env(NOW)).stdout
        # --from/--to bound the days read (and the holes listed).
        got = inventory(cfg, "--from", "2024-03-02", "--to", "2024-03-03")
        sub = {k: v for k, v in want.items() if date(2024, 3, 2) <= k[0] <= date(2024, 3, 3)}
        assert got["rows"] == sum(len(r) for r, _, _ in sub.values()), f"seed {seed}"
        assert got["holes"] == [{"date": d.isoformat(), "proxies": [p for p in PROXIES if (d, p) not in want]}
                                for d in (date(2024, 3, 2), date(2024, 3, 3))
                                if any((d, p) not in want for p in PROXIES)], f"seed {seed}"


def test_inventory_of_a_bucket_equals_the_same_archive_on_disk(tmp_path, moto_s3):
    rnd = random.Random(99)
    data = tmp_path / "data"
    data.mkdir()
    # Buckets are read in promduck's layout only (README, "Object storage"): no Hive files.
    want = generate(rnd, data, hive=False)
    bucket = moto_s3.create_bucket()
    for f in sorted(data.rglob("*.parquet")):
        moto_s3.put(bucket, "archive/" + f.relative_to(data).as_posix(), f.read_bytes())
    disk_cfg = write_config(tmp_path / "disk.yaml", "http://127.0.0.1:9", PROXIES, output_dir=data)
    s3_cfg = write_s3_config(tmp_path / "s3.yaml", "http://127.0.0.1:9", PROXIES, moto_s3, bucket, "archive")
    on_disk = inventory(disk_cfg)
    in_bucket = inventory(s3_cfg, env={**child_env(moto_s3), **now_env(NOW)})
    assert comparable(in_bucket) == comparable(on_disk) == expected(want, compacted=False)
    assert in_bucket["bytes"] == on_disk["bytes"] == sum(b for _, b, _ in want.values())
    assert in_bucket["location"] == f"s3://{bucket}/archive"


def test_inventory_of_an_archive_not_created_yet_lists_nothing_but_holes(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9", PROXIES, output_dir=tmp_path / "none")
    got = inventory(cfg, "--from", "2024-03-06", "--to", "2024-03-07")
    assert got["partitions"] == 0 and got["rows"] == 0 and got["files"] == 0
    assert got["holes"] == [{"date": "2024-03-06", "proxies": PROXIES}, {"date": "2024-03-07", "proxies": PROXIES}]
    assert not (tmp_path / "none").exists()  # looking created nothing
