"""An independent implementation checks our X-Wing: ML-KEM-768 from @noble/post-quantum
(npm, in tests/pq_node/, installed by .ci/run with ``npm ci``) with the X-Wing combiner
written on the Node side (tests/pq_node/xwing.mjs). Node decapsulates our ciphertexts,
encapsulates to our keys, and reproduces the draft's vectors with the draft's fixed
encapsulation randomness (which the OpenSSL ML-KEM API cannot take).

Without Node 20.19+ or the installed packages the test is skipped, saying so loudly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from keys import xwing
from keys.xwing import XWingPrivateKey

HERE = Path(__file__).resolve().parents[1] / "pq_node"
VECTORS = json.loads((HERE.parent / "vectors" / "xwing_draft.json").read_text())


def _node() -> str:
    node = shutil.which("node")
    why = None
    if node is None:
        why = "node is not installed"
    elif not (HERE / "node_modules" / "@noble" / "post-quantum").is_dir():
        why = f"@noble/post-quantum is not installed (run: cd {HERE} && npm ci)"
    if why is not None:
        banner = f"!!! X-WING CROSS-CHECK AGAINST @noble/post-quantum NOT RUN: {why} !!!"
        print(f"\n{'!' * len(banner)}\n{banner}\n{'!' * len(banner)}", file=sys.stderr)
        pytest.skip(banner)
    assert node is not None
    return node


def test_noble_post_quantum_agrees_with_our_xwing() -> None:
    node = _node()
    ours = [XWingPrivateKey(os.urandom(32)) for _ in range(3)]
    sealed = [xwing.encapsulate(k.public_key, random=os.urandom) for k in ours]
    request = {
        "draft": VECTORS,
        "ours": [{"seed": k.seed.hex(), "ct": ct.hex()} for k, (_, ct) in zip(ours, sealed,
                                                                            strict=True)],
        "encapsulate_to": [k.public_key.hex() for k in ours],
    }
    done = subprocess.run([node, str(HERE / "xwing.mjs")], input=json.dumps(request),
                          capture_output=True, text=True, cwd=HERE, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for v, got in zip(VECTORS, out["draft"], strict=True):
        assert (got["pk"], got["ct"], got["ss"], got["dec"]) == (v["pk"], v["ct"], v["ss"],
                                                                 v["ss"])
    for k, (ss, _), got in zip(ours, sealed, out["decapsulated"], strict=True):
        assert got["pk"] == k.public_key.hex()
        assert got["ss"] == ss.hex()
    for k, got in zip(ours, out["encapsulated"], strict=True):
        assert k.decapsulate(bytes.fromhex(got["ct"])).hex() == got["ss"]
