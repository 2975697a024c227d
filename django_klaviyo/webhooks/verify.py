"""Checks on an incoming webhook that need no database: signature, freshness and shape.

Every failure raises :class:`WebhookRejected` carrying the HTTP status to answer and a
message that is safe to show the sender (no secret, no signature value).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.dateparse import parse_datetime

from django_klaviyo.rules import limits

SIGNATURE_HEADER = "Klaviyo-Signature"
TIMESTAMP_HEADER = "Klaviyo-Timestamp"
WEBHOOK_ID_HEADER = "Klaviyo-Webhook-Id"
FLOW_TOKEN_HEADER = "X-Klaviyo-Flow-Token"
MAX_EXTERNAL_ID_LENGTH = 255
MAX_TOPIC_LENGTH = 255
# How far ahead of the receiver's clock a meta.timestamp may be: Klaviyo stamps a delivery
# when it sends it, so only clock skew puts it in the future. Bounding this (instead of
# using the whole WEBHOOK_TOLERANCE_SECONDS both ways) bounds how long a delivery can be
# replayed after it arrived, which is what klaviyo_purge keeps the log for.
MAX_FUTURE_SKEW_SECONDS = 300


class WebhookRejected(Exception):
    """The request is refused with ``status``; ``detail`` goes into the JSON answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class WebhookEventItem:
    """One entry of a delivery's ``data[]``."""

    external_id: str
    topic: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class SystemDelivery:
    """A parsed, shape-checked system webhook body."""

    webhook_id: str
    timestamp: dt.datetime
    items: list[WebhookEventItem]
    meta: dict[str, Any]


def _header_bytes(value: str) -> bytes:
    # WSGI hands headers over as latin-1 decoded text; encoding back gives the bytes sent.
    return value.encode("latin-1", errors="replace")


def compute_signature(secret: str, body: bytes, timestamp: str) -> str:
    """Klaviyo's rule: lowercase hex HMAC-SHA256(secret, raw body + raw timestamp header)."""
    return hmac.new(secret.encode(), body + _header_bytes(timestamp), hashlib.sha256).hexdigest()


def signature_matches(body: bytes, timestamp: str, signature: str, secrets: Iterable[str]) -> bool:
    """True when ``signature`` was made with any of ``secrets`` (several during rotation).

    Compared as bytes in constant time: ``hmac.compare_digest`` refuses non-ASCII text,
    and a forged header may hold anything.
    """
    provided = _header_bytes(signature.strip())
    matched = False
    for secret in secrets:
        expected = compute_signature(secret, body, timestamp).encode()
        # No early exit, so timing does not reveal which secret matched.
        matched |= hmac.compare_digest(expected, provided)
    return matched


def token_matches(provided: str, expected: str) -> bool:
    return hmac.compare_digest(_header_bytes(provided), expected.encode())


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON (no NaN/Infinity, valid UTF-8, at most ``limits.MAX_INPUT_DEPTH``
    levels deep), or a 400."""
    if not body:
        raise WebhookRejected(400, "The request body is empty; a JSON object is expected.")
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        document = None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise WebhookRejected(400, f"The body is not valid JSON: {exc}") from None
    else:
        # _storable() and the handlers walk it recursively: a few hundred levels would
        # raise RecursionError there (a 500), so refuse depth before anything walks it.
        if not limits.too_deep(document):
            return document
    raise WebhookRejected(
        400, f"The JSON body is nested more than {limits.MAX_INPUT_DEPTH} levels deep."
    )


def _storable(value: Any) -> Any:
    """A copy that every database can store in a JSON column.

    PostgreSQL's jsonb refuses ``\\u0000`` and lone surrogates, both legal in JSON text.
    The raw body is kept verbatim in the delivery log, so nothing is lost by replacing them.
    """
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        return value.encode("utf-8", errors="replace").decode("utf-8")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def parse_timestamp(value: Any, *, field: str) -> dt.datetime:
    if not isinstance(value, str):
        raise WebhookRejected(400, f"{field} must be an ISO-8601 date-time string.")
    try:
        parsed = parse_datetime(value.strip())
    except ValueError:
        parsed = None
    if parsed is None:
        raise WebhookRejected(400, f"{field} is not an ISO-8601 date-time: {value[:64]!r}.")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed


def check_freshness(
    sent_at: dt.datetime,
    *,
    now: dt.datetime,
    tolerance_seconds: float,
    future_seconds: float | None = None,
) -> None:
    """Refuse deliveries sent more than ``tolerance_seconds`` ago, or more than
    ``future_seconds`` (default: the tolerance) ahead: replay protection, together with the
    stored item ids that make a replay inside the window a duplicate.

    Uses the body's ``meta.timestamp``: Klaviyo's ``Klaviyo-Timestamp`` header has been seen
    off by hours (local time labelled GMT), so it only feeds the HMAC.
    """
    age = (now - sent_at).total_seconds()
    ahead = tolerance_seconds if future_seconds is None else future_seconds
    if age > tolerance_seconds or -age > ahead:
        skew = abs(age)
        raise WebhookRejected(
            403,
            f"The delivery's meta.timestamp is {int(skew)} s away from the receiver's clock "
            f"(tolerance {int(tolerance_seconds)} s back, {int(ahead)} s ahead); refusing a "
            "possible replay.",
        )


# The only way parsed JSON text can hold a NUL or a lone surrogate is a \u escape of one
# (strict JSON has no raw control characters; strict UTF-8 has no surrogates). A body
# without such an escape needs no storable() copy: 5,000 items are not walked for nothing.
UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _kept(value: Any) -> Any:
    return value


def _parse_items(data: Any, storable: Any = _storable) -> list[WebhookEventItem]:
    if not isinstance(data, list):
        raise WebhookRejected(400, "data must be a list of webhook events.")
    items: list[WebhookEventItem] = []
    for index, entry in enumerate(data):
        where = f"data[{index}]"
        if not isinstance(entry, dict):
            raise WebhookRejected(400, f"{where} must be an object.")
        external_id, topic, payload = (
            entry.get("external_id"),
            entry.get("topic"),
            entry.get("payload"),
        )
        if not isinstance(external_id, str) or not external_id.strip():
            raise WebhookRejected(400, f"{where}.external_id must be a non-empty string.")
        if len(external_id) > MAX_EXTERNAL_ID_LENGTH:
            raise WebhookRejected(
                400, f"{where}.external_id is longer than {MAX_EXTERNAL_ID_LENGTH} characters."
            )
        if not isinstance(topic, str) or not topic.strip():
            raise WebhookRejected(400, f"{where}.topic must be a non-empty string.")
        if len(topic) > MAX_TOPIC_LENGTH:
            raise WebhookRejected(
                400, f"{where}.topic is longer than {MAX_TOPIC_LENGTH} characters."
            )
        if not isinstance(payload, dict):
            raise WebhookRejected(400, f"{where}.payload must be an object.")
        items.append(
            WebhookEventItem(
                external_id=storable(external_id),
                topic=storable(topic),
                payload=storable(payload),
            )
        )
    return items


def parse_system_delivery(document: Any, *, body: bytes | None = None) -> SystemDelivery:
    """Check the shape Klaviyo documents: ``{"meta": {...}, "data": [{external_id, topic,
    payload}, ...]}``. ``body``: the JSON text ``document`` was parsed from, if known (a
    body without NUL or surrogate escapes is stored as parsed)."""
    if not isinstance(document, dict):
        raise WebhookRejected(400, "The body must be a JSON object with meta and data.")
    meta = document.get("meta")
    if not isinstance(meta, dict):
        raise WebhookRejected(400, "meta must be an object.")
    webhook_id = meta.get("klaviyo_webhook_id")
    if not isinstance(webhook_id, str) or not webhook_id:
        raise WebhookRejected(400, "meta.klaviyo_webhook_id must be a non-empty string.")
    timestamp = parse_timestamp(meta.get("timestamp"), field="meta.timestamp")
    clean = _storable if body is None or UNSTORABLE_ESCAPE.search(body) else _kept
    items = _parse_items(document.get("data"), clean)
    return SystemDelivery(
        webhook_id=_storable(webhook_id), timestamp=timestamp, items=items, meta=_storable(meta)
    )


def check_webhook_id(header_value: str, delivery: SystemDelivery) -> None:
    """Klaviyo: a header/body id mismatch "indicates potential malicious activity"."""
    if not hmac.compare_digest(_header_bytes(header_value), _header_bytes(delivery.webhook_id)):
        raise WebhookRejected(
            403, "meta.klaviyo_webhook_id does not match the Klaviyo-Webhook-Id header."
        )


def storable_text(value: str) -> str:
    """Text any database column accepts (see :func:`_storable`)."""
    return _storable(value)


def storable_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A flow webhook's body, made storable (see :func:`_storable`)."""
    return _storable(dict(document))
