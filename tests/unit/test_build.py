"""Dockerfile rendering: layer order, exec forms, no spec value in a shell line, deterministic keys."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from cloud_deploy_provider.build import ProjectFileError
from cloud_deploy_provider.catalog import CatalogError, load_catalog
from cloud_deploy_provider.settings import BuildSettings
from cloud_deploy_provider.spec import parse_spec_text
from tests.helpers import BUILD_SPEC as SPEC, plan_for

REPO = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(REPO / "samples" / "catalog.local.yaml")



def test_layers_come_in_rebuild_friendly_order(project):
    lines = plan_for(project).dockerfile.splitlines()
    order = [next(i for i, line in enumerate(lines) if line.startswith(prefix)) for prefix in (
        "FROM cloud-deploy/debian-python:bookworm", "COPY .cloud-deploy/apt-packages.txt", "RUN [\"/bin/sh\"",
        "COPY .cloud-deploy/requirements.txt", "RUN [\"python3\", \"-m\", \"pip\"", "WORKDIR /workspace",
        "COPY weights/", "COPY app/", "ENTRYPOINT")]
    assert order == sorted(order)


def test_spec_values_reach_files_and_exec_form_never_a_shell_line(project):
    plan = plan_for(project)
    assert plan.files[".cloud-deploy/apt-packages.txt"] == b"curl\nlibgomp1\n"
    requirements = plan.files[".cloud-deploy/requirements.txt"].decode().splitlines()
    assert requirements == ['requests>=2; python_version > "3"', "numpy==1.26.4"]
    entrypoint = next(line for line in plan.dockerfile.splitlines() if line.startswith("ENTRYPOINT"))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == ["python3", "server.py", "--name", "it's $HOME"]
    assert "curl" not in plan.dockerfile and "numpy" not in plan.dockerfile


def test_weights_ship_in_their_own_layer_and_hidden_files_and_the_yaml_do_not_ship(project):
    files = plan_for(project).files
    assert "weights/model.bin" in files and "app/model.bin" not in files
    assert {"app/server.py", "app/run.sh"} <= set(files)
    assert not any(".git" in name or name.endswith("deployment.yaml") for name in files)


def test_build_key_is_deterministic_and_changes_with_code_and_base(project):
    first, second = plan_for(project), plan_for(project)
    assert first.key() == second.key() and first.context_tar() == second.context_tar()
    assert first.key("sha256:aaa") != first.key("sha256:bbb")
    (project / "server.py").write_text("print('changed')\n")
    assert plan_for(project).key() != first.key()


def test_context_tar_is_normalised(project):
    with tarfile.open(fileobj=io.BytesIO(plan_for(project).context_tar())) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {m.mtime for m in members} == {0} and {m.uid for m in members} == {0}
    assert next(m for m in members if m.name == "app/run.sh").mode == 0o755


def test_ca_bundle_and_package_indexes_are_build_settings(project, tmp_path_factory):
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = BuildSettings(ca_bundle=bundle, pip_index_url="https://pypi.example/simple",
                             pip_extra_index_urls=("https://extra.example/simple",), apt_mirror="http://mirror.example/debian")
    plan = plan_for(project, settings=settings)
    assert plan.files[".cloud-deploy/ca-bundle.pem"] == bundle.read_bytes()
    assert "ARG PIP_CERT=/etc/cloud-deploy/ca-bundle.pem" in plan.dockerfile
    assert "ENV PIP_CERT" not in plan.dockerfile, "the proxy CA must not leak into the runtime environment"
    requirements = plan.files[".cloud-deploy/requirements.txt"].decode().splitlines()
    assert requirements[:2] == ["--index-url https://pypi.example/simple", "--extra-index-url https://extra.example/simple"]
    assert plan.files[".cloud-deploy/apt-mirror"] == b"http://mirror.example/debian"


def test_pre_exec_runs_through_the_launcher_without_a_shell(project):
    text = SPEC.replace("entrypoint:", "pre_exec: [[python3, convert.py, --fp16], [echo, 'a; rm -rf /']]\n  entrypoint:")
    plan = plan_for(project, text)
    launch = json.loads(plan.files[".cloud-deploy/launch.json"])
    assert launch["pre_exec"] == [["python3", "convert.py", "--fp16"], ["echo", "a; rm -rf /"]]
    assert 'ENTRYPOINT ["python3", "/opt/cloud-deploy/launch.py"]' in plan.dockerfile


def test_a_symlink_out_of_the_project_is_refused(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("secret")
    (project / "link.txt").symlink_to(outside)
    with pytest.raises(ProjectFileError, match="link.txt: links outside"):
        plan_for(project)


def test_no_fitting_base_image_is_a_clear_error(project):
    text = SPEC.replace("python==3.11", "python==3.8").replace("build:\n", "build:\n  accelerator: gpu:nvidia\n")
    with pytest.raises(CatalogError, match="no base image .* fits accelerator=gpu, vendor=nvidia, python_version=3.8"):
        plan_for(project, text)


def test_default_catalog_picks_the_most_specific_entry():
    catalog = load_catalog()
    cpu = parse_spec_text("build: {components: {libs: [python==3.9]}}\ndeploy: {type: docker, service_name: s}")
    gpu = parse_spec_text("build: {accelerator: gpu:nvidia:a100:1, components: {engine: pytorch}}\n"
                          "deploy: {type: docker, service_name: s}")
    assert catalog.choose(cpu).image == "python:3.9-slim"
    assert catalog.choose(gpu).image.startswith("pytorch/pytorch:")


def test_malformed_catalog_entries_are_rejected(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text("images:\n  - {image: 'Bad Image'}\n")
    with pytest.raises(CatalogError, match="not an image reference"):
        load_catalog(path)
    path.write_text("images:\n  - {image: python:3.11-slim, acclerator: cpu}\n")
    with pytest.raises(CatalogError, match="unknown keys"):
        load_catalog(path)
