"""What the REST routes do, independent of HTTP: start, stop and report one project's deployment."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import Any

from cloud_deploy_provider.api import runs
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.status import ACTIVE_STATUSES, DeploymentStatus, RunSnapshot, Status, derive_status

LIVE_CHECK_TTL_SECONDS = 5.0
CANCEL_GRACE_SECONDS = 5.0


class Rejected(Exception):
    """The request cannot be carried out; ``status_code`` and ``detail`` say why."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def stop_wait_seconds() -> float:
    return float(os.environ.get("CLOUD_DEPLOY_STOP_WAIT_SECONDS", "180"))


_start_lock = threading.Lock()
_live_cache: dict[tuple[str, int], tuple[float, DeploymentStatus]] = {}


def project_ref(user_id: str, project_id: str) -> ProjectRef:
    from cloud_deploy_provider.identity import InvalidIdentifier

    try:
        return ProjectRef(user_id, project_id)
    except InvalidIdentifier as error:
        raise Rejected(400, str(error)) from None


def current_status(project: ProjectRef, live: bool = True) -> DeploymentStatus | None:
    deploy = runs.latest_run(runs.DEPLOY_DAG, project)
    undeploy = runs.latest_run(runs.UNDEPLOY_DAG, project)
    status = derive_status(deploy, undeploy)
    if live and status is not None and status.status == Status.RUNNING and status.stage == "ready" and deploy:
        return _with_live_check(project, deploy, status)
    return status


def _with_live_check(project: ProjectRef, deploy: RunSnapshot, status: DeploymentStatus) -> DeploymentStatus:
    """Confirm a finished deploy with the target, at most once per TTL per project."""
    key = (project.key, deploy.id)
    cached = _live_cache.get(key)
    if cached and time.monotonic() - cached[0] < LIVE_CHECK_TTL_SECONDS:
        return cached[1]
    result = _live_status(project, deploy, status)
    _live_cache[key] = (time.monotonic(), result)
    return result


def _live_status(project: ProjectRef, deploy: RunSnapshot, status: DeploymentStatus) -> DeploymentStatus:
    from cloud_deploy_provider.pipeline import make_target
    from cloud_deploy_provider.spec import DeploymentSpec

    try:
        spec = DeploymentSpec.model_validate(deploy.deployed_spec)
        live = make_target(project, spec.deploy.type, log=lambda _: None).status(spec)
    except Exception as error:  # the target being unreachable is a status, not a server error
        return replace(status, status=Status.UNKNOWN, stage="unreachable", message=f"target unreachable: {error}")
    if live.state == "running":
        return replace(status, message=live.message, url=live.url or status.url)
    if live.state == "completed":
        return replace(status, status=Status.COMPLETED, stage="completed", message=live.message)
    if live.state == "starting":
        return replace(status, status=Status.PREPARING, stage="not-ready", message=live.message)
    if live.state == "absent":
        return replace(status, status=Status.STOPPED, stage="gone", message=live.message)
    return replace(status, status=Status.FAILED, stage="target", message=live.message)


def start(project: ProjectRef, user_name: str | None = None) -> str:
    """Validate synchronously, then queue exactly one deploy run."""
    from cloud_deploy_provider.pipeline import load_project

    try:
        load_project(project.user_id, project.project_id)
    except Exception as error:
        raise Rejected(400, str(error)) from None
    with _start_lock:
        status = current_status(project)
        if status is not None and status.status in ACTIVE_STATUSES:
            raise Rejected(400, f"Service already exists ({status.status.value})")
        try:
            return runs.trigger(runs.DEPLOY_DAG, project, _conf(project), user_name)
        except runs.RunAlreadyExists:
            raise Rejected(400, "Service already exists (started)") from None
        except runs.DagNotLoaded as error:
            raise Rejected(503, str(error)) from None


def stop(project: ProjectRef, user_name: str | None = None) -> runs.RunSnapshot:
    """Cancel an unfinished deploy, run the undeploy, and wait (bounded) until everything is gone."""
    deploy = runs.latest_run(runs.DEPLOY_DAG, project)
    undeploy = runs.latest_run(runs.UNDEPLOY_DAG, project)
    if deploy is None and undeploy is None:
        raise Rejected(404, "Service not found")
    if deploy is not None and not deploy.finished:
        had_running_task = any(state == "running" for state in deploy.task_states.values())
        runs.cancel(runs.DEPLOY_DAG, deploy.run_id)
        if had_running_task:
            time.sleep(CANCEL_GRACE_SECONDS)  # let the killed task's process exit before cleaning up after it
    conf = {**_conf(project), "spec": deploy.deployed_spec if deploy else None}
    try:
        run_id = runs.trigger(runs.UNDEPLOY_DAG, project, conf, user_name)
    except runs.RunAlreadyExists:
        raise Rejected(409, "a stop for this project is already starting") from None
    except runs.DagNotLoaded as error:
        raise Rejected(503, str(error)) from None
    timeout = stop_wait_seconds()
    finished = runs.wait_finished(runs.UNDEPLOY_DAG, run_id, timeout)
    if finished is None or not finished.finished:
        raise Rejected(504, f"stop still running after {timeout:.0f} s (run {run_id})")
    if finished.state != "success":
        raise Rejected(500, f"stop failed: {finished.error()}")
    return finished


def _conf(project: ProjectRef) -> dict[str, Any]:
    return {"user_id": project.user_id, "project_id": project.project_id}
