"""One claimed batch on its way to Klaviyo: each kind to its sender, in order, each
request sent while the flusher still holds its rows, and what Klaviyo said decided per row.

A refused request is narrowed down instead of failing whole: an error naming items
(``Sender.locate``) dead-letters their rows and sends the rest again; one naming none is
split in halves, within ``SPLIT_BUDGET``. An accepted request is settled per row by its
sender (``Sender.settle``): an import or catalog job may still have refused some rows.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from datetime import timedelta

from django.db import DatabaseError, InterfaceError, OperationalError

from django_klaviyo.exceptions import (
    KlaviyoAuthError,
    KlaviyoError,
    KlaviyoPermissionError,
    KlaviyoTransportError,
    KlaviyoValidationError,
)
from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.lease import Lease
from django_klaviyo.flush.outages import Unreachable, missing_scope_info
from django_klaviyo.flush.outcomes import ErrorInfo, Outcomes, error_info, is_retryable, splittable
from django_klaviyo.flush.report import FlushAborted
from django_klaviyo.flush.senders import Request, Sender, prepare_rows
from django_klaviyo.models import OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

Kind = OutboxEvent.Kind

# Extra requests one rejected request may cost while isolating its bad rows.
SPLIT_BUDGET = 64
# Rows of a kind whose endpoint the key may not use wait this long before they try again.
MISSING_SCOPE_HOLD_SECONDS = 300.0

# Upserts go first so later kinds find the Klaviyo ids they learn; deletions go last
# so nothing in the same batch re-creates a profile that is being erased.
KIND_ORDER = (
    Kind.PROFILE_UPSERT,
    Kind.LIST_ADD,
    Kind.LIST_REMOVE,
    Kind.SUBSCRIBE,
    Kind.UNSUBSCRIBE,
    # The catalog before the subscriptions naming its variants.
    Kind.CATALOG_CATEGORY,
    Kind.CATALOG_ITEM,
    Kind.CATALOG_VARIANT,
    Kind.BACK_IN_STOCK,
    # A coupon before its codes.
    Kind.COUPON,
    Kind.COUPON_CODE,
    Kind.EVENT,
    Kind.PROFILE_DELETION,
)


def send_batch(
    ctx: SendContext,
    senders: dict[str, Sender],
    rows: list[ClaimedRow],
    outcomes: Outcomes,
    unreachable: Unreachable,
) -> None:
    """Send ``rows`` kind by kind (``KIND_ORDER``) with the account's ``senders``, deciding
    each row's outcome; rows left undecided (a stop was asked for) are released by the
    caller. ``unreachable`` follows Klaviyo's reachability from one batch to the next."""
    by_kind: dict[str, list[ClaimedRow]] = defaultdict(list)
    for row in rows:
        by_kind[row.kind].append(row)
    for kind in KIND_ORDER:
        if kind not in by_kind:
            continue
        kind_rows = by_kind.pop(kind)
        if ctx.stopping():
            continue  # released by flush_batch, uncounted
        sender = senders[kind]
        ready, invalid = prepare_rows(sender, kind_rows, outcomes.recleaned)
        for row, info in invalid:
            outcomes.mark_dead([row], info)
        try:
            ready = sender.resolve(ctx, ready, outcomes)
            deliver(ctx, sender, sender.plan(ready), outcomes, unreachable)
        except KlaviyoPermissionError as err:
            # The key lacks a scope this kind's endpoint needs: only this kind waits.
            until = ctx.clock() + timedelta(seconds=MISSING_SCOPE_HOLD_SECONDS)
            outcomes.mark_hold(kind_rows, until, missing_scope_info(err))
        except (KlaviyoAuthError, FlushAborted, DatabaseError):
            raise
        except Exception as exc:
            # A bug in this kind's sender (not Klaviyo's answer, which deliver() settles):
            # its undecided rows go back with the reason, counting an attempt
            # (MAX_ATTEMPTS ends them), and the other kinds are still sent.
            logger.exception("Sending %s rows failed in the flusher itself.", kind)
            outcomes.mark_retry(kind_rows, _flusher_error(exc))
    for kind, leftover in by_kind.items():  # a kind this version does not know
        outcomes.mark_dead(leftover, ErrorInfo(None, "unknown_kind", f"Unknown kind {kind!r}."))


def still_held(lease: Lease, sender: Sender, request: Request) -> list[Request]:
    """``request``, or its rows this flusher still holds re-planned (none: [])."""
    lease.keep()
    if lease.holds_all(request.rows):
        return [request]
    if request.parts is not None:
        return []
    return sender.plan([r for r in request.rows if lease.holds(r)])


def deliver(
    ctx: SendContext,
    sender: Sender,
    requests: list[Request],
    outcomes: Outcomes,
    unreachable: Unreachable,
) -> None:
    """Send ``requests`` of one kind in turn, narrowing down refused ones."""
    queue = deque(requests)
    budget = SPLIT_BUDGET
    while queue:
        if ctx.stopping():
            return  # the rest is released uncounted (flush_batch)
        request = queue.popleft()
        if request.parts is not None and request.rows[0].pk in outcomes.decided:
            continue  # an earlier part of this row failed: the row is retried whole
        held = still_held(ctx.lease, sender, request)
        if len(held) != 1 or held[0] is not request:
            queue.extendleft(reversed(held))
            continue
        ctx.request_made()
        try:
            result = sender.send(ctx, request)
        except KlaviyoAuthError:
            raise
        except KlaviyoError as err:
            if _not_attempted(err):
                # Nothing reached Klaviyo (local rate limit, network down): the rows
                # wait, uncounted, and so does the rest of this kind.
                failures = unreachable.failed(err)
                until = ctx.retry_at(failures, getattr(err, "retry_after", None))
                outcomes.mark_release(request.rows, until)
                for rest in queue:
                    outcomes.mark_release(rest.rows, until)
                return
            if is_retryable(err):
                outcomes.mark_retry(request.rows, err)
                # The endpoint is throttled or failing: the rest waits, uncounted.
                until = ctx.retry_at(1, getattr(err, "retry_after", None))
                for rest in queue:
                    outcomes.mark_release(rest.rows, until)
                return
            located = sender.locate(err, request)
            if located:
                for row, info in located.values():
                    outcomes.mark_dead([row], info)
                remaining = [r for r in request.rows if r.pk not in located]
                if remaining and budget > 0:
                    budget -= 1
                    queue.extendleft(reversed(sender.plan(remaining)))
                elif remaining:
                    outcomes.mark_retry(remaining, err)
                continue
            if splittable(err) and len(request.rows) > 1:
                budget = _split(sender, request, err, queue, outcomes, budget)
                continue
            outcomes.mark_dead(request.rows, error_info(err))
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            # Not Klaviyo's answer: building or encoding the request failed (a payload
            # the rules never saw, a bug). Isolate the row(s) and dead-letter them.
            logger.warning("Building a %s request failed: %r", sender.kind, exc)
            if len(request.rows) > 1:
                budget = _split(sender, request, exc, queue, outcomes, budget)
                continue
            outcomes.mark_dead(request.rows, _unexpected(exc))
        else:
            unreachable.ended()
            if request.parts is not None:
                request.parts.remaining -= 1
                if request.parts.remaining:
                    continue  # sent once every part is accepted
            settled = sender.settle(request, result)
            if settled is None:
                outcomes.mark_sent(request.rows)
            else:
                outcomes.settle(settled)
            try:
                if sender.mirrored:  # the local mirror is the default account's
                    sender.succeeded(request, result, ctx.clock())
            except (OperationalError, InterfaceError):
                raise
            except Exception as exc:
                # Klaviyo has the change; the mirror (memberships, consent, profile ids)
                # missed it. Said on the rows, where the admin shows it.
                logger.exception(
                    "Updating the local mirror after a %s request failed.", sender.kind
                )
                ctx.note_rows(request.rows, f"Sent; the local mirror was not updated: {exc!r}")


def _split(
    sender: Sender,
    request: Request,
    err: BaseException,
    queue: deque[Request],
    outcomes: Outcomes,
    budget: int,
) -> int:
    if budget >= 2:
        half = len(request.rows) // 2
        halves = sender.plan(request.rows[:half]) + sender.plan(request.rows[half:])
        queue.extendleft(reversed(halves))
        return budget - 2
    # Could not isolate the bad rows in this run; try again later.
    if isinstance(err, KlaviyoError):
        outcomes.mark_retry(request.rows, err)
    else:
        outcomes.mark_retry(request.rows, KlaviyoValidationError(str(_unexpected(err).detail)))
    return budget


def _not_attempted(err: KlaviyoError) -> bool:
    """Nothing reached Klaviyo: the local rate limit said wait, or no connection."""
    if isinstance(err, KlaviyoTransportError):
        return err.nothing_sent
    return getattr(err, "code", None) == "client_rate_limited"


def _flusher_error(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, KlaviyoError):
        return error_info(exc)
    return ErrorInfo(
        None, "flusher_error", f"The flusher failed: {type(exc).__name__}: {exc}"[:2000]
    )


def _unexpected(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(
        None,
        "invalid_payload",
        f"The request could not be built: {type(exc).__name__}: {exc}"[:2000],
    )
