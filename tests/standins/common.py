"""What the cloud stand-ins share: start/stop as a context manager with a record of the requests, a
per-service reverse proxy on 127.0.0.1, port probes, and engine helpers for the containers they run
as a cloud's service instances."""

from __future__ import annotations

import copy
import re
import socket
import threading
from collections.abc import Callable
from typing import Self
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from docker.errors import APIError
from docker.errors import NotFound as DockerNotFound
from docker.utils import parse_repository_tag

class RecordingStandIn:
    """A stand-in's lifecycle and request log; subclasses set ``_lock`` and ``_requests`` and define start/stop."""

    _lock: threading.RLock
    _requests: list[tuple]

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _record(self, *request) -> None:
        with self._lock:
            self._requests.append(copy.deepcopy(request))

    @property
    def requests(self) -> list[tuple]:
        """What was asked of it, in order: (method, path[, body])."""
        with self._lock:
            return copy.deepcopy(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()


HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade"})


def tcp_ok(port: int, timeout: float) -> bool:
    """Docker's userland proxy accepts on the host port even when nothing listens inside: an at once
    closed connection means no listener; one that stays open (or speaks first) means a listener."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(min(0.3, timeout))
            return sock.recv(1) != b""
    except TimeoutError:
        return True
    except OSError:
        return False


def ensure_image(docker, image: str, registry_auth: dict | None, prefer_local: bool = False) -> None:
    """Pull an image that names a registry (with the cloud's credentials); bare names run from the engine."""
    repository, tag = parse_repository_tag(image)
    registry_host = "/" in repository and re.search(r"[.:]|^localhost$", repository.split("/", 1)[0])
    if prefer_local or not registry_host:
        try:
            docker.inspect_image(image)
            return
        except DockerNotFound:
            if not registry_host:
                raise RuntimeError(f"image {image} is not present on the engine") from None
    if tag and tag.startswith("sha256:"):
        stream = docker.pull(f"{repository}@{tag}", auth_config=registry_auth, stream=True, decode=True)
    else:
        stream = docker.pull(repository, tag=tag or "latest", auth_config=registry_auth, stream=True, decode=True)
    for line in stream:
        if "error" in line:
            raise RuntimeError(line["error"])
    docker.inspect_image(image)


def remove_container(docker, container: str) -> None:
    try:
        docker.remove_container(container, force=True, v=True)
    except DockerNotFound:
        pass
    except APIError as error:
        if "already in progress" not in str(error):
            raise


class LoopbackServer(ThreadingHTTPServer):
    """A stand-in's HTTP server on a free 127.0.0.1 port, serving from a daemon thread; handlers reach
    the stand-in as ``self.server.standin``."""

    daemon_threads = True

    def __init__(self, standin, handler, name: str):
        super().__init__(("127.0.0.1", 0), handler)
        self.standin = standin
        threading.Thread(target=self.serve_forever, daemon=True, name=name).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class ServiceProxy(ThreadingHTTPServer):
    """A service's URL: ``backend(authorization)`` says (status, host port of an instance); the request
    is relayed there, else ``refuse(status, path)`` gives the (content type, body) of the refusal.
    Subclasses that route on more than the credentials override ``route``."""

    daemon_threads = True

    def __init__(self, backend: Callable[[str | None], tuple[int, int | None]] | None,
                 refuse: Callable[[int, str], tuple[str, bytes]], name: str, strip: frozenset[str] = frozenset()):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.backend, self.refuse = backend, refuse
        self.dropped = HOP_BY_HOP | {"content-length"} | strip
        self.http = httpx.Client(timeout=httpx.Timeout(300, connect=5))
        self._closed = False
        threading.Thread(target=self.serve_forever, daemon=True, name=f"proxy {name}").start()

    def route(self, request: BaseHTTPRequestHandler) -> tuple[int, int | None]:
        """(status, host port) for a request: by its Authorization header through ``backend``; a subclass may
        look at more of the request instead (then ``backend`` may be None)."""
        return self.backend(request.headers.get("Authorization"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.shutdown()
        self.server_close()
        self.http.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: ServiceProxy

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        status, port = self.server.route(self)
        if port is None:
            return self._refuse(status)
        body = self._body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in self.server.dropped]
        try:
            request = self.server.http.build_request(self.command, f"http://127.0.0.1:{port}{self.path}",
                                                     headers=headers, content=body)
            response = self.server.http.send(request, stream=True)
        except httpx.HTTPError:
            return self._refuse(503)
        try:
            self.send_response(response.status_code, response.reason_phrase)
            for key, value in response.headers.multi_items():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.end_headers()
            for chunk in response.iter_raw():
                self.wfile.write(chunk)
                self.wfile.flush()
        finally:
            response.close()

    def _body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():
            pass
        return b"".join(chunks)

    def _refuse(self, status: int) -> None:
        content_type, page = self.server.refuse(status, self.path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(page)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle
