"""A small fault-injecting HTTP proxy for S3 tests: sits on 127.0.0.1 between boto3 and the moto server.

Each `Fault` rule matches some requests (method, path substring, a header) and hits a bounded number of
them, every n-th match, so a schedule always ends and a run behind the proxy can finish. Kinds:

    slowdown         503 SlowDown XML error, nothing forwarded
    internal         500 InternalError XML error, nothing forwarded
    not_implemented  501 NotImplemented XML error (what a store without conditional writes answers)
    reset            connection reset before forwarding (the request never reaches the server)
    reset_after      forwarded, then the connection is reset: the write happened, the answer is lost
    slow             forwarded after a pause (below the client's read timeout)
    truncate         forwarded, the response body cut in half, then the connection is reset
    denied           403 SignatureDoesNotMatch that echoes the caller's access key id, as AWS does
    conflict         409 ConditionalRequestConflict (AWS: a concurrent request on the key; retry)

`FaultProxy.injected` counts what was injected, per kind, so a test can prove every fault happened.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = (
    "slowdown",
    "internal",
    "not_implemented",
    "reset",
    "reset_after",
    "slow",
    "truncate",
    "denied",
    "conflict",
)

_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "not_implemented": (
        501,
        "NotImplemented",
        "A header you provided implies functionality that is not implemented.",
    ),
    "conflict": (
        409,
        "ConditionalRequestConflict",
        "A conflicting operation occurred. If using PutObject you can retry the request.",
    ),
    "denied": (
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided.",
    ),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


@dataclass
class Fault:
    """One rule of the schedule: which requests it matches and how many of them it hits."""

    kind: str
    times: int = 1  # at most this many requests are hit
    every: int = 1  # hit every n-th matching request
    methods: tuple[str, ...] = ()  # empty: any method
    path_contains: str = ""
    header: str = ""  # only requests carrying this header (case-insensitive)
    slow_s: float = 1.5
    seen: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {KINDS}")

    def matches(self, method: str, path: str, headers) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.path_contains and self.path_contains not in path:
            return False
        if self.header and headers.get(self.header) is None:
            return False
        return not (self.kind == "truncate" and method != "GET")


class FaultProxy:
    """A threaded HTTP proxy forwarding to `upstream` (http://host:port) with a bounded fault schedule."""

    def __init__(self, upstream: str, faults: list[Fault] | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults = list(faults or [])
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.log: list[tuple[str, str, str]] = []  # (method, path, fault kind or "")
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def pick(self, method: str, path: str, headers) -> Fault | None:
        """The fault to inject into this request, if any (first matching rule that is due)."""
        with self._lock:
            self.requests += 1
            chosen = None
            for f in self.faults:
                if f.hits >= f.times or not f.matches(method, path, headers):
                    continue
                f.seen += 1
                if chosen is None and f.seen % f.every == 0:
                    f.hits += 1
                    chosen = f
            if chosen is not None:
                self.injected[chosen.kind] += 1
            self.log.append((method, path, chosen.kind if chosen else ""))
            return chosen

    def exhausted(self) -> bool:
        """True once every rule has hit all the requests it may."""
        with self._lock:
            return all(f.hits >= f.times for f in self.faults)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: tests read proxy.log
        pass

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """Close the socket with an RST and no response."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _error(self, kind: str) -> None:
        status, code, message = _ERRORS[kind]
        extra = ""
        if kind == "denied":  # real S3 echoes the key id and what it signed
            auth = self.headers.get("Authorization", "")
            key_id = auth.partition("Credential=")[2].split("/")[0]
            extra = f"<AWSAccessKeyId>{key_id}</AWSAccessKeyId><StringToSign>{auth}</StringToSign>"
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
            f"</Message>{extra}<RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.server.proxy.upstream, timeout=60)  # type: ignore[attr-defined]
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def _handle(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._read_body()
        fault = proxy.pick(self.command, self.path, self.headers)
        kind = fault.kind if fault else ""
        if kind in _ERRORS:
            self._error(kind)
            return
        if kind == "reset":
            self._reset()
            return
        if kind == "slow":
            time.sleep(fault.slow_s)
        status, headers, data = self._forward(body)
        if kind == "reset_after":
            self._reset()
            return
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in _HOP_BY_HOP:
                self.send_header(k, v)
        if self.command == "HEAD":
            length = next((v for k, v in headers if k.lower() == "content-length"), "0")
            self.send_header("Content-Length", length)
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if kind == "truncate" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._reset()
            return
        self.wfile.write(data)
