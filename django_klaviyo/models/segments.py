"""Read-only mirror of Klaviyo segments (``manage.py klaviyo_sync segments``).

``KlaviyoSegment``: every segment of an account, its name and profile count.
``KlaviyoSegmentMembership``: the members of the segments chosen in
``KLAVIYO["SEGMENTS"]`` only, as Klaviyo listed them at ``synced_at``.
``KlaviyoSegmentSize``: one profile count per segment and day, the size history a chart
reads (``segment``, ``date``, ``profile_count``).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from django_klaviyo.exceptions import KlaviyoSegmentNotMirrored
from django_klaviyo.insights.chosen import chosen_segments
from django_klaviyo.models.profiles import KlaviyoProfileLink
from django_klaviyo.models.remote import account_field, unique_per_account


class SegmentQuerySet(models.QuerySet):
    def named(self, ref: str, account: str = "") -> list[KlaviyoSegment]:
        """The segments of ``account`` whose id is ``ref``, else whose name is ``ref``."""
        rows = self.filter(account=account)
        by_id = list(rows.filter(klaviyo_id=ref)[:1])
        return by_id or list(rows.filter(name=ref)[:2])

    def mirrored(self, ref: str, account: str = "") -> KlaviyoSegment:
        """The segment ``ref`` (a name or an id) names in ``account``, whose members are
        mirrored and were listed in full at least once.

        Raises ``KlaviyoSegmentNotMirrored`` when the segment is not chosen in
        ``KLAVIYO["SEGMENTS"]``, is unknown or ambiguous, or was never synced in full:
        "not in the mirror" is never answered as "not a member"."""
        chosen = chosen_segments(account)
        where = f" in account {account!r}" if account else ""
        found = self.named(ref, account)
        if len(found) > 1:
            raise KlaviyoSegmentNotMirrored(
                f"Two Klaviyo segments{where} are named {ref!r}; name it by its id instead "
                f"(in KLAVIYO['SEGMENTS'] too)."
            )
        segment = found[0] if found else None
        if ref not in chosen and (
            segment is None or (segment.klaviyo_id not in chosen and segment.name not in chosen)
        ):
            raise KlaviyoSegmentNotMirrored(
                f"Klaviyo segment {ref!r}{where} is not in KLAVIYO['SEGMENTS'], so its members "
                "are not mirrored; add it there and run `manage.py klaviyo_sync segments`."
            )
        if segment is None:
            raise KlaviyoSegmentNotMirrored(
                f"Klaviyo segment {ref!r}{where} is not in the mirror yet: run "
                "`manage.py klaviyo_sync segments` (a name Klaviyo does not know fails it)."
            )
        if segment.members_synced_at is None:
            raise KlaviyoSegmentNotMirrored(
                f"The members of Klaviyo segment {ref!r}{where} were never listed in full "
                "yet; run `manage.py klaviyo_sync segments` until it completes."
            )
        return segment


class KlaviyoSegment(models.Model):
    account = account_field()
    klaviyo_id = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    # Klaviyo's profile_count, or the members counted by the last complete pass.
    profile_count = models.PositiveIntegerField(null=True, blank=True)
    count_synced_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    remote_created = models.DateTimeField(null=True, blank=True)
    remote_updated = models.DateTimeField(null=True, blank=True)
    # When the name (and the rest of GET /api/segments) was last read.
    synced_at = models.DateTimeField(null=True, blank=True)
    # The members pass (chosen segments only): where an interrupted pass goes on (the next
    # page's URL), when the pass now running began, and when the last one completed.
    members_cursor = models.TextField(blank=True)
    members_pass_started_at = models.DateTimeField(null=True, blank=True)
    members_synced_at = models.DateTimeField(null=True, blank=True)

    objects = SegmentQuerySet.as_manager()

    class Meta:
        verbose_name = "Klaviyo segment"
        ordering = ["name"]
        constraints = [unique_per_account("klaviyo_segment_account_id")]

    def __str__(self) -> str:
        return self.name

    @property
    def klaviyo_url(self) -> str:
        """The segment's page in Klaviyo (segments live under /lists/ there)."""
        return f"https://www.klaviyo.com/lists/{self.klaviyo_id}"


class KlaviyoSegmentMembership(models.Model):
    """One profile Klaviyo listed in a chosen segment, with the identifiers it gave."""

    segment = models.ForeignKey(KlaviyoSegment, on_delete=models.CASCADE, related_name="members")
    klaviyo_profile_id = models.CharField(max_length=64)
    # Lower-cased, so a lookup by a link's email is one indexed equality.
    email = models.CharField(max_length=254, blank=True, db_index=True)
    external_id = models.CharField(max_length=255, blank=True, db_index=True)
    # The local link, when one matched at sync time (Klaviyo id, external_id, email).
    profile = models.ForeignKey(
        KlaviyoProfileLink,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="segment_memberships",
    )
    # The last pass that saw this member.
    synced_at = models.DateTimeField()

    class Meta:
        verbose_name = "Klaviyo segment member"
        constraints = [
            models.UniqueConstraint(
                fields=["segment", "klaviyo_profile_id"], name="klaviyo_segment_member"
            )
        ]

    def __str__(self) -> str:
        return f"{self.email or self.external_id or self.klaviyo_profile_id} in {self.segment}"


class KlaviyoSegmentSize(models.Model):
    """A segment's profile count on one day (the last count read that day)."""

    segment = models.ForeignKey(KlaviyoSegment, on_delete=models.CASCADE, related_name="sizes")
    date = models.DateField()
    profile_count = models.PositiveIntegerField()

    class Meta:
        verbose_name = "Klaviyo segment size"
        ordering = ["segment", "date"]
        constraints = [
            models.UniqueConstraint(fields=["segment", "date"], name="klaviyo_segment_size_day")
        ]

    def __str__(self) -> str:
        return f"{self.segment} on {self.date}: {self.profile_count}"


def member_condition(link: KlaviyoProfileLink, account: str = "") -> Q:
    """Memberships that are ``link``: its own row, else its identifiers (Klaviyo's
    profile id is the default account's, so it only counts there)."""
    condition = Q(profile_id=link.pk)
    if link.klaviyo_id and not account:
        condition |= Q(klaviyo_profile_id=link.klaviyo_id)
    if link.external_id:
        condition |= Q(external_id=link.external_id)
    if link.email:
        condition |= Q(email=link.email.lower())
    return condition
