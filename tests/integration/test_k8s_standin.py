"""The Kubernetes API stand-in, driven through the real ``kubernetes`` client against real containers.

Each test works in a namespace of its own that the ``namespace`` fixture empties afterwards (and waits until
the pods, hence their containers, are gone). Note: the v36 client's ``read_namespaced_pod_log`` returns
``str(bytes)``, so logs are read with ``_preload_content=False`` here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import time
import uuid
from dataclasses import dataclass

import docker.errors
import httpx
import kubernetes_validate
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.helpers import registry_with_login
from tests.standins.kubernetes import LABEL, NODE_NAME, KubernetesStandIn

GPU = "nvidia.com/gpu"


@dataclass
class Api:
    apps: client.AppsV1Api
    core: client.CoreV1Api
    networking: client.NetworkingV1Api
    batch: client.BatchV1Api


def _api(endpoint: str, token: str | None) -> Api:
    configuration = client.Configuration()
    configuration.host = endpoint
    if token is not None:
        configuration.api_key = {"authorization": f"Bearer {token}"}
    api_client = client.ApiClient(configuration)
    return Api(client.AppsV1Api(api_client), client.CoreV1Api(api_client), client.NetworkingV1Api(api_client),
               client.BatchV1Api(api_client))


@pytest.fixture(scope="module")
def standin(docker_client, base_image):
    with KubernetesStandIn(docker_client, node_capacity={GPU: "2"}) as running:
        yield running


@pytest.fixture(scope="module")
def api(standin) -> Api:
    return _api(standin.endpoint, standin.token)


@pytest.fixture
def namespace(api):
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    for deployment in api.apps.list_namespaced_deployment(name).items:
        api.apps.delete_namespaced_deployment(deployment.metadata.name, name)
    for job in api.batch.list_namespaced_job(name).items:
        api.batch.delete_namespaced_job(job.metadata.name, name, propagation_policy="Background")
    for lister, deleter in [
        (api.networking.list_namespaced_ingress, api.networking.delete_namespaced_ingress),
        (api.core.list_namespaced_service, api.core.delete_namespaced_service),
        (api.core.list_namespaced_secret, api.core.delete_namespaced_secret),
        (api.core.list_namespaced_persistent_volume_claim, api.core.delete_namespaced_persistent_volume_claim),
    ]:
        for obj in lister(name).items:
            deleter(obj.metadata.name, name)
    for pod in api.core.list_namespaced_pod(name).items:  # orphans
        api.core.delete_namespaced_pod(pod.metadata.name, name)
    _wait("the namespace's pods to go", lambda: not api.core.list_namespaced_pod(name).items)


def _wait(what: str, check, timeout: float = 40, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        if value := check():
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def _status(error: ApiException) -> dict:
    return json.loads(error.body)


def _deployment(name: str, containers: list[dict], replicas: int = 1, volumes: list[dict] | None = None,
                **spec) -> dict:
    pod = {"containers": containers, **({"volumes": volumes} if volumes else {}),
           **spec.pop("pod", {})}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": pod}, **spec}}


def _container(base_image: str, name: str = "app", script: str = "exec sleep infinity", **extra) -> dict:
    return {"name": name, "image": base_image, "command": ["/bin/sh", "-c", script], **extra}


def _web_container(base_image: str, name: str = "web", **extra) -> dict:
    """python3's http.server in /etc: GET /hostname answers the pod's name."""
    return {"name": name, "image": base_image, "command": ["python3", "-m", "http.server", "8080"],
            "workingDir": "/etc", "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/hostname", "port": "http"}, "periodSeconds": 1}, **extra}


def _node_port_service(name: str, **port) -> dict:
    return {"metadata": {"name": name}, "spec": {"type": "NodePort", "selector": {"app": name},
                                                 "ports": [{"port": 80, "targetPort": "http", **port}]}}


def _condition(deployment, kind: str):
    return next((c for c in deployment.status.conditions or [] if c.type == kind), None)


def _available(api: Api, namespace: str, name: str, replicas: int = 1):
    def check():
        deployment = api.apps.read_namespaced_deployment(name, namespace)
        available = _condition(deployment, "Available")
        counts = (deployment.status.available_replicas or 0, deployment.status.updated_replicas or 0)
        ready = counts == (replicas, replicas)
        return deployment if ready and available and available.status == "True" else None

    return _wait(f"deployment {name} to be available", check)


def _pods(api: Api, namespace: str, app: str) -> list:
    return [p for p in api.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
            if not p.metadata.deletion_timestamp]


def _one_pod(api: Api, namespace: str, app: str, check=lambda pod: True, what: str = "a pod"):
    return _wait(f"{what} of {app}", lambda: next((p for p in _pods(api, namespace, app) if check(p)), None))


def _waiting_reason(pod) -> str | None:
    statuses = pod.status.container_statuses or []
    return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else None


def _events(api: Api, namespace: str, pod_name: str) -> list:
    return api.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={pod_name},involvedObject.kind=Pod").items


def _log(api: Api, namespace: str, pod: str, **options) -> str:
    answer = api.core.read_namespaced_pod_log(pod, namespace, _preload_content=False, **options)
    return answer.data.decode()


def _get(url: str, **options) -> httpx.Response:
    return httpx.get(url, timeout=5, **options)


# the API


def test_version_is_open_and_every_other_call_needs_the_token(standin):
    assert httpx.get(f"{standin.endpoint}/version").json()["gitVersion"] == "v1.36.0"
    for token in (None, "not-the-token"):
        with pytest.raises(ApiException) as refused:
            _api(standin.endpoint, token).core.list_namespaced_secret("default")
        assert refused.value.status == 401
        assert _status(refused.value)["reason"] == "Unauthorized"

    standin.clear_requests()
    api_client = config.new_client_from_config_dict(standin.kubeconfig())
    node = client.CoreV1Api(api_client).list_node().items[0]
    assert node.metadata.name == NODE_NAME
    assert [(a.type, a.address) for a in node.status.addresses][0] == ("InternalIP", standin.node_ip)
    assert node.status.allocatable == {"cpu": "8", "memory": "32Gi", "pods": "110", GPU: "2"}
    assert standin.requests == [("GET", "/api/v1/nodes", None)]


@dataclass
class Case:
    singular: str
    group: str
    body: dict


CRUD_CASES = [
    Case("deployment", "apps", {"spec": {"replicas": 0, "selector": {"matchLabels": {"app": "x"}}, "template": {
        "metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}),
    Case("service", "core", {"spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}),
    Case("secret", "core", {"stringData": {"password": "s3cret"}}),
    Case("persistent_volume_claim", "core", {"spec": {"accessModes": ["ReadWriteOnce"],
                                                      "resources": {"requests": {"storage": "1Gi"}}}}),
    Case("ingress", "networking", {"spec": {"rules": [{"host": "x.example.test", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "x", "port": {"number": 80}}}}]}}]}}),
    Case("job", "batch", {"spec": {"suspend": True, "template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1"}]}}}}),
]


@pytest.mark.parametrize("case", CRUD_CASES, ids=[case.singular for case in CRUD_CASES])
def test_create_read_replace_patch_list_delete(api, namespace, case):
    group = {"apps": api.apps, "core": api.core, "networking": api.networking, "batch": api.batch}[case.group]

    def call(verb: str, *args, **kwargs):
        return getattr(group, f"{verb}_namespaced_{case.singular}")(*args, **kwargs)

    body = {"metadata": {"name": "crud", "labels": {"suite": "crud", "tier": "a"}}, **case.body}
    created = call("create", namespace, body)
    assert created.metadata.uid and created.metadata.creation_timestamp and created.metadata.generation == 1
    with pytest.raises(ApiException) as duplicate:
        call("create", namespace, body)
    assert (duplicate.value.status, _status(duplicate.value)["reason"]) == (409, "AlreadyExists")

    read = call("read", "crud", namespace)
    assert read.metadata.uid == created.metadata.uid
    read.metadata.labels["tier"] = "b"
    read.metadata.resource_version = None  # unconditional: a controller may have written the status meanwhile
    replaced = call("replace", "crud", namespace, read)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(ApiException) as stale:
        call("replace", "crud", namespace, created)
    assert (stale.value.status, _status(stale.value)["reason"]) == (409, "Conflict")

    patched = call("patch", "crud", namespace, {"metadata": {"labels": {"patched": "yes"}}})
    assert patched.metadata.labels == {"suite": "crud", "tier": "b", "patched": "yes"}

    def names(selector: str) -> list[str]:
        return [o.metadata.name for o in call("list", namespace, label_selector=selector).items]

    assert names("suite=crud,tier=b") == names("tier in (a,b)") == names("patched") == ["crud"]
    assert names("tier!=b") == names("!patched") == []

    call("delete", "crud", namespace, propagation_policy="Background")
    with pytest.raises(ApiException) as gone:
        call("read", "crud", namespace)
    assert (gone.value.status, _status(gone.value)["reason"]) == (404, "NotFound")
    assert names("suite=crud") == []


def test_deployment_defaults_generation_and_status(api, namespace, base_image):
    created = api.apps.create_namespaced_deployment(namespace, _deployment("idle", [_container(base_image)], 0))
    spec = created.spec
    assert (spec.strategy.type, spec.strategy.rolling_update.max_surge, spec.progress_deadline_seconds) \
        == ("RollingUpdate", "25%", 600)
    assert spec.template.spec.containers[0].image_pull_policy == "IfNotPresent", "a tagged image"

    deployment = _available(api, namespace, "idle", replicas=0)
    assert deployment.status.observed_generation == 1 and deployment.status.replicas is None, "zeros are omitted"
    assert _condition(deployment, "Progressing").reason == "NewReplicaSetAvailable"

    patched = api.apps.patch_namespaced_deployment("idle", namespace, {"spec": {"revisionHistoryLimit": 3}})
    assert patched.metadata.generation == 2
    observed = _wait("the new generation observed", lambda: (
        d := api.apps.read_namespaced_deployment("idle", namespace)).status.observed_generation == 2 and d)
    again = api.apps.replace_namespaced_deployment("idle", namespace, observed)
    assert again.metadata.resource_version == observed.metadata.resource_version, "a no-op write changes nothing"


def _bad_deployment(base_image, change) -> dict:
    body = _deployment("bad", [_container(base_image)])
    change(body["spec"]["template"]["spec"], body)
    return body


@pytest.mark.parametrize("change, message", [
    (lambda pod, body: pod["containers"][0].update(bogus=1),
     "spec.template.spec.containers[0].bogus: field not declared in schema"),
    (lambda pod, body: pod["containers"][0].update(ports=[{"containerPort": "80"}]),
     "spec.template.spec.containers[0].ports[0].containerPort: Invalid value"),
    (lambda pod, body: body["metadata"].update(name="Bad_Name"), "a lowercase RFC 1123 subdomain must consist of"),
    (lambda pod, body: pod["containers"].append(dict(pod["containers"][0])),
     'spec.template.spec.containers[1].name: Duplicate value: "app"'),
    (lambda pod, body: body["spec"]["selector"]["matchLabels"].update(app="other"),
     "`selector` does not match template `labels`"),
    (lambda pod, body: pod.update(restartPolicy="Never"), 'Unsupported value: "Never": supported values: "Always"'),
    (lambda pod, body: pod["containers"][0].update(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
     "must be less than or equal to cpu limit of 1"),
    (lambda pod, body: pod["containers"][0].update(volumeMounts=[{"name": "nope", "mountPath": "/x"}]),
     'volumeMounts[0].name: Not found: "nope"'),
], ids=["unknown-field", "wrong-type", "name", "duplicate-container", "selector", "restart-policy", "requests",
        "mount"])
def test_invalid_deployments_are_422(api, namespace, base_image, change, message):
    with pytest.raises(ApiException) as invalid:
        api.apps.create_namespaced_deployment(namespace, _bad_deployment(base_image, change))
    status = _status(invalid.value)
    assert (invalid.value.status, status["reason"], status["details"]["kind"]) == (422, "Invalid", "Deployment")
    assert status["message"].startswith('Deployment.apps "') and message in status["message"], status["message"]
    assert api.apps.list_namespaced_deployment(namespace).items == []


def test_service_node_ports_are_validated_and_allocated(api, namespace):
    with pytest.raises(ApiException) as out_of_range:
        api.core.create_namespaced_service(namespace, _node_port_service("web", nodePort=80))
    assert "provided port is not in the valid range. The range of valid ports is 30000-32767" \
        in _status(out_of_range.value)["message"]

    first = api.core.create_namespaced_service(namespace, _node_port_service("first"))
    node_port = first.spec.ports[0].node_port
    assert 30000 <= node_port <= 32767 and first.spec.cluster_ip.startswith("10.96.")
    with pytest.raises(ApiException) as taken:
        api.core.create_namespaced_service(namespace, _node_port_service("second", nodePort=node_port))
    assert taken.value.status == 422 and "provided port is already allocated" in _status(taken.value)["message"]

    with _listening_on_a_node_port() as busy:
        with pytest.raises(ApiException) as unavailable:
            api.core.create_namespaced_service(namespace, _node_port_service("third", nodePort=busy))
    assert f"spec.ports[0].nodePort: Invalid value: {busy}: provided port is not available on the node" \
        in _status(unavailable.value)["message"]

    current = api.core.read_namespaced_service("first", namespace)
    replaced = api.core.replace_namespaced_service("first", namespace, current)
    assert replaced.spec.ports[0].node_port == node_port and replaced.spec.cluster_ip == first.spec.cluster_ip
    with pytest.raises(ApiException) as relative:
        api.networking.create_namespaced_ingress(namespace, {"metadata": {"name": "x"}, "spec": {"rules": [{"http": {
            "paths": [{"path": "api", "pathType": "Prefix",
                       "backend": {"service": {"name": "first", "port": {"number": 80}}}}]}}]}})
    assert "spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path" \
        in _status(relative.value)["message"]


@contextlib.contextmanager
def _listening_on_a_node_port():
    """Something else listening on a port of the nodePort range."""
    for port in range(32767, 30000, -1):
        try:
            server = socket.create_server(("127.0.0.1", port))
        except OSError:
            continue
        with server:
            yield port
        return


# workloads


def test_web_deployment_answers_through_a_node_port_and_the_ingress(standin, api, namespace, base_image):
    api.apps.create_namespaced_deployment(namespace, _deployment("web", [_web_container(base_image)], replicas=2))
    service = api.core.create_namespaced_service(namespace, _node_port_service("web"))
    ingress = api.networking.create_namespaced_ingress(namespace, {"metadata": {"name": "web"}, "spec": {"rules": [
        {"host": "web.example.test", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": "web", "port": {"number": 80}}}}]}}]}})
    assert ingress.status.load_balancer.ingress[0].ip == standin.node_ip

    _available(api, namespace, "web", replicas=2)
    pods = {pod.metadata.name for pod in _pods(api, namespace, "web")}
    node_port = f"http://127.0.0.1:{service.spec.ports[0].node_port}/hostname"
    assert {_get(node_port).text.strip() for _ in range(6)} == pods, "round-robin over both ready pods"
    through_ingress = _get(f"http://127.0.0.1:{standin.ingress_port}/hostname",
                           headers={"Host": "web.example.test:80"})
    assert through_ingress.status_code == 200 and through_ingress.text.strip() in pods
    unknown_host = _get(f"http://127.0.0.1:{standin.ingress_port}/hostname", headers={"Host": "other.test"})
    assert unknown_host.status_code == 404 and "nginx" in unknown_host.text

    for path in [f"/apis/apps/v1/namespaces/{namespace}/deployments/web", f"/api/v1/namespaces/{namespace}/pods",
                 f"/api/v1/namespaces/{namespace}/events", f"/api/v1/namespaces/{namespace}/services/web",
                 f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/web", "/api/v1/nodes"]:
        answer = httpx.get(standin.endpoint + path, headers={"Authorization": f"Bearer {standin.token}"}).json()
        for obj in answer.get("items", [answer]):
            kubernetes_validate.validate(obj, "1.36", strict=True)

    api.apps.patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 0}})
    _wait("the pods to go", lambda: not api.core.list_namespaced_pod(namespace).items)
    assert _get(f"http://127.0.0.1:{standin.ingress_port}/", headers={"Host": "web.example.test"}).status_code == 503
    with pytest.raises(httpx.TransportError):
        _get(node_port)


def test_two_containers_of_a_pod_share_localhost(api, namespace, base_image):
    ask = ("import time, urllib.request\nwhile True:\n    try:\n        print('got', urllib.request.urlopen("
           "'http://127.0.0.1:8080/hostname').read().decode().strip(), flush=True)\n    except OSError as e:\n"
           "        print('not yet', e, flush=True)\n    time.sleep(0.3)\n")
    client_container = {"name": "client", "image": base_image, "command": ["python3", "-c", ask]}
    api.apps.create_namespaced_deployment(namespace, _deployment("pair", [_web_container(base_image),
                                                                           client_container]))
    _available(api, namespace, "pair")
    pod = _pods(api, namespace, "pair")[0].metadata.name
    _wait("the client's answer", lambda: f"got {pod}" in _log(api, namespace, pod, container="client"))
    with pytest.raises(ApiException) as which:
        _log(api, namespace, pod)
    assert which.value.status == 400 and "a container name must be specified" in _status(which.value)["message"]


def test_rolling_update_replaces_the_pod_and_stays_available(api, namespace, base_image):
    web = _web_container(base_image, env=[{"name": "VERSION", "value": "1"}])
    api.apps.create_namespaced_deployment(namespace, _deployment("roll", [web]))
    service = api.core.create_namespaced_service(namespace, _node_port_service("roll"))
    url = f"http://127.0.0.1:{service.spec.ports[0].node_port}/hostname"
    first = _available(api, namespace, "roll")
    old_pod = _pods(api, namespace, "roll")[0].metadata.name

    first.spec.template.spec.containers[0].env[0].value = "2"
    first.metadata.resource_version = None
    api.apps.replace_namespaced_deployment("roll", namespace, first)

    def rolled():
        assert _get(url).status_code == 200, "served all along"
        deployment = api.apps.read_namespaced_deployment("roll", namespace)
        assert _condition(deployment, "Available").status == "True"
        names = [p.metadata.name for p in api.core.list_namespaced_pod(namespace).items]
        done = _condition(deployment, "Progressing").reason == "NewReplicaSetAvailable"
        return names if done and old_pod not in names and deployment.status.observed_generation == 2 else None

    new_pods = _wait("the rollout", rolled)
    assert len(new_pods) == 1 and new_pods[0].split("-")[1] != old_pod.split("-")[1], "a new pod-template-hash"
    assert _get(url).text.strip() == new_pods[0]


def test_image_pull_secrets_and_pull_failures(api, namespace, docker_client, base_image):
    password = secrets.token_urlsafe(12)
    with registry_with_login("k8s-standin-registry", "puller", password) as host:
        repository = f"{host}/standin/app"
        auth = {"username": "puller", "password": password, "serveraddress": host}
        docker_client.tag(base_image, repository, "v1")
        for line in docker_client.push(repository, "v1", auth_config=auth, stream=True, decode=True):
            assert "error" not in line, line
        docker_client.remove_image(f"{repository}:v1")
        config_json = json.dumps({"auths": {host: {"username": "puller", "password": password, "auth": base64.b64encode(
            f"puller:{password}".encode()).decode()}}})
        api.core.create_namespaced_secret(namespace, {"metadata": {"name": "pull"},
                                                      "type": "kubernetes.io/dockerconfigjson",
                                                      "stringData": {".dockerconfigjson": config_json}})
        try:
            _pull_with_and_without_credentials(api, namespace, repository)
        finally:
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.remove_image(f"{repository}:v1")


def _pull_with_and_without_credentials(api: Api, namespace: str, repository: str) -> None:
    pulls = {"pod": {"imagePullSecrets": [{"name": "pull"}]}}
    api.apps.create_namespaced_deployment(namespace, _deployment(
        "private", [{"name": "app", "image": f"{repository}:v1", "command": ["sleep", "infinity"]}], **pulls))
    api.apps.create_namespaced_deployment(namespace, _deployment(
        "missing", [{"name": "app", "image": f"{repository}-missing:v1"}], **pulls))
    api.apps.create_namespaced_deployment(namespace, _deployment(
        "anonymous", [{"name": "app", "image": f"{repository}:v1", "imagePullPolicy": "Always"}]))

    _available(api, namespace, "private")
    pod = _pods(api, namespace, "private")[0]
    assert pod.status.container_statuses[0].image_id.startswith(f"{repository}@sha256:")
    assert any(e.reason == "Pulled" and e.message.startswith(f'Successfully pulled image "{repository}:v1"')
               for e in _events(api, namespace, pod.metadata.name))

    for app, image in [("missing", f"{repository}-missing:v1"), ("anonymous", f"{repository}:v1")]:
        pod = _one_pod(api, namespace, app, lambda p: _waiting_reason(p) == "ImagePullBackOff", "ImagePullBackOff")
        waiting = pod.status.container_statuses[0].state.waiting
        assert waiting.message.startswith(f'Back-off pulling image "{image}": ErrImagePull: failed to pull image')
        failed = [e.message for e in _events(api, namespace, pod.metadata.name) if e.reason == "Failed"]
        assert any(m.startswith(f'Failed to pull image "{image}": ') for m in failed), failed
        assert pod.status.phase == "Pending" and not pod.status.container_statuses[0].ready


def test_a_crashing_container_backs_off_with_its_exit_code_and_log(api, namespace, base_image):
    api.apps.create_namespaced_deployment(namespace, _deployment("crash", [_container(base_image,
                                                                                     script="echo boom; exit 3")]))

    def crash_looping(pod) -> bool:
        status = (pod.status.container_statuses or [None])[0]
        return bool(status and _waiting_reason(pod) == "CrashLoopBackOff" and status.restart_count >= 1
                    and status.last_state.terminated)

    pod = _one_pod(api, namespace, "crash", crash_looping, "CrashLoopBackOff")
    status = pod.status.container_statuses[0]
    assert (status.last_state.terminated.exit_code, status.last_state.terminated.reason) == (3, "Error")
    assert not status.ready and "back-off" in status.state.waiting.message
    name = pod.metadata.name
    assert _log(api, namespace, name, tail_lines=1) == "boom\n"
    assert "boom" in _log(api, namespace, name, previous=True)
    assert any(e.reason == "BackOff" and e.type == "Warning" and e.message.startswith(
        "Back-off restarting failed container app in pod") for e in _events(api, namespace, name))
    deployment = api.apps.read_namespaced_deployment("crash", namespace)
    assert _condition(deployment, "Available").status == "False" and deployment.status.unavailable_replicas == 1


def test_extended_resources_are_scheduled_against_what_running_pods_use(api, namespace, base_image):
    def gpus(count: str) -> dict:
        return {"resources": {"limits": {GPU: count}}}

    api.apps.create_namespaced_deployment(namespace, _deployment("trainer", [_container(base_image, **gpus("2"))]))
    _available(api, namespace, "trainer")
    assert _pods(api, namespace, "trainer")[0].spec.node_name == NODE_NAME

    api.apps.create_namespaced_deployment(namespace, _deployment("extra", [_container(base_image, **gpus("1"))]))
    pending = _one_pod(api, namespace, "extra", lambda p: p.status.conditions, "a scheduling verdict")
    scheduled = pending.status.conditions[0]
    expected = f"0/1 nodes are available: 1 Insufficient {GPU}."
    assert (pending.status.phase, scheduled.type, scheduled.status, scheduled.reason, scheduled.message) \
        == ("Pending", "PodScheduled", "False", "Unschedulable", expected)
    events = _events(api, namespace, pending.metadata.name)
    assert [(e.type, e.reason, e.message) for e in events] == [("Warning", "FailedScheduling", expected)]

    api.apps.delete_namespaced_deployment("trainer", namespace)
    _available(api, namespace, "extra")


def test_a_rollout_past_its_progress_deadline(api, namespace, base_image):
    never_ready = _container(base_image, readinessProbe={"tcpSocket": {"port": 9}, "periodSeconds": 1})
    api.apps.create_namespaced_deployment(namespace, _deployment("stuck", [never_ready], progressDeadlineSeconds=2))

    def timed_out():
        progressing = _condition(api.apps.read_namespaced_deployment("stuck", namespace), "Progressing")
        return progressing if progressing and progressing.status == "False" else None

    progressing = _wait("ProgressDeadlineExceeded", timed_out, timeout=20)
    assert progressing.reason == "ProgressDeadlineExceeded" and "has timed out progressing" in progressing.message
    pod = _pods(api, namespace, "stuck")[0]
    assert any(e.reason == "Unhealthy" and e.message.startswith("Readiness probe failed: dial tcp")
               for e in _events(api, namespace, pod.metadata.name))


def test_volumes_are_mounted_into_the_containers(standin, api, namespace, base_image, tmp_path):
    (standin.nfs_dir("nfs.example.test", "/exports/models") / "in.txt").write_text("weights")
    host = tmp_path / "host"
    script = ("cat /models/in.txt > /host/copied.txt && echo from-pod > /models/out.txt && "
              "echo claimed > /data/claimed.txt && (echo no > /ro/denied.txt || echo read-only > /data/ro.txt) && "
              "python3 -c \"import os; s = os.statvfs('/dev/shm'); print(s.f_blocks * s.f_frsize)\" > /data/shm && "
              "touch /data/done && exec sleep infinity")
    mounts = [{"name": "models", "mountPath": "/models"}, {"name": "models", "mountPath": "/ro", "readOnly": True},
              {"name": "host", "mountPath": "/host"}, {"name": "data", "mountPath": "/data"},
              {"name": "shm", "mountPath": "/dev/shm"}]
    volumes = [{"name": "models", "nfs": {"server": "nfs.example.test", "path": "/exports/models"}},
               {"name": "host", "hostPath": {"path": str(host), "type": "DirectoryOrCreate"}},
               {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
               {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}]
    api.apps.create_namespaced_deployment(namespace, _deployment(
        "volumes", [_container(base_image, script=script, volumeMounts=mounts)], volumes=volumes))

    pod = _one_pod(api, namespace, "volumes", lambda p: p.status.conditions, "a scheduling verdict")
    message = '0/1 nodes are available: persistentvolumeclaim "data" not found.'
    assert pod.status.conditions[0].message == message
    claim = api.core.create_namespaced_persistent_volume_claim(namespace, {"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    assert (claim.status.phase, claim.status.capacity) == ("Bound", {"storage": "1Gi"})

    claim_dir = _wait("the container's work", lambda: next(iter(standin.host_root.glob(f"pvc/{namespace}/*/done")),
                                                            None)).parent
    assert (host / "copied.txt").read_text() == "weights"
    assert (standin.nfs_dir("nfs.example.test", "/exports/models") / "out.txt").read_text() == "from-pod\n"
    assert (claim_dir / "claimed.txt").read_text() == "claimed\n"
    assert (claim_dir / "ro.txt").read_text() == "read-only\n"
    assert int((claim_dir / "shm").read_text()) == 256 * 1024 * 1024

    api.core.delete_namespaced_persistent_volume_claim("data", namespace)
    assert not claim_dir.exists()


def test_stop_removes_every_container_volume_and_port(docker_client, base_image):
    standin = KubernetesStandIn(docker_client).start()
    api = _api(standin.endpoint, standin.token)
    api.apps.create_namespaced_deployment("default", _deployment(
        "left", [_web_container(base_image, volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}])],
        volumes=[{"name": "scratch", "emptyDir": {}}]))
    node_port = api.core.create_namespaced_service("default", _node_port_service("left")).spec.ports[0].node_port
    _available(api, "default", "left")
    mine = {"label": f"{LABEL}={standin.instance_id}"}
    assert len(docker_client.containers(filters=mine)) == 2 and docker_client.volumes(filters=mine)["Volumes"]
    root = standin.host_root

    standin.stop()
    assert docker_client.containers(all=True, filters=mine) == []
    assert not docker_client.volumes(filters=mine)["Volumes"]
    assert not root.exists()
    for port in (int(standin.endpoint.rsplit(":", 1)[1]), standin.ingress_port, node_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


# jobs


def _job(name: str, containers: list[dict], restart_policy: str | None = "Never", **spec) -> dict:
    pod = {"containers": containers, **({"restartPolicy": restart_policy} if restart_policy else {}),
           **spec.pop("pod", {})}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": pod}, **spec}}


def _finished(api: Api, namespace: str, name: str, timeout: float = 30):
    """The job once it has its Complete or Failed condition."""
    def check():
        job = api.batch.read_namespaced_job(name, namespace)
        ended = [c for c in job.status.conditions or [] if c.type in ("Complete", "Failed") and c.status == "True"]
        return job if ended else None

    return _wait(f"job {name} to finish", check, timeout)


def _conditions(job) -> list[tuple[str, str, str]]:
    return [(c.type, c.status, c.reason) for c in job.status.conditions or []]


def _job_pods(api: Api, namespace: str, job: str) -> list:
    pods = api.core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}").items
    return sorted(pods, key=lambda pod: (pod.metadata.creation_timestamp, pod.metadata.name))


def _running_pod(api: Api, namespace: str, job: str):
    def check():
        return next((p for p in _job_pods(api, namespace, job) if not p.metadata.deletion_timestamp
                     and p.status.container_statuses and p.status.container_statuses[0].state.running), None)

    return _wait(f"a running pod of job {job}", check)


def _job_events(api: Api, namespace: str, job: str) -> set[tuple[str, str, str]]:
    events = api.core.list_namespaced_event(namespace,
                                            field_selector=f"involvedObject.name={job},involvedObject.kind=Job")
    return {(e.type, e.reason, e.message) for e in events.items}


def _pod_containers(docker_client, pod) -> list:
    return docker_client.containers(all=True, filters={"label": f"{LABEL}.pod={pod.metadata.uid}"})


def _valid(api: Api, obj) -> None:
    kubernetes_validate.validate(api.batch.api_client.sanitize_for_serialization(obj), "1.36.0", strict=True)


def test_a_job_runs_to_completion_and_keeps_its_pod_and_log(api, namespace, base_image):
    api.batch.create_namespaced_job(namespace, _job("done", [_container(base_image, script="echo computed")]))

    job = _finished(api, namespace, "done")
    status = job.status
    assert (status.succeeded, status.failed, status.active, status.ready, status.terminating) == (1, None, None, 0, 0)
    assert _conditions(job) == [("SuccessCriteriaMet", "True", "CompletionsReached"),
                                ("Complete", "True", "CompletionsReached")]
    assert job.status.conditions[1].message == "Reached expected number of succeeded pods"
    assert status.completion_time >= status.start_time
    [pod] = _job_pods(api, namespace, "done")
    assert pod.metadata.name.startswith("done-") and len(pod.metadata.name) == len("done-") + 5
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Job", "done", job.metadata.uid, True)
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.exit_code, terminated.reason) == ("Succeeded", 0, "Completed")
    assert terminated.started_at <= terminated.finished_at
    assert _log(api, namespace, pod.metadata.name) == "computed\n", "the finished pod keeps its container"
    assert _job_events(api, namespace, "done") == {
        ("Normal", "SuccessfulCreate", f"Created pod: {pod.metadata.name}"), ("Normal", "Completed", "Job completed")}
    for obj in (job, pod):
        _valid(api, obj)


def test_a_followed_log_comes_as_it_is_written_until_the_container_ends(api, namespace, base_image):
    talk = _container(base_image, script="echo one; sleep 2; echo two")
    api.batch.create_namespaced_job(namespace, _job("talk", [talk]))
    pod = _running_pod(api, namespace, "talk")

    answer = api.core.read_namespaced_pod_log(pod.metadata.name, namespace, follow=True, _preload_content=False)
    chunks = [(time.monotonic(), chunk) for chunk in answer.stream(1024)]
    assert b"".join(chunk for _, chunk in chunks) == b"one\ntwo\n"
    assert chunks[0][1] == b"one\n" and chunks[-1][0] - chunks[0][0] > 0.5, "streamed, not read at the end"
    assert _finished(api, namespace, "talk").status.succeeded == 1


def test_a_failing_job_is_retried_until_its_backoff_limit(api, namespace, base_image):
    api.batch.create_namespaced_job(namespace, _job("fails", [_container(base_image, script="echo trying; exit 3")],
                                                    backoffLimit=1))

    job = _finished(api, namespace, "fails")
    assert (job.status.failed, job.status.succeeded, job.status.completion_time) == (2, None, None)
    assert _conditions(job) == [("FailureTarget", "True", "BackoffLimitExceeded"),
                                ("Failed", "True", "BackoffLimitExceeded")]
    assert job.status.conditions[1].message == "Job has reached the specified backoff limit"
    pods = _job_pods(api, namespace, "fails")
    assert [p.status.phase for p in pods] == ["Failed", "Failed"], "Never: a new pod for each attempt"
    for pod in pods:
        status = pod.status.container_statuses[0]
        assert (status.state.terminated.exit_code, status.state.terminated.reason) == (3, "Error")
        assert (status.restart_count, status.last_state.terminated) == (0, None)
        assert _log(api, namespace, pod.metadata.name) == "trying\n"
    assert ("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit") \
        in _job_events(api, namespace, "fails")
    _valid(api, job)


def test_on_failure_restarts_the_container_in_its_pod_and_counts_the_restarts(api, namespace, base_image):
    api.batch.create_namespaced_job(namespace, _job("flaky", [_container(base_image, script="exit 1")],
                                                    restart_policy="OnFailure", backoffLimit=1))

    job = _finished(api, namespace, "flaky")
    assert _conditions(job)[-1] == ("Failed", "True", "BackoffLimitExceeded")
    assert job.status.failed == 1, "the pod deleted when the job failed counts as failed"
    assert _job_pods(api, namespace, "flaky") == [], "the failed job's active pod is deleted"
    [message] = [m for _, reason, m in _job_events(api, namespace, "flaky") if reason == "SuccessfulCreate"]
    pod = message.removeprefix("Created pod: ")
    assert ("Normal", "SuccessfulDelete", f"Deleted pod: {pod}") in _job_events(api, namespace, "flaky")
    assert any(e.reason == "BackOff" for e in _events(api, namespace, pod)), "restarted in the same pod"


def test_a_job_past_its_active_deadline_is_stopped_and_its_containers_removed(api, namespace, base_image,
                                                                             docker_client):
    api.batch.create_namespaced_job(namespace, _job("slow", [_container(base_image, script="exec sleep 60")],
                                                    activeDeadlineSeconds=2))
    pod = _running_pod(api, namespace, "slow")
    assert _pod_containers(docker_client, pod)

    job = _finished(api, namespace, "slow")
    assert _conditions(job) == [("FailureTarget", "True", "DeadlineExceeded"), ("Failed", "True", "DeadlineExceeded")]
    assert job.status.conditions[1].message == "Job was active longer than specified deadline"
    assert (job.status.active, job.status.failed) == (None, 1)
    assert _job_pods(api, namespace, "slow") == []
    assert _pod_containers(docker_client, pod) == []


def test_a_finished_job_goes_with_its_pods_after_its_ttl(api, namespace, base_image):
    api.batch.create_namespaced_job(namespace, _job("brief", [_container(base_image, script="true")],
                                                    ttlSecondsAfterFinished=0))

    _wait("its pod", lambda: _job_pods(api, namespace, "brief"))

    def gone() -> bool:
        jobs = [job.metadata.name for job in api.batch.list_namespaced_job(namespace).items]
        return "brief" not in jobs and not _job_pods(api, namespace, "brief")

    _wait("the finished job and its pod to go", gone)
    assert ("Normal", "Completed", "Job completed") in _job_events(api, namespace, "brief")


def test_deleting_a_job_takes_its_pods_only_with_a_propagation_policy(api, namespace, base_image, docker_client):
    for name in ("taken", "orphaned"):
        api.batch.create_namespaced_job(namespace, _job(name, [_container(base_image, script="exec sleep 60")]))
    taken, first = _running_pod(api, namespace, "taken"), _running_pod(api, namespace, "orphaned")

    api.core.delete_namespaced_pod(first.metadata.name, namespace)
    replacement = _running_pod(api, namespace, "orphaned")
    assert replacement.metadata.name != first.metadata.name, "the job controller replaces a deleted pod"
    assert api.batch.read_namespaced_job("orphaned", namespace).status.failed == 1, "counted as failed"

    api.batch.delete_namespaced_job("taken", namespace, propagation_policy="Background")
    _wait("the pod of the deleted job to go", lambda: not _job_pods(api, namespace, "taken"))
    assert _pod_containers(docker_client, taken) == []

    api.batch.delete_namespaced_job("orphaned", namespace)
    with pytest.raises(ApiException) as deleted:
        api.batch.read_namespaced_job("orphaned", namespace)
    assert deleted.value.status == 404
    time.sleep(1)  # a few controller ticks
    [orphan] = [p for p in _job_pods(api, namespace, "orphaned") if not p.metadata.deletion_timestamp]
    assert orphan.metadata.name == replacement.metadata.name, "batch/v1 orphans the pods by default"
    assert orphan.metadata.owner_references is None and orphan.status.phase == "Running"
    assert [c["State"] for c in _pod_containers(docker_client, orphan)] == ["running", "running"]


def test_a_job_wanting_more_gpus_than_the_node_has_stays_pending(api, namespace, base_image):
    api.batch.create_namespaced_job(namespace, _job("greedy", [_container(
        base_image, script="true", resources={"limits": {GPU: "4"}})]))

    pod = _wait("a scheduling verdict", lambda: next(
        (p for p in _job_pods(api, namespace, "greedy") if p.status.conditions), None))
    expected = f"0/1 nodes are available: 1 Insufficient {GPU}."
    scheduled = pod.status.conditions[0]
    assert (pod.status.phase, scheduled.type, scheduled.status, scheduled.reason, scheduled.message) \
        == ("Pending", "PodScheduled", "False", "Unschedulable", expected)
    assert [(e.type, e.reason, e.message) for e in _events(api, namespace, pod.metadata.name)] \
        == [("Warning", "FailedScheduling", expected)]
    job = api.batch.read_namespaced_job("greedy", namespace)
    assert (job.status.active, job.status.ready, job.status.conditions) == (1, 0, None)


def test_a_new_job_gets_the_generated_selector_and_labels_and_the_defaults(api, namespace, base_image):
    body = _job("", [_container(base_image, script="true")], suspend=True)
    body["metadata"] = {"generateName": "gen-"}
    body["spec"]["template"]["metadata"] = {"labels": {"app": "gen"}}
    created = api.batch.create_namespaced_job(namespace, body)
    name, uid, spec = created.metadata.name, created.metadata.uid, created.spec
    assert name.startswith("gen-") and len(name) == len("gen-") + 5
    assert (spec.completions, spec.parallelism, spec.backoff_limit, spec.completion_mode, spec.suspend,
            spec.pod_replacement_policy, spec.manual_selector) == (1, 1, 6, "NonIndexed", True, "TerminatingOrFailed",
                                                                   None)
    assert spec.selector.to_dict() == {"match_labels": {"batch.kubernetes.io/controller-uid": uid},
                                       "match_expressions": None}
    generated = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                 "controller-uid": uid, "job-name": name}
    assert spec.template.metadata.labels == {"app": "gen", **generated}
    assert created.metadata.labels == spec.template.metadata.labels, "a job without labels takes its template's"
    assert spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"

    suspended = _wait("the Suspended condition", lambda: (
        job := api.batch.read_namespaced_job_status(name, namespace)).status.conditions and job)
    assert _conditions(suspended) == [("Suspended", "True", "JobSuspended")]
    assert suspended.status.start_time is None and _job_pods(api, namespace, name) == []
    everywhere = api.batch.list_job_for_all_namespaces(label_selector=f"job-name={name}").items
    here = api.batch.list_namespaced_job(namespace, label_selector="app=gen").items
    assert [j.metadata.name for j in everywhere] == [j.metadata.name for j in here] == [name]
    with pytest.raises(ApiException) as negative:
        api.batch.patch_namespaced_job_status(name, namespace, {"status": {"failed": -1}})
    assert "status.failed: Invalid value: -1: must be greater than or equal to 0" in _status(negative.value)["message"]

    api.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": False}})
    job = _finished(api, namespace, name)
    assert _conditions(job) == [("Suspended", "False", "JobResumed"),
                                ("SuccessCriteriaMet", "True", "CompletionsReached"),
                                ("Complete", "True", "CompletionsReached")]
    assert {reason for _, reason, _ in _job_events(api, namespace, name)} \
        == {"Suspended", "Resumed", "SuccessfulCreate", "Completed"}
    assert [p.metadata.labels for p in _job_pods(api, namespace, name)] == [{"app": "gen", **generated}]

    groups = client.ApisApi(api.batch.api_client).get_api_versions().groups
    assert {g.name: g.preferred_version.group_version for g in groups}["batch"] == "batch/v1"
    resources = {r.name: r.verbs for r in api.batch.get_api_resources().resources}
    assert set(resources["jobs"]) >= {"create", "delete", "get", "list", "patch", "update"}
    assert resources["jobs/status"] == ["get", "patch", "update"]


@pytest.mark.parametrize("change, message", [
    (lambda pod, spec: pod.update(restartPolicy="Always"),
     'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"'),
    (lambda pod, spec: pod.pop("restartPolicy"),
     'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"'),
    (lambda pod, spec: pod.update(restartPolicy="Sometimes"),
     'restartPolicy: Unsupported value: "Sometimes": supported values: "OnFailure", "Never"'),
    (lambda pod, spec: spec.update(retries=3), "spec.retries: field not declared in schema"),
    (lambda pod, spec: spec.update(backoffLimit=-1),
     "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"),
    (lambda pod, spec: spec.update(activeDeadlineSeconds=-5),
     "spec.activeDeadlineSeconds: Invalid value: -5: must be greater than or equal to 0"),
    (lambda pod, spec: spec.update(selector={"matchLabels": {"app": "bad"}}), "`selector` not auto-generated"),
    (lambda pod, spec: spec.update(completionMode="Indexed", completions=2),
     "spec.completionMode: Forbidden: Indexed jobs are not modelled by the Kubernetes stand-in"),
], ids=["always", "no-restart-policy", "unknown-restart-policy", "unknown-field", "backoff-limit", "deadline",
        "own-selector", "indexed"])
def test_invalid_jobs_are_422(api, namespace, base_image, change, message):
    body = _job("bad", [_container(base_image)])
    change(body["spec"]["template"]["spec"], body["spec"])
    with pytest.raises(ApiException) as invalid:
        api.batch.create_namespaced_job(namespace, body)
    status = _status(invalid.value)
    assert (invalid.value.status, status["reason"], status["details"]["kind"]) == (422, "Invalid", "Job")
    assert status["message"].startswith('Job.batch "bad" is invalid: ') and message in status["message"], \
        status["message"]
    assert api.batch.list_namespaced_job(namespace).items == []


def test_a_jobs_template_selector_and_completions_are_immutable(api, namespace, base_image):
    body = _job("fixed", [_container(base_image)], suspend=True)
    api.batch.create_namespaced_job(namespace, body)
    for patch, field_path in [
        ({"spec": {"template": {"spec": {"containers": [_container(base_image, script="exit 0")]}}}}, "spec.template"),
        ({"spec": {"selector": {"matchLabels": {"job-name": "fixed"}}}}, "spec.selector"),
        ({"spec": {"completions": 3}}, "spec.completions"),
    ]:
        with pytest.raises(ApiException) as immutable:
            api.batch.patch_namespaced_job("fixed", namespace, patch)
        message = _status(immutable.value)["message"]
        assert immutable.value.status == 422 and message.startswith(f'Job.batch "fixed" is invalid: {field_path}: '
                                                                    "Invalid value: ") and message.endswith(
            ": field is immutable"), message
    with pytest.raises(ApiException) as original:
        api.batch.replace_namespaced_job("fixed", namespace, body)
    assert "spec.template: Invalid value: " in _status(original.value)["message"], "without the generated labels"

    patched = api.batch.patch_namespaced_job("fixed", namespace, {"spec": {"parallelism": 2, "backoffLimit": 0}})
    assert (patched.spec.parallelism, patched.spec.backoff_limit, patched.metadata.generation) == (2, 0, 2)


def test_a_pod_whose_node_selector_the_node_does_not_match_stays_pending(docker_client, base_image):
    with KubernetesStandIn(docker_client, node_labels={"pool": "gpu"}) as cluster:
        batch = _api(cluster.endpoint, cluster.token).batch
        core = _api(cluster.endpoint, cluster.token).core
        assert core.read_node(NODE_NAME).metadata.labels["pool"] == "gpu"
        for name, pool in (("fits", "gpu"), ("elsewhere", "cpu")):
            batch.create_namespaced_job("default", {
                "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "nodeSelector": {"pool": pool},
                                               "containers": [{"name": "c", "image": base_image, "command": ["true"]}]}}}})
        deadline = time.monotonic() + 30
        while not (batch.read_namespaced_job("fits", "default").status.succeeded or 0) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert batch.read_namespaced_job("fits", "default").status.succeeded == 1
        pod = core.list_namespaced_pod("default", label_selector="job-name=elsewhere").items[0]
        scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
        assert (pod.status.phase, scheduled.status, scheduled.reason) == ("Pending", "False", "Unschedulable")
        assert scheduled.message == "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
