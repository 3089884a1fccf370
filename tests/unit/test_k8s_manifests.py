"""What the kubernetes target renders: validated against the Kubernetes OpenAPI (JSON) schema of the
client's version, and the shapes TANGO's Kubernetes deployers ask for (volumes, sidecars, node ports, GPUs, ingress)."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest

from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.registries.oci import Registry
from cloud_deploy_provider.spec import SpecError, load_spec, validate_spec_data
from cloud_deploy_provider.targets.kubernetes import KubernetesTarget, KubernetesTargetError

REPO = Path(__file__).resolve().parents[2]
CLIENT_VERSION = f"1.{kubernetes.__version__.split('.')[0]}.0"
IMAGE = "registry.example.com/team/app@sha256:" + "a" * 64


class OfflineHook:
    """The connection's namespace without a cluster: rendering calls no API."""

    def get_namespace(self):
        return "tango"


def target(registry: Registry | None = None) -> KubernetesTarget:
    return KubernetesTarget(ProjectRef("alice", "p1"), log=lambda _: None, hook=OfflineHook(), registry=registry)


def sample(name: str):
    return load_spec(REPO / "samples" / name / "deployment.yaml")


@pytest.mark.parametrize("name", ["k8s-inference", "k8s-gpu-workstation"])
def test_rendered_manifests_validate_against_the_schema_of_the_clients_version(name):
    login = Registry("registry.example.com", username="bot", password="pw")
    manifests = target(login).manifests(sample(name), IMAGE)
    assert {m["kind"] for m in manifests} >= {"Deployment", "Service", "Secret"}
    for manifest in manifests:
        kubernetes_validate.validate(manifest, CLIENT_VERSION, strict=True)


def test_an_unknown_field_fails_the_schema():
    manifest = target().deployment(sample("k8s-inference"), IMAGE)
    manifest["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, CLIENT_VERSION, strict=True)


def test_the_gpu_workstation_has_two_containers_volumes_shm_and_a_fixed_node_port():
    spec = sample("k8s-gpu-workstation")
    deployment = target().deployment(spec, IMAGE)
    pod = deployment["spec"]["template"]["spec"]
    sshd, jupyter = pod["containers"]
    assert (sshd["command"], sshd["args"]) == (["/usr/sbin/sshd"], ["-D"])
    assert "nvidia.com/gpu" not in json.dumps(sshd["resources"]) and jupyter["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert sshd["resources"]["limits"] == {"cpu": "8", "memory": "65536Mi"}, "pod totals go to the first container"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"].endswith("-data")
    assert volumes["raid"]["hostPath"] == {"path": "/raid", "type": "DirectoryOrCreate"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16384Mi"}
    assert {m["mountPath"] for m in jupyter["volumeMounts"]} == {"/home", "/data", "/dev/shm"}
    service = target().service(spec)
    assert service["spec"]["type"] == "NodePort"
    assert [(p["name"], p["port"], p.get("nodePort")) for p in service["spec"]["ports"]] == [("ssh", 22, 30020), ("http", 8000, None)]
    claim = target().claims(spec)[0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"


def test_the_inference_sample_mounts_the_nfs_share_and_routes_its_ingress():
    spec = sample("k8s-inference")
    deployment = target().deployment(spec, IMAGE)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["metadata"]["namespace"] == "tango" and deployment["spec"]["replicas"] == 2
    assert container["image"] == IMAGE and container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert {"name": "nfs", "nfs": {"server": "10.0.0.5", "path": "/exports/tango"}} in deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "nfs", "mountPath": "/models"} in container["volumeMounts"]
    rule = target().ingress(spec)["spec"]["rules"][0]
    assert rule["host"] == "hello.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["port"]["number"] == 8080
    assert "imagePullSecrets" not in deployment["spec"]["template"]["spec"], "no registry login, no pull secret"


def test_every_object_carries_the_owner_label_and_the_selector_is_per_project():
    manifests = target(Registry("r.example.com", username="u", password="p")).manifests(sample("k8s-inference"), IMAGE)
    assert len({m["metadata"]["labels"]["cloud-deploy.io/owner"] for m in manifests}) == 1
    mine = target().deployment(sample("k8s-inference"), IMAGE)
    other = KubernetesTarget(ProjectRef("bob", "p1"), hook=OfflineHook()).deployment(sample("k8s-inference"), IMAGE)
    assert other["spec"]["selector"] != mine["spec"]["selector"]
    assert other["metadata"]["labels"]["cloud-deploy.io/owner"] != mine["metadata"]["labels"]["cloud-deploy.io/owner"]


def test_describe_hides_the_registry_password():
    login = Registry("registry.example.com", username="bot", password="s3cret-pw")
    rendered = json.dumps(target(login).manifests(sample("k8s-inference"), IMAGE, reveal=False))
    assert "s3cret" not in rendered and "czNjcmV0" not in rendered


@pytest.mark.parametrize(
    "k8s, problem",
    [
        ({"nfsip": "10.0.0.5"}, "nfsip and nfspath go together"),
        ({"volumes": [{"name": "data"}]}, "a nas volume needs a size"),
        ({"volumes": [{"name": "raid", "type": "host"}]}, "a host volume needs host_path"),
        ({"volumes": [{"name": "Data", "size": "1Gi"}]}, "is not a Kubernetes name"),
        ({"volumes": [{"name": "d", "size": "lots"}]}, "is not a size such as 100Gi"),
        ({"containers": [{"name": "a", "volumes": [{"name": "nfs", "path": "/n"}]}]}, "nfs needs nfsip and nfspath"),
        ({"containers": [{"name": "a"}, {"name": "a"}]}, "container names must be unique: a"),
        ({"containers": [{"name": "a", "ports": [{"port": 22, "node_port": 80}]}]}, "from 30000 to 32767"),
        ({"containers": [{"name": "a", "ports": [{"port": 22, "name": "SSH"}]}]}, "is not a port name"),
        ({"ingress": {"host": "bad host"}}, "is not a DNS host name"),
        ({"ingress": {"host": "10.0.0.1"}}, "is not a DNS host name"),
        ({"service_type": "loadbalancer"}, "not a known service type"),
    ],
)
def test_k8s_spec_rejections(k8s, problem):
    with pytest.raises(SpecError) as error:
        validate_spec_data({"build": {}, "deploy": {"type": "kubernetes", "service_name": "s", "k8s": k8s}})
    assert problem in str(error.value)


def test_a_node_port_on_a_cluster_ip_service_and_an_ingress_to_no_port_are_refused():
    base = {"build": {}, "deploy": {"type": "kubernetes", "service_name": "s"}}
    spec = validate_spec_data({**base, "deploy": {**base["deploy"], "k8s": {
        "service_type": "clusterip", "containers": [{"name": "a", "ports": [{"port": 22, "node_port": 30022}]}]}}})
    with pytest.raises(KubernetesTargetError, match="node_port needs k8s.service_type nodeport"):
        target().service(spec)
    spec = validate_spec_data({**base, "deploy": {**base["deploy"], "k8s": {"ingress": {"host": "a.example.com", "port": 9999}}}})
    with pytest.raises(KubernetesTargetError, match="k8s.ingress.port 9999 is not a port of the pod"):
        target().ingress(spec)


def test_render_prints_the_manifests_without_calling_the_cluster(capsys, monkeypatch):
    from cloud_deploy_provider.cli import main

    closed = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
              "users": [{"name": "u", "user": {"token": "t"}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(closed), "namespace": "tango"}}))
    monkeypatch.setenv("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples" / "catalog.local.yaml"))
    assert main(["render", str(REPO / "samples" / "k8s-gpu-workstation")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert '"kind": "Deployment"' in out and '"nodePort": 30020' in out and '"namespace": "tango"' in out, out


def test_a_scheduled_kubernetes_job_is_a_valid_job_of_the_clients_version(monkeypatch):
    from cloud_deploy_provider.jobs.kubernetes import LABEL_JOB, KubernetesJobRunner
    from cloud_deploy_provider.settings import SettingsError
    from cloud_deploy_provider.spec import Job
    from cloud_deploy_provider.targets.kubernetes import LABEL_OWNER, owner_value

    project = ProjectRef("alice", "p1")
    runner = KubernetesJobRunner(project, log=lambda _: None, hook=OfflineHook(),
                                 registry=Registry("registry.example.com", username="bot", password="pw"))
    job = Job.model_validate({"name": "nightly", "cron": "@daily", "command": ["python3", "score.py"], "retries": 2,
                              "timeout_seconds": 900, "env": {"DAY": "today"},
                              "resources": {"cpu": 2, "memory": 4096, "gpu": 1, "gpu_type": "nvidia-tesla-t4"}})
    manifest = runner.job_manifest(sample("k8s-inference"), job, IMAGE, work_dir="/workspace")

    kubernetes_validate.validate(manifest, CLIENT_VERSION, strict=True)
    spec, pod = manifest["spec"], manifest["spec"]["template"]["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], pod["restartPolicy"]) == (2, 900, "Never")
    container = pod["containers"][0]
    assert (container["image"], container["command"], container["workingDir"]) == (IMAGE, ["python3", "score.py"],
                                                                                   "/workspace")
    assert {"name": "DAY", "value": "today"} in container["env"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "4096Mi"},
                                      "limits": {"nvidia.com/gpu": "1", "cpu": "2", "memory": "4096Mi"}}
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert pod["imagePullSecrets"] == [{"name": f"{manifest['metadata']['name']}-pull"}]
    assert manifest["metadata"]["namespace"] == "tango"  # the connection's
    labels = manifest["metadata"]["labels"]
    assert labels[LABEL_OWNER] == owner_value(project) and labels[LABEL_JOB] == "nightly"
    assert spec["template"]["metadata"]["labels"] == labels and len(manifest["metadata"]["name"]) <= 57
    secret = runner.job_pull_secret(sample("k8s-inference"), job)
    assert secret["metadata"]["name"] == f"{manifest['metadata']['name']}-pull" and secret["metadata"]["labels"] == labels

    monkeypatch.setenv("CLOUD_DEPLOY_K8S_GPU_TYPE_LABEL", "nvidia.com/gpu.product")
    assert runner.job_manifest(sample("k8s-inference"), job, IMAGE)["spec"]["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "nvidia-tesla-t4"}
    monkeypatch.setenv("CLOUD_DEPLOY_K8S_GPU_TYPE_LABEL", "bad key/with space")
    with pytest.raises(SettingsError, match="CLOUD_DEPLOY_K8S_GPU_TYPE_LABEL: 'bad key/with space' is not a Kubernetes"):
        runner.job_manifest(sample("k8s-inference"), job, IMAGE)


def test_render_prints_a_kubernetes_jobs_manifest(capsys, monkeypatch, tmp_path):
    import shutil

    import yaml

    from cloud_deploy_provider.cli import main

    shutil.copytree(REPO / "samples" / "hello", tmp_path / "hello")
    spec_file = tmp_path / "hello" / "deployment.yaml"
    data = yaml.safe_load(spec_file.read_text())
    data["schedule"] = {"jobs": [{"name": "score", "cron": "@daily", "command": ["python3", "-V"], "target": "kubernetes"}]}
    spec_file.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(
        {"conn_type": "kubernetes", "extra": {"in_cluster": False, "namespace": "batch"}}))
    monkeypatch.setenv("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples" / "catalog.local.yaml"))
    assert main(["render", str(tmp_path / "hello")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    rendered = json.loads(out.split("# kubernetes job score\n", 1)[1])
    assert rendered["kind"] == "Job" and rendered["metadata"]["namespace"] == "batch"
    assert rendered["spec"]["template"]["spec"]["containers"][0]["image"] == "<the pushed image, by digest>"
