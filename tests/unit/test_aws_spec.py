"""The AWS sections of deployment.yaml and the connection defaults: strict grammars, clear errors."""

from __future__ import annotations

import json

import pytest

from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.spec import SpecError, validate_spec_data


def spec(deploy_type: str = "aws-ecs", build: dict | None = None, **deploy) -> dict:
    return {"build": build or {}, "deploy": {"type": deploy_type, "service_name": "svc", **deploy}}


@pytest.mark.parametrize(
    "deploy, field",
    [
        ({"awsvpc": {"subnets": ["subnet-$(reboot)"]}}, "deploy.awsvpc.subnets[0]"),
        ({"awsvpc": {"security_groups": ["sg-1; rm -rf /"]}}, "deploy.awsvpc.security_groups[0]"),
        ({"awsvpc": {"assign_publicip": "maybe"}}, "deploy.awsvpc.assign_publicip"),
        ({"ecs": {"launch_type": "lambda"}}, "deploy.ecs.launch_type"),
        ({"ecs": {"cluster": "-leading-dash"}}, "deploy.ecs.cluster"),
        ({"ecs": {"execution_role_arn": "arn:aws:iam::1:role/x"}}, "deploy.ecs.execution_role_arn"),
        ({"ecs": {"target_group_arn": "arn:aws:elasticloadbalancing:x"}}, "deploy.ecs.target_group_arn"),
        ({"sagemaker": {"instance_type": "t2.large"}}, "deploy.sagemaker.instance_type"),
        ({"sagemaker": {"model_data": ["../secrets"]}}, "deploy.sagemaker.model_data[0]"),
        ({"sagemaker": {"mode": "async", "async": {"output_path": "https://bucket/x"}}}, "deploy.sagemaker.async.output_path"),
        ({"sagemaker": {"bucket": "Upper_Case"}}, "deploy.sagemaker.bucket"),
        ({"batch": {"timeout_seconds": 30}}, "deploy.batch.timeout_seconds"),
        ({"batch": {"attempts": 11}}, "deploy.batch.attempts"),
        ({"batch": {"job_queue": "queue with spaces"}}, "deploy.batch.job_queue"),
    ],
)
def test_bad_aws_values_are_rejected_naming_the_field(deploy, field):
    with pytest.raises(SpecError) as error:
        validate_spec_data(spec(**deploy))
    assert any(problem.startswith(field) for problem in error.value.problems), error.value.problems


def test_async_mode_needs_an_output_path():
    with pytest.raises(SpecError, match="async.output_path"):
        validate_spec_data(spec("aws-sagemaker", sagemaker={"mode": "async"}))


def test_tango_awsvpc_keys_and_a_round_trip():
    parsed = validate_spec_data(spec(
        awsvpc={"subnets": ["subnet-0abc1234"], "security_groups": ["sg-0abc1234"], "assign_publicip": True},
        ecs={"launch_type": "EC2"},
        sagemaker={"mode": "async", "async": {"output_path": "s3://out-bucket/results"}},
    ))
    assert parsed.deploy.awsvpc.assign_publicip == "ENABLED" and parsed.deploy.ecs.launch_type == "EC2"
    assert validate_spec_data(parsed.to_dict()) == parsed


@pytest.fixture
def aws_connection(monkeypatch):
    def configure(**defaults):
        extra = {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9", "cloud_deploy": defaults}
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": extra}))

    return configure


def test_bad_connection_defaults_name_the_connection_and_key(aws_connection):
    from cloud_deploy_provider.clients.aws import AwsSession, AwsSettingsError

    aws_connection(subnets=["not-a-subnet"], ecr_registry_endpoint="http://x/y?z")
    with pytest.raises(AwsSettingsError) as error:
        AwsSession().defaults
    message = str(error.value)
    assert "aws_default" in message and "subnets.0" in message and "ecr_registry_endpoint" in message


ROLE = "arn:aws:iam::123456789012:role/ecs-execution"


@pytest.mark.parametrize(
    "resources, build, message",
    [
        ({"cpu": 3, "memory": 4096}, {}, "Fargate takes cpu 0.25, 0.5, 1, 2, 4, 8, 16 (vCPU), not 3"),
        ({"cpu": 0.25, "memory": 4096}, {}, "takes memory 512, 1024 or 2048 MB, not 4096"),
        ({"cpu": 4, "memory": 8000}, {}, "takes memory 8192 to 30720 in steps of 1024 MB, not 8000"),
        ({"gpu": 1}, {"accelerator": "gpu"}, "Fargate has no GPUs"),
    ],
)
def test_ecs_task_sizes_fargate_cannot_run_are_refused(aws_connection, resources, build, message):
    from cloud_deploy_provider.targets._aws import AwsTargetError
    from cloud_deploy_provider.targets.aws_ecs import EcsTarget

    aws_connection(subnets=["subnet-0abc1234"], execution_role_arn=ROLE)
    ecs = {"launch_type": "fargate"} if build else {}
    parsed = validate_spec_data(spec(build=build, resources=resources, ecs=ecs))
    with pytest.raises(AwsTargetError) as error:
        EcsTarget.describe(ProjectRef("u", "p"), parsed)
    assert message in str(error.value)


def test_a_gpu_runs_on_ec2_with_a_gpu_resource_requirement(aws_connection):
    from cloud_deploy_provider.targets.aws_ecs import EcsTarget

    aws_connection(subnets=["subnet-0abc1234"])
    parsed = validate_spec_data(spec(build={"accelerator": "gpu:nvidia:t4:2"}, resources={"cpu": 4, "memory": 16384}))
    described = EcsTarget.describe(ProjectRef("u", "p"), parsed)
    container = described["taskDefinition"]["containerDefinitions"][0]
    assert described["launchType"] == "EC2" and described["taskDefinition"]["requiresCompatibilities"] == ["EC2"]
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "2"}]
    assert "executionRoleArn" not in described["taskDefinition"], "EC2 tasks without a role: the instance role pulls"
