"""Coupon rules: ``coupon`` and ``coupon_code`` rows, and the one rule for codes.

A ``coupon`` row is ``{"external_id", "description"}``: the coupon to create in Klaviyo
(whose coupon id is its external id). A ``coupon_code`` row is ``{"coupon", "code",
"expires_at"}``: one unique code of that coupon; the flusher packs a coupon's code rows
into coupon-code bulk jobs.

The client's ``create_coupon`` is cleaned by ``clean_coupon``, and ``run_coupon_code_job``
by ``clean_coupon_codes_request`` (the same code and expiry rules).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.values import check_text, parse_iso, utc_iso

# Letters, digits, '-' and '_': what a shopper can type from an email, and what fits
# Klaviyo's ids (a coupon's id is its external id).
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
DESCRIPTION_MAX_LENGTH = 255


def clean_code(value: Any, path: str = "code") -> str:
    """A coupon code or a coupon's external id, stripped, or raise naming ``path``."""
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not CODE_PATTERN.match(text):
        raise KlaviyoValidationError(
            f"{path} {value!r} must be 1 to 255 letters, digits, '-' or '_'.", field=path
        )
    return text


def clean_expiry(value: Any, path: str = "expires_at") -> str | None:
    """None (Klaviyo's default: a year), or an aware date-time as ISO 8601 in UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = parse_iso(value, path)
    if not isinstance(value, dt.datetime):
        raise KlaviyoValidationError(f"{path} must be a date-time or null.", field=path)
    return utc_iso(value)


def _mapping(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise KlaviyoValidationError("payload must be a dict.", field="payload")
    return payload


def clean_coupon(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A ``coupon`` row's payload."""
    payload = _mapping(payload)
    description = payload.get("description") or ""
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX_LENGTH:
        raise KlaviyoValidationError(
            f"description must be text of at most {DESCRIPTION_MAX_LENGTH} characters.",
            field="description",
        )
    return {
        "external_id": clean_code(payload.get("external_id"), "external_id"),
        "description": check_text(description, "description"),
    }


def clean_coupon_code(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A ``coupon_code`` row's payload."""
    payload = _mapping(payload)
    return {
        "coupon": clean_code(payload.get("coupon"), "coupon"),
        "code": clean_code(payload.get("code")),
        "expires_at": clean_expiry(payload.get("expires_at")),
    }


def clean_coupon_codes_request(
    coupon_id: Any, codes: Any
) -> tuple[str, list[tuple[str, str | None]]]:
    """``KlaviyoClient.run_coupon_code_job``'s arguments, by the ``coupon_code`` row's
    rules (``clean_code``, ``clean_expiry``): the coupon's id and ``(code, expires_at)``
    pairs, 1 to 1,000 of them; errors name the argument (``coupon_id``, ``codes[3]``,
    ``codes[3].expires_at``)."""
    coupon = clean_code(coupon_id, "coupon_id")
    if isinstance(codes, (str, bytes, Mapping)) or not isinstance(codes, Sequence):
        raise KlaviyoValidationError("codes must be a list of (code, expires_at).", field="codes")
    if not 1 <= len(codes) <= limits.COUPON_CODES_PER_JOB:
        raise KlaviyoValidationError(
            f"a coupon code job takes 1 to {limits.COUPON_CODES_PER_JOB} codes "
            f"({len(codes)} given).",
            field="codes",
        )
    cleaned = []
    for i, pair in enumerate(codes):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise KlaviyoValidationError(
                f"codes[{i}] must be a (code, expires_at) pair.", field=f"codes[{i}]"
            )
        code, expires_at = pair
        cleaned.append(
            (clean_code(code, f"codes[{i}]"), clean_expiry(expires_at, f"codes[{i}].expires_at"))
        )
    return coupon, cleaned
