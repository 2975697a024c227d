"""Segment membership, answered from the local mirror (``klaviyo_sync segments``).

    from django_klaviyo import in_segment, segment_synced_at

    if in_segment(request.user, "VIP"):            # no request to Klaviyo
        ...
    KlaviyoProfileLink.objects.in_segment("VIP")    # the QuerySet twin
    segment_synced_at("VIP")                        # as of when (the last complete pass)

Only segments chosen in ``KLAVIYO["SEGMENTS"]`` have their members mirrored; asking about
any other raises ``KlaviyoSegmentNotMirrored`` rather than answering False.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.db.models import Q

from django_klaviyo.accounts import get_account
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import KlaviyoProfileLink, KlaviyoSegment, KlaviyoSegmentMembership
from django_klaviyo.models.segments import member_condition
from django_klaviyo.rules.identifiers import email_key

_NOBODY = Q(pk__in=[])


def _stored(account: str | None) -> str:
    return get_account(account).stored if account else ""


def _identifiers(identifiers: Mapping[str, Any], account: str) -> Q:
    condition = _NOBODY
    email = identifiers.get("email")
    if isinstance(email, str) and email.strip():
        condition |= Q(email=email_key(email))
    external_id = identifiers.get("external_id")
    if external_id:
        condition |= Q(external_id=str(external_id))
    klaviyo_id = identifiers.get("id") or identifiers.get("klaviyo_id")
    if klaviyo_id:
        condition |= Q(klaviyo_profile_id=str(klaviyo_id))
    return condition


def _who(user_or_profile: Any, account: str) -> Q:
    if isinstance(user_or_profile, KlaviyoProfileLink):
        return member_condition(user_or_profile, account)
    if isinstance(user_or_profile, str):
        return _identifiers({"email": user_or_profile}, account)
    if isinstance(user_or_profile, Mapping):
        return _identifiers(user_or_profile, account)
    if getattr(user_or_profile, "pk", None) is None:
        raise KlaviyoValidationError(
            "in_segment needs a user, a KlaviyoProfileLink, an email or a dict of "
            "identifiers (email, external_id, id).",
            field="profile",
        )
    link = KlaviyoProfileLink.objects.filter(user=user_or_profile).first()
    condition = member_condition(link, account) if link is not None else _NOBODY
    return condition | _identifiers({"email": getattr(user_or_profile, "email", "")}, account)


def in_segment(user_or_profile: Any, segment: str, *, account: str | None = None) -> bool:
    """Whether a user, a ``KlaviyoProfileLink``, an email or a dict of identifiers was a
    member of the Klaviyo segment ``segment`` (a name or an id chosen in
    ``KLAVIYO["SEGMENTS"]``) at its last complete sync (``segment_synced_at``).

    ``account``: the account's name (default: the default account). Answered from the
    mirror with one query, never a request to Klaviyo. Raises
    ``KlaviyoSegmentNotMirrored`` for a segment whose members are not mirrored."""
    stored = _stored(account)
    chosen = KlaviyoSegment.objects.mirrored(segment, stored)
    condition = _who(user_or_profile, stored)
    return KlaviyoSegmentMembership.objects.filter(condition, segment=chosen).exists()


def segment_synced_at(segment: str, *, account: str | None = None) -> dt.datetime:
    """When the members of ``segment`` were last listed in full: ``in_segment`` is as
    fresh as this. Raises ``KlaviyoSegmentNotMirrored`` like ``in_segment``."""
    chosen = KlaviyoSegment.objects.mirrored(segment, _stored(account))
    assert chosen.members_synced_at is not None  # mirrored() checks it
    return chosen.members_synced_at
