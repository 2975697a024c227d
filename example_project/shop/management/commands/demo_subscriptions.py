"""``manage.py demo_subscriptions [--count N]``: a few customers subscribe to a plan,
then one pauses and one cancels, through ordinary model saves. KLAVIYO["TRACKED_MODELS"]
turns each status change into Subscription Started / Paused / Cancelled and mirrors the
status and plan on the customer's profile (docs/mapping.md, Tracked models)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_klaviyo.models import OutboxEvent
from shop.models import Subscription

PLANS = [("Coffee Club", Decimal("19.00")), ("Coffee Club Plus", Decimal("29.00"))]


class Command(BaseCommand):
    help = "Subscribe a few customers to a plan, then pause one and cancel one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=3)

    def handle(self, *args: Any, **options: Any) -> None:
        count = options["count"]
        if count < 2:
            raise CommandError("--count must be 2 or more (one pauses, one cancels).")
        customers = list(get_user_model().objects.exclude(email="").order_by("pk")[:count])
        if len(customers) < count:
            raise CommandError(f"{count} customers with an email are needed: run seed_shop first.")
        before = OutboxEvent.objects.count()
        subscriptions = []
        for index, customer in enumerate(customers):
            plan, mrr = PLANS[index % len(PLANS)]
            # Created directly active: Subscription Started.
            subscriptions.append(
                Subscription.objects.create(
                    customer=customer, plan=plan, mrr=mrr, status=Subscription.Status.ACTIVE
                )
            )
        paused, cancelled = subscriptions[0], subscriptions[1]
        paused.status = Subscription.Status.PAUSED
        paused.save()
        cancelled.status = Subscription.Status.CANCELLED
        cancelled.save()
        self.stdout.write(
            f"subscriptions: {len(subscriptions)} started, 1 paused, 1 cancelled; "
            f"outbox rows added: {OutboxEvent.objects.count() - before}"
        )
