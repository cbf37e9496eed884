#!/usr/bin/env bash
# Installs everything mlmon needs on a fresh Debian machine; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

need_apt=()
for pkg in postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo pkg-config golang-go postgresql-15-cron postgresql-15-partman; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.1"; then
  echo "==> cargo install cargo-pgrx 0.18.1 (takes several minutes)"
  cargo install cargo-pgrx --version 0.18.1 --locked
fi
if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  cargo pgrx init --pg15 /usr/lib/postgresql/15/bin/pg_config
fi

python3 -m pip install -q --root-user-action=ignore -r tests/requirements.txt

# Evidently (tests/conformance/test_drift_evidently.py) lives in a virtualenv of its
# own: it needs pandas 2.x, the main environment has pandas 3.x (see
# tests/conformance/requirements-evidently.txt). A copy of the requirements file
# inside the venv marks a finished install, so a re-run costs one cmp.
EVIDENTLY_VENV="${MLMON_EVIDENTLY_VENV:-$HOME/.cache/mlmon/evidently-venv}"
if ! { [ -x "$EVIDENTLY_VENV/bin/python" ] &&
       cmp -s tests/conformance/requirements-evidently.txt "$EVIDENTLY_VENV/mlmon-requirements.txt"; }; then
  echo "==> Evidently virtualenv at $EVIDENTLY_VENV"
  python3 -m venv "$EVIDENTLY_VENV"
  "$EVIDENTLY_VENV/bin/python" -m pip install -q -r tests/conformance/requirements-evidently.txt
  cp tests/conformance/requirements-evidently.txt "$EVIDENTLY_VENV/mlmon-requirements.txt"
fi
