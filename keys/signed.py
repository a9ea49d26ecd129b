"""Signed documents: an opaque msgpack body and the signature over it, as received.

Every signed Hotline document travels as ``[body: bin, signature: bin(64)]`` (the
federation root carries a list of signatures instead). The body is decoded only after the
outer shape is checked, and the signature is always checked over the body bytes exactly as
received, never over a re-encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nacl.signing

from keys import codec
from keys.primitives import SIGNATURE_BYTES, sign, verify


@dataclass(frozen=True, slots=True)
class SignedBytes:
    body: bytes
    signature: bytes

    def encode(self) -> bytes:
        return codec.pack([self.body, self.signature])

    def verify(self, key: bytes | nacl.signing.VerifyKey, domain: bytes, *, signer: str) -> None:
        verify(key, domain, self.body, self.signature, signer=signer)


def make(signing_key: nacl.signing.SigningKey, domain: bytes, body: dict[str, Any]) -> SignedBytes:
    raw = codec.pack(body)
    return SignedBytes(raw, sign(signing_key, domain, raw))


def split(data: bytes, *, what: str, max_bytes: int) -> tuple[SignedBytes, Any]:
    """Decode ``[body, signature]`` and the body's msgpack value (not yet schema-checked)."""
    outer = codec.array(codec.unpack(data, what=what, max_bytes=max_bytes), 2, what)
    body = codec.blob(max_size=max_bytes)(outer[0], f"{what}.body")
    signature = codec.blob(size=SIGNATURE_BYTES)(outer[1], f"{what}.signature")
    value = codec.unpack(body, what=f"{what} body", max_bytes=max_bytes)
    return SignedBytes(body, signature), value
