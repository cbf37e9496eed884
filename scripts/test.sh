#!/usr/bin/env bash
# The whole test suite: core unit/property tests, in-database pgrx tests, and
# client-side tests (scikit-learn conformance, monitors) against a private cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

echo "==> unsafe code only where allowed, each block explained (scripts/check_unsafe.py)"
python3 scripts/check_unsafe.py

echo "==> core crate: unit and property tests"
cargo test -p mlmon-core --quiet

echo "==> in-database tests (cargo pgrx test)"
PGRX_TEST_DATA=/tmp/mlmon-pgrx-test-data
mkdir -p "$PGRX_TEST_DATA"
if [ "$(id -u)" = 0 ]; then
  chown postgres:postgres "$PGRX_TEST_DATA"
  cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_TEST_DATA"
else
  cargo pgrx test pg15
fi

echo "==> client tests against a private cluster"
cargo pgrx install --pg-config "$PG_CONFIG" >/dev/null
export MLMON_PORT=28816 MLMON_PGDATA=/tmp/mlmon-test-pgdata
export MLMON_REQUIRE_GO=1  # tests/grafana must not skip for want of go here
export MLMON_REQUIRE_CRON=1  # nor the pg_cron test of alerts for want of pg_cron (cluster.sh preloads it)
export MLMON_REQUIRE_NANNYML=1  # nor the CBPE comparison with NannyML (tests/conformance/requirements.txt installs it)
export MLMON_REQUIRE_EVIDENTLY=1  # nor the drift comparison with Evidently (install-deps.sh makes its virtualenv)
export MLMON_REQUIRE_PARTMAN=1  # nor the partitioned-table tests for want of pg_partman (install-deps.sh installs it)
scripts/cluster.sh stop
rm -rf "$MLMON_PGDATA"
export MLMON_DSN=$(scripts/cluster.sh start)
trap 'scripts/cluster.sh stop' EXIT
python3 -m pytest -q tests/
