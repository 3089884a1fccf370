"""``deploy.network.service_host_ip``: TANGO's address, advertised by the docker target, unused elsewhere."""

from __future__ import annotations

import pytest

from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.pipeline import service_host_ip_note
from cloud_deploy_provider.settings import EngineSettings
from cloud_deploy_provider.spec import validate_spec_data
from cloud_deploy_provider.targets import target_class
from cloud_deploy_provider.targets.docker import DockerTarget

PROJECT = ProjectRef("u1", "p")


def spec(deploy_type: str = "docker", **network):
    return validate_spec_data({"build": {}, "deploy": {"type": deploy_type, "service_name": "svc",
                                                       "entrypoint": ["run.sh"], "network": network}})


def docker(publish_ip: str = "127.0.0.1") -> DockerTarget:
    return DockerTarget(PROJECT, log=lambda _: None, settings=EngineSettings(publish_ip=publish_ip))


@pytest.mark.parametrize(
    ("publish_ip", "host_ip", "advertised", "probed"),
    [
        ("127.0.0.1", "1.2.3.4", "http://1.2.3.4:8890", "http://127.0.0.1:8890"),
        ("0.0.0.0", "1.2.3.4", "http://1.2.3.4:8890", "http://127.0.0.1:8890"),
        ("10.0.0.7", None, "http://10.0.0.7:8890", "http://10.0.0.7:8890"),
        ("0.0.0.0", None, "http://127.0.0.1:8890", "http://127.0.0.1:8890"),
        ("127.0.0.1", "2001:db8::1", "http://[2001:db8::1]:8890", "http://127.0.0.1:8890"),
    ],
)
def test_docker_advertises_service_host_ip_and_probes_the_bound_address(publish_ip, host_ip, advertised, probed):
    network = {"service_host_port": 8890, **({"service_host_ip": host_ip} if host_ip else {})}
    target, given = docker(publish_ip), spec(**network)
    assert (target.url(given), target.probe_url(given)) == (advertised, probed)


def test_docker_publishes_on_the_configured_address_whatever_service_host_ip_says():
    config = docker().container_config(spec(service_host_ip="1.2.3.4", service_host_port=8890), "img")
    assert config["ports"] == {"8890/tcp": ["127.0.0.1", 8890]}
    assert config == docker().container_config(spec(service_host_port=8890), "img"), "the URL only, not the container"


def test_the_validate_note_says_what_service_host_ip_does_per_target():
    given = spec(service_host_ip="1.2.3.4", service_host_port=8890)
    assert service_host_ip_note(docker(), given) == (
        "deploy.network.service_host_ip 1.2.3.4: advertised in the service URL")
    cloud = spec("gcp-cloudrun", service_host_ip="1.2.3.4", service_host_port=8890)
    assert service_host_ip_note(target_class("gcp-cloudrun")(PROJECT), cloud) == (
        "deploy.network.service_host_ip 1.2.3.4: not used by gcp-cloudrun, whose service URL is the address "
        "the target gives it")
    assert service_host_ip_note(docker(), spec(service_host_port=8890)) is None


@pytest.mark.parametrize("deploy_type", ["aws-ecs", "aws-sagemaker", "aws-batch", "gcp-cloudrun", "ktc",
                                         "compute-session", "kubernetes"])
def test_only_the_docker_target_advertises_it(deploy_type):
    assert not getattr(target_class(deploy_type), "advertises_service_host_ip", False)
    assert target_class("docker").advertises_service_host_ip
