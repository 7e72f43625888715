"""The sandbox at every depth (issue 24, items 3 and 6), in every DuckDB host.

Item 3: with `allowed_directories` = a folder and external access off, a day folder or
a file below it that links outside is neither read (`prom_metrics`,
`prom_partitions`), nor written through (`prom_collect`), nor deleted behind
(`prom_compact`): each is refused, naming the function and the path, and the files
outside are untouched (they were read, written and 16 of them deleted before).

Item 6: a config in an allowed folder whose `tls.caFile` (also certFile/keyFile,
passwordFile) names a path outside is refused before anything looks at that path:
the error is the same whether the file exists or not.
"""

from __future__ import annotations

import pytest

from test_hosts import GCC4_HOSTS, HOSTS, PLATFORM, run_host, stamped_for

SCRIPT = r'''
import duckdb, hashlib, http.server, json, os, re, sys, threading

ext, work = sys.argv[1], os.path.realpath(sys.argv[2])

class Fake(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def _answer(self, q):
        import urllib.parse
        params = urllib.parse.parse_qs(q)
        query = " ".join(params.get("query", [""]))
        ts = float(params.get("time", ["0"])[0] or 0)
        result = [{"metric": {"apiproxy": p, "environment": "prod"}, "value": [ts, "5"]}
                  for p in sorted(set(re.findall(r"p\d+", query)))]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._answer(self.path.split("?", 1)[1] if "?" in self.path else "")
    def do_POST(self):
        self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
threading.Thread(target=srv.serve_forever, daemon=True).start()
prom = f"http://127.0.0.1:{srv.server_address[1]}"

plain = duckdb.connect()
def daily(path, day, proxy):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    plain.execute(f"""COPY (SELECT (epoch_ms(DATE '{day}' + INTERVAL 1 DAY))::BIGINT AS timestamp,
        'request_count' AS metric_name, 7.0::DOUBLE AS value, '{proxy}' AS api_proxy,
        DATE '{day}' AS date, MAP {{'environment': 'prod'}} AS labels) TO '{path}'""")

def snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for n in files:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.join(d, n)] = hashlib.sha256(f.read()).hexdigest()
    return out

allowed, outside = f"{work}/allowed", f"{work}/outside"
data = f"{allowed}/data"
for day in ("2024-01-02", "2024-01-03"):
    for p in ("p1", "p2"):
        daily(f"{outside}/{day}/{p}.parquet", day, p)
daily(f"{outside}/lone/p3.parquet", "2024-01-04", "p3")
daily(f"{data}/2024-01-01/p1.parquet", "2024-01-01", "p1")
os.makedirs(f"{data}/2024-01-04")
os.symlink(f"{outside}/2024-01-02", f"{data}/2024-01-02")          # day folder → outside (absolute)
os.symlink("../../../outside/2024-01-03", f"{data}/2024-01-03")   # day folder → outside (relative, ..)
os.symlink(f"{outside}/lone/p3.parquet", f"{data}/2024-01-04/p3.parquet")  # file → outside
before = snapshot(outside)

def locked():
    c = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    c.execute(f"LOAD '{ext}'")
    c.execute(f"SET allowed_directories = ['{allowed}', '{prom}/']")
    c.execute("SET enable_external_access = false")
    return c

def run(c, sql):
    try:
        return {"rows": [[str(x) for x in r] for r in c.execute(sql).fetchall()]}
    except Exception as e:
        return {"error": str(e).split("\n")[0]}

c = locked()
out = {"version": duckdb.__version__}
out["duckdb_glob"] = run(c, f"SELECT count(*) FROM read_parquet('{data}/*/*.parquet')")
out["metrics"] = run(c, f"SELECT count(*) FROM prom_metrics(data_dir := '{data}')")
out["metrics_day"] = run(c, f"SELECT count(*) FROM prom_metrics(data_dir := '{data}', date := '2024-01-02')")
out["metrics_file"] = run(c, f"SELECT count(*) FROM prom_metrics(data_dir := '{data}', date := '2024-01-04', proxy := 'p3')")
out["partitions"] = run(c, f"SELECT count(*) FROM prom_partitions(data_dir := '{data}')")
out["metrics_inside"] = run(c, f"SELECT count(*) FROM prom_metrics(data_dir := '{data}', date := '2024-01-01')")
cfg = f"{allowed}/collect.json"
with open(cfg, "w") as f:
    json.dump({"apiProxies": ["p1", "p2", "p9"], "prometheus": {"url": prom, "retries": 0, "metrics": [
        {"name": "request_count", "query": 'sum(increase(c{apiproxy="%s"}[1d]))'}]},
        "storage": {"outputDir": data}}, f)
out["collect"] = run(c, f"SELECT api_proxy, status, error FROM prom_collect(config := '{cfg}', date := '2024-01-02')")
out["compact"] = run(c, f"SELECT status, removed, error FROM prom_compact(config := '{cfg}', month := '2024-01', remove_daily_after := '0s')")
out["outside_unchanged"] = snapshot(outside) == before
out["outside_files"] = len(snapshot(outside))
out["new_outside"] = sorted(set(snapshot(outside)) - set(before))

# Item 6: the same answer for an existing and a missing file outside.
os.makedirs(f"{allowed}/cfg", exist_ok=True)
answers = {}
for key in ("caFile", "certFile", "passwordFile"):
    for name, target in (("exists", f"{outside}/lone/p3.parquet"), ("missing", f"{outside}/nope/none.pem")):
        prom_cfg = {"url": prom, "metrics": [{"name": "m", "query": 'up{a="%s"}'}]}
        if key == "passwordFile":
            prom_cfg.update({"username": "u", "passwordFile": target})
        elif key == "certFile":
            prom_cfg["tls"] = {"certFile": target, "keyFile": target}
        else:
            prom_cfg["tls"] = {"caFile": target}
        path = f"{allowed}/cfg/{key}-{name}.json"
        with open(path, "w") as f:
            json.dump({"apiProxies": ["p1"], "prometheus": prom_cfg, "storage": {"outputDir": data}}, f)
        e = run(c, f"SELECT * FROM prom_collect(config := '{path}', date := '2024-01-02')").get("error", "")
        answers.setdefault(key, {})[name] = e.replace(path, "<cfg>")
out["oracle"] = answers
srv.shutdown()
print(json.dumps(out))
'''


@pytest.mark.parametrize("host", list(HOSTS))
def test_links_below_an_allowed_folder_are_never_followed_out(host, tmp_path):
    ext = stamped_for(PLATFORM + "_gcc4" if host in GCC4_HOSTS else PLATFORM)
    out = run_host(host, SCRIPT, [ext, tmp_path], tmp_path)
    # Read: refused, naming the function and the path (DuckDB 2.0's own glob refuses too).
    for k in ("metrics", "metrics_day", "metrics_file", "partitions"):
        e = out[k].get("error", "")
        assert "Permission Error: prom_" in e and "cannot read" in e and str(tmp_path) in e, (k, out[k])
    assert out["metrics_inside"] == {"rows": [["1"]]}, out
    # Write-through and delete-behind: nothing outside changes, nothing new appears there.
    assert out["outside_unchanged"], out
    assert out["outside_files"] == 5 and out["new_outside"] == [], out
    collect = out["collect"]
    if "rows" in collect:  # DuckDB 1.5 keeps a URL entry of allowed_directories as a path
        for proxy, status, error in collect["rows"]:
            assert status == "failed" and "allowed_directories" in error, collect
    compact = out["compact"]
    assert "rows" in compact and compact["rows"][0][0] == "failed", compact
    assert compact["rows"][0][1] == "0" and "leads outside" in compact["rows"][0][2], compact


@pytest.mark.parametrize("host", list(HOSTS))
def test_a_config_cannot_tell_whether_a_file_outside_exists(host, tmp_path):
    ext = stamped_for(PLATFORM + "_gcc4" if host in GCC4_HOSTS else PLATFORM)
    out = run_host(host, SCRIPT, [ext, tmp_path], tmp_path)
    for key, answers in out["oracle"].items():
        exists = answers["exists"].replace("lone/p3.parquet", "X")
        missing = answers["missing"].replace("nope/none.pem", "X")
        assert "Permission Error" in answers["exists"], (key, answers)
        assert exists == missing, (key, answers)
