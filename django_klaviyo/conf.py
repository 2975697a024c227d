"""Lazy access to django-klaviyo settings.

Every key may be given inside one dict, ``KLAVIYO = {"PRIVATE_API_KEY": ...}``, or as a
top-level setting ``KLAVIYO_PRIVATE_API_KEY``. The dict wins. A value is resolved once per
process and kept until Django's ``setting_changed`` signal names ``KLAVIYO`` or a
``KLAVIYO_*`` setting (``override_settings`` and pytest-django's ``settings`` send it), so the
save path does not walk Django's settings on every read. Every key is listed, with its
meaning, in docs/configuration.md (a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

_MISSING = object()

DEFAULTS: dict[str, Any] = {
    "PRIVATE_API_KEY": None,
    "PUBLIC_API_KEY": None,
    # Webhook signing secrets; several at once while one is being rotated.
    "WEBHOOK_SECRETS": [],
    # Shared token guarding the (unsigned) flow-webhook endpoint.
    "FLOW_WEBHOOK_TOKEN": None,
    # How old a signed delivery's meta.timestamp may be. Wide enough for a day of Klaviyo's
    # retries (docs/webhooks.md, "Freshness and replays"): a replay inside it is caught by
    # the stored item ids, which klaviyo_purge keeps at least this long.
    "WEBHOOK_TOLERANCE_SECONDS": 24 * 3600,
    "WEBHOOK_MAX_BODY_BYTES": 5 * 1024 * 1024,
    # Deliveries with at most this many new items are handled before the answer; larger
    # ones are acknowledged at once and handled by the worker (0: always the worker).
    "WEBHOOK_INLINE_ITEMS": 100,
    "API_URL": "https://a.klaviyo.com",
    "REVISION": "2026-07-15",
    # (connect, read) seconds.
    "TIMEOUT": (5.0, 30.0),
    # HTTP attempts per request inside the client (1 = no in-request retry).
    "HTTP_MAX_ATTEMPTS": 3,
    # Outbox delivery attempts before a row is dead-lettered.
    "MAX_ATTEMPTS": 8,
    "RETRY_BASE_SECONDS": 2.0,
    "RETRY_MAX_SECONDS": 3600.0,
    # Master switch: when False, saves enqueue nothing.
    "ENABLED": True,
    # Cache alias used to share rate-limit windows across processes.
    "RATE_LIMIT_CACHE": "default",
    # Sandbox mode: no Klaviyo account. PRIVATE_API_KEY may be unset (a placeholder key
    # is sent) and API_URL defaults to the local sandbox. Never for a real deployment.
    "SANDBOX": False,
    # Order integration.
    "ORDER_MODEL": None,
    # A signal sent once the order and its lines exist (e.g. django-oscar's
    # "oscar.apps.order.signals.order_placed"); it enqueues the Placed Order.
    "ORDER_PLACED_SIGNAL": None,
    "ORDER_EVENTS_MAPPER": "django_klaviyo.orders.mappers.default_order_events",
    "USER_PROFILE_MAPPER": "django_klaviyo.profiles.mapper.default_user_profile",
    # The order attribute holding its status, and the status values events fire on.
    "ORDER_STATUS_FIELD": "status",
    "ORDER_STATUS_PLACED": "placed",
    "ORDER_STATUS_FULFILLED": "fulfilled",
    "ORDER_STATUS_CANCELLED": "cancelled",
    "ORDER_STATUS_REFUNDED": "refunded",
    # Declarative mapping (docs/mapping.md): where the default mapper reads each value.
    # Only the keys you give replace the defaults (django_klaviyo.orders.fields.ORDER_FIELDS...).
    "ORDER_FIELDS": {},
    "ORDER_LINE_FIELDS": {},
    "REFUND_FIELDS": {},
    "REFUND_LINE_FIELDS": {},
    # Klaviyo metric names by event; only the keys you give replace the defaults.
    "METRIC_NAMES": {},
    "TRACK_USERS": True,
    # Any model's status transitions as events (docs/mapping.md, Tracked models):
    # "app_label.Model" -> {"status_field", "metrics", "profile", ...}.
    "TRACKED_MODELS": {},
    # Order stats on the profile (docs/mapping.md): False, True, or a dict naming the
    # properties (and where the order's refund records are).
    "PROFILE_ORDER_STATS": False,
    # Catalog sync (docs/catalog.md): ITEMS / VARIANTS / CATEGORIES mappings.
    "CATALOG": {},
    # A variant's inventory_policy when its mapping gives none: 1 keeps out-of-stock
    # variants out of Klaviyo's recommendation feeds and blocks; 0/2 show them; None: unsent.
    "CATALOG_INVENTORY_POLICY": 1,
    # How long the flusher polls one catalog bulk job, and how often.
    "CATALOG_JOB_TIMEOUT": 300.0,
    "CATALOG_JOB_POLL_SECONDS": 2.0,
    # DRF rate of the back-in-stock endpoint, per user, else per client address.
    "BACK_IN_STOCK_THROTTLE_RATE": "10/min",
    # Subscriptions of one email address / phone number, by anyone (None: no limit).
    "BACK_IN_STOCK_CONTACT_RATE": "10/hour",
    # Seconds a flusher owns the rows it claimed before another may reclaim them.
    "LEASE_SECONDS": 300,
    "BATCH_SIZE": 1000,
    # Storefront (docs/storefront.md): where {% klaviyo_js %} loads klaviyo.js from
    # (?company_id=<PUBLIC_API_KEY> is appended), whether it identifies logged-in users,
    # and whether browse events go through our endpoint ("server") or klaviyo.js ("browser").
    "KLAVIYO_JS_URL": "https://static.klaviyo.com/onsite/js/klaviyo.js",
    "IDENTIFY_USERS": True,
    "BROWSE_EVENTS_VIA": "server",
    "STOREFRONT_THROTTLE_RATE": "120/min",
    "STOREFRONT_ADDRESS_THROTTLE_RATE": "1200/min",
    # Seconds after which the same cart's checkout start, in the same visit, counts again.
    "STARTED_CHECKOUT_REPEAT_AFTER": 30 * 60,
    # Seconds within which the same profile's Viewed Category of one category, or Searched
    # Site of one term, is a repeat (nothing new is sent); 0: every view and search counts.
    "BROWSE_REPEAT_AFTER": 10 * 60,
    # Bytes of events one client address may store through the storefront endpoint in any
    # 60 seconds (None: no budget).
    "STOREFRONT_ADDRESS_BYTES_PER_MINUTE": 2_000_000,
    # Addresses/networks of the reverse proxies in front of the app: only their
    # X-Forwarded-For is believed for per-address limits. []: REMOTE_ADDR is the client.
    "TRUSTED_PROXIES": [],
    # Cart restore: callables (or dotted paths) the store provides, and the link's lifetime.
    "CART_TOKEN": None,
    "RESTORE_CART": None,
    "CART_LINK_MAX_AGE": 7 * 24 * 3600,
    # Health (klaviyo_status, the status endpoint): None switches a check off.
    "HEALTH_MAX_DUE": None,
    "HEALTH_MAX_DUE_AGE_SECONDS": 900,
    "HEALTH_MAX_DEAD": 0,
    # Bearer token for the status endpoint (staff users need none).
    "HEALTH_TOKEN": None,
    # Task-queue mode: outbox_ready enqueues a flush task on this Django task backend.
    "FLUSH_TASK_BACKEND": None,
    "FLUSH_TASK_DEBOUNCE_SECONDS": 5.0,
    # Consent collected by the store's forms (docs/storefront.md, "Marketing consent at
    # checkout and signup"): the store's name (None: the Site's), the consent's
    # custom_source (None: the store's name, else "django-klaviyo"), the list it joins, and
    # the text under the SMS box ({store}: the store's name).
    "STORE_NAME": None,
    "CONSENT_SOURCE": None,
    "CONSENT_LIST_ID": None,
    "SMS_CONSENT_DISCLOSURE": (
        "By checking this box, you agree to receive recurring automated marketing text "
        "messages (such as cart reminders and offers) from {store} at the number provided. "
        "Consent is not a condition of purchase. Message frequency varies. Message and data "
        "rates may apply. Reply HELP for help and STOP to cancel."
    ),
    # klaviyo_backfill consent: user -> [{"profile", "channels", "list_id", "consented_at"}].
    "BACKFILL_CONSENT_MAPPER": None,
    # Several Klaviyo accounts (docs/accounts.md): name -> {"PRIVATE_API_KEY": ..., ...};
    # the top-level keys are the account named "default".
    "ACCOUNTS": {},
    # (obj=None, *, request=None) -> account name or None (default); callable or dotted path.
    "ACCOUNT_RESOLVER": None,
    # Klaviyo segments whose members are mirrored (docs/insights.md): names or ids, for
    # every account, or {account name: [names or ids]}. Every segment's name and count is
    # mirrored by `klaviyo_sync segments`; members only of these.
    "SEGMENTS": [],
    # Insights (docs/insights.md): days of reports `klaviyo_sync reports` fetches (1-365),
    # how long a fresh report is kept before the next run fetches it again, and how long one
    # request may wait for the reporting rate limits before the run stops (resumed next run).
    "REPORTS_DAYS": 30,
    "REPORTS_REFRESH_SECONDS": 3600,
    "REPORTS_MAX_WAIT_SECONDS": 2.0,
}

REQUIRED: set[str] = {"PRIVATE_API_KEY"}

# Settings holding a key, a secret or a token: read through ``normalize_key`` (every
# account's too, see ``django_klaviyo.accounts``), so the checks and every use see one value.
KEY_SETTINGS = ("PRIVATE_API_KEY", "PUBLIC_API_KEY", "FLOW_WEBHOOK_TOKEN", "HEALTH_TOKEN")
SECRET_LIST_SETTINGS = ("WEBHOOK_SECRETS",)


def normalize_key(value: Any) -> Any:
    """A key as the project meant it: surrounding whitespace (a stray space or newline
    from a .env file or a copy-paste) stripped; ``""`` after stripping is unset (None).
    Anything but a string is returned as given, for the checks to name."""
    if isinstance(value, str):
        return value.strip() or None
    return value


def normalize_secrets(value: Any) -> Any:
    """``WEBHOOK_SECRETS`` with each entry normalised and blank entries dropped; a single
    string is a one-entry list. Anything else is returned as given (check E006)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        return [s for s in (normalize_key(s) for s in value) if s]
    return value


# What sandbox mode sends instead of a private key (the sandbox accepts any key) and
# where it points API_URL unless that is set.
SANDBOX_API_KEY = "pk_sandbox_no_klaviyo_account_000000000"
SANDBOX_API_URL = "http://127.0.0.1:8765"
# Values that apply in sandbox mode when the project leaves the key unset (or empty).
SANDBOX_DEFAULTS: dict[str, Any] = {
    "PRIVATE_API_KEY": SANDBOX_API_KEY,
    "API_URL": SANDBOX_API_URL,
}


class KlaviyoSettings:
    """Accessor: ``klaviyo_settings.REVISION``; values are cached until a setting changes."""

    def __init__(self) -> None:
        # Resolved values of reads without a default, and ``memo`` results.
        self._cache: dict[Any, Any] = {}

    def clear(self) -> None:
        """Forget every resolved value (done on ``setting_changed``)."""
        self._cache.clear()

    def memo(self, name: Any, build: Callable[[], Any]) -> Any:
        """``build()``'s result, computed once until a setting changes: for values derived
        from settings (a merged mapping, a resolved callable)."""
        key = ("memo", name)
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = build()
            return value

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if default is _MISSING:
            try:
                return self._cache[key]
            except KeyError:
                value = self._cache[key] = self._resolve(key.upper(), default)
                return value
        return self._resolve(key.upper(), default)

    def _resolve(self, key: str, default: Any) -> Any:
        value = self._given(key)
        if value is not _MISSING:
            if key in KEY_SETTINGS:
                value = normalize_key(value)
            elif key in SECRET_LIST_SETTINGS:
                value = normalize_secrets(value)
        if key in SANDBOX_DEFAULTS and value in (_MISSING, None, "") and self.sandbox():
            return SANDBOX_DEFAULTS[key]
        if value is not _MISSING:
            return value
        if default is not _MISSING:
            return default
        prefixed = f"KLAVIYO_{key}"
        if key in DEFAULTS and key not in REQUIRED:
            return DEFAULTS[key]
        if key in REQUIRED:
            value = DEFAULTS.get(key)
            if value:
                return value
            raise ImproperlyConfigured(
                f"django-klaviyo needs the setting {key}: set KLAVIYO = {{'{key}': ...}} "
                f"or {prefixed} in your Django settings."
            )
        raise AttributeError(f"Unknown django-klaviyo setting {key!r}")

    def _given(self, key: str) -> Any:
        """The value the project set (the dict first), or _MISSING."""
        block = getattr(django_settings, "KLAVIYO", None) or {}
        if not isinstance(block, dict):
            # The django_klaviyo.E010 check names this at startup.
            raise ImproperlyConfigured(
                "settings.KLAVIYO must be a dict (see `manage.py check`: django_klaviyo.E010)."
            )
        if key in block:
            return block[key]
        return getattr(django_settings, f"KLAVIYO_{key}", _MISSING)

    def sandbox(self) -> bool:
        """Sandbox mode (``SANDBOX``): no Klaviyo account needed."""
        value = self._given("SANDBOX")
        return value is not _MISSING and bool(value)

    def __getattr__(self, key: str) -> Any:
        if not key.isupper():
            raise AttributeError(key)
        return self.get(key)

    def is_set(self, key: str) -> bool:
        return bool(self.get(key, None))

    def callable(self, key: str) -> Callable[..., Any]:
        """A setting holding a callable or the dotted path of one (imported once)."""
        return self.memo(("callable", key), lambda: self._callable(key))

    def _callable(self, key: str) -> Callable[..., Any]:
        value = self.get(key)
        if callable(value):
            return value
        if not isinstance(value, str):
            raise ImproperlyConfigured(
                f"KLAVIYO['{key}'] must be a callable or a dotted path, not {value!r}."
            )
        try:
            return import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"KLAVIYO['{key}'] = {value!r} does not import: {exc}"
            ) from exc

    def webhook_secrets(self) -> list[str]:
        value = normalize_secrets(self.get("WEBHOOK_SECRETS"))
        return [s for s in (value or []) if s]

    def timeout(self) -> tuple[float, float]:
        value = self.get("TIMEOUT")
        if isinstance(value, (int, float)):
            return (float(value), float(value))
        connect, read = value
        return (float(connect), float(read))


klaviyo_settings = KlaviyoSettings()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "KLAVIYO" or setting.startswith("KLAVIYO_"):
        klaviyo_settings.clear()


setting_changed.connect(_on_setting_changed, dispatch_uid="django_klaviyo_settings_cache")


def resolve_model(label: Any) -> Any:
    """The installed model a setting names (``"app_label.Model"``), or None: an unset,
    malformed or uninstalled label is reported by the system checks, not raised here."""
    if not label or not isinstance(label, str):
        return None
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        # Reported by the django_klaviyo.E009 system check; startup must not crash.
        return None


def setting_as_written(key: str) -> Any:
    """A KLAVIYO setting's value as the project wrote it (else its default), unvalidated:
    what the system checks inspect and report on."""
    return klaviyo_settings.get(key, DEFAULTS.get(key))
