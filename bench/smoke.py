"""Runs every benchmark under bench/ in smoke mode (tiny sizes, seconds) on one database.

tests/run.sh (so CI) runs ``--db sqlite`` and ``--db postgres`` side by side, so that a
schema or API change breaks the build instead of the next measurement. The scripts that
use no database run with ``--db sqlite``. A script under bench/ with a ``main()`` that is
missing from SCRIPTS fails the run: a new benchmark cannot be left out unnoticed.

    .venv/bin/python -m bench.smoke --db sqlite|postgres
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from bench.common import ROOT

# name: (databases it runs on, whether it takes --db). None: it uses no database.
SCRIPTS: dict[str, tuple[tuple[str | None, ...], bool]] = {
    "admin_scale": (("postgres",), False),
    "backfill": (("postgres",), False),
    "claim_scaling": (("postgres",), True),
    "enqueue_overhead": (("sqlite", "postgres"), True),
    "flush_cpu": (("sqlite", "postgres"), True),
    "flush_throughput": (("sqlite", "postgres"), True),
    "job_latency": (("sqlite", "postgres"), True),
    "mixed_flush": (("sqlite", "postgres"), True),
    "outbox_indexes": (("sqlite", "postgres"), True),
    "public_bytes": (("sqlite", "postgres"), True),
    "receiver_cpu": (("sqlite", "postgres"), True),
    "reliability": (("postgres",), False),
    "request_latency": (("sqlite", "postgres"), True),
    "sandbox_latency": ((None,), False),
    "save_python": (("sqlite", "postgres"), True),
    "scale_out": (("postgres",), False),
    "spec_validation": ((None,), False),
    "webhook_volume": (("sqlite", "postgres"), True),
}


def benchmark_modules() -> set[str]:
    """The modules under bench/ that a person runs: those with a ``main()``."""
    found = set()
    for path in (ROOT / "bench").glob("*.py"):
        if path.stem != "smoke" and re.search(r"^def main\(", path.read_text(), re.M):
            found.add(path.stem)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=("sqlite", "postgres"), required=True)
    args = parser.parse_args()
    unlisted = benchmark_modules() - set(SCRIPTS)
    if unlisted:
        raise SystemExit(f"bench/smoke.py: add {', '.join(sorted(unlisted))} to SCRIPTS")
    env = {**os.environ, "BENCH_SMOKE": "1"}
    failed = []
    started = time.monotonic()
    for name, (dbs, takes_db) in SCRIPTS.items():
        if args.db not in dbs and not (args.db == "sqlite" and dbs == (None,)):
            continue
        command = [sys.executable, "-m", f"bench.{name}", "--smoke"]
        if takes_db:
            command += ["--db", args.db]
        start = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - start
        if result.returncode == 0:
            print(f"ok      {name} ({args.db}, {seconds:.1f} s)")
        else:
            failed.append(name)
            print(f"FAILED  {name} ({args.db}, exit {result.returncode}, {seconds:.1f} s)")
            print(result.stdout[-3000:] + result.stderr[-6000:])
    total = time.monotonic() - started
    print(f"bench smoke ({args.db}): {len(failed)} failed in {total:.0f} s")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
