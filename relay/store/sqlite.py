"""SQLite backend: WAL, synchronous=FULL, one writer thread with group commit.

Every connection reads its durability settings back and refuses to run without them
(``check_durability``).

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
from keys.receipts import EscalationStatement
from relay import faults
from relay.errors import StorageUnavailable
from relay.policy import levels_due, next_escalation
from relay.store.base import (
    Claimed,
    ConfirmationRecord,
    Conflict,
    DeliveryState,
    Duplicate,
    EscalationRow,
    Inserted,
    NoticeRecord,
    Now,
    OutboxItem,
    OverdueRow,
    Recorded,
    RejectionRecord,
    Routing,
    Stamper,
    StoredNotice,
    cut_by_bytes,
)
from relay.store.tlog_sqlite import SqliteLog

T = TypeVar("T")
SCHEMA_VERSION = 2
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


def _statements(sql: str) -> list[str]:
    """A schema file's statements, split where SQLite says a statement is complete (a
    trigger's body holds semicolons of its own)."""
    out: list[str] = []
    pending = ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                out.append(pending)
            pending = ""
    if pending.strip(" \t\n;"):
        out.append(pending)
    return out


#: ``PRAGMA synchronous`` levels as SQLite reads them back.
SYNCHRONOUS_LEVELS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}
_LEVEL_NAMES = {v: k for k, v in SYNCHRONOUS_LEVELS.items()}
#: Compile options that make SQLite's syncs no-ops: WAL with synchronous=FULL then
#: durably writes nothing.
_NO_SYNC_OPTIONS = ("NO_SYNC",)


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        check_durability(conn, path, synchronous)
    except BaseException:
        conn.close()
        raise
    return conn


def check_durability(conn: sqlite3.Connection, path: str, synchronous: str = "FULL") -> None:
    """Read the connection's durability settings back; raise ``StorageUnavailable`` naming
    the setting and its value unless a commit that returned is on disk: WAL journal, and
    ``synchronous`` FULL (2) or EXTRA (3), which sync the WAL at every commit (NORMAL syncs
    it only at checkpoints: a power cut loses the commits since), and syncs that are not
    compiled out. ``synchronous`` below FULL is accepted only where it was asked for, by the
    fault harness's negative control (relay.config keeps it out of relay.toml)."""
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode != "wal":
        raise StorageUnavailable(
            f"the database {path} runs with PRAGMA journal_mode={mode}; durability needs "
            "journal_mode=wal: refusing to run")
    level = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    wanted = SYNCHRONOUS_LEVELS[synchronous]
    if level != wanted:
        name = _LEVEL_NAMES.get(level, "unknown")
        needs = (f"durability needs synchronous={wanted} ({synchronous}); only FULL (2) and "
                 "EXTRA (3) sync the WAL at every commit" if wanted >= 2 else
                 f"the fault harness's negative control asked for {wanted} ({synchronous})")
        raise StorageUnavailable(
            f"the database {path} runs with PRAGMA synchronous={level} ({name}); {needs}: "
            "refusing to run")
    options = {str(r[0]).split("=")[0] for r in conn.execute("PRAGMA compile_options")}
    for option in _NO_SYNC_OPTIONS:
        if option in options:
            raise StorageUnavailable(
                f"the SQLite library is compiled with SQLITE_{option}: it never syncs, so "
                f"the database {path} is not durable: refusing to run")


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
        #: See Store.on_events. The writer reads what each batch committed on its own
        #: connection (its pages are in that connection's cache: no file reads).
        self.on_events: Callable[[list[tuple[str, Event | None]] | None], None] | None = None
        self._last_seq = 0
        # The verifiable log's storage: its leaves are appended by the schema's triggers.
        self.log = SqliteLog(self)

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        try:
            self._write = _connect(self.path, self.synchronous)
            self._migrate(self._write)
            self._last_seq = int(self._write.execute(
                "SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
            self._read = _connect(self.path, self.synchronous)
        except (sqlite3.Error, StorageUnavailable) as exc:
            if self._write is not None:
                self._write.close()
                self._write = None
            if isinstance(exc, StorageUnavailable):
                raise
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
        """Apply every schema file not applied yet, in number order. Each file is applied
        by number, not by "above the highest": numbers may arrive out of order (v4 applied,
        then a relay with v3 as well applies v3), so each file must not depend on a
        higher-numbered one."""
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_version")}
        known = _migrations()
        unknown = sorted(applied - {version for version, _ in known})
        if unknown:
            raise StorageUnavailable(
                f"the database has schema v{unknown[-1]} applied, which this relay does not "
                f"know (it knows v{', v'.join(str(v) for v, _ in known)}); upgrade the relay"
            )
        for version, sql in known:
            if version not in applied:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _statements(sql):
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
            on_events = self.on_events
            committed = self._committed_events(conn) if on_events is not None else []
            loop.call_soon_threadsafe(_resolve, outcomes, on_events, committed)

    def _committed_events(self, conn: sqlite3.Connection
                          ) -> list[tuple[str, Event | None]] | None:
        """(desk, event) of every event committed since the last call, in seq order (the
        event None where it carries a notice over HANDED_OVER_NOTICE_BYTES); None if they
        cannot be read (whoever keeps recent events must then forget them)."""
        try:
            rows = conn.execute(_COMMITTED_SELECT + " WHERE e.seq > ? ORDER BY e.seq",
                                (self._last_seq,)).fetchall()
        except sqlite3.Error:
            return None
        if rows:
            self._last_seq = rows[-1][0]
        out: list[tuple[str, Event | None]] = []
        for row in rows:
            desk = str(row[13])
            needs_notice = row[1] == "notice" or (row[1] == "escalation" and desk == row[12])
            out.append((desk, None if needs_notice and row[3] is None else _event(row, desk)))
        return out

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
            conn.execute("UPDATE readiness SET n = n + 1 WHERE id = 1")

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

    async def insert_notice(self, rec: NoticeRecord, stamper: Stamper, routing: Routing,
                            now: Now) -> Inserted | Duplicate | Conflict:
        def op(conn: sqlite3.Connection) -> Inserted | Duplicate | Conflict:
            row = conn.execute("SELECT digest, attestation FROM notices WHERE notice_id = ?",
                               (rec.notice_id,)).fetchone()
            if row is not None:
                return Duplicate(bytes(row[1])) if bytes(row[0]) == rec.digest else Conflict()
            conn.execute(
                "INSERT INTO notices (notice_id, sender, digest, severity, status, in_reply_to,"
                " created_at, accepted_at, envelope, attestation, sender_cert, policy)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.notice_id, rec.sender, rec.digest, rec.severity, rec.status,
                 rec.in_reply_to, rec.created_at, rec.accepted_at, rec.envelope,
                 rec.attestation, rec.sender_cert, rec.policy))
            conn.executemany(
                "INSERT INTO deliveries (notice_id, recipient, sender) VALUES (?, ?, ?)",
                [(rec.notice_id, r, rec.sender) for r in rec.recipients])
            conn.executemany(
                "INSERT INTO deadlines (notice_id, recipient, track, sender, severity, status,"
                " due_at, repeat_ms, max_level, level, next_at) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                [(rec.notice_id, d.recipient, d.track, rec.sender, rec.severity, rec.status,
                  d.due_at, d.repeat_ms, d.max_level, d.due_at) for d in rec.deadlines])
            events = []
            for r in rec.recipients:
                cur = conn.execute(
                    "INSERT INTO events (desk, kind, notice_id, created_at) VALUES (?, ?, ?, ?)",
                    (r, "notice", rec.notice_id, rec.accepted_at))
                events.append((r, int(cur.lastrowid or 0)))
            resolved: list[EscalationRow] = []
            responded: list[tuple[bytes, str]] = []
            if rec.in_reply_to is not None:
                d = _deadline(conn, rec.in_reply_to, rec.sender, "response")
                if d is not None and d["met_at"] is None and d["sender"] in rec.recipients:
                    at = rec.accepted_at
                    if d["next_at"] is not None and d["next_at"] <= at:
                        _escalate(conn, d, at, stamper, routing)
                        d = _deadline(conn, rec.in_reply_to, rec.sender, "response")
                        assert d is not None
                    conn.execute("UPDATE deadlines SET met_at = ?, next_at = NULL WHERE"
                                 " notice_id = ? AND recipient = ? AND track = 'response'",
                                 (at, rec.in_reply_to, rec.sender))
                    responded.append((rec.in_reply_to, rec.sender))
                    if d["level"] > 0:
                        resolved.append(_resolve_ladder(conn, d, at, stamper, routing))
            return Inserted(tuple(events), tuple(resolved), tuple(responded))

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
                " acked_at, ack, ack_attestation, rejection, rejection_attestation"
                " FROM deliveries WHERE notice_id = ?"
                " ORDER BY recipient",
                (notice_id,),
            )
            .fetchall()
        )
        return [
            DeliveryState(r[0], _b(r[1]), r[2], _b(r[3]), _b(r[4]), r[5], _b(r[6]), _b(r[7]),
                          _b(r[8]), _b(r[9]))
            for r in rows
        ]

    async def record_confirmation(self, rec: ConfirmationRecord, stamper: Stamper,
                                  routing: Routing, now: Now) -> Recorded | Duplicate:
        blob_col = "receipt" if rec.kind == "receipt" else "ack"
        event = "delivered" if rec.kind == "receipt" else "acknowledged"

        def op(conn: sqlite3.Connection) -> Recorded | Duplicate:
            row = conn.execute(
                f"SELECT {blob_col}, {blob_col}_attestation FROM deliveries"  # noqa: S608 - fixed column names
                " WHERE notice_id = ? AND recipient = ?",
                (rec.notice_id, rec.recipient)).fetchone()
            if row is None:
                raise LookupError("no such delivery")
            if row[0] is not None:
                return Duplicate(bytes(row[1]))
            at = now()
            attestation = stamper.attestation(event, notice_id=rec.notice_id,
                                              digest=rec.digest, desk=rec.recipient, at=at)
            # The first proof of delivery sets delivered_at: a receipt, or an ack before it.
            conn.execute(
                f"UPDATE deliveries SET {blob_col} = ?, {blob_col}_attestation = ?,"  # noqa: S608 - fixed column names
                " signer_cert = ?, delivered_at = coalesce(delivered_at, ?)"
                " WHERE notice_id = ? AND recipient = ?",
                (rec.confirmation, attestation, rec.signer_cert, at, rec.notice_id,
                 rec.recipient))
            if rec.kind == "ack":
                conn.execute("UPDATE deliveries SET acked_at = ? WHERE notice_id = ?"
                             " AND recipient = ?", (at, rec.notice_id, rec.recipient))
            resolved = None
            in_time = True
            d = _deadline(conn, rec.notice_id, rec.recipient, "ack") if rec.kind == "ack" \
                else None
            if d is not None and d["met_at"] is None:
                in_time = at < d["due_at"]
                if d["next_at"] is not None and d["next_at"] <= at:
                    # The deadline passed before this ack: the escalation stands.
                    _escalate(conn, d, at, stamper, routing)
                    d = _deadline(conn, rec.notice_id, rec.recipient, "ack")
                    assert d is not None
                conn.execute("UPDATE deadlines SET met_at = ?, next_at = NULL WHERE"
                             " notice_id = ? AND recipient = ? AND track = 'ack'",
                             (at, rec.notice_id, rec.recipient))
            cur = conn.execute(
                "INSERT INTO events (desk, kind, notice_id, recipient, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (rec.sender, rec.kind, rec.notice_id, rec.recipient, at))
            seq = int(cur.lastrowid or 0)
            if d is not None and d["met_at"] is None and d["level"] > 0:
                # After the ack event, so the sender reads "ack" then "resolved".
                resolved = _resolve_ladder(conn, d, at, stamper, routing)
            accepted_at = conn.execute("SELECT accepted_at FROM notices WHERE notice_id = ?",
                                       (rec.notice_id,)).fetchone()[0]
            return Recorded(seq, at, attestation, accepted_at, resolved, in_time)

        return await self._run(op)

    async def record_rejection(self, rec: RejectionRecord, stamper: Stamper,
                               now: Now) -> Recorded | Duplicate | Conflict:
        def op(conn: sqlite3.Connection) -> Recorded | Duplicate | Conflict:
            row = conn.execute(
                "SELECT rejection, rejection_attestation, receipt, ack FROM deliveries"
                " WHERE notice_id = ? AND recipient = ?",
                (rec.notice_id, rec.recipient)).fetchone()
            if row is None:
                raise LookupError("no such delivery")
            if row[0] is not None:
                return Duplicate(bytes(row[1]))
            if row[2] is not None or row[3] is not None:
                return Conflict()
            at = now()
            attestation = stamper.attestation("rejected", notice_id=rec.notice_id,
                                              digest=rec.digest, desk=rec.recipient, at=at)
            conn.execute(
                "UPDATE deliveries SET rejection = ?, rejection_attestation = ?,"
                " rejection_reason = ?, rejected_at = ?, signer_cert = ?"
                " WHERE notice_id = ? AND recipient = ?",
                (rec.rejection, attestation, rec.reason, at, rec.signer_cert, rec.notice_id,
                 rec.recipient))
            cur = conn.execute(
                "INSERT INTO events (desk, kind, notice_id, recipient, created_at)"
                " VALUES (?, 'rejected', ?, ?, ?)",
                (rec.sender, rec.notice_id, rec.recipient, at))
            accepted_at = conn.execute("SELECT accepted_at FROM notices WHERE notice_id = ?",
                                       (rec.notice_id,)).fetchone()[0]
            return Recorded(int(cur.lastrowid or 0), at, attestation, accepted_at)

        return await self._run(op)

    async def claim_due(self, now: Now, limit: int, stamper: Stamper,
                        routing: Routing) -> Claimed:
        def op(conn: sqlite3.Connection) -> Claimed:
            at = now()
            rows = conn.execute(
                f"SELECT {_DEADLINE_COLS} FROM deadlines WHERE next_at IS NOT NULL"  # noqa: S608 - fixed column list
                " AND next_at <= ? ORDER BY next_at LIMIT ?", (at, limit)).fetchall()
            out = []
            for r in rows:
                esc = _escalate(conn, _deadline_dict(r), at, stamper, routing)
                if esc is not None:
                    out.append(esc)
            return Claimed(out, _next_deadline(conn))

        return await self._run(op)

    def next_deadline(self) -> int | None:
        return _next_deadline(self._reader())

    def unlogged_escalations(self, limit: int) -> list[EscalationRow]:
        rows = self._reader().execute(
            "SELECT x.id, x.statement, x.contacts, x.webhooks, " + _REJECTED +  # noqa: S608 - fixed subquery
            " FROM escalations x WHERE x.logged = 0 ORDER BY x.id LIMIT ?",
            (limit,)).fetchall()
        return [_from_statement(r[0], bytes(r[1]), r[2], r[3], r[4]) for r in rows]

    async def mark_logged(self, ids: list[int]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE escalations SET logged = 1 WHERE id = ?",
                             [(i,) for i in ids])

        await self._run(op)

    def overdue(self, now: int, limit: int) -> list[OverdueRow]:
        rows = self._reader().execute(
            "SELECT d.notice_id, d.sender, d.recipient, d.track, d.severity, d.status, d.due_at,"
            " d.level, v.delivered_at IS NOT NULL, v.rejection_reason"
            " FROM deadlines d JOIN deliveries v"
            " ON v.notice_id = d.notice_id AND v.recipient = d.recipient"
            " WHERE d.met_at IS NULL AND d.due_at <= ? ORDER BY d.due_at LIMIT ?",
            (now, limit)).fetchall()
        return [OverdueRow(bytes(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]),
                           r[9])
                for r in rows]

    def escalations_since(self, since: int, limit: int) -> list[EscalationRow]:
        rows = self._reader().execute(
            "SELECT x.id, x.statement, x.contacts, x.webhooks, " + _REJECTED +  # noqa: S608 - fixed subquery
            " FROM escalations x WHERE x.at >= ? ORDER BY x.id LIMIT ?",
            (since, limit)).fetchall()
        return [_from_statement(r[0], bytes(r[1]), r[2], r[3], r[4]) for r in rows]

    def escalations_after_id(self, after_id: int, limit: int) -> list[EscalationRow]:
        rows = self._reader().execute(
            "SELECT x.id, x.statement, x.contacts, x.webhooks, " + _REJECTED +  # noqa: S608 - fixed subquery
            " FROM escalations x WHERE x.id > ? ORDER BY x.id LIMIT ?",
            (after_id, limit)).fetchall()
        return [_from_statement(r[0], bytes(r[1]), r[2], r[3], r[4]) for r in rows]

    async def add_revocation(self, desk: str, ik_kid: bytes, body: bytes, now: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO revocations (desk, ik_kid, body, added_at)"
                         " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         (desk, ik_kid, body, now))

        await self._run(op)

    async def use_login_nonce(self, nonce: bytes, expires_at: int, now: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM login_nonces WHERE expires_at < ?", (now,))
            cur = conn.execute("INSERT INTO login_nonces (nonce, expires_at) VALUES (?, ?)"
                               " ON CONFLICT DO NOTHING", (nonce, expires_at))
            return cur.rowcount == 1

        return await self._run(op)

    def revocations(self) -> list[bytes]:
        return [bytes(r[0]) for r in self._reader().execute(
            "SELECT body FROM revocations ORDER BY added_at")]

    def last_escalation_id(self) -> int:
        row = self._reader().execute("SELECT max(id) FROM escalations").fetchone()
        return int(row[0] or 0)

    def escalations_of(self, notice_id: bytes) -> list[EscalationRow]:
        rows = self._reader().execute(
            "SELECT x.id, x.statement, x.contacts, x.webhooks, " + _REJECTED +  # noqa: S608 - fixed subquery
            " FROM escalations x WHERE x.notice_id = ? ORDER BY x.id",
            (notice_id,)).fetchall()
        return [_from_statement(r[0], bytes(r[1]), r[2], r[3], r[4]) for r in rows]

    def outbox_due(self, now: int, limit: int) -> list[OutboxItem]:
        rows = self._reader().execute(
            "SELECT o.id, o.webhook, o.attempts, x.id, x.statement, x.contacts, x.webhooks, "  # noqa: S608 - fixed subquery
            + _REJECTED + " FROM outbox o"
            " JOIN escalations x ON x.id = o.escalation_id WHERE o.done_at IS NULL"
            " AND o.failed_at IS NULL AND o.next_attempt_at <= ? ORDER BY o.next_attempt_at"
            " LIMIT ?", (now, limit)).fetchall()
        return [OutboxItem(r[0], r[1], r[2],
                           _from_statement(r[3], bytes(r[4]), r[5], r[6], r[7]))
                for r in rows]

    def outbox_next(self) -> int | None:
        row = self._reader().execute(
            "SELECT min(next_attempt_at) FROM outbox WHERE done_at IS NULL"
            " AND failed_at IS NULL").fetchone()
        return None if row[0] is None else int(row[0])

    async def outbox_result(self, item_id: int, *, done_at: int | None, attempts: int,
                            next_attempt_at: int, failed_at: int | None,
                            error: str | None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE outbox SET done_at = ?, attempts = ?, next_attempt_at = ?,"
                         " failed_at = ?, last_error = ? WHERE id = ?",
                         (done_at, attempts, next_attempt_at, failed_at,
                          None if error is None else error[:300], item_id))

        await self._run(op)

    def counts(self, now: int) -> dict[str, dict[str, int]]:
        rows = self._reader().execute(
            "SELECT severity, count(*), sum(due_at <= ?) FROM deadlines"
            " WHERE track = 'ack' AND met_at IS NULL GROUP BY severity", (now,)).fetchall()
        return {"pending": {r[0]: int(r[1]) for r in rows},
                "overdue": {r[0]: int(r[2] or 0) for r in rows}}

    def events_after(self, desk: str, after: int, limit: int) -> list[Event]:
        rows = self._reader().execute(
            _EVENT_SELECT + " WHERE e.desk = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
            (desk, after, limit)).fetchall()
        return [_event(row, desk) for row in rows]

    def events_page(self, desk: str, after: int, limit: int, max_bytes: int
                    ) -> tuple[list[Event], bool]:
        # Sizes first (SQLite reads a blob's length from its record header, not the blob),
        # then only the events that fit: a page never loads what it will not send.
        conn = self._reader()
        sizes = conn.execute(_EVENT_SIZES + " WHERE e.desk = ? AND e.seq > ? ORDER BY e.seq"
                             " LIMIT ?", (desk, after, limit + 1)).fetchall()
        last, count = cut_by_bytes([(seq, size) for seq, size in sizes[:limit]], max_bytes)
        if not count:
            return [], False
        rows = conn.execute(
            _EVENT_SELECT + " WHERE e.desk = ? AND e.seq > ? AND e.seq <= ? ORDER BY e.seq",
            (desk, after, last)).fetchall()
        return [_event(row, desk) for row in rows], count < len(sizes)

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


_DEADLINE_COLS = ("notice_id, recipient, track, sender, severity, status, due_at, repeat_ms,"
                  " max_level, level, next_at, met_at")


def _deadline_dict(row: Any) -> dict[str, Any]:
    keys = [k.strip() for k in _DEADLINE_COLS.split(",")]
    d = dict(zip(keys, row, strict=True))
    d["notice_id"] = bytes(d["notice_id"])
    return d


def _deadline(conn: sqlite3.Connection, notice_id: bytes, recipient: str,
              track: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_DEADLINE_COLS} FROM deadlines WHERE notice_id = ?"  # noqa: S608 - fixed column list
                       " AND recipient = ? AND track = ?",
                       (notice_id, recipient, track)).fetchone()
    return None if row is None else _deadline_dict(row)


def _next_deadline(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT min(next_at) FROM deadlines WHERE next_at IS NOT NULL").fetchone()
    return None if row[0] is None else int(row[0])


def _fan_out(conn: sqlite3.Connection, d: dict[str, Any], esc_id: int, kind: str, at: int,
             level: int, routing: Routing) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Events for the sender, the recipient and contacts; webhook calls into the outbox."""
    contacts = tuple(c for c in routing.contacts(d["recipient"], level, d["status"])
                     if c not in (d["sender"], d["recipient"]))
    event_kind = "escalation" if kind == "escalated" else "resolved"
    conn.executemany(
        "INSERT INTO events (desk, kind, notice_id, recipient, created_at, escalation_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(desk, event_kind, d["notice_id"], d["recipient"], at, esc_id)
         for desk in (d["sender"], d["recipient"], *contacts)])
    hooks = routing.webhooks(level, d["status"])
    conn.executemany("INSERT INTO outbox (escalation_id, webhook, next_attempt_at)"
                     " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                     [(esc_id, h, at) for h in hooks])
    conn.execute("UPDATE escalations SET contacts = ?, webhooks = ? WHERE id = ?",
                 (" ".join(contacts), " ".join(hooks), esc_id))
    return contacts, hooks


def _context(conn: sqlite3.Connection, d: dict[str, Any]) -> tuple[bytes, bool, str | None]:
    """The notice's digest, whether the recipient confirmed delivery, and the reason of its
    rejection (None if it did not reject it)."""
    row = conn.execute(
        "SELECT n.digest, v.delivered_at, v.rejection_reason FROM notices n JOIN deliveries v"
        " ON v.notice_id = n.notice_id WHERE n.notice_id = ? AND v.recipient = ?",
        (d["notice_id"], d["recipient"])).fetchone()
    return bytes(row[0]), row[1] is not None, row[2]


def _escalate(conn: sqlite3.Connection, d: dict[str, Any], at: int, stamper: Stamper,
              routing: Routing) -> EscalationRow | None:
    """Move one ladder to the level due at ``at``; write its escalation exactly once."""
    level = levels_due(d["due_at"], d["repeat_ms"], d["max_level"], at)
    if level <= d["level"]:
        conn.execute("UPDATE deadlines SET next_at = ? WHERE notice_id = ? AND recipient = ?"
                     " AND track = ?", (next_escalation(d["due_at"], d["repeat_ms"],
                                                        d["max_level"], d["level"]),
                                        d["notice_id"], d["recipient"], d["track"]))
        return None
    digest, delivered, rejected = _context(conn, d)
    missed = level - d["level"] - 1
    final = level >= d["max_level"]
    statement = stamper.escalation(
        "escalated", notice_id=d["notice_id"], digest=digest, sender=d["sender"],
        recipient=d["recipient"], severity=d["severity"], status=d["status"],
        track=d["track"], level=level, missed_levels=missed, deadline=d["due_at"], at=at,
        delivered=delivered, final=final)
    cur = conn.execute(
        "INSERT INTO escalations (notice_id, recipient, track, level, kind, at, statement)"
        " VALUES (?, ?, ?, ?, 'escalated', ?, ?) ON CONFLICT DO NOTHING",
        (d["notice_id"], d["recipient"], d["track"], level, at, statement))
    conn.execute("UPDATE deadlines SET level = ?, next_at = ? WHERE notice_id = ?"
                 " AND recipient = ? AND track = ?",
                 (level, next_escalation(d["due_at"], d["repeat_ms"], d["max_level"], level),
                  d["notice_id"], d["recipient"], d["track"]))
    if cur.rowcount == 0:
        return None  # this level was written before: exactly once
    esc_id = int(cur.lastrowid or 0)
    contacts, hooks = _fan_out(conn, d, esc_id, "escalated", at, level, routing)
    return EscalationRow(esc_id, "escalated", d["notice_id"], d["sender"], d["recipient"],
                         d["track"], d["severity"], d["status"], level, missed, d["due_at"], at,
                         delivered, final, statement, contacts, hooks,
                         scheduled_at=d["due_at"] + (level - 1) * d["repeat_ms"],
                         rejected=rejected)


def _resolve_ladder(conn: sqlite3.Connection, d: dict[str, Any], at: int, stamper: Stamper,
             routing: Routing) -> EscalationRow:
    digest, delivered, rejected = _context(conn, d)
    statement = stamper.escalation(
        "resolved", notice_id=d["notice_id"], digest=digest, sender=d["sender"],
        recipient=d["recipient"], severity=d["severity"], status=d["status"],
        track=d["track"], level=d["level"], missed_levels=0, deadline=d["due_at"], at=at,
        delivered=delivered, final=True)
    cur = conn.execute(
        "INSERT INTO escalations (notice_id, recipient, track, level, kind, at, statement)"
        " VALUES (?, ?, ?, ?, 'resolved', ?, ?)",
        (d["notice_id"], d["recipient"], d["track"], d["level"], at, statement))
    esc_id = int(cur.lastrowid or 0)
    contacts, hooks = _fan_out(conn, d, esc_id, "resolved", at, d["level"], routing)
    return EscalationRow(esc_id, "resolved", d["notice_id"], d["sender"], d["recipient"],
                         d["track"], d["severity"], d["status"], d["level"], 0, d["due_at"], at,
                         delivered, True, statement, contacts, hooks, rejected=rejected)


def _from_statement(esc_id: int, statement: bytes, contacts: str = "",
                    webhooks: str = "", rejected: str | None = None) -> EscalationRow:
    st = EscalationStatement.decode(statement)
    return EscalationRow(esc_id, st.kind, st.notice_id, st.sender, st.recipient, st.track,
                         st.severity, st.status, st.level, st.missed_levels, st.deadline, st.at,
                         st.delivered, st.final, statement, tuple(contacts.split()),
                         tuple(webhooks.split()), rejected=rejected)


#: The reason of the recipient's rejection of an escalation ``x``'s notice (NULL if none).
_REJECTED = ("(SELECT v.rejection_reason FROM deliveries v WHERE v.notice_id = x.notice_id"
             " AND v.recipient = x.recipient)")


def _b(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


#: An event row: what a desk's stream carries for it (see _event).
_EVENT_SQL = (
    "SELECT e.seq, e.kind, e.notice_id, {envelope}, n.attestation, n.sender_cert,"
    " d.receipt, d.receipt_attestation, d.ack, d.ack_attestation, d.signer_cert,"
    " x.statement, x.recipient, e.desk, d.rejection, d.rejection_attestation"
    " FROM events e JOIN notices n ON n.notice_id = e.notice_id"
    " LEFT JOIN deliveries d ON d.notice_id = e.notice_id AND d.recipient = e.recipient"
    " LEFT JOIN escalations x ON x.id = e.escalation_id")
_EVENT_SELECT = _EVENT_SQL.format(envelope="n.envelope")
#: An event's seq and the bytes its blobs take (as _event builds it), without reading them.
_EVENT_SIZES = (
    "SELECT e.seq, CASE"
    " WHEN e.kind = 'notice' THEN"
    "  length(n.envelope) + ifnull(length(n.attestation), 0) + ifnull(length(n.sender_cert), 0)"
    " WHEN e.kind = 'receipt' THEN ifnull(length(d.receipt), 0)"
    "  + ifnull(length(d.receipt_attestation), 0) + ifnull(length(d.signer_cert), 0)"
    " WHEN e.kind = 'ack' THEN ifnull(length(d.ack), 0)"
    "  + ifnull(length(d.ack_attestation), 0) + ifnull(length(d.signer_cert), 0)"
    " WHEN e.kind = 'escalation' AND x.recipient = e.desk THEN ifnull(length(x.statement), 0)"
    "  + length(n.envelope) + ifnull(length(n.sender_cert), 0)"
    " ELSE ifnull(length(x.statement), 0) END"
    " FROM events e JOIN notices n ON n.notice_id = e.notice_id"
    " LEFT JOIN deliveries d ON d.notice_id = e.notice_id AND d.recipient = e.recipient"
    " LEFT JOIN escalations x ON x.id = e.escalation_id")
#: Committed events are handed over with notices up to this size; a larger notice's event
#: is handed over as ``None`` (its streams read it from the store).
HANDED_OVER_NOTICE_BYTES = 64 * 1024
_COMMITTED_SELECT = _EVENT_SQL.format(
    envelope=f"CASE WHEN length(n.envelope) <= {HANDED_OVER_NOTICE_BYTES} THEN n.envelope END")


def _event(row: Any, desk: str) -> Event:
    (seq, kind, nid, env, att, scert, rcpt, rcpt_att, ack, ack_att, rcert, statement,
     esc_recipient) = row[:13]
    nid = bytes(nid)
    if kind == "notice":
        return Event(seq, kind, nid, envelope=bytes(env), attestation=bytes(att),
                     signer_cert=bytes(scert))
    if kind == "receipt":
        return Event(seq, kind, nid, confirmation=_b(rcpt), attestation=_b(rcpt_att),
                     signer_cert=_b(rcert))
    if kind == "ack":
        return Event(seq, kind, nid, confirmation=_b(ack), attestation=_b(ack_att),
                     signer_cert=_b(rcert))
    if kind == "rejected":
        return Event(seq, kind, nid, confirmation=_b(row[14]), attestation=_b(row[15]),
                     signer_cert=_b(rcert))
    # An escalation or resolution: the recipient gets the notice again with its escalation
    # (a re-push); the sender and contacts get the relay's statement only (metadata).
    again = desk == esc_recipient and kind == "escalation"
    return Event(seq, kind, nid, attestation=_b(statement),
                 envelope=bytes(env) if again else None,
                 signer_cert=bytes(scert) if again else None)


def _resolve(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
             on_events: Callable[[list[tuple[str, Event | None]] | None], None] | None = None,
             committed: list[tuple[str, Event | None]] | None = None) -> None:
    # Committed events are handed over before any writer resumes (and wakes a stream).
    if on_events is not None:
        on_events(committed)
    for fut, result, exc in outcomes:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
