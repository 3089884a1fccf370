"""A local stand-in for a Kubernetes API server (v1.36) with one node whose pods are real containers.

One HTTP server on 127.0.0.1 (``endpoint``) answers the JSON REST API as kube-apiserver does, for the real
``kubernetes`` client (``Configuration.host = endpoint``, ``api_key = {"authorization": "Bearer <token>"}``):

* ``GET /version`` (unauthenticated); discovery at ``/api``, ``/apis``, ``/api/v1`` and ``/apis/{group}/v1``.
* ``apps/v1`` deployments, ``batch/v1`` jobs, ``v1`` services, persistentvolumeclaims, secrets and events,
  ``networking.k8s.io/v1`` ingresses: create (also with ``generateName``), read, replace (``PUT``, 409 Conflict
  on a stale ``resourceVersion``), patch, delete (``DeleteOptions`` with ``propagationPolicy``, the deprecated
  ``orphanDependents`` and ``preconditions``), list; ``/status`` (read, replace, patch) where the kind has a
  status. Deleting a Job without ``propagationPolicy`` orphans its pods, as batch/v1 does by default: they
  stay, without their ownerReferences; other kinds take their dependents with them (Background).
* ``v1`` pods: read, list, delete, and ``/log`` (``container``, ``tailLines``, ``timestamps``, ``sinceSeconds``,
  ``limitBytes``, ``previous``, ``follow``: chunked until the container stops); ``v1`` nodes: read and list
  (one node, ``standin-node``).
* Lists take ``labelSelector`` (``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``) and
  ``fieldSelector`` (``path=value`` / ``path!=value`` over any dotted field, e.g. ``involvedObject.name=web-x``);
  ``/api/v1/<plural>`` and ``/apis/{group}/v1/<plural>`` list across namespaces. Any namespace name is accepted
  without being created.

Every call but ``/version`` needs ``Authorization: Bearer <token>`` (401 otherwise). Errors are ``Status``
objects with the apiserver's reasons and wording: 404 NotFound, 409 AlreadyExists / Conflict, 422 Invalid
(with ``details.causes``), 401 Unauthorized, 400 BadRequest, 405 MethodNotAllowed, 415 UnsupportedMediaType.

Writes are checked as the apiserver does: every created, replaced or patched object against the strict JSON
schema of v1.36 (``kubernetes-validate``), so unknown fields (``<path>: field not declared in schema``) and
wrong types are 422 Invalid; then the apiserver's defaulting (replicas, strategy, imagePullPolicy, probe
periods, service protocol and targetPort, a Job's ``completions`` and ``parallelism`` 1 (``completions`` stays
unset when only ``parallelism`` is given), ``backoffLimit`` 6, ``completionMode``, ``suspend``,
``podReplacementPolicy``, ...) and the rules a schema cannot say: names (RFC 1123 / RFC 1035 for services),
labels, unique container/volume/port names, mounts naming a volume, resource quantities (requests <= limits,
extended resources whole and equal), the selector matching the template's labels and being immutable,
restartPolicy (Always for deployments, OnFailure or Never for jobs), service ports and nodePorts (30000-32767,
"provided port is already allocated"), ingress paths and backends, secrets' base64 and ``.dockerconfigjson``,
PVC access modes, size and immutable spec. A new Job without ``manualSelector: true`` gets the generated
selector (``batch.kubernetes.io/controller-uid: <uid>``) and template labels (``batch.kubernetes.io/job-name``,
``batch.kubernetes.io/controller-uid``, ``job-name``, ``controller-uid``; also its own labels when it has none),
and a selector of its own is refused ("`selector` not auto-generated"); its counts and deadlines must not be
negative, and ``template``, ``selector``, ``completions`` and ``completionMode`` are immutable ("field is
immutable"). ``metadata.generation`` is bumped when ``spec`` changes; a no-op write keeps the
``resourceVersion`` (one global counter).

Controllers (background threads, every 0.5 s):

* deployments keep ``spec.replicas`` pods of the current template (label ``pod-template-hash``, name
  ``<deployment>-<hash>-<5 chars>``, owned by the deployment), rolling by ``maxSurge``/``maxUnavailable`` (or
  ``Recreate``), and write status counts and the ``Available``/``Progressing`` conditions (``ReplicaSetUpdated``,
  ``NewReplicaSetAvailable``, ``ProgressDeadlineExceeded`` once ``progressDeadlineSeconds`` pass without progress).
* jobs keep ``min(parallelism, completions - succeeded)`` pods running (without ``completions``: ``parallelism``
  until one pod succeeded), named ``<job>-<5 chars>``, with the template's labels, owned by the job
  (``SuccessfulCreate``/``SuccessfulDelete`` events from ``job-controller``). Each pod that ends counts once
  in ``status.succeeded`` or ``status.failed`` (a pod deleted before it succeeded counts as failed, as the job
  controller counts it); after a failure the next pod waits for the back-off. ``failed > backoffLimit`` (with
  ``OnFailure``: the restarts of the active pods reaching ``backoffLimit``) or ``activeDeadlineSeconds`` past
  ``startTime`` add ``FailureTarget`` (``BackoffLimitExceeded``: "Job has reached the specified backoff
  limit", ``DeadlineExceeded``: "Job was active longer than specified deadline") and delete the active pods;
  ``succeeded >= completions`` adds ``SuccessCriteriaMet`` (``CompletionsReached``: "Reached expected number of
  succeeded pods"). Once none of its pods is running or terminating, ``Failed`` (a Warning event of that
  reason) or ``Complete`` (``completionTime``, a ``Completed`` event) follows. ``suspend`` deletes the active
  pods (``Suspended`` condition; resuming sets ``startTime`` anew); ``ttlSecondsAfterFinished`` deletes a
  finished job with its pods; a ``managedBy`` other than ``kubernetes.io/job-controller`` is left alone. The
  status has ``startTime``, ``active``/``succeeded``/``failed`` (omitted at 0), ``ready``, ``terminating`` and
  ``uncountedTerminatedPods: {}``. Pods of a finished job stay (with their logs) until deleted.
* the scheduler sums each pod's requests (limits where no request) of cpu, memory and extended resources
  (``nvidia.com/gpu``, ...) and pods against the node minus the unfinished pods already bound to it; else the
  pod stays Pending, ``PodScheduled`` False ``Unschedulable`` ``0/1 nodes are available: 1 Insufficient
  nvidia.com/gpu.``, with a ``FailedScheduling`` event. A missing PVC keeps a pod unscheduled the same way.
* the kubelet runs a pod as a pause container (the base image running ``sleep infinity``, labelled with the
  instance id) that owns the network namespace and publishes every containerPort and probe port on
  127.0.0.1, plus one container per spec container with ``network_mode=container:<pause>`` (containers share
  localhost). ``command``/``args``/``env`` (values, with ``$(VAR)`` expansion)/``workingDir`` as Kubernetes
  maps them. Images are pulled per ``imagePullPolicy`` with the pod's ``imagePullSecrets``
  (``kubernetes.io/dockerconfigjson``); a failed pull is ``ErrImagePull`` then ``ImagePullBackOff`` with
  ``Failed``/``BackOff`` events. A container that exits is restarted after a back-off (``CrashLoopBackOff``,
  ``lastState.terminated``, ``restartCount``) as ``restartPolicy`` says (``Always``; ``OnFailure`` unless it
  exited 0); one that will not run again keeps ``state.terminated`` (``exitCode``, ``Completed``/``Error``), and
  once none will, the pod is ``Succeeded`` (all exited 0) or ``Failed`` (``Ready`` False ``PodCompleted`` /
  ``PodFailed``), its pause container is stopped and its containers are kept, their logs readable, until the
  pod is deleted. ``readinessProbe`` (httpGet, tcpSocket, exec) runs through
  the published port with the probe's delay, period, thresholds and timeout; ``Unhealthy`` events.
  Probe timings keep Kubernetes' defaults (``periodSeconds`` 10) unless given. Volumes: ``emptyDir`` (a
  docker volume; ``medium: Memory`` a tmpfs one sized by ``sizeLimit``, e.g. at /dev/shm), ``hostPath``
  (with its ``type`` checks; a missing path is made for ``""``, ``DirectoryOrCreate`` and ``FileOrCreate``),
  ``nfs`` (``nfs_dir(server, path)``), ``persistentVolumeClaim`` (a directory per claim under ``host_root``);
  ``readOnly`` and ``subPath`` (not on emptyDir) are honoured; other volume types wait with ``FailedMount``.
* services get a clusterIP (10.96.x.y); each NodePort (and LoadBalancer) port listens on 127.0.0.1:<nodePort>
  and relays TCP to a Ready selected pod (targetPort by number or name), round-robin; no ready pod closes the
  connection. Ingresses are served by one HTTP proxy on 127.0.0.1:``ingress_port`` (plays the controller's
  :80): host rules (``*.`` wildcards), the longest matching path (Exact, Prefix by path element,
  ImplementationSpecific as a string prefix), then ``defaultBackend``; nginx-like 404 when nothing matches,
  503 when no ready backend. Their ``status.loadBalancer.ingress`` is ``[{"ip": node_ip}]``.

Deviations from a real cluster, chosen for tests: no ReplicaSets (pods are owned by the deployment
itself); no cluster DNS nor kube-proxy (clusterIPs lead nowhere and service names do not resolve in pods:
reach services through their NodePorts or the ingress; ``podIP`` is the pause container's bridge address);
no watches (``watch=true`` is 400), ``limit`` is ignored (no paging); no namespaces, configmaps or service
accounts as objects, no CronJobs; pods are made only by deployments and jobs (creating or changing pods is
405); strategic merge
patch is applied as a JSON merge patch (RFC 7386: lists such as ``containers`` are replaced whole), JSON
patch and apply patches are 415; schema and decoding errors are 422 Invalid (the apiserver says 400 for
some); ``minReadySeconds``, ``paused``, affinity, taints, init containers, ``envFrom``,
``valueFrom``, liveness and startup probes, grpc probes (they pass), graceful termination (containers are
killed at once), finalizers, PVC protection, storage classes and capacity, resource limits on the containers
and extended resources (no devices are given) are not modelled; Foreground deletion behaves as Background;
PVCs are Bound at creation and their data directory goes with them; restarts reuse the same docker
container, so a container's log holds every run and ``previous=true`` answers the same log; back-offs are
1 s doubling to 10 s (not 10 s to 5 min; for a job's failed pods, not 10 s to 6 min, and counted over all its
failures rather than the consecutive ones); ``Available`` is ``availableReplicas >= replicas -
maxUnavailable`` with ready pods counted as available; ``node_capacity`` is laid over the default capacity
and ``node_labels`` over the node's default labels, which a pod's ``nodeSelector`` must match ("1 node(s)
didn't match Pod's node affinity/selector.").
Jobs: ``completionMode: Indexed`` and ``podFailurePolicy`` are 422 (not modelled), as are ``successPolicy``,
``backoffLimitPerIndex`` and ``maxFailedIndexes`` (they need Indexed); the template of a suspended job is as
immutable as any (no mutable scheduling directives nor resources); pods carry no
``batch.kubernetes.io/job-tracking`` finalizer (the controller counts a pod when it sees it end or when it
goes); a pod deleted while running goes at once rather than through the Failed phase; deleting a job
without ``propagationPolicy`` gives no ``Warning`` header; ``podReplacementPolicy: Failed`` only holds back
the replacements while pods are terminating.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import itertools
import json
import logging
import math
import os
import random
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
import functools
from http.server import BaseHTTPRequestHandler
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Self
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonschema
from docker.errors import APIError
from docker.errors import NotFound as DockerNotFound
from docker.types import Mount
from docker.utils import parse_repository_tag
from kubernetes.utils.quantity import parse_quantity
from referencing import Registry, Resource

from tests.standins.common import LoopbackServer, RecordingStandIn, ServiceProxy, ensure_image, remove_container, tcp_ok

LOG = logging.getLogger(__name__)
LABEL = "io.cloud-deploy.standin"
PAUSE_IMAGE = os.environ.get("CLOUD_DEPLOY_BASE_IMAGE", "cloud-deploy/debian-python:bookworm")
NODE_NAME = "standin-node"
DEFAULT_CAPACITY = {"cpu": "8", "memory": "32Gi", "pods": "110"}
KUBE_VERSION = "v1.36.0"
SCHEMA_DIR = "v1.36.0-local-strict"
TICK = 0.5
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 10.0
NODE_PORTS = range(30000, 32768)
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated name suffixes
GENERATED_NAME_BASE = 58  # generateName keeps this much of the base, so that the name fits 63 characters
JSON_TYPE, TEXT_TYPE = "application/json", "text/plain"
MERGE_PATCHES = {"application/merge-patch+json", "application/strategic-merge-patch+json"}
PROPAGATION = {"Orphan", "Background", "Foreground"}
STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
SERVICE_TYPES = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
ACCESS_MODES = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]
PATH_TYPES = ["Exact", "Prefix", "ImplementationSpecific"]
JOB_RESTART_POLICIES = ["OnFailure", "Never"]
JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
JOB_CONTROLLER = "kubernetes.io/job-controller"
FINISHED_PHASES = ("Succeeded", "Failed")
WAITING_TEXT = {"ErrImagePull": "trying and failing to pull image",
                "ImagePullBackOff": "trying and failing to pull image", "ErrImageNeverPull": "image can't be pulled"}
VERSION_INFO = {"major": "1", "minor": "36", "emulationMajor": "1", "emulationMinor": "36",
                "minCompatibilityMajor": "1", "minCompatibilityMinor": "35", "gitVersion": KUBE_VERSION,
                "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2026-04-22T00:00:00Z",
                "goVersion": "go1.25.5", "compiler": "gc", "platform": "linux/amd64"}


# errors


class ApiError(Exception):
    """A ``Status`` answer, raised from anywhere in a request."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                     "reason": reason, **({"details": details} if details is not None else {}), "code": code}


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _details(kind: Kind, name: str, **extra) -> dict:
    return {"name": name, **({"group": kind.group} if kind.group else {}), "kind": kind.plural, **extra}


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.resource} "{name}" not found', _details(kind, name))


def already_exists(kind: Kind, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{kind.resource} "{name}" already exists', _details(kind, name))


def conflict(kind: Kind, name: str, why: str = "the object has been modified; please apply your changes to "
                                               "the latest version and try again") -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.resource} "{name}": {why}',
                    _details(kind, name))


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


class Problems:
    """Field errors gathered while validating one object, in the apiserver's wording."""

    def __init__(self):
        self.errors: list[FieldError] = []

    def add(self, field_path: str, reason: str, detail: str) -> None:
        self.errors.append(FieldError(field_path, reason, detail))

    def invalid(self, field_path: str, value, detail: str) -> None:
        self.add(field_path, "FieldValueInvalid", f"Invalid value: {_shown(value)}: {detail}")

    def required(self, field_path: str, detail: str = "") -> None:
        self.add(field_path, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))

    def duplicate(self, field_path: str, value) -> None:
        self.add(field_path, "FieldValueDuplicate", f"Duplicate value: {_shown(value)}")

    def not_found(self, field_path: str, value) -> None:
        self.add(field_path, "FieldValueNotFound", f"Not found: {_shown(value)}")

    def unsupported(self, field_path: str, value, supported: list[str]) -> None:
        choices = ", ".join(_shown(s) for s in supported)
        self.add(field_path, "FieldValueNotSupported",
                 f"Unsupported value: {_shown(value)}: supported values: {choices}")

    def forbidden(self, field_path: str, detail: str) -> None:
        self.add(field_path, "FieldValueForbidden", f"Forbidden: {detail}")

    def raise_for(self, kind: Kind, name: str) -> None:
        if not self.errors:
            return
        text = str(self.errors[0]) if len(self.errors) == 1 else "[" + ", ".join(map(str, self.errors)) + "]"
        causes = [{"reason": e.reason, "message": e.detail, "field": e.field} for e in self.errors]
        raise ApiError(422, "Invalid", f'{kind.qualified} "{name}" is invalid: {text}',
                       {"name": name, **({"group": kind.group} if kind.group else {}), "kind": kind.kind,
                        "causes": causes})


def _shown(value) -> str:
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return "map[string]string" + json.dumps(value, separators=(",", ":"))
    return json.dumps(value, separators=(",", ":"))


# kinds and their schemas


@dataclass(frozen=True)
class Kind:
    plural: str
    kind: str
    group: str = ""
    namespaced: bool = True
    writable: bool = True  # False: made by the stand-in itself (pods, nodes)
    deletable: bool = True
    has_status: bool = True  # a status subresource: writes to the object itself keep the status
    returns_deleted: bool = False  # DELETE answers the deleted object rather than a Status
    default_propagation: str = "Background"  # when DELETE names neither propagationPolicy nor orphanDependents

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def schema_file(self) -> str:
        group = f"{self.group.split('.')[0]}-" if self.group else ""
        return f"{self.kind.lower()}-{group}v1.json"

    @property
    def verbs(self) -> list[str]:
        return (["create", "patch", "update"] if self.writable else []) + (["delete"] if self.deletable else []) \
            + ["get", "list"]


KINDS = {kind.plural: kind for kind in [
    Kind("deployments", "Deployment", "apps"),
    Kind("pods", "Pod", writable=False, returns_deleted=True),
    Kind("services", "Service", returns_deleted=True),
    Kind("persistentvolumeclaims", "PersistentVolumeClaim", returns_deleted=True),
    Kind("secrets", "Secret", has_status=False),
    Kind("events", "Event", has_status=False),
    Kind("nodes", "Node", namespaced=False, writable=False, deletable=False),
    Kind("ingresses", "Ingress", "networking.k8s.io"),
    Kind("jobs", "Job", "batch", default_propagation="Orphan"),  # batch/v1 keeps its pods by default
]}


@functools.cache
def _validator(schema_file: str) -> jsonschema.Draft202012Validator:
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / SCHEMA_DIR
    definitions = Resource.from_contents(json.loads((folder / "_definitions.json").read_text()))
    return jsonschema.Draft202012Validator(json.loads((folder / schema_file).read_text()),
                                           registry=definitions @ Registry())


def schema_problems(kind: Kind, obj: dict) -> Problems:
    """The strict schema's complaints: unknown fields one by one, the rest with jsonschema's message."""
    problems = Problems()
    for error in sorted(_validator(kind.schema_file).iter_errors(obj), key=lambda e: [str(p) for p in e.path]):
        where = _field_path(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            for unknown in sorted(set(error.instance) - set(error.schema.get("properties", {}))):
                problems.add(f"{where}.{unknown}" if where else unknown, "FieldValueInvalid",
                             "field not declared in schema")
        else:
            problems.add(where or "<root>", "FieldValueInvalid", f"Invalid value: {error.message}")
    return problems


def _field_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


# small helpers


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(timestamp: str) -> float:
    return time.time() - datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _docker_time(text: str) -> str:
    return text[:19] + "Z"


def _suffix(length: int = 5) -> str:
    return "".join(random.choices(NAME_ALPHABET, k=length))


def template_hash(template: dict) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(NAME_ALPHABET[byte % len(NAME_ALPHABET)] for byte in digest[:10])


def without_nulls(value):
    """JSON nulls read as absent fields, as the apiserver's decoder does."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _int_param(query: dict[str, str], name: str) -> int | None:
    if name not in query:
        return None
    try:
        return int(query[name])
    except ValueError:
        raise bad_request(f"invalid {name} {query[name]!r}: must be an integer") from None


def _bool_param(query: dict[str, str], name: str) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (the Python client sends ``True``)."""
    return query.get(name) in ("1", "t", "T", "true", "TRUE", "True")


def registry_host(image: str) -> str:
    repository = parse_repository_tag(image)[0]
    first = repository.split("/", 1)[0]
    return first if "/" in repository and re.search(r"[.:]|^localhost$", first) else "docker.io"


def default_pull_policy(image: str) -> str:
    tag = parse_repository_tag(image)[1]
    return "Always" if tag in (None, "latest") else "IfNotPresent"


def _docker_error(error: Exception) -> str:
    return str(error.explanation) if isinstance(error, APIError) and error.explanation else str(error)


# selectors


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_EQUALITY = re.compile(rf"\s*({_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)\s*")
_SET = re.compile(rf"\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*")
_EXISTS = re.compile(rf"\s*(!?)\s*({_KEY})\s*")


def label_selector(text: str) -> Callable[[dict], bool]:
    """A ``labelSelector`` query parameter as a test on a labels dict."""
    tests = [_requirement(part) for part in re.split(r",(?![^(]*\))", text) if part.strip()]
    return lambda labels: all(test(labels) for test in tests)


def _requirement(text: str) -> Callable[[dict], bool]:
    if match := _EQUALITY.fullmatch(text):
        key, operator, value = match.groups()
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _SET.fullmatch(text):
        key, operator, values = match[1], match[2], {v.strip() for v in match[3].split(",")}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EXISTS.fullmatch(text):
        negated, key = bool(match[1]), match[2]
        return lambda labels: (key in labels) != negated
    raise bad_request(f"unable to parse requirement: {text.strip()!r}")


def field_selector(text: str) -> Callable[[dict], bool]:
    """A ``fieldSelector`` query parameter (``a.b=c``, ``a.b!=c``) as a test on an object."""
    tests = []
    for part in filter(str.strip, text.split(",")):
        match = re.fullmatch(r"\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not match:
            raise bad_request(f"invalid selector: {part!r}; can't understand {part.strip()!r}")
        tests.append((match[1].split("."), match[2] == "!=", match[3]))
    return lambda obj: all((_dotted(obj, path) == value) != negated for path, negated, value in tests)


def _dotted(obj, path: list[str]) -> str:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


def selector_matches(selector: dict, labels: dict) -> bool:
    """A ``LabelSelector`` object (matchLabels, matchExpressions) against labels."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, values, present = expression["key"], set(expression.get("values") or []), expression["key"] in labels
        matched = {"In": present and labels.get(key) in values, "NotIn": labels.get(key) not in values,
                   "Exists": present, "DoesNotExist": not present}.get(expression["operator"], False)
        if not matched:
            return False
    return True


# validation rules the schema cannot say


_RFC1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_RFC1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_RFC1035_LABEL = "[a-z]([-a-z0-9]*[a-z0-9])?"
NAME_RULES = {
    "label": (_RFC1123_LABEL, 63, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
              "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
              f"used for validation is '{_RFC1123_LABEL}')"),
    "subdomain": (_RFC1123_SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                  "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
                  f"'example.com', regex used for validation is '{_RFC1123_SUBDOMAIN}')"),
    "dns1035": (_RFC1035_LABEL, 63, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                "start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
                f"'abc-123', regex used for validation is '{_RFC1035_LABEL}')"),
}
_LABEL_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_ENV_NAME = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_SECRET_KEY = "[-._a-zA-Z0-9]+"


def check_name(problems: Problems, where: str, value: str, rule: str) -> None:
    pattern, limit, explanation = NAME_RULES[rule]
    if len(value) > limit:
        problems.invalid(where, value, f"must be no more than {limit} characters")
    elif not re.fullmatch(pattern, value):
        problems.invalid(where, value, explanation)


def check_port_name(problems: Problems, where: str, name: str) -> None:
    """IANA_SVC_NAME: at most 15 lowercase alphanumerics or '-', a letter among them, no '--' nor edge '-'."""
    if len(name) > 15:
        problems.invalid(where, name, "must be no more than 15 characters")
    elif not re.fullmatch("[-a-z0-9]+", name):
        problems.invalid(where, name, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    elif "--" in name or name.startswith("-") or name.endswith("-"):
        problems.invalid(where, name, "must not contain consecutive hyphens nor begin or end with a hyphen")
    elif not re.search("[a-z]", name):
        problems.invalid(where, name, "must contain at least one letter (a-z)")


def check_port_number(problems: Problems, where: str, port: int) -> None:
    if not 1 <= port <= 65535:
        problems.invalid(where, port, "must be between 1 and 65535, inclusive")


def check_labels(problems: Problems, where: str, labels: dict) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not re.fullmatch(_RFC1123_SUBDOMAIN, prefix)) or len(name) > 63 \
                or not re.fullmatch(_LABEL_NAME, name):
            problems.invalid(where, key, "name part must consist of alphanumeric characters, '-', '_' or '.', and "
                             "must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                             f"'123-abc', regex used for validation is '{_LABEL_NAME}')")
        if value and (len(value) > 63 or not re.fullmatch(_LABEL_NAME, value)):
            problems.invalid(where, value, "a valid label must be an empty string or consist of alphanumeric "
                             "characters, '-', '_' or '.', and must start and end with an alphanumeric character "
                             f"(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                             f"'({_LABEL_NAME})?')")


def check_metadata(problems: Problems, kind: Kind, obj: dict) -> None:
    meta = obj["metadata"]
    check_name(problems, "metadata.name", meta["name"], "dns1035" if kind.plural == "services" else "subdomain")
    check_labels(problems, "metadata.labels", meta.get("labels") or {})


def is_extended_resource(name: str) -> bool:
    return name not in STANDARD_RESOURCES and not name.startswith("hugepages-")


def check_resources(problems: Problems, resources: dict, where: str) -> None:
    amounts: dict[tuple[str, str], Decimal] = {}
    for group in ("limits", "requests"):
        for name, value in (resources.get(group) or {}).items():
            if is_extended_resource(name) and "/" not in name:
                problems.invalid(f"{where}.{group}[{name}]", name,
                                 "must be a standard resource type or fully qualified")
                continue
            try:
                amount = parse_quantity(value)
            except ValueError:
                problems.invalid(f"{where}.{group}[{name}]", value, "quantities must match the regular expression "
                                 "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
                continue
            if amount < 0:
                problems.invalid(f"{where}.{group}[{name}]", value, "must be greater than or equal to 0")
            elif is_extended_resource(name) and amount % 1:
                problems.invalid(f"{where}.{group}[{name}]", value, "must be an integer")
            amounts[group, name] = amount
    for (group, name), request in amounts.items():
        if group != "requests":
            continue
        limit, shown = amounts.get(("limits", name)), resources["requests"][name]
        if limit is None:
            if is_extended_resource(name):
                problems.required(f"{where}.limits", "Limit must be set for non overcommitable resources")
            continue
        limit_shown = resources["limits"][name]
        if is_extended_resource(name) and limit != request:
            problems.invalid(f"{where}.requests", shown, f"must be equal to {name} limit of {limit_shown}")
        elif request > limit:
            problems.invalid(f"{where}.requests", shown, f"must be less than or equal to {name} limit of {limit_shown}")


def check_probe(problems: Problems, probe: dict, where: str) -> None:
    handlers = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if h in probe]
    if not handlers:
        problems.required(where, "must specify a handler type")
    elif len(handlers) > 1:
        problems.forbidden(f"{where}.{handlers[1]}", "may not specify more than 1 handler type")
    port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
    if isinstance(port, int):
        check_port_number(problems, f"{where}.{handlers[0]}.port", port)
    elif isinstance(port, str):
        check_port_name(problems, f"{where}.{handlers[0]}.port", port)


def check_container(problems: Problems, container: dict, where: str, volumes: set[str]) -> None:
    port_names: set[str] = set()
    for i, port in enumerate(container.get("ports") or []):
        check_port_number(problems, f"{where}.ports[{i}].containerPort", port["containerPort"])
        if "name" in port:
            check_port_name(problems, f"{where}.ports[{i}].name", port["name"])
            if port["name"] in port_names:
                problems.duplicate(f"{where}.ports[{i}].name", port["name"])
            port_names.add(port["name"])
    mount_paths: set[str] = set()
    for i, mount in enumerate(container.get("volumeMounts") or []):
        if mount["name"] not in volumes:
            problems.not_found(f"{where}.volumeMounts[{i}].name", mount["name"])
        if mount["mountPath"] in mount_paths:
            problems.invalid(f"{where}.volumeMounts[{i}].mountPath", mount["mountPath"], "must be unique")
        mount_paths.add(mount["mountPath"])
        sub_path = mount.get("subPath", "")
        if sub_path.startswith("/") or ".." in PurePosixPath(sub_path).parts:
            problems.invalid(f"{where}.volumeMounts[{i}].subPath", sub_path, "must be a relative path without '..'")
    for i, variable in enumerate(container.get("env") or []):
        if not re.fullmatch(_ENV_NAME, variable["name"]):
            problems.invalid(f"{where}.env[{i}].name", variable["name"], "a valid environment variable name must "
                             "consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a "
                             f"digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for "
                             f"validation is '{_ENV_NAME}')")
    check_resources(problems, container.get("resources") or {}, f"{where}.resources")
    for probe_field in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe_field in container:
            check_probe(problems, container[probe_field], f"{where}.{probe_field}")


def check_pod_spec(problems: Problems, spec: dict, where: str, restart_policies: list[str]) -> None:
    volumes: set[str] = set()
    for i, volume in enumerate(spec.get("volumes") or []):
        check_name(problems, f"{where}.volumes[{i}].name", volume["name"], "label")
        if volume["name"] in volumes:
            problems.duplicate(f"{where}.volumes[{i}].name", volume["name"])
        volumes.add(volume["name"])
        sources = [key for key in volume if key != "name"]
        if not sources:
            problems.required(f"{where}.volumes[{i}]", "must specify a volume type")
        elif len(sources) > 1:
            problems.forbidden(f"{where}.volumes[{i}].{sources[1]}", "may not specify more than 1 volume type")
    containers = spec.get("containers") or []
    if not containers:
        problems.required(f"{where}.containers")
    names: set[str] = set()
    for i, container in enumerate(containers):
        check_name(problems, f"{where}.containers[{i}].name", container["name"], "label")
        if container["name"] in names:
            problems.duplicate(f"{where}.containers[{i}].name", container["name"])
        names.add(container["name"])
        if not container.get("image"):
            problems.required(f"{where}.containers[{i}].image")
        check_container(problems, container, f"{where}.containers[{i}]", volumes)
    policy = spec.get("restartPolicy", "Always")
    if policy == "Always" and policy not in restart_policies:  # the pod default: the apiserver asks for a value
        problems.required(f"{where}.restartPolicy", "valid values: " + ", ".join(map(_shown, restart_policies)))
    elif policy not in restart_policies:
        problems.unsupported(f"{where}.restartPolicy", policy, restart_policies)


def _percent_or_int(problems: Problems, where: str, value) -> None:
    if isinstance(value, str) and not re.fullmatch(r"[0-9]+%", value):
        problems.invalid(where, value, "a valid percent string must be a numeric string followed by an ending '%' "
                         "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")
    elif isinstance(value, str) and int(value[:-1]) > 100:
        problems.invalid(where, value, "must not be greater than 100%")
    elif isinstance(value, int) and value < 0:
        problems.invalid(where, value, "must be greater than or equal to 0")


def _is_zero(value) -> bool:
    return value in (0, "0%")


def check_deployment(problems: Problems, obj: dict, old: dict | None) -> None:
    spec = obj["spec"]
    if spec["replicas"] < 0:
        problems.invalid("spec.replicas", spec["replicas"], "must be greater than or equal to 0")
    selector, template = spec.get("selector"), spec["template"]
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        problems.required("spec.selector")
    elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
        problems.invalid("spec.selector", selector, "empty selector is invalid for deployment")
    elif not selector_matches(selector, labels):
        problems.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    if old is not None and selector != old["spec"].get("selector"):
        problems.invalid("spec.selector", selector, "field is immutable")
    check_labels(problems, "spec.template.metadata.labels", labels)
    strategy = spec["strategy"]
    if strategy["type"] not in ("RollingUpdate", "Recreate"):
        problems.unsupported("spec.strategy.type", strategy["type"], ["Recreate", "RollingUpdate"])
    rolling = strategy.get("rollingUpdate")
    if strategy["type"] == "Recreate" and rolling is not None:
        problems.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
    elif rolling is not None:
        _percent_or_int(problems, "spec.strategy.rollingUpdate.maxSurge", rolling["maxSurge"])
        _percent_or_int(problems, "spec.strategy.rollingUpdate.maxUnavailable", rolling["maxUnavailable"])
        if _is_zero(rolling["maxSurge"]) and _is_zero(rolling["maxUnavailable"]):
            problems.invalid("spec.strategy.rollingUpdate.maxUnavailable", rolling["maxUnavailable"],
                             "may not be 0 when `maxSurge` is 0")
    if spec["progressDeadlineSeconds"] <= spec.get("minReadySeconds", 0):
        problems.invalid("spec.progressDeadlineSeconds", spec["progressDeadlineSeconds"],
                         "must be greater than minReadySeconds")
    check_pod_spec(problems, template["spec"], "spec.template.spec", ["Always"])


def check_job(problems: Problems, obj: dict, old: dict | None) -> None:
    spec = obj["spec"]
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"):
        if spec.get(key, 0) < 0:
            problems.invalid(f"spec.{key}", spec[key], "must be greater than or equal to 0")
    if old is None and not spec.get("manualSelector"):
        check_generated_selector(problems, obj)
    labels = (spec["template"].get("metadata") or {}).get("labels") or {}
    selector = spec.get("selector")
    if not selector:
        problems.required("spec.selector")
    elif not selector_matches(selector, labels):
        problems.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    check_labels(problems, "spec.template.metadata.labels", labels)
    check_job_modes(problems, spec)
    check_pod_spec(problems, spec["template"]["spec"], "spec.template.spec", JOB_RESTART_POLICIES)
    for key in ("active", "succeeded", "failed", "ready", "terminating"):
        if (obj.get("status") or {}).get(key, 0) < 0:
            problems.invalid(f"status.{key}", obj["status"][key], "must be greater than or equal to 0")
    if old is not None:
        for key in ("completions", "selector", "template", "completionMode"):
            if spec.get(key) != old["spec"].get(key):
                problems.invalid(f"spec.{key}", spec.get(key), "field is immutable")


def check_generated_selector(problems: Problems, obj: dict) -> None:
    """Without ``manualSelector`` the template must carry the generated labels and the selector pick them."""
    meta, spec = obj["metadata"], obj["spec"]
    labels = (spec["template"].get("metadata") or {}).get("labels") or {}
    expected = {**{key: meta["uid"] for key in JOB_UID_LABELS}, **{key: meta["name"] for key in JOB_NAME_LABELS}}
    for key, value in expected.items():
        where = f"spec.template.metadata.labels[{key}]"
        if key not in labels:
            problems.required(where, value)
        elif labels[key] != value:
            problems.invalid(where, labels, f"must be '{value}'")
    if spec.get("selector") and not selector_matches(spec["selector"], expected):
        problems.invalid("spec.selector", spec["selector"], "`selector` not auto-generated")


def check_job_modes(problems: Problems, spec: dict) -> None:
    mode = spec["completionMode"]
    if mode not in ("NonIndexed", "Indexed"):
        problems.unsupported("spec.completionMode", mode, ["NonIndexed", "Indexed"])
    elif mode == "Indexed":
        problems.forbidden("spec.completionMode", "Indexed jobs are not modelled by the Kubernetes stand-in")
    else:
        for key in ("backoffLimitPerIndex", "maxFailedIndexes", "successPolicy"):
            if key in spec:
                problems.invalid(f"spec.{key}", spec[key], "requires indexed completion mode")
    if "podFailurePolicy" in spec:
        problems.forbidden("spec.podFailurePolicy", "pod failure policies are not modelled by the Kubernetes stand-in")
    if spec["podReplacementPolicy"] not in ("Failed", "TerminatingOrFailed"):
        problems.unsupported("spec.podReplacementPolicy", spec["podReplacementPolicy"],
                             ["Failed", "TerminatingOrFailed"])


def check_service(problems: Problems, obj: dict, old: dict | None) -> None:
    spec = obj["spec"]
    service_type = spec["type"]
    if service_type not in SERVICE_TYPES:
        problems.unsupported("spec.type", service_type, SERVICE_TYPES)
    ports = spec.get("ports") or []
    if not ports and service_type != "ExternalName" and spec.get("clusterIP") != "None":
        problems.required("spec.ports")
    if service_type == "ExternalName" and not spec.get("externalName"):
        problems.required("spec.externalName")
    names: set[str] = set()
    node_ports: set[int] = set()
    for i, port in enumerate(ports):
        where = f"spec.ports[{i}]"
        if len(ports) > 1 and not port.get("name"):
            problems.required(f"{where}.name")
        elif port.get("name") in names:
            problems.duplicate(f"{where}.name", port["name"])
        names.add(port.get("name"))
        check_port_number(problems, f"{where}.port", port["port"])
        target = port["targetPort"]
        if isinstance(target, int):
            check_port_number(problems, f"{where}.targetPort", target)
        else:
            check_port_name(problems, f"{where}.targetPort", target)
        node_port = port.get("nodePort")
        if node_port is None:
            continue
        if service_type not in ("NodePort", "LoadBalancer"):
            problems.forbidden(f"{where}.nodePort", f"may not be used when `type` is '{service_type}'")
        elif node_port not in NODE_PORTS:
            problems.invalid(f"{where}.nodePort", node_port, "provided port is not in the valid range. The range of "
                             f"valid ports is {NODE_PORTS.start}-{NODE_PORTS.stop - 1}")
        elif node_port in node_ports:
            problems.duplicate(f"{where}.nodePort", node_port)
        node_ports.add(node_port)
    if old is not None and spec.get("clusterIP") not in (None, old["spec"].get("clusterIP")):
        problems.invalid("spec.clusterIPs[0]", spec["clusterIP"], "may not change once set")


def check_pvc(problems: Problems, obj: dict, old: dict | None) -> None:
    spec = obj["spec"]
    modes = spec.get("accessModes") or []
    if not modes:
        problems.required("spec.accessModes", "at least 1 access mode is required")
    for i, mode in enumerate(modes):
        if mode not in ACCESS_MODES:
            problems.unsupported(f"spec.accessModes[{i}]", mode, ACCESS_MODES)
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    if storage is None:
        problems.required("spec.resources[storage]")
    else:
        try:
            if parse_quantity(storage) <= 0:
                problems.invalid("spec.resources[storage]", storage, "must be greater than zero")
        except ValueError:
            problems.invalid("spec.resources[storage]", storage, "quantities must match the regular expression "
                             "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    if old is not None and {**spec, "resources": None} != {**old["spec"], "resources": None}:
        problems.forbidden("spec", "spec is immutable after creation except resources.requests and "
                           "volumeAttributesClassName for bound claims")


def check_secret(problems: Problems, obj: dict, old: dict | None) -> None:
    data = obj.get("data") or {}
    for key, value in data.items():
        if not re.fullmatch(_SECRET_KEY, key):
            problems.invalid(f"data[{key}]", key, "a valid config key must consist of alphanumeric characters, '-', "
                             f"'_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
                             f"validation is '{_SECRET_KEY}')")
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error as error:
            problems.invalid(f"data[{key}]", "<secret contents redacted>", f"illegal base64 data: {error}")
    if obj["type"] == "kubernetes.io/dockerconfigjson":
        if ".dockerconfigjson" not in data:
            problems.required("data[.dockerconfigjson]")
        else:
            with suppress(binascii.Error):
                try:
                    json.loads(base64.b64decode(data[".dockerconfigjson"]))
                except ValueError as error:
                    problems.invalid("data[.dockerconfigjson]", "<secret contents redacted>", str(error))
    if old is not None and obj["type"] != old["type"]:
        problems.invalid("type", obj["type"], "field is immutable")


def check_ingress(problems: Problems, obj: dict, old: dict | None) -> None:
    spec = obj.get("spec") or {}
    rules = spec.get("rules") or []
    if not rules and not spec.get("defaultBackend"):
        problems.invalid("spec", spec, "either `defaultBackend` or `rules` must be specified")
    for i, rule in enumerate(rules):
        host = rule.get("host")
        if host and re.fullmatch(r"[0-9.]+", host):
            problems.invalid(f"spec.rules[{i}].host", host, "must be a DNS name, not an IP address")
        elif host:
            check_name(problems, f"spec.rules[{i}].host", host.removeprefix("*."), "subdomain")
        for j, path in enumerate((rule.get("http") or {}).get("paths") or []):
            where = f"spec.rules[{i}].http.paths[{j}]"
            if "pathType" not in path:
                problems.required(f"{where}.pathType", "pathType must be specified")
            elif path["pathType"] not in PATH_TYPES:
                problems.unsupported(f"{where}.pathType", path["pathType"], PATH_TYPES)
            if not path.get("path", "").startswith("/"):
                problems.invalid(f"{where}.path", path.get("path", ""), "must be an absolute path")
            check_backend(problems, path["backend"], f"{where}.backend")
    if spec.get("defaultBackend"):
        check_backend(problems, spec["defaultBackend"], "spec.defaultBackend")


def check_backend(problems: Problems, backend: dict, where: str) -> None:
    service = backend.get("service")
    if service is None:
        problems.required(f"{where}.service", "resource backends are not modelled by the Kubernetes stand-in")
        return
    port = service.get("port") or {}
    if "number" in port and "name" in port:
        problems.invalid(f"{where}.service.port", port, "cannot set both port name & port number")
    elif "number" in port:
        check_port_number(problems, f"{where}.service.port.number", port["number"])
    elif "name" in port:
        check_port_name(problems, f"{where}.service.port.name", port["name"])
    else:
        problems.required(f"{where}.service.port", "port name or number is required")


# defaulting


def default_pod_spec(spec: dict) -> None:
    for key, value in {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                       "terminationGracePeriodSeconds": 30, "securityContext": {}}.items():
        spec.setdefault(key, value)
    for container in spec.get("containers") or []:
        container.setdefault("imagePullPolicy", default_pull_policy(container.get("image") or ""))
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
        for probe_field in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe := container.get(probe_field):
                for key, value in {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1,
                                   "failureThreshold": 3}.items():
                    probe.setdefault(key, value)
                if "httpGet" in probe:
                    probe["httpGet"].setdefault("scheme", "HTTP")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            volume["hostPath"].setdefault("type", "")


def default_deployment(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxSurge", "25%")
        rolling.setdefault("maxUnavailable", "25%")
    default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))


def default_job(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    if "completions" not in spec and "parallelism" not in spec:
        spec["completions"] = 1  # only then: parallelism alone leaves completions unset (a work queue)
    for key, value in {"parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed", "suspend": False,
                       "podReplacementPolicy": "TerminatingOrFailed"}.items():
        spec.setdefault(key, value)
    template = spec.setdefault("template", {})
    labels = (template.get("metadata") or {}).get("labels")
    if labels and not obj["metadata"].get("labels"):
        obj["metadata"]["labels"] = dict(labels)
    default_pod_spec(template.setdefault("spec", {}))


def generate_job_selector(obj: dict) -> None:
    """The registry's preparation of a new Job: unless ``manualSelector``, the template gets the labels naming
    the job and its uid (those already there are kept, for validation to judge) and the selector picks the uid."""
    meta, spec = obj["metadata"], obj.setdefault("spec", {})
    if spec.get("manualSelector"):
        return
    labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
    for key in JOB_NAME_LABELS:
        labels.setdefault(key, meta["name"])
    for key in JOB_UID_LABELS:
        labels.setdefault(key, meta["uid"])
    match_labels = spec.setdefault("selector", {}).setdefault("matchLabels", {})
    match_labels.setdefault(JOB_UID_LABELS[0], meta["uid"])


def default_service(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")


def default_pvc(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    spec.setdefault("storageClassName", "standard")


def default_secret(obj: dict) -> None:
    obj.setdefault("type", "Opaque")
    data = obj.setdefault("data", {})
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(value.encode()).decode()


ADMISSION: dict[str, tuple[Callable[[dict], None] | None, Callable[[Problems, dict, dict | None], None]]] = {
    "deployments": (default_deployment, check_deployment),
    "services": (default_service, check_service),
    "persistentvolumeclaims": (default_pvc, check_pvc),
    "secrets": (default_secret, check_secret),
    "ingresses": (None, check_ingress),
    "jobs": (default_job, check_job),
}


# pods


def effective_requests(container: dict) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: parse_quantity(value) for name, value in merged.items()}


def pod_requests(spec: dict) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {"pods": Decimal(1)}
    for container in spec["containers"]:
        for name, amount in effective_requests(container).items():
            total[name] = total.get(name, Decimal(0)) + amount
    return total


def qos_class(spec: dict) -> str:
    resources = [c.get("resources") or {} for c in spec["containers"]]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(all(name in (r.get("limits") or {}) for name in ("cpu", "memory"))
                     and {**(r.get("limits") or {}), **(r.get("requests") or {})} == (r.get("limits") or {})
                     for r in resources)
    return "Guaranteed" if guaranteed else "Burstable"


def pod_ready(pod: dict) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


def _pod_finished(pod: dict) -> bool:
    return pod["status"].get("phase") in FINISHED_PHASES


def _pod_terminating(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp")) and not _pod_finished(pod)


def _pod_active(pod: dict) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and not _pod_finished(pod)


def _condition(previous: dict | None, kind: str, status: bool | str, reason: str | None = None,
               message: str | None = None, *, touched: bool = False, update_time: bool = False) -> dict:
    """A condition keeping its lastTransitionTime while its status holds (lastUpdateTime also while unchanged)."""
    status = status if isinstance(status, str) else ("True" if status else "False")
    now = _now()
    condition = {"type": kind, "status": status}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    same_status = previous is not None and previous["status"] == status
    if update_time:
        unchanged = same_status and previous.get("reason") == reason and previous.get("message") == message
        condition["lastUpdateTime"] = previous["lastUpdateTime"] if unchanged and not touched else now
    condition["lastTransitionTime"] = previous["lastTransitionTime"] if same_status else now
    return condition


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` references (``$$`` escapes a ``$``)."""
    return re.sub(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def _environment(container: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for variable in container.get("env") or []:
        env[variable["name"]] = _expand(variable.get("value", ""), env)
    return env


def _docker_auths(secret: dict, host: str) -> list[dict]:
    """The auth_configs a ``kubernetes.io/dockerconfigjson`` secret holds for a registry host."""
    if secret.get("type") != "kubernetes.io/dockerconfigjson":
        return []
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"])).get("auths") or {}
    found = []
    for server, entry in auths.items():
        if re.sub(r"^https?://", "", server).split("/", 1)[0] != host:
            continue
        username, password = entry.get("username"), entry.get("password")
        if entry.get("auth"):
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        found.append({"username": username, "password": password, "serveraddress": host})
    return found


@dataclass
class _JobProgress:
    """What the job controller keeps of a job between syncs (the real one: its pods' tracking finalizers and
    its back-off store)."""
    ends: dict[str, bool] = field(default_factory=dict)  # pod uid -> succeeded, for each pod that ended
    retry_at: float = 0.0  # time.monotonic() before which no pod replaces a failed one

    @property
    def succeeded(self) -> int:
        return sum(self.ends.values())

    @property
    def failed(self) -> int:
        return len(self.ends) - self.succeeded


class KubernetesStandIn(RecordingStandIn):
    """A Kubernetes API server with one node (``standin-node``) on 127.0.0.1; pods are containers on the engine.

    ``docker_client`` is a ``docker.APIClient``; ``token`` the bearer token every call needs (made up if None);
    ``node_capacity`` the node's allocatable, laid over ``{"cpu": "8", "memory": "32Gi", "pods": "110"}``;
    ``node_labels`` its labels, laid over the hostname, os, arch and control-plane ones;
    ``host_root`` where NFS exports and PVC data live (a temporary directory, removed by ``stop``, if None).

    After ``start``: ``endpoint`` (``http://127.0.0.1:<port>``), ``ingress_port``, ``node_ip`` (127.0.0.1), and
    ``requests``, every API call as (method, path without the query, JSON body or None).
    """

    def __init__(self, docker_client, *, token: str | None = None, node_capacity: dict[str, str] | None = None,
                 node_labels: dict[str, str] | None = None, host_root: Path | None = None):
        self.docker = docker_client
        self.token = token or secrets.token_urlsafe(32)
        self.node_capacity = {**DEFAULT_CAPACITY, **(node_capacity or {})}
        self.node_labels = {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
                            "node-role.kubernetes.io/control-plane": "", **(node_labels or {})}
        self._capacity = {name: parse_quantity(value) for name, value in self.node_capacity.items()}
        self._own_root = host_root is None
        self.host_root = Path(host_root) if host_root else Path(tempfile.mkdtemp(prefix="k8s-standin-"))
        self.node_ip = "127.0.0.1"
        self.instance_id = uuid.uuid4().hex
        self.endpoint = ""
        self.ingress_port = 0
        self._lock = threading.RLock()
        self._store: dict[str, dict[tuple[str, str], dict]] = {plural: {} for plural in KINDS}
        self._version = 0
        self._requests: list[tuple[str, str, dict | None]] = []
        self._workers: dict[str, _PodWorker] = {}
        self._job_progress: dict[str, _JobProgress] = {}  # by job uid
        self._node_ports: dict[int, _NodePortListener] = {}
        self._round_robin = itertools.count()
        self._discovery: dict[str, dict] = {}
        self._stopping = threading.Event()
        self._api: LoopbackServer | None = None
        self._ingress: _IngressProxy | None = None
        self._controller: threading.Thread | None = None

    # lifecycle

    def start(self) -> Self:
        try:
            self.docker.inspect_image(PAUSE_IMAGE)
        except DockerNotFound:
            raise RuntimeError(f"the pause image {PAUSE_IMAGE} is not on the engine "
                               "(build it with scripts/build-base-image.sh)") from None
        self._api = LoopbackServer(self, _ApiHandler, "kubernetes apiserver")
        self.endpoint = f"http://127.0.0.1:{self._api.server_address[1]}"
        self._ingress = _IngressProxy(self._ingress_backend)
        self.ingress_port = self._ingress.server_address[1]
        self._discovery = self._discovery_documents()
        with self._lock:
            self._insert(KINDS["nodes"], self._node_object())
        self._controller = threading.Thread(target=self._control_loop, daemon=True, name="kubernetes controllers")
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove every container, volume, listener and (own) directory made."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for server in (self._api, self._ingress):
            if server:
                server.close()
        with self._lock:
            listeners = list(self._node_ports.values())
            self._node_ports.clear()
        for listener in listeners:
            listener.close()
        if self._controller:
            self._controller.join(timeout=10)
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.join(timeout=30)
        mine = f"{LABEL}={self.instance_id}"
        for container in self.docker.containers(all=True, filters={"label": mine}):
            remove_container(self.docker, container["Id"])
        for volume in self.docker.volumes(filters={"label": mine}).get("Volumes") or []:
            with suppress(DockerNotFound):
                self.docker.remove_volume(volume["Name"], force=True)
        if self._own_root:
            shutil.rmtree(self.host_root, ignore_errors=True)

    # inspection

    def kubeconfig(self) -> dict:
        return {"apiVersion": "v1", "kind": "Config", "preferences": {},
                "clusters": [{"name": "standin", "cluster": {"server": self.endpoint}}],
                "users": [{"name": "standin", "user": {"token": self.token}}],
                "contexts": [{"name": "default",
                              "context": {"cluster": "standin", "user": "standin", "namespace": "default"}}],
                "current-context": "default"}

    def nfs_dir(self, server: str, path: str) -> Path:
        """The host directory that plays the NFS export ``server:path`` (made if missing)."""
        parts = [part for part in PurePosixPath(path).parts if part != "/"]
        if not server or "/" in server or ".." in parts:
            raise ValueError(f"not an NFS export: {server}:{path}")
        directory = self.host_root.joinpath("nfs", server, *parts)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    # the store (callers hold the lock)

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _key(self, obj: dict) -> tuple[str, str]:
        return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    def _insert(self, kind: Kind, obj: dict) -> dict:
        """Store a new object with the metadata the apiserver sets."""
        meta = obj["metadata"]
        for system_field in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
            meta.pop(system_field, None)
        meta.update(uid=meta.get("uid") or str(uuid.uuid4()), creationTimestamp=_now(), generation=1,
                    resourceVersion=self._next_version())
        self._store[kind.plural][self._key(obj)] = obj
        return obj

    def _existing(self, kind: Kind, namespace: str | None, name: str) -> dict:
        obj = self._store[kind.plural].get((namespace or "", name))
        if obj is None:
            raise not_found(kind, name)
        return obj

    def _touch(self, obj: dict) -> None:
        obj["metadata"]["resourceVersion"] = self._next_version()

    # HTTP

    def _serve(self, method: str, target: str, headers, raw: bytes) -> tuple[int, dict | bytes | Iterator[bytes], str]:
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        query = {key: values[-1] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            try:
                body = json.loads(raw) if raw else None
            except ValueError as error:
                self._record(method, path, None)
                raise bad_request(f"the body of the request could not be decoded as JSON: {error}") from None
            self._record(method, path, body)
            if method == "GET" and path == "/version":
                return 200, VERSION_INFO, JSON_TYPE
            self._authenticate(headers.get("Authorization") or "")
            content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
            status, answer = self._route(method, path, query, body, content_type)
            return status, answer, JSON_TYPE if isinstance(answer, dict) else TEXT_TYPE
        except ApiError as error:
            return error.code, error.body, JSON_TYPE
        except Exception as error:  # a stand-in bug must reach the client as a 500
            LOG.exception("kubernetes stand-in failed on %s %s", method, target)
            return 500, ApiError(500, "InternalError", f"KubernetesStandIn error: {error!r}").body, JSON_TYPE

    def _authenticate(self, authorization: str) -> None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.token.encode()):
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _route(self, method: str, path: str, query: dict, body,
               content_type: str) -> tuple[int, dict | bytes | Iterator[bytes]]:
        if method == "GET" and path in self._discovery:
            return 200, self._discovery[path]
        kind, namespace, name, sub = _resource(method, path)
        if name is None:
            if method == "GET":
                if _bool_param(query, "watch"):
                    raise bad_request("watch is not served by the Kubernetes stand-in")
                return 200, self._list(kind, namespace, query)
            if method == "POST":
                return 201, self._create(kind, namespace, body)
        elif sub == "log":
            if method == "GET":
                return 200, self._pod_log(namespace, name, query)
        elif method == "GET":
            with self._lock:
                return 200, copy.deepcopy(self._existing(kind, namespace, name))
        elif method == "PUT":
            return 200, self._replace(kind, namespace, name, body, sub)
        elif method == "PATCH":
            return 200, self._patch(kind, namespace, name, body, sub, content_type)
        elif method == "DELETE" and sub is None:
            return 200, self._delete(kind, namespace, name, body, query)
        raise method_not_allowed()

    # verbs

    def _decode(self, kind: Kind, namespace: str | None, body) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise bad_request(f"the body of the request was in an unknown format - accepted media types include: "
                              f"{JSON_TYPE}")
        obj = without_nulls(copy.deepcopy(body))
        obj.setdefault("apiVersion", kind.api_version)
        obj.setdefault("kind", kind.kind)
        if (obj["apiVersion"], obj["kind"]) != (kind.api_version, kind.kind):
            raise bad_request(f"the API version in the data ({obj['apiVersion']}) or its kind ({obj['kind']}) does "
                              f"not match the expected {kind.api_version} {kind.kind}")
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace", namespace) != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if namespace is not None:
            meta["namespace"] = namespace
        return obj

    def _admit(self, kind: Kind, obj: dict, old: dict | None) -> None:
        """The apiserver's admission of a write: strict schema, defaulting, validation, allocations."""
        name = obj["metadata"].get("name", "")
        schema_problems(kind, obj).raise_for(kind, name)
        if kind.plural == "jobs" and old is None:
            generate_job_selector(obj)
        defaults, check = ADMISSION.get(kind.plural, (None, None))
        if defaults:
            defaults(obj)
        problems = Problems()
        check_metadata(problems, kind, obj)
        if check:
            check(problems, obj, old)
        problems.raise_for(kind, name)
        if kind.plural == "services":
            self._allocate_service(obj, old)

    def _writable(self, kind: Kind) -> None:
        if not kind.writable:
            raise method_not_allowed()

    def _create(self, kind: Kind, namespace: str | None, body) -> dict:
        self._writable(kind)
        obj = self._decode(kind, namespace, body)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + _suffix()
        if not meta.get("name"):
            problems = Problems()
            problems.required("metadata.name", "name or generateName is required")
            problems.raise_for(kind, "")
        meta["uid"] = str(uuid.uuid4())  # before admission, as the apiserver does: a Job's selector names it
        with self._lock:
            if self._key(obj) in self._store[kind.plural]:
                raise already_exists(kind, meta["name"])
            self._admit(kind, obj, None)
            self._insert(kind, obj)
            self._after_create(kind, obj)
            return copy.deepcopy(obj)

    def _after_create(self, kind: Kind, obj: dict) -> None:
        if kind.plural == "persistentvolumeclaims":
            spec = obj["spec"]
            spec["volumeName"] = f"pvc-{obj['metadata']['uid']}"
            self._claim_path(obj).mkdir(parents=True, exist_ok=True)
            obj["status"] = {"phase": "Bound", "accessModes": list(spec["accessModes"]),
                             "capacity": {"storage": spec["resources"]["requests"]["storage"]}}
        elif kind.plural == "ingresses":
            obj["status"] = {"loadBalancer": {"ingress": [{"ip": self.node_ip}]}}
        elif kind.plural == "services":
            obj["status"] = {"loadBalancer": {}}
        elif kind.plural in ("deployments", "jobs"):
            obj["status"] = {}

    def _replace(self, kind: Kind, namespace: str | None, name: str, body, subresource: str | None) -> dict:
        self._writable(kind)
        incoming = self._decode(kind, namespace, body)
        if incoming["metadata"].setdefault("name", name) != name:
            raise bad_request(f"the name of the object ({incoming['metadata']['name']}) does not match the name on "
                              f"the URL ({name})")
        with self._lock:
            old = self._existing(kind, namespace, name)
            self._check_version(kind, old, incoming["metadata"].get("resourceVersion"))
            return self._update(kind, old, incoming, subresource)

    def _patch(self, kind: Kind, namespace: str | None, name: str, body, subresource: str | None,
               content_type: str) -> dict:
        self._writable(kind)
        if content_type not in MERGE_PATCHES:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted "
                           f"media types include: {', '.join(sorted(MERGE_PATCHES))}")
        if not isinstance(body, dict):
            raise bad_request("a merge patch must be a JSON object")
        with self._lock:
            old = self._existing(kind, namespace, name)
            self._check_version(kind, old, (body.get("metadata") or {}).get("resourceVersion"))
            incoming = self._decode(kind, namespace, merge_patch(copy.deepcopy(old), body))
            if incoming["metadata"].get("name") != name:
                raise bad_request("metadata.name may not be changed by a patch")
            return self._update(kind, old, incoming, subresource)

    def _check_version(self, kind: Kind, old: dict, version: str | None) -> None:
        if version and version != old["metadata"]["resourceVersion"]:
            raise conflict(kind, old["metadata"]["name"])

    def _update(self, kind: Kind, old: dict, incoming: dict, subresource: str | None) -> dict:
        """Store an update (a no-op keeps the resourceVersion); ``status`` writes change only the status."""
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = incoming.get("status") or {}
        else:
            new = incoming
            for system_field in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "resourceVersion"):
                if system_field in old["metadata"]:
                    new["metadata"][system_field] = old["metadata"][system_field]
            if kind.has_status and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        self._admit(kind, new, old)
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if new != old:
            self._touch(new)
            self._store[kind.plural][self._key(new)] = new
            if kind.plural == "services":
                self._release_node_ports(new, {port.get("nodePort") for port in new["spec"].get("ports") or []})
        return copy.deepcopy(new)

    def _delete(self, kind: Kind, namespace: str | None, name: str, body, query: dict) -> dict:
        if not kind.deletable:
            raise method_not_allowed()
        options = body if isinstance(body, dict) else {}
        policy = _propagation(kind, options, query)
        if policy not in PROPAGATION:
            raise bad_request(f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                              f'"Background", "Foreground", "Orphan"')
        with self._lock:
            obj = self._existing(kind, namespace, name)
            preconditions = options.get("preconditions") or {}
            if preconditions.get("uid") not in (None, obj["metadata"]["uid"]):
                raise conflict(kind, name, f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                                           f"UID in object meta: {obj['metadata']['uid']}")
            self._check_version(kind, obj, preconditions.get("resourceVersion"))
            if kind.plural == "pods":
                return copy.deepcopy(self._terminate_pod(obj))
            self._remove(kind, obj, policy)
        if kind.returns_deleted:
            return copy.deepcopy(obj)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": _details(kind, name, uid=obj["metadata"]["uid"])}

    def _remove(self, kind: Kind, obj: dict, policy: str) -> None:
        """Under the lock: drop an object, its side effects and (unless orphaned) its dependents."""
        del self._store[kind.plural][self._key(obj)]
        self._job_progress.pop(obj["metadata"]["uid"], None)
        if kind.plural == "services":
            self._release_node_ports(obj, set())
        elif kind.plural == "persistentvolumeclaims":
            shutil.rmtree(self._claim_path(obj), ignore_errors=True)
        owner = obj["metadata"]["uid"]
        for dependent_kind in KINDS.values():
            for dependent in list(self._store[dependent_kind.plural].values()):
                references = dependent["metadata"].get("ownerReferences") or []
                if not any(reference["uid"] == owner for reference in references):
                    continue
                if policy == "Orphan":
                    kept = [r for r in references if r["uid"] != owner]
                    dependent["metadata"].pop("ownerReferences")
                    if kept:
                        dependent["metadata"]["ownerReferences"] = kept
                    self._touch(dependent)
                elif dependent_kind.plural == "pods":
                    self._terminate_pod(dependent)
                else:
                    self._remove(dependent_kind, dependent, policy)

    def _list(self, kind: Kind, namespace: str | None, query: dict) -> dict:
        labels_match = label_selector(query.get("labelSelector", ""))
        fields_match = field_selector(query.get("fieldSelector", ""))
        with self._lock:
            items = [copy.deepcopy(obj) for key, obj in sorted(self._store[kind.plural].items())
                     if namespace in (None, key[0]) and labels_match(obj["metadata"].get("labels") or {})
                     and fields_match(obj)]
            version = str(self._version)
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": {"resourceVersion": version},
                "items": items}

    def _pod_log(self, namespace: str, name: str, query: dict) -> bytes | Iterator[bytes]:
        with self._lock:
            pod = self._existing(KINDS["pods"], namespace, name)
            worker = self._workers.get(pod["metadata"]["uid"])
        names = [c["name"] for c in pod["spec"]["containers"]]
        wanted = query.get("container") or (names[0] if len(names) == 1 else None)
        if wanted is None:
            raise bad_request(f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]")
        if wanted not in names:
            raise bad_request(f"container {wanted} is not valid for pod {name}")
        container = next((c for c in worker.containers if c.name == wanted), None) if worker else None
        if container is None or container.docker_id is None:
            reason = container.waiting["reason"] if container and container.waiting else "ContainerCreating"
            raise bad_request(f'container "{wanted}" in pod "{name}" is waiting to start: '
                              f'{WAITING_TEXT.get(reason, reason)}')
        if _bool_param(query, "previous") and container.last_terminated is None:
            raise bad_request(f'previous terminated container "{wanted}" in pod "{name}" not found')
        options = {"stdout": True, "stderr": True, "timestamps": _bool_param(query, "timestamps")}
        if (tail := _int_param(query, "tailLines")) is not None:
            options["tail"] = tail
        if (since := _int_param(query, "sinceSeconds")) is not None:
            options["since"] = int(time.time()) - since
        limit = _int_param(query, "limitBytes")
        if _bool_param(query, "follow"):
            return self._followed_log(container.docker_id, options, limit)
        try:
            text = self.docker.logs(container.docker_id, **options)
        except DockerNotFound:
            text = b""
        return text if limit is None else text[:limit]

    def _followed_log(self, docker_id: str, options: dict, limit: int | None) -> Iterator[bytes]:
        """``follow=true``: the log as it grows, until the container stops or goes, or ``limitBytes`` is sent."""
        try:
            stream = self.docker.logs(docker_id, stream=True, follow=True, **options)
        except DockerNotFound:
            return
        sent = 0
        try:
            with suppress(APIError, OSError):  # the engine broke the stream off: the log ends there
                for chunk in stream:
                    chunk = chunk if limit is None else chunk[:limit - sent]
                    sent += len(chunk)
                    yield chunk
                    if limit is not None and sent >= limit:
                        return
        finally:
            stream.close()

    def _discovery_documents(self) -> dict[str, dict]:
        groups = sorted({kind.group for kind in KINDS.values() if kind.group})
        documents = {
            "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.endpoint.removeprefix("http://")}]},
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": group, "versions": [{"groupVersion": f"{group}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{group}/v1", "version": "v1"}} for group in groups]},
        }
        for group in ["", *groups]:
            resources = []
            for kind in (k for k in KINDS.values() if k.group == group):
                resources.append({"name": kind.plural, "singularName": kind.kind.lower(), "namespaced": kind.namespaced,
                                  "kind": kind.kind, "verbs": kind.verbs})
                if kind.has_status:
                    verbs = ["get", "patch", "update"] if kind.writable else ["get"]
                    resources.append({"name": f"{kind.plural}/status", "singularName": "",
                                      "namespaced": kind.namespaced, "kind": kind.kind, "verbs": verbs})
            if not group:
                resources.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod",
                                  "verbs": ["get"]})
            version = f"{group}/v1" if group else "v1"
            documents[f"/apis/{group}/v1" if group else "/api/v1"] = {
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": version, "resources": resources}
        return documents

    def _node_object(self) -> dict:
        info, version = self.docker.info(), self.docker.version()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(info.get("Architecture"), info.get("Architecture", "amd64"))
        now = _now()
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/arch": arch, **self.node_labels}},
                "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
                "status": {
                    "capacity": dict(self.node_capacity), "allocatable": dict(self.node_capacity),
                    "addresses": [{"type": "InternalIP", "address": self.node_ip},
                                  {"type": "Hostname", "address": NODE_NAME}],
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                    "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                                    "lastTransitionTime": now}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                    "nodeInfo": {"machineID": self.instance_id, "systemUUID": str(uuid.uuid4()),
                                 "bootID": str(uuid.uuid4()), "kernelVersion": info.get("KernelVersion", ""),
                                 "osImage": info.get("OperatingSystem", ""),
                                 "containerRuntimeVersion": f"docker://{version.get('Version', '')}",
                                 "kubeletVersion": KUBE_VERSION, "kubeProxyVersion": KUBE_VERSION,
                                 "operatingSystem": "linux", "architecture": arch}}}

    # services and ingresses

    def _allocate_service(self, service: dict, old: dict | None) -> None:
        """Keep or allocate the clusterIP and nodePorts and listen on new nodePorts (422 when one is taken)."""
        spec, previous = service["spec"], (old or {}).get("spec") or {}
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            spec["clusterIP"] = previous.get("clusterIP") or self._new_cluster_ip()
        if spec.get("clusterIP"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        if spec["type"] not in ("NodePort", "LoadBalancer"):
            return
        earlier = {(p["port"], p["protocol"]): p.get("nodePort") for p in previous.get("ports") or []}
        namespace, name = self._key(service)
        opened, problems = [], Problems()
        for i, port in enumerate(spec["ports"]):
            wanted = port.get("nodePort") or earlier.get((port["port"], port["protocol"]))
            listener = self._node_ports.get(wanted)
            if listener is not None and listener.service == (namespace, name):
                port["nodePort"] = wanted
                continue
            if listener is not None:
                problems.invalid(f"spec.ports[{i}].nodePort", wanted, "provided port is already allocated")
                continue
            try:
                listener = self._listen(namespace, name, wanted)
            except OSError as error:
                problems.invalid(f"spec.ports[{i}].nodePort", wanted,
                                 f"provided port is not available on the node: {error.strerror}")
                continue
            opened.append(listener)
            port["nodePort"] = listener.port
        if problems.errors:
            for listener in opened:
                self._node_ports.pop(listener.port).close()
            problems.raise_for(KINDS["services"], name)

    def _listen(self, namespace: str, name: str, port: int | None) -> _NodePortListener:
        """A listener on the given nodePort, or on a free one of the range."""
        candidates = [port] if port else random.sample(NODE_PORTS, 50)
        for candidate in candidates:
            if candidate in self._node_ports:
                continue
            try:
                listener = _NodePortListener(candidate, (namespace, name),
                                             functools.partial(self._node_port_backend, namespace, name, candidate))
            except OSError:
                if port:
                    raise
                continue
            self._node_ports[candidate] = listener
            return listener
        raise OSError(98, "no free node port")

    def _node_port_backend(self, namespace: str, name: str, node_port: int) -> int | None:
        return self._service_backend(namespace, name, lambda port: port.get("nodePort") == node_port)

    def _release_node_ports(self, service: dict, kept: set[int]) -> None:
        """Stop listening on the service's nodePorts but ``kept``."""
        for port, listener in list(self._node_ports.items()):
            if listener.service == self._key(service) and port not in kept:
                self._node_ports.pop(port).close()

    def _new_cluster_ip(self) -> str:
        taken = {s["spec"].get("clusterIP") for s in self._store["services"].values()}
        while (address := f"10.96.{random.randrange(256)}.{random.randrange(1, 255)}") in taken:
            pass
        return address

    def _service_backend(self, namespace: str, name: str, chooses: Callable[[dict], bool]) -> int | None:
        """The host port of a ready pod behind the service's port that ``chooses`` picks, round-robin."""
        with self._lock:
            service = self._store["services"].get((namespace, name))
            if service is None or not service["spec"].get("selector"):
                return None
            entry = next((p for p in service["spec"].get("ports") or [] if chooses(p)), None)
            if entry is None:
                return None
            selector = service["spec"]["selector"]
            host_ports = []
            for (pod_namespace, _), pod in sorted(self._store["pods"].items()):
                labels = pod["metadata"].get("labels") or {}
                worker = self._workers.get(pod["metadata"]["uid"])
                if pod_namespace != namespace or not pod_ready(pod) or worker is None \
                        or any(labels.get(k) != v for k, v in selector.items()):
                    continue
                container_port = _container_port(pod["spec"]["containers"], entry["targetPort"])
                if host_port := worker.host_ports.get(container_port):
                    host_ports.append(host_port)
            return host_ports[next(self._round_robin) % len(host_ports)] if host_ports else None

    def _ingress_backend(self, host: str, path: str) -> tuple[int, int | None]:
        """For the ingress proxy: (status, host port) for a request's Host header and path."""
        host = re.sub(r":\d+$", "", host).lower()
        with self._lock:
            best, fallback = None, None
            ingresses = sorted(self._store["ingresses"].values(), key=lambda i: i["metadata"]["creationTimestamp"])
            for ingress in ingresses:
                spec, namespace = ingress["spec"], ingress["metadata"]["namespace"]
                if fallback is None and spec.get("defaultBackend"):
                    fallback = (namespace, spec["defaultBackend"])
                for rule in spec.get("rules") or []:
                    if not _host_matches(rule.get("host"), host):
                        continue
                    for entry in (rule.get("http") or {}).get("paths") or []:
                        score = _path_score(entry, path)
                        if score is not None and (best is None or score > best[0]):
                            best = (score, namespace, entry["backend"])
            chosen = (best[1], best[2]) if best else fallback
        if chosen is None:
            return 404, None
        namespace, backend = chosen
        service = backend["service"]
        number, port_name = service["port"].get("number"), service["port"].get("name")
        port = self._service_backend(namespace, service["name"],
                                     lambda p: p["port"] == number if number else p.get("name") == port_name)
        return (200, port) if port else (503, None)

    def _claim_path(self, claim: dict) -> Path:
        return self.host_root / "pvc" / claim["metadata"]["namespace"] / claim["spec"]["volumeName"]

    def _claim_dir(self, namespace: str, name: str) -> Path | None:
        with self._lock:
            claim = self._store["persistentvolumeclaims"].get((namespace, name))
            return self._claim_path(claim) if claim else None

    # controllers

    def _control_loop(self) -> None:
        while not self._stopping.wait(TICK):
            with self._lock:
                for plural, reconcile in (("deployments", self._reconcile), ("jobs", self._reconcile_job)):
                    for obj in list(self._store[plural].values()):
                        try:
                            reconcile(obj)
                        except Exception:  # the controller must live on, whatever one object does
                            LOG.exception("kubernetes stand-in: reconciling %s %s failed", plural,
                                          obj["metadata"]["name"])

    def _owned_pods(self, owner: dict) -> list[dict]:
        uid = owner["metadata"]["uid"]
        return [pod for pod in self._store["pods"].values()
                if any(r["uid"] == uid for r in pod["metadata"].get("ownerReferences") or [])]

    def _reconcile(self, deployment: dict) -> None:
        """Under the lock: create and delete pods toward the template and replicas, then write the status."""
        spec = deployment["spec"]
        pod_hash = template_hash(spec["template"])
        owned = self._owned_pods(deployment)
        live = [p for p in owned if not p["metadata"].get("deletionTimestamp")]
        new = [p for p in live if p["metadata"]["labels"].get("pod-template-hash") == pod_hash]
        old = [p for p in live if p not in new]
        if spec["strategy"]["type"] == "Recreate":
            old_left = any(p["metadata"]["labels"].get("pod-template-hash") != pod_hash for p in owned)
            self._recreate(deployment, pod_hash, new, old, old_left)
        else:
            self._roll(deployment, pod_hash, new, old)
        self._write_deployment_status(deployment, pod_hash)

    def _recreate(self, deployment: dict, pod_hash: str, new: list[dict], old: list[dict], old_left: bool) -> None:
        if old_left:
            self._delete_pods(deployment, old)
            return
        self._scale_to(deployment, pod_hash, new, deployment["spec"]["replicas"])

    def _roll(self, deployment: dict, pod_hash: str, new: list[dict], old: list[dict]) -> None:
        replicas = deployment["spec"]["replicas"]
        rolling = deployment["spec"]["strategy"]["rollingUpdate"]
        surge = _scaled(rolling["maxSurge"], replicas, round_up=True)
        unavailable = _scaled(rolling["maxUnavailable"], replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        room = replicas + surge - len(new) - len(old)
        new = self._scale_to(deployment, pod_hash, new, min(replicas, len(new) + max(room, 0)))
        if not old:
            return
        min_available = replicas - unavailable
        ready_new = sum(pod_ready(p) for p in new)
        budget = len(new) + len(old) - min_available - (len(new) - ready_new)
        if budget <= 0:
            return
        unhealthy = [p for p in old if not pod_ready(p)][:budget]
        healthy = [p for p in old if pod_ready(p)]
        allowed = min(budget - len(unhealthy), ready_new + len(healthy) - min_available)
        self._delete_pods(deployment, unhealthy + _deletion_order(healthy)[:max(allowed, 0)])

    def _scale_to(self, deployment: dict, pod_hash: str, pods: list[dict], count: int) -> list[dict]:
        """Create or delete current-template pods until there are ``count``; the pods kept."""
        if len(pods) > count:
            doomed = _deletion_order(pods)[:len(pods) - count]
            self._delete_pods(deployment, doomed)
            return [p for p in pods if p not in doomed]
        if len(pods) < count:
            self._event(deployment, "Normal", "ScalingReplicaSet", f"Scaled up replica set "
                        f"{deployment['metadata']['name']}-{pod_hash} from {len(pods)} to {count}",
                        component="deployment-controller")
            prefix = f"{deployment['metadata']['name']}-{pod_hash}-"
            pods = pods + [self._create_pod(deployment, prefix, {"pod-template-hash": pod_hash})
                           for _ in range(count - len(pods))]
        return pods

    def _delete_pods(self, deployment: dict, pods: list[dict]) -> None:
        for pod_hash in sorted({p["metadata"]["labels"].get("pod-template-hash") for p in pods}):
            leaving = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == pod_hash]
            staying = sum(1 for p in self._owned_pods(deployment) if not p["metadata"].get("deletionTimestamp")
                          and p["metadata"]["labels"].get("pod-template-hash") == pod_hash)
            self._event(deployment, "Normal", "ScalingReplicaSet", f"Scaled down replica set "
                        f"{deployment['metadata']['name']}-{pod_hash} from {staying} to {staying - len(leaving)}",
                        component="deployment-controller")
            for pod in leaving:
                self._terminate_pod(pod)

    def _create_pod(self, owner: dict, prefix: str, extra_labels: dict[str, str] | None = None) -> dict:
        """A pod of the owner's template (its labels plus ``extra_labels``) named ``<prefix><5 chars>`` as
        generateName does, controlled by the owner, and its worker."""
        meta, template = owner["metadata"], owner["spec"]["template"]
        template_meta = template.get("metadata") or {}
        while (name := prefix[:GENERATED_NAME_BASE] + _suffix()) and (meta["namespace"], name) in self._store["pods"]:
            pass
        spec = copy.deepcopy(template["spec"])
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": meta["namespace"],
                            "labels": {**(template_meta.get("labels") or {}), **(extra_labels or {})},
                            "ownerReferences": [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                                 "name": meta["name"], "uid": meta["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": spec, "status": {"phase": "Pending", "qosClass": qos_class(spec)}}
        if template_meta.get("annotations"):
            pod["metadata"]["annotations"] = dict(template_meta["annotations"])
        self._insert(KINDS["pods"], pod)
        worker = _PodWorker(self, pod)
        self._workers[pod["metadata"]["uid"]] = worker
        worker.start()
        return pod

    def _terminate_pod(self, pod: dict) -> dict:
        """Mark a pod deleted; its worker removes the containers, then the pod."""
        if not pod["metadata"].get("deletionTimestamp"):
            pod["metadata"]["deletionTimestamp"] = _now()
            pod["metadata"]["deletionGracePeriodSeconds"] = pod["spec"].get("terminationGracePeriodSeconds", 30)
            self._touch(pod)
        return pod

    def _write_deployment_status(self, deployment: dict, pod_hash: str) -> None:
        spec, meta = deployment["spec"], deployment["metadata"]
        before = deployment.get("status") or {}
        pods = [p for p in self._owned_pods(deployment) if not p["metadata"].get("deletionTimestamp")]
        updated = sum(p["metadata"]["labels"].get("pod-template-hash") == pod_hash for p in pods)
        ready = sum(pod_ready(p) for p in pods)
        replicas = spec["replicas"]
        counts = {"replicas": len(pods), "updatedReplicas": updated, "readyReplicas": ready,
                  "availableReplicas": ready, "unavailableReplicas": max(0, max(replicas, len(pods)) - ready)}
        previous = {c["type"]: c for c in before.get("conditions") or []}
        rolling = spec["strategy"].get("rollingUpdate")
        min_available = replicas - (_scaled(rolling["maxUnavailable"], replicas, round_up=False) if rolling else 0)
        enough = ready >= min_available
        reason, message = ("MinimumReplicasAvailable", "Deployment has minimum availability.") if enough \
            else ("MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        available = _condition(previous.get("Available"), "Available", enough, reason, message, update_time=True)
        complete = updated == replicas and len(pods) == replicas and ready == replicas
        progressed = before.get("observedGeneration") != meta["generation"] \
            or updated > before.get("updatedReplicas", 0) or ready > before.get("availableReplicas", 0) \
            or len(pods) - updated < before.get("replicas", 0) - before.get("updatedReplicas", 0)
        progressing = self._progressing(previous.get("Progressing"), f"{meta['name']}-{pod_hash}", complete,
                                        progressed, spec["progressDeadlineSeconds"])
        status = {"observedGeneration": meta["generation"], **{k: v for k, v in counts.items() if v},
                  "conditions": [available, progressing]}
        if status != before:
            deployment["status"] = status
            self._touch(deployment)

    def _progressing(self, previous: dict | None, replica_set: str, complete: bool, progressed: bool,
                     deadline: int) -> dict:
        if complete:
            return _condition(previous, "Progressing", True, "NewReplicaSetAvailable",
                              f'ReplicaSet "{replica_set}" has successfully progressed.', update_time=True)
        if progressed or previous is None:
            return _condition(previous, "Progressing", True, "ReplicaSetUpdated",
                              f'ReplicaSet "{replica_set}" is progressing.', touched=True, update_time=True)
        if previous.get("reason") == "ReplicaSetUpdated" and _age(previous["lastUpdateTime"]) > deadline:
            return _condition(previous, "Progressing", False, "ProgressDeadlineExceeded",
                              f'ReplicaSet "{replica_set}" has timed out progressing.', update_time=True)
        return previous

    # the job controller

    def _reconcile_job(self, job: dict) -> None:
        """Under the lock: count how the job's pods ended, run pods toward its completions (none while suspended),
        end it once it succeeded or failed, and write its status; a finished job only waits for its TTL."""
        if job["spec"].get("managedBy", JOB_CONTROLLER) != JOB_CONTROLLER:
            return
        status = copy.deepcopy(job.get("status") or {})
        if _terminal_condition(status):
            self._expire_job(job, status)
            return
        progress = self._job_progress.setdefault(job["metadata"]["uid"], _JobProgress())
        for pod in self._owned_pods(job):
            self._record_pod_end(pod)
        _set_count(status, "succeeded", progress.succeeded)
        _set_count(status, "failed", progress.failed)
        self._suspend_or_resume(job, status)
        ending = self._job_ending(job, status)
        if ending is not None or job["spec"]["suspend"]:
            self._delete_job_pods(job, [p for p in self._owned_pods(job) if _pod_active(p)])
        else:
            self._scale_job(job, status, progress)
        if ending is not None and all(_pod_finished(p) for p in self._owned_pods(job)):
            self._finish_job(job, status, ending)
        self._write_job_status(job, status)

    def _record_pod_end(self, pod: dict) -> None:
        """Count a job's pod once it ended: succeeded, or failed (Failed, or deleted before it succeeded, as the
        job controller counts pods that will never reach a phase); a failure delays the next pod."""
        references = pod["metadata"].get("ownerReferences") or []
        progress = next((self._job_progress[r["uid"]] for r in references if r["uid"] in self._job_progress), None)
        phase, uid = pod["status"].get("phase"), pod["metadata"]["uid"]
        if progress is None or uid in progress.ends:
            return
        if phase == "Succeeded":
            progress.ends[uid] = True
        elif phase == "Failed" or pod["metadata"].get("deletionTimestamp"):
            progress.ends[uid] = False
            progress.retry_at = time.monotonic() + min(BACKOFF_FIRST * 2 ** (progress.failed - 1), BACKOFF_MAX)

    def _suspend_or_resume(self, job: dict, status: dict) -> None:
        """The Suspended condition as ``suspend`` says; a job's (re)start sets ``startTime``."""
        suspended = job["spec"]["suspend"]
        previous = _find_condition(status, "Suspended")
        if suspended and (previous is None or previous["status"] != "True"):
            _set_condition(status, _job_condition(previous, "Suspended", True, "JobSuspended", "Job suspended"))
            self._event(job, "Normal", "Suspended", "Job suspended", component="job-controller")
        elif not suspended and previous is not None and previous["status"] == "True":
            _set_condition(status, _job_condition(previous, "Suspended", False, "JobResumed", "Job resumed"))
            self._event(job, "Normal", "Resumed", "Job resumed", component="job-controller")
            status["startTime"] = _now()
        if not suspended:
            status.setdefault("startTime", _now())

    def _job_ending(self, job: dict, status: dict) -> dict | None:
        """The FailureTarget or SuccessCriteriaMet condition once the job met its end (added when new)."""
        ending = next((c for c in status.get("conditions") or [] if c["status"] == "True"
                       and c["type"] in ("FailureTarget", "SuccessCriteriaMet")), None)
        if ending is None:
            active = [p for p in self._owned_pods(job) if _pod_active(p)]
            verdict = _job_verdict(job["spec"], status, active)
            if verdict is not None:
                kind, reason, message = verdict
                ending = _job_condition(None, kind, True, reason, message)
                _set_condition(status, ending)
        return ending

    def _scale_job(self, job: dict, status: dict, progress: _JobProgress) -> None:
        spec, pods = job["spec"], self._owned_pods(job)
        active = [p for p in pods if _pod_active(p)]
        if spec.get("completions") is None:  # a work queue: once one pod succeeded, the others only finish
            wanted = len(active) if status.get("succeeded") else spec["parallelism"]
        else:
            wanted = max(0, min(spec["parallelism"], spec["completions"] - status.get("succeeded", 0)))
        if len(active) > wanted:
            self._delete_job_pods(job, _deletion_order(active)[:len(active) - wanted])
            return
        waiting_for_terminating = spec["podReplacementPolicy"] == "Failed" and any(map(_pod_terminating, pods))
        if len(active) == wanted or time.monotonic() < progress.retry_at or waiting_for_terminating:
            return
        for _ in range(wanted - len(active)):
            pod = self._create_pod(job, f"{job['metadata']['name']}-")
            self._event(job, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}",
                        component="job-controller")

    def _delete_job_pods(self, job: dict, pods: list[dict]) -> None:
        for pod in pods:
            self._terminate_pod(pod)
            self._event(job, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                        component="job-controller")

    def _finish_job(self, job: dict, status: dict, ending: dict) -> None:
        """Once no pod of the job is left running: the terminal condition, after the one that decided it."""
        if ending["type"] == "SuccessCriteriaMet":
            status["completionTime"] = _now()
            _set_condition(status, _job_condition(None, "Complete", True, ending["reason"], ending["message"]))
            self._event(job, "Normal", "Completed", "Job completed", component="job-controller")
        else:
            _set_condition(status, _job_condition(None, "Failed", True, ending["reason"], ending["message"]))
            self._event(job, "Warning", ending["reason"], ending["message"], component="job-controller")

    def _write_job_status(self, job: dict, status: dict) -> None:
        pods = self._owned_pods(job)
        active = [p for p in pods if _pod_active(p)]
        _set_count(status, "active", len(active))
        status.update(ready=sum(map(pod_ready, active)), terminating=sum(map(_pod_terminating, pods)),
                      uncountedTerminatedPods={})
        if status != job.get("status"):
            job["status"] = status
            self._touch(job)

    def _expire_job(self, job: dict, status: dict) -> None:
        """The TTL-after-finished controller: a finished job goes, with its pods, ``ttlSecondsAfterFinished``
        after it finished."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None and _age(_terminal_condition(status)["lastTransitionTime"]) >= ttl:
            self._remove(KINDS["jobs"], job, "Foreground")

    def _event(self, obj: dict, event_type: str, reason: str, message: str, *, component: str = "kubelet",
               field_path: str | None = None) -> None:
        """Record an event about ``obj``; a repeat of the same one counts up."""
        meta = obj["metadata"]
        now = _now()
        with self._lock:
            for event in self._store["events"].values():
                involved = event["involvedObject"]
                if (involved.get("uid"), involved.get("fieldPath"), event["reason"], event["message"]) \
                        == (meta["uid"], field_path, reason, message):
                    event["count"] += 1
                    event["lastTimestamp"] = now
                    self._touch(event)
                    return
            involved = {"kind": obj["kind"], "namespace": meta.get("namespace", ""), "name": meta["name"],
                        "uid": meta["uid"], "apiVersion": obj["apiVersion"]}
            if field_path:
                involved["fieldPath"] = field_path
            self._insert(KINDS["events"], {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}",
                             "namespace": meta.get("namespace") or "default"},
                "involvedObject": involved, "reason": reason, "message": message, "type": event_type, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": component, **({"host": NODE_NAME} if component == "kubelet" else {})},
                "reportingComponent": component, "reportingInstance": NODE_NAME if component == "kubelet" else ""})

    # for the pod workers

    def _pod(self, uid: str) -> dict | None:
        with self._lock:
            return next((p for p in self._store["pods"].values() if p["metadata"]["uid"] == uid), None)

    def _schedule(self, pod: dict) -> str | None:
        """Bind the pod to the node, or say why it does not fit (the scheduler's message)."""
        with self._lock:
            namespace = pod["metadata"]["namespace"]
            for volume in pod["spec"].get("volumes") or []:
                claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
                if claim and (namespace, claim) not in self._store["persistentvolumeclaims"]:
                    return f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found.'
            wanted = pod["spec"].get("nodeSelector") or {}
            if any(self.node_labels.get(key) != value for key, value in wanted.items()):
                return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
            used: dict[str, Decimal] = {}
            for other in self._store["pods"].values():
                if other["spec"].get("nodeName") == NODE_NAME and other is not pod and not _pod_finished(other):
                    for name, amount in pod_requests(other["spec"]).items():
                        used[name] = used.get(name, Decimal(0)) + amount
            short = sorted(("Too many pods" if name == "pods" else f"Insufficient {name}")
                           for name, amount in pod_requests(pod["spec"]).items()
                           if amount > 0 and used.get(name, 0) + amount > self._capacity.get(name, 0))
            if short:
                return f"0/1 nodes are available: {', '.join(f'1 {reason}' for reason in short)}."
            pod["spec"]["nodeName"] = NODE_NAME
            self._touch(pod)
            return None

    def _write_pod_status(self, uid: str, make: Callable[[dict], dict]) -> None:
        with self._lock:
            pod = self._pod(uid)
            if pod is None:
                return
            status = make(pod.get("status") or {})
            if status != pod.get("status"):
                pod["status"] = status
                self._touch(pod)

    def _forget_pod(self, uid: str) -> None:
        with self._lock:
            pod = self._pod(uid)
            if pod is not None:
                self._record_pod_end(pod)  # what the job-tracking finalizer ensures: its job counts it first
                del self._store["pods"][self._key(pod)]
            self._workers.pop(uid, None)

    def _pull_credentials(self, namespace: str, references: list[dict], image: str) -> tuple[list[dict], list[str]]:
        """(auth_configs for the image's registry from the pull secrets, names of the missing secrets)."""
        host, auths, missing = registry_host(image), [], []
        with self._lock:
            for reference in references:
                secret = self._store["secrets"].get((namespace, reference["name"]))
                if secret is None:
                    missing.append(reference["name"])
                else:
                    auths += _docker_auths(secret, host)
        return auths, missing


RESOURCE_PATH = re.compile(r"/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))(?:/namespaces/(?P<namespace>[^/]+))?"
                           r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?")


def _resource(method: str, path: str) -> tuple[Kind, str | None, str | None, str | None]:
    """(kind, namespace, name, subresource) a path names, or 404 as the apiserver says it."""
    match = RESOURCE_PATH.fullmatch(path)
    kind = KINDS.get(match["plural"]) if match else None
    missing = ApiError(404, "NotFound", "the server could not find the requested resource", {})
    if kind is None or kind.group != (match["group"] or "") or (match["version"] or "v1") != "v1":
        raise missing
    namespace, name, sub = match["namespace"], match["name"], match["sub"]
    across_namespaces = namespace is None and name is None and method == "GET"
    scoped = (namespace is not None) == kind.namespaced or across_namespaces
    subresources = {None} | ({"status"} if kind.has_status else set()) | ({"log"} if kind.plural == "pods" else set())
    if not scoped or sub not in subresources:
        raise missing
    return kind, namespace, name, sub


def _propagation(kind: Kind, options: dict, query: dict) -> str:
    """A DELETE's propagation: ``propagationPolicy``, else the deprecated ``orphanDependents``, else the kind's."""
    policy = options.get("propagationPolicy") or query.get("propagationPolicy")
    orphan = options.get("orphanDependents", query.get("orphanDependents"))
    if not policy and orphan is not None:
        policy = "Orphan" if orphan in (True, "true") else "Background"
    return policy or kind.default_propagation


def _scaled(value: int | str, replicas: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    exact = replicas * int(value.rstrip("%")) / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def _deletion_order(pods: list[dict]) -> list[dict]:
    """Not-ready pods first, then the newest."""
    newest_first = sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)
    return sorted(newest_first, key=pod_ready)


def _find_condition(status: dict, kind: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def _set_condition(status: dict, condition: dict) -> None:
    """Replace the condition of that type in place, or add it last."""
    conditions = status.setdefault("conditions", [])
    same = [i for i, c in enumerate(conditions) if c["type"] == condition["type"]]
    if same:
        conditions[same[0]] = condition
    else:
        conditions.append(condition)


def _terminal_condition(status: dict) -> dict | None:
    """A finished job's Complete or Failed condition."""
    return next((c for c in status.get("conditions") or [] if c["type"] in ("Complete", "Failed")
                 and c["status"] == "True"), None)


def _set_count(status: dict, key: str, count: int) -> None:
    """A job status counter, omitted at zero."""
    status.pop(key, None)
    if count:
        status[key] = count


def _job_condition(previous: dict | None, kind: str, status: bool, reason: str, message: str) -> dict:
    condition = _condition(previous, kind, status, reason, message)
    return {**condition, "lastProbeTime": _now()}


def _job_verdict(spec: dict, status: dict, active: list[dict]) -> tuple[str, str, str] | None:
    """(condition, reason, message) when the job has failed or succeeded, in the job controller's order."""
    if status.get("failed", 0) > spec["backoffLimit"] or _restarts_past_limit(spec, active):
        return "FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and status.get("startTime") and not spec["suspend"] \
            and _age(status["startTime"]) >= deadline:
        return "FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline"
    succeeded, completions = status.get("succeeded", 0), spec.get("completions")
    if not active and (succeeded > 0 if completions is None else succeeded >= completions):
        return "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
    return None


def _restarts_past_limit(spec: dict, active: list[dict]) -> bool:
    """With ``restartPolicy: OnFailure`` the restarts in the active pods count toward the backoff limit."""
    if spec["template"]["spec"]["restartPolicy"] != "OnFailure":
        return False
    restarts = sum(container.get("restartCount", 0) for pod in active
                   for container in pod["status"].get("containerStatuses") or [])
    return restarts > 0 if spec["backoffLimit"] == 0 else restarts >= spec["backoffLimit"]


def _container_port(containers: list[dict], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for c in containers for p in c.get("ports") or [] if p.get("name") == port), None)


def _host_matches(rule_host: str | None, host: str) -> bool:
    if not rule_host:
        return True
    if rule_host.startswith("*."):
        return host.partition(".")[2] == rule_host[2:] and host.partition(".")[0] != ""
    return rule_host.lower() == host


def _path_score(entry: dict, path: str) -> tuple[int, bool] | None:
    """How well an ingress path matches (longer wins, Exact beats Prefix of the same length), None if not."""
    wanted, kind = entry.get("path", "/"), entry["pathType"]
    if kind == "Exact":
        return (len(wanted), True) if path == wanted else None
    if kind == "Prefix":
        base = wanted.rstrip("/")
        return (len(base), False) if not base or path == base or path.startswith(base + "/") else None
    return (len(wanted), False) if path.startswith(wanted) else None


# the kubelet's part


class _VolumeError(Exception):
    pass


class _ImageError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class _Probe:
    spec: dict
    due: float = 0.0
    successes: int = 0
    failures: int = 0
    passing: bool = False


@dataclass
class _Container:
    spec: dict
    docker_id: str | None = None
    image_id: str = ""
    waiting: dict | None = field(default_factory=lambda: {"reason": "ContainerCreating"})
    started_at: str | None = None
    started_raw: str | None = None  # the engine's StartedAt of the run being watched
    handled_exit: str | None = None  # the engine's FinishedAt of the last exit dealt with
    last_terminated: dict | None = None
    terminated: dict | None = None  # the end of a container that will not run again (restartPolicy)
    restarts: int = 0
    retry_at: float = 0.0
    backoff: float = BACKOFF_FIRST
    readiness: _Probe | None = None

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.waiting is None and self.terminated is None

    @property
    def ready(self) -> bool:
        return self.running and (self.readiness is None or self.readiness.passing)

    def back_off(self, waiting: dict) -> None:
        self.waiting = waiting
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(2 * self.backoff, BACKOFF_MAX)


class _PodWorker(threading.Thread):
    """One pod on the node: scheduling, volumes, the pause container, the pod's containers with pulls,
    restarts (per restartPolicy) and readiness probes, and its status; once no container will run again the
    pod is Succeeded or Failed and its sandbox stops, its containers stay (for their logs); everything goes
    when the pod is deleted."""

    def __init__(self, standin: KubernetesStandIn, pod: dict):
        meta = pod["metadata"]
        super().__init__(daemon=True, name=f"pod {meta['namespace']}/{meta['name']}")
        self.standin, self.docker = standin, standin.docker
        self.pod = copy.deepcopy(pod)
        self.namespace, self.pod_name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.spec = self.pod["spec"]
        self.containers = [_Container(c, readiness=_Probe(c["readinessProbe"]) if "readinessProbe" in c else None)
                           for c in self.spec["containers"]]
        self.sources: dict[str, tuple[str, str, bool]] = {}  # volume name -> (mount type, source, read only)
        self.volumes: set[str] = set()
        self.pause: str | None = None
        self.pod_ip = ""
        self.host_ports: dict[int, int] = {}
        self.start_time: str | None = None
        self.finished = False

    def run(self) -> None:
        try:
            if self._wait_scheduled() and self._wait_volumes() and self._start_sandbox():
                while not self._ending():
                    for container in self.containers:
                        self._step(container)
                    if not self.finished and self._phase() in FINISHED_PHASES:
                        self._stop_sandbox()
                    self._publish()
                    self.standin._stopping.wait(TICK)
        except Exception:  # the pod must end somewhere, whatever went wrong
            LOG.exception("kubernetes stand-in: pod %s/%s failed", self.namespace, self.pod_name)
        finally:
            self._teardown()

    def _ending(self) -> bool:
        if self.standin._stopping.is_set():
            return True
        pod = self.standin._pod(self.uid)
        return pod is None or bool(pod["metadata"].get("deletionTimestamp"))

    def _event(self, event_type: str, reason: str, message: str, container: _Container | None = None,
               component: str = "kubelet") -> None:
        self.standin._event(self.pod, event_type, reason, message, component=component,
                            field_path=f"spec.containers{{{container.name}}}" if container else None)

    # scheduling and setup

    def _wait_scheduled(self) -> bool:
        reported = None
        while not self._ending():
            with self.standin._lock:
                pod = self.standin._pod(self.uid)
                if pod is None:
                    return False
                why = self.standin._schedule(pod)
            if why is None:
                self._event("Normal", "Scheduled", f"Successfully assigned {self.namespace}/{self.pod_name} to "
                            f"{NODE_NAME}", component="default-scheduler")
                return True
            if why != reported:
                reported = why
                self.standin._write_pod_status(self.uid, functools.partial(self._unschedulable, why=why))
                self._event("Warning", "FailedScheduling", why, component="default-scheduler")
            self.standin._stopping.wait(1.0)
        return False

    def _unschedulable(self, old: dict, *, why: str) -> dict:
        previous = next((c for c in old.get("conditions") or [] if c["type"] == "PodScheduled"), None)
        return {"phase": "Pending", "qosClass": qos_class(self.spec),
                "conditions": [_condition(previous, "PodScheduled", False, "Unschedulable", why)]}

    def _wait_volumes(self) -> bool:
        reported = None
        self.start_time = _now()
        self._publish()
        while not self._ending():
            try:
                self.sources = {v["name"]: self._volume_source(v) for v in self.spec.get("volumes") or []}
                return True
            except _VolumeError as error:
                if str(error) != reported:
                    reported = str(error)
                    self._event("Warning", "FailedMount", reported)
                self._publish()
            self.standin._stopping.wait(2.0)
        return False

    def _volume_source(self, volume: dict) -> tuple[str, str, bool]:
        name = volume["name"]
        if "emptyDir" in volume:
            return "volume", self._empty_dir(name, volume["emptyDir"]), False
        if "hostPath" in volume:
            return "bind", self._host_path(name, volume["hostPath"]), False
        if "nfs" in volume:
            nfs = volume["nfs"]
            return "bind", str(self.standin.nfs_dir(nfs["server"], nfs["path"])), bool(nfs.get("readOnly"))
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            path = self.standin._claim_dir(self.namespace, claim["claimName"])
            if path is None:
                raise _VolumeError(f'MountVolume.SetUp failed for volume "{name}" : persistentvolumeclaim '
                                   f'"{claim["claimName"]}" not found')
            return "bind", str(path), bool(claim.get("readOnly"))
        source = next(key for key in volume if key != "name")
        raise _VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {source} volumes are not modelled by '
                           f'the Kubernetes stand-in')

    def _empty_dir(self, name: str, empty_dir: dict) -> str:
        volume = f"k8s-standin-{self.uid}-{name}"
        options = None
        if empty_dir.get("medium") == "Memory":
            size = empty_dir.get("sizeLimit")
            options = {"type": "tmpfs", "device": "tmpfs"}
            if size:
                options["o"] = f"size={int(parse_quantity(size))}"
        self.docker.create_volume(volume, driver="local", driver_opts=options,
                                  labels={LABEL: self.standin.instance_id, f"{LABEL}.pod": self.uid})
        self.volumes.add(volume)
        return volume

    def _host_path(self, name: str, host_path: dict) -> str:
        path, kind = Path(host_path["path"]), host_path.get("type", "")
        if kind in ("", "DirectoryOrCreate") and not path.exists():
            path.mkdir(parents=True)
        elif kind == "FileOrCreate" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        checks = {"Directory": (Path.is_dir, "is not a directory"), "File": (Path.is_file, "is not a file")}
        check, complaint = checks.get(kind, (Path.exists, "does not exist"))
        if not check(path):
            raise _VolumeError(f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: '
                               f'{path} {complaint}')
        return str(path)

    def _start_sandbox(self) -> bool:
        """The pause container: owns the network namespace and publishes the pod's ports on 127.0.0.1."""
        declared = {p["containerPort"] for c in self.spec["containers"] for p in c.get("ports") or []
                    if p["protocol"] == "TCP"}
        probed = {_probe_port(c.readiness.spec) for c in self.containers if c.readiness}
        ports = sorted(declared | {port for port in probed if isinstance(port, int)})
        created = self.docker.create_container(
            PAUSE_IMAGE, entrypoint=["sleep", "infinity"], hostname=self.pod_name[:63], ports=ports,
            name=f"k8s_POD_{self.pod_name}_{self.namespace}_{self.uid}", labels=self._labels("POD"),
            host_config=self.docker.create_host_config(port_bindings={p: ("127.0.0.1", None) for p in ports}))
        self.pause = created["Id"]
        if self._ending():
            return False
        self.docker.start(self.pause)
        network = self.docker.inspect_container(self.pause)["NetworkSettings"]
        self.pod_ip = network.get("IPAddress") or ""
        self.host_ports = {int(key.split("/")[0]): int(bindings[0]["HostPort"])
                           for key, bindings in (network.get("Ports") or {}).items() if bindings}
        return True

    def _stop_sandbox(self) -> None:
        """The pod is over: the kubelet stops the pause container; the others are kept with their logs."""
        self.finished = True
        with suppress(APIError):
            self.docker.kill(self.pause)

    def _labels(self, container: str) -> dict[str, str]:
        return {LABEL: self.standin.instance_id, f"{LABEL}.pod": self.uid, "io.kubernetes.pod.name": self.pod_name,
                "io.kubernetes.pod.namespace": self.namespace, "io.kubernetes.container.name": container}

    # containers

    def _step(self, container: _Container) -> None:
        if container.terminated:
            return
        if container.docker_id is None:
            if time.monotonic() >= container.retry_at:
                self._create(container)
            elif container.waiting["reason"] == "ErrImagePull":
                image = container.spec["image"]
                container.waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}": '
                                     f'ErrImagePull: {container.waiting["message"]}'}
                self._event("Normal", "BackOff", f'Back-off pulling image "{image}"', container)
                self._event("Warning", "Failed", "Error: ImagePullBackOff", container)
            return
        try:
            state = self.docker.inspect_container(container.docker_id)["State"]
        except DockerNotFound:  # removed behind our back: make it again
            container.docker_id, container.waiting = None, {"reason": "ContainerCreating"}
            return
        if state["Running"]:
            self._running(container, state)
        elif state["FinishedAt"] != container.handled_exit:
            container.handled_exit = state["FinishedAt"]
            self._exited(container, {"exitCode": state["ExitCode"], "reason": _exit_reason(state),
                                     "startedAt": _docker_time(state["StartedAt"]),
                                     "finishedAt": _docker_time(state["FinishedAt"]),
                                     "containerID": f"docker://{container.docker_id}"})
        elif time.monotonic() >= container.retry_at:
            self._start(container)
            container.restarts += 1

    def _running(self, container: _Container, state: dict) -> None:
        if container.started_raw != state["StartedAt"]:  # a new run: readiness starts over
            container.started_raw, container.started_at = state["StartedAt"], _docker_time(state["StartedAt"])
            container.waiting = None
            if container.readiness:
                delay = container.readiness.spec.get("initialDelaySeconds", 0)
                container.readiness = _Probe(container.readiness.spec, due=time.monotonic() + delay)
        self._probe(container)

    def _exited(self, container: _Container, terminated: dict) -> None:
        container.started_raw = None
        policy = self.spec.get("restartPolicy", "Always")
        if policy == "Never" or (policy == "OnFailure" and terminated["exitCode"] == 0):
            container.terminated = terminated
            return
        container.last_terminated = terminated
        container.back_off({"reason": "CrashLoopBackOff", "message": f"back-off {int(container.backoff)}s restarting "
                            f"failed container={container.name} pod={self.pod_name}_{self.namespace}({self.uid})"})
        self._event("Warning", "BackOff", f"Back-off restarting failed container {container.name} in pod "
                    f"{self.pod_name}_{self.namespace}({self.uid})", container)

    def _create(self, container: _Container) -> None:
        try:
            container.image_id = self._pull(container)
            mounts = self._mounts(container.spec)
        except _ImageError as error:
            container.back_off({"reason": error.reason, "message": error.message})
            return
        except _VolumeError as error:
            container.back_off({"reason": "CreateContainerConfigError", "message": str(error)})
            self._event("Warning", "Failed", f"Error: {error}", container)
            return
        spec = container.spec
        env = _environment(spec)
        try:
            created = self.docker.create_container(
                spec["image"], name=f"k8s_{container.name}_{self.pod_name}_{self.namespace}_{self.uid}",
                entrypoint=[_expand(part, env) for part in spec["command"]] if "command" in spec else None,
                command=[_expand(part, env) for part in spec["args"]] if "args" in spec else None,
                environment=env, working_dir=spec.get("workingDir"), labels=self._labels(container.name),
                tty=spec.get("tty", False), stdin_open=spec.get("stdin", False),
                host_config=self.docker.create_host_config(network_mode=f"container:{self.pause}", mounts=mounts))
        except APIError as error:
            container.back_off({"reason": "CreateContainerError", "message": _docker_error(error)})
            self._event("Warning", "Failed", f"Error: {_docker_error(error)}", container)
            return
        container.docker_id = created["Id"]
        container.backoff = BACKOFF_FIRST
        self._event("Normal", "Created", f"Created container: {container.name}", container)
        if not self._ending():
            self._start(container)

    def _start(self, container: _Container) -> None:
        try:
            self.docker.start(container.docker_id)
        except APIError as error:  # e.g. the command does not exist: the run ends at once
            state = self.docker.inspect_container(container.docker_id)["State"]
            container.handled_exit = state["FinishedAt"]
            self._event("Warning", "Failed", f"Error: failed to start container {container.name!r}: "
                        f"{_docker_error(error)}", container)
            self._exited(container, {"exitCode": state.get("ExitCode") or 128, "reason": "StartError",
                                     "message": _docker_error(error), "startedAt": _now(), "finishedAt": _now(),
                                     "containerID": f"docker://{container.docker_id}"})
            return
        self._event("Normal", "Started", f"Started container {container.name}", container)

    def _pull(self, container: _Container) -> str:
        """Make the image present per imagePullPolicy (with the pod's pull secrets); its image ID."""
        image, policy = container.spec["image"], container.spec["imagePullPolicy"]
        present = self._local_image(image)
        if policy == "Never" and present is None:
            message = f'Container image "{image}" is not present with pull policy of Never'
            self._event("Warning", "ErrImageNeverPull", message, container)
            raise _ImageError("ErrImageNeverPull", message)
        if present is not None and policy != "Always":
            self._event("Normal", "Pulled", f'Container image "{image}" already present on machine', container)
            return _image_id(present, image)
        auths, missing = self.standin._pull_credentials(self.namespace, self.spec.get("imagePullSecrets") or [], image)
        if missing:
            self._event("Warning", "FailedToRetrieveImagePullSecret", f"Unable to retrieve some image pull secrets "
                        f"({', '.join(missing)}); attempting to pull the image may not succeed.")
        self._event("Normal", "Pulling", f'Pulling image "{image}"', container)
        began, error = time.monotonic(), None
        for auth in auths or [None]:
            try:
                ensure_image(self.docker, image, auth)
                error = None
                break
            except (APIError, RuntimeError) as failure:
                error = _docker_error(failure)
        if error is not None:
            self._event("Warning", "Failed", f'Failed to pull image "{image}": {error}', container)
            self._event("Warning", "Failed", "Error: ErrImagePull", container)
            raise _ImageError("ErrImagePull", f'failed to pull image "{image}": {error}')
        took = time.monotonic() - began
        pulled = self.docker.inspect_image(image)
        self._event("Normal", "Pulled", f'Successfully pulled image "{image}" in {took:.3f}s ({took:.3f}s including '
                    f'waiting). Image size: {pulled.get("Size", 0)} bytes.', container)
        return _image_id(pulled, image)

    def _local_image(self, image: str) -> dict | None:
        try:
            return self.docker.inspect_image(image)
        except DockerNotFound:
            return None

    def _mounts(self, spec: dict) -> list[Mount]:
        mounts = []
        for mount in spec.get("volumeMounts") or []:
            kind, source, read_only = self.sources[mount["name"]]
            if mount.get("subPath"):
                if kind != "bind":
                    raise _VolumeError(f'subPath on the emptyDir volume "{mount["name"]}" is not modelled by the '
                                       f'Kubernetes stand-in')
                source = str(Path(source) / mount["subPath"])
                Path(source).mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(mount["mountPath"], source, type=kind, no_copy=kind == "volume",
                                read_only=read_only or bool(mount.get("readOnly"))))
        return mounts

    # readiness

    def _probe(self, container: _Container) -> None:
        probe = container.readiness
        if probe is None or time.monotonic() < probe.due:
            return
        spec = probe.spec
        probe.due = time.monotonic() + spec["periodSeconds"]
        passed, failure = self._check(container, spec)
        if passed:
            probe.successes, probe.failures = probe.successes + 1, 0
            probe.passing = probe.passing or probe.successes >= spec["successThreshold"]
            return
        probe.successes, probe.failures = 0, probe.failures + 1
        if probe.failures >= spec["failureThreshold"]:
            probe.passing = False
        self._event("Warning", "Unhealthy", f"Readiness probe failed: {failure}", container)

    def _check(self, container: _Container, spec: dict) -> tuple[bool, str]:
        """One readiness check: (passed, what failed, as the kubelet words it)."""
        if "exec" in spec:
            run = self.docker.exec_create(container.docker_id, spec["exec"]["command"])
            output = self.docker.exec_start(run["Id"]).decode(errors="replace")
            return self.docker.exec_inspect(run["Id"])["ExitCode"] == 0, output.strip()
        timeout = spec["timeoutSeconds"]
        port = _container_port([container.spec], _probe_port(spec))
        host_port = self.host_ports.get(port)
        if "httpGet" in spec:
            action = spec["httpGet"]
            scheme, path = action["scheme"].lower(), action.get("path", "/")
            shown = f"{scheme}://{self.pod_ip}:{port}{path}"
            if host_port is None:
                return False, f'Get "{shown}": port {_probe_port(spec)!r} is not published'
            headers = {h["name"]: h["value"] for h in action.get("httpHeaders") or []}
            try:
                answer = httpx.get(f"{scheme}://127.0.0.1:{host_port}{path}", headers=headers, timeout=timeout,
                                   verify=False)
            except httpx.HTTPError as error:
                return False, f'Get "{shown}": {error or type(error).__name__}'
            return 200 <= answer.status_code < 400, f"HTTP probe failed with statuscode: {answer.status_code}"
        if "tcpSocket" in spec:
            refused = f"dial tcp {self.pod_ip}:{port}: connect: connection refused"
            return host_port is not None and tcp_ok(host_port, timeout), refused
        return True, ""  # grpc probes are not modelled: they pass

    # status and teardown

    def _publish(self) -> None:
        self.standin._write_pod_status(self.uid, self._status)

    def _phase(self) -> str:
        """The kubelet's phase rule: over once no container will run again, Running once each has started."""
        if all(c.terminated for c in self.containers):
            return "Succeeded" if all(c.terminated["exitCode"] == 0 for c in self.containers) else "Failed"
        started = all(c.started_at or c.last_terminated or c.terminated for c in self.containers)
        return "Running" if started else "Pending"

    def _status(self, old: dict) -> dict:
        previous = {c["type"]: c for c in old.get("conditions") or []}
        phase = self._phase()
        unready = [c.name for c in self.containers if not c.ready]
        if phase in FINISHED_PHASES:
            why = ("PodCompleted" if phase == "Succeeded" else "PodFailed",)
        else:
            why = ("ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]") if unready else ()
        holds = {"PodReadyToStartContainers": (self.pause is not None and not self.finished,),
                 "Initialized": (True,), "Ready": (not unready, *why), "ContainersReady": (not unready, *why),
                 "PodScheduled": (True,)}
        conditions = [_condition(previous.get(kind), kind, *state) for kind, state in holds.items()]
        status = {"phase": phase, "conditions": conditions,
                  "hostIP": self.standin.node_ip, "hostIPs": [{"ip": self.standin.node_ip}],
                  "startTime": self.start_time, "qosClass": qos_class(self.spec),
                  "containerStatuses": [self._container_status(c) for c in self.containers]}
        if self.pod_ip:
            status |= {"podIP": self.pod_ip, "podIPs": [{"ip": self.pod_ip}]}
        return status

    def _container_status(self, container: _Container) -> dict:
        if container.terminated:
            state = {"terminated": dict(container.terminated)}
        elif container.waiting:
            state = {"waiting": dict(container.waiting)}
        else:
            state = {"running": {"startedAt": container.started_at}}
        status = {"name": container.name, "image": container.spec["image"], "imageID": container.image_id,
                  "ready": container.ready, "restartCount": container.restarts, "started": container.running,
                  "state": state, "lastState": {"terminated": container.last_terminated} if container.last_terminated
                  else {}}
        if container.docker_id:
            status["containerID"] = f"docker://{container.docker_id}"
        return status

    def _teardown(self) -> None:
        for container in self.containers:
            if container.docker_id:
                if not self.standin._stopping.is_set() and not container.terminated:
                    self._event("Normal", "Killing", f"Stopping container {container.name}", container)
                remove_container(self.docker, container.docker_id)
        if self.pause:
            remove_container(self.docker, self.pause)
        for volume in self.volumes:
            with suppress(APIError):
                self.docker.remove_volume(volume, force=True)
        self.standin._forget_pod(self.uid)


def _exit_reason(state: dict) -> str:
    if state.get("OOMKilled"):
        return "OOMKilled"
    return "Completed" if state["ExitCode"] == 0 else "Error"


def _image_id(info: dict, image: str) -> str:
    """The digest reference of the image's own repository, else the engine's image ID."""
    repository = parse_repository_tag(image)[0]
    digests = info.get("RepoDigests") or []
    return next((d for d in digests if d.split("@")[0] == repository), info["Id"])


def _probe_port(spec: dict) -> int | str | None:
    return (spec.get("httpGet") or spec.get("tcpSocket") or {}).get("port")


# networking


class _NodePortListener:
    """127.0.0.1:<nodePort>: each connection is relayed to the host port ``backend()`` names, else closed."""

    def __init__(self, port: int, service: tuple[str, str], backend: Callable[[], int | None]):
        self.port, self.service, self.backend = port, service, backend
        self._socket = socket.create_server(("127.0.0.1", port))
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name=f"node port {port}").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True,
                             name=f"node port {self.port} relay").start()

    def _relay(self, client: socket.socket) -> None:
        target = self.backend()
        try:
            upstream = socket.create_connection(("127.0.0.1", target), timeout=5) if target else None
        except OSError:
            upstream = None
        if upstream is None:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._connections |= {client, upstream}
        pump = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        pump.start()
        _pipe(client, upstream)
        pump.join()
        with self._lock:
            self._connections -= {client, upstream}
        client.close()
        upstream.close()

    def close(self) -> None:
        with suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in another thread
        self._socket.close()
        with self._lock:
            for connection in self._connections:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class _IngressProxy(ServiceProxy):
    """The ingress controller's :80, routing by Host header and path (``route``) rather than by credentials."""

    def __init__(self, resolve: Callable[[str, str], tuple[int, int | None]]):
        self.resolve = resolve
        super().__init__(None, _nginx_refusal, "kubernetes ingress")

    def route(self, request: BaseHTTPRequestHandler) -> tuple[int, int | None]:
        return self.resolve(request.headers.get("Host", ""), urlsplit(request.path).path)


def _nginx_refusal(status: int, path: str) -> tuple[str, bytes]:
    title = {404: "404 Not Found", 503: "503 Service Temporarily Unavailable"}[status]
    page = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n" \
           f"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    return "text/html", page.encode()


class _ApiHandler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body, content_type = self.server.standin._serve(self.command, self.path, self.headers, raw)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if not isinstance(body, bytes | dict):
            self._stream(body)
            return
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: Iterator[bytes]) -> None:
        """A followed log, chunk by chunk as it comes (chunked transfer encoding)."""
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away
            self.close_connection = True
        finally:
            chunks.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
