#!/usr/bin/env bash
# Starts (or restarts) a private PostgreSQL 15 cluster for mlmon's demo and tests.
# Runs the server as the `postgres` OS user because initdb refuses root.
# Usage: scripts/cluster.sh start|stop|restart|psql   (env: MLMON_PORT, MLMON_PGDATA)
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
      # Unix-socket logins are trusted (the tests and demo connect as postgres
      # over /tmp); TCP logins on localhost must give a password, as Grafana's
      # datasource does (tests/grafana checks the provisioned one connects).
      as_postgres "$BIN/initdb" -D "$PGDATA" -U postgres \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
      # A quarter of memory, at most 4 GB (the usual sizing): the feature
      # benchmark's three sources and their indexes (1.2 GB) then stay in
      # shared buffers, as DuckDB's copy of them stays in its memory. With
      # 512 MB the three views' probes evicted each other's pages, and
      # build_training_set took 25.7 s instead of 8.2 s.
      SHARED_BUFFERS_MB=$(awk '/^MemTotal:/ { mb = int($2 / 1024 / 4); print (mb > 4096 ? 4096 : (mb < 128 ? 128 : mb)) }' /proc/meminfo)
      cat >> "$PGDATA/postgresql.conf" <<CONF
port = $PORT
listen_addresses = 'localhost'
unix_socket_directories = '/tmp'
max_worker_processes = 8
max_parallel_workers_per_gather = 2
shared_buffers = ${SHARED_BUFFERS_MB}MB
CONF
      # pg_cron, when installed, schedules mlmon.check_alerts() (README
      # "### Alerts"). Its jobs connect through the Unix socket: TCP logins
      # need a password (above), which a job has not got.
      if [ -e /usr/lib/postgresql/15/lib/pg_cron.so ]; then
        cat >> "$PGDATA/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.host = '/tmp'
CONF
      fi
    fi
    if ! as_postgres "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
      as_postgres "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w start >/dev/null
    fi
    echo "host=/tmp port=$PORT dbname=postgres user=postgres"
    ;;
  stop)
    as_postgres "$BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
    ;;
  restart)
    "$0" stop
    exec "$0" start
    ;;
  psql)
    shift
    exec psql "host=/tmp port=$PORT dbname=postgres user=postgres" "$@"
    ;;
  *)
    echo "usage: $0 start|stop|restart|psql" >&2
    exit 2
    ;;
esac
