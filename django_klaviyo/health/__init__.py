"""Is marketing data flowing? The figures behind ``klaviyo_status``, the status endpoint
and the dashboard's hourly timeline, and the verdict against thresholds.

Every query is bounded by an index, so a probe every few seconds stays cheap at millions of
rows: due rows through the partial "due" index, dead rows through the partial "failing"
index, the last send and the timeline through the partial "sent" index. Nothing counts the
whole table; the dashboard's timeline counts at most ``cap`` rows an hour.

``health.views``: the same figures as JSON, the status endpoint for monitors and probes.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from django.db.models import Count, Max, Min, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from django_klaviyo import accounts
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.models import KlaviyoJob, OutboxEvent

Status = OutboxEvent.Status

# Exit codes of ``klaviyo_status`` (bits, so "backlog and dead" is 3).
# Due rows counted at most (more: "at least"), unless a threshold needs more.
DUE_COUNT_CAP = 10_000

HEALTHY = 0
BACKLOG = 1
DEAD = 2


@dataclass(frozen=True)
class Thresholds:
    """When the outbox counts as unhealthy; None switches a check off."""

    max_due: int | None = None  # rows waiting to be sent
    max_due_age: dt.timedelta | None = None  # how long the oldest due row has waited
    max_dead: int | None = 0  # dead-lettered rows

    @classmethod
    def from_settings(cls) -> Thresholds:
        age = klaviyo_settings.HEALTH_MAX_DUE_AGE_SECONDS
        return cls(
            max_due=klaviyo_settings.HEALTH_MAX_DUE,
            max_due_age=None if age is None else dt.timedelta(seconds=age),
            max_dead=klaviyo_settings.HEALTH_MAX_DEAD,
        )


@dataclass
class Health:
    now: dt.datetime
    due_by_kind: dict[str, int]
    oldest_due_since: dt.datetime | None
    dead_by_error_code: dict[str, int]
    last_sent_at: dt.datetime | None
    # True: more rows were due than counted (the oldest ones were; ``due`` is a lower bound).
    due_capped: bool = False
    # Due rows by Klaviyo account name ("default" for the single account), then by kind.
    due_by_account: dict[str, dict[str, int]] = field(default_factory=dict)
    # Klaviyo bulk jobs still running (``KlaviyoJob``): how many, the rows waiting for
    # them, and the oldest (Klaviyo's job id, started at).
    open_jobs: int = 0
    rows_awaiting_jobs: int = 0
    oldest_job: tuple[str, dt.datetime] | None = None
    problems: list[str] = field(default_factory=list)
    code: int = HEALTHY

    @property
    def due(self) -> int:
        return sum(self.due_by_kind.values())

    @property
    def dead(self) -> int:
        return sum(self.dead_by_error_code.values())

    @property
    def oldest_due_age(self) -> dt.timedelta | None:
        return None if self.oldest_due_since is None else self.now - self.oldest_due_since

    @property
    def verdict(self) -> str:
        return {HEALTHY: "healthy", BACKLOG: "backlog", DEAD: "dead"}.get(self.code, "backlog+dead")

    def as_dict(self) -> dict[str, Any]:
        age = self.oldest_due_age
        return {
            "status": self.verdict,
            "problems": self.problems,
            "checked_at": self.now.isoformat(),
            "due": self.due,
            "due_by_kind": self.due_by_kind,
            "due_by_account": self.due_by_account,
            # True: some kind has more due rows than counted (``due`` is a lower bound).
            "due_at_least": self.due_capped,
            "oldest_due_since": _iso(self.oldest_due_since),
            "oldest_due_age_seconds": None if age is None else round(age.total_seconds(), 3),
            "dead": self.dead,
            "dead_by_error_code": self.dead_by_error_code,
            "last_sent_at": _iso(self.last_sent_at),
            "open_jobs": self.open_jobs,
            "rows_awaiting_jobs": self.rows_awaiting_jobs,
            "oldest_job_id": None if self.oldest_job is None else self.oldest_job[0],
            "oldest_job_since": None if self.oldest_job is None else _iso(self.oldest_job[1]),
        }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def check(
    thresholds: Thresholds | None = None, *, now: dt.datetime | None = None, using: str = "default"
) -> Health:
    """Gather the figures and judge them against ``thresholds`` (default: settings)."""
    thresholds = thresholds or Thresholds.from_settings()
    now = now or timezone.now()
    rows = OutboxEvent.objects.using(using).order_by()
    # Due = pending or retrying whose time has come (the claimable rows).
    due_rows = rows.filter(status__in=OutboxEvent.DUE_STATUSES, next_attempt_at__lte=now)
    # The oldest ``cap`` due rows are read along the "due" index and counted by kind: a
    # probe stays cheap with a million rows due, and the cap is above the threshold.
    cap = max(DUE_COUNT_CAP, (thresholds.max_due or 0) + 1)
    kinds = list(due_rows.order_by("next_attempt_at").values_list("kind", "account")[: cap + 1])
    due_by_kind = dict(sorted(Counter(kind for kind, _ in kinds).items()))
    by_account: dict[str, Counter[str]] = {}
    for kind, account in kinds:
        by_account.setdefault(accounts.display(account), Counter())[kind] += 1
    oldest = due_rows.aggregate(oldest=Min("next_attempt_at"))["oldest"]
    dead_by_error_code = {
        (r["last_error_code"] or "(none)"): r["n"]
        for r in rows.filter(status=Status.DEAD)
        .values("last_error_code")
        .annotate(n=Count("pk"))
        .order_by("-n", "last_error_code")
    }
    # status="sent" matches the partial index's predicate, so this reads one index entry.
    last_sent = rows.filter(status=Status.SENT).aggregate(last=Max("sent_at"))["last"]
    # Open jobs are few (the partial index of jobs holds only them); the rows waiting are
    # counted from the jobs, not by a scan of the outbox.
    jobs = list(
        KlaviyoJob.objects.using(using)
        .filter(status=KlaviyoJob.Status.OPEN)
        .order_by("started_at")
        .values_list("job_id", "started_at", "rows")
    )
    health = Health(
        now=now,
        due_by_kind=due_by_kind,
        oldest_due_since=oldest,
        dead_by_error_code=dead_by_error_code,
        last_sent_at=last_sent,
        due_capped=len(kinds) > cap,
        due_by_account={name: dict(sorted(c.items())) for name, c in sorted(by_account.items())},
        open_jobs=len(jobs),
        rows_awaiting_jobs=sum(len(r or ()) for _, _, r in jobs),
        oldest_job=(jobs[0][0], jobs[0][1]) if jobs else None,
    )
    _judge(health, thresholds)
    return health


def _judge(health: Health, thresholds: Thresholds) -> None:
    if thresholds.max_due is not None and health.due > thresholds.max_due:
        health.problems.append(f"{health.due} due rows (threshold {thresholds.max_due})")
        health.code |= BACKLOG
    age = health.oldest_due_age
    if thresholds.max_due_age is not None and age is not None and age > thresholds.max_due_age:
        health.problems.append(
            f"oldest due row waiting {int(age.total_seconds())}s "
            f"(threshold {int(thresholds.max_due_age.total_seconds())}s)"
        )
        health.code |= BACKLOG
    if thresholds.max_dead is not None and health.dead > thresholds.max_dead:
        health.problems.append(f"{health.dead} dead rows (threshold {thresholds.max_dead})")
        health.code |= DEAD


@dataclass(frozen=True)
class HourBucket:
    hour: dt.datetime
    # None: not counted (the dashboard reads a bounded number of rows; see below).
    sent: int | None
    dead: int | None
    # True: at least this many (the hour was only partly read).
    sent_partial: bool = False
    dead_partial: bool = False


def hourly_timeline(
    hours: int = 24,
    *,
    now: dt.datetime | None = None,
    limit: int | None = None,
    using: str = "default",
) -> list[HourBucket]:
    """Rows sent and dead-lettered in each of the last ``hours`` hours, oldest first.

    Sent rows are read through the partial "sent" index; dead rows through the partial
    "failing" index, bucketed by their last change (when they died). With ``limit`` (the
    admin's dashboard), only the newest ``limit`` rows of each are counted, newest first
    along the index (one query per series, returning one count per hour): an hour reached
    only in part is marked partial, and hours beyond it are not counted (None), so a page
    never reads more than ``2 * limit`` index entries.
    """
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    start = end - dt.timedelta(hours=hours)
    rows = OutboxEvent.objects.using(using).order_by()
    sent = _per_hour(rows.filter(status=Status.SENT), "sent_at", start, end, limit)
    dead = _per_hour(rows.filter(status=Status.DEAD), "updated_at", start, end, limit)
    buckets = []
    for i in range(hours):
        hour = start + dt.timedelta(hours=i)
        (n_sent, sent_partial), (n_dead, dead_partial) = sent(hour), dead(hour)
        buckets.append(HourBucket(hour, n_sent, n_dead, sent_partial, dead_partial))
    return buckets


def _per_hour(
    rows: QuerySet[OutboxEvent],
    column: str,
    start: dt.datetime,
    end: dt.datetime,
    limit: int | None,
) -> Any:
    """A function hour -> (count or None, partial)."""
    window = rows.filter(**{f"{column}__gte": start, f"{column}__lt": end})
    if limit is None:
        counts = {
            _hour(r["hour"]): r["n"]
            for r in window.annotate(hour=TruncHour(column, tzinfo=dt.timezone.utc))
            .values("hour")
            .annotate(n=Count("pk"))
        }
        return lambda hour: (counts.get(hour, 0), False)
    counts = _newest_per_hour(window, column, limit)
    # Read up to the limit: the oldest hour read is partial, older ones unknown.
    cutoff = min(counts) if counts and sum(counts.values()) == limit else None

    def count(hour: dt.datetime) -> tuple[int | None, bool]:
        if cutoff is None or hour > cutoff:
            return counts.get(hour, 0), False
        if hour == cutoff:
            return counts.get(hour, 0), True
        return None, False

    return count


def _newest_per_hour(window: QuerySet[OutboxEvent], column: str, limit: int) -> dict:
    """UTC hour -> rows, over the newest ``limit`` rows of ``window`` by ``column``.

    One query: the newest rows are read along the column's index (a LIMITed subquery, the
    index alone on PostgreSQL) and grouped by hour in the database, so 24 counts come
    back instead of ``limit`` timestamps to convert and bin in Python (about 40 ms a page
    at 1M rows, bench/admin_scale.py). The hour is truncated by the backend's own SQL,
    the one ``TruncHour`` uses.
    """
    connection = connections[window.db]
    newest = window.order_by(f"-{column}").values_list(column, flat=True)[:limit]
    inner, params = newest.query.sql_with_params()
    name = connection.ops.quote_name(OutboxEvent._meta.get_field(column).column)
    hour, hour_params = connection.ops.datetime_trunc_sql("hour", f"newest.{name}", (), "UTC")
    sql = f"SELECT {hour}, COUNT(*) FROM ({inner}) newest GROUP BY 1"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, (*hour_params, *params))
        return {_utc_hour(value): n for value, n in cursor.fetchall()}


def _utc_hour(value: dt.datetime | str) -> dt.datetime:
    # PostgreSQL truncates to a naive UTC timestamp, SQLite to text.
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return _hour(value)


def _hour(value: dt.datetime) -> dt.datetime:
    # Buckets are UTC hours; SQLite may hand back a naive value.
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def figures(result: Health) -> dict[str, Any]:
    """What ``klaviyo_status --json`` prints and the status endpoint answers: the health's
    figures and the accounts stopped for a refused key (``stopped_accounts``)."""
    return {**result.as_dict(), "stopped_accounts": stopped_accounts(result.now)}


def stopped_accounts(now: dt.datetime | None = None) -> list[str]:
    """One line per Klaviyo account whose key was refused and that every worker leaves
    alone for now: "eu: stopped until T: reason" (see ``flush.rotation``)."""
    from django_klaviyo.flush.rotation import stops

    now = now or timezone.now()
    return [f"{name}: {stop.line()}" for name, stop in stops().items() if stop.until > now]
