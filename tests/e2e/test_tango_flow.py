"""End to end: a real Airflow api-server + scheduler (standalone) and the 8890-style gateway.

HTTP /start -> statuses -> the container answers -> /stop -> the container is gone; also the
same API mounted in the Airflow api-server, behind Airflow's authentication.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import httpx
import pytest

from tests.helpers import REPO, SESSION_DIR
from tests.e2e.stack import EmbeddedStack

pytestmark = pytest.mark.e2e
ORDER = ["started", "building", "preparing", "running"]


@pytest.fixture(scope="module")
def stack(docker_client, base_image, aws, gcp, backendai):
    stack = EmbeddedStack(
        SESSION_DIR / "stack",
        AIRFLOW_CONN_AWS_DEFAULT=aws.connection(),
        AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT=gcp.connection(),
        AIRFLOW_CONN_BACKENDAI_DEFAULT=os.environ["AIRFLOW_CONN_BACKENDAI_DEFAULT"],
        AIRFLOW_CONN_BACKENDAI_REGISTRY=os.environ["AIRFLOW_CONN_BACKENDAI_REGISTRY"],
    ).start()
    yield stack
    stack.stop()


def _started(stack, params: dict, sample: str, final: str = "running") -> tuple[httpx.Client, dict, list[str]]:
    """/start a project copied from ``sample`` and wait until its status is ``final``: the gateway client,
    the deployment's detail and the status words seen."""
    stack.project(**params, sample=sample)
    gateway = stack.gateway
    assert gateway.get("/start", params=params).text == "started"
    seen = stack.wait_for(params, (final, "failed"))
    detail = gateway.get(f"/deployments/{params['user_id']}/{params['project_id']}").json()
    assert seen[-1] == final, (seen, detail)
    print(f"{sample} statuses seen:", " -> ".join(seen))
    return gateway, detail, seen


def _stopped(stack, params: dict) -> None:
    stack.stopped(params)
    assert stack.gateway.get("/stop", params=params).text == "finished", "a second stop has nothing left to do"


def _answers(url: str) -> None:
    answer = httpx.post(f"{url}/predict", json={"features": [5.9, 2.8, 4.3, 1.3]}, timeout=10).json()
    assert answer["class"] == "versicolor"


def test_start_status_answer_stop_through_the_gateway(stack, docker_client):
    params = {"user_id": "tango", "project_id": "e2e-hello"}
    port = stack.project(**params)
    gateway = stack.gateway

    started = gateway.get("/start", params=params)
    assert (started.status_code, started.text) == (200, "started")

    seen = stack.wait_for(params, ("running", "failed"))
    detail = gateway.get(f"/deployments/{params['user_id']}/{params['project_id']}").json()
    assert seen[-1] == "running", (seen, detail)
    assert [ORDER.index(word) for word in seen] == sorted(ORDER.index(word) for word in seen), seen
    print("statuses seen:", " -> ".join(seen))

    answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"features": [5.9, 2.8, 4.3, 1.3]}).json()
    assert answer["class"] == "versicolor"
    assert detail["url"] == f"http://127.0.0.1:{port}" and detail["image"]["build_key"]

    assert gateway.get("/start", params=params).status_code == 400

    airflow = httpx.Client(base_url=stack.airflow_url, timeout=30)
    assert airflow.get("/cloud_deploy/status_request", params=params).status_code == 401
    token = {"Authorization": f"Bearer {stack.airflow_token()}"}
    assert airflow.get("/cloud_deploy/status_request", params=params, headers=token).text == "running"

    _stopped(stack, params)
    key = f"{params['user_id']}~{params['project_id']}"
    assert docker_client.containers(all=True, filters={"label": f"io.cloud-deploy.key={key}"}) == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def _aws_leftovers(aws, deploy_type: str, name: str, project_id: str) -> list[str]:
    """What AWS still has of a deployment named ``name``, listed per resource type."""
    if deploy_type == "aws-ecs":
        ecs = aws.client("ecs")
        left = ecs.list_task_definitions(familyPrefix=name, status="ACTIVE")["taskDefinitionArns"]
        clusters = ecs.describe_clusters(clusters=[name])["clusters"]
        left += [c["clusterArn"] for c in clusters if c["status"] == "ACTIVE"]
    elif deploy_type == "aws-sagemaker":
        sagemaker = aws.client("sagemaker")
        left = [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"] if name in e["EndpointName"]]
        left += [m["ModelName"] for m in sagemaker.list_models()["Models"] if name in m["ModelName"]]
    else:
        batch = aws.client("batch")
        left = [d["jobDefinitionArn"] for d in
                batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"]]
    repositories = aws.client("ecr").describe_repositories()["repositories"]
    return left + [r["repositoryName"] for r in repositories if project_id in r["repositoryName"]]


@pytest.mark.parametrize(
    "sample, final",
    [("aws-ecs", "running"), ("aws-sagemaker", "running"), ("aws-batch", "completed")],
)
def test_aws_start_status_stop_through_the_gateway(stack, aws, sample, final):
    """The same TANGO calls deploy to ECS, SageMaker and Batch (moto) from ECR; /stop leaves nothing."""
    from cloud_deploy_provider.identity import ProjectRef
    from cloud_deploy_provider.spec import load_spec

    params = {"user_id": "tango", "project_id": f"e2e-{sample}"}
    gateway, detail, _ = _started(stack, params, sample, final)
    assert detail["image"]["digest"].startswith("sha256:") and aws.secret_key not in json.dumps(detail)

    spec = load_spec(stack.shared / "common" / params["user_id"] / params["project_id"] / "deployment.yaml")
    name = ProjectRef(**params).resource_name(spec.deploy.service_name)
    assert _aws_leftovers(aws, sample, name, params["project_id"]), "the deployment exists on AWS"
    _stopped(stack, params)
    assert _aws_leftovers(aws, sample, name, params["project_id"]) == []


def test_cloudrun_start_status_answer_stop_through_the_gateway(stack, gcp):
    """TANGO's first cloud target: Cloud Run (the stand-in) from Artifact Registry; /stop leaves nothing."""
    from google.api_core import exceptions

    params = {"user_id": "tango", "project_id": "e2e-cloudrun"}
    gateway, detail, _ = _started(stack, params, "gcp-cloudrun")
    _answers(detail["url"])
    assert gcp.stand_in.access_token not in json.dumps(detail)

    service = detail["target"]["resources"]["service"]
    assert gcp.run().get_service(name=service).uri == detail["url"]
    _stopped(stack, params)
    with pytest.raises(exceptions.NotFound):
        gcp.run().get_service(name=service)


def test_compute_session_start_status_answer_stop_through_the_gateway(stack, backendai):
    """A GPU model service on the Backend.AI stand-in: /start, running, it answers, /stop leaves nothing."""
    params = {"user_id": "tango", "project_id": "e2e-backendai"}
    gateway, detail, _ = _started(stack, params, "compute-session-gpu")
    _answers(detail["url"])
    assert backendai.stand_in.secret_key not in json.dumps(detail)

    endpoint_id = detail["target"]["resources"]["endpoint_id"]
    assert backendai.stand_in.service(endpoint_id)["status"] == "HEALTHY"
    _stopped(stack, params)
    assert backendai.stand_in.service(endpoint_id)["status"] == "DESTROYED"


def test_a_scheduled_job_runs_from_the_real_scheduler(stack):
    """A project gains a per-minute job: the dag-processor picks it up, the scheduler runs it, the job's
    output is in the task log and its result (completed, exit code 0) in XCom."""
    user_id, project_id, job = "tango", "e2e-job", "tick"
    folder = stack.shared / "common" / user_id / project_id
    shutil.copytree(REPO / "samples" / "hello", folder)
    spec = folder / "deployment.yaml"
    spec.write_text(spec.read_text() + (
        "schedule:\n  jobs:\n    - name: tick\n      cron: '* * * * *'\n"
        "      command: [python3, -c, \"print('tick from', open('model.json').read()[:1])\"]\n"
        "      timeout_seconds: 60\n"
    ))
    dag_id = f"cloud_job__{user_id}__{project_id}__{job}"
    airflow = httpx.Client(base_url=stack.airflow_url, headers={"Authorization": f"Bearer {stack.airflow_token()}"},
                           timeout=30)
    try:
        deadline, run = time.monotonic() + 420, None
        while time.monotonic() < deadline:
            answer = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"})
            runs = answer.json().get("dag_runs", []) if answer.status_code == 200 else []
            run = next((r for r in runs if r["state"] in ("success", "failed")), None)
            if run:
                break
            time.sleep(2)
        assert run is not None, f"no finished run of {dag_id} (last answer {answer.status_code} {answer.text[:300]})"
        assert run["run_type"] == "scheduled" and run["state"] == "success", run
        task = f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/run"
        result = airflow.get(f"{task}/xcomEntries/job", params={"deserialize": True}).json()["value"]
        result = json.loads(result) if isinstance(result, str) else result
        assert (result["state"], result["exit_code"]) == ("completed", 0), result
        log = airflow.get(f"{task}/logs/1", headers={"Accept": "application/json"}).text
        assert "tick from {" in log, log[-2000:]
        print(f"{dag_id}: scheduled run {run['dag_run_id']} {run['state']}, job {result['message']}")
    finally:
        shutil.rmtree(folder)


class TangoManager:
    """This module's caller as TANGO's Project Manager is written: ``requests.get`` with the ids as query
    parameters, a text/plain header, a 5 s timeout and no retry; a 404 raises; any other body is used
    with every ``"`` removed; a status body of at most 50 characters is stored as the project's status;
    polling ends on ``failed``, ``stopped`` or ``completed``."""

    DOCUMENTED = {"started", "building", "preparing", "running", "stopping", "stopped", "failed", "completed",
                  "unknown"}

    def __init__(self, base_url: str):
        import requests

        self.requests = requests
        self.base_url = base_url
        self.stored: dict[str, list[str]] = {}
        self.slowest = 0.0

    def call(self, route: str, user_id: str, project_id: str) -> str:
        started = time.monotonic()
        answer = self.requests.get(f"{self.base_url}/{route}", params={"user_id": user_id, "project_id": project_id},
                                   headers={"Content-Type": "text/plain"}, timeout=5)
        self.slowest = max(self.slowest, time.monotonic() - started)
        if answer.status_code == 404:
            raise RuntimeError(f"{route} {user_id}/{project_id}: 404")
        return answer.text.replace('"', "")

    def poll(self, user_id: str, project_id: str, until: tuple[str, ...], seconds: float = 300) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            body = self.call("status_request", user_id, project_id)
            if len(body) <= 50:
                stored = self.stored.setdefault(f"{user_id}/{project_id}", [])
                if not stored or stored[-1] != body:
                    stored.append(body)
            if body in ("failed", "stopped", "completed") or body in until:
                return body
            time.sleep(1)
        raise TimeoutError(f"{user_id}/{project_id} not {until} after {seconds} s")

    def lifecycle(self, user_id: str, project_id: str) -> tuple[str, str, str]:
        """start, poll until running, stop, poll until stopped: the last status of each poll and /stop's body."""
        assert self.call("start", user_id, project_id) == "started"
        deployed = self.poll(user_id, project_id, ("running",))
        stop = self.call("stop", user_id, project_id)
        stopped = self.poll(user_id, project_id, ())
        return deployed, stop, stopped


def test_twenty_projects_driven_as_tangos_project_manager_drives_them(stack, docker_client):
    from concurrent.futures import ThreadPoolExecutor

    projects = [("tango-pm", f"project-{n:02d}") for n in range(20)]
    for user_id, project_id in projects:
        stack.project(user_id, project_id)
    manager = TangoManager(str(stack.gateway.base_url).rstrip("/"))
    with ThreadPoolExecutor(max_workers=len(projects)) as pool:
        outcomes = list(pool.map(lambda ids: manager.lifecycle(*ids), projects))

    assert all(outcome == ("running", "stopping", "stopped") for outcome in outcomes), outcomes
    for name, statuses in manager.stored.items():
        assert set(statuses) <= TangoManager.DOCUMENTED, (name, statuses)
    print(f"slowest of every call: {manager.slowest:.2f} s")
    assert manager.slowest < 5, "a call would have timed out in TANGO's manager"
    assert docker_client.containers(all=True, filters={"label": "io.cloud-deploy.user=tango-pm"}) == []
