"""Outcomes: what a failed Klaviyo call means for the rows of its request.

- accepted by Klaviyo: ``sent``;
- retryable failure (429, 5xx, transport, ``error.retryable``): ``retrying`` with
  back-off, ``dead`` after MAX_ATTEMPTS (decided when the outcomes are written);
- an error naming items (``locate_rows``): only their rows are ``dead``;
- other client errors: ``dead`` with Klaviyo's status, code and detail;
- an accepted request that still refused some rows (an import or catalog job's per-item
  errors): each row is settled on its own (``RowOutcome``, ``refused``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django_klaviyo.exceptions import (
    KlaviyoAPIError,
    KlaviyoAuthError,
    KlaviyoDuplicateProfileError,
    KlaviyoError,
    KlaviyoRateLimitError,
    KlaviyoServerError,
    KlaviyoTransportError,
    KlaviyoValidationError,
)
from django_klaviyo.flush.claim import ClaimedRow


@dataclass(frozen=True)
class ErrorInfo:
    status: int | None
    code: str
    detail: str


def error_info(err: BaseException) -> ErrorInfo:
    """What a row records about a failure: Klaviyo's status, code and detail."""
    if isinstance(err, KlaviyoAPIError):
        detail = err.detail or err.title or str(err)
        if err.pointer:
            detail = f"{detail} (at {err.pointer})"
        if isinstance(err, KlaviyoDuplicateProfileError) and err.duplicate_profile_id:
            detail = f"{detail} duplicate_profile_id={err.duplicate_profile_id}"
        return ErrorInfo(err.status, (err.code or "")[:64], detail)
    if isinstance(err, KlaviyoTransportError):
        return ErrorInfo(None, "timeout" if err.timeout else "transport_error", str(err))
    if isinstance(err, KlaviyoValidationError):
        where = f" (field {err.field})" if err.field else ""
        return ErrorInfo(None, "invalid_input", f"{err}{where}")
    return ErrorInfo(None, type(err).__name__[:64], str(err))


def _item_error_info(item: Mapping[str, Any], fallback: ErrorInfo) -> ErrorInfo:
    status = item.get("status")
    try:
        status = int(status) if status is not None else fallback.status
    except (TypeError, ValueError):
        status = fallback.status
    detail = str(item.get("detail") or item.get("title") or fallback.detail)
    pointer = _pointer(item)
    if pointer:
        detail = f"{detail} (at {pointer})"
    return ErrorInfo(status, str(item.get("code") or fallback.code)[:64], detail)


def _pointer(item: Mapping[str, Any]) -> str:
    source = item.get("source")
    if isinstance(source, Mapping):
        return str(source.get("pointer") or "")
    return ""


def is_retryable(err: BaseException) -> bool:
    if isinstance(err, KlaviyoAuthError):
        return False
    if isinstance(err, (KlaviyoRateLimitError, KlaviyoServerError, KlaviyoTransportError)):
        return True
    return bool(getattr(err, "retryable", False))


def splittable(err: BaseException) -> bool:
    """Errors about the request's content that a smaller request may avoid."""
    if isinstance(err, KlaviyoValidationError):
        return True
    return isinstance(err, KlaviyoAPIError) and err.status in (400, 413, 422)


def transient(status: int | None) -> bool:
    """A status Klaviyo gives to what may succeed later: throttled (429) or failing (5xx)."""
    return status is not None and (status == 429 or status >= 500)


SENT, RETRY, DEAD, AWAIT = "sent", "retry", "dead", "await"


@dataclass(frozen=True)
class AcceptedJob:
    """A request Klaviyo accepted as a bulk job still running: its rows wait for it
    (``awaiting_job``) and a later pass settles them (``flush.jobs``)."""

    kind: str
    op: str
    job_id: str
    # The rows' pks in the job body's order (Klaviyo's errors point at an index).
    rows: tuple[Any, ...]
    # Seconds after which the job is given up on and its rows are retried.
    lifetime: float
    fallback: bool = False


@dataclass(frozen=True)
class RowOutcome:
    """What an accepted request did for one of its rows: ``sent``, or refused with
    ``info`` and then ``retry`` (transient) or ``dead``."""

    row: ClaimedRow
    fate: str = SENT
    info: ErrorInfo | None = None
    # fate AWAIT: the job the row waits for.
    job: AcceptedJob | None = None


def refused(row: ClaimedRow, info: ErrorInfo) -> RowOutcome:
    """A row an accepted request still refused: retried when Klaviyo's status for it is
    transient (``transient``), else dead with the reason."""
    return RowOutcome(row, RETRY if transient(info.status) else DEAD, info)


def per_row(
    rows: Iterable[ClaimedRow], refusals: Mapping[Any, ErrorInfo] | None
) -> list[RowOutcome]:
    """``rows`` settled from the refusals of a job, by row pk (the others were taken)."""
    refusals = refusals or {}
    return [refused(r, refusals[r.pk]) if r.pk in refusals else RowOutcome(r) for r in rows]


@dataclass
class _Retry:
    rows: list[ClaimedRow]
    info: ErrorInfo
    retry_after: float


@dataclass
class Outcomes:
    """The fate of each claimed row of one batch, written to the database in bulk."""

    sent: list[ClaimedRow] = field(default_factory=list)
    dead: list[tuple[ClaimedRow, ErrorInfo]] = field(default_factory=list)
    retry: list[_Retry] = field(default_factory=list)
    # (row, next_attempt_at or None to keep it): back to the previous state, uncounted.
    release: list[tuple[ClaimedRow, datetime | None]] = field(default_factory=list)
    # (row, next_attempt_at, why): back to the previous state, uncounted, with the reason
    # recorded (e.g. the API key lacks a scope its endpoint needs).
    hold: list[tuple[ClaimedRow, datetime, ErrorInfo]] = field(default_factory=list)
    # (row, job): accepted as part of a Klaviyo job still running; settled by a later pass.
    awaiting: list[tuple[ClaimedRow, AcceptedJob]] = field(default_factory=list)
    decided: set[Any] = field(default_factory=set)
    # Rows of an older rules version cleaned for this batch: saved back with the
    # outcomes when they go back to the queue, so a retry takes them as they are.
    recleaned: list[ClaimedRow] = field(default_factory=list)

    def _take(self, rows: Iterable[ClaimedRow]) -> list[ClaimedRow]:
        decided = self.decided
        rows = list(rows)
        # The common case, rows none of which is decided yet: each pk hashed once (a
        # UUID's hash is a Python call), as set-to-set operations reuse stored hashes.
        fresh = {r.pk for r in rows}
        if len(fresh) == len(rows) and fresh.isdisjoint(decided):
            decided |= fresh
            return rows
        taken = [r for r in rows if r.pk not in decided]
        decided.update([r.pk for r in taken])
        return taken

    def mark_sent(self, rows: Iterable[ClaimedRow]) -> None:
        self.sent.extend(self._take(rows))

    def mark_dead(self, rows: Iterable[ClaimedRow], info: ErrorInfo) -> None:
        self.dead.extend((r, info) for r in self._take(rows))

    def mark_retry(self, rows: Iterable[ClaimedRow], err: BaseException | ErrorInfo) -> None:
        taken = self._take(rows)
        if taken:
            if isinstance(err, ErrorInfo):
                self.retry.append(_Retry(taken, err, 0.0))
                return
            retry_after = float(getattr(err, "retry_after", None) or 0.0)
            self.retry.append(_Retry(taken, error_info(err), retry_after))

    def mark_release(self, rows: Iterable[ClaimedRow], until: datetime | None = None) -> None:
        self.release.extend((r, until) for r in self._take(rows))

    def mark_hold(self, rows: Iterable[ClaimedRow], until: datetime, info: ErrorInfo) -> None:
        self.hold.extend((r, until, info) for r in self._take(rows))

    def mark_awaiting(self, rows: Iterable[ClaimedRow], job: AcceptedJob) -> None:
        self.awaiting.extend((r, job) for r in self._take(rows))

    def settle(self, settled: Iterable[RowOutcome]) -> None:
        """Record what an accepted request did for each of its rows."""
        sent = []
        for outcome in settled:
            if outcome.fate == AWAIT and outcome.job is not None:
                self.mark_awaiting([outcome.row], outcome.job)
            elif outcome.fate == SENT or outcome.info is None:
                sent.append(outcome.row)
            elif outcome.fate == RETRY:
                self.mark_retry([outcome.row], outcome.info)
            else:
                self.mark_dead([outcome.row], outcome.info)
        self.mark_sent(sent)

    def only(self, held: set[Any]) -> None:
        """Keep only the outcomes of rows in ``held`` (rows this flusher still leases)."""
        self.sent = [r for r in self.sent if r.pk in held]
        self.dead = [(r, i) for r, i in self.dead if r.pk in held]
        for retry in self.retry:
            retry.rows = [r for r in retry.rows if r.pk in held]
        self.retry = [r for r in self.retry if r.rows]
        self.release = [(r, u) for r, u in self.release if r.pk in held]
        self.hold = [(r, u, i) for r, u, i in self.hold if r.pk in held]
        self.awaiting = [(r, j) for r, j in self.awaiting if r.pk in held]
        self.recleaned = [r for r in self.recleaned if r.pk in held]


def fail(rows: list[ClaimedRow], err: BaseException, outcomes: Outcomes) -> bool:
    """Record a failed call for ``rows``; False when later calls should wait (retryable)."""
    if is_retryable(err):
        outcomes.mark_retry(rows, err)
        return False
    outcomes.mark_dead(rows, error_info(err))
    return True


# Rows an error points at, by pk, with what each records.
Located = dict[Any, tuple[ClaimedRow, ErrorInfo]]


def _rows_at(match: re.Match[str] | None, index: list[list[ClaimedRow]]) -> list[ClaimedRow]:
    """The rows behind item ``group(1)`` (narrowed to sub-item ``group(2)`` if any)."""
    if not match or int(match.group(1)) >= len(index):
        return []
    rows = index[int(match.group(1))]
    if match.re.groups >= 2 and match.group(2) is not None:
        sub = int(match.group(2))
        return [rows[sub]] if sub < len(rows) else []
    return rows


def locate_rows(
    err: KlaviyoError,
    index: list[list[ClaimedRow]],
    *,
    pointer: re.Pattern[str],
    field: re.Pattern[str],
) -> Located | None:
    """Map each error of ``err`` to the rows it names; None unless every error names rows."""
    if isinstance(err, KlaviyoValidationError):
        rows = _rows_at(field.match(err.field or ""), index)
        info = error_info(err)
        return {row.pk: (row, info) for row in rows} or None
    if not isinstance(err, KlaviyoAPIError):
        return None
    items = err.errors or [{"source": {"pointer": err.pointer or ""}}]
    fallback = error_info(err)
    located: Located = {}
    for item in items:
        if not isinstance(item, Mapping):
            return None
        rows = _rows_at(pointer.search(_pointer(item)), index)
        if not rows:
            return None
        for row in rows:
            located[row.pk] = (row, _item_error_info(item, fallback))
    return located
