"""``manage.py klaviyo_purge --older-than DAYS``: delete old sent and dead outbox rows,
and old webhook deliveries whose items were all processed.

An age below the webhook replay window (``outbox.purge.minimum_webhook_age()``) is refused
with the reason and exit status 1: those deliveries' stored ids are what make a replay a
duplicate."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_klaviyo.outbox.purge import purge


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also rejects NaN
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Delete sent and dead outbox rows, and fully processed webhook deliveries, older "
        "than --older-than days. Pending, retrying and sending rows are never touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=_non_negative_float,
            required=True,
            metavar="DAYS",
            help="Age in days (by delivery time for sent rows, last change for dead rows); "
            "at least WEBHOOK_TOLERANCE_SECONDS plus a margin (about 1.05 by default).",
        )
        parser.add_argument("--batch-size", type=_positive_int, default=1000, metavar="N")
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            counts = purge(
                older_than=timedelta(days=options["older_than"]),
                batch_size=options["batch_size"],
                dry_run=options["dry_run"],
            )
        except (ValueError, OverflowError) as exc:
            raise CommandError(str(exc)) from exc
        verb = "Would delete" if options["dry_run"] else "Deleted"
        for name, count in counts.items():
            self.stdout.write(f"{verb} {count} {name} row(s).")
