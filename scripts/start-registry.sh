#!/usr/bin/env bash
# Start Debian's docker-registry in the background on 127.0.0.1 (delete on; no auth unless an
# htpasswd file is given, as ECR's basic auth is stood in for in tests).
# Usage: scripts/start-registry.sh [PORT=5000] [DATA_DIR=new temp dir] [HTPASSWD_FILE]
set -euo pipefail
port=${1:-5000}
data=${2:-}
htpasswd=${3:-}
url=http://127.0.0.1:$port/v2/
up() { case "$(curl --noproxy '*' -s -o /dev/null -w '%{http_code}' "$url")" in 200|401) return 0;; *) return 1;; esac; }
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
if [ -n "$htpasswd" ]; then
  printf 'auth:\n  htpasswd: {realm: cloud-deploy-test, path: %s}\n' "$htpasswd" >>"$data/config.yml"
fi
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
