"""Scheduled jobs on Kubernetes: batch/v1 Jobs through the real client against the API stand-in, whose pods
are real containers; through the generated DAG with the project's image pushed to a registry with a login."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from cloud_deploy_provider.identity import ProjectRef
from cloud_deploy_provider.jobs.kubernetes import LABEL_JOB, KubernetesJobRunner
from cloud_deploy_provider.scheduled import job_dag_id
from cloud_deploy_provider.spec import DeploymentSpec, Job
from cloud_deploy_provider.targets.kubernetes import LABEL_OWNER, owner_value
from tests.helpers import Log, Project, python, scheduled_dagbag, set_schedule, xcom

from tests.standins.kubernetes import LABEL as STANDIN_LABEL

NAMESPACE = "tango"
SPEC = DeploymentSpec.model_validate({
    "build": {"os": "debian12", "components": {"libs": ["python==3.11"]}},
    "deploy": {"type": "docker", "service_name": "scorer", "env": {"STAGE": "nightly"}},
})


def _job(**fields) -> Job:
    return Job.model_validate({"name": "nightly", "cron": "@daily", **fields})


def _api(cluster):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = cluster.endpoint
    configuration.api_key = {"authorization": f"Bearer {cluster.token}"}
    api = client.ApiClient(configuration)
    return client.BatchV1Api(api), client.CoreV1Api(api)


@pytest.fixture
def project(kubernetes_cluster, docker_client):
    ref = ProjectRef("alice", f"p-{uuid.uuid4().hex[:10]}")
    yield ref
    batch, core = _api(kubernetes_cluster)
    selector = f"{LABEL_OWNER}={owner_value(ref)}"
    left = [f"Job/{job.metadata.name}" for job in batch.list_namespaced_job(NAMESPACE, label_selector=selector).items]
    left += [f"Pod/{pod.metadata.name}" for pod in core.list_namespaced_pod(NAMESPACE, label_selector=selector).items]
    left += [f"Secret/{s.metadata.name}" for s in core.list_namespaced_secret(NAMESPACE, label_selector=selector).items]
    left += _pod_containers(docker_client, ref)
    for job in batch.list_namespaced_job(NAMESPACE, label_selector=selector).items:
        batch.delete_namespaced_job(job.metadata.name, NAMESPACE, propagation_policy="Background")
    assert not left, f"the run left {left} behind"


def _pod_containers(docker_client, project: ProjectRef) -> list[str]:
    """The stand-in's containers of the project's pods (named after their pod, named after the Job)."""
    running = docker_client.containers(all=True, filters={"label": STANDIN_LABEL})
    return [c["Names"][0] for c in running if f"cd-{project.user_id}-{project.project_id}-" in c["Names"][0]]


def _created_jobs(cluster) -> list[dict]:
    return [body for method, path, body in cluster.requests if method == "POST" and path.endswith("/jobs")]


def test_a_job_completes_with_its_exit_code_and_log_and_leaves_nothing(project, kubernetes_cluster, base_image,
                                                                       docker_client):
    log = Log()
    code = "import os, time; print('scoring', os.environ['STAGE'], flush=True); time.sleep(3); print('done')"
    runner = KubernetesJobRunner(project, log=log)
    result = runner.run(SPEC, _job(command=python(code), timeout_seconds=60), base_image)

    assert (result.state, result.exit_code, result.timed_out) == ("completed", 0, False), result
    assert result.log_tail == ["scoring nightly", "done"]
    assert result.message() == "completed (exit code 0)"
    first, second = log.index("scoring nightly"), log.index("done")
    assert log.times[second] - log.times[first] > 1.5, "the log is followed while the job runs, not copied at the end"
    pod = result.container
    assert pod.startswith(runner.job_name(_job())) and f"job nightly: attempt 1, pod {pod}" in log
    assert not _pod_containers(docker_client, project), "the pod's containers go with the Job"


def test_a_failing_job_is_retried_by_kubernetes_and_reports_the_last_exit_code_and_lines(project, kubernetes_cluster,
                                                                                          base_image):
    code = ("import sys, time; print('reading input', flush=True); time.sleep(0.3); "  # stdout, stderr: two pipes
            "print('no input for today', file=sys.stderr); sys.exit(3)")
    result = KubernetesJobRunner(project, log=Log()).run(SPEC, _job(command=python(code), retries=1), base_image)

    assert (result.state, result.exit_code, result.timed_out) == ("failed", 3, False), result
    assert result.message() == ("failed: exit code 3 (attempt 2 of 2); last log lines: reading input | "
                                "no input for today")
    job = _created_jobs(kubernetes_cluster)[-1]
    assert job["spec"]["backoffLimit"] == 1 and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_a_job_past_its_timeout_is_stopped_by_the_cluster_and_leaves_nothing(project, kubernetes_cluster, base_image,
                                                                             docker_client):
    log = Log()
    command = python("import time; print('working', flush=True); time.sleep(120)")
    started = time.monotonic()
    result = KubernetesJobRunner(project, log=log).run(SPEC, _job(command=command, timeout_seconds=4), base_image)

    assert time.monotonic() - started < 40
    assert (result.state, result.timed_out) == ("failed", True), result
    assert result.message().startswith("failed: exceeded its timeout of 4 s and was stopped; last log lines: working")
    assert _created_jobs(kubernetes_cluster)[-1]["spec"]["activeDeadlineSeconds"] == 4
    assert not _pod_containers(docker_client, project)


def test_a_pod_that_cannot_be_scheduled_fails_the_run_at_once_with_the_reason(project, kubernetes_cluster, base_image):
    started = time.monotonic()
    job = _job(command=["true"], resources={"gpu": 4}, timeout_seconds=600)
    result = KubernetesJobRunner(project, log=Log()).run(SPEC, job, base_image)

    assert time.monotonic() - started < 30
    assert result.state == "failed" and "Unschedulable" in result.message(), result
    assert "Insufficient nvidia.com/gpu" in result.message()
    limits = _created_jobs(kubernetes_cluster)[-1]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "4"}


def test_gpu_type_selects_the_nodes_labelled_with_that_gpu(project, kubernetes_cluster, base_image):
    """The stand-in's node is a GKE T4 node (``cloud.google.com/gke-accelerator: nvidia-tesla-t4``)."""
    on_t4 = _job(command=["true"], resources={"gpu": 1, "gpu_type": "nvidia-tesla-t4"})
    assert KubernetesJobRunner(project, log=Log()).run(SPEC, on_t4, base_image).state == "completed"

    on_v100 = _job(command=["true"], resources={"gpu": 1, "gpu_type": "nvidia-tesla-v100"})
    result = KubernetesJobRunner(project, log=Log()).run(SPEC, on_v100, base_image)
    assert result.state == "failed" and "didn't match Pod's node affinity/selector" in result.message(), result


def test_an_image_that_cannot_be_pulled_fails_the_run_with_the_pull_error(project, kubernetes_cluster):
    result = KubernetesJobRunner(project, log=Log()).run(SPEC, _job(command=["true"]), "127.0.0.1:9/nowhere/job:1")

    assert result.state == "failed" and "ErrImagePull" in result.message(), result


def test_what_an_earlier_run_left_is_removed_and_other_jobs_are_kept(project, kubernetes_cluster, base_image):
    batch, _ = _api(kubernetes_cluster)
    runner = KubernetesJobRunner(project, log=Log())
    other = runner.job_manifest(SPEC, _job(name="weekly", command=python("import time; time.sleep(60)")), base_image)
    left = runner.job_manifest(SPEC, _job(command=python("import time; time.sleep(60)")), base_image)
    for manifest in (other, left):
        batch.create_namespaced_job(NAMESPACE, manifest)
    log = Log()
    result = KubernetesJobRunner(project, log=log).run(SPEC, _job(command=["true"]), base_image)

    assert result.state == "completed", result
    assert f"job nightly: removed Job/{left['metadata']['name']} left by an earlier run" in log
    remaining = batch.list_namespaced_job(NAMESPACE, label_selector=f"{LABEL_JOB}=weekly").items
    assert [job.metadata.name for job in remaining] == [other["metadata"]["name"]]
    KubernetesJobRunner(project, log=Log()).remove(SPEC, _job(name="weekly"))


def test_env_reaches_the_job_and_its_values_are_never_logged_by_the_runner(project, kubernetes_cluster, base_image):
    log = Log()
    job = _job(command=python("import os; print(len(os.environ['TOKEN']))"), env={"TOKEN": "s3cr3t-value"})
    result = KubernetesJobRunner(project, log=log).run(SPEC, job, base_image)

    assert result.log_tail == ["12"]
    assert not [line for line in log if "s3cr3t-value" in line]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_run_deletes_its_job_and_pods(project, kubernetes_cluster, base_image, interruption):
    def log(line: str) -> None:
        if line == "working":
            raise interruption()

    command = python("import time; print('working', flush=True); time.sleep(60)")
    with pytest.raises(interruption):
        KubernetesJobRunner(project, log=log).run(SPEC, _job(command=command, timeout_seconds=60), base_image)
    # the project fixture checks that no Job, pod or secret is left


def test_a_wrong_token_is_a_clear_error_and_creates_nothing(project, kubernetes_cluster, base_image, monkeypatch):
    config = kubernetes_cluster.kubeconfig()
    config["users"][0]["user"]["token"] = "not-the-token"
    connection = {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(config), "namespace": NAMESPACE}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))
    kubernetes_cluster.clear_requests()
    with pytest.raises(RuntimeError, match="401"):
        KubernetesJobRunner(project, log=Log()).run(SPEC, _job(command=["true"]), base_image)
    assert not [request for request in kubernetes_cluster.requests if request[0] != "GET"]


# ---------------------------------------------------------------------- through the scheduled DAG


@pytest.fixture
def scheduled(cluster, airflow_db, base_image):  # noqa: F811 (the cluster fixture)
    return Project("hello", user_id=f"sched-{uuid.uuid4().hex[:6]}")


def test_the_scheduled_dag_runs_the_projects_image_from_the_registry_as_a_kubernetes_job(
        scheduled, cluster, serialized_dags, pull_registry):  # noqa: F811
    command = ["python3", "-c", "import json; print('classes:', *json.load(open('model.json'))['classes'])"]
    set_schedule(scheduled, jobs=[{"name": "classes", "cron": "@daily", "command": command, "target": "kubernetes",
                                 "resources": {"cpu": 1, "memory": 256}, "timeout_seconds": 120}])
    cluster.clear_requests()
    run = scheduled_dagbag().dags[job_dag_id(scheduled.ref, "classes")].test()

    assert run.state == "success"
    result = xcom(run, "run", "job")
    assert (result["state"], result["exit_code"]) == ("completed", 0), result
    assert result["log_tail"] == ["classes: setosa versicolor virginica"]
    created = _created_jobs(cluster)[-1]
    pod = created["spec"]["template"]["spec"]
    pushed = xcom(run, "build")["image"]
    assert pod["containers"][0]["image"].endswith(f"@{pushed['digest']}")
    assert pod["containers"][0]["workingDir"] == "/workspace"
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "256Mi"}
    assert pod["imagePullSecrets"] == [{"name": f"{created['metadata']['name']}-pull"}]
    host, password = pull_registry
    assert password not in json.dumps(result)
    batch, core = _api(cluster)
    selector = f"{LABEL_OWNER}={owner_value(scheduled.ref)}"
    assert not batch.list_namespaced_job(NAMESPACE, label_selector=selector).items
    assert not core.list_namespaced_secret(NAMESPACE, label_selector=selector).items
    assert not core.list_namespaced_pod(NAMESPACE, label_selector=selector).items


def test_without_a_registry_the_projects_image_cannot_run_on_kubernetes(kubernetes_cluster, airflow_db, base_image,
                                                                        serialized_dags):
    project = Project("hello", user_id=f"sched-{uuid.uuid4().hex[:6]}")
    set_schedule(project, jobs=[{"name": "classes", "cron": "@daily", "command": ["true"], "target": "kubernetes"}])
    run = scheduled_dagbag().dags[job_dag_id(project.ref, "classes")].test()

    assert run.state == "failed"
    assert "set CLOUD_DEPLOY_REGISTRY_CONN_ID, or give the job an image" in xcom(run, "run", "error")["message"]


def test_a_long_job_waits_in_the_triggerer_and_its_log_still_reaches_the_task_log(
        scheduled, cluster, serialized_dags, pull_registry, monkeypatch, capfd):  # noqa: F811
    """With no inline wait the run task defers at once: the trigger follows the Job, the resumed task reports
    and deletes it."""
    monkeypatch.setenv("CLOUD_DEPLOY_INLINE_WAIT_SECONDS", "0")
    code = "import time; print('first half', flush=True); time.sleep(2); print('second half', flush=True)"
    set_schedule(scheduled, jobs=[{"name": "halves", "cron": "@daily", "command": python(code), "target": "kubernetes",
                                 "timeout_seconds": 120}])
    run = scheduled_dagbag().dags[job_dag_id(scheduled.ref, "halves")].test()

    assert run.state == "success"
    result = xcom(run, "run", "job")
    assert (result["state"], result["exit_code"], result["log_tail"]) == ("completed", 0, ["first half", "second half"])
    output = capfd.readouterr().out
    assert "the triggerer waits for the rest" in output, "the task deferred"
    assert "second half" in output, "the trigger passed the job's log on"
    batch, core = _api(cluster)
    selector = f"{LABEL_OWNER}={owner_value(scheduled.ref)}"
    assert not batch.list_namespaced_job(NAMESPACE, label_selector=selector).items
    assert not core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
