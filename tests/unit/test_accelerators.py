"""The accelerator table: every type/vendor against every target, the rejections included."""

from __future__ import annotations

import itertools
import json

import pytest

from cloud_deploy_provider.accelerators import (
    VENDOR_TYPES,
    AcceleratorError,
    request_of,
    sagemaker_check,
)
from cloud_deploy_provider.spec import SpecError, parse_spec_text
from cloud_deploy_provider.targets import accelerator_mappings

REQUESTS = ["cpu", "gpu", "gpu:nvidia", "gpu:amd", "gpu:intel", "npu", "npu:rebellion", "npu:intel", "tpu", "tpu:google"]
NAME_VENDOR = "name the vendor"
NVIDIA_ONLY = {"docker": "NVIDIA GPUs only (--gpus)", "aws-ecs": "NVIDIA GPUs here only",
               "aws-batch": "NVIDIA GPUs here only", "gcp-cloudrun": "NVIDIA GPUs only", "ktc": "NVIDIA GPUs only"}
BACKENDAI_OFFERS = "Backend.AI has accelerator plugins for gpu:amd, gpu:nvidia, npu:intel, npu:rebellion, tpu:google"

# What each target makes of one device of each kind: its resource names, or (the refusal's reason).
EXPECTED: dict[str, dict[str, object]] = {
    "docker": {"cpu": {}, "gpu": {"nvidia": 1}, "gpu:nvidia": {"nvidia": 1}},
    "aws-ecs": {"cpu": {}, "gpu": {"GPU": 1}, "gpu:nvidia": {"GPU": 1}},
    "aws-batch": {"cpu": {}, "gpu": {"GPU": 1}, "gpu:nvidia": {"GPU": 1}},
    "gcp-cloudrun": {"cpu": None, "gpu": "nvidia-l4", "gpu:nvidia": "nvidia-l4"},
    "ktc": {"cpu": 0, "gpu": 1, "gpu:nvidia": 1},
    "compute-session": {
        "cpu": {}, "gpu": {"cuda.device": 1}, "gpu:nvidia": {"cuda.device": 1}, "gpu:amd": {"rocm.device": 1},
        "gpu:intel": (BACKENDAI_OFFERS,), "npu": (NAME_VENDOR,), "npu:rebellion": {"atom.device": 1},
        "npu:intel": {"gaudi2.device": 1}, "tpu": {"tpu.device": 1}, "tpu:google": {"tpu.device": 1},
    },
    "kubernetes": {
        "cpu": {}, "gpu": {"nvidia.com/gpu": 1}, "gpu:nvidia": {"nvidia.com/gpu": 1}, "gpu:amd": {"amd.com/gpu": 1},
        "gpu:intel": {"gpu.intel.com/i915": 1}, "npu": (NAME_VENDOR,), "npu:rebellion": {"rebellions.ai/npu": 1},
        "npu:intel": {"habana.ai/gaudi": 1}, "tpu": {"google.com/tpu": 1}, "tpu:google": {"google.com/tpu": 1},
    },
}
for _target, _reason in NVIDIA_ONLY.items():
    for _request in REQUESTS[3:]:
        EXPECTED[_target][_request] = (NAME_VENDOR if _request == "npu" else _reason,)


def request(text: str, **merge):
    parts = dict(zip(("type", "vendor", "model", "count"), text.split(":")))
    count = int(parts.pop("count", 0 if parts["type"] == "cpu" else 1))
    return request_of(**parts, count=count, **merge)


def test_the_table_covers_every_target_and_request():
    assert set(EXPECTED) == set(accelerator_mappings())
    assert all(set(row) == set(REQUESTS) for row in EXPECTED.values())


@pytest.mark.parametrize("target, asked", list(itertools.product(EXPECTED, REQUESTS)))
def test_every_target_maps_or_refuses_every_accelerator(target, asked):
    expected = EXPECTED[target][asked]
    if isinstance(expected, tuple):
        with pytest.raises(AcceleratorError) as error:
            accelerator_mappings()[target](request(asked))
        message = str(error.value)
        assert message.startswith(f"{target}: cannot provide accelerator {asked.split(':')[0]}")
        assert expected[0] in message
    else:
        assert accelerator_mappings()[target](request(asked)) == expected


@pytest.mark.parametrize(
    "asked, instance_type, problem",
    [
        ("cpu", "ml.t2.xlarge", None),
        ("gpu:nvidia", "ml.g5.xlarge", None),
        ("gpu:nvidia:a10g:1", "ml.g5.xlarge", None),
        ("gpu", "ml.p4d.24xlarge", None),
        ("gpu:nvidia", "ml.t2.xlarge", "ml.t2.xlarge has no GPU"),
        ("gpu:nvidia:a100:1", "ml.g5.xlarge", "ml.g5.xlarge has a10g GPUs, not a100"),
        ("gpu:amd", "ml.g5.xlarge", "NVIDIA GPUs only"),
        ("npu", "ml.g5.xlarge", NAME_VENDOR),
        ("npu:rebellion", "ml.g5.xlarge", "NVIDIA GPUs only"),
        ("npu:intel", "ml.g5.xlarge", "NVIDIA GPUs only"),
        ("tpu", "ml.g5.xlarge", "NVIDIA GPUs only"),
        ("gpu:intel", "ml.g5.xlarge", "NVIDIA GPUs only"),
    ],
)
def test_sagemaker_gpus_come_with_the_instance_type(asked, instance_type, problem):
    if problem is None:
        sagemaker_check(request(asked), instance_type)
        return
    with pytest.raises(AcceleratorError, match="^aws-sagemaker: cannot provide accelerator") as error:
        sagemaker_check(request(asked), instance_type)
    assert problem in str(error.value)


@pytest.mark.parametrize(
    "target, asked, merge, expected",
    [
        ("compute-session", "npu:rebellion:atom-plus:2", {}, {"atom-plus.device": 2}),
        ("compute-session", "npu:rebellion:atom-max:1", {}, {"atom-max.device": 1}),
        ("compute-session", "npu", {"slots": {"atom-max.device": 1}}, {"atom-max.device": 1}),
        ("compute-session", "cpu", {"slots": {"cuda.shares": 0.5}}, {"cuda.shares": 0.5}),
        ("compute-session", "gpu:nvidia:a100:4", {}, {"cuda.device": 4}),
        ("compute-session", "cpu", {"gpu": 2}, {"cuda.device": 2}),
        ("kubernetes", "gpu:nvidia:a100:4", {}, {"nvidia.com/gpu": 4}),
        ("kubernetes", "cpu", {"slots": {"atom-max.device": 2}}, {"rebellions.ai/npu": 2}),
        ("gcp-cloudrun", "gpu:nvidia:rtx-pro-6000:1", {}, "nvidia-rtx-pro-6000"),
        ("aws-ecs", "gpu:nvidia:a100:8", {}, {"GPU": 8}),
        ("docker", "gpu:nvidia:t4:0", {}, {}),
        ("ktc", "gpu:nvidia:a100:2", {}, 2),
    ],
)
def test_models_counts_and_slots(target, asked, merge, expected):
    assert accelerator_mappings()[target](request(asked, **merge)) == expected


@pytest.mark.parametrize(
    "target, asked, merge, problem",
    [
        ("compute-session", "npu:rebellion:rebel:1", {}, "rebellion NPU models are atom, atom-plus, atom-max"),
        ("compute-session", "npu:intel:gaudi3:1", {}, "intel NPU models are gaudi2"),
        ("gcp-cloudrun", "gpu:nvidia:a100:1", {}, "Cloud Run offers the GPU models l4, rtx-pro-6000"),
        ("gcp-cloudrun", "gpu:nvidia:l4:2", {}, "exactly one GPU per instance"),
        *[(target, "cpu", {"slots": {"cuda.shares": 0.5}}, "fractional GPU shares are a Backend.AI feature")
          for target in ("docker", "aws-ecs", "aws-batch", "gcp-cloudrun", "ktc", "kubernetes")],
    ],
)
def test_models_and_shares_a_target_lacks(target, asked, merge, problem):
    with pytest.raises(AcceleratorError, match=f"^{target}: cannot provide accelerator") as error:
        accelerator_mappings()[target](request(asked, **merge))
    assert problem in str(error.value)


SPEC = "build: {{accelerator: {accelerator}}}\ndeploy: {{type: docker, service_name: svc, resources: {resources}}}\n"


@pytest.mark.parametrize(
    "accelerator, resources, problem",
    [
        *[(f"{kind}:{vendor}", "{}", f"{vendor} makes")
          for vendor, kind in itertools.product(VENDOR_TYPES, ("gpu", "npu", "tpu")) if kind not in VENDOR_TYPES[vendor]],
        ("npu", "{gpu: 2}", "deploy.resources.gpu: 2 GPUs contradicts build.accelerator npu"),
        ("gpu", "{atom-max.device: 1}", "deploy.resources.atom-max.device is npu (type), but build.accelerator asks for gpu"),
        ("npu:intel", "{atom.device: 1}", "is rebellion (vendor), but build.accelerator asks for intel"),
        ("npu:rebellion:atom", "{atom-max.device: 1}", "is atom-max (model), but build.accelerator asks for atom"),
        ("cpu", "{atom.device: 1, cuda.device: 1}", "give one accelerator slot"),
        ("cpu", "{gpu: 1, cuda.device: 1}", "give gpu or cuda.device, not both"),
        ("cpu", "{warp.device: 1}", "deploy.resources.warp.device: not an accelerator slot"),
        ("cpu", "{cuda.device: 1.5}", "devices are counted whole, not 1.5"),
        ("'cpu:::2'", "{}", "a cpu accelerator takes no count"),
        ("{type: npu, vendor: rebellion, shares: 0.5}", "{}", "fractional shares exist for NVIDIA GPUs only"),
    ],
)
def test_contradictory_requests_fail_when_the_spec_is_read(accelerator, resources, problem):
    with pytest.raises(SpecError) as error:
        parse_spec_text(SPEC.format(accelerator=accelerator, resources=resources))
    assert problem in str(error.value)


def test_tango_atom_sample_asks_for_one_atom_max():
    spec = parse_spec_text(SPEC.format(accelerator="npu", resources="{cpu: 8, memory: 32768, atom-max.device: 1}"))
    assert str(spec.accelerator_request) == "npu:rebellion:atom-max:1"
    assert accelerator_mappings()["compute-session"](spec.accelerator_request) == {"atom-max.device": 1}
    with pytest.raises(AcceleratorError, match="^docker: cannot provide accelerator npu:rebellion:atom-max:1"):
        accelerator_mappings()["docker"](spec.accelerator_request)


GPU_SPEC = {"accelerator": "gpu:nvidia:l4:1"}
ATOM_SPEC = {"accelerator": "npu:rebellion:atom-max:1"}
ROLE_ARN = "arn:aws:iam::123456789012:role/sagemaker"
DEPLOY_EXTRAS = {
    "ktc": {"address": "http://127.0.0.1:9"},
    "aws-sagemaker": {"sagemaker": {"instance_type": "ml.g6.xlarge", "execution_role_arn": ROLE_ARN}},
    "aws-ecs": {"ecs": {"launch_type": "ec2"}},
}
# How each target's rendered resources show one L4 GPU.
GPU_IN_DESCRIBE = {
    "docker": '"gpus": 1',
    "aws-ecs": '{"type": "GPU", "value": "1"}',
    "aws-batch": '{"type": "GPU", "value": "1"}',
    "aws-sagemaker": '"InstanceType": "ml.g6.xlarge"',
    "gcp-cloudrun": "nvidia-l4",
    "ktc": '"gpu": 1',
    "compute-session": '"cuda.device": "1"',
}


@pytest.fixture
def offline_connections(monkeypatch):
    """Every target's connection, pointing at a closed port: describe() must not call anything."""
    closed = "http://127.0.0.1:9"
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {
        "region_name": "eu-west-1", "endpoint_url": closed,
        "cloud_deploy": {"subnets": ["subnet-0abc1234"], "batch_job_queue": "gpu-queue"}}}))
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps({"conn_type": "google_cloud_platform", "extra": {
        "project": "tango-testbed",
        "cloud_deploy": {"region": "asia-northeast3", "run_endpoint": closed, "artifact_registry_endpoint": closed}}}))
    monkeypatch.setenv("AIRFLOW_CONN_BACKENDAI_DEFAULT", json.dumps(
        {"conn_type": "backendai", "host": closed, "login": "AKIATEST", "password": "secret"}))


def _described(target: str, build: dict) -> str:
    from cloud_deploy_provider.identity import ProjectRef
    from cloud_deploy_provider.settings import EngineSettings
    from cloud_deploy_provider.spec import validate_spec_data
    from cloud_deploy_provider.targets import target_class

    deploy = {"type": target, "service_name": "svc", "resources": {"cpu": 4, "memory": 16384},
              "entrypoint": ["python3", "server.py"], **DEPLOY_EXTRAS.get(target, {})}
    spec = validate_spec_data({"build": build, "deploy": deploy})
    return json.dumps(target_class(target).describe(ProjectRef("u", "p"), spec, EngineSettings.from_env()))


@pytest.mark.parametrize("target", list(GPU_IN_DESCRIBE))
def test_each_target_renders_its_own_gpu_resource(offline_connections, target):
    assert GPU_IN_DESCRIBE[target] in _described(target, GPU_SPEC)


@pytest.mark.parametrize("target", [name for name in GPU_IN_DESCRIBE if name != "compute-session"])
def test_each_target_refuses_an_npu_naming_itself(offline_connections, target):
    with pytest.raises(AcceleratorError, match=f"^{target}: cannot provide accelerator npu:rebellion:atom-max:1"):
        _described(target, ATOM_SPEC)


def test_compute_session_renders_the_atom_slot(offline_connections):
    assert '"atom-max.device": "1"' in _described("compute-session", ATOM_SPEC)


@pytest.mark.parametrize("target", sorted(EXPECTED))
def test_tangos_cuda_maps_on_every_target_as_an_nvidia_gpu(target):
    """``accelerator: cuda`` (TANGO's code generator) is read into the same request as ``gpu:nvidia``."""
    accelerator = parse_spec_text(SPEC.format(accelerator="cuda", resources="{}")).build.accelerator
    cuda = request_of(**accelerator.model_dump())
    assert cuda == request("gpu:nvidia")
    assert accelerator_mappings()[target](cuda) == EXPECTED[target]["gpu:nvidia"]
