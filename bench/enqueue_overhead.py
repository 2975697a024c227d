"""Enqueue overhead: placing an order (3 lines) with tracking on vs off.

Tracking off is ``KLAVIYO["ENABLED"] = False`` (the baseline). Rounds alternate on and off,
each round placing ORDERS orders; the figure per condition is the median over rounds of
the mean time per order. Target: on / off <= 1.2.
"""

from __future__ import annotations

import time

from bench.common import median, parse_args, print_header, print_result, setup_django

ROUNDS = 15
ORDERS = 100
TARGET = 1.2
LINES = [
    {"sku": "TEA-1", "name": "Green tea", "quantity": 2, "unit_price": "4.50"},
    {"sku": "CUP-2", "name": "Cup", "quantity": 1, "unit_price": "12.00"},
    {"sku": "POT-3", "name": "Teapot", "quantity": 1, "unit_price": "35.00"},
]


def place_orders(count: int, tag: str) -> float:
    from shop.services import place_order

    start = time.perf_counter()
    for i in range(count):
        place_order(email=f"buyer{i % 50}@example.com", lines=LINES, number=f"{tag}-{i}")
    return (time.perf_counter() - start) / count


def main() -> None:
    args = parse_args(__doc__)
    setup_django(args.db)
    from django.conf import settings
    from django.test import override_settings

    from django_klaviyo.models import OutboxEvent

    print_header(f"enqueue overhead ({args.db})")
    on_cfg = {**settings.KLAVIYO, "ENABLED": True}
    off_cfg = {**settings.KLAVIYO, "ENABLED": False}
    times: dict[str, list[float]] = {"on": [], "off": []}
    for warm in range(2):  # warm caches, connections and the query planner
        for name, cfg in (("on", on_cfg), ("off", off_cfg)):
            with override_settings(KLAVIYO=cfg):
                place_orders(20, f"warm{warm}{name}")
    for round_ in range(ROUNDS):
        order = (("on", on_cfg), ("off", off_cfg))
        for name, cfg in order if round_ % 2 == 0 else reversed(order):
            with override_settings(KLAVIYO=cfg):
                times[name].append(place_orders(ORDERS, f"r{round_}{name}"))
    on, off = median(times["on"]), median(times["off"])
    rows = OutboxEvent.objects.count()
    ratio = on / off
    print_result(
        f"enqueue_overhead_{args.db}",
        tracking_on_ms=on * 1000,
        tracking_off_ms=off * 1000,
        RATIO=ratio,
        target=f"<= {TARGET}",
        met=ratio <= TARGET,
        outbox_rows=rows,
    )


if __name__ == "__main__":
    main()
