"""Deploy targets: one module per ``deploy.type``, all behind the small :class:`Target` protocol.

Adding a target is one module, one line in ``TARGETS`` and its tests; the DAGs, the REST API and
the status code never branch on the target type.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.spec import DeploymentSpec

TARGETS: dict[str, str] = {
    "docker": "cloud_deploy_provider.targets.docker:DockerTarget",
    "aws-ecs": "cloud_deploy_provider.targets.aws_ecs:EcsTarget",
    "aws-sagemaker": "cloud_deploy_provider.targets.aws_sagemaker:SageMakerTarget",
    "aws-batch": "cloud_deploy_provider.targets.aws_batch:BatchTarget",
    "gcp-cloudrun": "cloud_deploy_provider.targets.gcp_cloudrun:CloudRunTarget",
    "ktc": "cloud_deploy_provider.targets.ktc:KtcTarget",
    "compute-session": "cloud_deploy_provider.targets.compute_session:ComputeSessionTarget",
    "kubernetes": "cloud_deploy_provider.targets.kubernetes:KubernetesTarget",
}

TargetState = Literal["running", "starting", "exited", "failed", "completed", "absent", "unknown"]


@dataclass(frozen=True)
class ImageRef:
    """The image a deploy uses: a reference, plus its registry digest and engine id when known."""

    reference: str
    digest: str | None = None
    image_id: str | None = None

    @property
    def pinned(self) -> str:
        """The reference by digest when there is one: what remote targets should run."""
        if self.digest:
            return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"
        return self.reference


@dataclass(frozen=True)
class DeployResult:
    target: str
    resources: dict[str, Any]
    url: str | None = None
    changed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TargetStatus:
    state: TargetState
    url: str | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Target(Protocol):
    type: ClassVar[str]

    def __init__(self, project: ProjectRef, log: Callable[[str], None] = ...) -> None: ...

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        """Create or update; running it twice with the same inputs changes nothing."""

    def status(self, spec: DeploymentSpec) -> TargetStatus:
        """What the target itself reports, readiness included."""

    def stop(self, spec: DeploymentSpec | None) -> list[str]:
        """Delete everything this project created there; returns what was removed. Idempotent."""

    @classmethod
    def describe(cls, project: ProjectRef, spec: DeploymentSpec, settings: Any) -> dict[str, Any]:
        """The resources a deploy would create, as plain data, without touching the target."""


class UnknownTarget(ValueError):
    pass


def target_class(deploy_type: str) -> type[Target]:
    try:
        module_name, _, class_name = TARGETS[deploy_type].partition(":")
    except KeyError:
        available = ", ".join(sorted(TARGETS))
        raise UnknownTarget(f"deploy.type {deploy_type!r} has no target on this installation (available: {available})") from None
    return getattr(importlib.import_module(module_name), class_name)
