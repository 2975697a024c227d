"""Backfill throughput and memory: ``manage.py klaviyo_backfill orders`` over a large
order history (PostgreSQL).

Orders (one line each, placed, spread over two years) are inserted with ``INSERT ... SELECT
generate_series``; the outbox is emptied; then the command runs as an operator would
(``--no-progress``, default batch of 1,000). Figures per size: source rows per second and
the process's peak resident memory during the run (VmHWM, reset before the run through
/proc/self/clear_refs). Flat memory means the peak does not grow with the history.

    .venv/bin/python -m bench.backfill [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import time
from io import StringIO
from pathlib import Path

from bench.common import print_header, print_result, setup_django, truncate

SEED_SQL = """
INSERT INTO shop_order (number, customer_id, email, status, total, currency,
    billing_address, shipping_address, tracking_number, tracking_url, carrier,
    discount_code, cancel_reason, placed_at, created_at, updated_at)
SELECT 'B-' || i, NULL, 'buyer' || (i %% 50000) || '@example.com', 'placed', 25.00, 'USD',
    '{}'::jsonb, '{}'::jsonb, '', '', '', '', '',
    now() - interval '730 days' + (i * interval '1 second') * 60, now(), now()
FROM generate_series(1, %s) AS i;
INSERT INTO shop_orderline (order_id, product_id, sku, name, quantity, unit_price,
    image_url, product_url, categories, brand)
SELECT id, 'TEE', 'TEE-BLK', 'Black T-shirt', 1, 25.00, '', '', '["Apparel"]'::jsonb, ''
FROM shop_order;
"""


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
    from django.db import connection

    from django_klaviyo.models import BackfillCheckpoint, OutboxEvent
    from django_klaviyo.outbox import backfill

    truncate()
    BackfillCheckpoint.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(SEED_SQL, [size])
        cursor.execute("ANALYZE shop_order; ANALYZE shop_orderline")
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
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument(
        "--max-seconds",
        type=float,
        help="Stop each run after this long (between batches) when the machine is too slow "
        "to enqueue the whole history in the time at hand.",
    )
    args = parser.parse_args()
    setup_django("postgres")
    print_header("klaviyo_backfill orders: rows/s and peak memory (PostgreSQL)")
    for size in (int(s) for s in args.sizes.split(",")):
        run(size, args.max_seconds)


if __name__ == "__main__":
    main()
