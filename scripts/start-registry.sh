#!/usr/bin/env bash
# Start Debian's docker-registry in the background on 127.0.0.1 (no auth, delete on). Usage: scripts/start-registry.sh [PORT=5000] [DATA_DIR=new temp dir]
set -euo pipefail
port=${1:-5000}
data=${2:-}
url=http://127.0.0.1:$port/v2/
up() { [ "$(curl --noproxy '*' -s -o /dev/null -w '%{http_code}' "$url")" = 200 ]; }
if ! command -v docker-registry >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker-registry curl >/dev/null
fi
if up; then echo "registry up on 127.0.0.1:$port"; exit 0; fi
[ -n "$data" ] || data=$(mktemp -d)
mkdir -p "$data/storage"
data=$(cd "$data" && pwd)
cat >"$data/config.yml" <<CFG
version: 0.1
log: {level: info}
storage:
  filesystem: {rootdirectory: $data/storage}
  delete: {enabled: true}
http: {addr: "127.0.0.1:$port"}
CFG
nohup docker-registry serve "$data/config.yml" >"$data/registry.log" 2>&1 </dev/null &
echo $! >"$data/registry.pid"
for _ in $(seq 60); do
  if up; then echo "registry up on 127.0.0.1:$port"; exit 0; fi
  kill -0 "$(cat "$data/registry.pid")" 2>/dev/null || break
  sleep 0.5
done
echo "registry did not come up on 127.0.0.1:$port; last lines of $data/registry.log:" >&2
tail -n 20 "$data/registry.log" >&2 || true
exit 1
