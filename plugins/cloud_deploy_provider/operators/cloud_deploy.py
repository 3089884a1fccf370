"""Operators for the stages of a deployment: thin glue between Airflow and the pipeline core.

Each resolves connections and settings, calls :mod:`cloud_deploy_provider.pipeline`, logs, and
returns a small JSON result for XCom. A failure is also recorded as the ``error`` XCom (the stage
and the message), which is where the REST status reads the reason from. A failure that a retry
cannot fix (a spec or configuration error, a refusal, a failed preflight; see
:mod:`cloud_deploy_provider.errors`) raises ``AirflowFailException``, so Airflow's retries are
spent only on passing trouble. Heavy imports happen inside ``execute`` so DAG files parse fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, BaseOperatorLink
from airflow.sdk.exceptions import AirflowException, AirflowFailException

MAX_ERROR_CHARS = 4000
# How long a stop waits for a deploy task it cancelled to exit: Airflow kills it within a heartbeat and a 5 s
# SIGTERM grace; a deploy still running normally (a stop triggered from the UI) gets this long to finish.
DEPLOY_EXIT_WAIT_SECONDS = 30


def retry_arguments() -> dict[str, Any]:
    """Retries with exponential backoff for the stages, from the ``CLOUD_DEPLOY_*`` pipeline settings."""
    from cloud_deploy_provider.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    return {
        "retries": settings.retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=settings.max_retry_delay_seconds),
    }


class TaskKilled(BaseException):
    """Airflow is killing the task (its run was stopped): not a failure to record or retry."""


JOB_WATCH = "cloud_deploy_provider.jobs.base:RunnerWatch"  # what the trigger polls for a job (not imported here)
CONN_ID_PARAMETERS = ("registry_conn_id", "aws_conn_id", "gcp_conn_id", "kubernetes_conn_id", "backendai_conn_id")


class ServiceLink(BaseOperatorLink):
    """"Open service" on the deploy task: the URL the deployed service answers at (empty until it is ready).

    Airflow computes it on the worker when the task ends, from the task's result, and stores it as an XCom.
    """

    name = "Open service"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        result = XCom.get_value(ti_key=ti_key, key="return_value")
        return (result.get("url") or "") if isinstance(result, dict) else ""


class CloudDeployStageOperator(BaseOperator):
    """Runs :meth:`run_stage`; any failure becomes an ``error`` XCom and a clear task error.

    Each ``*_conn_id`` names the Airflow connection for one kind of system; None (the default) reads the
    installation's ``CLOUD_DEPLOY_*_CONN_ID`` variable, then the provider's default connection id. A
    target uses the one it needs.

    :param user_id: TANGO user id (templated)
    :param project_id: TANGO project id (templated)
    :param validated: what the build (or validate) task returned: the spec, its folder, the image
    :param registry_conn_id: docker-type connection of the installation's registry (templated;
        default ``CLOUD_DEPLOY_REGISTRY_CONN_ID``)
    :param aws_conn_id: AWS connection of the ``aws-*`` targets (templated; default ``CLOUD_DEPLOY_AWS_CONN_ID``,
        then ``aws_default``)
    :param gcp_conn_id: Google Cloud connection of Cloud Run (templated; default ``CLOUD_DEPLOY_GCP_CONN_ID``,
        then ``google_cloud_default``)
    :param kubernetes_conn_id: Kubernetes connection (templated; default ``CLOUD_DEPLOY_K8S_CONN_ID``, then
        ``kubernetes_default``)
    :param backendai_conn_id: Backend.AI connection of compute sessions (templated; default
        ``CLOUD_DEPLOY_BACKENDAI_CONN_ID``, then ``backendai_default``)
    """

    template_fields: Sequence[str] = ("user_id", "project_id", "validated", *CONN_ID_PARAMETERS)

    def __init__(self, *, user_id: str, project_id: str, validated: Any = None, registry_conn_id: str | None = None,
                 aws_conn_id: str | None = None, gcp_conn_id: str | None = None, kubernetes_conn_id: str | None = None,
                 backendai_conn_id: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.user_id = user_id
        self.project_id = project_id
        self.validated = validated
        self.registry_conn_id = registry_conn_id
        self.aws_conn_id = aws_conn_id
        self.gcp_conn_id = gcp_conn_id
        self.kubernetes_conn_id = kubernetes_conn_id
        self.backendai_conn_id = backendai_conn_id
        self.current_stage = self.task_id
        self.stage_seconds: dict[str, float] = {}

    # Whether the task holds the project's machine lock while it runs: a stop that cancelled it waits for it.
    holds_project_lock = False
    _executing = False

    def execute(self, context: Any) -> Any:
        from cloud_deploy_provider.locks import file_lock, project_lock_path

        self._executing = True
        try:
            if not self.holds_project_lock:
                return self.recording_failures(context, self.run_stage, context)
            with file_lock(project_lock_path(self.project.key)):
                return self.recording_failures(context, self.run_stage, context)
        finally:
            self._executing = False

    def on_kill(self) -> None:
        """Airflow calls this from its SIGTERM handler when the run was stopped (or failed) under the task.

        Raising here ends the stage at once through its clean-up (a build container, the project's
        lock), instead of running on until the SIGKILL that follows 5 s later skips all clean-up.
        """
        if self._executing:
            raise TaskKilled(f"{self.current_stage}: the run was stopped")

    def recording_failures(self, context: Any, function: Any, *args: Any, **kwargs: Any) -> Any:
        from cloud_deploy_provider.errors import is_transient

        try:
            return function(*args, **kwargs)
        except Exception as error:  # TaskDeferred is a BaseException and passes through
            message = str(error) or type(error).__name__
            context["ti"].xcom_push(key="error", value={"stage": self.current_stage,
                                                        "message": message[:MAX_ERROR_CHARS],
                                                        "stages": dict(self.stage_seconds)})
            if not is_transient(error):
                raise AirflowFailException(f"{self.current_stage}: {message}") from error
            raise AirflowException(f"{self.current_stage}: {message}") from error

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Marks the part of the task that runs: a failure is recorded under this stage's name, its time in ``stages``."""
        import time

        self.current_stage = name
        self.log.info("stage %s", name)
        started = time.monotonic()
        try:
            yield
        finally:
            self.stage_seconds[name] = round(time.monotonic() - started, 3)

    def run_stage(self, context: Any) -> Any:
        raise NotImplementedError

    deferrable = False

    def wait_or_defer(self, watched: Any, spec: Any, deadline: float, resume: str, until: str = "finished",
                      watch: str | None = None, watch_args: dict[str, Any] | None = None,
                      before_deferring: Any = None) -> tuple[str, Any]:
        """Poll ``watched.status(spec)`` for ``CLOUD_DEPLOY_INLINE_WAIT_SECONDS``, then (when deferrable) hand the
        rest of the wait to the triggerer and resume in ``resume(context, event)``. Returns (outcome, status)
        when the wait ended in the task: ``ready``, ``failed`` or ``timeout``.

        What the resumed task needs goes into an XCom (``before_deferring``), not into the deferral's
        kwargs: those are kept by the triggerer but dropped by ``dag.test()``, and an XCom shows in the UI."""
        import time

        from cloud_deploy_provider.pipeline import finished_outcome, poll, readiness_outcome
        from cloud_deploy_provider.settings import PipelineSettings
        from cloud_deploy_provider.triggers import TargetStatusTrigger

        inline = PipelineSettings.from_env().inline_wait_seconds if self.deferrable else None
        outcome_of = readiness_outcome if until == "ready" else finished_outcome
        outcome, status = poll(watched, spec, self.log.info, outcome_of, deadline,
                               until=time.time() + inline if inline is not None else None)
        if outcome is None:
            self.log.info("still waiting after %.0f s: the triggerer waits for the rest (until %s)", inline,
                          time.strftime("%H:%M:%S", time.localtime(deadline)))
            if before_deferring:
                before_deferring()
            self.defer(trigger=TargetStatusTrigger(self.user_id, self.project_id, spec.to_dict(), deadline,
                                                   spec.deploy.readiness.interval_seconds if until == "ready" else 1.0,
                                                   until=until, watch=watch, watch_args=watch_args,
                                                   connections=self.connections),
                       method_name=resume)
        return outcome, status

    @contextmanager
    def cleaned_up_unless_deferred(self, clean_up: Any) -> Iterator[None]:
        """Run ``clean_up`` however the block ends, except by deferring: what it waits for still exists then."""
        from airflow.sdk.exceptions import TaskDeferred

        try:
            yield
        except TaskDeferred:
            raise
        except BaseException:
            clean_up()
            raise
        clean_up()

    @property
    def connections(self) -> dict[str, str | None]:
        """The ``*_conn_id`` parameters as given (None: the installation's default), for targets and triggers."""
        return {name: getattr(self, name) for name in CONN_ID_PARAMETERS}

    def target(self, spec: Any) -> Any:
        from cloud_deploy_provider.pipeline import make_target

        return make_target(self.project, spec.deploy.type, self.log.info, self.connections)

    @property
    def project(self):
        from cloud_deploy_provider.identity import ProjectRef

        return ProjectRef(self.user_id, self.project_id)

    def loaded(self, validated: dict[str, Any]):
        """The project as the build task saw it, so later edits to the yaml do not leak into this run."""
        from pathlib import Path

        from cloud_deploy_provider.pipeline import LoadedProject
        from cloud_deploy_provider.spec import DeploymentSpec

        return LoadedProject(self.project, DeploymentSpec.model_validate(validated["spec"]), Path(validated["folder"]))

    def registry(self, spec):
        """The target's own registry (ECR for AWS targets), else the installation's registry connection."""
        from cloud_deploy_provider.registries import installation_registry

        own = self.target(spec).image_registry(spec)
        return own if own is not None else installation_registry(self.registry_conn_id)

    def docker_client(self):
        from cloud_deploy_provider.clients.docker_engine import engine_client

        return engine_client()


def _validated(loaded: Any) -> dict[str, Any]:
    return {"spec": loaded.spec.to_dict(), "folder": str(loaded.folder), "type": loaded.spec.deploy.type,
            "warnings": list(loaded.warnings)}


class CloudDeployValidateOperator(CloudDeployStageOperator):
    """Check the identifiers, deployment.yaml, the files it names, and that the target accepts the spec."""

    def run_stage(self, context: Any) -> dict[str, Any]:
        from cloud_deploy_provider.pipeline import validate

        with self.stage("validate"):
            return _validated(validate(self.project, self.log.info, self.log.warning, self.connections))


class CloudDeployBuildOperator(CloudDeployStageOperator):
    """Validate, build the image (skipped when the engine or registry has its build key), push it.

    The result is what a later task needs: the spec as read now, its folder, and the image
    (``image``: reference, digest, build key, ...). A retry after a failed push finds the image by
    its build key and does not build again.
    """

    def run_stage(self, context: Any) -> dict[str, Any]:
        return self.validated_built_pushed()

    def validated_built_pushed(self, context: Any = None) -> dict[str, Any]:
        """Validate, build, push; with ``context``, each stage after validate is announced in the ``progress`` XCom
        (the status's stage, and the gateway's progress line)."""
        from cloud_deploy_provider.pipeline import build, push, validate
        from cloud_deploy_provider.settings import BuildSettings

        with self.stage("validate"):
            loaded = validate(self.project, self.log.info, self.log.warning, self.connections)
            registry = self.registry(loaded.spec)
        with self.stage("build"):
            if context is not None:
                context["ti"].xcom_push(key="progress", value={"stage": "build"})
            client = self.docker_client()
            built = build(loaded, client, BuildSettings.from_env(), registry, self.log.info)
        with self.stage("push"):
            if context is not None:
                context["ti"].xcom_push(key="progress", value={"stage": "push"})
            pushed = push(built, client, registry, loaded.spec.deploy.type, self.log.info)
        return {**_validated(loaded), "image": pushed.to_dict()}


class CloudDeployOperator(CloudDeployBuildOperator):
    """Deploy a TANGO project: validate, build, push, then create or update it on its target and wait until ready.

    One task for the five stages: every task boundary costs Airflow a scheduler pass and a task
    start (~0.3 s tuned, ~1 s by default), more than a whole unchanged redeploy's own work. The
    stage in progress is the ``progress`` XCom (``building`` until ``deploy`` starts, then
    ``preparing`` for TANGO), a failure's stage is in the ``error`` XCom, and the log marks each
    stage. The task polls readiness for ``CLOUD_DEPLOY_INLINE_WAIT_SECONDS`` itself, then, when
    ``deferrable``, hands the rest of the wait (up to ``deploy.readiness.timeout_seconds``, or the
    target's own timeout) to :class:`~cloud_deploy_provider.triggers.TargetStatusTrigger`.

    :param user_id: TANGO user id (templated)
    :param project_id: TANGO project id (templated)
    :param deferrable: wait in the triggerer rather than in a worker slot (default True)
    """

    holds_project_lock = True
    operator_extra_links = (ServiceLink(),)

    def __init__(self, *, deferrable: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.deferrable = deferrable

    def run_stage(self, context: Any) -> dict[str, Any]:
        import time

        from cloud_deploy_provider.pipeline import image_ref

        result = self.validated_built_pushed(context)
        spec = self.loaded(result).spec
        target = self.target(spec)
        with self.stage("deploy"):
            # TANGO: building -> preparing; the spec, so that a deploy that fails from here still shows what it deployed
            context["ti"].xcom_push(key="progress", value={"stage": "deploy", "spec": result.get("spec")})
            result.update(target.deploy(spec, image_ref(result["image"])).to_dict())
        with self.stage("wait_ready"):
            timeout, waiting_since = target.ready_timeout_seconds(spec), time.time()

            def deferring() -> None:
                waiting = {"result": result, "stages": dict(self.stage_seconds), "since": waiting_since,
                           "timeout": timeout}
                context["ti"].xcom_push(key="progress", value={"stage": "wait_ready", "deployed": _deployed(result),
                                                               "waiting": waiting})

            outcome, status = self.wait_or_defer(target, spec, time.time() + timeout, "execute_complete", until="ready",
                                                 before_deferring=deferring)
            return self._ready(result, outcome, status.to_dict(), timeout)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resumed from the triggerer with its verdict on readiness."""
        import time

        def resumed() -> dict[str, Any]:
            waiting = context["ti"].xcom_pull(task_ids=self.task_id, key="progress")["waiting"]
            self.stage_seconds = {**waiting["stages"], "wait_ready": round(time.time() - waiting["since"], 3)}
            return self._ready(waiting["result"], event["outcome"], event["status"] or {"message": event["message"]},
                               waiting["timeout"])

        self.current_stage = "wait_ready"
        return self.recording_failures(context, resumed)

    def _ready(self, result: dict[str, Any], outcome: str, status: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The task's result: spec and image; the deploy's target, resources, URL and change; the ready status;
        the seconds each stage took. A service that failed or was not ready in time fails the task."""
        from cloud_deploy_provider.pipeline import DeploymentFailed

        if outcome == "failed":
            raise DeploymentFailed(status["message"])
        if outcome == "timeout":
            raise DeploymentFailed(f"not ready after {timeout:.0f} s: {status['message']}")
        return {**result, "url": result.get("url") or status.get("url"), "status": status,
                "stages": self.stage_seconds}


def _deployed(result: dict[str, Any]) -> dict[str, Any]:
    """What the deploy stage returned: target, resources, URL, whether it changed anything."""
    return {key: result.get(key) for key in ("target", "resources", "url", "changed")}


class CloudUndeployOperator(CloudDeployStageOperator):
    """Delete everything the project's deployment created. Idempotent.

    The target comes from ``spec`` (the last deployed spec, passed by the REST API) or else from
    the project's current deployment.yaml.
    """

    def __init__(self, *, spec: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec = spec

    def run_stage(self, context: Any) -> dict[str, Any]:
        from cloud_deploy_provider.spec import DeploymentSpec, load_spec
        from cloud_deploy_provider.workspace import SPEC_FILE_NAME, shown_path, spec_path

        last_deployed = self.spec or context["params"].get("spec")
        if last_deployed:
            spec = DeploymentSpec.model_validate(last_deployed)
        else:
            spec = load_spec(spec_path(self.project), source=shown_path(self.project, SPEC_FILE_NAME))
        target = self.target(spec)
        self.wait_for_the_deploy_task()
        removed = target.stop(spec)
        self.log.info("removed %d resource(s): %s", len(removed), ", ".join(removed) or "none (already gone)")
        return {"type": spec.deploy.type, "removed": removed}


    def wait_for_the_deploy_task(self) -> None:
        """A deploy task this stop cancelled may still be exiting, mid-way through creating something: wait
        (bounded) until its process has released the project's lock, so that what it made is removed too."""
        from cloud_deploy_provider.locks import file_lock, project_lock_path

        with file_lock(project_lock_path(self.project.key), timeout=DEPLOY_EXIT_WAIT_SECONDS) as held:
            if not held:
                self.log.warning("a deploy task of this project still runs after %d s; stopping anyway",
                                 DEPLOY_EXIT_WAIT_SECONDS)


class CloudJobOperator(CloudDeployStageOperator):
    """Run one scheduled batch job of the project to completion; its output is this task's log.

    The job runs on the runner of its ``target`` (:mod:`cloud_deploy_provider.jobs`). The image is the
    job's own ``image``, else the project's image as the build task left it. The result (state, exit
    code, last log lines) is the ``job`` XCom, also when the job fails.

    :param job: the job's name in ``schedule.jobs``
    :param deferrable: wait for the job in the triggerer past ``CLOUD_DEPLOY_INLINE_WAIT_SECONDS``
        (default True)
    """

    def __init__(self, *, job: str, deferrable: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.job = job
        self.deferrable = deferrable

    @property
    def image(self) -> dict[str, Any] | None:
        return self.validated.get("image")

    def run_stage(self, context: Any) -> dict[str, Any]:
        """Begin the job on its runner, wait for its end (in the triggerer past the inline wait), report its result;
        whatever happens, nothing of the run is left on the runner (unless deferred: it is still being watched)."""
        import time

        from cloud_deploy_provider.pipeline import image_ref

        spec = self.loaded(self.validated).spec
        job, runner = self.job_and_runner(spec)
        image = runner.image(spec, job, image_ref(self.image) if self.image else None, lambda: self.registry(spec))
        handle = runner.begin(spec, job, image)
        with self.cleaned_up_unless_deferred(lambda: runner.end(spec, job, handle)):
            watch = runner.watch(spec, job, handle)
            outcome, status = self.wait_or_defer(
                watch, spec, time.time() + runner.deadline_seconds(spec, job), "job_ended",
                watch=JOB_WATCH, watch_args={"job": job.name, "handle": handle},
            )
            result = runner.result_of(job, watch, outcome, status.to_dict())
        return self.reported(context, job, result)

    def job_ended(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resumed from the triggerer: the job ended (or overran); remove what is left of it, report its result."""
        spec = self.loaded(self.validated).spec
        job, runner = self.job_and_runner(spec)
        handle = event["watch_args"]["handle"]

        def ended() -> dict[str, Any]:
            try:
                status = event["status"] or {"message": event["message"]}
                result = runner.result_of(job, runner.watch(spec, job, handle), event["outcome"], status)
            finally:
                runner.end(spec, job, handle)
            return self.reported(context, job, result)

        self.current_stage = "run"
        return self.recording_failures(context, ended)

    def job_and_runner(self, spec: Any) -> tuple[Any, Any]:
        from cloud_deploy_provider.jobs import make_job_runner

        job = next(job for job in spec.schedule.jobs if job.name == self.job)
        return job, make_job_runner(self.project, job.target, self.log.info, self.connections)

    def reported(self, context: Any, job: Any, result: Any) -> dict[str, Any]:
        """The result as the ``job`` XCom; a run that did not complete fails the task with its message."""
        context["ti"].xcom_push(key="job", value=result.to_dict())
        if result.state != "completed":
            raise RuntimeError(f"job {job.name} {result.message()}")
        self.log.info("job %s %s", job.name, result.message())
        return result.to_dict()


def deploy_pipeline(user_id: str, project_id: str) -> CloudDeployOperator:
    """The ``deploy`` task (validate, build, push, deploy, wait until ready) inside the current DAG."""
    return CloudDeployOperator(task_id="deploy", user_id=user_id, project_id=project_id, **retry_arguments())
