"""The ``aws-batch`` target: a job definition running the image by digest, and one job per deploy.

A deploy registers the job definition (a new revision only when its content changed) and submits
one job to the queue; the deploy DAG then waits until the job finished, so a successful run means
the job SUCCEEDED. While a job of the project is still active, deploying again submits nothing.

The job is named from the project and tagged with it; status and stop look the project's jobs up
by that name on the queue and act only on jobs and job definitions carrying its tag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from botocore.exceptions import ClientError

from cloud_deploy_provider.accelerators import AcceleratorRequest, batch_resources
from cloud_deploy_provider.clients import LOG_TAIL_LINES, last_lines, poll_until
from cloud_deploy_provider.identity import LABEL_KEY, ProjectRef
from cloud_deploy_provider.spec import DeploymentSpec
from cloud_deploy_provider.targets import DeployResult, ImageRef, TargetStatus
from cloud_deploy_provider.targets._aws import AwsTarget, AwsTargetError
from cloud_deploy_provider.targets.base import CONFIG_LABEL

LABEL_JOB_ID = "io.cloud-deploy.job-id"
DEFAULT_VCPUS = 1
DEFAULT_MEMORY_MB = 2048
DEFAULT_TIMEOUT_SECONDS = 3600
# Beyond the job's own timeout, how long a deploy waits for it to be scheduled and started.
MIN_START_MARGIN_SECONDS = 600
DEFAULT_LOG_GROUP = "/aws/batch/job"
STOP_WAIT_SECONDS = 120
STOP_REASON = "cloud-deploy stop"

ACTIVE_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


@dataclass(frozen=True)
class BatchJob:
    """One AWS Batch job said explicitly: what the job API of :class:`BatchTarget` takes, from a deployment
    (:meth:`BatchTarget.batch_job`) or from a scheduled job (the ``aws-batch`` job runner).

    ``command`` is the job definition's command (None: the image's own entrypoint and command run);
    ``margin_seconds``: beyond every attempt's timeout, how long a wait allows for queueing and start.
    """

    name: str
    service: str
    queue: str | None
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cpu: float | None = None
    memory: int | None = None
    accelerators: AcceleratorRequest | None = None
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    attempts: int = 1
    margin_seconds: int = MIN_START_MARGIN_SECONDS


class BatchTarget(AwsTarget):
    type: ClassVar[str] = "aws-batch"
    stop_needs: ClassVar[str] = "the job queue and job name"

    # ------------------------------------------------------------------ what it would create

    def batch_job(self, spec: DeploymentSpec) -> BatchJob:
        """The deployment as one Batch job: the image's ENTRYPOINT (deploy.entrypoint) runs it, so no command."""
        batch, resources = spec.deploy.batch, spec.deploy.resources
        return BatchJob(
            name=self.name(spec), service=spec.deploy.service_name, queue=self.configured_queue(batch),
            env=dict(spec.deploy.env), cpu=resources.cpu, memory=resources.memory,
            accelerators=spec.accelerator_request,
            timeout_seconds=(batch.timeout_seconds if batch else None) or DEFAULT_TIMEOUT_SECONDS,
            attempts=batch.attempts if batch else 1,
            margin_seconds=max(spec.deploy.readiness.timeout_seconds, MIN_START_MARGIN_SECONDS),
        )

    def configured_queue(self, batch: Any) -> str | None:
        """``deploy.batch.job_queue`` (or a job's), else the AWS connection's ``batch_job_queue``."""
        return (batch.job_queue if batch else None) or self.client.defaults.batch_job_queue

    @staticmethod
    def job_queue(job: BatchJob) -> str:
        if not job.queue:
            raise AwsTargetError(
                "aws-batch: no job queue; set deploy.batch.job_queue or extra.cloud_deploy.batch_job_queue "
                "on the AWS connection"
            )
        return job.queue

    def ready_timeout_seconds(self, spec: DeploymentSpec) -> int:
        return self.wait_seconds(self.batch_job(spec))

    @staticmethod
    def wait_seconds(job: BatchJob) -> int:
        """Every attempt may run to the job timeout; the margin covers queueing and container start."""
        return job.attempts * job.timeout_seconds + job.margin_seconds

    @staticmethod
    def resource_requirements(job: BatchJob) -> list[dict[str, str]]:
        vcpus = job.cpu or DEFAULT_VCPUS
        if vcpus != math.floor(vcpus):
            raise AwsTargetError(f"aws-batch: cpu must be a whole number of vCPUs on EC2 compute, not {vcpus:g}")
        requirements = [
            {"type": "VCPU", "value": str(int(vcpus))},
            {"type": "MEMORY", "value": str(job.memory or DEFAULT_MEMORY_MB)},
        ]
        accelerators = batch_resources(job.accelerators) if job.accelerators else {}
        requirements += [{"type": kind, "value": str(count)} for kind, count in accelerators.items()]
        return requirements

    @staticmethod
    def environment(job: BatchJob) -> list[dict[str, str]]:
        reserved = sorted(name for name in job.env if name.startswith("AWS_BATCH"))
        if reserved:
            raise AwsTargetError(f"aws-batch: env names starting with AWS_BATCH are reserved: {', '.join(reserved)}")
        return [{"name": key, "value": value} for key, value in sorted(job.env.items())]

    def job_definition(self, job: BatchJob, image: str) -> dict[str, Any]:
        container: dict[str, Any] = {
            "image": image,
            "resourceRequirements": self.resource_requirements(job),
            "environment": self.environment(job),
        }
        if job.command:
            container["command"] = list(job.command)
        return {
            "jobDefinitionName": job.name,
            "type": "container",
            "containerProperties": container,
            "timeout": {"attemptDurationSeconds": job.timeout_seconds},
            "retryStrategy": {"attempts": job.attempts},
            "propagateTags": True,
        }

    def submit_request(self, job: BatchJob, job_definition: str) -> dict[str, Any]:
        return {
            "jobName": job.name,
            "jobQueue": self.job_queue(job),
            "jobDefinition": job_definition,
            "tags": self.service_labels(job.service),
            "propagateTags": True,
        }

    @classmethod
    def describe(cls, project: ProjectRef, spec: DeploymentSpec, settings: Any = None) -> dict[str, Any]:
        """Reads the AWS connection's defaults; calls no AWS API."""
        target = cls(project)
        return target.describe_job(target.batch_job(spec), "<the pushed image, by digest>")

    def describe_job(self, job: BatchJob, image: str) -> dict[str, Any]:
        return {
            "jobDefinition": self.job_definition(job, image),
            "submitJob": self.submit_request(job, "<the job definition>"),
            "waitSeconds": self.wait_seconds(job),
        }

    # ------------------------------------------------------------------ deploy

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        resources, submitted = self.submit(self.batch_job(spec), image.pinned)
        return DeployResult(self.type, resources, changed=submitted)

    def submit(self, job: BatchJob, image: str) -> tuple[dict[str, str], bool]:
        """Register the job definition (a new revision only when it changed) and submit the job, unless one of
        this name is still active; returns the job's resources (queue, definition, name, id) and whether it
        was submitted now."""
        definition = self.job_definition(job, image)
        request = self.submit_request(job, "")
        self.check_queue(request["jobQueue"])
        active = [found for found in self.jobs(job) if found["status"] in ACTIVE_STATES]
        if active:
            found = active[0]
            self.log(f"job {found['jobName']} ({found['jobId']}) is still {found['status']}: no second job submitted "
                     "(stop the deployment to run a changed one now)")
            return self.resources(request["jobQueue"], found.get("jobDefinition", ""), found), False
        request["jobDefinition"] = self.ensure_job_definition(job, definition)
        submitted = self.aws("batch").submit_job(**request)
        self.log(f"submitted job {submitted['jobName']} ({submitted['jobId']}) to queue {request['jobQueue']}")
        self.tag_job_id(submitted)
        return self.resources(request["jobQueue"], request["jobDefinition"], submitted), True

    def tag_job_id(self, job: dict[str, Any]) -> None:
        """Best effort: the job is submitted and runs whether or not this tag can be added."""
        try:
            self.aws("batch").tag_resource(resourceArn=job["jobArn"], tags={LABEL_JOB_ID: job["jobId"]})
        except ClientError as error:
            self.log(f"could not tag job {job['jobId']} with its id: {error}")

    @staticmethod
    def resources(queue: str, job_definition: str, job: dict[str, Any]) -> dict[str, str]:
        return {
            "job_queue": queue,
            "job_definition": job_definition,
            "job_name": job["jobName"],
            "job_id": job["jobId"],
        }

    def preflight(self, spec: DeploymentSpec) -> str:
        """Run by the validate task: sizes, env and the queue are checked before anything is built."""
        job = self.batch_job(spec)
        self.job_definition(job, "<image>")
        self.check_queue(self.job_queue(job))
        return "sizes, env and job queue"

    def check_queue(self, queue: str) -> None:
        """Fail before registering anything when the queue is missing or cannot take jobs."""
        found = self.aws("batch").describe_job_queues(jobQueues=[queue])["jobQueues"]
        if not found:
            raise AwsTargetError(f"aws-batch: job queue {queue} does not exist in {self.client.region}")
        state, status = found[0].get("state"), found[0].get("status")
        if state != "ENABLED" or status in ("DELETING", "DELETED"):
            raise AwsTargetError(f"aws-batch: job queue {queue} cannot take jobs (state {state}, status {status})")

    def ensure_job_definition(self, job: BatchJob, definition: dict[str, Any]) -> str:
        """The latest revision when it has this content, else a new revision."""
        config_hash = self.config_hash(definition)
        current = self.job_definitions(job)
        latest = max(current, key=lambda d: d["revision"]) if current else None
        if latest and latest.get("tags", {}).get(CONFIG_LABEL) == config_hash:
            return latest["jobDefinitionArn"]
        tags = {**self.service_labels(job.service, created=True), CONFIG_LABEL: config_hash}
        registered = self.aws("batch").register_job_definition(**definition, tags=tags)
        self.log(f"registered job definition {registered['jobDefinitionName']}:{registered['revision']}")
        return registered["jobDefinitionArn"]

    def job_definitions(self, job: BatchJob) -> list[dict[str, Any]]:
        """Active revisions of this project's job definition that carry its tag."""
        batch, name = self.aws("batch"), job.name
        found = []
        for page in batch.get_paginator("describe_job_definitions").paginate(jobDefinitionName=name, status="ACTIVE"):
            found += page["jobDefinitions"]
        return [d for d in found if d["jobDefinitionName"] == name and d.get("tags", {}).get(LABEL_KEY) == self.owner]

    def jobs(self, job: BatchJob) -> list[dict[str, Any]]:
        """This project's jobs on the queue, newest first; a JOB_NAME filter lists jobs in every state."""
        batch, name, queue = self.aws("batch"), job.name, job.queue
        if not queue:
            return []
        summaries = []
        pages = batch.get_paginator("list_jobs").paginate(
            jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}]
        )
        try:
            for page in pages:
                summaries += [job for job in page["jobSummaryList"] if job["jobName"] == name]
        except ClientError:
            if batch.describe_job_queues(jobQueues=[queue])["jobQueues"]:
                raise
            return []
        owned = {job["jobId"] for job in self.describe_jobs([s["jobId"] for s in summaries]) if self.is_ours(job)}
        return sorted((s for s in summaries if s["jobId"] in owned), key=lambda s: s.get("createdAt", 0), reverse=True)

    def describe_jobs(self, job_ids: list[str]) -> list[dict[str, Any]]:
        batch, described = self.aws("batch"), []
        for start in range(0, len(job_ids), 100):
            described += batch.describe_jobs(jobs=job_ids[start : start + 100])["jobs"]
        return described

    def is_ours(self, job: dict[str, Any]) -> bool:
        return job.get("tags", {}).get(LABEL_KEY) == self.owner

    # ------------------------------------------------------------------ status

    def status(self, spec: DeploymentSpec) -> TargetStatus:
        return self.job_status(self.batch_job(spec))

    def job_status(self, batch_job: BatchJob) -> TargetStatus:
        """``starting`` while the newest job of this name is active, then ``completed`` or ``failed``."""
        jobs = self.jobs(batch_job)
        if not jobs:
            return TargetStatus("absent", message=f"no AWS Batch job {batch_job.name} on queue {self.job_queue(batch_job)}")
        summary = jobs[0]
        job = self.describe_jobs([summary["jobId"]])[0]
        state, what = job["status"], f"AWS Batch job {job['jobName']} ({job['jobId']})"
        details = {"job_id": job["jobId"], "job_queue": self.job_queue(batch_job), "job_status": state}
        if state in ACTIVE_STATES:
            return TargetStatus("starting", message=f"{what} is {state}", details=details)
        if state == "SUCCEEDED":
            return TargetStatus("completed", message=f"{what} succeeded", details=details)
        # The summary was listed before the job was described: read it again now that the job has ended.
        summary = next((j for j in self.jobs(batch_job) if j["jobId"] == job["jobId"]), summary)
        details["exit_code"] = _exit_code(job, summary)
        return TargetStatus("failed", message=self.failure_message(what, job, summary), details=details)

    def failure_message(self, what: str, job: dict[str, Any], summary: dict[str, Any]) -> str:
        attempt = (job.get("attempts") or [{}])[-1].get("container", {})
        exit_code = _exit_code(job, summary)
        parts = [f"{what} failed"]
        reasons = [r for r in (job.get("statusReason"), attempt.get("reason")) if r]
        if reasons:
            parts.append(": " + "; ".join(reasons))
        if exit_code is not None:
            parts.append(f" (exit code {exit_code})")
        lines = self.last_log_lines(job, attempt)
        if lines:
            parts.append("\nlast log lines:\n" + "\n".join(lines))
        return "".join(parts)

    def last_log_lines(self, job: dict[str, Any], attempt: dict[str, Any]) -> list[str]:
        """The job's last CloudWatch log lines, when the awslogs driver wrote any and we may read them."""
        container = job.get("container", {})
        stream = container.get("logStreamName") or attempt.get("logStreamName")
        if not stream:
            return []
        options = container.get("logConfiguration", {}).get("options", {})
        group = options.get("awslogs-group", DEFAULT_LOG_GROUP)
        try:
            events = self.aws("logs").get_log_events(
                logGroupName=group, logStreamName=stream, limit=LOG_TAIL_LINES, startFromHead=False
            )["events"]
        except ClientError as error:
            self.log(f"could not read the job's logs from {group}/{stream}: {error}")
            return []
        return last_lines(event["message"] for event in events)

    # ------------------------------------------------------------------ stop

    def remove(self, spec: DeploymentSpec) -> list[str]:
        job = self.batch_job(spec)
        return self.terminate_jobs(job) + self.deregister_job_definitions(job) + self.delete_repository(spec)

    def terminate_jobs(self, batch_job: BatchJob) -> list[str]:
        batch = self.aws("batch")
        active = [job for job in self.jobs(batch_job) if job["status"] in ACTIVE_STATES]
        for job in active:
            batch.terminate_job(jobId=job["jobId"], reason=STOP_REASON)
            self.log(f"terminating job {job['jobName']} ({job['jobId']}), which was {job['status']}")
        ids = {job["jobId"] for job in active}
        if ids:
            ids = poll_until(lambda: {job["jobId"] for job in self.describe_jobs(sorted(ids))
                                           if job["status"] in ACTIVE_STATES}, lambda left: not left, STOP_WAIT_SECONDS, 1)
        if ids:
            self.log(f"jobs {', '.join(sorted(ids))} were not stopped after {STOP_WAIT_SECONDS} s; AWS Batch ends them")
        return [f"batch-job/{job['jobName']}/{job['jobId']}" for job in active]

    def deregister_job_definitions(self, job: BatchJob) -> list[str]:
        batch = self.aws("batch")
        removed = []
        for definition in self.job_definitions(job):
            batch.deregister_job_definition(jobDefinition=definition["jobDefinitionArn"])
            removed.append(f"batch-job-definition/{definition['jobDefinitionName']}:{definition['revision']}")
        return removed


def _exit_code(job: dict[str, Any], summary: dict[str, Any]) -> int | None:
    attempt = (job.get("attempts") or [{}])[-1].get("container", {})
    containers = (job.get("container", {}), attempt, summary.get("container", {}))
    return next((c["exitCode"] for c in containers if "exitCode" in c), None)
