"""Spec conformance: every request the client builds matches its operation in Klaviyo's
OpenAPI spec (route and request body schema), and the validator does reject bad bodies."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import re

import pytest
import responses

from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter
from django_klaviyo.client.bodies.catalog import catalog_resource, related
from django_klaviyo.client.bodies.consent import build_subscribe
from django_klaviyo.client.bodies.events import assemble_bulk_events, build_event
from django_klaviyo.client.bodies.profiles import build_profile_import
from django_klaviyo.client.catalog import CatalogJobTimeout
from django_klaviyo.client.ratelimit import OPERATION_LIMITS, VARIANT_LIMITS
from django_klaviyo.rules.consent import clean_consent_request
from django_klaviyo.rules.event_requests import clean_event_entries, clean_request_event
from django_klaviyo.rules.profiles import clean_event_profile
from django_klaviyo.testing.openapi import find_operation, validate_request

API = "https://a.klaviyo.com"
EVERYTHING_PROFILE = {
    "email": "ada@example.com",
    "phone_number": "+14155550100",
    "external_id": "user-42",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "organization": "Analytical Engines",
    "locale": "en-GB",
    "title": "Countess",
    "image": "https://example.com/ada.png",
    "location": {"city": "London", "country": "GB", "zip": "W1", "latitude": 51.5, "ip": None},
    "properties": {"plan": "pro", "tags": ["a", "b"]},
}
EVENT = {
    "metric": "Placed Order",
    "properties": {"OrderId": "1", "Items": [{"sku": "X", "price": 9.5}]},
    "time": "2026-07-20T12:34:56+00:00",
    "value": 49.99,
    "value_currency": "USD",
    "unique_id": "order-1",
}


# Rate-limit windows live in the cache: each test starts with none and leaves none behind.
pytestmark = pytest.mark.usefixtures("isolated_rate_limits")


@pytest.fixture
def client():
    return KlaviyoClient("pk_spec_test_key_0000", rate_limiter=UnlimitedRateLimiter())


def _catalog_calls() -> dict:
    """Every catalog, back-in-stock and coupon operation: each job started (and polled
    separately: the mocked answer is no finished job)."""
    item = {
        "title": "Mug",
        "description": "",
        "url": "https://shop.example/p/MUG",
        "price": 12.5,
        "image_full_url": "https://shop.example/img/MUG.jpg",
        "images": ["https://shop.example/img/MUG-2.jpg"],
        "custom_metadata": {"brand": "Acme"},
        "published": True,
    }
    variant = {**item, "sku": "MUG", "inventory_quantity": 3, "inventory_policy": 1}
    del variant["images"]
    kinds = {"item": "items", "variant": "variants", "category": "categories"}
    attributes = {"item": item, "variant": variant, "category": {"name": "Kitchen"}}
    links = {
        "item": {"categories": related("category", ["kitchen"])},
        "variant": {"item": {"data": related("item", ["MUG"])["data"][0]}},
        "category": None,
    }
    get_names = {
        ("item", "create"): "get_bulk_create_catalog_items_job",
        ("item", "update"): "get_bulk_update_catalog_items_job",
        ("item", "delete"): "get_bulk_delete_catalog_items_job",
        ("variant", "create"): "get_bulk_create_variants_job",
        ("variant", "update"): "get_bulk_update_variants_job",
        ("variant", "delete"): "get_bulk_delete_variants_job",
        ("category", "create"): "get_bulk_create_categories_job",
        ("category", "update"): "get_bulk_update_categories_job",
        ("category", "delete"): "get_bulk_delete_categories_job",
    }
    calls = {}
    for kind, members in kinds.items():
        for op in ("create", "update", "delete"):
            relationships = None if op == "delete" else links[kind]
            if op == "update" and kind == "variant":
                relationships = None  # a variant's item is fixed at creation
            resource = catalog_resource(kind, op, "MUG", attributes[kind], relationships)
            calls[f"bulk_{op}_catalog_{members}"] = lambda c, k=kind, o=op, r=resource: (
                c.start_catalog_job(k, o, [r])
            )
            calls[get_names[(kind, op)]] = lambda c, k=kind, o=op: c.get_catalog_job(k, o, "J1")

    def codes(c):
        # The job is posted; the mocked answer is no finished job, so the wait gives up.
        with contextlib.suppress(CatalogJobTimeout):
            c.run_coupon_code_job(
                "SUMMER", [("SUM-1", "2027-01-01T00:00:00+00:00"), ("SUM-2", None)], timeout=0
            )

    calls.update(
        {
            "create_back_in_stock_subscription": lambda c: c.create_back_in_stock_subscription(
                {"email": "ada@example.com", "phone_number": "+14155550100"},
                "MUG",
                ["email", "sms"],
            ),
            "create_coupon": lambda c: c.create_coupon("SUMMER"),
            "bulk_create_coupon_codes": codes,
            "get_bulk_create_coupon_codes_job": lambda c: c.get_coupon_code_job("J1"),
        }
    )
    return calls


CATALOG_CALLS = _catalog_calls()


REPORT_FRAME = {
    "start": dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc),
    "end": dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc),
    "conversion_metric_id": "PLACED",
}


def _any_response(request):
    return 200, {}, json.dumps({"data": {"type": "x", "id": "1", "attributes": {}}})


CALLS = {
    "create_event": lambda c: c.create_event(
        profile={
            **EVERYTHING_PROFILE,
            "anonymous_id": "anon",
            "id": "01P",
            "meta": {"patch_properties": {"append": {"tags": "vip"}}},
        },
        **EVENT,
    ),
    "create_event_minimal": lambda c: c.create_event(
        metric="Viewed", profile={"anonymous_id": "anon-1"}
    ),
    "bulk_create_events": lambda c: c.bulk_create_events(
        [
            {
                "profile": {**EVERYTHING_PROFILE, "meta": {"patch_properties": {"unset": "x"}}},
                "events": [EVENT, {**EVENT, "unique_id": "order-2", "value": None}],
            },
            {"profile": {"id": "01Q"}, "events": [{"metric": "Viewed"}]},
        ]
    ),
    # The flusher's path: entries already cleaned by the rules, only wrapped in JSON:API.
    "bulk_create_events_assembled": lambda c: c.send_event_entries(
        [
            {
                "profile": {**EVERYTHING_PROFILE, "meta": {"patch_properties": {"unset": "x"}}},
                "events": [
                    {**EVENT, "value_currency": None},
                    {**EVENT, "unique_id": "order-2", "value": None, "time": None},
                    {**EVENT, "metric": "Ordered Product", "unique_id": "order-1-line-1"},
                ],
            },
            {"profile": {"id": "01Q", "anonymous_id": "anon"}, "events": [{"metric": "Viewed"}]},
        ],
    ),
    "create_or_update_profile": lambda c: c.upsert_profile(
        {**EVERYTHING_PROFILE, "_kx": "kx1", "meta": {"patch_properties": {"unset": ["a"]}}},
        profile_id="01P",
    ),
    "get_profile": lambda c: c.get_profile("01P", additional_fields=["subscriptions"]),
    "get_profiles": lambda c: c.find_profile(email="ada@example.com"),
    "update_profile": lambda c: c.update_profile(
        "01P", {**EVERYTHING_PROFILE, "first_name": None, "meta": {"patch_properties": {}}}
    ),
    "bulk_import_profiles": lambda c: c.bulk_import_profiles(
        [EVERYTHING_PROFILE, {"external_id": "u2", "id": "01Z"}], list_ids=["L1"]
    ),
    "get_bulk_import_profiles_job": lambda c: c.get_bulk_import_job("J1"),
    "get_errors_for_bulk_import_profiles_job": lambda c: c.get_bulk_import_errors("J1"),
    "bulk_subscribe_profiles": lambda c: c.subscribe_profiles(
        [
            {
                "email": "a@example.com",
                "channels": ["email"],
                "consented_at": "2024-01-01T00:00:00Z",
            },
            {
                "email": "b@example.com",
                "phone_number": "+14155550101",
                "channels": ["email", "sms"],
                "consented_at": "2024-01-01T00:00:00+00:00",
            },
        ],
        list_id="L1",
        custom_source="Checkout",
        historical_import=True,
    ),
    "bulk_unsubscribe_profiles": lambda c: c.unsubscribe_profiles(
        [{"email": "a@example.com", "phone_number": "+14155550101", "channels": ["email", "sms"]}],
        list_id="L1",
    ),
    "create_list": lambda c: c.create_list("VIP", opt_in_process="double_opt_in"),
    "get_lists": lambda c: list(c.get_lists(page_size=10)),
    "add_profiles_to_list": lambda c: c.add_profiles_to_list("L1", ["01A", "01B"]),
    "remove_profiles_from_list": lambda c: c.remove_profiles_from_list("L1", ["01A"]),
    "get_profiles_for_list": lambda c: list(c.get_list_profiles("L1")),
    "get_campaigns": lambda c: list(c.get_campaigns(channel="sms")),
    "get_flows": lambda c: list(c.get_flows()),
    "create_webhook": lambda c: c.create_webhook(
        name="shop",
        endpoint_url="https://shop.example/hook",
        secret_key="s" * 32,
        topics=["event:klaviyo.opened_email", "event:klaviyo.clicked_email"],
        description="d",
    ),
    "get_webhooks": lambda c: list(c.get_webhooks()),
    "get_webhook": lambda c: c.get_webhook("W1"),
    "delete_webhook": lambda c: c.delete_webhook("W1"),
    "get_webhook_topics": lambda c: list(c.get_webhook_topics()),
    "request_profile_deletion": lambda c: c.request_profile_deletion(phone_number="+14155550100"),
    "get_segments": lambda c: list(c.get_segments()),
    "get_segment": lambda c: c.get_segment_profile_count("S1"),
    "get_profiles_for_segment": lambda c: c.get_segment_members_page("S1", "cursor-2"),
    "query_segment_series": lambda c: c.query_segment_series(["S1", 'odd"id']),
    **CATALOG_CALLS,
    # Insights: reports (docs/insights.md).
    "get_metrics": lambda c: c.find_metric_id("Placed Order"),
    "query_campaign_values": lambda c: c.query_values_report("campaign", **REPORT_FRAME),
    "query_flow_values": lambda c: c.query_values_report("flow", **REPORT_FRAME),
    "query_flow_series": lambda c: c.query_flow_series(**REPORT_FRAME),
    "query_metric_aggregates": lambda c: c.query_metric_aggregates(
        metric_id="PLACED",
        start=REPORT_FRAME["start"],
        end=REPORT_FRAME["end"],
        by=["$attributed_flow"],
    ),
}


def _operation_of(name: str) -> str:
    return name.removesuffix("_minimal").removesuffix("_assembled")


def test_every_operation_the_client_uses_is_exercised():
    # A variant ("get_segment:profile_count") has its own windows, on its operation.
    variants = {name.split(":")[0] for name in VARIANT_LIMITS}
    assert {_operation_of(n) for n in CALLS} == set(OPERATION_LIMITS) | variants


@pytest.mark.parametrize("name", sorted(CALLS))
def test_request_matches_the_spec(client, name):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "POST", "PATCH", "DELETE"):
            mock.add_callback(method, re.compile(r"https://a\.klaviyo\.com/.*"), _any_response)
        CALLS[name](client)
        assert len(mock.calls) >= 1
        for call in mock.calls:
            request = call.request
            found = find_operation(request.method, request.url)
            assert found is not None, (request.method, request.url)
            operation_id = found[0]
            assert operation_id == _operation_of(name)
            body = json.loads(request.body) if request.body else None
            assert validate_request(operation_id, body) == [], body


# -- the validator is not a rubber stamp ---------------------------------------------------

GOOD_EVENT = build_event(
    clean_request_event({"metric": "Viewed"}), clean_event_profile({"email": "a@example.com"})
)
GOOD_SUBSCRIBE = build_subscribe(
    clean_consent_request([{"email": "a@example.com", "channels": ["email"]}], subscribe=True)
)


def _without(body, *path):
    broken = copy.deepcopy(body)
    node = broken
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return broken


def _with(body, value, *path):
    broken = copy.deepcopy(body)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("operation_id", "body", "pointer"),
    [
        ("create_event", _without(GOOD_EVENT, "data", "attributes", "metric"), "/data/attributes"),
        ("create_event", _with(GOOD_EVENT, "events", "data", "type"), "/data/type"),
        ("create_event", _with(GOOD_EVENT, "soon", "data", "attributes", "time"), "time"),
        ("create_event", _with(GOOD_EVENT, "12", "data", "attributes", "value"), "value"),
        (
            "bulk_subscribe_profiles",
            _with(
                GOOD_SUBSCRIBE,
                "UNSUBSCRIBED",
                "data",
                "attributes",
                "profiles",
                "data",
                0,
                "attributes",
                "subscriptions",
                "email",
                "marketing",
                "consent",
            ),
            "consent",
        ),
        ("add_profiles_to_list", {"data": [{"type": "profile"}]}, "/data/0"),
        ("update_profile", build_profile_import({"email": "a@example.com"}), "/data"),
        ("create_webhook", {"data": {"type": "webhook", "attributes": {"name": "x"}}}, "/data"),
    ],
)
def test_the_validator_rejects_bad_bodies(operation_id, body, pointer):
    errors = validate_request(operation_id, body)
    assert errors, body
    assert any(pointer in e for e in errors), errors


def test_good_reference_bodies_are_valid():
    assert validate_request("create_event", GOOD_EVENT) == []
    assert validate_request("bulk_subscribe_profiles", GOOD_SUBSCRIBE) == []


def test_assembling_clean_entries_sends_what_the_public_method_sends():
    """The flusher's path skips the rules (its rows passed them), never changes the body."""
    entries = [
        {
            "profile": {**EVERYTHING_PROFILE, "id": "01P", "meta": {"patch_properties": {}}},
            "events": [EVENT, {**EVENT, "unique_id": "order-2", "value": None, "time": None}],
        },
        {"profile": {"anonymous_id": "anon"}, "events": [{"metric": "Viewed", "value": 0}]},
    ]
    assert assemble_bulk_events(entries) == assemble_bulk_events(clean_event_entries(entries))
