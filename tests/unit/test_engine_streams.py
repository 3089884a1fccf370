"""Engine stream parsing: every error line raises, with the step and its output (docker-py does not)."""

from __future__ import annotations

import pytest

from cloud_deploy_provider.engine import BuildFailed, PushFailed, _follow_build, _follow_transfer


def test_build_error_names_the_failing_step_and_its_output():
    stream = [
        {"stream": "Step 1/3 : FROM base\n"},
        {"stream": " ---> abc\nStep 2/3 : RUN [\"python3\", \"-m\", \"pip\"]\n"},
        {"stream": " ---> Running in 123\n"},
        {"stream": "ERROR: No matching distribution found for nope==1\n"},
        {"errorDetail": {"code": 1, "message": "The command returned a non-zero code: 1"},
         "error": "The command returned a non-zero code: 1"},
    ]
    with pytest.raises(BuildFailed) as failure:
        _follow_build(iter(stream), lambda line: None)
    assert failure.value.step == 'step 2/3 `RUN ["python3", "-m", "pip"]`'
    assert "No matching distribution found for nope==1" in str(failure.value)
    assert "FROM base" not in str(failure.value)


def test_build_success_returns_the_image_id_and_logs_every_line():
    logged: list[str] = []
    stream = [{"stream": "Step 1/1 : FROM base\n"}, {"aux": {"ID": "sha256:feed"}}, {"stream": "Successfully built feed\n"}]
    assert _follow_build(iter(stream), logged.append) == "sha256:feed"
    assert logged == ["Step 1/1 : FROM base", "Successfully built feed"]


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
