"""A docker ``APIClient`` for the engine in the settings, through the docker provider's hook."""

from __future__ import annotations

from typing import Any

from cloud_deploy_provider.settings import EngineSettings

BUILD_TIMEOUT_SECONDS = 3600


def engine_client(settings: EngineSettings | None = None, timeout: int = BUILD_TIMEOUT_SECONDS) -> Any:
    """Registry logins are not done here: pushes pass credentials per call (``auth_config``)."""
    from airflow.providers.docker.hooks.docker import DockerHook

    from cloud_deploy_provider.engine import EngineUnreachable

    settings = settings or EngineSettings.from_env()
    try:
        return DockerHook(docker_conn_id=None, base_url=settings.docker_host, timeout=timeout).get_conn()
    except Exception as error:  # the hook raises a bare AirflowException when no engine answers
        raise EngineUnreachable(f"the Docker engine at {settings.docker_host} does not answer: {error}") from error
