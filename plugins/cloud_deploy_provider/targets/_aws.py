"""What the ``aws-*`` targets share: the session, ECR as their registry, names, tags, pre-flight checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from cloud_deploy_provider.ecr import CREATED_BY, delete_repository, ecr_registry
from cloud_deploy_provider.errors import Refusal
from cloud_deploy_provider.hooks.aws import AwsSession
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.registry import Registry, repository_path
from cloud_deploy_provider.spec import DeploymentSpec


class AwsTargetError(Refusal):
    pass


class AwsTarget:
    type: ClassVar[str]

    def __init__(self, project: ProjectRef, log: Callable[[str], None] = print, session: AwsSession | None = None):
        self.project = project
        self.log = log
        self._session = session

    @property
    def session(self) -> AwsSession:
        if self._session is None:
            self._session = AwsSession()
        return self._session

    @classmethod
    def image_registry(cls, project: ProjectRef, spec: DeploymentSpec, log: Callable[[str], None]) -> Registry:
        """AWS targets run images from the account's ECR, whatever registry the installation uses otherwise."""
        return ecr_registry(AwsSession(), repository_path(spec.build.image_uri, project), project, log)

    def name(self, spec: DeploymentSpec) -> str:
        return self.project.resource_name(spec.deploy.service_name)

    @property
    def owner(self) -> str:
        """The project key in a form AWS tag values accept ('~' is not allowed there)."""
        return self.project.key.replace("~", "/")

    def labels(self, spec: DeploymentSpec, created: bool = False) -> dict[str, str]:
        labels = {key: value.replace("~", "/") for key, value in self.project.labels(spec.deploy.service_name).items()}
        if created:
            labels[CREATED_BY] = self.owner
        return labels

    def delete_repository(self, spec: DeploymentSpec) -> list[str]:
        return delete_repository(self.session, repository_path(spec.build.image_uri, self.project), self.project)

    def check_role(self, arn: str, what: str) -> None:
        """Fail before creating anything when a role the deployment needs does not exist."""
        iam = self.session.client("iam")
        try:
            iam.get_role(RoleName=arn.rsplit("/", 1)[-1])
        except iam.exceptions.NoSuchEntityException as error:
            raise AwsTargetError(f"{what} {arn}: {error}") from None

    def check_network(self, subnets: list[str], security_groups: list[str]) -> None:
        """Fail before creating anything when a subnet or security group does not exist (AWS's message)."""
        ec2 = self.session.client("ec2")
        if subnets:
            ec2.describe_subnets(SubnetIds=subnets)
        if security_groups:
            ec2.describe_security_groups(GroupIds=security_groups)


def tag_list(labels: dict[str, str], key: str = "Key", value: str = "Value") -> list[dict[str, Any]]:
    return [{key: k, value: v} for k, v in labels.items()]
