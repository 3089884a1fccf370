"""Messages about a project name its files relative to the shared root, never by the server's paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.pipeline import load_project
from cloud_deploy_provider.spec import SpecError
from cloud_deploy_provider.workspace import WorkspaceError, shown_as_shared, shown_path, spec_path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path) -> Path:
    shared = tmp_path / "srv" / "tango" / "shared"
    shutil.copytree(REPO / "samples" / "hello", shared / "common" / "u1" / "p")
    return shared


def spec_file(root: Path) -> Path:
    return root / "common" / "u1" / "p" / "deployment.yaml"


def test_a_spec_error_names_the_yaml_relative_to_the_shared_root(root):
    spec_file(root).write_text("build:\n  accelerator: cpu\n  - oops\n")
    with pytest.raises(SpecError) as caught:
        load_project("u1", "p", root)
    assert str(caught.value).startswith("common/u1/p/deployment.yaml: line 3, column 3: ")
    assert str(root.parent) not in str(caught.value)


def test_an_empty_yaml_names_it_relative_to_the_shared_root(root):
    spec_file(root).write_text("")
    with pytest.raises(SpecError, match="^common/u1/p/deployment.yaml: the document is empty$"):
        load_project("u1", "p", root)


def test_a_missing_optional_file_names_no_server_path(root):
    (spec_file(root).parent / "model.json").unlink()
    with pytest.raises(SpecError) as caught:
        load_project("u1", "p", root)
    assert str(caught.value) == "optional.weight_file: 'model.json' not found in the project directory"


@pytest.mark.parametrize(
    ("user", "project", "prepare", "expected"),
    [
        ("u1", "nope", None, "project folder not found: common/u1/nope"),
        ("u1", "p", lambda r: spec_file(r).unlink(), "deployment.yaml not found in common/u1/p"),
        ("u1", "file", lambda r: (r / "common" / "u1" / "file").write_text(""),
         "project folder common/u1/file is not a directory"),
        ("u1", "out", lambda r: (r / "common" / "u1" / "out").symlink_to(r.parent),
         "project folder common/u1/out points outside common"),
    ],
)
def test_workspace_errors_name_folders_relative_to_the_shared_root(root, user, project, prepare, expected):
    if prepare:
        prepare(root)
    with pytest.raises(WorkspaceError) as caught:
        spec_path(ProjectRef(user, project), root)
    assert str(caught.value) == expected


def test_load_project_collects_the_legacy_forms_it_read(root):
    text = spec_file(root).read_text().replace("    libs: [python==3.11]\n",
                                               "    libs: [python==3.11]\n    custom_packages: {atp: [hello]}\n")
    spec_file(root).write_text(text)
    loaded = load_project("u1", "p", root)
    assert loaded.spec.build.components.custom_packages.apt == ["hello"]
    assert [warning.split(":")[0] for warning in loaded.warnings] == ["build.components.custom_packages.atp"]


def test_shown_paths(root, tmp_path):
    assert shown_path(ProjectRef("u1", "p"), "deployment.yaml") == "common/u1/p/deployment.yaml"
    assert shown_as_shared(spec_file(root), root) == "common/u1/p/deployment.yaml"
    assert shown_as_shared(tmp_path / "elsewhere.yaml", root) == str(tmp_path / "elsewhere.yaml")
