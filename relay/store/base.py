"""The storage interface: every domain query the relay makes, written once per backend.

The relay core talks only to :class:`Store`; SQLite (embedded default) implements it now,
PostgreSQL behind the same methods later. Driver errors never leave a backend: a write
that cannot be made durable raises :class:`relay.errors.StorageUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from keys.frames import Event


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


@dataclass(frozen=True, slots=True)
class Inserted:
    #: ``(recipient desk, event seq)`` of the "notice" events written.
    events: tuple[tuple[str, int], ...]


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


@dataclass(frozen=True, slots=True)
class ConfirmationRecord:
    kind: str  # "receipt" | "ack"
    notice_id: bytes
    recipient: str
    sender: str
    at: int
    confirmation: bytes
    attestation: bytes
    signer_cert: bytes


@dataclass(frozen=True, slots=True)
class Recorded:
    #: seq of the event written to the sender's stream.
    seq: int


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def check_writable(self) -> None:
        """Raise StorageUnavailable unless a durable write can be made now."""

    async def put_card(self, desk: str, card: bytes, cert_not_after: int, now: int) -> None: ...

    def get_card(self, desk: str) -> bytes | None: ...

    async def insert_notice(self, rec: NoticeRecord) -> Inserted | Duplicate | Conflict:
        """Store a notice, its delivery rows and recipients' events in one durable commit."""

    def get_notice(self, notice_id: bytes) -> StoredNotice | None: ...

    def deliveries(self, notice_id: bytes) -> list[DeliveryState]: ...

    async def record_confirmation(self, rec: ConfirmationRecord) -> Recorded | Duplicate:
        """Record a receipt or ack (first one wins) and the event for the sender."""

    def events_after(self, desk: str, after: int, limit: int) -> list[Event]:
        """The desk's stream after ``after``, in seq order, at most ``limit`` events."""

    def pending_sent(self, desk: str) -> int:
        """How many (notice, recipient) pairs sent by ``desk`` are not yet acknowledged."""
