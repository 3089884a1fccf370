"""The ``compute-session`` target: a Backend.AI model service per project, on GPUs, NPUs or CPUs.

One service per project, named ``cd-<user>-<project>-<service>-<hash>``. Its replicas
(``deploy.replicas``) each get the resource slots of ``deploy.resources`` (cpu, memory MB as
``g``/``m``, the accelerator slot from the accelerator table, ``shm_size`` as
``resource_opts.shmem``) in ``model_service.scaling_group``. The model folder mounted at
``model_service.mount_destination`` is ``model_service.model`` when given (an existing folder on
the cluster, holding its own model definition), else a folder per service created here, holding a
``model-definition.yaml`` written from ``deploy`` (entrypoint, pre_exec, work_dir, port, readiness).

Status is the endpoint's lifecycle from the manager's GraphQL (``PROVISIONING``, ``HEALTHY``,
``DEGRADED``, ``UNHEALTHY``, ``DESTROYING``) with its URL and routings. The service is found by
listing the keypair's services and confirming, by id, that its environment carries this project's
owner marker; a same-named service of someone else is never reported, replaced or deleted. A
changed service is replaced (Backend.AI cannot swap a service's image in place over REST).
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any, ClassVar

import yaml

from cloud_deploy_provider.accelerators import backendai_slots
from cloud_deploy_provider.clients import poll_until
from cloud_deploy_provider.errors import TargetError
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.spec import DeploymentSpec, ModelService
from cloud_deploy_provider.targets import DeployResult, ImageRef, TargetStatus
from cloud_deploy_provider.targets.base import Target

DEFAULT_CPU = 1
DEFAULT_MEMORY_MB = 2048
MAX_NAME = 64
DEFINITION_FILE = "model-definition.yaml"
OWNER_ENV = "CLOUD_DEPLOY_OWNER"
CONFIG_ENV = "CLOUD_DEPLOY_CONFIG"
SETTLE_SECONDS = 120.0
POLL_SECONDS = 0.5
ARCHITECTURES = {"x86": "x86_64", "x86_64": "x86_64", "amd64": "x86_64",
                 "arm": "aarch64", "arm64": "aarch64", "aarch64": "aarch64"}
STATES = {"PROVISIONING": "starting", "READY": "starting", "HEALTHY": "running", "DEGRADED": "running",
          "UNHEALTHY": "failed", "DESTROYING": "absent", "DESTROYED": "absent"}
ENDPOINT_QUERY = """
query($endpoint_id: UUID!) {
  endpoint(endpoint_id: $endpoint_id) {
    endpoint_id name status url desired_session_count environ
    routings { routing_id session status error_data }
    errors { session_id errors { name repr } }
  }
}
"""
# Runs the entrypoint in deploy.work_dir without a shell parsing any project value: the work dir
# and the arguments are passed as positional parameters.
IN_WORK_DIR = ["/bin/sh", "-c", 'cd "$0" && exec "$@"']


class ComputeSessionError(TargetError):
    pass


def memory_size(megabytes: int) -> str:
    """Backend.AI's binary sizes: whole GiB as ``32g``, else ``1536m``."""
    return f"{megabytes // 1024}g" if megabytes % 1024 == 0 else f"{megabytes}m"


class ComputeSessionTarget(Target):
    """The client is the Backend.AI hook's; the service is found by its name from the spec, so a stop without
    the spec finds nothing."""

    type: ClassVar[str] = "compute-session"
    without_spec: ClassVar[str] = "nothing"
    default_port: ClassVar[int] = 8000
    config_hash_length: ClassVar[int] = 16

    conn_id_parameter: ClassVar[str] = "backendai_conn_id"

    @cached_property
    def hook(self):
        from cloud_deploy_provider.hooks.backendai import BackendAIHook

        return BackendAIHook(self.conn_id)

    def connect(self) -> Any:
        return self.hook.get_conn()

    def image_registry(self, spec: DeploymentSpec):
        """The registry the cluster pulls from: the connection's ``registry_conn_id``, else the installation's."""
        from cloud_deploy_provider.registries import installation_registry, installation_registry_conn_id

        hook = self.hook
        conn_id = hook.settings.extra.registry_conn_id or installation_registry_conn_id(self.registry_conn_id)
        if not conn_id:
            raise ComputeSessionError(
                f"compute-session: the cluster pulls images from a registry; set registry_conn_id in the extra "
                f"of connection {hook.backendai_conn_id!r} (or CLOUD_DEPLOY_REGISTRY_CONN_ID)"
            )
        return installation_registry(conn_id)

    # ------------------------------------------------------------------ what it would create

    def service_name(self, spec: DeploymentSpec) -> str:
        return self.project.resource_name(spec.deploy.service_name, max_length=MAX_NAME)

    @staticmethod
    def model_service(spec: DeploymentSpec) -> ModelService:
        return spec.deploy.model_service or ModelService()

    def owns_folder(self, spec: DeploymentSpec) -> bool:
        return self.model_service(spec).model is None

    def resource_slots(self, spec: DeploymentSpec) -> dict[str, str]:
        resources = spec.deploy.resources
        slots = {"cpu": f"{resources.cpu or DEFAULT_CPU:g}", "mem": memory_size(resources.memory or DEFAULT_MEMORY_MB)}
        slots |= {name: f"{amount:g}" for name, amount in backendai_slots(spec.accelerator_request).items()}
        return slots

    def model_definition(self, spec: DeploymentSpec) -> dict[str, Any]:
        """Backend.AI's model definition for the ``custom`` variant, from deploy's entrypoint and readiness."""
        deploy = spec.deploy
        if not deploy.entrypoint:
            raise ComputeSessionError(
                "compute-session: the custom runtime variant starts the service with deploy.entrypoint; set it, "
                "or use model_service.runtime_variant cmd to run the image's own command"
            )
        service: dict[str, Any] = {
            "start_command": [*IN_WORK_DIR, deploy.work_dir, *deploy.entrypoint],
            "port": self.port(spec),
        }
        if deploy.pre_exec:
            service["pre_start_actions"] = [
                {"action": "run_command", "args": {"command": [*IN_WORK_DIR, deploy.work_dir, *command]}}
                for command in deploy.pre_exec
            ]
        readiness = deploy.readiness
        if readiness.check == "http":
            service["health_check"] = {
                "path": readiness.path,
                "interval": readiness.interval_seconds,
                "max_retries": max(1, round(readiness.timeout_seconds / readiness.interval_seconds)),
                "max_wait_time": 5.0,
                "expected_status_code": 200,
                "initial_delay": 0.0,
            }
        name = spec.deploy.service_name
        return {"models": [{"name": name, "model_path": self.model_service(spec).mount_destination, "service": service}]}

    def create_request(self, spec: DeploymentSpec, image: str) -> dict[str, Any]:
        """The ``POST /services`` body; its environment carries the owner marker and the config hash."""
        model_service = self.model_service(spec)
        settings = self.hook.settings.extra
        config: dict[str, Any] = {
            "model": model_service.model or self.service_name(spec),
            "model_mount_destination": model_service.mount_destination,
            "environ": {**spec.deploy.env, OWNER_ENV: self.owner},
            "scaling_group": model_service.scaling_group or settings.scaling_group or "default",
            "resources": self.resource_slots(spec),
        }
        if model_service.runtime_variant == "custom":
            default_path = None if model_service.model else DEFINITION_FILE
            config["model_definition_path"] = model_service.model_definition_path or default_path
            if self.owns_folder(spec):
                self.model_definition(spec)  # refuses a spec without an entrypoint before anything is created
        if spec.deploy.resources.shm_size:
            config["resource_opts"] = {"shmem": memory_size(spec.deploy.resources.shm_size)}
        request = {
            "name": self.service_name(spec),
            "desired_session_count": spec.deploy.replicas,
            "image": image,
            "arch": ARCHITECTURES[spec.build.architecture],
            "domain": settings.domain,
            "group": settings.group,
            "cluster_size": model_service.cluster_size,
            "cluster_mode": model_service.cluster_mode.replace("-", "_").upper(),
            "open_to_public": model_service.open_to_public,
            "runtime_variant": model_service.runtime_variant,
            "config": {key: value for key, value in config.items() if value is not None},
        }
        request["config"]["environ"][CONFIG_ENV] = self.config_hash([request, self.definition_text(spec)])
        return request

    def definition_text(self, spec: DeploymentSpec) -> str | None:
        if not self.owns_folder(spec) or self.model_service(spec).runtime_variant != "custom":
            return None
        return yaml.safe_dump(self.model_definition(spec), sort_keys=False)

    @classmethod
    def describe(cls, project: ProjectRef, spec: DeploymentSpec, settings: Any = None) -> dict[str, Any]:
        target = cls(project)
        described = {"POST /services": target.create_request(spec, "<the pushed image>")}
        if target.owns_folder(spec):
            described["model folder"] = {"name": target.service_name(spec), "usage_mode": "model",
                                         DEFINITION_FILE: target.definition_text(spec)}
        return described

    def preflight(self, spec: DeploymentSpec) -> str:
        """Run by the validate task: the request is buildable, the keypair works and a named model folder exists."""
        self.create_request(spec, "<image>")
        model = self.model_service(spec).model
        if model:
            if self.client.call("GET", f"/folders/{model}", missing_ok=True) is None:
                raise ComputeSessionError(f"compute-session: model folder {model!r} (model_service.model) not found")
        else:
            self.client.call("GET", "/services")
        return "the request, the keypair and the model folder"

    # ------------------------------------------------------------------ lifecycle

    def find(self, spec: DeploymentSpec) -> dict[str, Any] | None:
        """This project's service, as the endpoint GraphQL sees it; confirmed by id through its owner marker."""
        name = self.service_name(spec)
        for listed in self.client.call("GET", "/services") or []:
            if listed.get("name") != name:
                continue
            endpoint = self.endpoint(str(listed["id"]))
            if endpoint and _environ(endpoint).get(OWNER_ENV) == self.owner:
                return endpoint
            self.log(f"Backend.AI service {name} ({listed['id']}) is not this project's; leaving it alone")
        return None

    def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        return self.client.graphql(ENDPOINT_QUERY, {"endpoint_id": endpoint_id}).get("endpoint")

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        request = self.create_request(spec, image.reference)
        name = request["name"]
        current = self.find(spec)
        if current and _environ(current).get(CONFIG_ENV) == request["config"]["environ"][CONFIG_ENV] \
                and current.get("status") not in ("UNHEALTHY", "DESTROYING", "DESTROYED"):
            self.log(f"Backend.AI service {name} already runs this configuration; nothing to change")
            return DeployResult(self.type, self._resources(spec, current["endpoint_id"]), current.get("url"), False)
        if current:
            self.log(f"replacing Backend.AI service {name} ({current['endpoint_id']}): its configuration changed")
            self._delete_service(current["endpoint_id"])
        if self.owns_folder(spec):
            self._write_model_folder(spec)
        created = self.client.call("POST", "/services", json=request)
        endpoint_id = str(created["endpoint_id"])
        self.log(f"Backend.AI service {name} created ({endpoint_id}) from {image.reference}")
        return DeployResult(self.type, self._resources(spec, endpoint_id), created.get("service_endpoint"))

    def _resources(self, spec: DeploymentSpec, endpoint_id: str) -> dict[str, Any]:
        resources = {"service": self.service_name(spec), "endpoint_id": endpoint_id,
                     "manager": self.hook.settings.endpoint}
        if self.owns_folder(spec):
            resources["model_folder"] = self.service_name(spec)
        return resources

    def _write_model_folder(self, spec: DeploymentSpec) -> None:
        name = self.service_name(spec)
        if self._folder_id(name) is None:
            self.client.call("POST", "/folders", json={"name": name, "usage_mode": "model", "permission": "rw"})
            self.log(f"model folder {name} created")
        definition = self.definition_text(spec)
        if definition is not None:
            self.client.upload(name, DEFINITION_FILE, definition.encode())

    def _folder_id(self, name: str) -> str | None:
        folders = self.client.call("GET", "/folders") or []
        return next((str(f["id"]) for f in folders if f.get("name") == name and f.get("status", "ready") == "ready"),
                    None)

    def status(self, spec: DeploymentSpec) -> TargetStatus:
        endpoint = self.find(spec)
        if endpoint is None:
            return TargetStatus("absent", message=f"no Backend.AI service {self.service_name(spec)}")
        reported = endpoint.get("status") or "UNKNOWN"
        state = STATES.get(reported, "unknown")
        routings = endpoint.get("routings") or []
        healthy = sum(route.get("status") == "HEALTHY" for route in routings)
        message = f"Backend.AI reports {reported}: {healthy} of {len(routings)} routes healthy"
        problem = _route_problem(endpoint)
        if problem and reported in ("UNHEALTHY", "DEGRADED", "PROVISIONING"):
            message += f"; {problem}"
        details = {"endpoint_id": endpoint.get("endpoint_id"), "reported": reported,
                   "routings": [{key: route.get(key) for key in ("routing_id", "status")} for route in routings]}
        url = endpoint.get("url") if state == "running" else None
        return TargetStatus(state, url, message, details)

    def remove(self, spec: DeploymentSpec) -> list[str]:
        removed = []
        endpoint = self.find(spec)
        if endpoint is not None:
            self._delete_service(endpoint["endpoint_id"])
            removed.append(f"backendai-service/{self.service_name(spec)}")
        if self.owns_folder(spec):
            folder_id = self._folder_id(self.service_name(spec))
            if folder_id is not None:
                self.client.call("DELETE", "/folders", json={"vfolder_id": folder_id})
                self.client.call("POST", "/folders/purge", json={"vfolder_id": folder_id})
                removed.append(f"backendai-model-folder/{self.service_name(spec)}")
        for item in removed:
            self.log(f"removed {item}")
        return removed

    def _delete_service(self, endpoint_id: str) -> None:
        """Delete by id and wait until the manager has destroyed it, so its name and folder are free again."""
        self.client.call("DELETE", f"/services/{endpoint_id}", missing_ok=True)
        def destroyed(found: dict[str, Any] | None) -> bool:
            return found is None or found.get("status") == "DESTROYED"

        if destroyed(poll_until(lambda: self.endpoint(endpoint_id), destroyed, SETTLE_SECONDS, POLL_SECONDS)):
            return
        raise ComputeSessionError(f"compute-session: service {endpoint_id} is still being destroyed after "
                                  f"{SETTLE_SECONDS:.0f} s", retryable=True)


def _environ(endpoint: dict[str, Any]) -> dict[str, Any]:
    """GraphQL gives ``environ`` as a JSON string (graphene's JSONString)."""
    environ = endpoint.get("environ")
    if isinstance(environ, str):
        try:
            environ = json.loads(environ)
        except ValueError:
            return {}
    return environ if isinstance(environ, dict) else {}


def _route_problem(endpoint: dict[str, Any]) -> str:
    """The first failed route's reason, exit code and last log lines, as the manager recorded them."""
    for route in endpoint.get("routings") or []:
        data = route.get("error_data")
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                data = {"repr": data}
        if data:
            parts = [f"{data.get('name', 'error')}: {data.get('repr', '')}".strip()]
            logs = data.get("logs") or []
            if logs:
                parts.append("last log lines: " + " | ".join(str(line) for line in logs[-5:]))
            return "; ".join(parts)
    for failure in endpoint.get("errors") or []:
        for error in failure.get("errors") or []:
            return f"{error.get('name')}: {error.get('repr')}"
    return ""
