"""The stages of a deployment, free of Airflow: load, build, push, deploy, wait, stop.

Operators call these with a docker client, a registry and a log function; tests and the CLI
call them the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloud_deploy_provider.build import render_build
from cloud_deploy_provider.catalog import load_catalog
from cloud_deploy_provider.engine import build_image, image_id, pull_image, push_image
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.registry import Registry, RegistryClient, repository_for, split_reference
from cloud_deploy_provider.settings import BuildSettings
from cloud_deploy_provider.spec import DeploymentSpec, check_project_files, load_spec
from cloud_deploy_provider.targets import ImageRef, Target, TargetStatus, target_class
from cloud_deploy_provider.workspace import project_dir, spec_path

Log = Callable[[str], None]
LOCAL_TARGETS = {"docker"}


class DeploymentFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadedProject:
    project: ProjectRef
    spec: DeploymentSpec
    folder: Path


@dataclass(frozen=True)
class BuiltImage:
    reference: str
    image_id: str | None
    build_key: str
    base_image: str
    skipped: str | None = None
    digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_project(user_id: str, project_id: str, root: Path | None = None) -> LoadedProject:
    """Everything ``/start`` checks synchronously: identifiers, the yaml, its files, the target."""
    project = ProjectRef(user_id, project_id)
    spec = load_spec(spec_path(project, root))
    folder = project_dir(project, root)
    check_project_files(spec, folder)
    target_class(spec.deploy.type)
    return LoadedProject(project, spec, folder)


def build(
    loaded: LoadedProject,
    client: Any,
    settings: BuildSettings,
    registry: Registry | None,
    log: Log,
) -> BuiltImage:
    """Build the image unless the engine or the registry already has this build key."""
    spec, project = loaded.spec, loaded.project
    plan = render_build(spec, loaded.folder, settings, load_catalog(settings.catalog_path))
    key = plan.key(image_id(client, plan.base.image))
    repository = repository_for(spec.build.image_uri, project, registry)
    tag = f"bk-{key[:24]}"
    reference = f"{repository}:{tag}"
    common = {"reference": reference, "build_key": key, "base_image": plan.base.image}
    existing = image_id(client, reference)
    if existing:
        log(f"{reference} is already in the engine (build key unchanged): build skipped")
        return BuiltImage(image_id=existing, skipped="engine", **common)
    if registry is not None:
        digest = _registry_digest(registry, repository, tag)
        if digest:
            log(f"{reference} is already in the registry ({digest}): build and push skipped")
            if spec.deploy.type in LOCAL_TARGETS:
                pull_image(client, repository, tag, registry.auth_config(), log)
            return BuiltImage(image_id=image_id(client, reference), skipped="registry", digest=digest, **common)
    log(f"building {reference} FROM {plan.base.image}")
    started = time.monotonic()
    built_id = build_image(
        client, plan, reference, log, network_mode=settings.network_mode, labels=project.labels(spec.deploy.service_name)
    )
    log(f"built {reference} ({built_id[:19]}) in {time.monotonic() - started:.1f} s")
    return BuiltImage(image_id=built_id, **common)


def _registry_digest(registry: Registry, repository: str, tag: str) -> str | None:
    _, path, _ = split_reference(repository + ":" + tag)
    client = RegistryClient(registry)
    try:
        return client.manifest_digest(path, tag)
    finally:
        client.close()


def push(built: BuiltImage, client: Any, registry: Registry | None, deploy_type: str, log: Log) -> BuiltImage:
    """Push to the registry and confirm by a manifest HEAD; the docker target needs no registry."""
    if registry is None:
        if deploy_type not in LOCAL_TARGETS:
            raise DeploymentFailed(
                f"deploy.type {deploy_type} runs images from a registry: set CLOUD_DEPLOY_REGISTRY_CONN_ID "
                "to a docker-type connection"
            )
        log("no registry configured: the docker target runs the image from the local engine")
        return built
    if built.skipped == "registry":
        return built
    repository, tag = built.reference.rsplit(":", 1)
    already = _registry_digest(registry, repository, tag)
    if already:
        log(f"{built.reference} is already in the registry ({already}): push skipped")
        return BuiltImage(**{**built.to_dict(), "digest": already})
    reported = push_image(client, repository, tag, registry.auth_config(), log)
    confirmed = _registry_digest(registry, repository, tag)
    if confirmed is None:
        raise DeploymentFailed(f"push of {built.reference} reported success but the registry has no such manifest")
    if reported and reported != confirmed:
        raise DeploymentFailed(f"push of {built.reference}: engine reported {reported}, registry has {confirmed}")
    log(f"pushed {built.reference}, digest {confirmed}")
    return BuiltImage(**{**built.to_dict(), "digest": confirmed})


def make_target(project: ProjectRef, deploy_type: str, log: Log, **options: Any) -> Target:
    return target_class(deploy_type)(project, log=log, **options)


def wait_ready(target: Target, spec: DeploymentSpec, log: Log) -> TargetStatus:
    """Poll the target until it reports ready (or completed), fails, or the deadline passes.

    The deadline is ``deploy.readiness.timeout_seconds`` unless the target knows better (a batch
    job is waited for until its own timeout).
    """
    readiness = spec.deploy.readiness
    ready_timeout = getattr(target, "ready_timeout_seconds", None)
    timeout = ready_timeout(spec) if ready_timeout else readiness.timeout_seconds
    deadline = time.monotonic() + timeout
    last_message = None
    while True:
        status = target.status(spec)
        if status.message != last_message:
            log(f"{status.state}: {status.message}")
            last_message = status.message
        if status.state in ("running", "completed"):
            return status
        if status.state in ("exited", "failed", "absent"):
            raise DeploymentFailed(status.message)
        if time.monotonic() >= deadline:
            raise DeploymentFailed(f"not ready after {timeout} s: {status.message}")
        time.sleep(readiness.interval_seconds)


def image_ref(built: dict[str, Any]) -> ImageRef:
    return ImageRef(reference=built["reference"], digest=built.get("digest"), image_id=built.get("image_id"))

