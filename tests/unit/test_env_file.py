"""scripts/env-file.py: how scripts/stack.sh turns TANGO's .env into the stack's environment, without sourcing it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO

SCRIPT = REPO / "scripts" / "env-file.py"
DOTENV = """\
# TANGO cloud deploy
CS_ENDPOINT=https://api.example.ai
CS_ACCESS_KEY = 'AKIA single quoted'
export CS_SECRET_KEY="s3cr3t with spaces # not a comment"
GCP_REGION=asia-northeast3   # a comment
AWS_SECRET_ACCESS_KEY=$(touch {marker}); `touch {marker}`
EMPTY=
BARE_NAME
GCP_PROJECT_ID=${{CS_ENDPOINT}}
"""


def evaluated(dotenv: str, tmp_path, names: list[str], **environment: str) -> subprocess.CompletedProcess:
    """What the variables are after stack.sh's lines: ``env_exports=$(env-file.py .env); eval "$env_exports"``."""
    path = tmp_path / ".env"
    path.write_text(dotenv)
    show = "; ".join(f'printf "%s=[%s]\\n" {name} "${{{name}-unset}}"' for name in names)
    script = f'set -euo pipefail; env_exports=$("{sys.executable}" "{SCRIPT}" "{path}"); eval "$env_exports"; {show}'
    env = {"PATH": os.environ["PATH"], **environment}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)


def test_values_are_data_quotes_and_comments_as_compose_reads_them(tmp_path):
    marker = tmp_path / "executed"
    names = ["CS_ENDPOINT", "CS_ACCESS_KEY", "CS_SECRET_KEY", "GCP_REGION", "AWS_SECRET_ACCESS_KEY", "EMPTY",
             "BARE_NAME", "GCP_PROJECT_ID"]
    result = evaluated(DOTENV.format(marker=marker), tmp_path, names)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "CS_ENDPOINT=[https://api.example.ai]",
        "CS_ACCESS_KEY=[AKIA single quoted]",
        "CS_SECRET_KEY=[s3cr3t with spaces # not a comment]",
        "GCP_REGION=[asia-northeast3]",
        f"AWS_SECRET_ACCESS_KEY=[$(touch {marker}); `touch {marker}`]",
        "EMPTY=[]",
        "BARE_NAME=[unset]",
        "GCP_PROJECT_ID=[https://api.example.ai]",
    ]
    assert not marker.exists(), "nothing in the file runs as shell"


def test_the_callers_environment_wins(tmp_path):
    result = evaluated("GCP_REGION=asia-northeast3\n", tmp_path, ["GCP_REGION"], GCP_REGION="us-central1")
    assert result.stdout == "GCP_REGION=[us-central1]\n"


def test_a_name_that_is_no_variable_name_stops_the_start(tmp_path):
    result = evaluated("CS_ENDPOINT=x\nrm;-rf=1\n", tmp_path, ["CS_ENDPOINT"])
    assert result.returncode != 0 and "'rm;-rf' is not a variable name" in result.stderr and not result.stdout
