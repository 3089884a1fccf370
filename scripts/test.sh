#!/usr/bin/env bash
# The whole test suite: unit, integration (real Docker engine, registry, Airflow DB) and end-to-end.
#   scripts/test.sh [pytest args]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/setup.sh"
cd "$repo"
exec "${VENV:-$repo/.venv}/bin/pytest" -ra "$@"
