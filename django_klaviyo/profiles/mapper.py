"""The default user mapper: a store user to Klaviyo profile attributes.

Replaceable: point ``KLAVIYO["USER_PROFILE_MAPPER"]`` at your own function (or a dotted
path to it) with the same signature.

User profile (``default_user_profile(user) -> dict | None``)
    ``email`` ← ``user.email``; ``external_id`` ← ``str(user.pk)``; ``first_name`` and
    ``last_name`` ← the same attributes; ``phone_number`` ← ``user.phone_number`` when the
    user model has one (normalised to E.164; an invalid number is left out with a
    warning). Returns None when the user has neither an email nor a primary key.
"""

from __future__ import annotations

import logging
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules.identifiers import normalize_phone_number

__all__ = ["default_user_profile"]

logger = logging.getLogger(__name__)


def default_user_profile(user: Any) -> dict[str, Any] | None:
    profile: dict[str, Any] = {}
    email = getattr(user, "email", "") or ""
    if email:
        profile["email"] = email
    if user.pk is not None:
        profile["external_id"] = str(user.pk)
    if not profile:
        return None
    for name in ("first_name", "last_name"):
        value = getattr(user, name, "") or ""
        if value:
            profile[name] = value
    phone = getattr(user, "phone_number", None)
    if phone:
        try:
            profile["phone_number"] = normalize_phone_number(str(phone))
        except KlaviyoValidationError:
            # A bad phone must not cost the store its save or Klaviyo the rest of the profile.
            logger.warning(
                "django-klaviyo: user %s has a phone number that is not E.164; "
                "it is left out of the Klaviyo profile.",
                user.pk,
            )
    return profile
