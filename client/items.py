"""What the client hands back: results of sends and acks, and the items of a desk's stream.

Every item here was verified before it was made; none carries unverified data.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.record import LogInconsistent
from keys.envelope import Notice
from keys.errors import UsageError
from keys.ids import DeskId
from keys.receipts import Attestation
from keys.report import IncidentReport


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of a send. Either the relay accepted the notice (``accepted_at`` and
    its signed ``attestation``), or ``queued``: the notice is sealed and kept in this
    desk's outbox, NOT at the relay (``reason`` says why), and is posted, the same bytes,
    by the next client run or a running event loop."""

    notice_id: bytes
    #: The relay's signed acceptance time (UTC ms); None while queued.
    accepted_at: int | None
    attestation: Attestation | None
    #: The relay had this notice already (a resend of the same bytes).
    duplicate: bool = False
    #: Set when the relay's signed time is off this client's clock beyond the allowed skew.
    clock_skew: ClockSkewWarning | None = None
    #: With several relays: each relay's answer (``attestation`` is the first acceptance).
    relays: tuple[RelayAcceptance, ...] = ()
    #: Not delivered: kept in the outbox for a later try.
    queued: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AckResult:
    """What became of an acknowledgement: recorded by the relay (``acknowledged_at``, its
    signed ``attestation``), or ``queued``: signed and kept in this desk's outbox, NOT yet
    at the relay (``reason``), posted by the next client run or a running event loop."""

    notice_id: bytes
    acknowledged_at: int | None
    attestation: Attestation | None
    duplicate: bool = False
    #: With several relays: each relay's answer.
    relays: tuple[RelayAcceptance, ...] = ()
    queued: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RelayAcceptance:
    """One relay's answer to a fanned-out message: its verified attestation, or why not.
    ``state``: "accepted", "pending" (kept, posted again) or "refused" (for good)."""

    relay: str
    state: str
    attestation: Attestation | None = None
    raw: bytes | None = None
    duplicate: bool = False
    error: str | None = None
    #: The relay's log index of its statement (client/record.py), if it named one.
    leaf: int | None = None

    @property
    def accepted(self) -> bool:
        return self.state == "accepted"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """Something signed that waits in this desk's outbox for the relay: a sealed notice
    (``kind="notice"``, ``peers`` its recipients) or a receipt, ack or rejection of a
    received notice (``peers`` its sender). ``error``: why the last try failed."""

    kind: str
    notice_id: bytes
    created_at: int
    peers: tuple[str, ...]
    severity: str | None = None
    attempts: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class UnopenedNotice:
    """A notice to this desk that verified (sender's signature, the relay's acceptance)
    but could not be opened, e.g. sealed to an encryption key this desk does not hold
    (yet). It is kept, never receipted or marked seen, and tried again whenever the desk's
    keys change and at each fetch. Only its signed header is known."""

    notice_id: bytes
    sender: str
    severity: str
    status: str
    created_at: int
    code: str
    reason: str
    first_at: int
    last_at: int
    attempts: int


@dataclass(frozen=True, slots=True)
class ReceivedNotice:
    """A notice addressed to this desk, verified and decrypted."""

    notice: Notice
    seq: int
    #: The relay's signed acceptance time (UTC ms).
    accepted_at: int
    received_at: int
    #: Yielded before, but not processed before the last stop.
    redelivered: bool = False
    acked_at: int | None = None

    @property
    def notice_id(self) -> bytes:
        return self.notice.notice_id

    @property
    def sender(self) -> DeskId:
        return self.notice.sender

    @property
    def severity(self) -> str:
        return self.notice.severity

    @property
    def status(self) -> str:
        return self.notice.status

    @property
    def report(self) -> IncidentReport:
        return self.notice.report


@dataclass(frozen=True, slots=True)
class ConfirmationEvent:
    """A recipient's verified receipt (``kind="receipt"``) or ack of a notice we sent."""

    kind: str
    notice_id: bytes
    recipient: str
    #: The time the recipient signed.
    at: int
    #: The relay's signed time of recording it.
    attested_at: int
    seq: int
    #: An ack's message, decrypted (only we, the sender, can read it).
    message: str | None = None
    #: The recipient's client acknowledged by itself (a link test), signed as such.
    automatic: bool = False


@dataclass(frozen=True, slots=True)
class EscalationEvent:
    """The relay escalated (``kind="escalation"``) or resolved a notice (verified).

    ``desk`` is the recipient whose deadline passed. The fields after ``seq`` are known
    when the relay sends an escalation statement (None from a bare attestation)."""

    kind: str
    notice_id: bytes
    desk: str
    level: int
    at: int
    seq: int
    sender: str | None = None
    severity: str | None = None
    status: str | None = None
    #: "ack" or "response": which deadline passed.
    track: str | None = None
    deadline: int | None = None
    delivered: bool | None = None
    final: bool | None = None


@dataclass(frozen=True, slots=True)
class NoticeRejected:
    """A stream event that failed verification; recorded, never shown as a notice.

    ``reported`` is the reason code of the signed rejection this desk sent the notice's
    sender (a notice that failed for a reason provably the sender's), once the relay
    attested it; None if none was sent (or it could not be sent now: it is sent again when
    the relay re-pushes the notice with its escalation)."""

    seq: int
    kind: str
    notice_id: bytes
    code: str
    reason: str
    reported: str | None = None
    #: The notice is kept unopened (see :class:`UnopenedNotice`) and tried again.
    kept: bool = False


@dataclass(frozen=True, slots=True)
class NoticeRejectedByRecipient:
    """A recipient of a notice we sent could not open it, and said so, signed (verified):
    e.g. the key wrapped for it does not match the commitment. The notice is unread there;
    its deadlines keep running."""

    notice_id: bytes
    recipient: str
    #: One of ``keys.receipts.REJECTION_REASONS``.
    reason: str
    #: The time the recipient signed.
    at: int
    #: The relay's signed time of recording it.
    attested_at: int
    seq: int

    def describe(self) -> str:
        return f"{self.recipient} could not open your notice: {self.reason}"


@dataclass(frozen=True, slots=True)
class WatchdogOverdue:
    """By this client's own clock, ``recipient`` has not acknowledged a notice we sent
    past its deadline (counted from when this client sent it). Only the recipient's signed
    acknowledgement satisfies the watchdog; ``escalated`` says whether the relay reported
    escalating, which proves the relay acted, never that the recipient answered. Raised
    once per (notice, recipient) per client run."""

    notice_id: bytes
    recipient: str
    severity: str
    status: str
    deadline: int
    overdue_ms: int
    escalated: bool = False


@dataclass(frozen=True, slots=True)
class ClockSkewWarning:
    """The relay signed a time for ``event`` (accepted, delivered, acknowledged, escalated,
    resolved) of a notice that is off this client's clock by more than the allowed skew.
    The client judged deadlines and certificates by its own clock; the relay's time is
    shown here, not used."""

    notice_id: bytes
    event: str
    #: The desk the attested event concerns.
    desk: str
    attested_at: int
    #: This client's clock when it checked (the bound the attested time broke).
    local_at: int

    @property
    def skew_ms(self) -> int:
        """How far the relay's time is ahead (positive) or behind (negative)."""
        return self.attested_at - self.local_at


@dataclass(frozen=True, slots=True)
class StatusMismatch:
    """The relay's status of a notice says ``relay`` for ``field`` (recipients, severity,
    status or sender) where this desk's own copy of the notice says ``ours``."""

    notice_id: bytes
    field: str
    ours: str
    relay: str


Item = (ReceivedNotice | ConfirmationEvent | EscalationEvent | NoticeRejected
        | NoticeRejectedByRecipient | WatchdogOverdue | ClockSkewWarning | LogInconsistent)


class UnknownDesk(UsageError):
    """No such desk is known to the relay or to this desk's contacts."""

    code = "unknown_desk"


class UnknownNotice(UsageError):
    """No notice with this id (or id prefix) is stored on this desk."""

    code = "unknown_notice"


class NoticeUnopened(UnknownNotice):
    """The notice arrived and is kept, but this desk cannot open it (the message says why)."""

    code = "notice_unopened"


__all__ = [
    "AckResult",
    "ClockSkewWarning",
    "ConfirmationEvent",
    "EscalationEvent",
    "Item",
    "NoticeRejected",
    "NoticeRejectedByRecipient",
    "NoticeUnopened",
    "OutboxItem",
    "ReceivedNotice",
    "RelayAcceptance",
    "SendResult",
    "StatusMismatch",
    "UnknownDesk",
    "UnknownNotice",
    "UnopenedNotice",
    "WatchdogOverdue",
]
