"""``manage.py seed_shop --customers N --orders M [--seed S]``: demo products, customers
and orders through the ordinary model saves and shop.services, so every change lands in
the Klaviyo outbox."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from django_klaviyo.models import OutboxEvent
from shop import services
from shop.models import Product

FIRST_NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Radia", "Linus", "Joan"]
LAST_NAMES = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Perlman"]
# (sku, name, price, categories, brand, inventory); the sticker set is sold out, for the
# back-in-stock form.
PRODUCTS = [
    ("TEE-BLK", "Black T-shirt", Decimal("19.99"), ["Apparel", "Tops"], "Northwind", 40),
    ("MUG-WHT", "White mug", Decimal("9.50"), ["Kitchen"], "Acme", 25),
    ("CAP-RED", "Red cap", Decimal("14.00"), ["Apparel", "Accessories"], "Northwind", 12),
    ("BAG-CNV", "Canvas tote", Decimal("24.00"), ["Accessories"], "Acme", 8),
    ("STK-SET", "Sticker set", Decimal("4.25"), ["Stationery"], "Paperie", 0),
]
SHOP_URL = "https://shop.example.com"


class Command(BaseCommand):
    help = "Create demo customers and orders (some fulfilled, cancelled or refunded)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--customers", type=int, default=10)
        parser.add_argument("--orders", type=int, default=20)
        parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        customers, orders = options["customers"], options["orders"]
        if customers < 0 or orders < 0:
            raise CommandError("--customers and --orders must be zero or more.")
        rng = random.Random(options["seed"])
        outbox_before = OutboxEvent.objects.count()
        products = self._products()
        users = [self._customer(rng, i) for i in range(customers)]
        counts = {"placed": 0, "fulfilled": 0, "cancelled": 0, "refunded": 0, "guest": 0}
        for i in range(orders):
            customer = rng.choice(users) if users and rng.random() < 0.8 else None
            if customer is None:
                counts["guest"] += 1
            order = services.place_order(
                customer=customer,
                email="" if customer else f"guest{i}-{rng.randrange(10**6)}@example.com",
                lines=self._lines(rng),
                shipping_address={
                    "first_name": rng.choice(FIRST_NAMES),
                    "address1": f"{rng.randrange(1, 999)} Market St",
                    "city": "San Francisco",
                    "region_code": "CA",
                    "country_code": "US",
                    "zip": "94103",
                },
            )
            counts["placed"] += 1
            roll = rng.random()
            if roll < 0.4:
                services.fulfil_order(
                    order,
                    tracking_number=f"1Z{rng.randrange(10**9):09d}",
                    tracking_url="https://tracking.example.com/",
                    carrier="UPS",
                )
                counts["fulfilled"] += 1
                roll = rng.random()
                if roll < 0.1:
                    services.refund_order(order)
                    counts["refunded"] += 1
                elif roll < 0.25:
                    # A partial refund: one unit of the first line.
                    services.refund(order, [(order.lines.first(), 1)], reason="Damaged")
                    counts["refunded"] += 1
            elif roll < 0.5:
                services.cancel_order(order)
                counts["cancelled"] += 1
        self.stdout.write(
            f"products: {products}; customers: {len(users)}; orders: {counts['placed']} "
            f"({counts['guest']} guest), fulfilled: {counts['fulfilled']}, "
            f"cancelled: {counts['cancelled']}, refunded: {counts['refunded']}; "
            f"outbox rows added: {OutboxEvent.objects.count() - outbox_before}"
        )

    def _products(self) -> int:
        """The catalog, saved like the store would (each save writes catalog rows)."""
        for sku, name, price, categories, brand, inventory in PRODUCTS:
            Product.objects.update_or_create(
                sku=sku,
                defaults={
                    "name": name,
                    "price": price,
                    "url": f"{SHOP_URL}/p/{sku}",
                    "image_url": f"{SHOP_URL}/img/{sku}.png",
                    "categories": categories,
                    "brand": brand,
                    "inventory": inventory,
                },
            )
        return len(PRODUCTS)

    def _customer(self, rng: random.Random, index: int) -> Any:
        user_model = get_user_model()
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        suffix = rng.randrange(10**6)
        with transaction.atomic():
            user = user_model(
                username=f"{first.lower()}{index}-{suffix}",
                email=f"{first.lower()}.{last.lower()}{index}-{suffix}@example.com",
                first_name=first,
                last_name=last,
            )
            user.set_unusable_password()
            if rng.random() < 0.4:
                # auth.User has no phone field; the default profile mapper reads a
                # phone_number attribute when a model (or this demo) provides one.
                user.phone_number = f"+1415555{rng.randrange(10**4):04d}"
            user.save()
        return user

    def _lines(self, rng: random.Random) -> list[dict[str, Any]]:
        picked = rng.sample(PRODUCTS, rng.randint(1, 3))
        return [
            {
                "product_id": sku.split("-")[0],
                "sku": sku,
                "name": name,
                "quantity": rng.randint(1, 3),
                "unit_price": price,
                "categories": categories,
                "image_url": f"{SHOP_URL}/img/{sku}.png",
                "product_url": f"{SHOP_URL}/p/{sku}",
            }
            for sku, name, price, categories, _brand, _inventory in picked
        ]
