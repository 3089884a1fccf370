#!/usr/bin/env bash
# The whole test suite: unit, integration (real Docker engine, registry, Airflow DB) and end-to-end.
#   scripts/test.sh [pytest args]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/setup.sh"
# The browser tests of the Deployments pages drive Debian's chromium through its chromedriver.
if ! command -v chromedriver >/dev/null 2>&1 || [ ! -x /usr/lib/chromium/chromium ]; then
  echo "installing chromium and chromium-driver for the browser tests"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
fi
cd "$repo"
exec "${VENV:-$repo/.venv}/bin/pytest" -ra "$@"
