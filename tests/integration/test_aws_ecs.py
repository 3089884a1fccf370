"""The aws-ecs target through the real DAGs, against moto as a real HTTP server (real boto3 clients).

The image is built on the real engine and pushed to a registry that accepts exactly the
credentials moto's ECR ``GetAuthorizationToken`` hands out.
"""

from __future__ import annotations

import json

import pytest

from cloud_deploy_provider.registries.oci import Registry, RegistryClient, split_reference
from cloud_deploy_provider.status import Status
from tests.standins.aws_proxy import AwsProxy
from tests.helpers import Project, deployment_status, load_dag


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
    run = load_dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    status = deployment_status(ecs_project)
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

    unchanged = load_dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert unchanged.state == "success"
    assert deployment_status(ecs_project).target["changed"] is False

    ecs_project.edit(lambda spec: spec["deploy"]["env"].__setitem__("GREETING", "v2"))
    updated = load_dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert updated.state == "success"
    service = ecs.describe_services(cluster=cluster, services=[service_name])["services"][0]
    assert service["taskDefinition"].endswith(":2")

    stopped = load_dag("cloud_undeploy").test(run_conf=ecs_project.conf)
    assert stopped.state == "success"
    assert deployment_status(ecs_project).status == Status.STOPPED
    assert leftovers(aws, ecs_project) == []


def test_a_cluster_the_project_did_not_create_is_kept_on_stop(aws, ecs_project):
    aws.client("ecs").create_cluster(clusterName="shared-gpu")
    ecs_project.edit(lambda spec: spec["deploy"].__setitem__("ecs", {"cluster": "shared-gpu"}))
    assert load_dag("cloud_deploy").test(run_conf=ecs_project.conf).state == "success"
    assert load_dag("cloud_undeploy").test(run_conf=ecs_project.conf).state == "success"
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
    run = load_dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert run.state == "failed"
    status = deployment_status(ecs_project)
    assert status.status == Status.FAILED and status.stage == "validate", "checked before building anything"
    assert aws_message in status.message, status.message
    assert leftovers(aws, ecs_project) == [], "a failed pre-flight check must create nothing"


@pytest.fixture
def flaky_aws(aws, monkeypatch):
    with AwsProxy(aws.endpoint, fail_first=True) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_FLAKY", aws.connection(endpoint=proxy.endpoint))
        monkeypatch.setenv("CLOUD_DEPLOY_AWS_CONN_ID", "aws_flaky")
        yield proxy


def test_throttling_and_5xx_are_retried_with_backoff(aws, ecs_project, flaky_aws):
    run = load_dag("cloud_deploy").test(run_conf=ecs_project.conf)
    assert run.state == "success", deployment_status(ecs_project).message
    retried = {operation for operation, calls in flaky_aws.seen.items() if calls >= 2}
    assert {"AmazonEC2ContainerServiceV20141113.CreateService", "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"} <= retried
    print(f"{len(flaky_aws.seen)} AWS operations, each failed once (throttle or 503) and retried")
    created = json.loads(flaky_aws.bodies["AmazonEC2ContainerServiceV20141113.CreateService"])
    breaker = created["deploymentConfiguration"]["deploymentCircuitBreaker"]
    assert breaker == {"enable": True, "rollback": True}
    assert load_dag("cloud_undeploy").test(run_conf=ecs_project.conf).state == "success"
    assert leftovers(aws, ecs_project) == []


def test_credentials_stay_out_of_logs_xcom_and_responses(aws, ecs_project, serialized_dags, caplog, capfd):
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from cloud_deploy_provider.api.app import create_gateway_app

    run = load_dag("cloud_deploy").test(run_conf=ecs_project.conf)
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
