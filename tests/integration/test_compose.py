"""The scale-out definition stays valid: `docker compose config` on docker-compose.yml."""

import subprocess

from tests.helpers import REPO


def test_docker_compose_config_passes():
    result = subprocess.run(["bash", str(REPO / "scripts" / "check-compose.sh")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "docker-compose.yml: valid" in result.stdout
