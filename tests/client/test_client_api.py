"""KlaviyoClient methods: endpoints, bodies, query parameters, pagination and input limits."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from django.test import override_settings

from django_klaviyo.client import (
    BulkImportTimeout,
    KlaviyoClient,
    UnlimitedRateLimiter,
    get_client,
)
from django_klaviyo.client.filters import equals, greater_than
from django_klaviyo.exceptions import KlaviyoError, KlaviyoValidationError
from tests.fakes import FakeClock, FixedRandom

API = "https://a.klaviyo.com"
API_KEY = "pk_api_test_key_abcdef0123456789"


# Rate-limit windows live in the cache: each test starts with none and leaves none behind.
pytestmark = pytest.mark.usefixtures("isolated_rate_limits")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def client(clock):
    return KlaviyoClient(API_KEY, clock=clock, sleep=clock.sleep, random=FixedRandom())


@pytest.fixture
def mock():
    # An unregistered URL raises ConnectionError, so "nothing sent" is checkable.
    with responses.RequestsMock(assert_all_requests_are_fired=True) as m:
        yield m


def sent_body(call) -> dict:
    return json.loads(call.request.body)


def query(call) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


# -- events ------------------------------------------------------------------------------


def test_create_event_body(mock, client):
    mock.add(responses.POST, f"{API}/api/events", status=202)
    result = client.create_event(
        metric="Placed Order",
        profile={"email": " Ada@Example.com ", "first_name": "Ada", "id": "01P"},
        properties={"OrderId": 7},
        time="2026-07-20T12:34:56Z",
        value=49.99,
        value_currency="USD",
        unique_id="order-7",
    )
    assert result is None
    attributes = sent_body(mock.calls[0])["data"]["attributes"]
    assert attributes["metric"] == {
        "data": {"type": "metric", "attributes": {"name": "Placed Order"}}
    }
    assert attributes["profile"] == {
        "data": {
            "type": "profile",
            "id": "01P",
            "attributes": {"email": "Ada@Example.com", "first_name": "Ada"},
        }
    }
    assert attributes["time"] == "2026-07-20T12:34:56+00:00"
    assert (attributes["value"], attributes["value_currency"], attributes["unique_id"]) == (
        49.99,
        "USD",
        "order-7",
    )
    assert attributes["properties"] == {"OrderId": 7}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"metric": "x" * 128}, "event.metric"),
        ({"metric": ""}, "event.metric"),
        ({"profile": {"first_name": "No identifier"}}, "profile"),
        ({"profile": {"phone_number": "555-0100"}}, "phone_number"),
        ({"profile": {"email": "not-an-email"}}, "email"),
        ({"profile": {"email": "a@x.com", "favourite": "blue"}}, "profile.favourite"),
        ({"time": "yesterday"}, "event.time"),
        ({"value": "12"}, "event.value"),
        ({"value": float("nan")}, "event.value"),
        ({"properties": ["a"]}, "event.properties"),
        # The outbox's rules, for the client too: ISO 4217 codes, Klaviyo's string ids.
        ({"value_currency": "dollars"}, "event.value_currency"),
        ({"profile": {"id": 42}}, "profile.id"),
    ],
)
def test_create_event_rejects_bad_input_before_sending(mock, client, kwargs, field):
    call = {"metric": "Viewed", "profile": {"email": "a@x.com"}, **kwargs}
    with pytest.raises(KlaviyoValidationError) as info:
        client.create_event(**call)
    assert info.value.field == field
    assert len(mock.calls) == 0


def test_metric_name_of_127_characters_is_accepted(mock, client):
    mock.add(responses.POST, f"{API}/api/events", status=202)
    client.create_event(metric="m" * 127, profile={"anonymous_id": "anon-1"})
    assert len(mock.calls) == 1


def test_unserialisable_properties_are_a_validation_error(mock, client):
    with pytest.raises(KlaviyoValidationError, match="JSON"):
        client.create_event(metric="m", profile={"email": "a@x.com"}, properties={"x": object()})
    assert len(mock.calls) == 0


def entries(n_events: int, *, profiles: int = 1, unique: bool = True) -> list[dict]:
    result = []
    for p in range(profiles):
        events = [
            {
                "metric": "Viewed",
                "properties": {"n": i},
                "time": "2026-07-20T12:00:00+00:00",
                "value": None,
                "value_currency": None,
                "unique_id": f"p{p}-e{i}" if unique else None,
            }
            for i in range(n_events)
        ]
        result.append({"profile": {"external_id": f"user-{p}"}, "events": events})
    return result


def test_bulk_create_events_body(mock, client):
    mock.add(responses.POST, f"{API}/api/event-bulk-create-jobs", status=202)
    client.bulk_create_events(entries(2, profiles=2))
    body = sent_body(mock.calls[0])["data"]
    assert body["type"] == "event-bulk-create-job"
    items = body["attributes"]["events-bulk-create"]["data"]
    assert [i["attributes"]["profile"]["data"]["attributes"] for i in items] == [
        {"external_id": "user-0"},
        {"external_id": "user-1"},
    ]
    first_event = items[0]["attributes"]["events"]["data"][0]["attributes"]
    assert first_event["unique_id"] == "p0-e0" and "value" not in first_event


@pytest.mark.parametrize("cleaned", [False, True])
def _bulk(client: KlaviyoClient, cleaned: bool) -> Any:
    """The public method (cleans every event) or the flusher's (entries already clean)."""
    return client.send_event_entries if cleaned else client.bulk_create_events


@pytest.mark.parametrize("cleaned", [False, True])
def test_bulk_create_events_limits(mock, client, cleaned):
    """Entries already cleaned by the rules skip the event rules, not the request limits."""
    with pytest.raises(KlaviyoValidationError, match="1000"):
        _bulk(client, cleaned)(entries(501, profiles=2))
    big = entries(1)
    big[0]["events"][0]["properties"] = {"blob": "x" * 5_000_100}
    with pytest.raises(KlaviyoValidationError, match="bytes"):
        _bulk(client, cleaned)(big)
    repeated = entries(2)
    repeated[0]["events"][1]["unique_id"] = "p0-e0"
    with pytest.raises(KlaviyoValidationError, match="repeats") as info:
        _bulk(client, cleaned)(repeated)
    assert info.value.field == "entries[0].events[1].unique_id"
    empty = [*entries(1), {"profile": {"external_id": "user-9"}, "events": []}]
    with pytest.raises(KlaviyoValidationError, match="empty") as info:
        _bulk(client, cleaned)(empty)
    assert info.value.field == "entries[1].events"
    assert len(mock.calls) == 0
    # The same unique_id for another metric, or another profile, is fine.
    mock.add(responses.POST, f"{API}/api/event-bulk-create-jobs", status=202)
    other_metric = entries(2)
    other_metric[0]["events"][1].update(unique_id="p0-e0", metric="Clicked")
    _bulk(client, cleaned)(other_metric)
    _bulk(client, cleaned)(entries(500, profiles=2))  # exactly 1000
    assert len(mock.calls) == 2


@pytest.mark.parametrize("cleaned", [False, True])
def test_bulk_repeat_across_entries_of_one_profile_is_caught(client, cleaned):
    twice = entries(1) + entries(1)
    with pytest.raises(KlaviyoValidationError, match="repeats"):
        _bulk(client, cleaned)(twice)


def test_assembled_bulk_events_are_idempotent_only_with_every_unique_id():
    """Without a unique_id on every event a lost answer must not be resent (it would
    count twice): only the idempotent request is retried after a dropped connection."""
    retrying = KlaviyoClient(
        "pk_test_0000", rate_limiter=UnlimitedRateLimiter(), sleep=lambda s: None, max_attempts=2
    )
    for unique in (True, False):
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            mock.add(
                responses.POST,
                f"{API}/api/event-bulk-create-jobs",
                body=requests.exceptions.ReadTimeout("answer lost"),
            )
            mock.add(responses.POST, f"{API}/api/event-bulk-create-jobs", status=202)
            if unique:
                _bulk(retrying, True)(entries(2, unique=True))
                assert len(mock.calls) == 2
            else:
                with pytest.raises(KlaviyoError):
                    _bulk(retrying, True)(entries(2, unique=False))
                assert len(mock.calls) == 1


def test_bulk_errors_name_the_item(client):
    bad = entries(1, profiles=3)
    bad[2]["profile"] = {"email": "nope"}
    with pytest.raises(KlaviyoValidationError) as info:
        client.bulk_create_events(bad)
    assert info.value.field == "entries[2].profile.email"
    assert "entries[2]" in str(info.value)


def test_empty_batches_send_nothing(mock, client):
    client.bulk_create_events([])
    client.subscribe_profiles([])
    client.unsubscribe_profiles([])
    client.add_profiles_to_list("L1", [])
    assert len(mock.calls) == 0


# -- profiles ----------------------------------------------------------------------------


def test_upsert_profile_returns_data_and_moves_id(mock, client):
    mock.add(
        responses.POST,
        f"{API}/api/profile-import",
        status=201,
        json={"data": {"type": "profile", "id": "01NEW", "attributes": {}}},
    )
    data = client.upsert_profile(
        {"email": "a@x.com", "phone_number": "+1 (415) 555-0100", "id": "01OLD"}
    )
    assert data["id"] == "01NEW"
    sent = sent_body(mock.calls[0])["data"]
    assert sent["id"] == "01OLD"
    assert sent["attributes"] == {"email": "a@x.com", "phone_number": "+14155550100"}


def test_upsert_profile_identifier_rules(mock, client):
    with pytest.raises(KlaviyoValidationError, match="identifier"):
        client.upsert_profile({"first_name": "Nobody"})
    with pytest.raises(KlaviyoValidationError) as info:
        client.upsert_profile({"anonymous_id": "a1"})
    assert info.value.field == "anonymous_id"
    assert len(mock.calls) == 0
    # A Klaviyo id identifies the profile by itself.
    mock.add(responses.POST, f"{API}/api/profile-import", json={"data": {"id": "01K"}})
    client.upsert_profile({"first_name": "Ada"}, profile_id="01K")
    assert sent_body(mock.calls[0])["data"] == {
        "type": "profile",
        "id": "01K",
        "attributes": {"first_name": "Ada"},
    }


def test_get_profile_and_update_profile(mock, client):
    mock.add(
        responses.GET,
        f"{API}/api/profiles/01P",
        json={"data": {"type": "profile", "id": "01P", "attributes": {"email": "a@x.com"}}},
    )
    mock.add(responses.PATCH, f"{API}/api/profiles/01P", json={"data": {"id": "01P"}})
    assert client.get_profile("01P", additional_fields=["subscriptions"])["id"] == "01P"
    assert query(mock.calls[0]) == {"additional-fields[profile]": ["subscriptions"]}
    assert client.update_profile("01P", {"first_name": None, "email": "B@x.com "})["id"] == "01P"
    assert sent_body(mock.calls[1]) == {
        "data": {
            "type": "profile",
            "id": "01P",
            "attributes": {"first_name": None, "email": "B@x.com"},
        }
    }


def test_ids_are_quoted_into_a_single_path_segment(mock, client):
    mock.add(responses.GET, f"{API}/api/profiles/..%2Fwebhooks%3Fx", json={"data": {"id": "z"}})
    client.get_profile("../webhooks?x")
    assert urlsplit(mock.calls[0].request.url).path == "/api/profiles/..%2Fwebhooks%3Fx"
    with pytest.raises(KlaviyoValidationError):
        client.get_profile("")


def test_find_profile_tries_identifiers_strongest_first(mock, client):
    mock.add(responses.GET, f"{API}/api/profiles", json={"data": [], "links": {"next": None}})
    mock.add(
        responses.GET,
        f"{API}/api/profiles",
        json={"data": [{"type": "profile", "id": "01E"}], "links": {}},
    )
    found = client.find_profile(email='"x,y)"@x.com', external_id='u"1', phone_number=None)
    assert found == {"type": "profile", "id": "01E"}
    assert [query(c)["filter"] for c in mock.calls] == [
        ['equals(external_id,"u\\"1")'],
        ['equals(email,"\\"x,y)\\"@x.com")'],
    ]
    assert query(mock.calls[0])["page[size]"] == ["1"]


def test_find_profile_returns_none_and_validates(mock, client):
    mock.add(responses.GET, f"{API}/api/profiles", json={"data": []})
    assert client.find_profile(phone_number="+14155550100") is None
    with pytest.raises(KlaviyoValidationError):
        client.find_profile()
    with pytest.raises(KlaviyoValidationError):
        client.find_profile(phone_number="call me")


def test_bulk_import_and_job_polling(mock, client, clock):
    job = {
        "data": {"type": "profile-bulk-import-job", "id": "J1", "attributes": {"status": "queued"}}
    }
    mock.add(responses.POST, f"{API}/api/profile-bulk-import-jobs", status=202, json=job)
    created = client.bulk_import_profiles(
        [{"email": "a@x.com", "properties": {"plan": "pro"}}, {"external_id": 42}],
        list_ids=["L1", "L1"],
    )
    assert created["id"] == "J1"
    body = sent_body(mock.calls[0])["data"]
    assert body["relationships"] == {"lists": {"data": [{"type": "list", "id": "L1"}]}}
    assert body["attributes"]["profiles"]["data"][1]["attributes"] == {"external_id": "42"}

    for status in ("queued", "processing", "complete"):
        mock.add(
            responses.GET,
            f"{API}/api/profile-bulk-import-jobs/J1",
            json={"data": {"id": "J1", "attributes": {"status": status}}},
        )
    start = clock()
    done = client.wait_for_bulk_import_job("J1", timeout=60, poll_interval=5)
    assert done["attributes"]["status"] == "complete"
    assert clock() - start == pytest.approx(10.0)


def test_wait_for_bulk_import_job_times_out(mock, client):
    mock.add(
        responses.GET,
        f"{API}/api/profile-bulk-import-jobs/J2",
        json={"data": {"id": "J2", "attributes": {"status": "processing"}}},
    )
    with pytest.raises(BulkImportTimeout) as info:
        client.wait_for_bulk_import_job("J2", timeout=12, poll_interval=5)
    assert info.value.job["id"] == "J2"
    assert len(mock.calls) == 4  # t = 0, 5, 10, 12


def test_bulk_import_limits(mock, client):
    with pytest.raises(KlaviyoValidationError, match="10000"):
        client.bulk_import_profiles([{"email": "a@x.com"}] * 10_001)
    with pytest.raises(KlaviyoValidationError, match="bytes"):
        client.bulk_import_profiles(
            [{"external_id": str(i), "properties": {"x": "y" * 1000}} for i in range(5000)]
        )
    with pytest.raises(KlaviyoValidationError) as info:
        client.bulk_import_profiles([{"email": "a@x.com"}, {"phone_number": "12"}])
    assert info.value.field == "profiles[1].phone_number"
    assert len(mock.calls) == 0


def test_bulk_import_errors_are_collected_over_pages(mock, client):
    base = f"{API}/api/profile-bulk-import-jobs/J1/import-errors"
    mock.add(
        responses.GET,
        base,
        json={"data": [{"id": "e1"}], "links": {"next": f"{base}?page%5Bcursor%5D=c2"}},
        match=[responses.matchers.query_param_matcher({"page[size]": "100"})],
    )
    mock.add(
        responses.GET,
        base,
        json={"data": [{"id": "e2"}], "links": {"next": None}},
        match=[responses.matchers.query_param_matcher({"page[cursor]": "c2"})],
    )
    assert [e["id"] for e in client.get_bulk_import_errors("J1")] == ["e1", "e2"]


# -- consent -----------------------------------------------------------------------------


def test_subscribe_body(mock, client):
    mock.add(responses.POST, f"{API}/api/profile-subscription-bulk-create-jobs", status=202)
    client.subscribe_profiles(
        [
            {"email": "a@x.com", "channels": ["email"]},
            {"email": "b@x.com", "phone_number": "+14155550100", "channels": ["email", "sms"]},
        ],
        list_id="L1",
        custom_source="Checkout",
    )
    body = sent_body(mock.calls[0])["data"]
    assert body["attributes"]["custom_source"] == "Checkout"
    assert "historical_import" not in body["attributes"]
    assert body["relationships"] == {"list": {"data": {"type": "list", "id": "L1"}}}
    second = body["attributes"]["profiles"]["data"][1]["attributes"]
    assert second["subscriptions"] == {
        "email": {"marketing": {"consent": "SUBSCRIBED"}},
        "sms": {"marketing": {"consent": "SUBSCRIBED"}},
    }


def test_subscribe_historical_import_rules(mock, client, clock):
    past = "2020-01-01T00:00:00+00:00"
    with pytest.raises(KlaviyoValidationError, match="historical_import"):
        client.subscribe_profiles(
            [{"email": "a@x.com", "channels": ["email"], "consented_at": past}]
        )
    with pytest.raises(KlaviyoValidationError, match="required"):
        client.subscribe_profiles(
            [{"email": "a@x.com", "channels": ["email"]}], historical_import=True
        )
    with pytest.raises(KlaviyoValidationError, match="future"):
        client.subscribe_profiles(
            [{"email": "a@x.com", "channels": ["email"], "consented_at": "2099-01-01T00:00:00Z"}],
            historical_import=True,
        )
    assert len(mock.calls) == 0
    mock.add(responses.POST, f"{API}/api/profile-subscription-bulk-create-jobs", status=202)
    client.subscribe_profiles(
        [{"email": "a@x.com", "channels": ["email"], "consented_at": past}], historical_import=True
    )
    attributes = sent_body(mock.calls[0])["data"]["attributes"]
    assert attributes["historical_import"] is True
    email = attributes["profiles"]["data"][0]["attributes"]["subscriptions"]["email"]
    assert email == {"marketing": {"consent": "SUBSCRIBED", "consented_at": past}}


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({"channels": ["email"]}, "profiles[0].email"),
        ({"email": "a@x.com", "channels": ["sms"]}, "profiles[0].phone_number"),
        ({"email": "a@x.com", "channels": []}, "profiles[0].channels"),
        ({"email": "a@x.com", "channels": "email"}, "profiles[0].channels"),
        ({"email": "a@x.com", "channels": ["fax"]}, "profiles[0].channels"),
        ({"email": "a@x.com", "channels": ["email"], "list": "L"}, "profiles[0].list"),
    ],
)
def test_consent_input_errors(mock, client, profile, field):
    with pytest.raises(KlaviyoValidationError) as info:
        client.subscribe_profiles([profile])
    assert info.value.field == field
    assert len(mock.calls) == 0


def test_consent_batch_limits(mock, client):
    people = [{"email": f"u{i}@x.com", "channels": ["email"]} for i in range(1001)]
    with pytest.raises(KlaviyoValidationError, match="1000"):
        client.subscribe_profiles(people)
    with pytest.raises(KlaviyoValidationError, match="100 "):
        client.unsubscribe_profiles(people[:101])
    mock.add(responses.POST, f"{API}/api/profile-subscription-bulk-delete-jobs", status=202)
    client.unsubscribe_profiles(people[:100])
    data = sent_body(mock.calls[0])["data"]
    assert data["type"] == "profile-subscription-bulk-delete-job"
    assert "relationships" not in data  # global unsubscribe
    assert data["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"] == {
        "email": {"marketing": {"consent": "UNSUBSCRIBED"}}
    }


# -- lists -------------------------------------------------------------------------------


def test_list_membership(mock, client):
    url = f"{API}/api/lists/L1/relationships/profiles"
    mock.add(responses.POST, url, status=204)
    mock.add(responses.DELETE, url, status=204)
    client.add_profiles_to_list("L1", ["01A", "01B", "01A"])
    client.remove_profiles_from_list("L1", ["01A"])
    assert sent_body(mock.calls[0]) == {
        "data": [{"type": "profile", "id": "01A"}, {"type": "profile", "id": "01B"}]
    }
    assert mock.calls[1].request.method == "DELETE"
    assert sent_body(mock.calls[1]) == {"data": [{"type": "profile", "id": "01A"}]}
    with pytest.raises(KlaviyoValidationError, match="1000"):
        client.add_profiles_to_list("L1", [str(i) for i in range(1001)])


def test_create_list_and_get_lists(mock, client):
    mock.add(responses.POST, f"{API}/api/lists", status=201, json={"data": {"id": "L9"}})
    assert client.create_list("VIP", opt_in_process="single_opt_in")["id"] == "L9"
    assert sent_body(mock.calls[0]) == {
        "data": {"type": "list", "attributes": {"name": "VIP", "opt_in_process": "single_opt_in"}}
    }
    with pytest.raises(KlaviyoValidationError):
        client.create_list("VIP", opt_in_process="maybe")

    mock.add(
        responses.GET,
        f"{API}/api/lists",
        json={
            "data": [{"id": "L1"}, {"id": "L2"}],
            "links": {"next": f"{API}/api/lists?page%5Bcursor%5D=2"},
        },
        match=[
            responses.matchers.query_param_matcher(
                {
                    "filter": 'equals(name,"VIP")',
                    "sort": "-created",
                    "fields[list]": "name,created",
                    "page[size]": "10",
                }
            )
        ],
    )
    mock.add(
        responses.GET,
        f"{API}/api/lists",
        json={"data": [{"id": "L3"}], "links": {"next": None}},
        match=[responses.matchers.query_param_matcher({"page[cursor]": "2"})],
    )
    lists = client.get_lists(
        filter=equals("name", "VIP"), sort="-created", fields=["name", "created"], page_size=10
    )
    assert [x["id"] for x in lists] == ["L1", "L2", "L3"]
    with pytest.raises(KlaviyoValidationError, match="1 to 10"):
        client.get_lists(page_size=11)


def test_get_list_profiles(mock, client):
    mock.add(
        responses.GET,
        f"{API}/api/lists/L1/profiles",
        json={"data": [{"id": "01A"}]},
        match=[
            responses.matchers.query_param_matcher(
                {"page[size]": "100", "sort": "-joined_group_at", "fields[profile]": "email"}
            )
        ],
    )
    members = client.get_list_profiles("L1", sort="-joined_group_at", fields=["email"])
    assert [m["id"] for m in members] == ["01A"]


# -- campaigns, flows, webhooks, deletion ------------------------------------------------


def test_get_campaigns_always_filters_by_channel(mock, client):
    mock.add(responses.GET, f"{API}/api/campaigns", json={"data": [{"id": "C1"}]})
    mock.add(responses.GET, f"{API}/api/campaigns", json={"data": []})
    assert [c["id"] for c in client.get_campaigns()] == ["C1"]
    assert query(mock.calls[0])["filter"] == ['equals(messages.channel,"email")']
    list(client.get_campaigns(channel="sms", filter=greater_than("updated_at", 5)))
    assert query(mock.calls[1])["filter"] == [
        'and(equals(messages.channel,"sms"),greater-than(updated_at,5))'
    ]
    with pytest.raises(KlaviyoValidationError):
        client.get_campaigns(channel="fax")


def test_get_flows_pages_and_sparse_fields(mock, client):
    mock.add(
        responses.GET,
        f"{API}/api/flows",
        json={"data": [{"id": "F1"}], "links": {"next": f"{API}/api/flows?page%5Bcursor%5D=x"}},
    )
    mock.add(responses.GET, f"{API}/api/flows", json={"data": [{"id": "F2"}], "links": {}})
    flows = list(client.get_flows(fields=["name", "status"], include=["tags"], page_size=50))
    assert [f["id"] for f in flows] == ["F1", "F2"]
    assert query(mock.calls[0]) == {
        "fields[flow]": ["name,status"],
        "include": ["tags"],
        "page[size]": ["50"],
    }
    assert query(mock.calls[1]) == {"page[cursor]": ["x"]}


def test_webhooks(mock, client, clock):
    mock.add(responses.POST, f"{API}/api/webhooks", status=201, json={"data": {"id": "W1"}})
    mock.add(responses.GET, f"{API}/api/webhooks", json={"data": [{"id": "W1"}]})
    mock.add(responses.GET, f"{API}/api/webhooks/W1", json={"data": {"id": "W1"}})
    mock.add(responses.DELETE, f"{API}/api/webhooks/W1", status=204)
    mock.add(responses.GET, f"{API}/api/webhook-topics", json={"data": [{"id": "event:x"}]})
    secret = "whsec-super-secret-value-123"
    created = client.create_webhook(
        name="shop",
        endpoint_url="https://shop.example/klaviyo/webhook",
        secret_key=secret,
        topics=["event:klaviyo.opened_email"],
        description="Opens",
    )
    assert created["id"] == "W1"
    body = sent_body(mock.calls[0])["data"]
    assert body["attributes"]["secret_key"] == secret
    assert body["relationships"]["webhook-topics"]["data"] == [
        {"type": "webhook-topic", "id": "event:klaviyo.opened_email"}
    ]
    assert [w["id"] for w in client.get_webhooks()] == ["W1"]
    assert client.get_webhook("W1")["id"] == "W1"
    assert client.delete_webhook("W1") is None
    assert [t["id"] for t in client.get_webhook_topics()] == ["event:x"]
    with pytest.raises(KlaviyoValidationError, match="https") as info:
        client.create_webhook(
            name="x", endpoint_url="http://shop.example/", secret_key=secret, topics=["t"]
        )
    assert secret not in str(info.value)
    with pytest.raises(KlaviyoValidationError) as info:
        client.create_webhook(name="x", endpoint_url="https://s/", secret_key="", topics=["t"])
    assert info.value.field == "secret_key"


def test_request_profile_deletion_needs_exactly_one_identifier(mock, client):
    mock.add(responses.POST, f"{API}/api/data-privacy-deletion-jobs", status=202)
    mock.add(responses.POST, f"{API}/api/data-privacy-deletion-jobs", status=202)
    client.request_profile_deletion(email="A@x.com")
    client.request_profile_deletion(profile_id="01P")
    assert sent_body(mock.calls[0])["data"]["attributes"]["profile"] == {
        "data": {"type": "profile", "attributes": {"email": "A@x.com"}}
    }
    assert sent_body(mock.calls[1])["data"]["attributes"]["profile"]["data"]["id"] == "01P"
    with pytest.raises(KlaviyoValidationError, match="exactly one"):
        client.request_profile_deletion(email="a@x.com", phone_number="+14155550100")
    with pytest.raises(KlaviyoValidationError, match="exactly one"):
        client.request_profile_deletion()


# -- get_client --------------------------------------------------------------------------


def test_get_client_is_cached_per_thread_and_follows_settings(settings):
    first = get_client()
    assert get_client() is first
    other: list[KlaviyoClient] = []
    thread = threading.Thread(target=lambda: other.append(get_client()))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert other[0] is not first
    with override_settings(KLAVIYO={**settings.KLAVIYO, "REVISION": "2026-10-15"}):
        changed = get_client()
        assert changed is not first
        assert changed._transport.revision == "2026-10-15"
    assert get_client()._transport.revision == "2026-07-15"
