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
from cloud_deploy_provider.builder import build_image
from cloud_deploy_provider.catalog import load_catalog
from cloud_deploy_provider.engine import image_id, pull_image, push_image
from cloud_deploy_provider.errors import TargetError
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.registries.oci import Registry, RegistryClient, repository_for, split_reference
from cloud_deploy_provider.settings import BuildSettings
from cloud_deploy_provider.spec import DeploymentSpec, check_project_files, load_spec
from cloud_deploy_provider.targets import ImageRef, TargetStatus, target_class
from cloud_deploy_provider.targets.base import Target
from cloud_deploy_provider.workspace import SPEC_FILE_NAME, project_dir, shown_path, spec_path

Log = Callable[[str], None]


class DeploymentFailed(TargetError):
    """The service failed, or was not ready by its deadline: a retry would wait for the same thing."""

    retryable = False


@dataclass(frozen=True)
class LoadedProject:
    """A validated project; ``warnings`` are the legacy forms its yaml was read with (see spec.ATP_WARNING)."""

    project: ProjectRef
    spec: DeploymentSpec
    folder: Path
    warnings: tuple[str, ...] = ()


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
    """Everything ``/start`` checks synchronously: identifiers, the yaml, its files, the target.

    Messages name the yaml relative to the shared root (``common/<user>/<project>/deployment.yaml``).
    """
    project = ProjectRef(user_id, project_id)
    warnings: list[str] = []
    spec = load_spec(spec_path(project, root), source=shown_path(project, SPEC_FILE_NAME), legacy_forms=warnings)
    folder = project_dir(project, root)
    check_project_files(spec, folder)
    target_class(spec.deploy.type)
    return LoadedProject(project, spec, folder, tuple(warnings))


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
        digest = registry_digest(registry, repository, tag)
        if digest:
            log(f"{reference} is already in the registry ({digest}): build and push skipped")
            if target_class(spec.deploy.type).runs_local_images:
                pull_image(client, repository, tag, registry.auth_config(), log)
            return BuiltImage(image_id=image_id(client, reference), skipped="registry", digest=digest, **common)
    log(f"building {reference} FROM {plan.base.image}")
    started = time.monotonic()
    built_id = build_image(client, plan, reference, log, network_mode=settings.network_mode)
    log(f"built {reference} ({built_id[:19]}) in {time.monotonic() - started:.1f} s")
    return BuiltImage(image_id=built_id, **common)


def registry_digest(registry: Registry, repository: str, tag: str) -> str | None:
    _, path, _ = split_reference(repository + ":" + tag)
    client = RegistryClient(registry)
    try:
        return client.manifest_digest(path, tag)
    finally:
        client.close()


def push(built: BuiltImage, client: Any, registry: Registry | None, deploy_type: str, log: Log) -> BuiltImage:
    """Push to the registry and confirm by a manifest HEAD; the docker target needs no registry."""
    if registry is None:
        if not target_class(deploy_type).runs_local_images:
            raise DeploymentFailed(
                f"deploy.type {deploy_type} runs images from a registry: set CLOUD_DEPLOY_REGISTRY_CONN_ID "
                "to a docker-type connection"
            )
        log(f"no registry configured: the {deploy_type} target runs the image from the local engine")
        return built
    if built.skipped == "registry":
        return built
    repository, tag = built.reference.rsplit(":", 1)
    already = registry_digest(registry, repository, tag)
    if already:
        log(f"{built.reference} is already in the registry ({already}): push skipped")
        return BuiltImage(**{**built.to_dict(), "digest": already})
    reported = push_image(client, repository, tag, registry.auth_config(), log)
    confirmed = registry_digest(registry, repository, tag)
    if confirmed is None:
        raise DeploymentFailed(f"push of {built.reference} reported success but the registry has no such manifest")
    if reported and reported != confirmed:
        raise DeploymentFailed(f"push of {built.reference}: engine reported {reported}, registry has {confirmed}")
    log(f"pushed {built.reference}, digest {confirmed}")
    return BuiltImage(**{**built.to_dict(), "digest": confirmed})


def make_target(project: ProjectRef, deploy_type: str, log: Log, connections: dict[str, str | None] | None = None,
                **options: Any) -> Target:
    """The target of ``deploy_type`` for ``project``. ``connections`` maps operator parameters (``aws_conn_id``,
    ``registry_conn_id``, ...) to connection ids; the target takes the one it declares, and the registry's."""
    cls, connections = target_class(deploy_type), connections or {}
    conn_id = connections.get(cls.conn_id_parameter) if cls.conn_id_parameter else None
    return cls(project, log=log, conn_id=conn_id, registry_conn_id=connections.get("registry_conn_id"), **options)


def validate(project: ProjectRef, log: Log, warn: Log | None = None,
             connections: dict[str, str | None] | None = None) -> LoadedProject:
    """What a run checks before building: the yaml, its files, and that the target accepts the spec.

    The legacy forms the yaml was read with go to ``warn`` (default: ``log``) as ``warning: ...``.
    """
    loaded = load_project(project.user_id, project.project_id)
    spec = loaded.spec
    log(f"{project.user_id}/{project.project_id}: deploy.type {spec.deploy.type}, service {spec.deploy.service_name}")
    for warning in loaded.warnings:
        (warn or log)(f"warning: {shown_path(project, SPEC_FILE_NAME)}: {warning}")
    target = make_target(project, spec.deploy.type, log, connections)
    note = service_host_ip_note(target, spec)
    if note:
        log(note)
    checked = target.preflight(spec)
    if checked:
        log(f"the target accepts the spec ({checked} checked)")
    return loaded


def service_host_ip_note(target: Target, spec: DeploymentSpec) -> str | None:
    """What ``deploy.network.service_host_ip`` does on this target, when the spec gives one.

    TANGO fills it with an address that need not be this host's. A target that advertises it
    (``advertises_service_host_ip``, the docker target) puts it in the service URL; the others
    report the address their platform gives the service, and ignore it.
    """
    network = spec.deploy.network
    if network is None or network.service_host_ip is None:
        return None
    if target.advertises_service_host_ip:
        return f"deploy.network.service_host_ip {network.service_host_ip}: advertised in the service URL"
    return (f"deploy.network.service_host_ip {network.service_host_ip}: not used by {spec.deploy.type}, "
            "whose service URL is the address the target gives it")


def readiness_outcome(status: TargetStatus) -> str | None:
    """``ready`` or ``failed`` once the target has decided; None while it is still on its way."""
    if status.state in ("running", "completed"):
        return "ready"
    if status.state in ("exited", "failed", "absent"):
        return "failed"
    return None


def finished_outcome(status: TargetStatus) -> str | None:
    """For a job: as :func:`readiness_outcome`, but running is not done yet."""
    return None if status.state == "running" else readiness_outcome(status)


FIRST_POLL_SECONDS = 0.05
POLL_GROWTH = 1.25


def poll_delays(interval: float):
    """Waits between status polls: from 50 ms up to the spec's interval, growing by a quarter each time.

    A local container answers within a second or so; polling at the spec's interval (1 s by
    default) from the start would add up to that interval to every deploy.
    """
    delay = min(FIRST_POLL_SECONDS, interval)
    while True:
        yield delay
        delay = min(delay * POLL_GROWTH, interval)


def wait_ready(target: Target, spec: DeploymentSpec, log: Log) -> TargetStatus:
    """Poll the target, in this process, until it reports ready (or completed), fails, or its ready timeout
    passes. (The deploy operator polls briefly, then hands the wait to the triggerer.)"""
    timeout = target.ready_timeout_seconds(spec)
    outcome, status = poll(target, spec, log, readiness_outcome, time.time() + timeout)
    if outcome == "failed":
        raise DeploymentFailed(status.message)
    if outcome == "timeout":
        raise DeploymentFailed(f"not ready after {timeout:.0f} s: {status.message}")
    return status


def poll(watched: Any, spec: DeploymentSpec, log: Log, outcome_of: Callable[[TargetStatus], str | None],
         deadline: float, until: float | None = None) -> tuple[str | None, TargetStatus]:
    """Poll ``watched.status(spec)`` until ``outcome_of`` decides (ready, failed), ``deadline`` passes
    (timeout) or ``until`` comes (None: still waiting). Log lines a status carries are logged."""
    last_message = None
    delays = poll_delays(spec.deploy.readiness.interval_seconds)
    while True:
        status = watched.status(spec)
        for line in status.details.get("log", []):
            log(line)
        if status.message != last_message:
            log(f"{status.state}: {status.message}")
            last_message = status.message
        outcome = outcome_of(status)
        if outcome is not None:
            return outcome, status
        now, delay = time.time(), next(delays)
        if now >= deadline:
            return "timeout", status
        if until is not None and now + delay >= until:
            return None, status
        time.sleep(min(delay, deadline - now))


def image_ref(built: dict[str, Any]) -> ImageRef:
    return ImageRef(reference=built["reference"], digest=built.get("digest"), image_id=built.get("image_id"))

