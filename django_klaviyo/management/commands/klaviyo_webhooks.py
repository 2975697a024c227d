"""Manage Klaviyo system webhooks: ``list``, ``topics``, ``create``, ``delete``, and run
the handlers of received items: ``process``.

    manage.py klaviyo_webhooks process [--failed]
    manage.py klaviyo_webhooks list
    manage.py klaviyo_webhooks topics
    manage.py klaviyo_webhooks create --name shop \\
        --url https://shop.example.com/klaviyo/webhooks/ \\
        --topic event:klaviyo.unsubscribed_from_email_marketing --secret-env KLAVIYO_WEBHOOK_SECRET
    manage.py klaviyo_webhooks delete 01KP4EGG9B0AEF4VJD749M6H9D
    manage.py klaviyo_webhooks list --account eu      # another Klaviyo account's webhooks

The signing secret is read from the environment variable named by ``--secret-env`` (or the
first of the account's WEBHOOK_SECRETS); it is never printed. ``--account NAME`` (``list``,
``topics``, ``create``, ``delete``) acts on that account of KLAVIYO['ACCOUNTS'] with its
own key; its deliveries go to ``webhooks/<account>/``. Klaviyo's Webhooks API needs
Advanced KDP or an OAuth app, and allows 1 request/s.

``process`` handles pending items (those of large deliveries, acknowledged before their
handlers ran) until none is left, in batches that skip items another worker holds;
``--failed`` runs the failed ones again too. ``klaviyo_flush`` does the same in every loop,
so this is for deployments without a flush worker, or to retry failures by hand. It exits
with status 1 when an item failed (the item records why).
"""

from __future__ import annotations

import difflib
import os
from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_klaviyo import accounts
from django_klaviyo.accounts import Account
from django_klaviyo.client import KlaviyoClient, get_client
from django_klaviyo.exceptions import KlaviyoError, KlaviyoValidationError
from django_klaviyo.models import WebhookItem
from django_klaviyo.webhooks.dispatch import ProcessResult, process_items, process_pending

MIN_SECRET_LENGTH = 16


def check_endpoint_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise CommandError(
            f"--url must be an https:// URL with a host (Klaviyo requires it), not {url!r}."
        )
    return url


def resolve_secret(secret_env: str | None, account: Account | None = None) -> str:
    """The signing secret, from ``$secret_env`` or ``account``'s settings (default: the
    default account's); checked, never shown."""
    account = account or accounts.get_account()
    if secret_env:
        secret = os.environ.get(secret_env, "")
        if not secret:
            raise CommandError(f"The environment variable {secret_env} is empty or not set.")
    else:
        secrets = account.webhook_secrets
        if not secrets:
            raise CommandError(
                "No signing secret: pass --secret-env VAR or set "
                f"{account.setting('WEBHOOK_SECRETS')}."
            )
        secret = secrets[0]
    if len(secret) < MIN_SECRET_LENGTH:
        raise CommandError(
            f"The signing secret is {len(secret)} characters long; "
            f"use at least {MIN_SECRET_LENGTH}."
        )
    return secret


def check_topics(requested: list[str], available: list[str]) -> list[str]:
    unknown = [topic for topic in requested if topic not in available]
    if unknown:
        hints = []
        for topic in unknown:
            close = difflib.get_close_matches(topic, available, n=1)
            hints.append(f"{topic} (did you mean {close[0]}?)" if close else topic)
        raise CommandError(
            "Unknown webhook topic(s): "
            + ", ".join(hints)
            + ". Run `manage.py klaviyo_webhooks topics` for this account's topics."
        )
    return list(dict.fromkeys(requested))


class Command(BaseCommand):
    help = "List, create or delete Klaviyo system webhooks pointing at this site."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        process = sub.add_parser("process", help="Run the handlers of pending items.")
        process.add_argument(
            "--failed", action="store_true", help="Also run the items that failed before."
        )
        listed = sub.add_parser("list", help="List this account's webhooks.")
        topics = sub.add_parser("topics", help="List the webhook topics this account offers.")
        create = sub.add_parser("create", help="Create a webhook.")
        create.add_argument("--name", required=True)
        create.add_argument(
            "--url", required=True, help="https endpoint, e.g. .../klaviyo/webhooks/"
        )
        create.add_argument(
            "--topic",
            action="append",
            required=True,
            dest="topics",
            help="A topic id such as event:klaviyo.bounced_email; repeat for several.",
        )
        create.add_argument(
            "--secret-env",
            help="Environment variable holding the signing secret "
            "(default: the first of KLAVIYO['WEBHOOK_SECRETS']).",
        )
        create.add_argument("--description", default=None)
        delete = sub.add_parser("delete", help="Delete webhooks by id.")
        delete.add_argument("webhook_ids", nargs="+", metavar="ID")

        for p in (listed, topics, create, delete):
            p.add_argument(
                "--account",
                help="The Klaviyo account (a name of KLAVIYO['ACCOUNTS'], or 'default', the "
                "default); its key is used and, for create, its WEBHOOK_SECRETS.",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            self.account = accounts.get_account(options.get("account"))
        except KlaviyoValidationError as exc:
            raise CommandError(str(exc)) from exc
        try:
            getattr(self, f"handle_{action}")(options)
        except KlaviyoError as exc:
            raise CommandError(f"Klaviyo refused the {action}: {exc}") from exc

    def handle_process(self, options: dict[str, Any]) -> None:
        total = ProcessResult()
        if options["failed"]:
            failed = WebhookItem.objects.filter(processed=False, attempts__gt=0)
            total = process_items(failed)
        while True:
            batch = process_pending()
            if not batch.handled:
                break  # none pending, or every pending item is held by another worker
            total.processed += batch.processed
            total.failed += batch.failed
        self.stdout.write(f"Processed {total.processed} webhook item(s); {total.failed} failed.")
        if total.failed:
            raise CommandError(
                f"{total.failed} webhook item(s) failed in their handlers; "
                "see their error in the admin."
            )

    def handle_list(self, options: dict[str, Any]) -> None:
        count = 0
        for webhook in self.client().get_webhooks():
            attributes = webhook.get("attributes") or {}
            state = "enabled" if attributes.get("enabled") else "disabled"
            self.stdout.write(
                f"{webhook.get('id')}  {attributes.get('name', '')}  {state}  "
                f"{attributes.get('endpoint_url', '')}"
            )
            count += 1
        self.stdout.write(f"{count} webhook(s).")

    def handle_topics(self, options: dict[str, Any]) -> None:
        for topic in self.client().get_webhook_topics():
            self.stdout.write(str(topic.get("id")))

    def handle_create(self, options: dict[str, Any]) -> None:
        url = check_endpoint_url(options["url"])
        secret = resolve_secret(options.get("secret_env"), self.account)
        client = self.client()
        available = [str(topic.get("id")) for topic in client.get_webhook_topics()]
        topics = check_topics(options["topics"], available)
        created = client.create_webhook(
            name=options["name"],
            endpoint_url=url,
            secret_key=secret,
            topics=topics,
            description=options.get("description"),
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Created webhook {created.get('id')} for {len(topics)} topic(s) -> {url}"
            )
        )
        if secret not in self.account.webhook_secrets:
            self.stderr.write(
                self.style.WARNING(
                    f"This secret is not in {self.account.setting('WEBHOOK_SECRETS')}: the "
                    "receiver will refuse these deliveries until you add it."
                )
            )

    def handle_delete(self, options: dict[str, Any]) -> None:
        client = self.client()
        for webhook_id in options["webhook_ids"]:
            client.delete_webhook(webhook_id)
            self.stdout.write(self.style.SUCCESS(f"Deleted webhook {webhook_id}."))

    def client(self) -> KlaviyoClient:
        """The chosen account's client: its key, API URL and revision."""
        return get_client() if self.account.is_default else get_client(self.account.name)
