#!/usr/bin/env bash
# Start or stop the embedded stack: Airflow standalone (api-server, scheduler, dag-processor,
# triggerer on SQLite) plus the TANGO gateway on its own port; or, with --scale-out, the scale-out
# shape: PostgreSQL and Redis (Debian's packages), the CeleryExecutor with api-server, scheduler,
# dag-processor, triggerer and two Celery workers as separate processes (each reporting its own host
# name), and the gateway with several worker processes.
#   scripts/stack.sh start STATE_DIR [--scale-out]   (env: AIRFLOW_PORT=8080 GATEWAY_PORT=8890 VENV=.venv;
#                                                     scale-out: POSTGRES_PORT=5433 REDIS_PORT=6380 GATEWAY_WORKERS=3
#                                                     CELERY_WORKERS=2 WORKER_CONCURRENCY=8)
#   scripts/stack.sh stop STATE_DIR
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
action=${1:?usage: stack.sh start|stop STATE_DIR [--scale-out]}
state=$(mkdir -p "${2:?usage: stack.sh start|stop STATE_DIR [--scale-out]}" && cd "$2" && pwd)
scale_out=${SCALE_OUT:-}
[ "${3:-}" = --scale-out ] && scale_out=1
venv=${VENV:-$repo/.venv}
airflow_port=${AIRFLOW_PORT:-8080}
gateway_port=${GATEWAY_PORT:-8890}
processes=(gateway airflow api-server scheduler dag-processor triggerer)
for n in $(seq "${CELERY_WORKERS:-2}"); do processes+=("worker-$n"); done

stop() {
  for name in "${processes[@]}"; do
    if [ -f "$state/$name.pid" ]; then
      kill -TERM -- "-$(cat "$state/$name.pid")" 2>/dev/null || true
      rm -f "$state/$name.pid"
    fi
  done
  if [ -d "$state/services" ]; then bash "$repo/scripts/scale-out-services.sh" stop "$state/services"; fi
}

if [ "$action" = stop ]; then stop; exit 0; fi

# TANGO's .env at the repository root, as its compose's `env_file: .env`: parsed, never sourced.
if [ -f "$repo/.env" ]; then
  env_exports=$("$venv/bin/python" "$repo/scripts/env-file.py" "$repo/.env")
  eval "$env_exports"
fi

export AIRFLOW_HOME=$state/airflow
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER=$repo/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$state/airflow/plugins
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
export AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=30
export AIRFLOW__API__PORT=$airflow_port
export AIRFLOW__API__BASE_URL=http://localhost:$airflow_port
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$airflow_port/execution/
export AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=1
# Low latency for an embedded deploy service (figures: ../shared/reference/airflow_latency.md, make benchmark).
# Airflow 3.3 has no mini scheduler: a finished task is seen on the scheduler loop's next pass, and a
# pass with nothing to do sleeps this long first. 1 s (the default) costs ~1 s at every task boundary;
# 0.1 s costs ~20 % of one core while idle.
export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=${AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME:-0.1}
# Concurrent task processes of the LocalExecutor. Standalone's 32 idle workers cost ~5 GB and pick a
# task up in ~160 ms; a few pick it up in ~17 ms. Chosen with benchmarks/concurrent_deploys.py.
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-4}
# A supervisor heartbeats at most this often; 1 s also ends the ~5 s a worker slot stays held after a
# task when the supervisor races the task's exit.
export AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1
# The execution API builds its versioned routes on first use (~5 s); the default 5 s client timeout
# turns that into a retry of the first task after a start.
export AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT=30
# A task whose process died is noticed within a minute, not five (the defaults). While the scheduler
# runs, a task silent for this long is failed and retried; supervisors heartbeat every second
# (min_heartbeat_interval above), so 20 s is 20 missed heartbeats. The gateway reports such a task
# as `unknown`, not `building`, also while no scheduler runs at all.
export AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=20
export AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL=5
# After a restart, tasks of the killed scheduler are reset (and so retried) once that scheduler's last
# heartbeat is older than the threshold, checked every interval: ~20 s instead of up to 5 min.
# The scheduler heartbeats every second (SCHEDULER_HEARTBEAT_SEC above).
export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD=10
export AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL=10
export CLOUD_DEPLOY_SHARED_ROOT=${CLOUD_DEPLOY_SHARED_ROOT:-$state/shared}
export CLOUD_DEPLOY_BASE_IMAGE_CATALOG=${CLOUD_DEPLOY_BASE_IMAGE_CATALOG:-$repo/samples/catalog.local.yaml}
export CLOUD_DEPLOY_BUILD_NETWORK=${CLOUD_DEPLOY_BUILD_NETWORK:-host}
if [ -z "${CLOUD_DEPLOY_BUILD_CA_BUNDLE:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export CLOUD_DEPLOY_BUILD_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi
export PATH=$venv/bin:$PATH
mkdir -p "$AIRFLOW__CORE__PLUGINS_FOLDER" "$CLOUD_DEPLOY_SHARED_ROOT/common"

# Airflow imports $AIRFLOW_HOME/config/airflow_local_settings.py in every process at start-up; the
# LocalExecutor forks its workers, and they every task, from the scheduler: with the deploy path's
# modules imported there, no task spends its start importing them (cloud_deploy_provider/preload.py).
mkdir -p "$AIRFLOW_HOME/config"
cat > "$AIRFLOW_HOME/config/airflow_local_settings.py" <<'PY'
# Written by scripts/stack.sh: import the deploy path once per process (see cloud_deploy_provider.preload).
from cloud_deploy_provider.preload import preload

preload()
__all__: list[str] = []  # no cluster policies here
PY

passwords=$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
if [ ! -f "$passwords" ]; then
  password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
  printf '{"admin": "%s"}\n' "$password" > "$passwords"
  chmod 600 "$passwords"
fi

in_background() {  # in_background NAME COMMAND...: its own process group, log and pid file in the state folder
  local name=$1; shift
  setsid "$@" > "$state/$name.log" 2>&1 < /dev/null & echo $! > "$state/$name.pid"
}

stop
if [ -n "$scale_out" ]; then
  "$venv/bin/python" -c 'import airflow.providers.celery.executors.celery_executor, psycopg2, asyncpg' 2>/dev/null \
    || "$venv/bin/pip" install -q --disable-pip-version-check -e "$repo[scale-out]"
  eval "$(bash "$repo/scripts/scale-out-services.sh" start "$state/services")"
  # The processes share the secrets that sign the UI's and the tasks' tokens.
  [ -f "$state/secrets" ] || printf 'export AIRFLOW__API_AUTH__JWT_SECRET=%s\nexport AIRFLOW__API__SECRET_KEY=%s\n' \
    "$(python3 -c 'import secrets; print(secrets.token_hex(64))')" "$(python3 -c 'import secrets; print(secrets.token_hex(32))')" \
    > "$state/secrets"
  . "$state/secrets"
  # Each Celery worker's tasks report the worker's own name as their host name (cloud_deploy_provider.workers).
  export AIRFLOW__CORE__HOSTNAME_CALLABLE=cloud_deploy_provider.workers.worker_hostname
  export AIRFLOW__CORE__PARALLELISM=${SCALE_OUT_PARALLELISM:-64}
  export AIRFLOW__API__WORKERS=${AIRFLOW__API__WORKERS:-1}
  export AIRFLOW__CELERY__WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-8}
  airflow db migrate > "$state/migrate.log" 2>&1
  in_background api-server airflow api-server --host 127.0.0.1 --port "$airflow_port"
  in_background scheduler airflow scheduler
  in_background dag-processor airflow dag-processor
  in_background triggerer airflow triggerer
  for n in $(seq "${CELERY_WORKERS:-2}"); do
    in_background "worker-$n" env CLOUD_DEPLOY_WORKER_HOSTNAME="worker-$n" \
      airflow celery worker --celery-hostname "worker-$n@%h" --concurrency "$AIRFLOW__CELERY__WORKER_CONCURRENCY"
  done
  in_background gateway cloud-deploy gateway --host 127.0.0.1 --port "$gateway_port" --workers "${GATEWAY_WORKERS:-3}"
else
  in_background airflow airflow standalone
  in_background gateway cloud-deploy gateway --host 127.0.0.1 --port "$gateway_port"
fi

wait_for() {  # wait_for NAME URL SECONDS
  local deadline=$((SECONDS + $3))
  until curl -fsS -o /dev/null "$2" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "$1 did not answer at $2 within $3 s; log tail:" >&2
      tail -n 40 "$state/$1.log" >&2
      exit 1
    fi
    sleep 1
  done
}
wait_for "$([ -n "$scale_out" ] && echo api-server || echo airflow)" "http://127.0.0.1:$airflow_port/api/v2/monitor/health" 240
wait_for gateway "http://127.0.0.1:$gateway_port/" 60
# Build the execution API's routes now, not during the first deploy's first task.
curl -fsS -o /dev/null "http://127.0.0.1:$airflow_port/execution/health" || true
# Standalone reports ready before the dag-processor has parsed our DAGs; /start needs them.
deadline=$((SECONDS + 120))
until airflow dags list -o plain 2>/dev/null | grep -q cloud_undeploy && airflow dags list -o plain 2>/dev/null | grep -q cloud_deploy; do
  if [ $SECONDS -ge $deadline ]; then echo "DAGs not parsed within 120 s" >&2; airflow dags list-import-errors >&2 || true; exit 1; fi
  sleep 2
done
echo "stack up: Airflow UI http://127.0.0.1:$airflow_port (admin / password in $passwords), TANGO API http://127.0.0.1:$gateway_port"
