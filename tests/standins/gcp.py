"""A local stand-in for Google Cloud: OAuth2 token endpoint, Cloud Run Admin API v2, Artifact Registry v1.

One HTTP server on 127.0.0.1 speaks the REST/JSON wire protocol the gapic clients use
(``transport="rest"``; lowerCamelCase JSON, enums as integers or names, Google's JSON error
format, ``google.longrunning`` operations):

* ``POST /token``: the JWT-bearer grant of a service-account key (access tokens, and ID tokens
  when the assertion carries ``target_audience``).
* Cloud Run v2: services create/get/list/patch/delete, ``:getIamPolicy``/``:setIamPolicy``/
  ``:testIamPermissions``, operations get/list/delete/``:wait``.
* Artifact Registry v1: repositories create/get/list/delete, operations get/list/delete.

Every API call needs ``Authorization: Bearer`` with the issued access token or a JWT self-signed by
the service-account key (what gapic clients send). Revisions really run: the image is pulled with
``registry_auth`` and started as a Docker container published on 127.0.0.1, the startup probe
decides readiness, and each service's ``uri`` is a reverse proxy that enforces ``roles/run.invoker``
like Cloud Run's front end and splits traffic across ready revisions.

Not spoken: Cloud Run jobs/executions/revisions APIs, sidecars, secrets and volumes, liveness
probes, tags' URLs, resource limits (validated, not enforced), GPUs (validated, not attached),
Artifact Registry packages/versions/tags and the Docker registry itself.

Simplified: URLs are ``http://127.0.0.1:<port>``; a service's etag changes with its generation
only; deletes and Artifact Registry operations finish at once; a revision that no longer serves
traffic loses its container (it starts again when traffic returns to it); ID tokens are signed
by a key of the stand-in's own.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import random
import re
import secrets
import shutil
import string
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from docker.errors import APIError
from docker.errors import NotFound as DockerNotFound
from google.auth import crypt, jwt
from google.cloud import artifactregistry_v1, run_v2
from google.iam.v1 import policy_pb2
from google.protobuf import json_format

from tests.standins.common import RecordingStandIn, ServiceProxy, ensure_image, remove_container, tcp_ok

LOG = logging.getLogger(__name__)
LABEL = "io.cloud-deploy.standin"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
RUN_SERVICE = "type.googleapis.com/google.cloud.run.v2.Service"
AR_REPOSITORY = "type.googleapis.com/google.devtools.artifactregistry.v1.Repository"
AR_METADATA = "type.googleapis.com/google.devtools.artifactregistry.v1.OperationMetadata"
EMPTY = "type.googleapis.com/google.protobuf.Empty"
LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
ACCELERATORS = {"nvidia-l4", "nvidia-rtx-pro-6000"}
RESERVED_ENV = ("PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION")
SERVICE_ID = re.compile(r"[a-z]([a-z0-9-]{0,47}[a-z0-9])?")
REPOSITORY_ID = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
REVISION_NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
MEMBER = re.compile(r"allUsers|allAuthenticatedUsers|(user|serviceAccount|group|domain|principal|principalSet):.+")
SERVICE_INPUTS = ("description", "labels", "annotations", "client", "clientVersion", "ingress", "launchStage",
                  "binaryAuthorization", "template", "traffic", "scaling", "invokerIamDisabled",
                  "defaultUriDisabled", "iapEnabled", "multiRegionSettings", "customAudiences", "buildConfig")
REPOSITORY_INPUTS = ("format", "description", "labels", "dockerConfig", "kmsKeyName", "mode", "cleanupPolicies",
                     "cleanupPolicyDryRun", "disallowUnspecifiedMode")
# google.rpc.Code name -> (HTTP status, code)
STATUS = {"INVALID_ARGUMENT": (400, 3), "FAILED_PRECONDITION": (400, 9), "UNAUTHENTICATED": (401, 16),
          "PERMISSION_DENIED": (403, 7), "NOT_FOUND": (404, 5), "ALREADY_EXISTS": (409, 6), "ABORTED": (409, 10),
          "INTERNAL": (500, 13), "UNIMPLEMENTED": (501, 12)}
GIB = 1 << 30
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": GIB,
          "Ti": 1 << 40}


class Reply(Exception):
    """An HTTP answer other than 200, raised from anywhere in a handler."""

    def __init__(self, status: int, body: dict):
        super().__init__(body)
        self.status, self.body = status, body


def api_error(status: str, message: str) -> Reply:
    code = STATUS[status][0]
    return Reply(code, {"error": {"code": code, "message": message, "status": status}})


def oauth_error(description: str, error: str = "invalid_grant") -> Reply:
    return Reply(400, {"error": error, "error_description": description})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse(message_cls, data: dict) -> dict:
    """Normalise a JSON message the way the real server reads it: unknown fields rejected, enums to names."""
    pb_cls = message_cls.pb() if hasattr(message_cls, "pb") else message_cls
    try:
        return json_format.MessageToDict(json_format.ParseDict(data or {}, pb_cls()))
    except json_format.ParseError as error:
        raise api_error("INVALID_ARGUMENT", f"Invalid JSON payload received. {error}") from None


def _quantity(value: str) -> float | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|[kMGT]i?|)", str(value))
    if not match:
        return None
    number = float(match[1])
    return number / 1000 if match[2] == "m" else number * _UNITS[match[2]]


def _check_labels(labels: dict) -> None:
    for key, value in (labels or {}).items():
        if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
            raise api_error("INVALID_ARGUMENT", f"Invalid label '{key}': '{value}'. Keys must start with a lowercase "
                            "letter; keys and values may contain lowercase letters, digits, '_' and '-' (max 63).")


def _camel(path: str) -> str:
    head, *rest = path.split(".")[0].split("_")
    return head + "".join(part.title() for part in rest)


@dataclass
class _Call:
    method: str
    path: str
    query: dict[str, str]
    body: dict
    raw: bytes
    args: dict[str, str]

    def flag(self, name: str) -> bool:
        return self.query.get(name, "false").lower() == "true"

    @property
    def parent(self) -> str:
        return f"projects/{self.args['project']}/locations/{self.args['location']}"


class _Operation:
    def __init__(self, name: str, metadata_type: str, metadata: Callable[[], dict]):
        self.name, self.metadata_type, self._metadata = name, metadata_type, metadata
        self.finished = threading.Event()
        self.outcome: dict = {}
        self._lock = threading.Lock()

    def finish(self, response_type: str = "", response: dict | None = None, error: str | None = None) -> None:
        with self._lock:
            if self.finished.is_set():
                return
            self.outcome = ({"error": {"code": STATUS["FAILED_PRECONDITION"][1], "message": error}} if error
                            else {"response": {"@type": response_type, **(response or {})}})
            self.finished.set()

    def to_json(self) -> dict:
        done = self.finished.is_set()
        return {"name": self.name, "metadata": {"@type": self.metadata_type, **self._metadata()}, "done": done,
                **(self.outcome if done else {})}


@dataclass
class _Revision:
    name: str
    template: dict
    container: str | None = None
    host_ports: dict[int, int] = field(default_factory=dict)
    ready: bool = False
    message: str = ""

    @property
    def port(self) -> int:
        ports = self.template["containers"][0].get("ports") or [{}]
        return int(ports[0].get("containerPort") or 8080)


@dataclass
class _Service:
    resource: dict
    proxy: ServiceProxy
    worker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    revisions: dict[str, _Revision] = field(default_factory=dict)
    serving: list[tuple[str, int]] = field(default_factory=list)
    bindings: list[dict] = field(default_factory=list)
    policy_version: int = 1
    operations: list[_Operation] = field(default_factory=list)
    gone: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        return self.resource["name"]

    @property
    def policy_etag(self) -> str:
        return base64.b64encode(self.policy_version.to_bytes(8, "big")).decode()

    def short(self, revision: str) -> str:
        return revision.rsplit("/", 1)[-1]

    def full(self, revision: str) -> str:
        return f"{self.name}/revisions/{revision}"


class GcpStandIn(RecordingStandIn):
    """Cloud Run v2 + Artifact Registry v1 + OAuth2 token endpoint on one local port.

    ``docker_client`` is a ``docker.APIClient``; ``registry_auth`` the auth_config used to pull images
    (Cloud Run's service agent). Images whose reference names a registry host are always pulled;
    others (Docker Hub names, unreachable here) run from the local engine when present. With
    ``prefer_local_images`` every image present locally runs without a pull.
    """

    def __init__(self, docker_client, registry_auth: dict | None = None, project_id: str = "cd-test-project",
                 client_email: str = "cloud-deploy@cd-test-project.iam.gserviceaccount.com",
                 prefer_local_images: bool = False):
        self.docker = docker_client
        self.registry_auth = registry_auth
        self.project_id = project_id
        self.client_email = client_email
        self.prefer_local_images = prefer_local_images
        self.instance_id = uuid.uuid4().hex
        self.access_token = "ya29.standin-" + secrets.token_urlsafe(24)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._google_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._key_id = secrets.token_hex(20)
        self._public_pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self._google_public_pem = self._google_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self._lock = threading.RLock()
        self._requests: list[tuple[str, str]] = []
        self._services: dict[str, _Service] = {}
        self._repositories: dict[str, dict] = {}
        self._operations: dict[str, _Operation] = {}
        self._stopping = threading.Event()
        self._server: _ApiServer | None = None
        self._tmp: Path | None = None
        self.endpoint = ""
        self.keyfile_dict: dict = {}
        self.key_file = ""

    # lifecycle

    def start(self) -> Self:
        self._server = _ApiServer(self)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="gcp-standin").start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.keyfile_dict = self._keyfile()
        self._tmp = Path(tempfile.mkdtemp(prefix="gcp-standin-"))
        self.key_file = str(self._tmp / "service-account.json")
        Path(self.key_file).write_text(json.dumps(self.keyfile_dict, indent=2))
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            services = list(self._services.values())
            self._services.clear()
        for svc in services:
            self._retire(svc)
        for svc in services:
            svc.worker.shutdown(wait=True, cancel_futures=True)
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        for container in self.docker.containers(all=True, filters={"label": f"{LABEL}={self.instance_id}"}):
            remove_container(self.docker, container["Id"])
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # inspection

    def service(self, name: str) -> dict | None:
        with self._lock:
            svc = self._find_service(name)
            return copy.deepcopy(svc.resource) if svc else None

    def revision_container(self, revision_name: str) -> str | None:
        short = revision_name.rsplit("/", 1)[-1]
        with self._lock:
            for svc in self._services.values():
                if short in svc.revisions and (revision_name == short or svc.full(short) == revision_name):
                    return svc.revisions[short].container
        return None

    def _find_service(self, name: str) -> _Service | None:
        if name in self._services:
            return self._services[name]
        return next((s for s in self._services.values() if s.name.rsplit("/", 1)[-1] == name), None)

    def _keyfile(self) -> dict:
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()
        return {
            "type": "service_account", "project_id": self.project_id, "private_key_id": self._key_id,
            "private_key": pem, "client_email": self.client_email,
            "client_id": str(10**20 + int(self.instance_id[:12], 16)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": f"{self.endpoint}/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{quote(self.client_email)}",
            "universe_domain": "googleapis.com",
        }

    # dispatch and auth

    def _dispatch(self, method: str, target: str, headers, raw: bytes) -> tuple[int, dict]:
        split = urlsplit(target)
        self._record(method, split.path)
        try:
            handler, args = self._route(method, split.path)
            if split.path != "/token":
                self._authenticate(headers.get("Authorization", ""))
                if args.get("project", self.project_id) != self.project_id:
                    raise api_error("PERMISSION_DENIED", f"Permission denied on resource project {args['project']}.")
            body = {}
            if raw and split.path != "/token":
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise api_error("INVALID_ARGUMENT", "Invalid JSON payload received.") from None
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            return 200, handler(_Call(method, split.path, query, body, raw, args))
        except Reply as reply:
            return reply.status, reply.body
        except Exception as error:  # a stand-in bug must reach the client as a 500
            LOG.exception("gcp stand-in failed on %s %s", method, target)
            reply = api_error("INTERNAL", f"GcpStandIn error: {error!r}")
            return reply.status, reply.body

    def _route(self, method: str, path: str) -> tuple[Callable[[_Call], dict], dict]:
        for verb, pattern, name in ROUTES:
            match = pattern.fullmatch(path)
            if match and verb == method:
                return getattr(self, name), match.groupdict()
        raise api_error("NOT_FOUND", f"The requested URL {path} was not found on this server ({method}).")

    def _authenticate(self, authorization: str) -> None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and (token == self.access_token or self._sa_claims(token.strip())):
            return
        raise api_error("UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access "
                        "token, login cookie or other valid authentication credential.")

    def _sa_claims(self, token: str) -> dict | None:
        try:
            claims = jwt.decode(token, certs=self._public_pem, clock_skew_in_seconds=10)
        except Exception:  # malformed, forged or expired: not accepted
            return None
        return claims if claims.get("iss") == self.client_email else None

    def _token(self, call: _Call) -> dict:
        form = {k: v[-1] for k, v in parse_qs(call.raw.decode()).items()}
        if form.get("grant_type") != JWT_BEARER:
            raise oauth_error(f"Invalid grant_type: {form.get('grant_type', '')}", "unsupported_grant_type")
        assertion = form.get("assertion", "")
        try:
            claims = jwt.decode(assertion, certs=self._public_pem, verify=False)
            jwt.decode(assertion, certs=self._public_pem, audience=self._token_audiences, clock_skew_in_seconds=10)
        except Exception as error:
            if "signature" in str(error).lower():
                raise oauth_error("Invalid JWT Signature.") from None
            if "audience" in str(error).lower():
                raise oauth_error(f"Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_URI}") \
                    from None
            raise oauth_error("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                              f"timeframe. Check your iat and exp values in the JWT claim. ({error})") from None
        if claims.get("iss") != self.client_email:
            raise oauth_error("Invalid grant: account not found")
        if int(claims.get("exp", 0)) - int(claims.get("iat", 0)) > 3600:
            raise oauth_error("Invalid JWT: Token must be a short-lived token (60 minutes).")
        if claims.get("target_audience"):
            return {"id_token": self._id_token(claims["target_audience"])}
        return {"access_token": self.access_token, "expires_in": 3599, "token_type": "Bearer"}

    @property
    def _token_audiences(self) -> list[str]:
        """google-auth always names Google's token endpoint as the audience, whatever the key's token_uri."""
        return [GOOGLE_TOKEN_URI, "https://www.googleapis.com/oauth2/v4/token", f"{self.endpoint}/token"]

    def _id_token(self, audience: str) -> str:
        pem = self._google_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
        now = int(time.time())
        payload = {"iss": "https://accounts.google.com", "aud": audience, "azp": self.client_email,
                   "sub": self.keyfile_dict["client_id"], "email": self.client_email, "email_verified": True,
                   "iat": now, "exp": now + 3600}
        return jwt.encode(crypt.RSASigner.from_string(pem, "standin-google"), payload).decode()

    def _invoker_denied(self, svc: _Service, authorization: str | None) -> int | None:
        """Cloud Run's front end: 403 without credentials, 401 with unusable ones, unless invocation is public."""
        public = svc.resource.get("invokerIamDisabled") or any(
            b.get("role") == "roles/run.invoker" and "allUsers" in b.get("members", []) for b in svc.bindings)
        if public:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 403
        token = token.strip()
        uri = svc.resource.get("uri", "")
        audiences = [uri, uri + "/", *svc.resource.get("customAudiences", [])]
        if token == self.access_token or self._sa_claims(token):
            return None
        try:
            jwt.decode(token, certs=self._google_public_pem, audience=audiences, clock_skew_in_seconds=10)
            return None
        except Exception:
            return 401

    # operations

    def _new_operation(self, parent: str, metadata_type: str, metadata: Callable[[], dict]) -> _Operation:
        op = _Operation(f"{parent}/operations/{uuid.uuid4()}", metadata_type, metadata)
        with self._lock:
            self._operations[op.name] = op
        return op

    def _operation(self, call: _Call) -> _Operation:
        name = f"{call.parent}/operations/{call.args['op']}"
        with self._lock:
            if name not in self._operations:
                raise api_error("NOT_FOUND", f"Operation {name} not found.")
            return self._operations[name]

    def _get_operation(self, call: _Call) -> dict:
        with self._lock:
            return self._operation(call).to_json()

    def _wait_operation(self, call: _Call) -> dict:
        op = self._operation(call)
        op.finished.wait(min(float(str(call.body.get("timeout", "60s")).rstrip("s") or 60), 300))
        with self._lock:
            return op.to_json()

    def _delete_operation(self, call: _Call) -> dict:
        op = self._operation(call)
        with self._lock:
            self._operations.pop(op.name, None)
        return {}

    def _list_operations(self, call: _Call) -> dict:
        with self._lock:
            return {"operations": [op.to_json() for name, op in self._operations.items()
                                   if name.startswith(call.parent + "/")]}

    # Artifact Registry

    def _repository_name(self, call: _Call) -> str:
        return f"{call.parent}/repositories/{call.args['id']}"

    def _create_repository(self, call: _Call) -> dict:
        repository_id = call.query.get("repositoryId", "")
        if not REPOSITORY_ID.fullmatch(repository_id):
            raise api_error("INVALID_ARGUMENT", f"Invalid repository ID '{repository_id}': must start with a "
                            "lowercase letter, contain only lowercase letters, digits and hyphens, end with a letter "
                            "or digit and be at most 63 characters.")
        spec = {k: v for k, v in _parse(artifactregistry_v1.Repository, call.body).items() if k in REPOSITORY_INPUTS}
        if spec.get("format", "FORMAT_UNSPECIFIED") == "FORMAT_UNSPECIFIED":
            raise api_error("INVALID_ARGUMENT", "Repository format is required.")
        _check_labels(spec.get("labels"))
        name = f"{call.parent}/repositories/{repository_id}"
        now = _now()
        repository = {"name": name, "mode": "STANDARD_REPOSITORY", **spec, "createTime": now, "updateTime": now}
        if spec["format"] == "DOCKER":
            repository["registryUri"] = f"{call.args['location']}-docker.pkg.dev/{self.project_id}/{repository_id}"
        with self._lock:
            if name in self._repositories:
                raise api_error("ALREADY_EXISTS", f"the repository already exists: {name}")
            self._repositories[name] = repository
        op = self._new_operation(call.parent, AR_METADATA, dict)
        op.finish(AR_REPOSITORY, copy.deepcopy(repository))
        return op.to_json()

    def _get_repository(self, call: _Call) -> dict:
        with self._lock:
            repository = self._repositories.get(self._repository_name(call))
            if repository is None:
                raise api_error("NOT_FOUND", f"Requested entity was not found: {self._repository_name(call)}")
            return copy.deepcopy(repository)

    def _list_repositories(self, call: _Call) -> dict:
        with self._lock:
            repositories = [copy.deepcopy(r) for n, r in self._repositories.items() if n.startswith(call.parent + "/")]
        return {"repositories": repositories}

    def _delete_repository(self, call: _Call) -> dict:
        self._get_repository(call)
        with self._lock:
            self._repositories.pop(self._repository_name(call), None)
        op = self._new_operation(call.parent, AR_METADATA, dict)
        op.finish(EMPTY)
        return op.to_json()

    # Cloud Run: services

    def _service_name(self, call: _Call) -> str:
        return f"{call.parent}/services/{call.args['id']}"

    def _existing(self, call: _Call) -> _Service:
        svc = self._services.get(self._service_name(call))
        if svc is None:
            raise api_error("NOT_FOUND", f"Resource '{call.args['id']}' of kind 'SERVICE' in region "
                            f"'{call.args['location']}' in project '{call.args['project']}' does not exist.")
        return svc

    def _get_service(self, call: _Call) -> dict:
        with self._lock:
            return copy.deepcopy(self._existing(call).resource)

    def _list_services(self, call: _Call) -> dict:
        with self._lock:
            return {"services": [copy.deepcopy(s.resource) for n, s in self._services.items()
                                 if n.startswith(call.parent + "/")]}

    def _create_service(self, call: _Call) -> dict:
        service_id = call.query.get("serviceId", "")
        if not SERVICE_ID.fullmatch(service_id):
            raise api_error("INVALID_ARGUMENT", f"service_id '{service_id}' is invalid: it must only contain lowercase "
                            "letters, digits and hyphens, begin with a letter, not end with a hyphen and be less "
                            "than 50 characters.")
        spec = _parse(run_v2.Service, call.body)
        with self._lock:
            name = f"{call.parent}/services/{service_id}"
            if name in self._services:
                raise api_error("ALREADY_EXISTS", f"Resource '{service_id}' already exists.")
            return self._apply(call, name, None, spec, None)

    def _update_service(self, call: _Call) -> dict:
        spec = _parse(run_v2.Service, call.body)
        with self._lock:
            name = self._service_name(call)
            svc = self._services.get(name)
            if svc is None and not call.flag("allowMissing"):
                self._existing(call)
            if svc and spec.get("etag") and spec["etag"] != svc.resource.get("etag"):
                raise api_error("ABORTED", "The etag does not match the current version of the service.")
            mask = [_camel(p) for p in call.query.get("updateMask", "").split(",") if p]
            return self._apply(call, name, svc, spec, mask or None)

    def _delete_service(self, call: _Call) -> dict:
        with self._lock:
            svc = self._existing(call)
            if call.query.get("etag") and call.query["etag"] != svc.resource.get("etag"):
                raise api_error("ABORTED", "The etag does not match the current version of the service.")
            if not call.flag("validateOnly"):
                del self._services[svc.name]
            snapshot = copy.deepcopy(svc.resource)
        op = self._new_operation(call.parent, RUN_SERVICE, lambda: snapshot)
        if not call.flag("validateOnly"):
            self._retire(svc)
        op.finish(RUN_SERVICE, snapshot)
        return op.to_json()

    def _apply(self, call: _Call, name: str, svc: _Service | None, spec: dict, mask: list[str] | None) -> dict:
        service_id = name.rsplit("/", 1)[1]
        if svc is None and not SERVICE_ID.fullmatch(service_id):
            raise api_error("INVALID_ARGUMENT", f"service name '{service_id}' is invalid.")
        inputs = {k: v for k, v in (svc.resource if svc else {}).items() if k in SERVICE_INPUTS}
        for key in SERVICE_INPUTS:
            if mask is None or key in mask:
                inputs.pop(key, None)
                if key in spec:
                    inputs[key] = spec[key]
        inputs.setdefault("traffic", [{"type": LATEST, "percent": 100}])
        inputs.setdefault("ingress", "INGRESS_TRAFFIC_ALL")
        inputs.setdefault("launchStage", "GA")
        template = inputs.setdefault("template", {})
        _check_labels(inputs.get("labels"))
        _check_template(template)
        generation = int(svc.resource["generation"]) + 1 if svc else 1
        revision = _plan_revision(svc, service_id, template, generation)
        _check_traffic(inputs["traffic"], set(svc.revisions) if svc else set(), revision)
        if call.flag("validateOnly"):
            op = self._new_operation(call.parent, RUN_SERVICE, lambda: {"name": name, **inputs})
            op.finish(RUN_SERVICE, {"name": name, **inputs})
            return op.to_json()
        if svc is None:
            svc = self._new_service(name)
        now = _now()
        etag = base64.urlsafe_b64encode(f"{svc.resource['uid']}/{generation}".encode()).decode()
        svc.resource = {k: v for k, v in svc.resource.items() if k not in SERVICE_INPUTS} | inputs | {
            "generation": str(generation), "updateTime": now, "lastModifier": self.client_email, "etag": f'"{etag}"',
            "reconciling": True, "terminalCondition": {"type": "Ready", "state": "CONDITION_PENDING",
                                                       "lastTransitionTime": now},
        }
        if revision:
            svc.revisions[revision.name] = revision
            svc.resource["latestCreatedRevision"] = svc.full(revision.name)
        op = self._new_operation(call.parent, RUN_SERVICE, lambda: copy.deepcopy(svc.resource))
        svc.operations.append(op)
        svc.worker.submit(self._reconcile, svc, revision, copy.deepcopy(inputs["traffic"]), generation, op)
        return op.to_json()

    def _new_service(self, name: str) -> _Service:
        proxy = ServiceProxy(lambda authorization: self._backend(name, authorization), _refusal, name)
        now = _now()
        svc = _Service({"name": name, "uid": str(uuid.uuid4()), "generation": "0", "createTime": now,
                        "creator": self.client_email, "uri": proxy.url, "urls": [proxy.url]}, proxy)
        self._services[name] = svc
        return svc

    def _retire(self, svc: _Service) -> None:
        svc.gone.set()
        svc.worker.shutdown(wait=False, cancel_futures=True)
        for op in svc.operations:
            op.finish(error="The service was deleted before its operation finished.")
        with self._lock:
            containers = [r.container for r in svc.revisions.values() if r.container]
            for revision in svc.revisions.values():
                revision.container, revision.host_ports = None, {}
        for container in containers:
            remove_container(self.docker, container)
        svc.proxy.close()

    # Cloud Run: IAM

    def _get_iam_policy(self, call: _Call) -> dict:
        with self._lock:
            svc = self._existing(call)
            return {"version": 1, "etag": svc.policy_etag, **({"bindings": svc.bindings} if svc.bindings else {})}

    def _set_iam_policy(self, call: _Call) -> dict:
        policy = _parse(policy_pb2.Policy, call.body.get("policy") or {})
        for binding in policy.get("bindings", []):
            if not binding.get("role", "").startswith("roles/"):
                raise api_error("INVALID_ARGUMENT", f"Role ({binding.get('role')}) does not exist in the resource's "
                                "hierarchy.")
            for member in binding.get("members", []):
                if not MEMBER.fullmatch(member):
                    raise api_error("INVALID_ARGUMENT", f"Invalid member '{member}' in binding.")
        with self._lock:
            svc = self._existing(call)
            if policy.get("etag") and policy["etag"] != svc.policy_etag:
                raise api_error("ABORTED", "There were concurrent policy changes. Please retry the whole "
                                "read-modify-write with exponential backoff.")
            svc.bindings = [b for b in policy.get("bindings", []) if b.get("members")]
            svc.policy_version += 1
        return self._get_iam_policy(call)

    def _test_iam_permissions(self, call: _Call) -> dict:
        with self._lock:
            self._existing(call)
        return {"permissions": call.body.get("permissions", [])}

    # Cloud Run: reconciling revisions and traffic

    def _reconcile(self, svc: _Service, revision: _Revision | None, traffic: list[dict], generation: int,
                   op: _Operation) -> None:
        try:
            error = self._deploy(svc, revision, traffic)
        except Exception as exc:  # the operation must end, whatever went wrong
            LOG.exception("gcp stand-in: reconciling %s failed", svc.name)
            error = f"GcpStandIn failed to reconcile: {exc!r}"
        with self._lock:
            self._settle(svc, generation, error)
            snapshot = copy.deepcopy(svc.resource)
        self._scale_down(svc)
        op.finish(RUN_SERVICE, snapshot, error)

    def _deploy(self, svc: _Service, revision: _Revision | None, traffic: list[dict]) -> str | None:
        if revision:
            error = self._run_revision(svc, revision)
            if error:
                return error
            with self._lock:
                revision.ready = True
                svc.resource["latestReadyRevision"] = svc.full(revision.name)
        with self._lock:
            latest = svc.short(svc.resource.get("latestReadyRevision", ""))
            resolved = [(t, latest if _kind(t) == LATEST else t["revision"], t.get("percent", 0)) for t in traffic]
            needed = {name: svc.revisions.get(name) for _, name, percent in resolved if percent}
        for name, target in needed.items():
            if target is None or not target.ready:
                if not name:
                    return "No revision is ready to serve traffic."
                return f"Revision '{name}' is not ready and cannot serve traffic. {target and target.message}".strip()
            if not target.container:
                error = self._run_revision(svc, target)
                if error:
                    return error
        with self._lock:
            svc.serving = [(name, percent) for _, name, percent in resolved if percent]
            svc.resource["trafficStatuses"] = [
                {k: v for k, v in {"type": _kind(t), "revision": name, "percent": percent, "tag": t.get("tag")}.items()
                 if v} for t, name, percent in resolved]
        return None

    def _settle(self, svc: _Service, generation: int, error: str | None) -> None:
        resource = svc.resource
        now = _now()
        state = "CONDITION_FAILED" if error else "CONDITION_SUCCEEDED"
        if not error:
            resource["observedGeneration"] = str(generation)
        if int(resource["generation"]) > generation:
            return
        resource.pop("reconciling", None)
        failure = {"message": error} if error else {}
        resource["terminalCondition"] = {"type": "Ready", "state": state, "lastTransitionTime": now, **failure}
        resource["conditions"] = [{"type": kind, "state": state, "lastTransitionTime": now, **failure}
                                  for kind in ("RoutesReady", "ConfigurationsReady")]

    def _scale_down(self, svc: _Service) -> None:
        with self._lock:
            keep = {name for name, _ in svc.serving} | {svc.short(svc.resource.get("latestReadyRevision", ""))}
            idle = [r for r in svc.revisions.values() if r.container and r.ready and r.name not in keep]
            containers = [r.container for r in idle]
            for revision in idle:
                revision.container, revision.host_ports = None, {}
        for container in containers:
            remove_container(self.docker, container)

    def _run_revision(self, svc: _Service, revision: _Revision) -> str | None:
        """Start the revision's container and wait for its startup probe; the failure message or None."""
        image = revision.template["containers"][0]["image"]
        try:
            ensure_image(self.docker, image, self.registry_auth, self.prefer_local_images)
        except (APIError, RuntimeError) as error:
            LOG.warning("gcp stand-in: pulling %s failed: %s", image, error)
            text = str(error).lower()
            reason = (f"Google Cloud Run Service Agent must have permission to read the image, {image}. Ensure that "
                      "the provided container image URL is correct and that the above account has permission to "
                      "access the image." if any(w in text for w in ("unauthorized", "denied", "authentication"))
                      else f"Image '{image}' not found.")
            revision.message = reason
            return f"Revision '{revision.name}' is not ready and cannot serve traffic. {reason}"
        try:
            if not self._start_container(svc, revision):
                return "The service was deleted before its revision started."
            reason = self._await_startup(svc, revision)
        except APIError as error:
            LOG.warning("gcp stand-in: starting revision %s failed: %s", revision.name, error)
            reason = _listen_failure(revision.port)
        if reason is None:
            return None
        with self._lock:
            container, revision.container, revision.host_ports = revision.container, None, {}
        if container:
            self._log_tail(revision.name, container)
            remove_container(self.docker, container)
        revision.message = reason
        return f"Revision '{revision.name}' is not ready and cannot serve traffic. {reason}"

    def _start_container(self, svc: _Service, revision: _Revision) -> bool:
        container = revision.template["containers"][0]
        service_id = svc.name.rsplit("/", 1)[1]
        env = [f"{e['name']}={e.get('value', '')}" for e in container.get("env", [])]
        env += [f"PORT={revision.port}", f"K_SERVICE={service_id}", f"K_REVISION={revision.name}",
                f"K_CONFIGURATION={service_id}"]
        ports = {revision.port} | {p for p in (_probe_port(container),) if p}
        created = self.docker.create_container(
            container["image"], name=f"gcp-standin-{revision.name}-{secrets.token_hex(3)}",
            entrypoint=container.get("command") or None, command=container.get("args") or None,
            environment=env, working_dir=container.get("workingDir") or None, ports=sorted(ports),
            labels={LABEL: self.instance_id, f"{LABEL}.service": svc.name, f"{LABEL}.revision": revision.name},
            host_config=self.docker.create_host_config(port_bindings={p: ("127.0.0.1", None) for p in ports}))
        with self._lock:
            revision.container = created["Id"]
            if svc.gone.is_set() or self._stopping.is_set():
                revision.container = None
        if revision.container is None:
            remove_container(self.docker, created["Id"])
            return False
        self.docker.start(created["Id"])
        published = self.docker.inspect_container(created["Id"])["NetworkSettings"]["Ports"]
        revision.host_ports = {p: int(published[f"{p}/tcp"][0]["HostPort"]) for p in ports}
        return True

    def _await_startup(self, svc: _Service, revision: _Revision) -> str | None:
        container = revision.template["containers"][0]
        probe = container.get("startupProbe")
        if probe:
            http_get, period = probe.get("httpGet"), probe.get("periodSeconds", 10)
            timeout, threshold = probe.get("timeoutSeconds", 1), probe.get("failureThreshold", 3)
            delay = probe.get("initialDelaySeconds", 0)
        else:
            http_get, period, timeout, threshold, delay = None, 1, 1, 240, 0
        host_port = revision.host_ports[_probe_port(container) or revision.port]
        check = (lambda: _http_ok(host_port, http_get, timeout)) if http_get else (lambda: tcp_ok(host_port, timeout))
        reason = ("The user-provided container failed the configured startup probe checks." if http_get
                  else _listen_failure(revision.port))
        if svc.gone.wait(delay):
            return "The service was deleted."
        for _ in range(max(threshold, 1)):
            if svc.gone.is_set() or self._stopping.is_set():
                return "The service was deleted."
            if not self._running(revision.container):
                return reason
            if check():
                return None
            svc.gone.wait(period)
        return reason

    def _running(self, container: str | None) -> bool:
        try:
            return bool(container) and self.docker.inspect_container(container)["State"]["Running"]
        except DockerNotFound:
            return False

    def _log_tail(self, revision: str, container: str) -> None:
        with contextlib.suppress(APIError):
            LOG.warning("gcp stand-in: revision %s failed; container log tail:\n%s", revision,
                        self.docker.logs(container, tail=20).decode(errors="replace"))

    def _backend(self, service_name: str, authorization: str | None) -> tuple[int, int | None]:
        """For the service proxy: (HTTP status, host port of a serving revision's container)."""
        with self._lock:
            svc = self._services.get(service_name)
            if svc is None:
                return 404, None
            denied = self._invoker_denied(svc, authorization)
            if denied:
                return denied, None
            choices = [(svc.revisions[n].host_ports.get(svc.revisions[n].port), p) for n, p in svc.serving]
            choices = [(port, percent) for port, percent in choices if port]
            if not choices:
                return 503, None
            return 200, random.choices([c[0] for c in choices], weights=[c[1] for c in choices])[0]


def _plan_revision(svc: _Service | None, service_id: str, template: dict, generation: int) -> _Revision | None:
    name = template.get("revision")
    if name:
        if not name.startswith(service_id + "-") or len(name) > 63 or not REVISION_NAME.fullmatch(name):
            raise api_error("INVALID_ARGUMENT", f"Revision name '{name}' is invalid: it must be prefixed by the name "
                            f"of the enclosing Service ('{service_id}-'), be a DNS label and at most 63 characters.")
        existing = svc.revisions.get(name) if svc else None
        if existing:
            if existing.template != template:
                raise api_error("ALREADY_EXISTS",
                                f"Revision named '{name}' with different configuration already exists.")
            return None
        return _Revision(name, copy.deepcopy(template))
    if svc and svc.resource.get("template") == template:
        return None
    suffix = "".join(random.choices(string.ascii_lowercase, k=3))
    return _Revision(f"{service_id}-{generation:05d}-{suffix}", copy.deepcopy(template))


def _check_template(template: dict) -> None:
    containers = template.get("containers") or []
    if not containers:
        raise api_error("INVALID_ARGUMENT", "service.template.containers: at least one container is required.")
    if len(containers) > 1:
        raise api_error("UNIMPLEMENTED", "GcpStandIn runs a single container per revision (no sidecars).")
    container = containers[0]
    if not container.get("image"):
        raise api_error("INVALID_ARGUMENT", "Violation in service.template.containers[0].image: field is required.")
    reserved = [e["name"] for e in container.get("env", []) if e.get("name") in RESERVED_ENV]
    if reserved:
        raise api_error("INVALID_ARGUMENT", f"The following reserved env names were provided: {', '.join(reserved)}. "
                        "These values are automatically set by the system.")
    if any("valueSource" in e for e in container.get("env", [])):
        raise api_error("UNIMPLEMENTED", "GcpStandIn does not resolve env valueSource (secrets).")
    if len(container.get("ports", [])) > 1:
        raise api_error("INVALID_ARGUMENT", "service.template.containers[0].ports: at most one port may be specified.")
    probe = container.get("startupProbe") or {}
    if "grpc" in probe:
        raise api_error("UNIMPLEMENTED", "GcpStandIn does not run gRPC startup probes.")
    _check_resources(container.get("resources", {}).get("limits", {}), template.get("nodeSelector", {}))
    scaling = template.get("scaling", {})
    low, high = scaling.get("minInstanceCount", 0), scaling.get("maxInstanceCount", 0)
    if high and low > high:
        raise api_error("INVALID_ARGUMENT", f"service.template.scaling: min_instance_count ({low}) must not exceed "
                        f"max_instance_count ({high}).")
    concurrency = template.get("maxInstanceRequestConcurrency", 80)
    if not 1 <= concurrency <= 1000:
        raise api_error("INVALID_ARGUMENT", f"service.template.max_instance_request_concurrency must be between 1 and "
                        f"1000, got {concurrency}.")


def _check_resources(limits: dict, node_selector: dict) -> None:
    cpu = _quantity(limits.get("cpu", "1"))
    if cpu is None or not (cpu in (1, 2, 4, 6, 8) or 0.08 <= cpu < 1):
        raise api_error("INVALID_ARGUMENT", f"Invalid value specified for cpu: '{limits.get('cpu')}'. Allowed values "
                        "are fractional values below 1 (at least 0.08) and 1, 2, 4, 6 or 8.")
    memory = _quantity(limits.get("memory", "512Mi"))
    if memory is None or not 128 * (1 << 20) <= memory <= 32 * GIB:
        raise api_error("INVALID_ARGUMENT", f"Invalid value specified for memory: '{limits.get('memory')}'. Memory "
                        "must be between 128Mi and 32Gi.")
    for above_gib, min_cpu in ((24, 8), (16, 6), (8, 4), (4, 2)):
        if memory > above_gib * GIB and cpu < min_cpu:
            raise api_error("INVALID_ARGUMENT", f"Invalid value specified for cpu. Memory above {above_gib}Gi requires "
                            f"at least {min_cpu} CPU.")
    gpu, accelerator = limits.get("nvidia.com/gpu"), node_selector.get("accelerator")
    if accelerator and accelerator not in ACCELERATORS:
        raise api_error("INVALID_ARGUMENT", f"Invalid accelerator '{accelerator}'; supported: "
                        f"{', '.join(sorted(ACCELERATORS))}.")
    if bool(gpu) != bool(accelerator):
        raise api_error("INVALID_ARGUMENT", "A GPU needs both the resource limit nvidia.com/gpu and "
                        "service.template.node_selector.accelerator.")
    if gpu and (gpu != "1" or cpu < 4 or memory < 16 * GIB):
        raise api_error("INVALID_ARGUMENT", "A GPU revision needs nvidia.com/gpu '1', at least 4 CPU and at least "
                        "16Gi of memory.")


def _listen_failure(port: int) -> str:
    return (f"The user-provided container failed to start and listen on the port defined provided by the PORT={port} "
            "environment variable within the allocated timeout. This can happen when the container port is "
            "misconfigured or if the timeout is too short. The health check timeout can be extended. Logs for this "
            "revision might contain more information.")


def _kind(target: dict) -> str:
    return target.get("type") or (REVISION if target.get("revision") else LATEST)


def _check_traffic(traffic: list[dict], revisions: set[str], new: _Revision | None) -> None:
    total = sum(t.get("percent", 0) for t in traffic)
    if total != 100:
        raise api_error("INVALID_ARGUMENT", f"service.traffic: traffic percentages must add up to 100, not {total}.")
    for target in traffic:
        kind, name = _kind(target), target.get("revision")
        if kind == LATEST and name:
            raise api_error("INVALID_ARGUMENT", "service.traffic: a LATEST target must not name a revision.")
        if kind == REVISION and not name:
            raise api_error("INVALID_ARGUMENT", "service.traffic: a REVISION target must name a revision.")
        if name and name not in revisions and not (new and name == new.name):
            raise api_error("INVALID_ARGUMENT", f"service.traffic: Revision '{name}' does not exist.")


def _probe_port(container: dict) -> int | None:
    probe = container.get("startupProbe") or {}
    return (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")


def _http_ok(port: int, http_get: dict, timeout: float) -> bool:
    headers = {h["name"]: h.get("value", "") for h in http_get.get("httpHeaders", [])}
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{http_get.get('path', '/')}", headers=headers, timeout=timeout)
        return 200 <= response.status_code < 400
    except httpx.HTTPError:
        return False


_P = r"/projects/(?P<project>[^/:]+)/locations/(?P<location>[^/:]+)"
_SVC = rf"/v2{_P}/services/(?P<id>[^/:]+)"
_OP = rf"/v[12]{_P}/operations/(?P<op>[^/:]+)"
_REPO = rf"/v1{_P}/repositories"
ROUTES = [(verb, re.compile(pattern), handler) for verb, pattern, handler in [
    ("POST", r"/token", "_token"),
    ("GET", rf"/v2{_P}/services", "_list_services"),
    ("POST", rf"/v2{_P}/services", "_create_service"),
    ("GET", _SVC, "_get_service"),
    ("PATCH", _SVC, "_update_service"),
    ("DELETE", _SVC, "_delete_service"),
    ("GET", _SVC + ":getIamPolicy", "_get_iam_policy"),
    ("POST", _SVC + ":getIamPolicy", "_get_iam_policy"),
    ("POST", _SVC + ":setIamPolicy", "_set_iam_policy"),
    ("POST", _SVC + ":testIamPermissions", "_test_iam_permissions"),
    ("GET", rf"/v[12]{_P}/operations", "_list_operations"),
    ("GET", _OP, "_get_operation"),
    ("DELETE", _OP, "_delete_operation"),
    ("POST", _OP + ":wait", "_wait_operation"),
    ("GET", _REPO, "_list_repositories"),
    ("POST", _REPO, "_create_repository"),
    ("GET", _REPO + "/(?P<id>[^/:]+)", "_get_repository"),
    ("DELETE", _REPO + "/(?P<id>[^/:]+)", "_delete_repository"),
]]


class _ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, standin: GcpStandIn):
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.standin = standin


class _ApiHandler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    protocol_version = "HTTP/1.1"
    server: _ApiServer

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.server.standin._dispatch(self.command, self.path, self.headers, raw)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle


_DENIED = {
    401: ("Unauthorized", "Your client does not have permission to the requested URL <code>{path}</code>."),
    403: ("Forbidden", "Your client does not have permission to get URL <code>{path}</code> from this server."),
    404: ("Not Found", "The requested URL <code>{path}</code> was not found on this server."),
    503: ("Service Unavailable", "The service has no ready revision to serve <code>{path}</code>."),
}


def _refusal(status: int, path: str) -> tuple[str, bytes]:
    """Cloud Run's front-end error page."""
    title, text = _DENIED[status]
    page = (f"<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n"
            f"<title>{status} {title}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n"
            f"<h1>Error: {title}</h1>\n<h2>{text.format(path=path)}</h2>\n<h2></h2>\n</body></html>\n")
    return "text/html; charset=UTF-8", page.encode()
