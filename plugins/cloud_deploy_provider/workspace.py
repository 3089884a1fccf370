"""The shared folder TANGO hands projects over in: ``<root>/common/<user_id>/<project_id>/``."""

from __future__ import annotations

import os
from pathlib import Path

from cloud_deploy_provider.identity import ProjectRef

SPEC_FILE_NAME = "deployment.yaml"
DEFAULT_SHARED_ROOT = "/shared"


class WorkspaceError(ValueError):
    """The project folder is missing or not where it must be."""


def shared_root() -> Path:
    return Path(os.environ.get("CLOUD_DEPLOY_SHARED_ROOT", DEFAULT_SHARED_ROOT))


def project_dir(ref: ProjectRef, root: Path | None = None) -> Path:
    """The project's folder, checked to stay under ``<root>/common`` after resolving symlinks."""
    common = (root or shared_root()) / "common"
    candidate = common / ref.user_id / ref.project_id
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise WorkspaceError(f"project folder not found: {candidate}") from None
    if not resolved.is_relative_to(common.resolve()):
        raise WorkspaceError(f"project folder {candidate} points outside {common}")
    if not resolved.is_dir():
        raise WorkspaceError(f"project folder {candidate} is not a directory")
    return resolved


def spec_path(ref: ProjectRef, root: Path | None = None) -> Path:
    path = project_dir(ref, root) / SPEC_FILE_NAME
    if not path.is_file():
        raise WorkspaceError(f"{SPEC_FILE_NAME} not found in {path.parent}")
    return path
