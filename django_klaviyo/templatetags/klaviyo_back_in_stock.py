"""``{% load klaviyo_back_in_stock %}{% klaviyo_back_in_stock_form variant %}``.

Renders a small form that posts to the back-in-stock endpoint (``klaviyo-back-in-stock``)
with the CSRF token and shows the answer in place. ``variant`` is a mapped variant
object or its external id. A logged-in user is subscribed with their own profile and is
not asked for an email.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.db.models import Model
from django.middleware.csrf import get_token
from django.urls import reverse

from django_klaviyo.catalog import mapping

register = template.Library()


@register.inclusion_tag("django_klaviyo/back_in_stock_form.html", takes_context=True)
def klaviyo_back_in_stock_form(
    context: Any, variant: Any, label: str = "Email me when it's back"
) -> dict[str, Any]:
    request = context.get("request")
    if isinstance(variant, Model):
        variant = mapping.external_id_of(variant, "VARIANTS")
    user = getattr(request, "user", None)
    return {
        "action": reverse("klaviyo-back-in-stock"),
        "csrf_token": get_token(request) if request is not None else "",
        "variant": str(variant),
        "label": label,
        "ask_email": not (user is not None and user.is_authenticated),
    }
