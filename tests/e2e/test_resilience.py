"""End to end on the embedded stack with two worker slots: long waits off the workers, the truth after the
whole stack was killed mid-build, and a Docker engine restart in the middle of a build."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from tests.helpers import REPO, SESSION_DIR, wait_until
from tests.e2e.stack import EmbeddedStack

pytestmark = pytest.mark.e2e
SLOW_START_SECONDS = 50  # readiness that takes about a minute


@pytest.fixture(scope="module")
def stack(docker_client, base_image, package_index):
    stack = EmbeddedStack(SESSION_DIR / "resilience-stack", AIRFLOW__CORE__PARALLELISM="2",
                          CLOUD_DEPLOY_PIP_EXTRA_INDEX_URLS=package_index.url).start()
    yield stack
    stack.stop()


def _containers(docker_client, params: dict) -> list[dict]:
    key = f"{params['user_id']}~{params['project_id']}"
    return docker_client.containers(all=True, filters={"label": f"io.cloud-deploy.key={key}"})


def _build_containers(docker_client) -> list[dict]:
    return docker_client.containers(all=True, filters={"name": "cloud-deploy-build-"})


def _slow_to_answer(stack: EmbeddedStack, params: dict) -> None:
    stack.project(**params)
    server = stack.folder(**params) / "server.py"
    server.write_text(f"import time; time.sleep({SLOW_START_SECONDS})\n" + server.read_text())
    spec = stack.folder(**params) / "deployment.yaml"
    spec.write_text(spec.read_text().replace("timeout_seconds: 60", f"timeout_seconds: {SLOW_START_SECONDS + 60}"))


def _with_package(stack: EmbeddedStack, params: dict, distribution: str) -> None:
    """A project whose build installs ``distribution`` from the gated index."""
    stack.project(**params)
    spec = stack.folder(**params) / "deployment.yaml"
    spec.write_text(spec.read_text().replace("    libs: [python==3.11]", f"    libs: [python==3.11, {distribution}==1.0]"))


def test_slow_readiness_waits_in_the_triggerer_and_does_not_hold_the_two_worker_slots(stack, docker_client):
    slow = [{"user_id": "tango", "project_id": f"slow-start-{n}"} for n in range(3)]
    quick = {"user_id": "tango", "project_id": "quick"}
    for params in slow:
        _slow_to_answer(stack, params)
        assert stack.gateway.get("/start", params=params).text == "started"
    wait_until(lambda: all((stack.deploy_task(p) or {}).get("state") == "deferred" for p in slow), 60,
                "the slow deployments wait in the triggerer")
    assert [stack.word(p) for p in slow] == ["preparing"] * 3

    stack.project(**quick)
    started = time.monotonic()
    assert stack.gateway.get("/start", params=quick).text == "started"
    seen = stack.wait_for(quick, ("running", "failed"), seconds=60)
    assert seen[-1] == "running", (seen, stack.detail(quick))
    print(f"the quick project ran in {time.monotonic() - started:.1f} s while 3 others waited for readiness")
    assert [stack.word(p) for p in slow] == ["preparing"] * 3, "the quick one finished first"
    assert all(stack.deploy_task(p)["state"] == "deferred" for p in slow)

    for params in slow:
        seen = stack.wait_for(params, ("running", "failed"), seconds=SLOW_START_SECONDS + 90)
        assert seen[-1] == "running", (seen, stack.detail(params))
        assert stack.deploy_task(params)["try_number"] == 1
    detail = stack.detail(slow[0])
    assert httpx.get(f"{detail['url']}/healthz", timeout=5).status_code == 200
    for params in [*slow, quick]:
        stack.stopped(params)
        assert _containers(docker_client, params) == []


def test_after_the_stack_is_killed_mid_build_the_status_is_truthful_and_the_build_resumes(stack, package_index,
                                                                                           docker_client):
    params = {"user_id": "tango", "project_id": "killed-mid-build"}
    _with_package(stack, params, "slow-crash")
    package_index.gate.clear()
    assert stack.gateway.get("/start", params=params).text == "started"
    wait_until(lambda: package_index.downloads("slow-crash") >= 1, 120, "pip downloads the package")
    assert stack.word(params) == "building"

    stack.kill()
    killed = time.monotonic()
    stack.start()
    restarted = time.monotonic()
    print(f"stack started again {restarted - killed:.1f} s after the kill")

    samples = []  # (seconds since the kill, status word, the task's state, try, seconds since its last heartbeat)
    deadline = restarted + 120
    while time.monotonic() < deadline:
        task = stack.deploy_task(params)
        samples.append((round(time.monotonic() - killed, 1), stack.word(params), task["state"], task["try_number"],
                        task["silent_for"]))
        if task["try_number"] >= 2 and task["state"] == "running" and (task["silent_for"] or 99) < 5:
            break  # a new try of the task works on the build
        time.sleep(0.5)
    print("after the kill:", samples)
    assert samples[-1][3] >= 2, samples
    assert samples[-1][0] - (restarted - killed) <= 60, "a new try started within 60 s of the restart"
    lying = [s for s in samples if s[1] in ("building", "preparing") and s[2] == "running" and (s[4] or 0) > 60]
    assert not lying, f"building/preparing reported for a task no process has worked on for over 60 s: {lying}"

    package_index.gate.set()
    seen = stack.wait_for(params, ("running", "failed"), seconds=180)
    assert seen[-1] == "running", (seen, stack.detail(params))
    assert stack.deploy_runs(params) == 1, "no new /start was needed"
    assert len(_containers(docker_client, params)) == 1
    assert _build_containers(docker_client) == [], "the killed build's container was removed"
    stack.stopped(params)


def _restart_docker_engine() -> None:
    pid = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()[0]
    subprocess.run(["kill", "-TERM", pid], check=True)
    deadline = time.monotonic() + 60
    while subprocess.run(["pidof", "dockerd"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "dockerd did not stop"
        time.sleep(0.2)
    subprocess.run(["bash", str(REPO / "scripts" / "ensure-docker.sh")], check=True, timeout=120)


def test_a_docker_engine_restart_during_a_build_ends_running_without_a_new_start(stack, package_index,
                                                                                 docker_client):
    params = {"user_id": "tango", "project_id": "engine-restarted"}
    _with_package(stack, params, "slow-engine")
    package_index.gate.clear()
    assert stack.gateway.get("/start", params=params).text == "started"
    wait_until(lambda: package_index.downloads("slow-engine") >= 1, 120, "pip downloads the package")

    _restart_docker_engine()
    package_index.gate.set()
    seen = stack.wait_for(params, ("running", "failed"), seconds=240)
    detail = stack.detail(params)
    assert seen[-1] == "running", (seen, detail)
    assert stack.deploy_runs(params) == 1, "no new /start was needed"
    assert stack.deploy_task(params)["try_number"] >= 2, "the build failed on the engine and was retried"
    assert httpx.get(f"{detail['url']}/healthz", timeout=5).status_code == 200
    stack.stopped(params)
    assert _containers(docker_client, params) == [] and _build_containers(docker_client) == []


def test_a_stop_during_a_build_answers_at_once_and_leaves_nothing(stack, package_index, docker_client):
    """TANGO's manager gives /stop 5 s; the build it interrupts is killed and cleaned up behind the answer."""
    params = {"user_id": "tango", "project_id": "stopped-mid-build"}
    _with_package(stack, params, "slow-stop")
    package_index.gate.clear()
    assert stack.gateway.get("/start", params=params).text == "started"
    wait_until(lambda: package_index.downloads("slow-stop") >= 1, 120, "pip downloads the package")
    assert stack.word(params) == "building"

    started = time.monotonic()
    answer = stack.gateway.get("/stop", params=params, timeout=5)
    assert (answer.status_code, answer.text) == (200, "stopping")
    assert time.monotonic() - started < 1.0, "TANGO's manager must not wait on a stop"
    assert stack.word(params) == "stopping"
    refused = stack.gateway.get("/start", params=params)
    assert refused.status_code == 409 and "stopping" in refused.json()["detail"]

    seen = stack.wait_for(params, ("stopped", "failed"), seconds=120)
    package_index.gate.set()
    assert seen[-1] == "stopped", (seen, stack.detail(params))
    assert _containers(docker_client, params) == []
    assert _build_containers(docker_client) == [], "the killed build's container was removed"
    assert stack.deploy_runs(params) == 1
