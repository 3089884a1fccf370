"""The one place the REST API touches Airflow internals: trigger, read and cancel DAG runs.

These are not Airflow's public interface (their signatures moved between 3.x minors), which is
why they are wrapped here and the package pins ``apache-airflow>=3.3,<3.4``. Everything is read
straight from the metadata database, so a status answer costs a few queries, no call-outs.

Run ids are ``<kind>~<user>~<project>~<sequence>``: the unique (dag_id, run_id) constraint then
turns concurrent ``/start`` calls for one project into exactly one run, across processes.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.status import RunSnapshot

DEPLOY_DAG = "cloud_deploy"
UNDEPLOY_DAG = "cloud_undeploy"
RUN_KIND = {DEPLOY_DAG: "deploy", UNDEPLOY_DAG: "undeploy"}
RECENT_RUNS_SCANNED = 200
_SEQUENCE = re.compile(r"~(\d+)$")


class RunAlreadyExists(RuntimeError):
    pass


class DagNotLoaded(RuntimeError):
    pass


def _run_prefix(dag_id: str, project: ProjectRef) -> str:
    return f"{RUN_KIND[dag_id]}~{project.key}~"


def latest_run(dag_id: str, project: ProjectRef) -> RunSnapshot | None:
    """The project's newest run of ``dag_id``: REST-triggered (by run id) or UI-triggered (by conf)."""
    from sqlalchemy import select

    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        by_id = session.scalars(
            select(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.run_id.startswith(_run_prefix(dag_id, project), autoescape=True))
            .order_by(DagRun.id.desc())
            .limit(1)
        ).first()
        recent = session.execute(  # runs triggered another way (the UI's form): by their conf
            select(DagRun.id, DagRun.conf)
            .where(DagRun.dag_id == dag_id, ~DagRun.run_id.startswith(f"{RUN_KIND[dag_id]}~", autoescape=True))
            .order_by(DagRun.id.desc())
            .limit(RECENT_RUNS_SCANNED)
        ).all()
        by_conf_id = next((row.id for row in recent if _conf_matches(row.conf, project)), None)
        run = by_id
        if by_conf_id is not None and (by_id is None or by_conf_id > by_id.id):
            run = session.get(DagRun, by_conf_id)
        return _snapshot(session, run) if run is not None else None


def _conf_matches(conf: Any, project: ProjectRef) -> bool:
    return isinstance(conf, dict) and conf.get("user_id") == project.user_id and conf.get("project_id") == project.project_id


def _snapshot(session: Any, run: Any) -> RunSnapshot:
    from sqlalchemy import select

    from airflow.models import TaskInstance
    from airflow.models.xcom import XComModel

    rows = session.execute(
        select(TaskInstance.task_id, TaskInstance.state, TaskInstance.last_heartbeat_at).where(
            TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id
        )
    ).all()
    task_states = {row.task_id: row.state for row in rows}
    xcoms = {
        (row.task_id, row.key): _xcom_value(row.value)
        for row in session.execute(
            select(XComModel.task_id, XComModel.key, XComModel.value).where(XComModel.dag_run_id == run.id)
        )
    }
    updated = run.end_date or run.start_date or run.queued_at
    return RunSnapshot(
        dag_id=run.dag_id,
        run_id=run.run_id,
        id=run.id,
        state=str(run.state.value if hasattr(run.state, "value") else run.state),
        task_states={k: (str(v.value) if hasattr(v, "value") else v) for k, v in task_states.items()},
        xcoms=xcoms,
        updated_at=updated.isoformat() if updated else None,
        stalled=frozenset(row.task_id for row in rows if _stalled(row.state, row.last_heartbeat_at)),
    )


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
    """Queue a run with the project's next sequence number; raises RunAlreadyExists on a race."""
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    prefix = _run_prefix(dag_id, project)
    with create_session() as session:
        last = session.scalars(
            select(DagRun.run_id)
            .where(DagRun.dag_id == dag_id, DagRun.run_id.startswith(prefix, autoescape=True))
            .order_by(DagRun.id.desc())
            .limit(1)
        ).first()
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
    from sqlalchemy import select

    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models import DagRun
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        dag = DBDagBag().get_dag_for_run(run, session=session)
        set_dag_run_state_to_failed(dag=dag, run_id=run_id, commit=True, session=session)


def run_snapshot(dag_id: str, run_id: str) -> RunSnapshot | None:
    from sqlalchemy import select

    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).first()
        return _snapshot(session, run) if run is not None else None


def wait_finished(dag_id: str, run_id: str, timeout: float, interval: float = 0.5) -> RunSnapshot | None:
    """Poll one run until it succeeds or fails; returns the last snapshot (unfinished on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = run_snapshot(dag_id, run_id)
        if (snapshot is not None and snapshot.finished) or time.monotonic() >= deadline:
            return snapshot
        time.sleep(interval)
