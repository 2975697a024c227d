"""Nothing dropped: what the save receivers cannot enqueue is kept as a dead row with the
reason, the store's save commits, and the admin counts it. Public API calls still raise."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import override_settings
from django.urls import reverse
from shop import services
from shop.models import Order

import django_klaviyo
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.outbox import actions as operations
from django_klaviyo.outbox.refused import INVALID_ON_SAVE, MAPPER_ERROR, MAX_STORED_DEPTH, storable

User = get_user_model()
LINES = [{"sku": "TEE", "name": "T-shirt", "quantity": 2, "unit_price": Decimal("10.00")}]
DEAD = OutboxEvent.Status.DEAD


def klaviyo(**overrides: object) -> override_settings:
    return override_settings(KLAVIYO={**settings.KLAVIYO, **overrides})


def nested(levels: int, leaf: object = "deep") -> object:
    value: object = leaf
    for _ in range(levels):
        value = {"inner": value}
    return value


def refused_rows():
    return OutboxEvent.objects.filter(status=DEAD, last_error_code=INVALID_ON_SAVE)


def assert_store_transaction_still_usable() -> None:
    # On PostgreSQL a failed statement would abort the transaction: this query would raise.
    assert Order.objects.count() >= 1


@pytest.fixture
def guest_checkout(transactional_db):
    """Checkouts as the store writes them: the order and its lines in one transaction."""

    def checkout(**fields: object) -> Order:
        with transaction.atomic():
            order = services.place_order(lines=LINES, **fields)
            assert_store_transaction_still_usable()
        return order

    return checkout


@pytest.mark.parametrize(
    ("fields", "field_named"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "ann@example.com", "currency": "$$$"}, "value_currency"),
        ({"email": "ann@example.com", "shipping_address": nested(15)}, "ShippingAddress"),
    ],
    ids=["bad-email", "bad-currency", "address-too-deep"],
)
def test_an_invalid_order_commits_and_leaves_one_dead_row_with_the_reason(
    guest_checkout, fields, field_named
):
    order = guest_checkout(**fields)

    assert Order.objects.get(pk=order.pk).status == Order.Status.PLACED
    row = OutboxEvent.objects.get()
    assert row.status == DEAD
    assert row.last_error_code == INVALID_ON_SAVE
    assert row.last_error_detail.startswith("Invalid input: ")
    assert field_named in row.last_error_detail
    assert f"shop.order:{order.pk}" in row.outcome_note
    assert row.attempts == 0 and row.sent_at is None


def test_the_refused_event_keeps_its_payload(guest_checkout):
    guest_checkout(email="not-an-email")
    row = OutboxEvent.objects.get()
    assert row.kind == OutboxEvent.Kind.EVENT
    assert row.metric == "Placed Order"
    assert row.payload["profile"]["email"] == "not-an-email"
    assert row.payload["properties"]["Items"][0]["SKU"] == "TEE"


def mapper_with_unstorable_properties(order, previous_status, created):
    if order.status != Order.Status.PLACED:
        return []
    return [
        {
            "metric": "Placed Order",
            "profile": {"email": "ann@example.com"},
            "properties": {
                "Note": "nul\x00here",
                "Broken": "lone \ud800 surrogate",
                "Deep": nested(3000),
                "Total": Decimal("12.50"),
            },
        }
    ]


def test_an_unstorable_payload_is_stored_as_far_as_it_can_be(guest_checkout):
    with klaviyo(ORDER_EVENTS_MAPPER=mapper_with_unstorable_properties):
        guest_checkout(email="ann@example.com")
    row = OutboxEvent.objects.get()
    assert row.status == DEAD and row.last_error_code == INVALID_ON_SAVE
    properties = row.payload["properties"]
    assert properties["Note"] == "nul\ufffdhere"
    assert properties["Broken"] == "lone ? surrogate"
    assert properties["Total"] == "12.50"
    depth, value = 1, properties["Deep"]  # "Deep" sits two levels below the payload
    while isinstance(value, dict):
        depth, value = depth + 1, value["inner"]
    assert depth == MAX_STORED_DEPTH - 1
    assert value == f"[… cut: nested deeper than {MAX_STORED_DEPTH} levels]"


def mapper_with_one_bad_event(order, previous_status, created):
    if order.status != Order.Status.PLACED:
        return []
    good = {"metric": "Earned Points", "profile": {"email": "ann@example.com"}, "value": 20}
    bad = {**good, "metric": "Redeemed Points", "value_currency": "points!"}
    return [good, bad]


def test_the_valid_events_of_the_same_save_are_enqueued(guest_checkout):
    with klaviyo(ORDER_EVENTS_MAPPER=mapper_with_one_bad_event):
        guest_checkout(email="ann@example.com")
    assert list(OutboxEvent.objects.values_list("metric", "status").order_by("metric")) == [
        ("Earned Points", OutboxEvent.Status.PENDING),
        ("Redeemed Points", DEAD),
    ]


def test_a_crashing_mapper_leaves_a_dead_row_in_production(guest_checkout):
    def crashing(order, previous_status, created):
        if order.status == Order.Status.PLACED:
            raise RuntimeError("mapper bug")
        return []

    with klaviyo(ORDER_EVENTS_MAPPER=crashing), override_settings(DEBUG=False):
        order = guest_checkout(email="ann@example.com")
    row = OutboxEvent.objects.get()
    assert (row.status, row.last_error_code) == (DEAD, MAPPER_ERROR)
    assert row.last_error_detail == "RuntimeError: mapper bug"
    assert row.payload == {"mapper": "ORDER_EVENTS_MAPPER", "source": f"shop.order:{order.pk}"}


@pytest.mark.django_db(transaction=True)
def test_an_invalid_user_profile_leaves_a_dead_upsert_and_the_user_saves():
    with transaction.atomic():
        user = User.objects.create_user("ann", email="not-an-email")
        assert User.objects.filter(pk=user.pk).exists()
    row = OutboxEvent.objects.get()
    assert (row.kind, row.status) == (OutboxEvent.Kind.PROFILE_UPSERT, DEAD)
    assert "email" in row.last_error_detail
    assert row.payload["profile"]["email"] == "not-an-email"


@pytest.mark.django_db
def test_rows_refused_on_save_are_not_requeued():
    with klaviyo(ORDER_EVENTS_MAPPER=mapper_with_one_bad_event):
        services.place_order(email="ann@example.com", lines=LINES)
    assert operations.requeue_dead() == 0
    assert operations.retry_now(OutboxEvent.objects.all()) == 0
    assert refused_rows().count() == 1


@pytest.mark.django_db
def test_the_admin_counts_and_filters_rows_refused_on_save(client):
    services.place_order(email="not-an-email", lines=LINES)
    services.place_order(email="ann@example.com", lines=LINES)
    with klaviyo(TRACK_USERS=False):
        admin = User.objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin)
    url = reverse("admin:django_klaviyo_outboxevent_changelist")

    page = client.get(url).content.decode()
    assert 'id="klaviyo-dead">1<' in page
    assert f'?last_error_code={INVALID_ON_SAVE}">{INVALID_ON_SAVE}</a>' in page
    filtered = client.get(url, {"last_error_code": INVALID_ON_SAVE}).content.decode()
    assert "1 outbox event" in filtered


@pytest.mark.django_db
def test_public_api_calls_still_raise_to_their_caller():
    with pytest.raises(KlaviyoValidationError) as raised:
        django_klaviyo.track("Placed Order", {"email": "not-an-email"})
    assert raised.value.field and "email" in raised.value.field
    assert not OutboxEvent.objects.exists()


def test_storable_bounds_any_input():
    huge = {"k": ["x" * 20_000] * 5_000, 1: float("nan"), "obj": object()}
    stored = storable(huge)
    assert stored["1"] == "nan"
    assert stored["obj"].startswith("<object: ")
    assert stored["k"][0].endswith("[… cut: 20000 characters]")
    assert stored["k"][-1] == "[… cut: 4000 more items]"
