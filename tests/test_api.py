"""The public API validates at call time and writes the documented outbox payloads."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings
from django.utils import timezone

import django_klaviyo
from django_klaviyo import api
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import (
    Consent,
    KlaviyoList,
    KlaviyoProfileLink,
    ListMembership,
    OutboxEvent,
)

ADA = {"email": "ada@example.com"}
WHEN = dt.datetime(2026, 7, 20, 12, 34, 56, tzinfo=dt.timezone.utc)


def klaviyo(**overrides: object) -> override_settings:
    return override_settings(KLAVIYO={**settings.KLAVIYO, **overrides})


def only_row() -> OutboxEvent:
    return OutboxEvent.objects.get()


def test_public_names_are_exported_lazily():
    for name in django_klaviyo.__all__:
        assert getattr(django_klaviyo, name) is getattr(api, name)
    with pytest.raises(AttributeError):
        django_klaviyo.not_a_function


@pytest.mark.django_db
def test_track_writes_the_event_payload():
    api.track(
        "Placed Order",
        {"email": "Ada@Example.com ", "phone_number": "+1 (415) 555-0100", "first_name": "Ada"},
        properties={"OrderId": "A1", "Total": Decimal("10.50")},
        value=Decimal("10.5"),
        value_currency="usd",
        time=WHEN,
        unique_id="order-1-placed",
    )
    row = only_row()
    assert row.kind == "event"
    assert row.metric == "Placed Order"
    assert row.unique_id == "order-1-placed"
    assert row.profile_key == "email:ada@example.com"
    assert row.payload == {
        "metric": "Placed Order",
        "profile": {
            "email": "Ada@Example.com",
            "phone_number": "+14155550100",
            "first_name": "Ada",
        },
        "properties": {"OrderId": "A1", "Total": 10.5},
        "time": "2026-07-20T12:34:56+00:00",
        "value": 10.5,
        "value_currency": "USD",
    }


@pytest.mark.django_db
def test_track_defaults_unique_id_to_a_stored_uuid_and_time_to_now():
    before = timezone.now()
    first = api.track("Viewed Page", ADA)
    second = api.track("Viewed Page", ADA)
    assert len(first.unique_id) == 32 and first.unique_id != second.unique_id
    stored = OutboxEvent.objects.get(pk=first.pk)
    assert stored.unique_id == first.unique_id
    sent_time = dt.datetime.fromisoformat(stored.payload["time"])
    assert before <= sent_time <= timezone.now()
    assert stored.payload["properties"] == {} and stored.payload["value"] is None


@pytest.mark.django_db
def test_track_with_a_dedupe_key_enqueues_once():
    api.track("Viewed Page", ADA, dedupe_key="page-1")
    api.track("Viewed Page", ADA, dedupe_key="page-1")
    assert OutboxEvent.objects.count() == 1


@pytest.mark.django_db
def test_track_accepts_anonymous_and_id_identifiers_and_a_127_char_metric():
    api.track("m" * 127, {"anonymous_id": "anon-1"})
    api.track("Viewed Page", {"id": "01H000"})
    assert sorted(OutboxEvent.objects.values_list("profile_key", flat=True)) == [
        "anonymous_id:anon-1",
        "id:01H000",
    ]


@pytest.mark.django_db
def test_track_maps_a_user_through_the_profile_mapper():
    user = get_user_model().objects.create_user("ada", email="ada@example.com", first_name="Ada")
    OutboxEvent.objects.all().delete()
    api.track("Viewed Page", user)
    assert only_row().payload["profile"] == {
        "email": "ada@example.com",
        "external_id": str(user.pk),
        "first_name": "Ada",
    }


BAD_TRACK_CALLS = [
    ({"profile": {}}, "profile"),
    ({"profile": None}, "profile"),
    ({"profile": {"first_name": "no identifier"}}, "profile"),
    ({"profile": {"email": "not-an-email"}}, "email"),
    ({"profile": {"phone_number": "415 555 0100"}}, "phone_number"),
    ({"profile": {"email": "a@example.com", "favourite": "x"}}, "profile.favourite"),
    ({"profile": 42}, "profile"),
    ({"metric": ""}, "metric"),
    ({"metric": "   "}, "metric"),
    ({"metric": "m" * 128}, "metric"),
    ({"metric": None}, "metric"),
    ({"properties": {"Tags": {"a", "b"}}}, "properties.Tags"),
    ({"properties": {"Obj": object()}}, "properties.Obj"),
    ({"properties": ["not", "a", "dict"]}, "properties"),
    ({"properties": {f"p{i}": i for i in range(401)}}, "properties"),
    ({"value": "12.00"}, "value"),
    ({"value": True}, "value"),
    ({"value": float("inf")}, "value"),
    ({"value_currency": "US"}, "value_currency"),
    ({"value_currency": "US1"}, "value_currency"),
    ({"value_currency": 840}, "value_currency"),
    ({"time": "yesterday"}, "time"),
    ({"time": "2026-13-45T00:00:00"}, "time"),
    ({"time": dt.datetime(1985, 1, 1, tzinfo=dt.timezone.utc)}, "time"),
    ({"time": dt.date(2026, 1, 1)}, "time"),
    ({"unique_id": ""}, "unique_id"),
    ({"dedupe_key": "k" * 300}, "dedupe_key"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("overrides", "field"), BAD_TRACK_CALLS)
def test_track_rejects_bad_input_at_call_time(overrides, field):
    call = {"metric": "Viewed Page", "profile": ADA, **overrides}
    with pytest.raises(KlaviyoValidationError) as info:
        api.track(call.pop("metric"), call.pop("profile"), **call)
    assert info.value.field == field
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_upsert_profile_payload_from_dict_and_keywords():
    api.upsert_profile(
        {"external_id": 42, "first_name": "Ada"},
        location={"city": "London", "country": "GB"},
        properties={"plan": "pro", "since": dt.date(2024, 1, 2)},
    )
    row = only_row()
    assert row.kind == "profile_upsert"
    assert row.profile_key == "external_id:42"
    assert row.payload == {
        "profile": {
            "external_id": "42",
            "first_name": "Ada",
            "location": {"city": "London", "country": "GB"},
            "properties": {"plan": "pro", "since": "2024-01-02"},
        }
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({"first_name": "Ada"}, "profile"),
        ({"anonymous_id": "x"}, "anonymous_id"),
        ({"email": "a@example.com", "location": {"planet": "Mars"}}, "profile.location.planet"),
        ({"email": "a@example.com", "location": "London"}, "profile.location"),
        ({"email": "a@example.com", "properties": ["x"]}, "profile.properties"),
        ({"email": "a@example.com", "nickname": "x"}, "profile.nickname"),
    ],
)
def test_upsert_profile_rejects_bad_profiles(profile, field):
    with pytest.raises(KlaviyoValidationError) as info:
        api.upsert_profile(profile)
    assert info.value.field == field
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_list_changes_carry_identifiers_only():
    newsletter = KlaviyoList.objects.create(klaviyo_id="Y6nRLr", name="Newsletter")
    api.add_to_list(newsletter, {"email": "ada@example.com", "first_name": "Ada"})
    api.remove_from_list("Y6nRLr", {"external_id": "7"})
    rows = list(OutboxEvent.objects.order_by("created_at"))
    assert [(r.kind, r.payload) for r in rows] == [
        ("list_add", {"list_id": "Y6nRLr", "profile": {"email": "ada@example.com"}}),
        ("list_remove", {"list_id": "Y6nRLr", "profile": {"external_id": "7"}}),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("list_id", ["", "   ", None, 12])
def test_list_changes_need_a_list_id(list_id):
    with pytest.raises(KlaviyoValidationError) as info:
        api.add_to_list(list_id, ADA)
    assert info.value.field == "list_id"


@pytest.mark.django_db
def test_subscribe_and_unsubscribe_payloads():
    api.subscribe(
        {"email": "ada@example.com", "phone_number": "+14155550100"},
        channels=["sms", "email"],
        list_id="Y6nRLr",
        custom_source="checkout",
    )
    api.subscribe(ADA, consented_at="2024-05-01T10:00:00Z")
    api.unsubscribe({"phone_number": "+14155550100"}, channels="sms")
    rows = list(OutboxEvent.objects.order_by("created_at"))
    assert [(r.kind, r.payload) for r in rows] == [
        (
            "subscribe",
            {
                "profile": {"email": "ada@example.com", "phone_number": "+14155550100"},
                "channels": ["email", "sms"],
                "list_id": "Y6nRLr",
                "custom_source": "checkout",
                "consented_at": None,
            },
        ),
        (
            "subscribe",
            {
                "profile": ADA,
                "channels": ["email"],
                "list_id": None,
                "custom_source": None,
                "consented_at": "2024-05-01T10:00:00+00:00",
            },
        ),
        (
            "unsubscribe",
            {"profile": {"phone_number": "+14155550100"}, "channels": ["sms"], "list_id": None},
        ),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: api.subscribe(ADA, channels=["email", "push"]), "channels"),
        (lambda: api.subscribe(ADA, channels=[]), "channels"),
        (lambda: api.subscribe(ADA, channels=["sms"]), "profile.phone_number"),
        (lambda: api.subscribe({"phone_number": "+14155550100"}), "profile.email"),
        (
            lambda: api.subscribe({"email": "a@example.com", "external_id": "1"}),
            "profile.external_id",
        ),
        (lambda: api.subscribe({"phone_number": "0800"}, channels="sms"), "phone_number"),
        (
            lambda: api.subscribe(ADA, consented_at=timezone.now() + dt.timedelta(days=1)),
            "consented_at",
        ),
        (lambda: api.subscribe(ADA, custom_source=""), "custom_source"),
        (lambda: api.unsubscribe(ADA, channels=["whatsapp"]), "channels"),
        (lambda: api.unsubscribe("ada@example.com"), "profile"),
    ],
)
def test_subscription_calls_reject_bad_input(call, field):
    with pytest.raises(KlaviyoValidationError) as info:
        call()
    assert info.value.field == field
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_forget_profile_payload():
    api.forget_profile(phone_number="+1 415 555 0100")
    assert only_row().payload == {"profile": {"phone_number": "+14155550100"}}
    assert only_row().kind == "profile_deletion"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "profile"),
        ({"email": "ada@example.com", "profile_id": "01H"}, "profile"),
        ({"email": "", "phone_number": None}, "profile"),
        ({"email": "nope"}, "email"),
        ({"profile_id": 5}, "profile_id"),
    ],
)
def test_forget_profile_needs_exactly_one_valid_identifier(kwargs, field):
    with pytest.raises(KlaviyoValidationError) as info:
        api.forget_profile(**kwargs)
    assert info.value.field == field
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_disabled_api_writes_nothing_but_still_validates():
    with klaviyo(ENABLED=False):
        assert api.track("Viewed Page", ADA) is None
        assert api.upsert_profile(ADA) is None
        with pytest.raises(KlaviyoValidationError):
            api.track("", ADA)
    assert not OutboxEvent.objects.exists()


PRODUCT = {
    "product_id": "TEE",
    "sku": "TEE-BLK",
    "name": "Black T-shirt",
    "price": Decimal("19.999"),
    "categories": "Apparel, Tops",
    "image_url": "https://shop.example.com/tee.png",
    "product_url": "https://shop.example.com/p/tee",
    "brand": "Acme",
}


@pytest.mark.django_db
def test_viewed_product():
    api.viewed_product(ADA, PRODUCT, time=WHEN)
    row = only_row()
    assert row.metric == "Viewed Product"
    assert row.payload["properties"] == {
        "ProductID": "TEE",
        "SKU": "TEE-BLK",
        "ProductName": "Black T-shirt",
        "Price": 20.0,
        "Categories": ["Apparel", "Tops"],
        "ImageURL": "https://shop.example.com/tee.png",
        "URL": "https://shop.example.com/p/tee",
        "Brand": "Acme",
    }
    # Klaviyo's guide gives Viewed Product no value: a view is not revenue.
    assert row.payload["value"] is None


@pytest.mark.django_db
def test_added_to_cart_describes_the_item_and_the_cart():
    mug = {"sku": "MUG", "name": "Mug", "price": "9.50", "quantity": 2}
    api.added_to_cart(
        ADA,
        mug,
        cart_items=[{**PRODUCT, "quantity": 1}, mug],
        currency="EUR",
        checkout_url="https://shop.example.com/cart",
    )
    payload = only_row().payload
    properties = payload["properties"]
    assert properties["AddedItemProductName"] == "Mug"
    assert properties["AddedItemQuantity"] == 2
    assert properties["AddedItemPrice"] == 9.5
    assert properties["ItemNames"] == ["Black T-shirt", "Mug"]
    # Items use the names of Klaviyo's abandoned-cart templates.
    assert properties["Items"][0] == {
        "ProductID": "TEE",
        "SKU": "TEE-BLK",
        "ProductName": "Black T-shirt",
        "Quantity": 1,
        "ItemPrice": 20.0,
        "RowTotal": 20.0,
        "ProductCategories": ["Apparel", "Tops"],
        "ImageURL": "https://shop.example.com/tee.png",
        "ProductURL": "https://shop.example.com/p/tee",
        "Brand": "Acme",
    }
    assert properties["Categories"] == ["Apparel", "Tops"]
    assert properties["ItemCount"] == 3
    assert properties["CheckoutURL"] == "https://shop.example.com/cart"
    assert payload["value"] == 39.0 and payload["value_currency"] == "EUR"


@pytest.mark.django_db
def test_started_checkout_fires_again_for_a_changed_cart_but_not_on_reload():
    when = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    for _ in range(2):  # reloading the checkout page
        api.started_checkout(ADA, [PRODUCT], checkout_id="c-9", currency="USD", time=when)
    row = only_row()
    # Klaviyo's guide: the cart id plus the Unix time.
    assert row.unique_id == f"c-9-{int(when.timestamp())}"
    assert row.payload["properties"]["CheckoutId"] == "c-9"
    assert row.payload["value"] == 20.0

    later = when + dt.timedelta(hours=2)
    api.started_checkout(ADA, [PRODUCT, {"sku": "MUG", "price": 5}], checkout_id="c-9", time=later)
    assert sorted(OutboxEvent.objects.values_list("unique_id", flat=True)) == [
        f"c-9-{int(when.timestamp())}",
        f"c-9-{int(later.timestamp())}",
    ]
    with pytest.raises(KlaviyoValidationError) as info:
        api.started_checkout(ADA, [], checkout_id="c-10")
    assert info.value.field == "items"
    with pytest.raises(KlaviyoValidationError) as info:
        api.started_checkout(ADA, [PRODUCT], checkout_id="")
    assert info.value.field == "checkout_id"


@pytest.mark.django_db
def test_backfill_marks_the_row_and_is_checked():
    api.track("Placed Order", ADA, value=5, backfill=True)
    assert only_row().payload["backfill"] is True
    with pytest.raises(KlaviyoValidationError) as info:
        api.track("Placed Order", ADA, backfill="yes")
    assert info.value.field == "backfill"


@pytest.mark.django_db
def test_subscription_status_reads_the_local_link():
    user = get_user_model().objects.create_user("ada", email="ada@example.com")
    KlaviyoProfileLink.objects.filter(user=user).update(
        email_consent=Consent.SUBSCRIBED, klaviyo_id="01H"
    )
    KlaviyoProfileLink.objects.create(email="guest@example.com", sms_consent=Consent.UNSUBSCRIBED)

    assert api.subscription_status(user=user)["email"] == Consent.SUBSCRIBED
    assert api.subscription_status(email="ADA@example.com")["klaviyo_id"] == "01H"
    assert api.subscription_status(email="guest@example.com")["sms"] == Consent.UNSUBSCRIBED
    assert api.subscription_status(phone_number="+14155550100") is None
    with pytest.raises(KlaviyoValidationError):
        api.subscription_status()


@pytest.mark.django_db
def test_subscription_status_for_one_list():
    """Per list: a global refusal wins, then the list's own consent, then the global one."""
    link = KlaviyoProfileLink.objects.create(
        email="ann@example.com", email_consent=Consent.SUBSCRIBED, sms_consent=Consent.SUBSCRIBED
    )
    newsletter = KlaviyoList.objects.create(klaviyo_id="NEWS", name="Newsletter")
    offers = KlaviyoList.objects.create(klaviyo_id="OFFERS", name="Offers")
    ListMembership.objects.create(
        klaviyo_list=newsletter,
        profile=link,
        synced_member=True,
        email_consent=Consent.UNSUBSCRIBED,
    )

    status = api.subscription_status(email="ann@example.com", list_id="NEWS")
    assert status["email"] == Consent.SUBSCRIBED  # global consent unchanged
    assert status["list"] == {
        "list_id": "NEWS",
        "member": True,
        "email": Consent.UNSUBSCRIBED,
        "email_at": None,
        "sms": Consent.SUBSCRIBED,
        "sms_at": None,
    }
    by_row = api.subscription_status(email="ann@example.com", list_id=offers)["list"]
    assert (by_row["member"], by_row["email"]) == (None, Consent.SUBSCRIBED)
    assert "list" not in api.subscription_status(email="ann@example.com")

    KlaviyoProfileLink.objects.filter(pk=link.pk).update(sms_consent=Consent.SUPPRESSED)
    status = api.subscription_status(email="ann@example.com", list_id="NEWS")
    assert status["list"]["sms"] == Consent.SUPPRESSED
    with pytest.raises(KlaviyoValidationError) as info:
        api.subscription_status(email="ann@example.com", list_id="")
    assert info.value.field == "list_id"
