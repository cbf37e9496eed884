#!/usr/bin/env bash
# Starts (or restarts) a private PostgreSQL 15 cluster for mlmon's demo and tests.
# Runs the server as the `postgres` OS user because initdb refuses root.
# Usage: scripts/cluster.sh start|stop|psql   (env: MLMON_PORT, MLMON_PGDATA)
set -euo pipefail
PORT="${MLMON_PORT:-28815}"
PGDATA="${MLMON_PGDATA:-/tmp/mlmon-pgdata-$PORT}"
BIN=/usr/lib/postgresql/15/bin
as_postgres() { if [ "$(id -u)" = 0 ]; then sudo -u postgres "$@"; else "$@"; fi; }

case "${1:-start}" in
  start)
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
      mkdir -p "$PGDATA"
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDATA"
      as_postgres "$BIN/initdb" -D "$PGDATA" -U postgres --auth=trust >/dev/null
      cat >> "$PGDATA/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '/tmp'
max_worker_processes = 8
max_parallel_workers_per_gather = 2
shared_buffers = 512MB
CONF
    fi
    if ! as_postgres "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
      as_postgres "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w start >/dev/null
    fi
    echo "host=/tmp port=$PORT dbname=postgres user=postgres"
    ;;
  stop)
    as_postgres "$BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
    ;;
  psql)
    shift
    exec psql "host=/tmp port=$PORT dbname=postgres user=postgres" "$@"
    ;;
esac
