"""The client's back-in-stock and coupon calls are cleaned by the rulebook; the flusher
sends outbox rows as they were cleaned when written.

Before, ``KlaviyoClient.create_back_in_stock_subscription`` passed the profile through
as given (an email with spaces, a ``first_name`` Klaviyo's subscription does not take, an
sms subscription without a phone number all went to Klaviyo), ``create_coupon`` checked
only a non-empty external id and ``run_coupon_code_job`` nothing of the codes, while the
outbox rows of the same kinds were refused at once. And because the senders called
those public methods, checks ran a second time on rows cleaned when written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import responses
from django.utils import timezone

import django_klaviyo as klaviyo
from django_klaviyo import coupons, rules
from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter
from django_klaviyo.client.bodies.catalog import catalog_resource, related
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.outbox import OutboxRow, enqueue_many
from django_klaviyo.rules import catalog as catalog_rules
from django_klaviyo.rules import coupons as coupon_rules
from django_klaviyo.testing.sandbox.catalog_routes import catalog_store
from tests.klaviyo_fixtures import flush_now

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status
BIS_URL = re.compile(r"^https://a\.klaviyo\.com/api/back-in-stock-subscriptions/?$")
COUPONS_URL = re.compile(r"^https://a\.klaviyo\.com/api/coupons/?$")
CODE_JOBS_URL = re.compile(r"^https://a\.klaviyo\.com/api/coupon-code-bulk-create-jobs")


# Rate-limit windows live in the cache: every test starts with none.
pytestmark = pytest.mark.usefixtures("fresh_rate_limits")


@pytest.fixture(autouse=True)
def quick_jobs(settings: Any) -> None:
    settings.KLAVIYO = {**settings.KLAVIYO, "CATALOG_JOB_POLL_SECONDS": 0.01}


@pytest.fixture
def client() -> KlaviyoClient:
    return KlaviyoClient(
        "pk_test_key_0000", rate_limiter=UnlimitedRateLimiter(), sleep=lambda s: None
    )


@pytest.fixture
def mocked(mocked: responses.RequestsMock) -> responses.RequestsMock:
    """The shared Klaviyo mock (tests/klaviyo_fixtures.py), accepting back-in-stock
    subscriptions, coupons and code jobs."""
    mocked.add(responses.POST, BIS_URL, status=202)
    mocked.add(
        responses.POST,
        COUPONS_URL,
        status=201,
        json={"data": {"type": "coupon", "id": "SUMMER", "attributes": {}}},
    )
    mocked.add(
        responses.POST,
        CODE_JOBS_URL,
        status=202,
        json={"data": {"type": "coupon-code-bulk-create-job", "id": "J1", "attributes": {}}},
    )
    return mocked


def sent_bodies(mocked: Any, pattern: re.Pattern[str]) -> list[dict[str, Any]]:
    return [
        json.loads(c.request.body)
        for c in mocked.calls
        if c.request.method == "POST" and pattern.match(c.request.url)
    ]


def refused(call: Callable[[], Any]) -> KlaviyoValidationError:
    with pytest.raises(KlaviyoValidationError) as caught:
        call()
    return caught.value


# --- create_back_in_stock_subscription -------------------------------------------------


def test_back_in_stock_normalises_the_identifiers_it_sends(client, mocked):
    client.create_back_in_stock_subscription(
        {"email": " ada@example.com ", "phone_number": "+1 (415) 555-0100"},
        "MUG",
        ["sms", "email"],
    )

    (body,) = sent_bodies(mocked, BIS_URL)
    attributes = body["data"]["attributes"]
    assert attributes["profile"]["data"]["attributes"] == {
        "email": "ada@example.com",
        "phone_number": "+14155550100",
    }
    assert attributes["channels"] == ["EMAIL", "SMS"]
    assert body["data"]["relationships"]["variant"]["data"]["id"] == "$custom:::$default:::MUG"


@pytest.mark.parametrize(
    ("profile", "variant", "channels", "field"),
    [
        # The email channel needs an email.
        ({"phone_number": "+14155550100"}, "MUG", ["email"], "profile.email"),
        # The sms channel needs a phone number.
        ({"email": "ada@example.com"}, "MUG", ["sms"], "profile.phone_number"),
        # Klaviyo's subscription profile takes identifiers only.
        ({"email": "ada@example.com", "first_name": "Ada"}, "MUG", ["email"], "profile.first_name"),
        ({"email": "not an email"}, "MUG", ["email"], "profile.email"),
        ({"email": "ada@example.com"}, "MUG", ["fax"], "channels"),
        ({"email": "ada@example.com"}, "MUG", [], "channels"),
        ({"email": "ada@example.com"}, "  ", ["email"], "variant_external_id"),
        ({"email": "ada@example.com"}, "M\x00G", ["email"], "variant_external_id"),
        (None, "MUG", ["email"], "profile"),
    ],
)
def test_back_in_stock_refuses_what_a_back_in_stock_row_refuses_naming_the_argument(
    client, mocked, profile, variant, channels, field
):
    error = refused(lambda: client.create_back_in_stock_subscription(profile, variant, channels))

    assert error.field == field
    assert sent_bodies(mocked, BIS_URL) == []


# --- create_coupon ---------------------------------------------------------------------


def test_create_coupon_sends_the_cleaned_coupon(client, mocked):
    client.create_coupon(" SUMMER ", "10% off")

    (body,) = sent_bodies(mocked, COUPONS_URL)
    assert body == {
        "data": {
            "type": "coupon",
            "attributes": {"external_id": "SUMMER", "description": "10% off"},
        }
    }


@pytest.mark.parametrize(
    ("external_id", "description", "field"),
    [
        ("SUMMER 10%", "", "external_id"),  # letters, digits, '-' and '_' only
        ("S" * 256, "", "external_id"),
        ("", "", "external_id"),
        ("SUMMER", "x" * 256, "description"),
        ("SUMMER", "10%\x00off", "description"),
        ("SUMMER", 10, "description"),
    ],
)
def test_create_coupon_refuses_what_a_coupon_row_refuses(
    client, mocked, external_id, description, field
):
    error = refused(lambda: client.create_coupon(external_id, description))

    assert error.field == field
    assert sent_bodies(mocked, COUPONS_URL) == []
    # The same input written as an outbox row is refused the same way.
    row_error = refused(
        lambda: rules.clean(Kind.COUPON, {"external_id": external_id, "description": description})
    )
    assert row_error.field == field


# --- run_coupon_code_job ---------------------------------------------------------------


def test_coupon_code_job_sends_cleaned_codes_and_expiries_in_utc(client, mocked):
    mocked.add(
        responses.GET,
        re.compile(r"^https://a\.klaviyo\.com/api/coupon-code-bulk-create-jobs/J1"),
        json={
            "data": {
                "type": "coupon-code-bulk-create-job",
                "id": "J1",
                "attributes": {"status": "complete"},
            },
            "included": [],
        },
    )

    client.run_coupon_code_job(
        " SUMMER ", [(" SUM-1 ", "2027-01-01T02:00:00+02:00"), ("SUM-2", None)], poll_interval=0
    )

    (body,) = sent_bodies(mocked, CODE_JOBS_URL)
    codes = body["data"]["attributes"]["coupon-codes"]["data"]
    assert [c["attributes"] for c in codes] == [
        {"unique_code": "SUM-1", "expires_at": "2027-01-01T00:00:00+00:00"},
        {"unique_code": "SUM-2"},
    ]
    assert {c["relationships"]["coupon"]["data"]["id"] for c in codes} == {"SUMMER"}


@pytest.mark.parametrize(
    ("coupon", "codes", "field"),
    [
        ("SUMMER", [("SUM 1", None)], "codes[0]"),
        ("SUMMER", [("SUM-1", None), ("", None)], "codes[1]"),
        ("SUMMER", [("SUM-1", "next tuesday")], "codes[0].expires_at"),
        ("SUMMER", [("SUM-1", None, "extra")], "codes[0]"),
        ("SUMMER", ["SUM-1"], "codes[0]"),
        ("SUMMER 10%", [("SUM-1", None)], "coupon_id"),
        ("SUMMER", [], "codes"),
    ],
)
def test_coupon_code_job_refuses_what_a_coupon_code_row_refuses(
    client, mocked, coupon, codes, field
):
    error = refused(lambda: client.run_coupon_code_job(coupon, codes, poll_interval=0))

    assert error.field == field
    assert sent_bodies(mocked, CODE_JOBS_URL) == []


# --- start_catalog_job / run_catalog_job ------------------------------------------------

MUG = {"title": "Mug", "url": "https://shop.example/p/MUG", "price": 12.5, "description": ""}
MUG_VARIANT = {**MUG, "sku": "MUG", "inventory_quantity": 3.0}


def item_link(external_id: str) -> dict[str, Any]:
    return {"data": related("item", [external_id])["data"][0]}


def test_a_catalog_job_sends_the_resources_it_was_given_cleaned(client, mocked):
    mocked.add(
        responses.POST,
        re.compile(r"^https://a\.klaviyo\.com/api/catalog-item-bulk-create-jobs"),
        status=202,
        json={"data": {"type": "catalog-item-bulk-create-job", "id": "J1", "attributes": {}}},
    )
    built = catalog_resource(
        "item", "create", "MUG", MUG, {"categories": related("category", ["kitchen"])}
    )
    spaced = catalog_resource("item", "create", " CUP ", {**MUG, "title": "Cup"})

    client.start_catalog_job("item", "create", [built, spaced])

    (body,) = [json.loads(c.request.body) for c in mocked.calls]
    # A valid resource goes as built; an external id loses its spaces, as a row's does.
    assert body["data"]["attributes"]["items"]["data"] == [
        built,
        {**spaced, "attributes": {**spaced["attributes"], "external_id": "CUP"}},
    ]


@pytest.mark.parametrize(
    ("kind", "op", "resource", "field"),
    [
        (
            "item",
            "create",
            catalog_resource("item", "create", "MUG", {**MUG, "price": -1}),
            "resources[0].attributes.price",
        ),
        (
            "item",
            "create",
            catalog_resource("item", "create", "MUG", {"url": MUG["url"]}),
            "resources[0].attributes.title",
        ),
        (
            "item",
            "create",
            catalog_resource("item", "create", "MUG", {**MUG, "title": "M\x00g"}),
            "resources[0].attributes.title",
        ),
        (
            "item",
            "update",
            catalog_resource("item", "update", "MUG", {"colour": "blue"}),
            "resources[0].attributes.colour",
        ),
        (
            "item",
            "update",
            {"type": "catalog-item", "id": "MUG", "attributes": {"price": 3}},
            "resources[0].id",
        ),
        (
            "item",
            "delete",
            {"type": "catalog-variant", "id": "$custom:::$default:::MUG"},
            "resources[0].type",
        ),
        (
            "variant",
            "create",
            catalog_resource("variant", "create", "MUG", MUG_VARIANT),
            "resources[0].relationships.item",
        ),
        (
            "variant",
            "create",
            catalog_resource("variant", "create", "MUG", MUG_VARIANT, {"item": item_link(" ")}),
            "resources[0].relationships.item.data.id",
        ),
        (
            "variant",
            "update",
            catalog_resource("variant", "update", "MUG", {"inventory_quantity": "3"}),
            "resources[0].attributes.inventory_quantity",
        ),
    ],
)
def test_a_catalog_job_refuses_what_a_catalog_row_refuses(
    client, mocked, kind, op, resource, field
):
    error = refused(lambda: client.run_catalog_job(kind, op, [resource], poll_interval=0))

    assert error.field == field
    assert [c for c in mocked.calls if "catalog" in c.request.url] == []


# --- the flusher sends rows as they were cleaned when written --------------------------


def count_calls(monkeypatch: Any, module: Any, name: str) -> list[Any]:
    """Record every call of ``module.name``: a rule every cleaner of the kind goes
    through (the row's, and the client's request rule), so a row cleaned again anywhere
    on its way out shows here."""
    original = getattr(module, name)
    calls: list[Any] = []

    def counted(value: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(value)
        return original(value, *args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.django_db
def test_a_current_back_in_stock_row_is_sent_without_being_cleaned_again(monkeypatch, mocked):
    row = klaviyo.subscribe_back_in_stock({"email": " ada@example.com "}, "MUG")
    assert row is not None and row.rules_version == rules.RULES_VERSION
    cleaned = count_calls(monkeypatch, catalog_rules, "clean_profile")

    flush_now()

    row.refresh_from_db()
    assert row.status == Status.SENT
    assert cleaned == []
    (body,) = sent_bodies(mocked, BIS_URL)
    assert body["data"]["attributes"]["profile"]["data"]["attributes"] == {
        "email": "ada@example.com"
    }


@pytest.mark.django_db
def test_an_old_back_in_stock_row_is_cleaned_once_before_it_is_sent(monkeypatch, mocked):
    row = OutboxEvent.objects.create(
        kind=Kind.BACK_IN_STOCK,
        # Written under older rules: spaces, a name Klaviyo's subscription does not take.
        payload={
            "profile": {"email": " ada@example.com ", "first_name": "Ada"},
            "variant": "MUG",
            "channels": ["email"],
        },
        profile_key="email:ada@example.com",
        rules_version=0,
    )
    cleaned = count_calls(monkeypatch, catalog_rules, "clean_profile")

    flush_now()

    row.refresh_from_db()
    assert row.status == Status.SENT
    assert cleaned == [{"email": " ada@example.com ", "first_name": "Ada"}]
    (body,) = sent_bodies(mocked, BIS_URL)
    assert body["data"]["attributes"]["profile"]["data"]["attributes"] == {
        "email": "ada@example.com"
    }
    assert body["data"]["attributes"]["channels"] == ["EMAIL"]


@pytest.mark.django_db
def test_current_coupon_rows_are_sent_without_being_cleaned_again(monkeypatch, klaviyo_sandbox):
    coupon = coupons.get_or_create_coupon("SUMMER", description="10% off")
    coupons.add_codes(coupon, ["SUM-1", "SUM-2"])
    coupons.enqueue_codes(coupon)
    assert set(OutboxEvent.objects.values_list("rules_version", flat=True)) == {rules.RULES_VERSION}
    cleaned = count_calls(monkeypatch, coupon_rules, "clean_code")

    flush_now()

    assert not OutboxEvent.objects.exclude(status=Status.SENT).exists()
    assert cleaned == []
    store = catalog_store(klaviyo_sandbox.state)
    assert store.coupons["SUMMER"]["description"] == "10% off"
    assert {c["unique_code"] for c in store.coupon_codes("SUMMER")} == {"SUM-1", "SUM-2"}


@pytest.mark.django_db
def test_old_coupon_code_rows_are_cleaned_once_before_they_are_sent(monkeypatch, klaviyo_sandbox):
    coupon = coupons.get_or_create_coupon("SUMMER")
    coupons.enqueue_coupon(coupon)
    flush_now()
    expiry = (timezone.now() + timezone.timedelta(days=30)).replace(microsecond=0)
    row = OutboxEvent.objects.create(
        kind=Kind.COUPON_CODE,
        # Written under older rules: a code with spaces, an expiry in another zone.
        payload={"coupon": "SUMMER", "code": " SUM-9 ", "expires_at": expiry.isoformat()},
        rules_version=0,
    )
    cleaned = count_calls(monkeypatch, coupon_rules, "clean_code")

    flush_now()

    row.refresh_from_db()
    assert row.status == Status.SENT
    assert cleaned == ["SUMMER", " SUM-9 "]  # the row's coupon and code, once
    (code,) = catalog_store(klaviyo_sandbox.state).coupon_codes("SUMMER")
    assert code["unique_code"] == "SUM-9"


# A category row whose external id still has its spaces: cleaning changes it.
KITCHEN_CATEGORY = {
    "op": "upsert",
    "external_id": " kitchen ",
    "create": True,
    "attributes": {"name": "Kitchen"},
}


@pytest.mark.django_db
def test_current_catalog_rows_are_sent_without_being_cleaned_again(monkeypatch, klaviyo_sandbox):
    (row,) = enqueue_many(
        [
            OutboxRow(
                kind=Kind.CATALOG_CATEGORY,
                payload=dict(KITCHEN_CATEGORY),
            )
        ]
    )
    assert row.rules_version == rules.RULES_VERSION
    cleaned = count_calls(monkeypatch, catalog_rules, "external_id")

    flush_now()

    row.refresh_from_db()
    assert row.status == Status.SENT
    assert cleaned == []
    categories = catalog_store(klaviyo_sandbox.state).categories()
    assert [c["external_id"] for c in categories.values()] == ["kitchen"]


@pytest.mark.django_db
def test_an_old_catalog_row_is_cleaned_once_before_it_is_sent(monkeypatch, klaviyo_sandbox):
    row = OutboxEvent.objects.create(
        kind=Kind.CATALOG_CATEGORY,
        # Written under older rules: the external id keeps its spaces.
        payload=dict(KITCHEN_CATEGORY),
        rules_version=0,
    )
    cleaned = count_calls(monkeypatch, catalog_rules, "external_id")

    flush_now()

    row.refresh_from_db()
    assert row.status == Status.SENT
    assert cleaned == [" kitchen "]
    categories = catalog_store(klaviyo_sandbox.state).categories()
    assert [c["external_id"] for c in categories.values()] == ["kitchen"]
