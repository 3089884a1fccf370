"""The ``kubernetes`` target: a Deployment, its Service, an optional Ingress, volumes and a pull secret.

The cluster, its connection and the calls are :class:`~cloud_deploy_provider.clients.kubernetes.KubernetesCluster`'s,
shared with the Kubernetes job runner; this module turns a spec into manifests and a rollout into a status.

Every object carries this project's owner label; one of the same name without it (another
project's, or hand-made) is never replaced or deleted. ``stop`` deletes what carries the label,
PersistentVolumeClaims only when the spec marks them ``disposable``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

from cloud_deploy_provider.clients.kubernetes import (
    LABEL_INSTANCE, LABEL_OWNER, KubernetesCluster, KubernetesError, owner_value, resource_block,
)
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.registries import given_or_installation_registry
from cloud_deploy_provider.spec import DeploymentSpec, K8s, K8sContainer, K8sPort
from cloud_deploy_provider.targets import DeployResult, ImageRef, TargetStatus
from cloud_deploy_provider.targets.base import CONFIG_ANNOTATION, Target

SHM_VOLUME = "dshm"
NFS_VOLUME = "nfs"


class KubernetesTargetError(KubernetesError):
    """A spec the kubernetes target cannot turn into manifests."""


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
        self.cluster = KubernetesCluster(project, partial(given_or_installation_registry, registry, self.registry_conn_id), log,
                                         self.conn_id, hook=hook)

    def namespace(self, spec: DeploymentSpec | None) -> str:
        k8s = spec.deploy.k8s if spec else None
        return self.cluster.namespace(k8s.namespace if k8s else None)

    # ------------------------------------------------------------------ names and labels

    def name(self, spec: DeploymentSpec) -> str:
        return self.project.resource_name(spec.deploy.service_name)

    def labels(self, spec: DeploymentSpec) -> dict[str, str]:
        return self.cluster.owner_labels(spec.deploy.service_name, self.name(spec))

    def metadata(self, spec: DeploymentSpec, name: str, **annotations: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace(spec), "labels": self.labels(spec)}
        if annotations:
            meta["annotations"] = annotations
        return meta

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
        if self.cluster.registry is not None and self.cluster.registry.username:
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
        return self.cluster.pull_secret(self.metadata(spec, self.pull_secret_name(spec)), reveal)

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
        self.cluster.call("list deployments", self.cluster.apps.list_namespaced_deployment, self.namespace(spec), limit=1)
        return "the manifests and the cluster's answer"

    # ------------------------------------------------------------------ applying

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        manifests = self.manifests(spec, image.pinned)
        digest = self.config_hash(manifests)
        deployment = next(m for m in manifests if m["kind"] == "Deployment")
        deployment["metadata"]["annotations"] = {CONFIG_ANNOTATION: digest}
        namespace = self.namespace(spec)
        current = self.cluster.read("Deployment", namespace, self.name(spec))
        unchanged = current is not None and self.cluster.owned("Deployment", current) and \
            (current.metadata.annotations or {}).get(CONFIG_ANNOTATION) == digest
        if unchanged and all(self.cluster.read(m["kind"], namespace, m["metadata"]["name"]) for m in manifests):
            self.log(f"{namespace}/{self.name(spec)} already runs this configuration; nothing to change")
            return DeployResult(self.type, self._resources(spec, manifests), self.url(spec), changed=False)
        for manifest in manifests:
            outcome = self.cluster.apply(manifest)
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
        service = self.cluster.read("Service", self.namespace(spec), self.name(spec))
        node_ports = [p for p in (service.spec.ports or []) if p.node_port] if service else []
        if node_ports:
            node_ip = self.cluster.node_ip()
            found |= {port.name: f"{node_ip}:{port.node_port}" for port in node_ports}
        ingress = self.k8s(spec).ingress
        if ingress:
            found["ingress"] = f"http://{ingress.host}{ingress.path}"
        return found

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
        deployment = self.cluster.read("Deployment", namespace, name)
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
        problem = self.cluster.pod_problem(namespace, name) or _deadline_problem(state.conditions or [])
        if problem:
            serving = f"; the previous pods still serve ({available} available)" if available else ""
            return TargetStatus("failed", message=f"{problem}{serving}")
        return TargetStatus("starting", message=summary)

    # ------------------------------------------------------------------ stop

    def remove(self, spec: DeploymentSpec | None) -> list[str]:
        """Delete what carries the owner label; a claim only when the spec marks its volume disposable."""
        namespace = self.namespace(spec)
        disposable = {self.claim_name(spec, v.name) for v in self.k8s(spec).volumes if v.disposable} if spec else set()
        removed = []
        for kind in ("Ingress", "Service", "Deployment", "Secret", "PersistentVolumeClaim"):
            for item in self.cluster.owned_items(kind, namespace):
                if kind == "PersistentVolumeClaim" and item.metadata.name not in disposable:
                    self.log(f"kept {kind} {namespace}/{item.metadata.name} (not disposable)")
                    continue
                self.cluster.delete(kind, namespace, item.metadata.name)
                removed.append(f"{kind}/{item.metadata.name}")
        for item in removed:
            self.log(f"removed {namespace}/{item}")
        self.cluster.wait_pods_gone(namespace, self.cluster.owner_selector, "stop")
        return removed

def _container_port(port: K8sPort) -> dict[str, Any]:
    body: dict[str, Any] = {"containerPort": port.port, "protocol": "TCP"}
    if port.name:
        body["name"] = port.name
    return body


def _service_port_name(container: K8sContainer, port: K8sPort) -> str:
    return port.name or f"{container.name[:9]}-{port.port}".strip("-")


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
