"""What the REST routes do, independent of HTTP: start, stop and report one project's deployment."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from cloud_deploy_provider.api import runs
from cloud_deploy_provider.api.index import deployment_index
from cloud_deploy_provider.errors import UserError
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.status import ACTIVE_STATUSES, DeploymentStatus, RunSnapshot, Status

LIVE_CHECK_TTL_SECONDS = 5.0


class Rejected(UserError):
    """The request cannot be carried out; ``status_code`` and ``detail`` say why."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


_project_locks: dict[str, threading.Lock] = {}
_project_locks_guard = threading.Lock()
_live_cache: dict[tuple[str, int], tuple[float, DeploymentStatus]] = {}
_live_checks_running: set[tuple[str, int]] = set()
_live_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cloud-deploy-live")


def _project_lock(project: ProjectRef) -> threading.Lock:
    """One ``/start`` or ``/stop`` of a project at a time in this process (the run ids keep it so across processes)."""
    with _project_locks_guard:
        return _project_locks.setdefault(project.key, threading.Lock())


def project_ref(user_id: str, project_id: str) -> ProjectRef:
    from cloud_deploy_provider.identity import InvalidIdentifier

    try:
        return ProjectRef(user_id, project_id)
    except InvalidIdentifier as error:
        raise Rejected(400, str(error)) from None


def current_status(project: ProjectRef, live: bool = True) -> DeploymentStatus | None:
    """The project's status as of now (the index refreshed first), confirmed with its target when running."""
    index = deployment_index()
    index.refresh()
    entry = index.entries.get(project.key)
    if entry is None or entry.status is None:
        return None
    status = entry.status
    if live and _confirmable(entry):
        return _with_live_check(project, entry.deploy, status)
    return status


def served_status(project: ProjectRef) -> DeploymentStatus | None:
    """What ``/status_request`` answers, without waiting on the database or the target.

    From the index (at most one refresh behind); a running service's last check by its target
    when one was made within ``LIVE_CHECK_TTL_SECONDS``, the next one started in the background.
    """
    entry = deployment_index().get_or_refresh(project)
    if entry is None or entry.status is None:
        return None
    if not _confirmable(entry):
        return entry.status
    key = (project.key, entry.deploy.id)
    cached = _live_cache.get(key)
    if cached is None or time.monotonic() - cached[0] >= LIVE_CHECK_TTL_SECONDS:
        _check_in_background(key, project, entry.deploy, entry.status)
    return cached[1] if cached else entry.status


def status_in_memory(project: ProjectRef) -> DeploymentStatus | None:
    """:func:`served_status` when it needs neither a refresh nor a thread, else None (ask it then)."""
    index = deployment_index()
    entry = index.entries.get(project.key)
    if entry is None or entry.status is None or not index.fresh:
        return None
    return served_status(project)


def listing(user_id: str | None, status: Status | None, target: str | None, limit: int, offset: int) -> dict[str, Any]:
    """A page of every known deployment, from the index: no query and no call to a target per row."""
    rows = []
    for entry in deployment_index().all():
        row = _row(entry)
        if (user_id is None or row["user_id"] == user_id) and (status is None or row["status"] == status.value) and (
            target is None or row["target_type"] == target
        ):
            rows.append(row)
    return {"total": len(rows), "offset": offset, "limit": limit, "deployments": rows[offset:offset + limit]}


def _row(entry: Any) -> dict[str, Any]:
    status = entry.status
    if _confirmable(entry):
        cached = _live_cache.get((entry.project.key, entry.deploy.id))
        status = cached[1] if cached else status
    spec = (entry.deploy.deployed_spec if entry.deploy else None) or {}
    image = status.image or {}
    return {
        "user_id": entry.project.user_id,
        "project_id": entry.project.project_id,
        "status": status.status.value,
        "stage": status.stage,
        "message": status.message,
        "target_type": (spec.get("deploy") or {}).get("type"),
        "url": status.url,
        "image": {"reference": image.get("reference"), "digest": image.get("digest")} if image else None,
        "last_deploy": _run_times(entry.deploy),
        "last_stop": _run_times(entry.undeploy),
    }


def _run_times(run: RunSnapshot | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"run_id": run.run_id, "state": run.state, "queued_at": run.queued_at, "started_at": run.started_at,
            "ended_at": run.ended_at}


def _confirmable(entry: Any) -> bool:
    status = entry.status
    return status.status == Status.RUNNING and status.stage == "ready" and entry.deploy is not None


def _check_in_background(key: tuple[str, int], project: ProjectRef, deploy: RunSnapshot,
                         status: DeploymentStatus) -> None:
    if key in _live_checks_running:
        return
    _live_checks_running.add(key)

    def check() -> None:
        try:
            _with_live_check(project, deploy, status, refresh=True)
        finally:
            _live_checks_running.discard(key)

    _live_pool.submit(check)


def _with_live_check(project: ProjectRef, deploy: RunSnapshot, status: DeploymentStatus,
                     refresh: bool = False) -> DeploymentStatus:
    """Confirm a finished deploy with the target, at most once per TTL per project (unless ``refresh``)."""
    key = (project.key, deploy.id)
    cached = _live_cache.get(key)
    if not refresh and cached and time.monotonic() - cached[0] < LIVE_CHECK_TTL_SECONDS:
        return cached[1]
    result = _live_status(project, deploy, status)
    _live_cache[key] = (time.monotonic(), result)
    before = cached[1] if cached else status
    if (before.status, before.stage) != (result.status, result.stage):
        deployment_index().announce(project, before, result)
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
    except UserError as error:  # anything else is a bug: a 500 with its traceback in the log, not "bad input"
        raise Rejected(400, str(error)) from None
    with _project_lock(project):
        status = current_status(project)
        if status is not None and status.status == Status.STOPPING:
            raise Rejected(409, "Service is stopping: start it again once its status is stopped")
        if status is not None and status.status in ACTIVE_STATUSES:
            raise Rejected(400, f"Service already exists ({status.status.value})")
        try:
            run_id = runs.trigger(runs.DEPLOY_DAG, project, _conf(project), user_name)
        except runs.RunAlreadyExists:
            raise Rejected(400, "Service already exists (started)") from None
        except runs.DagNotLoaded as error:
            raise Rejected(503, str(error)) from None
    deployment_index().refresh()
    return run_id


def stop(project: ProjectRef, user_name: str | None = None) -> Status:
    """Answer at once: ``stopped`` when nothing is deployed, else ``stopping`` with an undeploy run queued.

    TANGO's manager waits 5 s for any answer, so nothing here waits for the target: an unfinished
    deploy is cancelled (its task is killed) and the undeploy run, queued first so that the status
    says ``stopping`` from now on, waits until the killed task's process is gone, then removes
    everything. ``/status_request`` reports ``stopping`` until it has.
    """
    with _project_lock(project):
        index = deployment_index()
        # At most one refresh old: a stop another process queued meanwhile makes the trigger below
        # meet its run id (answered ``stopping``); one refresh less keeps 20 stops at once inside 1 s.
        entry = index.get_or_refresh(project)
        if entry is None or entry.status is None:
            raise Rejected(404, "Service not found")
        if entry.status.status in (Status.STOPPING, Status.STOPPED):
            return entry.status.status
        deploy = entry.deploy
        conf = {**_conf(project), "spec": deploy.deployed_spec if deploy else None}
        try:
            runs.trigger(runs.UNDEPLOY_DAG, project, conf, user_name)
        except runs.RunAlreadyExists:
            return Status.STOPPING
        except runs.DagNotLoaded as error:
            raise Rejected(503, str(error)) from None
        if deploy is not None and not deploy.finished:
            runs.cancel(runs.DEPLOY_DAG, deploy.run_id)
        index.refresh()
        return Status.STOPPING


def _conf(project: ProjectRef) -> dict[str, Any]:
    return {"user_id": project.user_id, "project_id": project.project_id}
