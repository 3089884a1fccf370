"""The kubernetes target through the real DAGs and REST API, against the Kubernetes API stand-in.

The real ``kubernetes`` client (through the cncf-kubernetes hook) talks to a local API server that
runs pods as containers on the engine, pulling the pushed image from a registry with a login.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from cloud_deploy_provider.api.app import create_gateway_app
from cloud_deploy_provider.api.deployments import current_status
from cloud_deploy_provider.status import Status
from tests.helpers import Project, deployment_status, load_dag

FLOWER = {"features": [5.1, 3.5, 1.4, 0.2]}


def _client(cluster):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = cluster.endpoint
    configuration.api_key = {"authorization": f"Bearer {cluster.token}"}
    api = client.ApiClient(configuration)
    return client.AppsV1Api(api), client.CoreV1Api(api), client.NetworkingV1Api(api)


def _deploy(project):
    run = load_dag("cloud_deploy").test(run_conf=project.conf)
    return run, deployment_status(project)


def _through_ingress(cluster, host: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request("POST" if "json" in kwargs else "GET", f"http://127.0.0.1:{cluster.ingress_port}{path}",
                         headers={"Host": host}, timeout=10, **kwargs)


def _free_node_port() -> int:
    for port in range(31000, 32700):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free node port")


@pytest.fixture
def inference(cluster, airflow_db, base_image):
    project = Project("k8s-inference")
    yield project
    load_dag("cloud_undeploy").test(run_conf=project.conf)


def test_inference_with_nfs_and_ingress_runs_updates_and_stops(cluster, inference, serialized_dags, monkeypatch, pull_registry):
    nfs = cluster.nfs_dir("10.0.0.5", "/exports/tango")
    nfs.mkdir(parents=True, exist_ok=True)
    (nfs / "model.json").write_text((inference.folder / "model.json").read_text())
    inference.edit(lambda spec: spec["deploy"]["env"].__setitem__("MODEL_FILE", "/models/model.json"))

    run, status = _deploy(inference)
    assert run.state == "success", (status.stage, status.message)
    assert status.status == Status.RUNNING and status.url == "http://hello.example.com/"
    answer = _through_ingress(cluster, "hello.example.com", "/predict", json=FLOWER)
    assert answer.json()["class"] == "setosa", "served through the ingress, weights from the NFS share"

    apps, core, networking = _client(cluster)
    name = inference.ref.resource_name("hello")
    deployment = apps.read_namespaced_deployment(name, "tango")
    pod = deployment.spec.template.spec
    assert pod.containers[0].image == f"{status.image['reference'].rsplit(':', 1)[0]}@{status.image['digest']}"
    assert pod.containers[0].image.startswith(pull_registry[0] + "/")
    assert pod.image_pull_secrets[0].name == f"{name}-pull"
    assert core.read_namespaced_secret(f"{name}-pull", "tango").type == "kubernetes.io/dockerconfigjson"
    assert (deployment.status.available_replicas, deployment.metadata.labels["cloud-deploy.io/project"]) == (2, inference.project_id)

    monkeypatch.delenv("CLOUD_DEPLOY_GATEWAY_TOKEN", raising=False)
    gateway = TestClient(create_gateway_app())
    assert gateway.get("/status_request", params=inference.conf).text == "running"
    detail = gateway.get(f"/deployments/{inference.user_id}/{inference.project_id}").json()
    assert "2 of 2 replicas available" in detail["message"] and "ingress http://hello.example.com/" in detail["message"]
    assert pull_registry[1] not in json.dumps(detail)

    unchanged_run, unchanged = _deploy(inference)
    assert unchanged_run.state == "success" and unchanged.target["changed"] is False

    server = inference.folder / "server.py"
    server.write_text(server.read_text().replace('"usage"', '"version": 2, "usage"'))
    updated_run, updated = _deploy(inference)
    assert updated_run.state == "success", updated.message
    assert updated.image["digest"] != status.image["digest"]
    assert apps.read_namespaced_deployment(name, "tango").spec.template.spec.containers[0].image.endswith(updated.image["digest"])
    assert _through_ingress(cluster, "hello.example.com", "/").json()["version"] == 2, "rolled to the new digest"

    assert load_dag("cloud_undeploy").test(run_conf=inference.conf).state == "success"
    selector = f"cloud-deploy.io/project={inference.project_id}"
    assert apps.list_namespaced_deployment("tango", label_selector=selector).items == []
    assert core.list_namespaced_service("tango", label_selector=selector).items == []
    assert networking.list_namespaced_ingress("tango", label_selector=selector).items == []
    assert core.list_namespaced_secret("tango", label_selector=selector).items == []
    assert deployment_status(inference).status == Status.STOPPED
    assert load_dag("cloud_undeploy").test(run_conf=inference.conf).state == "success", "stop is idempotent"


def test_gpu_workstation_with_two_containers_volumes_and_a_fixed_node_port(cluster, airflow_db, base_image, tmp_path):
    """The GPU-server deployer's sshd + jupyter pod; servers stand in for sshd and JupyterHub so the test needs no downloads."""
    project = Project("k8s-gpu-workstation")
    ssh_port = _free_node_port()
    raid = tmp_path / "raid"
    raid.mkdir()
    (raid / "dataset.csv").write_text("a,b\n")

    def workstation(spec):
        spec["build"]["components"] = {"libs": ["python==3.11"]}
        k8s = spec["deploy"]["k8s"]
        k8s["volumes"][1]["host_path"] = str(raid)
        sshd, jupyter = k8s["containers"]
        sshd.update(command=["python3", "-m", "http.server", "22", "--directory", "/data"], args=[])
        sshd["ports"][0]["node_port"] = ssh_port
        jupyter.update(command=["python3", "-m", "http.server", "8000", "--directory", "/home"], args=[])

    project.edit(workstation)
    try:
        run, status = _deploy(project)
        assert run.state == "success", (status.stage, status.message)
        live = current_status(project.ref)
        assert f"ssh 127.0.0.1:{ssh_port}" in live.message and live.url.startswith("http://127.0.0.1:"), live
        listing = httpx.get(f"http://127.0.0.1:{ssh_port}/", timeout=10).text
        assert "dataset.csv" in listing, "the host volume is mounted at /data in the first container"

        apps, core, _ = _client(cluster)
        name = project.ref.resource_name("jupyter-test")
        pod = core.list_namespaced_pod("tango", label_selector=f"app.kubernetes.io/instance={name}").items[0]
        assert [c.name for c in pod.spec.containers] == ["sshd", "jupyterhub"]
        assert pod.spec.containers[1].resources.limits["nvidia.com/gpu"] == "2"
        claim = core.read_namespaced_persistent_volume_claim(f"{name}-data", "tango")
        assert claim.spec.resources.requests["storage"] == "100Gi"
        service = core.read_namespaced_service(name, "tango")
        assert service.spec.type == "NodePort" and service.spec.ports[0].node_port == ssh_port
    finally:
        assert load_dag("cloud_undeploy").test(run_conf=project.conf).state == "success"
    assert core.read_namespaced_persistent_volume_claim(f"{name}-data", "tango"), "a NAS volume outlives the deployment"
    assert apps.list_namespaced_deployment("tango", label_selector=f"app.kubernetes.io/instance={name}").items == []
    project.edit(lambda spec: spec["deploy"]["k8s"]["volumes"][0].__setitem__("disposable", True))
    assert load_dag("cloud_undeploy").test(run_conf=project.conf).state == "success"
    assert core.list_namespaced_persistent_volume_claim("tango", label_selector=f"app.kubernetes.io/instance={name}").items == []


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda spec: spec["build"].__setitem__("accelerator", "gpu:nvidia:a100:4"),
         ["is Unschedulable: 0/1 nodes are available", "Insufficient nvidia.com/gpu"]),
        (lambda spec: spec["deploy"]["env"].__setitem__("MODEL_FILE", "missing.json"),
         ["CrashLoopBackOff, exit code 1", "last log lines", "missing.json"]),
        (lambda spec: spec["deploy"]["k8s"].__setitem__(
            "containers", [{"name": "app", "image": "127.0.0.1:9/nowhere/app:1", "ports": [{"port": 8080}]}]),
         ["container app: ", "ErrImagePull", 'failed to pull image "127.0.0.1:9/nowhere/app:1"']),
    ],
    ids=["unschedulable-gpu", "crash-loop", "image-pull"],
)
def test_a_rollout_that_cannot_finish_fails_with_the_pods_reason(cluster, inference, change, expected):
    inference.edit(lambda spec: spec["deploy"].update(replicas=1))
    inference.edit(change)
    run, status = _deploy(inference)
    assert run.state == "failed" and status.stage == "wait_ready", status.message
    for text in expected:
        assert text in status.message, status.message


def test_another_projects_deployment_of_the_same_name_is_never_touched(cluster, inference):
    apps, _, _ = _client(cluster)
    name = inference.ref.resource_name("hello")
    apps.create_namespaced_deployment("tango", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"team": "other"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "other"}},
                 "template": {"metadata": {"labels": {"app": "other"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    })
    try:
        run, status = _deploy(inference)
        assert run.state == "failed" and status.stage == "deploy"
        assert "is not this project's (no matching owner label); it was left untouched" in status.message
        assert load_dag("cloud_undeploy").test(run_conf=inference.conf).state == "success"
        assert apps.read_namespaced_deployment(name, "tango").metadata.labels == {"team": "other"}
    finally:
        apps.delete_namespaced_deployment(name, "tango")


def test_a_wrong_token_fails_validate(cluster, inference, monkeypatch):
    kubeconfig = cluster.kubeconfig()
    kubeconfig["users"][0]["user"]["token"] = "not-the-token"
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(kubeconfig), "namespace": "tango"}}))
    cluster.clear_requests()
    run, status = _deploy(inference)
    assert run.state == "failed" and status.stage == "validate"
    assert "kubernetes: list deployments: 401" in status.message, status.message
    assert [method for method, _, _ in cluster.requests if method != "GET"] == []
