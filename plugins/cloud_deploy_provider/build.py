"""Render a Dockerfile and build context from a spec, and compute its build key.

Layer order is chosen for fast rebuilds: base image, apt packages, pip packages, model weights,
then the project's code, so a code change rebuilds only the last layer. No value from the spec
is ever put into a shell line: package lists go into files that fixed commands read, and
commands use the exec (JSON) form.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from cloud_deploy_provider.catalog import BaseImage, Catalog
from cloud_deploy_provider.errors import UserError
from cloud_deploy_provider.settings import BuildSettings
from cloud_deploy_provider.spec import DeploymentSpec, check_project_files
from cloud_deploy_provider.workspace import SPEC_FILE_NAME

META_DIR = ".cloud-deploy"
IMAGE_META_DIR = "/etc/cloud-deploy"
LAUNCHER_DIR = "/opt/cloud-deploy"
MAX_CONTEXT_FILES = 20_000

APT_SCRIPT = f"""set -eu
if [ -s {IMAGE_META_DIR}/apt-mirror ]; then
  mirror=$(cat {IMAGE_META_DIR}/apt-mirror)
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed -i -E "/security/! s#https?://[^ ]+#$mirror#" "$f"
  done
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
xargs -a {IMAGE_META_DIR}/apt-packages.txt apt-get install -y --no-install-recommends
rm -rf /var/lib/apt/lists/*
"""


class ProjectFileError(UserError):
    """A file in the project folder cannot be shipped safely."""


@dataclass(frozen=True)
class Step:
    """One Dockerfile instruction, with what it does spelled out for :mod:`cloud_deploy_provider.builder`.

    ``copies`` maps paths in the image (absolute, or relative to the working directory) to context
    file names; ``layer_ends`` marks where the builder commits a layer, so that what changes
    rarely (CA bundle, packages, weights) stays cached below what changes often (the code).
    """

    line: str
    env: tuple[tuple[str, str], ...] = ()
    arg: tuple[str, str] | None = None
    copies: tuple[tuple[str, str], ...] = ()
    run: tuple[str, ...] = ()
    workdir: str | None = None
    entrypoint: tuple[str, ...] | None = None
    layer_ends: bool = False


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build needs, decided before touching an engine."""

    dockerfile: str
    files: dict[str, bytes]
    executable: frozenset[str]
    base: BaseImage
    steps: tuple[Step, ...] = ()

    def key(self, base_image_id: str | None = None) -> str:
        """The build key: a hash of the Dockerfile, every context file, and the base image's id.

        Including the base image's id (when the engine knows it) makes a moved base tag,
        e.g. a refreshed ``python:3.11-slim``, produce a new key.
        """
        digest = hashlib.sha256()
        digest.update(b"cloud-deploy build key v1\0")
        digest.update((base_image_id or self.base.image).encode() + b"\0")
        digest.update(self.dockerfile.encode() + b"\0")
        for name in sorted(self.files):
            mode = b"x" if name in self.executable else b"-"
            digest.update(name.encode() + b"\0" + mode + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()

    def context_tar(self) -> bytes:
        """A deterministic tar of the context: sorted names, zero times and owners."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, content in sorted({"Dockerfile": self.dockerfile.encode(), **self.files}.items()):
                info = tarfile.TarInfo(name)
                info.size = len(content)
                info.mode = 0o755 if name in self.executable else 0o644
                info.mtime = 0
                tar.addfile(info, io.BytesIO(content))
        return buffer.getvalue()


def render_build(
    spec: DeploymentSpec, project_dir: Path, settings: BuildSettings, catalog: Catalog
) -> BuildPlan:
    base = catalog.choose(spec)
    layers = _Layers()
    layers.line(f"FROM {base.image}")
    layers.env(PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1",
               PIP_BREAK_SYSTEM_PACKAGES="1", PIP_ROOT_USER_ACTION="ignore")
    _add_ca_bundle(layers, settings)
    layers.end_layer()
    _add_apt_layer(layers, spec, settings)
    _add_pip_layer(layers, spec, settings, base)
    layers.step(Step(f"WORKDIR {spec.deploy.work_dir}", workdir=spec.deploy.work_dir))
    _add_project_layers(layers, spec, project_dir)
    _add_entrypoint(layers, spec, base)
    return BuildPlan(
        dockerfile="\n".join(step.line for step in layers.steps) + "\n",
        files=layers.files,
        executable=frozenset(layers.executable),
        base=base,
        steps=tuple(layers.steps),
    )


class _Layers:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.files: dict[str, bytes] = {}
        self.executable: set[str] = set()

    def step(self, step: Step) -> None:
        self.steps.append(step)

    def line(self, text: str) -> None:
        self.steps.append(Step(text))

    def env(self, **values: str) -> None:
        self.step(Step("ENV " + " ".join(f"{name}={value}" for name, value in values.items()),
                       env=tuple(values.items())))

    def copy(self, sources: list[str], destination: str, into_directory: bool) -> None:
        """``COPY sources destination``: each source file to ``destination`` (a directory when ``into_directory``)."""
        if into_directory:
            copies = tuple((f"{destination.rstrip('/')}/{source.rsplit('/', 1)[-1]}", source) for source in sources)
        else:
            copies = ((destination, sources[0]),)
        self.step(Step(f"COPY {' '.join(sources)} {destination}", copies=copies))

    def copy_folder(self, folder: str) -> None:
        """``COPY folder/ ./``: the folder's files into the working directory, keeping their sub-paths."""
        prefix = f"{folder}/"
        copies = tuple((name[len(prefix):], name) for name in sorted(self.files) if name.startswith(prefix))
        self.step(Step(f"COPY {prefix} ./", copies=copies))

    def run(self, args: list[str]) -> None:
        self.step(Step(f"RUN {_exec_form(args)}", run=tuple(args)))

    def end_layer(self) -> None:
        """The builder commits what the steps so far changed as one layer."""
        if self.steps and not self.steps[-1].layer_ends:
            self.steps[-1] = replace(self.steps[-1], layer_ends=True)

    def file(self, name: str, content: bytes, executable: bool = False) -> None:
        self.files[name] = content
        if executable:
            self.executable.add(name)


def _exec_form(args: list[str]) -> str:
    return json.dumps(args, ensure_ascii=False)


def _add_ca_bundle(layers: _Layers, settings: BuildSettings) -> None:
    """Trust an extra CA bundle during the build (corporate proxies); ARG keeps it out of the runtime env."""
    if settings.ca_bundle is None:
        return
    bundle = f"{IMAGE_META_DIR}/ca-bundle.pem"
    layers.file(f"{META_DIR}/ca-bundle.pem", settings.ca_bundle.read_bytes())
    layers.file(f"{META_DIR}/apt-ca.conf", f'Acquire::https::CAInfo "{bundle}";\n'.encode())
    layers.copy([f"{META_DIR}/ca-bundle.pem"], bundle, into_directory=False)
    layers.copy([f"{META_DIR}/apt-ca.conf"], "/etc/apt/apt.conf.d/99cloud-deploy-ca", into_directory=False)
    for variable in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        layers.step(Step(f"ARG {variable}={bundle}", arg=(variable, bundle)))


def _add_apt_layer(layers: _Layers, spec: DeploymentSpec, settings: BuildSettings) -> None:
    packages = spec.build.components.custom_packages.apt
    if not packages:
        return
    layers.file(f"{META_DIR}/apt-packages.txt", ("\n".join(packages) + "\n").encode())
    layers.file(f"{META_DIR}/apt-mirror", (settings.apt_mirror or "").encode())
    layers.copy([f"{META_DIR}/apt-packages.txt", f"{META_DIR}/apt-mirror"], f"{IMAGE_META_DIR}/", into_directory=True)
    layers.run(["/bin/sh", "-c", APT_SCRIPT])
    layers.end_layer()


def _add_pip_layer(layers: _Layers, spec: DeploymentSpec, settings: BuildSettings, base: BaseImage) -> None:
    requirements = spec.build.components.pip_requirements
    if not requirements:
        return
    options = []
    if settings.pip_index_url:
        options.append(f"--index-url {settings.pip_index_url}")
    options += [f"--extra-index-url {url}" for url in settings.pip_extra_index_urls]
    layers.file(f"{META_DIR}/requirements.txt", ("\n".join(options + requirements) + "\n").encode())
    layers.copy([f"{META_DIR}/requirements.txt"], f"{IMAGE_META_DIR}/requirements.txt", into_directory=False)
    layers.run([base.python, "-m", "pip", "install", "-r", f"{IMAGE_META_DIR}/requirements.txt"])
    layers.end_layer()


def _add_project_layers(layers: _Layers, spec: DeploymentSpec, project_dir: Path) -> None:
    """Model weights and annotations first (they change rarely), then the code."""
    check_project_files(spec, project_dir)
    heavy = {
        name
        for name in (
            spec.optional.weight_file if spec.optional else None,
            spec.optional.annotation_file if spec.optional else None,
        )
        if name
    }
    for relative, content, executable in project_files(project_dir):
        folder = "weights" if relative in heavy else "app"
        layers.file(f"{folder}/{relative}", content, executable)
    if any(name.startswith("weights/") for name in layers.files):
        layers.copy_folder("weights")
        layers.end_layer()
    if any(name.startswith("app/") for name in layers.files):
        layers.copy_folder("app")


def project_files(project_dir: Path) -> list[tuple[str, bytes, bool]]:
    """The project's files to ship: everything but hidden files, caches and deployment.yaml.

    Symlinks are followed only when they stay inside the project folder.
    """
    root = project_dir.resolve()
    shipped = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        if relative.as_posix() == SPEC_FILE_NAME or path.suffix == ".pyc":
            continue
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            raise ProjectFileError(f"{relative}: links outside the project folder")  # where to is the server's business
        if not resolved.is_file():
            continue
        if len(shipped) >= MAX_CONTEXT_FILES:
            raise ProjectFileError(f"the project folder has more than {MAX_CONTEXT_FILES} files")
        shipped.append((relative.as_posix(), resolved.read_bytes(), bool(resolved.stat().st_mode & 0o111)))
    return shipped


def _add_entrypoint(layers: _Layers, spec: DeploymentSpec, base: BaseImage) -> None:
    deploy = spec.deploy
    if not deploy.entrypoint:
        return
    if not deploy.pre_exec:
        layers.step(Step(f"ENTRYPOINT {_exec_form(deploy.entrypoint)}", entrypoint=tuple(deploy.entrypoint)))
        return
    launch = {"pre_exec": deploy.pre_exec, "entrypoint": deploy.entrypoint}
    layers.file(f"{META_DIR}/launch.json", json.dumps(launch, indent=1).encode())
    layers.file(f"{META_DIR}/launch.py", resources.files("cloud_deploy_provider").joinpath("launcher.py").read_bytes())
    layers.copy([f"{META_DIR}/launch.py", f"{META_DIR}/launch.json"], f"{LAUNCHER_DIR}/", into_directory=True)
    launcher = [base.python, f"{LAUNCHER_DIR}/launch.py"]
    layers.step(Step(f"ENTRYPOINT {_exec_form(launcher)}", entrypoint=tuple(launcher)))
