"""One anonymous shopper in the example storefront, as a browser would go through it.

Through Django's test client: open a category page (Viewed Category), search the shop
for the product (Searched Site), open a product page, send its Viewed Product to the
browse-events endpoint (as storefront.js does), add the product to the cart (Added to
Cart, with a signed CheckoutURL), open the checkout (Started Checkout) and place the
order with an email. Every event carries the shopper's anonymous id, so after
``klaviyo_flush`` they are on one profile.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test import Client
from django.urls import reverse
from django.utils.text import slugify

from shop.models import Order, Product

EMBEDDED = re.compile(r'<script id="(klaviyo-[a-z-]+)" type="application/json">(.*?)</script>')


class Command(BaseCommand):
    help = "Browse, add to cart and check out as an anonymous shopper (browse events)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", default="browser@example.com")

    def handle(self, *args: Any, **options: Any) -> None:
        product = Product.objects.filter(inventory__gt=0).order_by("pk").first()
        if product is None:
            raise CommandError("No product in stock: run seed_shop first.")
        shopper = Client(enforce_csrf_checks=True, SERVER_NAME="localhost")
        slugs = [slugify(name) for name in product.categories if slugify(name)]
        if slugs:
            self._send_embedded(shopper, reverse("shop:category", args=[slugs[0]]))
        term = product.name.split()[-1].lower()
        self._send_embedded(shopper, f"{reverse('shop:search')}?q={quote(term)}")
        self._send_embedded(shopper, product.get_absolute_url())
        token = shopper.cookies["csrftoken"].value
        shopper.post(reverse("shop:cart-add", args=[product.sku]), HTTP_X_CSRFTOKEN=token)
        self._send_embedded(shopper, reverse("shop:cart"))
        self._send_embedded(shopper, reverse("shop:checkout"))
        answer = shopper.post(
            reverse("shop:checkout"), {"email": options["email"]}, HTTP_X_CSRFTOKEN=token
        )
        if answer.status_code != 302:
            raise CommandError(f"checkout failed ({answer.status_code})")
        order = Order.objects.order_by("-pk").first()
        self.stdout.write(
            f"order {order.number} for {order.email}, anonymous id {order.klaviyo_anonymous_id}"
        )

    def _send_embedded(self, shopper: Client, path: str) -> None:
        """Open ``path`` and post each event its tags embedded, as storefront.js would."""
        page = shopper.get(path).content.decode()
        found = dict(EMBEDDED.findall(page))
        config = json.loads(found["klaviyo-storefront-config"])
        for element_id, data in found.items():
            if element_id == "klaviyo-storefront-config":
                continue
            event = json.loads(data)
            answer = shopper.post(
                config["eventsUrl"],
                json.dumps(event["body"]),
                content_type="application/json",
                HTTP_X_CSRFTOKEN=config["csrfToken"],
            )
            if answer.status_code != 202:
                raise CommandError(f"{event['metric']} refused: {answer.content.decode()}")
            self.stdout.write(f"{event['metric']}: recorded ({path})")
