"""Deliver one signed Klaviyo system webhook to this shop, as Klaviyo would.

It signs an ``unsubscribed_from_email_marketing`` event for the first customer with the
first configured webhook secret (Klaviyo's rule: hex HMAC-SHA256 over the raw body followed
by the ``Klaviyo-Timestamp`` header), posts it to the webhook URL through Django's test
client, and shows the customer's consent before and after.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.http import http_date

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.models import KlaviyoProfileLink
from django_klaviyo.webhooks.verify import compute_signature


class Command(BaseCommand):
    help = "Send one signed Klaviyo webhook (an email unsubscribe) to this shop."

    def handle(self, *args: Any, **options: Any) -> None:
        secrets = klaviyo_settings.webhook_secrets()
        if not secrets:
            raise CommandError("Set KLAVIYO_WEBHOOK_SECRET first.")
        user = get_user_model().objects.exclude(email="").order_by("pk").first()
        if user is None:
            raise CommandError("No customer yet: run seed_shop first.")
        link, _ = KlaviyoProfileLink.objects.get_or_create(
            user=user, defaults={"email": user.email}
        )
        before = link.get_email_consent_display()

        now = timezone.now()
        webhook_id = "01DEMO" + uuid.uuid4().hex[:20].upper()
        event_id = uuid.uuid4().hex[:12]
        body = json.dumps(
            {
                "meta": {
                    "timestamp": now.isoformat(),
                    "klaviyo_webhook_id": webhook_id,
                    "klaviyo_account_id": "DEMO01",
                    "version": "2024-06-28",
                },
                "data": [
                    {
                        "topic": "event:klaviyo.unsubscribed_from_email_marketing",
                        "external_id": event_id,
                        "payload": {
                            "data": {
                                "type": "event",
                                "id": event_id,
                                "attributes": {
                                    "datetime": now.isoformat(),
                                    "timestamp": int(now.timestamp()),
                                    "event_properties": {
                                        "method": "PROFILE_PAGE",
                                        "email_address": user.email,
                                    },
                                },
                            }
                        },
                    }
                ],
            }
        ).encode()
        timestamp = http_date(now.timestamp())
        response = Client(SERVER_NAME="localhost").post(
            reverse("klaviyo-webhook"),
            data=body,
            content_type="application/json",
            HTTP_KLAVIYO_WEBHOOK_ID=webhook_id,
            HTTP_KLAVIYO_TIMESTAMP=timestamp,
            HTTP_KLAVIYO_SIGNATURE=compute_signature(secrets[0], body, timestamp),
        )
        link.refresh_from_db()
        self.stdout.write(
            f"webhook answered {response.status_code} {response.content.decode()}; "
            f"{user.email} email consent: {before} -> {link.get_email_consent_display()}"
        )
        # The same delivery again is acknowledged but not processed twice.
        replay = Client(SERVER_NAME="localhost").post(
            reverse("klaviyo-webhook"),
            data=body,
            content_type="application/json",
            HTTP_KLAVIYO_WEBHOOK_ID=webhook_id,
            HTTP_KLAVIYO_TIMESTAMP=timestamp,
            HTTP_KLAVIYO_SIGNATURE=compute_signature(secrets[0], body, timestamp),
        )
        self.stdout.write(
            f"replayed delivery answered {replay.status_code} {replay.content.decode()}"
        )
        if response.status_code != 200 or link.email_consent != "unsubscribed":
            raise CommandError("The webhook did not update the consent mirror.")
