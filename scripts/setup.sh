#!/usr/bin/env bash
# Install what the product needs on a fresh Debian 12 machine (as root), idempotently:
# system packages, a running Docker engine, the local base image, and the venv with this package.
#   scripts/setup.sh   (env: VENV=.venv)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}

missing=()
for pair in curl:curl debootstrap:debootstrap docker-registry:docker-registry dockerd:docker.io; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash "$repo/scripts/ensure-docker.sh"
bash "$repo/scripts/build-base-image.sh" >/dev/null
echo "base image ready"

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -e "$repo[test,scale-out]"
echo "venv ready: $venv"
