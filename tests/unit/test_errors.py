"""Which failures a retry can fix: passing trouble is retried, user errors and refusals fail at once."""

from __future__ import annotations

import pytest

from cloud_deploy_provider.engine import BuildFailed, EngineUnreachable, PullFailed, PushFailed
from cloud_deploy_provider.errors import is_transient
from cloud_deploy_provider.identity import InvalidIdentifier
from cloud_deploy_provider.pipeline import DeploymentFailed
from cloud_deploy_provider.settings import SettingsError
from cloud_deploy_provider.spec import SpecError


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "DescribeServices")


def _docker_api_error(status: int):
    import requests
    from docker.errors import APIError

    response = requests.Response()
    response.status_code = status
    return APIError("engine said no", response=response)


def _kubernetes_error(status: int):
    from kubernetes.client.exceptions import ApiException

    return ApiException(status=status, reason="reason")


def _google_error(status: int):
    from google.api_core import exceptions

    return exceptions.from_http_status(status, "google said so")


def _httpx_error(status: int):
    import httpx

    request = httpx.Request("GET", "http://registry/v2/")
    return httpx.HTTPStatusError("status", request=request, response=httpx.Response(status, request=request))


def _wrapped(cause: Exception) -> RuntimeError:
    """A target's own error class wrapping a library's, as the targets raise them."""
    try:
        raise cause
    except Exception as error:
        try:
            raise RuntimeError(f"aws-ecs: {error}") from error
        except RuntimeError as wrapper:
            return wrapper


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(lambda: EngineUnreachable("the Docker engine at unix:///var/run/docker.sock does not answer"),
                     id="engine-unreachable"),
        pytest.param(lambda: ConnectionRefusedError(111, "Connection refused"), id="connection-refused"),
        pytest.param(lambda: _client_error("ThrottlingException", 400), id="aws-throttling"),
        pytest.param(lambda: _client_error("ServiceUnavailable", 503), id="aws-503"),
        pytest.param(lambda: _wrapped(_client_error("ThrottlingException", 400)), id="aws-throttling-wrapped"),
        pytest.param(lambda: _docker_api_error(500), id="docker-500"),
        pytest.param(lambda: _kubernetes_error(503), id="kubernetes-503"),
        pytest.param(lambda: _kubernetes_error(429), id="kubernetes-429"),
        pytest.param(lambda: _google_error(503), id="google-503"),
        pytest.param(lambda: _google_error(429), id="google-429"),
        pytest.param(lambda: _httpx_error(502), id="registry-502"),
        pytest.param(lambda: PushFailed("push of r/x:t failed: received unexpected HTTP status: 503 Service Unavailable"),
                     id="push-503"),
        pytest.param(lambda: PullFailed("pull of r/x:t failed: dial tcp 127.0.0.1:5000: connect: connection refused"),
                     id="pull-refused"),
        pytest.param(lambda: BuildFailed("step 9/13 `RUN [...]`", "unexpected EOF", []), id="engine-gone-mid-build"),
        pytest.param(lambda: _requests_connection_error(), id="requests-connection"),
        pytest.param(lambda: _docker_hook_error(), id="docker-hook"),
        pytest.param(lambda: RuntimeError("something nobody classified"), id="unknown"),
    ],
)
def test_passing_trouble_is_retried(error):
    assert is_transient(error()) is True


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(lambda: SpecError(["deployment.yaml: deploy.entrypiont: unknown key (did you mean entrypoint?)"]),
                     id="spec"),
        pytest.param(lambda: SettingsError("CLOUD_DEPLOY_BUILD_NETWORK: 'x' is not one of ..."), id="settings"),
        pytest.param(lambda: InvalidIdentifier("user_id: '..' is not valid"), id="identifier"),
        pytest.param(lambda: _client_error("InvalidParameterException", 400), id="aws-400"),
        pytest.param(lambda: _wrapped(_client_error("AccessDeniedException", 403)), id="aws-403-wrapped"),
        pytest.param(lambda: _docker_api_error(404), id="docker-404"),
        pytest.param(lambda: _kubernetes_error(422), id="kubernetes-422"),
        pytest.param(lambda: _google_error(403), id="google-403"),
        pytest.param(lambda: _httpx_error(401), id="registry-401"),
        pytest.param(lambda: PushFailed("push of r/x:t failed: unauthorized: authentication required"), id="push-401"),
        pytest.param(lambda: PullFailed("pull of r/x:t failed: manifest unknown"), id="pull-unknown"),
        pytest.param(lambda: BuildFailed("step 9/13 `RUN [...]`", "The command 'pip' returned a non-zero code: 1",
                                         ["ERROR: No matching distribution found for nope==1"]), id="build-step"),
        pytest.param(lambda: DeploymentFailed("container x exited with exit code 3"), id="service-crashed"),
        pytest.param(lambda: _fail_exception(), id="airflow-fail"),
    ],
)
def test_user_errors_and_refusals_are_not_retried(error):
    assert is_transient(error()) is False


def _requests_connection_error():
    import requests

    return requests.exceptions.ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file'))")


def _docker_hook_error():
    from airflow.sdk.exceptions import AirflowException

    return AirflowException("Failed to establish connection to any given Docker hosts.")


def _fail_exception():
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException("no")


def _package_exceptions() -> list[type[BaseException]]:
    """Every exception class this package defines, found by importing each of its modules."""
    import importlib
    import inspect
    import pkgutil

    import cloud_deploy_provider

    found = set()
    for module in pkgutil.walk_packages(cloud_deploy_provider.__path__, "cloud_deploy_provider."):
        loaded = importlib.import_module(module.name)
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__.startswith("cloud_deploy_provider"):
                found.add(value)
    return sorted(found, key=lambda kind: f"{kind.__module__}.{kind.__qualname__}")


def test_every_error_of_the_package_has_one_root_and_says_whose_fault_it_is():
    from cloud_deploy_provider.errors import CloudDeployError, TargetError, UserError
    from cloud_deploy_provider.operators.cloud_deploy import TaskKilled

    kinds = [kind for kind in _package_exceptions() if kind is not TaskKilled]  # a BaseException: it ends the task
    assert len(kinds) > 25
    rootless = [kind.__qualname__ for kind in kinds if not issubclass(kind, CloudDeployError)]
    assert rootless == []
    unsorted = [kind.__qualname__ for kind in kinds if kind not in (CloudDeployError,)
                and not issubclass(kind, (UserError, TargetError)) and kind.__name__ != "RunAlreadyExists"]
    assert unsorted == []


def test_user_errors_are_value_errors_never_retried_and_target_errors_say_whether_a_retry_helps():
    from cloud_deploy_provider.errors import TargetError, TransientError, UserError

    assert isinstance(UserError("bad"), ValueError) and is_transient(UserError("bad")) is False
    assert is_transient(TargetError("refused")) is False
    assert is_transient(TargetError("throttled", status=429)) is True
    assert is_transient(TargetError("not found", status=404)) is False
    assert is_transient(TransientError("away")) is True
