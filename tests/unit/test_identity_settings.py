from __future__ import annotations

import pytest

from cloud_deploy_provider.identity import InvalidIdentifier, ProjectRef
from cloud_deploy_provider.registries.oci import Registry, repository_for, split_reference
from cloud_deploy_provider.settings import BuildSettings, SettingsError


@pytest.mark.parametrize("bad", ["", "../x", "/etc", "a..b", "a/b", "a b", "-a", "a" * 65, "a~b", "ü", "a\nb", None])
def test_bad_identifiers_are_rejected(bad):
    with pytest.raises(InvalidIdentifier):
        ProjectRef(bad, "p")
    with pytest.raises(InvalidIdentifier):
        ProjectRef("u", bad)


def test_resource_names_are_valid_distinct_and_bounded():
    a = ProjectRef("Alice", "proj").resource_name("svc")
    b = ProjectRef("alice", "proj").resource_name("svc")
    long = ProjectRef("u" * 64, "p" * 64).resource_name("s" * 63)
    assert a != b and a.startswith("cd-alice-proj-svc-")
    assert len(long) <= 63 and long == long.lower()


def test_labels_identify_the_project():
    labels = ProjectRef("u", "p").labels("svc")
    assert labels["io.cloud-deploy.key"] == "u~p" and labels["io.cloud-deploy.service"] == "svc"


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("us-docker.pkg.dev/cloudrun/container/hello:latest", ("us-docker.pkg.dev", "cloudrun/container/hello", "latest")),
        ("localhost:5000/a/b", ("localhost:5000", "a/b", None)),
        ("library/python:3.11", (None, "library/python", "3.11")),
        ("bai-repo:7080/bai/atom-runtime:latest", ("bai-repo:7080", "bai/atom-runtime", "latest")),
    ],
)
def test_split_reference(reference, expected):
    assert split_reference(reference) == expected


def test_repository_is_rehomed_onto_the_configured_registry():
    project = ProjectRef("Alice", "P1")
    local = Registry("127.0.0.1:5000")
    assert repository_for("us-docker.pkg.dev/x/hello:latest", project, local) == "127.0.0.1:5000/x/hello"
    artifact_registry = Registry("us-docker.pkg.dev", namespace="my-project/cd-alice-p1-0a1b2c3d")
    assert repository_for(None, project, artifact_registry) == (
        "us-docker.pkg.dev/my-project/cd-alice-p1-0a1b2c3d/cloud-deploy/alice/p1"
    )
    assert repository_for("us-docker.pkg.dev/x/hello:latest", project, None) == "us-docker.pkg.dev/x/hello"
    assert repository_for(None, project, None) == "cloud-deploy/alice/p1"


def test_settings_reject_unusable_values(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUD_DEPLOY_PIP_INDEX_URL", "https://user:pw@index.example/simple")
    with pytest.raises(SettingsError, match="CLOUD_DEPLOY_PIP_INDEX_URL"):
        BuildSettings.from_env()
    monkeypatch.delenv("CLOUD_DEPLOY_PIP_INDEX_URL")
    monkeypatch.setenv("CLOUD_DEPLOY_BUILD_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(SettingsError, match="not a readable file"):
        BuildSettings.from_env()
    monkeypatch.delenv("CLOUD_DEPLOY_BUILD_CA_BUNDLE")
    monkeypatch.setenv("CLOUD_DEPLOY_BUILD_NETWORK", "host; rm")
    with pytest.raises(SettingsError, match="CLOUD_DEPLOY_BUILD_NETWORK"):
        BuildSettings.from_env()
