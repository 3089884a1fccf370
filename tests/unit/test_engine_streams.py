"""Engine stream parsing: every error line of a push or pull raises (docker-py does not)."""

from __future__ import annotations

import pytest

from cloud_deploy_provider.engine import PushFailed, _follow_transfer


def test_push_error_detail_raises_even_though_the_engine_answered_200():
    stream = [
        {"status": "The push refers to repository [r/x]"},
        {"status": "Preparing", "id": "l1"},
        {"errorDetail": {"message": "unauthorized: authentication required"}, "error": "unauthorized: authentication required"},
    ]
    with pytest.raises(PushFailed, match="push of r/x:t failed: unauthorized: authentication required"):
        _follow_transfer(iter(stream), lambda line: None, PushFailed, "push of r/x:t")


def test_push_reports_the_digest_and_logs_each_layer_status_once():
    logged: list[str] = []
    stream = [
        {"status": "Pushing", "id": "l1", "progressDetail": {"current": 1}},
        {"status": "Pushing", "id": "l1", "progressDetail": {"current": 2}},
        {"status": "Pushed", "id": "l1"},
        {"status": "t: digest: sha256:abc size: 528"},
        {"progressDetail": {}, "aux": {"Tag": "t", "Digest": "sha256:abc", "Size": 528}},
    ]
    assert _follow_transfer(iter(stream), logged.append, PushFailed, "push") == "sha256:abc"
    assert logged == ["l1: Pushing", "l1: Pushed", "t: digest: sha256:abc size: 528"]
