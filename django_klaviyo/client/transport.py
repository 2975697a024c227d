"""HTTP to Klaviyo: session, headers, timeouts, error parsing, retries with backoff.

Retry policy. Retryable failures are 429, 500/502/503/504/524, connection errors and
timeouts; each retry waits ``uniform(0, min(cap, base * 2**n))`` (full jitter) and at
least the server's ``Retry-After``. Whether a retry is *safe* depends on whether Klaviyo
may already have acted on the request:

- nothing was sent (connect timeout, connection refused, DNS failure), or Klaviyo said
  it did not act (429, 503): always safe;
- the outcome is unknown (read timeout, connection dropped mid-request, 500/502/504/524):
  safe only for requests marked ``idempotent`` by the caller (each API method documents
  its choice), because a repeat would otherwise create a second list, webhook, etc.

A 429 (or a local rate-limit wait) longer than ``max_wait`` is raised at once so the
caller can reschedule instead of holding a worker.

The API key lives only in the request headers: messages, logs and reprs never show it,
and any echo of it in a response body is replaced before parsing.
"""

from __future__ import annotations

import json
import logging
import random as random_module
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError

from django_klaviyo import __version__
from django_klaviyo.client.ratelimit import RateLimiter
from django_klaviyo.exceptions import (
    KlaviyoAPIError,
    KlaviyoAuthError,
    KlaviyoConfigurationError,
    KlaviyoDuplicateProfileError,
    KlaviyoPermissionError,
    KlaviyoRateLimitError,
    KlaviyoServerError,
    KlaviyoTransportError,
)

logger = logging.getLogger("django_klaviyo.client")

JSON_API = "application/vnd.api+json"
USER_AGENT = f"django-klaviyo/{__version__}"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 524})
# Klaviyo (or its gateway) may have processed the request before answering these.
AMBIGUOUS_STATUSES = frozenset({500, 502, 504, 524})
DEFAULT_MAX_WAIT = 60.0
REDACTED = "[redacted]"


class RandomSource(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def _nothing_sent(exc: BaseException) -> bool:
    """True when the connection failed before any byte of the request left."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        # NewConnectionError and NameResolutionError subclass ConnectTimeoutError.
        if isinstance(item, (ConnectTimeoutError, ConnectionRefusedError)):
            return True
        stack.extend(a for a in item.args if isinstance(a, BaseException))
        stack.extend([getattr(item, "reason", None), item.__cause__, item.__context__])
    return False


class Transport:
    """One configured connection to Klaviyo's API; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str,
        api_url: str,
        revision: str,
        timeout: tuple[float, float],
        max_attempts: int,
        backoff_base: float,
        backoff_cap: float,
        max_wait: float = DEFAULT_MAX_WAIT,
        session: requests.Session | None = None,
        rate_limiter: RateLimiter,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        random: RandomSource | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise KlaviyoConfigurationError("The Klaviyo private API key is empty.")
        if max_attempts < 1:
            raise KlaviyoConfigurationError("max_attempts must be at least 1.")
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise KlaviyoConfigurationError(f"API_URL {api_url!r} is not an http(s) URL.")
        self._api_key = api_key
        self.api_url = api_url.rstrip("/")
        self._origin = (parts.scheme, parts.netloc)
        self.revision = revision
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_wait = max_wait
        self.session = session or requests.Session()
        self.rate_limiter = rate_limiter
        self.clock = clock
        self.sleep = sleep
        self.random = random or random_module.Random()

    def __repr__(self) -> str:
        return f"Transport(api_url={self.api_url!r}, revision={self.revision!r})"

    def redact(self, text: str) -> str:
        return text.replace(self._api_key, REDACTED) if self._api_key in text else text

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Klaviyo-API-Key {self._api_key}",
            "revision": self.revision,
            "Accept": JSON_API,
            "Content-Type": JSON_API,
            "User-Agent": USER_AGENT,
        }

    def url(self, path_or_url: str) -> str:
        """Absolute URL for an API path, or a checked ``links.next`` URL.

        Links from a response are followed only on our own API origin: the API key is
        sent with every request and must not go anywhere else.
        """
        if path_or_url.startswith("/"):
            return self.api_url + path_or_url
        parts = urlsplit(path_or_url)
        if (parts.scheme, parts.netloc) != self._origin:
            raise KlaviyoConfigurationError(
                f"Refusing to follow a link to {parts.scheme}://{parts.netloc}: it is not "
                "the configured Klaviyo API origin, and the API key would be sent there."
            )
        return path_or_url

    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """Full jitter on an exponential cap, never shorter than Retry-After."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2**retry))
        delay = self.random.uniform(0.0, ceiling)
        return max(delay, retry_after) if retry_after is not None else delay

    def request(
        self,
        operation: str,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        idempotent: bool,
        max_wait: float | None = None,
    ) -> Any:
        """Send one logical request; return the decoded JSON body, or None when empty.
        ``max_wait`` overrides the transport's for this request (a caller that would rather
        stop and resume later than wait, e.g. the reports' sync)."""
        max_wait = self.max_wait if max_wait is None else max_wait
        url = self.url(path_or_url)
        path = urlsplit(url).path  # logged without the query: filters carry emails
        last_error: Exception | None = None
        for attempt in range(self.max_attempts):
            self.rate_limiter.acquire(operation, max_wait=max_wait)
            retry_after: float | None = None
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    data=body,
                    headers=self._headers(),
                    timeout=self.timeout,
                )
            except requests.exceptions.RequestException as exc:
                error: Exception = self._transport_error(operation, exc)
                safe = _nothing_sent(exc) or (
                    idempotent and isinstance(exc, (requests.Timeout, requests.ConnectionError))
                )
            else:
                self.rate_limiter.observe(operation, response.headers)
                logger.debug(
                    "Klaviyo %s %s %s -> %s", operation, method, path, response.status_code
                )
                if response.status_code < 400:
                    return self._decode(operation, response)
                api_error = self.error_from_response(operation, response)
                error = api_error
                retry_after = api_error.retry_after
                if api_error.status == 429 and retry_after:
                    self.rate_limiter.hold(operation, retry_after)
                safe = api_error.retryable and (
                    idempotent or api_error.status not in AMBIGUOUS_STATUSES
                )
            last_error = error
            if not safe or attempt + 1 >= self.max_attempts:
                raise error
            delay = self.backoff(attempt, retry_after)
            if delay > max_wait:
                raise error
            logger.warning(
                "Klaviyo %s %s failed (%s); retry %d of %d in %.2fs.",
                operation,
                path,
                self.redact(str(error)),
                attempt + 1,
                self.max_attempts - 1,
                delay,
            )
            self.sleep(delay)
        raise last_error  # type: ignore[misc]  # unreachable: the loop raises or returns

    def _transport_error(
        self, operation: str, exc: requests.exceptions.RequestException
    ) -> KlaviyoTransportError:
        timeout = isinstance(exc, requests.Timeout)
        error = KlaviyoTransportError(
            f"Klaviyo {operation}: no answer ({type(exc).__name__}: {self.redact(str(exc))}).",
            timeout=timeout,
            nothing_sent=_nothing_sent(exc),
        )
        if not isinstance(exc, (requests.Timeout, requests.ConnectionError)):
            # Invalid URL, too many redirects and the like: a retry cannot help.
            error.retryable = False
        return error

    def _decode(self, operation: str, response: requests.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise KlaviyoServerError(
                f"Klaviyo {operation}: HTTP {response.status_code} with a body that is not JSON.",
                status=response.status_code,
                code="invalid_response",
                retryable=True,
                operation=operation,
            ) from None

    def error_from_response(self, operation: str, response: requests.Response) -> KlaviyoAPIError:
        """The typed error for a 4xx/5xx answer, parsed from Klaviyo's JSON:API errors."""
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock())
        content_type = response.headers.get("Content-Type", "").lower()
        text = self.redact(response.text or "")
        errors: list[dict[str, Any]] = []
        payload: Any = None
        if "json" in content_type or text.lstrip().startswith("{"):
            try:
                payload = json.loads(text)
            except ValueError:
                payload = None
        if isinstance(payload, dict) and isinstance(payload.get("errors"), list):
            errors = [e for e in payload["errors"] if isinstance(e, dict)]
        first = errors[0] if errors else {}
        source = first.get("source") if isinstance(first.get("source"), dict) else {}
        fields: dict[str, Any] = {
            "status": status,
            "code": _str_or_none(first.get("code")),
            "title": _str_or_none(first.get("title")),
            "detail": _str_or_none(first.get("detail")),
            "pointer": _str_or_none(source.get("pointer") or source.get("parameter")),
            "error_id": _str_or_none(first.get("id")),
            "retry_after": retry_after,
            "errors": errors,
            "operation": operation,
        }
        described = fields["detail"] or fields["title"] or response.reason or "error"
        if fields["code"]:
            described = f"{fields['code']}: {described}"
        message = f"Klaviyo {operation} failed: HTTP {status} {described}"
        if fields["pointer"]:
            message += f" (at {fields['pointer']})"

        challenge = status == 403 and (
            bool(response.headers.get("cf-mitigated")) or "html" in content_type or not errors
        )
        if challenge:
            # A CDN challenge page stands in for the API's answer; the key was not judged.
            return KlaviyoServerError(
                f"Klaviyo {operation} failed: HTTP 403 challenge page from the CDN instead of "
                "an API answer.",
                **{**fields, "code": fields["code"] or "cdn_challenge"},
                retryable=True,
            )
        if status == 403:
            # The key is valid; it lacks a scope this endpoint needs.
            return KlaviyoPermissionError(message, **fields, retryable=False)
        if status == 401:
            return KlaviyoAuthError(message, **fields, retryable=False)
        if status == 409 and fields["code"] == "duplicate_profile":
            meta = first.get("meta") if isinstance(first.get("meta"), dict) else {}
            return KlaviyoDuplicateProfileError(
                message,
                duplicate_profile_id=_str_or_none(meta.get("duplicate_profile_id")),
                **fields,
                retryable=False,
            )
        if status == 429:
            return KlaviyoRateLimitError(message, **fields, retryable=True)
        if status >= 500:
            return KlaviyoServerError(message, **fields, retryable=status in RETRYABLE_STATUSES)
        return KlaviyoAPIError(message, **fields, retryable=False)


def _str_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)
