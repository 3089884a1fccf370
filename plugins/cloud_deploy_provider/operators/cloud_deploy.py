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

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

MAX_ERROR_CHARS = 4000


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


class CloudDeployStageOperator(BaseOperator):
    """Runs :meth:`run_stage`; any failure becomes an ``error`` XCom and a clear task error.

    :param user_id: TANGO user id (templated)
    :param project_id: TANGO project id (templated)
    :param validated: what the build (or validate) task returned: the spec, its folder, the image
    """

    template_fields: Sequence[str] = ("user_id", "project_id", "validated")

    def __init__(self, *, user_id: str, project_id: str, validated: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.user_id = user_id
        self.project_id = project_id
        self.validated = validated
        self.current_stage = self.task_id
        self.stage_seconds: dict[str, float] = {}

    def execute(self, context: Any) -> Any:
        return self.recording_failures(context, self.run_stage, context)

    def recording_failures(self, context: Any, function: Any, *args: Any, **kwargs: Any) -> Any:
        from cloud_deploy_provider.errors import is_transient

        try:
            return function(*args, **kwargs)
        except Exception as error:  # TaskDeferred is a BaseException and passes through
            message = str(error) or type(error).__name__
            context["ti"].xcom_push(key="error", value={"stage": self.current_stage,
                                                        "message": message[:MAX_ERROR_CHARS]})
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
        from cloud_deploy_provider.registry import Registry
        from cloud_deploy_provider.settings import EngineSettings
        from cloud_deploy_provider.targets import target_class

        image_registry = getattr(target_class(spec.deploy.type), "image_registry", None)
        if image_registry is not None:
            return image_registry(self.project, spec, self.log.info)
        conn_id = EngineSettings.from_env().registry_conn_id
        if not conn_id:
            return None
        return Registry.from_connection(BaseHook.get_connection(conn_id))

    def docker_client(self):
        from cloud_deploy_provider.hooks.docker_engine import engine_client

        return engine_client()


def _validated(loaded: Any) -> dict[str, Any]:
    return {"spec": loaded.spec.to_dict(), "folder": str(loaded.folder), "type": loaded.spec.deploy.type}


class CloudDeployValidateOperator(CloudDeployStageOperator):
    """Check the identifiers, deployment.yaml, the files it names, and that the target accepts the spec."""

    def run_stage(self, context: Any) -> dict[str, Any]:
        from cloud_deploy_provider.pipeline import validate

        with self.stage("validate"):
            return _validated(validate(self.project, self.log.info))


class CloudDeployBuildOperator(CloudDeployStageOperator):
    """Validate, build the image (skipped when the engine or registry has its build key), push it.

    The result is what a later task needs: the spec as read now, its folder, and the image
    (``image``: reference, digest, build key, ...). A retry after a failed push finds the image by
    its build key and does not build again.
    """

    def run_stage(self, context: Any) -> dict[str, Any]:
        return self.validated_built_pushed()

    def validated_built_pushed(self) -> dict[str, Any]:
        from cloud_deploy_provider.pipeline import build, push, validate
        from cloud_deploy_provider.settings import BuildSettings

        with self.stage("validate"):
            loaded = validate(self.project, self.log.info)
            registry = self.registry(loaded.spec)
        with self.stage("build"):
            client = self.docker_client()
            built = build(loaded, client, BuildSettings.from_env(), registry, self.log.info)
        with self.stage("push"):
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

    def __init__(self, *, deferrable: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.deferrable = deferrable

    def run_stage(self, context: Any) -> dict[str, Any]:
        import time

        from cloud_deploy_provider.pipeline import image_ref, make_target, ready_timeout, wait_ready
        from cloud_deploy_provider.settings import PipelineSettings
        from cloud_deploy_provider.triggers import TargetStatusTrigger

        result = self.validated_built_pushed()
        spec = self.loaded(result).spec
        target = make_target(self.project, spec.deploy.type, self.log.info)
        with self.stage("deploy"):
            context["ti"].xcom_push(key="progress", value={"stage": "deploy"})  # TANGO: building -> preparing
            result.update(target.deploy(spec, image_ref(result["image"])).to_dict())
        with self.stage("wait_ready"):
            deadline = time.time() + ready_timeout(target, spec)
            inline = PipelineSettings.from_env().inline_wait_seconds if self.deferrable else None
            status = wait_ready(target, spec, self.log.info, deadline,
                                until=time.time() + inline if inline is not None else None)
            if status is None:
                self.log.info("not ready after %.0f s: the triggerer waits for the rest (until %s)", inline,
                              time.strftime("%H:%M:%S", time.localtime(deadline)))
                context["ti"].xcom_push(key="progress", value={"stage": "wait_ready", "deployed": _deployed(result)})
                result.update(stages=self.stage_seconds, waiting_since=time.time())
                self.defer(
                    trigger=TargetStatusTrigger(self.user_id, self.project_id, spec.to_dict(), deadline,
                                                spec.deploy.readiness.interval_seconds),
                    method_name="execute_complete",
                    kwargs={"result": result},
                )
        return _ready(result, status.to_dict(), self.stage_seconds)

    def execute_complete(self, context: Any, event: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        self.current_stage = "wait_ready"
        return self.recording_failures(context, self._resumed, event, result)

    def _resumed(self, event: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        from cloud_deploy_provider.pipeline import DeploymentFailed

        import time

        stages = result.pop("stages", {})
        stages["wait_ready"] = round(stages.get("wait_ready", 0) + time.time() - result.pop("waiting_since"), 3)
        self.stage_seconds = stages
        if event["outcome"] == "ready":
            return _ready(result, event["status"], stages)
        if event["outcome"] == "timeout":
            raise DeploymentFailed(f"not ready by its deadline: {event['message']}")
        raise DeploymentFailed(event["message"])


DEPLOY_RESULT_KEYS = ("target", "resources", "url", "changed")


def _deployed(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result.get(key) for key in DEPLOY_RESULT_KEYS}


def _ready(result: dict[str, Any], status: dict[str, Any], stages: dict[str, float]) -> dict[str, Any]:
    """The deploy task's result: spec and image; the deploy's target, resources, URL and change; the ready
    status; the seconds each stage took."""
    return {**result, "url": result.get("url") or status.get("url"), "status": status, "stages": stages}


class CloudUndeployOperator(CloudDeployStageOperator):
    """Delete everything the project's deployment created. Idempotent.

    The target comes from ``spec`` (the last deployed spec, passed by the REST API) or else from
    the project's current deployment.yaml.
    """

    def __init__(self, *, spec: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec = spec

    def run_stage(self, context: Any) -> dict[str, Any]:
        from cloud_deploy_provider.pipeline import make_target
        from cloud_deploy_provider.spec import DeploymentSpec, load_spec
        from cloud_deploy_provider.workspace import spec_path

        last_deployed = self.spec or context["params"].get("spec")
        if last_deployed:
            spec = DeploymentSpec.model_validate(last_deployed)
        else:
            spec = load_spec(spec_path(self.project))
        target = make_target(self.project, spec.deploy.type, self.log.info)
        removed = target.stop(spec)
        self.log.info("removed %d resource(s): %s", len(removed), ", ".join(removed) or "none (already gone)")
        return {"type": spec.deploy.type, "removed": removed}


class CloudJobOperator(CloudDeployStageOperator):
    """Run one scheduled batch job of the project to completion; its output is this task's log.

    The image is the job's own ``image``, else the project's image as the build task left it. The
    result (state, exit code, last log lines) is the ``job`` XCom, also when the job fails.

    :param job: the job's name in ``schedule.jobs``
    """

    def __init__(self, *, job: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.job = job

    @property
    def image(self) -> dict[str, Any] | None:
        return self.validated.get("image")

    def run_stage(self, context: Any) -> dict[str, Any]:
        from cloud_deploy_provider.jobs import DockerJobRunner

        spec = self.loaded(self.validated).spec
        job = next(job for job in spec.schedule.jobs if job.name == self.job)
        if job.target == "aws-batch":
            return self.run_on_batch(context, spec, job)
        if job.target == "kubernetes":
            return self.run_on_kubernetes(context, spec, job)
        image = job.image or self.image["reference"]
        resources = job.resources
        runner = DockerJobRunner(self.project, log=self.log.info)
        if job.image:
            registry = self.registry(spec)
            same_host = registry is not None and image.startswith(f"{registry.host}/")
            runner.pull(image, registry.auth_config() if same_host else None)
        self.log.info("job %s: %s %s", job.name, image, " ".join(job.command or ["(the image's command)"]))
        result = runner.run(job.name, image, job.command, env={**spec.deploy.env, **job.env},
                            timeout_seconds=job.timeout_seconds, cpu=resources.cpu, memory_mb=resources.memory,
                            gpus=resources.gpu, work_dir=spec.deploy.work_dir if job.image is None else None)
        return self.reported(context, job, result)

    def run_on_kubernetes(self, context: Any, spec: Any, job: Any) -> dict[str, Any]:
        """A batch/v1 Job in the kubernetes connection's cluster, deleted with its pods afterwards."""
        from cloud_deploy_provider.jobs import JobError
        from cloud_deploy_provider.kubernetes_jobs import KubernetesJobRunner
        from cloud_deploy_provider.pipeline import image_ref

        if job.image:
            image = job.image
        else:
            built = image_ref(self.image)
            if not built.digest:
                raise JobError(f"job {job.name}: a kubernetes job runs the project's image from a registry, and "
                               "none is configured: set CLOUD_DEPLOY_REGISTRY_CONN_ID, or give the job an image")
            image = built.pinned
        runner = KubernetesJobRunner(self.project, log=self.log.info)
        result = runner.run(spec, job, image, work_dir=spec.deploy.work_dir if job.image is None else None)
        return self.reported(context, job, result)

    def reported(self, context: Any, job: Any, result: Any) -> dict[str, Any]:
        """The result as the ``job`` XCom; a run that did not complete fails the task with its message."""
        context["ti"].xcom_push(key="job", value=result.to_dict())
        if result.state != "completed":
            raise RuntimeError(f"job {job.name} {result.message()}")
        self.log.info("job %s %s", job.name, result.message())
        return result.to_dict()

    def run_on_batch(self, context: Any, spec: Any, job: Any) -> dict[str, Any]:
        """Submit to AWS Batch and wait; the job definition and any job still running are removed afterwards."""
        from cloud_deploy_provider.jobs import batch_job_spec
        from cloud_deploy_provider.pipeline import DeploymentFailed, image_ref, wait_ready
        from cloud_deploy_provider.targets import ImageRef
        from cloud_deploy_provider.targets.aws_batch import BatchTarget

        job_spec = batch_job_spec(spec, job)
        target = BatchTarget(self.project, log=self.log.info)
        try:
            target.deploy(job_spec, ImageRef(job.image) if job.image else image_ref(self.image))
            try:
                status = wait_ready(target, job_spec, self.log.info)
                result = {"state": "completed", "exit_code": 0, "message": status.message}
            except DeploymentFailed as failure:
                details = target.status(job_spec).details
                result = {"state": "failed", "exit_code": details.get("exit_code"), "message": str(failure)}
        finally:
            target.terminate_jobs(job_spec)
            target.deregister_job_definitions(job_spec)
        context["ti"].xcom_push(key="job", value=result)
        if result["state"] != "completed":
            raise RuntimeError(f"job {job.name}: {result['message']}")
        return result


def deploy_pipeline(user_id: str, project_id: str) -> CloudDeployOperator:
    """The ``deploy`` task (validate, build, push, deploy, wait until ready) inside the current DAG."""
    return CloudDeployOperator(task_id="deploy", user_id=user_id, project_id=project_id, **retry_arguments())
