"""The JSON parser of the public endpoints (storefront events, back in stock).

DRF's ``JSONParser`` reads the whole stream (Django's DATA_UPLOAD_MAX_MEMORY_SIZE applies
only to ``request.body``) and lets a RecursionError from deeply nested input escape as a
500. This one reads at most ``limits.MAX_PUBLIC_BODY_BYTES`` (413 beyond) and refuses
JSON nested more than ``limits.MAX_INPUT_DEPTH`` levels with a 400.
"""

from __future__ import annotations

import io
from typing import Any

from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from django_klaviyo.rules import limits


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"


class PublicJSONParser(JSONParser):
    max_bytes = limits.MAX_PUBLIC_BODY_BYTES
    max_depth = limits.MAX_INPUT_DEPTH

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        too_large = BodyTooLarge(
            f"The request body is larger than {self.max_bytes} bytes; nothing was stored."
        )
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and str(declared).isdigit() and int(declared) > self.max_bytes:
            raise too_large
        raw = stream.read(self.max_bytes + 1)
        if len(raw) > self.max_bytes:
            raise too_large
        try:
            data = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            data = None
        else:
            if not limits.too_deep(data, self.max_depth):
                return data
        raise ParseError(f"JSON nested more than {self.max_depth} levels deep is not accepted.")
