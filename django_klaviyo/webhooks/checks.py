"""System checks of the secrets and tokens that guard the public endpoints: the webhook
secrets (E006, E007, W002), the flow-webhook token (W003), and, once deployed, any secret
published in this repository or too short (E040, E041). Run by
``django_klaviyo.checks.check_klaviyo_settings``."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.urls import NoReverseMatch, reverse

from django_klaviyo.conf import klaviyo_settings, normalize_key, normalize_secrets
from django_klaviyo.conf import setting_as_written as _get

WEBHOOK_URL_NAMES = ("klaviyo-webhook", "django_klaviyo:klaviyo-webhook")
FLOW_WEBHOOK_URL_NAMES = ("klaviyo-flow-webhook", "django_klaviyo:klaviyo-flow-webhook")

# Secrets published in this repository (the example shop's defaults): fine for the local
# demo, never for a deployment. Any value naming itself a placeholder counts too.
PUBLISHED_SECRETS = frozenset(
    {
        "demo-webhook-secret-change-me",
        "demo-flow-token-change-me",
        "example-shop-insecure-key-for-local-demo-only",
    }
)
PLACEHOLDER_RE = re.compile(r"change[-_ ]?me|placeholder", re.IGNORECASE)
MIN_SECRET_LENGTH = 16
NEW_SECRET_HINT = (
    "Generate a long random value, e.g. python -c 'import secrets; "
    "print(secrets.token_urlsafe(32))', read it from the environment, and give the webhook "
    "secret to Klaviyo too (manage.py klaviyo_webhooks)."
)


def _mounted(names: tuple[str, ...]) -> bool:
    for name in names:
        try:
            reverse(name)
        except NoReverseMatch:
            continue
        except Exception:  # a broken URLconf is Django's own check to report
            return False
        return True
    return False


def check_webhook_secrets() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    secrets = _get("WEBHOOK_SECRETS")
    if isinstance(secrets, str):
        secrets = [secrets]
    if not isinstance(secrets, (list, tuple)) or not all(isinstance(s, str) for s in secrets):
        return [
            Error(
                "KLAVIYO['WEBHOOK_SECRETS'] must be a list of strings.",
                hint="List the current secret first, and the previous one while rotating.",
                id="django_klaviyo.E006",
            )
        ]
    if _mounted(WEBHOOK_URL_NAMES) and not [s for s in secrets if s]:
        messages.append(
            Error(
                "The Klaviyo webhook URL is mounted but KLAVIYO['WEBHOOK_SECRETS'] is empty, "
                "so every delivery would be rejected.",
                hint="Set the secret_key you gave Klaviyo when creating the webhook, or do "
                "not include django_klaviyo.urls.",
                id="django_klaviyo.E007",
            )
        )
    short = [s for s in secrets if s and len(s) < MIN_SECRET_LENGTH]
    if short and not deployed():  # deployed: check_published_secrets' E041
        messages.append(
            Warning(
                "A KLAVIYO['WEBHOOK_SECRETS'] entry is shorter than 16 characters.",
                hint="Use a long random secret, e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'.",
                id="django_klaviyo.W002",
            )
        )
    if _mounted(FLOW_WEBHOOK_URL_NAMES) and not _get("FLOW_WEBHOOK_TOKEN"):
        messages.append(
            Warning(
                "The flow-webhook URL is mounted but KLAVIYO['FLOW_WEBHOOK_TOKEN'] is not set, "
                "so flow webhooks will be refused.",
                hint="Set a long random token and send it from the flow's webhook action headers.",
                id="django_klaviyo.W003",
            )
        )
    return messages


def deployed() -> bool:
    """DEBUG off, or a real Klaviyo key (not sandbox mode): the demo's secrets must go."""
    if not settings.DEBUG:
        return True
    return not klaviyo_settings.sandbox() and bool(_get("PRIVATE_API_KEY"))


def _named_secrets() -> list[tuple[str, Any]]:
    """(where, value) of every secret and token: the webhook secrets (each account's
    too), FLOW_WEBHOOK_TOKEN, HEALTH_TOKEN and Django's SECRET_KEY (it signs cart links)."""
    named: list[tuple[str, Any]] = []
    for secret in normalize_secrets(_get("WEBHOOK_SECRETS")) or []:
        named.append(("KLAVIYO['WEBHOOK_SECRETS']", secret))
    given = _get("ACCOUNTS")
    if isinstance(given, dict):
        for name, block in given.items():
            if isinstance(block, dict):
                for secret in normalize_secrets(block.get("WEBHOOK_SECRETS")) or []:
                    named.append((f"KLAVIYO['ACCOUNTS'][{name!r}]['WEBHOOK_SECRETS']", secret))
    for key in ("FLOW_WEBHOOK_TOKEN", "HEALTH_TOKEN"):
        named.append((f"KLAVIYO[{key!r}]", normalize_key(_get(key))))
    named.append(("settings.SECRET_KEY", getattr(settings, "SECRET_KEY", None)))
    return [(where, value) for where, value in named if isinstance(value, str) and value]


def check_published_secrets() -> list[CheckMessage]:
    """Once deployed, a secret published in the repository (or named a placeholder) is
    E040 and one shorter than 16 characters E041; the local demo keeps its own."""
    if not deployed():
        return []
    messages: list[CheckMessage] = []
    for where, value in _named_secrets():
        if value in PUBLISHED_SECRETS or PLACEHOLDER_RE.search(value):
            messages.append(
                Error(
                    f"{where} is a published example value (or a placeholder), and this "
                    "project is deployed (DEBUG is off or a real Klaviyo key is set): anyone "
                    "can read it in the django-klaviyo repository or your settings.",
                    hint=NEW_SECRET_HINT,
                    id="django_klaviyo.E040",
                )
            )
        elif where != "settings.SECRET_KEY" and len(value) < MIN_SECRET_LENGTH:
            # SECRET_KEY's own length rule is Django's (security.W009, check --deploy).
            messages.append(
                Error(
                    f"{where} is shorter than {MIN_SECRET_LENGTH} characters, and this "
                    "project is deployed (DEBUG is off or a real Klaviyo key is set).",
                    hint=NEW_SECRET_HINT,
                    id="django_klaviyo.E041",
                )
            )
    return messages


SECRET_CHECKS = (check_webhook_secrets, check_published_secrets)
