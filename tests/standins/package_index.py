"""A PEP 503 package index on 127.0.0.1 whose downloads wait at a gate: a build that is certainly in progress.

pip in a build container (host network) installs ``<name>==<version>`` for any name starting with
``slow-`` from here: the index page answers at once, the wheel (made on the fly) only once the gate
is open. A test closes the gate, starts a deploy, waits until pip asks for the wheel, and then
kills what it wants to kill while the build is running.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler

from tests.standins.common import LoopbackServer, RecordingStandIn

_PROJECT = re.compile(r"^/simple/(slow-[a-z0-9-]+)/$")
_WHEEL = re.compile(r"^/files/(slow_[a-z0-9_]+)-([0-9.]+)-py3-none-any\.whl$")


def wheel(distribution: str, version: str) -> bytes:
    """A pure-Python wheel with one empty module, as pip installs it."""
    module = distribution.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: cloud-deploy-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"]).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), content)  # the same bytes each time
    return buffer.getvalue()


class GatedPackageIndex(RecordingStandIn):
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._requests: list[tuple] = []
        self.gate = threading.Event()
        self.gate.set()
        self._server: LoopbackServer | None = None

    def start(self) -> GatedPackageIndex:
        self._server = LoopbackServer(self, _Handler, "package index")
        return self

    def stop(self) -> None:
        self.gate.set()
        if self._server:
            self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple"

    def downloads(self, distribution: str) -> int:
        """How many times pip has asked for the wheel of ``distribution``."""
        module = distribution.replace("-", "_")
        return sum(1 for method, path in self.requests if path.startswith(f"/files/{module}-"))


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        index: GatedPackageIndex = self.server.standin
        index._record("GET", self.path)
        project = _PROJECT.match(self.path)
        if project:
            return self._index_page(project[1])
        download = _WHEEL.match(self.path)
        if not download:
            return self._answer(404, b"not found", "text/plain")
        index.gate.wait()
        self._answer(200, wheel(download[1].replace("_", "-"), download[2]), "application/octet-stream")

    def _index_page(self, distribution: str) -> None:
        versions = ("1.0", "2.0")
        links = []
        for version in versions:
            name = f"{distribution.replace('-', '_')}-{version}-py3-none-any.whl"
            digest = hashlib.sha256(wheel(distribution, version)).hexdigest()
            links.append(f'<a href="/files/{name}#sha256={digest}">{name}</a><br/>')
        page = f"<!DOCTYPE html><html><body>{''.join(links)}</body></html>".encode()
        self._answer(200, page, "text/html")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # pip gave up on a download held at the gate (its socket timeout) and will ask again
