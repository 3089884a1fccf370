"""Shared fixtures: a real Docker engine, a real registry, a real Airflow metadata DB.

Airflow reads its configuration when first imported, so its environment is set here, at
conftest import, before any test module imports it. Nothing here skips: a missing engine or
registry fails the run loudly.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
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


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.APIClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"), timeout=600)
        client.ping()
    except Exception as error:
        pytest.fail(f"these tests need a running Docker engine (start one with scripts/ensure-docker.sh): {error}")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """The local Debian + Python base image (made with debootstrap; no Docker Hub here), built once."""
    from docker.errors import ImageNotFound

    try:
        docker_client.inspect_image(BASE_IMAGE)
    except ImageNotFound:
        subprocess.run(["bash", str(REPO / "scripts" / "build-base-image.sh"), BASE_IMAGE], check=True)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def registry():
    """A real OCI registry (Debian's docker-registry) on a free loopback port."""
    from cloud_deploy_provider.registry import Registry

    if shutil.which("docker-registry") is None:
        pytest.fail("these tests need Debian's docker-registry package (apt-get install docker-registry)")
    port = free_port()
    data = SESSION_DIR / f"registry-{port}"
    subprocess.run(["bash", str(REPO / "scripts" / "start-registry.sh"), str(port), str(data)], check=True)
    yield Registry(host=f"127.0.0.1:{port}", scheme="http")
    pid_file = data / "registry.pid"
    if pid_file.exists():
        subprocess.run(["kill", pid_file.read_text().strip()], check=False)


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata DB (SQLite) in the session's AIRFLOW_HOME."""
    from airflow.utils import db

    db.resetdb()
    return os.environ["AIRFLOW_HOME"]


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


@pytest.fixture
def hello_project(docker_client, base_image):
    project = Project("hello")
    yield project
    from cloud_deploy_provider.targets.docker import DockerTarget

    DockerTarget(project.ref, log=lambda _: None, client=docker_client).stop(None)


@pytest.fixture(scope="session")
def serialized_dags(airflow_db):
    """The repo's DAGs parsed and written to the metadata DB, as the dag-processor would."""
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
