#!/usr/bin/env bash
# Runs django-klaviyo's whole test suite on a fresh machine:
#   makes .venv, installs the package with its test dependencies, installs and starts
#   PostgreSQL (Debian packages) when none answers, installs Chromium for the admin
#   browser test, checks ruff, then runs pytest on SQLite and on PostgreSQL side by side; then
#   every benchmark in smoke mode (bench/smoke.py) on both databases side by side; then,
#   through tox (tox.ini defines the matrix, once), the non-slow suite on the oldest and
#   newest supported Python x Django combinations (py310-django42 and py313-django6), each
#   combination's -sqlite and -pg envs side by side. Each PostgreSQL run keeps its own database
#   (PG_URL, PG_URL + "_bench", PG_URL + "_<tox env>").
# Usage: bash tests/run.sh [extra pytest args]
# Environment: PYTHON (default python3), VENV (default .venv),
#   PG_URL (default postgres://postgres:postgres@127.0.0.1:5432/django_klaviyo),
#   MATRIX=0 to skip the oldest/newest combinations (a quicker local run).
#   tox comes from the test dependency group, into $VENV, like pytest.
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
"$VENV/bin/ruff" check django_klaviyo example_project tests bench toxfile.py
"$VENV/bin/ruff" format --check django_klaviyo example_project tests bench toxfile.py

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

# Every benchmark at tiny sizes (seconds; under a minute in all), on both databases side by
# side: a schema or API change that breaks a benchmark breaks the build.
bench_dir=$(mktemp -d)
start_logged "benchmarks, smoke mode, SQLite" env BENCH_DIR="$bench_dir" \
  "$VENV/bin/python" -m bench.smoke --db sqlite
start_logged "benchmarks, smoke mode, PostgreSQL" env BENCH_PG_URL="$(pg_url_for bench)" \
  "$VENV/bin/python" -m bench.smoke --db postgres
wait_logged
rm -rf "$bench_dir"

# The supported matrix's corners, through tox.ini's environments (the one definition of the
# Python x Django matrix): what README and the classifiers promise beyond the default.
find_python() {  # prints a working pythonX.Y: on PATH, under pyenv, or from Debian packages
  local version=$1 candidate
  for candidate in "python$version" "${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".*/bin/"python$version"; do
    if "$candidate" -c "import venv, ensurepip" >/dev/null 2>&1; then
      # A pyenv shim answers only for the active versions: hand tox the real binary.
      "$candidate" -c "import sys; print(sys.executable)"
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

run_corner() {  # label, python: its -sqlite and -pg envs through tox, side by side
  local label=$1 python=$2 env log status=0
  local envs=("$label-sqlite" "$label-pg")
  # Each -pg env has its own database (PG_URL + "_" + the env's name, tox.ini). Only one
  # -sqlite env at a time: it runs the demo tests, which share example_project/var/.
  # --skip-missing-interpreters false: an env tox cannot make fails, never passes unrun.
  echo "== tox: ${envs[*]} (not slow), side by side"
  for env in "${envs[@]}"; do rm -rf ".tox/$env/log"; done  # no earlier run's log below
  PG_URL="$PG_URL" PYTEST_MARKERS="not slow and not browser" "$VENV/bin/tox" run-parallel \
    --parallel 2 --parallel-no-spinner --skip-missing-interpreters false \
    --discover "$python" -e "$(IFS=,; echo "${envs[*]}")" \
    ${EXTRA_ARGS[@]+-- "${EXTRA_ARGS[@]}"} || status=$?
  # run-parallel shows only a failed env's output: print each env's pytest run from tox's
  # log of it, so that every run's counts are in the output.
  for env in "${envs[@]}"; do
    log=$(ls -t ".tox/$env/log/"*commands*.log 2>/dev/null | head -1 || true)
    echo "== tox $env: pytest"
    if [ -n "$log" ]; then sed -n '/^cmd:/,$p' "$log"; else echo "(no pytest run logged)"; fi
  done
  return $status
}

if [ "$MATRIX" = 1 ]; then
  matrix_failed=0
  for corner in "3.10 py310-django42" "3.13 py313-django6"; do
    read -r version label <<<"$corner"
    if python=$(find_python "$version"); then
      run_corner "$label" "$python" || matrix_failed=1
    else
      echo "== SKIPPED $label: no Python $version on PATH, under pyenv, or in Debian's packages"
    fi
  done
fi
rm -rf "$log_dir"
[ "${matrix_failed:-0}" = 0 ]
