#!/usr/bin/env bash
# The README's test command: set up, make sure the services the tests need run, lint, type-check,
# and run every test (unit and system). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
VENV=${GATEHOUSE_VENV:-.venv}

# PostgreSQL on 127.0.0.1:5432: the tests create (and drop) their own databases on it.
if ! "$VENV/bin/python" - <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", 5432)) == 0 else 1)
PY
then
  echo "test: starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  else
    echo "test: PostgreSQL is not reachable on 127.0.0.1:5432 and pg_ctlcluster is missing" >&2
    exit 1
  fi
fi

"$VENV/bin/ruff" check .
"$VENV/bin/mypy"
exec "$VENV/bin/pytest" -q "$@"
