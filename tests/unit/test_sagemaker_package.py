"""deploy.tar.gz packing rules and the endpoint status mapping of the aws-sagemaker target (no AWS)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from cloud_deploy_provider.targets._aws import AwsTargetError
from cloud_deploy_provider.targets.aws_sagemaker import endpoint_status, pack_model_data

URL = "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/e/invocations"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "models" / "detector" / "checkpoints").mkdir(parents=True)
    (root / "models" / "detector" / "label.txt").write_text("car\nplate\n")
    (root / "models" / "detector" / "checkpoints" / "net.pth").write_bytes(os.urandom(4096))
    (root / "model.json").write_text('{"name": "m"}')
    return root


def _pack(root: Path, paths: list[str]) -> bytes:
    out = io.BytesIO()
    pack_model_data(root, paths, out)
    return out.getvalue()


def _rejected(root: Path, paths: list[str]) -> str:
    with pytest.raises(AwsTargetError) as error:
        _pack(root, paths)
    return str(error.value)


def test_paths_stay_relative_to_the_project_folder(project):
    with tarfile.open(fileobj=io.BytesIO(_pack(project, ["models/detector", "model.json"])), mode="r:gz") as tar:
        assert tar.getnames() == [
            "model.json",
            "models/detector",
            "models/detector/checkpoints",
            "models/detector/checkpoints/net.pth",
            "models/detector/label.txt",
        ]
        assert all(member.uid == 0 and member.mtime == tar.getmember("model.json").mtime for member in tar)


def test_the_same_files_give_the_same_bytes(project):
    first = _pack(project, ["models", "model.json"])
    os.utime(project / "model.json", (1, 1))
    assert _pack(project, ["model.json", "models", "models/detector/label.txt"]) == first


def test_the_digest_is_the_sha256_of_the_archive(project):
    import hashlib

    out = io.BytesIO()
    digest = pack_model_data(project, ["model.json"], out)
    assert digest == hashlib.sha256(out.getvalue()).hexdigest()


def test_a_symlink_is_rejected_with_its_path(project):
    (project / "models" / "detector" / "latest.pth").symlink_to("checkpoints/net.pth")
    assert "'models/detector/latest.pth' is a symbolic link" in _rejected(project, ["models"])
    (project / "linked").symlink_to(project / "models")
    assert "'linked' is a symbolic link" in _rejected(project, ["linked/detector/label.txt"])


def test_a_hidden_file_or_folder_is_rejected_with_its_path(project):
    (project / "models" / "detector" / ".DS_Store").write_bytes(b"x")
    assert "'models/detector/.DS_Store' is hidden" in _rejected(project, ["models/detector"])
    (project / ".cache").mkdir()
    (project / ".cache" / "w.bin").write_bytes(b"x")
    assert "'.cache' is hidden" in _rejected(project, [".cache/w.bin"])


def test_a_path_escaping_the_project_folder_is_rejected(project):
    (project.parent / "secret.txt").write_text("no")
    assert "'../secret.txt' is outside the project folder" in _rejected(project, ["../secret.txt"])
    assert "'/etc/passwd' is outside the project folder" in _rejected(project, ["/etc/passwd"])


def test_a_missing_path_is_rejected(project):
    assert "'models/nope.bin' does not exist" in _rejected(project, ["models/nope.bin"])


@pytest.mark.parametrize(
    ("answer", "state", "words"),
    [
        ({"EndpointStatus": "InService"}, "running", "in service"),
        ({"EndpointStatus": "Creating"}, "starting", "Creating"),
        ({"EndpointStatus": "Updating"}, "starting", "Updating"),
        ({"EndpointStatus": "SystemUpdating"}, "starting", "SystemUpdating"),
        ({"EndpointStatus": "RollingBack"}, "starting", "RollingBack"),
        ({"EndpointStatus": "Failed", "FailureReason": "ping failed"}, "failed", "ping failed"),
        ({"EndpointStatus": "InService", "FailureReason": "bad image"}, "failed", "rolled back: bad image"),
        ({"EndpointStatus": "Deleting"}, "absent", "being deleted"),
    ],
)
def test_endpoint_states(answer, state, words):
    status = endpoint_status({"EndpointName": "e", "EndpointConfigName": "c", **answer}, "realtime", URL)
    assert status.state == state and words in status.message
    assert status.details["max_payload"] == "6 MB" and status.details["max_inference_time"] == "60 s"
    assert status.url == (URL if state == "running" else None)
