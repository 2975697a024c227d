"""Enqueue overhead: placing an order (3 lines) untracked, tracked, and with the database
floor, side by side.

- off: ``KLAVIYO["ENABLED"] = False`` (the baseline: the store's own writes).
- on: tracking on (the save receiver maps the order, cleans it and writes its outbox row).
- floor: tracking off, plus a receiver that writes the same outbox row by hand: the INSERT
  the package issues, with a precomputed row (copied from a real tracked order, only the
  id and keys made fresh). This is what the extra row costs the database, with no Python.

Rounds rotate the three conditions, each placing ORDERS orders; each figure is the median
over rounds of the mean time per order (wall clock; ``cpu_*``: this process's CPU time).
Targets: on / off <= 1.2, and the added cost (on - off) within 1.15x of the floor's
(floor - off).
``--db both`` runs SQLite then PostgreSQL, one after the other, in one command.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

from bench.common import median, parse_bench_args, print_header, print_result, setup_django, sized

ROUNDS = 15
ORDERS = 100
TARGET = 1.2
FLOOR_TARGET = 1.15
LINES = [
    {"sku": "TEA-1", "name": "Green tea", "quantity": 2, "unit_price": "4.50"},
    {"sku": "CUP-2", "name": "Cup", "quantity": 1, "unit_price": "12.00"},
    {"sku": "POT-3", "name": "Teapot", "quantity": 1, "unit_price": "35.00"},
]


def place_orders(count: int, tag: str) -> float:
    from shop.services import place_order

    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        place_order(email=f"buyer{i % 50}@example.com", lines=LINES, number=f"{tag}-{i}")
    CPU_TIMES.append((time.process_time() - cpu) / count)
    return (time.perf_counter() - start) / count


# This process's CPU time per order of the last place_orders() calls: on a loaded machine
# it is steadier than the wall clock. It leaves out the PostgreSQL server's own work (its
# ratios there are not the target's), but on SQLite it is all of the work but the disk.
CPU_TIMES: list[float] = []


class FloorWriter:
    """Writes one precomputed outbox row per placed order, by hand, in the save's
    transaction (a post_save receiver on the order, as the package's own)."""

    def __init__(self, payload: str | None = None) -> None:
        from django.db import connection

        from django_klaviyo.models import OutboxEvent

        fields = OutboxEvent._meta.concrete_fields
        qn = connection.ops.quote_name
        table = OutboxEvent._meta.db_table
        columns = [f.column for f in fields]
        as_text = "CAST(payload AS text)" if connection.vendor == "postgresql" else "payload"
        selected = ", ".join(as_text if c == "payload" else qn(c) for c in columns)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {selected} FROM {qn(table)} ORDER BY {qn('created_at')} DESC LIMIT 1"
            )
            self.template = list(cursor.fetchone())
        self.index = {c: i for i, c in enumerate(columns)}
        if payload is not None:
            self.template[self.index["payload"]] = payload
        json_placeholder = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
        placeholders = ", ".join(json_placeholder if c == "payload" else "%s" for c in columns)
        self.sql = (
            f"INSERT INTO {qn(table)} ({', '.join(qn(c) for c in columns)}) "
            f"VALUES ({placeholders}) ON CONFLICT ({qn('dedupe_key')}) DO NOTHING"
        )
        self.id_column = OutboxEvent._meta.pk
        self.count = 0

    def __call__(self, sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        from django.db import connection

        from django_klaviyo.models.outbox import new_outbox_id

        if instance.status != "placed":
            return
        self.count += 1
        params = list(self.template)
        params[self.index["id"]] = self.id_column.get_db_prep_value(new_outbox_id(), connection)
        params[self.index["dedupe_key"]] = f"floor:{instance.pk}"
        params[self.index["unique_id"]] = f"order-{instance.pk}-placed"
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument(
        "--floor-payload",
        help="The floor writes this JSON text as its payload instead of the tracked row's "
        "(e.g. '{}': what a row costs whatever it carries).",
    )
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="PostgreSQL: synchronous_commit = off for this session (every condition): "
        "the commit's WAL flush, the same in all three, is left out, which on a shared "
        "disk is most of the noise.",
    )
    args = parse_bench_args(parser)  # --smoke reaches the per-database runs as BENCH_SMOKE
    if args.db == "both":
        extra = ["--async-commit"] if args.async_commit else []
        if args.floor_payload is not None:
            extra += ["--floor-payload", args.floor_payload]
        for db in ("sqlite", "postgres"):
            subprocess.run(
                [sys.executable, "-m", "bench.enqueue_overhead", "--db", db, *extra], check=True
            )
        return
    setup_django(args.db)
    if args.async_commit and args.db == "postgres":
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")
    from django.conf import settings
    from django.db.models.signals import post_save
    from django.test import override_settings
    from shop.models import Order

    from django_klaviyo.models import OutboxEvent

    print_header(f"enqueue overhead ({args.db}{', async commit' if args.async_commit else ''})")
    on_cfg = {**settings.KLAVIYO, "ENABLED": True}
    off_cfg = {**settings.KLAVIYO, "ENABLED": False}
    with override_settings(KLAVIYO=on_cfg):
        place_orders(1, "template")  # the real row the floor copies
    floor = FloorWriter(args.floor_payload)
    conditions = ("on", "off", "floor")
    times: dict[str, list[float]] = {name: [] for name in conditions}
    cpu_times: dict[str, list[float]] = {name: [] for name in conditions}

    def run(name: str, count: int, tag: str) -> float:
        cfg = on_cfg if name == "on" else off_cfg
        if name == "floor":
            post_save.connect(floor, sender=Order, dispatch_uid="bench_floor")
        try:
            with override_settings(KLAVIYO=cfg):
                return place_orders(count, tag)
        finally:
            post_save.disconnect(sender=Order, dispatch_uid="bench_floor")

    for warm in range(sized(2, 1)):  # warm caches, connections and the query planner
        for name in conditions:
            run(name, sized(20, 2), f"warm{warm}{name}")
    for round_ in range(sized(ROUNDS, 1)):
        shift = round_ % 3
        for name in conditions[shift:] + conditions[:shift]:
            times[name].append(run(name, sized(ORDERS, 5), f"r{round_}{name}"))
            cpu_times[name].append(CPU_TIMES[-1])
    on, off, bare = (median(times[name]) for name in conditions)
    added, floor_added = on - off, bare - off
    cpu_on, cpu_off, cpu_bare = (median(cpu_times[name]) for name in conditions)
    print_result(
        f"enqueue_overhead_{args.db}",
        tracking_off_ms=off * 1000,
        tracking_on_ms=on * 1000,
        floor_ms=bare * 1000,
        RATIO=on / off,
        floor_ratio=bare / off,
        target=f"<= {TARGET}",
        met=on / off <= TARGET,
        added_ms=added * 1000,
        floor_added_ms=floor_added * 1000,
        added_vs_floor=added / floor_added if floor_added > 0 else float("nan"),
        added_target=f"<= {FLOOR_TARGET}",
        added_met=floor_added > 0 and added / floor_added <= FLOOR_TARGET,
        cpu_off_ms=cpu_off * 1000,
        cpu_on_ms=cpu_on * 1000,
        cpu_floor_ms=cpu_bare * 1000,
        cpu_ratio=cpu_on / cpu_off,
        cpu_added_vs_floor=(cpu_on - cpu_off) / (cpu_bare - cpu_off)
        if cpu_bare > cpu_off
        else float("nan"),
        outbox_rows=OutboxEvent.objects.count(),
        floor_rows=floor.count,
    )


if __name__ == "__main__":
    main()
