"""``manage.py klaviyo_status``: is marketing data flowing? For cron and Kubernetes probes.

Exit code 0 healthy, 1 backlog (too many due rows or the oldest waited too long), 2 too
many dead rows, 3 both. Thresholds default to the ``HEALTH_*`` settings.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_klaviyo import accounts, health

_OFF = "off"


def _threshold(value: str) -> int | str:
    """A non-negative integer, or "off" to switch the check off."""
    if value.lower() == _OFF:
        return _OFF
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _pick(given: int | str | None, default: Any) -> Any:
    """The command line's value (None for "off"), else the setting's."""
    if given is None:
        return default
    return None if given == _OFF else given


class Command(BaseCommand):
    help = (
        "Print the outbox's health: due rows by kind and account, the oldest due row's age, "
        "dead rows by error code, the last successful send. Exits 0 healthy, 1 backlog, "
        "2 dead rows, 3 both."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="One JSON object on stdout.")
        parser.add_argument(
            "--max-due", type=_threshold, metavar="N|off", help="Backlog above N due rows."
        )
        parser.add_argument(
            "--max-age",
            type=_threshold,
            metavar="SECONDS|off",
            help="Backlog when the oldest due row has waited longer.",
        )
        parser.add_argument(
            "--max-dead", type=_threshold, metavar="N|off", help="Unhealthy above N dead rows."
        )
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        defaults = health.Thresholds.from_settings()
        default_age = (
            None if defaults.max_due_age is None else int(defaults.max_due_age.total_seconds())
        )
        max_age = _pick(options["max_age"], default_age)
        thresholds = health.Thresholds(
            max_due=_pick(options["max_due"], defaults.max_due),
            max_due_age=None if max_age is None else dt.timedelta(seconds=max_age),
            max_dead=_pick(options["max_dead"], defaults.max_dead),
        )
        result = health.check(
            thresholds,
            using=options["database"],
        )
        if options["json"]:
            self.stdout.write(json.dumps(health.figures(result), sort_keys=True))
        else:
            self._print(result)
        if result.code != health.HEALTHY:
            sys.exit(result.code)

    def _print(self, result: health.Health) -> None:
        write = self.stdout.write
        write(f"status: {result.verdict}")
        for problem in result.problems:
            write(f"  problem: {problem}")
        write(f"due rows: {'at least ' if result.due_capped else ''}{result.due}")
        for kind, n in sorted(result.due_by_kind.items()):
            write(f"  {kind}: {n}")
        if accounts.several() or set(result.due_by_account) - {accounts.DEFAULT}:
            write("due rows by account:")
            for name, kinds in result.due_by_account.items():
                write(f"  {name}: " + ", ".join(f"{kind} {n}" for kind, n in kinds.items()))
        age = result.oldest_due_age
        write(
            "oldest due row: " + ("none" if age is None else f"waiting {int(age.total_seconds())}s")
        )
        write(f"dead rows: {result.dead}")
        for code, n in result.dead_by_error_code.items():
            write(f"  {code}: {n}")
        waiting, jobs = result.rows_awaiting_jobs, result.open_jobs
        write(f"rows waiting on Klaviyo jobs: {waiting} in {jobs} job(s)")
        if result.oldest_job is not None:
            job_id, since = result.oldest_job
            waited = int((result.now - since).total_seconds())
            write(f"oldest Klaviyo job: {job_id}, started {waited}s ago")
        last = result.last_sent_at
        write(f"last successful send: {'never' if last is None else last.isoformat()}")
        for line in health.stopped_accounts(result.now):
            write(f"account {line}")
