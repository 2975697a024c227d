"""``POST <prefix>/back-in-stock/``: a shopper asks to hear when a variant is back.

Session authentication with CSRF enforced for every visitor (logged in or not: the form
is on the store's own pages), DRF throttling per user or client address
(``storefront.throttles``), a serializer for the input. Bad input answers 400 naming the
field and stores nothing; an unknown variant and one in stock get the same 400 (no SKU
probing); one email or phone number is subscribed at most ``BACK_IN_STOCK_CONTACT_RATE``
times (429 naming the field); a good request writes one ``back_in_stock`` outbox row and
answers 202.
"""

from __future__ import annotations

import contextlib
from typing import Any

from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from django_klaviyo import accounts
from django_klaviyo.catalog import mapping, subscribe_back_in_stock
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules.identifiers import email_key, normalize_phone_number
from django_klaviyo.storefront.parsers import PublicJSONParser
from django_klaviyo.storefront.throttles import BackInStockThrottle, ContactLimit

CHANNELS = ("email", "sms", "push", "whatsapp")
NOT_AWAITED = "No back-in-stock alert can be set for this variant."


class CsrfSessionAuthentication(SessionAuthentication):
    """DRF's session authentication checks CSRF only for logged-in users; this form
    is used by anonymous shoppers too, so check it for everyone."""

    def authenticate(self, request: Request) -> Any:
        self.enforce_csrf(request)
        return super().authenticate(request)


class BackInStockSerializer(serializers.Serializer):
    variant = serializers.CharField(max_length=255)
    email = serializers.EmailField(required=False)
    phone_number = serializers.CharField(required=False, max_length=32)
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=CHANNELS), default=["email"], allow_empty=False
    )

    def validate_variant(self, value: str) -> str:
        if not awaits_stock(value):
            # One answer for an unknown variant and one in stock: the endpoint must not
            # tell anyone which SKUs exist.
            raise serializers.ValidationError(NOT_AWAITED)
        return value


def awaits_stock(external_id: str) -> bool:
    """Whether a shopper may ask to hear about this variant: the store has it and it is
    not in stock (checked when the mapping names a model field for the id; the stock when
    it maps ``inventory_quantity``). Otherwise True: Klaviyo refuses an unknown variant."""
    spec = mapping.catalog_config().get("VARIANTS")
    if spec is None:
        return True
    field = spec["external_id"]
    model = mapping.section_model("VARIANTS")
    if (
        not isinstance(field, str)
        or "." in field
        or field not in {f.name for f in model._meta.get_fields()}
    ):
        return True  # a computed id: Klaviyo itself refuses an unknown variant
    variant = model._default_manager.filter(**{field: external_id}).first()
    if variant is None:
        return False
    quantity_spec = spec.get("inventory_quantity")
    if quantity_spec is None:
        return True
    try:
        quantity = mapping.resolve(variant, quantity_spec)
        return quantity is None or float(quantity) <= 0
    except (AttributeError, LookupError, TypeError, ValueError):
        return True  # a stock the mapping cannot read: the subscription is harmless


def contacts(data: dict[str, Any]) -> dict[str, str]:
    """The email address and phone number of a request, as the per-contact limit counts
    them (case and separators do not make a new contact)."""
    found = {}
    if data.get("email"):
        found["email"] = email_key(data["email"])
    if data.get("phone_number"):
        # A malformed number: subscribe_back_in_stock refuses it, naming the field.
        with contextlib.suppress(KlaviyoValidationError):
            found["phone_number"] = normalize_phone_number(data["phone_number"])
    return found


class BackInStockView(APIView):
    authentication_classes = [CsrfSessionAuthentication]
    permission_classes: list[Any] = []
    parser_classes = [PublicJSONParser, FormParser, MultiPartParser]
    throttle_classes = [BackInStockThrottle]

    def post(self, request: Request) -> Response:
        serializer = BackInStockSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        profile: Any = {k: data[k] for k in ("email", "phone_number") if data.get(k)}
        if not profile:
            if not request.user.is_authenticated:
                return Response({"email": ["An email address is required."]}, status=400)
            profile = request.user
        limit = ContactLimit(contacts(data))
        over = limit.over()
        if over:
            return Response(
                {over: ["Too many back-in-stock subscriptions for this contact; try later."]},
                status=status.HTTP_429_TOO_MANY_REQUESTS,
            )
        try:
            subscribe_back_in_stock(
                profile,
                data["variant"],
                data["channels"],
                account=accounts.account_for(request=request._request),
            )
        except KlaviyoValidationError as exc:
            return Response({exc.field or "non_field_errors": [str(exc)]}, status=400)
        limit.record()
        return Response(
            {"variant": data["variant"], "channels": data["channels"]},
            status=status.HTTP_202_ACCEPTED,
        )
