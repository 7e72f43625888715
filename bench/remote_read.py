"""Remote read through a real Prometheus vs the same answer from ``prom_metrics`` (issue 28).

A year of 200 proxies (365 x 200 = 73,000 daily partitions of 6 rows, written by promduck's
writer: ``gen_partitions``), served by ``promduck-collector --serve``; a Prometheus with an empty
TSDB reads it through ``remote_read``. The query: 30 days of
``sum by (apiproxy) (last_over_time(request_count[1d]))`` at a daily step (a Grafana panel of
daily totals per proxy), timed through Prometheus's HTTP API; the server's own counters give
the files it opened and the bytes it sent (and, for comparison, the bytes of the same selector
as one ``STREAMED_XOR_CHUNKS`` request of the tests' own client). The baseline is the same 6,000 numbers from
``prom_metrics`` in DuckDB; both answers are compared, value for value.

    .venv/bin/python bench/remote_read.py [--workdir DIR] [--json bench/remote_read.json]
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
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import duckdb  # noqa: E402

import promfixture  # noqa: E402
from helpers import EXTENSION  # noqa: E402
from test_remote_read import EQ, ArchiveServer, ReaderPrometheus, streamed_read  # noqa: E402

GEN = REPO / "target" / "release" / "examples" / "gen_partitions"
FIRST = date(2024, 1, 1)
DAYS, PROXIES = 365, 200
QUERY_FIRST, QUERY_DAYS = date(2024, 6, 1), 30
QUERY = "sum by (apiproxy) (last_over_time(request_count[1d]))"


def day_end(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()) + 86400


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="keep the year here (default: a temporary folder)")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    if not GEN.exists():
        raise SystemExit(f"{GEN} is missing: cargo build --release --workspace --examples")
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="promduck-rr-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        run(tmp, args.json)
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path, json_out: str | None):
    data = tmp / "year"
    if not data.exists():
        subprocess.run([str(GEN), str(data), str(DAYS), str(PROXIES), FIRST.isoformat()], check=True,
                       capture_output=True)
    proxies = [f"api-proxy-{p}" for p in range(PROXIES)]
    server = ArchiveServer(tmp / "serve", "http://127.0.0.1:9", proxies, data)
    reader = ReaderPrometheus(tmp / "reader", promfixture.prometheus_bin_dir(), server.url + "/api/v1/read")
    reader.start()
    try:
        last = QUERY_FIRST + timedelta(days=QUERY_DAYS - 1)
        params = {"query": QUERY, "start": day_end(QUERY_FIRST), "end": day_end(last), "step": 86400}
        walls, got = [], None
        files = bytes_sent = None
        for _ in range(3):
            f0 = server.counter("promduck_serve_files_read_total")
            b0 = server.counter("promduck_serve_response_bytes_total")
            t = time.perf_counter()
            status, body = reader.request("/api/v1/query_range", params, timeout=600)
            walls.append(time.perf_counter() - t)
            assert status == 200, body[:500]
            files = server.counter("promduck_serve_files_read_total") - f0
            bytes_sent = server.counter("promduck_serve_response_bytes_total") - b0
            got = {(r["metric"]["apiproxy"], int(float(ts))): float(v)
                   for r in json.loads(body)["data"]["result"] for ts, v in r["values"]}
        con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        con.execute(f"LOAD '{EXTENSION}'")
        sql = ("SELECT labels['apiproxy'], epoch(date)::BIGINT + 86400, sum(value) FROM prom_metrics("
               "data_dir := ?, metric := 'request_count', start_date := ?, end_date := ?) GROUP BY ALL")
        dwalls, want = [], None
        for _ in range(3):
            t = time.perf_counter()
            rows = con.execute(sql, [str(data), QUERY_FIRST, last]).fetchall()
            dwalls.append(time.perf_counter() - t)
            want = {(p[0] if isinstance(p, list) else p, ts): v for p, ts, v in rows}
        assert got == want, "the answers differ"
        assert len(got) == QUERY_DAYS * PROXIES
        # The same selector's range as one STREAMED_XOR_CHUNKS request (the test's own
        # client: Prometheus 2.42 asks only for SAMPLES): the bytes it takes instead.
        b0 = server.counter("promduck_serve_response_bytes_total")
        start_ms = (day_end(QUERY_FIRST) - 86400) * 1000
        _, frames = streamed_read(server.url, [(start_ms, day_end(last) * 1000,
                                                [(EQ, "__name__", "request_count")])])
        chunked_bytes = server.counter("promduck_serve_response_bytes_total") - b0
        chunked_samples = sum(len(x) for _, _, x in frames)
        figures = {
            "archive": f"{DAYS} days x {PROXIES} proxies = {DAYS * PROXIES} daily partitions",
            "query": f"{QUERY}, {QUERY_DAYS} days from {QUERY_FIRST} at a 1d step",
            "identical_results": True,
            "points": len(got),
            "prometheus_remote_read_s": round(min(walls), 3),
            "files_read": files,
            "response_bytes": bytes_sent,
            "streamed_xor_chunks_bytes": chunked_bytes,
            "streamed_xor_chunks_samples": chunked_samples,
            "prom_metrics_s": round(min(dwalls), 4),
            "ratio": round(min(walls) / min(dwalls), 1),
            "machine": {"cores": os.cpu_count(), "load_average_end": round(os.getloadavg()[0], 2)},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        print(json.dumps(figures, indent=2))
        if json_out:
            Path(json_out).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        reader.stop()
        assert server.stop() == 0


if __name__ == "__main__":
    main()
