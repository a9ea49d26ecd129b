"""The client's check of the relay's log (PROTOCOL.md section 20.5): "trust proofs, not the
relay".

Every relay statement this desk receives is kept with the leaf index the relay named for
it. Now and then (:meth:`RecordChecker.due`, with backoff; bounded work per pass) the
checker fetches the relay's checkpoint, requires it to satisfy the pinned witness policy
(else only the log's signature, and says so), checks it is consistent with the latest
checkpoint kept (a proof from the relay's tiles), and proves each kept statement included
in it. A smaller checkpoint, one of the same size with another root, a consistency proof
that fails, or a statement not at its leaf is a :class:`LogInconsistent`: both
checkpoints are kept in the home (``record/``) as evidence, and it stays reported until
an operator looks (``hotline status`` exits non-zero while one is on file).

State: ``record.db`` (SQLite) in the desk home.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from keys import tlog
from keys.checkpoint import Checkpoint, open_checkpoint, relay_origin
from keys.errors import HotlineError
from keys.note import SIG_ED25519, Verifier, encode_vkey
from keys.tlog_policy import Policy, QuorumNotMet, check_checkpoint, parse_policy

#: Fetch a path from the relay: its body, or None for a 404.
Fetch = Callable[[str], Awaitable[bytes | None]]

POLICY_NAME = "log-policy"
DB_NAME = "record.db"
EVIDENCE_DIR = "record"
#: Statements proven per pass (bounded work; the rest wait for the next pass).
MAX_PROOFS_PER_PASS = 64
#: Passes while statements wait: first after MIN_DELAY_MS, doubling up to MAX_DELAY_MS.
MIN_DELAY_MS = 2_000
MAX_DELAY_MS = 60_000
#: Full tiles fetched this run (they never change).
MAX_CACHED_TILES = 1024

#: A stream event's kind -> the kind of the relay statement it carries.
_STATEMENT_KINDS = {"notice": "accepted", "receipt": "delivered", "ack": "acknowledged",
                    "escalation": "escalated"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS statements (
    hash        BLOB PRIMARY KEY,
    statement   BLOB NOT NULL,
    kind        TEXT NOT NULL,
    notice_id   BLOB,
    leaf        INTEGER,
    seen_at     INTEGER NOT NULL,
    proven_size INTEGER,
    proof       BLOB
);
CREATE INDEX IF NOT EXISTS statements_unproven ON statements (seen_at) WHERE proven_size IS NULL;
CREATE INDEX IF NOT EXISTS statements_by_notice ON statements (notice_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    size     INTEGER PRIMARY KEY,
    root     BLOB NOT NULL,
    note     BLOB NOT NULL,
    policy   INTEGER NOT NULL,
    seen_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS conflicts (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT NOT NULL,
    detail   TEXT NOT NULL,
    old_note BLOB,
    new_note BLOB NOT NULL,
    at       INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class LogInconsistent:
    """The relay's log contradicts itself or what this desk holds: evidence of a relay
    rewriting history, dropping a statement or showing desks different logs."""

    #: ``rollback`` (a smaller tree than one seen), ``fork`` (same size, other root, or a
    #: consistency proof that fails), ``missing_leaf`` (a statement is not at its leaf).
    kind: str
    detail: str
    old_checkpoint: bytes | None
    new_checkpoint: bytes
    #: Where both checkpoints are kept.
    evidence: str

    def describe(self) -> str:
        return f"LOG INCONSISTENT ({self.kind}): {self.detail}; evidence in {self.evidence}"


@dataclass(frozen=True, slots=True)
class Proven:
    """A statement's inclusion proof against a kept checkpoint."""

    statement: bytes
    kind: str
    leaf: int
    size: int
    proof: tuple[bytes, ...]


def entry_of(statement: bytes) -> bytes:
    return hashlib.sha256(statement).digest()


def log_verifier(relay_id: str, relay_key: bytes) -> Verifier:
    """The relay log's checkpoint key: the relay's key under its origin (PROTOCOL.md 20.3)."""
    from keys.note import parse_vkey

    return parse_vkey(encode_vkey(relay_origin(relay_id), SIG_ED25519, relay_key))


def load_policy(home: Path) -> Policy | None:
    path = home / POLICY_NAME
    return parse_policy(path.read_bytes()) if path.exists() else None


class RecordState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def add(self, statement: bytes, kind: str, notice_id: bytes | None, leaf: int | None,
            now: int) -> bool:
        cur = self.conn.execute(
            "INSERT INTO statements (hash, statement, kind, notice_id, leaf, seen_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (hash) DO UPDATE SET"
            " leaf = coalesce(statements.leaf, excluded.leaf)",
            (entry_of(statement), statement, kind, notice_id, leaf, now))
        return cur.rowcount > 0

    def unproven(self, limit: int) -> list[tuple[bytes, bytes, str, int | None]]:
        rows = self.conn.execute(
            "SELECT hash, statement, kind, leaf FROM statements WHERE proven_size IS NULL"
            " ORDER BY seen_at LIMIT ?", (limit,)).fetchall()
        return [(bytes(r[0]), bytes(r[1]), str(r[2]), r[3]) for r in rows]

    def unproven_count(self) -> int:
        return int(self.conn.execute(
            "SELECT count(*) FROM statements WHERE proven_size IS NULL").fetchone()[0])

    def proven(self, h: bytes, leaf: int, size: int, proof: Iterable[bytes]) -> None:
        self.conn.execute("UPDATE statements SET leaf = ?, proven_size = ?, proof = ?"
                          " WHERE hash = ?", (leaf, size, b"".join(proof), h))

    def of_notice(self, notice_id: bytes) -> list[Proven | tuple[bytes, str]]:
        out: list[Proven | tuple[bytes, str]] = []
        for st, kind, leaf, size, proof in self.conn.execute(
                "SELECT statement, kind, leaf, proven_size, proof FROM statements"
                " WHERE notice_id = ? ORDER BY seen_at", (notice_id,)):
            if not size:  # not proven yet, or its proof failed
                out.append((bytes(st), str(kind)))
            else:
                p = bytes(proof)
                out.append(Proven(bytes(st), str(kind), int(leaf), int(size),
                                  tuple(p[i:i + 32] for i in range(0, len(p), 32))))
        return out

    def latest(self) -> tuple[int, bytes, bytes] | None:
        row = self.conn.execute("SELECT size, root, note FROM checkpoints ORDER BY size DESC"
                                " LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))

    def checkpoint(self, size: int) -> bytes | None:
        row = self.conn.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return None if row is None else bytes(row[0])

    def checkpoints(self) -> list[tuple[int, bytes, bytes]]:
        return [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in self.conn.execute(
            "SELECT size, root, note FROM checkpoints ORDER BY size")]

    def keep(self, cp: Checkpoint, note: bytes, policy: bool, now: int) -> None:
        self.conn.execute("INSERT INTO checkpoints (size, root, note, policy, seen_at)"
                          " VALUES (?, ?, ?, ?, ?) ON CONFLICT (size) DO UPDATE SET"
                          " note = excluded.note WHERE checkpoints.root = excluded.root",
                          (cp.size, cp.root, note, int(policy), now))

    def conflict(self, kind: str, detail: str, old: bytes | None, new: bytes, now: int) -> int:
        cur = self.conn.execute("INSERT INTO conflicts (kind, detail, old_note, new_note, at)"
                                " VALUES (?, ?, ?, ?, ?)", (kind, detail, old, new, now))
        return int(cur.lastrowid or 0)

    def conflicts(self) -> list[tuple[int, str, str, int]]:
        return [(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in self.conn.execute(
            "SELECT id, kind, detail, at FROM conflicts ORDER BY id")]


class RecordChecker:
    def __init__(self, home: Path, *, fetch: Fetch, log_key: Callable[[], Awaitable[Verifier]],
                 policy: Policy | None = None, clock: Callable[[], int] | None = None,
                 state: RecordState | None = None) -> None:
        self.home = home
        self.fetch = fetch
        self.log_key = log_key
        self.policy = policy if policy is not None else load_policy(home)
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.state = state or RecordState(home / DB_NAME)
        self._next_at = 0
        self._delay = MIN_DELAY_MS
        self._tiles: dict[tlog.Tile, bytes] = {}
        #: Why the last pass could not prove anything (no checkpoint yet, quorum not met).
        self.lagging: str = ""

    def close(self) -> None:
        self.state.close()

    # ------------------------------------------------------------------ feeding
    def saw(self, statement: bytes | None, kind: str, notice_id: bytes | None,
            leaf: int | None) -> None:
        """Keep a relay statement this desk received, to prove it included."""
        if statement is None:
            return
        kind = _STATEMENT_KINDS.get(kind, kind)
        if self.state.add(statement, kind, notice_id, leaf, self.clock()):
            self._delay = MIN_DELAY_MS
            self._next_at = min(self._next_at or self.clock() + MIN_DELAY_MS,
                                self.clock() + MIN_DELAY_MS)

    def due(self) -> bool:
        return self.state.unproven_count() > 0 and self.clock() >= self._next_at

    def next_at(self) -> int | None:
        return self._next_at if self.state.unproven_count() else None

    # ------------------------------------------------------------------ checking
    async def check(self) -> list[LogInconsistent]:
        """One pass: the relay's checkpoint, its consistency with the kept one, and up to
        MAX_PROOFS_PER_PASS inclusion proofs. Transport errors propagate (the caller
        retries later); a contradiction is returned, never raised."""
        now = self.clock()
        self._delay = min(MAX_DELAY_MS, self._delay * 2)
        self._next_at = now + self._delay
        msg = await self.fetch("/checkpoint")
        if msg is None:
            self.lagging = "the relay has published no checkpoint yet"
            return []
        key = await self.log_key()
        # Signed by the relay is enough to hold it to what it signed before: two signed
        # trees that contradict each other are evidence, witnessed or not.
        witnesses = list(self.policy.witnesses.values()) if self.policy is not None else []
        cp = open_checkpoint(msg, [key], witnesses=witnesses).checkpoint
        found: list[LogInconsistent] = []
        latest = self.state.latest()
        if latest is not None:
            bad = await self._consistent(latest, cp, msg)
            if bad is not None:
                return [bad]
        if self.policy is not None:
            try:
                check_checkpoint(self.policy, msg, now_s=now // 1000, log_keys=[key])
            except QuorumNotMet as exc:
                self.lagging = ("the relay's checkpoint is not witnessed as the policy "
                                f"requires: {exc}")
                return []
        self.state.keep(cp, msg, self.policy is not None, now)
        self.lagging = ""
        for h, statement, kind, leaf in self.state.unproven(MAX_PROOFS_PER_PASS):
            if leaf is None:
                leaf = await self._lookup(h)
                if leaf is None:
                    continue
            if leaf >= cp.size:
                continue
            try:
                proof = await self._inclusion(entry_of(statement), leaf, cp)
            except tlog.ProofError as exc:
                found.append(self._record("missing_leaf",
                                          f"the {kind} statement {h.hex()[:16]} is not leaf "
                                          f"{leaf} of the relay's tree of size {cp.size} "
                                          f"({exc.message})", None, msg))
                self.state.proven(h, leaf, 0, [])  # size 0: reported, not retried
                continue
            self.state.proven(h, leaf, cp.size, proof)
        return found

    async def _consistent(self, latest: tuple[int, bytes, bytes], cp: Checkpoint,
                          msg: bytes) -> LogInconsistent | None:
        old_size, old_root, old_note = latest
        if cp.size < old_size:
            return self._record("rollback", f"the relay serves a tree of size {cp.size}, "
                                f"smaller than the {old_size} it showed before",
                                old_note, msg)
        if cp.size == old_size:
            if cp.root != old_root:
                return self._record("fork", f"two different trees of size {cp.size}",
                                    old_note, msg)
            return None
        if old_size == 0:
            return None
        try:
            tiles = await self._tiles_for(
                lambda r: tlog.consistency_proof(r, old_size, cp.size), cp.size)
            tlog.prove_consistency_from_tiles(tiles, old_size, old_root, cp.size, cp.root)
        except tlog.ProofError as exc:
            return self._record("fork", f"the tree of size {cp.size} does not extend the one "
                                f"of size {old_size} seen before ({exc.message})",
                                old_note, msg)
        return None

    async def _inclusion(self, entry: bytes, leaf: int, cp: Checkpoint) -> list[bytes]:
        tiles = await self._tiles_for(lambda r: tlog.inclusion_proof(r, leaf, cp.size), cp.size)
        return tlog.prove_inclusion_from_tiles(tiles, tlog.leaf_hash(entry), leaf, cp.size,
                                               cp.root)

    async def _tiles_for(self, compute: Callable[[tlog.HashReader], object], size: int
                         ) -> dict[tlog.Tile, bytes]:
        needed = tlog.tiles_needed(tlog.needed_hashes(compute), size)
        out: dict[tlog.Tile, bytes] = {}
        for t in needed:
            data = self._tiles.get(t)
            if data is None:
                data = await self.fetch("/" + t.path())
                if data is None:
                    raise tlog.ProofError(f"the relay does not serve {t.path()}",
                                          code="bad_tile")
                if t.is_full and len(self._tiles) < MAX_CACHED_TILES:
                    self._tiles[t] = data
            out[t] = data
        return out

    async def _lookup(self, h: bytes) -> int | None:
        body = await self.fetch(f"/v1/log/index/{h.hex()}")
        if body is None:
            return None
        try:
            return int(body.decode().strip())
        except ValueError:
            return None

    def _record(self, kind: str, detail: str, old: bytes | None, new: bytes
                ) -> LogInconsistent:
        n = self.state.conflict(kind, detail, old, new, self.clock())
        folder = self.home / EVIDENCE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        if old is not None:
            (folder / f"conflict-{n}-seen.checkpoint").write_bytes(old)
        (folder / f"conflict-{n}-served.checkpoint").write_bytes(new)
        return LogInconsistent(kind, detail, old, new, str(folder / f"conflict-{n}-*"))


def describe_error(exc: Exception) -> str:
    return exc.message if isinstance(exc, HotlineError) else f"{type(exc).__name__}: {exc}"
