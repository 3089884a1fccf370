"""Scheduled batch jobs on Kubernetes: one batch/v1 Job run to completion, then deleted with its pods.

- ``retries`` is the Job's ``backoffLimit`` and ``timeout_seconds`` its ``activeDeadlineSeconds``: the
  cluster retries and stops the job itself, and the deadline covers the whole Job, retries included,
  as Kubernetes counts it.
- Pods never restart in place (``restartPolicy: Never``), so every attempt keeps its own exit code and
  log; each attempt's log is passed on to the task log while it runs, read once a second (from the
  triggerer when the operator has deferred the wait).
- A pod that cannot start (unschedulable, its image not pullable) fails the run at once with the
  reason, as the ``kubernetes`` target fails a rollout.
- Whatever happens to the run, the Job, its pods and its pull secret are deleted: explicitly, with
  propagation (a batch/v1 Job's default is to orphan its pods), and by ``ttlSecondsAfterFinished``
  should the worker die first. A run starts by removing what an earlier, killed run left behind
  (runs of one job never overlap: the DAG's ``max_active_runs=1``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from functools import cached_property, partial
from typing import Any, ClassVar

from cloud_deploy_provider.accelerators import request_of
from cloud_deploy_provider.clients import LOG_TAIL_LINES
from cloud_deploy_provider.clients.kubernetes import LABEL_INSTANCE, KubernetesCluster, resource_block
from cloud_deploy_provider.jobs.base import JobResult, JobRunner
from cloud_deploy_provider.registries import given_or_installation_registry
from cloud_deploy_provider.settings import SettingsError
from cloud_deploy_provider.spec import DeploymentSpec, Job
from cloud_deploy_provider.targets import TargetStatus

LABEL_JOB = "cloud-deploy.io/job"
JOB_CONTAINER = "job"
FINISHED_TTL_SECONDS = 600
POLL_SECONDS = 1.0
DEADLINE_GRACE_SECONDS = 60  # for the job controller to act on activeDeadlineSeconds once it has passed
GPU_TYPE_LABEL_VARIABLE = "CLOUD_DEPLOY_K8S_GPU_TYPE_LABEL"
DEFAULT_GPU_TYPE_LABEL = "cloud.google.com/gke-accelerator"  # TANGO's GPU deployer names GPUs as GKE accelerators
_LABEL_KEY = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*/)?"
    r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?", re.ASCII,
)


def gpu_type_label() -> str:
    """The node label that names a node's GPU model, which ``resources.gpu_type`` selects on."""
    value = os.environ.get(GPU_TYPE_LABEL_VARIABLE, "").strip() or DEFAULT_GPU_TYPE_LABEL
    if not _LABEL_KEY.fullmatch(value) or len(value) > 253 + 1 + 63:  # prefix / name
        raise SettingsError(f"{GPU_TYPE_LABEL_VARIABLE}: {value!r} is not a Kubernetes label key")
    return value


class KubernetesJobRunner(JobRunner):
    """Runs a ``schedule.jobs`` entry of target ``kubernetes`` on the cluster the kubernetes target uses: the same
    connection, namespace, registry and owner labels (:class:`KubernetesCluster`)."""

    target: ClassVar[str] = "kubernetes"
    conn_id_parameter: ClassVar[str] = "kubernetes_conn_id"

    def __init__(self, project: Any, log: Callable[[str], None] = print, client: Any = None,
                 conn_id: str | None = None, registry_conn_id: str | None = None, hook: Any = None,
                 registry: Any = None):
        super().__init__(project, log, client, conn_id, registry_conn_id)
        self._hook, self._registry = hook, registry

    @cached_property
    def cluster(self) -> KubernetesCluster:
        return KubernetesCluster(self.project, partial(given_or_installation_registry, self._registry,
                                                   self.registry_conn_id), self.log,
                                 self.conn_id, hook=self._hook)

    def namespace(self, spec: DeploymentSpec) -> str:
        k8s = spec.deploy.k8s
        return self.cluster.namespace(k8s.namespace if k8s else None)

    @classmethod
    def describe(cls, project: Any, spec: DeploymentSpec, job: Job) -> dict[str, Any]:
        return cls(project).job_manifest(spec, job, job.image or "<the pushed image, by digest>")

    # ------------------------------------------------------------------ the job runner contract

    def begin(self, spec: DeploymentSpec, job: Job, image: str) -> dict[str, Any]:
        return {"job_name": self.start(spec, job, image, work_dir=self.work_dir(spec, job))}

    def watch(self, spec: DeploymentSpec, job: Job, handle: dict[str, Any]) -> KubernetesJobWatch:
        return KubernetesJobWatch(self, spec, job)

    def run_name(self, job: Job) -> str:
        return self.job_name(job)

    def end(self, spec: DeploymentSpec, job: Job, handle: dict[str, Any]) -> None:
        self.remove(spec, job)

    # ------------------------------------------------------------------ manifests

    def job_name(self, job: Job) -> str:
        return self.project.resource_name(f"job-{job.name}", max_length=57)  # pod names add "-xxxxx"

    def job_selector(self, job: Job) -> str:
        return f"{self.cluster.owner_selector},{LABEL_JOB}={job.name}"

    def job_labels(self, spec: DeploymentSpec, job: Job) -> dict[str, str]:
        return {**self.cluster.owner_labels(spec.deploy.service_name, self.job_name(job)), LABEL_JOB: job.name}

    def job_manifest(self, spec: DeploymentSpec, job: Job, image: str, work_dir: str | None = None) -> dict[str, Any]:
        """The batch/v1 Job: the job's command replaces the image's entrypoint, as on the docker target."""
        container: dict[str, Any] = {"name": JOB_CONTAINER, "image": image}
        if job.command:
            container["command"] = list(job.command)
        env = {**spec.deploy.env, **job.env}
        if env:
            container["env"] = [{"name": key, "value": value} for key, value in env.items()]
        if work_dir:
            container["workingDir"] = work_dir
        resources = job_resources(job)
        if resources:
            container["resources"] = resources
        pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
        if self.job_pull_secret(spec, job, reveal=False):
            pod["imagePullSecrets"] = [{"name": self.job_pull_secret_name(job)}]
        if job.resources.gpu_type:
            pod["nodeSelector"] = {gpu_type_label(): job.resources.gpu_type}
        labels = self.job_labels(spec, job)
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": self.job_name(job), "namespace": self.namespace(spec), "labels": labels},
            "spec": {
                "backoffLimit": job.retries,
                "activeDeadlineSeconds": job.timeout_seconds,
                "ttlSecondsAfterFinished": FINISHED_TTL_SECONDS,
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        }

    def job_pull_secret_name(self, job: Job) -> str:
        return f"{self.job_name(job)}-pull"

    def job_pull_secret(self, spec: DeploymentSpec, job: Job, reveal: bool = True) -> dict[str, Any] | None:
        """The registry login as a secret of the job's own, so deleting it never touches the service's."""
        metadata = {"name": self.job_pull_secret_name(job), "namespace": self.namespace(spec),
                    "labels": self.job_labels(spec, job)}
        return self.cluster.pull_secret(metadata, reveal)

    # ------------------------------------------------------------------ running

    def run(self, spec: DeploymentSpec, job: Job, image: str, *, work_dir: str | None = None) -> JobResult:
        """Start the Job and follow it to its end in this process; the Job is deleted however the run ends.

        The operator runs the same pieces, but waits for the end in the triggerer.
        """
        self.start(spec, job, image, work_dir=work_dir)
        try:
            watch = KubernetesJobWatch(self, spec, job)
            deadline = time.monotonic() + self.deadline_seconds(spec, job)
            while True:
                status = watch.status(spec)
                for line in status.details.get("log", []):
                    self.log(line)
                if status.state in ("completed", "failed"):
                    return JobResult.from_dict(status.details["result"])
                if time.monotonic() >= deadline:
                    return self.overdue(job, watch)
                time.sleep(POLL_SECONDS)
        finally:
            self.remove(spec, job)

    def start(self, spec: DeploymentSpec, job: Job, image: str, *, work_dir: str | None = None) -> str:
        """Remove what an earlier run left, then create the job's pull secret and its Job; returns the Job's name."""
        namespace, name = self.namespace(spec), self.job_name(job)
        manifest = self.job_manifest(spec, job, image, work_dir)
        self.remove(spec, job, leftovers=True)
        try:
            secret = self.job_pull_secret(spec, job)
            if secret is not None:
                self.cluster.call(f"create Secret {secret['metadata']['name']}",
                                  self.cluster.core.create_namespaced_secret, namespace, secret)
            self.cluster.call(f"create Job {name}", self.cluster.batch.create_namespaced_job, namespace, manifest)
        except BaseException:
            self.remove(spec, job)
            raise
        self.log(f"job {job.name}: Job {namespace}/{name} runs {image} (backoffLimit {job.retries}, "
                 f"activeDeadlineSeconds {job.timeout_seconds})")
        return name

    def overdue(self, job: Job, watch: KubernetesJobWatch) -> JobResult:
        self.log(f"job {job.name}: still active {DEADLINE_GRACE_SECONDS} s after its deadline; deleting it")
        return JobResult("failed", None, watch.tail(), True, self.job_name(job), job.timeout_seconds)

    def deadline_seconds(self, spec: DeploymentSpec, job: Job) -> int:
        """How long to wait for the Job: its own deadline, and time for the job controller to act on it."""
        return job.timeout_seconds + DEADLINE_GRACE_SECONDS

    def _result(self, job: Job, finished: tuple[str, str, str], pods: list[Any], tail: list[str]) -> JobResult:
        kind, reason, message = finished
        ended = [pod for pod in pods if _terminated(pod) is not None]
        last = ended[-1] if ended else None
        exit_code = _terminated(last).exit_code if last is not None else None
        pod_name = last.metadata.name if last is not None else ""
        if kind == "Complete":
            return JobResult("completed", exit_code, tail, False, pod_name, job.timeout_seconds)
        if reason == "DeadlineExceeded":
            return JobResult("failed", exit_code, tail, True, pod_name, job.timeout_seconds)
        failed = [pod for pod in ended if pod.status.phase == "Failed"]
        why = f"exit code {exit_code}" if exit_code is not None else f"{reason}: {message}"
        if len(failed) > 1:
            why += f" (attempt {len(failed)} of {job.retries + 1})"
        return JobResult("failed", exit_code, tail, False, pod_name, job.timeout_seconds, reason=why)

    def _job_pods(self, namespace: str, name: str) -> list[Any]:
        pods = self.cluster.pods(namespace, f"{LABEL_INSTANCE}={name}")
        return sorted(pods, key=lambda pod: (pod.metadata.creation_timestamp, pod.metadata.name))

    def _pod_log(self, namespace: str, pod: str) -> list[str]:
        return self.cluster.pod_log(namespace, pod, JOB_CONTAINER) or []

    # ------------------------------------------------------------------ cleaning up

    def remove(self, spec: DeploymentSpec, job: Job, *, leftovers: bool = False) -> list[str]:
        """Delete the job's Jobs (with their pods) and its pull secret, then wait until the pods are gone."""
        namespace, selector = self.namespace(spec), self.job_selector(job)
        removed = []
        for kind in ("Job", "Secret"):
            for item in self.cluster.owned_items(kind, namespace, selector):
                self.cluster.delete(kind, namespace, item.metadata.name)
                removed.append(f"{kind}/{item.metadata.name}")
        if removed:
            left = " left by an earlier run" if leftovers else ""
            self.log(f"job {job.name}: removed {', '.join(removed)}{left}")
        self.cluster.wait_pods_gone(namespace, selector, f"job {job.name}")
        return removed


class KubernetesJobWatch:
    """One running Job as the trigger (or :meth:`KubernetesJobRunner.run`) sees it: its state, and the log
    lines of each attempt not seen yet. Reading changes nothing; it only remembers which lines it passed on.

    ``status`` has the job target's shape: ``running``/``starting`` while it runs; ``completed`` or
    ``failed`` with the :class:`JobResult` in ``details["result"]``; new log lines in ``details["log"]``.
    """

    def __init__(self, runner: KubernetesJobRunner, spec: DeploymentSpec, job: Job):
        self.runner, self.job = runner, job
        self.namespace, self.name = runner.namespace(spec), runner.job_name(job)
        self.seen: dict[str, list[str]] = {}

    def status(self, spec: DeploymentSpec | None = None) -> TargetStatus:
        runner, job = self.runner, self.job
        current = runner.cluster.call(f"read Job {self.name}", runner.cluster.batch.read_namespaced_job, self.name,
                                      self.namespace)
        pods = runner._job_pods(self.namespace, self.name)
        lines = self._new_lines([pod for pod in pods if _started(pod)])
        finished = _finished(current)
        if finished is not None:
            result = runner._result(job, finished, runner._job_pods(self.namespace, self.name), self.tail())
            return TargetStatus(result.state, message=result.message(), details={"result": result.to_dict(), "log": lines})
        problem = runner.cluster.pod_problem(self.namespace, self.name)
        if problem is not None:
            result = JobResult("failed", None, self.tail(), reason=problem, timeout_seconds=job.timeout_seconds)
            return TargetStatus("failed", message=result.message(), details={"result": result.to_dict(), "log": lines})
        state = "running" if self.seen else "starting"
        return TargetStatus(state, message=f"job {job.name}: Job {self.name} {state}", details={"log": lines})

    def tail(self) -> list[str]:
        """The last lines of the newest attempt."""
        return list(self.seen.values())[-1][-LOG_TAIL_LINES:] if self.seen else []

    def _new_lines(self, started: list[Any]) -> list[str]:
        new: list[str] = []
        for pod in started:
            name = pod.metadata.name
            if name not in self.seen:
                new.append(f"job {self.job.name}: attempt {len(self.seen) + 1}, pod {name}")
                self.seen[name] = []
            lines = self.runner._pod_log(self.namespace, name)
            new += lines[len(self.seen[name]):]
            if len(lines) > len(self.seen[name]):
                self.seen[name] = lines
        return new


def job_resources(job: Job) -> dict[str, Any]:
    wanted = job.resources
    return resource_block(request_of(gpu=wanted.gpu), wanted.cpu, wanted.memory)


def _finished(job: Any) -> tuple[str, str, str] | None:
    """(Complete | Failed, reason, message) once the Job has finished."""
    for condition in (job.status.conditions if job.status else None) or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return condition.type, condition.reason or "", condition.message or ""
    return None


def _container_state(pod: Any) -> Any:
    for status in pod.status.container_statuses or []:
        if status.name == JOB_CONTAINER:
            return status.state
    return None


def _started(pod: Any) -> bool:
    state = _container_state(pod)
    return state is not None and (state.running is not None or state.terminated is not None)


def _terminated(pod: Any) -> Any:
    state = _container_state(pod)
    return state.terminated if state is not None else None



