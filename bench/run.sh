#!/usr/bin/env bash
# Runs every benchmark, on SQLite and PostgreSQL where it applies. Sets up like
# tests/run.sh (reuses .venv, starts PostgreSQL if none answers); a few minutes in all.
# Each script prints the machine's facts, its figures and a RATIO against a baseline
# measured in the same run, plus one "RESULT {...}" JSON line per figure.
# Usage: bash bench/run.sh      Environment: VENV (default .venv), BENCH_PG_URL.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
export BENCH_PG_URL=${BENCH_PG_URL:-postgres://postgres:postgres@127.0.0.1:5432/django_klaviyo_bench}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

echo "== python environment ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[sandbox]" --group test
fi

echo "== PostgreSQL"
if ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    as_root pg_createcluster "$ver" main >/dev/null
  fi
  read -r ver name _ < <(pg_lsclusters -h | head -1)
  as_root pg_ctlcluster "$ver" "$name" start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
  as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres';\"" >/dev/null
fi

py() { "$VENV/bin/python" -m "$@"; }
# Save path first, SQLite then PostgreSQL in one command (side by side).
py bench.enqueue_overhead --db both
py bench.receiver_cpu --db sqlite
py bench.receiver_cpu --db postgres
py bench.save_python --db sqlite
for db in sqlite postgres; do
  py bench.outbox_indexes --db "$db"
  py bench.request_latency --db "$db"
  py bench.flush_cpu --db "$db"
  py bench.webhook_volume --db "$db"
done
py bench.flush_throughput --db postgres
py bench.claim_scaling --db postgres
py bench.sandbox_latency
py bench.spec_validation
py bench.admin_scale   # 1M rows on PostgreSQL, about 2 minutes
