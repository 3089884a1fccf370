"""Every registered target keeps the contract: its class, spec section, accelerator mapping, sample and render.

Adding a line to ``targets.REGISTERED`` without the rest fails here, before any engine or cloud is reached.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cloud_deploy_provider import accelerators
from cloud_deploy_provider.cli import main
from cloud_deploy_provider.jobs import JOB_TARGETS, RUNNERS, job_runner_class
from cloud_deploy_provider.jobs.base import JobRunner
from cloud_deploy_provider.spec import KNOWN_DEPLOY_TYPES, Deploy, Job
from cloud_deploy_provider.targets import REGISTERED, TARGET_TYPES, accelerator_mappings, target_class
from cloud_deploy_provider.targets.base import Target

REPO = Path(__file__).resolve().parents[2]
CONTRACT = ("deploy", "status", "remove", "describe")
CLOSED = "http://127.0.0.1:9"  # any call to a cloud API during render would fail on this port
CONNECTIONS = {
    "AIRFLOW_CONN_AWS_DEFAULT": {"conn_type": "aws", "extra": {
        "region_name": "eu-west-1", "endpoint_url": CLOSED,
        "cloud_deploy": {"subnets": ["subnet-0abc1234"], "execution_role_arn": "arn:aws:iam::123456789012:role/e",
                         "sagemaker_execution_role_arn": "arn:aws:iam::123456789012:role/s",
                         "sagemaker_bucket": "models-bucket", "batch_job_queue": "gpu-queue"}}},
    "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": {"conn_type": "google_cloud_platform", "extra": {
        "project": "demo-project", "cloud_deploy": {"region": "asia-northeast3", "run_endpoint": "127.0.0.1:9"}}},
    "AIRFLOW_CONN_KUBERNETES_DEFAULT": {"conn_type": "kubernetes", "extra": {"namespace": "models"}},
    "AIRFLOW_CONN_BACKENDAI_DEFAULT": {"conn_type": "backendai", "host": "127.0.0.1", "port": 9, "schema": "http",
                                       "login": "AKIATEST", "password": "secret"},
}


def test_the_spec_knows_exactly_the_registered_types():
    assert tuple(KNOWN_DEPLOY_TYPES) == TARGET_TYPES


@pytest.mark.parametrize("registered", REGISTERED, ids=lambda registered: registered.type)
def test_each_registered_target_implements_the_contract(registered):
    cls = target_class(registered.type)
    assert issubclass(cls, Target) and cls.type == registered.type
    assert not [name for name in CONTRACT if getattr(cls, name) is getattr(Target, name)]
    assert cls.without_spec in ("owned", "nothing", "refused")


def _overrides_with_other_signatures(cls: type, base: type) -> list[str]:
    """The methods ``cls`` defines again whose parameters (names, order, kinds) or kind (method, classmethod,
    static method) differ from ``base``'s; annotations may narrow and are not compared."""
    import inspect

    def parameters(method) -> list[tuple[str, object]]:
        return [(p.name, p.kind) for p in inspect.signature(method).parameters.values()]

    different = []
    for name, own in vars(cls).items():
        inherited = inspect.getattr_static(base, name, None)
        if name.startswith("__") or not callable(getattr(base, name, None)) or inherited is None:
            continue
        same_kind = type(own) is type(inherited)
        if not same_kind or parameters(getattr(cls, name)) != parameters(getattr(base, name)):
            different.append(name)
    return different


@pytest.mark.parametrize("registered", REGISTERED, ids=lambda registered: registered.type)
def test_each_registered_target_keeps_the_base_signatures(registered):
    """A target that redefines a capability with other parameters breaks every caller that reads it."""
    cls = target_class(registered.type)
    for klass in cls.__mro__[:cls.__mro__.index(Target)]:
        assert _overrides_with_other_signatures(klass, Target) == [], klass.__name__


@pytest.mark.parametrize("registered", RUNNERS, ids=lambda registered: registered.target)
def test_each_registered_job_runner_implements_the_contract_with_its_signatures(registered):
    cls = job_runner_class(registered.target)
    assert issubclass(cls, JobRunner) and cls.target == registered.target
    assert not [name for name in ("begin", "watch", "end") if getattr(cls, name) is getattr(JobRunner, name)]
    assert _overrides_with_other_signatures(cls, JobRunner) == []
    assert JOB_TARGETS == tuple(Job.model_json_schema()["properties"]["target"].get("enum", JOB_TARGETS))


@pytest.mark.parametrize("registered", REGISTERED, ids=lambda registered: registered.type)
def test_each_registered_target_has_its_spec_section_and_accelerator_mapping(registered):
    if registered.section is not None:
        assert registered.section in Deploy.model_fields
    if registered.accelerators is not None:
        mapping = getattr(accelerators, registered.accelerators)
        assert accelerator_mappings()[registered.type] is mapping
        assert mapping(accelerators.request_of(type="cpu")) in ({}, 0, None)


@pytest.mark.parametrize("registered", REGISTERED, ids=lambda registered: registered.type)
def test_each_registered_target_has_a_sample_that_validates_and_renders(registered, monkeypatch, capsys):
    sample = REPO / "samples" / registered.sample
    assert yaml.safe_load((sample / "deployment.yaml").read_text())["deploy"]["type"] == registered.type
    monkeypatch.setenv("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples" / "catalog.local.yaml"))
    for variable, connection in CONNECTIONS.items():
        monkeypatch.setenv(variable, json.dumps(connection))
    assert main(["validate", str(sample)]) == 0, capsys.readouterr().err
    assert f"deploy.type {registered.type}" in capsys.readouterr().out
    assert main(["render", str(sample), "--user-id", "u", "--project-id", "p"]) == 0, capsys.readouterr().err
    rendered = capsys.readouterr().out.split(f"# {registered.type} target resources\n", 1)[1]
    assert json.JSONDecoder().raw_decode(rendered)[0]
