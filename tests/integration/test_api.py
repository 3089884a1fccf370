"""The TANGO REST contract over real HTTP semantics (FastAPI TestClient) on a real Airflow DB.

No scheduler runs here, so triggered runs stay queued: that is the ``started`` state. The full
flow through a real scheduler is in tests/e2e.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cloud_deploy_provider.api.app import create_gateway_app
from cloud_deploy_provider.api.runs import DEPLOY_DAG, UNDEPLOY_DAG
from tests.conftest import Project


@pytest.fixture
def client(serialized_dags, monkeypatch):
    monkeypatch.delenv("CLOUD_DEPLOY_GATEWAY_TOKEN", raising=False)
    return TestClient(create_gateway_app())


@pytest.fixture
def project():
    return Project("hello")


def _runs(dag_id: str, project: Project) -> int:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalar(
            select(func.count()).select_from(DagRun).where(
                DagRun.dag_id == dag_id, DagRun.run_id.startswith(f"{dag_id.removeprefix('cloud_')}~{project.ref.key}~")
            )
        )


def test_hello_answers_an_empty_200(client):
    response = client.get("/")
    assert (response.status_code, response.text) == (200, "")


def test_status_of_an_unknown_project_is_404(client, project):
    response = client.get("/status_request", params=project.conf)
    assert response.status_code == 404


@pytest.mark.parametrize(
    "user_id, project_id",
    [("../x", "p"), ("/etc", "p"), ("u", ""), ("u", "a" * 65), ("u", "a b"), ("u", "a..b"), ("u;rm", "p")],
)
def test_bad_identifiers_are_400_and_change_nothing(client, user_id, project_id):
    response = client.get("/start", params={"user_id": user_id, "project_id": project_id})
    assert response.status_code in (400, 422)
    assert "detail" in response.json()


def test_missing_yaml_is_400_with_the_reason(client, project):
    project.spec_file.unlink()
    response = client.get("/start", params=project.conf)
    assert response.status_code == 400
    assert "deployment.yaml not found" in response.json()["detail"]
    assert _runs(DEPLOY_DAG, project) == 0


def test_invalid_yaml_is_400_naming_the_field_and_nothing_is_triggered(client, project):
    project.edit(lambda spec: spec["deploy"]["network"].__setitem__("service_host_port", 70000))
    response = client.get("/start", params=project.conf)
    assert response.status_code == 400
    assert "deploy.network.service_host_port" in response.json()["detail"]
    assert _runs(DEPLOY_DAG, project) == 0


def test_start_queues_one_run_and_a_second_start_is_refused_like_the_original(client, project):
    response = client.get("/start", params=project.conf)
    assert (response.status_code, response.text) == (200, "started")
    assert client.get("/status_request", params=project.conf).text == "started"

    again = client.get("/start", params=project.conf)
    assert again.status_code == 400
    assert again.json()["detail"] == "Service already exists (started)"

    detail = client.get(f"/deployments/{project.user_id}/{project.project_id}").json()
    assert detail["status"] == "started" and detail["stage"] == "queued"
    assert detail["deploy_run_id"] == f"deploy~{project.ref.key}~000001"


def test_twenty_concurrent_starts_create_exactly_one_run(client, project):
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: client.get("/start", params=project.conf), range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1 and codes.count(400) == 19, codes
    assert _runs(DEPLOY_DAG, project) == 1


def test_stop_cancels_a_queued_deploy_and_reports_a_stop_that_cannot_finish(client, project, monkeypatch):
    monkeypatch.setenv("CLOUD_DEPLOY_STOP_WAIT_SECONDS", "1")
    assert client.get("/start", params=project.conf).status_code == 200
    response = client.get("/stop", params=project.conf)
    assert response.status_code == 504, response.text
    assert "stop still running" in response.json()["detail"]
    assert _runs(UNDEPLOY_DAG, project) == 1
    detail = client.get(f"/deployments/{project.user_id}/{project.project_id}").json()
    assert detail["stage"] == "stopping" and detail["undeploy_run_id"].startswith("undeploy~")


def test_stop_of_an_unknown_project_is_404(client, project):
    assert client.get("/stop", params=project.conf).status_code == 404


def test_gateway_token_when_configured(serialized_dags, monkeypatch, project):
    monkeypatch.setenv("CLOUD_DEPLOY_GATEWAY_TOKEN", "s3cret-token")
    guarded = TestClient(create_gateway_app())
    assert guarded.get("/status_request", params=project.conf).status_code == 401
    assert guarded.get("/status_request", params=project.conf, headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = guarded.get("/status_request", params=project.conf, headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 404  # authenticated; no record yet


def test_swagger_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    assert "/status_request" in client.get("/openapi.json").json()["paths"]


def test_plugin_mount_in_the_airflow_api_server_requires_airflow_auth(serialized_dags, project):
    from airflow.api_fastapi.app import create_app as create_airflow_app

    api = TestClient(create_airflow_app())
    response = api.get("/cloud_deploy/status_request", params=project.conf)
    assert response.status_code == 401

