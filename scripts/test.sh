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
  # None runs: start a throwaway cluster with trust auth on loopback (what the tests expect),
  # owned by the postgres user, kept under /tmp and stopped by nobody but the machine's end.
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
  [ -n "$initdb" ] || initdb=$(command -v initdb || true)
  if [ -z "$initdb" ]; then
    echo "test: PostgreSQL is not reachable on 127.0.0.1:5432 and initdb is missing" >&2
    exit 1
  fi
  bindir=$(dirname "$initdb")
  pgdata=/tmp/gatehouse-test-pg
  echo "test: starting a throwaway PostgreSQL in $pgdata"
  as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi; }
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    mkdir -p "$pgdata" && chown postgres "$pgdata"
    as_pg "$bindir/initdb" -D "$pgdata" -U postgres --auth=trust >/dev/null
  fi
  as_pg "$bindir/pg_ctl" -D "$pgdata" -l "$pgdata/log" -o "-p 5432 -c listen_addresses=127.0.0.1 -k /tmp" -w start
  psql_bin=$(command -v psql || echo "$bindir/psql")
  "$psql_bin" -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" \
    | grep -q 1 || "$psql_bin" -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
fi

"$VENV/bin/ruff" check .
"$VENV/bin/mypy"
exec "$VENV/bin/pytest" -q "$@"
