"""The verifiable log's storage on SQLite (:class:`relay.store.base.LogStore`).

Leaves are appended by the schema's triggers (008_tlog.sql) inside the transaction that
stores each statement, so no store operation calls in here to append one; the relay's
key change is the one leaf appended directly (:meth:`SqliteLog.append`). Everything else
is the checkpointer's: it extends the tree's hashes and stores each signed checkpoint
with one write, through the store's writer (group commit), and reads on the store's read
connection.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from relay.store.base import LogCheckpoint, LogLeaf

if TYPE_CHECKING:
    from relay.store.sqlite import SqliteStore


class SqliteLog:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def _conn(self) -> sqlite3.Connection:
        return self._store._reader()

    def size(self) -> int:
        row = self._conn().execute("SELECT coalesce(max(idx) + 1, 0) FROM tlog_leaves"
                                   ).fetchone()
        return int(row[0])

    def leaves(self, start: int, end: int) -> list[LogLeaf]:
        rows = self._conn().execute(
            "SELECT idx, kind, statement FROM tlog_leaves WHERE idx >= ? AND idx < ?"
            " ORDER BY idx", (start, end)).fetchall()
        return [LogLeaf(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def index_of(self, statement: bytes) -> int | None:
        row = self._conn().execute("SELECT min(idx) FROM tlog_leaves WHERE statement = ?",
                                   (statement,)).fetchone()
        return None if row[0] is None else int(row[0])

    def index_by_leaf_hash(self, leaf_hash: bytes) -> int | None:
        row = self._conn().execute("SELECT min(idx) FROM tlog_hashes WHERE level = 0"
                                   " AND hash = ?", (leaf_hash,)).fetchone()
        return None if row[0] is None else int(row[0])

    def last_of_kind(self, kind: str) -> LogLeaf | None:
        row = self._conn().execute(
            "SELECT idx, kind, statement FROM tlog_leaves WHERE kind = ? ORDER BY idx DESC"
            " LIMIT 1", (kind,)).fetchone()
        return None if row is None else LogLeaf(int(row[0]), str(row[1]), bytes(row[2]))

    def hash(self, level: int, index: int) -> bytes:
        row = self._conn().execute("SELECT hash FROM tlog_hashes WHERE level = ? AND idx = ?",
                                   (level, index)).fetchone()
        if row is None:
            raise KeyError(f"no stored hash at level {level} index {index}")
        return bytes(row[0])

    def hashes(self, level: int, start: int, end: int) -> list[bytes]:
        rows = self._conn().execute(
            "SELECT hash FROM tlog_hashes WHERE level = ? AND idx >= ? AND idx < ?"
            " ORDER BY idx", (level, start, end)).fetchall()
        return [bytes(r[0]) for r in rows]

    def hashed_size(self) -> int:
        row = self._conn().execute(
            "SELECT coalesce(max(idx) + 1, 0) FROM tlog_hashes WHERE level = 0").fetchone()
        return int(row[0])

    def latest(self) -> LogCheckpoint | None:
        row = self._conn().execute(
            "SELECT size, root, note, signed_at, cosigned FROM tlog_checkpoints"
            " ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else LogCheckpoint(int(row[0]), bytes(row[1]),
                                                      bytes(row[2]), int(row[3]), int(row[4]))

    async def extend(self, hashes: list[tuple[int, int, bytes]], checkpoint: LogCheckpoint
                     ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            # The hashes a checkpoint commits to are written with it, never without it.
            conn.executemany("INSERT INTO tlog_hashes (level, idx, hash) VALUES (?, ?, ?)",
                             hashes)
            conn.execute("INSERT INTO tlog_checkpoints (size, root, note, signed_at, cosigned)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (checkpoint.size, checkpoint.root, checkpoint.note,
                          checkpoint.signed_at, checkpoint.cosigned))

        await self._store._run(op)

    async def cosigned(self, size: int, note: bytes, count: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE tlog_checkpoints SET note = ?, cosigned = ? WHERE size = ?",
                         (note, count, size))

        await self._store._run(op)

    async def append(self, kind: str, statement: bytes) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM tlog_leaves").fetchone()
            conn.execute("INSERT INTO tlog_leaves (idx, kind, statement) VALUES (?, ?, ?)",
                         (int(row[0]), kind, statement))
            return int(row[0])

        return await self._store._run(op)
