"""Save and delete receivers of the models ``KLAVIYO["CATALOG"]`` maps.

Connected once at startup for the configured models; the mapping itself is read at
save time. A save writes the object's catalog rows in the save's transaction (create
job first for a new object, update otherwise); a delete writes delete rows. The
failure policy is the order receivers' (``django_klaviyo.orders.receivers``): bad mapped data
skips the Klaviyo update, leaves a dead row naming the field (``outbox.refused``) and never
breaks the store's save; ``manage.py klaviyo_catalog sync`` reports the same objects with
the reason and fails.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.db.models.signals import post_delete, post_save

from django_klaviyo import accounts
from django_klaviyo.catalog import mapping
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.outbox import OutboxRow, enqueue_rows
from django_klaviyo.outbox.refused import raise_or_log, record_refused, source_label

logger = logging.getLogger("django_klaviyo.catalog")


def connect_catalog_receivers() -> None:
    """Connect the receivers of every mapped model; safe to call more than once."""
    try:
        config = mapping.catalog_config()
    except ImproperlyConfigured:
        return  # reported by the django_klaviyo catalog system check
    for spec in config.values():
        try:
            model = apps.get_model(mapping.model_label(spec["model"]))
        except (LookupError, ValueError):
            continue
        uid = f"django_klaviyo_catalog_{model._meta.label_lower}"
        post_save.connect(_saved, sender=model, dispatch_uid=f"{uid}_save")
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"{uid}_delete")


def _guarded(build: Any, instance: Any, section: str, using: str) -> list[OutboxRow]:
    try:
        return build()  # type: ignore[no-any-return]
    except KlaviyoValidationError as exc:
        # Kept as a dead row naming the field (the admin and the dashboard count it; it
        # logs a warning), in the save's transaction: Klaviyo's copy is not updated.
        record_refused(
            mapping.SECTIONS[section],
            {
                "section": section,
                "object": source_label(instance),
                **_external_id(instance, section),
            },
            exc,
            source=source_label(instance),
            using=using,
            account=_account_name(instance),
        )
    except DatabaseError:
        raise
    except Exception as exc:
        raise_or_log(exc, logger, "django-klaviyo: catalog mapping of %r failed.", instance)
    return []


def _external_id(instance: Any, section: str) -> dict[str, str]:
    try:
        return {"external_id": mapping.external_id_of(instance, section)}
    except Exception:  # the id itself may be what the mapping gets wrong
        return {}


def _account_name(instance: Any) -> str:
    try:
        return accounts.account_for(instance) or ""
    except KlaviyoValidationError:
        return ""


def _write(rows: list[OutboxRow], instance: Any, using: str) -> None:
    if not rows:
        return
    try:
        enqueue_rows(rows, using=using, account=accounts.account_for(instance))
    except KlaviyoValidationError as exc:
        if exc.field == "account":
            # No account to send to: kept as a dead row naming why, like any refused save.
            payload = {"rows": [row.payload for row in rows]}
            record_refused(rows[0].kind, payload, exc, source=source_label(instance), using=using)
            return
        logger.warning(
            "django-klaviyo: catalog row for %r refused: %s (field %s); Klaviyo's "
            "catalog is not updated.",
            instance,
            exc,
            exc.field,
        )


def _saved(sender: Any, instance: Any, created: bool, raw: bool = False, **kw: Any) -> None:
    if raw or not klaviyo_settings.ENABLED:  # loaddata: fixtures are not store changes
        return
    using = kw.get("using") or "default"
    rows: list[OutboxRow] = []
    for section in mapping.sections_for(sender):
        rows += _guarded(
            lambda s=section: mapping.upsert_rows(instance, s, create=created),
            instance,
            section,
            using,
        )
    _write(rows, instance, using)


def _deleted(sender: Any, instance: Any, **kw: Any) -> None:
    if not klaviyo_settings.ENABLED:
        return
    # Variants before their item, so Klaviyo is asked about each only once.
    order = {"VARIANTS": 0, "ITEMS": 1, "CATEGORIES": 2}
    sections = sorted(mapping.sections_for(sender), key=order.__getitem__)
    using = kw.get("using") or "default"
    rows: list[OutboxRow] = []
    for section in sections:
        rows += _guarded(
            lambda s=section: [mapping.delete_row(instance, s)], instance, section, using
        )
    _write(rows, instance, using)
