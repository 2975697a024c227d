"""The outbox dashboard and the changelist's counts, on tables of any size.

Nothing here scans the outbox: unfinished rows (due, being sent, dead) are read through
their partial indexes, at most ``COUNT_CAP`` of each; a count that reaches the cap, the
sent rows and the table's total are the database's estimates (PostgreSQL: the planner's
row estimate, ``pg_class.reltuples``; SQLite: the rowid range), shown with "≈" or "+".
bench/admin_scale.py times the changelist at 1M rows. ``timeline_chart`` draws the last
hours' sent and dead rows (``health.hourly_timeline``) with ``admin.charts``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field

from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import Min, QuerySet
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.safestring import SafeString

from django_klaviyo.admin.charts import Point, Series, bar_chart
from django_klaviyo.health import HourBucket
from django_klaviyo.models import OutboxEvent

Status = OutboxEvent.Status
# Rows read per group (or counted per query) before the dashboard switches to estimates:
# small enough that a page load stays far under 150 ms at 1M rows (bench/admin_scale.py).
COUNT_CAP = 1_000
# The groups that have a partial index, and the statuses each holds.
UNFINISHED_GROUPS = (
    (Status.PENDING, Status.RETRYING),  # klaviyo_outbox_due
    (Status.SENDING,),  # klaviyo_outbox_leased
    (Status.DEAD,),  # klaviyo_outbox_failing
)
UNFINISHED = tuple(status for group in UNFINISHED_GROUPS for status in group)
FAILING = (Status.RETRYING, Status.DEAD)


@dataclass(frozen=True)
class Figure:
    """A count that says how exact it is: ``12``, ``≈ 1,040,000`` or ``10,000+``."""

    value: int
    exact: bool = True
    at_least: bool = False

    def __str__(self) -> str:
        if self.exact:
            return f"{self.value:,}"
        return f"{self.value:,}+" if self.at_least else f"≈ {self.value:,}"

    def __bool__(self) -> bool:
        return self.value > 0


def estimated_rows(queryset: QuerySet) -> int | None:
    """The planner's row estimate for ``queryset`` (PostgreSQL), None elsewhere."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    plan = json.loads(queryset.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def bounded_count(queryset: QuerySet, cap: int | None = None) -> Figure:
    """Exact up to ``cap`` (``SELECT count(*) FROM (... LIMIT cap + 1)``), estimated above."""
    cap = COUNT_CAP if cap is None else cap
    counted = queryset.order_by()[: cap + 1].count()
    if counted <= cap:
        return Figure(counted)
    estimate = estimated_rows(queryset)
    if estimate is None:
        return Figure(cap, exact=False, at_least=True)
    return Figure(max(estimate, cap), exact=False)


def table_rows(using: str = "default") -> Figure:
    """All outbox rows, from the database's statistics instead of a COUNT(*)."""
    connection = connections[using]
    table = OutboxEvent._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # -1 until the table was first vacuumed or analyzed: then ask the planner.
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
            found = cursor.fetchone()
            if found and found[0] >= 0:
                return Figure(int(found[0]), exact=False)
            return Figure(estimated_rows(OutboxEvent.objects.using(using).all()) or 0, False)
        if connection.vendor == "sqlite":
            # Rows are appended and purged oldest first, so the rowid range is the count
            # (up to purged gaps); both ends are read from the rowid b-tree.
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT max(rowid) - min(rowid) + 1 FROM {quoted}")  # noqa: S608
            return Figure(int(cursor.fetchone()[0] or 0), exact=False)
    return bounded_count(OutboxEvent.objects.using(using).all())


@dataclass
class OutboxDashboard:
    """What the outbox dashboard shows; every query is bounded (see the module docstring)."""

    now: dt.datetime
    by_status: dict[str, Figure]
    # kind -> status -> rows, over the unfinished rows read (up to COUNT_CAP per group).
    unfinished_by_kind: dict[str, dict[str, int]]
    # True when a group held more than COUNT_CAP rows: the kind table and top errors then
    # describe the first COUNT_CAP of it (the status figures are estimates, marked so).
    sampled: bool
    total: Figure
    oldest_due_since: dt.datetime | None
    sent_last_hour: Figure
    sent_last_day: Figure
    # Among the failing rows read; sampled when there are more than COUNT_CAP.
    top_error_codes: list[tuple[str, int]] = field(default_factory=list)

    @property
    def oldest_due_age(self) -> dt.timedelta | None:
        return None if self.oldest_due_since is None else self.now - self.oldest_due_since


def outbox_dashboard(
    *, now: dt.datetime | None = None, top: int = 5, using: str = "default"
) -> OutboxDashboard:
    now = now or timezone.now()
    rows = OutboxEvent.objects.using(using).order_by()
    by_status: dict[str, Figure] = {}
    by_kind: dict[str, Counter[str]] = {}
    errors: Counter[str] = Counter()
    sampled = False
    for statuses in UNFINISHED_GROUPS:
        group = rows.filter(status__in=statuses)
        seen = list(group.values_list("kind", "status", "last_error_code")[: COUNT_CAP + 1])
        complete = len(seen) <= COUNT_CAP
        sampled = sampled or not complete
        per_status = Counter(status for _, status, _ in seen[:COUNT_CAP])
        for status in statuses:
            by_status[status] = (
                Figure(per_status[status])
                if complete
                else bounded_count(group.filter(status=status))
            )
        for kind, status, code in seen[:COUNT_CAP]:
            by_kind.setdefault(kind, Counter())[status] += 1
            if status in FAILING and code:
                errors[code] += 1
    sent = rows.filter(status=Status.SENT)
    by_status[Status.SENT] = bounded_count(sent)
    oldest = (
        rows.filter(status__in=OutboxEvent.DUE_STATUSES, next_attempt_at__lte=now)
        .aggregate(oldest=Min("next_attempt_at"))
        .get("oldest")
    )
    return OutboxDashboard(
        now=now,
        by_status=by_status,
        unfinished_by_kind={kind: dict(counts) for kind, counts in by_kind.items()},
        sampled=sampled,
        total=table_rows(using),
        oldest_due_since=oldest,
        sent_last_hour=bounded_count(sent.filter(sent_at__gte=now - dt.timedelta(hours=1))),
        sent_last_day=bounded_count(sent.filter(sent_at__gte=now - dt.timedelta(days=1))),
        top_error_codes=sorted(errors.items(), key=lambda item: (-item[1], item[0]))[:top],
    )


def failing_error_codes(using: str = "default") -> list[str]:
    """Error codes of failing rows (retrying or dead), read through their partial index."""
    codes = (
        OutboxEvent.objects.using(using)
        .filter(status__in=FAILING)
        .exclude(last_error_code="")
        .order_by()
        .values_list("last_error_code", flat=True)[:COUNT_CAP]
    )
    return sorted(set(codes))


class OutboxPaginator(Paginator):
    """The changelist's paginator for big tables.

    ``count`` is bounded (no COUNT(*) over the filtered table). A page is read in two
    steps: the page's ids, in the list's order, which an index can give on its own (the
    primary key, or the failing index for dead rows), then those rows by primary key; so
    the database sorts ids, not whole rows read from all over the table.
    """

    @cached_property
    def count(self) -> int:
        return bounded_count(self.object_list).value

    def page(self, number: int | str) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        ids = list(self.object_list.values_list("pk", flat=True)[bottom : bottom + self.per_page])
        return self._get_page(self.object_list.filter(pk__in=ids), number, self)


def timeline_chart(buckets: list[HourBucket]) -> SafeString:
    """Sent and dead rows per hour as grouped bars, every hour of ``buckets`` (oldest
    first) labelled in the current time zone; the chart's table holds the same figures.
    An hour read only in part shows "n+", an hour not counted "not counted" and no bar."""
    labels = [timezone.localtime(bucket.hour).strftime("%H:%M") for bucket in buckets]

    def point(label: str, value: int | None, partial: bool) -> Point:
        if value is None:
            return Point(label, 0, display="not counted")
        return Point(label, value, display=f"{value:,}+" if partial else None)

    sent = [point(lb, b.sent, b.sent_partial) for lb, b in zip(labels, buckets, strict=True)]
    dead = [point(lb, b.dead, b.dead_partial) for lb, b in zip(labels, buckets, strict=True)]
    if not any(p.value for p in sent + dead) and all(p.display is None for p in sent + dead):
        sent, dead = [], []  # nothing sent or dead in the window: the chart says "No data."
    return bar_chart(
        [Series("Sent", sent), Series("Dead", dead)],
        title=f"Sent and dead rows per hour, last {len(buckets)} hours",
    )
