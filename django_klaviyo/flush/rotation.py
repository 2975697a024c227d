"""Flushing several Klaviyo accounts: each account's rows go with its own client (key, API
URL, revision, rate-limit windows) and its own senders, in turn within one run.

A rejected key (401) stops that account only: its claimed rows go back uncounted, the
other accounts go on, and the run ends with ``FlushAborted(reason="auth")`` naming it (so
``klaviyo_flush`` exits non-zero as it does for one account). Rows of an account that is
no longer configured are dead-lettered at the start of a run over every account, with
the reason, instead of waiting forever unseen.

A stopped account is tried again after a back-off (``STOP_BACKOFF_SECONDS``, doubling
with each refusal up to ``STOP_BACKOFF_MAX_SECONDS``), so a ``--loop`` worker serves it
again once Klaviyo accepts its key. The stop is kept in the rate-limit cache
(``RATE_LIMIT_CACHE``) under the account's name with a digest of its key: every worker
sharing that cache leaves the account alone until then, ``klaviyo_status`` and the
admin show "stopped until T: reason", and a worker started with a different key (the
fixed one) ignores the old stop at once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.cache import caches
from django.utils import timezone

from django_klaviyo import accounts
from django_klaviyo.client.ratelimit import account_scope
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.flush.report import FlushAborted
from django_klaviyo.flush.senders import Sender, make_senders
from django_klaviyo.models import OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

UNKNOWN_ACCOUNT = "unknown_account"

# A refused key is tried again after this long, doubled with each refusal in a row (a
# key restored in Klaviyo's settings is noticed within minutes, a revoked one costs one
# request an hour), up to the cap.
STOP_BACKOFF_SECONDS = 60.0
STOP_BACKOFF_MAX_SECONDS = 3600.0
STOP_KEY = "django_klaviyo:account_stopped:"


@dataclass(frozen=True)
class Stop:
    """An account whose key Klaviyo refused: left alone until ``until``."""

    account: str  # the account's name ("default" for the default account)
    until: datetime
    reason: str
    refusals: int  # in a row, for the back-off
    key: str  # digest of the refused key (``account_scope``), never the key

    def line(self) -> str:
        return f"stopped until {self.until.isoformat(timespec='seconds')}: {self.reason}"


def _cache() -> Any:
    return caches[klaviyo_settings.RATE_LIMIT_CACHE]


def _key_digest(name: str) -> str:
    return account_scope(accounts.get_account(name).private_api_key or "")


def stops(names: list[str] | None = None) -> dict[str, Stop]:
    """The recorded stops of the accounts ``names`` (default: every configured one), by
    name, refused with the key each is configured with now (a stop recorded for an
    older key no longer holds). Includes stops whose time has passed (being retried)."""
    names = accounts.names() if names is None else names
    try:
        found = _cache().get_many([STOP_KEY + name for name in names])
    except Exception:  # the cache is down: the workers retry as if nothing were stopped
        logger.warning("Could not read the stopped Klaviyo accounts from the cache.")
        return {}
    result = {}
    for name in names:
        stop = found.get(STOP_KEY + name)
        if isinstance(stop, Stop) and stop.key == _key_digest(name):
            result[name] = stop
    return result


def record_stop(name: str, reason: str, *, now: datetime) -> Stop:
    """Record that ``name``'s key was refused; returns the stop (until when it holds)."""
    previous = stops([name]).get(name)
    refusals = previous.refusals + 1 if previous is not None else 1
    seconds = min(STOP_BACKOFF_MAX_SECONDS, STOP_BACKOFF_SECONDS * 2 ** (refusals - 1))
    stop = Stop(name, now + dt.timedelta(seconds=seconds), reason, refusals, _key_digest(name))
    try:
        # Kept past ``until`` so the next refusal in a row doubles the back-off; a key
        # accepted for that long starts again from STOP_BACKOFF_SECONDS.
        _cache().set(STOP_KEY + name, stop, timeout=int(seconds + STOP_BACKOFF_MAX_SECONDS))
    except Exception:
        logger.warning("Could not record the stopped Klaviyo account %r in the cache.", name)
    return stop


@dataclass
class AccountState:
    """One account within a flush run."""

    name: str
    # Its OutboxEvent.account value ("" for the default account).
    stored: str
    client: Any = None
    senders: dict[str, Sender] = field(default_factory=dict)
    aborted: FlushAborted | None = None
    # When this worker may try the account again (also without a shared cache).
    retry_at: datetime | None = None
    # The client was given (tests, klaviyo_catalog): kept across retries.
    given_client: bool = False


class AccountRotation:
    """The accounts one flusher sends for (one with ``--account``, else all), in turn."""

    def __init__(
        self,
        chosen: str | None,
        *,
        client: Any = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        names = [accounts.get_account(chosen).name] if chosen else accounts.names()
        # Rows of these accounts only; None (a run over all) also dead-letters strays.
        self.every_account = chosen is None
        # A given client (tests, klaviyo_catalog) is the flushed account's when there is
        # one, else the default account's: it must never send another account's rows.
        self.states = [
            AccountState(
                name,
                accounts.get_account(name).stored,
                client if len(names) == 1 or name == accounts.DEFAULT else None,
            )
            for name in names
        ]
        for state in self.states:
            state.given_client = state.client is not None
        self.clock = clock or timezone.now
        self.current = self.states[0]
        self._swept = not self.every_account

    def sweep_once(self) -> bool:
        """True the first time a run over every account asks: time to dead-letter the rows
        of unconfigured accounts (``dead_letter_unknown``)."""
        due, self._swept = not self._swept, True
        return due

    def active(self) -> list[AccountState]:
        """The accounts to send now: not stopped, or stopped and due for another try
        (by this worker or, through the shared cache, by any other)."""
        if len(self.states) == 1:
            return [s for s in self.states if s.aborted is None]
        now = self.clock()
        stopped = [s for s in self.states if s.aborted is not None or s.retry_at is not None]
        shared = stops([s.name for s in self.states])
        result = []
        for state in self.states:
            stop = shared.get(state.name)
            if (stop is not None and stop.until > now) or (
                state.retry_at is not None and state.retry_at > now
            ):
                continue
            if state in stopped:
                # Its back-off is over: try again, with a fresh client and senders.
                logger.info("Klaviyo account %r: trying its key again.", state.name)
                state.aborted, state.retry_at = None, None
                state.senders = {}
                if not state.given_client:
                    state.client = None
            result.append(state)
        return result

    def client(self, make: Callable[[str | None], Any]) -> Any:
        """The current account's client, made once by ``make(name)`` (None: default)."""
        state = self.current
        if state.client is None:
            state.client = make(None if state.name == accounts.DEFAULT else state.name)
        return state.client

    def senders(self, using: str) -> dict[str, Sender]:
        """The current account's senders: their caches (learnt profile ids) are its own."""
        state = self.current
        if not state.senders:
            state.senders = make_senders(using, state.stored)
        return state.senders

    def stop(self, state: AccountState, exc: FlushAborted) -> None:
        """``state``'s key was rejected: with several accounts, it is left alone for a
        back-off (recorded for every worker, see ``record_stop``) while the others go on.
        Raises once no account is left, so a single account stops at once as before."""
        state.aborted = exc
        logger.error("Klaviyo account %r: %s", state.name, exc)
        if len(self.states) > 1:
            state.retry_at = record_stop(state.name, str(exc), now=self.clock()).until
        if not self.active():
            self.raise_stopped()

    def raise_stopped(self, report: Any = None) -> None:
        """End the run with the accounts whose key was rejected, if any; the exception
        carries ``report`` (what the other accounts sent)."""
        stopped = [s for s in self.states if s.aborted is not None]
        if not stopped:
            return
        sent = [s.name for s in self.states if s.aborted is None]
        if len(self.states) == 1:
            raise stopped[0].aborted  # type: ignore[misc]
        exc = FlushAborted(
            " ".join(f"Account {s.name!r}: {s.aborted}" for s in stopped)
            + (f" The other account(s) ({', '.join(sent)}) were sent." if sent else ""),
            reason="auth",
        )
        exc.report = report
        raise exc


def auth_hint(name: str) -> str:
    """Where the rejected key is set, for the abort message."""
    return accounts.get_account(name).setting("PRIVATE_API_KEY")


def dead_letter_unknown(*, now: datetime, using: str | None) -> int:
    """Dead-letter due rows naming an account that is not configured (removed from
    ``KLAVIYO["ACCOUNTS"]``): no key may send them. Returns how many."""
    known = accounts.stored_names()
    count = (
        OutboxEvent.objects.using(using)
        .filter(status__in=OutboxEvent.DUE_STATUSES)
        .exclude(account__in=known)
        .update(
            status=OutboxEvent.Status.DEAD,
            last_error_status=None,
            last_error_code=UNKNOWN_ACCOUNT,
            last_error_detail=(
                "This row's Klaviyo account is not configured in KLAVIYO['ACCOUNTS'] "
                f"(configured: {', '.join(accounts.names())}); nothing was sent."
            ),
            updated_at=now,
        )
    )
    if count:
        logger.error("Dead-lettered %d outbox row(s) of unconfigured Klaviyo accounts.", count)
    return count
