"""The status model TANGO sees, derived from the project's latest DAG runs.

    started -> building -> preparing -> running ; failed ; completed ; unknown
    /stop: stopping -> stopped (or failed)

A run's task states say which stage it is in; the tasks' XComs carry the URL, the image and
the error. This module is pure: the REST layer fetches snapshots and asks it what they mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# The stages of a deploy run in order. The DAG runs them in one task, ``deploy``, whose ``progress``
# XCom names the stage once it leaves the build stages; runs of earlier versions had one task per stage.
BUILD_STAGES = ("validate", "build", "push")
DEPLOY_STAGES = ("deploy", "wait_ready")
STAGES = BUILD_STAGES + DEPLOY_STAGES
DEPLOY_TASK = "deploy"


class Status(str, Enum):
    STARTED = "started"
    BUILDING = "building"
    PREPARING = "preparing"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    COMPLETED = "completed"
    UNKNOWN = "unknown"


ACTIVE_STATUSES = {Status.STARTED, Status.BUILDING, Status.PREPARING, Status.RUNNING}


@dataclass(frozen=True)
class RunSnapshot:
    """One DAG run of a project, as read from Airflow's database."""

    dag_id: str
    run_id: str
    id: int
    state: str
    task_states: dict[str, str | None] = field(default_factory=dict)
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)
    updated_at: str | None = None
    stalled: frozenset[str] = frozenset()  # running tasks whose process has not been heard of for too long
    queued_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_id, key))

    @property
    def finished(self) -> bool:
        return self.state in ("success", "failed")

    def recorded_failure(self) -> tuple[str, str] | None:
        """(stage, message) of the error a task recorded; earlier versions recorded the message alone."""
        for (task_id, key), value in self.xcoms.items():
            if key == "error" and value:
                if isinstance(value, dict):
                    return value.get("stage") or task_id, str(value.get("message", ""))
                return task_id, str(value)
        return None

    def error(self) -> str | None:
        recorded = self.recorded_failure()
        if recorded:
            return f"{recorded[0]}: {recorded[1]}"
        failed = [t for t, s in self.task_states.items() if s in ("failed", "upstream_failed")]
        if self.state == "failed" and not failed:
            return "cancelled"
        return f"task {failed[0]} failed (see its log)" if failed else None

    @property
    def one_task(self) -> bool:
        """A run of the one-task DAG (not of the one-task-per-stage DAG of earlier versions)."""
        return "validate" not in self.task_states

    @property
    def deployed_spec(self) -> dict[str, Any] | None:
        """The spec this run deployed, as it was read when the run validated it."""
        validated = self.xcom(DEPLOY_TASK if self.one_task else "validate") or {}
        if isinstance(validated, dict) and validated.get("spec"):
            return validated["spec"]
        progress = self.xcom(DEPLOY_TASK, "progress") or {}  # a run that failed after validating
        waiting = (progress.get("waiting") or {}).get("result") or {}
        return progress.get("spec") or waiting.get("spec") or None


@dataclass(frozen=True)
class DeploymentStatus:
    status: Status
    stage: str
    message: str | None = None
    url: str | None = None
    image: dict[str, Any] | None = None
    deploy_run_id: str | None = None
    undeploy_run_id: str | None = None
    target: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "stage": self.stage,
            "message": self.message,
            "url": self.url,
            "image": self.image,
            "deploy_run_id": self.deploy_run_id,
            "undeploy_run_id": self.undeploy_run_id,
            "target": self.target,
        }


def derive_status(deploy: RunSnapshot | None, undeploy: RunSnapshot | None) -> DeploymentStatus | None:
    """The status of a project from its latest deploy and undeploy runs (None: no record)."""
    if deploy is None and undeploy is None:
        return None
    if undeploy is not None and (deploy is None or undeploy.id > deploy.id):
        return _after_undeploy(deploy, undeploy)
    return _deploy_status(deploy)


def _after_undeploy(deploy: RunSnapshot | None, undeploy: RunSnapshot) -> DeploymentStatus:
    ids = {"deploy_run_id": deploy.run_id if deploy else None, "undeploy_run_id": undeploy.run_id}
    if undeploy.state == "success":
        return DeploymentStatus(Status.STOPPED, "stopped", "every resource of the deployment was removed", **ids)
    if undeploy.state == "failed":
        return DeploymentStatus(Status.FAILED, "stop", f"stop failed: {undeploy.error()}", **ids)
    previous = _deploy_status(deploy) if deploy else None
    return DeploymentStatus(Status.STOPPING, "stopping", "stop in progress", url=previous.url if previous else None,
                            image=previous.image if previous else None, target=previous.target if previous else None,
                            **ids)


def _deploy_status(run: RunSnapshot) -> DeploymentStatus:
    result = run.xcom(DEPLOY_TASK) or {}
    progress = run.xcom(DEPLOY_TASK, "progress") or {}
    if run.one_task:
        image, deployed, ready = result.get("image"), result or progress.get("deployed") or {}, result.get("status") or {}
    else:  # earlier versions: one task per stage
        image, deployed, ready = run.xcom("push") or run.xcom("build"), result, run.xcom("wait_ready") or {}
    url = deployed.get("url") or ready.get("url")  # some targets know the URL only once the service is ready
    target = {key: deployed.get(key) for key in ("target", "resources", "url", "changed") if key in deployed} or None
    common = {"image": image, "deploy_run_id": run.run_id, "url": url, "target": target}
    # The scheduler marks the run a pass after its last task: the task's success is already the answer.
    if run.state == "success" or (run.one_task and run.state == "running" and run.task_states.get(DEPLOY_TASK) == "success"):
        if ready.get("state") == "completed":
            return DeploymentStatus(Status.COMPLETED, "completed", ready.get("message"), **common)
        return DeploymentStatus(Status.RUNNING, "ready", "the service answers", **common)
    if run.state == "failed":
        return DeploymentStatus(Status.FAILED, _failed_stage(run), run.error(), **common)
    task = _active_task(run)
    if task is None:
        return DeploymentStatus(Status.STARTED, "queued", "waiting for the scheduler", **common)
    stage = progress.get("stage", "validate") if run.one_task else task
    if task in run.stalled:
        return DeploymentStatus(Status.UNKNOWN, stage, f"no Airflow process has reported on {stage} for over "
                                "the heartbeat timeout: the worker died; the scheduler retries the task "
                                "once it runs again", **common)
    word = Status.BUILDING if stage in BUILD_STAGES else Status.PREPARING
    message = None
    if run.task_states.get(task) == "up_for_retry" and run.error():
        message = f"retrying after {run.error()}"
    return DeploymentStatus(word, stage, message, **common)


def _tasks(run: RunSnapshot) -> list[str]:
    return [stage for stage in STAGES if stage in run.task_states]


def _active_task(run: RunSnapshot) -> str | None:
    """The first task not yet done, or None while no task has been scheduled."""
    tasks = _tasks(run)
    if not any(run.task_states.get(task_id) for task_id in tasks):
        return None
    return next((t for t in tasks if run.task_states.get(t) != "success"), tasks[-1])


def _failed_stage(run: RunSnapshot) -> str:
    recorded = run.recorded_failure()
    if recorded:
        return recorded[0]
    for task_id in _tasks(run):
        if run.task_states.get(task_id) == "failed":
            return task_id
    return "cancelled"
