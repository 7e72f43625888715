"""What the benchmark scripts share: where the built binaries are, logging, the machine's
description, timing a query (wall and CPU), a process's peak memory, a DuckDB connection
with the extension loaded. bench/run.py and bench/compaction.py both import it (neither
imports the other).
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import duckdb  # noqa: E402

from helpers import COLLECTOR, EXTENSION  # noqa: E402

GEN = REPO / "target" / "release" / "examples" / "gen_partitions"
# Every figure of a run, by section (bench/run.py --json writes it).
RESULTS: dict = {}


def log(msg):
    print(msg, flush=True)


def machine():
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "memory_mib": mem, "cpu": cpu, "kernel": platform.release(),
            "duckdb_python": duckdb.__version__}


def cpu_self() -> float:
    """CPU time (user + system) of this process so far: DuckDB's threads run in it."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(con, sql, params=(), repeat=3):
    """(best wall time, result, least CPU time) over ``repeat`` runs. CPU time varies far
    less than wall time when the machine is shared."""
    best = cpu = None
    result = None
    for _ in range(repeat):
        c, t = cpu_self(), time.perf_counter()
        result = con.execute(sql, list(params)).fetchall()
        e, c = time.perf_counter() - t, cpu_self() - c
        best = e if best is None else min(best, e)
        cpu = c if cpu is None else min(cpu, c)
    return best, result, cpu


def connect():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    return con


def peak_rss_mib(args, cwd) -> tuple[float, float]:
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "r = subprocess.run(sys.argv[1:], capture_output=True); "
            "sys.exit(r.returncode) if r.returncode else None; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)")
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"collector failed: {r.stderr[-2000:]}")
    kib, secs = r.stdout.split()
    return int(kib) / 1024, float(secs)
