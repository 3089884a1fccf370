"""The ``gcp-cloudrun`` target: a Cloud Run service (Admin API v2) running the image by digest.

Each deploy makes a new revision while traffic stays pinned to the revision serving before;
only once Cloud Run reports the new revision ready does 100 % of traffic move to it. A revision
that does not become ready leaves traffic where it was and fails the run with Cloud Run's own
message. Public access (``allUsers`` as ``roles/run.invoker``) exists only while
``deploy.cloudrun.allow_unauthenticated`` asks for it. A status is one ``GetService`` read.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
from typing import Any, ClassVar

from cloud_deploy_provider.accelerators import cloud_run_gpu
from cloud_deploy_provider.clients.gcp import GcpSession
from cloud_deploy_provider.errors import TargetError
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.registries.artifact_registry import (
    LABEL_OWNER,
    artifact_registry,
    delete_repository,
    labels,
    owner,
    repository_of,
)
from cloud_deploy_provider.registries.oci import Registry
from cloud_deploy_provider.spec import DeploymentSpec
from cloud_deploy_provider.targets import DeployResult, ImageRef, TargetStatus
from cloud_deploy_provider.targets.base import CONFIG_ANNOTATION, Target

KEY_ANNOTATION = "cloud-deploy.io/key"
INVOKER_ROLE = "roles/run.invoker"
PUBLIC_MEMBER = "allUsers"
MAX_SERVICE_ID = 49
DEFAULT_CPU = 1
DEFAULT_MEMORY_MB = 512
CPU_CHOICES = (1, 2, 4, 6, 8)
MEMORY_RANGE_MB = (128, 32768)
# The least memory a CPU count needs, and the least CPU a memory size needs (Cloud Run's limits).
MIN_MEMORY_FOR_CPU = {4: 2048, 6: 4096, 8: 4096}
MIN_CPU_FOR_MEMORY = ((24576, 8), (16384, 6), (8192, 4), (4096, 2))
GPU_MIN_CPU, GPU_MIN_MEMORY_MB = 4, 16384
MAX_STARTUP_PROBE_SECONDS = 240
TRAFFIC_MOVE_TIMEOUT_SECONDS = 120
DELETE_TIMEOUT_SECONDS = 300


class CloudRunError(TargetError):
    pass


def short_revision(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def serving(service: Any) -> dict[str, int]:
    """Revision -> percent of traffic Cloud Run actually sends to it."""
    return {short_revision(s.revision): s.percent for s in service.traffic_statuses if s.percent > 0 and s.revision}


class CloudRunTarget(Target):
    """The client is a :class:`GcpSession`. The service is found through the spec's project and region, so
    a stop without the spec finds nothing."""

    type: ClassVar[str] = "gcp-cloudrun"
    without_spec: ClassVar[str] = "nothing"

    conn_id_parameter: ClassVar[str] = "gcp_conn_id"

    def connect(self) -> GcpSession:
        return GcpSession(self.conn_id)

    @classmethod
    def owner_of(cls, project: ProjectRef) -> str:
        return owner(project)

    def image_registry(self, spec: DeploymentSpec) -> Registry:
        """Cloud Run runs images from Artifact Registry, whatever registry the installation uses otherwise."""
        return artifact_registry(self.client, repository_of(self.client, self.project, spec), self.project, self.log)

    # ------------------------------------------------------------------ names

    def service_id(self, spec: DeploymentSpec) -> str:
        return self.project.resource_name(spec.deploy.service_name, max_length=MAX_SERVICE_ID)

    def parent(self, spec: DeploymentSpec) -> str:
        cloudrun = spec.deploy.cloudrun
        project = self.client.project_id(cloudrun.project_id if cloudrun else None)
        region = self.client.region(cloudrun.region if cloudrun else None)
        return f"projects/{project}/locations/{region}"

    def service_name(self, spec: DeploymentSpec) -> str:
        return f"{self.parent(spec)}/services/{self.service_id(spec)}"

    # ------------------------------------------------------------------ the Service resource

    def limits(self, spec: DeploymentSpec) -> dict[str, str]:
        resources = spec.deploy.resources
        cpu = resources.cpu or DEFAULT_CPU
        memory = resources.memory or DEFAULT_MEMORY_MB
        if cpu not in CPU_CHOICES:
            raise CloudRunError(f"gcp-cloudrun: deploy.resources.cpu must be one of {CPU_CHOICES} on Cloud Run, not {cpu:g}")
        low, high = MEMORY_RANGE_MB
        if not low <= memory <= high:
            raise CloudRunError(f"gcp-cloudrun: deploy.resources.memory must be {low} to {high} MB, not {memory}")
        if memory < MIN_MEMORY_FOR_CPU.get(int(cpu), 0):
            raise CloudRunError(f"gcp-cloudrun: {cpu:g} CPUs need at least {MIN_MEMORY_FOR_CPU[int(cpu)]} MB of memory")
        needed_cpu = next((count for above, count in MIN_CPU_FOR_MEMORY if memory > above), 1)
        if cpu < needed_cpu:
            raise CloudRunError(f"gcp-cloudrun: {memory} MB of memory needs at least {needed_cpu} CPUs")
        limits = {"cpu": str(int(cpu)), "memory": f"{memory}Mi"}
        if cloud_run_gpu(spec.accelerator_request):
            if cpu < GPU_MIN_CPU or memory < GPU_MIN_MEMORY_MB:
                raise CloudRunError(
                    f"gcp-cloudrun: a GPU instance needs at least {GPU_MIN_CPU} CPUs and {GPU_MIN_MEMORY_MB} MB "
                    f"(deploy.resources), not {cpu:g} CPUs and {memory} MB"
                )
            limits["nvidia.com/gpu"] = "1"
        return limits

    def env(self, spec: DeploymentSpec) -> list[Any]:
        from google.cloud import run_v2

        env = dict(spec.deploy.env)
        port = str(self.port(spec))
        if env.get("PORT", port) != port:
            raise CloudRunError(
                f"gcp-cloudrun: Cloud Run sets PORT to the container port ({port}) itself; remove deploy.env.PORT "
                "or set deploy.network.service_container_port"
            )
        env.pop("PORT", None)
        return [run_v2.EnvVar(name=name, value=value) for name, value in sorted(env.items())]

    def startup_probe(self, spec: DeploymentSpec) -> Any:
        """The readiness check as a startup probe, within Cloud Run's 240 s probing budget."""
        from google.cloud import run_v2

        readiness = spec.deploy.readiness
        period = max(1, round(readiness.interval_seconds))
        attempts = max(1, min(math.ceil(readiness.timeout_seconds / period), MAX_STARTUP_PROBE_SECONDS // period))
        probe = run_v2.Probe(period_seconds=period, timeout_seconds=period, failure_threshold=attempts)
        if readiness.check == "http":
            probe.http_get = run_v2.HTTPGetAction(path=readiness.path, port=self.port(spec))
        else:
            probe.tcp_socket = run_v2.TCPSocketAction(port=self.port(spec))
        return probe

    def service(self, spec: DeploymentSpec, image: str) -> Any:
        """The Service to create or update, with its config hash; the revision name is set on deploy."""
        from google.cloud import run_v2
        from google.protobuf import duration_pb2

        deploy, cloudrun = spec.deploy, spec.deploy.cloudrun
        if deploy.replicas != 1:
            raise CloudRunError(
                "gcp-cloudrun: Cloud Run scales with requests; set deploy.cloudrun.min_instances and max_instances "
                "instead of deploy.replicas"
            )
        project_labels = labels(self.project, deploy.service_name)
        limits = self.limits(spec)
        container = run_v2.Container(
            name=deploy.service_name.lower().replace(".", "-").replace("_", "-"),
            image=image,
            env=self.env(spec),
            ports=[run_v2.ContainerPort(container_port=self.port(spec))],
            working_dir=deploy.work_dir,
            resources=run_v2.ResourceRequirements(limits=limits, cpu_idle="nvidia.com/gpu" not in limits),
            startup_probe=self.startup_probe(spec),
        )
        template = run_v2.RevisionTemplate(
            labels=project_labels,
            containers=[container],
            scaling=run_v2.RevisionScaling(
                min_instance_count=cloudrun.min_instances if cloudrun else 0,
                max_instance_count=(cloudrun.max_instances if cloudrun else None) or 0,
            ),
        )
        accelerator = cloud_run_gpu(spec.accelerator_request)
        if accelerator:
            template.node_selector = run_v2.NodeSelector(accelerator=accelerator)
        if cloudrun and cloudrun.concurrency:
            template.max_instance_request_concurrency = cloudrun.concurrency
        if cloudrun and cloudrun.request_timeout_seconds:
            template.timeout = duration_pb2.Duration(seconds=cloudrun.request_timeout_seconds)
        service_account = (cloudrun.service_account if cloudrun else None) or self.client.defaults.service_account
        if service_account:
            template.service_account = service_account
        service = run_v2.Service(
            labels=project_labels,
            annotations={KEY_ANNOTATION: self.project.key},
            ingress=run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL,
            template=template,
        )
        service.template.annotations[CONFIG_ANNOTATION] = self.config_hash(run_v2.Service.to_dict(service))
        return service

    @classmethod
    def describe(cls, project: ProjectRef, spec: DeploymentSpec, settings: Any = None) -> dict[str, Any]:
        """Reads the connection's project, region and defaults; calls no Google API."""
        from google.cloud import run_v2

        target = cls(project)
        service = target.service(spec, "<the pushed image, by digest>")
        public = bool(spec.deploy.cloudrun and spec.deploy.cloudrun.allow_unauthenticated)
        return {
            "parent": target.parent(spec),
            "serviceId": target.service_id(spec),
            "service": json.loads(
                run_v2.Service.to_json(service, use_integers_for_enums=False, always_print_fields_with_no_presence=False)
            ),
            "invokers": [PUBLIC_MEMBER] if public else "IAM-authenticated callers only",
        }

    def preflight(self, spec: DeploymentSpec) -> str:
        """Run by the validate task: sizes, GPU and env are checked, and the API is reached once."""
        self.service(spec, "<image>")
        self.find(spec)
        return "sizes, GPU, env and API access"

    # ------------------------------------------------------------------ deploy

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        wanted = self.service(spec, image.pinned)
        current = self.find(spec)
        if current is not None and current.labels.get(LABEL_OWNER) != self.owner:
            raise CloudRunError(f"gcp-cloudrun: service {current.name} exists but was not created by this project")
        if current is not None and self.serves(current, wanted.template.annotations[CONFIG_ANNOTATION]):
            self.log(f"service {current.name} already serves this configuration; nothing to change")
            self.apply_access(spec, current.name)
            return self.result(current, changed=False)
        service = self.create(spec, wanted) if current is None else self.roll_out(spec, current, wanted)
        self.apply_access(spec, service.name)
        return self.result(service)

    def result(self, service: Any, changed: bool = True) -> DeployResult:
        resources = {"service": service.name, "revision": short_revision(service.latest_ready_revision)}
        return DeployResult(self.type, resources, url=service.uri or None, changed=changed)

    @staticmethod
    def serves(service: Any, config: str) -> bool:
        latest = short_revision(service.latest_created_revision)
        return (
            service.template.annotations.get(CONFIG_ANNOTATION) == config
            and short_revision(service.latest_ready_revision) == latest
            and serving(service) == {latest: 100}
        )

    def revision_name(self, spec: DeploymentSpec, generation: int, config: str) -> str:
        return f"{self.service_id(spec)}-{generation:05d}-{config[:5]}"

    def create(self, spec: DeploymentSpec, wanted: Any) -> Any:
        revision = self.revision_name(spec, 1, wanted.template.annotations[CONFIG_ANNOTATION])
        wanted.template.revision = revision
        wanted.traffic = [self.latest()]
        self.log(f"creating Cloud Run service {self.service_name(spec)} with revision {revision}")
        services = self.client.services
        operation = services.create_service(parent=self.parent(spec), service=wanted, service_id=self.service_id(spec))
        service = self.wait(operation, spec, revision, previous={})
        self.log(f"revision {revision} is ready and serves 100 % at {service.uri}")
        return service

    def roll_out(self, spec: DeploymentSpec, current: Any, wanted: Any) -> Any:
        """A new revision with no traffic; traffic moves to it only once it is ready."""
        previous = serving(current)
        revision = self.revision_name(spec, int(current.generation) + 1, wanted.template.annotations[CONFIG_ANNOTATION])
        wanted.name, wanted.etag = current.name, current.etag
        wanted.template.revision = revision
        if previous:
            wanted.traffic = [self.pinned(name, percent) for name, percent in previous.items()]
            self.log(f"rolling out revision {revision}; traffic stays on {self.shown(previous)} until it is ready")
        else:
            wanted.traffic = [self.latest()]
            self.log(f"rolling out revision {revision} (no revision serves yet)")
        service = self.wait(self.client.services.update_service(service=wanted), spec, revision, previous)
        if not previous:
            return service
        wanted.traffic = [self.pinned(revision, 100)]
        wanted.etag = service.etag
        operation = self.client.services.update_service(service=wanted)
        service = operation.result(timeout=TRAFFIC_MOVE_TIMEOUT_SECONDS)
        self.log(f"revision {revision} is ready: 100 % of traffic moved to it from {self.shown(previous)}")
        return service

    @staticmethod
    def pinned(revision: str, percent: int) -> Any:
        from google.cloud import run_v2

        kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
        return run_v2.TrafficTarget(type_=kind, revision=revision, percent=percent)

    @staticmethod
    def latest() -> Any:
        from google.cloud import run_v2

        kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
        return run_v2.TrafficTarget(type_=kind, percent=100)

    @staticmethod
    def shown(traffic: dict[str, int]) -> str:
        return ", ".join(f"{name} ({percent} %)" for name, percent in traffic.items())

    def wait(self, operation: Any, spec: DeploymentSpec, revision: str, previous: dict[str, int]) -> Any:
        """The operation's Service once the revision is ready, else a failure naming what still serves."""
        from google.api_core import exceptions

        timeout = spec.deploy.readiness.timeout_seconds + 60
        kept = f"; traffic stays on {self.shown(previous)}" if previous else ""
        try:
            return operation.result(timeout=timeout)
        except exceptions.GoogleAPICallError as error:
            raise CloudRunError(f"Cloud Run revision {revision} is not ready: {error.message}{kept}") from None
        except concurrent.futures.TimeoutError:
            raise CloudRunError(f"Cloud Run revision {revision} is not ready after {timeout} s{kept}") from None

    def apply_access(self, spec: DeploymentSpec, name: str) -> None:
        """Grant ``allUsers`` the invoker role when the spec asks for a public service; revoke it otherwise."""
        from google.iam.v1 import policy_pb2

        public = bool(spec.deploy.cloudrun and spec.deploy.cloudrun.allow_unauthenticated)
        client = self.client.services
        policy = client.get_iam_policy(request={"resource": name})
        invokers = next((b for b in policy.bindings if b.role == INVOKER_ROLE), None)
        if public == bool(invokers and PUBLIC_MEMBER in invokers.members):
            return
        if public:
            if invokers is None:
                policy.bindings.append(policy_pb2.Binding(role=INVOKER_ROLE, members=[PUBLIC_MEMBER]))
            else:
                invokers.members.append(PUBLIC_MEMBER)
        else:
            invokers.members.remove(PUBLIC_MEMBER)
            if not invokers.members:
                policy.bindings.remove(invokers)
        client.set_iam_policy(request={"resource": name, "policy": policy})
        self.log("granted allUsers the invoker role: the service is public" if public else "revoked public access")

    # ------------------------------------------------------------------ status and stop

    def find(self, spec: DeploymentSpec) -> Any | None:
        from google.api_core import exceptions

        try:
            return self.client.services.get_service(name=self.service_name(spec))
        except exceptions.NotFound:
            return None

    def status(self, spec: DeploymentSpec) -> TargetStatus:
        from google.cloud import run_v2

        service = self.find(spec)
        if service is None:
            return TargetStatus("absent", message=f"Cloud Run service {self.service_name(spec)} does not exist")
        traffic = serving(service)
        latest = short_revision(service.latest_created_revision)
        details = {
            "service": service.name,
            "serving": traffic,
            "latest_created_revision": latest,
            "latest_ready_revision": short_revision(service.latest_ready_revision),
        }
        condition = service.terminal_condition
        state = run_v2.Condition.State
        failed = condition.state == state.CONDITION_FAILED
        if failed and not traffic:
            return TargetStatus("failed", message=f"Cloud Run: {condition.message}", details=details)
        if not traffic:
            return TargetStatus("starting", message=f"Cloud Run is rolling out revision {latest}", details=details)
        message = f"Cloud Run service serves {self.shown(traffic)} at {service.uri}"
        if failed:
            message += f"; the latest revision {latest} failed: {condition.message}"
        elif service.reconciling or condition.state != state.CONDITION_SUCCEEDED:
            message += f"; revision {latest} is rolling out"
        return TargetStatus("running", service.uri or None, message, details)

    def remove(self, spec: DeploymentSpec) -> list[str]:
        removed = []
        service = self.find(spec)
        if service is not None and service.labels.get(LABEL_OWNER) == self.owner:
            self.client.services.delete_service(name=service.name).result(timeout=DELETE_TIMEOUT_SECONDS)
            self.log(f"deleted Cloud Run service {service.name} and its revisions")
            removed.append(f"cloudrun-service/{service.name}")
        elif service is not None:
            self.log(f"left {service.name} alone: it was not created by this project")
        removed += delete_repository(self.client, repository_of(self.client, self.project, spec), self.project)
        return removed
