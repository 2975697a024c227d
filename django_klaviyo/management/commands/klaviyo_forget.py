"""``manage.py klaviyo_forget --email a@example.com``: GDPR erasure of one person.

Queues Klaviyo's deletion request (sent by the next flush) and erases the person from the
local mirror at once (``django_klaviyo.profiles.erasure``); prints what was erased.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_klaviyo import accounts
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.profiles import erasure


class Command(BaseCommand):
    help = (
        "Ask Klaviyo to delete a profile and erase it from the local mirror: profile link, "
        "list memberships, unsent outbox rows, sent rows' payloads, webhook items."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--email")
        who.add_argument("--phone-number")
        who.add_argument("--profile-id", help="Klaviyo's profile id.")
        parser.add_argument(
            "--account",
            help="The Klaviyo account asked to delete the profile (a name of "
            "KLAVIYO['ACCOUNTS'], or 'default', the default). Run once per account the "
            "person is in.",
        )
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            account = accounts.get_account(options["account"]).stored
            row, report = erasure.forget(
                email=options["email"],
                phone_number=options["phone_number"],
                profile_id=options["profile_id"],
                using=options["database"],
                account=account,
            )
        except KlaviyoValidationError as exc:
            raise CommandError(f"{exc.field}: {exc}") from exc
        if row is None:
            self.stdout.write("KLAVIYO['ENABLED'] is False: no deletion request was queued.")
        else:
            to = accounts.display(row.account)
            self.stdout.write(f"Deletion request queued for account {to!r} (outbox row {row.pk}).")
        for name, count in report.counts().items():
            self.stdout.write(f"{name}: {count}")
