"""A docker ``APIClient`` for the engine in the settings, through the docker provider's hook."""

from __future__ import annotations

from typing import Any

from cloud_deploy_provider.settings import EngineSettings

BUILD_TIMEOUT_SECONDS = 3600


def engine_client(settings: EngineSettings | None = None, timeout: int = BUILD_TIMEOUT_SECONDS) -> Any:
    """Registry logins are not done here: pushes pass credentials per call (``auth_config``)."""
    from airflow.providers.docker.hooks.docker import DockerHook

    settings = settings or EngineSettings.from_env()
    return DockerHook(docker_conn_id=None, base_url=settings.docker_host, timeout=timeout).get_conn()
