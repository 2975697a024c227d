"""``manage.py klaviyo_flush``: send due outbox rows to Klaviyo (once, or as a worker)."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from django_klaviyo import accounts
from django_klaviyo.checks import check_private_key
from django_klaviyo.exceptions import KlaviyoConfigurationError, KlaviyoValidationError
from django_klaviyo.flush import FlushAborted, FlushReport, flush_outbox
from django_klaviyo.flush.loop import validate_kinds
from django_klaviyo.management.base import LongRunningCommand

# Seconds between progress lines at the default verbosity.
PROGRESS_EVERY = 30.0

# Exit statuses (docs/workers.md). 0: drained, stopped on request, or --max-seconds.
EXIT_CONFIGURATION = 1  # missing, malformed or rejected API key; bad options
EXIT_OUTAGE = 3  # the database was unavailable (one run), or longer than --max-outage


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:  # also rejects NaN
        raise ValueError(value)
    return number


class Command(LongRunningCommand):
    help = (
        "Send due outbox rows to Klaviyo. Without --loop it stops when nothing is due. "
        "SIGTERM/SIGINT stop it within one request timeout (rows not yet sent go back "
        "uncounted). With --loop it rides out database outages. Exit status: 0 done or "
        "stopped; 1 configuration problem (missing, malformed or rejected API key); 2 bad "
        "options; 3 database unavailable (a single run) or for longer than --max-outage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=_positive_int, metavar="N")
        parser.add_argument(
            "--loop", action="store_true", help="Keep polling for new rows until stopped."
        )
        parser.add_argument("--max-seconds", type=_positive_float, metavar="S")
        parser.add_argument(
            "--idle-sleep",
            type=_positive_float,
            default=5.0,
            metavar="S",
            help=("Seconds to wait when nothing is due (with --loop)."),
        )
        parser.add_argument(
            "--max-outage",
            type=_positive_float,
            metavar="S",
            help=(
                "With --loop: exit with status 3 once the database has been unavailable for "
                "longer than S seconds (default: wait for it forever)."
            ),
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would be sent; claim nothing."
        )
        parser.add_argument(
            "--kinds", metavar="KIND,KIND", help="Only these kinds, e.g. event,profile_upsert."
        )
        parser.add_argument(
            "--account",
            metavar="NAME",
            help="Only this Klaviyo account's rows (a name of KLAVIYO['ACCOUNTS'], or "
            "'default'); without it every account is sent in turn.",
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            choices=list(connections),
            help="The database alias whose outbox to send (default: default).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        try:
            kinds = validate_kinds(options["kinds"].split(",")) if options["kinds"] else None
            if options["account"] is not None:
                accounts.get_account(options["account"])
        except KlaviyoValidationError as exc:
            raise CommandError(str(exc)) from exc
        if not options["dry_run"]:
            problems = check_private_key()
            if problems:
                raise CommandError(
                    f"{problems[0].msg} {problems[0].hint or ''}".strip(),
                    returncode=EXIT_CONFIGURATION,
                )

        stop = threading.Event()
        last_progress = [time.monotonic()]

        def progress(report: FlushReport) -> None:
            due = verbosity >= 2 or (
                verbosity == 1 and time.monotonic() - last_progress[0] >= PROGRESS_EVERY
            )
            if due:
                last_progress[0] = time.monotonic()
                self.stdout.write(
                    f"... sent {report.sent}, retrying {report.retrying}, dead {report.dead} "
                    f"after {report.batches} batch(es)"
                )

        previous = self._install_signal_handlers(stop)
        try:
            report = flush_outbox(
                batch_size=options["batch_size"],
                kinds=kinds,
                dry_run=options["dry_run"],
                stop=stop,
                max_seconds=options["max_seconds"],
                loop=options["loop"],
                idle_sleep=options["idle_sleep"],
                progress=progress,
                using=options["database"],
                max_outage=options["max_outage"],
                account=options["account"],
            )
        except FlushAborted as exc:
            if exc.reason == "auth":
                # Other accounts may have been sent before the run ended: say so.
                ran = getattr(exc, "report", None)
                if verbosity >= 1 and ran is not None:
                    for line in ran.summary_lines():
                        self.stdout.write(line)
                if ran is not None and ran.ended in ("stopped", "max_seconds"):
                    # A requested end exits 0 (docs/workers.md); the refused account is
                    # retried by the next run and shown by klaviyo_status meanwhile.
                    self.stderr.write(str(exc))
                    return
                raise CommandError(str(exc), returncode=EXIT_CONFIGURATION) from exc
            # The database: a single run reports it (cron sees the failure); a --loop
            # worker gets here only after --max-outage.
            raise CommandError(str(exc), returncode=EXIT_OUTAGE) from exc
        except (ImproperlyConfigured, KlaviyoConfigurationError, KlaviyoValidationError) as exc:
            raise CommandError(str(exc), returncode=EXIT_CONFIGURATION) from exc
        finally:
            self._restore_signal_handlers(previous)

        if verbosity >= 1:
            for line in report.summary_lines():
                self.stdout.write(line)
            if report.ended == "stopped":
                self.stdout.write(
                    "Stopped on request; rows not yet sent went back to the queue uncounted."
                )

    def _install_signal_handlers(self, stop: threading.Event) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be set from the main thread

        def handler(signum: int, frame: Any) -> None:
            stop.set()

        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
        return previous

    def _restore_signal_handlers(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
