"""The sender's own watchdog: a relay that stops escalating is still noticed.

The relay escalates an unacknowledged notice when its deadline passes. The sending client
checks the same thing by its own clock, taking nothing from the relay: deadlines run from
the time this client sent the notice (kept in its outbox), not from the relay's signed
acceptance time, and only the recipient's own signed acknowledgement satisfies it (a
relay's escalation or resolution proves what the relay did, never that the recipient
answered). A recipient that has not acknowledged ``grace`` after that deadline raises a
:class:`~client.items.WatchdogOverdue` item. Pure functions; the client feeds them its
durable state and the time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from client.items import WatchdogOverdue

MINUTE = 60_000
HOUR = 60 * MINUTE


@dataclass(frozen=True, slots=True)
class WatchdogPolicy:
    """The client's own acknowledgement windows (DESIGN.md defaults) and grace period."""

    ack_window_ms: dict[str, int] = field(default_factory=lambda: {
        "critical": 15 * MINUTE, "high": HOUR, "medium": 24 * HOUR, "low": 72 * HOUR})
    #: How long after the deadline the alarm waits (an ack in flight, the relay's report).
    grace_ms: int = 2 * MINUTE
    #: Notices older than this are no longer watched.
    horizon_ms: int = 30 * 24 * HOUR

    def deadline(self, severity: str, sent_at: int) -> int:
        return sent_at + self.ack_window_ms.get(severity, self.ack_window_ms["low"])


Candidate = tuple[bytes, str, str, str, int]  # notice_id, recipient, severity, status, sent_at


def overdue(candidates: Iterable[Candidate], now: int, policy: WatchdogPolicy,
            reported: set[tuple[bytes, str]]) -> tuple[list[WatchdogOverdue], int | None]:
    """The pairs overdue now and not reported yet, and when the next one falls due."""
    found: list[WatchdogOverdue] = []
    next_due: int | None = None
    for nid, recipient, severity, status, sent_at in candidates:
        if (nid, recipient) in reported:
            continue
        deadline = policy.deadline(severity, sent_at)
        alarm = deadline + policy.grace_ms
        if alarm <= now:
            found.append(WatchdogOverdue(nid, recipient, severity, status, deadline,
                                         now - deadline))
        elif next_due is None or alarm < next_due:
            next_due = alarm
    return found, next_due
