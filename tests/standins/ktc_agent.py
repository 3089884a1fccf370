"""A local stand-in for TANGO's KT Cloud agent: start/stop/status over plain HTTP.

``POST /start`` runs the image as a container on the local engine (pulled from the registry with
the given auth), publishing the service port on 127.0.0.1; ``GET /status?service_name=`` answers
``running`` once the port accepts connections, ``starting`` before, ``failed`` with the
container's last log lines when it exited, ``stopped`` when there is no such service;
``POST /stop`` removes it. Bodies are checked like an agent would: missing or mistyped fields
get 400 with an ``error``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.standins.common import tcp_ok

REQUIRED = {"service_name": str, "image": str, "port": int, "cpu": (int, float), "memory": int, "gpu": int}
LABEL = "io.cloud-deploy.ktc-agent"


class KtcAgent:
    def __init__(self, docker_client, registry_auth: dict | None = None):
        self.docker = docker_client
        self.registry_auth = registry_auth
        self.started: list[dict] = []
        self._services: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def start(self) -> "KtcAgent":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.agent = self
        self.address = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        for container in self.docker.containers(all=True, filters={"label": LABEL}):
            self.docker.remove_container(container["Id"], force=True)

    def run(self, body: dict) -> dict:
        problems = [f"{key} must be {kind}" for key, kind in REQUIRED.items() if not isinstance(body.get(key), kind)]
        if problems:
            return {"code": 400, "error": "; ".join(problems)}
        self.started.append(body)
        name = body["service_name"]
        self.remove(name)
        repository, _, digest = body["image"].partition("@")
        self.docker.pull(repository, digest or None, auth_config=self.registry_auth)
        port = body["port"]
        container = self.docker.create_container(
            body["image"], name=f"ktc-{name}", labels={LABEL: name}, ports=[port],
            environment={**body.get("env", {}), "PORT": str(port)},
            host_config=self.docker.create_host_config(port_bindings={port: ("127.0.0.1", None)}),
        )["Id"]
        self.docker.start(container)
        host_port = int(self.docker.port(container, port)[0]["HostPort"])
        with self._lock:
            self._services[name] = (container, host_port)
        return {"status": "starting", "url": f"http://127.0.0.1:{host_port}"}

    def status(self, name: str) -> dict:
        with self._lock:
            found = self._services.get(name)
        if not found:
            return {"status": "stopped", "error": ""}
        container, host_port = found
        state = self.docker.inspect_container(container)["State"]
        if not state["Running"]:
            logs = self.docker.logs(container, tail=5).decode(errors="replace").strip()
            return {"status": "failed", "error": f"exit code {state['ExitCode']}: {logs}"}
        if tcp_ok(host_port, timeout=1):  # a bare connect is accepted by docker-proxy even with no listener
            return {"status": "running", "error": "", "url": f"http://127.0.0.1:{host_port}"}
        return {"status": "starting", "error": ""}

    def remove(self, name: str) -> bool:
        with self._lock:
            found = self._services.pop(name, None)
        if found:
            self.docker.remove_container(found[0], force=True)
        return found is not None


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def _answer(self, body: dict) -> None:
        code = body.pop("code", 200)
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        name = parse_qs(parts.query).get("service_name", [""])[0]
        if parts.path != "/status" or not name:
            return self._answer({"code": 404, "error": "GET /status?service_name=<name>"})
        self._answer(self.server.agent.status(name))

    def do_POST(self) -> None:
        agent, body = self.server.agent, self._json()
        if self.path == "/start":
            return self._answer(agent.run(body))
        if self.path == "/stop" and isinstance(body.get("service_name"), str):
            return self._answer({"status": "stopped" if agent.remove(body["service_name"]) else "not found", "error": ""})
        self._answer({"code": 404, "error": "POST /start or /stop with a JSON body"})
