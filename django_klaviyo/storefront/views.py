"""The browse-events endpoint: Viewed Product, Added to Cart, Started Checkout, Viewed
Category and Searched Site written to the outbox from the server, where an ad blocker
cannot drop them.

POST JSON (see ``serializers.BrowseEventSerializer``) with the CSRF token; the event's
profile is the logged-in user and/or the visitor's anonymous id (``identity``). 202 with
the outbox row's id; 400 naming the field, with nothing stored (JSON nested deeper than
``limits.MAX_INPUT_DEPTH``: 400 too); 413 for a body over ``limits.MAX_PUBLIC_BODY_BYTES``
or an event that would store more than ``limits.MAX_PUBLIC_EVENT_BYTES`` (naming the
largest field); 429 over the per-visitor rate ``STOREFRONT_THROTTLE_RATE``, the per-address
rate ``STOREFRONT_ADDRESS_THROTTLE_RATE`` or byte budget
``STOREFRONT_ADDRESS_BYTES_PER_MINUTE`` (``throttles``). A refused request leaves no
session row. ``{"event": "identify", "email": ...}`` is the identify step: the guest
becomes that profile and the visit's open Started Checkout is sent again on it
(docs/storefront.md).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from django_klaviyo import accounts, api
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.rules import limits
from django_klaviyo.storefront import cartlinks, identity
from django_klaviyo.storefront.parsers import PublicJSONParser
from django_klaviyo.storefront.serializers import BrowseEventSerializer
from django_klaviyo.storefront.throttles import (
    AddressRateThrottle,
    ByteBudget,
    VisitorRateThrottle,
)

SALT = "django_klaviyo.storefront.checkout-id"


class VisitorSessionAuthentication(SessionAuthentication):
    """Session auth that checks the CSRF token for anonymous visitors too (DRF's own
    checks it only for logged-in users), so another site cannot post events for them."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        user = getattr(request._request, "user", None)
        self.enforce_csrf(request)
        if user is None or not user.is_active:
            return None
        return (user, None)


class ForgetsRefusedSessions:
    """A refused request (any 4xx/5xx) leaves no new session row: the anonymous id made
    for it is dropped with the unsaved session. A session the visitor already had is kept."""

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        session = getattr(request._request, "session", None)
        if response.status_code >= 400 and session is not None and not session.session_key:
            session.clear()  # empty and never saved: SessionMiddleware writes nothing
            session.modified = False
        return response


class BrowseEventView(ForgetsRefusedSessions, APIView):
    authentication_classes = [VisitorSessionAuthentication]
    permission_classes = [AllowAny]
    parser_classes = [PublicJSONParser]
    throttle_classes = [VisitorRateThrottle, AddressRateThrottle]

    def post(self, request: Request) -> Response:
        serializer = BrowseEventSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        budget = ByteBudget(request)
        if budget.exhausted():
            return over_budget(budget)
        try:
            with transaction.atomic():
                if data["event"] == "identify":
                    row = identify(request, data)
                else:
                    row = record(request, data, identity.visitor_profile(request._request))
                size = stored_size(row)
                if size > limits.MAX_PUBLIC_EVENT_BYTES:
                    raise EventTooLarge(largest_field(data), size)
                if not budget.allows(size):
                    raise OverBudget
        except KlaviyoValidationError as exc:
            field = exc.field or "non_field_errors"
            return Response({field: [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        except EventTooLarge as exc:
            return Response(
                {exc.field: [str(exc)]}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
            )
        except OverBudget:
            return over_budget(budget)
        budget.spend(size)
        self.charge_new_visitor(request)
        return Response(
            {"event": data["event"], "outbox_id": row.pk if row else None},
            status=status.HTTP_202_ACCEPTED,
        )

    @staticmethod
    def charge_new_visitor(request: Request) -> None:
        """A visitor's first event made their session: store it now, so the event counts
        against the visitor's own limit like every later one."""
        session = getattr(request._request, "session", None)
        if session is None or session.session_key or request.user.is_authenticated:
            return
        session.save()
        VisitorRateThrottle().charge(request)


class EventTooLarge(Exception):
    def __init__(self, field: str, size: int) -> None:
        super().__init__(
            f"This event would store {size} bytes; the storefront accepts at most "
            f"{limits.MAX_PUBLIC_EVENT_BYTES} bytes per event. Send fewer or shorter values."
        )
        self.field = field


class OverBudget(Exception):
    pass


def over_budget(budget: ByteBudget) -> Response:
    return Response(
        {"detail": "This address has stored too much in the last minute; try again later."},
        status=status.HTTP_429_TOO_MANY_REQUESTS,
        headers={"Retry-After": str(budget.retry_after())},
    )


def stored_size(row: Any) -> int:
    """The bytes of the outbox payload as JSON text (0 when nothing was written)."""
    if row is None:
        return 0
    return len(json.dumps(row.payload, cls=DjangoJSONEncoder).encode())


def largest_field(data: dict[str, Any]) -> str:
    """The input field holding the most data: the one the 413 names."""
    sizes = {
        name: len(json.dumps(value, cls=DjangoJSONEncoder))
        for name, value in data.items()
        if name != "event"
    }
    return max(sizes, key=sizes.__getitem__) if sizes else "non_field_errors"


def checkout_id(request: Request, claimed: str) -> str:
    """The store's own cart (``CART_TOKEN``) names the checkout when there is one: a
    visitor cannot then claim another shopper's checkout id (Started Checkout is sent
    once per checkout and cart content). The token itself stays out of Klaviyo."""
    token = cartlinks.current_cart_token(request._request)
    if token:
        return hashlib.sha256(f"{SALT}:{token}".encode()).hexdigest()[:20]
    return claimed


def record(request: Request, data: dict[str, Any], profile: dict[str, Any]) -> Any:
    event = data["event"]
    # The account of this storefront (ACCOUNT_RESOLVER with the request; docs/accounts.md).
    account = accounts.account_for(request=request._request)
    if event == "viewed_product":
        return api.viewed_product(profile, dict(data["product"]), account=account)
    if event == "viewed_category":
        return api.viewed_category(profile, dict(data["category"]), account=account)
    if event == "searched_site":
        return api.searched_site(profile, data["term"], data["result_count"], account=account)
    link = cartlinks.checkout_url(request._request)
    if event == "added_to_cart":
        items = [dict(item) for item in data.get("items") or []] or None
        return api.added_to_cart(
            profile,
            dict(data["item"]),
            cart_items=items,
            currency=data.get("currency"),
            checkout_url=link,
            account=account,
        )
    row = api.started_checkout(
        profile,
        [dict(item) for item in data["items"]],
        checkout_id=checkout_id(request, data["checkout_id"]),
        currency=data.get("currency"),
        checkout_url=link,
        visit=identity.visit_id(request._request),
        account=account,
    )
    if row is not None:
        request._request.session[identity.SESSION_OPEN_CHECKOUT] = str(row.pk)
    return row


def identify(request: Request, data: dict[str, Any]) -> Any:
    """The identify step: from now on this guest is the email / phone they typed, and
    this visit's open Started Checkout is sent again on that profile (the first event
    after identification also carries the anonymous id, which links the two)."""
    given = {k: data[k] for k in ("email", "phone_number") if data.get(k)}
    if not identity.identify_visitor(request._request, given):
        return None  # a logged-in user stays the user; the same email again is nothing new
    open_id = request._request.session.get(identity.SESSION_OPEN_CHECKOUT)
    checkout = OutboxEvent.objects.filter(pk=open_id).first() if open_id else None
    properties = checkout.payload.get("properties") if checkout is not None else None
    if not isinstance(properties, dict) or "CheckoutId" not in properties:
        return None  # gone, or erased (forget_profile) since: nothing to send again
    profile = identity.visitor_profile(request._request)
    return api.restate_started_checkout(checkout, profile)
