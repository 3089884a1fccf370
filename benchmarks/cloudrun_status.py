"""What one Cloud Run status poll costs, printed as figures (run: make benchmark).

TANGO's original shelled out to ``gcloud`` for every status request. Here a poll is one
``GetService`` over the REST transport, and the REST API reuses an answer for 5 s. Measured
against the local Cloud Run stand-in the tests use (loopback HTTP, so the figures are our own
overhead, not Google's network): a poll with a fresh target and client (what the REST API does
once per cache window), a poll on a reused client, API reads per poll, and, for scale, the
bare start of a Python subprocess (a lower bound for anything that shells out to ``gcloud``,
itself a Python program).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins")]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
BASE_IMAGE = os.environ.get("CLOUD_DEPLOY_BASE_IMAGE", "cloud-deploy/debian-python:bookworm")
SERVICE = {"user_id": "bench", "project_id": "status-poll"}


def milliseconds(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1000:.1f} ms, p90 {sorted(samples)[int(len(samples) * 0.9)] * 1000:.1f} ms"


def timed(call, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    import docker
    from google.cloud import run_v2

    from cloud_deploy_provider.identity import ProjectRef
    from cloud_deploy_provider.spec import load_spec
    from cloud_deploy_provider.targets.gcp_cloudrun import CloudRunTarget
    from tests.standins.gcp import GcpStandIn

    engine = docker.APIClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    with GcpStandIn(engine) as stand_in:
        extra = {"keyfile_dict": json.dumps(stand_in.keyfile_dict), "project": stand_in.project_id,
                 "cloud_deploy": {"region": "asia-northeast3", "run_endpoint": stand_in.endpoint}}
        os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = json.dumps({"conn_type": "google_cloud_platform", "extra": extra})
        project, spec = ProjectRef(**SERVICE), load_spec(REPO / "samples" / "gcp-cloudrun" / "deployment.yaml")
        target = CloudRunTarget(project, log=lambda _: None)
        wanted = target.service(spec, BASE_IMAGE)
        wanted.template.containers[0].command = ["sh", "-c", "exec python3 -m http.server $PORT"]
        wanted.template.containers[0].startup_probe.http_get.path = "/"
        target.client.services.create_service(
            parent=target.parent(spec), service=wanted, service_id=target.service_id(spec)
        ).result(timeout=120)

        def fresh_poll():
            assert CloudRunTarget(project, log=lambda _: None).status(spec).state == "running"

        def reused_poll():
            assert target.status(spec).state == "running"

        fresh_poll()
        stand_in.clear_requests()
        fresh = timed(fresh_poll, ROUNDS)
        reads = len(stand_in.requests) / ROUNDS
        reused = timed(reused_poll, ROUNDS)
        importing = [sys.executable, "-c", "from google.cloud import run_v2"]
        subprocess_start = timed(lambda: subprocess.run(importing, check=True), 10)

    print(f"Cloud Run status poll, {ROUNDS} rounds against the local stand-in ({run_v2.__name__} on REST):")
    print(f"  fresh target + client per poll : {milliseconds(fresh)}  ({reads:.1f} API requests per poll)")
    print(f"  reused client                  : {milliseconds(reused)}")
    print("  REST API between reads         : cached for 5 s, so at most one read per project per 5 s")
    print(f"  for scale, a subprocess importing the client : {milliseconds(subprocess_start)}")


if __name__ == "__main__":
    main()
