"""The ``ktc`` target: TANGO's KT Cloud agent, driven over plain HTTP at ``deploy.address``.

``POST /start`` with the service name, image (by digest), port, cpu, memory, gpu and env;
``POST /stop``; ``GET /status?service_name=`` answering ``{"status": "running|starting|stopped|
failed|...", "error": ..., "url": ...}``. No client library exists for the agent, so this is
written on httpx. The agent pulls the image from the installation's registry.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from cloud_deploy_provider import http_clients
from cloud_deploy_provider.accelerators import ktc_gpus
from cloud_deploy_provider.errors import TargetError
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.spec import DeploymentSpec
from cloud_deploy_provider.targets import DeployResult, ImageRef, TargetStatus
from cloud_deploy_provider.targets.base import Target

TIMEOUT_SECONDS = 30.0
STATES = {"running": "running", "starting": "starting", "pending": "starting", "stopped": "absent",
          "failed": "failed", "error": "failed", "exited": "exited"}


class KtcError(TargetError):
    pass


class KtcTarget(Target):
    """Each call opens its own short-lived HTTP client (the agent's address is the spec's), so there is no
    ``connect``; without the spec there is no agent to ask, so a stop without one finds nothing."""

    type: ClassVar[str] = "ktc"
    without_spec: ClassVar[str] = "nothing"

    def address(self, spec: DeploymentSpec) -> str:
        if not spec.deploy.address:
            raise KtcError("ktc: set deploy.address to the KT Cloud agent (http(s)://host[:port])")
        return spec.deploy.address

    def service_name(self, spec: DeploymentSpec) -> str:
        return self.project.resource_name(spec.deploy.service_name)

    def start_request(self, spec: DeploymentSpec, image: str) -> dict[str, Any]:
        gpus = ktc_gpus(spec.accelerator_request)
        resources = spec.deploy.resources
        return {
            "service_name": self.service_name(spec),
            "image": image,
            "port": self.port(spec),
            "cpu": resources.cpu or 1,
            "memory": resources.memory or 2048,
            "gpu": gpus,
            "env": dict(spec.deploy.env),
        }

    @classmethod
    def describe(cls, project: ProjectRef, spec: DeploymentSpec, settings: Any = None) -> dict[str, Any]:
        target = cls(project)
        return {"POST": f"{target.address(spec)}/start", "body": target.start_request(spec, "<the pushed image, by digest>")}

    def preflight(self, spec: DeploymentSpec) -> str:
        """Run by the validate task: the request is buildable and the agent answers."""
        self.start_request(spec, "<image>")
        self.call(spec, "GET", "/status", params={"service_name": self.service_name(spec)})
        return "the request and the agent's answer"

    def call(self, spec: DeploymentSpec, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.address(spec)}{path}"
        try:
            with http_clients.client(timeout=TIMEOUT_SECONDS) as client:
                response = client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise KtcError(f"ktc agent at {self.address(spec)} is unreachable: {error}", retryable=True) from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        if response.status_code >= 400:
            raise KtcError(f"ktc agent: {method} {path} answered {response.status_code}: {body.get('error') or body}",
                           status=response.status_code)
        return body if isinstance(body, dict) else {"error": f"unexpected answer {body!r}"}

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        request = self.start_request(spec, image.pinned)
        answer = self.call(spec, "POST", "/start", json=request)
        self.log(f"ktc agent {self.address(spec)} started {request['service_name']} ({image.pinned})")
        return DeployResult(self.type, {"agent": self.address(spec), "service": request["service_name"]},
                            url=answer.get("url") or self.default_url(spec))

    def default_url(self, spec: DeploymentSpec) -> str:
        return f"http://{urlsplit(self.address(spec)).hostname}:{self.port(spec)}"

    def status(self, spec: DeploymentSpec) -> TargetStatus:
        answer = self.call(spec, "GET", "/status", params={"service_name": self.service_name(spec)})
        reported = str(answer.get("status", "unknown")).lower()
        state = STATES.get(reported, "unknown")
        error = answer.get("error") or ""
        message = f"ktc agent reports {reported}" + (f": {error}" if error else "")
        url = (answer.get("url") or self.default_url(spec)) if state == "running" else None
        return TargetStatus(state, url, message, {"agent": self.address(spec), "reported": reported})

    def remove(self, spec: DeploymentSpec) -> list[str]:
        if not spec.deploy.address:
            return []
        if self.status(spec).state == "absent":
            return []
        self.call(spec, "POST", "/stop", json={"service_name": self.service_name(spec)})
        self.log(f"ktc agent {self.address(spec)} stopped {self.service_name(spec)}")
        return [f"ktc-service/{self.service_name(spec)}"]
