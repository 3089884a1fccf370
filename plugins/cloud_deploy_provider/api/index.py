"""Every known project's latest deploy and undeploy run and its status, in memory, kept fresh.

A status answer is a dictionary lookup: TANGO's manager polls every project it knows, so reading
the metadata database per request (a few queries, ~4 ms of CPU) capped the gateway near 140
answers/s. One refresh (``REFRESH_SECONDS``, in a background thread) reads what changed since
the last one, whatever the size of the history:

- runs newer than the newest seen (by id), each assigned to its project by run id or by conf;
- the latest runs that are unfinished (their tasks and XComs move) or whose row was updated;
- the number of runs, so that a deleted run (the UI can delete them) forces a full reload.

Then only the projects whose latest runs changed are snapshotted again (two batched queries)
and their status derived. Each change of a status is handed to the listeners (the gateway logs
it). Answers are at most one refresh behind the database; a process that triggered a run
refreshes at once, so its own ``/start`` and ``/stop`` show immediately.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from cloud_deploy_provider.api import runs
from cloud_deploy_provider.identity import InvalidIdentifier, ProjectRef
from cloud_deploy_provider.status import DeploymentStatus, RunSnapshot, derive_status

log = logging.getLogger(__name__)

REFRESH_SECONDS = 0.25
# Rows are stamped by the writer before its commit: re-reading this much of the past catches a
# transaction that committed after a refresh that started later than its stamp.
UPDATE_OVERLAP = timedelta(seconds=5)
_DAGS = (runs.DEPLOY_DAG, runs.UNDEPLOY_DAG)


@dataclass(frozen=True)
class Entry:
    """One project as the index knows it."""

    project: ProjectRef
    deploy: RunSnapshot | None
    undeploy: RunSnapshot | None
    status: DeploymentStatus | None


Listener = Callable[[ProjectRef, "DeploymentStatus | None", "DeploymentStatus | None"], None]


class DeploymentIndex:
    def __init__(self, refresh_seconds: float = REFRESH_SECONDS):
        self.refresh_seconds = refresh_seconds
        self.entries: dict[str, Entry] = {}
        self.refreshed_at = 0.0  # time.monotonic() when the last refresh started
        self._latest: dict[str, dict[str, int]] = {}  # project key -> dag id -> latest run id
        self._project_of_run: dict[int, str] = {}  # latest runs only
        self._run_count = 0
        self._max_id = 0
        self._since: datetime | None = None
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._last_failure: str | None = None

    # -- reading -----------------------------------------------------------------------------------

    def get(self, project: ProjectRef) -> Entry | None:
        """The project's entry, no older than one refresh (refreshing here if the thread is not keeping up)."""
        self._fresh()
        return self.entries.get(project.key)

    def get_or_refresh(self, project: ProjectRef) -> Entry | None:
        """As :meth:`get`, but a project not known yet is looked for once more before it is said unknown:
        another process may have triggered its first run since the last refresh."""
        entry = self.get(project)
        if entry is None:
            self.refresh()
            entry = self.entries.get(project.key)
        return entry

    def all(self) -> list[Entry]:
        self._fresh()
        return sorted(self.entries.values(), key=lambda entry: (entry.project.user_id, entry.project.project_id))

    @property
    def fresh(self) -> bool:
        """Refreshed lately enough to answer from memory (the thread keeps it so)."""
        return time.monotonic() - self.refreshed_at <= max(1.0, 4 * self.refresh_seconds)

    def _fresh(self) -> None:
        if not self.fresh:
            self.refresh()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- refreshing --------------------------------------------------------------------------------

    def start(self) -> None:
        """Refresh once now, then every ``refresh_seconds`` in a daemon thread (idempotent).

        A database that is not there yet (the gateway may start before Airflow's migration) is
        logged and retried by the thread; until then answers that need the index fail."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="cloud-deploy-index", daemon=True)
        try:
            self.refresh()
        except Exception as error:
            log.warning("the deployment index cannot read the metadata database yet (%s); retrying", error)
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.refresh_seconds)
            try:
                self.refresh()
            except Exception as error:  # the database being away for a moment must not end the refreshes
                self._log_failure(error)

    def _log_failure(self, error: Exception) -> None:
        """One log line per kind of failure in a row, not four a second."""
        kind = type(error).__name__
        if kind != self._last_failure:
            log.warning("refreshing the deployment index failed (%s); retrying", str(error).splitlines()[0])
        self._last_failure = kind

    def refresh(self) -> None:
        from airflow.utils.session import create_session

        with self._lock, create_session() as session:
            started, now = time.monotonic(), datetime.now(timezone.utc)
            try:
                if self._since is None or not self._read_changes(session):
                    self._reload(session)
            except BaseException:
                self._since = None  # half applied: the next refresh reads everything again
                raise
            self._since = now - UPDATE_OVERLAP
            self.refreshed_at = started
            self._last_failure = None

    def _reload(self, session: Any) -> None:
        """Read every run of the two DAGs (at start, and after runs were deleted)."""
        self._latest, self._project_of_run = {}, {}
        rows = session.execute(_run_rows_query()).all()
        self._run_count = len(rows)
        self._max_id = max((row.id for row in rows), default=0)
        self._assign(rows)
        before = self.entries
        self.entries = {}
        self._snapshot_projects(session, set(self._latest), before, announce=bool(before))

    def _read_changes(self, session: Any) -> bool:
        """Apply what changed since the last refresh; False when runs were deleted (reload instead)."""
        from airflow.models import DagRun
        from sqlalchemy import func, select

        new = session.execute(_run_rows_query().where(DagRun.id > self._max_id)).all()
        count = session.scalar(select(func.count()).select_from(DagRun).where(DagRun.dag_id.in_(_DAGS)))
        if count != self._run_count + len(new):
            return False
        self._run_count = count
        self._max_id = max([self._max_id, *(row.id for row in new)])
        dirty = self._assign(new)
        updated = session.scalars(
            select(DagRun.id).where(DagRun.dag_id.in_(_DAGS), DagRun.updated_at > self._since)
        ).all()
        dirty |= {self._project_of_run[run_id] for run_id in updated if run_id in self._project_of_run}
        dirty |= {key for key, entry in self.entries.items() if _moving(entry)}
        self._snapshot_projects(session, dirty, self.entries, announce=True)
        return True

    def _assign(self, rows: Iterable[Any]) -> set[str]:
        """Make each row its project's latest run of its DAG when it is newer; the projects that changed."""
        changed = set()
        for row in rows:
            project = _project_of(row)
            if project is None:
                continue
            latest = self._latest.setdefault(project.key, {})
            previous = latest.get(row.dag_id)
            if previous is None or row.id > previous:
                latest[row.dag_id] = row.id
                self._project_of_run.pop(previous, None)
                self._project_of_run[row.id] = project.key
                changed.add(project.key)
        return changed

    def _snapshot_projects(self, session: Any, keys: set[str], before: dict[str, Entry], announce: bool) -> None:
        if not keys:
            return
        ids = [run_id for key in keys for run_id in self._latest.get(key, {}).values()]
        snapshots = {snapshot.id: snapshot for snapshot in runs.snapshots(session, ids)}
        entries = dict(self.entries)
        for key in keys:
            latest = self._latest.get(key, {})
            deploy = snapshots.get(latest.get(runs.DEPLOY_DAG))
            undeploy = snapshots.get(latest.get(runs.UNDEPLOY_DAG))
            user_id, project_id = key.split("~", 1)
            entry = Entry(ProjectRef(user_id, project_id), deploy, undeploy, derive_status(deploy, undeploy))
            entries[key] = entry
            previous = before.get(key)
            if announce and _word_or_stage_changed(previous.status if previous else None, entry.status):
                self.announce(entry.project, previous.status if previous else None, entry.status)
        self.entries = entries

    def announce(self, project: ProjectRef, before: DeploymentStatus | None, after: DeploymentStatus | None) -> None:
        for listener in self._listeners:
            try:
                listener(project, before, after)
            except Exception:
                log.exception("a deployment index listener failed")


def _run_rows_query() -> Any:
    from airflow.models import DagRun
    from sqlalchemy import select

    return select(DagRun.id, DagRun.dag_id, DagRun.run_id, DagRun.conf).where(DagRun.dag_id.in_(_DAGS)).order_by(
        DagRun.id
    )


def _project_of(row: Any) -> ProjectRef | None:
    """The project a run belongs to: from a REST run's id, else from the conf the UI's form sent."""
    try:
        by_id = runs.project_of_run_id(row.dag_id, row.run_id)
        if by_id is not None:
            return by_id
        conf = row.conf
        if isinstance(conf, dict) and isinstance(conf.get("user_id"), str) and isinstance(conf.get("project_id"), str):
            return ProjectRef(conf["user_id"], conf["project_id"])
    except InvalidIdentifier:
        pass
    return None


def _moving(entry: Entry) -> bool:
    """Whether the entry's runs can change without their row's ``updated_at`` moving: tasks run, XComs land."""
    return any(run is not None and not run.finished for run in (entry.deploy, entry.undeploy))


def _word_or_stage_changed(before: DeploymentStatus | None, after: DeploymentStatus | None) -> bool:
    if before is None or after is None:
        return before is not after
    return (before.status, before.stage, before.message) != (after.status, after.stage, after.message)


_index: DeploymentIndex | None = None
_index_lock = threading.Lock()


def deployment_index() -> DeploymentIndex:
    """The process's index, refreshing in the background from its first use."""
    global _index
    with _index_lock:
        if _index is None:
            _index = DeploymentIndex()
            _index.start()
        return _index


def latest_run(dag_id: str, project: ProjectRef) -> RunSnapshot | None:
    """The project's newest run of ``dag_id``: REST-triggered (by run id) or UI-triggered (by conf), at any
    history size (from the deployment index, refreshed first)."""
    index = deployment_index()
    index.refresh()
    entry = index.entries.get(project.key)
    if entry is None:
        return None
    return entry.deploy if dag_id == runs.DEPLOY_DAG else entry.undeploy
