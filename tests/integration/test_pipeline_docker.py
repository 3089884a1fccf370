"""The pipeline core on a real Docker engine and a real registry: build, skip, push, deploy, update, stop."""

from __future__ import annotations

import httpx
import pytest

from cloud_deploy_provider.engine import BuildFailed, PushFailed
from cloud_deploy_provider.pipeline import build, image_ref, load_project, push, wait_ready
from cloud_deploy_provider.registries.oci import Registry, RegistryClient, RegistryError, split_reference
from cloud_deploy_provider.settings import BuildSettings, EngineSettings
from cloud_deploy_provider.targets.docker import DockerTarget


def _build(project, client, registry=None, log=None):
    lines = [] if log is None else log
    loaded = load_project(project.user_id, project.project_id)
    return loaded, build(loaded, client, BuildSettings.from_env(), registry, lines.append)


def test_build_is_skipped_when_nothing_changed_and_code_change_rebuilds_only_the_last_layer(hello_project, docker_client):
    _, first = _build(hello_project, docker_client)
    assert first.skipped is None and first.image_id.startswith("sha256:")

    _, again = _build(hello_project, docker_client)
    assert again.skipped == "engine"
    assert (again.reference, again.image_id) == (first.reference, first.image_id)

    server = hello_project.folder / "server.py"
    server.write_text(server.read_text() + "\n# a code change\n")
    log: list[str] = []
    _, changed = _build(hello_project, docker_client, log=log)
    assert changed.build_key != first.build_key and changed.skipped is None
    cached_steps = sum("Using cache" in line for line in log)
    copy_steps = [line for line in log if line.startswith("Step ") and "COPY app/" in line]
    assert copy_steps and cached_steps >= 3, log


def test_push_confirms_the_digest_in_the_registry_and_a_rebuild_is_skipped_from_it(hello_project, docker_client, registry):
    _, built = _build(hello_project, docker_client, registry)
    pushed = push(built, docker_client, registry, "docker", print)
    _, path, tag = split_reference(pushed.reference)
    assert pushed.digest and pushed.digest == RegistryClient(registry).manifest_digest(path, tag)
    log: list[str] = []
    assert push(built, docker_client, registry, "docker", log.append).digest == pushed.digest
    assert any("push skipped" in line for line in log), log

    docker_client.remove_image(pushed.reference, force=True)
    _, from_registry = _build(hello_project, docker_client, registry)
    assert from_registry.skipped == "registry" and from_registry.digest == pushed.digest
    assert from_registry.image_id, "the docker target needs the image pulled into the engine"


def _retagged(built, docker_client, host: str):
    repository, tag = built.reference.rsplit(":", 1)
    moved = f"{host}/{repository.split('/', 1)[-1]}"
    docker_client.tag(built.image_id, moved, tag)
    return type(built)(**{**built.to_dict(), "reference": f"{moved}:{tag}"})


def test_an_engine_stream_error_during_push_raises(hello_project, docker_client, registry):
    """The engine answers 200 and reports the failure inside the stream; docker-py does not raise."""
    _, built = _build(hello_project, docker_client, registry)
    missing = type(built)(**{**built.to_dict(), "reference": built.reference.rsplit(":", 1)[0] + ":never-built"})
    with pytest.raises(PushFailed, match="tag does not exist"):
        push(missing, docker_client, registry, "docker", print)


def test_an_unreachable_registry_is_a_clear_error(hello_project, docker_client):
    from tests.helpers import free_port

    dead = Registry(host=f"127.0.0.1:{free_port()}", scheme="http")
    _, built = _build(hello_project, docker_client)
    with pytest.raises(RegistryError, match="Connection refused"):
        push(_retagged(built, docker_client, dead.host), docker_client, dead, "docker", print)


def test_a_pip_requirement_that_does_not_exist_fails_at_its_step_with_pip_output(hello_project, docker_client):
    hello_project.edit(
        lambda spec: spec["build"]["components"].__setitem__("libs", ["python==3.11", "cloud-deploy-no-such-package==9.9.9"])
    )
    with pytest.raises(BuildFailed) as failure:
        _build(hello_project, docker_client)
    message = str(failure.value)
    assert "pip" in failure.value.step and "install" in failure.value.step
    assert "cloud-deploy-no-such-package" in message
    assert "No matching distribution" in message or "Could not find a version" in message, message


def test_deploy_answers_updates_in_place_and_stop_removes_everything(hello_project, docker_client):
    loaded, built = _build(hello_project, docker_client)
    target = DockerTarget(hello_project.ref, log=print, client=docker_client, settings=EngineSettings.from_env())

    result = target.deploy(loaded.spec, image_ref(built.to_dict()))
    assert result.url == hello_project.url
    ready = wait_ready(target, loaded.spec, print)
    assert ready.state == "running"
    answer = httpx.post(f"{hello_project.url}/predict", json={"features": [6.7, 3.0, 5.2, 2.3]}).json()
    assert answer["class"] == "virginica"

    assert target.deploy(loaded.spec, image_ref(built.to_dict())).changed is False

    server = hello_project.folder / "server.py"
    server.write_text(server.read_text().replace('"usage"', '"version": 2, "usage"'))
    loaded, rebuilt = _build(hello_project, docker_client)
    target.deploy(loaded.spec, image_ref(rebuilt.to_dict()))
    wait_ready(target, loaded.spec, print)
    assert httpx.get(hello_project.url).json()["version"] == 2
    labelled = docker_client.containers(all=True, filters={"label": f"io.cloud-deploy.key={hello_project.ref.key}"})
    assert len(labelled) == 1

    hello_project.edit(lambda spec: spec["deploy"].__setitem__("resources", {"shm_size": 256}))
    loaded = load_project(hello_project.user_id, hello_project.project_id)
    target.deploy(loaded.spec, image_ref(rebuilt.to_dict()))
    wait_ready(target, loaded.spec, print)
    shm = docker_client.inspect_container(target.container_name(loaded.spec))["HostConfig"]["ShmSize"]
    assert shm == 256 << 20, "deploy.resources.shm_size (MB) sizes /dev/shm"

    assert target.stop(loaded.spec) == [target.container_name(loaded.spec)]
    assert target.status(loaded.spec).state == "absent"
    assert target.stop(loaded.spec) == []


def test_a_crashing_service_is_reported_with_exit_code_and_log_tail(hello_project, docker_client):
    hello_project.edit(lambda spec: spec["deploy"].__setitem__("entrypoint", ["python3", "-c", "print('boom'); raise SystemExit(3)"]))
    loaded, built = _build(hello_project, docker_client)
    target = DockerTarget(hello_project.ref, log=print, client=docker_client)
    target.deploy(loaded.spec, image_ref(built.to_dict()))
    from cloud_deploy_provider.pipeline import DeploymentFailed

    with pytest.raises(DeploymentFailed, match="exit code 3") as failure:
        wait_ready(target, loaded.spec, print)
    assert "boom" in str(failure.value)


def test_a_tango_generated_spec_deploys_advertising_service_host_ip(hello_project, docker_client):
    """TANGO's generator writes linux/amd64, atp for apt, and a service_host_ip that is not this host's."""
    from cloud_deploy_provider.pipeline import validate

    def tango_forms(spec):
        spec["build"]["architecture"] = "linux/amd64"
        spec["build"]["components"]["custom_packages"] = {"atp": ["hello"]}
        spec["deploy"]["network"]["service_host_ip"] = "1.2.3.4"

    hello_project.edit(tango_forms)
    log: list[str] = []
    loaded = validate(hello_project.ref, log.append)
    shown = f"common/{hello_project.user_id}/{hello_project.project_id}/deployment.yaml"
    assert f"warning: {shown}: build.components.custom_packages.atp: read as 'apt'" in "\n".join(log), log
    assert "deploy.network.service_host_ip 1.2.3.4: advertised in the service URL" in log
    assert loaded.spec.build.architecture == "amd64"

    built = build(loaded, docker_client, BuildSettings.from_env(), None, print)
    target = DockerTarget(hello_project.ref, log=print, client=docker_client, settings=EngineSettings.from_env())
    advertised = f"http://1.2.3.4:{hello_project.port}"
    assert target.deploy(loaded.spec, image_ref(built.to_dict())).url == advertised
    ready = wait_ready(target, loaded.spec, print)
    assert (ready.state, ready.url) == ("running", advertised)
    assert f"answers at {hello_project.url} (advertised as {advertised})" in ready.message
    assert httpx.get(f"{hello_project.url}/healthz").status_code == 200, "published on the configured address"

    container = target.container_name(loaded.spec)
    exec_id = docker_client.exec_create(container, ["hello"])["Id"]
    assert docker_client.exec_start(exec_id).decode().strip() == "Hello, world!", "the atp packages are installed"
