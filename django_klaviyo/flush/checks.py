"""System checks of the flusher's settings: the rate-limit cache every flusher shares
(E013, W005, W006) and a lease that outlives one request (W007, W041). Run by
``django_klaviyo.checks`` with the others."""

from __future__ import annotations

from django.conf import global_settings, settings
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from django_klaviyo.conf import setting_as_written as _get

SHARED_CACHE_HINT = (
    "Point KLAVIYO['RATE_LIMIT_CACHE'] at a cache every process shares: Redis "
    "(django.core.cache.backends.redis.RedisCache) or the database cache "
    "(django.core.cache.backends.db.DatabaseCache, then manage.py createcachetable); "
    "see docs/configuration.md."
)


def check_rate_limit_cache() -> list[CheckMessage]:
    alias = _get("RATE_LIMIT_CACHE")
    # Without CACHES, Django's own default applies: one LocMemCache.
    caches = getattr(settings, "CACHES", None) or global_settings.CACHES
    if alias not in caches:
        return [
            Error(
                f"KLAVIYO['RATE_LIMIT_CACHE'] = {alias!r} is not a configured cache alias.",
                hint="Name an entry of settings.CACHES; use a shared cache (Redis, database) "
                "when several processes flush.",
                id="django_klaviyo.E013",
            )
        ]
    backend = (caches.get(alias) or {}).get("BACKEND", "")
    try:
        backend_class = import_string(backend) if isinstance(backend, str) else None
    except ImportError:
        return []  # Django reports an unimportable cache backend when it is used
    if not isinstance(backend_class, type):
        return []
    if issubclass(backend_class, DummyCache):
        return [
            Warning(
                f"The rate-limit cache {alias!r} is a DummyCache: it keeps nothing, so "
                "Klaviyo's rate limits are not enforced at all and bursts end in 429s.",
                hint=SHARED_CACHE_HINT,
                id="django_klaviyo.W006",
            )
        ]
    if issubclass(backend_class, LocMemCache) and not settings.DEBUG:
        return [
            Warning(
                f"The rate-limit cache {alias!r} is a LocMemCache, private to each process: "
                "several flush workers (or web processes calling Klaviyo, or commands run "
                "one after another) each assume the whole rate-limit budget.",
                hint=SHARED_CACHE_HINT + " If exactly one long-running process ever talks "
                "to Klaviyo, silence this with SILENCED_SYSTEM_CHECKS = "
                "['django_klaviyo.W005'].",
                id="django_klaviyo.W005",
            )
        ]
    return []


def check_lease_covers_a_request() -> list[CheckMessage]:
    """A flusher renews its rows' lease between requests, once a quarter of it has
    passed; during one request it cannot, nor while it sleeps before polling a Klaviyo
    job (a profile import, a catalog job). The longest stretch without a chance to renew
    is one request (the client's wait for the local rate limit plus the connect and read
    timeouts) plus one poll interval. A lease under 4/3 of that can run out mid-request
    even with every clock alike (W041: rows sent twice; a warning, not an error, so that
    tests may force reclaims with a one-second lease); under twice that, clocks of
    other hosts running ahead leave too little room (W007)."""
    from django_klaviyo.flush.loop import CLIENT_MAX_WAIT
    from django_klaviyo.flush.senders.imports import POLL_CAP_SECONDS

    lease, timeout = _get("LEASE_SECONDS"), _get("TIMEOUT")
    if isinstance(lease, bool) or not isinstance(lease, int) or lease < 1:
        return []  # E011
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        timeout = (timeout, timeout)
    try:
        connect, read = (float(t) for t in timeout)
    except (TypeError, ValueError):
        return []  # E012
    catalog_poll = _get("CATALOG_JOB_POLL_SECONDS")
    if isinstance(catalog_poll, bool) or not isinstance(catalog_poll, (int, float)):
        catalog_poll = 0.0
    poll = max(float(catalog_poll), POLL_CAP_SECONDS)
    request = CLIENT_MAX_WAIT + connect + read
    gap = request + poll
    described = (
        f"one request and one job poll ({gap:g} s: up to {CLIENT_MAX_WAIT:g} s waiting for "
        f"the rate limit, TIMEOUT's {connect:g} s to connect and {read:g} s to read, then "
        f"up to {poll:g} s before the next poll of a Klaviyo job)"
    )
    hint = (
        f"Set LEASE_SECONDS to at least {int(2 * gap + 0.999)}, or lower TIMEOUT; see "
        "docs/workers.md#leases."
    )
    if lease * 3 < 4 * gap:
        return [
            Warning(
                f"KLAVIYO['LEASE_SECONDS'] = {lease} does not outlast {described} by a quarter "
                "of itself. The lease is renewed only between requests, once a quarter of it "
                "has passed, so it can run out while a request is in flight: another "
                "flusher then reclaims the rows and sends them a second time.",
                hint=hint,
                id="django_klaviyo.W041",
            )
        ]
    if lease >= 2 * gap:
        return []
    return [
        Warning(
            f"KLAVIYO['LEASE_SECONDS'] = {lease} is less than twice {described}. The "
            "lease is renewed only between requests, so a slow request (or a clock of "
            "another host running ahead) can outlive it: another flusher then reclaims "
            "the rows and sends them a second time.",
            hint=hint,
            id="django_klaviyo.W007",
        )
    ]


FLUSH_CHECKS = (check_rate_limit_cache, check_lease_covers_a_request)
