"""Many projects at once: N distinct projects started together through /start (run: make benchmark).

Each is a copy of samples/hello with its own port. The wall time from the first /start until every
one is ``running`` and answers is printed beside the ideal, N x the raw cycle (docker build + push +
run of one new project, until it answers) / the machine's cores, and the ratio (target: <= 2).
Then all are stopped at once, and nothing of theirs may be left on the engine. Both shapes run, side
by side: the embedded stack (Airflow standalone on SQLite, LocalExecutor) and the scale-out shape
(scripts/stack.sh --scale-out: PostgreSQL, Redis, CeleryExecutor with two workers, three gateway processes).

    BENCH_PROJECTS=20 python benchmarks/concurrent_deploys.py [--shapes embedded scale-out] [--parallelism 4 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stack, build_environment, free_port, raw_cycle, registry, remove_images, wait_http  # noqa: E402

TARGET_RATIO = 2.0


def raw_seconds(stack: Stack, registry_host: str, rounds: int = 5) -> float:
    """One new project by hand: docker build (its layers cached, as ours are) + push + run, until it answers."""
    project = stack.project("bench", f"raw-{int(time.time())}")
    port = free_port()
    raw_cycle(project.folder, f"{registry_host}/bench/raw:warm", port, push=True)
    times = [raw_cycle(project.folder, f"{registry_host}/bench/raw-{n}:v1", port, push=True) for n in range(rounds)]
    remove_images(f"{registry_host}/bench/raw:warm", *(f"{registry_host}/bench/raw-{n}:v1" for n in range(rounds)))
    return statistics.median(times)


def all_at_once(stack: Stack, count: int, label: str) -> float:
    projects = [stack.project("bench", f"{label}-{n:02d}") for n in range(count)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(stack.start, projects))
        # each project polled twice a second, as a status page would: 20 pollers at 20 Hz would
        # themselves take a core of the two
        list(pool.map(lambda project: stack.wait_running(project, timeout=900, poll=0.5), projects))
        list(pool.map(lambda project: wait_http(project.url + "/healthz", timeout=60), projects))
    wall = time.perf_counter() - started
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(stack.stop, projects))
    left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.cloud-deploy.user=bench"],
                          capture_output=True, text=True, check=True).stdout.split()
    if left:
        raise SystemExit(f"/stop left {len(left)} container(s) behind")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=int(os.environ.get("BENCH_PROJECTS", "20")))
    parser.add_argument("--parallelism", type=int, nargs="*", default=[None],
                        help="[core] parallelism values of the embedded stack to compare (default: the stack's own)")
    parser.add_argument("--shapes", nargs="*", default=["embedded", "scale-out"], choices=["embedded", "scale-out"])
    arguments = parser.parse_args()
    build_environment()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="cloud-deploy-bench-concurrent-"))
    rows = []
    with registry(work) as registry_host:
        runs = [("embedded", parallelism) for parallelism in arguments.parallelism if "embedded" in arguments.shapes]
        runs += [("scale-out", None)] if "scale-out" in arguments.shapes else []
        for shape, parallelism in runs:
            settings = {"AIRFLOW__CORE__PARALLELISM": str(parallelism)} if parallelism else {}
            if shape == "scale-out":
                settings = {"SCALE_OUT": "1", "POSTGRES_PORT": str(free_port()), "REDIS_PORT": str(free_port())}
            label = f"{shape}-{parallelism or 'default'}"
            with Stack(work / f"stack-{label}", registry_host, **settings) as stack:
                warm = stack.project("bench", f"warm-up-{label}")
                stack.deploy(warm)  # the app's layers built once, as on any installation that deployed before
                stack.stop(warm)
                raw = raw_seconds(stack, registry_host)
                wall = all_at_once(stack, arguments.projects, f"c{len(rows)}")
            rows.append((shape, parallelism, wall, raw))
    print(f"cloud-deploy: {arguments.projects} distinct projects started at once through /start, {cores} cores")
    print(f"  {'shape':10} {'parallelism':12} {'wall s':>7} {'raw cycle s':>12} {'ideal s':>8} {'ratio':>6}  "
          f"target <= {TARGET_RATIO}")
    for shape, parallelism, wall, raw in rows:
        ideal = arguments.projects * raw / cores
        verdict = "ok" if wall / ideal <= TARGET_RATIO else "OVER"
        print(f"  {shape:10} {str(parallelism or 'stack default'):12} {wall:7.2f} {raw:12.2f} {ideal:8.2f} "
              f"{wall / ideal:6.2f}  {verdict}")


if __name__ == "__main__":
    main()
