"""The status model: what TANGO sees for each combination of run and task states."""

from __future__ import annotations

import pytest

from cloud_deploy_provider.status import RunSnapshot, Status, derive_status

TASKS = ["validate", "build", "push", "deploy", "wait_ready"]


def deploy_run(state="running", done=0, current=None, run_id=1, xcoms=None):
    states = {task: ("success" if i < done else None) for i, task in enumerate(TASKS)}
    if current:
        states[TASKS[done]] = current
    return RunSnapshot("cloud_deploy", f"deploy~u~p~{run_id}", run_id, state, states, xcoms or {})


def undeploy_run(state, run_id):
    return RunSnapshot("cloud_undeploy", f"undeploy~u~p~{run_id}", run_id, state, {"stop": None})


@pytest.mark.parametrize(
    "run, word, stage",
    [
        (deploy_run("queued"), Status.STARTED, "queued"),
        (deploy_run("running"), Status.STARTED, "queued"),
        (deploy_run("running", 0, "queued"), Status.BUILDING, "validate"),
        (deploy_run("running", 1, "running"), Status.BUILDING, "build"),
        (deploy_run("running", 2, "running"), Status.BUILDING, "push"),
        (deploy_run("running", 3, "scheduled"), Status.PREPARING, "deploy"),
        (deploy_run("running", 4, "running"), Status.PREPARING, "wait_ready"),
        (deploy_run("success", 5), Status.RUNNING, "ready"),
        (deploy_run("success", 5, xcoms={("wait_ready", "return_value"): {"state": "completed"}}), Status.COMPLETED,
         "completed"),
        (deploy_run("failed", 1, "failed", xcoms={("build", "error"): "pip exploded"}), Status.FAILED, "build"),
        (deploy_run("failed", 0), Status.FAILED, "cancelled"),
    ],
)
def test_deploy_run_states(run, word, stage):
    status = derive_status(run, None)
    assert (status.status, status.stage) == (word, stage)


def test_failure_carries_the_recorded_error():
    run = deploy_run("failed", 1, "failed", xcoms={("build", "error"): "pip exploded"})
    assert derive_status(run, None).message == "build: pip exploded"


def test_no_record_is_none():
    assert derive_status(None, None) is None


def test_the_newer_run_wins():
    deployed = deploy_run("success", 5, run_id=1, xcoms={("deploy", "return_value"): {"url": "http://x"}})
    assert derive_status(deployed, undeploy_run("success", 2)).status == Status.STOPPED
    assert derive_status(deploy_run("queued", run_id=3), undeploy_run("success", 2)).status == Status.STARTED
    stopping = derive_status(deployed, undeploy_run("running", 2))
    assert (stopping.status, stopping.stage, stopping.url) == (Status.RUNNING, "stopping", "http://x")
    assert derive_status(deployed, undeploy_run("failed", 2)).status == Status.FAILED


def test_the_url_comes_from_wait_ready_when_the_deploy_did_not_know_it():
    """Backend.AI assigns a service URL only once a route is healthy."""
    xcoms = {("deploy", "return_value"): {"url": None}, ("wait_ready", "return_value"): {"url": "http://svc:1"}}
    assert derive_status(deploy_run("success", 5, xcoms=xcoms), None).url == "http://svc:1"
    xcoms[("deploy", "return_value")] = {"url": "http://first:1"}
    assert derive_status(deploy_run("success", 5, xcoms=xcoms), None).url == "http://first:1"
