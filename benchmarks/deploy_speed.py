"""Deploy speed on this machine, printed beside the raw engine cycle for the same app (run: make benchmark).

(a) unchanged redeploy after /stop: /start -> running with the build skipped by its build key,
    against ``docker build && docker push && docker run`` of the same context, until it answers;
(b) one-file code change: /start -> running, against the same by hand after the same change;
(c) first deploy of a project with a pip layer (a few small PyPI packages), both sides cold (the
    engine holds the base image only: no layer of an earlier build, ours or the raw one's):
    /start -> running, against a plain ``docker build`` + ``docker run`` of the Dockerfile
    ``cloud-deploy render`` prints for it;
plus the DAG files' parse times. Medians of BENCH_ROUNDS (default 3); targets in the last column.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PIP_PACKAGES, REPO, Stack, build_environment, free_port, built_images, raw_cycle, registry, remove_images,
)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
USER = "bench"
TARGETS = {"unchanged": 2.5, "changed": 3.0, "first": 1.2}  # the fast-pipeline issue's ceilings


def product(stack: Stack, registry_host: str) -> dict[str, list[float]]:
    hello = stack.project(USER, f"hello-{int(time.time())}")
    stack.deploy(hello)  # the first build of this app, and a warm stack
    stack.stop(hello)
    times: dict[str, list[float]] = {"unchanged": [], "changed": [], "first": []}
    for _ in range(ROUNDS):
        times["unchanged"].append(stack.deploy(hello))
        stack.stop(hello)
    for _ in range(ROUNDS):
        hello.touch_code()
        times["changed"].append(stack.deploy(hello))
        stack.stop(hello)
    for number in range(ROUNDS):
        remove_images(*built_images())  # nothing but the base image in the engine
        pip = stack.project(USER, f"pip-{int(time.time())}-{number}", pip=PIP_PACKAGES)
        times["first"].append(stack.deploy(pip))
        stack.stop(pip)
    remove_images(*built_images())
    return times


def by_hand(stack: Stack, registry_host: str) -> dict[str, list[float]]:
    hello = stack.project(USER, f"by-hand-{int(time.time())}")
    image = f"{registry_host}/bench/by-hand"
    port = free_port()
    raw_cycle(hello.folder, f"{image}:warm", port, push=True)
    times: dict[str, list[float]] = {"unchanged": [], "changed": [], "first": []}
    for _ in range(ROUNDS):
        times["unchanged"].append(raw_cycle(hello.folder, f"{image}:warm", port, push=True))
    for number in range(ROUNDS):
        hello.touch_code()
        times["changed"].append(raw_cycle(hello.folder, f"{image}:change{number}", port, push=True))
    pip = stack.project(USER, f"by-hand-pip-{int(time.time())}", pip=PIP_PACKAGES)
    for number in range(ROUNDS):
        times["first"].append(raw_cycle(pip.folder, f"bench/by-hand-pip:{number}", port, push=False, no_cache=True))
        remove_images(f"bench/by-hand-pip:{number}")  # and its intermediate layers: the next round is cold too
    remove_images(f"{image}:warm", *(f"{image}:change{n}" for n in range(ROUNDS)))
    return times


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
    build_environment()
    work = Path(tempfile.mkdtemp(prefix="cloud-deploy-bench-"))
    with registry(work) as registry_host:
        with Stack(work / "stack", registry_host) as stack:
            ours = product(stack, registry_host)
        raw = by_hand(stack, registry_host)  # the stack is down: the engine has the machine to itself

    med = statistics.median
    rows = [
        ("unchanged", "(a) unchanged redeploy after /stop", "docker build+push+run, unchanged"),
        ("changed", "(b) one-file code change", "docker build+push+run after the change"),
        ("first", "(c) first deploy, pip layer (cold)", "docker build + run, base image only"),
    ]
    print(f"cloud-deploy deploy speed, medians of {ROUNDS} (seconds until the service answers)")
    print(f"  {'case':38} {'product':>8} {'raw':>7} {'ratio':>6}  {'target':>6}  raw work")
    for key, label, raw_label in rows:
        ratio = med(ours[key]) / med(raw[key])
        verdict = "ok" if ratio <= TARGETS[key] else "OVER"
        print(f"  {label:38} {med(ours[key]):8.2f} {med(raw[key]):7.2f} {ratio:6.2f}  <={TARGETS[key]:<4} {verdict:4}"
              f"  {raw_label}")
        print(f"      product runs {[round(x, 2) for x in ours[key]]}   raw runs {[round(x, 2) for x in raw[key]]}")
    for name, seconds in dag_parse_times().items():
        print(f"  dags/{name}.py parse time (after `import airflow.sdk`)  {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
