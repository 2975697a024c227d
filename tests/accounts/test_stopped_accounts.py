"""A Klaviyo account whose key was refused comes back: a looping worker tries it again
after a back-off, every worker sharing the cache honours the stop, ``klaviyo_status`` and
the admin say "stopped until T: reason", and a requested stop still exits 0 (issue 23)."""

from __future__ import annotations

import logging
import os
import signal
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from django_klaviyo.flush import FlushAborted
from django_klaviyo.flush.loop import Flusher
from django_klaviyo.flush.rotation import STOP_BACKOFF_SECONDS, stops
from django_klaviyo.models import OutboxEvent
from django_klaviyo.testing.sandbox.server import SandboxServer
from tests.accounts.test_accounts import EU_KEY, US_KEY, order, placed_numbers, two_accounts

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_rate_limits")]

S = OutboxEvent.Status
REVOKED = "pk_eu_key_klaviyo_does_not_know_000000"


@pytest.fixture
def sandboxes():
    """The default account's Klaviyo, and the EU one, which refuses the EU key (401)
    until the test restores it."""
    with SandboxServer(api_key=US_KEY) as us, SandboxServer(api_key=REVOKED) as eu:
        yield us, eu


def looping_worker(clock: Any, steps: list[Any]) -> Flusher:
    """A ``--loop`` worker on the fake clock: each time it idles, the next step runs
    (the last one asks it to stop)."""
    flusher = Flusher(clock=clock, sleep=lambda seconds: steps.pop(0)(), jitter=lambda: 1.0)
    flusher.accounts.clock = clock
    return flusher


def test_a_looping_worker_tries_a_refused_account_again_after_the_back_off(
    settings, sandboxes, clock
):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    order("USD", "US-1")
    order("EUR", "EU-1")
    stopped = []
    seen: dict[str, Any] = {}

    def first_idle() -> None:
        # The EU key was refused; the default account's order went out.
        seen["after_refusal"] = (placed_numbers(us), placed_numbers(eu))
        seen["stop"] = stops()["eu"]
        # The owner restores the key in Klaviyo; a new EU order comes in meanwhile.
        eu.set_api_key(EU_KEY)
        order("EUR", "EU-2")
        clock.advance(STOP_BACKOFF_SECONDS / 2)

    def second_idle() -> None:
        seen["within_back_off"] = placed_numbers(eu)
        clock.advance(STOP_BACKOFF_SECONDS)

    def third_idle() -> None:
        stopped.append(True)

    flusher = looping_worker(clock, [first_idle, second_idle, third_idle])
    report = flusher.run(loop=True, stop=lambda: bool(stopped))

    assert seen["after_refusal"] == (["US-1"], [])
    assert "KLAVIYO['ACCOUNTS']['eu']['PRIVATE_API_KEY']" in seen["stop"].reason
    assert (seen["stop"].until - clock.now).total_seconds() <= STOP_BACKOFF_SECONDS
    assert seen["within_back_off"] == []  # left alone during the back-off
    assert placed_numbers(eu) == ["EU-1", "EU-2"]  # ...then served again
    assert report.ended == "stopped"
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {S.SENT}


def test_each_refusal_in_a_row_doubles_the_back_off(settings, sandboxes, clock):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    order("EUR", "EU-1")
    backoffs = []

    def refused_again() -> None:
        backoffs.append((stops()["eu"].until - clock.now).total_seconds())
        clock.advance(backoffs[-1] + 1)

    steps = [refused_again, refused_again, refused_again, lambda: stopped.append(True)]
    stopped: list[bool] = []
    with pytest.raises(FlushAborted) as ended:  # still refused when asked to stop
        looping_worker(clock, steps).run(loop=True, stop=lambda: bool(stopped))
    assert ended.value.report.ended == "stopped"

    assert backoffs == [STOP_BACKOFF_SECONDS, 2 * STOP_BACKOFF_SECONDS, 4 * STOP_BACKOFF_SECONDS]
    assert OutboxEvent.objects.get().attempts == 0  # the key is the problem, not the row


def test_every_worker_leaves_a_stopped_account_alone_until_its_time(settings, sandboxes, clock):
    us, eu = sandboxes
    eu.set_api_key(EU_KEY)  # Klaviyo knows the EU key; the worker is given an old one
    two_accounts(settings, us.url, eu.url, PRIVATE_API_KEY=REVOKED)
    order("EUR", "EU-1")
    with pytest.raises(FlushAborted):  # a single run ends non-zero, naming the account
        looping_worker(clock, []).run()
    refused = eu.state.request_counts()["bulk_create_events"][401]

    # A second worker (another process sharing the cache) does not ask Klaviyo again.
    order("USD", "US-1")
    second = looping_worker(clock, [])
    second.run()
    assert placed_numbers(us) == ["US-1"]
    assert eu.state.request_counts()["bulk_create_events"][401] == refused

    # A worker started with another key for the account (the fixed one) tries at once.
    two_accounts(settings, us.url, eu.url)
    looping_worker(clock, []).run()
    assert placed_numbers(eu) == ["EU-1"]


def test_status_and_admin_say_stopped_until_when_and_why(settings, sandboxes, clock, client):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    order("EUR", "EU-1")
    with pytest.raises(FlushAborted):
        looping_worker(clock, []).run()
    until = stops()["eu"].until.isoformat(timespec="seconds")

    out = StringIO()
    with pytest.raises(SystemExit):  # the EU row is still due: a backlog
        call_command("klaviyo_status", "--max-due", "0", stdout=out)
    assert f"account eu: stopped until {until}: " in out.getvalue()
    assert "KLAVIYO['ACCOUNTS']['eu']['PRIVATE_API_KEY']" in out.getvalue()
    assert REVOKED not in out.getvalue() and EU_KEY not in out.getvalue()

    staff = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(staff)
    page = client.get(reverse("admin:django_klaviyo_outboxevent_changelist"))
    assert f"Klaviyo account eu: stopped until {until}: " in page.content.decode()

    # The status endpoint a monitor polls says it too, as klaviyo_status --json does.
    answer = client.get(reverse("klaviyo-status"))
    [line] = answer.json()["stopped_accounts"]
    assert line.startswith(f"eu: stopped until {until}: ")
    assert REVOKED not in answer.content.decode() and EU_KEY not in answer.content.decode()


class _TermOnRefusal(logging.Handler):
    """SIGTERM to this process the moment the worker logs the refused key, as a
    supervisor stopping the worker would."""

    def emit(self, record: logging.LogRecord) -> None:
        if "Klaviyo account 'eu'" in record.getMessage():
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_after_a_refused_account_exits_0(settings, sandboxes):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    order("USD", "US-1")
    order("EUR", "EU-1")
    handler = _TermOnRefusal()
    logger = logging.getLogger("django_klaviyo.flush")
    logger.addHandler(handler)
    out, err = StringIO(), StringIO()
    try:
        # Returns (exit status 0) instead of raising CommandError(returncode=1).
        call_command("klaviyo_flush", "--loop", "--idle-sleep", "60", stdout=out, stderr=err)
    finally:
        logger.removeHandler(handler)
    assert "Stopped on request" not in err.getvalue()
    assert "Account 'eu'" in err.getvalue()
    assert stops()["eu"].reason in err.getvalue()
