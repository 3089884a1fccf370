"""AWS access for the ``aws-*`` targets, through the amazon provider's hooks (boto3 underneath).

Credentials, region and ``endpoint_url`` come from an Airflow ``aws`` connection
(``CLOUD_DEPLOY_AWS_CONN_ID``, default ``aws_default``); without one, TANGO's ``AWS_REGION``,
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` stand in for it (``tango_env``). Clients use
botocore's ``standard`` retry mode, so throttling and 5xx answers are retried with exponential
backoff, unless the connection's ``config_kwargs`` choose their own retries.

The installation's defaults for the AWS targets (network, roles, queue, bucket) live in the same
connection's extra under ``cloud_deploy``; a project's ``deployment.yaml`` overrides them.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict

from cloud_deploy_provider.clients.connections import Endpoint, cloud_deploy_defaults, conn_id_from_env
from cloud_deploy_provider.clients.tango_env import aws_from_env, stored_connection
from cloud_deploy_provider.errors import UserError
from cloud_deploy_provider.spec.grammar import (
    AwsResourceName, EnabledDisabled, IamRoleArn, S3Bucket, SecurityGroupId, SubnetId,
)

DEFAULT_CONN_ID = "aws_default"
DEFAULT_RETRIES = {"mode": "standard", "max_attempts": 8}


class AwsSettingsError(UserError):
    """The AWS connection or its ``cloud_deploy`` defaults cannot be used."""


class AwsDefaults(BaseModel):
    """``extra.cloud_deploy`` of the AWS connection: what a project does not say itself."""

    model_config = ConfigDict(extra="forbid")

    subnets: list[SubnetId] = []
    security_groups: list[SecurityGroupId] = []
    assign_public_ip: EnabledDisabled = "ENABLED"
    ecs_cluster: AwsResourceName | None = None
    execution_role_arn: IamRoleArn | None = None
    task_role_arn: IamRoleArn | None = None
    sagemaker_execution_role_arn: IamRoleArn | None = None
    sagemaker_bucket: S3Bucket | None = None
    batch_job_queue: AwsResourceName | None = None
    ecr_scan_on_push: bool = True
    ecr_immutable_tags: bool = False
    ecr_registry_endpoint: Endpoint | None = None


def aws_conn_id() -> str:
    return conn_id_from_env("CLOUD_DEPLOY_AWS_CONN_ID", DEFAULT_CONN_ID, AwsSettingsError)


class AwsSession:
    """boto3 clients for one AWS connection, made once per service."""

    def __init__(self, conn_id: str | None = None):
        self.conn_id = conn_id or aws_conn_id()
        self._clients: dict[str, Any] = {}

    @cached_property
    def _hook(self):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return self._provider_hook(AwsBaseHook, client_type="sts")

    @cached_property
    def _stand_in(self) -> Any | None:
        """TANGO's ``AWS_*`` variables as the connection, when Airflow has no connection ``conn_id``.

        None when it has one (it always wins), and when none of the variables is set either: the
        provider then goes on without a connection, on boto3's own credential chain, as before.
        """
        if stored_connection(self.conn_id) is not None:
            return None
        return aws_from_env(self.conn_id, AwsSettingsError)

    def _provider_hook(self, hook_class: type, **kwargs: Any) -> Any:
        """An amazon provider hook on ``conn_id``, reading the stand-in connection when there is one."""
        hook = hook_class(aws_conn_id=self.conn_id, **kwargs)
        if self._stand_in is not None:
            stand_in = self._stand_in
            # The provider reads its connection once, through self.get_connection (conn_config).
            hook.get_connection = lambda _conn_id: stand_in
        return hook

    @cached_property
    def _config(self):
        from botocore.config import Config

        return Config(retries=dict(DEFAULT_RETRIES)).merge(self._hook.config)

    @cached_property
    def _boto_session(self):
        return self._hook.get_session(region_name=self.region)

    def client(self, service: str) -> Any:
        """One boto3 client per service, from one session (the connection is read once)."""
        if service not in self._clients:
            self._clients[service] = self._boto_session.client(
                service,
                endpoint_url=self._hook.conn_config.get_service_endpoint_url(service_name=service),
                config=self._config,
                verify=self._hook.verify,
            )
        return self._clients[service]

    @cached_property
    def region(self) -> str:
        region = self._hook.region_name
        if not region:
            raise AwsSettingsError(
                f"connection {self.conn_id!r}: set region_name in its extra (without the connection: AWS_REGION)"
            )
        return region

    @cached_property
    def account_id(self) -> str:
        return self.client("sts").get_caller_identity()["Account"]

    @cached_property
    def defaults(self) -> AwsDefaults:
        return cloud_deploy_defaults(AwsDefaults, self._hook.conn_config.extra_config, self.conn_id, AwsSettingsError)

    def ecr_credentials(self):
        """A 12-hour ECR login (``AWS`` + token), masked in Airflow's logs by the hook."""
        from airflow.providers.amazon.aws.hooks.ecr import EcrHook

        hook = self._provider_hook(EcrHook, region_name=self.region, config=self._config)
        return hook.get_temporary_credentials()[0]

