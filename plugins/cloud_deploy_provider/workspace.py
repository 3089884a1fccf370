"""The shared folder TANGO hands projects over in: ``<root>/common/<user_id>/<project_id>/``.

Messages name paths relative to the shared root (``common/u1/p/deployment.yaml``): they reach
TANGO's users, to whom the server's own paths mean nothing.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from cloud_deploy_provider.errors import UserError
from cloud_deploy_provider.identity import ProjectRef

SPEC_FILE_NAME = "deployment.yaml"
DEFAULT_SHARED_ROOT = "/shared"


class WorkspaceError(UserError):
    """The project folder is missing or not where it must be."""


def shared_root() -> Path:
    return Path(os.environ.get("CLOUD_DEPLOY_SHARED_ROOT", DEFAULT_SHARED_ROOT))


def shown_path(ref: ProjectRef, *names: str) -> str:
    """How messages name the project's folder (or a file in it): ``common/<user_id>/<project_id>[/names]``."""
    return str(PurePosixPath("common", ref.user_id, ref.project_id, *names))


def shown_as_shared(path: Path, root: Path | None = None) -> str:
    """``path`` relative to the shared root when it lies under it, else as given (a path the caller typed)."""
    base = root or shared_root()
    for candidate, root_form in ((path, base), (path.absolute(), base.absolute())):
        if candidate.is_relative_to(root_form):
            return candidate.relative_to(root_form).as_posix()
    return str(path)


def project_dir(ref: ProjectRef, root: Path | None = None) -> Path:
    """The project's folder, checked to stay under ``<root>/common`` after resolving symlinks."""
    common = (root or shared_root()) / "common"
    candidate = common / ref.user_id / ref.project_id
    shown = shown_path(ref)
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise WorkspaceError(f"project folder not found: {shown}") from None
    if not resolved.is_relative_to(common.resolve()):
        raise WorkspaceError(f"project folder {shown} points outside common")
    if not resolved.is_dir():
        raise WorkspaceError(f"project folder {shown} is not a directory")
    return resolved


def spec_path(ref: ProjectRef, root: Path | None = None) -> Path:
    path = project_dir(ref, root) / SPEC_FILE_NAME
    if not path.is_file():
        raise WorkspaceError(f"{SPEC_FILE_NAME} not found in {shown_path(ref)}")
    return path
