"""Build the verifiable-log vectors (see "Verifiable log" in keys/PROTOCOL.md).

Deterministic: Ed25519 keys from fixed seeds, fixed timestamps, entries ``b"hotline leaf
%d"``. Ed25519 signatures are deterministic, so the file is reproducible byte for byte.

    python tests/vectors/make_tlog_vectors.py > tests/vectors/tlog_vectors.json
"""

from __future__ import annotations

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
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(build(), indent=1, ensure_ascii=False) + "\n")
