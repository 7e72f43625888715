"""A differential sandbox test (issue 24): generated layouts under generated settings,
DuckDB's own decision as the oracle.

Each layout is an allowed folder holding a real small archive (daily files
`YYYY-MM-DD/<proxy>.parquet` written with DuckDB's COPY in promduck's schema) and,
at every depth, symlinks (day folder → outside, file → outside, file → inside,
chains, `..` in links, absolute and relative links, subfolders), hard links to
outside files and `..` paths; the settings lock DuckDB (`enable_external_access =
false`) with generated `allowed_directories` / `allowed_paths`. For every generated
path, in the same locked connection:

- a file: DuckDB's `read_parquet('<file>')` vs `prom_metrics(data_dir, date, proxy)`
  selecting exactly that file;
- a data folder: DuckDB's `read_parquet('<dir>/*/*.parquet')` (its glob) vs
  `prom_metrics(data_dir := '<dir>')` and `prom_partitions(data_dir := '<dir>')`;
- a partition to write: DuckDB's `COPY … TO` a probe in the same folder vs
  `prom_collect` writing that partition (a fake Prometheus answers);
- a month to compact: DuckDB's glob of the month's daily files and COPY into the
  month folder vs `prom_compact`.

promduck must refuse everything DuckDB refuses (0 disagreements in that direction);
the other direction (promduck stricter: e.g. an absolute symlink that stays inside,
which RESOLVE_BENEATH refuses) is counted and printed. The outside tree is checksummed
before and after: nothing outside the allowed folders is ever written or deleted.

Fixed seeds in CI; `PROMDUCK_SANDBOX_LAYOUTS=N` runs N layouts per host (`make stress`).
Runs in every DuckDB host of the matrix.
"""

from __future__ import annotations

import json
import os

import pytest

from test_hosts import GCC4_HOSTS, HOSTS, PLATFORM, run_host, stamped_for

LAYOUTS = int(os.environ.get("PROMDUCK_SANDBOX_LAYOUTS", "12"))

SCRIPT = r'''
import duckdb, hashlib, http.server, json, os, random, re, shutil, sys, threading

ext, work, seeds = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")]
work = os.path.realpath(work)

# A fake Prometheus: every instant query answers one sample per proxy it names.
class Fake(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def _answer(self, q):
        import urllib.parse
        params = urllib.parse.parse_qs(q)
        query = " ".join(params.get("query", [""]))
        ts = float(params.get("time", ["0"])[0] or 0)
        proxies = sorted(set(re.findall(r"p\d+", query)))
        result = [{"metric": {"apiproxy": p, "environment": "prod"}, "value": [ts, "5"]} for p in proxies]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._answer(self.path.split("?", 1)[1] if "?" in self.path else "")
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self._answer(self.rfile.read(n).decode())

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
threading.Thread(target=srv.serve_forever, daemon=True).start()
prom = f"http://127.0.0.1:{srv.server_address[1]}"

def q(p):
    return p.replace("'", "''")

def tree_sum(root):
    """Every entry under `root` (not following links): name, kind, content hash."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            if os.path.islink(p):
                out[p] = "link:" + os.readlink(p)
            elif os.path.isdir(p):
                out[p] = "dir"
            else:
                with open(p, "rb") as f:
                    out[p] = hashlib.sha256(f.read()).hexdigest()
    return out

plain = duckdb.connect()

def write_daily(path, day, proxy, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    plain.execute(f"""COPY (SELECT (epoch_ms(DATE '{day}' + INTERVAL 1 DAY))::BIGINT AS timestamp,
        'request_count' AS metric_name, {value}::DOUBLE AS value, '{proxy}' AS api_proxy,
        DATE '{day}' AS date, MAP {{'environment': 'prod'}} AS labels) TO '{q(path)}'""")

def link(target, at, rnd, relative_ok=True):
    """A symlink at `at` to `target`: absolute, or relative (with `..`) at random."""
    os.makedirs(os.path.dirname(at), exist_ok=True)
    if relative_ok and rnd.random() < 0.5:
        target = os.path.relpath(target, os.path.dirname(at))
    os.symlink(target, at)

def build(seed):
    rnd = random.Random(seed)
    base = os.path.join(work, f"L{seed}")
    allowed, outside = os.path.join(base, "allowed"), os.path.join(base, "outside")
    data = os.path.join(allowed, "data")
    # Outside: day folders and files a link may lead to.
    for d in range(1, 4):
        for p in range(1, 3):
            write_daily(f"{outside}/days/2024-01-{10 + d:02d}/p{p}.parquet", f"2024-01-{10 + d:02d}", f"p{p}", 100 + d)
    write_daily(f"{outside}/lone/p7.parquet", "2024-01-05", "p7", 700)
    # Inside: a real archive, January 2024 (closed: compactable) and March.
    days = [f"2024-01-{d:02d}" for d in range(1, 1 + rnd.randint(2, 4))] + ["2024-03-01"]
    for day in days:
        for p in range(1, 1 + rnd.randint(1, 3)):
            write_daily(f"{data}/{day}/p{p}.parquet", day, f"p{p}", rnd.randint(1, 50))
    kinds = ["day_out", "file_out", "file_in", "chain_out", "chain_in", "dotdot_out", "sub_out",
             "hard_out", "deep_out", "dir_in", "abs_in"]
    # Some layouts keep January clean (links only in March): its compaction is allowed.
    clean = rnd.random() < 0.35
    for i in range(rnd.randint(3, 7)):
        k = rnd.choice(kinds)
        day = "2024-03-01" if clean else rnd.choice(days[:-1])
        if clean and k in ("day_out", "dir_in"):
            continue
        if k == "day_out":
            link(f"{outside}/days/2024-01-{rnd.randint(11, 13)}", f"{data}/2024-01-{20 + i:02d}", rnd)
        elif k == "file_out":
            link(f"{outside}/days/2024-01-11/p1.parquet", f"{data}/{day}/p{10 + i}.parquet", rnd)
        elif k == "file_in":
            link(f"{data}/{day}/p1.parquet", f"{data}/{day}/p{10 + i}.parquet", rnd)
        elif k == "chain_out":
            link(f"{outside}/lone/p7.parquet", f"{allowed}/chain{i}.parquet", rnd)
            link(f"{allowed}/chain{i}.parquet", f"{data}/{day}/p{10 + i}.parquet", rnd)
        elif k == "chain_in":
            link(f"{data}/{day}/p1.parquet", f"{allowed}/chain{i}.parquet", rnd, relative_ok=True)
            link(f"{allowed}/chain{i}.parquet", f"{data}/{day}/p{10 + i}.parquet", rnd)
        elif k == "dotdot_out":
            os.makedirs(f"{data}/{day}", exist_ok=True)
            rel = "../../../outside/days/2024-01-12/p2.parquet"
            os.symlink(rel, f"{data}/{day}/p{10 + i}.parquet")
        elif k == "sub_out":
            link(f"{outside}/days/2024-01-13", f"{data}/{day}/team{i}", rnd)
        elif k == "hard_out":
            os.makedirs(f"{data}/{day}", exist_ok=True)
            os.link(f"{outside}/days/2024-01-11/p2.parquet", f"{data}/{day}/p{10 + i}.parquet")
        elif k == "deep_out":
            os.makedirs(f"{data}/{day}/deep{i}/a", exist_ok=True)
            link(f"{outside}/days/2024-01-12", f"{data}/{day}/deep{i}/a/b", rnd)
        elif k == "dir_in":
            link(f"{data}/{day}", f"{data}/2024-01-{20 + i:02d}", rnd)
        elif k == "abs_in":
            os.symlink(f"{data}/{day}/p1.parquet", f"{data}/{day}/p{10 + i}.parquet")
    # Settings.
    choice = rnd.randrange(5)
    if choice == 0:
        dirs, paths = [allowed], []
    elif choice == 1:
        dirs, paths = [data], []
    elif choice == 2:
        dirs, paths = [f"{data}/{days[0]}"], []
    elif choice == 3:
        dirs, paths = [allowed, f"{outside}/days/2024-01-12"], []
    else:
        dirs, paths = [], [f"{data}/{days[0]}/p1.parquet"]
    return base, allowed, outside, data, days, dirs, paths

def err_of(c, sql):
    try:
        rows = c.execute(sql).fetchall()
        return None, rows
    except Exception as e:
        return str(e).split("\n")[0], None

def refused(e):
    return e is not None and ("Permission Error" in e or "disabled by configuration" in e)

totals = {"layouts": 0, "paths": 0, "checks": 0, "bad": [], "stricter": 0, "stricter_examples": [],
          "outside_changed": [], "collect_status": {}, "compact_status": {}, "version": duckdb.__version__, "unsupported": 0}

def compare(kind, path, duck_e, pd_e, pd_rows=None):
    totals["checks"] += 1
    duck_refused = refused(duck_e)
    pd_refused = refused(pd_e) or (pd_rows is not None and any(
        r and any(isinstance(x, str) and refused(x) for x in r) for r in pd_rows))
    if duck_refused and not pd_refused:
        totals["bad"].append({"kind": kind, "path": path, "duckdb": duck_e, "promduck": pd_e,
                              "rows": repr(pd_rows)[:300]})
    elif pd_refused and not duck_refused and duck_e is None:
        totals["stricter"] += 1
        if len(totals["stricter_examples"]) < 5:
            totals["stricter_examples"].append({"kind": kind, "path": path, "promduck": pd_e})

for seed in seeds:
    base, allowed, outside, data, days, dirs, paths = build(seed)
    before = tree_sum(outside)
    c = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    c.execute(f"LOAD '{ext}'")
    try:
        lst = lambda xs: "[" + ", ".join(f"'{q(x)}'" for x in xs) + "]"
        c.execute(f"SET allowed_directories = {lst(dirs + [prom + '/'])}")
        if paths:
            c.execute(f"SET allowed_paths = {lst(paths)}")
    except duckdb.Error:
        totals["unsupported"] += 1
        shutil.rmtree(base, ignore_errors=True)
        continue
    c.execute("SET enable_external_access = false")
    totals["layouts"] += 1
    # Data folders: the archive, spelled plainly and through `..`, and its parents.
    folders = [data, f"{data}/../data", f"{data}/{days[0]}/../..", allowed, f"{data}/../../outside/days",
               f"{data}/{days[0]}/..", outside + "/days"]
    for d in folders:
        totals["paths"] += 1
        duck_e, _ = err_of(c, f"SELECT count(*) FROM read_parquet('{q(d)}/*/*.parquet')")
        for fn in ("prom_metrics", "prom_partitions"):
            pd_e, _ = err_of(c, f"SELECT count(*) FROM {fn}(data_dir := '{q(d)}')")
            compare(fn + " folder", d, duck_e, pd_e)
    # Every file under the data folder (links included), read one at a time.
    for d, dirs_, files in os.walk(data):
        for n in files + [x for x in dirs_ if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, data).split(os.sep)
            if len(rel) < 2 or not n.endswith(".parquet") or not re.fullmatch(r"\d{4}-\d\d-\d\d", rel[0]):
                continue
            day, proxy = rel[0], "/".join(rel[1:])[: -len(".parquet")]
            totals["paths"] += 1
            duck_e, _ = err_of(c, f"SELECT count(*) FROM read_parquet('{q(p)}')")
            pd_e, _ = err_of(c, f"SELECT count(*) FROM prom_metrics(data_dir := '{q(data)}', date := '{day}', proxy := '{q(proxy)}')")
            compare("prom_metrics file", p, duck_e, pd_e)
            dotted = f"{data}/{day}/../{day}/{n}" if len(rel) == 2 else None
            if dotted:
                totals["paths"] += 1
                duck_e, _ = err_of(c, f"SELECT count(*) FROM read_parquet('{q(dotted)}')")
                compare("prom_metrics file (..)", dotted, duck_e, pd_e)
    # Writes: prom_collect of a day whose folder may be a link out, compared with
    # DuckDB's COPY of a probe into the same folder.
    cfg = os.path.join(allowed if dirs and dirs[0] == allowed else data, "collect.json")
    for d in sorted(os.listdir(data)):
        if not re.fullmatch(r"2024-01-\d\d", d):
            continue
        totals["paths"] += 1
        probe = f"{data}/{d}/.oracle-probe.parquet"
        duck_e, _ = err_of(c, f"COPY (SELECT 1 AS x) TO '{q(probe)}'")
        if duck_e is None and os.path.lexists(probe):
            os.remove(probe)
        try:
            with open(cfg, "w") as f:
                json.dump({"apiProxies": ["p1", "p5"], "prometheus": {"url": prom, "timeout": "5s", "retries": 0,
                           "metrics": [{"name": "request_count", "query": 'sum(increase(c{apiproxy="%s"}[1d]))'}]},
                           "storage": {"outputDir": data}}, f)
        except OSError:
            continue
        pd_e, rows = err_of(c, f"SELECT status, error FROM prom_collect(config := '{q(cfg)}', date := '{d}')")
        compare("prom_collect", f"{data}/{d}", duck_e, pd_e, rows)
        for r in rows or []:
            totals["collect_status"][r[0]] = totals["collect_status"].get(r[0], 0) + 1
        os.remove(cfg)
    # Compaction of January (last: it changes the layout).
    totals["paths"] += 1
    duck_e, _ = err_of(c, f"SELECT count(*) FROM read_parquet('{q(data)}/2024-01-*/*.parquet')")
    if duck_e is None:
        os.makedirs(f"{data}/2024-01", exist_ok=True)
        duck_e, _ = err_of(c, f"COPY (SELECT 1 AS x) TO '{q(data)}/2024-01/.oracle-probe.parquet'")
        if os.path.lexists(f"{data}/2024-01/.oracle-probe.parquet"):
            os.remove(f"{data}/2024-01/.oracle-probe.parquet")
    with open(os.path.join(data, "compact.json"), "w") as f:
        json.dump({"apiProxies": ["p1"], "prometheus": {"url": prom, "metrics": [{"name": "m", "query": "up{a=\"%s\"}"}]},
                   "storage": {"outputDir": data}}, f)
    pd_e, rows = err_of(c, f"SELECT status, error FROM prom_compact(config := '{q(data)}/compact.json', month := '2024-01', remove_daily_after := '0s')")
    compare("prom_compact", f"{data}/2024-01", duck_e, pd_e, rows)
    for r in rows or []:
        totals["compact_status"][r[0]] = totals["compact_status"].get(r[0], 0) + 1
        if r[0] == "failed" and len(totals.setdefault("compact_errors", [])) < 3:
            totals["compact_errors"].append(r[1])
    after = tree_sum(outside)
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))[:5]
        totals["outside_changed"].append({"seed": seed, "changed": [list(x) for x in changed]})
    c.close()
    shutil.rmtree(base, ignore_errors=True)

srv.shutdown()
totals["bad_count"] = len(totals["bad"])
totals["bad"] = totals["bad"][:10]
print(json.dumps(totals))
'''


def seeds_for(host: str) -> str:
    offset = sum(map(ord, host)) * 1000
    return ",".join(str(offset + i) for i in range(LAYOUTS))


@pytest.mark.parametrize("host", list(HOSTS))
def test_promduck_refuses_everything_duckdb_refuses(host, tmp_path):
    minor = host
    ext = stamped_for(PLATFORM + "_gcc4" if minor in GCC4_HOSTS else PLATFORM)
    out = run_host(host, SCRIPT, [ext, tmp_path, seeds_for(host)], tmp_path)
    print(f"\nDuckDB {out['version']}: layouts {out['layouts']} (settings unsupported: {out['unsupported']}), "
          f"paths {out['paths']}, checks {out['checks']}, "
          f"disagreements DuckDB refused / promduck allowed: {out['bad_count']}, "
          f"promduck stricter: {out['stricter']}; prom_collect partitions {out['collect_status']}, "
          f"prom_compact months {out['compact_status']}")
    for e in out.get("compact_errors", []):
        print("  compact failed:", e)
    for ex in out["stricter_examples"]:
        print("  stricter:", json.dumps(ex))
    assert out["outside_changed"] == [], out["outside_changed"]
    assert out["bad_count"] == 0, json.dumps(out["bad"], indent=1)
    if minor != "1.2":  # allowed_directories exists from DuckDB 1.3
        assert out["layouts"] == LAYOUTS
