"""``hotline witness serve`` as a real process on 127.0.0.1, attacked over HTTP
(c2sp.org/tlog-witness "add-checkpoint")."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nacl.signing
import pytest

from keys import tlog
from keys.checkpoint import Checkpoint, open_checkpoint, parse_witness_vkey, sign_checkpoint
from keys.note import Signer
from tests import relay_harness
from tests.relay_harness import TEST_ENV

LOG = Signer("hotline.relay/test-relay", nacl.signing.SigningKey(bytes([3]) * 32))
OTHER = Signer("hotline.relay/unknown", nacl.signing.SigningKey(bytes([4]) * 32))
ENTRIES = [b"statement %d" % i for i in range(40)]
TREE = tlog.MemoryTree(ENTRIES)
REPO = Path(__file__).resolve().parents[2]


class WitnessProcess:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = 0
        self.lines: list[dict[str, Any]] = []
        self.vkey = ""
        env = dict(os.environ) | TEST_ENV
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from client.cli.main import main; raise SystemExit(main())",
             "witness", "serve", "--home", str(home), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = {"event": "raw", "line": line.rstrip()}
                self.lines.append(entry)
                if entry.get("event") == "witness.listening":
                    self.port, self.vkey = int(entry["port"]), entry["vkey"]
                    ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 30
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"witness did not start: {self.lines[-10:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _init(home: Path) -> None:
    from client.cli.main import main

    with relay_harness.test_env():
        assert main(["witness", "init", "--home", str(home), "--name", "witness.us/w1",
                     "--log", LOG.vkey()]) == 0


@pytest.fixture(scope="module")
def witness_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("witness")
    _init(home)
    return home


@pytest.fixture
def witness(witness_home: Path, tmp_path: Path) -> Iterator[WitnessProcess]:
    # A fresh state file per test, the same key and configuration.
    (witness_home / "witness.db").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        (witness_home / f"witness.db{suffix}").unlink(missing_ok=True)
    w = WitnessProcess(witness_home)
    yield w
    w.stop()


def body(old: int, size: int, *, tree: tlog.MemoryTree = TREE, signer: Signer = LOG,
         proof: list[bytes] | None = None, root: bytes | None = None) -> bytes:
    if proof is None:
        proof = tlog.consistency_proof(tree.read, old, size)
    cp = Checkpoint(signer.name, size, tree.root(size) if root is None else root)
    lines = [f"old {old}\n".encode()] + [base64.b64encode(h) + b"\n" for h in proof]
    return b"".join(lines) + b"\n" + sign_checkpoint(cp, signer)


async def post(w: WitnessProcess, data: bytes) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as s, s.post(w.url + "/add-checkpoint",
                                                    data=data) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def test_witness_cosigns_a_consistent_sequence(witness: WitnessProcess) -> None:
    verifier = parse_witness_vkey(witness.vkey)
    old = 0
    for size in (1, 2, 7, 8, 31, 40, 40):
        status, ctype, resp = await post(witness, body(old, size))
        assert status == 200, resp
        assert ctype.startswith("text/plain")
        cp = Checkpoint(LOG.name, size, TREE.root(size))
        signed = open_checkpoint(sign_checkpoint(cp, LOG) + resp, [LOG.verifier()],
                                 witnesses=[verifier])
        assert signed.note.verified_by(verifier.name, verifier.key_id) is not None
        old = size
    # The monitoring endpoint serves the latest cosigned checkpoint.
    origin_hash = hashlib.sha256(LOG.name.encode()).hexdigest()
    async with aiohttp.ClientSession() as s, s.get(f"{witness.url}/{origin_hash}/checkpoint") as r:
        assert r.status == 200
        served = open_checkpoint(await r.read(), [LOG.verifier()], witnesses=[verifier])
    assert served.checkpoint.size == 40


async def test_witness_rollback_to_an_older_checkpoint_is_refused_409(
        witness: WitnessProcess) -> None:
    assert (await post(witness, body(0, 20)))[0] == 200
    status, ctype, resp = await post(witness, body(0, 10))  # an older, smaller tree
    assert (status, ctype, resp) == (409, "text/x.tlog.size", b"20\n")
    status, _, resp = await post(witness, body(10, 30))  # a stale old size
    assert (status, resp) == (409, b"20\n")


async def test_witness_fork_with_a_bad_consistency_proof_is_refused_422(
        witness: WitnessProcess) -> None:
    assert (await post(witness, body(0, 8)))[0] == 200
    forked = tlog.MemoryTree([*ENTRIES[:5], b"rewritten statement", *ENTRIES[6:]])
    # The log signs a rewritten history and offers the forked tree's own proof.
    status, _, resp = await post(witness, body(8, 16, tree=forked))
    assert status == 422, resp
    # Same size, different root.
    assert (await post(witness, body(8, 8, tree=forked)))[0] == 422
    # Non-empty proof from 0 is refused as well (on a fresh origin this would be size 0).
    good = tlog.consistency_proof(TREE.read, 8, 16)
    assert (await post(witness, body(8, 16, proof=good[:-1])))[0] == 422
    assert (await post(witness, body(8, 16)))[0] == 200  # the honest extension still works


async def test_witness_two_racing_requests_with_the_same_old_size_exactly_one_wins(
        witness: WitnessProcess) -> None:
    assert (await post(witness, body(0, 4)))[0] == 200
    sizes = [5, 9, 12, 17, 23, 30, 36, 40]
    results = await asyncio.gather(*(post(witness, body(4, n)) for n in sizes))
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 1, statuses
    assert statuses.count(409) == len(sizes) - 1, statuses
    winner = sizes[statuses.index(200)]
    assert all(r[2] == f"{winner}\n".encode() for r in results if r[0] == 409)
    # And the stored state is the winner's: old=winner is accepted, nothing smaller is.
    assert (await post(witness, body(winner, 40)))[0] == 200


async def test_witness_unknown_origin_404_bad_signature_403_malformed_400(
        witness: WitnessProcess) -> None:
    assert (await post(witness, body(0, 3, signer=OTHER)))[0] == 404
    impostor = Signer(LOG.name, nacl.signing.SigningKey(bytes([5]) * 32))
    assert (await post(witness, body(0, 3, signer=impostor)))[0] == 403  # no trusted key
    good = body(0, 3)
    head, sig = good.rsplit(b" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[20] ^= 1
    assert (await post(witness, head + b" " + base64.b64encode(bytes(raw)) + b"\n"))[0] == 403
    tampered = good.replace(b"\n3\n", b"\n4\n")
    assert (await post(witness, tampered))[0] == 403
    assert (await post(witness, body(5, 3, proof=[])))[0] == 400  # old > new
    for bad in (b"", b"old 01\n\n" + good.split(b"\n\n", 1)[1], b"old 0\nnot base64!\n\n",
                b"old 0\n" + b"AAAA\n" * 64 + b"\n" + good.split(b"\n\n", 1)[1],
                good.replace(b"old 0\n", b"old  0\n")):
        assert (await post(witness, bad))[0] == 400, bad[:40]
    assert (await post(witness, good))[0] == 200  # none of that changed the state


async def test_witness_size_zero_checkpoint_must_have_the_empty_root(
        witness: WitnessProcess) -> None:
    assert (await post(witness, body(0, 0, root=bytes(32))))[0] == 422
    assert (await post(witness, body(0, 0)))[0] == 200


async def test_witness_oversized_body_is_refused(witness: WitnessProcess) -> None:
    status, _, _ = await post(witness, b"old 0\n" + b"A" * 200_000)
    assert status == 413


async def test_witness_state_survives_a_restart(witness_home: Path) -> None:
    (witness_home / "witness.db").unlink(missing_ok=True)
    w = WitnessProcess(witness_home)
    try:
        assert (await post(w, body(0, 12)))[0] == 200
    finally:
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait(10)
        w.stop()
    w = WitnessProcess(witness_home)
    try:
        assert (await post(w, body(0, 6)))[:3:2] == (409, b"12\n")
        assert (await post(w, body(12, 13)))[0] == 200
    finally:
        w.stop()
