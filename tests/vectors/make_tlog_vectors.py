"""Build the verifiable-log vectors (see "Verifiable log" in keys/PROTOCOL.md).

Deterministic: Ed25519 keys from fixed seeds, fixed timestamps, entries ``b"hotline leaf
%d"``. Ed25519 signatures are deterministic, so the file is reproducible byte for byte.

    python tests/vectors/make_tlog_vectors.py > tests/vectors/tlog_vectors.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import nacl.signing

from keys import tlog
from keys.checkpoint import Checkpoint, Cosigner, cosigned_message, relay_origin, sign_checkpoint
from keys.note import Signer, b64
from keys.tlog_policy import hotline_policy

VEC_DIR = Path(__file__).resolve().parent
#: The relay of vectors.json (make_vectors.py: its key is Ed25519 from seed("relay/<id>")).
HOTLINE_RELAY_ID = "hotline-relay-1"


def _relay_seed() -> bytes:
    from tests.vectors.make_vectors import seed

    return seed(f"relay/{HOTLINE_RELAY_ID}")


def hotline_record(witnesses: dict[str, Cosigner]) -> dict[str, Any]:
    """PROTOCOL.md 20: the leaves of real Hotline statements (vectors.json's relay card,
    accepted and rejected attestations), the tiles of their tree, and an evidence bundle
    of notice 1 that ``hotline evidence verify`` accepts."""
    from client.evidence import build_bundle
    from client.record import Proven

    vec = json.loads((VEC_DIR / "vectors.json").read_text())
    statements = [("relay_key", bytes.fromhex(vec["relay_card"]["encoded"])),
                  ("accepted", bytes.fromhex(vec["attestations"]["accepted"]["encoded"])),
                  ("rejected", bytes.fromhex(vec["attestations"]["rejected"]["encoded"]))]
    entries = [hashlib.sha256(st).digest() for _, st in statements]
    tree = tlog.MemoryTree(entries)
    log = Signer(relay_origin(HOTLINE_RELAY_ID), nacl.signing.SigningKey(_relay_seed()))
    cp = Checkpoint(log.name, tree.size, tree.root())
    note = (sign_checkpoint(cp, log) + "".join(
        w.cosign(cp.text(), COSIGN_TIME).line() for w in witnesses.values()).encode())
    policy = hotline_policy([log.vkey()], {c: [w.vkey()] for c, w in witnesses.items()})
    notice_id = bytes.fromhex(vec["attestations"]["accepted"]["fields"]["notice_id"])
    bundle = build_bundle(
        notice_id=notice_id, root=bytes.fromhex(vec["roots"]["v1"]["encoded"]),
        relay_card=statements[0][1], policy=policy,
        proven=[Proven(statements[1][1], "accepted", 1, tree.size,
                       tuple(tlog.inclusion_proof(tree.read, 1, tree.size)))],
        checkpoints={tree.size: note}, confirmations=[], content=None)
    tiles = [*tlog.tiles_for_size(tree.size), tlog.Tile(-1, 0, tree.size)]
    return {
        "log": {"origin": log.name, "vkey": log.vkey(), "seed": _relay_seed().hex()},
        "leaves": [{"index": i, "kind": k, "statement_hex": st.hex(), "entry": b64(e),
                    "leaf_hash": b64(tlog.leaf_hash(e))}
                   for i, ((k, st), e) in enumerate(zip(statements, entries, strict=True))],
        "size": tree.size, "root": b64(tree.root()),
        "tiles": {t.path(): b64(tlog.encode_entry_bundle(entries) if t.is_entries
                                else tlog.tile_bytes(t, tree.read)) for t in tiles},
        "checkpoint": note.decode(),
        "evidence_bundle": bundle.decode(),
        "evidence_verified_at": int(vec["attestations"]["accepted"]["fields"]["at"]),
    }

LOG_SEED = bytes(range(32))
WITNESS_SEEDS = {"us": bytes([0x11]) * 32, "cn": bytes([0x22]) * 32}
COSIGN_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z
SIZES = (1, 7, 300)


def build() -> dict[str, Any]:
    origin = relay_origin("relay-us")
    log = Signer(origin, nacl.signing.SigningKey(LOG_SEED))
    witnesses = {c: Cosigner(f"witness.{c}/w1", nacl.signing.SigningKey(s))
                 for c, s in WITNESS_SEEDS.items()}
    entries = [b"hotline leaf %d" % i for i in range(max(SIZES))]
    tree = tlog.MemoryTree(entries)
    trees = []
    for n in SIZES:
        cp = Checkpoint(origin, n, tree.root(n))
        signed = sign_checkpoint(cp, log)
        cosigs = [w.cosign(cp.text(), COSIGN_TIME).line() for w in witnesses.values()]
        trees.append({
            "size": n,
            "root": b64(cp.root),
            "checkpoint_text": cp.text().decode(),
            "signed_checkpoint": signed.decode(),
            "cosigned_message_us": cosigned_message(cp.text(), COSIGN_TIME).decode(),
            "cosigned_checkpoint": signed.decode() + "".join(cosigs),
            "inclusion": [{"index": i, "leaf_hash": b64(tlog.leaf_hash(entries[i])),
                           "proof": [b64(h) for h in tlog.inclusion_proof(tree.read, i, n)]}
                          for i in sorted({0, n // 2, n - 1})],
            "consistency": [{"old_size": m, "old_root": b64(tree.root(m)),
                             "proof": [b64(h) for h in tlog.consistency_proof(tree.read, m, n)]}
                            for m in sorted({1, n // 3 or 1, n})],
        })
    return {
        "_about": "Hotline verifiable-log vectors; regenerate with "
                  "tests/vectors/make_tlog_vectors.py. Entries: 'hotline leaf <i>' (ASCII).",
        "log": {"seed": LOG_SEED.hex(), "origin": origin, "vkey": log.vkey()},
        "witnesses": {c: {"seed": WITNESS_SEEDS[c].hex(), "name": w.name, "vkey": w.vkey()}
                      for c, w in witnesses.items()},
        "cosignature_time": COSIGN_TIME,
        "entries_hex": [e.hex() for e in entries[:8]],
        "entry_count": len(entries),
        "trees": trees,
        "policy": hotline_policy([log.vkey()], {c: [w.vkey()] for c, w in witnesses.items()})
        .decode(),
        "tile_paths": {str(n): tlog.encode_tile_index(n) for n in (0, 999, 1000, 1234067)},
        # Hash tiles of the 300-entry tree: the full tile and the partial ones (SHA-256
        # of the tile's bytes), and the entry bundle of the first 7 entries.
        "tiles_300": {t.path(): hashlib.sha256(tlog.tile_bytes(t, tree.read)).hexdigest()
                      for t in [tlog.Tile(0, 0), *tlog.tiles_for_size(300)]},
        "entry_bundle_7": b64(tlog.encode_entry_bundle(entries[:7])),
        "hotline": hotline_record(witnesses),
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(build(), indent=1, ensure_ascii=False) + "\n")
