"""Order stats on the profile (``KLAVIYO["PROFILE_ORDER_STATS"]``, off by default).

After each Placed, Cancelled or Refunded Order (whichever path wrote it: the save
receiver, ``ORDER_PLACED_SIGNAL``, ``order_placed()``, ``order_refunded()``, the
backfill), the customer's ``last_order_date``, ``total_orders`` and ``lifetime_value``
(and, when named, ``first_order_date`` and ``average_order_value``) are computed from the
store's own orders and written as a ``profile_upsert`` row in the same transaction.

Which orders count (docs/mapping.md, "Order stats on the profile"): the ORDER_MODEL's
orders sharing the order's customer id (``ORDER_FIELDS["customer_id"]``) or email
(``ORDER_FIELDS["email"]``, any case) whose status is placed, fulfilled or refunded; a
cancelled order, or one in any other status (pending, draft), does not. Lifetime value is
the counted orders' totals net of refunds: a refunded-status order is worth 0; any other
is worth its total less what was refunded of it (its refund records'
``REFUND_FIELDS["amount"]`` when ``"refunds"`` names them, else the refund ledger's
Refunded Order rows), never below 0.

Coalesced: a customer has at most one stats row waiting to be sent. A later order
rewrites that row's payload in place while it is ``pending`` or ``retrying`` (no flusher
holds it: a claim makes it ``sending``), so a burst of orders sends one profile update
per flush. A row a flusher holds is never touched; the next order then writes a new row,
due once the held row's lease could have ended, so it cannot overtake it.

Concurrency: on PostgreSQL the stats are computed under a transaction-scoped advisory
lock on the profile, so two transactions placing orders for one customer take turns,
and the second reads the first's committed order (READ COMMITTED). SQLite runs one
writer at a time. A save in autocommit gets a short transaction of its own for this. The
stats query runs in a savepoint: a failure there leaves a dead row with the reason, never
a failed save.
"""

from __future__ import annotations

import logging
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from django_klaviyo import rules
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import fields as mapping
from django_klaviyo.orders import ledger
from django_klaviyo.orders.convert import iso_utc, money
from django_klaviyo.orders.mappers import order_profile
from django_klaviyo.outbox import build_profile_upsert, enqueue_many
from django_klaviyo.outbox.refused import raise_or_log, record_refused, source_label
from django_klaviyo.rules.identifiers import email_key, profile_key
from django_klaviyo.signals import outbox_ready

logger = logging.getLogger(__name__)

# Each stat and the profile property it is sent as by default (None: not sent).
STATS: dict[str, str | None] = {
    "last_order_date": "last_order_date",
    "total_orders": "total_orders",
    "lifetime_value": "lifetime_value",
    "first_order_date": None,
    "average_order_value": None,
}
# The other keys of the dict form: where the order's refund records are (None: the
# refund ledger).
OPTIONS: dict[str, Any] = {"refunds": None}
# The dedupe key of every stats row starts with this (the rest is random): it tells the
# rows apart from other profile upserts of the same profile.
KEY_PREFIX = "order-stats:"
# The advisory locks' first key (PostgreSQL's two-int form): "Klvy", so a store's own
# advisory locks on one bigint never meet ours.
LOCK_CLASS = 0x4B6C7679
IN_FLIGHT = OutboxEvent.IN_FLIGHT_STATUSES
DUE = OutboxEvent.DUE_STATUSES


@dataclass(frozen=True)
class StatsSettings:
    names: dict[str, str]  # stat -> property name, only the stats sent
    refunds: Any  # a path or callable to the order's refund records; None: the ledger


def stats_settings() -> StatsSettings | None:
    """PROFILE_ORDER_STATS as used (None: off, or not a form the E090 check accepts)."""
    return klaviyo_settings.memo("profile_order_stats", _read_settings)


def _read_settings() -> StatsSettings | None:
    given = klaviyo_settings.get("PROFILE_ORDER_STATS")
    if given is True:
        given = {}
    elif not given or not isinstance(given, Mapping):
        return None
    if any(key not in STATS and key not in OPTIONS for key in given):
        return None  # E090
    names = {**STATS, **{k: v for k, v in given.items() if k in STATS}}
    sent = {stat: name for stat, name in names.items() if name}
    if not all(isinstance(name, str) for name in sent.values()):
        return None  # E090
    return StatsSettings(names=sent, refunds=given.get("refunds"))


def trigger_metrics() -> frozenset[str]:
    """The metrics after which the stats are refreshed."""
    return klaviyo_settings.memo(
        "profile_order_stats_metrics",
        lambda: frozenset(
            mapping.metric(name) for name in ("placed_order", "cancelled_order", "refunded_order")
        ),
    )


def refresh_after(
    specs: Iterable[Any], order: Any, *, using: str | None, account: str = ""
) -> None:
    """Refresh ``order``'s customer stats when ``specs`` hold a Placed, Cancelled or
    Refunded Order and PROFILE_ORDER_STATS is on (one memoised look-up when it is off)."""
    config = stats_settings()
    if config is None or not klaviyo_settings.ENABLED:
        return
    metrics = trigger_metrics()
    if any(isinstance(s, Mapping) and s.get("metric") in metrics for s in specs):
        refresh(order, config, using=using, account=account)


def refresh(order: Any, config: StatsSettings, *, using: str | None, account: str = "") -> None:
    """Write ``order``'s customer stats, under the save receivers' failure policy: what
    fails is kept as a dead row with the reason, database errors of the writes raise.
    Outside a transaction (a save in autocommit) it opens one, so the profile's lock is
    held until its row is written."""
    alias = using or order._state.db or DEFAULT_DB_ALIAS
    if connections[alias].in_atomic_block:
        _refresh(order, config, alias, account)
    else:
        with transaction.atomic(using=alias):
            _refresh(order, config, alias, account)


def _refresh(order: Any, config: StatsSettings, alias: str, account: str) -> None:
    identifiers = stats_profile(order)
    if not identifiers:
        return  # no profile: the order's own events are refused with the reason
    payload: dict[str, Any] = {"profile": identifiers}
    try:
        key = profile_key(build_profile_upsert(identifiers).payload["profile"])
        properties = _locked_stats(order, config, key, account, alias)
        payload = {"profile": {**identifiers, "properties": properties}}
        row = build_profile_upsert(payload["profile"], dedupe_key=KEY_PREFIX + uuid.uuid4().hex)
    except DatabaseError as exc:
        if connections[alias].needs_rollback:
            raise
        _keep_refused(order, payload, exc, alias, account)
        return
    except Exception as exc:
        if not isinstance(exc, KlaviyoValidationError):
            what = source_label(order)
            raise_or_log(exc, logger, "django-klaviyo: order stats of %s failed.", what)
        _keep_refused(order, payload, exc, alias, account)
        return
    write(row, key, account=account, using=alias)


def _keep_refused(order: Any, payload: Any, exc: BaseException, alias: str, account: str) -> None:
    record_refused(
        OutboxEvent.Kind.PROFILE_UPSERT,
        {"order_stats": True, **payload},
        exc,
        source=source_label(order),
        using=alias,
        account=account,
    )


def stats_profile(order: Any) -> dict[str, Any]:
    """The profile the stats go on: the order's external_id and email (its phone number
    only when it has neither), as its events identify it."""
    profile = order_profile(order)
    kept = {k: profile[k] for k in ("external_id", "email") if profile.get(k)}
    if not kept and profile.get("phone_number"):
        kept["phone_number"] = profile["phone_number"]
    return kept


def lock_profile(key: str, account: str, alias: str) -> None:
    """PostgreSQL: hold an advisory lock on the profile until the transaction ends."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return
    digest = zlib.crc32(f"{account}\x00{key}".encode())
    objid = digest - (1 << 32) if digest >= (1 << 31) else digest
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_CLASS, objid])


def _locked_stats(
    order: Any, config: StatsSettings, key: str, account: str, alias: str
) -> dict[str, Any]:
    """The stats, read under the profile's lock, in a savepoint: a database error there
    (a mapping path the database refuses) leaves the store's transaction usable."""
    with transaction.atomic(using=alias):
        lock_profile(key, account, alias)
        return order_stats(order, config, using=alias)


# --- the stats ------------------------------------------------------------------------


def lookup(path: Any) -> str | None:
    """The ORM lookup of a dotted attribute path (None: a callable or no path)."""
    if not isinstance(path, str) or not path:
        return None
    return path.replace(".", "__")


def customer_filter(order: Any, fields: Mapping[str, Any]) -> Q:
    """The orders sharing ``order``'s customer id or email (only ``order`` when it has
    neither, or they are not queryable paths)."""
    where = Q()
    id_lookup, email_lookup = lookup(fields["customer_id"]), lookup(fields["email"])
    customer_id = mapping.resolve(order, fields["customer_id"])
    if id_lookup and customer_id not in (None, ""):
        where |= Q(**{id_lookup: customer_id})
    email = mapping.resolve(order, fields["email"])
    if email_lookup and email:
        where |= Q(**{f"{email_lookup}__iexact": str(email)})
    return where or Q(pk=order.pk)


def order_stats(order: Any, config: StatsSettings, *, using: str) -> dict[str, Any]:
    """The profile properties of ``order``'s customer, read from the store's orders."""
    model = type(order)
    fields = mapping.mapping("ORDER_FIELDS")
    status_field = klaviyo_settings.ORDER_STATUS_FIELD
    placed, fulfilled, _cancelled, refunded = mapping.status_table()
    counted = list(dict.fromkeys((*placed, *fulfilled, *refunded)))
    rows = (
        model._base_manager.using(using)
        .filter(customer_filter(order, fields))
        .filter(**{f"{status_field}__in": counted})
    )
    # (pk, status, total, when) of each order that counts.
    records, orders = _records(model, rows, fields, status_field)
    pks = [pk for pk, *_ in records]
    if config.refunds is None:
        back = ledger.refunded_amounts(model, pks, profile_keys(order, fields), using=using)
    else:
        back = _refund_records(model, pks, orders, config.refunds, using)
    value = Decimal("0.00")
    dates = []
    for pk, status, total, when in records:
        if when is not None:
            dates.append(when)
        total = ledger.cents(total)
        if total is None or status in refunded:
            continue  # not mapped, or refunded whole by its status: worth 0
        value += max(abs(total) - back.get(str(pk), ledger.ZERO), ledger.ZERO)
    count = len(records)
    stats: dict[str, Any] = {
        "total_orders": count,
        "lifetime_value": money(value),
        "average_order_value": money(value / count) if count else 0.0,
    }
    if dates:
        # Klaviyo keeps a date it was given; with no order left it is not sent at all.
        stats["last_order_date"] = iso_utc(max(dates))
        stats["first_order_date"] = iso_utc(min(dates))
    return {config.names[k]: v for k, v in stats.items() if k in config.names}


def _records(
    model: Any, rows: Any, fields: Mapping[str, Any], status_field: str
) -> tuple[list[tuple[Any, Any, Any, Any]], list[Any] | None]:
    """(pk, status, total, placed_at or updated_at) of each order of ``rows``: read as
    values when every path is a field path (no model instances built), else from the
    instances, which are returned too."""
    paths = (fields["total"], fields["placed_at"], fields["updated_at"])
    if all(p is None or mapping.field_path(model, p) for p in paths):
        columns = [lookup(p) for p in paths if p is not None]
        found = []
        for pk, status, *values in rows.values_list("pk", status_field, *columns):
            read = iter(values)
            total, placed_at, updated_at = (None if p is None else next(read) for p in paths)
            found.append((pk, status, total, placed_at or updated_at))
        return found, None
    orders = list(rows)
    return [
        (
            o.pk,
            getattr(o, status_field, None),
            mapping.resolve(o, fields["total"]),
            mapping.resolve(o, fields["placed_at"]) or mapping.resolve(o, fields["updated_at"]),
        )
        for o in orders
    ], orders


def profile_keys(order: Any, fields: Mapping[str, Any]) -> list[str]:
    """The profile keys the customer's order events are stored under (external id, email)."""
    keys = []
    customer_id = mapping.resolve(order, fields["customer_id"])
    if customer_id not in (None, ""):
        keys.append(f"external_id:{customer_id}")
    email = mapping.resolve(order, fields["email"]) or mapping.resolve(
        order, fields["customer_email"]
    )
    if email:
        keys.append(f"email:{email_key(email)}")
    return keys


def _refund_records(
    model: Any, pks: list[Any], orders: list[Any] | None, path: Any, using: str
) -> dict[str, Decimal]:
    """What the store's refund records at ``path`` say was refunded of each order: one
    query when ``path`` is a reverse foreign key and the amount a field of its model,
    else read through the order instances."""
    amount_path = mapping.mapping("REFUND_FIELDS")["amount"]
    found: dict[str, Decimal] = {}
    link = _reverse_link(model, path)
    if link is not None and mapping.field_path(link[0], amount_path):
        refunds = link[0]._base_manager.using(using).filter(**{f"{link[1]}__in": pks})
        for pk, amount in refunds.values_list(link[1], lookup(amount_path)):
            found[str(pk)] = found.get(str(pk), ledger.ZERO) + abs(
                ledger.cents(amount) or ledger.ZERO
            )
        return found
    if orders is None:
        orders = list(model._base_manager.using(using).filter(pk__in=pks))
    for each in orders:
        found[str(each.pk)] = sum(
            (
                abs(ledger.cents(mapping.resolve(r, amount_path)) or ledger.ZERO)
                for r in mapping.resolve_many(each, path)
            ),
            ledger.ZERO,
        )
    return found


def _reverse_link(model: Any, path: Any) -> tuple[Any, str] | None:
    """(the refund model, its foreign key's attname) when ``path`` is one reverse foreign
    key of ``model``."""
    if not isinstance(path, str) or not path or "." in path:
        return None
    try:
        field = model._meta.get_field(path)
    except Exception:  # FieldDoesNotExist: a property or a method
        return None
    if not field.one_to_many or field.concrete:
        return None
    return field.related_model, field.field.attname


# --- the row --------------------------------------------------------------------------


def write(row: Any, key: str, *, account: str, using: str) -> None:
    """Rewrite the customer's waiting stats row with ``row``'s payload, or insert ``row``
    (due after the held one's lease when a flusher holds an older one)."""
    mine = OutboxEvent.objects.using(using).filter(
        kind=OutboxEvent.Kind.PROFILE_UPSERT,
        profile_key=key[:320],
        account=account,
        # The writer puts a non-default account's name before every dedupe key.
        dedupe_key__startswith=f"@{account}:{KEY_PREFIX}" if account else KEY_PREFIX,
    )
    now = timezone.now()
    updated = mine.filter(status__in=DUE).update(
        payload=row.payload, rules_version=rules.RULES_VERSION, updated_at=now
    )
    if updated:
        kinds = frozenset({OutboxEvent.Kind.PROFILE_UPSERT.value})
        transaction.on_commit(
            lambda: outbox_ready.send(sender=OutboxEvent, count=updated, kinds=kinds),
            using=using,
        )
        return
    written = enqueue_many([row], using=using, account=account)
    held = mine.filter(status__in=IN_FLIGHT).exists()
    if held and written:
        lease = timedelta(seconds=float(klaviyo_settings.LEASE_SECONDS))
        OutboxEvent.objects.using(using).filter(pk=written[0].pk).update(
            next_attempt_at=now + lease
        )
