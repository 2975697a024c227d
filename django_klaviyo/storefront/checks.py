"""System checks of the storefront's settings: which proxies are trusted for client
addresses (E042, W040), the browse events' repeat window (E064). Run by
``django_klaviyo.checks`` with the others."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from django_klaviyo.conf import DEFAULTS
from django_klaviyo.conf import setting_as_written as _get
from django_klaviyo.storefront import throttles

PROXY_HINT = (
    "Name the reverse proxies in front of the app: KLAVIYO['TRUSTED_PROXIES'] = "
    "['10.0.0.0/8'] (their addresses or networks), or DRF's NUM_PROXIES; see "
    'docs/deployment.md, "Behind a proxy".'
)


def check_trusted_proxies() -> list[CheckMessage]:
    value = _get("TRUSTED_PROXIES")
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return [
            Error(
                f"KLAVIYO['TRUSTED_PROXIES'] must be a list of addresses or networks, "
                f"not {type(value).__name__}.",
                hint="For example ['10.0.0.0/8', '192.0.2.1']; [] trusts no proxy.",
                id="django_klaviyo.E042",
            )
        ]
    bad = throttles.parse_networks(value)[1]
    if bad:
        return [
            Error(
                f"KLAVIYO['TRUSTED_PROXIES'] has entries that are not an IP address or "
                f"network: {', '.join(repr(b) for b in bad[:3])}.",
                hint="Write addresses ('192.0.2.1') or networks ('10.0.0.0/8').",
                id="django_klaviyo.E042",
            )
        ]
    if value or _drf_num_proxies() is not None:
        return []
    proxied = [
        name
        for name in ("SECURE_PROXY_SSL_HEADER", "USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT")
        if getattr(settings, name, None)
    ]
    try:
        seen = throttles.forwarding_seen_untrusted()
    except Exception:  # an unreachable cache: the settings alone decide
        seen = None
    if not proxied and not seen:
        return []
    why = (
        f"settings.{proxied[0]} says the app runs behind a proxy"
        if proxied
        else f"a request came with X-Forwarded-For (last seen {seen})"
    )
    return [
        Warning(
            f"{why}, but django-klaviyo trusts no proxy: its per-address limits (storefront "
            "events, back in stock) see the proxy's address, so every visitor shares one "
            "limit.",
            hint=PROXY_HINT,
            id="django_klaviyo.W040",
        )
    ]


def _drf_num_proxies() -> Any:
    from rest_framework.settings import api_settings

    return api_settings.NUM_PROXIES


def check_browse_repeat_after() -> list[CheckMessage]:
    value = _get("BROWSE_REPEAT_AFTER")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        return [
            Error(
                f"KLAVIYO['BROWSE_REPEAT_AFTER'] must be a number of seconds (0 or more), "
                f"not {value!r}.",
                hint=f"The default is {DEFAULTS['BROWSE_REPEAT_AFTER']!r}; 0 sends every "
                "Viewed Category and Searched Site, repeats included.",
                id="django_klaviyo.E064",
            )
        ]
    return []


STOREFRONT_CHECKS = (check_trusted_proxies, check_browse_repeat_after)
