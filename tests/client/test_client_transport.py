"""Transport: headers, timeouts, typed errors, retries, backoff and secrecy of the key."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
import requests
import responses
from urllib3.exceptions import NewConnectionError

from django_klaviyo import __version__
from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter
from django_klaviyo.client.transport import parse_retry_after
from django_klaviyo.exceptions import (
    KlaviyoAPIError,
    KlaviyoAuthError,
    KlaviyoConfigurationError,
    KlaviyoDuplicateProfileError,
    KlaviyoPermissionError,
    KlaviyoRateLimitError,
    KlaviyoServerError,
    KlaviyoTransportError,
)
from tests.fakes import FakeClock, FixedRandom

API_KEY = "pk_transport_secret_key_9f8e7d6c5b4a"
EVENTS = "https://a.klaviyo.com/api/events"
LISTS = "https://a.klaviyo.com/api/lists"


# Rate-limit windows live in the cache: each test starts with none and leaves none behind.
pytestmark = pytest.mark.usefixtures("isolated_rate_limits")


@pytest.fixture
def clock():
    return FakeClock()


def make_client(clock, *, fraction=0.0, **kwargs):
    kwargs.setdefault("max_attempts", 3)
    return KlaviyoClient(
        API_KEY,
        clock=clock,
        sleep=clock.sleep,
        random=FixedRandom(fraction),
        backoff_base=1.0,
        backoff_cap=8.0,
        **kwargs,
    )


def event(client, unique_id="evt-1"):
    client.create_event(
        metric="Placed Order", profile={"email": "a@example.com"}, unique_id=unique_id
    )


def error_body(status, code, detail="Something.", pointer="/data", meta=None):
    error = {
        "id": "err-1",
        "status": status,  # Klaviyo sends an int here, unlike JSON:API's string
        "code": code,
        "title": "Title.",
        "detail": detail,
        "source": {"pointer": pointer},
    }
    if meta is not None:
        error["meta"] = meta
    return {"errors": [error]}


def test_headers_timeouts_and_path(mocked, clock):
    mocked.add(responses.POST, EVENTS, status=202)
    client = make_client(clock, timeout=(3.0, 12.0))
    event(client)
    request = mocked.calls[0].request
    assert request.url == EVENTS  # no trailing slash
    assert request.headers["Authorization"] == f"Klaviyo-API-Key {API_KEY}"
    assert request.headers["revision"] == "2026-07-15"
    assert request.headers["Accept"] == "application/vnd.api+json"
    assert request.headers["Content-Type"] == "application/vnd.api+json"
    assert request.headers["User-Agent"] == f"django-klaviyo/{__version__}"
    assert request.req_kwargs["timeout"] == (3.0, 12.0)


def test_timeout_defaults_to_the_setting(mocked, clock, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "TIMEOUT": 7, "REVISION": "2026-07-15"}
    mocked.add(responses.POST, EVENTS, status=202)
    event(make_client(clock))
    assert mocked.calls[0].request.req_kwargs["timeout"] == (7.0, 7.0)


def test_429_waits_retry_after_seconds_of_the_clock(mocked, clock):
    mocked.add(
        responses.POST,
        EVENTS,
        status=429,
        headers={"Retry-After": "2"},
        json=error_body(429, "throttled"),
    )
    mocked.add(responses.POST, EVENTS, status=202)
    start = clock()
    event(make_client(clock))
    assert len(mocked.calls) == 2
    assert clock.sleeps == [2.0]
    assert clock() - start == 2.0


def test_429_with_http_date_retry_after(mocked, clock):
    when = datetime.fromtimestamp(clock() + 5, tz=timezone.utc)
    mocked.add(
        responses.POST,
        EVENTS,
        status=429,
        headers={"Retry-After": format_datetime(when, usegmt=True)},
        json=error_body(429, "throttled"),
    )
    mocked.add(responses.POST, EVENTS, status=202)
    event(make_client(clock))
    assert clock.sleeps == [pytest.approx(5.0)]


def test_429_retry_after_also_holds_the_operation_for_other_callers(mocked, clock):
    mocked.add(
        responses.POST,
        EVENTS,
        status=429,
        headers={"Retry-After": "3"},
        json=error_body(429, "throttled"),
    )
    client = make_client(clock, max_attempts=1)
    with pytest.raises(KlaviyoRateLimitError) as info:
        event(client)
    assert info.value.retry_after == 3.0 and info.value.retryable
    assert client.rate_limiter.wait_time("create_event") == pytest.approx(3.0)


def test_429_longer_than_max_wait_is_raised_at_once(mocked, clock):
    mocked.add(
        responses.POST,
        EVENTS,
        status=429,
        headers={"Retry-After": "120"},
        json=error_body(429, "throttled"),
    )
    with pytest.raises(KlaviyoRateLimitError) as info:
        event(make_client(clock, max_wait=30))
    assert len(mocked.calls) == 1 and clock.sleeps == []
    assert info.value.retry_after == 120.0


def test_full_jitter_exponential_backoff_is_capped(mocked, clock):
    for _ in range(4):
        mocked.add(responses.POST, EVENTS, status=503, json=error_body(503, "unavailable"))
    mocked.add(responses.POST, EVENTS, status=202)
    client = make_client(clock, max_attempts=5, fraction=1.0)
    client._transport.backoff_cap = 3.0
    event(client)
    # uniform(0, min(cap, base * 2**n)) at its upper end: 1, 2, then capped at 3.
    assert clock.sleeps == [1.0, 2.0, 3.0, 3.0]
    assert client._transport.random.calls == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 3.0)]


def test_5xx_then_success(mocked, clock):
    mocked.add(responses.POST, EVENTS, status=500, json=error_body(500, "error"))
    mocked.add(responses.POST, EVENTS, status=524, body="<html>timeout</html>")
    mocked.add(responses.POST, EVENTS, status=202)
    event(make_client(clock))
    assert len(mocked.calls) == 3


def test_exhaustion_raises_the_last_error(mocked, clock):
    for n in range(3):
        body = error_body(503, "unavailable", detail=f"attempt {n}")
        mocked.add(responses.POST, EVENTS, status=503, json=body)
    with pytest.raises(KlaviyoServerError) as info:
        event(make_client(clock))
    assert len(mocked.calls) == 3
    assert info.value.detail == "attempt 2" and info.value.retryable


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "invalid", KlaviyoAPIError),
        (401, "authentication_failed", KlaviyoAuthError),
        (403, "permission_denied", KlaviyoPermissionError),
        (404, "not_found", KlaviyoAPIError),
        (409, "duplicate_profile", KlaviyoDuplicateProfileError),
    ],
)
def test_client_errors_are_never_retried(mocked, clock, status, code, expected):
    meta = {"duplicate_profile_id": "01DUP"} if code == "duplicate_profile" else None
    mocked.add(
        responses.POST,
        EVENTS,
        status=status,
        json=error_body(status, code, detail="Bad thing.", pointer="/data/attributes", meta=meta),
        content_type="application/vnd.api+json",
    )
    with pytest.raises(expected) as info:
        event(make_client(clock))
    assert len(mocked.calls) == 1 and clock.sleeps == []
    err = info.value
    assert type(err) is expected
    assert (err.status, err.code, err.detail, err.pointer) == (
        status,
        code,
        "Bad thing.",
        "/data/attributes",
    )
    assert err.error_id == "err-1" and err.operation == "create_event"
    assert err.retryable is False
    if expected is KlaviyoDuplicateProfileError:
        assert err.duplicate_profile_id == "01DUP"


def test_403_html_challenge_is_a_retryable_server_error(mocked, clock):
    mocked.add(
        responses.POST,
        EVENTS,
        status=403,
        body="<html>Just a moment...</html>",
        content_type="text/html",
        headers={"cf-mitigated": "challenge"},
    )
    mocked.add(responses.POST, EVENTS, status=202)
    event(make_client(clock))
    assert len(mocked.calls) == 2

    mocked.add(responses.POST, EVENTS, status=403, body="<html>x</html>", content_type="text/html")
    with pytest.raises(KlaviyoServerError) as info:
        event(make_client(clock, max_attempts=1))
    assert info.value.status == 403 and info.value.retryable
    assert not isinstance(info.value, KlaviyoAuthError)


def test_read_timeout_resends_create_event_only_with_a_unique_id(mocked, clock):
    mocked.add(responses.POST, EVENTS, body=requests.exceptions.ReadTimeout("read timed out"))
    mocked.add(responses.POST, EVENTS, status=202)
    event(make_client(clock), unique_id="order-1-placed")
    assert len(mocked.calls) == 2

    mocked.add(responses.POST, EVENTS, body=requests.exceptions.ReadTimeout("read timed out"))
    mocked.add(responses.POST, EVENTS, status=202)
    with pytest.raises(KlaviyoTransportError) as info:
        event(make_client(clock), unique_id=None)
    assert info.value.timeout is True
    assert len(mocked.calls) == 3  # the second event was sent once


def test_non_idempotent_create_list_retries_only_when_nothing_happened(mocked, clock):
    created = {"data": {"type": "list", "id": "L1", "attributes": {"name": "News"}}}
    refused = requests.exceptions.ConnectionError(
        NewConnectionError(None, "Failed to establish a new connection: Connection refused")
    )
    mocked.add(responses.POST, LISTS, body=refused)
    mocked.add(responses.POST, LISTS, body=requests.exceptions.ConnectTimeout("connect timed out"))
    mocked.add(responses.POST, LISTS, status=201, json=created)
    assert make_client(clock).create_list("News")["id"] == "L1"
    assert len(mocked.calls) == 3

    for failure in (
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected"),
    ):
        mocked.replace(responses.POST, LISTS, body=failure)
        before = len(mocked.calls)
        with pytest.raises(KlaviyoTransportError):
            make_client(clock).create_list("News")
        assert len(mocked.calls) == before + 1

    mocked.replace(responses.POST, LISTS, status=504, body="gateway timeout")
    before = len(mocked.calls)
    with pytest.raises(KlaviyoServerError):
        make_client(clock).create_list("News")
    assert len(mocked.calls) == before + 1  # may have been created: not resent

    mocked.replace(responses.POST, LISTS, status=503, json=error_body(503, "unavailable"))
    before = len(mocked.calls)
    with pytest.raises(KlaviyoServerError):
        make_client(clock).create_list("News")
    assert len(mocked.calls) == before + 3  # 503: Klaviyo did not act, safe to resend


def test_connection_errors_become_transport_errors(mocked, clock):
    mocked.add(responses.POST, EVENTS, body=requests.exceptions.ConnectionError("boom"))
    with pytest.raises(KlaviyoTransportError) as info:
        event(make_client(clock))
    assert len(mocked.calls) == 3  # idempotent (unique_id): retried to exhaustion
    assert info.value.timeout is False and info.value.retryable


def test_rate_limit_remaining_zero_holds_until_reset(mocked, clock):
    mocked.add(
        responses.POST,
        EVENTS,
        status=202,
        headers={
            "RateLimit-Limit": "350, 350;w=1, 3500;w=60",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": "9",
        },
    )
    mocked.add(responses.POST, EVENTS, status=202)
    client = make_client(clock)
    event(client)
    start = clock()
    event(client, unique_id="evt-2")
    assert clock() - start == pytest.approx(9.0)


def test_pagination_refuses_links_to_another_host(mocked, clock):
    mocked.add(
        responses.GET,
        "https://a.klaviyo.com/api/flows",
        json={"data": [{"id": "F1"}], "links": {"next": "https://evil.example/api/flows?x=1"}},
    )
    flows = make_client(clock).get_flows()
    assert next(flows)["id"] == "F1"
    with pytest.raises(KlaviyoConfigurationError, match=r"evil\.example"):
        next(flows)
    assert len(mocked.calls) == 1


def test_success_with_a_non_json_body_is_a_server_error(mocked, clock):
    mocked.add(responses.GET, "https://a.klaviyo.com/api/webhooks/W1", status=200, body="<html>")
    with pytest.raises(KlaviyoServerError, match="not JSON"):
        make_client(clock, max_attempts=1).get_webhook("W1")


def test_parse_retry_after_forms():
    now = 1_800_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after("-4", now) == 0.0
    past = format_datetime(datetime.fromtimestamp(now - 30, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_bad_configuration_is_reported_clearly(clock):
    with pytest.raises(KlaviyoConfigurationError, match="empty"):
        KlaviyoClient("", rate_limiter=UnlimitedRateLimiter())
    with pytest.raises(KlaviyoConfigurationError, match="API_URL"):
        KlaviyoClient(API_KEY, api_url="a.klaviyo.com", rate_limiter=UnlimitedRateLimiter())


FAILURES = [
    ("400", {"status": 400, "json": error_body(400, "invalid")}),
    ("401", {"status": 401, "json": error_body(401, "authentication_failed")}),
    ("403-json", {"status": 403, "json": error_body(403, "permission_denied")}),
    ("403-html", {"status": 403, "body": "<html>", "content_type": "text/html"}),
    (
        "409",
        {
            "status": 409,
            "json": error_body(409, "duplicate_profile", meta={"duplicate_profile_id": "X"}),
        },
    ),
    ("429", {"status": 429, "json": error_body(429, "throttled"), "headers": {"Retry-After": "1"}}),
    ("500", {"status": 500, "json": error_body(500, "error")}),
    ("echo", {"status": 400, "json": error_body(400, "invalid", detail=f"bad key {API_KEY}")}),
    ("echo-html", {"status": 502, "body": f"<p>{API_KEY}</p>"}),
    ("connect", {"body": requests.exceptions.ConnectionError(f"refused {API_KEY}")}),
    ("timeout", {"body": requests.exceptions.ReadTimeout("read timed out")}),
]


@pytest.mark.parametrize(("name", "response"), FAILURES, ids=[f[0] for f in FAILURES])
def test_the_api_key_never_appears_in_errors_logs_or_reprs(mocked, clock, caplog, name, response):
    caplog.set_level(logging.DEBUG)
    mocked.add(responses.POST, EVENTS, **response)
    client = make_client(clock, max_attempts=2)
    with pytest.raises(Exception) as info:
        event(client)
    err = info.value
    texts = [str(err), repr(err), caplog.text, repr(client), repr(client._transport)]
    texts.append(repr(client.rate_limiter))
    if isinstance(err, KlaviyoAPIError):
        texts += [json.dumps(err.errors), str(err.detail), str(err.title)]
    for text in texts:
        assert API_KEY not in text, name
    assert caplog.records or name in ("400", "401", "403-json", "409", "echo")


def test_bulk_events_are_resent_after_a_read_timeout_only_when_all_have_unique_ids(mocked, clock):
    url = "https://a.klaviyo.com/api/event-bulk-create-jobs"

    def batch(*unique_ids):
        events = [{"metric": "Viewed", "unique_id": u} for u in unique_ids]
        return [{"profile": {"email": "a@example.com"}, "events": events}]

    mocked.add(responses.POST, url, body=requests.exceptions.ReadTimeout("read timed out"))
    mocked.add(responses.POST, url, status=202)
    make_client(clock).bulk_create_events(batch("e1", "e2"))
    assert len(mocked.calls) == 2

    mocked.add(responses.POST, url, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(KlaviyoTransportError):
        make_client(clock).bulk_create_events(batch("e3", None))
    assert len(mocked.calls) == 3
