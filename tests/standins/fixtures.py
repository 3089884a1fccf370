"""The stand-ins' fixtures, with the Docker engine's, the registries' and Airflow's: one pytest plugin
(``pytest_plugins`` in ``tests/conftest.py``). Nothing here skips: a missing engine or registry fails the run.

Every fixture that needs the Docker engine depends on ``docker_client``; the ``docker`` marker is set from that
(see ``tests/conftest.py``), so ``pytest -m "not docker"`` runs without an engine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers import (
    BASE_IMAGE, REPO, SESSION_DIR, Project, build_project, environment_set, free_port, parse_dags_into_db,
    registry_with_login, wait_http,
)

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
    from cloud_deploy_provider.registries.oci import Registry

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


@pytest.fixture
def hello_project(docker_client, base_image):
    project = Project("hello")
    yield project
    from cloud_deploy_provider.targets.docker import DockerTarget

    DockerTarget(project.ref, log=lambda _: None, client=docker_client).stop(None)


@pytest.fixture(scope="session")
def serialized_dags(airflow_db):
    """The repo's DAGs parsed and written to the metadata DB, as the dag-processor would."""
    parse_dags_into_db()


MOTO_ACCOUNT = "123456789012"
MOTO_REGION = "us-east-1"


class AwsStandIn:
    """moto as a real HTTP server, plus a registry standing in for the account's ECR registry.

    ECR's registry side (the OCI distribution API with basic auth ``AWS:<token>``) is not in moto,
    so a real registry with htpasswd accepts exactly moto's ``GetAuthorizationToken`` answer.
    """

    access_key = "AKIACLOUDDEPLOYTEST1"

    def __init__(self, endpoint: str, registry_host: str, secret: str):
        self.endpoint = endpoint
        self.registry_host = registry_host
        self.secret_key = secret
        self.ecr_password = f"{MOTO_ACCOUNT}-auth-token"
        self.region = MOTO_REGION
        self.defaults: dict = {}

    def client(self, service: str, endpoint: str | None = None):
        import boto3

        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def connection(self, endpoint: str | None = None, **defaults) -> str:
        import json

        extra = {
            "region_name": self.region,
            "endpoint_url": endpoint or self.endpoint,
            "cloud_deploy": {**self.defaults, "ecr_registry_endpoint": self.registry_host, **defaults},
        }
        return json.dumps({"conn_type": "aws", "login": self.access_key, "password": self.secret_key, "extra": extra})

    def role(self, name: str, service: str) -> str:
        import json

        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}
        return self.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(policy))["Role"]["Arn"]

    def provision(self) -> None:
        """What an AWS account already has before cloud-deploy runs: network, roles, a bucket, a Batch queue."""
        ec2 = self.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="cloud-deploy-test", Description="test", VpcId=vpc)["GroupId"]
        self.client("s3").create_bucket(Bucket="cloud-deploy-test-models")
        batch_role = self.role("cloud-deploy-batch", "batch.amazonaws.com")
        batch = self.client("batch")
        environment = batch.create_compute_environment(
            computeEnvironmentName="cloud-deploy-test", type="UNMANAGED", state="ENABLED", serviceRole=batch_role
        )["computeEnvironmentArn"]
        batch.create_job_queue(
            jobQueueName="cloud-deploy-test", state="ENABLED", priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
        )
        self.defaults = {
            "subnets": [subnet],
            "security_groups": [group],
            "execution_role_arn": self.role("cloud-deploy-ecs-execution", "ecs-tasks.amazonaws.com"),
            "sagemaker_execution_role_arn": self.role("cloud-deploy-sagemaker", "sagemaker.amazonaws.com"),
            "sagemaker_bucket": "cloud-deploy-test-models",
            "batch_job_queue": "cloud-deploy-test",
        }


@pytest.fixture(scope="session")
def aws(docker_client):
    """moto server (real HTTP, real boto3) + the ECR registry stand-in; the ``aws_default`` connection points at them."""
    import bcrypt

    secret = "moto-secret-" + uuid.uuid4().hex
    moto_port, registry_port = free_port(), free_port()
    data = SESSION_DIR / f"ecr-{registry_port}"
    data.mkdir()
    password = f"{MOTO_ACCOUNT}-auth-token".encode()
    (data / "htpasswd").write_text(f"AWS:{bcrypt.hashpw(password, bcrypt.gensalt(rounds=5)).decode()}\n")
    subprocess.run(
        ["bash", str(REPO / "scripts" / "start-registry.sh"), str(registry_port), str(data), str(data / "htpasswd")],
        check=True,
    )
    moto_env = {**os.environ, "MOTO_ECS_SERVICE_RUNNING": "1", "MOTO_ALLOW_NONEXISTENT_REGION": "false"}
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
        env=moto_env, stdout=open(SESSION_DIR / "moto.log", "wb"), stderr=subprocess.STDOUT,
    )
    stand_in = AwsStandIn(f"http://127.0.0.1:{moto_port}", f"127.0.0.1:{registry_port}", secret)
    previous = os.environ.get("AIRFLOW_CONN_AWS_DEFAULT")
    try:
        wait_http(stand_in.endpoint + "/moto-api/")
        stand_in.provision()
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = stand_in.connection()
        yield stand_in
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        if (data / "registry.pid").exists():
            subprocess.run(["kill", (data / "registry.pid").read_text().strip()], check=False)
    if previous is None:
        os.environ.pop("AIRFLOW_CONN_AWS_DEFAULT", None)
    else:
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = previous


GCP_REGION = "asia-northeast3"


class GcpEnv:
    """The Google Cloud stand-in plus the registry that plays Artifact Registry's Docker host.

    The registry accepts exactly ``oauth2accesstoken`` with the access token the stand-in's
    OAuth2 endpoint issues for the service-account key, as Artifact Registry does.
    """

    def __init__(self, stand_in, registry_host: str):
        self.stand_in = stand_in
        self.registry_host = registry_host
        self.region = GCP_REGION

    @property
    def project_id(self) -> str:
        return self.stand_in.project_id

    def connection(self, keyfile: dict | None = None, **defaults) -> str:
        import json

        extra = {
            "keyfile_dict": json.dumps(keyfile or self.stand_in.keyfile_dict),
            "project": self.project_id,
            "cloud_deploy": {
                "region": self.region,
                "run_endpoint": self.stand_in.endpoint,
                "artifact_registry_endpoint": self.stand_in.endpoint,
                "docker_registry": self.registry_host,
                **defaults,
            },
        }
        return json.dumps({"conn_type": "google_cloud_platform", "extra": extra})

    def credentials(self):
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(
            self.stand_in.keyfile_dict, scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )

    def run(self):
        from google.cloud import run_v2

        options = {"api_endpoint": self.stand_in.endpoint}
        return run_v2.ServicesClient(credentials=self.credentials(), transport="rest", client_options=options)

    def artifact_registry(self):
        from google.cloud import artifactregistry_v1

        options = {"api_endpoint": self.stand_in.endpoint}
        return artifactregistry_v1.ArtifactRegistryClient(credentials=self.credentials(), transport="rest", client_options=options)


@pytest.fixture(scope="session")
def gcp(docker_client):
    """The stand-in and its registry; the ``google_cloud_default`` connection points at them."""
    from tests.standins.gcp import GcpStandIn

    stand_in = GcpStandIn(docker_client)
    with registry_with_login("artifact-registry", "oauth2accesstoken", stand_in.access_token) as registry_host:
        stand_in.registry_auth = {
            "username": "oauth2accesstoken", "password": stand_in.access_token, "serveraddress": registry_host,
        }
        stand_in.start()
        environment = GcpEnv(stand_in, registry_host)
        try:
            with environment_set({"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": environment.connection()}):
                yield environment
        finally:
            stand_in.stop()

BACKENDAI_SCALING_GROUPS = {
    "default": {"cpu": 16, "mem": "64g", "cuda.device": 2, "cuda.shares": 2, "rocm.device": 1, "tpu.device": 1},
    "atom-max": {"cpu": 32, "mem": "128g", "atom-max.device": 4},
}


class BackendAIEnv:
    """The Backend.AI manager stand-in plus the registry its cluster pulls from (with its own login)."""

    def __init__(self, stand_in, registry_host: str, registry_password: str):
        self.stand_in = stand_in
        self.registry_host = registry_host
        self.registry_password = registry_password

    def connection(self, secret_key: str | None = None, **extra) -> str:
        import json

        return json.dumps({
            "conn_type": "backendai",
            "host": self.stand_in.endpoint,
            "login": self.stand_in.access_key,
            "password": secret_key or self.stand_in.secret_key,
            "extra": {"domain": "default", "group": "default", "registry_conn_id": "backendai_registry", **extra},
        })

    def client(self):
        from cloud_deploy_provider.hooks.backendai import BackendAIClient, BackendAISettings, BackendAIExtra

        stand_in = self.stand_in
        return BackendAIClient(BackendAISettings("test", stand_in.endpoint, stand_in.access_key, stand_in.secret_key,
                                                 BackendAIExtra()))


@pytest.fixture(scope="session")
def backendai(docker_client):
    """The stand-in; ``backendai_default`` points at it and ``backendai_registry`` at its cluster registry."""
    import json
    import secrets

    from tests.standins.backendai import BackendAIStandIn

    password = secrets.token_urlsafe(16)
    with registry_with_login("backendai-registry", "bai", password) as registry_host:
        auth = {"username": "bai", "password": password, "serveraddress": registry_host}
        stand_in = BackendAIStandIn(docker_client, registry_auth=auth, scaling_groups=BACKENDAI_SCALING_GROUPS).start()
        environment = BackendAIEnv(stand_in, registry_host, password)
        registry_connection = {"conn_type": "docker", "host": f"http://{registry_host}", "login": "bai", "password": password}
        variables = {
            "AIRFLOW_CONN_BACKENDAI_DEFAULT": environment.connection(),
            "AIRFLOW_CONN_BACKENDAI_REGISTRY": json.dumps(registry_connection),
        }
        try:
            with environment_set(variables):
                yield environment
        finally:
            stand_in.stop()


K8S_NODE_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "2"}
K8S_NODE_LABELS = {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}  # a GKE T4 node


@pytest.fixture(scope="session")
def kubernetes_cluster(docker_client):
    """The Kubernetes API stand-in; ``kubernetes_default`` points at it (namespace ``tango``)."""
    import json

    from tests.standins.kubernetes import KubernetesStandIn

    stand_in = KubernetesStandIn(docker_client, node_capacity=K8S_NODE_CAPACITY, node_labels=K8S_NODE_LABELS).start()
    connection = {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(stand_in.kubeconfig()), "namespace": "tango"}}
    try:
        with environment_set({"AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(connection)}):
            yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture(scope="module")
def package_index():
    """A local PyPI index whose packages can be held back (``gate``), to keep a build in pip as long as a test needs."""
    from tests.standins.package_index import GatedPackageIndex

    with GatedPackageIndex() as index:
        yield index


@pytest.fixture(scope="module")
def pull_registry():
    """A registry with its own login, for a cluster to pull from; (host, password)."""
    password = secrets.token_urlsafe(12)
    with registry_with_login("k8s-registry", "puller", password) as host:
        yield host, password


@pytest.fixture
def cluster(kubernetes_cluster, pull_registry, monkeypatch):
    """The Kubernetes stand-in with the installation's registry (``CLOUD_DEPLOY_REGISTRY_CONN_ID``) set to ``pull_registry``."""
    host, password = pull_registry
    connection = {"conn_type": "docker", "host": f"http://{host}", "login": "puller", "password": password}
    monkeypatch.setenv("AIRFLOW_CONN_K8S_REGISTRY", json.dumps(connection))
    monkeypatch.setenv("CLOUD_DEPLOY_REGISTRY_CONN_ID", "k8s_registry")
    return kubernetes_cluster


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder for ``BUILD_SPEC`` (the build tests'); a test module with projects of its own overrides it."""
    return build_project(tmp_path)
