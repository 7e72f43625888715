"""examples/notebook/promduck.ipynb executed headless (nbclient, a real ipykernel) on the test
data, as `make notebook` runs it: from examples/notebook, with PROMDUCK_DATA_DIR and
PROMDUCK_PROMETHEUS_URL set, on the wheel (dist/'s, installed with `pip install --target` into a
folder on the kernel's PYTHONPATH: the notebook imports `promduck` and loads its file). No cell may error, and the numbers in its outputs are the
generator's (promfixture.History), computed here independently of the notebook's SQL."""

from __future__ import annotations

import os
from datetime import timedelta

import nbformat
import pytest
from nbclient import NotebookClient

import subprocess
import sys

from helpers import BUILD, EXTENSION, REPO_ROOT, run_collector, write_config
from test_wheel import the_wheel

NOTEBOOK = REPO_ROOT / "examples" / "notebook" / "promduck.ipynb"


@pytest.fixture(scope="module")
def executed(prometheus, history, tmp_path_factory):
    work = tmp_path_factory.mktemp("notebook")
    cfg = write_config(work / "c.yaml", prometheus.url, history.proxies)
    r = run_collector("--config", cfg, "--from", history.days_list[0], "--to", history.days_list[-1], cwd=work)
    assert r.returncode == 0, r.stderr
    nb = nbformat.read(NOTEBOOK, as_version=4)
    site = work / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-cache-dir",
                        "--disable-pip-version-check", "--target", str(site), str(the_wheel())],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    env = {"PROMDUCK_DATA_DIR": str(work / "data"), "PROMDUCK_PROMETHEUS_URL": prometheus.url,
           "PYTHONPATH": str(site)}
    if BUILD != REPO_ROOT / "build":  # else the notebook's own default, the wheel's file
        env["PROMDUCK_EXTENSION"] = str(EXTENSION)
    saved = dict(os.environ)
    for k in list(os.environ):
        # MPLBACKEND: importing streamlit (tests/test_dashboard.py) sets it to Agg in this process
        if k.startswith("PROMDUCK_") or k in ("MPLBACKEND", "PYTHONPATH"):
            del os.environ[k]
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    nb.metadata["promduck_site"] = str(site)
    return nb


def cell(nb, tag):
    found = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(found) == 1, tag
    return found[0]


def text(c) -> str:
    out = []
    for o in c.outputs:
        if o.output_type == "stream":
            out.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            out.append(o.data.get("text/plain", ""))
    return "".join(out)


def table(c) -> list[list[str]]:
    """The rows of the table a %%sql cell shows (JupySQL's text/plain: +---+ framed rows)."""
    rows = [[f.strip() for f in line.strip().strip("|").split("|")]
            for line in text(c).splitlines() if line.startswith("|")]
    assert rows, text(c)
    return rows[1:]  # without the header


def box(c) -> list[list[str]]:
    """The rows of a table DuckDB's relation.show() printed (box drawing; names and types first)."""
    rows = [[f.strip() for f in line.strip().strip("│").split("│")]
            for line in text(c).splitlines() if line.startswith("│")]
    assert len(rows) > 2, text(c)
    return rows[2:]


def num(s: str) -> float:
    return float(s)


def test_no_cell_errors(executed):
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)  # every cell ran
    for c in code:
        for o in c.outputs:
                assert o.output_type != "error", (c.source, o)
                assert not (o.output_type == "stream" and o.name == "stderr" and "Error" in o.text), o.text


def test_loads_the_extension_and_finds_the_days(executed, history):
    wheel_file = f"{executed.metadata['promduck_site']}/promduck/extension/linux_amd64/promduck.duckdb_extension"
    want = wheel_file if BUILD == REPO_ROOT / "build" else EXTENSION
    assert f"promduck from {want}" in text(cell(executed, "setup"))
    last = history.days_list[-1]
    assert (f"{history.days} days; the day shown below: {last}; the proxy: {sorted(history.proxies)[0]}"
            in text(cell(executed, "partitions")))
    assert [r[:2] for r in table(cell(executed, "partitions"))] == [[str(d), str(len(history.proxies))]
                                                                   for d in history.days_list]


def requests(history, day, proxy):
    return sum(history.expected[(day, proxy, e, "request_count")] for e in history.environments)


def test_seed_queries(executed, history):
    day = history.days_list[-1]
    end = f"{day + timedelta(days=1)} 00:00:00"
    first = sorted(history.proxies)[0]  # the day's first proxy by name, from prom_partitions
    got = table(cell(executed, "seed-basic"))
    assert sorted((r[0], r[1], num(r[2]), r[3], r[4]) for r in got) == sorted(
        (end, m, history.expected[(day, first, e, m)], first, str(day))
        for m in ("request_count", "error_count") for e in history.environments)
    got = table(cell(executed, "seed-aggregation"))
    want = sorted(((p, requests(history, day, p)) for p in history.proxies), key=lambda x: -x[1])
    assert [(r[0], num(r[1])) for r in got] == want
    got = table(cell(executed, "seed-time-series"))
    assert [(r[0], r[1], num(r[2])) for r in got] == [(str(d), p, requests(history, d, p))
                                                      for d in history.days_list for p in sorted(history.proxies)]


def test_chart_and_daily_totals(executed, history):
    chart = cell(executed, "chart")
    assert any("image/png" in o.get("data", {}) for o in chart.outputs), chart.outputs
    # the daily totals it plots: every proxy (under its real name) and day
    total = sum(requests(history, d, p) for d in history.days_list for p in history.proxies)
    assert f"{len(history.proxies)} proxies, {history.days} days, {total:.0f} requests" in text(chart)


def test_day_over_day(executed, history):
    assert "promduck_day_over_day" in text(cell(executed, "promduck-sql"))
    got = box(cell(executed, "day-over-day"))
    want = []
    for d in history.days_list:
        for p in sorted(history.proxies):
            total = requests(history, d, p)
            prev = requests(history, d - timedelta(days=1), p) if d != history.days_list[0] else None
            change = None if prev is None else total - prev
            pct = None if prev is None else round(100 * change / prev, 2)
            want.append((str(d), p, total, prev, change, pct))
    none_or = lambda s: None if s == "NULL" else num(s)  # noqa: E731
    assert [(r[0], r[1], num(r[2]), none_or(r[3]), none_or(r[4]), none_or(r[5])) for r in got] == want


def test_live_query_equals_what_was_stored(executed, history):
    day = history.days_list[-1]
    got = table(cell(executed, "live"))
    assert [(r[0], r[1], num(r[2]), num(r[3]), r[4]) for r in got] == [
        (p, e, history.expected[(day, p, e, "request_count")], history.expected[(day, p, e, "request_count")], "True")
        for p in sorted(history.proxies) for e in sorted(history.environments)]
