"""Save receivers of the tracked models (``KLAVIYO["TRACKED_MODELS"]``).

``connect()`` (called from ``AppConfig.ready``) connects, for each usable entry:
``post_init`` remembers the loaded status; ``post_save``, when the save moved the status
(or created the object), asks the entry's mapper for events and writes them, with the
profile mirror (``profile_properties``) as a profile upsert, in the save's transaction.

Failure policy: the order receivers' (``django_klaviyo.orders.receivers``). What the
mapper or the rules refuse is a dead ``invalid_on_save`` row with the reason (a crashed
mapper: ``mapper_error``, re-raised when DEBUG is on); database errors are not swallowed.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models.signals import post_init, post_save

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders.placement import bad_phone, enqueue_order_events
from django_klaviyo.outbox import transitions
from django_klaviyo.outbox.refused import keep_refused_specs, run_mapper
from django_klaviyo.profiles.receivers import upsert_or_keep_refused
from django_klaviyo.tracking import config
from django_klaviyo.tracking.config import Tracked
from django_klaviyo.tracking.mapper import mirrored_profile

STATUS_SNAPSHOT = "_klaviyo_loaded_tracked_status"


def _uid(model: Any, what: str) -> str:
    return f"django_klaviyo_tracked_{what}_{model._meta.label_lower}"


def connect() -> list[Any]:
    """Connect the receivers of every tracked model; safe to call more than once.
    Returns the models connected."""
    try:
        models = list(config.tracked_models())
    except ImproperlyConfigured:
        return []  # KLAVIYO is not a dict: django_klaviyo.E010
    for model in models:
        post_init.connect(_post_init, sender=model, dispatch_uid=_uid(model, "init"))
        post_save.connect(_post_save, sender=model, dispatch_uid=_uid(model, "save"))
    return models


def disconnect(model: Any) -> None:
    """Undo :func:`connect` for ``model`` (a test changing TRACKED_MODELS)."""
    post_init.disconnect(sender=model, dispatch_uid=_uid(model, "init"))
    post_save.disconnect(sender=model, dispatch_uid=_uid(model, "save"))


def _post_init(sender: Any, instance: Any, **kwargs: Any) -> None:
    tracked = config.tracked(sender)
    if tracked is not None:
        transitions.remember(instance, tracked.status_attname, STATUS_SNAPSHOT)


def _post_save(
    sender: Any,
    instance: Any,
    created: bool,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    tracked = config.tracked(sender)
    if tracked is None:
        return  # no longer in TRACKED_MODELS
    moved, previous = transitions.transition(
        instance,
        tracked.status_attname,
        STATUS_SNAPSHOT,
        created=created,
        update_fields=update_fields,
        name=tracked.status_field,
    )
    if raw or not moved or not klaviyo_settings.ENABLED:
        return
    specs = run_mapper(
        tracked.where("mapper"),
        instance,
        previous,
        created,
        mapper=tracked.mapper_function(),
        kind=OutboxEvent.Kind.EVENT,
        using=using,
    )
    if specs:
        keep_refused_specs(
            specs,
            instance,
            # The order events' writer: the event rules, and a phone number that is not
            # E.164 left out (with a note on the row) when other identifiers remain.
            lambda some, account: enqueue_order_events(
                some, instance, using=using, objects=False, account=account
            ),
            using=using,
        )
    mirror(instance, tracked, created=created, using=using)


def mirror(instance: Any, tracked: Tracked, *, created: bool, using: str | None) -> None:
    """The profile upsert of the entry's ``profile_properties``, unless the latest one
    queued for the profile says the same (``profiles.receivers.upsert_or_keep_refused``,
    the user receiver's writer); a refused one is a dead row."""
    profile = run_mapper(
        tracked.where("profile_properties"),
        instance,
        mapper=lambda obj: mirrored_profile(obj, tracked),
        kind=OutboxEvent.Kind.PROFILE_UPSERT,
        using=using,
    )
    if profile and profile.get("phone_number") and bad_phone(profile):
        # Left out as from the events (whose row notes it), so the mirror still lands.
        profile = {k: v for k, v in profile.items() if k != "phone_number"}
    if profile:
        upsert_or_keep_refused(profile, instance, created=created, using=using)
