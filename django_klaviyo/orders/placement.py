"""One way from an order to its outbox rows, shared by the save receiver, the
``ORDER_PLACED_SIGNAL`` receiver and ``django_klaviyo.order_placed()``: the same mapper
(``ORDER_EVENTS_MAPPER``), the same dedupe keys, the same guard against empty orders.

A Placed Order mapped with no value or no items is not sent as an empty event: its row is
stored dead, with the reason in ``last_error_detail`` (visible in the admin), so a wrong
mapping shows on the first order instead of silently feeding Klaviyo empty events. Inside
a transaction, that row awaits the order's lines (``django_klaviyo.orders.pending``):
:func:`complete_awaiting` replaces it when a line is saved; ``order_placed()`` replaces
such a dead row whenever it is called.

Every refusal leaves a row: the ``ORDER_PLACED_SIGNAL`` receiver and ``order_placed()``
keep what the mapper or the rules refuse as a dead row naming the field
(``django_klaviyo.outbox.refused``); ``order_placed()`` raises to its caller as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError
from django.utils import timezone
from django.utils.module_loading import import_string

from django_klaviyo import accounts
from django_klaviyo.conf import DEFAULTS, klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import fields as mapping
from django_klaviyo.orders import mappers as ecommerce
from django_klaviyo.orders import pending
from django_klaviyo.orders import stats as order_stats
from django_klaviyo.outbox import account_dedupe_key, build_events, enqueue_many, enqueue_rows
from django_klaviyo.outbox.refused import raise_or_log, record_refused, source_label
from django_klaviyo.rules.identifiers import normalize_phone_number

logger = logging.getLogger(__name__)

EMPTY_ORDER_CODE = "empty_placed_order"


def order_mapper() -> tuple[Callable[..., Any], bool]:
    """The configured ORDER_EVENTS_MAPPER, and whether it is the package's own (resolved
    once until a setting changes: every save of an order asks)."""
    return klaviyo_settings.memo("order_mapper", _order_mapper)


def _order_mapper() -> tuple[Callable[..., Any], bool]:
    configured = klaviyo_settings.get("ORDER_EVENTS_MAPPER")
    default = ecommerce.default_order_events
    if configured == DEFAULTS["ORDER_EVENTS_MAPPER"] or configured is default:
        return default, True
    return klaviyo_settings.callable("ORDER_EVENTS_MAPPER"), False


def placed_order_specs(order: Any) -> list[dict[str, Any]]:
    """The Placed Order specs of ``order`` from ORDER_EVENTS_MAPPER, whatever its status
    transition: the default mapper builds them directly; a custom one is asked for the
    order's current state and its Placed Order kept."""
    mapper, own = order_mapper()
    if own:
        return ecommerce.placed_order_events(order)
    placed = mapping.metric("placed_order")
    specs = [
        spec
        for spec in (mapper(order, None, False) or [])
        if isinstance(spec, Mapping) and spec.get("metric") == placed
    ]
    if not specs:
        raise KlaviyoValidationError(
            f"ORDER_EVENTS_MAPPER returned no {placed!r} event for this order; a custom "
            "mapper must return it for a placed order whose previous status is None.",
            field="order",
        )
    return specs


def enqueue_order_events(
    specs: list[dict[str, Any]],
    order: Any,
    *,
    using: str | None,
    backfill: bool = False,
    objects: bool = True,
    account: str | None = None,
    stats: bool = True,
) -> list[OutboxEvent]:
    """Clean ``specs`` with the event rules and enqueue them; an empty Placed Order
    becomes a dead row naming what is missing. ``objects``: return the rows written (the
    save receiver's hot path needs none). ``account``: the Klaviyo account (None: what
    ACCOUNT_RESOLVER says of ``order``). ``stats``: refresh the customer's order stats
    (``django_klaviyo.orders.stats``; off for a line save, which changes no total)."""
    stored = accounts.account_for(order, account=account)
    if backfill:
        specs = [{**spec, "backfill": True} for spec in specs]
    notes: dict[int, str] = {}
    for index, spec in enumerate(specs):
        profile = spec.get("profile") if isinstance(spec, Mapping) else None
        if isinstance(profile, Mapping) and profile.get("phone_number"):
            note = bad_phone(profile)
            if note:
                notes[index] = note
                kept = {k: v for k, v in profile.items() if k != "phone_number"}
                specs = [*specs[:index], {**spec, "profile": kept}, *specs[index + 1 :]]
    start = timezone.now() if notes else None
    if notes:
        objects = True  # the rows are needed to write their note
    build = build_events
    empty = [(spec, ecommerce.empty_placed_order(spec)) for spec in specs]
    good = [spec for spec, reason in empty if reason is None]
    written: list[OutboxEvent] = []
    if good:
        rows = build(good)
        if not objects:
            enqueue_rows(rows, using=using, account=stored)
        else:
            written += enqueue_many(rows, using=using, account=stored)
    for spec, reason in empty:
        if reason is not None:
            written += _enqueue_dead(build([spec]), order, reason, using=using, account=stored)
    if notes:
        _note_rows(written, [(specs[i], note) for i, note in notes.items()], using, start)
    if stats:
        order_stats.refresh_after(specs, order, using=using, account=stored)
    return written


def bad_phone(profile: Mapping[str, Any]) -> str | None:
    """Why the profile's phone_number cannot be sent, when other identifiers can carry
    the event (None: it is E.164, or it is the only identifier, so the rules refuse it)."""
    others = any(profile.get(key) for key in ("email", "external_id", "anonymous_id", "id"))
    if not others:
        return None
    try:
        normalize_phone_number(profile["phone_number"])
    except KlaviyoValidationError as exc:
        return f"phone_number left out: {exc} The event was sent on the other identifiers."
    return None


def _note_rows(
    written: list[OutboxEvent],
    noted: list[tuple[dict[str, Any], str]],
    using: str | None,
    start: Any,
) -> None:
    """Write each note on the row its spec became (only rows this call inserted: an
    older row holding the dedupe key is left alone)."""
    for spec, note in noted:
        rows = [
            row
            for row in written
            if row.metric == spec.get("metric") and row.unique_id == str(spec.get("unique_id"))
        ]
        OutboxEvent.objects.using(using or DEFAULT_DB_ALIAS).filter(
            pk__in=[row.pk for row in rows], created_at__gte=start, outcome_note=""
        ).update(outcome_note=note[:255])


def _enqueue_dead(
    rows: list[Any], order: Any, reason: str, *, using: str | None, account: str
) -> list[Any]:
    start = timezone.now()
    written = enqueue_many(rows, using=using, account=account)
    # Only rows this call inserted: a row already holding the dedupe key (an earlier,
    # complete Placed Order) is returned too, and must stay as it is.
    stored = OutboxEvent.objects.using(using or DEFAULT_DB_ALIAS)
    ids = list(
        stored.filter(pk__in=[row.pk for row in written], created_at__gte=start).values_list(
            "pk", flat=True
        )
    )
    stored.filter(pk__in=ids).update(
        status=OutboxEvent.Status.DEAD,
        last_error_code=EMPTY_ORDER_CODE,
        last_error_detail=f"{order._meta.label} {order.pk}: {reason}",
    )
    if len(ids) == 1 and pending.expect_lines(order, ids[0], using):
        logger.info(
            "django-klaviyo: %s %s: %s The row awaits the order's lines in this transaction.",
            order._meta.label,
            order.pk,
            reason,
        )
    elif ids:
        logger.error(
            "django-klaviyo: %s %s: %s The row is stored dead instead of sent.",
            order._meta.label,
            order.pk,
            reason,
        )
    return written


def complete_awaiting(entry: pending.Awaiting, *, using: str | None, stats: bool = True) -> None:
    """Rebuild the Placed Order of an order awaiting its lines and replace its row (the
    dead empty one, or the one an earlier line save wrote in this transaction). Raises
    what the mapper or the rules raise; the caller keeps it as a dead row."""
    alias = using or DEFAULT_DB_ALIAS
    order = entry.order
    pending.forget(order, alias)
    deleted, _ = (
        OutboxEvent.objects.using(alias)
        .filter(
            pk=entry.row_id,
            status__in=(OutboxEvent.Status.PENDING, OutboxEvent.Status.DEAD),
            attempts=0,
        )
        .delete()
    )
    if not deleted:
        return  # its transaction rolled back, or the row moved on: nothing to replace
    written = enqueue_order_events(placed_order_specs(order), order, using=alias, stats=stats)
    placed = mapping.metric("placed_order")
    rows = [row for row in written if row.metric == placed]
    if len(rows) == 1 and rows[0].status == OutboxEvent.Status.PENDING:
        pending.expect_lines(order, rows[0].pk, alias)


def _replace_empty(specs: list[dict[str, Any]], order: Any, alias: str, account: str) -> None:
    """Delete the dead, never-sent empty Placed Order rows ``specs`` would dedupe against,
    so a complete Placed Order takes their place."""
    keys = [
        account_dedupe_key(spec["dedupe_key"], account)
        for spec in specs
        if isinstance(spec, Mapping) and spec.get("dedupe_key")
    ]
    if keys:
        OutboxEvent.objects.using(alias).filter(
            dedupe_key__in=keys,
            status=OutboxEvent.Status.DEAD,
            last_error_code=EMPTY_ORDER_CODE,
        ).delete()
        pending.forget(order, alias)


def enqueue_placed_order(
    order: Any,
    *,
    using: str | None = None,
    backfill: bool = False,
    account: str | None = None,
) -> list[Any]:
    """Enqueue ``order``'s Placed Order (with its Ordered Products); see api.order_placed.
    What the mapper or the rules refuse is kept as a dead row naming the field, and
    raised to the caller."""
    alias = using or order._state.db or DEFAULT_DB_ALIAS
    specs: list[dict[str, Any]] = []
    try:
        specs = placed_order_specs(order)
        stored = accounts.account_for(order, account=account)
        _replace_empty(specs, order, alias, stored)
        return enqueue_order_events(specs, order, using=alias, backfill=backfill, account=stored)
    except KlaviyoValidationError as exc:
        keep_refused(order, exc, alias, account=account, specs=specs)
        raise


def keep_refused(
    order: Any,
    exc: BaseException,
    using: str | None,
    *,
    account: str | None = None,
    specs: list[dict[str, Any]] | None = None,
) -> None:
    """A dead row for an order whose Placed Order could not be built or was refused: the
    Placed Order as mapped (or the mapping's name when there is none), the reason naming
    the field in ``last_error_detail``."""
    source = source_label(order)
    placed = mapping.metric("placed_order")
    found = [s for s in specs or () if isinstance(s, Mapping) and s.get("metric") == placed]
    payload = found[0] if found else {"mapper": "ORDER_EVENTS_MAPPER", "order": source}
    payload = {"metric": placed, **payload}
    stored = ""
    if getattr(exc, "field", None) != "account":
        try:
            stored = accounts.account_for(order, account=account)
        except KlaviyoValidationError:
            stored = ""
    record_refused(OutboxEvent.Kind.EVENT, payload, exc, source=source, using=using, account=stored)


# --- ORDER_PLACED_SIGNAL --------------------------------------------------------------


def connect_placed_signal() -> None:
    """Connect ``ORDER_PLACED_SIGNAL`` (a Signal or its dotted path) when set."""
    signal = klaviyo_settings.get("ORDER_PLACED_SIGNAL")
    if not signal:
        return
    if isinstance(signal, str):
        try:
            signal = import_string(signal)
        except ImportError:
            return  # reported by the django_klaviyo.E035 check
    connect = getattr(signal, "connect", None)
    if callable(connect):
        connect(_on_order_placed, weak=False, dispatch_uid="django_klaviyo_order_placed")


def _on_order_placed(sender: Any, order: Any = None, **kwargs: Any) -> None:
    """The store's "order placed" signal: enqueue the Placed Order in the sender's
    transaction. Like the save receiver, it never breaks the store's checkout for
    marketing data (see django_klaviyo.orders.receivers): what is refused or fails is
    kept as a dead row with the reason."""
    if order is None or not klaviyo_settings.ENABLED:
        return
    try:
        enqueue_placed_order(order)
    except KlaviyoValidationError:
        return  # enqueue_placed_order() kept it as a dead row
    except DatabaseError:
        raise
    except Exception as exc:
        raise_or_log(exc, logger, "django-klaviyo: mapping order %s failed; kept dead.", order.pk)
        keep_refused(order, exc, order._state.db)
