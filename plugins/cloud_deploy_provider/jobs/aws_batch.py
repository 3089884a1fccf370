"""Scheduled jobs on AWS Batch, through the ``aws-batch`` target's job API (:class:`BatchJob`): one job per run.

AWS Batch retries the job itself (``retries`` become ``attempts``) and stops each attempt at its timeout
(at least 60 s). A job definition has a ``command`` but no entrypoint, and Docker appends a command to the
image's ENTRYPOINT; so a job with a ``command`` that runs the project's own image (whose ENTRYPOINT is
``deploy.entrypoint``) runs from a copy of that image without ENTRYPOINT or CMD, pushed beside it in ECR
(tag ``cmd-`` and the image digest's start), and its command is the job definition's. A job's own ``image``
runs as given: there, as AWS Batch does, the command goes to the image's entrypoint if it has one.

The run ends by terminating the job if it is still active and deregistering its job definition.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar

from cloud_deploy_provider.accelerators import request_of
from cloud_deploy_provider.jobs.base import JobResult, JobRunner
from cloud_deploy_provider.spec import DeploymentSpec, Job
from cloud_deploy_provider.targets import ImageRef, TargetStatus
from cloud_deploy_provider.targets.aws_batch import MIN_START_MARGIN_SECONDS, BatchJob, BatchTarget

MIN_TIMEOUT_SECONDS = 60
COMMAND_TAG_PREFIX = "cmd-"


class BatchJobRunner(JobRunner):
    target: ClassVar[str] = "aws-batch"
    conn_id_parameter: ClassVar[str] = "aws_conn_id"

    @cached_property
    def batch(self) -> BatchTarget:
        return BatchTarget(self.project, self.log, conn_id=self.conn_id, registry_conn_id=self.registry_conn_id)

    def batch_job(self, spec: DeploymentSpec, job: Job) -> BatchJob:
        """The scheduled job as a Batch job: its command, env, sizes (else the deployment's), timeout and retries."""
        deploy, wanted = spec.deploy, job.resources
        return BatchJob(
            name=self.project.resource_name(f"job-{job.name}"), service=f"job-{job.name}",
            queue=self.batch.configured_queue(deploy.batch), command=job.command, env={**deploy.env, **job.env},
            cpu=wanted.cpu or deploy.resources.cpu, memory=wanted.memory or deploy.resources.memory,
            accelerators=request_of(**spec.build.accelerator.model_dump(), gpu=wanted.gpu or None),
            timeout_seconds=max(MIN_TIMEOUT_SECONDS, job.timeout_seconds), attempts=job.retries + 1,
            margin_seconds=max(deploy.readiness.timeout_seconds, MIN_START_MARGIN_SECONDS),
        )

    @classmethod
    def describe(cls, project: Any, spec: DeploymentSpec, job: Job) -> dict[str, Any]:
        """Reads the AWS connection's defaults; calls no AWS API."""
        runner = cls(project)
        return runner.batch.describe_job(runner.batch_job(spec, job), job.image or "<the pushed image, by digest>")

    def image(self, spec: DeploymentSpec, job: Job, built: ImageRef | None,
              registry: Callable[[], Any] = lambda: None) -> str:
        image = super().image(spec, job, built, registry)
        if job.image or not job.command:
            return image
        return self.without_entrypoint(built, registry())

    def without_entrypoint(self, built: ImageRef, registry: Any) -> str:
        """The project's image with no ENTRYPOINT or CMD, pushed beside it (once per image digest), by digest."""
        from docker.errors import ImageNotFound

        from cloud_deploy_provider.clients.docker_engine import engine_client
        from cloud_deploy_provider.engine import pull_image, push_image
        from cloud_deploy_provider.pipeline import registry_digest

        repository = built.reference.rsplit(":", 1)[0]
        tag = COMMAND_TAG_PREFIX + built.digest.split(":")[-1][:16]
        digest = registry_digest(registry, repository, tag)
        if digest is None:
            client, auth = engine_client(timeout=600), registry.auth_config()
            try:
                client.inspect_image(built.pinned)
            except ImageNotFound:
                pull_image(client, repository, built.digest, auth, self.log)
            container = client.create_container(built.pinned)["Id"]
            try:
                # ENTRYPOINT [""] is Docker's "no entrypoint" ([] would keep the parent's)
                client.commit(container, repository=repository, tag=tag, changes=['ENTRYPOINT [""]', "CMD []"])
            finally:
                client.remove_container(container, force=True)
            push_image(client, repository, tag, auth, self.log)
            digest = registry_digest(registry, repository, tag)
            self.log(f"pushed {repository}:{tag} ({digest}): the project's image without its entrypoint, so that "
                     "AWS Batch runs the job's command")
        return f"{repository}@{digest}"

    def begin(self, spec: DeploymentSpec, job: Job, image: str) -> dict[str, Any]:
        self.batch.submit(self.batch_job(spec, job), image)
        return {}

    def watch(self, spec: DeploymentSpec, job: Job, handle: dict[str, Any]) -> BatchJobWatch:
        return BatchJobWatch(self.batch, self.batch_job(spec, job))

    def deadline_seconds(self, spec: DeploymentSpec, job: Job) -> int:
        return self.batch.wait_seconds(self.batch_job(spec, job))

    def result_of(self, job: Job, watch: Any, outcome: str, status: dict[str, Any]) -> JobResult:
        exit_code = (status.get("details") or {}).get("exit_code")
        if outcome == "ready":
            exit_code = 0 if exit_code is None else exit_code
            return JobResult("completed", exit_code, [], timeout_seconds=job.timeout_seconds)
        message = status.get("message") or "the job's status could not be read"
        return JobResult("failed", exit_code, [], timed_out=outcome == "timeout", timeout_seconds=job.timeout_seconds,
                         reason=message)

    def end(self, spec: DeploymentSpec, job: Job, handle: dict[str, Any]) -> None:
        batch_job = self.batch_job(spec, job)
        self.batch.terminate_jobs(batch_job)
        self.batch.deregister_job_definitions(batch_job)


class BatchJobWatch:
    def __init__(self, batch: BatchTarget, job: BatchJob):
        self.batch, self.job = batch, job

    def status(self, spec: DeploymentSpec | None = None) -> TargetStatus:
        return self.batch.job_status(self.job)

    def tail(self) -> list[str]:
        """None passed on: a failed job's last CloudWatch lines are in its status message."""
        return []
