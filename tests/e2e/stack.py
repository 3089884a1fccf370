"""The embedded stack (scripts/stack.sh: Airflow standalone and the 8890-style gateway) as the e2e tests drive it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers import REPO, free_port


class EmbeddedStack:
    def __init__(self, state: Path, **environment: str):
        self.state = state
        self.shared = state / "shared"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_PORT": str(free_port()),
            "GATEWAY_PORT": str(free_port()),
            "VENV": str(Path(sys.executable).parent.parent),
            "CLOUD_DEPLOY_SHARED_ROOT": str(self.shared),
            **environment,
        }
        self.gateway_url = f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"
        self.airflow_url = f"http://127.0.0.1:{self.env['AIRFLOW_PORT']}"
        self.gateway = httpx.Client(base_url=self.gateway_url, timeout=30)

    def start(self) -> EmbeddedStack:
        subprocess.run(["bash", str(REPO / "scripts" / "stack.sh"), "start", str(self.state)], env=self.env, check=True,
                       timeout=600)
        return self

    def stop(self) -> None:
        subprocess.run(["bash", str(REPO / "scripts" / "stack.sh"), "stop", str(self.state)], env=self.env, check=False)

    def kill(self) -> None:
        """SIGKILL to every process of the stack, task processes included, as a power cut would."""
        for name in ("gateway", "airflow"):
            pid_file = self.state / f"{name}.pid"
            if pid_file.exists():
                try:
                    os.killpg(int(pid_file.read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in self._processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while self._processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not self._processes(), "processes of the stack survived SIGKILL"

    def _processes(self) -> list[int]:
        """Processes whose environment says they belong to this stack (its AIRFLOW_HOME or shared root)."""
        marker = f"CLOUD_DEPLOY_SHARED_ROOT={self.shared}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environment = (entry / "environ").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().split()[2]
            except OSError:
                continue
            if marker in environment and state != "Z":
                found.append(int(entry.name))
        return found

    def project(self, user_id: str, project_id: str, sample: str = "hello") -> int:
        """A copy of ``sample`` in the shared root (:meth:`folder`) with its own host port; returns the port."""
        folder = self.folder(user_id, project_id)
        shutil.copytree(REPO / "samples" / sample, folder)
        port = free_port()
        spec = folder / "deployment.yaml"
        spec.write_text(spec.read_text().replace("service_host_port: 18080", f"service_host_port: {port}"))
        return port

    def folder(self, user_id: str, project_id: str) -> Path:
        return self.shared / "common" / user_id / project_id

    def word(self, params: dict) -> str:
        return self.gateway.get("/status_request", params=params).text

    def detail(self, params: dict) -> dict:
        return self.gateway.get(f"/deployments/{params['user_id']}/{params['project_id']}").json()

    def wait_for(self, params: dict, final: tuple[str, ...], seconds: float = 300) -> list[str]:
        """The status words seen, in order, until one of ``final``."""
        seen: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            word = self.word(params)
            if not seen or seen[-1] != word:
                seen.append(word)
            if word in final:
                break
            time.sleep(0.25)
        return seen

    def stopped(self, params: dict, seconds: float = 300) -> list[str]:
        """``/stop`` (answered at once: ``stopping``, or ``finished`` when nothing was left), then the status words
        seen until ``stopped``; fails on any other end."""
        answer = self.gateway.get("/stop", params=params)
        assert answer.status_code == 200 and answer.text in ("stopping", "finished"), (answer.status_code, answer.text)
        seen = self.wait_for(params, ("stopped", "failed"), seconds)
        assert seen[-1] == "stopped", (seen, self.detail(params))
        assert set(seen) <= {"stopping", "stopped", "running", "failed"}, seen
        return seen

    def query(self, sql: str, *parameters) -> list[tuple]:
        """A read of the stack's metadata database (SQLite), as an operator would look at it."""
        with sqlite3.connect(self.state / "airflow" / "airflow.db", timeout=30) as db:
            return db.execute(sql, parameters).fetchall()

    def deploy_task(self, params: dict) -> dict | None:
        """The latest deploy run's ``deploy`` task instance: state, try number, seconds since its last heartbeat."""
        rows = self.query(
            "select ti.state, ti.try_number, (julianday('now') - julianday(ti.last_heartbeat_at)) * 86400 "
            "from task_instance ti join dag_run r on r.run_id = ti.run_id and r.dag_id = ti.dag_id "
            "where ti.dag_id = 'cloud_deploy' and ti.task_id = 'deploy' and r.run_id like ? order by r.id desc limit 1",
            f"deploy~{params['user_id']}~{params['project_id']}~%",
        )
        return {"state": rows[0][0], "try_number": rows[0][1], "silent_for": rows[0][2]} if rows else None

    def deploy_runs(self, params: dict) -> int:
        return self.query("select count(*) from dag_run where dag_id = 'cloud_deploy' and run_id like ?",
                          f"deploy~{params['user_id']}~{params['project_id']}~%")[0][0]

    def airflow_token(self) -> str:
        passwords = self.state / "airflow" / "simple_auth_manager_passwords.json.generated"
        password = json.loads(passwords.read_text())["admin"]
        return httpx.post(f"{self.airflow_url}/auth/token", json={"username": "admin", "password": password}).json()[
            "access_token"]
