"""Hardening: hostile input.

(a) Bad configuration files: each one makes the collector exit 2 with one clear
    error line that names the file (and the line and key where there is one), and
    never a panic.
(b) Hostile proxy names (quotes, backslashes, braces, newlines, slashes, `..`, a
    leading dot, regex metacharacters, PromQL injection attempts) collected from a
    real Prometheus through the fault proxy, unbatched and batched: every query
    carries each name only as a correctly escaped string literal, the values are
    exactly the generator's, every file stays inside outputDir, and `api_proxy`
    holds the real names.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections import Counter
from datetime import date
from pathlib import Path

import duckdb
import pytest

from faultproxy import FaultProxy, label_matchers, promql_skeleton, regex_literal_alternatives
from helpers import EXTENSION, REPO_ROOT, day_end_ms, read_rows, run_collector
from promfixture import generate_history

# --- (a) bad configurations ----------------------------------------------------------------------------------------

BASE = """\
apiProxies:
  - api-proxy-1
  - api-proxy-2
prometheus:
  url: "http://127.0.0.1:9"
  timeout: 10s
  retries: 1
  metrics:
    - name: request_count
      query: 'sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'
      labels: [apiproxy, environment]
    - name: error_count
      query: 'sum(increase(apigee_error_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'
storage:
  outputDir: ./data
  compression: zstd
"""
BASE_LINES = BASE.splitlines()


def edit(line: int, *new: str, last: int | None = None) -> callable:
    """Replaces 1-based ``line`` (through ``last``) of BASE with the ``new`` lines
    (none: deletes them)."""
    def f(_tmp: Path) -> str:
        lines = list(BASE_LINES)
        lines[line - 1:last or line] = list(new)
        return "\n".join(lines) + "\n"
    return f


def after(line: int, *new: str) -> callable:
    """Inserts the ``new`` lines after 1-based ``line`` of BASE."""
    return edit(line, BASE_LINES[line - 1], *new)


def whole(text: str) -> callable:
    return lambda _tmp: text


def with_file(name: str, content: str | None, build: callable) -> callable:
    """Writes ``name`` next to the config (a directory if content is None) first."""
    def f(tmp: Path) -> str:
        p = tmp / name
        if content is None:
            p.mkdir()
        else:
            p.write_text(content)
        return build(tmp)
    return f


LONG = "x" * 300
# (id, builder, env, expected line (None: no line applies; a set: any of them), needles)
BAD_CONFIGS = [
    # YAML syntax
    ("yaml-unclosed-flow-sequence", edit(11, "      labels: [apiproxy, environment"), {}, {11, 12}, []),
    ("yaml-tab-indentation", edit(6, "\ttimeout: 10s"), {}, 6, []),
    ("yaml-unclosed-quote", edit(5, '  url: "http://127.0.0.1:9'), {}, {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17},
     []),
    ("yaml-bad-indentation", edit(6, "    timeout: 10s"), {}, 6, []),
    ("yaml-duplicate-key", after(7, "  timeout: 20s"), {}, 8, ["timeout"]),
    ("yaml-top-level-list", whole("- a\n- b\n"), {}, 1, []),
    ("yaml-top-level-scalar", whole("hello\n"), {}, 1, []),
    ("yaml-only-comment", whole("# nothing here\n"), {}, None, []),
    ("empty-file", whole(""), {}, None, ["empty"]),
    # wrong types
    ("apiProxies-is-a-string", edit(1, "apiProxies: api-proxy-1", last=3), {}, 1, ["apiProxies"]),
    ("retries-is-a-word", edit(7, "  retries: many"), {}, 7, ["retries"]),
    ("retries-negative", edit(7, "  retries: -1"), {}, 7, ["retries"]),
    ("retries-float", edit(7, "  retries: 1.5"), {}, 7, ["retries"]),
    ("retries-huge", edit(7, "  retries: 99999999999999999999"), {}, 7, ["retries"]),
    ("debug-not-bool", edit(1, "debug: yes please", "apiProxies:"), {}, 1, ["debug"]),
    ("labels-is-a-string", edit(11, "      labels: apiproxy"), {}, 11, ["labels"]),
    ("metrics-is-a-map", edit(8, "  metrics: {name: x}", last=13), {}, 8, ["metrics"]),
    ("insecureSkipVerify-not-bool", after(7, "  tls:", "    insecureSkipVerify: maybe"), {}, 9,
     ["insecureSkipVerify"]),
    # unknown or misspelt keys at every level
    ("unknown-top-level-key", edit(1, "apiProxys:"), {}, 1, ["apiProxys"]),
    ("unknown-prometheus-key", edit(6, "  timeot: 10s"), {}, 6, ["timeot"]),
    ("unknown-metric-key", edit(13, "      querry: 'x{apiproxy=\"%s\"}'"), {}, 13, ["querry"]),
    ("unknown-storage-key", edit(15, "  outputdir: ./data"), {}, 15, ["outputdir"]),
    ("unknown-tls-key", after(7, "  tls:", "    caFil: ca.pem"), {}, 9, ["caFil"]),
    # missing required parts
    ("missing-url", edit(5), {}, None, ["url"]),
    ("missing-prometheus", whole("apiProxies: [a]\n"), {}, None, ["prometheus"]),
    ("empty-apiProxies", edit(1, "apiProxies: []", last=3), {}, 1, ["apiProxies"]),
    ("empty-metrics", edit(8, "  metrics: []", last=13), {}, 8, ["metrics"]),
    # templates
    ("query-without-placeholder", edit(13, "      query: 'sum(increase(apigee_error_count[1d]))'"), {}, 13,
     ["%s"]),
    ("placeholder-only-in-a-comment", edit(13, "      query: 'up # %s'"), {}, 13, ["%s"]),
    # sizes and durations
    ("concurrency-zero", after(7, "  concurrency: 0"), {}, 8, ["concurrency"]),
    ("concurrency-negative", after(7, "  concurrency: -3"), {}, 8, ["concurrency"]),
    ("batchSize-zero", after(7, "  batchSize: 0"), {}, 8, ["batchSize"]),
    ("batchSize-word", after(7, "  batchSize: ten"), {}, 8, ["batchSize"]),
    ("rowGroupSize-zero", after(16, "  rowGroupSize: 0"), {}, 17, ["rowGroupSize"]),
    ("rowGroupSize-negative", after(16, "  rowGroupSize: -5"), {}, 17, ["rowGroupSize"]),
    ("timeout-bad-unit", edit(6, "  timeout: 1y"), {}, 6, ["timeout"]),
    ("timeout-negative", edit(6, "  timeout: -5s"), {}, 6, ["timeout"]),
    ("timeout-too-large", edit(6, "  timeout: 99999999999h"), {}, 6, ["timeout"]),
    ("timeout-zero", edit(6, "  timeout: 0s"), {}, 6, ["timeout"]),
    ("timeout-below-1ms", edit(6, "  timeout: 100ns"), {}, 6, ["timeout"]),
    ("interval-not-a-duration", after(16, "interval: soon"), {}, 17, ["interval"]),
    ("interval-zero", after(16, "interval: 0s"), {}, 17, ["interval"]),
    ("step-bad-unit", after(11, "      step: 1x"), {}, 12, ["step"]),
    ("step-zero", after(11, "      step: 0s"), {}, 12, ["step"]),
    # URLs
    ("url-ftp", edit(5, "  url: ftp://127.0.0.1:9"), {}, 5, ["url", "ftp"]),
    ("url-not-a-url", edit(5, '  url: "not a url"'), {}, 5, ["url"]),
    ("url-no-host", edit(5, '  url: "http://"'), {}, 5, ["url"]),
    ("url-query-string", edit(5, '  url: "http://127.0.0.1:9/?x=1"'), {}, 5, ["url"]),
    ("url-empty", edit(5, '  url: ""'), {}, 5, ["url"]),
    ("url-bad-port", edit(5, '  url: "http://127.0.0.1:99999"'), {}, 5, ["url"]),
    # storage, timezone
    ("unknown-compression", edit(16, "  compression: brotli"), {}, 16, ["compression", "brotli"]),
    ("unknown-timezone", after(16, "timezone: Mars/Base"), {}, 17, ["timezone", "Mars/Base"]),
    # secrets
    ("passwordFile-missing", after(7, "  username: u", "  passwordFile: /nonexistent/pw"), {}, 9, ["passwordFile"]),
    ("passwordFile-is-a-directory", with_file("pwdir", None, after(7, "  username: u", "  passwordFile: pwdir")), {},
     9, ["passwordFile"]),
    ("passwordFile-empty", with_file("pw", "", after(7, "  username: u", "  passwordFile: pw")), {}, 9,
     ["passwordFile", "empty"]),
    ("passwordEnv-not-set", after(7, "  username: u", "  passwordEnv: PROMDUCK_HOSTILE_UNSET_VAR"), {}, 9,
     ["passwordEnv", "PROMDUCK_HOSTILE_UNSET_VAR"]),
    ("passwordEnv-empty", after(7, "  username: u", "  passwordEnv: PROMDUCK_HOSTILE_EMPTY_VAR"),
     {"PROMDUCK_HOSTILE_EMPTY_VAR": ""}, 9, ["passwordEnv", "PROMDUCK_HOSTILE_EMPTY_VAR"]),
    ("password-and-passwordFile", with_file("pw", "x\n", after(7, "  username: u", "  password: p",
                                                               "  passwordFile: pw")), {}, {9, 10},
     ["password", "passwordFile"]),
    ("bearerToken-and-bearerTokenEnv", after(7, "  bearerToken: t", "  bearerTokenEnv: HOME"), {}, {8, 9},
     ["bearerToken"]),
    ("password-without-username", after(7, "  password: p"), {}, 8, ["password", "username"]),
    ("username-and-bearerToken", after(7, "  username: u", "  bearerToken: t"), {}, {8, 9},
     ["bearerToken"]),
    ("bearerTokenFile-missing", after(7, "  bearerTokenFile: /nonexistent/token"), {}, 8, ["bearerTokenFile"]),
    # TLS
    ("certFile-without-keyFile", with_file("cert.pem", "x", after(7, "  tls:", "    certFile: cert.pem")), {},
     {8, 9}, ["certFile", "keyFile"]),
    ("caFile-missing", after(7, "  tls:", "    caFile: /nonexistent/ca.pem"), {}, 9, ["caFile"]),
    # headers
    ("header-bad-name", after(7, "  headers:", '    "Bad Header": x'), {}, {8, 9}, ["Bad Header"]),
    ("header-bad-value", after(7, "  headers:", '    X-A: "a\\nb"'), {}, {8, 9}, ["X-A"]),
    # proxies and metrics
    ("duplicate-proxy", edit(3, "  - api-proxy-1"), {}, {1, 3}, ["apiProxies", "api-proxy-1"]),
    ("duplicate-metric", edit(12, "    - name: request_count"), {}, {9, 12}, ["request_count"]),
    ("empty-proxy-name", edit(3, '  - ""'), {}, {1, 3}, ["apiProxies"]),
    ("nul-in-proxy-name", edit(3, '  - "a\\0b"'), {}, {1, 3}, ["apiProxies", "NUL"]),
    ("proxy-name-too-long", edit(3, f"  - {LONG}"), {}, {1, 3}, ["apiProxies", "too long"]),
    ("empty-metric-name", edit(12, '    - name: ""'), {}, 12, ["name"]),
    # resource abuse: an alias bomb and deep nesting must fail quickly, not hang or overflow the stack
    ("yaml-alias-bomb", edit(1, "apiProxies:", '  - &a "lol"',
                             *[f"  - &{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi")],
                             "  - *i", last=3), {}, None, ["apiProxies"]),
    ("yaml-deep-nesting", whole("apiProxies: " + "[" * 20000 + "]" * 20000 + "\n"), {}, None, []),
]


def test_the_bad_configs_are_as_many_as_reliability_md_says():
    # RELIABILITY.md claims a number (in its table and its list): the list holds exactly that many.
    text = (REPO_ROOT / "RELIABILITY.md").read_text()
    claimed = {int(n) for n in re.findall(r"(\d+) bad configs", text)}
    assert claimed == {len(BAD_CONFIGS)}, (claimed, len(BAD_CONFIGS))
    assert len({c[0] for c in BAD_CONFIGS}) == len(BAD_CONFIGS)


@pytest.mark.parametrize("build,env,line,needles", [pytest.param(*c[1:], id=c[0]) for c in BAD_CONFIGS])
def test_bad_config_exits_2_with_one_clear_line(tmp_path, build, env, line, needles):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(build(tmp_path))
    r = run_collector("--config", cfg, "--date", "2024-03-01", cwd=tmp_path, env=env, timeout=30)
    out = f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.returncode == 2, out
    assert "panicked" not in r.stderr and "RUST_BACKTRACE" not in r.stderr, out
    assert r.stdout == "", out
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error: ")]
    assert len(errors) == 1, out
    # Nothing but the error line and its one log line (no multi-line spill).
    assert all(l in errors or "invalid configuration" in l for l in lines), out
    err = errors[0]
    assert err.startswith(f"error: {cfg}"), out
    m = re.match(re.escape(f"error: {cfg}") + r"(?::(\d+)(?::\d+)?)?: \S", err)
    assert m, out
    if line is not None:
        want = line if isinstance(line, set) else {line}
        assert m.group(1) is not None and int(m.group(1)) in want, f"expected line {sorted(want)}\n{out}"
    for needle in needles:
        assert needle in err, f"{needle!r} missing\n{out}"
    assert not (tmp_path / "data").exists()


def test_unreadable_config_paths_exit_2(tmp_path):
    bad_utf8 = tmp_path / "latin1.yaml"
    bad_utf8.write_bytes(b"apiProxies: [caf\xe9]\n")
    for path, needle in [(tmp_path / "missing.yaml", "cannot read config file"),
                         (tmp_path, "cannot read config file"),
                         (bad_utf8, "UTF-8")]:
        r = run_collector("--config", path, "--date", "2024-03-01", cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        errors = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
        assert len(errors) == 1 and str(path) in errors[0] and needle in errors[0], r.stderr
        assert "panicked" not in r.stderr


# --- (b) hostile proxy names ---------------------------------------------------------------------------------------

HOSTILE = [
    'quo"te',
    "back\\slash",
    "br}ace{",
    "new\nline",
    "sl/ash",
    "..",
    ".hidden",
    "../../../escape",
    "/abs/olute",
    'x"} or vector(1) #',
    "a'}[5m]) or up #",
    "tick`name",
    ".*",
    "a|b",
    "(x+)*[y]{2}^$",
    "pct%s%%name",
    "sp ace",
    "ünï-cødé-✓",
    "x.promduck-tmp",  # looks like the writer's temporary-file marker
    "api-proxy-1",
]

# Each template puts %s in a different kind of literal; all must select exactly one proxy.
HOSTILE_METRICS = [
    {"name": "request_count", "labels": ["apiproxy", "environment"],
     "query": 'sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'},
    {"name": "error_count", "labels": ["apiproxy", "environment"],
     "query": "sum(increase(apigee_error_count{apiproxy='%s'}[1d])) by (apiproxy, environment)"},
    {"name": "request_count_re", "labels": ["apiproxy", "environment"],
     "query": 'sum(increase(apigee_request_count{apiproxy=~"%s"}[1d])) by (apiproxy, environment)'},
]
SOURCE = {"request_count": "request_count", "error_count": "error_count", "request_count_re": "request_count"}


@pytest.fixture(scope="module")
def hostile_history(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile-history") / "history.om"
    return generate_history(path, date(2024, 3, 1), 1, HOSTILE, ("prod", "test"), seed=7)


def decode_stem(stem: str) -> str:
    return urllib.parse.unquote(stem, errors="strict")


def check_hostile_queries(proxy: FaultProxy, batched: bool):
    """Every query the proxy received is one of the templates with the proxy
    name(s) as one string literal that Prometheus reads back as exactly the name
    (batchSize 1) or as a quoted alternation of exactly all names (batched)."""
    queries = [r.promql for r in proxy.snapshot() if r.path == "/api/v1/query"]
    assert queries, proxy.summary()

    def normal(skeleton):  # a batched `label="%s"` becomes `label=~"..."`
        return skeleton.replace('apiproxy=~""', 'apiproxy=""')

    if batched:
        for q in queries:
            matchers = label_matchers(q, "apiproxy")
            assert len(matchers) == 1, f"the names escaped their literal: {q!r}"
            op, value = matchers[0]
            assert op == "=~", f"default batchSize: expected one batched query per metric, got {q!r}"
            names = regex_literal_alternatives(value)
            assert names is not None, f"not a quoted alternation: {value!r} in {q!r}"
            assert sorted(names) == sorted(HOSTILE), q
        assert Counter(normal(promql_skeleton(q)) for q in queries) == \
            Counter(normal(promql_skeleton(m["query"])) for m in HOSTILE_METRICS), proxy.summary()
        return
    skeletons = {promql_skeleton(m["query"]): m for m in HOSTILE_METRICS}
    assert len(skeletons) == len(HOSTILE_METRICS)
    covered = Counter()
    for q in queries:
        metric = skeletons.get(promql_skeleton(q))  # raises on an unterminated literal
        assert metric is not None, f"query structure changed: {q!r}"
        matchers = label_matchers(q, "apiproxy")
        assert len(matchers) == 1, f"the name escaped its literal: {q!r}"
        op, value = matchers[0]
        assert op == ("=~" if "=~" in metric["query"] else "="), q
        names = [value] if op == "=" else regex_literal_alternatives(value)
        assert names is not None and len(names) == 1 and names[0] in HOSTILE, f"{value!r} in {q!r}"
        covered[(metric["name"], names[0])] += 1
    assert covered == Counter({(m["name"], n): 1 for m in HOSTILE_METRICS for n in HOSTILE})


def expected_hostile_rows(hist, day):
    rows = []
    for name in HOSTILE:
        for metric in HOSTILE_METRICS:
            for env in hist.environments:
                rows.append((day_end_ms(day), metric["name"], hist.expected[(day, name, env, SOURCE[metric["name"]])],
                             name, day, {"apiproxy": name, "environment": env}))
    return sorted(rows, key=lambda r: (r[4], r[3], r[1], r[0], str(r[5])))


@pytest.mark.parametrize("batch_size", [1, None], ids=["batchSize-1", "default-batching"])
def test_hostile_proxy_names_stay_inside_their_literals(start_prometheus, hostile_history, tmp_path, batch_size):
    prom = start_prometheus(hostile_history)
    day = hostile_history.days_list[0]
    work = tmp_path / "work"
    out = work / "out"
    work.mkdir()
    prom_cfg = {"url": None, "timeout": "10s", "retries": 0, "metrics": HOSTILE_METRICS}
    if batch_size is not None:
        prom_cfg["batchSize"] = batch_size
    with FaultProxy(prom.url) as proxy:
        prom_cfg["url"] = proxy.url
        cfg = work / "c.yaml"
        cfg.write_text(json.dumps({"apiProxies": HOSTILE, "prometheus": prom_cfg,
                                   "storage": {"outputDir": str(out)}}, indent=2))
        r = run_collector("--config", cfg, "--date", day, cwd=work)
        assert r.returncode == 0, r.stderr + proxy.summary()
        check_hostile_queries(proxy, batched=batch_size is None)

    # Exactly the generator's values, for exactly these names.
    got = [(a, b, c, d, e, dict(f)) for a, b, c, d, e, f in read_rows(out)]
    got.sort(key=lambda r: (r[4], r[3], r[1], r[0], str(r[5])))
    assert got == expected_hostile_rows(hostile_history, day)

    # Nothing outside outputDir but the config; one file per name, hidden by no name.
    everything = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    outside = [p for p in everything if not (p == Path("work") or p == Path("work/c.yaml")
                                              or Path("work/out") in (p, *p.parents))]
    assert outside == [], outside
    day_dir = out / str(day)
    assert sorted(p.name for p in out.iterdir()) == [str(day)]
    files = list(day_dir.iterdir())
    assert all(f.is_file() and f.suffix == ".parquet" and not f.name.startswith(".") for f in files), files
    assert sorted(decode_stem(f.name[: -len(".parquet")]) for f in files) == sorted(HOSTILE)
    for f in files:
        rows = read_rows(day_dir, f.name)  # encoded names hold no glob characters
        assert {r[3] for r in rows} == {decode_stem(f.name[: -len(".parquet")])}, f

    # The extension finds each name's partition by its real name (full scans: see below).
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    for name in HOSTILE:
        rows = con.execute("SELECT DISTINCT api_proxy FROM prom_metrics(data_dir := ?, proxy := ?)",
                           [str(out), name]).fetchall()
        assert rows == [(name,)], name


def test_backtick_name_in_a_raw_string_template_is_rejected_clearly(start_prometheus, hostile_history, tmp_path):
    """A backtick cannot be escaped inside a PromQL raw string: the config is refused
    with a clear message before anything reaches Prometheus."""
    prom = start_prometheus(hostile_history)
    day = hostile_history.days_list[0]
    names = ["tick`name", "api-proxy-1"]
    metrics = [{"name": "request_count", "labels": ["apiproxy", "environment"],
                "query": "sum(increase(apigee_request_count{apiproxy=`%s`}[1d])) by (apiproxy, environment)"}]
    with FaultProxy(prom.url) as proxy:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(json.dumps({"apiProxies": names, "prometheus": {"url": proxy.url, "metrics": metrics,
                                                                       "retries": 0},
                                   "storage": {"outputDir": str(tmp_path / "out")}}))
        r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
        queries = proxy.queries()
    # Found when the config is read: exit 2 (bad config), one error line naming the file,
    # the metric and the name; nothing is sent to Prometheus and nothing is written.
    assert r.returncode == 2, r.stderr
    assert "panicked" not in r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith(f"error: {cfg}") and '"request_count"' in errors[0], errors[0]
    assert 'proxy name "tick`name" contains a backtick' in errors[0], errors[0]
    assert queries == [], queries
    assert not (tmp_path / "out").exists()


def test_full_scan_finds_a_proxy_named_like_a_temporary_file(start_prometheus, tmp_path_factory, tmp_path):
    """A proxy whose name contains the writer's temporary-file marker is still a
    proxy: prom_metrics() without a proxy filter must return its rows too."""
    names = ["x.promduck-tmp", "api-proxy-1"]
    hist = generate_history(tmp_path_factory.mktemp("tmpname-history") / "h.om", date(2024, 3, 1), 1, names, seed=3)
    prom = start_prometheus(hist)
    day = hist.days_list[0]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"apiProxies": names, "prometheus": {"url": prom.url, "metrics": HOSTILE_METRICS[:1]},
                               "storage": {"outputDir": str(tmp_path / "out")}}))
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted({r[3] for r in read_rows(tmp_path / "out")}) == sorted(names)
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    want = sorted((n, hist.expected[(day, n, e, "request_count")]) for n in names for e in hist.environments)
    for args in ("", ", date := '2024-03-01'", ", proxy := ['x.promduck-tmp', 'api-proxy-1']"):
        got = con.execute(f"SELECT api_proxy, value FROM prom_metrics(data_dir := ?{args})",
                          [str(tmp_path / "out")]).fetchall()
        assert sorted(got) == want, f"prom_metrics(data_dir{args})"
