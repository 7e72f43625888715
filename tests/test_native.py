"""The DuckDB 2.0.1 native build (C API v2, extension-v2/): WHERE prunes like the parameters.

- Each host gets its build: the native one loads in DuckDB 2.0.1 (its footer names that exact
  version) and is refused elsewhere; the portable one still loads by path in 2.0.1 (the fallback);
  `INSTALL promduck FROM 'build/repository-native'` installs the native file in 2.0.1 (and
  `build/repository` the portable one everywhere, 2.0.1 included); the portable
  file in 1.2 … 1.5.
- Generated predicates (`=`, `IN`, `BETWEEN`, `<`, `>`, `<=`, `>=` and their ANDs on `date`,
  `api_proxy`, `metric_name`) over a generated archive: the WHERE form returns exactly the rows of
  the parameter form, and both exactly the generator's rows.
- The positional short form `prom_metrics(date_range, proxy)` (C API v2 only).
- EXPLAIN: an exact predicate leaves no FILTER above PROM_METRICS; one promduck cannot apply
  exactly stays a FILTER.
- Pruning before anything is opened: the files of every other day are garbage, so opening one
  fails the query; on S3 the WHERE form makes exactly the parameter form's requests.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import BUILD, EXTENSION, REPO_ROOT
from s3fixture import child_env

NATIVE_VERSION = "2.0.1"
NATIVE = BUILD / "native" / f"v{NATIVE_VERSION}" / "promduck.duckdb_extension"
HOSTS = {"1.2": "1.2.2", "1.3": "1.3.2", "1.4": "1.4.5", "1.5": "1.5.6", "2.0": "2.0.1"}
SEED = int(os.environ.get("PROMDUCK_SEED", "20261208"))
CASES = int(os.environ.get("PROMDUCK_NATIVE_CASES", "60"))

FIRST = date(2024, 2, 26)
DAYS = 8
PROXIES = ["api-proxy-1", "api-proxy-2", "api-proxy-10", 'we"ird/proxy', "z"]
METRICS = ["request_count", "error_count", "latency_ms"]
ENVS = ["prod", "test"]
SCHEMA = pa.schema([
    pa.field("timestamp", pa.int64(), nullable=False),
    pa.field("metric_name", pa.string(), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
    pa.field("api_proxy", pa.string(), nullable=False),
    pa.field("date", pa.date32(), nullable=False),
    pa.field("labels", pa.map_(pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())),
             nullable=False),
], metadata={"created_by_promduck": "test"})  # promduck's files: proxy names percent-encoded


def encode_proxy(name: str) -> str:
    """The collector's file name for a proxy (percent-encoding outside [A-Za-z0-9_-.])."""
    out = []
    for i, b in enumerate(name.encode()):
        c = chr(b)
        out.append(c if c.isascii() and (c.isalnum() or c in "-_" or (c == "." and i > 0)) else f"%{b:02X}")
    return "".join(out)


def day_end_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000) + 86_400_000


def make_archive(data: Path, rng: random.Random) -> list[tuple]:
    """Daily files in the collector's layout with random integer values; returns the rows as
    (date, proxy, metric, timestamp ms, value, environment)."""
    rows = []
    for d in range(DAYS):
        day = FIRST + timedelta(days=d)
        end = day_end_ms(day)
        for proxy in PROXIES:
            file_rows = []
            for env in ENVS:
                for metric in METRICS:
                    points = 3 if metric == "latency_ms" else 1
                    for i in range(points):
                        file_rows.append((day, proxy, metric, end - i * 3_600_000, float(rng.randrange(10**6)), env))
            rng.shuffle(file_rows)
            cols = {
                "timestamp": [r[3] for r in file_rows],
                "metric_name": [r[2] for r in file_rows],
                "value": [r[4] for r in file_rows],
                "api_proxy": [r[1] for r in file_rows],
                "date": [r[0] for r in file_rows],
                "labels": [[("apiproxy", r[1]), ("environment", r[5])] for r in file_rows],
            }
            path = data / day.isoformat() / f"{encode_proxy(proxy)}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(cols, schema=SCHEMA), path, compression="zstd")
            rows.extend(file_rows)
    return rows


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    data = tmp_path_factory.mktemp("native") / "data"
    rows = make_archive(data, random.Random(SEED))
    return data, rows


def connect(extension: Path = NATIVE):
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{extension}'")
    return con


# ---------------------------------------------------------------------------
# Generated predicates: the SQL, the parameters that select the same, and the model.

def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def sql_list(items) -> str:
    return "[" + ", ".join(sql_str(str(i)) for i in items) + "]"


class Case:
    def __init__(self):
        self.where: list[str] = []
        self.params: dict[str, str] = {}
        self.tests = []  # predicates on a model row
        self.param_form = True  # whether parameters can say the same
        # Whether promduck applies every predicate itself (no FILTER left); None: DuckDB's
        # optimizer decides (it may fold `>= a AND < b` into a BETWEEN, which C API v2 does not
        # describe fully, so promduck only prunes by it).
        self.exact: bool | None = True

    def sql(self) -> str:
        return " AND ".join(self.where)


def date_predicate(rng: random.Random, c: Case):
    days = [FIRST + timedelta(days=i) for i in range(-1, DAYS + 1)]
    a, b = sorted(rng.sample(days, 2))
    kind = rng.choice(["eq", "between", "gt", "ge", "lt", "le", "range", "in"])
    if kind == "eq":
        c.where.append(f"date = DATE '{a}'")
        c.params["date"] = sql_str(str(a))
        c.tests.append(lambda r, a=a: r[0] == a)
    elif kind == "between":
        c.where.append(f"date BETWEEN '{a}' AND '{b}'")
        c.params["date_range"] = sql_list([a, b])
        c.exact = False
        c.tests.append(lambda r, a=a, b=b: a <= r[0] <= b)
    elif kind == "gt":
        c.where.append(f"date > '{a}'")
        c.params["start_date"] = sql_str(str(a + timedelta(days=1)))
        c.tests.append(lambda r, a=a: r[0] > a)
    elif kind == "ge":
        c.where.append(f"'{a}' <= date")
        c.params["start_date"] = sql_str(str(a))
        c.tests.append(lambda r, a=a: r[0] >= a)
    elif kind == "lt":
        c.where.append(f"date < '{b}'")
        c.params["end_date"] = sql_str(str(b - timedelta(days=1)))
        c.tests.append(lambda r, b=b: r[0] < b)
    elif kind == "le":
        c.where.append(f"date <= '{b}'")
        c.params["end_date"] = sql_str(str(b))
        c.tests.append(lambda r, b=b: r[0] <= b)
    elif kind == "range":
        c.where.append(f"date >= '{a}' AND date < '{b}'")
        c.params["date_range"] = sql_list([a, b - timedelta(days=1)])  # a < b: sampled apart
        c.exact = None
        c.tests.append(lambda r, a=a, b=b: a <= r[0] < b)
    else:
        c.where.append(f"date IN ('{a}', '{b}')")
        c.param_form = False  # two days apart: no parameter says that
        c.exact = False
        c.tests.append(lambda r, a=a, b=b: r[0] in (a, b))


def names_predicate(rng: random.Random, c: Case, column: str, param: str, universe: list[str], index: int):
    pool = universe + ["nobody"]
    picked = rng.sample(pool, rng.randint(1, 3))
    if len(picked) == 1 and rng.random() < 0.5:
        c.where.append(f"{column} = {sql_str(picked[0])}")
    else:
        c.where.append(f"{column} IN ({', '.join(sql_str(p) for p in picked)})")
    c.params[param] = sql_list(picked)
    c.tests.append(lambda r, picked=frozenset(picked): r[index] in picked)


def generate(rng: random.Random) -> Case:
    c = Case()
    parts = rng.sample(["date", "proxy", "metric"], rng.randint(1, 3))
    for p in parts:
        if p == "date":
            date_predicate(rng, c)
        elif p == "proxy":
            names_predicate(rng, c, "api_proxy", "proxy", PROXIES, 1)
        else:
            names_predicate(rng, c, "metric_name", "metric", METRICS, 2)
    return c


COLUMNS = "date, api_proxy, metric_name, epoch_ms(timestamp), value, labels['environment']"


def model_rows(rows, case: Case):
    return sorted(tuple(r) for r in rows if all(t(r) for t in case.tests))


def test_where_equals_the_parameters_and_the_generator_row_for_row(archive):
    data, rows = archive
    rng = random.Random(SEED + 1)
    con = connect()
    checked_param_form = 0
    for n in range(CASES):
        case = generate(rng)
        where = case.sql()
        got = sorted(tuple(r) for r in con.execute(
            f"SELECT {COLUMNS} FROM prom_metrics(data_dir := {sql_str(str(data))}) WHERE {where}").fetchall())
        want = model_rows(rows, case)
        assert got == want, f"case {n}: WHERE {where}"
        if case.param_form:
            args = ", ".join(f"{k} := {v}" for k, v in case.params.items())
            by_params = sorted(tuple(r) for r in con.execute(
                f"SELECT {COLUMNS} FROM prom_metrics(data_dir := {sql_str(str(data))}, {args})").fetchall())
            assert got == by_params, f"case {n}: WHERE {where} vs ({args})"
            checked_param_form += 1
        plan = con.execute(f"EXPLAIN SELECT * FROM prom_metrics(data_dir := {sql_str(str(data))}) WHERE {where}"
                           ).fetchall()[0][1]
        if case.exact is not None:
            assert ("Filter" in plan) == (not case.exact), f"case {n}: WHERE {where}\n{plan}"
    # The generator is not degenerate: most cases had a parameter form, and some matched rows.
    assert checked_param_form >= CASES // 2


def test_explain_shows_which_predicates_were_pushed(archive):
    data, _ = archive
    con = connect()
    d = f"data_dir := {sql_str(str(data))}"

    def plan(where):
        return con.execute(f"EXPLAIN SELECT * FROM prom_metrics({d}) WHERE {where}").fetchall()[0][1]

    pushed = plan("date = '2024-03-01' AND api_proxy IN ('z', 'api-proxy-1') AND metric_name = 'latency_ms'")
    assert "PROM_METRICS" in pushed.upper() and "Filter" not in pushed, pushed
    kept = plan("date = '2024-03-01' AND value > 5")
    assert "Filter" in kept and "value" in kept and "2024-03-01" not in kept, kept
    not_exact = plan("api_proxy LIKE 'api%'")
    assert "Filter" in not_exact, not_exact
    # The portable build pushes nothing: every predicate is a FILTER above it.
    portable = connect(EXTENSION).execute(
        f"EXPLAIN SELECT * FROM prom_metrics({d}) WHERE date = '2024-03-01'").fetchall()[0][1]
    assert "Filter" in portable, portable


def test_the_positional_short_form(archive):
    """`prom_metrics(date_range, proxy)` by position: the rows of the named form and of the model."""
    data, rows = archive
    con = connect()
    d = f"data_dir := {sql_str(str(data))}"
    a, b = FIRST + timedelta(days=1), FIRST + timedelta(days=2)
    got = sorted(tuple(r) for r in con.execute(
        f"SELECT {COLUMNS} FROM prom_metrics('{a}..{b}', ['z', 'api-proxy-2'], {d})").fetchall())
    named = sorted(tuple(r) for r in con.execute(
        f"SELECT {COLUMNS} FROM prom_metrics(date_range := '{a}..{b}', proxy := ['z', 'api-proxy-2'], {d})").fetchall())
    assert got == named == sorted(r for r in rows if a <= r[0] <= b and r[1] in ("z", "api-proxy-2"))
    assert con.execute(f"SELECT count(*) FROM prom_metrics('{a}', {d})").fetchone()[0] == sum(
        1 for r in rows if r[0] == a)


def test_source_and_label_columns_equal_the_portable_builds(archive):
    data, rows = archive
    d = f"data_dir := {sql_str(str(data))}"
    sql = (f"SELECT source, environment, apiproxy, date, api_proxy, value FROM prom_metrics({d}, source := true, "
           f"labels := ['environment', 'apiproxy']) WHERE date = '2024-03-01' AND api_proxy = 'z'")
    native = sorted(connect().execute(sql).fetchall())
    assert native == sorted(connect(EXTENSION).execute(sql).fetchall())
    want = sorted((str(data / "2024-03-01" / "z.parquet"), r[5], "z", r[0], "z", r[4]) for r in rows
                  if r[0] == date(2024, 3, 1) and r[1] == "z")
    assert native == want
    with pytest.raises(duckdb.Error, match="would be a second column named"):
        connect().execute(f"SELECT * FROM prom_metrics({d}, labels := ['Value'])").fetchall()


def test_a_bind_error_never_echoes_a_secret(archive):
    """DuckDB appends the statement to a bind error: a call that carries a secret fails at init
    instead, with the same message (as the portable build does, deferred.rs)."""
    con = connect()
    with pytest.raises(duckdb.Error) as e:
        con.execute("SELECT * FROM prom_metrics(date := 'nope', data_dir := 's3://b/p', "
                    "s3_secret_access_key := 'TOPSECRET-1')").fetchall()
    assert 'invalid date "nope"' in str(e.value) and "TOPSECRET" not in str(e.value)
    with pytest.raises(duckdb.Error) as e:
        con.execute("SELECT * FROM prom_metrics(date := 'nope', data_dir := '/nowhere')").fetchall()
    assert 'invalid date "nope"' in str(e.value) and "LINE 1" in str(e.value)  # the check can fail


def test_duckdbs_own_file_system_rules_refuse_a_local_archive(archive):
    """`disabled_filesystems = 'LocalFileSystem'` refuses prom_metrics as it refuses read_parquet
    (asked of DuckDB's own file system); with external access off the native build refuses (the
    portable build confines its reads instead)."""
    data, _ = archive
    con = connect()
    sql = f"SELECT count(*) FROM prom_metrics(data_dir := {sql_str(str(data))})"
    assert con.execute(sql).fetchone()[0] > 0
    con.execute("SET disabled_filesystems = 'LocalFileSystem'")
    with pytest.raises(duckdb.Error, match="LocalFileSystem has been disabled"):
        con.execute(sql).fetchall()
    con = connect()
    con.execute("SET enable_external_access = false")
    with pytest.raises(duckdb.Error, match="Permission Error: prom_metrics .*enable_external_access is false"):
        con.execute(sql).fetchall()


def test_where_opens_nothing_outside_the_selection(archive, tmp_path):
    """Every file but one day's is replaced by garbage: a query that opened any of them would
    fail. The WHERE form answers exactly, like the parameter form."""
    data, rows = archive
    broken = tmp_path / "data"
    day = FIRST + timedelta(days=3)
    for f in data.rglob("*.parquet"):
        dest = broken / f.relative_to(data)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read_bytes() if f.parent.name == str(day) else b"not parquet at all")
    con = connect()
    d = f"data_dir := {sql_str(str(broken))}"
    want = sorted((r[3], r[4]) for r in rows if r[0] == day and r[1] == "api-proxy-2")
    got = con.execute(f"SELECT epoch_ms(timestamp), value FROM prom_metrics({d}) "
                      f"WHERE date = '{day}' AND api_proxy = 'api-proxy-2' ORDER BY ALL").fetchall()
    assert [tuple(r) for r in got] == want
    whole_day = con.execute(f"SELECT count(*) FROM prom_metrics({d}) WHERE date = '{day}'").fetchone()[0]
    assert whole_day == sum(1 for r in rows if r[0] == day)
    # The check can fail: without the predicate promduck opens a garbage file.
    with pytest.raises(duckdb.Error, match="prom_metrics"):
        con.execute(f"SELECT count(*) FROM prom_metrics({d}) WHERE value >= 0").fetchall()


S3_SCRIPT = r"""
import duckdb, json, sys
ext, url, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
con = duckdb.connect(config={'allow_unsigned_extensions': 'true'})
con.execute(f"LOAD '{ext}'")
out = []
for q in queries:
    out.append(sorted([list(map(str, r)) for r in con.execute(q.replace('URL', url)).fetchall()]))
print(json.dumps(out))
"""


def test_s3_where_makes_the_parameter_forms_requests(archive, moto_s3, s3_bucket, tmp_path):
    data, rows = archive
    client = moto_s3.direct
    for f in data.rglob("*.parquet"):
        client.upload_file(str(f), s3_bucket, f"a/{f.relative_to(data).as_posix()}")
    url = f"s3://{s3_bucket}/a"
    day = FIRST + timedelta(days=2)
    queries = {
        "point": (f"SELECT sum(value) FROM prom_metrics(data_dir := 'URL') WHERE date = '{day}' "
                  f"AND api_proxy = 'api-proxy-10' AND metric_name = 'request_count'",
                  f"SELECT sum(value) FROM prom_metrics(data_dir := 'URL', date := '{day}', proxy := 'api-proxy-10', "
                  f"metric := 'request_count')"),
        "days": (f"SELECT count(*) FROM prom_metrics(data_dir := 'URL') WHERE date BETWEEN '{day}' AND "
                 f"'{day + timedelta(days=1)}'",
                 f"SELECT count(*) FROM prom_metrics(data_dir := 'URL', date_range := ['{day}', "
                 f"'{day + timedelta(days=1)}'])"),
    }
    env = child_env(moto_s3)
    for name, (where_sql, param_sql) in queries.items():
        counts = []
        answers = []
        for sql in (where_sql, param_sql):
            moto_s3.reset_requests()
            r = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "python"), "-c", S3_SCRIPT, str(NATIVE), url,
                                json.dumps([sql])], env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            answers.append(json.loads(r.stdout.splitlines()[-1])[0][0][0])
            counts.append(dict(moto_s3.counts(bucket=s3_bucket)))
        assert answers[0] == answers[1], name
        assert counts[0] == counts[1], (name, moto_s3.summary())
        # Only the selected days were touched: no GET outside them.
        if name == "point":
            want = sum(r[4] for r in rows if r[0] == day and r[1] == "api-proxy-10" and r[2] == "request_count")
            assert float(answers[0]) == want
            assert counts[0].get("GET", 0) == 1, moto_s3.summary()
        else:
            assert int(answers[0]) == sum(1 for r in rows if r[0] in (day, day + timedelta(days=1)))
            assert counts[0].get("GET", 0) == 2 * len(PROXIES), moto_s3.summary()


# ---------------------------------------------------------------------------
# Each host its build.

HOST_SCRIPT = r"""
import duckdb, json, sys
native, portable, portable_gcc4, repo, extdir, data = sys.argv[1:7]
out = {'version': duckdb.__version__}
def connect(**cfg):
    return duckdb.connect(config={'allow_unsigned_extensions': 'true', **cfg})
out['platform'] = connect().execute("PRAGMA platform").fetchone()[0]
if out['platform'].endswith('_gcc4'):
    portable = portable_gcc4
for name, path in (('native', native), ('portable', portable)):
    con = connect()
    try:
        con.execute(f"LOAD '{path}'")
        out[name] = con.execute("SELECT count(*) FROM prom_metrics(data_dir := ?, date := '2024-03-01')", [data]).fetchone()[0]
    except Exception as e:
        out[name] = 'error: ' + str(e)
con = connect(extension_directory=extdir)
con.execute("INSTALL promduck FROM '" + repo + "'")
con.close()
con = connect(extension_directory=extdir)
con.execute("LOAD promduck")
out['installed'] = con.execute("SELECT count(*) FROM prom_metrics(data_dir := ?) WHERE date = '2024-03-01'", [data]).fetchone()[0]
out['installed_plan'] = con.execute("EXPLAIN SELECT * FROM prom_metrics(data_dir := ?) WHERE date = '2024-03-01'", [data]).fetchall()[0][1]
print(json.dumps(out))
"""


@pytest.mark.parametrize("host", list(HOSTS))
def test_each_host_gets_its_build(archive, tmp_path, host):
    data, rows = archive
    python = REPO_ROOT / ".cache" / f"duckdb-{host}" / "bin" / "python"
    assert python.exists(), f"{python} missing: run `make hosts`"
    # build/repository gives every host the portable build (the native one has only
    # prom_metrics and timestamp_ms); build/repository-native gives DuckDB 2.0.1 the native one.
    native_host = HOSTS[host] == NATIVE_VERSION
    name = "repository-native" if native_host else "repository"
    folder = f"build/{name}" if BUILD == REPO_ROOT / "build" else str(BUILD / name)
    gcc4 = BUILD / "linux_amd64_gcc4" / "promduck.duckdb_extension"
    r = subprocess.run([str(python), "-c", HOST_SCRIPT, str(NATIVE), str(EXTENSION), str(gcc4), folder,
                        str(tmp_path / "ext"), str(data)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["version"] == HOSTS[host]
    portable = gcc4 if out["platform"].endswith("_gcc4") else EXTENSION
    n_day = sum(1 for r in rows if r[0] == date(2024, 3, 1))
    assert out["portable"] == n_day
    assert out["installed"] == n_day
    installed = next((tmp_path / "ext").rglob("promduck.duckdb_extension")).read_bytes()
    if HOSTS[host] == NATIVE_VERSION:
        assert out["native"] == n_day
        assert installed == NATIVE.read_bytes()
        assert "FILTER" not in out["installed_plan"].upper(), out["installed_plan"]
    else:
        assert "can only be loaded with that version of DuckDB" in out["native"] or \
               "built specifically for DuckDB version 'v2.0.1'" in out["native"], out["native"]
        assert installed == portable.read_bytes()
        assert "FILTER" in out["installed_plan"].upper(), out["installed_plan"]



def test_the_default_repository_gives_every_version_the_portable_build():
    """INSTALL promduck FROM 'build/repository' never takes a function away: every version's
    folder holds the portable build, 2.0.1's too; the native one is opt-in."""
    repo = BUILD / "repository"
    files = sorted(repo.glob("v*/*/promduck.duckdb_extension"))
    assert len(files) >= 22 * 2, files
    for f in files:
        want = BUILD / f.parent.name / "promduck.duckdb_extension" if f.parent.name.endswith("_gcc4") else EXTENSION
        assert f.read_bytes() == want.read_bytes(), f
    native = BUILD / "repository-native" / f"v{NATIVE_VERSION}" / "linux_amd64" / "promduck.duckdb_extension"
    assert native.read_bytes() == NATIVE.read_bytes()
    assert sorted(p.name for p in (BUILD / "repository-native").iterdir()) == [f"v{NATIVE_VERSION}"]
