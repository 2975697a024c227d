"""``KlaviyoClient``: one method per Klaviyo operation (revision 2026-07-15).

Every method validates its input before anything is sent, with the same rules that
check outbox rows (``django_klaviyo.rules``), builds the body from the clean values
(``client.bodies``) and sends it through the transport, which rate-limits and retries.
Each ``send_*`` method sends a body built from values the rules already cleaned (the
flusher's outbox rows) and checks only what the request as a whole must hold. Each
docstring states whether the request is idempotent, i.e. whether it is sent again after
an answer was lost (read timeout, dropped connection, 500/502/504): see ``transport``
for the policy.
"""

from __future__ import annotations

import time as time_module
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import requests

from django_klaviyo.client.bodies.encoding import encode, ensure_size
from django_klaviyo.client.bodies.events import assemble_bulk_events, build_event
from django_klaviyo.client.bodies.profiles import (
    build_bulk_import,
    build_profile,
    build_profile_import,
    build_profile_update,
)
from django_klaviyo.client.catalog import CatalogMethods
from django_klaviyo.client.consent import ConsentMethods, empty_batch
from django_klaviyo.client.filters import any_, equals
from django_klaviyo.client.pagination import collection_params, iterate
from django_klaviyo.client.ratelimit import RateLimiter, account_scope
from django_klaviyo.client.reports import ReportMethods
from django_klaviyo.client.resources import AccountMethods, path_segment
from django_klaviyo.client.segments import SegmentMethods
from django_klaviyo.client.transport import DEFAULT_MAX_WAIT, RandomSource, Transport
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoError, KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.event_requests import clean_event_entries, clean_request_event
from django_klaviyo.rules.identifiers import normalize_email, normalize_phone_number
from django_klaviyo.rules.profiles import (
    clean_event_profile,
    clean_import_request,
    clean_update_request,
    clean_upsert_request,
)

BULK_IMPORT_DONE = ("complete", "cancelled")


class BulkImportTimeout(KlaviyoError, TimeoutError):
    """A profile bulk import job did not finish within the wait."""

    def __init__(self, message: str, *, job: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.job = dict(job or {})


class KlaviyoClient(AccountMethods, CatalogMethods, ConsentMethods, ReportMethods, SegmentMethods):
    """Klaviyo's server API for django-klaviyo. Every ``None`` argument falls back to the
    settings (``klaviyo_settings``); ``clock``/``sleep``/``random`` are injectable so that
    tests run without real waiting. The client never imports models."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        api_url: str | None = None,
        revision: str | None = None,
        timeout: float | tuple[float, float] | None = None,
        max_attempts: int | None = None,
        session: requests.Session | None = None,
        rate_limiter: RateLimiter | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        random: RandomSource | None = None,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        max_wait: float | None = None,
    ) -> None:
        api_key = api_key if api_key is not None else klaviyo_settings.PRIVATE_API_KEY
        if timeout is None:
            timeout = klaviyo_settings.timeout()
        elif isinstance(timeout, (int, float)):
            timeout = (float(timeout), float(timeout))
        self.clock = clock or time_module.time
        self.sleep = sleep or time_module.sleep
        if rate_limiter is None:
            rate_limiter = RateLimiter(
                scope=account_scope(api_key or ""), clock=self.clock, sleep=self.sleep
            )
        self._transport = Transport(
            api_key=api_key,
            api_url=api_url or klaviyo_settings.API_URL,
            revision=revision or klaviyo_settings.REVISION,
            timeout=timeout,
            max_attempts=max_attempts or int(klaviyo_settings.HTTP_MAX_ATTEMPTS),
            backoff_base=float(
                backoff_base if backoff_base is not None else klaviyo_settings.RETRY_BASE_SECONDS
            ),
            backoff_cap=float(
                backoff_cap if backoff_cap is not None else klaviyo_settings.RETRY_MAX_SECONDS
            ),
            max_wait=DEFAULT_MAX_WAIT if max_wait is None else float(max_wait),
            session=session,
            rate_limiter=rate_limiter,
            clock=self.clock,
            sleep=self.sleep,
            random=random,
        )

    def __repr__(self) -> str:
        t = self._transport
        return f"KlaviyoClient(api_url={t.api_url!r}, revision={t.revision!r})"

    @property
    def rate_limiter(self) -> RateLimiter:
        return self._transport.rate_limiter

    # -- plumbing ---------------------------------------------------------------------

    def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool,
        max_bytes: int | None = None,
        what: str = "The request",
        max_wait: float | None = None,
    ) -> Any:
        encoded = None
        if body is not None:
            encoded = encode(body)
            if max_bytes is not None:
                ensure_size(encoded, max_bytes, what)
        return self._transport.request(
            operation,
            method,
            path,
            params=params,
            body=encoded,
            idempotent=idempotent,
            max_wait=max_wait,
        )

    def _data(self, document: Any) -> dict[str, Any]:
        data = document.get("data") if isinstance(document, Mapping) else None
        return data if isinstance(data, dict) else {}

    def _collection(
        self, operation: str, path: str, params: Mapping[str, str] | None
    ) -> Iterator[dict[str, Any]]:
        def fetch(path_or_url: str, query: Mapping[str, str] | None) -> Any:
            return self._transport.request(
                operation, "GET", path_or_url, params=query, idempotent=True
            )

        return iterate(fetch, path, params)

    # -- events -----------------------------------------------------------------------

    def create_event(
        self,
        *,
        metric: str,
        profile: Mapping[str, Any],
        properties: Mapping[str, Any] | None = None,
        time: datetime | str | None = None,
        value: float | Decimal | None = None,
        value_currency: str | None = None,
        unique_id: str | None = None,
    ) -> None:
        """``POST /api/events``. Idempotent only with ``unique_id`` (Klaviyo records the
        first event per profile, metric and unique_id); without one, a lost answer is not
        resent, as the repeat would count the event twice."""
        event = clean_request_event(
            {
                "backfill": False,
                "metric": metric,
                "properties": properties,
                "time": time,
                "value": value,
                "value_currency": value_currency,
                "unique_id": unique_id,
            }
        )
        body = build_event(event, clean_event_profile(profile))
        has_unique_id = "unique_id" in body["data"]["attributes"]
        self._send(
            "create_event",
            "POST",
            "/api/events",
            body=body,
            idempotent=has_unique_id,
            max_bytes=limits.MAX_REQUEST_BYTES,
            what="The event",
        )

    def bulk_create_events(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/event-bulk-create-jobs``: ``[{"profile": {...}, "events": [...]}]``.

        Every event is cleaned by the same rules as outbox rows (``django_klaviyo.rules``).
        At most 1000 events and 5 MB; no (profile, metric, unique_id) twice. Idempotent
        only when every event has a ``unique_id``. An empty ``entries`` sends nothing.
        """
        if empty_batch(entries):
            return
        body = assemble_bulk_events(clean_event_entries(entries))
        idempotent = all(
            "unique_id" in event["attributes"]
            for entry in body["data"]["attributes"]["events-bulk-create"]["data"]
            for event in entry["attributes"]["events"]["data"]
        )
        self._send_bulk_events(body, idempotent)

    def send_event_entries(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """``bulk_create_events`` for entries the rules already cleaned: outbox rows, which
        were cleaned when written (the flusher). Only assembles the request; the
        request-level limits (1000 events, 5 MB, no repeated unique_id) still hold."""
        if empty_batch(entries):
            return
        body = assemble_bulk_events(entries)
        idempotent = all(e.get("unique_id") for entry in entries for e in entry["events"])
        self._send_bulk_events(body, idempotent)

    def _send_bulk_events(self, body: dict[str, Any], idempotent: bool) -> None:
        self._send(
            "bulk_create_events",
            "POST",
            "/api/event-bulk-create-jobs",
            body=body,
            idempotent=idempotent,
            max_bytes=limits.MAX_REQUEST_BYTES,
            what="The bulk event request",
        )

    # -- profiles ---------------------------------------------------------------------

    def upsert_profile(
        self, attributes: Mapping[str, Any], *, profile_id: str | None = None
    ) -> dict[str, Any]:
        """``POST /api/profile-import``: create or update; returns JSON:API ``data``
        (with ``id``). Idempotent (an upsert). A 409 raises KlaviyoDuplicateProfileError."""
        profile_id, meta, cleaned = clean_upsert_request(attributes, profile_id)
        return self.send_profile_import(
            build_profile_import(cleaned, profile_id=profile_id, meta=meta)
        )

    def send_profile_import(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``upsert_profile`` for a body built from clean values
        (``bodies.profiles.build_profile_import``; the flusher's outbox rows). Only the
        request's size is checked here."""
        document = self._send(
            "create_or_update_profile",
            "POST",
            "/api/profile-import",
            body=body,
            idempotent=True,
            max_bytes=limits.MAX_PROFILE_BYTES,
            what="The profile",
        )
        return self._data(document)

    def get_profile(
        self,
        profile_id: str,
        *,
        additional_fields: Iterable[str] = (),
        fields: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """``GET /api/profiles/{id}``; ``additional_fields`` e.g. ``("subscriptions",)``."""
        path = f"/api/profiles/{path_segment(profile_id, 'profile_id')}"
        extra = list(additional_fields)
        params = collection_params(
            fields={"profile": fields} if fields else None,
            include=include,
            additional_fields={"profile": extra} if extra else None,
        )
        return self._data(
            self._transport.request("get_profile", "GET", path, params=params, idempotent=True)
        )

    def find_profile(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        external_id: str | None = None,
    ) -> dict[str, Any] | None:
        """The profile matching one of the identifiers, or None.

        Identifiers are tried one at a time, strongest first (external_id, email,
        phone_number), since Klaviyo's filter cannot OR across fields; the first match
        wins. Costs one ``GET /api/profiles`` per identifier tried.
        """
        lookups: list[tuple[str, str]] = []
        if external_id not in (None, ""):
            lookups.append(("external_id", str(external_id)))
        if email not in (None, ""):
            lookups.append(("email", normalize_email(email)))  # type: ignore[arg-type]
        if phone_number not in (None, ""):
            lookups.append(("phone_number", normalize_phone_number(phone_number)))  # type: ignore[arg-type]
        if not lookups:
            raise KlaviyoValidationError(
                "find_profile needs an email, phone_number or external_id.", field="profile"
            )
        for field, value in lookups:
            params = collection_params(filter=equals(field, value), page_size=1, max_page_size=100)
            document = self._transport.request(
                "get_profiles", "GET", "/api/profiles", params=params, idempotent=True
            )
            data = document.get("data") if isinstance(document, Mapping) else None
            if isinstance(data, list) and data and isinstance(data[0], dict):
                return data[0]
        return None

    def find_profiles(self, field: str, values: Sequence[str]) -> list[dict[str, Any]]:
        """The profiles whose ``field`` (email, phone_number, external_id) is one of
        ``values`` (at most ``limits.VALUES_PER_PROFILE_LOOKUP``, one
        ``GET /api/profiles?filter=any(...)``; all pages)."""
        if field not in ("email", "phone_number", "external_id"):
            raise KlaviyoValidationError(f"Cannot look profiles up by {field!r}.", field="field")
        values = [str(v) for v in values]
        if not values:
            return []
        if len(values) > limits.VALUES_PER_PROFILE_LOOKUP:
            raise KlaviyoValidationError(
                f"At most {limits.VALUES_PER_PROFILE_LOOKUP} values per profile lookup.",
                field="values",
            )
        params = collection_params(
            filter=any_(field, values),
            fields={"profile": ["email", "phone_number", "external_id"]},
            page_size=100,
            max_page_size=100,
        )
        return list(self._collection("get_profiles", "/api/profiles", params))

    def update_profile(self, profile_id: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /api/profiles/{id}``: a partial update (``None`` clears a field).
        Idempotent: the same PATCH twice leaves the same profile."""
        clean_id, meta, cleaned = clean_update_request(profile_id, attributes)
        return self.send_profile_update(profile_id, build_profile_update(clean_id, cleaned, meta))

    def send_profile_update(self, profile_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``update_profile`` for a body built from clean values
        (``bodies.profiles.build_profile_update``)."""
        path = f"/api/profiles/{path_segment(profile_id, 'profile_id')}"
        return self._data(self._send("update_profile", "PATCH", path, body=body, idempotent=True))

    def bulk_import_profiles(
        self, profiles: Sequence[Mapping[str, Any]], *, list_ids: Iterable[str] = ()
    ) -> dict[str, Any]:
        """``POST /api/profile-bulk-import-jobs`` (at most 10,000 profiles and 5 MB);
        returns the job resource. Idempotent: a repeated job upserts the same profiles."""
        cleaned, ids = clean_import_request(profiles, list_ids)
        resources = [build_profile(a, profile_id=i, meta=m) for i, m, a in cleaned]
        return self.send_bulk_import(build_bulk_import(resources, ids))

    def send_bulk_import(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``bulk_import_profiles`` for a body built from clean values
        (``bodies.profiles.build_bulk_import``). Only the request's size is checked here."""
        return self._data(
            self._send(
                "bulk_import_profiles",
                "POST",
                "/api/profile-bulk-import-jobs",
                body=body,
                idempotent=True,
                max_bytes=limits.MAX_REQUEST_BYTES,
                what="The bulk profile import",
            )
        )

    def get_bulk_import_job(self, job_id: str) -> dict[str, Any]:
        """``GET /api/profile-bulk-import-jobs/{job_id}``."""
        path = f"/api/profile-bulk-import-jobs/{path_segment(job_id, 'job_id')}"
        return self._data(
            self._transport.request("get_bulk_import_profiles_job", "GET", path, idempotent=True)
        )

    def wait_for_bulk_import_job(
        self, job_id: str, *, timeout: float = 600.0, poll_interval: float = 5.0
    ) -> dict[str, Any]:
        """Poll the job until it is complete or cancelled; raise BulkImportTimeout after
        ``timeout`` seconds (of the client's clock)."""
        deadline = self.clock() + timeout
        while True:
            job = self.get_bulk_import_job(job_id)
            status = (job.get("attributes") or {}).get("status")
            if status in BULK_IMPORT_DONE:
                return job
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise BulkImportTimeout(
                    f"Klaviyo bulk import job {job_id} is still {status!r} after {timeout}s.",
                    job=job,
                )
            self.sleep(min(poll_interval, remaining))

    def get_bulk_import_errors(self, job_id: str) -> list[dict[str, Any]]:
        """Every import error of a job (``GET .../import-errors``, all pages)."""
        path = f"/api/profile-bulk-import-jobs/{path_segment(job_id, 'job_id')}/import-errors"
        params = collection_params(page_size=100, max_page_size=100)
        return list(self._collection("get_errors_for_bulk_import_profiles_job", path, params))
