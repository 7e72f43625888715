"""S3-protocol servers on 127.0.0.1 for the object-storage tests, each behind a recording fault proxy.

Two servers, one interface (``S3Server``):

``MotoServer``
    moto's server mode (``.venv/bin/moto_server``, PyPI ``moto[server]``): S3 in
    memory, ListObjectsV2, ranges, multipart, ``If-None-Match: *``; any
    credentials are accepted (no signature check).
``S3sServer``
    s3s-fs (crates.io, built by ``make s3s-fs`` into ``.cache/s3s-fs/bin/s3s-fs``):
    buckets are folders under ``root``; one fixed access key and secret
    (``S3S_ACCESS_KEY``/``S3S_SECRET_KEY``), SigV4 signatures checked (a wrong
    secret: 403 ``SignatureDoesNotMatch``).

Every server starts behind a ``faultproxy.FaultProxy`` in transparent mode (the
client's ``Host`` is forwarded, so signatures still verify):

* ``server.endpoint`` is the proxy's URL: point the product here. Every request it
  makes is recorded there, in order, with what was done with it, and can be made
  to fail (``add_fault``).
* ``server.direct_endpoint`` is the server's own URL. The test-side helpers
  (``create_bucket``, ``list_keys``, ``get``, ``put``, ``multipart_uploads``, ...)
  use it, so checking the bucket never changes the product's counts.

Counting: moto has a "recorder" (``/moto-api/recorder/...``) but it records only
requests that reach a moto handler, into a file meant for replay (base64 bodies);
it misses requests the proxy answered with a fault. The proxy sees every request
the client sent, faults included, so counts come from it: ``requests()`` (each an
``S3Request`` with ``kind``, ``bucket``, ``key``, ``range``, ``status``,
``action``), ``counts()`` (a ``Counter`` by kind), ``total()``.

Kinds (path-style requests, ``/bucket/key``): ``GET`` (whole object), ``GET_RANGE``
(a ``Range`` header), ``HEAD``, ``PUT``, ``COPY`` (PUT with
``x-amz-copy-source``), ``DELETE``, ``DELETE_OBJECTS`` (POST ``?delete``),
``LIST`` (GET on a bucket: ListObjects/ListObjectsV2), ``CREATE_MULTIPART``,
``UPLOAD_PART``, ``COMPLETE_MULTIPART``, ``ABORT_MULTIPART``, ``LIST_UPLOADS``,
``LIST_PARTS``, ``CREATE_BUCKET``, ``DELETE_BUCKET``, ``HEAD_BUCKET``,
``LIST_BUCKETS``, ``OTHER``.

Faults (see faultproxy's actions)::

    rule = moto.add_fault("s3_error", method="PUT", key_contains="api-proxy-1", times=2)  # 503 SlowDown
    moto.add_fault("s3_error", status=500, kind="GET_RANGE")        # 500 InternalError
    moto.add_fault("reset", method="PUT", times=1)                   # connection reset (RST)
    moto.add_fault("hang", kind="LIST", hang_seconds=30)             # no answer until the client gives up
    moto.add_fault("partial_body", kind="GET_RANGE", after_bytes=10) # a body cut short
    ... run the product against moto.endpoint ...
    assert rule.fired == 2

Pointing a child process at a server: ``child_env(server)`` (the current
environment without any ``AWS_*`` variable, plus ``s3_env(server)``:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP=true``); or a config:
``s3_storage_config(server, bucket, prefix)`` (the ``storage`` block, with
``outputDir: s3://bucket/prefix`` and ``s3: {...}``), ``write_s3_config(...)`` (a
whole collector config file).
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from faultproxy import FaultProxy, RecordedRequest, Rule

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = REPO_ROOT / ".venv" / "bin"
MOTO_SERVER = VENV_BIN / "moto_server"
S3S_FS = Path(os.environ.get("PROMDUCK_S3S_FS") or REPO_ROOT / ".cache" / "s3s-fs" / "bin" / "s3s-fs")

REGION = "us-east-1"
#: moto accepts any credentials; these are what the helpers hand out for it.
MOTO_ACCESS_KEY = "moto-test-access-key"
MOTO_SECRET_KEY = "moto-test-secret-key"
#: s3s-fs is started with exactly this key pair and checks every signature.
S3S_ACCESS_KEY = "promduck-test-key"
S3S_SECRET_KEY = "promduck-test-secret/7f3a9c"
#: Names of the variables ``s3_storage_config(credentials="env")`` points the config at.
CRED_ENV_ACCESS_KEY_ID = "PROMDUCK_TEST_S3_ACCESS_KEY_ID"
CRED_ENV_SECRET_ACCESS_KEY = "PROMDUCK_TEST_S3_SECRET_ACCESS_KEY"
CRED_ENV_SESSION_TOKEN = "PROMDUCK_TEST_S3_SESSION_TOKEN"
#: Where object_store looks for instance credentials when it has none (see ``child_env``):
#: a closed port on loopback, so a test never reaches for 169.254.169.254.
CLOSED_METADATA_ENDPOINT = "http://127.0.0.1:1"

KINDS = ("GET", "GET_RANGE", "HEAD", "PUT", "COPY", "DELETE", "DELETE_OBJECTS", "LIST", "CREATE_MULTIPART",
         "UPLOAD_PART", "COMPLETE_MULTIPART", "ABORT_MULTIPART", "LIST_UPLOADS", "LIST_PARTS", "CREATE_BUCKET",
         "DELETE_BUCKET", "HEAD_BUCKET", "LIST_BUCKETS", "OTHER")


# ---------------------------------------------------------------------------
# What a request was, in S3's terms


@dataclass
class S3Request:
    """One request the proxy received, read as an S3 operation (path-style)."""

    seq: int
    kind: str  # one of KINDS
    method: str
    bucket: Optional[str]
    key: Optional[str]  # percent-decoded; None for bucket-level requests
    range: Optional[str]  # the Range header ("bytes=0-99", "bytes=-8"), if any
    params: dict  # query string: name -> first value ("prefix", "list-type", "uploadId", ...)
    status: Optional[int]  # the status sent to the client (None: no answer, e.g. reset/hang)
    action: str  # "forward" or the fault's action ("s3_error", "reset", ...)
    raw: RecordedRequest

    @property
    def faulted(self) -> bool:
        return self.action != "forward"

    @property
    def prefix(self) -> Optional[str]:
        """The ``prefix`` of a LIST."""
        return self.params.get("prefix")

    def __str__(self) -> str:
        extra = f" range={self.range}" if self.range else ""
        if self.kind == "LIST":
            extra += f" prefix={self.prefix!r}"
        return (f"#{self.seq} {self.kind} {self.method} {self.bucket}/{self.key or ''}{extra} "
                f"-> {self.status} ({self.action})")


def classify(req: RecordedRequest) -> S3Request:
    """Reads one recorded request as an S3 operation (path-style addressing)."""
    path = req.path
    parts = path.lstrip("/").split("/", 1)
    bucket = urllib.parse.unquote(parts[0]) if parts[0] else None
    key = urllib.parse.unquote(parts[1]) if len(parts) > 1 and parts[1] != "" else None
    params = {k: (v[0] if v else "") for k, v in req.query.items()}
    rng = req.headers.get("range")
    m = req.method.upper()
    if bucket is None:
        kind = "LIST_BUCKETS" if m == "GET" else "OTHER"
    elif key is None:
        if m == "GET":
            kind = "LIST_UPLOADS" if "uploads" in params else ("LIST" if not (set(params) & _BUCKET_SUBRESOURCES)
                                                               else "OTHER")
        elif m == "HEAD":
            kind = "HEAD_BUCKET"
        elif m == "PUT":
            kind = "CREATE_BUCKET" if not params else "OTHER"
        elif m == "DELETE":
            kind = "DELETE_BUCKET" if not params else "OTHER"
        elif m == "POST" and "delete" in params:
            kind = "DELETE_OBJECTS"
        else:
            kind = "OTHER"
    else:
        if m == "GET":
            if "uploadId" in params:
                kind = "LIST_PARTS"
            elif set(params) & _OBJECT_SUBRESOURCES:
                kind = "OTHER"
            else:
                kind = "GET_RANGE" if rng else "GET"
        elif m == "HEAD":
            kind = "HEAD"
        elif m == "PUT":
            if "partNumber" in params and "uploadId" in params:
                kind = "UPLOAD_PART"
            elif set(params) & _OBJECT_SUBRESOURCES:
                kind = "OTHER"
            else:
                kind = "COPY" if "x-amz-copy-source" in req.headers else "PUT"
        elif m == "POST":
            kind = ("CREATE_MULTIPART" if "uploads" in params
                    else "COMPLETE_MULTIPART" if "uploadId" in params else "OTHER")
        elif m == "DELETE":
            kind = "ABORT_MULTIPART" if "uploadId" in params else "DELETE"
        else:
            kind = "OTHER"
    return S3Request(seq=req.seq, kind=kind, method=req.method, bucket=bucket, key=key, range=rng,
                     params=params, status=req.status, action=req.action, raw=req)


#: Query parameters that make a request on a bucket/object something other than LIST/GET/PUT.
_BUCKET_SUBRESOURCES = {"acl", "cors", "lifecycle", "location", "logging", "notification", "policy",
                        "replication", "tagging", "versioning", "website", "encryption", "versions",
                        "object-lock", "ownershipControls", "publicAccessBlock", "accelerate",
                        "requestPayment", "analytics", "inventory", "metrics", "intelligent-tiering"}
_OBJECT_SUBRESOURCES = {"acl", "tagging", "retention", "legal-hold", "attributes", "torrent", "restore",
                        "select"}


# ---------------------------------------------------------------------------
# Servers


class S3Server:
    """What both servers share: the process, the proxy in front, boto3 clients, the helpers.

    ``start()``/``stop()`` or use it as a context manager."""

    name = "s3"
    access_key = MOTO_ACCESS_KEY
    secret_key = MOTO_SECRET_KEY
    region = REGION

    def __init__(self, workdir: Path, *, ready_timeout: float = 60.0):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.proxy: FaultProxy | None = None
        self.log_path = self.workdir / f"{self.name}.log"
        self._log = None
        self._direct_client = None

    # -- lifecycle -------------------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return env

    #: the line that tells the port (the server is started on port 0)
    _port_line = re.compile(r"http://127\.0\.0\.1:(\d+)")

    def start(self) -> "S3Server":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self._command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self._env(), cwd=self.workdir,
                                     start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout
        try:
            while self.port is None:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not say its port within {self.ready_timeout} s:\n"
                                       f"{self.log_text()}")
                m = self._port_line.search(self.log_text())
                if m:
                    self.port = int(m.group(1))
                else:
                    time.sleep(0.05)
            while not self._ready():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready within {self.ready_timeout} s:\n{self.log_text()}")
                time.sleep(0.05)
            self.proxy = FaultProxy(self.direct_endpoint, transparent=True).start()
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        """Any HTTP answer to ``GET /`` (moto: the bucket list; s3s-fs: 403 without a signature)."""
        try:
            with urllib.request.urlopen(self.direct_endpoint + "/", timeout=2) as r:
                r.read()
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- addresses ---------------------------------------------------------------------
    @property
    def direct_endpoint(self) -> str:
        """The server itself (requests here are not recorded and cannot be faulted)."""
        if self.port is None:
            raise RuntimeError(f"{self.name} not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        """The recording fault proxy in front of the server: what the product is pointed at."""
        if self.proxy is None:
            raise RuntimeError(f"{self.name} not started")
        return self.proxy.url

    def url(self, bucket: str, prefix: str = "") -> str:
        """``s3://bucket/prefix`` (``s3://bucket`` for no prefix)."""
        prefix = prefix.strip("/")
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"

    # -- boto3 ---------------------------------------------------------------------------
    def client(self, *, via_proxy: bool = False, access_key: str | None = None, secret_key: str | None = None,
               retries: int = 0, connect_timeout: float = 5, read_timeout: float = 30, **config):
        """A boto3 S3 client (path-style, this region, checksums only when required).

        ``via_proxy``: through the recording proxy (counted, faults apply); else direct.
        ``retries``: boto3's retries (standard mode) after the first attempt; 0 by default,
        so a fault surfaces as an error. ``config``: more ``botocore.config.Config`` options."""
        import boto3
        from botocore.config import Config

        cfg = Config(region_name=self.region, signature_version="s3v4",
                     s3={"addressing_style": "path"},
                     retries={"total_max_attempts": retries + 1, "mode": "standard"},
                     connect_timeout=connect_timeout, read_timeout=read_timeout,
                     request_checksum_calculation="when_required",
                     response_checksum_validation="when_required", **config)
        return boto3.client("s3", endpoint_url=self.endpoint if via_proxy else self.direct_endpoint,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key,
                            config=cfg)

    @property
    def direct(self):
        """A shared direct boto3 client (for the helpers below)."""
        if self._direct_client is None:
            self._direct_client = self.client()
        return self._direct_client

    # -- the bucket, as the test sees it (direct: never counted) ---------------------------
    def create_bucket(self, name: str | None = None) -> str:
        """Creates a bucket (a fresh ``test-<hex>`` name if none) and returns its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.direct.create_bucket(Bucket=name)
        return name

    def delete_bucket(self, bucket: str) -> None:
        """Aborts its uploads, deletes every object, then the bucket."""
        for key, upload_id in self.multipart_uploads(bucket):
            self.direct.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        for key in self.list_keys(bucket):
            self.direct.delete_object(Bucket=bucket, Key=key)
        self.direct.delete_bucket(Bucket=bucket)

    def buckets(self) -> list[str]:
        return sorted(b["Name"] for b in self.direct.list_buckets().get("Buckets", []))

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix``: key -> size (ListObjectsV2, every page)."""
        out = {}
        for page in self.direct.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, sorted: finished objects only (in-progress
        multipart uploads are not objects: see ``multipart_uploads``)."""
        return sorted(self.objects(bucket, prefix))

    def multipart_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
        """``(key, upload_id)`` of every multipart upload begun and not completed/aborted."""
        out = []
        for page in self.direct.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for u in page.get("Uploads", []):
                out.append((u["Key"], u["UploadId"]))
        return sorted(out)

    def stray(self, bucket: str, prefix: str = "", final: str = r"\.parquet$") -> list[str]:
        """What a clean bucket must not hold: keys not matching the regex ``final``
        (temporary, partial, marker objects) and ``upload:<key>`` per in-progress
        multipart upload. Empty when clean."""
        pattern = re.compile(final)
        keys = [k for k in self.list_keys(bucket, prefix) if not pattern.search(k)]
        return keys + [f"upload:{k}" for k, _ in self.multipart_uploads(bucket, prefix)]

    def get(self, bucket: str, key: str, range: str | None = None) -> bytes:
        """The object's bytes (``range``: a Range header value, e.g. ``bytes=0-99``)."""
        kw = {"Range": range} if range else {}
        return self.direct.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()

    def head(self, bucket: str, key: str) -> dict:
        return self.direct.head_object(Bucket=bucket, Key=key)

    def put(self, bucket: str, key: str, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.direct.put_object(Bucket=bucket, Key=key, Body=data)

    def download(self, bucket: str, dest: Path, prefix: str = "") -> list[Path]:
        """Copies every object under ``prefix`` into ``dest`` (key paths kept) and returns the files:
        for reading the bucket's Parquet with local tools."""
        out = []
        for key in self.list_keys(bucket, prefix):
            path = Path(dest) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.get(bucket, key))
            out.append(path)
        return out

    # -- what the product sent (through the proxy) ----------------------------------------
    def requests(self, kind: str | Iterable[str] | None = None, *, bucket: str | None = None,
                 key_contains: str | None = None, include_faulted: bool = True) -> list[S3Request]:
        """Every request the proxy received since the last ``reset_requests()``, in order."""
        kinds = {kind} if isinstance(kind, str) else (set(kind) if kind is not None else None)
        out = []
        for r in map(classify, self.proxy.snapshot()):
            if kinds is not None and r.kind not in kinds:
                continue
            if bucket is not None and r.bucket != bucket:
                continue
            if key_contains is not None and key_contains not in (r.key or ""):
                continue
            if not include_faulted and r.faulted:
                continue
            out.append(r)
        return out

    def counts(self, *, bucket: str | None = None, include_faulted: bool = True) -> collections.Counter:
        """Requests per kind (``GET`` whole objects and ``GET_RANGE`` ranged reads apart)."""
        return collections.Counter(r.kind for r in self.requests(bucket=bucket, include_faulted=include_faulted))

    def total(self, *, bucket: str | None = None) -> int:
        return len(self.requests(bucket=bucket))

    def ranges(self, key_contains: str | None = None) -> list[tuple[str, str]]:
        """``(key, Range header)`` of every ranged GET, in order."""
        return [(r.key, r.range) for r in self.requests("GET_RANGE", key_contains=key_contains)]

    def summary(self) -> str:
        """One line per request, for assertion messages."""
        return "\n".join(str(r) for r in self.requests())

    def reset_requests(self) -> None:
        """Forgets the recorded requests (rules stay)."""
        with self.proxy._lock:
            self.proxy.requests.clear()
            self.proxy.max_in_flight = self.proxy.in_flight

    def reset(self) -> None:
        """Forgets every fault rule and every recorded request."""
        self.proxy.clear()

    # -- faults --------------------------------------------------------------------------
    def add_fault(self, action: str, *, method: str | None = None, key_contains: str | None = None,
                  kind: str | Iterable[str] | None = None, bucket: str | None = None,
                  match: Callable[[S3Request], bool] | None = None, times: int | None = 1,
                  **options) -> Rule:
        """A fault rule on the proxy for requests of ``method``, whose key holds
        ``key_contains``, of ``kind`` (one or several of KINDS), on ``bucket``, and for
        which ``match(S3Request)`` holds (all of those given). Actions and options as in
        faultproxy: ``s3_error`` (``status`` default 503 -> ``SlowDown``; 500 ->
        ``InternalError``; ``code=``), ``http_500``/``http_503`` (a JSON body), ``reset``,
        ``hang`` (``hang_seconds``), ``delay`` (``delay_seconds``), ``partial_body``
        (``after_bytes``, ``hang_seconds``). Rules are tried in the order added."""
        kinds = {kind} if isinstance(kind, str) else (set(kind) if kind is not None else None)
        for k in kinds or ():
            if k not in KINDS:
                raise ValueError(f"unknown kind {k!r}; one of {KINDS}")

        def predicate(req: RecordedRequest) -> bool:
            r = classify(req)
            if key_contains is not None and key_contains not in (r.key or ""):
                return False
            if kinds is not None and r.kind not in kinds:
                return False
            if bucket is not None and r.bucket != bucket:
                return False
            return match is None or match(r)

        return self.proxy.add_rule(action, method=method, match=predicate, times=times, **options)


class MotoServer(S3Server):
    """moto's server mode (``moto_server -H 127.0.0.1 -p 0``): S3 in memory, any credentials."""

    name = "moto"

    def __init__(self, workdir: Path, *, moto_server: Path | str | None = None, ready_timeout: float = 60.0):
        super().__init__(workdir, ready_timeout=ready_timeout)
        self.moto_server = Path(moto_server or MOTO_SERVER)
        if not self.moto_server.exists():
            raise RuntimeError(f"{self.moto_server} not found: `make venv` installs moto[server] "
                               "(tests/requirements.txt)")

    def _command(self) -> list[str]:
        return [str(self.moto_server), "-H", "127.0.0.1", "-p", "0"]

    def _env(self) -> dict:
        env = super()._env()
        # moto's own credentials/region defaults, so it never looks for real ones
        env.update({"AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
                    "AWS_DEFAULT_REGION": REGION, "PYTHONUNBUFFERED": "1"})
        return env

    def reset_state(self) -> None:
        """Empties moto: every bucket and object gone (``POST /moto-api/reset``)."""
        req = urllib.request.Request(self.direct_endpoint + "/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()


class S3sServer(S3Server):
    """s3s-fs: buckets are folders under ``root``; SigV4 checked against one key pair."""

    name = "s3s-fs"
    access_key = S3S_ACCESS_KEY
    secret_key = S3S_SECRET_KEY
    _port_line = re.compile(r"server is running at http://127\.0\.0\.1:(\d+)")

    def __init__(self, workdir: Path, *, root: Path | None = None, binary: Path | str | None = None,
                 access_key: str = S3S_ACCESS_KEY, secret_key: str = S3S_SECRET_KEY,
                 ready_timeout: float = 30.0):
        super().__init__(workdir, ready_timeout=ready_timeout)
        self.binary = Path(binary or S3S_FS)
        if not self.binary.exists():
            raise RuntimeError(f"{self.binary} not found: `make s3s-fs` builds it (cargo install s3s-fs)")
        self.root = Path(root or self.workdir / "root")
        self.root.mkdir(parents=True, exist_ok=True)
        self.access_key = access_key
        self.secret_key = secret_key

    def _command(self) -> list[str]:
        return [str(self.binary), "--host", "127.0.0.1", "--port", "0", "--access-key", self.access_key,
                "--secret-key", self.secret_key, str(self.root)]

    def _env(self) -> dict:
        env = super()._env()
        env["RUST_LOG"] = "info"  # the "server is running at ..." line
        env["NO_COLOR"] = "1"
        return env

    def files(self) -> list[str]:
        """Every file under ``root``, relative, sorted: objects (``bucket/key``) and
        s3s-fs's own bookkeeping (``.bucket-*.metadata.json``, ``.upload-*``, ``.tmp.*``)."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------
# Pointing the product at a server


def s3_env(server: S3Server, *, endpoint: str | None = None, region: str | None = None,
           access_key: str | None = None, secret_key: str | None = None,
           session_token: str | None = None) -> dict[str, str]:
    """The standard variables that point a client at ``server`` (through its proxy):
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``,
    ``AWS_ALLOW_HTTP=true`` (and ``AWS_SESSION_TOKEN`` if given). ``endpoint``
    overrides the URL (e.g. ``server.direct_endpoint``)."""
    env = {
        "AWS_ACCESS_KEY_ID": access_key or server.access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key or server.secret_key,
        "AWS_REGION": region or server.region,
        "AWS_ENDPOINT_URL": endpoint or server.endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    if session_token is not None:
        env["AWS_SESSION_TOKEN"] = session_token
    return env


def child_env(server: S3Server | None = None, base: dict | None = None, *, metadata_endpoint: bool = True,
              **s3_env_options) -> dict[str, str]:
    """An environment for a child process: ``base`` (default ``os.environ``) without any
    ``AWS_*`` variable (none of the developer's or CI's credentials, profiles or endpoints
    leak in), plus ``s3_env(server, **s3_env_options)`` when ``server`` is given.

    ``metadata_endpoint``: also set ``AWS_METADATA_ENDPOINT`` (object_store's instance
    metadata URL, where it looks for credentials when it has none) to a closed port on
    127.0.0.1 and ``AWS_EC2_METADATA_DISABLED=true``, so no test ever reaches for
    169.254.169.254."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("AWS_")}
    if metadata_endpoint:
        env["AWS_METADATA_ENDPOINT"] = CLOSED_METADATA_ENDPOINT
        env["AWS_EC2_METADATA_DISABLED"] = "true"
    if server is not None:
        env.update(s3_env(server, **s3_env_options))
    return env


def credential_env(server: S3Server, session_token: str | None = None) -> dict[str, str]:
    """The variables ``s3_storage_config(credentials="env")`` names, with the server's keys."""
    env = {CRED_ENV_ACCESS_KEY_ID: server.access_key, CRED_ENV_SECRET_ACCESS_KEY: server.secret_key}
    if session_token is not None:
        env[CRED_ENV_SESSION_TOKEN] = session_token
    return env


def s3_storage_config(server: S3Server, bucket: str, prefix: str = "", *, credentials: str | None = "inline",
                      secrets_dir: Path | None = None, endpoint: str | bool | None = None,
                      region: str | bool | None = None,
                      path_style: bool | None = True, allow_http: bool | None = True,
                      access_key: str | None = None, secret_key: str | None = None,
                      session_token: str | None = None, **extra) -> dict:
    """The collector's ``storage`` block for ``s3://bucket/prefix`` on ``server`` (through
    its proxy unless ``endpoint`` says otherwise)::

        {"outputDir": "s3://bucket/prefix",
         "s3": {"endpoint": ..., "region": ..., "pathStyle": true, "allowHttp": true, <credentials>}}

    ``credentials``:
      ``"inline"``  ``accessKeyId`` + ``secretAccessKey`` (+ ``sessionToken``)
      ``"file"``    ``accessKeyId`` + ``secretAccessKeyFile`` (+ ``sessionTokenFile``): the
                    secret written to a 0600 file in ``secrets_dir``
      ``"env"``     ``accessKeyIdEnv`` + ``secretAccessKeyEnv`` (+ ``sessionTokenEnv``) naming
                    ``CRED_ENV_*``; put ``credential_env(server)`` into the child's environment
      ``"credentials_file"``  ``credentialsFile``: an AWS shared-credentials file
                    (``[default]`` ``aws_access_key_id`` / ``aws_secret_access_key`` /
                    ``aws_session_token``) in ``secrets_dir``
      ``None``      no credential keys (the ``AWS_*`` variables supply them)
    ``endpoint``/``region``: ``False`` leaves the key out (``None``: the server's);
    ``path_style``/``allow_http``: ``None`` leaves the key out.
    ``extra``: more keys for ``s3`` (camelCase, as in the config), overriding the above.
    Pass the result as ``helpers.write_config(..., storage_extra=...)``."""
    ak = access_key or server.access_key
    sk = secret_key or server.secret_key
    s3: dict = {}
    if endpoint is not False:
        s3["endpoint"] = endpoint or server.endpoint
    if region is not False:
        s3["region"] = region or server.region
    if path_style is not None:
        s3["pathStyle"] = path_style
    if allow_http is not None:
        s3["allowHttp"] = allow_http
    if credentials in ("file", "credentials_file") and secrets_dir is None:
        raise ValueError(f"credentials={credentials!r} needs secrets_dir")
    if credentials == "inline":
        s3.update({"accessKeyId": ak, "secretAccessKey": sk})
        if session_token is not None:
            s3["sessionToken"] = session_token
    elif credentials == "file":
        s3["accessKeyId"] = ak
        s3["secretAccessKeyFile"] = str(_secret_file(secrets_dir, "s3-secret-access-key", sk))
        if session_token is not None:
            s3["sessionTokenFile"] = str(_secret_file(secrets_dir, "s3-session-token", session_token))
    elif credentials == "env":
        s3.update({"accessKeyIdEnv": CRED_ENV_ACCESS_KEY_ID, "secretAccessKeyEnv": CRED_ENV_SECRET_ACCESS_KEY})
        if session_token is not None:
            s3["sessionTokenEnv"] = CRED_ENV_SESSION_TOKEN
    elif credentials == "credentials_file":
        text = f"[default]\naws_access_key_id = {ak}\naws_secret_access_key = {sk}\n"
        if session_token is not None:
            text += f"aws_session_token = {session_token}\n"
        s3["credentialsFile"] = str(_secret_file(secrets_dir, "s3-credentials", text))
    elif credentials is not None:
        raise ValueError(f"credentials: one of inline, file, env, credentials_file, None; got {credentials!r}")
    s3.update(extra)
    return {"outputDir": server.url(bucket, prefix), "s3": s3}


def _secret_file(secrets_dir: Path, name: str, text: str) -> Path:
    path = Path(secrets_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def write_s3_config(path: Path, prometheus_url: str, proxies, server: S3Server, bucket: str, prefix: str = "",
                    *, metrics=None, prometheus_extra=None, top_extra=None, **storage_options) -> Path:
    """A whole collector config (``helpers.write_config``) whose output is
    ``s3://bucket/prefix`` on ``server``; ``storage_options`` go to ``s3_storage_config``
    (``secrets_dir`` defaults to the config's folder)."""
    from helpers import write_config

    storage_options.setdefault("secrets_dir", Path(path).parent)
    storage = s3_storage_config(server, bucket, prefix, **storage_options)
    return write_config(Path(path), prometheus_url, proxies, metrics=metrics, prometheus_extra=prometheus_extra,
                        storage_extra=storage, top_extra=top_extra)
