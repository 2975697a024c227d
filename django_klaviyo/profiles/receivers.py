"""Save receivers of AUTH_USER_MODEL: a user's Klaviyo-relevant changes become profile
upserts.

``connect()`` (called from ``AppConfig.ready``; TRACK_USERS is read at save time):
``post_init`` remembers the loaded field values (a cheap dict copy, no mapper call);
``post_save`` maps the user with USER_PROFILE_MAPPER and enqueues a profile upsert only
when the mapped profile differs from the mapping of the remembered values, and keeps the
user's KlaviyoProfileLink's identifiers current. Failures follow the save receivers'
policy (``django_klaviyo.orders.receivers``): a refused profile is a dead row, never a
broken save.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.signals import post_init, post_save

from django_klaviyo import accounts
from django_klaviyo.conf import klaviyo_settings, resolve_model
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import KlaviyoProfileLink, OutboxEvent
from django_klaviyo.outbox import OutboxRow, build_profile_upsert, enqueue_rows, payload_digest
from django_klaviyo.outbox.refused import record_refused, run_mapper, source_label
from django_klaviyo.rules.identifiers import PROFILE_IDENTIFIERS, profile_key

logger = logging.getLogger("django_klaviyo.receivers")

FIELDS_SNAPSHOT = "_klaviyo_loaded_fields"


def connect() -> None:
    """Connect the user receivers; safe to call more than once."""
    user_model = resolve_model(settings.AUTH_USER_MODEL)
    if user_model is not None:
        post_init.connect(
            _user_post_init, sender=user_model, dispatch_uid="django_klaviyo_user_init"
        )
        post_save.connect(
            _user_post_save, sender=user_model, dispatch_uid="django_klaviyo_user_save"
        )


def _field_values(instance: Any) -> dict[str, Any]:
    names = _concrete_attnames(type(instance))
    values = instance.__dict__
    return {name: values[name] for name in names if name in values}


_ATTNAMES: dict[type, tuple[str, ...]] = {}


def _concrete_attnames(model: type) -> tuple[str, ...]:
    names = _ATTNAMES.get(model)
    if names is None:
        names = tuple(f.attname for f in model._meta.concrete_fields)  # type: ignore[attr-defined]
        _ATTNAMES[model] = names
    return names


def _user_post_init(sender: Any, instance: Any, **kwargs: Any) -> None:
    instance.__dict__[FIELDS_SNAPSHOT] = _field_values(instance)


def _user_post_save(
    sender: Any,
    instance: Any,
    created: bool,
    raw: bool = False,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    loaded = instance.__dict__.get(FIELDS_SNAPSHOT)
    current = _field_values(instance)
    instance.__dict__[FIELDS_SNAPSHOT] = current
    if raw or not klaviyo_settings.ENABLED or not klaviyo_settings.TRACK_USERS:
        return
    if not created and loaded == current:
        return
    new = run_mapper(
        "USER_PROFILE_MAPPER", instance, kind=OutboxEvent.Kind.PROFILE_UPSERT, using=using
    )
    if not new:
        return
    old = None
    if not created and loaded is not None:
        # Map the values as loaded, on a copy, to see whether Klaviyo-relevant data changed
        # (a last_login update maps to the same profile and enqueues nothing).
        previous = copy.copy(instance)
        previous.__dict__.update(loaded)
        old = run_mapper("USER_PROFILE_MAPPER", previous)
        if old == new:
            return
    with transaction.atomic(using=using, savepoint=False):
        row = upsert_or_keep_refused(new, instance, created=created, using=using)
        if row is not None and _identifiers(new) != _identifiers(old):
            _update_profile_link(instance, row.payload["profile"], using=using)


def upsert_or_keep_refused(
    profile: dict[str, Any], instance: Any, *, created: bool, using: str | None
) -> OutboxRow | None:
    """Enqueue a profile upsert of ``profile`` made on a save of ``instance`` (a user, or a
    tracked model's mirror) with :func:`enqueue_profile_upsert`; returns its row, or None
    when it was refused and kept as a dead row with the reason."""
    with transaction.atomic(using=using, savepoint=False):
        try:
            # Refused before any write (the size check runs before the INSERT); caught
            # inside the block so the store's transaction is not marked for rollback.
            row = build_profile_upsert(profile)
            account = accounts.account_for(instance)
            enqueue_profile_upsert(row, instance, created=created, using=using, account=account)
        except KlaviyoValidationError as exc:
            source = source_label(instance)
            record_refused(
                OutboxEvent.Kind.PROFILE_UPSERT,
                {"profile": profile},
                exc,
                source=source,
                using=using,
            )
            return None
    return row


def _identifiers(profile: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (profile or {}).items() if k in PROFILE_IDENTIFIERS}


def enqueue_profile_upsert(
    row: Any, user: Any, *, created: bool, using: str | None, account: str = ""
) -> None:
    """Enqueue unless the latest upsert already queued for this profile carries the same
    payload. The dedupe key names that latest row, so two transactions racing the same
    change insert one row, while A→B→A→B still enqueues every change."""
    key = profile_key(row.payload["profile"])
    latest = None
    if not created:
        latest = (
            OutboxEvent.objects.using(using)
            .filter(kind=OutboxEvent.Kind.PROFILE_UPSERT, profile_key=key, account=account)
            .order_by("-created_at")
            .values_list("id", "payload", "status")
            .first()
        )
        if latest and latest[1] == row.payload and latest[2] != OutboxEvent.Status.DEAD:
            return
    after = latest[0].hex if latest else "first"
    dedupe_key = (
        f"profile_upsert:{user._meta.label_lower}:{user.pk}:{after}:{payload_digest(row.payload)}"
    )
    enqueue_rows([replace(row, dedupe_key=dedupe_key)], using=using, account=account)


def _update_profile_link(user: Any, profile: dict[str, Any], *, using: str | None) -> None:
    identifiers = {
        "email": profile.get("email", ""),
        "phone_number": profile.get("phone_number", ""),
        "external_id": profile.get("external_id", ""),
    }
    links = KlaviyoProfileLink.objects.using(using)
    if links.filter(user=user).update(**identifiers):
        return
    # A guest who checked out with this email and now has an account: adopt that link.
    guest = links.filter(user__isnull=True).best_match({"email": identifiers["email"]})
    if guest is not None and links.filter(pk=guest.pk, user__isnull=True).update(
        user=user, **identifiers
    ):
        return
    try:
        with transaction.atomic(using=using):
            links.create(user=user, **identifiers)
    except IntegrityError:
        # Another transaction linked this user first; theirs is as good as ours.
        logger.info("django-klaviyo: profile link for user %s already exists.", user.pk)
