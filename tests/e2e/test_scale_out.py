"""The scale-out shape run for real (scripts/stack.sh --scale-out): PostgreSQL and Redis from Debian's packages,
the CeleryExecutor with api-server, scheduler, dag-processor, triggerer and two Celery workers as separate processes,
and the gateway with three worker processes. Twenty projects at once, one run for twenty concurrent starts, a worker
killed mid-build, and a stop of everything that leaves nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.stack import EmbeddedStack
from tests.helpers import SESSION_DIR, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.scale_out]
PROJECTS = [{"user_id": "scale", "project_id": f"p{n:02d}"} for n in range(20)]
WORKERS = {"worker-1", "worker-2"}


@pytest.fixture(scope="module")
def stack(docker_client, base_image, package_index):
    stack = EmbeddedStack(SESSION_DIR / "scale-out", SCALE_OUT="1", POSTGRES_PORT=str(free_port()),
                          REDIS_PORT=str(free_port()), CLOUD_DEPLOY_PIP_EXTRA_INDEX_URLS=package_index.url).start()
    yield stack
    stack.stop()


def _sql(stack: EmbeddedStack, query: str, *parameters) -> list[tuple]:
    """A read of the stack's PostgreSQL metadata database."""
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=int(stack.env["POSTGRES_PORT"]), user="airflow",
                                  password="airflow", dbname="airflow")
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, parameters)
            return cursor.fetchall()
    finally:
        connection.close()


def _deploy_tasks(stack: EmbeddedStack, params: dict) -> list[tuple]:
    """(try number, state, host name) of each try of the project's deploy task, oldest first."""
    run_ids = f"deploy~{params['user_id']}~{params['project_id']}~%"
    current = _sql(stack, "select try_number, state, hostname from task_instance where dag_id = 'cloud_deploy' "
                          "and task_id = 'deploy' and run_id like %s", run_ids)
    earlier = _sql(stack, "select try_number, state, hostname from task_instance_history where dag_id = 'cloud_deploy' "
                          "and task_id = 'deploy' and run_id like %s", run_ids)
    return sorted(earlier + current)


def _containers(docker_client, params: dict) -> list[dict]:
    key = f"{params['user_id']}~{params['project_id']}"
    return docker_client.containers(all=True, filters={"label": f"io.cloud-deploy.key={key}"})


def test_twenty_projects_deployed_at_once_all_run_and_the_tasks_spread_over_both_workers(stack):
    for params in PROJECTS:
        stack.project(**params)
    with ThreadPoolExecutor(len(PROJECTS)) as pool:
        answers = list(pool.map(lambda params: httpx.get(f"{stack.gateway_url}/start", params=params, timeout=30).text,
                                PROJECTS))
    assert answers == ["started"] * len(PROJECTS)
    started = time.monotonic()
    for params in PROJECTS:
        seen = stack.wait_for(params, ("running", "failed"), seconds=600)
        assert seen[-1] == "running", (params, seen, stack.detail(params))
    print(f"20 projects running {time.monotonic() - started:.0f} s after their /start")
    hosts = {row[2] for params in PROJECTS for row in _deploy_tasks(stack, params)}
    assert hosts == WORKERS, hosts
    for params in PROJECTS[:3]:
        url = stack.detail(params)["url"]
        assert httpx.post(f"{url}/predict", json={"features": [5.9, 2.8, 4.3, 1.3]}, timeout=10).json()["class"]


def test_twenty_concurrent_starts_of_one_project_through_the_gateway_processes_make_exactly_one_run(stack):
    params = {"user_id": "scale", "project_id": "contended"}
    stack.project(**params)
    barrier = threading.Barrier(20)

    def start(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:  # a connection of its own each
            barrier.wait()
            answer = client.get("/start", params=params)
            return answer.status_code, answer.text

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(start, range(20)))
    assert [text for code, text in answers if code == 200] == ["started"], answers
    assert all(code == 400 and "Service already exists" in text for code, text in answers if code != 200), answers
    runs = _sql(stack, "select count(*) from dag_run where dag_id = 'cloud_deploy' and run_id like %s",
                f"deploy~{params['user_id']}~{params['project_id']}~%")
    assert runs == [(1,)]
    seen = stack.wait_for(params, ("running", "failed"), seconds=300)
    assert seen[-1] == "running", (seen, stack.detail(params))
    stack.stopped(params)


def test_a_stop_of_all_twenty_leaves_nothing(stack, docker_client):
    with ThreadPoolExecutor(len(PROJECTS)) as pool:
        answers = list(pool.map(lambda params: httpx.get(f"{stack.gateway_url}/stop", params=params, timeout=30).text,
                                PROJECTS))
    assert set(answers) <= {"stopping", "finished"}, answers
    for params in PROJECTS:
        seen = stack.wait_for(params, ("stopped", "failed"), seconds=300)
        assert seen[-1] == "stopped", (params, seen, stack.detail(params))
    assert [params for params in PROJECTS if _containers(docker_client, params)] == []


def test_a_worker_killed_during_a_build_leaves_the_task_to_the_other_worker(stack, package_index, docker_client):
    params = {"user_id": "scale", "project_id": "worker-killed"}
    stack.project(**params)
    spec = stack.folder(**params) / "deployment.yaml"
    spec.write_text(spec.read_text().replace("    libs: [python==3.11]", "    libs: [python==3.11, slow-crash==1.0]"))
    package_index.gate.clear()
    assert stack.gateway.get("/start", params=params).text == "started"
    wait_until(lambda: package_index.downloads("slow-crash") >= 1, 180, "the build reaches pip")
    [(_, state, host)] = _deploy_tasks(stack, params)
    assert state == "running" and host in WORKERS, (state, host)

    os.killpg(int((stack.state / f"{host}.pid").read_text()), signal.SIGKILL)  # the worker and its task processes
    package_index.gate.set()
    seen = stack.wait_for(params, ("running", "failed"), seconds=300)
    assert seen[-1] == "running", (seen, stack.detail(params), _deploy_tasks(stack, params))
    tries = _deploy_tasks(stack, params)
    assert tries[-1][1:] == ("success", (WORKERS - {host}).pop()), tries
    assert len(_containers(docker_client, params)) == 1
    stack.stopped(params)
    assert _containers(docker_client, params) == []
