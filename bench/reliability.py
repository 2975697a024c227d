"""Reliability under fire: 4 ``klaviyo_flush --loop`` workers, 30% sandbox faults,
SIGKILLs at random moments, and a lease shorter than a slow batch.

The outbox holds order events and list adds for profiles Klaviyo does not know yet (each
batch of those imports its profiles, polls the job, reads its errors and looks the ids
up: slower than the lease, so the lease must be renewed). Workers are killed with SIGKILL
every few seconds and replaced. At the end the script reports, from the sandbox's own
record of every request it processed: events expected, delivered (distinct), duplicate
deliveries (a processed repeat of something already delivered), lost (never delivered),
rows dead, and seconds until nothing was left to send.

    .venv/bin/python -m bench.reliability [--events 6000] [--list-adds 400] [--kills 4]

PostgreSQL only (``BENCH_PG_URL``, default a database of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault(
    "BENCH_PG_URL", "postgres://postgres:postgres@127.0.0.1:5432/django_klaviyo_bench_reliability"
)

from bench import common
from bench.common import (
    ROOT,
    default_sizes,
    parse_bench_args,
    print_header,
    print_result,
    setup_django,
)

FAULTS = {
    # 30% of requests fail; few of them ambiguously (processed, then no answer).
    "rate_429": 0.10,
    "rate_500": 0.08,
    "rate_503": 0.10,
    "rate_slow": 0.01,
    "rate_drop": 0.01,
    "slow_seconds": 3.0,
    "seed": 11,
}


def start_worker(api_url: str, lease: int, batch: int, errors: Any) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.reliability_settings",
        BENCH_API_URL=api_url,
        BENCH_LEASE_SECONDS=str(lease),
        DATABASE_URL=os.environ["BENCH_DATABASE_URL"],
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "example_project")]),
    )
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "django", "klaviyo_flush", "--loop", "--verbosity", "0"),
            *("--batch-size", str(batch), "--idle-sleep", "0.2"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )


def seed(events: int, list_adds: int, list_id: str) -> None:
    from django.db import transaction

    import django_klaviyo
    from django_klaviyo.outbox import build_event, enqueue_many

    rows = [
        build_event(
            metric="Placed Order",
            profile={"email": f"customer{i % 700}@example.com"},
            properties={"OrderId": f"o{i}"},
            value=10.0,
            value_currency="USD",
            unique_id=f"o{i}",
        )
        for i in range(events)
    ]
    with transaction.atomic():
        enqueue_many(rows)
        for i in range(list_adds):
            django_klaviyo.add_to_list(list_id, {"email": f"new{i}@example.com"})


def unfinished() -> int:
    from django_klaviyo.models import OutboxEvent

    return OutboxEvent.objects.exclude(status__in=OutboxEvent.TERMINAL_STATUSES).count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int)
    parser.add_argument("--list-adds", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--kills", type=int)
    parser.add_argument("--kill-every", type=float)
    parser.add_argument("--lease", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--latency", type=float)
    parser.add_argument("--timeout", type=float, default=900.0)
    # (full, smoke): smoke still kills a worker mid-run and checks nothing is lost.
    args = default_sizes(
        parse_bench_args(parser),
        events=(6000, 100),
        list_adds=(400, 20),
        workers=(4, 2),
        kills=(4, 1),
        kill_every=(4.0, 1.0),
        latency=(0.3, 0.01),
    )

    setup_django("postgres")
    from django_klaviyo.models import OutboxEvent
    from django_klaviyo.testing.sandbox import SandboxServer

    print_header(
        f"Reliability: {args.workers} workers, 30% faults, SIGKILLs, a lease shorter than a batch"
    )
    record = Path(tempfile.mkdtemp()) / "sandbox.jsonl"
    log = (record.parent / "workers.log").open("w")
    print(f"workers' errors: {record.parent / 'workers.log'}")
    rng = random.Random(5)
    sandbox = SandboxServer(
        latency=args.latency, faults=FAULTS, record_path=record, time_scale=0.1
    ).start()
    try:
        list_id = sandbox.state.create_list("Reliability")["id"]
        seed(args.events, args.list_adds, list_id)
        started = time.monotonic()
        workers = [
            start_worker(sandbox.url, args.lease, args.batch_size, log) for _ in range(args.workers)
        ]
        kills = 0
        next_kill = started + args.kill_every
        drained: float | None = None
        while unfinished():
            if time.monotonic() - started > args.timeout:
                print(f"NOT DRAINED after {args.timeout:.0f} s")
                break
            if kills < args.kills and time.monotonic() >= next_kill:
                victim = rng.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait(timeout=30)
                workers[victim] = start_worker(sandbox.url, args.lease, args.batch_size, log)
                kills += 1
                next_kill = time.monotonic() + args.kill_every
            time.sleep(0.2)
        else:
            drained = time.monotonic() - started
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
        events = sandbox.state.events("Placed Order")
        duplicate_events = sandbox.state.duplicate_events
        members = set(sandbox.state.members(list_id))
    finally:
        sandbox.stop()

    added: Counter[str] = Counter()
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        if entry["operation"] == "add_profiles_to_list":
            added.update(item["id"] for item in entry["body"]["data"])
    delivered_events = {e["unique_id"] for e in events}
    expected = args.events + args.list_adds
    delivered = len(delivered_events) + len(members)
    duplicates = duplicate_events + sum(n - 1 for n in added.values())
    dead = OutboxEvent.objects.filter(status=OutboxEvent.Status.DEAD).count()
    lost = expected - delivered
    print_result(
        "reliability",
        workers=args.workers,
        fault_share=round(sum(v for k, v in FAULTS.items() if k.startswith("rate_")), 2),
        sigkills=kills,
        lease_seconds=args.lease,
        expected=expected,
        delivered=delivered,
        duplicate_deliveries=duplicates,
        duplicate_share=round(duplicates / expected, 4),
        lost=lost,
        dead=dead,
        seconds_to_drain=round(drained, 1) if drained is not None else "not drained",
        unfinished=unfinished(),
    )
    if drained is None or lost:
        raise SystemExit("FAILED: not drained, or events lost")
    # In smoke mode one killed batch is a large share of the few events: no verdict on it.
    if duplicates >= 0.05 * expected and not common.SMOKE:
        raise SystemExit("FAILED: duplicates reached 5% of events")


if __name__ == "__main__":
    main()
