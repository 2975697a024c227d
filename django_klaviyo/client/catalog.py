"""Catalog, back-in-stock and coupon operations of ``KlaviyoClient`` (revision 2026-07-15).

Catalog writes go through Klaviyo's bulk jobs (at most 100 resources a job); a job is
accepted with 202 and then polled (``GET .../<job_id>``) until it is ``complete`` or
``cancelled``. Per-resource failures come back in the job's ``attributes.errors``.
The JSON:API bodies are built by ``client.bodies.catalog``, ``.back_in_stock`` and
``.coupons``, which the flusher's senders use too.

Each public call cleans its arguments with the matching outbox kind's rules
(``django_klaviyo.rules``) and raises ``KlaviyoValidationError`` naming the argument; its
``send_...`` twin sends a body built from input the rules already cleaned (the
flusher's rows, cleaned when written) and checks nothing again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from django_klaviyo.client.bodies.back_in_stock import back_in_stock_body
from django_klaviyo.client.bodies.catalog import MEMBERS, catalog_job_body
from django_klaviyo.client.bodies.coupons import coupon_body, coupon_codes_body
from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.rules import limits
from django_klaviyo.rules.catalog import (
    check_job,
    clean_back_in_stock_request,
    clean_catalog_resources,
)
from django_klaviyo.rules.coupons import clean_coupon, clean_coupon_codes_request

if TYPE_CHECKING:
    from django_klaviyo.client.transport import Transport

JOB_DONE = ("complete", "cancelled")

_PATH_NOUN = {"item": "item", "variant": "variant", "category": "category"}
# operationIds of the job GETs, as the spec names them.
_JOB_GET = {
    ("item", "create"): "get_bulk_create_catalog_items_job",
    ("item", "update"): "get_bulk_update_catalog_items_job",
    ("item", "delete"): "get_bulk_delete_catalog_items_job",
    ("variant", "create"): "get_bulk_create_variants_job",
    ("variant", "update"): "get_bulk_update_variants_job",
    ("variant", "delete"): "get_bulk_delete_variants_job",
    ("category", "create"): "get_bulk_create_categories_job",
    ("category", "update"): "get_bulk_update_categories_job",
    ("category", "delete"): "get_bulk_delete_categories_job",
}


class CatalogJobTimeout(KlaviyoError, TimeoutError):
    """A bulk job was still running when the wait ended; its rows are retried."""

    retryable = True

    def __init__(self, message: str, *, job: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.job = dict(job or {})


def job_status(job: Mapping[str, Any]) -> str:
    return str((job.get("attributes") or {}).get("status") or "")


class CatalogMethods:
    """Mixed into ``KlaviyoClient``: it provides ``_send``, ``_data``, ``clock``,
    ``sleep`` and ``_transport``."""

    _transport: Transport

    def start_catalog_job(
        self, kind: str, op: str, resources: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """``POST /api/catalog-<kind>-bulk-<op>-jobs``; returns the job resource.
        Not idempotent for create (a repeated create job fails as duplicates, which
        the flusher turns into an update), idempotent for update and delete.

        ``resources`` (built by ``bodies.catalog.catalog_resource``) are cleaned first by
        the catalog rows' rules (``rules.catalog.clean_catalog_resources``);
        ``KlaviyoValidationError`` names the resource (``resources[3].attributes.price``)."""
        return self._start_catalog_job(kind, op, clean_catalog_resources(kind, op, resources))

    def _start_catalog_job(
        self, kind: str, op: str, resources: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        body = catalog_job_body(kind, op, resources)
        operation = f"bulk_{op}_catalog_{MEMBERS[kind]}"
        path = f"/api/catalog-{_PATH_NOUN[kind]}-bulk-{op}-jobs"
        return self._data(  # type: ignore[attr-defined, no-any-return]
            self._send(  # type: ignore[attr-defined]
                operation,
                "POST",
                path,
                body=body,
                idempotent=op != "create",
                max_bytes=limits.MAX_REQUEST_BYTES,
                what=f"The catalog {kind} {op} job",
            )
        )

    def get_catalog_job(self, kind: str, op: str, job_id: str) -> dict[str, Any]:
        check_job(kind, op)
        path = f"/api/catalog-{_PATH_NOUN[kind]}-bulk-{op}-jobs/{quote(str(job_id), safe='')}"
        return self._data(  # type: ignore[attr-defined, no-any-return]
            self._transport.request(_JOB_GET[(kind, op)], "GET", path, idempotent=True)
        )

    def _wait(
        self,
        fetch: Any,
        job: dict[str, Any],
        timeout: float,
        poll: float,
        between_polls: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        deadline = self.clock() + timeout  # type: ignore[attr-defined]
        while job_status(job) not in JOB_DONE:
            remaining = deadline - self.clock()  # type: ignore[attr-defined]
            if remaining <= 0:
                raise CatalogJobTimeout(
                    f"Klaviyo job {job.get('id')} is still {job_status(job)!r} after {timeout}s.",
                    job=job,
                )
            self.sleep(min(poll, remaining))  # type: ignore[attr-defined]
            if between_polls is not None:
                between_polls()
            job = fetch(str(job.get("id")))
        return job

    def run_catalog_job(
        self,
        kind: str,
        op: str,
        resources: Sequence[Mapping[str, Any]],
        *,
        timeout: float = 300.0,
        poll_interval: float = 2.0,
        between_polls: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Start a catalog job and poll it until it is complete or cancelled; raise
        ``CatalogJobTimeout`` (retryable) after ``timeout`` seconds of the client's clock.
        ``between_polls`` runs before each poll (the flusher renews its lease there).
        ``resources`` are cleaned first, as by ``start_catalog_job``."""
        return self.send_catalog_job(
            kind,
            op,
            clean_catalog_resources(kind, op, resources),
            timeout=timeout,
            poll_interval=poll_interval,
            between_polls=between_polls,
        )

    def send_catalog_job(
        self,
        kind: str,
        op: str,
        resources: Sequence[Mapping[str, Any]],
        *,
        timeout: float = 300.0,
        poll_interval: float = 2.0,
        between_polls: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """``run_catalog_job`` for resources ``catalog_resource`` built from what the rules
        already cleaned (outbox rows: the flusher); checks only the job's size."""
        job = self._start_catalog_job(kind, op, resources)
        return self._wait(
            lambda job_id: self.get_catalog_job(kind, op, job_id),
            job,
            timeout,
            poll_interval,
            between_polls,
        )

    def create_back_in_stock_subscription(
        self,
        profile: Mapping[str, Any],
        variant_external_id: str,
        channels: Sequence[str] = ("EMAIL",),
    ) -> None:
        """``POST /api/back-in-stock-subscriptions`` (202, no body). Idempotent:
        subscribing twice leaves one subscription.

        Cleaned first by the ``back_in_stock`` row's rule
        (``rules.catalog.clean_back_in_stock_request``): identifiers normalised, only
        email, phone_number and external_id, the email channel needs an email and sms a
        phone number; ``KlaviyoValidationError`` names the argument (``profile.email``)."""
        cleaned = clean_back_in_stock_request(profile, variant_external_id, channels)
        self.send_back_in_stock_subscription(
            back_in_stock_body(cleaned["profile"], cleaned["variant"], cleaned["channels"])
        )

    def send_back_in_stock_subscription(self, body: Mapping[str, Any]) -> None:
        """``create_back_in_stock_subscription`` for a body ``back_in_stock_body`` built
        from what the rules already cleaned (an outbox row: the flusher); checks nothing."""
        self._send(  # type: ignore[attr-defined]
            "create_back_in_stock_subscription",
            "POST",
            "/api/back-in-stock-subscriptions",
            body=body,
            idempotent=True,
        )

    def create_coupon(self, external_id: str, description: str = "") -> dict[str, Any]:
        """``POST /api/coupons`` (201); returns the coupon resource. Not idempotent.

        Cleaned first by the ``coupon`` row's rule (``rules.coupons.clean_coupon``): the
        external id is 1 to 255 letters, digits, '-' or '_', the description text of at
        most 255 characters; ``KlaviyoValidationError`` names the argument."""
        cleaned = clean_coupon({"external_id": external_id, "description": description})
        return self.send_coupon(coupon_body(cleaned["external_id"], cleaned["description"]))

    def send_coupon(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``create_coupon`` for a body ``coupon_body`` built from what the rules already
        cleaned (an outbox row: the flusher); checks nothing."""
        return self._data(  # type: ignore[attr-defined, no-any-return]
            self._send(  # type: ignore[attr-defined]
                "create_coupon", "POST", "/api/coupons", body=body, idempotent=False
            )
        )

    def get_coupon_code_job(self, job_id: str) -> dict[str, Any]:
        """The job with its created codes (``include=coupon-codes``) as ``included``."""
        path = f"/api/coupon-code-bulk-create-jobs/{quote(str(job_id), safe='')}"
        document = self._transport.request(
            "get_bulk_create_coupon_codes_job",
            "GET",
            path,
            params={"include": "coupon-codes"},
            idempotent=True,
        )
        job = self._data(document)  # type: ignore[attr-defined]
        if isinstance(document, Mapping):
            job["included"] = list(document.get("included") or [])
        return job  # type: ignore[no-any-return]

    def _start_coupon_code_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/coupon-code-bulk-create-jobs`` only (one request, no polling);
        returns the job resource as Klaviyo answered (the flusher follows it later)."""
        return self._data(  # type: ignore[attr-defined, no-any-return]
            self._send(  # type: ignore[attr-defined]
                "bulk_create_coupon_codes",
                "POST",
                "/api/coupon-code-bulk-create-jobs",
                body=body,
                idempotent=False,
                max_bytes=limits.MAX_REQUEST_BYTES,
                what="The coupon code job",
            )
        )

    def run_coupon_code_job(
        self,
        coupon_id: str,
        codes: Sequence[tuple[str, str | datetime | None]],
        *,
        timeout: float = 300.0,
        poll_interval: float = 2.0,
        between_polls: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """``POST /api/coupon-code-bulk-create-jobs`` (1 to 1,000 ``(code, expires_at)``),
        then poll (``between_polls``: as for ``run_catalog_job``).

        Cleaned first by the ``coupon_code`` row's rules
        (``rules.coupons.clean_coupon_codes_request``): codes as coupon ids, expiries as
        aware date-times sent in UTC; ``KlaviyoValidationError`` names the argument
        (``codes[3]``, ``codes[3].expires_at``)."""
        coupon, cleaned = clean_coupon_codes_request(coupon_id, codes)
        return self.send_coupon_code_job(
            coupon_codes_body(coupon, cleaned),
            timeout=timeout,
            poll_interval=poll_interval,
            between_polls=between_polls,
        )

    def send_coupon_code_job(
        self,
        body: Mapping[str, Any],
        *,
        timeout: float = 300.0,
        poll_interval: float = 2.0,
        between_polls: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """``run_coupon_code_job`` for a body ``coupon_codes_body`` built from what the
        rules already cleaned (outbox rows: the flusher); checks only the request's size."""
        job = self._start_coupon_code_job(body)
        job = self._wait(self.get_coupon_code_job, job, timeout, poll_interval, between_polls)
        if "included" not in job:  # done at once: fetch it for the codes' ids and status
            job = self.get_coupon_code_job(str(job.get("id")))
        return job
