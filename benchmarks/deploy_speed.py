"""Deploy speed on this machine, printed as figures (run: make benchmark).

(a) /start -> running for an unchanged spec (build skipped by its build key),
(b) /start -> running after a one-file code change,
(c) the same work by hand: docker build && docker push && docker run, until the service answers,
and the ratios; plus the DAG files' parse times. Both paths push to the same local registry.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(url)


def touch_code(folder: Path, round_number: int) -> None:
    server = folder / "server.py"
    server.write_text(server.read_text() + f"\n# benchmark change {round_number} {time.time()}\n")


class Stack:
    def __init__(self, state: Path, registry_port: int):
        self.state = state
        self.gateway = f"http://127.0.0.1:{free_port()}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_PORT": str(free_port()),
            "GATEWAY_PORT": self.gateway.rsplit(":", 1)[1],
            "VENV": str(Path(sys.executable).parent.parent),
            "CLOUD_DEPLOY_SHARED_ROOT": str(state / "shared"),
            "CLOUD_DEPLOY_REGISTRY_CONN_ID": "bench_registry",
            "AIRFLOW_CONN_BENCH_REGISTRY": json.dumps({"conn_type": "docker", "host": f"127.0.0.1:{registry_port}"}),
        }

    def __enter__(self):
        subprocess.run(["bash", str(REPO / "scripts/stack.sh"), "start", str(self.state)], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        subprocess.run(["bash", str(REPO / "scripts/stack.sh"), "stop", str(self.state)], env=self.env, check=False)

    def deploy(self, params: dict) -> float:
        started = time.perf_counter()
        answer = httpx.get(f"{self.gateway}/start", params=params, timeout=60)
        answer.raise_for_status()
        while True:
            word = httpx.get(f"{self.gateway}/status_request", params=params, timeout=30).text
            if word == "running":
                return time.perf_counter() - started
            if word == "failed":
                raise RuntimeError(httpx.get(f"{self.gateway}/deployments/{params['user_id']}/{params['project_id']}").text)
            time.sleep(0.1)

    def stop(self, params: dict) -> None:
        httpx.get(f"{self.gateway}/stop", params=params, timeout=300).raise_for_status()


def by_hand(folder: Path, registry: str, port: int, rounds: int) -> tuple[list[float], list[float]]:
    """docker build && docker push && docker run of the same Dockerfile and context."""
    sys.path.insert(0, str(REPO / "plugins"))
    from cloud_deploy_provider.build import render_build
    from cloud_deploy_provider.catalog import load_catalog
    from cloud_deploy_provider.settings import BuildSettings
    from cloud_deploy_provider.spec import load_spec

    def once(tag: str) -> float:
        settings = BuildSettings.from_env()
        context = Path(tempfile.mkdtemp())
        plan = render_build(load_spec(folder / "deployment.yaml"), folder, settings, load_catalog(settings.catalog_path))
        tarfile.open(fileobj=io.BytesIO(plan.context_tar())).extractall(context)
        image = f"{registry}/bench/by-hand:{tag}"
        started = time.perf_counter()
        subprocess.run(["docker", "build", "-q", "--network", "host", "-t", image, str(context)], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["docker", "push", "-q", image], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["docker", "rm", "-f", "bench-by-hand"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["docker", "run", "-d", "--name", "bench-by-hand", "-p", f"127.0.0.1:{port}:8080",
                        "-e", "PORT=8080", "-e", "MODEL_FILE=model.json", image], check=True, stdout=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{port}/healthz")
        elapsed = time.perf_counter() - started
        shutil.rmtree(context)
        return elapsed

    once("warm")
    unchanged = [once("warm") for _ in range(rounds)]
    changed = []
    for number in range(rounds):
        touch_code(folder, number)
        changed.append(once(f"change{number}"))
    subprocess.run(["docker", "rm", "-f", "bench-by-hand"], stdout=subprocess.DEVNULL)
    return unchanged, changed


def dag_parse_times() -> dict[str, float]:
    times = {}
    for name in ("cloud_deploy", "cloud_undeploy"):
        probe = (
            "import time, airflow.sdk, importlib.util; t = time.perf_counter();"
            f"s = importlib.util.spec_from_file_location('d', {str(REPO / 'dags' / name)!r} + '.py');"
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(time.perf_counter() - t)"
        )
        runs = [float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
                for _ in range(3)]
        times[name] = min(runs)
    return times


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cloud-deploy-bench-"))
    registry_port = free_port()
    subprocess.run(["bash", str(REPO / "scripts/start-registry.sh"), str(registry_port), str(work / "registry")],
                   check=True, stdout=subprocess.DEVNULL)
    registry = f"127.0.0.1:{registry_port}"
    os.environ.setdefault("CLOUD_DEPLOY_BASE_IMAGE_CATALOG", str(REPO / "samples/catalog.local.yaml"))
    os.environ.setdefault("CLOUD_DEPLOY_BUILD_NETWORK", "host")
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        os.environ.setdefault("CLOUD_DEPLOY_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    try:
        params = {"user_id": "bench", "project_id": f"hello-{int(time.time())}"}
        with Stack(work / "stack", registry_port) as stack:
            folder = work / "stack/shared/common" / params["user_id"] / params["project_id"]
            shutil.copytree(REPO / "samples/hello", folder)
            spec = folder / "deployment.yaml"
            spec.write_text(spec.read_text().replace("service_host_port: 18080", f"service_host_port: {free_port()}"))
            first = stack.deploy(params)
            stack.stop(params)
            unchanged, changed = [], []
            for _ in range(ROUNDS):
                unchanged.append(stack.deploy(params))
                stack.stop(params)
            for number in range(ROUNDS):
                touch_code(folder, number)
                changed.append(stack.deploy(params))
                stack.stop(params)
        hand_unchanged, hand_changed = by_hand(folder, registry, free_port(), ROUNDS)
    finally:
        pid = work / "registry/registry.pid"
        if pid.exists():
            subprocess.run(["kill", pid.read_text().strip()], check=False)

    med = statistics.median
    print(f"cloud-deploy benchmark, {ROUNDS} rounds each, median seconds (build+push+run until HTTP answers)")
    print(f"  first deploy (cold build key)              {first:7.2f}")
    print(f"  (a) /start -> running, unchanged spec       {med(unchanged):7.2f}   runs {[round(x, 2) for x in unchanged]}")
    print(f"  (b) /start -> running, one-file change      {med(changed):7.2f}   runs {[round(x, 2) for x in changed]}")
    print(f"  (c) docker build+push+run, unchanged         {med(hand_unchanged):7.2f}   runs {[round(x, 2) for x in hand_unchanged]}")
    print(f"  (c) docker build+push+run, one-file change   {med(hand_changed):7.2f}   runs {[round(x, 2) for x in hand_changed]}")
    print(f"  ratio (a)/(c unchanged) {med(unchanged) / med(hand_unchanged):.2f}   ratio (b)/(c changed) {med(changed) / med(hand_changed):.2f}")
    for name, seconds in dag_parse_times().items():
        print(f"  dags/{name}.py parse time (after `import airflow.sdk`)  {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
