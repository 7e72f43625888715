"""Nothing archived is lost by a re-collection (issue 25, items 1 and 2), against real
Prometheus servers that know less than the archive:

- one whose retention now starts at noon of the archived day (its oldest sample is later
  than the day's start): the day is not re-collected over the archive (`kept`), while
  `--replace` does rewrite it from the half day Prometheus still has;
- one from which the `env="test"` series vanished: those rows stay, the others update;
- a metric removed from the configuration keeps its rows, in the daily layout and in a
  compacted month alike.

Expected values come from the generator (promfixture.History), not from promduck.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pytest

from helpers import DEFAULT_METRICS, EXTENSION, LATENCY_Q, run_collector, write_config
from promfixture import PrometheusServer, generate_history

DAY = date(2024, 3, 2)
PROXIES = ["p1", "p2"]
METRICS = DEFAULT_METRICS + [
    {"name": "latency_ms", "query": LATENCY_Q, "labels": ["apiproxy", "environment"], "step": "1h"},
]


def noon_ts(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, 12, tzinfo=timezone.utc).timestamp())


def filtered(src: Path, dst: Path, keep) -> Path:
    """The OpenMetrics file ``src`` with only the sample lines ``keep(line, ts)`` accepts."""
    out = []
    for line in src.read_text().splitlines():
        if line.startswith("#"):
            out.append(line)
            continue
        ts = int(float(line.rsplit(" ", 1)[1]))
        if keep(line, ts):
            out.append(line)
    dst.write_text("\n".join(out) + "\n")
    return dst


@pytest.fixture(scope="module")
def servers(tmp_path_factory, prometheus_bin):
    root = tmp_path_factory.mktemp("recollect")
    history = generate_history(root / "full.om", date(2024, 3, 1), 2, PROXIES, seed=7)
    files = {
        "full": history.path,
        # Retention now starts at noon of the archived day.
        "truncated": filtered(history.path, root / "truncated.om", lambda _l, ts: ts >= noon_ts(DAY)),
        # The test environment's series are gone.
        "no_test": filtered(history.path, root / "no_test.om", lambda line, _ts: 'environment="test"' not in line),
    }
    started = {name: PrometheusServer(f, root / name, bin_dir=prometheus_bin).start() for name, f in files.items()}
    yield history, started
    for s in started.values():
        s.stop()


def rows(data: Path, **where) -> list[tuple]:
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    return sorted(con.execute(
        "SELECT api_proxy, metric_name, labels['environment'], epoch_ms(timestamp), value "
        "FROM prom_metrics(data_dir := ?)", [str(data)]).fetchall())


def collect(cfg: Path, *extra) -> str:
    r = run_collector("--config", cfg, "--date", DAY.isoformat(), *extra)
    assert r.returncode == 0, r.stderr
    return r.stderr


FAST = {"compaction": {"removeDailyAfter": "0s"}}


@pytest.mark.parametrize("compacted", [False, True])
def test_a_day_prometheus_no_longer_holds_in_full_is_kept(servers, tmp_path, compacted):
    history, srv = servers
    data = tmp_path / "data"
    full = write_config(tmp_path / "full.yaml", srv["full"].url, PROXIES, METRICS, output_dir=data,
                        storage_extra=FAST)
    collect(full)
    archived = rows(data)
    if compacted:
        r = run_collector("--config", full, "--compact", "--month", "2024-03")
        assert r.returncode == 0, r.stderr
        assert not (data / DAY.isoformat()).exists() and rows(data) == archived
    # The archive holds the generator's exact daily increases and 24 hourly points.
    for p in PROXIES:
        for env in history.environments:
            got = {r[4] for r in archived if r[:3] == (p, "request_count", env)}
            assert got == {history.expected[(DAY, p, env, "request_count")]}
            assert len([r for r in archived if r[:3] == (p, "latency_ms", env)]) == 24

    truncated = write_config(tmp_path / "truncated.yaml", srv["truncated"].url, PROXIES, METRICS, output_dir=data,
                             storage_extra=FAST)
    log = collect(truncated)
    assert rows(data) == archived, "nothing of the archived day changed"
    assert log.count("kept") >= len(PROXIES), log
    assert "Prometheus holds samples only from 2024-03-02 12:00:00 UTC on" in log, log
    assert "the day is not held in full" in log

    # --replace: exactly what Prometheus answers now, half a day.
    collect(truncated, "--replace")
    now = rows(data)
    for p in PROXIES:
        for env in history.environments:
            hourly = [r for r in now if r[:3] == (p, "latency_ms", env)]
            # The day's grid is 01:00 … 24:00; Prometheus has samples from 12:00 on.
            assert len(hourly) == len([h for h in range(1, 25) if h >= 12]), hourly
            full = history.expected[(DAY, p, env, "request_count")]
            half = [r[4] for r in now if r[:3] == (p, "request_count", env)]
            assert len(half) == 1 and half[0] < full


def test_vanished_series_keep_their_rows_and_the_others_update(servers, tmp_path):
    history, srv = servers
    data = tmp_path / "data"
    collect(write_config(tmp_path / "full.yaml", srv["full"].url, PROXIES, METRICS, output_dir=data))
    archived = rows(data)
    assert {r[2] for r in archived} == {"prod", "test"}
    log = collect(write_config(tmp_path / "no_test.yaml", srv["no_test"].url, PROXIES, METRICS, output_dir=data))
    assert rows(data) == archived
    assert 'series absent from the new answer: {apiproxy="p1", environment="test"}' in log, log
    # With --replace the vanished series are gone.
    collect(write_config(tmp_path / "no_test.yaml", srv["no_test"].url, PROXIES, METRICS, output_dir=data),
            "--replace")
    assert rows(data) == [r for r in archived if r[2] != "test"]


@pytest.mark.parametrize("compacted", [False, True])
def test_a_metric_removed_from_the_config_keeps_its_rows_in_every_layout(servers, tmp_path, compacted):
    history, srv = servers
    data = tmp_path / "data"
    fast = FAST
    collect(write_config(tmp_path / "full.yaml", srv["full"].url, PROXIES, METRICS, output_dir=data,
                         storage_extra=fast))
    archived = rows(data)
    if compacted:
        r = run_collector("--config", tmp_path / "full.yaml", "--compact", "--month", "2024-03")
        assert r.returncode == 0, r.stderr
        assert (data / "2024-03" / "2024-03.parquet").exists()
        assert rows(data) == archived
    fewer = write_config(tmp_path / "fewer.yaml", srv["full"].url, PROXIES,
                         [m for m in METRICS if m["name"] != "error_count"], output_dir=data, storage_extra=fast)
    log = collect(fewer)
    assert rows(data) == archived, "error_count's rows stay"
    if not compacted:
        assert "error_count (" in log and "no rows of it in the new answer" in log, log


def test_a_replace_on_a_compacted_day_is_not_undone_by_the_next_compaction(servers, tmp_path):
    """prom_collect(replace := true) into a compacted month writes the day's files; the next
    compaction takes them in whole (every daily file promduck writes is its partition's whole
    state), so the rows the replace dropped do not come back from the month file."""
    history, srv = servers
    data = tmp_path / "data"
    full = write_config(tmp_path / "full.yaml", srv["full"].url, PROXIES, METRICS, output_dir=data,
                        storage_extra=FAST)
    collect(full)
    archived = rows(data)
    r = run_collector("--config", full, "--compact", "--month", "2024-03")
    assert r.returncode == 0, r.stderr
    no_test = write_config(tmp_path / "no_test.yaml", srv["no_test"].url, PROXIES, METRICS, output_dir=data,
                           storage_extra=FAST)
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    con.execute("SELECT count(*) FROM prom_collect(config := ?, date := ?, replace := true)",
                [str(no_test), DAY]).fetchall()
    # Readers keep the month file's rows until the month is compacted again ...
    assert rows(data) == archived
    r = run_collector("--config", no_test, "--compact", "--month", "2024-03")
    assert r.returncode == 0, r.stderr
    # ... which takes the replaced day in whole: exactly what the server answers now.
    assert rows(data) == [x for x in archived if x[2] != "test"]
    # A plain re-collection afterwards keeps that state (nothing comes back from the month).
    collect(no_test)
    r = run_collector("--config", no_test, "--compact", "--month", "2024-03")
    assert r.returncode == 0, r.stderr
    assert rows(data) == [x for x in archived if x[2] != "test"]
