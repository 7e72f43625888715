"""What the collector says is true (issue 25, item 9): compaction of a month the archive
holds nothing of says so (no path to a file that does not exist), a month of year 0000 is
refused, and YAML merge keys (`<<: *anchor`, which the Go tool's YAML library applies)
work in the config as they did there."""

from __future__ import annotations


from helpers import run_collector, write_config


def test_compacting_a_month_with_no_partitions_says_so(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9", ["p1"], output_dir=data)
    r = run_collector("--config", cfg, "--compact", "--month", "2023-01")
    assert r.returncode == 0, r.stderr
    assert "nothing to compact: the archive holds no partition of this month" in r.stderr, r.stderr
    assert 'status="empty"' in r.stderr and "2023-01.parquet" not in r.stderr, r.stderr
    assert list(data.iterdir()) == [], "no month folder is created for nothing"
    for bad in ("0000-01", "2023-13", "23-01"):
        r = run_collector("--config", cfg, "--compact", "--month", bad)
        assert r.returncode != 0 and f'invalid month "{bad}"' in r.stderr, (bad, r.stderr)


def test_yaml_merge_keys_are_applied(tmp_path):
    text = """
apiProxies: [a, b]
prometheus:
  url: "http://127.0.0.1:9"
  retries: 0
  metrics:
    - &base
      name: m1
      query: 'up{apiproxy="%s"}'
      labels: [apiproxy]
      step: 1h
    - <<: *base
      name: m2
    - <<: *base
      name: m3
      step: 30m
storage:
  outputDir: ./data
"""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    r = run_collector("--config", cfg, "--check", cwd=tmp_path)
    assert "config " in r.stdout and "ok (2 proxies, 3 metrics" in r.stdout, r.stdout + r.stderr
    # A typo inside a merged mapping is still an error naming the key.
    cfg.write_text(text.replace("      name: m2", "      name: m2\n      stepp: 1h"))
    r = run_collector("--config", cfg, "--check", cwd=tmp_path)
    assert r.returncode != 0 and "unknown field `stepp`" in r.stderr, r.stderr


def test_durations_take_promql_days(tmp_path):
    """`step: 1d` (the unit of the `[1d]` beside it) and `interval: 1d` are a day of 24 hours;
    a unit neither Go nor PromQL has is an error naming it and the valid ones."""
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9", ["a"], output_dir=tmp_path / "data",
                       metrics=[{"name": "m", "query": 'sum(increase(x{apiproxy="%s"}[1d]))', "step": "1d"}],
                       top_extra={"interval": "1d"})
    r = run_collector("--config", cfg, "--check")
    assert "ok (1 proxies, 1 metrics" in r.stdout, r.stdout + r.stderr
    cfg.write_text(cfg.read_text().replace('"step": "1d"', '"step": "1y"'))
    r = run_collector("--config", cfg, "--check")
    assert r.returncode != 0 and "unknown unit `y` in duration `1y` (valid units: ns, us, ms, s, m, h, d)" in r.stderr, r.stderr


def test_make_help_lists_every_documented_target():
    """`make help` prints each `## target:` comment of the Makefile, and every target it
    names is one make knows."""
    import re
    import subprocess

    from helpers import REPO_ROOT
    text = (REPO_ROOT / "Makefile").read_text()
    documented = re.findall(r"^## ([a-z0-9-]+):", text, re.M)
    out = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "help"], capture_output=True, text=True, check=True).stdout
    listed = re.findall(r"^  ([a-z0-9-]+): ", out, re.M)
    assert listed == documented and {"help", "build", "test", "demo"} <= set(listed), out
    for target in listed:
        assert re.search(rf"^{re.escape(target)}:", text, re.M), f"`make help` names {target}, which the Makefile lacks"


def test_check_speaks_json_lines_and_says_a_missing_folder_can_be_created(prometheus, history, tmp_path):
    """`--check --log-format json` prints one JSON object per line (a cron job appends it to
    a JSON-lines log); a folder that does not exist yet is "can be created", not "writable"."""
    import json as _json

    from helpers import DEFAULT_METRICS
    data = tmp_path / "not-yet"
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, history.proxies[:2], DEFAULT_METRICS, output_dir=data)
    text = run_collector("--config", cfg, "--check", "--date", history.days_list[0])
    assert text.returncode == 0, text.stdout + text.stderr
    assert f"output {data}: ok (does not exist yet; can be created)" in text.stdout, text.stdout
    assert not data.exists(), "--check creates nothing"
    r = run_collector("--config", cfg, "--check", "--date", history.days_list[0], "--log-format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [_json.loads(line) for line in r.stdout.splitlines()]
    # The same findings as the text form, each a record.
    assert [x["message"] for x in lines] == text.stdout.splitlines()
    assert [x["check"] for x in lines if x["check"] != "gaps"][:4] == ["config", "output", "prometheus", "day"]
    metrics = [x for x in lines if x["check"] == "metric"]
    assert [x["status"] for x in metrics] == ["ok"] * len(DEFAULT_METRICS)
    assert all(x["message"].startswith(f"metric {m['name']}: ok (") for x, m in zip(metrics, DEFAULT_METRICS))


def test_compaction_says_it_waits_and_reports_the_time_it_took(prometheus, history, tmp_path):
    """The wait of removeDailyAfter before the daily files go is announced (it looked like a
    hang), and prom_compact's `seconds` includes it (it said 0.007 for a 30 s call)."""
    import duckdb

    from helpers import DEFAULT_METRICS, EXTENSION
    data = tmp_path / "data"
    cfg = write_config(tmp_path / "c.yaml", prometheus.url, history.proxies[:1], DEFAULT_METRICS, output_dir=data,
                       storage_extra={"compaction": {"removeDailyAfter": "1s"}})
    day = history.days_list[0]
    assert run_collector("--config", cfg, "--date", day).returncode == 0
    r = run_collector("--config", cfg, "--compact", "--month", day.strftime("%Y-%m"))
    assert r.returncode == 0, r.stderr
    assert "month file visible; removing the daily files it took in once removeDailyAfter has passed" in r.stderr
    assert 'wait="1.0s"' in r.stderr or 'wait="0.9s"' in r.stderr, r.stderr
    # Again through prom_compact, after prom_collect re-collected the day (it leaves the daily
    # file for the next compaction; the collector would compact again at once).
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    con.execute("SELECT count(*) FROM prom_collect(config := ?, date := ?)", [str(cfg), day]).fetchall()
    (status, seconds), = con.execute("SELECT status, seconds FROM prom_compact(config := ?, month := ?)",
                                     [str(cfg), day.strftime("%Y-%m")]).fetchall()
    # The reported time includes the wait the product itself made (at least removeDailyAfter).
    assert status == "compacted" and seconds >= 1.0, (status, seconds)
