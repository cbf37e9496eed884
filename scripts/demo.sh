#!/usr/bin/env bash
# One command for a newcomer: install everything, build and install mlmon into
# a private PostgreSQL 15 cluster (port 28815, or $MLMON_PORT; data directory
# $MLMON_PGDATA), load a demo data set, print metrics, fire an alert and draw
# docs/demo_accuracy.png.
# MLMON_DEMO_NO_BUILD=1 skips the dependency install and the build, and uses
# the mlmon already installed into /usr/lib/postgresql/15.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${MLMON_DEMO_NO_BUILD:-}" ]; then
  scripts/install-deps.sh
  echo "==> building and installing mlmon (release)"
  cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config >/dev/null 2>&1 \
    || cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config
fi
python3 -m pip install -q --root-user-action=ignore -r examples/requirements.txt
DSN=$(scripts/cluster.sh start)
echo "==> loading demo data into: $DSN"
psql "$DSN" -v ON_ERROR_STOP=1 -q -f examples/demo.sql
echo
echo "==> drawing the demo monitor's accuracy"
python3 examples/plot_demo.py "$DSN" docs/demo_accuracy.png
echo
echo "Connect with: psql \"$DSN\""
