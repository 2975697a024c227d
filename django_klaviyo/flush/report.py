"""What a flush run reports: counts per kind and outcome, and why a run stopped early."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from django_klaviyo.exceptions import KlaviyoError


class FlushAborted(KlaviyoError):
    """The flusher stopped: the API key was rejected or the database went away."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        # "auth" (a configuration problem), "database", or "outage" (the database was
        # unavailable for longer than the worker was told to wait).
        self.reason = reason


class StopSignal(Protocol):
    def is_set(self) -> bool: ...


# ---------------------------------------------------------------------------------------
# Reports


@dataclass
class KindCounts:
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    # Claimed but not attempted (run stopped, or throttled earlier in the batch).
    released: int = 0
    # Waiting, uncounted, because the API key lacks a scope their endpoint needs.
    held: int = 0
    # Accepted by Klaviyo as part of a bulk job still running (settled by a later pass).
    awaiting: int = 0


@dataclass
class FlushReport:
    kinds: dict[str, KindCounts] = field(default_factory=dict)
    requests: int = 0
    batches: int = 0
    claimed: int = 0
    reclaimed: int = 0
    # Claimed rows another flusher reclaimed after this one's lease ran out: their
    # outcomes were left to it and are not counted here.
    lost_leases: int = 0
    dry_run: bool = False
    # Dry run only: rows per kind that would be sent, and the requests that would take.
    planned: dict[str, int] = field(default_factory=dict)
    planned_requests: int = 0
    planned_invalid: int = 0
    # Why the run ended: "drained", "stopped", "max_seconds".
    ended: str = ""

    def counts(self, kind: str) -> KindCounts:
        return self.kinds.setdefault(str(kind), KindCounts())

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.kinds.values())

    @property
    def retrying(self) -> int:
        return sum(c.retrying for c in self.kinds.values())

    @property
    def dead(self) -> int:
        return sum(c.dead for c in self.kinds.values())

    def summary_lines(self) -> list[str]:
        if self.dry_run:
            total = sum(self.planned.values())
            lines = [
                f"Dry run: {total} due row(s) would be sent in {self.planned_requests} "
                f"request(s); {self.planned_invalid} would be dead-lettered as invalid."
            ]
            lines += [f"  {kind}: {n}" for kind, n in sorted(self.planned.items())]
            return lines
        lines = [
            f"Sent {self.sent}, retrying {self.retrying}, dead {self.dead} "
            f"({self.requests} request(s), {self.batches} batch(es)"
            + (f", {self.reclaimed} expired lease(s) reclaimed" if self.reclaimed else "")
            + (f", {self.lost_leases} row(s) lost to another flusher" if self.lost_leases else "")
            + ")."
        ]
        for kind, c in sorted(self.kinds.items()):
            line = f"  {kind}: sent {c.sent}, retrying {c.retrying}, dead {c.dead}"
            if c.released:
                line += f", released {c.released}"
            if c.held:
                line += f", waiting for a scope {c.held}"
            if c.awaiting:
                line += f", handed to Klaviyo jobs {c.awaiting}"
            lines.append(line)
        return lines
