"""Per-project scheduled DAGs, generated from the shared folder: redeploys and batch jobs.

``dags/cloud_scheduled.py`` calls :func:`build_dags`. Every project whose ``deployment.yaml`` has a
``schedule`` section gets ``cloud_redeploy__<user>__<project>`` (build -> deploy on
``schedule.redeploy``: the build is skipped and the deploy is a no-op recorded as ``changed: false``
when nothing changed) and one ``cloud_job__<user>__<project>__<job>`` per job (build -> run, or
validate -> run for a job with its own ``image``). A project
appears or disappears with its ``schedule`` section.

Parse cost stays bounded: a yaml that does not contain the word ``schedule`` is skipped after one
read; only the others are validated. A broken yaml breaks only its own DAGs: Airflow records an
exception raised while it bags a DAG as an import error of the file and keeps the file's other DAGs,
so the broken projects are gathered into one DAG whose ``validate`` raises their problems, each
naming its yaml file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from cloud_deploy_provider.errors import UserError
from cloud_deploy_provider.identity import InvalidIdentifier, ProjectRef
from cloud_deploy_provider.jobs import JOB_RUNNERS, run_timeout_seconds
from cloud_deploy_provider.spec import DeploymentSpec, SpecError, load_spec
from cloud_deploy_provider.workspace import SPEC_FILE_NAME, shown_as_shared

START_DATE = datetime(2024, 1, 1, tzinfo=timezone.utc)
TAGS = ["cloud-deploy", "scheduled"]


@dataclass(frozen=True)
class ScheduledProject:
    ref: ProjectRef
    spec: DeploymentSpec


@dataclass(frozen=True)
class BrokenProject:
    path: Path
    problem: str


class ScheduleError(UserError):
    """deployment.yaml files with a schedule that cannot be read; each line names its file."""


class BrokenProjectsDag(DAG):
    """Stands for the projects whose yaml is broken: bagging it raises their problems as an import error."""

    def validate(self) -> None:
        raise ScheduleError(self.description)


def redeploy_dag_id(ref: ProjectRef) -> str:
    return f"cloud_redeploy__{ref.user_id}__{ref.project_id}"


def job_dag_id(ref: ProjectRef, job: str) -> str:
    return f"cloud_job__{ref.user_id}__{ref.project_id}__{job}"


def scheduled_projects(root: Path, only: str | None = None) -> list[ScheduledProject | BrokenProject]:
    """Projects with a schedule; with ``only`` (a DAG id), just the project that DAG id can belong to."""
    found: list[ScheduledProject | BrokenProject] = []
    for path in sorted((root / "common").glob(f"*/*/{SPEC_FILE_NAME}")):
        names = f"__{path.parent.parent.name}__{path.parent.name}"
        if only and not (only.endswith(names) or f"{names}__" in only):
            continue
        try:
            if b"schedule" not in path.read_bytes():
                continue
            ref = ProjectRef(path.parent.parent.name, path.parent.name)
            spec = load_spec(path, source=shown_as_shared(path, root))
        except (SpecError, InvalidIdentifier, OSError) as error:
            found.append(BrokenProject(path, str(error)))
            continue
        if spec.schedule is not None:
            found.append(ScheduledProject(ref, spec))
    return found


def build_dags(root: Path, only: str | None = None) -> list[DAG]:
    """Every project's DAGs; ``only`` (the DAG a worker is about to run) skips reading the other projects."""
    dags: list[DAG] = []
    broken: list[BrokenProject] = []
    for project in scheduled_projects(root, only):
        if isinstance(project, BrokenProject):
            broken.append(project)
            continue
        schedule = project.spec.schedule
        if schedule.redeploy:
            dags.append(_redeploy_dag(project))
        dags.extend(_job_dag(project, job) for job in schedule.jobs)
    if broken:
        dags.append(_broken_dag(broken, root))
    return dags


def _scheduled_dag(dag_id: str, description: str, schedule: str, *tags: str) -> DAG:
    return DAG(dag_id=dag_id, description=description, schedule=schedule, start_date=START_DATE, catchup=False,
               max_active_runs=1, is_paused_upon_creation=False, tags=[*TAGS, *tags])


def _redeploy_dag(project: ScheduledProject) -> DAG:
    from cloud_deploy_provider.operators.cloud_deploy import deploy_pipeline

    ref = project.ref
    description = f"Scheduled redeploy of {ref.user_id}/{ref.project_id}: rolls out only a changed image"
    with _scheduled_dag(redeploy_dag_id(ref), description, project.spec.schedule.redeploy) as dag:
        deploy_pipeline(ref.user_id, ref.project_id)
    return dag


def _job_dag(project: ScheduledProject, job: Any) -> DAG:
    from datetime import timedelta

    from cloud_deploy_provider.operators.cloud_deploy import (
        CloudDeployBuildOperator,
        CloudDeployValidateOperator,
        CloudJobOperator,
        retry_arguments,
    )

    ref = project.ref
    ids = {"user_id": ref.user_id, "project_id": ref.project_id}
    description = f"Batch job {job.name} of {ref.user_id}/{ref.project_id}"
    runner = JOB_RUNNERS[job.target]
    with _scheduled_dag(job_dag_id(ref, job.name), description, job.cron, "job") as dag:
        # a job with its own image needs no build: validate only, then run
        first = (CloudDeployValidateOperator(task_id="validate", **ids, **retry_arguments()) if job.image
                 else CloudDeployBuildOperator(task_id="build", **ids, **retry_arguments()))
        CloudJobOperator(
            task_id="run", job=job.name, validated=first.output,
            retries=0 if runner.retries_itself else job.retries,
            execution_timeout=timedelta(seconds=run_timeout_seconds(job)), **ids,
        )
    return dag  # the XCom argument chains build (or validate) -> run


def _broken_dag(broken: list[BrokenProject], root: Path) -> DAG:
    problems = "\n".join(f"{shown_as_shared(project.path, root)}: {project.problem}" for project in broken)
    with BrokenProjectsDag(dag_id="cloud_scheduled__broken_projects", description=problems, schedule=None,
                           start_date=START_DATE, tags=TAGS) as dag:
        pass
    return dag
