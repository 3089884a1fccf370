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
from cloud_deploy_provider.api.index import DeploymentIndex
from cloud_deploy_provider.api.runs import DEPLOY_DAG, UNDEPLOY_DAG
from tests.helpers import Project


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


def test_a_start_whose_index_is_behind_still_finds_the_unfinished_run(serialized_dags, project):
    """Another gateway process (its own index, a refresh behind) queues nothing while the project's run is unfinished:
    the run ids are numbered, and a new number is only taken after the latest run has finished."""
    from cloud_deploy_provider.api import runs

    first = runs.trigger(DEPLOY_DAG, project.ref, project.conf)
    with pytest.raises(runs.RunAlreadyExists):
        runs.trigger(DEPLOY_DAG, project.ref, project.conf)  # what a process that has not seen `first` would do
    assert _runs(DEPLOY_DAG, project) == 1 and first.endswith("~000001")


def _run_state(dag_id: str, run_id: str) -> str:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return str(session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)))


def test_stop_answers_at_once_cancels_a_queued_deploy_and_says_stopping_until_stopped(client, project):
    assert client.get("/start", params=project.conf).status_code == 200
    response = client.get("/stop", params=project.conf)
    assert (response.status_code, response.text) == (200, "stopping")  # no scheduler here: the stop cannot finish
    assert _run_state(DEPLOY_DAG, f"deploy~{project.ref.key}~000001") == "failed"
    assert _runs(UNDEPLOY_DAG, project) == 1
    assert client.get("/status_request", params=project.conf).text == "stopping"
    detail = client.get(f"/deployments/{project.user_id}/{project.project_id}").json()
    assert detail["stage"] == "stopping" and detail["undeploy_run_id"] == f"undeploy~{project.ref.key}~000001"

    again = client.get("/stop", params=project.conf)
    assert (again.status_code, again.text) == (200, "stopping")
    assert _runs(UNDEPLOY_DAG, project) == 1, "a second /stop queues no second undeploy"
    refused = client.get("/start", params=project.conf)
    assert refused.status_code == 409 and "stopping" in refused.json()["detail"]
    assert _runs(DEPLOY_DAG, project) == 1


def test_stop_of_a_stopped_project_is_finished_at_once(client, project):
    assert client.get("/start", params=project.conf).status_code == 200
    assert client.get("/stop", params=project.conf).text == "stopping"
    _mark_success(UNDEPLOY_DAG, f"undeploy~{project.ref.key}~000001")
    _answers_within_a_second(client, project, "stopped")
    assert client.get("/stop", params=project.conf).text == "finished"
    assert _runs(UNDEPLOY_DAG, project) == 1


def _mark_success(dag_id: str, run_id: str) -> None:
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        run.set_state(DagRunState.SUCCESS)


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


def _insert_runs(dag_id: str, count: int, prefix: str) -> None:
    """Runs as the UI's trigger form leaves them (manual run ids, the project in the conf)."""
    from datetime import datetime, timezone

    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    now = datetime.now(timezone.utc)
    with create_session() as session:
        for number in range(count):
            session.add(DagRun(dag_id=dag_id, run_id=f"manual__{prefix}{number}", run_type=DagRunType.MANUAL,
                               conf={"user_id": "bulk", "project_id": f"p{number % 50}"}, state=DagRunState.SUCCESS,
                               run_after=now, triggered_by=DagRunTriggeredByType.UI))


def test_a_deployment_triggered_from_the_ui_is_found_after_a_thousand_other_runs(client, project):
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    trigger_dag(DEPLOY_DAG, run_id=f"manual__{project.project_id}", conf=project.conf,
                triggered_by=DagRunTriggeredByType.UI)
    assert client.get("/status_request", params=project.conf).text == "started"
    _insert_runs(DEPLOY_DAG, 1000, project.project_id)
    _answers_within_a_second(client, project, "started")
    restarted = DeploymentIndex()  # a gateway started now reads the whole history
    restarted.refresh()
    assert restarted.entries[project.ref.key].status.status.value == "started"
    assert len([key for key in restarted.entries if key.startswith("bulk~")]) == 50
    _lists_within_a_second(client, {"user_id": "bulk", "limit": 1000}, 50)


def _lists_within_a_second(client, params: dict, total: int) -> None:
    import time

    changed_at = time.monotonic()
    while (listed := client.get("/deployments", params=params).json())["total"] != total:
        assert time.monotonic() - changed_at < 1.0, f"{listed['total']} listed: over 1 s behind the database"
        time.sleep(0.02)


def test_the_deployment_list_filters_and_pages(client):
    projects = [Project("hello", user_id=user) for user in ("lister-a", "lister-a", "lister-b")]
    for listed in projects:
        assert client.get("/start", params=listed.conf).status_code == 200
    assert client.get("/stop", params=projects[2].conf).text == "stopping"

    page = client.get("/deployments", params={"user_id": "lister-a", "limit": 1}).json()
    assert (page["total"], len(page["deployments"])) == (2, 1)
    row = page["deployments"][0]
    assert (row["user_id"], row["status"], row["stage"]) == ("lister-a", "started", "queued")
    assert row["last_deploy"]["run_id"].startswith("deploy~lister-a~") and row["last_deploy"]["queued_at"]
    assert row["last_stop"] is None
    second = client.get("/deployments", params={"user_id": "lister-a", "limit": 1, "offset": 1}).json()
    assert second["deployments"][0]["project_id"] != row["project_id"]
    stopping = client.get("/deployments", params={"status": "stopping", "user_id": "lister-b"}).json()
    assert [r["project_id"] for r in stopping["deployments"]] == [projects[2].project_id]
    assert client.get("/deployments", params={"status": "sleeping"}).status_code == 422
    assert "/deployments" in client.get("/openapi.json").json()["paths"]


def test_the_index_follows_changes_made_elsewhere_within_a_second(client, project):
    """Another process (the scheduler, the UI, a second gateway) changes a run: the answer follows."""
    assert client.get("/start", params=project.conf).status_code == 200
    assert client.get("/status_request", params=project.conf).text == "started"
    _mark_success(DEPLOY_DAG, f"deploy~{project.ref.key}~000001")
    _answers_within_a_second(client, project, "running")


def _answers_within_a_second(client, project, word: str) -> None:
    import time

    changed_at = time.monotonic()
    while (answer := client.get("/status_request", params=project.conf).text) != word:
        assert time.monotonic() - changed_at < 1.0, f"still {answer!r}: the answer lagged the database by over 1 s"
        time.sleep(0.02)


def test_a_spec_error_answer_names_the_yaml_relative_to_the_shared_root(client, project):
    import os

    project.spec_file.write_text("build:\n  accelerator: cpu\n  - oops\n")
    response = client.get("/start", params=project.conf)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith(f"common/{project.user_id}/{project.project_id}/deployment.yaml: line 3, column 3: ")
    assert os.environ["CLOUD_DEPLOY_SHARED_ROOT"] not in detail
    assert _runs(DEPLOY_DAG, project) == 0
