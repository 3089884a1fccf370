"""The Backend.AI manager stand-in, driven over HTTP with the keypair HMAC signing Backend.AI clients use."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.standins.backendai import LABEL, BackendAIStandIn

BASE_IMAGE = os.environ.get("CLOUD_DEPLOY_BASE_IMAGE", "cloud-deploy/debian-python:bookworm")
VERSION = "v8.20240915"
GQL = """query($id: UUID!) { endpoint(endpoint_id: $id) {
  endpoint_id name status url desired_session_count
  routings { routing_id session status traffic_ratio error_data }
  errors { session_id errors { name repr } } } }"""


def bai_sign(method, endpoint, rel_url, date_iso, content_type, api_version, access_key, secret_key):
    host = urlsplit(endpoint).netloc
    body_hash = hashlib.sha256(b"").hexdigest()
    s = (f"{method.upper()}\n{rel_url}\n{date_iso}\nhost:{host}\n"
         f"content-type:{content_type.lower()}\nx-backendai-version:{api_version}\n{body_hash}")
    d = datetime.fromisoformat(date_iso)
    k = hmac.new(secret_key.encode(), d.strftime("%Y%m%d").encode(), hashlib.sha256).digest()
    k = hmac.new(k, host.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, s.encode(), hashlib.sha256).hexdigest()
    return f"BackendAI signMethod=HMAC-SHA256, credential={access_key}:{sig}"


class Client:
    """A minimal signed Backend.AI API client."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, version: str = VERSION):
        self.endpoint, self.access_key, self.secret_key, self.version = endpoint, access_key, secret_key, version
        self.http = httpx.Client(base_url=endpoint, timeout=30)

    def call(self, method: str, path: str, body=None, *, date: datetime | None = None,
             secret_key: str | None = None) -> httpx.Response:
        date_iso = (date or datetime.now(UTC)).isoformat()
        content = json.dumps(body).encode() if body is not None else b""
        content_type = "application/json"
        headers = {"Date": date_iso, "X-BackendAI-Version": self.version, "Content-Type": content_type,
                   "Authorization": bai_sign(method, self.endpoint, path, date_iso, content_type, self.version,
                                             self.access_key, secret_key or self.secret_key)}
        return self.http.request(method, path, content=content, headers=headers)

    def ok(self, method: str, path: str, body=None, status: int = 200):
        answer = self.call(method, path, body)
        assert answer.status_code == status, answer.text
        return answer.json() if answer.content else None

    def endpoint_status(self, endpoint_id: str) -> dict:
        return self.ok("POST", "/admin/gql", {"query": GQL, "variables": {"id": endpoint_id}})["data"]["endpoint"]

    def wait_status(self, endpoint_id: str, wanted: set[str], timeout: float = 40) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.endpoint_status(endpoint_id)
            if state["status"] in wanted or time.monotonic() > deadline:
                return state
            time.sleep(0.2)

    def upload(self, folder: str, path: str, data: bytes, chunk: int = 7) -> None:
        ticket = self.ok("POST", f"/folders/{folder}/request-upload", {"path": path, "size": len(data)})
        params = {"token": ticket["token"]}
        assert self.http.head(ticket["url"], params=params).headers["Upload-Offset"] == "0"
        offset = 0
        while offset < len(data):
            answer = self.http.patch(ticket["url"], params=params, content=data[offset:offset + chunk], headers={
                "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream"})
            assert answer.status_code == 204, answer.text
            offset = int(answer.headers["Upload-Offset"])


def _definition(command, port: int = 8080, health: dict | None = None) -> bytes:
    service = {"start_command": command, "port": port}
    if health is not None:
        service["health_check"] = health
    return yaml.safe_dump({"models": [{"name": "hello-model", "model_path": "/models", "service": service}]}).encode()


def _service(name: str, model: str, **extra) -> dict:
    config = {"model": model, "model_definition_path": "model-definition.yaml", "model_mount_destination": "/models",
              "extra_mounts": {}, "environ": {"GREETING": "hi"}, "scaling_group": "default",
              "resources": {"cpu": "1", "mem": "512m"}, "resource_opts": {"shmem": "64m"},
              **extra.pop("config", {})}
    return {"name": name, "desired_session_count": 1, "image": BASE_IMAGE, "arch": "x86_64", "group": "default",
            "domain": "default", "cluster_size": 1, "cluster_mode": "single-node", "open_to_public": False,
            "runtime_variant": "custom", "config": config, **extra}


def _model_folder(client: Client, name: str, definition: bytes, usage_mode: str = "model") -> str:
    folder = client.ok("POST", "/folders", {"name": name, "host": None, "usage_mode": usage_mode, "permission": "rw",
                                            "group": None, "cloneable": False}, status=201)
    client.upload(name, "model-definition.yaml", definition)
    client.upload(name, "index.html", b"served from the model folder\n")
    return folder["id"]


def _containers(docker_client, standin, endpoint_id: str | None = None) -> list[dict]:
    labels = [f"{LABEL}={standin.instance_id}"]
    if endpoint_id:
        labels.append(f"{LABEL}.endpoint={uuid.UUID(endpoint_id).hex}")
    return docker_client.containers(all=True, filters={"label": labels})


@pytest.fixture(scope="module")
def standin(docker_client):
    with BackendAIStandIn(docker_client) as running:
        yield running


@pytest.fixture(scope="module")
def client(standin):
    return Client(standin.endpoint, standin.access_key, standin.secret_key)


@pytest.fixture(scope="module")
def model(client):
    serve = "cd /models && exec python3 -m http.server 8080"
    _model_folder(client, "hello-model", _definition(serve, health={"path": "/index.html", "max_retries": 30,
                                                                      "interval": 0.3}))
    return "hello-model"


def test_hello_and_authentication(standin, client):
    hello = httpx.get(standin.endpoint + "/")
    assert hello.json() == {"version": "v8.20240915", "manager": "24.09.0"}

    standin.clear_requests()
    assert client.ok("GET", "/folders") == []
    assert standin.requests == [("GET", "/folders", None)]

    wrong = client.call("GET", "/folders", secret_key="not-the-secret")
    assert wrong.status_code == 401
    assert wrong.headers["Content-Type"].startswith("application/problem+json")
    assert wrong.json()["type"] == "https://api.backend.ai/probs/auth-failed"
    assert wrong.json()["msg"] == "HMAC signature mismatch"

    unknown = Client(standin.endpoint, "AKIAUNKNOWNUNKNOWN00", "x").call("GET", "/folders")
    assert unknown.status_code == 401 and unknown.json()["msg"] == "Access key not found"

    skewed = client.call("GET", "/folders", date=datetime.now(UTC) - timedelta(minutes=20))
    assert skewed.status_code == 400
    assert skewed.json()["type"] == "https://api.backend.ai/probs/invalid-auth-params"

    old = Client(standin.endpoint, standin.access_key, standin.secret_key, version="v3.20170615")
    answer = old.call("GET", "/folders")
    assert answer.status_code == 400 and answer.json()["msg"] == "Unsupported API version."

    missing = httpx.get(standin.endpoint + "/folders", headers={"X-BackendAI-Version": VERSION})
    assert missing.status_code == 400 and missing.json()["type"].endswith("/invalid-auth-params")

    for version in ("v7.20230615", "v9.20250722"):
        assert Client(standin.endpoint, standin.access_key, standin.secret_key, version).ok("GET", "/folders") == []


def test_folders_upload_and_trash(standin, client):
    created = client.ok("POST", "/folders", {"name": "weights", "host": None, "usage_mode": "model",
                                             "permission": "rw", "group": None, "cloneable": False}, status=201)
    assert created["name"] == "weights" and created["usage_mode"] == "model" and created["status"] == "ready"
    assert len(created["id"]) == 32
    duplicate = client.call("POST", "/folders", {"name": "weights", "usage_mode": "model"})
    assert duplicate.status_code == 400 and duplicate.json()["type"].endswith("/vfolder-already-exists")
    assert client.call("POST", "/folders", {"name": "bad/name"}).status_code == 400

    client.ok("POST", "/folders/weights/mkdir", {"path": "sub/dir", "parents": True, "exist_ok": True}, status=201)
    client.upload("weights", "model-definition.yaml", b"models: []\n")
    client.upload(created["id"], "sub/dir/weights.bin", bytes(range(256)) * 3, chunk=100)
    assert standin.folder_files("weights") == {"model-definition.yaml": b"models: []\n",
                                               "sub/dir/weights.bin": bytes(range(256)) * 3}
    assert [f["name"] for f in client.ok("GET", "/folders")] == ["weights"]

    ticket = client.ok("POST", "/folders/weights/request-upload", {"path": "partial.bin", "size": 10})
    conflict = httpx.patch(ticket["url"], params={"token": ticket["token"]}, content=b"abc", headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "5", "Content-Type": "application/offset+octet-stream"})
    assert conflict.status_code == 409
    assert httpx.head(ticket["url"], params={"token": "forged"}).status_code == 401
    assert "partial.bin" not in standin.folder_files("weights")
    assert client.call("POST", "/folders/weights/request-upload", {"path": "../x", "size": 1}).status_code == 400

    client.ok("DELETE", "/folders", {"vfolder_id": created["id"]}, status=204)
    assert client.call("GET", "/folders/weights").status_code == 404
    assert client.ok("GET", "/folders")[0]["status"] == "delete-pending"
    client.ok("POST", "/folders/purge", {"vfolder_id": created["id"]}, status=204)
    assert client.ok("GET", "/folders") == []


def test_service_lifecycle(standin, client, docker_client, model):
    created = client.ok("POST", "/services", _service("hello-svc", model))
    endpoint_id = created["endpoint_id"]
    assert created["active_routes"] == [] and created["service_endpoint"] is None
    assert created["name"] == "hello-svc" and created["is_public"] is False
    assert client.endpoint_status(endpoint_id)["status"] == "PROVISIONING"

    state = client.wait_status(endpoint_id, {"HEALTHY", "UNHEALTHY"})
    assert state["status"] == "HEALTHY", state
    assert [r["status"] for r in state["routings"]] == ["HEALTHY"]
    info = client.ok("GET", f"/services/{endpoint_id}")
    assert len(info["active_routes"]) == 1 and info["active_routes"][0]["traffic_ratio"] == 1.0
    url = info["service_endpoint"]
    assert url.startswith("http://127.0.0.1:") and state["url"] == url
    listed = client.ok("GET", "/services?name=hello-svc")
    assert [(s["id"], s["active_route_count"]) for s in listed] == [(endpoint_id, 1)]

    route = standin.service(endpoint_id)["routes"][0]
    assert route["resources"] == {"cpu": "1", "mem": str(512 << 20)}
    env = docker_client.inspect_container(route["container"])["Config"]["Env"]
    assert {"GREETING=hi", "BACKEND_MODEL_NAME=hello-model", "BACKEND_MODEL_PATH=/models"} <= set(env)

    assert httpx.get(url + "/index.html").status_code == 401
    assert httpx.get(url + "/index.html", headers={"Authorization": "BackendAI forged"}).status_code == 403
    token = client.ok("POST", f"/services/{endpoint_id}/token", {"duration": "1h"})["token"]
    served = httpx.get(url + "/index.html", headers={"Authorization": f"BackendAI {token}"})
    assert served.status_code == 200 and served.text == "served from the model folder\n"

    other = Client(standin.endpoint, *standin.add_keypair())
    assert other.call("GET", f"/services/{endpoint_id}").status_code == 404
    assert other.call("DELETE", f"/services/{endpoint_id}").status_code == 404
    assert other.ok("GET", "/services?name=hello-svc") == []
    assert other.ok("POST", "/admin/gql", {"query": GQL, "variables": {"id": endpoint_id}})["data"]["endpoint"] is None
    folder_id = next(f["id"] for f in client.ok("GET", "/folders") if f["name"] == model)
    in_use = client.call("DELETE", "/folders", {"vfolder_id": folder_id})
    assert in_use.status_code == 400 and "hello-svc" in in_use.json()["msg"]

    assert client.ok("DELETE", f"/services/{endpoint_id}") == {"success": True}
    state = client.wait_status(endpoint_id, {"DESTROYED"}, timeout=20)
    assert state["status"] == "DESTROYED" and state["routings"] == []
    assert _containers(docker_client, standin, endpoint_id) == []
    assert client.call("GET", f"/services/{endpoint_id}").status_code == 404
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/index.html", headers={"Authorization": f"BackendAI {token}"})


def test_public_service_and_gpu_slots(standin, client, model):
    body = _service("public-svc", model, open_to_public=True,
                    config={"resources": {"cpu": "2", "mem": "1g", "cuda.shares": "0.5"}})
    endpoint_id = client.ok("POST", "/services", body)["endpoint_id"]
    assert client.wait_status(endpoint_id, {"HEALTHY", "UNHEALTHY"})["status"] == "HEALTHY"
    url = client.ok("GET", f"/services/{endpoint_id}")["service_endpoint"]
    assert httpx.get(url + "/index.html").text == "served from the model folder\n"
    assert standin.service(endpoint_id)["routes"][0]["resources"] == {"cpu": "2", "mem": str(1 << 30),
                                                                       "cuda.shares": "0.5"}

    assert client.ok("POST", f"/services/{endpoint_id}/scale", {"to": 2}) == {"current_route_count": 1,
                                                                            "target_count": 2}
    state = client.wait_status(endpoint_id, {"HEALTHY", "UNHEALTHY"})
    assert state["status"] == "HEALTHY" and len(state["routings"]) == 2
    assert len(client.ok("GET", f"/services/{endpoint_id}")["active_routes"]) == 2
    client.ok("POST", f"/services/{endpoint_id}/scale", {"to": 0})
    assert client.endpoint_status(endpoint_id)["status"] == "READY"
    assert httpx.get(url + "/index.html").status_code == 503
    client.ok("DELETE", f"/services/{endpoint_id}")


def test_failing_service_is_unhealthy_with_error_data(standin, client, docker_client):
    _model_folder(client, "broken-model", _definition("echo starting; echo model weights missing >&2; exit 3"))
    endpoint_id = client.ok("POST", "/services", _service("broken-svc", "broken-model"))["endpoint_id"]
    state = client.wait_status(endpoint_id, {"HEALTHY", "UNHEALTHY"})
    assert state["status"] == "UNHEALTHY"
    error = json.loads(state["routings"][0]["error_data"])
    assert error["exit_code"] == 3 and "model weights missing" in error["logs"]
    assert state["errors"][0]["errors"][0]["name"] == "ContainerExited"
    assert _containers(docker_client, standin, endpoint_id) == []
    assert client.ok("GET", f"/services/{endpoint_id}")["active_routes"] == []
    client.ok("DELETE", f"/services/{endpoint_id}")


@pytest.mark.parametrize(("change", "message"), [
    ({"config": {"resources": {"cpu": "1", "mem": "1g", "gaudi.device": 1}}}, "Unknown resource slot 'gaudi.device'"),
    ({"config": {"resources": {"cpu": "1", "mem": "1g", "cuda.device": 3}}}, "exceeds the capacity"),
    ({"config": {"resources": {"cpu": "1", "mem": "128g"}}}, "exceeds the capacity"),
    ({"config": {"scaling_group": "nowhere"}}, "scaling group"),
    ({"name": "ab"}, "Invalid service name"),
    ({"name": "-bad-"}, "Invalid service name"),
    ({"desired_session_count": 11}, "desired_session_count"),
    ({"runtime_variant": "triton"}, "runtime_variant"),
    ({"config": {"model": "general-folder"}}, "not a model type VFolder"),
    ({"config": {"model": "missing-folder"}}, "Model VFolder not found"),
])
def test_service_validation(standin, client, model, change, message):
    if not any(f["name"] == "general-folder" for f in client.ok("GET", "/folders")):
        _model_folder(client, "general-folder", b"models: []\n", usage_mode="general")
    body = _service("invalid-svc", model)
    body["config"].update(change.pop("config", {}))
    answer = client.call("POST", "/services", {**body, **change})
    assert answer.status_code == 400, answer.text
    assert answer.json()["type"] == "https://api.backend.ai/probs/invalid-api-params"
    assert message in answer.json()["msg"]
    assert client.ok("GET", "/services?name=invalid-svc") == []


def test_duplicate_name_and_zero_replicas(client, model):
    endpoint_id = client.ok("POST", "/services", _service("idle-svc", model, desired_session_count=0))["endpoint_id"]
    assert client.endpoint_status(endpoint_id)["status"] == "READY"
    duplicate = client.call("POST", "/services", _service("idle-svc", model))
    assert duplicate.status_code == 400 and "same name" in duplicate.json()["msg"]
    query = '{ endpoint(endpoint_id: "' + endpoint_id + '") { name bogus } }'
    gql = client.ok("POST", "/admin/gql", {"query": query})
    assert "Cannot query field \"bogus\"" in gql["errors"][0]["message"]
    client.ok("DELETE", f"/services/{endpoint_id}")
    assert client.wait_status(endpoint_id, {"DESTROYED"})["status"] == "DESTROYED"
    client.ok("POST", "/services", _service("idle-svc", model, desired_session_count=0))


def test_stop_removes_everything(docker_client):
    standin = BackendAIStandIn(docker_client).start()
    client = Client(standin.endpoint, standin.access_key, standin.secret_key)
    _model_folder(client, "m", _definition(["python3", "-m", "http.server", "8080"]))
    endpoint_id = client.ok("POST", "/services", _service("left-over", "m", open_to_public=True))["endpoint_id"]
    assert client.wait_status(endpoint_id, {"HEALTHY", "UNHEALTHY"})["status"] == "HEALTHY"
    url = client.ok("GET", f"/services/{endpoint_id}")["service_endpoint"]
    assert _containers(docker_client, standin)
    standin.stop()
    assert _containers(docker_client, standin) == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
