#!/usr/bin/env bash
# The django-klaviyo demo, end to end, on the embedded default (SQLite + local sandbox):
#   makes .venv and installs the package, migrates a fresh example shop, starts the Klaviyo
#   sandbox, creates customers and orders through ordinary model saves, flushes the outbox,
#   prints what reached the sandbox, receives a signed webhook, and stops the sandbox.
# With KLAVIYO_PRIVATE_API_KEY set, the same flow targets real Klaviyo (no sandbox).
# Usage: bash example_project/demo.sh   (env: CUSTOMERS, ORDERS, SANDBOX_PORT, PYTHON, VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.venv}
CUSTOMERS=${CUSTOMERS:-25}
ORDERS=${ORDERS:-60}
SANDBOX_PORT=${SANDBOX_PORT:-8765}

echo "== python environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e "$ROOT[sandbox]"
PY="$VENV/bin/python"

cd "$ROOT/example_project"
mkdir -p var
rm -f var/demo.sqlite3 var/sandbox.jsonl
export DATABASE_URL="sqlite:///$PWD/var/demo.sqlite3"
manage() { "$PY" manage.py "$@"; }

echo "== migrate the example shop (SQLite: var/demo.sqlite3)"
manage migrate --noinput -v 0

sandbox_pid=""
stop_sandbox() {
  if [ -n "$sandbox_pid" ] && kill -0 "$sandbox_pid" 2>/dev/null; then
    kill -TERM "$sandbox_pid" 2>/dev/null || true
    wait "$sandbox_pid" 2>/dev/null || true
    echo "== sandbox stopped"
  fi
}
trap stop_sandbox EXIT

if [ -z "${KLAVIYO_PRIVATE_API_KEY:-}" ]; then
  export KLAVIYO_API_URL="http://127.0.0.1:$SANDBOX_PORT"
  echo "== start the Klaviyo sandbox on $KLAVIYO_API_URL (no Klaviyo account needed)"
  "$PY" manage.py klaviyo_sandbox --port "$SANDBOX_PORT" --record var/sandbox.jsonl --quiet &
  sandbox_pid=$!
  for _ in $(seq 1 50); do
    "$PY" -c "import urllib.request,sys; urllib.request.urlopen('$KLAVIYO_API_URL/__sandbox__/state', timeout=1)" 2>/dev/null && break
    kill -0 "$sandbox_pid" 2>/dev/null || { echo "the sandbox did not start"; exit 1; }
    sleep 0.2
  done
else
  echo "== KLAVIYO_PRIVATE_API_KEY is set: targeting ${KLAVIYO_API_URL:-https://a.klaviyo.com}"
fi

echo "== create $CUSTOMERS customers and $ORDERS orders through ordinary model saves"
manage seed_shop --customers "$CUSTOMERS" --orders "$ORDERS" --seed 7

echo "== flush the outbox to Klaviyo"
manage klaviyo_flush

echo "== receive a signed Klaviyo webhook (an unsubscribe) and update the consent mirror"
manage demo_webhook

if [ -n "$sandbox_pid" ]; then
  echo "== what reached the sandbox"
  "$PY" - "$KLAVIYO_API_URL" <<'PYEOF'
import json, sys, urllib.request

state = json.load(urllib.request.urlopen(sys.argv[1] + "/__sandbox__/state", timeout=5))
print(f"events accepted: {state['events']} (duplicates ignored: {state['duplicate_events']})")
for metric, count in state["metrics"].items():
    print(f"  {metric:<18} {count}")
print(f"profiles: {state['profiles']}")
requests = {op: sum(by_status.values()) for op, by_status in state["requests"].items()}
print("requests per operation: " + ", ".join(f"{op}={n}" for op, n in sorted(requests.items())))
if not state["events"] or "Placed Order" not in state["metrics"]:
    sys.exit("demo failed: no Placed Order reached the sandbox")
PYEOF
fi

echo "== outbox after the flush"
manage shell -v 0 -c "
from django.db.models import Count
from django_klaviyo.models import OutboxEvent
rows = OutboxEvent.objects.values_list('status').annotate(n=Count('id')).order_by('status')
print(', '.join(f'{s}={n}' for s, n in rows))
left = OutboxEvent.objects.exclude(status='sent').count()
raise SystemExit(f'demo failed: {left} rows not sent' if left else 0)
"
echo "== demo finished: sandbox page was at ${KLAVIYO_API_URL:-}/__sandbox__/ ; recording in example_project/var/sandbox.jsonl"
