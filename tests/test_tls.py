"""TLS against a real Prometheus serving HTTPS and requiring client certificates (mTLS):
`prometheus.tls.caFile`, `certFile`/`keyFile` and `insecureSkipVerify`, in the collector and
in the extension's live functions. Certificates are made with the openssl CLI per run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import pytest

from helpers import EXTENSION, expected_rows, normalise, read_rows, run_collector, write_config
from promfixture import PrometheusServer


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def make_pki(d: Path) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=promduck test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, ext in [("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")]:
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture(scope="module")
def tls_server(history, prometheus_bin, tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    server = PrometheusServer(history.path, tmp_path_factory.mktemp("prom-tls"), bin_dir=prometheus_bin,
                              tls={"cert": pki["server.pem"], "key": pki["server.key"], "client_ca": pki["ca.pem"],
                                   "ca": pki["ca.pem"], "client_cert": pki["client.pem"], "client_key": pki["client.key"]})
    server.start()
    try:
        yield server, pki
    finally:
        server.stop()


def test_mtls_collects_exact_values(tls_server, history, tmp_path):
    server, pki = tls_server
    assert server.url.startswith("https://")
    tls = {"caFile": str(pki["ca.pem"]), "certFile": str(pki["client.pem"]), "keyFile": str(pki["client.key"])}
    cfg = write_config(tmp_path / "c.yaml", server.url, ["api-proxy-1"], prometheus_extra={"tls": tls})
    day = history.days_list[0]
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], ["api-proxy-1"])


def test_missing_client_certificate_is_refused(tls_server, history, tmp_path):
    server, pki = tls_server
    cfg = write_config(tmp_path / "c.yaml", server.url, ["api-proxy-1"],
                       prometheus_extra={"tls": {"caFile": str(pki["ca.pem"])}, "retries": 0})
    r = run_collector("--config", cfg, "--date", history.days_list[0], cwd=tmp_path)
    assert r.returncode == 1
    assert f"cannot reach Prometheus at {server.url}/" in r.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))


def test_unknown_server_certificate_is_refused_unless_verification_is_off(tls_server, history, tmp_path):
    server, pki = tls_server
    client = {"certFile": str(pki["client.pem"]), "keyFile": str(pki["client.key"])}
    cfg = write_config(tmp_path / "c.yaml", server.url, ["api-proxy-1"], prometheus_extra={"tls": client, "retries": 0})
    r = run_collector("--config", cfg, "--date", history.days_list[0], cwd=tmp_path)
    assert r.returncode == 1
    assert "certificate" in r.stderr.lower() or "UnknownIssuer" in r.stderr, r.stderr
    cfg = write_config(tmp_path / "c.yaml", server.url, ["api-proxy-1"],
                       prometheus_extra={"tls": dict(client, insecureSkipVerify=True)})
    day = history.days_list[1]
    r = run_collector("--config", cfg, "--date", day, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert normalise(read_rows(tmp_path / "data")) == expected_rows(history, [day], ["api-proxy-1"])


def test_bad_tls_files_are_config_errors(tls_server, tmp_path):
    server, pki = tls_server
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cases = [
        ({"caFile": str(tmp_path / "missing.pem")}, "tls.caFile"),
        ({"certFile": str(pki["client.pem"])}, "certFile and keyFile go together"),
        ({"caFile": str(tmp_path / "junk.pem")}, "caFile"),
    ]
    for tls, needle in cases:
        cfg = write_config(tmp_path / "c.yaml", server.url, ["api-proxy-1"], prometheus_extra={"tls": tls})
        r = run_collector("--config", cfg, "--date", "2024-03-01", cwd=tmp_path)
        assert r.returncode == 2, (tls, r.stderr)
        assert needle in r.stderr, (tls, r.stderr)


def test_extension_live_query_over_mtls(tls_server, history, tmp_path):
    server, pki = tls_server
    tls = {"caFile": str(pki["ca.pem"]), "certFile": str(pki["client.pem"]), "keyFile": str(pki["client.key"])}
    cfg = write_config(tmp_path / "c.yaml", server.url, ["api-proxy-1"], prometheus_extra={"tls": tls})
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXTENSION}'")
    rows = con.execute("SELECT value FROM prom_label_values('environment', config := ?) ORDER BY 1", [str(cfg)]).fetchall()
    assert [r[0] for r in rows] == sorted(history.environments)
    with pytest.raises(duckdb.Error) as e:
        con.execute("SELECT * FROM prom_labels(url := ?)", [server.url]).fetchall()
    assert "cannot reach Prometheus" in str(e.value)
    assert con.execute("SELECT 1").fetchone() == (1,)
