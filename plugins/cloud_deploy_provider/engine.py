"""Docker engine operations: build, push and pull, with every stream line checked.

docker-py raises on neither a failed push nor a failed pull: the engine answers 200 and reports
the failure inside the stream (docker/docker-py#3161, #2226). So each stream is parsed here and
any ``error``/``errorDetail`` line becomes an exception carrying the engine's message.
"""

from __future__ import annotations

import io
import re
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from cloud_deploy_provider.build import BuildPlan

Log = Callable[[str], None]
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
STEP_OUTPUT_LINES = 40


class EngineError(RuntimeError):
    """The Docker engine reported a failure."""


class BuildFailed(EngineError):
    def __init__(self, step: str, error: str, output: list[str]):
        self.step, self.error, self.output = step, error, output
        shown = "\n".join(output[-STEP_OUTPUT_LINES:])
        super().__init__(f"build failed at {step}: {error}\n--- output of that step ---\n{shown}")


class PushFailed(EngineError):
    pass


class PullFailed(EngineError):
    pass


def image_id(client: Any, reference: str) -> str | None:
    """The engine's id for ``reference``, or None when the engine does not have it."""
    from docker.errors import ImageNotFound

    try:
        return client.inspect_image(reference)["Id"]
    except ImageNotFound:
        return None


def build_image(
    client: Any,
    plan: BuildPlan,
    tag: str,
    log: Log,
    network_mode: str | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """Build ``plan`` as ``tag``, streaming the output to ``log``; returns the image id."""
    stream = client.build(
        fileobj=io.BytesIO(plan.context_tar()),
        custom_context=True,
        tag=tag,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
        network_mode=network_mode,
        labels=labels or {},
    )
    return _follow_build(stream, log) or _required_id(client, tag)


def _follow_build(stream: Iterable[dict], log: Log) -> str | None:
    step = "the start of the build"
    step_output: deque[str] = deque(maxlen=STEP_OUTPUT_LINES)
    built_id = None
    pending = ""
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            message = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "unknown error")
            if pending:
                step_output.append(pending)
            raise BuildFailed(step, message.strip(), list(step_output))
        if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
            built_id = chunk["aux"]["ID"]
        text = pending + chunk.get("stream", "")
        *lines, pending = text.split("\n")
        for line in lines:
            match = _STEP.match(line)
            if match:
                step = f"step {match[1]}/{match[2]} `{match[3]}`"
                step_output.clear()
            step_output.append(line)
            log(line)
    if pending:
        log(pending)
    return built_id


def _required_id(client: Any, tag: str) -> str:
    found = image_id(client, tag)
    if found is None:
        raise EngineError(f"the build reported success but the engine has no image {tag}")
    return found


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
