"""The wheel `make wheel` builds (dist/promduck-<version>-py3-none-manylinux_*_x86_64.whl), installed
without Rust: for each Python DuckDB host of the matrix (1.2, 1.3, 1.4, 1.5, 2.0: the Makefile's
HOST_DUCKDB), a fresh venv gets that `duckdb`, pytz and the wheel from dist/ with `pip install
--no-index` (the duckdb and pytz wheels from build/wheel-venvs/wheelhouse, `make wheel-hosts`) and
a PATH without cargo or rustc. Then, in that venv: the README's Python example, prom_metrics and a
live prom_query with exact values (promfixture.History, computed independently), promduck.load()
on the user's own connection, promduck.install() followed by a plain `LOAD promduck` in a new
session, the errors for an unsupported DuckDB, and `promduck-collector --check` (and a collection)
from the venv's bin."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from helpers import REPO_ROOT, day_end_ms, run_collector, write_config

#: minor release -> the exact version (the Makefile's HOST_DUCKDB, tests/test_hosts.py)
HOSTS = {"1.2": "1.2.2", "1.3": "1.3.2", "1.4": "1.4.5", "1.5": "1.5.6", "2.0": "2.0.1"}
#: the hosts whose Linux wheels report linux_amd64_gcc4 (`PRAGMA platform`)
GCC4_HOSTS = {"1.2"}
DIST = REPO_ROOT / "dist"
WHEELHOUSE = REPO_ROOT / "build" / "wheel-venvs" / "wheelhouse"
VERSION = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
#: PATH of every command run in a wheel's venv: its bin and the system's, no ~/.cargo/bin
SYSTEM_PATH = "/usr/bin:/bin"


def the_wheel() -> Path:
    wheels = sorted(DIST.glob("promduck-*.whl"))
    assert len(wheels) == 1, f"{wheels}: run `make wheel`"
    assert re.fullmatch(rf"promduck-{re.escape(VERSION)}-py3-none-manylinux_2_\d+_x86_64\.whl", wheels[0].name), wheels[0]
    return wheels[0]


def venv_env(venv: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROMDUCK_", "PYTHON", "VIRTUAL_ENV", "PIP_", "CARGO", "RUST"))}
    env.update(PATH=f"{venv / 'bin'}:{SYSTEM_PATH}", VIRTUAL_ENV=str(venv), **extra)
    return env


def test_the_wheel_holds_the_extension_for_both_platforms_the_collector_and_the_module():
    wheel = the_wheel()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert names == {
            "promduck/__init__.py",
            "promduck/extension/linux_amd64/promduck.duckdb_extension",
            "promduck/extension/linux_amd64_gcc4/promduck.duckdb_extension",
            f"promduck-{VERSION}.data/scripts/promduck-collector",
            f"promduck-{VERSION}.dist-info/METADATA",
            f"promduck-{VERSION}.dist-info/WHEEL",
            f"promduck-{VERSION}.dist-info/RECORD",
        }
        wheel_meta = z.read(f"promduck-{VERSION}.dist-info/WHEEL").decode()
        assert "Root-Is-Purelib: false" in wheel_meta
        assert f"Tag: {wheel.name.split('-', 2)[2].removesuffix('.whl')}" in wheel_meta
        meta = z.read(f"promduck-{VERSION}.dist-info/METADATA").decode()
        assert "Requires-Dist: duckdb<2.1,>=1.2.0" in meta and "Requires-Dist: pytz" in meta
        # the files `make build` stamped, byte for byte: the same library, each footer naming its platform
        for platform in ("linux_amd64", "linux_amd64_gcc4"):
            data = z.read(f"promduck/extension/{platform}/promduck.duckdb_extension")
            built = REPO_ROOT / "build" / ("" if platform == "linux_amd64" else platform) / "promduck.duckdb_extension"
            assert data == built.read_bytes()
            footer = data[-512:]
            assert b"linux_amd64\0" in footer or b"linux_amd64_gcc4\0" in footer
            assert (b"linux_amd64_gcc4\0" in footer) == (platform == "linux_amd64_gcc4")
        assert z.read(f"promduck-{VERSION}.data/scripts/promduck-collector") == \
            (REPO_ROOT / "build" / "promduck-collector").read_bytes()
        assert (z.getinfo(f"promduck-{VERSION}.data/scripts/promduck-collector").external_attr >> 16) & 0o111


@pytest.fixture(scope="module", params=list(HOSTS))
def venv(request, tmp_path_factory):
    """A fresh venv with the host's duckdb, pytz and the wheel, installed offline without Rust."""
    version = HOSTS[request.param]
    assert (WHEELHOUSE / f".downloaded-{version}").exists(), "run `make wheel-hosts`"
    venv = tmp_path_factory.mktemp(f"wheel-{request.param}") / "venv"
    env = venv_env(venv)
    assert shutil.which("cargo", path=env["PATH"]) is None and shutil.which("rustc", path=env["PATH"]) is None
    base = getattr(sys, "_base_executable", sys.executable)
    r = subprocess.run([base, "-m", "venv", str(venv)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--find-links", str(WHEELHOUSE),
                        "--disable-pip-version-check", "--no-compile", f"duckdb=={version}", str(the_wheel())],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Successfully installed duckdb-{version} promduck-{VERSION} pytz-" in r.stdout, r.stdout
    # the tools the install could have used are not there; neither is a Rust build in its log
    assert "cargo" not in r.stdout.lower() and "rustc" not in r.stdout.lower()
    return request.param, venv


def run_in(venv: Path, script: str, args=(), cwd=None, **env) -> dict:
    r = subprocess.run([str(venv / "bin" / "python"), "-c", script, *map(str, args)], cwd=cwd,
                       env=venv_env(venv, **env), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def archive(prometheus, history, tmp_path_factory):
    """One day of the test history, collected by the built collector into <work>/data."""
    work = tmp_path_factory.mktemp("wheel-archive")
    cfg = write_config(work / "c.yaml", prometheus.url, history.proxies)
    day = history.days_list[1]
    r = run_collector("--config", cfg, "--date", day, cwd=work)
    assert r.returncode == 0, r.stderr
    return work, day


def readme_python_example() -> str:
    """The README's first Python block under "## Installation"."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("\n## Installation\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block and "import promduck" in block.group(1), section
    return block.group(1)


def test_readme_python_example(venv, archive, history):
    """The README's example as it stands, in ./ with the archive as ./data; the clock (PROMDUCK_NOW)
    a day after the collected day, so `last_days := 7` covers it."""
    minor, path = venv
    work, day = archive
    now = datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc) + timedelta(days=2)
    out = run_in(path, readme_python_example() + r"""
import json
cols = [d[0] for d in con.description]
print(json.dumps([{c: (str(v) if c in ('timestamp', 'date') else v) for c, v in zip(cols, r)} for r in rows]))
""", cwd=work, PROMDUCK_NOW=now.isoformat().replace("+00:00", "Z"))
    got = sorted((r["api_proxy"], r["metric_name"], r["labels"]["environment"] if isinstance(r["labels"], dict)
                  and "environment" in r["labels"] else dict(zip(r["labels"]["key"], r["labels"]["value"]))["environment"],
                  r["value"]) for r in out)
    assert got == sorted((p, m, e, history.expected[(day, p, e, m)]) for p in history.proxies
                         for e in history.environments for m in ("request_count", "error_count"))
    end = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
    assert {datetime.fromisoformat(r["timestamp"]) for r in out} == {end}


WHEEL_SCRIPT = r"""
import duckdb, json, sys
import promduck
data, day, prom, end, extdir = sys.argv[1:6]
out = {'version': duckdb.__version__}
con = promduck.connect()
out['platform'] = con.execute('PRAGMA platform').fetchone()[0]
out['path'] = str(promduck.extension_path(con))
out['path_default'] = str(promduck.extension_path())
Q = lambda c, sql, p=(): c.execute(sql, list(p)).fetchall()
out['totals'] = dict(Q(con, "SELECT api_proxy, sum(value) FROM prom_metrics(data_dir := ?, date := ?, metric := 'request_count') GROUP BY 1", [data, day]))
out['rows'] = Q(con, "SELECT epoch_ms(timestamp), api_proxy, metric_name, map_extract(labels, 'environment')[1], value FROM prom_metrics("
                "data_dir := ?, date := ?, proxy := 'api-proxy-1') ORDER BY 3, 4", [data, day])
out['partitions'] = [[str(d), p] for d, p in Q(con, "SELECT date, api_proxy FROM prom_partitions(data_dir := ?) ORDER BY 2", [data])]
out['query'] = Q(con, "SELECT apiproxy, environment, epoch_ms(timestamp), value FROM prom_query("
                 "'sum(increase(apigee_request_count{apiproxy=\"api-proxy-2\"}[1d])) by (apiproxy, environment)', "
                 "url := ?, at := ?::TIMESTAMPTZ, labels := ['apiproxy', 'environment']) ORDER BY ALL", [prom, end])

# load(): the user's own connection, with and without allow_unsigned_extensions
own = duckdb.connect(config={'allow_unsigned_extensions': 'true'})
assert promduck.load(own) is own
out['own'] = Q(own, "SELECT count(*) FROM prom_metrics(data_dir := ?, date := ?)", [data, day])[0][0]
for key, f in (('unsigned', promduck.load), ('unsigned_install', promduck.install)):
    try:
        f(duckdb.connect())
    except RuntimeError as e:
        out[key] = str(e)

# install(): into an extension directory, then a plain LOAD promduck in a new session
cfg = {'allow_unsigned_extensions': 'true', 'extension_directory': extdir}
first = duckdb.connect(config=cfg)
promduck.install(first)
first.close()
later = duckdb.connect(config=cfg)
later.execute('LOAD promduck')
out['installed'] = Q(later, "SELECT loaded, install_mode FROM duckdb_extensions() WHERE extension_name = 'promduck'")
out['installed_total'] = Q(later, "SELECT sum(value) FROM prom_metrics(data_dir := ?, date := ?, metric := 'request_count')", [data, day])[0][0]

# what is not supported, named
for key, v, p in (('old', 'v1.1.3', 'linux_amd64'), ('new', 'v2.1.0', 'linux_amd64'), ('mac', 'v1.4.5', 'osx_arm64')):
    try:
        promduck.extension_path(version=v, platform=p)
    except promduck.UnsupportedDuckDB as e:
        out[key] = str(e)
print(json.dumps(out))
"""


def test_connect_load_install_and_exact_values(venv, archive, history, prometheus, tmp_path):
    minor, path = venv
    work, day = archive
    end = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
    out = run_in(path, WHEEL_SCRIPT, [work / "data", day, prometheus.url, end.isoformat(), tmp_path / "ext"], cwd=tmp_path)
    platform = "linux_amd64_gcc4" if minor in GCC4_HOSTS else "linux_amd64"
    site = next((path / "lib").glob("python3.*")) / "site-packages"
    assert out["version"] == HOSTS[minor] and out["platform"] == platform
    assert out["path"] == out["path_default"] == str(site / "promduck" / "extension" / platform / "promduck.duckdb_extension")

    assert out["totals"] == {p: sum(history.expected[(day, p, e, "request_count")] for e in history.environments)
                             for p in history.proxies}
    assert [tuple(r) for r in out["rows"]] == sorted(
        ((day_end_ms(day), "api-proxy-1", m, e, history.expected[(day, "api-proxy-1", e, m)])
         for m in ("error_count", "request_count") for e in history.environments), key=lambda r: (r[2], r[3]))
    assert out["partitions"] == [[str(day), p] for p in sorted(history.proxies)]
    assert [tuple(r) for r in out["query"]] == sorted(
        ("api-proxy-2", e, int(end.timestamp() * 1000), history.expected[(day, "api-proxy-2", e, "request_count")])
        for e in history.environments)

    assert out["own"] == 2 * len(history.proxies) * len(history.environments)
    assert out["unsigned"] == out["unsigned_install"] == (
        "promduck is not signed by DuckDB: make the connection with duckdb.connect(config="
        "{'allow_unsigned_extensions': 'true'}) (or use promduck.connect())")
    assert out["installed"] == [[True, "CUSTOM_PATH"]]
    assert out["installed_total"] == sum(out["totals"].values())
    assert [p.relative_to(tmp_path / "ext").as_posix() for p in (tmp_path / "ext").rglob("*.duckdb_extension")] == \
        [f"v{HOSTS[minor]}/{platform}/promduck.duckdb_extension"]
    supported = (f"promduck {VERSION} supports DuckDB 1.2, 1.3, 1.4, 1.5 and 2.0 (any patch release) on the "
                 "platforms linux_amd64 and linux_amd64_gcc4")
    assert out["old"] == f"{supported}; this DuckDB is v1.1.3 on linux_amd64"
    assert out["new"] == f"{supported}; this DuckDB is v2.1.0 on linux_amd64"
    assert out["mac"] == f"{supported}; this DuckDB is v1.4.5 on osx_arm64"


def test_collector_from_the_venvs_bin(venv, archive, history, prometheus, tmp_path):
    """`promduck-collector` as the venv's PATH finds it: --check, then a collection read back exactly."""
    minor, path = venv
    _, day = archive
    exe = shutil.which("promduck-collector", path=venv_env(path)["PATH"])
    assert exe == str(path / "bin" / "promduck-collector")
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, ["api-proxy-3"], output_dir=tmp_path / "data")
    r = subprocess.run(["promduck-collector", "--config", cfg, "--check", "--date", str(day)], cwd=tmp_path,
                       env=venv_env(path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["promduck-collector", "--version"], env=venv_env(path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"promduck-collector {VERSION}"
    r = subprocess.run(["promduck-collector", "--config", cfg, "--date", str(day)], cwd=tmp_path, env=venv_env(path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = duckdb.connect().execute(
        "SELECT metric_name, map_extract(labels, 'environment')[1], value FROM read_parquet(?) ORDER BY ALL",
        [str(tmp_path / "data" / str(day) / "api-proxy-3.parquet")]).fetchall()
    assert got == sorted((m, e, history.expected[(day, "api-proxy-3", e, m)])
                         for m in ("error_count", "request_count") for e in history.environments)
