"""Helpers shared by the keys tests: build envelopes from parts, as an attacker would.

Everything here uses PyNaCl and msgpack directly (the same primitives the protocol names),
so an attack built here does not depend on the code under test doing the right thing
(hybrid stanzas use keys.xwing's KEM: ML-KEM is not in libsodium).
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
import nacl.bindings as sodium
import nacl.encoding
import nacl.hash
import nacl.public
import nacl.signing

from keys import Envelope, xwing
from keys.envelope import stanza_context
from keys.primitives import Domain
from keys.secrets import DeskSecrets
from keys.trust import VerifiedDesk


def pack(value: Any) -> bytes:
    out: bytes = msgpack.packb(value, use_bin_type=True)
    return out


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def b2b(data: bytes, *, size: int = 32, key: bytes = b"", person: bytes = b"") -> bytes:
    out: bytes = nacl.hash.blake2b(data, digest_size=size, key=key, person=person,
                                   encoder=nacl.encoding.RawEncoder)
    return out


def commit(content_key: bytes) -> bytes:
    """The key commitment as keys/envelope.py documents it."""
    return b2b(b"", key=content_key, person=b"hotline-kc-v1")


def header_of(env: Envelope) -> dict[str, Any]:
    out: dict[str, Any] = unpack(env.header.raw)
    return out


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def wrap_for(desk: VerifiedDesk, content_key: bytes, notice_id: bytes = b"") -> dict[str, Any]:
    """A stanza wrapping ``content_key`` to ``desk``'s current encryption key (a hybrid
    stanza, bound to ``notice_id``, if that key is hybrid)."""
    kid, ek = desk.current_encryption_key
    if len(ek) == xwing.PUBLIC_KEY_BYTES:
        ct, wrapped = xwing.seal(ek, content_key, stanza_context(notice_id, kid, desk.desk),
                                 random=os.urandom)
        return {"to": desk.desk, "ek_kid": kid, "kem": "x-wing", "kem_ct": ct,
                "wrapped": wrapped}
    wrapped = bytes(nacl.public.SealedBox(nacl.public.PublicKey(ek)).encrypt(content_key))
    return {"to": desk.desk, "ek_kid": kid, "wrapped": wrapped}


def unseal(env: Envelope, me: DeskSecrets) -> tuple[bytes, bytes]:
    """Decrypt ``env`` as recipient ``me`` without any checks: (content key, plaintext P)."""
    stanza = next(s for s in env.header.stanzas if s.to == me.desk)
    sk = me.encryption_key(stanza.ek_kid)
    if isinstance(sk, xwing.XWingPrivateKey):
        content_key = xwing.open_sealed(
            sk, stanza.kem_ct, stanza.wrapped,
            stanza_context(env.notice_id, stanza.ek_kid, me.desk), what="stanza")
    else:
        content_key = nacl.public.SealedBox(sk).decrypt(stanza.wrapped)
    plaintext = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        env.ciphertext, env.header.raw, env.header.nonce, content_key)
    return content_key, plaintext


def encrypt(plaintext: bytes, header_raw: bytes, nonce: bytes, content_key: bytes) -> bytes:
    out: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, header_raw, nonce, content_key)
    return out


def sign_outer(signer: nacl.signing.SigningKey, header_raw: bytes, ciphertext: bytes,
               domain: bytes = Domain.ENVELOPE) -> bytes:
    sig: bytes = signer.sign(domain + header_raw + b2b(ciphertext)).signature
    return sig


def assemble(header: dict[str, Any] | bytes, plaintext: bytes, content_key: bytes,
             signer: nacl.signing.SigningKey, *, domain: bytes = Domain.ENVELOPE) -> bytes:
    """Encrypt ``plaintext`` under ``header`` and sign the outside: a complete envelope."""
    header_raw = header if isinstance(header, bytes) else pack(header)
    nonce = unpack(header_raw)["nonce"]
    ciphertext = encrypt(plaintext, header_raw, nonce, content_key)
    return pack([header_raw, ciphertext, sign_outer(signer, header_raw, ciphertext, domain)])


def fresh_header(template: dict[str, Any], *, sender: DeskSecrets, content_key: bytes,
                 stanzas: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    """A header like ``template`` from ``sender`` with new nonce, commitment and stanzas."""
    header = dict(template)
    header.update({"from": sender.desk, "from_kid": sender.ik_kid, "nonce": os.urandom(24),
                   "kc": commit(content_key),
                   "stanzas": sorted(stanzas, key=lambda s: s["to"])})
    header.update(changes)
    return header


def divergent(env: Envelope, sender: DeskSecrets, reader: DeskSecrets,
              recipients: list[VerifiedDesk], victim: str) -> bytes:
    """``env`` sealed again by ``sender`` with the committed key wrapped for every recipient
    but ``victim``, which gets another key: properly signed, only ``victim`` can tell (it
    gets key_commitment_mismatch). ``reader`` is any recipient, to recover the content."""
    content_key, plaintext = unseal(env, reader)
    stanzas = [wrap_for(r, content_key if r.desk != victim else os.urandom(32), env.notice_id)
               for r in recipients]
    if any("kem" in st for st in stanzas):
        # A version-2 header names every stanza's kind.
        stanzas = [st if "kem" in st else st | {"kem": "x25519"} for st in stanzas]
    header = fresh_header(header_of(env), sender=sender, content_key=content_key,
                          stanzas=stanzas)
    return assemble(header, plaintext, content_key, sender.identity)
