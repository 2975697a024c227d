"""Order stats on the profile (``KLAVIYO["PROFILE_ORDER_STATS"]``, docs/mapping.md): the
customer's order count, lifetime value and order dates, computed from the store's orders
in the order's transaction, coalesced into one profile update per flush, right after
refunds and cancellations, and what the sandbox (Klaviyo's stand-in) holds afterwards."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.db import connection, connections, transaction
from django.utils import timezone
from shop import services
from shop.models import Order

import django_klaviyo
from django_klaviyo.flush import flush_outbox
from django_klaviyo.flush.claim import claim_batch
from django_klaviyo.flush.senders.profiles import LARGE_PROFILE_BATCH
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import stats

pytestmark = pytest.mark.django_db

EVERY_STAT = {
    "refunds": "refunds",
    "first_order_date": "first_order_date",
    "average_order_value": "average_order_value",
}


@pytest.fixture
def stats_on(klaviyo_sandbox, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "PROFILE_ORDER_STATS": EVERY_STAT}
    return klaviyo_sandbox


@pytest.fixture
def customer():
    return get_user_model().objects.create_user("ada", email="ada@example.com")


def place(customer=None, total: str = "50.00", *, email: str = "") -> Order:
    line = {"sku": "TEE", "name": "T-shirt", "quantity": 1, "unit_price": Decimal(total)}
    return services.place_order(customer=customer, email=email, lines=[line])


def stats_rows():
    return OutboxEvent.objects.filter(dedupe_key__startswith=stats.KEY_PREFIX)


def profile_imports(sandbox) -> int:
    return sum(sandbox.state.request_counts().get("create_or_update_profile", {}).values())


def klaviyo_properties(sandbox, email: str) -> dict:
    profile_id = sandbox.state.find_profile_id("email", email)
    assert profile_id, f"no profile for {email}"
    return sandbox.state.profile(profile_id)["properties"]


def flushed(sandbox) -> None:
    flush_outbox()
    left = OutboxEvent.objects.exclude(status="sent")
    assert not left.exists(), list(left.values("kind", "status", "last_error_detail"))


def test_a_burst_of_orders_sends_one_profile_update(stats_on, customer):
    flushed(stats_on)  # the customer's own profile row, sent before the burst
    before = profile_imports(stats_on)
    orders = [place(customer, total) for total in ("10.00", "20.00", "30.00", "15.50", "4.50")]
    (row,) = stats_rows()
    assert row.status == "pending"
    assert row.payload["profile"]["properties"]["total_orders"] == 5
    flushed(stats_on)
    assert profile_imports(stats_on) == before + 1
    properties = klaviyo_properties(stats_on, "ada@example.com")
    assert properties["total_orders"] == 5
    assert properties["lifetime_value"] == 80.0
    assert properties["average_order_value"] == 16.0
    placed = sorted(o.placed_at for o in orders)
    assert properties["first_order_date"].startswith(placed[0].strftime("%Y-%m-%dT%H:%M:%S"))
    assert properties["last_order_date"].startswith(placed[-1].strftime("%Y-%m-%dT%H:%M:%S"))


def test_the_dates_are_the_first_and_last_placed_times(stats_on, customer):
    first, last = place(customer), place(customer)
    earlier = timezone.now() - timedelta(days=40)
    Order.objects.filter(pk=first.pk).update(placed_at=earlier)
    place(customer)
    flushed(stats_on)
    properties = klaviyo_properties(stats_on, "ada@example.com")
    assert properties["first_order_date"].startswith(earlier.strftime("%Y-%m-%dT%H:%M:%S"))
    assert properties["last_order_date"] > last.placed_at.strftime("%Y-%m-%dT%H:%M:%S")


def test_refunds_and_cancellations_adjust_the_stats(stats_on, customer):
    kept, part, cancelled, whole = (place(customer, "50.00") for _ in range(4))
    flushed(stats_on)
    assert klaviyo_properties(stats_on, "ada@example.com")["total_orders"] == 4
    services.cancel_order(cancelled)
    services.refund(part, [(part.lines.get(), 0)], shipping=Decimal("20.00"))
    services.refund_order(whole)
    flushed(stats_on)
    properties = klaviyo_properties(stats_on, "ada@example.com")
    # The cancelled order does not count; the refunded one counts, worth nothing.
    assert properties["total_orders"] == 3
    assert properties["lifetime_value"] == 80.0  # 50 + (50 - 20) + 0
    assert properties["average_order_value"] == 26.67
    assert kept.status == "placed"


def test_without_refund_records_the_ledger_gives_what_was_refunded(
    klaviyo_sandbox, settings, customer
):
    settings.KLAVIYO = {**settings.KLAVIYO, "PROFILE_ORDER_STATS": True}
    order = place(customer, "80.00")
    place(customer, "20.00")
    with transaction.atomic():
        django_klaviyo.order_refunded(order, refund={"id": "r1", "amount": Decimal("30.00")})
    flushed(klaviyo_sandbox)
    properties = klaviyo_properties(klaviyo_sandbox, "ada@example.com")
    assert properties == {
        "total_orders": 2,
        "lifetime_value": 70.0,
        "last_order_date": properties["last_order_date"],
    }


def test_a_guests_orders_are_found_by_email_in_any_case(stats_on):
    place(email="guest@example.com", total="12.00")
    place(email="Guest@Example.COM", total="8.00")
    place(email="someone.else@example.com", total="99.00")
    place(email="guest@example.com", total="5.00")
    flushed(stats_on)
    properties = klaviyo_properties(stats_on, "guest@example.com")
    assert (properties["total_orders"], properties["lifetime_value"]) == (3, 25.0)
    other = klaviyo_properties(stats_on, "someone.else@example.com")
    assert (other["total_orders"], other["lifetime_value"]) == (1, 99.0)


def test_names_are_configurable(klaviyo_sandbox, settings, customer):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "PROFILE_ORDER_STATS": {"total_orders": "Order Count", "last_order_date": None},
    }
    place(customer)
    flushed(klaviyo_sandbox)
    properties = klaviyo_properties(klaviyo_sandbox, "ada@example.com")
    assert properties == {"Order Count": 1, "lifetime_value": 50.0}


def test_off_by_default_nothing_extra_is_written_or_sent(klaviyo_sandbox, customer):
    flushed(klaviyo_sandbox)
    before = profile_imports(klaviyo_sandbox)
    place(customer)
    assert not stats_rows().exists()
    assert not OutboxEvent.objects.filter(kind="profile_upsert", status="pending").exists()
    flushed(klaviyo_sandbox)
    assert profile_imports(klaviyo_sandbox) == before
    assert "total_orders" not in klaviyo_properties(klaviyo_sandbox, "ada@example.com")


def test_a_row_a_flusher_holds_is_never_rewritten(stats_on, customer):
    place(customer)
    claimed = claim_batch(owner="worker-1", kinds=["profile_upsert"])
    (held,) = (row for row in claimed if row.pk in {r.pk for r in stats_rows()})
    place(customer)
    rows = {row.pk: row for row in stats_rows()}
    assert len(rows) == 2
    assert rows[held.pk].status == "sending"
    assert rows[held.pk].payload["profile"]["properties"]["total_orders"] == 1
    (new,) = (row for pk, row in rows.items() if pk != held.pk)
    assert new.payload["profile"]["properties"]["total_orders"] == 2
    # Due only once the held row's lease could have ended: it cannot overtake it.
    assert new.next_attempt_at > timezone.now() + timedelta(seconds=60)
    place(customer)  # the waiting row is rewritten in place, the held one still untouched
    assert stats_rows().count() == 2
    new.refresh_from_db()
    assert new.payload["profile"]["properties"]["total_orders"] == 3


def test_a_rolled_back_order_leaves_the_stats_as_they_were(stats_on, customer):
    place(customer)
    with pytest.raises(RuntimeError), transaction.atomic():
        place(customer)
        raise RuntimeError("payment failed")
    (row,) = stats_rows()
    assert row.payload["profile"]["properties"]["total_orders"] == 1


def refunds_service_down(order):
    raise ConnectionError("the refunds service is down")


def test_a_failing_stats_query_keeps_a_dead_row_and_the_order(stats_on, settings, customer):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "PROFILE_ORDER_STATS": {"refunds": refunds_service_down},
    }
    settings.DEBUG = False
    with transaction.atomic():
        order = place(customer)
    assert Order.objects.filter(pk=order.pk, status="placed").exists()
    dead = OutboxEvent.objects.get(kind="profile_upsert", status="dead")
    assert "the refunds service is down" in dead.last_error_detail
    assert dead.outcome_note.startswith(f"refused on save (shop.order:{order.pk})")
    assert dead.payload["order_stats"] is True


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("yes", "must be True, False or a dict"),
        ({"total_order": "n"}, "unknown key 'total_order'"),
        ({"lifetime_value": ""}, "a profile property name"),
        ({"total_orders": "x", "lifetime_value": "x"}, "the same property"),
    ],
)
def test_a_malformed_setting_is_e090(settings, value, fragment):
    settings.KLAVIYO = {**settings.KLAVIYO, "PROFILE_ORDER_STATS": value}
    found = [m for m in run_checks() if m.id == "django_klaviyo.E090"]
    assert found and fragment in found[0].msg, [m.msg for m in found]


def test_unqueryable_paths_are_e091(settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "PROFILE_ORDER_STATS": {"refunds": "refundz"},
        "ORDER_FIELDS": {"customer_id": lambda order: 1, "email": None},
    }
    messages = [m.msg for m in run_checks() if m.id == "django_klaviyo.E091"]
    assert any("refundz" in m for m in messages), messages
    assert any("customer" in m for m in messages), messages


def test_the_default_settings_pass_the_checks(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "PROFILE_ORDER_STATS": EVERY_STAT}
    assert not [m for m in run_checks() if m.id in ("django_klaviyo.E090", "django_klaviyo.E091")]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_transactions_of_one_customer_take_turns(settings):
    """While one transaction places an order, another places one for the same customer:
    it waits on the profile's lock, then counts the first's order, so the row Klaviyo
    gets says 2, not 1."""
    assert connection.vendor == "postgresql"
    settings.KLAVIYO = {**settings.KLAVIYO, "PROFILE_ORDER_STATS": True}
    customer = get_user_model().objects.create_user("bea", email="bea@example.com")
    first_inside, may_commit, second_done = (threading.Event() for _ in range(3))
    second_pid: list[int] = []
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                place(customer, "30.00")
                first_inside.set()
                may_commit.wait(30)
        except BaseException as exc:
            errors.append(exc)
        finally:
            first_inside.set()
            connections.close_all()

    def second() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                second_pid.append(cursor.fetchone()[0])
            first_inside.wait(30)
            place(customer, "20.00")
        except BaseException as exc:
            errors.append(exc)
        finally:
            second_done.set()
            connections.close_all()

    def second_waits_for_a_lock() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", second_pid
            )
            row = cursor.fetchone()
        return row is not None and row[0] == "Lock"

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_inside.wait(30)
    for _ in range(3000):  # at most ~30 s, so a broken test cannot hang the suite
        if second_done.wait(0.01) or (second_pid and second_waits_for_a_lock()):
            break
    may_commit.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    (row,) = stats_rows()
    properties = row.payload["profile"]["properties"]
    assert (properties["total_orders"], properties["lifetime_value"]) == (2, 50.0)


def test_stats_in_a_bulk_profile_import_reach_klaviyo(stats_on):
    """More stats rows than one claim sends one by one go out as a bulk profile import
    (on spec: the sandbox validates every request), and each profile gets its stats."""
    for i in range(LARGE_PROFILE_BATCH + 1):
        place(email=f"buyer{i}@example.com", total="10.00")
    assert stats_rows().count() == LARGE_PROFILE_BATCH + 1
    for _ in range(100):  # bounded: a few passes settle the import job
        flush_outbox()
        if not OutboxEvent.objects.exclude(status="sent").exists():
            break
    flushed(stats_on)
    assert sum(stats_on.state.request_counts()["bulk_import_profiles"].values()) == 1
    for i in (0, LARGE_PROFILE_BATCH):
        properties = klaviyo_properties(stats_on, f"buyer{i}@example.com")
        assert (properties["total_orders"], properties["lifetime_value"]) == (1, 10.0)


def order_total(order):
    return order.total


def refund_records(order):
    return order.refunds.all()


def test_paths_that_are_not_fields_are_read_from_the_orders(klaviyo_sandbox, settings, customer):
    """A callable (or property) total or refunds path cannot be read in the query: the
    orders are loaded and read through the mapping, with the same result."""
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "ORDER_FIELDS": {"total": order_total},
        "PROFILE_ORDER_STATS": {"refunds": refund_records},
    }
    part, _kept = place(customer, "40.00"), place(customer, "60.00")
    services.refund(part, [(part.lines.get(), 0)], shipping=Decimal("15.00"))
    flushed(klaviyo_sandbox)
    properties = klaviyo_properties(klaviyo_sandbox, "ada@example.com")
    assert (properties["total_orders"], properties["lifetime_value"]) == (2, 85.0)


# --- a store that creates its orders placed, then their items (tests/projects/directshop)


def test_an_order_created_placed_counts_its_total_once_its_items_are_saved(directshop, settings):
    from django.test.utils import CaptureQueriesContext

    from tests.projects.directshop.models import Order as DirectOrder
    from tests.projects.directshop.models import OrderItem

    settings.KLAVIYO = {**settings.KLAVIYO, "PROFILE_ORDER_STATS": True}
    with transaction.atomic():
        order = DirectOrder.objects.create(status="PROCESSING", email="d@example.com")
        with CaptureQueriesContext(connection) as item_saves:
            for name, price in (("Lamp", "25.00"), ("Bulb", "5.00")):
                OrderItem.objects.create(order=order, product_name=name, sku=name, price=price)
        # An item changes no total: no stats are computed for it.
        assert not [q for q in item_saves if "order-stats" in q["sql"]]
        order.order_total = Decimal("30.00")
        order.save()  # the total, saved after the items, is what counts
    (row,) = stats_rows()
    properties = row.payload["profile"]["properties"]
    assert (properties["total_orders"], properties["lifetime_value"]) == (1, 30.0)
    assert properties["last_order_date"].startswith(order.created.strftime("%Y-%m-%dT%H:%M"))
