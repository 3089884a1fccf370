"""Image registries: the OCI distribution client (``oci``), AWS ECR (``ecr``), Google Artifact Registry
(``artifact_registry``), and the one lookup of the installation's registry.

The installation's registry is the docker-type connection named by ``CLOUD_DEPLOY_REGISTRY_CONN_ID``
(or an operator's ``registry_conn_id``); targets that run images from a registry of their own
(ECR, Artifact Registry) say so through ``Target.image_registry``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloud_deploy_provider.registries.oci import Registry


def installation_registry_conn_id(conn_id: str | None = None) -> str | None:
    """``conn_id`` when given, else ``CLOUD_DEPLOY_REGISTRY_CONN_ID``; None: the installation has no registry."""
    from cloud_deploy_provider.settings import EngineSettings

    return conn_id or EngineSettings.from_env().registry_conn_id


def given_or_installation_registry(registry: Registry | None, conn_id: str | None = None) -> Registry | None:
    """``registry`` when one is given (a test's, a caller's), else the installation's."""
    return registry if registry is not None else installation_registry(conn_id)


def installation_registry(conn_id: str | None = None) -> Registry | None:
    """The installation's registry, read from its Airflow connection; None when none is configured."""
    from airflow.sdk import BaseHook

    from cloud_deploy_provider.registries.oci import Registry

    conn_id = installation_registry_conn_id(conn_id)
    return Registry.from_connection(BaseHook.get_connection(conn_id)) if conn_id else None
