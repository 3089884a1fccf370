"""`cloud-deploy validate` and `render`: they read and print, and touch nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from cloud_deploy_provider.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_validate_and_render_the_sample(capsys, monkeypatch):
    monkeypatch.setenv("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples" / "catalog.local.yaml"))
    assert main(["validate", str(REPO / "samples" / "hello")]) == 0
    assert "deploy.type docker, service hello" in capsys.readouterr().out
    assert main(["render", str(REPO / "samples" / "hello" / "deployment.yaml"), "--user-id", "u", "--project-id", "p"]) == 0
    out = capsys.readouterr().out
    assert "FROM cloud-deploy/debian-python:bookworm" in out and 'ENTRYPOINT ["python3", "server.py"]' in out
    assert '"8080/tcp": [\n      "127.0.0.1",\n      18080' in out and '"io.cloud-deploy.key": "u~p"' in out


def test_an_invalid_spec_exits_2_with_the_field(tmp_path, capsys):
    shutil.copytree(REPO / "samples" / "hello", tmp_path / "p")
    spec = tmp_path / "p" / "deployment.yaml"
    spec.write_text(spec.read_text().replace("service_host_port: 18080", "service_host_port: 0"))
    assert main(["validate", str(tmp_path / "p")]) == 2
    assert "deploy.network.service_host_port" in capsys.readouterr().err
