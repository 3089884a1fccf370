"""Scheduled jobs on the Docker engine: a container that runs to completion, for scheduled offline work.

The container's output becomes the Airflow task log while the job runs, a job never outlives its
timeout, and no container is left behind whatever happens to the run, so the next scheduled run
starts clean.
"""

from __future__ import annotations

import queue
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, ClassVar

from cloud_deploy_provider.clients import LOG_TAIL_LINES
from cloud_deploy_provider.clients.docker_engine import engine_client
from cloud_deploy_provider.errors import is_transient
from cloud_deploy_provider.identity import LABEL_KEY
from cloud_deploy_provider.jobs.base import JobError, JobResult, JobRunner
from cloud_deploy_provider.settings import EngineSettings
from cloud_deploy_provider.spec import DeploymentSpec, Job
from cloud_deploy_provider.targets import ImageRef

JOB_LABEL = "io.cloud-deploy.job"
DRAIN_SECONDS = 5
_JOB_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?", re.ASCII)
_END = None


class DockerJobRunner(JobRunner):
    """Jobs as containers on this machine's Docker engine; Airflow retries a failed run (the task's retries)."""

    target: ClassVar[str] = "docker"

    def __init__(self, project: Any, log: Callable[[str], None] = print, client: Any = None,
                 conn_id: str | None = None, registry_conn_id: str | None = None,
                 settings: EngineSettings | None = None):
        super().__init__(project, log, client, conn_id, registry_conn_id)
        self.settings = settings or EngineSettings.from_env()

    def connect(self) -> Any:
        return engine_client(self.settings, timeout=60)

    # ------------------------------------------------------------------ the job runner contract

    def image(self, spec: DeploymentSpec, job: Job, built: ImageRef | None,
              registry: Callable[[], Any] = lambda: None) -> str:
        """The job's own image, pulled (with the registry's login when it lives there), else the project's image
        as the build left it on this engine."""
        if not job.image:
            return built.reference
        found = registry()
        same_host = found is not None and job.image.startswith(f"{found.host}/")
        self.pull(job.image, found.auth_config() if same_host else None)
        return job.image

    def begin(self, spec: DeploymentSpec, job: Job, image: str) -> dict[str, Any]:
        resources = job.resources
        command = " ".join(job.command or ["(the image's command)"])
        self.log(f"job {job.name}: {image} {command}")
        container = self.start(job.name, image, job.command, env={**spec.deploy.env, **job.env},
                               timeout_seconds=job.timeout_seconds, cpu=resources.cpu, memory_mb=resources.memory,
                               gpus=resources.gpu, work_dir=self.work_dir(spec, job))
        return {"container": container}

    def watch(self, spec: DeploymentSpec, job: Job, handle: dict[str, Any]) -> DockerJobWatch:
        return DockerJobWatch(self, job.name, handle["container"], job.timeout_seconds)

    def result_of(self, job: Job, watch: Any, outcome: str, status: dict[str, Any]) -> JobResult:
        """The job's result from its last status; past its timeout, the container's output so far."""
        found = (status.get("details") or {}).get("result")
        if found:
            return JobResult.from_dict(found)
        if outcome == "timeout":
            if not watch.seen:
                watch.status()  # the output so far, for the message (when resumed, this process has read none yet)
            self.log(f"job {job.name}: exceeded its timeout of {job.timeout_seconds} s; killing container "
                     f"{watch.container}")
            return watch.result("failed", None, timed_out=True)
        return watch.result("failed", None, reason=status.get("message") or "the job's status could not be read")

    def end(self, spec: DeploymentSpec, job: Job, handle: dict[str, Any]) -> None:
        self.stop_and_remove(job.name, handle["container"])

    # ------------------------------------------------------------------ containers

    def run(
        self,
        job: str,
        image: str,
        command: list[str] | None,
        *,
        env: dict[str, str] | None = None,
        timeout_seconds: int = 3600,
        cpu: float | None = None,
        memory_mb: int | None = None,
        gpus: int = 0,
        work_dir: str | None = None,
    ) -> JobResult:
        """Runs ``command`` (an argument list, never a shell line; None: the image's own) in ``image``.

        Env values are secrets: they go to the engine only, never to the log.
        """
        name = self._created(job, image, command, env=env, timeout_seconds=timeout_seconds, cpu=cpu,
                             memory_mb=memory_mb, gpus=gpus, work_dir=work_dir)
        try:
            with _engine_errors(job, image):
                return self._start_and_follow(job, name, timeout_seconds)
        finally:
            with _engine_errors(job, image):
                self._remove(name)

    def start(self, job: str, image: str, command: list[str] | None, **options: Any) -> str:
        """Like :meth:`run` (with its keyword options), but returns once the container runs: its name, for a
        :class:`DockerJobWatch`. The caller ends it with :meth:`stop_and_remove`.
        """
        name = self._created(job, image, command, **options)
        try:
            with _engine_errors(job, image):
                self._start(job, name)
        except BaseException:
            with suppress(Exception):
                self._remove(name)
            raise
        return name

    def stop_and_remove(self, job: str, name: str) -> None:
        """Kill the job's container if it still runs, and remove it."""
        with _engine_errors(job):
            with suppress(Exception):
                self._kill(name)
            self._remove(name)

    def _created(self, job: str, image: str, command: list[str] | None, *, env: dict[str, str] | None = None,
                 timeout_seconds: int = 3600, cpu: float | None = None, memory_mb: int | None = None, gpus: int = 0,
                 work_dir: str | None = None) -> str:
        """The job's container, created (not started) after removing what earlier runs of the job left."""
        _check_job_name(job)
        self.cleanup(job)
        name = f"{self.project.resource_name(f'job-{job}', max_length=56)}-{secrets.token_hex(3)}"
        self.log(f"job {job}: running {image} in container {name} (timeout {timeout_seconds} s)")
        with _engine_errors(job, image):
            self.client.create_container(
                image=image,
                entrypoint=command,  # the job's command replaces the image's entrypoint, as in Kubernetes
                name=name,
                environment=dict(env or {}),
                labels={**self.project.labels(job), JOB_LABEL: job},
                working_dir=work_dir,
                host_config=self._host_config(cpu, memory_mb, gpus),
            )
        return name

    def _start(self, job: str, name: str) -> None:
        from docker.errors import APIError

        try:
            self.client.start(name)
        except APIError as error:
            raise JobError(f"job {job}: container {name} did not start: {error.explanation or error}") from error

    def pull(self, image: str, auth_config: dict | None = None) -> None:
        """Make an existing image (a job's own ``image``) present on the engine; a no-op when it is."""
        from docker.errors import APIError, ImageNotFound

        try:
            self.client.inspect_image(image)
            return
        except ImageNotFound:
            pass
        self.log(f"pulling {image}")
        try:
            for event in self.client.pull(image, auth_config=auth_config, stream=True, decode=True):
                if "error" in event:
                    raise JobError(f"pulling {image} failed: {event['error']}")
        except APIError as error:
            raise JobError(f"pulling {image} failed: {error.explanation or error}") from None

    def cleanup(self, job: str) -> list[str]:
        """Removes the containers of ``job`` that earlier runs left behind (e.g. when a worker was killed).

        So runs of one job must not overlap (the DAG's ``max_active_runs=1``): a run ends the one before.
        """
        _check_job_name(job)
        filters = {"label": [f"{LABEL_KEY}={self.project.key}", f"{JOB_LABEL}={job}"]}
        removed = []
        with _engine_errors(job):
            for container in self.client.containers(all=True, filters=filters):
                if self._remove(container["Id"]):
                    removed.append(container["Names"][0].lstrip("/"))
                    self.log(f"job {job}: removed container {removed[-1]} left by an earlier run")
        return removed

    def _host_config(self, cpu: float | None, memory_mb: int | None, gpus: int) -> Any:
        limits: dict[str, Any] = {}
        if cpu:
            limits["nano_cpus"] = int(cpu * 1e9)
        if memory_mb:
            limits["mem_limit"] = f"{memory_mb}m"
        if gpus > 0:
            from docker.types import DeviceRequest

            limits["device_requests"] = [DeviceRequest(driver="nvidia", count=gpus, capabilities=[["gpu"]])]
        return self.client.create_host_config(restart_policy={"Name": "no"}, **limits)

    def _start_and_follow(self, job: str, name: str, timeout_seconds: int) -> JobResult:
        deadline = time.monotonic() + timeout_seconds
        self._start(job, name)
        output = Output(lambda: self.client.logs(name, stream=True, follow=True), self.log)
        if output.forward_until_end(deadline):
            exit_code = self._exit_code(name, deadline)
            if exit_code is not None:
                state = "completed" if exit_code == 0 else "failed"
                return JobResult(state, exit_code, list(output.tail), False, name, timeout_seconds)
        self.log(f"job {job}: exceeded its timeout of {timeout_seconds} s; killing container {name}")
        self._kill(name)
        output.forward_until_end(time.monotonic() + DRAIN_SECONDS)
        return JobResult("failed", None, list(output.tail), True, name, timeout_seconds)

    def _exit_code(self, name: str, deadline: float) -> int | None:
        """None when the container still runs at the deadline."""
        from requests.exceptions import ConnectionError, ReadTimeout

        try:
            return self.client.wait(name, timeout=max(deadline - time.monotonic(), 1))["StatusCode"]
        except (ReadTimeout, ConnectionError):  # docker-py's way of saying the wait timed out
            return None

    def _kill(self, name: str) -> None:
        from docker.errors import APIError

        try:
            self.client.kill(name)
        except APIError as error:
            if error.status_code != 409:  # 409: it has just ended on its own
                raise

    def _remove(self, container: str) -> bool:
        from docker.errors import NotFound

        try:
            self.client.remove_container(container, force=True)
        except NotFound:
            return False
        return True


class DockerJobWatch:
    """A started job container as the trigger (or the task) sees it: running, or ended with its
    :class:`JobResult` in ``details["result"]``; the output lines not passed on yet in ``details["log"]``.

    Reading changes nothing; the watch only remembers how many lines it passed on (each poll reads the
    container's log afresh: fine for the output of a batch job, not meant for a firehose).
    """

    def __init__(self, runner: DockerJobRunner, job: str, container: str, timeout_seconds: int):
        self.runner, self.job, self.container, self.timeout_seconds = runner, job, container, timeout_seconds
        self.seen: list[str] = []

    def status(self, spec: DeploymentSpec | None = None) -> Any:
        from docker.errors import NotFound

        from cloud_deploy_provider.targets import TargetStatus

        try:
            state = self.runner.client.inspect_container(self.container)["State"]
        except NotFound:
            result = self.result("failed", None, reason=f"container {self.container} is gone")
            return TargetStatus("failed", message=result.message(), details={"result": result.to_dict(), "log": []})
        lines = self._new_lines()
        if state["Running"]:
            return TargetStatus("running", message=f"job {self.job}: container {self.container} runs",
                                details={"log": lines})
        code = state.get("ExitCode")
        result = self.result("completed" if code == 0 else "failed", code)
        return TargetStatus(result.state, message=result.message(), details={"result": result.to_dict(), "log": lines})

    def result(self, state: str, exit_code: int | None, timed_out: bool = False, reason: str = "") -> JobResult:
        return JobResult(state, exit_code, self.tail(), timed_out, self.container, self.timeout_seconds, reason)

    def tail(self) -> list[str]:
        return self.seen[-LOG_TAIL_LINES:]

    def _new_lines(self) -> list[str]:
        from docker.errors import NotFound

        try:
            lines = [_decode(line) for line in self.runner.client.logs(self.container).split(b"\n")]
        except NotFound:
            return []
        if lines and lines[-1] == "":
            lines.pop()
        new, self.seen = lines[len(self.seen):], lines
        return new


class Output:
    """A container's followed output, read by a thread so that waiting for it never holds up the timeout.

    ``open_stream`` returns the byte chunks (it runs on the reading thread: opening a followed log
    may block). Lines are handed to ``log`` on the caller's thread, where Airflow's task logger lives.
    """

    def __init__(self, open_stream: Callable[[], Iterable[bytes]], log: Callable[[str], None]):
        self.log = log
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.ended = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(open_stream,), daemon=True).start()

    def forward_until_end(self, deadline: float) -> bool:
        """True when the output has ended (the container exited), False at the deadline.

        Lines already read are forwarded even when the deadline has passed.
        """
        while not self.ended:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                return False
            if line is _END:
                self.ended = True
            else:
                self.tail.append(line)
                self.log(line)
        return True

    def _read(self, open_stream: Callable[[], Iterable[bytes]]) -> None:
        pending = b""
        try:
            # The stream breaks when the container is removed under it, or cannot be opened yet; the job's
            # outcome comes from the engine or the cluster, never from its log.
            with suppress(Exception):
                for chunk in open_stream():
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        self._lines.put(_decode(line))
            if pending:
                self._lines.put(_decode(pending))
        finally:
            self._lines.put(_END)


def _decode(line: bytes) -> str:
    return line.decode(errors="replace").rstrip("\r")


def _check_job_name(job: object) -> None:
    if not isinstance(job, str) or not _JOB_NAME.fullmatch(job):
        raise JobError(
            f"job name {job!r} is not valid "
            "(1-40 lowercase letters, digits and '-', starting and ending with a letter or digit)"
        )


@contextmanager
def _engine_errors(job: str, image: str | None = None) -> Iterator[None]:
    from docker.errors import DockerException, ImageNotFound
    from requests.exceptions import RequestException

    try:
        yield
    except ImageNotFound as error:
        raise JobError(f"job {job}: image {image} is not in the Docker engine; build or pull it first") from error
    except (DockerException, RequestException) as error:
        explanation = getattr(error, "explanation", None) or error
        raise JobError(f"job {job}: the Docker engine failed: {explanation}", retryable=is_transient(error)) from error
