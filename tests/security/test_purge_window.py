"""Issue 19, case 9: ``klaviyo_purge`` never deletes the webhook log a replay is
recognised by.

A signed delivery is accepted while its ``meta.timestamp`` is within
WEBHOOK_TOLERANCE_SECONDS; its items' stored ids are what makes a replay a duplicate. So
an age below that window (plus the accepted clock skew and a margin) is refused, with the
reason and a non-zero exit, and purging at the smallest accepted age keeps every delivery
that could still be replayed.
"""

from __future__ import annotations

import datetime as dt
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command, load_command_class
from django.utils import timezone

from django_klaviyo.models import WebhookDelivery, WebhookItem
from django_klaviyo.outbox.purge import minimum_webhook_age, purge
from tests.webhooks.test_webhooks import delivery_body, event_item, post

pytestmark = pytest.mark.django_db


def delivered(client, external_id: str = "p1") -> bytes:
    body = delivery_body(event_item(external_id))
    answer = post(client, body)
    assert answer.json()["new"] == 1
    assert WebhookItem.objects.filter(external_id=external_id, processed=True).exists()
    return body


@pytest.mark.parametrize("days", ["0", "0.0001", "0.5"])
def test_an_age_inside_the_replay_window_is_refused_with_the_reason(client, days):
    body = delivered(client)
    with pytest.raises(CommandError) as refused:
        call_command("klaviyo_purge", "--older-than", days, stdout=StringIO())
    message = str(refused.value)
    assert "WEBHOOK_TOLERANCE_SECONDS" in message and "replay" in message
    suggested = float(re.search(r"--older-than ([0-9.]+) or more", message)[1])
    assert dt.timedelta(days=suggested) >= minimum_webhook_age()
    # Nothing was deleted, so the replay is still recognised.
    assert post(client, body).json()["new"] == 0


def test_the_command_exits_non_zero(capsys):
    command = load_command_class("django_klaviyo", "klaviyo_purge")
    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(
            ["manage.py", "klaviyo_purge", "--older-than", "0.0001", "--skip-checks"]
        )
    assert exited.value.code != 0
    assert "WEBHOOK_TOLERANCE_SECONDS" in capsys.readouterr().err


def test_purge_itself_refuses_an_age_inside_the_window():
    with pytest.raises(ValueError, match="WEBHOOK_TOLERANCE_SECONDS"):
        purge(older_than=minimum_webhook_age() - dt.timedelta(seconds=1))


def test_the_minimum_covers_the_tolerance(settings):
    for tolerance in (300, 3600, 86400):
        settings.KLAVIYO = {**settings.KLAVIYO, "WEBHOOK_TOLERANCE_SECONDS": tolerance}
        assert minimum_webhook_age() > dt.timedelta(seconds=tolerance)


def test_purging_at_the_minimum_keeps_every_delivery_that_can_still_be_replayed(client, settings):
    body = delivered(client)
    # The oldest delivery still fresh enough to be accepted again: received (and stamped)
    # almost a whole tolerance ago.
    from django_klaviyo.conf import klaviyo_settings

    tolerance = float(klaviyo_settings.WEBHOOK_TOLERANCE_SECONDS)
    almost = timezone.now() - dt.timedelta(seconds=tolerance - 120)
    WebhookDelivery.objects.update(received_at=almost)
    replay = delivery_body(event_item("p1"), sent_at=almost)

    assert purge(older_than=minimum_webhook_age())["webhook_deliveries"] == 0
    answer = post(client, replay)
    assert answer.status_code == 200
    assert answer.json()["new"] == 0 and answer.json()["duplicates"] == 1
    assert body  # the original delivery stays in the log


def test_an_age_beyond_the_window_purges_as_before(client):
    delivered(client)
    WebhookDelivery.objects.update(received_at=timezone.now() - dt.timedelta(days=40))
    out = StringIO()
    call_command("klaviyo_purge", "--older-than", "30", stdout=out)
    assert "Deleted 1 webhook_deliveries row(s)." in out.getvalue()
