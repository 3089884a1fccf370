"""The status model: what TANGO sees for each combination of run and task states."""

from __future__ import annotations

import pytest

from cloud_deploy_provider.status import RunSnapshot, Status, derive_status

EARLIER_TASKS = ["validate", "build", "push", "deploy", "wait_ready"]  # one task per stage, before 0.2


def deploy_run(state="running", done=0, current=None, run_id=1, xcoms=None, tasks=("deploy",), stalled=()):
    states = {task: ("success" if i < done else None) for i, task in enumerate(tasks)}
    if current:
        states[tasks[done]] = current
    return RunSnapshot("cloud_deploy", f"deploy~u~p~{run_id}", run_id, state, states, xcoms or {},
                       stalled=frozenset(stalled))


def undeploy_run(state, run_id):
    return RunSnapshot("cloud_undeploy", f"undeploy~u~p~{run_id}", run_id, state, {"stop": None})


def failed(stage, message="pip exploded"):
    return {("deploy", "error"): {"stage": stage, "message": message}}


def at(stage, **more):
    return {("deploy", "progress"): {"stage": stage, **more}}


@pytest.mark.parametrize(
    "run, word, stage",
    [
        (deploy_run("queued"), Status.STARTED, "queued"),
        (deploy_run("running"), Status.STARTED, "queued"),
        (deploy_run("running", 0, "queued"), Status.BUILDING, "validate"),
        (deploy_run("running", 0, "running"), Status.BUILDING, "validate"),
        (deploy_run("running", 0, "up_for_retry"), Status.BUILDING, "validate"),
        (deploy_run("running", 0, "running", xcoms=at("deploy")), Status.PREPARING, "deploy"),
        (deploy_run("running", 0, "deferred", xcoms=at("wait_ready")), Status.PREPARING, "wait_ready"),
        (deploy_run("success", 1), Status.RUNNING, "ready"),
        (deploy_run("success", 1, xcoms={("deploy", "return_value"): {"status": {"state": "completed"}}}),
         Status.COMPLETED, "completed"),
        (deploy_run("failed", 0, "failed", xcoms=failed("push")), Status.FAILED, "push"),
        (deploy_run("failed", 0, "failed", xcoms=failed("wait_ready")), Status.FAILED, "wait_ready"),
        (deploy_run("failed", 0, "failed"), Status.FAILED, "deploy"),
        (deploy_run("failed", 0), Status.FAILED, "cancelled"),
    ],
)
def test_deploy_run_states(run, word, stage):
    status = derive_status(run, None)
    assert (status.status, status.stage) == (word, stage)


@pytest.mark.parametrize(
    "run, word, stage",
    [
        (deploy_run("running", 0, "queued", tasks=EARLIER_TASKS), Status.BUILDING, "validate"),
        (deploy_run("running", 2, "running", tasks=EARLIER_TASKS), Status.BUILDING, "push"),
        (deploy_run("running", 4, "running", tasks=EARLIER_TASKS), Status.PREPARING, "wait_ready"),
        (deploy_run("success", 5, tasks=EARLIER_TASKS), Status.RUNNING, "ready"),
        (deploy_run("success", 5, tasks=EARLIER_TASKS, xcoms={("wait_ready", "return_value"): {"state": "completed"}}),
         Status.COMPLETED, "completed"),
        (deploy_run("failed", 1, "failed", tasks=EARLIER_TASKS, xcoms={("build", "error"): "pip exploded"}),
         Status.FAILED, "build"),
    ],
)
def test_runs_of_the_five_task_dag_still_read(run, word, stage):
    """Deployments made before the two-task DAG keep their status after an upgrade."""
    status = derive_status(run, None)
    assert (status.status, status.stage) == (word, stage)


def test_a_task_whose_process_went_silent_is_not_reported_as_working():
    """The whole stack killed mid-build: the run still says running, but nothing works on it."""
    status = derive_status(deploy_run("running", 0, "running", stalled={"deploy"}, xcoms=at("build")), None)
    assert status.status == Status.UNKNOWN and "heartbeat" in status.message


def test_a_retry_says_what_failed():
    run = deploy_run("running", 0, "up_for_retry", xcoms=failed("build", "the Docker engine does not answer"))
    status = derive_status(run, None)
    assert status.status == Status.BUILDING
    assert status.message == "retrying after build: the Docker engine does not answer"


def test_failure_carries_the_recorded_error():
    assert derive_status(deploy_run("failed", 0, "failed", xcoms=failed("push")), None).message == "push: pip exploded"
    earlier = deploy_run("failed", 1, "failed", tasks=EARLIER_TASKS, xcoms={("build", "error"): "pip exploded"})
    assert derive_status(earlier, None).message == "build: pip exploded"


def test_no_record_is_none():
    assert derive_status(None, None) is None


def test_the_newer_run_wins():
    deployed = deploy_run("success", 1, run_id=1, xcoms={("deploy", "return_value"): {"url": "http://x"}})
    assert derive_status(deployed, undeploy_run("success", 2)).status == Status.STOPPED
    assert derive_status(deploy_run("queued", run_id=3), undeploy_run("success", 2)).status == Status.STARTED
    stopping = derive_status(deployed, undeploy_run("running", 2))
    assert (stopping.status, stopping.stage, stopping.url) == (Status.STOPPING, "stopping", "http://x")
    assert derive_status(deployed, undeploy_run("failed", 2)).status == Status.FAILED


def test_the_url_comes_from_the_ready_status_when_the_deploy_did_not_know_it():
    """Backend.AI assigns a service URL only once a route is healthy."""
    xcoms = {("deploy", "return_value"): {"url": None, "status": {"url": "http://svc:1"}}}
    assert derive_status(deploy_run("success", 1, xcoms=xcoms), None).url == "http://svc:1"
    xcoms[("deploy", "return_value")] = {"url": "http://first:1", "status": {"url": "http://svc:1"}}
    assert derive_status(deploy_run("success", 1, xcoms=xcoms), None).url == "http://first:1"


def test_while_waiting_in_the_triggerer_the_url_is_known():
    deployed = {"target": "aws-ecs", "resources": {"service": "s"}, "url": "http://svc:1", "changed": True}
    status = derive_status(deploy_run("running", 0, "deferred", xcoms=at("wait_ready", deployed=deployed)), None)
    assert (status.status, status.url, status.target) == (Status.PREPARING, "http://svc:1", deployed)


def test_the_spec_a_run_deployed_is_read_from_its_result():
    run = deploy_run("success", 1, xcoms={("deploy", "return_value"): {"spec": {"deploy": {"type": "docker"}}}})
    assert run.deployed_spec == {"deploy": {"type": "docker"}}
    earlier = deploy_run("success", 5, tasks=EARLIER_TASKS, xcoms={("validate", "return_value"): {"spec": {"a": 1}}})
    assert earlier.deployed_spec == {"a": 1}


def test_a_run_whose_task_succeeded_is_running_before_the_scheduler_closes_the_run():
    assert derive_status(deploy_run("running", 1), None).status == Status.RUNNING
    assert derive_status(deploy_run("running", 4, "success", tasks=EARLIER_TASKS), None).status == Status.PREPARING
