"""The operators' templated ``*_conn_id`` parameters reach the target, the job runner and the trigger; unset, each
falls back to the installation's ``CLOUD_DEPLOY_*_CONN_ID`` variable, then the provider's default."""

from __future__ import annotations

import pytest

from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.jobs import make_job_runner
from cloud_deploy_provider.operators.cloud_deploy import CONN_ID_PARAMETERS, CloudDeployOperator, CloudJobOperator
from cloud_deploy_provider.pipeline import make_target
from cloud_deploy_provider.triggers import TargetStatusTrigger

PROJECT = ProjectRef("alice", "p1")
GIVEN = {"registry_conn_id": "team_registry", "aws_conn_id": "team_aws", "gcp_conn_id": "team_gcp",
         "kubernetes_conn_id": "team_k8s", "backendai_conn_id": "team_bai"}


def _client_conn_id(target) -> str:
    """The connection id the target's client (or hook) was made with, read from the client itself."""
    cluster = getattr(target, "cluster", None)
    if cluster is not None:
        return cluster.hook.conn_id
    hook = getattr(target, "hook", None)
    if hook is not None:
        return hook.backendai_conn_id
    return target.client.conn_id


@pytest.mark.parametrize("deploy_type, parameter", [
    ("aws-ecs", "aws_conn_id"), ("aws-sagemaker", "aws_conn_id"), ("aws-batch", "aws_conn_id"),
    ("gcp-cloudrun", "gcp_conn_id"), ("kubernetes", "kubernetes_conn_id"), ("compute-session", "backendai_conn_id"),
])
def test_a_target_uses_the_connection_its_parameter_names(deploy_type, parameter):
    target = make_target(PROJECT, deploy_type, print, GIVEN)
    assert (target.conn_id, target.registry_conn_id) == (GIVEN[parameter], "team_registry")
    assert _client_conn_id(target) == GIVEN[parameter]


@pytest.mark.parametrize("deploy_type, variable, value", [
    ("aws-ecs", "CLOUD_DEPLOY_AWS_CONN_ID", "aws_from_env"),
    ("gcp-cloudrun", "CLOUD_DEPLOY_GCP_CONN_ID", "gcp_from_env"),
    ("kubernetes", "CLOUD_DEPLOY_K8S_CONN_ID", "k8s_from_env"),
    ("compute-session", "CLOUD_DEPLOY_BACKENDAI_CONN_ID", "bai_from_env"),
])
def test_unset_the_installation_variable_decides(deploy_type, variable, value, monkeypatch):
    monkeypatch.setenv(variable, value)
    assert _client_conn_id(make_target(PROJECT, deploy_type, print, {})) == value


@pytest.mark.parametrize("target, parameter", [("kubernetes", "kubernetes_conn_id"), ("aws-batch", "aws_conn_id")])
def test_a_job_runner_uses_the_connection_its_parameter_names(target, parameter):
    runner = make_job_runner(PROJECT, target, print, GIVEN)
    assert (runner.conn_id, runner.registry_conn_id) == (GIVEN[parameter], "team_registry")
    helper = runner.cluster.hook.conn_id if target == "kubernetes" else runner.batch.client.conn_id
    assert helper == GIVEN[parameter]


def test_the_parameters_are_templated_and_travel_with_the_deferred_wait():
    for operator_class in (CloudDeployOperator, CloudJobOperator):
        assert set(CONN_ID_PARAMETERS) <= set(operator_class.template_fields)
    operator = CloudDeployOperator(task_id="deploy", user_id="alice", project_id="p1", **GIVEN)
    assert operator.connections == GIVEN
    trigger = TargetStatusTrigger("alice", "p1", {}, 0.0, 1.0, connections=operator.connections)
    _, kwargs = trigger.serialize()
    assert TargetStatusTrigger(**kwargs).connections == GIVEN
