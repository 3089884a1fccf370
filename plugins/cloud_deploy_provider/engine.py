"""Docker engine operations: push and pull with every stream line checked, and the errors of builds.

Building is in :mod:`cloud_deploy_provider.builder`.

docker-py raises on neither a failed push nor a failed pull: the engine answers 200 and reports
the failure inside the stream (docker/docker-py#3161, #2226). So each stream is parsed here and
any ``error``/``errorDetail`` line becomes an exception carrying the engine's message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from cloud_deploy_provider.errors import ENGINE_AWAY, TargetError, TransientError

Log = Callable[[str], None]
STEP_OUTPUT_LINES = 40


class EngineError(TargetError):
    """The Docker engine reported a failure; whether a retry helps depends on its cause."""

    retryable: bool | None = None  # see cloud_deploy_provider.errors


class EngineUnreachable(EngineError, TransientError):
    """No answer from the Docker engine (stopped, restarting): worth a retry."""

    retryable = True


class BuildFailed(EngineError):
    """A build step failed: its own output says why, and a retry would fail the same way, unless the
    engine went away under the build."""

    def __init__(self, step: str, error: str, output: list[str]):
        self.step, self.error, self.output = step, error, output
        self.retryable = "returned a non-zero code" not in error and bool(ENGINE_AWAY.search(error))
        shown = "\n".join(output[-STEP_OUTPUT_LINES:])
        super().__init__(f"build failed at {step}: {error}\n--- output of that step ---\n{shown}")


class _TransferFailed(EngineError):
    """A push or pull the engine gave up on: a refusal (auth, unknown name) is final, anything else is not."""

    def __init__(self, message: str):
        super().__init__(message)
        self.retryable = not _TRANSFER_REFUSED.search(message)


class PushFailed(_TransferFailed):
    pass


class PullFailed(_TransferFailed):
    pass


_TRANSFER_REFUSED = re.compile(
    r"unauthorized|denied|authentication required|manifest unknown|name unknown|not found|invalid reference|"
    r"repository name must|no basic auth credentials|x509|blob unknown to registry",
    re.IGNORECASE,
)


def image_id(client: Any, reference: str) -> str | None:
    """The engine's id for ``reference``, or None when the engine does not have it."""
    from docker.errors import ImageNotFound

    try:
        return client.inspect_image(reference)["Id"]
    except ImageNotFound:
        return None


def push_image(client: Any, repository: str, tag: str, auth_config: dict | None, log: Log) -> str | None:
    """Push ``repository:tag``; returns the digest the engine reported, raising on any stream error."""
    stream = client.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config)
    return _follow_transfer(stream, log, PushFailed, f"push of {repository}:{tag}")


def pull_image(client: Any, repository: str, tag: str, auth_config: dict | None, log: Log) -> None:
    stream = client.pull(repository, tag=tag, stream=True, decode=True, auth_config=auth_config)
    _follow_transfer(stream, log, PullFailed, f"pull of {repository}:{tag}")


def _follow_transfer(stream: Iterable[dict], log: Log, failure: type[EngineError], what: str) -> str | None:
    digest = None
    last_status: dict[str, str] = {}
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            message = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "unknown error")
            raise failure(f"{what} failed: {message.strip()}")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = aux["Digest"]
        status = chunk.get("status")
        if status and last_status.get(chunk.get("id", "")) != status:
            last_status[chunk.get("id", "")] = status
            log(f"{chunk['id']}: {status}" if chunk.get("id") else status)
    return digest
