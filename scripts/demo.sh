#!/usr/bin/env bash
# The product's main job on this machine: bring up Airflow + the TANGO gateway, deploy the bundled
# sample (samples/hello) through GET /start, wait for `running`, and call the deployed service.
#   scripts/demo.sh   (env: DEMO_DIR=.demo AIRFLOW_PORT=8080 GATEWAY_PORT=8890)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
state=${DEMO_DIR:-$repo/.demo}
export AIRFLOW_PORT=${AIRFLOW_PORT:-8080} GATEWAY_PORT=${GATEWAY_PORT:-8890}
export CLOUD_DEPLOY_SHARED_ROOT=${CLOUD_DEPLOY_SHARED_ROOT:-$state/shared}
gateway=http://127.0.0.1:$GATEWAY_PORT
user=demo project=hello

bash "$repo/scripts/setup.sh"
bash "$repo/scripts/stack.sh" start "$state"

folder=$CLOUD_DEPLOY_SHARED_ROOT/common/$user/$project
if [ "$(curl -s "$gateway/status_request?user_id=$user&project_id=$project")" = running ]; then
  echo "stopping the previous demo deployment"
  curl -fsS "$gateway/stop?user_id=$user&project_id=$project" >/dev/null
fi
rm -rf "$folder" && mkdir -p "$(dirname "$folder")" && cp -r "$repo/samples/hello" "$folder"
echo "copied samples/hello to $folder"

echo "GET /start -> $(curl -fsS "$gateway/start?user_id=$user&project_id=$project")"
last=""
for _ in $(seq 600); do
  status=$(curl -s "$gateway/status_request?user_id=$user&project_id=$project")
  [ "$status" != "$last" ] && echo "status: $status" && last=$status
  case $status in running|failed) break ;; esac
  sleep 0.5
done
detail=$(curl -s "$gateway/deployments/$user/$project")
if [ "$status" != running ]; then
  echo "deployment did not reach running: $detail" >&2
  exit 1
fi
url=$(printf '%s' "$detail" | python3 -c 'import json, sys; print(json.load(sys.stdin)["url"])')
echo "the service answers at $url:"
echo "  POST $url/predict {\"features\": [6.7, 3.0, 5.2, 2.3]}"
echo "  -> $(curl -fsS -X POST "$url/predict" -H 'Content-Type: application/json' -d '{"features": [6.7, 3.0, 5.2, 2.3]}')"
echo
echo "Airflow UI:    http://127.0.0.1:$AIRFLOW_PORT  (user admin, password in $state/airflow/simple_auth_manager_passwords.json.generated)"
echo "Deployments:   http://127.0.0.1:$AIRFLOW_PORT/plugin/deployments  (every deployment: status, URL, runs; deploy and stop)"
echo "TANGO API:     $gateway/docs"
echo "Stop it:       curl '$gateway/stop?user_id=$user&project_id=$project'   |   everything: make stop"
