"""TANGO's manager at scale: 50 concurrent pollers over 200 known projects (run: make benchmark).

The embedded stack deploys BENCH_PROJECTS (200) copies of samples/hello through ``/start``, stops
all but BENCH_RUNNING (20) of them, then measures against the gateway on this machine:

- ``/status_request`` from 50 pollers, each at BENCH_POLL_HZ (20, so 1,000 requests/s in all), over
  every known project: requests/s served, p50 / p99 latency (targets: >= 1,000/s, p99 <= 20 ms);
- the same pollers without pauses: the most the gateway answers per second;
- the raw work: the same load generator against a bare HTTP server answering a constant word, so
  the gateway's latency is also printed as a ratio of the load generator's own;
- while the pollers run, how far the answers lag the metadata database: a running project's deploy
  run is marked failed and back (as the UI's "mark as" does) and the first answer showing each
  change is timed (target: <= 1 s);
- ``/stop`` of the running projects, all at once: each answer's latency (target: p99 <= 1 s), then
  every one ``stopped`` with nothing of theirs left on the engine.

    BENCH_PROJECTS=200 BENCH_RUNNING=20 python benchmarks/status_load.py
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Project, Stack, build_environment, free_port, registry  # noqa: E402

POLLERS = 50
TARGET_RATE, TARGET_P99_MS, TARGET_LAG_S, TARGET_STOP_P99_S = 1000, 20.0, 1.0, 1.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _poll(base: str, paths: list[str], seconds: float, hz: float | None) -> tuple[int, list[float], int]:
    """POLLERS keep-alive clients for ``seconds``, each at ``hz`` (None: as fast as answers come)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=POLLERS)
    async with aiohttp.ClientSession(base, connector=connector) as session:

        async def poller() -> None:
            nonlocal errors
            due = time.perf_counter() + random.random() / hz if hz else 0.0
            while time.perf_counter() < deadline:
                if hz:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    due = max(due + 1 / hz, time.perf_counter())
                started = time.perf_counter()
                async with session.get(random.choice(paths)) as answer:
                    await answer.read()
                    errors += answer.status != 200
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(poller() for _ in range(POLLERS)))
    return len(latencies), latencies, errors


def poll(base: str, paths: list[str], seconds: float, hz: float | None) -> dict[str, float]:
    started = time.perf_counter()
    count, latencies, errors = asyncio.run(_poll(base, paths, seconds, hz))
    wall = time.perf_counter() - started
    return {"rate": count / wall, "p50": percentile(latencies, 0.5) * 1000, "p99": percentile(latencies, 0.99) * 1000,
            "errors": errors}


class BareServer:
    """The raw work of an answer: an HTTP/1.1 keep-alive server that replies ``running`` to every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, "127.0.0.1", self.port), self.loop).result()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 7\r\n\r\nrunning"
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()  # the client closed its keep-alive connection


def deploy_all(stack: Stack, projects: list[Project], batch: int = 20) -> None:
    for offset in range(0, len(projects), batch):
        chunk = projects[offset:offset + batch]
        with ThreadPoolExecutor(max_workers=len(chunk)) as pool:
            list(pool.map(stack.start, chunk))
            list(pool.map(lambda project: stack.wait_running(project, timeout=900, poll=0.5), chunk))


def stop_all(stack: Stack, projects: list[Project], at_once: int = 20) -> list[float]:
    """``/stop`` of ``at_once`` projects at a time: each answer's seconds; then wait until each is stopped."""
    def timed(project: Project) -> float:
        started = time.perf_counter()
        answer = stack.client.get("/stop", params=project.params, timeout=30)
        seconds = time.perf_counter() - started
        if answer.status_code != 200 or answer.text not in ("stopping", "finished"):
            raise RuntimeError(f"/stop {project.params}: {answer.status_code} {answer.text}")
        return seconds

    with ThreadPoolExecutor(max_workers=min(at_once, len(projects))) as pool:
        seconds = list(pool.map(timed, projects))
        list(pool.map(lambda project: stack.stop(project), projects))  # already stopping: waits until stopped
    return seconds


def lag_probe(state: str, gateway: str, user_id: str, project_id: str, changes: int, results) -> None:
    """Mark the project's finished deploy run failed, then successful again, timing until each shows.

    Runs in its own process, as another Airflow process would write: Airflow's imports would otherwise
    slow the load generator in this one."""
    os.environ["AIRFLOW_HOME"] = state
    import httpx
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    params = {"user_id": user_id, "project_id": project_id}
    with httpx.Client(base_url=gateway, timeout=10) as client:
        for number in range(changes):
            state_to, word = (DagRunState.FAILED, "failed") if number % 2 == 0 else (DagRunState.SUCCESS, "running")
            with create_session() as session:
                run = session.scalars(select(DagRun).where(DagRun.dag_id == "cloud_deploy", DagRun.run_id.startswith(
                    f"deploy~{user_id}~{project_id}~")).order_by(DagRun.id.desc()).limit(1)).one()
                run.set_state(state_to)
            changed = time.perf_counter()
            while client.get("/status_request", params=params).text != word:
                if time.perf_counter() - changed > 10:
                    raise RuntimeError(f"{params} never showed {word}")
                time.sleep(0.005)
            results.append(time.perf_counter() - changed)
            time.sleep(0.5)


def main() -> None:
    os.environ.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    count = int(os.environ.get("BENCH_PROJECTS", "200"))
    running = int(os.environ.get("BENCH_RUNNING", "20"))
    hz = float(os.environ.get("BENCH_POLL_HZ", "20"))
    seconds = float(os.environ.get("BENCH_SECONDS", "20"))
    build_environment()
    work = Path(tempfile.mkdtemp(prefix="cloud-deploy-bench-status-"))
    with registry(work) as registry_host, Stack(work / "stack", registry_host) as stack:
        projects = [stack.project("load", f"p{n:03d}") for n in range(count)]
        started = time.perf_counter()
        deploy_all(stack, projects)
        deployed = time.perf_counter() - started
        stop_all(stack, projects[running:])
        live = projects[:running]
        paths = [f"/status_request?user_id={p.user_id}&project_id={p.project_id}" for p in projects]

        bare = BareServer()
        raw = poll(f"http://127.0.0.1:{bare.port}", paths, seconds / 2, hz)
        context = multiprocessing.get_context("spawn")
        lags = context.Manager().list()
        probe = context.Process(target=lag_probe, args=(str(stack.state / "airflow"), stack.gateway,
                                                        live[0].user_id, live[0].project_id, 10, lags))
        probe.start()
        paced = poll(stack.gateway, paths, seconds, hz)
        probe.join()
        lags = list(lags)
        flat_out = poll(stack.gateway, paths, seconds / 2, None)
        stops = stop_all(stack, live)
        left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.cloud-deploy.user=load"],
                              capture_output=True, text=True, check=True).stdout.split()

    print(f"cloud-deploy: /status_request from {POLLERS} pollers over {count} known projects "
          f"({running} running), {os.cpu_count()} cores; {count} deployed in {deployed:.0f} s")
    print(f"  {'':34} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for label, row in (("bare server (the raw work)", raw), (f"gateway, {hz:.0f} Hz per poller", paced),
                       ("gateway, as fast as it answers", flat_out)):
        print(f"  {label:34} {row['rate']:7.0f} {row['p50']:7.2f} {row['p99']:7.2f} {row['errors']:6d}")
    verdict = "ok" if paced["rate"] >= 0.97 * TARGET_RATE * hz / 20 and paced["p99"] <= TARGET_P99_MS else "OVER"
    print(f"  paced: {paced['rate']:.0f} req/s (target >= {TARGET_RATE}), p99 {paced['p99']:.1f} ms (target <= "
          f"{TARGET_P99_MS:.0f}), {paced['p99'] / raw['p99']:.1f}x the bare server's p99  {verdict}")
    print(f"  lag behind the database: max {max(lags):.3f} s, median {statistics.median(lags):.3f} s over "
          f"{len(lags)} changes (target <= {TARGET_LAG_S:.0f} s)  {'ok' if max(lags) <= TARGET_LAG_S else 'OVER'}")
    print(f"  /stop of {len(stops)} at once: p99 {percentile(stops, 0.99):.3f} s, max {max(stops):.3f} s (target p99 "
          f"<= {TARGET_STOP_P99_S:.0f} s)  {'ok' if percentile(stops, 0.99) <= TARGET_STOP_P99_S else 'OVER'}; "
          f"containers left: {len(left)}")
    if left or paced["errors"] or flat_out["errors"]:
        raise SystemExit("errors in the answers, or containers left behind")


if __name__ == "__main__":
    main()
