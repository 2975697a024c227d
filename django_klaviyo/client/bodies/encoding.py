"""The exact bytes sent for a request body, and the check of a request's encoded size."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from django_klaviyo.exceptions import KlaviyoValidationError


class _Encoder(DjangoJSONEncoder):
    """Decimals become JSON numbers (prices should stay numeric in Klaviyo)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, Decimal):
            return float(o)
        return super().default(o)


def encode(body: Any) -> bytes:
    """The exact bytes sent for ``body``; unencodable values raise a validation error."""
    try:
        text = json.dumps(body, cls=_Encoder, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise KlaviyoValidationError(
            f"The request body cannot be encoded as JSON: {exc}.", field="body"
        ) from None
    return text.encode("utf-8")


def ensure_size(encoded: bytes, limit: int, what: str) -> None:
    """Refuse a request whose encoded body is over ``limit`` bytes (a ``rules.limits``)."""
    if len(encoded) > limit:
        raise KlaviyoValidationError(
            f"{what} is {len(encoded)} bytes encoded; Klaviyo accepts at most {limit} bytes "
            "per request. Send fewer items per request.",
            field="body",
        )
