"""The local Klaviyo sandbox, exercised over real HTTP with plain ``requests``."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from django_klaviyo.testing.sandbox import FaultConfig, SandboxServer
from django_klaviyo.testing.sandbox.jsonapi import parse_filter
from django_klaviyo.testing.sandbox.ratelimit import FixedWindowLimiter
from tests.processes import read_line
from tests.testing.test_openapi import (
    BULK_EVENTS,
    BULK_IMPORT,
    CREATE_WEBHOOK,
    EVENT,
    PROFILE_IMPORT,
    SUBSCRIBE,
    UNSUBSCRIBE,
)

KEY = "pk_sandbox_test_key_0123456789"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {KEY}",
    "revision": "2026-07-15",
    "Accept": "application/vnd.api+json",
    "Content-Type": "application/vnd.api+json",
}
REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    # Rate limits have their own tests; here they would only make timing matter.
    with SandboxServer(seed=3, enforce_rate_limits=False) as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update(HEADERS)
        yield session


def _event(email: str = "a@example.com", unique_id: str | None = "order-1", **attrs: Any):
    body = copy.deepcopy(EVENT)
    body["data"]["attributes"]["unique_id"] = unique_id
    body["data"]["attributes"]["profile"]["data"]["attributes"] = {"email": email}
    body["data"]["attributes"].update(attrs)
    return body


# --- events --------------------------------------------------------------------------


def test_valid_event_is_accepted_and_recorded(sandbox: SandboxServer, http) -> None:
    response = http.post(f"{sandbox.url}/api/events", json=_event())
    assert response.status_code == 202
    assert response.content == b""
    [event] = sandbox.state.events()
    assert event["metric"] == "Placed Order"
    assert event["profile"] == {"email": "a@example.com"}
    assert event["unique_id"] == "order-1"
    assert event["properties"] == {"OrderId": "1234", "Items": ["A", "B"]}
    assert event["value"] == 49.99
    assert event["time"] == "2026-07-20T12:34:56+00:00"
    [profile] = sandbox.state.profiles().values()
    assert profile["email"] == "a@example.com" and event["profile_id"] == profile["id"]
    assert sandbox.state.request_counts() == {"create_event": {202: 1}}


def test_trailing_slash_is_accepted(sandbox: SandboxServer, http) -> None:
    assert http.post(f"{sandbox.url}/api/events/", json=_event()).status_code == 202


def test_invalid_body_is_rejected_with_a_pointer(sandbox: SandboxServer, http) -> None:
    body = _event()
    del body["data"]["attributes"]["metric"]
    response = http.post(f"{sandbox.url}/api/events", json=body)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["status"] == 400 and error["code"] == "invalid"
    assert error["title"] == "Invalid input."
    assert error["source"] == {"pointer": "/data/attributes/metric"}
    assert error["id"]
    assert sandbox.state.events() == []


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        (
            {"profile": {"data": {"type": "profile", "attributes": {"first_name": "A"}}}},
            "/data/attributes/profile/data/attributes",
        ),
        (
            {"profile": {"data": {"type": "profile", "attributes": {"phone_number": "5550100"}}}},
            "/data/attributes/profile/data/attributes/phone_number",
        ),
        (
            {"metric": {"data": {"type": "metric", "attributes": {"name": "x" * 128}}}},
            "/data/attributes/metric/data/attributes/name",
        ),
        ({"time": "1980-01-01T00:00:00Z"}, "/data/attributes/time"),
    ],
)
def test_semantic_checks_the_schema_cannot_express(
    sandbox: SandboxServer, http, change: dict[str, Any], pointer: str
) -> None:
    response = http.post(f"{sandbox.url}/api/events", json=_event(**change))
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"]["pointer"] == pointer
    assert sandbox.state.events() == []


def test_malformed_json_is_a_400(sandbox: SandboxServer, http) -> None:
    response = http.post(f"{sandbox.url}/api/events", data=b"{not json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "parse_error"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_not_json(sandbox: SandboxServer, http, literal: str) -> None:
    # Python's json module writes and reads them; JSON (and Klaviyo) does not.
    body = json.dumps(_event()).replace('"value": 49.99', f'"value": {literal}')
    assert literal in body
    response = http.post(f"{sandbox.url}/api/events", data=body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "parse_error"
    assert sandbox.state.events() == []


def test_repeated_unique_id_is_accepted_but_recorded_once(sandbox: SandboxServer, http) -> None:
    for _ in range(3):
        assert http.post(f"{sandbox.url}/api/events", json=_event()).status_code == 202
    # Another profile, or no unique_id, is a different event.
    assert http.post(f"{sandbox.url}/api/events", json=_event("b@example.com")).status_code == 202
    assert http.post(f"{sandbox.url}/api/events", json=_event(unique_id=None)).status_code == 202
    assert len(sandbox.state.events()) == 3
    assert sandbox.state.duplicate_events == 2


def test_bulk_events_with_a_repeated_unique_id_fail_whole(sandbox: SandboxServer, http) -> None:
    body = copy.deepcopy(BULK_EVENTS)
    events = body["data"]["attributes"]["events-bulk-create"]["data"][0]["attributes"]["events"]
    events["data"].append(copy.deepcopy(events["data"][0]))
    response = http.post(f"{sandbox.url}/api/event-bulk-create-jobs", json=body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"]["pointer"].endswith(
        "/data/1/attributes/unique_id"
    )
    assert sandbox.state.events() == [] and sandbox.state.profiles() == {}

    events["data"][1]["attributes"]["unique_id"] = "order-1234-other"
    assert http.post(f"{sandbox.url}/api/event-bulk-create-jobs", json=body).status_code == 202
    assert [e["unique_id"] for e in sandbox.state.events()] == [
        "order-1234-placed",
        "order-1234-other",
    ]


def test_bulk_events_over_1000_are_rejected(sandbox: SandboxServer, http) -> None:
    body = copy.deepcopy(BULK_EVENTS)
    entry = body["data"]["attributes"]["events-bulk-create"]["data"][0]
    template = entry["attributes"]["events"]["data"][0]
    entry["attributes"]["events"]["data"] = [
        {**template, "attributes": {**template["attributes"], "unique_id": str(i)}}
        for i in range(1001)
    ]
    response = http.post(f"{sandbox.url}/api/event-bulk-create-jobs", json=body)
    assert response.status_code == 400
    assert "1000" in response.json()["errors"][0]["detail"]


# --- auth, revision, routing ---------------------------------------------------------


def test_missing_or_malformed_auth_is_401(sandbox: SandboxServer) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != "Authorization"}
    for auth in (None, "Bearer abc", "Klaviyo-API-Key "):
        sent = dict(headers, **({"Authorization": auth} if auth else {}))
        response = requests.post(
            f"{sandbox.url}/api/events", json=_event(), headers=sent, timeout=30
        )
        assert response.status_code == 401
        assert response.json()["errors"][0]["code"] == "authentication_failed"
    assert sandbox.state.events() == []


def test_wrong_key_is_401_when_a_key_is_configured() -> None:
    with SandboxServer(api_key=KEY) as server:
        wrong = dict(HEADERS, Authorization="Klaviyo-API-Key pk_other")
        assert requests.get(f"{server.url}/api/lists", headers=wrong, timeout=30).status_code == 401
        assert (
            requests.get(f"{server.url}/api/lists", headers=HEADERS, timeout=30).status_code == 200
        )
        assert KEY not in repr(server)


def test_missing_revision_is_400(sandbox: SandboxServer) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != "revision"}
    response = requests.get(f"{sandbox.url}/api/lists", headers=headers, timeout=30)
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"parameter": "revision"}


def test_unknown_route_is_404(sandbox: SandboxServer, http) -> None:
    assert http.get(f"{sandbox.url}/api/nothing-here").status_code == 404


# --- profiles ------------------------------------------------------------------------


def test_profile_import_creates_then_updates(sandbox: SandboxServer, http) -> None:
    first = http.post(f"{sandbox.url}/api/profile-import", json=PROFILE_IMPORT)
    assert first.status_code == 201
    profile_id = first.json()["data"]["id"]
    body = copy.deepcopy(PROFILE_IMPORT)
    body["data"]["attributes"] = {"email": "a@example.com", "first_name": None, "title": "Dr"}
    second = http.post(f"{sandbox.url}/api/profile-import", json=body)
    assert second.status_code == 200
    attributes = second.json()["data"]["attributes"]
    assert second.json()["data"]["id"] == profile_id
    # null clears a field, an omitted one stays.
    assert attributes["first_name"] is None and attributes["last_name"] == "L"
    assert attributes["title"] == "Dr"
    got = http.get(f"{sandbox.url}/api/profiles/{profile_id}").json()["data"]
    assert got["attributes"]["phone_number"] == "+15005550006"


def test_email_and_phone_of_different_profiles_is_409(sandbox: SandboxServer, http) -> None:
    url = f"{sandbox.url}/api/profile-import"
    a = http.post(url, json={"data": {"type": "profile", "attributes": {"email": "a@x.com"}}})
    b = http.post(
        url, json={"data": {"type": "profile", "attributes": {"phone_number": "+14155550100"}}}
    )
    both = {"email": "a@x.com", "phone_number": "+14155550100"}
    response = http.post(url, json={"data": {"type": "profile", "attributes": both}})
    assert response.status_code == 409
    [error] = response.json()["errors"]
    assert error["code"] == "duplicate_profile"
    assert error["meta"]["duplicate_profile_id"] == b.json()["data"]["id"]
    assert a.json()["data"]["id"] != b.json()["data"]["id"]


def test_find_profile_by_filter_and_patch(sandbox: SandboxServer, http) -> None:
    created = http.post(f"{sandbox.url}/api/profile-import", json=PROFILE_IMPORT).json()
    profile_id = created["data"]["id"]
    found = http.get(
        f"{sandbox.url}/api/profiles", params={"filter": 'equals(email,"a@example.com")'}
    ).json()
    assert [p["id"] for p in found["data"]] == [profile_id]
    none = http.get(f"{sandbox.url}/api/profiles", params={"filter": 'equals(email,"z@x.com")'})
    assert none.json()["data"] == []
    patch = {"data": {"type": "profile", "id": profile_id, "attributes": {"title": "Prof"}}}
    response = http.patch(f"{sandbox.url}/api/profiles/{profile_id}", json=patch)
    assert response.status_code == 200
    assert response.json()["data"]["attributes"]["title"] == "Prof"
    assert http.get(f"{sandbox.url}/api/profiles/NOPE").status_code == 404


def test_bulk_import_job_and_errors(sandbox: SandboxServer, http) -> None:
    made = http.post(
        f"{sandbox.url}/api/lists", json={"data": {"type": "list", "attributes": {"name": "N"}}}
    )
    list_id = made.json()["data"]["id"]
    body = copy.deepcopy(BULK_IMPORT)
    body["data"]["relationships"]["lists"]["data"][0]["id"] = list_id
    body["data"]["attributes"]["profiles"]["data"].append(
        {"type": "profile", "attributes": {"first_name": "no identifier"}}
    )
    response = http.post(f"{sandbox.url}/api/profile-bulk-import-jobs", json=body)
    assert response.status_code == 202
    job = response.json()["data"]
    assert job["type"] == "profile-bulk-import-job"
    assert job["attributes"]["total_count"] == 2 and job["attributes"]["failed_count"] == 1
    assert job["attributes"]["status"] == "queued"  # accepted, not yet imported
    statuses = [
        http.get(f"{sandbox.url}/api/profile-bulk-import-jobs/{job['id']}").json()["data"][
            "attributes"
        ]["status"]
        for _ in range(2)
    ]
    assert statuses == ["processing", "complete"]
    errors = http.get(f"{sandbox.url}/api/profile-bulk-import-jobs/{job['id']}/import-errors")
    assert errors.json()["data"][0]["attributes"]["source"]["pointer"] == (
        "/data/attributes/profiles/data/1/attributes"
    )
    assert len(sandbox.state.members(list_id)) == 1


# --- lists, consent, deletion ----------------------------------------------------------


def test_list_membership_and_pagination(sandbox: SandboxServer, http) -> None:
    list_id = http.post(
        f"{sandbox.url}/api/lists", json={"data": {"type": "list", "attributes": {"name": "VIP"}}}
    ).json()["data"]["id"]
    ids = []
    for i in range(5):
        body = {"data": {"type": "profile", "attributes": {"email": f"p{i}@example.com"}}}
        ids.append(http.post(f"{sandbox.url}/api/profile-import", json=body).json()["data"]["id"])
    url = f"{sandbox.url}/api/lists/{list_id}/relationships/profiles"
    added = http.post(url, json={"data": [{"type": "profile", "id": i} for i in ids]})
    assert added.status_code == 204 and added.content == b""
    removed = http.delete(url, json={"data": [{"type": "profile", "id": ids[0]}]})
    assert removed.status_code == 204
    seen, next_url = [], f"{sandbox.url}/api/lists/{list_id}/profiles?page[size]=2"
    while next_url:
        page = http.get(next_url).json()
        seen += [p["id"] for p in page["data"]]
        next_url = page["links"]["next"]
    assert seen == ids[1:]
    unknown = http.post(url, json={"data": [{"type": "profile", "id": "UNKNOWN"}]})
    assert unknown.status_code == 404
    assert (
        http.post(
            f"{sandbox.url}/api/lists/NOLIST/relationships/profiles", json={"data": []}
        ).status_code
        == 404
    )


def test_subscribe_and_unsubscribe_are_recorded(sandbox: SandboxServer, http) -> None:
    list_id = http.post(
        f"{sandbox.url}/api/lists", json={"data": {"type": "list", "attributes": {"name": "N"}}}
    ).json()["data"]["id"]
    body = copy.deepcopy(SUBSCRIBE)
    body["data"]["relationships"]["list"]["data"]["id"] = list_id
    response = http.post(f"{sandbox.url}/api/profile-subscription-bulk-create-jobs", json=body)
    assert response.status_code == 202 and response.content == b""
    [record] = sandbox.state.subscriptions()
    assert record["email"] == "a@example.com" and record["channels"] == ["email", "sms"]
    assert record["list_id"] == list_id
    profile_id = record["profile_id"]
    assert sandbox.state.members(list_id) == [profile_id]
    subs = sandbox.state.profile(profile_id)["subscriptions"]
    assert subs["email"]["marketing"]["consent"] == "SUBSCRIBED"

    unsub = copy.deepcopy(UNSUBSCRIBE)
    unsub["data"]["relationships"]["list"]["data"]["id"] = list_id
    response = http.post(f"{sandbox.url}/api/profile-subscription-bulk-delete-jobs", json=unsub)
    assert response.status_code == 202
    [record] = sandbox.state.unsubscriptions()
    assert record["profile_id"] == profile_id and record["scope"] == "list"
    # A member is unsubscribed from that list only: off the list, global consent kept.
    assert sandbox.state.members(list_id) == []
    withdrawn = sandbox.state.list_consent(profile_id, list_id)
    assert withdrawn["email"]["marketing"]["consent"] == "UNSUBSCRIBED"
    got = http.get(
        f"{sandbox.url}/api/profiles/{profile_id}",
        params={"additional-fields[profile]": "subscriptions"},
    ).json()["data"]["attributes"]["subscriptions"]
    assert got["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert got["sms"]["marketing"]["consent"] == "SUBSCRIBED"


def _post_list(http, sandbox: SandboxServer, name: str) -> str:
    body = {"data": {"type": "list", "attributes": {"name": name}}}
    return http.post(f"{sandbox.url}/api/lists", json=body).json()["data"]["id"]


def _subscribe(http, sandbox: SandboxServer, list_id: str, email: str, phone: str) -> str:
    body = copy.deepcopy(SUBSCRIBE)
    body["data"]["relationships"]["list"]["data"]["id"] = list_id
    attributes = body["data"]["attributes"]["profiles"]["data"][0]["attributes"]
    attributes.update(email=email, phone_number=phone)
    response = http.post(f"{sandbox.url}/api/profile-subscription-bulk-create-jobs", json=body)
    assert response.status_code == 202
    return sandbox.state.find_profile_id("email", email)


def _unsubscribe(http, sandbox: SandboxServer, email: str, phone: str, list_id: str | None):
    body = copy.deepcopy(UNSUBSCRIBE)
    attributes = body["data"]["attributes"]["profiles"]["data"][0]["attributes"]
    attributes.update(email=email, phone_number=phone)
    if list_id is None:
        del body["data"]["relationships"]
    else:
        body["data"]["relationships"]["list"]["data"]["id"] = list_id
    response = http.post(f"{sandbox.url}/api/profile-subscription-bulk-delete-jobs", json=body)
    assert response.status_code == 202


def test_list_scoped_unsubscribe_of_an_off_list_profile_is_global(
    sandbox: SandboxServer, http
) -> None:
    """Klaviyo: "Profiles not in the specified list will be globally unsubscribed." The
    flusher's membership check (tests/profiles/test_unsubscribe_list_scope.py) exists
    because of this."""
    newsletter = _post_list(http, sandbox, "Newsletter")
    offers = _post_list(http, sandbox, "Offers")
    profile_id = _subscribe(http, sandbox, offers, "off@example.com", "+15005550007")
    assert sandbox.state.consent(profile_id, "email") == "SUBSCRIBED"

    _unsubscribe(http, sandbox, "off@example.com", "+15005550007", newsletter)

    [record] = sandbox.state.unsubscriptions()
    assert record["scope"] == "global"
    assert sandbox.state.consent(profile_id, "email") == "UNSUBSCRIBED"
    assert sandbox.state.consent(profile_id, "sms") == "UNSUBSCRIBED"
    assert sandbox.state.list_consent(profile_id, newsletter) == {}
    # It stays on the list it was on, but no marketing reaches it any more.
    assert sandbox.state.members(offers) == [profile_id]


def test_unsubscribe_without_a_list_is_global(sandbox: SandboxServer, http) -> None:
    offers = _post_list(http, sandbox, "Offers")
    profile_id = _subscribe(http, sandbox, offers, "all@example.com", "+15005550008")

    _unsubscribe(http, sandbox, "all@example.com", "+15005550008", None)

    assert sandbox.state.unsubscriptions()[0]["scope"] == "global"
    assert sandbox.state.consent(profile_id, "email") == "UNSUBSCRIBED"


def test_subscribing_through_a_list_lifts_its_list_unsubscribe(sandbox: SandboxServer, http):
    offers = _post_list(http, sandbox, "Offers")
    profile_id = _subscribe(http, sandbox, offers, "back@example.com", "+15005550009")
    _unsubscribe(http, sandbox, "back@example.com", "+15005550009", offers)
    assert sandbox.state.list_consent(profile_id, offers) != {}

    _subscribe(http, sandbox, offers, "back@example.com", "+15005550009")

    assert sandbox.state.list_consent(profile_id, offers) == {}
    assert sandbox.state.members(offers) == [profile_id]


def test_consented_at_without_historical_import_is_rejected(sandbox: SandboxServer, http):
    body = copy.deepcopy(SUBSCRIBE)
    del body["data"]["relationships"]
    subs = body["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]
    subs["email"]["marketing"]["consented_at"] = "2024-01-01T00:00:00Z"
    response = http.post(f"{sandbox.url}/api/profile-subscription-bulk-create-jobs", json=body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"]["pointer"].endswith(
        "/subscriptions/email/marketing/consented_at"
    )
    assert sandbox.state.subscriptions() == []


def test_profile_deletion_needs_exactly_one_identifier(sandbox: SandboxServer, http) -> None:
    http.post(f"{sandbox.url}/api/profile-import", json=PROFILE_IMPORT)
    url = f"{sandbox.url}/api/data-privacy-deletion-jobs"

    def body(**attributes: str) -> dict[str, Any]:
        profile = {"data": {"type": "profile", "attributes": attributes}}
        return {"data": {"type": "data-privacy-deletion-job", "attributes": {"profile": profile}}}

    two = body(email="a@example.com", phone_number="+15005550006")
    assert http.post(url, json=two).status_code == 400
    assert http.post(url, json=body(email="a@example.com")).status_code == 202
    assert sandbox.state.profiles() == {}
    assert sandbox.state.deletion_requests()[0]["email"] == "a@example.com"


def test_campaigns_need_a_channel_filter(sandbox: SandboxServer, http) -> None:
    sandbox.state.add_campaign("Spring sale")
    sandbox.state.add_campaign("Text blast", channel="sms")
    assert http.get(f"{sandbox.url}/api/campaigns").status_code == 400
    response = http.get(
        f"{sandbox.url}/api/campaigns", params={"filter": "equals(messages.channel,'email')"}
    )
    assert [c["attributes"]["name"] for c in response.json()["data"]] == ["Spring sale"]
    sandbox.state.add_flow("Welcome")
    assert http.get(f"{sandbox.url}/api/flows").json()["data"][0]["attributes"]["name"] == (
        "Welcome"
    )


def test_webhooks_keep_their_secret_out_of_every_view(sandbox: SandboxServer, http) -> None:
    secret = CREATE_WEBHOOK["data"]["attributes"]["secret_key"]
    created = http.post(f"{sandbox.url}/api/webhooks", json=CREATE_WEBHOOK)
    assert created.status_code == 201
    webhook_id = created.json()["data"]["id"]
    listed = http.get(f"{sandbox.url}/api/webhooks")
    one = http.get(f"{sandbox.url}/api/webhooks/{webhook_id}")
    state = http.get(f"{sandbox.url}/__sandbox__/state")
    page = http.get(f"{sandbox.url}/__sandbox__/")
    for response in (created, listed, one, state, page):
        assert secret not in response.text
    assert sandbox.state.webhook_secret(webhook_id) == secret
    topics = http.get(f"{sandbox.url}/api/webhook-topics").json()["data"]
    assert {"type": "webhook-topic", "id": "event:klaviyo.sent_sms"} in [
        {"type": t["type"], "id": t["id"]} for t in topics
    ]
    plain = copy.deepcopy(CREATE_WEBHOOK)
    plain["data"]["attributes"]["endpoint_url"] = "http://example.com/hook"
    assert http.post(f"{sandbox.url}/api/webhooks", json=plain).status_code == 400
    assert http.delete(f"{sandbox.url}/api/webhooks/{webhook_id}").status_code == 204
    assert http.get(f"{sandbox.url}/api/webhooks/{webhook_id}").status_code == 404


# --- rate limits -----------------------------------------------------------------------


def test_fixed_window_rate_limit_answers_429_with_retry_after(http) -> None:
    # A binary-exact scale and a start on a window boundary keep the arithmetic exact.
    clock = FakeClock(1200.0)
    with SandboxServer(time_scale=0.125, clock=clock) as server:
        url = f"{server.url}/api/webhooks"  # XS tier: 1/s burst, 15/min steady
        first = http.get(url)
        assert first.status_code == 200
        assert first.headers["RateLimit-Limit"] == "1, 1;w=1, 15;w=60"
        assert first.headers["RateLimit-Remaining"] == "0"
        assert first.headers["X-Sandbox-Time-Scale"] == "0.125"
        throttled = http.get(url)
        assert throttled.status_code == 429
        assert throttled.headers["Retry-After"] == "1"  # ceil of 0.125 s
        assert float(throttled.headers["X-Sandbox-Retry-After"]) == pytest.approx(0.125)
        assert not any(h.lower().startswith("ratelimit") for h in throttled.headers)
        [error] = throttled.json()["errors"]
        assert error["code"] == "throttled" and error["status"] == 429
        # The scaled burst window (0.125 s) passes: allowed again, until the steady 15 are used.
        statuses = []
        for _ in range(20):
            clock.now += 0.125
            statuses.append(http.get(url).status_code)
        assert statuses[:14] == [200] * 14 and set(statuses[14:]) == {429}
        clock.now = 1207.5  # the scaled 60 s window (7.5 s) is over
        assert http.get(url).status_code == 200
        assert server.state.request_counts()["get_webhooks"][429] >= 7


def test_rate_limits_can_be_switched_off(http) -> None:
    with SandboxServer(enforce_rate_limits=False) as server:
        responses = [http.get(f"{server.url}/api/webhooks") for _ in range(5)]
        assert {r.status_code for r in responses} == {200}
        assert "RateLimit-Limit" not in responses[0].headers


def test_rate_limit_headers_on_a_normal_answer(http) -> None:
    with SandboxServer() as server:
        response = http.post(f"{server.url}/api/events", json=_event())
        assert response.status_code == 202
        assert response.headers["RateLimit-Limit"] == "350, 350;w=1, 3500;w=60"
        assert response.headers["RateLimit-Remaining"] == "349"
        assert response.headers["RateLimit-Reset"] in ("0", "1")


def test_fixed_window_limiter_unit() -> None:
    clock = FakeClock(10.0)
    limiter = FixedWindowLimiter(clock=clock)
    limits = {"burst": (2, 1), "steady": (3, 60)}
    assert [limiter.hit("op", limits).allowed for _ in range(3)] == [True, True, False]
    clock.now = 11.0
    assert limiter.hit("op", limits).allowed is True
    blocked = limiter.hit("op", limits)
    assert not blocked.allowed and blocked.retry_after == pytest.approx(49.0)  # 60 s window
    assert limiter.hit("other", limits).allowed  # per-operation counters


# --- faults ----------------------------------------------------------------------------


def test_injected_fault_shares_follow_the_config(http) -> None:
    faults = FaultConfig(rate_429=0.1, rate_500=0.1, rate_503=0.2, seed=42)
    with SandboxServer(enforce_rate_limits=False, faults=faults) as server:
        statuses = [http.get(f"{server.url}/api/lists").status_code for _ in range(400)]
        shares = {s: statuses.count(s) / len(statuses) for s in set(statuses)}
        assert shares[429] == pytest.approx(0.1, abs=0.05)
        assert shares[500] == pytest.approx(0.1, abs=0.05)
        assert shares[503] == pytest.approx(0.2, abs=0.06)
        assert shares[200] == pytest.approx(0.6, abs=0.08)
        injected = http.get(f"{server.url}/api/lists")
        while injected.status_code != 429:
            injected = http.get(f"{server.url}/api/lists")
        assert injected.headers["Retry-After"] == "1"
    # Same seed, same sequence.
    with SandboxServer(enforce_rate_limits=False, faults=faults) as server:
        again = [http.get(f"{server.url}/api/lists").status_code for _ in range(400)]
    assert again == statuses


def test_dropped_connection_raises_connection_error_and_may_still_process(http) -> None:
    faults = FaultConfig(rate_drop=1.0, process_probability=1.0, seed=1)
    with SandboxServer(faults=faults) as server:
        with pytest.raises(requests.ConnectionError):
            http.post(f"{server.url}/api/events", json=_event())
        assert len(server.state.events()) == 1  # processed before the drop
        server.set_faults(rate_drop=1.0, process_probability=0.0)
        with pytest.raises(requests.ConnectionError):
            http.post(f"{server.url}/api/events", json=_event("b@example.com"))
        assert len(server.state.events()) == 1
        server.set_faults(FaultConfig())
        # The retry of the processed request is deduplicated by its unique_id.
        assert http.post(f"{server.url}/api/events", json=_event()).status_code == 202
        assert len(server.state.events()) == 1 and server.state.duplicate_events == 1


def test_slow_answer_times_the_client_out_but_is_processed(http) -> None:
    faults = FaultConfig(rate_slow=1.0, slow_seconds=0.3, process_probability=1.0, seed=1)
    with SandboxServer(faults=faults) as server:
        with pytest.raises(requests.ReadTimeout):
            http.post(f"{server.url}/api/events", json=_event(), timeout=(1, 0.05))
        assert len(server.state.events()) == 1


def test_faults_settable_over_http(sandbox: SandboxServer, http) -> None:
    url = f"{sandbox.url}/__sandbox__/faults"
    response = requests.post(url, json={"rate_503": 1.0, "seed": 5}, timeout=30)
    assert response.status_code == 200 and response.json()["rate_503"] == 1.0
    assert http.get(f"{sandbox.url}/api/lists").status_code == 503
    bad = requests.post(url, json={"rate_503": 2}, timeout=30)
    assert bad.status_code == 400 and "between 0 and 1" in bad.json()["error"]
    assert requests.post(url, json={"nonsense": 1}, timeout=30).status_code == 400
    assert requests.post(url, json={}, timeout=30).status_code == 200
    assert http.get(f"{sandbox.url}/api/lists").status_code == 200


def test_fault_config_rejects_impossible_shares() -> None:
    with pytest.raises(ValueError, match="add up"):
        FaultConfig(rate_429=0.6, rate_503=0.6)
    with pytest.raises(ValueError):
        FaultConfig(rate_slow=-0.1)


# --- control endpoints, recording, transport --------------------------------------------


def test_html_page_state_and_reset(sandbox: SandboxServer, http) -> None:
    http.post(
        f"{sandbox.url}/api/events",
        json=_event(metric={"data": {"type": "metric", "attributes": {"name": "<b>Viewed</b>"}}}),
    )
    page = requests.get(f"{sandbox.url}/__sandbox__/", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "&lt;b&gt;Viewed&lt;/b&gt;" in page.text and "<b>Viewed" not in page.text
    assert "a@example.com" in page.text
    state = requests.get(f"{sandbox.url}/__sandbox__/state", timeout=30).json()
    assert state["metrics"] == {"<b>Viewed</b>": 1} and state["profiles"] == 1
    assert requests.post(f"{sandbox.url}/__sandbox__/reset", timeout=30).json() == {"reset": True}
    assert sandbox.state.events() == [] and sandbox.state.profiles() == {}


def test_accepted_requests_are_recorded_as_json_lines(tmp_path: Path, http) -> None:
    record = tmp_path / "requests.jsonl"
    with SandboxServer(record_path=record) as server:
        http.post(f"{server.url}/api/events", json=_event())
        http.post(f"{server.url}/api/events", json={"data": {}})  # rejected: not recorded
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(x["operation"], x["status"]) for x in lines] == [("create_event", 202)]
    assert lines[0]["body"] == _event()


def test_accepted_sockets_have_tcp_nodelay_and_keep_alive_is_reused(sandbox, http) -> None:
    # Without TCP_NODELAY each keep-alive answer stalls ~40 ms; the time itself is measured
    # by bench/sandbox_latency.py, not asserted here.
    for _ in range(20):
        assert http.get(f"{sandbox.url}/api/lists").status_code == 200
    flags = sandbox.nodelay_flags
    assert flags and all(flags)
    assert len(flags) == 1  # one keep-alive connection served all 20 requests


def test_stopped_sandbox_refuses_connections(http) -> None:
    server = SandboxServer().start()
    url = server.url
    assert http.get(f"{url}/api/lists").status_code == 200
    server.stop()
    with pytest.raises(requests.ConnectionError):
        http.get(f"{url}/api/lists", timeout=2)


def test_filter_parser() -> None:
    assert parse_filter('equals(email,"a\\"b@x.com")') == [("equals", "email", 'a"b@x.com')]
    assert parse_filter("and(any(id,['1','2']),greater-than(updated,2026-01-01T00:00:00Z))") == [
        ("any", "id", ["1", "2"]),
        ("greater-than", "updated", "2026-01-01T00:00:00Z"),
    ]
    with pytest.raises(ValueError):
        parse_filter("equals(email")


# --- the pytest fixture and the management command --------------------------------------


def test_pytest_fixture_points_settings_at_the_sandbox(klaviyo_sandbox, http) -> None:
    from django_klaviyo.conf import klaviyo_settings

    assert klaviyo_sandbox.url == klaviyo_settings.API_URL
    assert http.get(f"{klaviyo_settings.API_URL}/api/lists").status_code == 200


@pytest.mark.klaviyo_sandbox(enforce_rate_limits=False, seed=9)
def test_pytest_fixture_takes_options_from_a_marker(klaviyo_sandbox) -> None:
    assert klaviyo_sandbox.enforce_rate_limits is False


def test_management_command_serves_until_sigterm() -> None:
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.projects.settings",
        PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'example_project'}",
    )
    # Without PYTHONUNBUFFERED a pipe is block-buffered: the command must flush each line itself.
    env.pop("PYTHONUNBUFFERED", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "klaviyo_sandbox",
            "--port",
            "0",
            "--quiet",
            "--fault-503",
            "0",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_line(process.stdout)
        assert "Klaviyo sandbox listening on http://127.0.0.1:" in line
        url = line.strip().rsplit(" ", 1)[-1]
        assert "Overview:" in read_line(process.stdout)
        assert requests.get(f"{url}/api/lists", headers=HEADERS, timeout=30).status_code == 200
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
        assert process.returncode == 0 and "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
