"""A proxy in front of moto, speaking AWS's wire protocols: to fail calls, record them, or add one moto lacks."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.request import Request, urlopen


class AwsProxy(ThreadingHTTPServer):
    """Forwards to moto. ``fail_first``: the first call of every operation gets a throttle or a 503.

    It keeps the request bodies, to check what was asked of AWS where moto does not store it, and
    ``operations`` answers the JSON-protocol operations moto lacks (keyed by X-Amz-Target).
    """

    def __init__(self, upstream: str, fail_first: bool = False,
                 operations: dict[str, Callable[[dict], dict]] | None = None):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.fail_first = fail_first
        self.operations = operations or {}
        self.seen: dict[str, int] = {}
        self.bodies: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> AwsProxy:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        operation = self.headers.get("X-Amz-Target") or _query_action(self.path, body) or f"{self.command} {self.path}"
        with self.server.lock:
            calls = self.server.seen[operation] = self.server.seen.get(operation, 0) + 1
            self.server.bodies[operation] = body
        if calls == 1 and self.server.fail_first:
            self._answer(*_failure(self.headers, body, throttle=len(self.server.seen) % 2 == 0))
            return
        if operation in self.server.operations:
            answer = self.server.operations[operation](json.loads(body or b"{}"))
            self._answer(200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(answer).encode())
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = Request(self.server.upstream + self.path, data=body or None, headers=headers, method=self.command)
        try:
            with urlopen(request, timeout=60) as answer:
                self._answer(answer.status, dict(answer.headers), answer.read())
        except Exception as error:  # HTTPError carries moto's own error answer
            self._answer(error.code, dict(error.headers), error.read())

    def _answer(self, status: int, headers: dict, body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


def _failure(headers, body: bytes, throttle: bool) -> tuple[int, dict, bytes]:
    """A throttle or a 503, each in the wire format of the service's protocol (JSON, EC2 or query XML)."""
    if headers.get("X-Amz-Target"):
        error = {"__type": "ThrottlingException", "message": "Rate exceeded"}
        if not throttle:
            return 503, {"Content-Type": "application/x-amz-json-1.1"}, b""
        return 400, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(error).encode()
    if not throttle:
        return 503, {}, b""
    if b"Version=2016-11-15" in body:  # EC2's own error shape
        xml = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
        xml += "</Message></Error></Errors><RequestID>1</RequestID></Response>"
    else:
        xml = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
        xml += "</Error><RequestId>1</RequestId></ErrorResponse>"
    return 400, {"Content-Type": "text/xml"}, xml.encode()


def _query_action(path: str, body: bytes) -> str | None:
    from urllib.parse import parse_qs, urlsplit

    fields = {**parse_qs(urlsplit(path).query), **parse_qs(body.decode(errors="replace"))}
    return fields.get("Action", [None])[0]
