"""``{% load klaviyo %}``: klaviyo.js and browse events on the storefront.

``{% klaviyo_js %}`` (once per page, near the end of ``<body>``) loads klaviyo.js with the
public key (company id) only, ``async``, with the request's CSP nonce when it has one
(``request.csp_nonce``: django-csp, or Django's own CSP middleware), and identifies the
logged-in user with ``klaviyo.identify``. It also loads ``django_klaviyo/storefront.js``,
which sends the browse events that the tags below describe.

``{% klaviyo_viewed_product product %}``, ``{% klaviyo_added_to_cart item items %}`` and
``{% klaviyo_started_checkout items checkout_id %}`` take the product dicts of
``django_klaviyo.api`` (snake_case keys); ``{% klaviyo_viewed_category category %}`` a
category dict (``category_id``, ``name``, ``url``) and ``{% klaviyo_searched_site term
result_count %}`` what the visitor searched and how many results the page shows. They
embed the event as JSON (``json_script``, so no product name or search term can break out
of the page) for storefront.js, which posts it to the
browse-events endpoint (``BROWSE_EVENTS_VIA = "server"``, the default: ad blockers cannot
drop it) or hands it to ``klaviyo.track`` ("browser"). Viewed Product also calls
``klaviyo.trackViewedItem`` for Klaviyo's "recently viewed" block.

Browser mode sends what the server would: the metric names of ``METRIC_NAMES``, ``$value``
(the cart total) on Added to Cart and Started Checkout, and Started Checkout's
``$event_id`` (Klaviyo's unique id) by the server's rule: the checkout id plus the Unix
time of the start, kept for reloads of the same visit with the same cart until
``STARTED_CHECKOUT_REPEAT_AFTER`` has passed. Viewed Category and Searched Site get theirs
the same way (the category or term's digest, kept for ``BROWSE_REPEAT_AFTER``).

``<input type="email" {% klaviyo_identify "email" %}>`` (or ``"phone_number"``) marks
the field of a checkout where a guest types their email or phone: storefront.js sends
it to the endpoint when it changes (the identify step, docs/storefront.md), and calls
``klaviyo.identify`` with it.

``{% klaviyo_back_in_stock_form variant %}`` renders a small form that posts to the
back-in-stock endpoint (``klaviyo-back-in-stock``) with the CSRF token and shows the
answer in place (its script carries the CSP nonce too). ``variant`` is a mapped variant
object or its external id. A logged-in user is subscribed with their own profile and is
not asked for an email.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from django import template
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString, mark_safe

from django_klaviyo import accounts
from django_klaviyo.catalog import mapping
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.orders import browse as cart
from django_klaviyo.orders import discovery
from django_klaviyo.orders import fields as order_fields
from django_klaviyo.storefront import cartlinks, identity

register = template.Library()

CONFIG_ID = "klaviyo-storefront-config"


def _nonce_attr(context: template.Context) -> SafeString:
    """`` nonce="..."`` when the project uses CSP nonces: ``request.csp_nonce``
    (django-csp), ``request._csp_nonce`` (Django 6's CSP middleware) or the ``csp_nonce``
    context variable (Django 6's context processor). Both are lazy: str() makes the nonce
    (and puts it in the response header); a lazy nonce is falsy until then, so test None."""
    request = context.get("request")
    for nonce in (
        getattr(request, "csp_nonce", None),
        getattr(request, "_csp_nonce", None),
        context.get("csp_nonce"),
    ):
        if nonce is not None and str(nonce):
            return format_html(' nonce="{}"', str(nonce))
    return mark_safe("")


def public_key(request: Any = None) -> str | None:
    """PUBLIC_API_KEY when it is usable on a page: only a key that passes the check
    (``accounts.usable_public_key``: normalised, of Klaviyo's public-key shape), never a
    private key however written (E037, E039 report the others; the tag renders nothing).
    With several accounts, the public key of the account ACCOUNT_RESOLVER names."""
    key = klaviyo_settings.get("PUBLIC_API_KEY", None)
    if request is not None and klaviyo_settings.get("ACCOUNT_RESOLVER") is not None:
        try:
            key = accounts.get_account(accounts.account_for(request=request)).public_api_key
        except KlaviyoValidationError:
            return None
    return accounts.usable_public_key(key)


def script_url(key: str) -> str:
    base = klaviyo_settings.KLAVIYO_JS_URL
    return f"{base}{'&' if '?' in base else '?'}{urlencode({'company_id': key})}"


def _events_url() -> str | None:
    for name in ("klaviyo-storefront-events", "django_klaviyo:klaviyo-storefront-events"):
        try:
            return reverse(name)
        except NoReverseMatch:
            continue
    return None


def _identify(context: template.Context) -> dict[str, str]:
    request = context.get("request")
    if not klaviyo_settings.IDENTIFY_USERS or request is None:
        return {}
    profile = identity.user_profile(getattr(request, "user", None))
    return {k: str(profile[k]) for k in ("email", "external_id") if profile.get(k)}


@register.simple_tag(takes_context=True)
def klaviyo_js(context: template.Context) -> SafeString:
    key = public_key(context.get("request"))
    if key is None:
        return mark_safe(
            "<!-- django-klaviyo: klaviyo.js is not loaded: PUBLIC_API_KEY is not set "
            "or is not a public key (see manage.py check). -->"
        )
    request = context.get("request")
    via = klaviyo_settings.BROWSE_EVENTS_VIA
    if via not in ("server", "browser"):
        raise ImproperlyConfigured(
            f"KLAVIYO['BROWSE_EVENTS_VIA'] must be 'server' or 'browser', not {via!r}."
        )
    events_url = _events_url() if via == "server" else None
    config: dict[str, Any] = {
        "identify": _identify(context),
        "eventsUrl": events_url,
        "csrfToken": get_token(request) if request is not None and events_url else None,
    }
    if request is not None:
        identity.remember_visitor(request)  # keeps a landing page's _kx for later events
    nonce = _nonce_attr(context)
    return format_html(
        '<script{} async src="{}"></script>\n{}\n<script{} defer src="{}"></script>',
        nonce,
        script_url(key),
        json_script(config, CONFIG_ID),
        nonce,
        static("django_klaviyo/storefront.js"),
    )


def _event_json(element_id: str, data: Mapping[str, Any]) -> SafeString:
    # DjangoJSONEncoder (json_script's): Decimals and dates as strings, which the
    # endpoint's serializer reads back; storefront.js reads the element on load.
    return json_script(dict(data), element_id)


def viewed_item(properties: Mapping[str, Any]) -> dict[str, Any]:
    """klaviyo.js's trackViewedItem shape, from Viewed Product's properties."""
    metadata = {k: properties[k] for k in ("Brand", "Price", "CompareAtPrice") if k in properties}
    item = {
        "Title": properties.get("ProductName"),
        "ItemId": properties.get("ProductID"),
        "Categories": properties.get("Categories"),
        "ImageUrl": properties.get("ImageURL"),
        "Url": properties.get("URL"),
        "Metadata": metadata,
    }
    return {k: v for k, v in item.items() if v not in (None, "", [])}


@register.simple_tag
def klaviyo_viewed_product(product: Mapping[str, Any]) -> SafeString:
    properties = cart.product_properties(product)
    return _event_json(
        "klaviyo-viewed-product",
        {
            "event": "viewed_product",
            "body": {"event": "viewed_product", "product": dict(product)},
            "metric": order_fields.metric("viewed_product"),
            "properties": properties,
            "viewedItem": viewed_item(properties),
        },
    )


@register.simple_tag(takes_context=True)
def klaviyo_added_to_cart(
    context: template.Context,
    item: Mapping[str, Any],
    items: Iterable[Mapping[str, Any]] | None = None,
    currency: str | None = None,
) -> SafeString:
    basket = [dict(i) for i in items] if items is not None else [dict(item)]
    properties = cart.added_item(item)
    summary = cart.items_summary(cart.cart_items(basket))
    properties.update(summary)
    _with_value(properties, summary["Items"])
    body: dict[str, Any] = {"event": "added_to_cart", "item": dict(item), "items": basket}
    if currency:
        body["currency"] = currency
    return _event_json(
        "klaviyo-added-to-cart",
        {
            "event": "added_to_cart",
            "body": body,
            "metric": order_fields.metric("added_to_cart"),
            "properties": _with_checkout_url(context, properties),
        },
    )


@register.simple_tag(takes_context=True)
def klaviyo_started_checkout(
    context: template.Context,
    items: Iterable[Mapping[str, Any]],
    checkout_id: str,
    currency: str | None = None,
) -> SafeString:
    basket = [dict(i) for i in items]
    properties = cart.items_summary(cart.cart_items(basket))
    properties["CheckoutId"] = str(checkout_id)
    _with_value(properties, properties["Items"])
    request = context.get("request")
    if request is not None and klaviyo_settings.BROWSE_EVENTS_VIA == "browser":
        properties["$event_id"] = f"{checkout_id}-{_checkout_start(request, checkout_id, basket)}"
    body: dict[str, Any] = {
        "event": "started_checkout",
        "items": basket,
        "checkout_id": str(checkout_id),
    }
    if currency:
        body["currency"] = currency
    return _event_json(
        "klaviyo-started-checkout",
        {
            "event": "started_checkout",
            "body": body,
            "metric": order_fields.metric("started_checkout"),
            "properties": _with_checkout_url(context, properties),
        },
    )


@register.simple_tag(takes_context=True)
def klaviyo_viewed_category(context: template.Context, category: Mapping[str, Any]) -> SafeString:
    properties = discovery.category_properties(category)
    return _discovery_json(context, "viewed_category", {"category": dict(category)}, properties)


@register.simple_tag(takes_context=True)
def klaviyo_searched_site(context: template.Context, term: Any, result_count: Any) -> SafeString:
    """Nothing for an empty term (no search was made); a long one is cut, never refused:
    a visitor's long query must not break the results page."""
    if not isinstance(term, str) or not " ".join(term.split()):
        return mark_safe("")
    properties = discovery.search_properties(term, result_count)
    body = {"term": properties[discovery.SEARCH_TERM], "result_count": result_count}
    return _discovery_json(context, "searched_site", body, properties)


def _discovery_json(
    context: template.Context, event: str, body: dict[str, Any], properties: dict[str, Any]
) -> SafeString:
    request = context.get("request")
    if request is not None and klaviyo_settings.BROWSE_EVENTS_VIA == "browser":
        # The server's unique_id rule; a repeat within BROWSE_REPEAT_AFTER keeps its time.
        subject = discovery.subject(event, properties)
        window = klaviyo_settings.BROWSE_REPEAT_AFTER
        properties["$event_id"] = (
            f"{subject}-{_first_seen(request, f'klaviyo_{event}_start', subject, window)}"
        )
    return _event_json(
        f"klaviyo-{event.replace('_', '-')}",
        {
            "event": event,
            "body": {"event": event, **body},
            "metric": order_fields.metric(event),
            "properties": properties,
        },
    )


SESSION_CHECKOUT_START = "klaviyo_checkout_start"


def _with_value(properties: dict[str, Any], items: list[dict[str, Any]]) -> None:
    # klaviyo.js takes the event value as the "$value" property (the server's `value`).
    total = cart.items_value(items)
    if total is not None:
        properties["$value"] = total


def _checkout_start(request: Any, checkout_id: Any, basket: list[dict[str, Any]]) -> int:
    """The Unix time naming this checkout start: the session's earlier start when this is
    a reload of the same cart within STARTED_CHECKOUT_REPEAT_AFTER (Klaviyo then keeps one
    event for both), else now. The session is the visit, as on the server."""
    cart_json = json.dumps([str(checkout_id), basket], sort_keys=True, default=str)
    key = hashlib.sha256(cart_json.encode()).hexdigest()[:24]
    window = klaviyo_settings.STARTED_CHECKOUT_REPEAT_AFTER
    return _first_seen(request, SESSION_CHECKOUT_START, key, window)


def _first_seen(request: Any, slot: str, key: str, window: float) -> int:
    """The Unix time ``key`` was first seen in this session within ``window`` seconds
    (the session's ``slot`` keeps the latest), else now, remembered."""
    now = int(time.time())
    session = getattr(request, "session", None)
    if session is None:
        return now
    last = session.get(slot)
    if (
        isinstance(last, dict)
        and last.get("key") == key
        and isinstance(last.get("at"), int)
        and now - last["at"] < window
    ):
        return last["at"]
    session[slot] = {"key": key, "at": now}
    return now


IDENTIFY_FIELDS = ("email", "phone_number")


@register.simple_tag
def klaviyo_identify(field: str = "email") -> SafeString:
    """`` data-klaviyo-identify="email"``: put it in a checkout's email (or phone) input."""
    if field not in IDENTIFY_FIELDS:
        raise template.TemplateSyntaxError(
            f"klaviyo_identify takes one of {', '.join(IDENTIFY_FIELDS)}, not {field!r}."
        )
    return format_html(' data-klaviyo-identify="{}"', field)


def _with_checkout_url(context: template.Context, properties: dict[str, Any]) -> dict[str, Any]:
    # Only the browser path needs it here; the endpoint signs its own.
    request = context.get("request")
    if request is not None and klaviyo_settings.BROWSE_EVENTS_VIA == "browser":
        link = cartlinks.checkout_url(request)
        if link:
            properties["CheckoutURL"] = link
    return properties


@register.inclusion_tag("django_klaviyo/back_in_stock_form.html", takes_context=True)
def klaviyo_back_in_stock_form(
    context: template.Context, variant: Any, label: str = "Email me when it's back"
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
        "nonce": _nonce_attr(context),
    }
