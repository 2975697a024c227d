#!/usr/bin/env bash
# Runs django-klaviyo's whole test suite on a fresh machine:
#   makes .venv, installs the package with its test dependencies, installs and starts
#   PostgreSQL (Debian packages) when none answers, installs Chromium for the admin
#   browser test, checks ruff, then runs pytest on SQLite and on PostgreSQL.
# Usage: bash tests/run.sh [extra pytest args]
# Environment: PYTHON (default python3), VENV (default .venv),
#   PG_URL (default postgres://postgres:postgres@127.0.0.1:5432/django_klaviyo).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PG_URL=${PG_URL:-postgres://postgres:postgres@127.0.0.1:5432/django_klaviyo}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

echo "== python environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[sandbox]" --group test

echo "== PostgreSQL"
pg_host=127.0.0.1
if ! pg_isready -q -h "$pg_host" 2>/dev/null; then
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
  fi
  command -v pg_lsclusters >/dev/null || apt_install postgresql-common
  if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    as_root pg_createcluster "$ver" main >/dev/null
  fi
  read -r ver name _ < <(pg_lsclusters -h | head -1)
  as_root pg_ctlcluster "$ver" "$name" start || true
  for _ in $(seq 1 30); do pg_isready -q -h "$pg_host" && break; sleep 1; done
  pg_isready -h "$pg_host"
fi
if [ "$PG_URL" = "postgres://postgres:postgres@127.0.0.1:5432/django_klaviyo" ]; then
  # Password login for the test connection (local admin access is peer-authenticated).
  as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres';\"" >/dev/null
fi

echo "== Chromium for the admin browser test"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt_install chromium chromium-driver
fi

echo "== ruff"
"$VENV/bin/ruff" check django_klaviyo example_project tests bench
"$VENV/bin/ruff" format --check django_klaviyo example_project tests bench

echo "== migrations are complete"
(cd example_project && DATABASE_URL=sqlite:///:memory: ../"$VENV"/bin/python manage.py makemigrations --check --dry-run >/dev/null)

echo "== pytest on SQLite"
DATABASE_URL=sqlite://:memory: "$VENV/bin/pytest" -q -p no:cacheprovider "$@"

echo "== pytest on PostgreSQL"
DATABASE_URL="$PG_URL" "$VENV/bin/pytest" -q -p no:cacheprovider -m "not browser" "$@"
