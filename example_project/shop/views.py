"""The example storefront's pages. Browse events are sent by the page's tags
({% klaviyo_viewed_product %}, {% klaviyo_viewed_category %}, {% klaviyo_searched_site %}
etc.) through django-klaviyo's endpoint; the order's events by the order's save
(shop.services.place_order); marketing consent by the checkout and signup forms
(shop.forms), in the order's or the new user's transaction."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from django_klaviyo.storefront.identity import visitor_anonymous_id
from shop import cart as carts
from shop import services
from shop.forms import CheckoutForm, SignupForm
from shop.models import Order, Product


def product_list(request: HttpRequest) -> HttpResponse:
    products = Product.objects.all()
    names = sorted({name for product in products for name in product.categories})
    categories = [{"slug": slugify(name), "name": name} for name in names if slugify(name)]
    context = {"products": products, "categories": categories}
    return render(request, "shop/product_list.html", context)


def category(request: HttpRequest, slug: str) -> HttpResponse:
    """The products of one category. Its id is the slug of its name, the external id the
    catalog sync gives the category (KLAVIYO["CATALOG"]), so the two match in Klaviyo."""
    products = [p for p in Product.objects.all() if slug in map(slugify, p.categories)]
    if not products:
        raise Http404("No such category.")
    name = next(c for c in products[0].categories if slugify(c) == slug)
    url = request.build_absolute_uri(reverse("shop:category", args=[slug]))
    context = {
        "name": name,
        "products": products,
        "klaviyo_category": {"category_id": slug, "name": name, "url": url},
    }
    return render(request, "shop/category.html", context)


def search(request: HttpRequest) -> HttpResponse:
    """A simple name search; the term is the visitor's, shown escaped."""
    term = request.GET.get("q", "").strip()[:100]
    products = list(Product.objects.filter(name__icontains=term)) if term else []
    return render(request, "shop/search.html", {"term": term, "products": products})


def product_detail(request: HttpRequest, sku: str) -> HttpResponse:
    product = get_object_or_404(Product, sku=sku)
    context = {"product": product, "klaviyo_product": carts.product_dict(request, product)}
    return render(request, "shop/product_detail.html", context)


@require_POST
def cart_add(request: HttpRequest, sku: str) -> HttpResponse:
    product = get_object_or_404(Product, sku=sku)
    if not product.in_stock:
        messages.error(request, f"{product.name} is sold out.")
        return redirect(product)
    carts.add(request, product)
    # The cart page reports Added to Cart once, for this item.
    request.session["shop_just_added"] = product.sku
    return redirect("shop:cart")


def cart_view(request: HttpRequest) -> HttpResponse:
    cart = carts.current_cart(request)
    items = carts.lines(request, cart)
    added_sku = request.session.pop("shop_just_added", None)
    added = next((item for item in items if item["sku"] == added_sku), None)
    context = {"cart": cart, "items": items, "total": carts.total(items), "added": added}
    return render(request, "shop/cart.html", context)


def checkout(request: HttpRequest) -> HttpResponse:
    cart = carts.current_cart(request)
    items = carts.lines(request, cart)
    if not items:
        return redirect("shop:cart")
    error = None
    form = CheckoutForm(
        request.POST or None,
        initial={"email": request.user.email or ""} if request.user.is_authenticated else None,
    )
    if request.method == "POST" and form.is_valid():
        try:
            # The order and the consent its boxes gave: one transaction, so a checkout
            # that fails subscribes nobody.
            with transaction.atomic():
                order = _place(request, form.cleaned_data["email"], items)
                form.subscribe_consent(about=order)
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            cart.checked_out = True
            cart.save(update_fields=["checked_out", "updated_at"])
            request.session["shop_last_order"] = order.number
            return redirect("shop:order-done", number=order.number)
    context = {"cart": cart, "items": items, "total": carts.total(items), "error": error}
    return render(request, "shop/checkout.html", {**context, "form": form})


def _place(request: HttpRequest, email: str, items: list[dict[str, Any]]) -> Order:
    return services.place_order(
        customer=request.user if request.user.is_authenticated else None,
        email=email,
        lines=[
            {
                "product_id": item["product_id"],
                "sku": item["sku"],
                "name": item["name"],
                "quantity": item["quantity"],
                "unit_price": item["price"],
                "image_url": item["image_url"],
                "product_url": item["product_url"],
                "categories": item["categories"],
                "brand": item["brand"],
            }
            for item in items
        ],
        anonymous_id=visitor_anonymous_id(request) or "",
    )


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        # The new customer and the consent they gave, in one transaction.
        with transaction.atomic():
            user = form.save()
            form.subscribe_consent(about=user)
        login(request, user)
        return redirect("shop:products")
    return render(request, "shop/signup.html", {"form": form})


def order_done(request: HttpRequest, number: str) -> HttpResponse:
    # Only the session that placed the order sees its confirmation.
    if request.session.get("shop_last_order") != number:
        raise Http404("No such order in this session.")
    order = get_object_or_404(Order, number=number)
    return render(request, "shop/order_done.html", {"order": order})
