"""Flushing several Klaviyo accounts: each account's rows go with its own client (key, API
URL, revision, rate-limit windows) and its own senders, in turn within one run.

A rejected key (401) stops that account only: its claimed rows go back uncounted, the
other accounts go on, and the run ends with ``FlushAborted(reason="auth")`` naming it (so
``klaviyo_flush`` exits non-zero as it does for one account). Rows of an account that is
no longer configured are dead-lettered at the start of a run over every account, with
the reason, instead of waiting forever unseen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django_klaviyo import accounts
from django_klaviyo.flush.report import FlushAborted
from django_klaviyo.flush.senders import Sender, make_senders
from django_klaviyo.models import OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

UNKNOWN_ACCOUNT = "unknown_account"


@dataclass
class AccountState:
    """One account within a flush run."""

    name: str
    # Its OutboxEvent.account value ("" for the default account).
    stored: str
    client: Any = None
    senders: dict[str, Sender] = field(default_factory=dict)
    aborted: FlushAborted | None = None


class AccountRotation:
    """The accounts one flusher sends for (one with ``--account``, else all), in turn."""

    def __init__(self, chosen: str | None, *, client: Any = None) -> None:
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
        self.current = self.states[0]
        self._swept = not self.every_account

    def sweep_once(self) -> bool:
        """True the first time a run over every account asks: time to dead-letter the rows
        of unconfigured accounts (``dead_letter_unknown``)."""
        due, self._swept = not self._swept, True
        return due

    def active(self) -> list[AccountState]:
        return [s for s in self.states if s.aborted is None]

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
        """``state``'s key was rejected: it sends nothing more in this run. Raises once no
        account is left, so a single account stops at once as before."""
        state.aborted = exc
        logger.error("Klaviyo account %r: %s", state.name, exc)
        if not self.active():
            self.raise_stopped()

    def raise_stopped(self, report: Any = None) -> None:
        """End the run with the accounts whose key was rejected, if any; the exception
        carries ``report`` (what the other accounts sent)."""
        stopped = [s for s in self.states if s.aborted is not None]
        if not stopped:
            return
        if len(self.states) == 1:
            raise stopped[0].aborted  # type: ignore[misc]
        exc = FlushAborted(
            " ".join(f"Account {s.name!r}: {s.aborted}" for s in stopped)
            + (
                f" The other account(s) ({', '.join(s.name for s in self.active())}) were sent."
                if self.active()
                else ""
            ),
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
