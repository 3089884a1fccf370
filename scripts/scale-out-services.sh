#!/usr/bin/env bash
# PostgreSQL and Redis for the scale-out shape, from Debian's packages, in a state folder, on loopback ports.
#   scripts/scale-out-services.sh start|stop STATE_DIR   (env: POSTGRES_PORT=5433 REDIS_PORT=6380)
# Prints the Airflow settings that point at them (for eval) on start.
set -euo pipefail
action=${1:?usage: scale-out-services.sh start|stop STATE_DIR}
state=$(mkdir -p "${2:?usage: scale-out-services.sh start|stop STATE_DIR}" && cd "$2" && pwd)
pg_port=${POSTGRES_PORT:-5433}
redis_port=${REDIS_PORT:-6380}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
# The server runs as the postgres user, which may not enter the state folder (a private temp dir, say):
# its files live in a folder of its own, named after the state folder.
pg_home=${POSTGRES_HOME:-/var/tmp/cloud-deploy-postgres-$(printf '%s' "$state" | sha1sum | cut -c1-12)}
pg_data=$pg_home/data

as_postgres() { runuser -u postgres -- "$@"; }

stop() {
  if [ -n "$pg_bin" ] && [ -f "$pg_data/postmaster.pid" ]; then
    as_postgres "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [ -f "$state/redis.pid" ]; then
    kill "$(cat "$state/redis.pid")" 2>/dev/null || true
    rm -f "$state/redis.pid"
  fi
}

if [ "$action" = stop ]; then stop; exit 0; fi

missing=()
[ -n "$pg_bin" ] || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

stop
if [ ! -f "$pg_data/PG_VERSION" ]; then
  mkdir -p "$pg_data" && chown -R postgres "$pg_home" && chmod 700 "$pg_data"
  as_postgres "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust >/dev/null
fi
echo "$pg_home" > "$state/postgres-home"
as_postgres "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_home/postgres.log" -w \
  -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $pg_home -c max_connections=300" start >/dev/null
psql=(runuser -u postgres -- psql -h 127.0.0.1 -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qtA)
if [ "$("${psql[@]}" -c "select 1 from pg_roles where rolname = 'airflow'")" != 1 ]; then
  "${psql[@]}" -c "create role airflow login password 'airflow'" -c "create database airflow owner airflow" >/dev/null
fi

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$state/redis.pid" --logfile "$state/redis.log" --dir "$state"
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://airflow:airflow@127.0.0.1:$pg_port/airflow"
echo "export AIRFLOW__CELERY__BROKER_URL=redis://127.0.0.1:$redis_port/0"
echo "export AIRFLOW__CELERY__RESULT_BACKEND=db+postgresql+psycopg2://airflow:airflow@127.0.0.1:$pg_port/airflow"
echo "export AIRFLOW__CORE__EXECUTOR=CeleryExecutor"
