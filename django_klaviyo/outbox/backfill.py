"""History into the outbox: orders, customers and consent that predate the integration.

A backfill walks its source table in primary-key order, one batch at a time (keyset
pagination: memory stays flat however long the history), and writes each batch's outbox
rows and its checkpoint in ONE transaction, so a crash or Ctrl-C loses at most the batch
in flight and a rerun continues after the last committed one.

Tracked models (``tracked:<app_label.Model>``, ``KLAVIYO["TRACKED_MODELS"]``) backfill
each object's current status's event, as its mapper builds it for an object created in
that status, with the live path's dedupe key, and its profile mirror.

Order rows carry the live path's unique_ids and dedupe keys
(``django_klaviyo.orders.placement``), so an order that is backfilled and also saved live
is enqueued once, and Klaviyo records an event once even if both rows were sent. Events
are marked ``backfill`` (recorded, no flows fire).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, models, transaction
from django.utils import timezone

from django_klaviyo import accounts, outbox
from django_klaviyo.client.ratelimit import OPERATION_LIMITS
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import BackfillCheckpoint
from django_klaviyo.orders import fields as mapping
from django_klaviyo.orders import mappers as ecommerce
from django_klaviyo.orders import placement as orders
from django_klaviyo.rules import limits
from django_klaviyo.rules.events import expansion_count
from django_klaviyo.tracking import config as tracking
from django_klaviyo.tracking.mapper import mirrored_profile

SOURCES = ("orders", "customers", "consent")
# A tracked model's source: "tracked:shop.Subscription".
TRACKED_PREFIX = "tracked:"
ORDER_STATES = ("placed", "fulfilled", "cancelled", "refunded")


@dataclass(frozen=True)
class Source:
    """What one backfill reads and how it becomes outbox rows."""

    name: str
    model: type[models.Model]
    date_field: str | None
    build: Callable[[Any], list[outbox.OutboxRow]]
    prefetch: tuple[str, ...] = ()
    filter: dict[str, Any] = field(default_factory=dict)
    # The Klaviyo operation the rows end up in and how many items one request carries.
    operation: str = "bulk_create_events"
    items_per_request: int = limits.EVENTS_PER_REQUEST


def _first_field(model: type[models.Model], names: tuple[str, ...]) -> str | None:
    existing = {f.name for f in model._meta.concrete_fields}
    return next((n for n in names if n in existing), None)


def _mark_backfill(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**spec, "backfill": True} for spec in specs]


def _order_statuses() -> dict[str, tuple[Any, ...]]:
    return {key: mapping.status_values(key) for key in ORDER_STATES}


def order_events(order: Any) -> list[dict[str, Any]]:
    """The events a live order would have produced by now, from ORDER_EVENTS_MAPPER:
    Placed Order for every order that got that far, and its current status event
    (Fulfilled, Cancelled, Refunded), as the mapper builds it for a move from placed."""
    statuses = _order_statuses()
    status = ecommerce.order_status(order)
    if not any(status in values for values in statuses.values()):
        return []
    specs = list(orders.placed_order_specs(order))
    if status not in statuses["placed"]:
        mapper, _ = orders.order_mapper()
        placed = mapping.metric("placed_order")
        specs += [
            spec
            for spec in mapper(order, statuses["placed"][0], False) or []
            if spec.get("metric") != placed
        ]
    for spec in specs:
        reason = ecommerce.empty_placed_order(spec)
        if reason:
            raise KlaviyoValidationError(reason, field="order")
    return _mark_backfill(specs)


def _order_rows(order: Any) -> list[outbox.OutboxRow]:
    return outbox.build_events(order_events(order))


def _customer_rows(user: Any) -> list[outbox.OutboxRow]:
    profile = klaviyo_settings.callable("USER_PROFILE_MAPPER")(user)
    if not profile:
        return []
    row = outbox.build_profile_upsert(profile)
    # A rerun (or --restart) of the same state enqueues nothing more.
    key = f"profile_upsert:{user._meta.label_lower}:{user.pk}:backfill:"
    return [replace(row, dedupe_key=key + outbox.payload_digest(row.payload))]


def _consent_rows(user: Any) -> list[outbox.OutboxRow]:
    """``BACKFILL_CONSENT_MAPPER(user)`` -> ``[{"profile", "channels", "list_id",
    "consented_at", "custom_source"}]``: historical consent, imported without double
    opt-in (``consented_at`` in the past)."""
    rows = []
    key = f"backfill:consent:{user._meta.label_lower}:{user.pk}:"
    for spec in klaviyo_settings.callable("BACKFILL_CONSENT_MAPPER")(user) or []:
        row = outbox.build_subscribe(
            spec.get("profile"),
            channels=spec.get("channels", ("email",)),
            list_id=spec.get("list_id"),
            custom_source=spec.get("custom_source"),
            consented_at=spec.get("consented_at"),
        )
        rows.append(replace(row, dedupe_key=key + outbox.payload_digest(row.payload)))
    return rows


def _tracked_rows(obj: Any, entry: tracking.Tracked) -> list[outbox.OutboxRow]:
    """The event of ``obj``'s current status (its mapper asked as for an object created
    in it) and its profile mirror."""
    rows = outbox.build_events(_mark_backfill(entry.mapper_function()(obj, None, True) or []))
    profile = mirrored_profile(obj, entry)
    if profile:
        row = outbox.build_profile_upsert(profile)
        key = f"profile_upsert:{obj._meta.label_lower}:{obj.pk}:backfill:"
        rows.append(replace(row, dedupe_key=key + outbox.payload_digest(row.payload)))
    return rows


def _tracked_source(name: str) -> Source:
    label = name[len(TRACKED_PREFIX) :]
    entries = tracking.tracked_models().values()
    entry = next((e for e in entries if e.label.lower() == label.lower()), None)
    if entry is None:
        known = ", ".join(TRACKED_PREFIX + e.label for e in entries) or "none"
        raise ValueError(
            f"{label!r} is not a tracked model in KLAVIYO['TRACKED_MODELS'] (or its entry "
            f"fails manage.py check); tracked sources: {known}."
        )
    times = (entry.time,) if isinstance(entry.time, str) else ()
    return Source(
        name,
        entry.model,
        _first_field(entry.model, (*times, "created_at", "created")),
        lambda obj: _tracked_rows(obj, entry),
    )


def source(name: str) -> Source:
    """The configured source called ``name``; ValueError says what is missing."""
    if name.startswith(TRACKED_PREFIX):
        return _tracked_source(name)
    if name == "orders":
        label = klaviyo_settings.get("ORDER_MODEL", None)
        if not label:
            raise ValueError("set KLAVIYO['ORDER_MODEL'] to backfill orders.")
        model = apps.get_model(label)
        fields = ecommerce.order_fields()
        lines = fields.get("lines")
        prefetch = (lines,) if isinstance(lines, str) and hasattr(model, lines) else ()
        placed_at = fields.get("placed_at")
        names = (placed_at,) if isinstance(placed_at, str) else ()
        return Source(
            name,
            model,
            _first_field(model, (*names, "placed_at", "created_at", "created")),
            _order_rows,
            prefetch=prefetch,
            filter={
                f"{klaviyo_settings.ORDER_STATUS_FIELD}__in": [
                    value for values in _order_statuses().values() for value in values
                ]
            },
        )
    user_model = apps.get_model(settings.AUTH_USER_MODEL)
    date_field = _first_field(user_model, ("date_joined", "created_at", "created"))
    if name == "customers":
        return Source(
            name,
            user_model,
            date_field,
            _customer_rows,
            operation="bulk_import_profiles",
            items_per_request=limits.PROFILES_PER_IMPORT_JOB,
        )
    if name == "consent":
        if not klaviyo_settings.BACKFILL_CONSENT_MAPPER:
            raise ValueError(
                "set KLAVIYO['BACKFILL_CONSENT_MAPPER'] to a callable returning a user's "
                "historical consent to backfill consent."
            )
        return Source(
            name,
            user_model,
            date_field,
            _consent_rows,
            operation="bulk_subscribe_profiles",
            items_per_request=limits.PROFILES_PER_SUBSCRIBE_JOB,
        )
    raise ValueError(
        f"unknown backfill {name!r}; choose one of {', '.join(SOURCES)} or "
        f"{TRACKED_PREFIX}<app_label.Model>."
    )


def klaviyo_seconds(src: Source, items: int) -> float:
    """How long Klaviyo's steady rate limit alone needs to take ``items`` (events,
    profiles) in full bulk requests: the floor under any flusher's speed."""
    requests = math.ceil(items / src.items_per_request)
    steady = max(OPERATION_LIMITS[src.operation], key=lambda w: w.seconds)
    return requests / steady.limit * steady.seconds


def items_of(row: outbox.OutboxRow) -> int:
    """Klaviyo items a row becomes: an event and the events it expands to."""
    return 1 + expansion_count(row.payload)


@dataclass
class Progress:
    source_rows: int = 0
    outbox_rows: int = 0
    items: int = 0
    skipped: list[tuple[Any, str]] = field(default_factory=list)


class Backfill:
    """One run over one source and date range; iterate :meth:`batches` to drive it."""

    def __init__(
        self,
        name: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        batch_size: int = 1000,
        using: str = DEFAULT_DB_ALIAS,
    ) -> None:
        self.src = source(name)
        if (since or until) and not self.src.date_field:
            raise ValueError(f"{self.src.model._meta.label} has no date field for --since/--until.")
        self.since, self.until, self.batch_size, self.using = since, until, batch_size, using
        self.key = f"{name}:{_iso(since)}:{_iso(until)}"

    def queryset(self) -> models.QuerySet[Any]:
        qs = self.src.model._default_manager.using(self.using).filter(**self.src.filter)
        if self.since:
            qs = qs.filter(**{f"{self.src.date_field}__gte": self.since})
        if self.until:
            qs = qs.filter(**{f"{self.src.date_field}__lt": self.until})
        return qs.order_by("pk")

    def checkpoint(self) -> BackfillCheckpoint | None:
        return BackfillCheckpoint.objects.using(self.using).filter(name=self.key).first()

    def remaining(self) -> int:
        """Source rows after the checkpoint (one COUNT, at the start of a run)."""
        last = self._last_pk(self.checkpoint())
        qs = self.queryset()
        return (qs if last is None else qs.filter(pk__gt=last)).count()

    def _last_pk(self, cp: BackfillCheckpoint | None) -> Any:
        if cp is None or not cp.last_pk:
            return None
        return self.src.model._meta.pk.to_python(cp.last_pk)

    def restart(self) -> None:
        BackfillCheckpoint.objects.using(self.using).filter(name=self.key).delete()

    def batches(self, *, dry_run: bool = False) -> Iterator[Progress]:
        """Write one batch per step and yield the batch's figures; on a finished range,
        yield nothing. With ``dry_run`` nothing is written (rows are still built, so a
        mapping error shows up)."""
        cp = self.checkpoint()
        if cp is not None and cp.finished_at:
            return
        last = self._last_pk(cp)
        while True:
            qs = self.queryset() if last is None else self.queryset().filter(pk__gt=last)
            chunk = list(qs.prefetch_related(*self.src.prefetch)[: self.batch_size])
            if not chunk:
                break
            step = Progress(source_rows=len(chunk))
            # Rows by Klaviyo account (ACCOUNT_RESOLVER's answer for each object).
            rows: dict[str, list[outbox.OutboxRow]] = {}
            for obj in chunk:
                try:
                    built = self.src.build(obj)
                    account = accounts.account_for(obj)
                except KlaviyoValidationError as exc:
                    # One bad historical record must not stop years of history: it is
                    # reported (the command prints each and exits non-zero) and skipped.
                    step.skipped.append((obj.pk, f"{exc.field}: {exc}"))
                    continue
                rows.setdefault(account, []).extend(built)
                step.items += sum(items_of(r) for r in built)
            last = chunk[-1].pk
            if not dry_run:
                with transaction.atomic(using=self.using):
                    step.outbox_rows = sum(
                        outbox.enqueue_rows(some, using=self.using, account=account)
                        for account, some in rows.items()
                    )
                    cp = self._save_checkpoint(last, step)
            else:
                step.outbox_rows = sum(len(some) for some in rows.values())
            yield step
        if not dry_run:
            BackfillCheckpoint.objects.using(self.using).update_or_create(
                name=self.key, defaults={"finished_at": timezone.now()}
            )

    def _save_checkpoint(self, last_pk: Any, step: Progress) -> BackfillCheckpoint:
        cp, _ = BackfillCheckpoint.objects.using(self.using).get_or_create(name=self.key)
        cp.last_pk = str(last_pk)
        cp.source_rows += step.source_rows
        cp.outbox_rows += step.outbox_rows
        cp.save(update_fields=["last_pk", "source_rows", "outbox_rows", "updated_at"])
        return cp


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value else ""
