"""The figures the documents state are the code's and the records' (issue 31): every count of
tests, cases or configs in RELIABILITY.md is computed here from the test modules themselves (their
case lists, or pytest's own collection), the DuckDB versions README.md names from the repository
`make build` writes and the hosts tests/test_hosts.py loads, and each measured figure from the
benchmark JSON under bench/ that recorded it. A document edited without its source (or a source
without its document) fails here, naming the sentence.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from helpers import REPO_ROOT

DOCS = {name: (REPO_ROOT / name).read_text() for name in ("README.md", "RELIABILITY.md", "SECURITY.md",
                                                          "BENCHMARKS.md")}


def stated(doc: str, pattern: str) -> list[tuple[str, ...]]:
    """Every match of ``pattern`` (its groups) in ``doc``, with whitespace runs (line breaks
    included) read as one space; at least one, or the sentence was removed."""
    text = re.sub(r"\s+", " ", DOCS[doc])
    found = [m.groups() for m in re.finditer(pattern, text)]
    assert found, f"{doc}: no sentence matching {pattern!r} (changed? update this test with it)"
    return found


@pytest.fixture(scope="module")
def collected() -> Counter:
    """pytest's own collection of the modules whose test counts RELIABILITY.md states: items per
    (file, function)."""
    files = ["tests/test_faults.py", "tests/test_secrets.py", "tests/test_s3.py", "tests/test_tls.py"]
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    items = [line.split("::") for line in r.stdout.splitlines() if "::" in line]
    return Counter((f, re.sub(r"\[.*", "", name)) for f, name in items)


def per_file(collected: Counter, f: str) -> int:
    return sum(n for (file, _), n in collected.items() if file == f)


def test_reliability_counts_are_the_code_s(collected):
    import test_extension
    import test_faults
    import test_hostile

    extension_faults = (collected[("tests/test_faults.py", "test_prom_query_retries_transient_faults")]
                        + collected[("tests/test_faults.py", "test_prom_query_permanent_fault_is_a_clear_error")])
    assert extension_faults > 0
    assert stated("RELIABILITY.md", r"(\d+) transient and (\d+) permanent collector cases, (\d+) extension cases") == [
        (str(len(test_faults.TRANSIENT)), str(len(test_faults.PERMANENT)), str(extension_faults))]
    assert set(stated("RELIABILITY.md", r"(\d+) bad configs")) == {(str(len(test_hostile.BAD_CONFIGS)),)}
    assert stated("RELIABILITY.md", r"(\d+) SQL misuses \(\+ (\d+) in the fault suite\)") == [
        (str(len(test_extension.MISUSE)), str(extension_faults))]
    assert stated("RELIABILITY.md", r"(\d+) misuses of the SQL functions") == [(str(len(test_extension.MISUSE)),)]
    assert stated("RELIABILITY.md", r"(\d+) hostile proxy names through (\d+) templates") == [
        (str(len(test_hostile.HOSTILE)), str(len(test_hostile.HOSTILE_METRICS)))]
    assert stated("RELIABILITY.md", r"- (\d+) hostile proxy names \(") == [(str(len(test_hostile.HOSTILE)),)]
    # The suites' sizes as pytest collects them.
    assert stated("RELIABILITY.md", r"\| (\d+) tests; stdout, stderr") == [
        (str(per_file(collected, "tests/test_secrets.py")),)]
    assert stated("RELIABILITY.md", r"\| (\d+) tests; every fault retried") == [
        (str(per_file(collected, "tests/test_s3.py")),)]
    assert stated("RELIABILITY.md", r"mTLS \| (\d+) tests \|") == [(str(per_file(collected, "tests/test_tls.py")),)]
    # The fuzz targets: the proptest functions of core/tests/fuzz.rs.
    targets = re.findall(r"^\s*fn (fuzz_\w+)\(", (REPO_ROOT / "core" / "tests" / "fuzz.rs").read_text(), re.M)
    assert stated("RELIABILITY.md", r"(\d+) targets") == [(str(len(targets)),)]


def test_readme_duckdb_versions_are_the_repository_s_and_the_hosts_tested():
    import test_hosts

    repo = REPO_ROOT / "build" / "repository"
    assert repo.is_dir(), "make build writes build/repository"
    versions = sorted((d.name for d in repo.iterdir() if d.is_dir()),
                      key=lambda v: tuple(int(x) for x in v.lstrip("v").split(".")))
    (count, first, last), = stated("README.md", r"for each of the (\d+) DuckDB versions (v[\d.]+) to (v[\d.]+)")
    assert (int(count), first, last) == (len(versions), versions[0], versions[-1]), versions
    (loaded,) = stated("README.md", r"the tests load (\d+) of them")
    assert int(loaded[0]) == len(test_hosts.HOSTS)
    table = "".join(line for line in DOCS["README.md"].splitlines() if line.startswith("| Python `duckdb`"))
    assert sorted(re.findall(r"\d+\.\d+\.\d+", table)) == sorted(test_hosts.HOSTS.values())


def test_readme_memory_figure_is_the_benchmark_s():
    """README's "peaks N MiB above the host's own footprint" is bench/prom_metrics_memory.json's
    LIMIT 1 peak minus its load-only peak (after the fix), and the test's bound is the test's."""
    import test_memory

    after = json.loads((REPO_ROOT / "bench" / "prom_metrics_memory.json").read_text())["builds"]["build"]
    above = after["queries"]["one file, SELECT * LIMIT 1"]["peak_rss_mib"] - after["load_only_peak_rss_mib"]
    (n, bound), = stated("README.md", r"peaks (\d+) MiB above the host's own footprint \(the test's bound: (\d+) MiB")
    assert int(n) == round(above), above
    assert int(bound) << 20 == test_memory.RSS_MARGIN
