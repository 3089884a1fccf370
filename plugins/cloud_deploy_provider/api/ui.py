"""The Deployments pages inside the Airflow UI: an external view (an iframe at ``/plugin/deployments``) served by
the plugin's own app, server-rendered HTML plus a small script that reads the JSON routes below.

Viewing needs an authenticated Airflow user (the plugin app requires one on every route). Deploying and stopping
go through the same code as TANGO's ``/start`` and ``/stop`` (same validation, refusals and single run), and need
the right to trigger the ``cloud_deploy`` or ``cloud_undeploy`` DAG. Actions take a JSON body, so a cross-site
form cannot post one. The iframe's sandbox blocks ``confirm()``, popups and top navigation: the pages confirm in
the page and open links through ``window.parent``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from cloud_deploy_provider.api import deployments, runs
from cloud_deploy_provider.api.index import deployment_index
from cloud_deploy_provider.errors import CloudDeployError
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.status import Status

HERE = Path(__file__).parent
STATIC_FILES = {"deployments.js": "text/javascript", "icon.svg": "image/svg+xml"}
ELIDED = "<elided>"
SECRET_KEYS = ("password", "secret", "token", "dockerconfigjson", "auth")
# Headers of every page: it may be framed by the Airflow UI only.
PAGE_HEADERS = {"Content-Security-Policy": "frame-ancestors 'self'", "Cache-Control": "no-store"}


class Confirmed(BaseModel):
    """An action's body: JSON only, so that a cross-site form post cannot carry one."""

    confirm: bool


@cache
def _templates():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


def _page(request: Request, template: str, **values: Any) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    html = _templates().get_template(template).render(root=root, statuses=[s.value for s in Status], **values)
    return HTMLResponse(html, headers=PAGE_HEADERS)


def ui_router(user_dependency: Any, may_trigger: Any) -> APIRouter:
    """The pages and their JSON. ``user_dependency`` gives the Airflow user of a request; ``may_trigger(user,
    dag_id)`` says whether that user may trigger the DAG (the actions need it)."""
    router = APIRouter(prefix="/ui", include_in_schema=False)

    @router.get("", response_class=HTMLResponse)
    def deployment_list(request: Request) -> HTMLResponse:
        return _page(request, "deployments.html")

    @router.get("/deployments/{user_id}/{project_id}", response_class=HTMLResponse)
    def deployment_detail(request: Request, user_id: str, project_id: str) -> HTMLResponse:
        project = deployments.project_ref(user_id, project_id)
        return _page(request, "deployment.html", user_id=project.user_id, project_id=project.project_id)

    @router.get("/api/deployments/{user_id}/{project_id}")
    def detail(user_id: str, project_id: str) -> dict[str, Any]:
        project = deployments.project_ref(user_id, project_id)
        found = deployment_page(project)
        if found is None:
            raise HTTPException(status_code=404, detail="Service not found")
        return found

    @router.post("/api/deployments/{user_id}/{project_id}/{action}")
    def act(user_id: str, project_id: str, action: str, body: Confirmed, user: Any = Depends(user_dependency)) -> dict:
        project = deployments.project_ref(user_id, project_id)
        dag_id = {"deploy": runs.DEPLOY_DAG, "stop": runs.UNDEPLOY_DAG}.get(action)
        if dag_id is None:
            raise HTTPException(status_code=404, detail=f"no action {action!r}: deploy or stop")
        if not body.confirm:
            raise HTTPException(status_code=400, detail=f"{action} was not confirmed")
        if not may_trigger(user, dag_id):
            raise HTTPException(status_code=403, detail=f"you may not trigger {dag_id}, so you may not {action}")
        if action == "deploy":
            return {"run_id": deployments.start(project, user.get_name()), "status": Status.STARTED.value}
        return {"status": deployments.stop(project, user.get_name()).value}

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(status_code=404, detail="Not Found")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "no-cache"})

    return router


def deployment_page(project: ProjectRef) -> dict[str, Any] | None:
    """What the detail page shows: status and stage, the latest run's stages, the target's resources (secrets
    elided), the deployed yaml, the schedule's next runs and the task logs; None when the project has no record."""
    status = deployments.current_status(project)
    entry = deployment_index().get(project)
    if status is None or entry is None:
        return None
    spec = (entry.deploy.deployed_spec if entry.deploy else None) or None
    secrets = _secret_values(spec)
    return {
        "user_id": project.user_id,
        "project_id": project.project_id,
        **status.to_dict(),
        "target_type": ((spec or {}).get("deploy") or {}).get("type"),
        "stages": _stages(entry.deploy),
        "resources": _elided(_resources(project, spec), secrets),
        "spec_yaml": _spec_yaml(spec, secrets),
        "schedule": _schedule(project, spec),
        "runs": [_run(run) for run in (entry.deploy, entry.undeploy) if run is not None],
    }


def _stages(run: Any) -> dict[str, float]:
    if run is None:
        return {}
    for key in ("return_value", "error", "progress"):  # done, failed, or waiting in the triggerer
        found = run.xcom("deploy", key) or {}
        stages = found.get("stages") or (found.get("waiting") or {}).get("stages") if isinstance(found, dict) else None
        if stages:
            return dict(stages)
    return {}


def _resources(project: ProjectRef, spec: dict[str, Any] | None) -> Any:
    """The target's ``describe`` of the deployed spec: what a deploy creates there (no call to the target)."""
    if not spec:
        return None
    from cloud_deploy_provider.settings import EngineSettings
    from cloud_deploy_provider.spec import DeploymentSpec
    from cloud_deploy_provider.targets import target_class

    try:
        loaded = DeploymentSpec.model_validate(spec)
        return target_class(loaded.deploy.type).describe(project, loaded, EngineSettings.from_env())
    except (CloudDeployError, ValueError) as error:
        return {"not shown": str(error)}


def _spec_yaml(spec: dict[str, Any] | None, secrets: set[str]) -> str | None:
    import yaml

    return yaml.safe_dump(_elided(spec, secrets), sort_keys=False) if spec else None


def _secret_values(spec: dict[str, Any] | None) -> set[str]:
    """The values of every ``env`` in the spec (the deployment's and its jobs'): secrets as far as the page knows."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "env" and isinstance(value, dict):
                    found.update(str(v) for v in value.values() if str(v))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(spec or {})
    return found


def _elided(node: Any, secrets: set[str]) -> Any:
    """``node`` with env values, and values under keys that name a secret, replaced by ``<elided>``."""
    if isinstance(node, dict):
        shown = {}
        for key, value in node.items():
            secret_key = isinstance(key, str) and any(word in key.lower() for word in SECRET_KEYS)
            if key == "env" and isinstance(value, dict):
                shown[key] = {name: ELIDED for name in value}
            elif secret_key and isinstance(value, (str, int, float)):
                shown[key] = ELIDED
            else:
                shown[key] = _elided(value, secrets)
        return shown
    if isinstance(node, list):
        return [_elided(item, secrets) for item in node]
    if isinstance(node, str) and any(secret in node for secret in secrets):
        return ELIDED
    return node


def _schedule(project: ProjectRef, spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The project's scheduled DAGs (redeploy, jobs) with their next run, as Airflow's scheduler planned it."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    from cloud_deploy_provider.scheduled import job_dag_id, redeploy_dag_id

    schedule = (spec or {}).get("schedule") or {}
    wanted = []
    if schedule.get("redeploy"):
        wanted.append({"kind": "redeploy", "name": "redeploy", "cron": schedule["redeploy"],
                       "dag_id": redeploy_dag_id(project)})
    for job in schedule.get("jobs") or []:
        wanted.append({"kind": "job", "name": job["name"], "cron": job["cron"], "target": job.get("target", "docker"),
                       "dag_id": job_dag_id(project, job["name"])})
    if not wanted:
        return []
    with create_session() as session:
        rows = session.query(DagModel.dag_id, DagModel.next_dagrun_create_after, DagModel.is_paused).filter(
            DagModel.dag_id.in_([item["dag_id"] for item in wanted])).all()
    planned = {row.dag_id: row for row in rows}
    for item in wanted:
        row = planned.get(item["dag_id"])
        item["next_run"] = row.next_dagrun_create_after.isoformat() if row and row.next_dagrun_create_after else None
        item["paused"] = bool(row.is_paused) if row else None
    return wanted


def _run(run: Any) -> dict[str, Any]:
    return {"dag_id": run.dag_id, "run_id": run.run_id, "state": run.state, "queued_at": run.queued_at,
            "started_at": run.started_at, "ended_at": run.ended_at, "error": run.error(),
            "tasks": [{"task_id": task_id, "state": state} for task_id, state in sorted(run.task_states.items())]}
