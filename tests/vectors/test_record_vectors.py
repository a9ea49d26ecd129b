"""The record's vectors (tests/vectors/tlog_vectors.json, "hotline", "tiles_300",
"entry_bundle_7"; PROTOCOL.md 19.6): a Hotline statement's leaf, tiles, and an evidence
bundle, recomputed here from their definitions and checked by the verifier."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from client.evidence import verify_bundle
from keys import tlog
from keys.checkpoint import open_checkpoint, parse_log_vkey
from keys.receipts import Attestation, RelayCard

VEC = json.loads((Path(__file__).parent / "tlog_vectors.json").read_text())
H = VEC["hotline"]


def _b(s: str) -> bytes:
    return base64.b64decode(s)


def test_hotline_statement_leaf_is_sha256_of_sha256_of_the_signed_bytes() -> None:
    for leaf in H["leaves"]:
        st = bytes.fromhex(leaf["statement_hex"])
        entry = hashlib.sha256(st).digest()
        assert _b(leaf["entry"]) == entry
        assert _b(leaf["leaf_hash"]) == hashlib.sha256(b"\x00" + entry).digest()
    # They are real statements: the relay card and an attestation it signed.
    card = RelayCard.decode(bytes.fromhex(H["leaves"][0]["statement_hex"]))
    Attestation.decode(bytes.fromhex(H["leaves"][1]["statement_hex"])).verify(card)
    tree = tlog.MemoryTree(_b(x["entry"]) for x in H["leaves"])
    assert tree.root() == _b(H["root"])
    cp = open_checkpoint(H["checkpoint"].encode(), [parse_log_vkey(H["log"]["vkey"])])
    assert (cp.checkpoint.size, cp.checkpoint.root) == (H["size"], _b(H["root"]))


def test_tiles_are_the_concatenated_hashes_and_entry_bundles_length_prefixed() -> None:
    entries = [_b(x["entry"]) for x in H["leaves"]]
    l0 = b"".join(tlog.leaf_hash(e) for e in entries)
    assert _b(H["tiles"]["tile/0/000.p/3"]) == l0
    assert _b(H["tiles"]["tile/entries/000.p/3"]) == b"".join(
        len(e).to_bytes(2, "big") + e for e in entries)
    big = tlog.MemoryTree(b"hotline leaf %d" % i for i in range(300))
    for path, digest in VEC["tiles_300"].items():
        t = tlog.parse_tile_path(path)
        lvl = t.level * tlog.TILE_HEIGHT
        data = b"".join(big.read(lvl, t.index * 256 + i) for i in range(t.width))
        assert hashlib.sha256(data).hexdigest() == digest, path
    seven = [b"hotline leaf %d" % i for i in range(7)]
    assert _b(VEC["entry_bundle_7"]) == b"".join(b"\x00\x0e" + e for e in seven)


def test_evidence_bundle_vector_verifies_and_one_changed_byte_fails() -> None:
    data = H["evidence_bundle"].encode()
    doc = json.loads(data)
    assert set(doc) == {"format", "notice_id", "root", "relay_card", "policy", "statements",
                        "confirmations", "checkpoints", "content"}
    rep = verify_bundle(data, now=H["evidence_verified_at"])
    assert rep.ok, rep.failures
    assert any(line.startswith("accepted") for line in rep.timeline), rep.timeline
    st = doc["statements"][0]
    proof = bytearray(_b(st["proof"][0]))
    proof[0] ^= 1
    bad = dict(doc, statements=[dict(st, proof=[base64.b64encode(bytes(proof)).decode(),
                                                *st["proof"][1:]])])
    rep = verify_bundle(json.dumps(bad).encode(), now=H["evidence_verified_at"])
    assert not rep.ok and any("inclusion proof" in f for f in rep.failures), rep.failures
