"""The gateway's stdout lines: one per change, stamped, naming the project, with a failure's reason on one line."""

from __future__ import annotations

import io

from cloud_deploy_provider.api.progress import printer, progress_line
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.status import DeploymentStatus, Status

PROJECT = ProjectRef("u1", "p")
NOON = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def line(after, before=None):
    return progress_line(PROJECT, before, after, now=NOON)


def test_each_stage_is_one_stamped_line_naming_user_and_project():
    assert line(DeploymentStatus(Status.STARTED, "queued")) == "2027-01-15T08:00:00Z u1/p started"
    assert line(DeploymentStatus(Status.BUILDING, "build")) == "2027-01-15T08:00:00Z u1/p building (build)"
    assert line(DeploymentStatus(Status.PREPARING, "wait_ready")).endswith("u1/p preparing (wait_ready)")
    assert line(DeploymentStatus(Status.RUNNING, "ready", url="http://h:1")).endswith("u1/p running at http://h:1")


def test_a_failure_names_its_stage_and_reason_on_one_line():
    failed = DeploymentStatus(Status.FAILED, "build", "Step 3/9 failed:\n  pip: no matching distribution\n")
    assert line(failed).endswith("u1/p failed at build: Step 3/9 failed: pip: no matching distribution")
    long = line(DeploymentStatus(Status.FAILED, "build", "x" * 1000))
    assert len(long) < 400 and long.endswith("…")


def test_a_stop_is_said():
    running = DeploymentStatus(Status.RUNNING, "ready")
    assert line(DeploymentStatus(Status.STOPPING, "stopping"), running).endswith("u1/p stopping")
    assert line(DeploymentStatus(Status.STOPPED, "stopped"), running).endswith("u1/p stopped (was running)")


def test_the_printer_writes_and_flushes_whole_lines():
    out = io.StringIO()
    printer(out)(PROJECT, None, DeploymentStatus(Status.STARTED, "queued"))
    assert out.getvalue().endswith("u1/p started\n")
