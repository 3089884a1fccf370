"""The compute-session target through the real DAGs and REST API, against the Backend.AI manager stand-in.

The stand-in verifies every request's keypair signature and runs each replica as a container from
the image the pipeline pushed to the cluster's registry (a second real registry, with a login).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from cloud_deploy_provider.api.app import create_gateway_app
from cloud_deploy_provider.registries.oci import Registry, RegistryClient, split_reference
from cloud_deploy_provider.status import Status
from tests.helpers import Project, REPO, deployment_status, load_dag

FLOWER = {"features": [5.1, 3.5, 1.4, 0.2]}
ATOM_MODEL = "iris-classifier"


@pytest.fixture
def gpu_project(backendai, airflow_db, base_image):
    project = Project("compute-session-gpu")
    yield project
    _undeploy(project)


@pytest.fixture
def atom_project(backendai, airflow_db, base_image):
    client = backendai.client()
    if client.call("GET", f"/folders/{ATOM_MODEL}", missing_ok=True) is None:
        client.call("POST", "/folders", json={"name": ATOM_MODEL, "usage_mode": "model"})
        for path in sorted((REPO / "samples" / "compute-session-atom" / "model-folder").iterdir()):
            client.upload(ATOM_MODEL, path.name, path.read_bytes())
    project = Project("compute-session-atom")
    yield project
    _undeploy(project)


def _undeploy(project) -> None:
    load_dag("cloud_undeploy").test(run_conf=project.conf)


def _deploy(project):
    run = load_dag("cloud_deploy").test(run_conf=project.conf)
    return run, deployment_status(project)


def _service(backendai, status) -> dict:
    return backendai.stand_in.service(status.target["resources"]["endpoint_id"])


def test_gpu_service_runs_answers_and_stops(backendai, gpu_project, serialized_dags, monkeypatch):
    run, status = _deploy(gpu_project)
    assert run.state == "success", (status.stage, status.message)
    assert status.status == Status.RUNNING and status.url.startswith("http://127.0.0.1:")
    assert httpx.post(f"{status.url}/predict", json=FLOWER, timeout=10).json()["class"] == "setosa"

    service = _service(backendai, status)
    body, config = service["body"], service["body"]["config"]
    name = gpu_project.ref.resource_name("hello-gpu", max_length=64)
    assert service["name"] == name and service["status"] == "HEALTHY"
    assert (body["desired_session_count"], body["runtime_variant"], body["open_to_public"]) == (1, "custom", True)
    assert (body["cluster_size"], body["cluster_mode"], body["arch"]) == (1, "SINGLE_NODE", "x86_64")
    assert (body["domain"], body["group"]) == ("default", "default")
    assert config["resources"] == {"cpu": "4", "mem": "16g", "cuda.device": "1"}
    assert config["resource_opts"] == {"shmem": "1g"} and config["scaling_group"] == "default"
    assert config["model"] == name and config["model_mount_destination"] == "/models"
    assert config["environ"]["CLOUD_DEPLOY_OWNER"] == gpu_project.ref.key
    assert [route["resources"] for route in service["routes"]] == [{"cpu": "4", "mem": str(16 << 30), "cuda.device": "1"}]

    host, path, tag = split_reference(body["image"])
    assert host == backendai.registry_host, "the image is in the cluster's registry"
    login = Registry(host=host, scheme="http", username="bai", password=backendai.registry_password)
    assert RegistryClient(login).manifest_digest(path, tag) == status.image["digest"]

    definition = yaml.safe_load(backendai.stand_in.folder_files(name)["model-definition.yaml"])
    started = definition["models"][0]["service"]
    assert started["start_command"] == ["/bin/sh", "-c", 'cd "$0" && exec "$@"', "/workspace", "python3", "server.py"]
    assert started["port"] == 8000 and started["health_check"]["path"] == "/healthz"

    monkeypatch.delenv("CLOUD_DEPLOY_GATEWAY_TOKEN", raising=False)
    client = TestClient(create_gateway_app())
    assert client.get("/status_request", params=gpu_project.conf).text == "running"
    detail = client.get(f"/deployments/{gpu_project.user_id}/{gpu_project.project_id}").json()
    assert "Backend.AI reports HEALTHY: 1 of 1 routes healthy" in detail["message"]
    assert backendai.stand_in.secret_key not in json.dumps(detail)

    unchanged_run, unchanged = _deploy(gpu_project)
    assert unchanged_run.state == "success" and unchanged.target["changed"] is False
    assert unchanged.target["resources"]["endpoint_id"] == status.target["resources"]["endpoint_id"]

    assert load_dag("cloud_undeploy").test(run_conf=gpu_project.conf).state == "success"
    assert backendai.stand_in.service(status.target["resources"]["endpoint_id"])["status"] == "DESTROYED"
    with pytest.raises(KeyError):
        backendai.stand_in.folder_files(name)
    assert deployment_status(gpu_project).status == Status.STOPPED
    assert load_dag("cloud_undeploy").test(run_conf=gpu_project.conf).state == "success", "stop is idempotent"


def test_atom_service_on_an_existing_model_folder(backendai, atom_project):
    run, status = _deploy(atom_project)
    assert run.state == "success", (status.stage, status.message)
    service = _service(backendai, status)
    config = service["body"]["config"]
    assert config["resources"] == {"cpu": "8", "mem": "32g", "atom-max.device": "1"}
    assert config["scaling_group"] == "atom-max" and config["model"] == ATOM_MODEL
    assert "model_definition_path" not in config, "the folder's own model-definition.yaml is used"
    answer = httpx.post(f"{status.url}/predict", json={"features": [6.7, 3.0, 5.2, 2.3]}, timeout=10).json()
    assert answer["class"] == "virginica", "the weights come from the mounted model folder"

    assert load_dag("cloud_undeploy").test(run_conf=atom_project.conf).state == "success"
    assert backendai.stand_in.service(status.target["resources"]["endpoint_id"])["status"] == "DESTROYED"
    assert "model.json" in backendai.stand_in.folder_files(ATOM_MODEL), "the user's model folder is kept"


def test_a_changed_spec_replaces_the_service(backendai, gpu_project):
    first_run, first = _deploy(gpu_project)
    assert first_run.state == "success", first.message
    gpu_project.edit(lambda spec: spec["deploy"]["resources"].__setitem__("memory", 8192))
    second_run, second = _deploy(gpu_project)
    assert second_run.state == "success", second.message
    old, new = first.target["resources"]["endpoint_id"], second.target["resources"]["endpoint_id"]
    assert old != new and second.target["changed"] is True
    assert backendai.stand_in.service(old)["status"] == "DESTROYED"
    assert backendai.stand_in.service(new)["body"]["config"]["resources"]["mem"] == "8g"


def test_a_crashing_service_fails_with_the_exit_code_and_log_lines(backendai, gpu_project):
    gpu_project.edit(lambda spec: spec["deploy"]["env"].__setitem__("MODEL_FILE", "missing.json"))
    run, status = _deploy(gpu_project)
    assert run.state == "failed" and status.stage == "wait_ready"
    assert "Backend.AI reports UNHEALTHY" in status.message and "exited with code 1" in status.message, status.message
    assert "last log lines" in status.message and "missing.json" in status.message


def test_a_wrong_secret_key_fails_validate_and_says_so(backendai, gpu_project, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_BACKENDAI_DEFAULT", backendai.connection(secret_key="not-the-secret"))
    backendai.stand_in.clear_requests()
    run, status = _deploy(gpu_project)
    assert run.state == "failed" and status.stage == "validate"
    assert "refused the keypair of connection 'backendai_default' (401" in status.message, status.message
    assert "check its access key (login) and secret key (password)" in status.message
    assert "not-the-secret" not in status.message
    assert [method for method, _, _ in backendai.stand_in.requests if method != "GET"] == []


def test_tangos_env_alone_deploys_when_there_is_no_backendai_connection(backendai, gpu_project, monkeypatch):
    """TANGO's .env (CS_*) and no ``backendai_default``: the same service, signed with the variables' keypair."""
    stand_in = backendai.stand_in
    monkeypatch.delenv("AIRFLOW_CONN_BACKENDAI_DEFAULT")
    tango_env = {"CS_ENDPOINT": stand_in.endpoint, "CS_ACCESS_KEY": stand_in.access_key,
                 "CS_SECRET_KEY": stand_in.secret_key, "CS_DEFAULT_DOMAIN": "default", "CS_DEFAULT_GROUP": "default",
                 "CLOUD_DEPLOY_REGISTRY_CONN_ID": "backendai_registry"}  # .env names no registry: the installation's
    for name, value in tango_env.items():
        monkeypatch.setenv(name, value)
    run, status = _deploy(gpu_project)
    assert run.state == "success", (status.stage, status.message)
    assert status.status == Status.RUNNING
    assert httpx.post(f"{status.url}/predict", json=FLOWER, timeout=10).json()["class"] == "setosa"
    body = _service(backendai, status)["body"]
    assert (body["domain"], body["group"]) == ("default", "default")
    assert stand_in.secret_key not in json.dumps(status.target)
    assert load_dag("cloud_undeploy").test(run_conf=gpu_project.conf).state == "success"
    assert _service(backendai, status)["status"] == "DESTROYED"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda spec: spec["build"].__setitem__("accelerator", "gpu:intel:max1550:1"),
         "compute-session: cannot provide accelerator gpu:intel:max1550:1: Backend.AI has accelerator plugins for"),
        (lambda spec: spec["build"].__setitem__("accelerator", "npu:rebellion:rebel:1"),
         "rebellion NPU models are atom, atom-plus, atom-max"),
        (lambda spec: spec["deploy"].pop("entrypoint"), "the custom runtime variant starts the service with deploy.entrypoint"),
        (lambda spec: spec["deploy"].__setitem__("model_service", {"model": "no-such-model"}),
         "model folder 'no-such-model' (model_service.model) not found"),
    ],
    ids=["intel-gpu", "unknown-npu-model", "no-entrypoint", "missing-model-folder"],
)
def test_what_the_cluster_cannot_do_fails_at_validate(backendai, gpu_project, change, message):
    gpu_project.edit(change)
    backendai.stand_in.clear_requests()
    run, status = _deploy(gpu_project)
    assert run.state == "failed" and status.stage == "validate" and message in status.message, status.message
    assert [method for method, _, _ in backendai.stand_in.requests if method != "GET"] == []


def test_another_projects_service_with_the_same_name_is_never_touched(backendai, gpu_project, base_image):
    """Found by id and owner marker: a same-named service without this project's marker is not ours."""
    client = backendai.client()
    name = gpu_project.ref.resource_name("hello-gpu", max_length=64)
    client.call("POST", "/folders", json={"name": "foreign", "usage_mode": "model"})
    client.upload("foreign", "model-definition.yaml", yaml.safe_dump(
        {"models": [{"name": "x", "service": {"start_command": ["python3", "-m", "http.server", "8000"], "port": 8000}}]}
    ).encode())
    foreign = client.call("POST", "/services", json={
        "name": name, "image": base_image, "desired_session_count": 1, "open_to_public": True,
        "config": {"model": "foreign", "environ": {"CLOUD_DEPLOY_OWNER": "mallory~other"}},
    })["endpoint_id"]
    try:
        run, status = _deploy(gpu_project)
        assert run.state == "failed" and status.stage == "deploy"
        assert "Cannot create multiple services with same name" in status.message, status.message
        assert load_dag("cloud_undeploy").test(run_conf=gpu_project.conf).state == "success"
        assert backendai.stand_in.service(foreign)["lifecycle"] == "created", "stop left the other service alone"
    finally:
        client.call("DELETE", f"/services/{foreign}")


def test_a_private_service_needs_a_token(backendai, gpu_project):
    gpu_project.edit(lambda spec: spec["deploy"]["model_service"].__setitem__("open_to_public", False))
    run, status = _deploy(gpu_project)
    assert run.state == "success", status.message
    assert httpx.post(f"{status.url}/predict", json=FLOWER, timeout=10).status_code == 401
    endpoint_id = status.target["resources"]["endpoint_id"]
    token = backendai.client().call("POST", f"/services/{endpoint_id}/token", json={"duration": "1h"})["token"]
    answer = httpx.post(f"{status.url}/predict", json=FLOWER, headers={"Authorization": f"BackendAI {token}"}, timeout=10)
    assert answer.json()["class"] == "setosa"


def test_render_prints_the_service_request_without_calling_the_manager(backendai, capsys, monkeypatch):
    from cloud_deploy_provider.cli import main

    closed = json.loads(backendai.connection())
    closed["host"] = "http://127.0.0.1:9"
    monkeypatch.setenv("AIRFLOW_CONN_BACKENDAI_DEFAULT", json.dumps(closed))
    monkeypatch.setenv("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples" / "catalog.local.yaml"))
    assert main(["render", str(Path(REPO / "samples" / "compute-session-atom"))]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert '"atom-max.device": "1"' in out and '"mem": "32g"' in out and '"scaling_group": "atom-max"' in out, out


def test_airflow_knows_the_backendai_connection_type():
    from airflow.providers_manager import ProvidersManager

    hook = ProvidersManager().hooks["backendai"]
    assert (hook.hook_class_name, hook.hook_name) == ("cloud_deploy_provider.hooks.backendai.BackendAIHook", "Backend.AI")
