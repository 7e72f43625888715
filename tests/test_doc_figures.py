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


def _n(x) -> str:
    return f"{x:,}"


#: RELIABILITY.md's figures of each crash and reader suite, as sentences built from the record
#: its test wrote (tests/output/<name>.json, kept as bench/reliability/<name>.json by the run
#: the document cites): (record, [(column, template)]).
RECORDS = {
    "reliability-crash": [
        "CI size, recorded in `bench/reliability/reliability-crash.json`: {trials} trials, seed {seed}; "
        "{killed_before_exit} kills landed before the run ended, {trials_with_partial_dataset} left a partial data "
        "set, {trials_with_temp_files} left temporary files",
        "{corrupt_or_partial_files_seen} partial or corrupt files seen; {reruns_equal_to_the_generator} of {trials} "
        "re-runs equal the generator's values exactly",
    ],
    "compaction-crash": [
        "CI size, recorded in `bench/reliability/compaction-crash.json`: {trials} trials, seed {seed}; "
        "{killed_before_exit} kills before the run ended: {left_temp_files} left temporary files, "
        "{left_month_file_and_daily_files} a month file beside daily files, {killed_while_removing_daily_files} "
        "landed while daily files were being removed ({left_removal_files} left a `.promduck-del` file); "
        "{exact_reads} exact reads ({reads[prom_metrics]} `prom_metrics`, {reads[recipe]} recipe)",
        "{wrong_reads} wrong or failed reads; {reruns_equal_to_the_generator} of {trials} re-runs completed to the "
        "clean run's files and the generator's rows, no leftovers. The plain glob differed in "
        "{plain_glob_reads_that_differed} of {reads[glob]} reads",
    ],
    "s3-compaction-crash": [
        "CI size, recorded in `bench/reliability/s3-compaction-crash.json`: {kills} kills ({trials} archives), seed "
        "{seed}, {killed_before_exit} before the run ended: {left_lock} left the lock object, "
        "{left_unfinished_upload} an unfinished multipart upload, {left_month_object_and_daily_objects} a month "
        "object beside daily objects, {killed_while_deleting_daily_objects} landed while daily objects were being "
        "deleted; {exact_reads} exact reads ({reads[prom_metrics]} `prom_metrics`, {reads[prom_partitions]} "
        "`prom_partitions`)",
        "{wrong_reads} wrong or failed reads; every visible month object byte-identical to the clean run's (whose "
        "rows are the generator's); {completing_runs_equal_to_the_generator} of {trials} completing runs left "
        "exactly the clean run's two month objects and nothing else ({uploads_aborted_by_later_runs} unfinished "
        "uploads aborted, no daily object, no lock)",
    ],
    "reliability-readers": [
        "CI size, recorded in `bench/reliability/reliability-readers.json`: {exact_reads} reads "
        "({reads[prom_metrics]} `prom_metrics`, {reads[read_parquet]} `read_parquet`) during {rewrite_runs} "
        "complete rewrites",
        "{read_errors} read errors, 0 partial results",
    ],
}


class _Fmt(dict):
    """A record's values for the templates: numbers with thousands separators."""

    def __getitem__(self, k):
        v = dict.__getitem__(self, k)
        if k == "seed":
            return v
        return _Fmt(v) if isinstance(v, dict) else (_n(v) if isinstance(v, int) and not isinstance(v, bool) else v)


def record_sentences(name: str) -> list[str]:
    rec = json.loads((REPO_ROOT / "bench" / "reliability" / f"{name}.json").read_text())
    if "reads" in rec:
        rec["exact_reads"] = sum(v for k, v in rec["reads"].items() if k != "glob") - rec.get("wrong_reads", 0)
    values = _Fmt(rec)
    return [t.format_map(values) for t in RECORDS[name]]


@pytest.mark.parametrize("name", list(RECORDS))
def test_reliability_figures_are_the_records(name):
    text = re.sub(r"\s+", " ", DOCS["RELIABILITY.md"])
    for sentence in record_sentences(name):
        assert sentence in text, f"RELIABILITY.md does not say (from bench/reliability/{name}.json): {sentence}"
