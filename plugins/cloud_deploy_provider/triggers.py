"""One trigger for every long wait: it polls a target's side-effect-free ``status()`` in the triggerer.

A deploy task creates or updates the deployment, polls briefly itself (a local container answers
within a second or two, and deferring costs ~2.5 s), then hands the rest of the wait to this
trigger, so a rollout of many minutes holds no worker slot. The task resumes in
``execute_complete`` with the event: ``{"outcome": "ready" | "failed" | "timeout", "status": ...}``.

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
    """Waits until ``deploy.type``'s target reports the project ready (or completed), failed, or ``deadline`` passes.

    :param user_id: TANGO user id of the project
    :param project_id: TANGO project id
    :param spec: the deployed spec, as ``DeploymentSpec.to_dict()``
    :param deadline: epoch seconds after which the wait ends with ``timeout``
    :param poll_interval: seconds between polls (the spec's ``deploy.readiness.interval_seconds``)
    """

    def __init__(self, user_id: str, project_id: str, spec: dict[str, Any], deadline: float, poll_interval: float):
        super().__init__()
        self.user_id = user_id
        self.project_id = project_id
        self.spec = spec
        self.deadline = deadline
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"user_id": self.user_id, "project_id": self.project_id, "spec": self.spec,
             "deadline": self.deadline, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from cloud_deploy_provider.errors import is_transient
        from cloud_deploy_provider.identity import ProjectRef
        from cloud_deploy_provider.pipeline import make_target, readiness_outcome
        from cloud_deploy_provider.spec import DeploymentSpec
        from cloud_deploy_provider.targets import TargetStatus

        spec = DeploymentSpec.model_validate(self.spec)
        target = make_target(ProjectRef(self.user_id, self.project_id), spec.deploy.type, self.log.info)
        last_message = None
        while True:
            try:
                status = await asyncio.to_thread(target.status, spec)
            except Exception as error:
                if not is_transient(error):
                    yield TriggerEvent({"outcome": "failed", "status": None, "message": f"status check refused: {error}"})
                    return
                status = TargetStatus("unknown", message=f"target unreachable, will ask again: {error}")
            if status.message != last_message:
                self.log.info("%s: %s", status.state, status.message)
                last_message = status.message
            outcome = readiness_outcome(status)
            if outcome is None and time.time() >= self.deadline:
                outcome = "timeout"
            if outcome is not None:
                yield TriggerEvent({"outcome": outcome, "status": status.to_dict(), "message": status.message})
                return
            await asyncio.sleep(min(self.poll_interval, max(self.deadline - time.time(), 0)))
