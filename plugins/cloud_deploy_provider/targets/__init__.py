"""Deploy targets: one module per ``deploy.type``, each a :class:`~cloud_deploy_provider.targets.base.Target`.

Adding a target is one module and one line in ``REGISTERED`` (with its tests and sample). The
spec's known types, the accelerator table and the samples are read from that line; everything
else asks the target's declared capabilities, so nothing outside this package names a type.
This module imports nothing heavy: the spec reads ``TARGET_TYPES`` from it.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cloud_deploy_provider.errors import UserError

if TYPE_CHECKING:
    from cloud_deploy_provider.targets.base import Target


@dataclass(frozen=True)
class Registered:
    """One target on this installation: what the rest of the package may know of it without importing it.

    ``section`` is the ``deploy`` field that belongs to this target alone (None: it has none);
    ``accelerators`` names its function in :mod:`cloud_deploy_provider.accelerators` that turns an
    accelerator request into its resource names (None: its mapping needs more than the request);
    ``sample`` is its folder under ``samples/``.
    """

    type: str
    implementation: str
    section: str | None
    accelerators: str | None
    sample: str


REGISTERED = (
    Registered("docker", "docker:DockerTarget", None, "docker_devices", "hello"),
    Registered("gcp-cloudrun", "gcp_cloudrun:CloudRunTarget", "cloudrun", "cloud_run_gpu", "gcp-cloudrun"),
    Registered("aws-ecs", "aws_ecs:EcsTarget", "ecs", "ecs_resources", "aws-ecs"),
    Registered("aws-sagemaker", "aws_sagemaker:SageMakerTarget", "sagemaker", None, "aws-sagemaker"),
    Registered("aws-batch", "aws_batch:BatchTarget", "batch", "batch_resources", "aws-batch"),
    Registered("compute-session", "compute_session:ComputeSessionTarget", "model_service", "backendai_slots",
               "compute-session-gpu"),
    Registered("kubernetes", "kubernetes:KubernetesTarget", "k8s", "kubernetes_resources", "k8s-inference"),
    Registered("ktc", "ktc:KtcTarget", "address", "ktc_gpus", "ktc"),
)
TARGETS: dict[str, Registered] = {registered.type: registered for registered in REGISTERED}
TARGET_TYPES = tuple(TARGETS)

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


class UnknownTarget(UserError):
    """``deploy.type`` names no target of this installation."""


def accelerator_mappings() -> dict[str, Any]:
    """Each registered target's accelerator mapping (a function of :mod:`cloud_deploy_provider.accelerators`
    from a request to the target's resource names), for the targets whose mapping needs nothing but the request."""
    from cloud_deploy_provider import accelerators

    return {target.type: getattr(accelerators, target.accelerators) for target in REGISTERED if target.accelerators}


def target_class(deploy_type: str) -> type[Target]:
    try:
        module_name, _, class_name = TARGETS[deploy_type].implementation.partition(":")
    except KeyError:
        available = ", ".join(sorted(TARGETS))
        raise UnknownTarget(f"deploy.type {deploy_type!r} has no target on this installation (available: {available})") from None
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)
