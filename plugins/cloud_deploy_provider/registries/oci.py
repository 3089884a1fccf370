"""OCI registries: where an image goes, and whether a registry already has it.

The engine pushes; this client only asks the registry (manifest HEAD) so a push can be
confirmed and an unchanged image skipped. It speaks the distribution API's basic and bearer
token auth. Written on httpx because docker-py has no registry-side client.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from cloud_deploy_provider import http_clients
from cloud_deploy_provider.errors import TargetError
from cloud_deploy_provider.identity import ProjectRef

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(TargetError):
    """The registry refused or failed a request."""


@dataclass(frozen=True)
class Registry:
    """A registry endpoint and its credentials (from an Airflow ``docker`` connection).

    ``namespace`` is a path every repository lives under, e.g. ``project/repository`` at
    Artifact Registry.
    """

    host: str
    scheme: str = "https"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    namespace: str = ""

    @classmethod
    def from_connection(cls, conn) -> Registry:
        """Build from a connection whose host is ``registry[:port]`` or ``http(s)://registry[:port]``."""
        raw = (conn.host or "").strip()
        if not raw:
            raise RegistryError(f"connection {conn.conn_id!r} has no host (the registry address)")
        parts = urlsplit(raw if "://" in raw else f"//{raw}")
        host = parts.hostname or ""
        port = conn.port or parts.port
        address = f"{host}:{port}" if port else host
        scheme = parts.scheme or ("http" if _is_loopback(host) else "https")
        extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
        if str(extra.get("insecure", "")).lower() in ("1", "true", "yes"):
            scheme = "http"
        return cls(host=address, scheme=scheme, username=conn.login or None, password=conn.password or None)

    @classmethod
    def at(cls, endpoint: str, username: str | None = None, password: str | None = None, namespace: str = "") -> Registry:
        """``host[:port]`` or ``http(s)://host[:port]``; without a scheme, plain HTTP only on loopback."""
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        scheme = parts.scheme or ("http" if _is_loopback(parts.hostname or "") else "https")
        return cls(parts.netloc, scheme, username, password, namespace)

    def auth_config(self) -> dict | None:
        if not self.username:
            return None
        return {"username": self.username, "password": self.password or "", "serveraddress": self.host}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_reference(reference: str) -> tuple[str | None, str, str | None]:
    """``host:5000/a/b:tag`` -> ("host:5000", "a/b", "tag"); the host only when it looks like one."""
    name = reference.partition("@")[0]
    host = None
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, name = first, rest
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return host, name, tag


def repository_for(image_uri: str | None, project: ProjectRef, registry: Registry | None) -> str:
    """The repository an image is tagged in: the spec's ``image_uri`` re-homed onto the registry.

    Without ``image_uri`` it is ``cloud-deploy/<user>/<project>``, lowercased as repositories must be.
    """
    host = split_reference(image_uri)[0] if image_uri else None
    path = repository_path(image_uri, project)
    if registry:
        return "/".join(part for part in (registry.host, registry.namespace, path) if part)
    return f"{host}/{path}" if host else path


def repository_path(image_uri: str | None, project: ProjectRef) -> str:
    """The repository's path without its registry host."""
    if image_uri:
        return split_reference(image_uri)[1]
    return re.sub(r"[^a-z0-9._/-]", "-", f"cloud-deploy/{project.user_id}/{project.project_id}".lower())


class RegistryClient:
    def __init__(self, registry: Registry, timeout: float = 30.0):
        self.registry = registry
        self._http = http_clients.client(timeout=timeout)
        self._authorization: dict[str, str] = {}

    def close(self) -> None:
        self._http.close()

    def manifest_digest(self, path: str, reference: str) -> str | None:
        """The digest of ``path:reference`` in the registry, or None when it is not there."""
        url = f"{self.registry.scheme}://{self.registry.host}/v2/{path}/manifests/{reference}"
        response = self._request("HEAD", url, scope=f"repository:{path}:pull")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(f"HEAD {url}: {response.status_code} {response.reason_phrase}",
                                status=response.status_code)
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        body = self._request("GET", url, scope=f"repository:{path}:pull")
        return "sha256:" + hashlib.sha256(body.content).hexdigest()

    def _request(self, method: str, url: str, scope: str) -> httpx.Response:
        headers = {"Accept": MANIFEST_TYPES, **self._authorization}
        try:
            response = self._http.request(method, url, headers=headers)
            if response.status_code == 401:
                self._authorization = self._authenticate(response.headers.get("WWW-Authenticate", ""), scope)
                response = self._http.request(method, url, headers={"Accept": MANIFEST_TYPES, **self._authorization})
        except httpx.HTTPError as error:
            raise RegistryError(f"{method} {url}: {error}", retryable=True) from None
        if response.status_code == 401:
            raise RegistryError(f"{method} {url}: 401 unauthorized (check the registry connection's login)")
        return response

    def _authenticate(self, challenge: str, scope: str) -> dict[str, str]:
        scheme = challenge.split(" ", 1)[0].lower()
        basic = (self.registry.username or "", self.registry.password or "")
        if scheme == "basic":
            token = base64.b64encode(":".join(basic).encode()).decode()
            return {"Authorization": f"Basic {token}"}
        if scheme != "bearer":
            raise RegistryError(f"registry {self.registry.host} asks for unsupported auth {challenge!r}")
        params = dict(_AUTH_PARAM.findall(challenge))
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        auth = httpx.BasicAuth(*basic) if self.registry.username else None
        try:
            answer = self._http.get(params["realm"], params=query, auth=auth)
        except (KeyError, httpx.HTTPError) as error:
            raise RegistryError(f"token request to {self.registry.host} failed: {error}",
                                retryable=isinstance(error, httpx.HTTPError)) from None
        if answer.status_code != 200:
            raise RegistryError(f"token request to {params['realm']}: {answer.status_code}", status=answer.status_code)
        token = answer.json().get("token") or answer.json().get("access_token")
        return {"Authorization": f"Bearer {token}"}
