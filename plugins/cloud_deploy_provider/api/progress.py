"""One readable line per change of a project's status on the gateway's stdout.

TANGO's manager shows the docker logs of the container running its ``cloud_deploy`` compose
service next to each project, so this is where a TANGO user watches a deploy go through its
stages, sees why it failed, and sees it stop, without opening Airflow.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.status import DeploymentStatus, Status

MAX_REASON_CHARS = 300


def progress_line(project: ProjectRef, before: DeploymentStatus | None, after: DeploymentStatus | None,
                  now: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return f"{stamp} {project.user_id}/{project.project_id} {_what(before, after)}"


def _what(before: DeploymentStatus | None, after: DeploymentStatus | None) -> str:
    if after is None:
        return "forgotten (its runs were deleted)"
    word, stage = after.status.value, after.stage
    if after.status == Status.FAILED:
        return f"failed at {stage}: {_one_line(after.message or 'no reason recorded')}"
    if after.status == Status.RUNNING:
        return f"running at {after.url}" if after.url else "running"
    if after.status in (Status.STOPPED, Status.COMPLETED, Status.STOPPING, Status.STARTED):
        return word if after.status != Status.STOPPED or before is None else f"{word} (was {before.status.value})"
    detail = f": {_one_line(after.message)}" if after.message else ""
    return f"{word} ({stage}){detail}"


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 1] + "…"


def printer(stream: TextIO | None = None):
    """A deployment index listener that writes each change as one line (flushed: logs are read live)."""
    def write(project: ProjectRef, before: DeploymentStatus | None, after: DeploymentStatus | None) -> None:
        out = stream or sys.stdout
        out.write(progress_line(project, before, after) + "\n")
        out.flush()

    return write
