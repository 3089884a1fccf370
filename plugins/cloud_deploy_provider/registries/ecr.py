"""Amazon ECR as the registry of the AWS targets.

The repository is created on first use (scan on push, tags mutable unless the connection asks
for immutable ones) and tagged with the project, so stop deletes only repositories this project
created. Pushes log in with ``GetAuthorizationToken``; the digest is then confirmed with the
same OCI manifest HEAD as any registry (:mod:`cloud_deploy_provider.registries.oci`).
"""

from __future__ import annotations

from collections.abc import Callable

from cloud_deploy_provider.clients.aws import AwsSession
from cloud_deploy_provider.identity import LABEL_KEY, ProjectRef
from cloud_deploy_provider.registries.oci import Registry

CREATED_BY = "io.cloud-deploy.created-by"


def _tags(project: ProjectRef) -> list[dict[str, str]]:
    owner = project.key.replace("~", "/")
    return [{"Key": LABEL_KEY, "Value": owner}, {"Key": CREATED_BY, "Value": owner}]


def ensure_repository(session: AwsSession, path: str, project: ProjectRef, log: Callable[[str], None]) -> None:
    ecr = session.client("ecr")
    try:
        ecr.describe_repositories(repositoryNames=[path])
        return
    except ecr.exceptions.RepositoryNotFoundException:
        pass
    defaults = session.defaults
    try:
        ecr.create_repository(
            repositoryName=path,
            imageScanningConfiguration={"scanOnPush": defaults.ecr_scan_on_push},
            imageTagMutability="IMMUTABLE" if defaults.ecr_immutable_tags else "MUTABLE",
            tags=_tags(project),
        )
        log(f"created ECR repository {path}")
    except ecr.exceptions.RepositoryAlreadyExistsException:  # created concurrently by another run
        pass


def ecr_registry(session: AwsSession, path: str, project: ProjectRef, log: Callable[[str], None]) -> Registry:
    """The account's ECR registry, logged in, with ``path`` existing in it."""
    ensure_repository(session, path, project, log)
    credentials = session.ecr_credentials()
    endpoint = session.defaults.ecr_registry_endpoint or credentials.proxy_endpoint
    return Registry.at(endpoint, credentials.username, credentials.password)


def delete_repository(session: AwsSession, path: str, project: ProjectRef) -> list[str]:
    """Delete the repository and its images, only when this project created it."""
    ecr = session.client("ecr")
    try:
        arn = ecr.describe_repositories(repositoryNames=[path])["repositories"][0]["repositoryArn"]
    except ecr.exceptions.RepositoryNotFoundException:
        return []
    tags = {tag["Key"]: tag["Value"] for tag in ecr.list_tags_for_resource(resourceArn=arn).get("tags", [])}
    if tags.get(CREATED_BY) != project.key.replace("~", "/"):
        return []
    try:
        ecr.delete_repository(repositoryName=path, force=True)
    except ecr.exceptions.RepositoryNotFoundException:
        return []
    return [f"ecr-repository/{path}"]
