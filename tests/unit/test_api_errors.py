"""How the REST layer answers failures: a user error is a 400 naming the problem, a refusal keeps its status,
anything else is a bug: a 500 that says so, with its traceback in the server's log."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from cloud_deploy_provider.api.app import create_app
from cloud_deploy_provider.api.deployments import Rejected
from cloud_deploy_provider.errors import TransientError
from cloud_deploy_provider.spec import SpecError


@pytest.fixture
def client():
    app = create_app()

    @app.get("/fails/{how}")
    def fails(how: str) -> str:
        if how == "spec":
            raise SpecError(["common/alice/p1/deployment.yaml: deploy.type: field required"])
        if how == "refused":
            raise Rejected(409, "Service is stopping: start it again once its status is stopped")
        if how == "target":
            raise TransientError("the Docker engine does not answer")
        return {}["a bug"]

    return TestClient(app, raise_server_exceptions=False)


def test_a_user_error_is_a_400_with_its_message(client):
    answer = client.get("/fails/spec")
    assert (answer.status_code, answer.json()) == (400, {"detail": "common/alice/p1/deployment.yaml: deploy.type: "
                                                                   "field required"})


def test_a_refusal_keeps_its_status(client):
    answer = client.get("/fails/refused")
    assert (answer.status_code, answer.json()["detail"]) == (409, "Service is stopping: start it again once its "
                                                                  "status is stopped")


@pytest.mark.parametrize("how, kind", [("bug", "KeyError"), ("target", "TransientError")])
def test_anything_else_is_a_500_logged_with_its_traceback(client, caplog, how, kind):
    with caplog.at_level(logging.ERROR, logger="cloud_deploy_provider.api.app"):
        answer = client.get(f"/fails/{how}")
    assert answer.status_code == 500
    assert answer.json() == {"detail": f"internal error ({kind}); the server's log has the details"}
    [record] = [r for r in caplog.records if r.name == "cloud_deploy_provider.api.app"]
    assert record.getMessage() == f"GET /fails/{how} failed" and record.exc_info[0].__name__ == kind


def test_bad_identifiers_are_a_400_without_touching_anything(client):
    answer = client.get("/status_request", params={"user_id": "..", "project_id": "p1"})
    assert answer.status_code == 400 and "user_id" in answer.json()["detail"]
