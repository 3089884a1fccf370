"""The TANGO REST contract on FastAPI: ``GET / | /start | /stop | /status_request`` plus JSON detail.

One app, built twice: mounted in the Airflow api-server under ``/cloud_deploy`` (Airflow
authentication required) and served on its own on port 8890 for TANGO's manager (optional
shared token). Responses keep the original module's shape: text/plain bare words on success,
``{"detail": ...}`` on errors.
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from cloud_deploy_provider.api import deployments
from cloud_deploy_provider.errors import UserError
from cloud_deploy_provider.identity import IDENTIFIER_PATTERN
from cloud_deploy_provider.status import Status

log = logging.getLogger(__name__)
UserId = Query(..., description="TANGO user id", max_length=64)
ProjectId = Query(..., description="TANGO project id", max_length=64)


def gateway_token_dependency(expected: str | None = None):
    """Require ``Authorization: Bearer <token>`` (or ``X-Cloud-Deploy-Token``) when a token is configured."""
    token = expected if expected is not None else os.environ.get("CLOUD_DEPLOY_GATEWAY_TOKEN", "")

    async def check(  # async: a plain def dependency would cost a thread-pool hop on every request
        authorization: str | None = Header(default=None),
        x_cloud_deploy_token: str | None = Header(default=None),
    ) -> None:
        if not token:
            return
        offered = x_cloud_deploy_token or (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(offered.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong gateway token")

    return check


async def _rejected(request: Request, error: UserError) -> JSONResponse:
    """A refusal with its own status (404, 409, 503), else any user error: 400, ``{"detail": ...}``."""
    status = error.status_code if isinstance(error, deployments.Rejected) else 400
    return JSONResponse({"detail": str(error)}, status_code=status)


async def _bug(request: Request, error: Exception) -> JSONResponse:
    """Whatever is not a :class:`UserError` or a refusal with its status is a bug of the server: 500, logged."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse({"detail": f"internal error ({type(error).__name__}); the server's log has the details"},
                        status_code=500)


def create_app(dependencies: Sequence[Any] = (), root_path: str = "", lifespan: Any = None,
               pages: Any = None) -> FastAPI:
    """The app; ``pages`` (an ``APIRouter``, see :mod:`cloud_deploy_provider.api.ui`) adds the Deployments pages."""
    app = FastAPI(
        title="Cloud Deploy",
        description="TANGO cloud deploy API on Apache Airflow. user_id/project_id follow "
        f"`{IDENTIFIER_PATTERN}`.",
        version="0.1.0",
        dependencies=list(dependencies),
        root_path=root_path,
        lifespan=lifespan,
        exception_handlers={UserError: _rejected, Exception: _bug},
    )

    @app.get("/", response_class=Response, summary="Hello")
    def hello() -> Response:
        return Response(content="", status_code=200, media_type="text/plain")

    @app.get("/start", response_class=PlainTextResponse, summary="Validate deployment.yaml and start a deploy run")
    async def start(user_id: str = UserId, project_id: str = ProjectId) -> str:
        project = deployments.project_ref(user_id, project_id)
        await run_in_threadpool(deployments.start, project)
        return "started"

    @app.get("/stop", response_class=PlainTextResponse, summary="Stop the service and remove what it created",
             description="Answers at once: `finished` when nothing is deployed any more, else `stopping` while "
             "the undeploy run removes everything; `/status_request` then says `stopping` until `stopped`.")
    async def stop(user_id: str = UserId, project_id: str = ProjectId) -> str:
        project = deployments.project_ref(user_id, project_id)
        status = await run_in_threadpool(deployments.stop, project)
        return "finished" if status == Status.STOPPED else status.value

    @app.get("/status_request", response_class=PlainTextResponse, summary="The bare status word",
             description="One of " + ", ".join(f"`{word.value}`" for word in Status) + ".")
    async def status_request(user_id: str = UserId, project_id: str = ProjectId) -> str:
        project = deployments.project_ref(user_id, project_id)
        status = deployments.status_in_memory(project)  # the common case: no thread, no database
        if status is None:
            status = await run_in_threadpool(deployments.served_status, project)
        if status is None:
            raise HTTPException(status_code=404, detail="Service not found")
        return status.status.value

    @app.get("/deployments", summary="Every known deployment, filtered and paginated")
    async def deployment_list(
        user_id: str | None = Query(None, max_length=64, description="only this TANGO user's projects"),
        status: Status | None = Query(None, description="only deployments with this status word"),
        target: str | None = Query(None, max_length=64, description="only this target type (deploy.type)"),
        limit: int = Query(100, ge=1, le=1000, description="rows per page"),
        offset: int = Query(0, ge=0, description="rows to skip"),
    ) -> dict[str, Any]:
        return await run_in_threadpool(deployments.listing, user_id, status, target, limit, offset)

    @app.get("/deployments/{user_id}/{project_id}", summary="Status detail: stage, url, image, error, run ids")
    async def deployment_detail(user_id: str, project_id: str) -> dict[str, Any]:
        project = deployments.project_ref(user_id, project_id)
        status = await run_in_threadpool(deployments.current_status, project)
        if status is None:
            raise HTTPException(status_code=404, detail="Service not found")
        return {"user_id": user_id, "project_id": project_id, **status.to_dict()}

    if pages is not None:
        app.include_router(pages)
    return app


@asynccontextmanager
async def _gateway_lifespan(app: FastAPI):
    """Read the deployment index before the first request, and print each project's progress on stdout."""
    from cloud_deploy_provider.api.index import deployment_index
    from cloud_deploy_provider.api.progress import printer
    from cloud_deploy_provider.locks import LOCK_ROOT, file_lock

    index = await run_in_threadpool(deployment_index)
    # Airflow's modules leave a large heap: each full collection walked it (~0.1-0.2 s, every few seconds under
    # TANGO's polling), the gateway's worst latency. What exists after start-up is kept out of collections.
    gc.freeze()
    port = os.environ.get("CLOUD_DEPLOY_GATEWAY_PORT", "8890")
    with file_lock(LOCK_ROOT / "cloud-deploy-gateway" / f"progress-{port}.lock", timeout=0) as printing:
        if printing:  # one worker process of the gateway prints, not each of them
            index.add_listener(printer())
            print("cloud-deploy gateway: each change of a deployment's status is printed here", flush=True)
        yield


def create_gateway_app() -> FastAPI:
    return create_app(dependencies=[Depends(gateway_token_dependency())], lifespan=_gateway_lifespan)
