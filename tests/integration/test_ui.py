"""The Deployments pages as the Airflow api-server serves them (its real app, auth manager and metadata DB):
who may see and act, what the JSON behind the pages says of a deployed project, and that actions take the
TANGO API's code path. The pages in a real browser are in tests/e2e/test_ui_browser.py."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from cloud_deploy_provider.api.index import latest_run
from cloud_deploy_provider.api.runs import DEPLOY_DAG, UNDEPLOY_DAG
from cloud_deploy_provider.scheduled import job_dag_id, redeploy_dag_id
from tests.helpers import Project, load_dag, parse_dags_into_db, set_schedule

SECRET = "s3cret-model-key"
USERS = {"admin": ("admin", "admin-pw"), "viewer": ("viewer", "viewer-pw")}


@pytest.fixture
def airflow(serialized_dags, monkeypatch, tmp_path):
    """The Airflow api-server's app with two users of the simple auth manager: an admin and a viewer."""
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({name: password for name, (_, password) in USERS.items()}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", ",".join(f"{n}:{r}" for n, (r, _) in USERS.items()))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "cloud-deploy-ui-tests-" + "0" * 64)  # >= 64 bytes for HS512
    from airflow.api_fastapi.app import create_app

    return TestClient(create_app())


def _login(client: TestClient, user: str) -> dict[str, str]:
    answer = client.post("/auth/token", json={"username": user, "password": USERS[user][1]})
    assert answer.status_code == 201, answer.text
    return {"Cookie": f"_token={answer.json()['access_token']}"}  # what the UI's login page sets


def test_the_deployments_view_is_an_entry_of_the_airflow_navigation(airflow):
    plugins = airflow.get("/api/v2/plugins", headers=_login(airflow, "viewer")).json()["plugins"]
    [ours] = [plugin for plugin in plugins if plugin["name"] == "cloud_deploy"]
    [view] = [view for view in ours["external_views"] if view["name"] == "Deployments"]
    assert (view["url_route"], view["destination"], view["href"]) == ("deployments", "nav", "cloud_deploy/ui")


def test_the_pages_need_an_airflow_user_and_may_only_be_framed_by_airflow(airflow):
    assert airflow.get("/cloud_deploy/ui").status_code == 401
    assert airflow.get("/cloud_deploy/ui", headers={"Cookie": "_token=forged"}).status_code in (401, 403)
    page = airflow.get("/cloud_deploy/ui", headers=_login(airflow, "viewer"))
    assert page.status_code == 200 and "<h1>Deployments</h1>" in page.text
    assert 'data-root="/cloud_deploy"' in page.text and "/cloud_deploy/ui/static/deployments.js" in page.text
    assert page.headers["content-security-policy"] == "frame-ancestors 'self'"
    script = airflow.get("/cloud_deploy/ui/static/deployments.js", headers=_login(airflow, "viewer"))
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert airflow.get("/cloud_deploy/ui/static/../app.py", headers=_login(airflow, "viewer")).status_code == 404


def test_a_deployed_project_shows_its_status_stages_resources_and_yaml_with_secrets_elided(airflow, hello_project):
    hello_project.edit(lambda spec: spec["deploy"].__setitem__("env", {"MODEL_KEY": SECRET}))
    assert load_dag("cloud_deploy").test(run_conf=hello_project.conf).state == "success"
    viewer = _login(airflow, "viewer")

    detail = airflow.get(f"/cloud_deploy/ui/api/deployments/{hello_project.user_id}/{hello_project.project_id}",
                         headers=viewer)
    assert detail.status_code == 200, detail.text
    found = detail.json()
    assert (found["status"], found["url"], found["target_type"]) == ("running", hello_project.url, "docker")
    assert {"validate", "build", "deploy", "wait_ready"} <= set(found["stages"])
    assert "MODEL_KEY: <elided>" in found["spec_yaml"] and "service_name: hello" in found["spec_yaml"]
    assert SECRET not in detail.text
    assert found["resources"] and "hello" in json.dumps(found["resources"])
    [deploy_run] = found["runs"]
    assert deploy_run["dag_id"] == DEPLOY_DAG and deploy_run["tasks"] == [{"task_id": "deploy", "state": "success"}]
    page = airflow.get(f"/cloud_deploy/ui/deployments/{hello_project.user_id}/{hello_project.project_id}",
                       headers=viewer)
    assert page.status_code == 200 and f"{hello_project.user_id} / {hello_project.project_id}" in page.text
    listed = airflow.get("/cloud_deploy/deployments", params={"user_id": hello_project.user_id}, headers=viewer).json()
    assert hello_project.project_id in {row["project_id"] for row in listed["deployments"]}


def test_a_scheduled_project_shows_its_next_redeploy_and_job_runs(airflow, hello_project):
    jobs = [{"name": "score", "cron": "0 2 * * *", "command": ["python3", "-V"], "target": "docker"}]
    set_schedule(hello_project, redeploy="@daily", jobs=jobs)
    parse_dags_into_db()  # as the dag-processor does: the project's scheduled DAGs, with their next run
    assert load_dag("cloud_deploy").test(run_conf=hello_project.conf).state == "success"

    found = airflow.get(f"/cloud_deploy/ui/api/deployments/{hello_project.user_id}/{hello_project.project_id}",
                        headers=_login(airflow, "viewer")).json()
    planned = {item["name"]: item for item in found["schedule"]}
    assert set(planned) == {"redeploy", "score"}
    assert planned["redeploy"]["dag_id"] == redeploy_dag_id(hello_project.ref) and planned["redeploy"]["next_run"]
    assert (planned["score"]["dag_id"], planned["score"]["cron"]) == (job_dag_id(hello_project.ref, "score"), "0 2 * * *")
    assert planned["score"]["next_run"], planned


def test_only_a_user_who_may_trigger_the_undeploy_dag_can_stop_and_only_with_a_json_confirmation(airflow,
                                                                                                hello_project):
    assert load_dag("cloud_deploy").test(run_conf=hello_project.conf).state == "success"
    stop = f"/cloud_deploy/ui/api/deployments/{hello_project.user_id}/{hello_project.project_id}/stop"

    refused = airflow.post(stop, json={"confirm": True}, headers=_login(airflow, "viewer"))
    assert refused.status_code == 403 and "cloud_undeploy" in refused.json()["detail"]
    admin = _login(airflow, "admin")
    assert airflow.post(stop, data={"confirm": "true"}, headers=admin).status_code == 422  # a form post: refused
    assert airflow.post(stop, json={"confirm": False}, headers=admin).status_code == 400
    assert latest_run(UNDEPLOY_DAG, hello_project.ref) is None, "nothing was queued"

    stopped = airflow.post(stop, json={"confirm": True}, headers=admin)
    assert (stopped.status_code, stopped.json()) == (200, {"status": "stopping"})
    assert latest_run(UNDEPLOY_DAG, hello_project.ref).run_id.startswith("undeploy~")
    again = airflow.post(stop, json={"confirm": True}, headers=admin)
    assert again.json() == {"status": "stopping"}, "a second stop queues nothing, as /stop"


def test_deploying_from_the_page_validates_and_refuses_as_start_does(airflow):
    broken = Project("hello")
    broken.edit(lambda spec: spec["deploy"].__setitem__("entrypiont", ["python3"]))
    deploy = f"/cloud_deploy/ui/api/deployments/{broken.user_id}/{broken.project_id}/deploy"
    admin = _login(airflow, "admin")

    answer = airflow.post(deploy, json={"confirm": True}, headers=admin)
    assert answer.status_code == 400 and "deploy.entrypiont" in answer.json()["detail"]
    assert latest_run(DEPLOY_DAG, broken.ref) is None

    broken.edit(lambda spec: spec["deploy"].pop("entrypiont"))
    started = airflow.post(deploy, json={"confirm": True}, headers=admin)
    assert started.status_code == 200 and started.json()["status"] == "started"
    refused = airflow.post(deploy, json={"confirm": True}, headers=admin)
    assert (refused.status_code, refused.json()["detail"]) == (400, "Service already exists (started)")
