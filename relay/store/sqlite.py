"""SQLite backend: WAL, synchronous=FULL, one writer thread with group commit.

Writes from concurrent requests are queued to a single writer thread that runs everything
queued so far in one ``BEGIN IMMEDIATE ... COMMIT`` (each operation in its own savepoint,
so one failing operation does not undo the others) and then wakes all waiters with one
call into the event loop. One fsync thus covers a whole batch, and each request pays one
thread hop, not one per statement. Reads run on the event loop's own connection: WAL lets
them proceed alongside the writer, and an indexed read costs less than a thread hop.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from keys.frames import Event
from relay import faults
from relay.errors import StorageUnavailable
from relay.store.base import (
    ConfirmationRecord,
    Conflict,
    DeliveryState,
    Duplicate,
    Inserted,
    NoticeRecord,
    Recorded,
    StoredNotice,
)

T = TypeVar("T")
SCHEMA_VERSION = 1
#: Most operations one commit takes; bounds the latency a large batch adds to its first op.
MAX_BATCH = 512

_Op = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]


def _migrations() -> list[tuple[int, str]]:
    out = []
    for entry in resources.files("relay.store").joinpath("schema").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            out.append((int(name[:3]), entry.read_text()))
    return sorted(out)


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SqliteStore:
    """The embedded default store. ``synchronous`` may be weakened only by the fault
    harness's negative control; the relay always runs with FULL."""

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "EXTRA", "NORMAL", "OFF"):
            raise ValueError("synchronous must be FULL, EXTRA, NORMAL or OFF")
        self.path = path
        self.synchronous = synchronous
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._read: sqlite3.Connection | None = None
        self._write: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        try:
            self._write = _connect(self.path, self.synchronous)
            self._migrate(self._write)
            self._read = _connect(self.path, self.synchronous)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"cannot open the database {self.path}: {exc}") from exc
        self._thread = threading.Thread(target=self._writer, name="sqlite-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        for conn in (self._read, self._write):
            if conn is not None:
                conn.close()
        self._read = self._write = None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        known = _migrations()
        latest = known[-1][0] if known else 0
        if current > latest:
            raise StorageUnavailable(
                f"the database is at schema v{current} but this relay knows v{latest}; "
                "upgrade the relay"
            )
        for version, sql in known:
            if version > current:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in sql.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

    # ------------------------------------------------------------------ the writer
    def _writer(self) -> None:
        conn = self._write
        assert conn is not None and self._loop is not None
        loop = self._loop
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for fn, fut in batch:
                    conn.execute("SAVEPOINT op")
                    try:
                        result = fn(conn)
                    except sqlite3.Error as exc:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                        outcomes.append((fut, None, StorageUnavailable(f"database error: {exc}")))
                    except Exception as exc:  # a domain error raised by the operation
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                        outcomes.append((fut, None, exc))
                    else:
                        conn.execute("RELEASE op")
                        outcomes.append((fut, result, None))
                faults.crash_point("pre_commit")
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                err = StorageUnavailable(f"the database cannot commit: {exc}")
                outcomes = [(fut, None, err) for _, fut in batch]
            loop.call_soon_threadsafe(_resolve, outcomes)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None:
            raise StorageUnavailable("the store is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((fn, fut))
        return await fut

    def _reader(self) -> sqlite3.Connection:
        if self._read is None:
            raise StorageUnavailable("the store is not open")
        return self._read

    # ------------------------------------------------------------------ queries
    async def check_writable(self) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS probe (x)")
            conn.execute("UPDATE schema_version SET version = version")

        await self._run(op)

    async def put_card(self, desk: str, card: bytes, cert_not_after: int, now: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO cards (desk, card, cert_not_after, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (desk) DO UPDATE SET card = excluded.card,"
                " cert_not_after = excluded.cert_not_after, updated_at = excluded.updated_at"
                " WHERE cards.card != excluded.card",
                (desk, card, cert_not_after, now),
            )

        await self._run(op)

    def get_card(self, desk: str) -> bytes | None:
        row = self._reader().execute("SELECT card FROM cards WHERE desk = ?", (desk,)).fetchone()
        return None if row is None else bytes(row[0])

    async def insert_notice(self, rec: NoticeRecord) -> Inserted | Duplicate | Conflict:
        def op(conn: sqlite3.Connection) -> Inserted | Duplicate | Conflict:
            row = conn.execute(
                "SELECT digest, attestation FROM notices WHERE notice_id = ?", (rec.notice_id,)
            ).fetchone()
            if row is not None:
                return Duplicate(bytes(row[1])) if bytes(row[0]) == rec.digest else Conflict()
            conn.execute(
                "INSERT INTO notices (notice_id, sender, digest, severity, status, in_reply_to,"
                " created_at, accepted_at, envelope, attestation, sender_cert, policy)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.notice_id,
                    rec.sender,
                    rec.digest,
                    rec.severity,
                    rec.status,
                    rec.in_reply_to,
                    rec.created_at,
                    rec.accepted_at,
                    rec.envelope,
                    rec.attestation,
                    rec.sender_cert,
                    rec.policy,
                ),
            )
            conn.executemany(
                "INSERT INTO deliveries (notice_id, recipient, sender) VALUES (?, ?, ?)",
                [(rec.notice_id, r, rec.sender) for r in rec.recipients],
            )
            events = []
            for r in rec.recipients:
                cur = conn.execute(
                    "INSERT INTO events (desk, kind, notice_id, created_at) VALUES (?, ?, ?, ?)",
                    (r, "notice", rec.notice_id, rec.accepted_at),
                )
                events.append((r, int(cur.lastrowid or 0)))
            return Inserted(tuple(events))

        return await self._run(op)

    def get_notice(self, notice_id: bytes) -> StoredNotice | None:
        conn = self._reader()
        row = conn.execute(
            "SELECT sender, digest, severity, status, accepted_at, envelope, attestation,"
            " sender_cert, policy FROM notices WHERE notice_id = ?",
            (notice_id,),
        ).fetchone()
        if row is None:
            return None
        recipients = tuple(
            r[0]
            for r in conn.execute(
                "SELECT recipient FROM deliveries WHERE notice_id = ? ORDER BY recipient",
                (notice_id,),
            )
        )
        return StoredNotice(
            notice_id,
            row[0],
            recipients,
            bytes(row[1]),
            row[2],
            row[3],
            row[4],
            bytes(row[5]),
            bytes(row[6]),
            bytes(row[7]),
            None if row[8] is None else bytes(row[8]),
        )

    def deliveries(self, notice_id: bytes) -> list[DeliveryState]:
        rows = (
            self._reader()
            .execute(
                "SELECT recipient, signer_cert, delivered_at, receipt, receipt_attestation,"
                " acked_at, ack, ack_attestation FROM deliveries WHERE notice_id = ?"
                " ORDER BY recipient",
                (notice_id,),
            )
            .fetchall()
        )
        return [
            DeliveryState(r[0], _b(r[1]), r[2], _b(r[3]), _b(r[4]), r[5], _b(r[6]), _b(r[7]))
            for r in rows
        ]

    async def record_confirmation(self, rec: ConfirmationRecord) -> Recorded | Duplicate:
        col = "delivered_at" if rec.kind == "receipt" else "acked_at"
        blob_col = "receipt" if rec.kind == "receipt" else "ack"

        def op(conn: sqlite3.Connection) -> Recorded | Duplicate:
            row = conn.execute(
                f"SELECT {col}, {blob_col}_attestation, delivered_at FROM deliveries"  # noqa: S608 - fixed column names
                " WHERE notice_id = ? AND recipient = ?",
                (rec.notice_id, rec.recipient),
            ).fetchone()
            if row is None:
                raise LookupError("no such delivery")
            if row[0] is not None:
                return Duplicate(bytes(row[1]))
            conn.execute(
                f"UPDATE deliveries SET {col} = ?, {blob_col} = ?, {blob_col}_attestation = ?,"  # noqa: S608 - fixed column names
                " signer_cert = ? WHERE notice_id = ? AND recipient = ?",
                (
                    rec.at,
                    rec.confirmation,
                    rec.attestation,
                    rec.signer_cert,
                    rec.notice_id,
                    rec.recipient,
                ),
            )
            if rec.kind == "ack" and row[2] is None:
                # An acknowledgement proves delivery too.
                conn.execute(
                    "UPDATE deliveries SET delivered_at = ? WHERE notice_id = ? AND recipient = ?",
                    (rec.at, rec.notice_id, rec.recipient),
                )
            cur = conn.execute(
                "INSERT INTO events (desk, kind, notice_id, recipient, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (rec.sender, rec.kind, rec.notice_id, rec.recipient, rec.at),
            )
            return Recorded(int(cur.lastrowid or 0))

        return await self._run(op)

    def events_after(self, desk: str, after: int, limit: int) -> list[Event]:
        rows = (
            self._reader()
            .execute(
                "SELECT e.seq, e.kind, e.notice_id, e.recipient, n.envelope, n.attestation,"
                " n.sender_cert, d.receipt, d.receipt_attestation, d.ack, d.ack_attestation,"
                " d.signer_cert"
                " FROM events e JOIN notices n ON n.notice_id = e.notice_id"
                " LEFT JOIN deliveries d ON d.notice_id = e.notice_id AND d.recipient = e.recipient"
                " WHERE e.desk = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
                (desk, after, limit),
            )
            .fetchall()
        )
        out = []
        for (
            seq,
            kind,
            nid,
            _recipient,
            env,
            att,
            scert,
            rcpt,
            rcpt_att,
            ack,
            ack_att,
            rcert,
        ) in rows:
            if kind == "notice":
                out.append(
                    Event(
                        seq,
                        kind,
                        bytes(nid),
                        envelope=bytes(env),
                        attestation=bytes(att),
                        signer_cert=bytes(scert),
                    )
                )
            elif kind == "receipt":
                out.append(
                    Event(
                        seq,
                        kind,
                        bytes(nid),
                        confirmation=_b(rcpt),
                        attestation=_b(rcpt_att),
                        signer_cert=_b(rcert),
                    )
                )
            elif kind == "ack":
                out.append(
                    Event(
                        seq,
                        kind,
                        bytes(nid),
                        confirmation=_b(ack),
                        attestation=_b(ack_att),
                        signer_cert=_b(rcert),
                    )
                )
        return out

    def pending_sent(self, desk: str) -> int:
        row = (
            self._reader()
            .execute(
                "SELECT count(*) FROM deliveries WHERE sender = ? AND acked_at IS NULL", (desk,)
            )
            .fetchone()
        )
        return int(row[0])

    def integrity_check(self) -> str:
        row = self._reader().execute("PRAGMA integrity_check").fetchone()
        return str(row[0])


def _b(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _resolve(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, exc in outcomes:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
