"""How long Airflow takes to parse the generated scheduled DAGs with 10, 100 and 500 projects (run: make benchmark).

Each project has a schedule (a redeploy and two jobs, so 3 DAGs); as many projects again have no
schedule, which the generator skips after one read. Each figure is a fresh Python process building
Airflow's own ``DagBag`` for ``dags/cloud_scheduled.py``, as the dag-processor does per file, minus
the same process parsing a project-free folder; 3 rounds, median. Airflow's default parse timeout is
30 s per file (``[core] dagbag_import_timeout``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SIZES = [int(n) for n in os.environ.get("BENCH_PROJECTS", "10 100 500").split()]
PROBE = """
import json, os, sys, time
start = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "dags": len(bag.dag_ids), "errors": len(bag.import_errors)}))
"""
SCHEDULE = """
schedule:
  redeploy: "@daily"
  jobs:
    - {name: score, cron: "0 2 * * *", command: [python3, score.py], resources: {gpu: 1, gpu_type: t4}, retries: 2}
    - {name: report, cron: "30 6 * * 1", command: [python3, report.py], timeout_seconds: 600}
"""


def make_root(projects: int) -> Path:
    root = Path(tempfile.mkdtemp(prefix="bench-scheduled-"))
    sample = (REPO / "samples" / "hello" / "deployment.yaml").read_text()
    for index in range(projects * 2):
        folder = root / "common" / f"user{index % 50}" / f"project{index}"
        folder.mkdir(parents=True)
        (folder / "deployment.yaml").write_text(sample + (SCHEDULE if index % 2 == 0 else ""))
    return root


def parse(root: Path) -> dict:
    env = {**os.environ, "CLOUD_DEPLOY_SHARED_ROOT": str(root), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "dags" / "cloud_scheduled.py")],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_seconds(root: Path) -> tuple[float, dict]:
    runs = [parse(root) for _ in range(ROUNDS)]
    return statistics.median(run["seconds"] for run in runs), runs[-1]


def main() -> None:
    empty = make_root(0)
    try:
        baseline, _ = median_seconds(empty)
    finally:
        shutil.rmtree(empty)
    print(f"scheduled DAG file: Airflow + generator import with no project: {baseline:.2f} s (subtracted below)")
    for projects in SIZES:
        root = make_root(projects)
        try:
            seconds, last = median_seconds(root)
        finally:
            shutil.rmtree(root)
        extra = seconds - baseline
        cost = (f"{extra:.2f} s above the baseline ({extra / projects * 1000:.1f} ms per project)" if extra > 0.05
                else "no cost above the baseline's noise")
        print(f"  {projects:4d} scheduled projects (+{projects} without a schedule): {last['dags']} DAGs, "
              f"{last['errors']} import errors, parse {cost}, {seconds:.2f} s in all")


if __name__ == "__main__":
    main()
