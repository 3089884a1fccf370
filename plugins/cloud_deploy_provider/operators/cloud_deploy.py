"""Operators for each stage of a deployment: thin glue between Airflow and the pipeline core.

Each resolves connections and settings, calls :mod:`cloud_deploy_provider.pipeline`, logs, and
returns a small JSON result for XCom. A failure is also recorded as the ``error`` XCom, which is
where the REST status reads the reason from. Heavy imports happen inside ``execute`` so DAG
files parse fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException

MAX_ERROR_CHARS = 4000


class CloudDeployStageOperator(BaseOperator):
    """Runs :meth:`run_stage`; any failure becomes an ``error`` XCom and a clear task error."""

    template_fields: Sequence[str] = ("user_id", "project_id", "validated")

    def __init__(self, *, user_id: str, project_id: str, validated: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.user_id = user_id
        self.project_id = project_id
        self.validated = validated

    def execute(self, context: Any) -> Any:
        try:
            return self.run_stage(context)
        except Exception as error:
            message = str(error) or type(error).__name__
            context["ti"].xcom_push(key="error", value=message[:MAX_ERROR_CHARS])
            raise AirflowException(message) from error

    def run_stage(self, context: Any) -> Any:
        raise NotImplementedError

    @property
    def project(self):
        from cloud_deploy_provider.identity import ProjectRef

        return ProjectRef(self.user_id, self.project_id)

    def loaded(self, validated: dict[str, Any]):
        """The project as the validate task saw it, so later edits to the yaml do not leak into this run."""
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


class CloudDeployValidateOperator(CloudDeployStageOperator):
    """Check the identifiers, deployment.yaml, the files it names, and that the target accepts the spec."""

    def run_stage(self, context: Any) -> dict[str, Any]:
        from cloud_deploy_provider.pipeline import load_project, make_target

        loaded = load_project(self.user_id, self.project_id)
        self.log.info("%s/%s: deploy.type %s, service %s", self.user_id, self.project_id,
                      loaded.spec.deploy.type, loaded.spec.deploy.service_name)
        target = make_target(self.project, loaded.spec.deploy.type, self.log.info)
        if hasattr(target, "preflight"):
            target.preflight(loaded.spec)
            self.log.info("the target accepts the spec (network, roles and sizes checked)")
        return {"spec": loaded.spec.to_dict(), "folder": str(loaded.folder), "type": loaded.spec.deploy.type}


class CloudDeployBuildOperator(CloudDeployStageOperator):
    """Build the image, or skip when the engine or registry already has its build key."""

    def run_stage(self, context: Any) -> dict[str, Any]:
        from cloud_deploy_provider.pipeline import build
        from cloud_deploy_provider.settings import BuildSettings

        loaded = self.loaded(self.validated)
        built = build(loaded, self.docker_client(), BuildSettings.from_env(), self.registry(loaded.spec), self.log.info)
        return built.to_dict()


class CloudDeployPushOperator(CloudDeployStageOperator):
    """Push to the configured registry and confirm the digest; a no-op for the docker target without one."""

    template_fields: Sequence[str] = (*CloudDeployStageOperator.template_fields, "built")

    def __init__(self, *, built: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.built = built

    def run_stage(self, context: Any) -> dict[str, Any]:
        from cloud_deploy_provider.pipeline import BuiltImage, push

        built = BuiltImage(**self.built)
        registry = self.registry(self.loaded(self.validated).spec)
        return push(built, self.docker_client(), registry, self.validated["type"], self.log.info).to_dict()


class CloudDeployTargetOperator(CloudDeployStageOperator):
    """Create or update the deployment on its target."""

    template_fields: Sequence[str] = (*CloudDeployStageOperator.template_fields, "image")

    def __init__(self, *, image: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.image = image

    def run_stage(self, context: Any) -> dict[str, Any]:
        from cloud_deploy_provider.pipeline import image_ref, make_target

        loaded = self.loaded(self.validated)
        target = make_target(self.project, loaded.spec.deploy.type, self.log.info)
        return target.deploy(loaded.spec, image_ref(self.image)).to_dict()


class CloudDeployWaitReadyOperator(CloudDeployStageOperator):
    """Wait until the target reports the service ready, within ``deploy.readiness.timeout_seconds``."""

    def run_stage(self, context: Any) -> dict[str, Any]:
        from cloud_deploy_provider.pipeline import make_target, wait_ready

        loaded = self.loaded(self.validated)
        target = make_target(self.project, loaded.spec.deploy.type, self.log.info)
        return wait_ready(target, loaded.spec, self.log.info).to_dict()


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

    The image is the job's own ``image``, else the project's image as the push task left it. The
    result (state, exit code, last log lines) is the ``job`` XCom, also when the job fails.
    """

    template_fields: Sequence[str] = (*CloudDeployStageOperator.template_fields, "image")

    def __init__(self, *, job: str, image: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.job = job
        self.image = image

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


def deploy_pipeline(user_id: str, project_id: str) -> CloudDeployWaitReadyOperator:
    """validate -> build -> push -> deploy -> wait_ready, inside the current DAG; returns the last task."""
    project = {"user_id": user_id, "project_id": project_id}
    validate = CloudDeployValidateOperator(task_id="validate", **project)
    build = CloudDeployBuildOperator(task_id="build", validated=validate.output, **project)
    push = CloudDeployPushOperator(task_id="push", validated=validate.output, built=build.output, **project)
    deploy = CloudDeployTargetOperator(task_id="deploy", validated=validate.output, image=push.output, **project)
    wait_ready = CloudDeployWaitReadyOperator(task_id="wait_ready", validated=validate.output, **project)
    deploy >> wait_ready
    return wait_ready
