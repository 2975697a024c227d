"""``manage.py klaviyo_coupons``: Klaviyo coupons and their unique codes, through the outbox.

::

    klaviyo_coupons create SUMMER10                       # queue the coupon's creation
    klaviyo_coupons import SUMMER10 codes.txt             # one code a line ("-": stdin)
    klaviyo_coupons generate SUMMER10 --count 500 --prefix SUM-
    klaviyo_coupons push SUMMER10 [--retry-failed]        # queue pending (and failed) codes
    klaviyo_coupons status SUMMER10
    klaviyo_coupons create SUMMER10 --account eu          # a coupon of another account

``import`` and ``generate`` queue the new codes at once unless ``--no-push``; ``klaviyo_flush``
(or a flush worker) sends them. With ``--flush`` the command sends the coupon's rows itself,
and with ``--wait S`` keeps at it for up to S seconds (rows retrying after a 429 get their
turn). Then codes Klaviyo refused are listed with its reason and the command fails, as it
does when rows are still unsent when the wait ends.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from django_klaviyo import accounts, coupons
from django_klaviyo.exceptions import KlaviyoError, KlaviyoValidationError
from django_klaviyo.flush import FlushAborted
from django_klaviyo.management.base import LongRunningCommand
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode

Status = KlaviyoCouponCode.Status
# Refused codes listed on stderr (the admin lists them all).
LIST_AT_MOST = 50


def _seconds(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also rejects NaN
        raise ValueError(value)
    return number


class Command(LongRunningCommand):
    help = (
        "Create Klaviyo coupons and import or generate their unique codes, queued in the "
        "outbox. With --flush (and --wait S) it sends them and fails if Klaviyo refused any."
    )

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
        push.add_argument(
            "--retry-failed",
            action="store_true",
            help="Also requeue the dead outbox rows of the coupon's failed codes.",
        )
        for p in (create, imported, generate, push):
            p.add_argument(
                "--flush",
                action="store_true",
                help="Send the coupon's queued rows now and fail if Klaviyo refused a code.",
            )
            p.add_argument(
                "--wait",
                type=_seconds,
                default=0.0,
                metavar="S",
                help="With --flush: keep sending for up to S seconds until none is unsent.",
            )
        status = sub.add_parser("status")
        status.add_argument("coupon")
        for p in (create, imported, generate, push, status):
            p.add_argument(
                "--account",
                help="The Klaviyo account the coupon lives in (a name of "
                "KLAVIYO['ACCOUNTS'], or 'default', the default).",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "status":
                self._status(self._coupon(options, create=False))
                return
            if action == "create":
                coupon = coupons.get_or_create_coupon(
                    options["coupon"], options["description"], account=options["account"]
                )
                queued = coupons.enqueue_coupon(coupon)
                self.stdout.write(
                    f"Coupon {coupon.external_id} "
                    + ("queued for Klaviyo." if queued else "is in Klaviyo or queued already.")
                )
            else:
                coupon = self._coupon(options, create=action != "push")
                self._save_codes(action, coupon, options)
                if action == "push" or not options["no_push"]:
                    queued = coupons.enqueue_codes(coupon)
                    self.stdout.write(f"{len(queued)} code(s) queued.")
                if options.get("retry_failed"):
                    requeued = coupons.requeue_failed(coupon)
                    self.stdout.write(f"{requeued} failed code(s) requeued.")
            if options["flush"]:
                self._flush(coupon, options["wait"])
            elif action != "create" and not options.get("no_push"):
                self.stdout.write("klaviyo_flush (or a flush worker) sends them.")
        except KlaviyoValidationError as exc:
            raise CommandError(f"{exc} (field {exc.field})") from exc
        except FlushAborted as exc:
            raise CommandError(str(exc)) from exc
        except KlaviyoError as exc:
            raise CommandError(str(exc)) from exc

    def _coupon(self, options: dict[str, Any], *, create: bool) -> KlaviyoCoupon:
        external_id, account = options["coupon"], options["account"]
        if create:
            return coupons.get_or_create_coupon(external_id, account=account)
        stored = accounts.get_account(account).stored
        try:
            return KlaviyoCoupon.objects.get(account=stored, external_id=external_id)
        except KlaviyoCoupon.DoesNotExist:
            where = f" in account {account!r}" if stored else ""
            raise CommandError(f"No coupon {external_id!r}{where}; create it first.") from None

    def _save_codes(self, action: str, coupon: KlaviyoCoupon, options: dict[str, Any]) -> None:
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

    def _flush(self, coupon: KlaviyoCoupon, wait: float) -> None:
        def progress(report: Any) -> None:
            self.stdout.write(f"{coupon.external_id}: {report.claimed} row(s) handled")

        summary = coupons.flush_coupons(coupon, wait=wait, progress=progress)
        self.stdout.write(
            ", ".join(f"{status}: {n}" for status, n in summary.statuses.items()) or "no codes"
        )
        refused = KlaviyoCouponCode.objects.filter(coupon=coupon, status=Status.FAILED)
        failed = refused.count()
        for code in refused.order_by("pk")[:LIST_AT_MOST]:
            self.stderr.write(f"{code.code}: {code.error_code}: {code.error_detail}")
        problems = []
        coupon.refresh_from_db()
        if not coupon.klaviyo_id:
            row = coupons.dead_coupon_row(coupon)
            reason = f"{row.last_error_code}: {row.last_error_detail}" if row else "not sent yet"
            problems.append(f"the coupon is not in Klaviyo ({reason})")
        if failed:
            problems.append(f"{failed} code(s) failed (dead in the outbox, reasons above)")
        if summary.unsent:
            problems.append(f"{summary.unsent} row(s) still unsent (retrying; klaviyo_flush)")
        if problems:
            raise CommandError(f"Coupon {coupon.external_id}: " + "; ".join(problems) + ".")

    def _status(self, coupon: KlaviyoCoupon) -> None:
        self.stdout.write(f"Coupon {coupon.external_id} (Klaviyo id {coupon.klaviyo_id or '-'})")
        for status, n in coupons.status_counts(coupon).items():
            self.stdout.write(f"  {status}: {n}")
        unsent = coupons.open_rows(coupon)
        if unsent:
            self.stdout.write(f"  unsent outbox rows: {unsent}")
