"""Google Artifact Registry as the registry of the ``gcp-cloudrun`` target.

Images go to ``<location>-docker.pkg.dev/<gcp project>/<repository>/...``. The repository is the
one ``build.image_uri`` names when it points at Artifact Registry, else the connection's
``artifact_repository`` (both shared: created when missing, never deleted), else one per
project, labelled as created by it, so stop deletes only a repository this project made. Pushes log in
as ``oauth2accesstoken`` with an OAuth2 access token; the digest is then confirmed with the
same OCI manifest HEAD as any registry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from cloud_deploy_provider.clients.gcp import GcpSession
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.registries.oci import Registry, split_reference
from cloud_deploy_provider.spec import DeploymentSpec

LABEL_OWNER = "cloud-deploy-owner"
LABEL_CREATED_BY = "cloud-deploy-created-by"
REGISTRY_USER = "oauth2accesstoken"
_DOCKER_HOST = re.compile(r"^([a-z0-9-]+)-docker\.pkg\.dev$")
_LABEL_VALUE = re.compile(r"[^a-z0-9_-]+")


def owner(project: ProjectRef) -> str:
    """The project as a Google label value (lowercase, no '~'): a hash of its exact key."""
    return hashlib.sha256(project.key.encode()).hexdigest()[:20]


def labels(project: ProjectRef, service_name: str, created: bool = False) -> dict[str, str]:
    """Google labels: lowercase letters, digits, '_' and '-', at most 63 characters."""
    readable = {
        "cloud-deploy-user": project.user_id,
        "cloud-deploy-project": project.project_id,
        "cloud-deploy-service": service_name,
    }
    result = {key: _LABEL_VALUE.sub("-", value.lower())[:63] for key, value in readable.items()}
    result[LABEL_OWNER] = owner(project)
    if created:
        result[LABEL_CREATED_BY] = owner(project)
    return result


@dataclass(frozen=True)
class Repository:
    gcp_project: str
    location: str
    repository_id: str
    shared: bool = False
    in_image_uri: bool = False

    @property
    def name(self) -> str:
        return f"projects/{self.gcp_project}/locations/{self.location}/repositories/{self.repository_id}"

    @property
    def docker_host(self) -> str:
        return f"{self.location}-docker.pkg.dev"


def repository_of(session: GcpSession, project: ProjectRef, spec: DeploymentSpec) -> Repository:
    host, path, _ = split_reference(spec.build.image_uri) if spec.build.image_uri else (None, "", None)
    located = _DOCKER_HOST.match(host or "")
    if located and path.count("/") >= 2:
        gcp_project, repository_id = path.split("/")[:2]
        return Repository(gcp_project, located.group(1), repository_id, shared=True, in_image_uri=True)
    cloudrun = spec.deploy.cloudrun
    shared = session.defaults.artifact_repository
    return Repository(
        session.project_id(cloudrun.project_id if cloudrun else None),
        session.region(cloudrun.region if cloudrun else None),
        shared or project.resource_name(""),
        shared=bool(shared),
    )


def ensure_repository(session: GcpSession, repository: Repository, project: ProjectRef, log: Callable[[str], None]) -> None:
    from google.api_core import exceptions
    from google.cloud import artifactregistry_v1

    client = session.artifact_registry
    try:
        client.get_repository(name=repository.name)
        return
    except exceptions.NotFound:
        pass
    wanted = artifactregistry_v1.Repository(
        format_=artifactregistry_v1.Repository.Format.DOCKER,
        description=f"cloud-deploy images of {project.key}",
        labels={} if repository.shared else labels(project, "", created=True),
    )
    parent = repository.name.rsplit("/repositories/", 1)[0]
    try:
        client.create_repository(parent=parent, repository_id=repository.repository_id, repository=wanted).result(timeout=120)
        log(f"created Artifact Registry repository {repository.name}")
    except exceptions.AlreadyExists:  # created concurrently by another run
        pass


def artifact_registry(session: GcpSession, repository: Repository, project: ProjectRef, log: Callable[[str], None]) -> Registry:
    """The repository's Docker registry, logged in, with the repository existing."""
    ensure_repository(session, repository, project, log)
    endpoint = session.defaults.docker_registry or repository.docker_host
    namespace = "" if repository.in_image_uri else f"{repository.gcp_project}/{repository.repository_id}"
    return Registry.at(endpoint, REGISTRY_USER, session.access_token(), namespace)


def delete_repository(session: GcpSession, repository: Repository, project: ProjectRef) -> list[str]:
    """Delete the repository and its images, only when this project created it."""
    from google.api_core import exceptions

    if repository.shared:
        return []
    client = session.artifact_registry
    try:
        found = client.get_repository(name=repository.name)
        if found.labels.get(LABEL_CREATED_BY) != owner(project):
            return []
        client.delete_repository(name=repository.name).result(timeout=120)
    except exceptions.NotFound:
        return []
    return [f"artifact-registry-repository/{repository.name}"]
