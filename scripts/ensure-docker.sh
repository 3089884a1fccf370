#!/usr/bin/env bash
# Make a Docker engine answer: install docker.io if needed, start `dockerd --ip 127.0.0.1` (no systemd). Usage: scripts/ensure-docker.sh
set -euo pipefail
docker info >/dev/null 2>&1 && exit 0
if ! command -v dockerd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi
log_dir=${CLOUD_DEPLOY_STATE_DIR:-/var/log}
mkdir -p "$log_dir"
log=$log_dir/dockerd.log
# the package's init script may already have started one; start ours only if none runs
if ! pidof dockerd >/dev/null 2>&1; then
  nohup dockerd --ip 127.0.0.1 >>"$log" 2>&1 </dev/null &
fi
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then echo "docker engine up"; exit 0; fi
  sleep 1
  pidof dockerd >/dev/null 2>&1 || break
done
echo "dockerd did not come up (exited, or no answer within 60 s); last lines of $log:" >&2
tail -n 40 "$log" >&2 || true
exit 1
