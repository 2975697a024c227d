"""``POST <prefix>/back-in-stock/``: a shopper asks to hear when a variant is back.

Session authentication with CSRF enforced for every visitor (logged in or not: the form
is on the store's own pages), DRF throttling per visitor, a serializer for the input.
Bad input answers 400 naming the field and stores nothing; a good request writes one
``back_in_stock`` outbox row and answers 202.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from django_klaviyo import accounts
from django_klaviyo.catalog import mapping, subscribe_back_in_stock
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError

CHANNELS = ("email", "sms", "push", "whatsapp")


class CsrfSessionAuthentication(SessionAuthentication):
    """DRF's session authentication checks CSRF only for logged-in users; this form
    is used by anonymous shoppers too, so check it for everyone."""

    def authenticate(self, request: Request) -> Any:
        self.enforce_csrf(request)
        return super().authenticate(request)


class BackInStockThrottle(SimpleRateThrottle):
    scope = "klaviyo_back_in_stock"

    def get_rate(self) -> str:
        return str(klaviyo_settings.BACK_IN_STOCK_THROTTLE_RATE)

    def get_cache_key(self, request: Request, view: Any) -> str:
        user = getattr(request, "user", None)
        ident = (
            f"user-{user.pk}"
            if user is not None and user.is_authenticated
            else self.get_ident(request)
        )
        return self.cache_format % {"scope": self.scope, "ident": ident}


class BackInStockSerializer(serializers.Serializer):
    variant = serializers.CharField(max_length=255)
    email = serializers.EmailField(required=False)
    phone_number = serializers.CharField(required=False, max_length=32)
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=CHANNELS), default=["email"], allow_empty=False
    )

    def validate_variant(self, value: str) -> str:
        if not variant_exists(value):
            raise serializers.ValidationError("Unknown variant.")
        return value


def variant_exists(external_id: str) -> bool:
    """Whether the store has this variant (checked when the mapping names a model field)."""
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
    return model._default_manager.filter(**{field: external_id}).exists()


class BackInStockView(APIView):
    authentication_classes = [CsrfSessionAuthentication]
    permission_classes: list[Any] = []
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
        try:
            subscribe_back_in_stock(
                profile,
                data["variant"],
                data["channels"],
                account=accounts.account_for(request=request._request),
            )
        except KlaviyoValidationError as exc:
            return Response({exc.field or "non_field_errors": [str(exc)]}, status=400)
        return Response(
            {"variant": data["variant"], "channels": data["channels"]},
            status=status.HTTP_202_ACCEPTED,
        )
