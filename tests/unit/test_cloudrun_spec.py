"""deploy.cloudrun, the connection defaults, and what the Cloud Run target builds from a spec (no API calls)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cloud_deploy_provider.cli import main
from cloud_deploy_provider.clients.gcp import GcpSession, GcpSettingsError
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.spec import SpecError, validate_spec_data
from cloud_deploy_provider.targets.gcp_cloudrun import CloudRunError, CloudRunTarget

REPO = Path(__file__).resolve().parents[2]
CLOSED_PORT = "http://127.0.0.1:9"
CONNECTION = {
    "conn_type": "google_cloud_platform",
    "extra": {
        "project": "tango-testbed",
        "cloud_deploy": {"region": "asia-northeast3", "run_endpoint": CLOSED_PORT, "artifact_registry_endpoint": CLOSED_PORT},
    },
}


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(CONNECTION))
    monkeypatch.setenv("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples" / "catalog.local.yaml"))


def spec(build: dict | None = None, **deploy):
    data = {"type": "gcp-cloudrun", "service_name": "svc", "network": {"service_container_port": 8080}, **deploy}
    return validate_spec_data({"build": build or {}, "deploy": data})


def target(project_id: str = "p1") -> CloudRunTarget:
    return CloudRunTarget(ProjectRef("alice", project_id), log=lambda _: None)


@pytest.mark.parametrize(
    "cloudrun, field",
    [
        ({"project_id": "Tango_Testbed"}, "deploy.cloudrun.project_id"),
        ({"project_id": "abc"}, "deploy.cloudrun.project_id"),
        ({"region": "asia-northeast3; rm -rf /"}, "deploy.cloudrun.region"),
        ({"service_account": "runner@example.com"}, "deploy.cloudrun.service_account"),
        ({"min_instances": -1}, "deploy.cloudrun.min_instances"),
        ({"max_instances": 0}, "deploy.cloudrun.max_instances"),
        ({"min_instances": 5, "max_instances": 2}, "deploy.cloudrun"),
        ({"concurrency": 1001}, "deploy.cloudrun.concurrency"),
        ({"allow_unauthenticated": "yes please"}, "deploy.cloudrun.allow_unauthenticated"),
        ({"ingress": "all"}, "deploy.cloudrun.ingress"),
    ],
)
def test_bad_cloudrun_values_are_rejected_naming_the_field(cloudrun, field):
    with pytest.raises(SpecError) as error:
        spec(cloudrun=cloudrun)
    assert any(problem.startswith(field) for problem in error.value.problems), error.value.problems


@pytest.mark.parametrize(
    "resources, limits",
    [
        ({}, {"cpu": "1", "memory": "512Mi"}),
        ({"cpu": 2, "memory": 8192}, {"cpu": "2", "memory": "8192Mi"}),
        ({"cpu": 4, "memory": 2048}, {"cpu": "4", "memory": "2048Mi"}),
        ({"cpu": 8, "memory": 32768}, {"cpu": "8", "memory": "32768Mi"}),
    ],
)
def test_sizes_cloud_run_accepts(resources, limits):
    assert target().limits(spec(resources=resources)) == limits


@pytest.mark.parametrize(
    "resources, message",
    [
        ({"cpu": 3}, "cpu must be one of (1, 2, 4, 6, 8) on Cloud Run, not 3"),
        ({"cpu": 0.5}, "not 0.5"),
        ({"memory": 64}, "memory must be 128 to 32768 MB, not 64"),
        ({"memory": 65536, "cpu": 8}, "not 65536"),
        ({"cpu": 4, "memory": 1024}, "4 CPUs need at least 2048 MB"),
        ({"cpu": 8, "memory": 2048}, "8 CPUs need at least 4096 MB"),
        ({"cpu": 1, "memory": 8192}, "8192 MB of memory needs at least 2 CPUs"),
        ({"cpu": 4, "memory": 20000}, "20000 MB of memory needs at least 6 CPUs"),
    ],
)
def test_sizes_cloud_run_refuses(resources, message):
    with pytest.raises(CloudRunError, match="gcp-cloudrun: ") as error:
        target().limits(spec(resources=resources))
    assert message in str(error.value)


GPU_SIZE = {"cpu": 4, "memory": 16384}


@pytest.mark.parametrize(
    "accelerator, resources, selector",
    [
        ("cpu", {}, None),
        ("gpu", GPU_SIZE, "nvidia-l4"),
        ("gpu:nvidia", GPU_SIZE, "nvidia-l4"),
        ("gpu:nvidia:l4:1", GPU_SIZE, "nvidia-l4"),
        ("gpu:nvidia:rtx-pro-6000:1", {"cpu": 8, "memory": 32768}, "nvidia-rtx-pro-6000"),
        ("cpu", {**GPU_SIZE, "gpu": 1}, "nvidia-l4"),
    ],
)
def test_gpu_mapping(accelerator, resources, selector):
    built = target().service(spec({"accelerator": accelerator}, resources=resources), "img")
    assert (built.template.node_selector.accelerator or None) == selector
    limits = built.template.containers[0].resources
    assert ("nvidia.com/gpu" in limits.limits) == bool(selector)
    assert limits.cpu_idle is not bool(selector), "GPU instances keep their CPU allocated"


@pytest.mark.parametrize(
    "accelerator, resources, message",
    [
        ("gpu:nvidia:l4:1", {"cpu": 2, "memory": 8192}, "needs at least 4 CPUs and 16384 MB"),
        ("gpu:nvidia:l4:1", {"cpu": 4, "memory": 8192}, "needs at least 4 CPUs and 16384 MB"),
    ],
)
def test_gpu_sizes_cloud_run_cannot_meet(accelerator, resources, message):
    """Which GPUs Cloud Run has is in the accelerator table (tests/unit/test_accelerators.py)."""
    with pytest.raises(CloudRunError) as error:
        target().service(spec({"accelerator": accelerator}, resources=resources), "img")
    assert message in str(error.value)


def test_port_env_matching_the_container_port_is_left_to_cloud_run_any_other_is_refused():
    assert [e.name for e in target().env(spec(env={"PORT": "8080", "A": "1"}))] == ["A"]
    with pytest.raises(CloudRunError, match="Cloud Run sets PORT to the container port \\(8080\\) itself"):
        target().env(spec(env={"PORT": "9000"}))


def test_replicas_are_refused_in_favour_of_instance_bounds():
    with pytest.raises(CloudRunError, match="min_instances and max_instances instead of deploy.replicas"):
        target().service(spec(replicas=2), "img")


def test_readiness_becomes_a_startup_probe_within_cloud_runs_budget():
    http = target().startup_probe(spec(readiness={"path": "/healthz", "timeout_seconds": 60, "interval_seconds": 2}))
    assert (http.http_get.path, http.http_get.port, http.period_seconds, http.failure_threshold) == ("/healthz", 8080, 2, 30)
    long = target().startup_probe(spec(readiness={"check": "tcp", "timeout_seconds": 3600, "interval_seconds": 5}))
    assert long.tcp_socket.port == 8080 and long.period_seconds * long.failure_threshold <= 240


def test_names_fit_cloud_runs_limits_and_differ_per_project():
    long_project = "p" * 64
    built = target(long_project)
    service_id = built.service_id(spec())
    assert len(service_id) <= 49 and service_id != target("p2").service_id(spec())
    assert len(built.revision_name(spec(), 99999, "f" * 32)) <= 63


def test_the_config_hash_changes_with_the_image_and_env_only():
    one = target().service(spec(), "img@sha256:" + "a" * 64).template.annotations["cloud-deploy.io/config"]
    same = target().service(spec(), "img@sha256:" + "a" * 64).template.annotations["cloud-deploy.io/config"]
    other_image = target().service(spec(), "img@sha256:" + "b" * 64).template.annotations["cloud-deploy.io/config"]
    other_env = target().service(spec(env={"A": "1"}), "img@sha256:" + "a" * 64).template.annotations["cloud-deploy.io/config"]
    assert one == same and len({one, other_image, other_env}) == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"cloud_deploy": {"region": "Seoul"}}, "extra.cloud_deploy: region"),
        ({"cloud_deploy": {"run_endpoint": "http://x/; rm"}}, "extra.cloud_deploy: run_endpoint"),
        ({"cloud_deploy": {"unknown": 1}}, "extra.cloud_deploy: unknown"),
    ],
)
def test_bad_connection_defaults_name_the_connection_and_key(monkeypatch, extra, message):
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps({"conn_type": "google_cloud_platform", "extra": extra}))
    with pytest.raises(GcpSettingsError) as error:
        GcpSession().defaults
    assert "'google_cloud_default'" in str(error.value) and message in str(error.value)


def test_without_project_or_region_the_error_says_where_to_set_them(monkeypatch, tmp_path):
    key = tmp_path / "key.json"
    key.write_text("{}")
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps({"conn_type": "google_cloud_platform", "extra": {}}))
    with pytest.raises(GcpSettingsError, match="set deploy.cloudrun.region or extra.cloud_deploy.region"):
        GcpSession().region()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with pytest.raises(GcpSettingsError, match="no usable Google credentials"):
        GcpSession().project_id()


def test_render_shows_the_service_without_calling_google(capsys):
    """Both API endpoints are a closed port: any call would fail the render."""
    assert main(["render", str(REPO / "samples" / "gcp-cloudrun")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "# gcp-cloudrun target resources" in out
    for needle in ('"parent": "projects/tango-testbed/locations/asia-northeast3"', '"startupProbe"',
                   '"memory": "512Mi"', '"invokers": [\n    "allUsers"'):
        assert needle in out, out


def test_render_of_a_size_cloud_run_refuses_exits_2_with_the_reason(tmp_path, capsys):
    shutil.copytree(REPO / "samples" / "gcp-cloudrun", tmp_path / "p")
    spec_file = tmp_path / "p" / "deployment.yaml"
    spec_file.write_text(spec_file.read_text().replace("cpu: 1 ", "cpu: 3 "))
    assert main(["render", str(tmp_path / "p")]) == 2
    assert "cpu must be one of (1, 2, 4, 6, 8) on Cloud Run, not 3" in capsys.readouterr().err
