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
