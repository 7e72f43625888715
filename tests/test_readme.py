"""The README's examples, run as written (issue 32): a broken example fails CI.

Every fenced `bash`/`sh`, `sql` and `python` block of README.md runs here, in a scratch
folder laid out like a checkout after `make build` (build/, sql/, examples/, .venv linked;
its own $HOME, so `INSTALL` stays out of the developer's), against the demo's Prometheus
started by the demo's own script (`scripts/demo-prometheus.py`: three proxies, a history
of days before "now" and "now"'s day in full) and an archive collected from it with
`config/demo.yaml`. A block is left out only when the line before its fence says why:
`<!-- readme-test: skip: <reason> -->`, and the reason must name the test that runs that
example instead (`tests/test_<name>.py`) or the make target that is it.

The demo's Prometheus holds the week before the real now (what `make demo` starts: live
examples at DuckDB's `now()` find samples) and, backfilled beside it (`--also`), the
README's days 2024-02-26 .. 2024-04-01. The product's "now" is fixed
(`PROMDUCK_NOW=2024-04-01T06:00:00Z`), so the README's literal days (`2024-03-01`,
`--from 2024-03-01 --to 2024-03-31`) and promduck's relative ones (`last_days := 7`,
`--once`, a live query at promduck's default "now") fall where the demo has data too.
What differs from a checkout, said once: the demo's port (a free one, for 19090), and
`config/config.yaml` is the sample with `prometheus.url` pointed at the demo and
`compaction.removeDailyAfter: 0s` (the 30 s wait is tested in tests/test_compaction.py).

Checks: every command exits 0 (the daemon and `--serve`, stopped by SIGTERM after they
said they run, exit 0 too); every SQL statement that returns rows returns at least one
(an example that silently answers nothing is broken too); every Python block exits 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import REPO_ROOT, wait_until
from promfixture import free_port

README = REPO_ROOT / "README.md"
NOW = "2024-04-01T06:00:00Z"
ALSO = "2024-02-26:36"  # the README's days: 2024-02-26 .. 2024-03-31, and 2024-04-01 in full
DEMO_PORT = 19090
SKIP = re.compile(r"<!--\s*readme-test:\s*skip:\s*(.+?)\s*-->")
MODE_FLAGS = ("--once", "--date", "--from", "--check", "--compact", "--serve", "--inventory", "--help", "--version")


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    skip: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def blocks() -> list[Block]:
    out, lines = [], README.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        skip = SKIP.search(prev)
        out.append(Block(start + 1, lang, "\n".join(lines[start + 1:j]), skip.group(1) if skip else None))
        i = j + 1
    return [b for b in out if b.lang in ("bash", "sh", "sql", "python")]


def commands(text: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comment lines dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    return out


def long_running(cmd: str) -> str | None:
    """What a command that runs until stopped says once it runs: the collector's daemon
    (no mode flag) and its remote-read server."""
    if "promduck-collector" not in cmd:
        return None
    if "--serve" in cmd:
        return "serving the archive over Prometheus remote read"
    if not any(f in cmd for f in MODE_FLAGS):
        return "waiting for the next collection"
    return None


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A checkout after `make build` and `make demo`, with the demo's Prometheus running."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("build", "sql", "examples", "scripts", "tests", ".venv", "deploy"):
        (work / name).symlink_to(REPO_ROOT / name)
    (work / "config").mkdir()
    (work / "home").mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    demo = (REPO_ROOT / "config" / "demo.yaml").read_text()
    assert f"http://127.0.0.1:{DEMO_PORT}" in demo
    (work / "config" / "demo.yaml").write_text(demo.replace(f"http://127.0.0.1:{DEMO_PORT}", url))
    sample = (REPO_ROOT / "config" / "config.yaml").read_text()
    assert 'url: "http://prometheus:9090"' in sample
    sample = sample.replace('url: "http://prometheus:9090"', f'url: "{url}"')
    assert sample.rstrip().splitlines()[-1].startswith("  ") and "\nstorage:" in sample.split("\n\n# ")[-1]
    (work / "config" / "config.yaml").write_text(sample.rstrip() + "\n  compaction:\n    removeDailyAfter: 0s\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMDUCK_", "AWS_"))}
    env.update(HOME=str(work / "home"))
    demo_cmd = [str(REPO_ROOT / ".venv/bin/python"), str(REPO_ROOT / "scripts/demo-prometheus.py"),
                "--workdir", str(work / ".cache/demo"), "--port", str(port), "--also", ALSO]
    # The demo as `make demo` starts it (the week before the real now), plus the README's days.
    r = subprocess.run([*demo_cmd, "start"], env=env, capture_output=True, text=True, timeout=600)
    env.update(PROMDUCK_NOW=NOW)
    assert r.returncode == 0, r.stderr
    try:
        # What `make demo` does next: collect the demo's days, INSTALL the extension for the CLI.
        r = subprocess.run(["build/promduck-collector", "--config", "config/demo.yaml",
                            "--from", "2024-02-26", "--to", "2024-03-31"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        r = subprocess.run([".venv/bin/duckdb", "-unsigned", "-c", "INSTALL promduck FROM 'build/repository'"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        yield work, env, port
    finally:
        subprocess.run([*demo_cmd, "stop"], env=env, capture_output=True, timeout=60)


def localize(text: str, port: int) -> str:
    """The one substitution: the demo's port."""
    return text.replace(f"127.0.0.1:{DEMO_PORT}", f"127.0.0.1:{port}")


def run_command(cmd: str, work: Path, env: dict, where: Block) -> None:
    ready = long_running(cmd)
    if ready is None:
        r = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"{where}: `{cmd}` exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        return
    log = work / "long-running.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: ready in log.read_text() or proc.poll() is not None, timeout=120,
                   what=f"{where}: `{cmd}` to say {ready!r}")
        assert proc.poll() is None, f"{where}: `{cmd}` exited {proc.returncode}\n{log.read_text()[-3000:]}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, f"{where}: `{cmd}` after SIGTERM\n{log.read_text()[-3000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def results(stdout: str) -> list[list]:
    """The JSON arrays the CLI's -json mode printed, one per statement that returned rows."""
    out, dec, i = [], json.JSONDecoder(), 0
    while True:
        while i < len(stdout) and stdout[i].isspace():
            i += 1
        if i >= len(stdout):
            return out
        value, i = dec.raw_decode(stdout, i)
        out.append(value)


def statements(sql: str) -> list[str]:
    text = "\n".join(line.split("--")[0] if not line.lstrip().startswith("--") else "" for line in sql.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


def test_every_example_is_run_unless_marked_with_a_reason():
    """The skipped blocks are these, each with a reason naming its test; the rest run."""
    skipped = {b.line: b.skip for b in blocks() if b.skip}
    for line, reason in skipped.items():
        assert re.search(r"test_\w+\.py|make \w+", reason), f"README.md:{line}: the reason names no test: {reason}"
    assert len(blocks()) - len(skipped) >= 12, "most examples must run"


@pytest.mark.parametrize("block", [b for b in blocks() if not b.skip], ids=str)
def test_readme_example_runs_as_written(checkout, block):
    work, env, port = checkout
    text = localize(block.text, port)
    if block.lang in ("bash", "sh"):
        for cmd in commands(text):
            run_command(cmd, work, env, block)
    elif block.lang == "sql":
        # The extension is INSTALLed (as `make demo` does); a block that does not LOAD it
        # itself gets it LOADed, as the CLI session the README describes has it.
        prelude = "" if re.search(r"^\s*LOAD\b", text, re.M) else "LOAD promduck;\n"
        r = subprocess.run([".venv/bin/duckdb", "-unsigned", "-json", "-c", prelude + text], cwd=work, env=env,
                           capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        assert r.returncode == 0 and not r.stderr.strip(), f"{block}: exit {r.returncode}\n{r.stderr[-3000:]}"
        queries = [s for s in statements(text) if re.match(r"(SELECT|FROM|WITH)\b", s, re.I)]
        got = results(r.stdout)
        assert len(got) == len(queries), f"{block}: {len(queries)} queries, {len(got)} results\n{r.stdout[-2000:]}"
        for q, rows in zip(queries, got):
            assert rows, f"{block}: no rows from\n{q}"
    else:
        r = subprocess.run([".venv/bin/python", "-c", text], cwd=work, env=env, capture_output=True, text=True,
                           timeout=600, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"{block}: exit {r.returncode}\n{r.stderr[-3000:]}"
