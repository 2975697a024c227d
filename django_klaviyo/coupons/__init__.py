"""Coupons: a Klaviyo coupon and its unique codes, sent through the outbox and mirrored
locally with their status.

The store's codes (or codes generated here) are saved as ``pending`` mirror rows;
``enqueue_codes`` queues them: a ``coupon`` outbox row while Klaviyo does not have the
coupon yet, and one ``coupon_code`` row per code, in one transaction, the codes turning
``queued``. The flusher (``klaviyo_flush``, or ``flush_coupons`` here) sends them like
every other kind: claimed with SKIP LOCKED, within Klaviyo's rate limits, 429 and 5xx
retried, codes packed into bulk jobs of at most 1,000 that later passes follow while
other rows go on (their rows wait in ``awaiting_job``). A sent code takes Klaviyo's
status (``UNASSIGNED`` once imported); a refused one is a dead outbox row with Klaviyo's
reason and a ``failed`` mirror code with the same reason (requeue the row from the
outbox admin to try it again).

Used from ``manage.py klaviyo_coupons`` and the coupon admin's action.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Count

from django_klaviyo import accounts
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoError, KlaviyoValidationError
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode, OutboxEvent
from django_klaviyo.outbox import OutboxRow, enqueue_many
from django_klaviyo.outbox import actions as operations
from django_klaviyo.rules.coupons import clean_code, clean_coupon

Status = KlaviyoCouponCode.Status
Kind = OutboxEvent.Kind
COUPON_KINDS = (Kind.COUPON, Kind.COUPON_CODE)
# Not sent or dead yet: a code row waiting for its Klaviyo job (``awaiting_job``) is not
# in Klaviyo until the job's settlement says so.
_OPEN = (
    OutboxEvent.Status.PENDING,
    OutboxEvent.Status.RETRYING,
    OutboxEvent.Status.SENDING,
    OutboxEvent.Status.AWAITING_JOB,
)

# Codes without look-alike characters (0/O, 1/I/L), easy to type from an email.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
# Codes queued per INSERT (the outbox writer's own limit).
_ROWS_PER_INSERT = 1000


def get_or_create_coupon(
    external_id: str, description: str = "", *, account: str | None = None
) -> KlaviyoCoupon:
    """The coupon ``external_id`` of Klaviyo account ``account`` (None or "default": the
    default account; an unknown name raises naming the field ``account``)."""
    stored = accounts.get_account(account).stored
    external_id = clean_code(external_id, "external_id")
    description = clean_coupon({"external_id": external_id, "description": description})[
        "description"
    ]
    coupon, _ = KlaviyoCoupon.objects.get_or_create(
        account=stored, external_id=external_id, defaults={"description": description}
    )
    return coupon


def add_codes(
    coupon: KlaviyoCoupon, codes: Iterable[str], *, expires_at: datetime | None = None
) -> int:
    """Save the store's codes as pending (codes already there are kept); returns how
    many were new. Raises naming the first bad code."""
    cleaned = []
    for i, code in enumerate(codes):
        if not str(code).strip():
            continue
        cleaned.append(clean_code(str(code), f"codes[{i}]"))
    existing = set(
        KlaviyoCouponCode.objects.filter(coupon=coupon, code__in=cleaned).values_list(
            "code", flat=True
        )
    )
    new = [c for c in dict.fromkeys(cleaned) if c not in existing]
    KlaviyoCouponCode.objects.bulk_create(
        [KlaviyoCouponCode(coupon=coupon, code=c, expires_at=expires_at) for c in new],
        ignore_conflicts=True,
    )
    return len(new)


def generate_codes(
    coupon: KlaviyoCoupon,
    count: int,
    *,
    prefix: str = "",
    length: int = 10,
    expires_at: datetime | None = None,
) -> list[str]:
    """``count`` new random unique codes (``prefix`` + ``length`` characters), saved as
    pending."""
    if count < 1:
        raise KlaviyoValidationError("count must be at least 1.", field="count")
    taken = set(KlaviyoCouponCode.objects.filter(coupon=coupon).values_list("code", flat=True))
    codes: list[str] = []
    while len(codes) < count:
        code = prefix + "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))
        if code not in taken:
            taken.add(code)
            codes.append(code)
    add_codes(coupon, codes, expires_at=expires_at)
    return codes


def _coupon_row(coupon: KlaviyoCoupon) -> OutboxRow:
    # The outbox writer cleans each row with the kind's rules (rules/coupons.py).
    payload = {"external_id": coupon.external_id, "description": coupon.description}
    return OutboxRow(kind=Kind.COUPON, payload=payload)


def _needs_coupon_row(coupon: KlaviyoCoupon, using: str) -> bool:
    """Klaviyo does not have the coupon yet and no unsent row is creating it."""
    if coupon.klaviyo_id:
        return False
    return not (
        OutboxEvent.objects.using(using)
        .filter(
            kind=Kind.COUPON,
            status__in=_OPEN,
            account=coupon.account,
            payload__external_id=coupon.external_id,
        )
        .exists()
    )


def _require_enabled() -> None:
    if not klaviyo_settings.ENABLED:
        raise KlaviyoError("KLAVIYO['ENABLED'] is False: nothing is queued for Klaviyo.")


def enqueue_coupon(coupon: KlaviyoCoupon, *, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Queue the coupon's creation in Klaviyo unless Klaviyo has it or it is queued
    already; True when a row was written."""
    _require_enabled()
    with transaction.atomic(using=using):
        if not _needs_coupon_row(coupon, using):
            return False
        enqueue_many([_coupon_row(coupon)], using=using, account=coupon.account)
    return True


def enqueue_codes(coupon: KlaviyoCoupon, *, using: str = DEFAULT_DB_ALIAS) -> list[int]:
    """Queue the coupon's pending codes (and the coupon itself, if Klaviyo does not have
    it yet): one ``coupon_code`` outbox row per code, the codes turning ``queued``, all
    in one transaction. Returns the queued codes' ids."""
    _require_enabled()
    with transaction.atomic(using=using):
        pending = list(
            KlaviyoCouponCode.objects.using(using)
            .select_for_update()
            .filter(coupon=coupon, status=Status.PENDING)
            .order_by("pk")
        )
        if not pending:
            return []
        rows = [_coupon_row(coupon)] if _needs_coupon_row(coupon, using) else []
        for code in pending:
            payload = {
                "coupon": coupon.external_id,
                "code": code.code,
                "expires_at": code.expires_at,
            }
            rows.append(OutboxRow(kind=Kind.COUPON_CODE, payload=payload))
        written = []
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            written += enqueue_many(
                rows[start : start + _ROWS_PER_INSERT], using=using, account=coupon.account
            )
        row_of = {r.payload["code"]: r.pk for r in written if r.kind == Kind.COUPON_CODE}
        for code in pending:
            code.status, code.outbox_id = Status.QUEUED, row_of[code.code]
        KlaviyoCouponCode.objects.using(using).bulk_update(
            pending, ["status", "outbox_id"], batch_size=_ROWS_PER_INSERT
        )
    return [code.pk for code in pending]


def requeue_failed(coupon: KlaviyoCoupon, *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Give the dead outbox rows of the coupon's failed codes another full set of
    attempts (``operations.requeue_dead``, as the outbox admin's "Requeue dead"); those
    codes turn ``queued``. Returns how many rows were requeued."""
    failed = KlaviyoCouponCode.objects.using(using).filter(
        coupon=coupon, status=Status.FAILED, outbox_id__isnull=False
    )
    # Listed first: requeueing turns these codes queued, which a subquery would then miss.
    ids = list(failed.values_list("outbox_id", flat=True))
    return operations.requeue_dead(OutboxEvent.objects.using(using).filter(pk__in=ids))


def open_rows(coupon: KlaviyoCoupon, *, using: str = DEFAULT_DB_ALIAS) -> int:
    """The coupon's outbox rows not sent or dead yet."""
    rows = OutboxEvent.objects.using(using).filter(status__in=_OPEN)
    carriers = KlaviyoCouponCode.objects.using(using).filter(coupon=coupon, outbox_id__isnull=False)
    return (
        rows.filter(
            kind=Kind.COUPON, account=coupon.account, payload__external_id=coupon.external_id
        ).count()
        + rows.filter(pk__in=carriers.values("outbox_id")).count()
    )


def dead_coupon_row(coupon: KlaviyoCoupon, *, using: str = DEFAULT_DB_ALIAS) -> OutboxEvent | None:
    """The latest dead row that tried to create the coupon (its reason), if any."""
    return (
        OutboxEvent.objects.using(using)
        .filter(
            kind=Kind.COUPON,
            status=OutboxEvent.Status.DEAD,
            account=coupon.account,
            payload__external_id=coupon.external_id,
        )
        .order_by("-id")
        .first()
    )


@dataclass
class FlushSummary:
    """Where a coupon's codes stand after ``flush_coupons``."""

    statuses: dict[str, int] = field(default_factory=dict)
    # Rows still waiting (retrying after a 429, say) when the wait ended.
    unsent: int = 0


def flush_coupons(
    coupon: KlaviyoCoupon,
    *,
    wait: float = 0.0,
    client: Any = None,
    progress: Callable[[Any], None] | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> FlushSummary:
    """Send the due coupon rows now, through the outbox flusher (only the coupon kinds);
    with ``wait``, keep flushing for up to that many seconds until none of this
    coupon's rows is left unsent (rows retrying after a 429 wait their turn). Only the
    coupon's account is sent, with that account's key (``client``: that account's)."""
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        flush_outbox(
            kinds=COUPON_KINDS,
            client=client,
            progress=progress,
            using=using,
            account=accounts.display(coupon.account),
        )
        unsent = open_rows(coupon, using=using)
        remaining = deadline - time.monotonic()
        if not unsent or remaining <= 0:
            break
        time.sleep(min(1.0, remaining))
    return FlushSummary(statuses=status_counts(coupon, using=using), unsent=unsent)


def status_counts(coupon: KlaviyoCoupon, *, using: str = DEFAULT_DB_ALIAS) -> dict[str, int]:
    counts = (
        KlaviyoCouponCode.objects.using(using)
        .filter(coupon=coupon)
        .values_list("status")
        .annotate(n=Count("pk"))
        .order_by("status")
    )
    return dict(counts)
