"""Who is asking, for the limits of the public endpoints (storefront events, back in stock).

Two things a visitor cannot forge key every limit (docs/deployment.md, "Security"):

* the **client address**: ``REMOTE_ADDR``, unless the project names the reverse proxies
  it runs behind (``TRUSTED_PROXIES``, or DRF's ``NUM_PROXIES``); only then is
  ``X-Forwarded-For`` read, right to left, up to the first address no trusted proxy holds.
  DRF's own ``get_ident`` believes a client-sent header when ``NUM_PROXIES`` is unset, so a
  script rotating it escaped every per-address limit;
* the **visitor**: the logged-in user, else the server-side session, never a cookie the
  visitor writes (klaviyo.js's ``__kla_id`` id can be copied by anyone who sees it, and
  keying on it let an attacker use up a victim's limit).

Also here: the per-address byte budget (what one address may store per minute) and the
per-contact limit of back-in-stock subscriptions. Windows live in the default cache, like
DRF's throttle history.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Any

from django.core.cache import cache
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from django_klaviyo.conf import klaviyo_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Set when a request carried X-Forwarded-For while no proxy is trusted; the W040 check
# reads it (from `manage.py check` too, when the cache is shared).
FORWARDED_SEEN_KEY = "django_klaviyo:forwarded-for-seen"
FORWARDED_SEEN_SECONDS = 7 * 24 * 3600


def parse_networks(value: Any) -> tuple[list[Network], list[str]]:
    """(networks, entries that are not an address or network) of a TRUSTED_PROXIES value."""
    networks: list[Network] = []
    bad: list[str] = []
    for entry in value or ():
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            bad.append(str(entry))
    return networks, bad


def trusted_networks() -> list[Network]:
    """The proxies of ``TRUSTED_PROXIES`` (a malformed entry is skipped here and reported
    by the E042 check)."""

    def build() -> list[Network]:
        value = klaviyo_settings.TRUSTED_PROXIES
        if isinstance(value, str):
            return []  # E042: a string would be read character by character
        return parse_networks(value)[0]

    return klaviyo_settings.memo("trusted_networks", build)  # type: ignore[no-any-return]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: Any, networks: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(request: Request | Any) -> str:
    """The client's address: ``REMOTE_ADDR``; through trusted proxies, the last address of
    ``X-Forwarded-For`` that no trusted proxy holds (the one the outermost trusted proxy
    saw). Entries to its left were written by the client and count for nothing."""
    meta = request.META
    remote = str(meta.get("REMOTE_ADDR") or "")
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    networks = trusted_networks()
    if networks:
        current = remote
        if not forwarded or not _trusted(_address(remote), networks):
            return current
        for hop in reversed(str(forwarded).split(",")):
            address = _address(hop)
            if address is None:
                return current  # garbage: keep the last address a trusted proxy vouched for
            current = str(address)
            if not _trusted(address, networks):
                return current
        return current
    if api_settings.NUM_PROXIES is not None:
        # The project told DRF how many proxies append to the header: honour it.
        return str(BaseThrottle().get_ident(request))
    if forwarded:
        cache.add(FORWARDED_SEEN_KEY, timezone.now().isoformat(), FORWARDED_SEEN_SECONDS)
    return remote


def forwarding_seen_untrusted() -> str | None:
    """When a request last came with X-Forwarded-For and no trusted proxy (ISO time)."""
    value = cache.get(FORWARDED_SEEN_KEY)
    return str(value) if value else None


def _digest(text: str) -> str:
    # Session keys are credentials: only their digest goes into cache keys.
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def visitor_ident(request: Request) -> str | None:
    """The user, else the session the server holds for this visitor; None for a visitor
    with no stored session yet (a first request, or a client that drops its cookies)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    session = getattr(request._request, "session", None)
    if session is None:
        return None
    # Reading loads the session: a cookie naming no stored session leaves no key.
    session.get("_klaviyo_probe")
    key = session.session_key
    return f"session:{_digest(key)}" if key else None


class VisitorRateThrottle(SimpleRateThrottle):
    """Per visitor (``STOREFRONT_THROTTLE_RATE``): the user, else the server-side session.

    A visitor without a stored session is held by the address throttle alone; their first
    accepted event is charged to the session it creates (``charge``), so it counts too."""

    scope = "klaviyo_storefront"

    def get_rate(self) -> str | None:
        return klaviyo_settings.STOREFRONT_THROTTLE_RATE  # type: ignore[no-any-return]

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        ident = visitor_ident(request)
        if ident is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def charge(self, request: Request) -> None:
        """Count one request for this visitor (made after the session was stored)."""
        key = self.get_cache_key(request, None)
        if key is None or self.rate is None:
            return
        now = self.timer()
        history = [t for t in self.cache.get(key, []) if t > now - self.duration]
        self.cache.set(key, [now, *history], self.duration)


class AddressRateThrottle(SimpleRateThrottle):
    """Per client address, looser (``STOREFRONT_ADDRESS_THROTTLE_RATE``): a script that
    drops its session cookie to look like a new visitor every time is still held back."""

    scope = "klaviyo_storefront_address"

    def get_rate(self) -> str | None:
        return klaviyo_settings.STOREFRONT_ADDRESS_THROTTLE_RATE  # type: ignore[no-any-return]

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": client_address(request)}


class BackInStockThrottle(SimpleRateThrottle):
    """Back in stock (``BACK_IN_STOCK_THROTTLE_RATE``): per user, else per address."""

    scope = "klaviyo_back_in_stock"

    def get_rate(self) -> str:
        return str(klaviyo_settings.BACK_IN_STOCK_THROTTLE_RATE)

    def get_cache_key(self, request: Request, view: Any) -> str:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            ident = f"user-{user.pk}"
        else:
            ident = client_address(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class _Window:
    """A sliding window of (time, amount) entries in the cache, like DRF's history."""

    def __init__(self, key: str, seconds: int) -> None:
        self.key = key
        self.seconds = seconds
        self.now = timezone.now().timestamp()
        self.entries: list[tuple[float, int]] = [
            (t, n) for t, n in cache.get(key, []) if t > self.now - seconds
        ]

    def total(self) -> int:
        return sum(n for _, n in self.entries)

    def count(self) -> int:
        return len(self.entries)

    def add(self, amount: int) -> None:
        self.entries.insert(0, (self.now, amount))
        cache.set(self.key, self.entries, self.seconds)

    def retry_after(self) -> int:
        oldest = min((t for t, _ in self.entries), default=self.now)
        return max(1, int(oldest + self.seconds - self.now) + 1)


class ByteBudget:
    """What one client address may store through the storefront endpoint in any 60 s
    (``STOREFRONT_ADDRESS_BYTES_PER_MINUTE``; None or 0: no budget)."""

    def __init__(self, request: Request) -> None:
        value = klaviyo_settings.STOREFRONT_ADDRESS_BYTES_PER_MINUTE
        self.budget = int(value) if value else 0
        ident = _digest(client_address(request))
        self.window = _Window(f"django_klaviyo:stored-bytes:{ident}", 60)

    def exhausted(self) -> bool:
        return bool(self.budget) and self.window.total() >= self.budget

    def allows(self, size: int) -> bool:
        return not self.budget or self.window.total() + size <= self.budget

    def spend(self, size: int) -> None:
        if self.budget and size:
            self.window.add(size)

    def retry_after(self) -> int:
        return self.window.retry_after()


class ContactLimit:
    """How often one email address or phone number may be subscribed to back-in-stock
    alerts, by anyone (``BACK_IN_STOCK_CONTACT_RATE``, e.g. ``"10/hour"``; None: no limit).
    Keyed on the contact's digest, so the cache holds no address."""

    def __init__(self, contacts: dict[str, str]) -> None:
        rate = klaviyo_settings.BACK_IN_STOCK_CONTACT_RATE
        self.num, seconds = SimpleRateThrottle.parse_rate(None, rate) if rate else (None, None)
        self.windows = {
            field: _Window(f"django_klaviyo:bis-contact:{_digest(f'{field}:{value}')}", seconds)
            for field, value in contacts.items()
            if value and seconds
        }

    def over(self) -> str | None:
        """The first field (``email`` / ``phone_number``) whose contact used up the limit."""
        for field, window in self.windows.items():
            if self.num is not None and window.count() >= self.num:
                return field
        return None

    def record(self) -> None:
        for window in self.windows.values():
            window.add(1)
