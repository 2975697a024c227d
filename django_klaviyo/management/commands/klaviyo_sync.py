"""Pull Klaviyo lists, campaigns, flows and segments into the local read-only mirror, and
the campaign, flow and revenue reports into the report tables (docs/insights.md).

    manage.py klaviyo_sync                      # everything, for every configured account
    manage.py klaviyo_sync lists flows
    manage.py klaviyo_sync segments --account eu
    manage.py klaviyo_sync reports [--since 2026-01-01] [--force]

Rows are matched on (account, ``klaviyo_id``) (update_or_create); lists, campaigns and
flows gone from Klaviyo are kept. Segments: ``django_klaviyo.insights.segment_sync``
(resumable, with progress). A failure of one account or resource does not stop the
others; the command then exits non-zero naming each.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_klaviyo import accounts
from django_klaviyo.client import get_client
from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.insights.reports import sync_reports
from django_klaviyo.insights.segment_sync import sync_segments
from django_klaviyo.management.base import LongRunningCommand
from django_klaviyo.models import KlaviyoCampaign, KlaviyoFlow, KlaviyoList

RESOURCES = ("lists", "campaigns", "flows", "segments", "reports")
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
    account: str = "",
) -> SyncCount:
    count = SyncCount()
    for resource in resources:
        klaviyo_id = resource.get("id")
        if not klaviyo_id:
            continue
        attributes = resource.get("attributes") or {}
        fields = {**to_fields(attributes), "synced_at": now}
        _, created = model.objects.update_or_create(
            account=account, klaviyo_id=str(klaviyo_id), defaults=fields
        )
        count.add(created)
    return count


def sync_lists(client: Any, *, now: dt.datetime | None = None, account: str = "") -> SyncCount:
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
        account,
    )


def sync_campaigns(
    client: Any,
    *,
    channels: Iterable[str] = CAMPAIGN_CHANNELS,
    now: dt.datetime | None = None,
    account: str = "",
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
            account,
        )
        total.created += count.created
        total.updated += count.updated
    return total


def sync_flows(client: Any, *, now: dt.datetime | None = None, account: str = "") -> SyncCount:
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
        account,
    )


SYNCS = {"lists": sync_lists, "campaigns": sync_campaigns, "flows": sync_flows}


class Command(LongRunningCommand):
    help = (
        "Pull Klaviyo lists, campaigns, flows and segments into the local mirror tables, "
        "and Klaviyo's reports, for every configured account (--account for one)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "resources",
            nargs="*",
            metavar="RESOURCE",
            help="Any of: lists, campaigns, flows, segments, reports (default: all).",
        )
        parser.add_argument(
            "--since",
            type=dt.date.fromisoformat,
            metavar="YYYY-MM-DD",
            help="reports: the first day to report on (default: KLAVIYO['REPORTS_DAYS'] ago).",
        )
        parser.add_argument(
            "--force", action="store_true", help="reports: fetch even those not due yet."
        )
        parser.add_argument(
            "--account",
            action="append",
            metavar="NAME",
            help="Only this account of KLAVIYO['ACCOUNTS'] ('default': the top-level one); "
            "repeat for several. Default: every configured account.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Checked here: argparse's choices reject an empty nargs="*" list on Python < 3.12.
        unknown = [name for name in options["resources"] if name not in RESOURCES]
        if unknown:
            raise CommandError(
                f"Unknown resource(s) {', '.join(unknown)}; choose from {', '.join(RESOURCES)}."
            )
        try:
            chosen = [accounts.get_account(name) for name in options["account"] or accounts.names()]
        except KlaviyoError as exc:
            raise CommandError(str(exc)) from exc
        now = timezone.now()
        self.report_options = {"since": options.get("since"), "force": options.get("force")}
        failures: list[str] = []
        for account in chosen:
            prefix = f"[{account.name}] " if accounts.several() else ""
            client = get_client() if account.is_default else get_client(account.name)
            for name in dict.fromkeys(options["resources"] or RESOURCES):
                try:
                    failures += self._sync(client, name, account.stored, now, prefix)
                except KlaviyoError as exc:
                    failures.append(f"{prefix}syncing {name} failed: {exc}")
                    self.stderr.write(failures[-1])
        if failures:
            raise CommandError("\n".join(failures))

    def _sync(
        self, client: Any, name: str, account: str, now: dt.datetime, prefix: str
    ) -> list[str]:
        """Sync one resource of one account; returns the problems to fail the run with."""
        if name == "reports":
            return self._reports(client, account, now, prefix)
        if name != "segments":
            count = SYNCS[name](client, now=now, account=account)
            self.stdout.write(f"{prefix}{name}: {count.created} created, {count.updated} updated.")
            return []
        self.stdout.write(f"{prefix}segments:")
        result = sync_segments(client, account, now=now, progress=self.stdout.write)
        members = ", ".join(f"{n}: {c}" for n, c in result.members.items()) or "none chosen"
        self.stdout.write(
            f"{prefix}segments: {result.segments} listed, {result.counted} counted; "
            f"members mirrored ({members})."
        )
        for problem in result.problems:
            self.stderr.write(f"{prefix}{problem}")
        return [f"{prefix}{problem}" for problem in result.problems]

    def _reports(self, client: Any, account: str, now: dt.datetime, prefix: str) -> list[str]:
        """The account's reports; a forbidden or failed one fails the run, a rate-limited one
        does not (it resumes on the next run)."""
        options = getattr(self, "report_options", {})
        outcomes = sync_reports(
            client,
            account=account,
            since=options.get("since"),
            now=now,
            force=bool(options.get("force")),
        )
        problems = []
        for outcome in outcomes:
            self.stdout.write(f"{prefix}reports: {outcome}")
            if outcome.state in ("forbidden", "error"):
                problems.append(f"{prefix}report failed: {outcome}")
        return problems
