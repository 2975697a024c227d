"""Save receivers: transactional outbox rows, transitions, dedupe, user upserts, failures."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, transaction
from django.db.models.signals import post_save
from django.test import override_settings
from django.utils import timezone
from shop import services
from shop.models import Order, OrderLine

import django_klaviyo
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import KlaviyoProfileLink, OutboxEvent
from django_klaviyo.orders import receivers
from django_klaviyo.profiles import receivers as user_receivers
from django_klaviyo.rules.events import expansion_count, expansions

User = get_user_model()
LINES = [
    {"sku": "TEE", "name": "T-shirt", "quantity": 2, "unit_price": Decimal("10.00")},
    {"sku": "MUG", "name": "Mug", "quantity": 1, "unit_price": Decimal("5.00")},
    {"sku": "CAP", "name": "Cap", "quantity": 1, "unit_price": Decimal("7.50")},
]


def klaviyo(**overrides: object) -> override_settings:
    return override_settings(KLAVIYO={**settings.KLAVIYO, **overrides})


def metrics() -> list[str]:
    return sorted(OutboxEvent.objects.filter(kind="event").values_list("metric", flat=True))


def refused() -> list[tuple[str, str]]:
    """(kind, field named) of the dead rows kept for what a save could not enqueue."""
    rows = OutboxEvent.objects.filter(status="dead", last_error_code="invalid_on_save")
    return [
        (kind, detail.rpartition("(field ")[2].rstrip(")"))
        for kind, detail in rows.order_by("created_at").values_list("kind", "last_error_detail")
    ]


def upserts() -> list[dict]:
    rows = OutboxEvent.objects.filter(kind="profile_upsert").order_by("created_at")
    return [row.payload["profile"] for row in rows]


def raising_mapper(*args):
    raise RuntimeError("mapper bug")


def invalid_mapper(*args):
    raise KlaviyoValidationError("no email for this order", field="email")


@pytest.fixture
def customer(db):
    user = User.objects.create_user("ada", email="ada@example.com", first_name="Ada")
    OutboxEvent.objects.all().delete()
    return user


# --- transactions ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_rolled_back_checkout_leaves_no_outbox_row():
    with pytest.raises(RuntimeError), transaction.atomic():
        services.place_order(email="guest@example.com", lines=LINES)
        raise RuntimeError("payment declined")
    assert not Order.objects.exists()
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_committed_checkout_and_user_always_have_their_rows():
    user = User.objects.create_user("bob", email="bob@example.com")
    order = services.place_order(customer=user, lines=LINES)
    assert OutboxEvent.objects.filter(kind="profile_upsert").count() == 1
    assert metrics() == ["Placed Order"]
    assert expansion_count(OutboxEvent.objects.get(metric="Placed Order").payload) == 3
    with pytest.raises(RuntimeError), transaction.atomic():
        services.cancel_order(order)
        raise RuntimeError("rolled back")
    assert "Cancelled Order" not in metrics()


@pytest.fixture
def failing_outbox_inserts(transactional_db):
    """A real database error on every outbox INSERT (a trigger), as a full disk would give."""
    from django.db import connection

    table = OutboxEvent._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION klaviyo_test_fail() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f'CREATE TRIGGER klaviyo_test_fail BEFORE INSERT ON "{table}" '
                "FOR EACH ROW EXECUTE FUNCTION klaviyo_test_fail()"
            )
        else:
            cursor.execute(
                f'CREATE TRIGGER klaviyo_test_fail BEFORE INSERT ON "{table}" '
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
    yield
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f'DROP TRIGGER klaviyo_test_fail ON "{table}"')
            cursor.execute("DROP FUNCTION klaviyo_test_fail()")
        else:
            cursor.execute("DROP TRIGGER klaviyo_test_fail")


def test_a_failing_outbox_insert_rolls_back_the_business_save(failing_outbox_inserts):
    # Database errors are not swallowed: an order committed without its events is worse.
    with pytest.raises(DatabaseError, match="disk full"):
        services.place_order(email="guest@example.com", lines=LINES)
    assert not Order.objects.exists()
    assert not OutboxEvent.objects.exists()


# --- order transitions ----------------------------------------------------------------


@pytest.mark.django_db
def test_saving_the_same_state_again_enqueues_nothing_more(customer):
    order = services.place_order(customer=customer, lines=LINES)
    count = OutboxEvent.objects.count()
    order.save()
    order.status = Order.Status.PLACED
    order.save()
    Order.objects.get(pk=order.pk).save()
    # A stale copy loaded while pending and saved as placed again: same dedupe keys.
    stale = Order.objects.get(pk=order.pk)
    stale.__dict__[receivers.STATUS_SNAPSHOT] = Order.Status.PENDING
    stale.save()
    assert OutboxEvent.objects.count() == count == 1


@pytest.mark.django_db
def test_order_placed_and_the_transition_together_send_one_placed_order(customer):
    order = services.place_order(customer=customer, lines=LINES)
    django_klaviyo.order_placed(order)
    assert metrics() == ["Placed Order"]
    assert expansion_count(OutboxEvent.objects.get().payload) == 3

    # The other way round: explicit call first, then the transition.
    other = Order.objects.create(number="B-2", customer=customer)
    OrderLine.objects.create(order=other, sku="S", name="Sock", unit_price=3)
    django_klaviyo.order_placed(other)
    other.status = Order.Status.PLACED
    other.save()
    assert OutboxEvent.objects.filter(unique_id="B-2", metric="Placed Order").count() == 1
    assert OutboxEvent.objects.filter(metric="Placed Order").count() == 2


# --- the default mapper's rows pass the event rules --------------------------------------


def placed_with_lines(customer, lines: list[OrderLine], **fields) -> Order:
    """A loaded pending order whose ``lines`` are the given in-memory lines (as a prefetch
    would give), moved to placed: the save signal runs the default mapper."""
    order = Order.objects.create(number="T-1", customer=customer, email=customer.email)
    for line in lines:
        line.order = order
    OrderLine.objects.bulk_create(lines)
    services._remember_lines(order, lines)
    order.status = Order.Status.PLACED
    for name, value in fields.items():
        setattr(order, name, value)
    order.save()
    return order


@pytest.mark.django_db
def test_the_save_signal_stores_what_build_events_builds(customer):
    from django_klaviyo import outbox, rules
    from django_klaviyo.orders import mappers as ecommerce

    order = services.place_order(
        customer=customer,
        lines=LINES,
        currency="eur",
        shipping_address={"city": "Paris", "zip": 75001},
    )
    specs = ecommerce.placed_order_events(order)
    (built,) = outbox.build_events(specs)
    row = OutboxEvent.objects.get()
    assert row.payload == built.payload
    assert row.rules_version == rules.RULES_VERSION
    assert built.payload["value_currency"] == "EUR"


@pytest.mark.django_db
def test_decimal_values_of_the_default_mapper_are_stored_as_numbers(customer):
    # A store whose quantities are Decimals: converted exactly as build_events converts.
    line = OrderLine(sku="S", name="Sock", quantity=1, unit_price=Decimal("3.00"))
    order = Order.objects.create(number="T-2", customer=customer, email=customer.email)
    line.order = order
    line.save()
    line.quantity = Decimal("2")
    services._remember_lines(order, [line])
    order.status = Order.Status.PLACED
    order.save()
    payload = OutboxEvent.objects.get().payload
    assert payload["properties"]["Items"][0]["Quantity"] == 2.0
    assert next(expansions(payload))[2]["Quantity"] == 2.0


@pytest.mark.django_db
def test_the_default_mapper_rows_reject_a_bad_time_or_email(customer, caplog):
    line = OrderLine(sku="S", name="Sock", unit_price=3)
    with caplog.at_level(logging.WARNING, logger="django_klaviyo.receivers"):
        order = placed_with_lines(customer, [line], placed_at=timezone.now().replace(year=1985))
    assert Order.objects.get(pk=order.pk).status == Order.Status.PLACED
    assert "time must be after 1990" in caplog.text
    Order.objects.filter(pk=order.pk).update(status=Order.Status.PENDING)
    order = Order.objects.get(pk=order.pk)
    order.email = "not an email"
    order.status = Order.Status.PLACED
    with caplog.at_level(logging.WARNING, logger="django_klaviyo.receivers"):
        order.save()
    assert "is not a valid email address" in caplog.text
    assert refused() == [("event", "time"), ("event", "email")]


def mapper_adding_a_gift(order, previous_status, created):
    from django_klaviyo.orders import mappers as ecommerce

    events = ecommerce.default_order_events(order, previous_status, created)
    for event in events:
        event.setdefault("expand", []).append(
            {"metric": "Received Gift", "unique_id": f"gift-{order.pk}", "value": Decimal("1")}
        )
    return events


def mapper_with_a_bad_expand(order, previous_status, created):
    events = mapper_adding_a_gift(order, previous_status, created)
    for event in events:
        event["expand"][-1]["time"] = "2020-01-01T00:00:00Z"
    return events


@pytest.mark.django_db
def test_custom_mappers_get_the_full_validation(customer, caplog):
    with klaviyo(ORDER_EVENTS_MAPPER=mapper_adding_a_gift):
        services.place_order(customer=customer, lines=LINES)
    gift = OutboxEvent.objects.get().payload["expand"][-1]
    assert gift == {
        "metric": "Received Gift",
        "unique_id": gift["unique_id"],
        "properties": {},
        "value": 1.0,
    }
    OutboxEvent.objects.all().delete()
    with (
        klaviyo(ORDER_EVENTS_MAPPER=f"{__name__}.mapper_with_a_bad_expand"),
        caplog.at_level(logging.WARNING, logger="django_klaviyo.receivers"),
    ):
        services.place_order(customer=customer, lines=LINES)
    assert refused() == [("event", "expand[0].time")]
    assert "expand[0].time" in caplog.text


@pytest.mark.django_db
def test_update_fields_without_status_is_not_a_transition(customer):
    order = Order.objects.create(number="B-3", customer=customer)
    order.status = Order.Status.PLACED
    order.save(update_fields=["tracking_number"])  # status not written to the database
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_disabled_saves_enqueue_nothing(customer):
    with klaviyo(ENABLED=False):
        order = services.place_order(customer=customer, lines=LINES)
        services.fulfil_order(order)
        User.objects.create_user("carol", email="carol@example.com")
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_mapper_validation_error_skips_klaviyo_but_not_the_save(customer, caplog):
    with (
        klaviyo(ORDER_EVENTS_MAPPER=invalid_mapper),
        caplog.at_level(logging.WARNING, logger="django_klaviyo.receivers"),
    ):
        order = services.place_order(customer=customer, lines=LINES)
    assert Order.objects.get(pk=order.pk).status == Order.Status.PLACED
    # Once on creation (pending) and once placed: each save's refusal is kept.
    assert refused() == [("event", "email"), ("event", "email")]
    assert "no email for this order" in caplog.text


@pytest.mark.django_db
def test_invalid_mapped_event_skips_klaviyo_but_not_the_save(customer, caplog):
    order = Order.objects.create(number="B-4", customer=customer, currency="E1R")
    OrderLine.objects.create(order=order, sku="S", name="Sock", unit_price=3)
    with caplog.at_level(logging.WARNING, logger="django_klaviyo.receivers"):
        order.status = Order.Status.PLACED
        order.save()
    assert Order.objects.get(pk=order.pk).status == Order.Status.PLACED
    assert refused() == [("event", "value_currency")]
    assert "value_currency" in caplog.text


@pytest.mark.django_db
def test_other_mapper_errors_are_logged_in_production_and_raised_in_debug(customer, caplog):
    with klaviyo(ORDER_EVENTS_MAPPER=raising_mapper), override_settings(DEBUG=False):
        with caplog.at_level(logging.ERROR, logger="django_klaviyo.receivers"):
            order = services.place_order(customer=customer, lines=LINES)
        assert "ORDER_EVENTS_MAPPER failed" in caplog.text
        assert Order.objects.filter(pk=order.pk, status="placed").exists()
    assert OutboxEvent.objects.filter(status="dead", last_error_code="mapper_error").count() == 2
    OutboxEvent.objects.all().delete()
    with (
        klaviyo(ORDER_EVENTS_MAPPER=raising_mapper),
        override_settings(DEBUG=True),
        pytest.raises(RuntimeError, match="mapper bug"),
    ):
        services.place_order(customer=customer, lines=LINES)
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_placed_order_save_with_lines_costs_one_extra_query(customer, django_assert_num_queries):
    """The hot path: tracking adds exactly the one outbox INSERT to a checkout."""
    customer.refresh_from_db()
    # SAVEPOINT, INSERT order, INSERT lines (one statement), UPDATE order, RELEASE
    with klaviyo(ENABLED=False), django_assert_num_queries(5):
        services.place_order(customer=customer, lines=LINES)
    with django_assert_num_queries(6) as captured:
        services.place_order(customer=customer, lines=LINES)
    inserts = [q["sql"] for q in captured.captured_queries if "klaviyo_outbox" in q["sql"]]
    assert len(inserts) == 1 and inserts[0].startswith("INSERT")
    assert OutboxEvent.objects.count() == 1  # Placed Order, its Ordered Products inside


@pytest.mark.django_db
def test_status_change_of_a_loaded_order_reads_its_lines_once(customer, django_assert_num_queries):
    order = Order.objects.create(number="B-5", customer=customer, email=customer.email)
    OrderLine.objects.bulk_create(
        [OrderLine(order=order, sku=f"S{i}", name="Sock", unit_price=1) for i in range(3)]
    )
    order = Order.objects.get(pk=order.pk)
    order.status = Order.Status.PLACED
    # UPDATE order, SELECT lines, INSERT outbox: the customer is not loaded.
    with django_assert_num_queries(3):
        order.save()


# --- users ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_new_user_enqueues_an_upsert_and_links_the_profile():
    user = User.objects.create_user("ada", email="ada@example.com", first_name="Ada")
    assert upserts() == [
        {"email": "ada@example.com", "external_id": str(user.pk), "first_name": "Ada"}
    ]
    link = KlaviyoProfileLink.objects.get(user=user)
    assert (link.email, link.external_id, link.phone_number) == (
        "ada@example.com",
        str(user.pk),
        "",
    )


@pytest.mark.django_db
def test_only_profile_changes_enqueue_upserts(customer):
    customer.last_login = timezone.now()
    customer.save()
    customer.set_password("new password")
    customer.save()
    User.objects.get(pk=customer.pk).save()
    assert upserts() == []

    customer.last_name = "Lovelace"
    customer.save()
    customer.save()  # same state again
    assert [p.get("last_name") for p in upserts()] == ["Lovelace"]


@pytest.mark.django_db
def test_a_stale_copy_saving_the_same_change_enqueues_once(customer):
    first, second = User.objects.get(pk=customer.pk), User.objects.get(pk=customer.pk)
    first.first_name = second.first_name = "Augusta"
    first.save()
    second.save()
    assert [p["first_name"] for p in upserts()] == ["Augusta"]


@pytest.mark.django_db
def test_changing_back_and_forth_sends_every_change(customer):
    for name in ["B", "Ada", "B", "Ada"]:
        user = User.objects.get(pk=customer.pk)
        user.first_name = name
        user.save()
    assert [p["first_name"] for p in upserts()] == ["B", "Ada", "B", "Ada"]
    assert OutboxEvent.objects.filter(dedupe_key__isnull=True).count() == 0


@pytest.mark.django_db
def test_a_dead_upsert_is_retried_by_the_next_identical_save(customer):
    customer.first_name = "B"
    customer.save()
    OutboxEvent.objects.update(status=OutboxEvent.Status.DEAD)
    stale = User.objects.get(pk=customer.pk)
    stale.__dict__[user_receivers.FIELDS_SNAPSHOT]["first_name"] = "Ada"
    stale.save()
    assert [p["first_name"] for p in upserts()] == ["B", "B"]


@pytest.mark.django_db
def test_email_change_updates_the_profile_link(customer):
    customer.email = "augusta@example.com"
    customer.save()
    link = KlaviyoProfileLink.objects.get(user=customer)
    assert link.email == "augusta@example.com"
    assert KlaviyoProfileLink.objects.count() == 1


@pytest.mark.django_db
def test_a_guest_link_is_adopted_when_the_guest_signs_up():
    guest = KlaviyoProfileLink.objects.create(email="gina@example.com", klaviyo_id="01GUEST")
    user = User.objects.create_user("gina", email="gina@example.com")
    guest.refresh_from_db()
    assert guest.user == user and guest.external_id == str(user.pk)
    assert KlaviyoProfileLink.objects.count() == 1


@pytest.mark.django_db
def test_invalid_user_email_does_not_break_the_save(caplog):
    with caplog.at_level(logging.WARNING, logger="django_klaviyo.receivers"):
        user = User.objects.create_user("eve", email="not-an-email")
    assert User.objects.filter(pk=user.pk).exists()
    assert refused() == [("profile_upsert", "email")]
    assert not KlaviyoProfileLink.objects.exists()
    assert "email" in caplog.text


@pytest.mark.django_db
def test_track_users_off_enqueues_nothing():
    with klaviyo(TRACK_USERS=False):
        User.objects.create_user("ada", email="ada@example.com")
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_user_save_queries_stay_few(customer, django_assert_num_queries):
    customer.first_name = "Augusta"
    # UPDATE user, SELECT latest upsert, INSERT outbox (identifiers unchanged: no link write)
    with django_assert_num_queries(3):
        customer.save()


# --- wiring ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_connect_receivers_is_idempotent_and_tolerates_a_bad_order_model():
    with klaviyo(ORDER_MODEL="nonsense"):
        receivers.connect()
    with klaviyo(ORDER_MODEL="shop.DoesNotExist"):
        receivers.connect()
    receivers.connect()
    live = [r for r in post_save._live_receivers(Order)]
    flat = live[0] if live and isinstance(live[0], list) else live
    assert sum(r is receivers._order_post_save for r in flat) == 1
