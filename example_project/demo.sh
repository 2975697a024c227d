#!/usr/bin/env bash
# The django-klaviyo demo, end to end, on the embedded default (SQLite + local sandbox):
#   makes .venv and installs the package, migrates a fresh example shop, starts the Klaviyo
#   sandbox, creates products, customers, orders and subscriptions through ordinary model
#   saves (a subscription's status changes are events by KLAVIYO["TRACKED_MODELS"]), browses
#   the storefront as an anonymous shopper (browse events), flushes the outbox, fetches
#   Klaviyo's reports for the admin's Marketing page (klaviyo_sync),
#   prints what reached the sandbox, receives a signed webhook, and stops the sandbox.
# With KLAVIYO_PRIVATE_API_KEY set, the same flow targets real Klaviyo (no sandbox).
# --serve: then keep the sandbox and the example shop running (Ctrl-C stops both), with a
#   demo admin user, and print the URLs of the admin dashboard and the sandbox page.
# The demo only ever talks to a sandbox it started: a port already in use is an error.
# Usage: bash example_project/demo.sh [--serve]
#   (env: CUSTOMERS, ORDERS, SANDBOX_PORT, SHOP_PORT, PYTHON, VENV, SANDBOX_JOB_SECONDS:
#   how long the sandbox keeps each bulk job "processing", as Klaviyo's jobs take time)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.venv}
CUSTOMERS=${CUSTOMERS:-25}
ORDERS=${ORDERS:-60}
SANDBOX_PORT=${SANDBOX_PORT:-8765}
SANDBOX_JOB_SECONDS=${SANDBOX_JOB_SECONDS:-2}
SHOP_PORT=${SHOP_PORT:-8000}
SERVE=0
for arg in "$@"; do
  case "$arg" in
    --serve) SERVE=1 ;;
    *) echo "usage: bash example_project/demo.sh [--serve]" >&2; exit 2 ;;
  esac
done

port_in_use() {  # true when something on 127.0.0.1 accepts connections on port $1
  "$PYTHON" -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(0 if s.connect_ex(('127.0.0.1', int(sys.argv[1]))) == 0 else 1)" "$1"
}
refuse_busy_port() {  # port, what wants it
  if port_in_use "$1"; then
    echo "demo.sh: port $1 on 127.0.0.1 is already in use, so the $2 cannot start there;" >&2
    echo "  the demo never reuses a server it did not start (its results would not be this run's)." >&2
    echo "  Stop whatever listens on $1, or pick another port: ${3}=<port> bash example_project/demo.sh" >&2
    exit 1
  fi
}
if [ -z "${KLAVIYO_PRIVATE_API_KEY:-}" ]; then
  refuse_busy_port "$SANDBOX_PORT" "Klaviyo sandbox" SANDBOX_PORT
fi
if [ "$SERVE" = 1 ]; then
  refuse_busy_port "$SHOP_PORT" "example shop" SHOP_PORT
fi

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
shop_pid=""
stop_all() {
  if [ -n "$shop_pid" ] && kill -0 "$shop_pid" 2>/dev/null; then
    kill -TERM "$shop_pid" 2>/dev/null || true
    wait "$shop_pid" 2>/dev/null || true
    echo "== example shop stopped"
  fi
  stop_sandbox
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${KLAVIYO_PRIVATE_API_KEY:-}" ]; then
  export KLAVIYO_API_URL="http://127.0.0.1:$SANDBOX_PORT"
  echo "== start the Klaviyo sandbox on $KLAVIYO_API_URL (no Klaviyo account needed)"
  "$PY" manage.py klaviyo_sandbox --port "$SANDBOX_PORT" \
    --job-seconds "$SANDBOX_JOB_SECONDS" --record var/sandbox.jsonl --quiet &
  sandbox_pid=$!
  for _ in $(seq 1 50); do
    # Our process first: an answer from the port means nothing if our sandbox has died.
    kill -0 "$sandbox_pid" 2>/dev/null || { echo "the sandbox did not start" >&2; exit 1; }
    "$PY" -c "import urllib.request,sys; urllib.request.urlopen('$KLAVIYO_API_URL/__sandbox__/state', timeout=1)" 2>/dev/null && break
    sleep 0.2
  done
  kill -0 "$sandbox_pid" 2>/dev/null || { echo "the sandbox did not start" >&2; exit 1; }
else
  echo "== KLAVIYO_PRIVATE_API_KEY is set: targeting ${KLAVIYO_API_URL:-https://a.klaviyo.com}"
fi

echo "== create $CUSTOMERS customers and $ORDERS orders through ordinary model saves"
manage seed_shop --customers "$CUSTOMERS" --orders "$ORDERS" --seed 7

echo "== customers subscribe to a plan; one pauses, one cancels (tracked model events)"
manage demo_subscriptions

echo "== an anonymous shopper browses the storefront and checks out (browse events)"
manage demo_browse

echo "== flush the outbox to Klaviyo"
manage klaviyo_flush

echo "== fetch Klaviyo's reports, names and segments for the Marketing page (klaviyo_sync)"
# Reports first: the sandbox adds its fixture campaigns and flows on the first report.
manage klaviyo_sync reports
manage klaviyo_sync lists campaigns flows segments

echo "== receive a signed Klaviyo webhook (an unsubscribe) and update the consent mirror"
manage demo_webhook

if [ -n "$sandbox_pid" ]; then
  echo "== what reached the sandbox"
  "$PY" - "$KLAVIYO_API_URL" <<'PYEOF'
import json, sys, urllib.request

state = json.load(urllib.request.urlopen(sys.argv[1] + "/__sandbox__/state", timeout=5))
print(f"events accepted: {state['events']} (duplicates ignored: {state['duplicate_events']})")
for metric, count in state["metrics"].items():
    print(f"  {metric:<22} {count}")
print(f"profiles: {state['profiles']}")
requests = {op: sum(by_status.values()) for op, by_status in state["requests"].items()}
print("requests per operation: " + ", ".join(f"{op}={n}" for op, n in sorted(requests.items())))
catalog = state.get("catalog", {})
print(f"catalog: {catalog.get('items', 0)} items, {catalog.get('variants', 0)} variants, "
      f"{catalog.get('categories', 0)} categories, "
      f"{catalog.get('back_in_stock_subscriptions', 0)} back-in-stock subscriptions")
if not catalog.get("items"):
    sys.exit("demo failed: no catalog item reached the sandbox")
if not state["events"] or "Placed Order" not in state["metrics"]:
    sys.exit("demo failed: no Placed Order reached the sandbox")
for metric in ("Viewed Category", "Searched Site", "Viewed Product", "Added to Cart",
               "Started Checkout"):
    if metric not in state["metrics"]:
        sys.exit(f"demo failed: no {metric} reached the sandbox")
for metric in ("Subscription Started", "Subscription Cancelled"):
    if metric not in state["metrics"]:
        sys.exit(f"demo failed: no {metric} reached the sandbox")
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
if [ "$SERVE" = 0 ]; then
  echo "== demo finished: sandbox page was at ${KLAVIYO_API_URL:-}/__sandbox__/ ; recording in example_project/var/sandbox.jsonl"
  exit 0
fi

DEMO_USER=demo
DEMO_PASSWORD=${DEMO_PASSWORD:-demo-$("$PY" -c "import secrets; print(secrets.token_hex(4))")}
echo "== create the demo admin user"
DEMO_USER="$DEMO_USER" DEMO_PASSWORD="$DEMO_PASSWORD" manage shell -v 0 -c "
import os
from django.contrib.auth import get_user_model
user, _ = get_user_model().objects.get_or_create(username=os.environ['DEMO_USER'])
user.is_staff = user.is_superuser = True
user.set_password(os.environ['DEMO_PASSWORD'])
user.save()
"
echo "== serve the example shop on http://127.0.0.1:$SHOP_PORT/"
"$PY" manage.py runserver "127.0.0.1:$SHOP_PORT" --noreload &
shop_pid=$!
for _ in $(seq 1 100); do
  kill -0 "$shop_pid" 2>/dev/null || { echo "the example shop did not start" >&2; exit 1; }
  port_in_use "$SHOP_PORT" && break
  sleep 0.2
done
echo "== serving (Ctrl-C stops the shop and the sandbox)"
echo "admin dashboard: http://127.0.0.1:$SHOP_PORT/admin/django_klaviyo/outboxevent/"
echo "marketing page: http://127.0.0.1:$SHOP_PORT/admin/django_klaviyo/marketing/"
echo "admin user: $DEMO_USER / password: $DEMO_PASSWORD"
if [ -n "$sandbox_pid" ]; then
  echo "sandbox page: $KLAVIYO_API_URL/__sandbox__/"
fi
wait "$shop_pid"
