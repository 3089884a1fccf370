"""Mounts the TANGO REST API in the Airflow api-server under ``/cloud_deploy``.

Airflow does not authenticate plugin apps by itself (apache/airflow#72655), so the app requires
an authenticated Airflow user on every route.
"""

from __future__ import annotations

from fastapi import Depends

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin

from cloud_deploy_provider.api.app import create_app

URL_PREFIX = "/cloud_deploy"


class CloudDeployPlugin(AirflowPlugin):
    name = "cloud_deploy"
    fastapi_apps = [
        {
            "app": create_app(dependencies=[Depends(requires_authenticated())]),
            "url_prefix": URL_PREFIX,
            "name": "Cloud Deploy (TANGO API)",
        }
    ]
    external_views = [
        {
            "name": "Cloud Deploy API",
            "href": f"{URL_PREFIX.lstrip('/')}/docs",
            "destination": "nav",
            "category": "Cloud Deploy",
        }
    ]
