"""The one place the REST API touches Airflow internals: trigger, read and cancel DAG runs.

These are not Airflow's public interface (their signatures moved between 3.x minors), which is
why they are wrapped here and the package pins ``apache-airflow>=3.3,<3.4``. Everything is read
straight from the metadata database; ``index.py`` keeps what it read in memory.

Run ids are ``<kind>~<user>~<project>~<sequence>``: the unique (dag_id, run_id) constraint then
turns concurrent ``/start`` calls for one project into exactly one run, across processes.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from cloud_deploy_provider.errors import CloudDeployError, TransientError
from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.status import RunSnapshot

DEPLOY_DAG = "cloud_deploy"
UNDEPLOY_DAG = "cloud_undeploy"
RUN_KIND = {DEPLOY_DAG: "deploy", UNDEPLOY_DAG: "undeploy"}
_SEQUENCE = re.compile(r"~(\d+)$")


UNFINISHED_STATES = ("queued", "running")


class RunAlreadyExists(CloudDeployError):
    """Another process queued the same run id first: the run the caller wanted exists."""


class DagNotLoaded(TransientError):
    """The DAG is not in the metadata database yet (the dag-processor has not parsed it): try again shortly."""


def _run_prefix(dag_id: str, project: ProjectRef) -> str:
    return f"{RUN_KIND[dag_id]}~{project.key}~"


def project_of_run_id(dag_id: str, run_id: str) -> ProjectRef | None:
    """The project of a run the REST API triggered (``<kind>~<user>~<project>~<sequence>``), else None."""
    parts = run_id.split("~")
    if len(parts) != 4 or parts[0] != RUN_KIND.get(dag_id) or not parts[3].isdigit():
        return None
    return ProjectRef(parts[1], parts[2])


def snapshots(session: Any, ids: list[int], batch: int = 400) -> list[RunSnapshot]:
    """Snapshots of the runs with these database ids: three queries per ``batch`` runs, whatever their number."""
    from airflow.models import DagRun, TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    result = []
    for offset in range(0, len(ids), batch):
        chunk = ids[offset:offset + batch]
        dag_runs = session.execute(
            select(DagRun.id, DagRun.dag_id, DagRun.run_id, DagRun._state.label("state"), DagRun.queued_at,
                   DagRun.start_date, DagRun.end_date).where(DagRun.id.in_(chunk))
        ).all()
        tasks: dict[tuple[str, str], list[Any]] = {}
        for row in session.execute(
            select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.state,
                   TaskInstance.last_heartbeat_at)
            .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id))
            .where(DagRun.id.in_(chunk))
        ):
            tasks.setdefault((row.dag_id, row.run_id), []).append(row)
        xcoms: dict[int, dict[tuple[str, str], Any]] = {}
        for row in session.execute(
            select(XComModel.dag_run_id, XComModel.task_id, XComModel.key, XComModel.value).where(
                XComModel.dag_run_id.in_(chunk)
            )
        ):
            xcoms.setdefault(row.dag_run_id, {})[(row.task_id, row.key)] = _xcom_value(row.value)
        result += [_snapshot_of(run, tasks.get((run.dag_id, run.run_id), []), xcoms.get(run.id, {})) for run in dag_runs]
    return result


def _snapshot_of(run: Any, rows: list[Any], xcoms: dict[tuple[str, str], Any]) -> RunSnapshot:
    updated = run.end_date or run.start_date or run.queued_at
    return RunSnapshot(
        dag_id=run.dag_id,
        run_id=run.run_id,
        id=run.id,
        state=str(run.state.value if hasattr(run.state, "value") else run.state),
        task_states={row.task_id: (str(row.state.value) if hasattr(row.state, "value") else row.state) for row in rows},
        xcoms=xcoms,
        updated_at=updated.isoformat() if updated else None,
        stalled=frozenset(row.task_id for row in rows if _stalled(row.state, row.last_heartbeat_at)),
        queued_at=_iso(run.queued_at),
        started_at=_iso(run.start_date),
        ended_at=_iso(run.end_date),
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _stalled(state: Any, last_heartbeat_at: Any) -> bool:
    """A running task whose process has been silent for longer than the scheduler tolerates.

    The scheduler fails (and retries) such a task only once it runs itself; until then the run
    still says ``running``, which is not the truth when the whole stack was killed.
    """
    from airflow.configuration import conf

    if str(getattr(state, "value", state)) != "running" or last_heartbeat_at is None:
        return False
    if last_heartbeat_at.tzinfo is None:
        last_heartbeat_at = last_heartbeat_at.replace(tzinfo=timezone.utc)
    limit = timedelta(seconds=conf.getint("scheduler", "task_instance_heartbeat_timeout"))
    return datetime.now(timezone.utc) - last_heartbeat_at > limit


def _xcom_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def trigger(dag_id: str, project: ProjectRef, conf: dict[str, Any], user_name: str | None = None) -> str:
    """Queue a run with the project's next sequence number; raises RunAlreadyExists when the project's latest run
    of ``dag_id`` has not finished, or another process queued the same number first.

    The two checks together keep one run at a time across processes (several gateway workers, the UI), whose
    indexes may be a refresh behind: two that read the same latest run race for the same run id, which the
    database lets only one create; one that reads a newer run finds it unfinished."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    prefix = _run_prefix(dag_id, project)
    with create_session() as session:
        latest = session.execute(
            select(DagRun.run_id, DagRun._state)
            .where(DagRun.dag_id == dag_id, DagRun.run_id.startswith(prefix, autoescape=True))
            .order_by(DagRun.id.desc())
            .limit(1)
        ).first()
    last, state = (latest[0], str(getattr(latest[1], "value", latest[1]))) if latest else (None, None)
    if state in UNFINISHED_STATES:
        raise RunAlreadyExists(last)
    sequence = int(_SEQUENCE.search(last)[1]) + 1 if last and _SEQUENCE.search(last) else 1
    run_id = f"{prefix}{sequence:06d}"
    try:
        trigger_dag(
            dag_id,
            run_id=run_id,
            conf=conf,
            # SQLite compares run_after as text with and without microseconds, so a run due "now"
            # waits for the next whole second (~0.5 s on average); one due a second ago does not.
            run_after=datetime.now(timezone.utc) - timedelta(seconds=1),
            triggered_by=DagRunTriggeredByType.REST_API,
            triggering_user_name=user_name,
        )
    except (DagRunAlreadyExists, IntegrityError):
        raise RunAlreadyExists(run_id) from None
    except DagNotFound:
        raise DagNotLoaded(f"the {dag_id} DAG is not loaded yet; retry in a few seconds") from None
    return run_id


def cancel(dag_id: str, run_id: str) -> None:
    """Mark an unfinished run failed, as the REST API's PATCH state=failed does; running tasks get killed."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models import DagRun
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        dag = DBDagBag().get_dag_for_run(run, session=session)
        set_dag_run_state_to_failed(dag=dag, run_id=run_id, commit=True, session=session)
