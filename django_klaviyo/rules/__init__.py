"""The rulebook: one cleaner per outbox kind, applied once, when a row is written.

``clean(kind, payload, unique_id=...)`` returns the payload as it is stored and sent, or
raises ``KlaviyoValidationError`` naming the field. Every limit comes from
``django_klaviyo.rules.limits``. Rows record ``RULES_VERSION``: the flusher sends rows of the
current version as they are, and cleans a row of any other version once before sending
(dead-lettering it, with the reason, if it no longer passes).

The client's requests are cleaned by the same rules: each kind's module also holds the
cleaners of its requests, and ``django_klaviyo.client.bodies`` builds request bodies from
what they return (bodies check no values; the rules send nothing).

Where each rule lives (each is written once; everything else imports it):

- ``limits``: every Klaviyo limit (sizes, counts, lengths, the event time window) and
  the profile attributes Klaviyo accepts.
- ``values``: leaf values: ``to_json`` (a payload as plain JSON), text PostgreSQL can
  store, times (``aware``, ``utc_iso``, ``iso_time``), numbers, key columns.
- ``identifiers``: email and phone normalisation, a profile's identifiers and its key.
- ``shapes``: the shapes of a client call's input (text, object, a list within a limit).
- one module per outbox kind, its rows and its client requests: ``events`` (and
  ``event_requests`` for the client's events), ``profiles`` (upserts, deletions),
  ``lists``, ``consent``, ``catalog`` (catalog and back in stock), ``coupons``;
  ``webhooks`` for the client's webhook requests.

Bump ``RULES_VERSION`` whenever a cleaner accepts less, or stores differently, than before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.catalog import (
    clean_back_in_stock,
    clean_catalog_category,
    clean_catalog_item,
    clean_catalog_variant,
)
from django_klaviyo.rules.consent import clean_subscribe, clean_unsubscribe
from django_klaviyo.rules.coupons import clean_coupon, clean_coupon_code
from django_klaviyo.rules.events import clean_event, event_sizes
from django_klaviyo.rules.lists import clean_list_change
from django_klaviyo.rules.profiles import clean_deletion, clean_upsert

# 2: a Placed Order's Ordered Products are stored by reference (item_events); rows of
# version 1 (each written out in ``expand``) are still accepted and sent the same.
RULES_VERSION = 2

# Outbox kinds (the values of OutboxEvent.Kind; the rules know no models).
EVENT = "event"
PROFILE_UPSERT = "profile_upsert"
LIST_ADD = "list_add"
LIST_REMOVE = "list_remove"
SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
PROFILE_DELETION = "profile_deletion"
CATALOG_ITEM = "catalog_item"
CATALOG_VARIANT = "catalog_variant"
CATALOG_CATEGORY = "catalog_category"
BACK_IN_STOCK = "back_in_stock"
COUPON = "coupon"
COUPON_CODE = "coupon_code"
# Kinds whose rows name no profile (catalog resources, coupons).
PROFILELESS_KINDS = frozenset(
    {CATALOG_ITEM, CATALOG_VARIANT, CATALOG_CATEGORY, COUPON, COUPON_CODE}
)

CLEANERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    PROFILE_UPSERT: clean_upsert,
    LIST_ADD: clean_list_change,
    LIST_REMOVE: clean_list_change,
    SUBSCRIBE: clean_subscribe,
    UNSUBSCRIBE: clean_unsubscribe,
    PROFILE_DELETION: clean_deletion,
    CATALOG_ITEM: clean_catalog_item,
    CATALOG_VARIANT: clean_catalog_variant,
    CATALOG_CATEGORY: clean_catalog_category,
    BACK_IN_STOCK: clean_back_in_stock,
    COUPON: clean_coupon,
    COUPON_CODE: clean_coupon_code,
}


def clean(
    kind: str,
    payload: Mapping[str, Any],
    *,
    unique_id: str = "",
    profiles: dict[Any, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The payload of a ``kind`` row as stored and sent, or raise naming the field."""
    if kind == EVENT:
        return clean_event(payload, unique_id=unique_id, profiles=profiles)
    cleaner = CLEANERS.get(kind)
    if cleaner is None:
        raise KlaviyoValidationError(f"unknown outbox kind {kind!r}.", field="kind")
    return cleaner(payload)


def check_size(kind: str, payload: Mapping[str, Any], encoded: str) -> None:
    """Refuse a row Klaviyo would refuse for its size; ``encoded`` is the payload's
    compact ASCII JSON (its length is its size in bytes)."""
    if kind == EVENT:
        event_sizes(payload, encoded)
    elif kind == PROFILE_UPSERT:
        # The request wraps the profile in a few JSON:API keys; all of it must fit.
        size = len(encoded) - len('{"profile":}') + limits.ITEM_OVERHEAD_BYTES
        if size > limits.MAX_PROFILE_BYTES:
            raise KlaviyoValidationError(
                f"the profile is {size} bytes encoded; Klaviyo accepts at most "
                f"{limits.MAX_PROFILE_BYTES} bytes per profile.",
                field="profile",
            )
