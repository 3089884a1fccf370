"""The one contract every job runner implements, and what all runners share.

The operator runs any ``schedule.jobs`` entry the same way: :meth:`JobRunner.image` (what runs),
:meth:`~JobRunner.begin` (the job is submitted; returns a handle of plain data), a watch of it read in the
task or, past the inline wait, in the triggerer (:class:`RunnerWatch`), :meth:`~JobRunner.result_of` (the
job's :class:`JobResult`), and :meth:`~JobRunner.end` (nothing of the run is left), whatever happened.

A job's ``command`` replaces the image's entrypoint on every runner, as in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from cloud_deploy_provider.clients import PlatformUser
from cloud_deploy_provider.errors import TargetError
from cloud_deploy_provider.spec import DeploymentSpec, Job
from cloud_deploy_provider.targets import ImageRef, TargetStatus

if TYPE_CHECKING:
    from cloud_deploy_provider.registries.oci import Registry

MESSAGE_LINES = 5


class JobError(TargetError):
    """The job could not be run at all: a bad name, a missing image, the platform refused or failed."""


@dataclass(frozen=True)
class JobResult:
    state: str
    exit_code: int | None
    log_tail: list[str]
    timed_out: bool = False
    container: str = ""
    timeout_seconds: int | None = None
    reason: str = ""  # why a job that never got to run its command failed (unschedulable, image pull, ...)

    def message(self) -> str:
        if self.state == "completed":
            return f"completed (exit code {self.exit_code})"
        if self.timed_out:
            reason = f"exceeded its timeout of {self.timeout_seconds} s and was stopped"
        else:
            reason = self.reason or f"exit code {self.exit_code}"
        if self.log_tail:
            reason += "; last log lines: " + " | ".join(self.log_tail[-MESSAGE_LINES:])
        return f"failed: {reason}"

    def to_dict(self) -> dict:
        return {**asdict(self), "message": self.message()}

    @classmethod
    def from_dict(cls, data: dict) -> JobResult:
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**{**fields, "log_tail": list(fields.get("log_tail", []))})


class JobWatch(Protocol):
    """A begun job as the task or the trigger reads it: ``running``/``starting`` while it runs; ``completed``
    or ``failed`` once it has ended, with its :class:`JobResult` in ``details["result"]`` where the runner
    knows it; log lines not passed on yet in ``details["log"]``. Reading changes nothing."""

    def status(self, spec: DeploymentSpec | None = None) -> TargetStatus: ...

    def tail(self) -> list[str]:
        """The last log lines passed on so far."""
        ...


class JobRunner(PlatformUser):
    """A place scheduled jobs run. Subclasses set ``target`` and implement ``begin``, ``watch``, ``end``."""

    target: ClassVar[str]
    conn_id_parameter: ClassVar[str | None] = None

    @classmethod
    def describe(cls, project: Any, spec: DeploymentSpec, job: Job) -> dict[str, Any] | None:
        """What running the job would create, as plain data, without touching the platform; None: nothing to show."""
        return None

    def image(self, spec: DeploymentSpec, job: Job, built: ImageRef | None,
              registry: Callable[[], Registry | None] = lambda: None) -> str:
        """The job's own ``image``, else the project's image by digest, as the build task pushed it.

        ``registry`` gives the registry the project's images are pushed to, for a runner that needs it."""
        if job.image:
            return job.image
        if built is None or not built.digest:
            raise JobError(f"job {job.name}: a {self.target} job runs the project's image from a registry, and "
                           "none is configured: set CLOUD_DEPLOY_REGISTRY_CONN_ID, or give the job an image")
        return built.pinned

    def begin(self, spec: DeploymentSpec, job: Job, image: str) -> dict[str, Any]:
        """Clear what an earlier run of the job left, then submit it; returns its handle (JSON-able)."""
        raise NotImplementedError

    def watch(self, spec: DeploymentSpec, job: Job, handle: dict[str, Any]) -> JobWatch:
        raise NotImplementedError

    def deadline_seconds(self, spec: DeploymentSpec, job: Job) -> int:
        """How long to wait for the job to end: its own timeout, unless the platform needs longer to act on it."""
        return job.timeout_seconds

    def result_of(self, job: Job, watch: JobWatch, outcome: str, status: dict[str, Any]) -> JobResult:
        """The result from the watch's last status (``outcome`` ``timeout``: the deadline passed first), with the
        last lines the watch passed on."""
        found = (status.get("details") or {}).get("result")
        if found:
            return JobResult.from_dict(found)
        if outcome == "timeout":
            self.log(f"job {job.name}: still active after its deadline; stopping it")
            return JobResult("failed", None, watch.tail(), True, self.run_name(job), job.timeout_seconds)
        reason = status.get("message") or "the job's status could not be read"
        return JobResult("failed", None, watch.tail(), reason=reason, timeout_seconds=job.timeout_seconds)

    def run_name(self, job: Job) -> str:
        """What the job runs as on the platform (a container, a Job), for its result."""
        return ""

    def end(self, spec: DeploymentSpec, job: Job, handle: dict[str, Any]) -> None:
        """Stop the job if it still runs and remove everything its run created."""
        raise NotImplementedError

    @staticmethod
    def work_dir(spec: DeploymentSpec, job: Job) -> str | None:
        """The project's working directory, for a job that runs the project's own image."""
        return spec.deploy.work_dir if job.image is None else None


class RunnerWatch:
    """What the trigger polls for a job: the runner's watch, rebuilt in the triggerer from plain data."""

    @classmethod
    def for_trigger(cls, project: Any, spec: DeploymentSpec, log: Any, connections: dict[str, str | None],
                    job: str, handle: dict[str, Any]) -> JobWatch:
        from cloud_deploy_provider.jobs import make_job_runner

        found = next(entry for entry in spec.schedule.jobs if entry.name == job)
        return make_job_runner(project, found.target, log, connections).watch(spec, found, handle)
