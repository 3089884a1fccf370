"""Scheduled batch jobs: one module per place a ``schedule.jobs`` entry runs, each a
:class:`~cloud_deploy_provider.jobs.base.JobRunner`, registered here like the deploy targets.

Adding a runner is one module and one line in ``RUNNERS``. The spec's job targets and the job
DAG's retry and timeout policy are read from that line; the operator drives every runner through
the same contract. This module imports nothing heavy: the spec and the DAG files read it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloud_deploy_provider.jobs.base import JobRunner


@dataclass(frozen=True)
class RegisteredRunner:
    """One job runner: what the spec and the DAG files may know of it without importing it.

    ``retries_itself``: the platform retries a failed job (``retries``) and stops it at its timeout, so
    Airflow must not retry the task too; ``timeout_per_attempt``: its timeout applies to each attempt
    (at least ``min_timeout_seconds``), not to the job as a whole; ``run_margin_seconds``: what the task
    may take beyond the job's own time, for pulling, starting and cleaning up; ``own_image_needs``: the
    ``deploy.type`` whose registry the runner can pull the project's own image from, with the reason
    (None: any registry the installation pushes to will do).
    """

    target: str
    implementation: str
    retries_itself: bool
    run_margin_seconds: int
    timeout_per_attempt: bool = False
    min_timeout_seconds: int = 1
    own_image_needs: tuple[str, str] | None = None


RUNNERS = (
    RegisteredRunner("docker", "docker:DockerJobRunner", retries_itself=False, run_margin_seconds=120),
    RegisteredRunner("kubernetes", "kubernetes:KubernetesJobRunner", retries_itself=True, run_margin_seconds=300),
    RegisteredRunner("aws-batch", "aws_batch:BatchJobRunner", retries_itself=True, run_margin_seconds=300,
                     timeout_per_attempt=True, min_timeout_seconds=60,
                     own_image_needs=("aws-batch", "the image is then pushed to ECR")),
)
JOB_RUNNERS: dict[str, RegisteredRunner] = {registered.target: registered for registered in RUNNERS}
JOB_TARGETS = tuple(JOB_RUNNERS)


def run_timeout_seconds(job: Any) -> int:
    """What the run task may take: the job's timeout (per attempt where the platform retries it) plus the margin."""
    runner = JOB_RUNNERS[job.target]
    attempts = job.retries + 1 if runner.timeout_per_attempt else 1
    return attempts * max(runner.min_timeout_seconds, job.timeout_seconds) + runner.run_margin_seconds


def job_runner_class(target: str) -> type[JobRunner]:
    module_name, _, class_name = JOB_RUNNERS[target].implementation.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)


def make_job_runner(project: Any, target: str, log: Any, connections: dict[str, str | None] | None = None,
                    **options: Any) -> JobRunner:
    """The runner of ``target`` for ``project``, with the connection it declares (see ``pipeline.make_target``)."""
    cls, connections = job_runner_class(target), connections or {}
    conn_id = connections.get(cls.conn_id_parameter) if cls.conn_id_parameter else None
    return cls(project, log=log, conn_id=conn_id, registry_conn_id=connections.get("registry_conn_id"), **options)
