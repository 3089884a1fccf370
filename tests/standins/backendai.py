"""A local stand-in for a Backend.AI manager (API v7-v9, shapes of manager 24.09): keypair auth, model
folders with a tus upload on a storage-proxy port, model services that run as real containers.

Two HTTP servers on 127.0.0.1:

* the manager (``endpoint``): ``GET /`` (unauthenticated), every other call signed with the keypair HMAC
  (``Authorization: BackendAI signMethod=HMAC-SHA256, credential=<access key>:<signature>``, also the old
  ``Sorna`` prefix) over method, raw path with query, ``Date``, ``Host`` as received, ``Content-Type`` and
  ``X-BackendAI-Version``; errors are ``application/problem+json`` like the manager's.

  - ``POST /folders``, ``GET /folders``, ``GET /folders/{name|id}``, ``POST /folders/{name|id}/mkdir``,
    ``POST /folders/{name|id}/request-upload`` -> ``{"token", "url"}`` on the storage proxy.
  - deleting as 24.09 does: ``DELETE /folders`` with ``{"vfolder_id": ...}`` (aliases ``vfolderId``, ``id``)
    or the older ``DELETE /folders/{name}`` move the folder to the trash (status ``delete-pending``);
    ``POST /folders/purge`` (also ``DELETE``) with ``{"vfolder_id"}`` removes a trashed folder for good,
    ``POST /folders/restore-from-trash`` brings it back. All answer 204.
  - ``POST /services``, ``GET /services[?name=]``, ``GET /services/{id}``, ``DELETE /services/{id}``,
    ``POST /services/{id}/scale`` ``{"to": n}``, ``POST /services/{id}/token`` ``{"duration": "1h"}`` or
    ``{"valid_until": <epoch>}`` -> ``{"token"}``.
  - ``POST /admin/gql`` (and ``/admin/graphql``): GraphQL for the one query a client needs for the
    lifecycle, ``endpoint(endpoint_id: ...) { ... }``. This is NOT a GraphQL engine: a small regex-and-brace
    parser finds that field, its argument (a ``$variable`` or a string literal) and its selection set
    (nested selections, no fragments, no aliases, field arguments ignored); unknown fields are GraphQL
    errors. Like graphene's ``JSONString``, ``routings.error_data`` and ``resource_slots`` are JSON strings.

* the storage proxy (``storage_endpoint``): tus 1.0.0 without creation, ``OPTIONS``/``HEAD``/``PATCH
  /upload?token=...``; the file appears at its path inside the folder once the offset reaches the size.

Each replica (route) is a Docker container labelled ``io.cloud-deploy.standin=<instance id>`` with the
model folder bind-mounted read-only; the service port is published on 127.0.0.1 only. ``custom`` reads
``model-definition.yaml`` from the folder (start_command, shell, port, pre_start_actions of type
``run_command``, health_check); ``vllm``/``nim``/``cmd`` run the image's CMD on port 8000 and probe
``/health``, ``/v1/health/ready`` or TCP. Each service gets a reverse proxy (its ``service_endpoint``) that
spreads requests over HEALTHY routes and, unless ``open_to_public``, wants ``Authorization: BackendAI
<token>`` (missing: 401, unknown or expired: 403).

Deviations from the real manager, chosen for tests: no retries of failed routes (a route whose container
exits or never passes its health check is UNHEALTHY at once, with ``error_data`` holding the exit code and
the last log lines, and the endpoint is UNHEALTHY when no route is otherwise); without a health_check a
route is HEALTHY once its port accepts connections; ``health_check.interval`` defaults to 1 s (not 10 s);
resource requests are validated against the scaling group (known slot names, per-replica capacity) and
recorded per route, not enforced on the containers nor summed across services; ``GET /services/{id}``
is 404 once the service is DESTROYED (GraphQL still answers DESTROYED); ``mkdir`` answers 201
``{"results": [...]}``; sessions, the app-proxy's own API, image registries/aliases and
``extra_mounts`` are not modelled.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import shlex
import shutil
import string
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path, PurePosixPath
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import yaml
from docker.errors import APIError
from docker.errors import NotFound as DockerNotFound

from tests.standins.common import LoopbackServer, RecordingStandIn, ServiceProxy, ensure_image, remove_container, tcp_ok

LOG = logging.getLogger(__name__)
LABEL = "io.cloud-deploy.standin"
MANAGER_VERSION = "24.09.0"
API_VERSION = "v8.20240915"
SUPPORTED_VERSIONS = {"v7.20230615", "v8.20240315", "v8.20240915", "v9.20250722"}
PROBS = "https://api.backend.ai/probs/"
DEFAULT_SCALING_GROUPS = {"default": {"cpu": 16, "mem": "64g", "cuda.device": 2, "cuda.shares": 2,
                                      "rocm.device": 1, "atom.device": 2, "atom-max.device": 2,
                                      "atom-plus.device": 2, "tpu.device": 1}}
RUNTIME_VARIANTS = {"custom": None, "vllm": "/health", "nim": "/v1/health/ready", "cmd": None}
SERVICE_NAME = re.compile(r"^\w[\w-]*\w$")
FOLDER_NAME = re.compile(r"^[\w.-]{1,64}$")
MAX_SKEW = timedelta(minutes=15)
ENDPOINT_FIELDS = {"endpoint_id", "name", "status", "url", "desired_session_count", "image", "runtime_variant",
                   "open_to_public", "model", "model_definition_path", "model_mount_destination", "domain",
                   "project", "resource_group", "resource_slots", "resource_opts", "environ", "created_at",
                   "destroyed_at", "lifecycle_stage", "retries", "routings", "errors", "cluster_size",
                   "cluster_mode", "created_user", "session_owner"}
ROUTING_FIELDS = {"routing_id", "endpoint", "session", "status", "traffic_ratio", "created_at", "error_data"}
ERROR_ITEM_FIELDS = {"src", "name", "repr"}
SCHEMA = {"Endpoint": dict.fromkeys(ENDPOINT_FIELDS) | {"routings": "Routing", "errors": "InferenceSessionError"},
          "Routing": dict.fromkeys(ROUTING_FIELDS),
          "InferenceSessionError": {"session_id": None, "errors": "InferenceSessionErrorInfo"},
          "InferenceSessionErrorInfo": dict.fromkeys(ERROR_ITEM_FIELDS)}


class Reply(Exception):
    """A problem+json answer (or another non-200 answer), raised from anywhere in a handler."""

    def __init__(self, status: int, body: dict | None, content_type: str = "application/problem+json"):
        super().__init__(body)
        self.status, self.body, self.content_type = status, body, content_type


def problem(status: int, kind: str, title: str, msg: str | None = None) -> Reply:
    return Reply(status, {"type": PROBS + kind, "title": title, **({"msg": msg} if msg else {})})


def invalid(msg: str) -> Reply:
    return problem(400, "invalid-api-params", "Missing or invalid API parameters.", msg)


def not_found() -> Reply:
    return problem(404, "object-not-found", "No such object.")


def folder_not_found(msg: str | None = None) -> Reply:
    return problem(404, "vfolder-not-found", "Virtual folder not found.", msg)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def binary_size(value) -> int:
    """'16g', '512m', '1.5G', '2GiB', 1024 -> bytes (binary units, like Backend.AI's BinarySize)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(?:i?b)?\s*", str(value), re.IGNORECASE)
    if not match:
        raise ValueError(f"invalid binary size: {value!r}")
    return int(float(match[1]) * (1 << (10 * " kmgtpe".index(match[2].lower() or " "))))


def _amount(slot: str, value) -> float:
    if slot == "mem":
        return float(binary_size(value))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid amount for {slot}: {value!r}") from None


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text))
    if not match:
        raise invalid(f"Invalid duration: {text!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
    return timedelta(seconds=float(match[1]) * unit)


# signing


def signature(secret_key: str, method: str, rel_url: str, date_iso: str, host: str, content_type: str,
              api_version: str) -> str:
    """The keypair HMAC the manager verifies (the body is not hashed since v4.20181215)."""
    body_hash = hashlib.sha256(b"").hexdigest()
    to_sign = (f"{method.upper()}\n{rel_url}\n{date_iso}\nhost:{host}\ncontent-type:{content_type.lower()}\n"
               f"x-backendai-version:{api_version}\n{body_hash}")
    day = _parse_date(date_iso).strftime("%Y%m%d")
    key = hmac.new(secret_key.encode(), day.encode(), hashlib.sha256).digest()
    key = hmac.new(key, host.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _parse_date(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


AUTH = re.compile(r"^(?:BackendAI|Sorna)\s+signMethod=HMAC-(?P<alg>\w+)\s*,\s*credential=(?P<ak>[^:\s]+):(?P<sig>\w+)$")


# state


@dataclass
class _Folder:
    id: str
    name: str
    owner: str
    path: Path
    usage_mode: str
    permission: str
    host: str
    cloneable: bool
    created_at: str = field(default_factory=_now)
    status: str = "ready"

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "host": self.host, "quota_scope_id": f"user:{self.owner}",
                "usage_mode": self.usage_mode, "created_at": self.created_at, "permission": self.permission,
                "max_size": 0, "max_files": 0, "ownership_type": "user", "user": self.owner, "group": None,
                "creator": self.owner, "is_owner": True, "type": "user", "cloneable": self.cloneable,
                "status": self.status}


@dataclass
class _Upload:
    folder: _Folder
    path: str
    size: int
    partial: Path
    offset: int = 0


@dataclass
class _Route:
    route_id: str
    session_id: str
    resources: dict
    created_at: str = field(default_factory=_now)
    status: str = "PROVISIONING"
    container: str | None = None
    host_port: int | None = None
    error_data: dict = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def to_json(self) -> dict:
        return {"route_id": self.route_id, "session_id": self.session_id, "status": self.status,
                "resources": copy.deepcopy(self.resources), "container": self.container,
                "error_data": copy.deepcopy(self.error_data), "created_at": self.created_at}


@dataclass
class _Endpoint:
    id: str
    name: str
    owner: str
    body: dict
    folder: _Folder
    variant: str
    resources: dict
    proxy: ServiceProxy
    desired: int
    definition: dict | None
    created_at: str = field(default_factory=_now)
    lifecycle: str = "created"  # created -> destroying -> destroyed
    destroyed_at: str | None = None
    url: str | None = None
    routes: list[_Route] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)

    @property
    def live_routes(self) -> list[_Route]:
        return [r for r in self.routes if r.status != "TERMINATING"]

    @property
    def status(self) -> str:
        if self.lifecycle == "destroying":
            return "DESTROYING"
        if self.lifecycle == "destroyed":
            return "DESTROYED"
        statuses = [r.status for r in self.live_routes]
        if not statuses:
            return "READY"
        if all(s == "HEALTHY" for s in statuses):
            return "HEALTHY"
        if "PROVISIONING" in statuses:
            return "PROVISIONING"
        if all(s == "UNHEALTHY" for s in statuses):
            return "UNHEALTHY"
        return "DEGRADED"

    @property
    def public(self) -> bool:
        return bool(self.body.get("open_to_public"))

    @property
    def config(self) -> dict:
        return self.body.get("config") or {}


@dataclass
class _Call:
    method: str
    path: str
    query: dict[str, str]
    body: dict
    access_key: str
    args: dict[str, str]


class BackendAIStandIn(RecordingStandIn):
    """A Backend.AI manager + storage proxy + app proxy on 127.0.0.1.

    ``docker_client`` is a ``docker.APIClient``; ``registry_auth`` the auth_config used to pull images whose
    reference names a registry host (bare names run from the local engine; with ``prefer_local_images``
    any image present locally runs without a pull). ``scaling_groups`` maps a scaling group name to its
    slot capacities (``mem`` as a binary size).
    """

    def __init__(self, docker_client, registry_auth: dict | None = None, access_key: str | None = None,
                 secret_key: str | None = None, domain: str = "default", group: str = "default",
                 scaling_groups: dict[str, dict] | None = None, prefer_local_images: bool = False):
        self.docker = docker_client
        self.registry_auth = registry_auth
        self.domain, self.group = domain, group
        self.scaling_groups = copy.deepcopy(scaling_groups or DEFAULT_SCALING_GROUPS)
        self.prefer_local_images = prefer_local_images
        self.instance_id = uuid.uuid4().hex
        self.access_key = access_key or _new_access_key()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self._keypairs = {self.access_key: self.secret_key}
        self._lock = threading.RLock()
        self._requests: list[tuple[str, str, dict | None]] = []
        self._folders: dict[str, _Folder] = {}
        self._uploads: dict[str, _Upload] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._stopping = threading.Event()
        self._server: LoopbackServer | None = None
        self._storage: LoopbackServer | None = None
        self._tmp: Path | None = None
        self.endpoint = ""
        self.storage_endpoint = ""

    # lifecycle

    def start(self) -> Self:
        self._tmp = Path(tempfile.mkdtemp(prefix="backendai-standin-"))
        (self._tmp / "uploads").mkdir()
        self._server = LoopbackServer(self, _ManagerHandler, "backendai-manager")
        self._storage = LoopbackServer(self, _StorageHandler, "backendai-storage")
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.storage_endpoint = f"http://127.0.0.1:{self._storage.server_address[1]}"
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            endpoints = list(self._endpoints.values())
        for ep in endpoints:
            self._destroy(ep)
        for server in (self._server, self._storage):
            if server:
                server.close()
        for container in self.docker.containers(all=True, filters={"label": f"{LABEL}={self.instance_id}"}):
            remove_container(self.docker, container["Id"])
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # inspection

    def add_keypair(self) -> tuple[str, str]:
        access_key, secret_key = _new_access_key(), secrets.token_urlsafe(30)
        with self._lock:
            self._keypairs[access_key] = secret_key
        return access_key, secret_key

    def service(self, endpoint_id: str) -> dict | None:
        """The stored endpoint: request body, status, url, routes (each with its resources and error_data)."""
        with self._lock:
            ep = self._endpoints.get(str(endpoint_id).replace("-", ""))
            if ep is None:
                return None
            return {"endpoint_id": ep.id, "name": ep.name, "owner": ep.owner, "status": ep.status,
                    "lifecycle": ep.lifecycle, "url": ep.url, "desired_session_count": ep.desired,
                    "body": copy.deepcopy(ep.body), "resources": copy.deepcopy(ep.resources),
                    "model_id": ep.folder.id, "runtime_variant": ep.variant, "open_to_public": ep.public,
                    "routes": [r.to_json() for r in ep.routes]}

    def folder_files(self, name: str) -> dict[str, bytes]:
        with self._lock:
            folder = next((f for f in self._folders.values() if name in (f.name, f.id)), None)
        if folder is None:
            raise KeyError(name)
        return {p.relative_to(folder.path).as_posix(): p.read_bytes()
                for p in sorted(folder.path.rglob("*")) if p.is_file()}

    # dispatch and auth

    def _dispatch(self, method: str, target: str, headers, raw: bytes) -> tuple[int, dict | list | None, str]:
        split = urlsplit(target)
        body = None
        try:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._record(method, split.path, None)
                raise invalid("Malformed body: not JSON.") from None
            self._record(method, split.path, body)
            version = headers.get("X-BackendAI-Version")
            if version is not None and version not in SUPPORTED_VERSIONS:
                raise problem(400, "generic-bad-request", "Bad request.", "Unsupported API version.")
            if method == "GET" and split.path in ("", "/"):
                return 200, {"version": API_VERSION, "manager": MANAGER_VERSION}, "application/json"
            access_key = self._authenticate(method, target, headers)
            handler, args = self._route(method, split.path)
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            if body is not None and not isinstance(body, dict):
                raise invalid("The request body must be a JSON object.")
            status, answer = handler(_Call(method, split.path, query, body or {}, access_key, args))
            return status, answer, "application/json"
        except Reply as reply:
            return reply.status, reply.body, reply.content_type
        except Exception as error:  # a stand-in bug must reach the client as a 500
            LOG.exception("backend.ai stand-in failed on %s %s", method, target)
            return 500, {"type": PROBS + "internal-server-error", "title": "Internal server error.",
                         "msg": f"BackendAIStandIn error: {error!r}"}, "application/problem+json"

    def _authenticate(self, method: str, target: str, headers) -> str:
        bad = problem(400, "invalid-auth-params", "Missing or invalid authorization parameters.")
        match = AUTH.match((headers.get("Authorization") or "").strip())
        date, version = headers.get("Date") or headers.get("X-BackendAI-Date"), headers.get("X-BackendAI-Version")
        if not match or not date or not version or match["alg"].upper() != "SHA256":
            raise bad
        try:
            when = _parse_date(date)
        except ValueError:
            raise bad from None
        if abs(datetime.now(UTC) - when) > MAX_SKEW:
            raise problem(400, "invalid-auth-params", "Missing or invalid authorization parameters.",
                          "Date/time sync error")
        with self._lock:
            secret = self._keypairs.get(match["ak"])
        if secret is None:
            raise problem(401, "auth-failed", "Credential/signature mismatch.", "Access key not found")
        content_type = headers.get("Content-Type") or "application/octet-stream"
        expected = signature(secret, method, target, date, headers.get("Host", ""), content_type, version)
        if not hmac.compare_digest(expected, match["sig"]):
            raise problem(401, "auth-failed", "Credential/signature mismatch.", "HMAC signature mismatch")
        return match["ak"]

    def _route(self, method: str, path: str):
        for verb, pattern, name in ROUTES:
            match = pattern.fullmatch(path)
            if match and verb == method:
                return getattr(self, name), {k: unquote(v) for k, v in match.groupdict().items()}
        raise problem(404, "generic-not-found", "Unknown URL path.", f"{method} {path}")

    # folders

    def _folder(self, call: _Call, ref: str, *, trashed: bool = False) -> _Folder:
        folder = next((f for f in self._folders.values() if f.owner == call.access_key and ref in (f.name, f.id)
                       and (trashed or f.status == "ready")), None)
        if folder is None:
            raise folder_not_found(f"VFolder not found: {ref}")
        return folder

    def _create_folder(self, call: _Call):
        name = call.body.get("name")
        if not isinstance(name, str) or not FOLDER_NAME.fullmatch(name) or name.startswith(".") or name in ("_",):
            raise invalid(f"{name!r} is not a valid vfolder name (letters, digits, '_', '-', '.'; at most 64).")
        usage_mode = call.body.get("usage_mode", "general")
        permission = call.body.get("permission", "rw")
        if usage_mode not in ("general", "model", "data"):
            raise invalid(f"Invalid usage_mode: {usage_mode!r}")
        if permission not in ("ro", "rw", "wd"):
            raise invalid(f"Invalid permission: {permission!r}")
        with self._lock:
            if any(f.name == name and f.owner == call.access_key for f in self._folders.values()):
                raise problem(400, "vfolder-already-exists",
                              "The virtual folder already exists with the same name.")
            folder_id = uuid.uuid4().hex
            path = self._tmp / "vfolders" / folder_id
            path.mkdir(parents=True)
            path.chmod(0o755)
            folder = _Folder(folder_id, name, call.access_key, path, usage_mode, permission,
                             call.body.get("host") or "local:volume1", bool(call.body.get("cloneable")))
            self._folders[folder_id] = folder
            return 201, folder.to_json()

    def _list_folders(self, call: _Call):
        with self._lock:
            return 200, [f.to_json() for f in self._folders.values() if f.owner == call.access_key]

    def _get_folder(self, call: _Call):
        with self._lock:
            return 200, self._folder(call, call.args["name"]).to_json()

    def _delete_folder(self, call: _Call):
        ref = call.args.get("name") or next((str(call.body[k]) for k in ("vfolder_id", "vfolderId", "id")
                                             if call.body.get(k)), None)
        if not ref:
            raise invalid("vfolder_id is required.")
        ref = ref.replace("-", "") if re.fullmatch(r"[0-9a-fA-F-]{36}", ref) else ref
        with self._lock:
            folder = self._folder(call, ref)
            users = [ep.name for ep in self._endpoints.values()
                     if ep.folder is folder and ep.lifecycle != "destroyed"]
            if users:
                raise problem(400, "model-service-dependency-not-cleared",
                              "Cannot delete model VFolders bound to alive model services.",
                              f"in use by: {', '.join(users)}")
            folder.status = "delete-pending"
        return 204, None

    def _trashed(self, call: _Call) -> _Folder:
        ref = next((str(call.body[k]) for k in ("vfolder_id", "vfolderId", "id") if call.body.get(k)), None)
        if not ref:
            raise invalid("vfolder_id is required.")
        folder = self._folder(call, ref.replace("-", ""), trashed=True)
        if folder.status != "delete-pending":
            raise problem(400, "vfolder-invalid-status", "Invalid vfolder status.",
                          "The vfolder must be in the trash first.")
        return folder

    def _purge_folder(self, call: _Call):
        with self._lock:
            folder = self._trashed(call)
            del self._folders[folder.id]
        shutil.rmtree(folder.path, ignore_errors=True)
        return 204, None

    def _restore_folder(self, call: _Call):
        with self._lock:
            self._trashed(call).status = "ready"
        return 204, None

    def _inside(self, folder: _Folder, relpath: str) -> Path:
        parts = PurePosixPath(str(relpath)).parts
        if not parts or PurePosixPath(str(relpath)).is_absolute() or ".." in parts:
            raise invalid(f"Invalid path: {relpath!r}")
        return folder.path.joinpath(*parts)

    def _mkdir(self, call: _Call):
        paths = call.body.get("path")
        paths = paths if isinstance(paths, list) else [paths]
        results = []
        with self._lock:
            folder = self._folder(call, call.args["name"])
            for relpath in paths:
                target = self._inside(folder, relpath)
                try:
                    target.mkdir(parents=bool(call.body.get("parents", True)),
                                 exist_ok=bool(call.body.get("exist_ok", False)))
                    results.append({"item": relpath, "msg": None, "success": True})
                except OSError as error:
                    raise invalid(f"mkdir {relpath!r} failed: {error.strerror}") from None
        return 201, {"results": results}

    def _request_upload(self, call: _Call):
        relpath, size = call.body.get("path"), call.body.get("size")
        if not isinstance(size, int) or size < 0:
            raise invalid("size must be a non-negative integer.")
        with self._lock:
            folder = self._folder(call, call.args["name"])
            if folder.permission == "ro":
                raise problem(403, "vfolder-permission-denied", "Permission denied for the virtual folder.")
            self._inside(folder, relpath)
            token = secrets.token_urlsafe(32)
            partial = self._tmp / "uploads" / token
            partial.write_bytes(b"")
            self._uploads[token] = _Upload(folder, str(relpath), size, partial)
            if size == 0:
                self._finish_upload(token)
        return 200, {"token": token, "url": f"{self.storage_endpoint}/upload"}

    def _finish_upload(self, token: str) -> None:
        upload = self._uploads[token]
        target = self._inside(upload.folder, upload.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(upload.partial, target)
        target.chmod(0o644)

    def _tus(self, method: str, target: str, headers, body: bytes) -> tuple[int, dict[str, str]]:
        """The storage proxy's upload handler: (status, headers)."""
        split = urlsplit(target)
        self._record(method, split.path, None)
        tus = {"Tus-Resumable": "1.0.0"}
        if split.path != "/upload":
            return 404, tus
        if method == "OPTIONS":
            return 204, {**tus, "Tus-Version": "1.0.0", "Tus-Extension": "", "Tus-Max-Size": str(1 << 40)}
        token = (parse_qs(split.query).get("token") or [""])[-1]
        with self._lock:
            upload = self._uploads.get(token)
            if upload is None:
                return 401, tus
            if method == "HEAD":
                return 200, {**tus, "Upload-Offset": str(upload.offset), "Upload-Length": str(upload.size),
                             "Cache-Control": "no-store"}
            if method != "PATCH":
                return 405, tus
            if headers.get("Content-Type", "").split(";")[0].strip() != "application/offset+octet-stream":
                return 415, tus
            if str(headers.get("Upload-Offset")) != str(upload.offset):
                return 409, {**tus, "Upload-Offset": str(upload.offset)}
            if upload.offset >= upload.size or upload.offset + len(body) > upload.size:
                return 413 if body else 204, {**tus, "Upload-Offset": str(upload.offset)}
            with upload.partial.open("ab") as out:
                out.write(body)
            upload.offset += len(body)
            if upload.offset == upload.size:
                self._finish_upload(token)
            return 204, {**tus, "Upload-Offset": str(upload.offset)}

    # services

    def _live(self, call: _Call, endpoint_id: str) -> _Endpoint:
        ep = self._endpoints.get(endpoint_id.replace("-", "") if len(endpoint_id) == 36 else endpoint_id)
        if ep is None:
            with contextlib.suppress(ValueError):
                ep = self._endpoints.get(str(uuid.UUID(endpoint_id)))
        if ep is None or ep.owner != call.access_key or ep.lifecycle == "destroyed":
            raise not_found()
        return ep

    def _create_service(self, call: _Call):
        body = call.body
        name = body.get("name") or body.get("service_name") or body.get("clientSessionToken")
        if not isinstance(name, str) or len(name) < 4 or len(name) > 64 or not SERVICE_NAME.fullmatch(name):
            raise invalid(f"Invalid service name {name!r}: 4 to 64 characters, letters, digits, '_' and '-', "
                          "starting and ending with a letter or digit.")
        desired = body.get("desired_session_count", body.get("desiredSessionCount", 1))
        if not isinstance(desired, int) or isinstance(desired, bool) or not 0 <= desired <= 10:
            raise invalid("desired_session_count must be an integer between 0 and 10.")
        image = body.get("image")
        if not isinstance(image, str) or not image:
            raise invalid("image is required.")
        config = body.get("config")
        if not isinstance(config, dict):
            raise invalid("config is required.")
        variant = body.get("runtime_variant", "custom")
        if variant not in RUNTIME_VARIANTS:
            raise invalid(f"Unknown runtime_variant {variant!r}: one of {', '.join(RUNTIME_VARIANTS)}.")
        if body.get("domain", self.domain) != self.domain:
            raise invalid(f"Unknown domain {body.get('domain')!r}.")
        if body.get("group", self.group) != self.group:
            raise invalid(f"Unknown project (group) {body.get('group')!r}.")
        if int(body.get("cluster_size", 1)) != 1:
            raise invalid("This manager serves single-node, single-container sessions only (cluster_size 1).")
        scaling_group = config.get("scaling_group", "default")
        if scaling_group not in self.scaling_groups:
            raise invalid(f"Unknown or not allowed scaling group: {scaling_group!r}.")
        resources = self._check_resources(scaling_group, config.get("resources") or {})
        if not isinstance(config.get("environ") or {}, dict):
            raise invalid("config.environ must be a mapping.")
        with self._lock:
            if any(ep.name == name and ep.lifecycle != "destroyed" for ep in self._endpoints.values()):
                raise invalid("Cannot create multiple services with same name")
            model = str(config.get("model") or "")
            folder = next((f for f in self._folders.values() if f.owner == call.access_key and f.status == "ready"
                           and model in (f.name, f.id, _dashed(f.id))), None)
            if folder is None:
                raise invalid(f"Model VFolder not found: {model!r}")
            if folder.usage_mode != "model":
                raise invalid(f"VFolder {folder.name!r} is not a model type VFolder (usage_mode "
                              f"{folder.usage_mode!r}).")
        definition = self._model_definition(folder, config) if variant == "custom" else None
        with self._lock:
            endpoint_id = uuid.uuid4().hex
            proxy = ServiceProxy(lambda authorization: self._backend(endpoint_id, authorization), _refusal, name,
                                 strip=frozenset({"authorization"}))
            ep = _Endpoint(endpoint_id, name, call.access_key, copy.deepcopy(body), folder, variant,
                           resources, proxy, desired, definition)
            self._endpoints[ep.id] = ep
            self._reconcile(ep)
            return 200, self._serve_info(ep)

    def _check_resources(self, scaling_group: str, resources: dict) -> dict:
        if not isinstance(resources, dict):
            raise invalid("config.resources must be a mapping.")
        capacity = self.scaling_groups[scaling_group]
        wanted = {"cpu": 1, "mem": "1g", **resources}
        recorded = {}
        for slot, value in wanted.items():
            if slot not in capacity:
                raise invalid(f"Unknown resource slot {slot!r} for scaling group {scaling_group!r} (known: "
                              f"{', '.join(sorted(capacity))}).")
            try:
                amount, limit = _amount(slot, value), _amount(slot, capacity[slot])
            except ValueError as error:
                raise invalid(str(error)) from None
            if amount < 0:
                raise invalid(f"Negative amount for {slot}.")
            if amount > limit:
                raise invalid(f"Requested resource {slot}={value} exceeds the capacity of scaling group "
                              f"{scaling_group!r} ({capacity[slot]}).")
            recorded[slot] = str(int(amount)) if amount == int(amount) else str(amount)
        return recorded

    def _model_definition(self, folder: _Folder, config: dict) -> dict:
        relpath = config.get("model_definition_path") or "model-definition.yaml"
        path = self._inside(folder, relpath)
        alternative = folder.path / "model-definition.yml"
        if not path.is_file() and relpath == "model-definition.yaml" and alternative.is_file():
            path = alternative
        if not path.is_file():
            raise invalid(f"Model definition YAML file {relpath!r} not found inside the model storage.")
        try:
            definition = yaml.safe_load(path.read_text())
            model = definition["models"][0]
            service = model["service"]
            int(service["port"])
            if not service.get("start_command"):
                raise KeyError("start_command")
        except (KeyError, IndexError, TypeError, ValueError, yaml.YAMLError) as error:
            raise invalid(f"Invalid model definition: {error!r}") from None
        return model

    def _serve_info(self, ep: _Endpoint) -> dict:
        return {"endpoint_id": _dashed(ep.id), "model_id": _dashed(ep.folder.id), "extra_mounts": [], "name": ep.name,
                "desired_session_count": ep.desired,
                "model_definition_path": ep.config.get("model_definition_path"),
                "active_routes": [{"route_id": _dashed(r.route_id), "session_id": _dashed(r.session_id),
                                   "traffic_ratio": 1.0}
                                  for r in ep.routes if r.status == "HEALTHY"],
                "service_endpoint": ep.url, "is_public": ep.public, "runtime_variant": ep.variant}

    def _get_service(self, call: _Call):
        with self._lock:
            return 200, self._serve_info(self._live(call, call.args["id"]))

    def _list_services(self, call: _Call):
        wanted = call.query.get("name")
        with self._lock:
            return 200, [{"id": _dashed(ep.id), "name": ep.name, "desired_session_count": ep.desired,
                          "active_route_count": sum(r.status == "HEALTHY" for r in ep.routes),
                          "service_endpoint": ep.url, "is_public": ep.public}
                         for ep in self._endpoints.values()
                         if ep.owner == call.access_key and ep.lifecycle != "destroyed"
                         and (wanted is None or ep.name == wanted)]

    def _delete_service(self, call: _Call):
        with self._lock:
            ep = self._live(call, call.args["id"])
            if ep.lifecycle == "created":
                ep.lifecycle = "destroying"
                threading.Thread(target=self._destroy, args=(ep,), daemon=True,
                                 name=f"destroy {ep.name}").start()
        return 200, {"success": True}

    def _scale_service(self, call: _Call):
        to = call.body.get("to")
        if not isinstance(to, int) or isinstance(to, bool) or not 0 <= to <= 10:
            raise invalid("to must be an integer between 0 and 10.")
        with self._lock:
            ep = self._live(call, call.args["id"])
            if ep.lifecycle != "created":
                raise invalid("The service is being destroyed.")
            current = len(ep.live_routes)
            ep.desired = to
            ep.body["desired_session_count"] = to
            self._reconcile(ep)
        return 200, {"current_route_count": current, "target_count": to}

    def _token(self, call: _Call):
        with self._lock:
            ep = self._live(call, call.args["id"])
            if call.body.get("valid_until") is not None:
                expires = float(call.body["valid_until"])
            elif call.body.get("duration") is not None:
                expires = time.time() + _duration(call.body["duration"]).total_seconds()
            else:
                raise invalid("Either duration or valid_until is required.")
            if expires <= time.time():
                raise invalid("The token would already be expired.")
            token = _jwt_like({"endpoint": ep.id, "exp": int(expires), "jti": uuid.uuid4().hex})
            ep.tokens[token] = expires
        return 200, {"token": token}

    # GraphQL (one query)

    def _gql(self, call: _Call):
        query = call.body.get("query") or ""
        variables = call.body.get("variables") or {}
        match = re.search(r"\bendpoint\s*\(\s*endpoint_id\s*:\s*(?:\$(?P<var>\w+)|\"(?P<lit>[^\"]*)\")\s*\)\s*\{",
                          query)
        if not match:
            return 200, {"data": None, "errors": [{"message": "BackendAIStandIn answers only the query "
                                                   "endpoint(endpoint_id: ...) { ... }."}]}
        try:
            selection, _ = _selection(re.findall(r"[A-Za-z_]\w*|[{}]", re.sub(r"\([^)]*\)", "",
                                                                              query[match.end():])), 0)
            _check_selection(selection)
        except ValueError as error:
            return 200, {"data": None, "errors": [{"message": str(error)}]}
        endpoint_id = variables.get(match["var"]) if match["var"] else match["lit"]
        with self._lock:
            ep = None
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                ep = self._endpoints.get(uuid.UUID(str(endpoint_id)).hex)
            if ep is None or ep.owner != call.access_key:
                return 200, {"data": {"endpoint": None}, "errors": [{
                    "message": "No such endpoint.", "locations": [], "path": ["endpoint"]}]}
            return 200, {"data": {"endpoint": _pick(self._endpoint_fields(ep), selection)}}

    def _endpoint_fields(self, ep: _Endpoint) -> dict:
        config = ep.config
        failed = [r for r in ep.routes if r.error_data]
        return {
            "endpoint_id": _dashed(ep.id), "name": ep.name, "status": ep.status, "url": ep.url,
            "desired_session_count": ep.desired, "image": ep.body.get("image"), "runtime_variant": ep.variant,
            "open_to_public": ep.public, "model": _dashed(ep.folder.id),
            "model_definition_path": config.get("model_definition_path"),
            "model_mount_destination": config.get("model_mount_destination", "/models"),
            "domain": self.domain, "project": self.group, "resource_group": config.get("scaling_group", "default"),
            "resource_slots": json.dumps(ep.resources), "resource_opts": json.dumps(config.get("resource_opts") or {}),
            "environ": json.dumps(config.get("environ") or {}), "created_at": ep.created_at,
            "destroyed_at": ep.destroyed_at, "lifecycle_stage": ep.lifecycle, "retries": 0,
            "cluster_size": 1, "cluster_mode": "SINGLE_NODE", "created_user": ep.owner, "session_owner": ep.owner,
            "routings": [{"routing_id": _dashed(r.route_id), "endpoint": _dashed(ep.id),
                          "session": _dashed(r.session_id), "status": r.status, "traffic_ratio": 1.0,
                          "created_at": r.created_at, "error_data": json.dumps(r.error_data)}
                         for r in ep.routes if r.status != "TERMINATING"],
            "errors": [{"session_id": _dashed(r.session_id),
                        "errors": [{"src": "", "name": r.error_data.get("name", "RouteFailed"),
                                    "repr": r.error_data.get("repr", "")}]} for r in failed],
        }

    # replicas

    def _reconcile(self, ep: _Endpoint) -> None:
        """Under the lock: start or retire routes until the live ones match the desired count."""
        live = ep.live_routes
        while len(live) < ep.desired:
            route = _Route(uuid.uuid4().hex, uuid.uuid4().hex, copy.deepcopy(ep.resources))
            ep.routes.append(route)
            live.append(route)
            threading.Thread(target=self._run_route, args=(ep, route), daemon=True,
                             name=f"route {ep.name}/{route.route_id[:8]}").start()
        order = {"UNHEALTHY": 0, "PROVISIONING": 1, "HEALTHY": 2}
        for route in sorted(live, key=lambda r: order.get(r.status, 0))[:max(len(live) - ep.desired, 0)]:
            self._retire_route(ep, route)

    def _retire_route(self, ep: _Endpoint, route: _Route) -> None:
        route.status = "TERMINATING"
        route.stop.set()
        container, route.container, route.host_port = route.container, None, None
        ep.routes.remove(route)
        if container:
            threading.Thread(target=remove_container, args=(self.docker, container), daemon=True).start()

    def _destroy(self, ep: _Endpoint) -> None:
        with self._lock:
            if ep.lifecycle == "destroyed":
                return
            ep.lifecycle = "destroying"
            routes = list(ep.routes)
            containers = [r.container for r in routes if r.container]
            for route in routes:
                route.stop.set()
                route.status, route.container, route.host_port = "TERMINATING", None, None
        for container in containers:
            remove_container(self.docker, container)
        ep.proxy.close()
        with self._lock:
            ep.routes.clear()
            ep.lifecycle, ep.destroyed_at, ep.url = "destroyed", _now(), None

    def _gone(self, ep: _Endpoint, route: _Route) -> bool:
        return route.stop.is_set() or self._stopping.is_set() or ep.lifecycle != "created"

    def _fail(self, ep: _Endpoint, route: _Route, name: str, text: str, **extra) -> None:
        with self._lock:
            if self._gone(ep, route):
                return
            route.status = "UNHEALTHY"
            route.error_data = {"type": "session_failure" if name != "HealthCheckFailed" else "health_check",
                                "name": name, "repr": text, **extra}
            container, route.container, route.host_port = route.container, None, None
        LOG.warning("backend.ai stand-in: route %s of %s failed: %s", route.route_id, ep.name, text)
        if container:
            remove_container(self.docker, container)

    def _run_route(self, ep: _Endpoint, route: _Route) -> None:
        try:
            self._start_route(ep, route)
        except Exception as error:  # the route must end somewhere, whatever went wrong
            LOG.exception("backend.ai stand-in: route of %s failed", ep.name)
            self._fail(ep, route, "StandInError", repr(error))

    def _start_route(self, ep: _Endpoint, route: _Route) -> None:
        image = ep.body["image"]
        try:
            ensure_image(self.docker, image, self.registry_auth, self.prefer_local_images)
        except (APIError, RuntimeError) as error:
            return self._fail(ep, route, "ImageNotFound", f"Pulling image {image} failed: {error}")
        port, command, entrypoint, health = self._plan(ep)
        config = ep.config
        environ = {str(k): str(v) for k, v in (config.get("environ") or {}).items()}
        destination = config.get("model_mount_destination") or "/models"
        model_name = (ep.definition or {}).get("name") or ep.folder.name
        model_path = (ep.definition or {}).get("model_path") or destination
        environ |= {"BACKEND_MODEL_NAME": model_name, "BACKEND_MODEL_PATH": model_path,
                    "BACKENDAI_SESSION_ID": route.session_id, "BACKENDAI_KERNEL_IMAGE": image}
        created = self.docker.create_container(
            image, name=f"backendai-standin-{ep.name}-{route.route_id[:8]}", entrypoint=entrypoint,
            command=command, environment=environ, ports=[port],
            labels={LABEL: self.instance_id, f"{LABEL}.endpoint": ep.id, f"{LABEL}.route": route.route_id},
            host_config=self.docker.create_host_config(
                port_bindings={port: ("127.0.0.1", None)},
                binds={str(ep.folder.path): {"bind": destination, "mode": "ro"}}))
        with self._lock:
            if self._gone(ep, route):
                container = None
            else:
                container = route.container = created["Id"]
        if container is None:
            return remove_container(self.docker, created["Id"])
        self.docker.start(container)
        published = (self.docker.inspect_container(container)["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp")
        if not published:  # it exited before the engine published its port
            state = self._state(container)
            return self._fail(ep, route, "ContainerExited", f"The container exited with code "
                              f"{state.get('ExitCode')} before the service became healthy.",
                              exit_code=state.get("ExitCode"), logs=self._log_tail(container))
        with self._lock:
            if route.container == container:
                route.host_port = int(published[0]["HostPort"])
            host_port = route.host_port
        if host_port is None:
            return None
        self._await_health(ep, route, container, host_port, health)
        self._watch(ep, route, container)

    def _plan(self, ep: _Endpoint) -> tuple[int, list[str] | None, list[str] | None, dict]:
        """(port, command, entrypoint, health check) for a replica of the endpoint."""
        if ep.definition is None:
            path = RUNTIME_VARIANTS[ep.variant]
            return 8000, None, None, {"path": path, "max_retries": 10} if path else {}
        service = ep.definition["service"]
        start = service["start_command"]
        shell = service.get("shell") or "/bin/bash"
        start_text = start if isinstance(start, str) else shlex.join(str(part) for part in start)
        steps = []
        for action in service.get("pre_start_actions") or []:
            if action.get("action") == "run_command":
                cmd = action.get("args", {}).get("command")
                steps.append(cmd if isinstance(cmd, str) else shlex.join(str(c) for c in cmd or []))
        if isinstance(start, list) and not steps:
            return int(service["port"]), [str(p) for p in start[1:]], [str(start[0])], service.get("health_check") or {}
        script = " && ".join([*steps, start_text])
        return int(service["port"]), [script], [shell, "-c"], service.get("health_check") or {}

    def _await_health(self, ep: _Endpoint, route: _Route, container: str, host_port: int, health: dict) -> None:
        path = health.get("path")
        interval = float(health.get("interval", 1.0))
        timeout = float(health.get("max_wait_time", 15.0))
        expected = int(health.get("expected_status_code", 200))
        retries = int(health.get("max_retries", 10)) if path else 240
        if path:
            check = lambda: _http_status(host_port, path, timeout) == expected
        else:
            check, interval = (lambda: tcp_ok(host_port, 1.0)), 0.5
        if route.stop.wait(float(health.get("initial_delay", 0))):
            return
        for _ in range(max(retries, 1)):
            if self._gone(ep, route):
                return
            state = self._state(container)
            if not state.get("Running"):
                return self._fail(ep, route, "ContainerExited", f"The container exited with code "
                                  f"{state.get('ExitCode')} before the service became healthy.",
                                  exit_code=state.get("ExitCode"), logs=self._log_tail(container))
            if check():
                with self._lock:
                    if not self._gone(ep, route):
                        route.status = "HEALTHY"
                        ep.url = ep.proxy.url
                return None
            route.stop.wait(interval)
        what = f"GET {path} did not answer {expected}" if path else "the service port never accepted connections"
        self._fail(ep, route, "HealthCheckFailed", f"Health check failed after {retries} tries: {what}.",
                   exit_code=None, logs=self._log_tail(container))

    def _watch(self, ep: _Endpoint, route: _Route, container: str) -> None:
        """After HEALTHY: a container that exits makes its route UNHEALTHY."""
        while not self._gone(ep, route) and route.status == "HEALTHY":
            if route.stop.wait(1.0):
                return
            state = self._state(container)
            if not state.get("Running") and not self._gone(ep, route):
                return self._fail(ep, route, "ContainerExited", f"The container exited with code "
                                  f"{state.get('ExitCode')}.", exit_code=state.get("ExitCode"),
                                  logs=self._log_tail(container))

    def _state(self, container: str) -> dict:
        try:
            return self.docker.inspect_container(container)["State"]
        except DockerNotFound:
            return {"Running": False, "ExitCode": None}

    def _log_tail(self, container: str) -> list[str]:
        try:
            return self.docker.logs(container, tail=20).decode(errors="replace").splitlines()
        except APIError:
            return []

    def _backend(self, endpoint_id: str, authorization: str | None) -> tuple[int, int | None]:
        """For the service proxy: (HTTP status, host port of a healthy route)."""
        with self._lock:
            ep = self._endpoints.get(endpoint_id)
            if ep is None or ep.lifecycle != "created":
                return 404, None
            if not ep.public:
                scheme, _, token = (authorization or "").partition(" ")
                if scheme != "BackendAI" or not token.strip():
                    return 401, None
                if ep.tokens.get(token.strip(), 0) <= time.time():
                    return 403, None
            ports = [r.host_port for r in ep.routes if r.status == "HEALTHY" and r.host_port]
            if not ports:
                return 503, None
            return 200, random.choice(ports)


def _new_access_key() -> str:
    return "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def _dashed(hex_id: str) -> str:
    return str(uuid.UUID(hex_id))


def _jwt_like(claims: dict) -> str:
    import base64

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{secrets.token_urlsafe(32)}"


def _selection(tokens: list[str], i: int) -> tuple[dict, int]:
    """Parse ``a b { c }`` up to the closing brace: {field: sub-selection or None}, next index."""
    fields: dict = {}
    last = None
    while i < len(tokens):
        token = tokens[i]
        if token == "}":
            return fields, i + 1
        if token == "{":
            if last is None:
                raise ValueError("Syntax Error: unexpected '{'.")
            fields[last], i = _selection(tokens, i + 1)
            continue
        fields[token] = None
        last = token
        i += 1
    raise ValueError("Syntax Error: expected '}'.")


def _check_selection(selection: dict, type_name: str = "Endpoint") -> None:
    fields = SCHEMA[type_name]
    for name, sub in selection.items():
        if name == "__typename":
            continue
        if name not in fields:
            raise ValueError(f"Cannot query field \"{name}\" on type \"{type_name}\".")
        if fields[name] and sub is None:
            raise ValueError(f"Field \"{name}\" of type \"[{fields[name]}]\" must have a selection of subfields.")
        if fields[name]:
            _check_selection(sub, fields[name])
        elif sub is not None:
            raise ValueError(f"Field \"{name}\" must not have a selection since its type has no subfields.")


def _pick(value, selection: dict | None):
    if selection is None:
        return value
    if isinstance(value, list):
        return [_pick(v, selection) for v in value]
    if value is None:
        return None
    return {name: ("Endpoint" if name == "__typename" else _pick(value.get(name), sub))
            for name, sub in selection.items()}


def _http_status(port: int, path: str, timeout: float) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout).status_code
    except httpx.HTTPError:
        return None


_ID = r"(?P<id>[^/]+)"
_NAME = r"(?P<name>[^/]+)"
ROUTES = [(verb, re.compile(pattern), handler) for verb, pattern, handler in [
    ("POST", r"/folders/?", "_create_folder"),
    ("GET", r"/folders/?", "_list_folders"),
    ("DELETE", r"/folders/?", "_delete_folder"),
    ("POST", r"/folders/purge", "_purge_folder"),
    ("DELETE", r"/folders/purge", "_purge_folder"),
    ("POST", r"/folders/restore-from-trash", "_restore_folder"),
    ("GET", rf"/folders/{_NAME}", "_get_folder"),
    ("DELETE", rf"/folders/{_NAME}", "_delete_folder"),
    ("POST", rf"/folders/{_NAME}/mkdir", "_mkdir"),
    ("POST", rf"/folders/{_NAME}/request-upload", "_request_upload"),
    ("POST", r"/services/?", "_create_service"),
    ("GET", r"/services/?", "_list_services"),
    ("GET", rf"/services/{_ID}", "_get_service"),
    ("DELETE", rf"/services/{_ID}", "_delete_service"),
    ("POST", rf"/services/{_ID}/scale", "_scale_service"),
    ("POST", rf"/services/{_ID}/token", "_token"),
    ("POST", r"/admin/gql", "_gql"),
    ("POST", r"/admin/graphql", "_gql"),
]]


class _ManagerHandler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body, content_type = self.server.standin._dispatch(self.command, self.path, self.headers, raw)
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Server", f"BackendAI-API/{API_VERSION}")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle


class _StorageHandler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers = self.server.standin._tus(self.command, self.path, self.headers, raw)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_PATCH = do_OPTIONS = do_GET = do_POST = _handle


_DENIED = {401: "Authorization header not provided or malformed (expected 'BackendAI <token>').",
           403: "Invalid or expired token.", 404: "No such endpoint.",
           503: "No healthy route to serve the request."}


def _refusal(status: int, path: str) -> tuple[str, bytes]:
    """The app proxy's problem+json refusal."""
    return "application/problem+json", json.dumps({"type": PROBS + "app-proxy-error", "title": _DENIED[status]}).encode()
