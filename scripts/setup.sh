#!/usr/bin/env bash
# Everything the demo and the tests need on a fresh Debian machine with Python 3.11:
# Debian packages (when missing), the virtual environment from pyproject.toml, and `pip check`.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "${1:-}" = "--test" ]; then
  # Tests need a PostgreSQL server (they create throwaway databases on it) and systemd-analyze
  # (the unit files are verified).
  command -v pg_ctlcluster >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1 \
    || [ -x /usr/local/bin/postgres ] || need_apt+=(postgresql)
  command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
  # The console's browser tests run Debian's Chromium headless.
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

VENV=${GATEHOUSE_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.gatehouse-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing gatehouse and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
"$VENV/bin/python" -m pip check
