"""One project's view of a Kubernetes cluster, shared by the ``kubernetes`` deploy target and the Kubernetes
job runner: the connection, the API clients, the owner label, and the calls both make.

Credentials come from a ``kubernetes`` connection (the operator's ``kubernetes_conn_id``, else
``CLOUD_DEPLOY_K8S_CONN_ID``, default ``kubernetes_default``: kube_config, kube_config_path or in_cluster,
and a namespace) through the cncf-kubernetes provider's hook; objects are plain API manifests sent with the
official client. An object of the same name without this project's owner label (another project's, or
hand-made) is never replaced or deleted.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any

from cloud_deploy_provider.accelerators import AcceleratorRequest, kubernetes_resources
from cloud_deploy_provider.clients import last_lines, poll_until
from cloud_deploy_provider.errors import TargetError
from cloud_deploy_provider.identity import ProjectRef

DEFAULT_CONN_ID = "kubernetes_default"
DEFAULT_NAMESPACE = "default"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_OWNER = "cloud-deploy.io/owner"
LABEL_USER = "cloud-deploy.io/user"
LABEL_PROJECT = "cloud-deploy.io/project"
LABEL_SERVICE = "cloud-deploy.io/service"
CRASH_LOG_LINES = 10
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CONFIG_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
GONE_TIMEOUT_SECONDS = 60
GONE_POLL_SECONDS = 0.5


class KubernetesError(TargetError):
    """The cluster refused a call, or could not be reached (then retryable)."""


def owner_value(project: ProjectRef) -> str:
    """A label value naming the project: identifiers may hold '.', '_' and '-' but not '~'."""
    return hashlib.sha256(project.key.encode()).hexdigest()[:24]


class KubernetesCluster:
    """The cluster of one connection, as one project uses it; the clients are made on first use."""

    def __init__(self, project: ProjectRef, find_registry: Callable[[], Any], log: Callable[[str], None] = print,
                 conn_id: str | None = None, hook: Any = None):
        self.project, self.log, self.conn_id = project, log, conn_id
        self._hook, self._find_registry = hook, find_registry

    # ------------------------------------------------------------------ connection

    @cached_property
    def hook(self):
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        from cloud_deploy_provider.clients.connections import conn_id_from_env

        return self._hook or KubernetesHook(
            conn_id=self.conn_id or conn_id_from_env("CLOUD_DEPLOY_K8S_CONN_ID", DEFAULT_CONN_ID, KubernetesError)
        )

    @cached_property
    def apps(self):
        return self.hook.apps_v1_client

    @cached_property
    def core(self):
        return self.hook.core_v1_client

    @cached_property
    def batch(self):
        return self.hook.batch_v1_client

    @cached_property
    def networking(self):
        from kubernetes import client

        return client.NetworkingV1Api(api_client=self.hook.api_client)

    @cached_property
    def registry(self):
        """The registry the cluster pulls from (the installation's), looked up on first use; None: none."""
        return self._find_registry()

    def namespace(self, asked: str | None = None) -> str:
        return asked or self.hook.get_namespace() or DEFAULT_NAMESPACE

    # ------------------------------------------------------------------ ownership

    @property
    def owner_selector(self) -> str:
        return f"{LABEL_OWNER}={owner_value(self.project)}"

    def owner_labels(self, service: str, instance: str) -> dict[str, str]:
        return {
            LABEL_MANAGED: "cloud-deploy",
            LABEL_OWNER: owner_value(self.project),
            LABEL_USER: self.project.user_id,
            LABEL_PROJECT: self.project.project_id,
            LABEL_SERVICE: service,
            LABEL_INSTANCE: instance,
        }

    def owned(self, kind: str, current: Any) -> bool:
        labels = current.metadata.labels or {}
        if labels.get(LABEL_OWNER) != owner_value(self.project):
            raise KubernetesError(
                f"kubernetes: {kind} {current.metadata.namespace}/{current.metadata.name} exists and is not this "
                "project's (no matching owner label); it was left untouched"
            )
        return True

    def pull_secret(self, metadata: dict[str, Any], reveal: bool = True) -> dict[str, Any] | None:
        """The registry's login as a dockerconfigjson Secret; None when the registry needs no login."""
        registry = self.registry
        if registry is None or not registry.username:
            return None
        if reveal:
            login = f"{registry.username}:{registry.password or ''}"
            auths = {registry.host: {"username": registry.username, "password": registry.password or "",
                                     "auth": base64.b64encode(login.encode()).decode()}}
            data = base64.b64encode(json.dumps({"auths": auths}).encode()).decode()
        else:
            data = "<the registry connection's login, base64>"
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": metadata, "data": {".dockerconfigjson": data}}

    # ------------------------------------------------------------------ calls

    def call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(*args, **kwargs)
        except ApiException as error:
            raise KubernetesError(f"kubernetes: {what}: {error.status} {api_message(error)}",
                                  status=error.status) from None
        except HTTPError as error:
            raise KubernetesError(f"kubernetes: {what}: the API server is unreachable: {error}",
                                  retryable=True) from None

    def read(self, kind: str, namespace: str, name: str) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api(kind, "read")(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise KubernetesError(f"kubernetes: read {kind} {namespace}/{name}: {error.status} "
                                  f"{api_message(error)}", status=error.status) from None

    def api(self, kind: str, verb: str) -> Callable[..., Any]:
        api, plural = {
            "Deployment": (self.apps, "deployment"), "Service": (self.core, "service"),
            "Secret": (self.core, "secret"), "PersistentVolumeClaim": (self.core, "persistent_volume_claim"),
            "Ingress": (self.networking, "ingress"), "Job": (self.batch, "job"),
        }[kind]
        return getattr(api, f"{verb}_namespaced_{plural}")

    def apply(self, manifest: dict[str, Any]) -> str:
        """Create, or replace what this project owns; claims are never replaced (their spec is immutable)."""
        kind, meta = manifest["kind"], manifest["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        current = self.read(kind, namespace, name)
        if current is None:
            self.call(f"create {kind} {name}", self.api(kind, "create"), namespace, manifest)
            return "created"
        self.owned(kind, current)
        if kind == "PersistentVolumeClaim":
            return "kept"
        manifest = json.loads(json.dumps(manifest))
        manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
        if kind == "Service":
            _keep_allocations(manifest, current)
        self.call(f"replace {kind} {name}", self.api(kind, "replace"), name, namespace, manifest)
        return "replaced"

    def owned_items(self, kind: str, namespace: str, selector: str | None = None) -> Iterator[Any]:
        listing = self.call(f"list {kind}", self.api(kind, "list"), namespace,
                            label_selector=selector or self.owner_selector)
        yield from listing.items

    def delete(self, kind: str, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api(kind, "delete")(name, namespace, body={"propagationPolicy": "Foreground"})
        except ApiException as error:
            if error.status != 404:
                raise KubernetesError(f"kubernetes: delete {kind} {namespace}/{name}: {error.status} "
                                      f"{api_message(error)}", status=error.status) from None

    def wait_pods_gone(self, namespace: str, selector: str, what: str) -> None:
        """Wait (bounded) until the deleted objects' pods are gone: until then they hold their node's
        resources, and "everything is gone" would not be true yet."""
        pods = poll_until(lambda: self.pods(namespace, selector), lambda found: not found, GONE_TIMEOUT_SECONDS,
                          GONE_POLL_SECONDS)
        if pods:
            names = ", ".join(pod.metadata.name for pod in pods)
            self.log(f"{what}: pods {names} are still terminating after {GONE_TIMEOUT_SECONDS} s")

    def node_ip(self) -> str:
        nodes = self.call("list nodes", self.core.list_node).items
        for node in nodes:
            for address in node.status.addresses or []:
                if address.type in ("ExternalIP", "InternalIP"):
                    return address.address
        raise KubernetesError("kubernetes: no node reports an address")

    # ------------------------------------------------------------------ pods

    def pods(self, namespace: str, selector: str) -> list[Any]:
        return self.call("list pods", self.core.list_namespaced_pod, namespace, label_selector=selector).items

    def pod_problem(self, namespace: str, instance: str) -> str | None:
        """Why a pod of ``instance`` cannot run: unschedulable, image pull, crash loop (with its logs)."""
        for pod in self.pods(namespace, f"{LABEL_INSTANCE}={instance}"):
            for condition in pod.status.conditions or []:
                unschedulable = condition.status == "False" and condition.reason == "Unschedulable"
                if condition.type == "PodScheduled" and unschedulable:
                    return f"pod {pod.metadata.name} is Unschedulable: {condition.message}"
            for container in pod.status.container_statuses or []:
                waiting = container.state.waiting if container.state else None
                if waiting is None:
                    continue
                if waiting.reason in PULL_FAILURES or waiting.reason in CONFIG_FAILURES:
                    return f"container {container.name}: {waiting.reason}: {waiting.message or ''}".strip()
                if waiting.reason == "CrashLoopBackOff":
                    return self._crash(namespace, pod.metadata.name, container)
        return None

    def _crash(self, namespace: str, pod: str, container: Any) -> str:
        terminated = container.last_state.terminated if container.last_state else None
        code = terminated.exit_code if terminated else "unknown"
        message = f"container {container.name}: CrashLoopBackOff, exit code {code}"
        logs = self.last_log_lines(namespace, pod, container.name)
        return f"{message}; last log lines: {' | '.join(logs)}" if logs else message

    def pod_log(self, namespace: str, pod: str, container: str, **options: Any) -> list[str] | None:
        """The container's log lines; None when it cannot be read (the container is starting, or the pod is gone)."""
        from kubernetes.client.exceptions import ApiException

        try:  # raw bytes: the client's own decoding turns a log into the repr of bytes
            response = self.core.read_namespaced_pod_log(pod, namespace, container=container,
                                                         _preload_content=False, **options)
        except ApiException:
            return None
        return response.data.decode("utf-8", "replace").splitlines()

    def last_log_lines(self, namespace: str, pod: str, container: str) -> list[str]:
        """The last non-blank lines of the crashed container's previous run, else of its current one."""
        for previous in (True, False):
            lines = self.pod_log(namespace, pod, container, previous=previous, tail_lines=CRASH_LOG_LINES)
            if lines:
                return last_lines([line for line in lines if line.strip()], CRASH_LOG_LINES)
        return []


def resource_block(accelerator: AcceleratorRequest, cpu: float | None, memory_mb: int | None) -> dict[str, Any]:
    """A container's ``resources``: cpu and memory as equal requests and limits, devices as limits."""
    limits: dict[str, str] = {name: str(count) for name, count in kubernetes_resources(accelerator).items()}
    requests: dict[str, str] = {}
    if cpu:
        requests["cpu"] = limits["cpu"] = f"{cpu:g}"
    if memory_mb:
        requests["memory"] = limits["memory"] = f"{memory_mb}Mi"
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def _keep_allocations(manifest: dict[str, Any], current: Any) -> None:
    """A replaced Service keeps its cluster IP and the node ports the cluster chose."""
    manifest["spec"]["clusterIP"] = current.spec.cluster_ip
    allocated = {port.port: port.node_port for port in current.spec.ports or [] if port.node_port}
    if manifest["spec"]["type"] == "NodePort":
        for port in manifest["spec"]["ports"]:
            if "nodePort" not in port and port["port"] in allocated:
                port["nodePort"] = allocated[port["port"]]


def api_message(error: Any) -> str:
    try:
        return json.loads(error.body).get("message") or error.reason
    except (TypeError, ValueError):
        return str(error.reason)
