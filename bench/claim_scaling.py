"""Claim cost and flush memory as the backlog grows (PostgreSQL).

1. Time to claim a batch of 1000 with ``flush.claim_batch`` with 10k vs 1M due rows
   (rows inserted with ``INSERT ... SELECT generate_series``, with time-ordered ids as
   the app makes them). Each measurement claims the next batch (claimed rows stay
   claimed, as in a flush); medians of 8 claims.
   Target: 1M / 10k <= 1.5.
2. Peak traced memory (tracemalloc) while flushing 10k vs 100k rows in batches of 1000
   against the sandbox (another process, no rate limits). Target: flat (ratio ~1).
"""

from __future__ import annotations

import time
import tracemalloc

from bench.common import (
    insert_select_sql,
    median,
    parse_bench_args,
    print_header,
    print_result,
    sandbox_process,
    setup_django,
    sized,
    truncate,
)

CLAIMS = 8  # 10k rows hold 10 batches
CLAIM_TARGET = 1.5
MEMORY_TARGET = 1.5


def insert_due_rows(count: int) -> None:
    from django.db import connection

    from django_klaviyo.models import OutboxEvent

    table = OutboxEvent._meta.db_table
    # Columns not named here take what a new row saves (insert_select_sql), so a column
    # added to OutboxEvent later does not break the benchmark.
    sql, params = insert_select_sql(
        OutboxEvent,
        {
            "id": """(lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint), 12, '0')
                || '7' || substr(md5(g::text), 1, 3) || '8' || lpad(to_hex(g), 15, '0'))::uuid""",
            "kind": "'event'",
            "payload": """jsonb_build_object(
                'metric', 'Placed Order',
                'profile', jsonb_build_object('email', 'c' || mod(g, 5000) || '@example.com'),
                'properties', jsonb_build_object('OrderId', 'o' || g),
                'time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                'value', 10.0, 'value_currency', 'USD')""",
            "metric": "'Placed Order'",
            "unique_id": "'cl-' || g",
            "profile_key": "'email:c' || mod(g, 5000) || '@example.com'",
            "status": "'pending'",
            "next_attempt_at": "now() - interval '1 minute' + g * interval '1 microsecond'",
            "created_at": "now()",
            "updated_at": "now()",
        },
        "FROM generate_series(1, %(count)s) AS g",
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {**params, "count": count})
    # A backlog that has been there a while has been vacuumed (hint bits, statistics);
    # VACUUM cannot run inside a transaction block, hence outside the cursor above.
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {table}")


def claim_time() -> float:
    """Median time of CLAIMS successive claims of 1000 (after one warm-up claim). Claimed
    rows stay claimed, as in a real flush: each claim takes the next 1000 due rows."""
    from django_klaviyo.flush.claim import claim_batch

    times = []
    for i in range(CLAIMS + 1):
        start = time.perf_counter()
        rows = claim_batch(owner=f"bench-{i}", batch_size=1000)
        elapsed = time.perf_counter() - start
        assert len(rows) == 1000, f"claim {i} returned {len(rows)} rows"
        if i:
            times.append(elapsed)
    return median(times)


def flush_peak(count: int, url: str) -> tuple[int, float]:
    from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter
    from django_klaviyo.flush import flush_outbox

    truncate()
    insert_due_rows(count)
    client = KlaviyoClient(api_url=url, rate_limiter=UnlimitedRateLimiter())
    tracemalloc.start()
    start = time.perf_counter()
    report = flush_outbox(client=client, batch_size=1000)
    elapsed = time.perf_counter() - start
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.sent == count, report.summary_lines()
    return peak, elapsed


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=("postgres",), default="postgres")
    parser.add_argument("--skip-memory", action="store_true", help="Only the claim part.")
    args = parse_bench_args(parser)
    setup_django(args.db)
    print_header("claim cost and flush memory vs backlog (postgres)")

    insert_due_rows(10_000)
    small = claim_time()
    truncate()
    insert_due_rows(sized(1_000_000, 20_000))
    large = claim_time()
    ratio = large / small
    print_result(
        "claim_batch_postgres",
        claim_ms_10k=small * 1000,
        claim_ms_1M=large * 1000,
        RATIO=ratio,
        target=f"<= {CLAIM_TARGET}",
        met=ratio <= CLAIM_TARGET,
    )

    if args.skip_memory:
        return
    with sandbox_process(enforce_rate_limits=False) as url:
        peak_small, t_small = flush_peak(sized(10_000, 1_000), url)
        peak_large, t_large = flush_peak(sized(100_000, 2_000), url)
    ratio = peak_large / peak_small
    print_result(
        "flush_memory_postgres",
        peak_mib_10k=peak_small / 2**20,
        peak_mib_100k=peak_large / 2**20,
        RATIO=ratio,
        target=f"<= {MEMORY_TARGET} (flat)",
        met=ratio <= MEMORY_TARGET,
        seconds_10k=t_small,
        seconds_100k=t_large,
    )
    truncate()


if __name__ == "__main__":
    main()
