"""Exceptions raised by django-klaviyo.

None of them ever carries the API key: messages are built from Klaviyo's error
bodies and our own text only, and ``repr`` shows the same safe fields.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "KlaviyoAPIError",
    "KlaviyoAuthError",
    "KlaviyoConfigurationError",
    "KlaviyoDuplicateProfileError",
    "KlaviyoError",
    "KlaviyoPermissionError",
    "KlaviyoRateLimitError",
    "KlaviyoSegmentNotMirrored",
    "KlaviyoServerError",
    "KlaviyoTransportError",
    "KlaviyoValidationError",
]


class KlaviyoError(Exception):
    """Base class for every django-klaviyo error."""


class KlaviyoValidationError(KlaviyoError, ValueError):
    """Input that Klaviyo would reject, caught before anything is sent or enqueued."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class KlaviyoSegmentNotMirrored(KlaviyoError, LookupError):
    """A segment asked about is not in the local mirror: not chosen in
    ``KLAVIYO["SEGMENTS"]``, unknown, ambiguous, or never synced in full. Raised instead
    of answering "not a member" for a segment whose members were never read."""


class KlaviyoConfigurationError(KlaviyoError):
    """django-klaviyo is not configured well enough to talk to Klaviyo."""


class KlaviyoTransportError(KlaviyoError):
    """The request did not get an HTTP answer (connection error, timeout)."""

    retryable = True

    def __init__(self, message: str, *, timeout: bool = False, nothing_sent: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
        # The connection failed before the request left (refused, DNS, connect timeout):
        # Klaviyo cannot have acted on it.
        self.nothing_sent = nothing_sent


class KlaviyoAPIError(KlaviyoError):
    """Klaviyo answered with an error status.

    ``errors`` holds every JSON:API error object of the body; the scalar fields
    describe the first one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        title: str | None = None,
        detail: str | None = None,
        pointer: str | None = None,
        error_id: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        errors: list[dict[str, Any]] | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.pointer = pointer
        self.error_id = error_id
        self.retryable = retryable
        self.retry_after = retry_after
        self.errors = errors or []
        self.operation = operation

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"detail={self.detail!r}, pointer={self.pointer!r}, operation={self.operation!r})"
        )


class KlaviyoAuthError(KlaviyoAPIError):
    """401, or a 403 with a JSON body: the key is wrong, revoked or lacks a scope."""


class KlaviyoPermissionError(KlaviyoAuthError):
    """403 with a JSON body: the key is valid but lacks a scope this endpoint needs. It
    says nothing about other endpoints (private keys have per-endpoint scopes)."""


class KlaviyoRateLimitError(KlaviyoAPIError):
    """429 Too Many Requests; ``retry_after`` is in seconds."""


class KlaviyoDuplicateProfileError(KlaviyoAPIError):
    """409 duplicate_profile; ``duplicate_profile_id`` names the existing profile."""

    def __init__(self, message: str, *, duplicate_profile_id: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.duplicate_profile_id = duplicate_profile_id


class KlaviyoServerError(KlaviyoAPIError):
    """5xx from Klaviyo, or a CDN challenge page in place of an answer."""
