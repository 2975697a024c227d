"""Scale-out: N ``klaviyo_flush`` processes on one PostgreSQL database against Klaviyo's
real bulk-event limit.

The sandbox (its own process) enforces Klaviyo's windows unscaled (bulk events: 10/s
burst, 150/min steady, 1,000 events a request: a ceiling of 150,000 events a minute).
The flushers share their rate-limit logs through Django's database cache, as a deployment
on several hosts would (or Redis). A backlog larger than one minute's ceiling is seeded;
the workers run for 1.2 minutes. Figures, from the sandbox's request log: events accepted
in requests that arrived within 60 s of the first (share of the ceiling, target >= 95%),
the number of 429 answers (target 0), and duplicate claims: every worker's "Sent N" added
up against the distinct unique_ids Klaviyo recorded, and the sandbox's count of repeated
unique_ids (target 0).

    .venv/bin/python -m bench.scale_out [--workers 4] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import (
    PG_URL,
    ROOT,
    default_sizes,
    parse_bench_args,
    print_header,
    print_result,
    sandbox_process,
    sandbox_state,
    setup_django,
    sized,
)
from bench.flush_throughput import seed_backlog

EVENTS_PER_REQUEST = 1000
STEADY_REQUESTS = 150
WINDOW_S = 60.0
TARGET = 0.95
CACHE_URL = "dbcache://klaviyo_bench_cache"
SENT = re.compile(r"Sent (\d+), retrying (\d+), dead (\d+)")


def worker_env(api_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        BENCH_DATABASE_URL=PG_URL,
        BENCH_API_URL=api_url,
        BENCH_CACHE_URL=CACHE_URL,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "example_project")]),
        PYTHONUNBUFFERED="1",
    )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int)
    args = default_sizes(parse_bench_args(parser), workers=(4, 2))
    window = sized(WINDOW_S, 5.0)
    os.environ["BENCH_CACHE_URL"] = CACHE_URL
    setup_django("postgres")
    from django.core.cache import cache
    from django.core.management import call_command

    call_command("createcachetable", verbosity=0)
    cache.clear()
    print_header(f"scale-out: {args.workers} flusher processes, one PostgreSQL database")
    ceiling = EVENTS_PER_REQUEST * STEADY_REQUESTS
    backlog = sized(ceiling + 30 * EVENTS_PER_REQUEST, 3 * EVENTS_PER_REQUEST)
    seed_backlog(backlog)
    record = Path(tempfile.mkdtemp(prefix="klaviyo-scale-")) / "requests.jsonl"
    with sandbox_process(time_scale=1.0, record_path=str(record)) as url:
        env = worker_env(url)
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "django",
                    "klaviyo_flush",
                    "--skip-checks",
                    "--max-seconds",
                    str(window * 1.2),
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(args.workers)
        ]
        sent_by_worker = []
        for worker in workers:
            out, err = worker.communicate(timeout=window * 3 + 60)
            match = SENT.search(out)
            if worker.returncode != 0 or not match:
                raise SystemExit(f"a worker failed (exit {worker.returncode}): {out}\n{err}")
            sent_by_worker.append(int(match.group(1)))
        state = sandbox_state(url)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    bulk = [r for r in lines if r["operation"] == "bulk_create_events"]
    accepted = [
        (r["time"], len(r["body"]["data"]["attributes"]["events-bulk-create"]["data"]))
        for r in bulk
        if r["status"] == 202
    ]
    assert accepted, "Klaviyo accepted no bulk-event request"
    first = min(t for t, _ in accepted)
    # Each entry carries one event here (one profile per entry, one event per row).
    in_window = sum(n for t, n in accepted if t < first + window)
    throttled = sum(1 for r in bulk if r["status"] == 429)
    recorded = state["events"]
    print_result(
        f"scale_out_{args.workers}_workers",
        workers=args.workers,
        ceiling_events_per_min=ceiling,
        events_in_first_minute=in_window,
        RATIO=in_window / ceiling,
        target=f">= {TARGET:.0%} of the ceiling, 0 x 429, no duplicate claim",
        throttled_429=throttled,
        sent_by_worker=sent_by_worker,
        sent_total=sum(sent_by_worker),
        recorded_events=recorded,
        duplicate_events=state["duplicate_events"],
        met=in_window / ceiling >= TARGET
        and throttled == 0
        and state["duplicate_events"] == 0
        and sum(sent_by_worker) == recorded,
    )
    record.unlink()


if __name__ == "__main__":
    main()
