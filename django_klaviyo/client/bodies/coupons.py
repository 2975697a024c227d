"""Coupon bodies: ``POST /api/coupons`` and ``POST /api/coupon-code-bulk-create-jobs``
(at most 1,000 codes a job), from clean values (``rules.coupons``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits


def coupon_body(external_id: str, description: str = "") -> dict[str, Any]:
    """A new coupon; an empty description is left out."""
    attributes = {"external_id": external_id}
    if description:
        attributes["description"] = description
    return {"data": {"type": "coupon", "attributes": attributes}}


def coupon_codes_body(coupon_id: str, codes: Sequence[tuple[str, str | None]]) -> dict[str, Any]:
    """A code job for one coupon; ``codes``: (unique_code, expires_at ISO 8601 or None)."""
    if not codes or len(codes) > limits.COUPON_CODES_PER_JOB:
        raise KlaviyoValidationError(
            f"a coupon code job takes 1 to {limits.COUPON_CODES_PER_JOB} codes "
            f"({len(codes)} given).",
            field="coupon-codes",
        )
    data = []
    for code, expires_at in codes:
        attributes: dict[str, Any] = {"unique_code": code}
        if expires_at:
            attributes["expires_at"] = expires_at
        data.append(
            {
                "type": "coupon-code",
                "attributes": attributes,
                "relationships": {"coupon": {"data": {"type": "coupon", "id": coupon_id}}},
            }
        )
    return {
        "data": {
            "type": "coupon-code-bulk-create-job",
            "attributes": {"coupon-codes": {"data": data}},
        }
    }
