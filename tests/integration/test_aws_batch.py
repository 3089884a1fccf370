"""The aws-batch target on moto, whose Batch runs each job as a real container on the local engine.

The image is built and pushed to the ECR stand-in by the real pipeline; moto then starts the job
from the job definition's image reference (by digest), which the engine already has.
"""

from __future__ import annotations

import time

import pytest
from cloud_deploy_provider.registries.oci import repository_path
from cloud_deploy_provider.spec import load_spec
from cloud_deploy_provider.status import Status
from cloud_deploy_provider.targets._aws import AwsTargetError
from cloud_deploy_provider.targets.aws_batch import BatchTarget

from tests.helpers import Project, deployment_status, load_dag

LOG_GROUP = "/aws/batch/job"


def _target(project) -> BatchTarget:
    return BatchTarget(project.ref, log=print)


def _spec(project):
    return load_spec(project.spec_file)


def _active_definitions(aws, name: str) -> list:
    return aws.client("batch").describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"]


def _repository_exists(aws, project) -> bool:
    names = [r["repositoryName"] for r in aws.client("ecr").describe_repositories()["repositories"]]
    return repository_path(None, project.ref) in names


def _wait(condition, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.5)
    return value


@pytest.fixture
def batch_project(aws, airflow_db, docker_client, base_image):
    project = Project("aws-batch")
    yield project
    _target(project).stop(_spec(project))


def _build_and_push(project, docker_client):
    """The deploy DAG's build and push stages, for tests that drive the target themselves."""
    from cloud_deploy_provider.pipeline import build, image_ref, load_project, push
    from cloud_deploy_provider.settings import BuildSettings

    loaded = load_project(project.user_id, project.project_id)
    registry = _target(project).image_registry(loaded.spec)
    built = build(loaded, docker_client, BuildSettings.from_env(), registry, print)
    return image_ref(push(built, docker_client, registry, "aws-batch", print).to_dict())


def test_describe_calls_no_aws_api_and_waits_for_every_attempt(aws, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws.connection(endpoint="http://127.0.0.1:9"))
    project = Project("aws-batch")
    project.edit(lambda spec: spec["deploy"].update(batch={"attempts": 3, "timeout_seconds": 900}, env={"A": "1"}))
    spec = _spec(project)

    described = BatchTarget.describe(project.ref, spec, None)
    definition, submit = described["jobDefinition"], described["submitJob"]
    assert definition["jobDefinitionName"] == submit["jobName"] == BatchTarget(project.ref).name(spec)
    assert definition["retryStrategy"] == {"attempts": 3} and definition["timeout"] == {"attemptDurationSeconds": 900}
    assert definition["containerProperties"]["environment"] == [{"name": "A", "value": "1"}]
    assert submit["jobQueue"] == aws.defaults["batch_job_queue"]
    assert submit["tags"]["io.cloud-deploy.key"] == f"{project.user_id}/{project.project_id}"
    assert BatchTarget(project.ref).ready_timeout_seconds(spec) == 3 * 900 + 600

    project.edit(lambda spec: spec["deploy"]["resources"].__setitem__("cpu", 0.5))
    with pytest.raises(AwsTargetError, match="whole number of vCPUs"):
        BatchTarget.describe(project.ref, _spec(project), None)


def test_job_runs_to_completion_through_the_dags_and_undeploy_removes_it(batch_project, aws, docker_client):
    run = load_dag("cloud_deploy").test(run_conf=batch_project.conf)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}

    status = deployment_status(batch_project)
    assert status.status == Status.COMPLETED, status
    job_id = status.target["resources"]["job_id"]
    target, spec = _target(batch_project), _spec(batch_project)
    live = target.status(spec)
    assert live.state == "completed" and live.details["job_id"] == job_id, live

    batch = aws.client("batch")
    job = batch.describe_jobs(jobs=[job_id])["jobs"][0]
    assert job["status"] == "SUCCEEDED"
    assert job["tags"]["io.cloud-deploy.key"] == f"{batch_project.user_id}/{batch_project.project_id}"
    assert job["tags"]["io.cloud-deploy.job-id"] == job_id
    name = target.name(spec)
    (definition,) = _active_definitions(aws, name)
    repository = status.image["reference"].rsplit(":", 1)[0]
    assert definition["containerProperties"]["image"] == f"{repository}@{status.image['digest']}"
    assert {"type": "MEMORY", "value": "512"} in definition["containerProperties"]["resourceRequirements"]
    assert definition["timeout"] == {"attemptDurationSeconds": 600}
    events = aws.client("logs").get_log_events(logGroupName=LOG_GROUP, logStreamName=job["container"]["logStreamName"])
    assert "classified 4 rows with iris-softmax" in [event["message"] for event in events["events"]]

    from cloud_deploy_provider.pipeline import image_ref, wait_ready

    again = target.deploy(spec, image_ref(status.image))
    assert again.changed and again.resources["job_id"] != job_id
    assert again.resources["job_definition"] == definition["jobDefinitionArn"]
    assert wait_ready(target, spec, print).state == "completed"

    stopped = load_dag("cloud_undeploy").test(run_conf=batch_project.conf)
    assert stopped.state == "success"
    assert deployment_status(batch_project).status == Status.STOPPED
    assert _active_definitions(aws, name) == []
    assert not _repository_exists(aws, batch_project)
    assert docker_client.containers(all=True, filters={"name": name}) == []


def test_a_failing_job_fails_the_run_with_its_exit_code_and_last_log_lines(batch_project, aws):
    failing = ["python3", "-c", "import sys; print('boom'); sys.exit(3)"]
    batch_project.edit(lambda spec: spec["deploy"].__setitem__("entrypoint", failing))
    run = load_dag("cloud_deploy").test(run_conf=batch_project.conf)
    assert run.state == "failed"

    status = deployment_status(batch_project)
    assert status.status == Status.FAILED and status.stage == "wait_ready", status
    assert "exit code 3" in status.message and "boom" in status.message, status.message
    live = _target(batch_project).status(_spec(batch_project))
    assert live.state == "failed" and live.details["job_status"] == "FAILED"


def test_a_missing_job_queue_is_a_clear_error_and_nothing_is_registered(batch_project, aws):
    batch_project.edit(lambda spec: spec["deploy"]["batch"].__setitem__("job_queue", "no-such-queue"))
    run = load_dag("cloud_deploy").test(run_conf=batch_project.conf)
    assert run.state == "failed"

    status = deployment_status(batch_project)
    assert status.stage == "validate" and "job queue no-such-queue does not exist" in status.message, status
    repositories = aws.client("ecr").describe_repositories()["repositories"]
    assert not [r for r in repositories if batch_project.project_id in r["repositoryName"]], "nothing built or pushed"
    target, spec = _target(batch_project), _spec(batch_project)
    assert aws.client("batch").describe_job_definitions(jobDefinitionName=target.name(spec))["jobDefinitions"] == []
    assert target.status(spec).state == "absent"


def test_no_job_queue_configured_anywhere_names_both_settings(batch_project, aws, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws.connection(batch_job_queue=None))
    batch_project.edit(lambda spec: spec["deploy"].pop("batch"))
    target, spec = _target(batch_project), _spec(batch_project)
    from cloud_deploy_provider.targets import ImageRef

    with pytest.raises(AwsTargetError) as error:
        target.deploy(spec, ImageRef("127.0.0.1:1/x:tag", digest="sha256:" + "0" * 64))
    assert "deploy.batch.job_queue" in str(error.value) and "batch_job_queue" in str(error.value)
    assert aws.client("batch").describe_job_definitions(jobDefinitionName=target.name(spec))["jobDefinitions"] == []
    assert target.stop(spec) == []


def test_stop_terminates_a_running_job_and_leaves_nothing(batch_project, aws, docker_client):
    sleeping = ["python3", "-c", "import time; time.sleep(600)"]
    batch_project.edit(lambda spec: spec["deploy"].__setitem__("entrypoint", sleeping))
    image = _build_and_push(batch_project, docker_client)
    target, spec = _target(batch_project), _spec(batch_project)
    name = target.name(spec)

    deployed = target.deploy(spec, image)
    job_id = deployed.resources["job_id"]
    _wait(lambda: target.status(spec).details.get("job_status") == "RUNNING")
    _wait(lambda: docker_client.containers(filters={"name": name}))
    assert target.status(spec).state == "starting"

    again = target.deploy(spec, image)
    assert not again.changed and again.resources["job_id"] == job_id

    removed = target.stop(spec)
    assert f"batch-job/{name}/{job_id}" in removed
    assert any(item.startswith(f"batch-job-definition/{name}:") for item in removed)
    assert f"ecr-repository/{repository_path(None, batch_project.ref)}" in removed, removed

    job = aws.client("batch").describe_jobs(jobs=[job_id])["jobs"][0]
    assert job["status"] == "FAILED" and job["statusReason"] == "cloud-deploy stop"
    live = target.status(spec)
    assert live.state == "failed" and "cloud-deploy stop" in live.message
    assert _active_definitions(aws, name) == []
    assert not _repository_exists(aws, batch_project)
    _wait(lambda: docker_client.containers(all=True, filters={"name": name}) == [])
    assert target.stop(spec) == []


def test_a_scheduled_job_runs_on_aws_batch_and_leaves_no_job_definition(batch_project, aws):
    """schedule.jobs[].target aws-batch: the project's image (in ECR), the job's command, Batch's retries."""
    from cloud_deploy_provider.scheduled import job_dag_id
    from tests.helpers import scheduled_dagbag, xcom

    jobs = [
        {"name": "predict", "cron": "@daily", "target": "aws-batch", "command": ["python3", "predict_batch.py"]},
        {"name": "broken", "cron": "@daily", "target": "aws-batch", "env": {"MODEL_FILE": "missing.json"},
         "command": ["python3", "predict_batch.py"]},
    ]
    batch_project.edit(lambda spec: spec.__setitem__("schedule", {"jobs": jobs}))
    bag = scheduled_dagbag()
    run = bag.dags[job_dag_id(batch_project.ref, "predict")].test()
    assert run.state == "success"
    assert xcom(run, "run", "job")["state"] == "completed"
    assert _active_definitions(aws, _target(batch_project).project.resource_name("job-predict")) == []

    failed = bag.dags[job_dag_id(batch_project.ref, "broken")].test()
    assert failed.state == "failed"
    result = xcom(failed, "run", "job")
    assert (result["state"], result["exit_code"]) == ("failed", 1) and "missing.json" in result["message"], result
    assert _active_definitions(aws, _target(batch_project).project.resource_name("job-broken")) == []


def test_a_batch_jobs_command_runs_instead_of_the_images_entrypoint(batch_project, aws, docker_client):
    """A job definition has a command but no entrypoint, and Docker appends the command to the image's
    ENTRYPOINT (here ``python3 predict_batch.py``): the job runs from a copy of the project's image without one."""
    from cloud_deploy_provider.scheduled import job_dag_id
    from tests.helpers import scheduled_dagbag, xcom

    code = "import json, sys; print('classes:', *json.load(open('model.json'))['classes']); sys.exit(7)"
    jobs = [{"name": "other", "cron": "@daily", "target": "aws-batch", "command": ["python3", "-c", code]}]
    batch_project.edit(lambda spec: spec.__setitem__("schedule", {"jobs": jobs}))
    run = scheduled_dagbag().dags[job_dag_id(batch_project.ref, "other")].test()

    assert run.state == "failed"
    result = xcom(run, "run", "job")
    assert (result["state"], result["exit_code"]) == ("failed", 7), result
    assert "classes: setosa versicolor virginica" in result["message"], result
    pushed = xcom(run, "build")["image"]
    copies = [tag for image in docker_client.images(pushed["reference"].rsplit(":", 1)[0])
              for tag in image["RepoTags"] or [] if ":cmd-" in tag]
    assert copies and docker_client.inspect_image(copies[0])["Config"]["Entrypoint"] in (None, [""])  # [""]: none
    assert _active_definitions(aws, batch_project.ref.resource_name("job-other")) == []
