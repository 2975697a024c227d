"""klaviyo_backfill: history enqueued once, marked backfill, resumable, with progress."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone
from shop import services
from shop.models import Order

from django_klaviyo.models import BackfillCheckpoint, OutboxEvent
from django_klaviyo.outbox import backfill
from django_klaviyo.rules.events import expansions

pytestmark = pytest.mark.django_db
LINES = [{"sku": "TEE", "name": "T-shirt", "quantity": 2, "unit_price": Decimal("10.00")}]


def klaviyo(**overrides: object) -> override_settings:
    return override_settings(KLAVIYO={**settings.KLAVIYO, **overrides})


def history(count: int, *, start: dt.datetime | None = None) -> list[Order]:
    """Orders placed before the integration existed: no outbox rows."""
    start = start or dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    orders = []
    with klaviyo(ENABLED=False):
        for i in range(count):
            order = services.place_order(email=f"buyer{i}@example.com", lines=LINES)
            Order.objects.filter(pk=order.pk).update(placed_at=start + dt.timedelta(days=i))
            orders.append(order)
    assert not OutboxEvent.objects.exists()
    return orders


def run(*args: str) -> str:
    out = StringIO()
    call_command("klaviyo_backfill", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def placed_rows() -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(metric="Placed Order").order_by("unique_id"))


def test_every_placed_order_becomes_one_backfill_event_with_the_live_unique_id():
    orders = history(3)
    with klaviyo(ENABLED=False):
        services.fulfil_order(orders[1], tracking_number="TN1")
        pending = Order.objects.create(number="P-1", email="p@example.com", status="pending")
    run("orders", "--batch-size", "2")

    rows = placed_rows()
    assert sorted(r.unique_id for r in rows) == sorted(o.number for o in orders)
    fulfilled = OutboxEvent.objects.get(metric="Fulfilled Order")
    assert fulfilled.unique_id == orders[1].number
    assert not OutboxEvent.objects.filter(unique_id=pending.number).exists()
    assert all(r.payload["backfill"] is True for r in OutboxEvent.objects.all())
    # Ordered Product travels in the same row, as on the live path.
    assert [e[0] for e in expansions(rows[0].payload)] == ["Ordered Product"]


def test_an_order_saved_live_and_backfilled_is_enqueued_once():
    (old,) = history(1)
    live = services.place_order(email="live@example.com", lines=LINES)  # live path writes
    assert len(placed_rows()) == 1
    run("orders")
    assert sorted(r.unique_id for r in placed_rows()) == sorted([old.number, live.number])
    # A live transition after the backfill adds its own event and no second Placed Order.
    services.fulfil_order(old)
    assert len(placed_rows()) == 2
    assert OutboxEvent.objects.filter(metric="Fulfilled Order").count() == 1


def test_a_crash_mid_run_keeps_the_committed_batches_and_a_rerun_resumes(monkeypatch):
    orders = history(7)
    real = backfill.order_events
    crash_at = orders[5].pk

    def crashing(order):
        if order.pk == crash_at:
            raise RuntimeError("the process died here")
        return real(order)

    monkeypatch.setattr(backfill, "order_events", crashing)
    with pytest.raises(RuntimeError):
        run("orders", "--batch-size", "2")
    # Batches [0,1] and [2,3] committed; [4,5] died with the crash and left nothing.
    assert len(placed_rows()) == 4
    checkpoint = BackfillCheckpoint.objects.get()
    assert checkpoint.last_pk == str(orders[3].pk) and checkpoint.finished_at is None

    monkeypatch.setattr(backfill, "order_events", real)
    out = run("orders", "--batch-size", "2")
    assert f"Resuming orders after pk {orders[3].pk}" in out
    assert "3 source rows to go" in out
    assert sorted(r.unique_id for r in placed_rows()) == sorted(o.number for o in orders)
    checkpoint.refresh_from_db()
    assert checkpoint.finished_at is not None and checkpoint.source_rows == 7


def test_ctrl_c_exits_130_and_the_next_run_resumes(monkeypatch):
    orders = history(4)
    real = backfill.order_events

    def interrupted(order):
        if order.pk == orders[2].pk:
            raise KeyboardInterrupt
        return real(order)

    monkeypatch.setattr(backfill, "order_events", interrupted)
    with pytest.raises(CommandError, match="run the same command again") as caught:
        run("orders", "--batch-size", "2")
    assert caught.value.returncode == 130
    assert len(placed_rows()) == 2
    monkeypatch.setattr(backfill, "order_events", real)
    run("orders", "--batch-size", "2")
    assert len(placed_rows()) == 4


def test_a_finished_range_is_not_run_again_unless_restarted():
    history(2)
    run("orders")
    assert "finished at" in run("orders")
    OutboxEvent.objects.all().delete()
    run("orders", "--restart")
    assert len(placed_rows()) == 2


def test_since_and_until_select_orders_by_placed_date():
    orders = history(5)  # placed on 1, 2, ... 5 January 2024
    run("orders", "--since", "2024-01-02", "--until", "2024-01-04")
    assert [r.unique_id for r in placed_rows()] == sorted(o.number for o in orders[1:3])


def test_dry_run_writes_nothing_and_prints_the_estimate():
    history(3)
    out = run("orders", "--dry-run")
    assert "Would enqueue 3 outbox rows (6 Klaviyo items) from 3 orders" in out
    assert "Klaviyo's rate limit needs at least" in out
    assert not OutboxEvent.objects.exists()
    assert not BackfillCheckpoint.objects.exists()


def test_progress_shows_rate_eta_and_klaviyo_time_and_no_progress_silences_it():
    history(4)
    out = run("orders", "--batch-size", "2", "--restart")
    progress = [line for line in out.splitlines() if "rows/s" in line]
    assert len(progress) == 2
    assert progress[0].startswith("2/4 (50.0%)")
    assert "ETA" in progress[0] and "Klaviyo needs ~" in progress[0]
    out = run("orders", "--batch-size", "2", "--restart", "--no-progress")
    assert "rows/s" not in out
    assert "Enqueued 4 outbox rows" in out


def test_klaviyo_time_follows_the_bulk_endpoint_steady_limit():
    src = backfill.source("orders")
    # 1,000 events a request, 150 requests a minute: 300,000 events need two minutes.
    assert backfill.klaviyo_seconds(src, 300_000) == pytest.approx(120.0)


def test_customers_become_profile_upserts_once():
    user_model = get_user_model()
    with klaviyo(ENABLED=False):
        for name in ("ada", "bob"):
            user_model.objects.create_user(name, email=f"{name}@example.com")
    run("customers")
    run("customers", "--restart")
    emails = sorted(
        r.payload["profile"]["email"]
        for r in OutboxEvent.objects.filter(kind=OutboxEvent.Kind.PROFILE_UPSERT)
    )
    assert emails == ["ada@example.com", "bob@example.com"]


def historical_consent(user):
    return [{"profile": {"email": user.email}, "consented_at": user.date_joined}]


def test_consent_needs_a_mapper_and_imports_historical_consent():
    with pytest.raises(CommandError, match="BACKFILL_CONSENT_MAPPER"):
        run("consent")
    joined = timezone.now() - dt.timedelta(days=400)
    with klaviyo(ENABLED=False):
        get_user_model().objects.create_user("ada", email="ada@example.com", date_joined=joined)
    with klaviyo(BACKFILL_CONSENT_MAPPER="tests.outbox.test_backfill.historical_consent"):
        run("consent")
        run("consent", "--restart")
    (row,) = OutboxEvent.objects.filter(kind=OutboxEvent.Kind.SUBSCRIBE)
    assert row.payload["profile"]["email"] == "ada@example.com"
    assert row.payload["consented_at"]


def test_a_record_that_cannot_be_mapped_is_listed_and_the_rest_enqueued():
    orders = history(3)
    Order.objects.filter(pk=orders[1].pk).update(currency="US$")
    err = StringIO()
    with pytest.raises(CommandError, match="1 record"):
        call_command("klaviyo_backfill", "orders", stdout=StringIO(), stderr=err)
    assert f"skipped orders pk {orders[1].pk}" in err.getvalue()
    assert len(placed_rows()) == 2
