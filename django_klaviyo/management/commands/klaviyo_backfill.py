"""``manage.py klaviyo_backfill orders|customers|consent|tracked:<app_label.Model>``:
enqueue history.

Resumable: each batch commits with its checkpoint, so after a crash or Ctrl-C the same
command continues where it stopped (``--restart`` starts the range over). Exits 1 when
a record could not be mapped (each is listed; the rest of the history is enqueued) and
130 when interrupted.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from django_klaviyo.management.base import LongRunningCommand
from django_klaviyo.outbox import backfill


def _moment(value: str) -> dt.datetime:
    """An ISO date (midnight, UTC) or datetime (naive: UTC)."""
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise ValueError(value)
        parsed = dt.datetime.combine(day, dt.time())
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Command(LongRunningCommand):
    help = (
        "Enqueue historical orders, customers, consent or tracked models as outbox rows "
        "(events marked backfill: recorded without firing flows), in primary-key order, "
        "resuming after a crash or Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "source",
            help=f"{', '.join(backfill.SOURCES)}, or {backfill.TRACKED_PREFIX}<app_label.Model> "
            "for a model of KLAVIYO['TRACKED_MODELS'].",
        )
        parser.add_argument("--since", type=_moment, metavar="DATE", help="From (inclusive).")
        parser.add_argument("--until", type=_moment, metavar="DATE", help="To (exclusive).")
        parser.add_argument("--batch-size", type=_positive_int, default=1000, metavar="N")
        parser.add_argument(
            "--dry-run", action="store_true", help="Build rows and estimate; write nothing."
        )
        parser.add_argument(
            "--restart", action="store_true", help="Forget this range's checkpoint first."
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="Print only the summary (for logs)."
        )
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run = backfill.Backfill(
                options["source"],
                since=options["since"],
                until=options["until"],
                batch_size=options["batch_size"],
                using=options["database"],
            )
        except (ValueError, LookupError) as exc:
            raise CommandError(str(exc)) from exc
        if options["restart"] and not options["dry_run"]:
            run.restart()
        checkpoint = run.checkpoint()
        if checkpoint is not None and checkpoint.finished_at and not options["restart"]:
            self.stdout.write(
                f"{run.key}: finished at {checkpoint.finished_at.isoformat()} "
                f"({checkpoint.source_rows} source rows); --restart runs it again."
            )
            return
        if checkpoint is not None and checkpoint.last_pk:
            self.stdout.write(
                f"Resuming {options['source']} after pk {checkpoint.last_pk} "
                f"({checkpoint.source_rows} done before)."
            )
        total = run.remaining()
        self.stdout.write(f"{options['source']}: {total} source rows to go.")
        done = backfill.Progress()
        started = time.monotonic()
        try:
            for step in run.batches(dry_run=options["dry_run"]):
                done.source_rows += step.source_rows
                done.outbox_rows += step.outbox_rows
                done.items += step.items
                for pk, reason in step.skipped:
                    done.skipped.append((pk, reason))
                    self.stderr.write(f"skipped {options['source']} pk {pk}: {reason}")
                if not options["no_progress"]:
                    self.stdout.write(self._progress(run, done, total, started))
        except KeyboardInterrupt:
            raise CommandError(
                f"Interrupted after {done.source_rows} source rows; the last committed "
                "batch is checkpointed: run the same command again to resume.",
                returncode=130,
            ) from None
        elapsed = time.monotonic() - started
        verb = "Would enqueue" if options["dry_run"] else "Enqueued"
        self.stdout.write(
            f"{verb} {done.outbox_rows} outbox rows ({done.items} Klaviyo items) from "
            f"{done.source_rows} {options['source']} in {_duration(elapsed)}; Klaviyo's rate "
            f"limit needs at least {_duration(backfill.klaviyo_seconds(run.src, done.items))} "
            "to take them."
        )
        if done.skipped:
            raise CommandError(f"{len(done.skipped)} record(s) skipped (listed above).")

    def _progress(
        self, run: backfill.Backfill, done: backfill.Progress, total: int, started: float
    ) -> str:
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = done.source_rows / elapsed
        left = max(total - done.source_rows, 0)
        eta = left / rate if rate else 0.0
        # Items still to come, assumed to look like the ones so far.
        per_row = done.items / done.source_rows if done.source_rows else 1.0
        klaviyo = backfill.klaviyo_seconds(run.src, round(per_row * total))
        percent = 100.0 * done.source_rows / total if total else 100.0
        return (
            f"{done.source_rows}/{total} ({percent:.1f}%) {rate:,.0f} rows/s "
            f"ETA {_duration(eta)}; Klaviyo needs ~{_duration(klaviyo)} for this range"
        )
