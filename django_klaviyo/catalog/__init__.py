"""Catalog sync and back in stock.

* ``KLAVIYO["CATALOG"]`` maps the store's products, variants and categories
  (``django_klaviyo.catalog.mapping``); saves and deletes write catalog outbox rows,
  which the flusher sends through Klaviyo's catalog bulk jobs.
* ``sync_objects(objects)`` enqueues objects explicitly (after a ``QuerySet.update()``
  of prices or stock, which sends no signals); ``manage.py klaviyo_catalog sync``
  enqueues the whole catalog.
* ``subscribe_back_in_stock(profile, variant)`` subscribes a shopper to a variant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db.models import Model

from django_klaviyo import accounts
from django_klaviyo.models import OutboxEvent
from django_klaviyo.outbox import OutboxRow, enqueue_many, enqueue_rows
from django_klaviyo.profiles.argument import as_profile

__all__ = ["subscribe_back_in_stock", "sync_objects"]


def sync_objects(
    objects: Iterable[Model],
    *,
    create: bool = False,
    using: str | None = None,
    account: str | None = None,
) -> int:
    """Enqueue the catalog rows of ``objects`` (in the caller's transaction); returns the
    number of rows written. Raises ``KlaviyoValidationError`` naming the field of the
    first object whose mapped data Klaviyo would refuse. ``account``: the Klaviyo account
    (None: ACCOUNT_RESOLVER's answer for each object)."""
    from django_klaviyo.catalog import mapping

    by_account: dict[str, list[OutboxRow]] = {}
    for obj in objects:
        rows = by_account.setdefault(accounts.account_for(obj, account=account), [])
        for section in mapping.sections_for(type(obj)):
            rows += mapping.upsert_rows(obj, section, create=create)
    return sum(
        enqueue_rows(rows, using=using, account=name) for name, rows in by_account.items() if rows
    )


def subscribe_back_in_stock(
    profile: Mapping[str, Any] | Any,
    variant: Model | str,
    channels: Sequence[str] = ("email",),
    *,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """Subscribe ``profile`` (identifiers or a user) to Klaviyo's back-in-stock alerts of
    ``variant`` (a mapped variant object, or its external id). Validates now and writes
    one ``back_in_stock`` row; Klaviyo's back-in-stock flow sends the alert when the
    variant's inventory returns."""
    from django_klaviyo.catalog import mapping

    if isinstance(variant, Model):
        variant = mapping.external_id_of(variant, "VARIANTS")
    payload = {"profile": as_profile(profile), "variant": variant, "channels": list(channels)}
    about = None if profile is None or isinstance(profile, Mapping) else profile
    written = enqueue_many(
        [OutboxRow(kind=OutboxEvent.Kind.BACK_IN_STOCK, payload=payload)],
        using=using,
        account=accounts.account_for(about, account=account),
    )
    return written[0] if written else None
