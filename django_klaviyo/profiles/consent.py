"""The consent mirror's one set of writes, shared by the flusher and the webhook handlers.

Global consent lives on :class:`KlaviyoProfileLink` (``email_consent``, ``sms_consent``);
consent given or withdrawn for one list lives on that list's :class:`ListMembership`
row. Every write is a conditional UPDATE that only moves a stamp forward, so replayed,
re-sent and out-of-order changes leave the newest state in place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from django_klaviyo.models import Consent, KlaviyoList, KlaviyoProfileLink, ListMembership

CHANNELS = ("email", "sms")


def _newer(stamp_field: str, at: dt.datetime) -> Q:
    return Q(**{f"{stamp_field}__isnull": True}) | Q(**{f"{stamp_field}__lt": at})


def set_global_consent(
    links: QuerySet[KlaviyoProfileLink],
    channel: str,
    consent: str,
    at: dt.datetime,
    *,
    only_from: tuple[str, ...] | None = None,
    keep: tuple[str, ...] = (),
) -> int:
    """Move one channel's global consent on ``links``; rows changed.

    ``only_from``: change only links whose consent is one of these; ``keep``: leave
    links whose consent is one of these (a suppression outranks an unsubscribe)."""
    consent_field, stamp_field = f"{channel}_consent", f"{channel}_consent_at"
    rows = links.filter(_newer(stamp_field, at))
    if only_from is not None:
        rows = rows.filter(**{f"{consent_field}__in": only_from})
    if keep:
        rows = rows.exclude(**{f"{consent_field}__in": keep})
    return rows.update(**{consent_field: consent, stamp_field: at, "updated_at": timezone.now()})


def mirrored_list(list_id: str, using: str = "default", account: str = "") -> KlaviyoList:
    """The local row for a Klaviyo list of ``account`` (its ``OutboxEvent.account`` value:
    lists, like their ids, are per account), created (named by its id) if never synced;
    ``klaviyo_sync lists`` fills in the real name later."""
    lists = KlaviyoList.objects.using(using).filter(account=account)
    found = lists.filter(klaviyo_id=list_id).first()
    if found is not None:
        return found
    try:
        with transaction.atomic(using=using):
            return lists.create(account=account, klaviyo_id=list_id, name=list_id)
    except IntegrityError:  # created concurrently
        return lists.get(klaviyo_id=list_id)


def _ensure_memberships(
    klaviyo_list: KlaviyoList,
    link_ids: Iterable[int],
    *,
    synced_member: bool | None,
    using: str = "default",
) -> None:
    link_ids = set(link_ids)
    have = set(
        ListMembership.objects.using(using)
        .filter(klaviyo_list=klaviyo_list, profile_id__in=link_ids)
        .values_list("profile_id", flat=True)
    )
    missing = [
        ListMembership(klaviyo_list=klaviyo_list, profile_id=pk, synced_member=synced_member)
        for pk in sorted(link_ids - have)
    ]
    # Concurrent creators collide on the unique (list, profile) pair; either row will do.
    ListMembership.objects.using(using).bulk_create(missing, ignore_conflicts=True)


def set_list_consent(
    links: QuerySet[KlaviyoProfileLink],
    list_id: str,
    channels: Iterable[str],
    consent: str,
    at: dt.datetime,
    *,
    confirmed_member: bool = False,
    account: str = "",
) -> int:
    """Record consent for one list (of ``account``) only on ``links``; rows changed.

    Membership rows are created where missing (``confirmed_member``: Klaviyo has just
    said the profile is on the list). The links' global consent is not touched."""
    using = links.db
    link_ids = list(links.values_list("pk", flat=True))
    if not link_ids:
        return 0
    klaviyo_list = mirrored_list(list_id, using, account)
    _ensure_memberships(
        klaviyo_list, link_ids, synced_member=True if confirmed_member else None, using=using
    )
    memberships = ListMembership.objects.using(using).filter(
        klaviyo_list=klaviyo_list, profile_id__in=link_ids
    )
    changed = 0
    for channel in channels:
        consent_field, stamp_field = f"{channel}_consent", f"{channel}_consent_at"
        changes: dict[str, object] = {
            consent_field: consent,
            stamp_field: at,
            "updated_at": timezone.now(),
        }
        if confirmed_member:
            changes.update(synced_member=True, synced_at=at)
        changed += memberships.filter(_newer(stamp_field, at)).update(**changes)
    return changed


def lift_list_unsubscribe(
    links: QuerySet[KlaviyoProfileLink],
    list_id: str,
    channels: Iterable[str],
    at: dt.datetime,
    account: str = "",
) -> int:
    """Subscribing through a list lifts that list's own unsubscribe (Klaviyo's subscribe
    job removes UNSUBSCRIBE suppressions): the list falls back to the global consent,
    which webhooks confirm (double opt-in may still be pending). Rows changed."""
    memberships = ListMembership.objects.using(links.db).filter(
        klaviyo_list__account=account, klaviyo_list__klaviyo_id=list_id, profile__in=links
    )
    changed = 0
    for channel in channels:
        consent_field, stamp_field = f"{channel}_consent", f"{channel}_consent_at"
        changed += (
            memberships.filter(_newer(stamp_field, at))
            .filter(**{consent_field: Consent.UNSUBSCRIBED})
            .update(
                **{consent_field: Consent.UNKNOWN, stamp_field: at, "updated_at": timezone.now()}
            )
        )
    return changed
