"""Save receivers that turn store changes into outbox rows.

``connect_receivers()`` (called from ``AppConfig.ready``) connects:

* the ORDER_MODEL (``KLAVIYO["ORDER_MODEL"] = "app_label.Model"``; nothing when unset or
  not installed, which the system checks report): ``post_init`` remembers the loaded
  status, ``post_save`` asks ORDER_EVENTS_MAPPER for events when the status changed
  (or the order was created) and enqueues them in one INSERT;
* ``ORDER_PLACED_SIGNAL`` (a store's "order placed" signal, sent after the lines exist):
  enqueues the Placed Order through ``django_klaviyo.orders``, as ``order_placed()`` does;
* AUTH_USER_MODEL (read at save time: TRACK_USERS): ``post_init`` remembers the loaded
  field values (a cheap dict copy, no mapper call); ``post_save`` maps the user with
  USER_PROFILE_MAPPER and enqueues a profile upsert only when the mapped profile differs
  from the mapping of the remembered values, and keeps the user's KlaviyoProfileLink's
  identifiers current.

Failure policy: the store's save must not depend on Klaviyo, and nothing is dropped.
What a mapper or the rulebook refuses (``KlaviyoValidationError``: bad email, bad
currency, nesting too deep) is kept as a dead outbox row with the reason
(``django_klaviyo.invalid_rows``), and the valid events of the same save are enqueued as
usual. Any other mapper error is re-raised when ``settings.DEBUG`` is on (so developers
see it) and otherwise logged with its traceback and kept as a dead row too. Database
errors while writing the outbox row are NOT swallowed: the row is part of the store's
transaction, and committing the order without it would silently lose the event.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models.signals import post_init, post_save

from django_klaviyo import accounts, orders
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.identifiers import PROFILE_IDENTIFIERS, profile_key
from django_klaviyo.invalid_rows import record_refused, source_label
from django_klaviyo.models import KlaviyoProfileLink, OutboxEvent
from django_klaviyo.outbox import (
    build_profile_upsert,
    enqueue_rows,
    payload_digest,
)

logger = logging.getLogger(__name__)

_STATUS_SNAPSHOT = "_klaviyo_loaded_status"
_FIELDS_SNAPSHOT = "_klaviyo_loaded_fields"
_UNKNOWN = object()


def connect_receivers() -> None:
    """Connect the save receivers; safe to call more than once."""
    try:
        order_model = _resolve_model(klaviyo_settings.get("ORDER_MODEL", None))
    except ImproperlyConfigured:
        return  # KLAVIYO is not a dict: `check` reports django_klaviyo.E010, no traceback
    orders.connect_placed_signal()
    if order_model is not None:
        post_init.connect(
            _order_post_init, sender=order_model, dispatch_uid="django_klaviyo_order_init"
        )
        post_save.connect(
            _order_post_save, sender=order_model, dispatch_uid="django_klaviyo_order_save"
        )
    user_model = _resolve_model(settings.AUTH_USER_MODEL)
    if user_model is not None:
        post_init.connect(
            _user_post_init, sender=user_model, dispatch_uid="django_klaviyo_user_init"
        )
        post_save.connect(
            _user_post_save, sender=user_model, dispatch_uid="django_klaviyo_user_save"
        )


def _resolve_model(label: Any) -> Any:
    if not label or not isinstance(label, str):
        return None
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        # Reported by the django_klaviyo.E009 system check; startup must not crash.
        return None


def _run_mapper(
    setting: str, *args: Any, mapper: Any = None, kind: str | None = None, using: Any = None
) -> Any:
    """Call the configured mapper (or ``mapper``, already resolved from that setting)
    under the failure policy in the module docstring; returns None when the update is to
    be skipped. With ``kind``, a refusal is kept as a dead row of that kind."""
    try:
        return (mapper or klaviyo_settings.callable(setting))(*args)
    except DatabaseError:
        raise
    except Exception as exc:
        if not isinstance(exc, KlaviyoValidationError):
            if settings.DEBUG:
                raise
            logger.exception("django-klaviyo: %s failed for %s.", setting, type(args[0]).__name__)
        if kind is not None:
            source = source_label(args[0])
            refused = {"mapper": setting, "source": source}
            record_refused(kind, refused, exc, source=source, using=using)
        else:
            logger.warning("django-klaviyo: %s failed: %s", setting, exc)
    return None


# --- orders ---------------------------------------------------------------------------


def _order_post_init(sender: Any, instance: Any, **kwargs: Any) -> None:
    # Deferred status: unknown; the fixed dedupe keys keep a re-sent event out.
    field = klaviyo_settings.ORDER_STATUS_FIELD
    instance.__dict__[_STATUS_SNAPSHOT] = instance.__dict__.get(field, _UNKNOWN)


def _order_post_save(
    sender: Any,
    instance: Any,
    created: bool,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    field = klaviyo_settings.ORDER_STATUS_FIELD
    previous = instance.__dict__.get(_STATUS_SNAPSHOT, _UNKNOWN)
    current = instance.__dict__.get(field, _UNKNOWN)
    instance.__dict__[_STATUS_SNAPSHOT] = current
    if raw or not klaviyo_settings.ENABLED:
        return
    if not created:
        if update_fields is not None and field not in update_fields:
            return
        if previous == current:
            return
    # One mapper and one enqueue path with order_placed() and ORDER_PLACED_SIGNAL.
    try:
        mapper, _own = orders.order_mapper()
    except ImproperlyConfigured:
        mapper = None  # _run_mapper applies the failure policy
    specs = _run_mapper(
        "ORDER_EVENTS_MAPPER",
        instance,
        None if previous is _UNKNOWN else previous,
        created,
        mapper=mapper,
        kind=OutboxEvent.Kind.EVENT,
        using=using,
    )
    if specs:
        enqueue_order_events(specs, instance, using=using)


def enqueue_order_events(specs: list[dict[str, Any]], order: Any, *, using: str | None) -> None:
    """Enqueue ``specs`` (``orders.enqueue_order_events``) for the order's Klaviyo account;
    if any is refused (or no account can be named), each valid one is enqueued and each
    refused one kept as a dead row."""
    every = specs if isinstance(specs, (list, tuple)) else [specs]
    try:
        account = accounts.account_for(order)
    except KlaviyoValidationError as exc:
        # An unknown account or a failing ACCOUNT_RESOLVER: the save goes on, and the
        # events are kept dead with the reason (docs/accounts.md).
        for spec in every:
            record_refused(
                OutboxEvent.Kind.EVENT, spec, exc, source=source_label(order), using=using
            )
        return
    try:
        # Rows are checked before their INSERT runs, so a refusal leaves nothing behind.
        orders.enqueue_order_events(specs, order, using=using, objects=False, account=account)
        return
    except KlaviyoValidationError:
        pass
    for spec in every:
        try:
            # Dedupe keys keep a row the first attempt already wrote from doubling.
            orders.enqueue_order_events([spec], order, using=using, objects=False, account=account)
        except KlaviyoValidationError as exc:
            record_refused(
                OutboxEvent.Kind.EVENT,
                spec,
                exc,
                source=source_label(order),
                using=using,
                account=account,
            )


# --- users ----------------------------------------------------------------------------


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
    instance.__dict__[_FIELDS_SNAPSHOT] = _field_values(instance)


def _user_post_save(
    sender: Any,
    instance: Any,
    created: bool,
    raw: bool = False,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    loaded = instance.__dict__.get(_FIELDS_SNAPSHOT)
    current = _field_values(instance)
    instance.__dict__[_FIELDS_SNAPSHOT] = current
    if raw or not klaviyo_settings.ENABLED or not klaviyo_settings.TRACK_USERS:
        return
    if not created and loaded == current:
        return
    new = _run_mapper(
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
        old = _run_mapper("USER_PROFILE_MAPPER", previous)
        if old == new:
            return
    with transaction.atomic(using=using, savepoint=False):
        try:
            # Refused before any write (the size check runs before the INSERT); caught
            # inside the block so the store's transaction is not marked for rollback.
            row = build_profile_upsert(new)
            account = accounts.account_for(instance)
            enqueue_profile_upsert(row, instance, created=created, using=using, account=account)
        except KlaviyoValidationError as exc:
            source = source_label(instance)
            record_refused(
                OutboxEvent.Kind.PROFILE_UPSERT, {"profile": new}, exc, source=source, using=using
            )
            return
        if _identifiers(new) != _identifiers(old):
            _update_profile_link(instance, row.payload["profile"], using=using)


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
