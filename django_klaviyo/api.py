"""Public API: every call validates its input NOW and writes one outbox row in the
caller's transaction (the flusher sends it to Klaviyo later).

Bad input raises :class:`~django_klaviyo.exceptions.KlaviyoValidationError` whose
``field`` names the culprit. Each writer returns the :class:`OutboxEvent` it built
(None when ``KLAVIYO["ENABLED"]`` is False). A ``profile`` is a dict of Klaviyo profile
attributes with at least one identifier (``email``, ``phone_number`` in E.164,
``external_id``; events also accept ``anonymous_id`` and Klaviyo's ``id``), or a user
instance, mapped with ``USER_PROFILE_MAPPER``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from django.utils import timezone

from django_klaviyo import accounts, outbox
from django_klaviyo.catalog import subscribe_back_in_stock  # noqa: F401  (public API)
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.insights.segments import in_segment, segment_synced_at  # noqa: F401
from django_klaviyo.models import Consent, KlaviyoProfileLink, ListMembership, OutboxEvent
from django_klaviyo.models.profiles import effective_list_consent
from django_klaviyo.orders import browse as cart
from django_klaviyo.orders import fields as mapping
from django_klaviyo.orders import placement as orders
from django_klaviyo.orders import refunds, repeats
from django_klaviyo.orders.discovery import searched_site, viewed_category  # noqa: F401
from django_klaviyo.profiles import erasure
from django_klaviyo.profiles.argument import as_profile
from django_klaviyo.rules import values
from django_klaviyo.rules.identifiers import normalize_email, normalize_phone_number, profile_key

Kind = OutboxEvent.Kind


_write = repeats.write


def track(
    metric: str,
    profile: Mapping[str, Any] | Any = None,
    *,
    properties: Mapping[str, Any] | None = None,
    value: Any = None,
    value_currency: str | None = None,
    time: Any = None,
    unique_id: str | None = None,
    dedupe_key: str | None = None,
    backfill: bool = False,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """Record an event. ``unique_id`` defaults to a fresh uuid4 hex, stored on the row so
    retries stay idempotent; ``dedupe_key`` makes a repeated call enqueue nothing.
    ``backfill=True`` marks a historical event: Klaviyo records it without triggering
    flows (use it when importing past orders)."""
    row = outbox.build_event(
        metric=metric,
        profile=as_profile(profile),
        properties=properties,
        value=value,
        value_currency=value_currency,
        time=time,
        unique_id=unique_id,
        dedupe_key=dedupe_key,
        backfill=backfill,
    )
    return _write(row, using, account, profile)


def upsert_profile(
    profile: Mapping[str, Any] | Any = None,
    *,
    dedupe_key: str | None = None,
    using: str | None = None,
    account: str | None = None,
    **attributes: Any,
) -> OutboxEvent | None:
    """Create or update a profile: ``upsert_profile({"email": ..., "first_name": ...})``
    or ``upsert_profile(email=..., first_name=...)``."""
    merged = {**(as_profile(profile) or {}), **attributes}
    return _write(
        outbox.build_profile_upsert(merged, dedupe_key=dedupe_key), using, account, profile
    )


def add_to_list(
    list_id: str | Any,
    profile: Mapping[str, Any] | Any,
    *,
    dedupe_key: str | None = None,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """Add a profile to a list (no consent change; use ``subscribe`` for marketing)."""
    row = outbox.build_list_change(
        Kind.LIST_ADD, list_id, as_profile(profile), dedupe_key=dedupe_key
    )
    return _write(row, using, account, profile)


def remove_from_list(
    list_id: str | Any,
    profile: Mapping[str, Any] | Any,
    *,
    dedupe_key: str | None = None,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    row = outbox.build_list_change(
        Kind.LIST_REMOVE, list_id, as_profile(profile), dedupe_key=dedupe_key
    )
    return _write(row, using, account, profile)


def subscribe(
    profile: Mapping[str, Any],
    *,
    channels: Iterable[str] | str = ("email",),
    list_id: str | Any = None,
    custom_source: str | None = None,
    consented_at: Any = None,
    dedupe_key: str | None = None,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """Give marketing consent on ``channels`` ("email", "sms"). ``consented_at`` (in the
    past) records a historical import: no double opt-in, no "added to list" flows."""
    row = outbox.build_subscribe(
        profile,
        channels=list(channels) if not isinstance(channels, str) else channels,
        list_id=list_id,
        custom_source=custom_source,
        consented_at=consented_at,
        dedupe_key=dedupe_key,
    )
    return _write(row, using, account)


def unsubscribe(
    profile: Mapping[str, Any],
    *,
    channels: Iterable[str] | str = ("email",),
    list_id: str | Any = None,
    dedupe_key: str | None = None,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """Withdraw consent: on every list, or with ``list_id`` on that list only. Klaviyo
    would unsubscribe a profile that is not on ``list_id`` from every list, so the flusher
    checks membership first and sends nothing for such a profile (the row ends ``sent``
    with an ``outcome_note``); a global unsubscribe is sent only without ``list_id``."""
    row = outbox.build_unsubscribe(
        profile,
        channels=list(channels) if not isinstance(channels, str) else channels,
        list_id=list_id,
        dedupe_key=dedupe_key,
    )
    return _write(row, using, account)


def forget_profile(
    *,
    email: str | None = None,
    phone_number: str | None = None,
    profile_id: str | None = None,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """Ask Klaviyo to delete a profile (GDPR); exactly one identifier. In the same
    transaction the person is erased from the local mirror (``django_klaviyo.profiles.erasure``):
    profile links, memberships, unsent rows, sent rows' payloads, webhook items.
    ``account``: the Klaviyo account asked (default: the default account); call it once
    per account the person is in."""
    row, _ = erasure.forget(
        email=email,
        phone_number=phone_number,
        profile_id=profile_id,
        using=using,
        account=accounts.get_account(account).stored,
    )
    return row


# --- e-commerce -----------------------------------------------------------------------


def order_placed(
    order: Any, *, backfill: bool = False, using: str | None = None, account: str | None = None
) -> list[OutboxEvent]:
    """Enqueue Placed Order, with one Ordered Product per line in the same row, for
    ``order`` (call it after its lines are saved). It uses ORDER_EVENTS_MAPPER and the
    dedupe key of the save signal: together they still send each event once.
    ``backfill=True`` for past orders (no flows). Returns the rows written."""
    return orders.enqueue_placed_order(order, using=using, backfill=backfill, account=account)


def order_refunded(
    order: Any,
    *,
    refund: Any,
    backfill: bool = False,
    using: str | None = None,
    account: str | None = None,
) -> list[OutboxEvent]:
    """Enqueue the **Refunded Order** of one refund of ``order`` (partial or full): its
    amount and the items refunded. ``refund`` is a refund record of the store (read
    through ``REFUND_FIELDS`` / ``REFUND_LINE_FIELDS``) or a dict with those keys. Each
    refund is sent once; see ``django_klaviyo.orders.refunds`` for its unique_id and CLV."""
    try:
        return refunds.enqueue_refund(
            order, refund, using=using, backfill=backfill, account=account
        )
    except ValueError as exc:
        raise KlaviyoValidationError(str(exc), field="refund") from exc


def viewed_product(
    profile: Mapping[str, Any] | Any,
    product: Mapping[str, Any],
    *,
    time: Any = None,
    unique_id: str | None = None,
    backfill: bool = False,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """**Viewed Product**; ``product`` keys: see ``django_klaviyo.orders.mappers``. No event
    value, as in Klaviyo's guide: a view is not revenue (the price is a property)."""
    return track(
        mapping.metric("viewed_product"),
        profile,
        properties=cart.product_properties(product),
        time=time,
        unique_id=unique_id,
        backfill=backfill,
        using=using,
        account=account,
    )


def added_to_cart(
    profile: Mapping[str, Any] | Any,
    item: Mapping[str, Any],
    *,
    cart_items: Iterable[Mapping[str, Any]] | None = None,
    currency: str | None = None,
    checkout_url: str | None = None,
    time: Any = None,
    unique_id: str | None = None,
    backfill: bool = False,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """**Added to Cart**: the added item as ``AddedItem*`` properties, the whole cart
    (``cart_items``, default just the item) as Items/ItemNames; value = cart total."""
    items = cart.cart_items(cart_items if cart_items is not None else [item])
    properties: dict[str, Any] = cart.added_item(item)
    properties.update(cart.items_summary(items))
    if checkout_url:
        properties["CheckoutURL"] = checkout_url
    return track(
        mapping.metric("added_to_cart"),
        profile,
        properties=properties,
        value=cart.items_value(items),
        value_currency=currency,
        time=time,
        unique_id=unique_id,
        backfill=backfill,
        using=using,
        account=account,
    )


def started_checkout(
    profile: Mapping[str, Any] | Any,
    items: Iterable[Mapping[str, Any]],
    *,
    checkout_id: str,
    currency: str | None = None,
    checkout_url: str | None = None,
    value: Any = None,
    time: Any = None,
    visit: str | None = None,
    backfill: bool = False,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """**Started Checkout**. Its unique_id is the checkout (cart) id plus the Unix time,
    as in Klaviyo's guide. A start counts again when the shopper comes back: another
    ``visit`` (e.g. a new session; the storefront endpoint passes one), more than
    ``STARTED_CHECKOUT_REPEAT_AFTER`` seconds after this profile's last one, or a changed
    cart. A repeat within the same visit with the same cart enqueues nothing and returns
    the row of the start it repeats. With an explicit ``time`` (an import), only a start
    at the same second with the same cart is a repeat."""
    if (
        not isinstance(checkout_id, (str, int))
        or isinstance(checkout_id, bool)
        or (checkout_id == "")
    ):
        raise KlaviyoValidationError("checkout_id must be a non-empty string.", field="checkout_id")
    if visit is not None and not isinstance(visit, str):
        raise KlaviyoValidationError("visit must be a string.", field="visit")
    basket = cart.cart_items(items)
    if not basket:
        raise KlaviyoValidationError("a checkout needs at least one item.", field="items")
    properties = cart.items_summary(basket)
    properties["CheckoutId"] = str(checkout_id)
    if checkout_url:
        properties["CheckoutURL"] = checkout_url
    when = values.iso_time(timezone.now() if time is None else time)
    unix = int(dt.datetime.fromisoformat(when).timestamp())
    # One key per (checkout, cart, visit), bounded in length whatever the checkout id.
    start = outbox.payload_digest({"c": str(checkout_id), "i": basket, "v": visit or ""})
    prefix = f"{CHECKOUT_KEY}:{start}:"
    row = outbox.build_event(
        metric=mapping.metric("started_checkout"),
        profile=as_profile(profile),
        properties=properties,
        value=cart.items_value(basket) if value is None else value,
        value_currency=currency,
        time=when,
        unique_id=f"{checkout_id}-{unix}",
        # An explicit time repeats exactly; "now" is unique (the window below decides).
        dedupe_key=f"{prefix}{unix}" + ("" if time is not None else f":{uuid.uuid4().hex[:8]}"),
        backfill=backfill,
    )
    seconds = klaviyo_settings.STARTED_CHECKOUT_REPEAT_AFTER
    return repeats.write_once_per_window(row, prefix, seconds, time, using, account, profile)


CHECKOUT_KEY = "event:started-checkout"


def restate_started_checkout(
    checkout: OutboxEvent, profile: Mapping[str, Any] | Any, *, using: str | None = None
) -> OutboxEvent | None:
    """The Started Checkout ``checkout`` again, on ``profile``: same unique_id, time,
    properties and value. For a guest who identifies after starting checkout (the
    storefront's identify step): Klaviyo deduplicates events by (profile, metric,
    unique_id), so where the email's profile is the anonymous one this adds only the
    link, and where the email already had a profile the checkout now reaches it.
    Once per checkout and profile (a repeat returns the first row)."""
    payload = checkout.payload
    if checkout.kind != Kind.EVENT or not isinstance(payload, Mapping):
        raise KlaviyoValidationError("checkout must be a Started Checkout row.", field="checkout")
    own_key = checkout.dedupe_key or ""
    account_prefix = f"@{checkout.account}:" if checkout.account else ""
    own_key = own_key.removeprefix(account_prefix) or f"{CHECKOUT_KEY}:{checkout.pk}:"
    cleaned = outbox.build_event(metric=checkout.metric, profile=as_profile(profile)).payload
    who = outbox.payload_digest({"p": profile_key(cleaned["profile"])})[:12]
    row = outbox.build_event(
        metric=checkout.metric,
        profile=cleaned["profile"],
        properties=payload.get("properties"),
        value=payload.get("value"),
        value_currency=payload.get("value_currency"),
        time=payload.get("time"),
        unique_id=checkout.unique_id,
        dedupe_key=values.key(f"{own_key}:to:{who}"[:255], "dedupe_key"),
        backfill=payload.get("backfill", False),
    )
    return _write(row, using or checkout._state.db, checkout.account or None)


def subscription_status(
    *,
    user: Any = None,
    email: str | None = None,
    phone_number: str | None = None,
    list_id: str | Any = None,
) -> dict[str, Any] | None:
    """Consent as last known locally (webhooks and the flusher keep it current), from the
    user's profile link, else a link with this email / phone; None when no link exists.

    Returns ``{"email": Consent value, "email_at": datetime|None, "sms": ...,
    "sms_at": ..., "klaviyo_id": str|None}``: the global consent. With ``list_id`` (an id
    or a ``KlaviyoList``) it also has ``"list"``, the answer to "subscribed to list X by
    email?": ``{"list_id", "member": bool|None (what Klaviyo last confirmed), "email",
    "email_at", "sms", "sms_at"}``, where each consent is the effective one for that list:
    a global unsubscribe or suppression, else the list's own consent, else the global one.
    """
    if sum(x is not None for x in (user, email, phone_number)) != 1:
        raise KlaviyoValidationError(
            "subscription_status needs exactly one of user, email or phone_number.",
            field="profile",
        )
    identifiers = {}
    if email is not None:
        identifiers["email"] = normalize_email(email)
    elif phone_number is not None:
        identifiers["phone_number"] = normalize_phone_number(phone_number)
    link = KlaviyoProfileLink.objects.best_match(identifiers, user=user)
    if link is None:
        return None
    status: dict[str, Any] = {
        "email": link.email_consent,
        "email_at": link.email_consent_at,
        "sms": link.sms_consent,
        "sms_at": link.sms_consent_at,
        "klaviyo_id": link.klaviyo_id,
    }
    if list_id is not None:
        status["list"] = _list_status(link, list_id)
    return status


def _list_status(link: KlaviyoProfileLink, list_id: Any) -> dict[str, Any]:
    klaviyo_id = getattr(list_id, "klaviyo_id", list_id)
    if not isinstance(klaviyo_id, str) or not klaviyo_id:
        raise KlaviyoValidationError("list_id must be a non-empty string.", field="list_id")
    membership = (
        # A list id alone names the default account's list (whose memberships the mirror
        # keeps); a KlaviyoList row names its own account's.
        ListMembership.objects.filter(
            profile=link,
            klaviyo_list__account=getattr(list_id, "account", ""),
            klaviyo_list__klaviyo_id=klaviyo_id,
        )
        .select_related("profile")
        .first()
    )
    answer: dict[str, Any] = {
        "list_id": klaviyo_id,
        "member": membership.synced_member if membership else None,
    }
    for channel in ("email", "sms"):
        own = getattr(membership, f"{channel}_consent", Consent.UNKNOWN)
        answer[channel] = effective_list_consent(getattr(link, f"{channel}_consent"), own)
        answer[f"{channel}_at"] = (
            getattr(membership, f"{channel}_consent_at")
            if membership and own != Consent.UNKNOWN and answer[channel] == own
            else getattr(link, f"{channel}_consent_at")
        )
    return answer
