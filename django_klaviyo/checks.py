"""Django system checks for django-klaviyo settings.

Each problem gets its own id (``django_klaviyo.E0xx`` errors, ``W0xx`` warnings) and a
hint. A check never raises: a broken setting is reported, not turned into a traceback.
Secrets are never echoed; at most their length or prefix shape is described.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from django_klaviyo.accounts import PRIVATE_KEY_RE
from django_klaviyo.accounts.checks import ACCOUNT_CHECKS, public_key_messages
from django_klaviyo.conf import DEFAULTS, SANDBOX_API_URL, klaviyo_settings
from django_klaviyo.conf import setting_as_written as _get
from django_klaviyo.flush.checks import FLUSH_CHECKS
from django_klaviyo.insights.checks import SEGMENT_CHECKS
from django_klaviyo.insights.report_checks import REPORT_CHECKS
from django_klaviyo.orders.checks import ORDER_CHECKS, did_you_mean
from django_klaviyo.orders.stats_checks import STATS_CHECKS
from django_klaviyo.profiles.checks import CONSENT_CHECKS
from django_klaviyo.storefront.checks import STOREFRONT_CHECKS
from django_klaviyo.tracking.checks import TRACKING_CHECKS
from django_klaviyo.webhooks.checks import SECRET_CHECKS

REVISION_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(\.[a-z0-9]+)?$")
CALLABLE_SETTINGS = ("ORDER_EVENTS_MAPPER", "USER_PROFILE_MAPPER")
# The storefront's cart hooks: checked like the mappers when set.
OPTIONAL_CALLABLE_SETTINGS = ("CART_TOKEN", "RESTORE_CART")
_checks: list[Callable[[], list[CheckMessage]]] = []


def _setting_check(func: Callable[[], list[CheckMessage]]) -> Callable[[], list[CheckMessage]]:
    _checks.append(func)
    return func


@register(Tags.compatibility)
def check_klaviyo_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    block = getattr(settings, "KLAVIYO", None)
    if block is not None and not isinstance(block, dict):
        return [
            Error(
                "settings.KLAVIYO must be a dict.",
                hint="Write KLAVIYO = {'PRIVATE_API_KEY': env('KLAVIYO_PRIVATE_API_KEY'), ...}.",
                id="django_klaviyo.E010",
            )
        ]
    messages: list[CheckMessage] = []
    for check in (
        *_checks,
        *SECRET_CHECKS,
        *ORDER_CHECKS,
        *ACCOUNT_CHECKS,
        *FLUSH_CHECKS,
        *STOREFRONT_CHECKS,
        *CONSENT_CHECKS,
        *TRACKING_CHECKS,
        *SEGMENT_CHECKS,
        *STATS_CHECKS,
        *REPORT_CHECKS,
    ):
        try:
            messages.extend(check())
        except Exception as exc:  # a check must report, never crash `manage.py check`
            messages.append(
                Error(
                    f"django-klaviyo could not check its settings ({check.__name__}): "
                    f"{type(exc).__name__}.",
                    hint="Review the KLAVIYO settings block.",
                    id="django_klaviyo.E099",
                )
            )
    return messages


@_setting_check
def check_private_key() -> list[CheckMessage]:
    if not _get("ENABLED"):
        return []
    key = _get("PRIVATE_API_KEY")
    if not key:
        return [
            Error(
                "KLAVIYO['PRIVATE_API_KEY'] (or KLAVIYO_PRIVATE_API_KEY) is not set.",
                hint="Create a private API key in Klaviyo (Settings > API keys) and read it "
                "from the environment, e.g. env('KLAVIYO_PRIVATE_API_KEY'). For local work "
                "without a Klaviyo account, set KLAVIYO['SANDBOX'] = True.",
                id="django_klaviyo.E001",
            )
        ]
    if not isinstance(key, str) or not PRIVATE_KEY_RE.match(key):
        looks_public = isinstance(key, str) and len(key) == 6 and key.isalnum()
        hint = (
            "This looks like the 6-character public key (site id); put it in PUBLIC_API_KEY."
            if looks_public
            else "A Klaviyo private key starts with 'pk_' and has no spaces or quotes."
        )
        return [
            Error(
                "KLAVIYO['PRIVATE_API_KEY'] is not a well-formed Klaviyo private key.",
                hint=hint,
                id="django_klaviyo.E002",
            )
        ]
    return []


@_setting_check
def check_unknown_keys() -> list[CheckMessage]:
    """A misspelt key would otherwise be ignored in favour of its default."""
    block = getattr(settings, "KLAVIYO", None) or {}
    # A key in the dict is surely meant for us (an error); a top-level KLAVIYO_* name may
    # be the project's own (a warning).
    given = [(f"KLAVIYO[{key!r}]", key, Error, "E036") for key in block]
    given += [
        (name, name[len("KLAVIYO_") :], Warning, "W032")
        for name in dir(settings)
        if name.startswith("KLAVIYO_")
    ]
    messages: list[CheckMessage] = []
    for where, key, level, check_id in given:
        if key not in DEFAULTS:
            messages.append(
                level(
                    f"{where} is not a django-klaviyo setting; it is ignored.",
                    hint=f"{did_you_mean(str(key), DEFAULTS)}Every setting is listed in "
                    "docs/configuration.md.",
                    id=f"django_klaviyo.{check_id}",
                )
            )
    return messages


@_setting_check
def check_public_key() -> list[CheckMessage]:
    return public_key_messages(_get("PUBLIC_API_KEY"), "KLAVIYO['PUBLIC_API_KEY']")


@_setting_check
def check_sandbox() -> list[CheckMessage]:
    if not klaviyo_settings.sandbox():
        return []
    url = _get("API_URL")
    host = urlsplit(url).hostname if isinstance(url, str) else None
    if host and (host == "klaviyo.com" or host.endswith(".klaviyo.com")):
        return [
            Error(
                "KLAVIYO['SANDBOX'] is on but API_URL points at Klaviyo.",
                hint=f"In sandbox mode leave API_URL unset ({SANDBOX_API_URL}) or point it at "
                "your sandbox; for Klaviyo, turn SANDBOX off and set PRIVATE_API_KEY.",
                id="django_klaviyo.E038",
            )
        ]
    if not settings.DEBUG:
        return [
            Warning(
                "KLAVIYO['SANDBOX'] is on with DEBUG off: nothing reaches Klaviyo.",
                hint="Sandbox mode is for development, demos and tests; a deployment sets "
                "PRIVATE_API_KEY and leaves SANDBOX off.",
                id="django_klaviyo.W031",
            )
        ]
    return []


@_setting_check
def check_revision() -> list[CheckMessage]:
    revision = _get("REVISION")
    match = REVISION_RE.match(revision) if isinstance(revision, str) else None
    date = None
    if match:
        try:
            date = dt.date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            date = None
    if date is None:
        return [
            Error(
                f"KLAVIYO['REVISION'] = {revision!r} is not of the form YYYY-MM-DD[.suffix].",
                hint=f"Use a Klaviyo API revision such as {DEFAULTS['REVISION']!r}.",
                id="django_klaviyo.E003",
            )
        ]
    age = dt.date.today() - date
    if age > dt.timedelta(days=730):
        # A Warning, never an Error: an Error stops migrate and klaviyo_flush, so an
        # unchanged deployment would stop sending on a date, with the outbox growing.
        # Klaviyo answers a retired revision itself, and the flusher records its answer.
        return [
            Warning(
                f"Klaviyo API revision {revision} is more than two years old; Klaviyo retires "
                "revisions after two years.",
                hint="Move to a current revision (this release is tested on "
                f"{DEFAULTS['REVISION']}).",
                id="django_klaviyo.W004",
            )
        ]
    if age > dt.timedelta(days=365):
        return [
            Warning(
                f"Klaviyo API revision {revision} is more than a year old and deprecated.",
                hint="Plan the move to a newer revision before Klaviyo retires this one.",
                id="django_klaviyo.W001",
            )
        ]
    if date > dt.date.today() + dt.timedelta(days=1):
        return [
            Error(
                f"Klaviyo API revision {revision} lies in the future.",
                hint=f"Use a published revision such as {DEFAULTS['REVISION']!r}.",
                id="django_klaviyo.E003",
            )
        ]
    return []


@_setting_check
def check_api_url() -> list[CheckMessage]:
    url = _get("API_URL")
    parts = urlsplit(url) if isinstance(url, str) else None
    if not parts or parts.scheme not in ("http", "https") or not parts.netloc:
        return [
            Error(
                f"KLAVIYO['API_URL'] = {url!r} is not an http(s) URL.",
                hint="Leave it unset for https://a.klaviyo.com, or point it at the local "
                "sandbox, e.g. http://127.0.0.1:8765.",
                id="django_klaviyo.E005",
            )
        ]
    return []


@_setting_check
def check_callables() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for key in CALLABLE_SETTINGS + OPTIONAL_CALLABLE_SETTINGS:
        value = _get(key)
        if callable(value) or (value is None and key in OPTIONAL_CALLABLE_SETTINGS):
            continue
        if not isinstance(value, str):
            messages.append(
                Error(
                    f"KLAVIYO['{key}'] must be a callable or a dotted path, not "
                    f"{type(value).__name__}.",
                    hint="For example 'myshop.klaviyo.order_events'.",
                    id="django_klaviyo.E008",
                )
            )
            continue
        try:
            target = import_string(value)
        except ImportError as exc:
            messages.append(
                Error(
                    f"KLAVIYO['{key}'] = {value!r} does not import: {exc}",
                    hint="Check the module path and the function name.",
                    id="django_klaviyo.E008",
                )
            )
            continue
        if not callable(target):
            messages.append(
                Error(
                    f"KLAVIYO['{key}'] = {value!r} is not callable.",
                    hint="Point it at a function.",
                    id="django_klaviyo.E008",
                )
            )
    return messages


@_setting_check
def check_time_zones() -> list[CheckMessage]:
    if settings.USE_TZ:
        return []
    return [
        Error(
            "django-klaviyo needs USE_TZ = True: Klaviyo's times are UTC, and the outbox, "
            "the webhook view, the admin dashboard and the insights compare aware datetimes "
            "(with naive ones they fail).",
            hint="Set USE_TZ = True (Django's default since 5.0). Existing naive datetimes "
            "are then read in TIME_ZONE: see Django's time zone migration guide.",
            id="django_klaviyo.E014",
        )
    ]


@_setting_check
def check_order_model() -> list[CheckMessage]:
    value = _get("ORDER_MODEL")
    if not value:
        return []
    try:
        apps.get_model(value)
    except (LookupError, ValueError, TypeError):
        return [
            Error(
                f"KLAVIYO['ORDER_MODEL'] = {value!r} is not an installed model.",
                hint="Use 'app_label.ModelName', e.g. 'shop.Order', with the app in "
                "INSTALLED_APPS.",
                id="django_klaviyo.E009",
            )
        ]
    return []


@_setting_check
def check_numbers() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    positive = ("MAX_ATTEMPTS", "HTTP_MAX_ATTEMPTS", "BATCH_SIZE", "LEASE_SECONDS")
    for key in positive:
        value = _get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            messages.append(
                Error(
                    f"KLAVIYO['{key}'] must be a positive whole number, not {value!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="django_klaviyo.E011",
                )
            )
    inline = _get("WEBHOOK_INLINE_ITEMS")
    if isinstance(inline, bool) or not isinstance(inline, int) or inline < 0:
        messages.append(
            Error(
                f"KLAVIYO['WEBHOOK_INLINE_ITEMS'] must be a whole number of items (0 or more), "
                f"not {inline!r}.",
                hint=f"The default is {DEFAULTS['WEBHOOK_INLINE_ITEMS']!r}; 0 hands every "
                "webhook delivery to the worker.",
                id="django_klaviyo.E011",
            )
        )
    for key in (
        "RETRY_BASE_SECONDS",
        "RETRY_MAX_SECONDS",
        "WEBHOOK_TOLERANCE_SECONDS",
        "STARTED_CHECKOUT_REPEAT_AFTER",
    ):
        value = _get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            messages.append(
                Error(
                    f"KLAVIYO['{key}'] must be a positive number of seconds, not {value!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="django_klaviyo.E011",
                )
            )
    timeout = _get("TIMEOUT")
    ok = False
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        ok = timeout > 0
    elif isinstance(timeout, (list, tuple)) and len(timeout) == 2:
        ok = all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in timeout)
    if not ok:
        messages.append(
            Error(
                f"KLAVIYO['TIMEOUT'] must be seconds or a (connect, read) pair, not {timeout!r}.",
                hint="A request without a timeout can hang a worker forever; the default is "
                f"{DEFAULTS['TIMEOUT']!r}.",
                id="django_klaviyo.E012",
            )
        )
    return messages
