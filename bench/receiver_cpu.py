"""CPU time spent inside the order save receiver, against the floor writer's.

The wall-clock ratios of ``bench.enqueue_overhead`` swing with the machine's load and its
disk. This script times only what tracking adds, with this process's CPU clock: the
package's ``post_save`` receiver on the order (both saves of a placed order: the mapper,
the rules, the encoding and its INSERT) and, in the other condition, the floor writer of
``bench.enqueue_overhead`` (the same INSERT with a precomputed row, no Python). Their
difference is the Python the save path costs above the database floor.

Rounds alternate the two conditions, each placing ORDERS 3-line orders; medians of the
per-round means, in µs per order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.common import median, parse_args, print_header, print_result, setup_django, sized

ROUNDS = 12
ORDERS = 100


class CpuClock:
    """Wraps a receiver and adds up the process CPU time spent inside it."""

    def __init__(self) -> None:
        self.total = 0.0

    def wrap(self, receiver: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return receiver(*args, **kwargs)
            finally:
                self.total += time.process_time() - start

        return timed


def main() -> None:
    args = parse_args(__doc__ or "")
    setup_django(args.db)
    from django.conf import settings
    from django.db.models.signals import post_save
    from django.test import override_settings
    from shop.models import Order

    from bench.enqueue_overhead import FloorWriter, place_orders
    from django_klaviyo.orders import receivers

    print_header(f"save receiver CPU ({args.db})")
    on_cfg = {**settings.KLAVIYO, "ENABLED": True}
    off_cfg = {**settings.KLAVIYO, "ENABLED": False}
    clock = CpuClock()
    uid = "django_klaviyo_order_save"
    post_save.disconnect(sender=Order, dispatch_uid=uid)
    post_save.connect(
        clock.wrap(receivers._order_post_save), sender=Order, dispatch_uid=uid, weak=False
    )
    with override_settings(KLAVIYO=on_cfg):
        place_orders(1, "template")  # the real row the floor copies
    floor = clock.wrap(FloorWriter())
    times: dict[str, list[float]] = {"receiver": [], "floor": []}
    orders = sized(ORDERS, 3)
    for round_ in range(-2, sized(ROUNDS, 1)):  # two warm-up rounds
        for name in ("receiver", "floor"):
            clock.total = 0.0
            if name == "floor":
                post_save.connect(floor, sender=Order, dispatch_uid="bench_floor", weak=False)
            try:
                with override_settings(KLAVIYO=on_cfg if name == "receiver" else off_cfg):
                    place_orders(orders, f"c{round_}{name}")
            finally:
                post_save.disconnect(sender=Order, dispatch_uid="bench_floor")
            if round_ >= 0:
                times[name].append(clock.total / orders)
    receiver, bare = median(times["receiver"]), median(times["floor"])
    print_result(
        f"receiver_cpu_{args.db}",
        receiver_us=receiver * 1e6,
        floor_writer_us=bare * 1e6,
        python_above_floor_us=(receiver - bare) * 1e6,
        receiver_vs_floor=receiver / bare,
        receiver_min_us=min(times["receiver"]) * 1e6,
        receiver_max_us=max(times["receiver"]) * 1e6,
    )


if __name__ == "__main__":
    main()
