"""The relay's log (PROTOCOL.md section 20), in-process on a manual clock: a leaf for every
statement, in the statement's transaction; checkpoints and tiles that verify."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keys import tlog
from keys.checkpoint import open_checkpoint, parse_log_vkey
from keys.frames import Accepted
from relay.store.base import LogStore
from relay.tlog import entry_of
from tests.factory import Federation
from tests.relay.inproc import InProcessRelay

US, CN = "us.caisi", "cn.cac"
MINUTE = 60_000


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    fed = Federation.create(desks=(US, CN))
    r = await InProcessRelay(tmp_path / "relay", fed).open()
    await r.relay.tlog.start()
    yield r
    await r.relay.tlog.close()
    await r.close()


def _leaves(db: Path) -> list[tuple[int, str, bytes]]:
    with sqlite3.connect(db) as conn:
        return [(int(i), str(k), bytes(s)) for i, k, s in
                conn.execute("SELECT idx, kind, statement FROM tlog_leaves ORDER BY idx")]


def _statements(db: Path) -> list[bytes]:
    """Every relay statement the database holds, wherever it is stored."""
    with sqlite3.connect(db) as conn:
        out = [bytes(r[0]) for r in conn.execute("SELECT attestation FROM notices")]
        for col in ("receipt_attestation", "ack_attestation", "rejection_attestation"):
            out += [bytes(r[0]) for r in conn.execute(
                f"SELECT {col} FROM deliveries WHERE {col} IS NOT NULL")]  # noqa: S608
        out += [bytes(r[0]) for r in conn.execute("SELECT statement FROM escalations")]
        out += [bytes(r[0]) for r in conn.execute("SELECT body FROM revocations")]
    return out


async def test_every_statement_has_exactly_one_leaf_without_gaps(relay: InProcessRelay) -> None:
    env = await relay.send(US, CN)
    relay.clock.advance(16 * MINUTE)
    escalated = await relay.tick()
    assert escalated, "the ladder must have escalated"
    await relay.confirm("receipt", CN, env)
    ack = await relay.ack(CN, env)
    leaves = _leaves(relay.home / "relay.db")
    assert [i for i, _, _ in leaves] == list(range(len(leaves)))
    kinds = [k for _, k, _ in leaves]
    assert kinds[0] == "relay_key"
    assert {"accepted", "escalated", "delivered", "acknowledged", "resolved"} <= set(kinds)
    stored = _statements(relay.home / "relay.db")
    logged = [s for _, k, s in leaves if k != "relay_key"]
    assert sorted(logged) == sorted(stored), "each stored statement once, nothing else"
    assert ack.leaf == relay.relay.tlog.index_of(ack.attestation)
    assert leaves[ack.leaf][2] == ack.attestation if ack.leaf is not None else False


async def test_statement_rolled_back_leaves_no_leaf(relay: InProcessRelay) -> None:
    """A write that fails inside its transaction takes its leaf with it (same savepoint)."""
    env = await relay.send(US, CN)
    before = _leaves(relay.home / "relay.db")
    with pytest.raises(Exception, match="no such delivery"):
        # A confirmation for a delivery that does not exist fails inside the transaction.
        await relay.relay.store.record_confirmation(
            __import__("relay.store.base", fromlist=["ConfirmationRecord"]).ConfirmationRecord(
                "ack", env.notice_id, env.digest, "us.nobody", US, b"x", b"y"),
            relay.relay.stamper, relay.relay.routing, relay.clock.now_ms)
    assert _leaves(relay.home / "relay.db") == before


async def test_checkpoint_and_tiles_prove_every_leaf(relay: InProcessRelay) -> None:
    answers: list[Accepted] = []
    for _ in range(5):
        env = await relay.send(US, CN)
        answers.append(await relay.ack(CN, env))
    log = relay.relay.tlog
    latest = await log.tick()
    assert latest is not None
    vkey = parse_log_vkey(log.vkey)
    cp = open_checkpoint(latest.note, [vkey]).checkpoint
    leaves = _leaves(relay.home / "relay.db")
    assert cp.size == len(leaves)
    tree = tlog.MemoryTree(entry_of(s) for _, _, s in leaves)
    assert cp.root == tree.root()
    tiles = {}
    for t in tlog.tiles_for_size(cp.size):
        found = log.tile(t.path())
        assert found is not None
        tiles[t] = found[0]
    for a in answers:
        assert a.leaf is not None
        tlog.prove_inclusion_from_tiles(tiles, tlog.leaf_hash(entry_of(a.attestation)), a.leaf,
                                        cp.size, cp.root)
    entries = log.tile(f"tile/entries/000.p/{cp.size}")
    assert entries is not None and not entries[1]
    assert tlog.decode_entry_bundle(entries[0], cp.size) == [
        hashlib.sha256(s).digest() for _, _, s in leaves]
    # A tile beyond the published tree is not served.
    assert log.tile(f"tile/0/000.p/{cp.size + 1}") is None


async def test_tree_extends_incrementally_and_stays_consistent(relay: InProcessRelay) -> None:
    log = relay.relay.tlog
    sizes = []
    roots = []
    for n in (1, 3, 300):
        for _ in range(n):
            await relay.send(US, CN)
        latest = await log.tick()
        assert latest is not None
        sizes.append(latest.size)
        roots.append(latest.root)
    store: LogStore = relay.relay.store.log
    for old, old_root in zip(sizes, roots, strict=True):
        proof = tlog.consistency_proof(store.hash, old, sizes[-1])
        tlog.verify_consistency(old, sizes[-1], proof, old_root, roots[-1])
    # A restart resumes from the stored hashes (the in-process relay comes back with a new
    # key: its card is logged first, then the new notice).
    await relay.restart()
    await relay.relay.tlog.start()
    await relay.send(US, CN)
    latest = await relay.relay.tlog.tick()
    assert latest is not None and latest.size == sizes[-1] + 2
    assert _leaves(relay.home / "relay.db")[sizes[-1]][1] == "relay_key"
    proof = tlog.consistency_proof(relay.relay.store.log.hash, sizes[-1], latest.size)
    tlog.verify_consistency(sizes[-1], latest.size, proof, roots[-1], latest.root)
    await relay.relay.tlog.close()
