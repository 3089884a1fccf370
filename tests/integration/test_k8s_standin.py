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

from tests.conftest import _registry_with_login
from tests.k8s_standin import LABEL, NODE_NAME, KubernetesStandIn

GPU = "nvidia.com/gpu"


@dataclass
class Api:
    apps: client.AppsV1Api
    core: client.CoreV1Api
    networking: client.NetworkingV1Api


def _api(endpoint: str, token: str | None) -> Api:
    configuration = client.Configuration()
    configuration.host = endpoint
    if token is not None:
        configuration.api_key = {"authorization": f"Bearer {token}"}
    api_client = client.ApiClient(configuration)
    return Api(client.AppsV1Api(api_client), client.CoreV1Api(api_client), client.NetworkingV1Api(api_client))


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
    for lister, deleter in [
        (api.networking.list_namespaced_ingress, api.networking.delete_namespaced_ingress),
        (api.core.list_namespaced_service, api.core.delete_namespaced_service),
        (api.core.list_namespaced_secret, api.core.delete_namespaced_secret),
        (api.core.list_namespaced_persistent_volume_claim, api.core.delete_namespaced_persistent_volume_claim),
    ]:
        for obj in lister(name).items:
            deleter(obj.metadata.name, name)
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
]


@pytest.mark.parametrize("case", CRUD_CASES, ids=[case.singular for case in CRUD_CASES])
def test_create_read_replace_patch_list_delete(api, namespace, case):
    group = {"apps": api.apps, "core": api.core, "networking": api.networking}[case.group]

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
    with _registry_with_login("k8s-standin-registry", "puller", password) as host:
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
