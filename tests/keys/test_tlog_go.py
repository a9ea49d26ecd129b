"""A third-party implementation checks ours: Go's golang.org/x/mod/sumdb/note and
sumdb/tlog (Debian's golang-go and golang-golang-x-mod-dev, GOPATH mode, no download)
verify Python-made checkpoints, inclusion and consistency proofs, and refuse a tampered
checkpoint. Skipped, loudly and with the reason, when Go or the x/mod sources are missing
(.ci/run installs them)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import nacl.signing
import pytest

from keys import tlog
from keys.checkpoint import Checkpoint, Cosigner, relay_origin, sign_checkpoint
from keys.note import Signer

GOPATH = Path("/usr/share/gocode")
SOURCE = Path(__file__).parents[1] / "tlog_go" / "verify.go"
LOG = Signer(relay_origin("relay-us"), nacl.signing.SigningKey(bytes([42]) * 32))
WITNESS = Cosigner("witness.cn/w1", nacl.signing.SigningKey(bytes([43]) * 32))


@pytest.fixture(scope="module")
def go_verify(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    missing = [] if go else ["the 'go' command (Debian package golang-go)"]
    if not (GOPATH / "src/golang.org/x/mod/sumdb/tlog/tlog.go").exists():
        missing.append(f"{GOPATH}/src/golang.org/x/mod (Debian golang-golang-x-mod-dev)")
    if missing:
        msg = ("THIRD-PARTY CROSS-CHECK NOT RUN: missing " + " and ".join(missing)
               + "; install them (apt-get install golang-go golang-golang-x-mod-dev)")
        print(f"\n*** {msg} ***")
        pytest.skip(msg)
    assert go is not None
    out = tmp_path_factory.mktemp("go") / "verify"
    # GOPATH mode with only Debian's sources; GOPROXY=off forbids any download.
    env = dict(os.environ, GO111MODULE="off", GOPATH=str(GOPATH), GOPROXY="off",
               GOCACHE=str(out.parent / "cache"))
    subprocess.run([go, "build", "-o", str(out), str(SOURCE)], check=True, env=env,
                   cwd=out.parent, timeout=300)
    return out


def run_go(binary: Path, case: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary)], input=json.dumps(case), capture_output=True,
                          text=True, timeout=60)


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def case_for(n: int, tree: tlog.MemoryTree, entries: list[bytes]) -> dict[str, object]:
    cp = Checkpoint(LOG.name, n, tree.root(n))
    # Cosigned: Go must ignore the witness's signature (type 0x04, unknown to it).
    signed = sign_checkpoint(cp, LOG) + WITNESS.cosign(cp.text(), 1_767_225_600).line().encode()
    indexes = sorted({0, n // 3, n // 2, n - 1})
    olds = sorted({1, n // 7 or 1, n // 2 or 1, n - 1 or 1, n})
    return {
        "vkey": LOG.vkey(),
        "checkpoint": signed.decode(),
        "inclusion": [{"index": i, "leaf_hash": _b64(tlog.leaf_hash(entries[i])),
                       "entry": _b64(entries[i]),
                       "proof": [_b64(h) for h in tlog.inclusion_proof(tree.read, i, n)]}
                      for i in indexes],
        "consistency": [{"old_size": m, "old_root": _b64(tree.root(m)),
                         "proof": [_b64(h) for h in tlog.consistency_proof(tree.read, m, n)]}
                        for m in olds],
    }


ENTRIES = [b"hotline statement %d" % i for i in range(1100)]
TREE = tlog.MemoryTree(ENTRIES)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 255, 256, 257, 1000, 1100])
def test_go_sumdb_verifies_our_checkpoint_and_proofs(go_verify: Path, n: int) -> None:
    r = run_go(go_verify, case_for(n, TREE, ENTRIES))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"ok: {LOG.name} size {n},")


def test_go_sumdb_refuses_a_tampered_checkpoint(go_verify: Path) -> None:
    case = case_for(300, TREE, ENTRIES)
    good = str(case["checkpoint"])
    for forged in (good.replace("\n300\n", "\n301\n", 1),
                   good.replace(_b64(TREE.root(300)), _b64(TREE.root(299)), 1)):
        r = run_go(go_verify, {**case, "checkpoint": forged})
        assert r.returncode != 0 and "note.Open" in r.stderr, r.stderr


def test_go_sumdb_refuses_a_tampered_proof(go_verify: Path) -> None:
    case = case_for(300, TREE, ENTRIES)
    inc = json.loads(json.dumps(case["inclusion"]))
    inc[1]["proof"][2] = _b64(bytes(32))
    r = run_go(go_verify, {**case, "inclusion": inc, "consistency": []})
    assert r.returncode != 0 and "CheckRecord" in r.stderr
    con = json.loads(json.dumps(case["consistency"]))
    con[1]["old_root"] = _b64(TREE.root(5))
    r = run_go(go_verify, {**case, "inclusion": [], "consistency": con})
    assert r.returncode != 0 and "CheckTree" in r.stderr
