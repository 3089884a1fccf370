"""The status model TANGO sees, derived from the project's latest DAG runs.

    started -> building -> preparing -> running ; failed ; stopped ; completed ; unknown

A run's task states say which stage it is in; the tasks' XComs carry the URL, the image and
the error. This module is pure: the REST layer fetches snapshots and asks it what they mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

BUILD_TASKS = ("validate", "build", "push")
DEPLOY_TASKS = ("deploy", "wait_ready")


class Status(str, Enum):
    STARTED = "started"
    BUILDING = "building"
    PREPARING = "preparing"
    RUNNING = "running"
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

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_id, key))

    @property
    def finished(self) -> bool:
        return self.state in ("success", "failed")

    def error(self) -> str | None:
        for (task_id, key), value in self.xcoms.items():
            if key == "error" and value:
                return f"{task_id}: {value}"
        failed = [t for t, s in self.task_states.items() if s in ("failed", "upstream_failed")]
        if self.state == "failed" and not failed:
            return "cancelled"
        return f"task {failed[0]} failed (see its log)" if failed else None


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
    word = previous.status if previous else Status.UNKNOWN
    return DeploymentStatus(word, "stopping", "stop in progress", url=previous.url if previous else None, **ids)


def _deploy_status(run: RunSnapshot) -> DeploymentStatus:
    image = run.xcom("push") or run.xcom("build")
    deployed = run.xcom("deploy") or {}
    finished = run.xcom("wait_ready") or {}
    url = deployed.get("url") or finished.get("url")  # some targets know the URL only once the service is ready
    common = {"image": image, "deploy_run_id": run.run_id, "url": url, "target": deployed or None}
    if run.state == "success":
        if finished.get("state") == "completed":
            return DeploymentStatus(Status.COMPLETED, "completed", finished.get("message"), **common)
        return DeploymentStatus(Status.RUNNING, "ready", "the service answers", **common)
    if run.state == "failed":
        return DeploymentStatus(Status.FAILED, _failed_stage(run), run.error(), **common)
    stage = _active_stage(run)
    if stage is None:
        return DeploymentStatus(Status.STARTED, "queued", "waiting for the scheduler", **common)
    word = Status.BUILDING if stage in BUILD_TASKS else Status.PREPARING
    return DeploymentStatus(word, stage, None, **common)


def _active_stage(run: RunSnapshot) -> str | None:
    """The first task not yet done, or None while no task has been scheduled."""
    tasks = BUILD_TASKS + DEPLOY_TASKS
    if not any(run.task_states.get(task_id) for task_id in tasks):
        return None
    return next((t for t in tasks if run.task_states.get(t) != "success"), tasks[-1])


def _failed_stage(run: RunSnapshot) -> str:
    for task_id in BUILD_TASKS + DEPLOY_TASKS:
        if run.task_states.get(task_id) == "failed":
            return task_id
    return "cancelled"
