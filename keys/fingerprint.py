"""Short, human-comparable fingerprints of identities (S9).

A fingerprint binds a name and a key: BLAKE2b-240 over ``kind || 0x00 || name || 0x00 ||
public key`` with personal ``hotline-fpr-v1``, shown as six groups of five digits (each
group is 5 bytes big-endian, mod 100000, as Signal's safety numbers do). Thirty digits carry
about 100 bits: enough against second-preimage search, short enough to read over a phone.
"""

from __future__ import annotations

from keys.primitives import blake2b

KINDS = ("authority", "desk", "relay", "operator")
GROUPS = 6


def fingerprint(kind: str, name: str, public_key: bytes) -> str:
    """``fingerprint("desk", "us.caisi", ik)`` -> ``"04217 88310 55902 13377 60021 99120"``."""
    if kind not in KINDS:
        raise ValueError(f"fingerprint kind must be one of {', '.join(KINDS)}")
    data = kind.encode() + b"\x00" + name.encode() + b"\x00" + public_key
    h = blake2b(data, size=5 * GROUPS, person=b"hotline-fpr-v1")
    groups = (int.from_bytes(h[i : i + 5], "big") % 100_000 for i in range(0, 5 * GROUPS, 5))
    return " ".join(f"{g:05d}" for g in groups)
