"""Riding out outages: the database gone for a while, or a key missing one scope.

A ``--loop`` worker is meant to run under a supervisor for months: a database restart or
a network cut must not end it (a supervisor restarting only on failure would not bring
back a worker that exited 0), and must not end silently either. ``Outage`` tracks one:
back-off between reconnection attempts, a log line when it starts, one a minute while it
lasts, one when it ends, and ``FlushAborted(reason="outage")`` once it outlasts the
configured ``max_outage`` (the command then exits non-zero).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import connections

from django_klaviyo.exceptions import KlaviyoPermissionError, KlaviyoTransportError
from django_klaviyo.flush.outcomes import ErrorInfo, error_info
from django_klaviyo.flush.report import FlushAborted

logger = logging.getLogger("django_klaviyo.flush")

# Back-off between reconnection attempts: 1, 2, 4 ... up to this many seconds.
MAX_BACKOFF_SECONDS = 30.0
LOG_EVERY_SECONDS = 60.0


class Outage:
    def __init__(
        self,
        using: str,
        max_seconds: float | None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.using = using
        self.max_seconds = max_seconds
        self.monotonic = monotonic
        self.started: float | None = None
        self.logged_at = 0.0
        self.failures = 0

    def failed(self, exc: FlushAborted) -> float:
        """Record a failed attempt; returns the seconds to wait before the next one."""
        now = self.monotonic()
        if self.started is None:
            self.started, self.logged_at, self.failures = now, now, 0
            logger.error("%s Reconnecting with back-off.", exc)
        elif now - self.logged_at >= LOG_EVERY_SECONDS:
            self.logged_at = now
            logger.error(
                "The database has been unavailable for %.0fs; still reconnecting.",
                now - self.started,
            )
        self.failures += 1
        lasted = now - self.started
        if self.max_seconds is not None and lasted > self.max_seconds:
            raise FlushAborted(
                f"The database has been unavailable for {lasted:.0f}s, longer than "
                f"--max-outage {self.max_seconds:g}s; the worker stops.",
                reason="outage",
            ) from exc
        # A broken connection is not reused: the next query opens a new one.
        try:
            connections[self.using].close()
        except Exception:  # closing a dead connection may fail in any way
            logger.debug("Closing the broken database connection failed.", exc_info=True)
        return min(MAX_BACKOFF_SECONDS, 2.0 ** (self.failures - 1))

    def ended(self) -> None:
        if self.started is not None:
            logger.warning(
                "The database is back after %.0fs; flushing resumes.",
                self.monotonic() - self.started,
            )
            self.started = None


class Unreachable:
    """Klaviyo unreachable (no connection; or the local rate limit said wait): the rows
    are put back uncounted, later each time (the back-off grows with the failures in a
    row), with a log line when it starts and one a minute while it lasts."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self.started: float | None = None
        self.logged_at = 0.0
        self.failures = 0

    def failed(self, err: Exception) -> int:
        """Record one request that never left; returns the failures in a row."""
        self.failures += 1
        if not isinstance(err, KlaviyoTransportError):
            return self.failures  # the local rate limiter: expected, not an outage
        now = self.monotonic()
        if self.started is None:
            self.started, self.logged_at = now, now
            logger.error("Klaviyo is unreachable (%s); rows wait, uncounted.", err)
        elif now - self.logged_at >= LOG_EVERY_SECONDS:
            self.logged_at = now
            logger.error("Klaviyo has been unreachable for %.0fs.", now - self.started)
        return self.failures

    def ended(self) -> None:
        if self.started is not None:
            logger.warning(
                "Klaviyo is reachable again after %.0fs.", self.monotonic() - self.started
            )
        self.started = None
        self.failures = 0


# The scopes each operation the flusher calls needs (``x-klaviyo-scopes`` in Klaviyo's spec,
# revision 2026-07-15; a test holds them to the shipped spec, which the flush path does
# not load).
SCOPES: dict[str, tuple[str, ...]] = {
    "bulk_create_events": ("events:write",),
    "create_or_update_profile": ("profiles:write",),
    "update_profile": ("profiles:write",),
    "get_profiles": ("profiles:read",),
    "bulk_import_profiles": ("lists:write", "profiles:write"),
    "get_bulk_import_profiles_job": ("lists:read", "profiles:read"),
    "get_errors_for_bulk_import_profiles_job": ("profiles:read",),
    "add_profiles_to_list": ("lists:write", "profiles:write"),
    "remove_profiles_from_list": ("lists:write", "profiles:write"),
    "get_profiles_for_list": ("lists:read", "profiles:read"),
    "bulk_subscribe_profiles": ("lists:write", "profiles:write", "subscriptions:write"),
    "bulk_unsubscribe_profiles": ("lists:write", "profiles:write", "subscriptions:write"),
    "request_profile_deletion": ("data-privacy:write",),
}


def missing_scope_info(err: KlaviyoPermissionError) -> ErrorInfo:
    """What held rows record: the endpoint, and the scopes it needs."""
    scopes = SCOPES.get(err.operation or "", ())
    needs = f" It needs the scope(s) {', '.join(scopes)}." if scopes else ""
    base = error_info(err)
    return ErrorInfo(
        403,
        "missing_scope",
        f"Waiting: Klaviyo refused {err.operation or 'the request'} with HTTP 403 "
        f"({base.code or 'permission_denied'}): the API key lacks a scope.{needs} Grant it "
        "to the key in Klaviyo; these rows are tried again every few minutes and the "
        "attempts are not counted.",
    )
