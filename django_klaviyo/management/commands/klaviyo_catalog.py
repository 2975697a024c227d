"""``manage.py klaviyo_catalog sync``: enqueue the whole mapped catalog.

Streams each mapped model in primary-key order (``--chunk-size`` objects a query and a
transaction), writing create rows (an object Klaviyo already has is updated instead)
and printing progress per section. Objects whose mapped data Klaviyo would refuse are
listed on stderr with the reason, and the command then fails. ``--flush`` sends the
catalog rows right away; otherwise the running ``klaviyo_flush`` sends them.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from django_klaviyo import accounts
from django_klaviyo.catalog import mapping
from django_klaviyo.client import get_client
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.flush import flush_outbox
from django_klaviyo.management.base import LongRunningCommand
from django_klaviyo.models import OutboxEvent
from django_klaviyo.outbox import OutboxRow, enqueue_rows

Kind = OutboxEvent.Kind
CATALOG_KINDS = (Kind.CATALOG_CATEGORY, Kind.CATALOG_ITEM, Kind.CATALOG_VARIANT)
# Categories first: items name them; items before their variants.
ORDER = ("CATEGORIES", "ITEMS", "VARIANTS")


class Command(LongRunningCommand):
    help = "Sync the mapped catalog (KLAVIYO['CATALOG']) to Klaviyo's catalog."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["sync"])
        parser.add_argument(
            "--section",
            choices=ORDER,
            action="append",
            help="Only these sections (repeatable); default: every mapped one.",
        )
        parser.add_argument("--chunk-size", type=int, default=500)
        parser.add_argument(
            "--flush", action="store_true", help="Send the catalog rows now, then exit."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = mapping.catalog_config()
        except Exception as exc:
            raise CommandError(str(exc)) from exc
        if not config:
            raise CommandError("KLAVIYO['CATALOG'] maps nothing: there is no catalog to sync.")
        chunk_size = options["chunk_size"]
        if chunk_size < 1:
            raise CommandError("--chunk-size must be at least 1.")
        wanted = options["section"] or ORDER
        failures = 0
        for section in ORDER:
            if section in wanted and section in config:
                failures += self._sync(section, chunk_size)
        if options["flush"]:
            report = flush_outbox(kinds=CATALOG_KINDS, client=get_client())
            sent = sum(report.counts(k).sent for k in CATALOG_KINDS)
            dead = sum(report.counts(k).dead for k in CATALOG_KINDS)
            self.stdout.write(f"flushed: {sent} sent, {dead} dead")
            if dead:
                failures += dead
        if failures:
            raise CommandError(
                f"{failures} object(s) or row(s) could not be synced; see the messages above "
                "and the outbox's dead rows."
            )

    def _sync(self, section: str, chunk_size: int) -> int:
        model = mapping.section_model(section)
        total = model._default_manager.count()
        done = failures = 0
        last_pk: Any = None
        while True:
            objects = model._default_manager.order_by("pk")
            if last_pk is not None:
                objects = objects.filter(pk__gt=last_pk)
            chunk = list(objects[:chunk_size])
            if not chunk:
                break
            # By Klaviyo account (ACCOUNT_RESOLVER's answer for each object), then key.
            rows: dict[str, dict[Any, OutboxRow]] = {}
            for obj in chunk:
                try:
                    built = mapping.upsert_rows(obj, section, create=True)
                    account = accounts.account_for(obj)
                except KlaviyoValidationError as exc:
                    failures += 1
                    self.stderr.write(f"{section} {obj!r} (pk {obj.pk}): {exc} (field {exc.field})")
                    continue
                for row in built:
                    # A category named by many products is written once.
                    rows.setdefault(account, {})[row.dedupe_key or id(row)] = row
            with transaction.atomic():
                for account, some in rows.items():
                    enqueue_rows(list(some.values()), account=account)
            done += len(chunk)
            last_pk = chunk[-1].pk
            self.stdout.write(f"{section}: {done}/{total}")
        return failures
