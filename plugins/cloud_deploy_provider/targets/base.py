"""The one contract every deploy target implements, and the pieces all targets share.

A target subclasses :class:`Target`, sets ``type`` and whichever capability differs from the
default, and implements ``connect`` (its client: see :class:`~cloud_deploy_provider.clients.PlatformUser`),
``deploy``, ``status``, ``remove`` and ``describe``. Callers never ask what a target is: they read its
declared capabilities.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from cloud_deploy_provider.clients import PlatformUser
from cloud_deploy_provider.errors import UserError
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.targets import DeployResult, ImageRef, TargetStatus

if TYPE_CHECKING:
    from cloud_deploy_provider.registries.oci import Registry
    from cloud_deploy_provider.spec import DeploymentSpec

Log = Callable[[str], None]
# The label (or tag) that carries a resource's configuration hash: a changed hash means "replace it".
CONFIG_LABEL = "io.cloud-deploy.config"
# The same, where keys must be DNS-style prefixes (Kubernetes annotations, Cloud Run annotations).
CONFIG_ANNOTATION = "cloud-deploy.io/config"


class StopNeedsSpec(UserError):
    """A target that finds its resources only through the spec was asked to stop without one."""


class Target(PlatformUser):
    """A place a project's service runs. One instance serves one project; its client is made on first use.

    Capabilities, each with the default most targets have:

    - ``runs_local_images``: the target runs images from this machine's Docker engine, so it needs
      no registry, and an image found in the registry is pulled instead of built.
    - ``advertises_service_host_ip``: the service URL names ``deploy.network.service_host_ip``.
    - ``without_spec``: what :meth:`stop` does when the deployed spec is unknown: ``"owned"`` (finds
      everything by the project's owner label), ``"nothing"`` (there is nothing it could find) or
      ``"refused"`` (it needs the spec to know where to look; ``stop_needs`` says what).
    - ``default_port``: the container port when ``deploy.network.container_port`` is not given.
    - ``conn_id_parameter``: the operator parameter that names its Airflow connection (``aws_conn_id``, ...);
      the target gets its value as ``conn_id`` (None: the ``CLOUD_DEPLOY_*_CONN_ID`` variable, then the default).
    - :meth:`preflight`, :meth:`image_registry`, :meth:`ready_timeout_seconds`.
    """

    type: ClassVar[str]
    runs_local_images: ClassVar[bool] = False
    advertises_service_host_ip: ClassVar[bool] = False
    without_spec: ClassVar[Literal["owned", "nothing", "refused"]] = "refused"
    stop_needs: ClassVar[str] = "where its resources are"
    default_port: ClassVar[int] = 8080
    conn_id_parameter: ClassVar[str | None] = None
    config_hash_length: ClassVar[int] = 32

    # ------------------------------------------------------------------ what each target implements

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        """Create or update; running it twice with the same inputs changes nothing."""
        raise NotImplementedError

    def status(self, spec: DeploymentSpec) -> TargetStatus:
        """What the target itself reports, readiness included."""
        raise NotImplementedError

    def remove(self, spec: DeploymentSpec | None) -> list[str]:
        """Delete what this project created there; returns what was removed. Called by :meth:`stop`, with
        ``spec`` None only when ``without_spec`` is ``"owned"``."""
        raise NotImplementedError

    @classmethod
    def describe(cls, project: ProjectRef, spec: DeploymentSpec, settings: Any = None) -> dict[str, Any]:
        """The resources a deploy would create, as plain data, without touching the target."""
        raise NotImplementedError

    # ------------------------------------------------------------------ capabilities with defaults

    def preflight(self, spec: DeploymentSpec) -> str | None:
        """Check, before anything is built, that the target accepts the spec; returns what was checked.

        The default checks nothing beyond the spec's own validation and returns None.
        """
        return None

    def image_registry(self, spec: DeploymentSpec) -> Registry | None:
        """The registry this target runs images from; None: the installation's registry."""
        return None

    def ready_timeout_seconds(self, spec: DeploymentSpec) -> float:
        """How long a deploy waits for readiness: ``deploy.readiness.timeout_seconds``, unless the target knows better."""
        return spec.deploy.readiness.timeout_seconds

    # ------------------------------------------------------------------ shared pieces

    def stop(self, spec: DeploymentSpec | None) -> list[str]:
        """Delete everything this project created there; returns what was removed. Idempotent."""
        if spec is None and self.without_spec == "nothing":
            return []
        if spec is None and self.without_spec == "refused":
            raise StopNeedsSpec(f"{self.type}: stop needs the deployed spec to know {self.stop_needs}")
        return self.remove(spec)

    @classmethod
    def owner_of(cls, project: ProjectRef) -> str:
        """The value that marks a resource as ``project``'s, in a form the platform's labels or tags accept."""
        return project.key

    @property
    def owner(self) -> str:
        return self.owner_of(self.project)

    def port(self, spec: DeploymentSpec) -> int:
        network = spec.deploy.network
        return (network.container_port if network else None) or self.default_port

    def config_hash(self, data: Any) -> str:
        """A short, stable hash of what a deploy would create: stored on the resource, it tells "unchanged"."""
        return config_hash(data, self.config_hash_length)


def config_hash(data: Any, length: int) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]
