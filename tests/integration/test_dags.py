"""The cloud_deploy and cloud_undeploy DAGs through ``dag.test()`` on a real metadata DB and engine."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from cloud_deploy_provider.api import runs
from cloud_deploy_provider.api.index import latest_run
from cloud_deploy_provider.status import Status
from tests.helpers import REPO, deployment_status, load_dag


@pytest.mark.parametrize("name", ["cloud_deploy", "cloud_undeploy"])
def test_dag_files_import_nothing_heavy_at_parse_time(name):
    """Parsing must not import docker, the spec models or the build code (parse time is benchmarked)."""
    probe = (
        "import sys, airflow.sdk, importlib.util;"
        f"s = importlib.util.spec_from_file_location('d', {str(REPO / 'dags' / name)!r} + '.py');"
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m);"
        "heavy = sorted(n for n in ('docker', 'cloud_deploy_provider.spec', 'cloud_deploy_provider.build')"
        " if n in sys.modules); print(m.dag.dag_id, [t.task_id for t in m.dag.tasks], heavy)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    dag_id, tasks, heavy = out.strip().split(" ", 1)[0], out, out.strip().rsplit(" ", 1)[-1]
    assert dag_id == name
    assert heavy == "[]", out
    expected = ["deploy"] if name == "cloud_deploy" else ["stop"]
    assert str(expected) in tasks


def test_deploy_then_undeploy_through_airflow(airflow_db, hello_project, docker_client):
    run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}

    status = deployment_status(hello_project)
    assert status.status == Status.RUNNING and status.url == hello_project.url
    assert status.image["reference"].endswith(status.image["build_key"][:24])
    assert httpx.post(f"{hello_project.url}/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}).json()["class"] == "setosa"

    again = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    assert again.state == "success"
    assert deployment_status(hello_project).image["skipped"] == "engine"

    from cloud_deploy_provider.api import deployments

    assert deployments.current_status(hello_project.ref).status == Status.RUNNING
    container = docker_client.containers(filters={"label": f"io.cloud-deploy.key={hello_project.ref.key}"})[0]
    docker_client.stop(container["Id"], timeout=1)
    deployments._live_cache.clear()  # skip the 5 s TTL instead of sleeping
    live = deployments.current_status(hello_project.ref)
    assert live.status == Status.FAILED and "exit code" in live.message, live

    stopped = load_dag("cloud_undeploy").test(run_conf=hello_project.conf)
    assert stopped.state == "success"
    assert deployment_status(hello_project).status == Status.STOPPED
    assert docker_client.containers(all=True, filters={"label": f"io.cloud-deploy.key={hello_project.ref.key}"}) == []


def test_the_deploy_task_links_to_the_service_it_deployed(airflow_db, hello_project):
    """The "Open service" extra link of the deploy task: Airflow stores it from the task's result when it ends."""
    from cloud_deploy_provider.operators.cloud_deploy import ServiceLink

    run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    assert run.state == "success"
    links = {link.name for link in load_dag("cloud_deploy").get_task("deploy").operator_extra_links}
    assert links == {ServiceLink.name}
    assert latest_run(runs.DEPLOY_DAG, hello_project.ref).xcom("deploy", "_link_ServiceLink") == hello_project.url


def test_invalid_yaml_fails_the_run_with_the_reason_in_the_status(airflow_db, hello_project):
    hello_project.edit(lambda spec: spec["deploy"].__setitem__("entrypiont", ["x"]))
    run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    assert run.state == "failed"
    status = deployment_status(hello_project)
    assert status.status == Status.FAILED and status.stage == "validate"
    assert "entrypiont" in status.message and "entrypoint" in status.message


def test_a_tango_generated_spec_deploys_with_the_atp_warning_in_the_validate_log(airflow_db, hello_project, capfd,
                                                                               caplog):
    def tango_forms(spec):
        spec["build"]["architecture"] = "linux/amd64"
        spec["build"]["components"]["custom_packages"] = {"atp": ["hello"]}
        spec["deploy"]["network"]["service_host_ip"] = "1.2.3.4"

    hello_project.edit(tango_forms)
    run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    shown = f"common/{hello_project.user_id}/{hello_project.project_id}/deployment.yaml"
    assert f"warning: {shown}: build.components.custom_packages.atp: read as 'apt'" in logs
    status = deployment_status(hello_project)
    assert status.status == Status.RUNNING and status.url == f"http://1.2.3.4:{hello_project.port}"
    assert latest_run(runs.DEPLOY_DAG, hello_project.ref).xcom("deploy")["warnings"] == [
        "build.components.custom_packages.atp: read as 'apt' (TANGO's code generator misspells the key); "
        "rename it to 'apt'"
    ]


def test_a_yaml_error_in_the_status_names_the_file_relative_to_the_shared_root(airflow_db, hello_project):
    import os

    hello_project.spec_file.write_text("build:\n  accelerator: cpu\n  - oops\n")
    run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    assert run.state == "failed"
    status = deployment_status(hello_project)
    shown = f"common/{hello_project.user_id}/{hello_project.project_id}/deployment.yaml"
    assert status.stage == "validate" and f"{shown}: line 3, column 3: " in status.message, status
    assert os.environ["CLOUD_DEPLOY_SHARED_ROOT"] not in status.message


def test_bad_identifiers_are_rejected_before_any_task_runs(airflow_db):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        load_dag("cloud_deploy").test(run_conf={"user_id": "../etc", "project_id": "x"})


def test_push_through_airflow_keeps_the_registry_password_out_of_logs_xcom_and_responses(
    airflow_db, serialized_dags, hello_project, registry, monkeypatch, caplog, capfd
):
    import json
    import os
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from cloud_deploy_provider.api.app import create_gateway_app

    password = "pw-" + os.urandom(8).hex()
    connection = {"conn_type": "docker", "host": f"http://{registry.host}", "login": "ci", "password": password}
    monkeypatch.setenv("AIRFLOW_CONN_TEST_REGISTRY", json.dumps(connection))
    monkeypatch.setenv("CLOUD_DEPLOY_REGISTRY_CONN_ID", "test_registry")

    run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    assert run.state == "success"
    status = deployment_status(hello_project)
    assert status.image["reference"].startswith(f"{registry.host}/") and status.image["digest"].startswith("sha256:")

    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert "pushed " in logs and password not in logs
    with create_session() as session:
        values = session.scalars(select(XComModel.value).where(XComModel.run_id == run.run_id)).all()
    assert values and password not in json.dumps(values)
    detail = TestClient(create_gateway_app()).get(f"/deployments/{hello_project.user_id}/{hello_project.project_id}")
    assert detail.status_code == 200 and password not in detail.text


def test_a_slow_readiness_is_waited_for_in_the_triggerer(airflow_db, hello_project, monkeypatch, capfd):
    """Past CLOUD_DEPLOY_INLINE_WAIT_SECONDS the deploy task defers; the trigger sees the service answer."""
    monkeypatch.setenv("CLOUD_DEPLOY_INLINE_WAIT_SECONDS", "0")
    server = hello_project.folder / "server.py"
    server.write_text("import time; time.sleep(3)\n" + server.read_text())
    run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)

    assert run.state == "success"
    assert "the triggerer waits for the rest" in capfd.readouterr().out, "the task deferred"
    status = deployment_status(hello_project)
    assert status.status == Status.RUNNING and status.url == hello_project.url
    result = latest_run(runs.DEPLOY_DAG, hello_project.ref).xcom("deploy")
    assert result["status"]["state"] == "running" and result["stages"]["wait_ready"] >= 2, result["stages"]
    assert set(result["stages"]) == {"validate", "build", "push", "deploy", "wait_ready"}
    assert httpx.get(f"{hello_project.url}/healthz", timeout=5).status_code == 200


def test_a_service_that_crashes_while_waited_for_fails_the_run_with_its_exit_code(airflow_db, hello_project,
                                                                                monkeypatch):
    monkeypatch.setenv("CLOUD_DEPLOY_INLINE_WAIT_SECONDS", "0")
    server = hello_project.folder / "server.py"
    server.write_text("import sys, time; time.sleep(1); print('no model here'); sys.exit(4)\n")
    run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)

    assert run.state == "failed"
    status = deployment_status(hello_project)
    assert status.status == Status.FAILED and status.stage == "wait_ready", status
    assert "exit code 4" in status.message and "no model here" in status.message, status.message
    deploy = next(ti for ti in run.get_task_instances() if ti.task_id == "deploy")
    assert deploy.try_number == 1, "a crashed service is not retried"


def test_a_running_task_whose_heartbeat_stopped_is_reported_unknown(airflow_db, hello_project, monkeypatch):
    """As the gateway reads it from the metadata DB: a run whose task's process died (the stack was
    killed) says so instead of `preparing` until the scheduler retries the task."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import update

    from airflow.models import DagRun, TaskInstance
    from airflow.utils.session import create_session

    from cloud_deploy_provider.api import deployments

    run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    assert run.state == "success"

    def task_heard(seconds_ago: float) -> None:
        with create_session() as session:
            session.execute(update(DagRun).where(DagRun.id == run.id).values(state="running"))
            session.execute(update(TaskInstance).where(TaskInstance.run_id == run.run_id).values(
                state="running", last_heartbeat_at=datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)))

    monkeypatch.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT", "20")  # as scripts/stack.sh sets it
    task_heard(2)
    assert deployments.current_status(hello_project.ref).status == Status.PREPARING, "a live task is working"
    task_heard(60)
    status = deployments.current_status(hello_project.ref)
    assert status.status == Status.UNKNOWN and "heartbeat" in status.message, status
