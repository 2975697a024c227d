"""Backfill throughput and memory: ``manage.py klaviyo_backfill orders`` over a large
order history (PostgreSQL).

Orders (one line each, placed, spread over two years) are inserted with ``INSERT ... SELECT
generate_series``; the outbox is emptied; then the command runs as an operator would
(``--no-progress``, default batch of 1,000). Figures per size: source rows per second and
the process's peak resident memory during the run (VmHWM, reset before the run through
/proc/self/clear_refs). Flat memory means the peak does not grow with the history.

    .venv/bin/python -m bench.backfill [--sizes 100000,1000000] [--smoke]
"""

from __future__ import annotations

import argparse
import time
from io import StringIO
from pathlib import Path

from bench.common import (
    insert_select_sql,
    parse_bench_args,
    print_header,
    print_result,
    setup_django,
    sized,
    truncate,
)


def seed(size: int) -> None:
    """``size`` placed orders, one line each, spread over two years.

    Columns not named here take what a new row saves (insert_select_sql), so a column added
    to the example shop's models later does not break the benchmark."""
    from django.db import connection
    from shop.models import Order, OrderLine

    orders, params = insert_select_sql(
        Order,
        {
            "number": "'B-' || i",
            "email": "'buyer' || (i %% 50000) || '@example.com'",
            "status": "'placed'",
            "total": "25.00",
            "placed_at": "now() - interval '730 days' + (i * interval '1 second') * 60",
        },
        "FROM generate_series(1, %(size)s) AS i",
    )
    lines, line_params = insert_select_sql(
        OrderLine,
        {
            "order_id": "id",
            "product_id": "'TEE'",
            "sku": "'TEE-BLK'",
            "name": "'Black T-shirt'",
            "unit_price": "25.00",
            "categories": """'["Apparel"]'::jsonb""",
        },
        f"FROM {Order._meta.db_table}",
    )
    with connection.cursor() as cursor:
        cursor.execute(orders, {**params, "size": size})
        cursor.execute(lines, line_params)
        cursor.execute("ANALYZE shop_order; ANALYZE shop_orderline")


def rss_peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_rss_peak() -> None:
    # "5" resets the peak resident set size (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def run(size: int, max_seconds: float | None) -> None:
    from django.core.management import call_command

    from django_klaviyo.models import BackfillCheckpoint, OutboxEvent
    from django_klaviyo.outbox import backfill

    truncate()
    BackfillCheckpoint.objects.all().delete()
    seed(size)
    reset_rss_peak()
    before = rss_peak_kib()
    start = time.perf_counter()
    if max_seconds is None:
        out = StringIO()
        call_command("klaviyo_backfill", "orders", "--no-progress", stdout=out)
        print(out.getvalue().strip().splitlines()[-1])
    else:
        # As many batches as fit in max_seconds (the command's own loop, stopped between
        # batches as Ctrl-C would); the rest of the history stays for a resumed run.
        job = backfill.Backfill("orders")
        for _ in job.batches():
            if time.perf_counter() - start > max_seconds:
                break
    elapsed = time.perf_counter() - start
    peak = rss_peak_kib()
    rows = OutboxEvent.objects.count()
    if max_seconds is None:
        assert rows == size, (rows, size)
    print_result(
        f"backfill_orders_{size}",
        orders_in_history=size,
        outbox_rows=rows,
        seconds=elapsed,
        rows_per_s=rows / elapsed,
        rss_peak_mib=peak / 1024,
        rss_at_start_mib=before / 1024,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes")
    parser.add_argument(
        "--max-seconds",
        type=float,
        help="Stop each run after this long (between batches) when the machine is too slow "
        "to enqueue the whole history in the time at hand.",
    )
    args = parse_bench_args(parser)
    args.sizes = args.sizes or sized("100000,1000000", "300,1200")
    setup_django("postgres")
    print_header("klaviyo_backfill orders: rows/s and peak memory (PostgreSQL)")
    for size in (int(s) for s in args.sizes.split(",")):
        run(size, args.max_seconds)


if __name__ == "__main__":
    main()
