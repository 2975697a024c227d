"""Coupons: a Klaviyo coupon and its unique codes, mirrored locally with their status.

The store's codes (or codes generated here) are first saved as ``pending`` rows, then
``push_codes`` creates the coupon in Klaviyo if needed and uploads the pending codes in
bulk jobs of at most 1,000, polling each job to completion. Each code ends with
Klaviyo's status (``UNASSIGNED`` once imported) or ``failed`` with Klaviyo's reason.
Used from ``manage.py klaviyo_coupons`` and the admin action.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from django_klaviyo import limits
from django_klaviyo.client import get_client
from django_klaviyo.exceptions import KlaviyoAPIError, KlaviyoValidationError
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode

Status = KlaviyoCouponCode.Status

# Codes without look-alike characters (0/O, 1/I/L), easy to type from an email.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_POINTER = re.compile(r"/coupon-codes/data/(\d+)")


@dataclass
class PushReport:
    imported: int = 0
    failed: int = 0
    jobs: int = 0


def get_or_create_coupon(external_id: str, description: str = "") -> KlaviyoCoupon:
    external_id = (external_id or "").strip()
    if not _CODE.match(external_id):
        raise KlaviyoValidationError(
            "a coupon's external id is letters, digits, '-' or '_'.", field="external_id"
        )
    coupon, _ = KlaviyoCoupon.objects.get_or_create(
        external_id=external_id, defaults={"description": description}
    )
    return coupon


def add_codes(
    coupon: KlaviyoCoupon, codes: Iterable[str], *, expires_at: datetime | None = None
) -> int:
    """Save the store's codes as pending (codes already there are kept); returns how
    many were new. Raises naming the first bad code."""
    cleaned = []
    for i, code in enumerate(codes):
        code = str(code).strip()
        if not code:
            continue
        if not _CODE.match(code):
            raise KlaviyoValidationError(
                f"code {code!r} may hold only letters, digits, '-' or '_'.", field=f"codes[{i}]"
            )
        cleaned.append(code)
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


def ensure_in_klaviyo(coupon: KlaviyoCoupon, client: Any = None) -> KlaviyoCoupon:
    """Create the coupon in Klaviyo unless it is known there; one that already exists
    there (409) is taken as it is."""
    if coupon.klaviyo_id:
        return coupon
    client = client or get_client()
    try:
        data = client.create_coupon(coupon.external_id)
        coupon.klaviyo_id = str(data.get("id") or coupon.external_id)
    except KlaviyoAPIError as err:
        if err.status != 409:
            raise
        coupon.klaviyo_id = coupon.external_id
    coupon.synced_at = timezone.now()
    coupon.save(update_fields=["klaviyo_id", "synced_at"])
    return coupon


def push_codes(
    coupon: KlaviyoCoupon,
    *,
    client: Any = None,
    progress: Callable[[PushReport, int], None] | None = None,
    timeout: float = 300.0,
    poll_interval: float = 2.0,
) -> PushReport:
    """Upload the coupon's pending codes; returns how many were imported and refused.
    Klaviyo errors about the whole request raise (the codes stay pending)."""
    client = client or get_client()
    ensure_in_klaviyo(coupon, client)
    report = PushReport()
    pending = KlaviyoCouponCode.objects.filter(coupon=coupon, status=Status.PENDING)
    total = pending.count()
    while True:
        batch = list(pending.order_by("pk")[: limits.COUPON_CODES_PER_JOB])
        if not batch:
            break
        codes = [(c.code, c.expires_at.isoformat() if c.expires_at else None) for c in batch]
        job = client.run_coupon_code_job(
            coupon.klaviyo_id, codes, timeout=timeout, poll_interval=poll_interval
        )
        report.jobs += 1
        _record(batch, job, report)
        if progress is not None:
            progress(report, total)
    return report


def _record(batch: list[KlaviyoCouponCode], job: dict[str, Any], report: PushReport) -> None:
    now = timezone.now()
    created = {
        (c.get("attributes") or {}).get("unique_code"): c
        for c in job.get("included") or []
        if isinstance(c, dict)
    }
    errors: dict[int, dict[str, Any]] = {}
    for error in (job.get("attributes") or {}).get("errors") or []:
        match = _POINTER.search(str((error.get("source") or {}).get("pointer") or ""))
        if match:
            errors[int(match.group(1))] = error
    with transaction.atomic():
        for i, code in enumerate(batch):
            code.synced_at = now
            if i in errors:
                code.status = Status.FAILED
                code.error_code = str(errors[i].get("code") or "")[:64]
                code.error_detail = str(errors[i].get("detail") or errors[i].get("title") or "")
                report.failed += 1
            else:
                resource = created.get(code.code) or {}
                code.klaviyo_id = str(resource.get("id") or "")
                code.status = (resource.get("attributes") or {}).get("status") or Status.PROCESSING
                code.error_code = code.error_detail = ""
                report.imported += 1
        KlaviyoCouponCode.objects.bulk_update(
            batch, ["status", "klaviyo_id", "error_code", "error_detail", "synced_at"]
        )
