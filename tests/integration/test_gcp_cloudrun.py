"""The gcp-cloudrun target through the real DAGs and REST API, against the Google Cloud stand-in.

The real ``google-cloud-run`` and ``google-cloud-artifact-registry`` clients (REST transport)
talk to a local server speaking the Cloud Run Admin API v2 and Artifact Registry v1 subsets we
call; it runs each revision as a container on the real engine behind a per-service URL. The
image is pushed to a real registry that accepts only ``oauth2accesstoken`` with the access
token the stand-in's OAuth2 endpoint issues for the service-account key.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from google.api_core import exceptions
from google.cloud import run_v2

from cloud_deploy_provider.registries.oci import Registry, RegistryClient, split_reference
from cloud_deploy_provider.status import Status
from tests.helpers import Project, deployment_status, load_dag

FLOWER = {"features": [6.7, 3.0, 5.2, 2.3]}


@pytest.fixture
def cloudrun_project(gcp, airflow_db, base_image):
    project = Project("gcp-cloudrun")
    yield project
    from cloud_deploy_provider.spec import load_spec
    from cloud_deploy_provider.targets.gcp_cloudrun import CloudRunTarget

    CloudRunTarget(project.ref, log=lambda _: None).stop(load_spec(project.spec_file))


def _service(gcp, status):
    return gcp.run().get_service(name=status.target["resources"]["service"])


def _invokers(gcp, name: str) -> list[str]:
    policy = gcp.run().get_iam_policy(request={"resource": name})
    return [member for binding in policy.bindings if binding.role == "roles/run.invoker" for member in binding.members]


def _leftovers(gcp, project: Project) -> list[str]:
    from cloud_deploy_provider.targets.gcp_cloudrun import MAX_SERVICE_ID

    parent = f"projects/{gcp.project_id}/locations/{gcp.region}"
    service = f"{parent}/services/{project.ref.resource_name('hello', max_length=MAX_SERVICE_ID)}"
    repository = f"{parent}/repositories/{project.ref.resource_name('')}"
    left = [service] if _exists(gcp.run().get_service, service) else []
    return left + ([repository] if _exists(gcp.artifact_registry().get_repository, repository) else [])


def _exists(get, name: str) -> bool:
    try:
        get(name=name)
        return True
    except exceptions.NotFound:
        return False


def _deploy(project: Project):
    run = load_dag("cloud_deploy").test(run_conf=project.conf)
    return run, deployment_status(project)


def test_deploy_serves_by_digest_from_artifact_registry_then_stop_removes_everything(gcp, cloudrun_project):
    run, status = _deploy(cloudrun_project)
    assert run.state == "success", (status.stage, status.message)
    assert status.status == Status.RUNNING and status.url.startswith("http://127.0.0.1:")

    service = _service(gcp, status)
    container = service.template.containers[0]
    assert container.image == f"{status.image['reference'].rsplit(':', 1)[0]}@{status.image['digest']}"
    assert container.startup_probe.http_get.path == "/healthz"
    assert dict(container.resources.limits) == {"cpu": "1", "memory": "512Mi"}
    assert "PORT" not in {env.name for env in container.env}, "Cloud Run sets PORT itself"
    assert service.template.scaling.max_instance_count == 3
    assert _invokers(gcp, service.name) == ["allUsers"], "the sample asks for a public service"

    host, path, tag = split_reference(status.image["reference"])
    assert host == gcp.registry_host and path.startswith(f"{gcp.project_id}/{cloudrun_project.ref.resource_name('')}/")
    login = Registry(host=host, scheme="http", username="oauth2accesstoken", password=gcp.stand_in.access_token)
    assert RegistryClient(login).manifest_digest(path, tag) == status.image["digest"]
    repository = gcp.artifact_registry().get_repository(
        name=f"projects/{gcp.project_id}/locations/{gcp.region}/repositories/{cloudrun_project.ref.resource_name('')}"
    )
    assert repository.labels["cloud-deploy-created-by"]

    answer = httpx.post(f"{status.url}/predict", json=FLOWER, timeout=10)
    assert answer.json()["class"] == "virginica", "public: answers without a token"

    unchanged_run, unchanged = _deploy(cloudrun_project)
    assert unchanged_run.state == "success" and unchanged.target["changed"] is False
    assert _service(gcp, unchanged).generation == service.generation, "no new revision for the same inputs"

    stopped = load_dag("cloud_undeploy").test(run_conf=cloudrun_project.conf)
    assert stopped.state == "success"
    assert deployment_status(cloudrun_project).status == Status.STOPPED
    assert _leftovers(gcp, cloudrun_project) == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{status.url}/healthz", timeout=2).raise_for_status()
    assert load_dag("cloud_undeploy").test(run_conf=cloudrun_project.conf).state == "success", "stop is idempotent"


def test_a_revision_that_fails_readiness_keeps_the_old_one_serving(gcp, cloudrun_project):
    run, first = _deploy(cloudrun_project)
    assert run.state == "success", first.message
    old_revision = first.target["resources"]["revision"]

    cloudrun_project.edit(lambda spec: spec["deploy"]["env"].__setitem__("MODEL_FILE", "missing.json"))
    failed_run, failed = _deploy(cloudrun_project)
    assert failed_run.state == "failed"
    assert failed.status == Status.FAILED and failed.stage == "deploy"
    assert "is not ready and cannot serve traffic" in failed.message, failed.message
    assert f"traffic stays on {old_revision} (100 %)" in failed.message

    service = gcp.run().get_service(name=first.target["resources"]["service"])
    assert service.latest_ready_revision.rsplit("/", 1)[-1] == old_revision
    assert service.latest_created_revision.rsplit("/", 1)[-1] != old_revision
    assert [(s.revision, s.percent) for s in service.traffic_statuses] == [(old_revision, 100)]
    pinned = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    assert [(t.type_, t.revision) for t in service.traffic] == [(pinned, old_revision)], (
        "traffic is pinned to the old revision, so the failed one cannot take it later"
    )
    assert httpx.post(f"{first.url}/predict", json=FLOWER, timeout=10).json()["class"] == "virginica"

    from cloud_deploy_provider.spec import load_spec
    from cloud_deploy_provider.targets.gcp_cloudrun import CloudRunTarget

    live = CloudRunTarget(cloudrun_project.ref, log=lambda _: None).status(load_spec(cloudrun_project.spec_file))
    assert live.state == "running" and "failed" in live.message and live.url == first.url

    cloudrun_project.edit(lambda spec: spec["deploy"]["env"].update(MODEL_FILE="model.json", GREETING="v2"))
    fixed_run, fixed = _deploy(cloudrun_project)
    assert fixed_run.state == "success", fixed.message
    new_revision = fixed.target["resources"]["revision"]
    service = gcp.run().get_service(name=first.target["resources"]["service"])
    assert [(s.revision, s.percent) for s in service.traffic_statuses] == [(new_revision, 100)]
    assert new_revision != old_revision and fixed.url == first.url, "one URL across revisions"
    assert httpx.post(f"{fixed.url}/predict", json=FLOWER, timeout=10).json()["class"] == "virginica"


def test_private_unless_the_spec_asks_and_public_access_is_revoked_when_it_stops_asking(gcp, cloudrun_project):
    run, status = _deploy(cloudrun_project)
    assert run.state == "success", status.message
    assert httpx.get(f"{status.url}/healthz", timeout=10).status_code == 200

    cloudrun_project.edit(lambda spec: spec["deploy"]["cloudrun"].pop("allow_unauthenticated"))
    run, status = _deploy(cloudrun_project)
    assert run.state == "success", status.message
    assert _invokers(gcp, status.target["resources"]["service"]) == []
    assert httpx.get(f"{status.url}/healthz", timeout=10).status_code == 403
    token = {"Authorization": f"Bearer {gcp.stand_in.access_token}"}
    assert httpx.get(f"{status.url}/healthz", headers=token, timeout=10).status_code == 200


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda spec: spec["deploy"]["resources"].__setitem__("cpu", 3), "cpu must be one of (1, 2, 4, 6, 8)"),
        (lambda spec: spec["build"].__setitem__("accelerator", "gpu:nvidia:a100:1"),
         "cannot provide accelerator gpu:nvidia:a100:1: Cloud Run offers the GPU models l4, rtx-pro-6000"),
        (lambda spec: spec["build"].__setitem__("accelerator", "gpu:nvidia:l4:1"), "needs at least 4 CPUs"),
        (lambda spec: spec["deploy"]["env"].__setitem__("PORT", "9000"), "Cloud Run sets PORT"),
    ],
    ids=["cpu", "gpu-model", "gpu-size", "port-env"],
)
def test_what_cloud_run_would_refuse_fails_at_validate_and_creates_nothing(gcp, cloudrun_project, change, message):
    cloudrun_project.edit(change)
    gcp.stand_in.clear_requests()
    run, status = _deploy(cloudrun_project)
    assert run.state == "failed"
    assert status.stage == "validate" and message in status.message, status.message
    assert [r for r in gcp.stand_in.requests if r[0] != "GET" and r[1] != "/token"] == [], "nothing created"
    assert _leftovers(gcp, cloudrun_project) == []


def test_a_key_google_does_not_know_fails_at_validate_with_googles_message(gcp, cloudrun_project, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", gcp.connection({**gcp.stand_in.keyfile_dict, "private_key": pem.decode()}))
    run, status = _deploy(cloudrun_project)
    assert run.state == "failed" and status.stage == "validate"
    assert "401" in status.message or "UNAUTHENTICATED" in status.message.upper(), status.message


def test_a_gpu_service_asks_cloud_run_for_an_l4(gcp, cloudrun_project):
    def gpu(spec):
        spec["build"]["accelerator"] = "gpu:nvidia:l4:1"
        spec["deploy"]["resources"] = {"cpu": 4, "memory": 16384}

    cloudrun_project.edit(gpu)
    run, status = _deploy(cloudrun_project)
    assert run.state == "success", status.message
    template = _service(gcp, status).template
    assert template.node_selector.accelerator == "nvidia-l4"
    resources = template.containers[0].resources
    assert resources.limits["nvidia.com/gpu"] == "1" and resources.cpu_idle is False


def test_secrets_stay_out_of_logs_and_xcom(gcp, cloudrun_project, caplog, capfd):
    run, status = _deploy(cloudrun_project)
    assert run.state == "success", status.message
    captured = capfd.readouterr()
    text = caplog.text + captured.out + captured.err + json.dumps(status.to_dict())
    key_body = gcp.stand_in.keyfile_dict["private_key"].splitlines()[1]
    assert gcp.stand_in.access_token not in text and key_body not in text


def test_a_status_poll_reads_the_service_at_most_once_per_cache_window(gcp, cloudrun_project, serialized_dags, monkeypatch):
    from cloud_deploy_provider.api.app import create_gateway_app

    run, status = _deploy(cloudrun_project)
    assert run.state == "success", status.message
    monkeypatch.delenv("CLOUD_DEPLOY_GATEWAY_TOKEN", raising=False)
    client = TestClient(create_gateway_app())
    gcp.stand_in.clear_requests()
    started = time.monotonic()
    words = [client.get("/status_request", params=cloudrun_project.conf).text for _ in range(20)]
    elapsed = time.monotonic() - started
    reads = [r for r in gcp.stand_in.requests if r[1].endswith(status.target["resources"]["service"].rsplit("/", 1)[-1])]
    assert set(words) == {"running"}
    assert len(reads) <= 1 + int(elapsed / 5.0), (reads, elapsed)
    assert all(method == "GET" for method, _ in reads)


@pytest.mark.parametrize("kind", ["keyfile_dict", "key_path", "application_default"])
def test_each_kind_of_google_credentials_reaches_the_api_and_gets_a_registry_token(gcp, monkeypatch, kind):
    from cloud_deploy_provider.clients.gcp import GcpSession
    from cloud_deploy_provider.identity import ProjectRef
    from cloud_deploy_provider.spec import load_spec
    from cloud_deploy_provider.targets.gcp_cloudrun import CloudRunTarget
    from tests.helpers import REPO

    connection = json.loads(gcp.connection())
    del connection["extra"]["keyfile_dict"]
    if kind == "keyfile_dict":
        connection = json.loads(gcp.connection())
    elif kind == "key_path":
        connection["extra"]["key_path"] = gcp.stand_in.key_file
    else:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", gcp.stand_in.key_file)
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(connection))
    gcp.stand_in.clear_requests()

    session = GcpSession()
    live = CloudRunTarget(ProjectRef("alice", "creds"), client=session).status(
        load_spec(REPO / "samples" / "gcp-cloudrun" / "deployment.yaml")
    )
    assert live.state == "absent", live
    assert session.access_token() == gcp.stand_in.access_token
    assert ("POST", "/token") in gcp.stand_in.requests, "the registry password comes from the OAuth2 token endpoint"


def test_a_shared_repository_is_created_when_missing_and_kept_on_stop(gcp, cloudrun_project, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", gcp.connection(artifact_repository="team-images"))
    run, status = _deploy(cloudrun_project)
    assert run.state == "success", status.message
    assert f"/{gcp.project_id}/team-images/" in status.image["reference"]
    assert load_dag("cloud_undeploy").test(run_conf=cloudrun_project.conf).state == "success"
    shared = f"projects/{gcp.project_id}/locations/{gcp.region}/repositories/team-images"
    assert _exists(gcp.artifact_registry().get_repository, shared), "shared: never deleted by a project's stop"
    assert _leftovers(gcp, cloudrun_project) == []
