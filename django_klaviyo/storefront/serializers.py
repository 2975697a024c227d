"""Input of the browse-events endpoint: the product dicts of ``django_klaviyo.api``
(snake_case keys), checked before anything is written. Errors name the field."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from rest_framework import serializers

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.orders import discovery
from django_klaviyo.rules import limits
from django_klaviyo.rules.identifiers import normalize_email, normalize_phone_number

EVENTS = (
    "viewed_product",
    "added_to_cart",
    "started_checkout",
    "viewed_category",
    "searched_site",
    "identify",
)
MAX_CART_ITEMS = 100


class WebUrlField(serializers.CharField):
    """An absolute http(s) URL. Looser than URLField: any host name (an intranet shop,
    a test server) is fine; only the scheme and the host are required."""

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc or " " in value:
                raise serializers.ValidationError("Enter an absolute http(s) URL.")
        return value


class ProductSerializer(serializers.Serializer):
    product_id = serializers.CharField(max_length=255)
    sku = serializers.CharField(max_length=255, required=False, allow_blank=True)
    name = serializers.CharField(max_length=500)
    price = serializers.DecimalField(
        max_digits=14, decimal_places=2, min_value=0, required=False, allow_null=True
    )
    compare_at_price = serializers.DecimalField(
        max_digits=14, decimal_places=2, min_value=0, required=False, allow_null=True
    )
    quantity = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    image_url = WebUrlField(max_length=2000, required=False, allow_blank=True)
    product_url = WebUrlField(max_length=2000, required=False, allow_blank=True)
    categories = serializers.ListField(
        child=serializers.CharField(max_length=255), max_length=50, required=False
    )
    brand = serializers.CharField(max_length=255, required=False, allow_blank=True)


class CategorySerializer(serializers.Serializer):
    category_id = serializers.CharField(max_length=discovery.MAX_CATEGORY_FIELD["category_id"])
    name = serializers.CharField(
        max_length=discovery.MAX_CATEGORY_FIELD["name"], required=False, allow_blank=True
    )
    url = WebUrlField(
        max_length=discovery.MAX_CATEGORY_FIELD["url"], required=False, allow_blank=True
    )


class BrowseEventSerializer(serializers.Serializer):
    """``{"event": "viewed_product", "product": {...}}``,
    ``{"event": "added_to_cart", "item": {...}, "items": [...the whole cart]}``,
    ``{"event": "started_checkout", "items": [...], "checkout_id": "..."}``;
    ``{"event": "viewed_category", "category": {"category_id": ..., "name", "url"}}``,
    ``{"event": "searched_site", "term": "...", "result_count": 3}``;
    ``{"event": "identify", "email": "..."}`` (or ``phone_number``, E.164 once cleaned):
    a guest typed it into a field marked ``data-klaviyo-identify``;
    ``currency`` (ISO 4217) is optional for the cart events."""

    event = serializers.ChoiceField(choices=EVENTS)
    product = ProductSerializer(required=False)
    item = ProductSerializer(required=False)
    items = ProductSerializer(many=True, required=False, max_length=MAX_CART_ITEMS)
    checkout_id = serializers.RegexField(r"^[A-Za-z0-9_.:-]{1,100}$", required=False)
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False)
    category = CategorySerializer(required=False)
    term = serializers.CharField(max_length=limits.MAX_SEARCH_TERM_CHARS, required=False)
    result_count = serializers.IntegerField(
        min_value=0, max_value=discovery.MAX_RESULT_COUNT, required=False
    )
    email = serializers.CharField(max_length=254, required=False, allow_blank=True)
    phone_number = serializers.CharField(max_length=32, required=False, allow_blank=True)

    REQUIRED = {
        "viewed_product": ("product",),
        "added_to_cart": ("item",),
        "started_checkout": ("items", "checkout_id"),
        "viewed_category": ("category",),
        "searched_site": ("term", "result_count"),
        "identify": (),
    }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        missing = {
            name: [f"{name} is required for {attrs['event']}."]
            for name in self.REQUIRED[attrs["event"]]
            if attrs.get(name) in (None, "", [], {})  # a result_count of 0 is given
        }
        if missing:
            raise serializers.ValidationError(missing)
        if attrs["event"] == "identify":
            attrs.update(identifiers(attrs))
        return attrs


def identifiers(attrs: dict[str, Any]) -> dict[str, str]:
    """The identify step's cleaned ``email`` / ``phone_number`` (at least one)."""
    if not attrs.get("email") and not attrs.get("phone_number"):
        raise serializers.ValidationError({"email": ["email or phone_number is required."]})
    cleaned = {}
    try:
        if attrs.get("email"):
            cleaned["email"] = normalize_email(attrs["email"]).lower()
        if attrs.get("phone_number"):
            cleaned["phone_number"] = normalize_phone_number(attrs["phone_number"])
    except KlaviyoValidationError as exc:
        raise serializers.ValidationError({exc.field or "email": [str(exc)]}) from None
    return cleaned
