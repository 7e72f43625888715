"""The S3 test infrastructure itself: tests/s3fixture.py's servers (moto, s3s-fs), the
recording fault proxy in front of them (tests/faultproxy.py in transparent mode), the
request counts, the faults, and the helpers that point a child process at a server.

These prove the instruments the object-storage tests rely on, with boto3 as the client;
they test nothing of promduck's.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import boto3  # noqa: E402 - tests/requirements.txt
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError  # noqa: E402

import s3fixture  # noqa: E402
from s3fixture import (  # noqa: E402
    CRED_ENV_ACCESS_KEY_ID, CRED_ENV_SECRET_ACCESS_KEY, S3S_ACCESS_KEY, S3S_SECRET_KEY, child_env,
    credential_env, s3_env, s3_storage_config, write_s3_config,
)

Counter = collections.Counter
DATA = bytes(range(256)) * 40  # 10,240 bytes, every offset's value known


def error_code(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


# ---------------------------------------------------------------------------
# moto, direct and through the proxy


def test_moto_direct_requests_are_not_counted(moto_s3, s3_bucket):
    c = moto_s3.client()
    for key in ("2024-03-01/api-proxy-1.parquet", "2024-03-01/api-proxy-2.parquet", "2024-03-02/api-proxy-1.parquet"):
        c.put_object(Bucket=s3_bucket, Key=key, Body=DATA)
    listed = c.list_objects_v2(Bucket=s3_bucket, Prefix="2024-03-01/")
    assert [o["Key"] for o in listed["Contents"]] == ["2024-03-01/api-proxy-1.parquet",
                                                      "2024-03-01/api-proxy-2.parquet"]
    days = c.list_objects_v2(Bucket=s3_bucket, Delimiter="/")
    assert [p["Prefix"] for p in days["CommonPrefixes"]] == ["2024-03-01/", "2024-03-02/"]
    assert c.get_object(Bucket=s3_bucket, Key="2024-03-02/api-proxy-1.parquet",
                        Range="bytes=100-199")["Body"].read() == DATA[100:200]
    assert moto_s3.get(s3_bucket, "2024-03-02/api-proxy-1.parquet", range="bytes=-8") == DATA[-8:]
    assert moto_s3.objects(s3_bucket) == {k: len(DATA) for k in moto_s3.list_keys(s3_bucket)}
    assert moto_s3.total() == 0, moto_s3.summary()


def test_moto_through_proxy_exact_counts(moto_s3, s3_bucket):
    c = moto_s3.client(via_proxy=True)
    keys = [f"2024-03-01/api-proxy-{i}.parquet" for i in (1, 2, 3)]
    for key in keys:
        c.put_object(Bucket=s3_bucket, Key=key, Body=DATA)
    assert [o["Key"] for o in c.list_objects_v2(Bucket=s3_bucket, Prefix="2024-03-01/")["Contents"]] == keys
    assert c.head_object(Bucket=s3_bucket, Key=keys[0])["ContentLength"] == len(DATA)  # HEAD keeps the length
    assert c.get_object(Bucket=s3_bucket, Key=keys[1], Range="bytes=-8")["Body"].read() == DATA[-8:]
    assert c.get_object(Bucket=s3_bucket, Key=keys[1], Range="bytes=0-3")["Body"].read() == DATA[:4]
    assert c.get_object(Bucket=s3_bucket, Key=keys[2])["Body"].read() == DATA
    c.delete_object(Bucket=s3_bucket, Key=keys[2])

    assert moto_s3.counts() == Counter({"PUT": 3, "LIST": 1, "HEAD": 1, "GET_RANGE": 2, "GET": 1, "DELETE": 1}), \
        moto_s3.summary()
    assert moto_s3.total() == 9
    assert moto_s3.ranges() == [(keys[1], "bytes=-8"), (keys[1], "bytes=0-3")]
    (listing,) = moto_s3.requests("LIST")
    assert listing.bucket == s3_bucket and listing.prefix == "2024-03-01/" and listing.params["list-type"] == "2"
    assert [r.status for r in moto_s3.requests()] == [200, 200, 200, 200, 200, 206, 206, 200, 204]
    assert moto_s3.list_keys(s3_bucket) == keys[:2]
    assert moto_s3.total() == 9  # the helpers went direct

    moto_s3.reset_requests()
    assert moto_s3.total() == 0


def test_moto_listing_pages_counted(moto_s3, s3_bucket):
    for i in range(5):
        moto_s3.put(s3_bucket, f"d/{i}.parquet", b"x")
    c = moto_s3.client(via_proxy=True)
    pages = list(c.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix="d/",
                                                              PaginationConfig={"PageSize": 2}))
    assert [len(p["Contents"]) for p in pages] == [2, 2, 1]
    lists = moto_s3.requests("LIST")
    assert len(lists) == 3 and moto_s3.total() == 3
    assert "continuation-token" not in lists[0].params
    assert all("continuation-token" in r.params for r in lists[1:])


def test_moto_put_if_none_match(moto_s3, s3_bucket):
    """What PutMode::Create relies on: ``If-None-Match: *`` on an existing key -> 412."""
    c = moto_s3.client(via_proxy=True)
    c.put_object(Bucket=s3_bucket, Key="k.parquet", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=s3_bucket, Key="k.parquet", Body=b"second", IfNoneMatch="*")
    assert error_code(e.value) == (412, "PreconditionFailed")
    assert moto_s3.get(s3_bucket, "k.parquet") == b"first"
    assert [r.raw.headers.get("if-none-match") for r in moto_s3.requests("PUT")] == ["*", "*"]


def test_moto_multipart_in_progress_is_stray_then_completes(moto_s3, s3_bucket):
    c = moto_s3.client(via_proxy=True)
    part = 5 * 1024 * 1024  # S3's smallest part but the last
    body = (DATA * (part // len(DATA) + 1))[:part]
    up = c.create_multipart_upload(Bucket=s3_bucket, Key="big.parquet")["UploadId"]
    etags = [c.upload_part(Bucket=s3_bucket, Key="big.parquet", UploadId=up, PartNumber=n, Body=b)["ETag"]
             for n, b in ((1, body), (2, b"tail"))]
    # Begun, not completed: no object, but an upload the bucket still holds.
    assert moto_s3.list_keys(s3_bucket) == []
    assert moto_s3.multipart_uploads(s3_bucket) == [("big.parquet", up)]
    moto_s3.put(s3_bucket, "2024-03-01/.tmp-123", b"partial")
    assert moto_s3.stray(s3_bucket) == ["2024-03-01/.tmp-123", "upload:big.parquet"]

    c.complete_multipart_upload(Bucket=s3_bucket, Key="big.parquet", UploadId=up, MultipartUpload={
        "Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]})
    assert moto_s3.multipart_uploads(s3_bucket) == []
    assert moto_s3.get(s3_bucket, "big.parquet") == body + b"tail"
    assert moto_s3.counts() == Counter({"CREATE_MULTIPART": 1, "UPLOAD_PART": 2, "COMPLETE_MULTIPART": 1})
    assert [len(r.raw.body) for r in moto_s3.requests("UPLOAD_PART")] == [part, 4]


def test_proxy_forwards_delete_objects_and_chunked_bodies(moto_s3, s3_bucket):
    c = moto_s3.client(via_proxy=True)
    for k in ("a", "b", "c"):
        moto_s3.put(s3_bucket, k, k * 3)
    out = c.delete_objects(Bucket=s3_bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["a", "b"]
    assert moto_s3.list_keys(s3_bucket) == ["c"]
    (post,) = moto_s3.requests("DELETE_OBJECTS")
    assert post.method == "POST" and b"<Key>a</Key>" in post.raw.body

    # A chunked request body is read whole and forwarded with a Content-Length.
    conn = http.client.HTTPConnection("127.0.0.1", moto_s3.proxy.port, timeout=10)
    conn.putrequest("PUT", f"/{s3_bucket}/chunked.bin")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for piece in (b"hello ", b"chunked ", b"world"):
        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200
    assert moto_s3.get(s3_bucket, "chunked.bin") == b"hello chunked world"
    assert moto_s3.requests("PUT")[-1].raw.body == b"hello chunked world"


# ---------------------------------------------------------------------------
# Faults in front of moto


def test_fault_slowdown_then_retry(moto_s3, s3_bucket):
    rule = moto_s3.add_fault("s3_error", method="PUT", key_contains="api-proxy-1", times=1)
    c0 = moto_s3.client(via_proxy=True)  # no retries: the fault surfaces
    with pytest.raises(ClientError) as e:
        c0.put_object(Bucket=s3_bucket, Key="2024-03-01/api-proxy-1.parquet", Body=DATA)
    assert error_code(e.value) == (503, "SlowDown")
    assert "reduce your request rate" in e.value.response["Error"]["Message"]
    assert rule.fired == 1 and moto_s3.list_keys(s3_bucket) == []
    c0.put_object(Bucket=s3_bucket, Key="2024-03-01/api-proxy-1.parquet", Body=DATA)  # rule exhausted

    # A retrying client gets through; every attempt is counted, the faulted one marked.
    rule2 = moto_s3.add_fault("s3_error", method="PUT", key_contains="api-proxy-2", times=2)
    c2 = moto_s3.client(via_proxy=True, retries=2)
    c2.put_object(Bucket=s3_bucket, Key="2024-03-01/api-proxy-2.parquet", Body=DATA)
    assert rule2.fired == 2
    puts = moto_s3.requests("PUT", key_contains="api-proxy-2")
    assert [(r.action, r.status) for r in puts] == [("s3_error", 503), ("s3_error", 503), ("forward", 200)]
    assert [r.raw.body for r in puts] == [DATA] * 3
    assert moto_s3.counts(include_faulted=False) == Counter({"PUT": 2})
    assert moto_s3.counts() == Counter({"PUT": 5})
    assert moto_s3.get(s3_bucket, "2024-03-01/api-proxy-2.parquet") == DATA


def test_fault_500_internal_error_by_kind(moto_s3, s3_bucket):
    moto_s3.put(s3_bucket, "k", DATA)
    moto_s3.add_fault("s3_error", status=500, kind="GET_RANGE", times=None)
    c = moto_s3.client(via_proxy=True)
    assert c.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == DATA  # a whole GET is another kind
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=s3_bucket, Key="k", Range="bytes=0-9")
    assert error_code(e.value) == (500, "InternalError")
    assert c.head_object(Bucket=s3_bucket, Key="k")["ContentLength"] == len(DATA)  # HEAD is not GET_RANGE
    moto_s3.add_fault("s3_error", status=500, kind="HEAD")
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=s3_bucket, Key="k")
    assert error_code(e.value)[0] == 500  # a HEAD error has no body, only the status
    assert [(r.kind, r.status, r.action) for r in moto_s3.requests()] == [
        ("GET", 200, "forward"), ("GET_RANGE", 500, "s3_error"), ("HEAD", 200, "forward"),
        ("HEAD", 500, "s3_error")]


def test_fault_reset(moto_s3, s3_bucket):
    rule = moto_s3.add_fault("reset", method="PUT", times=1)
    c = moto_s3.client(via_proxy=True)
    with pytest.raises((ConnectionClosedError, ConnectionError)) as e:
        c.put_object(Bucket=s3_bucket, Key="k", Body=DATA)
    assert rule.fired == 1, e.value
    (r,) = moto_s3.requests()
    assert (r.kind, r.action, r.status, r.raw.body) == ("PUT", "reset", None, DATA)
    assert moto_s3.list_keys(s3_bucket) == []  # the upstream never saw it


def test_fault_hang(moto_s3, s3_bucket):
    # The hang outlasts any test: only the client's read timeout (1 s) ends the call.
    moto_s3.add_fault("hang", kind="LIST", hang_seconds=600)
    c = moto_s3.client(via_proxy=True, read_timeout=1)
    with pytest.raises(ReadTimeoutError):
        c.list_objects_v2(Bucket=s3_bucket)
    assert [(r.kind, r.action, r.status) for r in moto_s3.requests()] == [("LIST", "hang", None)]


def test_fault_partial_body(moto_s3, s3_bucket):
    moto_s3.put(s3_bucket, "k", DATA)
    moto_s3.add_fault("partial_body", kind="GET", after_bytes=100)
    c = moto_s3.client(via_proxy=True)
    resp = c.get_object(Bucket=s3_bucket, Key="k")
    assert resp["ContentLength"] == len(DATA)  # the full length is announced ...
    with pytest.raises(Exception) as e:  # ... and the body ends early
        resp["Body"].read()
    assert "IncompleteRead" in repr(e.value) or "ResponseStreamingError" in type(e.value).__name__, repr(e.value)
    assert c.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == DATA  # once only


def test_fault_rule_by_bucket_and_predicate(moto_s3, s3_bucket):
    other = moto_s3.create_bucket()
    try:
        moto_s3.add_fault("s3_error", bucket=other, times=None, code="NoSuchBucket", status=404)
        moto_s3.add_fault("s3_error", match=lambda r: r.key is not None and r.key.endswith(".tmp"), times=None)
        c = moto_s3.client(via_proxy=True)
        c.put_object(Bucket=s3_bucket, Key="ok.parquet", Body=b"1")
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket=s3_bucket, Key="x.tmp", Body=b"1")
        assert error_code(e.value) == (503, "SlowDown")
        with pytest.raises(ClientError) as e:
            c.list_objects_v2(Bucket=other)
        assert error_code(e.value) == (404, "NoSuchBucket")
        with pytest.raises(ValueError):
            moto_s3.add_fault("reset", kind="GETT")
    finally:
        moto_s3.reset()
        moto_s3.delete_bucket(other)


# ---------------------------------------------------------------------------
# s3s-fs: signatures checked


def test_s3s_fs_checks_signatures(s3s_fs):
    s3s_fs.reset()
    bucket = s3s_fs.create_bucket()
    for via_proxy in (False, True):  # the proxy forwards Host, so the signature still verifies
        # A client per request: s3s-fs refuses a PUT before reading its body and closes that
        # connection, which a reused client could pick up again (ConnectionClosedError).
        def bad():
            return s3s_fs.client(via_proxy=via_proxy, secret_key=S3S_SECRET_KEY + "x")
        with pytest.raises(ClientError) as e:
            bad().put_object(Bucket=bucket, Key="k.parquet", Body=DATA)
        assert error_code(e.value) == (403, "SignatureDoesNotMatch")
        with pytest.raises(ClientError) as e:
            bad().list_objects_v2(Bucket=bucket)
        assert error_code(e.value) == (403, "SignatureDoesNotMatch")
        with pytest.raises(ClientError) as e:
            s3s_fs.client(via_proxy=via_proxy, access_key="unknown-key").list_objects_v2(Bucket=bucket)
        assert error_code(e.value)[0] == 403
    assert s3s_fs.list_keys(bucket) == []

    good = s3s_fs.client(via_proxy=True)
    good.put_object(Bucket=bucket, Key="2024-03-01/api-proxy-1.parquet", Body=DATA)
    assert good.get_object(Bucket=bucket, Key="2024-03-01/api-proxy-1.parquet",
                           Range="bytes=10-19")["Body"].read() == DATA[10:20]
    assert good.head_object(Bucket=bucket, Key="2024-03-01/api-proxy-1.parquet")["ContentLength"] == len(DATA)
    assert s3s_fs.list_keys(bucket) == ["2024-03-01/api-proxy-1.parquet"]
    assert (s3s_fs.root / bucket / "2024-03-01" / "api-proxy-1.parquet").read_bytes() == DATA
    assert f"{bucket}/2024-03-01/api-proxy-1.parquet" in s3s_fs.files()
    assert s3s_fs.counts() == Counter({"PUT": 2, "LIST": 2, "GET_RANGE": 1, "HEAD": 1}), s3s_fs.summary()
    assert [r.status for r in s3s_fs.requests()] == [403, 403, 403, 200, 206, 200]


# ---------------------------------------------------------------------------
# Pointing a child process at a server


def test_child_env_points_a_client_at_the_server(moto_s3, s3_bucket):
    env = s3_env(moto_s3)
    assert env == {"AWS_ACCESS_KEY_ID": moto_s3.access_key, "AWS_SECRET_ACCESS_KEY": moto_s3.secret_key,
                   "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_s3.endpoint, "AWS_ALLOW_HTTP": "true"}
    base = {"PATH": os.environ["PATH"], "AWS_PROFILE": "somewhere", "AWS_ENDPOINT_URL_S3": "http://elsewhere",
            "AWS_SESSION_TOKEN": "leaked"}
    full = child_env(moto_s3, base=base)
    assert not {"AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"} & set(full)
    assert full["AWS_METADATA_ENDPOINT"].startswith("http://127.0.0.1:")
    assert {k: full[k] for k in env} == env

    moto_s3.put(s3_bucket, "day/p.parquet", b"1")
    # boto3 in a child process with nothing but the environment finds the server (through the proxy).
    code = ("import boto3, json, sys; c = boto3.client('s3', config=boto3.session.Config("
            "s3={'addressing_style': 'path'})); "
            "print(json.dumps([o['Key'] for o in c.list_objects_v2(Bucket=sys.argv[1])['Contents']]))")
    out = subprocess.run([sys.executable, "-c", code, s3_bucket], env=child_env(moto_s3), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["day/p.parquet"]
    assert moto_s3.counts() == Counter({"LIST": 1})


def test_storage_config_block(moto_s3, tmp_path):
    block = s3_storage_config(moto_s3, "bkt", "metrics/prod/")
    assert block == {"outputDir": "s3://bkt/metrics/prod", "s3": {
        "endpoint": moto_s3.endpoint, "region": "us-east-1", "pathStyle": True, "allowHttp": True,
        "accessKeyId": moto_s3.access_key, "secretAccessKey": moto_s3.secret_key}}
    assert s3_storage_config(moto_s3, "bkt", credentials=None, endpoint=False, region=False,
                             allow_http=None) == {"outputDir": "s3://bkt", "s3": {"pathStyle": True}}

    f = s3_storage_config(moto_s3, "bkt", credentials="file", secrets_dir=tmp_path, session_token="tok")["s3"]
    assert Path(f["secretAccessKeyFile"]).read_text() == moto_s3.secret_key
    assert Path(f["sessionTokenFile"]).read_text() == "tok"
    assert os.stat(f["secretAccessKeyFile"]).st_mode & 0o777 == 0o600
    assert "secretAccessKey" not in f

    e = s3_storage_config(moto_s3, "bkt", credentials="env")["s3"]
    assert (e["accessKeyIdEnv"], e["secretAccessKeyEnv"]) == (CRED_ENV_ACCESS_KEY_ID, CRED_ENV_SECRET_ACCESS_KEY)
    assert credential_env(moto_s3) == {CRED_ENV_ACCESS_KEY_ID: moto_s3.access_key,
                                       CRED_ENV_SECRET_ACCESS_KEY: moto_s3.secret_key}

    c = s3_storage_config(moto_s3, "bkt", credentials="credentials_file", secrets_dir=tmp_path)["s3"]
    assert f"aws_secret_access_key = {moto_s3.secret_key}" in Path(c["credentialsFile"]).read_text()

    cfg_path = write_s3_config(tmp_path / "cfg" / "config.yaml", "http://127.0.0.1:9090", ["p1", 'we"ird'],
                               moto_s3, "bkt", "prefix", credentials="file")
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["apiProxies"] == ["p1", 'we"ird']
    assert cfg["storage"]["outputDir"] == "s3://bkt/prefix" and cfg["storage"]["compression"] == "zstd"
    assert Path(cfg["storage"]["s3"]["secretAccessKeyFile"]).parent == tmp_path / "cfg"


def test_s3s_env_and_config_use_its_keys(s3s_fs):
    assert s3_env(s3s_fs)["AWS_ACCESS_KEY_ID"] == S3S_ACCESS_KEY
    assert s3_storage_config(s3s_fs, "b")["s3"]["secretAccessKey"] == S3S_SECRET_KEY
    assert s3fixture.S3S_FS.is_file()


def test_another_sigv4_client_parquet_through_the_proxy(s3s_fs, tmp_path):
    """pyarrow's S3 filesystem (the AWS SDK for C++, not boto3) writes and reads Parquet
    through the proxy on s3s-fs: the proxy keeps its signatures valid, its multipart
    upload and ranged reads are recorded, a wrong secret is refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    s3s_fs.reset()
    bucket = s3s_fs.create_bucket()
    host = s3s_fs.endpoint.removeprefix("http://")
    good = fs.S3FileSystem(access_key=S3S_ACCESS_KEY, secret_key=S3S_SECRET_KEY, endpoint_override=host,
                           scheme="http", region="us-east-1")
    table = pa.table({"x": list(range(50_000)), "y": [f"v{i}" for i in range(50_000)]})
    pq.write_table(table, f"{bucket}/2024-03-01/p.parquet", filesystem=good)
    size = s3s_fs.objects(bucket)["2024-03-01/p.parquet"]
    assert (s3s_fs.root / bucket / "2024-03-01" / "p.parquet").stat().st_size == size
    writes = s3s_fs.requests()
    assert {r.kind for r in writes} <= {"PUT", "CREATE_MULTIPART", "UPLOAD_PART", "COMPLETE_MULTIPART"}, \
        s3s_fs.summary()
    s3s_fs.reset_requests()

    assert pq.read_table(f"{bucket}/2024-03-01/p.parquet", filesystem=good, columns=["x"]) \
        .column("x").to_pylist() == list(range(50_000))
    reads = s3s_fs.requests()
    assert all(r.status in (200, 206) and r.kind in ("HEAD", "GET_RANGE") for r in reads), s3s_fs.summary()
    ranges = [r.range for r in reads if r.kind == "GET_RANGE"]
    assert ranges and all(rng.startswith("bytes=") for rng in ranges)
    assert any(rng.endswith(f"-{size - 1}") for rng in ranges)  # the footer, read from the end
    s3s_fs.reset_requests()

    bad = fs.S3FileSystem(access_key=S3S_ACCESS_KEY, secret_key="wrong", endpoint_override=host, scheme="http",
                          region="us-east-1")
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        pq.read_table(f"{bucket}/2024-03-01/p.parquet", filesystem=bad)
    assert [r.status for r in s3s_fs.requests()] and all(r.status == 403 for r in s3s_fs.requests())
