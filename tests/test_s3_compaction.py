"""Compaction of an archive in an S3 bucket (`--compact`, `prom_compact`, the collector's
re-compaction), against moto on 127.0.0.1 behind the recording fault proxy.

- The month object is the very file compaction writes on disk (byte for byte), sent as a
  multipart upload (parts of PROMDUCK_S3_PART_BYTES; this module's moto accepts parts of
  1 KiB so that small months take several) or one PUT when it fits in one part.
- Totals exact before and after, through prom_metrics and by reading the bucket's objects
  directly; prom_partitions expands month objects; nothing else left in the bucket: no
  daily object, no lock object, no unfinished multipart upload.
- Faults (503 SlowDown, 500, resets) on parts, completion, listing and deletes: retried, or
  the month fails cleanly (nothing half-visible, the upload aborted) and a re-run completes.
- The lock object: a live holder is waited for, a dead or expired one taken over, two
  compactors at once take turns.
- SIGKILL at seeded random moments of a compaction, three in a row per archive, while
  prom_metrics and prom_partitions readers loop: every read exact, the run after the kills
  completes, nothing left. PROMDUCK_S3_COMPACT_TRIALS archives (default 10: 30 kills in
  about a minute; 70 for 210 kills) and PROMDUCK_SEED.

Figures go to tests/output/s3-compaction-crash.json (RELIABILITY.md).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import (COLLECTOR, EXTENSION, REPO_ROOT, day_end_ms, now_env, product_time, utc, wait_until,
                     write_config)
from s3fixture import MotoServer, child_env, s3_storage_config
from test_compaction import ENVS, PROXIES, SCHEMA, TOTALS_RP, arrow_rows, encode_proxy, make_archive

TRIALS = int(os.environ.get("PROMDUCK_S3_COMPACT_TRIALS", "10"))
SEED = int(os.environ.get("PROMDUCK_SEED", "20241125"))
OUTPUT = REPO_ROOT / "tests" / "output"
#: The product's part size in this module (moto here accepts parts down to 1 KiB).
PART = 1024
P = "archive/prod"


class SmallPartsMoto(MotoServer):
    """moto accepting multipart parts of 1 KiB (S3's own minimum is 5 MiB)."""

    def _env(self) -> dict:
        env = super()._env()
        env["S3_UPLOAD_PART_MIN_SIZE"] = "1024"
        return env


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with SmallPartsMoto(tmp_path_factory.mktemp("moto-small-parts")) as server:
        yield server


@pytest.fixture
def bucket(s3):
    s3.reset()
    name = s3.create_bucket()
    yield name
    s3.reset()
    try:
        s3.delete_bucket(name)
    except Exception:  # noqa: BLE001 - left unusable on purpose by a test
        pass


def connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    return con


def s3_params(server) -> str:
    return (f"s3_endpoint := '{server.endpoint.removeprefix('http://')}', s3_use_ssl := false, "
            f"s3_url_style := 'path', s3_region := '{server.region}', "
            f"s3_access_key_id := '{server.access_key}', s3_secret_access_key := '{server.secret_key}'")


def pm_totals(con, server, url):
    """count, sum and a row hash through prom_metrics (the same hash as test_compaction's)."""
    return con.execute("SELECT count(*), sum(value), sum(hash(api_proxy, date, metric_name, epoch_ms(timestamp), "
                       f"value) % 1000000007) FROM prom_metrics(data_dir := '{url}', {s3_params(server)})").fetchone()


def pm_rows(con, server, url):
    return con.execute(f"SELECT * EXCLUDE (timestamp), epoch_ms(timestamp) FROM prom_metrics(data_dir := '{url}', "
                       f"{s3_params(server)}) ORDER BY ALL").fetchall()


def local_totals(data: Path):
    return duckdb.connect().execute(TOTALS_RP.format("?"), [str(data / "*" / "*.parquet")]).fetchone()


def bucket_totals(server, bucket, prefix):
    """The same totals from every object under the prefix, read directly (pyarrow on the bytes)."""
    con = duckdb.connect()
    count, total, h = 0, 0.0, 0
    for key in server.list_keys(bucket, prefix + "/"):
        if not key.endswith(".parquet"):
            continue
        t = pq.read_table(io.BytesIO(server.get(bucket, key)))  # noqa: F841 - DuckDB reads it by name
        c, s, x = con.execute("SELECT count(*), sum(value), sum(hash(api_proxy, date, metric_name, timestamp, "
                              "value) % 1000000007) FROM t").fetchone()
        count, total, h = count + c, total + (s or 0.0), h + (x or 0)
    return (count, total, h)


def upload(server, bucket, data: Path, prefix: str) -> list[str]:
    """Puts every daily file of `data` under `prefix` (8 at a time); returns the keys."""
    files = sorted(data.rglob("*.parquet"))
    client = server.direct

    def put(p):
        key = f"{prefix}/{p.relative_to(data)}"
        client.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())
        return key

    with ThreadPoolExecutor(8) as ex:
        return sorted(ex.map(put, files))


def s3_config(path: Path, server, bucket, prefix, **compaction) -> Path:
    storage = s3_storage_config(server, bucket, prefix)
    storage["compaction"] = {"removeDailyAfter": "0s", **compaction}
    return write_config(path, "http://127.0.0.1:1", ["api-proxy-1"], storage_extra=storage)


def collector_env(**extra) -> dict:
    env = child_env()
    env["PROMDUCK_S3_PART_BYTES"] = str(PART)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def compact(cfg, *args, timeout=180, **env):
    return subprocess.run([str(COLLECTOR), "--config", str(cfg), "--compact", *map(str, args)], env=collector_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def month_keys(prefix, months):
    return [f"{prefix}/{m}/{m}.parquet" for m in months]


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """January and February 2024 and three days of March, 6 proxies (378 daily files)."""
    root = tmp_path_factory.mktemp("s3-seed")
    data = root / "data"
    rows = make_archive(data, date(2024, 1, 1), 31 + 29 + 3)
    totals = local_totals(data)
    assert totals[0] == rows
    return data, totals


def test_compact_in_a_bucket_exact_clean_and_the_same_file_as_on_disk(s3, bucket, seed, tmp_path):
    data, expected = seed
    keys = upload(s3, bucket, data, P)
    url = f"s3://{bucket}/{P}"
    con = connect()
    assert pm_totals(con, s3, url) == expected
    rows_before = pm_rows(con, s3, url)
    parts_before = con.execute(f"SELECT date, api_proxy FROM prom_partitions(data_dir := '{url}', {s3_params(s3)}) "
                               "ORDER BY ALL").fetchall()
    assert len(parts_before) == len(keys)
    cfg = s3_config(tmp_path / "config.yaml", s3, bucket, P)
    s3.reset_requests()
    r = compact(cfg, "--month", "2024-01")
    assert r.returncode == 0, r.stderr
    assert 'month="2024-01" status="compacted" daily_files=186 removed=186 partitions=186 rows=2232' in r.stderr, r.stderr
    c = s3.counts(bucket=bucket)
    # A multipart upload (the month is larger than a part), completed once; no object but the
    # month's and the lock written.
    # The parts are the month object, in order: each but the last at least PART bytes.
    assert c["CREATE_MULTIPART"] == 1 and c["COMPLETE_MULTIPART"] == 1, c
    parts = sorted((int(q.params["partNumber"]), len(q.raw.body)) for q in s3.requests("UPLOAD_PART", bucket=bucket))
    assert [n for n, _ in parts] == list(range(1, len(parts) + 1)) and len(parts) == c["UPLOAD_PART"], parts
    assert sum(size for _, size in parts) == len(s3.get(bucket, f"{P}/2024-01/2024-01.parquet")), parts
    assert all(size >= PART for _, size in parts[:-1]) and parts[-1][1] > 0, parts
    assert {q.key for q in s3.requests("PUT", bucket=bucket)} == {f"{P}/.promduck-compact.lock"}, s3.summary()
    assert c["DELETE"] == 186 + 1, c  # the daily objects, then the lock
    # Every closed month that still has daily objects: February and March.
    r = compact(cfg)
    assert r.returncode == 0, r.stderr
    assert 'month="2024-02" status="compacted"' in r.stderr and 'month="2024-03" status="compacted"' in r.stderr
    assert s3.list_keys(bucket) == month_keys(P, ["2024-01", "2024-02", "2024-03"])
    assert s3.stray(bucket) == []
    s3.reset_requests()
    assert pm_totals(con, s3, url) == expected
    # A scan of the compacted archive: one listing of the top level, then one ranged GET (the
    # last MiB) per month object, each smaller than that, so it arrives whole: no HEAD, no
    # second GET.
    assert dict(s3.counts(bucket=bucket)) == {"LIST": 1, "GET_RANGE": 3}, s3.summary()
    assert sorted(q.key for q in s3.requests("GET_RANGE", bucket=bucket)) == month_keys(P, ["2024-01", "2024-02", "2024-03"])
    assert bucket_totals(s3, bucket, P) == expected
    assert pm_rows(con, s3, url) == rows_before
    parts = con.execute(f"SELECT date, api_proxy, path, bytes FROM prom_partitions(data_dir := '{url}', "
                        f"{s3_params(s3)}) ORDER BY date, api_proxy").fetchall()
    assert [(d, p) for d, p, _, _ in parts] == parts_before
    assert all(path == f"{url}/{d:%Y-%m}/{d:%Y-%m}.parquet" and size is None for d, _, path, size in parts)
    # The same bytes as compaction on disk of the same daily files (same writer, sort, row
    # groups, statistics, page index, codec).
    local = tmp_path / "local"
    shutil.copytree(data, local / "data")
    lcfg = write_config(local / "config.yaml", "http://127.0.0.1:1", ["x"], output_dir=local / "data",
                        storage_extra={"compaction": {"removeDailyAfter": "0s"}})
    r = subprocess.run([str(COLLECTOR), "--config", str(lcfg), "--compact"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for m in ("2024-01", "2024-02", "2024-03"):
        assert s3.get(bucket, f"{P}/{m}/{m}.parquet") == (local / "data" / m / f"{m}.parquet").read_bytes(), m
    md = pq.ParquetFile(io.BytesIO(s3.get(bucket, f"{P}/2024-02/2024-02.parquet"))).metadata
    assert md.metadata[b"promduck_month"] == b"2024-02"
    rg = md.row_group(0)
    assert all(rg.column(i).has_column_index and rg.column(i).compression == "ZSTD" for i in range(rg.num_columns))
    # Nothing left to do; the current month is refused.
    r = compact(cfg)
    assert r.returncode == 0 and "nothing to compact" in r.stderr, r.stderr
    r = compact(cfg, "--month", "2024-03", **now_env(utc(2024, 3, 31, 23, 59, 59)))
    assert r.returncode == 2 and "has not closed yet" in r.stderr, r.stderr


def test_prom_compact_from_sql_one_put_when_the_month_fits_in_a_part(s3, bucket, tmp_path):
    data = tmp_path / "data"
    make_archive(data, date(2024, 1, 30), 3, proxies=PROXIES[:3])  # Jan 30, 31 and Feb 1
    expected = local_totals(data)
    upload(s3, bucket, data, P)
    cfg = s3_config(tmp_path / "config.yaml", s3, bucket, P)
    con = connect()
    s3.reset_requests()
    got = con.execute("SELECT month, status, path, daily_files, removed, rows, error FROM prom_compact(config := ?, "
                      "month := '2024-01')", [str(cfg)]).fetchall()
    assert got == [("2024-01", "compacted", f"s3://{bucket}/{P}/2024-01/2024-01.parquet", 6, 6, 6 * 12, None)]
    c = s3.counts(bucket=bucket)
    # The extension's default part size (8 MiB): a small month is one PUT, no multipart upload.
    assert c["CREATE_MULTIPART"] == 0 and c["UPLOAD_PART"] == 0, c
    assert s3.list_keys(bucket) == sorted(month_keys(P, ["2024-01"]) +
                                          [f"{P}/2024-02-01/{encode_proxy(p)}.parquet" for p in PROXIES[:3]])
    assert s3.stray(bucket) == []
    assert pm_totals(con, s3, f"s3://{bucket}/{P}") == expected
    assert bucket_totals(s3, bucket, P) == expected


def small_archive(root: Path, proxies=PROXIES[:4], latency_points=400):
    """Jan 25 .. Feb 7 2024 (two months of 7 days), months of a few dozen KiB: several parts each."""
    data = root / "data"
    make_archive(data, date(2024, 1, 25), 14, proxies=proxies, latency_points=latency_points)
    return data, local_totals(data)


def test_transient_faults_are_retried(s3, bucket, tmp_path):
    data, expected = small_archive(tmp_path)
    upload(s3, bucket, data, P)
    cfg = s3_config(tmp_path / "config.yaml", s3, bucket, P)
    rules = {
        "lock put 503": s3.add_fault("s3_error", kind="PUT", key_contains=".promduck-compact.lock", times=1),
        "list 503": s3.add_fault("s3_error", kind="LIST", times=1),
        "get reset": s3.add_fault("reset", kind="GET", key_contains="2024-01-2", times=1),
        "part 503": s3.add_fault("s3_error", kind="UPLOAD_PART", times=2),
        "part reset": s3.add_fault("reset", kind="UPLOAD_PART", times=1),
        "complete 503": s3.add_fault("s3_error", kind="COMPLETE_MULTIPART", times=1),
        "uploads list 503": s3.add_fault("s3_error", kind="LIST_UPLOADS", times=1),
        "delete 503": s3.add_fault("s3_error", kind="DELETE", key_contains="2024-02-0", times=1),
        "delete reset": s3.add_fault("reset", kind="DELETE", key_contains="2024-01-2", times=1),
    }
    r = compact(cfg)
    assert r.returncode == 0, r.stderr
    assert {k: v.fired for k, v in rules.items()} == {k: (2 if k == "part 503" else 1) for k in rules}
    assert s3.list_keys(bucket) == month_keys(P, ["2024-01", "2024-02"])
    assert s3.stray(bucket) == []
    assert pm_totals(connect(), s3, f"s3://{bucket}/{P}") == expected
    assert bucket_totals(s3, bucket, P) == expected


def test_a_failing_upload_or_delete_fails_cleanly_and_a_rerun_completes(s3, bucket, tmp_path):
    data, expected = small_archive(tmp_path)
    keys = upload(s3, bucket, data, P)
    url = f"s3://{bucket}/{P}"
    cfg = s3_config(tmp_path / "config.yaml", s3, bucket, P)
    con = connect()
    # Every part refused (500, retried until object_store gives up): January fails, nothing appears,
    # the upload is aborted, the daily objects are untouched, the lock released.
    s3.add_fault("s3_error", status=500, kind="UPLOAD_PART", times=None)
    r = compact(cfg, "--month", "2024-01")
    assert r.returncode == 1, r.stderr
    assert "compaction failed" in r.stderr, r.stderr
    assert s3.list_keys(bucket) == keys
    assert s3.multipart_uploads(bucket) == []
    assert s3.counts(bucket=bucket)["ABORT_MULTIPART"] == 1  # the one upload January started
    assert pm_totals(con, s3, url) == expected
    # Deletes of February's daily objects refused: the month object is complete and used,
    # the daily objects stay for the next run; reads exact meanwhile.
    s3.reset()
    s3.add_fault("s3_error", kind="DELETE", key_contains="2024-02-0", times=None)
    r = compact(cfg, "--month", "2024-02")
    assert r.returncode == 1, r.stderr
    assert "removing its daily files failed" in r.stderr, r.stderr
    assert f"{P}/2024-02/2024-02.parquet" in s3.list_keys(bucket)
    assert f"{P}/2024-02-01/api-proxy-1.parquet" in s3.list_keys(bucket)
    assert s3.stray(bucket) == []
    assert pm_totals(con, s3, url) == expected
    s3.reset()
    r = compact(cfg)
    assert r.returncode == 0, r.stderr
    assert s3.list_keys(bucket) == month_keys(P, ["2024-01", "2024-02"])
    assert s3.stray(bucket) == []
    assert pm_totals(con, s3, url) == expected
    assert bucket_totals(s3, bucket, P) == expected


def proc_start(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 1:].split()[19])


def lock_body(pid: int, start: int, *, host=None, expires_in=600):
    now = int(product_time())  # the collector compares the expiry with its own clock
    return json.dumps({"host": host or Path("/proc/sys/kernel/hostname").read_text().strip(),
                       "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                       "pid": pid, "start": start, "token": "test", "acquired": now, "expires": now + expires_in})


def test_the_lock_object_live_holder_waited_for_dead_or_expired_taken_over(s3, bucket, tmp_path):
    data, expected = small_archive(tmp_path, proxies=PROXIES[:2], latency_points=2)
    keys = upload(s3, bucket, data, P)
    cfg = s3_config(tmp_path / "config.yaml", s3, bucket, P)
    lock = f"{P}/.promduck-compact.lock"
    # Held by a live process (this one): the compactor waits, touching nothing.
    s3.put(bucket, lock, lock_body(os.getpid(), proc_start(os.getpid())))
    err_file = tmp_path / "compact.err"
    with open(err_file, "w") as ef:
        p = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--compact"], env=collector_env(),
                             stderr=ef, text=True)
    try:
        wait_until(lambda: "another compaction of this archive is running" in err_file.read_text(),
                   "the compactor waiting for the lock", proc=p)
        assert s3.list_keys(bucket) == sorted(keys + [lock])
        # Its holder gone (a pid that is not running): the waiting compactor takes it over and completes.
        s3.put(bucket, lock, lock_body(4_000_000, 1))
        assert p.wait(timeout=120) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = err_file.read_text()
    assert err.index("another compaction of this archive is running") < err.index("took over a stale compaction lock"), err
    assert s3.list_keys(bucket) == month_keys(P, ["2024-01", "2024-02"])
    assert s3.stray(bucket) == []
    # Held by a process on another machine: waited for until it expires, then taken over (the
    # month named: compaction takes the lock even when nothing is left to do).
    body = lock_body(1, 1, host="elsewhere", expires_in=2)
    s3.put(bucket, lock, body)
    r = compact(cfg, "--month", "2024-01")
    assert r.returncode == 0, r.stderr
    assert r.stderr.index("waiting for it") < r.stderr.index("took over a stale compaction lock"), r.stderr
    # Not before it expired (a lower bound only: the same machine's clock).
    assert product_time() >= json.loads(body)["expires"]
    assert 'month="2024-01" status="unchanged"' in r.stderr, r.stderr
    assert s3.stray(bucket) == []
    assert pm_totals(connect(), s3, f"s3://{bucket}/{P}") == expected


def compact_taken_over(s3, bucket, cfg, lock, other: str, gate, tmp_path, while_held) -> str:
    """Runs a compaction of January with a 3 s lock lifetime; once ``while_held(proc)`` has
    seen it reach the point the test holds it at (behind ``gate``), another compactor takes
    the lock over (``other`` written in its place). The holder must notice and fail; returns
    its log."""
    err_file = tmp_path / "compact.err"
    with open(err_file, "w") as ef:
        p = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--compact", "--month", "2024-01"],
                             env=collector_env(PROMDUCK_COMPACT_LOCK_TTL=3), stderr=ef, text=True)
    try:
        while_held(p)
        s3.put(bucket, lock, other)
        wait_until(lambda: "the compaction lock was taken over by another compactor" in err_file.read_text(),
                   "the holder noticing the takeover", proc=p)
        gate.set()
        assert p.wait(timeout=120) != 0
    finally:
        gate.set()
        if p.poll() is None:
            p.kill()
            p.wait()
    err = err_file.read_text()
    assert "another compactor took the compaction lock over: not written" in err, err
    return err


def test_the_lock_heartbeat_and_a_holder_whose_lock_was_taken_over_stops(s3, bucket, tmp_path):
    """With a short lock lifetime (PROMDUCK_COMPACT_LOCK_TTL=3: a refresh every second), the
    compactor held at its first daily object: the lock is refreshed (conditional PUTs with If-Match,
    the same token, a later expiry each time) while it works; another compactor then takes it
    over (a new body written in its place): the holder's next refresh finds it, logs it, and
    the month is not made visible (the upload aborted), no daily object deleted, the other
    holder's lock left as it is, and the run fails saying why."""
    data, expected = small_archive(tmp_path, proxies=PROXIES[:2])
    keys = upload(s3, bucket, data, P)
    cfg = s3_config(tmp_path / "config.yaml", s3, bucket, P)
    lock = f"{P}/.promduck-compact.lock"
    gate = threading.Event()
    # The first daily object read is held: the writer needs every one of them before it checks
    # the lock and completes the upload (parts already sent go out in the background, so
    # holding a part would not hold the writer).
    s3.add_fault("gate", kind="GET", key_contains=f"{P}/2024-01-", gate=gate)
    other = lock_body(1, 1, host="elsewhere")

    def while_held(p):
        refreshes = lambda: [q for q in s3.requests("PUT", bucket=bucket, key_contains=lock)  # noqa: E731
                             if "if-match" in q.raw.headers]
        wait_until(lambda: len(refreshes()) >= 3, "three refreshes of the lock", proc=p)
        puts = s3.requests("PUT", bucket=bucket, key_contains=lock)
        # The first PUT creates it (If-None-Match: *), every later one refreshes it.
        assert puts[0].raw.headers.get("if-none-match") == "*", puts[0].raw.headers
        bodies = [json.loads(q.raw.body) for q in puts[:4]]
        assert len({b["token"] for b in bodies}) == 1 and {b["pid"] for b in bodies} == {p.pid}, bodies
        assert [b["expires"] - b["acquired"] for b in bodies] == [3] * 4, bodies
        assert all(a["expires"] <= b["expires"] for a, b in zip(bodies, bodies[1:])), bodies
        assert bodies[-1]["expires"] > bodies[0]["expires"], bodies
        assert [q.action for q in s3.requests("GET", bucket=bucket, key_contains=f"{P}/2024-01-")][:1] == ["gate"]
        assert s3.counts(bucket=bucket)["COMPLETE_MULTIPART"] == 0

    err = compact_taken_over(s3, bucket, cfg, lock, other, gate, tmp_path, while_held)
    assert 'compaction failed; the month reads as before month="2024-01"' in err, err
    # Nothing visible, nothing deleted, the new holder's lock untouched, no upload left.
    assert s3.list_keys(bucket) == sorted(keys + [lock])
    assert s3.get(bucket, lock) == other.encode()
    assert s3.multipart_uploads(bucket) == []
    assert s3.counts(bucket=bucket)["COMPLETE_MULTIPART"] == 0
    assert not [q for q in s3.requests("DELETE", bucket=bucket) if q.key != lock]
    assert pm_totals(connect(), s3, f"s3://{bucket}/{P}") == expected


def test_a_lock_taken_over_while_the_last_parts_upload_never_makes_the_month_visible(s3, bucket, tmp_path):
    """The window between the compactor's last look at its lock and the request that makes
    the month visible: the writer has written everything and found its lock held, then waits
    for the parts still uploading. A takeover there must stop it too: the lock is asked again
    just before CompleteMultipartUpload, so the upload is aborted and nothing appears."""
    data, expected = small_archive(tmp_path, proxies=PROXIES[:2])
    # The same month compacted once in a bucket of its own: how many parts it takes.
    probe = s3.create_bucket()
    upload(s3, probe, data, P)
    r = compact(s3_config(tmp_path / "probe.yaml", s3, probe, P), "--month", "2024-01")
    assert r.returncode == 0, r.stderr
    last = max(int(q.params["partNumber"]) for q in s3.requests("UPLOAD_PART", bucket=probe))
    assert last >= 2, last
    keys = upload(s3, bucket, data, P)
    cfg = s3_config(tmp_path / "config.yaml", s3, bucket, P)
    lock = f"{P}/.promduck-compact.lock"
    gate = threading.Event()
    # The last part is sent when the writer finishes, after its look at the lock: hold it.
    held = s3.add_fault("gate", kind="UPLOAD_PART", bucket=bucket, gate=gate,
                        match=lambda q: q.params.get("partNumber") == str(last))
    err = compact_taken_over(s3, bucket, cfg, lock, lock_body(1, 1, host="elsewhere"), gate, tmp_path,
                             lambda p: wait_until(lambda: held.fired >= 1, "the last part held", proc=p))
    assert 'compaction failed; the month reads as before month="2024-01"' in err, err
    assert s3.counts(bucket=bucket)["COMPLETE_MULTIPART"] == 0
    assert s3.multipart_uploads(bucket) == []
    assert s3.list_keys(bucket) == sorted(keys + [lock])
    assert pm_totals(connect(), s3, f"s3://{bucket}/{P}") == expected

def random_month_file(root: Path, seed: int, days: int, per_day: int) -> tuple[bytes, list]:
    """A month file of January 2024 (its last ``days`` days, 6 proxies, ``per_day`` points a
    day per environment of random floats, which do not compress), compacted on disk by the
    collector; and its rows as the daily files written here hold them (pyarrow)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    data = root / "data"
    step = 86_400_000 // per_day
    for d in range(32 - days, 32):
        day = date(2024, 1, d)
        end = day_end_ms(day)
        for proxy in PROXIES:
            n = per_day * len(ENVS)
            ts = np.tile(end - np.arange(per_day - 1, -1, -1, dtype=np.int64) * step, len(ENVS))
            table = pa.table({"timestamp": ts, "metric_name": ["latency_ms"] * n, "value": rng.random(n),
                              "api_proxy": [proxy] * n, "date": [day] * n,
                              "labels": [[("apiproxy", proxy), ("environment", e)] for e in ENVS for _ in range(per_day)]},
                             schema=SCHEMA)
            path = data / day.isoformat() / f"{encode_proxy(proxy)}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path, compression="zstd")
    rows = sorted_rows(pa.concat_tables(pq.read_table(p) for p in sorted(data.rglob("*.parquet"))))
    cfg = write_config(root / "config.yaml", "http://127.0.0.1:1", ["api-proxy-1"], output_dir=data,
                       storage_extra={"compaction": {"removeDailyAfter": "0s"}})
    r = subprocess.run([str(COLLECTOR), "--config", str(cfg), "--compact", "--month", "2024-01"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    month = data / "2024-01" / "2024-01.parquet"
    assert sorted_rows(pq.read_table(month)).equals(rows)
    return month.read_bytes(), rows


def sorted_rows(t: pa.Table) -> pa.Table:
    """``t``'s rows as (ts_ms, date, api_proxy, metric_name, apiproxy and environment labels,
    value), sorted: a table from pyarrow and one from DuckDB compare with ``equals``."""
    import pyarrow.compute as pc

    def label(name):
        return pc.list_element(pc.map_lookup(t.column("labels"), pa.scalar(name), "all"), 0)

    ts = t.column("timestamp")
    if pa.types.is_timestamp(ts.type):
        ts = ts.cast(pa.timestamp("ms", tz=ts.type.tz))
    out = pa.table({"ts": ts.cast(pa.int64()), "date": t.column("date"),
                    "api_proxy": t.column("api_proxy").cast(pa.string()),
                    "metric_name": t.column("metric_name").cast(pa.string()),
                    "apiproxy": label("apiproxy"), "environment": label("environment"),
                    "n_labels": pa.chunked_array([pc.pairwise_diff(c.offsets)[1:] for c in t.column("labels").chunks],
                                                 pa.int32()),
                    "value": t.column("value")})
    out = out.cast(pa.schema([f.with_nullable(True) for f in out.schema]))
    return out.sort_by([(c, "ascending") for c in ("api_proxy", "environment", "ts", "metric_name")]).combine_chunks()


#: The reader's sizes (core/src/storage/object.rs): a month object is looked up with a GET of
#: its last MiB; one up to 8 MiB is then fetched whole with one GET, a larger one by range.
PROBE_BYTES, WHOLE_MAX = 1 << 20, 8 << 20


@pytest.mark.parametrize("size", ["fetched whole", "read by range"])
def test_a_month_object_replaced_mid_read_is_never_a_mix_of_versions(s3, bucket, tmp_path, size):
    """A compaction replaces a month object while prom_metrics reads it: the proxy swaps the
    object just before forwarding the first request after the look-up (the suffix GET that
    gives the footer and the version). Fetched whole (1 to 8 MiB), that one GET is the new
    version: the answer is the new file's rows exactly. Read by range (over 8 MiB), the ranges
    ask for the version looked up (If-Match on its ETag): the server answers 412 and the query
    fails, naming the object, returning nothing. Read again, the answer is the new file's rows
    exactly. Never a mix of the two files."""
    days, per_day = (7, 1440) if size == "fetched whole" else (31, 2880)
    old, old_rows = random_month_file(tmp_path / "old", 1, days, per_day)
    new, new_rows = random_month_file(tmp_path / "new", 2, days, per_day)
    if size == "fetched whole":
        assert PROBE_BYTES < len(old) <= WHOLE_MAX and PROBE_BYTES < len(new) <= WHOLE_MAX, (len(old), len(new))
    else:
        assert len(old) > WHOLE_MAX and len(new) > WHOLE_MAX, (len(old), len(new))
    assert not old_rows.equals(new_rows) and old_rows.num_rows == new_rows.num_rows
    key = f"{P}/2024-01/2024-01.parquet"
    s3.put(bucket, key, old)
    url = f"s3://{bucket}/{P}"
    query = f"SELECT * FROM prom_metrics(data_dir := '{url}', {s3_params(s3)})"

    def rows(con):
        return sorted_rows(con.sql(query).to_arrow_table())

    assert rows(connect()).equals(old_rows)
    s3.reset_requests()
    swapped = threading.Event()
    opened = threading.Event()
    opened.set()

    def swap(req):
        s3.put(bucket, key, new)
        swapped.set()

    s3.add_fault("gate", kind=("GET", "GET_RANGE"), key_contains=key, gate=opened, before=swap,
                 match=lambda r: not (r.range or "").startswith("bytes=-"))
    reads = lambda: [(q.kind, q.range, q.status) for q in s3.requests(("GET", "GET_RANGE"), key_contains=key)]  # noqa: E731
    if size == "fetched whole":
        got = rows(connect())
        assert swapped.is_set()
        # The look-up (the suffix GET; a run was seen to send it twice), then the one GET, swapped.
        *lookups, whole = reads()
        assert lookups and set(lookups) == {("GET_RANGE", f"bytes=-{PROBE_BYTES}", 206)}, reads()
        assert whole == ("GET", None, 200), reads()
        assert got.equals(new_rows)
    else:
        with pytest.raises(duckdb.Error) as e:
            connect().execute(query).fetchall()
        assert swapped.is_set()
        msg = str(e.value)
        assert key in msg and ("412" in msg or "precondition" in msg.lower()), msg
        seen = reads()
        assert seen[0] == ("GET_RANGE", f"bytes=-{PROBE_BYTES}", 206), seen
        assert [q for q in s3.requests(("GET", "GET_RANGE"), key_contains=key)[1:]
                if "if-match" not in q.raw.headers] == [], "every range asks for the version looked up"
        assert 412 in [s for _, _, s in seen[1:]] and 200 not in [s for _, _, s in seen[1:]], seen
    assert s3.get(bucket, key) == new
    assert rows(connect()).equals(new_rows)


def test_two_compactors_at_once_take_turns(s3, bucket, tmp_path):
    data, expected = small_archive(tmp_path)
    upload(s3, bucket, data, P)
    cfg = s3_config(tmp_path / "config.yaml", s3, bucket, P, removeDailyAfter="1s")
    procs = [subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--compact"], env=collector_env(),
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("waiting for it" in o for o in outs) == 1, outs
    assert s3.list_keys(bucket) == month_keys(P, ["2024-01", "2024-02"])
    assert s3.stray(bucket) == []
    assert pm_totals(connect(), s3, f"s3://{bucket}/{P}") == expected
    assert bucket_totals(s3, bucket, P) == expected


def test_recollecting_a_compacted_day_in_a_bucket_new_values_win(prometheus, history, moto_s3, s3_bucket, tmp_path):
    """The collector writes the day's objects again and compacts the month again in the same run,
    as on disk (a real Prometheus, the session's moto with S3's own 5 MiB part minimum)."""
    from helpers import DEFAULT_METRICS, REQUEST_Q

    proxies = history.proxies

    def cfg(name, metrics=None):
        storage = s3_storage_config(moto_s3, s3_bucket, P)
        storage["compaction"] = {"removeDailyAfter": "0s"}
        return write_config(tmp_path / name, prometheus.url, proxies, metrics=metrics or DEFAULT_METRICS,
                            storage_extra=storage)

    env = child_env()
    first, last = history.days_list[0], history.days_list[-1]
    c1 = cfg("c1.yaml")
    r = subprocess.run([str(COLLECTOR), "--config", str(c1), "--from", str(first), "--to", str(last)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(COLLECTOR), "--config", str(c1), "--compact", "--month", "2024-03"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert moto_s3.list_keys(s3_bucket) == month_keys(P, ["2024-03"])
    url = f"s3://{s3_bucket}/{P}"
    con = connect()
    q = (f"SELECT date, api_proxy, metric_name, labels['environment'], value FROM prom_metrics(data_dir := '{url}', "
         f"{s3_params(moto_s3)}) ORDER BY ALL")
    old = {row[:4]: row[4] for row in con.execute(q).fetchall()}
    assert len(old) == len(history.days_list) * len(proxies) * 2 * 2
    day = history.days_list[1]
    doubled = [{"name": "request_count", "query": f"({REQUEST_Q}) * 2", "labels": ["apiproxy", "environment"]}]
    c2 = cfg("c2.yaml", doubled)
    r = subprocess.run([str(COLLECTOR), "--config", str(c2), "--date", str(day)], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert 'month="2024-03" status="compacted"' in r.stderr, r.stderr
    assert moto_s3.list_keys(s3_bucket) == month_keys(P, ["2024-03"]), "the day's objects were taken in and removed"
    assert moto_s3.stray(s3_bucket) == []
    new = {row[:4]: row[4] for row in con.execute(q).fetchall()}
    assert new.keys() == old.keys()
    for k, v in new.items():
        assert v == (old[k] * 2 if (k[0] == day and k[2] == "request_count") else old[k]), k
    # --replace: the day becomes exactly what Prometheus answers now (request_count only).
    r = subprocess.run([str(COLLECTOR), "--config", str(c2), "--date", str(day), "--replace"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = con.execute(q).fetchall()
    assert {(d, m) for d, _, m, _, _ in rows if d == day} == {(day, "request_count")}
    assert len(rows) == len(old) - len(proxies) * 2
    assert moto_s3.stray(s3_bucket) == []


def test_signed_requests_are_accepted_by_a_server_that_checks_signatures(s3s_fs, tmp_path):
    """s3s-fs checks every SigV4 signature: compaction's own signed requests (the DELETEs with
    If-Match, the lock's) pass; it has no ListMultipartUploads (501), which is warned about, not a
    failure. A wrong secret fails cleanly and is never shown."""
    bucket = s3s_fs.create_bucket()
    data = tmp_path / "data"
    make_archive(data, date(2024, 1, 30), 3, proxies=["a", "b"])  # plain names (s3s-fs decodes %XX twice)
    expected = local_totals(data)
    keys = upload(s3s_fs, bucket, data, P)

    def config(name, **kw):
        storage = s3_storage_config(s3s_fs, bucket, P, **kw)
        storage["compaction"] = {"removeDailyAfter": "0s"}
        return write_config(tmp_path / name, "http://127.0.0.1:1", ["a"], storage_extra=storage)

    secret = "WRONGsecretVALUE0123456789abcdefXYZ"
    r = subprocess.run([str(COLLECTOR), "--config", str(config("bad.yaml", secret_key=secret)), "--compact"],
                       env=child_env(), capture_output=True, text=True)
    assert r.returncode != 0, r.stderr
    assert "the server refused the credentials (SignatureDoesNotMatch)" in r.stderr, r.stderr
    assert secret not in r.stdout + r.stderr and secret[:16] not in r.stdout + r.stderr
    assert s3s_fs.list_keys(bucket) == keys
    s3s_fs.reset_requests()
    r = subprocess.run([str(COLLECTOR), "--config", str(config("ok.yaml")), "--compact"], env=child_env(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "cannot list unfinished multipart uploads" in r.stderr, r.stderr
    assert s3s_fs.list_keys(bucket) == month_keys(P, ["2024-01", "2024-02"])
    deletes = s3s_fs.requests("DELETE", bucket=bucket)
    assert len(deletes) == len(keys) + 1 and all(q.status == 204 for q in deletes), s3s_fs.summary()
    assert all(q.raw.headers.get("if-match") for q in deletes), "conditional deletes"
    assert bucket_totals(s3s_fs, bucket, P) == expected


def test_the_daemon_compacts_a_bucket_after_days_when_configured(s3, bucket, tmp_path):
    """storage.compaction.afterDays on an s3:// outputDir: the daemon compacts closed months
    after its collection (a Prometheus that answers nothing: its own partitions are empty)."""
    import http.server
    import socketserver

    data = tmp_path / "data"
    make_archive(data, date(2024, 1, 30), 3, proxies=PROXIES[:2])
    expected = local_totals(data)
    upload(s3, bucket, data, P)

    class Empty(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_POST = do_GET

        def log_message(self, *a):
            pass

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Empty)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        storage = s3_storage_config(s3, bucket, P)
        storage["compaction"] = {"afterDays": 0, "removeDailyAfter": "0s"}
        cfg = write_config(tmp_path / "daemon.yaml", f"http://127.0.0.1:{srv.server_address[1]}", ["api-proxy-1"],
                           storage_extra=storage)
        # "Now" fixed in January 2025: the 2024 months are closed, the current one is not.
        p = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--catch-up-days", "0"],
                             env=collector_env(**now_env(utc(2025, 1, 10, 12))), stderr=subprocess.PIPE, text=True)
        lines = []
        deadline = time.time() + 90
        while time.time() < deadline:
            line = p.stderr.readline()
            lines.append(line)
            if "waiting for the next collection" in line or not line:
                break
        p.send_signal(signal.SIGTERM)
        out = "".join(lines) + p.stderr.read()
        assert p.wait(timeout=30) == 0, out
        assert "compaction finished" in out and 'month="2024-01" status="compacted"' in out, out
        assert 'month="2024-02" status="compacted"' in out, out
    finally:
        srv.shutdown()
    keys = s3.list_keys(bucket)
    assert [k for k in keys if k.startswith(f"{P}/2024-")] == month_keys(P, ["2024-01", "2024-02"]), keys
    assert s3.stray(bucket) == []
    got = connect().execute(f"SELECT count(*), sum(value) FROM prom_metrics(data_dir := 's3://{bucket}/{P}', "
                            f"end_date := '2024-02-29', {s3_params(s3)})").fetchone()
    assert got == expected[:2]


# --- crash safety ---------------------------------------------------------------------------------


class Readers:
    """Threads reading the current trial's prefix in a loop: prom_metrics (the expected totals)
    and prom_partitions (the expected (date, proxy) pairs). Every read must be exact; a read
    that fails counts as wrong too."""

    def __init__(self, server, expected_totals, expected_partitions):
        self.server = server
        self.expected = {"prom_metrics": expected_totals, "prom_partitions": expected_partitions}
        self.url = None
        self.stop = False
        self.lock = threading.Lock()
        self.busy = {k: threading.Lock() for k in self.expected}
        self.reads = {k: 0 for k in self.expected}
        self.wrong = []
        self.threads = [threading.Thread(target=self.loop, args=(k,), daemon=True) for k in self.expected]
        for t in self.threads:
            t.start()

    def read(self, kind, con, url):
        if kind == "prom_metrics":
            return pm_totals(con, self.server, url)
        return partitions(con, self.server, url)

    def loop(self, kind):
        con = connect()
        while not self.stop:
            with self.busy[kind]:
                url = self.url
                if url is None:
                    time.sleep(0.005)
                    continue
                try:
                    got = self.read(kind, con, url)
                except Exception as e:  # noqa: BLE001 - every failure is a finding
                    got = ("error", str(e)[:300])
                with self.lock:
                    self.reads[kind] += 1
                    if got != self.expected[kind]:
                        self.wrong.append((kind, url, str(got)[:300]))

    def switch(self, url):
        self.url = None
        for b in self.busy.values():
            with b:
                pass
        self.url = url

    def close(self):
        self.switch(None)
        self.stop = True
        for t in self.threads:
            t.join(timeout=60)


def partitions(con, server, url):
    return con.execute(f"SELECT date, api_proxy FROM prom_partitions(data_dir := '{url}', {s3_params(server)}) "
                       "ORDER BY ALL").fetchall()


def wait_for(server, kind, key_contains=None, deadline=10.0, proc=None):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if server.requests(kind, key_contains=key_contains):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.001)
    return False


#: Kills in a row on one archive before the run that must complete.
KILLS_PER_TRIAL = 3


def test_sigkill_at_random_moments_during_an_s3_compaction(s3, bucket, tmp_path):
    """Each trial: a fresh prefix; KILLS_PER_TRIAL compactions in a row, each SIGKILLed at a seeded
    random moment (anywhere; while a month object is uploaded; while daily objects are deleted),
    the readers reading all along; then a compaction that must complete to exactly the clean run's
    objects (whose rows are the generator's), with nothing left (no daily object, lock or
    unfinished upload)."""
    rng = random.Random(SEED)
    data, expected = small_archive(tmp_path)
    wait = 0.3
    daily_count = sum(1 for _ in data.rglob("*.parquet"))
    final = lambda prefix: month_keys(prefix, ["2024-01", "2024-02"])  # noqa: E731
    # A clean run's duration and requests bound the kill moments.
    upload(s3, bucket, data, "clean")
    expected_parts = partitions(connect(), s3, f"s3://{bucket}/clean")
    assert len(expected_parts) == daily_count
    cfg = s3_config(tmp_path / "clean.yaml", s3, bucket, "clean", removeDailyAfter=f"{int(wait * 1000)}ms")
    s3.reset_requests()
    t = time.perf_counter()
    r = compact(cfg)
    clean_s = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    clean_counts = s3.counts(bucket=bucket)
    clean_bytes = {m: s3.get(bucket, k) for m, k in zip(("2024-01", "2024-02"), final("clean"))}
    # The clean run's month objects hold exactly the generator's rows (the daily files
    # make_archive wrote, read by pyarrow): every trial's are compared with them byte for byte.
    s3.download(bucket, tmp_path / "clean-months", "clean/")
    assert arrow_rows(tmp_path / "clean-months") == arrow_rows(data)
    # The parts are the two month objects (enough of them, 6 or more, to kill uploads mid-way).
    part_sizes = [len(q.raw.body) for q in s3.requests("UPLOAD_PART", bucket=bucket)]
    assert sum(part_sizes) == sum(map(len, clean_bytes.values())), part_sizes
    assert len(part_sizes) == clean_counts["UPLOAD_PART"] >= 6, clean_counts
    readers = Readers(s3, expected, expected_parts)
    stats = {"trials": TRIALS, "kills_per_trial": KILLS_PER_TRIAL, "seed": SEED, "clean_run_seconds": round(clean_s, 3),
             "remove_daily_after_s": wait, "clean_run_requests": dict(clean_counts), "kills": 0,
             "killed_before_exit": 0, "left_lock": 0, "left_unfinished_upload": 0,
             "left_month_object_and_daily_objects": 0, "killed_while_deleting_daily_objects": 0,
             "uploads_aborted_by_later_runs": 0, "completing_runs_equal_to_the_generator": 0}
    started = time.perf_counter()
    try:
        for trial in range(TRIALS):
            prefix = f"t{trial}"
            upload(s3, bucket, data, prefix)
            cfg = s3_config(tmp_path / f"t{trial}.yaml", s3, bucket, prefix, removeDailyAfter=f"{int(wait * 1000)}ms")
            readers.switch(f"s3://{bucket}/{prefix}")
            for k in range(KILLS_PER_TRIAL):
                s3.reset_requests()
                kind = (trial * KILLS_PER_TRIAL + k) % 3
                p = subprocess.Popen([str(COLLECTOR), "--config", str(cfg), "--compact"], env=collector_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if kind == 0:  # anywhere in the run
                    time.sleep(rng.uniform(0, clean_s))
                elif kind == 1:  # while a month object is being uploaded
                    wait_for(s3, "UPLOAD_PART", proc=p)
                    time.sleep(rng.uniform(0, 0.08))
                else:  # while daily objects are being deleted
                    wait_for(s3, "DELETE", key_contains=f"{prefix}/2024-", proc=p)
                    time.sleep(rng.uniform(0, 0.05))
                stats["kills"] += 1
                if p.poll() is None:
                    stats["killed_before_exit"] += 1
                p.send_signal(signal.SIGKILL)
                p.wait()
                stats["uploads_aborted_by_later_runs"] += s3.counts(bucket=bucket)["ABORT_MULTIPART"]
                keys = s3.list_keys(bucket, prefix + "/")
                stats["left_lock"] += f"{prefix}/.promduck-compact.lock" in keys
                stats["left_unfinished_upload"] += bool(s3.multipart_uploads(bucket, prefix + "/"))
                dailies = [x for x in keys if len(x.split("/")[1]) == 10]
                months = [x for x in keys if len(x.split("/")[1]) == 7 and x.endswith(".parquet")]
                stats["left_month_object_and_daily_objects"] += bool(dailies and months)
                stats["killed_while_deleting_daily_objects"] += bool(months) and 0 < len(dailies) < daily_count
                for x in months:  # a visible month object is whole, and the clean run's
                    assert s3.get(bucket, x) == clean_bytes[x.split("/")[1]], (trial, k, x)
                time.sleep(0.03)  # readers read the state the kill left
            s3.reset_requests()
            r = compact(cfg)
            assert r.returncode == 0, (trial, r.stderr)
            stats["uploads_aborted_by_later_runs"] += s3.counts(bucket=bucket)["ABORT_MULTIPART"]
            time.sleep(0.02)
            readers.switch(None)
            assert s3.list_keys(bucket, prefix + "/") == final(prefix), trial
            assert s3.stray(bucket, prefix + "/") == [], trial
            for m, x in zip(("2024-01", "2024-02"), final(prefix)):
                assert s3.get(bucket, x) == clean_bytes[m], (trial, m)
            stats["completing_runs_equal_to_the_generator"] += 1
            assert not readers.wrong, readers.wrong[:5]
    finally:
        readers.close()
    stats["seconds"] = round(time.perf_counter() - started, 1)
    stats["reads"] = dict(readers.reads)
    stats["wrong_reads"] = len(readers.wrong)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "s3-compaction-crash.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))
    assert not readers.wrong, readers.wrong[:5]
    assert min(readers.reads.values()) >= TRIALS
    assert stats["killed_before_exit"] >= stats["kills"] // 2
