"""``manage.py klaviyo_coupons``: Klaviyo coupons and their unique codes.

::

    klaviyo_coupons create SUMMER10                       # the coupon, in Klaviyo too
    klaviyo_coupons import SUMMER10 codes.txt             # one code a line ("-": stdin)
    klaviyo_coupons generate SUMMER10 --count 500 --prefix SUM-
    klaviyo_coupons push SUMMER10                         # upload pending codes
    klaviyo_coupons status SUMMER10

``import`` and ``generate`` upload the new codes at once unless ``--no-push``. Codes
Klaviyo refuses are listed with its reason and the command fails.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import Count
from django.utils.dateparse import parse_datetime

from django_klaviyo import coupons
from django_klaviyo.client import get_client
from django_klaviyo.exceptions import KlaviyoError, KlaviyoValidationError
from django_klaviyo.management.base import LongRunningCommand
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode


class Command(LongRunningCommand):
    help = "Create Klaviyo coupons and import or generate their unique codes."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("coupon")
        create.add_argument("--description", default="")
        imported = sub.add_parser("import")
        imported.add_argument("coupon")
        imported.add_argument("file", help="One code a line; '-' reads stdin.")
        generate = sub.add_parser("generate")
        generate.add_argument("coupon")
        generate.add_argument("--count", type=int, required=True)
        generate.add_argument("--prefix", default="")
        generate.add_argument("--length", type=int, default=10)
        for p in (imported, generate):
            p.add_argument("--expires-at", help="ISO 8601 date-time the codes expire.")
            p.add_argument("--no-push", action="store_true", help="Only save them locally.")
        push = sub.add_parser("push")
        push.add_argument("coupon")
        status = sub.add_parser("status")
        status.add_argument("coupon")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "create":
                coupon = coupons.get_or_create_coupon(options["coupon"], options["description"])
                coupons.ensure_in_klaviyo(coupon, get_client())
                self.stdout.write(
                    f"Coupon {coupon.external_id} is in Klaviyo ({coupon.klaviyo_id})."
                )
                return
            coupon = self._coupon(options["coupon"], create=action in ("import", "generate"))
            if action == "status":
                self._status(coupon)
                return
            if action == "import":
                added = coupons.add_codes(
                    coupon, self._read(options["file"]), expires_at=self._expiry(options)
                )
                self.stdout.write(f"{added} new code(s) saved.")
            elif action == "generate":
                codes = coupons.generate_codes(
                    coupon,
                    options["count"],
                    prefix=options["prefix"],
                    length=options["length"],
                    expires_at=self._expiry(options),
                )
                self.stdout.write(f"{len(codes)} code(s) generated.")
            if action == "push" or not options.get("no_push"):
                self._push(coupon)
        except KlaviyoValidationError as exc:
            raise CommandError(f"{exc} (field {exc.field})") from exc
        except KlaviyoError as exc:
            raise CommandError(f"Klaviyo refused the request: {exc}") from exc

    def _coupon(self, external_id: str, *, create: bool) -> KlaviyoCoupon:
        if create:
            return coupons.get_or_create_coupon(external_id)
        try:
            return KlaviyoCoupon.objects.get(external_id=external_id)
        except KlaviyoCoupon.DoesNotExist:
            raise CommandError(f"No coupon {external_id!r}; create it first.") from None

    def _read(self, path: str) -> list[str]:
        if path == "-":
            return sys.stdin.read().splitlines()
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().splitlines()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from exc

    def _expiry(self, options: dict[str, Any]) -> datetime | None:
        text = options.get("expires_at")
        if not text:
            return None
        value = parse_datetime(text)
        if value is None or value.tzinfo is None:
            raise CommandError("--expires-at must be an ISO 8601 date-time with a time zone.")
        return value

    def _push(self, coupon: KlaviyoCoupon) -> None:
        def progress(report: coupons.PushReport, total: int) -> None:
            done = report.imported + report.failed
            self.stdout.write(f"{coupon.external_id}: {done}/{total} code(s) uploaded")

        report = coupons.push_codes(coupon, client=get_client(), progress=progress)
        self.stdout.write(f"{report.imported} imported, {report.failed} refused.")
        if report.failed:
            refused = KlaviyoCouponCode.objects.filter(
                coupon=coupon, status=KlaviyoCouponCode.Status.FAILED
            )
            for code in refused.order_by("pk")[:50]:
                self.stderr.write(f"{code.code}: {code.error_code}: {code.error_detail}")
            raise CommandError(f"Klaviyo refused {report.failed} code(s).")

    def _status(self, coupon: KlaviyoCoupon) -> None:
        counts = (
            KlaviyoCouponCode.objects.filter(coupon=coupon)
            .values_list("status")
            .annotate(n=Count("pk"))
            .order_by("status")
        )
        self.stdout.write(f"Coupon {coupon.external_id} (Klaviyo id {coupon.klaviyo_id or '-'})")
        for status, n in counts:
            self.stdout.write(f"  {status}: {n}")
