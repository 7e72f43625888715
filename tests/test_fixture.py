"""The Prometheus test fixture serves exactly the history we generated."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta, timezone

import pytest

from promfixture import generate_history, promql_quote

DAILY = 'sum(increase({metric}{{apiproxy={proxy}}}[1d])) by (apiproxy, environment)'


def daily(prometheus, metric: str, proxy: str, day: date) -> dict:
    """{environment: value} of the daily-increase query for ``day``."""
    res = prometheus.query(DAILY.format(metric=metric, proxy=promql_quote(proxy)),
                           time=day + timedelta(days=1))["data"]["result"]
    out = {}
    for r in res:
        assert r["metric"]["apiproxy"] == proxy
        assert r["value"][0] == pytest.approx(
            datetime(*(day + timedelta(days=1)).timetuple()[:3], tzinfo=timezone.utc).timestamp())
        out[r["metric"]["environment"]] = float(r["value"][1])
    return out


def test_prometheus_answers(prometheus):
    status, body = prometheus.request("/-/ready")
    assert status == 200, body
    assert prometheus.url == f"http://127.0.0.1:{prometheus.port}"
    assert prometheus.query("1+1")["data"]["result"][1] == "2"


def test_history_shape(history):
    assert history.days_list == [date(2024, 3, 1) + timedelta(days=i) for i in range(4)]
    assert len(history.expected) == 4 * 4 * 2 * 2
    samples = history.gauge_samples[("api-proxy-1", "prod")]
    assert len(samples) == 4 * 1440 + 1
    assert samples[0][0] == history.start_ts == 1709251200  # 2024-03-01 00:00 UTC
    assert samples[-1][0] == history.end_ts == 1709251200 + 4 * 86400
    # api-proxy-1/prod (proxy #0, env #0) has its reset on day 1
    assert (date(2024, 3, 2), "api-proxy-1", "prod") in history.reset_days("request_count")
    assert all(v == int(v) and v > 0 for v in history.expected.values())


@pytest.mark.parametrize("day,env", [(date(2024, 3, 1), "test"), (date(2024, 3, 2), "prod")])
def test_daily_increase_exact(prometheus, history, day, env):
    got = daily(prometheus, "apigee_request_count", "api-proxy-1", day)
    assert set(got) == {"prod", "test"}
    want = history.expected[(day, "api-proxy-1", env, "request_count")]
    assert got[env] == want  # exact, no approx


def test_reset_day_is_exact_and_really_a_reset(prometheus, history):
    day, proxy, env = date(2024, 3, 2), "api-proxy-1", "prod"
    assert (day, proxy, env) in history.reset_days("request_count")
    sel = f'apigee_request_count{{apiproxy="{proxy}",environment="{env}"}}'
    end = day + timedelta(days=1)
    resets = prometheus.query(f"resets({sel}[1d])", time=end)["data"]["result"]
    assert float(resets[0]["value"][1]) == 1.0
    # the naive last-first difference is negative or otherwise wrong on that day
    delta = float(prometheus.query(f"delta({sel}[1d])", time=end)["data"]["result"][0]["value"][1])
    want = history.expected[(day, proxy, env, "request_count")]
    assert delta != want
    assert daily(prometheus, "apigee_request_count", proxy, day)[env] == want
    assert daily(prometheus, "apigee_error_count", proxy, day)[env] == \
        history.expected[(day, proxy, env, "error_count")]


def test_all_days_all_series_exact(prometheus, history):
    for day in history.days_list:
        for name, (metric, kind) in history.series.items():
            if kind != "counter":
                continue
            got = prometheus.query_values(
                f"sum(increase({metric}[1d])) by (apiproxy, environment)",
                time=day + timedelta(days=1))
            want = {frozenset({"apiproxy": p, "environment": e}.items()):
                    history.expected[(day, p, e, name)]
                    for p in history.proxies for e in history.environments}
            assert got == want, (day, name)


def test_samples_cover_whole_days(prometheus, history):
    sel = 'apigee_latency_ms{apiproxy="api-proxy-2",environment="test"}'
    for day in (history.days_list[0], history.days_list[-1]):
        res = prometheus.query(f"count_over_time({sel}[1d])", time=day + timedelta(days=1))
        assert res["data"]["result"][0]["value"][1] == "1441"


def test_gauge_value_at_minute(prometheus, history):
    samples = history.gauge_samples[("api-proxy-2", "test")]
    ts, value = samples[1440 + 13 * 60 + 37]  # 2024-03-02 13:37 UTC
    assert ts == datetime(2024, 3, 2, 13, 37, tzinfo=timezone.utc).timestamp()
    sel = 'apigee_latency_ms{apiproxy="api-proxy-2",environment="test"}'
    for t in (ts, ts + 30):  # at the sample, and within the next minute
        res = prometheus.query(sel, time=t)["data"]["result"]
        assert len(res) == 1
        assert float(res[0]["value"][1]) == value
    assert 10 <= value <= 500


def test_weird_proxy_name(prometheus, history):
    proxy = 'we"ird/proxy'
    assert promql_quote(proxy) == r'"we\"ird/proxy"'
    res = prometheus.query(f"apigee_latency_ms{{apiproxy={promql_quote(proxy)}}}",
                           time=history.end_ts)["data"]["result"]
    assert sorted(r["metric"]["environment"] for r in res) == ["prod", "test"]
    assert all(r["metric"]["apiproxy"] == proxy for r in res)
    for day in history.days_list:
        got = daily(prometheus, "apigee_request_count", proxy, day)
        assert got == {e: history.expected[(day, proxy, e, "request_count")]
                       for e in history.environments}


def test_basic_auth(prometheus_auth):
    user, password = prometheus_auth.basic_auth
    for path in ("/-/ready", "/api/v1/query?query=up"):
        assert prometheus_auth.request(path, auth=False)[0] == 401
        assert prometheus_auth.request(path, auth=(user, "wrong"))[0] == 401
        assert prometheus_auth.request(path, auth=(user, password))[0] == 200
    assert prometheus_auth.query("count(apigee_latency_ms)", time=date(2024, 3, 2)) \
        ["data"]["result"][0]["value"][1] == "8"


def test_generation_is_deterministic_and_escapes(tmp_path, start_prometheus):
    proxies = ["back\\slash proxy", "new\nline", "quote\"s/and spaces", "ünïcode"]
    a = generate_history(tmp_path / "a.om", date(2024, 1, 1), 1, proxies, ["prod"], seed=7)
    b = generate_history(tmp_path / "b.om", date(2024, 1, 1), 1, proxies, ["prod"], seed=7)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(a.path) == digest(b.path)
    assert a.expected == b.expected
    c = generate_history(tmp_path / "c.om", date(2024, 1, 1), 1, proxies, ["prod"], seed=8)
    assert digest(c.path) != digest(a.path)
    text = a.path.read_text()
    assert r'apiproxy="back\\slash proxy"' in text and r'apiproxy="new\nline"' in text
    assert text.endswith("# EOF\n")

    server = start_prometheus(a)
    got = server.query_values("sum(increase(apigee_request_count[1d])) by (apiproxy, environment)",
                              time=date(2024, 1, 2))
    assert got == {frozenset({"apiproxy": p, "environment": "prod"}.items()):
                   a.expected[(date(2024, 1, 1), p, "prod", "request_count")] for p in proxies}
    for p in proxies:
        res = server.query(f"apigee_latency_ms{{apiproxy={promql_quote(p)}}}",
                           time=a.end_ts)["data"]["result"]
        assert [r["metric"]["apiproxy"] for r in res] == [p]
