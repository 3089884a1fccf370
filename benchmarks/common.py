"""What the deploy benchmarks share: the embedded stack, a registry, projects, and the raw engine cycle.

The raw cycle is the same work done by hand with the docker CLI on the Dockerfile and context that
``cloud-deploy render`` prints for the project, so every figure is a ratio against this machine's
engine in the same run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plugins"))
PIP_PACKAGES = ["six==1.16.0", "idna==3.10", "packaging==24.2"]  # a few small PyPI packages


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this run (the kernel may offer a released one again
    before the project it went to has published it)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(url)


def build_environment() -> None:
    os.environ.setdefault("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples/catalog.local.yaml"))
    os.environ.setdefault("CLOUD_DEPLOY_BUILD_NETWORK", "host")
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        os.environ.setdefault("CLOUD_DEPLOY_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")


@contextlib.contextmanager
def registry(work: Path) -> Iterator[str]:
    """A local registry (Debian's docker-registry) on a free port: ``127.0.0.1:<port>``."""
    port = free_port()
    subprocess.run(["bash", str(REPO / "scripts/start-registry.sh"), str(port), str(work / "registry")], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        pid = work / "registry/registry.pid"
        if pid.exists():
            subprocess.run(["kill", pid.read_text().strip()], check=False)


class Stack:
    """``scripts/stack.sh``: Airflow standalone and the TANGO gateway, pushing to ``registry_host``."""

    def __init__(self, state: Path, registry_host: str | None, **environment: str):
        self.state = state
        self.shared = state / "shared"
        self.gateway = f"http://127.0.0.1:{free_port()}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_PORT": str(free_port()),
            "GATEWAY_PORT": self.gateway.rsplit(":", 1)[1],
            "VENV": str(Path(sys.executable).parent.parent),
            "CLOUD_DEPLOY_SHARED_ROOT": str(self.shared),
            **environment,
        }
        if registry_host:
            self.env["CLOUD_DEPLOY_REGISTRY_CONN_ID"] = "bench_registry"
            self.env["AIRFLOW_CONN_BENCH_REGISTRY"] = json.dumps({"conn_type": "docker", "host": registry_host})
        self.client = httpx.Client(base_url=self.gateway, timeout=60)

    def __enter__(self) -> Stack:
        try:
            subprocess.run(["bash", str(REPO / "scripts/stack.sh"), "start", str(self.state)], env=self.env,
                           check=True, stdout=subprocess.DEVNULL)
        except BaseException:
            self.__exit__()  # what did start must not outlive the benchmark
            raise
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["bash", str(REPO / "scripts/stack.sh"), "stop", str(self.state)], env=self.env, check=False)

    def project(self, user_id: str, project_id: str, sample: str = "hello", pip: list[str] | None = None) -> Project:
        return Project(self.shared / "common" / user_id / project_id, user_id, project_id, sample, pip)

    def start(self, project: Project) -> None:
        answer = self.client.get("/start", params=project.params)
        if answer.status_code != 200:
            raise RuntimeError(f"/start {project.params}: {answer.status_code} {answer.text}")

    def wait_running(self, project: Project, timeout: float = 600, poll: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            word = self.client.get("/status_request", params=project.params).text
            if word == "running":
                return
            if word in ("failed", "unknown", "stopped"):
                raise RuntimeError(self.client.get(f"/deployments/{project.user_id}/{project.project_id}").text)
            time.sleep(poll)
        raise TimeoutError(f"{project.params} not running after {timeout} s")

    def deploy(self, project: Project) -> float:
        """Seconds from ``/start`` until the status is ``running`` and the service answers."""
        started = time.perf_counter()
        self.start(project)
        self.wait_running(project)
        wait_http(project.url + "/healthz", timeout=30)
        return time.perf_counter() - started

    def stop(self, project: Project, timeout: float = 300) -> None:
        """``/stop`` (answered at once), then wait until the status is ``stopped``."""
        answer = self.client.get("/stop", params=project.params, timeout=30)
        if answer.status_code != 200:
            raise RuntimeError(f"/stop {project.params}: {answer.status_code} {answer.text}")
        deadline = time.monotonic() + timeout
        while (word := self.client.get("/status_request", params=project.params).text) != "stopped":
            if word == "failed" or time.monotonic() > deadline:
                raise RuntimeError(f"/stop {project.params}: {word}")
            time.sleep(0.05)


class Project:
    """A copy of a sample in the shared root, with its own host port (and a pip layer when ``pip`` is given)."""

    def __init__(self, folder: Path, user_id: str, project_id: str, sample: str, pip: list[str] | None):
        self.folder, self.user_id, self.project_id = folder, user_id, project_id
        self.port = free_port()
        shutil.copytree(REPO / "samples" / sample, folder)
        spec = self.folder / "deployment.yaml"
        text = spec.read_text().replace("service_host_port: 18080", f"service_host_port: {self.port}")
        if pip:
            text = text.replace("    libs: [python==3.11]",
                                f"    libs: [python==3.11]\n    custom_packages: {{pypi: [{', '.join(pip)}]}}")
        spec.write_text(text)

    @property
    def params(self) -> dict[str, str]:
        return {"user_id": self.user_id, "project_id": self.project_id}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def touch_code(self) -> None:
        server = self.folder / "server.py"
        server.write_text(server.read_text() + f"\n# benchmark change {time.time()}\n")


def rendered_context(folder: Path) -> Path:
    """The Dockerfile and context ``cloud-deploy render`` prints for the project, in a new directory."""
    from cloud_deploy_provider.build import render_build
    from cloud_deploy_provider.catalog import load_catalog
    from cloud_deploy_provider.settings import BuildSettings
    from cloud_deploy_provider.spec import load_spec

    settings = BuildSettings.from_env()
    plan = render_build(load_spec(folder / "deployment.yaml"), folder, settings, load_catalog(settings.catalog_path))
    context = Path(tempfile.mkdtemp(prefix="cloud-deploy-bench-context-"))
    tarfile.open(fileobj=io.BytesIO(plan.context_tar())).extractall(context, filter="data")
    return context


def raw_cycle(folder: Path, image: str, port: int, push: bool, no_cache: bool = False, name: str = "bench-by-hand") -> float:
    """``docker build [&& docker push] && docker run``, until the service answers; the container is removed after."""
    context = rendered_context(folder)
    started = time.perf_counter()
    build = ["docker", "build", "-q", "--network", "host", *(["--no-cache"] if no_cache else []), "-t", image, str(context)]
    subprocess.run(build, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if push:
        subprocess.run(["docker", "push", "-q", image], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-e", "PORT=8080",
                    "-e", "MODEL_FILE=model.json", image], check=True, stdout=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    elapsed = time.perf_counter() - started
    subprocess.run(["docker", "rm", "-f", name], check=False, stdout=subprocess.DEVNULL)
    shutil.rmtree(context)
    return elapsed


def remove_images(*references: str) -> None:
    """Untag and delete images with the layers only they use, so the next build of the same steps is cold.

    An image with children cannot go before them; a few passes remove a whole tree in any order.
    """
    left = list(references)
    for _ in range(10):
        if not left:
            return
        subprocess.run(["docker", "rmi", "-f", *left], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        present = set(subprocess.run(["docker", "images", "-aq", "--no-trunc"], capture_output=True, text=True,
                                     check=False).stdout.split())
        present |= {image[len("sha256:"):][:12] for image in present}
        left = [ref for ref in left if ref in present or ref.removeprefix("sha256:")[:12] in present]


def built_images() -> list[str]:
    """What cloud-deploy built (every image of a ``cloud-deploy/...`` repository, in any registry) and its
    layer cache, but the base image: removing them leaves the engine with the base image only, and the
    next build of any step is cold."""
    listed = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"], capture_output=True,
                            text=True, check=False).stdout.splitlines()
    base = os.environ.get("CLOUD_DEPLOY_BASE_IMAGE", "cloud-deploy/debian-python:bookworm")
    return sorted({image for line in listed for reference, image in [line.split(" ", 1)]
                   if "cloud-deploy/" in reference and reference != base and "<none>" not in reference})
