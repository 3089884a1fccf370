"""The Google Cloud stand-in, driven only through Google's own client libraries over REST."""

from __future__ import annotations

import os

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request
from google.cloud import artifactregistry_v1, run_v2
from google.iam.v1 import policy_pb2
from google.oauth2 import credentials as oauth2_credentials
from google.oauth2 import service_account
from google.protobuf import empty_pb2

from tests.standins.gcp import LABEL, GcpStandIn

BASE_IMAGE = os.environ.get("CLOUD_DEPLOY_BASE_IMAGE", "cloud-deploy/debian-python:bookworm")
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
LOCATION = "us-central1"
SERVE = ('mkdir -p /tmp/www && echo "$MESSAGE" > /tmp/www/index.html && cd /tmp/www '
         '&& exec python3 -m http.server "$PORT"')


@pytest.fixture(scope="module")
def standin(docker_client):
    with GcpStandIn(docker_client) as running:
        yield running


@pytest.fixture(scope="module")
def creds(standin):
    return service_account.Credentials.from_service_account_info(standin.keyfile_dict, scopes=SCOPES)


@pytest.fixture(scope="module")
def run(standin, creds):
    return run_v2.ServicesClient(credentials=creds, transport="rest", client_options={"api_endpoint": standin.endpoint})


@pytest.fixture(scope="module")
def registry(standin, creds):
    return artifactregistry_v1.ArtifactRegistryClient(credentials=creds, transport="rest",
                                                      client_options={"api_endpoint": standin.endpoint})


@pytest.fixture(scope="module")
def parent(standin):
    return f"projects/{standin.project_id}/locations/{LOCATION}"


def _template(message: str, revision: str = "", command: list[str] | None = None) -> run_v2.RevisionTemplate:
    """A revision serving ``message`` on / (with a TCP startup probe each second)."""
    probe = run_v2.Probe(tcp_socket=run_v2.TCPSocketAction(port=8080), period_seconds=1, failure_threshold=20)
    container = run_v2.Container(
        image=BASE_IMAGE, command=command or ["sh", "-c", SERVE], env=[run_v2.EnvVar(name="MESSAGE", value=message)],
        ports=[run_v2.ContainerPort(container_port=8080)], startup_probe=probe)
    return run_v2.RevisionTemplate(revision=revision, containers=[container])


def _latest(percent: int) -> run_v2.TrafficTarget:
    return run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                                percent=percent)


def _pinned(revision: str, percent: int) -> run_v2.TrafficTarget:
    return run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                                revision=revision, percent=percent)


def _get(url: str, token: str | None = None) -> httpx.Response:
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=10)


def _other_key() -> str:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def _containers(docker_client, standin, service: str) -> list[dict]:
    return docker_client.containers(all=True, filters={"label": [f"{LABEL}={standin.instance_id}",
                                                              f"{LABEL}.service={service}"]})


def test_token_endpoint_grants_a_signed_assertion(standin):
    for creds in (service_account.Credentials.from_service_account_info(standin.keyfile_dict, scopes=SCOPES),
                  service_account.Credentials.from_service_account_file(standin.key_file, scopes=SCOPES)):
        creds.refresh(Request())
        assert creds.token == standin.access_token
    assert ("POST", "/token") in standin.requests


def test_token_endpoint_rejects_another_key(standin):
    forged = service_account.Credentials.from_service_account_info(
        {**standin.keyfile_dict, "private_key": _other_key()}, scopes=SCOPES)
    with pytest.raises(RefreshError, match="invalid_grant"):
        forged.refresh(Request())


def test_api_authentication(standin, run, parent):
    missing = f"{parent}/services/absent"
    standin.clear_requests()
    with pytest.raises(exceptions.NotFound):
        run.get_service(name=missing)  # a JWT self-signed by the key: no token endpoint involved
    assert standin.requests == [("GET", f"/v2/{missing}")]

    with_token = run_v2.ServicesClient(credentials=oauth2_credentials.Credentials(token=standin.access_token),
                                       transport="rest", client_options={"api_endpoint": standin.endpoint})
    with pytest.raises(exceptions.NotFound):
        with_token.get_service(name=missing)

    forged = service_account.Credentials.from_service_account_info(
        {**standin.keyfile_dict, "private_key": _other_key()}, scopes=SCOPES)
    wrong = run_v2.ServicesClient(credentials=forged, transport="rest",
                                  client_options={"api_endpoint": standin.endpoint})
    with pytest.raises(exceptions.Unauthorized, match="invalid authentication credentials"):
        wrong.get_service(name=missing)
    answer = httpx.get(f"{standin.endpoint}/v2/{missing}", headers={"Authorization": "Bearer ya29.wrong"})
    assert answer.status_code == 401 and answer.json()["error"]["status"] == "UNAUTHENTICATED"
    with pytest.raises(exceptions.Forbidden, match="Permission denied on resource project"):
        run.get_service(name=f"projects/other-project/locations/{LOCATION}/services/absent")


def test_artifact_registry_repositories(registry, parent):
    repository = artifactregistry_v1.Repository(
        format_=artifactregistry_v1.Repository.Format.DOCKER, description="images", labels={"team": "ml"})
    operation = registry.create_repository(parent=parent, repository=repository, repository_id="models")
    created = operation.result(timeout=10)
    assert isinstance(created, artifactregistry_v1.Repository)
    assert created.name == f"{parent}/repositories/models"
    assert created.format_ == artifactregistry_v1.Repository.Format.DOCKER
    assert dict(created.labels) == {"team": "ml"} and created.create_time

    fetched = registry.get_repository(name=created.name)
    assert fetched.description == "images"
    with pytest.raises(exceptions.Conflict, match="already exists"):
        registry.create_repository(parent=parent, repository=repository, repository_id="models")
    with pytest.raises(exceptions.BadRequest, match="Invalid repository ID"):
        registry.create_repository(parent=parent, repository=repository, repository_id="Models_1")

    assert isinstance(registry.delete_repository(name=created.name).result(timeout=10), empty_pb2.Empty)
    with pytest.raises(exceptions.NotFound):
        registry.get_repository(name=created.name)
    with pytest.raises(exceptions.NotFound):
        registry.delete_repository(name=created.name)


def test_cloud_run_service_lifecycle(standin, docker_client, run, parent):
    name = f"{parent}/services/hello"
    service = run_v2.Service(labels={"app": "hello"}, template=_template("old revision", revision="hello-old"))
    operation = run.create_service(parent=parent, service=service, service_id="hello")
    created = operation.result(timeout=60)
    assert isinstance(created, run_v2.Service)
    assert created.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert created.latest_ready_revision == f"{name}/revisions/hello-old"
    assert created.generation == created.observed_generation == 1 and not created.reconciling
    assert [(s.revision, s.percent) for s in created.traffic_statuses] == [("hello-old", 100)]
    uri = created.uri
    assert uri.startswith("http://127.0.0.1:") and standin.revision_container("hello-old")

    with pytest.raises(exceptions.Conflict, match="already exists"):
        run.create_service(parent=parent, service=service, service_id="hello")

    assert _get(uri, standin.access_token).text.strip() == "old revision"
    assert _get(uri).status_code == 403
    assert _get(uri, "ya29.wrong").status_code == 401
    id_token = service_account.IDTokenCredentials.from_service_account_info(standin.keyfile_dict, target_audience=uri)
    id_token.refresh(Request())
    assert _get(uri, id_token.token).status_code == 200

    policy = run.get_iam_policy(request={"resource": name})
    assert not policy.bindings
    public = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/run.invoker", members=["allUsers"])],
                               etag=policy.etag)
    assert list(run.set_iam_policy(request={"resource": name, "policy": public}).bindings[0].members) == ["allUsers"]
    assert _get(uri).text.strip() == "old revision"
    with pytest.raises(exceptions.Conflict, match="concurrent policy changes"):
        run.set_iam_policy(request={"resource": name, "policy": public})
    current = run.get_iam_policy(request={"resource": name})
    run.set_iam_policy(request={"resource": name, "policy": policy_pb2.Policy(etag=current.etag)})
    assert _get(uri).status_code == 403

    broken = run.get_service(name=name)
    broken.template = _template("never", revision="hello-broken", command=["sleep", "600"])
    broken.template.containers[0].startup_probe.failure_threshold = 3
    broken.traffic = [_pinned("hello-old", 100)]
    with pytest.raises(exceptions.FailedPrecondition, match="failed to start and listen"):
        run.update_service(service=broken).result(timeout=60)
    after = run.get_service(name=name)
    assert after.latest_ready_revision == f"{name}/revisions/hello-old"
    assert after.latest_created_revision == f"{name}/revisions/hello-broken"
    assert after.terminal_condition.state == run_v2.Condition.State.CONDITION_FAILED
    assert after.generation == 2 and after.observed_generation == 1
    assert standin.revision_container("hello-broken") is None
    assert _get(uri, standin.access_token).text.strip() == "old revision"

    after.template = _template("other", revision="hello-old")
    with pytest.raises(exceptions.Conflict, match="different configuration"):
        run.update_service(service=after)

    good = run.get_service(name=name)
    good.template = _template("new revision")
    good.traffic = [_latest(100)]
    operation = run.update_service(service=good)
    waited = run.wait_operation(request={"name": operation.operation.name, "timeout": {"seconds": 60}})
    assert waited.done
    updated = operation.result(timeout=60)
    new_revision = updated.latest_ready_revision.rsplit("/", 1)[1]
    assert new_revision.startswith("hello-00003-")
    assert updated.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert _get(uri, standin.access_token).text.strip() == "new revision"
    assert standin.revision_container("hello-old") is None
    assert len(_containers(docker_client, standin, name)) == 1

    split = run.get_service(name=name)
    split.traffic = [_pinned("hello-old", 50), _latest(50)]
    routed = run.update_service(service=split).result(timeout=60)  # the old revision starts again from zero
    assert routed.latest_ready_revision == updated.latest_ready_revision
    assert [(s.revision, s.percent) for s in routed.traffic_statuses] == [("hello-old", 50), (new_revision, 50)]
    assert {_get(uri, standin.access_token).text.strip() for _ in range(30)} == {"old revision", "new revision"}
    assert len(_containers(docker_client, standin, name)) == 2

    deleted = run.delete_service(name=name).result(timeout=30)
    assert deleted.name == name
    assert _containers(docker_client, standin, name) == []
    with pytest.raises(exceptions.NotFound):
        run.get_service(name=name)
    with pytest.raises(httpx.ConnectError):
        _get(uri, standin.access_token)


def test_cloud_run_image_pull_failure(standin, run, parent):
    image = "127.0.0.1:9/nowhere/missing:1"
    service = run_v2.Service(template=run_v2.RevisionTemplate(containers=[run_v2.Container(image=image)]))
    operation = run.create_service(parent=parent, service=service, service_id="no-image")
    with pytest.raises(exceptions.FailedPrecondition, match=f"Image '{image}'"):
        operation.result(timeout=30)
    failed = run.get_service(name=f"{parent}/services/no-image")
    assert not failed.latest_ready_revision and failed.latest_created_revision
    assert _get(failed.uri, standin.access_token).status_code == 503
    run.delete_service(name=failed.name).result(timeout=30)


@pytest.mark.parametrize(("service_id", "change", "message"), [
    ("Bad_Name", {}, "service_id 'Bad_Name' is invalid"),
    ("gpu", {"limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}}, "node_selector.accelerator"),
    ("gpu-small", {"limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}, "accelerator": "nvidia-l4"},
     "at least 4 CPU"),
    ("cpu", {"limits": {"cpu": "3"}}, "Invalid value specified for cpu"),
    ("memory", {"limits": {"memory": "64Gi", "cpu": "8"}}, "between 128Mi and 32Gi"),
    ("traffic", {"traffic": 50}, "add up to 100"),
    ("no-image", {"image": ""}, "image: field is required"),
    ("port-env", {"env": "PORT"}, "reserved env names"),
])
def test_cloud_run_validation(run, parent, service_id, change, message):
    container = run_v2.Container(image=change.get("image", BASE_IMAGE),
                                 resources=run_v2.ResourceRequirements(limits=change.get("limits", {})))
    if "env" in change:
        container.env = [run_v2.EnvVar(name=change["env"], value="1")]
    template = run_v2.RevisionTemplate(containers=[container])
    if "accelerator" in change:
        template.node_selector = run_v2.NodeSelector(accelerator=change["accelerator"])
    traffic = [_latest(change["traffic"])] if "traffic" in change else []
    with pytest.raises(exceptions.BadRequest, match=message):
        run.create_service(parent=parent, service=run_v2.Service(template=template, traffic=traffic),
                           service_id=service_id)
    with pytest.raises(exceptions.NotFound):
        run.get_service(name=f"{parent}/services/{service_id}")


def test_stop_removes_everything(docker_client):
    standin = GcpStandIn(docker_client).start()
    client = run_v2.ServicesClient(
        credentials=oauth2_credentials.Credentials(token=standin.access_token), transport="rest",
        client_options={"api_endpoint": standin.endpoint})
    parent = f"projects/{standin.project_id}/locations/{LOCATION}"
    client.create_service(parent=parent, service=run_v2.Service(template=_template("x")),
                          service_id="left-over").result(timeout=60)
    uri = standin.service("left-over")["uri"]
    standin.stop()
    assert docker_client.containers(all=True, filters={"label": f"{LABEL}={standin.instance_id}"}) == []
    with pytest.raises(httpx.ConnectError):
        _get(uri, standin.access_token)
