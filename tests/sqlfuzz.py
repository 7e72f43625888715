#!/usr/bin/env python3
"""A SQL fuzzer for promduck: random calls of every function the extension registers, with
values of every DuckDB type a parameter can receive, each batch run in a child DuckDB host.

What it generates (the same seed gives the same statements):
- calls of prom_metrics, prom_partitions, prom_collect, prom_compact, prom_query,
  prom_query_range, prom_labels, prom_label_values, prom_series, prom_metadata and timestamp_ms
  (lists of expressions as the query, `labels := [...]` columns), with
  positional and named parameters drawn from the names the extension declares (and a few it
  does not), each either a plausible value for that parameter or a value from a type zoo:
  NULL, NULLs inside lists, nested lists, maps, structs, unions, arrays, huge strings,
  HUGEINT/UHUGEINT extremes, -0.0, NaN, inf, odd dates and timestamps (year 0, 294247,
  infinity), intervals (negative, months), TIMESTAMPTZ, BLOB, UUID, BOOLEAN, ENUM, and
  prepared parameters (`?` bound from Python: None inside lists, nested lists, dicts);
- wrappers around the call: projections of each function's columns (pushdown), rowid, LIMIT,
  UNION ALL, LATERAL, CREATE TABLE AS, COPY, SUMMARIZE, DESCRIBE, EXPLAIN (ANALYZE); values
  through SET VARIABLE/getvariable and through a table macro;
- some statements under a tiny `memory_limit`, some with something big in the same statement;
- live functions pointed at loopback only: a closed port, or the fuzzer's own HTTP server
  (`OddServer`), whose answer is chosen by the URL's path prefix (`/m/<mode>`): bad JSON,
  huge labels, odd numbers, redirects, truncated bodies ...;
- file parameters pointed into a small valid archive written with DuckDB's COPY in
  promduck's layout, or at odd paths (/dev/zero, a FIFO, a folder, a missing path, garbage);
- secret-bearing statements (s3_secret_access_key, s3_session_token, password, bearer_token,
  `url := 'http://user:SECRET@...'`, secrets inside config files) together with a bad
  parameter: every error text is searched for the secret (any 10 characters of it).

How it runs: each batch of statements runs in one child process of a DuckDB host (a Python
venv `.cache/duckdb-<minor>/bin/python`, or the CLI `.venv/bin/duckdb`, one process per
statement as the CLI stops at the first error). The child writes each statement's index to a
progress file before executing it; when the host dies (a signal, an abort, a nonzero exit)
the runner takes the statement from the progress file, re-runs it alone to confirm, shrinks it
(drops parameters while it still kills the host the same way; a death that needs earlier
statements is bisected to the one it needs) and goes on from the next one. Children run with
RLIMIT_DATA = 4 GiB (PROMDUCK_FUZZ_CHILD_MEMORY) so that an unbounded read dies there.
An error from DuckDB is a survivor; a host death, a secret in an error, a FATAL error that
invalidates the database, or a statement that stalls are findings.

    python tests/sqlfuzz.py --seed 1 --count 500 --host 2.0 --host cli
    python tests/sqlfuzz.py --seed 1 --count 50 --print          # the statements only
    python tests/sqlfuzz.py --seed 1 --host /path/to/python      # a Python with duckdb

(--host: 1.2, 1.3, 1.4, 1.5, 2.0 — the venvs of `make hosts` — cli, or a path; default all.)

prints the findings and exits 1 when there are any. Findings are also merged into
PROMDUCK_FUZZ_FINDINGS (default /tmp/fuzz-findings.md), deduplicated by class.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("PROMDUCK_BUILD") or REPO_ROOT / "build")
#: minor release -> exact version (the Makefile's HOST_DUCKDB; tests/test_hosts.py HOSTS)
HOSTS = {"1.2": "1.2.2", "1.3": "1.3.2", "1.4": "1.4.5", "1.5": "1.5.6", "2.0": "2.0.1"}
CLI = REPO_ROOT / ".venv" / "bin" / "duckdb"
FINDINGS = Path(os.environ.get("PROMDUCK_FUZZ_FINDINGS") or "/tmp/fuzz-findings.md")
#: a child's data segment (RLIMIT_DATA: writable private memory, not the address space that
#: allocators reserve): a statement that reads without bound dies here, not on the machine
CHILD_MEMORY = int(os.environ.get("PROMDUCK_FUZZ_CHILD_MEMORY", str(4 << 30)))
#: a statement that has not finished after this many seconds is reported as stalled (a
#: watchdog, not an assertion on speed: every call here is bounded by small timeouts)
STALL_SECONDS = float(os.environ.get("PROMDUCK_FUZZ_STALL", "120"))

#: findings shrunk per batch at most (each shrink re-runs the statement a few times)
MAX_SHRINKS = int(os.environ.get("PROMDUCK_FUZZ_SHRINKS", "40"))

SECRET_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"


def EXTENSION_FILES_PRESENT() -> bool:  # noqa: N802
    """Whether build/ holds the extension for both platforms the hosts report."""
    return (BUILD / "promduck.duckdb_extension").exists() and \
        (BUILD / "linux_amd64_gcc4" / "promduck.duckdb_extension").exists()


class HostMissing(Exception):
    pass


def host_python(host: str) -> Path:
    exe = REPO_ROOT / ".cache" / f"duckdb-{host}" / "bin" / "python"
    if not exe.exists():
        raise HostMissing(f"{exe} is missing: run `make hosts` (the DuckDB {HOSTS.get(host, host)} host venv)")
    return exe


def host_exe(host: str) -> Path:
    if host == "cli":
        if not CLI.exists():
            raise HostMissing(f"{CLI} is missing: run `make venv` (the DuckDB CLI host)")
        return CLI
    return host_python(host)


# ---------------------------------------------------------------------------------------
# Statements


@dataclass
class Frag:
    """A piece of SQL with the values of its `?` placeholders, in order."""
    sql: str
    params: list = field(default_factory=list)


@dataclass
class Stmt:
    func: str
    pos: list  # [Frag]
    named: list  # [(name, Frag)]
    wrap: str = "{}"  # e.g. "SELECT count(*) FROM {}"
    pre: list = field(default_factory=list)  # SET statements before, RESET after
    secrets: list = field(default_factory=list)
    scalar: bool = False
    #: the name of a named parameter passed through a table macro (`fzm(value)`) instead
    macro: str | None = None

    def call(self) -> Frag:
        named = self.named
        through = next((f for n, f in named if n == self.macro), None) if self.macro else None
        if through is not None:
            named = [(n, Frag("x") if n == self.macro else f) for n, f in named]
        parts = list(self.pos) + [Frag(f"{n} := {f.sql}", f.params) for n, f in named]
        sql = ", ".join(p.sql for p in parts)
        params = [v for p in parts for v in p.params]
        if through is not None and not params:
            return _wrap(self.wrap, f"fzm({through.sql})", through.params)
        return _wrap(self.wrap, f"{self.func}({sql})", params)

    def all_pre(self) -> list:
        """The statements before: the SETs, and the table macro's definition if any."""
        through = next((f for n, f in self.named if n == self.macro), None) if self.macro else None
        if through is None:
            return list(self.pre)
        named = [(n, Frag("x") if n == self.macro else f) for n, f in self.named]
        parts = list(self.pos) + [Frag(f"{n} := {f.sql}", f.params) for n, f in named]
        if any(p.params for p in parts):
            return list(self.pre)
        inner = f"{self.func}({', '.join(p.sql for p in parts)})"
        return list(self.pre) + [f"CREATE OR REPLACE TEMP MACRO fzm(x) AS TABLE SELECT * FROM {inner}"]

    def to_json(self) -> dict:
        c = self.call()
        secrets = list(self.secrets)
        if ("@CFG_SECRET@" in c.sql or "@CFG_BAD@" in c.sql) and "@SECRET_CFG@" not in secrets:
            secrets.append("@SECRET_CFG@")  # the config files that hold a secret
        secrets.append(ENV_SECRET)  # AWS_SECRET_ACCESS_KEY in every child's environment
        return {"sql": c.sql, "params": [enc(v) for v in c.params] if c.params else None,
                "pre": self.all_pre(), "secrets": secrets}

    def text(self) -> str:
        c = self.call()
        s = "; ".join(self.all_pre() + [c.sql])
        if c.params:
            s += f"   -- bound: {short(repr(c.params))}"
        return s

    def prepared(self) -> bool:
        return bool(self.call().params)


def _wrap(wrap: str, call: str, params: list) -> Frag:
    """The call put in its statement: every `{}` of the wrapper is the call (its bound values
    repeat as often)."""
    n = wrap.count("{}")
    return Frag(wrap.replace("{}", call), params * n)


def short(s: str, n: int = 400) -> str:
    return s if len(s) <= n else s[:n] + f"...({len(s)} chars)"


# Python values bound to `?` travel to the child as JSON with tags for what JSON lacks.
class Huge:
    def __init__(self, ch: str, n: int):
        self.ch, self.n = ch, n

    def __repr__(self):
        return f"{self.ch!r}*{self.n}"


class Tagged:
    def __init__(self, tag: str, v):
        self.tag, self.v = tag, v

    def __repr__(self):
        return f"{self.tag}({self.v!r})"


def enc(v):
    if isinstance(v, Huge):
        return {"$huge": [v.ch, v.n]}
    if isinstance(v, Tagged):
        return {"$" + v.tag: v.v}
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf")) or (v == 0 and str(v)[0] == "-")):
        return {"$float": repr(v)}
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53:
        return {"$int": str(v)}
    if isinstance(v, list):
        return [enc(x) for x in v]
    if isinstance(v, dict):
        return {"$dict": [[k, enc(x)] for k, x in v.items()]}
    return v


# The type zoo: SQL literals of every kind a parameter may receive.
HUGE_N = 10_000_000
ZOO_SQL = [
    "NULL", "NULL::VARCHAR", "NULL::DATE", "NULL::INTEGER", "NULL::VARCHAR[]", "NULL::TIMESTAMPTZ",
    "''", "'x'", "' '", "'2024-03-01'", "'2024-02-30'", "'0000-01-01'", "'294247-01-10'", "'5881580-07-10'",
    "'infinity'", "'-infinity'", "'epoch'", "'now'", "'yesterday'", "'2024-03-01 25:00:00'", "'1709251200'",
    "'2024-03-01T00:00:00Z'", "'2024-03-01 00:00:00+14:00'", "'NaN'", "'inf'", "'-1'", "'1e400'", "'1m'", "'-1m'",
    "'0'", "'0s'", "'1 month'", "'00:00:00.0005'", "'9223372036854775807'", "'256MiB'", "'1e30GB'", "'-5KB'",
    "chr(0)", "'a' || chr(0) || 'b'", "'💥'", "'\\'", "'%s%n%x'", "'0_macro_parameters.x'", "'../../etc/passwd'",
    f"repeat('x', {HUGE_N})", "repeat('é', 100000)", "repeat('2024-03-01', 100000)", "repeat('[', 100000)",
    "0", "1", "-1", "7", "2147483647", "-2147483648", "9223372036854775807", "-9223372036854775808",
    "170141183460469231731687303715884105727::HUGEINT", "(-170141183460469231731687303715884105727 - 1)::HUGEINT",
    "340282366920938463463374607431768211455::UHUGEINT", "0::UHUGEINT", "1::UHUGEINT", "255::UTINYINT",
    "18446744073709551615::UBIGINT", "-128::TINYINT", "-0.0::DOUBLE", "'NaN'::DOUBLE", "'inf'::DOUBLE",
    "'-inf'::FLOAT", "1e308", "5e-324::DOUBLE", "0.1::DECIMAL(38,37)", "99999999999999999999999999999999999999::DECIMAL(38,0)",
    "1.5", "-2.5",
    "DATE '2024-03-01'", "DATE '0001-01-01'", "DATE '0000-01-01'", "DATE '1970-01-01'", "DATE '294247-01-10'",
    "DATE '5881580-07-10'", "DATE '-4713-11-24'", "'infinity'::DATE", "'-infinity'::DATE",
    "TIMESTAMP '2024-03-01 12:00:00'", "TIMESTAMP '294247-01-10 04:00:54'", "TIMESTAMP '0001-01-01 00:00:00'",
    "'infinity'::TIMESTAMP", "'-infinity'::TIMESTAMP", "TIMESTAMPTZ '2024-03-01 00:00:00+05'",
    "TIMESTAMPTZ '2024-03-01 23:30:00-10'", "'infinity'::TIMESTAMPTZ", "TIMESTAMP_NS '2024-03-01 00:00:00.123456789'",
    "TIMESTAMP_S '2024-03-01 00:00:00'", "TIMESTAMP_MS '2024-03-01 00:00:00.5'", "TIME '12:00:00'",
    "TIMETZ '12:00:00+01'", "current_date", "now()",
    "INTERVAL 1 MINUTE", "INTERVAL '-1 minute'", "INTERVAL 1 MONTH", "INTERVAL '1 year 2 months 3 days'",
    "INTERVAL '0 seconds'", "INTERVAL '1 microsecond'", "INTERVAL '-1 day 25 hours'", "to_microseconds(9223372036854775807)",
    "INTERVAL 1 DAY", "INTERVAL '1 day -00:00:01.5'",
    "'\\x00\\xff'::BLOB", "'abc'::BLOB", "''::BLOB", "'00000000-0000-0000-0000-000000000000'::UUID",
    "'ffffffff-ffff-ffff-ffff-ffffffffffff'::UUID", "true", "false", "NULL::BOOLEAN",
    "'a'::ENUM('a', 'b')", "'2024-03-01'::ENUM('2024-03-01')", "'0101'::BITSTRING",
    "[]", "[]::VARCHAR[]", "[NULL]", "[NULL, NULL]", "[NULL, '2024-03-01']", "['2024-03-01', NULL]", "['x', NULL]",
    "[NULL::DATE, DATE '2024-03-01']", "[[NULL]]", "[['p1']]", "[[], NULL]", "[['2024-03-01'], ['2024-03-02']]",
    "[1::UHUGEINT]", "[1, 2]", "[1.5, NULL]", "['2024-03-01', '2024-03-02']", "['2024-03-01', '2024-03-02', '2024-03-03']",
    "[DATE '2024-03-01', DATE '2024-03-02']", "['2024-03-02', '2024-03-01']", "['infinity', '-infinity']",
    "[TIMESTAMPTZ '2024-03-01 00:00:00+05', NULL]", "['api-proxy-1', 'we\"ird/proxy']", "['api-proxy-1']",
    "[repeat('x', 1000000)]", "list_transform(range(100000), x -> x::VARCHAR)", "range(3)",
    "['a', 'b']::VARCHAR[2]", "[NULL, 'x']::VARCHAR[2]", "[[1, 2], [3]]", "[MAP {'k': 'v'}]", "[{'a': 1}]",
    "[[[[['deep']]]]]", "[NULL::VARCHAR[]]", "[true]", "['']", "[chr(0)]",
    "MAP {'a': 1}", "MAP {}", "MAP {'k': NULL}", "MAP {'2024-03-01': '2024-03-02'}", "MAP {1: [NULL]}",
    "{'a': 1}", "{'start': '2024-03-01', 'end': NULL}", "{'x': NULL}", "row(1, 'x')", "{'a': {'b': [NULL]}}",
    "union_value(k := 'x')", "union_value(n := 1)", "NULL::UNION(a INT, b VARCHAR)",
    "getvariable('nope')", "'{\"a\": [null]}'::JSON",
]

# Prepared values (Python objects bound to `?`).
ZOO_PY = [
    None, [None], [None, "2024-03-01"], ["2024-03-01", None], ["x", None], [None, None], [], [["p1"]], [[None]],
    [[], None], {"a": None}, {"k": [None]}, {"a": {"b": None}}, [{"a": 1}, None], "", "x", "2024-03-01",
    "2024-02-30", "infinity", Huge("x", 1_000_000), Huge("x", HUGE_N), 0, -1, 2**63 - 1, -(2**63), 2**64,
    2**127 - 1, -(2**127), float("nan"), float("inf"), float("-inf"), -0.0, 1e308, True, False,
    Tagged("bytes", "00ff"), Tagged("date", "2024-03-01"), Tagged("date", "0001-01-01"),
    Tagged("date", "9999-12-31"), Tagged("datetime", "2024-03-01T12:00:00"), Tagged("datetimetz", "2024-03-01T00:00:00+05:00"),
    Tagged("timedelta", -60), Tagged("timedelta", 86400 * 365 * 1000), Tagged("decimal", "1e-30"),
    Tagged("decimal", "NaN"), Tagged("uuid", "00000000-0000-0000-0000-000000000000"), ["api-proxy-1", None],
    ["2024-03-01", "2024-03-02"], [Tagged("date", "2024-03-01"), None], {"start": "2024-03-01"},
]

DAYS = ["'2024-03-01'", "'2024-03-02'", "'2024-01-31'", "'2024-02-29'", "DATE '2024-03-01'",
        "TIMESTAMP '2024-03-01 23:00:00'", "TIMESTAMPTZ '2024-03-01 23:00:00-05'", "'2024-03-01 00:00:00+00'"]
TIMES = ["TIMESTAMPTZ '2024-03-01 00:00:00+00'", "'2024-03-01T00:00:00Z'", "'1709251200'", "TIMESTAMP '2024-03-01 12:00:00'",
         "DATE '2024-03-01'", "'infinity'::TIMESTAMPTZ", "'-infinity'::TIMESTAMPTZ", "TIMESTAMPTZ '0001-01-01 00:00:00+00'",
         "TIMESTAMPTZ '294247-01-10 04:00:54+00'", "'1e13'", "'-1.5'", "now()"]
STEPS = ["'1m'", "INTERVAL 1 MINUTE", "'15'", "15", "'1h'", "INTERVAL 1 DAY", "'0.001'", "1e-3", "'-1m'", "INTERVAL '-1 minute'",
         "INTERVAL 1 MONTH", "'0'", "0", "'NaN'", "'nan'::DOUBLE", "'inf'::DOUBLE", "1e30", "'1ms'", "'1 month'",
         "170141183460469231731687303715884105727::HUGEINT", "-0.0::DOUBLE", "'00:00:00.0015'", "'1.5ms'", "[1]",
         "{'s': 1}", "'1 fortnight'", "'99999999999999 days'", "'1e100000000'", "'1e-1000000'"]
SIZES = ["'1MiB'", "'64MiB'", "1024", "'1'", "0", "-1", "'0'", "'1e30GB'", "'1.5KiB'", "18446744073709551615::UBIGINT",
         "340282366920938463463374607431768211455::UHUGEINT", "'NaN'::DOUBLE", "1e308", "'256MiB'", "'100000000000000000000'",
         "[1]", "'1 GB'", "'-5KB'", "'kb'", "2.5"]
DURATIONS = ["'2s'", "'1s'", "'300ms'", "'0s'", "'-1s'", "'1ns'", "'0.5ms'", "'1h'", "'100000000h'", "'1d'", "'fast'", "''",
             "'9223372036854775807ns'", "'1e9s'", "'1m30s'", "'NaN'"]
PROXIES = ["'api-proxy-1'", "['api-proxy-1', 'api-proxy-2']", "'we\"ird/proxy'", "['we\"ird/proxy', 'nope']", "'nope'",
           "[]", "['api-proxy-1', NULL]", "[NULL]", "[['api-proxy-1']]", "123", "[1::UHUGEINT]", "'../x'", "'%2F'", "''",
           "'.'", "'..'", "'a/b'", "chr(0)", "MAP {'api-proxy-1': 1}"]
METRICS = ["'request_count'", "['request_count', 'latency_ms']", "'nope'", "[]", "[NULL]", "['request_count', NULL]",
           "[['request_count']]", "1", "''"]
PROMQL = ["'up'", "'sum(rate(x[5m]))'", "'{__name__=~\".+\"}'", "'invalid(('", "''", "'time()'", "'vector(1)'",
          f"repeat('x', {HUGE_N})", "'up' || chr(0)", "'\\u00ff'", "repeat('(', 10000)", "'scalar(1)'", "'\"string\"'"]
#: lists of expressions as the query argument
PROMQL_LISTS = ["['up', 'vector(1)']", "['up']", "[]", "[NULL]", "['up', NULL]", "['up', 'invalid((']", "[['up']]",
                "['up', 'up', 'up', 'up', 'up', 'up', 'up', 'up', 'up', 'up', 'up', 'up']", "[1, 2]",
                f"['up', repeat('x', {HUGE_N})]", "['up', '']", "list_value('up', 'time()')"]
#: `labels := ...`: label columns
LABEL_COLUMNS = ["['job']", "['apiproxy', 'environment']", "['__name__', 'job', 'nope']", "[]", "[NULL]", "['job', NULL]",
                 "['value']", "['Labels']", "['query']", "['job', 'JOB']", "['job', 'job']", "['']", "'job'", "1",
                 "[['job']]", "['source']", "[repeat('l', 100000)]", "['💥']", "['a b', 'x\"y']"]
LABELS = ["'job'", "'__name__'", "''", "'a/b'", "'../../api'", "'x?y=1'", "'%2e%2e'", "repeat('l', 100000)", "'💥'"]
MATCHES = ["'up'", "['up', '{job=\"x\"}']", "[]", "[NULL]", "['up', NULL]", "'{'", "[['up']]", "1", "''", "[repeat('u', 100000)]"]
#: loopback only; without one, s3:// goes to AWS_ENDPOINT_URL, which the child sets to loopback
S3_ENDPOINTS = ["'http://127.0.0.1:@PORT@'", "'127.0.0.1:@PORT@'", "'http://[::1]:@CLOSED@'", "''", "'http://127.0.0.1:@CLOSED@'"]
REMOVE_AFTER = ["'0s'", "'1ms'", "'-1s'", "'fast'", "''", "'1ns'", "'0.5ms'", "'NaN'", "'1d'", "NULL", "'100ms'"]
MONTHS = ["'2024-01'", "'2024-02'", "'2024-13'", "'0000-01'", "'294247-01'", "'2099-01'", "''", "'2024-01-01'", "'now'"]


#: statements around a table function's call (`{}`), with weights
WRAPS = [("SELECT * FROM {}", 50), ("SELECT count(*) FROM {}", 20), ("DESCRIBE SELECT * FROM {}", 4),
         ("SELECT * FROM {} LIMIT 0", 4), ("SELECT * FROM {} LIMIT 1", 4), ("EXPLAIN SELECT * FROM {}", 2),
         ("EXPLAIN ANALYZE SELECT * FROM {}", 2), ("SELECT * FROM {} t1, range(2) t2", 2),
         ("SELECT count(*) FROM (SELECT * FROM {} UNION ALL SELECT * FROM {})", 2),
         ("SELECT rowid FROM {}", 2), ("SELECT count(rowid) FROM {}", 1), ("SUMMARIZE SELECT * FROM {}", 1),
         ("CREATE OR REPLACE TEMP TABLE fzt AS SELECT * FROM {}", 2), ("SELECT * FROM {} ORDER BY ALL", 2),
         ("COPY (SELECT * FROM {}) TO '@TMP@/copy.parquet' (FORMAT parquet)", 1),
         ("SELECT * FROM (SELECT 1) t, LATERAL (SELECT * FROM {})", 1),
         ("WITH x AS MATERIALIZED (SELECT * FROM {}) SELECT count(*) FROM x, x AS y", 1)]
#: projections (pushdown) of each function's own columns
COLUMN_WRAPS = {
    "prom_metrics": [("SELECT value FROM {}", 3), ("SELECT labels, rowid FROM {}", 2),
                     ("SELECT api_proxy, date FROM {} WHERE date = DATE '2024-03-01'", 2),
                     ("SELECT labels['apiproxy'], source FROM {}", 2), ("SELECT timestamp, timestamp FROM {}", 1),
                     ("SELECT sum(value) FROM {} GROUP BY metric_name", 2)],
    "prom_partitions": [("SELECT path FROM {}", 2), ("SELECT bytes, rowid FROM {}", 2)],
    "prom_query": [("SELECT value FROM {}", 2), ("SELECT labels, timestamp FROM {}", 2)],
    "prom_query_range": [("SELECT value FROM {}", 2), ("SELECT labels, timestamp FROM {}", 2)],
    "prom_series": [("SELECT labels FROM {}", 2), ("SELECT job, rowid FROM {}", 1)],
    "prom_metadata": [("SELECT help FROM {}", 2), ("SELECT type, unit, rowid FROM {}", 1)],
}
# label columns (when asked for; an error otherwise, which is a survivor too)
for _f in ("prom_query", "prom_query_range", "prom_metrics"):
    COLUMN_WRAPS[_f] = COLUMN_WRAPS[_f] + [("SELECT job, environment FROM {}", 1), ("SELECT query FROM {}", 1)]


def data_dirs() -> list:
    return ["'@DATA@'", "'@DATA@'", "'@DATA@'", "'@BIGDATA@'", "'@BADDATA@'", "'@EMPTY@'", "'@GARBAGE@'", "'/dev/zero'",
            "'@FIFO@'", "'@MISSING@'", "'/'", "'/proc/self'", "'@DATA@/2024-03-01'", "'@DATA@/../data'",
            "'s3://bucket/prefix'", "''", "'relative/nowhere'", "'@LINKDATA@'"]


def configs_live() -> list:
    return ["'@CFG_LIVE@'"] * 4 + ["'@CFG_SECRET@'", "'@CFG_BAD@'", "'@CFG_CAZERO@'", "'@CFG_PWFIFO@'", "'/dev/zero'",
                                   "'@FIFO@'", "'@MISSING@'", "'@EMPTY@'", "'@GARBAGE@'", "''"]


def configs_collect() -> list:
    return ["'@CFG_COLLECT_OK@'", "'@CFG_COLLECT_OK@'", "'@CFG_COLLECT_HUGE@'", "'@CFG_COLLECT_BADJSON@'",
            "'@CFG_COLLECT_ODD@'", "'@CFG_COLLECT_CLOSED@'", "'@CFG_SECRET@'", "'@CFG_BAD@'", "'@CFG_CAZERO@'",
            "'@CFG_PWFIFO@'", "'/dev/zero'", "'@FIFO@'", "'@MISSING@'", "'@EMPTY@'", "'@GARBAGE@'"]


#: the modes of OddServer (see there): the path prefix /m/<mode> of a live URL
MODES = ["ok", "ok", "empty", "badjson", "truncated", "hugelabel", "manylabels", "deep", "oddnum", "oddts", "nan",
         "wrongtype", "histogram", "nonutf8", "status_error", "http400", "http404", "http422", "redirect", "redirect_loop",
         "emptybody", "bigmatrix", "dup", "nullfields", "gzipgarbage", "shortlen"]


def live_urls(rng: random.Random) -> list:
    m = rng.choice(MODES)
    return [f"'http://127.0.0.1:@PORT@/m/{m}'"] * 6 + [
        "'http://127.0.0.1:@CLOSED@'", "'http://[::1]:@CLOSED@'", "'ftp://127.0.0.1/'", "'http://'", "'not a url'",
        "'http://127.0.0.1:@PORT@/m/ok?x=1'", "'http://127.0.0.1:99999'", "''", f"'http://127.0.0.1:@PORT@/m/{m}/'"]


class Gen:
    def __init__(self, seed: int):
        self.seed = seed
        self.rng = random.Random(seed)
        self._vars = []

    # -- values
    def zoo(self) -> Frag:
        r = self.rng
        if r.random() < 0.12:
            return Frag("?", [r.choice(ZOO_PY)])
        if r.random() < 0.04:  # through a variable, as a table macro's user would pass it
            self._vars.append(f"SET VARIABLE fzv{len(self._vars)} = {r.choice(ZOO_SQL)}")
            return Frag(f"getvariable('fzv{len(self._vars) - 1}')")
        return Frag(r.choice(ZOO_SQL))

    def pick(self, plausible: list) -> Frag:
        """A plausible value for a parameter (60 %), else anything from the zoo."""
        if self.rng.random() < 0.6:
            return Frag(self.rng.choice(plausible))
        return self.zoo()

    def secret(self) -> str:
        return "Zq" + "".join(self.rng.choice(SECRET_CHARS) for _ in range(22))

    # -- statements
    def statement(self) -> Stmt:
        r = self.rng
        self._vars = []
        f = r.choices(
            ["prom_metrics", "prom_partitions", "prom_collect", "prom_compact", "prom_query", "prom_query_range",
             "prom_labels", "prom_label_values", "prom_series", "prom_metadata", "timestamp_ms"],
            weights=[16, 12, 8, 5, 10, 10, 5, 6, 7, 5, 5])[0]
        s = getattr(self, f)()
        s.func = f
        if not s.scalar:
            wraps = WRAPS + COLUMN_WRAPS.get(s.func, [])
            s.wrap = r.choices(wraps, weights=[w for _, w in wraps])[0][0]
        # a bogus or repeated named parameter now and then
        if r.random() < 0.05:
            s.named.append((r.choice(["bogus", "Data_Dir", "date_range", "\"time\"", "url"]), self.zoo()))
        if r.random() < 0.03 and s.pos:
            s.pos.append(self.zoo())
        r.shuffle(s.named)
        if r.random() < 0.04 and not s.scalar:
            self.make_big(s)
        elif r.random() < 0.12:
            s.pre = [r.choice(["SET memory_limit = '20MB'", "SET memory_limit = '8MB'", "SET memory_limit = '64MB'",
                               "SET memory_limit = '20MB'; SET threads = 1", "SET TimeZone = 'Pacific/Kiritimati'",
                               "SET TimeZone = 'America/St_Johns'", "SET threads = 1"])]
        s.pre = self._vars + s.pre
        if r.random() < 0.15 and not s.scalar:
            self.add_secret(s)
        elif r.random() < 0.05 and s.named and not s.scalar:  # one parameter through a table macro
            s.macro = r.choice([n for n, _ in s.named])
        return s

    def make_big(self, s: Stmt):
        """A tiny memory_limit and something big in the same statement: a 30 MiB label or 200,000
        labels from the server, the archive with a 20 MiB label, or a 10 MB argument."""
        r = self.rng
        s.pre = [f"SET memory_limit = '{r.choice(['8MB', '20MB', '50MB', '100MB'])}'"]
        if s.func in ("prom_metrics", "prom_partitions"):
            s.named = [(n, v) for n, v in s.named if n != "data_dir"] + [("data_dir", Frag("'@BIGDATA@'"))]
        elif s.func in ("prom_collect", "prom_compact"):
            s.named = [(n, v) for n, v in s.named if n != "config"] + [("config", Frag("'@CFG_COLLECT_HUGE@'"))]
        else:
            mode = r.choice(["hugelabel", "manylabels", "bigmatrix", "hugelabel"])
            s.named = [(n, v) for n, v in s.named if n not in ("url", "config")] + [
                ("config", Frag("'@CFG_LIVE@'")), ("url", Frag(f"'http://127.0.0.1:@PORT@/m/{mode}'"))]
        if r.random() < 0.3:
            s.named.append((r.choice([n for n, _ in s.named]), Frag(f"repeat('x', {HUGE_N})")))

    def add_secret(self, s: Stmt):
        """A secret-bearing parameter and a bad one beside it: the error must not carry the secret."""
        r = self.rng
        sec = self.secret()
        s.secrets.append(sec)
        lit = f"'{sec}'"
        prepared = r.random() < 0.2
        val = Frag("?", [sec]) if prepared else Frag(lit)
        if s.func in ("prom_metrics", "prom_partitions"):
            s.named.append((r.choice(["s3_secret_access_key", "s3_session_token"]), val))
            if r.random() < 0.7:
                s.named.append(("s3_access_key_id", Frag("'AKIAFUZZ'")))
            if r.random() < 0.5:
                s.named.append(("s3_endpoint", Frag(r.choice(S3_ENDPOINTS))))
            if r.random() < 0.5:
                s.named.append(("data_dir", Frag("'s3://bucket/prefix'")))
        elif s.func.startswith("prom_") and s.func not in ("prom_collect", "prom_compact"):
            kind = r.choice(["password", "bearer_token", "url"])
            if kind == "url":
                s.named = [(n, v) for n, v in s.named if n not in ("url", "config")]
                s.named.append(("url", Frag(f"'http://fuzzuser:{sec}@127.0.0.1:@{r.choice(['PORT', 'CLOSED'])}@'")
                                if not prepared else Frag("?", [f"http://fuzzuser:{sec}@127.0.0.1:@CLOSED@"])))
                # Basic auth of it: the characters after the 12 that encode "fuzzuser:" are the secret
                s.secrets.append(base64.b64encode(f"fuzzuser:{sec}".encode()).decode()[12:])
            else:
                s.named.append((kind, val))
        else:
            s.named.append(("config", Frag("'@CFG_SECRET@'")))
        s.secrets.extend(["@SECRET_CFG@"])
        # ... and something wrong beside it
        bad = r.choice([("date", Frag("'2024-02-30'")), ("proxy", Frag("123")), ("bogus", Frag("1")),
                        ("at", Frag("'soon'")), ("timeout", Frag("'fast'")), ("max_response_bytes", Frag("'lots'")),
                        ("date_range", Frag("'yesterday'")), ("s3_url_style", Frag("'sideways'")),
                        ("max_samples", Frag("-1")), ("month", Frag("'2024-13'")), ("last_days", Frag("'x'"))])
        if r.random() < 0.85:
            s.named.append(bad)

    def selection(self, allow_source: bool) -> list:
        r = self.rng
        named = []
        if r.random() < 0.85:
            named.append(("data_dir", self.pick(data_dirs())))
        for name, plaus, p in [("date", DAYS, 0.2), ("start_date", DAYS, 0.2), ("end_date", DAYS, 0.2),
                               ("date_range", ["['2024-03-01', '2024-03-02']", "2", "'2024-03-01'", "[DATE '2024-01-31', DATE '2024-03-01']",
                                               "[NULL, '2024-03-01']", "['2024-03-01', NULL]", "[NULL]", "7",
                                               "-1", "0", "['2024-03-02', '2024-03-01']", "[]"], 0.3),
                               ("last_days", ["1", "3", "0", "-1", "100000", "9223372036854775807", "'3'"], 0.1),
                               ("proxy", PROXIES, 0.35), ("metric", METRICS, 0.25),
                               ("s3_endpoint", None, 0.05),
                               ("s3_region", ["'us-east-1'", "''", "'💥'"], 0.04),
                               ("s3_access_key_id", ["'AKIAFUZZ'", "''"], 0.04),
                               ("s3_url_style", ["'path'", "'sideways'", "'PATH'"], 0.04),
                               ("s3_use_ssl", ["false", "true", "'maybe'"], 0.04),
                               ("source", ["true", "false", "'yes'"], 0.15 if allow_source else 0.01),
                               ("labels", LABEL_COLUMNS, 0.15 if allow_source else 0.01)]:
            if r.random() < p:
                # S3 endpoints only on loopback, never from the zoo (a host name would leave the machine)
                named.append((name, Frag(r.choice(S3_ENDPOINTS)) if plaus is None else self.pick(plaus)))
        return named

    def prom_metrics(self):
        r = self.rng
        pos = []
        if r.random() < 0.15:
            pos = [self.pick(["['2024-03-01', '2024-03-02']", "2", "'2024-03-01'", "[NULL, '2024-03-01']"])]
            if r.random() < 0.5:
                pos.append(self.pick(PROXIES))
        return Stmt("prom_metrics", pos, self.selection(True))

    def prom_partitions(self):
        return Stmt("prom_partitions", [], self.selection(False))

    def prom_collect(self):
        r = self.rng
        named = [("config", self.pick(configs_collect()))] if r.random() < 0.9 else []
        for name, plaus, p in [("date", ["'2024-03-01'", "DATE '2024-03-02'", "'2024-02-29'"], 0.5),
                               ("start_date", ["'2024-03-01'", "DATE '2024-02-28'"], 0.25),
                               ("end_date", ["'2024-03-02'", "'2024-03-01'"], 0.25),
                               ("replace", ["true", "false", "'x'"], 0.2)]:
            if r.random() < p:
                named.append((name, self.pick(plaus)))
        return Stmt("prom_collect", [], named)

    def prom_compact(self):
        r = self.rng
        named = [("config", self.pick(["'@CFG_COMPACT@'"] * 3 + configs_collect()))] if r.random() < 0.9 else []
        for name, plaus, p in [("month", MONTHS, 0.6), ("replace", ["true", "false", "'x'"], 0.2)]:
            if r.random() < p:
                named.append((name, self.pick(plaus)))
        if r.random() < 0.3:
            # never from the zoo: a compaction that succeeds waits this long before removing the
            # daily files, by design (the configs say 0s)
            named.append(("remove_daily_after", Frag(r.choice(REMOVE_AFTER))))
        return Stmt("prom_compact", [], named)

    def connection(self, samples: bool) -> list:
        r = self.rng
        named = []
        how = r.random()
        if how < 0.7:
            named.append(("config", Frag("'@CFG_LIVE@'")))  # retries: 0
            named.append(("url", self.pick(live_urls(r))))
        elif how < 0.85:
            named.append(("config", self.pick(configs_live())))
            if r.random() < 0.3:
                named.append(("url", self.pick(live_urls(r))))
        else:
            named.append(("url", self.pick(live_urls(r))))
            named.append(("timeout", Frag("'300ms'")))  # bounds retries against a closed port
        for name, plaus, p in [("username", ["'u'", "''", "'💥'", "repeat('u', 100000)"], 0.05),
                               ("password", ["'p'", "''"], 0.03), ("bearer_token", ["'t'", "''"], 0.03),
                               ("timeout", DURATIONS, 0.1), ("attempt_timeout", DURATIONS, 0.1),
                               ("max_response_bytes", SIZES, 0.15)] + ([("max_samples", SIZES, 0.15)] if samples else []):
            if r.random() < p and name not in [n for n, _ in named]:
                named.append((name, self.pick(plaus)))
        return named

    def prom_query(self):
        r = self.rng
        named = self.connection(True)
        if r.random() < 0.5:
            named.append((r.choice(["at", "\"time\""]), self.pick(TIMES)))
        if r.random() < 0.05:
            named.append(("at", self.pick(TIMES)))
        if r.random() < 0.2:
            named.append(("labels", self.pick(LABEL_COLUMNS)))
        pos = [self.query_arg()] if r.random() < 0.97 else []
        return Stmt("prom_query", pos, named)

    def query_arg(self) -> Frag:
        """An expression, or (a quarter of the time) a list of them."""
        return self.pick(PROMQL_LISTS) if self.rng.random() < 0.25 else self.pick(PROMQL)

    def prom_query_range(self):
        r = self.rng
        pos = [self.query_arg(), self.pick(TIMES), self.pick(TIMES), self.pick(STEPS)]
        if r.random() < 0.5:  # a plausible window
            pos[1], pos[2] = Frag("TIMESTAMPTZ '2024-03-01 00:00:00+00'"), Frag(r.choice(
                ["TIMESTAMPTZ '2024-03-01 01:00:00+00'", "TIMESTAMPTZ '2024-03-02 00:00:00+00'", "'infinity'::TIMESTAMPTZ"]))
        if r.random() < 0.04:
            pos = pos[:r.randrange(4)]
        named = self.connection(True)
        if r.random() < 0.2:
            named.append(("labels", self.pick(LABEL_COLUMNS)))
        return Stmt("prom_query_range", pos, named)

    def prom_labels(self):
        pos = [self.zoo()] if self.rng.random() < 0.04 else []
        return Stmt("prom_labels", pos, self.connection(False))

    def prom_label_values(self):
        pos = [self.pick(LABELS)] if self.rng.random() < 0.97 else []
        return Stmt("prom_label_values", pos, self.connection(False))

    def prom_series(self):
        pos = [self.pick(MATCHES)] if self.rng.random() < 0.97 else []
        named = self.connection(False)
        if self.rng.random() < 0.25:
            named.append(("labels", self.pick(LABEL_COLUMNS)))
        return Stmt("prom_series", pos, named)

    def prom_metadata(self):
        r = self.rng
        named = self.connection(False)
        if r.random() < 0.4:
            named.append(("metric", self.pick(["'up'", "'prometheus_http_requests_total'", "''", "'a&b=c'", "'💥'",
                                               f"repeat('m', {HUGE_N})", "['up']"])))
        if r.random() < 0.4:
            named.append(("\"limit\"", self.pick(["1", "3", "0", "-1", "'2'", "9223372036854775807",
                                                  "340282366920938463463374607431768211455::UHUGEINT", "1.5"])))
        pos = [self.zoo()] if r.random() < 0.04 else []
        return Stmt("prom_metadata", pos, named)

    def timestamp_ms(self):
        r = self.rng
        arg = self.pick(["0", "1709251200000", "-1", "9223372036854775807", "-9223372036854775808", "9223372036854775",
                         "9223372036854776", "NULL", "1709251200000::HUGEINT", "'1709251200000'"])
        wrap = r.choices(["SELECT {}", "SELECT {} FROM range(3)", "SELECT count({}) FROM range(5000)",
                          "SELECT {} FROM (VALUES (1), (NULL)) t(x)"], weights=[70, 10, 10, 10])[0]
        pos = [arg] if r.random() < 0.97 else [arg, self.zoo()]
        if r.random() < 0.1:  # a column as the argument, NULLs and extremes among its rows
            pos = [Frag("i * 922337203685477 - 1")]
            wrap = "SELECT {} FROM range(-20000, 20000) t(i)"
        return Stmt("timestamp_ms", pos, [], wrap=wrap, scalar=True)

    def statements(self, count: int) -> list:
        return [self.statement() for _ in range(count)]


def generate(seed: int, count: int) -> list:
    return Gen(seed).statements(count)


# ---------------------------------------------------------------------------------------
# The environment: an archive, configs, odd files and the HTTP server, all on loopback/tmp

SECRET_IN_CONFIG = "ZqC4fG8nS2xTq9Wm6Jr3Hd7y"


class OddServer:
    """A Prometheus-API lookalike on 127.0.0.1 whose answers are odd on purpose. The mode is
    the path prefix: http://127.0.0.1:PORT/m/<mode>/api/v1/<endpoint>. Any other path (an S3
    request) gets a small XML error or garbage."""

    def __init__(self, closed_port: int):
        self.closed_port = closed_port
        self._cache = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                server.handle(self)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(min(n, 1 << 20))
                server.handle(self)

            do_PUT = do_POST
            do_HEAD = do_GET
            do_DELETE = do_GET

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()

    def body(self, mode: str, endpoint: str) -> tuple:
        """(status, headers, body bytes) for a mode and endpoint, cached."""
        key = (mode, endpoint)
        if key not in self._cache:
            self._cache[key] = self._make(mode, endpoint)
        return self._cache[key]

    def _make(self, mode: str, endpoint: str):
        j = lambda o: json.dumps(o).encode()  # noqa: E731
        ok = lambda data: (200, {}, j({"status": "success", "data": data}))  # noqa: E731
        t = 1709251200
        labels = endpoint == "labels"
        values = endpoint.startswith("label/")
        series = endpoint == "series"
        rng = endpoint == "query_range"
        meta = endpoint == "metadata"

        def vec(metric, v="1", ts=t):
            if labels or values:
                return ["job", "instance"]
            if meta:  # the labels (however odd) as the help text
                return {"up": [{"type": "gauge", "help": json.dumps(metric), "unit": ""}],
                        "x_total": [{"type": "counter", "help": v, "unit": "seconds"}]}
            if series:
                return [metric]
            if rng:
                return {"resultType": "matrix", "result": [{"metric": metric, "values": [[ts, v], [ts + 60, v]]}]}
            return {"resultType": "vector", "result": [{"metric": metric, "value": [ts, v]}]}

        if mode == "ok":
            return ok(vec({"__name__": "up", "job": "x", "apiproxy": "api-proxy-1", "environment": "prod"}))
        if mode == "empty":
            return ok([] if (labels or values or series) else {} if meta else
                      {"resultType": "matrix" if rng else "vector", "result": []})
        if mode == "badjson":
            return 200, {}, b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":'
        if mode == "truncated":
            full = ok(vec({"a": "b"}))[2]
            return 200, {"Content-Length": str(len(full))}, full[: len(full) // 2]
        if mode == "shortlen":
            full = ok(vec({"a": "b"}))[2]
            return 200, {"Content-Length": "5"}, full
        if mode == "hugelabel":
            big = "L" * (30 << 20)
            if labels or values:
                return ok([big])
            return ok(vec({"__name__": "up", "big": big, "apiproxy": "api-proxy-1", "environment": "prod"}))
        if mode == "manylabels":
            if labels or values:
                return ok([f"l{i}" for i in range(200_000)])
            return ok(vec({f"l{i}": "v" * 20 for i in range(50_000)}))
        if mode == "deep":
            return 200, {}, b'{"status":"success","data":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        if mode == "oddnum":
            return 200, {}, (b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":'
                             b'[1e400,"1e400"]},{"metric":{},"value":[-1e30,"-0"]},{"metric":{},"value":[1.5e-9,"0x10"]}]}}')
        if mode == "oddts":
            return ok(vec({"a": "b"}, "1", 9.3e18) if not (labels or values or series) else vec({}))
        if mode == "nan":
            return 200, {}, (b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},'
                             b'"value":[1709251200,"NaN"]},{"metric":{"a":"c"},"value":[1709251200,"+Inf"]},'
                             b'{"metric":{"a":"d"},"value":[1709251200,"-Inf"]},{"metric":{"a":"e"},"value":[1709251200,"x"]}]}}')
        if mode == "wrongtype":
            return 200, {}, b'{"status":"success","data":{"resultType":"scalar","result":[1709251200,"1"]},"warnings":[1,2]}'
        if mode == "histogram":
            h = {"count": "1", "sum": "1", "buckets": [[0, "0", "1", "1"]]}
            if rng:
                return ok({"resultType": "matrix", "result": [{"metric": {"a": "b"}, "histograms": [[t, h]]}]})
            return ok({"resultType": "vector", "result": [{"metric": {"a": "b"}, "histogram": [t, h]}]})
        if mode == "nonutf8":
            return 200, {}, b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"\xff\xfe"},"value":[1709251200,"1"]}]}}'
        if mode == "status_error":
            return 200, {}, j({"status": "error", "errorType": "bad_data", "error": "x" * 100_000})
        if mode == "http400":
            return 400, {}, j({"status": "error", "errorType": "bad_data", "error": "parse error"})
        if mode == "http404":
            return 404, {"Content-Type": "text/html"}, b"<html>" + b"nope " * 10000 + b"</html>"
        if mode == "http422":
            return 422, {}, j({"status": "error", "errorType": "execution", "error": "\u0000\uffff"})
        if mode == "redirect":
            return 302, {"Location": f"http://127.0.0.1:{self.closed_port}/api/v1/{endpoint}"}, b""
        if mode == "redirect_loop":
            return 302, {"Location": f"/m/redirect_loop/api/v1/{endpoint}"}, b""
        if mode == "emptybody":
            return 200, {}, b""
        if mode == "bigmatrix":
            pts = [[t + i, str(i)] for i in range(200_000)]
            if rng:
                return ok({"resultType": "matrix", "result": [{"metric": {"a": "b"}, "values": pts}]})
            return ok(vec({"a": "b"}))
        if mode == "dup":
            return 200, {}, (b'{"status":"success","status":"error","data":{"resultType":"vector","result":'
                             b'[{"metric":{"a":"b","a":"c"},"value":[1709251200,"1"]}]}}')
        if mode == "nullfields":
            return 200, {}, b'{"status":"success","data":{"resultType":null,"result":[{"metric":null,"value":null}]}}'
        if mode == "gzipgarbage":
            return 200, {"Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage" * 100
        return 404, {}, b"unknown mode"

    def handle(self, h):
        path = h.path.split("?", 1)[0]
        m = re.match(r"^/m/([a-z0-9_]+)/api/v1/(.*)$", path)
        if m:
            status, headers, body = self.body(m.group(1), m.group(2))
        else:  # an S3 request, or a URL without a mode
            status, headers, body = 403, {"Content-Type": "application/xml"}, (
                b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>no</Message></Error>")
        try:
            h.send_response(status)
            if "Content-Length" not in headers:
                h.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                h.send_header(k, v)
            if "Content-Type" not in headers:
                h.send_header("Content-Type", "application/json")
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(body)
            if "Content-Length" in headers and int(headers["Content-Length"]) != len(body):
                h.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            pass


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


ARCHIVE_SQL = r"""
import duckdb, sys, os
root = sys.argv[1]
con = duckdb.connect()
def enc(p):
    out = []
    for i, b in enumerate(p.encode()):
        c = chr(b)
        out.append(c if c.isascii() and (c.isalnum() or c in '-_' or (c == '.' and i > 0)) else '%%%02X' % b)
    return ''.join(out)
for name, days, big in [('data', ['2024-01-30', '2024-01-31', '2024-02-01', '2024-03-01', '2024-03-02'], 0), ('bigdata', ['2024-03-01'], 20 << 20)]:
    for day in days:
        for proxy in ['api-proxy-1', 'api-proxy-2', 'we"ird/proxy']:
            d = os.path.join(root, name, day)
            os.makedirs(d, exist_ok=True)
            q = proxy.replace("'", "''")
            con.execute(f'''COPY (SELECT (epoch_ms(DATE '{day}') + 86400000 - i * 3600000)::BIGINT AS timestamp,
                  m AS metric_name, (i * 1.5)::DOUBLE AS value, '{q}' AS api_proxy, DATE '{day}' AS date,
                  MAP {{'apiproxy': '{q}', 'environment': CASE WHEN i % 2 = 0 THEN 'prod' ELSE 'test' END,
                       'big': repeat('B', {big})}} AS labels
                FROM range({1 if big else 3}) r(i), (VALUES ('request_count'), ('error_count'), ('latency_ms')) v(m))
                TO '{os.path.join(d, enc(proxy) + ".parquet")}' (FORMAT parquet, COMPRESSION zstd)''')
print('ok')
"""


class FuzzEnv:
    """Files and servers the statements point at, under one tmp folder; `subst` fills a
    statement's placeholders."""

    def __init__(self, root: Path, builder_python: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.closed = closed_port()
        self.server = OddServer(self.closed).__enter__()
        r = subprocess.run([str(builder_python), "-c", ARCHIVE_SQL, str(root)], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"building the fuzz archive failed:\n{r.stderr}")
        bad = root / "baddata" / "2024-03-01"
        bad.mkdir(parents=True)
        (bad / "api-proxy-1.parquet").write_bytes(b"PAR1" + os.urandom(0) + b"garbage" * 100 + b"PAR1")
        (bad / "empty.parquet").write_bytes(b"")
        (bad / "folder.parquet").mkdir()
        (root / "baddata" / "not-a-day").mkdir()
        (root / "baddata" / "2024-13-45").mkdir()
        (root / "empty").mkdir()
        (root / "garbage").write_bytes(bytes(range(256)) * 64)
        os.symlink(root / "data", root / "linkdata")
        self.fifos = []
        self.fifo = root / "fifo"
        os.mkfifo(self.fifo)
        self._stop = False
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()
        port = self.server.port
        out = root / "out"
        metrics = [{"name": "request_count", "query": 'sum(increase(x{apiproxy="%s"}[1d])) by (apiproxy, environment)',
                    "labels": ["apiproxy", "environment"]}]

        def cfg(name, url, storage=None, prom=None):
            p = {"url": url, "timeout": "3s", "retries": 0, "metrics": metrics}
            p.update(prom or {})
            s = {"outputDir": str(out), "compaction": {"removeDailyAfter": "0s"}}
            s.update(storage or {})
            path = root / f"{name}.yaml"
            path.write_text(json.dumps({"apiProxies": ["api-proxy-1", 'we"ird/proxy'], "prometheus": p, "storage": s}))
            return path

        self.places = {
            "@CFG_LIVE@": cfg("live", f"http://127.0.0.1:{port}/m/ok"),
            "@CFG_COLLECT_OK@": cfg("collect_ok", f"http://127.0.0.1:{port}/m/ok"),
            "@CFG_COLLECT_HUGE@": cfg("collect_huge", f"http://127.0.0.1:{port}/m/hugelabel"),
            "@CFG_COLLECT_BADJSON@": cfg("collect_badjson", f"http://127.0.0.1:{port}/m/badjson"),
            "@CFG_COLLECT_ODD@": cfg("collect_odd", f"http://127.0.0.1:{port}/m/nan"),
            "@CFG_COLLECT_CLOSED@": cfg("collect_closed", f"http://127.0.0.1:{self.closed}"),
            "@CFG_COMPACT@": cfg("compact", f"http://127.0.0.1:{self.closed}",
                                 storage={"outputDir": str(root / "data"), "compaction": {"removeDailyAfter": "0s"}}),
            "@CFG_SECRET@": cfg("secret", f"http://fuzzuser:{SECRET_IN_CONFIG}@127.0.0.1:{self.closed}",
                                prom={"password": SECRET_IN_CONFIG, "bogusField": SECRET_IN_CONFIG,
                                      "headers": {"Authorization": f"Bearer {SECRET_IN_CONFIG}"}}),
            "@CFG_CAZERO@": cfg("cazero", f"https://127.0.0.1:{self.closed}", prom={"tls": {"caFile": "/dev/zero"}}),
            "@CFG_PWFIFO@": cfg("pwfifo", f"http://127.0.0.1:{self.closed}", prom={"passwordFile": str(self.fifo)}),
            "@CFG_BAD@": root / "bad.yaml",
            "@DATA@": root / "data", "@BIGDATA@": root / "bigdata", "@BADDATA@": root / "baddata",
            "@LINKDATA@": root / "linkdata", "@EMPTY@": root / "empty", "@GARBAGE@": root / "garbage",
            "@FIFO@": self.fifo, "@MISSING@": root / "missing" / "nowhere", "@TMP@": root,
            "@PORT@": port, "@CLOSED@": self.closed, "@SECRET_CFG@": SECRET_IN_CONFIG,
        }
        (root / "bad.yaml").write_text("prometheus: [\n  url: {{ " + SECRET_IN_CONFIG + "\n\t: -")

    def _feed(self):
        """Whoever opens the FIFO to read gets 64 KiB of junk, then its end."""
        while not self._stop:
            try:
                fd = os.open(self.fifo, os.O_WRONLY)
            except OSError:
                return
            try:
                if not self._stop:
                    os.write(fd, b"prometheus: {url: [" * 3000)
            except OSError:
                pass
            finally:
                os.close(fd)
            time.sleep(0.01)

    def subst(self, text: str) -> str:
        for k, v in self.places.items():
            text = text.replace(k, str(v))
        return text

    def subst_json(self, o):
        if isinstance(o, str):
            return self.subst(o)
        if isinstance(o, list):
            return [self.subst_json(x) for x in o]
        if isinstance(o, dict):
            return {k: self.subst_json(v) for k, v in o.items()}
        return o

    def close(self):
        self._stop = True
        try:  # unblock the feeder
            fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        self.server.__exit__()


# ---------------------------------------------------------------------------------------
# The child: one DuckDB host running a batch

CHILD = r"""
import datetime, decimal, json, os, sys, time, uuid
import duckdb
batch_file, progress_file, results_file, build, start = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
batch = json.load(open(batch_file))
selftest = os.environ.get('PROMDUCK_FUZZ_SELFTEST') == '1'

def dec(v):
    if isinstance(v, list):
        return [dec(x) for x in v]
    if isinstance(v, dict):
        (tag, x), = v.items()
        if tag == '$dict':
            return {k: dec(y) for k, y in x}
        if tag == '$huge':
            return x[0] * x[1]
        if tag == '$float':
            return float(x)
        if tag == '$int':
            return int(x)
        if tag == '$bytes':
            return bytes.fromhex(x)
        if tag == '$date':
            return datetime.date.fromisoformat(x)
        if tag == '$datetime' or tag == '$datetimetz':
            return datetime.datetime.fromisoformat(x)
        if tag == '$timedelta':
            return datetime.timedelta(seconds=x)
        if tag == '$decimal':
            return decimal.Decimal(x)
        if tag == '$uuid':
            return uuid.UUID(x)
        raise ValueError(tag)
    return v

def connect():
    con = duckdb.connect(config={'allow_unsigned_extensions': 'true'})
    platform = con.execute('PRAGMA platform').fetchone()[0]
    ext = build + '/promduck.duckdb_extension' if platform == 'linux_amd64' else build + '/' + platform + '/promduck.duckdb_extension'
    con.execute("LOAD '" + ext + "'")
    return con

def leaks(text, secrets):
    found = []
    for s in secrets:
        if len(s) < 10:
            continue
        if any(s[i:i + 10] in text for i in range(len(s) - 9)):
            found.append(s)
    return found

con = connect()
progress = os.open(progress_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
results = open(results_file, 'a')
for i in range(start, len(batch)):
    st = batch[i]
    os.write(progress, (str(i) + '\n').encode())
    if selftest and '/*fuzz-selftest-abort*/' in st['sql']:
        os.abort()  # the runner's own test: a host that dies here
    rec = {'i': i}
    t0 = time.monotonic()
    for p in st['pre']:
        try:
            con.execute(p)
        except Exception:
            pass
    try:
        if st['params'] is not None:
            rows = con.execute(st['sql'], dec(st['params'])).fetchall()
        else:
            rows = con.execute(st['sql']).fetchall()
        rec['ok'] = len(rows)
        text = ''
    except BaseException as e:
        text = type(e).__name__ + ': ' + str(e)
        rec['error'] = text[:300]
        del e
    lk = leaks(text, st['secrets'])
    if lk:
        rec['leak'] = lk
        rec['error_full'] = text[:4000]
    if 'panicked' in text:
        rec['panic'] = text[:2000]
    if 'invalidated' in text or text.startswith('FatalException') or 'FATAL Error' in text or 'INTERNAL Error' in text:
        rec['fatal'] = text[:2000]
        try:
            con.close()
        except Exception:
            pass
        con = connect()
    for p in st['pre']:
        for q in p.split(';'):
            w = q.split()
            if len(w) < 2 or w[0].upper() != 'SET':
                continue
            try:  # SET x = ... -> RESET x; SET VARIABLE v = ... -> RESET VARIABLE v
                con.execute('RESET ' + (w[1] + ' ' + w[2] if w[1].upper() == 'VARIABLE' else w[1]))
            except Exception:
                pass
    rec['s'] = round(time.monotonic() - t0, 3)
    results.write(json.dumps(rec) + '\n')
    results.flush()
os.write(progress, b'done\n')
"""


@dataclass
class Finding:
    kind: str  # death, leak, fatal, stall; panic and echo (reported, not failing: see DUCKDB_OWN_ERRORS)
    host: str
    seed: int
    index: int
    statement: str
    detail: str
    alone: bool | None = None
    minimal: str | None = None
    func: str = ""
    #: when it does not reproduce alone: the latest earlier statement it needs (bisected),
    #: its text, and whether that one and this one alone reproduce it
    needs: tuple | None = None

    def signature(self) -> str:
        return signature_of(self.kind, self.detail)

    def key(self) -> str:
        """The finding's class: a leak by the error that carried the secret and the parameter
        that held it; anything else by function, the host's last words, and the parameters
        (and SETs) of the shrunk statement."""
        if self.kind == "leak":
            return f"leak | {re.sub(r'prom_[a-z_]+', 'F', self.signature())} | {secret_param(self.minimal or self.statement)}"
        text = self.minimal or self.statement
        names = " ".join(sorted(set(re.findall(r"([\w\"]+) :=", text))))
        sets = " ".join(sorted(set(re.findall(r"SET (\w+)", text))))
        shrunk = "" if self.minimal else "(not shrunk) "
        after = ""
        if self.needs:
            m = re.search(r"\b(prom_\w+|timestamp_ms)\(", self.needs[1])
            pre = " ".join(sorted(set(re.findall(r"SET (\w+)", self.needs[1]))))
            after = f" | after {m.group(1) if m else '?'}{' with SET ' + pre if pre else ''}"
        return (f"{self.kind} | {self.func} | {self.signature()} | {shrunk}params: {names or '-'}"
                f"{' | SET ' + sets if sets else ''}{after}")

    def describe(self) -> str:
        alone = {True: "yes", False: "no (needs the statements before it)", None: "n/a"}[self.alone]
        return (f"- kind: {self.kind}; host: DuckDB {self.host}; seed {self.seed}, statement #{self.index}\n"
                f"  - statement: `{self.statement}`\n"
                + (f"  - minimal: `{self.minimal}`\n" if self.minimal and self.minimal != self.statement else "")
                + f"  - reproduces alone: {alone}\n"
                + (f"  - needs statement #{self.needs[0]} before it: `{self.needs[1]}`; those two alone in a fresh host (each SET is RESET after its statement): "
                   f"{'die the same way' if self.needs[2] else 'do not (more of the batch is needed)'}\n"
                   if self.needs else "")
                + f"  - tail: {' | '.join(self.detail.strip().splitlines()[-4:])[:1500]}\n")


#: shrunk statements, shared by the runners: (host, kind, function, signature, parts, text)
_KNOWN = []
_KNOWN_LOCK = threading.Lock()


def _parts(st: Stmt) -> frozenset:
    """A statement's parts, comparable between statements: each positional and named argument
    (with its bound values), each SET, the wrapper."""
    out = {("pos", i, f.sql, json.dumps(enc(f.params))) for i, f in enumerate(st.pos)}
    out |= {("named", n, f.sql, json.dumps(enc(f.params))) for n, f in st.named}
    out |= {("pre", p) for p in st.pre}
    out |= {("macro", st.macro)} if st.macro else set()
    if st.wrap != "SELECT * FROM {}":
        out.add(("wrap", st.wrap))
    return frozenset(out)


def _limit_memory():
    import resource
    resource.setrlimit(resource.RLIMIT_DATA, (CHILD_MEMORY, CHILD_MEMORY))
    os.setsid()


def _describe_rc(rc: int, cli: bool = False) -> str:
    if cli and rc > 128:  # the duckdb-cli launcher (Python) exits with 256 - signal of its binary
        try:
            return f"killed by {signal.Signals(256 - rc).name} (the duckdb-cli launcher's exit status {rc})"
        except ValueError:
            pass
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


class Runner:
    def __init__(self, env: FuzzEnv, work: Path, build: Path = BUILD, log=None, on_finding=None):
        self.env, self.work, self.build = env, work, build
        self.on_finding = on_finding
        self._emitted = set()
        self.log = log or (lambda *a: None)
        self.minimized = {}  # (func, detail signature, param names) -> minimal text
        self._shrunk = set()
        self._bisected = set()
        work.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def _paths(self):
        self._n += 1
        d = self.work / f"run{self._n}"
        d.mkdir()
        return d

    # -- Python hosts
    def _child(self, host: str, batch: list, start: int = 0):
        """Runs batch[start:] in one child until it ends or dies. Returns (rc, last index
        started, results, stderr tail, stalled)."""
        d = self._paths()
        (d / "batch.json").write_text(json.dumps(batch))
        progress, results = d / "progress", d / "results.jsonl"
        progress.write_text("")
        errf = open(d / "stderr", "wb")
        p = subprocess.Popen([str(host_exe(host)), "-c", CHILD, str(d / "batch.json"), str(progress), str(results),
                              str(self.build), str(start)], cwd=self.env.root, stdout=subprocess.DEVNULL, stderr=errf,
                             env=child_env(self.env.server.port), preexec_fn=_limit_memory)
        last, since, stalled = None, time.monotonic(), False
        while p.poll() is None:
            time.sleep(0.2)
            cur = _last_line(progress)
            if cur != last:
                last, since = cur, time.monotonic()
            elif time.monotonic() - since > STALL_SECONDS:
                stalled = True
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        errf.close()
        tail = (d / "stderr").read_bytes()[-3000:].decode(errors="replace")
        recs = []
        if results.exists():
            for ln in results.read_text().splitlines():
                try:
                    recs.append(json.loads(ln))
                except ValueError:
                    pass
        lastline = _last_line(progress)
        idx = int(lastline) if lastline and lastline.isdigit() else None
        done = lastline == "done"
        return p.returncode, (None if done else idx), recs, tail, stalled

    def _cli_one(self, st: dict):
        ext = self.build / "promduck.duckdb_extension"
        sql = f"LOAD '{ext}';\n" + "".join(p + ";\n" for p in st["pre"]) + st["sql"] + ";"
        p = subprocess.Popen([str(CLI), "-unsigned", "-csv", "-c", sql], cwd=self.env.root, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=child_env(self.env.server.port), preexec_fn=_limit_memory)
        try:
            _, err = p.communicate(timeout=STALL_SECONDS)
            stalled = False
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
            stalled = True
        return p.returncode, err.decode(errors="replace"), stalled

    def outcome(self, host: str, st: dict) -> tuple:
        """(kind, signature) of one statement alone in a fresh host: kind is death, stall,
        leak, fatal or None (a survivor)."""
        if host == "cli":
            rc, err, stalled = self._cli_one(st)
            if stalled:
                return "stall", ""
            if rc < 0 or rc > 1:
                return "death", signature_of("death", f"{_describe_rc(rc, True)}\n{err[-2000:]}")
            if _leaks(err, st["secrets"]):
                return "leak", signature_of("leak", err)
            if "panicked" in err:
                return "panic", signature_of("panic", err)
            return None, ""
        rc, idx, recs, tail, stalled = self._child(host, [st])
        if stalled:
            return "stall", ""
        if rc != 0:
            return "death", signature_of("death", f"{_describe_rc(rc)}\n{tail}")
        for r in recs:
            if "leak" in r:
                return "leak", signature_of("leak", r["error_full"])
            if "fatal" in r:
                return "fatal", signature_of("fatal", r["fatal"])
            if "panic" in r:
                return "panic", signature_of("panic", r["panic"])
        return None, ""

    def _minimize(self, host: str, stmt: Stmt, kind: str, sig: str) -> str:
        """The statement with every parameter, SET and wrapper dropped that can be dropped
        while it still ends the same way."""
        key = (host, stmt.func, kind, sig, tuple(sorted(n for n, _ in stmt.named)), len(stmt.pos), bool(stmt.pre))
        if key in self.minimized:
            return self.minimized[key]
        cur = Stmt(stmt.func, list(stmt.pos), list(stmt.named), stmt.wrap, list(stmt.pre), list(stmt.secrets), stmt.scalar,
                   stmt.macro)

        def still(c):
            return self.outcome(host, self.env.subst_json(c.to_json())) == (kind, sig)

        for attr in ("named", "pre"):
            i = 0
            while i < len(getattr(cur, attr)):
                trial = Stmt(cur.func, list(cur.pos), list(cur.named), cur.wrap, list(cur.pre), cur.secrets, cur.scalar,
                             cur.macro)
                getattr(trial, attr).pop(i)
                if still(trial):
                    cur = trial
                else:
                    i += 1
        if cur.macro:
            trial = Stmt(cur.func, cur.pos, cur.named, cur.wrap, cur.pre, cur.secrets, cur.scalar, None)
            if still(trial):
                cur = trial
        if cur.wrap != "SELECT * FROM {}" and not cur.scalar:
            trial = Stmt(cur.func, cur.pos, cur.named, "SELECT * FROM {}", cur.pre, cur.secrets, False, cur.macro)
            if still(trial):
                cur = trial
        self.minimized[key] = cur.text()
        with _KNOWN_LOCK:
            _KNOWN.append((host, kind, stmt.func, sig, _parts(cur), cur.text()))
        return self.minimized[key]

    def _shrink(self, f: "Finding", host: str, stmt: Stmt, minimize: bool):
        """Confirms a finding alone in a fresh host and shrinks it (once per class and host)."""
        if not minimize:
            return
        kind, sig = self.outcome(host, self.env.subst_json(stmt.to_json()))
        f.alone = kind == f.kind
        if not f.alone:
            return
        # a statement that holds every part of a known shrunk one, dying the same way: that one
        mine = _parts(stmt)
        with _KNOWN_LOCK:
            known = [k for k in _KNOWN if k[:4] == (host, kind, stmt.func, sig) and k[4] <= mine]
        if known:
            f.minimal = known[0][5]
            return
        key = (host, f.kind, f.func, sig, tuple(sorted({n for n, _ in stmt.named})))
        if key not in self._shrunk and len(self._shrunk) < MAX_SHRINKS:
            self._shrunk.add(key)
            f.minimal = self._minimize(host, stmt, kind, sig)

    def run(self, host: str, stmts: list, seed: int, minimize: bool = True) -> tuple:
        """Runs the statements in a host; returns (findings, statements run)."""
        batch = [self.env.subst_json(s.to_json()) for s in stmts]
        findings = []
        if host == "cli":
            return self._run_cli(batch, stmts, seed, minimize)
        start = 0
        while start < len(batch):
            self._emit(findings)
            rc, idx, recs, tail, stalled = self._child(host, batch, start)
            findings += self._records(host, recs, stmts, seed, minimize)
            if idx is None and rc == 0:
                break
            if idx is None:  # died before the first statement (LOAD) or after the last
                findings.append(Finding("death", host, seed, -1, "(LOAD or teardown)", f"{_describe_rc(rc)}\n{tail}"))
                break
            kind = "stall" if stalled else "death"
            detail = f"{_describe_rc(rc)}" + (f" (no progress for {STALL_SECONDS:.0f} s)" if stalled else "") + f"\n{tail}"
            f = Finding(kind, host, seed, idx, stmts[idx].text(), detail, func=stmts[idx].func)
            if not stalled:
                self._shrink(f, host, stmts[idx], minimize)
                if f.alone is False and minimize:
                    f.needs = self._bisect(host, batch, stmts, start, idx)
            self.log(f"[{host}] seed {seed} #{idx}: {kind}: {f.signature()}")
            findings.append(f)
            start = idx + 1
        self._emit(findings)
        return findings, len(batch)

    def _emit(self, findings: list):
        """Hands the findings not yet handed to on_finding (the findings file, at once)."""
        new = [f for f in findings if id(f) not in self._emitted]
        self._emitted.update(id(f) for f in new)
        if new and self.on_finding:
            self.on_finding(new)

    def _run_cli(self, batch, stmts, seed, minimize):
        findings = []
        n = 0
        for i, st in enumerate(batch):
            self._emit(findings)
            if st["params"] is not None:
                continue  # the CLI has no prepared parameters
            n += 1
            rc, err, stalled = self._cli_one(st)
            lk = _leaks(err, st["secrets"])
            if lk:
                f = Finding(_leak_kind(err), "cli", seed, i, stmts[i].text(), f"secret {lk[0]!r} in: {err[:1500]}",
                            func=stmts[i].func)
                self._shrink(f, "cli", stmts[i], minimize)
                findings.append(f)
            if "panicked" in err:
                f = Finding("panic", "cli", seed, i, stmts[i].text(), err[-2000:], func=stmts[i].func)
                self._shrink(f, "cli", stmts[i], minimize)
                findings.append(f)
            if "FATAL Error" in err or "INTERNAL Error" in err or "invalidated" in err:
                f = Finding("fatal", "cli", seed, i, stmts[i].text(), err[-2000:], func=stmts[i].func)
                findings.append(f)
            if rc < 0 or rc > 1 or stalled:
                detail = f"{_describe_rc(rc, True)}" + (" (stalled)" if stalled else "") + f"\n{err[-2000:]}"
                f = Finding("stall" if stalled else "death", "cli", seed, i, stmts[i].text(), detail,
                            alone=True, func=stmts[i].func)
                if not stalled:
                    self._shrink(f, "cli", stmts[i], minimize)
                self.log(f"[cli] seed {seed} #{i}: {f.kind}: {f.signature()}")
                findings.append(f)
        self._emit(findings)
        return findings, n

    def _bisect(self, host: str, batch: list, stmts: list, start: int, idx: int) -> tuple:
        """batch[start..idx] kills the host at idx, idx alone does not: the latest k such that
        batch[k..idx] still does (binary search), and whether batch[k] + batch[idx] alone do."""
        def dies_at_idx(k):
            rc, last, _, _, _ = self._child(host, batch[k:idx + 1])
            return rc != 0 and last == idx - k

        key = (host, stmts[idx].func, tuple(sorted({n for n, _ in stmts[idx].named})))
        if key in self._bisected or len(self._bisected) >= MAX_SHRINKS:
            return None
        self._bisected.add(key)
        lo, hi = start, idx  # dies from lo; not from hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if dies_at_idx(mid):
                lo = mid
            else:
                hi = mid
        rc, last, _, _, _ = self._child(host, [batch[lo], batch[idx]])
        return lo, stmts[lo].text(), rc != 0 and last == 1

    def _records(self, host, recs, stmts, seed, minimize):
        out = []
        for r in recs:
            i = r["i"]
            if "leak" in r:
                out.append(Finding(_leak_kind(r["error_full"]), host, seed, i, stmts[i].text(),
                                   f"secret {r['leak'][0]!r} in: {r['error_full']}", func=stmts[i].func))
            if "fatal" in r:
                out.append(Finding("fatal", host, seed, i, stmts[i].text(), r["fatal"],
                                   func=stmts[i].func))
            if "panic" in r:
                out.append(Finding("panic", host, seed, i, stmts[i].text(), r["panic"], func=stmts[i].func))
        for f in out:
            self._shrink(f, host, stmts[f.index], minimize)
        return out


def signature_of(kind: str, detail: str) -> str:
    """What identifies a finding's class in its text: a dying host's last words, a leaking
    error's first line (quoted values and numbers blanked)."""
    if kind == "leak":
        detail = re.sub(r"^secret '[^']*' in: ", "", detail.strip())
    lines = [ln for ln in detail.strip().splitlines() if ln.strip()]
    if kind == "leak":  # the error's line (the CLI may print a panic's message first)
        first = next((ln for ln in lines if "Error" in ln), lines[0] if lines else "")
        first = re.sub(r"^\w+Exception: ", "", first)  # Python's class name, absent in the CLI
        sig = re.sub(r"\"[^\"]*\"|'[^']*'", "…", first)
    elif kind == "death":
        sig = next((ln for ln in lines if "fatal runtime error" in ln or "memory allocation" in ln
                    or "panicked" in ln or "terminate called" in ln), lines[-1] if lines else "")
    elif kind == "panic":
        sig = next((ln for ln in lines if "callback panicked" in ln),
                   next((ln for ln in lines if "panicked" in ln), lines[0] if lines else ""))
        sig = re.sub(r"^\w+Exception: ", "", sig)
    else:
        sig = lines[-1] if lines else ""
    return re.sub(r"\d+", "N", sig)[:160]


def secret_param(text: str) -> str:
    """Which parameter carried the secret in a statement's text."""
    for name in ("s3_secret_access_key", "s3_session_token", "password", "bearer_token"):
        if re.search(rf"\b{name} := ('Zq|\?)", text):
            return name
    if re.search(r"url := ('http://fuzzuser|\?)", text):
        return "url with user:password@"
    if "@CFG_SECRET@" in text or "@CFG_BAD@" in text:
        return "config file"
    return "environment (AWS_SECRET_ACCESS_KEY)"


#: Errors DuckDB raises while binding the statement, before promduck's own bind runs, with
#: the statement's text appended (`LINE 1: …`): an unknown parameter name, no function of
#: that signature, a value that cannot be cast to a typed positional parameter, a syntax
#: error. promduck never sees them and cannot redact them; SECURITY.md says to pass secrets
#: as `?` parameters, through the environment or a config file. Reported as kind `echo`, not a
#: failure; a secret in any other error fails the test.
DUCKDB_OWN_ERRORS = ("Invalid named parameter", "No function matches", "Parser Error",
                     "Conversion Error", "Could not cast value")


def _leak_kind(text: str) -> str:
    return "echo" if any(e in text for e in DUCKDB_OWN_ERRORS) else "leak"


def _leaks(text: str, secrets: list) -> list:
    """The secrets any 10 consecutive characters of which are in the text."""
    return [s for s in secrets if len(s) >= 10 and any(s[k:k + 10] in text for k in range(len(s) - 9))]


def _last_line(p: Path):
    try:
        data = p.read_bytes()
    except OSError:
        return None
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else None


#: the S3 secret every child has in its environment: no error may show it either
ENV_SECRET = "ZqE7vKx93PqWm2Ld8Rt5Vb4h"


def child_env(port: int) -> dict:
    """The parent's environment without PROMDUCK_* and AWS_*, and S3 settings that keep every
    s3:// access on loopback (no instance-metadata lookup, no AWS host)."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("PROMDUCK_") or k.startswith("AWS_")) or k == "PROMDUCK_FUZZ_SELFTEST"}
    env.update({"RUST_BACKTRACE": "0", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "AKIAFUZZENV", "AWS_SECRET_ACCESS_KEY": ENV_SECRET,
                "AWS_EC2_METADATA_DISABLED": "true"})
    return env


# ---------------------------------------------------------------------------------------
# Findings file, merged by class across runs (others read it while fixing)

def build_id(build: Path = None) -> str:
    """Which extension a finding is about: its file's SHA-256 prefix and modification time."""
    import hashlib
    f = (build or BUILD) / "promduck.duckdb_extension"
    try:
        h = hashlib.sha256(f.read_bytes()).hexdigest()[:12]
        return f"{h} ({time.strftime('%Y-%m-%d %H:%M', time.gmtime(f.stat().st_mtime))} UTC)"
    except OSError:
        return "missing"


def record_findings(findings: list, path: Path = None) -> None:
    path = path or Path(os.environ.get("PROMDUCK_FUZZ_FINDINGS") or FINDINGS)
    if not findings:
        return
    bid = build_id()
    state_path = path.with_suffix(".json")
    lock = open(str(path) + ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        for f in findings:
            k = f.key()
            if k not in state:
                state[k] = {"text": f.describe(), "hosts": [], "funcs": [], "kind": f.kind, "func": f.func,
                            "minimal": f.minimal or f.statement, "sig": f.signature(), "first": time.strftime("%H:%M:%S")}
            elif f.minimal and "minimal: `" not in state[k]["text"]:
                state[k]["text"] = f.describe()
            if f.host not in state[k]["hosts"]:
                state[k]["hosts"].append(f.host)
            if bid not in state[k].setdefault("builds", []):
                state[k]["builds"].append(bid)
            if f.func not in state[k].setdefault("funcs", []):
                state[k]["funcs"].append(f.func)
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(state_path)
        lines = ["# promduck SQL fuzzer findings (tests/sqlfuzz.py), one entry per class\n\n",
                 "A class is: kind | function | the host's last words (a leak: the error that carried the secret) | "
                 "the parameters of the shrunk statement (a leak: the parameter that held the secret). "
                 "Placeholders: @DATA@ a valid archive (5 days, 3 proxies), @BIGDATA@ one with a 20 MiB label, "
                 "@BADDATA@ garbage Parquet, @LINKDATA@ a symlink to @DATA@, @EMPTY@ an empty folder, @GARBAGE@ a "
                 "file of bytes, @FIFO@ a FIFO fed 57 KiB of junk, @MISSING@ a missing path, @CFG_*@ configs "
                 "(retries 0; @CFG_SECRET@ holds a secret), @PORT@ the fuzzer's HTTP server on 127.0.0.1 (the "
                 "answer is chosen by the path /m/<mode>: hugelabel = a 30 MiB label, ...), @CLOSED@ a closed "
                 "port. Children run with RLIMIT_DATA = 4 GiB. Replay: `python tests/sqlfuzz.py --seed N "
                 "--count M --host H` (statement i of a seed is the same whatever M, so M > i is enough). Rewritten on each run "
                 "from " + state_path.name + ".\n"]
        for k, v in sorted(state.items(), key=lambda kv: (kv[1]["kind"], kv[1]["func"], kv[0])):
            title = k.split(" | ", 1)[1]
            lines.append(f"\n## {v['kind']}: {title[:200]}\n"
                         f"hosts: {', '.join(sorted(v['hosts']))}; functions: {', '.join(sorted(v.get('funcs', [])))}; "
                         f"extension: {', '.join(v.get('builds', []))}\n\n"
                         f"{v['text']}")
        tmp = path.with_suffix(".mdtmp")
        tmp.write_text("".join(lines))
        tmp.replace(path)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def fuzz(seeds: list, count: int, hosts: list, cli_share: float = 0.25, work: Path | None = None, log=print,
         record: bool = True, parallel: int = 2, minimize: bool = True) -> tuple:
    """Runs `count` statements per seed in every host (the CLI runs `cli_share` of them).
    Returns (findings, {host: statements run})."""
    for h in hosts:
        host_exe(h)
    tmp = Path(tempfile.mkdtemp(prefix="sqlfuzz-", dir=work))
    builder = host_exe(next((h for h in hosts if h != "cli"), "2.0")) if any(h != "cli" for h in hosts) \
        else host_python("2.0")
    findings, counts = [], {h: 0 for h in hosts}
    lock = threading.Lock()

    def on_finding(fs):
        if record:
            with lock:
                record_findings(fs)
    try:
        jobs = []
        for seed in seeds:
            stmts = generate(seed, count)
            for h in hosts:
                s = stmts
                if h == "cli":
                    s = [x for j, x in enumerate(stmts) if (j * 7919 % 100) < cli_share * 100]
                jobs.append((h, seed, s))

        def work_one(job):
            h, seed, s = job
            root = tmp / f"{h}-{seed}"
            env = FuzzEnv(root / "env", builder)
            try:
                r = Runner(env, root / "work", log=log, on_finding=on_finding)
                fs, n = r.run(h, s, seed, minimize=minimize)
            finally:
                env.close()
            with lock:
                findings.extend(fs)
                counts[h] += n
            log(f"[{h}] seed {seed}: {n} statements, {len(fs)} findings")

        threads = []
        pending = list(jobs)
        while pending or threads:
            while pending and len(threads) < parallel:
                t = threading.Thread(target=work_one, args=(pending.pop(0),))
                t.start()
                threads.append(t)
            time.sleep(0.1)
            threads = [t for t in threads if t.is_alive()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return findings, counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, action="append", help="seed (repeatable; default 1)")
    ap.add_argument("--count", type=int, default=500, help="statements per seed")
    ap.add_argument("--host", action="append",
                    help="DuckDB host: 1.2, 1.3, 1.4, 1.5, 2.0, cli, or a path to a Python with duckdb "
                         "(repeatable; default all)")
    ap.add_argument("--cli-share", type=float, default=0.25)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--print", action="store_true", help="print the statements and exit")
    ap.add_argument("--no-minimize", action="store_true")
    ap.add_argument("--no-record", action="store_true", help="do not merge findings into " + str(FINDINGS))
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the tmp folder is removed
    seeds = a.seed or [1]
    if a.print:
        for seed in seeds:
            for i, s in enumerate(generate(seed, a.count)):
                print(f"{seed}#{i}: {s.text()}")
        return 0
    hosts = a.host or list(HOSTS) + ["cli"]
    hosts = [_register_path_host(h) for h in hosts]
    try:
        for h in hosts:
            host_exe(h)
    except HostMissing as e:
        print(e, file=sys.stderr)
        return 2
    t0 = time.monotonic()
    findings, counts = fuzz(seeds, a.count, hosts, a.cli_share, parallel=a.parallel, record=not a.no_record,
                            minimize=not a.no_minimize)
    print(f"statements run: {counts} in {time.monotonic() - t0:.0f} s")
    for f in findings:
        print(f.describe())
    return 1 if any(f.kind != "panic" for f in findings) else 0


def _register_path_host(h: str) -> str:
    """`--host /path/to/python`: a Python with duckdb installed, outside the matrix."""
    if h in HOSTS or h == "cli":
        return h
    p = Path(h)
    if p.exists():
        name = f"path:{p}"
        global host_exe
        orig = host_exe

        def patched(x, _orig=orig, _name=name, _p=p):
            return _p if x == _name else _orig(x)
        host_exe = patched
        return name
    raise SystemExit(f"unknown host {h!r}: one of {', '.join(HOSTS)}, cli, or a path to a Python")


if __name__ == "__main__":
    sys.exit(main())
