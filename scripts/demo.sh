#!/usr/bin/env bash
# One command for a newcomer: install everything, build and install mlmon into
# a private PostgreSQL 15 cluster (port 28815), load a demo data set, print metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "==> building and installing mlmon (release)"
cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config >/dev/null 2>&1 \
  || cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config
DSN=$(scripts/cluster.sh start)
echo "==> loading demo data into: $DSN"
psql "$DSN" -v ON_ERROR_STOP=1 -q -f examples/demo.sql
echo
echo "Connect with: psql \"$DSN\""
