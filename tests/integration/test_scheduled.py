"""Scheduled redeploys and batch jobs: DAGs generated from the shared folder, parsed by Airflow's own DagBag,
run with dag.test() on the real engine (the real scheduler runs one in tests/e2e)."""

from __future__ import annotations

import shutil
import time
import uuid

import pytest
from cloud_deploy_provider.scheduled import job_dag_id, redeploy_dag_id
from tests.helpers import Project, scheduled_dagbag, set_schedule, xcom

@pytest.fixture
def project(airflow_db, base_image):
    made = Project("hello", user_id=f"sched-{uuid.uuid4().hex[:6]}")
    yield made
    from cloud_deploy_provider.targets.docker import DockerTarget

    DockerTarget(made.ref, log=lambda _: None).stop(None)


def test_projects_appear_and_disappear_with_their_schedule_and_ids_are_readable(project):
    assert not [d for d in scheduled_dagbag().dag_ids if project.user_id in d], "no schedule, no DAG"
    set_schedule(project, redeploy="@daily", jobs=[{"name": "score", "cron": "0 2 * * *", "command": ["python3", "-V"]}])
    bag = scheduled_dagbag()
    ids = {redeploy_dag_id(project.ref), job_dag_id(project.ref, "score")}
    assert ids <= set(bag.dag_ids)
    assert f"cloud_job__{project.user_id}__{project.project_id}__score" in ids
    job = bag.dags[job_dag_id(project.ref, "score")]
    assert [t.task_id for t in job.topological_sort()] == ["build", "run"]
    assert job.schedule == "0 2 * * *" and not job.catchup
    project.edit(lambda spec: spec.pop("schedule"))
    assert not ids & set(scheduled_dagbag().dag_ids), "the DAGs go with the schedule section"


def test_a_broken_yaml_is_an_import_error_naming_it_and_breaks_no_other_project(project, airflow_db):
    set_schedule(project, jobs=[{"name": "ok", "cron": "@hourly", "command": ["true"]}])
    broken = Project("hello", user_id=f"sched-{uuid.uuid4().hex[:6]}")
    set_schedule(broken, redeploy="61 * * * *")
    try:
        bag = scheduled_dagbag()
    finally:
        shutil.rmtree(broken.folder)  # other tests parse the whole dags folder and expect no import error
    assert job_dag_id(project.ref, "ok") in bag.dag_ids
    assert redeploy_dag_id(broken.ref) not in bag.dag_ids
    errors = "\n".join(bag.import_errors.values())
    shown = f"common/{broken.user_id}/{broken.project_id}/deployment.yaml"
    assert f"{shown}: schedule.redeploy: '61 * * * *' is not a valid cron expression" in errors
    assert str(broken.spec_file) not in errors, "messages name paths relative to the shared root"


def test_a_scheduled_job_runs_to_completion_with_its_exit_code(project, serialized_dags):
    command = ["python3", "-c", "import json; print('classes:', *json.load(open('model.json'))['classes'])"]
    set_schedule(project, jobs=[{"name": "classes", "cron": "@daily", "command": command, "timeout_seconds": 60}])
    dag = scheduled_dagbag().dags[job_dag_id(project.ref, "classes")]
    run = dag.test()
    assert run.state == "success"
    result = xcom(run, "run", "job")
    assert (result["state"], result["exit_code"]) == ("completed", 0)
    assert "classes: setosa versicolor virginica" in result["log_tail"]


def test_a_failing_job_fails_the_run_with_exit_code_and_last_lines(project):
    command = ["python3", "-c", "import sys; print('loading'); sys.exit(3)"]
    set_schedule(project, jobs=[{"name": "broken", "cron": "@daily", "command": command, "retries": 0}])
    run = scheduled_dagbag().dags[job_dag_id(project.ref, "broken")].test()
    assert run.state == "failed"
    result = xcom(run, "run", "job")
    assert (result["state"], result["exit_code"]) == ("failed", 3) and "loading" in result["log_tail"]
    assert "exit code 3" in xcom(run, "run", "error")["message"]


def test_a_job_over_its_timeout_is_stopped_and_leaves_nothing(project, docker_client):
    command = ["python3", "-c", "import time; time.sleep(120)"]
    set_schedule(project, jobs=[{"name": "slow", "cron": "@daily", "command": command, "timeout_seconds": 3}])
    run = scheduled_dagbag().dags[job_dag_id(project.ref, "slow")].test()
    assert run.state == "failed"
    result = xcom(run, "run", "job")
    assert result["timed_out"] and "timeout of 3 s" in xcom(run, "run", "error")["message"]
    assert docker_client.containers(all=True, filters={"label": "io.cloud-deploy.job=slow"}) == []


def test_a_scheduled_redeploy_with_the_same_inputs_records_unchanged(project):
    set_schedule(project, redeploy="@daily")
    dag = scheduled_dagbag().dags[redeploy_dag_id(project.ref)]
    first = dag.test()
    assert first.state == "success" and xcom(first, "deploy")["changed"] is True
    second = dag.test()
    assert second.state == "success"
    assert xcom(second, "deploy")["image"]["skipped"], "same inputs: no rebuild"
    assert xcom(second, "deploy")["changed"] is False, "and the rollout is recorded as unchanged"


def test_job_and_schedule_rejections():
    from cloud_deploy_provider.spec import SpecError, validate_spec_data

    base = {"build": {}, "deploy": {"type": "docker", "service_name": "s"}}
    for schedule, problem in [
        ({"redeploy": "@reboot"}, "is not a cron expression"),
        ({"jobs": [{"name": "Nightly", "cron": "@daily"}]}, "is not a job name"),
        ({"jobs": [{"name": "a", "cron": "@daily"}, {"name": "a", "cron": "@daily"}]}, "job names must be unique: a"),
        ({"jobs": [{"name": "a", "cron": "@daily", "target": "aws-ecs"}]}, "is not a known job target"),
        ({"jobs": [{"name": "a", "cron": "@daily", "target": "aws-batch"}]},
         "schedule.jobs[0]: an aws-batch job runs the project's own image only when deploy.type is aws-batch"),
        ({"jobs": [{"name": "a", "cron": "@daily", "command": "rm -rf /; echo"}]}, "schedule.jobs[0].command"),
    ]:
        with pytest.raises(SpecError) as error:
            validate_spec_data({**base, "schedule": schedule})
        assert problem in str(error.value), (schedule, str(error.value))


def test_a_job_for_an_existing_image_pulls_it_from_the_registry(project, docker_client, base_image, registry, monkeypatch):
    """The tutorial's workflow: `cloud-deploy job create` for an image that is only in the registry."""
    from cloud_deploy_provider.cli import main

    pushed = f"{registry.host}/tools/batch:{uuid.uuid4().hex[:8]}"
    repository, tag = pushed.rsplit(":", 1)
    docker_client.tag(base_image, repository, tag)
    for _ in docker_client.push(repository, tag=tag, stream=True, decode=True):
        pass
    docker_client.remove_image(pushed)
    command = ["--", "python3", "-c", "print('batch ok')"]
    assert main(["job", "create", "--user-id", project.user_id, "--project-id", project.project_id, "--job-id", "batch",
                 "--image", pushed, "--schedule", "@daily", *command]) == 0
    run = scheduled_dagbag().dags[job_dag_id(project.ref, "batch")].test()
    assert run.state == "success"
    result = xcom(run, "run", "job")
    assert (result["state"], result["exit_code"], result["log_tail"]) == ("completed", 0, ["batch ok"])
    docker_client.remove_image(pushed)


def test_a_worker_builds_only_the_dag_it_runs(project, monkeypatch):
    from cloud_deploy_provider.scheduled import build_dags
    from cloud_deploy_provider.workspace import shared_root

    set_schedule(project, redeploy="@daily", jobs=[{"name": "a", "cron": "@daily", "command": ["true"]}])
    other = Project("hello", user_id=f"sched-{uuid.uuid4().hex[:6]}")
    set_schedule(other, redeploy="@daily")
    try:
        wanted = job_dag_id(project.ref, "a")
        assert {dag.dag_id for dag in build_dags(shared_root(), only=wanted)} == {wanted, redeploy_dag_id(project.ref)}
        assert redeploy_dag_id(other.ref) in {dag.dag_id for dag in build_dags(shared_root())}
    finally:
        shutil.rmtree(other.folder)


def test_a_long_docker_job_waits_in_the_triggerer_and_its_output_reaches_the_log(project, airflow_db, serialized_dags,
                                                                                monkeypatch, capfd, docker_client):
    monkeypatch.setenv("CLOUD_DEPLOY_INLINE_WAIT_SECONDS", "0")
    code = "import time; print('first half', flush=True); time.sleep(2); print('second half', flush=True)"
    set_schedule(project, jobs=[{"name": "halves", "cron": "@daily", "command": ["python3", "-c", code]}])
    run = scheduled_dagbag().dags[job_dag_id(project.ref, "halves")].test()

    assert run.state == "success"
    result = xcom(run, "run", "job")
    assert (result["state"], result["exit_code"], result["log_tail"]) == ("completed", 0, ["first half", "second half"])
    output = capfd.readouterr().out
    assert "the triggerer waits for the rest" in output and "second half" in output
    assert not docker_client.containers(all=True, filters={"label": "io.cloud-deploy.job=halves"})


def test_a_docker_job_past_its_timeout_in_the_triggerer_is_killed_and_removed(project, airflow_db, serialized_dags,
                                                                              monkeypatch, docker_client):
    monkeypatch.setenv("CLOUD_DEPLOY_INLINE_WAIT_SECONDS", "0")
    code = "import time; print('working', flush=True); time.sleep(120)"
    set_schedule(project, jobs=[{"name": "stuck", "cron": "@daily", "command": ["python3", "-c", code],
                               "timeout_seconds": 3}])
    started = time.monotonic()
    run = scheduled_dagbag().dags[job_dag_id(project.ref, "stuck")].test()

    assert run.state == "failed" and time.monotonic() - started < 60
    result = xcom(run, "run", "job")
    assert result["timed_out"] and result["log_tail"] == ["working"], result
    assert "timeout of 3 s" in xcom(run, "run", "error")["message"]
    assert not docker_client.containers(all=True, filters={"label": "io.cloud-deploy.job=stuck"})
