"""Passing trouble is retried and user errors are not: through the cloud_deploy DAG on a real engine and registry."""

from __future__ import annotations

import json
import threading

import httpx

from cloud_deploy_provider.api import runs
from cloud_deploy_provider.api.index import latest_run
from cloud_deploy_provider.status import Status, derive_status
from tests.helpers import environment_set, load_dag
from tests.standins.common import ServiceProxy


class FlakyRegistry(ServiceProxy):
    """A registry whose first ``failures`` manifest uploads answer 503, as a registry restarting would."""

    def __init__(self, registry_port: int, failures: int):
        super().__init__(None, lambda status, path: ("application/json", json.dumps(
            {"errors": [{"code": "UNAVAILABLE", "message": "service unavailable"}]}).encode()), "flaky registry")
        self.registry_port, self.failures, self.refused = registry_port, failures, 0
        self._count = threading.Lock()

    def route(self, request):
        with self._count:
            if request.command == "PUT" and "/manifests/" in request.path and self.refused < self.failures:
                self.refused += 1
                return 503, None
        return 200, self.registry_port


def _task(run, task_id="deploy"):
    return next(ti for ti in run.get_task_instances() if ti.task_id == task_id)


def test_a_registry_answering_503_is_retried_and_the_retry_does_not_build_again(airflow_db, serialized_dags,
                                                                                  hello_project, registry):
    flaky = FlakyRegistry(int(registry.host.rsplit(":", 1)[1]), failures=1)
    connection = json.dumps({"conn_type": "docker", "host": f"127.0.0.1:{flaky.server_address[1]}"})
    try:
        with environment_set({"AIRFLOW_CONN_FLAKY_REGISTRY": connection, "CLOUD_DEPLOY_REGISTRY_CONN_ID": "flaky_registry",
                           "CLOUD_DEPLOY_RETRY_DELAY_SECONDS": "1"}):
            run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    finally:
        flaky.close()

    assert flaky.refused == 1
    assert run.state == "success" and _task(run).try_number == 2, "the push failed once and its retry succeeded"
    status = derive_status(latest_run(runs.DEPLOY_DAG, hello_project.ref), None)
    assert status.status == Status.RUNNING
    assert status.image["skipped"] == "engine", "the retry found the image by its build key: no second build"
    assert status.image["digest"].startswith("sha256:")
    assert httpx.get(f"{hello_project.url}/healthz", timeout=5).status_code == 200


def test_a_spec_error_fails_at_once_without_retries(airflow_db, serialized_dags, hello_project):
    hello_project.edit(lambda spec: spec["deploy"].__setitem__("entrypiont", ["x"]))
    run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    assert run.state == "failed"
    assert _task(run).try_number == 1 and _task(run).max_tries >= 1, "retries were allowed, and not spent"
    status = derive_status(latest_run(runs.DEPLOY_DAG, hello_project.ref), None)
    assert status.stage == "validate" and "entrypiont" in status.message


def test_a_refused_push_fails_at_once(airflow_db, serialized_dags, hello_project, registry):
    """401 from the registry: its login is wrong, and asking again will not change it."""
    from tests.helpers import registry_with_login

    with registry_with_login("locked", "someone", "right-password") as host:
        connection = json.dumps({"conn_type": "docker", "host": host, "login": "someone", "password": "wrong"})
        with environment_set({"AIRFLOW_CONN_LOCKED": connection, "CLOUD_DEPLOY_REGISTRY_CONN_ID": "locked"}):
            run = load_dag("cloud_deploy").test(run_conf=hello_project.conf)
    assert run.state == "failed" and _task(run).try_number == 1
    status = derive_status(latest_run(runs.DEPLOY_DAG, hello_project.ref), None)
    assert status.stage in ("build", "push") and "401" in status.message, status.message
