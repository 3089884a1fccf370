"""One trigger for every long wait: it polls a side-effect-free ``status()`` in the triggerer.

A deploy task creates or updates the deployment, polls briefly itself (a local container answers
within a second or two, and deferring costs ~2.5 s), then hands the rest of the wait to this
trigger, so a rollout of many minutes holds no worker slot; a job task does the same with its
Kubernetes Job or AWS Batch job. The task resumes with the event:
``{"outcome": "ready" | "failed" | "timeout", "status": ..., "message": ..., "watch_args": ...}``.

The target's calls are blocking (docker-py, boto3, google and kubernetes clients), so each poll
runs in a thread; connections are read there through the triggerer's supervisor, as in a task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class TargetStatusTrigger(BaseTrigger):
    """Polls a status until it says done, failed, or ``deadline`` passes; yields one event.

    :param user_id: TANGO user id of the project
    :param project_id: TANGO project id
    :param spec: the deployed spec, as ``DeploymentSpec.to_dict()``
    :param deadline: epoch seconds after which the wait ends with ``timeout``
    :param poll_interval: seconds between polls (the spec's ``deploy.readiness.interval_seconds``)
    :param until: ``ready`` (a deploy: running or completed) or ``finished`` (a job: completed)
    :param watch: ``module:Class`` whose ``for_trigger(project, spec, log, connections, **watch_args)`` gives what
        to poll; default: the target of ``deploy.type``
    :param connections: the operator's ``*_conn_id`` parameters (see ``pipeline.make_target``)
    """

    def __init__(self, user_id: str, project_id: str, spec: dict[str, Any], deadline: float, poll_interval: float,
                 until: str = "ready", watch: str | None = None, watch_args: dict[str, Any] | None = None,
                 connections: dict[str, str | None] | None = None):
        super().__init__()
        self.user_id = user_id
        self.project_id = project_id
        self.spec = spec
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.until = until
        self.watch = watch
        self.watch_args = watch_args or {}
        self.connections = connections or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"user_id": self.user_id, "project_id": self.project_id, "spec": self.spec, "deadline": self.deadline,
             "poll_interval": self.poll_interval, "until": self.until, "watch": self.watch,
             "watch_args": self.watch_args, "connections": self.connections},
        )

    def _watched(self, spec: Any) -> Any:
        import importlib

        from cloud_deploy_provider.identity import ProjectRef
        from cloud_deploy_provider.pipeline import make_target

        project = ProjectRef(self.user_id, self.project_id)
        if self.watch is None:
            return make_target(project, spec.deploy.type, self.log.info, self.connections)
        module, _, name = self.watch.partition(":")
        return getattr(importlib.import_module(module), name).for_trigger(project, spec, self.log.info,
                                                                           self.connections, **self.watch_args)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from cloud_deploy_provider.errors import is_transient
        from cloud_deploy_provider.pipeline import finished_outcome, readiness_outcome
        from cloud_deploy_provider.spec import DeploymentSpec
        from cloud_deploy_provider.targets import TargetStatus

        spec = DeploymentSpec.model_validate(self.spec)
        watched = await asyncio.to_thread(self._watched, spec)
        outcome_of = readiness_outcome if self.until == "ready" else finished_outcome
        last_message = None
        while True:
            try:
                status = await asyncio.to_thread(watched.status, spec)
            except Exception as error:
                if not is_transient(error):
                    yield TriggerEvent({"outcome": "failed", "status": None, "message": f"status check refused: {error}",
                                        "watch_args": self.watch_args})
                    return
                status = TargetStatus("unknown", message=f"target unreachable, will ask again: {error}")
            for line in status.details.get("log", []):
                self.log.info("%s", line)
            if status.message != last_message:
                self.log.info("%s: %s", status.state, status.message)
                last_message = status.message
            outcome = outcome_of(status)
            if outcome is None and time.time() >= self.deadline:
                outcome = "timeout"
            if outcome is not None:
                yield TriggerEvent({"outcome": outcome, "status": status.to_dict(), "message": status.message,
                                    "watch_args": self.watch_args})
                return
            await asyncio.sleep(min(self.poll_interval, max(self.deadline - time.time(), 0)))
