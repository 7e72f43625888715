"""Claims of README.md and RELIABILITY.md about the collector, each shown by what can
be observed from outside (issue 17):

- every partition is fdatasync'ed before its rename, and each day's folder is
  fsync'ed once after the renames (strace);
- batching is used only for queries that cannot mix series across proxies: every
  exclusion the README names is queried once per proxy (requests counted at a
  fault proxy in front of Prometheus), batchable queries once for all;
- a `step` giving more than Prometheus's 11,000 points per day is split;
- the daemon: `interval`, `debug: true` (1 minute), the default 24 h, the default
  catch-up of 7 days;
- the progress bar on a terminal (`script` gives the collector a pseudo-terminal).

Expected values come from the generator's history, never from the collector.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from faultproxy import FaultProxy, label_matchers, promql_skeleton, regex_literal_alternatives
from helpers import COLLECTOR, LATENCY_Q, Daemon, day_end_ms, expected_rows, normalise, now_env, partition_files, \
    read_rows, run_collector, tool, utc, write_config, yesterday


@pytest.fixture
def fault_proxy(prometheus):
    p = FaultProxy(prometheus.url).start()
    yield p
    p.stop()


# --- fdatasync and the folder's fsync ----------------------------------------------------------------------------

CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>")


def syscalls(trace: Path):
    """Every call strace recorded as [name, args text, start, end]: the line numbers
    where it began and where it returned (the same unless another thread's call came
    in between and strace split it into `<unfinished ...>` and `<... resumed>`)."""
    out, pending = [], {}
    for i, line in enumerate(trace.read_text().splitlines()):
        m = RESUMED.match(line)
        if m:
            call = pending.pop(int(m.group(1)))
            assert call[0] == m.group(2), line
            call[3] = i
            continue
        m = CALL.match(line)
        if m:
            call = [m.group(2), m.group(3), i, i]
            out.append(call)
            if line.endswith("<unfinished ...>"):
                pending[int(m.group(1))] = call
    assert not pending, pending
    return out


def test_each_partition_is_fdatasynced_and_each_day_folder_fsynced_once(prometheus, history, tmp_path):
    """RELIABILITY.md 1: a partition is written to a temporary file, fdatasync'ed,
    renamed, and the folder fsynced once per batch of renames: for N partitions of a
    day, N fdatasyncs (each done before its file's rename) and one fsync of the day's
    folder (after its renames are done), and nothing else synced."""
    days = history.days_list[:2]
    proxies = ["api-proxy-1", "api-proxy-2", "api-proxy-3"]
    data = tmp_path / "data"
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, proxies)
    trace = tmp_path / "strace.txt"
    r = subprocess.run([tool("strace", "strace"), "-f", "-qq", "-y", "-e", "trace=fdatasync,fsync,rename,renameat,renameat2",
                        "-o", str(trace), str(COLLECTOR), "--config", str(cfg), "--from", str(days[0]), "--to", str(days[-1])],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert normalise(read_rows(data)) == expected_rows(history, days, proxies)
    calls = syscalls(trace)
    fd_path = lambda args: re.match(r"\d+<([^>]*)>", args).group(1)  # noqa: E731 (strace -y: `7</path>`)
    fdatasyncs = [(fd_path(a), start, end) for n, a, start, end in calls if n == "fdatasync"]
    fsyncs = [(fd_path(a), start, end) for n, a, start, end in calls if n == "fsync"]
    renames = [(*re.findall(r'"([^"]*)"', a)[:2], start, end) for n, a, start, end in calls if n.startswith("rename")]
    assert len(calls) == len(fdatasyncs) + len(fsyncs) + len(renames)
    log = trace.read_text()
    # One rename per partition, from a hidden temporary file in its own folder.
    finals = {str(data / str(d) / f"{p}.parquet") for d in days for p in proxies}
    assert sorted(new for _, new, _, _ in renames) == sorted(finals), log
    for old, new, _, _ in renames:
        assert Path(old).parent == Path(new).parent and Path(old).name.startswith("." + Path(new).name + "."), (old, new)
        assert old.endswith(".promduck-tmp"), old
    # N fdatasyncs: one per partition, on its temporary file, finished before its rename.
    assert len(fdatasyncs) == len(finals), log
    for old, _, rename_start, _ in renames:
        synced = [end for path, _, end in fdatasyncs if path == old]
        assert len(synced) == 1 and synced[0] < rename_start, (old, log)
    # One fsync per day folder, begun after every rename into it returned; nothing else.
    assert sorted(path for path, _, _ in fsyncs) == sorted(str(data / str(d)) for d in days), log
    for folder, fsync_start, _ in fsyncs:
        assert all(end < fsync_start for _, new, _, end in renames if str(Path(new).parent) == folder), log


# --- batching: what is batched, what is queried per proxy ----------------------------------------------------------

RQ = 'increase(apigee_request_count{apiproxy="%s"}[1d])'
EQ = 'increase(apigee_error_count{apiproxy="%s"}[1d])'
LQ = 'max by (apiproxy, environment) (apigee_latency_ms{apiproxy="%s"})'

# Each construct the README rules batching out for (`on`, `ignoring`, `group_left`,
# `scalar`, `absent`, ...: the whole list promduck uses), and aggregations that drop
# the proxy label. All valid in Prometheus 2.42 and answered.
PER_PROXY = {
    "x_on": f"sum by (apiproxy, environment) ({RQ}) + on (apiproxy, environment) sum by (apiproxy, environment) ({EQ})",
    "x_ignoring": f"{RQ} + ignoring (job) {EQ}",
    "x_group_left": f"{RQ} * on (apiproxy, environment) group_left {LQ}",
    "x_group_right": f"{LQ} * on (apiproxy, environment) group_right {RQ}",
    "x_scalar": 'increase(apigee_request_count{apiproxy="%s",environment="prod"}[1d]) * '
                'scalar(max by (apiproxy) (apigee_latency_ms{apiproxy="%s",environment="prod"}))',
    "x_vector": f"{RQ} or vector(0)",
    "x_absent": 'absent(apigee_request_count{apiproxy="%s",environment="staging"})',
    "x_absent_over_time": 'absent_over_time(apigee_request_count{apiproxy="%s",environment="staging"}[1d])',
    "x_count_values": 'count_values by (apiproxy) ("v", apigee_latency_ms{apiproxy="%s"})',
    "x_time": f"{RQ} + time() - time()",
    "x_sum_without_by": f"sum({RQ})",
    "x_sum_by_other_label": f"sum by (environment) ({RQ})",
    "x_sum_without_proxy": f"sum without (apiproxy) ({RQ})",
    "x_topk_without_by": f"topk(1, {RQ})",
}
# Functions newer than the Prometheus the tests run (2.42 answers 400): still never batched.
PER_PROXY_UNKNOWN_TO_2_42 = {
    "x_limitk": f"limitk(1, {RQ})",
    "x_limit_ratio": f"limit_ratio(0.5, {RQ})",
    "x_sort_by_label": f'sort_by_label({RQ}, "environment")',
}
BATCHED = {
    "b_sum_by_proxy": f"sum by (apiproxy, environment) ({RQ})",
    "b_sum_without_other": f"sum without (environment) ({RQ})",
    "b_max_by_after": 'max(apigee_latency_ms{apiproxy="%s"}) by (apiproxy, environment)',
    "b_regex_matcher": 'increase(apigee_error_count{apiproxy=~"%s"}[1d])',
    "b_plain": RQ,
}


def requests_by_metric(proxy: FaultProxy, metrics: dict) -> dict:
    """{metric name: [(operator, values) of each request's proxy matchers]}, a request
    belonging to the metric whose template has its structure."""
    skeletons = {}
    for name, query in metrics.items():
        for form in (promql_skeleton(query), promql_skeleton(query).replace('apiproxy=""', 'apiproxy=~""')):
            assert skeletons.setdefault(form, name) == name, f"{name} and {skeletons[form]} look alike"
    out = {name: [] for name in metrics}
    for r in proxy.snapshot():
        assert r.path == "/api/v1/query", r.path
        name = skeletons[promql_skeleton(r.promql)]
        out[name].append(label_matchers(r.promql, "apiproxy"))
    return out


def test_batching_is_used_only_where_series_cannot_mix(fault_proxy, history, tmp_path):
    proxies = ["api-proxy-1", "api-proxy-2", "api-proxy-3"]
    day = history.days_list[1]
    metrics = {**PER_PROXY, **BATCHED}
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, proxies,
                       metrics=[{"name": n, "query": q} for n, q in metrics.items()])
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    seen = requests_by_metric(fault_proxy, metrics)
    for name in PER_PROXY:
        # One request per proxy, each naming only that proxy (with `=`, in every matcher).
        names = sorted({v for m in seen[name] for _, v in m})
        assert len(seen[name]) == len(proxies) and names == proxies, (name, seen[name])
        assert all(len({v for _, v in m}) == 1 and {op for op, _ in m} == {"="} for m in seen[name]), (name, seen[name])
    for name in BATCHED:
        # One request for all proxies: a quoted alternation of exactly their names.
        assert len(seen[name]) == 1, (name, seen[name])
        (matchers,) = seen[name]
        assert [op for op, _ in matchers] == ["=~"], (name, matchers)
        assert sorted(regex_literal_alternatives(matchers[0][1])) == proxies, (name, matchers)
    # Batching changed nothing: the batched daily counter is each proxy's own.
    rows = [r for r in read_rows(tmp_path / "data") if r[1] == "b_sum_by_proxy"]
    assert sorted((r[3], dict(r[5])["environment"], r[2]) for r in rows) == sorted(
        (p, e, history.expected[(day, p, e, "request_count")]) for p in proxies for e in history.environments)

    # The newer functions fail here (Prometheus 2.42 does not know them), proxy by proxy.
    fault_proxy.clear()
    cfg = write_config(tmp_path / "new.yaml", fault_proxy.url, proxies, output_dir=tmp_path / "new",
                       metrics=[{"name": n, "query": q} for n, q in PER_PROXY_UNKNOWN_TO_2_42.items()])
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    seen = requests_by_metric(fault_proxy, PER_PROXY_UNKNOWN_TO_2_42)
    for name in PER_PROXY_UNKNOWN_TO_2_42:
        assert sorted(v for m in seen[name] for _, v in m) == proxies, (name, seen[name])
        assert all([op for op, _ in m] == ["="] for m in seen[name]), (name, seen[name])
    assert {x.status for x in fault_proxy.snapshot()} == {400}


# --- a step past 11,000 points per day ---------------------------------------------------------------------------

def test_step_past_11000_points_is_split_into_requests(fault_proxy, history, tmp_path):
    """step 5s: 17,280 points per day, more than Prometheus's 11,000: two range requests
    that together cover the day's grid (D 00:00:05 .. D+1 00:00) exactly once."""
    day = history.days_list[2]
    metrics = [{"name": "latency_ms", "query": LATENCY_Q, "labels": ["environment"], "step": "5s"}]
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, ["api-proxy-1"], metrics=metrics)
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    reqs = fault_proxy.snapshot()
    assert [x.path for x in reqs] == ["/api/v1/query_range"] * 2, fault_proxy.summary()
    start = day_end_ms(day) // 1000 - 86400
    grid = []
    for x in sorted(reqs, key=lambda x: float(x.param("start"))):
        lo, hi, step = float(x.param("start")), float(x.param("end")), float(x.param("step"))
        assert step == 5
        n = int((hi - lo) / step) + 1
        assert n <= 11_000, x.params
        grid += [lo + i * step for i in range(n)]
    assert grid == [float(start + 5 * k) for k in range(1, 17_281)]
    rows = read_rows(tmp_path / "data")
    want = []
    for env in history.environments:
        samples = dict(history.gauge_samples[("api-proxy-1", env)])
        want += [((start + 5 * k) * 1000, env, samples[start + 5 * k - (5 * k) % 60]) for k in range(1, 17_281)]
    assert sorted((r[0], dict(r[5])["environment"], r[2]) for r in rows) == sorted(want)


# --- the daemon ----------------------------------------------------------------------------------------------------

# "Now" for the daemons: the history's last day, 2024-03-04, is yesterday.
NOW = utc(2024, 3, 5, 6)
YESTERDAY = yesterday(NOW)


def test_daemon_repeats_every_interval(fault_proxy, history, tmp_path):
    """`interval: 2s`: after a collection the daemon waits 2 s, then collects the last
    complete day again."""
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, ["api-proxy-1"], top_extra={"interval": "2s"})
    d = Daemon(cfg, tmp_path, "--catch-up-days", "0", env=now_env(NOW))
    try:
        d.wait_for("collection finished", count=3)
    finally:
        assert d.stop() == 0, d.log()[-3000:]
    log = d.log()
    ticks = log.count("collection finished")
    assert ticks >= 3, log
    # Every collection is followed by the 2 s wait (the last one may have been stopped
    # before it said so).
    assert log.count("next_in=2s") >= ticks - 1, log
    assert log.count("next_in=") == log.count("next_in=2s"), log
    day_param = str(day_end_ms(YESTERDAY) // 1000)
    # The queries (a re-collection also reads Prometheus's /metrics for its oldest sample).
    requests = [r for r in fault_proxy.snapshot() if r.promql is not None]
    assert {r.path for r in fault_proxy.snapshot()} == {"/api/v1/query", "/metrics"}
    assert {r.param("time") for r in requests} == {day_param}
    # Each collection sends 2 requests (2 metrics), and the next starts only after it ended:
    # in time order, requests 2k and 2k+1 are the k-th collection's (the last one may have
    # been stopped after its first request).
    times = sorted(r.time for r in requests)
    assert 2 * ticks <= len(times) <= 2 * ticks + 2, (len(times), ticks)
    groups = [times[i:i + 2] for i in range(0, len(times), 2)]
    # Between two collections, at least the interval (a timer never fires early; no upper
    # bound: a loaded machine is slower).
    gaps = [b[0] - a[-1] for a, b in zip(groups, groups[1:])]
    assert all(g >= 2.0 for g in gaps), gaps
    assert partition_files(tmp_path / "data") == {f"{YESTERDAY}/api-proxy-1.parquet"}
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [YESTERDAY], ["api-proxy-1"])


def test_daemon_defaults_24h_and_7_catch_up_days_and_debug_means_1_minute(prometheus, tmp_path):
    # Defaults: yesterday and the 7 days before it (none earlier), then again just after the
    # day closes: at 2024-03-05 06:00 UTC the next run is 2024-03-06 00:30 UTC (18.5 h), not
    # 24 h later.
    work = tmp_path / "default"
    work.mkdir()
    cfg = write_config(work / "c.yaml", prometheus.url, ["api-proxy-1"])
    d = Daemon(cfg, work, env=now_env(NOW))
    try:
        d.wait_for("waiting for the next collection")
    finally:
        assert d.stop() == 0, d.log()[-3000:]
    log = d.log()
    assert "interval=86400s" in log and "next_in=66600s" in log, log
    assert 'next_run="2024-03-06 00:30:00 UTC"' in log or "next_run=2024-03-06 00:30:00 UTC" in log, log
    assert " DEBUG " not in log
    assert partition_files(work / "data") == {f"{YESTERDAY - timedelta(days=i)}/api-proxy-1.parquet" for i in range(8)}

    # debug: true: every minute, and debug logs (two proxies: the batched query logs at
    # debug level). No second collection within 3 s.
    work = tmp_path / "debug"
    work.mkdir()
    cfg = write_config(work / "c.yaml", prometheus.url, ["api-proxy-1", "api-proxy-2"], top_extra={"debug": True})
    d = Daemon(cfg, work, "--catch-up-days", "0", env=now_env(NOW))
    try:
        d.wait_for("waiting for the next collection")
        time.sleep(3)
    finally:
        assert d.stop() == 0, d.log()[-3000:]
    log = d.log()
    assert "interval=60s" in log and "next_in=60s" in log, log
    assert " DEBUG " in log, log
    assert log.count("collection finished") == 1, log


# --- the progress bar on a terminal -----------------------------------------------------------------------------

BAR = re.compile(r"(\d+)/(\d+) partitions")


def on_terminal(args, cwd: Path, pipe=False) -> tuple[int, str]:
    """Runs the collector with its output on a pseudo-terminal (`script`), or on a pipe."""
    cmd = [str(COLLECTOR), *map(str, args)]
    if pipe:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
        return r.returncode, r.stdout + r.stderr
    line = " ".join("'" + c.replace("'", "'\\''") + "'" for c in cmd)
    env = dict(os.environ, TERM="xterm", COLUMNS="120", LINES="40")
    r = subprocess.run([tool("script", "bsdutils"), "-qec", line, "/dev/null"], cwd=cwd, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout


def test_progress_bar_on_a_terminal_for_multi_day_runs(fault_proxy, history, tmp_path):
    # Each query takes 0.05 s, so the bar is drawn several times.
    fault_proxy.add_rule("delay", times=None, delay_seconds=0.05)
    proxies = ["api-proxy-1", "api-proxy-2"]
    cfg = write_config(tmp_path / "c.yaml", fault_proxy.url, proxies,
                       prometheus_extra={"concurrency": 1, "batchSize": 1})
    days = history.days_list
    backfill = ["--config", cfg, "--from", days[0], "--to", days[-1]]
    total = len(days) * len(proxies)

    code, out = on_terminal(backfill, tmp_path)
    assert code == 0, out
    bars = [(int(a), int(b)) for a, b in BAR.findall(out)]
    assert bars and {b for _, b in bars} == {total}, out
    assert len({a for a, _ in bars}) >= 2 and (total, total) in bars, f"the bar should move to the end: {bars}"
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, days, proxies)

    # Not with --progress never, not for one day, not on a pipe.
    for args, pipe in [([*backfill, "--progress", "never"], False), (["--config", cfg, "--date", days[0]], False),
                       (backfill, True)]:
        code, out = on_terminal(args, tmp_path, pipe=pipe)
        assert code == 0, out
        assert not BAR.search(out), (args, pipe, out)
        assert "collection finished" in out, out


def test_progress_always_off_a_terminal_keeps_every_partitions_line(prometheus, history, tmp_path):
    """`--progress always` where no bar can be drawn (systemd, cron, `| cat`): the lines that
    record what was written stay, one per partition, and the log says why there is no bar."""
    proxies = history.proxies[:2]
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, proxies)
    days = history.days_list
    r = subprocess.run([str(COLLECTOR), "--config", str(cfg), "--from", str(days[0]), "--to", str(days[-1]),
                        "--progress", "always"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    written = set(re.findall(r"written day=(\S+) proxy=(\S+) ", r.stderr))
    assert written == {(d.isoformat(), p) for d in days for p in proxies}, r.stderr
    assert "stderr is not a terminal; one line per partition instead of a bar" in r.stderr
    assert not BAR.search(r.stderr)
