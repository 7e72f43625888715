"""A fault-injecting HTTP proxy in front of a real Prometheus (standard library only).

The proxy forwards every request (method, path, query string, form body and the
client's headers, ``Authorization`` included) to the upstream Prometheus and
relays the answer, unless a configured *rule* matches the request; then the
rule's *action* answers instead, for the rule's first ``times`` matching
requests (``times=None``: for every one). Every request is recorded, with what
was done with it.

Typical use::

    with FaultProxy(prometheus.url) as proxy:
        rule = proxy.add_rule("http_503", query_contains="apigee_error_count", times=2)
        ... run the collector against proxy.url ...
        assert rule.fired == 2
        assert [r.action for r in proxy.snapshot()] == [...]   # "http_503", "forward", ...

A rule matches by exact ``path``, by a substring of the ``query`` parameter
(``query_contains``), by HTTP ``method``, by a substring of the percent-decoded
path (``path_contains``: an S3 key, say), by any predicate on the recorded
request (``match``), by all of those given, or, with none given, every request.

Actions (see ``ACTIONS``):

``http_500`` ``http_502`` ``http_503``
    that status with a Prometheus-like JSON error body
    (``{"status":"error","errorType":"internal","error":...}``), or plain text
    with ``text=True``.
``http_429``
    429 with ``Retry-After: <retry_after>`` (default 1) and a JSON error body.
``hang``
    read the request, send nothing for ``hang_seconds`` (default 5; cut short when
    the proxy stops), then close the connection.
``reset``
    read the request, then close the socket with ``SO_LINGER`` 0: the client sees
    a connection reset (RST).
``truncate``
    forward to the upstream, then answer 200 with the first half of its body
    (``Content-Length`` is the truncated length, so the HTTP framing is valid but
    the JSON is cut).
``malformed``
    200 with an HTML body (``<html>...``).
``api_error``
    200 with ``{"status":"error","errorType":"execution","error":<message>}``
    (``error_type=`` sets another errorType, e.g. ``unavailable``).
``wrong_type``
    200 with a successful answer of ``"resultType":"string"``.
``http_400`` ``http_422``
    Prometheus's JSON error (``bad_data`` / ``execution``).
``http_401``
    401 with a plain-text body, as Prometheus's basic auth answers.
``empty``
    200 with a successful, empty answer (an empty vector; an empty matrix for
    ``query_range``; an empty list elsewhere).
``delay``
    wait ``delay_seconds`` (default 0.2), or until the ``threading.Event`` given as
    ``until`` is set (a slow answer the test ends when it chooses), then forward
    normally (for observing how many requests a client keeps in flight).
``s3_error``
    an S3-style XML error: ``status`` (default 503) with
    ``<Error><Code>SlowDown</Code><Message>...</Message>...</Error>``;
    ``code=`` sets the code (default ``SlowDown`` for 503, ``InternalError`` for
    500, ``ServiceUnavailable`` for other 5xx, ``AccessDenied`` for 403,
    ``NoSuchKey`` for 404, ``PreconditionFailed`` for 412, else ``InvalidRequest``).
``partial_body``
    forward to the upstream, send its status and headers with the *full*
    ``Content-Length``, then only the first ``after_bytes`` bytes of the body
    (default half), wait ``hang_seconds`` (default 0) and close the connection:
    a body cut short (the client sees an early EOF) or, with a long wait, a
    body that stalls mid-way.
``endless``
    200 with a Prometheus-like matrix answer that never ends: series objects are
    written in 64 KiB blocks, as fast as the client reads, until it hangs up (or
    the proxy stops). ``chunked=False`` sends no framing at all (the body runs to
    the connection's end); ``content_length=N`` announces ``N`` bytes instead (and
    still never stops before the client goes).
``trickle``
    200 with the start of a valid answer, then one space every
    ``trickle_interval`` seconds (default 0.1) for ``trickle_seconds`` (default
    300): a body that keeps arriving but never completes.
``echo_headers``
    ``status`` (default 401) with a body that quotes the request line and every
    request header (``Authorization`` included) and the form body, as a server or
    proxy that echoes its input might: plain text, or with ``json=True`` a
    Prometheus JSON error whose message holds the same text. ``auth_at=N`` puts the
    ``Authorization`` line ``N`` characters into the text (after filler), to put it
    where a client cuts its quote of the body.

Each error action's message can be set with ``message=``; the default names the
action and the rule (``injected http_400 by faultproxy rule #1``) so tests can
look for it in the client's output.

The module also reads PromQL back, to check what a client sent:
``promql_literals``, ``promql_unquote`` (strict, as Prometheus unquotes),
``promql_skeleton`` (the query with every literal emptied), ``label_matchers``
and ``regex_literal_alternatives``.

Any method is proxied (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS) with its
body (``Content-Length`` or chunked; forwarded with a ``Content-Length``).
``FaultProxy(upstream, transparent=True)`` is for S3 and other signed
protocols: the client's ``Host`` and ``Accept-Encoding`` headers are forwarded
unchanged (a SigV4 signature covers ``Host``) and the upstream's
``Content-Encoding`` is passed back. A ``HEAD`` answer keeps the upstream's
``Content-Length`` in every mode.

Authentication: ``FaultProxy(upstream, bearer_token="tok")`` answers 401 unless
the request carries ``Authorization: Bearer tok``, and strips the header before
forwarding (so bearer auth can be tested against an upstream that knows none).
``basic_auth=(user, password)`` does the same for basic auth.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

ACTIONS = (
    "http_500", "http_502", "http_503", "http_429", "hang", "reset", "truncate", "malformed",
    "api_error", "wrong_type", "http_400", "http_422", "http_401", "empty", "delay", "endless", "trickle",
    "echo_headers", "s3_error", "partial_body",
)

#: Hop-by-hop and framing headers that are not copied between client and upstream.
_SKIP_REQUEST_HEADERS = {"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding",
                         "content-length", "accept-encoding", "te", "upgrade", "trailer"}
_SKIP_RESPONSE_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length",
                          "content-encoding", "date", "server"}
#: What ``transparent=True`` forwards after all: the client's Host (signed by SigV4)
#: and Accept-Encoding, and the upstream's Content-Encoding.
_TRANSPARENT_REQUEST_HEADERS = {"host", "accept-encoding"}
_TRANSPARENT_RESPONSE_HEADERS = {"content-encoding"}
#: Default ``<Code>`` of the ``s3_error`` action by status.
_S3_ERROR_CODES = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied", 404: "NoSuchKey",
                   412: "PreconditionFailed", 400: "InvalidRequest"}


@dataclass
class RecordedRequest:
    """One request the proxy received."""

    seq: int
    time: float  # time.monotonic() when the request (headers and body) had been read
    method: str
    path: str  # without the query string
    query: dict  # parsed URL query string: name -> [values]
    form: dict  # parsed form body: name -> [values]
    headers: dict  # lower-cased name -> value (the last one wins)
    body: bytes
    action: str = "forward"  # the rule's action, "forward", or "unauthorized"
    rule: Optional["Rule"] = None
    status: Optional[int] = None  # the status sent to the client (None: none was sent)

    @property
    def params(self) -> dict:
        """Query-string and form parameters together (name -> [values])."""
        out = {k: list(v) for k, v in self.query.items()}
        for k, v in self.form.items():
            out.setdefault(k, []).extend(v)
        return out

    def param(self, name: str, default=None):
        """The first value of parameter ``name`` (query string or form)."""
        values = self.params.get(name)
        return values[0] if values else default

    @property
    def promql(self) -> Optional[str]:
        """The ``query`` parameter (instant and range queries)."""
        return self.param("query")


@dataclass
class Rule:
    """When a request matches, ``action`` answers it, at most ``times`` times."""

    id: int
    action: str
    path: Optional[str] = None  # exact path, e.g. "/api/v1/query"
    query_contains: Optional[str] = None  # substring of the `query` parameter
    match: Optional[Callable[[RecordedRequest], bool]] = None  # any other predicate
    times: Optional[int] = 1  # None: every matching request
    options: dict = field(default_factory=dict)
    fired: int = 0
    method: Optional[str] = None  # "GET", "PUT", ... (case-insensitive)
    path_contains: Optional[str] = None  # substring of the percent-decoded path

    def matches(self, req: RecordedRequest) -> bool:
        if self.path is not None and req.path != self.path:
            return False
        if self.method is not None and req.method.upper() != self.method.upper():
            return False
        if self.path_contains is not None and self.path_contains not in urllib.parse.unquote(req.path):
            return False
        if self.query_contains is not None and self.query_contains not in (req.promql or ""):
            return False
        if self.match is not None and not self.match(req):
            return False
        return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    @property
    def message(self) -> str:
        return self.options.get("message") or f"injected {self.action} by faultproxy rule #{self.id}"


class FaultProxy:
    """The proxy server; ``start()``/``stop()`` or use it as a context manager."""

    def __init__(self, upstream: str, bearer_token: str | None = None, basic_auth=None,
                 upstream_timeout: float = 30.0, transparent: bool = False):
        u = urllib.parse.urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = u.hostname
        self.upstream_port = u.port or 80
        self.upstream_prefix = u.path.rstrip("/")
        self.bearer_token = bearer_token
        self.basic_auth = tuple(basic_auth) if basic_auth else None
        self.upstream_timeout = upstream_timeout
        self.transparent = transparent
        self.requests: list[RecordedRequest] = []
        self.rules: list[Rule] = []
        self._lock = threading.RLock()  # `match` predicates run under it
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._next_rule = 1
        self.in_flight = 0
        self.max_in_flight = 0

    # -- lifecycle -------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FaultProxy not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # ends hangs early
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- rules -----------------------------------------------------------------
    def add_rule(self, action: str, *, path: str | None = None, query_contains: str | None = None,
                 match: Callable[[RecordedRequest], bool] | None = None, times: int | None = 1,
                 method: str | None = None, path_contains: str | None = None, **options) -> Rule:
        """Adds a rule; rules are tried in the order added, the first live match wins.

        Options: ``message`` (error text), ``text`` (plain-text body for 5xx),
        ``retry_after`` (429), ``hang_seconds`` (hang), ``delay_seconds`` (delay),
        ``chunked``/``content_length`` (endless), ``trickle_interval``/
        ``trickle_seconds`` (trickle), ``status``/``json``/``auth_at`` (echo_headers),
        ``status``/``code`` (s3_error), ``after_bytes``/``hang_seconds`` (partial_body).
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {ACTIONS}")
        with self._lock:
            rule = Rule(self._next_rule, action, path, query_contains, match, times, options,
                        method=method, path_contains=path_contains)
            self._next_rule += 1
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forgets every rule and every recorded request."""
        with self._lock:
            self.rules.clear()
            self.requests.clear()
            self.max_in_flight = self.in_flight

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            req.seq = len(self.requests)
            self.requests.append(req)

    def _pick(self, req: RecordedRequest) -> Optional[Rule]:
        with self._lock:
            req.seq = len(self.requests)
            self.requests.append(req)
            for rule in self.rules:
                if not rule.exhausted and rule.matches(req):
                    rule.fired += 1
                    return rule
        return None

    # -- inspection --------------------------------------------------------------
    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def queries(self, path: str | None = None) -> list[str]:
        """The ``query`` parameter of every request (optionally of one path), in order."""
        return [r.promql for r in self.snapshot() if r.promql is not None and (path is None or r.path == path)]

    def matching(self, *, path: str | None = None, query_contains: str | None = None,
                 match: Callable[[RecordedRequest], bool] | None = None, method: str | None = None,
                 path_contains: str | None = None) -> list[RecordedRequest]:
        probe = Rule(0, "forward", path, query_contains, match, method=method, path_contains=path_contains)
        return [r for r in self.snapshot() if probe.matches(r)]

    def summary(self) -> str:
        """One line per request, for assertion messages."""
        return "\n".join(f"#{r.seq} {r.method} {r.path} {r.action} {r.status} query={r.promql!r}"
                         for r in self.snapshot())


def _prom_error(error_type: str, message: str) -> bytes:
    return json.dumps({"status": "error", "errorType": error_type, "error": message}).encode()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def s3_error_body(code: str, message: str, resource: str = "", request_id: str = "faultproxy") -> bytes:
    """The XML body S3 sends with an error status."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{_xml_escape(code)}</Code><Message>{_xml_escape(message)}</Message>"
            f"<Resource>{_xml_escape(resource)}</Resource><RequestId>{_xml_escape(request_id)}</RequestId>"
            "</Error>").encode()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy/1"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def do_OPTIONS(self):
        self._handle()

    # -- plumbing --------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)  # the CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_request(self) -> RecordedRequest:
        body = self._read_body()
        split = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        form = {}
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded" and body:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        headers = {k.lower(): v for k, v in self.headers.items()}
        return RecordedRequest(seq=-1, time=time.monotonic(), method=self.command,
                               path=split.path, query=query, form=form, headers=headers, body=body)

    def _send(self, req: RecordedRequest, status: int, body: bytes, content_type: str = "application/json",
              extra_headers: dict | None = None) -> None:
        req.status = status
        self._answered()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self, req: RecordedRequest) -> bool:
        owner = self.owner
        if owner.bearer_token is None and owner.basic_auth is None:
            return True
        got = req.headers.get("authorization", "")
        if owner.bearer_token is not None and got == f"Bearer {owner.bearer_token}":
            return True
        if owner.basic_auth is not None:
            want = base64.b64encode(f"{owner.basic_auth[0]}:{owner.basic_auth[1]}".encode()).decode()
            if got == f"Basic {want}":
                return True
        return False

    def _upstream(self, req: RecordedRequest, strip_auth: bool) -> tuple[int, list, bytes]:
        owner = self.owner
        conn = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=owner.upstream_timeout)
        try:
            path = owner.upstream_prefix + self.path
            headers = {}
            for k, v in self.headers.items():
                lk = k.lower()
                if (lk in _SKIP_REQUEST_HEADERS and not (owner.transparent and lk in _TRANSPARENT_REQUEST_HEADERS)) \
                        or lk == "expect" or (strip_auth and lk == "authorization"):
                    continue
                headers[k] = v
            if owner.transparent:
                # Exactly the client's headers: http.client adds neither Host nor Accept-Encoding.
                conn.putrequest(self.command, path, skip_host="host" in {k.lower() for k in headers},
                                skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                if req.body or self.command in ("PUT", "POST", "PATCH"):
                    conn.putheader("Content-Length", str(len(req.body)))
                conn.endheaders(req.body if req.body else None)
            else:
                conn.request(self.command, path, body=req.body if req.body else None, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, resp.getheaders(), body
        finally:
            conn.close()

    def _forward(self, req: RecordedRequest, strip_auth: bool) -> None:
        try:
            status, headers, body = self._upstream(req, strip_auth)
        except OSError as e:
            self._send(req, 502, f"faultproxy: upstream failed: {e}".encode(), "text/plain")
            return
        req.status = status
        self._answered()
        self.send_response(status)
        self._relay_headers(headers, len(body))
        self.end_headers()
        self.wfile.write(body)

    def _relay_headers(self, headers: list, body_length: int) -> None:
        """The upstream's headers, and a Content-Length: the body's, or for HEAD the upstream's."""
        transparent = self.owner.transparent
        length = str(body_length)
        for k, v in headers:
            lk = k.lower()
            if lk == "content-length" and self.command == "HEAD":
                length = v
            if lk not in _SKIP_RESPONSE_HEADERS or (transparent and lk in _TRANSPARENT_RESPONSE_HEADERS):
                self.send_header(k, v)
        self.send_header("Content-Length", length)

    def _handle(self) -> None:
        owner = self.owner
        req = self._read_request()
        with owner._lock:
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        self._counted = True
        try:
            self._dispatch(req)
        finally:
            self._answered()

    def _answered(self) -> None:
        """The request stops counting as in flight (before its answer is written, so
        that a client's next request can never overlap it in the count)."""
        if getattr(self, "_counted", False):
            self._counted = False
            with self.owner._lock:
                self.owner.in_flight -= 1

    def _dispatch(self, req: RecordedRequest) -> None:
        owner = self.owner
        if not self._authorized(req):
            req.action = "unauthorized"
            owner._record(req)
            self._send(req, 401, b"Unauthorized\n", "text/plain; charset=utf-8",
                       {"WWW-Authenticate": 'Basic realm="faultproxy"' if owner.basic_auth else "Bearer"})
            return
        strip_auth = owner.bearer_token is not None or owner.basic_auth is not None
        rule = owner._pick(req)
        if rule is None:
            self._forward(req, strip_auth)
            return
        req.rule = rule
        req.action = rule.action
        self._act(req, rule, strip_auth)

    def _act(self, req: RecordedRequest, rule: Rule, strip_auth: bool) -> None:
        action, msg = rule.action, rule.message
        if action in ("http_500", "http_502", "http_503"):
            status = int(action[5:])
            if rule.options.get("text"):
                self._send(req, status, f"{status} {msg}\n".encode(), "text/plain; charset=utf-8")
            else:
                self._send(req, status, _prom_error("internal" if status == 500 else "unavailable", msg))
        elif action == "http_429":
            self._send(req, 429, _prom_error("unavailable", msg), extra_headers={
                "Retry-After": str(rule.options.get("retry_after", 1))})
        elif action == "http_400":
            self._send(req, 400, _prom_error("bad_data", msg))
        elif action == "http_422":
            self._send(req, 422, _prom_error("execution", msg))
        elif action == "http_401":
            self._send(req, 401, b"Unauthorized\n", "text/plain; charset=utf-8")
        elif action == "api_error":
            self._send(req, 200, _prom_error(rule.options.get("error_type", "execution"), msg))
        elif action == "empty":
            if req.path.endswith("/query"):
                data = {"resultType": "vector", "result": []}
            elif req.path.endswith("/query_range"):
                data = {"resultType": "matrix", "result": []}
            else:
                data = []
            self._send(req, 200, json.dumps({"status": "success", "data": data}).encode())
        elif action == "wrong_type":
            body = json.dumps({"status": "success", "data": {"resultType": "string",
                                                             "result": [time.time(), msg]}}).encode()
            self._send(req, 200, body)
        elif action == "malformed":
            body = f"<html><head><title>502 Bad Gateway</title></head><body>{msg}</body></html>\n".encode()
            self._send(req, 200, body, "text/html")
        elif action == "truncate":
            try:
                status, _, body = self._upstream(req, strip_auth)
            except OSError as e:
                self._send(req, 502, f"faultproxy: upstream failed: {e}".encode(), "text/plain")
                return
            self._send(req, status, body[: len(body) // 2])
        elif action == "delay":
            until = rule.options.get("until")
            if until is None:
                self.owner._stopping.wait(rule.options.get("delay_seconds", 0.2))
            else:
                while not until.wait(0.05) and not self.owner._stopping.is_set():
                    pass
            self._forward(req, strip_auth)
        elif action == "hang":
            self.owner._stopping.wait(rule.options.get("hang_seconds", 5.0))
            self.close_connection = True
        elif action == "endless":
            self._endless(req, rule)
        elif action == "trickle":
            self._trickle(req, rule)
        elif action == "echo_headers":
            self._echo_headers(req, rule)
        elif action == "s3_error":
            status = int(rule.options.get("status", 503))
            code = rule.options.get("code") or _S3_ERROR_CODES.get(
                status, "ServiceUnavailable" if status >= 500 else "InvalidRequest")
            if "message" in rule.options:
                text = rule.options["message"]
            elif code == "SlowDown":
                text = f"Please reduce your request rate. ({msg})"
            else:
                text = msg
            body = s3_error_body(code, text, urllib.parse.unquote(req.path), f"faultproxy-{req.seq}")
            self._send(req, status, body, "application/xml")
        elif action == "partial_body":
            self._partial_body(req, rule, strip_auth)
        elif action == "reset":
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # The descriptor is really closed (with an RST, because of the zero
                # linger) once rfile is closed too, which finish() does next.
                self.connection.close()
            except OSError:
                pass
        else:  # pragma: no cover - add_rule validates
            raise AssertionError(action)

    def _partial_body(self, req: RecordedRequest, rule: Rule, strip_auth: bool) -> None:
        try:
            status, headers, body = self._upstream(req, strip_auth)
        except OSError as e:
            self._send(req, 502, f"faultproxy: upstream failed: {e}".encode(), "text/plain")
            return
        after = rule.options.get("after_bytes")
        after = len(body) // 2 if after is None else min(int(after), len(body))
        req.status = status
        self._answered()
        self.close_connection = True
        try:
            self.send_response(status)
            self._relay_headers(headers, len(body))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body[:after])
            self.wfile.flush()
        except OSError:
            return
        self.owner._stopping.wait(rule.options.get("hang_seconds", 0.0))

    def _stream_headers(self, req: RecordedRequest, chunked: bool, content_length=None) -> None:
        req.status = 200
        self._answered()
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if content_length is not None:
            self.send_header("Content-Length", str(content_length))
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write_part(self, data: bytes, chunked: bool) -> None:
        if chunked:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def _endless(self, req: RecordedRequest, rule: Rule) -> None:
        content_length = rule.options.get("content_length")
        chunked = rule.options.get("chunked", True) and content_length is None
        self._stream_headers(req, chunked, content_length)
        item = b'{"metric":{"__name__":"endless","job":"faultproxy"},"values":[[1709251200,"1"],[1709251201,"2"]]},'
        block = item * (65536 // len(item))
        try:
            self._write_part(b'{"status":"success","data":{"resultType":"matrix","result":[', chunked)
            while not self.owner._stopping.is_set():
                self._write_part(block, chunked)
        except OSError:
            pass  # the client hung up, as it should

    def _trickle(self, req: RecordedRequest, rule: Rule) -> None:
        chunked = rule.options.get("chunked", True)
        self._stream_headers(req, chunked)
        interval = rule.options.get("trickle_interval", 0.1)
        end = time.monotonic() + rule.options.get("trickle_seconds", 300.0)
        try:
            self._write_part(b'{"status":"success","data":{"resultType":"vector","result":[', chunked)
            self.wfile.flush()
            while time.monotonic() < end and not self.owner._stopping.wait(interval):
                self._write_part(b" ", chunked)
                self.wfile.flush()
        except OSError:
            pass

    def _echo_headers(self, req: RecordedRequest, rule: Rule) -> None:
        lines = [self.requestline] + [f"{k}: {v}" for k, v in self.headers.items()]
        auth_at = rule.options.get("auth_at")
        if auth_at is not None:
            auth = [l for l in lines if l.lower().startswith("authorization:")]
            rest = [l for l in lines if not l.lower().startswith("authorization:")]
            lines = ["x" * auth_at + (auth[0] if auth else "")] + rest
        text = "\n".join(lines) + "\n" + req.body.decode("utf-8", "replace")
        status = rule.options.get("status", 401)
        if rule.options.get("json"):
            self._send(req, status, _prom_error("unauthorized", text))
        else:
            self._send(req, status, text.encode(), "text/plain; charset=utf-8")

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Reading the PromQL a client sent: string literals and label matchers.

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def promql_unquote(literal: str) -> str:
    """The value of a PromQL string literal (with its quotes), as Prometheus reads it.

    Strict like Prometheus's ``strutil.Unquote`` (Go's ``strconv.Unquote`` rules):
    an escape it does not know, a quote of the other kind escaped, an unescaped
    closing quote or a raw newline inside ``"..."``/``'...'`` raise ``ValueError``.
    Backtick strings are raw.
    """
    if len(literal) < 2 or literal[0] != literal[-1] or literal[0] not in "\"'`":
        raise ValueError(f"not a string literal: {literal!r}")
    quote, body = literal[0], literal[1:-1]
    if quote == "`":
        if "`" in body:
            raise ValueError(f"backtick inside a raw string: {literal!r}")
        return body
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == quote:
            raise ValueError(f"unescaped {quote} inside {literal!r}")
        if c == "\n":
            raise ValueError(f"raw newline inside {literal!r}")
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError(f"dangling backslash in {literal!r}")
        e = body[i + 1]
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif e == quote:
            out.append(e)
            i += 2
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + n]
            if len(digits) != n or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"bad \\{e} escape in {literal!r}")
            out.append(chr(int(digits, 16)))
            i += 2 + n
        elif e in "01234567":
            digits = body[i + 1:i + 4]
            if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                raise ValueError(f"bad octal escape in {literal!r}")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{e} in {literal!r}")
    return "".join(out)


def promql_literals(query: str) -> list[tuple[int, int, str]]:
    """``(start, end, literal)`` of every string literal in ``query`` (quotes
    included, ``query[start:end] == literal``), skipping ``#`` comments."""
    out = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c == "#":
            while i < n and query[i] != "\n":
                i += 1
            continue
        if c in "\"'`":
            j = i + 1
            while j < n and query[j] != c:
                j += 2 if (query[j] == "\\" and c != "`") else 1
            if j >= n:
                raise ValueError(f"unterminated string literal at {i} in {query!r}")
            out.append((i, j + 1, query[i:j + 1]))
            i = j + 1
            continue
        i += 1
    return out


def promql_skeleton(query: str) -> str:
    """``query`` with every string literal replaced by ``""``: its structure."""
    parts, last = [], 0
    for start, end, _ in promql_literals(query):
        parts.append(query[last:start])
        parts.append('""')
        last = end
    parts.append(query[last:])
    return "".join(parts)


def label_matchers(query: str, label: str) -> list[tuple[str, str]]:
    """``(operator, value)`` of every ``label <op> "literal"`` matcher in ``query``,
    the value unquoted as Prometheus reads it."""
    out = []
    for start, _, literal in promql_literals(query):
        before = query[:start].rstrip()
        for op in ("=~", "!~", "!=", "="):
            if before.endswith(op):
                name = before[: -len(op)].rstrip()
                if name.endswith(label) and (len(name) == len(label) or not (name[-len(label) - 1].isalnum()
                                                                             or name[-len(label) - 1] == "_")):
                    out.append((op, promql_unquote(literal)))
                break
    return out


_RE2_META = set("\\.+*?()|[]{}^$")


def regex_literal_alternatives(regex: str) -> list[str] | None:
    """The alternatives of a regex that is only ``lit|lit|...`` of quoted literals
    (as Go's ``regexp.QuoteMeta`` writes them); ``None`` if any part is not a plain
    quoted literal (an unescaped metacharacter, a class, ...)."""
    alts, cur, i = [], [], 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            if i + 1 >= len(regex) or regex[i + 1] not in _RE2_META:
                return None
            cur.append(regex[i + 1])
            i += 2
        elif c == "|":
            alts.append("".join(cur))
            cur = []
            i += 1
        elif c in _RE2_META:
            return None
        else:
            cur.append(c)
            i += 1
    alts.append("".join(cur))
    return alts
