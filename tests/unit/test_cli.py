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


def test_job_create_writes_a_scheduled_job_for_an_existing_image(tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.setenv("CLOUD_DEPLOY_SHARED_ROOT", str(tmp_path))
    args = ["job", "create", "--user-id", "alice", "--project-id", "nightly", "--job-id", "score",
            "--image", "registry.example.com/team/batch:1.2", "--schedule", "0 2 * * *", "--gpu-type", "t4",
            "--gpu-count", "1", "--retries", "2", "--", "python3", "score.py", "--out", "$(rm -rf /)"]
    assert main(args) == 0, capsys.readouterr().err
    spec_file = tmp_path / "common" / "alice" / "nightly" / "deployment.yaml"
    job = yaml.safe_load(spec_file.read_text())["schedule"]["jobs"][0]
    assert job["command"] == ["python3", "score.py", "--out", "$(rm -rf /)"], "kept as one literal argument"
    assert (job["cron"], job["image"], job["resources"], job["retries"]) == (
        "0 2 * * *", "registry.example.com/team/batch:1.2", {"gpu": 1, "gpu_type": "t4"}, 2)
    assert "cloud_job__alice__nightly__score" in capsys.readouterr().out

    hourly = list(args)
    hourly[hourly.index("--schedule") + 1] = "@hourly"
    assert main(hourly) == 0, "the same job id replaces the job"
    jobs = yaml.safe_load(spec_file.read_text())["schedule"]["jobs"]
    assert [(j["name"], j["cron"]) for j in jobs] == [("score", "@hourly")]

    before = spec_file.read_text()
    for bad in (["--schedule", "61 * * * *"], ["--job-id", "Score!"], ["--image", "UPPER/case:1"], ["--user-id", "a/b"],
                ["--target", "aws-ecs"]):
        changed = list(args)
        if bad[0] in changed:
            changed[changed.index(bad[0]) + 1] = bad[1]
        else:
            changed[2:2] = bad
        assert main(changed) == 2
        assert spec_file.read_text() == before, f"{bad} changed nothing"

    assert main(["job", "create", "--target", "kubernetes", *args[2:]]) == 0
    assert yaml.safe_load(spec_file.read_text())["schedule"]["jobs"][0]["target"] == "kubernetes"


def test_validate_reads_tangos_legacy_forms_and_warns_about_atp(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLOUD_DEPLOY_SHARED_ROOT", str(tmp_path))
    folder = tmp_path / "common" / "u1" / "p"
    shutil.copytree(REPO / "samples" / "hello", folder)
    spec = folder / "deployment.yaml"
    libs = "    libs: [python==3.11]\n"
    text = spec.read_text().replace("architecture: x86", "architecture: linux/amd64")
    spec.write_text(text.replace(libs, libs + "    custom_packages: {atp: [vim, hello]}\n"))
    assert main(["validate", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "ok: " in captured.out
    assert captured.err == (
        "warning: common/u1/p/deployment.yaml: build.components.custom_packages.atp: read as 'apt' "
        "(TANGO's code generator misspells the key); rename it to 'apt'\n"
    )


def test_validate_names_a_yaml_in_the_shared_root_relative_to_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLOUD_DEPLOY_SHARED_ROOT", str(tmp_path))
    folder = tmp_path / "common" / "u1" / "p"
    folder.mkdir(parents=True)
    (folder / "deployment.yaml").write_text("build: [\n")
    assert main(["validate", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: common/u1/p/deployment.yaml: line ") and str(tmp_path) not in err, err
