"""The ktc target through the real DAGs and REST API, against a local KT Cloud agent stand-in.

The agent runs the pushed image (pulled from the real registry) on the real engine.
"""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from cloud_deploy_provider.api.app import create_gateway_app
from cloud_deploy_provider.status import Status
from tests.helpers import Project, deployment_status, free_port, load_dag
from tests.standins.ktc_agent import KtcAgent

FLOWER = {"features": [5.1, 3.5, 1.4, 0.2]}


@pytest.fixture
def agent(docker_client, registry, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KTC_REGISTRY", json.dumps({"conn_type": "docker", "host": f"http://{registry.host}"}))
    monkeypatch.setenv("CLOUD_DEPLOY_REGISTRY_CONN_ID", "ktc_registry")
    running = KtcAgent(docker_client).start()
    yield running
    running.stop()


@pytest.fixture
def ktc_project(agent, airflow_db, base_image):
    project = Project("ktc")
    project.edit(lambda spec: spec["deploy"].__setitem__("address", agent.address))
    return project


def test_start_status_and_stop_through_the_agent(agent, ktc_project, registry, serialized_dags, monkeypatch):
    run = load_dag("cloud_deploy").test(run_conf=ktc_project.conf)
    status = deployment_status(ktc_project)
    assert run.state == "success", (status.stage, status.message)
    assert status.status == Status.RUNNING and status.url.startswith("http://127.0.0.1:")
    assert httpx.post(f"{status.url}/predict", json=FLOWER, timeout=10).json()["class"] == "setosa"

    sent = agent.started[-1]
    assert sent["service_name"] == ktc_project.ref.resource_name("hello")
    assert (sent["port"], sent["cpu"], sent["memory"], sent["gpu"]) == (8080, 2, 4096, 0)
    assert sent["image"] == f"{status.image['reference'].rsplit(':', 1)[0]}@{status.image['digest']}"
    assert sent["image"].startswith(registry.host + "/")

    monkeypatch.delenv("CLOUD_DEPLOY_GATEWAY_TOKEN", raising=False)
    client = TestClient(create_gateway_app())
    assert client.get("/status_request", params=ktc_project.conf).text == "running"

    assert load_dag("cloud_undeploy").test(run_conf=ktc_project.conf).state == "success"
    assert agent.status(sent["service_name"])["status"] == "stopped"
    assert deployment_status(ktc_project).status == Status.STOPPED
    assert load_dag("cloud_undeploy").test(run_conf=ktc_project.conf).state == "success", "stop is idempotent"


def test_a_crashing_service_fails_the_run_with_the_agents_error(agent, ktc_project):
    ktc_project.edit(lambda spec: spec["deploy"]["env"].__setitem__("MODEL_FILE", "missing.json"))
    run = load_dag("cloud_deploy").test(run_conf=ktc_project.conf)
    status = deployment_status(ktc_project)
    assert run.state == "failed" and status.stage == "wait_ready"
    assert "ktc agent reports failed: exit code 1" in status.message and "missing.json" in status.message


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda deploy: deploy.__setitem__("address", f"http://127.0.0.1:{free_port()}"), "is unreachable"),
        (lambda deploy: deploy["resources"].__setitem__("atom-max.device", 1), "ktc: cannot provide accelerator npu:rebellion:atom-max:1"),
    ],
    ids=["unreachable", "npu"],
)
def test_what_the_agent_cannot_do_fails_at_validate(agent, ktc_project, change, message):
    ktc_project.edit(lambda spec: change(spec["deploy"]))
    run = load_dag("cloud_deploy").test(run_conf=ktc_project.conf)
    status = deployment_status(ktc_project)
    assert run.state == "failed" and status.stage == "validate" and message in status.message, status.message
    assert agent.started == []


@pytest.mark.parametrize(
    "address", ["ftp://10.0.0.5", "http://10.0.0.5:8080/start", "http://10.0.0.5:0", "http://agent;reboot", "10.0.0.5:8080"]
)
def test_agent_addresses_follow_a_strict_grammar(address):
    from cloud_deploy_provider.spec import SpecError, validate_spec_data

    with pytest.raises(SpecError, match="deploy.address: .* is not an agent address"):
        validate_spec_data({"build": {}, "deploy": {"type": "ktc", "service_name": "s", "address": address}})


def test_render_shows_the_start_request_without_calling_the_agent(capsys, monkeypatch):
    from cloud_deploy_provider.cli import main
    from tests.helpers import REPO

    monkeypatch.setenv("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples" / "catalog.local.yaml"))
    assert main(["render", str(REPO / "samples" / "ktc")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert '"POST": "http://127.0.0.1:9090/start"' in out and '"memory": 4096' in out, out
