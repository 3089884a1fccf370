"""Batch jobs on a real Docker engine: streamed output, exit codes, the timeout, secrets, leftovers, errors."""

from __future__ import annotations

import os
import threading
import time
import uuid

import docker
import pytest

from cloud_deploy_provider.identity import LABEL_KEY, ProjectRef
from cloud_deploy_provider.jobs.base import JobError
from cloud_deploy_provider.jobs.docker import JOB_LABEL, DockerJobRunner
from tests.helpers import Log, python


@pytest.fixture
def project(docker_client, base_image):
    ref = ProjectRef("alice", f"p-{uuid.uuid4().hex[:10]}")
    yield ref
    filters = {"label": f"{LABEL_KEY}={ref.key}"}
    left = docker_client.containers(all=True, filters=filters)
    for container in left:
        docker_client.remove_container(container["Id"], force=True)
    assert not left, [container["Names"] for container in left]


@pytest.fixture
def log():
    return Log()


def job_containers(client, project: ProjectRef, job: str) -> list[dict]:
    filters = {"label": [f"{LABEL_KEY}={project.key}", f"{JOB_LABEL}={job}"]}
    return client.containers(all=True, filters=filters)


def test_output_is_streamed_line_by_line_while_the_job_runs_and_it_completes(project, log, base_image):
    """The client's read timeout (2 s) is shorter than the job's silence: following the output survives it."""
    client = docker.APIClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"), timeout=2)
    code = "import time; print('first', flush=True); time.sleep(3); print('second'); print('third')"
    result = DockerJobRunner(project, log, client).run("nightly", base_image, python(code), timeout_seconds=30)

    assert (result.state, result.exit_code, result.timed_out) == ("completed", 0, False)
    assert result.message() == "completed (exit code 0)"
    assert result.container.startswith(project.resource_name("job-nightly", max_length=56) + "-")
    assert result.log_tail == ["first", "second", "third"]
    output = [line for line in log if not line.startswith("job nightly: ")]
    assert output == ["first", "second", "third"], log
    first, second = log.times[log.index("first")], log.times[log.index("second")]
    assert second - first > 2.5, "'first' must reach the log while the job still runs"
    assert result.to_dict()["message"] == result.message() and result.to_dict()["log_tail"] == result.log_tail


def test_a_failing_job_reports_its_exit_code_and_last_lines_from_stderr(project, log, docker_client, base_image):
    """The engine copies stdout and stderr separately: lines written to both at once may swap, hence the pause."""
    code = (
        "import sys, time; print('reading input', flush=True); time.sleep(0.3)\n"
        "print('bad input: row 7', file=sys.stderr); sys.exit(3)"
    )
    result = DockerJobRunner(project, log, docker_client).run("nightly", base_image, python(code))

    assert (result.state, result.exit_code, result.timed_out) == ("failed", 3, False)
    assert result.log_tail == ["reading input", "bad input: row 7"]
    assert result.message() == "failed: exit code 3; last log lines: reading input | bad input: row 7"


def test_a_job_past_its_timeout_is_killed_and_removed_and_ran_with_its_labels_and_limits(
    project, log, docker_client, base_image
):
    runner = DockerJobRunner(project, log, docker_client)
    command = python("import time; print('working', flush=True); time.sleep(60)")
    outcome: dict = {}

    def run():
        started = time.monotonic()
        outcome["result"] = runner.run("slow", base_image, command, timeout_seconds=2, cpu=0.5, memory_mb=64)
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    for _ in range(40):
        running = job_containers(docker_client, project, "slow")
        if running:
            break
        time.sleep(0.05)
    assert running, "the job's container carries the project's and the job's labels"
    container = docker_client.inspect_container(running[0]["Id"])
    thread.join(timeout=30)

    assert container["Config"]["Labels"] == {**project.labels("slow"), JOB_LABEL: "slow"}
    assert container["Config"]["Entrypoint"] == command, "the command replaces the image's entrypoint"
    host = container["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["RestartPolicy"]["Name"]) == (500_000_000, 64 * 2**20, "no")
    assert not host["PortBindings"] and not container["Config"].get("ExposedPorts")

    result = outcome["result"]
    assert outcome["seconds"] < 10
    assert (result.state, result.exit_code, result.timed_out) == ("failed", None, True)
    assert result.log_tail == ["working"]
    assert result.message() == "failed: exceeded its timeout of 2 s and was stopped; last log lines: working"
    assert not job_containers(docker_client, project, "slow")


def test_env_reaches_the_job_and_its_values_are_never_logged_by_the_runner(project, log, docker_client, base_image):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    code = "import os; print('token=' + os.environ['API_TOKEN'])"
    result = DockerJobRunner(project, log, docker_client).run(
        "export", base_image, python(code), env={"API_TOKEN": secret}
    )

    assert result.state == "completed"
    assert [line for line in log if secret in line] == [f"token={secret}"], "only the job's own output shows it"


def test_containers_left_by_earlier_runs_are_removed_and_other_jobs_are_kept(project, log, docker_client, base_image):
    def leftover(job: str, suffix: str, start: bool) -> str:
        name = f"{project.resource_name(f'job-{job}', max_length=56)}-{suffix}"
        labels = {**project.labels(job), JOB_LABEL: job}
        docker_client.create_container(base_image, python("import time; time.sleep(60)"), name=name, labels=labels)
        if start:
            docker_client.start(name)
        return name

    runner = DockerJobRunner(project, log, docker_client)
    other_job = leftover("report", "keep00", start=True)
    killed_worker, never_started = leftover("nightly", "old001", True), leftover("nightly", "old002", False)

    assert sorted(runner.cleanup("nightly")) == sorted([killed_worker, never_started])
    assert f"job nightly: removed container {killed_worker} left by an earlier run" in log

    again = leftover("nightly", "old003", start=True)
    assert runner.run("nightly", base_image, ["true"]).state == "completed"
    assert f"job nightly: removed container {again} left by an earlier run" in log
    assert not job_containers(docker_client, project, "nightly")
    assert [c["Names"][0].lstrip("/") for c in job_containers(docker_client, project, "report")] == [other_job]
    docker_client.remove_container(other_job, force=True)


def test_an_image_that_does_not_exist_is_a_clear_error(project, log, docker_client):
    with pytest.raises(JobError, match="image cloud-deploy/no-such-image:never is not in the Docker engine"):
        DockerJobRunner(project, log, docker_client).run("nightly", "cloud-deploy/no-such-image:never", ["true"])


def test_a_command_that_cannot_start_is_a_clear_error(project, log, docker_client, base_image):
    with pytest.raises(JobError, match='did not start: .*"no-such-program": executable file not found'):
        DockerJobRunner(project, log, docker_client).run("nightly", base_image, ["no-such-program", "--now"])


def test_gpus_are_requested_from_the_nvidia_driver(project, log, docker_client, base_image):
    """This engine may have no GPU: what matters here is what was asked for, and that nothing is left."""
    requested = []

    class Recording:
        def __getattr__(self, name):
            return getattr(docker_client, name)

        def create_container(self, **config):
            requested.append(config["host_config"].get("DeviceRequests"))
            return docker_client.create_container(**config)

    try:
        DockerJobRunner(project, log, Recording()).run("train", base_image, ["true"], gpus=2)
    except JobError:
        pass
    [[device]] = requested
    assert (device["Driver"], device["Count"], device["Capabilities"]) == ("nvidia", 2, [["gpu"]])


@pytest.mark.parametrize(
    "job", ["Nightly", "a" * 41, "", "-nightly", "nightly-", "nightly; rm -rf /", "nightly\n", "job_1"]
)
def test_an_invalid_job_name_is_refused_before_the_engine_is_asked(project, log, job):
    runner = DockerJobRunner(project, log, client=object())
    with pytest.raises(JobError, match="is not valid"):
        runner.run(job, "any", None)
    with pytest.raises(JobError, match="is not valid"):
        runner.cleanup(job)


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_run_removes_its_container(project, docker_client, base_image, interruption):
    def log(line: str) -> None:
        if line == "working":
            raise interruption()

    command = python("import time; print('working', flush=True); time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(interruption):
        DockerJobRunner(project, log, docker_client).run("nightly", base_image, command, timeout_seconds=30)
    assert time.monotonic() - started < 10
    assert not job_containers(docker_client, project, "nightly")
