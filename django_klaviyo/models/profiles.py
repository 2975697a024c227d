"""Local mirror of Klaviyo profiles, lists and list memberships."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Lower

from django_klaviyo.accounts import get_account

# Identifier key (as in payloads) -> lookup on the link; the strongest first.
_LOOKUPS = (
    ("id", "klaviyo_id"),
    ("klaviyo_id", "klaviyo_id"),
    ("external_id", "external_id"),
    # Klaviyo treats emails case-insensitively; stored ones keep the case they came with.
    ("email", "email__iexact"),
    ("phone_number", "phone_number"),
)


class Consent(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    SUBSCRIBED = "subscribed", "Subscribed"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    # Klaviyo will not send marketing: suppressed by hand, bounced, spam complaint.
    SUPPRESSED = "suppressed", "Suppressed"


class ProfileLinkQuerySet(models.QuerySet):
    """The one way to find the link of a profile (flusher, API, receivers, webhooks)."""

    def matching(self, identifiers: Mapping[str, Any]) -> ProfileLinkQuerySet:
        """Links matching any of the given identifiers (``id``/``klaviyo_id``,
        ``external_id``, ``email`` case-insensitively, ``phone_number``); empty values
        are ignored, and no identifier matches nothing."""
        condition = Q()
        for key, lookup in _LOOKUPS:
            value = identifiers.get(key)
            if value:
                condition |= Q(**{lookup: str(value)})
        return self.filter(condition) if condition else self.none()

    def best_match(
        self, identifiers: Mapping[str, Any] | None = None, *, user: Any = None
    ) -> KlaviyoProfileLink | None:
        """The link that is this profile: the user's own link, else the strongest
        identifier that matches any link (Klaviyo id, external_id, email, phone); among
        the links it matches, a user's link before a guest's, then the oldest."""
        if user is not None:
            link = self.filter(user=user).first()
            if link is not None:
                return link
        ordered = self.order_by(F("user_id").desc(nulls_last=True), "pk")
        for key, lookup in _LOOKUPS:
            value = (identifiers or {}).get(key)
            if value:
                link = ordered.filter(**{lookup: str(value)}).first()
                if link is not None:
                    return link
        return None

    def klaviyo_ids(self, key: str, values: Iterable[str]) -> dict[str, str]:
        """Known Klaviyo ids by identifier value (emails lower-cased), for many values of
        one identifier in one query; the same matching rule as ``matching``."""
        values = [str(v) for v in values if v]
        if not values:
            return {}
        if key == "email":
            condition = Q()
            for value in values:
                condition |= Q(email__iexact=value)
        else:
            condition = Q(**{f"{dict(_LOOKUPS)[key]}__in": values})
        found: dict[str, str] = {}
        # The best match last, so it wins: a user's link over a guest's, then the oldest.
        for value, klaviyo_id in (
            self.filter(condition, klaviyo_id__isnull=False)
            .order_by(F("user_id").asc(nulls_first=True), "-pk")
            .values_list(dict(_LOOKUPS)[key].removesuffix("__iexact"), "klaviyo_id")
        ):
            found[value.lower() if key == "email" else value] = klaviyo_id
        return found

    def in_segment(self, segment: str, *, account: str | None = None) -> ProfileLinkQuerySet:
        """Links that are members of the Klaviyo segment ``segment`` (a name or an id
        chosen in ``KLAVIYO["SEGMENTS"]``; ``account``: its account's name, default the
        default account), answered from the mirror as of the last segments sync.

        Raises ``KlaviyoSegmentNotMirrored`` for a segment whose members are not mirrored."""
        stored = get_account(account).stored if account else ""
        membership = self.model._meta.get_field("segment_memberships").related_model
        mirrored = membership._meta.get_field("segment").related_model.objects.mirrored
        members = membership.objects.filter(segment=mirrored(segment, stored))
        same = (
            Q(profile_id=OuterRef("pk"))
            | Q(external_id=OuterRef("external_id"), external_id__gt="")
            | Q(email=Lower(OuterRef("email")), email__gt="")
        )
        if not stored:  # Klaviyo profile ids on links are the default account's
            same |= Q(klaviyo_profile_id=OuterRef("klaviyo_id"))
        return self.filter(Exists(members.filter(same)))


class KlaviyoProfileLink(models.Model):
    """Which local user (or guest email) is which Klaviyo profile."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="klaviyo_profile",
    )
    # Klaviyo's profile id; NULL until Klaviyo has told us (NULLs do not collide).
    klaviyo_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    email = models.EmailField(max_length=254, blank=True, db_index=True)
    phone_number = models.CharField(max_length=20, blank=True, db_index=True)
    external_id = models.CharField(max_length=255, blank=True, db_index=True)
    email_consent = models.CharField(
        max_length=16, choices=Consent.choices, default=Consent.UNKNOWN
    )
    email_consent_at = models.DateTimeField(null=True, blank=True)
    sms_consent = models.CharField(max_length=16, choices=Consent.choices, default=Consent.UNKNOWN)
    sms_consent_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProfileLinkQuerySet.as_manager()

    class Meta:
        verbose_name = "profile link"
        constraints = [
            # A guest checkout (no user) is keyed by its email.
            models.UniqueConstraint(
                fields=["email"],
                condition=Q(user__isnull=True) & ~Q(email=""),
                name="klaviyo_unique_guest_email",
            ),
        ]

    def __str__(self) -> str:
        return self.email or self.phone_number or self.external_id or f"profile link {self.pk}"

    def identifiers(self) -> dict[str, str]:
        """The Klaviyo identifiers this link knows, for payloads."""
        return {
            key: value
            for key, value in (
                ("email", self.email),
                ("phone_number", self.phone_number),
                ("external_id", self.external_id),
            )
            if value
        }


class KlaviyoList(models.Model):
    """A Klaviyo list, keyed by its account and remote id."""

    # The Klaviyo account (``OutboxEvent.account``: "" is the default account).
    account = models.CharField(max_length=64, blank=True, default="")
    klaviyo_id = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    opt_in_process = models.CharField(max_length=32, blank=True)
    remote_created = models.DateTimeField(null=True, blank=True)
    remote_updated = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Klaviyo list"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "klaviyo_id"], name="klaviyo_list_account_id"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.klaviyo_id})"


class ListMembership(models.Model):
    """Whether a profile should be on a list, whether Klaviyo has been told, and the
    consent given or withdrawn for this list alone.

    ``email_consent`` / ``sms_consent`` stay ``unknown`` until something list-scoped
    happens (a list-scoped unsubscribe sent by the flusher, a consent webhook naming the
    list); the profile link's consent is the global one. ``effective_consent`` combines both.
    """

    klaviyo_list = models.ForeignKey(
        KlaviyoList, on_delete=models.CASCADE, related_name="memberships"
    )
    profile = models.ForeignKey(
        KlaviyoProfileLink, on_delete=models.CASCADE, related_name="memberships"
    )
    desired_member = models.BooleanField(default=True)
    # NULL: never synced; otherwise what Klaviyo last accepted.
    synced_member = models.BooleanField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    email_consent = models.CharField(
        max_length=16, choices=Consent.choices, default=Consent.UNKNOWN
    )
    email_consent_at = models.DateTimeField(null=True, blank=True)
    sms_consent = models.CharField(max_length=16, choices=Consent.choices, default=Consent.UNKNOWN)
    sms_consent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["klaviyo_list", "profile"], name="klaviyo_unique_list_membership"
            )
        ]

    def __str__(self) -> str:
        return f"{self.profile} in {self.klaviyo_list}"

    @property
    def in_sync(self) -> bool:
        return self.synced_member == self.desired_member

    def effective_consent(self, channel: str) -> str:
        """Consent for this list on ``channel``: see :func:`effective_list_consent`."""
        return effective_list_consent(
            getattr(self.profile, f"{channel}_consent"), getattr(self, f"{channel}_consent")
        )


# A global "no" outranks anything a list says; otherwise the list's own answer, if any.
_GLOBAL_REFUSALS = (Consent.UNSUBSCRIBED, Consent.SUPPRESSED)


def effective_list_consent(global_consent: str, list_consent: str) -> str:
    """Whether marketing on one channel may reach a profile through one list.

    A global unsubscribe or suppression holds for every list; a list-scoped consent
    (usually an unsubscribe from that list only) decides next; else the global consent.
    """
    if global_consent in _GLOBAL_REFUSALS:
        return global_consent
    if list_consent != Consent.UNKNOWN:
        return list_consent
    return global_consent
