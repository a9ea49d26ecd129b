"""The relay's verifiable log: checkpoints, witnesses and tiles (PROTOCOL.md section 20).

Leaves are appended by the store in the transaction of each statement (see
:class:`relay.store.base.LogStore`). This service is the only part that works on the
tree: each pass reads the leaves past the stored hashes, extends the tree (an
RFC 6962 :class:`~keys.tlog.MerkleHasher` resumed from its stored right edge), signs a
C2SP checkpoint and stores hashes and checkpoint in one commit, then asks every
configured witness to cosign it (C2SP tlog-witness add-checkpoint, with a consistency
proof from the size the witness holds; on 409 again from the size it reports) and stores
the cosigned note, which ``/checkpoint`` serves. A pass runs every
``log.checkpoint_interval_s`` while there are new leaves (the interval is the time a
statement waits, at most, for its checkpoint), and whenever a witness still lacks the
latest checkpoint.

Log entry ``i`` is ``SHA-256(statement i)``: the leaf hash is
``SHA-256(0x00 || SHA-256(statement))``. Tiles serve hashes and entries only, never the
statements (they stay with the desks that received them, and in evidence bundles).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import aiohttp
import nacl.signing

from keys import note, tlog
from keys.checkpoint import Checkpoint, parse_witness_vkey, relay_origin
from keys.frames import Event
from keys.note import NoteError, Signature, Verifier
from relay.clock import Clock
from relay.config import LogSettings
from relay.faults import SplitView
from relay.metrics import Metrics
from relay.store.base import LogCheckpoint, LogStore

#: Leaves read (and hashed) per database read while extending the tree.
LEAF_BATCH = 4096
#: Largest witness response read (a few signature lines).
MAX_WITNESS_RESPONSE = 16 * 1024
#: Cache lifetime of the mutable resources (checkpoint, partial tiles), seconds.
MUTABLE_MAX_AGE_S = 1


def entry_of(statement: bytes) -> bytes:
    """The log entry recording ``statement`` (its exact signed bytes)."""
    return hashlib.sha256(statement).digest()


def leaf_hash_of(statement: bytes) -> bytes:
    return tlog.leaf_hash(entry_of(statement))


class LogBroken(Exception):
    """The stored leaves do not form a log (a gap, or leaves changed under stored hashes)."""


@dataclasses.dataclass
class WitnessState:
    target_url: str
    verifier: Verifier
    #: The size this witness holds for our origin, as far as we know (None: ask).
    size: int | None = None
    #: The latest size it cosigned.
    cosigned: int = 0
    failures: int = 0
    last_error: str = ""


class RelayLog:
    def __init__(self, *, store: LogStore, relay_id: str, key: nacl.signing.SigningKey,
                 relay_card: bytes, clock: Clock, settings: LogSettings, metrics: Metrics,
                 log: Any) -> None:
        self.store = store
        self.origin = relay_origin(relay_id)
        self.signer = note.Signer(self.origin, key)
        self.relay_card = relay_card
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.witnesses = [WitnessState(w.url, parse_witness_vkey(w.vkey))
                          for w in settings.witnesses]
        self._hasher: tlog.MerkleHasher | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self.broken: str | None = None
        #: The split-view attack (tests only; relay/faults.py): None in production.
        self.split: SplitView | None = None
        self._split_witnesses = [dataclasses.replace(w) for w in self.witnesses]

    @property
    def vkey(self) -> str:
        """The log's verifier key (its checkpoints' signer): the relay key, named by origin."""
        return self.signer.vkey()

    # ------------------------------------------------------------------ driving
    async def start(self) -> None:
        """Record the relay's key (its card) if it is not the last one logged."""
        if not self.settings.enabled:
            self.log.warning("log.disabled", note="[log] enabled = false: no checkpoints, "
                             "no witnesses; desks cannot prove this relay's statements")
            return
        last = self.store.last_of_kind("relay_key")
        if last is None or last.statement != self.relay_card:
            index = await self.store.append("relay_key", self.relay_card)
            self.log.info("log.relay_key_recorded", index=index)

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        if not self.settings.enabled:
            return
        while not self._stop.is_set():
            self._wake.clear()
            try:
                await self.tick()
            except Exception:  # a pass that failed is logged; the next one retries
                self.log.exception("log.pass_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(),
                                       timeout=self.settings.checkpoint_interval_s)

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def tick(self) -> LogCheckpoint | None:
        """One pass: extend and sign if there are new leaves, then bring every witness up
        to the latest checkpoint. Returns the latest checkpoint (None: the log is empty)."""
        latest = await self.extend()
        if latest is not None and self.witnesses:
            latest = await self.witness(latest)
        if latest is not None and self.split is not None:
            await self._split_pass(latest)
        self._update_metrics(latest)
        return latest

    async def _split_pass(self, latest: LogCheckpoint) -> None:
        """The split-view attack's pass (tests only): extend the forked tree to the honest
        size, sign it, and offer it to the witnesses."""
        split = self.split
        assert split is not None
        if split.tree.size >= latest.size:
            return
        leaves = self.store.leaves(split.tree.size, latest.size)
        if not split.extend([entry_of(x.statement) for x in leaves]):
            return
        cp = Checkpoint(self.origin, split.tree.size, split.tree.root())
        text = cp.text()
        split.note, split.size = note.sign(text, [self.signer]), cp.size
        forked = LogCheckpoint(cp.size, cp.root, split.note, self.clock.now_ms())
        results = await asyncio.gather(*(self._ask(w, forked, read=split.tree.read)
                                         for w in self._split_witnesses))
        got = [s for s in results if s is not None]
        if got:
            split.note = note.sign(text, [self.signer], extra=got)

    # ------------------------------------------------------------------ the tree
    def _resume(self) -> tlog.MerkleHasher:
        size = self.store.hashed_size()
        if self._hasher is None or self._hasher.size != size:
            self._hasher = tlog.MerkleHasher.resume(size, self.store.hash)
        return self._hasher

    async def extend(self) -> LogCheckpoint | None:
        """Hash the new leaves and sign a checkpoint of the new size (one commit)."""
        latest = self.store.latest()
        size = self.store.size()
        hasher = self._resume()
        if size <= hasher.size:
            if latest is None and size == 0:
                return None
            return latest
        new: list[tuple[int, int, bytes]] = []
        start = hasher.size
        try:
            while hasher.size < size:
                leaves = self.store.leaves(hasher.size, min(size, hasher.size + LEAF_BATCH))
                if not leaves:
                    raise LogBroken(f"leaf {hasher.size} is missing (the log has a gap)")
                for leaf in leaves:
                    if leaf.index != hasher.size:
                        raise LogBroken(f"leaf {hasher.size} is missing (the log has a gap)")
                    new.extend(hasher.append(leaf_hash_of(leaf.statement)))
        except LogBroken as exc:
            self._hasher = None
            self.broken = str(exc)
            self.metrics.log_broken.set(1)
            self.log.error("log.broken", error=str(exc))
            return latest
        cp = Checkpoint(self.origin, hasher.size, hasher.root())
        signed = note.sign(cp.text(), [self.signer])
        record = LogCheckpoint(cp.size, cp.root, signed, self.clock.now_ms())
        try:
            await self.store.extend(new, record)
        except BaseException:
            self._hasher = None  # the stored hashes are what the next pass resumes from
            raise
        self.log.debug("log.checkpoint_signed", size=cp.size, leaves=cp.size - start)
        return record

    def hash(self, level: int, index: int) -> bytes:
        return self.store.hash(level, index)

    def checkpoint(self, connection: object = None) -> bytes | None:
        """The latest checkpoint, with its cosignatures (what ``/checkpoint`` serves).
        ``connection``: the request's (only the split-view attack looks at it)."""
        if self.split is not None and self.split.shows_fork(connection):
            return self.split.note
        latest = self.store.latest()
        return None if latest is None else latest.note

    def index_of(self, statement: bytes | None) -> int | None:
        if statement is None or not self.settings.enabled:
            return None
        return self.store.index_of(statement)

    def annotate(self, events: Sequence[Event]) -> list[Event]:
        """The events with the leaf index of their relay statement (PROTOCOL.md 20.2)."""
        if not self.settings.enabled:
            return list(events)
        return [dataclasses.replace(e, leaf=self.index_of(e.attestation)) for e in events]

    def tile(self, path: str, connection: object = None) -> tuple[bytes, bool] | None:
        """A tile's bytes and whether it is full (immutable); None if the tree has no
        such tile yet. Raises ProtocolError for a path that is not a tile's."""
        t = tlog.parse_tile_path(path)
        if self.split is not None and self.split.shows_fork(connection):
            forked = self.split.tile(t)
            return None if forked is None else (forked, t.is_full)
        latest = self.store.latest()
        size = 0 if latest is None else latest.size
        if t.is_entries:
            lo = t.index * tlog.TILE_WIDTH
            if lo + t.width > size:
                return None
            leaves = self.store.leaves(lo, lo + t.width)
            if len(leaves) != t.width:
                return None
            return tlog.encode_entry_bundle([entry_of(x.statement) for x in leaves]), t.is_full
        level = t.level * tlog.TILE_HEIGHT
        lo = t.index * tlog.TILE_WIDTH
        if (lo + t.width) << level > size:
            return None
        hashes = self.store.hashes(level, lo, lo + t.width)
        if len(hashes) != t.width:
            return None
        return b"".join(hashes), t.is_full

    # ------------------------------------------------------------------ witnesses
    async def witness(self, latest: LogCheckpoint) -> LogCheckpoint:
        """Ask each witness that lacks ``latest`` to cosign it; store what came back."""
        text, sigs = note.split(latest.note)
        cosigs = {(s.name, s.key_id): s for s in sigs
                  if (s.name, s.key_id) != (self.signer.name, self.signer.key_id)}
        pending = [w for w in self.witnesses
                   if (w.verifier.name, w.verifier.key_id) not in cosigs]
        if not pending:
            return latest
        results = await asyncio.gather(*(self._ask(w, latest) for w in pending))
        got = [s for s in results if s is not None]
        if not got:
            return latest
        for s in got:
            cosigs[(s.name, s.key_id)] = s
        signed = note.sign(text, [self.signer], extra=list(cosigs.values()))
        record = dataclasses.replace(latest, note=signed, cosigned=len(cosigs))
        await self.store.cosigned(latest.size, signed, len(cosigs))
        return record

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.witness_timeout_s))
        return self._http

    async def _ask(self, w: WitnessState, cp: LogCheckpoint,
                   read: tlog.HashReader | None = None) -> Signature | None:
        """add-checkpoint to one witness; its cosignature, or None (counted, logged).
        ``read``: the tree's hashes (default: the stored tree's)."""
        read = read or self.hash
        text, _ = note.split(cp.note)
        signed = note.sign(text, [self.signer])  # the log's signature only
        for _attempt in range(3):
            old = w.size if w.size is not None and w.size <= cp.size else 0
            try:
                proof = (tlog.consistency_proof(read, old, cp.size)
                         if 0 < old < cp.size else [])
            except KeyError as exc:
                return self._failed(w, "proof", f"cannot prove from size {old}: {exc}")
            body = (f"old {old}\n".encode()
                    + b"".join(note.b64(h).encode() + b"\n" for h in proof)
                    + b"\n" + signed)
            try:
                async with self._session().post(w.target_url + "/add-checkpoint",
                                                data=body) as resp:
                    data = await resp.content.read(MAX_WITNESS_RESPONSE)
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                return self._failed(w, "unreachable", f"{type(exc).__name__}: {exc}"[:200])
            if status == 409:
                try:
                    reported = int(data.decode().strip())
                except ValueError:
                    return self._failed(w, "bad_response", "409 without a size")
                if reported > cp.size:
                    # It cosigned a larger tree of ours than we have: a rollback of this
                    # relay's database, or someone else signing with its key.
                    return self._failed(w, "ahead", f"the witness holds size {reported}, "
                                        f"larger than this log's {cp.size}")
                if reported == old:
                    return self._failed(w, "bad_response", "409 with the size we sent")
                w.size = reported
                continue
            if status != 200:
                reason = {422: "inconsistent", 403: "refused_signature",
                          404: "unknown_origin", 400: "bad_request"}.get(status, "http_error")
                return self._failed(w, reason, f"HTTP {status}: "
                                    f"{data.decode(errors='replace').strip()[:200]}")
            sig = self._cosignature(w, text, data)
            if sig is None:
                return self._failed(w, "bad_cosignature",
                                    "the witness answered without a valid cosignature")
            w.size = w.cosigned = cp.size
            w.last_error = ""
            return sig
        return self._failed(w, "conflict", "the witness's size kept changing")

    def _cosignature(self, w: WitnessState, text: bytes, data: bytes) -> Signature | None:
        try:
            lines = data.decode().splitlines()
        except UnicodeDecodeError:
            return None
        for line in lines:
            try:
                sig = note.parse_signature_line(line)
            except NoteError:
                continue
            if (sig.name, sig.key_id) == (w.verifier.name, w.verifier.key_id) \
                    and w.verifier.verify(text, sig.sig):
                return sig
        return None

    def _failed(self, w: WitnessState, reason: str, detail: str) -> Signature | None:
        """Count and log a witness that gave no cosignature; None (for the caller)."""
        w.failures += 1
        w.last_error = detail
        if reason in ("unreachable", "conflict"):
            w.size = None
        self.metrics.witness_failures.labels(w.verifier.name, reason).inc()
        level = self.log.warning if reason in ("unreachable", "http_error") else self.log.error
        level("log.witness_failed", witness=w.verifier.name, url=w.target_url, reason=reason,
              error=detail)
        return None

    def _update_metrics(self, latest: LogCheckpoint | None) -> None:
        m = self.metrics
        m.log_size.set(self.store.size())
        if latest is None:
            return
        m.checkpoint_size.set(latest.size)
        m.checkpoint_timestamp.set(latest.signed_at / 1000)
        m.checkpoint_cosignatures.set(latest.cosigned)
        m.witnesses_configured.set(len(self.witnesses))
        if latest.cosigned >= len(self.witnesses):
            m.witnessed_size.set(latest.size)
            m.witnessed_timestamp.set(latest.signed_at / 1000)
