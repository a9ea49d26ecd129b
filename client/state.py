"""The client's durable state: one SQLite file, ``client.db``, in the desk home.

What it remembers, and why:

* **cursor**: the ``seq`` of the last stream event fully handled. It moves forward in the
  same transaction that records what the event brought, so a crash replays an event
  rather than losing it, and the ``received`` table drops the replay (S10).
* **received**: every notice addressed to this desk that verified, by ``notice_id`` (the
  de-duplication key), with the sealed envelope as it arrived (content is never stored
  decrypted), and the flags ``receipt_sent``, ``yielded``, ``processed``, ``acked``.
* **outbox**: every notice this desk sealed, written durably *before* it is posted, so a
  crash mid-send resends the very same bytes (same id, same digest) on restart.
* **confirmations**: receipts and acknowledgements of sent notices, verified, as signed.
* **relay_events**: escalation and resolution attestations about notices.
* **rejected**: events that failed verification, for the operator to look at.
* **warnings**: relay-signed times that disagreed with this client's clock by more than the
  allowed skew, kept until an event loop shows them.

Times the client judges by are its own: ``outbox.sent_at`` (when the relay's acceptance
arrived, the watchdog's start), ``received.received_at`` and ``confirmations.received_at``
(when the item arrived, the time its signer's certificate is re-checked at). The relay's
signed times are kept beside them, for display only.

WAL and ``synchronous=FULL``: a committed transaction survives a crash of the machine.
All calls run on the caller's thread; SQLite on a local disk answers in microseconds.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keys.errors import UsageError
from keys.keyfile import ensure_private_dir

DB_NAME = "client.db"
SCHEMA_VERSION = 2
#: How long a write waits for another process (a second CLI on the same home) to commit.
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE received (
    notice_id    BLOB PRIMARY KEY,
    seq          INTEGER NOT NULL,
    sender       TEXT NOT NULL,
    severity     TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    accepted_at  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    digest       BLOB NOT NULL,
    envelope     BLOB NOT NULL,
    signer_cert  BLOB NOT NULL,
    attestation  BLOB NOT NULL,
    receipt_sent INTEGER NOT NULL DEFAULT 0,
    yielded      INTEGER NOT NULL DEFAULT 0,
    processed    INTEGER NOT NULL DEFAULT 0,
    acked_at     INTEGER
);
CREATE INDEX received_pending ON received (processed, seq);
CREATE TABLE outbox (
    notice_id   BLOB PRIMARY KEY,
    envelope    BLOB NOT NULL,
    digest      BLOB NOT NULL,
    recipients  TEXT NOT NULL,
    severity    TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('unconfirmed', 'accepted', 'failed')),
    attestation BLOB,
    accepted_at INTEGER,
    error       TEXT
);
CREATE INDEX outbox_state ON outbox (state, created_at);
CREATE TABLE confirmations (
    notice_id    BLOB NOT NULL,
    recipient    TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('receipt', 'ack')),
    seq          INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    attested_at  INTEGER NOT NULL,
    confirmation BLOB NOT NULL,
    attestation  BLOB NOT NULL,
    PRIMARY KEY (notice_id, recipient, kind)
);
CREATE TABLE relay_events (
    seq         INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    notice_id   BLOB NOT NULL,
    desk        TEXT NOT NULL,
    level       INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    attestation BLOB NOT NULL
);
CREATE TABLE rejected (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    notice_id   BLOB NOT NULL,
    code        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at          INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('cursor', '0');
"""

#: Steps from each schema version to the next; a v1 file is migrated in place.
_MIGRATIONS: dict[int, str] = {
    2: """
ALTER TABLE outbox ADD COLUMN sent_at INTEGER;
UPDATE outbox SET sent_at = created_at WHERE state = 'accepted';
ALTER TABLE confirmations ADD COLUMN received_at INTEGER;
CREATE TABLE warnings (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    notice_id   BLOB NOT NULL,
    event       TEXT NOT NULL,
    desk        TEXT NOT NULL,
    attested_at INTEGER NOT NULL,
    local_at    INTEGER NOT NULL,
    shown       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX warnings_pending ON warnings (shown, id);
""",
}


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ReceivedRecord:
    """A verified notice as stored (still sealed) with its delivery flags."""

    notice_id: bytes
    seq: int
    sender: str
    severity: str
    status: str
    created_at: int
    accepted_at: int
    received_at: int
    digest: bytes
    envelope: bytes
    signer_cert: bytes
    attestation: bytes
    receipt_sent: bool = False
    yielded: bool = False
    processed: bool = False
    acked_at: int | None = None

    @property
    def acked(self) -> bool:
        return self.acked_at is not None


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    notice_id: bytes
    envelope: bytes
    digest: bytes
    recipients: tuple[str, ...]
    severity: str
    status: str
    created_at: int
    state: str = "unconfirmed"
    attestation: bytes | None = None
    accepted_at: int | None = None
    error: str | None = None
    #: This client's clock when the relay's acceptance arrived: where deadlines start.
    sent_at: int | None = None


@dataclass(frozen=True, slots=True)
class ConfirmationRecord:
    notice_id: bytes
    recipient: str
    kind: str
    seq: int
    at: int
    attested_at: int
    confirmation: bytes
    attestation: bytes
    #: This client's clock when it arrived (None for rows from before schema v2).
    received_at: int | None = None


@dataclass(frozen=True, slots=True)
class RelayEventRecord:
    seq: int
    kind: str
    notice_id: bytes
    desk: str
    level: int
    at: int
    attestation: bytes


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    seq: int
    kind: str
    notice_id: bytes
    code: str
    reason: str
    at: int


@dataclass(frozen=True, slots=True)
class WarningRecord:
    """A relay-signed time ``attested_at`` of ``event`` that was ``local_at`` by this
    client's clock, beyond the allowed skew (``kind="clock_skew"``)."""

    kind: str
    notice_id: bytes
    event: str
    desk: str
    attested_at: int
    local_at: int


_SELECT_RECEIVED = (
    "SELECT notice_id, seq, sender, severity, status, created_at, accepted_at, received_at, "
    "digest, envelope, signer_cert, attestation, receipt_sent, yielded, processed, acked_at "
    "FROM received"
)
_INSERT_RECEIVED = (
    "INSERT OR IGNORE INTO received (notice_id, seq, sender, severity, status, created_at, "
    "accepted_at, received_at, digest, envelope, signer_cert, attestation, receipt_sent, "
    "yielded, processed, acked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_OUTBOX = (
    "SELECT notice_id, envelope, digest, recipients, severity, status, created_at, state, "
    "attestation, accepted_at, error, sent_at FROM outbox"
)
_INSERT_OUTBOX = (
    "INSERT OR IGNORE INTO outbox (notice_id, envelope, digest, recipients, severity, status, "
    "created_at, state, attestation, accepted_at, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _received(row: Any) -> ReceivedRecord:
    (nid, seq, sender, severity, status, created, accepted, received, digest, envelope,
     cert, att, receipt_sent, yielded, processed, acked_at) = row
    return ReceivedRecord(
        bytes(nid), int(seq), str(sender), str(severity), str(status), int(created),
        int(accepted), int(received), bytes(digest), bytes(envelope), bytes(cert),
        bytes(att), bool(receipt_sent), bool(yielded), bool(processed),
        None if acked_at is None else int(acked_at),
    )


def _outbox(row: Any) -> OutboxRecord:
    (nid, envelope, digest, recipients, severity, status, created, state, att, accepted,
     error, sent) = row
    return OutboxRecord(
        bytes(nid), bytes(envelope), bytes(digest),
        tuple(json.loads(str(recipients))), str(severity), str(status), int(created),
        str(state), None if att is None else bytes(att),
        None if accepted is None else int(accepted),
        None if error is None else str(error),
        None if sent is None else int(sent),
    )


# ----------------------------------------------------------------------------- state


class ClientState:
    """The one door to ``client.db``. Every method is one transaction."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        ensure_private_dir(self.path.parent)
        if not self.path.exists():
            # Create it 0600 ourselves: SQLite would use the umask, and its -wal and -shm
            # files copy the database file's mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"{self.path} is not a usable client database: {exc}") from exc

    @classmethod
    def in_home(cls, home: str | os.PathLike[str]) -> ClientState:
        return cls(Path(home) / DB_NAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ClientState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise UsageError(
                f"{self.path} is at schema v{version} but this client knows v{SCHEMA_VERSION}; "
                "upgrade hotline"
            )
        if version == SCHEMA_VERSION:
            return
        with self._tx():
            # Another process may have migrated it between our check and our lock.
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            steps = [_SCHEMA] if version == 0 else []
            steps += [_MIGRATIONS[v] for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1)]
            for script in steps:
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _advance(self, db: sqlite3.Connection, seq: int | None) -> None:
        if seq is not None:
            db.execute(
                "UPDATE meta SET value = CAST(MAX(CAST(value AS INTEGER), ?) AS TEXT) "
                "WHERE key = 'cursor'",
                (seq,),
            )

    # ------------------------------------------------------------------ cursor
    def sent_content(self, notice_id: bytes) -> str | None:
        """The content digest recorded with :meth:`record_sent_content`, if any."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?",
                               ("content:" + notice_id.hex(),)).fetchone()
        return None if row is None else str(row[0])

    def record_sent_content(self, notice_id: bytes, digest: str) -> None:
        """Remember what a notice id was used for, so that reusing the id for other
        content is refused rather than silently answered with the first notice."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                       ("content:" + notice_id.hex(), digest))

    def cursor(self) -> int:
        """The seq of the last event fully handled; the stream resumes after it."""
        (value,) = self._db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        return int(value)

    def advance(self, seq: int) -> None:
        """Move the cursor to ``seq`` (never backwards) for an event that needs no record."""
        with self._tx() as db:
            self._advance(db, seq)

    # ------------------------------------------------------------------ received
    def add_received(self, record: ReceivedRecord) -> bool:
        """Store a verified notice and move the cursor past its event, atomically.

        Returns False (and stores nothing new) if this notice id was already received:
        a replay or a re-push, which the caller drops.
        """
        with self._tx() as db:
            cur = db.execute(
                _INSERT_RECEIVED,
                (record.notice_id, record.seq, record.sender, record.severity, record.status,
                 record.created_at, record.accepted_at, record.received_at, record.digest,
                 record.envelope, record.signer_cert, record.attestation,
                 int(record.receipt_sent), int(record.yielded), int(record.processed),
                 record.acked_at),
            )
            self._advance(db, record.seq)
            return cur.rowcount == 1

    def received(self, notice_id: bytes) -> ReceivedRecord | None:
        row = self._db.execute(
            _SELECT_RECEIVED + " WHERE notice_id = ?", (notice_id,)
        ).fetchone()
        return _received(row) if row else None

    def received_list(self, *, include_acked: bool = True) -> list[ReceivedRecord]:
        where = "" if include_acked else " WHERE acked_at IS NULL"
        rows = self._db.execute(_SELECT_RECEIVED + where + " ORDER BY seq")
        return [_received(r) for r in rows]

    def pending(self) -> list[ReceivedRecord]:
        """Received notices not yet processed, in stream order."""
        rows = self._db.execute(
            _SELECT_RECEIVED + " WHERE processed = 0 ORDER BY seq"
        )
        return [_received(r) for r in rows]

    def unreceipted(self) -> list[ReceivedRecord]:
        """Received notices whose delivery receipt the relay has not confirmed yet."""
        rows = self._db.execute(
            _SELECT_RECEIVED + " WHERE receipt_sent = 0 ORDER BY seq"
        )
        return [_received(r) for r in rows]

    def _update(self, sql: str, args: tuple[object, ...]) -> None:
        with self._tx() as db:
            db.execute(sql, args)

    def mark_receipt_sent(self, notice_id: bytes) -> None:
        self._update("UPDATE received SET receipt_sent = 1 WHERE notice_id = ?", (notice_id,))

    def mark_yielded(self, notice_id: bytes) -> None:
        self._update("UPDATE received SET yielded = 1 WHERE notice_id = ?", (notice_id,))

    def mark_processed(self, notice_id: bytes) -> None:
        self._update(
            "UPDATE received SET processed = 1, yielded = 1 WHERE notice_id = ?", (notice_id,)
        )

    def mark_acked(self, notice_id: bytes, at: int) -> None:
        self._update(
            "UPDATE received SET acked_at = COALESCE(acked_at, ?), processed = 1, yielded = 1 "
            "WHERE notice_id = ?",
            (at, notice_id),
        )

    def find(self, prefix: str) -> list[bytes]:
        """Ids of received or sent notices whose hex starts with ``prefix``."""
        prefix = prefix.lower()
        out: list[bytes] = []
        for sql in ("SELECT notice_id FROM received", "SELECT notice_id FROM outbox"):
            for (nid,) in self._db.execute(sql):
                if bytes(nid).hex().startswith(prefix) and bytes(nid) not in out:
                    out.append(bytes(nid))
        return out

    # ------------------------------------------------------------------ outbox
    def add_outbox(self, record: OutboxRecord) -> OutboxRecord:
        """Durably record a sealed notice before it is posted. If this id is already in the
        outbox, keep the stored one (its bytes are what the relay may have) and return it."""
        with self._tx() as db:
            db.execute(
                _INSERT_OUTBOX,
                (record.notice_id, record.envelope, record.digest,
                 json.dumps(list(record.recipients)), record.severity, record.status,
                 record.created_at, record.state, record.attestation, record.accepted_at,
                 record.error),
            )
        stored = self.outbox(record.notice_id)
        assert stored is not None
        return stored

    def outbox(self, notice_id: bytes) -> OutboxRecord | None:
        row = self._db.execute(
            _SELECT_OUTBOX + " WHERE notice_id = ?", (notice_id,)
        ).fetchone()
        return _outbox(row) if row else None

    def outbox_list(self, state: str | None = None) -> list[OutboxRecord]:
        if state is None:
            rows = self._db.execute(_SELECT_OUTBOX + " ORDER BY created_at")
        else:
            rows = self._db.execute(
                _SELECT_OUTBOX + " WHERE state = ? ORDER BY created_at",
                (state,),
            )
        return [_outbox(r) for r in rows]

    def watch_candidates(self, since: int) -> list[tuple[bytes, str, str, str, int]]:
        """``(notice_id, recipient, severity, status, sent_at)`` for every recipient of a
        notice this desk sent (by this client's clock, since ``since``) that has not
        acknowledged it: what the watchdog keeps an eye on. Only a stored (verified,
        recipient-signed) ack takes a recipient off the list; whatever the relay says about
        escalating or resolving does not."""
        out: list[tuple[bytes, str, str, str, int]] = []
        rows = self._db.execute(
            "SELECT notice_id, recipients, severity, status, COALESCE(sent_at, created_at)"
            " FROM outbox WHERE state = 'accepted' AND COALESCE(sent_at, created_at) >= ?",
            (since,)).fetchall()
        for nid, recipients, severity, status, sent_at in rows:
            done = {r for (r,) in self._db.execute(
                "SELECT recipient FROM confirmations WHERE notice_id = ? AND kind = 'ack'",
                (nid,))}
            out.extend((bytes(nid), str(r), str(severity), str(status), int(sent_at))
                       for r in json.loads(str(recipients)) if r not in done)
        return out

    def escalated(self, notice_id: bytes) -> set[str]:
        """Recipients of ``notice_id`` whose escalation the relay reported (a signed claim
        that the relay escalated, not that the recipient answered)."""
        return {str(d) for (d,) in self._db.execute(
            "SELECT desk FROM relay_events WHERE notice_id = ? AND kind = 'escalation'",
            (notice_id,))}

    def unconfirmed(self) -> list[OutboxRecord]:
        """Sent notices the relay has not (yet, to our knowledge) accepted."""
        return self.outbox_list("unconfirmed")

    def mark_accepted(self, notice_id: bytes, attestation: bytes, accepted_at: int,
                      sent_at: int | None = None) -> None:
        """The relay accepted the notice (signed ``accepted_at``); ``sent_at`` is this
        client's clock then (default: the time it sealed the notice)."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = 'accepted', attestation = ?, accepted_at = ?, "
                "sent_at = COALESCE(sent_at, ?, created_at), error = NULL WHERE notice_id = ?",
                (attestation, accepted_at, sent_at, notice_id),
            )

    def mark_failed(self, notice_id: bytes, error: str) -> None:
        """The relay refused this notice for good: stop resending it."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = 'failed', error = ? WHERE notice_id = ? "
                "AND state = 'unconfirmed'",
                (error[:500], notice_id),
            )

    # ------------------------------------------------------------------ sent-notice events
    def add_confirmation(self, record: ConfirmationRecord) -> bool:
        """Store a verified receipt or ack and advance the cursor; False if already known."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO confirmations (notice_id, recipient, kind, seq, at, "
                "attested_at, confirmation, attestation, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.notice_id, record.recipient, record.kind, record.seq, record.at,
                 record.attested_at, record.confirmation, record.attestation,
                 record.received_at),
            )
            self._advance(db, record.seq)
            return cur.rowcount == 1

    def confirmations(self, notice_id: bytes) -> list[ConfirmationRecord]:
        rows = self._db.execute(
            "SELECT notice_id, recipient, kind, seq, at, attested_at, confirmation, attestation, "
            "received_at FROM confirmations WHERE notice_id = ? ORDER BY recipient, kind",
            (notice_id,),
        )
        return [ConfirmationRecord(bytes(r[0]), r[1], r[2], r[3], r[4], r[5], bytes(r[6]),
                                   bytes(r[7]), r[8]) for r in rows]

    def add_relay_event(self, record: RelayEventRecord) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO relay_events (seq, kind, notice_id, desk, level, at, "
                "attestation) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.seq, record.kind, record.notice_id, record.desk, record.level,
                 record.at, record.attestation),
            )
            self._advance(db, record.seq)
            return cur.rowcount == 1

    def relay_events(self, notice_id: bytes) -> list[RelayEventRecord]:
        rows = self._db.execute(
            "SELECT seq, kind, notice_id, desk, level, at, attestation FROM relay_events "
            "WHERE notice_id = ? ORDER BY seq",
            (notice_id,),
        )
        return [RelayEventRecord(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], bytes(r[6]))
                for r in rows]

    def add_rejected(self, record: RejectedRecord) -> None:
        """Record an event that failed verification and move the cursor past it."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO rejected (seq, kind, notice_id, code, reason, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (record.seq, record.kind, record.notice_id, record.code, record.reason[:1000],
                 record.at),
            )
            self._advance(db, record.seq)

    def rejected(self) -> list[RejectedRecord]:
        rows = self._db.execute(
            "SELECT seq, kind, notice_id, code, reason, at FROM rejected ORDER BY id"
        )
        return [RejectedRecord(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]

    # ------------------------------------------------------------------ warnings
    def add_warning(self, record: WarningRecord) -> None:
        """Keep a warning until an event loop shows it."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO warnings (kind, notice_id, event, desk, attested_at, local_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (record.kind, record.notice_id, record.event, record.desk, record.attested_at,
                 record.local_at),
            )

    def take_warnings(self) -> list[WarningRecord]:
        """The warnings not shown yet, oldest first, now marked shown."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, kind, notice_id, event, desk, attested_at, local_at FROM warnings "
                "WHERE shown = 0 ORDER BY id").fetchall()
            if rows:
                db.execute("UPDATE warnings SET shown = 1 WHERE shown = 0 AND id <= ?",
                           (rows[-1][0],))
        return [WarningRecord(str(r[1]), bytes(r[2]), str(r[3]), str(r[4]), int(r[5]),
                              int(r[6])) for r in rows]

    def warnings(self) -> list[WarningRecord]:
        """Every warning recorded, shown or not, oldest first."""
        rows = self._db.execute(
            "SELECT kind, notice_id, event, desk, attested_at, local_at FROM warnings "
            "ORDER BY id")
        return [WarningRecord(str(r[0]), bytes(r[1]), str(r[2]), str(r[3]), int(r[4]),
                              int(r[5])) for r in rows]


__all__ = [
    "DB_NAME",
    "ClientState",
    "ConfirmationRecord",
    "OutboxRecord",
    "ReceivedRecord",
    "RejectedRecord",
    "RelayEventRecord",
    "WarningRecord",
]
