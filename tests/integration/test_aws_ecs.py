"""The aws-ecs target through the real DAGs, against moto as a real HTTP server (real boto3 clients).

The image is built on the real engine and pushed to a registry that accepts exactly the
credentials moto's ECR ``GetAuthorizationToken`` hands out.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.request import Request, urlopen

import pytest

from cloud_deploy_provider.registry import Registry, RegistryClient, split_reference
from cloud_deploy_provider.status import Status
from tests.conftest import Project
from tests.integration.test_dags import _dag, _status


@pytest.fixture
def ecs_project(aws, airflow_db, base_image):
    project = Project("aws-ecs")
    yield project
    from cloud_deploy_provider.spec import load_spec
    from cloud_deploy_provider.targets.aws_ecs import EcsTarget

    EcsTarget(project.ref, log=lambda _: None).stop(load_spec(project.spec_file))


def leftovers(aws, project: Project) -> list[str]:
    """Every live ECS, CloudWatch Logs and ECR resource that carries the project's name.

    Deleted clusters and services stay listed as INACTIVE for a while (on AWS as in moto).
    """
    name = project.ref.resource_name("hello")
    ecs, logs, ecr = aws.client("ecs"), aws.client("logs"), aws.client("ecr")
    clusters = ecs.describe_clusters(clusters=ecs.list_clusters()["clusterArns"])["clusters"]
    found = [c["clusterArn"] for c in clusters if name in c["clusterArn"] and c["status"] != "INACTIVE"]
    for cluster in clusters:
        arns = [arn for arn in ecs.list_services(cluster=cluster["clusterArn"])["serviceArns"] if name in arn]
        services = ecs.describe_services(cluster=cluster["clusterArn"], services=arns)["services"] if arns else []
        found += [s["serviceArn"] for s in services if s["status"] != "INACTIVE"]
    found += ecs.list_task_definitions(familyPrefix=name, status="ACTIVE")["taskDefinitionArns"]
    found += [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix=f"/cloud-deploy/{name}")["logGroups"]]
    found += [r["repositoryName"] for r in ecr.describe_repositories()["repositories"] if project.project_id in r["repositoryName"]]
    return found


def test_ecs_deploy_update_and_stop_through_the_dags(aws, ecs_project):
    run = _dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    status = _status(ecs_project)
    assert status.status == Status.RUNNING, status

    cluster, service_name = status.target["resources"]["cluster"], status.target["resources"]["service"]
    ecs = aws.client("ecs")
    service = ecs.describe_services(cluster=cluster, services=[service_name])["services"][0]
    assert service["status"] == "ACTIVE" and service["launchType"] == "FARGATE"
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    assert network["subnets"] == aws.defaults["subnets"] and network["assignPublicIp"] == "ENABLED"

    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    container = definition["containerDefinitions"][0]
    assert (definition["cpu"], definition["memory"], definition["networkMode"]) == ("1024", "2048", "awsvpc")
    assert container["image"] == f"{status.image['reference'].rsplit(':', 1)[0]}@{status.image['digest']}"
    assert container["portMappings"] == [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}]
    assert container["logConfiguration"]["options"]["awslogs-group"] == f"/cloud-deploy/{service_name}"
    assert definition["executionRoleArn"] == aws.defaults["execution_role_arn"]

    host, path, tag = split_reference(status.image["reference"])
    ecr_login = Registry(host=host, scheme="http", username="AWS", password=aws.ecr_password)
    assert RegistryClient(ecr_login).manifest_digest(path, tag) == status.image["digest"]
    assert aws.client("ecr").describe_repositories(repositoryNames=[path])["repositories"]

    unchanged = _dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert unchanged.state == "success"
    assert _status(ecs_project).target["changed"] is False

    ecs_project.edit(lambda spec: spec["deploy"]["env"].__setitem__("GREETING", "v2"))
    updated = _dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert updated.state == "success"
    service = ecs.describe_services(cluster=cluster, services=[service_name])["services"][0]
    assert service["taskDefinition"].endswith(":2")

    stopped = _dag("cloud_undeploy").test(run_conf=ecs_project.conf)
    assert stopped.state == "success"
    assert _status(ecs_project).status == Status.STOPPED
    assert leftovers(aws, ecs_project) == []


def test_a_cluster_the_project_did_not_create_is_kept_on_stop(aws, ecs_project):
    aws.client("ecs").create_cluster(clusterName="shared-gpu")
    ecs_project.edit(lambda spec: spec["deploy"].__setitem__("ecs", {"cluster": "shared-gpu"}))
    assert _dag("cloud_deploy").test(run_conf=ecs_project.conf).state == "success"
    assert _dag("cloud_undeploy").test(run_conf=ecs_project.conf).state == "success"
    ecs = aws.client("ecs")
    assert ecs.describe_clusters(clusters=["shared-gpu"])["clusters"][0]["status"] == "ACTIVE"
    assert leftovers(aws, ecs_project) == []


@pytest.mark.parametrize(
    "change, aws_message",
    [
        (lambda deploy: deploy.__setitem__("awsvpc", {"subnets": ["subnet-0000000000000dead"]}), "InvalidSubnetID.NotFound"),
        (lambda deploy: deploy.__setitem__("ecs", {"execution_role_arn": "arn:aws:iam::123456789012:role/missing"}),
         "NoSuchEntity"),
    ],
    ids=["bad-subnet", "missing-role"],
)
def test_a_permanent_aws_error_fails_the_run_with_aws_message(aws, ecs_project, change, aws_message):
    ecs_project.edit(lambda spec: change(spec["deploy"]))
    run = _dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert run.state == "failed"
    status = _status(ecs_project)
    assert status.status == Status.FAILED and status.stage == "validate", "checked before building anything"
    assert aws_message in status.message, status.message
    assert leftovers(aws, ecs_project) == [], "a failed pre-flight check must create nothing"


class FlakyAws(ThreadingHTTPServer):
    """A proxy to moto that answers the first call of every AWS operation with a throttle or a 503.

    It also keeps the request bodies, to check what was asked of AWS where moto does not store it.
    """

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        self.upstream = upstream
        self.seen: dict[str, int] = {}
        self.bodies: dict[str, bytes] = {}
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _FlakyHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        operation = self.headers.get("X-Amz-Target") or _query_action(self.path, body) or f"{self.command} {self.path}"
        with self.server.lock:
            calls = self.server.seen[operation] = self.server.seen.get(operation, 0) + 1
            self.server.bodies[operation] = body
        if calls == 1:
            self._answer(*_failure(self.headers, body, throttle=len(self.server.seen) % 2 == 0))
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = Request(self.server.upstream + self.path, data=body or None, headers=headers, method=self.command)
        try:
            with urlopen(request, timeout=60) as answer:
                self._answer(answer.status, dict(answer.headers), answer.read())
        except Exception as error:  # HTTPError carries moto's own error answer
            self._answer(error.code, dict(error.headers), error.read())

    def _answer(self, status: int, headers: dict, body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


def _failure(headers, body: bytes, throttle: bool) -> tuple[int, dict, bytes]:
    """A throttle or a 503, each in the wire format of the service's protocol (JSON, EC2 or query XML)."""
    if headers.get("X-Amz-Target"):
        error = {"__type": "ThrottlingException", "message": "Rate exceeded"}
        if not throttle:
            return 503, {"Content-Type": "application/x-amz-json-1.1"}, b""
        return 400, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(error).encode()
    if not throttle:
        return 503, {}, b""
    if b"Version=2016-11-15" in body:  # EC2's own error shape
        xml = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
        xml += "</Message></Error></Errors><RequestID>1</RequestID></Response>"
    else:
        xml = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
        xml += "</Error><RequestId>1</RequestId></ErrorResponse>"
    return 400, {"Content-Type": "text/xml"}, xml.encode()


def _query_action(path: str, body: bytes) -> str | None:
    from urllib.parse import parse_qs, urlsplit

    fields = {**parse_qs(urlsplit(path).query), **parse_qs(body.decode(errors="replace"))}
    return fields.get("Action", [None])[0]


@pytest.fixture
def flaky_aws(aws, monkeypatch):
    server = FlakyAws(aws.endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_AWS_FLAKY", aws.connection(endpoint=server.endpoint))
    monkeypatch.setenv("CLOUD_DEPLOY_AWS_CONN_ID", "aws_flaky")
    yield server
    server.shutdown()


def test_throttling_and_5xx_are_retried_with_backoff(aws, ecs_project, flaky_aws):
    run = _dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert run.state == "success", _status(ecs_project).message
    retried = {operation for operation, calls in flaky_aws.seen.items() if calls >= 2}
    assert {"AmazonEC2ContainerServiceV20141113.CreateService", "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"} <= retried
    print(f"{len(flaky_aws.seen)} AWS operations, each failed once (throttle or 503) and retried")
    created = json.loads(flaky_aws.bodies["AmazonEC2ContainerServiceV20141113.CreateService"])
    breaker = created["deploymentConfiguration"]["deploymentCircuitBreaker"]
    assert breaker == {"enable": True, "rollback": True}
    assert _dag("cloud_undeploy").test(run_conf=ecs_project.conf).state == "success"
    assert leftovers(aws, ecs_project) == []


def test_credentials_stay_out_of_logs_xcom_and_responses(aws, ecs_project, serialized_dags, caplog, capfd):
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from cloud_deploy_provider.api.app import create_gateway_app

    run = _dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert run.state == "success"
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert "registered task definition" in logs
    secrets = [aws.secret_key, aws.ecr_password]
    assert not [secret for secret in secrets if secret in logs]
    with create_session() as session:
        values = json.dumps(session.scalars(select(XComModel.value).where(XComModel.run_id == run.run_id)).all())
    assert not [secret for secret in secrets if secret in values]
    api = TestClient(create_gateway_app())
    for path in (f"/deployments/{ecs_project.user_id}/{ecs_project.project_id}", "/status_request"):
        answer = api.get(path, params=ecs_project.conf)
        assert answer.status_code == 200 and not [secret for secret in secrets if secret in answer.text]
