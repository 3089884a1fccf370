"""The ``docker`` target: one container on a Docker engine, published on a host port.

The port is published on the engine settings' ``publish_ip`` (``CLOUD_DEPLOY_PUBLISH_IP``); the
service URL names ``deploy.network.service_host_ip`` when the spec gives one. TANGO fills that
with the address its users reach the host by, which need not be an address of this host
(``1.2.3.4`` in its samples), so it is advertised, never bound, and readiness is probed on the
bound address.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from typing import Any, ClassVar

import httpx

from cloud_deploy_provider.accelerators import docker_devices
from cloud_deploy_provider.clients.docker_engine import engine_client
from cloud_deploy_provider.errors import TargetError, is_transient
from cloud_deploy_provider.http_clients import probe_client
from cloud_deploy_provider.identity import LABEL_KEY, ProjectRef
from cloud_deploy_provider.settings import EngineSettings
from cloud_deploy_provider.spec import DeploymentSpec
from cloud_deploy_provider.targets import DeployResult, ImageRef, TargetStatus
from cloud_deploy_provider.clients import LOG_TAIL_LINES
from cloud_deploy_provider.targets.base import CONFIG_LABEL, Target

LABEL_IMAGE = "io.cloud-deploy.image"
PROBE_TIMEOUT_SECONDS = 2.0
STOP_TIMEOUT_SECONDS = 10


class DockerTargetError(TargetError):
    pass


class DockerTarget(Target):
    type: ClassVar[str] = "docker"
    runs_local_images: ClassVar[bool] = True
    advertises_service_host_ip: ClassVar[bool] = True
    without_spec: ClassVar[str] = "owned"
    config_hash_length: ClassVar[int] = 16

    def __init__(self, project: ProjectRef, log: Callable[[str], None] = print, client: Any = None,
                 settings: EngineSettings | None = None, **connections: Any):
        super().__init__(project, log, client, **connections)
        self.settings = settings or EngineSettings.from_env()

    def connect(self) -> Any:
        return engine_client(self.settings, timeout=60)

    def container_name(self, spec: DeploymentSpec) -> str:
        return self.project.resource_name(spec.deploy.service_name)

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        if not spec.deploy.entrypoint:
            raise DockerTargetError("deploy.entrypoint: required for the docker target")
        name = self.container_name(spec)
        current = self._inspect(name)
        url = self.url(spec)
        image_id = image.image_id or self.client.inspect_image(image.reference)["Id"]
        config_hash = self.container_config(spec, image.reference)["labels"][CONFIG_LABEL]
        unchanged = current and current["Config"]["Labels"].get(CONFIG_LABEL) == config_hash
        if unchanged and current["Image"] == image_id and current["State"]["Running"]:
            self.log(f"container {name} already runs {image.reference}; nothing to change")
            return DeployResult(self.type, {"container": name, "container_id": current["Id"]}, url, changed=False)
        new_id = self._create(spec, image, f"{name}-next-{secrets.token_hex(3)}")
        self._swap(name, current, new_id)
        self.log(f"container {name} ({new_id[:12]}) started from {image.reference}")
        return DeployResult(self.type, {"container": name, "container_id": new_id}, url)

    def container_config(self, spec: DeploymentSpec, image: str) -> dict[str, Any]:
        """The container this target runs for ``spec``, as plain data (what ``render`` prints)."""
        deploy = spec.deploy
        resources = deploy.resources
        config: dict[str, Any] = {
            "name": self.container_name(spec),
            "image": image,
            "labels": {**self.project.labels(deploy.service_name), LABEL_IMAGE: image},
            "environment": dict(deploy.env),
            "working_dir": deploy.work_dir,
            "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 3},
            "ports": {},
            "nano_cpus": int(resources.cpu * 1e9) if resources.cpu else None,
            "mem_limit": f"{resources.memory}m" if resources.memory else None,
            "gpus": docker_devices(spec.accelerator_request).get("nvidia", 0),
            "shm_size": f"{resources.shm_size}m" if resources.shm_size else None,
        }
        if deploy.network and deploy.network.service_host_port:
            config["ports"] = {
                f"{deploy.network.container_port}/tcp": [self.settings.publish_ip, deploy.network.service_host_port]
            }
        config["labels"][CONFIG_LABEL] = self.config_hash(config)  # a changed env, size or port replaces the container
        return config

    @classmethod
    def describe(cls, project: ProjectRef, spec: DeploymentSpec, settings: EngineSettings) -> dict[str, Any]:
        return cls(project, settings=settings).container_config(spec, "<the built image>")

    def _create(self, spec: DeploymentSpec, image: ImageRef, temporary_name: str) -> str:
        config = self.container_config(spec, image.reference)
        limits: dict[str, Any] = {}
        if config["nano_cpus"]:
            limits["nano_cpus"] = config["nano_cpus"]
        if config["mem_limit"]:
            limits["mem_limit"] = config["mem_limit"]
        if config["shm_size"]:
            limits["shm_size"] = config["shm_size"]
        if config["gpus"]:
            from docker.types import DeviceRequest

            limits["device_requests"] = [DeviceRequest(driver="nvidia", count=config["gpus"], capabilities=[["gpu"]])]
        host_config = self.client.create_host_config(
            port_bindings={port: tuple(binding) for port, binding in config["ports"].items()},
            restart_policy=config["restart_policy"],
            **limits,
        )
        created = self.client.create_container(
            image=image.image_id or image.reference,
            name=temporary_name,
            ports=[tuple(port.split("/")) for port in config["ports"]] or None,
            environment=config["environment"],
            labels=config["labels"],
            host_config=host_config,
            working_dir=config["working_dir"],
        )
        return created["Id"]

    def _swap(self, name: str, current: dict | None, new_id: str) -> None:
        """Replace the old container by the new one, putting the old one back if the new one cannot start.

        The host port can be bound by one container at a time, so the old one stops first. The new one takes
        its name before it starts: renaming a container that has just started (and may already have exited)
        races the engine's network teardown ("sandbox ... not found").
        """
        previous = f"{name}-previous"
        if current:
            self.client.stop(current["Id"], timeout=STOP_TIMEOUT_SECONDS)
            self.client.rename(current["Id"], previous)
        self.client.rename(new_id, name)
        try:
            self.client.start(new_id)
        except Exception as error:
            self.client.remove_container(new_id, force=True)
            if current:
                self.client.rename(current["Id"], name)
                self.client.start(current["Id"])
            raise DockerTargetError(f"the new container did not start, the previous one was kept: {error}",
                                    retryable=is_transient(error)) from error
        if current:
            self.client.remove_container(current["Id"], force=True)

    def _inspect(self, name: str) -> dict | None:
        from docker.errors import NotFound

        try:
            return self.client.inspect_container(name)
        except NotFound:
            return None

    def url(self, spec: DeploymentSpec) -> str | None:
        """The advertised URL: ``service_host_ip`` when given, else the bound address."""
        network = spec.deploy.network
        if not network or not network.service_host_port:
            return None
        return _http_url(network.service_host_ip or self.bound_host(), network.service_host_port)

    def bound_host(self) -> str:
        """An address the published port answers on from this host (the wildcard binds answer on loopback)."""
        host = self.settings.publish_ip
        return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

    def probe_url(self, spec: DeploymentSpec) -> str:
        return _http_url(self.bound_host(), spec.deploy.network.service_host_port)

    def status(self, spec: DeploymentSpec) -> TargetStatus:
        name = self.container_name(spec)
        container = self._inspect(name)
        if container is None:
            return TargetStatus("absent", message=f"container {name} does not exist")
        state = container["State"]
        details = {"container": name, "container_id": container["Id"], "engine_state": state["Status"]}
        if not state["Running"]:
            code = state.get("ExitCode")
            message = f"container {name} {state['Status']} with exit code {code}"
            tail = self.logs_tail(container["Id"])
            if tail:
                message += f"; last log lines:\n{tail}"
            return TargetStatus("exited", message=message, details={**details, "exit_code": code})
        url = self.url(spec)
        if url is None:
            return TargetStatus("running", message=f"container {name} is running (no port published)", details=details)
        probed = self.probe_url(spec)
        ready, why = self.probe(spec, probed)
        if not ready:
            return TargetStatus("starting", url, f"container {name} is running but not ready: {why}", details)
        advertised = f" (advertised as {url})" if url != probed else ""
        return TargetStatus("running", url, f"container {name} is running and answers at {probed}{advertised}", details)

    def probe(self, spec: DeploymentSpec, url: str) -> tuple[bool, str]:
        readiness = spec.deploy.readiness
        if readiness.check == "tcp":
            return _tcp_ready(self.bound_host(), spec.deploy.network.service_host_port)
        try:
            response = probe_client().get(url + readiness.path, timeout=PROBE_TIMEOUT_SECONDS)
        except httpx.HTTPError as error:
            return False, f"GET {readiness.path}: {type(error).__name__}"
        if response.status_code >= 500:
            return False, f"GET {readiness.path}: HTTP {response.status_code}"
        return True, f"GET {readiness.path}: HTTP {response.status_code}"

    def logs_tail(self, container_id: str, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return self.client.logs(container_id, tail=lines).decode(errors="replace").strip()
        except Exception:  # the container may be gone between inspect and logs
            return ""

    def remove(self, spec: DeploymentSpec | None) -> list[str]:
        from docker.errors import NotFound

        removed = []
        for container in self.client.containers(all=True, filters={"label": f"{LABEL_KEY}={self.project.key}"}):
            try:
                self.client.remove_container(container["Id"], force=True)
            except NotFound:
                continue  # removed meanwhile: already what stop wants
            removed.append(container["Names"][0].lstrip("/"))
            self.log(f"removed container {removed[-1]}")
        return removed


def _http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _tcp_ready(host: str, port: int) -> tuple[bool, str]:
    """Connected and not closed by the peer within a moment.

    docker-proxy accepts on the host port even when nothing listens in the container, then
    closes the connection at once; a live server keeps it open.
    """
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_SECONDS) as connection:
            connection.settimeout(0.3)
            try:
                closed = connection.recv(1) == b""
            except TimeoutError:
                closed = False
            return (not closed, "connection closed by peer" if closed else "port accepts")
    except OSError as error:
        return False, f"connect: {error}"


