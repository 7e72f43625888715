"""The SQL fuzzer (tests/sqlfuzz.py) in every DuckDB host of the matrix, with fixed seeds.

Each host runs the same generated statements (random calls of every promduck function with
values of every DuckDB type, NULLs inside lists, nested lists, maps, structs, huge strings and
numbers, odd dates, intervals, prepared parameters, tiny memory limits, odd files and an odd
HTTP server on loopback), batch by batch in child processes. A test fails when the host dies
on any statement (its seed, index and statement, shrunk, are in the failure and in
/tmp/fuzz-findings.md), when an error carries a secret given to the statement, when a
statement invalidates the database, or when one stalls. A Rust panic caught as an error is
written to the findings file but does not fail the test (the host lives; DuckDB's own rule).

PROMDUCK_FUZZ_STATEMENTS: statements per host (default 500; the CLI runs a quarter of them,
one process each, without the prepared ones); PROMDUCK_FUZZ_SEED: the first seed (default
20261207; each host runs two seeds, half the statements each, in two children at once).
`make stress` runs many more.
"""

from __future__ import annotations

import os
import time

import pytest

import sqlfuzz

STATEMENTS = int(os.environ.get("PROMDUCK_FUZZ_STATEMENTS", "500"))
SEED = int(os.environ.get("PROMDUCK_FUZZ_SEED", "20261207"))
SEEDS = [SEED, SEED + 1]


def test_the_same_seed_gives_the_same_statements():
    a = [s.text() for s in sqlfuzz.generate(SEED, 300)]
    b = [s.text() for s in sqlfuzz.generate(SEED, 300)]
    assert a == b
    assert a != [s.text() for s in sqlfuzz.generate(SEED + 1, 300)]


def test_every_function_and_kind_of_value_is_generated():
    stmts = sqlfuzz.generate(SEED, STATEMENTS)
    funcs = {s.func for s in stmts}
    assert funcs == {"prom_metrics", "prom_partitions", "prom_collect", "prom_compact", "prom_query",
                     "prom_query_range", "prom_labels", "prom_label_values", "prom_series", "prom_metadata",
                     "timestamp_ms"}
    text = "\n".join(s.text() for s in stmts)
    for needle in ["[NULL", "NULL]", "MAP {", "{'", "HUGEINT", "repeat('x', 10000000)", "INTERVAL", "TIMESTAMPTZ",
                   "::BLOB", "::UUID", "ENUM(", "memory_limit", "-- bound:", "s3_secret_access_key := ",
                   "s3_session_token := ", "password := ", "http://fuzzuser:", "@FIFO@", "/dev/zero", "@CLOSED@",
                   "/m/hugelabel", "'infinity'::", "rowid", "fzm(", "getvariable('fzv", "labels := [",
                   "prom_query(['up', ", "\"limit\" := ", "metric := "]:
        assert needle in text, f"no statement of {STATEMENTS} has {needle!r}"


@pytest.mark.parametrize("host", list(sqlfuzz.HOSTS) + ["cli"])
def test_no_statement_kills_the_host_or_leaks_a_secret(host, tmp_path):
    try:
        sqlfuzz.host_exe(host)
    except sqlfuzz.HostMissing as e:  # never a silent skip
        pytest.fail(str(e))
    assert sqlfuzz.EXTENSION_FILES_PRESENT(), "build/ has no extension: run `make build`"
    t0 = time.monotonic()
    findings, counts = sqlfuzz.fuzz(SEEDS, STATEMENTS // len(SEEDS), [host], work=tmp_path, log=print)
    print(f"DuckDB {host}: {counts[host]} statements in {time.monotonic() - t0:.0f} s, {len(findings)} findings")
    assert counts[host] > 0
    # a Rust panic that DuckDB shows as an error leaves the host alive: in the findings file, not a failure
    # nor does a secret in an error DuckDB raises before promduck runs (sqlfuzz.DUCKDB_OWN_ERRORS)
    findings = [f for f in findings if f.kind not in ("panic", "echo")]
    assert not findings, (
        f"{len(findings)} finding(s) in DuckDB {host} (seeds {SEEDS}; re-run one with "
        f"`python tests/sqlfuzz.py --seed N --count {STATEMENTS // len(SEEDS)} --host {host}`; placeholders such as "
        f"@DATA@ are the fuzzer's tmp archive and files):\n\n" + "\n".join(f.describe() for f in findings[:30]))


def test_the_runner_reports_a_dying_host_and_a_leaking_error_and_goes_on(tmp_path, monkeypatch):
    """The machinery itself, in one host: a child that aborts on statement 1 (a marker the child
    honours only under PROMDUCK_FUZZ_SELFTEST) is a death at #1, confirmed alone, and #2 still
    runs; an error carrying a secret (here DuckDB's own error()) is a leak."""
    try:
        sqlfuzz.host_exe("2.0")
    except sqlfuzz.HostMissing as e:
        pytest.fail(str(e))
    monkeypatch.setenv("PROMDUCK_FUZZ_SELFTEST", "1")
    secret = "ZqSelfTest8kW3nV5xR2pL7q"
    stmts = [sqlfuzz.Stmt("timestamp_ms", [sqlfuzz.Frag("1")], [], wrap="SELECT {}", scalar=True),
             sqlfuzz.Stmt("timestamp_ms", [sqlfuzz.Frag("2")], [], wrap="SELECT {} /*fuzz-selftest-abort*/", scalar=True),
             sqlfuzz.Stmt("timestamp_ms", [sqlfuzz.Frag("3")], [], wrap=f"SELECT {{}}, error('no {secret} here')",
                          scalar=True, secrets=[secret])]
    env = sqlfuzz.FuzzEnv(tmp_path / "env", sqlfuzz.host_exe("2.0"))
    try:
        findings, n = sqlfuzz.Runner(env, tmp_path / "work").run("2.0", stmts, seed=0)
    finally:
        env.close()
    assert n == 3
    kinds = sorted((f.kind, f.index) for f in findings)
    assert kinds == [("death", 1), ("leak", 2)], [f.describe() for f in findings]
    death = next(f for f in findings if f.kind == "death")
    assert death.alone is True and "SIGABRT" in death.detail, death.describe()
