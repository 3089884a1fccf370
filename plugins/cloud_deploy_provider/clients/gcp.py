"""Google Cloud access for the ``gcp-cloudrun`` target: credentials, project, region, API clients.

Credentials come from an Airflow ``google_cloud_platform`` connection (``CLOUD_DEPLOY_GCP_CONN_ID``,
default ``google_cloud_default``) read with the google provider's field names: ``key_path``,
``keyfile_dict`` or ``credential_config_file`` in its extra, else Application Default
Credentials. Without such a connection, TANGO's ``GCP_PROJECT_ID``, ``GCP_REGION`` and
``GOOGLE_APPLICATION_CREDENTIALS`` stand in for it (``tango_env``). The google provider itself is
not a dependency: it pulls in ~120 packages (ray, pandas, scikit-learn) for the few lines of
credential loading done here with google-auth.

The clients are the ``google-cloud-run`` and ``google-cloud-artifact-registry`` libraries on their
REST transport. The installation's defaults (region, API endpoints, runtime service account)
live in the connection's extra under ``cloud_deploy``; a project's ``deploy.cloudrun`` overrides them.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from cloud_deploy_provider.clients.connections import Endpoint, cloud_deploy_defaults, conn_id_from_env
from cloud_deploy_provider.clients.tango_env import connection_or_env, gcp_from_env
from cloud_deploy_provider.errors import UserError
from cloud_deploy_provider.spec.grammar import GcpProjectId, GcpRegion, GcpRepositoryId, GcpServiceAccount

DEFAULT_CONN_ID = "google_cloud_default"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_LEGACY_PREFIX = "extra__google_cloud_platform__"
_PROJECT_ADAPTER = TypeAdapter(GcpProjectId)


class GcpSettingsError(UserError):
    """The Google Cloud connection or its ``cloud_deploy`` defaults cannot be used."""


class GcpDefaults(BaseModel):
    """``extra.cloud_deploy`` of the Google Cloud connection."""

    model_config = ConfigDict(extra="forbid")

    region: GcpRegion | None = None
    service_account: GcpServiceAccount | None = None
    artifact_repository: GcpRepositoryId | None = None
    run_endpoint: Endpoint | None = None
    artifact_registry_endpoint: Endpoint | None = None
    docker_registry: Endpoint | None = None


def gcp_conn_id() -> str:
    return conn_id_from_env("CLOUD_DEPLOY_GCP_CONN_ID", DEFAULT_CONN_ID, GcpSettingsError)


class GcpSession:
    """One connection's credentials and clients, each made once."""

    def __init__(self, conn_id: str | None = None):
        self.conn_id = conn_id or gcp_conn_id()

    @cached_property
    def _extra(self) -> dict[str, Any]:
        connection = connection_or_env(self.conn_id, gcp_from_env, GcpSettingsError)
        if connection is None:
            raise GcpSettingsError(
                f"no Airflow connection {self.conn_id!r} (type google_cloud_platform), and none of GCP_PROJECT_ID, "
                "GCP_REGION, GOOGLE_APPLICATION_CREDENTIALS (TANGO's .env) to stand in for it"
            )
        extra = connection.extra_dejson
        return {key.removeprefix(_LEGACY_PREFIX): value for key, value in extra.items()}

    @cached_property
    def _credentials_and_project(self) -> tuple[Any, str | None]:
        import google.auth
        import google.auth.exceptions
        from google.oauth2 import service_account

        key_path, keyfile, config_file = (self._extra.get(k) for k in ("key_path", "keyfile_dict", "credential_config_file"))
        try:
            if keyfile:
                info = json.loads(keyfile) if isinstance(keyfile, str) else keyfile
                credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
                return credentials, info.get("project_id")
            if key_path or config_file:
                return google.auth.load_credentials_from_file(key_path or config_file, scopes=SCOPES)
            return google.auth.default(scopes=SCOPES)
        except (ValueError, google.auth.exceptions.GoogleAuthError) as error:
            raise GcpSettingsError(f"connection {self.conn_id!r}: no usable Google credentials: {error}") from None

    @property
    def credentials(self) -> Any:
        return self._credentials_and_project[0]

    @cached_property
    def defaults(self) -> GcpDefaults:
        return cloud_deploy_defaults(GcpDefaults, self._extra, self.conn_id, GcpSettingsError)

    def project_id(self, asked: str | None = None) -> str:
        """The spec's project, else the connection's ``project``, else the credentials' own."""
        project = asked or self._extra.get("project") or self._credentials_and_project[1]
        if not project:
            raise GcpSettingsError(
                f"no Google Cloud project: set deploy.cloudrun.project_id or 'project' on connection {self.conn_id!r}"
            )
        try:
            return _PROJECT_ADAPTER.validate_python(project)
        except ValidationError:
            raise GcpSettingsError(f"connection {self.conn_id!r}: project {project!r} is not a project id") from None

    def region(self, asked: str | None = None) -> str:
        region = asked or self.defaults.region
        if not region:
            raise GcpSettingsError(
                f"no Google Cloud region: set deploy.cloudrun.region or extra.cloud_deploy.region on {self.conn_id!r}"
            )
        return region

    @cached_property
    def services(self) -> Any:
        from google.cloud import run_v2

        return run_v2.ServicesClient(**self._client_options(self.defaults.run_endpoint))

    @cached_property
    def artifact_registry(self) -> Any:
        from google.cloud import artifactregistry_v1

        return artifactregistry_v1.ArtifactRegistryClient(**self._client_options(self.defaults.artifact_registry_endpoint))

    def _client_options(self, endpoint: str | None) -> dict[str, Any]:
        options = {"credentials": self.credentials, "transport": "rest"}
        if endpoint:
            options["client_options"] = {"api_endpoint": endpoint}
        return options

    def access_token(self) -> str:
        """A fresh OAuth2 access token: the password of ``oauth2accesstoken`` at Artifact Registry."""
        import google.auth.exceptions
        import google.auth.transport.requests

        credentials = self.credentials
        if not credentials.valid:
            try:
                credentials.refresh(google.auth.transport.requests.Request())
            except google.auth.exceptions.GoogleAuthError as error:
                raise GcpSettingsError(f"connection {self.conn_id!r}: cannot get an access token: {error}") from None
        from airflow.sdk.log import mask_secret

        mask_secret(credentials.token)  # keeps the registry password out of task logs
        return credentials.token
