"""Backend.AI manager access for the ``compute-session`` target: the ``backendai`` connection and a signed client.

The connection (``CLOUD_DEPLOY_BACKENDAI_CONN_ID``, default ``backendai_default``; without one,
TANGO's ``CS_*`` variables stand in for it, see ``tango_env``): host is the
manager endpoint (``https://host[:port]``; without a scheme, https except on loopback), login the
access key, password the secret key, and extra ``domain``, ``group`` (the Backend.AI project),
``api_version``, ``scaling_group`` (the default resource group) and ``registry_conn_id`` (a
``docker`` connection to the registry the cluster pulls from).

Every request is signed with the keypair HMAC the manager verifies (Backend.AI's "API
authentication": HMAC-SHA256 over method, path and query, date, host, content type and API
version, with a key derived from the secret, the day and the host). The official SDK
(``backend.ai-client``) is not used because it cannot be installed next to Airflow 3: it pins
``tabulate~=0.8.9`` where Airflow needs ``>=0.9``. The scheme is a few lines on httpx.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import httpx
from airflow.sdk import BaseHook
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from cloud_deploy_provider import http_clients
from cloud_deploy_provider.clients.connections import conn_id_from_env
from cloud_deploy_provider.clients.tango_env import backendai_from_env, connection_or_env
from cloud_deploy_provider.errors import TargetError, UserError
from cloud_deploy_provider.spec.grammar import ModelName

DEFAULT_CONN_ID = "backendai_default"
DEFAULT_API_VERSION = "v8.20240915"
TIMEOUT_SECONDS = 30.0
TUS_CHUNK = 8 * 1024 * 1024
_ENDPOINT_HOST = "[A-Za-z0-9.-]+"


class BackendAIError(TargetError):
    """The manager refused a request, or could not be reached."""


class BackendAISettingsError(UserError):
    """The Backend.AI connection cannot be used."""


class BackendAIExtra(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: ModelName = "default"
    group: ModelName = "default"
    api_version: str = DEFAULT_API_VERSION
    scaling_group: ModelName | None = None
    registry_conn_id: str | None = None

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        if not (value.startswith("v") and value[1:].replace(".", "").isdigit()):
            raise ValueError("must look like v8.20240915")
        return value

    @field_validator("registry_conn_id")
    @classmethod
    def _conn_id(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ValueError("must be a connection id")
        return value


@dataclass(frozen=True)
class BackendAISettings:
    conn_id: str
    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    extra: BackendAIExtra = field(default_factory=BackendAIExtra)

    @classmethod
    def from_connection(cls, conn: Any) -> BackendAISettings:
        conn_id = conn.conn_id
        if not conn.login or not conn.password:
            raise BackendAISettingsError(
                f"connection {conn_id!r}: set login to the Backend.AI access key and password to its secret key"
            )
        try:
            extra = BackendAIExtra.model_validate(conn.extra_dejson or {})
        except ValidationError as invalid:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in invalid.errors())
            raise BackendAISettingsError(f"connection {conn_id!r} extra: {problems}") from None
        return cls(conn_id, _endpoint(conn_id, conn.host or "", conn.port), conn.login, conn.password, extra)


def _endpoint(conn_id: str, host: str, port: int | None) -> str:
    parts = urlsplit(host.strip() if "://" in host else f"//{host.strip()}")
    valid = parts.scheme in ("", "http", "https") and parts.hostname and not parts.path.strip("/")
    if not valid or parts.query or parts.username:
        raise BackendAISettingsError(
            f"connection {conn_id!r}: host must be the manager endpoint, http(s)://host[:port], not {host!r}"
        )
    scheme = parts.scheme or ("http" if _is_loopback(parts.hostname) else "https")
    netloc = parts.netloc if parts.port or not port else f"{parts.netloc}:{port}"
    return f"{scheme}://{netloc}"


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def signature(secret_key: str, method: str, path_and_query: str, date: datetime, host: str, content_type: str,
              api_version: str) -> str:
    """The manager's keypair HMAC; the body is not part of it (an empty body's hash stands in)."""
    to_sign = "\n".join([
        method.upper(), path_and_query, date.isoformat(), f"host:{host}", f"content-type:{content_type.lower()}",
        f"x-backendai-version:{api_version}", hashlib.sha256(b"").hexdigest(),
    ])
    key = hmac.new(secret_key.encode(), date.strftime("%Y%m%d").encode(), hashlib.sha256).digest()
    key = hmac.new(key, host.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class KeypairAuth(httpx.Auth):
    def __init__(self, access_key: str, secret_key: str, api_version: str):
        self._access_key, self._secret_key, self._api_version = access_key, secret_key, api_version

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        now = datetime.now(UTC)
        content_type = request.headers.setdefault("Content-Type", "application/json")
        request.headers["Date"] = now.isoformat()
        request.headers["X-BackendAI-Version"] = self._api_version
        signed = signature(self._secret_key, request.method, request.url.raw_path.decode(), now,
                           request.headers["Host"], content_type, self._api_version)
        request.headers["Authorization"] = (
            f"BackendAI signMethod=HMAC-SHA256, credential={self._access_key}:{signed}"
        )
        yield request


class BackendAIClient:
    """Signed JSON calls to the manager, GraphQL, and tus uploads to the storage proxy."""

    def __init__(self, settings: BackendAISettings, timeout: float = TIMEOUT_SECONDS):
        self.settings = settings
        auth = KeypairAuth(settings.access_key, settings.secret_key, settings.extra.api_version)
        self._http = http_clients.client(base_url=settings.endpoint, auth=auth, timeout=timeout)
        self._storage = http_clients.client(timeout=timeout)

    def close(self) -> None:
        self._http.close()
        self._storage.close()

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None,
             missing_ok: bool = False) -> Any:
        """The answer's JSON; None for 204, or for 404 when ``missing_ok``."""
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as error:
            raise BackendAIError(f"Backend.AI manager at {self.settings.endpoint} is unreachable: {error}",
                                 retryable=True) from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise BackendAIError(self._explain(method, path, response), status=response.status_code)
        return response.json() if response.content and response.status_code != 204 else None

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        answer = self.call("POST", "/admin/gql", json={"query": query, "variables": variables}) or {}
        errors = [e.get("message", str(e)) for e in answer.get("errors") or []]
        data = answer.get("data") or {}
        if errors and not any(data.values()):
            if all("no such" in error.lower() or "not found" in error.lower() for error in errors):
                return {}
            raise BackendAIError(f"Backend.AI GraphQL: {'; '.join(errors)}")
        return data

    def upload(self, folder: str, path: str, content: bytes) -> None:
        """Write one file into a vfolder: request an upload session, then PATCH it to the storage proxy (tus)."""
        session = self.call("POST", f"/folders/{folder}/request-upload", json={"path": path, "size": len(content)})
        headers = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
        for offset in range(0, len(content), TUS_CHUNK):
            try:
                response = self._storage.patch(session["url"], params={"token": session["token"]},
                                               headers={**headers, "Upload-Offset": str(offset)},
                                               content=content[offset:offset + TUS_CHUNK])
            except httpx.HTTPError as error:
                raise BackendAIError(f"upload of {path} to vfolder {folder} failed: {error}", retryable=True) from None
            if response.status_code not in (200, 204):
                raise BackendAIError(f"upload of {path} to vfolder {folder}: storage proxy answered "
                                     f"{response.status_code}", status=response.status_code)

    def _explain(self, method: str, path: str, response: httpx.Response) -> str:
        try:
            problem = response.json()
        except ValueError:
            problem = {"title": response.text[:300]}
        reason = ": ".join(str(part) for part in (problem.get("title"), problem.get("msg")) if part)
        where = f"Backend.AI manager at {self.settings.endpoint}"
        if response.status_code == 401:
            return (f"{where} refused the keypair of connection {self.settings.conn_id!r} (401 {reason}); "
                    "check its access key (login) and secret key (password)")
        return f"{where}: {method} {path} answered {response.status_code}: {reason}"


class BackendAIHook(BaseHook):
    """The ``backendai`` connection: a Backend.AI manager endpoint and keypair."""

    conn_name_attr = "backendai_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "backendai"
    hook_name = "Backend.AI"

    def __init__(self, backendai_conn_id: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.backendai_conn_id = backendai_conn_id or conn_id_from_env(
            "CLOUD_DEPLOY_BACKENDAI_CONN_ID", DEFAULT_CONN_ID, BackendAISettingsError
        )

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema"],
            "relabeling": {"host": "Manager endpoint", "login": "Access key", "password": "Secret key"},
            "placeholders": {
                "host": "https://api.backend.ai",
                "extra": '{"domain": "default", "group": "default", "api_version": "v8.20240915", '
                         '"scaling_group": "default", "registry_conn_id": "backendai_registry"}',
            },
        }

    @cached_property
    def settings(self) -> BackendAISettings:
        from airflow.sdk.log import mask_secret

        settings = BackendAISettings.from_connection(self._connection())
        mask_secret(settings.secret_key)
        return settings

    def _connection(self) -> Any:
        """The Airflow connection; without one, TANGO's ``CS_*`` variables (a connection always wins)."""
        connection = connection_or_env(self.backendai_conn_id, backendai_from_env, BackendAISettingsError)
        if connection is None:
            raise BackendAISettingsError(
                f"no Airflow connection {self.backendai_conn_id!r} (type backendai), and no CS_ENDPOINT, "
                "CS_ACCESS_KEY and CS_SECRET_KEY (TANGO's .env) to stand in for it"
            )
        return connection

    def get_conn(self) -> BackendAIClient:
        return BackendAIClient(self.settings)
