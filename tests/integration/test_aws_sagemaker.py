"""The aws-sagemaker target on moto (real HTTP server) and the ECR stand-in, through the real DAGs.

moto keeps every endpoint InService from creation and has no UpdateEndpoint; the update test puts
a wire-level proxy in front of moto that answers that one operation (``tests/standins/aws_proxy.py``).
"""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from botocore.exceptions import ClientError

from cloud_deploy_provider.api import runs
from cloud_deploy_provider.api.index import latest_run
from cloud_deploy_provider.identity import LABEL_KEY
from cloud_deploy_provider.registries.oci import repository_path
from cloud_deploy_provider.spec import load_spec
from cloud_deploy_provider.status import Status
from cloud_deploy_provider.targets import ImageRef
from cloud_deploy_provider.targets._aws import CREATED_BY
from cloud_deploy_provider.targets.aws_sagemaker import SageMakerTarget
from tests.standins.aws_proxy import AwsProxy
from tests.helpers import Project, deployment_status, load_dag

BUCKET = "cloud-deploy-test-models"


def _target(project) -> SageMakerTarget:
    return SageMakerTarget(project.ref, log=lambda _: None)


def _spec(project):
    return load_spec(project.spec_file)


def _project_names(aws, project) -> dict[str, list[str]]:
    """Every SageMaker resource, S3 object and ECR repository of this project that moto still has."""
    sagemaker, s3, ecr = aws.client("sagemaker"), aws.client("s3"), aws.client("ecr")
    mark = project.project_id.lower()
    objects = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"cloud-deploy/{project.user_id}/{project.project_id}/")
    repositories = [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    return {
        "endpoints": [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"] if mark in e["EndpointName"]],
        "configs": [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]
                    if mark in c["EndpointConfigName"]],
        "models": [m["ModelName"] for m in sagemaker.list_models()["Models"] if mark in m["ModelName"]],
        "objects": [o["Key"] for o in objects.get("Contents", [])],
        "repositories": [r for r in repositories if r == repository_path(_spec(project).build.image_uri, project.ref)],
    }


def _tags(aws, arn: str) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in aws.client("sagemaker").list_tags(ResourceArn=arn)["Tags"]}


@pytest.fixture
def project(aws, airflow_db, docker_client, base_image):
    project = Project("aws-sagemaker")
    yield project
    _target(project).stop(_spec(project))


def test_realtime_deploy_is_idempotent_and_undeploy_removes_everything(aws, project):
    run = load_dag("cloud_deploy").test(run_conf=project.conf)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}

    target, spec = _target(project), _spec(project)
    name = target.name(spec)
    status = deployment_status(project)
    assert status.status == Status.RUNNING, status
    assert status.url == f"https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/{name}/invocations"
    details = latest_run(runs.DEPLOY_DAG, project.ref).xcom("deploy")["status"]["details"]
    assert details["mode"] == "realtime" and details["max_payload"] == "6 MB" and details["endpoint"] == name

    sagemaker = aws.client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=name)
    assert endpoint["EndpointStatus"] == "InService"
    owner = f"{project.user_id}/{project.project_id}"
    assert _tags(aws, endpoint["EndpointArn"])[LABEL_KEY] == owner
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.t2.xlarge"
    assert "AsyncInferenceConfig" not in config or not config["AsyncInferenceConfig"]
    model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert _tags(aws, model["ModelArn"])[CREATED_BY] == owner
    assert model["ExecutionRoleArn"] == aws.defaults["sagemaker_execution_role_arn"]
    container = model["PrimaryContainer"]
    assert "@sha256:" in container["Image"] and container["Image"] == status.image["reference"].rsplit(":", 1)[0] + \
        "@" + status.image["digest"]
    assert container["Environment"]["MODEL_FILE"] == "/opt/ml/model/model.json"
    prefix = f"s3://{BUCKET}/cloud-deploy/{project.user_id}/{project.project_id}/"
    assert container["ModelDataUrl"].startswith(prefix) and container["ModelDataUrl"].endswith("/deploy.tar.gz")
    archive = aws.client("s3").get_object(Bucket=BUCKET, Key=container["ModelDataUrl"][len(f"s3://{BUCKET}/"):])
    with tarfile.open(fileobj=io.BytesIO(archive["Body"].read()), mode="r:gz") as tar:
        assert tar.getnames() == ["model.json"]
        assert tar.extractfile("model.json").read() == (project.folder / "model.json").read_bytes()

    models_before = _project_names(aws, project)["models"]
    again = load_dag("cloud_deploy").test(run_conf=project.conf)
    assert again.state == "success"
    assert latest_run(runs.DEPLOY_DAG, project.ref).xcom("deploy")["changed"] is False
    assert _project_names(aws, project)["models"] == models_before == [model["ModelName"]]

    stopped = load_dag("cloud_undeploy").test(run_conf=project.conf)
    assert stopped.state == "success"
    assert deployment_status(project).status == Status.STOPPED
    removed = latest_run(runs.UNDEPLOY_DAG, project.ref).xcom("stop")["removed"]
    assert f"sagemaker-endpoint/{name}" in removed and f"sagemaker-model/{model['ModelName']}" in removed
    assert _project_names(aws, project) == {"endpoints": [], "configs": [], "models": [], "objects": [],
                                            "repositories": []}
    assert _target(project).stop(spec) == []


def test_async_endpoint_config_carries_the_output_paths(aws, project):
    output, failures = "s3://cloud-deploy-test-models/async/out", "s3://cloud-deploy-test-models/async/failed"
    project.edit(lambda spec: spec["deploy"]["sagemaker"].update(
        {"mode": "async", "async": {"output_path": output, "failure_path": failures,
                                    "max_concurrent_invocations_per_instance": 4}}))
    run = load_dag("cloud_deploy").test(run_conf=project.conf)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}

    name = _target(project).name(_spec(project))
    status = deployment_status(project)
    assert status.url.endswith(f"/endpoints/{name}/async-invocations")
    details = latest_run(runs.DEPLOY_DAG, project.ref).xcom("deploy")["status"]["details"]
    assert details["mode"] == "async" and details["max_inference_time"] == "15 min"
    sagemaker = aws.client("sagemaker")
    config_name = sagemaker.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)["AsyncInferenceConfig"]
    assert config["OutputConfig"] == {"S3OutputPath": output, "S3FailurePath": failures}
    assert config["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 4}


def test_a_missing_execution_role_fails_the_run_with_aws_message_and_creates_nothing(aws, project):
    role = "arn:aws:iam::123456789012:role/cloud-deploy-no-such-role"
    project.edit(lambda spec: spec["deploy"]["sagemaker"].__setitem__("execution_role_arn", role))
    with pytest.raises(ClientError) as missing:
        aws.client("iam").get_role(RoleName=role.rsplit("/", 1)[-1])
    assert missing.value.response["Error"]["Code"] == "NoSuchEntity"

    run = load_dag("cloud_deploy").test(run_conf=project.conf)
    assert run.state == "failed"
    status = deployment_status(project)
    # validate runs the target's preflight where the operator supports it; deploy checks again in any case
    assert status.status == Status.FAILED and status.stage in ("validate", "deploy")
    assert missing.value.response["Error"]["Message"] in status.message and role in status.message
    names = _project_names(aws, project)
    assert names["endpoints"] == names["configs"] == names["models"] == names["objects"] == []


def test_a_symlink_in_model_data_fails_the_run_naming_it(aws, project):
    (project.folder / "weights.json").symlink_to("model.json")
    project.edit(lambda spec: spec["deploy"]["sagemaker"].__setitem__("model_data", ["weights.json"]))
    run = load_dag("cloud_deploy").test(run_conf=project.conf)
    assert run.state == "failed"
    status = deployment_status(project)
    assert "'weights.json' is a symbolic link" in status.message, status
    names = _project_names(aws, project)
    assert names["endpoints"] == names["models"] == names["objects"] == []


def _sagemaker_with_update_endpoint(aws):
    """moto lacks UpdateEndpoint; on the wire, answer it as SageMaker ends one: the endpoint on the new config."""

    def update_endpoint(request: dict) -> dict:
        sagemaker = aws.client("sagemaker")
        arn = sagemaker.describe_endpoint(EndpointName=request["EndpointName"])["EndpointArn"]
        tags = sagemaker.list_tags(ResourceArn=arn)["Tags"]
        sagemaker.delete_endpoint(EndpointName=request["EndpointName"])
        created = sagemaker.create_endpoint(EndpointName=request["EndpointName"],
                                            EndpointConfigName=request["EndpointConfigName"], Tags=tags)
        return {"EndpointArn": created["EndpointArn"]}

    return AwsProxy(aws.endpoint, operations={"SageMaker.UpdateEndpoint": update_endpoint})


def test_a_changed_spec_updates_the_endpoint_in_place_and_the_next_deploy_prunes(aws, project, monkeypatch):
    with _sagemaker_with_update_endpoint(aws) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws.connection(endpoint=proxy.endpoint))
        image = ImageRef(f"{aws.registry_host}/x/hello:bk-1", digest="sha256:" + "a" * 64)
        first = _target(project).deploy(_spec(project), image)
        assert first.changed and first.resources["model"] != _target(project).name(_spec(project))

        project.edit(lambda data: data["deploy"]["env"].__setitem__("THRESHOLD", "0.5"))
        second = _target(project).deploy(_spec(project), image)
        assert second.changed and second.resources["model"] != first.resources["model"]
        update = json.loads(proxy.bodies["SageMaker.UpdateEndpoint"])
        assert update == {"EndpointName": _target(project).name(_spec(project)),
                          "EndpointConfigName": second.resources["endpoint_config"]}
        endpoint = aws.client("sagemaker").describe_endpoint(EndpointName=update["EndpointName"])
        assert endpoint["EndpointConfigName"] == second.resources["endpoint_config"]

        third = _target(project).deploy(_spec(project), image)
        assert not third.changed and proxy.seen["SageMaker.UpdateEndpoint"] == 1
        names = _project_names(aws, project)
        assert names["models"] == names["configs"] == [second.resources["model"]], "the first generation is pruned"


def test_describe_calls_no_aws_api(aws, monkeypatch):
    project = Project("aws-sagemaker")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws.connection(endpoint="http://127.0.0.1:9"))
    described = SageMakerTarget.describe(project.ref, _spec(project), None)
    name = described["endpoint"]["EndpointName"]
    assert described["endpoint_config"]["ProductionVariants"][0]["InstanceType"] == "ml.t2.xlarge"
    assert described["model"]["ExecutionRoleArn"] == aws.defaults["sagemaker_execution_role_arn"]
    assert described["model"]["PrimaryContainer"]["ModelDataUrl"].startswith(f"s3://{BUCKET}/cloud-deploy/alice/")
    assert described["url"].endswith(f"/endpoints/{name}/invocations")
