"""The ``kubernetes`` target: a Deployment, its Service, an optional Ingress, volumes and a pull secret.

Credentials come from a ``kubernetes`` connection (``CLOUD_DEPLOY_K8S_CONN_ID``, default
``kubernetes_default``: kube_config, kube_config_path or in_cluster, and a namespace) through the
cncf-kubernetes provider's hook; the objects are plain API manifests sent with the official client.

Every object carries this project's owner label; one of the same name without it (another
project's, or hand-made) is never replaced or deleted. ``stop`` deletes what carries the label,
PersistentVolumeClaims only when the spec marks them ``disposable``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import cached_property
from typing import Any, ClassVar

from cloud_deploy_provider.accelerators import AcceleratorRequest, kubernetes_resources
from cloud_deploy_provider.errors import Refusal
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.spec import DeploymentSpec, K8s, K8sContainer, K8sPort
from cloud_deploy_provider.targets import DeployResult, ImageRef, TargetStatus
from cloud_deploy_provider.targets.base import CONFIG_ANNOTATION, Target

DEFAULT_CONN_ID = "kubernetes_default"
DEFAULT_NAMESPACE = "default"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_OWNER = "cloud-deploy.io/owner"
LABEL_USER = "cloud-deploy.io/user"
LABEL_PROJECT = "cloud-deploy.io/project"
LABEL_SERVICE = "cloud-deploy.io/service"
SHM_VOLUME = "dshm"
NFS_VOLUME = "nfs"
LOG_TAIL_LINES = 10
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CONFIG_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
GONE_TIMEOUT_SECONDS = 60
GONE_POLL_SECONDS = 0.5


class KubernetesTargetError(Refusal):
    pass


def owner_value(project: ProjectRef) -> str:
    """A label value naming the project: identifiers may hold '.', '_' and '-' but not '~'."""
    return hashlib.sha256(project.key.encode()).hexdigest()[:24]


def _container_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "service"


class KubernetesTarget(Target):
    """Everything it creates carries the project's owner label, so a stop without the spec finds it all."""

    type: ClassVar[str] = "kubernetes"
    without_spec: ClassVar[str] = "owned"
    conn_id_parameter: ClassVar[str] = "kubernetes_conn_id"
    config_hash_length: ClassVar[int] = 16

    def __init__(self, project: ProjectRef, log: Callable[[str], None] = print, hook: Any = None,
                 registry: Any = None, **connections: Any):
        super().__init__(project, log, **connections)
        self._hook = hook
        self._registry = registry

    # ------------------------------------------------------------------ connection

    @cached_property
    def hook(self):
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        from cloud_deploy_provider.clients.connections import conn_id_from_env

        return self._hook or KubernetesHook(
            conn_id=self.conn_id or conn_id_from_env("CLOUD_DEPLOY_K8S_CONN_ID", DEFAULT_CONN_ID, KubernetesTargetError)
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
        """The installation's registry (``CLOUD_DEPLOY_REGISTRY_CONN_ID``): where the cluster pulls from."""
        from cloud_deploy_provider.registries import installation_registry

        return self._registry if self._registry is not None else installation_registry(self.registry_conn_id)

    def namespace(self, spec: DeploymentSpec | None) -> str:
        k8s = spec.deploy.k8s if spec else None
        return (k8s.namespace if k8s else None) or self.hook.get_namespace() or DEFAULT_NAMESPACE

    # ------------------------------------------------------------------ names and labels

    def name(self, spec: DeploymentSpec) -> str:
        return self.project.resource_name(spec.deploy.service_name)

    def labels(self, spec: DeploymentSpec) -> dict[str, str]:
        return {
            LABEL_MANAGED: "cloud-deploy",
            LABEL_OWNER: owner_value(self.project),
            LABEL_USER: self.project.user_id,
            LABEL_PROJECT: self.project.project_id,
            LABEL_SERVICE: spec.deploy.service_name,
            LABEL_INSTANCE: self.name(spec),
        }

    def metadata(self, spec: DeploymentSpec, name: str, **annotations: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace(spec), "labels": self.labels(spec)}
        if annotations:
            meta["annotations"] = annotations
        return meta

    @property
    def owner_selector(self) -> str:
        return f"{LABEL_OWNER}={owner_value(self.project)}"

    # ------------------------------------------------------------------ manifests

    @staticmethod
    def k8s(spec: DeploymentSpec) -> K8s:
        return spec.deploy.k8s or K8s()

    def containers(self, spec: DeploymentSpec) -> list[K8sContainer]:
        """The pod's containers: ``k8s.containers``, else one running the built image's entrypoint."""
        k8s = self.k8s(spec)
        if k8s.containers:
            return k8s.containers
        port = self.port(spec)
        mounts = [{"name": v.name, "path": v.mount} for v in k8s.volumes if v.mount]
        if k8s.nfsip:
            mounts.append({"name": NFS_VOLUME, "path": k8s.nfs_mount})
        return [K8sContainer.model_validate({
            "name": _container_name(spec.deploy.service_name), "ports": [{"port": port, "name": "http"}],
            "volumes": mounts,
        })]

    def container(self, spec: DeploymentSpec, container: K8sContainer, image: str, first: bool) -> dict[str, Any]:
        deploy = spec.deploy
        body: dict[str, Any] = {"name": container.name, "image": container.image or image}
        if container.command:
            body["command"] = list(container.command)
        if container.args:
            body["args"] = list(container.args)
        env = {**deploy.env, **container.env}
        if env:
            body["env"] = [{"name": key, "value": value} for key, value in env.items()]
        if container.ports:
            body["ports"] = [_container_port(port) for port in container.ports]
        resources = self.container_resources(spec, container, first)
        if resources:
            body["resources"] = resources
        mounts = [{"name": m.name, "mountPath": m.path, **({"readOnly": True} if m.read_only else {})}
                  for m in container.volumes]
        if deploy.resources.shm_size:
            mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
        if mounts:
            body["volumeMounts"] = mounts
        probe = self.readiness_probe(spec, container) if first else None
        if probe:
            body["readinessProbe"] = probe
        return body

    def container_resources(self, spec: DeploymentSpec, container: K8sContainer, first: bool) -> dict[str, Any]:
        """cpu and memory (pod totals) go to the first container; each container gets its accelerators."""
        request = spec.accelerator_request
        if container.gpu is not None:
            request = replace(request, count=container.gpu, shares=None)
        elif not first:
            request = replace(request, count=0, shares=None)
        size = spec.deploy.resources
        return resource_block(request, size.cpu if first else None, size.memory if first else None)

    @staticmethod
    def readiness_probe(spec: DeploymentSpec, container: K8sContainer) -> dict[str, Any] | None:
        if not container.ports:
            return None
        readiness, port = spec.deploy.readiness, container.ports[0].port
        check = {"httpGet": {"path": readiness.path, "port": port}} if readiness.check == "http" else {"tcpSocket": {"port": port}}
        period = max(1, round(readiness.interval_seconds))
        return {**check, "periodSeconds": period, "failureThreshold": 3}

    def volumes(self, spec: DeploymentSpec) -> list[dict[str, Any]]:
        k8s = self.k8s(spec)
        volumes: list[dict[str, Any]] = []
        if k8s.nfsip:
            volumes.append({"name": NFS_VOLUME, "nfs": {"server": k8s.nfsip, "path": k8s.nfspath}})
        for volume in k8s.volumes:
            if volume.type == "host":
                volumes.append({"name": volume.name, "hostPath": {"path": volume.host_path, "type": "DirectoryOrCreate"}})
            else:
                volumes.append({"name": volume.name, "persistentVolumeClaim": {"claimName": self.claim_name(spec, volume.name)}})
        if spec.deploy.resources.shm_size:
            volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.deploy.resources.shm_size}Mi"}})
        return volumes

    def claim_name(self, spec: DeploymentSpec, volume: str) -> str:
        return f"{self.name(spec)}-{volume}"

    def pull_secret_name(self, spec: DeploymentSpec) -> str:
        return f"{self.name(spec)}-pull"

    def deployment(self, spec: DeploymentSpec, image: str) -> dict[str, Any]:
        pod: dict[str, Any] = {
            "containers": [self.container(spec, c, image, i == 0) for i, c in enumerate(self.containers(spec))],
        }
        volumes = self.volumes(spec)
        if volumes:
            pod["volumes"] = volumes
        if self.registry is not None and self.registry.username:
            pod["imagePullSecrets"] = [{"name": self.pull_secret_name(spec)}]
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.metadata(spec, self.name(spec)),
            "spec": {
                "replicas": spec.deploy.replicas,
                "selector": {"matchLabels": {LABEL_INSTANCE: self.name(spec)}},
                "progressDeadlineSeconds": spec.deploy.readiness.timeout_seconds,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"metadata": {"labels": self.labels(spec)}, "spec": pod},
            },
        }

    def service_ports(self, spec: DeploymentSpec) -> list[tuple[K8sContainer, K8sPort]]:
        return [(container, port) for container in self.containers(spec) for port in container.ports]

    def service_type(self, spec: DeploymentSpec) -> str:
        k8s = self.k8s(spec)
        if k8s.service_type:
            return "NodePort" if k8s.service_type == "nodeport" else "ClusterIP"
        return "NodePort" if any(port.node_port for _, port in self.service_ports(spec)) else "ClusterIP"

    def service(self, spec: DeploymentSpec) -> dict[str, Any] | None:
        ports = self.service_ports(spec)
        if not ports:
            return None
        service_type = self.service_type(spec)
        if service_type == "ClusterIP" and any(port.node_port for _, port in ports):
            raise KubernetesTargetError("kubernetes: node_port needs k8s.service_type nodeport")
        listed = []
        for container, port in ports:
            entry = {"name": _service_port_name(container, port), "port": port.port, "targetPort": port.port,
                     "protocol": "TCP"}
            if port.node_port:
                entry["nodePort"] = port.node_port
            listed.append(entry)
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata(spec, self.name(spec)),
            "spec": {"type": service_type, "selector": {LABEL_INSTANCE: self.name(spec)}, "ports": listed},
        }

    def ingress(self, spec: DeploymentSpec) -> dict[str, Any] | None:
        ingress = self.k8s(spec).ingress
        if ingress is None:
            return None
        ports = [port.port for _, port in self.service_ports(spec)]
        port = ingress.port or (ports[0] if ports else None)
        if port is None or port not in ports:
            raise KubernetesTargetError(f"kubernetes: k8s.ingress.port {port} is not a port of the pod ({ports})")
        body: dict[str, Any] = {"rules": [{"host": ingress.host, "http": {"paths": [{
            "path": ingress.path, "pathType": "Prefix",
            "backend": {"service": {"name": self.name(spec), "port": {"number": port}}},
        }]}}]}
        if ingress.class_name:
            body["ingressClassName"] = ingress.class_name
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": self.metadata(spec, self.name(spec)), "spec": body}

    def claims(self, spec: DeploymentSpec) -> list[dict[str, Any]]:
        claims = []
        for volume in self.k8s(spec).volumes:
            if volume.type != "nas":
                continue
            claim_spec: dict[str, Any] = {"accessModes": ["ReadWriteMany"],
                                          "resources": {"requests": {"storage": volume.size}}}
            if volume.storage_class:
                claim_spec["storageClassName"] = volume.storage_class
            claims.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": self.metadata(spec, self.claim_name(spec, volume.name)), "spec": claim_spec})
        return claims

    def pull_secret(self, spec: DeploymentSpec, reveal: bool = True) -> dict[str, Any] | None:
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
                "metadata": self.metadata(spec, self.pull_secret_name(spec)), "data": {".dockerconfigjson": data}}

    def manifests(self, spec: DeploymentSpec, image: str, reveal: bool = True) -> list[dict[str, Any]]:
        """Everything a deploy applies, in order: pull secret, claims, Deployment, Service, Ingress."""
        found = [self.pull_secret(spec, reveal), *self.claims(spec), self.deployment(spec, image),
                 self.service(spec), self.ingress(spec)]
        return [manifest for manifest in found if manifest is not None]

    @classmethod
    def describe(cls, project: ProjectRef, spec: DeploymentSpec, settings: Any = None) -> dict[str, Any]:
        return {"manifests": cls(project).manifests(spec, "<the pushed image, by digest>", reveal=False)}

    def preflight(self, spec: DeploymentSpec) -> str:
        """Run by the validate task: the manifests build, and the cluster answers with these credentials."""
        self.manifests(spec, "<image>", reveal=False)
        self._call("list deployments", self.apps.list_namespaced_deployment, self.namespace(spec), limit=1)
        return "the manifests and the cluster's answer"

    # ------------------------------------------------------------------ applying

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(*args, **kwargs)
        except ApiException as error:
            raise KubernetesTargetError(f"kubernetes: {what}: {error.status} {_api_message(error)}",
                                        status=error.status) from None
        except HTTPError as error:
            raise KubernetesTargetError(f"kubernetes: {what}: the API server is unreachable: {error}",
                                        retryable=True) from None

    def _read(self, kind: str, namespace: str, name: str) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._api(kind, "read")(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise KubernetesTargetError(f"kubernetes: read {kind} {namespace}/{name}: {error.status} "
                                        f"{_api_message(error)}", status=error.status) from None

    def _api(self, kind: str, verb: str) -> Callable[..., Any]:
        api, plural = {
            "Deployment": (self.apps, "deployment"), "Service": (self.core, "service"),
            "Secret": (self.core, "secret"), "PersistentVolumeClaim": (self.core, "persistent_volume_claim"),
            "Ingress": (self.networking, "ingress"), "Job": (self.batch, "job"),
        }[kind]
        return getattr(api, f"{verb}_namespaced_{plural}")

    def _owned(self, kind: str, current: Any) -> bool:
        labels = current.metadata.labels or {}
        if labels.get(LABEL_OWNER) != owner_value(self.project):
            raise KubernetesTargetError(
                f"kubernetes: {kind} {current.metadata.namespace}/{current.metadata.name} exists and is not this "
                "project's (no matching owner label); it was left untouched"
            )
        return True

    def apply(self, manifest: dict[str, Any]) -> str:
        """Create, or replace what this project owns; claims are never replaced (their spec is immutable)."""
        kind, meta = manifest["kind"], manifest["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        current = self._read(kind, namespace, name)
        if current is None:
            self._call(f"create {kind} {name}", self._api(kind, "create"), namespace, manifest)
            return "created"
        self._owned(kind, current)
        if kind == "PersistentVolumeClaim":
            return "kept"
        manifest = json.loads(json.dumps(manifest))
        manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
        if kind == "Service":
            _keep_allocations(manifest, current)
        self._call(f"replace {kind} {name}", self._api(kind, "replace"), name, namespace, manifest)
        return "replaced"

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        manifests = self.manifests(spec, image.pinned)
        digest = self.config_hash(manifests)
        deployment = next(m for m in manifests if m["kind"] == "Deployment")
        deployment["metadata"]["annotations"] = {CONFIG_ANNOTATION: digest}
        namespace = self.namespace(spec)
        current = self._read("Deployment", namespace, self.name(spec))
        unchanged = current is not None and self._owned("Deployment", current) and \
            (current.metadata.annotations or {}).get(CONFIG_ANNOTATION) == digest
        if unchanged and all(self._read(m["kind"], namespace, m["metadata"]["name"]) for m in manifests):
            self.log(f"{namespace}/{self.name(spec)} already runs this configuration; nothing to change")
            return DeployResult(self.type, self._resources(spec, manifests), self.url(spec), changed=False)
        for manifest in manifests:
            outcome = self.apply(manifest)
            self.log(f"{manifest['kind']} {namespace}/{manifest['metadata']['name']}: {outcome}")
        return DeployResult(self.type, self._resources(spec, manifests), self.url(spec))

    def _resources(self, spec: DeploymentSpec, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        return {"namespace": self.namespace(spec),
                "objects": [f"{m['kind']}/{m['metadata']['name']}" for m in manifests]}

    def ready_timeout_seconds(self, spec: DeploymentSpec) -> int:
        return spec.deploy.readiness.timeout_seconds + 30

    # ------------------------------------------------------------------ status

    def endpoints(self, spec: DeploymentSpec) -> dict[str, str]:
        """Where the service is reachable: node IP + node port per port, and the ingress URL."""
        found: dict[str, str] = {}
        service = self._read("Service", self.namespace(spec), self.name(spec))
        node_ports = [p for p in (service.spec.ports or []) if p.node_port] if service else []
        if node_ports:
            node_ip = self.node_ip()
            found |= {port.name: f"{node_ip}:{port.node_port}" for port in node_ports}
        ingress = self.k8s(spec).ingress
        if ingress:
            found["ingress"] = f"http://{ingress.host}{ingress.path}"
        return found

    def node_ip(self) -> str:
        nodes = self._call("list nodes", self.core.list_node).items
        for node in nodes:
            for address in node.status.addresses or []:
                if address.type in ("ExternalIP", "InternalIP"):
                    return address.address
        raise KubernetesTargetError("kubernetes: no node reports an address")

    def url(self, spec: DeploymentSpec) -> str | None:
        """Known before the rollout only with an ingress; node ports are read once the service is up."""
        ingress = self.k8s(spec).ingress
        return f"http://{ingress.host}{ingress.path}" if ingress else None

    def cluster_url(self, spec: DeploymentSpec) -> str | None:
        """The in-cluster address of the web port (named http* or web*, else the first)."""
        ports = [port for _, port in self.service_ports(spec)]
        web = [port for port in ports if (port.name or "").startswith(("http", "web"))]
        chosen = (web or ports or [None])[0]
        return f"http://{self.name(spec)}.{self.namespace(spec)}.svc.cluster.local:{chosen.port}" if chosen else None

    def status(self, spec: DeploymentSpec) -> TargetStatus:
        namespace, name = self.namespace(spec), self.name(spec)
        deployment = self._read("Deployment", namespace, name)
        if deployment is None or (deployment.metadata.labels or {}).get(LABEL_OWNER) != owner_value(self.project):
            return TargetStatus("absent", message=f"no deployment {namespace}/{name} of this project")
        wanted = deployment.spec.replicas or 0
        state = deployment.status
        available, updated = state.available_replicas or 0, state.updated_replicas or 0
        current = (state.observed_generation or 0) >= (deployment.metadata.generation or 0)
        rolled_out = current and updated >= wanted and (state.replicas or 0) == updated  # no old pod left
        summary = f"{available} of {wanted} replicas available, {updated} updated"
        if rolled_out and available >= wanted:
            endpoints = self.endpoints(spec)
            url = _http_url(endpoints) or self.cluster_url(spec)
            listed = ", ".join(f"{key} {value}" for key, value in endpoints.items())
            return TargetStatus("running", url, summary + (f"; reachable at {listed}" if listed else ""),
                                {"endpoints": endpoints})
        problem = self.pod_problem(namespace, name) or _deadline_problem(state.conditions or [])
        if problem:
            serving = f"; the previous pods still serve ({available} available)" if available else ""
            return TargetStatus("failed", message=f"{problem}{serving}")
        return TargetStatus("starting", message=summary)

    def pod_problem(self, namespace: str, name: str) -> str | None:
        """Why a pod of the deployment cannot become ready: unschedulable, image pull, crash loop (with its logs)."""
        pods = self._call("list pods", self.core.list_namespaced_pod, namespace,
                          label_selector=f"{LABEL_INSTANCE}={name}").items
        for pod in pods:
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
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
        logs = self._logs(namespace, pod, container.name)
        return f"{message}; last log lines: {' | '.join(logs)}" if logs else message

    def _logs(self, namespace: str, pod: str, container: str) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        for previous in (True, False):
            try:
                response = self.core.read_namespaced_pod_log(pod, namespace, container=container, previous=previous,
                                                             tail_lines=LOG_TAIL_LINES, _preload_content=False)
            except ApiException:
                continue
            text = response.data.decode("utf-8", "replace")  # the client's own decoding turns bytes into "b'...'"
            if text:
                return [line for line in text.splitlines() if line.strip()][-LOG_TAIL_LINES:]
        return []

    # ------------------------------------------------------------------ stop

    def remove(self, spec: DeploymentSpec | None) -> list[str]:
        """Delete what carries the owner label; a claim only when the spec marks its volume disposable."""
        namespace = self.namespace(spec)
        disposable = {self.claim_name(spec, v.name) for v in self.k8s(spec).volumes if v.disposable} if spec else set()
        removed = []
        for kind in ("Ingress", "Service", "Deployment", "Secret", "PersistentVolumeClaim"):
            for item in self._owned_items(kind, namespace):
                if kind == "PersistentVolumeClaim" and item.metadata.name not in disposable:
                    self.log(f"kept {kind} {namespace}/{item.metadata.name} (not disposable)")
                    continue
                self._delete(kind, namespace, item.metadata.name)
                removed.append(f"{kind}/{item.metadata.name}")
        for item in removed:
            self.log(f"removed {namespace}/{item}")
        self.wait_pods_gone(namespace, self.owner_selector, "stop")
        return removed

    def wait_pods_gone(self, namespace: str, selector: str, what: str) -> None:
        """Wait (bounded) until the deleted objects' pods are gone: until then they hold their node's
        resources, and "everything is gone" would not be true yet."""
        deadline = time.monotonic() + GONE_TIMEOUT_SECONDS
        while pods := self._call("list pods", self.core.list_namespaced_pod, namespace, label_selector=selector).items:
            if time.monotonic() >= deadline:
                names = ", ".join(pod.metadata.name for pod in pods)
                self.log(f"{what}: pods {names} are still terminating after {GONE_TIMEOUT_SECONDS} s")
                return
            time.sleep(GONE_POLL_SECONDS)

    def _owned_items(self, kind: str, namespace: str) -> Iterator[Any]:
        listing = self._call(f"list {kind}", self._api(kind, "list"), namespace, label_selector=self.owner_selector)
        yield from listing.items

    def _delete(self, kind: str, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._api(kind, "delete")(name, namespace, body={"propagationPolicy": "Foreground"})
        except ApiException as error:
            if error.status != 404:
                raise KubernetesTargetError(f"kubernetes: delete {kind} {namespace}/{name}: {error.status} "
                                            f"{_api_message(error)}", status=error.status) from None


def resource_block(accelerator: AcceleratorRequest, cpu: float | None, memory_mb: int | None) -> dict[str, Any]:
    """A container's ``resources``: cpu and memory as equal requests and limits, devices as limits."""
    limits: dict[str, str] = {name: str(count) for name, count in kubernetes_resources(accelerator).items()}
    requests: dict[str, str] = {}
    if cpu:
        requests["cpu"] = limits["cpu"] = f"{cpu:g}"
    if memory_mb:
        requests["memory"] = limits["memory"] = f"{memory_mb}Mi"
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def _container_port(port: K8sPort) -> dict[str, Any]:
    body: dict[str, Any] = {"containerPort": port.port, "protocol": "TCP"}
    if port.name:
        body["name"] = port.name
    return body


def _service_port_name(container: K8sContainer, port: K8sPort) -> str:
    return port.name or f"{container.name[:9]}-{port.port}".strip("-")


def _keep_allocations(manifest: dict[str, Any], current: Any) -> None:
    """A replaced Service keeps its cluster IP and the node ports the cluster chose."""
    manifest["spec"]["clusterIP"] = current.spec.cluster_ip
    allocated = {port.port: port.node_port for port in current.spec.ports or [] if port.node_port}
    if manifest["spec"]["type"] == "NodePort":
        for port in manifest["spec"]["ports"]:
            if "nodePort" not in port and port["port"] in allocated:
                port["nodePort"] = allocated[port["port"]]


def _http_url(endpoints: dict[str, str]) -> str | None:
    """The ingress, else a node port named like a web port, else the first one (the main container's)."""
    if "ingress" in endpoints:
        return endpoints["ingress"]
    web = [address for name, address in endpoints.items() if name.startswith(("http", "web"))]
    chosen = (web or list(endpoints.values()) or [None])[0]
    return f"http://{chosen}" if chosen else None


def _deadline_problem(conditions: list[Any]) -> str | None:
    for condition in conditions:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return f"rollout stalled: {condition.message}"
    return None


def _api_message(error: Any) -> str:
    try:
        return json.loads(error.body).get("message") or error.reason
    except (TypeError, ValueError):
        return str(error.reason)
