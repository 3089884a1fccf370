"""Build a :class:`~cloud_deploy_provider.build.BuildPlan` on a Docker engine, one layer per group of steps.

The plan's Dockerfile is what the image is (``cloud-deploy render`` prints it, and ``docker build``
of it gives the same files and settings). It is not handed to the engine's builder: the legacy
builder (the only one the engine API offers docker-py; BuildKit needs the CLI's gRPC session)
creates and commits a container for every instruction, ~0.1 s each even for ``ENV`` or
``LABEL``, so a one-file change spent ~0.7 s in steps whose result was known. Here the steps up to
each of the plan's layer ends become one container: files copied in with one ``put_archive``,
the ``RUN`` (if any) run in it, then one ``commit`` with the instructions' settings. That is what
the legacy builder itself does per step, done once per layer.

Every layer is cached by a key over its parent image and its steps (tagged
``cloud-deploy/cache:<key>`` on the engine); builds of the same layer in other processes wait for
the first one (a lock per key) instead of doing the same work at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import secrets
import tarfile
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cloud_deploy_provider.build import BuildPlan, Step
from cloud_deploy_provider.engine import STEP_OUTPUT_LINES, BuildFailed, EngineError, image_id
from cloud_deploy_provider.locks import LOCK_ROOT, file_lock

Log = Callable[[str], None]
CACHE_REPOSITORY = "cloud-deploy/cache"
LOCK_DIR = LOCK_ROOT / "cloud-deploy-build-locks"


@dataclass
class _Commit:
    """What one layer's commit is made of."""

    changes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str]] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)
    run: list[str] | None = None
    run_step: str = ""


@dataclass
class _Layer:
    """Steps the builder turns into one committed layer."""

    steps: list[tuple[int, Step]] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return any(step.run for _, step in self.steps)

    @property
    def changes_files(self) -> bool:
        return self.runs or any(step.copies or step.workdir for _, step in self.steps)


def build_image(client: Any, plan: BuildPlan, tag: str, log: Log, network_mode: str | None = None) -> str:
    """Build ``plan`` as ``tag``, logging each step as ``docker build`` does; returns the image id.

    Nothing project-specific goes into the image beyond the plan (no labels): projects with the same
    code share every layer, so a new project's build and push are tags and cross-repository mounts.
    """
    base = image_id(client, plan.base.image)
    if base is None:
        raise BuildFailed(f"step 1/{len(plan.steps)} `{plan.steps[0].line}`",
                          f"the base image {plan.base.image} is not in the engine", [])
    log(f"Step 1/{len(plan.steps)} : {plan.steps[0].line}")
    log(f" ---> {_short(base)}")
    state = _State(client, plan, log, network_mode, base)
    layers = _layers(plan)
    for number, layer in enumerate(layers):
        final = number == len(layers) - 1
        state.build(layer, tag=tag if final else None)
    log(f"Successfully built {_short(state.parent)}")
    log(f"Successfully tagged {tag}")
    return state.parent


def _layers(plan: BuildPlan) -> list[_Layer]:
    """The steps after FROM, grouped up to each layer end; a group that changes no file joins the next."""
    layers: list[_Layer] = [_Layer()]
    for number, step in enumerate(plan.steps[1:], start=2):
        layers[-1].steps.append((number, step))
        if step.layer_ends and layers[-1].changes_files:
            layers.append(_Layer())
    if not layers[-1].steps and len(layers) > 1:
        layers.pop()
    return layers


class _State:
    """What the build knows between layers: the parent image, its settings, the ARGs and the working directory."""

    def __init__(self, client: Any, plan: BuildPlan, log: Log, network_mode: str | None, base: str):
        self.client, self.plan, self.log, self.network_mode = client, plan, log, network_mode
        self.parent = base
        self.args: dict[str, str] = {}
        config = client.inspect_image(base)["Config"] or {}
        self.workdir = config.get("WorkingDir") or "/"
        self.total = len(plan.steps)

    def build(self, layer: _Layer, tag: str | None) -> None:
        key = self._key(layer)
        cached = f"{CACHE_REPOSITORY}:{key[:40]}"
        with _lock(key):
            found = image_id(self.client, cached)
            if found is None:
                self._remove_leftovers(key)
                found = self._commit(layer, cached, key)
            else:
                self._replay(layer, cached=True)
        self.parent = found
        self.log(f" ---> {_short(found)}")
        if tag:
            repository, _, name = tag.rpartition(":")
            self.client.tag(found, repository, name)

    def _key(self, layer: _Layer) -> str:
        digest = hashlib.sha256(b"cloud-deploy layer v1\0" + self.parent.encode() + b"\0")
        digest.update(json.dumps(sorted(self.args.items())).encode() + self.workdir.encode() + b"\0")
        for _, step in layer.steps:
            digest.update(step.line.encode() + b"\0")
            for destination, source in step.copies:
                mode = b"x" if source in self.plan.executable else b"-"
                digest.update(destination.encode() + b"\0" + mode + hashlib.sha256(self.plan.files[source]).digest())
        digest.update((self.network_mode or "").encode())
        return digest.hexdigest()

    def _replay(self, layer: _Layer, cached: bool) -> _Commit:
        """Walk the layer's steps (logging them), collecting what its commit needs: settings, files, the RUN."""
        commit = _Commit()
        for number, step in layer.steps:
            self.log(f"Step {number}/{self.total} : {step.line}")
            if cached:
                self.log(" ---> Using cache")
            if step.env:
                commit.env.update(step.env)
                commit.changes.append(step.line)
            if step.arg:
                self.args[step.arg[0]] = step.arg[1]
            if step.workdir:
                self.workdir = posixpath.normpath(posixpath.join(self.workdir, step.workdir))
                commit.changes.append(f"WORKDIR {self.workdir}")
                commit.directories.append(self.workdir)
            if step.entrypoint is not None:
                commit.changes += [f"ENTRYPOINT {json.dumps(list(step.entrypoint))}", "CMD []"]
            commit.files += [(posixpath.join(self.workdir, target), source) for target, source in step.copies]
            if step.run:
                # ARGs reach the command's environment only, never the image's settings
                arguments = ["/usr/bin/env", *(f"{k}={v}" for k, v in self.args.items())] if self.args else []
                commit.run = [*arguments, *step.run]
                commit.run_step = f"step {number}/{self.total} `{step.line}`"
        return commit

    def _remove_leftovers(self, key: str) -> None:
        """Containers of this layer that a killed build left (its lock is ours now, so none is in use)."""
        for container in self.client.containers(all=True, filters={"name": _container_name(key)}):
            self.log(f"removing container {container['Id'][:12]} left by an interrupted build of this layer")
            _remove(self.client, container["Id"])

    def _commit(self, layer: _Layer, cached: str, key: str) -> str:
        commit = self._replay(layer, cached=False)
        parent = self.client.inspect_image(self.parent)["Config"] or {}
        changes = list(commit.changes)
        # A container's command and entrypoint become the image's on commit: keep the parent's
        # unless a step set them, as the builder does after a RUN.
        if not any(change.startswith("ENTRYPOINT ") for change in changes):
            changes += [f"ENTRYPOINT {json.dumps(parent.get('Entrypoint') or [])}",
                        f"CMD {json.dumps(parent.get('Cmd') or [])}"]
        container = self.client.create_container(
            self.parent,
            command=commit.run or ["/bin/true"],
            entrypoint=[""],
            environment={**_env_of(parent), **commit.env} if commit.env else None,
            name=f"{_container_name(key)}-{secrets.token_hex(3)}",
            host_config=(self.client.create_host_config(network_mode=self.network_mode)
                         if self.network_mode and commit.run else None),
        )["Id"]
        try:
            archive = _archive(self.plan, commit.files, commit.directories)
            if archive is not None and not self.client.put_archive(container, "/", archive):
                raise EngineError(f"the engine refused the files of {cached}")
            if commit.run:
                self._run(container, commit.run, commit.run_step)
            return self.client.commit(container, repository=CACHE_REPOSITORY, tag=cached.rsplit(":", 1)[1],
                                      changes=changes, pause=False)["Id"]
        finally:
            _remove(self.client, container)

    def _run(self, container: str, run: list[str], step: str) -> None:
        """The RUN step: its output logged as it comes; a non-zero exit is a build failure with the step's output."""
        self.client.start(container)
        self.log(f" ---> Running in {container[:12]}")
        output: deque[str] = deque(maxlen=STEP_OUTPUT_LINES)
        for line in _lines(self.client.logs(container, stream=True, follow=True)):
            output.append(line)
            self.log(line)
        code = self.client.wait(container)["StatusCode"]
        if code != 0:
            raise BuildFailed(step, f"The command '{' '.join(run)}' returned a non-zero code: {code}",
                              list(output))


def _env_of(config: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)


def _archive(plan: BuildPlan, files: list[tuple[str, str]], made_dirs: list[str]) -> bytes | None:
    """A tar of the layer's files at their paths in the image (root-owned, the context's modes, time 0).

    Parent directories are not listed: the engine creates missing ones and follows existing
    symlinks (``/lib -> usr/lib``), where a directory entry would replace the link.
    """
    if not files and not made_dirs:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        listed = {destination for destination, _ in files}
        for directory in made_dirs:
            if not any(path.startswith(directory.rstrip("/") + "/") for path in listed) and directory != "/":
                info = tarfile.TarInfo(directory.lstrip("/"))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
        for destination, source in files:
            content = plan.files[source]
            info = tarfile.TarInfo(destination.lstrip("/"))
            info.size, info.mode, info.mtime = len(content), 0o755 if source in plan.executable else 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _lines(chunks: Any) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line.decode(errors="replace").rstrip("\r")
    if pending:
        yield pending.decode(errors="replace").rstrip("\r")


def _remove(client: Any, container: str) -> None:
    from docker.errors import NotFound

    try:
        client.remove_container(container, force=True)
    except NotFound:
        pass


@contextmanager
def _lock(key: str) -> Iterator[None]:
    """One build of a layer at a time on this machine; the others then find it cached."""
    with file_lock(LOCK_DIR / f"{key[:40]}.lock"):
        yield


def _container_name(key: str) -> str:
    """The builder's containers are found by name: a label would be committed into the image with them."""
    return f"cloud-deploy-build-{key[:40]}"


def _short(image: str) -> str:
    return image.removeprefix("sha256:")[:12]

