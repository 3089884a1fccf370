"""The layer builder's plan, without an engine: which steps share a layer and what each layer ships."""

from __future__ import annotations

import io
import tarfile

from cloud_deploy_provider.builder import _archive, _layers
from cloud_deploy_provider.settings import BuildSettings
from tests.helpers import BUILD_SPEC as SPEC, plan_for


def test_what_changes_rarely_is_committed_below_what_changes_often(project, tmp_path):  # noqa: F811
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    plan = plan_for(project, settings=BuildSettings(ca_bundle=bundle))
    layers = [[step.line.split(" ", 1)[0] for _, step in layer.steps] for layer in _layers(plan)]
    assert layers == [
        ["ENV", "COPY", "COPY", "ARG", "ARG", "ARG"],  # the installation's CA bundle: shared by every project
        ["COPY", "RUN"],  # apt packages
        ["COPY", "RUN"],  # pip packages
        ["WORKDIR", "COPY"],  # model weights
        ["COPY", "ENTRYPOINT"],  # the code, and the image's settings
    ]
    assert sum(len(layer) for layer in layers) == len(plan.steps) - 1, "every step but FROM is in a layer"


def test_a_group_that_changes_no_file_joins_the_next(project):  # noqa: F811
    plan = plan_for(project, text=SPEC.replace("weight_file: model.bin, ", ""))
    layers = [[step.line.split(" ", 1)[0] for _, step in layer.steps] for layer in _layers(plan)]
    assert layers[0] == ["ENV", "COPY", "RUN"], "no CA bundle: ENV alone is no layer of its own"
    assert layers[-1] == ["WORKDIR", "COPY", "ENTRYPOINT"], "no weights: the code layer creates the work dir"


def test_a_layer_ships_its_files_root_owned_with_the_context_modes_and_no_parent_directories(project):  # noqa: F811
    plan = plan_for(project)
    code = next(layer for layer in _layers(plan) if any(s.line.startswith("COPY app/") for _, s in layer.steps))
    copies = [("/workspace/" + target, source) for _, step in code.steps for target, source in step.copies]
    with tarfile.open(fileobj=io.BytesIO(_archive(plan, copies, []))) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert set(members) == {"workspace/server.py", "workspace/run.sh"}, "a directory entry would replace a symlink"
    assert members["workspace/run.sh"].mode == 0o755 and members["workspace/server.py"].mode == 0o644
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members.values())


def test_a_work_dir_with_no_file_in_it_is_still_created():
    plan = type("Plan", (), {"files": {}, "executable": frozenset()})()
    with tarfile.open(fileobj=io.BytesIO(_archive(plan, [], ["/srv/app"]))) as tar:
        (member,) = tar.getmembers()
    assert (member.name, member.isdir(), member.mode) == ("srv/app", True, 0o755)
