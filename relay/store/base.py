"""The storage interface: every domain query the relay makes, written once per backend.

The relay core talks only to :class:`Store`; SQLite (embedded default) implements it now,
PostgreSQL behind the same methods later. Driver errors never leave a backend: a write
that cannot be made durable raises :class:`relay.errors.StorageUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from keys.frames import Event


def event_size(event: Event) -> int:
    """What an event weighs against a page's byte budget: its blobs and 64 bytes."""
    return (len(event.envelope or b"") + len(event.confirmation or b"")
            + len(event.attestation or b"") + len(event.signer_cert or b"") + EVENT_OVERHEAD)


#: Bytes counted for an event besides its blobs (its seq, kind, id and field names).
EVENT_OVERHEAD = 64


def cut_by_bytes(sizes: list[tuple[int, int]], max_bytes: int) -> tuple[int, int]:
    """Of events given as (seq, blob bytes) in order, the last seq and count of the longest
    prefix within ``max_bytes`` (each counted with EVENT_OVERHEAD), but at least one: a
    page always moves on, and an event larger than the budget comes on its own."""
    total, last, count = 0, 0, 0
    for seq, size in sizes:
        size += EVENT_OVERHEAD
        if count and total + size > max_bytes:
            break
        total, last, count = total + size, seq, count + 1
    return last, count


@dataclass(frozen=True, slots=True)
class DeadlineSpec:
    """One ladder to start when a notice is accepted (frozen policy)."""

    recipient: str
    track: str  # "ack" | "response"
    due_at: int
    repeat_ms: int
    max_level: int


@dataclass(frozen=True, slots=True)
class EscalationRow:
    """An escalation or resolution as committed, with whom it must reach."""

    id: int
    kind: str  # "escalated" | "resolved"
    notice_id: bytes
    sender: str
    recipient: str
    track: str
    severity: str
    status: str
    level: int
    missed_levels: int
    deadline: int
    at: int
    delivered: bool
    final: bool
    statement: bytes
    #: Contact desks notified (their streams got an event).
    contacts: tuple[str, ...] = ()
    #: Webhooks queued in the outbox.
    webhooks: tuple[str, ...] = ()
    #: When this level was due (for measuring lateness); 0 where not known.
    scheduled_at: int = 0
    #: The reason code of the recipient's signed rejection (it could not open the notice),
    #: as known when this row was read; None if it has not rejected it.
    rejected: str | None = None


class Stamper(Protocol):
    """Signs relay statements inside a transaction, at the time the transaction runs."""

    def attestation(self, event: str, *, notice_id: bytes, digest: bytes, desk: str, at: int,
                    level: int = 0) -> bytes: ...

    def escalation(self, kind: str, *, notice_id: bytes, digest: bytes, sender: str,
                   recipient: str, severity: str, status: str, track: str, level: int,
                   missed_levels: int, deadline: int, at: int, delivered: bool,
                   final: bool) -> bytes: ...


class Routing(Protocol):
    """Who else hears of an escalation: contact desks and webhooks, by the configuration."""

    def contacts(self, recipient: str, level: int, status: str) -> tuple[str, ...]: ...

    def webhooks(self, level: int, status: str) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class NoticeRecord:
    """A notice to store, with everything needed to answer and push without re-reading."""

    notice_id: bytes
    sender: str
    recipients: tuple[str, ...]
    digest: bytes
    severity: str
    status: str
    in_reply_to: bytes | None
    created_at: int
    accepted_at: int
    envelope: bytes
    attestation: bytes
    sender_cert: bytes
    policy: bytes | None = None
    deadlines: tuple[DeadlineSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Inserted:
    #: ``(recipient desk, event seq)`` of the "notice" events written.
    events: tuple[tuple[str, int], ...]
    #: A reply that met a response deadline: the resolution it caused, if that ladder ran.
    resolved: tuple[EscalationRow, ...] = ()
    #: The response deadlines this reply met: ``(original notice id, responder)``.
    responded: tuple[tuple[bytes, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The same notice (same bytes) was stored before: answer with its attestation."""

    attestation: bytes


@dataclass(frozen=True, slots=True)
class Conflict:
    """The id is taken by other bytes."""


@dataclass(frozen=True, slots=True)
class StoredNotice:
    notice_id: bytes
    sender: str
    recipients: tuple[str, ...]
    digest: bytes
    severity: str
    status: str
    accepted_at: int
    envelope: bytes
    attestation: bytes
    sender_cert: bytes
    policy: bytes | None


@dataclass(frozen=True, slots=True)
class DeliveryState:
    recipient: str
    signer_cert: bytes | None
    delivered_at: int | None
    receipt: bytes | None
    receipt_attestation: bytes | None
    acked_at: int | None
    ack: bytes | None
    ack_attestation: bytes | None
    rejection: bytes | None = None
    rejection_attestation: bytes | None = None


@dataclass(frozen=True, slots=True)
class ConfirmationRecord:
    kind: str  # "receipt" | "ack"
    notice_id: bytes
    digest: bytes
    recipient: str
    sender: str
    confirmation: bytes
    signer_cert: bytes


@dataclass(frozen=True, slots=True)
class RejectionRecord:
    """A recipient's verified rejection of a notice it could not open."""

    notice_id: bytes
    digest: bytes
    recipient: str
    sender: str
    reason: str
    rejection: bytes
    signer_cert: bytes


@dataclass(frozen=True, slots=True)
class Recorded:
    #: seq of the event written to the sender's stream.
    seq: int
    #: The relay time the confirmation was recorded at, and the attestation of it.
    at: int
    attestation: bytes
    accepted_at: int
    #: The resolution of a running escalation ladder this acknowledgement ended.
    resolved: EscalationRow | None = None
    #: Whether the acknowledgement met a deadline that had not passed yet.
    in_time: bool = True


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one pass of the escalator committed, and when the next deadline falls."""

    escalations: list[EscalationRow] = field(default_factory=list)
    next_at: int | None = None


@dataclass(frozen=True, slots=True)
class OverdueRow:
    notice_id: bytes
    sender: str
    recipient: str
    track: str
    severity: str
    status: str
    due_at: int
    level: int
    delivered: bool
    #: The reason code of the recipient's signed rejection, if it rejected the notice.
    rejected: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    webhook: str
    attempts: int
    escalation: EscalationRow


Now = Callable[[], int]


# ---------------------------------------------------------------------- the verifiable log


@dataclass(frozen=True, slots=True)
class LogLeaf:
    """One leaf of the relay's log: its index, what kind of statement it records and the
    statement's exact signed bytes (the log entry is SHA-256 of them)."""

    index: int
    kind: str
    statement: bytes


@dataclass(frozen=True, slots=True)
class LogCheckpoint:
    size: int
    root: bytes
    #: The signed checkpoint note, with the cosignatures gathered so far.
    note: bytes
    signed_at: int
    cosigned: int = 0


class LogStore(Protocol):
    """The log's storage (PROTOCOL.md section 20). A backend appends a leaf for every
    statement it stores (notice attestation, receipt/ack/rejection attestations,
    escalation and resolution statements, revocations) in the same transaction as the
    statement, at index max + 1, so that leaves have no gap and none is doubled."""

    def size(self) -> int:
        """Leaves appended (committed)."""

    def leaves(self, start: int, end: int) -> list[LogLeaf]: ...

    def index_of(self, statement: bytes) -> int | None:
        """The first leaf recording exactly these bytes."""

    def index_by_leaf_hash(self, leaf_hash: bytes) -> int | None:
        """The first hashed leaf with this leaf hash."""

    def last_of_kind(self, kind: str) -> LogLeaf | None: ...

    def hash(self, level: int, index: int) -> bytes:
        """A stored complete-subtree hash; KeyError if not computed yet."""

    def hashes(self, level: int, start: int, end: int) -> list[bytes]: ...

    def hashed_size(self) -> int:
        """Leaves the stored hashes cover."""

    def latest(self) -> LogCheckpoint | None: ...

    async def extend(self, hashes: list[tuple[int, int, bytes]], checkpoint: LogCheckpoint
                     ) -> None:
        """Store new subtree hashes and the checkpoint they lead to, in one commit."""

    async def cosigned(self, size: int, note: bytes, count: int) -> None: ...

    async def append(self, kind: str, statement: bytes) -> int:
        """Append a leaf not tied to another stored row (the relay's key); its index."""


class Store(Protocol):
    #: If set by the relay, called on the event loop with every event the store commits,
    #: as (desk, event) in seq order, before any write that committed it returns. The event
    #: is None where the store does not hand it over (a large notice): that desk's kept
    #: events must be forgotten. The whole list is None when the store could not read them:
    #: everything kept must be forgotten. A store that does not see every commit (several
    #: relay nodes) never calls it.
    on_events: Callable[[list[tuple[str, Event | None]] | None], None] | None
    @property
    def log(self) -> LogStore:
        """The verifiable log's storage (leaves, tree hashes, checkpoints)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def check_writable(self) -> None:
        """Raise StorageUnavailable unless a durable write can be made now."""

    async def put_card(self, desk: str, card: bytes, cert_not_after: int, now: int) -> None: ...

    def get_card(self, desk: str) -> bytes | None: ...

    async def insert_notice(self, rec: NoticeRecord, stamper: Stamper, routing: Routing,
                            now: Now) -> Inserted | Duplicate | Conflict:
        """Store a notice, its delivery rows, deadlines and recipients' events in one
        durable commit. A reply (``in_reply_to``) meets the responder's response deadline."""

    def get_notice(self, notice_id: bytes) -> StoredNotice | None: ...

    def deliveries(self, notice_id: bytes) -> list[DeliveryState]: ...

    async def record_confirmation(self, rec: ConfirmationRecord, stamper: Stamper,
                                  routing: Routing, now: Now) -> Recorded | Duplicate:
        """Record a receipt or ack (first one wins) and the event for the sender. The time
        is read inside the transaction, so an ack and an escalation are strictly ordered:
        the ack met its deadline, or the escalation stands and the ack resolves it."""

    async def record_rejection(self, rec: RejectionRecord, stamper: Stamper,
                               now: Now) -> Recorded | Duplicate | Conflict:
        """Record a recipient's rejection (the first one wins; Duplicate after) and the
        event for the sender. Conflict if the recipient already sent a receipt or an ack
        of this notice (it opened it). Deadlines are not touched: the notice is unread."""

    def events_after(self, desk: str, after: int, limit: int) -> list[Event]:
        """The desk's stream after ``after``, in seq order, at most ``limit`` events."""

    def events_page(self, desk: str, after: int, limit: int, max_bytes: int
                    ) -> tuple[list[Event], bool]:
        """The desk's stream after ``after``, in seq order: at most ``limit`` events and
        :func:`cut_by_bytes` of ``max_bytes`` (always one event when there is one); and
        whether more events follow the last one."""

    def pending_sent(self, desk: str) -> int:
        """How many (notice, recipient) pairs sent by ``desk`` are not yet acknowledged."""

    async def claim_due(self, now: Now, limit: int, stamper: Stamper,
                        routing: Routing) -> Claimed:
        """Escalate every ladder whose next level is due (exactly once per level: one event
        at the current level, counting the levels missed while the relay was down)."""

    def next_deadline(self) -> int | None: ...

    def unlogged_escalations(self, limit: int) -> list[EscalationRow]: ...

    async def mark_logged(self, ids: list[int]) -> None: ...

    def overdue(self, now: int, limit: int) -> list[OverdueRow]: ...

    def escalations_since(self, since: int, limit: int) -> list[EscalationRow]: ...

    def escalations_of(self, notice_id: bytes) -> list[EscalationRow]: ...

    def escalations_after_id(self, after_id: int, limit: int) -> list[EscalationRow]: ...

    def last_escalation_id(self) -> int: ...

    async def add_revocation(self, desk: str, ik_kid: bytes, body: bytes, now: int) -> None:
        """Keep a verified revocation durably (it must outlive restarts)."""

    def revocations(self) -> list[bytes]: ...

    async def use_login_nonce(self, nonce: bytes, expires_at: int, now: int) -> bool:
        """Durably mark an operator web login nonce used; False if it was used already.

        Kept until ``expires_at`` (rows past ``now`` may be deleted meanwhile), so a login
        link works once, across restarts and across relay nodes sharing the database."""

    def outbox_due(self, now: int, limit: int) -> list[OutboxItem]: ...

    def outbox_next(self) -> int | None: ...

    async def outbox_result(self, item_id: int, *, done_at: int | None, attempts: int,
                            next_attempt_at: int, failed_at: int | None,
                            error: str | None) -> None: ...

    def counts(self, now: int) -> dict[str, dict[str, int]]:
        """Gauges for metrics: pending and overdue (notice, recipient) pairs per severity."""
