"""The client's webhook requests: a name, an https endpoint, a secret and topics. Error
messages never echo the secret."""

from __future__ import annotations

from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules.shapes import batch, text


def clean_webhook(
    *, name: Any, endpoint_url: Any, secret_key: Any, topics: Any, description: Any = None
) -> dict[str, Any]:
    """``{"name", "description"?, "endpoint_url", "secret_key", "topics"}``, topics
    each once."""
    cleaned: dict[str, Any] = {"name": text(name, "name")}
    if description is not None:
        cleaned["description"] = text(description, "description")
    url = text(endpoint_url, "endpoint_url")
    if not url.lower().startswith("https://"):
        raise KlaviyoValidationError(
            "endpoint_url must be an https:// URL; Klaviyo refuses plain http.",
            field="endpoint_url",
        )
    cleaned["endpoint_url"] = url
    if not isinstance(secret_key, str) or not secret_key.strip():
        raise KlaviyoValidationError("secret_key must be a non-empty string.", field="secret_key")
    cleaned["secret_key"] = secret_key
    topic_ids = [text(t, f"topics[{i}]") for i, t in enumerate(batch(topics, "topics", 1000))]
    if not topic_ids:
        raise KlaviyoValidationError("topics must name at least one topic.", field="topics")
    cleaned["topics"] = list(dict.fromkeys(topic_ids))
    return cleaned
