"""The floor: the relay's unavoidable work per notice, in one process, no network.

Per notice, with the relay's own primitives and schema:

* decode the sealed envelope (canonical framing, header schema), check its freshness and
  verify its outer Ed25519 signature (``check_submission``);
* durably insert the notice, its delivery row and the recipient's stream event;
* decode and verify the recipient's signed receipt; durably record it (delivery row
  update + the sender's stream event);
* decode and verify the signed ack; durably record it (update + event).

Writes go through a minimal group-commit writer thread (everything queued so far in one
``BEGIN IMMEDIATE ... COMMIT``) on SQLite WAL, synchronous=FULL, on the same file system
as the relay's database, with many notices in flight so that commits batch.

The *extended* floor adds what this relay's protocol also makes unavoidable: the three
relay-signed attestations (accepted, delivered, acknowledged) and the acknowledgement
deadline row (inserted, then met). Both are reported; the target compares with the floor
as specified (without them), the extended ratio is printed beside it.

CPU is the process's utime+stime (every thread) over the timed loop; clients' work
(sealing, signing the receipts and acks) is done before the clock starts.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.common import percentiles, proc_cpu_s, say

MAX_BATCH = 512


class GroupWriter:
    """One writer thread; each batch of queued operations is one transaction, one fsync."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.loop = asyncio.get_running_loop()
        self.batches: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, loop = self.conn, self.loop
        while True:
            first = self.q.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self.q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.q.put(None)
                    break
                batch.append(item)
            conn.execute("BEGIN IMMEDIATE")
            for fn, _fut in batch:
                fn(conn)
            conn.execute("COMMIT")
            self.batches.append(len(batch))
            loop.call_soon_threadsafe(_wake, [fut for _, fut in batch])

    async def run(self, fn: Callable[[sqlite3.Connection], None]) -> None:
        fut = self.loop.create_future()
        self.q.put((fn, fut))
        await fut

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(10)
        self.conn.close()


def _wake(futs: list[asyncio.Future[None]]) -> None:
    for f in futs:
        if not f.done():
            f.set_result(None)


def _schema(path: str) -> None:
    from relay.store.sqlite import _migrations

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for _version, sql in _migrations():
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.close()


def _prepare(n: int) -> dict[str, Any]:
    """Client-side work, untimed: sealed notices, signed receipts and acks."""
    from keys import Confirmation, seal
    from tests.bench.common import sample_report
    from tests.factory import NOW, Federation

    fed = Federation.create(desks=("us.s0", "cn.r0"))
    sender, recipient = fed.desks["us.s0"], fed.desks["cn.r0"]
    rv = fed.verified("cn.r0")
    report = sample_report(aware_at=NOW - 3_600_000)
    items = []
    for _ in range(n):
        env = seal(report, sender=sender.secrets, recipients=[rv], severity="high", now=NOW)
        r = Confirmation.create("receipt", notice_id=env.notice_id, digest=env.digest,
                                sender=sender.desk, me=recipient.secrets, at=NOW + 1)
        a = Confirmation.create("ack", notice_id=env.notice_id, digest=env.digest,
                                sender=sender.desk, me=recipient.secrets, at=NOW + 2)
        items.append((env.raw, r.encode(), a.encode()))
    return {"fed": fed, "items": items, "sv": fed.verified("us.s0"), "rv": rv, "now": NOW,
            "sender_cert": sender.card.cert.encode(), "recipient_cert":
            recipient.card.cert.encode()}


async def _loop(prep: dict[str, Any], db: str, *, extended: bool,
                concurrency: int) -> dict[str, Any]:
    import nacl.signing

    from keys import Attestation, Confirmation, Envelope, check_submission
    from keys.report import DEFAULT_MAX_NOTICE_BYTES

    sv, rv, now = prep["sv"], prep["rv"], prep["now"]
    scert, rcert = prep["sender_cert"], prep["recipient_cert"]
    relay_key = nacl.signing.SigningKey.generate()
    writer = GroupWriter(db)
    items = prep["items"]
    it = iter(items)
    placeholder = b"\0" * 180  # the size of an attestation, when none is signed

    def attest(event: str, nid: bytes, digest: bytes, desk: str, at: int) -> bytes:
        if not extended:
            return placeholder
        return Attestation.create(event, relay_id="bench-relay", relay_key=relay_key,
                                  notice_id=nid, digest=digest, desk=desk,  # type: ignore[arg-type]
                                  at=at).encode()

    async def one(body: bytes, receipt: bytes, ack: bytes) -> None:
        env = Envelope.decode(body, max_bytes=DEFAULT_MAX_NOTICE_BYTES)
        check_submission(env, sender=sv, now=now)
        h = env.header
        nid, digest = h.notice_id, env.digest
        att = attest("accepted", nid, digest, h.sender, now)
        to = h.recipients[0]

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO notices (notice_id, sender, digest, severity, status, in_reply_to,"
                " created_at, accepted_at, envelope, attestation, sender_cert, policy)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (nid, h.sender, digest, h.severity, h.status, None, h.created_at, now, body,
                 att, scert, None))
            conn.execute("INSERT INTO deliveries (notice_id, recipient, sender) VALUES (?, ?, ?)",
                         (nid, to, h.sender))
            if extended:
                conn.execute(
                    "INSERT INTO deadlines (notice_id, recipient, track, sender, severity,"
                    " status, due_at, repeat_ms, max_level, level, next_at) VALUES"
                    " (?, ?, 'ack', ?, ?, ?, ?, ?, ?, 0, ?)",
                    (nid, to, h.sender, h.severity, h.status, now + 3_600_000, 1_800_000, 10,
                     now + 3_600_000))
            conn.execute("INSERT INTO events (desk, kind, notice_id, created_at)"
                         " VALUES (?, 'notice', ?, ?)", (to, nid, now))

        await writer.run(insert)
        for kind, blob in (("receipt", receipt), ("ack", ack)):
            c = Confirmation.decode(blob)
            c.verify(rv, notice_id=nid, digest=digest, sender=h.sender, recipient=rv.desk)
            event = "delivered" if kind == "receipt" else "acknowledged"
            catt = attest(event, nid, digest, to, now + 5)

            def record(conn: sqlite3.Connection, kind: str = kind, blob: bytes = blob,
                       catt: bytes = catt) -> None:
                conn.execute(
                    f"UPDATE deliveries SET {kind} = ?, {kind}_attestation = ?,"  # noqa: S608
                    " signer_cert = ?, delivered_at = coalesce(delivered_at, ?)"
                    + (", acked_at = ?" if kind == "ack" else "")
                    + " WHERE notice_id = ? AND recipient = ?",
                    (blob, catt, rcert, now + 5, *((now + 5,) if kind == "ack" else ()),
                     nid, to))
                if extended and kind == "ack":
                    conn.execute("UPDATE deadlines SET met_at = ?, next_at = NULL WHERE"
                                 " notice_id = ? AND recipient = ? AND track = 'ack'",
                                 (now + 5, nid, to))
                conn.execute("INSERT INTO events (desk, kind, notice_id, recipient, created_at)"
                             " VALUES (?, ?, ?, ?, ?)", (h.sender, kind, nid, to, now + 5))

            await writer.run(record)

    async def lane() -> None:
        for body, receipt, ack in it:
            await one(body, receipt, ack)

    pid = os.getpid()
    c0, t0 = proc_cpu_s(pid), time.perf_counter()
    p0 = time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    t1, c1, p1 = time.perf_counter(), proc_cpu_s(pid), time.process_time()
    writer.close()
    n = len(items)
    cpu = max(c1 - c0, p1 - p0)
    return {"notices": n, "cpu_s": cpu, "wall_s": t1 - t0,
            "cpu_ms_per_notice": cpu / n * 1000, "notices_per_s_wall": n / (t1 - t0),
            "commits": len(writer.batches),
            "mean_batch": sum(writer.batches) / max(1, len(writer.batches)),
            "batch": percentiles(writer.batches)}


def primitives(prep: dict[str, Any], rounds: int = 2000) -> dict[str, float]:
    """Microseconds per call of the primitives the floor is made of."""
    import nacl.signing

    from keys import Attestation, Confirmation, Envelope, check_submission

    body, receipt, _ack = prep["items"][0]
    sv, rv, now = prep["sv"], prep["rv"], prep["now"]
    env = Envelope.decode(body)
    key = nacl.signing.SigningKey.generate()
    out = {}

    def timed(name: str, fn: Callable[[], object]) -> None:
        t = time.process_time()
        for _ in range(rounds):
            fn()
        out[name] = (time.process_time() - t) / rounds * 1e6

    timed("envelope_decode_us", lambda: Envelope.decode(body))
    timed("envelope_verify_outer_us", lambda: check_submission(env, sender=sv, now=now))
    c = Confirmation.decode(receipt)
    timed("confirmation_decode_us", lambda: Confirmation.decode(receipt))
    timed("confirmation_verify_us", lambda: c.verify(rv, notice_id=env.notice_id,
                                                      digest=env.digest,
                                                      sender=env.header.sender,
                                                      recipient=rv.desk))
    timed("attestation_sign_us", lambda: Attestation.create(
        "accepted", relay_id="bench-relay", relay_key=key, notice_id=env.notice_id,
        digest=env.digest, desk=env.header.sender, at=now).encode())
    out["envelope_bytes"] = len(body)
    return out


def run(n: int, *, concurrency: int = 64, workdir: Path | None = None) -> dict[str, Any]:
    say(f"floor: preparing {n} sealed notices, receipts and acks (untimed)")
    prep = _prepare(n)
    out: dict[str, Any] = {"notices": n, "concurrency": concurrency}
    with tempfile.TemporaryDirectory(prefix="hotline-floor-", dir=workdir) as tmp:
        for name, extended in (("floor", False), ("floor_extended", True)):
            db = str(Path(tmp) / f"{name}.db")
            _schema(db)
            res = asyncio.run(_loop(prep, db, extended=extended, concurrency=concurrency))
            out[name] = res
            say(f"  {name}: {res['cpu_ms_per_notice']:.3f} ms CPU per notice, "
                f"{res['notices_per_s_wall']:.0f} notices/s wall, mean batch "
                f"{res['mean_batch']:.1f} ops per commit")
    out["primitives_us"] = primitives(prep)
    return out
