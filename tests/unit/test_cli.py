"""`cloud-deploy validate` and `render`: they read and print, and touch nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from cloud_deploy_provider.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_validate_and_render_the_sample(capsys, monkeypatch):
    monkeypatch.setenv("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples" / "catalog.local.yaml"))
    assert main(["validate", str(REPO / "samples" / "hello")]) == 0
    assert "deploy.type docker, service hello" in capsys.readouterr().out
    assert main(["render", str(REPO / "samples" / "hello" / "deployment.yaml"), "--user-id", "u", "--project-id", "p"]) == 0
    out = capsys.readouterr().out
    assert "FROM cloud-deploy/debian-python:bookworm" in out and 'ENTRYPOINT ["python3", "server.py"]' in out
    assert '"8080/tcp": [\n      "127.0.0.1",\n      18080' in out and '"io.cloud-deploy.key": "u~p"' in out


def test_an_invalid_spec_exits_2_with_the_field(tmp_path, capsys):
    shutil.copytree(REPO / "samples" / "hello", tmp_path / "p")
    spec = tmp_path / "p" / "deployment.yaml"
    spec.write_text(spec.read_text().replace("service_host_port: 18080", "service_host_port: 0"))
    assert main(["validate", str(tmp_path / "p")]) == 2
    assert "deploy.network.service_host_port" in capsys.readouterr().err


AWS_CONNECTION = {
    "conn_type": "aws",
    "extra": {
        "region_name": "eu-west-1",
        "cloud_deploy": {
            "subnets": ["subnet-0abc1234"],
            "execution_role_arn": "arn:aws:iam::123456789012:role/ecs-execution",
            "sagemaker_execution_role_arn": "arn:aws:iam::123456789012:role/sagemaker",
            "sagemaker_bucket": "models-bucket",
            "batch_job_queue": "gpu-queue",
        },
    },
}


def test_render_shows_each_aws_targets_resources_without_calling_aws(capsys, monkeypatch):
    """The connection points at a closed port: any AWS call would fail the render."""
    import json

    connection = {**AWS_CONNECTION, "extra": {**AWS_CONNECTION["extra"], "endpoint_url": "http://127.0.0.1:9"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples" / "catalog.local.yaml"))
    expected = {
        "aws-ecs": ['"taskDefinition"', '"requiresCompatibilities": [\n      "FARGATE"', '"awslogs-region": "eu-west-1"'],
        "aws-sagemaker": ['"endpoint_config"', '"InstanceType": "ml.t2.xlarge"', "s3://models-bucket/"],
        "aws-batch": ['"jobDefinition"', '"jobQueue": "gpu-queue"', '"type": "VCPU"'],
    }
    for sample, needles in expected.items():
        assert main(["render", str(REPO / "samples" / sample)]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert f"# {sample} target resources" in out
        assert not [needle for needle in needles if needle not in out], out


def test_render_of_an_aws_spec_the_target_cannot_take_exits_2_with_the_reason(tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(AWS_CONNECTION))
    monkeypatch.setenv("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples" / "catalog.local.yaml"))
    shutil.copytree(REPO / "samples" / "aws-ecs", tmp_path / "p")
    spec = tmp_path / "p" / "deployment.yaml"
    spec.write_text(spec.read_text().replace("memory: 2048", "memory: 1000"))
    assert main(["render", str(tmp_path / "p")]) == 2
    assert "Fargate with cpu 1 takes memory 2048 to 8192 in steps of 1024 MB, not 1000" in capsys.readouterr().err
