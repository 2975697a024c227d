"""``manage.py klaviyo_flush``: options, summary output, signals and exit status."""

from __future__ import annotations

import os
import signal
from io import StringIO
from typing import Any

import pytest
import responses
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.test import override_settings

from django_klaviyo.models import OutboxEvent
from tests.flush.test_flush import EVENTS_URL, error_body, make_event, make_row
from tests.projects.settings import KLAVIYO as TEST_KLAVIYO

Status = OutboxEvent.Status

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("klaviyo_flush", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_flush_prints_a_summary_per_kind(mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    for i in range(3):
        make_event(unique_id=f"u{i}")
    make_row(OutboxEvent.Kind.EVENT, {"metric": "M", "profile": {}})

    out, err = run()

    assert "Sent 3, retrying 0, dead 1 (1 request(s), 1 batch(es))." in out
    assert "  event: sent 3, retrying 0, dead 1" in out
    assert err == ""
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 3


def test_verbosity_zero_prints_nothing_and_two_prints_progress(mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    for i in range(4):
        make_event(unique_id=f"u{i}")

    assert run("--verbosity", "0", "--batch-size", "2") == ("", "")
    for i in range(4, 8):
        make_event(unique_id=f"u{i}")
    out, _ = run("--verbosity", "2", "--batch-size", "2")
    assert out.count("... sent") == 2
    assert "Sent 4," in out


def test_dry_run_lists_what_would_be_sent_without_http_or_claims(mocked):
    for i in range(2):
        make_event(unique_id=f"u{i}")

    out, _ = run("--dry-run")

    assert "Dry run: 2 due row(s) would be sent in 1 request(s)" in out
    assert "  event: 2" in out
    assert len(mocked.calls) == 0
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {Status.PENDING}


def test_kinds_option_limits_the_flush(mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    event = make_event()
    upsert = make_row(OutboxEvent.Kind.PROFILE_UPSERT, {"profile": {"email": "a@example.com"}})

    run("--kinds", "event")

    assert OutboxEvent.objects.get(pk=event.pk).status == Status.SENT
    assert OutboxEvent.objects.get(pk=upsert.pk).status == Status.PENDING


@pytest.mark.parametrize(
    "args",
    [
        ["--kinds", "event,nonsense"],
        ["--batch-size", "0"],
        ["--max-seconds", "-1"],
    ],
)
def test_bad_options_are_command_errors(args):
    with pytest.raises(CommandError):
        run(*args)


@pytest.mark.parametrize(
    "key",
    [None, "AbC123", "not a key"],
    ids=["missing", "public-key", "malformed"],
)
def test_a_missing_or_malformed_key_is_a_configuration_error(key):
    row = make_event()
    settings = {k: v for k, v in TEST_KLAVIYO.items() if k != "PRIVATE_API_KEY"}
    if key is not None:
        settings["PRIVATE_API_KEY"] = key
    with override_settings(KLAVIYO=settings), pytest.raises(CommandError) as caught:
        run()
    assert "PRIVATE_API_KEY" in str(caught.value)
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.PENDING, 0)


def test_a_revoked_key_is_a_configuration_error_and_rows_go_back(mocked):
    mocked.add(
        responses.POST,
        EVENTS_URL,
        status=401,
        json=error_body(401, "authentication_failed", "Incorrect authentication credentials."),
    )
    row = make_event()

    with pytest.raises(CommandError) as caught:
        run()

    assert "rejected the API key" in str(caught.value)
    assert caught.value.returncode == 1  # a configuration error (docs/workers.md)
    assert TEST_KLAVIYO["PRIVATE_API_KEY"] not in str(caught.value)
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.PENDING, 0)


def test_klaviyo_failures_do_not_fail_the_command(mocked):
    mocked.add(responses.POST, EVENTS_URL, status=400, json=error_body(400, "invalid", "Bad."))
    make_event()

    out, _ = run()

    assert "dead 1" in out


def test_sigterm_finishes_the_batch_in_hand_then_exits_cleanly(mocked):
    def accept_then_get_terminated(request: Any) -> tuple[int, dict, str]:
        os.kill(os.getpid(), signal.SIGTERM)
        return 202, {}, ""

    mocked.add_callback(responses.POST, EVENTS_URL, callback=accept_then_get_terminated)
    for i in range(5):
        make_event(unique_id=f"u{i}")
    before = signal.getsignal(signal.SIGTERM)

    out, _ = run("--batch-size", "2", "--loop")

    assert "Stopped on request" in out
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 2
    assert OutboxEvent.objects.filter(status=Status.PENDING).count() == 3
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_single_run_with_the_database_unavailable_exits_3(mocked):
    """Not silence: a one-off run (cron) that could not reach the database says so with
    its exit status; a --loop worker would ride it out instead (test_flush_workers)."""
    make_event()

    def database_gone(execute, sql, params, many, context):
        if "klaviyo_outbox" in sql.lower() or "outboxevent" in sql.lower():
            raise OperationalError("could not connect to server: Connection refused")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(database_gone), pytest.raises(CommandError) as caught:
        run()

    assert caught.value.returncode == 3
    assert "database" in str(caught.value)
