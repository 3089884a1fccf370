"""What the tests share that is not a fixture: the session's environment (set on import, before anything
imports Airflow, which reads its configuration once), project folders made from the samples, free ports,
throw-away registries, and the small readers of DAGs, runs and XComs the integration tests use."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SESSION_DIR = Path(tempfile.mkdtemp(prefix="cloud-deploy-tests-"))
BASE_IMAGE = os.environ.get("CLOUD_DEPLOY_BASE_IMAGE", "cloud-deploy/debian-python:bookworm")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _test_environment() -> dict[str, str]:
    env = {
        "AIRFLOW_HOME": str(SESSION_DIR / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(SESSION_DIR / "airflow" / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "CLOUD_DEPLOY_SHARED_ROOT": str(SESSION_DIR / "shared"),
        "CLOUD_DEPLOY_BASE_IMAGE_CATALOG": str(REPO / "samples" / "catalog.local.yaml"),
        "CLOUD_DEPLOY_BUILD_NETWORK": "host",
    }
    if HOST_CA_BUNDLE.is_file():
        env["CLOUD_DEPLOY_BUILD_CA_BUNDLE"] = str(HOST_CA_BUNDLE)
    return env


os.environ.update(_test_environment())
(SESSION_DIR / "shared" / "common").mkdir(parents=True)
(SESSION_DIR / "airflow" / "plugins").mkdir(parents=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Project:
    """A TANGO project folder in the shared root, copied from a sample, with its own host port."""

    def __init__(self, sample: str, user_id: str = "alice"):
        from cloud_deploy_provider.identity import ProjectRef

        self.user_id = user_id
        self.project_id = f"p-{uuid.uuid4().hex[:10]}"
        self.ref = ProjectRef(self.user_id, self.project_id)
        self.folder = Path(os.environ["CLOUD_DEPLOY_SHARED_ROOT"]) / "common" / user_id / self.project_id
        shutil.copytree(REPO / "samples" / sample, self.folder)
        self.port = free_port()
        self.edit(lambda spec: spec["deploy"]["network"].__setitem__("service_host_port", self.port))

    @property
    def spec_file(self) -> Path:
        return self.folder / "deployment.yaml"

    def edit(self, change) -> None:
        spec = yaml.safe_load(self.spec_file.read_text())
        change(spec)
        self.spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))

    @property
    def conf(self) -> dict[str, str]:
        return {"user_id": self.user_id, "project_id": self.project_id}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def wait_http(url: str, seconds: float = 30) -> None:
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise


@contextlib.contextmanager
def registry_with_login(name: str, username: str, password: str):
    """A real registry on a free loopback port that accepts exactly ``username:password`` (htpasswd)."""
    import bcrypt

    port = free_port()
    data = SESSION_DIR / f"{name}-{port}"
    data.mkdir()
    (data / "htpasswd").write_text(f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    subprocess.run(
        ["bash", str(REPO / "scripts" / "start-registry.sh"), str(port), str(data), str(data / "htpasswd")], check=True
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if (data / "registry.pid").exists():
            subprocess.run(["kill", (data / "registry.pid").read_text().strip()], check=False)


@contextlib.contextmanager
def environment_set(variables: dict[str, str]):
    """Set ``variables`` in the process environment for the block, then put back what was there."""
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value



GENERATOR = str(REPO / "dags" / "cloud_scheduled.py")


def load_dag(name: str):
    """The DAG of ``dags/<name>.py``, imported from its file as Airflow's parser does."""
    spec = importlib.util.spec_from_file_location(f"dag_{name}", REPO / "dags" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def deployment_status(project):
    from cloud_deploy_provider.api import runs
    from cloud_deploy_provider.api.index import latest_run
    from cloud_deploy_provider.status import derive_status

    return derive_status(latest_run(runs.DEPLOY_DAG, project.ref), latest_run(runs.UNDEPLOY_DAG, project.ref))


def parse_dags_into_db() -> None:
    """Parse the DAG folder and write the DAGs to the metadata DB (with their next run), as the dag-processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert not bag.import_errors, bag.import_errors
        sync_bag_to_db(bag, bundle.name, bundle.version)


def scheduled_dagbag():
    """The scheduled DAGs as Airflow's DagBag parses them from the generator file."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=GENERATOR)


def set_schedule(project: Project, **schedule) -> None:
    project.edit(lambda spec: spec.__setitem__("schedule", schedule))


def xcom(run, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_run_id=run.id, task_id=task_id, key=key).one_or_none()
        return XComModel.deserialize_value(row) if row else None


class Log(list):
    """What a job runner logged, with when each line arrived."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def __call__(self, line: str) -> None:
        self.append(line)
        self.times.append(time.monotonic())


def python(code: str) -> list[str]:
    return ["python3", "-c", code]


# A spec with apt and pip packages, an entrypoint that needs quoting and two optional files: the build tests' own.
BUILD_SPEC = """
build:
  components:
    libs: [python==3.11, "requests>=2; python_version > '3'"]
    custom_packages: {apt: [curl, libgomp1], pypi: [numpy==1.26.4]}
deploy:
  type: docker
  service_name: svc
  entrypoint: [python3, server.py, "--name", "it's $HOME"]
optional: {weight_file: model.bin, nn_file: server.py}
"""


def build_project(folder: Path) -> Path:
    """A project folder for ``BUILD_SPEC``: its files, an executable script, and a ``.git`` that must not ship."""
    (folder / "server.py").write_text("print('hi')\n")
    (folder / "model.bin").write_bytes(b"\x00weights")
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    (folder / ".git").mkdir()
    (folder / ".git" / "config").write_text("secret")
    (folder / "deployment.yaml").write_text(BUILD_SPEC)
    return folder


def plan_for(project: Path, text: str = BUILD_SPEC, settings=None):
    """The build plan of ``text`` for the folder ``project``, with the local catalog."""
    from cloud_deploy_provider.build import render_build
    from cloud_deploy_provider.catalog import load_catalog
    from cloud_deploy_provider.settings import BuildSettings
    from cloud_deploy_provider.spec import parse_spec_text

    catalog = load_catalog(REPO / "samples" / "catalog.local.yaml")
    return render_build(parse_spec_text(text), project, settings or BuildSettings(), catalog)


def wait_until(condition, seconds: float, what: str):
    """``condition()``'s first true value, polled until ``seconds`` pass; an AssertionError naming ``what`` then."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")
