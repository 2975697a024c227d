"""Pull Klaviyo lists, campaigns and flows into the local read-only mirror, and the
campaign, flow and revenue reports into the report tables (docs/insights.md).

    manage.py klaviyo_sync                 # everything: run it from cron or the task queue
    manage.py klaviyo_sync lists flows
    manage.py klaviyo_sync reports [--since 2026-01-01] [--account eu] [--force]

Rows are matched on ``klaviyo_id`` (update_or_create); rows gone from Klaviyo are kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_klaviyo import accounts
from django_klaviyo.client import get_client
from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.insights.reports import sync_reports
from django_klaviyo.models import KlaviyoCampaign, KlaviyoFlow, KlaviyoList

RESOURCES = ("lists", "campaigns", "flows", "reports")
CAMPAIGN_CHANNELS = ("email", "sms")


@dataclass
class SyncCount:
    created: int = 0
    updated: int = 0

    def add(self, created: bool) -> None:
        if created:
            self.created += 1
        else:
            self.updated += 1


def _datetime(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None


def _text(value: Any, max_length: int) -> str:
    return "" if value is None else str(value)[:max_length]


def _store(
    model: type[models.Model],
    resources: Iterable[Mapping[str, Any]],
    to_fields: Any,
    now: dt.datetime,
) -> SyncCount:
    count = SyncCount()
    for resource in resources:
        klaviyo_id = resource.get("id")
        if not klaviyo_id:
            continue
        attributes = resource.get("attributes") or {}
        fields = {**to_fields(attributes), "synced_at": now}
        _, created = model.objects.update_or_create(klaviyo_id=str(klaviyo_id), defaults=fields)
        count.add(created)
    return count


def sync_lists(client: Any, *, now: dt.datetime | None = None) -> SyncCount:
    return _store(
        KlaviyoList,
        client.get_lists(),
        lambda a: {
            "name": _text(a.get("name"), 255),
            "opt_in_process": _text(a.get("opt_in_process"), 32),
            "remote_created": _datetime(a.get("created")),
            "remote_updated": _datetime(a.get("updated")),
        },
        now or timezone.now(),
    )


def sync_campaigns(
    client: Any, *, channels: Iterable[str] = CAMPAIGN_CHANNELS, now: dt.datetime | None = None
) -> SyncCount:
    """Klaviyo requires a channel filter on campaigns, so each channel is its own query."""
    total = SyncCount()
    for channel in channels:
        resources = list(client.get_campaigns(channel=channel))
        count = _store(
            KlaviyoCampaign,
            resources,
            lambda a, channel=channel: {
                "name": _text(a.get("name"), 255),
                "channel": channel,
                "status": _text(a.get("status"), 64),
                "send_time": _datetime(a.get("send_time")),
                "remote_created": _datetime(a.get("created_at")),
                "remote_updated": _datetime(a.get("updated_at")),
                "raw": dict(a),
            },
            now or timezone.now(),
        )
        total.created += count.created
        total.updated += count.updated
    return total


def sync_flows(client: Any, *, now: dt.datetime | None = None) -> SyncCount:
    return _store(
        KlaviyoFlow,
        client.get_flows(),
        lambda a: {
            "name": _text(a.get("name"), 255),
            "status": _text(a.get("status"), 64),
            "trigger_type": _text(a.get("trigger_type"), 64),
            "archived": bool(a.get("archived")),
            "remote_created": _datetime(a.get("created")),
            "remote_updated": _datetime(a.get("updated")),
            "raw": dict(a),
        },
        now or timezone.now(),
    )


SYNCS = {"lists": sync_lists, "campaigns": sync_campaigns, "flows": sync_flows}


class Command(BaseCommand):
    help = "Pull Klaviyo lists, campaigns, flows and reports into the local tables."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "resources",
            nargs="*",
            metavar="RESOURCE",
            help="Any of: lists, campaigns, flows, reports (default: all).",
        )
        parser.add_argument(
            "--since",
            type=dt.date.fromisoformat,
            metavar="YYYY-MM-DD",
            help="reports: the first day to report on (default: KLAVIYO['REPORTS_DAYS'] ago).",
        )
        parser.add_argument(
            "--account",
            metavar="NAME",
            help="reports: this account only (default: every configured account).",
        )
        parser.add_argument(
            "--force", action="store_true", help="reports: fetch even those not due yet."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Checked here: argparse's choices reject an empty nargs="*" list on Python < 3.12.
        unknown = [name for name in options["resources"] if name not in RESOURCES]
        if unknown:
            raise CommandError(
                f"Unknown resource(s) {', '.join(unknown)}; choose from {', '.join(RESOURCES)}."
            )
        client = get_client()
        now = timezone.now()
        failed: list[str] = []
        for name in dict.fromkeys(options["resources"] or RESOURCES):
            if name == "reports":
                failed += self.sync_reports(options, now)
                continue
            try:
                count = SYNCS[name](client, now=now)
            except KlaviyoError as exc:
                raise CommandError(f"Syncing {name} failed: {exc}") from exc
            self.stdout.write(f"{name}: {count.created} created, {count.updated} updated.")

    def sync_reports(self, options: dict[str, Any], now: dt.datetime) -> list[str]:
        """Every account's reports (or ``--account``'s); returns the failed ones' lines. A
        report that is rate limited is not a failure: it resumes on the next run."""
        chosen = [options["account"]] if options.get("account") else None
        try:
            stored = accounts.stored_names(chosen)
        except KlaviyoError as exc:
            raise CommandError(str(exc)) from exc
        failed = []
        for account in stored:
            client = get_client(account or None)
            outcomes = sync_reports(
                client,
                account=account,
                since=options.get("since"),
                now=now,
                force=options.get("force", False),
            )
            for outcome in outcomes:
                self.stdout.write(f"reports: {outcome}")
                if outcome.state in ("forbidden", "error"):
                    failed.append(str(outcome))
        if failed:
            raise CommandError("Some reports failed:\n" + "\n".join(failed))
        return failed
