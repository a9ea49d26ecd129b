"""Go's golang.org/x/mod/sumdb/note and sumdb/tlog check a live relay: its checkpoint as
``/checkpoint`` serves it, and inclusion and consistency proofs Go computes itself from
the tiles the relay serves (tlog.TileHashReader checks each tile against the signed
root). A tampered checkpoint, tile or statement is refused. Skipped, with the reason,
without Go (see tests/keys/test_tlog_go.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.record import log_verifier
from keys import tlog
from keys.checkpoint import open_checkpoint
from keys.frames import Accepted
from keys.receipts import RelayCard
from tests.e2e.test_escalation_e2e import sealed
from tests.keys.test_tlog_go import go_verify, run_go  # noqa: F401  (fixture)
from tests.relay_harness import RawDesk, RelayProcess


@pytest.fixture
def log_relay(tmp_path: Path, federation: dict[str, Path]) -> Iterator[RelayProcess]:
    proc = RelayProcess.create(tmp_path)
    with open(proc.home / "relay.toml", "a") as fh:
        fh.write("\n[log]\ncheckpoint_interval_s = 0.2\n")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


async def _get(http: aiohttp.ClientSession, url: str) -> bytes | None:
    async with http.get(url) as r:
        if r.status == 404:
            return None
        assert r.status == 200, (url, r.status)
        return await r.read()


async def _checkpoint_covering(http: aiohttp.ClientSession, relay: RelayProcess, size: int
                               ) -> bytes:
    for _ in range(300):
        note = await _get(http, relay.url + "/checkpoint")
        if note is not None and int(note.split(b"\n")[1]) >= size:
            return note
        await asyncio.sleep(0.1)
    raise AssertionError(f"no checkpoint of size {size} within 30 s")


def _all_tiles(size: int) -> list[tlog.Tile]:
    out = []
    level = 0
    while count := size >> (level * tlog.TILE_HEIGHT):
        out += [tlog.Tile(level, n, min(tlog.TILE_WIDTH, count - n * tlog.TILE_WIDTH))
                for n in range((count + tlog.TILE_WIDTH - 1) // tlog.TILE_WIDTH)]
        level += 1
    return out


async def test_go_sumdb_verifies_a_live_relays_checkpoint_and_proofs_from_its_tiles(
        go_verify: Path, log_relay: RelayProcess, federation: dict[str, Path],  # noqa: F811
        http: aiohttp.ClientSession) -> None:
    us = await RawDesk(http, log_relay.url, federation["us.caisi"]).login()
    cn = await RawDesk(http, log_relay.url, federation["cn.cac"]).login()
    statements: list[tuple[int, bytes]] = []

    async def send(n: int) -> None:
        for _ in range(n):
            r = await us.post("/v1/notices", sealed(us, cn, severity="low").raw)
            assert r.status == 201
            a = Accepted.decode(r.body)
            assert a.leaf is not None
            statements.append((a.leaf, a.attestation))

    await send(4)
    old_note = await _checkpoint_covering(http, log_relay, max(i for i, _ in statements) + 1)
    await send(7)
    note = await _checkpoint_covering(http, log_relay, max(i for i, _ in statements) + 1)
    card = RelayCard.decode((log_relay.home / "relay.card").read_bytes())
    key = log_verifier(card.relay_id, card.key)
    cp = open_checkpoint(note, [key]).checkpoint
    old = open_checkpoint(old_note, [key]).checkpoint
    assert old.size < cp.size
    tiles: list[dict[str, Any]] = []
    for t in _all_tiles(cp.size):
        data = await _get(http, log_relay.url + "/" + t.path())
        assert data is not None, t.path()
        tiles.append({"level": t.level, "index": t.index, "width": t.width, "data": _b64(data)})
    case: dict[str, Any] = {
        "vkey": key.vkey(), "checkpoint": note.decode(), "inclusion": [], "consistency": [],
        "tiles": tiles,
        "prove_record": [{"index": i, "leaf_hash": _b64(tlog.leaf_hash(
            hashlib.sha256(st).digest())), "proof": []} for i, st in statements],
        "prove_tree": [{"old_size": old.size, "old_root": _b64(old.root), "proof": []}],
    }
    r = run_go(go_verify, case)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"ok: {key.name} size {cp.size},")
    assert f"{len(statements)} and 1 from tiles" in r.stdout

    # A checkpoint with its root changed: note.Open refuses the signature.
    forged = note.replace(_b64(cp.root).encode(), _b64(old.root).encode(), 1)
    r = run_go(go_verify, {**case, "checkpoint": forged.decode()})
    assert r.returncode != 0 and "note.Open" in r.stderr, r.stderr
    # One byte of a tile changed: the tiles no longer hash up to the signed root.
    bad = base64.b64decode(tiles[0]["data"])
    bad = bad[:40] + bytes([bad[40] ^ 1]) + bad[41:]
    r = run_go(go_verify, {**case, "tiles": [{**tiles[0], "data": _b64(bad)}, *tiles[1:]]})
    assert r.returncode != 0 and "from the tiles" in r.stderr, r.stderr
    # A statement the relay never logged, claimed at a leaf: CheckRecord refuses it.
    claimed = {"index": statements[0][0], "proof": [],
               "leaf_hash": _b64(tlog.leaf_hash(hashlib.sha256(b"not logged").digest()))}
    r = run_go(go_verify, {**case, "prove_record": [claimed], "prove_tree": []})
    assert r.returncode != 0 and "CheckRecord" in r.stderr, r.stderr
