"""What the ``aws-*`` targets share: the session as their client, ECR as their registry, names, tags, pre-flight checks."""

from __future__ import annotations

from typing import Any, ClassVar

from cloud_deploy_provider.clients.aws import AwsSession
from cloud_deploy_provider.errors import TargetError
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.registries.ecr import CREATED_BY, delete_repository, ecr_registry
from cloud_deploy_provider.registries.oci import Registry, repository_path
from cloud_deploy_provider.spec import DeploymentSpec
from cloud_deploy_provider.targets.base import Target


class AwsTargetError(TargetError):
    pass


class AwsTarget(Target):
    """The client is an :class:`AwsSession` (one boto3 client per service); resources are found through the
    spec (cluster, queue, endpoint names), so a stop without it is refused."""

    conn_id_parameter: ClassVar[str] = "aws_conn_id"

    def connect(self) -> AwsSession:
        return AwsSession(self.conn_id)

    def aws(self, service: str) -> Any:
        """The boto3 client for ``service``."""
        return self.client.client(service)

    def image_registry(self, spec: DeploymentSpec) -> Registry:
        """AWS targets run images from the account's ECR, whatever registry the installation uses otherwise."""
        return ecr_registry(self.client, repository_path(spec.build.image_uri, self.project), self.project, self.log)

    def name(self, spec: DeploymentSpec) -> str:
        return self.project.resource_name(spec.deploy.service_name)

    @classmethod
    def owner_of(cls, project: ProjectRef) -> str:
        """The project key in a form AWS tag values accept ('~' is not allowed there)."""
        return project.key.replace("~", "/")

    def labels(self, spec: DeploymentSpec, created: bool = False) -> dict[str, str]:
        return self.service_labels(spec.deploy.service_name, created)

    def service_labels(self, service: str, created: bool = False) -> dict[str, str]:
        labels = {key: value.replace("~", "/") for key, value in self.project.labels(service).items()}
        if created:
            labels[CREATED_BY] = self.owner
        return labels

    def delete_repository(self, spec: DeploymentSpec) -> list[str]:
        return delete_repository(self.client, repository_path(spec.build.image_uri, self.project), self.project)

    def check_role(self, arn: str, what: str) -> None:
        """Fail before creating anything when a role the deployment needs does not exist."""
        iam = self.aws("iam")
        try:
            iam.get_role(RoleName=arn.rsplit("/", 1)[-1])
        except iam.exceptions.NoSuchEntityException as error:
            raise AwsTargetError(f"{what} {arn}: {error}") from None

    def check_network(self, subnets: list[str], security_groups: list[str]) -> None:
        """Fail before creating anything when a subnet or security group does not exist (AWS's message)."""
        ec2 = self.aws("ec2")
        if subnets:
            ec2.describe_subnets(SubnetIds=subnets)
        if security_groups:
            ec2.describe_security_groups(GroupIds=security_groups)


def tag_list(labels: dict[str, str], key: str = "Key", value: str = "Value") -> list[dict[str, Any]]:
    return [{key: k, value: v} for k, v in labels.items()]
