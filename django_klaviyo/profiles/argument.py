"""The ``profile`` argument of the public writers (``django_klaviyo.api``, back in stock):
a dict of Klaviyo profile attributes, or a user instance mapped by ``USER_PROFILE_MAPPER``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError


def as_profile(profile: Any) -> Any:
    """A mapping (or None) as is; a user instance through USER_PROFILE_MAPPER. Anything
    else raises ``KlaviyoValidationError(field="profile")``."""
    if profile is None or isinstance(profile, Mapping):
        return profile
    meta = getattr(profile, "_meta", None)
    if meta is not None and meta.label == settings.AUTH_USER_MODEL:
        mapped = klaviyo_settings.callable("USER_PROFILE_MAPPER")(profile)
        if not mapped:
            raise KlaviyoValidationError(
                "USER_PROFILE_MAPPER found no identifier for this user.", field="profile"
            )
        return mapped
    raise KlaviyoValidationError(
        f"profile must be a dict or a user, not {type(profile).__name__}.", field="profile"
    )
