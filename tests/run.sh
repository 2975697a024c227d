#!/usr/bin/env bash
# Runs django-klaviyo's whole test suite on a fresh machine:
#   makes .venv, installs the package with its test dependencies, installs and starts
#   PostgreSQL (Debian packages) when none answers, installs Chromium for the admin
#   browser test, checks ruff, then runs pytest on SQLite and on PostgreSQL side by side; then the
#   non-slow suite again on the oldest and newest supported Python x Django combinations
#   (Python 3.10 + Django 4.2, Python 3.13 + the newest Django 6.x), on both databases
#   side by side. Each run keeps its own PostgreSQL database (PG_URL + "_<combination>").
# Usage: bash tests/run.sh [extra pytest args]
# Environment: PYTHON (default python3), VENV (default .venv),
#   PG_URL (default postgres://postgres:postgres@127.0.0.1:5432/django_klaviyo),
#   MATRIX=0 to skip the oldest/newest combinations (a quicker local run).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PG_URL=${PG_URL:-postgres://postgres:postgres@127.0.0.1:5432/django_klaviyo}
MATRIX=${MATRIX:-1}
EXTRA_ARGS=("$@")

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

echo "== package: wheel and sdist build, metadata passes twine check"
dist_dir=$(mktemp -d)
"$VENV/bin/python" -m build --outdir "$dist_dir" . >/dev/null
"$VENV/bin/twine" check --strict "$dist_dir"/*
rm -rf "$dist_dir"

echo "== migrations are complete"
(cd example_project && DATABASE_URL=sqlite:///:memory: ../"$VENV"/bin/python manage.py makemigrations --check --dry-run >/dev/null)

# Two databases, two pytest processes side by side (the machine has at least 2 CPUs; each
# run is mostly one process). Each log is printed whole when its run ends.
log_dir=$(mktemp -d)
pids=()
labels=()
start_logged() {  # label, command...: runs the command in the background into $log_dir/label
  local label=$1
  shift
  "$@" >"$log_dir/$label.log" 2>&1 &
  pids+=($!)
  labels+=("$label")
  echo "== started: $label"
}
wait_logged() {  # waits for every started run, prints its log, fails if any failed
  local i failed=0
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then status=passed; else status=FAILED; failed=1; fi
    echo "== ${labels[$i]}: $status"
    cat "$log_dir/${labels[$i]}.log"
  done
  pids=()
  labels=()
  return $failed
}
pg_url_for() {  # the PostgreSQL URL with a database name of this run's own
  echo "${PG_URL}_$1"
}

start_logged "pytest on SQLite" env DATABASE_URL=sqlite://:memory: \
  "$VENV/bin/pytest" -q -p no:cacheprovider ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
start_logged "pytest on PostgreSQL" env DATABASE_URL="$PG_URL" \
  "$VENV/bin/pytest" -q -p no:cacheprovider -m "not browser and not demo" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
wait_logged

# The supported matrix's corners: what README and the classifiers promise beyond the default.
find_python() {  # prints a working pythonX.Y: on PATH, under pyenv, or from Debian packages
  local version=$1 candidate
  for candidate in "python$version" "${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".*/bin/"python$version"; do
    if "$candidate" -c "import venv, ensurepip" >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  if apt-cache policy "python$version" 2>/dev/null | grep -q "Candidate: [0-9]"; then
    apt_install "python$version" "python$version-venv" || true
    if "python$version" -c "import venv, ensurepip" >/dev/null 2>&1; then
      command -v "python$version"
      return 0
    fi
  fi
  return 1
}

make_combination() {  # python version, Django requirement, label: makes its venv
  local version=$1 django=$2 label=$3 python venv
  if ! python=$(find_python "$version"); then
    echo "== SKIPPED $label: no Python $version on PATH, under pyenv, or in Debian's packages"
    return 0
  fi
  venv=".venv-matrix/$label"
  echo "== $label: making $venv"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e ".[sandbox]" --group test "$django"
  echo "== $label: $("$venv/bin/python" -c 'import sys, django; print(f"Python {sys.version.split()[0]}, Django {django.get_version()}")')"
}

test_combination() {  # label: the non-slow suite on both databases, side by side
  local label=$1 venv=".venv-matrix/$1"
  [ -x "$venv/bin/pytest" ] || return 0  # skipped above, and said so
  start_logged "pytest on SQLite ($label, not slow)" env DATABASE_URL=sqlite://:memory: \
    "$venv/bin/pytest" -q -p no:cacheprovider -m "not slow and not browser" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
  start_logged "pytest on PostgreSQL ($label, not slow)" env DATABASE_URL="$(pg_url_for "${label//-/_}")" \
    "$venv/bin/pytest" -q -p no:cacheprovider -m "not slow and not browser and not demo" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
  wait_logged
}

if [ "$MATRIX" = 1 ]; then
  make_combination 3.10 "Django>=4.2,<5.0" py310-django42
  make_combination 3.13 "Django>=6.0,<7.0" py313-django6
  test_combination py310-django42
  test_combination py313-django6
fi
rm -rf "$log_dir"
