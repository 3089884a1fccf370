"""Mounts the TANGO REST API and the Deployments pages in the Airflow api-server under ``/cloud_deploy``.

Airflow does not authenticate plugin apps by itself (apache/airflow#72655), so the app requires an authenticated
Airflow user on every route; deploying and stopping from the pages also need the right to trigger the
``cloud_deploy`` / ``cloud_undeploy`` DAG. "Deployments" is an external view: the UI shows the app's page in an
iframe at ``/plugin/deployments``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends

from airflow.api_fastapi.core_api.security import get_user, requires_authenticated
from airflow.plugins_manager import AirflowPlugin

from cloud_deploy_provider.api.app import create_app
from cloud_deploy_provider.api.ui import ui_router

URL_PREFIX = "/cloud_deploy"


def may_trigger(user: Any, dag_id: str) -> bool:
    """Whether the Airflow user may trigger runs of ``dag_id``, as Airflow's own trigger endpoint decides."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return get_auth_manager().is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=dag_id), user=user)


class CloudDeployPlugin(AirflowPlugin):
    name = "cloud_deploy"
    fastapi_apps = [
        {
            "app": create_app(dependencies=[Depends(requires_authenticated())],
                              pages=ui_router(user_dependency=get_user, may_trigger=may_trigger)),
            "url_prefix": URL_PREFIX,
            "name": "Cloud Deploy (TANGO API and Deployments pages)",
        }
    ]
    external_views = [
        {
            "name": "Deployments",
            "href": f"{URL_PREFIX.lstrip('/')}/ui",
            "url_route": "deployments",
            "destination": "nav",
            "nav_top_level": True,
            "icon": f"{URL_PREFIX.lstrip('/')}/ui/static/icon.svg",
        },
        {
            "name": "Cloud Deploy API",
            "href": f"{URL_PREFIX.lstrip('/')}/docs",
            "destination": "nav",
            "category": "docs",
        },
    ]
