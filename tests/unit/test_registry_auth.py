"""The registry client's auth against a local server speaking the distribution token protocol."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cloud_deploy_provider.registries.oci import Registry, RegistryClient, RegistryError

DIGEST = "sha256:" + "ab" * 32


class TokenRegistry(BaseHTTPRequestHandler):
    """/token issues a bearer token for alice:pw; manifests need it; 'missing' answers 404."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/token"):
            basic = "Basic " + base64.b64encode(b"alice:pw").decode()
            if self.headers.get("Authorization") != basic or "scope=repository%3Aapp%2Fweb%3Apull" not in self.path:
                self.send_response(401)
                self.end_headers()
                return
            body = b'{"token": "t0k"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(404)
        self.end_headers()

    def do_HEAD(self):
        if self.headers.get("Authorization") != "Bearer t0k":
            port = self.server.server_address[1]
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{port}/token",service="reg",'
                                                 'scope="repository:app/web:pull"')
            self.end_headers()
            return
        self.send_response(404 if "missing" in self.path else 200)
        self.send_header("Docker-Content-Digest", DIGEST)
        self.end_headers()


@pytest.fixture(scope="module")
def token_registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_bearer_token_flow_gives_the_digest(token_registry):
    client = RegistryClient(Registry(token_registry, "http", "alice", "pw"))
    assert client.manifest_digest("app/web", "v1") == DIGEST
    assert client.manifest_digest("app/web", "missing") is None


def test_wrong_credentials_are_a_clear_error_without_the_password(token_registry):
    client = RegistryClient(Registry(token_registry, "http", "alice", "wrong-password"))
    with pytest.raises(RegistryError) as failure:
        client.manifest_digest("app/web", "v1")
    assert "token request" in str(failure.value) and "wrong-password" not in str(failure.value)
    assert "wrong-password" not in repr(client.registry)


def test_connection_host_forms(monkeypatch):
    class Conn:
        conn_id, login, password, port, extra_dejson = "reg", "u", "p", None, {}

    for host, expected in [("127.0.0.1:5000", ("127.0.0.1:5000", "http")), ("http://reg.local:5000", ("reg.local:5000", "http")),
                           ("registry.example.com", ("registry.example.com", "https"))]:
        conn = Conn()
        conn.host = host
        registry = Registry.from_connection(conn)
        assert (registry.host, registry.scheme) == expected
    assert Registry.from_connection(conn).auth_config() == {"username": "u", "password": "p", "serveraddress": "registry.example.com"}
