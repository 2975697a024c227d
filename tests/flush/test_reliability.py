"""Reliability (issue 5): faults, revoked keys, a vanishing database and hostile webhooks.

Everything runs against the real sandbox (django_klaviyo.testing.sandbox) over HTTP on 127.0.0.1
and the real test database. Retry waits run on a fake clock: the only real waiting is
the sandbox's "slow answer" fault, which must outlast the client's (short) read timeout.
The subprocess tests (kill -9, concurrent flushers) are in test_reliability_processes.py.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from django_klaviyo import rules
from django_klaviyo.client import KlaviyoClient
from django_klaviyo.client.ratelimit import RateLimiter
from django_klaviyo.flush import FlushAborted, flush_outbox
from django_klaviyo.models import OutboxEvent, WebhookItem
from django_klaviyo.outbox import build_event, enqueue_many
from django_klaviyo.rules.identifiers import profile_key
from django_klaviyo.testing.sandbox import SandboxServer
from django_klaviyo.webhooks.verify import compute_signature
from tests.klaviyo_fixtures import FakeClock

Status = OutboxEvent.Status
OPEN_STATUSES = (Status.PENDING, Status.RETRYING, Status.SENDING)
SANDBOX_KEY = "pk_reliability_0123456789abcdef0123456789"

# 30% of API requests fail, spread over every kind of transient failure.
THIRTY_PERCENT_FAULTS = {
    "rate_429": 0.08,
    "rate_500": 0.06,
    "rate_503": 0.06,
    "rate_slow": 0.05,
    "rate_drop": 0.05,
    "slow_seconds": 0.35,  # longer than READ_TIMEOUT below
    # Most slow/dropped requests reach the account anyway: the retry is then a repeat.
    "process_probability": 0.75,
    "retry_after": 1,
}
READ_TIMEOUT = 0.15


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, settings: Any) -> Iterator[SandboxServer]:
    """A sandbox with Klaviyo's rate limits in short windows, wired into the settings.
    Options (SandboxServer keywords) come from a ``klaviyo_sandbox`` marker."""
    marker = request.node.get_closest_marker("klaviyo_sandbox")
    options: dict[str, Any] = {"time_scale": 0.02, "api_key": SANDBOX_KEY}
    if marker:
        options.update(marker.kwargs)
    server = SandboxServer(**options).start()
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "API_URL": server.url,
        "PRIVATE_API_KEY": SANDBOX_KEY,
        "TIMEOUT": (2.0, READ_TIMEOUT),
        "RETRY_MAX_SECONDS": 60.0,
    }
    try:
        yield server
    finally:
        server.stop()


def make_client(clock: FakeClock, api_key: str = SANDBOX_KEY) -> KlaviyoClient:
    # A scope of its own: rate-limit logs on the fake clock must not leak into other
    # tests through the shared cache.
    limiter = RateLimiter(
        scope=f"reliability-{uuid.uuid4().hex}", clock=clock.monotonic, sleep=clock.sleep
    )
    return KlaviyoClient(api_key, clock=clock.monotonic, sleep=clock.sleep, rate_limiter=limiter)


def enqueue_events(count: int, *, prefix: str = "rel", customers: int = 1000) -> list[str]:
    """``count`` Placed Order events through the real outbox writer; returns unique_ids."""
    unique_ids = [f"{prefix}-{i}" for i in range(count)]
    rows = [
        build_event(
            metric="Placed Order",
            profile={"email": f"customer{i % customers}@example.com"},
            properties={"OrderId": uid, "Items": ["Tea", "Cup"], "ItemCount": 2},
            value=12.5,
            value_currency="USD",
            unique_id=uid,
        )
        for i, uid in enumerate(unique_ids)
    ]
    for start in range(0, count, 2000):
        enqueue_many(rows[start : start + 2000])
    return unique_ids


def enqueue_invalid_events(count: int) -> list[str]:
    """Rows the flusher trusts (marked as cleaned by the current rules) that Klaviyo still
    refuses: a time before 1990, so Klaviyo answers 400 and the per-item path is used."""
    unique_ids = [f"invalid-{i}" for i in range(count)]
    profile = {"email": "bad-clock@example.com"}
    OutboxEvent.objects.bulk_create(
        OutboxEvent(
            kind=OutboxEvent.Kind.EVENT,
            payload={
                "metric": "Placed Order",
                "profile": profile,
                "properties": {"OrderId": uid},
                "time": "1985-06-01T00:00:00+00:00",
                "value": 1.0,
                "value_currency": "USD",
            },
            metric="Placed Order",
            unique_id=uid,
            profile_key=profile_key(profile),
            rules_version=rules.RULES_VERSION,
        )
        for uid in unique_ids
    )
    return unique_ids


def flush_until_idle(client: KlaviyoClient, clock: FakeClock, *, max_rounds: int = 40) -> int:
    """Flush, move the clock past every back-off, repeat until nothing is left to send."""
    for rounds in range(1, max_rounds + 1):
        # Batches of 250: more requests, so every kind of fault is drawn several times.
        flush_outbox(client=client, clock=clock, sleep=clock.sleep, batch_size=250)
        if not OutboxEvent.objects.filter(status__in=OPEN_STATUSES).exists():
            return rounds
        clock.advance(61)  # RETRY_MAX_SECONDS is 60 in these tests
    raise AssertionError(f"rows still open after {max_rounds} flushes")


def accepted_unique_ids(sandbox: SandboxServer) -> Counter[str]:
    return Counter(e["unique_id"] for e in sandbox.state.events())


def injected_failures(sandbox: SandboxServer) -> int:
    counts = sandbox.state.request_counts().get("bulk_create_events", {})
    return sum(n for status, n in counts.items() if status != 202)


# --- transient faults ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.klaviyo_sandbox(faults={**THIRTY_PERCENT_FAULTS, "seed": 20261126})
def test_ten_thousand_events_survive_thirty_percent_faults_exactly_once(
    sandbox: SandboxServer, clock: FakeClock
) -> None:
    expected = enqueue_events(10_000)

    flush_until_idle(make_client(clock), clock)

    counts = Counter(OutboxEvent.objects.values_list("status", flat=True))
    assert counts == {Status.SENT: 10_000}
    accepted = accepted_unique_ids(sandbox)
    assert set(accepted) == set(expected)  # none lost
    assert max(accepted.values()) == 1  # none recorded twice
    # The fault mix did apply: throttling, server errors, and answers lost after the
    # sandbox had recorded the events (their retries were repeats, recognised as such).
    requests = sandbox.state.request_counts()["bulk_create_events"]
    assert requests.get(429, 0) > 0 and requests.get(500, 0) + requests.get(503, 0) > 0
    assert sandbox.state.duplicate_events > 0


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.klaviyo_sandbox(faults={**THIRTY_PERCENT_FAULTS, "seed": 7})
def test_permanently_invalid_events_end_dead_with_the_reason_and_nothing_else(
    sandbox: SandboxServer, clock: FakeClock
) -> None:
    valid = enqueue_events(2_000, prefix="ok")
    invalid = enqueue_invalid_events(5)

    flush_until_idle(make_client(clock), clock)

    dead = OutboxEvent.objects.filter(status=Status.DEAD)
    assert sorted(dead.values_list("unique_id", flat=True)) == sorted(invalid)
    for row in dead:
        assert row.last_error_status == 400
        assert "1990" in row.last_error_detail  # Klaviyo's own reason, kept on the row
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == len(valid)
    accepted = accepted_unique_ids(sandbox)
    assert set(accepted) == set(valid) and max(accepted.values()) == 1
    assert injected_failures(sandbox) > 0


# --- a revoked key ------------------------------------------------------------------


class RevokingClient:
    """Delegates to a real client; the sandbox revokes the key after ``after`` requests."""

    def __init__(self, client: KlaviyoClient, sandbox: SandboxServer, after: int) -> None:
        self._client = client
        self._sandbox = sandbox
        self._left = after

    def send_event_entries(self, entries: Any) -> None:
        if self._left == 0:
            # The sandbox has no public "revoke": give it another key, as Klaviyo would
            # after the key was deleted in the account.
            self._sandbox._api_key = "pk_rotated_ffffffffffffffffffffffffffff"
        self._left -= 1
        self._client.send_event_entries(entries)


@pytest.mark.django_db
def test_revoked_key_stops_the_flush_and_marks_only_what_was_sent(
    sandbox: SandboxServer, clock: FakeClock
) -> None:
    enqueue_events(600, prefix="rev", customers=50)
    client = RevokingClient(make_client(clock), sandbox, after=2)

    with pytest.raises(FlushAborted) as raised:
        flush_outbox(client=client, clock=clock, sleep=clock.sleep, batch_size=100)

    assert raised.value.reason == "auth"
    assert "rejected the API key" in str(raised.value)
    assert SANDBOX_KEY not in str(raised.value)
    sent = set(OutboxEvent.objects.filter(status=Status.SENT).values_list("unique_id", flat=True))
    assert sent == set(accepted_unique_ids(sandbox))
    assert len(sent) == 200
    # The rest wait for a new key, their attempts not spent on a configuration problem.
    rest = OutboxEvent.objects.exclude(status=Status.SENT)
    assert rest.count() == 400
    assert set(rest.values_list("status", flat=True)) == {Status.PENDING}
    assert set(rest.values_list("attempts", flat=True)) == {0}


@pytest.mark.django_db
def test_flush_command_reports_a_rejected_key_clearly(sandbox: SandboxServer, settings) -> None:
    from django.core.management import CommandError, call_command

    enqueue_events(10, prefix="cmd")
    wrong_key = "pk_wrong_00000000000000000000000000000000"
    settings.KLAVIYO = {**settings.KLAVIYO, "PRIVATE_API_KEY": wrong_key}

    with pytest.raises(CommandError) as raised:
        call_command("klaviyo_flush", verbosity=0)

    message = str(raised.value)
    assert "rejected the API key" in message and "PRIVATE_API_KEY" in message
    assert wrong_key not in message
    assert not OutboxEvent.objects.filter(status=Status.SENT).exists()
    assert sandbox.state.events() == []


# --- the database going away ---------------------------------------------------------


class DatabaseKillingClient:
    """Delegates to a real client; terminates the flusher's PostgreSQL backend from
    another connection right after Klaviyo accepted request number ``kill_after``."""

    def __init__(self, client: KlaviyoClient, kill_after: int) -> None:
        self._client = client
        self._left = kill_after
        self.killed_pid: int | None = None

    def send_event_entries(self, entries: Any) -> None:
        self._client.send_event_entries(entries)
        self._left -= 1
        if self._left == 0:
            self.killed_pid = terminate_backend_of(connection)


def terminate_backend_of(conn: Any) -> int:
    import psycopg

    pid = conn.connection.info.backend_pid
    params = conn.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    params.pop("server_side_binding", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    return pid


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_database_going_away_mid_flush_stops_and_marks_nothing_unsent(
    sandbox: SandboxServer, clock: FakeClock
) -> None:
    expected = enqueue_events(900, prefix="db", customers=100)
    killer = DatabaseKillingClient(make_client(clock), kill_after=3)

    with pytest.raises(FlushAborted) as raised:
        flush_outbox(client=killer, clock=clock, sleep=clock.sleep, batch_size=200)

    assert raised.value.reason == "database"
    assert "database" in str(raised.value).lower()
    assert killer.killed_pid is not None
    connection.close()  # the terminated connection; the next query reconnects
    accepted = set(accepted_unique_ids(sandbox))
    sent = set(OutboxEvent.objects.filter(status=Status.SENT).values_list("unique_id", flat=True))
    assert sent <= accepted  # nothing marked sent that Klaviyo did not accept
    assert len(sent) == 400  # the two batches recorded before the database went away
    # The batch in hand stays leased; after the lease it is sent again, once per unique_id.
    assert OutboxEvent.objects.filter(status=Status.SENDING).count() == 200
    clock.advance(301)  # past LEASE_SECONDS
    flush_until_idle(make_client(clock), clock)
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == len(expected)
    final = accepted_unique_ids(sandbox)
    assert set(final) == set(expected) and max(final.values()) == 1


# --- hostile webhook requests ------------------------------------------------------------

WEBHOOK_URL = "/klaviyo/webhooks/"
FLOW_URL = "/klaviyo/webhooks/flow/"
WEBHOOK_ID = "01HXRELIABILITY"


def _delivery(now: datetime, **meta: Any) -> dict[str, Any]:
    return {
        "meta": {
            "klaviyo_webhook_id": WEBHOOK_ID,
            "timestamp": now.isoformat(),
            **meta,
        },
        "data": [
            {
                "external_id": f"evt-{uuid.uuid4().hex}",
                "topic": "event:klaviyo.unsubscribed_from_email_marketing",
                "payload": {"email": "ada@example.com"},
            }
        ],
    }


def _signed_headers(secret: str, body: bytes, *, webhook_id: str = WEBHOOK_ID) -> dict[str, str]:
    timestamp = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    return {
        "Klaviyo-Signature": compute_signature(secret, body, timestamp),
        "Klaviyo-Timestamp": timestamp,
        "Klaviyo-Webhook-Id": webhook_id,
    }


def hostile_requests(secret: str, count: int, seed: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """``count`` (kind, request kwargs) pairs, none of which may be accepted."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    good_body = json.dumps(_delivery(now)).encode()

    def random_bytes() -> bytes:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 400)))

    def post(body: bytes, headers: dict[str, str], url: str = WEBHOOK_URL) -> dict[str, Any]:
        return {
            "method": "post",
            "path": url,
            "data": body,
            "content_type": "application/json",
            "headers": headers,
        }

    def signed(body: bytes, **kw: str) -> dict[str, Any]:
        return post(body, _signed_headers(secret, body, **kw))

    bad_json = [
        b"{",
        b'{"meta": {}',
        b"[1, 2,]",
        b'{"meta": NaN}',
        b"\xff\xfe\x00{}",
        b'{"data": [}',
        b"null",
        b"",
        b'{"a": 1}}',
        ("[" * 5000 + "]" * 5000).encode(),
    ]
    wrong_shapes = [
        [],
        "text",
        42,
        {"data": []},
        {"meta": "x", "data": []},
        {"meta": {"klaviyo_webhook_id": WEBHOOK_ID}, "data": []},
        {"meta": {"klaviyo_webhook_id": WEBHOOK_ID, "timestamp": "yesterday"}, "data": []},
        {"meta": {"klaviyo_webhook_id": "", "timestamp": now.isoformat()}, "data": []},
        {"meta": {"klaviyo_webhook_id": WEBHOOK_ID, "timestamp": now.isoformat()}, "data": {}},
        {"meta": {"klaviyo_webhook_id": WEBHOOK_ID, "timestamp": now.isoformat()}, "data": [1]},
        {
            "meta": {"klaviyo_webhook_id": WEBHOOK_ID, "timestamp": now.isoformat()},
            "data": [{"external_id": "", "topic": "t", "payload": {}}],
        },
        {
            "meta": {"klaviyo_webhook_id": WEBHOOK_ID, "timestamp": now.isoformat()},
            "data": [{"external_id": "x" * 300, "topic": "t", "payload": {}}],
        },
        {
            "meta": {"klaviyo_webhook_id": WEBHOOK_ID, "timestamp": now.isoformat()},
            "data": [{"external_id": "ok", "topic": None, "payload": {}}],
        },
        {
            "meta": {"klaviyo_webhook_id": WEBHOOK_ID, "timestamp": now.isoformat()},
            "data": [{"external_id": "ok", "topic": "t", "payload": []}],
        },
    ]
    kinds = [
        "random_bytes",
        "bad_json",
        "wrong_shape",
        "forged_signature",
        "absent_headers",
        "stale_timestamp",
        "mismatched_id",
        "wrong_method",
        "flow_forged",
        "huge_body",
    ]
    for index in range(count):
        kind = kinds[index % len(kinds)]
        if kind == "huge_body" and index % 100 != 9:
            kind = "random_bytes"  # a few huge bodies are enough, and they are slow
        if kind == "random_bytes":
            body = random_bytes()
            if rng.random() < 0.5:
                yield kind, signed(body)  # properly signed garbage
            else:
                yield kind, post(body, {"Klaviyo-Signature": body.hex()[:64]})
        elif kind == "bad_json":
            yield kind, signed(rng.choice(bad_json))
        elif kind == "wrong_shape":
            yield kind, signed(json.dumps(rng.choice(wrong_shapes)).encode())
        elif kind == "forged_signature":
            headers = _signed_headers(secret, good_body)
            headers["Klaviyo-Signature"] = rng.choice(
                [
                    compute_signature("not-the-secret", good_body, headers["Klaviyo-Timestamp"]),
                    f"{rng.getrandbits(256):064x}",
                    headers["Klaviyo-Signature"].upper()[:-1] + "0",
                    "sha256=" + headers["Klaviyo-Signature"],
                    "é" * 64,
                ]
            )
            yield kind, post(good_body, headers)
        elif kind == "absent_headers":
            headers = _signed_headers(secret, good_body)
            for name in rng.sample(sorted(headers), rng.randrange(1, 4)):
                del headers[name]
            yield kind, post(good_body, headers)
        elif kind == "stale_timestamp":
            skew = rng.choice([-1, 1]) * rng.uniform(301, 86_400 * 30)
            stale = json.dumps(_delivery(now + timedelta(seconds=skew))).encode()
            yield kind, signed(stale)
        elif kind == "mismatched_id":
            yield kind, signed(good_body, webhook_id="01HSOMEONEELSE")
        elif kind == "wrong_method":
            method = rng.choice(["get", "put", "patch", "delete", "head", "options"])
            yield (
                kind,
                {
                    "method": method,
                    "path": rng.choice([WEBHOOK_URL, FLOW_URL]),
                    "data": good_body,
                    "content_type": "application/json",
                    "headers": _signed_headers(secret, good_body),
                },
            )
        elif kind == "flow_forged":
            token = rng.choice(["", "wrong-token", "flow-token-0123456789abcdeX", "\u00e9" * 8])
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            yield kind, post(rng.choice([good_body, random_bytes()]), headers, url=FLOW_URL)
        elif kind == "huge_body":
            body = b'{"meta": {}, "data": ["' + b"x" * (5 * 1024 * 1024) + b'"]}'
            yield kind, signed(body)


@pytest.mark.django_db
def test_a_thousand_hostile_webhook_requests_are_all_refused_without_a_5xx(settings) -> None:
    secret = settings.KLAVIYO["WEBHOOK_SECRETS"][0]
    http = Client()
    statuses: dict[str, Counter[int]] = {}

    for kind, request in hostile_requests(secret, 1000, seed=5):
        response = http.generic(
            request["method"].upper(),
            request["path"],
            request["data"],
            request["content_type"],
            headers=request["headers"],
        )
        statuses.setdefault(kind, Counter())[response.status_code] += 1
        assert 400 <= response.status_code < 500, (kind, response.status_code, response.content)

    assert sum(sum(c.values()) for c in statuses.values()) == 1000
    assert WebhookItem.objects.count() == 0
    assert statuses["huge_body"] == {413: 10}
    assert set(statuses["forged_signature"]) == {403}
    assert set(statuses["stale_timestamp"]) == {403}
    assert set(statuses["wrong_method"]) == {405}

    # The same harness does get a genuine delivery through: the refusals above are real.
    body = json.dumps(_delivery(datetime.now(timezone.utc))).encode()
    response = http.post(
        WEBHOOK_URL,
        data=body,
        content_type="application/json",
        headers=_signed_headers(secret, body),
    )
    assert response.status_code == 200
    assert WebhookItem.objects.count() == 1
