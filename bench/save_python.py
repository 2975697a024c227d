"""The save path's Python, step by step, on one warm 3-line order.

``bench.receiver_cpu`` times the whole receiver per order; under load its medians move by
±30% from run to run. This script times each step the receiver runs for a placed order
(no database): the mapper (``placed_order_events``), the rules and row build
(``build_events``) and the column preparation with the JSON encoding (``outbox._columns``),
each in a loop of LOOPS calls, best of REPEATS loops of process CPU time (the least
disturbed by other work on the machine). Also prints the row's encoded payload size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.common import parse_args, print_header, print_result, setup_django, sized

LOOPS = 2000
REPEATS = 9


def best_us(step: Callable[[], Any]) -> float:
    best = float("inf")
    loops = sized(LOOPS, 5)
    for _ in range(sized(REPEATS, 1)):
        start = time.process_time()
        for _ in range(loops):
            step()
        best = min(best, (time.process_time() - start) / loops)
    return best * 1e6


def main() -> None:
    args = parse_args(__doc__ or "")
    setup_django(args.db)
    from django.conf import settings
    from django.test import override_settings
    from shop.models import Order

    from bench.enqueue_overhead import place_orders
    from django_klaviyo import outbox
    from django_klaviyo.orders import mappers as ecommerce

    print_header(f"save path Python by step ({args.db})")
    with override_settings(KLAVIYO={**settings.KLAVIYO, "ENABLED": True}):
        place_orders(1, "steps")
        order = Order.objects.prefetch_related("lines").get()
        specs = ecommerce.placed_order_events(order)
        rows = outbox.build_events(specs)
        mapper = best_us(lambda: ecommerce.placed_order_events(order))
        rules = best_us(lambda: outbox.build_events(specs))
        columns = best_us(lambda: outbox._columns(rows[0]))
        payload_bytes = len(outbox._encode(rows[0].payload))
    print_result(
        f"save_python_{args.db}",
        mapper_us=mapper,
        rules_and_row_us=rules,
        columns_and_encoding_us=columns,
        total_us=mapper + rules + columns,
        payload_bytes=payload_bytes,
    )


if __name__ == "__main__":
    main()
