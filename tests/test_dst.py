"""Exact calendar days across DST changes, against a real Prometheus.

A counter rises by exactly 1 every minute, so the increase over any calendar day is
the number of minutes in that day: 1380 on a 23-hour day, 1500 on a 25-hour day,
1410/1470 in Australia/Lord_Howe (30-minute shift), 1440 otherwise. The seed's
`increase(x[1d])` query, unchanged in the config, must give exactly those.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import duckdb
import pytest

from helpers import run_collector, write_config
from promfixture import PrometheusServer

QUERY = 'sum(increase(dst_requests{apiproxy="%s"}[1d])) by (apiproxy, environment)'

# (zone, proxy, UTC windows with samples, days to collect)
CASES = [
    ("Europe/Berlin", "berlin",
     [(datetime(2026, 3, 27, tzinfo=timezone.utc), datetime(2026, 3, 31, tzinfo=timezone.utc)),
      (datetime(2026, 10, 23, tzinfo=timezone.utc), datetime(2026, 10, 28, tzinfo=timezone.utc))],
     [date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30), date(2026, 10, 24), date(2026, 10, 25),
      date(2026, 10, 26)]),
    ("Australia/Lord_Howe", "lordhowe",
     [(datetime(2026, 4, 2, tzinfo=timezone.utc), datetime(2026, 4, 8, tzinfo=timezone.utc)),
      (datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 10, 7, tzinfo=timezone.utc))],
     [date(2026, 4, 4), date(2026, 4, 5), date(2026, 4, 6), date(2026, 10, 3), date(2026, 10, 4), date(2026, 10, 5)]),
    ("UTC", "utc",
     [(datetime(2026, 3, 27, tzinfo=timezone.utc), datetime(2026, 3, 31, tzinfo=timezone.utc))],
     [date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30)]),
]


def minutes_in_day(day: date, zone: str) -> int:
    """Computed with Python's zoneinfo, independently of the collector's chrono-tz."""
    tz = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(timezone.utc)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(timezone.utc)
    return int((end - start).total_seconds() // 60)


@pytest.fixture(scope="module")
def dst_prometheus(prometheus_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("dst")
    path = work / "dst.om"
    epoch = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with open(path, "w") as f:
        f.write("# TYPE dst_requests counter\n")
        for _, proxy, windows, _ in CASES:
            for lo, hi in windows:
                t = int(lo.timestamp())
                while t <= int(hi.timestamp()):
                    value = (t - int(epoch.timestamp())) // 60  # +1 per minute, never reset
                    f.write(f'dst_requests{{apiproxy="{proxy}",environment="prod"}} {value} {t}\n')
                    t += 60
        f.write("# EOF\n")
    server = PrometheusServer(path, work / "prom", bin_dir=prometheus_bin)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("zone,proxy,windows,days", CASES, ids=[c[0] for c in CASES])
def test_daily_increase_is_the_calendar_days_increase(dst_prometheus, tmp_path, zone, proxy, windows, days):
    cfg = write_config(tmp_path / "c.yaml", dst_prometheus.url, [proxy],
                       metrics=[{"name": "requests", "query": QUERY, "labels": ["apiproxy", "environment"]}],
                       top_extra={"timezone": zone})
    got = {}
    for day in days:
        r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    con = duckdb.connect()
    got = dict(con.execute("SELECT date, value FROM read_parquet(?)", [str(tmp_path / "data" / "*" / "*.parquet")]).fetchall())
    want = {d: float(minutes_in_day(d, zone)) for d in days}
    assert got == want
    if zone != "UTC":
        assert sorted(set(want.values())) != [1440.0], "the case must include a DST day"


def test_check_reports_the_window_of_a_dst_day(dst_prometheus, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", dst_prometheus.url, ["berlin"],
                       metrics=[{"name": "requests", "query": QUERY, "labels": ["apiproxy", "environment"]}],
                       top_extra={"timezone": "Europe/Berlin"})
    r = run_collector("--config", cfg, "--check", "--date", "2026-03-29", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "day 2026-03-29 (Europe/Berlin): 2026-03-28T23:00:00+00:00 .. 2026-03-29T22:00:00+00:00 (23 h)" in r.stdout
    assert "[82800s]" in r.stdout
